#!/usr/bin/env python3
"""Transcoded calls against one relay (rtpengine or Tandem) over ng; prints the relay's CPU time.

Each call: caller A offers PCMA with `codec: {transcode: [CODEC]}`, callee B answers CODEC only
(PCMU, opus, G722 or G729), so every packet is decoded and re-encoded. Both sides send 20 ms
packets: A a PCMA tone, B a CODEC stream (for Opus, G.722 and G.729: packets the relay itself
produced for B during a warm-up call, replayed). The relay's utime+stime (/proc/PID/stat, all threads) over the
measured window is reported per call and per packet, with the packets each side received.

  transcode_load.py --ng 127.0.0.1:2223 --pid PID --calls 20 --secs 10 --codec opus
"""
import argparse, math, os, select, socket, struct, sys, time

sys.path.insert(0, os.environ.get("PEERS_DIR", os.path.join(os.path.dirname(__file__), "../../shared/peers")))
from ng_client import NG, parse_sdp_audio  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / CLK


def alaw(x):
    """The A-law code whose decoded value is nearest to `x` (160 samples, once)."""
    return min(range(256), key=lambda c: abs(ALAW_V[c] - x))


def alaw_decode(c):
    a = c ^ 0x55
    e, m = (a >> 4) & 7, a & 0x0f
    t = (m << 4) + 8 if e == 0 else ((m << 4) + 0x108) << (e - 1)
    return t if a & 0x80 else -t


ALAW_V = [alaw_decode(c) for c in range(256)]
TONE = bytes(alaw(int(6000 * math.sin(2 * math.pi * 440 * i / 8000))) for i in range(160))
PCMU_SILENCE = b"\xff" * 160


# B's codec: payload type, rtpmap, fmtp, RTP timestamp step per 20 ms, and whether B replays
# what the relay encoded for it (a codec this script cannot encode).
CODECS = {
    "PCMU": (0, "PCMU/8000", None, 160, False),
    "opus": (96, "opus/48000/2", None, 960, True),
    # 16 kHz audio on an 8 kHz RTP clock (RFC 3551): 160 timestamp ticks, 160 bytes per 20 ms.
    "G722": (9, "G722/8000", None, 160, True),
    # Annex B off: every 20 ms is two speech frames (20 bytes), no silence suppression.
    "G729": (18, "G729/8000", "annexb=no", 160, True),
}


def sdp(port, fmt, rtpmap, sess, fmtp=None):
    extra = f"a=fmtp:{fmt} {fmtp}\r\n" if fmtp else ""
    return ("v=0\r\n" f"o=- {sess} 1 IN IP4 127.0.0.1\r\ns=t\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP {fmt}\r\na=rtpmap:{fmt} {rtpmap}\r\n{extra}a=sendrecv\r\na=ptime:20\r\n")


def setup(ng, i, codec):
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(("127.0.0.1", 0)); a.setblocking(False)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); b.bind(("127.0.0.1", 0)); b.setblocking(False)
    cid = f"tl-{os.getpid()}-{i}"
    r = ng.cmd({"command": "offer", "call-id": cid, "from-tag": "a",
                "sdp": sdp(a.getsockname()[1], 8, "PCMA/8000", 1),
                "codec": {"transcode": [codec]}})
    assert r["result"] == "ok", r
    _, to_a = parse_sdp_audio(r["sdp"])
    fmt, rtpmap, fmtp, step, _ = CODECS[codec]
    r = ng.cmd({"command": "answer", "call-id": cid, "from-tag": "a", "to-tag": "b",
                "sdp": sdp(b.getsockname()[1], fmt, rtpmap, 2, fmtp)})
    assert r["result"] == "ok", r
    _, to_b = parse_sdp_audio(r["sdp"])
    return cid, a, b, ("127.0.0.1", to_b), ("127.0.0.1", to_a), fmt, step


def run(calls, secs, b_payloads, first):
    """Paced 20 ms sending on every call both ways, packet numbers from `first` on (so
    sequence numbers and timestamps continue across runs); returns packets received (at A,
    at B)."""
    socks = [s for c in calls for s in (c[1], c[2])]
    got_a = got_b = 0
    t0 = time.monotonic()
    n = int(secs * 50)
    for j in range(n):
        k = first + j
        for cid, a, b, to_b, to_a, fmt, step in calls:
            a.sendto(struct.pack("!BBHII", 0x80, 8, k & 0xffff, 160 * k, 0xa) + TONE, to_b)
            pb = b_payloads[k % len(b_payloads)]
            b.sendto(struct.pack("!BBHII", 0x80, fmt, k & 0xffff, step * k, 0xb) + pb, to_a)
        while True:
            rem = t0 + (j + 1) * 0.02 - time.monotonic()
            rd, _, _ = select.select(socks, [], [], max(rem, 0))
            for s in rd:
                while True:
                    try:
                        s.recv(2048)
                    except BlockingIOError:
                        break
                    if any(s is c[1] for c in calls):
                        got_a += 1
                    else:
                        got_b += 1
            if rem <= 0:
                break
    return got_a, got_b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ng", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--secs", type=float, default=10)
    ap.add_argument("--codec", default="opus", choices=sorted(CODECS))
    o = ap.parse_args()
    h, p = o.ng.rsplit(":", 1)
    ng = NG((h, int(p)))
    # Warm-up call: collect what the relay sends B, to replay as B's stream.
    warm = setup(ng, "warm", o.codec)
    b_payloads = [PCMU_SILENCE]
    for k in range(50):
        warm[1].sendto(struct.pack("!BBHII", 0x80, 8, k, 160 * k, 0xa) + TONE, warm[3])
        time.sleep(0.02)
    got = []
    while True:
        try:
            packet = warm[2].recv(2048)
        except BlockingIOError:
            break
        # The relay really transcodes: B gets its own codec's payload type.
        if packet[1] & 0x7f != warm[5]:
            raise SystemExit(f"warm-up: relay sent B payload type {packet[1] & 0x7f}, not {warm[5]}")
        got.append(packet[12:])
    if CODECS[o.codec][4]:
        if len(got) < 40:
            raise SystemExit(f"warm-up: relay sent B {len(got)} {o.codec} packets")
        b_payloads = got
    ng.cmd({"command": "delete", "call-id": warm[0], "from-tag": "a"})
    calls = [setup(ng, i, o.codec) for i in range(o.calls)]
    run(calls, 1.0, b_payloads, 0)  # latch and settle
    c0, t0 = cpu_s(o.pid), time.monotonic()
    got_a, got_b = run(calls, o.secs, b_payloads, 50)
    c1, t1 = cpu_s(o.pid), time.monotonic()
    for c in calls:
        ng.cmd({"command": "delete", "call-id": c[0], "from-tag": "a"})
    sent = int(o.secs * 50) * o.calls
    cpu = c1 - c0
    print(f"calls {o.calls} codec {o.codec} secs {t1 - t0:.1f} cpu_s {cpu:.2f} "
          f"cpu_ms_per_call_s {1000 * cpu / (o.calls * (t1 - t0)):.3f} "
          f"us_per_packet {1e6 * cpu / (2 * sent):.2f} received_a {got_a}/{sent} received_b {got_b}/{sent}")


if __name__ == "__main__":
    main()
