#!/usr/bin/env python3
"""A supervisor whispering, then barging, into a call through Tandem, checked by ear.

Three phones on loopback, each a few lines of SIP over UDP and a PCMU stream of its own tone:
a trunk caller (500 Hz) dials 2000, agent1's registered phone (1100 Hz) answers, and the API
asks for a whispering monitor by the SIP user `boss`, whose registered phone (1900 Hz) Tandem
rings. A Goertzel over the last second of each phase says who hears whom: in whisper the agent
hears caller and supervisor, the caller only the agent, the supervisor both; in barge the
caller hears the supervisor too. Then the monitor is stopped (the supervisor gets a BYE) and the
caller hangs up. The live-calls API lists the call with its codecs and each leg's measured
quality, then with the monitor, and no more once it has ended. Prints MONITOR OK. Then the three
phones dial conf-7, a conference room: each hears the other two and not itself; after the caller
hangs up the other two hear only each other. Prints CONFERENCE OK.
"""
import argparse, hashlib, json, os, random, select, socket, struct, sys, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from transcode import ULAW_ENC, power_at, tone, ulaw_decode  # noqa: E402

FREQ = {"caller": 500, "agent": 1100, "boss": 1900}
HEARD_DB, SILENT_DB = -15.0, -25.0


class Phone:
    def __init__(self, name, sip_port, rtp_port, tandem):
        self.name, self.tandem = name, tandem
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", sip_port))
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", rtp_port))
        self.sip_port, self.rtp_port = sip_port, rtp_port
        self.peer_rtp = None
        self.cseq = 1
        self.samples = tone(FREQ[name], 8000, 6000.0)
        self.seq, self.ts, self.ssrc = 0, 0, random.getrandbits(32)
        self.heard = []

    def send(self, text, to=None):
        self.sip.sendto(text.encode(), to or self.tandem)

    def recv(self, want, timeout=3.0):
        """The next SIP message matching `want` (a start-line prefix); answers OPTIONS."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            rd, _, _ = select.select([self.sip], [], [], max(end - time.monotonic(), 0))
            if not rd:
                break
            data, src = self.sip.recvfrom(65535)
            msg = parse(data.decode(errors="replace"))
            msg["src"] = src
            if msg["start"].startswith("OPTIONS "):
                self.send(response(msg, 200, "opt"), src)
                continue
            if msg["start"].startswith(want):
                return msg
        raise SystemExit(f"{self.name}: no {want!r} within {timeout}s")

    def sdp(self):
        return ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                f"m=audio {self.rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n")

    def request(self, method, uri, headers, body=""):
        ctype = "Content-Type: application/sdp\r\n" if body else ""
        return (f"{method} {uri} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.sip_port};rport;branch=z9hG4bK{random.getrandbits(48):x}\r\n"
                f"Max-Forwards: 70\r\n{headers}{ctype}Content-Length: {len(body)}\r\n\r\n{body}")

    def register(self, user):
        call_id, auth = f"reg-{user}", ""
        for _ in range(2):
            text = self.request("REGISTER", "sip:127.0.0.1", (
                f"From: <sip:{user}@127.0.0.1>;tag=r{user}\r\nTo: <sip:{user}@127.0.0.1>\r\n"
                f"Call-ID: {call_id}\r\nCSeq: {self.cseq} REGISTER\r\n"
                f"Contact: <sip:{user}@127.0.0.1:{self.sip_port}>\r\nExpires: 300\r\n{auth}"))
            self.cseq += 1
            self.send(text)
            res = self.recv("SIP/2.0 ")
            code = int(res["start"].split()[1])
            if code == 200:
                return
            challenge = next(v for v in res["all"].get("www-authenticate", []) if "MD5" in v or "algorithm" not in v)
            auth = "Authorization: " + digest(challenge, user, "secret", "REGISTER", "sip:127.0.0.1") + "\r\n"
        raise SystemExit(f"{user}: REGISTER refused")

    def answer(self, tag):
        """Answers the next INVITE with our SDP and waits for the ACK."""
        inv = self.recv("INVITE ")
        self.send(response(inv, 180, tag), inv["src"])
        self.send(response(inv, 200, tag, self.sdp(), f"<sip:{self.name}@127.0.0.1:{self.sip_port}>"), inv["src"])
        self.peer_rtp = sdp_target(inv["body"])
        self.recv("ACK ")
        return inv

    def dial(self, user, call_id, tandem_port):
        """INVITEs `user` from the trunk's address, ACKs the 200; returns the dialog's headers
        and target for a later BYE."""
        tags = f"From: <sip:{self.name}@127.0.0.1>;tag={call_id}\r\nTo: <sip:{user}@127.0.0.1>\r\nCall-ID: {call_id}\r\n"
        contact = f"Contact: <sip:{self.name}@127.0.0.1:{self.sip_port}>\r\n"
        self.send(self.request("INVITE", f"sip:{user}@127.0.0.1:{tandem_port}", tags + "CSeq: 1 INVITE\r\n" + contact, self.sdp()))
        ok = self.recv("SIP/2.0 200")
        self.peer_rtp = sdp_target(ok["body"])
        dialog = f"From: <sip:{self.name}@127.0.0.1>;tag={call_id}\r\nTo: {ok['h']['to']}\r\nCall-ID: {call_id}\r\n"
        target = ok["h"]["contact"].strip("<>")
        self.send(self.request("ACK", target, dialog + "CSeq: 1 ACK\r\n"))
        return dialog, target

    def hang_up(self, dialog, target):
        self.send(self.request("BYE", target, dialog + "CSeq: 2 BYE\r\n"))
        self.recv("SIP/2.0 200")

    def packet(self):
        i = (self.seq * 160) % len(self.samples)
        payload = bytes(ULAW_ENC(v) for v in (self.samples + self.samples)[i:i + 160])
        p = struct.pack("!BBHII", 0x80, 0, self.seq & 0xffff, self.ts & 0xffffffff, self.ssrc) + payload
        self.seq += 1
        self.ts += 160
        return p


def parse(text):
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    all_ = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        all_.setdefault(k.strip().lower(), []).append(v.strip())
    return {"start": lines[0], "all": all_, "h": {k: v[0] for k, v in all_.items()}, "body": body}


def response(req, code, tag, body="", contact=None):
    reason = {100: "Trying", 180: "Ringing", 200: "OK"}.get(code, "X")
    to = req["h"]["to"]
    if ";tag=" not in to:
        to += f";tag={tag}"
    vias = "".join(f"Via: {v}\r\n" for v in req["all"]["via"])
    extra = f"Contact: {contact}\r\n" if contact else ""
    extra += "Content-Type: application/sdp\r\n" if body else ""
    return (f"SIP/2.0 {code} {reason}\r\n{vias}From: {req['h']['from']}\r\nTo: {to}\r\n"
            f"Call-ID: {req['h']['call-id']}\r\nCSeq: {req['h']['cseq']}\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n{body}")


def sdp_target(sdp):
    ip = next(l.split()[2] for l in sdp.split("\r\n") if l.startswith("c="))
    port = next(int(l.split()[1]) for l in sdp.split("\r\n") if l.startswith("m=audio"))
    return (ip, port)


def digest(challenge, user, password, method, uri):
    params = {}
    for part in challenge.split(" ", 1)[1].split(","):
        k, _, v = part.strip().partition("=")
        params[k] = v.strip('"')
    md5 = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
    ha1, ha2 = md5(f"{user}:{params['realm']}:{password}"), md5(f"{method}:{uri}")
    cnonce, nc = "0a4f113b", "00000001"
    resp = md5(f"{ha1}:{params['nonce']}:{nc}:{cnonce}:auth:{ha2}")
    return (f'Digest username="{user}", realm="{params["realm"]}", nonce="{params["nonce"]}", uri="{uri}", '
            f'response="{resp}", algorithm=MD5, qop=auth, nc={nc}, cnonce="{cnonce}"')


def media(phones, seconds):
    """Every phone sends its tone paced at 20 ms; what each receives is kept (per phase)."""
    for p in phones:
        p.heard = []
    t0 = time.monotonic()
    for i in range(int(seconds * 50)):
        for p in phones:
            if p.peer_rtp:
                p.rtp.sendto(p.packet(), p.peer_rtp)
        while True:
            rem = t0 + (i + 1) * 0.02 - time.monotonic()
            rd, _, _ = select.select([p.rtp for p in phones], [], [], max(rem, 0))
            for p in phones:
                if p.rtp in rd:
                    p.heard.append((time.monotonic() - t0, p.rtp.recv(2048)))
            if rem <= 0:
                break


def hears(p, after_s):
    pcm = [ulaw_decode(c) for t, pkt in p.heard if t >= after_s for c in pkt[12:]]
    if len(pcm) < 4000:
        raise SystemExit(f"{p.name}: only {len(pcm)} samples arrived")
    # Its own tone too: nobody may hear itself.
    power = {who: power_at(pcm, f) for who, f in FREQ.items()}
    top = max(power.values())
    return {who: 10 * __import__("math").log10(max(v, 1e-9) / top) for who, v in power.items()}


def check(phase, phones, expect):
    for p in phones:
        levels = hears(p, 0.5)
        print(f"{phase}: {p.name} hears " + ", ".join(f"{w} {db:+.1f} dB" for w, db in levels.items()))
        for who, db in levels.items():
            heard = who in expect[p.name]
            if heard and db < HEARD_DB or not heard and db > SILENT_DB:
                raise SystemExit(f"{phase}: {p.name} {'should' if heard else 'should not'} hear {who} ({db:+.1f} dB)")


def api(base, token, method, path, body=None):
    req = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        text = r.read()
        return r.status, (json.loads(text) if text else None)


def live_call(base, token, call, required=True):
    """The call as GET /live-calls lists it; None when it is not listed (and not required)."""
    status, calls = api(base, token, "GET", "/tenants/acme/live-calls")
    assert status == 200, status
    found = [c for c in calls["items"] if c["call"] == call]
    if required and not found:
        raise SystemExit(f"call {call} not among the live calls: {calls}")
    return found[0] if found else None


def answered_call(http, token):
    """The call id of the first `call.answered` event (the WebSocket, replayed from the start)."""
    s = socket.create_connection(("127.0.0.1", http), timeout=5)
    s.sendall((f"GET /api/v1/events?cursor=0&tenant=acme HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    head, buf = buf.split(b"\r\n\r\n", 1)
    if b" 101 " not in head.split(b"\r\n")[0]:
        raise SystemExit(f"events: {head[:200]!r}")

    def need(n):
        nonlocal buf
        while len(buf) < n:
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("events: closed")
            buf += chunk
        out, buf = buf[:n], buf[n:]
        return out
    while True:
        b0, b1 = need(2)
        n = b1 & 0x7f
        if n == 126:
            n = struct.unpack("!H", need(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", need(8))[0]
        payload = need(n)
        if b0 & 0x0f == 1:
            e = json.loads(payload)
            if e.get("type") == "call.answered":
                s.close()
                return e["data"]["call"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sip", type=int, required=True)
    ap.add_argument("--http", type=int, required=True)
    ap.add_argument("--token", required=True)
    a = ap.parse_args()
    tandem = ("127.0.0.1", a.sip)
    base = f"http://127.0.0.1:{a.http}/api/v1"
    caller = Phone("caller", 25411, 19410, tandem)
    agent = Phone("agent", 25412, 19420, tandem)
    boss = Phone("boss", 25413, 19430, tandem)
    agent.register("agent1")
    boss.register("boss")

    # The caller dials 2000 (agent1's phone) from the trunk's address.
    tags = "From: <sip:caller@127.0.0.1>;tag=c1\r\nTo: <sip:2000@127.0.0.1>\r\nCall-ID: sup-call\r\n"
    contact = f"Contact: <sip:caller@127.0.0.1:{caller.sip_port}>\r\n"
    caller.send(caller.request("INVITE", f"sip:2000@127.0.0.1:{a.sip}", tags + "CSeq: 1 INVITE\r\n" + contact, caller.sdp()))
    agent.answer("ag")
    ok = caller.recv("SIP/2.0 200")
    caller.peer_rtp = sdp_target(ok["body"])
    to = ok["h"]["to"]
    dialog = f"From: <sip:caller@127.0.0.1>;tag=c1\r\nTo: {to}\r\nCall-ID: sup-call\r\n"
    target = ok["h"]["contact"].strip("<>")
    caller.send(caller.request("ACK", target, dialog + "CSeq: 1 ACK\r\n"))
    call = answered_call(a.http, a.token)
    print(f"call {call} answered")
    media([caller, agent], 0.4)
    live = live_call(base, a.token, call)
    print(f"live: {json.dumps(live, sort_keys=True)}")
    assert (live["state"], live["to"], live["direction"]) == ("answered", "2000", "inbound"), live
    assert [leg["codec"] for leg in live["legs"]] == ["PCMU", "PCMU"] and not live["transcoded"], live
    # RTP has flowed both ways for 0.4 s: the data plane measured each leg.
    assert all(leg["quality"] and leg["quality"]["packets_expected"] > 5 for leg in live["legs"]), live
    assert live["monitor"] is None, live

    status, view = api(base, a.token, "POST", f"/tenants/acme/calls/{call}/monitor", {"supervisor": "boss", "mode": "whisper"})
    assert status == 202 and view["state"] == "ringing", (status, view)
    boss.answer("bs")
    phones = [caller, agent, boss]
    media(phones, 1.5)
    check("whisper", phones, {"caller": {"agent"}, "agent": {"caller", "boss"}, "boss": {"caller", "agent"}})
    status, one = api(base, a.token, "GET", f"/tenants/acme/live-calls/{call}")
    assert status == 200 and one["monitor"] == {"call": call, "supervisor": "boss", "mode": "whisper",
                                                "state": "active"}, (status, one)

    status, view = api(base, a.token, "PATCH", f"/tenants/acme/calls/{call}/monitor", {"mode": "barge"})
    assert status == 200 and view["mode"] == "barge" and view["state"] == "active", (status, view)
    media(phones, 1.5)
    check("barge", phones, {"caller": {"agent", "boss"}, "agent": {"caller", "boss"}, "boss": {"caller", "agent"}})

    status, _ = api(base, a.token, "DELETE", f"/tenants/acme/calls/{call}/monitor")
    assert status == 204, status
    bye = boss.recv("BYE ")
    boss.send(response(bye, 200, "bs"), bye["src"])
    caller.send(caller.request("BYE", target, dialog + "CSeq: 2 BYE\r\n"))
    caller.recv("SIP/2.0 200")
    bye = agent.recv("BYE ")
    agent.send(response(bye, 200, "ag"), bye["src"])
    if live_call(base, a.token, call, required=False) is not None:
        raise SystemExit(f"call {call} still listed live after its end")
    print("MONITOR OK")

    # A conference: the three phones dial conf-7 (room `lobby`), each hears the other two and
    # not itself; once the caller hangs up the other two no longer hear it.
    dialogs = [p.dial("conf-7", f"room-{p.name}", a.sip) for p in phones]
    media(phones, 1.5)
    check("conference", phones, {"caller": {"agent", "boss"}, "agent": {"caller", "boss"}, "boss": {"caller", "agent"}})
    caller.hang_up(*dialogs[0])
    media(phones[1:], 1.2)
    check("conference, caller gone", phones[1:], {"agent": {"boss"}, "boss": {"agent"}})
    for p, d in zip(phones[1:], dialogs[1:]):
        p.hang_up(*d)
    print("CONFERENCE OK")


if __name__ == "__main__":
    main()
