//! Prometheus text exposition (format 0.0.4) of the data-plane cores' counters and the ng server's.
//!
//! The cores publish plain counters (see `tandem_dataplane::stats`); this module reads them at
//! scrape time and writes the text format directly. The format is small and stable, and writing it
//! here keeps the per-core counters free of any metrics library's types.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tandem_dataplane::stats::{CoreStats, DropReason, LATENCY_BOUNDS_NS};

/// ng commands we count by name; anything else is counted as "other".
pub const NG_COMMANDS: [&str; 8] = [
    "ping",
    "offer",
    "answer",
    "delete",
    "query",
    "list",
    "statistics",
    "other",
];

/// Counters of the ng server, by command and outcome.
#[derive(Default)]
pub struct NgMetrics {
    ok: [AtomicU64; NG_COMMANDS.len()],
    error: [AtomicU64; NG_COMMANDS.len()],
    /// Datagrams answered from the reply cache (retransmissions).
    pub cached: AtomicU64,
    /// Datagrams that could not be answered at all (no cookie).
    pub unanswerable: AtomicU64,
}

impl NgMetrics {
    pub fn count(&self, command: &str, ok: bool) {
        let i = NG_COMMANDS
            .iter()
            .position(|&c| c == command)
            .unwrap_or(NG_COMMANDS.len() - 1);
        let table = if ok { &self.ok } else { &self.error };
        table[i].fetch_add(1, Relaxed);
    }
}

pub struct Registry {
    pub cores: Vec<Arc<CoreStats>>,
    pub ng: Arc<NgMetrics>,
    pub sip: Arc<crate::sip::metrics::SipMetrics>,
    pub api: Arc<crate::api::metrics::ApiMetrics>,
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

impl Registry {
    pub fn render(&self) -> String {
        let snaps: Vec<_> = self.cores.iter().map(|c| c.snapshot()).collect();
        let mut out = String::with_capacity(8192);
        let per_core =
            |out: &mut String,
             name: &str,
             kind: &str,
             help: &str,
             get: &dyn Fn(&tandem_dataplane::stats::Counters) -> u64| {
                family(out, name, kind, help);
                for (core, s) in snaps.iter().enumerate() {
                    let _ = writeln!(out, "{name}{{core=\"{core}\"}} {}", get(s));
                }
            };
        per_core(
            &mut out,
            "tandem_dp_received_packets_total",
            "counter",
            "Datagrams received on media ports.",
            &|s| s.rx_packets,
        );
        per_core(
            &mut out,
            "tandem_dp_received_bytes_total",
            "counter",
            "Bytes received on media ports.",
            &|s| s.rx_bytes,
        );
        per_core(
            &mut out,
            "tandem_dp_relayed_packets_total",
            "counter",
            "Datagrams relayed to the other leg.",
            &|s| s.relayed_packets,
        );
        per_core(
            &mut out,
            "tandem_dp_relayed_bytes_total",
            "counter",
            "Bytes relayed to the other leg.",
            &|s| s.relayed_bytes,
        );
        per_core(
            &mut out,
            "tandem_dp_played_packets_total",
            "counter",
            "Datagrams the core generated and sent itself (playback: hold music).",
            &|s| s.played_packets,
        );
        per_core(
            &mut out,
            "tandem_dp_played_bytes_total",
            "counter",
            "Bytes of the datagrams in tandem_dp_played_packets_total.",
            &|s| s.played_bytes,
        );
        per_core(
            &mut out,
            "tandem_dp_dtmf_events_total",
            "counter",
            "DTMF keys (RFC 4733 telephone events) reported to the control plane.",
            &|s| s.dtmf_events,
        );
        per_core(
            &mut out,
            "tandem_dp_rtcp_sent_total",
            "counter",
            "RTCP reports the core generated for legs of transcoded sessions (also in tandem_dp_played_packets_total once sent).",
            &|s| s.rtcp_sent,
        );
        per_core(
            &mut out,
            "tandem_dp_rtcp_terminated_total",
            "counter",
            "RTCP from peers of transcoded legs that fed quality and was not relayed (it describes streams the other peer never receives).",
            &|s| s.rtcp_terminated,
        );
        per_core(
            &mut out,
            "tandem_dp_sessions_active",
            "gauge",
            "Sessions currently allocated.",
            &|s| s.sessions_active,
        );
        per_core(
            &mut out,
            "tandem_dp_sessions_created_total",
            "counter",
            "Sessions created.",
            &|s| s.sessions_created,
        );
        per_core(
            &mut out,
            "tandem_dp_sessions_refused_total",
            "counter",
            "Session requests refused (load limit or no ports).",
            &|s| s.sessions_refused,
        );
        per_core(
            &mut out,
            "tandem_dp_sessions_timed_out_total",
            "counter",
            "Sessions ended by media inactivity.",
            &|s| s.sessions_timed_out,
        );
        per_core(
            &mut out,
            "tandem_dp_events_lost_total",
            "counter",
            "Core events dropped because the control plane did not drain them.",
            &|s| s.events_lost,
        );
        per_core(
            &mut out,
            "tandem_dp_loop_wakeups_total",
            "counter",
            "Core loop iterations (a measure of polling effort).",
            &|s| s.loop_wakeups,
        );

        family(
            &mut out,
            "tandem_dp_dropped_packets_total",
            "counter",
            "Datagrams not relayed, by reason.",
        );
        for (core, s) in snaps.iter().enumerate() {
            for reason in DropReason::ALL {
                let _ = writeln!(
                    out,
                    "tandem_dp_dropped_packets_total{{core=\"{core}\",reason=\"{}\"}} {}",
                    reason.label(),
                    s.drops[reason as usize]
                );
            }
        }

        let name = "tandem_dp_relay_latency_seconds";
        family(
            &mut out,
            name,
            "histogram",
            "Kernel receive timestamp to send completion, per relayed packet.",
        );
        for (core, s) in snaps.iter().enumerate() {
            let mut cumulative = 0;
            for (i, bound) in LATENCY_BOUNDS_NS.iter().enumerate() {
                cumulative += s.latency_buckets[i];
                let _ = writeln!(
                    out,
                    "{name}_bucket{{core=\"{core}\",le=\"{}\"}} {cumulative}",
                    *bound as f64 / 1e9
                );
            }
            cumulative += s.latency_buckets[LATENCY_BOUNDS_NS.len()];
            let _ = writeln!(
                out,
                "{name}_bucket{{core=\"{core}\",le=\"+Inf\"}} {cumulative}"
            );
            let _ = writeln!(
                out,
                "{name}_sum{{core=\"{core}\"}} {}",
                s.latency_sum_ns as f64 / 1e9
            );
            let _ = writeln!(out, "{name}_count{{core=\"{core}\"}} {cumulative}");
        }

        family(
            &mut out,
            "tandem_ng_requests_total",
            "counter",
            "ng requests answered, by command and result.",
        );
        for (i, command) in NG_COMMANDS.iter().enumerate() {
            for (result, table) in [("ok", &self.ng.ok), ("error", &self.ng.error)] {
                let _ = writeln!(
                    out,
                    "tandem_ng_requests_total{{command=\"{command}\",result=\"{result}\"}} {}",
                    table[i].load(Relaxed)
                );
            }
        }
        family(
            &mut out,
            "tandem_ng_cached_replies_total",
            "counter",
            "Retransmitted ng requests answered from the reply cache.",
        );
        let _ = writeln!(
            out,
            "tandem_ng_cached_replies_total {}",
            self.ng.cached.load(Relaxed)
        );
        family(
            &mut out,
            "tandem_ng_unanswerable_total",
            "counter",
            "ng datagrams without a cookie (nothing to answer).",
        );
        let _ = writeln!(
            out,
            "tandem_ng_unanswerable_total {}",
            self.ng.unanswerable.load(Relaxed)
        );
        self.sip.render(&mut out);
        self.api.render(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_dataplane::stats::Counters;

    #[test]
    fn renders_cumulative_histogram_and_labels() {
        let core = Arc::new(CoreStats::default());
        let mut c = Counters {
            relayed_packets: 3,
            played_packets: 50,
            rtcp_sent: 4,
            rtcp_terminated: 3,
            ..Counters::default()
        };
        c.record_latency(1_000);
        c.record_latency(2_000_000);
        c.drop(DropReason::Malformed, 4);
        core.publish(&c);
        let ng = Arc::new(NgMetrics::default());
        ng.count("offer", true);
        let text = Registry {
            sip: Arc::default(),
            api: Arc::default(),
            cores: vec![core],
            ng,
        }
        .render();
        assert!(text.contains("tandem_dp_relayed_packets_total{core=\"0\"} 3\n"));
        assert!(text.contains("tandem_dp_played_packets_total{core=\"0\"} 50\n"));
        assert!(text.contains("tandem_dp_rtcp_sent_total{core=\"0\"} 4\n"));
        assert!(text.contains("tandem_dp_rtcp_terminated_total{core=\"0\"} 3\n"));
        assert!(
            text.contains("tandem_dp_dropped_packets_total{core=\"0\",reason=\"playback\"} 0\n")
        );
        assert!(
            text.contains("tandem_dp_relay_latency_seconds_bucket{core=\"0\",le=\"0.000005\"} 1\n")
        );
        assert!(text.contains("tandem_dp_relay_latency_seconds_bucket{core=\"0\",le=\"+Inf\"} 2\n"));
        assert!(
            text.contains("tandem_dp_dropped_packets_total{core=\"0\",reason=\"malformed\"} 4\n")
        );
        assert!(text.contains("tandem_ng_requests_total{command=\"offer\",result=\"ok\"} 1\n"));
    }
}
