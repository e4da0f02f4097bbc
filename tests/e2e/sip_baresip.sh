#!/usr/bin/env bash
# baresip (the peers' agent1 softphone) registers with Tandem using digest authentication and
# auto-answers a call that SIPp places to its number; audio flows both ways through the data plane.
# At the same time two more baresip phones answer in a codec SIPp's PCMA caller lacks (agent2:
# G.722 only, agent3: PCMU only), so the B2BUA transcodes; their audio is checked both ways by
# baresip_audio.py: SIPp's prompt found by correlation in what baresip decoded, baresip's tone
# in the PCMA that reached SIPp (captured on lo).
source "$(dirname "$0")/lib.sh"
SIP=5062   # where ../shared/peers/baresip/agent1/accounts registers
NG=22251; HTTP=18101
command -v baresip >/dev/null || fail "baresip not installed (scripts/setup)"
command -v dumpcap >/dev/null || fail "dumpcap (tshark) not installed (scripts/setup)"

cat >"$WORK/tandem.toml" <<CFG
[sip]
listen_udp = "127.0.0.1:$SIP"
listen_tcp = "127.0.0.1:$SIP"
options_ping_s = 2
# baresip 1.0's libre gives up (ENOSYS) when any challenge names an algorithm but MD5.
digest_algorithms = ["MD5"]

[[sip.tenants]]
name = "acme"
domain = "127.0.0.1"

[[sip.accounts]]
tenant = "acme"
user = "agent1"
password = "secret"

[[sip.trunks]]
name = "carrier"
tenant = "acme"
address = "127.0.0.1:25080"
allow = ["127.0.0.1"]

[[sip.routes]]
tenant = "acme"
match = "2001"
target = "user:agent1"

[[sip.accounts]]
tenant = "acme"
user = "agent2"
password = "secret2"

[[sip.routes]]
tenant = "acme"
match = "2002"
target = "user:agent2"

[[sip.accounts]]
tenant = "acme"
user = "agent3"
password = "secret3"

[[sip.routes]]
tenant = "acme"
match = "2003"
target = "user:agent3"
CFG
start_tandem $NG $HTTP --config "$WORK/tandem.toml" --port-min 37000 --port-max 37999

# baresip's home: the peers' agent1 configuration plus the tone it plays as its microphone.
mkdir -p "$WORK/agent1"
cp "$PEERS_DIR/baresip/agent1/accounts" "$WORK/agent1/"
# Without its ALSA "null" player, whose thread spins a core (baresip still decodes what it gets).
grep -v alsa "$PEERS_DIR/baresip/agent1/config" >"$WORK/agent1/config"
sox -n -r 8000 -c 1 -b 16 "$WORK/agent1/tone8k.wav" synth 30 sine 440 vol 0.3
cd "$WORK/agent1"
baresip -f "$WORK/agent1" >"$WORK/baresip.log" 2>&1 </dev/null &
PIDS+=($!)
cd "$WORK"

# transcoded_phone USER CODEC_MODULE CODEC RATE TONE_HZ SIP_PORT RTP_PORTS: a baresip that takes
# only CODEC, plays a TONE_HZ tone at RATE and dumps what it encodes and decodes (sndfile). No
# audio player: baresip decodes (and dumps) as packets arrive, and ALSA's "null" device would
# spin a core per phone.
transcoded_phone() {
  local user=$1 module=$2 codec=$3 rate=$4 hz=$5 port=$6 rtp=$7 home="$WORK/$1"
  mkdir -p "$home/dump"
  echo "<sip:$user@127.0.0.1:$SIP>;auth_pass=secret${user#agent};answermode=auto;regint=60;audio_codecs=$codec;ptime=20" >"$home/accounts"
  cat >"$home/config" <<BCFG
poll_method		epoll
sip_listen		127.0.0.1:$port
net_interface		127.0.0.1
rtp_ports		$rtp
audio_source		aufile,tone.wav
rtcp_mux		no
jitter_buffer_delay	5-10
snd_path		$home/dump
module_path		/usr/lib/baresip/modules
module			$module
module			aufile.so
module			sndfile.so
module_tmp		uuid.so
module_tmp		account.so
module_app		menu.so
BCFG
  sox -n -r "$rate" -c 1 -b 16 "$home/tone.wav" synth 30 sine "$hz" vol 0.3
  (cd "$home" && exec baresip -f "$home" >"$WORK/baresip-$user.log" 2>&1 </dev/null) &
  PIDS+=($!)
}
# Ports 48600-48699: SIPp 48601/48602 (media 48640-48659), baresip 48610/48620 (+1 kept free).
transcoded_phone agent2 g722.so G722 16000 440 48610 48660-48669
transcoded_phone agent3 g711.so PCMU 8000 600 48620 48670-48679

for _ in $(seq 1 50); do
  [ "$(metric $HTTP tandem_sip_registered_contacts)" -ge 3 ] && break
  sleep 0.2
done
[ "$(metric $HTTP tandem_sip_registered_contacts)" -ge 3 ] || fail "baresip did not register: $(tail -20 "$WORK"/baresip*.log)"
challenged=$(curl -fsS "http://127.0.0.1:$HTTP/metrics" | awk '/^tandem_sip_responses_total\{direction="out",code="401"\}/ {print $NF}')
[ "${challenged:-0}" -ge 1 ] || fail "registration was not challenged"
echo "ok: baresip registered as agent1 after a digest challenge"

# A caller dials 2001: Tandem finds agent1's binding and bridges the call; baresip auto-answers.
# agent2 and agent3 are called at the same time; what reaches SIPp's media ports is captured.
cd "$WORK"; ln -sfn /usr/share/sip-tester pcap
dumpcap -q -i lo -P -f "udp src portrange 37000-37999 and udp dst portrange 48640-48659" -w "$WORK/to-sipp.pcap" 2>"$WORK/dumpcap.log" &
DUMPCAP=$!; PIDS+=($DUMPCAP)
for _ in $(seq 1 50); do grep -q "Capturing on" "$WORK/dumpcap.log" && break; sleep 0.1; done
grep -q "Capturing on" "$WORK/dumpcap.log" || fail "dumpcap cannot capture on lo (root, or its cap_net_raw): $(cat "$WORK/dumpcap.log")"
timeout 60 sipp -sf "$PEERS_DIR/uac_pcap.xml" 127.0.0.1:$SIP -s 2001 -i 127.0.0.1 -p 25090 -mp 17000 \
  -m 1 -l 1 -nostdin -trace_err >uac.log 2>&1 &
CALL1=$!
timeout 60 sipp -sf "$PEERS_DIR/uac_pcap.xml" 127.0.0.1:$SIP -s 2002 -i 127.0.0.1 -p 48601 -mp 48640 \
  -m 1 -l 1 -nostdin -trace_err >uac2.log 2>&1 &
CALL2=$!
timeout 60 sipp -sf "$PEERS_DIR/uac_pcap.xml" 127.0.0.1:$SIP -s 2003 -i 127.0.0.1 -p 48602 -mp 48650 \
  -m 1 -l 1 -nostdin -trace_err >uac3.log 2>&1 &
CALL3=$!
wait $CALL1 || fail "call to agent1 failed: $(tail -5 uac.log; tail -20 "$WORK/baresip.log")"
wait $CALL2 || fail "call to agent2 failed: $(tail -5 uac2.log; tail -20 "$WORK/baresip-agent2.log")"
wait $CALL3 || fail "call to agent3 failed: $(tail -5 uac3.log; tail -20 "$WORK/baresip-agent3.log")"
sleep 0.5
kill $DUMPCAP
curl -fsS "http://127.0.0.1:$HTTP/metrics" >metrics.txt
curl -fsS "http://127.0.0.1:$HTTP/calls" >calls.json
python3 - calls.json <<'PY' || fail "call record wrong: $(head -c 800 calls.json)"
import json, sys
c = next(c for c in json.load(open(sys.argv[1]))["calls"] if "agent1" in c["target"])
print("record:", c["disposition"], c["target"], c["codecs"], c["media"])
assert c["disposition"] == "answered" and "agent1" in c["target"], c
m = c["media"]
# The caller's prompt reached baresip's leg and baresip's tone came back.
assert m["caller"]["rtp_packets_received"] > 100 and m["callee"]["rtp_packets_received"] > 100, m
PY
pings=$(curl -fsS "http://127.0.0.1:$HTTP/metrics" | awk '/^tandem_sip_requests_total\{direction="out",method="OPTIONS"\}/ {print $NF}')
[ "${pings:-0}" -ge 1 ] || fail "no OPTIONS keep-alive sent to the registered contact"
echo "ok: SIPp -> Tandem -> baresip (registered, auto-answered), audio both ways; $pings keep-alive OPTIONS"

# The transcoded calls: each record names the codec pair, the metric counts each call once.
python3 - calls.json <<'PY' || fail "transcoded call records wrong: $(head -c 1500 calls.json)"
import json, sys
calls = json.load(open(sys.argv[1]))["calls"]
for user, codec in (("agent1", None), ("agent2", "G722"), ("agent3", "PCMU")):
    c = next(c for c in calls if user in c["target"])
    want = {"caller": "PCMA", "callee": codec} if codec else None
    print(f"record {user}:", c["disposition"], c["media"]["transcoding"])
    assert c["disposition"] == "answered" and c["media"]["transcoding"] == want, c
PY
for callee in G722 PCMU; do
  n=$(metric $HTTP "tandem_sip_transcoded_calls_total{caller=\"PCMA\",callee=\"$callee\"}")
  [ "$n" -eq 1 ] || fail "tandem_sip_transcoded_calls_total PCMA->$callee is $n, want 1"
done

# Audio, both ways. baresip's sndfile dumps are at the codec's rate; the check runs at 8 kHz.
# Measured: the prompt correlates 0.9997 (G.722, at +6.4 ms: resampler and QMF delay) and 0.9999
# (PCMU, at 0 ms); the tones hold > 0.999 of their energy, 0.05 dB from what baresip encoded.
# 0.95 still passes a lost packet or two (the loudest 20 ms gone: 0.984, 200 ms: 0.965) but not
# a stream one sample out of step (0.90) or anything else.
check_audio() {
  local user=$1 hz=$2 ports=$3 dump="$WORK/$1/dump" kind
  for kind in dec enc; do
    local f; f=$(ls "$dump"/*-$kind.wav 2>/dev/null | head -1)
    [ -n "$f" ] || fail "$user: baresip dumped no $kind audio: $(ls "$dump")"
    sox "$f" -r 8000 -b 16 "$WORK/$user-$kind-8k.wav"
  done
  python3 "$ROOT/tests/e2e/baresip_audio.py" --label "$user" --prompt-pcap "$WORK/pcap/g711a.pcap" \
    --decoded "$WORK/$user-dec-8k.wav" --encoded "$WORK/$user-enc-8k.wav" \
    --capture "$WORK/to-sipp.pcap" --ports "$ports" --tone-hz "$hz" --min-ncc 0.95 --max-level-db 1 ||
    fail "$user: audio check failed"
}
check_audio agent2 440 48640-48649 & CHECK2=$!
check_audio agent3 600 48650-48659 & CHECK3=$!
wait $CHECK2 || fail "agent2 (G.722) audio"
wait $CHECK3 || fail "agent3 (PCMU) audio"
echo "ok: PCMA caller <-> G.722 and PCMU baresip transcoded: prompt and tones verified both ways"
