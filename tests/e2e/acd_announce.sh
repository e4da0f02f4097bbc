#!/usr/bin/env bash
# Queue announcements end to end (about 20 s): a caller waits in a queue with nobody logged in
# and announce_period_s = 10. A small UAC (Python, below) captures the RTP the data plane sends
# it as early media: the hold music, then after 10 s the spoken prompts "You are caller number"
# "one" rendered by espeak-ng at start, then the music again. The prompts must arrive bit-exact
# (µ-law frames of the cached 8 kHz renderings) in one RTP stream whose sequence and timestamps
# run on across both switches.
source "$(dirname "$0")/lib.sh"
SIP=5066; NG=22263; HTTP=18113
command -v espeak-ng >/dev/null || fail "espeak-ng not installed (scripts/setup)"

cat >"$WORK/tandem.toml" <<CFG
[sip]
listen_udp = "127.0.0.1:$SIP"
listen_tcp = "127.0.0.1:$SIP"

[[sip.tenants]]
name = "acme"
domain = "127.0.0.1"

[[sip.trunks]]
name = "carrier"
tenant = "acme"
address = "127.0.0.1:25082"
allow = ["127.0.0.1"]

[[sip.routes]]
tenant = "acme"
match = "4000"
target = "queue:support"

[[sip.queues]]
tenant = "acme"
name = "support"
announce_period_s = 10
CFG
export TANDEM_ADMIN_PASSWORD=announce-test-admin
start_tandem $NG $HTTP --config "$WORK/tandem.toml" --port-min 39000 --port-max 39099
grep -q "prompts ready" "$WORK/tandem.log" || fail "prompts were not rendered: $(cat "$WORK/tandem.log")"

python3 -W ignore::DeprecationWarning - "$SIP" "$WORK/data/prompts" <<'PY' || fail "announcement not heard: $(tail -20 "$WORK/tandem.log")"
import audioop, os, socket, struct, sys, time, wave

sip_port, cache = int(sys.argv[1]), sys.argv[2]
sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); sip.bind(("127.0.0.1", 0))
rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); rtp.bind(("127.0.0.1", 0))
me, media = sip.getsockname()[1], rtp.getsockname()[1]
sdp = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       f"m=audio {media} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
def request(method, cseq, body=""):
    lines = [f"{method} sip:4000@127.0.0.1:{sip_port} SIP/2.0",
             f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-announce-1;rport",
             "From: <sip:caller@127.0.0.1>;tag=announce", "To: <sip:4000@127.0.0.1>",
             "Call-ID: announce-e2e", f"CSeq: 1 {method}", f"Contact: <sip:caller@127.0.0.1:{me}>",
             "Max-Forwards: 70"]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    sip.sendto(("\r\n".join(lines) + "\r\n\r\n" + body).encode(), ("127.0.0.1", sip_port))
request("INVITE", 1, sdp)
sip.settimeout(5)
while True:
    status = sip.recv(65535).decode(errors="replace").split("\r\n", 1)[0]
    if " 180 " in status:
        break
    assert " 100 " in status, status

# 14 s of what we are played: the announcement is due 10 s after entering.
rtp.settimeout(1)
packets, end = [], time.monotonic() + 14
while time.monotonic() < end:
    try:
        packets.append(rtp.recv(2048))
    except socket.timeout:
        pass
request("CANCEL", 1)

# FNV-1a 64 of the render key: the cache file of each phrase (controlplane/src/prompts.rs).
def cached(text):
    h = 0xcbf29ce484222325
    for b in f"1\nen-us\n150\n{text}".encode():
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    with wave.open(os.path.join(cache, f"{h:016x}.wav")) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        ulaw = audioop.lin2ulaw(w.readframes(w.getnframes()), 2)
    ulaw += b"\xff" * (-len(ulaw) % 160)  # the last frame is completed with silence
    return [ulaw[i:i + 160] for i in range(0, len(ulaw), 160)]

heads = [struct.unpack("!BBHII", p[:12]) for p in packets]
print(f"received {len(packets)} packets in 14 s")
assert 600 <= len(packets) <= 720, len(packets)
assert len({h[4] for h in heads}) == 1, "one SSRC"
assert all(h[1] & 0x7F == 0 for h in heads), "PCMU"
# One stream: the sequence runs on; the timestamp too, except that after a stall of the core
# (a loaded machine) frames are skipped: it then jumps by whole frames.
for i in range(1, len(heads)):
    assert heads[i][2] == (heads[i - 1][2] + 1) & 0xFFFF, f"sequence broken at packet {i}"
    step = (heads[i][3] - heads[i - 1][3]) & 0xFFFFFFFF
    assert step % 160 == 0 and 160 <= step <= 160 * 50, f"timestamp step {step} at packet {i}"
# What was played, frame by frame in the stream's own time (None: skipped in a stall).
frames = {((h[3] - heads[0][3]) & 0xFFFFFFFF) // 160: p[12:] for h, p in zip(heads, packets)}
timeline = [frames.get(i) for i in range(max(frames) + 1)]
skipped = timeline.count(None)
phrase = cached("You are caller number") + cached("one")
def fits(at):
    got = timeline[at:at + len(phrase)]
    return len(got) == len(phrase) and all(g is None or g == w for g, w in zip(got, phrase)) \
        and sum(g is not None for g in got) >= len(phrase) * 0.9
starts = [at for at in range(len(timeline)) if timeline[at] == phrase[0] and fits(at)]
assert len(starts) == 1, f"'You are caller number one' found {len(starts)} times ({skipped} frames skipped)"
at = starts[0]
# A 400 ms pause (20 frames of silence) before it, music before that and after it.
assert all(p in (None, b"\xff" * 160) for p in timeline[at - 20:at]), "pause before the prompt"
loud = lambda p: p is not None and max(abs(s) for s in struct.unpack("160h", audioop.ulaw2lin(p, 2))) >= 50
assert sum(map(loud, timeline[:at - 20])) > 100, "music before"
assert sum(map(loud, timeline[at + len(phrase) + 20:])) > 20, "music again after"
print(f"ok: 'You are caller number one' at {at * 20} ms ({len(phrase) * 20} ms of speech), "
      f"music before and after, one stream ({skipped} frames skipped in stalls)")
PY
echo "ok: a waiting caller heard its position announced over the hold music"
