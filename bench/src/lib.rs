//! Load generators and yardsticks for Tandem and its peers. The binary is `tandem-bench`.

pub mod acd;
pub mod api;
pub mod forward;
pub mod ng_client;
pub mod packet;
pub mod procstat;
pub mod rtp;
pub mod sip;
pub mod sys;
pub mod traffic;

use std::fmt::Write;

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

/// The end table of an RTP run: one header line and one row, then the details.
pub fn format_report(label: &str, r: &rtp::Report) -> String {
    let mut s = format!("{label}\n");
    let _ = writeln!(
        s,
        "{:>6} {:>9} {:>9} {:>7} {:>7} {:>7} {:>8} {:>8} {:>6} {:>9}",
        "calls",
        "offered",
        "relayed",
        "loss%",
        "p50µs",
        "p99µs",
        "p99.9µs",
        "maxµs",
        "CPU%",
        "CPUµs/pkt"
    );
    let _ = writeln!(
        s,
        "{:>6} {:>9.0} {:>9.0} {:>7.3} {:>7} {:>7} {:>8} {:>8} {:>6} {:>9}",
        r.calls,
        r.offered_pps,
        r.relayed_pps,
        r.loss_pct,
        r.latency_p50_us,
        r.latency_p99_us,
        r.latency_p999_us,
        r.latency_max_us,
        opt(r.target_cpu_pct, 1),
        opt(r.target_cpu_us_per_packet, 2),
    );
    let _ = writeln!(
        s,
        "  setup: {} calls in {:.2} s, {} failed{}",
        r.calls,
        r.setup_s,
        r.calls_failed,
        r.failures
            .iter()
            .map(|(why, n)| format!(" [{n}× {why}]"))
            .collect::<String>()
    );
    let _ = writeln!(
        s,
        "  packets: {} sent, {} received in the window; {} streams, {} with loss, {} dead in the \
         last second; {} reordered, {} duplicates",
        r.sent,
        r.received,
        r.streams,
        r.streams_with_loss,
        r.dead_streams,
        r.reordered,
        r.duplicates
    );
    let d = &r.deletes;
    let _ = writeln!(
        s,
        "  delete: {} ok, {} failed{}",
        d.ok,
        d.failed,
        d.relay_rtp_packets
            .map(|p| format!("; relay counted {p} RTP packets"))
            .unwrap_or_default()
    );
    if let Some(b) = r.target_rss_bytes_per_call {
        let _ = writeln!(s, "  target memory: {b:.0} bytes RSS per call");
    }
    if let Some(n) = r.streams_not_recovered {
        let _ = writeln!(
            s,
            "  recovery: {n} streams never recovered; max {} ms, p99 {} ms",
            opt(r.recovery_max_ms, 1),
            opt(r.recovery_p99_ms, 1)
        );
    }
    s
}
