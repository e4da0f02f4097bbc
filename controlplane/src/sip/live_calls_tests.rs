//! The live calls the API lists (`AcdOp::Calls`), through the engine with simulated time: a
//! direct call from ringing through early media to answered and monitored, and a queued call
//! taken by an agent whose phone is transcoded to.

use super::monitor_tests::{boss_answers, harness, ring_boss, ringing_call};
use super::queue::{agent, cc_config, device, invites_to, queued_call, register_device};
use super::*;
use crate::sip::queues::{AcdOp, AcdRefusal, AcdReply, AgentAction, LiveCallView, SupervisorMode};

/// An agent's phone that takes G.722 only.
const SDP_G722: &str = "v=0\r\no=p 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 9\r\na=rtpmap:9 G722/8000\r\n";

fn list(h: &mut Harness, tenant: &str) -> Vec<LiveCallView> {
    let now = h.now();
    match h
        .engine
        .acd_request(now, tenant, AcdOp::Calls { call: None })
    {
        Ok(AcdReply::Calls(calls)) => calls,
        other => panic!("{other:?}"),
    }
}

fn one(h: &mut Harness, tenant: &str, call: u64) -> Result<LiveCallView, AcdRefusal> {
    let now = h.now();
    match h
        .engine
        .acd_request(now, tenant, AcdOp::Calls { call: Some(call) })?
    {
        AcdReply::Calls(mut calls) if calls.len() == 1 => Ok(calls.remove(0)),
        other => panic!("{other:?}"),
    }
}

fn codecs(view: &LiveCallView) -> [Option<&str>; 2] {
    view.legs.each_ref().map(|l| l.codec.as_deref())
}

#[test]
fn a_call_is_listed_ringing_early_answered_and_monitored_and_gone_once_it_ends() {
    let mut h = harness();
    assert!(list(&mut h, "acme").is_empty());
    let (call, b_invite) = ringing_call(&mut h);
    let calls = list(&mut h, "acme");
    assert_eq!(calls.len(), 1);
    let ringing = &calls[0];
    assert_eq!(
        (ringing.call, ringing.state.as_str(), ringing.from.as_str()),
        (call, "ringing", "sip:caller@10.0.0.1")
    );
    assert_eq!(
        (ringing.to.as_str(), ringing.direction.as_str()),
        ("5551234", "inbound")
    );
    assert!(ringing.target.contains("10.0.0.2"), "{}", ringing.target);
    assert_eq!(ringing.started_unix_ms, 1_700_000_000_000);
    assert_eq!(ringing.answered_unix_ms, None);
    assert_eq!(codecs(ringing), [None, None]);
    assert_eq!(
        (ringing.queue.as_deref(), ringing.agent.as_deref()),
        (None, None)
    );
    assert!(ringing.monitor.is_none() && !ringing.transcoded);

    // The callee's early media.
    h.ms += 500;
    h.feed(
        &response_from(&b_invite, 183, "btag", Some(SDP_B)),
        "10.0.0.2:5060",
    );
    assert_eq!(one(&mut h, "acme", call).unwrap().state, "early");

    h.ms += 1500;
    answer_call(&mut h, &b_invite);
    let answered = one(&mut h, "acme", call).unwrap();
    assert_eq!(answered.state, "answered");
    assert_eq!(answered.answered_unix_ms, Some(1_700_000_002_000));
    assert_eq!(codecs(&answered), [Some("PCMA"), Some("PCMA")]);
    assert!(!answered.transcoded);
    // Nothing of it for another tenant, by list or by id.
    assert!(list(&mut h, "other").is_empty());
    assert_eq!(
        one(&mut h, "other", call),
        Err(AcdRefusal::NotFound(format!("no call {call}")))
    );
    assert!(matches!(
        one(&mut h, "acme", call + 1),
        Err(AcdRefusal::NotFound(_))
    ));

    // A supervisor ringing, then listening in.
    let invite = ring_boss(&mut h, call, SupervisorMode::Whisper);
    let monitor = one(&mut h, "acme", call).unwrap().monitor.unwrap();
    assert_eq!(
        (
            monitor.supervisor.as_str(),
            monitor.mode,
            monitor.state.as_str()
        ),
        ("boss", SupervisorMode::Whisper, "ringing")
    );
    boss_answers(&mut h, &invite);
    let monitor = list(&mut h, "acme")[0].monitor.clone().unwrap();
    assert_eq!(monitor.state, "active");

    // The callee hangs up: no live call any more.
    h.feed(&in_dialog_from_b(&b_invite, "BYE", 1, ""), "10.0.0.2:5060");
    assert!(list(&mut h, "acme").is_empty());
    assert!(one(&mut h, "acme", call).is_err());
}

#[test]
fn a_queued_call_shows_its_queue_then_the_agent_and_the_codecs_it_is_transcoded_between() {
    let mut h = harness_with(cc_config("longest-idle", None));
    register_device(&mut h, "alice");
    agent(&mut h, "alice", AgentAction::Login);
    let (call, out) = queued_call(&mut h, "lq-1", 1);
    let offer = invites_to(&out, device("alice")).pop().expect("alice rung");
    let queued = &list(&mut h, "acme")[0];
    assert_eq!(
        (queued.call, queued.state.as_str(), queued.queue.as_deref()),
        (call, "queued", Some("support"))
    );
    assert_eq!(
        (queued.agent.as_deref(), queued.target.as_str()),
        (None, "")
    );
    assert_eq!(queued.to, "3000");

    h.ms += 1000;
    h.feed(
        &response_from(&offer, 200, "atag2", Some(SDP_G722)),
        device("alice"),
    );
    let taken = one(&mut h, "acme", call).unwrap();
    assert_eq!(
        (taken.state.as_str(), taken.agent.as_deref()),
        ("answered", Some("alice"))
    );
    assert_eq!(taken.queue.as_deref(), Some("support"));
    assert_eq!(codecs(&taken), [Some("PCMA"), Some("G722")]);
    assert!(taken.transcoded);
    // The quality is the shell's to add (from the data plane).
    assert!(taken.legs.iter().all(|l| l.quality.is_none()));
}
