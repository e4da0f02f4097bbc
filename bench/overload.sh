#!/usr/bin/env bash
# Overload and recovery, side by side: each relay carries CALLS calls on a pinned core; after a
# few seconds a SCHED_FIFO spinner (started by the generator) takes that core for STALL seconds (the relay gets what the RT
# throttle leaves, ~5%: far beyond 2x its saturation), then load returns to nominal. Reports, per
# relay, how many streams delivered again after the stall and how long each took.
#
#   bench/overload.sh [--calls 1000] [--stall 10] [--systems "rtpengine tandem-uring tandem-portable"]
#   bench/overload.sh --memory [--calls 10000]   # RSS per call instead (setup only, 1 pps)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="${BIN_DIR:-$ROOT/target/release}"
CALLS=1000; STALL=10; BEFORE=5; AFTER=5; MEMORY=""
SYSTEMS="rtpengine tandem-uring tandem-portable"
SUT_CPU=${SUT_CPU:-1}; GEN_CPU=${GEN_CPU:-0}; NG_PORT=${NG_PORT:-22298}
while [ $# -gt 0 ]; do
  case "$1" in
    --calls) CALLS=$2; shift 2 ;;
    --stall) STALL=$2; shift 2 ;;
    --systems) SYSTEMS=$2; shift 2 ;;
    --memory) MEMORY=1; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
OUT=$(mktemp -d -t tandem-overload.XXXXXX)
SUT_PID=""
cleanup() {
  [ -n "$SUT_PID" ] && kill "$SUT_PID" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

start_sut() {
  case "$1" in
    rtpengine)
      taskset -c "$SUT_CPU" rtpengine --config-file=none --foreground --log-level=3 --log-stderr \
        --interface=127.0.0.1 --listen-ng=127.0.0.1:$NG_PORT --port-min=20000 --port-max=60000 \
        --table=-1 --delete-delay=0 --num-threads=1 --timeout=600 >"$OUT/$1.log" 2>&1 & ;;
    tandem-*)
      taskset -c "$SUT_CPU" "$BIN/tandem" run --io "${1#tandem-}" --ng 127.0.0.1:$NG_PORT --http 127.0.0.1:0 \
        --port-min 20000 --port-max 60000 --timeout-ms 600000 >"$OUT/$1.log" 2>&1 & ;;
  esac
  SUT_PID=$!
  sleep 1
}

for system in $SYSTEMS; do
  start_sut "$system"
  if [ -n "$MEMORY" ]; then
    # Endpoints on 127.0.0.2: their ephemeral ports must not take the relay's ports on 127.0.0.1.
    taskset -c "$GEN_CPU" "$BIN/tandem-bench" rtp --ng 127.0.0.1:$NG_PORT --calls "$CALLS" --pps 1 --bind 127.0.0.2 \
      --warmup-s 1 --duration-s 2 --target-pid "$SUT_PID" --quiet --json "$OUT/$system.json" >"$OUT/$system.txt" 2>&1 || true
  else
    total=$((BEFORE + STALL + AFTER))
    # The generator takes the relay's CPU itself (SCHED_FIFO spinner), so the stall and the
    # recovery clock line up exactly.
    taskset -c "$GEN_CPU" "$BIN/tandem-bench" rtp --ng 127.0.0.1:$NG_PORT --calls "$CALLS" \
      --warmup-s 1 --duration-s "$((total - 1))" --stall-cpu "$SUT_CPU" --stall-at-s "$BEFORE" --stall-s "$STALL" \
      --quiet --json "$OUT/$system.json" >"$OUT/$system.txt" 2>&1 || true
  fi
  kill "$SUT_PID" 2>/dev/null || true; wait "$SUT_PID" 2>/dev/null || true; SUT_PID=""
  sleep 0.5
done

python3 - "$OUT" "$SYSTEMS" "$MEMORY" "$CALLS" "$STALL" <<'PY'
import json, os, sys
out, systems, memory, calls, stall = sys.argv[1], sys.argv[2].split(), sys.argv[3], sys.argv[4], sys.argv[5]
print()
if memory:
    print(f"{'system':<16} {'calls':>6} {'RSS bytes per call':>20}")
else:
    print(f"{calls} calls, {stall} s stall of the relay's core, then nominal load")
    print(f"{'system':<16} {'streams':>8} {'never recovered':>16} {'recovery p99 ms':>16} {'max ms':>8} {'dead at end':>12} {'loss% overall':>14}")
for s in systems:
    p = os.path.join(out, s + ".json")
    if not os.path.exists(p):
        print(f"{s:<16} (no result: {open(os.path.join(out, s + '.txt')).read()[-200:]})"); continue
    r = json.load(open(p))
    if memory:
        b = r.get("target_rss_bytes_per_call")
        print(f"{s:<16} {r['calls']:>6} {b if b is None else round(b):>20}")
    else:
        f = lambda v: "-" if v is None else f"{v:.1f}"
        print(f"{s:<16} {r['streams']:>8} {r['streams_not_recovered']:>16} {f(r['recovery_p99_ms']):>16} {f(r['recovery_max_ms']):>8} {r['dead_streams']:>12} {r['loss_pct']:>14.2f}")
print(f"\nraw results: {out}")
PY
