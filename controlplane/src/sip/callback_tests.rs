//! Queued callbacks through the engine with simulated time: the caller presses the queue's
//! callback key and is hung up, the ACD reserves an agent, Tandem dials the customer, rings
//! the agent once the customer answers, and retries customers who are busy or do not answer.

use super::queue::{
    acd_events, agent, cc_config, device, invites_to, kinds, queued_call, register_device,
};
use super::*;
use crate::sip::queues::{AcdOp, AcdReply, AgentAction};

const CUSTOMER: &str = "10.0.0.7:5060";
const SDP_C: &str = "v=0\r\no=c 1 1 IN IP4 10.0.0.7\r\ns=-\r\nc=IN IP4 10.0.0.7\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

fn session(slot: u32) -> SessionId {
    SessionId {
        core: 0,
        slot,
        generation: 1,
    }
}

/// `support` with callback key 1, `attempts` tries 5 s apart, 10 s each; the caller's number
/// (its From user, `caller`) routes to the customer's phone. Alice's phone is registered.
fn harness(attempts: u32) -> Harness {
    let mut h = harness_with(callback_config(attempts));
    register_device(&mut h, "alice");
    h
}

fn callback_config(attempts: u32) -> SipConfig {
    let mut cfg = cc_config("longest-idle", None);
    cfg.queues[0].callback_key = Some("1".into());
    cfg.queue_callback_attempts = attempts;
    cfg.queue_callback_retry_s = 5;
    cfg.queue_callback_dial_timeout_s = 10;
    cfg.routes.insert(
        0,
        RouteConfig {
            tenant: "acme".into(),
            pattern: "caller".into(),
            target: format!("uri:sip:customer@{CUSTOMER}"),
        },
    );
    cfg.validate().unwrap();
    cfg
}

fn created(actions: &[Action]) -> Option<u64> {
    actions.iter().find_map(|a| match a {
        Action::Media(MediaOp::Create { call, .. }) => Some(*call),
        _ => None,
    })
}

fn deleted(actions: &[Action]) -> Option<u64> {
    actions.iter().find_map(|a| match a {
        Action::Media(MediaOp::Delete { call, .. }) => Some(*call),
        _ => None,
    })
}

fn record(h: &mut Harness, call: u64) -> Box<super::super::b2bua::CallRecord> {
    h.engine.media_deleted(call, None);
    h.engine
        .drain()
        .find_map(|a| match a {
            Action::Event(SipEvent::CallEnded(r)) => Some(r),
            _ => None,
        })
        .expect("call record")
}

fn to(actions: &[Action], addr: &str) -> Vec<Message> {
    sent(actions)
        .into_iter()
        .filter(|(to, _)| to.to_string() == addr)
        .map(|(_, m)| m)
        .collect()
}

fn ack_from_caller(ok: &Message) -> Vec<u8> {
    format!(
        "ACK sip:tandem@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKack1\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        ok.get("From").unwrap(),
        ok.get("To").unwrap(),
        ok.call_id()
    )
    .into_bytes()
}

/// A caller waits in `support` (nobody logged in) and presses 1 after 4 s; it is answered,
/// and hung up when it ACKs. Returns the caller's call.
fn caller_requests_callback(h: &mut Harness) -> u64 {
    let (call, _) = queued_call(h, "cb-1", 1);
    h.ms += 4000;
    let now = h.now();
    h.engine.media_dtmf(now, session(1), LegIndex::A, '1');
    let out: Vec<Action> = h.engine.drain().collect();
    assert_eq!(kinds(&out), vec!["callback_requested"]);
    let requested = acd_events(&out).pop().unwrap();
    assert_eq!(requested.detail["wait_ms"], 4000);
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Media(MediaOp::StopPlay {
            leg: LegIndex::A,
            ..
        })
    )));
    let msgs = to(&out, "10.0.0.1:5060");
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    let ok = &msgs[0];
    assert_eq!(ok.status(), Some(200));
    assert!(ok.body_str().unwrap().contains("m=audio 31000 "));
    // RFC 3261 §15: the BYE waits for the ACK.
    let out = h.feed(&ack_from_caller(ok), "10.0.0.1:5060");
    let bye = to(&out, "10.0.0.1:5060");
    assert_eq!(bye.len(), 1);
    assert_eq!(bye[0].method(), Some(&Method::Bye));
    assert_eq!(deleted(&out), Some(call));
    let r = record(h, call);
    assert_eq!(r.ended_by, "callback");
    assert_eq!(r.disposition, Disposition::Answered);
    assert_eq!(h.engine.active_calls(), 0);
    call
}

/// The ACD reserved alice (the `PlaceCallback` in `out`): the data plane gives the callback
/// its session in `slot` and the customer is INVITEd. Returns the callback's call and INVITE.
fn customer_dialled(h: &mut Harness, out: &[Action], slot: u32, attempt: u64) -> (u64, Message) {
    let placed = acd_events(out)
        .into_iter()
        .find(|e| e.kind == "callback_placed")
        .expect("callback placed");
    assert_eq!(placed.agent.as_deref(), Some("alice"));
    assert_eq!(placed.detail["attempt"], attempt);
    let call = created(out).expect("a session for the callback");
    let now = h.now();
    h.engine
        .media_created(now, call, Ok((session(slot), [32000, 32004])));
    let out: Vec<Action> = h.engine.drain().collect();
    let invite = invites_to(&out, CUSTOMER).pop().expect("customer dialled");
    assert_eq!(
        invite.request_uri(),
        Some(format!("sip:customer@{CUSTOMER}").as_str())
    );
    assert!(invite.get("From").unwrap().contains("sip:3000@acme.test"));
    let body = invite.body_str().unwrap();
    assert!(body.contains("c=IN IP4 192.0.2.1") && body.contains("m=audio 32000 "));
    assert!(body.contains("telephone-event/8000"));
    (call, invite)
}

fn agent_state(h: &mut Harness) -> String {
    let now = h.now();
    let Ok(AcdReply::Agents(agents)) = h.engine.acd_request(
        now,
        "acme",
        AcdOp::Agents {
            agent: Some("alice".into()),
        },
    ) else {
        panic!("agent status")
    };
    agents[0].state.clone()
}

#[test]
fn a_caller_keeps_its_place_hangs_up_and_is_bridged_with_the_agent_when_called_back() {
    let mut h = harness(3);
    let first = caller_requests_callback(&mut h);

    h.ms += 1000;
    let out = agent(&mut h, "alice", AgentAction::Login);
    let (call, invite) = customer_dialled(&mut h, &out, 2, 1);
    assert_ne!(call, first, "the callback is a call of its own");
    assert_eq!(agent_state(&mut h), "reserved");

    h.ms += 100;
    let out = h.feed(&response_from(&invite, 180, "btag", None), CUSTOMER);
    assert!(sent(&out).is_empty());
    h.ms += 3000;
    let out = h.feed(&response_from(&invite, 200, "btag", Some(SDP_C)), CUSTOMER);
    let msgs = to(&out, CUSTOMER);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].method(), Some(&Method::Ack));
    assert!(out.iter().any(|a| matches!(a, Action::Media(MediaOp::Update { leg: LegIndex::A, params, .. }) if params.rtp == Some("10.0.0.7:6000".parse().unwrap()))));
    assert_eq!(kinds(&out), vec!["offer", "connect"]);
    let connect = acd_events(&out)
        .into_iter()
        .find(|e| e.kind == "connect")
        .unwrap();
    assert_eq!(connect.detail["callback"], true);
    assert_eq!(connect.call, Some(call));
    // The customer hears the music (PCMU, its choice) while alice's phone rings with its SDP.
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Media(MediaOp::Play {
            leg: LegIndex::A,
            payload_type: 0,
            ..
        })
    )));
    let offer = invites_to(&out, device("alice")).pop().expect("alice rung");
    let body = offer.body_str().unwrap();
    assert!(body.contains("m=audio 32004 ") && body.contains("PCMU") && !body.contains("10.0.0.7"));

    h.ms += 2000;
    let out = h.feed(
        &response_from(&offer, 200, "btag", Some(SDP_B)),
        device("alice"),
    );
    let msgs = sent(&out);
    assert!(msgs
        .iter()
        .any(|(to, m)| to.to_string() == device("alice") && m.method() == Some(&Method::Ack)));
    assert!(
        to(&out, CUSTOMER).is_empty(),
        "the customer's call is untouched"
    );
    assert!(out.iter().any(|a| matches!(a, Action::Media(MediaOp::Update { leg: LegIndex::B, params, .. }) if params.rtp == Some("10.0.0.2:5000".parse().unwrap()))));
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Media(MediaOp::StopPlay {
            leg: LegIndex::A,
            ..
        })
    )));
    assert_eq!(agent_state(&mut h), "on-call");

    // The customer hangs up: BYE to alice, the contact completes.
    h.ms += 60_000;
    let out = h.feed(&in_dialog_from_b(&invite, "BYE", 2, ""), CUSTOMER);
    assert_eq!(to(&out, CUSTOMER)[0].status(), Some(200));
    assert!(to(&out, device("alice"))
        .iter()
        .any(|m| m.method() == Some(&Method::Bye)));
    assert_eq!(kinds(&out), vec!["complete_caller"]);
    assert_eq!(deleted(&out), Some(call));
    let r = record(&mut h, call);
    assert_eq!(r.disposition, Disposition::Answered);
    assert_eq!(r.ended_by, "caller");
    assert_eq!(r.target, "agent:alice");
    assert_eq!(r.dialled, "caller");
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn a_busy_or_silent_customer_is_retried_and_given_up_after_the_last_attempt() {
    let mut h = harness(2);
    caller_requests_callback(&mut h);
    let out = agent(&mut h, "alice", AgentAction::Login);
    let (call, invite) = customer_dialled(&mut h, &out, 2, 1);

    // Busy: the attempt fails, alice is free again, the callback waits for its retry.
    h.ms += 1000;
    let out = h.feed(&response_from(&invite, 486, "btag", None), CUSTOMER);
    assert!(to(&out, CUSTOMER)
        .iter()
        .any(|m| m.method() == Some(&Method::Ack)));
    assert_eq!(kinds(&out), vec!["callback_failed"]);
    let failed = acd_events(&out)
        .into_iter()
        .find(|e| e.kind == "callback_failed")
        .unwrap();
    assert_eq!(failed.detail["attempt"], 1);
    assert_eq!(failed.detail["last"], false);
    assert_eq!(deleted(&out), Some(call));
    let r = record(&mut h, call);
    assert_eq!((r.disposition, r.final_code), (Disposition::Busy, 486));
    assert_eq!(agent_state(&mut h), "available");

    // Nothing before the retry interval; then attempt 2.
    let out = h.advance(4000);
    assert!(created(&out).is_none());
    let out = h.advance(1100);
    let (call, invite) = customer_dialled(&mut h, &out, 3, 2);

    // Rings, nobody answers: the ACD's dial timeout CANCELs it, and that was the last attempt.
    h.ms += 100;
    h.feed(&response_from(&invite, 180, "btag", None), CUSTOMER);
    let out = h.advance(10_000);
    assert!(to(&out, CUSTOMER)
        .iter()
        .any(|m| m.method() == Some(&Method::Cancel)));
    let failed = acd_events(&out)
        .into_iter()
        .find(|e| e.kind == "callback_failed")
        .expect("the attempt failed");
    assert_eq!(failed.detail["attempt"], 2);
    assert_eq!(failed.detail["last"], true);
    assert_eq!(deleted(&out), Some(call));
    let r = record(&mut h, call);
    assert_eq!(r.disposition, Disposition::NoAnswer);
    let out = h.feed(&response_from(&invite, 487, "btag", None), CUSTOMER);
    assert!(kinds(&out).is_empty());
    let out = h.advance(20_000);
    assert!(created(&out).is_none(), "given up");
    assert_eq!(agent_state(&mut h), "available");
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn an_agent_who_does_not_take_the_called_back_customer_ends_the_call() {
    let mut h = harness(3);
    caller_requests_callback(&mut h);
    let out = agent(&mut h, "alice", AgentAction::Login);
    let (call, invite) = customer_dialled(&mut h, &out, 2, 1);
    h.ms += 1000;
    let out = h.feed(&response_from(&invite, 200, "btag", Some(SDP_C)), CUSTOMER);
    let offer = invites_to(&out, device("alice")).pop().expect("alice rung");

    h.ms += 1000;
    let out = h.feed(&response_from(&offer, 486, "dtag", None), device("alice"));
    assert!(to(&out, CUSTOMER)
        .iter()
        .any(|m| m.method() == Some(&Method::Bye)));
    assert_eq!(kinds(&out), vec!["complete_agent"]);
    let r = record(&mut h, call);
    assert_eq!(r.ended_by, "callee");
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn an_agent_phone_that_rings_out_ends_the_called_back_customers_call() {
    let mut h = harness(3);
    caller_requests_callback(&mut h);
    let out = agent(&mut h, "alice", AgentAction::Login);
    let (_, invite) = customer_dialled(&mut h, &out, 2, 1);
    h.ms += 1000;
    let out = h.feed(&response_from(&invite, 200, "btag", Some(SDP_C)), CUSTOMER);
    let offer = invites_to(&out, device("alice")).pop().expect("alice rung");
    h.feed(&response_from(&offer, 180, "dtag", None), device("alice"));
    // The queue's ring timeout is 15 s.
    let out = h.advance(14_000);
    assert!(to(&out, CUSTOMER).is_empty());
    let out = h.advance(1100);
    assert!(to(&out, device("alice"))
        .iter()
        .any(|m| m.method() == Some(&Method::Cancel)));
    assert!(to(&out, CUSTOMER)
        .iter()
        .any(|m| m.method() == Some(&Method::Bye)));
    assert_eq!(kinds(&out), vec!["complete_agent"]);
}

#[test]
fn the_callback_number_comes_from_p_asserted_identity_or_from() {
    use super::super::b2bua::callback_number_of;
    let with = |extra: &str| {
        let text = format!("INVITE sip:3000@acme.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKn\r\nFrom: \"Ann\" <sip:0301234567@10.0.0.1>;tag=a\r\nTo: <sip:3000@acme.test>\r\nCall-ID: n\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n");
        callback_number_of(&Message::parse(text.as_bytes()).unwrap())
    };
    assert_eq!(with("").as_deref(), Some("0301234567"));
    assert_eq!(
        with("P-Asserted-Identity: <tel:+49301234567;verstat=TN-Validation-Passed>\r\n").as_deref(),
        Some("+49301234567")
    );
    assert_eq!(
        with("P-Asserted-Identity: <sip:+4930999@carrier.test;user=phone>\r\n").as_deref(),
        Some("+4930999")
    );
    assert_eq!(with("P-Asserted-Identity: <sip:a%20b@x>\r\n"), None);
}

#[test]
fn the_agent_hanging_up_ends_the_called_back_customers_call() {
    let mut h = harness(3);
    caller_requests_callback(&mut h);
    let out = agent(&mut h, "alice", AgentAction::Login);
    let (call, invite) = customer_dialled(&mut h, &out, 2, 1);
    h.ms += 1000;
    let out = h.feed(&response_from(&invite, 200, "btag", Some(SDP_C)), CUSTOMER);
    let offer = invites_to(&out, device("alice")).pop().expect("alice rung");
    h.ms += 1000;
    h.feed(
        &response_from(&offer, 200, "btag", Some(SDP_B)),
        device("alice"),
    );
    // Past the agent's ring timeout: nothing happens to a connected call (the original caller
    // only gets its unanswered BYE retransmitted).
    let out = h.advance(20_000);
    assert!(to(&out, CUSTOMER).is_empty() && to(&out, device("alice")).is_empty());
    let out = h.feed(&in_dialog_from_b(&offer, "BYE", 2, ""), device("alice"));
    assert_eq!(to(&out, device("alice"))[0].status(), Some(200));
    let bye = to(&out, CUSTOMER);
    assert_eq!(bye.len(), 1);
    assert_eq!(bye[0].method(), Some(&Method::Bye));
    assert_eq!(
        bye[0].request_uri(),
        Some("sip:callee@10.0.0.2:5060"),
        "the customer's Contact"
    );
    assert_eq!(kinds(&out), vec!["complete_agent"]);
    let r = record(&mut h, call);
    assert_eq!(
        (r.disposition, r.ended_by),
        (Disposition::Answered, "callee")
    );
    assert_eq!(agent_state(&mut h), "wrap-up", "the queue's 10 s wrap-up");
}

#[test]
fn an_agent_without_a_registered_phone_fails_the_attempt_without_ringing_the_customer() {
    let mut h = harness_with(callback_config(3));
    caller_requests_callback(&mut h);
    let out = agent(&mut h, "alice", AgentAction::Login);
    assert!(created(&out).is_none() && sent(&out).is_empty());
    let k = kinds(&out);
    assert!(
        k.contains(&"callback_placed") && k.contains(&"callback_failed"),
        "{k:?}"
    );
    // Registered meanwhile: the retry reaches the customer.
    register_device(&mut h, "alice");
    let out = h.advance(5100);
    customer_dialled(&mut h, &out, 2, 2);
}
