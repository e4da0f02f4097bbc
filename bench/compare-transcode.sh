#!/usr/bin/env bash
# Transcoding CPU cost, rtpengine (Debian) against Tandem: the same ng calls (PCMA caller, the
# callee in PCMU, Opus, G.722 or G.729 through `codec: {transcode: [...]}`), the same paced RTP
# both ways from bench/transcode_load.py, each relay alone on CPU $SUT_CPU; reports the relay's
# CPU time per transcoded call-second and per packet.
#
#   bench/compare-transcode.sh [--calls 20] [--secs 10] [--codecs "PCMU opus G722 G729"]
# Environment: TANDEM_BIN (default target/release/tandem), NG_PORT (2240), SUT_CPU (1), GEN_CPU (0).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TANDEM_BIN=${TANDEM_BIN:-$ROOT/target/release/tandem}
export PEERS_DIR=${PEERS_DIR:-$(cd "$ROOT/.." && pwd)/shared/peers}
CALLS=20; SECS=10; CODECS="PCMU opus G722 G729"
NG_PORT=${NG_PORT:-2240}; SUT_CPU=${SUT_CPU:-1}; GEN_CPU=${GEN_CPU:-0}
while [ $# -gt 0 ]; do
  case "$1" in
    --calls) CALLS=$2; shift 2 ;;
    --secs) SECS=$2; shift 2 ;;
    --codecs) CODECS=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
OUT=$(mktemp -d -t tandem-transcode.XXXXXX)
SUT_PID=""
stop_sut() {
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
  python3 -c "
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.3)
s.sendto(b'p1 d7:command4:pinge', ('127.0.0.1', $NG_PORT))
try: sys.exit(0 if b'pong' in s.recv(1000) else 1)
except OSError: sys.exit(1)"
}
# ng only: no SIP listeners (whose default ports another Tandem on the machine may hold).
printf '[sip]\nenabled = false\n' >"$OUT/tandem.toml"
echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p'); relay on CPU $SUT_CPU, load on CPU $GEN_CPU; $CALLS calls, ${SECS}s; logs in $OUT"
for codec in $CODECS; do
  for system in rtpengine tandem; do
    for _ in $(seq 1 50); do ng_ping || break; sleep 0.1; done
    if ng_ping; then echo "something still answers ng on 127.0.0.1:$NG_PORT; set NG_PORT" >&2; exit 1; fi
    case "$system" in
      rtpengine)
        taskset -c "$SUT_CPU" rtpengine --config-file=none --foreground --log-level=4 --log-stderr \
          --interface=127.0.0.1 --listen-ng=127.0.0.1:$NG_PORT --port-min=41000 --port-max=42000 \
          --table=-1 --delete-delay=0 --num-threads=1 >"$OUT/$system-$codec.log" 2>&1 & ;;
      tandem)
        taskset -c "$SUT_CPU" "$TANDEM_BIN" run --config "$OUT/tandem.toml" --cores 1 --ng 127.0.0.1:$NG_PORT --http 127.0.0.1:0 \
          --data-dir "$OUT/data" --port-min 41000 --port-max 42000 >"$OUT/$system-$codec.log" 2>&1 & ;;
    esac
    SUT_PID=$!
    for _ in $(seq 1 50); do ng_ping && break; sleep 0.1; done
    kill -0 "$SUT_PID" 2>/dev/null || { echo "$system exited: $(tail -3 "$OUT/$system-$codec.log")" >&2; exit 1; }
    printf '%-10s %-5s ' "$system" "$codec"
    taskset -c "$GEN_CPU" python3 "$ROOT/bench/transcode_load.py" --ng 127.0.0.1:$NG_PORT --pid "$SUT_PID" \
      --calls "$CALLS" --secs "$SECS" --codec "$codec"
    stop_sut
  done
done
