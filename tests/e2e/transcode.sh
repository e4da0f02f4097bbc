#!/usr/bin/env bash
# Transcoding driven over ng (codec: {transcode: [...]}): PCMA on the caller's side, PCMU or Opus
# on the callee's; tones both ways are decoded and checked (tests/e2e/transcode.py). ~5 s.
source "$(dirname "$0")/lib.sh"
start_tandem 22233 18083 --io uring --cores 1 --port-min 38500 --port-max 38999
PEERS_DIR="$PEERS_DIR" python3 "$ROOT/tests/e2e/transcode.py" --ng 127.0.0.1:22233 >"$WORK/transcode.log" 2>&1 \
  || fail "transcode.py: $(tail -20 "$WORK/transcode.log")"
grep -q "TRANSCODE OK" "$WORK/transcode.log" || fail "transcode check"
dropped=$(curl -fsS http://127.0.0.1:18083/metrics | awk '/^tandem_dp_dropped_packets_total/ && /reason="transcode"/ {s += $NF} END {printf "%d\n", s}')
[ "$dropped" -eq 0 ] || fail "$dropped packets could not be transcoded"
cat "$WORK/transcode.log"
echo "ok: PCMA<->PCMU and PCMA->Opus transcoded through ng"
