//! Run-time reconfiguration: queues and agents changed, removed and re-added while contacts
//! wait, ring and talk. The harness checks every invariant after each step.

mod common;
use common::*;
use tandem_acd::*;

fn c(id: u64) -> ContactId {
    ContactId(id)
}
fn a(id: u64) -> AgentId {
    AgentId(id)
}

fn waiting(h: &H, q: u64) -> Vec<u64> {
    let v = h.acd.queue_contacts(QueueId(q), h.now).unwrap();
    v.iter().map(|w| w.contact.0).collect()
}

#[test]
fn update_queue_recomputes_max_wait_and_keeps_the_order() {
    let mut h = H::new(vec![queue(1)], vec![agent(1, &[1], &[])]);
    h.enter(req(1, 1));
    h.now = 8_000;
    h.enter(req(2, 1));
    h.now = 12_000;
    h.enter(req(3, 1));
    h.now = 15_000;
    h.take();
    let mut q = queue(1);
    q.max_wait_ms = Some(10_000);
    q.overflow = Some(OverflowTarget::External("voicemail:9".into()));
    h.conf(|acd, now| acd.update_queue(now, q)).unwrap();
    // Contact 1 has waited 15 s: past the new 10 s, it overflows at once.
    assert_eq!(
        h.events(),
        vec![EventKind::ExitTimeout {
            wait_ms: 15_000,
            to: None
        }]
    );
    assert!(h.out.contains(&Output::Overflow {
        contact: c(1),
        target: "voicemail:9".into()
    }));
    assert_eq!(waiting(&h, 1), vec![2, 3], "the others keep their order");
    h.take();
    h.advance(2_999);
    assert!(h.events().is_empty());
    h.advance(1);
    assert_eq!(
        h.events(),
        vec![EventKind::ExitTimeout {
            wait_ms: 10_000,
            to: None
        }],
        "contact 2's new deadline is 8 s + 10 s"
    );
    assert_eq!(waiting(&h, 1), vec![3]);
    // Lifting the max wait again disarms contact 3's deadline.
    h.conf(|acd, now| acd.update_queue(now, queue(1))).unwrap();
    h.take();
    h.advance(60_000);
    assert!(h.events().is_empty());
    assert_eq!(waiting(&h, 1), vec![3]);
}

#[test]
fn update_queue_leaves_ringing_offers_on_their_old_timeout() {
    let mut q = queue(1);
    q.ring_timeout_ms = 20_000;
    let mut h = H::new(vec![q.clone()], vec![agent(1, &[1], &[])]);
    h.login(1);
    h.enter(req(1, 1));
    assert_eq!(h.offers(), vec![(1, vec![1])]);
    q.ring_timeout_ms = 5_000;
    q.strategy = Strategy::RoundRobin;
    h.take();
    h.conf(|acd, now| acd.update_queue(now, q)).unwrap();
    h.advance(19_999);
    assert!(h.events().is_empty(), "still ringing after the new 5 s");
    h.advance(1);
    assert_eq!(
        h.events(),
        vec![EventKind::RingNoAnswer { ring_ms: 20_000 }]
    );
    // The agent is back at once (no-answer delay 0) and the next offer rings 5 s.
    assert_eq!(ring_timeouts(&h), vec![5_000]);
    h.take();
    h.advance(5_000);
    assert_eq!(h.events(), vec![EventKind::RingNoAnswer { ring_ms: 5_000 }]);
}

fn ring_timeouts(h: &H) -> Vec<u64> {
    h.out
        .iter()
        .filter_map(|o| match o {
            Output::Offer {
                ring_timeout_ms, ..
            } => Some(*ring_timeout_ms),
            _ => None,
        })
        .collect()
}

#[test]
fn update_queue_relaxation_strategy_and_empty_behaviour_take_effect_now() {
    let mut q = queue(1);
    q.base_max_tier = 0;
    let mut m = agent(1, &[1], &[]);
    m.memberships[0].tier = 2;
    let mut h = H::new(vec![q.clone()], vec![m, agent(2, &[1], &[])]);
    h.login(1);
    h.enter(req(1, 1));
    assert!(h.offers().is_empty(), "tier 2 is not admitted yet");
    // Admitting tier 2 routes the waiting contact at once.
    q.base_max_tier = 2;
    q.strategy = Strategy::RoundRobin;
    h.conf(|acd, now| acd.update_queue(now, q.clone())).unwrap();
    assert_eq!(h.offers(), vec![(1, vec![1])]);
    h.serve(1, 1);
    h.take();
    // Round-robin from here (agent 1 took the last one), then a switch to ring-all rings
    // everyone available.
    h.login(2);
    h.enter(req(2, 1));
    h.enter(req(3, 1));
    assert_eq!(h.offers(), vec![(2, vec![2]), (3, vec![1])]);
    h.serve(2, 2);
    h.serve(3, 1);
    h.take();
    q.strategy = Strategy::RingAll;
    h.conf(|acd, now| acd.update_queue(now, q.clone())).unwrap();
    // Ring-all rings the best tier only: agent 1 moves up to tier 0 beside agent 2.
    h.conf(|acd, now| acd.update_agent(now, agent(1, &[1], &[])))
        .unwrap();
    h.enter(req(4, 1));
    assert_eq!(h.offers(), vec![(4, vec![1, 2])]);
    // Switched away from ring-all while both legs ring: the offer keeps both until answered.
    q.strategy = Strategy::LongestIdle;
    h.conf(|acd, now| acd.update_queue(now, q.clone())).unwrap();
    h.serve(4, 2);
    h.take();
    // Nobody staffed and the queue now says leave: waiting callers exit at once.
    h.ok(Input::Logout { agent: a(1) });
    h.ok(Input::Logout { agent: a(2) });
    h.enter(req(5, 1));
    h.take();
    q.empty = EmptyBehaviour::Leave;
    h.conf(|acd, now| acd.update_queue(now, q)).unwrap();
    assert_eq!(
        h.events(),
        vec![EventKind::ExitEmpty {
            wait_ms: 0,
            to: None
        }]
    );
    assert_eq!(h.acd.contact_count(), 0);
}

#[test]
fn progressive_ring_stops_adding_legs_when_the_strategy_changes() {
    let mut q = queue(1);
    q.strategy = Strategy::RingProgressively { step_ms: 2_000 };
    q.ring_timeout_ms = 30_000;
    let mut h = H::new(
        vec![q.clone()],
        vec![
            agent(1, &[1], &[]),
            agent(2, &[1], &[]),
            agent(3, &[1], &[]),
        ],
    );
    for i in 1..=3 {
        h.login(i);
    }
    h.enter(req(1, 1));
    assert_eq!(h.offers().len(), 1);
    h.advance(2_000);
    assert_eq!(h.offers().len(), 2, "a second leg after one step");
    h.take();
    q.strategy = Strategy::TopDown;
    h.conf(|acd, now| acd.update_queue(now, q)).unwrap();
    h.advance(10_000);
    assert!(h.offers().is_empty(), "no third leg under top-down");
    let ringing = (1..=3)
        .filter(|&i| h.state(i) == AgentState::Reserved)
        .count();
    assert_eq!(ringing, 2);
}

#[test]
fn update_queue_refusals_change_nothing() {
    let mut h = H::new(vec![queue(1)], vec![agent(1, &[1], &[])]);
    h.enter(req(1, 1));
    h.advance(5_000);
    h.take();
    let before = h.acd.queue_status(QueueId(1), h.now).unwrap();
    assert_eq!(
        h.conf(|acd, now| acd.update_queue(now, queue(7))),
        Err(AcdError::UnknownQueue(QueueId(7)))
    );
    let mut other = queue(1);
    other.tenant = TenantId(2);
    assert_eq!(
        h.conf(|acd, now| acd.update_queue(now, other)),
        Err(AcdError::TenantMismatch { queue: QueueId(1) })
    );
    let mut bad = queue(1);
    bad.max_wait_ms = Some(1);
    bad.priority = 0;
    assert!(matches!(
        h.conf(|acd, now| acd.update_queue(now, bad)),
        Err(AcdError::InvalidConfig(_))
    ));
    let mut bad = queue(1);
    bad.max_wait_ms = Some(1);
    assert_eq!(
        h.conf(|acd, _| acd.update_queue(10, bad)),
        Err(AcdError::TimeWentBackwards {
            now_ms: 10,
            last_ms: 5_000
        }),
    );
    assert!(h.out.is_empty());
    assert_eq!(h.acd.queue_status(QueueId(1), h.now).unwrap(), before);
    assert_eq!(waiting(&h, 1), vec![1]);
}

#[test]
fn update_agent_changes_queues_without_disturbing_a_call() {
    let mut q1 = queue(1);
    q1.wrapup_ms = 5_000;
    let mut h = H::new(vec![q1, queue(2)], vec![agent(1, &[1], &[])]);
    h.login(1);
    h.enter(req(1, 1));
    h.ok(Input::Answer {
        agent: a(1),
        contact: c(1),
    });
    h.enter(req(2, 1));
    h.enter(req(3, 2));
    h.take();
    // On a call for queue 1, the agent moves to queue 2 only.
    h.conf(|acd, now| acd.update_agent(now, agent(1, &[2], &[])))
        .unwrap();
    assert!(h.out.is_empty());
    assert_eq!(h.state(1), AgentState::OnCall);
    let s1 = h.acd.queue_status(QueueId(1), h.now).unwrap();
    let s2 = h.acd.queue_status(QueueId(2), h.now).unwrap();
    assert_eq!((s1.staffed, s2.staffed), (0, 1));
    h.now = 60_000;
    h.ok(Input::Hangup {
        contact: c(1),
        by: Party::Caller,
    });
    assert_eq!(
        h.events(),
        vec![EventKind::CompleteCaller {
            wait_ms: 0,
            talk_ms: 60_000
        }]
    );
    assert_eq!(
        h.state(1),
        AgentState::WrapUp,
        "queue 1's wrap-up still applies"
    );
    h.take();
    h.advance(5_000);
    assert_eq!(
        h.offers(),
        vec![(3, vec![1])],
        "then it serves queue 2, not queue 1"
    );
    assert_eq!(waiting(&h, 1), vec![2]);
    let st = h.acd.agent_status(a(1)).unwrap();
    assert_eq!(st.calls, 1, "statistics kept");
}

#[test]
fn update_agent_routes_newly_fitting_work_at_once() {
    let mut h = H::new(vec![queue(1), queue(2)], vec![agent(1, &[1], &[])]);
    h.login(1);
    let mut r = req(1, 1);
    r.skills = vec![(SkillId(3), 2)];
    h.enter(r);
    h.enter(req(2, 2));
    assert!(h.offers().is_empty());
    // A membership of queue 2 with a 10 s delay: contact 2 (waited 4 s) goes to it at 10 s.
    h.now = 4_000;
    let mut cfg = agent(1, &[1, 2], &[]);
    cfg.memberships[1].delay_ms = 10_000;
    h.conf(|acd, now| acd.update_agent(now, cfg)).unwrap();
    assert!(h.offers().is_empty());
    h.advance(5_999);
    assert!(h.offers().is_empty());
    h.advance(1);
    assert_eq!(h.offers(), vec![(2, vec![1])]);
    h.serve(2, 1);
    h.take();
    // The skill contact 1 needs: offered as soon as the agent has it.
    h.conf(|acd, now| acd.update_agent(now, agent(1, &[1, 2], &[(3, 4)])))
        .unwrap();
    assert_eq!(h.offers(), vec![(1, vec![1])]);
}

#[test]
fn update_agent_refusals_change_nothing() {
    let mut h = H::new(vec![queue(1), queue(2)], vec![agent(1, &[1], &[])]);
    h.login(1);
    h.take();
    let cases = [
        (agent(9, &[1], &[]), AcdError::UnknownAgent(a(9))),
        (agent(1, &[1, 7], &[]), AcdError::UnknownQueue(QueueId(7))),
        (
            AgentConfig {
                tenant: TenantId(2),
                ..agent(1, &[], &[])
            },
            AcdError::AgentTenantMismatch(a(1)),
        ),
    ];
    for (cfg, err) in cases {
        assert_eq!(h.conf(|acd, now| acd.update_agent(now, cfg)), Err(err));
    }
    assert!(matches!(
        h.conf(|acd, now| acd.update_agent(now, agent(1, &[2, 2], &[]))),
        Err(AcdError::InvalidConfig(_))
    ));
    assert!(matches!(
        h.conf(|acd, now| acd.update_agent(now, agent(1, &[2], &[(999, 1)]))),
        Err(AcdError::InvalidConfig(_))
    ));
    let mut q3 = queue(3);
    q3.tenant = TenantId(2);
    h.acd.add_queue(q3).unwrap();
    assert_eq!(
        h.conf(|acd, now| acd.update_agent(now, agent(1, &[3], &[]))),
        Err(AcdError::TenantMismatch { queue: QueueId(3) })
    );
    assert!(h.out.is_empty());
    let s = h.acd.queue_status(QueueId(1), 0).unwrap();
    assert_eq!((s.staffed, s.agents.available), (1, 1));
    h.enter(req(1, 1));
    assert_eq!(h.offers(), vec![(1, vec![1])], "still a member of queue 1");
}

#[test]
fn remove_queue_refused_while_in_use_then_removed_and_id_reused() {
    let mut q1 = queue(1);
    q1.overflow = Some(OverflowTarget::Queue(QueueId(2)));
    let mut h = H::with(AcdConfig {
        queues: vec![q1.clone(), queue(2), queue(3)],
        agents: vec![agent(1, &[1, 2], &[])],
        resume_grace_ms: 30_000,
        ..AcdConfig::default()
    });
    let rm = |h: &mut H, q: u64| h.conf(|acd, now| acd.remove_queue(now, QueueId(q)));
    assert_eq!(rm(&mut h, 9), Err(AcdError::UnknownQueue(QueueId(9))));
    assert_eq!(
        rm(&mut h, 2),
        Err(AcdError::QueueReferenced {
            queue: QueueId(2),
            by: QueueId(1)
        })
    );
    q1.overflow = None;
    h.conf(|acd, now| acd.update_queue(now, q1)).unwrap();
    // Waiting, then connected: busy.
    h.enter(req(1, 2));
    assert_eq!(rm(&mut h, 2), Err(AcdError::QueueBusy(QueueId(2))));
    h.login(1);
    assert_eq!(
        rm(&mut h, 2),
        Err(AcdError::QueueBusy(QueueId(2))),
        "ringing"
    );
    h.ok(Input::Answer {
        agent: a(1),
        contact: c(1),
    });
    assert_eq!(
        rm(&mut h, 2),
        Err(AcdError::QueueBusy(QueueId(2))),
        "connected"
    );
    h.ok(Input::Hangup {
        contact: c(1),
        by: Party::Agent,
    });
    // A caller of queue 3 who hung up is in the resume grace: removal ends it as an abandon.
    let mut r = req(2, 3);
    r.caller_key = Some("+15550100".into());
    h.enter(r);
    h.now = 4_000;
    h.ok(Input::Hangup {
        contact: c(2),
        by: Party::Caller,
    });
    h.take();
    rm(&mut h, 3).unwrap();
    assert_eq!(h.events(), vec![EventKind::Abandon { wait_ms: 4_000 }]);
    rm(&mut h, 2).unwrap();
    assert_eq!(
        h.acd.queue_status(QueueId(2), h.now),
        Err(AcdError::UnknownQueue(QueueId(2)))
    );
    // The agent's membership of queue 2 went with it; the id can be used again.
    h.acd.add_queue(queue(2)).unwrap();
    h.enter(req(3, 2));
    assert_eq!(waiting(&h, 2), vec![3], "not a member of the new queue 2");
    h.take();
    h.enter(req(4, 1));
    assert_eq!(h.offers(), vec![(4, vec![1])]);
    assert_eq!(
        h.acd.queue_status(QueueId(2), h.now).unwrap().staffed,
        0,
        "no stale member counted"
    );
}

#[test]
fn remove_agent_only_when_logged_out_and_the_id_is_reusable() {
    let mut h = H::new(
        vec![queue(1)],
        vec![agent(1, &[1], &[]), agent(2, &[1], &[])],
    );
    h.login(1);
    let rm = |h: &mut H, x: u64| h.conf(|acd, now| acd.remove_agent(now, a(x)));
    assert_eq!(rm(&mut h, 1), Err(AcdError::AgentBusy(a(1))));
    assert_eq!(rm(&mut h, 9), Err(AcdError::UnknownAgent(a(9))));
    rm(&mut h, 2).unwrap();
    assert_eq!(h.acd.agent_status(a(2)), Err(AcdError::UnknownAgent(a(2))));
    let s = h.acd.queue_status(QueueId(1), 0).unwrap();
    assert_eq!((s.agents.logged_out, s.agents.available), (0, 1));
    h.ok(Input::Logout { agent: a(1) });
    rm(&mut h, 1).unwrap();
    // Both slots are reused; the old agents' statistics do not come back.
    h.acd.add_agent(agent(2, &[1], &[])).unwrap();
    h.acd.add_agent(agent(1, &[1], &[])).unwrap();
    h.acd.check_invariants().unwrap();
    h.login(2);
    h.enter(req(1, 1));
    assert_eq!(h.offers(), vec![(1, vec![2])]);
    assert_eq!(h.acd.agent_status(a(1)).unwrap().calls, 0);
}

#[test]
fn queue_contacts_lists_waiting_contacts_in_service_order() {
    let mut h = H::new(vec![queue(1)], vec![agent(1, &[1], &[])]);
    h.enter(req(1, 1));
    h.now = 1_000;
    let mut r = req(2, 1);
    r.priority = 5;
    h.enter(r);
    h.now = 2_000;
    h.enter(req(3, 1));
    h.ok(Input::RequestCallback {
        contact: c(1),
        number: "+15550100".into(),
    });
    h.now = 3_000;
    let v = h.acd.queue_contacts(QueueId(1), h.now).unwrap();
    let w = |contact, position, waited_ms, priority, callback| WaitingContact {
        contact: c(contact),
        position,
        waited_ms,
        priority,
        callback,
    };
    assert_eq!(
        v,
        vec![
            w(2, 1, 2_000, 5, false),
            w(1, 2, 3_000, 0, true),
            w(3, 3, 1_000, 0, false),
        ]
    );
    // One ringing an agent is not waiting.
    h.login(1);
    let v = h.acd.queue_contacts(QueueId(1), h.now).unwrap();
    assert_eq!(
        v.iter().map(|w| w.contact.0).collect::<Vec<_>>(),
        vec![1, 3]
    );
    assert_eq!(v[0].position, 1);
    assert_eq!(
        h.acd.queue_contacts(QueueId(5), 0),
        Err(AcdError::UnknownQueue(QueueId(5)))
    );
}

#[test]
fn membership_orders_are_renumbered_when_their_16_bits_run_out() {
    let mut q = queue(1);
    q.strategy = Strategy::RoundRobin;
    let agents = (1..=4).map(|i| agent(i, &[1], &[])).collect();
    let mut h = H::new(vec![q], agents);
    for i in 1..=3 {
        h.login(i);
    }
    // Round robin: 1, then 2 (the cursor sits after agent 2).
    for (cid, want) in [(1, 1), (2, 2)] {
        h.take();
        h.enter(req(cid, 1));
        assert_eq!(h.offers(), vec![(cid, vec![want])]);
        h.serve(cid, want);
    }
    // Agent 4 leaves and rejoins until the orders wrap past 65,536.
    for _ in 0..70_000 {
        h.acd.update_agent(h.now, agent(4, &[], &[])).unwrap();
        h.acd.update_agent(h.now, agent(4, &[1], &[])).unwrap();
    }
    h.acd.check_invariants().unwrap();
    h.take();
    h.login(4);
    assert!(h.offers().is_empty());
    for (cid, want) in [(3, 3), (4, 4), (5, 1)] {
        h.take();
        h.enter(req(cid, 1));
        assert_eq!(h.offers(), vec![(cid, vec![want])], "round robin in order");
        h.serve(cid, want);
    }
}
