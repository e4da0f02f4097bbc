//! `tandem demo`: the appliance on embedded defaults with a demonstration tenant, three agent
//! phones that register with digest authentication, and callers that dial them over SIP. Every
//! call is bridged by the B2BUA with its media anchored in the data plane; RTP flows both ways.
//! A live progress line, then a closing report.

use crate::app::Appliance;
use clap::Args;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem_bench::sip::{UacConfig, UasConfig};
use tandem_controlplane::config::Config;
use tandem_controlplane::sip::config::{AccountConfig, RouteConfig, TenantConfig, TrunkConfig};
use tandem_dataplane::stats::DropReason;

#[derive(Args)]
pub struct DemoArgs {
    /// Calls to place.
    #[arg(long, default_value_t = 300)]
    calls: usize,
    /// New calls per second.
    #[arg(long, default_value_t = 60.0)]
    cps: f64,
    /// Talk time of each call, in seconds (20 ms PCMA both ways).
    #[arg(long, default_value_t = 5.0)]
    hold_s: f64,
    /// I/O backend: uring or portable.
    #[arg(long)]
    io: Option<String>,
}

const AGENTS: [&str; 3] = ["agent1", "agent2", "agent3"];
const PASSWORD: &str = "demo-secret";

fn demo_config(io: Option<String>) -> anyhow::Result<Config> {
    let mut cfg = Config::default();
    // Ephemeral ports, so the demo runs beside an appliance that holds the defaults.
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.ng.listen = any;
    cfg.http.listen = any;
    cfg.sip.listen_udp = Some(any);
    cfg.sip.listen_tcp = Some(any);
    cfg.sip.listen_tls = Some(any);
    if let Some(io) = io {
        cfg.dataplane.io = io;
    }
    cfg.sip.tenants.push(TenantConfig {
        name: "demo".into(),
        domain: "demo.local".into(),
        max_calls: None,
        country_code: Some("44".into()),
    });
    for (i, agent) in AGENTS.iter().enumerate() {
        cfg.sip.accounts.push(AccountConfig {
            tenant: "demo".into(),
            user: agent.to_string(),
            password: PASSWORD.into(),
        });
        cfg.sip.routes.push(RouteConfig {
            tenant: "demo".into(),
            pattern: format!("200{}", i + 1),
            target: format!("user:{agent}"),
        });
    }
    // The callers arrive as a carrier trunk would: trusted by source address.
    cfg.sip.trunks.push(TrunkConfig {
        name: "callers".into(),
        tenant: "demo".into(),
        address: any,
        allow: vec!["127.0.0.1".into()],
        username: None,
        password: None,
        register: false,
        register_expires_s: 600,
    });
    cfg.validate()?;
    Ok(cfg)
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let cfg = demo_config(args.io)?;
    let appliance = Appliance::start(&cfg)?;
    let sip = appliance
        .sip_addr
        .ok_or_else(|| anyhow::anyhow!("SIP is not enabled"))?;
    let registry = appliance.registry.clone();
    println!(
        "Tandem demo: {} SIP calls at {} cps to 3 registered agents via {sip}, {:.0} s each (ng for Kamailio on {}).\n  Watch it live: curl -s http://{}/metrics | grep -E 'tandem_(sip|dp)_'   Call records: curl -s http://{}/calls",
        args.calls, args.cps, args.hold_s, appliance.ng_addr, appliance.http_addr, appliance.http_addr
    );

    // The agents' phones: register with digest auth, answer, echo the caller's audio.
    let stop = Arc::new(AtomicBool::new(false));
    let uas_stop = stop.clone();
    let uas_cfg = UasConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        registrar: Some(sip),
        users: AGENTS.iter().map(|a| a.to_string()).collect(),
        password: PASSWORD.into(),
        domain: "demo.local".into(),
        ring_ms: 200,
    };
    let phones =
        std::thread::spawn(move || tandem_bench::sip::run_uas(&uas_cfg, &uas_stop, |_| {}));
    let registered = || registry.sip.registered_contacts.load(Ordering::Relaxed);
    let waited = Instant::now();
    while registered() < AGENTS.len() as u64 && waited.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("  agents registered: {} of {}", registered(), AGENTS.len());

    let relayed = || -> u64 {
        registry
            .cores
            .iter()
            .map(|c| c.snapshot().relayed_packets)
            .sum()
    };
    let uac = UacConfig {
        target: sip,
        cps: args.cps,
        max_concurrent: 10_000,
        calls: args.calls,
        hold_ms: (args.hold_s * 1000.0) as u64,
        to_user: "2001".into(),
        to_user_range: Some(AGENTS.len() as u32),
        from_user: "02079460000".into(),
        rtp: true,
        ..UacConfig::default()
    };
    let mut last = (0.0f64, 0u64);
    let report = tandem_bench::sip::run_uac(&uac, |p| {
        let now = relayed();
        let rate = (now - last.1) as f64 / (p.elapsed_s - last.0).max(1e-3);
        eprint!(
            "\r  [{:4.1}s] calls placed {:>5}  answered {:>5}  failed {:>3}  in progress {:>4}  RTP relayed by Tandem {:>8} ({:>6.0} pps)   ",
            p.elapsed_s, p.attempted, p.answered, p.failed, p.active, now, rate
        );
        let _ = std::io::stderr().flush();
        last = (p.elapsed_s, now);
    })?;
    eprintln!();
    // Let the last BYEs and data-plane deletes land before reading the counters.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let phones = phones
        .join()
        .map_err(|_| anyhow::anyhow!("phone thread panicked"))??;

    let snaps: Vec<_> = registry.cores.iter().map(|c| c.snapshot()).collect();
    let dropped: u64 = snaps
        .iter()
        .flat_map(|s| DropReason::ALL.map(|r| s.drops[r as usize]))
        .sum();
    let created: u64 = snaps.iter().map(|s| s.sessions_created).sum();
    let active: u64 = snaps.iter().map(|s| s.sessions_active).sum();
    let relayed_total: u64 = snaps.iter().map(|s| s.relayed_packets).sum();
    let returned = if report.rtp_sent > 0 {
        100.0 * report.rtp_received as f64 / report.rtp_sent as f64
    } else {
        0.0
    };
    println!();
    println!("  ┌──────────────────────────────────┬──────────────────────────────┐");
    let row = |k: &str, v: String| println!("  │ {k:<32} │ {v:>28} │");
    row("SIP calls placed", report.attempted.to_string());
    row("answered by the agents", report.answered.to_string());
    let failures = if report.failed_by_code.is_empty() {
        "0".to_string()
    } else {
        report
            .failed_by_code
            .iter()
            .map(|(c, n)| format!("{n}×{c}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    row("failed (by final code)", failures);
    row(
        "setup time p50 / p99",
        format!("{:.2} / {:.2} ms", report.setup_p50_ms, report.setup_p99_ms),
    );
    row(
        "(includes 200 ms of ringing)",
        format!("max {:.2} ms", report.setup_max_ms),
    );
    row("agents' phones answered", phones.answered.to_string());
    row("data-plane sessions created", created.to_string());
    row("sessions left open", active.to_string());
    row(
        "RTP sent / returned by callers",
        format!("{} / {}", report.rtp_sent, report.rtp_received),
    );
    row("RTP returned", format!("{returned:.2} %"));
    row("packets relayed by Tandem", relayed_total.to_string());
    row("packets dropped", dropped.to_string());
    println!("  └──────────────────────────────────┴──────────────────────────────┘");
    println!(
        "  (RTP in flight when a call hangs up is not returned: expect slightly under 100 %.)"
    );
    appliance.stop();
    if report.failed > 0 || report.answered == 0 || returned < 95.0 {
        anyhow::bail!("the demo did not complete cleanly (see the table above)");
    }
    Ok(())
}
