//! SIP counters for Prometheus: requests and responses by method and code, dialogs and
//! registrations, call outcomes, setup-time histogram and protection events.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the per-leg quality histograms observed when a call ends.
pub const MOS_BOUNDS: [f64; 10] = [1.0, 2.0, 2.5, 3.0, 3.5, 3.8, 4.0, 4.2, 4.3, 4.4];
pub const LOSS_BOUNDS: [f64; 8] = [0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2];
pub const JITTER_BOUNDS_S: [f64; 9] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2];

/// A fixed-bucket histogram of atomics (cumulative only when rendered).
struct Histogram<const N: usize> {
    bounds: [f64; N],
    buckets: [AtomicU64; N],
    overflow: AtomicU64,
    /// Sum × 1e6, so it stays an integer atomic.
    sum_micro: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    fn new(bounds: [f64; N]) -> Self {
        Histogram {
            bounds,
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            overflow: AtomicU64::new(0),
            sum_micro: AtomicU64::new(0),
        }
    }

    fn observe(&self, v: f64) {
        match self.bounds.iter().position(|&b| v <= b) {
            Some(i) => self.buckets[i].fetch_add(1, Relaxed),
            None => self.overflow.fetch_add(1, Relaxed),
        };
        self.sum_micro
            .fetch_add((v.max(0.0) * 1e6).round() as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.overflow.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micro.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// Per-leg (caller, callee) quality of ended calls.
struct QualityHistograms {
    mos: [Histogram<{ MOS_BOUNDS.len() }>; 2],
    loss: [Histogram<{ LOSS_BOUNDS.len() }>; 2],
    jitter: [Histogram<{ JITTER_BOUNDS_S.len() }>; 2],
}

impl Default for QualityHistograms {
    fn default() -> Self {
        QualityHistograms {
            mos: std::array::from_fn(|_| Histogram::new(MOS_BOUNDS)),
            loss: std::array::from_fn(|_| Histogram::new(LOSS_BOUNDS)),
            jitter: std::array::from_fn(|_| Histogram::new(JITTER_BOUNDS_S)),
        }
    }
}

const LEG_LABELS: [&str; 2] = ["caller", "callee"];

/// Upper bounds of the call-setup histogram, in milliseconds.
pub const SETUP_BOUNDS_MS: [u64; 12] = [1, 2, 5, 10, 20, 50, 100, 250, 500, 1000, 5000, 30000];

#[derive(Default)]
struct ByLabel {
    requests_in: BTreeMap<String, u64>,
    requests_out: BTreeMap<String, u64>,
    responses_in: BTreeMap<u16, u64>,
    responses_out: BTreeMap<u16, u64>,
    calls_ended: BTreeMap<&'static str, u64>,
    rate_limited: BTreeMap<&'static str, u64>,
    trunks_registered: BTreeMap<String, bool>,
    /// (caller leg's codec, callee leg's codec) → calls.
    transcoded: BTreeMap<(String, String), u64>,
}

#[derive(Default)]
pub struct SipMetrics {
    labels: Mutex<ByLabel>,
    pub active_calls: AtomicU64,
    pub registered_contacts: AtomicU64,
    pub calls_started: AtomicU64,
    pub malformed: AtomicU64,
    pub auth_failures: AtomicU64,
    pub auth_lockouts: AtomicU64,
    pub over_limit: AtomicU64,
    pub media_failures: AtomicU64,
    pub transfers: AtomicU64,
    pub cdr_hold_expired: AtomicU64,
    pub cdr_dropped: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    setup_buckets: [AtomicU64; SETUP_BOUNDS_MS.len() + 1],
    setup_sum_us: AtomicU64,
    quality: QualityHistograms,
}

fn method_label(method: &str) -> String {
    const KNOWN: [&str; 13] = [
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "REGISTER",
        "OPTIONS",
        "INFO",
        "UPDATE",
        "PRACK",
        "REFER",
        "NOTIFY",
        "SUBSCRIBE",
        "MESSAGE",
    ];
    // Unknown methods share one label so hostile input cannot grow the series.
    if KNOWN.contains(&method) {
        method.to_string()
    } else {
        "other".to_string()
    }
}

impl SipMetrics {
    fn with<F: FnOnce(&mut ByLabel)>(&self, f: F) {
        if let Ok(mut l) = self.labels.lock() {
            f(&mut l);
        }
    }

    pub fn request_in(&self, method: &str) {
        self.with(|l| *l.requests_in.entry(method_label(method)).or_default() += 1);
    }
    pub fn request_out(&self, method: &str) {
        self.with(|l| *l.requests_out.entry(method_label(method)).or_default() += 1);
    }
    pub fn response_in(&self, code: u16) {
        self.with(|l| *l.responses_in.entry(code).or_default() += 1);
    }
    pub fn response_out(&self, code: u16) {
        self.with(|l| *l.responses_out.entry(code).or_default() += 1);
    }
    pub fn call_ended(&self, disposition: &'static str) {
        self.with(|l| *l.calls_ended.entry(disposition).or_default() += 1);
    }
    /// A call started transcoding between these codecs (caller's leg, callee's leg).
    pub fn call_transcoded(&self, caller: &str, callee: &str) {
        let key = (caller.to_string(), callee.to_string());
        self.with(|l| *l.transcoded.entry(key).or_default() += 1);
    }
    pub fn rate_limited(&self, method: &'static str) {
        self.with(|l| *l.rate_limited.entry(method).or_default() += 1);
    }
    pub fn call_started(&self) {
        self.calls_started.fetch_add(1, Relaxed);
    }
    pub fn malformed(&self) {
        self.malformed.fetch_add(1, Relaxed);
    }
    pub fn auth_failure(&self) {
        self.auth_failures.fetch_add(1, Relaxed);
    }
    pub fn auth_locked(&self) {
        self.auth_lockouts.fetch_add(1, Relaxed);
    }
    pub fn over_limit(&self) {
        self.over_limit.fetch_add(1, Relaxed);
    }
    pub fn media_failure(&self) {
        self.media_failures.fetch_add(1, Relaxed);
    }
    pub fn trunk_registered(&self, trunk: &str, registered: bool) {
        self.with(|l| {
            l.trunks_registered.insert(trunk.to_string(), registered);
        });
    }
    /// Forgets trunks that are no longer registered to (removed from the directory).
    pub fn set_trunks(&self, trunks: Vec<String>) {
        self.with(|l| l.trunks_registered.retain(|t, _| trunks.contains(t)));
    }
    pub fn cdr_hold_expired(&self) {
        self.cdr_hold_expired.fetch_add(1, Relaxed);
    }
    pub fn cdr_dropped(&self) {
        self.cdr_dropped.fetch_add(1, Relaxed);
    }
    pub fn transferred(&self) {
        self.transfers.fetch_add(1, Relaxed);
    }
    pub fn bytes_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Relaxed);
    }
    pub fn bytes_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Relaxed);
    }
    pub fn set_gauges(&self, calls: usize, contacts: usize) {
        self.active_calls.store(calls as u64, Relaxed);
        self.registered_contacts.store(contacts as u64, Relaxed);
    }
    /// An ended call's media quality, per leg with RTP (`crate::quality`).
    pub fn call_quality(&self, media: &tandem_dataplane::api::SessionStats) {
        for (leg, stats) in media.legs.iter().enumerate() {
            let Some(score) = crate::quality::score(&stats.quality) else {
                continue;
            };
            self.quality.loss[leg].observe(score.loss_ratio);
            if let Some(mos) = score.mos {
                self.quality.mos[leg].observe(mos);
            }
            if let Some(ms) = score.max_jitter_ms {
                self.quality.jitter[leg].observe(ms / 1000.0);
            }
        }
    }

    pub fn setup_time(&self, d: Duration) {
        let ms = d.as_secs_f64() * 1000.0;
        let i = SETUP_BOUNDS_MS
            .iter()
            .position(|&b| ms <= b as f64)
            .unwrap_or(SETUP_BOUNDS_MS.len());
        self.setup_buckets[i].fetch_add(1, Relaxed);
        self.setup_sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }

    pub fn render(&self, out: &mut String) {
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
        };
        if let Ok(l) = self.labels.lock() {
            family(
                out,
                "tandem_sip_requests_total",
                "counter",
                "SIP requests by direction and method.",
            );
            for (dir, map) in [("in", &l.requests_in), ("out", &l.requests_out)] {
                for (m, n) in map {
                    let _ = writeln!(
                        out,
                        "tandem_sip_requests_total{{direction=\"{dir}\",method=\"{m}\"}} {n}"
                    );
                }
            }
            family(
                out,
                "tandem_sip_responses_total",
                "counter",
                "SIP responses by direction and status code.",
            );
            for (dir, map) in [("in", &l.responses_in), ("out", &l.responses_out)] {
                for (c, n) in map {
                    let _ = writeln!(
                        out,
                        "tandem_sip_responses_total{{direction=\"{dir}\",code=\"{c}\"}} {n}"
                    );
                }
            }
            family(
                out,
                "tandem_sip_calls_ended_total",
                "counter",
                "Calls ended, by disposition.",
            );
            for (d, n) in &l.calls_ended {
                let _ = writeln!(
                    out,
                    "tandem_sip_calls_ended_total{{disposition=\"{d}\"}} {n}"
                );
            }
            family(
                out,
                "tandem_sip_trunk_registered",
                "gauge",
                "1 while our registration at the trunk is current.",
            );
            for (t, up) in &l.trunks_registered {
                let _ = writeln!(
                    out,
                    "tandem_sip_trunk_registered{{trunk=\"{t}\"}} {}",
                    u8::from(*up)
                );
            }
            family(
                out,
                "tandem_sip_rate_limited_total",
                "counter",
                "Requests refused by the per-source rate limit.",
            );
            for (m, n) in &l.rate_limited {
                let _ = writeln!(out, "tandem_sip_rate_limited_total{{method=\"{m}\"}} {n}");
            }
            family(
                out,
                "tandem_sip_transcoded_calls_total",
                "counter",
                "Calls the data plane transcoded, by the codecs of the caller's and the callee's legs.",
            );
            for ((caller, callee), n) in &l.transcoded {
                let _ = writeln!(
                    out,
                    "tandem_sip_transcoded_calls_total{{caller=\"{caller}\",callee=\"{callee}\"}} {n}"
                );
            }
        }
        let gauges = [
            (
                "tandem_sip_active_calls",
                "gauge",
                "Calls in progress (dialog pairs).",
                &self.active_calls,
            ),
            (
                "tandem_sip_registered_contacts",
                "gauge",
                "Registered contact bindings.",
                &self.registered_contacts,
            ),
            (
                "tandem_sip_calls_started_total",
                "counter",
                "Calls accepted for routing.",
                &self.calls_started,
            ),
            (
                "tandem_sip_malformed_total",
                "counter",
                "Messages dropped as unreadable (those answerable got 400).",
                &self.malformed,
            ),
            (
                "tandem_sip_auth_failures_total",
                "counter",
                "Failed digest authentications.",
                &self.auth_failures,
            ),
            (
                "tandem_sip_auth_lockouts_total",
                "counter",
                "Requests refused because the source and user are locked out.",
                &self.auth_lockouts,
            ),
            (
                "tandem_sip_over_limit_total",
                "counter",
                "Calls refused by a concurrent-call limit.",
                &self.over_limit,
            ),
            (
                "tandem_sip_media_failures_total",
                "counter",
                "Calls refused because the data plane could not allocate media.",
                &self.media_failures,
            ),
            (
                "tandem_sip_transfers_total",
                "counter",
                "Transfers (REFER, blind or attended) completed.",
                &self.transfers,
            ),
            (
                "tandem_sip_cdr_hold_expired_total",
                "counter",
                "Replies sent before their call record was durable (storage slow or down).",
                &self.cdr_hold_expired,
            ),
            (
                "tandem_sip_cdr_dropped_total",
                "counter",
                "Call records lost because the storage queue was full.",
                &self.cdr_dropped,
            ),
            (
                "tandem_sip_received_bytes_total",
                "counter",
                "SIP bytes received.",
                &self.bytes_in,
            ),
            (
                "tandem_sip_sent_bytes_total",
                "counter",
                "SIP bytes sent.",
                &self.bytes_out,
            ),
        ];
        for (name, kind, help, v) in gauges {
            family(out, name, kind, help);
            let _ = writeln!(out, "{name} {}", v.load(Relaxed));
        }
        family(
            out,
            "tandem_sip_call_setup_seconds",
            "histogram",
            "INVITE received to 200 OK sent to the caller.",
        );
        let mut cumulative = 0;
        for (i, bound) in SETUP_BOUNDS_MS.iter().enumerate() {
            cumulative += self.setup_buckets[i].load(Relaxed);
            let _ = writeln!(
                out,
                "tandem_sip_call_setup_seconds_bucket{{le=\"{}\"}} {cumulative}",
                *bound as f64 / 1000.0
            );
        }
        cumulative += self.setup_buckets[SETUP_BOUNDS_MS.len()].load(Relaxed);
        let _ = writeln!(
            out,
            "tandem_sip_call_setup_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            out,
            "tandem_sip_call_setup_seconds_sum {}",
            self.setup_sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "tandem_sip_call_setup_seconds_count {cumulative}");
        let q = &self.quality;
        family(
            out,
            "tandem_sip_call_mos",
            "histogram",
            "E-model MOS of each leg's incoming RTP over an ended call (G.711 and G.729 legs).",
        );
        for (leg, h) in LEG_LABELS.iter().zip(&q.mos) {
            h.render(out, "tandem_sip_call_mos", &format!("leg=\"{leg}\""));
        }
        family(
            out,
            "tandem_sip_call_packet_loss_ratio",
            "histogram",
            "Share of each leg's incoming RTP lost over an ended call.",
        );
        for (leg, h) in LEG_LABELS.iter().zip(&q.loss) {
            h.render(
                out,
                "tandem_sip_call_packet_loss_ratio",
                &format!("leg=\"{leg}\""),
            );
        }
        family(
            out,
            "tandem_sip_call_max_jitter_seconds",
            "histogram",
            "Highest RFC 3550 interarrival jitter of each leg's incoming RTP over an ended call.",
        );
        for (leg, h) in LEG_LABELS.iter().zip(&q.jitter) {
            h.render(
                out,
                "tandem_sip_call_max_jitter_seconds",
                &format!("leg=\"{leg}\""),
            );
        }
    }
}
