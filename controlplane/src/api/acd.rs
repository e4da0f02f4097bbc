//! The running contact centre: agents' actions and live status (asked of the SIP engine's ACD
//! through `ApiState::ask_acd`), supervisors' moves of waiting callers, and the stored queue
//! event log (statistics computed from it are in `acd_stats.rs`).

use super::{ApiError, ApiState, Body, ErrorBody, ListParams, Params, Principal, EVERYONE, STAFF};
use crate::sip::queues::{AcdOp, AcdReply, AgentAction, AgentStatusView, QueueStatusView};
use crate::storage::{Listed, QueueEventFilter, QueueEventRow};
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
