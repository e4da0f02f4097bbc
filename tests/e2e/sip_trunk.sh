#!/usr/bin/env bash
# Tandem as the client of a carrier trunk: it registers at the carrier with digest auth (the
# carrier is SIPp's registrar scenario from the peers kit, which verifies the digest itself), and
# its outbound INVITEs answer the carrier's challenge (again checked by SIPp's verifier).
source "$(dirname "$0")/lib.sh"
SCEN="$ROOT/tests/e2e/sipp"
SIP=25260; CARRIER=25280; UAC=25290; NG=22261; HTTP=18111

# 1. Registration at the carrier: agent1/secret, as the peers' reg_uas.xml expects.
cat >"$WORK/reg.toml" <<CFG
[sip]
listen_udp = "127.0.0.1:$SIP"
listen_tcp = "127.0.0.1:$SIP"
listen_tls = "127.0.0.1:0"
[[sip.tenants]]
name = "acme"
domain = "acme.test"
[[sip.trunks]]
name = "carrier"
tenant = "acme"
address = "127.0.0.1:$CARRIER"
username = "agent1"
password = "secret"
register = true
register_expires_s = 60
CFG
mkdir -p "$WORK/reg"
(cd "$WORK/reg" && exec setsid timeout 30 sipp -sf "$PEERS_DIR/baresip/reg_uas.xml" -i 127.0.0.1 -p $CARRIER -m 1 \
   -nostdin -trace_err -trace_logs >sipp.log 2>&1 </dev/null) &
carrier_pid=$!
PIDS+=($carrier_pid)
sleep 0.5
start_tandem $NG $HTTP --config "$WORK/reg.toml" --port-min 37500 --port-max 37999
wait $carrier_pid || fail "the carrier did not accept our registration: $(cat "$WORK/reg"/*errors.log "$WORK/reg"/*logs.log 2>/dev/null | tail -5)"
grep -q "auth_ok=true" "$WORK/reg"/*_logs.log || fail "SIPp did not verify our digest"
sleep 0.3
[ "$(metric $HTTP 'tandem_sip_trunk_registered{trunk="acme/carrier"}')" -eq 1 ] || fail "trunk registration not reported"
echo "ok: registered at the carrier trunk; SIPp verified the digest"
kill "$TANDEM_PID"; wait "$TANDEM_PID" 2>/dev/null || true

# 2. Outbound INVITE through the trunk, challenged by the carrier.
cat >"$WORK/call.toml" <<CFG
[sip]
listen_udp = "127.0.0.1:$SIP"
listen_tcp = "127.0.0.1:$SIP"
listen_tls = "127.0.0.1:0"
[[sip.tenants]]
name = "acme"
domain = "acme.test"
[[sip.trunks]]
name = "carrier"
tenant = "acme"
address = "127.0.0.1:$CARRIER"
allow = ["127.0.0.1"]
username = "tandem"
password = "carrier-pw"
[[sip.routes]]
tenant = "acme"
match = "*"
target = "trunk:carrier"
CFG
# A fresh store: the first phase's trunk (seeded from its config) would otherwise stay.
DATA_DIR="$WORK/data-call" start_tandem $((NG + 1)) $((HTTP + 1)) --config "$WORK/call.toml" --port-min 37500 --port-max 37999
mkdir -p "$WORK/call"
(cd "$WORK/call" && exec setsid timeout 60 sipp -sf "$SCEN/uas_trunk_challenge.xml" -i 127.0.0.1 -p $CARRIER -m 3 \
   -mp 16700 -nostdin -trace_err >carrier.log 2>&1 </dev/null) &
carrier_pid=$!
PIDS+=($carrier_pid)
sleep 0.5
(cd "$WORK/call" && timeout 60 sipp -sf "$SCEN/uac_hangup_later.xml" 127.0.0.1:$SIP -s 441234567890 -i 127.0.0.1 \
   -p $UAC -mp 17700 -m 3 -r 2 -nostdin -trace_err >uac.log 2>&1) || fail "caller side: $(tail -3 "$WORK/call/uac.log"; cat "$WORK/call"/*errors.log 2>/dev/null | head)"
wait $carrier_pid || fail "carrier side: $(tail -3 "$WORK/call/carrier.log"; cat "$WORK/call"/*errors.log 2>/dev/null | head)"
echo "ok: 3 outbound calls answered the carrier's challenge (SIPp verified each digest)"
