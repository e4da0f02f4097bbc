//! Webhooks: per-tenant subscriptions that receive the event stream by HTTP POST, signed with
//! HMAC-SHA256, retried with exponential backoff, every attempt in a delivery log.
//!
//! Signature: `X-Tandem-Signature: t=<unix ms>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//! The receiver recomputes it with the secret it was given at creation and rejects old `t`s.

use super::events::Event;
use super::{
    check_len, check_version, with_etag, ApiError, ApiState, Body, ErrorBody, ListParams, Params,
    Principal, ADMINS,
};
use crate::storage::{new_id, now_ms, Delivery, Listed, Storage, Webhook};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What a webhook may subscribe to: calls, registrations, and the contact centre's events
/// (`acd.<kind>`, see `api::acd::EVENT_KINDS`; `acd.offer` is the screen-pop), and supervisor
/// monitors (`monitor.*`, see `api::monitor`).
pub const EVENT_TYPES: [&str; 30] = [
    "call.offered",
    "call.answered",
    "call.ended",
    "registration.changed",
    "acd.enter",
    "acd.connect",
    "acd.complete_caller",
    "acd.complete_agent",
    "acd.abandon",
    "acd.resumed",
    "acd.exit_timeout",
    "acd.exit_key",
    "acd.exit_empty",
    "acd.exit_full",
    "acd.ring_no_answer",
    "acd.reject",
    "acd.transfer",
    "acd.callback_requested",
    "acd.callback_placed",
    "acd.callback_failed",
    "acd.agent_login",
    "acd.agent_logout",
    "acd.pause",
    "acd.unpause",
    "acd.agent_state",
    "acd.offer",
    "monitor.started",
    "monitor.answered",
    "monitor.mode",
    "monitor.ended",
];

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(get_webhook, update_webhook, delete_webhook))
        .routes(routes!(list_deliveries))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// Event types to deliver, or `["*"]` for all (default all).
    pub events: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookPatch {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub active: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    /// The signing secret, shown only in this response.
    pub secret: String,
    #[serde(flatten)]
    pub webhook: Webhook,
}

/// Where webhook deliveries may connect: public unicast addresses, plus the non-public networks
/// an operator allowed (`api.webhook_allow`). Without this a tenant admin could make the
/// appliance POST to its own loopback services, the LAN or a cloud metadata endpoint.
#[derive(Debug, Clone, Default)]
pub struct Destinations {
    pub allow: Vec<String>,
}

impl Destinations {
    pub fn permits(&self, ip: IpAddr) -> bool {
        is_public(ip)
            || self
                .allow
                .iter()
                .any(|net| crate::sip::config::cidr_contains(net, ip))
    }
}

fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let [b0, b1, ..] = a.octets();
            !(a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || a.is_documentation()
                || b0 == 0
                || b0 >= 240
                || (b0 == 100 && (64..128).contains(&b1)) // carrier-grade NAT
                || (b0 == 198 && (18..20).contains(&b1))) // benchmarking
        }
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                let first = a.segments()[0];
                !(a.is_loopback()
                    || a.is_unspecified()
                    || a.is_multicast()
                    || first & 0xfe00 == 0xfc00 // unique local
                    || first & 0xffc0 == 0xfe80 // link local
                    || (first == 0x2001 && a.segments()[1] == 0x0db8)) // documentation
            }
        },
    }
}

/// The host of an `http(s)://` URL when it is an address literal.
fn url_ip_literal(url: &str) -> Option<IpAddr> {
    let uri: hyper::Uri = url.parse().ok()?;
    uri.host()?.trim_matches(['[', ']']).parse().ok()
}

fn check_webhook(w: &Webhook, destinations: &Destinations) -> Result<(), ApiError> {
    check_len("url", &w.url, 8, 2000)?;
    let ok = match w
        .url
        .strip_prefix("http://")
        .or_else(|| w.url.strip_prefix("https://"))
    {
        Some(rest) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            !host.is_empty() && !host.contains(['@', ' '])
        }
        None => false,
    };
    if !ok {
        return Err(ApiError::invalid(
            "url",
            "url must be http://host[:port]/path or https://…",
        ));
    }
    // An address written in the URL is checked now; a name is checked when it is resolved, at
    // each delivery (a name can change what it points at).
    if let Some(ip) = url_ip_literal(&w.url) {
        if !destinations.permits(ip) {
            return Err(ApiError::invalid(
                "url",
                format!(
                    "{ip} is not a public address; an operator can allow it with api.webhook_allow"
                ),
            ));
        }
    }
    if w.events.is_empty() || w.events.len() > EVENT_TYPES.len() {
        return Err(ApiError::invalid(
            "events",
            format!("name 1–{} event types or *", EVENT_TYPES.len()),
        ));
    }
    for e in &w.events {
        if e != "*" && !EVENT_TYPES.contains(&e.as_str()) {
            return Err(ApiError::invalid(
                "events",
                format!(
                    "unknown event type {e}; one of {} or *",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// The tenant's webhooks.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/webhooks", tag = "webhooks",
    params(("tenant" = String, Path), ListParams),
    responses((status = 200, body = inline(Listed<Webhook>)), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_webhooks(
    State(state): State<ApiState>,
    who: Principal,
    Path(tenant): Path<String>,
    Params(q): Params<ListParams>,
) -> Result<Json<Listed<Webhook>>, ApiError> {
    who.require(&tenant, ADMINS)?;
    let page = q.page(&[("created", "created_ms")])?;
    state.tenant_exists(&who, &tenant).await?;
    Ok(Json(state.storage.list_webhooks(&tenant, &page).await?))
}

/// Subscribe a URL to the tenant's events; the signing secret is in this response only.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/webhooks", tag = "webhooks",
    params(("tenant" = String, Path)), request_body = NewWebhook,
    responses((status = 201, body = CreatedWebhook), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_webhook(
    State(state): State<ApiState>,
    who: Principal,
    Path(tenant): Path<String>,
    Body(req): Body<NewWebhook>,
) -> Result<Response, ApiError> {
    who.require(&tenant, ADMINS)?;
    state.tenant_exists(&who, &tenant).await?;
    use base64::Engine as _;
    let secret =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(super::auth::random_bytes::<32>());
    let now = now_ms();
    let webhook = Webhook {
        id: new_id(),
        tenant: tenant.clone(),
        url: req.url,
        secret: secret.clone(),
        events: req.events.unwrap_or_else(|| vec!["*".into()]),
        active: true,
        version: 1,
        created_ms: now,
        updated_ms: now,
    };
    check_webhook(&webhook, &state.webhook_destinations())?;
    state.storage.create_webhook(&webhook).await?;
    state
        .audit(
            &who,
            Some(&tenant),
            "create",
            "webhook",
            &webhook.id,
            serde_json::json!({"url": webhook.url, "events": webhook.events}),
        )
        .await?;
    state.webhooks_changed.notify_one();
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhook { secret, webhook }),
    )
        .into_response())
}

/// One webhook.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/webhooks/{id}", tag = "webhooks",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = Webhook), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_webhook(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    who.require(&tenant, ADMINS)?;
    let w = state.storage.webhook(&tenant, &id).await?;
    Ok(with_etag(StatusCode::OK, w.version, &w))
}

/// Change a webhook's URL, event types, or pause it (`active: false`).
#[utoipa::path(patch, path = "/api/v1/tenants/{tenant}/webhooks/{id}", tag = "webhooks",
    params(("tenant" = String, Path), ("id" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body = WebhookPatch,
    responses((status = 200, body = Webhook), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_webhook(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
    Body(req): Body<WebhookPatch>,
) -> Result<Response, ApiError> {
    who.require(&tenant, ADMINS)?;
    let mut w = state.storage.webhook(&tenant, &id).await?;
    check_version(&headers, w.version)?;
    if let Some(v) = req.url {
        w.url = v;
    }
    if let Some(v) = req.events {
        w.events = v;
    }
    if let Some(v) = req.active {
        w.active = v;
    }
    check_webhook(&w, &state.webhook_destinations())?;
    w.version += 1;
    w.updated_ms = now_ms();
    state.storage.update_webhook(&w).await?;
    state
        .audit(
            &who,
            Some(&tenant),
            "update",
            "webhook",
            &w.id,
            serde_json::json!({"url": w.url, "events": w.events, "active": w.active}),
        )
        .await?;
    state.webhooks_changed.notify_one();
    Ok(with_etag(StatusCode::OK, w.version, &w))
}

/// Remove a webhook and its delivery log.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/webhooks/{id}", tag = "webhooks",
    params(("tenant" = String, Path), ("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)))]
async fn delete_webhook(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    who.require(&tenant, ADMINS)?;
    let w = state.storage.webhook(&tenant, &id).await?;
    check_version(&headers, w.version)?;
    state.storage.delete_webhook(&tenant, &id).await?;
    state
        .audit(
            &who,
            Some(&tenant),
            "delete",
            "webhook",
            &id,
            serde_json::json!({"url": w.url}),
        )
        .await?;
    state.webhooks_changed.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

/// A webhook's delivery log, newest first.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/webhooks/{id}/deliveries", tag = "webhooks",
    params(("tenant" = String, Path), ("id" = String, Path), ListParams),
    responses((status = 200, body = inline(Listed<Delivery>)), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_deliveries(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, id)): Path<(String, String)>,
    Params(q): Params<ListParams>,
) -> Result<Json<Listed<Delivery>>, ApiError> {
    who.require(&tenant, ADMINS)?;
    let page = ListParams {
        sort: Some(q.sort.clone().unwrap_or_else(|| "-at".into())),
        ..q
    }
    .page(&[("at", "at_ms")])?;
    state.storage.webhook(&tenant, &id).await?;
    Ok(Json(
        state.storage.list_deliveries(&tenant, &id, &page).await?,
    ))
}

// ---------- delivery ----------

pub fn signature(secret: &str, timestamp_ms: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key size");
    mac.update(format!("{timestamp_ms}.").as_bytes());
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={timestamp_ms},v1={hex}")
}

/// Retry schedule: attempts, and the wait before the second (doubled each time after).
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    pub first_wait: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        // 1, 2, 4, 8, 16, 32 s: a receiver down for about a minute misses nothing.
        Retry {
            attempts: 7,
            first_wait: Duration::from_secs(1),
        }
    }
}

/// Delivers every event to the matching webhooks until the process stops.
pub async fn run_deliveries(state: ApiState, retry: Retry) {
    let mut events = state.events.subscribe();
    let mut hooks = load(&state.storage).await;
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let client = Arc::new(Client::new());
    loop {
        tokio::select! {
            _ = state.webhooks_changed.notified() => hooks = load(&state.storage).await,
            event = events.recv() => {
                let event = match event {
                    Ok(e) => e,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("webhooks: {n} events skipped (delivery backlog)");
                        state.metrics.webhook_dropped(n);
                        continue;
                    }
                    Err(_) => return,
                };
                for hook in hooks.iter().filter(|h| h.tenant == event.tenant
                    && h.events.iter().any(|k| k == "*" || *k == event.kind))
                {
                    let (state, hook, event, client) = (state.clone(), hook.clone(), event.clone(), client.clone());
                    let Ok(permit) = limit.clone().acquire_owned().await else { return };
                    tokio::spawn(async move {
                        deliver(&state, &client, &hook, &event, retry).await;
                        drop(permit);
                    });
                }
            }
        }
    }
}

async fn load(storage: &Storage) -> Vec<Webhook> {
    match storage.active_webhooks().await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!("webhooks: loading subscriptions: {e}");
            Vec::new()
        }
    }
}

async fn deliver(state: &ApiState, client: &Client, hook: &Webhook, event: &Event, retry: Retry) {
    let body = serde_json::to_vec(event).unwrap_or_default();
    let mut wait = retry.first_wait;
    for attempt in 1..=retry.attempts {
        let at_ms = now_ms();
        let signature = signature(&hook.secret, at_ms, &body);
        let destinations = state.webhook_destinations();
        let result = client
            .post(
                &destinations,
                &hook.url,
                &body,
                &signature,
                &event.kind,
                event.seq,
            )
            .await;
        let (status, error) = match &result {
            Ok(code) => (Some(*code as i64), None),
            Err(e) => (None, Some(e.clone())),
        };
        let delivered = result.as_ref().is_ok_and(|c| (200..300).contains(c));
        let log = Delivery {
            id: new_id(),
            webhook_id: hook.id.clone(),
            event_seq: event.seq as i64,
            event_type: event.kind.clone(),
            attempt: attempt as i64,
            status,
            error,
            at_ms,
        };
        if let Err(e) = state.storage.insert_delivery(&hook.tenant, &log).await {
            tracing::warn!("webhooks: delivery log: {e}");
        }
        state.metrics.webhook_attempt(delivered);
        if delivered {
            return;
        }
        if attempt < retry.attempts {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    state.metrics.webhook_given_up();
    tracing::warn!(
        "webhook {} gave up on event {} after {} attempts",
        hook.url,
        event.seq,
        retry.attempts
    );
}

/// A small HTTP/1.1 client (hyper) for webhook POSTs over TCP or TLS (rustls with the Mozilla
/// root store); each delivery uses a fresh connection, bounded at 10 s.
struct Client {
    tls: tokio_rustls::TlsConnector,
}

impl Client {
    fn new() -> Client {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS 1.2 and 1.3 are supported")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Client {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        }
    }

    async fn post(
        &self,
        destinations: &Destinations,
        url: &str,
        body: &[u8],
        signature: &str,
        kind: &str,
        seq: u64,
    ) -> Result<u16, String> {
        tokio::time::timeout(
            Duration::from_secs(10),
            self.post_inner(destinations, url, body, signature, kind, seq),
        )
        .await
        .map_err(|_| "timed out after 10 s".to_string())?
    }

    async fn post_inner(
        &self,
        destinations: &Destinations,
        url: &str,
        body: &[u8],
        signature: &str,
        kind: &str,
        seq: u64,
    ) -> Result<u16, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("bad url: {e}"))?;
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().ok_or("url has no host")?.to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        // Resolve, check every address, and connect to a checked one (never by name again:
        // the name could resolve differently the second time).
        let addresses: Vec<std::net::SocketAddr> =
            tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
                .await
                .map_err(|e| format!("resolve {host}: {e}"))?
                .collect();
        let Some(address) = addresses.iter().find(|a| destinations.permits(a.ip())) else {
            return Err(match addresses.first() {
                Some(a) => format!(
                    "{} is not a public address (allow it with api.webhook_allow)",
                    a.ip()
                ),
                None => format!("{host} has no address"),
            });
        };
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let request = hyper::Request::post(path)
            .header(
                hyper::header::HOST,
                uri.authority().map_or(host.as_str(), |a| a.as_str()),
            )
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, "tandem-webhooks")
            .header("X-Tandem-Signature", signature)
            .header("X-Tandem-Event", kind)
            .header("X-Tandem-Sequence", seq.to_string())
            .body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(
                body,
            )))
            .map_err(|e| e.to_string())?;
        if https {
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| format!("server name: {e}"))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            send(hyper_util::rt::TokioIo::new(tls), request).await
        } else {
            send(hyper_util::rt::TokioIo::new(tcp), request).await
        }
    }
}

async fn send<T>(
    io: T,
    request: hyper::Request<http_body_util::Full<bytes::Bytes>>,
) -> Result<u16, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    Ok(response.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_covers_time_and_body() {
        let a = signature("s3cret", 1000, b"{}");
        assert!(a.starts_with("t=1000,v1="));
        assert_eq!(a.len(), "t=1000,v1=".len() + 64);
        assert_ne!(a, signature("s3cret", 1001, b"{}"));
        assert_ne!(a, signature("s3cret", 1000, b"{ }"));
        assert_ne!(a, signature("other", 1000, b"{}"));
    }
}

#[cfg(test)]
mod destination_tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_public_addresses_unless_allowed() {
        let d = Destinations::default();
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(d.permits(ip(public)), "{public}");
        }
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!d.permits(ip(private)), "{private}");
        }
        let lan = Destinations {
            allow: vec!["10.0.0.0/8".into(), "::1".into()],
        };
        assert!(lan.permits(ip("10.9.9.9")));
        assert!(lan.permits(ip("::1")));
        assert!(!lan.permits(ip("192.168.1.1")));
    }

    #[test]
    fn address_literals_are_read_from_urls() {
        assert_eq!(
            url_ip_literal("http://127.0.0.1:8080/x"),
            Some(ip("127.0.0.1"))
        );
        assert_eq!(url_ip_literal("https://[::1]/hook"), Some(ip("::1")));
        assert_eq!(url_ip_literal("https://crm.example.com/hook"), None);
    }
}
