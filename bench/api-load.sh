#!/usr/bin/env bash
# Control API throughput on one core with SQLite: Tandem pinned to SUT_CPU, the generator on
# GEN_CPU. Reads: authorized GETs of a tenant's SIP accounts (token check + one query) and of
# the newest 20 of 10,000 call records; writes: SIP-account creations (insert + audit entry + directory reload).
# Each rate runs DURATION seconds; latency is from each request's scheduled time (open loop).
#   bench/api-load.sh [--reads "2000 5000 8000"] [--writes "500 1000 2000"] [--duration 15] [--smoke]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TANDEM_BIN=${TANDEM_BIN:-$ROOT/target/release/tandem}
BENCH_BIN=${BENCH_BIN:-$ROOT/target/release/tandem-bench}
SUT_CPU=${SUT_CPU:-1}; GEN_CPU=${GEN_CPU:-0}
READS="2000 5000 8000"; WRITES="500 1000 2000"; DURATION=15
while [ $# -gt 0 ]; do
  case $1 in
    --reads) READS=$2; shift 2 ;;
    --writes) WRITES=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --smoke) READS=500; WRITES=100; DURATION=2; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
HTTP=18491
OUT=$(mktemp -d -t tandem-api-bench.XXXXXX)
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null; sleep 0.3; rm -rf "$OUT"; }
trap cleanup EXIT
TANDEM_ADMIN_PASSWORD=bench-admin-pw taskset -c "$SUT_CPU" "$TANDEM_BIN" run --cores 1 --ng 127.0.0.1:22641 \
  --http 127.0.0.1:$HTTP --sip 127.0.0.1:25460 --data-dir "$OUT/data" >"$OUT/tandem.log" 2>&1 </dev/null &
PID=$!
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$HTTP/health" >/dev/null 2>&1 && break; sleep 0.1; done
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
base="http://127.0.0.1:$HTTP/api/v1"
admin=$(curl -fsS -X POST "$base/sessions" -H 'Content-Type: application/json' \
  -d '{"username":"admin","password":"bench-admin-pw"}' | json '["token"]')
curl -fsS -X POST "$base/tenants" -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  -d '{"name":"acme","domain":"acme.test"}' >/dev/null
token=$(curl -fsS -X POST "$base/tenants/acme/tokens" -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  -d '{"name":"bench","role":"tenant_admin"}' | json '["token"]')
for i in $(seq 1 20); do
  curl -fsS -X POST "$base/tenants/acme/sip-accounts" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d "{\"username\":\"agent$i\",\"password\":\"agent-password\"}" >/dev/null
done
# 10,000 finished calls in the tenant's records, written beside the running appliance (WAL lets
# a second writer in), so the calls page reads real rows from a table of realistic size.
python3 - "$OUT/data/tandem.db" <<'PY'
import json, sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], timeout=10)
now = int(time.time() * 1000)
media = json.dumps({"caller": {"packets_in": 1500, "packets_out": 1500, "lost": 2, "jitter_ms": 3}})
db.executemany(
    "INSERT INTO call_records VALUES (?, 'acme', 'inbound', ?, '2000', 'user:agent1', ?, ?, ?, ?, ?, 180, 30000, 'answered', 200, 'caller', 'PCMU', ?)",
    [(f"bench{i:06d}", f"+4420{i:07d}", f"a{i}@bench", f"b{i}@bench", now - i * 60000,
      now - i * 60000 + 180, now - i * 60000 + 30180, media) for i in range(10000)])
db.commit()
PY
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
ucpu() { awk '{print $14}' "/proc/$PID/stat"; }
tick=$(getconf CLK_TCK)
echo "Tandem API on CPU $SUT_CPU (SQLite, WAL), generator on CPU $GEN_CPU, $DURATION s per rate"
run() { # run KIND RATE ARGS...
  local kind=$1 rate=$2; shift 2
  local before; before=$(cpu)
  local ubefore; ubefore=$(ucpu)
  taskset -c "$GEN_CPU" "$BENCH_BIN" api --target 127.0.0.1:$HTTP --token "$token" --rate "$rate" \
    --duration-s "$DURATION" --connections 32 "$@" | tail -1 | tr -s ' ' | sed 's/^ //' >"$OUT/row"
  local after; after=$(cpu)
  local uafter; uafter=$(ucpu)
  local done_n; done_n=$(cut -d' ' -f4 "$OUT/row")
  local cpu_ms; cpu_ms=$(python3 -c "print(f'{($after-$before)/$tick*1000/max($done_n,1):.3f}')")
  # User time alone: over loopback the kernel time includes the receiving side's TCP work.
  local user_ms; user_ms=$(python3 -c "print(f'{($uafter-$ubefore)/$tick*1000/max($done_n,1):.3f}')")
  printf '%-28s %s  CPU ms/req %s (user %s)\n' "$kind" "$(cat "$OUT/row")" "$cpu_ms" "$user_ms"
}
printf '%-28s %s\n' "" "kind offered achieved done errors non2xx p50ms p99ms maxms"
for r in $READS; do run "read sip-accounts (20)" "$r" --path /api/v1/tenants/acme/sip-accounts; done
for r in $READS; do run "read calls page (20 of 10k)" "$r" --path "/api/v1/tenants/acme/calls?limit=20"; done
for r in $WRITES; do run "write sip-account" "$r" --write acme; done
grep -q panicked "$OUT/tandem.log" && { echo "tandem panicked" >&2; exit 1; }
exit 0
