//! `tandem demo`: the appliance on embedded defaults, with relayed calls driven through it on
//! loopback by the bench generator, a live progress line, and a closing report.

use crate::app::Appliance;
use clap::Args;
use std::io::Write;
use std::net::SocketAddr;
use tandem_bench::rtp::{self, RtpConfig};
use tandem_controlplane::config::Config;
use tandem_dataplane::stats::DropReason;

#[derive(Args)]
pub struct DemoArgs {
    /// Concurrent relayed calls (each two RTP streams at 50 packets/s).
    #[arg(long, default_value_t = 300)]
    calls: usize,
    /// Seconds of measured media.
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// I/O backend: uring or portable.
    #[arg(long)]
    io: Option<String>,
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let mut cfg = Config::default();
    // Ephemeral signalling ports, so the demo runs beside an appliance that holds the defaults.
    cfg.ng.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.sip.listen_udp = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    cfg.sip.listen_tcp = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    if let Some(io) = args.io {
        cfg.dataplane.io = io;
    }
    cfg.validate()?;
    let appliance = Appliance::start(&cfg)?;
    println!(
        "Tandem demo: {} calls over ng {} for {:.0} s (SIP listens on {}). Watch it live: curl -s http://{}/metrics | grep tandem_dp",
        args.calls,
        appliance.ng_addr,
        args.duration_s,
        appliance.sip_addr.map_or("-".into(), |a| a.to_string()),
        appliance.http_addr
    );
    let registry = appliance.registry.clone();
    let relayed = || -> u64 {
        registry
            .cores
            .iter()
            .map(|c| c.snapshot().relayed_packets)
            .sum()
    };
    let mut last = (0.0f64, 0u64);
    let bench_cfg = RtpConfig {
        ng: appliance.ng_addr,
        calls: args.calls,
        duration_s: args.duration_s,
        ..RtpConfig::default()
    };
    let report = rtp::run(&bench_cfg, |p| {
        if p.elapsed_s - last.0 < 0.95 {
            return;
        }
        let now = relayed();
        let rate = (now - last.1) as f64 / (p.elapsed_s - last.0);
        let active: u64 = registry
            .cores
            .iter()
            .map(|c| c.snapshot().sessions_active)
            .sum();
        eprint!(
            "\r  [{:4.1}s] sessions {:>5}  sent {:>8}  received {:>8}  relayed by Tandem {:>8} ({:>6.0} pps)   ",
            p.elapsed_s, active, p.sent, p.received, now, rate
        );
        let _ = std::io::stderr().flush();
        last = (p.elapsed_s, now);
    })?;
    eprintln!();
    let snaps: Vec<_> = registry.cores.iter().map(|c| c.snapshot()).collect();
    let dropped: u64 = snaps
        .iter()
        .flat_map(|s| DropReason::ALL.map(|r| (r, s.drops[r as usize])))
        .map(|(_, n)| n)
        .sum();
    let created: u64 = snaps.iter().map(|s| s.sessions_created).sum();
    let relayed_total: u64 = snaps.iter().map(|s| s.relayed_packets).sum();
    println!();
    println!("  ┌──────────────────────────────┬──────────────────────────────┐");
    let row = |k: &str, v: String| println!("  │ {k:<28} │ {v:>28} │");
    row(
        "calls set up over ng",
        format!("{} ({} failed)", report.calls, report.calls_failed),
    );
    row("data-plane sessions created", created.to_string());
    row("offered RTP", format!("{:.0} pps", report.offered_pps));
    row(
        "relayed RTP (measured)",
        format!("{:.0} pps", report.relayed_pps),
    );
    row("loss", format!("{:.3} %", report.loss_pct));
    row(
        "latency p50 / p99",
        format!("{} / {} µs", report.latency_p50_us, report.latency_p99_us),
    );
    row(
        "latency p99.9 / max",
        format!("{} / {} µs", report.latency_p999_us, report.latency_max_us),
    );
    row("packets relayed (all)", relayed_total.to_string());
    row("packets dropped", dropped.to_string());
    println!("  └──────────────────────────────┴──────────────────────────────┘");
    appliance.stop();
    if report.calls_failed > 0 || report.loss_pct > 1.0 {
        anyhow::bail!("the demo did not relay cleanly (see the table above)");
    }
    Ok(())
}
