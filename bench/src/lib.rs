//! Load generators and yardsticks for Tandem and its peers. The binary is `tandem-bench`.

pub mod forward;
pub mod ng_client;
pub mod procstat;
pub mod rtp;

/// The end table of an RTP run, as people read it.
pub fn format_report(label: &str, r: &rtp::Report) -> String {
    let opt = |v: Option<f64>, digits: usize| {
        v.map(|x| format!("{x:.digits$}"))
            .unwrap_or_else(|| "-".into())
    };
    let mut s = format!(
        "{label}\n  calls            {} set up, {} failed{}\n  offered          {:.0} pps\n  relayed          {:.0} pps\n  \
         loss             {:.3} % ({} of {} packets)\n  latency          p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs\n  \
         target CPU       {} % ({} µs per relayed packet)\n  streams          {} ({} dead in the last second, {} reordered packets)\n",
        r.calls,
        r.calls_failed,
        r.first_failure.as_ref().map(|f| format!(" (first: {f})")).unwrap_or_default(),
        r.offered_pps,
        r.relayed_pps,
        r.loss_pct,
        r.sent.saturating_sub(r.received),
        r.sent,
        r.latency_p50_us,
        r.latency_p99_us,
        r.latency_p999_us,
        r.latency_max_us,
        opt(r.target_cpu_pct, 1),
        opt(r.target_cpu_us_per_packet, 2),
        r.streams,
        r.dead_streams,
        r.reordered,
    );
    if let Some(b) = r.target_rss_bytes_per_call {
        s.push_str(&format!("  target memory    {b:.0} bytes RSS per call\n"));
    }
    if let Some(n) = r.streams_not_recovered {
        s.push_str(&format!(
            "  recovery         {} streams never recovered; max {} ms, p99 {} ms\n",
            n,
            opt(r.recovery_max_ms, 1),
            opt(r.recovery_p99_ms, 1)
        ));
    }
    s
}
