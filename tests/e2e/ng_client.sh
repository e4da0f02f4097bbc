#!/usr/bin/env bash
# The ng client from the peers kit (written against rtpengine) drives Tandem: ping, offer, answer,
# RTP both ways through the two allocated ports, query, delete. Once per I/O backend.
source "$(dirname "$0")/lib.sh"
for io in ${IO_BACKENDS:-uring portable}; do
  start_tandem 22230 18080 --io "$io" --cores 1 --port-min 34000 --port-max 34999
  grep -q "io $io" "$WORK/tandem.log" || fail "backend $io not selected: $(head -1 "$WORK/tandem.log")"
  python3 "$PEERS_DIR/ng_client.py" --ng 127.0.0.1:22230 --secs 2 >"$WORK/ng_client_$io.log" 2>&1 \
    || fail "ng_client.py against io=$io: $(tail -20 "$WORK/ng_client_$io.log")"
  grep -q "RELAY OK" "$WORK/ng_client_$io.log" || fail "relay check ($io)"
  relayed=$(metric 18080 'tandem_dp_relayed_packets_total')
  [ "$relayed" -ge 190 ] || fail "metrics show $relayed relayed packets ($io)"
  echo "ok: ng_client.py relay via io=$io ($relayed packets relayed)"
  kill "$TANDEM_PID"; wait "$TANDEM_PID" 2>/dev/null || true
done
