//! Property test: random event sequences (logins, breaks, calls, hang-ups at any moment,
//! no-answers, rejects, transfers, moves, callbacks, supervisor forcing, time jumps) against a
//! randomly configured ACD. After every step: `check_invariants` (no contact offered to two
//! agents outside one ring-all/progressive offer, no agent beyond one call, indexes in step,
//! every deadline armed, routing at a fixed point); no input panics; every contact ends with
//! exactly one final event, and all do once everyone hangs up and time runs on. The outputs
//! alone are checked too: no agent offered a contact while it holds another, no contact offered
//! to two agents unless its queue rings all or progressively, a connect only to the one leg
//! left. The second test mixes in run-time reconfiguration (queues and agents updated, removed
//! and re-added, refusals included) and ends by taking everything down.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;
use tandem_acd::{
    Acd, AcdConfig, AgentConfig, AgentId, ContactId, ContactRequest, EmptyBehaviour, EventKind,
    ForcedState, Input, Membership, Output, OverflowTarget, Party, QueueConfig, QueueId,
    ReasonCode, RelaxRule, SkillId, TenantId,
};

const T: TenantId = TenantId(1);

#[derive(Debug, Clone)]
enum Op {
    Enter {
        c: u64,
        q: u64,
        prio: i32,
        skill: Option<(u16, u8)>,
        key: Option<u8>,
    },
    Hangup {
        c: u64,
        agent: bool,
    },
    LeaveKey {
        c: u64,
    },
    Callback {
        c: u64,
    },
    CallbackResult {
        c: u64,
        ok: bool,
    },
    Transfer {
        c: u64,
        q: u64,
    },
    Move {
        c: u64,
        q: u64,
    },
    SetPriority {
        c: u64,
        p: i32,
    },
    Login {
        a: u64,
    },
    Logout {
        a: u64,
    },
    Pause {
        a: u64,
        r: u32,
    },
    Ready {
        a: u64,
    },
    Extend {
        a: u64,
    },
    /// Acts on the agent's current offer (Ringing / Answer / Reject), or a random contact.
    Ring {
        a: u64,
    },
    Answer {
        a: u64,
        stray: Option<u64>,
    },
    Reject {
        a: u64,
    },
    Force {
        a: u64,
        s: u8,
    },
    Advance {
        ms: u64,
    },
    /// The shell wakes late: one `handle_timeout` far past several deadlines.
    Jump {
        ms: u64,
    },
    /// Run-time reconfiguration (ids beyond the initial ones included).
    UpdateQueue {
        q: u64,
        p: QParams,
    },
    AddQueue {
        q: u64,
        p: QParams,
    },
    RemoveQueue {
        q: u64,
    },
    UpdateAgent {
        a: u64,
        p: AParams,
    },
    AddAgent {
        a: u64,
        p: AParams,
    },
    /// Logs the agent out first when `logout` (pending if it is on a call).
    RemoveAgent {
        a: u64,
        logout: bool,
    },
}

/// A queue's settings as the reconfiguration ops draw them.
#[derive(Debug, Clone)]
struct QParams {
    strategy: u8,
    priority: u32,
    wrap: u64,
    max_wait: Option<u64>,
    leave_empty: bool,
    /// 0 none, 1 external, else a queue id (itself included: refused).
    overflow: u64,
    base_max_tier: u8,
    relax_after: Option<u64>,
    routing_delay: u64,
    ring_timeout: u64,
    announce: bool,
}

fn qparams() -> impl Strategy<Value = QParams> {
    (
        (
            any::<u8>(),
            1u32..3,
            0u64..2,
            proptest::option::of(5_000u64..90_000),
        ),
        (any::<bool>(), 0u64..6, 0u8..3),
        (
            proptest::option::of(0u64..60_000),
            prop_oneof![Just(0u64), 1u64..5_000],
            5_000u64..30_000,
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (strategy, priority, wrap, max_wait),
                (leave_empty, overflow, base_max_tier),
                (relax_after, routing_delay, ring_timeout, announce),
            )| QParams {
                strategy,
                priority,
                wrap: wrap * 15_000,
                max_wait,
                leave_empty,
                overflow,
                base_max_tier,
                relax_after,
                routing_delay,
                ring_timeout,
                announce,
            },
        )
}

fn queue_cfg(id: u64, p: &QParams) -> QueueConfig {
    let mut q = QueueConfig::new(QueueId(id), T);
    q.strategy = strategy(p.strategy);
    q.priority = p.priority;
    q.wrapup_ms = p.wrap;
    q.max_wait_ms = p.max_wait;
    q.ring_timeout_ms = p.ring_timeout;
    q.max_no_answer = 2;
    q.reject_delay_ms = 2_000;
    q.no_answer_delay_ms = 3_000;
    q.announce_period_ms = if p.announce { 20_000 } else { 0 };
    q.base_max_tier = p.base_max_tier;
    q.relax = p
        .relax_after
        .map(|after_ms| RelaxRule {
            after_ms,
            max_tier: Some(2),
            min_proficiency: Some(1),
        })
        .into_iter()
        .collect();
    q.routing_delay_ms = p.routing_delay;
    q.empty = if p.leave_empty {
        EmptyBehaviour::Leave
    } else {
        EmptyBehaviour::Wait
    };
    q.overflow = match p.overflow {
        0 => None,
        1 => Some(OverflowTarget::External("voicemail:1".into())),
        t => Some(OverflowTarget::Queue(QueueId(t - 1))),
    };
    q
}

/// An agent's skills and memberships as the reconfiguration ops draw them.
#[derive(Debug, Clone)]
struct AParams {
    skills: Vec<(u16, u8)>,
    members: Vec<(u64, u8, u64)>,
}

fn aparams() -> impl Strategy<Value = AParams> {
    (
        proptest::collection::vec((0u16..4, 1u8..6), 0..3),
        proptest::collection::vec(
            (1u64..6, 0u8..3, prop_oneof![Just(0u64), 1u64..8_000]),
            0..4,
        ),
    )
        .prop_map(|(skills, members)| AParams { skills, members })
}

fn agent_cfg(id: u64, p: &AParams) -> AgentConfig {
    let mut memberships: Vec<Membership> = Vec::new();
    for &(q, tier, delay) in &p.members {
        if memberships.iter().all(|m| m.queue != QueueId(q)) {
            let mut m = Membership::new(QueueId(q));
            m.tier = tier;
            m.delay_ms = delay;
            m.weight = u32::from(tier) + 1;
            memberships.push(m);
        }
    }
    let mut skills: Vec<(SkillId, u8)> = Vec::new();
    for &(s, p) in &p.skills {
        if skills.iter().all(|x| x.0 != SkillId(s)) {
            skills.push((SkillId(s), p));
        }
    }
    AgentConfig {
        id: AgentId(id),
        tenant: T,
        skills,
        memberships,
    }
}

/// The ordinary ops with run-time reconfiguration mixed in.
fn op_rt() -> impl Strategy<Value = Op> {
    let q = 1u64..6; // 4 and 5 do not exist at first
    let a = 1u64..9; // 6, 7 and 8 do not exist at first
    prop_oneof![
        30 => op(),
        3 => (q.clone(), qparams()).prop_map(|(q, p)| Op::UpdateQueue { q, p }),
        1 => (q.clone(), qparams()).prop_map(|(q, p)| Op::AddQueue { q, p }),
        1 => q.prop_map(|q| Op::RemoveQueue { q }),
        3 => (a.clone(), aparams()).prop_map(|(a, p)| Op::UpdateAgent { a, p }),
        1 => (a.clone(), aparams()).prop_map(|(a, p)| Op::AddAgent { a, p }),
        1 => (a, any::<bool>()).prop_map(|(a, logout)| Op::RemoveAgent { a, logout }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let c = 1u64..14;
    let a = 1u64..8; // 6 and 7 do not exist
    let q = 1u64..5; // 4 does not exist
    prop_oneof![
        4 => (c.clone(), q.clone(), -1i32..3, proptest::option::of((0u16..4, 1u8..6)), proptest::option::of(0u8..2))
            .prop_map(|(c, q, prio, skill, key)| Op::Enter { c, q, prio, skill, key }),
        3 => (c.clone(), any::<bool>()).prop_map(|(c, agent)| Op::Hangup { c, agent }),
        1 => c.clone().prop_map(|c| Op::LeaveKey { c }),
        1 => c.clone().prop_map(|c| Op::Callback { c }),
        1 => (c.clone(), any::<bool>()).prop_map(|(c, ok)| Op::CallbackResult { c, ok }),
        1 => (c.clone(), q.clone()).prop_map(|(c, q)| Op::Transfer { c, q }),
        1 => (c.clone(), q.clone()).prop_map(|(c, q)| Op::Move { c, q }),
        1 => (c.clone(), -2i32..4).prop_map(|(c, p)| Op::SetPriority { c, p }),
        5 => a.clone().prop_map(|a| Op::Login { a }),
        1 => a.clone().prop_map(|a| Op::Logout { a }),
        1 => (a.clone(), 1u32..3).prop_map(|(a, r)| Op::Pause { a, r }),
        2 => a.clone().prop_map(|a| Op::Ready { a }),
        1 => a.clone().prop_map(|a| Op::Extend { a }),
        2 => a.clone().prop_map(|a| Op::Ring { a }),
        10 => (a.clone(), proptest::option::weighted(0.1, 1u64..14)).prop_map(|(a, stray)| Op::Answer { a, stray }),
        1 => a.clone().prop_map(|a| Op::Reject { a }),
        1 => (a.clone(), 0u8..3).prop_map(|(a, s)| Op::Force { a, s }),
        1 => (1u64..200_000).prop_map(|ms| Op::Jump { ms }),
        4 => prop_oneof![0u64..3_000, 3_000u64..40_000, 40_000u64..400_000].prop_map(|ms| Op::Advance { ms }),
    ]
}

fn strategy(i: u8) -> Strategy_ {
    [
        Strategy_::RingAll,
        Strategy_::LongestIdle,
        Strategy_::RoundRobin,
        Strategy_::Random,
        Strategy_::RingProgressively { step_ms: 4_000 },
        Strategy_::BestProficiency,
        Strategy_::FewestCalls,
    ][usize::from(i) % 7]
}
use tandem_acd::Strategy as Strategy_;

#[derive(Debug, Clone)]
struct World {
    strategies: [u8; 3],
    wrap: [u64; 3],
    max_wait: [Option<u64>; 3],
    leave_empty: [bool; 3],
    grace_ms: u64,
    skills: Vec<Vec<(u16, u8)>>,
    members: Vec<Vec<(u64, u8)>>,
}

fn world() -> impl Strategy<Value = World> {
    (
        any::<[u8; 3]>(),
        [0u64..2, 0u64..2, 0u64..2],
        [
            proptest::option::of(10_000u64..90_000),
            proptest::option::of(10_000u64..90_000),
            proptest::option::of(10_000u64..90_000),
        ],
        any::<[bool; 3]>(),
        prop_oneof![Just(0u64), 1_000u64..60_000],
        proptest::collection::vec(proptest::collection::vec((0u16..4, 1u8..6), 0..3), 5),
        proptest::collection::vec(proptest::collection::vec((1u64..4, 0u8..3), 1..3), 5),
    )
        .prop_map(
            |(strategies, wrap, max_wait, leave_empty, grace_ms, skills, members)| World {
                strategies,
                wrap: wrap.map(|w| w * 15_000),
                max_wait,
                leave_empty,
                grace_ms,
                skills,
                members,
            },
        )
}

/// Queue `id` (1..=3) of the initial world.
fn acd_queue(w: &World, id: u64) -> QueueConfig {
    let i = (id - 1) as usize;
    let mut q = QueueConfig::new(QueueId(id), T);
    q.strategy = strategy(w.strategies[i]);
    q.wrapup_ms = w.wrap[i];
    q.max_wait_ms = w.max_wait[i];
    q.ring_timeout_ms = 15_000;
    q.max_no_answer = 2;
    q.reject_delay_ms = 2_000;
    q.no_answer_delay_ms = 3_000;
    q.announce_period_ms = if i == 0 { 20_000 } else { 0 };
    q.base_max_tier = 1;
    q.relax = vec![RelaxRule {
        after_ms: 30_000,
        max_tier: Some(2),
        min_proficiency: Some(1),
    }];
    q.routing_delay_ms = if i == 2 { 1_000 } else { 0 };
    q.empty = if w.leave_empty[i] && i == 2 {
        EmptyBehaviour::Leave
    } else {
        EmptyBehaviour::Wait
    };
    q.overflow = match i {
        0 => Some(OverflowTarget::Queue(QueueId(2))),
        1 => Some(OverflowTarget::External("voicemail:1".into())),
        _ => Some(OverflowTarget::Queue(QueueId(1))),
    };
    q
}

fn build(w: &World) -> Acd {
    let queues = (1..=3).map(|id| acd_queue(w, id)).collect();
    let agents = (0..5)
        .map(|i| {
            let mut members: Vec<Membership> = Vec::new();
            for &(q, tier) in &w.members[i] {
                if members.iter().all(|m| m.queue != QueueId(q)) {
                    let mut m = Membership::new(QueueId(q));
                    m.tier = tier;
                    m.delay_ms = u64::from(tier) * 2_000;
                    members.push(m);
                }
            }
            let mut skills: Vec<(SkillId, u8)> = Vec::new();
            for &(s, p) in &w.skills[i] {
                if skills.iter().all(|x| x.0 != SkillId(s)) {
                    skills.push((SkillId(s), p));
                }
            }
            AgentConfig {
                id: AgentId(i as u64 + 1),
                tenant: T,
                skills,
                memberships: members,
            }
        })
        .collect();
    Acd::new(AcdConfig {
        seed: 3,
        resume_grace_ms: w.grace_ms,
        callback_retry_ms: 10_000,
        callback_max_attempts: 2,
        callback_dial_timeout_ms: 20_000,
        max_contacts: 64,
        queues,
        agents,
        ..AcdConfig::default()
    })
    .expect("valid config")
}

struct Run {
    acd: Acd,
    now: u64,
    /// Contacts alive (entered, no final event yet).
    live: HashMap<u64, bool>,
    /// Each queue's settings as last accepted (for the strategy an offer is made under, and to
    /// take everything down at the end).
    queues: HashMap<u64, QueueConfig>,
    agents: HashSet<u64>,
    /// From the outputs alone: the agents each contact is being offered to, and whom each
    /// agent is ringing or talking to.
    legs: HashMap<u64, HashSet<u64>>,
    holds: HashMap<u64, u64>,
}

impl Run {
    fn new(w: &World) -> Run {
        let acd = build(w);
        let queues = (1..=3)
            .map(|q| (q, acd_queue(w, q)))
            .collect::<HashMap<u64, QueueConfig>>();
        Run {
            acd,
            now: 0,
            live: HashMap::new(),
            queues,
            agents: (1..=5).collect(),
            legs: HashMap::new(),
            holds: HashMap::new(),
        }
    }

    fn offer_leg(&mut self, c: u64, a: u64, queue: Option<u64>) -> Result<(), TestCaseError> {
        if let Some(other) = self.holds.insert(a, c) {
            return Err(TestCaseError::fail(format!(
                "agent {a} offered contact {c} while holding {other}"
            )));
        }
        let legs = self.legs.entry(c).or_default();
        legs.insert(a);
        if legs.len() > 1 {
            let multi = queue.and_then(|q| self.queues.get(&q)).is_some_and(|q| {
                matches!(
                    q.strategy,
                    Strategy_::RingAll | Strategy_::RingProgressively { .. }
                )
            });
            prop_assert!(multi, "contact {} offered to {:?}", c, legs);
        }
        Ok(())
    }

    fn end_leg(&mut self, c: u64, a: u64) -> Result<(), TestCaseError> {
        let had = self.legs.get_mut(&c).is_some_and(|l| l.remove(&a));
        prop_assert!(had, "agent {} was not offered contact {}", a, c);
        prop_assert_eq!(self.holds.remove(&a), Some(c));
        Ok(())
    }

    fn drain(&mut self) -> Result<(), TestCaseError> {
        while let Some(o) = self.acd.poll_output() {
            match &o {
                Output::Offer {
                    contact,
                    queue,
                    agents,
                    ..
                } => {
                    for a in agents {
                        self.offer_leg(contact.0, a.0, Some(queue.0))?;
                    }
                }
                Output::PlaceCallback { contact, agent, .. } => {
                    self.offer_leg(contact.0, agent.0, None)?;
                }
                Output::CancelOffer { contact, agent } => self.end_leg(contact.0, agent.0)?,
                Output::Connect { contact, agent } => {
                    let legs = self.legs.remove(&contact.0).unwrap_or_default();
                    prop_assert!(
                        legs.len() == 1 && legs.contains(&agent.0),
                        "contact {:?} connected to {:?} while offered to {:?}",
                        contact,
                        agent,
                        legs
                    );
                }
                _ => {}
            }
            if let Output::Event(e) = &o {
                let (Some(c), kind) = (e.contact, &e.kind) else {
                    continue;
                };
                if kind.ends_contact() || matches!(kind, EventKind::Transfer { .. }) {
                    // The contact leaves any agent that was talking to it.
                    self.holds.retain(|_, h| *h != c.0);
                }
                if kind.ends_contact() {
                    prop_assert!(
                        self.legs.get(&c.0).is_none_or(|l| l.is_empty()),
                        "contact {:?} ended with legs ringing",
                        c
                    );
                    let was = self.live.insert(c.0, false);
                    prop_assert_eq!(
                        was,
                        Some(true),
                        "second final event for {:?}: {:?}",
                        c,
                        e.kind
                    );
                }
                if let EventKind::Enter { .. } = e.kind {
                    self.live.insert(c.0, true);
                }
            }
        }
        if let Err(e) = self.acd.check_invariants() {
            return Err(TestCaseError::fail(format!("at {} ms: {e}", self.now)));
        }
        Ok(())
    }

    /// A run-time reconfiguration call; errors are fine (ids unknown, in use, refused), but
    /// one that fails must change nothing: no outputs.
    fn reconfigure(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = self.now;
        let r = match op {
            Op::UpdateQueue { q, p } | Op::AddQueue { q, p } => {
                let cfg = queue_cfg(*q, p);
                let r = if matches!(op, Op::UpdateQueue { .. }) {
                    self.acd.update_queue(now, cfg.clone())
                } else {
                    self.acd.add_queue(cfg.clone())
                };
                if r.is_ok() {
                    self.queues.insert(*q, cfg);
                }
                r
            }
            Op::RemoveQueue { q } => {
                let r = self.acd.remove_queue(now, QueueId(*q));
                if r.is_ok() {
                    self.queues.remove(q);
                }
                r
            }
            Op::UpdateAgent { a, p } => self.acd.update_agent(now, agent_cfg(*a, p)),
            Op::AddAgent { a, p } => {
                let r = self.acd.add_agent(agent_cfg(*a, p));
                if r.is_ok() {
                    self.agents.insert(*a);
                }
                r
            }
            Op::RemoveAgent { a, logout } => {
                if *logout {
                    let _ = self.acd.handle(now, Input::Logout { agent: AgentId(*a) });
                    self.drain()?;
                }
                let r = self.acd.remove_agent(now, AgentId(*a));
                if r.is_ok() {
                    self.agents.remove(a);
                }
                r
            }
            _ => unreachable!("not a reconfiguration"),
        };
        if r.is_err() {
            prop_assert!(
                self.acd.poll_output().is_none(),
                "{:?} failed with outputs",
                op
            );
        }
        self.drain()
    }

    fn advance(&mut self, ms: u64) -> Result<(), TestCaseError> {
        let target = self.now + ms;
        while let Some(at) = self.acd.poll_timeout() {
            if at > target {
                break;
            }
            self.now = self.now.max(at);
            self.acd.handle_timeout(self.now);
            self.drain()?;
        }
        self.now = target;
        self.acd.handle_timeout(target);
        self.drain()
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let cur = |acd: &Acd, a: u64| acd.agent_status(AgentId(a)).ok().and_then(|s| s.contact);
        let input = match *op {
            Op::UpdateQueue { .. }
            | Op::AddQueue { .. }
            | Op::RemoveQueue { .. }
            | Op::UpdateAgent { .. }
            | Op::AddAgent { .. }
            | Op::RemoveAgent { .. } => return self.reconfigure(op),
            Op::Advance { ms } => return self.advance(ms),
            Op::Jump { ms } => {
                self.now += ms;
                self.acd.handle_timeout(self.now);
                return self.drain();
            }
            Op::Enter {
                c,
                q,
                prio,
                skill,
                key,
            } => Input::Enter(ContactRequest {
                id: ContactId(c),
                queue: QueueId(q),
                priority: prio,
                skills: skill.map(|(s, p)| (SkillId(s), p)).into_iter().collect(),
                data: vec![],
                caller_key: key.map(|k| format!("caller-{k}")),
            }),
            Op::Hangup { c, agent } => Input::Hangup {
                contact: ContactId(c),
                by: if agent { Party::Agent } else { Party::Caller },
            },
            Op::LeaveKey { c } => Input::LeaveKey {
                contact: ContactId(c),
            },
            Op::Callback { c } => Input::RequestCallback {
                contact: ContactId(c),
                number: "1".into(),
            },
            Op::CallbackResult { c, ok } => Input::CallbackResult {
                contact: ContactId(c),
                answered: ok,
            },
            Op::Transfer { c, q } => Input::Transfer {
                contact: ContactId(c),
                queue: QueueId(q),
            },
            Op::Move { c, q } => Input::Move {
                contact: ContactId(c),
                queue: QueueId(q),
            },
            Op::SetPriority { c, p } => Input::SetPriority {
                contact: ContactId(c),
                priority: p,
            },
            Op::Login { a } => Input::Login { agent: AgentId(a) },
            Op::Logout { a } => Input::Logout { agent: AgentId(a) },
            Op::Pause { a, r } => Input::Pause {
                agent: AgentId(a),
                reason: ReasonCode(r),
            },
            Op::Ready { a } => Input::Ready { agent: AgentId(a) },
            Op::Extend { a } => Input::ExtendWrapUp {
                agent: AgentId(a),
                extra_ms: 5_000,
            },
            Op::Ring { a } => Input::Ringing {
                agent: AgentId(a),
                contact: cur(&self.acd, a).unwrap_or(ContactId(99)),
            },
            Op::Answer { a, stray } => Input::Answer {
                agent: AgentId(a),
                contact: stray
                    .map(ContactId)
                    .or(cur(&self.acd, a))
                    .unwrap_or(ContactId(99)),
            },
            Op::Reject { a } => Input::Reject {
                agent: AgentId(a),
                contact: cur(&self.acd, a).unwrap_or(ContactId(99)),
            },
            Op::Force { a, s } => Input::ForceState {
                agent: AgentId(a),
                state: match s {
                    0 => ForcedState::LoggedOut,
                    1 => ForcedState::Available,
                    _ => ForcedState::Break(ReasonCode::SUPERVISOR),
                },
            },
        };
        // Errors are fine (unknown ids, wrong states); panics and broken invariants are not.
        let reject = match &input {
            Input::Reject { agent, contact } => Some((contact.0, agent.0)),
            _ => None,
        };
        let r = self.acd.handle(self.now, input);
        if let (Ok(()), Some((c, a))) = (r, reject) {
            // A reject ends the leg without a CancelOffer (the agent's device refused it).
            self.end_leg(c, a)?;
        }
        self.drain()
    }
}

/// Everyone hangs up, callbacks fail, time runs on: every contact must end, exactly once.
fn wind_down(run: &mut Run) -> Result<(), TestCaseError> {
    for round in 0..4 {
        let live: Vec<u64> = run
            .live
            .iter()
            .filter(|(_, &l)| l)
            .map(|(&c, _)| c)
            .collect();
        for c in live {
            for by in [Party::Caller, Party::Agent] {
                let _ = run.acd.handle(
                    run.now,
                    Input::Hangup {
                        contact: ContactId(c),
                        by,
                    },
                );
                run.drain()?;
            }
            let _ = run.acd.handle(
                run.now,
                Input::CallbackResult {
                    contact: ContactId(c),
                    answered: false,
                },
            );
            run.drain()?;
        }
        run.advance(3_600_000 * (round + 1))?;
    }
    let left: Vec<u64> = run
        .live
        .iter()
        .filter(|(_, &l)| l)
        .map(|(&c, _)| c)
        .collect();
    prop_assert!(left.is_empty(), "contacts never ended: {:?}", left);
    prop_assert_eq!(run.acd.contact_count(), 0);
    prop_assert!(
        run.holds.is_empty(),
        "agents still holding: {:?}",
        run.holds
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn random_event_sequences_keep_every_invariant(w in world(), ops in proptest::collection::vec(op(), 1..120)) {
        let mut run = Run::new(&w);
        for op in &ops {
            run.apply(op)?;
        }
        wind_down(&mut run)?;
    }

    /// The same, with queues and agents updated, removed and re-added between the events.
    /// Once the contacts are gone everything can be taken down: agents after logging out, queues
    /// once nothing overflows to them.
    #[test]
    fn reconfiguration_between_events_keeps_every_invariant(w in world(), ops in proptest::collection::vec(op_rt(), 1..150)) {
        let mut run = Run::new(&w);
        for op in &ops {
            run.apply(op)?;
        }
        wind_down(&mut run)?;
        let mut agents: Vec<u64> = run.agents.iter().copied().collect();
        agents.sort_unstable();
        for a in agents {
            let _ = run.acd.handle(run.now, Input::Logout { agent: AgentId(a) });
            run.drain()?;
            prop_assert_eq!(run.acd.remove_agent(run.now, AgentId(a)), Ok(()));
            run.drain()?;
        }
        let mut queues: Vec<(u64, QueueConfig)> = run.queues.drain().collect();
        queues.sort_unstable_by_key(|q| q.0);
        for (_, q) in &queues {
            let cfg = QueueConfig { overflow: None, ..q.clone() };
            prop_assert_eq!(run.acd.update_queue(run.now, cfg), Ok(()));
            run.drain()?;
        }
        for (id, _) in &queues {
            prop_assert_eq!(run.acd.remove_queue(run.now, QueueId(*id)), Ok(()));
            run.drain()?;
        }
    }
}
