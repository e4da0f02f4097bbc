#!/usr/bin/env bash
# Supervisor monitoring end to end: a trunk caller reaches agent1's registered phone, the control
# API has the SIP user `boss` monitor the call in whisper mode, then barge; each phone plays its
# own tone and tests/e2e/supervise.py checks by Goertzel which phone hears which (see there); the
# live-calls API lists the call, its codecs and quality, then its monitor; then the same three
# phones dial a conference room (route conf-7 → conference:lobby). ~10 s.
source "$(dirname "$0")/lib.sh"
SIP=5068; NG=22281; HTTP=18121

cat >"$WORK/tandem.toml" <<CFG
[sip]
listen_udp = "127.0.0.1:$SIP"
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
user = "boss"
password = "secret"

[[sip.trunks]]
name = "carrier"
tenant = "acme"
address = "127.0.0.1:25480"
allow = ["127.0.0.1"]

[[sip.routes]]
tenant = "acme"
match = "2000"
target = "user:agent1"

[[sip.routes]]
tenant = "acme"
match = "conf-7"
target = "conference:lobby"
CFG
export TANDEM_ADMIN_PASSWORD=monitor-test-admin
start_tandem $NG $HTTP --config "$WORK/tandem.toml" --port-min 33000 --port-max 33099
TOKEN=$(curl -fsS -X POST "http://127.0.0.1:$HTTP/api/v1/sessions" -H 'Content-Type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$TANDEM_ADMIN_PASSWORD\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
PEERS_DIR="$PEERS_DIR" timeout 30 python3 "$ROOT/tests/e2e/supervise.py" --sip $SIP --http $HTTP --token "$TOKEN" \
  >"$WORK/supervise.log" 2>&1 || fail "supervise.py: $(tail -20 "$WORK/supervise.log"; tail -20 "$WORK/tandem.log")"
grep -q "MONITOR OK" "$WORK/supervise.log" || fail "monitor check"
grep -q "CONFERENCE OK" "$WORK/supervise.log" || fail "conference check"
cat "$WORK/supervise.log"
echo "ok: live calls listed with codecs, quality and the monitor; whisper and barge heard by the right phones; monitor stopped with a BYE to the supervisor"
echo "ok: three phones in a conference room hear each other, not themselves; one that hangs up is no longer heard"
