//! Routing: the per-queue index of available agents and the two decisions.
//!
//! Each queue keeps its available members in a `BTreeMap` ordered by (tier, strategy key,
//! membership order), maintained when an agent enters or leaves Available. A contact arriving
//! walks that map from the front and stops at the first eligible agent (first-fit strategies),
//! so a decision costs O(log n) plus the skipped ineligible agents, never a scan of all agents.
//! An agent becoming free looks at each of its queues' waiting contacts in queue order and
//! takes the first it may serve from each, then the best across queues by weighted wait.

use super::{Acd, Agent, AvailKey, CState, Cand, Contact, Offer, Queue};
use crate::config::{QueueConfig, Strategy};
use crate::ids::{ContactId, SkillId};
use crate::io::{EventKind, Output};
use crate::state::AgentState;

use super::timers::Timer;

/// Most agents rung at once by ring-all (bounds the offer and the output).
const RING_ALL_MAX: usize = 64;

/// Who may take a contact that has waited `wait_ms`: the highest tier and the proficiency cap
/// after relaxation (a rule's `min_proficiency` lowers what the contact asked for).
pub(crate) fn limits(cfg: &QueueConfig, wait_ms: u64) -> (u8, u8) {
    let mut tier = cfg.base_max_tier;
    let mut cap = u8::MAX;
    let mut best_after: [Option<u64>; 2] = [None, None];
    for r in &cfg.relax {
        if r.after_ms > wait_ms {
            continue;
        }
        // The latest rule that applies wins, whatever order they were configured in.
        if let Some(t) = r.max_tier {
            if best_after[0].is_none_or(|a| r.after_ms >= a) {
                tier = t;
                best_after[0] = Some(r.after_ms);
            }
        }
        if let Some(p) = r.min_proficiency {
            if best_after[1].is_none_or(|a| r.after_ms >= a) {
                cap = p;
                best_after[1] = Some(r.after_ms);
            }
        }
    }
    (tier, cap)
}

pub(crate) fn skills_ok(prof: &[u8], need: &[(SkillId, u8)], cap: u8) -> bool {
    need.iter().all(|&(s, min)| {
        let have = prof.get(usize::from(s.0)).copied().unwrap_or(0);
        have >= min.min(cap).max(1)
    })
}

fn proficiency_sum(prof: &[u8], need: &[(SkillId, u8)]) -> u32 {
    need.iter()
        .map(|&(s, _)| u32::from(prof.get(usize::from(s.0)).copied().unwrap_or(0)))
        .sum()
}

/// The strategy's ordering key for an available agent (lower goes first).
pub(super) fn strategy_key(strategy: Strategy, a: &KeyView) -> u64 {
    match strategy {
        Strategy::LongestIdle | Strategy::BestProficiency => a.since_ms,
        Strategy::LeastRecent => a.last_call_end_ms,
        Strategy::FewestCalls => a.calls,
        Strategy::LeastTalkTime => a.talk_total_ms,
        Strategy::RoundRobin
        | Strategy::TopDown
        | Strategy::Random
        | Strategy::WeightedRandom
        | Strategy::RingAll
        | Strategy::RingProgressively { .. } => 0,
    }
}

/// Eligible agents for `c` in `q`, per strategy, into `out` (empty when none); stale index
/// entries walked past go to `stale` for the caller to drop. A free function over disjoint
/// borrows of the engine's fields, hence the argument count.
#[allow(clippy::too_many_arguments)]
fn pick(
    q: &Queue,
    agents: &[Agent],
    c: &Contact,
    now: u64,
    exclude: &[u32],
    rng: &mut crate::rng::SplitMix64,
    out: &mut Vec<u32>,
    stale: &mut Vec<(AvailKey, u32)>,
) -> Option<u32> {
    out.clear();
    stale.clear();
    let wait = now.saturating_sub(c.entered_ms);
    let (max_tier, cap) = limits(&q.cfg, wait);
    let eligible = |cand: &Cand| {
        wait >= q.cfg.routing_delay_ms + cand.delay_ms
            && !exclude.contains(&cand.agent)
            && skills_ok(&agents[cand.agent as usize].prof, &c.skills, cap)
    };
    let first_fit = matches!(
        q.cfg.strategy,
        Strategy::LongestIdle
            | Strategy::LeastRecent
            | Strategy::FewestCalls
            | Strategy::LeastTalkTime
            | Strategy::TopDown
            | Strategy::RingProgressively { .. }
    );
    let mut tier_found: Option<u8> = None;
    let mut rr_after: Option<(u32, u32)> = None;
    let mut rr_first: Option<(u32, u32)> = None;
    let mut weights: u64 = 0;
    let mut best: Option<(u32, u32)> = None; // (proficiency sum, agent) for BestProficiency
    for (key, cand) in &q.available {
        if !agents[cand.agent as usize].indexed {
            stale.push((*key, cand.agent));
            continue;
        }
        if key.tier() > max_tier || tier_found.is_some_and(|t| key.tier() > t) {
            break;
        }
        if !eligible(cand) {
            continue;
        }
        tier_found = Some(key.tier());
        match q.cfg.strategy {
            _ if first_fit => {
                out.push(cand.agent);
                return None;
            }
            Strategy::RoundRobin => {
                if rr_first.is_none() {
                    rr_first = Some((cand.agent, key.order()));
                }
                // The cursor starts at u32::MAX, so the first pick wraps to the front.
                if key.order() > q.rr_cursor && rr_after.is_none() {
                    rr_after = Some((cand.agent, key.order()));
                }
            }
            Strategy::BestProficiency => {
                let p = proficiency_sum(&agents[cand.agent as usize].prof, &c.skills);
                // Keys are ordered longest-idle first, so a strict > keeps that as the tie-break.
                if best.is_none_or(|(bp, _)| p > bp) {
                    best = Some((p, cand.agent));
                }
            }
            Strategy::RingAll if out.len() < RING_ALL_MAX => out.push(cand.agent),
            Strategy::Random | Strategy::WeightedRandom => {
                // Weighted reservoir sampling over one pass: keep each with weight/total odds.
                let w = if q.cfg.strategy == Strategy::Random {
                    1
                } else {
                    u64::from(cand.weight)
                };
                weights += w;
                if rng.below(weights) < w {
                    out.clear();
                    out.push(cand.agent);
                }
            }
            _ => {}
        }
    }
    match q.cfg.strategy {
        Strategy::RoundRobin => {
            let chosen = rr_after.or(rr_first)?;
            out.push(chosen.0);
            Some(chosen.1)
        }
        Strategy::BestProficiency => {
            if let Some((_, a)) = best {
                out.push(a);
            }
            None
        }
        _ => None,
    }
}

impl Acd {
    /// Puts the agent in (or takes it out of) its queues' available indexes to match its state.
    pub(super) fn refresh_index(&mut self, ix: u32) {
        let a = &self.agents[ix as usize];
        let want = a.state == AgentState::Available && a.blocked_until.is_none();
        if want == a.indexed {
            return;
        }
        let agent = &mut self.agents[ix as usize];
        agent.indexed = want;
        // Becoming available: the agent first looks for waiting work (`route_agent`) and goes
        // into the trees only if it finds none, so a busy centre's agent goes from call to call
        // without touching its queues' indexes. Leaving: the entries stay, stale, until a scan
        // of the queue drops them or the agent comes back; an offer costs no tree removals.
        agent.tree_pending = want;
        for m in &agent.members {
            let q = &mut self.queues[m.queue as usize];
            if want {
                q.idle += 1;
            } else {
                q.idle -= 1;
            }
        }
        if want {
            self.work_agents.push(ix);
        }
    }

    /// Puts an available agent's entries into its queues' indexes (replacing stale ones).
    pub(super) fn insert_trees(&mut self, ix: u32) {
        let kv = KeyView::of(&self.agents[ix as usize]);
        let agent = &mut self.agents[ix as usize];
        agent.tree_pending = false;
        for m in &mut agent.members {
            let q = &mut self.queues[m.queue as usize];
            let k = AvailKey::new(m.tier, strategy_key(q.cfg.strategy, &kv), m.order);
            if m.key == Some(k) {
                continue; // the stale entry is current again
            }
            if let Some(old) = m.key.take() {
                q.available.remove(&old);
            }
            q.available.insert(
                k,
                Cand {
                    agent: ix,
                    delay_ms: m.delay_ms,
                    weight: m.weight,
                },
            );
            m.key = Some(k);
        }
    }

    /// Removes the stale entries a scan of queue `qi` walked past (agents no longer available).
    fn drop_stale(&mut self, qi: u32) {
        for &(k, a) in &self.stale {
            self.queues[qi as usize].available.remove(&k);
            let members = &mut self.agents[a as usize].members;
            if let Some(m) = members
                .iter_mut()
                .find(|m| m.queue == qi && m.key == Some(k))
            {
                m.key = None;
            }
        }
        self.stale.clear();
    }

    /// A contact became routable (entered, re-queued, relaxed): offer it if an agent fits.
    pub(super) fn route_contact(&mut self, now: u64, id: ContactId) {
        let Some(c) = self.contacts.get(&id) else {
            return;
        };
        if !matches!(c.state, CState::Waiting) || c.retry_at.is_some() {
            return;
        }
        let qi = c.queue as usize;
        let mut out = std::mem::take(&mut self.scratch);
        let rr = pick(
            &self.queues[qi],
            &self.agents,
            c,
            now,
            &[],
            &mut self.rng,
            &mut out,
            &mut self.stale,
        );
        let callback = c.callback.is_some();
        self.drop_stale(qi as u32);
        if callback {
            // A callback reserves one agent: there is one customer leg to dial, not a race.
            out.truncate(1);
        }
        if !out.is_empty() {
            if let Some(order) = rr {
                self.queues[qi].rr_cursor = order;
            }
            self.offer(now, id, &out);
        }
        self.scratch = out;
    }

    /// An agent became free: give it the contact that waited longest (weighted by queue
    /// priority) among those it may serve in any of its queues.
    pub(super) fn route_agent(&mut self, now: u64, ix: u32) {
        let a = &self.agents[ix as usize];
        if !a.indexed {
            return;
        }
        let mut best: Option<(u128, ContactId)> = None;
        for m in &a.members {
            let q = &self.queues[m.queue as usize];
            for w in q.waiting.values() {
                if w.held {
                    continue;
                }
                let wait = now.saturating_sub(w.entered_ms);
                if wait < q.cfg.routing_delay_ms + m.delay_ms {
                    continue;
                }
                let (max_tier, cap) = limits(&q.cfg, wait);
                if m.tier > max_tier || !skills_ok(&a.prof, &w.skills, cap) {
                    continue;
                }
                let score = u128::from(wait + 1) * u128::from(q.cfg.priority);
                if best.is_none_or(|(s, _)| score > s) {
                    best = Some((score, w.id));
                }
                // Later contacts of this queue come after this one in its own order.
                break;
            }
        }
        if let Some((_, id)) = best {
            if let Some(CState::Waiting) = self.contacts.get(&id).map(|c| &c.state) {
                let q = self.contacts[&id].queue as usize;
                let order = self.agents[ix as usize]
                    .members
                    .iter()
                    .find(|m| m.queue as usize == q)
                    .map(|m| m.order);
                if self.queues[q].cfg.strategy == Strategy::RoundRobin {
                    if let Some(o) = order {
                        self.queues[q].rr_cursor = o;
                    }
                }
                self.offer(now, id, &[ix]);
                return;
            }
        }
        if self.agents[ix as usize].tree_pending {
            self.insert_trees(ix);
        }
    }

    /// Reserves `agents` for the waiting contact `id` and tells the shell.
    fn offer(&mut self, now: u64, id: ContactId, agents: &[u32]) {
        let Some(c) = self.contacts.get_mut(&id) else {
            return;
        };
        let qi = c.queue as usize;
        self.queues[qi].waiting.remove(&c.key);
        c.reroute_at = None;
        let cfg = &self.queues[qi].cfg;
        let callback = c.callback.is_some();
        let deadline_ms = now
            + if callback {
                self.callback_dial_timeout_ms
            } else {
                cfg.ring_timeout_ms
            };
        let step_at = match cfg.strategy {
            Strategy::RingProgressively { step_ms } if !callback && now + step_ms < deadline_ms => {
                Some(now + step_ms)
            }
            _ => None,
        };
        c.state = CState::Offered(Offer {
            agents: agents.to_vec(),
            started_ms: now,
            deadline_ms,
            step_at,
            callback,
            multi: !callback
                && matches!(
                    cfg.strategy,
                    Strategy::RingAll | Strategy::RingProgressively { .. }
                ),
        });
        let ring_timeout_ms = cfg.ring_timeout_ms;
        let (tenant, queue) = (c.tenant, cfg.id);
        let data = c.data.clone();
        let cb = c.callback.as_mut().map(|cb| {
            cb.attempts += 1;
            (cb.number.clone(), cb.attempts)
        });
        for &a in agents {
            self.agents[a as usize].contact = Some(id);
            self.set_state(now, a, AgentState::Reserved);
        }
        match cb {
            Some((number, attempt)) => {
                let agent = self.agents[agents[0] as usize].id;
                self.out.push_back(Output::PlaceCallback {
                    contact: id,
                    agent,
                    number,
                    attempt,
                });
                self.event(
                    now,
                    tenant,
                    Some(queue),
                    Some(id),
                    Some(agent),
                    EventKind::CallbackPlaced { attempt },
                );
            }
            None => self.out.push_back(Output::Offer {
                contact: id,
                queue,
                agents: agents.iter().map(|&a| self.agents[a as usize].id).collect(),
                ring_timeout_ms,
                data,
            }),
        }
        self.arm(deadline_ms, Timer::Ring(id));
        if let Some(s) = step_at {
            self.arm(s, Timer::Step(id));
        }
    }

    /// Ring-progressively: add the next eligible agent to the ringing offer.
    pub(super) fn progressive_step(&mut self, now: u64, id: ContactId) {
        let Some(c) = self.contacts.get(&id) else {
            return;
        };
        let CState::Offered(o) = &c.state else {
            return;
        };
        let qi = c.queue as usize;
        if !o.multi {
            return;
        }
        let (deadline, mut step_at) = (o.deadline_ms, None);
        let mut out = std::mem::take(&mut self.scratch);
        pick(
            &self.queues[qi],
            &self.agents,
            c,
            now,
            &o.agents,
            &mut self.rng,
            &mut out,
            &mut self.stale,
        );
        self.drop_stale(qi as u32);
        // `update_queue` may have changed the strategy since the offer: it keeps ringing the
        // legs it has, and adds more only while the queue still rings progressively.
        if let Strategy::RingProgressively { step_ms } = self.queues[qi].cfg.strategy {
            if now + step_ms < deadline {
                step_at = Some(now + step_ms);
            }
        } else {
            out.clear();
        }
        if now >= deadline {
            // A late clock: the ring timeout (due no later) ends this offer instead.
            out.clear();
            step_at = None;
        }
        if let Some(&a) = out.first() {
            self.agents[a as usize].contact = Some(id);
            self.set_state(now, a, AgentState::Reserved);
            let q = &self.queues[qi].cfg;
            self.out.push_back(Output::Offer {
                contact: id,
                queue: q.id,
                agents: vec![self.agents[a as usize].id],
                ring_timeout_ms: deadline.saturating_sub(now),
                data: self.contacts[&id].data.clone(),
            });
        }
        if let Some(CState::Offered(o)) = self.contacts.get_mut(&id).map(|c| &mut c.state) {
            if let Some(&a) = out.first() {
                o.agents.push(a);
            }
            o.step_at = step_at;
        }
        if let Some(s) = step_at {
            self.arm(s, Timer::Step(id));
        }
        self.scratch = out;
    }

    /// Arms the re-route timer at the next moment more agents may take the contact.
    pub(super) fn arm_reroute(&mut self, now: u64, id: ContactId) {
        let Some(c) = self.contacts.get_mut(&id) else {
            return;
        };
        let q = &self.queues[c.queue as usize];
        let wait = now.saturating_sub(c.entered_ms);
        let base = q.cfg.routing_delay_ms;
        let mut next: Option<u64> = None;
        let mut consider = |b: u64| {
            if b > wait && next.is_none_or(|n| b < n) {
                next = Some(b);
            }
        };
        consider(base);
        if let Some((&d, _)) = q.delay_points.range(wait.saturating_sub(base) + 1..).next() {
            consider(base + d);
        }
        for r in &q.cfg.relax {
            consider(r.after_ms);
        }
        c.reroute_at = next.map(|n| c.entered_ms + n);
        if let Some(at) = c.reroute_at {
            self.arm(at, Timer::Reroute(id));
        }
    }
}

/// The agent fields the strategy keys read.
pub(super) struct KeyView {
    pub(super) since_ms: u64,
    pub(super) last_call_end_ms: u64,
    pub(super) calls: u64,
    pub(super) talk_total_ms: u64,
}

impl KeyView {
    pub(super) fn of(a: &Agent) -> Self {
        KeyView {
            since_ms: a.since_ms,
            last_call_end_ms: a.last_call_end_ms,
            calls: a.calls,
            talk_total_ms: a.talk_total_ms,
        }
    }
}
