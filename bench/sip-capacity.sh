#!/usr/bin/env bash
# SIP capacity on one core: many registered endpoints and thousands of concurrent anchored calls.
# Registers REGS users with digest auth (tandem-bench sip-uas), then places calls at a low rate
# (baseline setup times) and at a rate × hold time that keeps CALLS calls up at once, reading
# Tandem's RSS at each stage. Reports memory per registration and per call, and setup-time
# percentiles at low and high concurrency.
#
#   bench/sip-capacity.sh [--regs 10000] [--calls 4000] [--keep DIR]
# The data plane needs 4 sockets per call: CALLS is bounded by the file-descriptor hard limit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_BIN=${BENCH_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/tandem-bench}
TANDEM_BIN=${TANDEM_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/tandem}
SUT_CPU=${SUT_CPU:-1}; GEN_CPU=${GEN_CPU:-0}
REGS=10000; CALLS=4000; HOLD_S=12; OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --regs) REGS=$2; shift 2 ;;
    --calls) CALLS=$2; shift 2 ;;
    --keep) OUT=$2; mkdir -p "$OUT"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-$(mktemp -d -t tandem-sip-capacity.XXXXXX)}
SIP=5470; UAS=5480; HTTP=18470
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

{
  printf '[sip]\nlisten_udp = "127.0.0.1:%s"\nlisten_tcp = "127.0.0.1:%s"\nlisten_tls = "127.0.0.1:0"\noptions_ping_s = 0\nmax_calls = 100000\n' $SIP $SIP
  printf '[[sip.tenants]]\nname = "cap"\ndomain = "cap.local"\n'
  printf '[[sip.trunks]]\nname = "gen"\ntenant = "cap"\naddress = "127.0.0.1:%s"\nallow = ["127.0.0.1"]\n' $UAS
  printf '[[sip.routes]]\ntenant = "cap"\nmatch = "*"\ntarget = "uri:sip:uas@127.0.0.1:%s"\n' $UAS
  for i in $(seq 1 "$REGS"); do printf '[[sip.accounts]]\ntenant = "cap"\nuser = "u%s"\npassword = "pw"\n' "$i"; done
} >"$OUT/tandem.toml"

taskset -c "$SUT_CPU" "$TANDEM_BIN" run --config "$OUT/tandem.toml" --cores 1 --ng 127.0.0.1:0 \
  --http 127.0.0.1:$HTTP --port-min 20000 --port-max 44999 >"$OUT/tandem.log" 2>&1 </dev/null &
TPID=$!; PIDS+=($TPID)
sleep 2
rss() { awk '/^VmRSS/ {print $2 * 1024}' "/proc/$TPID/status"; }
metric() { curl -fsS "http://127.0.0.1:$HTTP/metrics" | awk -v m="$1" 'index($0, m) == 1 {s += $NF} END {printf "%d\n", s}'; }
rss_idle=$(rss)

users=$(seq -f 'u%g' 1 "$REGS" | paste -sd,)
taskset -c "$GEN_CPU" "$BENCH_BIN" sip-uas --listen 127.0.0.1:$UAS --registrar 127.0.0.1:$SIP --users "$users" \
  --password pw --domain cap.local >"$OUT/uas.log" 2>&1 </dev/null &
PIDS+=($!)
for _ in $(seq 1 120); do [ "$(metric tandem_sip_registered_contacts)" -ge "$REGS" ] && break; sleep 0.5; done
registered=$(metric tandem_sip_registered_contacts)
rss_regs=$(rss)
echo "registered $registered of $REGS; RSS idle $rss_idle, with registrations $rss_regs"

taskset -c "$GEN_CPU" "$BENCH_BIN" sip --target 127.0.0.1:$SIP --cps 100 --duration-s 10 --calls 1000000 \
  --hold-ms 500 --quiet --allow-failures --json "$OUT/low.json" >"$OUT/low.txt" 2>&1
cps=$(( CALLS / HOLD_S + 1 ))
taskset -c "$GEN_CPU" "$BENCH_BIN" sip --target 127.0.0.1:$SIP --cps $cps --duration-s $((HOLD_S + 8)) --calls 1000000 \
  --max-concurrent $((CALLS + 100)) --hold-ms $((HOLD_S * 1000)) --quiet --allow-failures --json "$OUT/high.json" >"$OUT/high.txt" 2>&1 &
GEN=$!
peak_calls=0; peak_rss=0
while kill -0 $GEN 2>/dev/null; do
  c=$(metric tandem_dp_sessions_active); r=$(rss)
  if [ "$c" -gt "$peak_calls" ]; then peak_calls=$c; peak_rss=$r; fi
  sleep 1
done
wait $GEN || true
python3 - "$OUT" "$REGS" "$registered" "$rss_idle" "$rss_regs" "$peak_calls" "$peak_rss" <<'PY' | tee "$OUT/summary.txt"
import json, sys
out, regs, registered, idle, with_regs, peak_calls, peak_rss = sys.argv[1], *map(int, sys.argv[2:])
low, high = (json.load(open(f"{out}/{n}.json")) for n in ("low", "high"))
print(f"registrations: {registered}/{regs}; {(with_regs - idle) / max(registered, 1):.0f} bytes RSS each")
print(f"peak concurrent calls (data-plane sessions): {peak_calls}; "
      f"{(peak_rss - with_regs) / max(peak_calls, 1):.0f} bytes RSS per call (SIP dialogs + media session)")
for name, r in (("low concurrency (100 cps x 0.5 s)", low), ("high concurrency", high)):
    print(f"{name}: {r['answered']} answered, {r['failed']} failed {r['failed_by_code']}, "
          f"setup p50 {r['setup_p50_ms']:.2f} ms, p99 {r['setup_p99_ms']:.2f} ms")
PY
echo "artifacts in $OUT"
