#!/usr/bin/env python3
"""One call through Tandem's SIP B2BUA whose two sides share no codec.

The caller (a trusted trunk source) offers PCMA only; the callee, at the trunk's address, takes
PCMU only. Tandem must offer the callee PCMU besides PCMA, answer the caller in PCMA, and
transcode: the caller sends a 1000 Hz tone in PCMA, the callee a 600 Hz tone in PCMU (20 ms
packets, 1 s each), and each must get the other's tone in its own codec (the checks of
transcode.py: payload type, one SSRC, sequence and timestamp steps, the tone's frequency and
level). Then the caller hangs up. ~2 s.

Usage: b2bua_transcode.py SIP_PORT CALLEE_PORT   (PEERS_DIR in the environment, for transcode.py)
"""
import os, socket, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from transcode import (ALAW_ENC, ULAW_ENC, alaw_decode, check_stream, check_tone,  # noqa: E402
                       exchange, packets, tone, ulaw_decode)

HOST = "127.0.0.1"


def sdp(port, formats, maps):
    lines = ["v=0", "o=- 7 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
             f"m=audio {port} RTP/AVP {formats}"] + [f"a=rtpmap:{m}" for m in maps]
    return "\r\n".join(lines + ["a=fmtp:101 0-15", "a=sendrecv", "a=ptime:20"]) + "\r\n"


def parse(data):
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = [tuple(x.strip() for x in l.split(":", 1)) for l in lines[1:] if ":" in l]
    return lines[0], headers, body


def header(headers, name):
    return next((v for k, v in headers if k.lower() == name.lower()), None)


def recv(sock, want, what):
    """The next message on `sock` that satisfies `want` (others are skipped)."""
    end = time.monotonic() + 5
    while time.monotonic() < end:
        sock.settimeout(max(end - time.monotonic(), 0.01))
        try:
            data = sock.recv(65535)
        except socket.timeout:
            break
        msg = parse(data)
        if want(*msg):
            return msg
    raise SystemExit(f"no {what} within 5 s")


def message(start, headers, body=""):
    text = start + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    if body:
        text += "Content-Type: application/sdp\r\n"
    return (text + f"Content-Length: {len(body)}\r\n\r\n{body}").encode()


def respond(request, code, reason, tag, extra, body=""):
    _, headers, _ = request
    copied = [(k, v) for k, v in headers if k.lower() in ("via", "from", "call-id", "cseq")]
    to = header(headers, "To")
    copied.append(("To", to if ";tag=" in to else f"{to};tag={tag}"))
    return message(f"SIP/2.0 {code} {reason}", copied + extra, body)


def m_line(body):
    return next(l for l in body.split("\r\n") if l.startswith("m=audio"))


def main():
    sip_port, callee_port = int(sys.argv[1]), int(sys.argv[2])
    tandem = (HOST, sip_port)
    caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); caller.bind((HOST, 0))
    callee = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); callee.bind((HOST, callee_port))
    rtp_a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); rtp_a.bind((HOST, 0))
    rtp_b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); rtp_b.bind((HOST, 0))
    me = f"{HOST}:{caller.getsockname()[1]}"
    dialog = [("From", f"<sip:caller@{me}>;tag=tcaller"), ("To", f"<sip:5551234@{HOST}>"),
              ("Call-ID", "b2bua-transcode-1")]
    offer = sdp(rtp_a.getsockname()[1], "8 101", ["8 PCMA/8000", "101 telephone-event/8000"])
    caller.sendto(message(f"INVITE sip:5551234@{HOST}:{sip_port} SIP/2.0",
                          [("Via", f"SIP/2.0/UDP {me};branch=z9hG4bKtc1")] + dialog +
                          [("CSeq", "1 INVITE"), ("Max-Forwards", "70"),
                           ("Contact", f"<sip:caller@{me}>")], offer), tandem)

    # The callee is offered the caller's PCMA first, then what Tandem transcodes to.
    invite = recv(callee, lambda s, h, b: s.startswith("INVITE "), "INVITE at the callee")
    offered = m_line(invite[2]).split()[3:]
    print("offer to the callee:", m_line(invite[2]))
    if offered[0] != "8" or "0" not in offered:
        raise SystemExit(f"PCMU was not added after the caller's PCMA: {offered}")
    tandem_b = int(m_line(invite[2]).split()[1])
    answer = sdp(rtp_b.getsockname()[1], "0 101", ["0 PCMU/8000", "101 telephone-event/8000"])
    callee.sendto(respond(invite, 200, "OK", "tcallee",
                          [("Contact", f"<sip:callee@{HOST}:{callee_port}>")], answer), tandem)
    recv(callee, lambda s, h, b: s.startswith("ACK "), "ACK at the callee")

    # The caller is answered in its own PCMA.
    ok = recv(caller, lambda s, h, b: s.startswith("SIP/2.0 200"), "200 at the caller")
    print("answer to the caller:", m_line(ok[2]))
    if m_line(ok[2]).split()[3:] != ["8", "101"] or "PCMU" in ok[2]:
        raise SystemExit("the caller was not answered in PCMA")
    tandem_a = int(m_line(ok[2]).split()[1])
    to = header(ok[1], "To")
    target = header(ok[1], "Contact").strip("<>")
    in_dialog = [("From", dialog[0][1]), ("To", to), ("Call-ID", dialog[2][1])]
    caller.sendto(message(f"ACK {target} SIP/2.0", [("Via", f"SIP/2.0/UDP {me};branch=z9hG4bKtc2")]
                          + in_dialog + [("CSeq", "1 ACK"), ("Max-Forwards", "70")]), tandem)

    a_tone, b_tone = tone(1000, 8000), tone(600, 8000)
    at_b, at_a = exchange(rtp_a, rtp_b, (HOST, tandem_a), (HOST, tandem_b),
                          packets(8, a_tone, ALAW_ENC, 0xaaaa), packets(0, b_tone, ULAW_ENC, 0xbbbb))
    check_stream("caller->callee (PCMA->PCMU)", at_b, 0, 160, 0xaaaa)
    check_stream("callee->caller (PCMU->PCMA)", at_a, 8, 160, 0xbbbb)
    check_tone("caller->callee (PCMA->PCMU)", at_b, ulaw_decode, 1000, a_tone)
    check_tone("callee->caller (PCMU->PCMA)", at_a, alaw_decode, 600, b_tone)

    caller.sendto(message(f"BYE {target} SIP/2.0", [("Via", f"SIP/2.0/UDP {me};branch=z9hG4bKtc3")]
                          + in_dialog + [("CSeq", "2 BYE"), ("Max-Forwards", "70")]), tandem)
    bye = recv(callee, lambda s, h, b: s.startswith("BYE "), "BYE at the callee")
    callee.sendto(respond(bye, 200, "OK", "tcallee", []), tandem)
    recv(caller, lambda s, h, b: s.startswith("SIP/2.0 200") and header(h, "CSeq").endswith("BYE"),
         "200 for the caller's BYE")
    print("B2BUA TRANSCODE OK")


if __name__ == "__main__":
    main()
