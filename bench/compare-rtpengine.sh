#!/usr/bin/env bash
# Side-by-side RTP relay benchmark: rtpengine, the bare forwarder and Tandem (both I/O backends),
# each in turn alone on the same pinned core, driven by the same generator pinned to the other
# core, over the same load ladder. Prints one table of medians over the repeats, with ratios to
# rtpengine at the same step.
#
#   bench/compare-rtpengine.sh [--ladder "500 1000 2000"] [--duration 10s] [--repeats 3]
#                              [--systems "rtpengine forward tandem-portable tandem-uring"]
#                              [--smoke] [--keep DIR]
# Environment: TANDEM_BIN (default target/release/tandem; Tandem is skipped when it is missing),
# BENCH_BIN (default target/release/tandem-bench), NG_PORT (2223), SUT_CPU (1), GEN_CPU (0),
# WARMUP (2 s), PORT_MIN/PORT_MAX (30000/40000).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_BIN=${BENCH_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/tandem-bench}
TANDEM_BIN=${TANDEM_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/tandem}
LADDER="500 1000 2000"; DURATION=10; WARMUP=${WARMUP:-2}; REPEATS=3
SYSTEMS="rtpengine forward tandem-portable tandem-uring"
SUT_CPU=${SUT_CPU:-1}; GEN_CPU=${GEN_CPU:-0}
NG_PORT=${NG_PORT:-2223}; PORT_MIN=${PORT_MIN:-30000}; PORT_MAX=${PORT_MAX:-40000}
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --ladder) LADDER=$2; shift 2 ;;
    --duration) DURATION=${2%s}; shift 2 ;;
    --repeats) REPEATS=$2; shift 2 ;;
    --systems) SYSTEMS=$2; shift 2 ;;
    --keep) OUT=$2; mkdir -p "$OUT"; shift 2 ;;
    # CI: one short step against the forwarder (and Tandem when built), well under 30 s.
    --smoke) LADDER=50; DURATION=2; WARMUP=0.5; REPEATS=1; SYSTEMS="rtpengine forward tandem-uring tandem-portable"; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$BENCH_BIN" ] || { echo "build first: cargo build --release -p tandem-bench ($BENCH_BIN)" >&2; exit 2; }
OUT=${OUT:-$(mktemp -d -t tandem-compare.XXXXXX)}

# Drop what cannot run here, saying why, rather than failing the whole comparison.
RUN_SYSTEMS=""
for s in $SYSTEMS; do
  case "$s" in
    tandem-*) [ -x "$TANDEM_BIN" ] || { echo "skipping $s: no Tandem binary at $TANDEM_BIN (set TANDEM_BIN)" >&2; continue; } ;;
    rtpengine) command -v rtpengine >/dev/null || { echo "skipping rtpengine: not installed" >&2; continue; } ;;
  esac
  RUN_SYSTEMS="$RUN_SYSTEMS $s"
done

SUT_PID=""
stop_sut() {
  # By PID only: other sessions on this machine may run their own relays.
  if [ -n "$SUT_PID" ]; then
    kill "$SUT_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$SUT_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SUT_PID" 2>/dev/null || true
    wait "$SUT_PID" 2>/dev/null || true
    SUT_PID=""
  fi
}
trap stop_sut EXIT

ng_ping() {
  python3 - "$NG_PORT" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.2)
s.sendto(b"c d7:command4:pinge", ("127.0.0.1", int(sys.argv[1])))
try: sys.exit(0 if b"pong" in s.recv(100) else 1)
except OSError: sys.exit(1)
PY
}

start_sut() {
  local system=$1 log=$OUT/$1.log
  if ng_ping; then echo "something already answers ng on 127.0.0.1:$NG_PORT; set NG_PORT" >&2; exit 1; fi
  case "$system" in
    rtpengine)
      taskset -c "$SUT_CPU" rtpengine --config-file=none --foreground --log-level=4 --log-stderr \
        --interface=127.0.0.1 --listen-ng=127.0.0.1:$NG_PORT --port-min=$PORT_MIN --port-max=$PORT_MAX \
        --table=-1 --delete-delay=0 --num-threads=1 >"$log" 2>&1 & ;;
    forward)
      taskset -c "$SUT_CPU" "$BENCH_BIN" forward --connected --ng 127.0.0.1:$NG_PORT >"$log" 2>&1 & ;;
    tandem-uring|tandem-portable)
      taskset -c "$SUT_CPU" "$TANDEM_BIN" run --io "${system#tandem-}" --cores 1 --ng 127.0.0.1:$NG_PORT \
        --http 127.0.0.1:0 --port-min $PORT_MIN --port-max $PORT_MAX >"$log" 2>&1 & ;;
    *) echo "unknown system $system" >&2; exit 2 ;;
  esac
  SUT_PID=$!   # taskset execs the program, so this is the relay's own PID
  for _ in $(seq 1 50); do
    ng_ping && return 0
    kill -0 "$SUT_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "$system did not answer ng ping: $(tail -5 "$log")" >&2
  stop_sut
  return 1
}

echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p'), kernel $(uname -r)"
echo "systems:$RUN_SYSTEMS; relay on CPU $SUT_CPU, generator on CPU $GEN_CPU; ladder: $LADDER calls;" \
     "${DURATION}s measured after ${WARMUP}s warm-up; $REPEATS repeat(s); raw results in $OUT"
for r in $(seq 1 "$REPEATS"); do
  for calls in $LADDER; do
    for system in $RUN_SYSTEMS; do
      start_sut "$system" || continue
      taskset -c "$GEN_CPU" "$BENCH_BIN" rtp --ng 127.0.0.1:$NG_PORT --calls "$calls" \
        --duration-s "$DURATION" --warmup-s "$WARMUP" --target-pid "$SUT_PID" --quiet \
        --json "$OUT/$system-$calls-$r.json" >"$OUT/$system-$calls-$r.txt" 2>&1 \
        || echo "  ($system at $calls calls failed: $(tail -2 "$OUT/$system-$calls-$r.txt"))" >&2
      stop_sut
      sleep 0.5
    done
  done
done

python3 - "$OUT" "$LADDER" "$RUN_SYSTEMS" <<'PY'
import json, os, statistics, sys
out, ladder, systems = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
def runs(system, calls):
    return [json.load(open(os.path.join(out, f))) for f in sorted(os.listdir(out))
            if f.startswith(f"{system}-{calls}-") and f.endswith(".json")]
def med(rs, key):
    vals = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(vals) if vals else None
fmt = lambda v, d=0: "-" if v is None else f"{v:.{d}f}"
ratio = lambda a, b: f"{a / b:.2f}" if (a is not None and b) else "-"
print()
print(f"{'calls':>6} | {'system':<16} | {'relayed pps':>11} | {'loss%':>7} | {'p50/p99 µs':>15} | {'CPU%':>5} | "
      f"{'CPU µs/pkt':>10} | {'CPU/pkt vs rtpengine':>20} | {'pps vs rtpengine':>16} | runs")
for calls in ladder:
    base = runs("rtpengine", calls)
    base_cpp, base_pps = med(base, "target_cpu_us_per_packet"), med(base, "relayed_pps")
    for system in systems:
        rs = runs(system, calls)
        if not rs:
            print(f"{calls:>6} | {system:<16} | (no result)"); continue
        cpp, pps = med(rs, "target_cpu_us_per_packet"), med(rs, "relayed_pps")
        lat = f"{fmt(med(rs, 'latency_p50_us'))}/{fmt(med(rs, 'latency_p99_us'))}"
        print(f"{calls:>6} | {system:<16} | {fmt(pps):>11} | {fmt(med(rs, 'loss_pct'), 3):>7} | {lat:>15} | "
              f"{fmt(med(rs, 'target_cpu_pct'), 1):>5} | {fmt(cpp, 2):>10} | {ratio(cpp, base_cpp):>20} | "
              f"{ratio(pps, base_pps):>16} | {len(rs)}")
PY
