//! Tandem's automatic call distributor (ACD): skills-based queues, agents and their states,
//! callbacks, wait estimates and statistics, as a sans-IO state machine.
//!
//! # Driving it
//!
//! The shell (SIP B2BUA + control API) owns all I/O and the clock:
//!
//! ```text
//! loop {
//!     acd.handle(now_ms, input)?;            // a call arrived, an agent answered, a key...
//!     acd.handle_timeout(now_ms);            // when poll_timeout() is due
//!     while let Some(out) = acd.poll_output() { act(out) }   // ring, cancel, bridge, log
//!     sleep_until(acd.poll_timeout());
//! }
//! ```
//!
//! A contact's life: `Input::Enter` → `QueueEvent(Enter)` → routing picks agent(s) →
//! `Output::Offer` (agents go Reserved) → optional `Input::Ringing` → `Input::Answer` →
//! `Output::Connect` (+ `CancelOffer` for ring-all losers) → `Input::Hangup` → `Complete*` event
//! and the agent's wrap-up. Ring timeout → `CancelOffer`, `RingNoAnswer`, the contact back at
//! its original position. Every contact ends with exactly one event whose
//! [`EventKind::ends_contact`] is true.
//!
//! The control plane changes queues and agents while calls are in progress with
//! `add_queue`/`add_agent`, `update_queue`/`update_agent` and `remove_queue`/`remove_agent`
//! (refused while in use); like `handle`, the changes route to a fixed point and their outputs
//! come from `poll_output`.
//!
//! Nothing here reads a clock or a global random source; `clippy.toml` forbids it.

pub mod config;
mod engine;
pub mod erlang;
pub mod error;
mod ewt;
pub mod ids;
pub mod io;
pub mod rng;
pub mod scenario;
pub mod sim;
pub mod state;
pub mod stats;

pub use config::{
    AcdConfig, AgentConfig, EmptyBehaviour, Membership, OverflowTarget, QueueConfig, RelaxRule,
    Strategy,
};
pub use engine::{Acd, AgentCounts, AgentStatus, QueueStatus, WaitingContact};
pub use error::AcdError;
pub use ewt::estimate_wait_ms;
pub use ids::{AgentId, ContactId, QueueId, ReasonCode, SkillId, TenantId};
pub use io::{ContactRequest, EventKind, ForcedState, Input, Output, Party, QueueEvent};
pub use state::AgentState;
