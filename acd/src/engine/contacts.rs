//! Caller and supervisor inputs: entering a queue, leaving it (every way), callbacks, resume,
//! transfers and moves.

use std::sync::Arc;

use super::{Acd, CState, Callback, Contact, WaitKey, MAX_HOPS};
use crate::config::OverflowTarget;
use crate::error::AcdError;
use crate::ewt::estimate_wait_ms;
use crate::ids::{AgentId, ContactId, QueueId};
use crate::io::{ContactRequest, EventKind, Output, Party};

use super::timers::Timer;

/// Why a contact leaves a queue without being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    Timeout,
    Empty,
    Full,
}

fn state_name(s: &CState) -> &'static str {
    match s {
        CState::Waiting => "waiting",
        CState::Offered(_) => "offered",
        CState::Connected { .. } => "connected",
        CState::Departed { .. } => "departed",
    }
}

impl Acd {
    fn bad_state(&self, contact: ContactId, input: &'static str) -> AcdError {
        let state = self
            .contacts
            .get(&contact)
            .map_or("unknown", |c| state_name(&c.state));
        AcdError::InvalidContactState {
            contact,
            state,
            input,
        }
    }

    pub(super) fn enter(&mut self, now: u64, req: ContactRequest) -> Result<(), AcdError> {
        let qi = self.queue_index(req.queue)?;
        if self.contacts.contains_key(&req.id) {
            return Err(AcdError::DuplicateContact(req.id));
        }
        if self.contacts.len() >= self.max_contacts {
            return Err(AcdError::TooManyContacts(self.max_contacts));
        }
        if req
            .skills
            .iter()
            .any(|&(s, p)| s.0 >= self.max_skills || !(1..=5).contains(&p))
        {
            return Err(AcdError::InvalidConfig(
                "required skill beyond max_skills or proficiency outside 1-5",
            ));
        }
        let tenant = self.queues[qi as usize].cfg.tenant;
        // Abandoned-resume: the same caller within the grace takes the old place and clock.
        let resumed = req
            .caller_key
            .as_ref()
            .and_then(|k| self.departed.get(&(qi, k.clone())).copied());
        let mut key = WaitKey {
            neg_priority: -i64::from(req.priority),
            seq: self.seq,
        };
        let mut entered_ms = now;
        if let Some(old) = resumed {
            if let Some(o) = self.contacts.get(&old) {
                key = WaitKey {
                    neg_priority: key.neg_priority.min(o.key.neg_priority),
                    seq: o.key.seq,
                };
                entered_ms = o.entered_ms;
            }
            self.finish_contact(now, old, EventKind::Resumed { into: req.id }, None);
        } else {
            self.seq += 1;
        }
        self.contacts.insert(
            req.id,
            Contact {
                id: req.id,
                tenant,
                queue: qi,
                key,
                entered_ms,
                skills: Arc::from(req.skills),
                data: Arc::from(req.data),
                caller_key: req.caller_key,
                state: CState::Waiting,
                callback: None,
                max_wait_at: None,
                announce_at: None,
                reroute_at: None,
                grace_at: None,
                retry_at: None,
                hops: 0,
            },
        );
        self.join(now, req.id, qi, resumed);
        Ok(())
    }

    /// Puts a contact (already in the table, not in any queue) into queue `qi`, or sends it on
    /// when the queue is full or nobody is staffed.
    fn join(&mut self, now: u64, id: ContactId, qi: u32, resumed_from: Option<ContactId>) {
        let q = &self.queues[qi as usize];
        let full = q
            .cfg
            .max_len
            .is_some_and(|m| q.waiting.len() as u64 >= u64::from(m));
        let empty = q.staffed == 0 && q.cfg.empty == crate::config::EmptyBehaviour::Leave;
        let Some(c) = self.contacts.get_mut(&id) else {
            return;
        };
        c.queue = qi;
        c.state = CState::Waiting;
        if full {
            self.leave_queue(now, id, Exit::Full);
            return;
        }
        let cfg = &self.queues[qi as usize].cfg;
        c.max_wait_at = cfg.max_wait_ms.map(|w| c.entered_ms + w);
        c.announce_at = (cfg.announce_period_ms > 0).then(|| now + cfg.announce_period_ms);
        let (tenant, key, queue) = (c.tenant, c.key, cfg.id);
        let (mw, an) = (c.max_wait_at, c.announce_at);
        let w = c.waiter();
        self.queues[qi as usize].waiting.insert(key, w);
        let (position, ewt) = self.position_and_ewt(id);
        self.event(
            now,
            tenant,
            Some(queue),
            Some(id),
            None,
            EventKind::Enter {
                position,
                ewt_ms: ewt.unwrap_or(u64::MAX),
                resumed_from,
            },
        );
        if empty {
            self.leave_queue(now, id, Exit::Empty);
            return;
        }
        if let Some(at) = mw {
            self.arm(at, Timer::MaxWait(id));
        }
        if let Some(at) = an {
            self.arm(at, Timer::Announce(id));
        }
        self.arm_reroute(now, id);
        self.work_contacts.push(id);
    }

    /// Position (1 = next) among waiting contacts and the wait estimate there.
    pub(super) fn position_and_ewt(&self, id: ContactId) -> (u32, Option<u64>) {
        let Some(c) = self.contacts.get(&id) else {
            return (0, None);
        };
        let q = &self.queues[c.queue as usize];
        // A newcomer is usually last: O(1) then; otherwise count the keys ahead (O(depth)).
        let position = if q.waiting.last_key_value().map(|(k, _)| *k) == Some(c.key) {
            q.waiting.len() as u32
        } else {
            q.waiting.range(..c.key).count() as u32 + 1
        };
        let ewt = estimate_wait_ms(position, q.idle, q.staffed, q.aht.get());
        (position, ewt)
    }

    /// An offer failed: the contact goes back to the place its key gives it (its original one).
    pub(super) fn requeue(&mut self, now: u64, id: ContactId) {
        let Some(c) = self.contacts.get_mut(&id) else {
            return;
        };
        c.state = CState::Waiting;
        let (qi, key, expired) = (c.queue, c.key, c.max_wait_at.is_some_and(|at| at <= now));
        self.queues[qi as usize].waiting.insert(key, c.waiter());
        if expired && c.callback.is_none() {
            self.leave_queue(now, id, Exit::Timeout);
            return;
        }
        self.arm_reroute(now, id);
        self.work_contacts.push(id);
    }

    /// Takes a contact out of its queue and out of any offer (legs cancelled, agents freed).
    fn detach(&mut self, now: u64, id: ContactId) {
        let Some(c) = self.contacts.get_mut(&id) else {
            return;
        };
        let qi = c.queue as usize;
        match std::mem::replace(&mut c.state, CState::Waiting) {
            CState::Waiting => {
                self.queues[qi].waiting.remove(&c.key);
            }
            CState::Offered(o) => {
                for ix in o.agents {
                    let a = &mut self.agents[ix as usize];
                    a.contact = None;
                    let agent = a.id;
                    self.out
                        .push_back(Output::CancelOffer { contact: id, agent });
                    self.set_state(now, ix, crate::state::AgentState::Available);
                }
            }
            other => c.state = other,
        }
        if let Some(c) = self.contacts.get_mut(&id) {
            c.max_wait_at = None;
            c.announce_at = None;
            c.reroute_at = None;
            c.retry_at = None;
        }
    }

    /// Emits the contact's final event and forgets it.
    pub(super) fn finish_contact(
        &mut self,
        now: u64,
        id: ContactId,
        kind: EventKind,
        agent: Option<AgentId>,
    ) {
        debug_assert!(kind.ends_contact());
        let Some(c) = self.contacts.remove(&id) else {
            return;
        };
        let q = &mut self.queues[c.queue as usize];
        if matches!(c.state, CState::Waiting) {
            q.waiting.remove(&c.key);
        }
        if let Some(k) = c.caller_key {
            if self.departed.get(&(c.queue, k.clone())) == Some(&id) {
                self.departed.remove(&(c.queue, k));
            }
        }
        let queue = q.cfg.id;
        self.event(now, c.tenant, Some(queue), Some(id), agent, kind);
    }

    /// Max wait, full or empty: the contact leaves this queue for the overflow target.
    pub(super) fn leave_queue(&mut self, now: u64, id: ContactId, why: Exit) {
        self.detach(now, id);
        let Some(c) = self.contacts.get(&id) else {
            return;
        };
        let q = &self.queues[c.queue as usize];
        let wait_ms = now.saturating_sub(c.entered_ms);
        let target = match &q.cfg.overflow {
            Some(OverflowTarget::Queue(t)) if c.hops < MAX_HOPS => self
                .queue_ix
                .get(t)
                .copied()
                .filter(|&ti| self.queues[ti as usize].cfg.tenant == c.tenant),
            _ => None,
        };
        let external = match &q.cfg.overflow {
            Some(OverflowTarget::External(s)) => Some(s.clone()),
            _ => None,
        };
        let to = target.map(|ti| self.queues[ti as usize].cfg.id);
        let kind = match why {
            Exit::Timeout => EventKind::ExitTimeout { wait_ms, to },
            Exit::Empty => EventKind::ExitEmpty { wait_ms, to },
            Exit::Full => EventKind::ExitFull { to },
        };
        match target {
            Some(ti) => {
                let (tenant, queue) = (c.tenant, q.cfg.id);
                self.event(now, tenant, Some(queue), Some(id), None, kind);
                self.start_segment(id, now);
                if let Some(c) = self.contacts.get_mut(&id) {
                    c.hops += 1;
                }
                self.join(now, id, ti, None);
            }
            None => {
                self.finish_contact(now, id, kind, None);
                if let Some(target) = external {
                    self.out.push_back(Output::Overflow {
                        contact: id,
                        target,
                    });
                }
            }
        }
    }

    /// A new stay in a (new) queue: new arrival order, clock restarted.
    fn start_segment(&mut self, id: ContactId, now: u64) {
        if let Some(c) = self.contacts.get_mut(&id) {
            c.key.seq = self.seq;
            c.entered_ms = now;
            self.seq += 1;
        }
    }

    /// Nobody staffed and the queue says leave: every waiting caller exits (callbacks stay).
    pub(super) fn empty_queue_exit(&mut self, now: u64, qi: u32) {
        let q = &self.queues[qi as usize];
        if q.staffed > 0 {
            return;
        }
        let ids: Vec<ContactId> = q.waiting.values().map(|w| w.id).collect();
        for id in ids {
            if self.contacts.get(&id).is_some_and(|c| c.callback.is_none()) {
                self.leave_queue(now, id, Exit::Empty);
            }
        }
    }

    pub(super) fn hangup(&mut self, now: u64, id: ContactId, by: Party) -> Result<(), AcdError> {
        let c = self.contact(id)?;
        match (&c.state, by) {
            (CState::Connected { agent, since_ms }, _) => {
                let (ix, since, qi, entered) = (*agent, *since_ms, c.queue, c.entered_ms);
                let talk_ms = now - since;
                let wait_ms = since.saturating_sub(entered);
                let kind = match by {
                    Party::Caller => EventKind::CompleteCaller { wait_ms, talk_ms },
                    Party::Agent => EventKind::CompleteAgent { wait_ms, talk_ms },
                };
                let agent = self.agents[ix as usize].id;
                self.finish_contact(now, id, kind, Some(agent));
                self.end_call(now, ix, qi, talk_ms);
                Ok(())
            }
            (CState::Waiting | CState::Offered(_), Party::Caller) => {
                let grace = self.resume_grace_ms;
                let key = c.caller_key.clone();
                let wait_ms = now.saturating_sub(c.entered_ms);
                let qi = c.queue;
                self.detach(now, id);
                match key {
                    Some(k) if grace > 0 => {
                        let at = now + grace;
                        if let Some(c) = self.contacts.get_mut(&id) {
                            c.state = CState::Departed { left_ms: now };
                            c.grace_at = Some(at);
                        }
                        // A newer departure of the same caller replaces an older one.
                        if let Some(old) = self.departed.insert((qi, k), id) {
                            let old_wait = self.contacts.get(&old).and_then(|o| match o.state {
                                CState::Departed { left_ms } if old != id => {
                                    Some(left_ms.saturating_sub(o.entered_ms))
                                }
                                _ => None,
                            });
                            if let Some(w) = old_wait {
                                self.finish_contact(
                                    now,
                                    old,
                                    EventKind::Abandon { wait_ms: w },
                                    None,
                                );
                            }
                        }
                        self.arm(at, Timer::Grace(id));
                    }
                    _ => self.finish_contact(now, id, EventKind::Abandon { wait_ms }, None),
                }
                Ok(())
            }
            _ => Err(self.bad_state(id, "hang up")),
        }
    }

    pub(super) fn leave_key(&mut self, now: u64, id: ContactId) -> Result<(), AcdError> {
        let c = self.contact(id)?;
        if !matches!(c.state, CState::Waiting | CState::Offered(_)) || c.callback.is_some() {
            return Err(self.bad_state(id, "leave by key"));
        }
        let wait_ms = now.saturating_sub(c.entered_ms);
        self.detach(now, id);
        self.finish_contact(now, id, EventKind::ExitKey { wait_ms }, None);
        Ok(())
    }

    pub(super) fn request_callback(
        &mut self,
        now: u64,
        id: ContactId,
        number: String,
    ) -> Result<(), AcdError> {
        let c = self.contact(id)?;
        if !matches!(c.state, CState::Waiting | CState::Offered(_)) || c.callback.is_some() {
            return Err(self.bad_state(id, "request a callback"));
        }
        let (tenant, qi, wait_ms) = (c.tenant, c.queue, now.saturating_sub(c.entered_ms));
        self.detach(now, id);
        let queue = self.queues[qi as usize].cfg.id;
        if let Some(c) = self.contacts.get_mut(&id) {
            c.callback = Some(Callback {
                number,
                attempts: 0,
            });
        }
        self.event(
            now,
            tenant,
            Some(queue),
            Some(id),
            None,
            EventKind::CallbackRequested { wait_ms },
        );
        self.requeue(now, id);
        Ok(())
    }

    pub(super) fn callback_result(
        &mut self,
        now: u64,
        id: ContactId,
        answered: bool,
    ) -> Result<(), AcdError> {
        let c = self.contact(id)?;
        let agent = match &c.state {
            CState::Offered(o) if o.callback => o.agents.first().copied(),
            _ => None,
        };
        let Some(ix) = agent else {
            return Err(self.bad_state(id, "report a callback result"));
        };
        if answered {
            self.connect(now, id, ix);
        } else {
            self.callback_failed(now, id);
        }
        Ok(())
    }

    /// `to`'s index, when it is a queue of the contact's own tenant (transfer and move never
    /// cross tenants).
    fn queue_for(&self, id: ContactId, to: QueueId) -> Result<u32, AcdError> {
        let ti = self.queue_index(to)?;
        if self.queues[ti as usize].cfg.tenant != self.contact(id)?.tenant {
            return Err(AcdError::TenantMismatch { queue: to });
        }
        Ok(ti)
    }

    pub(super) fn transfer(
        &mut self,
        now: u64,
        id: ContactId,
        to: QueueId,
    ) -> Result<(), AcdError> {
        let ti = self.queue_for(id, to)?;
        let c = self.contact(id)?;
        let CState::Connected { agent, since_ms } = c.state else {
            return Err(self.bad_state(id, "be transferred"));
        };
        let (tenant, qi) = (c.tenant, c.queue);
        let talk_ms = now - since_ms;
        let wait_ms = since_ms.saturating_sub(c.entered_ms);
        let queue = self.queues[qi as usize].cfg.id;
        let agent_id = self.agents[agent as usize].id;
        self.event(
            now,
            tenant,
            Some(queue),
            Some(id),
            Some(agent_id),
            EventKind::Transfer {
                to,
                wait_ms,
                talk_ms,
            },
        );
        if let Some(c) = self.contacts.get_mut(&id) {
            c.state = CState::Waiting;
        }
        self.end_call(now, agent, qi, talk_ms);
        self.start_segment(id, now);
        self.join(now, id, ti, None);
        Ok(())
    }

    pub(super) fn move_contact(
        &mut self,
        now: u64,
        id: ContactId,
        to: QueueId,
    ) -> Result<(), AcdError> {
        let ti = self.queue_for(id, to)?;
        let c = self.contact(id)?;
        if !matches!(c.state, CState::Waiting | CState::Offered(_)) || c.queue == ti {
            return Err(self.bad_state(id, "be moved"));
        }
        let (tenant, qi, wait_ms) = (c.tenant, c.queue, now.saturating_sub(c.entered_ms));
        let callback = c.callback.is_some();
        self.detach(now, id);
        let queue = self.queues[qi as usize].cfg.id;
        self.event(
            now,
            tenant,
            Some(queue),
            Some(id),
            None,
            EventKind::Transfer {
                to,
                wait_ms,
                talk_ms: 0,
            },
        );
        self.start_segment(id, now);
        self.join(now, id, ti, None);
        if callback {
            // A callback keeps being a callback in its new queue (no announcements, no max wait).
            if let Some(c) = self.contacts.get_mut(&id) {
                c.max_wait_at = None;
                c.announce_at = None;
            }
        }
        Ok(())
    }

    pub(super) fn set_priority(&mut self, id: ContactId, priority: i32) -> Result<(), AcdError> {
        let c = self
            .contacts
            .get_mut(&id)
            .ok_or(AcdError::UnknownContact(id))?;
        let np = -i64::from(priority);
        match c.state {
            CState::Waiting => {
                let q = &mut self.queues[c.queue as usize];
                q.waiting.remove(&c.key);
                c.key.neg_priority = np;
                q.waiting.insert(c.key, c.waiter());
                Ok(())
            }
            CState::Offered(_) => {
                c.key.neg_priority = np;
                Ok(())
            }
            _ => Err(self.bad_state(id, "change priority")),
        }
    }
}
