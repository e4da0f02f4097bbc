#!/usr/bin/env bash
# Call records survive a crash: SIPp places a steady burst of calls through Tandem, Tandem is
# killed with SIGKILL in the middle of it, restarted on the same storage, and every call whose
# BYE SIPp saw answered (a finished call, from the caller's side) must have its record, found
# through the API. Also provisions over the API with curl and checks the SIP side uses it at
# once. Storage: SQLite in the test directory, or $TANDEM_STORAGE_URL (PostgreSQL) when set.
source "$(dirname "$0")/lib.sh"
SIP=25260; UAS=25280; UAC=25290; NG=22441; HTTP=18291
export TANDEM_ADMIN_PASSWORD=crash-test-admin

cat >"$WORK/tandem.toml" <<CFG
[sip]
listen_udp = "127.0.0.1:$SIP"
listen_tcp = "127.0.0.1:$SIP"
listen_tls = "127.0.0.1:0"

[[sip.tenants]]
name = "acme"
domain = "acme.test"

[[sip.trunks]]
name = "callers"
tenant = "acme"
address = "127.0.0.1:$UAC"
allow = ["127.0.0.1"]

[[sip.routes]]
tenant = "acme"
match = "*"
target = "uri:sip:agent@127.0.0.1:$UAS"
CFG
start_tandem $NG $HTTP --config "$WORK/tandem.toml" --port-min 37000 --port-max 37999

api() { # api METHOD PATH [JSON]
  curl -sS -X "$1" "http://127.0.0.1:$HTTP$2" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' ${3:+-d "$3"}
}
TOKEN=$(curl -fsS -X POST "http://127.0.0.1:$HTTP/api/v1/sessions" -H 'Content-Type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$TANDEM_ADMIN_PASSWORD\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
# The config file seeded storage: its tenant and route are visible through the API.
api GET /api/v1/tenants/acme/routes | grep -q '"target":"uri:sip:agent@127.0.0.1' || fail "config not seeded into storage"
# A route added through the API is used by the very next call (no restart).
api POST /api/v1/tenants/acme/routes '{"pattern":"5550000","target":"uri:sip:agent@127.0.0.1:'$UAS'","position":5}' \
  | grep -q '"version":1' || fail "route not created"

mkdir -p "$WORK/burst"
(cd "$WORK/burst" && exec setsid sipp -sn uas -i 127.0.0.1 -p $UAS -nostdin >uas.log 2>&1 </dev/null) &
PIDS+=($!)
sleep 0.3
# 80 calls/s, 300 ms each; every message is logged so finished calls can be told apart.
(cd "$WORK/burst" && exec setsid sipp -sn uac 127.0.0.1:$SIP -s 5550000 -i 127.0.0.1 -p $UAC -r 80 -d 300 \
   -m 100000 -nostdin -trace_msg -message_file msgs.log >uac.log 2>&1 </dev/null) &
UAC_PID=$!
PIDS+=($UAC_PID)
sleep 3
kill -9 "$TANDEM_PID"
echo "killed tandem (pid $TANDEM_PID) mid-burst"
sleep 1.5
kill "$UAC_PID" 2>/dev/null || true
sleep 0.5

# The same storage, a new process.
start_tandem $NG $HTTP --config "$WORK/tandem.toml" --port-min 37000 --port-max 37999
TOKEN=$(curl -fsS -X POST "http://127.0.0.1:$HTTP/api/v1/sessions" -H 'Content-Type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$TANDEM_ADMIN_PASSWORD\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
python3 - "$WORK/burst/msgs.log" "$HTTP" "$TOKEN" <<'PY'
import json, re, sys, urllib.request
log, port, token = sys.argv[1], sys.argv[2], sys.argv[3]
# SIPp's message log: blocks starting with a "----" line; received ones say "received".
finished, started = set(), set()
for block in open(log, errors="replace").read().split("----------------------------------------------- "):
    call_id = re.search(r"^Call-ID:\s*(\S+)", block, re.M | re.I)
    if not call_id:
        continue
    if "message received" in block and re.search(r"^SIP/2.0 200", block, re.M) and re.search(r"^CSeq:\s*\d+ BYE", block, re.M | re.I):
        finished.add(call_id.group(1))
    if "message sent" in block and block.split("\n", 3)[2:3] and "INVITE sip:" in block:
        started.add(call_id.group(1))
records, offset = [], 0
while offset is not None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/tenants/acme/calls?limit=500&offset={offset}",
                                 headers={"Authorization": f"Bearer {token}"})
    page = json.load(urllib.request.urlopen(req))
    records += page["items"]
    offset = page["next_offset"]
stored = {r["caller_call_id"] for r in records}
missing = finished - stored
print(f"calls started {len(started)}, finished at the caller {len(finished)}, records after restart {len(records)}, "
      f"finished without a record {len(missing)}")
assert len(finished) >= 50, "the burst did not get going"
assert not missing, f"lost records: {sorted(missing)[:5]}"
assert all(r["disposition"] == "answered" for r in records if r["caller_call_id"] in finished)
PY
backend=sqlite; [ -n "${TANDEM_STORAGE_URL:-}" ] && backend=postgresql
echo "ok: no finished call lost its record across kill -9 (storage: $backend)"
