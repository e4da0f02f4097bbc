#!/usr/bin/env bash
# Queued callback end to end: a SIPp caller waits in queue "support" (nobody logged in), presses
# the queue's callback key (RFC 4733 from SIPp's bundled pcap, heard by the data plane during the
# queue's early media) and is answered and hung up by Tandem. When the agent (a baresip softphone,
# registered, logged in through the API) becomes free, Tandem dials the caller's number (routed
# to a SIPp UAS on loopback), and once that customer answers it rings the agent, who auto-answers.
# The queue log shows callback_requested, callback_placed and a callback connect.
source "$(dirname "$0")/lib.sh"
SIP=5066; NG=22263; HTTP=18113; CUSTOMER=25290
command -v baresip >/dev/null || fail "baresip not installed (scripts/setup)"

cat >"$WORK/tandem.toml" <<CFG
[sip]
listen_udp = "127.0.0.1:$SIP"
listen_tcp = "127.0.0.1:$SIP"
listen_tls = "127.0.0.1:$((SIP + 1))"
options_ping_s = 5
digest_algorithms = ["MD5"]
queue_callback_attempts = 2
queue_callback_retry_s = 2
queue_callback_dial_timeout_s = 15

[[sip.tenants]]
name = "acme"
domain = "127.0.0.1"

[[sip.accounts]]
tenant = "acme"
user = "agent1"
password = "secret"

# Callers come in as a trusted carrier (by source address); the customer is on loopback too.
[[sip.trunks]]
name = "carrier"
tenant = "acme"
address = "127.0.0.1:25080"
allow = ["127.0.0.1"]

[[sip.routes]]
tenant = "acme"
match = "4000"
target = "queue:support"

# The SIPp caller's number (its From user) reaches the customer's phone.
[[sip.routes]]
tenant = "acme"
match = "sipp"
target = "uri:sip:customer@127.0.0.1:$CUSTOMER"

[[sip.queues]]
tenant = "acme"
name = "support"
callback_key = "1"
ring_timeout_s = 10

[[sip.agents]]
tenant = "acme"
name = "alice"
user = "agent1"
queues = [{ queue = "support" }]
CFG
export TANDEM_ADMIN_PASSWORD=acd-test-admin
start_tandem $NG $HTTP --config "$WORK/tandem.toml" --port-min 39000 --port-max 39999 --max-packet-age-ms 10000
API="http://127.0.0.1:$HTTP/api/v1"
TOKEN=$(curl -fsS -X POST "$API/sessions" -H 'Content-Type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$TANDEM_ADMIN_PASSWORD\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
api() { local method=$1 path=$2; shift 2; curl -fsS -X "$method" "$API$path" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }

home="$WORK/agent1"; mkdir -p "$home"
sed -e "s/127.0.0.1:5062/127.0.0.1:$SIP/" "$PEERS_DIR/baresip/agent1/accounts" >"$home/accounts"
sed -e "s/^sip_listen.*/sip_listen\t\t127.0.0.1:5160/; s/^rtp_ports.*/rtp_ports\t\t18700-18799/; s/^ctrl_tcp_listen.*/ctrl_tcp_listen\t\t127.0.0.1:4461/" \
  "$PEERS_DIR/baresip/agent1/config" >"$home/config"
sox -n -r 8000 -c 1 -b 16 "$home/tone8k.wav" synth 30 sine 440 vol 0.3
(cd "$home" && exec baresip -f "$home" >"$WORK/baresip.log" 2>&1 </dev/null) &
PIDS+=($!)
for _ in $(seq 1 75); do
  [ "$(metric $HTTP tandem_sip_registered_contacts)" -ge 1 ] && break
  sleep 0.2
done
[ "$(metric $HTTP tandem_sip_registered_contacts)" -ge 1 ] || fail "agent did not register: $(tail -5 "$WORK/baresip.log")"
echo "ok: the agent's phone registered"

# The customer's phone: answers once, talks 4 s, hangs up.
mkdir -p "$WORK/customer"
(cd "$WORK/customer" && exec timeout 50 sipp -sf "$ROOT/tests/e2e/sipp/uas_callback_customer.xml" -i 127.0.0.1 -p $CUSTOMER \
  -mp 17400 -m 1 -nostdin -trace_err >uas.log 2>&1) &
CUSTOMER_PID=$!
PIDS+=("$CUSTOMER_PID")

# 1. Nobody is logged in: the caller waits, presses 1, is answered and hung up.
mkdir -p "$WORK/caller"; (cd "$WORK/caller" && ln -sfn /usr/share/sip-tester pcap)
(cd "$WORK/caller" && timeout 30 sipp -sf "$ROOT/tests/e2e/sipp/uac_callback_key.xml" 127.0.0.1:$SIP -s 4000 -i 127.0.0.1 -p 25291 \
  -mp 17300 -m 1 -l 1 -nostdin -trace_err >uac.log 2>&1) \
  || fail "caller: $(tail -5 "$WORK/caller/uac.log"; cat "$WORK/caller"/*errors.log 2>/dev/null | head -20; tail -20 "$WORK/tandem.log")"
echo "ok: the caller pressed the callback key and was hung up"

# 2. Alice logs in: the customer is called back, answers, and alice's phone takes the call.
api POST "/tenants/acme/agents/alice/state" -d '{"action":"login"}' >/dev/null || fail "login refused"
wait "$CUSTOMER_PID" || fail "customer: $(tail -5 "$WORK/customer/uas.log"; cat "$WORK/customer"/*errors.log 2>/dev/null | head -20; tail -20 "$WORK/tandem.log")"
echo "ok: the customer was called back and hung up after talking"
sleep 1

api GET "/tenants/acme/queue-events?limit=100" >"$WORK/events.json" || fail "queue events"
python3 - "$WORK/events.json" <<'PY' || fail "queue log wrong: $(head -c 2000 "$WORK/events.json")"
import json, sys, collections
events = json.load(open(sys.argv[1]))
events = events.get("items", events) if isinstance(events, dict) else events
kinds = collections.Counter(e["kind"] for e in events)
print("queue log:", dict(kinds))
for k in ("enter", "callback_requested", "callback_placed", "connect", "complete_caller"):
    assert kinds[k] == 1, (k, kinds)
assert kinds["callback_failed"] == 0, kinds
connect = next(e for e in events if e["kind"] == "connect")
placed = next(e for e in events if e["kind"] == "callback_placed")
assert placed["detail"]["attempt"] == 1, placed
assert connect["detail"]["callback"] is True, connect
assert connect["agent"] == "alice", connect
PY
echo "ok: queue log shows callback_requested, callback_placed and a callback connect with alice"

# The call records: the caller's call ended by the callback, the callback answered and bridged
# with alice's phone, whose audio reached the data plane.
curl -fsS "http://127.0.0.1:$HTTP/calls" >"$WORK/calls.json"
python3 - "$WORK/calls.json" <<'PY' || fail "call records wrong: $(head -c 1500 "$WORK/calls.json")"
import json, sys
calls = json.load(open(sys.argv[1]))["calls"]
print("call records:", [(c["dialled"], c["disposition"], c["ended_by"], c["target"]) for c in calls])
caller = [c for c in calls if c["ended_by"] == "callback"]
assert len(caller) == 1 and caller[0]["dialled"] == "4000", calls
back = [c for c in calls if c["target"] == "agent:alice"]
assert len(back) == 1, calls
back = back[0]
assert back["disposition"] == "answered" and back["dialled"] == "sipp" and back["ended_by"] == "caller", back
assert back["media"] and back["media"]["callee"]["rtp_packets_received"] > 0, back["media"]
PY
echo "ok: call records: the caller's ended by the callback, the callback's bridged with alice's audio"
