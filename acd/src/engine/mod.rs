//! The ACD state machine: `handle` inputs, drain `poll_output`, wake at `poll_timeout`.
//!
//! Split by concern: `agents.rs` (agent inputs, the one `set_state`), `contacts.rs` (caller and
//! supervisor inputs, entering and leaving queues), `routing.rs` (indexes and decisions),
//! `timers.rs` (deadlines), `view.rs` (read-only status and invariant checks).

mod agents;
mod contacts;
mod reconfig;
mod routing;
mod timers;
mod view;

use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::Arc;

use crate::config::{AcdConfig, AgentConfig, QueueConfig};
use crate::error::AcdError;
use crate::ewt::Ewma;
use crate::ids::{AgentId, ContactId, IdMap, QueueId, SkillId, TenantId};
use crate::io::{ForcedState, Input, Output};
use crate::rng::SplitMix64;
use crate::state::AgentState;

pub use view::{AgentCounts, AgentStatus, QueueStatus, WaitingContact};

use timers::Timer;

/// Order of waiting contacts in a queue: higher priority first, then arrival. A contact keeps its
/// key when an offer fails, which is what "re-queued at its original position" means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct WaitKey {
    neg_priority: i64,
    seq: u64,
}

/// A waiting contact as its queue's map holds it: what the cross-queue pick reads, so it needs
/// no contact record (a hash probe and a cache miss per queue at scale). Kept in step with the
/// contact (`Contact::waiter`, and the retry timer clears `held`).
#[derive(Debug, Clone)]
pub(crate) struct Waiter {
    id: ContactId,
    entered_ms: u64,
    /// A failed callback waiting for its retry: not routable yet.
    held: bool,
    skills: Arc<[(SkillId, u8)]>,
}

/// Order of available agents in a queue: tier first, then the strategy's key, then membership
/// order (unique within the queue, so keys never collide). Packed into one `u64` (tier 8 bits,
/// key 40 bits, order 16 bits) so the index compares one word per step: key values are ms
/// (34 years fit), calls or talk ms, saturated at 2^40 − 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct AvailKey(u64);

impl AvailKey {
    const K_MAX: u64 = (1 << 40) - 1;

    pub(crate) fn new(tier: u8, k: u64, order: u32) -> Self {
        debug_assert!(order <= u32::from(u16::MAX));
        AvailKey((u64::from(tier) << 56) | (k.min(Self::K_MAX) << 16) | u64::from(order & 0xFFFF))
    }
    pub(crate) fn tier(self) -> u8 {
        (self.0 >> 56) as u8
    }
    pub(crate) fn order(self) -> u32 {
        (self.0 & 0xFFFF) as u32
    }
}

/// Members per queue: membership order is 16 bits of the packed key.
pub(crate) const MAX_MEMBERS: u32 = 1 << 16;

/// What routing needs about an available member without touching the agent's memberships.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cand {
    agent: u32,
    delay_ms: u64,
    weight: u32,
}

#[derive(Debug)]
pub(crate) struct Member {
    queue: u32,
    tier: u8,
    delay_ms: u64,
    weight: u32,
    order: u32,
    /// Where the agent's entry in this queue's available index is: live while the agent is
    /// indexed, stale (awaiting a lazy drop) otherwise.
    key: Option<AvailKey>,
}

#[derive(Debug)]
pub(crate) struct Agent {
    id: AgentId,
    tenant: TenantId,
    state: AgentState,
    since_ms: u64,
    /// Proficiency per skill id (0 = lacks the skill).
    prof: Box<[u8]>,
    members: Vec<Member>,
    indexed: bool,
    /// Available, but not yet in the trees (see `refresh_index`); never true between inputs.
    tree_pending: bool,
    /// After a reject or ring-out the agent stays Available but gets no offer until then.
    blocked_until: Option<u64>,
    wrap_until: Option<u64>,
    /// Queue whose handle-time average gets this call's talk + wrap-up.
    wrap_queue: Option<u32>,
    last_talk_ms: u64,
    misses: u32,
    contact: Option<ContactId>,
    /// A logout or break asked for during a call, applied when its wrap-up ends.
    pending: Option<ForcedState>,
    last_call_end_ms: u64,
    calls: u64,
    talk_total_ms: u64,
}

impl Agent {
    /// A logged-out agent with no memberships (also what a removed agent's slot is reset to).
    fn new(id: AgentId, tenant: TenantId, prof: Box<[u8]>) -> Agent {
        Agent {
            id,
            tenant,
            state: AgentState::LoggedOut,
            since_ms: 0,
            prof,
            members: Vec::new(),
            indexed: false,
            tree_pending: false,
            blocked_until: None,
            wrap_until: None,
            wrap_queue: None,
            last_talk_ms: 0,
            misses: 0,
            contact: None,
            pending: None,
            last_call_end_ms: 0,
            calls: 0,
            talk_total_ms: 0,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Queue {
    cfg: QueueConfig,
    waiting: BTreeMap<WaitKey, Waiter>,
    /// Available members, plus stale entries of members that left Available (dropped lazily).
    available: BTreeMap<AvailKey, Cand>,
    /// Members Available and not held back (the live part of `available`).
    idle: u32,
    members: Vec<u32>,
    next_order: u32,
    rr_cursor: u32,
    staffed: u32,
    /// Distinct member delays (with counts): the moments a waiting contact becomes routable to
    /// more agents, so a timer can re-route it then.
    delay_points: BTreeMap<u64, u32>,
    aht: Ewma,
}

impl Queue {
    /// An empty queue (also what a removed queue's slot is reset to).
    fn new(cfg: QueueConfig, ewma_div: u32) -> Queue {
        let aht = Ewma::new(cfg.initial_aht_ms as f64, ewma_div);
        Queue {
            cfg,
            waiting: BTreeMap::new(),
            available: BTreeMap::new(),
            idle: 0,
            members: Vec::new(),
            next_order: 0,
            rr_cursor: u32::MAX,
            staffed: 0,
            delay_points: BTreeMap::new(),
            aht,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Offer {
    agents: Vec<u32>,
    started_ms: u64,
    deadline_ms: u64,
    step_at: Option<u64>,
    callback: bool,
    /// Made under ring-all or ring-progressively: may hold several legs. Recorded per offer
    /// because `update_queue` may change the strategy while it rings.
    multi: bool,
}

#[derive(Debug, Clone)]
pub(crate) enum CState {
    Waiting,
    Offered(Offer),
    Connected {
        agent: u32,
        since_ms: u64,
    },
    /// Hung up, kept for the resume grace.
    Departed {
        left_ms: u64,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Callback {
    number: String,
    attempts: u32,
}

#[derive(Debug)]
pub(crate) struct Contact {
    id: ContactId,
    tenant: TenantId,
    queue: u32,
    key: WaitKey,
    entered_ms: u64,
    skills: Arc<[(SkillId, u8)]>,
    data: Arc<[(String, String)]>,
    caller_key: Option<String>,
    state: CState,
    callback: Option<Callback>,
    max_wait_at: Option<u64>,
    announce_at: Option<u64>,
    reroute_at: Option<u64>,
    grace_at: Option<u64>,
    retry_at: Option<u64>,
    /// Overflow hops so far (bounded, so misconfigured overflow cycles end).
    hops: u8,
}

impl Contact {
    fn waiter(&self) -> Waiter {
        Waiter {
            id: self.id,
            entered_ms: self.entered_ms,
            held: self.retry_at.is_some(),
            skills: self.skills.clone(),
        }
    }
}

/// Overflow chains longer than this end the contact instead of moving it again.
const MAX_HOPS: u8 = 8;

/// The automatic call distributor. See the crate docs for how a shell drives it.
#[derive(Debug)]
pub struct Acd {
    max_skills: u16,
    max_contacts: usize,
    resume_grace_ms: u64,
    callback_max_attempts: u32,
    callback_retry_ms: u64,
    callback_dial_timeout_ms: u64,
    ewma_div: u32,
    agents: Vec<Agent>,
    agent_ix: IdMap<AgentId, u32>,
    queues: Vec<Queue>,
    queue_ix: IdMap<QueueId, u32>,
    /// Slots of removed agents and queues, reused by `add_agent`/`add_queue` (see `reconfig.rs`).
    free_agents: Vec<u32>,
    free_queues: Vec<u32>,
    contacts: IdMap<ContactId, Contact>,
    /// (queue, caller key) → contact in resume grace.
    departed: std::collections::HashMap<(u32, String), ContactId>,
    seq: u64,
    timers: BinaryHeap<std::cmp::Reverse<(u64, Timer)>>,
    out: VecDeque<Output>,
    rng: SplitMix64,
    last_now_ms: u64,
    /// Work found while handling one input, done before it returns (no recursion).
    work_agents: Vec<u32>,
    work_contacts: Vec<ContactId>,
    work_empty: Vec<u32>,
    scratch: Vec<u32>,
    stale: Vec<(AvailKey, u32)>,
}

impl Acd {
    /// Builds the engine with its queues and agents (all agents start logged out).
    pub fn new(config: AcdConfig) -> Result<Acd, AcdError> {
        if config.max_skills == 0 || config.ewma_div == 0 || config.callback_max_attempts == 0 {
            return Err(AcdError::InvalidConfig(
                "max_skills, ewma_div and callback_max_attempts must be positive",
            ));
        }
        let mut acd = Acd {
            max_skills: config.max_skills,
            max_contacts: config.max_contacts,
            resume_grace_ms: config.resume_grace_ms,
            callback_max_attempts: config.callback_max_attempts,
            callback_retry_ms: config.callback_retry_ms,
            callback_dial_timeout_ms: config.callback_dial_timeout_ms.max(1),
            ewma_div: config.ewma_div,
            agents: Vec::new(),
            agent_ix: IdMap::default(),
            queues: Vec::new(),
            queue_ix: IdMap::default(),
            free_agents: Vec::new(),
            free_queues: Vec::new(),
            contacts: IdMap::default(),
            departed: Default::default(),
            seq: 0,
            timers: BinaryHeap::new(),
            out: VecDeque::new(),
            rng: SplitMix64::new(config.seed),
            last_now_ms: 0,
            work_agents: Vec::new(),
            work_contacts: Vec::new(),
            work_empty: Vec::new(),
            scratch: Vec::new(),
            stale: Vec::new(),
        };
        for q in config.queues {
            acd.add_queue(q)?;
        }
        for a in config.agents {
            acd.add_agent(a)?;
        }
        Ok(acd)
    }

    /// Adds a queue (live CRUD from the control plane).
    pub fn add_queue(&mut self, cfg: QueueConfig) -> Result<(), AcdError> {
        cfg.validate()?;
        if self.queue_ix.contains_key(&cfg.id) {
            return Err(AcdError::DuplicateQueue(cfg.id));
        }
        let id = cfg.id;
        let queue = Queue::new(cfg, self.ewma_div);
        let ix = match self.free_queues.pop() {
            Some(ix) => {
                self.queues[ix as usize] = queue;
                ix
            }
            None => {
                self.queues.push(queue);
                self.queues.len() as u32 - 1
            }
        };
        self.queue_ix.insert(id, ix);
        Ok(())
    }

    /// Adds an agent, logged out.
    pub fn add_agent(&mut self, cfg: AgentConfig) -> Result<(), AcdError> {
        if self.agent_ix.contains_key(&cfg.id) {
            return Err(AcdError::DuplicateAgent(cfg.id));
        }
        let prof = self.proficiencies(&cfg.skills)?;
        let qixs = self.membership_queues(&cfg, None)?;
        let mut agent = Agent::new(cfg.id, cfg.tenant, prof);
        agent.since_ms = self.last_now_ms;
        let ix = match self.free_agents.pop() {
            Some(ix) => {
                self.agents[ix as usize] = agent;
                ix
            }
            None => {
                self.agents.push(agent);
                self.agents.len() as u32 - 1
            }
        };
        let mut members = Vec::with_capacity(cfg.memberships.len());
        let mut touched = Vec::new();
        for (m, qi) in cfg.memberships.iter().zip(qixs) {
            members.push(self.join_member(ix, m, qi, &mut touched));
        }
        self.agents[ix as usize].members = members;
        self.agent_ix.insert(cfg.id, ix);
        // A new member delay is a new moment at which waiting contacts become routable.
        let now = self.last_now_ms;
        for qi in touched {
            self.rearm_waiting(now, qi);
        }
        Ok(())
    }

    /// Feeds one input at `now_ms` (monotonic). On error nothing changed.
    pub fn handle(&mut self, now_ms: u64, input: Input) -> Result<(), AcdError> {
        self.check_time(now_ms)?;
        let r = match input {
            Input::Enter(req) => self.enter(now_ms, req),
            Input::Hangup { contact, by } => self.hangup(now_ms, contact, by),
            Input::LeaveKey { contact } => self.leave_key(now_ms, contact),
            Input::RequestCallback { contact, number } => {
                self.request_callback(now_ms, contact, number)
            }
            Input::CallbackResult { contact, answered } => {
                self.callback_result(now_ms, contact, answered)
            }
            Input::Transfer { contact, queue } => self.transfer(now_ms, contact, queue),
            Input::Login { agent } => self.login(now_ms, agent),
            Input::Logout { agent } => self.force(now_ms, agent, ForcedState::LoggedOut, false),
            Input::Pause { agent, reason } => {
                self.force(now_ms, agent, ForcedState::Break(reason), false)
            }
            Input::Ready { agent } => self.ready(now_ms, agent),
            Input::ExtendWrapUp { agent, extra_ms } => self.extend_wrap(agent, extra_ms),
            Input::Ringing { agent, contact } => self.ringing(now_ms, agent, contact),
            Input::Answer { agent, contact } => self.answer(now_ms, agent, contact),
            Input::Reject { agent, contact } => self.reject(now_ms, agent, contact),
            Input::Move { contact, queue } => self.move_contact(now_ms, contact, queue),
            Input::SetPriority { contact, priority } => self.set_priority(contact, priority),
            Input::ForceState { agent, state } => self.force(now_ms, agent, state, true),
        };
        self.do_work(now_ms);
        r
    }

    /// The next output for the shell; call until `None` after every `handle`/`handle_timeout`.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When `handle_timeout` is next due (monotonic ms), if anything is pending.
    pub fn poll_timeout(&mut self) -> Option<u64> {
        while let Some(&std::cmp::Reverse((at, t))) = self.timers.peek() {
            if self.timer_live(at, t) {
                return Some(at);
            }
            self.timers.pop();
        }
        None
    }

    /// Fires every deadline at or before `now_ms`.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        if self.check_time(now_ms).is_err() {
            // A clock that stepped back fires nothing; the next call with a sane time will.
            return;
        }
        while let Some(&std::cmp::Reverse((at, t))) = self.timers.peek() {
            if at > now_ms {
                break;
            }
            self.timers.pop();
            if self.timer_live(at, t) {
                self.fire(now_ms, t);
            }
            self.do_work(now_ms);
        }
    }

    fn check_time(&mut self, now_ms: u64) -> Result<(), AcdError> {
        if now_ms < self.last_now_ms {
            return Err(AcdError::TimeWentBackwards {
                now_ms,
                last_ms: self.last_now_ms,
            });
        }
        self.last_now_ms = now_ms;
        Ok(())
    }

    fn queue_index(&self, q: QueueId) -> Result<u32, AcdError> {
        self.queue_ix
            .get(&q)
            .copied()
            .ok_or(AcdError::UnknownQueue(q))
    }

    fn agent_index(&self, a: AgentId) -> Result<u32, AcdError> {
        self.agent_ix
            .get(&a)
            .copied()
            .ok_or(AcdError::UnknownAgent(a))
    }

    fn contact(&self, c: ContactId) -> Result<&Contact, AcdError> {
        self.contacts.get(&c).ok_or(AcdError::UnknownContact(c))
    }

    /// Routing and empty-queue exits found while handling one input, done to a fixed point.
    fn do_work(&mut self, now_ms: u64) {
        loop {
            if let Some(q) = self.work_empty.pop() {
                self.empty_queue_exit(now_ms, q);
            } else if let Some(c) = self.work_contacts.pop() {
                self.route_contact(now_ms, c);
            } else if let Some(a) = self.work_agents.pop() {
                self.route_agent(now_ms, a);
            } else {
                return;
            }
        }
    }
}
