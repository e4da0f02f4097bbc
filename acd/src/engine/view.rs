//! Read-only views for the API and the live display, and the invariant check the property
//! tests run after every step.

use super::{Acd, CState};
use crate::error::AcdError;
use crate::ewt::estimate_wait_ms;
use crate::ids::{AgentId, ContactId, QueueId};
use crate::state::AgentState;

/// Members of a queue by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentCounts {
    pub logged_out: u32,
    pub available: u32,
    pub on_break: u32,
    pub reserved: u32,
    pub ringing: u32,
    pub on_call: u32,
    pub wrap_up: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueStatus {
    /// Contacts waiting (including queued callbacks), not counting those being offered.
    pub depth: u32,
    pub callbacks: u32,
    /// Age of the oldest waiting contact.
    pub longest_wait_ms: u64,
    pub agents: AgentCounts,
    /// Members logged in and not on break.
    pub staffed: u32,
    /// Estimated wait for a caller joining now; `None` when nobody is staffed.
    pub ewt_ms: Option<u64>,
    /// The running handle-time average behind the estimate.
    pub aht_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentStatus {
    pub state: AgentState,
    pub since_ms: u64,
    pub contact: Option<ContactId>,
    pub consecutive_misses: u32,
    pub calls: u64,
    /// Available but held back after a reject or ring-out until then.
    pub blocked_until_ms: Option<u64>,
}

impl Acd {
    pub fn queue_status(&self, queue: QueueId, now_ms: u64) -> Result<QueueStatus, AcdError> {
        let qi = self.queue_index(queue)?;
        let q = &self.queues[qi as usize];
        let mut agents = AgentCounts::default();
        for &a in &q.members {
            let n = match self.agents[a as usize].state {
                AgentState::LoggedOut => &mut agents.logged_out,
                AgentState::Available => &mut agents.available,
                AgentState::Break(_) => &mut agents.on_break,
                AgentState::Reserved => &mut agents.reserved,
                AgentState::Ringing => &mut agents.ringing,
                AgentState::OnCall => &mut agents.on_call,
                AgentState::WrapUp => &mut agents.wrap_up,
            };
            *n += 1;
        }
        let mut longest = 0;
        let mut callbacks = 0;
        for w in q.waiting.values() {
            if let Some(c) = self.contacts.get(&w.id) {
                longest = longest.max(now_ms.saturating_sub(c.entered_ms));
                callbacks += u32::from(c.callback.is_some());
            }
        }
        let depth = q.waiting.len() as u32;
        Ok(QueueStatus {
            depth,
            callbacks,
            longest_wait_ms: longest,
            agents,
            staffed: q.staffed,
            ewt_ms: estimate_wait_ms(depth + 1, q.idle, q.staffed, q.aht.get()),
            aht_ms: q.aht.get().round() as u64,
        })
    }

    pub fn agent_status(&self, agent: AgentId) -> Result<AgentStatus, AcdError> {
        let a = &self.agents[self.agent_index(agent)? as usize];
        Ok(AgentStatus {
            state: a.state,
            since_ms: a.since_ms,
            contact: a.contact,
            consecutive_misses: a.misses,
            calls: a.calls,
            blocked_until_ms: a.blocked_until,
        })
    }

    /// The contact's position in its queue (1 = next), or `None` when it is not waiting
    /// (ringing an agent, talking, or gone with a resume grace).
    pub fn contact_position(&self, contact: ContactId) -> Result<Option<u32>, AcdError> {
        let c = self.contact(contact)?;
        Ok(matches!(c.state, CState::Waiting).then(|| self.position_and_ewt(contact).0))
    }

    /// The queue a live contact is in.
    pub fn contact_queue(&self, contact: ContactId) -> Result<QueueId, AcdError> {
        let c = self.contact(contact)?;
        Ok(self.queues[c.queue as usize].cfg.id)
    }

    /// Contacts currently held (waiting, offered, connected, or in resume grace).
    pub fn contact_count(&self) -> usize {
        self.contacts.len()
    }

    /// Checks the structural invariants; for tests and debugging (O(agents + contacts)).
    pub fn check_invariants(&self) -> Result<(), String> {
        let pending = |at: Option<u64>| at.is_some();
        for (ix, a) in self.agents.iter().enumerate() {
            let ix = ix as u32;
            match a.state {
                AgentState::Reserved | AgentState::Ringing => {
                    let c = a.contact.and_then(|c| self.contacts.get(&c));
                    match c.map(|c| &c.state) {
                        Some(CState::Offered(o)) if o.agents.contains(&ix) => {}
                        _ => return Err(format!("agent {} {:?} without its offer", a.id, a.state)),
                    }
                }
                AgentState::OnCall => {
                    let c = a.contact.and_then(|c| self.contacts.get(&c));
                    match c.map(|c| &c.state) {
                        Some(CState::Connected { agent, .. }) if *agent == ix => {}
                        _ => return Err(format!("agent {} on call without its contact", a.id)),
                    }
                }
                AgentState::WrapUp if !pending(a.wrap_until) => {
                    return Err(format!("agent {} in wrap-up without a deadline", a.id));
                }
                _ => {}
            }
            if !matches!(
                a.state,
                AgentState::Reserved | AgentState::Ringing | AgentState::OnCall
            ) && a.contact.is_some()
            {
                return Err(format!(
                    "agent {} {:?} still holds a contact",
                    a.id, a.state
                ));
            }
            let want = a.state == AgentState::Available && a.blocked_until.is_none();
            if a.indexed != want
                || a.tree_pending
                || (want && a.members.iter().any(|m| m.key.is_none()))
            {
                return Err(format!("agent {} index out of step", a.id));
            }
            for m in &a.members {
                let q = &self.queues[m.queue as usize];
                if let Some(k) = m.key {
                    if q.available.get(&k).map(|c| c.agent) != Some(ix) {
                        return Err(format!("agent {} index entry missing", a.id));
                    }
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for c in self.contacts.values() {
            let q = &self.queues[c.queue as usize];
            let in_queue = q.waiting.get(&c.key).map(|w| w.id) == Some(c.id);
            match &c.state {
                CState::Waiting => {
                    if !in_queue {
                        return Err(format!("waiting contact {} not in its queue", c.id));
                    }
                }
                CState::Offered(o) => {
                    if in_queue || o.agents.is_empty() {
                        return Err(format!("offered contact {} queued or with no legs", c.id));
                    }
                    let multi = matches!(
                        q.cfg.strategy,
                        crate::config::Strategy::RingAll
                            | crate::config::Strategy::RingProgressively { .. }
                    );
                    if o.agents.len() > 1 && (!multi || o.callback) {
                        return Err(format!(
                            "contact {} offered to {} agents",
                            c.id,
                            o.agents.len()
                        ));
                    }
                    for &a in &o.agents {
                        if !seen.insert(a) || self.agents[a as usize].contact != Some(c.id) {
                            return Err(format!("agent {a} in two offers or not holding {}", c.id));
                        }
                    }
                }
                CState::Connected { agent, .. } => {
                    if in_queue || self.agents[*agent as usize].contact != Some(c.id) {
                        return Err(format!("connected contact {} inconsistent", c.id));
                    }
                }
                CState::Departed { .. } => {
                    if in_queue || !pending(c.grace_at) {
                        return Err(format!(
                            "departed contact {} without a grace deadline",
                            c.id
                        ));
                    }
                }
            }
        }
        for (qi, q) in self.queues.iter().enumerate() {
            let members = || q.members.iter().map(|&a| &self.agents[a as usize]);
            let entries = members()
                .filter(|a| {
                    a.members
                        .iter()
                        .any(|m| m.queue as usize == qi && m.key.is_some())
                })
                .count();
            let idle = members().filter(|a| a.indexed).count();
            if entries != q.available.len() || idle != q.idle as usize {
                return Err(format!(
                    "queue {} index has strays or a wrong idle count",
                    q.cfg.id
                ));
            }
            for (k, w) in &q.waiting {
                let id = w.id;
                if !self.contacts.get(&id).is_some_and(|c| {
                    c.key == *k
                        && matches!(c.state, CState::Waiting)
                        && c.entered_ms == w.entered_ms
                        && c.retry_at.is_some() == w.held
                        && *c.skills == *w.skills
                }) {
                    return Err(format!("queue {} holds a stale entry for {id}", q.cfg.id));
                }
            }
        }
        // Every deadline a state depends on is in the heap: no state without its way out.
        let armed: std::collections::HashSet<(u64, super::timers::Timer)> =
            self.timers.iter().map(|r| r.0).collect();
        use super::timers::Timer as Tm;
        let need = |at: Option<u64>, t: Tm| match at {
            Some(at) if !armed.contains(&(at, t)) => Err(format!("{t:?} at {at} not armed")),
            _ => Ok(()),
        };
        for a in &self.agents {
            need(a.wrap_until, Tm::WrapUp(a.id))?;
            need(a.blocked_until, Tm::Unblock(a.id))?;
        }
        for c in self.contacts.values() {
            if let CState::Offered(o) = &c.state {
                need(Some(o.deadline_ms), Tm::Ring(c.id))?;
                need(o.step_at, Tm::Step(c.id))?;
            }
            need(c.grace_at, Tm::Grace(c.id))?;
            need(c.retry_at, Tm::Retry(c.id))?;
            // A max wait that passed during an offer is acted on when the offer fails.
            if !matches!(c.state, CState::Offered(_)) {
                need(c.max_wait_at, Tm::MaxWait(c.id))?;
            }
            need(c.reroute_at, Tm::Reroute(c.id))?;
            need(c.announce_at, Tm::Announce(c.id))?;
        }
        // Nothing routable is left waiting next to a free agent who may take it: routing ran to
        // a fixed point (delays, relaxation and retries have their own timers).
        for (ix, a) in self.agents.iter().enumerate() {
            if !a.indexed {
                continue;
            }
            for m in &a.members {
                let q = &self.queues[m.queue as usize];
                for w in q.waiting.values() {
                    let (id, c) = (w.id, &self.contacts[&w.id]);
                    let wait = self.last_now_ms.saturating_sub(c.entered_ms);
                    let (tier, cap) = super::routing::limits(&q.cfg, wait);
                    if c.retry_at.is_none()
                        && wait >= q.cfg.routing_delay_ms + m.delay_ms
                        && m.tier <= tier
                        && super::routing::skills_ok(&a.prof, &c.skills, cap)
                    {
                        return Err(format!("agent {ix} idle while it could take contact {id}"));
                    }
                }
            }
        }
        Ok(())
    }
}
