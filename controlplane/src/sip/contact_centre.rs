//! The B2BUA's contact centre: calls routed to `queue:<name>` wait in the engine's ACD
//! (`tandem-acd`) and are offered to agents' registered devices.
//!
//! A queued call is an ordinary call whose leg B is not chosen yet. On entry the caller gets
//! 180 Ringing (with the hold music as early media when the queue plays it) and the ACD gets
//! `Enter`; the ACD's periodic `Announce` speaks the caller's position and wait over the music.
//! Each `Offer` becomes one INVITE per registered device of each offered agent (all carrying
//! the caller's SDP on leg B's port); a device's 18x is the agent's `Ringing`, its 2xx is ACKed
//! at once and reported as `Answer`, and the ACD's `Connect` makes that device's dialog the
//! call's leg B and answers the caller. `CancelOffer` (ring timeout, ring-all loser)
//! CANCELs the agent's devices; a 2xx that races the CANCEL is ACKed and BYEd. A device that
//! refuses (busy, decline, unreachable) is the agent's `Reject`; an agent with no registered
//! device rejects at once. Max-wait, full and empty queues end the call (480, 486) or send it
//! on to the queue's overflow target like any routed call. The ACD's clock is milliseconds since
//! the engine started, from the same `Now` every other input carries.

use super::super::queues::{
    AcdEvent, AcdOp, AcdRefusal, AcdReply, AgentAction, AgentDef, AgentStatusView, QueueDef,
    QueueStatusView, WaitingCallerView,
};
use super::*;
use crate::prompts::PromptClips;
use std::collections::VecDeque;
use tandem_acd::{
    Acd, AcdConfig, AcdError, AgentConfig, AgentId, AgentState, ContactId, ContactRequest,
    EmptyBehaviour, EventKind, ForcedState, Input, Membership, Output as AcdOutput, OverflowTarget,
    Party, QueueConfig, QueueEvent, QueueId, ReasonCode, RelaxRule, SkillId, Strategy, TenantId,
};

/// Skills across all tenants (each tenant's names map to their own ids).
const MAX_SKILLS: u16 = 1024;

/// A queued call's side of the ACD.
pub(super) struct Queued {
    pub(super) queue: QueueId,
    /// The ACD's contact: the call's own id, except for a callback call, which carries on the
    /// contact of the call that asked for it.
    pub(super) contact: ContactId,
    /// INVITEs to agents' devices, live and finished (a late 2xx must find its offer).
    pub(super) offers: Vec<DeviceOffer>,
    /// The agent who took the call.
    pub(super) agent: Option<AgentId>,
    /// The ACD ended the contact with this final response for the caller, unless an overflow
    /// target takes the call.
    pub(super) exit: Option<u16>,
    pub(super) overflow: Option<String>,
    /// The hold music's payload type while it plays to the caller.
    pub(super) playing: Option<u8>,
    /// A queued callback: Tandem dials the customer on leg A, then rings the reserved agent.
    pub(super) callback: Option<CallbackDial>,
    /// The caller hears the queue's greeting until then, and joins the queue after it.
    pub(super) greeting_until: Option<Instant>,
}

impl Queued {
    pub(super) fn new(queue: QueueId, contact: ContactId) -> Queued {
        Queued {
            queue,
            contact,
            offers: Vec::new(),
            agent: None,
            exit: None,
            overflow: None,
            playing: None,
            callback: None,
            greeting_until: None,
        }
    }
}

/// One attempt of a queued callback (the ACD's `PlaceCallback`).
pub(super) struct CallbackDial {
    /// Our INVITE to the customer, once the data plane gave us a port to offer.
    pub(super) invite: Option<ClientTxId>,
    pub(super) ack: Option<Vec<u8>>,
    /// The customer answered (the ACD connected the agent: its devices ring).
    pub(super) answered: bool,
    /// The ACD knows how this attempt went (answered, failed, or it gave up on it itself).
    pub(super) reported: bool,
    /// While the customer waits for the agent's device to answer: the queue's ring timeout.
    pub(super) agent_ring_until: Option<Instant>,
}

/// What a callback needs of the call that asked for it, kept while the contact lives.
#[derive(Clone)]
pub(super) struct CallbackOrigin {
    pub(super) tenant: String,
    pub(super) queue: QueueId,
    /// The customer's number as the caller presented it (From user or P-Asserted-Identity),
    /// for a route when the normalised form matches none.
    pub(super) raw: String,
    /// The number the customer dialled to reach us: the callback comes from it.
    pub(super) ours: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OfferState {
    Trying,
    Ringing,
    /// 2xx received and ACKed; waiting for the ACD's Connect.
    Answered,
    Connected,
    /// CANCEL sent, or a final failure received.
    Done,
}

pub(super) struct DeviceOffer {
    pub(super) agent: AgentId,
    pub(super) leg: Leg,
    pub(super) invite: ClientTxId,
    pub(super) state: OfferState,
    /// The device's answer (SDP), kept from its 2xx until the ACD connects it.
    pub(super) answer: Option<String>,
    pub(super) ack: Option<Vec<u8>>,
}

pub(super) struct AgentInfo {
    pub(super) tenant: String,
    pub(super) name: String,
    pub(super) user: String,
}

/// Names ↔ the ACD's numeric ids, and the ACD itself.
pub(super) struct ContactCentre {
    acd: Acd,
    epoch: Instant,
    tenants: HashMap<String, TenantId>,
    queues: HashMap<(String, String), QueueId>,
    pub(super) queue_defs: HashMap<QueueId, QueueDef>,
    agents: HashMap<(String, String), AgentId>,
    pub(super) agent_info: HashMap<AgentId, AgentInfo>,
    agent_defs: HashMap<AgentId, AgentDef>,
    skills: HashMap<(String, String), SkillId>,
    reasons: HashMap<String, ReasonCode>,
    reason_names: HashMap<ReasonCode, String>,
    next_id: u64,
    /// Inputs produced while acting on outputs (a device that cannot ring), fed next.
    pub(super) deferred: VecDeque<Input>,
    /// Taken out of the directory but still busy: removed once idle.
    retiring_agents: Vec<AgentId>,
    retiring_queues: Vec<QueueId>,
    /// Calls whose contact the ACD let go without an agent this round (see `acd_pump`).
    exits: Vec<CallId>,
    /// Contacts waiting for a callback, and the call dialling each one now.
    pub(super) callbacks: HashMap<ContactId, CallbackOrigin>,
    pub(super) callback_calls: HashMap<ContactId, CallId>,
    /// The data plane's prompt clips; None: no announcements (no synthesiser at start).
    prompts: Option<PromptClips>,
}

impl ContactCentre {
    pub(super) fn new(now: Instant, cfg: &SipConfig) -> ContactCentre {
        let (queues, agents) = (&cfg.queues, &cfg.agents);
        let acd = Acd::new(AcdConfig {
            max_skills: MAX_SKILLS,
            resume_grace_ms: cfg.queue_resume_grace_s.saturating_mul(1000),
            callback_max_attempts: cfg.queue_callback_attempts.max(1),
            callback_retry_ms: cfg.queue_callback_retry_s.saturating_mul(1000),
            callback_dial_timeout_ms: cfg
                .queue_callback_dial_timeout_s
                .max(1)
                .saturating_mul(1000),
            ..AcdConfig::default()
        })
        .expect("the default ACD configuration is valid");
        let mut cc = ContactCentre {
            acd,
            epoch: now,
            tenants: HashMap::new(),
            queues: HashMap::new(),
            queue_defs: HashMap::new(),
            agents: HashMap::new(),
            agent_info: HashMap::new(),
            agent_defs: HashMap::new(),
            skills: HashMap::new(),
            reasons: HashMap::new(),
            reason_names: HashMap::new(),
            next_id: 0,
            deferred: VecDeque::new(),
            retiring_agents: Vec::new(),
            retiring_queues: Vec::new(),
            exits: Vec::new(),
            callbacks: HashMap::new(),
            callback_calls: HashMap::new(),
            prompts: None,
        };
        cc.reason_names
            .insert(ReasonCode::AUTO_PAUSE_NO_ANSWER, "no-answer".into());
        cc.reason_names
            .insert(ReasonCode::SUPERVISOR, "supervisor".into());
        cc.reasons
            .insert("no-answer".into(), ReasonCode::AUTO_PAUSE_NO_ANSWER);
        cc.reasons
            .insert("supervisor".into(), ReasonCode::SUPERVISOR);
        cc.reconcile(0, queues, agents);
        cc
    }

    pub(super) fn now_ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    pub(super) fn deadline(&mut self) -> Option<Instant> {
        self.acd
            .poll_timeout()
            .map(|ms| self.epoch + Duration::from_millis(ms))
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn tenant_id(&mut self, tenant: &str) -> TenantId {
        if let Some(&id) = self.tenants.get(tenant) {
            return id;
        }
        let id = TenantId(self.id());
        self.tenants.insert(tenant.to_string(), id);
        id
    }

    fn tenant_name(&self, id: TenantId) -> String {
        self.tenants
            .iter()
            .find(|(_, &t)| t == id)
            .map(|(n, _)| n.clone())
            .unwrap_or_default()
    }

    fn skill_id(&mut self, tenant: &str, skill: &str) -> Option<SkillId> {
        let key = (tenant.to_string(), skill.to_string());
        if let Some(&id) = self.skills.get(&key) {
            return Some(id);
        }
        let next = self.skills.len() as u16;
        if next >= MAX_SKILLS {
            return None;
        }
        self.skills.insert(key, SkillId(next));
        Some(SkillId(next))
    }

    fn reason(&mut self, name: &str) -> ReasonCode {
        if let Some(&r) = self.reasons.get(name) {
            return r;
        }
        let r = ReasonCode(self.reasons.len() as u32 + 1);
        self.reasons.insert(name.to_string(), r);
        self.reason_names.insert(r, name.to_string());
        r
    }

    pub(super) fn queue_id(&self, tenant: &str, name: &str) -> Option<QueueId> {
        self.queues
            .get(&(tenant.to_string(), name.to_string()))
            .copied()
    }

    pub(super) fn queue_name(&self, id: QueueId) -> Option<String> {
        self.queue_defs.get(&id).map(|d| d.name.clone())
    }

    fn agent_id(&self, tenant: &str, name: &str) -> Option<AgentId> {
        self.agents
            .get(&(tenant.to_string(), name.to_string()))
            .copied()
    }

    fn queue_config(&mut self, id: QueueId, def: &QueueDef) -> QueueConfig {
        let tenant = self.tenant_id(&def.tenant);
        let mut cfg = QueueConfig::new(id, tenant);
        cfg.strategy = match def.strategy.as_str() {
            "ring-all" => Strategy::RingAll,
            "least-recent" => Strategy::LeastRecent,
            "fewest-calls" => Strategy::FewestCalls,
            "least-talk-time" => Strategy::LeastTalkTime,
            "round-robin" => Strategy::RoundRobin,
            "top-down" => Strategy::TopDown,
            "random" => Strategy::Random,
            "weighted-random" => Strategy::WeightedRandom,
            "ring-progressively" => Strategy::RingProgressively {
                step_ms: u64::from(def.ring_step_s.max(1)) * 1000,
            },
            "best-proficiency" => Strategy::BestProficiency,
            _ => Strategy::LongestIdle,
        };
        cfg.priority = def.priority.max(1);
        cfg.service_level_s = def.service_level_s;
        cfg.max_len = def.max_len;
        cfg.max_wait_ms = def.max_wait_s.map(|s| u64::from(s) * 1000);
        cfg.overflow = def
            .overflow
            .as_ref()
            .map(|o| match o.strip_prefix("queue:") {
                Some(q) => match self.queue_id(&def.tenant, q) {
                    Some(qid) => OverflowTarget::Queue(qid),
                    // A queue that does not exist (yet): callers end instead of looping.
                    None => OverflowTarget::External(String::new()),
                },
                None => OverflowTarget::External(o.clone()),
            });
        cfg.empty = if def.leave_when_empty {
            EmptyBehaviour::Leave
        } else {
            EmptyBehaviour::Wait
        };
        // Announcements are spoken over the music; with neither part there is nothing to say.
        cfg.announce_period_ms = if def.music && (def.announce_position || def.announce_wait) {
            u64::from(def.announce_period_s) * 1000
        } else {
            0
        };
        cfg.base_max_tier = def.max_tier.unwrap_or(u8::MAX);
        cfg.relax = def
            .relax
            .iter()
            .map(|r| RelaxRule {
                after_ms: u64::from(r.after_s) * 1000,
                max_tier: r.max_tier,
                min_proficiency: r.min_level,
            })
            .collect();
        cfg.ring_timeout_ms = u64::from(def.ring_timeout_s.max(1)) * 1000;
        cfg.wrapup_ms = u64::from(def.wrapup_s) * 1000;
        cfg.reject_delay_ms = u64::from(def.reject_delay_s) * 1000;
        cfg.no_answer_delay_ms = u64::from(def.no_answer_delay_s) * 1000;
        cfg.max_no_answer = def.max_no_answer;
        cfg.routing_delay_ms = u64::from(def.routing_delay_s) * 1000;
        cfg
    }

    fn agent_config(&mut self, id: AgentId, def: &AgentDef) -> AgentConfig {
        let tenant = self.tenant_id(&def.tenant);
        let skills = def
            .skills
            .iter()
            .filter_map(|s| Some((self.skill_id(&def.tenant, &s.skill)?, s.level.clamp(1, 5))))
            .collect();
        let memberships = def
            .queues
            .iter()
            .filter_map(|m| {
                let queue = self.queue_id(&def.tenant, &m.queue)?;
                Some(Membership {
                    queue,
                    tier: m.tier,
                    delay_ms: u64::from(m.delay_s) * 1000,
                    weight: m.weight.max(1),
                })
            })
            .collect();
        AgentConfig {
            id,
            tenant,
            skills,
            memberships,
        }
    }

    /// Brings the ACD in line with the directory: queues and agents added, changed in place
    /// (calls in progress keep going) or removed. A queue with callers or an agent not logged
    /// out cannot go yet: its name is released at once (no new calls or logins), the agent is
    /// asked to log out (after any call), and removal is retried every second until it takes.
    pub(super) fn reconcile(&mut self, now_ms: u64, queues: &[QueueDef], agents: &[AgentDef]) {
        let mut added = Vec::new();
        for def in queues {
            let key = (def.tenant.clone(), def.name.clone());
            if !self.queues.contains_key(&key) {
                let id = QueueId(self.id());
                self.queues.insert(key, id);
                added.push(id);
            }
        }
        // Removed queues first lose their names, so nothing new routes to them.
        let wanted: std::collections::HashSet<(String, String)> = queues
            .iter()
            .map(|d| (d.tenant.clone(), d.name.clone()))
            .collect();
        let gone: Vec<QueueId> = self
            .queues
            .iter()
            .filter(|(k, _)| !wanted.contains(*k))
            .map(|(_, &id)| id)
            .collect();
        self.queues.retain(|k, _| wanted.contains(k));
        for def in queues {
            let id = self.queues[&(def.tenant.clone(), def.name.clone())];
            let cfg = self.queue_config(id, def);
            let result = if added.contains(&id) {
                self.acd.add_queue(cfg)
            } else if self.queue_defs.get(&id) != Some(def) {
                self.acd.update_queue(now_ms, cfg)
            } else {
                continue;
            };
            match result {
                Ok(()) => {
                    self.queue_defs.insert(id, def.clone());
                }
                Err(e) => {
                    tracing::warn!("ACD: queue {}/{} not applied: {e}", def.tenant, def.name);
                    if added.contains(&id) {
                        self.queues.remove(&(def.tenant.clone(), def.name.clone()));
                    }
                }
            }
        }
        let wanted: std::collections::HashSet<(String, String)> = agents
            .iter()
            .map(|d| (d.tenant.clone(), d.name.clone()))
            .collect();
        let gone_agents: Vec<AgentId> = self
            .agents
            .iter()
            .filter(|(k, _)| !wanted.contains(*k))
            .map(|(_, &id)| id)
            .collect();
        self.agents.retain(|k, _| wanted.contains(k));
        for def in agents {
            let key = (def.tenant.clone(), def.name.clone());
            let known = self.agents.get(&key).copied();
            let id = known.unwrap_or_else(|| AgentId(self.id()));
            if known.is_some() && self.agent_defs.get(&id) == Some(def) {
                continue;
            }
            let cfg = self.agent_config(id, def);
            let result = match known {
                Some(_) => self.acd.update_agent(now_ms, cfg),
                None => self.acd.add_agent(cfg),
            };
            match result {
                Ok(()) => {
                    self.agents.insert(key, id);
                    self.agent_info.insert(
                        id,
                        AgentInfo {
                            tenant: def.tenant.clone(),
                            name: def.name.clone(),
                            user: def.user.clone(),
                        },
                    );
                    self.agent_defs.insert(id, def.clone());
                }
                Err(e) => tracing::warn!("ACD: agent {}/{} not applied: {e}", def.tenant, def.name),
            }
        }
        for id in gone_agents {
            self.agent_defs.remove(&id);
            if !self.retiring_agents.contains(&id) {
                self.retiring_agents.push(id);
            }
        }
        for id in gone {
            if !self.retiring_queues.contains(&id) {
                self.retiring_queues.push(id);
            }
        }
        self.retire(now_ms);
    }

    /// Removes agents and queues taken out of the directory once they are idle.
    pub(super) fn retire(&mut self, now_ms: u64) {
        let mut keep = Vec::new();
        for id in std::mem::take(&mut self.retiring_agents) {
            match self.acd.remove_agent(now_ms, id) {
                Ok(()) | Err(AcdError::UnknownAgent(_)) => {
                    self.agent_info.remove(&id);
                }
                Err(_) => {
                    // Logged in: log out now, or after the call in progress.
                    let _ = self.acd.handle(now_ms, Input::Logout { agent: id });
                    if self.acd.remove_agent(now_ms, id).is_ok() {
                        self.agent_info.remove(&id);
                    } else {
                        keep.push(id);
                    }
                }
            }
        }
        self.retiring_agents = keep;
        let mut keep = Vec::new();
        for id in std::mem::take(&mut self.retiring_queues) {
            match self.acd.remove_queue(now_ms, id) {
                Ok(()) | Err(AcdError::UnknownQueue(_)) => {
                    self.queue_defs.remove(&id);
                }
                Err(_) => keep.push(id),
            }
        }
        self.retiring_queues = keep;
    }

    pub(super) fn retiring(&self) -> bool {
        !self.retiring_agents.is_empty() || !self.retiring_queues.is_empty()
    }
}

/// Data gathered before the call reached us (an IVR, an SBC, a CRM lookup upstream) travels in
/// `X-` headers of the INVITE: each becomes a field of the agent's screen-pop, named by the
/// header in lower case. Bounded: 16 fields of at most 256 bytes.
fn caller_data(invite: &Message) -> Vec<(String, String)> {
    invite
        .headers
        .iter()
        .filter(|h| h.name.len() > 2 && h.name[..2].eq_ignore_ascii_case("x-"))
        .filter(|h| h.value.len() <= 256)
        .take(16)
        .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
        .collect()
}

/// RFC 3261's Priority header as the caller's place among equals: emergency before urgent
/// before normal before non-urgent (a supervisor can still change it).
fn caller_priority(invite: &Message) -> i32 {
    match invite
        .get("Priority")
        .map(|p| p.trim().to_ascii_lowercase())
    {
        Some(p) if p == "emergency" => 3,
        Some(p) if p == "urgent" => 2,
        Some(p) if p == "non-urgent" => -1,
        _ => 0,
    }
}

/// The first of PCMU (0) and PCMA (8) in the first audio stream's format list: what the hold
/// music is played in.
fn g711_pt(sdp: &str) -> Option<u8> {
    let m = sdp.lines().find_map(|l| l.strip_prefix("m=audio "))?;
    m.split_whitespace()
        .skip(2)
        .filter_map(|f| f.parse::<u8>().ok())
        .find(|&pt| pt == 0 || pt == 8)
}

/// The payload type of `telephone-event/8000` in the first audio stream.
pub(super) fn telephone_event_pt(sdp: &str) -> Option<u8> {
    let mut in_audio = false;
    for line in sdp.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            if in_audio {
                return None;
            }
            in_audio = m.starts_with("audio");
        } else if let Some(map) = line.strip_prefix("a=rtpmap:").filter(|_| in_audio) {
            let (pt, name) = map.split_once(' ')?;
            if name.trim().eq_ignore_ascii_case("telephone-event/8000") {
                return pt.parse().ok();
            }
        }
    }
    None
}

fn refusal(e: AcdError) -> AcdRefusal {
    match e {
        AcdError::UnknownQueue(_) | AcdError::UnknownAgent(_) | AcdError::UnknownContact(_) => {
            AcdRefusal::NotFound(e.to_string())
        }
        AcdError::InvalidTransition { .. }
        | AcdError::InvalidContactState { .. }
        | AcdError::NotOffered { .. }
        | AcdError::InUse(_)
        | AcdError::QueueBusy(_)
        | AcdError::QueueReferenced { .. }
        | AcdError::AgentBusy(_)
        | AcdError::TooManyContacts(_) => AcdRefusal::Conflict(e.to_string()),
        _ => AcdRefusal::Invalid(e.to_string()),
    }
}

fn event_kind_name(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Enter { .. } => "enter",
        EventKind::Connect { .. } => "connect",
        EventKind::CompleteCaller { .. } => "complete_caller",
        EventKind::CompleteAgent { .. } => "complete_agent",
        EventKind::Abandon { .. } => "abandon",
        EventKind::Resumed { .. } => "resumed",
        EventKind::ExitTimeout { .. } => "exit_timeout",
        EventKind::ExitKey { .. } => "exit_key",
        EventKind::ExitEmpty { .. } => "exit_empty",
        EventKind::ExitFull { .. } => "exit_full",
        EventKind::RingNoAnswer { .. } => "ring_no_answer",
        EventKind::Reject => "reject",
        EventKind::Transfer { .. } => "transfer",
        EventKind::CallbackRequested { .. } => "callback_requested",
        EventKind::CallbackPlaced { .. } => "callback_placed",
        EventKind::CallbackFailed { .. } => "callback_failed",
        EventKind::AgentLogin => "agent_login",
        EventKind::AgentLogout => "agent_logout",
        EventKind::Pause { .. } => "pause",
        EventKind::Unpause => "unpause",
    }
}

impl Engine {
    fn acd_now(&self, now: Now) -> u64 {
        self.cc.now_ms(now.mono)
    }

    /// The unix time of an ACD timestamp (events carry the ACD's clock).
    fn acd_unix_ms(&self, now: Now, at_ms: u64) -> u64 {
        let now_ms = self.acd_now(now);
        now.unix_ms.saturating_sub(now_ms.saturating_sub(at_ms))
    }

    /// A routed call reached `queue:<name>`: 180 to the caller, then the ACD has it (after
    /// the queue's greeting, when it has one the caller can hear).
    pub(super) fn enter_queue(&mut self, now: Now, call: CallId) {
        let contact = self.contact.clone();
        let greeting = self.greeting_of(call);
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.queue.is_none() {
            return;
        }
        c.state = CallState::Queued;
        let mut ringing = Message::response_to(&c.a_request, 180, Some(&c.a.local_tag));
        ringing.push("Contact", contact);
        let a_invite = c.a_invite;
        let music = self.start_music(call, greeting.map(|(once, _)| once));
        let greeted = music.is_some();
        if let Some(sdp) = music {
            // Early media: the caller's phone plays what we send instead of its ringback.
            ringing.set_body("application/sdp", sdp.into_bytes());
        }
        if let Some(a_invite) = a_invite {
            self.respond(now, a_invite, ringing);
        }
        match greeting.filter(|_| greeted) {
            Some((_, played)) => {
                let at = now.mono + played;
                if let Some(q) = self.calls.get_mut(&call).and_then(|c| c.queue.as_mut()) {
                    q.greeting_until = Some(at);
                }
                self.call_timers.push(Reverse((at, call)));
            }
            None => self.join_queue(now, call),
        }
    }

    /// The queue's greeting for this caller, when the queue has one and prompts were rendered.
    fn greeting_of(&self, call: CallId) -> Option<(ClipSequence, Duration)> {
        let queue = self.calls.get(&call)?.queue.as_ref()?.queue;
        let def = self.cc.queue_defs.get(&queue)?;
        self.cc.prompts?.greeting().filter(|_| def.greeting)
    }

    /// The greeting has played (the call's timer fell due): the caller joins the queue. True
    /// when it was that timer.
    pub(super) fn greeting_timer(&mut self, now: Now, call: CallId) -> bool {
        let Some(c) = self.calls.get_mut(&call) else {
            return false;
        };
        let Some(q) = c.queue.as_mut() else {
            return false;
        };
        if q.greeting_until.is_none_or(|at| at > now.mono) {
            return false;
        }
        q.greeting_until = None;
        if c.state == CallState::Queued {
            self.join_queue(now, call);
        }
        true
    }

    /// The ACD takes the caller (`Enter`): it waits in the queue from now on.
    fn join_queue(&mut self, now: Now, call: CallId) {
        let Some(queue) = self
            .calls
            .get(&call)
            .and_then(|c| Some(c.queue.as_ref()?.queue))
        else {
            return;
        };
        let request = self.contact_request(call, queue);
        let now_ms = self.acd_now(now);
        let entered = self.cc.acd.handle(now_ms, Input::Enter(request));
        if let Err(e) = entered {
            tracing::warn!("ACD refused call {call}: {e}");
            self.fail_call(now, call, 503, Disposition::Failed, "system");
        }
        self.acd_pump(now);
    }

    /// Starts the queue's hold music on leg A (after the clips of `first`, played once: the
    /// greeting) and listens for its leave key; returns the SDP the caller gets in the 180 for
    /// it: our address and leg A's port, the caller's codecs. None when the queue plays no
    /// music or the caller offered neither PCMU nor PCMA.
    pub(super) fn start_music(
        &mut self,
        call: CallId,
        first: Option<ClipSequence>,
    ) -> Option<String> {
        let c = self.calls.get(&call)?;
        let def = self.cc.queue_defs.get(&c.queue.as_ref()?.queue)?;
        let session = c.session?;
        let (music, listen) = (
            def.music,
            def.leave_key.is_some() || def.callback_key.is_some(),
        );
        if listen {
            if let Some(pt) = telephone_event_pt(&c.sdp[0]) {
                self.actions.push(Action::Media(MediaOp::SetDtmf {
                    session,
                    leg: LegIndex::A,
                    options: tandem_dataplane::api::DtmfOptions {
                        event_payload_type: Some(pt),
                        ..Default::default()
                    },
                }));
            }
        }
        let pt = g711_pt(&c.sdp[0]).filter(|_| music)?;
        let sdp = self.rewrite_for(&c.sdp[0], c.ports[0])?;
        self.actions.push(Action::Media(match first {
            Some(once) => MediaOp::PlaySequence {
                session,
                leg: LegIndex::A,
                once,
                then: 0,
                payload_type: pt,
            },
            None => MediaOp::Play {
                session,
                leg: LegIndex::A,
                clip: 0,
                payload_type: pt,
            },
        }));
        if let Some(q) = self.calls.get_mut(&call).and_then(|c| c.queue.as_mut()) {
            q.playing = Some(pt);
        }
        Some(sdp)
    }

    /// Where the data plane's prompts are (set once at start, before any call); None leaves
    /// queues with music only.
    pub fn set_prompts(&mut self, prompts: Option<PromptClips>) {
        self.cc.prompts = prompts;
    }

    /// The ACD's periodic announcement for a waiting caller: its position and wait estimate,
    /// as the queue says, spoken over the music (the data plane plays the phrases once, then
    /// the music again). Only to a caller who hears the music: one hearing its own ringback has
    /// no media from us to speak in.
    fn announce(&mut self, call: CallId, position: u32, ewt_ms: u64) {
        let Some(prompts) = self.cc.prompts else {
            return;
        };
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let (Some(q), Some(session)) = (c.queue.as_ref(), c.session) else {
            return;
        };
        let (Some(payload_type), Some(def)) = (q.playing, self.cc.queue_defs.get(&q.queue)) else {
            return;
        };
        let position = def.announce_position.then_some(position);
        // u64::MAX: nobody is staffed, so there is no estimate to give.
        let ewt_ms = (def.announce_wait && ewt_ms != u64::MAX).then_some(ewt_ms);
        let Some(once) = prompts.announcement(position, ewt_ms) else {
            return;
        };
        self.actions.push(Action::Media(MediaOp::PlaySequence {
            session,
            leg: LegIndex::A,
            once,
            then: 0,
            payload_type,
        }));
    }

    /// The caller leaves the hold music (an agent answers, or it goes elsewhere).
    pub(super) fn stop_music(&mut self, call: CallId) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let session = c.session;
        if let (Some(q), Some(session)) = (c.queue.as_mut(), session) {
            if q.playing.take().is_some() {
                self.actions.push(Action::Media(MediaOp::StopPlay {
                    session,
                    leg: LegIndex::A,
                }));
            }
        }
    }

    /// A key the data plane heard on a leg: the queue's leave key takes a waiting caller out.
    pub fn media_dtmf(&mut self, now: Now, session: SessionId, leg: LegIndex, digit: char) {
        self.info_dtmf_key(now, session, leg, digit);
        if leg != LegIndex::A {
            return;
        }
        let Some((&call, c)) = self.calls.iter().find(|(_, c)| c.session == Some(session)) else {
            return;
        };
        if !c.awaiting_agent() {
            return;
        }
        let Some(q) = c.queue.as_ref() else { return };
        if q.greeting_until.is_some() {
            // Not in the queue yet: there is nothing to leave.
            return;
        }
        let def = self.cc.queue_defs.get(&q.queue);
        let leave = def
            .and_then(|d| d.leave_key.as_deref())
            .is_some_and(|k| k.starts_with(digit));
        let callback = q.callback.is_none()
            && def
                .and_then(|d| d.callback_key.as_deref())
                .is_some_and(|k| k.starts_with(digit));
        if callback {
            self.request_callback(now, call);
            self.pump(now);
        } else if leave {
            let _ = self.acd_input(
                now,
                Input::LeaveKey {
                    contact: self.contact_of(call),
                },
            );
            self.pump(now);
        }
    }

    /// What the ACD is told about a caller entering `queue`: the queue's required skills and
    /// the caller's data for the agent's screen-pop.
    fn contact_request(&mut self, call: CallId, queue: QueueId) -> ContactRequest {
        let (tenant, data, priority) = match self.calls.get(&call) {
            Some(c) => {
                let mut data = vec![
                    ("caller".to_string(), c.caller.clone()),
                    ("dialled".to_string(), c.dialled.clone()),
                    ("tenant".to_string(), c.tenant.clone()),
                ];
                data.extend(caller_data(&c.a_request));
                (c.tenant.clone(), data, caller_priority(&c.a_request))
            }
            None => (String::new(), Vec::new(), 0),
        };
        let skills = self
            .cc
            .queue_defs
            .get(&queue)
            .map(|d| d.skills.clone())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| Some((self.cc.skill_id(&tenant, &s.skill)?, s.level.clamp(1, 5))))
            .collect();
        ContactRequest {
            id: ContactId(call),
            queue,
            priority,
            skills,
            data,
            // The caller's identity for abandoned-resume (From URI: the CLI for trunk calls).
            caller_key: self.calls.get(&call).map(|c| c.caller.clone()),
        }
    }

    /// The ACD's timers (ring timeouts, max-wait, wrap-up, relaxation) fell due.
    pub(super) fn acd_timer(&mut self, now: Now) {
        let now_ms = self.acd_now(now);
        if self.cc.acd.poll_timeout().is_some_and(|at| at <= now_ms) {
            self.cc.acd.handle_timeout(now_ms);
            self.acd_pump(now);
        }
    }

    /// Feeds an input produced by SIP (a device rang, answered, refused; a call ended).
    pub(super) fn acd_input(&mut self, now: Now, input: Input) -> Result<(), AcdError> {
        let now_ms = self.acd_now(now);
        let result = self.cc.acd.handle(now_ms, input);
        self.acd_pump(now);
        result
    }

    /// Acts on everything the ACD has to say, to a fixed point.
    pub(super) fn acd_pump(&mut self, now: Now) {
        loop {
            let mut any = false;
            while let Some(out) = self.cc.acd.poll_output() {
                any = true;
                self.acd_output(now, out);
            }
            if let Some(input) = self.cc.deferred.pop_front() {
                any = true;
                let now_ms = self.acd_now(now);
                if let Err(e) = self.cc.acd.handle(now_ms, input) {
                    tracing::debug!("ACD input refused: {e}");
                }
            }
            if !any {
                break;
            }
        }
        // Contacts the ACD let go of without an agent: overflow, or end the call.
        let exits = std::mem::take(&mut self.cc.exits);
        for call in exits {
            let Some(q) = self.calls.get_mut(&call).and_then(|c| c.queue.as_mut()) else {
                continue;
            };
            // Listed once per exit event and once per overflow: the first visit acts.
            let Some(code) = q.exit.take() else {
                continue;
            };
            match q.overflow.take().filter(|t| !t.is_empty()) {
                Some(target) => self.overflow_call(now, call, &target, code),
                None => {
                    let disposition = if code == 486 {
                        Disposition::Busy
                    } else {
                        Disposition::NoAnswer
                    };
                    self.fail_call(now, call, code, disposition, "system");
                }
            }
        }
    }

    fn acd_output(&mut self, now: Now, out: AcdOutput) {
        match out {
            AcdOutput::Offer {
                contact,
                queue,
                agents,
                data,
                ..
            } => {
                for agent in agents {
                    let rang = self.offer_to_agent(now, self.call_of(contact), agent);
                    if !rang {
                        self.cc.deferred.push_back(Input::Reject { agent, contact });
                    } else {
                        let mut detail = serde_json::Map::new();
                        for (k, v) in data.iter() {
                            detail.insert(k.clone(), serde_json::Value::String(v.clone()));
                        }
                        self.emit_acd(
                            now,
                            "offer",
                            None,
                            Some(queue),
                            Some(agent),
                            Some(contact),
                            detail,
                        );
                    }
                }
            }
            AcdOutput::CancelOffer { contact, agent } => {
                let call = self.call_of(contact);
                self.cancel_offer(now, call, agent)
            }
            AcdOutput::Connect { contact, agent } => {
                let call = self.call_of(contact);
                if self.callback_waiting_for_agent(call) {
                    self.ring_callback_agent(now, call, agent);
                } else {
                    self.connect_agent(now, call, agent);
                }
            }
            AcdOutput::Overflow { contact, target } => {
                let call = self.call_of(contact);
                if let Some(q) = self.calls.get_mut(&call).and_then(|c| c.queue.as_mut()) {
                    q.overflow = Some(target);
                    q.exit.get_or_insert(480);
                    self.cc.exits.push(call);
                }
            }
            AcdOutput::Announce {
                contact,
                position,
                ewt_ms,
            } => {
                // A contact waiting for its callback has no call to speak to (call_of names no
                // live call then, and `announce` does nothing).
                let call = self.call_of(contact);
                self.announce(call, position, ewt_ms)
            }
            AcdOutput::PlaceCallback {
                contact,
                agent,
                number,
                attempt,
            } => self.place_callback(now, contact, agent, number, attempt),
            AcdOutput::AgentStateChanged {
                agent,
                tenant,
                from,
                to,
                at_ms,
            } => {
                let mut detail = serde_json::Map::new();
                detail.insert("from".into(), self.state_name(from).into());
                detail.insert("to".into(), self.state_name(to).into());
                if let AgentState::Break(r) = to {
                    detail.insert("reason".into(), self.reason_name(r).into());
                }
                self.emit_acd(
                    now,
                    "agent_state",
                    Some((tenant, at_ms)),
                    None,
                    Some(agent),
                    None,
                    detail,
                );
            }
            AcdOutput::Event(event) => self.queue_event(now, event),
        }
    }

    fn state_name(&self, s: AgentState) -> String {
        s.name().to_string()
    }

    fn reason_name(&self, r: ReasonCode) -> String {
        self.cc
            .reason_names
            .get(&r)
            .cloned()
            .unwrap_or_else(|| r.0.to_string())
    }

    fn queue_event(&mut self, now: Now, e: QueueEvent) {
        let mut detail = serde_json::Map::new();
        let mut put = |k: &str, v: u64| {
            detail.insert(k.into(), v.into());
        };
        match &e.kind {
            EventKind::Enter {
                position,
                ewt_ms,
                resumed_from,
            } => {
                put("position", u64::from(*position));
                put("ewt_ms", *ewt_ms);
                if let Some(old) = resumed_from {
                    put("resumed_from", old.0);
                }
            }
            EventKind::Connect {
                wait_ms,
                ring_ms,
                callback,
            } => {
                put("wait_ms", *wait_ms);
                put("ring_ms", *ring_ms);
                detail.insert("callback".into(), (*callback).into());
            }
            EventKind::Resumed { into } => put("into", into.0),
            EventKind::CompleteCaller { wait_ms, talk_ms }
            | EventKind::CompleteAgent { wait_ms, talk_ms } => {
                put("wait_ms", *wait_ms);
                put("talk_ms", *talk_ms);
            }
            EventKind::Abandon { wait_ms }
            | EventKind::ExitKey { wait_ms }
            | EventKind::CallbackRequested { wait_ms } => put("wait_ms", *wait_ms),
            EventKind::ExitTimeout { wait_ms, .. } | EventKind::ExitEmpty { wait_ms, .. } => {
                put("wait_ms", *wait_ms)
            }
            EventKind::RingNoAnswer { ring_ms } => put("ring_ms", *ring_ms),
            EventKind::CallbackPlaced { attempt } => put("attempt", u64::from(*attempt)),
            EventKind::CallbackFailed { attempt, last } => {
                put("attempt", u64::from(*attempt));
                detail.insert("last".into(), (*last).into());
            }
            EventKind::Transfer {
                wait_ms, talk_ms, ..
            } => {
                put("wait_ms", *wait_ms);
                put("talk_ms", *talk_ms);
            }
            _ => {}
        }
        let to = match &e.kind {
            EventKind::ExitTimeout { to, .. }
            | EventKind::ExitEmpty { to, .. }
            | EventKind::ExitFull { to } => *to,
            EventKind::Transfer { to, .. } => Some(*to),
            _ => None,
        };
        if let Some(to) = to.and_then(|q| self.cc.queue_name(q)) {
            detail.insert("to".into(), to.into());
        }
        if let EventKind::Pause { reason } = &e.kind {
            detail.insert("reason".into(), self.reason_name(*reason).into());
        }
        // A contact that left without an agent and without another queue: the call ends
        // (or overflows) once the outputs of this round are seen.
        let exit = match &e.kind {
            EventKind::ExitTimeout { to: None, .. } | EventKind::ExitEmpty { to: None, .. } => {
                Some(480)
            }
            EventKind::ExitFull { to: None } => Some(486),
            EventKind::ExitKey { .. } => Some(480),
            _ => None,
        };
        if let (EventKind::ExitKey { .. }, Some(contact), Some(queue)) =
            (&e.kind, e.contact, e.queue)
        {
            // The ACD leaves a caller who pressed the leave key to us: the queue's overflow
            // target, when it is not a queue, takes the call.
            let target = self
                .cc
                .queue_defs
                .get(&queue)
                .and_then(|d| d.overflow.clone())
                .filter(|t| !t.starts_with("queue:"));
            let call = self.call_of(contact);
            if let Some(q) = self.calls.get_mut(&call).and_then(|c| c.queue.as_mut()) {
                q.overflow = target;
            }
        }
        if let (Some(code), Some(contact)) = (exit, e.contact) {
            let call = self.call_of(contact);
            if let Some(q) = self.calls.get_mut(&call).and_then(|c| c.queue.as_mut()) {
                q.exit = Some(code);
                self.cc.exits.push(call);
            }
        }
        if let (EventKind::Connect { .. }, Some(contact)) = (&e.kind, e.contact) {
            let call = self.call_of(contact);
            if let Some(q) = self.calls.get_mut(&call).and_then(|c| c.queue.as_mut()) {
                q.queue = e.queue.unwrap_or(q.queue);
            }
        }
        if let (true, Some(contact)) = (e.kind.ends_contact(), e.contact) {
            self.cc.callbacks.remove(&contact);
        }
        let kind = event_kind_name(&e.kind);
        self.emit_acd(
            now,
            kind,
            Some((e.tenant, e.at_ms)),
            e.queue,
            e.agent,
            e.contact,
            detail,
        );
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn emit_acd(
        &mut self,
        now: Now,
        kind: &'static str,
        tenant_at: Option<(TenantId, u64)>,
        queue: Option<QueueId>,
        agent: Option<AgentId>,
        contact: Option<ContactId>,
        detail: serde_json::Map<String, serde_json::Value>,
    ) {
        let (tenant, at_unix_ms) = match tenant_at {
            Some((t, at)) => (self.cc.tenant_name(t), self.acd_unix_ms(now, at)),
            None => {
                let t = agent
                    .and_then(|a| self.cc.agent_info.get(&a))
                    .map(|i| i.tenant.clone())
                    .or_else(|| {
                        contact
                            .and_then(|c| self.calls.get(&self.call_of(c)))
                            .map(|c| c.tenant.clone())
                    })
                    .unwrap_or_default();
                (t, now.unix_ms)
            }
        };
        let event = AcdEvent {
            at_unix_ms,
            tenant,
            kind,
            queue: queue.and_then(|q| self.cc.queue_name(q)),
            agent: agent.and_then(|a| self.cc.agent_info.get(&a).map(|i| i.name.clone())),
            contact: contact.map(|c| c.0),
            call: contact
                .map(|c| self.call_of(c))
                .filter(|id| self.calls.contains_key(id)),
            detail,
        };
        self.actions
            .push(Action::Event(SipEvent::Acd(Box::new(event))));
    }

    /// INVITEs every registered device of `agent` with the caller's offer; false when the
    /// agent has none (or the call is gone).
    pub(super) fn offer_to_agent(&mut self, now: Now, call: CallId, agent: AgentId) -> bool {
        let Some(info) = self.cc.agent_info.get(&agent) else {
            return false;
        };
        let domain = self.cfg.tenant_domain(&info.tenant).unwrap_or_default();
        let aor = format!("{}@{domain}", info.user);
        let devices: Vec<(String, Peer)> = self
            .location
            .lookup(&aor, now.mono)
            .into_iter()
            .map(|b| (b.contact.clone(), b.peer))
            .collect();
        if devices.is_empty() {
            return false;
        }
        let Some(c) = self.calls.get(&call) else {
            return false;
        };
        if !c.awaiting_agent() {
            return false;
        }
        let (caller_sdp, port) = (c.sdp[0].clone(), c.ports[1]);
        // The codecs the data plane transcodes are offered too: an agent's phone that lacks
        // the caller's still takes the call.
        let Some(offer_sdp) = self.offer_onward(call, Side::A, &caller_sdp, port) else {
            return false;
        };
        let Some(c) = self.calls.get(&call) else {
            return false;
        };
        let contact = self.contact.clone();
        let from_value = caller_identity(&c.a.remote);
        for (target, peer) in devices {
            let local_tag = self.token("b");
            let call_id = format!("{}@tandem", self.token("c"));
            let mut leg = Leg {
                call_id: call_id.clone(),
                local_tag: local_tag.clone(),
                local_uri: from_value.clone(),
                remote: format!("<sip:{aor}>"),
                remote_tag: None,
                remote_target: target,
                route_set: Vec::new(),
                local_cseq: 0,
                peer,
            };
            let mut invite = leg.request(Method::Invite, &contact);
            invite.push("Max-Forwards", "69");
            invite.push("Allow", ALLOW);
            invite.push("Supported", "replaces, 100rel, timer");
            invite.set_body("application/sdp", offer_sdp.clone().into_bytes());
            let tx = self.tx.send_request(now.mono, invite, peer, None);
            self.pending.insert(tx, Pending::Offer(call));
            self.dialogs.insert((call_id, local_tag), (call, Side::B));
            if let Some(q) = self.calls.get_mut(&call).and_then(|c| c.queue.as_mut()) {
                q.offers.push(DeviceOffer {
                    agent,
                    leg,
                    invite: tx,
                    state: OfferState::Trying,
                    answer: None,
                    ack: None,
                });
            }
        }
        true
    }

    /// The ACD withdrew the offer from `agent`: CANCEL its devices still alerting.
    fn cancel_offer(&mut self, now: Now, call: CallId, agent: AgentId) {
        if self.cancel_callback(now, call) {
            return;
        }
        let Some(q) = self.calls.get_mut(&call).and_then(|c| c.queue.as_mut()) else {
            return;
        };
        let mut cancel = Vec::new();
        let mut bye = Vec::new();
        for o in q.offers.iter_mut().filter(|o| o.agent == agent) {
            match o.state {
                OfferState::Trying | OfferState::Ringing => {
                    o.state = OfferState::Done;
                    cancel.push(o.invite);
                }
                OfferState::Answered => {
                    // Answered, but the ACD gave the call to someone else first.
                    o.state = OfferState::Done;
                    bye.push(o.leg.clone());
                }
                OfferState::Connected | OfferState::Done => {}
            }
        }
        for tx in cancel {
            self.tx.cancel(now.mono, tx);
        }
        for leg in bye {
            self.bye_leg(now, leg);
        }
    }

    fn bye_leg(&mut self, now: Now, mut leg: Leg) {
        let contact = self.contact.clone();
        self.dialogs
            .remove(&(leg.call_id.clone(), leg.local_tag.clone()));
        let bye = leg.request(Method::Bye, &contact);
        let tx = self.tx.send_request(now.mono, bye, leg.peer, None);
        self.pending.insert(tx, Pending::Bye);
    }

    /// The ACD bridged `agent`: its answering device becomes leg B and the caller is answered.
    pub(super) fn connect_agent(&mut self, now: Now, call: CallId, agent: AgentId) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(q) = c.queue.as_mut() else { return };
        let Some(ix) = q
            .offers
            .iter()
            .position(|o| o.agent == agent && o.state == OfferState::Answered)
        else {
            return;
        };
        q.offers[ix].state = OfferState::Connected;
        q.agent = Some(agent);
        let leg = q.offers[ix].leg.clone();
        let answer = q.offers[ix].answer.clone().unwrap_or_default();
        let ack = q.offers[ix].ack.clone();
        let b_invite = q.offers[ix].invite;
        // The agent's other devices stop ringing.
        let mut cancel = Vec::new();
        let mut bye = Vec::new();
        for (i, o) in q.offers.iter_mut().enumerate() {
            if i == ix || o.agent != agent {
                continue;
            }
            match o.state {
                OfferState::Trying | OfferState::Ringing => cancel.push(o.invite),
                OfferState::Answered => bye.push(o.leg.clone()),
                _ => {}
            }
            o.state = OfferState::Done;
        }
        if let Some(info) = self.cc.agent_info.get(&agent) {
            c.target_uri = format!("agent:{}", info.name);
        }
        c.target_peer = leg.peer;
        c.b = Some(leg);
        c.b_invite = Some(b_invite);
        c.b_ack = ack;
        for tx in cancel {
            self.tx.cancel(now.mono, tx);
        }
        for l in bye {
            self.bye_leg(now, l);
        }
        self.stop_music(call);
        let c = self.calls.get_mut(&call).expect("checked");
        if c.state == CallState::Answered {
            // Transferred back into a queue: the caller was answered long ago; only the media
            // of leg B moves to the new agent.
            if let (Some(session), Some(params)) = (c.session, first_audio_params(&answer)) {
                self.actions.push(Action::Media(MediaOp::Update {
                    session,
                    leg: LegIndex::B,
                    params,
                }));
            }
            c.sdp[1] = answer.clone();
            // The caller keeps the codec it was answered with; the new agent may not share it.
            self.settle_joined(call, Side::B, &answer);
            return;
        }
        // Until answered it is still a queued call for the code that ends calls.
        c.state = CallState::Calling;
        self.answer_caller(now, call, answer);
    }

    /// A response from an agent's device to our offer INVITE.
    pub(super) fn on_offer_response(
        &mut self,
        now: Now,
        call: CallId,
        tx: ClientTxId,
        res: Message,
    ) {
        let code = res.status().unwrap_or(0);
        let contact = self.contact.clone();
        let Some(q) = self.calls.get_mut(&call).and_then(|c| c.queue.as_mut()) else {
            if (200..300).contains(&code) {
                self.ack_and_bye_orphan(now, tx, &res);
            }
            return;
        };
        let Some(ix) = q.offers.iter().position(|o| o.invite == tx) else {
            return;
        };
        let agent = q.offers[ix].agent;
        let o = &mut q.offers[ix];
        match code {
            100 => {}
            101..=199 => {
                if o.state == OfferState::Trying {
                    o.state = OfferState::Ringing;
                    let already = q.offers.iter().enumerate().any(|(i, p)| {
                        i != ix && p.agent == agent && p.state == OfferState::Ringing
                    });
                    if !already {
                        let _ = self.acd_input(
                            now,
                            Input::Ringing {
                                agent,
                                contact: self.contact_of(call),
                            },
                        );
                    }
                }
            }
            200..=299 => {
                match o.state {
                    OfferState::Answered | OfferState::Connected => {
                        // A retransmitted 2xx: our ACK was lost.
                        if let Some(ack) = o.ack.clone() {
                            let peer = o.leg.peer;
                            self.tx.resend(peer, ack);
                        }
                        return;
                    }
                    OfferState::Done => {
                        // Answered as our CANCEL crossed it, or after another device won.
                        o.state = OfferState::Answered; // so retransmissions are re-ACKed
                        self.ack_and_bye_orphan(now, tx, &res);
                        if let Some(o) = self
                            .calls
                            .get_mut(&call)
                            .and_then(|c| c.queue.as_mut())
                            .and_then(|q| q.offers.get_mut(ix))
                        {
                            o.state = OfferState::Done;
                        }
                        return;
                    }
                    OfferState::Trying | OfferState::Ringing => {}
                }
                let leg = &mut o.leg;
                leg.confirm(&res);
                let ack = leg.request(Method::Ack, &contact);
                let peer = leg.peer;
                let ack_bytes = self.tx.send_ack(ack, peer);
                let q = self
                    .calls
                    .get_mut(&call)
                    .and_then(|c| c.queue.as_mut())
                    .expect("checked");
                let o = &mut q.offers[ix];
                o.ack = Some(ack_bytes);
                o.state = OfferState::Answered;
                o.answer = res
                    .body_str()
                    .filter(|_| res.content_type() == Some("application/sdp"))
                    .map(str::to_string);
                if o.answer.is_none() {
                    o.state = OfferState::Done;
                    let leg = o.leg.clone();
                    self.bye_leg(now, leg);
                    self.device_failed(now, call, agent);
                    return;
                }
                if self.callback_waiting_for_agent(call) {
                    self.callback_agent_answered(now, call, agent);
                    return;
                }
                let answered = self.acd_input(
                    now,
                    Input::Answer {
                        agent,
                        contact: self.contact_of(call),
                    },
                );
                if answered.is_err() {
                    // The ACD moved on (ring timeout, caller gone): release the device.
                    if let Some(o) = self
                        .calls
                        .get_mut(&call)
                        .and_then(|c| c.queue.as_mut())
                        .and_then(|q| q.offers.get_mut(ix))
                    {
                        if o.state == OfferState::Answered {
                            o.state = OfferState::Done;
                            let leg = o.leg.clone();
                            self.bye_leg(now, leg);
                        }
                    }
                }
            }
            _ => {
                self.pending.remove(&tx);
                let was_live = matches!(o.state, OfferState::Trying | OfferState::Ringing);
                o.state = OfferState::Done;
                let key = (o.leg.call_id.clone(), o.leg.local_tag.clone());
                self.dialogs.remove(&key);
                if was_live {
                    self.device_failed(now, call, agent);
                }
            }
        }
    }

    /// One of the agent's devices refused or vanished: when none is left alerting, the agent
    /// rejected the offer.
    pub(super) fn device_failed(&mut self, now: Now, call: CallId, agent: AgentId) {
        let Some(q) = self.calls.get(&call).and_then(|c| c.queue.as_ref()) else {
            return;
        };
        let alive = q.offers.iter().any(|o| {
            o.agent == agent
                && matches!(
                    o.state,
                    OfferState::Trying | OfferState::Ringing | OfferState::Answered
                )
        });
        if self.callback_waiting_for_agent(call) {
            if !alive {
                self.callback_agent_unreachable(now, call);
            }
            return;
        }
        if !alive {
            let _ = self.acd_input(
                now,
                Input::Reject {
                    agent,
                    contact: self.contact_of(call),
                },
            );
        }
    }

    /// A request on the dialog of an offered device that did not become leg B: its BYE (a
    /// device hanging up between its 2xx and our BYE) is accepted and ends that offer; anything
    /// else has no dialog to belong to.
    pub(super) fn offer_dialog_request(
        &mut self,
        now: Now,
        tx: ServerTxId,
        req: Message,
        call: CallId,
    ) {
        if req.method() != Some(&Method::Bye) {
            self.reply(now, tx, &req, 481);
            return;
        }
        self.respond(now, tx, Message::response_to(&req, 200, None));
        let Some(q) = self.calls.get_mut(&call).and_then(|c| c.queue.as_mut()) else {
            return;
        };
        let Some(o) = q.offers.iter_mut().find(|o| o.leg.call_id == req.call_id()) else {
            return;
        };
        let was_answered = o.state == OfferState::Answered;
        o.state = OfferState::Done;
        let (agent, key) = (o.agent, (o.leg.call_id.clone(), o.leg.local_tag.clone()));
        self.dialogs.remove(&key);
        if was_answered {
            self.device_failed(now, call, agent);
        }
    }

    /// The offer INVITE got no answer at all (Timer B).
    pub(super) fn offer_timed_out(&mut self, now: Now, call: CallId, tx: ClientTxId) {
        let Some(q) = self.calls.get_mut(&call).and_then(|c| c.queue.as_mut()) else {
            return;
        };
        let Some(o) = q.offers.iter_mut().find(|o| o.invite == tx) else {
            return;
        };
        if matches!(o.state, OfferState::Trying | OfferState::Ringing) {
            o.state = OfferState::Done;
            let agent = o.agent;
            self.device_failed(now, call, agent);
        }
    }

    /// A queued call is ending (either side, any reason): stop its devices ringing and tell the
    /// ACD who hung up. Called before the call is removed.
    pub(super) fn leave_acd(&mut self, now: Now, call: CallId) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let by = if c.ended_by == "callee" {
            Party::Agent
        } else {
            Party::Caller
        };
        let Some(q) = c.queue.as_ref() else { return };
        let contact = q.contact;
        // A callback attempt: (the ACD knows its outcome, the customer answered).
        let callback = q.callback.as_ref().map(|d| (d.reported, d.answered));
        self.drop_offers(now, call);
        if callback.is_some() && self.cc.callback_calls.get(&contact) == Some(&call) {
            self.cc.callback_calls.remove(&contact);
        }
        let input = match callback {
            Some((false, _)) => Input::CallbackResult {
                contact,
                answered: false,
            },
            // Withdrawn by the ACD itself (dial timeout): nothing to tell.
            Some((true, false)) => return,
            // Unknown once it overflowed or exited: the ACD refuses, nothing to tell.
            _ => Input::Hangup { contact, by },
        };
        let now_ms = self.acd_now(now);
        let _ = self.cc.acd.handle(now_ms, input);
    }

    /// Stops every device offer of a queued call: CANCEL those ringing, BYE those answered
    /// but not connected, and forget their dialogs.
    pub(super) fn drop_offers(&mut self, now: Now, call: CallId) {
        let Some(q) = self.calls.get_mut(&call).and_then(|c| c.queue.as_mut()) else {
            return;
        };
        let mut cancel = Vec::new();
        let mut bye = Vec::new();
        for o in q.offers.iter_mut() {
            match o.state {
                OfferState::Trying | OfferState::Ringing => cancel.push(o.invite),
                OfferState::Answered => bye.push(o.leg.clone()),
                _ => {}
            }
            o.state = OfferState::Done;
            self.dialogs
                .remove(&(o.leg.call_id.clone(), o.leg.local_tag.clone()));
        }
        for tx in cancel {
            self.tx.cancel(now.mono, tx);
        }
        for leg in bye {
            self.bye_leg(now, leg);
        }
    }

    /// The agent (leg B) transferred the caller elsewhere and left: for the ACD the agent's
    /// part of the contact is complete (wrap-up starts); the call goes on outside the queue.
    pub(super) fn agent_transferred(&mut self, now: Now, call: CallId) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.queue.as_ref().is_none_or(|q| q.agent.is_none()) {
            return;
        }
        c.queue = None;
        let _ = self.acd_input(
            now,
            Input::Hangup {
                contact: self.contact_of(call),
                by: Party::Agent,
            },
        );
    }

    /// The called party (an agent, or whoever answered a plain call) REFERs the caller to a
    /// number routed to a queue: the agent is released (202, NOTIFY 200, BYE) and the caller,
    /// still answered, waits in that queue with leg B empty until the next agent answers. For
    /// a call that came through a queue the ACD books it as a transfer (the agent's part is
    /// complete, the caller keeps its original entry time); any other call enters fresh.
    pub(super) fn refer_to_queue(
        &mut self,
        now: Now,
        tx: ServerTxId,
        req: &Message,
        call: CallId,
        side: Side,
        name: &str,
    ) {
        let contact = self.contact.clone();
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let tenant = c.tenant.clone();
        if c.queue.as_ref().is_some_and(|q| q.callback.is_some()) {
            // The ACD would dial a called-back customer again instead of queueing it live.
            let res = Message::response_to(req, 403, None)
                .with_reason("Forbidden (a called-back customer cannot go back to a queue)");
            self.respond(now, tx, res);
            return;
        }
        if side != Side::B || c.b.is_none() {
            let res = Message::response_to(req, 403, None)
                .with_reason("Forbidden (only the answering party can transfer to a queue)");
            self.respond(now, tx, res);
            return;
        }
        let Some(queue) = self.cc.queue_id(&tenant, name) else {
            self.reply(now, tx, req, 404);
            return;
        };
        let connected = c.queue.as_ref().and_then(|q| q.agent);
        self.respond(now, tx, Message::response_to(req, 202, None));
        let c = self.calls.get_mut(&call).expect("checked");
        let mut agent_leg = c.b.take().expect("checked");
        c.b_invite = None;
        c.b_ack = None;
        c.sdp[1].clear();
        self.dialogs
            .remove(&(agent_leg.call_id.clone(), agent_leg.local_tag.clone()));
        let notify = sipfrag_notify(&mut agent_leg, &contact, "SIP/2.0 200 OK", true);
        let notify_tx = self.tx.send_request(now.mono, notify, agent_leg.peer, None);
        self.pending.insert(notify_tx, Pending::Ignore);
        self.bye_leg(now, agent_leg);
        self.metrics.transferred();
        let c = self.calls.get_mut(&call).expect("checked");
        if let Some(session) = c.session {
            // Until the next agent answers, leg B has no peer.
            self.actions.push(Action::Media(MediaOp::Update {
                session,
                leg: LegIndex::B,
                params: LegParams::default(),
            }));
        }
        let result = match connected {
            Some(_) => {
                let q = c.queue.as_mut().expect("connected through a queue");
                q.agent = None;
                q.queue = queue;
                self.acd_input(
                    now,
                    Input::Transfer {
                        contact: self.contact_of(call),
                        queue,
                    },
                )
            }
            None => {
                c.queue = Some(Queued::new(queue, ContactId(call)));
                let request = self.contact_request(call, queue);
                self.acd_input(now, Input::Enter(request))
            }
        };
        if result.is_ok() {
            // Music while the next agent is found (the caller already has our SDP).
            let _ = self.start_music(call, None);
        }
        if let Err(e) = result {
            tracing::warn!("ACD refused the transfer of call {call} to queue {name}: {e}");
            if let Some(c) = self.calls.get_mut(&call) {
                c.ended_by = "system";
            }
            self.hang_up_both(now, call, None);
        }
    }

    /// The ACD let the caller go to an external target: route it there like any call.
    fn overflow_call(&mut self, now: Now, call: CallId, target: &str, code: u16) {
        let Some(route_target) = crate::sip::config::parse_target(target) else {
            self.fail_call(now, call, code, Disposition::NoAnswer, "system");
            return;
        };
        self.stop_music(call);
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        if c.state == CallState::Answered {
            // Back in a queue after a transfer: the caller's dialog is confirmed, so it cannot
            // be offered to another target as a fresh call; it ends.
            self.hang_up_both(now, call, None);
            return;
        }
        let (tenant, number) = (c.tenant.clone(), c.dialled.clone());
        match self.resolve(now, &tenant, &route_target, &number) {
            Ok((uri, peer)) => {
                let c = self.calls.get_mut(&call).expect("checked");
                c.target_uri = uri;
                c.target_peer = peer;
                c.queue = None;
                c.trunk = match route_target {
                    RouteTarget::Trunk(name) => Some(name),
                    _ => None,
                };
                c.no_answer_at = now.mono + Duration::from_secs(self.cfg.no_answer_timeout_s);
                let at = c.no_answer_at;
                self.call_timers.push(Reverse((at, call)));
                self.send_b_invite(now, call);
            }
            Err(code) => self.fail_call(now, call, code, Disposition::Failed, "system"),
        }
    }

    /// An API request for the ACD (agent action, status, supervisor move).
    pub fn acd_request(
        &mut self,
        now: Now,
        tenant: &str,
        op: AcdOp,
    ) -> Result<AcdReply, AcdRefusal> {
        let now_ms = self.acd_now(now);
        let result = match op {
            AcdOp::Monitor { call, op } => return self.monitor_request(now, tenant, call, op),
            AcdOp::Calls { call } => return self.live_calls(tenant, call),
            AcdOp::Agent { agent, action } => {
                let id = self
                    .cc
                    .agent_id(tenant, &agent)
                    .ok_or_else(|| AcdRefusal::NotFound(format!("no agent {agent}")))?;
                let input = match action {
                    AgentAction::Login => Input::Login { agent: id },
                    AgentAction::Logout => Input::Logout { agent: id },
                    AgentAction::Ready => Input::Ready { agent: id },
                    AgentAction::Break { reason } => Input::Pause {
                        agent: id,
                        reason: self.cc.reason(&reason),
                    },
                    AgentAction::ExtendWrapUp { seconds } => Input::ExtendWrapUp {
                        agent: id,
                        extra_ms: u64::from(seconds) * 1000,
                    },
                    AgentAction::Force { state, reason } => Input::ForceState {
                        agent: id,
                        state: match state.as_str() {
                            "logged-out" | "logged_out" => ForcedState::LoggedOut,
                            "available" => ForcedState::Available,
                            "break" => ForcedState::Break(
                                self.cc.reason(reason.as_deref().unwrap_or("supervisor")),
                            ),
                            other => {
                                return Err(AcdRefusal::Invalid(format!(
                                    "state {other:?} is not logged-out, available or break"
                                )))
                            }
                        },
                    },
                };
                self.cc
                    .acd
                    .handle(now_ms, input)
                    .map(|()| AcdReply::Done)
                    .map_err(refusal)
            }
            AcdOp::MoveCaller { contact, queue } => {
                self.caller_of(tenant, contact)?;
                let q = self
                    .cc
                    .queue_id(tenant, &queue)
                    .ok_or_else(|| AcdRefusal::NotFound(format!("no queue {queue}")))?;
                self.cc
                    .acd
                    .handle(
                        now_ms,
                        Input::Move {
                            contact: ContactId(contact),
                            queue: q,
                        },
                    )
                    .map(|()| AcdReply::Done)
                    .map_err(refusal)
            }
            AcdOp::SetPriority { contact, priority } => {
                self.caller_of(tenant, contact)?;
                self.cc
                    .acd
                    .handle(
                        now_ms,
                        Input::SetPriority {
                            contact: ContactId(contact),
                            priority,
                        },
                    )
                    .map(|()| AcdReply::Done)
                    .map_err(refusal)
            }
            AcdOp::Queues { queue } => {
                let mut names: Vec<(String, QueueId)> = self
                    .cc
                    .queues
                    .iter()
                    .filter(|((t, n), _)| t == tenant && queue.as_ref().is_none_or(|q| q == n))
                    .map(|((_, n), &id)| (n.clone(), id))
                    .collect();
                if names.is_empty() && queue.is_some() {
                    return Err(AcdRefusal::NotFound(format!(
                        "no queue {}",
                        queue.unwrap_or_default()
                    )));
                }
                names.sort();
                let views = names
                    .into_iter()
                    .filter_map(|(name, id)| self.queue_view(now, name, id))
                    .collect();
                return Ok(AcdReply::Queues(views));
            }
            AcdOp::Agents { agent } => {
                let mut ids: Vec<(String, AgentId)> = self
                    .cc
                    .agents
                    .iter()
                    .filter(|((t, n), _)| t == tenant && agent.as_ref().is_none_or(|a| a == n))
                    .map(|((_, n), &id)| (n.clone(), id))
                    .collect();
                if ids.is_empty() && agent.is_some() {
                    return Err(AcdRefusal::NotFound(format!(
                        "no agent {}",
                        agent.unwrap_or_default()
                    )));
                }
                ids.sort();
                let views = ids
                    .into_iter()
                    .filter_map(|(_, id)| self.agent_view(now, id))
                    .collect();
                return Ok(AcdReply::Agents(views));
            }
        };
        self.acd_pump(now);
        self.pump(now);
        result
    }

    fn caller_of(&self, tenant: &str, contact: u64) -> Result<(), AcdRefusal> {
        match self.calls.get(&contact) {
            Some(c) if c.tenant == tenant && c.queue.is_some() => Ok(()),
            // A queued callback has no call while it waits.
            _ if self
                .cc
                .callbacks
                .get(&ContactId(contact))
                .is_some_and(|o| o.tenant == tenant) =>
            {
                Ok(())
            }
            _ => Err(AcdRefusal::NotFound(format!("no queued caller {contact}"))),
        }
    }

    fn queue_view(&self, now: Now, name: String, id: QueueId) -> Option<QueueStatusView> {
        let now_ms = self.acd_now(now);
        let s = self.cc.acd.queue_status(id, now_ms).ok()?;
        let mut callers: Vec<WaitingCallerView> = self
            .calls
            .iter()
            .filter(|(_, c)| c.awaiting_agent() && c.queue.as_ref().is_some_and(|q| q.queue == id))
            .filter_map(|(&call, c)| {
                let position = self.cc.acd.contact_position(self.contact_of(call)).ok()??;
                Some(WaitingCallerView {
                    contact: call,
                    position,
                    waited_s: now.mono.saturating_duration_since(c.started).as_secs_f64(),
                    priority: 0,
                    caller: c.caller.clone(),
                })
            })
            .collect();
        callers.sort_by_key(|c| c.position);
        Some(QueueStatusView {
            name,
            waiting: s.depth,
            callbacks: s.callbacks,
            longest_wait_s: s.longest_wait_ms as f64 / 1000.0,
            staffed: s.staffed,
            available: s.agents.available,
            on_break: s.agents.on_break,
            ringing: s.agents.ringing + s.agents.reserved,
            on_call: s.agents.on_call,
            wrap_up: s.agents.wrap_up,
            ewt_s: s.ewt_ms.map(|ms| ms as f64 / 1000.0),
            aht_s: s.aht_ms as f64 / 1000.0,
            callers,
        })
    }

    fn agent_view(&self, now: Now, id: AgentId) -> Option<AgentStatusView> {
        let info = self.cc.agent_info.get(&id)?;
        let s = self.cc.acd.agent_status(id).ok()?;
        let now_ms = self.acd_now(now);
        let domain = self.cfg.tenant_domain(&info.tenant).unwrap_or_default();
        let registered = !self
            .location
            .lookup(&format!("{}@{domain}", info.user), now.mono)
            .is_empty();
        Some(AgentStatusView {
            name: info.name.clone(),
            user: info.user.clone(),
            state: s.state.name().to_string(),
            reason: match s.state {
                AgentState::Break(r) => Some(self.reason_name(r)),
                _ => None,
            },
            in_state_s: now_ms.saturating_sub(s.since_ms) as f64 / 1000.0,
            contact: s.contact.map(|c| c.0),
            calls_taken: s.calls,
            missed_in_a_row: s.consecutive_misses,
            registered,
        })
    }
}
