# Shared helpers for the end-to-end tests: start Tandem on loopback, wait for it, clean up by PID.
# Sourced, not run.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PEERS_DIR="${PEERS_DIR:-$(cd "$ROOT/.." && pwd)/shared/peers}"
# The binaries under test: a release build by default; scripts/test points TANDEM_BIN_DIR at the
# one `ci`-profile build it also runs the cargo tests with.
BIN_DIR="${TANDEM_BIN_DIR:-$ROOT/target/release}"
TANDEM="${TANDEM_BIN:-$BIN_DIR/tandem}"
BENCH="${BENCH_BIN:-$BIN_DIR/tandem-bench}"
WORK=$(mktemp -d -t tandem-e2e.XXXXXX)
PIDS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; echo "logs in $WORK" >&2; exit 1; }

[ -x "$TANDEM" ] || fail "$TANDEM not built (cargo build --release --workspace)"
[ -d "$PEERS_DIR" ] || fail "peer configs not found at $PEERS_DIR (set PEERS_DIR)"

# ng_ping HOST PORT: true when an ng server answers ping with pong.
ng_ping() {
  python3 - "$1" "$2" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.3)
s.sendto(b"p1 d7:command4:pinge", (sys.argv[1], int(sys.argv[2])))
try:
    sys.exit(0 if b"pong" in s.recv(1000) else 1)
except OSError:
    sys.exit(1)
PY
}

# start_tandem NG_PORT HTTP_PORT [extra args]: runs tandem in the background, waits for ng.
start_tandem() {
  local ng=$1 http=$2; shift 2
  local storage=()
  # TANDEM_STORAGE_URL (PostgreSQL in CI's second storage pass) or SQLite in the test's directory.
  [ -n "${TANDEM_STORAGE_URL:-}" ] && storage=(--storage-url "$TANDEM_STORAGE_URL")
  setsid "$TANDEM" run --ng "127.0.0.1:$ng" --http "127.0.0.1:$http" --data-dir "${DATA_DIR:-$WORK/data}" "${storage[@]}" "$@" \
    >>"$WORK/tandem.log" 2>&1 </dev/null &
  TANDEM_PID=$!
  PIDS+=("$TANDEM_PID")
  for _ in $(seq 1 50); do
    ng_ping 127.0.0.1 "$ng" && return 0
    kill -0 "$TANDEM_PID" 2>/dev/null || fail "tandem exited: $(cat "$WORK/tandem.log")"
    sleep 0.1
  done
  fail "tandem did not answer ng ping on $ng"
}

# metric HTTP_PORT NAME_WITH_LABELS: sums every sample whose name/labels start with the argument.
metric() {
  curl -fsS "http://127.0.0.1:$1/metrics" | awk -v m="$2" 'index($0, m) == 1 {s += $NF} END {printf "%d\n", s}'
}

# expect_every_packet_relayed HTTP_PORT EXPECTED: every RTP packet the peers sent crossed Tandem.
# The one allowance: SIPp's UAS echoes, and the echo of a caller's last packets can reach Tandem
# after the caller ended its call and closed its port (sooner than usual when a busy machine
# stalls Tandem for a moment); the kernel then refuses the send with the peer's ICMP error
# (`peer_unreachable`). That is the peer leaving, bounded to a call's tail (2% of the packets);
# every other count, local send failures included, must be exact.
expect_every_packet_relayed() {
  local http=$1 expected=$2 relayed dropped gone
  relayed=$(metric "$http" 'tandem_dp_relayed_packets_total')
  dropped=$(metric "$http" 'tandem_dp_dropped_packets_total')
  gone=$(curl -fsS "http://127.0.0.1:$http/metrics" |
    awk '/^tandem_dp_dropped_packets_total\{.*reason="peer_unreachable"/ {s += $NF} END {printf "%d\n", s}')
  echo "RTP expected=$expected relayed=$relayed dropped=$dropped (peer gone: $gone)"
  curl -fsS "http://127.0.0.1:$http/metrics" | grep '^tandem_dp_dropped_packets_total' | grep -v ' 0$' || true
  [ "$((gone * 50))" -le "$expected" ] || fail "$gone packets toward peers that had gone"
  [ "$((relayed + gone))" -eq "$expected" ] || fail "relayed $relayed RTP packets (+$gone to gone peers), expected $expected"
  [ "$((dropped - gone))" -eq 0 ] || fail "$((dropped - gone)) packets dropped"
}
