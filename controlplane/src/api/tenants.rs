//! Sessions, tenants, users and API tokens.

use super::auth::{self, SessionClaims};
use super::contact_centre::nullable;
use super::{
    check_len, check_role, check_slug, check_version, with_etag, ApiError, ApiState, Body,
    ErrorBody, ListParams, Params, Principal, Source, ADMINS, EVERYONE,
};
use crate::storage::{new_id, now_ms, ApiToken, Listed, Tenant, User};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(me))
        .routes(routes!(list_tenants, create_tenant))
        .routes(routes!(get_tenant, update_tenant, delete_tenant))
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
}

/// Sessions last this long; a client logs in again after.
const SESSION_MS: i64 = 3600 * 1000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The user's tenant; absent for system administrators.
    pub tenant: Option<String>,
    pub username: String,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionResponse {
    /// Bearer token for the following requests.
    pub token: String,
    pub expires_ms: i64,
    pub user: User,
}

/// Log in with a username and password; returns a session token valid for an hour.
#[utoipa::path(post, path = "/api/v1/sessions", tag = "auth", security(()),
    request_body = LoginRequest,
    responses((status = 201, body = SessionResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "too many failed logins from this address; retry after Retry-After seconds")))]
async fn login(
    State(state): State<ApiState>,
    Source(source): Source,
    Body(req): Body<LoginRequest>,
) -> Result<Response, ApiError> {
    let login = format!("{}/{}", req.tenant.as_deref().unwrap_or(""), req.username);
    let locked_ms = state
        .login_guard
        .lock()
        .ok()
        .and_then(|g| g.locked_for_ms(&login, &source, now_ms()));
    if let Some(ms) = locked_ms {
        state.metrics.auth_failure("locked");
        let mut res = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "locked",
            "too many failed logins from this address; try again later",
        )
        .into_response();
        let retry_s = (ms + 999) / 1000;
        if let Ok(v) = axum::http::HeaderValue::from_str(&retry_s.to_string()) {
            res.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
        }
        return Ok(res);
    }
    let user = state
        .storage
        .user_by_login(req.tenant.as_deref(), &req.username)
        .await;
    let hash = match &user {
        Ok(u) => u.password_hash.clone(),
        // Same work for an unknown user, so timing does not tell which usernames exist.
        Err(_) => dummy_hash().to_string(),
    };
    let password = req.password.clone();
    let ok = tokio::task::spawn_blocking(move || auth::verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    let user = match (ok, user) {
        (true, Ok(u)) => u,
        _ => {
            if let Ok(mut g) = state.login_guard.lock() {
                g.failed(&login, &source, now_ms());
            }
            state.metrics.auth_failure("bad_password");
            return Err(ApiError::unauthenticated(
                "wrong tenant, username or password",
            ));
        }
    };
    if let Ok(mut g) = state.login_guard.lock() {
        g.succeeded(&login, &source);
    }
    let expires_ms = now_ms() + SESSION_MS;
    let token = state.sessions.issue(&SessionClaims {
        sub: user.id.clone(),
        tenant: user.tenant.clone(),
        role: user.role.clone(),
        ver: user.version,
        exp: expires_ms,
    });
    Ok((
        StatusCode::CREATED,
        Json(SessionResponse {
            token,
            expires_ms,
            user,
        }),
    )
        .into_response())
}

/// An argon2 hash of a random string, made once: login checks unknown users against it.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        let random: [u8; 16] = auth::random_bytes();
        auth::hash_password(&format!("{random:?}")).unwrap_or_default()
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub tenant: Option<String>,
    pub role: String,
    pub actor: String,
}

/// Who the presented token belongs to.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth",
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
async fn me(who: Principal) -> Json<Me> {
    Json(Me {
        tenant: who.tenant,
        role: who.role,
        actor: who.actor,
    })
}

// ---------- tenants ----------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// a-z, 0-9, '-', '_', '.'; 1–40 characters; immutable.
    pub name: String,
    /// SIP domain and digest realm; immutable.
    pub domain: String,
    pub display_name: Option<String>,
    pub max_calls: Option<i64>,
    /// Country calling code for E.164 normalisation (digits).
    pub country_code: Option<String>,
    /// Codecs the B2BUA adds to offers on this tenant's calls, so that a side without the
    /// other's codecs is transcoded (PCMU, PCMA, G722, opus; `[]`: never). Unset: the
    /// appliance's `[sip] transcode`.
    pub transcode: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    pub display_name: Option<String>,
    pub max_calls: Option<i64>,
    pub country_code: Option<String>,
    /// `null` goes back to the appliance's `[sip] transcode`.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<String>>)]
    pub transcode: Option<Option<Vec<String>>>,
}

fn check_transcode(codecs: Option<&[String]>) -> Result<(), ApiError> {
    match codecs {
        Some(list) => crate::sip::config::check_transcode("transcode", list)
            .map_err(|e| ApiError::invalid("transcode", e)),
        None => Ok(()),
    }
}

fn check_tenant_fields(
    display_name: &str,
    max_calls: Option<i64>,
    country_code: Option<&str>,
) -> Result<(), ApiError> {
    check_len("display_name", display_name, 1, 200)?;
    if max_calls.is_some_and(|m| !(0..=10_000_000).contains(&m)) {
        return Err(ApiError::invalid(
            "max_calls",
            "max_calls must be 0–10000000",
        ));
    }
    if let Some(cc) = country_code {
        if cc.is_empty() || cc.len() > 3 || !cc.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::invalid(
                "country_code",
                "country_code is 1–3 digits",
            ));
        }
    }
    Ok(())
}

fn check_domain(domain: &str) -> Result<(), ApiError> {
    check_len("domain", domain, 1, 253)?;
    if !domain
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(ApiError::invalid(
            "domain",
            "domain is a host name (letters, digits, '-', '.')",
        ));
    }
    Ok(())
}

/// Tenants (system administrators see all; anyone else only their own).
#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants", params(ListParams),
    responses((status = 200, body = inline(Listed<Tenant>)), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_tenants(
    State(state): State<ApiState>,
    who: Principal,
    Params(q): Params<ListParams>,
) -> Result<Json<Listed<Tenant>>, ApiError> {
    let page = q.page(&[("name", "name"), ("created", "created_ms")])?;
    if who.is_system_admin() {
        return Ok(Json(state.storage.list_tenants(&page).await?));
    }
    let own = match &who.tenant {
        Some(t) if page.offset == 0 => vec![state.storage.tenant(t).await?],
        _ => Vec::new(),
    };
    Ok(Json(Listed {
        items: own,
        next_offset: None,
    }))
}

/// Create a tenant (system administrators).
#[utoipa::path(post, path = "/api/v1/tenants", tag = "tenants", request_body = NewTenant,
    responses((status = 201, body = Tenant), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_tenant(
    State(state): State<ApiState>,
    who: Principal,
    Body(req): Body<NewTenant>,
) -> Result<Response, ApiError> {
    if !who.is_system_admin() {
        return Err(ApiError::forbidden());
    }
    check_slug("name", &req.name, 40)?;
    check_domain(&req.domain)?;
    let display_name = req.display_name.clone().unwrap_or_else(|| req.name.clone());
    check_tenant_fields(&display_name, req.max_calls, req.country_code.as_deref())?;
    check_transcode(req.transcode.as_deref())?;
    let now = now_ms();
    let tenant = Tenant {
        name: req.name,
        domain: req.domain.to_ascii_lowercase(),
        display_name,
        max_calls: req.max_calls,
        country_code: req.country_code,
        transcode: req.transcode,
        version: 1,
        created_ms: now,
        updated_ms: now,
    };
    state.storage.create_tenant(&tenant).await?;
    state
        .audit(
            &who,
            Some(&tenant.name),
            "create",
            "tenant",
            &tenant.name,
            serde_json::json!({"domain": tenant.domain}),
        )
        .await?;
    state.directory_changed().await;
    Ok(with_etag(StatusCode::CREATED, tenant.version, &tenant))
}

/// One tenant.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}", tag = "tenants",
    params(("tenant" = String, Path)),
    responses((status = 200, body = Tenant), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_tenant(
    State(state): State<ApiState>,
    who: Principal,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    who.require(&tenant, EVERYONE)?;
    let t = state.storage.tenant(&tenant).await?;
    Ok(with_etag(StatusCode::OK, t.version, &t))
}

/// Change a tenant's display name, call limit, country code or transcode list (system
/// administrators).
#[utoipa::path(patch, path = "/api/v1/tenants/{tenant}", tag = "tenants",
    params(("tenant" = String, Path), ("If-Match" = Option<String>, Header, description = "version the change is based on")),
    request_body = TenantPatch,
    responses((status = 200, body = Tenant), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_tenant(
    State(state): State<ApiState>,
    who: Principal,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Body(req): Body<TenantPatch>,
) -> Result<Response, ApiError> {
    who.scope(&tenant)?;
    if !who.is_system_admin() {
        return Err(ApiError::forbidden());
    }
    let mut t = state.storage.tenant(&tenant).await?;
    check_version(&headers, t.version)?;
    if let Some(d) = req.display_name {
        t.display_name = d;
    }
    if req.max_calls.is_some() {
        t.max_calls = req.max_calls;
    }
    if req.country_code.is_some() {
        t.country_code = req.country_code;
    }
    if let Some(transcode) = req.transcode {
        t.transcode = transcode;
    }
    check_tenant_fields(&t.display_name, t.max_calls, t.country_code.as_deref())?;
    check_transcode(t.transcode.as_deref())?;
    t.version += 1;
    t.updated_ms = now_ms();
    state.storage.update_tenant(&t).await?;
    state
        .audit(
            &who,
            Some(&t.name),
            "update",
            "tenant",
            &t.name,
            serde_json::json!({"display_name": t.display_name, "max_calls": t.max_calls, "country_code": t.country_code, "transcode": t.transcode}),
        )
        .await?;
    state.directory_changed().await;
    Ok(with_etag(StatusCode::OK, t.version, &t))
}

/// Delete a tenant and everything it owns (system administrators).
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}", tag = "tenants",
    params(("tenant" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)))]
async fn delete_tenant(
    State(state): State<ApiState>,
    who: Principal,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    who.scope(&tenant)?;
    if !who.is_system_admin() {
        return Err(ApiError::forbidden());
    }
    let t = state.storage.tenant(&tenant).await?;
    check_version(&headers, t.version)?;
    state.storage.delete_tenant(&tenant).await?;
    state
        .audit(
            &who,
            None,
            "delete",
            "tenant",
            &tenant,
            serde_json::json!({}),
        )
        .await?;
    state.forget_principals();
    state.directory_changed().await;
    Ok(StatusCode::NO_CONTENT)
}

// ---------- users ----------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// a-z, 0-9, '-', '_', '.'; 1–64 characters; unique in the tenant.
    pub username: String,
    pub display_name: Option<String>,
    /// `tenant_admin`, `supervisor`, `agent` or `qa` (not above your own).
    pub role: String,
    /// 8–200 characters.
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub display_name: Option<String>,
    pub role: Option<String>,
    pub password: Option<String>,
}

async fn hash(password: String) -> Result<String, ApiError> {
    check_len("password", &password, 8, 200)?;
    tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r)
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("hashing the password: {e}"),
            )
        })
}

/// The tenant's users.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/users", tag = "users",
    params(("tenant" = String, Path), ListParams),
    responses((status = 200, body = inline(Listed<User>)), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_users(
    State(state): State<ApiState>,
    who: Principal,
    Path(tenant): Path<String>,
    Params(q): Params<ListParams>,
) -> Result<Json<Listed<User>>, ApiError> {
    who.require(&tenant, super::STAFF)?;
    let page = q.page(&[
        ("username", "username"),
        ("created", "created_ms"),
        ("updated", "updated_ms"),
    ])?;
    state.tenant_exists(&who, &tenant).await?;
    Ok(Json(state.storage.list_users(&tenant, &page).await?))
}

/// Add a user to the tenant (tenant administrators).
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/users", tag = "users",
    params(("tenant" = String, Path)), request_body = NewUser,
    responses((status = 201, body = User), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_user(
    State(state): State<ApiState>,
    who: Principal,
    Path(tenant): Path<String>,
    Body(req): Body<NewUser>,
) -> Result<Response, ApiError> {
    who.require(&tenant, ADMINS)?;
    state.tenant_exists(&who, &tenant).await?;
    check_slug("username", &req.username, 64)?;
    let display_name = req
        .display_name
        .clone()
        .unwrap_or_else(|| req.username.clone());
    check_len("display_name", &display_name, 1, 200)?;
    check_role("role", &req.role, &who)?;
    let password_hash = hash(req.password).await?;
    let now = now_ms();
    let user = User {
        id: new_id(),
        tenant: Some(tenant.clone()),
        username: req.username,
        display_name,
        role: req.role,
        password_hash,
        version: 1,
        created_ms: now,
        updated_ms: now,
    };
    state.storage.create_user(&user).await?;
    state
        .audit(
            &who,
            Some(&tenant),
            "create",
            "user",
            &user.id,
            serde_json::json!({"username": user.username, "role": user.role}),
        )
        .await?;
    Ok(with_etag(StatusCode::CREATED, user.version, &user))
}

/// One user.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/users/{id}", tag = "users",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = User), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_user(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    who.scope(&tenant)?;
    // Anyone may read their own user; staff may read everyone in the tenant.
    if who.user_id.as_deref() != Some(id.as_str()) {
        who.require(&tenant, super::STAFF)?;
    }
    let u = state.storage.user(&tenant, &id).await?;
    Ok(with_etag(StatusCode::OK, u.version, &u))
}

/// Change a user's display name, role or password. Users may change their own password and
/// display name; roles are changed by tenant administrators.
#[utoipa::path(patch, path = "/api/v1/tenants/{tenant}/users/{id}", tag = "users",
    params(("tenant" = String, Path), ("id" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body = UserPatch,
    responses((status = 200, body = User), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_user(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
    Body(req): Body<UserPatch>,
) -> Result<Response, ApiError> {
    who.scope(&tenant)?;
    let own = who.user_id.as_deref() == Some(id.as_str());
    if !own || req.role.is_some() {
        who.require(&tenant, ADMINS)?;
    }
    let mut u = state.storage.user(&tenant, &id).await?;
    check_version(&headers, u.version)?;
    if auth::rank(&u.role) > auth::rank(&who.role) {
        return Err(ApiError::forbidden());
    }
    if let Some(d) = req.display_name {
        check_len("display_name", &d, 1, 200)?;
        u.display_name = d;
    }
    if let Some(r) = req.role {
        check_role("role", &r, &who)?;
        u.role = r;
    }
    let password_changed = req.password.is_some();
    if let Some(p) = req.password {
        u.password_hash = hash(p).await?;
    }
    u.version += 1;
    u.updated_ms = now_ms();
    state.storage.update_user(&u).await?;
    state.forget_principals();
    state
        .audit(
            &who,
            Some(&tenant),
            "update",
            "user",
            &u.id,
            serde_json::json!({"role": u.role, "display_name": u.display_name, "password_changed": password_changed}),
        )
        .await?;
    Ok(with_etag(StatusCode::OK, u.version, &u))
}

/// Remove a user (tenant administrators); their sessions end at once.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/users/{id}", tag = "users",
    params(("tenant" = String, Path), ("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)))]
async fn delete_user(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    who.require(&tenant, ADMINS)?;
    let u = state.storage.user(&tenant, &id).await?;
    check_version(&headers, u.version)?;
    if auth::rank(&u.role) > auth::rank(&who.role) {
        return Err(ApiError::forbidden());
    }
    state.storage.delete_user(&tenant, &id).await?;
    state.forget_principals();
    state
        .audit(
            &who,
            Some(&tenant),
            "delete",
            "user",
            &id,
            serde_json::json!({"username": u.username}),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------- API tokens ----------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// What the token is for (1–100 characters).
    pub name: String,
    /// Role the token acts with (not above your own).
    pub role: String,
    /// Lifetime in seconds; absent = until revoked.
    pub expires_in_s: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    /// The secret, shown only in this response.
    pub token: String,
    #[serde(flatten)]
    pub info: ApiToken,
}

/// The tenant's API tokens (never their secrets).
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/tokens", tag = "tokens",
    params(("tenant" = String, Path), ListParams),
    responses((status = 200, body = inline(Listed<ApiToken>)), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_tokens(
    State(state): State<ApiState>,
    who: Principal,
    Path(tenant): Path<String>,
    Params(q): Params<ListParams>,
) -> Result<Json<Listed<ApiToken>>, ApiError> {
    who.require(&tenant, ADMINS)?;
    let page = q.page(&[("created", "created_ms"), ("name", "name")])?;
    state.tenant_exists(&who, &tenant).await?;
    Ok(Json(state.storage.list_tokens(&tenant, &page).await?))
}

/// Create an API token for the tenant; the secret is in this response only.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/tokens", tag = "tokens",
    params(("tenant" = String, Path)), request_body = NewToken,
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_token(
    State(state): State<ApiState>,
    who: Principal,
    Path(tenant): Path<String>,
    Body(req): Body<NewToken>,
) -> Result<Response, ApiError> {
    who.require(&tenant, ADMINS)?;
    state.tenant_exists(&who, &tenant).await?;
    check_len("name", &req.name, 1, 100)?;
    check_role("role", &req.role, &who)?;
    if req
        .expires_in_s
        .is_some_and(|s| !(60..=10 * 365 * 86400).contains(&s))
    {
        return Err(ApiError::invalid(
            "expires_in_s",
            "expires_in_s must be between 60 s and 10 years",
        ));
    }
    let fresh = auth::new_api_token();
    let now = now_ms();
    let info = ApiToken {
        id: fresh.id,
        tenant: Some(tenant.clone()),
        name: req.name,
        role: req.role,
        secret_sha256: fresh.secret_sha256,
        created_by: who.actor.clone(),
        created_ms: now,
        expires_ms: req.expires_in_s.map(|s| now + s * 1000),
        revoked_ms: None,
    };
    state.storage.create_token(&info).await?;
    state
        .audit(
            &who,
            Some(&tenant),
            "create",
            "token",
            &info.id,
            serde_json::json!({"name": info.name, "role": info.role}),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token: fresh.plaintext,
            info,
        }),
    )
        .into_response())
}

/// Revoke a token; it stops working at once on this node.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/tokens/{id}", tag = "tokens",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn revoke_token(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    who.require(&tenant, ADMINS)?;
    state.storage.revoke_token(&tenant, &id).await?;
    state.forget_principals();
    state
        .audit(
            &who,
            Some(&tenant),
            "revoke",
            "token",
            &id,
            serde_json::json!({}),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Creates the first system administrator when there is no user at all; returns its password
/// when one was generated.
pub async fn bootstrap_admin(
    storage: &crate::storage::Storage,
    password: Option<&str>,
) -> Result<Option<String>, ApiError> {
    if storage.count_users().await? > 0 {
        return Ok(None);
    }
    let generated = password.is_none();
    let password = match password {
        Some(p) => p.to_string(),
        None => {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(auth::random_bytes::<15>())
        }
    };
    let password_hash = hash(password.clone()).await?;
    let now = now_ms();
    storage
        .create_user(&User {
            id: new_id(),
            tenant: None,
            username: "admin".into(),
            display_name: "System administrator".into(),
            role: "system_admin".into(),
            password_hash,
            version: 1,
            created_ms: now,
            updated_ms: now,
        })
        .await?;
    Ok(generated.then_some(password))
}

/// A system-administrator API token made directly in storage (for `tandem demo` and tests,
/// which have no one to log in).
pub async fn system_token(
    storage: &crate::storage::Storage,
    name: &str,
) -> Result<String, ApiError> {
    let fresh = auth::new_api_token();
    storage
        .create_token(&ApiToken {
            id: fresh.id,
            tenant: None,
            name: name.to_string(),
            role: "system_admin".into(),
            secret_sha256: fresh.secret_sha256,
            created_by: "system".into(),
            created_ms: now_ms(),
            expires_ms: None,
            revoked_ms: None,
        })
        .await?;
    Ok(fresh.plaintext)
}
