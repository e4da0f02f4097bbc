//! The control API under `/api/v1`: REST for tenants, users, tokens, the SIP directory, call
//! records, the audit log and webhooks; a WebSocket event stream; the OpenAPI document generated
//! from these handlers at `/api/v1/openapi.json`.
//!
//! Every tenant-scoped path names its tenant (`/api/v1/tenants/{tenant}/…`). A principal of
//! another tenant gets 404 for it — the same answer as for a tenant that does not exist — so
//! nothing about other tenants can be learned. Within its tenant, a role that may not do
//! something gets 403.

pub mod acd;
pub mod acd_stats;
pub mod auth;
pub mod contact_centre;
pub mod directory;
pub mod events;
pub mod live_calls;
pub mod metrics;
pub mod monitor;
pub mod records;
pub mod tenants;
pub mod webhooks;

use crate::storage::{now_ms, AuditEntry, Page, Storage, StoreError};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

/// Longest accepted request body; larger ones get 413 before any parsing.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What handlers share. One `Arc` around it all: axum clones the state for every request.
#[derive(Clone)]
pub struct ApiState(Arc<ApiShared>);

impl std::ops::Deref for ApiState {
    type Target = ApiShared;
    fn deref(&self) -> &ApiShared {
        &self.0
    }
}

pub struct ApiShared {
    pub storage: Storage,
    pub sessions: Arc<auth::SessionKeys>,
    pub events: Arc<events::EventHub>,
    pub metrics: Arc<metrics::ApiMetrics>,
    /// Told whenever tenants, trunks or routes change, so the SIP engine reloads the directory.
    pub directory_reload: Arc<tokio::sync::Notify>,
    /// Directory changes requested, and the newest one the SIP engine has applied: a change
    /// answers only once the engine routes by it (read your writes, for calls too).
    pub directory_requested: Arc<std::sync::atomic::AtomicU64>,
    pub directory_applied: Arc<tokio::sync::watch::Sender<u64>>,
    sip_attached: Arc<std::sync::atomic::AtomicBool>,
    /// SIP account changes, sent one by one to the SIP engine (see `sip::config::DirectoryUpdate`).
    pub directory_updates: tokio::sync::mpsc::UnboundedSender<crate::sip::config::DirectoryUpdate>,
    directory_updates_rx: Arc<
        Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<crate::sip::config::DirectoryUpdate>>>,
    >,
    /// Numbers account changes; a full reload records the number it was read at.
    pub account_seq: Arc<std::sync::atomic::AtomicU64>,
    /// Told whenever webhooks change, so the delivery worker reloads them.
    pub webhooks_changed: Arc<tokio::sync::Notify>,
    principals: Arc<Mutex<HashMap<String, (Principal, Instant)>>>,
    /// Failed logins by (login, source) and by source: password guessing is throttled.
    pub login_guard: Mutex<auth::LoginGuard>,
    /// Where webhooks may be delivered (see `webhooks::Destinations`).
    webhook_destinations: std::sync::RwLock<webhooks::Destinations>,
    /// Agent actions and live status go to the SIP engine's ACD through this; unset without a
    /// SIP engine (503).
    acd: std::sync::OnceLock<tokio::sync::mpsc::Sender<crate::sip::queues::AcdRequest>>,
}

/// How long the API waits for the ACD's answer before saying 503.
const ACD_WAIT: Duration = Duration::from_secs(2);

/// How long a verified token's principal is reused without reading storage again. Revocation
/// through this node clears it at once; another node sharing PostgreSQL sees it within this.
const PRINCIPAL_CACHE: Duration = Duration::from_secs(5);

impl ApiState {
    pub fn new(storage: Storage, session_key: [u8; 32]) -> ApiState {
        let (updates, updates_rx) = tokio::sync::mpsc::unbounded_channel();
        ApiState(Arc::new(ApiShared {
            directory_updates: updates,
            directory_updates_rx: Arc::new(Mutex::new(Some(updates_rx))),
            account_seq: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            storage,
            sessions: Arc::new(auth::SessionKeys::new(session_key)),
            events: Arc::new(events::EventHub::new(100_000, Duration::from_secs(600))),
            metrics: Arc::new(metrics::ApiMetrics::default()),
            directory_reload: Arc::new(tokio::sync::Notify::new()),
            directory_requested: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            directory_applied: Arc::new(tokio::sync::watch::channel(0).0),
            sip_attached: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            webhooks_changed: Arc::new(tokio::sync::Notify::new()),
            principals: Arc::new(Mutex::new(HashMap::new())),
            login_guard: Mutex::new(auth::LoginGuard::default()),
            webhook_destinations: Default::default(),
            acd: std::sync::OnceLock::new(),
        }))
    }

    /// Joins the API to the SIP engine's ACD (once; the appliance's start does it).
    pub fn attach_acd(&self, requests: tokio::sync::mpsc::Sender<crate::sip::queues::AcdRequest>) {
        let _ = self.acd.set(requests);
    }

    /// Asks the engine's ACD and waits for its answer: a refusal maps to 404, 409 or 422; no
    /// engine, a closed channel or no answer within 2 s to 503.
    pub async fn ask_acd(
        &self,
        tenant: &str,
        op: crate::sip::queues::AcdOp,
    ) -> Result<crate::sip::queues::AcdReply, ApiError> {
        use crate::sip::queues::{AcdRefusal, AcdRequest};
        let unavailable = || {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the contact-centre engine is not running",
            )
        };
        let Some(requests) = self.acd.get() else {
            return Err(unavailable());
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = AcdRequest {
            tenant: tenant.to_string(),
            op,
            reply,
        };
        let asked = async {
            requests.send(request).await.ok()?;
            answer.await.ok()
        };
        match tokio::time::timeout(ACD_WAIT, asked).await {
            Ok(Some(Ok(reply))) => Ok(reply),
            Ok(Some(Err(refusal))) => Err(match refusal {
                AcdRefusal::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
                AcdRefusal::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
                AcdRefusal::Invalid(m) => {
                    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m)
                }
            }),
            Ok(None) | Err(_) => Err(unavailable()),
        }
    }

    /// 404 for a tenant that does not exist. A tenant's own principals need no query: their
    /// tenant exists (deleting it deletes their users and tokens); system administrators may
    /// name any tenant, so theirs is checked.
    pub async fn tenant_exists(&self, who: &Principal, tenant: &str) -> Result<(), ApiError> {
        if who.tenant.as_deref() == Some(tenant) {
            return Ok(());
        }
        self.storage.tenant(tenant).await?;
        Ok(())
    }

    /// Non-public networks webhooks may reach (config `api.webhook_allow`).
    pub fn allow_webhook_networks(&self, networks: Vec<String>) {
        if let Ok(mut d) = self.webhook_destinations.write() {
            d.allow = networks;
        }
    }

    pub fn webhook_destinations(&self) -> webhooks::Destinations {
        self.webhook_destinations
            .read()
            .map(|d| d.clone())
            .unwrap_or_default()
    }

    /// The receiving end of directory updates, for the SIP task (once).
    pub fn take_directory_updates(
        &self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<crate::sip::config::DirectoryUpdate>> {
        let rx = self.directory_updates_rx.lock().ok()?.take();
        self.sip_attached
            .store(rx.is_some(), std::sync::atomic::Ordering::SeqCst);
        rx
    }

    /// Asks for a directory reload and waits (up to 2 s) until the SIP engine has applied one
    /// that includes this change. Without a SIP engine (API-only tests) it only asks.
    pub async fn directory_changed(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        let wanted = self.directory_requested.fetch_add(1, SeqCst) + 1;
        self.directory_reload.notify_one();
        if !self.sip_attached.load(SeqCst) {
            return;
        }
        let mut applied = self.directory_applied.subscribe();
        let wait = applied.wait_for(|&g| g >= wanted);
        if tokio::time::timeout(Duration::from_secs(2), wait)
            .await
            .is_err()
        {
            tracing::warn!("SIP directory change {wanted} not applied within 2 s");
        }
    }

    /// Tells the SIP engine about one committed account change.
    pub fn account_changed(&self, change: crate::sip::config::AccountChange) {
        let seq = self
            .account_seq
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let _ = self
            .directory_updates
            .send(crate::sip::config::DirectoryUpdate::Account { seq, change });
    }

    pub fn forget_principals(&self) {
        if let Ok(mut p) = self.principals.lock() {
            p.clear();
        }
    }

    /// Appends to the audit log; a failure to audit fails the request (500), never silently.
    #[allow(clippy::too_many_arguments)]
    pub async fn audit(
        &self,
        who: &Principal,
        tenant: Option<&str>,
        action: &str,
        object_type: &str,
        object_id: &str,
        detail: serde_json::Value,
    ) -> Result<(), ApiError> {
        self.storage
            .insert_audit(&AuditEntry {
                id: crate::storage::new_id(),
                at_ms: now_ms(),
                tenant: tenant.map(str::to_string),
                actor: who.actor.clone(),
                action: action.to_string(),
                object_type: object_type.to_string(),
                object_id: object_id.to_string(),
                source: who.source.clone(),
                detail,
            })
            .await?;
        Ok(())
    }
}

// ---------- errors ----------

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code: `bad_request`, `invalid`, `unauthenticated`, `forbidden`,
    /// `not_found`, `conflict`, `version_mismatch`, `too_large`, `locked` (too many failed
    /// logins; see Retry-After), `unavailable` (the contact-centre engine is not running or did
    /// not answer), `internal`.
    pub code: String,
    pub message: String,
    /// The request field the error is about, when there is one.
    pub field: Option<String>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
            message: message.into(),
            field: Some(field.to_string()),
        }
    }

    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such object")
    }

    /// The SIP engine answered a request with a reply of another kind (503: nothing the client
    /// can fix).
    pub fn unexpected_engine_answer() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the SIP engine gave an unexpected answer",
        )
    }

    pub fn forbidden() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "your role may not do this",
        )
    }

    pub fn unauthenticated(message: &str) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound => ApiError::not_found(),
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            StoreError::VersionMismatch { current } => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "version_mismatch",
                format!("the object changed since you read it; its version is now {current}"),
            ),
            StoreError::Db(e) => {
                tracing::error!("storage error: {e}");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "storage error",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                field: self.field,
            },
        };
        let mut res = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tandem\""),
            );
        }
        res
    }
}

// ---------- extractors ----------

/// A JSON body with errors in our shape: which field was wrong, unknown or missing.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "bad_request",
                "the body must be application/json",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("bodies are limited to {MAX_BODY_BYTES} bytes"),
                )
            })?;
        parse_json(&bytes).map(Body)
    }
}

/// A request body as `T`, or our error naming the field that was wrong, unknown or missing.
/// Never panics, whatever the bytes (fuzz target `api_json`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.to_string();
            // The path ends at an unknown field; a missing one is named only in the message.
            let field = if message.starts_with("missing field") {
                backticked(&message).map(|f| {
                    if path == "." {
                        f
                    } else {
                        format!("{path}.{f}")
                    }
                })
            } else {
                (path != ".").then_some(path)
            };
            ApiError {
                status: StatusCode::BAD_REQUEST,
                code: "bad_request",
                message,
                field,
            }
        })
    }
}

fn backticked(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

/// Query parameters with errors in our shape.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(query)
            .map(Params)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))
    }
}

/// Who is calling: from `Authorization: Bearer <token>` (or `?access_token=` for browsers'
/// WebSockets, which cannot set headers).
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: Option<String>,
    pub role: String,
    /// `user:<id> (<name>)` or `token:<id> (<name>)`, as written to the audit log.
    pub actor: String,
    pub user_id: Option<String>,
    /// The user's login name (session tokens only): an `agent` user acts as the contact-centre
    /// agent of the same name.
    pub username: Option<String>,
    pub source: String,
}

impl Principal {
    pub fn is_system_admin(&self) -> bool {
        self.role == "system_admin"
    }

    /// The tenant named in a path, if this principal may see it at all (else 404).
    pub fn scope(&self, tenant: &str) -> Result<(), ApiError> {
        if self.is_system_admin() || self.tenant.as_deref() == Some(tenant) {
            Ok(())
        } else {
            Err(ApiError::not_found())
        }
    }

    /// Scope, then role: 404 for other tenants, 403 for roles not in `allowed`.
    pub fn require(&self, tenant: &str, allowed: &[&str]) -> Result<(), ApiError> {
        self.scope(tenant)?;
        if self.is_system_admin() || allowed.contains(&self.role.as_str()) {
            Ok(())
        } else {
            Err(ApiError::forbidden())
        }
    }
}

pub const ADMINS: &[&str] = &["tenant_admin"];
pub const STAFF: &[&str] = &["tenant_admin", "supervisor"];
pub const REVIEWERS: &[&str] = &["tenant_admin", "supervisor", "qa"];
pub const EVERYONE: &[&str] = &["tenant_admin", "supervisor", "agent", "qa"];

/// The client's address (`unknown` where the server was started without connection info).
pub struct Source(pub String);

fn source_of(parts: &Parts) -> String {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

impl<S: Send + Sync> FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Source(source_of(parts)))
    }
}

impl FromRequestParts<ApiState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let source = source_of(parts);
        let token = bearer(&parts.headers).or_else(|| {
            let q: HashMap<String, String> =
                serde_urlencoded::from_str(parts.uri.query().unwrap_or("")).ok()?;
            q.get("access_token").cloned()
        });
        let Some(token) = token else {
            state.metrics.auth_failure("missing");
            return Err(ApiError::unauthenticated(
                "send Authorization: Bearer <token>",
            ));
        };
        let cached = state
            .principals
            .lock()
            .ok()
            .and_then(|p| p.get(&token).cloned());
        if let Some((mut principal, at)) = cached {
            if at.elapsed() < PRINCIPAL_CACHE {
                principal.source = source;
                return Ok(principal);
            }
        }
        let principal = authenticate(state, &token, source).await?;
        if let Ok(mut p) = state.principals.lock() {
            if p.len() > 10_000 {
                p.clear();
            }
            p.insert(token, (principal.clone(), Instant::now()));
        }
        Ok(principal)
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

async fn authenticate(
    state: &ApiState,
    token: &str,
    source: String,
) -> Result<Principal, ApiError> {
    let refuse = |why: &'static str| {
        state.metrics.auth_failure(why);
        ApiError::unauthenticated("the token is not valid")
    };
    if let Some((id, secret)) = auth::split_api_token(token) {
        let stored = match state.storage.token(id).await {
            Ok(t) => t,
            Err(StoreError::NotFound) => return Err(refuse("unknown")),
            Err(e) => return Err(e.into()),
        };
        if !auth::api_token_matches(secret, &stored.secret_sha256) {
            return Err(refuse("bad_secret"));
        }
        if stored.revoked_ms.is_some() {
            return Err(refuse("revoked"));
        }
        if stored.expires_ms.is_some_and(|e| e <= now_ms()) {
            return Err(refuse("expired"));
        }
        return Ok(Principal {
            tenant: stored.tenant,
            role: stored.role,
            actor: format!("token:{} ({})", stored.id, stored.name),
            user_id: None,
            username: None,
            source,
        });
    }
    let Some(claims) = state.sessions.verify(token, now_ms()) else {
        return Err(refuse("bad_session"));
    };
    // The user must still exist with the version the session began with.
    let user = match state.storage.user_by_id(&claims.sub).await {
        Ok(u) if u.version == claims.ver => u,
        Ok(_) | Err(StoreError::NotFound) => return Err(refuse("stale_session")),
        Err(e) => return Err(e.into()),
    };
    Ok(Principal {
        tenant: user.tenant,
        role: user.role,
        actor: format!("user:{} ({})", user.id, user.username),
        user_id: Some(user.id),
        username: Some(user.username),
        source,
    })
}

// ---------- lists and versions ----------

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Items per page, 1–500 (default 50).
    pub limit: Option<i64>,
    /// Items to skip (the previous page's `next_offset`).
    pub offset: Option<i64>,
    /// Sort field; `-field` sorts descending. Each list names its fields.
    pub sort: Option<String>,
}

impl ListParams {
    /// A page over `fields` (API name → column); the first is the default order.
    pub fn page(&self, fields: &[(&str, &'static str)]) -> Result<Page, ApiError> {
        let limit = self.limit.unwrap_or(50);
        if !(1..=500).contains(&limit) {
            return Err(ApiError::invalid(
                "limit",
                "limit must be between 1 and 500",
            ));
        }
        let offset = self.offset.unwrap_or(0);
        if !(0..=1_000_000_000).contains(&offset) {
            return Err(ApiError::invalid("offset", "offset must be 0 or more"));
        }
        let order = match self.sort.as_deref() {
            None => fields[0].1,
            Some(sort) => {
                let (name, desc) = match sort.strip_prefix('-') {
                    Some(n) => (n, true),
                    None => (sort, false),
                };
                let Some(&(_, column)) = fields.iter().find(|(f, _)| *f == name) else {
                    let names: Vec<_> = fields.iter().map(|f| f.0).collect();
                    return Err(ApiError::invalid(
                        "sort",
                        format!("sort by one of {}", names.join(", ")),
                    ));
                };
                order_clause(column, desc)
            }
        };
        Ok(Page {
            limit,
            offset,
            order,
        })
    }
}

/// ORDER BY clauses are chosen from this fixed set, so no input ever reaches SQL text.
fn order_clause(column: &'static str, desc: bool) -> &'static str {
    macro_rules! orders {
        ($($c:literal),*) => {
            match (column, desc) {
                $(($c, false) => concat!($c, " ASC, id ASC"), ($c, true) => concat!($c, " DESC, id DESC"),)*
                _ => "created_ms ASC",
            }
        };
    }
    orders!(
        "created_ms",
        "updated_ms",
        "username",
        "name",
        "position",
        "pattern",
        "started_ms",
        "ended_ms",
        "duration_ms",
        "at_ms",
        "queue",
        "agent"
    )
}

/// `If-Match: "<version>"` (or a bare number): the version a change was based on.
pub fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    let text = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    text.parse::<i64>().map(Some).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "If-Match must be a version number such as \"3\"",
        )
        .with_field("If-Match")
    })
}

/// Fails with 412 when `If-Match` names another version than the stored one.
pub fn check_version(headers: &HeaderMap, current: i64) -> Result<(), ApiError> {
    match if_match(headers)? {
        Some(v) if v != current => Err(StoreError::VersionMismatch { current }.into()),
        _ => Ok(()),
    }
}

impl ApiError {
    pub fn with_field(mut self, field: &str) -> ApiError {
        self.field = Some(field.to_string());
        self
    }
}

/// A JSON response with `ETag: "<version>"`.
pub fn with_etag<T: Serialize>(status: StatusCode, version: i64, body: &T) -> Response {
    let mut res = (status, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        res.headers_mut().insert(header::ETAG, v);
    }
    res
}

// ---------- validation helpers ----------

pub fn check_len(field: &str, value: &str, min: usize, max: usize) -> Result<(), ApiError> {
    let n = value.chars().count();
    if n < min || n > max {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be {min}–{max} characters"),
        ));
    }
    Ok(())
}

/// Lower-case letters, digits, `-`, `_` and `.`: safe in paths, SIP user parts and file names.
pub fn check_slug(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    check_len(field, value, 1, max)?;
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
    {
        return Err(ApiError::invalid(
            field,
            format!("{field} may hold only a-z, 0-9, '-', '_' and '.'"),
        ));
    }
    Ok(())
}

pub fn check_role(field: &str, role: &str, granter: &Principal) -> Result<(), ApiError> {
    if !auth::ROLES.contains(&role) {
        return Err(ApiError::invalid(
            field,
            format!("role must be one of {}", auth::ROLES.join(", ")),
        ));
    }
    if role == "system_admin" || auth::rank(role) > auth::rank(&granter.role) {
        return Err(ApiError::forbidden().with_field(field));
    }
    Ok(())
}

// ---------- the router ----------

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token (tdm_…) or a session token (tds_…) from POST /api/v1/sessions",
                    ))
                    .build(),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        count: Option<i64>,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        flag: bool,
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_json::<Sample>(br#"{"count": 1}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("name"));
        let e = parse_json::<Sample>(br#"{"name": "a", "extra": 1}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("extra"));
        let e = parse_json::<Sample>(br#"{"name": 5}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("name"));
        let e = parse_json::<Sample>(br#"{"name": "a", "inner": {"flag": "yes"}}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("inner.flag"));
        let e = parse_json::<Sample>(br#"{"name": "a", "inner": {}}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("inner.flag"));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(parse_json::<Sample>(br#"{"name": "a"}"#).is_ok());
    }

    proptest! {
        #[test]
        fn any_bytes_give_a_value_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_json::<Sample>(&bytes);
            let _ = parse_json::<tenants::NewUser>(&bytes);
        }

        #[test]
        fn mutated_json_never_panics(name in ".{0,40}", count in any::<i64>(), cut in 0usize..80) {
            let text = serde_json::json!({"name": name, "count": count, "inner": {"flag": true}}).to_string();
            let cut = cut.min(text.len());
            let _ = parse_json::<Sample>(&text.as_bytes()[..cut]);
            prop_assert!(parse_json::<Sample>(text.as_bytes()).is_ok());
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tandem control API",
        description = "Tenants, users, tokens, SIP directory, contact-centre queues and agents, call records, audit log, webhooks and events of a Tandem appliance."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

/// The `/api/v1` routes and their OpenAPI document.
pub fn router(state: ApiState) -> axum::Router {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(tenants::routes())
        .merge(directory::routes())
        .merge(records::routes())
        .merge(webhooks::routes())
        .merge(contact_centre::routes())
        .merge(acd::routes())
        .merge(monitor::routes())
        .merge(live_calls::routes())
        .merge(acd_stats::routes())
        .split_for_parts();
    let doc = Arc::new(openapi.to_json().unwrap_or_default());
    router
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], (*doc).clone()) }
            }),
        )
        .route("/api/v1/events", axum::routing::get(events::websocket))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such path") })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}
