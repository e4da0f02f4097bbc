#!/usr/bin/env bash
# The contact centre end to end: two baresip softphones (registered with digest, auto-answer) are
# the agents of queue "support" (fewest-calls); they log in, take a break and come back through
# the control API. SIPp callers dial the queue: calls are shared by the strategy, an agent on
# break gets none, a caller who hangs up while queued is counted as abandoned, and the queue's
# statistics (from the durable queue log) match the calls made; callers who wait hear the data
# plane's hold music.
source "$(dirname "$0")/lib.sh"
SIP=5064; NG=22261; HTTP=18111
command -v baresip >/dev/null || fail "baresip not installed (scripts/setup)"

cat >"$WORK/tandem.toml" <<CFG
[sip]
listen_udp = "127.0.0.1:$SIP"
listen_tcp = "127.0.0.1:$SIP"
options_ping_s = 5
# baresip 1.0's libre gives up (ENOSYS) when any challenge names an algorithm but MD5.
digest_algorithms = ["MD5"]

[[sip.tenants]]
name = "acme"
domain = "127.0.0.1"

[[sip.accounts]]
tenant = "acme"
user = "agent1"
password = "secret"

[[sip.accounts]]
tenant = "acme"
user = "agent2"
password = "secret"

[[sip.trunks]]
name = "carrier"
tenant = "acme"
address = "127.0.0.1:25080"
allow = ["127.0.0.1"]

[[sip.routes]]
tenant = "acme"
match = "4000"
target = "queue:support"

[[sip.queues]]
tenant = "acme"
name = "support"
strategy = "fewest-calls"
wrapup_s = 1
ring_timeout_s = 10

[[sip.agents]]
tenant = "acme"
name = "alice"
user = "agent1"
queues = [{ queue = "support" }]

[[sip.agents]]
tenant = "acme"
name = "bob"
user = "agent2"
queues = [{ queue = "support" }]
CFG
export TANDEM_ADMIN_PASSWORD=acd-test-admin
start_tandem $NG $HTTP --config "$WORK/tandem.toml" --port-min 38000 --port-max 38999 --max-packet-age-ms 10000
API="http://127.0.0.1:$HTTP/api/v1"
TOKEN=$(curl -fsS -X POST "$API/sessions" -H 'Content-Type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$TANDEM_ADMIN_PASSWORD\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
api() { local method=$1 path=$2; shift 2; curl -fsS -X "$method" "$API$path" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
state() { api POST "/tenants/acme/agents/$1/state" -d "$2" >/dev/null || fail "agent $1: $2 refused"; }
taken() { api GET "/tenants/acme/agents/$1/status" | python3 -c 'import json,sys; d=json.load(sys.stdin); d=d.get("items",[d])[0] if "items" in d else d; print(d["calls_taken"])'; }

# Two softphones from the peers' baresip configuration, each on its own ports and account.
for n in 1 2; do
  home="$WORK/agent$n"; mkdir -p "$home"
  sed -e "s/agent1@/agent$n@/; s/127.0.0.1:5062/127.0.0.1:$SIP/" "$PEERS_DIR/baresip/agent1/accounts" >"$home/accounts"
  sed -e "s/^sip_listen.*/sip_listen\t\t127.0.0.1:$((5100 + 10 * n))/; s/^rtp_ports.*/rtp_ports\t\t$((18100 + n * 100))-$((18199 + n * 100))/; s/^ctrl_tcp_listen.*/ctrl_tcp_listen\t\t127.0.0.1:$((4450 + n))/" \
    "$PEERS_DIR/baresip/agent1/config" >"$home/config"
  sox -n -r 8000 -c 1 -b 16 "$home/tone8k.wav" synth 30 sine 440 vol 0.3
  (cd "$home" && exec baresip -f "$home" >"$WORK/baresip$n.log" 2>&1 </dev/null) &
  PIDS+=($!)
done
for _ in $(seq 1 75); do
  [ "$(metric $HTTP tandem_sip_registered_contacts)" -ge 2 ] && break
  sleep 0.2
done
[ "$(metric $HTTP tandem_sip_registered_contacts)" -ge 2 ] || fail "agents did not register: $(tail -5 "$WORK"/baresip*.log)"
echo "ok: both agents' phones registered"

cd "$WORK"; ln -sfn /usr/share/sip-tester pcap
# call_queue NAME N RATE SCENARIO: N callers dial 4000; every one must complete its scenario.
call_queue() {
  mkdir -p "$WORK/$1"; (cd "$WORK/$1" && ln -sfn /usr/share/sip-tester pcap)
  (cd "$WORK/$1" && timeout 120 sipp -sf "$4" 127.0.0.1:$SIP -s 4000 -i 127.0.0.1 -p 25190 -mp 17200 \
    -r "$3" -m "$2" -l "$2" -nostdin -trace_err >uac.log 2>&1) \
    || fail "$1: callers failed: $(tail -5 "$WORK/$1/uac.log"; cat "$WORK/$1"/*errors.log 2>/dev/null | head; tail -20 "$WORK/tandem.log")"
}

# 1. Both agents log in; four callers (two at a time wait in queue) are shared 2 and 2.
state alice '{"action":"login"}'
state bob '{"action":"login"}'
call_queue shared 4 1 "$PEERS_DIR/uac_pcap.xml"
sleep 2
a=$(taken alice); b=$(taken bob)
echo "calls taken: alice=$a bob=$b"
[ "$a" -eq 2 ] && [ "$b" -eq 2 ] || fail "fewest-calls should share 4 calls 2/2, got alice=$a bob=$b"
echo "ok: 4 queued calls answered by baresip agents, shared 2/2 by fewest-calls"

# 2. Bob takes a break: the next two callers go to alice only (one waits for her).
state bob '{"action":"break","reason":"lunch"}'
call_queue break 2 1 "$PEERS_DIR/uac_pcap.xml"
sleep 2
a=$(taken alice); b=$(taken bob)
echo "calls taken: alice=$a bob=$b"
[ "$a" -eq 4 ] && [ "$b" -eq 2 ] || fail "an agent on break got a call: alice=$a bob=$b"
echo "ok: the agent on break received nothing"
# The caller who waited for alice heard the hold music (early media in the 180) from the data plane.
played=$(metric $HTTP tandem_dp_played_packets_total)
[ "$played" -ge 100 ] || fail "hold music: only $played packets played to waiting callers"
echo "ok: waiting callers heard the hold music ($played packets played by the data plane)"

# 3. Nobody ready: a caller waits, gives up (CANCEL) and is counted as abandoned.
state alice '{"action":"break","reason":"meeting"}'
call_queue abandon 1 1 "$ROOT/tests/e2e/sipp/uac_cancel.xml"
sleep 1

# The queue log and the statistics computed from it.
api GET "/tenants/acme/queue-events?limit=200" >"$WORK/events.json" || fail "queue events"
api GET "/tenants/acme/queues/support/stats" >"$WORK/stats.json" || fail "queue stats"
python3 - "$WORK/events.json" "$WORK/stats.json" <<'PY' || fail "queue log or statistics wrong: $(head -c 1500 "$WORK/stats.json")"
import json, sys, collections
events = json.load(open(sys.argv[1]))
events = events.get("items", events) if isinstance(events, dict) else events
kinds = collections.Counter(e["kind"] for e in events)
print("queue log:", dict(kinds))
assert kinds["enter"] == 7, kinds
assert kinds["connect"] == 6, kinds
assert kinds["complete_caller"] == 6, kinds
assert kinds["abandon"] == 1, kinds
assert kinds["offer"] >= 6, kinds
assert kinds["agent_login"] == 2 and kinds["pause"] == 2, kinds
stats = json.load(open(sys.argv[2]))
print("stats:", json.dumps(stats)[:600])
total = stats["totals"]
assert total["offered"] == 7, total
assert total["answered"] == 6, total
assert total["abandoned"] == 1, total
PY
echo "ok: queue log and statistics match the calls made (7 offered, 6 answered, 1 abandoned)"
