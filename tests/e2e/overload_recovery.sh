#!/usr/bin/env bash
# Overload and recovery: 200 relayed calls; Tandem's core is taken by a SCHED_FIFO hog for 3 s
# (socket queues overflow, packets drop at the edge); afterwards every stream must deliver again
# within 1 s, no session may be lost, and the drops must be counted.
source "$(dirname "$0")/lib.sh"
CALLS=200; STALL=3
# The data-plane core pins itself to the last CPU of the mask (CPU 1 here): the hog targets it.
start_tandem 22232 18082 --io uring --cores 1 --port-min 36000 --port-max 36999
# The generator itself takes CPU 1 (where the data-plane core runs) with a SCHED_FIFO spinner
# 3 s into the media, for $STALL s, and measures each stream's recovery from the stall's end.
"$BENCH" rtp --ng 127.0.0.1:22232 --calls $CALLS --warmup-s 1 --duration-s 8 \
  --stall-cpu 1 --stall-at-s 3 --stall-s $STALL --cpu 0 --quiet --json "$WORK/overload.json" >"$WORK/bench.txt" 2>&1 \
  || fail "generator failed: $(cat "$WORK/bench.txt")"
read -r not_recovered recovery_max dead calls <<<"$(python3 -c '
import json,sys; r=json.load(open(sys.argv[1]))
print(r["streams_not_recovered"], r["recovery_max_ms"] or 0, r["dead_streams"], r["calls"])' "$WORK/overload.json")"
active=$(metric 18082 'tandem_dp_sessions_active')
overflow=$(metric 18082 'tandem_dp_dropped_packets_total{core="0",reason="socket_overflow"}')
stale=$(metric 18082 'tandem_dp_dropped_packets_total{core="0",reason="stale"}')
echo "calls=$calls not_recovered=$not_recovered recovery_max_ms=$recovery_max dead=$dead sessions_active=$active socket_overflow_drops=$overflow stale_drops=$stale"
[ "$calls" -eq $CALLS ] || fail "only $calls calls set up"
[ "$not_recovered" -eq 0 ] || fail "$not_recovered streams never recovered"
[ "$dead" -eq 0 ] || fail "$dead streams dead at the end"
python3 -c "import sys; sys.exit(0 if float('$recovery_max') <= 1000 else 1)" || fail "recovery took ${recovery_max} ms"
echo "ok: every stream relayed again within ${recovery_max} ms after a ${STALL} s stall"
