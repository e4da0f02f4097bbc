//! Agent inputs and the single place where an agent's state changes (`set_state`), which keeps
//! the indexes, staffing counts, the state-change output and the login/pause events in step.

use super::{Acd, CState};
use crate::error::AcdError;
use crate::ids::{AgentId, ContactId, QueueId, ReasonCode, TenantId};
use crate::io::{EventKind, ForcedState, Output, QueueEvent};
use crate::state::AgentState;

use super::timers::Timer;

impl Acd {
    pub(super) fn event(
        &mut self,
        at_ms: u64,
        tenant: TenantId,
        queue: Option<QueueId>,
        contact: Option<ContactId>,
        agent: Option<AgentId>,
        kind: EventKind,
    ) {
        self.out.push_back(Output::Event(QueueEvent {
            at_ms,
            tenant,
            queue,
            contact,
            agent,
            kind,
        }));
    }

    pub(super) fn set_state(&mut self, now: u64, ix: u32, to: AgentState) {
        let a = &mut self.agents[ix as usize];
        let from = a.state;
        debug_assert!(from.can_go(to), "{from:?} -> {to:?}");
        a.state = to;
        a.since_ms = now;
        if to != AgentState::Available {
            a.blocked_until = None;
        }
        if !matches!(to, AgentState::WrapUp) {
            a.wrap_until = None;
        }
        let (id, tenant) = (a.id, a.tenant);
        if from.is_staffed() != to.is_staffed() {
            let up = to.is_staffed();
            for m in 0..self.agents[ix as usize].members.len() {
                let qi = self.agents[ix as usize].members[m].queue;
                let q = &mut self.queues[qi as usize];
                if up {
                    q.staffed += 1;
                } else {
                    q.staffed -= 1;
                    if q.staffed == 0 && q.cfg.empty == crate::config::EmptyBehaviour::Leave {
                        self.work_empty.push(qi);
                    }
                }
            }
        }
        self.refresh_index(ix);
        self.out.push_back(Output::AgentStateChanged {
            agent: id,
            tenant,
            from,
            to,
            at_ms: now,
        });
        let kind = match (from, to) {
            (AgentState::LoggedOut, _) => Some(EventKind::AgentLogin),
            (_, AgentState::LoggedOut) => Some(EventKind::AgentLogout),
            (_, AgentState::Break(reason)) => Some(EventKind::Pause { reason }),
            (AgentState::Break(_), _) => Some(EventKind::Unpause),
            _ => None,
        };
        if let Some(kind) = kind {
            self.event(now, tenant, None, None, Some(id), kind);
        }
    }

    pub(super) fn login(&mut self, now: u64, agent: AgentId) -> Result<(), AcdError> {
        let ix = self.agent_index(agent)?;
        let from = self.agents[ix as usize].state;
        if from != AgentState::LoggedOut {
            return Err(AcdError::InvalidTransition {
                agent,
                from,
                input: "log in",
            });
        }
        self.agents[ix as usize].misses = 0;
        self.set_state(now, ix, AgentState::Available);
        Ok(())
    }

    pub(super) fn ready(&mut self, now: u64, agent: AgentId) -> Result<(), AcdError> {
        let ix = self.agent_index(agent)?;
        match self.agents[ix as usize].state {
            AgentState::Break(_) => {
                self.agents[ix as usize].misses = 0;
                self.set_state(now, ix, AgentState::Available);
                Ok(())
            }
            AgentState::WrapUp => {
                self.finish_wrap(now, ix, Some(ForcedState::Available));
                Ok(())
            }
            from => Err(AcdError::InvalidTransition {
                agent,
                from,
                input: "become ready",
            }),
        }
    }

    pub(super) fn extend_wrap(&mut self, agent: AgentId, extra_ms: u64) -> Result<(), AcdError> {
        let ix = self.agent_index(agent)?;
        let a = &mut self.agents[ix as usize];
        match a.wrap_until {
            Some(until) if a.state == AgentState::WrapUp => {
                let at = until.saturating_add(extra_ms);
                a.wrap_until = Some(at);
                self.arm(at, Timer::WrapUp(agent));
                Ok(())
            }
            _ => Err(AcdError::InvalidTransition {
                agent,
                from: a.state,
                input: "extend wrap-up",
            }),
        }
    }

    /// Checks that `agent` holds an offer of `contact` and returns the agent's index.
    fn offered_to(&self, agent: AgentId, contact: ContactId) -> Result<u32, AcdError> {
        let ix = self.agent_index(agent)?;
        let a = &self.agents[ix as usize];
        let c = self.contact(contact)?;
        let ok = a.contact == Some(contact)
            && matches!(a.state, AgentState::Reserved | AgentState::Ringing)
            && matches!(&c.state, CState::Offered(o) if o.agents.contains(&ix));
        if ok {
            Ok(ix)
        } else {
            Err(AcdError::NotOffered { agent, contact })
        }
    }

    pub(super) fn ringing(
        &mut self,
        now: u64,
        agent: AgentId,
        contact: ContactId,
    ) -> Result<(), AcdError> {
        let ix = self.offered_to(agent, contact)?;
        if self.agents[ix as usize].state == AgentState::Reserved {
            self.set_state(now, ix, AgentState::Ringing);
        }
        Ok(())
    }

    pub(super) fn answer(
        &mut self,
        now: u64,
        agent: AgentId,
        contact: ContactId,
    ) -> Result<(), AcdError> {
        let ix = self.offered_to(agent, contact)?;
        if matches!(&self.contacts[&contact].state, CState::Offered(o) if o.callback) {
            // A callback is answered by the customer (CallbackResult), not by the agent.
            return Err(AcdError::InvalidContactState {
                contact,
                state: "dialling a callback",
                input: "be answered by the agent",
            });
        }
        self.connect(now, contact, ix);
        Ok(())
    }

    /// The offer of `contact` was taken by `ix`: cancel the other legs and bridge.
    pub(super) fn connect(&mut self, now: u64, contact: ContactId, ix: u32) {
        let Some(c) = self.contacts.get_mut(&contact) else {
            return;
        };
        let CState::Offered(o) = std::mem::replace(
            &mut c.state,
            CState::Connected {
                agent: ix,
                since_ms: now,
            },
        ) else {
            return;
        };
        c.max_wait_at = None;
        c.announce_at = None;
        c.reroute_at = None;
        let (tenant, qi, entered) = (c.tenant, c.queue, c.entered_ms);
        for &other in o.agents.iter().filter(|&&a| a != ix) {
            self.release(now, other, contact, true);
        }
        let a = &mut self.agents[ix as usize];
        a.misses = 0;
        a.calls += 1;
        let id = a.id;
        self.set_state(now, ix, AgentState::OnCall);
        self.out.push_back(Output::Connect { contact, agent: id });
        let queue = self.queues[qi as usize].cfg.id;
        self.event(
            now,
            tenant,
            Some(queue),
            Some(contact),
            Some(id),
            EventKind::Connect {
                wait_ms: now.saturating_sub(entered),
                ring_ms: now - o.started_ms,
                callback: o.callback,
            },
        );
    }

    /// Frees an agent from an offer it did not take, back to Available (or its pending state).
    fn release(&mut self, now: u64, ix: u32, contact: ContactId, cancel: bool) {
        let a = &mut self.agents[ix as usize];
        a.contact = None;
        let id = a.id;
        if cancel {
            self.out
                .push_back(Output::CancelOffer { contact, agent: id });
        }
        self.set_state(now, ix, AgentState::Available);
    }

    pub(super) fn reject(
        &mut self,
        now: u64,
        agent: AgentId,
        contact: ContactId,
    ) -> Result<(), AcdError> {
        let ix = self.offered_to(agent, contact)?;
        let c = &self.contacts[&contact];
        let (tenant, queue) = (c.tenant, self.queues[c.queue as usize].cfg.id);
        let delay = self.queues[c.queue as usize].cfg.reject_delay_ms;
        self.event(
            now,
            tenant,
            Some(queue),
            Some(contact),
            Some(agent),
            EventKind::Reject,
        );
        self.withdraw(now, ix, false);
        self.block(now, ix, delay);
        Ok(())
    }

    /// Keeps an Available agent out of routing for `delay_ms`.
    fn block(&mut self, now: u64, ix: u32, delay_ms: u64) {
        let a = &mut self.agents[ix as usize];
        if a.state != AgentState::Available || delay_ms == 0 {
            return;
        }
        let at = now + delay_ms;
        a.blocked_until = Some(at);
        let id = a.id;
        self.refresh_index(ix);
        self.arm(at, Timer::Unblock(id));
    }

    /// Takes a Reserved/Ringing agent out of its offer (logout, pause, reject); the contact goes
    /// back to its original place when no leg is left.
    fn withdraw(&mut self, now: u64, ix: u32, cancel: bool) {
        let Some(contact) = self.agents[ix as usize].contact else {
            return;
        };
        let mut empty = false;
        if let Some(CState::Offered(o)) = self.contacts.get_mut(&contact).map(|c| &mut c.state) {
            o.agents.retain(|&a| a != ix);
            empty = o.agents.is_empty();
        }
        self.release(now, ix, contact, cancel);
        if empty {
            self.requeue(now, contact);
        }
    }

    /// Logout, pause, and supervisor-forced states.
    pub(super) fn force(
        &mut self,
        now: u64,
        agent: AgentId,
        to: ForcedState,
        supervisor: bool,
    ) -> Result<(), AcdError> {
        let ix = self.agent_index(agent)?;
        let from = self.agents[ix as usize].state;
        let target = match to {
            ForcedState::LoggedOut => AgentState::LoggedOut,
            ForcedState::Available => AgentState::Available,
            ForcedState::Break(r) => AgentState::Break(r),
        };
        let input = match to {
            ForcedState::LoggedOut => "log out",
            ForcedState::Available => "be made available",
            ForcedState::Break(_) => "pause",
        };
        let bad = || AcdError::InvalidTransition { agent, from, input };
        match from {
            _ if from == target => return Err(bad()),
            // Agents log in with Login; only a supervisor brings a logged-out agent in this way.
            AgentState::LoggedOut if !supervisor => return Err(bad()),
            AgentState::OnCall => {
                if supervisor {
                    return Err(bad());
                }
                // The agent's own logout/break during a call takes effect when it is done.
                self.agents[ix as usize].pending = Some(to);
                return Ok(());
            }
            AgentState::Reserved | AgentState::Ringing => {
                self.withdraw(now, ix, true);
            }
            AgentState::WrapUp => {
                self.finish_wrap(now, ix, Some(to));
                return Ok(());
            }
            _ => {}
        }
        let a = &mut self.agents[ix as usize];
        a.pending = None;
        if target == AgentState::Available {
            a.misses = 0;
        }
        if a.state != target {
            self.set_state(now, ix, target);
        }
        Ok(())
    }

    /// Ends a call for the agent: wrap-up if the queue has one, else straight to the next state.
    pub(super) fn end_call(&mut self, now: u64, ix: u32, qi: u32, talk_ms: u64) {
        let wrap = self.queues[qi as usize].cfg.wrapup_ms;
        let a = &mut self.agents[ix as usize];
        a.contact = None;
        a.talk_total_ms += talk_ms;
        a.last_call_end_ms = now;
        a.last_talk_ms = talk_ms;
        a.wrap_queue = Some(qi);
        let id = a.id;
        self.set_state(now, ix, AgentState::WrapUp);
        if wrap > 0 {
            let at = now + wrap;
            self.agents[ix as usize].wrap_until = Some(at);
            self.arm(at, Timer::WrapUp(id));
        } else {
            self.finish_wrap(now, ix, None);
        }
    }

    /// Wrap-up over (timer, Ready, or forced): record the handle time, go to the next state.
    pub(super) fn finish_wrap(&mut self, now: u64, ix: u32, to: Option<ForcedState>) {
        let a = &mut self.agents[ix as usize];
        if a.state != AgentState::WrapUp {
            return;
        }
        let handle_ms = a.last_talk_ms + now.saturating_sub(a.since_ms);
        if let Some(qi) = a.wrap_queue.take() {
            self.queues[qi as usize].aht.add(handle_ms as f64);
        }
        let a = &mut self.agents[ix as usize];
        let next = to.or(a.pending.take()).unwrap_or(ForcedState::Available);
        a.pending = None;
        let state = match next {
            ForcedState::LoggedOut => AgentState::LoggedOut,
            ForcedState::Available => AgentState::Available,
            ForcedState::Break(r) => AgentState::Break(r),
        };
        self.set_state(now, ix, state);
    }

    /// The offer of `contact` rang out: every leg missed; callbacks count as a failed attempt.
    pub(super) fn ring_timeout(&mut self, now: u64, contact: ContactId) {
        let Some(c) = self.contacts.get(&contact) else {
            return;
        };
        let CState::Offered(o) = &c.state else {
            return;
        };
        if o.callback {
            self.callback_failed(now, contact);
            return;
        }
        let (agents, started) = (o.agents.clone(), o.started_ms);
        let (tenant, qi) = (c.tenant, c.queue);
        let cfg = &self.queues[qi as usize].cfg;
        let (queue, max_na, delay) = (cfg.id, cfg.max_no_answer, cfg.no_answer_delay_ms);
        if let Some(c) = self.contacts.get_mut(&contact) {
            if let CState::Offered(o) = &mut c.state {
                o.agents.clear();
            }
        }
        for ix in agents {
            let id = self.agents[ix as usize].id;
            self.event(
                now,
                tenant,
                Some(queue),
                Some(contact),
                Some(id),
                EventKind::RingNoAnswer {
                    ring_ms: now - started,
                },
            );
            self.agents[ix as usize].misses += 1;
            if max_na > 0 && self.agents[ix as usize].misses >= max_na {
                self.agents[ix as usize].contact = None;
                self.out
                    .push_back(Output::CancelOffer { contact, agent: id });
                self.agents[ix as usize].misses = 0;
                self.set_state(now, ix, AgentState::Break(ReasonCode::AUTO_PAUSE_NO_ANSWER));
            } else {
                self.release(now, ix, contact, true);
                self.block(now, ix, delay);
            }
        }
        self.requeue(now, contact);
    }

    /// A callback attempt failed (customer unreachable or the dial timed out).
    pub(super) fn callback_failed(&mut self, now: u64, contact: ContactId) {
        let Some(c) = self.contacts.get_mut(&contact) else {
            return;
        };
        let CState::Offered(o) = &mut c.state else {
            return;
        };
        let agents = std::mem::take(&mut o.agents);
        let attempt = c.callback.as_ref().map_or(0, |cb| cb.attempts);
        let (tenant, qi) = (c.tenant, c.queue);
        for &ix in &agents {
            self.release(now, ix, contact, true);
        }
        let last = attempt >= self.callback_max_attempts;
        let queue = self.queues[qi as usize].cfg.id;
        let agent = agents.first().map(|&a| self.agents[a as usize].id);
        if last {
            self.finish_contact(
                now,
                contact,
                EventKind::CallbackFailed { attempt, last },
                agent,
            );
            return;
        }
        self.event(
            now,
            tenant,
            Some(queue),
            Some(contact),
            agent,
            EventKind::CallbackFailed { attempt, last },
        );
        let at = now + self.callback_retry_ms;
        if let Some(c) = self.contacts.get_mut(&contact) {
            c.retry_at = Some(at);
        }
        self.arm(at, Timer::Retry(contact));
        self.requeue(now, contact);
    }
}
