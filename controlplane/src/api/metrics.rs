//! API metrics: requests by route template and status, a latency histogram, authentication
//! failures by reason, webhook deliveries. Rendered into `/metrics` with everything else.

use super::ApiState;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

/// Upper bounds of the latency buckets, seconds.
pub const LATENCY_BOUNDS_S: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
pub struct ApiMetrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: [AtomicU64; LATENCY_BOUNDS_S.len() + 1],
    latency_sum_us: AtomicU64,
    auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    webhook_delivered: AtomicU64,
    webhook_failed_attempts: AtomicU64,
    webhook_given_up: AtomicU64,
    webhook_dropped: AtomicU64,
}

impl ApiMetrics {
    pub fn request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        if let Ok(mut r) = self.requests.lock() {
            *r.entry((method.to_string(), route.to_string(), status))
                .or_default() += 1;
        }
        let bucket = LATENCY_BOUNDS_S
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(LATENCY_BOUNDS_S.len());
        self.latency[bucket].fetch_add(1, Relaxed);
        self.latency_sum_us
            .fetch_add((seconds * 1e6) as u64, Relaxed);
    }

    pub fn auth_failure(&self, reason: &'static str) {
        if let Ok(mut a) = self.auth_failures.lock() {
            *a.entry(reason).or_default() += 1;
        }
    }

    pub fn webhook_attempt(&self, delivered: bool) {
        if delivered {
            self.webhook_delivered.fetch_add(1, Relaxed);
        } else {
            self.webhook_failed_attempts.fetch_add(1, Relaxed);
        }
    }

    pub fn webhook_given_up(&self) {
        self.webhook_given_up.fetch_add(1, Relaxed);
    }

    pub fn webhook_dropped(&self, n: u64) {
        self.webhook_dropped.fetch_add(n, Relaxed);
    }

    pub fn render(&self, out: &mut String) {
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
        };
        family(
            out,
            "tandem_api_requests_total",
            "counter",
            "API requests by method, route template and status.",
        );
        if let Ok(r) = self.requests.lock() {
            for ((method, route, status), n) in r.iter() {
                let _ = writeln!(
                    out,
                    "tandem_api_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        family(
            out,
            "tandem_api_request_duration_seconds",
            "histogram",
            "API request latency, from the first byte read to the response handed to the socket.",
        );
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BOUNDS_S.iter().enumerate() {
            cumulative += self.latency[i].load(Relaxed);
            let _ = writeln!(
                out,
                "tandem_api_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.latency[LATENCY_BOUNDS_S.len()].load(Relaxed);
        let _ = writeln!(
            out,
            "tandem_api_request_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            out,
            "tandem_api_request_duration_seconds_sum {}",
            self.latency_sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "tandem_api_request_duration_seconds_count {cumulative}"
        );
        family(
            out,
            "tandem_api_auth_failures_total",
            "counter",
            "Requests refused for missing or bad credentials, by reason.",
        );
        if let Ok(a) = self.auth_failures.lock() {
            for (reason, n) in a.iter() {
                let _ = writeln!(
                    out,
                    "tandem_api_auth_failures_total{{reason=\"{reason}\"}} {n}"
                );
            }
        }
        family(
            out,
            "tandem_api_webhook_attempts_total",
            "counter",
            "Webhook POSTs by outcome (delivered = 2xx).",
        );
        let _ = writeln!(
            out,
            "tandem_api_webhook_attempts_total{{outcome=\"delivered\"}} {}",
            self.webhook_delivered.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "tandem_api_webhook_attempts_total{{outcome=\"failed\"}} {}",
            self.webhook_failed_attempts.load(Relaxed)
        );
        family(
            out,
            "tandem_api_webhook_given_up_total",
            "counter",
            "Webhook events abandoned after every retry failed.",
        );
        let _ = writeln!(
            out,
            "tandem_api_webhook_given_up_total {}",
            self.webhook_given_up.load(Relaxed)
        );
        family(
            out,
            "tandem_api_webhook_skipped_total",
            "counter",
            "Events not offered to webhooks because the delivery worker fell behind.",
        );
        let _ = writeln!(
            out,
            "tandem_api_webhook_skipped_total {}",
            self.webhook_dropped.load(Relaxed)
        );
    }
}

/// Middleware: counts every request under its route template (`/api/v1/tenants/{tenant}`),
/// never the raw path, so label cardinality stays bounded.
pub async fn track(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let res = next.run(req).await;
    state.metrics.request(
        &method,
        &route,
        res.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    res
}
