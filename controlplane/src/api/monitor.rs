//! Supervisor monitoring of a live call: ring a supervisor's phone and let it listen, whisper
//! to the agent or barge in (asked of the SIP engine through `ApiState::ask_acd`; the engine's
//! side is `sip/monitor.rs`). The call is named by the id the event stream gives it
//! (`call.offered`, `call.answered`) or, for a queued call, by its contact id (`acd.*`).

use super::{ApiError, ApiState, Body, ErrorBody, Principal, STAFF};
use crate::sip::queues::{AcdOp, AcdReply, MonitorOp, MonitorView, SupervisorMode};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(start_monitor, change_monitor, stop_monitor))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartMonitor {
    /// The SIP user (of this tenant, registered) whose phone is rung as the supervisor.
    pub supervisor: String,
    pub mode: SupervisorMode,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeMonitor {
    pub mode: SupervisorMode,
}

/// Supervisor: ring a supervisor's phone to monitor an answered call; once it answers it hears
/// the caller and the agent, and in `whisper` the agent hears it, in `barge` both do. Answered
/// at once with the monitor `ringing`; `monitor.answered` / `monitor.ended` events follow.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/calls/{call}/monitor", tag = "calls",
    params(("tenant" = String, Path), ("call" = u64, Path)), request_body = StartMonitor,
    responses((status = 202, body = MonitorView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
async fn start_monitor(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, call)): Path<(String, String)>,
    Body(req): Body<StartMonitor>,
) -> Result<(StatusCode, Json<MonitorView>), ApiError> {
    who.require(&tenant, STAFF)?;
    let call = call_id(&call)?;
    super::check_slug("supervisor", &req.supervisor, 64)?;
    let op = MonitorOp::Start {
        supervisor: req.supervisor.clone(),
        mode: req.mode,
    };
    let view = ask(&state, &tenant, call, op).await?;
    let detail = serde_json::json!({"supervisor": req.supervisor, "mode": req.mode.as_str()});
    state
        .audit(
            &who,
            Some(&tenant),
            "monitor",
            "call",
            &call.to_string(),
            detail,
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// Supervisor: change a monitor's mode, live.
#[utoipa::path(patch, path = "/api/v1/tenants/{tenant}/calls/{call}/monitor", tag = "calls",
    params(("tenant" = String, Path), ("call" = u64, Path)), request_body = ChangeMonitor,
    responses((status = 200, body = MonitorView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn change_monitor(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, call)): Path<(String, String)>,
    Body(req): Body<ChangeMonitor>,
) -> Result<Json<MonitorView>, ApiError> {
    who.require(&tenant, STAFF)?;
    let call = call_id(&call)?;
    let view = ask(&state, &tenant, call, MonitorOp::SetMode(req.mode)).await?;
    let detail = serde_json::json!({"mode": req.mode.as_str()});
    state
        .audit(
            &who,
            Some(&tenant),
            "monitor_mode",
            "call",
            &call.to_string(),
            detail,
        )
        .await?;
    Ok(Json(view))
}

/// Supervisor: end a monitor (the supervisor's phone is hung up; the call goes on).
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/calls/{call}/monitor", tag = "calls",
    params(("tenant" = String, Path), ("call" = u64, Path)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn stop_monitor(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, call)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    who.require(&tenant, STAFF)?;
    let call = call_id(&call)?;
    ask(&state, &tenant, call, MonitorOp::Stop).await?;
    let detail = serde_json::json!({});
    state
        .audit(
            &who,
            Some(&tenant),
            "monitor_stop",
            "call",
            &call.to_string(),
            detail,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn ask(
    state: &ApiState,
    tenant: &str,
    call: u64,
    op: MonitorOp,
) -> Result<MonitorView, ApiError> {
    match state.ask_acd(tenant, AcdOp::Monitor { call, op }).await? {
        AcdReply::Monitor(view) => Ok(view),
        _ => Err(ApiError::unexpected_engine_answer()),
    }
}

/// A call id from the path: 404 (not 400) for anything that is not one, as for any unknown
/// object.
pub(super) fn call_id(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| ApiError::not_found())
}
