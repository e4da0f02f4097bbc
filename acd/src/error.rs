//! Typed errors: every input the shell can send is validated; none panics.

use crate::ids::{AgentId, ContactId, QueueId};
use crate::state::AgentState;

/// Why an input or configuration change was refused. The state is unchanged when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcdError {
    #[error("unknown queue {0}")]
    UnknownQueue(QueueId),
    #[error("unknown agent {0}")]
    UnknownAgent(AgentId),
    #[error("unknown contact {0}")]
    UnknownContact(ContactId),
    #[error("queue {0} already exists")]
    DuplicateQueue(QueueId),
    #[error("agent {0} already exists")]
    DuplicateAgent(AgentId),
    #[error("contact {0} already exists")]
    DuplicateContact(ContactId),
    #[error("agent {agent} cannot {input} while {from:?}")]
    InvalidTransition {
        agent: AgentId,
        from: AgentState,
        input: &'static str,
    },
    #[error("contact {contact} cannot {input} while {state}")]
    InvalidContactState {
        contact: ContactId,
        state: &'static str,
        input: &'static str,
    },
    #[error("contact {contact} is not offered to agent {agent}")]
    NotOffered { agent: AgentId, contact: ContactId },
    #[error("queue {queue} belongs to another tenant")]
    TenantMismatch { queue: QueueId },
    #[error("contact table full ({0} contacts)")]
    TooManyContacts(usize),
    #[error("time went backwards: {now_ms} < {last_ms}")]
    TimeWentBackwards { now_ms: u64, last_ms: u64 },
    #[error("{0} is still in use")]
    InUse(&'static str),
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
}
