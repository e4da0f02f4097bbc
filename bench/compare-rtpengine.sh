#!/usr/bin/env bash
# Side-by-side RTP relay benchmark: rtpengine, the bare kernel forwarder and Tandem (both I/O
# backends), each in turn on the same pinned core, driven by the same generator on the other core,
# over the same load ladder. Prints one table with medians over the repeats and ratios to rtpengine.
#
#   bench/compare-rtpengine.sh [--ladder "500 1000 2000"] [--duration 10] [--repeats 3]
#                              [--systems "rtpengine forward tandem-uring tandem-portable"] [--smoke]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="${BIN_DIR:-$ROOT/target/release}"
LADDER="500 1000 2000"; DURATION=10; WARMUP=2; REPEATS=3
SYSTEMS="rtpengine forward tandem-uring tandem-portable"
SUT_CPU=${SUT_CPU:-1}; GEN_CPU=${GEN_CPU:-0}
NG_PORT=${NG_PORT:-22299}
while [ $# -gt 0 ]; do
  case "$1" in
    --ladder) LADDER=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --repeats) REPEATS=$2; shift 2 ;;
    --systems) SYSTEMS=$2; shift 2 ;;
    --smoke) LADDER=50; DURATION=2; WARMUP=1; REPEATS=1; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$BIN/tandem-bench" ] || { echo "build first: cargo build --release" >&2; exit 2; }
OUT=$(mktemp -d -t tandem-compare.XXXXXX)
SUT_PID=""
stop_sut() {
  if [ -n "$SUT_PID" ]; then kill "$SUT_PID" 2>/dev/null || true; wait "$SUT_PID" 2>/dev/null || true; SUT_PID=""; fi
}
trap stop_sut EXIT

start_sut() {
  local system=$1
  case "$system" in
    rtpengine)
      taskset -c "$SUT_CPU" rtpengine --config-file=none --foreground --log-level=3 --log-stderr \
        --interface=127.0.0.1 --listen-ng=127.0.0.1:$NG_PORT --port-min=20000 --port-max=60000 \
        --table=-1 --delete-delay=0 --num-threads=1 --timeout=600 >"$OUT/$system.log" 2>&1 & ;;
    forward)
      taskset -c "$SUT_CPU" "$BIN/tandem-bench" forward --connected --ng 127.0.0.1:$NG_PORT >"$OUT/$system.log" 2>&1 & ;;
    tandem-uring|tandem-portable)
      taskset -c "$SUT_CPU" "$BIN/tandem" run --io "${system#tandem-}" --ng 127.0.0.1:$NG_PORT \
        --http 127.0.0.1:0 --port-min 20000 --port-max 60000 >"$OUT/$system.log" 2>&1 & ;;
    *) echo "unknown system $system" >&2; exit 2 ;;
  esac
  SUT_PID=$!
  for _ in $(seq 1 50); do
    if python3 - "$NG_PORT" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.2)
s.sendto(b"c d7:command4:pinge", ("127.0.0.1", int(sys.argv[1])))
try: sys.exit(0 if b"pong" in s.recv(100) else 1)
except OSError: sys.exit(1)
PY
    then return 0; fi
    sleep 0.1
  done
  echo "$system did not answer ng ping: $(tail -5 "$OUT/$system.log")" >&2
  exit 1
}

echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p'), kernel $(uname -r)"
echo "system under test on CPU $SUT_CPU, generator on CPU $GEN_CPU; ladder: $LADDER calls; ${DURATION}s measured after ${WARMUP}s; $REPEATS repeat(s)"
for r in $(seq 1 "$REPEATS"); do
  for calls in $LADDER; do
    for system in $SYSTEMS; do
      start_sut "$system"
      taskset -c "$GEN_CPU" "$BIN/tandem-bench" rtp --ng 127.0.0.1:$NG_PORT --calls "$calls" \
        --duration-s "$DURATION" --warmup-s "$WARMUP" --target-pid "$SUT_PID" --quiet \
        --json "$OUT/$system-$calls-$r.json" >"$OUT/$system-$calls-$r.txt" 2>&1 \
        || echo "  ($system at $calls calls failed: $(tail -2 "$OUT/$system-$calls-$r.txt"))"
      stop_sut
      sleep 0.5
    done
  done
done

python3 - "$OUT" "$LADDER" "$SYSTEMS" <<'PY'
import json, os, statistics, sys
out, ladder, systems = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
def runs(system, calls):
    rs = []
    for f in sorted(os.listdir(out)):
        if f.startswith(f"{system}-{calls}-") and f.endswith(".json"):
            rs.append(json.load(open(os.path.join(out, f))))
    return rs
def med(rs, key):
    vals = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(vals) if vals else None
fmt = lambda v, d=0: "-" if v is None else f"{v:.{d}f}"
print()
print(f"{'calls':>6} {'system':<16} {'offered':>9} {'relayed':>9} {'loss%':>7} {'p50µs':>7} {'p99µs':>7} {'p99.9µs':>8} {'CPU%':>6} {'CPUµs/pkt':>10} {'vs rtpengine':>13}")
for calls in ladder:
    base = med(runs("rtpengine", calls), "target_cpu_us_per_packet")
    for system in systems:
        rs = runs(system, calls)
        if not rs:
            print(f"{calls:>6} {system:<16} (no result)"); continue
        cpp = med(rs, "target_cpu_us_per_packet")
        ratio = f"{cpp / base:.2f}x CPU" if (cpp and base) else "-"
        print(f"{calls:>6} {system:<16} {fmt(med(rs,'offered_pps')):>9} {fmt(med(rs,'relayed_pps')):>9} {fmt(med(rs,'loss_pct'),3):>7} "
              f"{fmt(med(rs,'latency_p50_us')):>7} {fmt(med(rs,'latency_p99_us')):>7} {fmt(med(rs,'latency_p999_us')):>8} "
              f"{fmt(med(rs,'target_cpu_pct'),1):>6} {fmt(cpp,2):>10} {ratio:>13}")
print(f"\nraw results: {out}")
PY
