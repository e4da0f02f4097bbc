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

fn demo_config(io: Option<String>, data_dir: std::path::PathBuf) -> anyhow::Result<Config> {
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
    // Embedded storage in a fresh directory: the tenant, agents and routes come from the API.
    cfg.storage.data_dir = data_dir;
    cfg.api.admin_password = Some(random_password());
    cfg.validate()?;
    Ok(cfg)
}

fn random_password() -> String {
    let bytes: [u8; 12] = tandem_controlplane::api::auth::random_bytes();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A minimal HTTP/1.1 JSON request to our own API (the demo speaks to it as any client would).
fn api(
    http: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    use std::io::Read;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut stream = std::net::TcpStream::connect(http)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {http}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status: u16 = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let text = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    if !(200..300).contains(&status) {
        anyhow::bail!("{method} {path}: HTTP {status}: {text}");
    }
    Ok(serde_json::from_str(text).unwrap_or(serde_json::Value::Null))
}

/// The demonstration tenant, made the way a BPO's provisioning script would.
fn provision(http: SocketAddr, admin: &str) -> anyhow::Result<String> {
    use serde_json::json;
    api(
        http,
        admin,
        "POST",
        "/api/v1/tenants",
        Some(
            json!({"name": "demo", "domain": "demo.local", "display_name": "Demo Contact Centre", "country_code": "44"}),
        ),
    )?;
    let t = "/api/v1/tenants/demo";
    api(
        http,
        admin,
        "POST",
        &format!("{t}/users"),
        Some(
            json!({"username": "sam", "display_name": "Sam (supervisor)", "role": "supervisor", "password": random_password()}),
        ),
    )?;
    for (i, agent) in AGENTS.iter().enumerate() {
        api(
            http,
            admin,
            "POST",
            &format!("{t}/users"),
            Some(json!({"username": agent, "role": "agent", "password": random_password()})),
        )?;
        api(
            http,
            admin,
            "POST",
            &format!("{t}/sip-accounts"),
            Some(json!({"username": agent, "password": PASSWORD})),
        )?;
        api(
            http,
            admin,
            "POST",
            &format!("{t}/routes"),
            Some(
                json!({"pattern": format!("200{}", i + 1), "target": format!("user:{agent}"), "position": 10 * (i + 1)}),
            ),
        )?;
    }
    // The callers arrive as a carrier trunk would: trusted by source address.
    api(
        http,
        admin,
        "POST",
        &format!("{t}/trunks"),
        Some(json!({"name": "callers", "address": "127.0.0.1:5999", "allow": ["127.0.0.1"]})),
    )?;
    let token = api(
        http,
        admin,
        "POST",
        &format!("{t}/tokens"),
        Some(json!({"name": "demo explorer", "role": "tenant_admin", "expires_in_s": 86400})),
    )?;
    token["token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no token in the API's answer"))
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let data_dir = std::env::temp_dir().join(format!("tandem-demo-{}", std::process::id()));
    let cfg = demo_config(args.io, data_dir.clone())?;
    let appliance = Appliance::start(&cfg)?;
    let sip = appliance
        .sip_addr
        .ok_or_else(|| anyhow::anyhow!("SIP is not enabled"))?;
    let http = appliance.http_addr;
    let registry = appliance.registry.clone();
    let admin = appliance
        .block_on(tandem_controlplane::api::tenants::system_token(
            &appliance.api.storage,
            "demo provisioning",
        ))
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let token = provision(http, &admin)?;
    println!(
        "Tandem demo: {} SIP calls at {} cps to 3 registered agents via {sip}, {:.0} s each (ng for Kamailio on {}).",
        args.calls, args.cps, args.hold_s, appliance.ng_addr
    );
    println!("  Tenant, users, SIP accounts, routes and trunk were provisioned through the API at http://{http}/api/v1 (storage: SQLite in {}).", data_dir.display());
    println!("  Explore it while the demo runs (this token is the demo tenant's administrator):");
    println!("    export TOKEN={token}");
    println!("    curl -s -H \"Authorization: Bearer $TOKEN\" 'http://{http}/api/v1/tenants/demo/calls?limit=5&sort=-started'");
    println!("    curl -s -H \"Authorization: Bearer $TOKEN\" http://{http}/api/v1/tenants/demo/sip-accounts");
    println!("    curl -s http://{http}/api/v1/openapi.json | head -c 300;  curl -s http://{http}/metrics | grep -E 'tandem_(sip|dp|api)_'");

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
    // Every finished call has a durable record by now (replies waited for them).
    let stored = appliance_calls(http, &token)?;
    row("call records in storage (API)", stored.to_string());
    println!("  └──────────────────────────────────┴──────────────────────────────┘");
    println!(
        "  (RTP in flight when a call hangs up is not returned: expect slightly under 100 %.)"
    );
    appliance.stop();
    let _ = std::fs::remove_dir_all(&data_dir);
    if stored as u64 != report.attempted {
        anyhow::bail!(
            "{stored} call records stored for {} calls",
            report.attempted
        );
    }
    if report.failed > 0 || report.answered == 0 || returned < 95.0 {
        anyhow::bail!("the demo did not complete cleanly (see the table above)");
    }
    Ok(())
}

/// Call records the API holds for the demo tenant, counted page by page.
fn appliance_calls(http: SocketAddr, token: &str) -> anyhow::Result<usize> {
    let mut count = 0;
    let mut offset = 0;
    loop {
        let page = api(
            http,
            token,
            "GET",
            &format!("/api/v1/tenants/demo/calls?limit=500&offset={offset}"),
            None,
        )?;
        count += page["items"].as_array().map_or(0, |a| a.len());
        match page["next_offset"].as_i64() {
            Some(next) => offset = next,
            None => return Ok(count),
        }
    }
}
