#!/usr/bin/env python3
"""Transcoding through Tandem, driven over ng like Kamailio's rtpengine module would.

Caller A offers PCMA only with `codec: {transcode: [PCMU]}`; callee B answers PCMU only. A sends
a 1000 Hz tone in PCMA, B a 600 Hz tone in PCMU (20 ms packets, 1 s each). Each side must get
the other's tone in its own codec: its payload type, our SSRC, sequence +1 and timestamp +160
per packet, and the tone at its frequency with its energy (decoded here, Goertzel). A telephone
event crosses too. Then a second call answered in Opus: B must get Opus packets on the 48 kHz
clock, one 20 ms mono frame each by their TOC byte; their audio is checked by the
Rust tests (dataplane/tests/transcode.rs), Python has no Opus decoder here.

Usage: transcode.py --ng 127.0.0.1:PORT   (PEERS_DIR on sys.path for ng_client)
"""
import argparse, bisect, math, os, select, socket, struct, sys, time

sys.path.insert(0, os.environ["PEERS_DIR"])
from ng_client import NG, parse_sdp_audio  # noqa: E402


def ulaw_decode(c):
    u = ~c & 0xff
    t = (((u & 0x0f) << 3) + 0x84) << ((u >> 4) & 7)
    return (0x84 - t) if u & 0x80 else (t - 0x84)


def alaw_decode(c):
    a = c ^ 0x55
    e, m = (a >> 4) & 7, a & 0x0f
    t = (m << 4) + 8 if e == 0 else ((m << 4) + 0x108) << (e - 1)
    return t if a & 0x80 else -t


def encoder(decode):
    """Nearest-code encoder built from the decoder's table."""
    pairs = sorted((decode(c), c) for c in range(256))
    values = [v for v, _ in pairs]

    def enc(x):
        i = bisect.bisect_left(values, x)
        best = min((j for j in (i - 1, i) if 0 <= j < len(values)), key=lambda j: abs(values[j] - x))
        return pairs[best][1]
    return enc


ALAW_ENC, ULAW_ENC = encoder(alaw_decode), encoder(ulaw_decode)


def tone(freq, n, amp=8000.0):
    return [int(amp * math.sin(2 * math.pi * freq * i / 8000)) for i in range(n)]


def power_at(x, freq):
    """Goertzel power of `x` at `freq`, normalised to the mean square of a sine carrying it."""
    w = 2 * math.pi * freq / 8000
    c, s1, s2 = 2 * math.cos(w), 0.0, 0.0
    for v in x:
        s1, s2 = v + c * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - c * s1 * s2) * 2 / (len(x) ** 2)


def sdp(port, formats, maps, sess):
    lines = ["v=0", f"o=- {sess} 1 IN IP4 127.0.0.1", "s=t", "c=IN IP4 127.0.0.1", "t=0 0",
             f"m=audio {port} RTP/AVP {' '.join(formats)}"] + [f"a=rtpmap:{m}" for m in maps]
    return "\r\n".join(lines + ["a=fmtp:101 0-15", "a=sendrecv", "a=ptime:20"]) + "\r\n"


def header(p):
    b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", p[:12])
    return b1 & 0x7f, seq, ts, ssrc, bool(b1 & 0x80)


def exchange(a, b, to_b, to_a, a_packets, b_packets):
    """Sends both streams paced at 20 ms; returns (what B got, what A got)."""
    got = {a: [], b: []}
    t0 = time.monotonic()
    for i in range(max(len(a_packets), len(b_packets))):
        if i < len(a_packets):
            a.sendto(a_packets[i], to_b)
        if i < len(b_packets):
            b.sendto(b_packets[i], to_a)
        while True:
            rem = t0 + (i + 1) * 0.02 - time.monotonic()
            rd, _, _ = select.select([a, b], [], [], max(rem, 0))
            for s in rd:
                got[s].append(s.recv(2048))
            if rem <= 0:
                break
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        rd, _, _ = select.select([a, b], [], [], 0.05)
        for s in rd:
            got[s].append(s.recv(2048))
    return got[b], got[a]


def packets(pt, samples, enc, ssrc):
    out = []
    for i in range(len(samples) // 160):
        payload = bytes(enc(v) for v in samples[i * 160:(i + 1) * 160])
        out.append(struct.pack("!BBHII", 0x80, pt | (0x80 if i == 0 else 0), 1000 + i, 4000 + 160 * i, ssrc) + payload)
    return out


def check_stream(name, got, pt, step, sent_ssrc):
    if len(got) < 48:
        raise SystemExit(f"{name}: {len(got)} packets arrived, expected 50")
    h0 = header(got[0])
    for i, p in enumerate(got):
        ppt, seq, ts, ssrc, marker = header(p)
        if ppt != pt or ssrc == sent_ssrc or ssrc != h0[3]:
            raise SystemExit(f"{name}: packet {i} pt {ppt} ssrc {ssrc:#x}")
        if seq != (h0[1] + i) & 0xffff or ts != (h0[2] + step * i) & 0xffffffff:
            raise SystemExit(f"{name}: packet {i} seq {seq} ts {ts} after {h0[1]}/{h0[2]}")
        if marker != (i == 0):
            raise SystemExit(f"{name}: packet {i} marker {marker}")


def check_tone(name, got, decode, freq, sent):
    pcm = [decode(c) for p in got for c in p[12:]]
    ms = sum(v * v for v in pcm) / len(pcm)
    sent_ms = sum(v * v for v in sent) / len(sent)
    share = power_at(pcm, freq) / ms
    level_db = 10 * math.log10(ms / sent_ms)
    print(f"{name}: {len(got)} packets, {freq} Hz carries {share:.1%} of the energy, level {level_db:+.2f} dB")
    if share < 0.95 or abs(level_db) > 0.5:
        raise SystemExit(f"{name}: tone not kept")


def call(ng, callid, answer_formats, answer_maps):
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(("127.0.0.1", 0))
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); b.bind(("127.0.0.1", 0))
    r = ng.cmd({"command": "offer", "call-id": callid, "from-tag": "ta",
                "sdp": sdp(a.getsockname()[1], ["8", "101"], ["8 PCMA/8000", "101 telephone-event/8000"], 1),
                "codec": {"transcode": ["PCMU", "opus"]}})
    assert r["result"] == "ok", r
    mline = [l for l in r["sdp"].splitlines() if l.startswith("m=audio")][0]
    print("offer sent onward:", mline)
    _, port_a = parse_sdp_audio(r["sdp"])
    r = ng.cmd({"command": "answer", "call-id": callid, "from-tag": "ta", "to-tag": "tb",
                "sdp": sdp(b.getsockname()[1], answer_formats, answer_maps, 2)})
    assert r["result"] == "ok", r
    mline = [l for l in r["sdp"].splitlines() if l.startswith("m=audio")][0]
    print("answer to the caller:", mline)
    # PCMA, plus telephone-event only when the callee takes events too.
    want = ["8", "101"] if "101" in answer_formats else ["8"]
    if mline.split()[3:] != want or "PCMA/8000" not in r["sdp"]:
        raise SystemExit("the caller was not answered in PCMA")
    _, port_b = parse_sdp_audio(r["sdp"])
    # A sends to the port in its answer, B to the one in its offer.
    return a, b, ("127.0.0.1", port_b), ("127.0.0.1", port_a)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ng", required=True)
    h, p = ap.parse_args().ng.rsplit(":", 1)
    ng = NG((h, int(p)))

    # Call 1: PCMA <-> PCMU, both directions decoded and checked.
    a, b, to_b, to_a = call(ng, "tc-1", ["0", "101"], ["0 PCMU/8000", "101 telephone-event/8000"])
    a_tone, b_tone = tone(1000, 8000), tone(600, 8000)
    at_b, at_a = exchange(a, b, to_b, to_a, packets(8, a_tone, ALAW_ENC, 0xaaaa),
                          packets(0, b_tone, ULAW_ENC, 0xbbbb))
    check_stream("A->B (PCMA->PCMU)", at_b, 0, 160, 0xaaaa)
    check_stream("B->A (PCMU->PCMA)", at_a, 8, 160, 0xbbbb)
    check_tone("A->B (PCMA->PCMU)", at_b, ulaw_decode, 1000, a_tone)
    check_tone("B->A (PCMU->PCMA)", at_a, alaw_decode, 600, b_tone)
    event = struct.pack("!BBHII", 0x80, 0x80 | 101, 1050, 4000 + 160 * 50, 0xaaaa) + bytes([5, 10, 0, 160])
    at_b, _ = exchange(a, b, to_b, to_a, [event], [])
    if len(at_b) != 1 or header(at_b[0])[0] != 101 or at_b[0][12:] != event[12:]:
        raise SystemExit(f"telephone event not passed: {at_b}")
    print("telephone event: passed with payload type 101")
    ng.cmd({"command": "delete", "call-id": "tc-1", "from-tag": "ta"})

    # Call 2: PCMA -> Opus on the wire.
    a, b, to_b, to_a = call(ng, "tc-2", ["96"], ["96 opus/48000/2"])
    at_b, _ = exchange(a, b, to_b, to_a, packets(8, a_tone, ALAW_ENC, 0xaaaa), [])
    check_stream("A->B (PCMA->Opus)", at_b, 96, 960, 0xaaaa)
    configs = {p[12] >> 3 for p in at_b}
    sizes = sorted(len(p) - 12 for p in at_b)
    # RFC 6716 §3.1: configs of 20 ms frames; stereo bit clear; code 0 (one frame per packet).
    if configs - {1, 5, 9, 13, 15, 19, 23, 27, 31} or any(p[12] & 0x07 for p in at_b):
        raise SystemExit(f"unexpected Opus TOC configs {configs}")
    print(f"A->B (PCMA->Opus): {len(at_b)} packets, TOC configs {sorted(configs)}, payload {sizes[0]}-{sizes[-1]} bytes")
    ng.cmd({"command": "delete", "call-id": "tc-2", "from-tag": "ta"})
    print("TRANSCODE OK")


if __name__ == "__main__":
    main()
