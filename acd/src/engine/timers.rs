//! Deadlines: one binary heap, lazily cleaned. A timer is live only while the field it mirrors
//! still holds the same deadline, so cancelling is clearing a field and re-arming is pushing a new
//! entry; stale entries are skipped when they surface.

use super::{Acd, CState};
use crate::ids::{AgentId, ContactId};
use crate::io::{EventKind, Output};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Timer {
    /// The offer (or callback dial) ran out.
    Ring(ContactId),
    /// Ring-progressively adds the next agent.
    Step(ContactId),
    MaxWait(ContactId),
    Announce(ContactId),
    /// A relaxation rule or member delay now admits more agents.
    Reroute(ContactId),
    /// The resume grace of a caller who hung up ended: it is an abandon.
    Grace(ContactId),
    /// A failed callback may be tried again.
    Retry(ContactId),
    WrapUp(AgentId),
    Unblock(AgentId),
}

impl Acd {
    pub(super) fn arm(&mut self, at: u64, t: Timer) {
        self.timers.push(std::cmp::Reverse((at, t)));
    }

    pub(super) fn timer_live(&self, at: u64, t: Timer) -> bool {
        let c = |id: ContactId| self.contacts.get(&id);
        let a = |id: AgentId| self.agent_ix.get(&id).map(|&i| &self.agents[i as usize]);
        match t {
            Timer::Ring(id) => matches!(c(id).map(|c| &c.state),
                Some(CState::Offered(o)) if o.deadline_ms == at),
            Timer::Step(id) => matches!(c(id).map(|c| &c.state),
                Some(CState::Offered(o)) if o.step_at == Some(at)),
            Timer::MaxWait(id) => c(id).is_some_and(|c| c.max_wait_at == Some(at)),
            Timer::Announce(id) => c(id).is_some_and(|c| c.announce_at == Some(at)),
            Timer::Reroute(id) => c(id).is_some_and(|c| c.reroute_at == Some(at)),
            Timer::Grace(id) => c(id).is_some_and(|c| c.grace_at == Some(at)),
            Timer::Retry(id) => c(id).is_some_and(|c| c.retry_at == Some(at)),
            Timer::WrapUp(id) => a(id).is_some_and(|a| a.wrap_until == Some(at)),
            Timer::Unblock(id) => a(id).is_some_and(|a| a.blocked_until == Some(at)),
        }
    }

    pub(super) fn fire(&mut self, now: u64, t: Timer) {
        match t {
            Timer::Ring(id) => self.ring_timeout(now, id),
            Timer::Step(id) => self.progressive_step(now, id),
            Timer::MaxWait(id) => {
                // While ringing an agent the contact is left alone; a failed offer re-queues it
                // and the expired deadline sends it on then.
                if let Some(c) = self.contacts.get(&id) {
                    if matches!(c.state, CState::Waiting) {
                        self.leave_queue(now, id, super::contacts::Exit::Timeout);
                    }
                }
            }
            Timer::Announce(id) => self.announce(now, id),
            Timer::Reroute(id) => {
                if let Some(c) = self.contacts.get_mut(&id) {
                    c.reroute_at = None;
                    if matches!(c.state, CState::Waiting) {
                        self.arm_reroute(now, id);
                        self.work_contacts.push(id);
                    }
                }
            }
            Timer::Grace(id) => {
                if let Some(c) = self.contacts.get(&id) {
                    if let CState::Departed { left_ms } = c.state {
                        let wait_ms = left_ms.saturating_sub(c.entered_ms);
                        self.finish_contact(now, id, EventKind::Abandon { wait_ms }, None);
                    }
                }
            }
            Timer::Retry(id) => {
                if let Some(c) = self.contacts.get_mut(&id) {
                    c.retry_at = None;
                    if matches!(c.state, CState::Waiting) {
                        let q = &mut self.queues[c.queue as usize];
                        if let Some(w) = q.waiting.get_mut(&c.key) {
                            w.held = false;
                        }
                    }
                    self.work_contacts.push(id);
                }
            }
            Timer::WrapUp(id) => {
                if let Some(&ix) = self.agent_ix.get(&id) {
                    self.finish_wrap(now, ix, None);
                }
            }
            Timer::Unblock(id) => {
                if let Some(&ix) = self.agent_ix.get(&id) {
                    self.agents[ix as usize].blocked_until = None;
                    self.refresh_index(ix);
                }
            }
        }
    }

    fn announce(&mut self, now: u64, id: ContactId) {
        let Some(c) = self.contacts.get(&id) else {
            return;
        };
        let period = self.queues[c.queue as usize].cfg.announce_period_ms;
        let waiting = matches!(c.state, CState::Waiting);
        let keep = c.callback.is_none() && matches!(c.state, CState::Waiting | CState::Offered(_));
        if waiting && c.callback.is_none() {
            let (position, ewt) = self.position_and_ewt(id);
            self.out.push_back(Output::Announce {
                contact: id,
                position,
                ewt_ms: ewt.unwrap_or(u64::MAX),
            });
        }
        let next = now + period;
        if let Some(c) = self.contacts.get_mut(&id) {
            c.announce_at = (keep && period > 0).then_some(next);
        }
        if keep && period > 0 {
            self.arm(next, Timer::Announce(id));
        }
    }
}
