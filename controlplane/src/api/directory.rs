//! The SIP directory of a tenant: accounts (what the registrar checks), trunks and routes.
//! Every change is pushed to the running SIP engine at once.

use super::{
    check_len, check_slug, check_version, with_etag, ApiError, ApiState, Body, ErrorBody,
    ListParams, Params, Principal, ADMINS, STAFF,
};
use crate::sip::config::{parse_target, RouteTarget};
use crate::sip::digest::Algorithm;
use crate::storage::{new_id, now_ms, Listed, Route, SipAccount, Trunk};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_accounts, create_account))
        .routes(routes!(get_account, update_account, delete_account))
        .routes(routes!(list_trunks, create_trunk))
        .routes(routes!(get_trunk, update_trunk, delete_trunk))
        .routes(routes!(list_routes, create_route))
        .routes(routes!(get_route, update_route, delete_route))
}

/// HA1 values for a SIP account in its tenant's realm (RFC 7616 / RFC 8760).
pub fn ha1s(username: &str, realm: &str, password: &str) -> (String, String) {
    let input = format!("{username}:{realm}:{password}");
    (Algorithm::Md5.hash(&input), Algorithm::Sha256.hash(&input))
}

// ---------- SIP accounts ----------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    /// SIP user name (a-z, 0-9, '-', '_', '.'; 1–64); unique in the tenant.
    pub username: String,
    pub display_name: Option<String>,
    /// 8–128 characters; kept only as digest HA1s.
    pub password: String,
    /// How keys pressed on the other leg reach the account's phone: `rfc4733` (default: RTP
    /// events), `info` (SIP INFO), `auto` (INFO when its SDP lacks telephone-event).
    pub dtmf: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountPatch {
    pub display_name: Option<String>,
    pub password: Option<String>,
    pub dtmf: Option<String>,
}

/// The tenant's SIP accounts.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/sip-accounts", tag = "sip",
    params(("tenant" = String, Path), ListParams),
    responses((status = 200, body = inline(Listed<SipAccount>)), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_accounts(
    State(state): State<ApiState>,
    who: Principal,
    Path(tenant): Path<String>,
    Params(q): Params<ListParams>,
) -> Result<Json<Listed<SipAccount>>, ApiError> {
    who.require(&tenant, STAFF)?;
    let page = q.page(&[
        ("username", "username"),
        ("created", "created_ms"),
        ("updated", "updated_ms"),
    ])?;
    state.tenant_exists(&who, &tenant).await?;
    Ok(Json(state.storage.list_accounts(&tenant, &page).await?))
}

/// Add a SIP account: a phone may then REGISTER as `username@<tenant domain>`.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/sip-accounts", tag = "sip",
    params(("tenant" = String, Path)), request_body = NewAccount,
    responses((status = 201, body = SipAccount), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_account(
    State(state): State<ApiState>,
    who: Principal,
    Path(tenant): Path<String>,
    Body(req): Body<NewAccount>,
) -> Result<Response, ApiError> {
    who.require(&tenant, ADMINS)?;
    let t = state.storage.tenant(&tenant).await?;
    check_slug("username", &req.username, 64)?;
    check_len("password", &req.password, 8, 128)?;
    let display_name = req
        .display_name
        .clone()
        .unwrap_or_else(|| req.username.clone());
    check_len("display_name", &display_name, 1, 200)?;
    let dtmf = req.dtmf.unwrap_or_else(|| "rfc4733".into());
    check_dtmf(&dtmf)?;
    let (ha1_md5, ha1_sha256) = ha1s(&req.username, &t.domain, &req.password);
    let now = now_ms();
    let account = SipAccount {
        id: new_id(),
        tenant: tenant.clone(),
        username: req.username,
        display_name,
        ha1_md5,
        ha1_sha256,
        dtmf,
        version: 1,
        created_ms: now,
        updated_ms: now,
    };
    state.storage.create_account(&account).await?;
    state
        .audit(
            &who,
            Some(&tenant),
            "create",
            "sip_account",
            &account.id,
            serde_json::json!({"username": account.username}),
        )
        .await?;
    state.account_changed(crate::sip::config::AccountChange::Upsert(account.digest()));
    Ok(with_etag(StatusCode::CREATED, account.version, &account))
}

/// One SIP account.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/sip-accounts/{id}", tag = "sip",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = SipAccount), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_account(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    who.require(&tenant, STAFF)?;
    let a = state.storage.account(&tenant, &id).await?;
    Ok(with_etag(StatusCode::OK, a.version, &a))
}

/// Change a SIP account's display name or password.
#[utoipa::path(patch, path = "/api/v1/tenants/{tenant}/sip-accounts/{id}", tag = "sip",
    params(("tenant" = String, Path), ("id" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body = AccountPatch,
    responses((status = 200, body = SipAccount), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_account(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
    Body(req): Body<AccountPatch>,
) -> Result<Response, ApiError> {
    who.require(&tenant, ADMINS)?;
    let t = state.storage.tenant(&tenant).await?;
    let mut a = state.storage.account(&tenant, &id).await?;
    check_version(&headers, a.version)?;
    if let Some(d) = req.display_name {
        check_len("display_name", &d, 1, 200)?;
        a.display_name = d;
    }
    let password_changed = req.password.is_some();
    if let Some(p) = req.password {
        check_len("password", &p, 8, 128)?;
        (a.ha1_md5, a.ha1_sha256) = ha1s(&a.username, &t.domain, &p);
    }
    if let Some(d) = req.dtmf {
        check_dtmf(&d)?;
        a.dtmf = d;
    }
    a.version += 1;
    a.updated_ms = now_ms();
    state.storage.update_account(&a).await?;
    state
        .audit(
            &who,
            Some(&tenant),
            "update",
            "sip_account",
            &a.id,
            serde_json::json!({"display_name": a.display_name, "password_changed": password_changed, "dtmf": a.dtmf}),
        )
        .await?;
    state.account_changed(crate::sip::config::AccountChange::Upsert(a.digest()));
    Ok(with_etag(StatusCode::OK, a.version, &a))
}

/// Remove a SIP account; its phones can no longer register or call. 409 while an agent uses it.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/sip-accounts/{id}", tag = "sip",
    params(("tenant" = String, Path), ("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody)))]
async fn delete_account(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    who.require(&tenant, ADMINS)?;
    let a = state.storage.account(&tenant, &id).await?;
    check_version(&headers, a.version)?;
    let agents: Vec<String> = state
        .storage
        .all_agents(&tenant)
        .await?
        .into_iter()
        .filter(|g| g.user == a.username)
        .map(|g| g.name)
        .collect();
    if !agents.is_empty() {
        return Err(crate::storage::StoreError::Conflict(format!(
            "SIP account {} still rings for agent(s) {}",
            a.username,
            agents.join(", ")
        ))
        .into());
    }
    state.storage.delete_account(&tenant, &id).await?;
    state
        .audit(
            &who,
            Some(&tenant),
            "delete",
            "sip_account",
            &id,
            serde_json::json!({"username": a.username}),
        )
        .await?;
    state.account_changed(crate::sip::config::AccountChange::Remove {
        tenant: a.tenant.clone(),
        user: a.username.clone(),
    });
    Ok(StatusCode::NO_CONTENT)
}

// ---------- trunks ----------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTrunk {
    /// a-z, 0-9, '-', '_', '.'; 1–40; unique in the tenant; routes name it as `trunk:<name>`.
    pub name: String,
    /// `ip:port` calls to this trunk are sent to.
    pub address: String,
    /// Source addresses (`ip` or `ip/prefix`) whose calls are taken as this trunk's.
    #[serde(default)]
    pub allow: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Keep a registration at the carrier (needs username and password).
    #[serde(default)]
    pub register: bool,
    /// 60–86400 (default 600).
    pub register_expires_s: Option<i64>,
    /// How keys pressed on the other leg reach the carrier: `rfc4733` (default: RTP events),
    /// `info` (SIP INFO), `auto` (INFO when its SDP lacks telephone-event).
    pub dtmf: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrunkPatch {
    pub address: Option<String>,
    pub allow: Option<Vec<String>>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub register: Option<bool>,
    pub register_expires_s: Option<i64>,
    pub dtmf: Option<String>,
}

/// The checks `POST …/trunks` runs, on a request alone (the fuzz target's entry).
pub fn check_new_trunk(req: NewTrunk) -> Result<(), ApiError> {
    check_slug("name", &req.name, 40)?;
    check_trunk(&Trunk {
        id: String::new(),
        tenant: String::new(),
        name: req.name,
        address: req.address,
        allow: req.allow,
        username: req.username,
        password: req.password,
        register: req.register,
        register_expires_s: req.register_expires_s.unwrap_or(600),
        dtmf: req.dtmf.unwrap_or_else(|| "rfc4733".into()),
        version: 1,
        created_ms: 0,
        updated_ms: 0,
    })
}

fn check_trunk(t: &Trunk) -> Result<(), ApiError> {
    if t.address.parse::<SocketAddr>().is_err() {
        return Err(ApiError::invalid(
            "address",
            "address is ip:port (DNS names are not supported yet)",
        ));
    }
    if t.allow.len() > 64 {
        return Err(ApiError::invalid("allow", "at most 64 allow entries"));
    }
    for a in &t.allow {
        let (net, bits) = match a.split_once('/') {
            Some((n, b)) => (n, Some(b)),
            None => (a.as_str(), None),
        };
        let ip: Option<IpAddr> = net.parse().ok();
        let max = match ip {
            Some(IpAddr::V4(_)) => 32,
            Some(IpAddr::V6(_)) => 128,
            None => {
                return Err(ApiError::invalid(
                    "allow",
                    format!("{a} is not an IP address or ip/prefix"),
                ))
            }
        };
        if bits.is_some_and(|b| b.parse::<u32>().map_or(true, |b| b > max)) {
            return Err(ApiError::invalid(
                "allow",
                format!("{a}: bad prefix length"),
            ));
        }
    }
    if let Some(u) = &t.username {
        check_len("username", u, 1, 128)?;
    }
    if let Some(p) = &t.password {
        check_len("password", p, 1, 128)?;
    }
    if t.register && (t.username.is_none() || t.password.is_none()) {
        return Err(ApiError::invalid(
            "register",
            "register needs username and password",
        ));
    }
    if !(60..=86400).contains(&t.register_expires_s) {
        return Err(ApiError::invalid(
            "register_expires_s",
            "register_expires_s must be 60–86400",
        ));
    }
    check_dtmf(&t.dtmf)
}

/// A trunk's or account's `dtmf`: one of the modes `sip::config::DtmfMode` knows.
fn check_dtmf(mode: &str) -> Result<(), ApiError> {
    if crate::sip::config::DtmfMode::parse(mode).is_none() {
        return Err(ApiError::invalid(
            "dtmf",
            "dtmf must be rfc4733, info or auto",
        ));
    }
    Ok(())
}

/// The tenant's trunks (passwords are never returned).
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/trunks", tag = "sip",
    params(("tenant" = String, Path), ListParams),
    responses((status = 200, body = inline(Listed<Trunk>)), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_trunks(
    State(state): State<ApiState>,
    who: Principal,
    Path(tenant): Path<String>,
    Params(q): Params<ListParams>,
) -> Result<Json<Listed<Trunk>>, ApiError> {
    who.require(&tenant, STAFF)?;
    let page = q.page(&[("name", "name"), ("created", "created_ms")])?;
    state.tenant_exists(&who, &tenant).await?;
    Ok(Json(state.storage.list_trunks(&tenant, &page).await?))
}

/// Add a trunk to a carrier.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/trunks", tag = "sip",
    params(("tenant" = String, Path)), request_body = NewTrunk,
    responses((status = 201, body = Trunk), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_trunk(
    State(state): State<ApiState>,
    who: Principal,
    Path(tenant): Path<String>,
    Body(req): Body<NewTrunk>,
) -> Result<Response, ApiError> {
    who.require(&tenant, ADMINS)?;
    state.tenant_exists(&who, &tenant).await?;
    check_slug("name", &req.name, 40)?;
    let now = now_ms();
    let trunk = Trunk {
        id: new_id(),
        tenant: tenant.clone(),
        name: req.name,
        address: req.address,
        allow: req.allow,
        username: req.username,
        password: req.password,
        register: req.register,
        register_expires_s: req.register_expires_s.unwrap_or(600),
        dtmf: req.dtmf.unwrap_or_else(|| "rfc4733".into()),
        version: 1,
        created_ms: now,
        updated_ms: now,
    };
    check_trunk(&trunk)?;
    state.storage.create_trunk(&trunk).await?;
    state
        .audit(
            &who,
            Some(&tenant),
            "create",
            "trunk",
            &trunk.id,
            serde_json::json!({"name": trunk.name, "address": trunk.address, "allow": trunk.allow}),
        )
        .await?;
    state.directory_changed().await;
    Ok(with_etag(StatusCode::CREATED, trunk.version, &trunk))
}

/// One trunk.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/trunks/{id}", tag = "sip",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = Trunk), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_trunk(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    who.require(&tenant, STAFF)?;
    let t = state.storage.trunk(&tenant, &id).await?;
    Ok(with_etag(StatusCode::OK, t.version, &t))
}

/// Change a trunk.
#[utoipa::path(patch, path = "/api/v1/tenants/{tenant}/trunks/{id}", tag = "sip",
    params(("tenant" = String, Path), ("id" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body = TrunkPatch,
    responses((status = 200, body = Trunk), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_trunk(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
    Body(req): Body<TrunkPatch>,
) -> Result<Response, ApiError> {
    who.require(&tenant, ADMINS)?;
    let mut t = state.storage.trunk(&tenant, &id).await?;
    check_version(&headers, t.version)?;
    if let Some(v) = req.address {
        t.address = v;
    }
    if let Some(v) = req.allow {
        t.allow = v;
    }
    if req.username.is_some() {
        t.username = req.username;
    }
    if req.password.is_some() {
        t.password = req.password;
    }
    if let Some(v) = req.register {
        t.register = v;
    }
    if let Some(v) = req.register_expires_s {
        t.register_expires_s = v;
    }
    if let Some(v) = req.dtmf {
        t.dtmf = v;
    }
    check_trunk(&t)?;
    t.version += 1;
    t.updated_ms = now_ms();
    state.storage.update_trunk(&t).await?;
    state
        .audit(
            &who,
            Some(&tenant),
            "update",
            "trunk",
            &t.id,
            serde_json::json!({"address": t.address, "allow": t.allow, "register": t.register}),
        )
        .await?;
    state.directory_changed().await;
    Ok(with_etag(StatusCode::OK, t.version, &t))
}

/// Remove a trunk; routes still naming it stop matching.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/trunks/{id}", tag = "sip",
    params(("tenant" = String, Path), ("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)))]
async fn delete_trunk(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    who.require(&tenant, ADMINS)?;
    let t = state.storage.trunk(&tenant, &id).await?;
    check_version(&headers, t.version)?;
    state.storage.delete_trunk(&tenant, &id).await?;
    state
        .audit(
            &who,
            Some(&tenant),
            "delete",
            "trunk",
            &id,
            serde_json::json!({"name": t.name}),
        )
        .await?;
    state.directory_changed().await;
    Ok(StatusCode::NO_CONTENT)
}

// ---------- routes ----------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRoute {
    /// Dialled user part: exact (`2000`), prefix (`44*`) or anything (`*`); unique in the tenant.
    pub pattern: String,
    /// `user:<account>`, `trunk:<trunk name>`, `queue:<queue name>` or `uri:sip:user@ip:port`.
    pub target: String,
    /// Routes are tried in ascending position (default 100).
    pub position: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoutePatch {
    pub pattern: Option<String>,
    pub target: Option<String>,
    pub position: Option<i64>,
}

async fn check_route(state: &ApiState, r: &Route) -> Result<(), ApiError> {
    check_len("pattern", &r.pattern, 1, 64)?;
    let body = r.pattern.strip_suffix('*').unwrap_or(&r.pattern);
    if !body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"+-_.".contains(&b))
    {
        return Err(ApiError::invalid(
            "pattern",
            "pattern is a user part (letters, digits, '+', '-', '_', '.') optionally ending in '*'",
        ));
    }
    if !(0..=1_000_000).contains(&r.position) {
        return Err(ApiError::invalid("position", "position must be 0–1000000"));
    }
    check_len("target", &r.target, 1, 256)?;
    match parse_target(&r.target) {
        None => Err(ApiError::invalid(
            "target",
            "target is user:<account>, trunk:<name>, queue:<name>, conference:<room> or uri:sip:user@ip:port",
        )),
        Some(RouteTarget::Uri(uri)) => {
            if crate::sip::message::SipUri::parse(&uri)
                .and_then(|u| u.socket_addr())
                .is_none()
            {
                return Err(ApiError::invalid(
                    "target",
                    "a uri: target needs an IP address host",
                ));
            }
            Ok(())
        }
        Some(RouteTarget::Trunk(name)) => {
            let page = crate::storage::Page {
                limit: 1000,
                offset: 0,
                order: "name ASC, id ASC",
            };
            let trunks = state.storage.list_trunks(&r.tenant, &page).await?;
            if !trunks.items.iter().any(|t| t.name == name) {
                return Err(ApiError::invalid(
                    "target",
                    format!("no trunk named {name} in this tenant"),
                ));
            }
            Ok(())
        }
        Some(RouteTarget::User(user)) => check_slug("target", &user, 64),
        Some(RouteTarget::Conference(room)) => check_slug("target", &room, 64),
        Some(RouteTarget::Queue(queue)) => {
            check_slug("target", &queue, 64)?;
            match state.storage.queue(&r.tenant, &queue).await {
                Ok(_) => Ok(()),
                Err(crate::storage::StoreError::NotFound) => Err(ApiError::invalid(
                    "target",
                    format!("no queue named {queue} in this tenant"),
                )),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// The tenant's routes, in the order they are tried.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/routes", tag = "sip",
    params(("tenant" = String, Path), ListParams),
    responses((status = 200, body = inline(Listed<Route>)), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_routes(
    State(state): State<ApiState>,
    who: Principal,
    Path(tenant): Path<String>,
    Params(q): Params<ListParams>,
) -> Result<Json<Listed<Route>>, ApiError> {
    who.require(&tenant, STAFF)?;
    let page = q.page(&[
        ("position", "position"),
        ("pattern", "pattern"),
        ("created", "created_ms"),
    ])?;
    state.tenant_exists(&who, &tenant).await?;
    Ok(Json(state.storage.list_routes(&tenant, &page).await?))
}

/// Add a route.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/routes", tag = "sip",
    params(("tenant" = String, Path)), request_body = NewRoute,
    responses((status = 201, body = Route), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_route(
    State(state): State<ApiState>,
    who: Principal,
    Path(tenant): Path<String>,
    Body(req): Body<NewRoute>,
) -> Result<Response, ApiError> {
    who.require(&tenant, ADMINS)?;
    state.tenant_exists(&who, &tenant).await?;
    let now = now_ms();
    let route = Route {
        id: new_id(),
        tenant: tenant.clone(),
        position: req.position.unwrap_or(100),
        pattern: req.pattern,
        target: req.target,
        version: 1,
        created_ms: now,
        updated_ms: now,
    };
    check_route(&state, &route).await?;
    state.storage.create_route(&route).await?;
    state
        .audit(
            &who,
            Some(&tenant),
            "create",
            "route",
            &route.id,
            serde_json::json!({"pattern": route.pattern, "target": route.target, "position": route.position}),
        )
        .await?;
    state.directory_changed().await;
    Ok(with_etag(StatusCode::CREATED, route.version, &route))
}

/// One route.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/routes/{id}", tag = "sip",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = Route), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_route(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    who.require(&tenant, STAFF)?;
    let r = state.storage.route(&tenant, &id).await?;
    Ok(with_etag(StatusCode::OK, r.version, &r))
}

/// Change a route.
#[utoipa::path(patch, path = "/api/v1/tenants/{tenant}/routes/{id}", tag = "sip",
    params(("tenant" = String, Path), ("id" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body = RoutePatch,
    responses((status = 200, body = Route), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_route(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
    Body(req): Body<RoutePatch>,
) -> Result<Response, ApiError> {
    who.require(&tenant, ADMINS)?;
    let mut r = state.storage.route(&tenant, &id).await?;
    check_version(&headers, r.version)?;
    if let Some(v) = req.pattern {
        r.pattern = v;
    }
    if let Some(v) = req.target {
        r.target = v;
    }
    if let Some(v) = req.position {
        r.position = v;
    }
    check_route(&state, &r).await?;
    r.version += 1;
    r.updated_ms = now_ms();
    state.storage.update_route(&r).await?;
    state
        .audit(
            &who,
            Some(&tenant),
            "update",
            "route",
            &r.id,
            serde_json::json!({"pattern": r.pattern, "target": r.target, "position": r.position}),
        )
        .await?;
    state.directory_changed().await;
    Ok(with_etag(StatusCode::OK, r.version, &r))
}

/// Remove a route.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/routes/{id}", tag = "sip",
    params(("tenant" = String, Path), ("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)))]
async fn delete_route(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    who.require(&tenant, ADMINS)?;
    let r = state.storage.route(&tenant, &id).await?;
    check_version(&headers, r.version)?;
    state.storage.delete_route(&tenant, &id).await?;
    state
        .audit(
            &who,
            Some(&tenant),
            "delete",
            "route",
            &id,
            serde_json::json!({"pattern": r.pattern}),
        )
        .await?;
    state.directory_changed().await;
    Ok(StatusCode::NO_CONTENT)
}
