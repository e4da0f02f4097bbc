#!/usr/bin/env bash
# baresip (the peers' agent1 softphone) registers with Tandem using digest authentication and
# auto-answers a call that SIPp places to its number; audio flows both ways through the data plane.
source "$(dirname "$0")/lib.sh"
SIP=5062   # where ../shared/peers/baresip/agent1/accounts registers
NG=22251; HTTP=18101
command -v baresip >/dev/null || fail "baresip not installed (scripts/setup)"

cat >"$WORK/tandem.toml" <<CFG
[sip]
listen_udp = "127.0.0.1:$SIP"
listen_tcp = "127.0.0.1:$SIP"
options_ping_s = 2
# baresip 1.0's libre gives up (ENOSYS) when any challenge names an algorithm but MD5.
digest_algorithms = ["MD5"]

[[sip.tenants]]
name = "acme"
domain = "127.0.0.1"

[[sip.accounts]]
tenant = "acme"
user = "agent1"
password = "secret"

[[sip.trunks]]
name = "carrier"
tenant = "acme"
address = "127.0.0.1:25080"
allow = ["127.0.0.1"]

[[sip.routes]]
tenant = "acme"
match = "2001"
target = "user:agent1"
CFG
start_tandem $NG $HTTP --config "$WORK/tandem.toml" --port-min 37000 --port-max 37999

# baresip's home: the peers' agent1 configuration plus the tone it plays as its microphone.
mkdir -p "$WORK/agent1"
cp "$PEERS_DIR/baresip/agent1/"{accounts,config} "$WORK/agent1/"
sox -n -r 8000 -c 1 -b 16 "$WORK/agent1/tone8k.wav" synth 30 sine 440 vol 0.3
cd "$WORK/agent1"
baresip -f "$WORK/agent1" >"$WORK/baresip.log" 2>&1 </dev/null &
PIDS+=($!)
cd "$WORK"

for _ in $(seq 1 50); do
  [ "$(metric $HTTP tandem_sip_registered_contacts)" -ge 1 ] && break
  sleep 0.2
done
[ "$(metric $HTTP tandem_sip_registered_contacts)" -ge 1 ] || fail "baresip did not register: $(tail -20 "$WORK/baresip.log")"
challenged=$(curl -fsS "http://127.0.0.1:$HTTP/metrics" | awk '/^tandem_sip_responses_total\{direction="out",code="401"\}/ {print $NF}')
[ "${challenged:-0}" -ge 1 ] || fail "registration was not challenged"
echo "ok: baresip registered as agent1 after a digest challenge"

# A caller dials 2001: Tandem finds agent1's binding and bridges the call; baresip auto-answers.
cd "$WORK"; ln -sfn /usr/share/sip-tester pcap
timeout 60 sipp -sf "$PEERS_DIR/uac_pcap.xml" 127.0.0.1:$SIP -s 2001 -i 127.0.0.1 -p 25090 -mp 17000 \
  -m 1 -l 1 -nostdin -trace_err >uac.log 2>&1 || fail "call to agent1 failed: $(tail -5 uac.log; tail -20 "$WORK/baresip.log")"
sleep 0.5
curl -fsS "http://127.0.0.1:$HTTP/calls" >calls.json
python3 - calls.json <<'PY' || fail "call record wrong: $(head -c 800 calls.json)"
import json, sys
c = json.load(open(sys.argv[1]))["calls"][0]
print("record:", c["disposition"], c["target"], c["codecs"], c["media"])
assert c["disposition"] == "answered" and "agent1" in c["target"], c
m = c["media"]
# The caller's prompt reached baresip's leg and baresip's tone came back.
assert m["caller"]["rtp_packets_received"] > 100 and m["callee"]["rtp_packets_received"] > 100, m
PY
pings=$(curl -fsS "http://127.0.0.1:$HTTP/metrics" | awk '/^tandem_sip_requests_total\{direction="out",method="OPTIONS"\}/ {print $NF}')
[ "${pings:-0}" -ge 1 ] || fail "no OPTIONS keep-alive sent to the registered contact"
echo "ok: SIPp -> Tandem -> baresip (registered, auto-answered), audio both ways; $pings keep-alive OPTIONS"
