//! Property test: random event sequences (logins, breaks, calls, hang-ups at any moment,
//! no-answers, rejects, transfers, moves, callbacks, supervisor forcing, time jumps) against a
//! randomly configured ACD. After every step: `check_invariants` (no contact offered to two
//! agents outside one ring-all/progressive offer, no agent beyond one call, indexes in step,
//! every deadline armed, routing at a fixed point); no input panics; every contact ends with
//! exactly one final event, and all do once everyone hangs up and time runs on.

use std::collections::HashMap;

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

fn build(w: &World) -> Acd {
    let queues = (0..3)
        .map(|i| {
            let mut q = QueueConfig::new(QueueId(i as u64 + 1), T);
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
        })
        .collect();
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
}

impl Run {
    fn drain(&mut self) -> Result<(), TestCaseError> {
        while let Some(o) = self.acd.poll_output() {
            if let Output::Event(e) = &o {
                if let (Some(c), true) = (e.contact, e.kind.ends_contact()) {
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
                    if let Some(c) = e.contact {
                        self.live.insert(c.0, true);
                    }
                }
            }
        }
        if let Err(e) = self.acd.check_invariants() {
            return Err(TestCaseError::fail(format!("at {} ms: {e}", self.now)));
        }
        Ok(())
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
        let _ = self.acd.handle(self.now, input);
        self.drain()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn random_event_sequences_keep_every_invariant(w in world(), ops in proptest::collection::vec(op(), 1..120)) {
        let mut run = Run { acd: build(&w), now: 0, live: HashMap::new() };
        for op in &ops {
            run.apply(op)?;
        }
        // Wind down: everyone hangs up, agents log in to serve queued callbacks, time runs on.
        for round in 0..4 {
            let live: Vec<u64> = run.live.iter().filter(|(_, &l)| l).map(|(&c, _)| c).collect();
            for c in live {
                for by in [Party::Caller, Party::Agent] {
                    let _ = run.acd.handle(run.now, Input::Hangup { contact: ContactId(c), by });
                    run.drain()?;
                }
                let _ = run.acd.handle(run.now, Input::CallbackResult { contact: ContactId(c), answered: false });
                run.drain()?;
            }
            run.advance(3_600_000 * (round + 1))?;
        }
        let left: Vec<u64> = run.live.iter().filter(|(_, &l)| l).map(|(&c, _)| c).collect();
        prop_assert!(left.is_empty(), "contacts never ended: {:?}", left);
        prop_assert_eq!(run.acd.contact_count(), 0);
    }
}
