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
    #[error("agent {0} belongs to another tenant")]
    AgentTenantMismatch(AgentId),
    /// `remove_queue` while a contact is waiting, being offered, connected or queued for a
    /// callback in the queue.
    #[error("queue {0} still has contacts")]
    QueueBusy(QueueId),
    /// `remove_queue` while another queue overflows to it.
    #[error("queue {queue} is the overflow target of queue {by}")]
    QueueReferenced { queue: QueueId, by: QueueId },
    /// `remove_agent` while the agent is logged in.
    #[error("agent {0} is logged in")]
    AgentBusy(AgentId),
    #[error("contact table full ({0} contacts)")]
    TooManyContacts(usize),
    #[error("time went backwards: {now_ms} < {last_ms}")]
    TimeWentBackwards { now_ms: u64, last_ms: u64 },
    #[error("{0} is still in use")]
    InUse(&'static str),
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
}
