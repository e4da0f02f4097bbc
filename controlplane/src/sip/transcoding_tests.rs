//! Transcoding through the B2BUA: what each side is offered and answered, and the codec plans
//! the data plane gets, for direct calls, early media, re-INVITEs, queued calls and transfers.

use super::queue::{agent, cc_config, device, invites_to, queued_call, register_device};
use super::*;
use crate::sip::queues::AgentAction;
use tandem_dataplane::api::{Codec, CodecOptions, LegCodec};

/// B takes PCMU only (with events): the caller's PCMA is not among them.
const SDP_PCMU: &str = "v=0\r\no=b 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";
/// An agent's phone that takes G.722 only.
const SDP_G722: &str = "v=0\r\no=p 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 9\r\na=rtpmap:9 G722/8000\r\n";

fn leg(payload_type: u8, codec: Codec, event_payload_type: Option<u8>) -> LegCodec {
    LegCodec {
        payload_type,
        codec,
        event_payload_type,
        ptime_ms: 0,
        options: CodecOptions::NONE,
    }
}

fn plans(actions: &[Action]) -> Vec<Option<[LegCodec; 2]>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Media(MediaOp::SetCodecs { codecs, .. }) => Some(*codecs),
            _ => None,
        })
        .collect()
}

fn m_line(m: &Message) -> String {
    let body = m.body_str().expect("an SDP body");
    body.lines()
        .find(|l| l.starts_with("m=audio"))
        .expect("an audio stream")
        .to_string()
}

/// The response with `code` sent to `to`.
fn response_to(actions: &[Action], to: &str, code: u16) -> Message {
    sent(actions)
        .into_iter()
        .find(|(addr, m)| addr.to_string() == to && m.status() == Some(code))
        .unwrap_or_else(|| panic!("no {code} to {to}: {actions:?}"))
        .1
}

fn request_to(actions: &[Action], to: &str, method: Method) -> Message {
    sent(actions)
        .into_iter()
        .find(|(addr, m)| addr.to_string() == to && m.method() == Some(&method))
        .unwrap_or_else(|| panic!("no {method} to {to}: {actions:?}"))
        .1
}

/// The caller's re-INVITE on its dialog (tag `a_tag` is ours) with `sdp`.
fn reinvite_from_a(call_id: &str, a_tag: &str, cseq: u32, sdp: &str) -> Vec<u8> {
    let mut m = Message::parse(format!("INVITE sip:tandem@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKre{cseq}\r\nFrom: <sip:caller@10.0.0.1>;tag=atag\r\nTo: <sip:5551234@127.0.0.1>;tag={a_tag}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\nMax-Forwards: 70\r\nContact: <sip:caller@10.0.0.1:5060>\r\nContent-Length: 0\r\n\r\n").as_bytes()).unwrap();
    m.set_body("application/sdp", sdp.as_bytes().to_vec());
    m.to_bytes()
}

fn record_of(h: &mut Harness, out: &[Action]) -> Box<super::super::b2bua::CallRecord> {
    let call = out
        .iter()
        .find_map(|a| match a {
            Action::Media(MediaOp::Delete { call, .. }) => Some(*call),
            _ => None,
        })
        .expect("session deleted");
    h.engine.media_deleted(call, Some(SessionStats::default()));
    h.engine
        .drain()
        .find_map(|a| match a {
            Action::Event(SipEvent::CallEnded(r)) => Some(r),
            _ => None,
        })
        .expect("a call record")
}

#[test]
fn a_callee_without_the_callers_codec_is_transcoded_through_hold_and_resume() {
    let mut h = Harness::new();
    let b_invite = start_call(&mut h, "tc-1");
    // The caller's PCMA and events first, then what the data plane can produce instead.
    assert_eq!(m_line(&b_invite), "m=audio 30004 RTP/AVP 8 0 9 96 97 101");
    let offer = b_invite.body_str().unwrap();
    for map in [
        "a=rtpmap:9 G722/8000",
        "a=rtpmap:96 opus/48000/2",
        // What we ask of an Opus answerer's stream (our decoder uses its FEC).
        "a=fmtp:96 useinbandfec=1",
        "a=rtpmap:97 telephone-event/48000",
    ] {
        assert!(offer.contains(map), "{map} in {offer}");
    }
    let out = h.feed(
        &response_from(&b_invite, 200, "btag", Some(SDP_PCMU)),
        "10.0.0.2:5060",
    );
    let pcma = leg(8, Codec::Pcma, Some(101));
    let pcmu = leg(0, Codec::Pcmu, Some(101));
    assert_eq!(plans(&out), vec![Some([pcma, pcmu])]);
    let ok = response_to(&out, "10.0.0.1:5060", 200);
    assert_eq!(m_line(&ok), "m=audio 30000 RTP/AVP 8 101");
    let body = ok.body_str().unwrap();
    assert!(
        body.contains("a=rtpmap:8 PCMA/8000") && !body.contains("PCMU"),
        "{body}"
    );
    let a_tag = ok.to_tag().unwrap().to_string();

    // Hold: the caller's re-INVITE goes on with the added codecs again; B keeps PCMU, so the
    // plan stands (nothing new for the data plane) and the caller is answered in PCMA.
    h.ms += 1000;
    let hold = SDP_A.replace("1 1 IN", "1 2 IN") + "a=sendonly\r\n";
    let out = h.feed(&reinvite_from_a("tc-1", &a_tag, 2, &hold), "10.0.0.1:5060");
    let to_b = request_to(&out, "10.0.0.2:5060", Method::Invite);
    assert_eq!(m_line(&to_b), "m=audio 30004 RTP/AVP 8 0 9 96 97 101");
    assert!(to_b.body_str().unwrap().contains("a=sendonly"));
    let held = SDP_PCMU.replace("1 1 IN", "1 2 IN") + "a=recvonly\r\n";
    let out = h.feed(
        &response_from(&to_b, 200, "btag", Some(&held)),
        "10.0.0.2:5060",
    );
    assert!(plans(&out).is_empty(), "unchanged plan: {:?}", plans(&out));
    let ok = response_to(&out, "10.0.0.1:5060", 200);
    assert_eq!(m_line(&ok), "m=audio 30000 RTP/AVP 8 101");
    assert!(ok.body_str().unwrap().contains("a=recvonly"));

    // Resume, and B now takes PCMA too and answers in it: transcoding stops.
    h.ms += 1000;
    let out = h.feed(
        &reinvite_from_a("tc-1", &a_tag, 3, &SDP_A.replace("1 1 IN", "1 3 IN")),
        "10.0.0.1:5060",
    );
    let to_b = request_to(&out, "10.0.0.2:5060", Method::Invite);
    let out = h.feed(
        &response_from(&to_b, 200, "btag", Some(SDP_B)),
        "10.0.0.2:5060",
    );
    assert_eq!(plans(&out), vec![None]);
    assert_eq!(
        m_line(&response_to(&out, "10.0.0.1:5060", 200)),
        "m=audio 30000 RTP/AVP 8"
    );

    // The record keeps the codecs the call was transcoded with; the metric counted it once.
    let bye = in_dialog_from_b(&b_invite, "BYE", 2, "");
    let out = h.feed(&bye, "10.0.0.2:5060");
    let record = record_of(&mut h, &out);
    assert_eq!(
        record.transcoded,
        Some(["PCMA".to_string(), "PCMU".to_string()])
    );
    let mut metrics = String::new();
    h.engine.metrics().render(&mut metrics);
    assert!(
        metrics.contains("tandem_sip_transcoded_calls_total{caller=\"PCMA\",callee=\"PCMU\"} 1"),
        "{metrics}"
    );
}

#[test]
fn early_media_is_transcoded_and_a_final_answer_in_the_callers_codec_relays() {
    let mut h = Harness::new();
    let b_invite = start_call(&mut h, "tc-2");
    // 183 with PCMU: the caller's early media is transcoded, and offered back in PCMA.
    let out = h.feed(
        &response_from(&b_invite, 183, "btag", Some(SDP_PCMU)),
        "10.0.0.2:5060",
    );
    assert_eq!(
        plans(&out),
        vec![Some([
            leg(8, Codec::Pcma, Some(101)),
            leg(0, Codec::Pcmu, Some(101))
        ])]
    );
    let progress = response_to(&out, "10.0.0.1:5060", 183);
    assert_eq!(m_line(&progress), "m=audio 30000 RTP/AVP 8 101");
    // The 200 answers in PCMA after all: relayed as it is, the plan removed.
    let out = h.feed(
        &response_from(&b_invite, 200, "btag", Some(SDP_B)),
        "10.0.0.2:5060",
    );
    assert_eq!(plans(&out), vec![None]);
    assert_eq!(
        m_line(&response_to(&out, "10.0.0.1:5060", 200)),
        "m=audio 30000 RTP/AVP 8"
    );
}

#[test]
fn a_shared_codec_is_relayed_and_an_empty_transcode_list_adds_nothing() {
    let mut h = Harness::new();
    let b_invite = start_call(&mut h, "tc-3");
    let out = h.feed(
        &response_from(&b_invite, 200, "btag", Some(SDP_B)),
        "10.0.0.2:5060",
    );
    assert!(plans(&out).is_empty());
    let bye = in_dialog_from_b(&b_invite, "BYE", 2, "");
    let out = h.feed(&bye, "10.0.0.2:5060");
    assert_eq!(record_of(&mut h, &out).transcoded, None);

    let mut cfg = config();
    cfg.transcode.clear();
    let mut h = harness_with(cfg);
    let b_invite = start_call(&mut h, "tc-4");
    assert_eq!(m_line(&b_invite), "m=audio 30004 RTP/AVP 8 101");
    let mut cfg = config();
    cfg.transcode = vec!["GSM".into()];
    assert!(cfg.validate().unwrap_err().contains("GSM"));

    // A tenant's own list wins over the global one.
    let mut cfg = config();
    cfg.tenants[0].transcode = Some(vec!["G722".into()]);
    cfg.validate().unwrap();
    let mut h = harness_with(cfg);
    let b_invite = start_call(&mut h, "tc-7");
    assert_eq!(m_line(&b_invite), "m=audio 30004 RTP/AVP 8 9 101");
    let mut cfg = config();
    cfg.tenants[0].transcode = Some(vec!["opus".into(), "GSM".into()]);
    assert!(cfg.validate().unwrap_err().contains("sip.tenants: acme"));
}

#[test]
fn a_queued_caller_is_transcoded_to_the_agents_phone_and_to_the_next_agent_after_a_transfer() {
    let mut h = harness_with(cc_config("longest-idle", None));
    register_device(&mut h, "alice");
    register_device(&mut h, "bob");
    agent(&mut h, "alice", AgentAction::Login);
    let (_, out) = queued_call(&mut h, "tq-1", 1);
    let offer = invites_to(&out, device("alice")).pop().expect("alice rung");
    assert_eq!(m_line(&offer), "m=audio 31004 RTP/AVP 8 0 9 96 97 101");
    h.ms += 1000;
    let out = h.feed(
        &response_from(&offer, 200, "atag2", Some(SDP_G722)),
        device("alice"),
    );
    // Events are not mapped: the phone takes none.
    assert_eq!(
        plans(&out),
        vec![Some([leg(8, Codec::Pcma, None), leg(9, Codec::G722, None)])]
    );
    let ok = response_to(&out, "10.0.0.1:5060", 200);
    assert_eq!(m_line(&ok), "m=audio 31000 RTP/AVP 8");

    // Alice sends the caller on to the sales queue; Bob's phone takes PCMA: the caller keeps
    // its PCMA, so nothing is transcoded any more.
    agent(&mut h, "bob", AgentAction::Login);
    h.ms += 5000;
    let refer = in_dialog_from_b(&offer, "REFER", 2, "Refer-To: <sip:3001@127.0.0.1>\r\n");
    let out = h.feed(&refer, device("alice"));
    let to_bob = invites_to(&out, device("bob"))
        .pop()
        .expect("bob offered the caller");
    assert_eq!(m_line(&to_bob), "m=audio 31004 RTP/AVP 8 0 9 96 97 101");
    h.ms += 1000;
    let out = h.feed(
        &response_from(&to_bob, 200, "bobtag", Some(SDP_B)),
        device("bob"),
    );
    assert_eq!(plans(&out), vec![None]);
}

#[test]
fn a_transfer_target_is_planned_against_the_codec_the_caller_kept() {
    let mut h = Harness::new();
    let b_invite = start_call(&mut h, "tc-5");
    answer_call(&mut h, &b_invite);
    let refer = in_dialog_from_b(
        &b_invite,
        "REFER",
        2,
        "Refer-To: <sip:5559999@127.0.0.1>\r\n",
    );
    let out = h.feed(&refer, "10.0.0.2:5060");
    let c_invite = request_to(&out, "10.0.0.2:5060", Method::Invite);
    assert_eq!(m_line(&c_invite), "m=audio 30004 RTP/AVP 8 0 9 96 97 101");
    // The target takes G.722 only: the caller, answered in PCMA, is transcoded to it.
    let out = h.feed(
        &response_from(&c_invite, 200, "ctag", Some(SDP_G722)),
        "10.0.0.2:5060",
    );
    assert_eq!(
        plans(&out),
        vec![Some([leg(8, Codec::Pcma, None), leg(9, Codec::G722, None)])]
    );
}

#[test]
fn a_side_that_shares_the_answerers_codec_keeps_its_own_payload_type_for_a_later_plan() {
    let mut h = Harness::new();
    // The caller offers Opus as 111; B answers Opus as 100: no transcoding, relayed as it is.
    let opus_offer = SDP_A
        .replace("RTP/AVP 8 101", "RTP/AVP 111 101")
        .replace("a=rtpmap:8 PCMA/8000", "a=rtpmap:111 opus/48000/2");
    let b_invite = start_call_offering(&mut h, "z9hG4bKo1", "tc-6", &opus_offer, [30000, 30004], 1);
    let opus_answer = SDP_B
        .replace("RTP/AVP 8", "RTP/AVP 100")
        .replace("a=rtpmap:8 PCMA/8000", "a=rtpmap:100 opus/48000/2");
    let out = h.feed(
        &response_from(&b_invite, 200, "btag", Some(&opus_answer)),
        "10.0.0.2:5060",
    );
    assert!(plans(&out).is_empty());
    // B transfers the caller to a PCMA-only target: the caller's leg is planned as its 111.
    let refer = in_dialog_from_b(
        &b_invite,
        "REFER",
        2,
        "Refer-To: <sip:5559999@127.0.0.1>\r\n",
    );
    let out = h.feed(&refer, "10.0.0.2:5060");
    let c_invite = request_to(&out, "10.0.0.2:5060", Method::Invite);
    let out = h.feed(
        &response_from(&c_invite, 200, "ctag", Some(SDP_B)),
        "10.0.0.2:5060",
    );
    assert_eq!(
        plans(&out),
        vec![Some([
            leg(111, Codec::Opus, None),
            leg(8, Codec::Pcma, None)
        ])]
    );
}

/// The hold/release requests for relaying to a leg, in order.
fn holds(actions: &[Action]) -> Vec<(LegIndex, bool)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Media(MediaOp::HoldRelay { leg, held, .. }) => Some((*leg, *held)),
            _ => None,
        })
        .collect()
}

/// The caller's INVITE through to the INVITE sent to B; returns every action on the way.
fn call_until_b_invite(h: &mut Harness, call_id: &str) -> Vec<Action> {
    let out = h.feed(
        &invite("z9hG4bKh1", call_id, "5551234", SDP_A),
        "10.0.0.1:5060",
    );
    let call = out
        .iter()
        .find_map(|a| match a {
            Action::Media(MediaOp::Create { call, .. }) => Some(*call),
            _ => None,
        })
        .expect("media requested");
    let session = SessionId {
        core: 0,
        slot: 1,
        generation: 1,
    };
    let now = h.now();
    h.engine
        .media_created(now, call, Ok((session, [30000, 30004])));
    h.engine.drain().collect()
}

#[test]
fn the_caller_hears_nothing_from_the_callee_until_its_answer_is_planned() {
    // A phone may start media with its 200 OK, in a codec we added that the caller lacks:
    // relaying to the caller is held from the offer until the answer's plan is out.
    let mut h = Harness::new();
    let out = call_until_b_invite(&mut h, "th-1");
    assert_eq!(holds(&out), vec![(LegIndex::A, true)]);
    let b_invite = request_to(&out, "10.0.0.2:5060", Method::Invite);
    let out = h.feed(
        &response_from(&b_invite, 200, "btag", Some(SDP_PCMU)),
        "10.0.0.2:5060",
    );
    let order: Vec<&str> = out
        .iter()
        .filter_map(|a| match a {
            Action::Media(MediaOp::SetCodecs { .. }) => Some("plan"),
            Action::Media(MediaOp::HoldRelay { held: false, .. }) => Some("release"),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["plan", "release"]);
    assert_eq!(holds(&out), vec![(LegIndex::A, false)]);
    // A re-INVITE later holds nothing: media already flows in settled codecs.
    let a_tag = response_to(&out, "10.0.0.1:5060", 200)
        .to_tag()
        .unwrap()
        .to_string();
    h.ms += 1000;
    let reoffer = SDP_A.replace("1 1 IN", "1 2 IN");
    let out = h.feed(
        &reinvite_from_a("th-1", &a_tag, 2, &reoffer),
        "10.0.0.1:5060",
    );
    assert!(holds(&out).is_empty(), "{:?}", holds(&out));

    // Early media releases at the 183; the 200 after it has nothing left to release.
    let mut h = Harness::new();
    let out = call_until_b_invite(&mut h, "th-2");
    let b_invite = request_to(&out, "10.0.0.2:5060", Method::Invite);
    let out = h.feed(
        &response_from(&b_invite, 183, "btag", Some(SDP_PCMU)),
        "10.0.0.2:5060",
    );
    assert_eq!(holds(&out), vec![(LegIndex::A, false)]);
    let out = h.feed(
        &response_from(&b_invite, 200, "btag", Some(SDP_PCMU)),
        "10.0.0.2:5060",
    );
    assert!(holds(&out).is_empty());

    // Nothing added to the offer, nothing held.
    let mut cfg = config();
    cfg.transcode.clear();
    let mut h = harness_with(cfg);
    let out = call_until_b_invite(&mut h, "th-3");
    assert!(holds(&out).is_empty());
}

#[test]
fn a_callers_tones_go_as_events_to_a_transcoded_callee_that_took_telephone_event() {
    use tandem_dataplane::api::{DtmfOptions, InbandAudio, TelephoneEvents};
    // The caller sends PCMA and no telephone-event (its keys are tones); the callee answers
    // one of the codecs we added, Opus, with telephone-event/48000.
    let caller = "v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n";
    let callee = "v=0\r\no=b 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 96 99\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:99 telephone-event/48000\r\n";
    let mut h = Harness::new();
    let b_invite = start_call_with(&mut h, "tones-out", caller);
    // The offer carries telephone-event beside the codecs we added, in both their clocks.
    assert_eq!(m_line(&b_invite), "m=audio 30004 RTP/AVP 8 0 9 96 98 99");
    let offer = b_invite.body_str().unwrap();
    for map in [
        "a=rtpmap:98 telephone-event/8000",
        "a=rtpmap:99 telephone-event/48000",
    ] {
        assert!(offer.contains(map), "{map} in {offer}");
    }
    let out = h.feed(
        &response_from(&b_invite, 200, "btag", Some(callee)),
        "10.0.0.2:5060",
    );
    // The plan maps no events (the caller has none); the callee's are made from tones.
    assert_eq!(
        plans(&out),
        vec![Some([
            leg(8, Codec::Pcma, None),
            leg(96, Codec::Opus, None)
        ])]
    );
    let armed = dtmf_set(&out);
    let caller_tones_as_events = DtmfOptions {
        inband: Some(InbandAudio {
            payload_type: 8,
            codec: Codec::Pcma,
        }),
        events_to_other: Some(TelephoneEvents {
            payload_type: 99,
            clock_hz: 48_000,
        }),
        ..DtmfOptions::default()
    };
    assert_eq!(armed, vec![(LegIndex::A, caller_tones_as_events)]);

    // Relayed (the callee answers the caller's PCMA, with telephone-event): the caller's
    // tones pass as they are; the callee's events become tones for the caller.
    let mut h = Harness::new();
    let b_invite = start_call_with(&mut h, "tones-relayed", caller);
    let out = h.feed(
        &response_from(&b_invite, 200, "btag", Some(SDP_A)),
        "10.0.0.2:5060",
    );
    assert!(plans(&out).iter().all(Option::is_none), "{:?}", plans(&out));
    let armed = dtmf_set(&out);
    assert_eq!(armed.len(), 1, "{armed:?}");
    assert_eq!(armed[0].0, LegIndex::B);
    assert!(armed[0].1.tones_to_other.is_some() && armed[0].1.events_to_other.is_none());
}
