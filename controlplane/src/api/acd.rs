//! The running contact centre: agents' actions and live status (asked of the SIP engine's ACD
//! through `ApiState::ask_acd`), supervisors' moves of waiting callers, the stored queue event
//! log and per-interval statistics computed from it.

use super::{ApiError, ApiState, Body, ErrorBody, ListParams, Params, Principal, EVERYONE, STAFF};
use crate::sip::queues::{AcdOp, AcdReply, AgentAction, AgentStatusView, QueueStatusView};
use crate::storage::{now_ms, Listed, QueueEventFilter, QueueEventRow};
use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(agent_action))
        .routes(routes!(agent_status))
        .routes(routes!(agents_status))
        .routes(routes!(queue_status))
        .routes(routes!(queues_status))
        .routes(routes!(move_caller))
        .routes(routes!(set_caller_priority))
        .routes(routes!(list_queue_events))
        .routes(routes!(queue_stats))
}

/// Every kind of event the ACD reports (`acd.<kind>` on the event stream and for webhooks).
pub const EVENT_KINDS: [&str; 22] = [
    "enter",
    "connect",
    "complete_caller",
    "complete_agent",
    "abandon",
    "resumed",
    "exit_timeout",
    "exit_key",
    "exit_empty",
    "exit_full",
    "ring_no_answer",
    "reject",
    "transfer",
    "callback_requested",
    "callback_placed",
    "callback_failed",
    "agent_login",
    "agent_logout",
    "pause",
    "unpause",
    "agent_state",
    "offer",
];

/// Whether `who` is the agent `agent` itself: a user of role `agent` whose username is the
/// agent's name.
pub fn is_self(who: &Principal, tenant: &str, agent: &str) -> bool {
    who.role == "agent"
        && who.tenant.as_deref() == Some(tenant)
        && who.username.as_deref() == Some(agent)
}

/// Scope, then: the agent itself, or one of `roles`.
pub fn require_self_or(
    who: &Principal,
    tenant: &str,
    agent: &str,
    roles: &[&str],
) -> Result<(), ApiError> {
    who.scope(tenant)?;
    if is_self(who, tenant, agent) {
        return Ok(());
    }
    who.require(tenant, roles)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Done {
    /// Always true: the ACD applied the action.
    pub done: bool,
}

/// An agent's action: `login`, `logout`, `ready`, `break` (with a reason), `extend_wrap_up`
/// (seconds) — by the agent itself (a user of role `agent` named like the agent), a supervisor
/// or an administrator — or `force` (supervisors and administrators only).
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/agents/{agent}/state", tag = "contact-centre",
    params(("tenant" = String, Path), ("agent" = String, Path)), request_body = AgentAction,
    responses((status = 200, body = Done), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
async fn agent_action(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, agent)): Path<(String, String)>,
    Body(action): Body<AgentAction>,
) -> Result<Json<Done>, ApiError> {
    require_self_or(&who, &tenant, &agent, STAFF)?;
    match &action {
        AgentAction::Force { state: to, reason } => {
            who.require(&tenant, STAFF)?;
            if !["logged-out", "available", "break"].contains(&to.as_str()) {
                return Err(ApiError::invalid(
                    "state",
                    "state is logged-out, available or break",
                ));
            }
            if let Some(r) = reason {
                super::check_len("reason", r, 1, 64)?;
            }
        }
        AgentAction::Break { reason } => super::check_len("reason", reason, 1, 64)?,
        AgentAction::ExtendWrapUp { seconds } => {
            if !(1..=3600).contains(seconds) {
                return Err(ApiError::invalid("seconds", "seconds must be 1–3600"));
            }
        }
        AgentAction::Login | AgentAction::Logout | AgentAction::Ready => {}
    }
    state
        .ask_acd(
            &tenant,
            AcdOp::Agent {
                agent: agent.clone(),
                action: action.clone(),
            },
        )
        .await?;
    // An agent's own state changes are in the queue log (`agent_state`); what others do to an
    // agent is audited.
    if !is_self(&who, &tenant, &agent) {
        state
            .audit(
                &who,
                Some(&tenant),
                "agent_action",
                "agent",
                &agent,
                serde_json::to_value(&action).unwrap_or_default(),
            )
            .await?;
    }
    Ok(Json(Done { done: true }))
}

fn agents_of(reply: AcdReply) -> Vec<AgentStatusView> {
    match reply {
        AcdReply::Agents(a) => a,
        _ => Vec::new(),
    }
}

fn queues_of(reply: AcdReply) -> Vec<QueueStatusView> {
    match reply {
        AcdReply::Queues(q) => q,
        _ => Vec::new(),
    }
}

/// One agent's live state.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/agents/{agent}/status", tag = "contact-centre",
    params(("tenant" = String, Path), ("agent" = String, Path)),
    responses((status = 200, body = AgentStatusView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn agent_status(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, agent)): Path<(String, String)>,
) -> Result<Json<AgentStatusView>, ApiError> {
    require_self_or(&who, &tenant, &agent, STAFF)?;
    let reply = state
        .ask_acd(
            &tenant,
            AcdOp::Agents {
                agent: Some(agent.clone()),
            },
        )
        .await?;
    agents_of(reply)
        .into_iter()
        .find(|a| a.name == agent)
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentsStatus {
    pub items: Vec<AgentStatusView>,
}

/// Every agent's live state.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/agents-status", tag = "contact-centre",
    params(("tenant" = String, Path)),
    responses((status = 200, body = AgentsStatus), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn agents_status(
    State(state): State<ApiState>,
    who: Principal,
    Path(tenant): Path<String>,
) -> Result<Json<AgentsStatus>, ApiError> {
    who.require(&tenant, STAFF)?;
    state.tenant_exists(&who, &tenant).await?;
    let reply = state
        .ask_acd(&tenant, AcdOp::Agents { agent: None })
        .await?;
    Ok(Json(AgentsStatus {
        items: agents_of(reply),
    }))
}

/// One queue's live state: callers waiting in order, agents by state, wait estimate.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/queues/{queue}/status", tag = "contact-centre",
    params(("tenant" = String, Path), ("queue" = String, Path)),
    responses((status = 200, body = QueueStatusView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn queue_status(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, queue)): Path<(String, String)>,
) -> Result<Json<QueueStatusView>, ApiError> {
    who.require(&tenant, EVERYONE)?;
    let reply = state
        .ask_acd(
            &tenant,
            AcdOp::Queues {
                queue: Some(queue.clone()),
            },
        )
        .await?;
    queues_of(reply)
        .into_iter()
        .find(|q| q.name == queue)
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueuesStatus {
    pub items: Vec<QueueStatusView>,
}

/// Every queue's live state (a wallboard).
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/queues-status", tag = "contact-centre",
    params(("tenant" = String, Path)),
    responses((status = 200, body = QueuesStatus), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn queues_status(
    State(state): State<ApiState>,
    who: Principal,
    Path(tenant): Path<String>,
) -> Result<Json<QueuesStatus>, ApiError> {
    who.require(&tenant, EVERYONE)?;
    state.tenant_exists(&who, &tenant).await?;
    let reply = state
        .ask_acd(&tenant, AcdOp::Queues { queue: None })
        .await?;
    Ok(Json(QueuesStatus {
        items: queues_of(reply),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveCaller {
    /// The queue (of this tenant) the caller moves to, keeping its original wait.
    pub queue: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallerPriority {
    /// Higher is served first; −1000–1000.
    pub priority: i32,
}

/// Supervisor: move a waiting caller to another queue.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/queue-callers/{contact}/move", tag = "contact-centre",
    params(("tenant" = String, Path), ("contact" = u64, Path)), request_body = MoveCaller,
    responses((status = 200, body = Done), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
async fn move_caller(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, contact)): Path<(String, String)>,
    Body(req): Body<MoveCaller>,
) -> Result<Json<Done>, ApiError> {
    who.require(&tenant, STAFF)?;
    let contact = contact_id(&contact)?;
    super::check_slug("queue", &req.queue, 64)?;
    state
        .ask_acd(
            &tenant,
            AcdOp::MoveCaller {
                contact,
                queue: req.queue.clone(),
            },
        )
        .await?;
    state
        .audit(
            &who,
            Some(&tenant),
            "move",
            "queue_caller",
            &contact.to_string(),
            serde_json::json!({"queue": req.queue}),
        )
        .await?;
    Ok(Json(Done { done: true }))
}

/// Supervisor: change a waiting caller's priority.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/queue-callers/{contact}/priority", tag = "contact-centre",
    params(("tenant" = String, Path), ("contact" = u64, Path)), request_body = CallerPriority,
    responses((status = 200, body = Done), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
async fn set_caller_priority(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, contact)): Path<(String, String)>,
    Body(req): Body<CallerPriority>,
) -> Result<Json<Done>, ApiError> {
    who.require(&tenant, STAFF)?;
    let contact = contact_id(&contact)?;
    if !(-1000..=1000).contains(&req.priority) {
        return Err(ApiError::invalid("priority", "priority must be −1000–1000"));
    }
    state
        .ask_acd(
            &tenant,
            AcdOp::SetPriority {
                contact,
                priority: req.priority,
            },
        )
        .await?;
    state
        .audit(
            &who,
            Some(&tenant),
            "priority",
            "queue_caller",
            &contact.to_string(),
            serde_json::json!({"priority": req.priority}),
        )
        .await?;
    Ok(Json(Done { done: true }))
}

/// A contact id from the path: 404 (not 400) for anything that is not one, as for any unknown
/// object.
fn contact_id(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| ApiError::not_found())
}

// ---------- the event log ----------

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct QueueEventQuery {
    pub limit: Option<i64>,
    pub offset: Option<i64>,
    /// `at` (oldest first) or `-at` (default, newest first).
    pub sort: Option<String>,
    /// Events at or after this Unix time in milliseconds.
    pub from_ms: Option<i64>,
    /// Events before this Unix time in milliseconds.
    pub to_ms: Option<i64>,
    pub queue: Option<String>,
    pub agent: Option<String>,
    /// One kind (`enter`, `connect`, `abandon`, `offer`, `agent_state`, …).
    pub kind: Option<String>,
}

/// The tenant's queue event log.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/queue-events", tag = "contact-centre",
    params(("tenant" = String, Path), QueueEventQuery),
    responses((status = 200, body = inline(Listed<QueueEventRow>)), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_queue_events(
    State(state): State<ApiState>,
    who: Principal,
    Path(tenant): Path<String>,
    Params(q): Params<QueueEventQuery>,
) -> Result<Json<Listed<QueueEventRow>>, ApiError> {
    who.require(&tenant, STAFF)?;
    let list = ListParams {
        limit: q.limit,
        offset: q.offset,
        sort: Some(q.sort.clone().unwrap_or_else(|| "-at".into())),
    };
    let page = list.page(&[("at", "at_ms")])?;
    if let (Some(from), Some(to)) = (q.from_ms, q.to_ms) {
        if to < from {
            return Err(ApiError::invalid("to_ms", "to_ms is before from_ms"));
        }
    }
    for (field, v) in [("queue", &q.queue), ("agent", &q.agent)] {
        if let Some(v) = v {
            super::check_len(field, v, 1, 64)?;
        }
    }
    if let Some(k) = &q.kind {
        if !EVENT_KINDS.contains(&k.as_str()) {
            return Err(ApiError::invalid(
                "kind",
                format!("kind is one of {}", EVENT_KINDS.join(", ")),
            ));
        }
    }
    state.tenant_exists(&who, &tenant).await?;
    let filter = QueueEventFilter {
        from_ms: q.from_ms,
        to_ms: q.to_ms,
        queue: q.queue,
        agent: q.agent,
        kind: q.kind,
    };
    Ok(Json(
        state
            .storage
            .list_queue_events(&tenant, &filter, &page)
            .await?,
    ))
}

// ---------- statistics ----------

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// Start, Unix ms (default: 24 hours before `to`); rounded down to an interval boundary.
    pub from: Option<i64>,
    /// End, Unix ms, exclusive (default: now). At most 31 days after `from`.
    pub to: Option<i64>,
    /// Interval length in seconds: 60–86400, a multiple of 60 (default 900).
    pub interval: Option<i64>,
    /// Service-level formula: `default` (answered within T ÷ (answered + abandoned after T)),
    /// `amazon-connect`, `asterisk`, `asterisk2` (see METRICS.md).
    pub sl: Option<String>,
    /// Abandons quicker than this many seconds are short abandons (default 5).
    pub short_abandon_s: Option<i64>,
    /// Leave short abandons out of abandoned, service level and abandonment rate.
    pub exclude_short_abandons: Option<bool>,
}

/// Contact-centre figures of one period (METRICS.md). Averages and rates are null where their
/// denominator is zero.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Figures {
    pub offered: u64,
    pub answered: u64,
    pub answered_within_sl: u64,
    pub abandoned: u64,
    pub short_abandoned: u64,
    pub callbacks_requested: u64,
    pub exit_timeout: u64,
    pub exit_full: u64,
    pub exit_empty: u64,
    pub exit_key: u64,
    pub transferred: u64,
    pub ring_no_answer: u64,
    /// Contacts whose handling (talk + wrap-up) ended in the period.
    pub handled: u64,
    pub service_level_pct: Option<f64>,
    pub asa_s: Option<f64>,
    /// Talk + after-contact work, per handled contact.
    pub aht_s: Option<f64>,
    pub acw_s: Option<f64>,
    pub abandonment_rate_pct: Option<f64>,
    pub avg_abandon_s: Option<f64>,
    /// Longest wait of a contact answered, abandoned or timed out in the period.
    pub longest_wait_s: f64,
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct IntervalFigures {
    pub start_ms: i64,
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct QueueStats {
    pub queue: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub interval_s: i64,
    /// The queue's service-level threshold T the figures use.
    pub service_level_s: i64,
    pub sl: String,
    pub totals: Figures,
    /// Every interval of the period, oldest first (empty ones included).
    pub intervals: Vec<IntervalFigures>,
}

/// Per-interval statistics of one queue, computed from the stored event log.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/queues/{queue}/stats", tag = "contact-centre",
    params(("tenant" = String, Path), ("queue" = String, Path), StatsQuery),
    responses((status = 200, body = QueueStats), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn queue_stats(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, queue)): Path<(String, String)>,
    Params(q): Params<StatsQuery>,
) -> Result<Json<QueueStats>, ApiError> {
    who.require(&tenant, STAFF)?;
    let interval_s = q.interval.unwrap_or(900);
    if !(60..=86_400).contains(&interval_s) || interval_s % 60 != 0 {
        return Err(ApiError::invalid(
            "interval",
            "interval is 60–86400 seconds, a multiple of 60",
        ));
    }
    let interval_ms = interval_s * 1000;
    // Unix milliseconds up to the year 9999; checked before any arithmetic on them.
    const LATEST: i64 = 253_402_300_799_999;
    let to = q.to.unwrap_or_else(now_ms);
    if !(0..=LATEST).contains(&to) {
        return Err(ApiError::invalid("to", "to is Unix milliseconds"));
    }
    let from = q.from.unwrap_or(to.saturating_sub(86_400_000).max(0));
    if !(0..=LATEST).contains(&from) {
        return Err(ApiError::invalid("from", "from is Unix milliseconds"));
    }
    if to <= from {
        return Err(ApiError::invalid("to", "to must be after from"));
    }
    if to - from > 31 * 86_400_000 {
        return Err(ApiError::invalid("to", "at most 31 days at once"));
    }
    let from = from - from % interval_ms;
    if (to - from) / interval_ms >= 3000 {
        return Err(ApiError::invalid(
            "interval",
            "at most 3000 intervals at once: choose a longer interval or a shorter period",
        ));
    }
    let variant = match q.sl.as_deref().unwrap_or("default") {
        "default" => tandem_acd::stats::SlVariant::Default,
        "amazon-connect" => tandem_acd::stats::SlVariant::AmazonConnect,
        "asterisk" => tandem_acd::stats::SlVariant::AsteriskSl,
        "asterisk2" => tandem_acd::stats::SlVariant::AsteriskSl2,
        _ => {
            return Err(ApiError::invalid(
                "sl",
                "sl is default, amazon-connect, asterisk or asterisk2",
            ))
        }
    };
    let short_abandon_s = q.short_abandon_s.unwrap_or(5);
    if !(0..=3600).contains(&short_abandon_s) {
        return Err(ApiError::invalid(
            "short_abandon_s",
            "short_abandon_s must be 0–3600",
        ));
    }
    let stored = state.storage.queue(&tenant, &queue).await?;
    // Events before `from` are read too: a handled contact's figures land when its wrap-up
    // ends, which needs the call's completion and the agent's state before it.
    let events = state
        .storage
        .queue_stats_events(&tenant, &queue, (from - STATS_LOOKBACK_MS).max(0), to)
        .await?;
    let cfg = tandem_acd::stats::StatsConfig {
        interval_ms: interval_ms as u64,
        short_abandon_ms: short_abandon_s as u64 * 1000,
        exclude_short_abandons: q.exclude_short_abandons.unwrap_or(false),
        default_sl_ms: stored.service_level_s.max(0) as u64 * 1000,
    };
    let (totals, intervals) = stats::compute(cfg, &queue, &events, from, to, variant);
    Ok(Json(QueueStats {
        queue,
        from_ms: from,
        to_ms: to,
        interval_s,
        service_level_s: stored.service_level_s,
        sl: q.sl.unwrap_or_else(|| "default".into()),
        totals,
        intervals,
    }))
}

/// How far before a period's start the statistics read (a call plus its wrap-up).
const STATS_LOOKBACK_MS: i64 = 4 * 3_600_000;

/// Stored events back into `tandem_acd`'s outputs, so the one implementation of METRICS.md
/// (`tandem_acd::stats`) computes the API's figures too.
pub mod stats {
    use super::{Figures, IntervalFigures};
    use crate::storage::QueueEventRow;
    use std::collections::HashMap;
    use tandem_acd::ids::{AgentId, ContactId, QueueId, ReasonCode, TenantId};
    use tandem_acd::io::{EventKind, Output, QueueEvent};
    use tandem_acd::state::AgentState;
    use tandem_acd::stats::{Counters, Scope, SlVariant, Stats, StatsConfig};

    /// Names to the numeric ids `Stats` keys by (local to one computation).
    #[derive(Default)]
    struct Ids(HashMap<String, u64>);

    impl Ids {
        fn of(&mut self, name: &str) -> u64 {
            let next = self.0.len() as u64 + 1;
            *self.0.entry(name.to_string()).or_insert(next)
        }
    }

    fn state_of(name: &str) -> Option<AgentState> {
        Some(match name {
            "logged-out" => AgentState::LoggedOut,
            "available" => AgentState::Available,
            "break" => AgentState::Break(ReasonCode(0)),
            "reserved" => AgentState::Reserved,
            "ringing" => AgentState::Ringing,
            "on-call" => AgentState::OnCall,
            "wrap-up" => AgentState::WrapUp,
            _ => return None,
        })
    }

    /// One stored event as the ACD output it came from; None for kinds statistics ignore.
    fn output(e: &QueueEventRow, queues: &mut Ids, agents: &mut Ids) -> Option<Output> {
        let d = &e.detail;
        let ms = |k: &str| d.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        let to_queue = |queues: &mut Ids| {
            d.get("to")
                .and_then(|v| v.as_str())
                .map(|q| QueueId(queues.of(q)))
        };
        let at_ms = e.at_ms.max(0) as u64;
        let tenant = TenantId(1);
        let agent = e.agent.as_deref().map(|a| AgentId(agents.of(a)));
        if e.kind == "agent_state" {
            let from = state_of(d.get("from")?.as_str()?)?;
            let to = state_of(d.get("to")?.as_str()?)?;
            return Some(Output::AgentStateChanged {
                agent: agent?,
                tenant,
                from,
                to,
                at_ms,
            });
        }
        let kind = match e.kind.as_str() {
            "enter" => EventKind::Enter {
                position: ms("position") as u32,
                ewt_ms: ms("ewt_ms"),
                resumed_from: d
                    .get("resumed_from")
                    .and_then(|v| v.as_u64())
                    .map(ContactId),
            },
            "connect" => EventKind::Connect {
                wait_ms: ms("wait_ms"),
                ring_ms: ms("ring_ms"),
                callback: d.get("callback").and_then(|v| v.as_bool()).unwrap_or(false),
            },
            "complete_caller" => EventKind::CompleteCaller {
                wait_ms: ms("wait_ms"),
                talk_ms: ms("talk_ms"),
            },
            "complete_agent" => EventKind::CompleteAgent {
                wait_ms: ms("wait_ms"),
                talk_ms: ms("talk_ms"),
            },
            "abandon" => EventKind::Abandon {
                wait_ms: ms("wait_ms"),
            },
            "transfer" => EventKind::Transfer {
                to: to_queue(queues).unwrap_or(QueueId(0)),
                wait_ms: ms("wait_ms"),
                talk_ms: ms("talk_ms"),
            },
            "callback_requested" => EventKind::CallbackRequested {
                wait_ms: ms("wait_ms"),
            },
            "exit_timeout" => EventKind::ExitTimeout {
                wait_ms: ms("wait_ms"),
                to: to_queue(queues),
            },
            "exit_key" => EventKind::ExitKey {
                wait_ms: ms("wait_ms"),
            },
            "exit_empty" => EventKind::ExitEmpty {
                wait_ms: ms("wait_ms"),
                to: to_queue(queues),
            },
            "exit_full" => EventKind::ExitFull {
                to: to_queue(queues),
            },
            "ring_no_answer" => EventKind::RingNoAnswer {
                ring_ms: ms("ring_ms"),
            },
            _ => return None,
        };
        Some(Output::Event(QueueEvent {
            at_ms,
            tenant,
            queue: e.queue.as_deref().map(|q| QueueId(queues.of(q))),
            contact: e.contact.map(|c| ContactId(c as u64)),
            agent,
            kind,
        }))
    }

    fn add(sum: &mut Counters, c: &Counters) {
        sum.offered += c.offered;
        sum.answered += c.answered;
        sum.answered_within += c.answered_within;
        sum.answered_within_direct += c.answered_within_direct;
        sum.abandoned += c.abandoned;
        sum.short_abandoned += c.short_abandoned;
        sum.abandoned_within += c.abandoned_within;
        sum.abandoned_after += c.abandoned_after;
        sum.callbacks_requested += c.callbacks_requested;
        sum.callbacks_within += c.callbacks_within;
        sum.exit_timeout += c.exit_timeout;
        sum.exit_key += c.exit_key;
        sum.exit_empty += c.exit_empty;
        sum.exit_full += c.exit_full;
        sum.transferred += c.transferred;
        sum.ring_no_answer += c.ring_no_answer;
        sum.answer_wait_ms += c.answer_wait_ms;
        sum.abandon_wait_ms += c.abandon_wait_ms;
        sum.max_wait_ms = sum.max_wait_ms.max(c.max_wait_ms);
        sum.handled += c.handled;
        sum.talk_ms += c.talk_ms;
        sum.acw_ms += c.acw_ms;
        sum.busy_ms += c.busy_ms;
        sum.idle_ms += c.idle_ms;
    }

    fn figures(c: &Counters, variant: SlVariant) -> Figures {
        let s = |ms: Option<f64>| ms.map(|v| v / 1000.0);
        Figures {
            offered: c.offered,
            answered: c.answered,
            answered_within_sl: c.answered_within,
            abandoned: c.abandoned,
            short_abandoned: c.short_abandoned,
            callbacks_requested: c.callbacks_requested,
            exit_timeout: c.exit_timeout,
            exit_full: c.exit_full,
            exit_empty: c.exit_empty,
            exit_key: c.exit_key,
            transferred: c.transferred,
            ring_no_answer: c.ring_no_answer,
            handled: c.handled,
            service_level_pct: c.service_level(variant),
            asa_s: s(c.asa_ms()),
            aht_s: s(c.aht_ms()),
            acw_s: s(c.acw_avg_ms()),
            abandonment_rate_pct: c.abandonment_rate(),
            avg_abandon_s: s(c.avg_abandon_ms()),
            longest_wait_s: c.max_wait_ms as f64 / 1000.0,
        }
    }

    /// The figures of `queue` over [from, to) (from on an interval boundary), in total and per
    /// interval, from its events in emission order (earlier ones included for context).
    pub fn compute(
        cfg: StatsConfig,
        queue: &str,
        events: &[QueueEventRow],
        from: i64,
        to: i64,
        variant: SlVariant,
    ) -> (Figures, Vec<IntervalFigures>) {
        let mut queues = Ids::default();
        let mut agents = Ids::default();
        let id = QueueId(queues.of(queue));
        let mut stats = Stats::new(cfg, &[]);
        stats.set_threshold(id, cfg.default_sl_ms);
        for e in events {
            if let Some(out) = output(e, &mut queues, &mut agents) {
                stats.observe(&out);
            }
        }
        let step = cfg.interval_ms.max(1) as i64;
        let mut total = Counters::default();
        let mut intervals = Vec::new();
        let mut start = from;
        while start < to {
            let c = stats.interval(start as u64, Scope::Queue(id));
            add(&mut total, &c);
            intervals.push(IntervalFigures {
                start_ms: start,
                figures: figures(&c, variant),
            });
            start += step;
        }
        (figures(&total, variant), intervals)
    }
}
