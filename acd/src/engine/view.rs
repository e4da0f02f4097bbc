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

/// One contact waiting in a queue, for the supervisor's live queue view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitingContact {
    pub contact: ContactId,
    /// 1 = served next: the queue's order (priority, then arrival). A callback between retries
    /// keeps its place but is passed over until its retry is due.
    pub position: u32,
    /// Since the contact entered this queue (or its original entry, when it resumed).
    pub waited_ms: u64,
    pub priority: i32,
    /// A queued callback (the caller is not on the line).
    pub callback: bool,
}

impl Acd {
    /// The contacts waiting in a queue, in the order they will be served (not those ringing an
    /// agent, talking, or in a resume grace). O(depth).
    pub fn queue_contacts(
        &self,
        queue: QueueId,
        now_ms: u64,
    ) -> Result<Vec<WaitingContact>, AcdError> {
        let q = &self.queues[self.queue_index(queue)? as usize];
        Ok(q.waiting
            .iter()
            .enumerate()
            .map(|(i, (k, w))| WaitingContact {
                contact: w.id,
                position: i as u32 + 1,
                waited_ms: now_ms.saturating_sub(w.entered_ms),
                // Keys hold -priority of an i32, so this is exact.
                priority: (-k.neg_priority) as i32,
                callback: self
                    .contacts
                    .get(&w.id)
                    .is_some_and(|c| c.callback.is_some()),
            })
            .collect())
    }

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
        self.check_tables()?;
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
            let kv = super::routing::KeyView::of(a);
            for m in &a.members {
                let q = &self.queues[m.queue as usize];
                if let Some(k) = m.key {
                    let Some(c) = q.available.get(&k).filter(|c| c.agent == ix) else {
                        return Err(format!("agent {} index entry missing", a.id));
                    };
                    // A live entry is filed under the queue's current strategy and carries the
                    // membership as it is now.
                    let key = super::routing::strategy_key(q.cfg.strategy, &kv);
                    let now = super::AvailKey::new(m.tier, key, m.order);
                    if a.indexed && (k != now || c.delay_ms != m.delay_ms || c.weight != m.weight) {
                        return Err(format!("agent {} index entry out of date", a.id));
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
                    if o.agents.len() > 1 && (!o.multi || o.callback) {
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

    /// The tables after run-time reconfiguration: live slots are exactly those the id maps point
    /// at, removed ones are inert and on the free lists, and memberships, member lists, staffing
    /// counts, delay boundaries and membership orders agree.
    fn check_tables(&self) -> Result<(), String> {
        let mut live_a = vec![false; self.agents.len()];
        for (&id, &ix) in &self.agent_ix {
            if self.agents[ix as usize].id != id
                || std::mem::replace(&mut live_a[ix as usize], true)
            {
                return Err(format!("agent map entry {id} -> {ix} wrong"));
            }
        }
        let mut live_q = vec![false; self.queues.len()];
        for (&id, &qi) in &self.queue_ix {
            if self.queues[qi as usize].cfg.id != id
                || std::mem::replace(&mut live_q[qi as usize], true)
            {
                return Err(format!("queue map entry {id} -> {qi} wrong"));
            }
        }
        let free = |list: &[u32], live: &[bool]| {
            let mut l = list.to_vec();
            l.sort_unstable();
            l.dedup();
            let dead = live.iter().filter(|&&x| !x).count();
            l.len() == list.len() && l.len() == dead && l.iter().all(|&i| !live[i as usize])
        };
        if !free(&self.free_agents, &live_a) || !free(&self.free_queues, &live_q) {
            return Err("free lists are not exactly the removed slots".into());
        }
        for (ix, a) in self.agents.iter().enumerate() {
            if !live_a[ix] {
                if a.state != AgentState::LoggedOut
                    || !a.members.is_empty()
                    || a.contact.is_some()
                    || a.indexed
                    || a.wrap_until.is_some()
                    || a.blocked_until.is_some()
                {
                    return Err(format!("removed agent slot {ix} not empty"));
                }
                continue;
            }
            if a.wrap_queue.is_some_and(|q| !live_q[q as usize]) {
                return Err(format!("agent {} wraps up for a removed queue", a.id));
            }
            for m in &a.members {
                let listed = live_q[m.queue as usize].then(|| {
                    let q = &self.queues[m.queue as usize];
                    q.members.iter().filter(|&&x| x as usize == ix).count()
                });
                let dup = a.members.iter().filter(|x| x.queue == m.queue).count();
                if listed != Some(1) || dup != 1 {
                    return Err(format!(
                        "agent {} membership of slot {} wrong",
                        a.id, m.queue
                    ));
                }
            }
        }
        for (qi, q) in self.queues.iter().enumerate() {
            if !live_q[qi] {
                if !q.waiting.is_empty()
                    || !q.available.is_empty()
                    || !q.members.is_empty()
                    || q.idle != 0
                    || q.staffed != 0
                    || !q.delay_points.is_empty()
                {
                    return Err(format!("removed queue slot {qi} not empty"));
                }
                continue;
            }
            let mut staffed = 0;
            let mut delays = std::collections::BTreeMap::new();
            let mut orders = Vec::new();
            for &a in &q.members {
                let agent = &self.agents[a as usize];
                let m = agent.members.iter().find(|m| m.queue as usize == qi);
                let Some(m) = m.filter(|_| live_a[a as usize]) else {
                    return Err(format!("queue {} lists a non-member {a}", q.cfg.id));
                };
                staffed += u32::from(agent.state.is_staffed());
                *delays.entry(m.delay_ms).or_insert(0u32) += 1;
                orders.push(m.order);
            }
            orders.sort_unstable();
            orders.dedup();
            let orders_ok = orders.len() == q.members.len()
                && orders.last().is_none_or(|&o| o < q.next_order)
                && q.next_order <= super::MAX_MEMBERS;
            if staffed != q.staffed || delays != q.delay_points || !orders_ok {
                return Err(format!(
                    "queue {} staffed count, delays or member orders out of step",
                    q.cfg.id
                ));
            }
        }
        for c in self.contacts.values() {
            if !live_q[c.queue as usize] {
                return Err(format!("contact {} in a removed queue", c.id));
            }
        }
        Ok(())
    }
}
