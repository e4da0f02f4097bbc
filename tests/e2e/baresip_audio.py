#!/usr/bin/env python3
"""Checks the audio of one SIPp ↔ Tandem ↔ baresip call in both directions (sip_baresip.sh).

Towards baresip: SIPp played the PCMA prompt of its g711a.pcap; baresip's `sndfile` module
dumped what it decoded (`--decoded`, resampled to 8 kHz by the caller with sox). The prompt is
rebuilt from the pcap (A-law decoded, placed by RTP timestamp) and found in the dump by
normalised cross-correlation: a coarse search on 10 ms energy envelopes, then sample by sample
around the best envelope lag. The peak must pass `--min-ncc` at a lag in `--max-lag-ms`.

Towards SIPp: the RTP that reached SIPp's media ports was captured on lo (`--capture`, a
classic pcap from dumpcap). Each stream must be PCMA (payload type 8; see the race noted in
`main` for the call's first packets) carrying baresip's tone:
in every whole second, the share of the energy at `--tone-hz` (Goertzel over that second) is at
least `--min-tone-share`, and its level is within `--max-level-db` of what baresip encoded
(`--encoded`, its own dump of the tone before encoding).

Plain Python (no numpy in the CI image): the signals are seconds long, so the searches are
kept narrow instead of computing full correlations.
"""
import argparse, math, operator, struct, sys, wave

RATE = 8000


def alaw_decode(c):
    a = c ^ 0x55
    e, m = (a >> 4) & 7, a & 0x0F
    t = (m << 4) + 8 if e == 0 else ((m << 4) + 0x108) << (e - 1)
    return t if a & 0x80 else -t


ALAW = [alaw_decode(c) for c in range(256)]


def pcap_udp(path):
    """(udp destination port, payload) of each IPv4/UDP packet of a classic pcap file."""
    data = open(path, "rb").read()
    if len(data) < 24:
        raise ValueError(f"{path}: not a pcap file")
    magic = data[:4]
    if magic == b"\xd4\xc3\xb2\xa1":
        endian = "<"
    elif magic == b"\xa1\xb2\xc3\xd4":
        endian = ">"
    else:
        raise ValueError(f"{path}: not a classic pcap file")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    # 1: Ethernet (what lo records as), 113: Linux cooked capture.
    link_len = {1: 14, 113: 16}.get(linktype)
    if link_len is None:
        raise ValueError(f"{path}: link type {linktype} not handled")
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack(endian + "I", data[off + 8 : off + 12])[0]
        frame = data[off + 16 : off + 16 + incl]
        off += 16 + incl
        ip = frame[link_len:]
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        udp = ip[(ip[0] & 0x0F) * 4 :]
        if len(udp) < 8:
            continue
        yield struct.unpack(">H", udp[2:4])[0], udp[8:]


def rtp_fields(pkt):
    """(payload type, sequence, timestamp, payload) of an RTP packet, or None."""
    if len(pkt) < 12 or pkt[0] >> 6 != 2:
        return None
    start = 12 + 4 * (pkt[0] & 0x0F)
    if pkt[0] & 0x10:
        if len(pkt) < start + 4:
            return None
        start += 4 + 4 * struct.unpack(">H", pkt[start + 2 : start + 4])[0]
    end = len(pkt) - (pkt[-1] if pkt[0] & 0x20 and pkt else 0)
    if start > end:
        return None
    seq, ts = struct.unpack(">HI", pkt[2:8])
    return pkt[1] & 0x7F, seq, ts, pkt[start:end]


def prompt_from_pcap(path):
    """The PCMA prompt SIPp plays, as 8 kHz samples placed by RTP timestamp (gaps silent)."""
    frames = [f for f in (rtp_fields(p) for _, p in pcap_udp(path)) if f and f[0] == 8]
    if not frames:
        raise ValueError(f"{path}: no PCMA packets")
    first = frames[0][2]
    out = []
    for _, _, ts, payload in frames:
        at = (ts - first) & 0xFFFFFFFF
        if at > len(out):
            out.extend([0] * (at - len(out)))
        out[at : at + len(payload)] = [ALAW[b] for b in payload]
    return out


def read_wav_8k(path):
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1 or w.getframerate() != RATE:
            raise ValueError(f"{path}: want 8 kHz mono s16, got {w.getparams()}")
        raw = w.readframes(w.getnframes())
    return list(struct.unpack(f"<{len(raw) // 2}h", raw))


def dot(a, b):
    return sum(map(operator.mul, a, b))


def ncc_at(x, y, lag):
    """Normalised correlation of x with y[lag : lag + len(x)] (the part that overlaps)."""
    xs = x[max(0, -lag) :]
    ys = y[max(0, lag) : max(0, lag) + len(xs)]
    xs = xs[: len(ys)]
    den = math.sqrt(dot(xs, xs) * dot(ys, ys))
    return dot(xs, ys) / den if den else 0.0


def envelope(s, block):
    e = [sum(map(abs, s[i : i + block])) / block for i in range(0, len(s) - block + 1, block)]
    mean = sum(e) / len(e) if e else 0.0
    return [v - mean for v in e]


def find_prompt(prompt, decoded, max_lag):
    """(ncc, lag in samples) of the prompt's best match in the decoded audio."""
    block = RATE // 100
    ex, ey = envelope(prompt, block), envelope(decoded, block)
    coarse = max(range(-max_lag // block, max_lag // block + 1), key=lambda k: ncc_at(ex, ey, k))
    around = range(coarse * block - block, coarse * block + block + 1)
    return max((ncc_at(prompt, decoded, lag), lag) for lag in around)


def goertzel_power(s, hz):
    k = 2 * math.cos(2 * math.pi * hz / RATE)
    p1 = p2 = 0.0
    for v in s:
        p1, p2 = v + k * p1 - p2, p1
    return p1 * p1 + p2 * p2 - k * p1 * p2


def db(rms):
    return 20 * math.log10(max(rms, 1e-9) / 32768)


def rms(s):
    return math.sqrt(dot(s, s) / len(s)) if s else 0.0


def captured_streams(path):
    """Per destination port: the decoded PCMA audio in arrival order, and the packets of other
    payload types that came before the first PCMA one and after it."""
    streams, early, late = {}, {}, {}
    for port, pkt in pcap_udp(path):
        f = rtp_fields(pkt)
        if f is None or 72 <= f[0] <= 76:  # not RTP, or RTCP (SR..APP with the marker bit)
            continue
        if f[0] == 8:
            streams.setdefault(port, []).extend(ALAW[b] for b in f[3])
        else:
            counts = late if port in streams else early
            counts[port] = counts.get(port, 0) + 1
    return streams, early, late


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True)
    ap.add_argument("--prompt-pcap", required=True)
    ap.add_argument("--decoded", required=True, help="baresip's decoded audio, 8 kHz mono WAV")
    ap.add_argument("--encoded", required=True, help="baresip's encoded tone, 8 kHz mono WAV")
    ap.add_argument("--capture", required=True, help="pcap of the RTP towards SIPp's ports")
    ap.add_argument("--ports", required=True, help="SIPp's media ports, LOW-HIGH")
    ap.add_argument("--tone-hz", type=float, required=True)
    ap.add_argument("--min-ncc", type=float, required=True)
    ap.add_argument("--max-lag-ms", type=int, default=100)
    ap.add_argument("--min-tone-share", type=float, default=0.9)
    ap.add_argument("--max-level-db", type=float, default=3.0)
    a = ap.parse_args()
    problems = []

    prompt = prompt_from_pcap(a.prompt_pcap)
    decoded = read_wav_8k(a.decoded)
    ncc, lag = find_prompt(prompt, decoded, a.max_lag_ms * RATE // 1000)
    lag_ms = lag * 1000 / RATE
    # The gain that maps the prompt onto what baresip decoded (least squares, at the lag).
    xs, ys = prompt[max(0, -lag) :], decoded[max(0, lag) :]
    xs = xs[: len(ys)]
    gain_db = 20 * math.log10(max(dot(xs, ys[: len(xs)]) / dot(xs, xs), 1e-9))
    print(f"{a.label}: towards baresip: prompt {len(prompt) / RATE:.2f} s in {len(decoded) / RATE:.2f} s "
          f"decoded, correlation {ncc:.4f} at {lag_ms:+.1f} ms, gain {gain_db:+.2f} dB")
    if ncc < a.min_ncc:
        problems.append(f"prompt correlation {ncc:.4f} < {a.min_ncc}")
    if not 0 <= lag_ms <= a.max_lag_ms:
        problems.append(f"prompt found at {lag_ms:+.1f} ms, outside 0..{a.max_lag_ms} ms")
    if abs(gain_db) > a.max_level_db:
        problems.append(f"prompt arrived {gain_db:+.2f} dB off its level")

    low, high = (int(p) for p in a.ports.split("-"))
    streams, early, late = captured_streams(a.capture)
    mine = {p: s for p, s in streams.items() if low <= p <= high}
    early = sum(n for p, n in early.items() if low <= p <= high)
    late = sum(n for p, n in late.items() if low <= p <= high)
    # The callee sends media as it sends its 200 OK; Tandem holds relaying to the caller until
    # the answer's codec plan is out, so not one packet may reach SIPp in the callee's codec.
    if early:
        problems.append(f"{early} packets in the callee's codec before the first PCMA one")
    if late:
        problems.append(f"{late} packets not PCMA towards SIPp once PCMA flowed")
    if len(mine) != 1:
        problems.append(f"want one PCMA stream towards SIPp's ports {a.ports}, got ports {sorted(mine)}")
    sent = read_wav_8k(a.encoded)
    # baresip's tone from its second second on (the first may hold the start of the stream).
    sent_db = db(rms(sent[RATE : 3 * RATE]))
    for port, s in mine.items():
        # Whole seconds after the first (set-up, jitter), while the call lasted.
        seconds = [s[i : i + RATE] for i in range(RATE, len(s) - RATE + 1, RATE)]
        if len(seconds) < 3:
            problems.append(f"only {len(s) / RATE:.2f} s of audio reached SIPp")
            continue
        shares = [2 * goertzel_power(w, a.tone_hz) / (len(w) * dot(w, w)) if dot(w, w) else 0.0 for w in seconds]
        levels = [db(rms(w)) for w in seconds]
        print(f"{a.label}: towards SIPp: {len(s) / RATE:.2f} s of PCMA on port {port}; "
              f"{a.tone_hz:g} Hz share per second min {min(shares):.4f}; level {min(levels):.2f}..{max(levels):.2f} dBFS "
              f"(baresip encoded {sent_db:.2f} dBFS)")
        if min(shares) < a.min_tone_share:
            problems.append(f"{a.tone_hz:g} Hz holds only {min(shares):.3f} of a second's energy")
        worst = max(abs(v - sent_db) for v in levels)
        if worst > a.max_level_db:
            problems.append(f"level off by {worst:.2f} dB from what baresip encoded")

    for p in problems:
        print(f"{a.label}: FAIL: {p}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
