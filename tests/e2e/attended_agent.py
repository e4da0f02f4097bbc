#!/usr/bin/env python3
"""An agent phone doing an attended transfer (RFC 5589 §7) through Tandem, for the end-to-end test.

It answers the customer's call (call 1), places a consultation call to the transfer target
(call 2) through Tandem, then sends REFER on call 1 with Refer-To carrying Replaces= call 2's
dialog. It expects 202, NOTIFYs ending in "SIP/2.0 200", and a BYE on each of its two dialogs.
Exits 0 when all of that happened within the time limit.

usage: attended_agent.py LISTEN_PORT TANDEM_PORT TARGET_NUMBER
"""
import re
import socket
import sys
import time

listen_port, tandem_port, target = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
tandem = ("127.0.0.1", tandem_port)
me = "127.0.0.1:%d" % listen_port
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", listen_port))
s.settimeout(0.2)
SDP = ("v=0\r\no=agent 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio 18800 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n")


def parse(data):
    text = data.decode(errors="replace")
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    return lines[0], headers, body


def tag(value):
    m = re.search(r";tag=([^;>\s]+)", value)
    return m.group(1) if m else None


def respond(start, headers, code, reason, extra="", body=""):
    to = headers["to"] if tag(headers["to"]) else headers["to"] + ";tag=agent1"
    msg = ("SIP/2.0 %d %s\r\nVia: %s\r\nFrom: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %s\r\n"
           "Contact: <sip:agent@%s>\r\n%s" % (code, reason, headers["via"], headers["from"], to,
                                              headers["call-id"], headers["cseq"], me, extra))
    if body:
        msg += "Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    else:
        msg += "Content-Length: 0\r\n\r\n"
    s.sendto(msg.encode(), tandem)


def request(method, uri, from_, to, call_id, cseq, extra="", body="", branch="x"):
    msg = ("%s %s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK%s\r\nFrom: %s\r\nTo: %s\r\n"
           "Call-ID: %s\r\nCSeq: %d %s\r\nMax-Forwards: 70\r\nContact: <sip:agent@%s>\r\n%s"
           % (method, uri, me, branch, from_, to, call_id, cseq, method, me, extra))
    if body:
        msg += "Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    else:
        msg += "Content-Length: 0\r\n\r\n"
    s.sendto(msg.encode(), tandem)


deadline = time.time() + 30
call1 = None          # headers of the customer's INVITE (as received from Tandem)
call2_to = None       # To of call 2's 200 (Tandem's tag)
call2_id = "consult-%d@agent" % listen_port
state = "wait_call1"
notified_ok = False
byes = set()
while time.time() < deadline:
    try:
        data, _ = s.recvfrom(65535)
    except socket.timeout:
        continue
    start, h, body = parse(data)
    if start.startswith("INVITE") and state == "wait_call1":
        call1 = h
        respond(start, h, 200, "OK", body=SDP)
        state = "answered1"
    elif start.startswith("ACK") and state == "answered1":
        # Consult the transfer target through Tandem.
        request("INVITE", "sip:%s@127.0.0.1:%d" % (target, tandem_port),
                "<sip:agent@%s>;tag=consult" % me, "<sip:%s@127.0.0.1>" % target,
                call2_id, 1, body=SDP, branch="c2inv")
        state = "calling2"
    elif start.startswith("SIP/2.0 200") and h.get("call-id") == call2_id and "INVITE" in h["cseq"] \
            and state == "calling2":
        call2_to = h["to"]
        request("ACK", "sip:tandem@127.0.0.1:%d" % tandem_port, "<sip:agent@%s>;tag=consult" % me,
                call2_to, call2_id, 1, branch="c2ack")
        # REFER on call 1: our side of call 1 is its To (with our tag), Tandem's is its From.
        replaces = "%s%%3Bto-tag%%3D%s%%3Bfrom-tag%%3Dconsult" % (call2_id.replace("@", "%40"),
                                                                   tag(call2_to))
        request("REFER", "sip:tandem@127.0.0.1:%d" % tandem_port,
                call1["to"] + ";tag=agent1", call1["from"], call1["call-id"], 1,
                extra="Refer-To: <sip:%s@127.0.0.1?Replaces=%s>\r\nReferred-By: <sip:agent@%s>\r\n"
                      % (target, replaces, me), branch="refer")
        state = "referred"
    elif start.startswith("SIP/2.0 202"):
        print("agent: REFER accepted")
    elif start.startswith("NOTIFY"):
        print("agent: NOTIFY", body.strip())
        notified_ok = notified_ok or body.startswith("SIP/2.0 200")
        respond(start, h, 200, "OK")
    elif start.startswith("BYE"):
        byes.add(h["call-id"])
        respond(start, h, 200, "OK")
        print("agent: BYE on", h["call-id"])
    elif start.startswith("SIP/2.0 1"):
        pass
    if notified_ok and call1 and {call1["call-id"], call2_id} <= byes:
        print("agent: transferred and released from both calls")
        sys.exit(0)
print("agent: state=%s notified_ok=%s byes=%s" % (state, notified_ok, byes), file=sys.stderr)
sys.exit(1)
