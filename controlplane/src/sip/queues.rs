//! Contact-centre queues and agents as the SIP engine sees them, and the requests the control
//! API makes of the engine's ACD.
//!
//! The definitions are plain named data (tenant, queue and agent names; skills by name): they
//! come from `[[sip.queues]]` / `[[sip.agents]]` in the config file (seeded into storage on the
//! first start) and from the API's CRUD, and reach the engine inside [`super::config::SipDirectory`]
//! like accounts and routes do. The engine maps names to `tandem-acd`'s numeric ids and keeps its
//! one `Acd` in step with the latest directory (queues and agents added, changed, or removed once
//! idle). Agents' state changes and supervisor actions are [`AcdRequest`]s answered through a
//! oneshot; what the ACD reports goes out as [`AcdEvent`]s (the durable queue log, the WebSocket
//! stream and the screen-pop).

use serde::{Deserialize, Serialize};

/// A queue of one tenant. Callers reach it through a route whose target is `queue:<name>`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueueDef {
    pub tenant: String,
    pub name: String,
    /// `ring-all`, `longest-idle`, `least-recent`, `fewest-calls`, `least-talk-time`,
    /// `round-robin`, `top-down`, `random`, `weighted-random`, `ring-progressively`,
    /// `best-proficiency`.
    #[serde(default = "default_strategy")]
    pub strategy: String,
    /// Ring-progressively: seconds between widening the ring by one agent.
    #[serde(default = "default_ring_step_s")]
    pub ring_step_s: u32,
    /// Weight against the agent's other queues (1 = lowest).
    #[serde(default = "one")]
    pub priority: u32,
    /// Service-level threshold in seconds (SL = answered within it).
    #[serde(default = "default_service_level_s")]
    pub service_level_s: u32,
    /// Callers waiting at most; beyond it the caller overflows (or is refused with 486).
    #[serde(default)]
    pub max_len: Option<u32>,
    /// Seconds a caller waits at most before overflowing.
    #[serde(default)]
    pub max_wait_s: Option<u32>,
    /// Where callers go on max-wait, a full queue or an empty one: `queue:<name>` (keeps the
    /// caller in the ACD) or any other route target (`user:`, `uri:`, `trunk:`, e.g. voicemail).
    #[serde(default)]
    pub overflow: Option<String>,
    /// Callers leave (overflow) when no agent is logged in, instead of waiting.
    #[serde(default)]
    pub leave_when_empty: bool,
    /// Waiting callers hear the hold music (early media in the 180); off: their own ringback.
    #[serde(default = "yes")]
    pub music: bool,
    /// Seconds between announcements to a waiting caller of its position and estimated wait,
    /// spoken over the hold music (the first after this long in the queue); 0 = none. Needs
    /// `music` and the `espeak-ng` synthesiser at start. Off by default: an operator turns
    /// them on per queue (30–60 s is usual).
    #[serde(default)]
    pub announce_period_s: u32,
    /// Announcements say the caller's position ("You are caller number three").
    #[serde(default = "yes")]
    pub announce_position: bool,
    /// Announcements say the estimated wait ("about five minutes"); never while no agent is
    /// logged in (there is no estimate).
    #[serde(default = "yes")]
    pub announce_wait: bool,
    /// A caller entering the queue first hears a spoken greeting ("Thank you for calling.
    /// Please hold."), then joins the queue: agents are offered the call once it has played.
    /// Needs `music` and the `espeak-ng` synthesiser at start (without them it is skipped).
    #[serde(default)]
    pub greeting: bool,
    /// A key (`0`-`9`, `*`, `#`) that takes a waiting caller out of the queue: to the overflow
    /// target when it is not a queue (voicemail, say), else the call ends.
    #[serde(default)]
    pub leave_key: Option<String>,
    /// A key (`0`-`9`, `*`, `#`) with which a waiting caller asks to be called back: they keep
    /// their place, the call ends, and the customer is dialled when an agent is reserved.
    #[serde(default)]
    pub callback_key: Option<String>,
    /// Skills a caller of this queue needs, each with the least proficiency (1–5) accepted.
    #[serde(default)]
    pub skills: Vec<SkillLevel>,
    /// Time-based relaxation of the tier and proficiency requirements.
    #[serde(default)]
    pub relax: Vec<RelaxDef>,
    /// Agents of tier above this are not offered callers until a relax rule allows them.
    #[serde(default)]
    pub max_tier: Option<u8>,
    #[serde(default = "default_ring_timeout_s")]
    pub ring_timeout_s: u32,
    #[serde(default)]
    pub wrapup_s: u32,
    /// Seconds an agent is skipped after rejecting (busy) an offer.
    #[serde(default = "default_penalty_s")]
    pub reject_delay_s: u32,
    /// Seconds an agent is skipped after letting an offer ring out.
    #[serde(default = "default_penalty_s")]
    pub no_answer_delay_s: u32,
    /// Ring-outs in a row after which the agent is put on break (`no-answer`).
    #[serde(default = "default_max_no_answer")]
    pub max_no_answer: u32,
    /// Seconds a caller waits before this queue's callers are offered to agents of other
    /// queues' fairness (routing-profile delay).
    #[serde(default)]
    pub routing_delay_s: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SkillLevel {
    pub skill: String,
    /// 1–5.
    pub level: u8,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RelaxDef {
    /// Seconds the caller has waited.
    pub after_s: u32,
    /// From then on agents up to this tier are offered the caller.
    #[serde(default)]
    pub max_tier: Option<u8>,
    /// From then on this proficiency suffices for each of the queue's skills.
    #[serde(default)]
    pub min_level: Option<u8>,
}

/// An agent of one tenant: a person who logs in through the API and takes calls on the devices
/// registered for a SIP account.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentDef {
    pub tenant: String,
    pub name: String,
    /// The tenant's SIP account whose registered contacts ring for this agent.
    pub user: String,
    #[serde(default)]
    pub skills: Vec<SkillLevel>,
    #[serde(default)]
    pub queues: Vec<MembershipDef>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MembershipDef {
    pub queue: String,
    /// Tier (penalty): 0 is offered first.
    #[serde(default)]
    pub tier: u8,
    /// Seconds a caller of this queue must have waited before this agent is offered it.
    #[serde(default)]
    pub delay_s: u32,
    /// Share for weighted-random.
    #[serde(default = "one")]
    pub weight: u32,
}

fn default_strategy() -> String {
    "longest-idle".into()
}
fn default_ring_step_s() -> u32 {
    5
}
fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}
fn default_service_level_s() -> u32 {
    20
}
fn default_ring_timeout_s() -> u32 {
    20
}
fn default_penalty_s() -> u32 {
    5
}
fn default_max_no_answer() -> u32 {
    3
}

/// The shortest period between announcements: longer than the longest announcement (about
/// 7 s), so that the caller hears some music between two.
pub const MIN_ANNOUNCE_PERIOD_S: u32 = 10;

pub const STRATEGIES: [&str; 11] = [
    "ring-all",
    "longest-idle",
    "least-recent",
    "fewest-calls",
    "least-talk-time",
    "round-robin",
    "top-down",
    "random",
    "weighted-random",
    "ring-progressively",
    "best-proficiency",
];

/// One DTMF key: `0`-`9`, `*` or `#`.
pub fn is_key(key: &str) -> bool {
    key.len() == 1
        && key
            .chars()
            .all(|c| c.is_ascii_digit() || c == '*' || c == '#')
}

impl QueueDef {
    /// A queue with every setting at its default.
    pub fn new(tenant: &str, name: &str) -> QueueDef {
        QueueDef {
            tenant: tenant.into(),
            name: name.into(),
            strategy: default_strategy(),
            ring_step_s: default_ring_step_s(),
            priority: 1,
            service_level_s: default_service_level_s(),
            max_len: None,
            max_wait_s: None,
            overflow: None,
            leave_when_empty: false,
            music: true,
            announce_period_s: 0,
            announce_position: true,
            announce_wait: true,
            greeting: false,
            leave_key: None,
            callback_key: None,
            skills: Vec::new(),
            relax: Vec::new(),
            max_tier: None,
            ring_timeout_s: default_ring_timeout_s(),
            wrapup_s: 0,
            reject_delay_s: default_penalty_s(),
            no_answer_delay_s: default_penalty_s(),
            max_no_answer: default_max_no_answer(),
            routing_delay_s: 0,
        }
    }

    /// Checks what can be checked without the rest of the directory.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |what: &str| Err(format!("queue {}: {what}", self.name));
        if self.name.is_empty() || self.name.contains([':', '/', ' ']) {
            return bad("name must be non-empty without ':', '/' or spaces");
        }
        if !STRATEGIES.contains(&self.strategy.as_str()) {
            return bad(&format!(
                "unknown strategy {:?} (one of {})",
                self.strategy,
                STRATEGIES.join(", ")
            ));
        }
        if self.priority == 0 {
            return bad("priority must be at least 1");
        }
        for (field, key) in [
            ("leave_key", &self.leave_key),
            ("callback_key", &self.callback_key),
        ] {
            if key.as_ref().is_some_and(|k| !is_key(k)) {
                return bad(&format!("{field} is one of 0-9, * and #"));
            }
        }
        if self.leave_key.is_some() && self.leave_key == self.callback_key {
            return bad("leave_key and callback_key must differ");
        }
        if self.announce_period_s != 0
            && !(MIN_ANNOUNCE_PERIOD_S..=3600).contains(&self.announce_period_s)
        {
            return bad(&format!(
                "announce_period_s is 0 (off) or {MIN_ANNOUNCE_PERIOD_S}-3600"
            ));
        }
        if self.ring_timeout_s == 0 || self.ring_step_s == 0 {
            return bad("ring_timeout_s and ring_step_s must be positive");
        }
        for s in &self.skills {
            if !(1..=5).contains(&s.level) {
                return bad("skill levels are 1-5");
            }
        }
        for r in &self.relax {
            if r.min_level.is_some_and(|l| !(1..=5).contains(&l)) {
                return bad("relax min_level is 1-5");
            }
        }
        if let Some(target) = &self.overflow {
            if target == &format!("queue:{}", self.name) {
                return bad("a queue cannot overflow to itself");
            }
            if !target.starts_with("queue:") && super::config::parse_target(target).is_none() {
                return bad(&format!("overflow {target:?} is not a route target"));
            }
        }
        Ok(())
    }
}

impl AgentDef {
    pub fn validate(&self) -> Result<(), String> {
        let bad = |what: &str| Err(format!("agent {}: {what}", self.name));
        if self.name.is_empty() || self.user.is_empty() {
            return bad("name and user must be non-empty");
        }
        for s in &self.skills {
            if !(1..=5).contains(&s.level) {
                return bad("skill levels are 1-5");
            }
        }
        let mut seen = std::collections::HashSet::new();
        for m in &self.queues {
            if !seen.insert(&m.queue) {
                return bad(&format!("member of queue {} twice", m.queue));
            }
        }
        Ok(())
    }
}

/// What the API asks of the engine's ACD, on behalf of one tenant.
#[derive(Debug)]
pub struct AcdRequest {
    pub tenant: String,
    pub op: AcdOp,
    pub reply: tokio::sync::oneshot::Sender<Result<AcdReply, AcdRefusal>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AcdOp {
    /// The agent's own action (or a supervisor's, through `force`).
    Agent { agent: String, action: AgentAction },
    /// Live status of one queue or all of the tenant's.
    Queues { queue: Option<String> },
    /// Live status of one agent or all of the tenant's.
    Agents { agent: Option<String> },
    /// Supervisor: move a waiting caller to another queue (keeps its original wait).
    MoveCaller { contact: u64, queue: String },
    /// Supervisor: change a waiting caller's priority.
    SetPriority { contact: u64, priority: i32 },
    /// Supervisor monitoring of a live call (`sip/monitor.rs`).
    Monitor { call: u64, op: MonitorOp },
    /// The tenant's live calls (`sip/live_calls.rs`), or the one call named.
    Calls { call: Option<u64> },
}

/// What the API asks of a call's supervisor monitor.
#[derive(Debug, Clone, PartialEq)]
pub enum MonitorOp {
    /// Ring `supervisor` (a SIP user of the call's tenant) and, once answered, attach it.
    Start {
        supervisor: String,
        mode: SupervisorMode,
    },
    /// Change the mode, live (or before the supervisor answers).
    SetMode(SupervisorMode),
    /// Hang up the supervisor (CANCEL while ringing, BYE once answered).
    Stop,
}

/// Who hears the supervisor: nobody (listen), the agent (whisper), both parties (barge). The
/// supervisor always hears the caller and the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SupervisorMode {
    Listen,
    Whisper,
    Barge,
}

impl SupervisorMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SupervisorMode::Listen => "listen",
            SupervisorMode::Whisper => "whisper",
            SupervisorMode::Barge => "barge",
        }
    }
}

/// A call's supervisor monitor as the engine has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MonitorView {
    pub call: u64,
    /// The SIP user rung as the supervisor.
    pub supervisor: String,
    pub mode: SupervisorMode,
    /// `ringing` until the supervisor's phone answers, then `active`.
    pub state: String,
}

/// A call in progress as the SIP engine has it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LiveCallView {
    /// The id `call.*` events and the monitor endpoint use; its call record gets it too.
    pub call: u64,
    /// `ringing` (the callee, or a called-back customer, is being rung), `early` (the callee
    /// sent early media), `queued` (waiting in an ACD queue, its agents' phones ringing or
    /// not), `answered`, `ending` (hung up, the record being written).
    pub state: String,
    /// `inbound` (from a trunk), `outbound` (to a trunk) or `internal`.
    pub direction: String,
    /// The callee's SIP URI as routed; empty while the call waits in a queue for an agent.
    pub target: String,
    /// The caller's From URI (a callback: the tenant's own number, as Tandem dials from it).
    pub from: String,
    /// The dialled number.
    pub to: String,
    /// The ACD queue the call is in or came through.
    pub queue: Option<String>,
    /// The agent who took it (a queued call, once an agent's phone answered).
    pub agent: Option<String>,
    pub started_unix_ms: u64,
    pub answered_unix_ms: Option<u64>,
    /// The caller's leg (A) and the callee's or agent's (B).
    pub legs: [LiveLegView; 2],
    /// The data plane converts between the legs' codecs (they differ).
    pub transcoded: bool,
    /// A supervisor monitoring the call.
    pub monitor: Option<MonitorView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LiveLegView {
    /// The codec the leg's phone sends and receives as the SDP names it (`PCMA`, `G729`,
    /// `opus`); null until an answer settled it.
    pub codec: Option<String>,
    /// The RTP received from the leg's peer so far, as the data plane measures it (loss,
    /// jitter, round trip, MOS; see call records); null before any RTP, or when the data plane
    /// did not answer in time.
    #[schema(value_type = Option<Object>)]
    pub quality: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "action", deny_unknown_fields)]
pub enum AgentAction {
    Login,
    Logout,
    Ready,
    Break {
        reason: String,
    },
    /// Lengthen the current wrap-up.
    ExtendWrapUp {
        seconds: u32,
    },
    /// Supervisor override: logged-out, available, or break with a reason; applied even while
    /// the agent is ringing or on a call (the call itself is not touched).
    Force {
        state: String,
        #[serde(default)]
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AcdReply {
    Done,
    Queues(Vec<QueueStatusView>),
    Agents(Vec<AgentStatusView>),
    Monitor(MonitorView),
    Calls(Vec<LiveCallView>),
}

/// Why the ACD refused a request; the API maps `NotFound` to 404, the rest to 409/422.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcdRefusal {
    NotFound(String),
    /// Not allowed from the agent's present state (e.g. ready while logged out).
    Conflict(String),
    Invalid(String),
}

impl std::fmt::Display for AcdRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AcdRefusal::NotFound(s) | AcdRefusal::Conflict(s) | AcdRefusal::Invalid(s) => {
                f.write_str(s)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct QueueStatusView {
    pub name: String,
    /// Callers waiting (not yet connected), callbacks included.
    pub waiting: u32,
    pub callbacks: u32,
    pub longest_wait_s: f64,
    /// Logged in and not on break.
    pub staffed: u32,
    pub available: u32,
    pub on_break: u32,
    pub ringing: u32,
    pub on_call: u32,
    pub wrap_up: u32,
    /// Estimated wait for a caller entering now; null when no agent is staffed.
    pub ewt_s: Option<f64>,
    /// Recent average handle time (talk + wrap-up).
    pub aht_s: f64,
    /// The callers in queue order.
    pub callers: Vec<WaitingCallerView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WaitingCallerView {
    pub contact: u64,
    pub position: u32,
    pub waited_s: f64,
    pub priority: i32,
    /// The caller's From user.
    pub caller: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AgentStatusView {
    pub name: String,
    pub user: String,
    /// `logged-out`, `available`, `break`, `reserved`, `ringing`, `on-call`, `wrap-up`.
    pub state: String,
    /// The break reason, when on break.
    pub reason: Option<String>,
    /// Seconds in the present state.
    pub in_state_s: f64,
    /// The caller offered to or talking with the agent.
    pub contact: Option<u64>,
    pub calls_taken: u64,
    pub missed_in_a_row: u32,
    /// The agent's SIP account has at least one registered device.
    pub registered: bool,
}

/// One thing the ACD reports, named for storage and the event stream. `kind` is one of: the
/// queue log's `enter`, `connect`, `complete_caller`, `complete_agent`, `abandon`, `resumed`,
/// `exit_timeout`, `exit_key`, `exit_empty`, `exit_full`, `ring_no_answer`, `reject`,
/// `transfer`, `callback_requested`, `callback_placed`, `callback_failed`, `agent_login`,
/// `agent_logout`, `pause`, `unpause`; plus `agent_state` (every state change) and `offer` (a
/// caller offered to an agent: the screen-pop, with the caller's data).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AcdEvent {
    pub at_unix_ms: u64,
    pub tenant: String,
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact: Option<u64>,
    /// The SIP call (the id of its call record) of the contact, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call: Option<u64>,
    /// Kind-specific figures: wait_ms, talk_ms, ring_ms, position, ewt_ms, reason, to (queue),
    /// from/to (agent states), caller, data (screen-pop fields).
    pub detail: serde_json::Map<String, serde_json::Value>,
}
