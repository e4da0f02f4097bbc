//! Call records (CDRs) with search, and the audit log.

use super::{ApiError, ApiState, ErrorBody, ListParams, Params, Principal, REVIEWERS};
use crate::storage::{AuditEntry, CallFilter, CallRecordRow, Listed};
use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_calls))
        .routes(routes!(get_call))
        .routes(routes!(tenant_audit))
        .routes(routes!(system_audit))
}

#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CallQuery {
    pub limit: Option<i64>,
    pub offset: Option<i64>,
    /// `started`, `ended` or `duration`, `-` prefix for descending (default `-started`).
    pub sort: Option<String>,
    /// Calls started at or after this Unix time in milliseconds.
    pub from_ms: Option<i64>,
    /// Calls started before this Unix time in milliseconds.
    pub to_ms: Option<i64>,
    /// Caller or dialled number, exactly.
    pub number: Option<String>,
    /// `inbound`, `outbound` or `internal`.
    pub direction: Option<String>,
    /// `answered`, `busy`, `no_answer`, `cancelled`, `failed` or `rejected`.
    pub disposition: Option<String>,
}

const DIRECTIONS: [&str; 3] = ["inbound", "outbound", "internal"];
const DISPOSITIONS: [&str; 6] = [
    "answered",
    "busy",
    "no_answer",
    "cancelled",
    "failed",
    "rejected",
];

/// Search the tenant's call records.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/calls", tag = "calls",
    params(("tenant" = String, Path), CallQuery),
    responses((status = 200, body = inline(Listed<CallRecordRow>)), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_calls(
    State(state): State<ApiState>,
    who: Principal,
    Path(tenant): Path<String>,
    Params(q): Params<CallQuery>,
) -> Result<Json<Listed<CallRecordRow>>, ApiError> {
    who.require(&tenant, REVIEWERS)?;
    let list = ListParams {
        limit: q.limit,
        offset: q.offset,
        sort: Some(q.sort.clone().unwrap_or_else(|| "-started".into())),
    };
    let page = list.page(&[
        ("started", "started_ms"),
        ("ended", "ended_ms"),
        ("duration", "duration_ms"),
    ])?;
    if let (Some(from), Some(to)) = (q.from_ms, q.to_ms) {
        if to < from {
            return Err(ApiError::invalid("to_ms", "to_ms is before from_ms"));
        }
    }
    if let Some(n) = &q.number {
        super::check_len("number", n, 1, 64)?;
    }
    if q.direction
        .as_deref()
        .is_some_and(|d| !DIRECTIONS.contains(&d))
    {
        return Err(ApiError::invalid(
            "direction",
            "direction is inbound, outbound or internal",
        ));
    }
    if q.disposition
        .as_deref()
        .is_some_and(|d| !DISPOSITIONS.contains(&d))
    {
        return Err(ApiError::invalid(
            "disposition",
            format!("disposition is one of {}", DISPOSITIONS.join(", ")),
        ));
    }
    state.tenant_exists(&who, &tenant).await?;
    let filter = CallFilter {
        from_ms: q.from_ms,
        to_ms: q.to_ms,
        number: q.number,
        direction: q.direction,
        disposition: q.disposition,
    };
    Ok(Json(
        state
            .storage
            .list_call_records(&tenant, &filter, &page)
            .await?,
    ))
}

/// One call record.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/calls/{id}", tag = "calls",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = CallRecordRow), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_call(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Json<CallRecordRow>, ApiError> {
    who.require(&tenant, REVIEWERS)?;
    Ok(Json(state.storage.call_record(&tenant, &id).await?))
}

/// The tenant's audit log: who changed what, when, from where (tenant administrators).
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/audit", tag = "audit",
    params(("tenant" = String, Path), ListParams),
    responses((status = 200, body = inline(Listed<AuditEntry>)), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn tenant_audit(
    State(state): State<ApiState>,
    who: Principal,
    Path(tenant): Path<String>,
    Params(q): Params<ListParams>,
) -> Result<Json<Listed<AuditEntry>>, ApiError> {
    who.require(&tenant, super::ADMINS)?;
    let page = ListParams {
        sort: Some(q.sort.clone().unwrap_or_else(|| "-at".into())),
        ..q
    }
    .page(&[("at", "at_ms")])?;
    state.tenant_exists(&who, &tenant).await?;
    Ok(Json(state.storage.list_audit(Some(&tenant), &page).await?))
}

/// The whole audit log across tenants (system administrators).
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(ListParams),
    responses((status = 200, body = inline(Listed<AuditEntry>)), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn system_audit(
    State(state): State<ApiState>,
    who: Principal,
    Params(q): Params<ListParams>,
) -> Result<Json<Listed<AuditEntry>>, ApiError> {
    if !who.is_system_admin() {
        return Err(ApiError::forbidden());
    }
    let page = ListParams {
        sort: Some(q.sort.clone().unwrap_or_else(|| "-at".into())),
        ..q
    }
    .page(&[("at", "at_ms")])?;
    Ok(Json(state.storage.list_audit(None, &page).await?))
}
