//! Statistics against a hand-computed event log (METRICS.md definitions).

use tandem_acd::stats::{Scope, SlVariant, Stats, StatsConfig};
use tandem_acd::*;

const T: TenantId = TenantId(1);
const Q: QueueId = QueueId(1);

fn ev(at_s: u64, contact: u64, agent: Option<u64>, kind: EventKind) -> Output {
    Output::Event(QueueEvent {
        at_ms: at_s * 1000,
        tenant: T,
        queue: Some(Q),
        contact: Some(ContactId(contact)),
        agent: agent.map(AgentId),
        kind,
    })
}

fn st(agent: u64, from: AgentState, to: AgentState, at_s: u64) -> Output {
    Output::AgentStateChanged {
        agent: AgentId(agent),
        tenant: T,
        from,
        to,
        at_ms: at_s * 1000,
    }
}

fn enter(at: u64, c: u64, resumed_from: Option<u64>) -> Output {
    ev(
        at,
        c,
        None,
        EventKind::Enter {
            position: 1,
            ewt_ms: 0,
            resumed_from: resumed_from.map(ContactId),
        },
    )
}

/// Five callers: answered in 10 s and 30 s, abandoned after 3 s (short) and 40 s, one callback
/// requested at 15 s; the fifth re-enters within the grace (not offered twice). Agent 1 takes
/// the first call: idle 5 s, reserved 5 s, talk 60 s, wrap-up 10 s, idle 20 s.
fn log() -> Vec<Output> {
    use AgentState::*;
    vec![
        st(1, LoggedOut, Available, 0),
        enter(0, 1, None),
        enter(0, 2, None),
        enter(0, 3, None),
        enter(0, 4, None),
        enter(0, 5, None),
        ev(3, 3, None, EventKind::Abandon { wait_ms: 3_000 }),
        st(1, Available, Reserved, 5),
        st(1, Reserved, OnCall, 10),
        ev(
            10,
            1,
            Some(1),
            EventKind::Connect {
                wait_ms: 10_000,
                ring_ms: 5_000,
                callback: false,
            },
        ),
        ev(
            15,
            5,
            None,
            EventKind::CallbackRequested { wait_ms: 15_000 },
        ),
        ev(
            30,
            2,
            Some(2),
            EventKind::Connect {
                wait_ms: 30_000,
                ring_ms: 0,
                callback: false,
            },
        ),
        ev(40, 4, None, EventKind::Abandon { wait_ms: 40_000 }),
        enter(50, 6, Some(5)),
        ev(
            70,
            1,
            Some(1),
            EventKind::CompleteCaller {
                wait_ms: 10_000,
                talk_ms: 60_000,
            },
        ),
        st(1, OnCall, WrapUp, 70),
        st(1, WrapUp, Available, 80),
        st(1, Available, LoggedOut, 100),
    ]
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

#[test]
fn queue_figures_match_the_hand_count() {
    let mut s = Stats::new(StatsConfig::default(), &[QueueConfig::new(Q, T)]);
    for o in log() {
        s.observe(&o);
    }
    let q = s.live(Scope::Queue(Q), 100_000);
    assert_eq!(
        (q.offered, q.answered, q.abandoned, q.short_abandoned),
        (5, 2, 2, 1)
    );
    assert_eq!(
        (q.answered_within, q.abandoned_within, q.abandoned_after),
        (1, 1, 1)
    );
    assert!(close(q.service_level(SlVariant::Default), 100.0 / 3.0)); // 1 / (2 + 1)
    assert!(close(q.service_level(SlVariant::AmazonConnect), 60.0)); // (1 + 1 + 1) / 5
    assert!(close(q.service_level(SlVariant::AsteriskSl), 50.0)); // 1 / 2
    assert!(close(q.service_level(SlVariant::AsteriskSl2), 50.0)); // (1 + 1) / (2 + 2)
    assert!(close(q.asa_ms(), 20_000.0));
    assert!(close(q.abandonment_rate(), 40.0));
    assert!(close(q.avg_abandon_ms(), 21_500.0));
    assert!(close(q.aht_ms(), 70_000.0), "talk 60 s + ACW 10 s");
    assert!(close(q.acw_avg_ms(), 10_000.0));
    assert_eq!(q.max_wait_ms, 40_000);

    let a = s.live(Scope::Agent(AgentId(1)), 100_000);
    assert_eq!(
        (a.answered, a.handled, a.busy_ms, a.idle_ms),
        (1, 1, 70_000, 25_000)
    );
    assert!(close(a.occupancy(), 70.0 / 95.0 * 100.0));
    let t = s.live(Scope::Tenant(T), 100_000);
    assert_eq!((t.offered, t.answered, t.busy_ms), (5, 2, 70_000));
}

#[test]
fn short_abandons_can_be_excluded_and_intervals_split_time() {
    let cfg = StatsConfig {
        exclude_short_abandons: true,
        interval_ms: 60_000,
        ..StatsConfig::default()
    };
    let mut s = Stats::new(cfg, &[QueueConfig::new(Q, T)]);
    for o in log() {
        s.observe(&o);
    }
    let q = s.live(Scope::Queue(Q), 100_000);
    assert_eq!((q.abandoned, q.short_abandoned), (1, 1));
    assert!(close(q.abandonment_rate(), 20.0));
    // One-minute intervals: the call (10–70 s) and wrap-up (70–80 s) straddle the boundary.
    let a0 = s.interval(0, Scope::Agent(AgentId(1)));
    let a1 = s.interval(60_000, Scope::Agent(AgentId(1)));
    assert_eq!((a0.busy_ms, a0.idle_ms), (50_000, 5_000));
    assert_eq!((a1.busy_ms, a1.idle_ms, a1.handled), (20_000, 20_000, 1));
    let q0 = s.interval(0, Scope::Queue(Q));
    assert_eq!((q0.offered, q0.answered, q0.abandoned), (5, 2, 1));
    assert_eq!(s.intervals(Scope::Queue(Q)).len(), 2);
}

#[test]
fn stats_follow_a_real_engine_run() {
    let mut q = QueueConfig::new(Q, T);
    q.wrapup_ms = 5_000;
    let mut acd = Acd::new(AcdConfig {
        queues: vec![q.clone()],
        agents: vec![AgentConfig {
            id: AgentId(1),
            tenant: T,
            skills: vec![],
            memberships: vec![Membership::new(Q)],
        }],
        ..AcdConfig::default()
    })
    .unwrap();
    let mut s = Stats::new(StatsConfig::default(), &[q]);
    let feed = |acd: &mut Acd, s: &mut Stats| {
        while let Some(o) = acd.poll_output() {
            s.observe(&o);
        }
    };
    let r = |id| ContactRequest {
        id: ContactId(id),
        queue: Q,
        priority: 0,
        skills: vec![],
        data: vec![],
        caller_key: None,
    };
    acd.handle(0, Input::Enter(r(1))).unwrap();
    acd.handle(25_000, Input::Login { agent: AgentId(1) })
        .unwrap();
    acd.handle(
        26_000,
        Input::Answer {
            agent: AgentId(1),
            contact: ContactId(1),
        },
    )
    .unwrap();
    acd.handle(
        86_000,
        Input::Hangup {
            contact: ContactId(1),
            by: Party::Agent,
        },
    )
    .unwrap();
    acd.handle_timeout(91_000);
    feed(&mut acd, &mut s);
    let c = s.live(Scope::Queue(Q), 91_000);
    assert_eq!(
        (c.offered, c.answered, c.answered_within, c.handled),
        (1, 1, 0, 1)
    );
    assert!(close(c.asa_ms(), 26_000.0));
    assert!(close(c.aht_ms(), 65_000.0));
    assert!(close(c.service_level(SlVariant::Default), 0.0));
}
