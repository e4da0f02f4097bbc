//! The tenant's calls in progress, as the SIP engine has them (asked through
//! `ApiState::ask_acd`; the engine's side is `sip/live_calls.rs`). `/calls` holds the records
//! of finished calls; these live under `/live-calls`, with the same ids: a supervisor picks the
//! call to monitor here, and the call's record has that id once it ends.

use super::{ApiError, ApiState, ErrorBody, Principal, STAFF};
use crate::sip::queues::{AcdOp, AcdReply, LiveCallView};
use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_live_calls))
        .routes(routes!(get_live_call))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LiveCalls {
    /// In the order the calls started.
    pub items: Vec<LiveCallView>,
}

/// Supervisor: the tenant's calls in progress, with their state, parties, queue and agent,
/// each leg's codec and media quality so far, and the supervisor monitoring each.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/live-calls", tag = "calls",
    params(("tenant" = String, Path)),
    responses((status = 200, body = LiveCalls), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn list_live_calls(
    State(state): State<ApiState>,
    who: Principal,
    Path(tenant): Path<String>,
) -> Result<Json<LiveCalls>, ApiError> {
    who.require(&tenant, STAFF)?;
    state.tenant_exists(&who, &tenant).await?;
    let items = ask(&state, &tenant, None).await?;
    Ok(Json(LiveCalls { items }))
}

/// Supervisor: one call in progress, by its id (a queued call also by its contact id).
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/live-calls/{call}", tag = "calls",
    params(("tenant" = String, Path), ("call" = u64, Path)),
    responses((status = 200, body = LiveCallView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn get_live_call(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, call)): Path<(String, String)>,
) -> Result<Json<LiveCallView>, ApiError> {
    who.require(&tenant, STAFF)?;
    let call = super::monitor::call_id(&call)?;
    let mut calls = ask(&state, &tenant, Some(call)).await?;
    calls.pop().map(Json).ok_or_else(ApiError::not_found)
}

async fn ask(
    state: &ApiState,
    tenant: &str,
    call: Option<u64>,
) -> Result<Vec<LiveCallView>, ApiError> {
    match state.ask_acd(tenant, AcdOp::Calls { call }).await? {
        AcdReply::Calls(calls) => Ok(calls),
        _ => Err(ApiError::unexpected_engine_answer()),
    }
}
