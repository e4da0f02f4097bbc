//! The handler against a deterministic fake data plane: the exact exchange Kamailio 5.6 makes,
//! the peers kit's client, JSON, retransmissions, and hostile input.

use super::handler::{Media, NgHandler};
use crate::bencode::{self, Value};
use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;
use tandem_dataplane::api::{
    Codec, CoreError, DtmfKeys, DtmfOptions, DtmfSend, DtmfVia, InbandAudio, LegCodec, LegIndex,
    LegParams, SessionId, SessionStats, TelephoneEvents,
};

#[derive(Default)]
struct FakeMedia {
    state: Mutex<FakeState>,
}

#[derive(Default)]
struct FakeState {
    next_slot: u32,
    live: Vec<(SessionId, [LegParams; 2])>,
    budget: Option<usize>,
    created: usize,
    plans: Vec<(SessionId, Option<[LegCodec; 2]>)>,
    dtmf_options: Vec<(SessionId, LegIndex, DtmfOptions)>,
    dtmf_sent: Vec<(SessionId, LegIndex, DtmfSend)>,
}

impl Media for FakeMedia {
    async fn create(&self, a: LegParams, b: LegParams) -> Result<(SessionId, [u16; 2]), CoreError> {
        let mut s = self.state.lock().unwrap();
        if s.budget.is_some_and(|b| s.live.len() >= b) {
            return Err(CoreError::LoadLimit);
        }
        let id = SessionId {
            core: 0,
            slot: s.next_slot,
            generation: 1,
        };
        s.next_slot += 1;
        s.created += 1;
        s.live.push((id, [a, b]));
        let base = 30000 + 4 * id.slot as u16;
        Ok((id, [base, base + 2]))
    }
    async fn update(
        &self,
        id: SessionId,
        leg: LegIndex,
        params: LegParams,
    ) -> Result<(), CoreError> {
        let mut s = self.state.lock().unwrap();
        let e = s
            .live
            .iter_mut()
            .find(|(i, _)| *i == id)
            .ok_or(CoreError::UnknownSession)?;
        e.1[leg as usize] = params;
        Ok(())
    }
    async fn delete(&self, id: SessionId) -> Result<SessionStats, CoreError> {
        let mut s = self.state.lock().unwrap();
        let i = s
            .live
            .iter()
            .position(|(i, _)| *i == id)
            .ok_or(CoreError::UnknownSession)?;
        s.live.remove(i);
        let mut stats = SessionStats::default();
        stats.legs[0].rtp.packets = 246;
        stats.legs[0].rtp.bytes = 59632;
        Ok(stats)
    }
    async fn query(&self, id: SessionId) -> Result<SessionStats, CoreError> {
        let s = self.state.lock().unwrap();
        s.live
            .iter()
            .find(|(i, _)| *i == id)
            .ok_or(CoreError::UnknownSession)?;
        Ok(SessionStats::default())
    }
    async fn set_codecs(
        &self,
        id: SessionId,
        codecs: Option<[LegCodec; 2]>,
    ) -> Result<(), CoreError> {
        let mut s = self.state.lock().unwrap();
        s.live
            .iter()
            .find(|(i, _)| *i == id)
            .ok_or(CoreError::UnknownSession)?;
        s.plans.push((id, codecs));
        Ok(())
    }
    async fn set_dtmf(
        &self,
        id: SessionId,
        leg: LegIndex,
        options: DtmfOptions,
    ) -> Result<(), CoreError> {
        self.state
            .lock()
            .unwrap()
            .dtmf_options
            .push((id, leg, options));
        Ok(())
    }
    async fn send_dtmf(
        &self,
        id: SessionId,
        leg: LegIndex,
        send: DtmfSend,
    ) -> Result<(), CoreError> {
        self.state.lock().unwrap().dtmf_sent.push((id, leg, send));
        Ok(())
    }
    fn advertised_address(&self) -> IpAddr {
        "127.0.0.1".parse().unwrap()
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

thread_local! {
    static NOW: RefCell<Instant> = RefCell::new(Instant::now());
}

fn send(h: &mut NgHandler, m: &FakeMedia, wire: &[u8]) -> Option<Vec<u8>> {
    let now = NOW.with(|n| *n.borrow());
    block_on(h.handle(now, 1_795_342_826_000_000, wire, m)).reply
}

fn reply_dict(reply: &[u8]) -> Value<'static> {
    let space = reply.iter().position(|&b| b == b' ').unwrap();
    bencode::decode(&reply[space + 1..]).unwrap().into_owned()
}

/// Sends `wire`, which must be answered `result: ok`.
fn assert_ok(h: &mut NgHandler, m: &FakeMedia, wire: &[u8]) {
    assert_eq!(
        field(&reply_dict(&send(h, m, wire).unwrap()), "result"),
        "ok"
    );
}

fn field(v: &Value<'_>, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The three requests of `shared/peers/ng_kamailio_trace.txt`, byte for byte.
const OFFER: &[u8] = b"0_19334_58 d8:supportsl10:load limite3:sdp189:v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 17000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-11,16\r\n3:ICE6:remove7:replacel6:origin18:session-connectione7:call-id17:1-22163@127.0.0.113:received-froml3:IP49:127.0.0.1e8:from-tag15:22163SIPpTag0917:command5:offere";
const ANSWER: &[u8] = b"0_19334_59 d8:supportsl10:load limite3:sdp186:v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 16000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n3:ICE6:remove7:replacel6:origin18:session-connectione7:call-id17:1-22163@127.0.0.113:received-froml3:IP49:127.0.0.1e8:from-tag15:22163SIPpTag0916:to-tag15:22116SIPpTag0117:command6:answere";
const DELETE: &[u8] = b"0_19334_60 d8:supportsl10:load limite7:call-id17:1-22163@127.0.0.113:received-froml3:IP49:127.0.0.1e8:from-tag15:22163SIPpTag0917:command6:deletee";

#[test]
fn kamailio_trace_offer_answer_delete() {
    let (mut h, m) = (NgHandler::new(100, false), FakeMedia::default());
    let r = reply_dict(&send(&mut h, &m, OFFER).unwrap());
    assert_eq!(field(&r, "result"), "ok");
    let sdp = field(&r, "sdp");
    // Offer goes to the callee: it must send to leg B's port (30002), RTCP on the next.
    assert!(sdp.contains("m=audio 30002 RTP/AVP 8 101\r\n"), "{sdp}");
    assert!(sdp.contains("a=sendrecv\r\na=rtcp:30003\r\n"), "{sdp}");
    {
        let s = m.state.lock().unwrap();
        assert_eq!(s.live[0].1[0].rtp, Some("127.0.0.1:17000".parse().unwrap()));
    }
    let r = reply_dict(&send(&mut h, &m, ANSWER).unwrap());
    assert!(field(&r, "sdp").contains("m=audio 30000 RTP/AVP 8 101\r\n"));
    {
        let s = m.state.lock().unwrap();
        assert_eq!(s.live[0].1[1].rtp, Some("127.0.0.1:16000".parse().unwrap()));
    }
    let r = reply_dict(&send(&mut h, &m, DELETE).unwrap());
    assert_eq!(field(&r, "result"), "ok");
    let rtp = r.get("totals").and_then(|t| t.get("RTP")).unwrap();
    assert_eq!(rtp.get("packets").and_then(Value::as_int), Some(246));
    assert!(r
        .get("tags")
        .and_then(|t| t.get("22116SIPpTag011"))
        .is_some());
    assert_eq!(h.calls(), 0);
    assert!(m.state.lock().unwrap().live.is_empty());
}

#[test]
fn retransmission_gets_the_cached_reply_without_a_second_session() {
    let (mut h, m) = (NgHandler::new(100, false), FakeMedia::default());
    let first = send(&mut h, &m, OFFER).unwrap();
    let again = send(&mut h, &m, OFFER).unwrap();
    assert_eq!(first, again);
    assert_eq!(m.state.lock().unwrap().created, 1);
    // The same offer under a new cookie (a re-INVITE) updates rather than creates.
    let mut reoffer = b"other_cookie".to_vec();
    reoffer.extend_from_slice(&OFFER[10..]);
    let r = reply_dict(&send(&mut h, &m, &reoffer).unwrap());
    assert!(field(&r, "sdp").contains("m=audio 30002 "));
    assert_eq!(m.state.lock().unwrap().created, 1);
}

#[test]
fn load_limit_is_reported_the_way_the_client_understands() {
    let (mut h, m) = (NgHandler::new(100, false), FakeMedia::default());
    m.state.lock().unwrap().budget = Some(0);
    let r = reply_dict(&send(&mut h, &m, OFFER).unwrap());
    assert_eq!(field(&r, "result"), "error");
    assert_eq!(field(&r, "error-reason"), "load limit");
    assert_eq!(h.calls(), 0);
}

#[test]
fn json_requests_get_json_replies() {
    let (mut h, m) = (NgHandler::new(100, false), FakeMedia::default());
    let reply = send(&mut h, &m, br#"j1 {"command":"ping"}"#).unwrap();
    assert_eq!(reply, br#"j1 {"result":"pong"}"#);
    let offer = br#"j2 {"command":"offer","call-id":"x","from-tag":"a","sdp":"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\n"}"#;
    let reply = send(&mut h, &m, offer).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&reply[3..]).unwrap();
    assert_eq!(json["result"], "ok");
    assert!(json["sdp"]
        .as_str()
        .unwrap()
        .contains("m=audio 30002 RTP/AVP 0"));
}

#[test]
fn hostile_requests_get_errors_not_panics() {
    let (mut h, m) = (NgHandler::new(100, false), FakeMedia::default());
    assert_eq!(send(&mut h, &m, b"no-space-no-cookie"), None);
    assert_eq!(send(&mut h, &m, b" d7:command4:pinge"), None);
    let huge_sdp = format!(
        "d7:command5:offer7:call-id1:x8:from-tag1:a3:sdp{}:{}e",
        70_000,
        "v".repeat(70_000)
    );
    for (i, wire) in [
        b"d7:command5:offere".to_vec(),
        b"d7:command6:answer7:call-id7:unknown8:from-tag1:a6:to-tag1:b3:sdp4:v=0\ne".to_vec(),
        b"d7:command6:delete7:call-id7:unknowne".to_vec(),
        b"d7:commandi1ee".to_vec(),
        b"d7:command5:offer7:call-id1:x8:from-tag1:a3:sdp9:garbage!!e".to_vec(),
        b"d7:command5:offer7:call-id1:x8:from-tag1:ae".to_vec(),
        b"l4:spame".to_vec(),
        b"d3:cmd".to_vec(),
        huge_sdp.into_bytes(),
    ]
    .into_iter()
    .enumerate()
    {
        let mut d = format!("c{i} ").into_bytes();
        d.extend_from_slice(&wire);
        let r = reply_dict(&send(&mut h, &m, &d).unwrap());
        assert_eq!(field(&r, "result"), "error", "case {i}");
        assert!(!field(&r, "error-reason").is_empty(), "case {i}");
    }
    assert_eq!(h.calls(), 0);
}

#[test]
fn the_peers_kit_client_flow_with_query_list_and_statistics() {
    let (mut h, m) = (NgHandler::new(100, false), FakeMedia::default());
    let _ = send(&mut h, &m, OFFER).unwrap();
    let r = reply_dict(
        &send(
            &mut h,
            &m,
            b"q1 d7:command5:query7:call-id17:1-22163@127.0.0.1e",
        )
        .unwrap(),
    );
    assert_eq!(field(&r, "result"), "ok");
    assert!(r.get("totals").is_some());
    let r = reply_dict(&send(&mut h, &m, b"l1 d7:command4:liste").unwrap());
    assert_eq!(
        r.get("calls").and_then(Value::as_list).map(|l| l.len()),
        Some(1)
    );
    let r = reply_dict(&send(&mut h, &m, b"s1 d7:command10:statisticse").unwrap());
    assert_eq!(field(&r, "result"), "ok");
    // A core-side timeout removes the call.
    let id = m.state.lock().unwrap().live[0].0;
    block_on(h.timed_out(id, &m));
    assert_eq!(h.calls(), 0);
}

proptest::proptest! {
    #[test]
    fn random_datagrams_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        let (mut h, m) = (NgHandler::new(10, false), FakeMedia::default());
        let _ = send(&mut h, &m, &bytes);
        let mut framed = b"c ".to_vec();
        framed.extend_from_slice(&bytes);
        let _ = send(&mut h, &m, &framed);
    }
}

fn json_reply(h: &mut NgHandler, m: &FakeMedia, body: serde_json::Value) -> serde_json::Value {
    // A cookie per request: the reply cache answers a repeated cookie from memory.
    static COOKIE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let cookie = COOKIE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let wire = format!("c{cookie} {body}");
    let reply = send(h, m, wire.as_bytes()).unwrap();
    let space = reply.iter().position(|&b| b == b' ').unwrap();
    serde_json::from_slice(&reply[space + 1..]).unwrap()
}

#[test]
fn codec_transcode_offers_opus_and_the_opus_answer_sets_the_plan() {
    let (mut h, m) = (NgHandler::new(100, false), FakeMedia::default());
    let offer_sdp = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
        m=audio 4000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n";
    let r = json_reply(
        &mut h,
        &m,
        serde_json::json!({"command": "offer", "call-id": "t1", "from-tag": "a",
            "sdp": offer_sdp, "codec": {"transcode": ["opus"]}}),
    );
    let sdp = r["sdp"].as_str().unwrap();
    assert!(
        sdp.contains("m=audio 30002 RTP/AVP 8 96 97 101\r\n"),
        "{sdp}"
    );
    assert!(sdp.contains("a=rtpmap:96 opus/48000/2\r\n"), "{sdp}");
    // The callee picks Opus.
    let answer_sdp = "v=0\r\no=- 2 2 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n\
        m=audio 5000 RTP/AVP 96 97\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:97 telephone-event/48000\r\n";
    let r = json_reply(
        &mut h,
        &m,
        serde_json::json!({"command": "answer", "call-id": "t1", "from-tag": "a", "to-tag": "b",
            "sdp": answer_sdp}),
    );
    let sdp = r["sdp"].as_str().unwrap();
    assert!(sdp.contains("m=audio 30000 RTP/AVP 8 101\r\n"), "{sdp}");
    assert!(
        sdp.contains("a=rtpmap:8 PCMA/8000\r\n") && !sdp.contains("opus"),
        "{sdp}"
    );
    let plans = m.state.lock().unwrap().plans.clone();
    assert_eq!(plans.len(), 1);
    let [a, b] = plans[0].1.unwrap();
    assert_eq!(
        (a.payload_type, a.codec, a.event_payload_type),
        (8, Codec::Pcma, Some(101))
    );
    assert_eq!(
        (b.payload_type, b.codec, b.event_payload_type),
        (96, Codec::Opus, Some(97))
    );

    // A re-INVITE whose answer is in the offerer's codec takes the plan away.
    json_reply(
        &mut h,
        &m,
        serde_json::json!({"command": "offer", "call-id": "t1", "from-tag": "a",
            "sdp": offer_sdp, "codec": {"transcode": ["opus"]}}),
    );
    let pcma = answer_sdp.replace("RTP/AVP 96 97", "RTP/AVP 8");
    let r = json_reply(
        &mut h,
        &m,
        serde_json::json!({"command": "answer", "call-id": "t1", "from-tag": "a", "to-tag": "b",
            "sdp": pcma}),
    );
    assert!(r["sdp"].as_str().unwrap().contains("RTP/AVP 8\r\n"));
    let plans = m.state.lock().unwrap().plans.clone();
    assert_eq!(plans.len(), 2);
    assert_eq!(plans[1].1, None);
}

#[test]
fn codec_strip_flag_removes_a_codec_and_calls_without_codec_keys_set_no_plan() {
    let (mut h, m) = (NgHandler::new(100, false), FakeMedia::default());
    let r = json_reply(
        &mut h,
        &m,
        serde_json::json!({"command": "offer", "call-id": "t2", "from-tag": "a",
            "flags": ["codec-strip-PCMU"],
            "sdp": "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0 8\r\n"}),
    );
    let sdp = r["sdp"].as_str().unwrap();
    assert!(sdp.contains("m=audio 30002 RTP/AVP 8\r\n"), "{sdp}");
    let r = reply_dict(&send(&mut h, &m, OFFER).unwrap());
    assert_eq!(field(&r, "result"), "ok");
    send(&mut h, &m, ANSWER).unwrap();
    assert!(m.state.lock().unwrap().plans.is_empty());
}

/// A bencoded request with the Kamailio trace's call-id and the given extra pairs.
fn dtmf_request(cookie: &str, command: &str, extra: &[(&str, Value<'static>)]) -> Vec<u8> {
    let mut pairs = vec![
        ("command", Value::string(command.to_string())),
        ("call-id", Value::str("1-22163@127.0.0.1")),
    ];
    pairs.extend(extra.iter().cloned());
    let mut wire = format!("{cookie} ").into_bytes();
    bencode::encode_into(&crate::bencode::dict(pairs), &mut wire);
    wire
}

#[test]
fn play_dtmf_sends_the_key_to_the_other_participant_the_way_its_sdp_allows() {
    let (mut h, m) = (NgHandler::new(100, false), FakeMedia::default());
    send(&mut h, &m, OFFER).unwrap();
    send(&mut h, &m, ANSWER).unwrap();
    let caller = ("from-tag", Value::str("22163SIPpTag091"));
    // The caller "presses" 5: the callee (leg B) hears it as events on its 101.
    let wire = dtmf_request(
        "d1",
        "play DTMF",
        &[caller.clone(), ("code", Value::str("5"))],
    );
    let r = reply_dict(&send(&mut h, &m, &wire).unwrap());
    assert_eq!(field(&r, "result"), "ok", "{}", field(&r, "error-reason"));
    // The callee presses '#' (code 11), 120 ms at -20 dB, with a pause of 50 (raised to 100).
    let callee = ("from-tag", Value::str("22116SIPpTag011"));
    let wire = dtmf_request(
        "d2",
        "play DTMF",
        &[
            callee,
            ("code", Value::Int(11)),
            ("duration", Value::Int(120)),
            ("volume", Value::Int(-20)),
            ("pause", Value::str("50")),
        ],
    );
    assert_ok(&mut h, &m, &wire);
    let sent = m.state.lock().unwrap().dtmf_sent.clone();
    let events = DtmfVia::Events {
        payload_type: 101,
        clock_hz: 8000,
    };
    let id = sent[0].0;
    assert_eq!(
        sent,
        [
            (
                id,
                LegIndex::B,
                DtmfSend {
                    keys: DtmfKeys::new("5").unwrap(),
                    duration_ms: 250,
                    pause_ms: 100,
                    volume: 8,
                    via: events,
                }
            ),
            (
                id,
                LegIndex::A,
                DtmfSend {
                    keys: DtmfKeys::new("#").unwrap(),
                    duration_ms: 120,
                    pause_ms: 100,
                    volume: 20,
                    via: events,
                }
            ),
        ]
    );
    for (i, (extra, error)) in [
        (vec![caller.clone()], "No DTMF code in message"),
        (
            vec![caller.clone(), ("code", Value::Int(16))],
            "'code' must be 0-15 or one of 0-9, *, #, A-D",
        ),
        (
            vec![
                ("from-tag", Value::str("nobody")),
                ("code", Value::str("1")),
            ],
            "Unknown from-tag",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let wire = dtmf_request(&format!("e{i}"), "play DTMF", &extra);
        let r = reply_dict(&send(&mut h, &m, &wire).unwrap());
        assert_eq!(field(&r, "error-reason"), error);
    }
}

/// The trace's answer without its telephone-event (PCMA alone), the SDP's length fixed.
fn answer_without_telephone_event() -> String {
    let text = String::from_utf8(ANSWER.to_vec()).unwrap();
    let cut = text
        .replace(
            "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n",
            "",
        )
        .replace("RTP/AVP 8 101", "RTP/AVP 8");
    let removed = ANSWER.len() - cut.len();
    cut.replace("3:sdp186:", &format!("3:sdp{}:", 186 - removed))
}

#[test]
fn a_participant_without_telephone_event_hears_tones() {
    let (mut h, m) = (NgHandler::new(100, false), FakeMedia::default());
    send(&mut h, &m, OFFER).unwrap();
    // The callee answers PCMA alone.
    let wire = answer_without_telephone_event().into_bytes();
    assert_ok(&mut h, &m, &wire);
    let caller = ("from-tag", Value::str("22163SIPpTag091"));
    let wire = dtmf_request("t1", "play DTMF", &[caller, ("digit", Value::str("*"))]);
    assert_ok(&mut h, &m, &wire);
    let sent = m.state.lock().unwrap().dtmf_sent.clone();
    assert_eq!(
        sent[0].2.via,
        DtmfVia::Tones {
            payload_type: 8,
            codec: Codec::Pcma
        }
    );
    assert_eq!(sent[0].1, LegIndex::B);
}

#[test]
fn with_inject_dtmf_events_and_tones_are_translated_between_participants_with_and_without_telephone_event(
) {
    let (mut h, m) = (NgHandler::new(100, false), FakeMedia::default());
    send(&mut h, &m, OFFER).unwrap();
    // The callee answers PCMA alone, with rtpengine's `inject DTMF` flag.
    let plain = answer_without_telephone_event();
    let wire = plain.replace("7:call-id", "5:flagsl11:inject DTMFe7:call-id");
    assert_eq!(
        field(
            &reply_dict(&send(&mut h, &m, wire.as_bytes()).unwrap()),
            "result"
        ),
        "ok"
    );
    let got = m.state.lock().unwrap().dtmf_options.clone();
    let caller_events_as_tones = DtmfOptions {
        event_payload_type: Some(101),
        tones_to_other: Some(InbandAudio {
            payload_type: 8,
            codec: Codec::Pcma,
        }),
        ..DtmfOptions::default()
    };
    // And the other way: the callee's keys come as tones in its PCMA; the caller takes
    // telephone-event/8000 on 101.
    let callee_tones_as_events = DtmfOptions {
        inband: Some(InbandAudio {
            payload_type: 8,
            codec: Codec::Pcma,
        }),
        events_to_other: Some(TelephoneEvents {
            payload_type: 101,
            clock_hz: 8000,
        }),
        ..DtmfOptions::default()
    };
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!((got[0].1, got[0].2), (LegIndex::A, caller_events_as_tones));
    assert_eq!((got[1].1, got[1].2), (LegIndex::B, callee_tones_as_events));
    // Without the flag nothing is translated.
    let (mut h, m) = (NgHandler::new(100, false), FakeMedia::default());
    send(&mut h, &m, OFFER).unwrap();
    send(&mut h, &m, plain.as_bytes()).unwrap();
    assert!(m.state.lock().unwrap().dtmf_options.is_empty());
}

/// `wire` (an offer or answer) with `from` replaced by `to` in its SDP, the SDP's length
/// prefix fixed.
fn sdp_edited(wire: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8(wire.to_vec()).unwrap();
    let start = text.find("3:sdp").unwrap() + 5;
    let colon = start + text[start..].find(':').unwrap();
    let len: usize = text[start..colon].parse().unwrap();
    let sdp = &text[colon + 1..colon + 1 + len];
    let edited = sdp.replace(from, to);
    assert_ne!(edited, sdp, "{from} not in the SDP");
    format!(
        "{}{}:{}{}",
        &text[..start],
        edited.len(),
        edited,
        &text[colon + 1 + len..]
    )
    .into_bytes()
}

#[test]
fn block_dtmf_hears_tones_in_g722_and_opus_too() {
    for (rtpmap, pt, codec) in [
        ("9 G722/8000", 9, Codec::G722),
        ("111 opus/48000/2", 111, Codec::Opus),
    ] {
        let (mut h, m) = (NgHandler::new(100, false), FakeMedia::default());
        let audio = |wire: &[u8]| {
            let wire = sdp_edited(wire, "RTP/AVP 8 101", &format!("RTP/AVP {pt} 101"));
            sdp_edited(&wire, "8 PCMA/8000", rtpmap)
        };
        send(&mut h, &m, &audio(OFFER)).unwrap();
        send(&mut h, &m, &audio(ANSWER)).unwrap();
        let wire = dtmf_request("b1", "block DTMF", &[]);
        assert_ok(&mut h, &m, &wire);
        let got = m.state.lock().unwrap().dtmf_options.clone();
        let blocked = DtmfOptions {
            event_payload_type: Some(101),
            inband: Some(InbandAudio {
                payload_type: pt,
                codec,
            }),
            block: true,
            ..DtmfOptions::default()
        };
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got.iter().all(|(_, _, o)| *o == blocked), "{got:?}");
    }
}

#[test]
fn block_dtmf_for_one_participant_or_both_and_unblock() {
    let (mut h, m) = (NgHandler::new(100, false), FakeMedia::default());
    send(&mut h, &m, OFFER).unwrap();
    send(&mut h, &m, ANSWER).unwrap();
    let caller = ("from-tag", Value::str("22163SIPpTag091"));
    let directional = ("flags", Value::List(vec![Value::str("directional")]));
    let wire = dtmf_request("b1", "block DTMF", &[caller, directional]);
    assert_ok(&mut h, &m, &wire);
    let wire = dtmf_request("b2", "unblock DTMF", &[]);
    assert_ok(&mut h, &m, &wire);
    let got = m.state.lock().unwrap().dtmf_options.clone();
    let blocked = DtmfOptions {
        event_payload_type: Some(101),
        inband: Some(InbandAudio {
            payload_type: 8,
            codec: Codec::Pcma,
        }),
        block: true,
        tones_to_other: None,
        events_to_other: None,
    };
    let unblocked = DtmfOptions {
        event_payload_type: Some(101),
        inband: None,
        block: false,
        tones_to_other: None,
        events_to_other: None,
    };
    let id = got[0].0;
    assert_eq!(
        got,
        [
            (id, LegIndex::A, blocked),
            (id, LegIndex::A, unblocked),
            (id, LegIndex::B, unblocked)
        ]
    );
    let wire = dtmf_request("b3", "block DTMF", &[]);
    let wire = String::from_utf8(wire)
        .unwrap()
        .replace("1-22163", "9-99999");
    let r = reply_dict(&send(&mut h, &m, wire.as_bytes()).unwrap());
    assert_eq!(field(&r, "error-reason"), "Call-ID not found");
}
