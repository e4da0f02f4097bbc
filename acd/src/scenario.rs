//! The routing-at-scale scenario behind the criterion bench and `tandem-bench acd --routing`:
//! 10,000 agents, 1,000 queues, 100 skills. Each agent serves 10 queues and holds those queues'
//! skills (proficiency 1–5) plus a few others; each contact needs its queue's skill at a minimum
//! proficiency of 1–3, so some members are ineligible and routing has to skip them.
//!
//! Two decisions are exercised: a contact arriving while agents are free (`arrive`: the queue's
//! available index is walked), and an agent freed while contacts wait in all its queues
//! (`free_one`: the cross-queue pick). No clock here; callers time the calls.

use crate::config::{AcdConfig, AgentConfig, Membership, QueueConfig};
use crate::engine::Acd;
use crate::ids::{AgentId, ContactId, QueueId, SkillId, TenantId};
use crate::io::{ContactRequest, Input, Output, Party};
use crate::rng::SplitMix64;

pub struct RoutingScenario {
    pub acd: Acd,
    queues: u32,
    skills: u16,
    rng: SplitMix64,
    next_contact: u64,
    now_ms: u64,
    /// For `free_one`: each busy agent's contact.
    busy: Vec<(AgentId, ContactId)>,
}

impl RoutingScenario {
    /// Builds the scenario with every agent logged in and available.
    pub fn new(seed: u64, agents: u32, queues: u32, skills: u16, per_agent: u32) -> Self {
        let tenant = TenantId(1);
        let mut rng = SplitMix64::new(seed);
        let qs = (0..queues)
            .map(|q| {
                let mut c = QueueConfig::new(QueueId(u64::from(q)), tenant);
                c.priority = 1 + (q % 3);
                c
            })
            .collect();
        let skill_of = |q: u64| SkillId((q % u64::from(skills)) as u16);
        let ag = (0..agents)
            .map(|a| {
                let mut members: Vec<Membership> = Vec::new();
                let mut sk: Vec<(SkillId, u8)> = Vec::new();
                while members.len() < per_agent.min(queues) as usize {
                    let q = rng.below(u64::from(queues));
                    if members.iter().any(|m| m.queue.0 == q) {
                        continue;
                    }
                    let mut m = Membership::new(QueueId(q));
                    m.tier = (rng.below(3)) as u8;
                    members.push(m);
                    if sk.iter().all(|s| s.0 != skill_of(q)) {
                        sk.push((skill_of(q), 1 + rng.below(5) as u8));
                    }
                }
                for _ in 0..3 {
                    let s = SkillId(rng.below(u64::from(skills)) as u16);
                    if sk.iter().all(|x| x.0 != s) {
                        sk.push((s, 1 + rng.below(5) as u8));
                    }
                }
                AgentConfig {
                    id: AgentId(u64::from(a)),
                    tenant,
                    skills: sk,
                    memberships: members,
                }
            })
            .collect();
        let mut acd = Acd::new(AcdConfig {
            seed,
            max_skills: skills,
            queues: qs,
            agents: ag,
            ..AcdConfig::default()
        })
        .expect("scenario config is valid");
        for a in 0..agents {
            acd.handle(
                0,
                Input::Login {
                    agent: AgentId(u64::from(a)),
                },
            )
            .expect("agents exist");
        }
        while acd.poll_output().is_some() {}
        RoutingScenario {
            acd,
            queues,
            skills,
            rng,
            next_contact: 1,
            now_ms: 1,
            busy: Vec::new(),
        }
    }

    fn request(&mut self) -> ContactRequest {
        let q = self.rng.below(u64::from(self.queues));
        let id = ContactId(self.next_contact);
        self.next_contact += 1;
        ContactRequest {
            id,
            queue: QueueId(q),
            priority: 0,
            skills: vec![(
                SkillId((q % u64::from(self.skills)) as u16),
                1 + self.rng.below(3) as u8,
            )],
            data: Vec::new(),
            caller_key: None,
        }
    }

    /// Drains outputs; returns the first offer's (contact, agent).
    fn drain(&mut self) -> Option<(ContactId, AgentId)> {
        let mut offer = None;
        while let Some(o) = self.acd.poll_output() {
            if let Output::Offer {
                contact, agents, ..
            } = o
            {
                offer = offer.or(agents.first().map(|&a| (contact, a)));
            }
        }
        offer
    }

    /// A contact arrives at a random queue; the decision offers it (or queues it).
    pub fn arrive(&mut self) -> Option<(ContactId, AgentId)> {
        self.now_ms += 1;
        let r = self.request();
        let id = r.id;
        if self.acd.handle(self.now_ms, Input::Enter(r)).is_err() {
            return None;
        }
        self.drain().filter(|o| o.0 == id)
    }

    /// The untimed rest of a call: answer and hang up (no wrap-up), so the agent is free again.
    pub fn complete(&mut self, contact: ContactId, agent: AgentId) {
        let _ = self
            .acd
            .handle(self.now_ms, Input::Answer { agent, contact });
        let by = Party::Caller;
        let _ = self.acd.handle(self.now_ms, Input::Hangup { contact, by });
        self.tick();
    }

    /// What a shell does between inputs: fire due deadlines (here only stale ring timers of
    /// answered offers, which this drops from the heap) and drain.
    fn tick(&mut self) {
        self.acd.handle_timeout(self.now_ms);
        while self.acd.poll_output().is_some() {}
    }

    /// Busy mode set-up: contacts arrive until every agent is on a call and `waiting` more wait.
    pub fn fill(&mut self, waiting: u32) {
        let mut queued = 0;
        while queued < waiting {
            match self.arrive() {
                Some((c, a)) => {
                    let _ = self.acd.handle(
                        self.now_ms,
                        Input::Answer {
                            agent: a,
                            contact: c,
                        },
                    );
                    while self.acd.poll_output().is_some() {}
                    self.busy.push((a, c));
                }
                None => queued += 1,
            }
        }
    }

    /// Busy mode, untimed part: picks a busy agent and returns its call, to be ended by `free`.
    pub fn pick_busy(&mut self) -> Option<(AgentId, ContactId)> {
        if self.busy.is_empty() {
            return None;
        }
        let i = self.rng.below(self.busy.len() as u64) as usize;
        Some(self.busy.swap_remove(i))
    }

    /// Busy mode, the decision: the call ends, the freed agent takes the best waiting contact.
    pub fn free(&mut self, contact: ContactId) -> Option<(ContactId, AgentId)> {
        self.now_ms += 1;
        let _ = self.acd.handle(
            self.now_ms,
            Input::Hangup {
                contact,
                by: Party::Caller,
            },
        );
        self.drain()
    }

    /// Busy mode, untimed part: the agent answers its new contact and a new caller queues up.
    pub fn refill(&mut self, offer: Option<(ContactId, AgentId)>) {
        if let Some((c, a)) = offer {
            let _ = self.acd.handle(
                self.now_ms,
                Input::Answer {
                    agent: a,
                    contact: c,
                },
            );
            self.busy.push((a, c));
        }
        while self.acd.poll_output().is_some() {}
        self.tick();
        let r = self.request();
        let _ = self.acd.handle(self.now_ms, Input::Enter(r));
        while let Some(o) = self.acd.poll_output() {
            if let Output::Offer {
                contact, agents, ..
            } = o
            {
                // An agent was free after all (freed agent found nothing): keep it busy.
                let _ = self.acd.handle(
                    self.now_ms,
                    Input::Answer {
                        agent: agents[0],
                        contact,
                    },
                );
                self.busy.push((agents[0], contact));
            }
        }
        while self.acd.poll_output().is_some() {}
    }
}
