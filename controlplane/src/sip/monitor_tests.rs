//! Supervisor monitoring through the engine with simulated time: the API asks for a monitor of
//! an answered call, Tandem rings the supervisor's phone from a session on the call's core,
//! attaches it on answer, changes the mode live, and hangs the supervisor up when the API, the
//! supervisor or the end of the call says so.

use super::queue::{device, register_device};
use super::*;
use crate::sip::queues::{AcdOp, AcdRefusal, AcdReply, MonitorOp, SupervisorMode};
use tandem_dataplane::api::{Codec, CodecOptions, LegCodec, MonitorMode};

const BOSS: &str = "192.168.1.12:5060";
const SDP_BOSS: &str = "v=0\r\no=s 1 1 IN IP4 192.168.1.12\r\ns=-\r\nc=IN IP4 192.168.1.12\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

pub(super) fn session(slot: u32) -> SessionId {
    SessionId {
        core: 3,
        slot,
        generation: 1,
    }
}

/// `config()` with the supervisor `boss` (another user of acme) registered, and `alien`, a user
/// of another tenant.
pub(super) fn harness() -> Harness {
    let mut cfg = config();
    cfg.tenants.push(TenantConfig {
        name: "other".into(),
        domain: "other.test".into(),
        max_calls: None,
        country_code: None,
        transcode: None,
    });
    for (tenant, user) in [("acme", "boss"), ("other", "alien")] {
        cfg.accounts.push(AccountConfig {
            tenant: tenant.into(),
            user: user.into(),
            password: "pw".into(),
            dtmf: Default::default(),
        });
    }
    let mut h = harness_with(cfg);
    register_device(&mut h, "boss");
    assert_eq!(device("boss"), BOSS);
    h
}

/// A call (`mon-1`) ringing its callee, on session 1 of core 3; returns the engine's call id
/// and B's INVITE.
pub(super) fn ringing_call(h: &mut Harness) -> (u64, Message) {
    let out = h.feed(
        &invite("z9hG4bKm1", "mon-1", "5551234", SDP_A),
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
    h.engine
        .media_created(now, call, Ok((session(1), [30000, 30004])));
    let out: Vec<Action> = h.engine.drain().collect();
    (call, sent(&out).remove(0).1)
}

/// [`ringing_call`], answered by the callee and the answer ACKed by the caller.
fn answered_call(h: &mut Harness) -> (u64, Message) {
    let (call, b_invite) = ringing_call(h);
    let a_tag = answer_call(h, &b_invite);
    let ack = format!("ACK sip:tandem@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKm1ack\r\nFrom: <sip:caller@10.0.0.1>;tag=atag\r\nTo: <sip:5551234@127.0.0.1>;tag={a_tag}\r\nCall-ID: mon-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n");
    h.feed(ack.as_bytes(), "10.0.0.1:5060");
    (call, b_invite)
}

fn ask(h: &mut Harness, tenant: &str, call: u64, op: MonitorOp) -> Result<AcdReply, AcdRefusal> {
    let now = h.now();
    h.engine
        .acd_request(now, tenant, AcdOp::Monitor { call, op })
}

fn start(mode: SupervisorMode) -> MonitorOp {
    MonitorOp::Start {
        supervisor: "boss".into(),
        mode,
    }
}

fn events(actions: &[Action]) -> Vec<(&'static str, serde_json::Value)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Event(SipEvent::Monitor { kind, detail, .. }) => Some((*kind, detail.clone())),
            _ => None,
        })
        .collect()
}

fn to_boss(actions: &[Action]) -> Vec<Message> {
    sent(actions)
        .into_iter()
        .filter(|(to, _)| to.to_string() == BOSS)
        .map(|(_, m)| m)
        .collect()
}

fn deleted_supervisor(actions: &[Action]) -> Option<SessionId> {
    actions.iter().find_map(|a| match a {
        Action::Media(MediaOp::DeleteSupervisor { session }) => Some(*session),
        _ => None,
    })
}

/// Starts a monitor of `call` in `mode`: the supervisor's session is made on the call's core
/// (session 2) and the supervisor's phone rung with a G.711 offer on its leg A. Returns the
/// INVITE.
pub(super) fn ring_boss(h: &mut Harness, call: u64, mode: SupervisorMode) -> Message {
    let Ok(AcdReply::Monitor(view)) = ask(h, "acme", call, start(mode)) else {
        panic!("monitor refused");
    };
    assert_eq!((view.state.as_str(), view.mode), ("ringing", mode));
    let out: Vec<Action> = h.engine.drain().collect();
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Media(MediaOp::CreateSupervisor { call: c, core: 3 }) if *c == call
    )));
    assert_eq!(events(&out)[0].0, "monitor.started");
    let now = h.now();
    h.engine
        .supervisor_created(now, call, Ok((session(2), [30008, 30012])));
    let out: Vec<Action> = h.engine.drain().collect();
    let msgs = to_boss(&out);
    assert_eq!(msgs.len(), 1);
    let invite = msgs[0].clone();
    assert_eq!(invite.method(), Some(&Method::Invite));
    assert_eq!(
        invite.request_uri(),
        Some(format!("sip:boss@{BOSS}").as_str())
    );
    let body = invite.body_str().unwrap();
    assert!(body.contains("m=audio 30008 RTP/AVP 0 8"), "{body}");
    invite
}

pub(super) fn boss_answers(h: &mut Harness, invite: &Message) -> Vec<Action> {
    h.feed(&response_from(invite, 180, "boss", None), BOSS);
    h.feed(&response_from(invite, 200, "boss", Some(SDP_BOSS)), BOSS)
}

#[test]
fn a_whispering_supervisor_is_attached_on_answer_switched_to_barge_and_hung_up_with_the_call() {
    let mut h = harness();
    let (call, b_invite) = answered_call(&mut h);
    let invite = ring_boss(&mut h, call, SupervisorMode::Whisper);
    let out = boss_answers(&mut h, &invite);
    let acks: Vec<Message> = to_boss(&out)
        .into_iter()
        .filter(|m| m.method() == Some(&Method::Ack))
        .collect();
    assert_eq!(acks.len(), 1);
    let attach = out.iter().find_map(|a| match a {
        Action::Media(MediaOp::AttachMonitor {
            call: c,
            session,
            supervisor,
            params,
            mode,
            codecs,
        }) if *c == call => Some((*session, *supervisor, *params, *mode, *codecs)),
        _ => None,
    });
    let pcma = |event| LegCodec {
        payload_type: 8,
        codec: Codec::Pcma,
        event_payload_type: event,
        ptime_ms: 0,
        options: CodecOptions::NONE,
    };
    let (on, supervisor, params, mode, codecs) = attach.expect("attached");
    assert_eq!(
        (on, supervisor, mode),
        (session(1), session(2), MonitorMode::Whisper)
    );
    assert_eq!(params.rtp, Some("192.168.1.12:7000".parse().unwrap()));
    // Caller: PCMA with events (its offer); agent: PCMA (its answer); supervisor: PCMU.
    let pcmu = LegCodec {
        payload_type: 0,
        codec: Codec::Pcmu,
        event_payload_type: Some(101),
        ptime_ms: 0,
        options: CodecOptions::NONE,
    };
    assert_eq!(codecs, [pcma(Some(101)), pcma(None), pcmu]);
    assert_eq!(events(&out)[0].0, "monitor.answered");

    // A retransmitted 200 gets the same ACK again, nothing else.
    let again = h.feed(&response_from(&invite, 200, "boss", Some(SDP_BOSS)), BOSS);
    assert_eq!(to_boss(&again), acks);
    assert!(!again.iter().any(|a| matches!(a, Action::Media(_))));

    let Ok(AcdReply::Monitor(view)) = ask(
        &mut h,
        "acme",
        call,
        MonitorOp::SetMode(SupervisorMode::Barge),
    ) else {
        panic!()
    };
    assert_eq!(
        (view.state.as_str(), view.mode),
        ("active", SupervisorMode::Barge)
    );
    let out: Vec<Action> = h.engine.drain().collect();
    assert!(out.iter().any(|a| *a
        == Action::Media(MediaOp::SetMonitorMode {
            session: session(1),
            mode: MonitorMode::Barge,
        })));
    assert_eq!(events(&out)[0].1["mode"], "barge");

    // The callee hangs up: the supervisor gets a BYE and its session goes.
    h.ms += 1000;
    let out = h.feed(&in_dialog_from_b(&b_invite, "BYE", 1, ""), "10.0.0.2:5060");
    let byes = to_boss(&out);
    assert_eq!(byes.len(), 1);
    assert_eq!(byes[0].method(), Some(&Method::Bye));
    assert_eq!(byes[0].to_tag(), Some("boss"));
    assert_eq!(deleted_supervisor(&out), Some(session(2)));
    let ended = events(&out);
    assert_eq!(ended[0].0, "monitor.ended");
    assert_eq!(ended[0].1["reason"], "call ended");
    assert_eq!(
        ask(&mut h, "acme", call, MonitorOp::Stop),
        Err(AcdRefusal::NotFound(format!("no call {call}")))
    );
}

#[test]
fn a_monitor_stopped_while_ringing_is_cancelled_and_a_late_answer_hung_up() {
    let mut h = harness();
    let (call, _) = answered_call(&mut h);
    let invite = ring_boss(&mut h, call, SupervisorMode::Listen);
    h.feed(&response_from(&invite, 180, "boss", None), BOSS);
    assert!(matches!(
        ask(&mut h, "acme", call, MonitorOp::Stop),
        Ok(AcdReply::Monitor(_))
    ));
    let out: Vec<Action> = h.engine.drain().collect();
    let cancel = to_boss(&out);
    assert_eq!(cancel.len(), 1);
    assert_eq!(cancel[0].method(), Some(&Method::Cancel));
    assert_eq!(deleted_supervisor(&out), Some(session(2)));
    assert_eq!(events(&out)[0].1["reason"], "stopped");
    // The phone answered as the CANCEL crossed it: ACK and BYE, nothing attached.
    let out = h.feed(&response_from(&invite, 200, "boss", Some(SDP_BOSS)), BOSS);
    let methods: Vec<Method> = to_boss(&out)
        .iter()
        .filter_map(|m| m.method().cloned())
        .collect();
    assert_eq!(methods, vec![Method::Ack, Method::Bye]);
    assert!(!out.iter().any(|a| matches!(a, Action::Media(_))));
    // The call goes on, and may be monitored again.
    assert_eq!(h.engine.active_calls(), 1);
    ring_boss(&mut h, call, SupervisorMode::Barge);
}

#[test]
fn monitor_requests_are_refused_for_other_tenants_unknown_users_and_unanswered_calls() {
    let mut h = harness();
    // Ringing, not answered yet.
    let (call, b_invite) = ringing_call(&mut h);
    assert!(matches!(
        ask(&mut h, "acme", call, start(SupervisorMode::Listen)),
        Err(AcdRefusal::Conflict(_))
    ));
    answer_call(&mut h, &b_invite);
    // Another tenant's call is not there for it.
    assert!(matches!(
        ask(&mut h, "other", call, start(SupervisorMode::Listen)),
        Err(AcdRefusal::NotFound(_))
    ));
    // Not a user of acme (alien is other's), and an acme user with no phone registered.
    for (user, refusal) in [
        ("alien", AcdRefusal::NotFound("no SIP user alien".into())),
        (
            "agent1",
            AcdRefusal::Conflict("agent1 has no registered phone".into()),
        ),
    ] {
        let op = MonitorOp::Start {
            supervisor: user.into(),
            mode: SupervisorMode::Listen,
        };
        assert_eq!(ask(&mut h, "acme", call, op), Err(refusal));
    }
    assert!(matches!(
        ask(
            &mut h,
            "acme",
            call,
            MonitorOp::SetMode(SupervisorMode::Barge)
        ),
        Err(AcdRefusal::NotFound(_))
    ));
    let invite = ring_boss(&mut h, call, SupervisorMode::Whisper);
    assert!(matches!(
        ask(&mut h, "acme", call, start(SupervisorMode::Listen)),
        Err(AcdRefusal::Conflict(_))
    ));
    // The supervisor is busy: the monitor ends, its session goes, the call stays.
    let out = h.feed(&response_from(&invite, 486, "boss", None), BOSS);
    assert_eq!(deleted_supervisor(&out), Some(session(2)));
    assert_eq!(events(&out)[0].1["reason"], "refused");
    assert_eq!(h.engine.active_calls(), 1);
}

#[test]
fn the_supervisor_hanging_up_or_not_answering_ends_only_the_monitor() {
    let mut h = harness();
    let (call, _) = answered_call(&mut h);
    let invite = ring_boss(&mut h, call, SupervisorMode::Listen);
    boss_answers(&mut h, &invite);
    let out = h.feed(
        &in_dialog_from("boss@192.168.1.12:5060", "boss", &invite, "BYE", 1, ""),
        BOSS,
    );
    let msgs = to_boss(&out);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].status(), Some(200));
    assert_eq!(deleted_supervisor(&out), Some(session(2)));
    assert_eq!(events(&out)[0].1["reason"], "supervisor");
    assert_eq!(h.engine.active_calls(), 1);

    // Rung again, and nobody answers within the no-answer timeout (60 s): CANCEL.
    let invite = ring_boss(&mut h, call, SupervisorMode::Listen);
    h.feed(&response_from(&invite, 180, "boss", None), BOSS);
    let out = h.advance(60_000);
    assert!(to_boss(&out)
        .iter()
        .any(|m| m.method() == Some(&Method::Cancel)));
    assert_eq!(events(&out)[0].1["reason"], "no answer");
    assert_eq!(deleted_supervisor(&out), Some(session(2)));
    // The session timing out on its core ends an answered monitor with a BYE, no delete.
    let invite = ring_boss(&mut h, call, SupervisorMode::Listen);
    boss_answers(&mut h, &invite);
    let now = h.now();
    h.engine
        .media_timed_out(now, session(2), SessionStats::default());
    let out: Vec<Action> = h.engine.drain().collect();
    assert_eq!(to_boss(&out)[0].method(), Some(&Method::Bye));
    assert_eq!(deleted_supervisor(&out), None);
    assert_eq!(h.engine.active_calls(), 1);
}
