//! The HTTP port: `/metrics` for Prometheus and `/health` for load balancers.

use crate::metrics::Registry;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
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
) -> std::io::Result<()> {
    axum::serve(listener, router(registry)).await
}
