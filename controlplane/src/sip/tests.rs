//! Deterministic tests of the SIP core with simulated time: parser, transactions, registrar and
//! B2BUA flows end to end at the message level.

use super::b2bua::{Action, Disposition, Engine, MediaOp, Now, SipEvent};
use super::config::{AccountConfig, RouteConfig, SipConfig, TenantConfig, TrunkConfig};
use super::digest;
use super::message::{Message, Method};
use super::metrics::SipMetrics;
use super::transaction::{Output, Peer, Timers, TransactionLayer, Transport};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem_dataplane::api::{LegIndex, SessionId, SessionStats};

fn udp(addr: &str) -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: addr.parse().unwrap(),
    }
}

const SDP_A: &str = "v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n";
const SDP_B: &str = "v=0\r\no=b 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n";

fn invite(branch: &str, call_id: &str, to_user: &str, sdp: &str) -> Vec<u8> {
    format!(
        "INVITE sip:{to_user}@127.0.0.1 SIP/2.0\r\nv: SIP/2.0/UDP 10.0.0.1:5060;branch={branch}\r\nf: <sip:caller@10.0.0.1>;tag=atag\r\nt: <sip:{to_user}@127.0.0.1>\r\ni: {call_id}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nm: <sip:caller@10.0.0.1:5060>\r\nc: application/sdp\r\nl: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

#[test]
fn parses_compact_multi_via_and_folded_headers() {
    let text = "OPTIONS sip:x@y SIP/2.0\r\nv: SIP/2.0/UDP a:1;branch=z9hG4bK1, SIP/2.0/TCP b;branch=z9hG4bK2\r\nVia: SIP/2.0/UDP c\r\nf: <sip:a@b>;tag=1\r\nt: <sip:x@y>\r\ni: abc\r\nCSeq: 7\r\n OPTIONS\r\nSubject: hello\r\n world\r\nl: 0\r\n\r\n";
    let m = Message::parse(text.as_bytes()).unwrap();
    let vias: Vec<&str> = m.get_all("Via").collect();
    assert_eq!(vias.len(), 3);
    assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK1"));
    assert_eq!(m.cseq(), Some((7, Method::Options)));
    assert_eq!(m.get("Subject"), Some("hello world"));
    assert_eq!(m.from_tag(), Some("1"));
    assert_eq!(m.call_id(), "abc");
    let printed = Message::parse(&m.to_bytes()).unwrap();
    assert_eq!(printed.headers, m.headers);
}

#[test]
fn malformed_messages_get_a_reason_and_an_answer_when_possible() {
    let base = "INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c\r\n";
    let cases: Vec<(String, &str, bool)> = vec![
        (
            format!("{base}CSeq: 1 INVITE\r\nContent-Length: 50\r\n\r\nshort"),
            "Content-Length exceeds",
            true,
        ),
        (
            format!("{base}CSeq: 99999999999 INVITE\r\n\r\n"),
            "CSeq",
            true,
        ),
        (format!("{base}CSeq: 1 BYE\r\n\r\n"), "CSeq method", true),
        (
            format!("{base}CSeq: 1 INVITE\r\nBad Header\r\n\r\n"),
            "colon",
            true,
        ),
        (
            format!("{base}CSeq: 1 INVITE\r\nMax-Forwards: many\r\n\r\n"),
            "Max-Forwards",
            true,
        ),
        (format!("{base}\r\n"), "CSeq", false),
        ("INVITE sip:x@y\r\n\r\n".to_string(), "request line", false),
        ("garbage\r\n\r\n".to_string(), "request line", false),
        (
            "SIP/2.0 999999 Huge\r\n\r\n".to_string(),
            "status line",
            false,
        ),
        (
            format!("{base}CSeq: 1 INVITE\r\nX: {}\r\n\r\n", "a".repeat(9000)),
            "too long",
            true,
        ),
    ];
    for (text, reason, answerable) in cases {
        let e = Message::parse(text.as_bytes()).unwrap_err();
        assert!(e.reason.contains(reason), "{reason}: got {}", e.reason);
        assert_eq!(e.partial.is_some(), answerable, "{reason}");
    }
    let mut invalid_utf8 = format!("{base}CSeq: 1 INVITE\r\nSubject: ").into_bytes();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe, b'\r', b'\n', b'\r', b'\n']);
    let e = Message::parse(&invalid_utf8).unwrap_err();
    assert!(e.reason.contains("UTF-8") && e.partial.is_some());
}

#[test]
fn bad_request_is_answered_with_400_and_reason() {
    let mut layer = TransactionLayer::new(Timers::default(), 1);
    let now = Instant::now();
    let text = "INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9:5062;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 50\r\n\r\n";
    layer.receive(now, text.as_bytes(), udp("10.0.0.9:5062"));
    let out: Vec<Output> = layer.drain().collect();
    let Output::Send { peer, bytes } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(peer.addr, "10.0.0.9:5062".parse::<SocketAddr>().unwrap());
    let res = Message::parse(bytes).unwrap();
    assert_eq!(res.status(), Some(400));
    assert!(String::from_utf8_lossy(bytes).contains("Content-Length"));
    layer.receive(now, b"\xff\xfe garbage", udp("10.0.0.9:5062"));
    assert!(matches!(layer.drain().next(), Some(Output::Dropped { .. })));
}

fn sends(out: &[Output]) -> usize {
    out.iter()
        .filter(|o| matches!(o, Output::Send { .. }))
        .count()
}

#[test]
fn invite_client_timer_a_doubles_and_timer_b_times_out() {
    let mut layer = TransactionLayer::new(Timers::default(), 1);
    let t0 = Instant::now();
    let mut req = Message::request(Method::Invite, "sip:b@10.0.0.2");
    req.push("From", "<sip:a@x>;tag=1")
        .push("To", "<sip:b@x>")
        .push("Call-ID", "c1")
        .push("CSeq", "1 INVITE");
    let tx = layer.send_request(t0, req, udp("10.0.0.2:5060"), None);
    assert_eq!(sends(&layer.drain().collect::<Vec<_>>()), 1);
    // Retransmissions at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s; timeout at 32 s.
    let mut retransmits = Vec::new();
    let mut timed_out = None;
    for ms in (0..=33_000).step_by(10) {
        let now = t0 + Duration::from_millis(ms);
        layer.on_timer(now);
        for o in layer.drain() {
            match o {
                Output::Send { .. } => retransmits.push(ms),
                Output::Timeout { tx: t } if t == tx => timed_out = Some(ms),
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(retransmits, vec![500, 1500, 3500, 7500, 15500, 31500]);
    assert_eq!(timed_out, Some(32_000));
}

#[test]
fn non_invite_timer_e_caps_at_t2_and_reliable_transports_never_retransmit() {
    let mut layer = TransactionLayer::new(Timers::default(), 1);
    let t0 = Instant::now();
    let mut req = Message::request(Method::Options, "sip:b@10.0.0.2");
    req.push("From", "<sip:a@x>;tag=1")
        .push("To", "<sip:b@x>")
        .push("Call-ID", "c2")
        .push("CSeq", "1 OPTIONS");
    layer.send_request(t0, req.clone(), udp("10.0.0.2:5060"), None);
    layer.send_request(
        t0,
        req,
        Peer {
            transport: Transport::Tcp,
            addr: "10.0.0.3:5060".parse().unwrap(),
        },
        None,
    );
    layer.drain().for_each(drop);
    let mut udp_at = Vec::new();
    let mut timeouts = 0;
    for ms in (0..=32_000).step_by(10) {
        layer.on_timer(t0 + Duration::from_millis(ms));
        for o in layer.drain() {
            match o {
                Output::Send { peer, .. } => {
                    assert_eq!(peer.transport, Transport::Udp);
                    udp_at.push(ms)
                }
                Output::Timeout { .. } => timeouts += 1,
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(&udp_at[..5], &[500, 1500, 3500, 7500, 11500]);
    assert!(udp_at.windows(2).skip(4).all(|w| w[1] - w[0] == 4000));
    assert_eq!(timeouts, 2, "Timer F for both");
}

#[test]
fn server_2xx_is_retransmitted_until_ack_and_reported_when_ack_never_comes() {
    let mut layer = TransactionLayer::new(Timers::default(), 1);
    let t0 = Instant::now();
    let peer = udp("10.0.0.1:5060");
    layer.receive(t0, &invite("z9hG4bKs1", "call-s1", "1234", SDP_A), peer);
    let tx = layer
        .drain()
        .find_map(|o| match o {
            Output::Request { tx: Some(tx), .. } => Some(tx),
            _ => None,
        })
        .unwrap();
    let req = Message::parse(&invite("z9hG4bKs1", "call-s1", "1234", SDP_A)).unwrap();
    layer.respond(t0, tx, Message::response_to(&req, 200, Some("x")));
    layer.drain().for_each(drop);
    let mut resent = 0;
    let mut ack_timeout = false;
    for ms in (0..=33_000).step_by(10) {
        layer.on_timer(t0 + Duration::from_millis(ms));
        for o in layer.drain() {
            match o {
                Output::Send { .. } => resent += 1,
                Output::AckTimeout { invite } => ack_timeout = invite == tx,
                other => panic!("{other:?}"),
            }
        }
    }
    assert!(resent >= 9, "2xx resent {resent} times");
    assert!(ack_timeout);

    // With an ACK the retransmissions stop and nothing is reported.
    let t1 = t0 + Duration::from_secs(100);
    layer.receive(t1, &invite("z9hG4bKs2", "call-s2", "1234", SDP_A), peer);
    let tx = layer
        .drain()
        .find_map(|o| match o {
            Output::Request { tx: Some(tx), .. } => Some(tx),
            _ => None,
        })
        .unwrap();
    let req = Message::parse(&invite("z9hG4bKs2", "call-s2", "1234", SDP_A)).unwrap();
    layer.respond(t1, tx, Message::response_to(&req, 200, Some("x")));
    layer.drain().for_each(drop);
    let ack = "ACK sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKack\r\nFrom: <sip:caller@10.0.0.1>;tag=atag\r\nTo: <sip:1234@127.0.0.1>;tag=x\r\nCall-ID: call-s2\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n";
    layer.receive(t1 + Duration::from_millis(100), ack.as_bytes(), peer);
    assert!(matches!(
        layer.drain().next(),
        Some(Output::Request { tx: None, .. })
    ));
    for ms in (100..=40_000).step_by(10) {
        layer.on_timer(t1 + Duration::from_millis(ms));
        assert_eq!(layer.drain().count(), 0);
    }
    assert_eq!(layer.active(), (0, 0), "transactions end");
}

fn config() -> SipConfig {
    SipConfig {
        listen_udp: Some("127.0.0.1:5060".parse().unwrap()),
        tenants: vec![TenantConfig {
            name: "acme".into(),
            domain: "acme.test".into(),
            max_calls: Some(2),
            country_code: None,
            transcode: None,
        }],
        accounts: vec![AccountConfig {
            tenant: "acme".into(),
            user: "agent1".into(),
            password: "pw".into(),
            dtmf: Default::default(),
        }],
        trunks: vec![TrunkConfig {
            name: "carrier".into(),
            tenant: "acme".into(),
            address: "10.0.0.2:5060".parse().unwrap(),
            allow: vec!["10.0.0.1".into()],
            username: None,
            password: None,
            register: false,
            register_expires_s: 600,
            dtmf: Default::default(),
        }],
        routes: vec![
            RouteConfig {
                tenant: "acme".into(),
                pattern: "2000".into(),
                target: "user:agent1".into(),
            },
            RouteConfig {
                tenant: "acme".into(),
                pattern: "*".into(),
                target: "trunk:carrier".into(),
            },
        ],
        options_ping_s: 0,
        ..SipConfig::default()
    }
}

struct Harness {
    engine: Engine,
    t0: Instant,
    ms: u64,
}

impl Harness {
    fn new() -> Harness {
        let t0 = Instant::now();
        Harness {
            engine: Engine::new(
                config(),
                "192.0.2.1".parse().unwrap(),
                [3; 32],
                t0,
                Arc::new(SipMetrics::default()),
            ),
            t0,
            ms: 0,
        }
    }
    fn now(&self) -> Now {
        Now {
            mono: self.t0 + Duration::from_millis(self.ms),
            unix_ms: 1_700_000_000_000 + self.ms,
        }
    }
    fn feed(&mut self, bytes: &[u8], from: &str) -> Vec<Action> {
        let now = self.now();
        self.engine.receive(now, bytes, udp(from));
        self.engine.drain().collect()
    }
    fn advance(&mut self, ms: u64) -> Vec<Action> {
        let mut out = Vec::new();
        for _ in 0..ms / 10 {
            self.ms += 10;
            let now = self.now();
            self.engine.on_timer(now);
            out.extend(self.engine.drain());
        }
        out
    }
}

fn sent(actions: &[Action]) -> Vec<(SocketAddr, Message)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { peer, bytes } => Some((peer.addr, Message::parse(bytes).unwrap())),
            _ => None,
        })
        .collect()
}

fn response_from(req: &Message, code: u16, tag: &str, sdp: Option<&str>) -> Vec<u8> {
    let mut res = Message::response_to(req, code, Some(tag));
    res.push("Contact", "<sip:callee@10.0.0.2:5060>");
    if let Some(sdp) = sdp {
        res.set_body("application/sdp", sdp.as_bytes().to_vec());
    }
    res.to_bytes()
}

/// The carrier (10.0.0.1, media on port 4000, offering `sdp`) calls `to_user`; media is given
/// session slot and ports `media`. Where the INVITE to the callee goes, and the INVITE.
fn place_call(
    h: &mut Harness,
    call_id: &str,
    to_user: &str,
    sdp: &str,
    media: (u32, [u16; 2]),
) -> (SocketAddr, Message) {
    let actions = h.feed(&invite("z9hG4bKa1", call_id, to_user, sdp), "10.0.0.1:5060");
    assert_eq!(sent(&actions)[0].1.status(), Some(100));
    let (call, a) = actions
        .iter()
        .find_map(|a| match a {
            Action::Media(MediaOp::Create { call, a, .. }) => Some((*call, *a)),
            _ => None,
        })
        .expect("media requested");
    assert_eq!(a.rtp, Some("10.0.0.1:4000".parse().unwrap()));
    let session = SessionId {
        core: 0,
        slot: media.0,
        generation: 1,
    };
    let now = h.now();
    h.engine.media_created(now, call, Ok((session, media.1)));
    let out: Vec<Action> = h.engine.drain().collect();
    sent(&out).remove(0)
}

/// Caller INVITE through media allocation to the INVITE sent to B.
fn start_call(h: &mut Harness, call_id: &str) -> Message {
    start_call_with(h, call_id, SDP_A)
}

/// A call from 10.0.0.1 (media on port 4000, offering `sdp`) routed to 10.0.0.2; the INVITE
/// to the callee.
fn start_call_with(h: &mut Harness, call_id: &str, sdp: &str) -> Message {
    let (to, b_invite) = place_call(h, call_id, "5551234", sdp, (1, [30000, 30004]));
    assert_eq!(to, "10.0.0.2:5060".parse::<SocketAddr>().unwrap());
    assert_eq!(b_invite.method(), Some(&Method::Invite));
    assert_eq!(b_invite.request_uri(), Some("sip:5551234@10.0.0.2:5060"));
    let body = b_invite.body_str().unwrap();
    assert!(body.contains("c=IN IP4 192.0.2.1") && body.contains("m=audio 30004 "));
    assert!(
        !body.contains("10.0.0.1"),
        "caller's address hidden: {body}"
    );
    b_invite
}

#[test]
fn b2bua_call_answered_and_hung_up_by_caller() {
    let mut h = Harness::new();
    let b_invite = start_call(&mut h, "call-1");
    h.ms += 1;
    let out = h.feed(
        &response_from(&b_invite, 180, "btag", None),
        "10.0.0.2:5060",
    );
    let to_a = sent(&out);
    assert_eq!(to_a[0].1.status(), Some(180));
    assert_eq!(to_a[0].0, "10.0.0.1:5060".parse::<SocketAddr>().unwrap());
    let a_tag = to_a[0].1.to_tag().unwrap().to_string();
    h.ms += 1;
    let out = h.feed(
        &response_from(&b_invite, 200, "btag", Some(SDP_B)),
        "10.0.0.2:5060",
    );
    let msgs = sent(&out);
    let ack = msgs
        .iter()
        .find(|(_, m)| m.method() == Some(&Method::Ack))
        .unwrap();
    assert_eq!(ack.1.request_uri(), Some("sip:callee@10.0.0.2:5060"));
    assert_eq!(ack.1.cseq(), Some((1, Method::Ack)));
    let ok = msgs.iter().find(|(_, m)| m.status() == Some(200)).unwrap();
    assert_eq!(ok.1.to_tag(), Some(a_tag.as_str()), "same tag as the 180");
    assert!(ok.1.body_str().unwrap().contains("m=audio 30000 "));
    assert!(out.iter().any(|a| matches!(a, Action::Media(MediaOp::Update { leg: LegIndex::B, params, .. }) if params.rtp == Some("10.0.0.2:5000".parse().unwrap()))));
    assert_eq!(h.engine.active_calls(), 1);

    // The caller's ACK, then BYE.
    let ack = format!("ACK sip:tandem@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa2\r\nFrom: <sip:caller@10.0.0.1>;tag=atag\r\nTo: <sip:5551234@127.0.0.1>;tag={a_tag}\r\nCall-ID: call-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n");
    assert!(sent(&h.feed(ack.as_bytes(), "10.0.0.1:5060")).is_empty());
    let bye = ack
        .replace("ACK sip", "BYE sip")
        .replace("1 ACK", "2 BYE")
        .replace("z9hG4bKa2", "z9hG4bKa3");
    h.ms += 5000;
    let out = h.feed(bye.as_bytes(), "10.0.0.1:5060");
    let msgs = sent(&out);
    assert!(msgs.iter().any(|(to, m)| m.status() == Some(200)
        && to.port() == 5060
        && to.ip().to_string() == "10.0.0.1"));
    let b_bye = msgs
        .iter()
        .find(|(_, m)| m.method() == Some(&Method::Bye))
        .unwrap();
    assert_eq!(b_bye.0, "10.0.0.2:5060".parse::<SocketAddr>().unwrap());
    assert_eq!(b_bye.1.to_tag(), Some("btag"));
    assert_eq!(b_bye.1.cseq(), Some((2, Method::Bye)));
    let Some(Action::Media(MediaOp::Delete { call, .. })) = out
        .iter()
        .find(|a| matches!(a, Action::Media(MediaOp::Delete { .. })))
    else {
        panic!()
    };
    h.engine.media_deleted(*call, Some(SessionStats::default()));
    let record = h
        .engine
        .drain()
        .find_map(|a| match a {
            Action::Event(SipEvent::CallEnded(r)) => Some(r),
            _ => None,
        })
        .unwrap();
    assert_eq!(record.disposition, Disposition::Answered);
    assert_eq!(record.ended_by, "caller");
    assert_eq!(record.setup_ms, Some(2));
    assert_eq!(record.codecs, vec!["PCMA".to_string()]);
    assert!(record.media.is_some());
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn b2bua_cancel_before_answer_cancels_the_outbound_leg() {
    let mut h = Harness::new();
    let b_invite = start_call(&mut h, "call-2");
    h.feed(
        &response_from(&b_invite, 180, "btag", None),
        "10.0.0.2:5060",
    );
    let cancel = "CANCEL sip:5551234@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa1\r\nFrom: <sip:caller@10.0.0.1>;tag=atag\r\nTo: <sip:5551234@127.0.0.1>\r\nCall-ID: call-2\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n";
    let out = h.feed(cancel.as_bytes(), "10.0.0.1:5060");
    let msgs = sent(&out);
    let codes: Vec<Option<u16>> = msgs.iter().map(|(_, m)| m.status()).collect();
    assert!(
        codes.contains(&Some(200)) && codes.contains(&Some(487)),
        "{codes:?}"
    );
    let b_cancel = msgs
        .iter()
        .find(|(_, m)| m.method() == Some(&Method::Cancel))
        .unwrap();
    assert_eq!(
        b_cancel.1.top_via().unwrap().branch(),
        b_invite.top_via().unwrap().branch()
    );
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Media(MediaOp::Delete { .. }))));
    // B answers the CANCEL and the INVITE with 487; we ACK the 487.
    let out = h.feed(
        &response_from(&b_invite, 487, "btag", None),
        "10.0.0.2:5060",
    );
    assert!(sent(&out)
        .iter()
        .any(|(_, m)| m.method() == Some(&Method::Ack)));
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn b2bua_maps_busy_no_route_and_no_registration() {
    let mut h = Harness::new();
    let b_invite = start_call(&mut h, "call-3");
    let out = h.feed(
        &response_from(&b_invite, 486, "btag", None),
        "10.0.0.2:5060",
    );
    assert!(sent(&out)
        .iter()
        .any(|(to, m)| m.status() == Some(486) && to.ip().to_string() == "10.0.0.1"));
    // An account's number with nobody registered: 480.
    let out = h.feed(
        &invite("z9hG4bKr1", "call-4", "2000", SDP_A),
        "10.0.0.1:5060",
    );
    assert!(sent(&out).iter().any(|(_, m)| m.status() == Some(480)));
    // An untrusted source must authenticate.
    let out = h.feed(
        &invite("z9hG4bKr2", "call-5", "2000", SDP_A),
        "10.9.9.9:5060",
    );
    let challenge = sent(&out)
        .into_iter()
        .find(|(_, m)| m.status() == Some(407))
        .unwrap()
        .1;
    assert_eq!(challenge.get_all("Proxy-Authenticate").count(), 2);
}

#[test]
fn b2bua_outbound_timeout_becomes_408_and_no_answer_becomes_480() {
    let mut h = Harness::new();
    start_call(&mut h, "call-6");
    let out = h.advance(33_000);
    assert!(
        sent(&out).iter().any(|(_, m)| m.status() == Some(408)),
        "Timer B → 408"
    );
    assert_eq!(h.engine.active_calls(), 0);

    let mut h = Harness::new();
    let b_invite = start_call(&mut h, "call-7");
    h.feed(
        &response_from(&b_invite, 180, "btag", None),
        "10.0.0.2:5060",
    );
    let out = h.advance(61_000);
    let msgs = sent(&out);
    assert!(msgs.iter().any(|(_, m)| m.status() == Some(480)));
    assert!(msgs
        .iter()
        .any(|(_, m)| m.method() == Some(&Method::Cancel)));
}

#[test]
fn tenant_call_limit_answers_503_with_retry_after() {
    let mut h = Harness::new();
    start_call(&mut h, "l1");
    h.feed(
        &invite("z9hG4bKl2", "l2", "5551234", SDP_A),
        "10.0.0.1:5060",
    );
    let out = h.feed(
        &invite("z9hG4bKl3", "l3", "5551234", SDP_A),
        "10.0.0.1:5060",
    );
    let refused = sent(&out)
        .into_iter()
        .find(|(_, m)| m.status() == Some(503))
        .unwrap()
        .1;
    assert!(refused.get("Retry-After").is_some());
}

fn register(cseq: u32, auth: Option<&str>, contact: &str) -> Vec<u8> {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!("REGISTER sip:acme.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.5:5060;branch=z9hG4bKreg{cseq};rport\r\nFrom: <sip:agent1@acme.test>;tag=r1\r\nTo: <sip:agent1@acme.test>\r\nCall-ID: reg-1\r\nCSeq: {cseq} REGISTER\r\nContact: {contact}\r\nExpires: 600\r\n{auth}Content-Length: 0\r\n\r\n").into_bytes()
}

#[test]
fn register_with_digest_then_calls_reach_the_contact_behind_nat() {
    let mut h = Harness::new();
    let from = "203.0.113.7:40000"; // the NAT's public side
    let out = h.feed(&register(1, None, "<sip:agent1@192.168.1.5:5060>"), from);
    let (to, challenge) = sent(&out).remove(0);
    assert_eq!(to, from.parse::<SocketAddr>().unwrap(), "rport honoured");
    assert_eq!(challenge.status(), Some(401));
    let www: Vec<&str> = challenge.get_all("WWW-Authenticate").collect();
    assert!(www[0].contains("SHA-256") && www[1].contains("MD5"));

    let wrong = digest::authorize(
        www[1],
        "agent1",
        "nope",
        "REGISTER",
        "sip:acme.test",
        "c",
        1,
    )
    .unwrap();
    let out = h.feed(
        &register(2, Some(&wrong), "<sip:agent1@192.168.1.5:5060>"),
        from,
    );
    assert_eq!(sent(&out)[0].1.status(), Some(403));

    let right =
        digest::authorize(www[0], "agent1", "pw", "REGISTER", "sip:acme.test", "c", 1).unwrap();
    let out = h.feed(
        &register(3, Some(&right), "<sip:agent1@192.168.1.5:5060>"),
        from,
    );
    let ok = &sent(&out)[0].1;
    assert_eq!(ok.status(), Some(200));
    assert!(ok.get("Contact").unwrap().contains("expires=600"));
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Event(SipEvent::Registration(_)))));
    assert_eq!(h.engine.location().binding_count(), 1);

    // A call to 2000 goes to the registered contact's public address.
    let (to, b_invite) = place_call(&mut h, "call-r", "2000", SDP_A, (2, [30008, 30012]));
    assert_eq!(to, from.parse::<SocketAddr>().unwrap());
    assert_eq!(b_invite.request_uri(), Some("sip:agent1@192.168.1.5:5060"));

    // Nonces go stale: the right password with an old nonce gets stale=true.
    h.ms += 400_000;
    let out = h.feed(
        &register(4, Some(&right), "<sip:agent1@192.168.1.5:5060>"),
        from,
    );
    let stale = &sent(&out)[0].1;
    assert_eq!(stale.status(), Some(401));
    assert!(stale
        .get("WWW-Authenticate")
        .unwrap()
        .contains("stale=true"));
}

#[test]
fn repeated_auth_failures_lock_the_source_out() {
    let mut h = Harness::new();
    let from = "198.51.100.1:5060";
    let challenge = sent(&h.feed(&register(1, None, "<sip:agent1@198.51.100.1>"), from))
        .remove(0)
        .1;
    let www = challenge.get("WWW-Authenticate").unwrap().to_string();
    for i in 0..10 {
        let wrong = digest::authorize(
            &www,
            "agent1",
            &format!("guess{i}"),
            "REGISTER",
            "sip:acme.test",
            "c",
            1,
        )
        .unwrap();
        h.feed(
            &register(2 + i, Some(&wrong), "<sip:agent1@198.51.100.1>"),
            from,
        );
    }
    let right =
        digest::authorize(&www, "agent1", "pw", "REGISTER", "sip:acme.test", "c", 1).unwrap();
    let out = h.feed(
        &register(20, Some(&right), "<sip:agent1@198.51.100.1>"),
        from,
    );
    let refused = &sent(&out)[0].1;
    assert_eq!(
        refused.status(),
        Some(403),
        "locked even with the right password"
    );
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_parser_or_the_engine(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
        let _ = Message::parse(&bytes);
        let mut h = Harness::new();
        h.feed(&bytes, "10.0.0.1:5060");
    }

    #[test]
    fn mutated_invites_never_panic(pos in 0usize..400, byte in proptest::num::u8::ANY, cut in 0usize..450) {
        let mut bytes = invite("z9hG4bKp", "prop", "5551234", SDP_A);
        if pos < bytes.len() { bytes[pos] = byte; }
        bytes.truncate(cut.max(1));
        let mut h = Harness::new();
        h.feed(&bytes, "10.0.0.1:5060");
        h.advance(100);
    }
}

/// Answers the call started by `start_call` and returns (B's INVITE, the tag A sees).
fn answer_call(h: &mut Harness, b_invite: &Message) -> String {
    let out = h.feed(
        &response_from(b_invite, 200, "btag", Some(SDP_B)),
        "10.0.0.2:5060",
    );
    let ok = sent(&out)
        .into_iter()
        .find(|(_, m)| m.status() == Some(200))
        .expect("200 to A")
        .1;
    ok.to_tag().unwrap().to_string()
}

fn in_dialog_from_b(b_invite: &Message, method: &str, cseq: u32, extra: &str) -> Vec<u8> {
    in_dialog_from(
        "callee@10.0.0.2:5060",
        "btag",
        b_invite,
        method,
        cseq,
        extra,
    )
}

/// A request in the dialog of our `invite`, from the party at `contact` (`user@addr`) that
/// answered it with `tag`: From is that party, To is Tandem's identity in the dialog.
fn in_dialog_from(
    contact: &str,
    tag: &str,
    invite: &Message,
    method: &str,
    cseq: u32,
    extra: &str,
) -> Vec<u8> {
    let addr = contact.split_once('@').map_or(contact, |(_, a)| a);
    format!(
        "{method} sip:tandem@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch=z9hG4bK{tag}{method}{cseq}\r\nFrom: {};tag={tag}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContact: <sip:{contact}>\r\n{extra}Content-Length: 0\r\n\r\n",
        invite.get("To").unwrap(),
        invite.get("From").unwrap(),
        invite.call_id()
    )
    .into_bytes()
}

#[test]
fn reliable_provisionals_from_the_callee_are_pracked_once() {
    let mut h = Harness::new();
    let b_invite = start_call(&mut h, "prack");
    assert!(b_invite.has_option_tag("Supported", "100rel"));
    let mut ringing = Message::parse(&response_from(&b_invite, 180, "btag", None)).unwrap();
    ringing.push("Require", "100rel").push("RSeq", "7");
    let out = h.feed(&ringing.to_bytes(), "10.0.0.2:5060");
    let msgs = sent(&out);
    let prack = msgs
        .iter()
        .find(|(_, m)| m.method() == Some(&Method::Prack))
        .expect("PRACK");
    assert_eq!(prack.1.get("RAck"), Some("7 1 INVITE"));
    assert_eq!(prack.1.request_uri(), Some("sip:callee@10.0.0.2:5060"));
    let to_a = msgs.iter().find(|(_, m)| m.status() == Some(180)).unwrap();
    assert!(to_a.1.get("Require").is_none() && to_a.1.get("RSeq").is_none());
    // A retransmission of the same reliable 180 is not PRACKed again.
    let out = h.feed(&ringing.to_bytes(), "10.0.0.2:5060");
    assert!(!sent(&out)
        .iter()
        .any(|(_, m)| m.method() == Some(&Method::Prack)));
}

#[test]
fn session_timer_ends_a_call_nobody_refreshes() {
    let mut h = Harness::new();
    let mut inv = Message::parse(&invite("z9hG4bKst", "st", "5551234", SDP_A)).unwrap();
    inv.push("Session-Expires", "60");
    let out = h.feed(&inv.to_bytes(), "10.0.0.1:5060");
    let refused = sent(&out)
        .into_iter()
        .find(|(_, m)| m.status() == Some(422));
    assert!(
        refused.unwrap().1.get("Min-SE").is_some(),
        "60 s < Min-SE 90 s"
    );

    let mut inv = Message::parse(&invite("z9hG4bKst2", "st2", "5551234", SDP_A)).unwrap();
    inv.push("Session-Expires", "120;refresher=uac");
    let out = h.feed(&inv.to_bytes(), "10.0.0.1:5060");
    let call = out
        .iter()
        .find_map(|a| match a {
            Action::Media(MediaOp::Create { call, .. }) => Some(*call),
            _ => None,
        })
        .unwrap();
    let now = h.now();
    h.engine.media_created(
        now,
        call,
        Ok((
            SessionId {
                core: 0,
                slot: 9,
                generation: 1,
            },
            [30000, 30004],
        )),
    );
    let b_invite = sent(&h.engine.drain().collect::<Vec<_>>()).remove(0).1;
    assert!(b_invite.get("Session-Expires").unwrap().starts_with("120"));
    let out = h.feed(
        &response_from(&b_invite, 200, "btag", Some(SDP_B)),
        "10.0.0.2:5060",
    );
    let ok = sent(&out)
        .into_iter()
        .find(|(_, m)| m.status() == Some(200))
        .unwrap()
        .1;
    assert!(ok
        .get("Session-Expires")
        .unwrap()
        .starts_with("120;refresher=uac"));
    assert!(ok.has_option_tag("Require", "timer"));
    let ack = format!("ACK sip:tandem@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKsta\r\nFrom: <sip:caller@10.0.0.1>;tag=atag\r\nTo: <sip:5551234@127.0.0.1>;tag={}\r\nCall-ID: st2\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n", ok.to_tag().unwrap());
    h.feed(ack.as_bytes(), "10.0.0.1:5060");
    let out = h.advance(119_000);
    assert!(!sent(&out)
        .iter()
        .any(|(_, m)| m.method() == Some(&Method::Bye)));
    let out = h.advance(2_000);
    let mut byes: Vec<String> = sent(&out)
        .into_iter()
        .filter(|(_, m)| m.method() == Some(&Method::Bye))
        .map(|(_, m)| m.call_id().to_string())
        .collect();
    byes.dedup();
    byes.sort();
    byes.dedup();
    assert_eq!(
        byes.len(),
        2,
        "both legs hung up when the session interval passed"
    );
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn blind_transfer_by_the_callee_moves_the_caller_to_the_target() {
    let mut h = Harness::new();
    let b_invite = start_call(&mut h, "xfer");
    answer_call(&mut h, &b_invite);
    // B (an agent) transfers the caller to 5559999 (routed to the trunk like any number).
    let refer = in_dialog_from_b(
        &b_invite,
        "REFER",
        2,
        "Refer-To: <sip:5559999@127.0.0.1>\r\nReferred-By: <sip:agent@10.0.0.2>\r\n",
    );
    let out = h.feed(&refer, "10.0.0.2:5060");
    let msgs = sent(&out);
    assert!(msgs.iter().any(|(_, m)| m.status() == Some(202)));
    let notify = msgs
        .iter()
        .find(|(_, m)| m.method() == Some(&Method::Notify))
        .unwrap();
    assert_eq!(notify.1.body_str(), Some("SIP/2.0 100 Trying\r\n"));
    let c_invite = msgs
        .iter()
        .find(|(_, m)| m.method() == Some(&Method::Invite))
        .expect("INVITE to the transfer target")
        .1
        .clone();
    assert_eq!(c_invite.request_uri(), Some("sip:5559999@10.0.0.2:5060"));
    assert!(
        c_invite.body_str().unwrap().contains("m=audio 30004 "),
        "B's port, A's codecs"
    );
    assert!(
        c_invite.get("From").unwrap().contains("caller@10.0.0.1"),
        "caller ID kept"
    );
    // The target answers: it takes over leg B in the data plane; B gets NOTIFY 200 and BYE.
    let mut ok = Message::parse(&response_from(
        &c_invite,
        200,
        "ctag",
        Some(SDP_B.replace("5000", "6000").as_str()),
    ))
    .unwrap();
    ok.set("Contact", "<sip:target@10.0.0.2:5070>");
    let out = h.feed(&ok.to_bytes(), "10.0.0.2:5060");
    let msgs = sent(&out);
    assert!(msgs.iter().any(|(_, m)| m.method() == Some(&Method::Ack)
        && m.request_uri() == Some("sip:target@10.0.0.2:5070")));
    assert!(msgs
        .iter()
        .any(|(_, m)| m.method() == Some(&Method::Notify)
            && m.body_str() == Some("SIP/2.0 200 OK\r\n")));
    assert!(msgs
        .iter()
        .any(|(_, m)| m.method() == Some(&Method::Bye) && m.to_tag() == Some("btag")));
    assert!(out.iter().any(|a| matches!(a, Action::Media(MediaOp::Update { leg: LegIndex::B, params, .. }) if params.rtp == Some("10.0.0.2:6000".parse().unwrap()))));
    // The caller hangs up later: the BYE goes to the target, not to the old agent.
    let bye = format!("BYE sip:tandem@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKxb\r\nFrom: <sip:caller@10.0.0.1>;tag=atag\r\nTo: <sip:5551234@127.0.0.1>;tag={}\r\nCall-ID: xfer\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n", answer_tag_of(&h));
    let out = h.feed(bye.as_bytes(), "10.0.0.1:5060");
    let target_bye = sent(&out)
        .into_iter()
        .find(|(_, m)| m.method() == Some(&Method::Bye))
        .unwrap()
        .1;
    assert_eq!(target_bye.to_tag(), Some("ctag"));
    assert_eq!(h.engine.active_calls(), 0);
}

/// The tag Tandem gave leg A (the only answered call's): read back from the dialog table.
fn answer_tag_of(h: &Harness) -> String {
    h.engine.leg_a_tags().pop().expect("one call")
}

#[test]
fn failed_transfer_keeps_the_call_with_the_transferor() {
    let mut h = Harness::new();
    let b_invite = start_call(&mut h, "xfer2");
    answer_call(&mut h, &b_invite);
    let refer = in_dialog_from_b(
        &b_invite,
        "REFER",
        2,
        "Refer-To: <sip:5550000@127.0.0.1>\r\n",
    );
    let out = h.feed(&refer, "10.0.0.2:5060");
    let c_invite = sent(&out)
        .into_iter()
        .find(|(_, m)| m.method() == Some(&Method::Invite))
        .unwrap()
        .1;
    let out = h.feed(
        &response_from(&c_invite, 486, "ctag", None),
        "10.0.0.2:5060",
    );
    let notify = sent(&out)
        .into_iter()
        .find(|(_, m)| m.method() == Some(&Method::Notify))
        .unwrap()
        .1;
    assert!(notify.body_str().unwrap().starts_with("SIP/2.0 486"));
    assert!(notify
        .get("Subscription-State")
        .unwrap()
        .starts_with("terminated"));
    assert_eq!(
        h.engine.active_calls(),
        1,
        "caller still talking to the agent"
    );
    // An attended transfer naming a dialog Tandem does not hold is refused.
    let refer = in_dialog_from_b(
        &b_invite,
        "REFER",
        3,
        "Refer-To: <sip:5551111@127.0.0.1?Replaces=abc%3Bto-tag%3D1%3Bfrom-tag%3D2>\r\n",
    );
    let out = h.feed(&refer, "10.0.0.2:5060");
    assert!(sent(&out).iter().any(|(_, m)| m.status() == Some(481)));
    assert_eq!(h.engine.active_calls(), 1);
}

#[test]
fn stream_framing_survives_absurd_content_length() {
    // Found by the sip_message fuzz target: head + Content-Length overflowed.
    let text = "REGISTER sip:t SIP/2.0\r\nl:18446744073709551615\r\n\r\n";
    assert!(super::message::stream_frame_len(text.as_bytes()).is_err());
    let ok = "OPTIONS sip:t SIP/2.0\r\nl: 4\r\n\r\nbody";
    assert_eq!(
        super::message::stream_frame_len(ok.as_bytes()).unwrap(),
        Some(ok.len())
    );
    assert_eq!(
        super::message::stream_frame_len(&ok.as_bytes()[..30]).unwrap(),
        None
    );
}

#[test]
fn an_idle_engine_sleeps_until_housekeeping() {
    // With keep-alives off, the next deadline must still move forward: a deadline stuck in the
    // past made the shell spin a whole CPU.
    let mut h = Harness::new();
    h.advance(10);
    let next = h.engine.next_deadline();
    assert!(next > h.now().mono, "deadline in the past");
    assert!(next <= h.now().mono + Duration::from_secs(1));
}

#[test]
fn sip_info_dtmf_is_relayed_to_the_other_leg_and_answered() {
    let mut h = Harness::new();
    let b_invite = start_call(&mut h, "info");
    let a_tag = answer_call(&mut h, &b_invite);
    let info = format!("INFO sip:tandem@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKinfo\r\nFrom: <sip:caller@10.0.0.1>;tag=atag\r\nTo: <sip:5551234@127.0.0.1>;tag={a_tag}\r\nCall-ID: info\r\nCSeq: 2 INFO\r\nContent-Type: application/dtmf-relay\r\nContent-Length: 24\r\n\r\nSignal=5\r\nDuration=160\r\n");
    let out = h.feed(info.as_bytes(), "10.0.0.1:5060");
    let relayed = sent(&out)
        .into_iter()
        .find(|(_, m)| m.method() == Some(&Method::Info))
        .expect("INFO relayed to B")
        .1;
    assert_eq!(relayed.content_type(), Some("application/dtmf-relay"));
    assert_eq!(relayed.body_str(), Some("Signal=5\r\nDuration=160\r\n"));
    assert_eq!(relayed.to_tag(), Some("btag"));
    let ok = Message::response_to(&relayed, 200, None);
    let out = h.feed(&ok.to_bytes(), "10.0.0.2:5060");
    let to_a = sent(&out)
        .into_iter()
        .find(|(_, m)| m.status() == Some(200))
        .unwrap();
    assert_eq!(to_a.1.cseq(), Some((2, Method::Info)));
    assert_eq!(to_a.0, "10.0.0.1:5060".parse::<SocketAddr>().unwrap());
}

#[test]
fn sip_info_dtmf_to_a_peer_with_telephone_event_becomes_rfc_4733_and_is_answered_here() {
    let mut h = Harness::new();
    let b_invite = start_call(&mut h, "info-events");
    answer_call(&mut h, &b_invite);
    // The callee sends '#' by INFO; the caller (SDP_A) took telephone-event 101.
    let body = "Signal=#\r\nDuration=180\r\n";
    let info = dtmf_info_from_b(&b_invite, 3, body);
    let out = h.feed(info.as_bytes(), "10.0.0.2:5060");
    let sends: Vec<_> = out
        .iter()
        .filter_map(|a| match a {
            Action::Media(MediaOp::SendDtmf { leg, send, .. }) => Some((*leg, *send)),
            _ => None,
        })
        .collect();
    assert_eq!(sends.len(), 1);
    let (leg, send) = sends[0];
    assert_eq!(leg, LegIndex::A);
    assert_eq!(
        send.keys,
        tandem_dataplane::api::DtmfKeys::new("#").unwrap()
    );
    assert_eq!(send.duration_ms, 180);
    assert_eq!(
        send.via,
        tandem_dataplane::api::DtmfVia::Events {
            payload_type: 101,
            clock_hz: 8000
        }
    );
    let msgs = sent(&out);
    assert!(
        msgs.iter().all(|(_, m)| m.method() != Some(&Method::Info)),
        "not relayed"
    );
    let ok = msgs
        .iter()
        .find(|(_, m)| m.status() == Some(200))
        .expect("200");
    assert_eq!(ok.1.cseq(), Some((3, Method::Info)));
    assert_eq!(ok.0, "10.0.0.2:5060".parse::<SocketAddr>().unwrap());
}

/// What leg A (SDP_A's caller: PCMA, telephone-event 101) is armed with when the callee is
/// sent keys as INFO: events and tones heard, both kept from the callee's stream.
fn callers_keys_held_for_info() -> (LegIndex, tandem_dataplane::api::DtmfOptions) {
    use tandem_dataplane::api::{Codec, DtmfOptions, InbandAudio};
    let options = DtmfOptions {
        event_payload_type: Some(101),
        inband: Some(InbandAudio {
            payload_type: 8,
            codec: Codec::Pcma,
        }),
        block: true,
        ..DtmfOptions::default()
    };
    (LegIndex::A, options)
}

/// An in-dialog INFO from B (CSeq `cseq`) carrying `body` as `application/dtmf-relay`.
fn dtmf_info_from_b(b_invite: &Message, cseq: u32, body: &str) -> String {
    String::from_utf8(in_dialog_from_b(b_invite, "INFO", cseq, ""))
        .unwrap()
        .replace(
            "Content-Length: 0\r\n\r\n",
            &format!(
                "Content-Type: application/dtmf-relay\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        )
}

/// The callee answers `b_invite` with SDP_B: the `SetDtmf` requests that follow (leg, options).
fn dtmf_set_at_answer(
    h: &mut Harness,
    b_invite: &Message,
) -> Vec<(LegIndex, tandem_dataplane::api::DtmfOptions)> {
    let out = h.feed(
        &response_from(b_invite, 200, "btag", Some(SDP_B)),
        "10.0.0.2:5060",
    );
    dtmf_set(&out)
}

/// The `SetDtmf` requests among `out` (leg, options).
fn dtmf_set(out: &[Action]) -> Vec<(LegIndex, tandem_dataplane::api::DtmfOptions)> {
    out.iter()
        .filter_map(|a| match a {
            Action::Media(MediaOp::SetDtmf { leg, options, .. }) => Some((*leg, *options)),
            _ => None,
        })
        .collect()
}

/// The keys pressed on `leg` (as the data plane reports them), then what the engine sends.
fn keys_heard(h: &mut Harness, leg: LegIndex, keys: &str) -> Vec<(SocketAddr, Message)> {
    let session = SessionId {
        core: 0,
        slot: 1,
        generation: 1,
    };
    let now = h.now();
    for key in keys.chars() {
        h.engine.media_dtmf(now, session, leg, key);
    }
    sent(&h.engine.drain().collect::<Vec<_>>())
}

#[test]
fn keys_heard_on_one_leg_go_to_an_info_peer_as_sip_info_one_at_a_time() {
    use super::config::DtmfMode;
    // The carrier is on both legs here: `auto` sends INFO to the callee (SDP_B: no
    // telephone-event) and events to the caller (SDP_A takes them).
    let mut cfg = config();
    cfg.trunks[0].dtmf = DtmfMode::Auto;
    let mut h = harness_with(cfg);
    let b_invite = start_call(&mut h, "info-out");
    let armed = dtmf_set_at_answer(&mut h, &b_invite);
    assert_eq!(
        armed,
        vec![callers_keys_held_for_info()],
        "the caller's keys are heard (events and PCMA tones) and kept from the callee's stream"
    );

    // Keys from the callee: the caller takes events, so no INFO.
    assert!(keys_heard(&mut h, LegIndex::B, "9").is_empty());

    // Three keys from the caller: the first goes at once, the others wait for its answer.
    let msgs = keys_heard(&mut h, LegIndex::A, "57#");
    assert_eq!(msgs.len(), 1, "one INFO at a time");
    let (to, info) = &msgs[0];
    assert_eq!(*to, "10.0.0.2:5060".parse::<SocketAddr>().unwrap());
    assert_eq!(info.method(), Some(&Method::Info));
    assert_eq!(info.request_uri(), Some("sip:callee@10.0.0.2:5060"));
    assert_eq!(info.call_id(), b_invite.call_id());
    assert_eq!(info.from_tag(), b_invite.from_tag());
    assert_eq!(info.to_tag(), Some("btag"));
    assert_eq!(info.cseq(), Some((2, Method::Info)));
    assert_eq!(info.content_type(), Some("application/dtmf-relay"));
    assert_eq!(info.body_str(), Some("Signal=5\r\nDuration=250\r\n"));

    // Retransmissions of the first INFO (timer E) until it is answered; no second INFO.
    let later = sent(&h.advance(600));
    let infos: Vec<_> = later
        .iter()
        .filter(|(_, m)| m.method() == Some(&Method::Info))
        .collect();
    assert!(!infos.is_empty());
    assert!(infos
        .iter()
        .all(|(_, m)| m.cseq() == Some((2, Method::Info))));
    let out = h.feed(
        &Message::response_to(info, 200, None).to_bytes(),
        "10.0.0.2:5060",
    );
    let msgs = sent(&out);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].1.cseq(), Some((3, Method::Info)));
    assert_eq!(msgs[0].1.body_str(), Some("Signal=7\r\nDuration=250\r\n"));

    // A refusal does not stop the queue: each key is its own request.
    let out = h.feed(
        &Message::response_to(&msgs[0].1, 415, None).to_bytes(),
        "10.0.0.2:5060",
    );
    let msgs = sent(&out);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].1.cseq(), Some((4, Method::Info)));
    assert_eq!(msgs[0].1.body_str(), Some("Signal=#\r\nDuration=250\r\n"));
    let out = h.feed(
        &Message::response_to(&msgs[0].1, 200, None).to_bytes(),
        "10.0.0.2:5060",
    );
    assert!(sent(&out).is_empty(), "queue empty");
}

#[test]
fn with_the_default_dtmf_mode_events_towards_a_peer_without_telephone_event_become_tones() {
    use tandem_dataplane::api::{Codec, DtmfOptions, InbandAudio};
    let mut h = Harness::new();
    let b_invite = start_call(&mut h, "info-default");
    // The caller sends events (SDP_A), the callee takes PCMA alone (SDP_B).
    let armed = dtmf_set_at_answer(&mut h, &b_invite);
    assert_eq!(
        armed,
        vec![(
            LegIndex::A,
            DtmfOptions {
                event_payload_type: Some(101),
                tones_to_other: Some(InbandAudio {
                    payload_type: 8,
                    codec: Codec::Pcma
                }),
                ..DtmfOptions::default()
            }
        )]
    );
    assert!(keys_heard(&mut h, LegIndex::A, "1").is_empty(), "no INFO");
}

/// agent1's phone (behind a NAT at 203.0.113.7:40000) registers with its password.
fn register_agent1(h: &mut Harness) -> &'static str {
    let from = "203.0.113.7:40000";
    let contact = "<sip:agent1@192.168.1.5:5060>";
    let out = h.feed(&register(1, None, contact), from);
    let www = sent(&out)[0].1.get("WWW-Authenticate").unwrap().to_string();
    let auth = digest::authorize(&www, "agent1", "pw", "REGISTER", "sip:acme.test", "c", 1);
    let out = h.feed(&register(2, Some(&auth.unwrap()), contact), from);
    assert_eq!(sent(&out)[0].1.status(), Some(200));
    from
}

#[test]
fn an_account_set_to_info_is_sent_the_callers_keys_as_sip_info() {
    use super::config::DtmfMode;
    let mut cfg = config();
    cfg.accounts[0].dtmf = DtmfMode::Info;
    let mut h = harness_with(cfg);
    let phone = register_agent1(&mut h);
    // The carrier calls 2000, routed to agent1's phone.
    let (to, b_invite) = place_call(&mut h, "to-account", "2000", SDP_A, (1, [30000, 30004]));
    assert_eq!(to, phone.parse::<SocketAddr>().unwrap());
    // The phone answers with telephone-event, but its account says INFO.
    let out = h.feed(&response_from(&b_invite, 200, "btag", Some(SDP_A)), phone);
    assert_eq!(
        dtmf_set(&out),
        vec![callers_keys_held_for_info()],
        "the caller's keys are heard and kept from the phone's stream"
    );
    let msgs = keys_heard(&mut h, LegIndex::A, "4");
    assert_eq!(msgs.len(), 1);
    let (to, info) = &msgs[0];
    assert_eq!(*to, phone.parse::<SocketAddr>().unwrap());
    assert_eq!(info.method(), Some(&Method::Info));
    assert_eq!(info.body_str(), Some("Signal=4\r\nDuration=250\r\n"));
    // Keys from the phone go to the carrier as they came (its trunk is rfc4733).
    assert!(keys_heard(&mut h, LegIndex::B, "9").is_empty());
    // The phone's own INFO becomes RFC 4733 events towards the carrier, answered here.
    let body = "Signal=6\r\nDuration=200\r\n";
    let info = dtmf_info_from_b(&b_invite, 3, body);
    let out = h.feed(info.as_bytes(), phone);
    let sends: Vec<_> = out
        .iter()
        .filter_map(|a| match a {
            Action::Media(MediaOp::SendDtmf { leg, send, .. }) => Some((*leg, send.keys)),
            _ => None,
        })
        .collect();
    let six = tandem_dataplane::api::DtmfKeys::new("6").unwrap();
    assert_eq!(sends, vec![(LegIndex::A, six)]);
    let msgs = sent(&out);
    assert!(msgs.iter().all(|(_, m)| m.method() != Some(&Method::Info)));
    assert!(msgs
        .iter()
        .any(|(_, m)| m.status() == Some(200) && m.cseq() == Some((3, Method::Info))));
}

#[test]
fn a_calling_account_set_to_info_is_sent_the_callees_keys_as_sip_info() {
    use super::config::DtmfMode;
    let mut cfg = config();
    cfg.accounts[0].dtmf = DtmfMode::Info;
    let mut h = harness_with(cfg);
    // agent1's phone (not a trunk's address) calls out through the carrier: challenged, then
    // authenticated.
    let phone = "192.168.1.5:5060";
    let first = invite("z9hG4bKout1", "from-account", "5551234", SDP_A);
    let out = h.feed(&first, phone);
    let challenge = sent(&out)
        .into_iter()
        .find(|(_, m)| m.status() == Some(407))
        .expect("407")
        .1;
    let auth = digest::authorize(
        challenge.get("Proxy-Authenticate").unwrap(),
        "agent1",
        "pw",
        "INVITE",
        "sip:5551234@127.0.0.1",
        "c",
        1,
    )
    .unwrap();
    let again = String::from_utf8(first)
        .unwrap()
        .replace("branch=z9hG4bKout1", "branch=z9hG4bKout2")
        .replace(
            "CSeq: 1 INVITE",
            &format!("CSeq: 2 INVITE\r\nProxy-Authorization: {auth}"),
        );
    let out = h.feed(again.as_bytes(), phone);
    let call = out
        .iter()
        .find_map(|a| match a {
            Action::Media(MediaOp::Create { call, .. }) => Some(*call),
            _ => None,
        })
        .expect("authenticated: media requested");
    let now = h.now();
    let session = SessionId {
        core: 0,
        slot: 1,
        generation: 1,
    };
    h.engine
        .media_created(now, call, Ok((session, [30000, 30004])));
    let out: Vec<Action> = h.engine.drain().collect();
    let (to, b_invite) = sent(&out).remove(0);
    assert_eq!(
        to,
        "10.0.0.2:5060".parse::<SocketAddr>().unwrap(),
        "the carrier"
    );
    // The carrier (rfc4733) answers without telephone-event: its keys are heard (PCMA tones)
    // and kept from the phone, which its account says takes INFO.
    // The caller's own events become tones for the carrier, which took no telephone-event.
    let armed = dtmf_set_at_answer(&mut h, &b_invite);
    assert_eq!(armed.len(), 2, "{armed:?}");
    let (leg, options) = armed[0];
    assert_eq!(leg, LegIndex::B);
    assert!(options.block && options.inband.is_some(), "{options:?}");
    assert_eq!(armed[1].0, LegIndex::A);
    assert!(armed[1].1.tones_to_other.is_some());
    let msgs = keys_heard(&mut h, LegIndex::B, "3");
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    let info = &msgs[0].1;
    assert_eq!(info.method(), Some(&Method::Info));
    assert_eq!(info.call_id(), "from-account");
    assert_eq!(info.body_str(), Some("Signal=3\r\nDuration=250\r\n"));
    // No INFO towards the carrier.
    assert!(keys_heard(&mut h, LegIndex::A, "1").is_empty());
}

#[test]
fn sip_info_dtmf_bodies() {
    use super::b2bua::info_dtmf;
    let relay = "application/dtmf-relay";
    assert_eq!(
        info_dtmf(relay, "Signal=5\r\nDuration=160\r\n"),
        Some(('5', 160))
    );
    assert_eq!(
        info_dtmf(relay, "signal= 11\nduration=300"),
        Some(('#', 300))
    );
    assert_eq!(info_dtmf(relay, "Signal=*"), Some(('*', 250)));
    assert_eq!(info_dtmf("application/dtmf", "b\r\n"), Some(('B', 250)));
    for bad in [
        "",
        "Signal=",
        "Signal=x",
        "Signal=16",
        "Signal=1\nDuration=-5",
        "Duration=9",
    ] {
        assert_eq!(info_dtmf(relay, bad), None, "{bad:?}");
    }
    assert_eq!(info_dtmf("text/plain", "Signal=1"), None);
}

fn config_with_trunk_credentials() -> SipConfig {
    let mut cfg = config();
    cfg.trunks[0].username = Some("tandem".into());
    cfg.trunks[0].password = Some("carrier-pw".into());
    cfg.trunks[0].register = true;
    cfg.trunks[0].register_expires_s = 600;
    cfg
}

fn harness_with(cfg: SipConfig) -> Harness {
    let t0 = Instant::now();
    Harness {
        engine: Engine::new(
            cfg,
            "192.0.2.1".parse().unwrap(),
            [3; 32],
            t0,
            Arc::new(SipMetrics::default()),
        ),
        t0,
        ms: 0,
    }
}

#[test]
fn registers_at_the_trunk_answering_its_challenge_and_refreshes() {
    let carrier = digest::Authenticator::new([9; 32], 300);
    let mut h = harness_with(config_with_trunk_credentials());
    let out = h.advance(10);
    let (to, register) = sent(&out)
        .into_iter()
        .find(|(_, m)| m.method() == Some(&Method::Register))
        .expect("REGISTER to the trunk");
    assert_eq!(to, "10.0.0.2:5060".parse::<SocketAddr>().unwrap());
    assert!(register.get("Authorization").is_none());
    let mut challenge = Message::response_to(&register, 401, Some("c"));
    let unix_s = h.now().unix_ms / 1000;
    challenge.push(
        "WWW-Authenticate",
        carrier.challenges(unix_s, "carrier", false, &[digest::Algorithm::Md5])[0].clone(),
    );
    let out = h.feed(&challenge.to_bytes(), "10.0.0.2:5060");
    let again = sent(&out)
        .into_iter()
        .find(|(_, m)| m.method() == Some(&Method::Register))
        .expect("REGISTER with credentials")
        .1;
    let creds = digest::Credentials::parse(again.get("Authorization").unwrap()).unwrap();
    assert_eq!(
        carrier.verify(unix_s, &creds, "REGISTER", "carrier-pw"),
        digest::Verdict::Ok
    );
    assert!(again.cseq().unwrap().0 > register.cseq().unwrap().0);
    let mut ok = Message::response_to(&again, 200, Some("c"));
    ok.push("Contact", "<sip:tandem@127.0.0.1:5060>;expires=120");
    h.feed(&ok.to_bytes(), "10.0.0.2:5060");
    // Refreshed at half the granted time, not before.
    let out = h.advance(55_000);
    assert!(!sent(&out)
        .iter()
        .any(|(_, m)| m.method() == Some(&Method::Register)));
    let out = h.advance(7_000);
    assert!(sent(&out)
        .iter()
        .any(|(_, m)| m.method() == Some(&Method::Register)));
}

#[test]
fn outbound_invite_answers_the_trunks_proxy_challenge_once() {
    let carrier = digest::Authenticator::new([9; 32], 300);
    let mut cfg = config_with_trunk_credentials();
    cfg.trunks[0].register = false;
    let mut h = harness_with(cfg);
    let b_invite = start_call(&mut h, "auth");
    let mut challenge = Message::response_to(&b_invite, 407, Some("p"));
    let unix_s = h.now().unix_ms / 1000;
    challenge.push(
        "Proxy-Authenticate",
        carrier.challenges(unix_s, "carrier", false, &[digest::Algorithm::Sha256])[0].clone(),
    );
    let out = h.feed(&challenge.to_bytes(), "10.0.0.2:5060");
    let msgs = sent(&out);
    assert!(
        msgs.iter().any(|(_, m)| m.method() == Some(&Method::Ack)),
        "the 407 is ACKed"
    );
    let retry = msgs
        .iter()
        .find(|(_, m)| m.method() == Some(&Method::Invite))
        .expect("INVITE again")
        .1
        .clone();
    assert_eq!(retry.cseq(), Some((2, Method::Invite)));
    assert_eq!(retry.call_id(), b_invite.call_id());
    assert_eq!(retry.from_tag(), b_invite.from_tag());
    let creds = digest::Credentials::parse(retry.get("Proxy-Authorization").unwrap()).unwrap();
    assert_eq!(
        carrier.verify(unix_s, &creds, "INVITE", "carrier-pw"),
        digest::Verdict::Ok
    );
    assert!(
        !msgs.iter().any(|(_, m)| m.status() == Some(407)),
        "the caller never sees it"
    );
    // A second challenge means the credentials are wrong: the caller gets the 407's failure.
    let mut again = Message::response_to(&retry, 407, Some("p"));
    again.push(
        "Proxy-Authenticate",
        carrier.challenges(unix_s, "carrier", false, &[digest::Algorithm::Md5])[0].clone(),
    );
    let out = h.feed(&again.to_bytes(), "10.0.0.2:5060");
    assert!(sent(&out)
        .iter()
        .any(|(to, m)| m.status() == Some(407) && to.ip().to_string() == "10.0.0.1"));
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn invite_floods_from_one_source_get_503_with_retry_after() {
    let mut cfg = config();
    cfg.invite_rate_per_source = 1.0;
    cfg.rate_burst = 2.0;
    cfg.tenants[0].max_calls = None;
    let mut h = harness_with(cfg);
    let mut refused = 0;
    for i in 0..5 {
        let out = h.feed(
            &invite(
                &format!("z9hG4bKflood{i}"),
                &format!("flood{i}"),
                "5551234",
                SDP_A,
            ),
            "10.0.0.1:5060",
        );
        refused += sent(&out)
            .iter()
            .filter(|(_, m)| m.status() == Some(503) && m.get("Retry-After").is_some())
            .count();
    }
    assert_eq!(refused, 3, "burst of 2, then refused");
}

/// Like `start_call`, for a second call in the same harness: its own branch, number and ports.
fn start_call_on(
    h: &mut Harness,
    branch: &str,
    call_id: &str,
    ports: [u16; 2],
    slot: u32,
) -> Message {
    start_call_offering(h, branch, call_id, SDP_A, ports, slot)
}

/// `start_call_on` with the caller offering `offer`; returns the INVITE sent to B.
fn start_call_offering(
    h: &mut Harness,
    branch: &str,
    call_id: &str,
    offer: &str,
    ports: [u16; 2],
    slot: u32,
) -> Message {
    let out = h.feed(&invite(branch, call_id, "5551234", offer), "10.0.0.1:5060");
    let call = out
        .iter()
        .find_map(|a| match a {
            Action::Media(MediaOp::Create { call, .. }) => Some(*call),
            _ => None,
        })
        .expect("media requested");
    let now = h.now();
    let session = SessionId {
        core: 0,
        slot,
        generation: 1,
    };
    h.engine.media_created(now, call, Ok((session, ports)));
    let out: Vec<Action> = h.engine.drain().collect();
    sent(&out).remove(0).1
}

#[test]
fn attended_transfer_joins_the_held_caller_with_the_consulted_party() {
    let mut h = Harness::new();
    // Call 1: the customer (A) talks to agent B.
    let b1 = start_call_on(&mut h, "z9hG4bKat1", "cust", [30000, 30004], 1);
    let out = h.feed(
        &response_from(&b1, 200, "btag", Some(SDP_B)),
        "10.0.0.2:5060",
    );
    let a1_tag = sent(&out)
        .into_iter()
        .find(|(_, m)| m.status() == Some(200))
        .unwrap()
        .1
        .to_tag()
        .unwrap()
        .to_string();
    // Call 2: agent B consults C (B is this call's caller).
    let c2 = start_call_on(&mut h, "z9hG4bKat2", "consult", [30008, 30012], 2);
    let sdp_c = SDP_B.replace("5000", "7000");
    let out = h.feed(
        &response_from(&c2, 200, "ctag", Some(&sdp_c)),
        "10.0.0.2:5060",
    );
    let t2 = sent(&out)
        .into_iter()
        .find(|(_, m)| m.status() == Some(200))
        .unwrap()
        .1
        .to_tag()
        .unwrap()
        .to_string();

    // B transfers the customer to C: REFER on call 1 naming call 2's dialog in Replaces.
    let refer = in_dialog_from_b(
        &b1,
        "REFER",
        2,
        &format!(
            "Refer-To: <sip:c@127.0.0.1?Replaces=consult%3Bto-tag%3D{t2}%3Bfrom-tag%3Datag>\r\n"
        ),
    );
    let out = h.feed(&refer, "10.0.0.2:5060");
    let msgs = sent(&out);
    assert!(msgs.iter().any(|(_, m)| m.status() == Some(202)));
    let reinvite = msgs
        .iter()
        .find(|(_, m)| m.method() == Some(&Method::Invite))
        .expect("re-INVITE to C")
        .1
        .clone();
    assert_eq!(reinvite.call_id(), c2.call_id(), "on C's existing dialog");
    assert_eq!(reinvite.to_tag(), Some("ctag"));
    assert!(
        reinvite.body_str().unwrap().contains("m=audio 30004 "),
        "call 1's port for B's side"
    );

    let mut ok = Message::response_to(&reinvite, 200, None);
    ok.push("Contact", "<sip:c@10.0.0.2:5060>");
    ok.set_body("application/sdp", sdp_c.clone().into_bytes());
    let out = h.feed(&ok.to_bytes(), "10.0.0.2:5060");
    let msgs = sent(&out);
    assert!(msgs
        .iter()
        .any(|(_, m)| m.method() == Some(&Method::Ack) && m.call_id() == c2.call_id()));
    assert!(msgs
        .iter()
        .any(|(_, m)| m.method() == Some(&Method::Notify)
            && m.body_str() == Some("SIP/2.0 200 OK\r\n")));
    let byes: Vec<(String, Option<String>)> = msgs
        .iter()
        .filter(|(_, m)| m.method() == Some(&Method::Bye))
        .map(|(_, m)| (m.call_id().to_string(), m.to_tag().map(str::to_string)))
        .collect();
    assert!(
        byes.contains(&(b1.call_id().to_string(), Some("btag".into()))),
        "B leaves call 1: {byes:?}"
    );
    assert!(
        byes.contains(&("consult".to_string(), Some("atag".into()))),
        "B leaves call 2: {byes:?}"
    );
    assert!(
        !byes.iter().any(|(id, _)| id == c2.call_id()),
        "C stays: {byes:?}"
    );
    assert!(out.iter().any(|a| matches!(a, Action::Media(MediaOp::Update { session, leg: LegIndex::B, params }) if session.slot == 1 && params.rtp == Some("10.0.0.2:7000".parse().unwrap()))));
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Media(MediaOp::Delete { session, .. }) if session.slot == 2)));
    assert_eq!(h.engine.active_calls(), 1);

    // The customer hangs up: the BYE reaches C on C's dialog.
    let bye = format!("BYE sip:tandem@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKatb\r\nFrom: <sip:caller@10.0.0.1>;tag=atag\r\nTo: <sip:5551234@127.0.0.1>;tag={a1_tag}\r\nCall-ID: cust\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n");
    let out = h.feed(bye.as_bytes(), "10.0.0.1:5060");
    let to_c = sent(&out)
        .into_iter()
        .find(|(_, m)| m.method() == Some(&Method::Bye))
        .unwrap()
        .1;
    assert_eq!(
        (to_c.call_id(), to_c.to_tag()),
        (c2.call_id(), Some("ctag"))
    );
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn accounts_changed_one_by_one_take_effect_at_once() {
    use super::config::{AccountChange, DigestAccount};
    let mut h = Harness::new();
    let from = "192.168.1.9:5060";
    let contact = "<sip:agent1@192.168.1.9:5060>";
    let challenge = |out: &[Action]| {
        sent(out)[0]
            .1
            .get_all("WWW-Authenticate")
            .nth(1)
            .unwrap()
            .to_string()
    };
    // A new password through the API: the old one stops working, the new one works.
    let input = "agent1:acme.test:new-pw";
    h.engine
        .change_account(AccountChange::Upsert(DigestAccount {
            tenant: "acme".into(),
            user: "agent1".into(),
            ha1_md5: digest::Algorithm::Md5.hash(input),
            ha1_sha256: digest::Algorithm::Sha256.hash(input),
            dtmf: Default::default(),
        }));
    let out = h.feed(&register(1, None, contact), from);
    let www = challenge(&out);
    let old = digest::authorize(&www, "agent1", "pw", "REGISTER", "sip:acme.test", "c", 1).unwrap();
    let out = h.feed(&register(2, Some(&old), contact), from);
    assert_eq!(sent(&out)[0].1.status(), Some(403));
    let new = digest::authorize(
        &www,
        "agent1",
        "new-pw",
        "REGISTER",
        "sip:acme.test",
        "c",
        1,
    )
    .unwrap();
    let out = h.feed(&register(3, Some(&new), contact), from);
    assert_eq!(sent(&out)[0].1.status(), Some(200));
    // Removed: challenged, then refused.
    h.engine.change_account(AccountChange::Remove {
        tenant: "acme".into(),
        user: "agent1".into(),
    });
    let out = h.feed(&register(4, Some(&new), contact), from);
    assert_eq!(sent(&out)[0].1.status(), Some(403));
}

// ---- Contact centre: calls routed to queue:<name>, offered to agents' registered devices ----

pub(super) mod queue {
    use super::*;
    use crate::sip::queues::{
        AcdEvent, AcdOp, AcdReply, AgentAction, AgentDef, MembershipDef, QueueDef,
    };

    pub(super) fn cc_config(strategy: &str, max_wait_s: Option<u32>) -> SipConfig {
        let mut cfg = config();
        cfg.tenants[0].max_calls = None;
        cfg.accounts = ["alice", "bob"]
            .iter()
            .map(|u| AccountConfig {
                tenant: "acme".into(),
                user: u.to_string(),
                password: "pw".into(),
                dtmf: Default::default(),
            })
            .collect();
        cfg.routes.insert(
            0,
            RouteConfig {
                tenant: "acme".into(),
                pattern: "3000".into(),
                target: "queue:support".into(),
            },
        );
        let mut q = QueueDef::new("acme", "support");
        q.strategy = strategy.into();
        q.max_wait_s = max_wait_s;
        q.ring_timeout_s = 15;
        q.wrapup_s = 10;
        cfg.routes.insert(
            0,
            RouteConfig {
                tenant: "acme".into(),
                pattern: "3001".into(),
                target: "queue:sales".into(),
            },
        );
        cfg.queues = vec![q, QueueDef::new("acme", "sales")];
        let member = |queue: &str| MembershipDef {
            queue: queue.into(),
            tier: 0,
            delay_s: 0,
            weight: 1,
        };
        cfg.agents = ["alice", "bob"]
            .iter()
            .map(|u| AgentDef {
                tenant: "acme".into(),
                name: u.to_string(),
                user: u.to_string(),
                skills: vec![],
                queues: match *u {
                    "alice" => vec![member("support")],
                    _ => vec![member("support"), member("sales")],
                },
            })
            .collect();
        cfg.validate().unwrap();
        cfg
    }

    pub(super) fn device(user: &str) -> &'static str {
        match user {
            "alice" => "192.168.1.11:5060",
            _ => "192.168.1.12:5060",
        }
    }

    /// Registers `user`'s phone (digest challenge answered).
    pub(super) fn register_device(h: &mut Harness, user: &str) {
        let from = device(user);
        let req = |cseq: u32, auth: Option<&str>| {
            let auth = auth
                .map(|a| format!("Authorization: {a}\r\n"))
                .unwrap_or_default();
            format!("REGISTER sip:acme.test SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bKr{user}{cseq}\r\nFrom: <sip:{user}@acme.test>;tag=r{user}\r\nTo: <sip:{user}@acme.test>\r\nCall-ID: reg-{user}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{from}>\r\nExpires: 600\r\n{auth}Content-Length: 0\r\n\r\n").into_bytes()
        };
        let out = h.feed(&req(1, None), from);
        let www = sent(&out)[0]
            .1
            .get_all("WWW-Authenticate")
            .nth(1)
            .unwrap()
            .to_string();
        let auth =
            digest::authorize(&www, user, "pw", "REGISTER", "sip:acme.test", "c", 1).unwrap();
        let out = h.feed(&req(2, Some(&auth)), from);
        assert_eq!(sent(&out)[0].1.status(), Some(200));
    }

    pub(super) fn agent(h: &mut Harness, name: &str, action: AgentAction) -> Vec<Action> {
        let now = h.now();
        let r = h.engine.acd_request(
            now,
            "acme",
            AcdOp::Agent {
                agent: name.into(),
                action,
            },
        );
        assert_eq!(r, Ok(AcdReply::Done), "{name}");
        h.engine.drain().collect()
    }

    pub(super) fn acd_events(actions: &[Action]) -> Vec<AcdEvent> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Event(SipEvent::Acd(e)) => Some((**e).clone()),
                _ => None,
            })
            .collect()
    }

    pub(super) fn kinds(actions: &[Action]) -> Vec<&'static str> {
        acd_events(actions)
            .into_iter()
            .map(|e| e.kind)
            .filter(|k| *k != "agent_state")
            .collect()
    }

    /// Caller dials 3000 with `call_id`; returns the actions after media is allocated.
    pub(super) fn queued_call(h: &mut Harness, call_id: &str, slot: u32) -> (u64, Vec<Action>) {
        let out = h.feed(
            &invite(&format!("z9hG4bK{call_id}"), call_id, "3000", SDP_A),
            "10.0.0.1:5060",
        );
        let call = out
            .iter()
            .find_map(|a| match a {
                Action::Media(MediaOp::Create { call, .. }) => Some(*call),
                _ => None,
            })
            .expect("media requested");
        let now = h.now();
        let session = SessionId {
            core: 0,
            slot,
            generation: 1,
        };
        h.engine
            .media_created(now, call, Ok((session, [31000, 31004])));
        (call, h.engine.drain().collect())
    }

    pub(super) fn invites_to(actions: &[Action], addr: &str) -> Vec<Message> {
        sent(actions)
            .into_iter()
            .filter(|(to, m)| to.to_string() == addr && m.method() == Some(&Method::Invite))
            .map(|(_, m)| m)
            .collect()
    }

    fn harness(strategy: &str, max_wait_s: Option<u32>) -> Harness {
        let mut h = harness_with(cc_config(strategy, max_wait_s));
        register_device(&mut h, "alice");
        register_device(&mut h, "bob");
        h
    }

    #[test]
    fn a_queued_call_rings_the_agents_phone_and_is_bridged_when_it_answers() {
        let mut h = harness("longest-idle", None);
        let out = agent(&mut h, "alice", AgentAction::Login);
        assert_eq!(kinds(&out), vec!["agent_login"]);
        let (call, out) = queued_call(&mut h, "q-1", 1);
        let to_caller = sent(&out);
        assert!(to_caller
            .iter()
            .any(|(to, m)| to.to_string() == "10.0.0.1:5060" && m.status() == Some(180)));
        let offer = invites_to(&out, device("alice")).pop().expect("alice rung");
        assert_eq!(offer.request_uri(), Some("sip:alice@192.168.1.11:5060"));
        let body = offer.body_str().unwrap();
        assert!(body.contains("m=audio 31004 ") && !body.contains("10.0.0.1"));
        assert_eq!(kinds(&out), vec!["enter", "offer"]);
        let pop = acd_events(&out)
            .into_iter()
            .find(|e| e.kind == "offer")
            .unwrap();
        assert_eq!(pop.agent.as_deref(), Some("alice"));
        assert_eq!(pop.call, Some(call));
        assert_eq!(pop.detail["caller"], "sip:caller@10.0.0.1");

        h.ms += 100;
        let out = h.feed(&response_from(&offer, 180, "btag", None), device("alice"));
        assert!(
            sent(&out).is_empty(),
            "the caller already heard 180: {out:?}"
        );
        h.ms += 2000;
        let out = h.feed(
            &response_from(&offer, 200, "btag", Some(SDP_B)),
            device("alice"),
        );
        let msgs = sent(&out);
        assert!(msgs
            .iter()
            .any(|(to, m)| to.to_string() == device("alice") && m.method() == Some(&Method::Ack)));
        let ok = msgs
            .iter()
            .find(|(to, m)| to.to_string() == "10.0.0.1:5060" && m.status() == Some(200))
            .expect("caller answered");
        assert!(ok.1.body_str().unwrap().contains("m=audio 31000 "));
        assert!(out.iter().any(|a| matches!(a, Action::Media(MediaOp::Update { leg: LegIndex::B, params, .. }) if params.rtp == Some("10.0.0.2:5000".parse().unwrap()))));
        assert_eq!(kinds(&out), vec!["connect"]);
        let now = h.now();
        let Ok(AcdReply::Agents(agents)) =
            h.engine
                .acd_request(now, "acme", AcdOp::Agents { agent: None })
        else {
            panic!()
        };
        assert_eq!(agents[0].name, "alice");
        assert_eq!(agents[0].state, "on-call");
        assert_eq!(agents[0].contact, Some(call));
        assert!(agents[0].registered);

        // The agent hangs up: the caller gets BYE, the agent goes to wrap-up, then available.
        h.ms += 30_000;
        let a_tag = ok.1.to_tag().unwrap().to_string();
        let bye = in_dialog_from_b(&offer, "BYE", 2, "");
        let out = h.feed(&bye, device("alice"));
        let msgs = sent(&out);
        assert!(msgs.iter().any(|(to, m)| to.to_string() == "10.0.0.1:5060"
            && m.method() == Some(&Method::Bye)
            && m.from_tag() == Some(a_tag.as_str())));
        assert_eq!(kinds(&out), vec!["complete_agent"]);
        let states: Vec<String> = acd_events(&out)
            .iter()
            .filter(|e| e.kind == "agent_state")
            .map(|e| e.detail["to"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(states, vec!["wrap-up"]);
        let out = h.advance(10_100);
        let states: Vec<String> = acd_events(&out)
            .iter()
            .filter(|e| e.kind == "agent_state")
            .map(|e| e.detail["to"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(states, vec!["available"], "wrap-up ends on its timer");
    }

    #[test]
    fn ring_all_cancels_the_other_phones_when_one_answers() {
        let mut h = harness("ring-all", None);
        agent(&mut h, "alice", AgentAction::Login);
        agent(&mut h, "bob", AgentAction::Login);
        let (_, out) = queued_call(&mut h, "q-2", 1);
        let to_alice = invites_to(&out, device("alice")).pop().expect("alice rung");
        let to_bob = invites_to(&out, device("bob")).pop().expect("bob rung");
        h.feed(&response_from(&to_alice, 180, "da", None), device("alice"));
        h.feed(&response_from(&to_bob, 180, "db", None), device("bob"));
        h.ms += 1000;
        let out = h.feed(
            &response_from(&to_bob, 200, "db", Some(SDP_B)),
            device("bob"),
        );
        let msgs = sent(&out);
        let cancel = msgs
            .iter()
            .find(|(to, m)| {
                to.to_string() == device("alice") && m.method() == Some(&Method::Cancel)
            })
            .expect("alice's phone cancelled");
        assert_eq!(cancel.1.call_id(), to_alice.call_id());
        assert!(msgs
            .iter()
            .any(|(to, m)| to.to_string() == "10.0.0.1:5060" && m.status() == Some(200)));
        // Alice's phone answers anyway (the race): ACKed and hung up, the caller keeps bob.
        let out = h.feed(
            &response_from(&to_alice, 200, "da", Some(SDP_B)),
            device("alice"),
        );
        let msgs = sent(&out);
        assert!(msgs
            .iter()
            .any(|(to, m)| to.to_string() == device("alice") && m.method() == Some(&Method::Ack)));
        assert!(msgs
            .iter()
            .any(|(to, m)| to.to_string() == device("alice") && m.method() == Some(&Method::Bye)));
        assert!(!msgs.iter().any(|(to, _)| to.to_string() == "10.0.0.1:5060"));
        let now = h.now();
        let Ok(AcdReply::Agents(agents)) =
            h.engine
                .acd_request(now, "acme", AcdOp::Agents { agent: None })
        else {
            panic!()
        };
        let state = |n: &str| agents.iter().find(|a| a.name == n).unwrap().state.clone();
        assert_eq!(state("bob"), "on-call");
        assert_eq!(state("alice"), "available");
    }

    #[test]
    fn a_caller_who_hangs_up_in_queue_is_abandoned_and_the_phone_stops_ringing() {
        let mut h = harness("longest-idle", None);
        agent(&mut h, "alice", AgentAction::Login);
        let (_, out) = queued_call(&mut h, "q-3", 1);
        let offer = invites_to(&out, device("alice")).pop().unwrap();
        h.feed(&response_from(&offer, 180, "d", None), device("alice"));
        h.ms += 4000;
        let cancel = String::from_utf8(invite("z9hG4bKq-3", "q-3", "3000", ""))
            .unwrap()
            .replace("INVITE sip:3000@127.0.0.1", "CANCEL sip:3000@127.0.0.1")
            .replace("1 INVITE", "1 CANCEL")
            .replace("c: application/sdp\r\n", "");
        let out = h.feed(cancel.as_bytes(), "10.0.0.1:5060");
        let msgs = sent(&out);
        assert!(msgs.iter().any(|(_, m)| m.status() == Some(487)));
        assert!(msgs.iter().any(
            |(to, m)| to.to_string() == device("alice") && m.method() == Some(&Method::Cancel)
        ));
        assert_eq!(kinds(&out), vec!["abandon"]);
        let abandon = acd_events(&out)
            .into_iter()
            .find(|e| e.kind == "abandon")
            .unwrap();
        assert_eq!(abandon.detail["wait_ms"], 4000);
        // The phone's 487 changes nothing; alice is free again.
        let out = h.feed(&response_from(&offer, 487, "d", None), device("alice"));
        assert!(kinds(&out).is_empty());
        let now = h.now();
        let Ok(AcdReply::Agents(agents)) = h.engine.acd_request(
            now,
            "acme",
            AcdOp::Agents {
                agent: Some("alice".into()),
            },
        ) else {
            panic!()
        };
        assert_eq!(agents[0].state, "available");
    }

    #[test]
    fn an_agent_on_break_gets_nothing_and_max_wait_ends_the_call_with_480() {
        let mut h = harness("longest-idle", Some(30));
        agent(&mut h, "alice", AgentAction::Login);
        agent(
            &mut h,
            "alice",
            AgentAction::Break {
                reason: "lunch".into(),
            },
        );
        let (_, out) = queued_call(&mut h, "q-4", 1);
        assert!(invites_to(&out, device("alice")).is_empty());
        assert_eq!(kinds(&out), vec!["enter"]);
        let now = h.now();
        let Ok(AcdReply::Queues(queues)) =
            h.engine
                .acd_request(now, "acme", AcdOp::Queues { queue: None })
        else {
            panic!()
        };
        assert_eq!(queues.len(), 2);
        assert_eq!(queues[0].name, "sales");
        assert_eq!(queues[0].waiting, 0);
        let queues = &queues[1..];
        assert_eq!(queues[0].name, "support");
        assert_eq!(queues[0].waiting, 1);
        assert_eq!(queues[0].on_break, 1);
        assert_eq!(queues[0].callers.len(), 1);
        assert_eq!(queues[0].callers[0].position, 1);
        let out = h.advance(30_010);
        assert!(invites_to(&out, device("alice")).is_empty());
        assert!(sent(&out)
            .iter()
            .any(|(to, m)| to.to_string() == "10.0.0.1:5060" && m.status() == Some(480)));
        assert_eq!(kinds(&out), vec!["exit_timeout"]);
        assert_eq!(h.engine.active_calls(), 0);
    }

    #[test]
    fn a_busy_phone_is_a_reject_and_the_caller_goes_to_the_next_agent() {
        let mut h = harness("top-down", None);
        agent(&mut h, "alice", AgentAction::Login);
        agent(&mut h, "bob", AgentAction::Login);
        let (_, out) = queued_call(&mut h, "q-5", 1);
        let first: Vec<(SocketAddr, Message)> = sent(&out)
            .into_iter()
            .filter(|(_, m)| m.method() == Some(&Method::Invite))
            .collect();
        assert_eq!(first.len(), 1, "one agent at a time");
        let (to, offer) = &first[0];
        let out = h.feed(&response_from(offer, 486, "x", None), &to.to_string());
        assert!(kinds(&out).contains(&"reject"), "{:?}", kinds(&out));
        let next: Vec<(SocketAddr, Message)> = sent(&out)
            .into_iter()
            .filter(|(_, m)| m.method() == Some(&Method::Invite))
            .collect();
        assert_eq!(next.len(), 1);
        assert_ne!(next[0].0, *to, "offered to the other agent");
    }

    #[test]
    fn an_agent_whose_phone_is_not_registered_is_skipped() {
        let mut h = harness_with(cc_config("longest-idle", None));
        register_device(&mut h, "bob");
        agent(&mut h, "alice", AgentAction::Login);
        h.ms += 10;
        agent(&mut h, "bob", AgentAction::Login);
        let (_, out) = queued_call(&mut h, "q-6", 1);
        assert_eq!(
            invites_to(&out, device("bob")).len(),
            1,
            "{:?}",
            kinds(&out)
        );
        assert!(kinds(&out).contains(&"reject"));
    }

    #[test]
    fn an_agent_transfers_the_caller_to_another_queue_and_the_next_agent_takes_it() {
        let mut h = harness("longest-idle", None);
        agent(&mut h, "alice", AgentAction::Login);
        let (call, out) = queued_call(&mut h, "q-7", 1);
        let offer = invites_to(&out, device("alice")).pop().unwrap();
        h.ms += 1000;
        let out = h.feed(
            &response_from(&offer, 200, "btag", Some(SDP_B)),
            device("alice"),
        );
        assert!(sent(&out).iter().any(|(_, m)| m.status() == Some(200)));
        agent(&mut h, "bob", AgentAction::Login);

        h.ms += 20_000;
        let refer = in_dialog_from_b(&offer, "REFER", 2, "Refer-To: <sip:3001@127.0.0.1>\r\n");
        let out = h.feed(&refer, device("alice"));
        let msgs = sent(&out);
        let to_alice: Vec<&Message> = msgs
            .iter()
            .filter(|(to, _)| to.to_string() == device("alice"))
            .map(|(_, m)| m)
            .collect();
        assert!(to_alice.iter().any(|m| m.status() == Some(202)));
        assert!(to_alice.iter().any(
            |m| m.method() == Some(&Method::Notify) && m.body_str().unwrap().contains("200 OK")
        ));
        assert!(to_alice.iter().any(|m| m.method() == Some(&Method::Bye)));
        assert!(
            !msgs.iter().any(|(to, _)| to.to_string() == "10.0.0.1:5060"),
            "the caller sees nothing"
        );
        assert!(kinds(&out).contains(&"transfer"), "{:?}", kinds(&out));
        let to_bob = invites_to(&out, device("bob"))
            .pop()
            .expect("bob offered the caller");
        assert!(to_bob.body_str().unwrap().contains("m=audio 31004 "));
        let transfer = acd_events(&out)
            .into_iter()
            .find(|e| e.kind == "transfer")
            .unwrap();
        assert_eq!(transfer.detail["to"], "sales");
        assert_eq!(transfer.agent.as_deref(), Some("alice"));

        h.ms += 1000;
        let bob_sdp = SDP_B.replace("10.0.0.2", "10.0.0.3");
        let out = h.feed(
            &response_from(&to_bob, 200, "bobtag", Some(&bob_sdp)),
            device("bob"),
        );
        assert!(
            !sent(&out)
                .iter()
                .any(|(to, _)| to.to_string() == "10.0.0.1:5060"),
            "no second 200 to the caller"
        );
        assert!(out.iter().any(|a| matches!(a, Action::Media(MediaOp::Update { leg: LegIndex::B, params, .. }) if params.rtp == Some("10.0.0.3:5000".parse().unwrap()))));
        let now = h.now();
        let Ok(AcdReply::Agents(agents)) =
            h.engine
                .acd_request(now, "acme", AcdOp::Agents { agent: None })
        else {
            panic!()
        };
        let state = |n: &str| agents.iter().find(|a| a.name == n).unwrap().state.clone();
        assert_eq!(state("bob"), "on-call");
        assert_eq!(state("alice"), "wrap-up");
        assert_eq!(
            agents.iter().find(|a| a.name == "bob").unwrap().contact,
            Some(call)
        );
    }
}

mod queue_directory {
    use super::*;
    use crate::sip::config::SipDirectory;
    use crate::sip::queues::{AcdOp, AcdRefusal, AcdReply, AgentAction};

    fn directory(cfg: &SipConfig) -> SipDirectory {
        SipDirectory {
            tenants: cfg.tenants.clone(),
            accounts: cfg.digest_accounts(),
            trunks: cfg.trunks.clone(),
            routes: cfg.routes.clone(),
            queues: cfg.queues.clone(),
            agents: cfg.agents.clone(),
        }
    }

    #[test]
    fn queues_and_agents_change_at_run_time_and_busy_ones_go_once_idle() {
        let cfg = super::queue::cc_config("longest-idle", None);
        let mut h = harness_with(cfg.clone());
        let now = h.now();
        let login = |h: &mut Harness, name: &str| {
            let now = h.now();
            h.engine.acd_request(
                now,
                "acme",
                AcdOp::Agent {
                    agent: name.into(),
                    action: AgentAction::Login,
                },
            )
        };
        assert_eq!(login(&mut h, "bob"), Ok(AcdReply::Done));
        h.engine.drain().for_each(drop);

        // Max wait added to support, alice removed (logged out: goes at once), carol added.
        let mut changed = cfg.clone();
        changed.queues[0].max_wait_s = Some(5);
        changed.agents.retain(|a| a.name != "alice");
        let mut carol = cfg.agents[0].clone();
        carol.name = "carol".into();
        changed.agents.push(carol);
        h.engine.set_directory(now, directory(&changed));
        assert!(matches!(
            login(&mut h, "alice"),
            Err(AcdRefusal::NotFound(_))
        ));
        assert_eq!(login(&mut h, "carol"), Ok(AcdReply::Done));

        // A caller waits in support (nobody's phone is registered, so every offer is refused
        // at once and the caller waits): the new max-wait applies.
        super::queue::queued_call(&mut h, "d-1", 1);

        // Support is taken away while the caller waits: it stays until the caller is gone.
        let mut without = changed.clone();
        without.queues.retain(|q| q.name != "support");
        without.routes.retain(|r| r.target != "queue:support");
        for a in without.agents.iter_mut() {
            a.queues.retain(|m| m.queue != "support");
        }
        let now = h.now();
        h.engine.set_directory(now, directory(&without));
        let now = h.now();
        let Ok(AcdReply::Queues(queues)) =
            h.engine
                .acd_request(now, "acme", AcdOp::Queues { queue: None })
        else {
            panic!()
        };
        assert_eq!(
            queues.iter().map(|q| q.name.as_str()).collect::<Vec<_>>(),
            vec!["sales"],
            "its name is gone at once"
        );
        let out = h.advance(5_100);
        assert!(
            sent(&out).iter().any(|(_, m)| m.status() == Some(480)),
            "the waiting caller still gets the max-wait it had"
        );
        assert_eq!(h.engine.active_calls(), 0);
    }

    #[test]
    fn max_wait_sends_the_caller_to_the_overflow_target_like_any_routed_call() {
        let mut cfg = super::queue::cc_config("longest-idle", Some(5));
        cfg.queues[0].overflow = Some("uri:sip:voicemail@10.0.0.9:5060".into());
        cfg.validate().unwrap();
        let mut h = harness_with(cfg);
        super::queue::queued_call(&mut h, "o-1", 1);
        let out = h.advance(5_100);
        let vm = sent(&out)
            .into_iter()
            .find(|(to, m)| {
                to.to_string() == "10.0.0.9:5060" && m.method() == Some(&Method::Invite)
            })
            .expect("sent to voicemail")
            .1;
        assert_eq!(vm.request_uri(), Some("sip:voicemail@10.0.0.9:5060"));
        assert!(vm.body_str().unwrap().contains("m=audio 31004 "));
        let out = h.feed(&response_from(&vm, 200, "vm", Some(SDP_B)), "10.0.0.9:5060");
        assert!(sent(&out)
            .iter()
            .any(|(to, m)| to.to_string() == "10.0.0.1:5060" && m.status() == Some(200)));
        assert_eq!(h.engine.active_calls(), 1);
    }

    #[test]
    fn waiting_callers_hear_hold_music_and_leave_with_the_queues_key() {
        let mut cfg = super::queue::cc_config("longest-idle", None);
        cfg.queues[0].leave_key = Some("0".into());
        cfg.queues[0].overflow = Some("uri:sip:voicemail@10.0.0.9:5060".into());
        cfg.validate().unwrap();
        let mut h = harness_with(cfg);
        let (_, out) = super::queue::queued_call(&mut h, "m-1", 1);
        let session = SessionId {
            core: 0,
            slot: 1,
            generation: 1,
        };
        let ringing = sent(&out)
            .into_iter()
            .find(|(_, m)| m.status() == Some(180))
            .unwrap()
            .1;
        let sdp = ringing.body_str().expect("early media SDP in the 180");
        assert!(sdp.contains("c=IN IP4 192.0.2.1") && sdp.contains("m=audio 31000 "));
        assert!(out.iter().any(|a| matches!(
            a,
            Action::Media(MediaOp::Play {
                leg: LegIndex::A,
                clip: 0,
                payload_type: 8,
                ..
            })
        )));
        assert!(out.iter().any(|a| matches!(
            a,
            Action::Media(MediaOp::SetDtmf {
                leg: LegIndex::A,
                options: tandem_dataplane::api::DtmfOptions {
                    event_payload_type: Some(101),
                    ..
                },
                ..
            })
        )));

        // Another key does nothing; the leave key sends the caller to voicemail.
        let now = h.now();
        h.engine.media_dtmf(now, session, LegIndex::A, '5');
        assert!(sent(&h.engine.drain().collect::<Vec<_>>()).is_empty());
        h.ms += 7000;
        let now = h.now();
        h.engine.media_dtmf(now, session, LegIndex::A, '0');
        let out: Vec<Action> = h.engine.drain().collect();
        assert!(out.iter().any(|a| matches!(
            a,
            Action::Media(MediaOp::StopPlay {
                leg: LegIndex::A,
                ..
            })
        )));
        let vm = sent(&out).into_iter().find(|(to, m)| {
            to.to_string() == "10.0.0.9:5060" && m.method() == Some(&Method::Invite)
        });
        assert!(vm.is_some(), "sent to the overflow target: {out:?}");
        let exit = out
            .iter()
            .find_map(|a| match a {
                Action::Event(SipEvent::Acd(e)) if e.kind == "exit_key" => Some(e.clone()),
                _ => None,
            })
            .expect("exit_key in the queue log");
        assert_eq!(exit.detail["wait_ms"], 7000);
    }

    #[test]
    fn the_music_stops_when_an_agent_answers() {
        let mut h = harness_with(super::queue::cc_config("longest-idle", None));
        super::queue::register_device(&mut h, "alice");
        let now = h.now();
        h.engine
            .acd_request(
                now,
                "acme",
                AcdOp::Agent {
                    agent: "alice".into(),
                    action: AgentAction::Login,
                },
            )
            .unwrap();
        h.engine.drain().for_each(drop);
        let (_, out) = super::queue::queued_call(&mut h, "m-2", 1);
        assert!(out
            .iter()
            .any(|a| matches!(a, Action::Media(MediaOp::Play { .. }))));
        let offer = sent(&out)
            .into_iter()
            .find(|(_, m)| m.method() == Some(&Method::Invite))
            .unwrap()
            .1;
        let out = h.feed(
            &response_from(&offer, 200, "btag", Some(SDP_B)),
            "192.168.1.11:5060",
        );
        let stop = out
            .iter()
            .position(|a| {
                matches!(
                    a,
                    Action::Media(MediaOp::StopPlay {
                        leg: LegIndex::A,
                        ..
                    })
                )
            })
            .expect("music stopped");
        let ok = out
            .iter()
            .position(|a| matches!(a, Action::Send { bytes, .. } if Message::parse(bytes).unwrap().status() == Some(200)))
            .expect("caller answered");
        assert!(stop < ok, "stopped before the caller is answered");
    }

    #[test]
    fn a_caller_who_hangs_up_and_calls_back_within_the_grace_gets_its_place_back() {
        let mut cfg = super::queue::cc_config("longest-idle", None);
        cfg.queue_resume_grace_s = 60;
        let mut h = harness_with(cfg);
        let enter = |h: &mut Harness, id: &str, slot: u32| -> (u64, Vec<Action>) {
            let out = h.feed(
                &invite(&format!("z9hG4bK{id}"), id, "3000", SDP_A),
                "10.0.0.1:5060",
            );
            let call = out
                .iter()
                .find_map(|a| match a {
                    Action::Media(MediaOp::Create { call, .. }) => Some(*call),
                    _ => None,
                })
                .unwrap();
            let now = h.now();
            let session = SessionId {
                core: 0,
                slot,
                generation: 1,
            };
            h.engine
                .media_created(now, call, Ok((session, [31000, 31004])));
            (call, h.engine.drain().collect())
        };
        let (first, _) = enter(&mut h, "r-1", 1);
        h.ms += 10_000;
        let cancel = String::from_utf8(invite("z9hG4bKr-1", "r-1", "3000", ""))
            .unwrap()
            .replace("INVITE sip:3000@127.0.0.1", "CANCEL sip:3000@127.0.0.1")
            .replace("1 INVITE", "1 CANCEL")
            .replace("c: application/sdp\r\n", "");
        let out = h.feed(cancel.as_bytes(), "10.0.0.1:5060");
        let kinds: Vec<&str> = out
            .iter()
            .filter_map(|a| match a {
                Action::Event(SipEvent::Acd(e)) => Some(e.kind),
                _ => None,
            })
            .collect();
        assert!(
            !kinds.contains(&"abandon"),
            "not abandoned yet: within the grace"
        );
        h.ms += 20_000;
        let (_, out) = enter(&mut h, "r-2", 2);
        let events: Vec<_> = out
            .iter()
            .filter_map(|a| match a {
                Action::Event(SipEvent::Acd(e)) => Some(e.clone()),
                _ => None,
            })
            .collect();
        let resumed = events
            .iter()
            .find(|e| e.kind == "resumed")
            .expect("old contact resumed");
        assert_eq!(resumed.contact, Some(first));
        let entered = events.iter().find(|e| e.kind == "enter").unwrap();
        assert_eq!(entered.detail["resumed_from"], first);
    }

    #[test]
    fn upstream_data_reaches_the_screen_pop_and_urgent_callers_go_first() {
        let mut h = harness_with(super::queue::cc_config("longest-idle", None));
        super::queue::register_device(&mut h, "alice");
        let mut calls = Vec::new();
        for (id, extra) in [
            ("p-1", ""),
            (
                "p-2",
                "Priority: urgent\r\nX-Account: 4711\r\nX-IVR-Choice: billing\r\n",
            ),
        ] {
            let text = String::from_utf8(invite(&format!("z9hG4bK{id}"), id, "3000", SDP_A))
                .unwrap()
                .replacen(
                    "Max-Forwards: 70\r\n",
                    &format!("Max-Forwards: 70\r\n{extra}"),
                    1,
                );
            let out = h.feed(text.as_bytes(), "10.0.0.1:5060");
            let call = out
                .iter()
                .find_map(|a| match a {
                    Action::Media(MediaOp::Create { call, .. }) => Some(*call),
                    _ => None,
                })
                .unwrap();
            let now = h.now();
            let session = SessionId {
                core: 0,
                slot: calls.len() as u32 + 1,
                generation: 1,
            };
            h.engine
                .media_created(now, call, Ok((session, [31000, 31004])));
            h.engine.drain().for_each(drop);
            calls.push(call);
            h.ms += 1000;
        }
        let now = h.now();
        h.engine
            .acd_request(
                now,
                "acme",
                AcdOp::Agent {
                    agent: "alice".into(),
                    action: AgentAction::Login,
                },
            )
            .unwrap();
        let out: Vec<Action> = h.engine.drain().collect();
        let offer = out
            .iter()
            .find_map(|a| match a {
                Action::Event(SipEvent::Acd(e)) if e.kind == "offer" => Some(e.clone()),
                _ => None,
            })
            .expect("offered");
        assert_eq!(offer.contact, Some(calls[1]), "the urgent caller first");
        assert_eq!(offer.detail["x-account"], "4711");
        assert_eq!(offer.detail["x-ivr-choice"], "billing");
    }
}

/// Found by the sip_message fuzz target: 128 headers and no Content-Length parsed, but the
/// printed form (which always adds Content-Length) had 129 and did not parse again.
#[test]
fn a_message_at_the_header_limit_prints_to_one_that_parses() {
    use super::message::MAX_HEADERS;
    let head = "OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n";
    let with = |n: usize, length: bool| {
        let mut text = head.to_string();
        for i in 0..n - 5 - usize::from(length) {
            text.push_str(&format!("X-Filler-{i}: {i}\r\n"));
        }
        if length {
            text.push_str("Content-Length: 0\r\n");
        }
        text.push_str("\r\n");
        text
    };
    for length in [false, true] {
        let full = with(MAX_HEADERS, length);
        match Message::parse(full.as_bytes()) {
            Ok(m) => {
                assert!(length, "128 headers without Content-Length must not parse");
                Message::parse(&m.to_bytes()).expect("printed message parses");
            }
            Err(e) => {
                assert!(!length, "{e:?}");
                assert_eq!(e.reason, "too many headers");
            }
        }
        let under = with(MAX_HEADERS - 1, length);
        let m = Message::parse(under.as_bytes()).expect("127 headers parse");
        Message::parse(&m.to_bytes()).expect("printed message parses");
    }
}

#[path = "callback_tests.rs"]
mod callback_tests;
#[path = "transcoding_tests.rs"]
mod transcoding_tests;
/// Periodic position and wait announcements to callers waiting in a queue (ACD `Announce` →
/// the data plane plays the prompts once, then the music again).
mod announcements {
    use super::queue::{cc_config, kinds, queued_call, register_device};
    use super::*;
    use crate::prompts::PromptClips;
    use crate::sip::queues::{AcdOp, AgentAction, QueueDef};
    use tandem_dataplane::api::ClipSequence;

    /// Where the prompts sit among the clips (after the hold music, clip 0).
    const PROMPTS: PromptClips = PromptClips {
        first: 1,
        greeting_ms: 4_000,
    };

    fn session(slot: u32) -> SessionId {
        SessionId {
            core: 0,
            slot,
            generation: 1,
        }
    }

    /// Every PlaySequence asked for: (session, clips once, clip looped after, payload type).
    fn plays(out: &[Action]) -> Vec<(SessionId, ClipSequence, u16, u8)> {
        out.iter()
            .filter_map(|a| match a {
                Action::Media(MediaOp::PlaySequence {
                    session,
                    leg: LegIndex::A,
                    once,
                    then,
                    payload_type,
                }) => Some((*session, *once, *then, *payload_type)),
                _ => None,
            })
            .collect()
    }

    fn harness_announcing(period_s: u32, change: impl FnOnce(&mut QueueDef)) -> Harness {
        let mut cfg = cc_config("longest-idle", None);
        cfg.queues[0].announce_period_s = period_s;
        change(&mut cfg.queues[0]);
        cfg.validate().unwrap();
        let mut h = harness_with(cfg);
        h.engine.set_prompts(Some(PROMPTS));
        h
    }

    #[test]
    fn waiting_callers_hear_their_position_every_period_then_the_music_again() {
        let mut h = harness_announcing(30, |_| {});
        let (_, out) = queued_call(&mut h, "an-1", 1);
        assert!(plays(&out).is_empty(), "nothing said on entry");
        h.ms += 5_000;
        queued_call(&mut h, "an-2", 2);
        // 30 s after each entered: its position. Nobody is logged in, so there is no wait
        // estimate to give.
        let out = h.advance(24_990);
        assert!(plays(&out).is_empty());
        let out = h.advance(10);
        let first = PROMPTS.announcement(Some(1), None).unwrap();
        assert_eq!(plays(&out), vec![(session(1), first, 0, 8)]);
        let out = h.advance(5_000);
        let second = PROMPTS.announcement(Some(2), None).unwrap();
        assert_eq!(plays(&out), vec![(session(2), second, 0, 8)]);
        // And again every 30 s while they wait.
        let out = h.advance(30_000);
        assert_eq!(
            plays(&out),
            vec![(session(1), first, 0, 8), (session(2), second, 0, 8)]
        );
    }

    #[test]
    fn the_wait_is_said_when_agents_are_staffed_and_the_position_only_if_the_queue_says() {
        let mut h = harness_announcing(20, |q| q.announce_position = false);
        register_device(&mut h, "alice");
        let now = h.now();
        h.engine
            .acd_request(
                now,
                "acme",
                AcdOp::Agent {
                    agent: "alice".into(),
                    action: AgentAction::Login,
                },
            )
            .unwrap();
        h.engine.drain().for_each(drop);
        // The first caller goes to alice, who answers: she is busy for the second.
        let (_, out) = queued_call(&mut h, "an-3", 1);
        let offer = sent(&out)
            .into_iter()
            .find(|(_, m)| m.method() == Some(&Method::Invite))
            .unwrap()
            .1;
        h.feed(
            &response_from(&offer, 200, "btag", Some(SDP_B)),
            "192.168.1.11:5060",
        );
        queued_call(&mut h, "an-4", 2);
        let out = h.advance(20_000);
        // First in line with one agent, busy, and the initial handle time (3 min): about
        // three minutes. The connected caller hears nothing.
        let wait = PROMPTS.announcement(None, Some(180_000)).unwrap();
        assert_eq!(plays(&out), vec![(session(2), wait, 0, 8)]);
    }

    #[test]
    fn no_announcements_without_prompts_without_music_or_with_period_zero() {
        for (period, music, prompts) in [
            (20, true, None),
            (20, false, Some(PROMPTS)),
            (0, true, Some(PROMPTS)),
        ] {
            let mut h = harness_announcing(period, |q| q.music = music);
            h.engine.set_prompts(prompts);
            queued_call(&mut h, "an-5", 1);
            let out = h.advance(45_000);
            assert!(plays(&out).is_empty(), "{period} {music} {prompts:?}");
        }
    }

    #[test]
    fn a_queue_with_a_greeting_plays_it_before_the_caller_joins_the_queue() {
        let mut h = harness_announcing(0, |q| q.greeting = true);
        register_device(&mut h, "alice");
        let now = h.now();
        let login = AcdOp::Agent {
            agent: "alice".into(),
            action: AgentAction::Login,
        };
        h.engine.acd_request(now, "acme", login).unwrap();
        h.engine.drain().for_each(drop);
        // The greeting, then the music, in one stream; nobody is offered the call meanwhile.
        let (_, out) = queued_call(&mut h, "gr-1", 1);
        let (greeting, played) = PROMPTS.greeting().unwrap();
        assert_eq!(played, Duration::from_millis(4_000));
        assert_eq!(plays(&out), vec![(session(1), greeting, 0, 8)]);
        assert!(sent(&out).iter().any(|(_, m)| m.status() == Some(180)));
        assert!(kinds(&out).is_empty(), "{:?}", kinds(&out));
        let out = h.advance(3_990);
        assert!(kinds(&out).is_empty(), "{:?}", kinds(&out));
        // Once it has played, the caller joins the queue and alice's phone rings.
        let out = h.advance(10);
        assert_eq!(kinds(&out), vec!["enter", "offer"]);
        assert!(sent(&out)
            .iter()
            .any(|(to, m)| to.to_string() == "192.168.1.11:5060"
                && m.method() == Some(&Method::Invite)));
        // Without prompts there is nothing to say: the caller joins at once.
        let mut h = harness_announcing(0, |q| q.greeting = true);
        h.engine.set_prompts(None);
        let (_, out) = queued_call(&mut h, "gr-2", 1);
        assert_eq!(kinds(&out), vec!["enter"]);
    }

    #[test]
    fn the_period_is_off_or_at_least_ten_seconds() {
        let mut q = QueueDef::new("acme", "support");
        q.announce_period_s = 5;
        assert!(q.validate().unwrap_err().contains("announce_period_s"));
        q.announce_period_s = 10;
        q.validate().unwrap();
    }
}

#[path = "conference_tests.rs"]
mod conference_tests;
#[path = "live_calls_tests.rs"]
mod live_calls_tests;
#[path = "monitor_tests.rs"]
mod monitor_tests;
