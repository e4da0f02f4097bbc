//! Run-time reconfiguration: the control plane's CRUD on queues and agents while calls are in
//! progress (`update_queue`, `update_agent`, `remove_queue`, `remove_agent`; `add_queue` and
//! `add_agent` are in `mod.rs` and share the checks here).
//!
//! Removal leaves a tombstone rather than swap-removing. Agents and queues are referred to by
//! slot index from many places: queue member lists, the available-agent trees (`Cand`), offers
//! and connected contacts, every contact's queue, the resume-grace map, an agent's wrap-up queue.
//! A swap-remove moves another, live, agent or queue to a new index, and every one of those
//! references would have to be found and fixed (a contact's queue only by scanning all
//! contacts); one missed is a silent misroute. With a tombstone no live index ever changes:
//! removal clears only the references *to the removed slot*, which the refusal rules keep few (a
//! removed agent is logged out, so it holds no contact and has no live index entry; a removed
//! queue has no contact left), resets the slot to an inert empty record that every loop passes
//! over, and puts it on a free list that the next `add_*` takes. The id leaves its id map, so it
//! may be reused at once; timers are keyed by id and live only while their field holds the
//! deadline, so none of the removed one's can fire into a newcomer.

use super::contacts::Exit;
use super::routing::{strategy_key, KeyView};
use super::timers::Timer;
use super::{Acd, Agent, AvailKey, CState, Cand, Member, Queue, MAX_MEMBERS};
use crate::config::{
    AgentConfig, EmptyBehaviour, Membership, OverflowTarget, QueueConfig, Strategy,
};
use crate::error::AcdError;
use crate::ids::{AgentId, ContactId, QueueId, SkillId};
use crate::io::EventKind;
use crate::state::AgentState;

/// Counts a member delay in; true when it is a new boundary for the re-route timers.
fn add_delay(q: &mut Queue, delay_ms: u64) -> bool {
    let n = q.delay_points.entry(delay_ms).or_insert(0);
    *n += 1;
    *n == 1
}

/// Counts a member delay out. A boundary that goes away may still fire a re-route timer, which
/// then finds nothing new and re-arms for the next one.
fn remove_delay(q: &mut Queue, delay_ms: u64) {
    if let Some(n) = q.delay_points.get_mut(&delay_ms) {
        *n -= 1;
        if *n == 0 {
            q.delay_points.remove(&delay_ms);
        }
    }
}

impl Acd {
    /// Refuses a time before the last one without recording `now_ms`: the reconfiguration
    /// methods validate everything first, so a refused change leaves even the clock alone.
    fn time_ok(&self, now_ms: u64) -> Result<(), AcdError> {
        if now_ms < self.last_now_ms {
            return Err(AcdError::TimeWentBackwards {
                now_ms,
                last_ms: self.last_now_ms,
            });
        }
        Ok(())
    }

    /// The dense proficiency table of an agent's skills, checked.
    pub(super) fn proficiencies(&self, skills: &[(SkillId, u8)]) -> Result<Box<[u8]>, AcdError> {
        let mut prof = vec![0u8; usize::from(self.max_skills)].into_boxed_slice();
        for &(s, p) in skills {
            if s.0 >= self.max_skills || !(1..=5).contains(&p) {
                return Err(AcdError::InvalidConfig(
                    "skill id beyond max_skills or proficiency outside 1-5",
                ));
            }
            prof[usize::from(s.0)] = p;
        }
        Ok(prof)
    }

    /// The queue index of each of the agent's memberships, checked: the queue exists, is of the
    /// agent's tenant, is named once, and has room for a new member. `current` is the agent's
    /// index when it exists already: queues it is a member of need no room.
    pub(super) fn membership_queues(
        &self,
        cfg: &AgentConfig,
        current: Option<u32>,
    ) -> Result<Vec<u32>, AcdError> {
        let mut qixs = Vec::with_capacity(cfg.memberships.len());
        for m in &cfg.memberships {
            let qi = self.queue_index(m.queue)?;
            let q = &self.queues[qi as usize];
            if q.cfg.tenant != cfg.tenant {
                return Err(AcdError::TenantMismatch { queue: m.queue });
            }
            if qixs.contains(&qi) {
                return Err(AcdError::InvalidConfig(
                    "agent is a member of a queue twice",
                ));
            }
            let already = current.is_some_and(|ix| {
                self.agents[ix as usize]
                    .members
                    .iter()
                    .any(|m| m.queue == qi)
            });
            if !already && q.members.len() as u32 >= MAX_MEMBERS {
                return Err(AcdError::InvalidConfig(
                    "a queue has at most 65,536 members",
                ));
            }
            qixs.push(qi);
        }
        Ok(qixs)
    }

    /// Makes agent `ix` a member of queue `qi`, last in membership order, counted idle and
    /// staffed there as its state says (its entry in the queue's index is added by
    /// `insert_trees`). Queues given a new delay boundary go to `touched`.
    pub(super) fn join_member(
        &mut self,
        ix: u32,
        m: &Membership,
        qi: u32,
        touched: &mut Vec<u32>,
    ) -> Member {
        if self.queues[qi as usize].next_order >= MAX_MEMBERS {
            self.compact_orders(qi);
        }
        let a = &self.agents[ix as usize];
        let (indexed, staffed) = (a.indexed, a.state.is_staffed());
        let q = &mut self.queues[qi as usize];
        let order = q.next_order;
        q.next_order += 1;
        q.members.push(ix);
        q.idle += u32::from(indexed);
        q.staffed += u32::from(staffed);
        if add_delay(q, m.delay_ms) {
            touched.push(qi);
        }
        Member {
            queue: qi,
            tier: m.tier,
            delay_ms: m.delay_ms,
            weight: m.weight.max(1),
            order,
            key: None,
        }
    }

    /// Takes agent `ix` out of the queue of `m` (already detached from the agent): its index
    /// entry, member listing, idle and staffed counts and delay. A queue left unstaffed that
    /// empties on no staff is emptied by `do_work`.
    fn leave_member(&mut self, ix: u32, m: &Member) {
        let a = &self.agents[ix as usize];
        let (indexed, staffed) = (a.indexed, a.state.is_staffed());
        let q = &mut self.queues[m.queue as usize];
        if let Some(k) = m.key {
            q.available.remove(&k);
        }
        q.members.retain(|&x| x != ix);
        q.idle -= u32::from(indexed);
        if staffed {
            q.staffed -= 1;
            if q.staffed == 0 && q.cfg.empty == EmptyBehaviour::Leave {
                self.work_empty.push(m.queue);
            }
        }
        remove_delay(q, m.delay_ms);
    }

    /// Rebuilds queue `qi`'s available index from its members (after a strategy change or a
    /// renumbering): a live entry under the current key for each indexed agent, no stale ones.
    fn reindex_queue(&mut self, qi: u32) {
        let Queue {
            cfg,
            members,
            available,
            ..
        } = &mut self.queues[qi as usize];
        available.clear();
        for &a in members.iter() {
            let agent = &mut self.agents[a as usize];
            let kv = KeyView::of(agent);
            let indexed = agent.indexed;
            if let Some(m) = agent.members.iter_mut().find(|m| m.queue == qi) {
                m.key = None;
                if indexed {
                    let k = AvailKey::new(m.tier, strategy_key(cfg.strategy, &kv), m.order);
                    let cand = Cand {
                        agent: a,
                        delay_ms: m.delay_ms,
                        weight: m.weight,
                    };
                    available.insert(k, cand);
                    m.key = Some(k);
                }
            }
        }
    }

    /// Renumbers queue `qi`'s membership orders 0..n, keeping their relative order, once many
    /// joins and leaves have used up the 16 bits the packed index key has for them. The
    /// round-robin cursor keeps its place between the same two members.
    fn compact_orders(&mut self, qi: u32) {
        let q = &self.queues[qi as usize];
        let mut list: Vec<(u32, u32)> = q
            .members
            .iter()
            .filter_map(|&a| {
                let m = self.agents[a as usize]
                    .members
                    .iter()
                    .find(|m| m.queue == qi);
                m.map(|m| (m.order, a))
            })
            .collect();
        list.sort_unstable();
        let q = &mut self.queues[qi as usize];
        if q.rr_cursor != u32::MAX {
            let before = list.iter().filter(|&&(o, _)| o <= q.rr_cursor).count() as u32;
            q.rr_cursor = before.checked_sub(1).unwrap_or(u32::MAX);
        }
        q.next_order = list.len() as u32;
        for (new, &(_, a)) in list.iter().enumerate() {
            let members = &mut self.agents[a as usize].members;
            if let Some(m) = members.iter_mut().find(|m| m.queue == qi) {
                m.order = new as u32;
            }
        }
        self.reindex_queue(qi);
    }

    /// Re-arms the re-route timers of queue `qi`'s waiting contacts: a delay, relaxation or
    /// routing-delay boundary may have moved.
    pub(super) fn rearm_waiting(&mut self, now: u64, qi: u32) {
        let ids: Vec<ContactId> = self.queues[qi as usize]
            .waiting
            .values()
            .map(|w| w.id)
            .collect();
        for id in ids {
            self.arm_reroute(now, id);
        }
    }

    /// Contacts of queue `qi` being offered: exactly those its Reserved/Ringing agents hold
    /// (O(agents), not O(contacts)).
    fn offered_in(&self, qi: u32) -> Vec<ContactId> {
        let mut ids: Vec<ContactId> = self
            .agents
            .iter()
            .filter(|a| matches!(a.state, AgentState::Reserved | AgentState::Ringing))
            .filter_map(|a| a.contact)
            .filter(|id| self.contacts.get(id).is_some_and(|c| c.queue == qi))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Replaces every setting of an existing queue (same id and tenant). Waiting contacts keep
    /// their order; their max-wait, announcement and re-route deadlines follow the new settings
    /// (one that has already waited past a new max wait overflows now). Offers ringing keep
    /// their ring timeout, and stop adding legs if the queue no longer rings progressively.
    /// Agents wrapping up or held back keep their current deadline. A smaller `max_len` refuses
    /// newcomers; it does not evict anyone waiting.
    /// Routing then runs to a fixed point; the outputs come from `poll_output`.
    pub fn update_queue(&mut self, now_ms: u64, cfg: QueueConfig) -> Result<(), AcdError> {
        self.time_ok(now_ms)?;
        cfg.validate()?;
        let qi = self.queue_index(cfg.id)?;
        if self.queues[qi as usize].cfg.tenant != cfg.tenant {
            return Err(AcdError::TenantMismatch { queue: cfg.id });
        }
        let now = now_ms;
        self.last_now_ms = now;
        let q = &mut self.queues[qi as usize];
        q.aht.set_initial(cfg.initial_aht_ms as f64);
        let old = std::mem::replace(&mut q.cfg, cfg);
        let new = &q.cfg;
        let progressive = matches!(new.strategy, Strategy::RingProgressively { .. });
        let (max_wait, period) = (new.max_wait_ms, new.announce_period_ms);
        let period_changed = old.announce_period_ms != period;
        let empty_now = new.empty == EmptyBehaviour::Leave && q.staffed == 0;
        if old.strategy != new.strategy {
            // The index keys hold the old strategy's ordering, and a round-robin cursor left
            // from an earlier stint would be arbitrary: start over.
            q.rr_cursor = u32::MAX;
            self.reindex_queue(qi);
        }
        let offered = self.offered_in(qi);
        let waiting: Vec<ContactId> = self.queues[qi as usize]
            .waiting
            .values()
            .map(|w| w.id)
            .collect();
        let mut expired = Vec::new();
        for &id in offered.iter().chain(&waiting) {
            let Some(c) = self.contacts.get_mut(&id) else {
                continue;
            };
            if let CState::Offered(o) = &mut c.state {
                if !progressive {
                    o.step_at = None;
                }
            }
            if c.callback.is_some() {
                continue; // a queued callback has neither a max wait nor announcements
            }
            let is_waiting = matches!(c.state, CState::Waiting);
            let mw = max_wait.map(|w| c.entered_ms.saturating_add(w));
            let mw_changed = c.max_wait_at != mw;
            c.max_wait_at = mw;
            let an = period_changed.then(|| (period > 0).then(|| now + period));
            if let Some(an) = an {
                c.announce_at = an;
            }
            match mw {
                // Past the new max wait: overflow now. One ringing an agent overflows if that
                // offer fails (as when its max wait passes during a ring).
                Some(at) if at <= now && is_waiting => expired.push(id),
                Some(at) if mw_changed => self.arm(at, Timer::MaxWait(id)),
                _ => {}
            }
            if let Some(Some(at)) = an {
                self.arm(at, Timer::Announce(id));
            }
        }
        for id in expired {
            self.leave_queue(now, id, Exit::Timeout);
        }
        // Whoever still waits: re-route timers against the new delays and relaxation, then a
        // routing pass, head of the queue first (the work list is a stack).
        let still: Vec<ContactId> = self.queues[qi as usize]
            .waiting
            .values()
            .map(|w| w.id)
            .collect();
        for &id in &still {
            self.arm_reroute(now, id);
        }
        self.work_contacts.extend(still.iter().rev());
        if empty_now {
            self.work_empty.push(qi);
        }
        self.do_work(now);
        Ok(())
    }

    /// Replaces an existing agent's skills and memberships (same id and tenant), keeping its
    /// state, statistics and any offer or call in progress: one for a queue it leaves ends as
    /// usual (the wrap-up and handle time still go to that queue). A membership kept keeps its
    /// place in the queue's order; a new one goes last. Routing then runs to a fixed point.
    pub fn update_agent(&mut self, now_ms: u64, cfg: AgentConfig) -> Result<(), AcdError> {
        self.time_ok(now_ms)?;
        let ix = self.agent_index(cfg.id)?;
        if self.agents[ix as usize].tenant != cfg.tenant {
            return Err(AcdError::AgentTenantMismatch(cfg.id));
        }
        let prof = self.proficiencies(&cfg.skills)?;
        let qixs = self.membership_queues(&cfg, Some(ix))?;
        self.last_now_ms = now_ms;
        let mut old = std::mem::take(&mut self.agents[ix as usize].members);
        let mut i = 0;
        while i < old.len() {
            if qixs.contains(&old[i].queue) {
                i += 1;
            } else {
                let m = old.swap_remove(i);
                self.leave_member(ix, &m);
            }
        }
        let mut touched = Vec::new();
        let mut members = Vec::with_capacity(qixs.len());
        for (mc, qi) in cfg.memberships.iter().zip(qixs) {
            let m = match old.iter().position(|m| m.queue == qi) {
                Some(p) => {
                    let mut m = old.swap_remove(p);
                    let weight = mc.weight.max(1);
                    if (m.tier, m.delay_ms, m.weight) != (mc.tier, mc.delay_ms, weight) {
                        // The index entry carries tier, delay and weight: it goes, and
                        // `insert_trees` puts the new one in if the agent is available.
                        let q = &mut self.queues[qi as usize];
                        if let Some(k) = m.key.take() {
                            q.available.remove(&k);
                        }
                        if m.delay_ms != mc.delay_ms {
                            remove_delay(q, m.delay_ms);
                            if add_delay(q, mc.delay_ms) {
                                touched.push(qi);
                            }
                        }
                        (m.tier, m.delay_ms, m.weight) = (mc.tier, mc.delay_ms, weight);
                    }
                    m
                }
                None => self.join_member(ix, mc, qi, &mut touched),
            };
            members.push(m);
        }
        let a = &mut self.agents[ix as usize];
        a.members = members;
        a.prof = prof;
        if a.indexed {
            // As if it had just become available: new skills or queues may fit waiting work,
            // and when none does, `insert_trees` adds the entries that are missing.
            a.tree_pending = true;
            self.work_agents.push(ix);
        }
        for qi in touched {
            self.rearm_waiting(now_ms, qi);
        }
        self.do_work(now_ms);
        Ok(())
    }

    /// Removes a queue and every agent's membership of it. Refused (`QueueBusy`) while any
    /// contact is waiting, being offered, connected or queued for a callback in it, and
    /// (`QueueReferenced`) while another queue overflows to it. Callers who hung up from it and
    /// are in their resume grace have nothing to come back to: they end now as abandons.
    pub fn remove_queue(&mut self, now_ms: u64, id: QueueId) -> Result<(), AcdError> {
        self.time_ok(now_ms)?;
        let qi = self.queue_index(id)?;
        // O(contacts), but removal is rare and scanning the table is the check that cannot
        // miss a contact (offered and connected ones are in no per-queue list).
        let busy = self
            .contacts
            .values()
            .any(|c| c.queue == qi && !matches!(c.state, CState::Departed { .. }));
        if busy {
            return Err(AcdError::QueueBusy(id));
        }
        let target = Some(OverflowTarget::Queue(id));
        if let Some(by) = self
            .queue_ix
            .iter()
            .filter(|&(_, &i)| i != qi && self.queues[i as usize].cfg.overflow == target)
            .map(|(&by, _)| by)
            .min()
        {
            return Err(AcdError::QueueReferenced { queue: id, by });
        }
        self.last_now_ms = now_ms;
        let mut departed: Vec<(ContactId, u64)> = self
            .contacts
            .values()
            .filter(|c| c.queue == qi)
            .filter_map(|c| match c.state {
                CState::Departed { left_ms } => Some((c.id, left_ms.saturating_sub(c.entered_ms))),
                _ => None,
            })
            .collect();
        departed.sort_unstable();
        for (c, wait_ms) in departed {
            self.finish_contact(now_ms, c, EventKind::Abandon { wait_ms }, None);
        }
        let q = &mut self.queues[qi as usize];
        let members = std::mem::take(&mut q.members);
        let tenant = q.cfg.tenant;
        for a in members {
            self.agents[a as usize].members.retain(|m| m.queue != qi);
        }
        // An agent wrapping up a call from this queue books its handle time nowhere.
        for a in &mut self.agents {
            if a.wrap_queue == Some(qi) {
                a.wrap_queue = None;
            }
        }
        self.queue_ix.remove(&id);
        self.queues[qi as usize] = Queue::new(QueueConfig::new(id, tenant), self.ewma_div);
        self.free_queues.push(qi);
        self.do_work(now_ms);
        Ok(())
    }

    /// Removes an agent. Refused (`AgentBusy`) unless it is logged out, so it holds no offer,
    /// call or wrap-up.
    pub fn remove_agent(&mut self, now_ms: u64, id: AgentId) -> Result<(), AcdError> {
        self.time_ok(now_ms)?;
        let ix = self.agent_index(id)?;
        let a = &self.agents[ix as usize];
        if a.state != AgentState::LoggedOut {
            return Err(AcdError::AgentBusy(id));
        }
        self.last_now_ms = now_ms;
        let tenant = a.tenant;
        let members = std::mem::take(&mut self.agents[ix as usize].members);
        for m in &members {
            self.leave_member(ix, m);
        }
        self.agent_ix.remove(&id);
        self.agents[ix as usize] = Agent::new(id, tenant, Box::default());
        self.free_agents.push(ix);
        self.do_work(now_ms);
        Ok(())
    }
}
