#!/usr/bin/env bash
# Side-by-side SIP call-setup benchmark with media anchored: Kamailio 5.6 + rtpengine (the peers'
# kamailio.cfg, rtpengine in user space) against Tandem's B2BUA, each in turn alone on the same
# pinned core, driven by the same generator pinned to the other core, answered by the same UAS
# (`tandem-bench sip-uas`). For each rate of the ladder: achieved cps, answered, failed, setup
# p50/p99 and the system's CPU per call; the highest rate with no failed call is the sustained
# rate. SIPp's built-in uac repeats the highest sustained rate as an independent check.
#
#   bench/compare-sip.sh [--rates "100 200 400"] [--step-s 60] [--hold-ms 1000]
#                        [--systems "kamailio-rtpengine tandem"] [--no-sipp] [--smoke] [--keep DIR]
# Environment: TANDEM_BIN, BENCH_BIN (default target/release/...), SUT_CPU (1), GEN_CPU (0),
# PEERS_DIR (../shared/peers).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_BIN=${BENCH_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/tandem-bench}
TANDEM_BIN=${TANDEM_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/tandem}
PEERS_DIR=${PEERS_DIR:-$(cd "$ROOT/.." && pwd)/shared/peers}
RATES="100 200 400 800"; STEP_S=60; HOLD_MS=1000; SIPP_CHECK=1
SYSTEMS="kamailio-rtpengine tandem"
SUT_CPU=${SUT_CPU:-1}; GEN_CPU=${GEN_CPU:-0}
SUT_SIP=5070; UAS=5080; NG=2223
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rates) RATES=$2; shift 2 ;;
    --step-s) STEP_S=$2; shift 2 ;;
    --hold-ms) HOLD_MS=$2; shift 2 ;;
    --systems) SYSTEMS=$2; shift 2 ;;
    --no-sipp) SIPP_CHECK=0; shift ;;
    --keep) OUT=$2; mkdir -p "$OUT"; shift 2 ;;
    # CI: one short low-rate step per system, well under a minute in all.
    --smoke) RATES=20; STEP_S=4; HOLD_MS=500; SIPP_CHECK=0; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$BENCH_BIN" ] || { echo "build first: cargo build --release --workspace ($BENCH_BIN)" >&2; exit 2; }
OUT=${OUT:-$(mktemp -d -t tandem-sip-compare.XXXXXX)}

PIDS=()
stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  PIDS=()
}
trap stop_all EXIT

# CPU seconds of the system under test: every process started for it and their children
# (Kamailio's workers are child processes; rtpengine's and Tandem's are threads).
sut_cpu() {
  local p all=()
  for p in "${SUT_PIDS[@]}"; do all+=("$p") ; all+=($(pgrep -P "$p" || true)); done
  for p in "${all[@]}"; do awk '{print ($14 + $15) / 100}' "/proc/$p/stat" 2>/dev/null || true; done |
    awk '{s += $1} END {printf "%.2f\n", s}'
}

start_system() {
  SUT_PIDS=()
  case "$1" in
    kamailio-rtpengine)
      command -v rtpengine >/dev/null && command -v kamailio >/dev/null || return 1
      mkdir -p "$OUT/kam_run"
      taskset -c "$SUT_CPU" rtpengine --config-file=none --foreground --log-stderr --log-level=4 \
        --interface=127.0.0.1 --listen-ng=127.0.0.1:$NG --port-min=20000 --port-max=60000 \
        --table=-1 --delete-delay=0 >"$OUT/rtpengine.log" 2>&1 </dev/null &
      PIDS+=($!); SUT_PIDS+=($!)
      # -m/-M: 512/32 MB of shared/private memory; the 64 MB default runs out of transactions
      # near 800 cps, which would measure the package default rather than Kamailio.
      taskset -c "$SUT_CPU" kamailio -f "$PEERS_DIR/kamailio.cfg" -DD -E -Y "$OUT/kam_run" -m 512 -M 32 \
        -A "UAS_URI=\"sip:127.0.0.1:$UAS\"" -A "NG_SOCK=\"udp:127.0.0.1:$NG\"" >"$OUT/kamailio.log" 2>&1 </dev/null &
      PIDS+=($!); SUT_PIDS+=($!)
      ;;
    tandem)
      [ -x "$TANDEM_BIN" ] || return 1
      cat >"$OUT/tandem.toml" <<CFG
[sip]
listen_udp = "127.0.0.1:$SUT_SIP"
listen_tcp = "127.0.0.1:$SUT_SIP"
options_ping_s = 0
[[sip.tenants]]
name = "bench"
domain = "bench.local"
[[sip.trunks]]
name = "generator"
tenant = "bench"
address = "127.0.0.1:$UAS"
allow = ["127.0.0.1"]
[[sip.routes]]
tenant = "bench"
match = "*"
target = "uri:sip:uas@127.0.0.1:$UAS"
CFG
      taskset -c "$SUT_CPU" "$TANDEM_BIN" run --config "$OUT/tandem.toml" --cores 1 --ng 127.0.0.1:$NG \
        --http 127.0.0.1:0 --port-min 20000 --port-max 60000 >"$OUT/tandem.log" 2>&1 </dev/null &
      PIDS+=($!); SUT_PIDS+=($!)
      ;;
  esac
  sleep 1.5
  for p in "${SUT_PIDS[@]}"; do kill -0 "$p" 2>/dev/null || { echo "$1 did not start (see $OUT)" >&2; return 1; }; done
  taskset -c "$GEN_CPU" "$BENCH_BIN" sip-uas --listen 127.0.0.1:$UAS >"$OUT/uas-$1.log" 2>&1 </dev/null &
  PIDS+=($!)
  sleep 0.3
}

printf '%-20s %6s %9s %9s %7s %9s %9s %12s\n' system cps achieved answered failed "p50 ms" "p99 ms" "CPU ms/call" | tee "$OUT/table.txt"
for system in $SYSTEMS; do
  if ! start_system "$system"; then echo "skipping $system" >&2; stop_all; continue; fi
  sustained=0
  for rate in $RATES; do
    json="$OUT/$system-$rate.json"
    before=$(sut_cpu)
    taskset -c "$GEN_CPU" "$BENCH_BIN" sip --target 127.0.0.1:$SUT_SIP --cps "$rate" --duration-s "$STEP_S" \
      --calls 100000000 --max-concurrent 100000 --hold-ms "$HOLD_MS" --to-user 1000 --allow-failures \
      --quiet --json "$json" >"$OUT/$system-$rate.txt" 2>&1 || true
    after=$(sut_cpu)
    python3 - "$json" "$system" "$rate" "$before" "$after" <<'PY' | tee -a "$OUT/table.txt"
import json, sys
r = json.load(open(sys.argv[1])); cpu = float(sys.argv[5]) - float(sys.argv[4])
per_call = 1000 * cpu / max(r["answered"], 1)
print("%-20s %6s %9.1f %9d %7d %9.2f %9.2f %12.3f" % (sys.argv[2], sys.argv[3], r["achieved_cps"], r["answered"], r["failed"], r["setup_p50_ms"], r["setup_p99_ms"], per_call))
PY
    failed=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["failed"])' "$json")
    if [ "$failed" -eq 0 ]; then sustained=$rate; else break; fi
  done
  echo "$system: highest rate with no failed call: $sustained cps" | tee -a "$OUT/table.txt"
  if [ "$SIPP_CHECK" = 1 ] && [ "$sustained" -gt 0 ] && command -v sipp >/dev/null; then
    # Fresh processes: a failed step may have left the system degraded (rtpengine marked down).
    stop_all
    start_system "$system" || continue
    calls=$((sustained * STEP_S))
    (cd "$OUT" && taskset -c "$GEN_CPU" timeout $((STEP_S + 60)) sipp -sn uac 127.0.0.1:$SUT_SIP -s 1000 -i 127.0.0.1 \
      -p 5091 -r "$sustained" -m "$calls" -d "$HOLD_MS" -nostdin -trace_stat -fd 1 >"sipp-$system.log" 2>&1 || true)
    stat=$(ls -1t "$OUT"/uac_*_.csv 2>/dev/null | head -1)
    if [ -n "$stat" ]; then
      python3 - "$stat" "$system" "$sustained" <<'PY' | tee -a "$OUT/table.txt"
import csv, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter=';'))
h, last = rows[0], rows[-1]
get = lambda k: last[h.index(k)]
print("%s: SIPp uac at %s cps: %s successful, %s failed" % (sys.argv[2], sys.argv[3], get("SuccessfulCall(C)"), get("FailedCall(C)")))
PY
      mv "$stat" "$OUT/sipp-$system.csv"
    fi
  fi
  stop_all
done
echo "artifacts in $OUT"
