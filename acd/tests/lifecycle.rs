//! Contact and agent life cycles: no-answer, auto-pause, callbacks, resume, overflow, fairness
//! across queues, wrap-up, transfer, supervisor inputs, typed errors.

mod common;
use common::*;
use tandem_acd::*;

fn c(id: u64) -> ContactId {
    ContactId(id)
}
fn a(id: u64) -> AgentId {
    AgentId(id)
}

#[test]
fn no_answer_requeues_at_the_original_position_and_blocks_the_agent() {
    let mut q = queue(1);
    q.ring_timeout_ms = 15_000;
    q.no_answer_delay_ms = 30_000;
    let mut h = H::new(vec![q], vec![agent(1, &[1], &[]), agent(2, &[1], &[])]);
    for id in 1..=3 {
        h.enter(req(id, 1));
    }
    h.login(1);
    assert_eq!(h.offers(), vec![(1, vec![1])]);
    assert_eq!(h.acd.contact_position(c(2)).unwrap(), Some(1));
    h.take();
    h.advance(15_000);
    assert!(h.out.contains(&Output::CancelOffer {
        contact: c(1),
        agent: a(1)
    }));
    assert!(h
        .events()
        .contains(&EventKind::RingNoAnswer { ring_ms: 15_000 }));
    assert_eq!(
        h.acd.contact_position(c(1)).unwrap(),
        Some(1),
        "back at the head"
    );
    assert_eq!(h.acd.contact_position(c(3)).unwrap(), Some(3));
    let st = h.acd.agent_status(a(1)).unwrap();
    assert_eq!(st.state, AgentState::Available);
    assert_eq!(st.blocked_until_ms, Some(45_000));
    assert_eq!(st.consecutive_misses, 1);
    h.take();
    h.login(2);
    assert_eq!(
        h.offers(),
        vec![(1, vec![2])],
        "the next agent gets the same contact first"
    );
    h.take();
    h.ok(Input::Answer {
        agent: a(2),
        contact: c(1),
    });
    h.advance(30_000);
    assert_eq!(
        h.offers(),
        vec![(2, vec![1])],
        "agent 1 back after its delay"
    );
}

#[test]
fn consecutive_ring_outs_pause_the_agent() {
    let mut q = queue(1);
    q.max_no_answer = 2;
    q.ring_timeout_ms = 10_000;
    let mut h = H::new(vec![q], vec![agent(1, &[1], &[])]);
    h.login(1);
    h.enter(req(1, 1));
    h.advance(10_000);
    assert_eq!(
        h.state(1),
        AgentState::Reserved,
        "re-offered after the first miss"
    );
    h.advance(10_000);
    assert_eq!(
        h.state(1),
        AgentState::Break(ReasonCode::AUTO_PAUSE_NO_ANSWER)
    );
    assert!(h.events().contains(&EventKind::Pause {
        reason: ReasonCode::AUTO_PAUSE_NO_ANSWER
    }));
    assert_eq!(h.acd.contact_position(c(1)).unwrap(), Some(1));
    h.take();
    h.ok(Input::Ready { agent: a(1) });
    assert_eq!(h.offers(), vec![(1, vec![1])]);
}

#[test]
fn reject_delays_the_agent_and_logout_while_ringing_requeues() {
    let mut q = queue(1);
    q.reject_delay_ms = 8_000;
    let mut h = H::new(vec![q], vec![agent(1, &[1], &[]), agent(2, &[1], &[])]);
    h.login(1);
    h.enter(req(1, 1));
    h.ok(Input::Reject {
        agent: a(1),
        contact: c(1),
    });
    assert!(h.events().contains(&EventKind::Reject));
    assert_eq!(
        h.acd.agent_status(a(1)).unwrap().blocked_until_ms,
        Some(8_000)
    );
    h.take();
    h.login(2);
    h.ok(Input::Ringing {
        agent: a(2),
        contact: c(1),
    });
    assert_eq!(h.state(2), AgentState::Ringing);
    h.ok(Input::Logout { agent: a(2) });
    assert!(h.out.contains(&Output::CancelOffer {
        contact: c(1),
        agent: a(2)
    }));
    assert_eq!(h.state(2), AgentState::LoggedOut);
    assert_eq!(h.acd.contact_position(c(1)).unwrap(), Some(1));
    h.take();
    h.advance(8_000);
    assert_eq!(h.offers(), vec![(1, vec![1])]);
}

#[test]
fn wrap_up_extend_ready_and_pending_break() {
    let mut q = queue(1);
    q.wrapup_ms = 10_000;
    let mut h = H::new(vec![q], vec![agent(1, &[1], &[])]);
    h.login(1);
    h.enter(req(1, 1));
    h.ok(Input::Answer {
        agent: a(1),
        contact: c(1),
    });
    h.now += 5_000;
    h.ok(Input::Hangup {
        contact: c(1),
        by: Party::Agent,
    });
    assert_eq!(h.state(1), AgentState::WrapUp);
    h.ok(Input::ExtendWrapUp {
        agent: a(1),
        extra_ms: 5_000,
    });
    h.advance(10_000);
    assert_eq!(h.state(1), AgentState::WrapUp, "extended");
    h.advance(5_000);
    assert_eq!(h.state(1), AgentState::Available);
    // Break asked during a call: applied when the wrap-up ends.
    h.enter(req(2, 1));
    h.ok(Input::Answer {
        agent: a(1),
        contact: c(2),
    });
    h.ok(Input::Pause {
        agent: a(1),
        reason: ReasonCode(4),
    });
    assert_eq!(h.state(1), AgentState::OnCall);
    h.ok(Input::Hangup {
        contact: c(2),
        by: Party::Caller,
    });
    h.ok(Input::Ready { agent: a(1) });
    assert_eq!(
        h.state(1),
        AgentState::Available,
        "Ready ends wrap-up and overrides"
    );
    h.enter(req(3, 1));
    h.ok(Input::Answer {
        agent: a(1),
        contact: c(3),
    });
    h.ok(Input::Pause {
        agent: a(1),
        reason: ReasonCode(4),
    });
    h.ok(Input::Hangup {
        contact: c(3),
        by: Party::Caller,
    });
    h.advance(10_000);
    assert_eq!(h.state(1), AgentState::Break(ReasonCode(4)));
}

#[test]
fn queued_callback_keeps_its_place_and_retries() {
    let mut h = H::with(AcdConfig {
        queues: vec![queue(1)],
        agents: vec![agent(1, &[1], &[])],
        callback_retry_ms: 30_000,
        callback_max_attempts: 2,
        ..AcdConfig::default()
    });
    h.enter(req(1, 1));
    h.enter(req(2, 1));
    h.ok(Input::RequestCallback {
        contact: c(1),
        number: "+15550100".into(),
    });
    assert_eq!(h.acd.contact_position(c(1)).unwrap(), Some(1));
    assert!(h
        .events()
        .contains(&EventKind::CallbackRequested { wait_ms: 0 }));
    h.take();
    h.login(1);
    assert!(h.out.contains(&Output::PlaceCallback {
        contact: c(1),
        agent: a(1),
        number: "+15550100".into(),
        attempt: 1
    }));
    assert_eq!(h.state(1), AgentState::Reserved);
    h.take();
    h.ok(Input::CallbackResult {
        contact: c(1),
        answered: false,
    });
    // The agent takes the next caller meanwhile; the callback waits for its retry.
    assert_eq!(h.offers(), vec![(2, vec![1])]);
    h.serve(2, 1);
    h.take();
    h.advance(30_000);
    assert!(h
        .out
        .iter()
        .any(|o| matches!(o, Output::PlaceCallback { attempt: 2, .. })));
    h.ok(Input::CallbackResult {
        contact: c(1),
        answered: true,
    });
    assert!(h.out.contains(&Output::Connect {
        contact: c(1),
        agent: a(1)
    }));
    h.ok(Input::Hangup {
        contact: c(1),
        by: Party::Caller,
    });
    assert!(h
        .events()
        .iter()
        .any(|e| matches!(e, EventKind::CompleteCaller { .. })));
}

#[test]
fn callback_gives_up_after_its_attempts() {
    let mut h = H::with(AcdConfig {
        queues: vec![queue(1)],
        agents: vec![agent(1, &[1], &[])],
        callback_retry_ms: 1_000,
        callback_max_attempts: 2,
        callback_dial_timeout_ms: 5_000,
        ..AcdConfig::default()
    });
    h.login(1);
    h.ok(Input::Pause {
        agent: a(1),
        reason: ReasonCode(1),
    });
    h.enter(req(1, 1));
    h.ok(Input::RequestCallback {
        contact: c(1),
        number: "1".into(),
    });
    h.ok(Input::Ready { agent: a(1) });
    h.advance(5_000); // dial timeout = failed attempt 1
    h.advance(6_000); // retry, attempt 2 times out
    let ev = h.events();
    assert!(
        ev.contains(&EventKind::CallbackFailed {
            attempt: 2,
            last: true
        }),
        "{ev:?}"
    );
    assert!(h.acd.contact_position(c(1)).is_err(), "gone");
    assert_eq!(h.state(1), AgentState::Available);
}

#[test]
fn abandoned_caller_resumes_at_the_old_place_within_the_grace() {
    let mut h = H::with(AcdConfig {
        queues: vec![queue(1)],
        agents: vec![agent(1, &[1], &[])],
        resume_grace_ms: 60_000,
        ..AcdConfig::default()
    });
    let mut r1 = req(1, 1);
    r1.caller_key = Some("+4420".into());
    h.enter(r1);
    h.now += 1_000;
    h.enter(req(2, 1));
    h.now += 1_000;
    h.ok(Input::Hangup {
        contact: c(1),
        by: Party::Caller,
    });
    assert_eq!(h.acd.contact_position(c(2)).unwrap(), Some(1));
    assert!(
        !h.events()
            .iter()
            .any(|e| matches!(e, EventKind::Abandon { .. })),
        "not yet"
    );
    h.take();
    h.now += 10_000;
    let mut r3 = req(3, 1);
    r3.caller_key = Some("+4420".into());
    h.enter(r3);
    assert_eq!(h.acd.contact_position(c(3)).unwrap(), Some(1));
    let ev = h.events();
    assert!(ev.contains(&EventKind::Resumed { into: c(3) }));
    assert!(ev.iter().any(|e| matches!(
        e,
        EventKind::Enter {
            resumed_from: Some(ContactId(1)),
            ..
        }
    )));
    // A caller who does not come back is an abandon when the grace ends.
    h.take();
    let mut r4 = req(4, 1);
    r4.caller_key = Some("+331".into());
    h.enter(r4);
    h.now += 3_000;
    h.ok(Input::Hangup {
        contact: c(4),
        by: Party::Caller,
    });
    h.advance(60_000);
    assert!(h.events().contains(&EventKind::Abandon { wait_ms: 3_000 }));
}

#[test]
fn overflow_on_max_wait_full_and_empty() {
    let mut q1 = queue(1);
    q1.max_wait_ms = Some(30_000);
    q1.overflow = Some(OverflowTarget::External("voicemail:sales".into()));
    let mut q2 = queue(2);
    q2.max_len = Some(1);
    q2.overflow = Some(OverflowTarget::Queue(QueueId(3)));
    let mut q3 = queue(3);
    q3.empty = EmptyBehaviour::Leave;
    q3.overflow = Some(OverflowTarget::External("hook:x".into()));
    let mut h = H::new(
        vec![q1, q2, q3],
        vec![agent(1, &[1, 2], &[]), agent(3, &[3], &[])],
    );
    h.enter(req(1, 1));
    h.advance(30_000);
    assert!(h.out.contains(&Output::Overflow {
        contact: c(1),
        target: "voicemail:sales".into()
    }));
    assert!(h.events().contains(&EventKind::ExitTimeout {
        wait_ms: 30_000,
        to: None
    }));
    h.take();
    // Queue 2 holds one; the second overflows to queue 3, which is empty and sends it to a hook.
    h.enter(req(2, 2));
    h.enter(req(3, 2));
    let ev = h.events();
    assert!(
        ev.contains(&EventKind::ExitFull {
            to: Some(QueueId(3))
        }),
        "{ev:?}"
    );
    assert!(ev.contains(&EventKind::ExitEmpty {
        wait_ms: 0,
        to: None
    }));
    assert!(h.out.contains(&Output::Overflow {
        contact: c(3),
        target: "hook:x".into()
    }));
    h.take();
    // Staffed queue 3 keeps callers; when its last agent leaves, they exit empty.
    h.login(3);
    h.ok(Input::Pause {
        agent: a(3),
        reason: ReasonCode(1),
    });
    h.login(1);
    h.ok(Input::Answer {
        agent: a(1),
        contact: c(2),
    });
    h.ok(Input::Ready { agent: a(3) });
    h.enter(req(4, 3));
    h.enter(req(5, 3));
    assert_eq!(h.acd.contact_position(c(5)).unwrap(), Some(1));
    h.take();
    h.ok(Input::Logout { agent: a(3) });
    assert!(h.out.contains(&Output::Overflow {
        contact: c(5),
        target: "hook:x".into()
    }));
    assert!(h.out.contains(&Output::Overflow {
        contact: c(4),
        target: "hook:x".into()
    }));
}

#[test]
fn an_agent_in_two_queues_takes_the_longest_weighted_wait() {
    let mut q1 = queue(1);
    q1.priority = 1;
    let mut q2 = queue(2);
    q2.priority = 3;
    let mut h = H::new(vec![q1, q2], vec![agent(1, &[1, 2], &[])]);
    h.enter(req(1, 1));
    h.now += 30_000;
    h.enter(req(2, 2));
    h.now += 20_000;
    h.enter(req(3, 1));
    // Waits: c1 50 s × 1, c2 20 s × 3 = 60: queue 2 wins.
    h.login(1);
    assert_eq!(h.offers(), vec![(2, vec![1])]);
    h.serve(2, 1);
    h.take();
    h.now += 1;
    h.ok(Input::Answer {
        agent: a(1),
        contact: c(1),
    });
    assert!(h.out.contains(&Output::Connect {
        contact: c(1),
        agent: a(1)
    }));
}

#[test]
fn transfer_move_priority_and_forced_states() {
    let mut h = H::new(
        vec![queue(1), queue(2)],
        vec![agent(1, &[1], &[]), agent(2, &[2], &[])],
    );
    h.login(1);
    h.enter(req(1, 1));
    h.ok(Input::Answer {
        agent: a(1),
        contact: c(1),
    });
    h.now += 4_000;
    h.ok(Input::Transfer {
        contact: c(1),
        queue: QueueId(2),
    });
    assert!(h.events().contains(&EventKind::Transfer {
        to: QueueId(2),
        wait_ms: 0,
        talk_ms: 4_000
    }));
    assert_eq!(h.state(1), AgentState::Available);
    assert_eq!(h.acd.contact_position(c(1)).unwrap(), Some(1));
    h.enter(req(2, 2));
    h.enter(req(3, 2));
    h.ok(Input::SetPriority {
        contact: c(3),
        priority: 5,
    });
    assert_eq!(h.acd.contact_position(c(3)).unwrap(), Some(1));
    h.ok(Input::Move {
        contact: c(2),
        queue: QueueId(1),
    });
    assert_eq!(h.offers().last(), Some(&(2, vec![1])));
    // Supervisor: cannot force an agent on a call; can force a break otherwise.
    h.ok(Input::Answer {
        agent: a(1),
        contact: c(2),
    });
    let r = h.try_do(Input::ForceState {
        agent: a(1),
        state: ForcedState::LoggedOut,
    });
    assert!(matches!(r, Err(AcdError::InvalidTransition { .. })));
    h.ok(Input::ForceState {
        agent: a(2),
        state: ForcedState::Available,
    });
    assert_eq!(
        h.offers().last(),
        Some(&(3, vec![2])),
        "highest priority first"
    );
    h.ok(Input::ForceState {
        agent: a(2),
        state: ForcedState::Break(ReasonCode::SUPERVISOR),
    });
    assert_eq!(h.acd.contact_position(c(3)).unwrap(), Some(1));
}

#[test]
fn announcements_carry_position_and_estimate() {
    let mut q = queue(1);
    q.announce_period_ms = 30_000;
    q.initial_aht_ms = 120_000;
    let mut h = H::new(vec![q], vec![agent(1, &[1], &[]), agent(2, &[1], &[])]);
    h.login(1);
    h.login(2);
    for id in 1..=4 {
        h.enter(req(id, 1));
    }
    h.take();
    h.advance(30_000);
    let ann: Vec<(u64, u32, u64)> = h
        .out
        .iter()
        .filter_map(|o| match o {
            Output::Announce {
                contact,
                position,
                ewt_ms,
            } => Some((contact.0, *position, *ewt_ms)),
            _ => None,
        })
        .collect();
    // Two agents busy, AHT 120 s: position p waits p × 60 s.
    assert_eq!(ann, vec![(3, 1, 60_000), (4, 2, 120_000)]);
    let st = h.acd.queue_status(QueueId(1), h.now).unwrap();
    assert_eq!((st.depth, st.longest_wait_ms, st.staffed), (2, 30_000, 2));
    assert_eq!(st.agents.reserved, 2);
    assert_eq!(st.ewt_ms, Some(180_000));
}

#[test]
fn bad_inputs_are_typed_errors_and_change_nothing() {
    let mut h = H::new(vec![queue(1)], vec![agent(1, &[1], &[])]);
    assert_eq!(
        h.try_do(Input::Login { agent: a(9) }),
        Err(AcdError::UnknownAgent(a(9)))
    );
    assert_eq!(
        h.try_do(Input::Enter(req(1, 9))),
        Err(AcdError::UnknownQueue(QueueId(9)))
    );
    assert_eq!(
        h.try_do(Input::Hangup {
            contact: c(5),
            by: Party::Caller
        }),
        Err(AcdError::UnknownContact(c(5)))
    );
    h.login(1);
    assert!(matches!(
        h.try_do(Input::Login { agent: a(1) }),
        Err(AcdError::InvalidTransition { .. })
    ));
    assert!(matches!(
        h.try_do(Input::Ready { agent: a(1) }),
        Err(AcdError::InvalidTransition { .. })
    ));
    h.enter(req(1, 1));
    assert_eq!(
        h.try_do(Input::Enter(req(1, 1))),
        Err(AcdError::DuplicateContact(c(1)))
    );
    assert!(matches!(
        h.try_do(Input::Hangup {
            contact: c(1),
            by: Party::Agent
        }),
        Err(AcdError::InvalidContactState { .. })
    ));
    assert!(h
        .try_do(Input::Transfer {
            contact: c(1),
            queue: QueueId(1)
        })
        .is_err());
    h.now = 10;
    h.ok(Input::Answer {
        agent: a(1),
        contact: c(1),
    });
    assert_eq!(
        h.acd.handle(5, Input::Logout { agent: a(1) }),
        Err(AcdError::TimeWentBackwards {
            now_ms: 5,
            last_ms: 10
        })
    );
    let mut bad = queue(2);
    bad.priority = 0;
    assert!(matches!(
        h.acd.add_queue(bad),
        Err(AcdError::InvalidConfig(_))
    ));
    assert_eq!(
        h.acd.add_agent(agent(1, &[1], &[])),
        Err(AcdError::DuplicateAgent(a(1)))
    );
    let mut other = agent(2, &[1], &[]);
    other.tenant = TenantId(2);
    assert_eq!(
        h.acd.add_agent(other),
        Err(AcdError::TenantMismatch { queue: QueueId(1) })
    );
}
