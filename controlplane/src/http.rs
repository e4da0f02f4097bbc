//! The HTTP port: `/metrics` for Prometheus, `/health` for load balancers, `/calls` (the most
//! recent call records in memory, for quick looks without a token) and the control API under
//! `/api/v1` (see `api`).

use crate::metrics::Registry;
use crate::sip::b2bua::CallRecord;
use crate::sip::server::CallRecords;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

pub fn router(registry: Arc<Registry>, records: Arc<CallRecords>) -> Router {
    Router::new()
        .route(
            "/calls",
            get(move || {
                let records = records.clone();
                async move {
                    let list: Vec<serde_json::Value> =
                        records.recent(1000).iter().map(record_json).collect();
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        serde_json::json!({ "calls": list }).to_string(),
                    )
                        .into_response()
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        registry.render(),
                    )
                        .into_response()
                }
            }),
        )
        .route("/health", get(|| async { "ok\n" }))
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    records: Arc<CallRecords>,
    api: crate::api::ApiState,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> std::io::Result<()> {
    let app = router(registry, records).merge(crate::api::router(api));
    match tls {
        None => {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .await
        }
        Some(acceptor) => serve_tls(listener, app, acceptor).await,
    }
}

/// HTTPS: each connection's TLS handshake runs in its own task (a slow client stalls nobody),
/// then hyper serves it with upgrades (the events WebSocket).
async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    acceptor: tokio_rustls::TlsAcceptor,
) -> std::io::Result<()> {
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: wait a little rather than spin.
                tracing::warn!("HTTPS accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(addr)));
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp));
            let tls = match handshake.await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!("HTTPS handshake with {addr}: {e}"),
                Err(_) => return tracing::debug!("HTTPS handshake with {addr} timed out"),
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .with_upgrades()
                .await
            {
                tracing::debug!("HTTPS connection from {addr}: {e}");
            }
        });
    }
}

fn record_json(r: &CallRecord) -> serde_json::Value {
    let media = r
        .media
        .as_ref()
        .map(|m| crate::cdr::media_json(m, r.transcoded.as_ref()));
    serde_json::json!({
        "id": r.call,
        "tenant": r.tenant,
        "caller_call_id": r.a_call_id,
        "callee_call_id": r.b_call_id,
        "caller": r.caller,
        "dialled": r.dialled,
        "target": r.target,
        "started_unix_ms": r.started_unix_ms,
        "answered_unix_ms": r.answered_unix_ms,
        "ended_unix_ms": r.ended_unix_ms,
        "setup_ms": r.setup_ms,
        "disposition": r.disposition.as_str(),
        "final_code": r.final_code,
        "ended_by": r.ended_by,
        "codecs": r.codecs,
        "media": media,
    })
}
