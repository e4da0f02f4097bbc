//! Conference rooms through the engine with simulated time: a call routed to `conference:<room>`
//! gets a session on the room's core, is answered with our SDP in one codec of its offer, joins
//! the room, and leaves it (its session deleted) on BYE; a join the core refuses ends the call.

use super::*;
use tandem_dataplane::api::{Codec, CoreError};

/// An offer of Opus first, then PCMU, with telephone-event in both clocks.
const SDP_WIDE: &str = "v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 111 0 101 102\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=rtpmap:102 telephone-event/48000\r\n";

fn harness() -> Harness {
    let mut cfg = config();
    for (pattern, room) in [("conf-7", "sales"), ("conf-8", "support")] {
        cfg.routes.insert(
            0,
            RouteConfig {
                tenant: "acme".into(),
                pattern: pattern.into(),
                target: format!("conference:{room}"),
            },
        );
    }
    cfg.tenants[0].max_calls = None;
    harness_with(cfg)
}

fn session(slot: u32) -> SessionId {
    SessionId {
        core: 1,
        slot,
        generation: 1,
    }
}

/// A caller dialling `to` with `sdp`: returns the call and the room id of its session's request.
fn dial(h: &mut Harness, call_id: &str, to: &str, sdp: &str) -> (u64, u32) {
    let out = h.feed(
        &invite(&format!("z9hG4bK{call_id}"), call_id, to, sdp),
        "10.0.0.1:5060",
    );
    out.iter()
        .find_map(|a| match a {
            Action::Media(MediaOp::CreateInConference {
                call,
                conference,
                a,
                ..
            }) => {
                assert_eq!(a.rtp, Some("10.0.0.1:4000".parse().unwrap()));
                Some((*call, *conference))
            }
            _ => None,
        })
        .expect("a session in the room")
}

#[test]
fn a_call_to_a_room_is_answered_joins_and_leaves_on_bye() {
    let mut h = harness();
    let (call, room) = dial(&mut h, "c1", "conf-7", SDP_WIDE);
    let (other, same_room) = dial(&mut h, "c2", "conf-7", SDP_A);
    let (_, elsewhere) = dial(&mut h, "c3", "conf-8", SDP_A);
    assert_eq!(room, same_room);
    assert_ne!(room, elsewhere);

    let now = h.now();
    h.engine
        .media_created(now, call, Ok((session(4), [30016, 30018])));
    let out: Vec<Action> = h.engine.drain().collect();
    let ok = sent(&out)
        .into_iter()
        .map(|(_, m)| m)
        .find(|m| m.status() == Some(200))
        .expect("200 to the caller");
    let answer = String::from_utf8(ok.body.clone()).unwrap();
    // Our address and leg A's port, one codec (the offer's first the cores mix) and its
    // clock's telephone-event.
    assert!(answer.contains("c=IN IP4 192.0.2.1"), "{answer}");
    assert!(answer.contains("m=audio 30016 RTP/AVP 111 102"), "{answer}");
    assert!(!answer.contains("PCMU") && !answer.contains("telephone-event/8000"));
    let joined = out.iter().find_map(|a| match a {
        Action::Media(MediaOp::JoinConference {
            call: c,
            session: s,
            conference,
            codec,
        }) => Some((*c, *s, *conference, *codec)),
        _ => None,
    });
    let (c, s, conference, codec) = joined.expect("joins the room");
    assert_eq!((c, s, conference), (call, session(4), room));
    assert_eq!(
        (codec.codec, codec.payload_type, codec.event_payload_type),
        (Codec::Opus, 111, Some(102))
    );
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Event(SipEvent::CallAnswered { call: c, .. }) if *c == call)));

    // The caller's BYE: 200, and its session deleted (which takes it out of the room).
    let to_tag = ok.to_tag().unwrap().to_string();
    let bye = format!("BYE sip:tandem@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKbye1\r\nFrom: <sip:caller@10.0.0.1>;tag=atag\r\nTo: <sip:conf-7@127.0.0.1>;tag={to_tag}\r\nCall-ID: c1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n");
    let out = h.feed(bye.as_bytes(), "10.0.0.1:5060");
    assert!(sent(&out).iter().any(|(_, m)| m.status() == Some(200)));
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Media(MediaOp::Delete { call: c, session: s }) if *c == call && *s == session(4)
    )));

    // A join the core refuses ends the call with BYE.
    let now = h.now();
    h.engine
        .media_created(now, other, Ok((session(5), [30020, 30022])));
    let _ = h.engine.drain().count();
    let now = h.now();
    h.engine
        .conference_joined(now, other, Err(CoreError::ConferenceConflict));
    let out: Vec<Action> = h.engine.drain().collect();
    assert!(sent(&out)
        .iter()
        .any(|(_, m)| m.method() == Some(&Method::Bye)));
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Media(MediaOp::Delete { session: s, .. }) if *s == session(5)
    )));
}

#[test]
fn an_offer_without_a_codec_the_cores_mix_is_refused() {
    let mut h = harness();
    let gsm = "v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 3\r\na=rtpmap:3 GSM/8000\r\n";
    let (call, _) = dial(&mut h, "c9", "conf-7", gsm);
    let now = h.now();
    h.engine
        .media_created(now, call, Ok((session(6), [30024, 30026])));
    let out: Vec<Action> = h.engine.drain().collect();
    assert!(sent(&out).iter().any(|(_, m)| m.status() == Some(488)));
    assert!(!out
        .iter()
        .any(|a| matches!(a, Action::Media(MediaOp::JoinConference { .. }))));
}
