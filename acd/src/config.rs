//! Queue, agent and engine configuration, with the defaults the brief and the big vendors use.

use crate::error::AcdError;
use crate::ids::{AgentId, QueueId, SkillId, TenantId};

/// How a queue picks among the agents that may take a contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Offer to every eligible agent of the best tier at once; the first answer wins.
    RingAll,
    /// The agent that has been Available the longest.
    LongestIdle,
    /// The agent whose last call ended the longest ago.
    LeastRecent,
    /// The agent with the fewest answered calls.
    FewestCalls,
    /// The agent with the least accumulated talk time.
    LeastTalkTime,
    /// Next agent after the one picked last time, in membership order (the queue remembers).
    RoundRobin,
    /// Always the first eligible agent in membership order.
    TopDown,
    /// Uniformly random among eligible agents of the best tier.
    Random,
    /// Random, weighted by the membership's `weight`.
    WeightedRandom,
    /// Ring one agent (membership order), add another every `step_ms` until one answers.
    RingProgressively { step_ms: u64 },
    /// Highest summed proficiency in the contact's required skills; ties to the longest idle.
    BestProficiency,
}

/// Relaxation: once a contact has waited `after_ms`, widen who may take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelaxRule {
    pub after_ms: u64,
    /// Accept agents of this tier or better (lower).
    pub max_tier: Option<u8>,
    /// Accept this proficiency even where the contact asked for more.
    pub min_proficiency: Option<u8>,
}

/// Where a contact goes when it leaves a queue by max-wait, a full queue or an empty queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverflowTarget {
    /// Another queue of the same tenant; the ACD moves the contact itself.
    Queue(QueueId),
    /// Opaque to the ACD (`voicemail:x`, `hook:x`); the shell acts on `Output::Overflow`.
    External(String),
}

/// What a queue does when no member is staffed (logged in and not on break).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmptyBehaviour {
    /// Keep callers waiting.
    Wait,
    /// Refuse new callers and send waiting ones to the overflow target (exit "empty").
    Leave,
}

/// One queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    pub id: QueueId,
    pub tenant: TenantId,
    /// Weight of this queue's waiting time when an agent serves several queues (≥ 1).
    pub priority: u32,
    /// Service-level threshold T, seconds (default 20).
    pub service_level_s: u32,
    pub max_len: Option<u32>,
    pub max_wait_ms: Option<u64>,
    pub overflow: Option<OverflowTarget>,
    pub empty: EmptyBehaviour,
    /// Position/EWT announcements every this often; 0 = none.
    pub announce_period_ms: u64,
    pub strategy: Strategy,
    /// Tiers accepted before any relaxation (lower is better; 255 = all).
    pub base_max_tier: u8,
    /// Relaxation steps, in any order.
    pub relax: Vec<RelaxRule>,
    pub ring_timeout_ms: u64,
    pub wrapup_ms: u64,
    /// After an agent rejects (busy/decline), it gets no offer for this long.
    pub reject_delay_ms: u64,
    /// After an agent lets an offer ring out, it gets no offer for this long.
    pub no_answer_delay_ms: u64,
    /// Consecutive ring-outs before the agent is paused; 0 = never.
    pub max_no_answer: u32,
    /// Contacts are not routed before they have waited this long.
    pub routing_delay_ms: u64,
    /// Handle time assumed for the wait estimate before any call has been measured.
    pub initial_aht_ms: u64,
}

impl QueueConfig {
    pub fn new(id: QueueId, tenant: TenantId) -> Self {
        QueueConfig {
            id,
            tenant,
            priority: 1,
            service_level_s: 20,
            max_len: None,
            max_wait_ms: None,
            overflow: None,
            empty: EmptyBehaviour::Wait,
            announce_period_ms: 0,
            strategy: Strategy::LongestIdle,
            base_max_tier: u8::MAX,
            relax: Vec::new(),
            ring_timeout_ms: 20_000,
            wrapup_ms: 0,
            reject_delay_ms: 5_000,
            no_answer_delay_ms: 5_000,
            max_no_answer: 3,
            routing_delay_ms: 0,
            initial_aht_ms: 180_000,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), AcdError> {
        if self.priority == 0 {
            return Err(AcdError::InvalidConfig("queue priority must be at least 1"));
        }
        if self.ring_timeout_ms == 0 {
            return Err(AcdError::InvalidConfig("ring timeout must be positive"));
        }
        if let Strategy::RingProgressively { step_ms: 0 } = self.strategy {
            return Err(AcdError::InvalidConfig(
                "ring-progressively step must be positive",
            ));
        }
        if self.overflow == Some(OverflowTarget::Queue(self.id)) {
            return Err(AcdError::InvalidConfig("a queue cannot overflow to itself"));
        }
        Ok(())
    }
}

/// An agent's place in a queue (routing-profile style).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    pub queue: QueueId,
    /// Tier / penalty: lower is preferred; relaxation rules admit higher tiers over time.
    pub tier: u8,
    /// This agent takes contacts of this queue only after they waited this long.
    pub delay_ms: u64,
    /// Weight for `WeightedRandom` (≥ 1).
    pub weight: u32,
}

impl Membership {
    pub fn new(queue: QueueId) -> Self {
        Membership {
            queue,
            tier: 0,
            delay_ms: 0,
            weight: 1,
        }
    }
}

/// One agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    pub id: AgentId,
    pub tenant: TenantId,
    /// (skill, proficiency 1–5).
    pub skills: Vec<(SkillId, u8)>,
    pub memberships: Vec<Membership>,
}

/// The engine.
#[derive(Debug, Clone, PartialEq)]
pub struct AcdConfig {
    /// Seed of the random strategies.
    pub seed: u64,
    /// Skill ids are below this (the proficiency table is dense).
    pub max_skills: u16,
    /// Contacts held at once (waiting, ringing, talking, or in resume grace); more are refused.
    pub max_contacts: usize,
    /// A caller who hangs up and calls back within this long gets their old place; 0 = off.
    pub resume_grace_ms: u64,
    /// Callback attempts before giving up.
    pub callback_max_attempts: u32,
    /// Wait between failed callback attempts.
    pub callback_retry_ms: u64,
    /// How long the shell may take to reach the customer for a callback.
    pub callback_dial_timeout_ms: u64,
    /// Weight of the newest handle time in the per-queue average (1/ewma_div).
    pub ewma_div: u32,
    pub queues: Vec<QueueConfig>,
    pub agents: Vec<AgentConfig>,
}

impl Default for AcdConfig {
    fn default() -> Self {
        AcdConfig {
            seed: 1,
            max_skills: 128,
            max_contacts: 1_000_000,
            resume_grace_ms: 0,
            callback_max_attempts: 3,
            callback_retry_ms: 60_000,
            callback_dial_timeout_ms: 45_000,
            ewma_div: 32,
            queues: Vec::new(),
            agents: Vec::new(),
        }
    }
}
