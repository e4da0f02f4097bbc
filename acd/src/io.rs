//! What the shell feeds in (`Input`) and what it must act on (`Output`), plus the queue event
//! log that statistics and durable storage consume.

use std::sync::Arc;

use crate::ids::{AgentId, ContactId, QueueId, ReasonCode, SkillId, TenantId};
use crate::state::AgentState;

/// Who ended a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    Caller,
    Agent,
}

/// A new caller for a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactRequest {
    /// Chosen by the shell (unique while the contact lives).
    pub id: ContactId,
    pub queue: QueueId,
    /// Higher goes first within a queue.
    pub priority: i32,
    /// (skill, minimum proficiency 1–5).
    pub skills: Vec<(SkillId, u8)>,
    /// Opaque data for the screen-pop (IVR inputs, CRM fields).
    pub data: Vec<(String, String)>,
    /// Caller identity (e.g. the calling number) for abandoned-resume; `None` disables it.
    pub caller_key: Option<String>,
}

/// A state a supervisor can force an agent into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForcedState {
    LoggedOut,
    Available,
    Break(ReasonCode),
}

/// Everything that can happen to the ACD, besides time passing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A caller joins a queue (or re-joins within the resume grace).
    Enter(ContactRequest),
    /// The caller hung up (before an answer: abandon; during the call: complete by caller), or
    /// the agent hung up (`by: Agent`, only during the call).
    Hangup {
        contact: ContactId,
        by: Party,
    },
    /// The caller pressed the leave key; the shell routes the call elsewhere.
    LeaveKey {
        contact: ContactId,
    },
    /// The caller asked to be called back; they keep their place and hang up.
    RequestCallback {
        contact: ContactId,
        number: String,
    },
    /// Outcome of a `PlaceCallback`: the customer answered, or the attempt failed.
    CallbackResult {
        contact: ContactId,
        answered: bool,
    },
    /// A connected contact is transferred by its agent to another queue.
    Transfer {
        contact: ContactId,
        queue: QueueId,
    },
    Login {
        agent: AgentId,
    },
    Logout {
        agent: AgentId,
    },
    Pause {
        agent: AgentId,
        reason: ReasonCode,
    },
    /// Unpause, or end wrap-up early.
    Ready {
        agent: AgentId,
    },
    ExtendWrapUp {
        agent: AgentId,
        extra_ms: u64,
    },
    /// The agent's device is alerting (optional; Answer may follow Reserved directly).
    Ringing {
        agent: AgentId,
        contact: ContactId,
    },
    Answer {
        agent: AgentId,
        contact: ContactId,
    },
    /// The agent's device refused (busy, decline).
    Reject {
        agent: AgentId,
        contact: ContactId,
    },
    /// Supervisor: move a waiting contact to another queue.
    Move {
        contact: ContactId,
        queue: QueueId,
    },
    /// Supervisor: change a waiting contact's priority.
    SetPriority {
        contact: ContactId,
        priority: i32,
    },
    /// Supervisor: force an agent's state (not while on a call).
    ForceState {
        agent: AgentId,
        state: ForcedState,
    },
}

/// Things the shell acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Ring these agents for this contact (one agent, or several for ring-all; ring-progressively
    /// sends one Offer per added agent). The first `Answer` wins.
    Offer {
        contact: ContactId,
        queue: QueueId,
        agents: Vec<AgentId>,
        ring_timeout_ms: u64,
        data: Arc<[(String, String)]>,
    },
    /// Stop ringing this agent for this contact.
    CancelOffer {
        contact: ContactId,
        agent: AgentId,
    },
    /// Bridge the caller and the agent.
    Connect {
        contact: ContactId,
        agent: AgentId,
    },
    /// Tell the waiting caller their position and estimated wait.
    Announce {
        contact: ContactId,
        position: u32,
        ewt_ms: u64,
    },
    /// Send the caller to an external target (voicemail, hook); the contact has left the ACD.
    Overflow {
        contact: ContactId,
        target: String,
    },
    /// Dial the customer back; `agent` is reserved for it. Answer with `CallbackResult`.
    PlaceCallback {
        contact: ContactId,
        agent: AgentId,
        number: String,
        attempt: u32,
    },
    AgentStateChanged {
        agent: AgentId,
        tenant: TenantId,
        from: AgentState,
        to: AgentState,
        at_ms: u64,
    },
    Event(QueueEvent),
}

/// One line of the queue event log (Asterisk queue_log style), timestamped and fully keyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEvent {
    pub at_ms: u64,
    pub tenant: TenantId,
    pub queue: Option<QueueId>,
    pub contact: Option<ContactId>,
    pub agent: Option<AgentId>,
    pub kind: EventKind,
}

/// The standard queue events. `wait_ms` is time in this queue (from its Enter) to the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Enter {
        position: u32,
        ewt_ms: u64,
        resumed_from: Option<ContactId>,
    },
    Connect {
        wait_ms: u64,
        ring_ms: u64,
        callback: bool,
    },
    CompleteCaller {
        wait_ms: u64,
        talk_ms: u64,
    },
    CompleteAgent {
        wait_ms: u64,
        talk_ms: u64,
    },
    /// The caller hung up before an answer (reported after the resume grace, if any).
    Abandon {
        wait_ms: u64,
    },
    /// Superseded: the same caller re-entered within the grace and took this place.
    Resumed {
        into: ContactId,
    },
    /// Max wait reached; `to` is the overflow queue when the contact went on within the ACD.
    ExitTimeout {
        wait_ms: u64,
        to: Option<QueueId>,
    },
    ExitKey {
        wait_ms: u64,
    },
    /// The queue had nobody staffed.
    ExitEmpty {
        wait_ms: u64,
        to: Option<QueueId>,
    },
    /// Refused at entry: the queue was at max length.
    ExitFull {
        to: Option<QueueId>,
    },
    RingNoAnswer {
        ring_ms: u64,
    },
    Reject,
    /// Transfer during the call, or a supervisor move while waiting.
    Transfer {
        to: QueueId,
        wait_ms: u64,
        talk_ms: u64,
    },
    CallbackRequested {
        wait_ms: u64,
    },
    CallbackPlaced {
        attempt: u32,
    },
    /// A callback attempt failed; `last` when no attempt is left (the contact ends).
    CallbackFailed {
        attempt: u32,
        last: bool,
    },
    AgentLogin,
    AgentLogout,
    Pause {
        reason: ReasonCode,
    },
    Unpause,
}

impl EventKind {
    /// True for the event that ends a contact's life in the ACD (exactly one per contact).
    pub fn ends_contact(&self) -> bool {
        match self {
            EventKind::CompleteCaller { .. }
            | EventKind::CompleteAgent { .. }
            | EventKind::Abandon { .. }
            | EventKind::Resumed { .. }
            | EventKind::ExitKey { .. } => true,
            EventKind::ExitTimeout { to, .. }
            | EventKind::ExitEmpty { to, .. }
            | EventKind::ExitFull { to } => to.is_none(),
            EventKind::CallbackFailed { last, .. } => *last,
            _ => false,
        }
    }
}
