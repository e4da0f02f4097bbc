//! `tandem demo`: the appliance on embedded defaults running a small contact centre. A
//! demonstration tenant is provisioned through the control API (SIP accounts, skills, two
//! queues with different skills, agents and their memberships, routes to the queues); the
//! agents' phones (simulated SIP user agents) register with digest authentication and the agents
//! log in through the API (one is on a break). Callers arrive from a trusted trunk and dial the
//! two queues; each hears the queue's spoken greeting, then waits with the hold music while the
//! ACD offers it to an agent with the queue's skill; the B2BUA bridges the call with its media
//! anchored in the data plane, RTP flows both ways. Some agents' phones take G.722 only while the
//! callers send PCMA: their calls are transcoded. A live line shows the queues, the agents by
//! state, service level and ASA; the closing report shows the transcoded calls, the legs' MOS and
//! the queues' figures (METRICS.md) from the durable queue log, and checks every call has its
//! record.

use crate::app::Appliance;
use clap::Args;
use std::collections::BTreeMap;
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
    #[arg(long, default_value_t = 200)]
    calls: usize,
    /// New calls per second.
    #[arg(long, default_value_t = 5.0)]
    cps: f64,
    /// Talk time of each call, in seconds (20 ms PCMA both ways).
    #[arg(long, default_value_t = 3.0)]
    hold_s: f64,
    /// Agents (one of them spends the demo on a break).
    #[arg(long, default_value_t = 20)]
    agents: usize,
    /// I/O backend: uring or portable.
    #[arg(long)]
    io: Option<String>,
}

const PASSWORD: &str = "demo-secret";
/// Queue, the number that reaches it, the skill it needs.
const QUEUES: [(&str, &str, &str); 2] =
    [("sales", "3001", "sales"), ("support", "3002", "support")];

/// Every this-many-th agent's phone (agent4, agent8, …) takes G.722 only: its calls from the
/// PCMA callers are transcoded.
const G722_EVERY: usize = 4;

/// agent1..agentN: the first half sell, the second half do support, and a fifth of each half,
/// next to the other, also helps the other queue (tier 1: offered after that queue's own).
fn agents(n: usize) -> Vec<(String, Vec<(&'static str, u8)>)> {
    let half = n / 2;
    let helpers = (n / 10).max(1);
    (1..=n)
        .map(|i| {
            let queues = if i <= half {
                let mut q = vec![("sales", 0)];
                if i > half - helpers {
                    q.push(("support", 1));
                }
                q
            } else {
                let mut q = vec![("support", 0)];
                if i <= half + helpers {
                    q.push(("sales", 1));
                }
                q
            };
            (format!("agent{i}"), queues)
        })
        .collect()
}

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
fn provision(
    http: SocketAddr,
    admin: &str,
    agents: &[(String, Vec<(&str, u8)>)],
) -> anyhow::Result<String> {
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
    let post = |path: &str, body: serde_json::Value| {
        api(http, admin, "POST", &format!("{t}{path}"), Some(body))
    };
    post(
        "/users",
        json!({"username": "sam", "display_name": "Sam (supervisor)", "role": "supervisor", "password": random_password()}),
    )?;
    for (queue, number, skill) in QUEUES {
        post("/skills", json!({"name": skill}))?;
        post(
            "/queues",
            json!({"name": queue, "strategy": "longest-idle", "service_level_s": 20,
                   "skills": [{"skill": skill, "level": 1}], "ring_timeout_s": 15, "wrapup_s": 1,
                   "announce_period_s": 10, "greeting": true}),
        )?;
        post(
            "/routes",
            json!({"pattern": number, "target": format!("queue:{queue}"), "position": 10}),
        )?;
    }
    for (agent, queues) in agents {
        post(
            "/sip-accounts",
            json!({"username": agent, "password": PASSWORD}),
        )?;
        let skills: Vec<serde_json::Value> = queues
            .iter()
            .map(|(q, tier)| {
                let skill = QUEUES
                    .iter()
                    .find(|(name, _, _)| name == q)
                    .map_or("", |x| x.2);
                json!({"skill": skill, "level": if *tier == 0 { 4 } else { 2 }})
            })
            .collect();
        post(
            "/agents",
            json!({"name": agent, "user": agent, "skills": skills}),
        )?;
        for (queue, tier) in queues {
            api(
                http,
                admin,
                "PUT",
                &format!("{t}/agents/{agent}/queues/{queue}"),
                Some(json!({"tier": tier})),
            )?;
        }
    }
    // The callers arrive as a carrier trunk would: trusted by source address.
    post(
        "/trunks",
        json!({"name": "callers", "address": "127.0.0.1:5999", "allow": ["127.0.0.1"]}),
    )?;
    let token = post(
        "/tokens",
        json!({"name": "demo explorer", "role": "tenant_admin", "expires_in_s": 86400}),
    )?;
    token["token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no token in the API's answer"))
}

/// The live line: per queue the callers waiting, service level and ASA so far, then the
/// agents by state, all read from the API as a wallboard would.
fn live_line(http: SocketAddr, token: &str) -> String {
    let mut line = String::new();
    let status = api(
        http,
        token,
        "GET",
        "/api/v1/tenants/demo/queues-status",
        None,
    )
    .ok();
    for (queue, _, _) in QUEUES {
        let item = status
            .as_ref()
            .and_then(|q| q["items"].as_array())
            .and_then(|items| items.iter().find(|i| i["name"] == queue));
        let waiting = item.map_or(0, |i| i["waiting"].as_u64().unwrap_or(0));
        line.push_str(&format!("{queue}: {waiting:>2} waiting"));
        let path = format!("/api/v1/tenants/demo/queues/{queue}/stats");
        if let Ok(s) = api(http, token, "GET", &path, None) {
            let t = &s["totals"];
            if let (Some(sl), Some(asa)) = (t["service_level_pct"].as_f64(), t["asa_s"].as_f64()) {
                line.push_str(&format!(" SL {sl:>3.0}% ASA {asa:>4.1} s"));
            }
        }
        line.push_str("  ");
    }
    if let Ok(a) = api(
        http,
        token,
        "GET",
        "/api/v1/tenants/demo/agents-status",
        None,
    ) {
        let mut by_state = std::collections::BTreeMap::new();
        for item in a["items"].as_array().into_iter().flatten() {
            *by_state
                .entry(item["state"].as_str().unwrap_or("?").to_string())
                .or_insert(0) += 1;
        }
        let states: Vec<String> = by_state.iter().map(|(s, n)| format!("{n} {s}")).collect();
        line.push_str(&format!("| agents {}", states.join(", ")));
    }
    line
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
    let agents = agents(args.agents.max(2));
    let token = provision(http, &admin, &agents)?;
    println!(
        "Tandem demo: a contact centre. {} callers at {} cps dial queues sales (3001) and support (3002) via {sip}; {} agents, {:.0} s talk each (ng for Kamailio on {}).",
        args.calls, args.cps, agents.len(), args.hold_s, appliance.ng_addr
    );
    println!("  Tenant, SIP accounts, skills, queues, agents, memberships, routes and trunk were provisioned through the API at http://{http}/api/v1 (storage: SQLite in {}).", data_dir.display());
    println!("  Explore it while the demo runs (this token is the demo tenant's administrator):");
    println!("    export TOKEN={token}");
    println!("    curl -s -H \"Authorization: Bearer $TOKEN\" 'http://{http}/api/v1/tenants/demo/calls?limit=5&sort=-started'");
    println!("    curl -s -H \"Authorization: Bearer $TOKEN\" http://{http}/api/v1/tenants/demo/queues-status");
    println!("    curl -s -H \"Authorization: Bearer $TOKEN\" http://{http}/api/v1/tenants/demo/agents-status");
    println!("    websocat -H \"Authorization: Bearer $TOKEN\" ws://{http}/api/v1/events   # queue log, agent states, screen-pops");
    println!("    curl -s http://{http}/api/v1/openapi.json | head -c 300;  curl -s http://{http}/metrics | grep -E 'tandem_(sip|dp|api)_'");

    // The agents' phones: register with digest auth, answer, echo the caller's audio; some
    // take G.722 only.
    let g722_phones: Vec<(String, String)> = agents
        .iter()
        .enumerate()
        .filter(|(i, _)| (i + 1) % G722_EVERY == 0)
        .map(|(_, (a, _))| (a.clone(), "G722".to_string()))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let uas_stop = stop.clone();
    let uas_cfg = UasConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        registrar: Some(sip),
        users: agents.iter().map(|(a, _)| a.clone()).collect(),
        password: PASSWORD.into(),
        domain: "demo.local".into(),
        ring_ms: 200,
        codecs: g722_phones.clone(),
    };
    let phones =
        std::thread::spawn(move || tandem_bench::sip::run_uas(&uas_cfg, &uas_stop, |_| {}));
    let registered = || registry.sip.registered_contacts.load(Ordering::Relaxed);
    let waited = Instant::now();
    while registered() < agents.len() as u64 && waited.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "  agents' phones registered: {} of {} ({} take G.722 only: Tandem transcodes the callers' PCMA for them)",
        registered(),
        agents.len(),
        g722_phones.len()
    );
    // The agents log in through the API, as their desktop would; the last one is at lunch.
    for (i, (agent, _)) in agents.iter().enumerate() {
        let path = format!("/api/v1/tenants/demo/agents/{agent}/state");
        api(
            http,
            &token,
            "POST",
            &path,
            Some(serde_json::json!({"action": "login"})),
        )?;
        if i + 1 == agents.len() {
            let lunch = serde_json::json!({"action": "break", "reason": "lunch"});
            api(http, &token, "POST", &path, Some(lunch))?;
        }
    }
    println!(
        "  agents logged in through the API: {} ({} on a break)",
        agents.len(),
        1
    );

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
        to_user: QUEUES[0].1.into(),
        to_user_range: Some(QUEUES.len() as u32),
        from_user: "02079460000".into(),
        rtp: true,
        ..UacConfig::default()
    };
    let mut next_line = 0.0f64;
    let report = tandem_bench::sip::run_uac(&uac, |p| {
        // A wallboard line every two seconds: what the supervisor would watch.
        if p.elapsed_s < next_line {
            return;
        }
        next_line = p.elapsed_s + 2.0;
        eprintln!(
            "  [{:4.1}s] calls {:>4} placed {:>4} answered {:>2} failed, {:>3} in progress, RTP relayed {:>7} | {}",
            p.elapsed_s,
            p.attempted,
            p.answered,
            p.failed,
            p.active,
            relayed(),
            live_line(http, &token)
        );
        let _ = std::io::stderr().flush();
    })?;
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
    // Callers receive their agent's echo and, while they wait, the greeting and hold music.
    let played: u64 = snaps.iter().map(|s| s.played_packets).sum();
    let echoed = report.rtp_received.saturating_sub(played);
    let returned = if report.rtp_sent > 0 {
        100.0 * echoed as f64 / report.rtp_sent as f64
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
        "(greeting, queue, 200 ms ring)",
        format!("max {:.2} ms", report.setup_max_ms),
    );
    row("agents' phones answered", phones.answered.to_string());
    row("data-plane sessions created", created.to_string());
    row("sessions left open", active.to_string());
    row(
        "RTP sent / echoed to callers",
        format!("{} / {}", report.rtp_sent, echoed),
    );
    row("RTP echoed by the agents", format!("{returned:.2} %"));
    row("greeting and music to callers", format!("{played} packets"));
    row("packets relayed by Tandem", relayed_total.to_string());
    row("packets dropped", dropped.to_string());
    // Every finished call has a durable record by now (replies waited for them).
    let stored = count_items(http, &token, "/api/v1/tenants/demo/calls")?;
    row("call records in storage (API)", stored.to_string());
    // Each leg's reception quality as the data plane measured it, and which calls were
    // transcoded, from the stored records.
    let (transcoded, [callers, agents_legs]) = media_summary(http, &token)?;
    let pairs: Vec<String> = transcoded
        .iter()
        .map(|((caller, callee), n)| format!("{n} {caller}↔{callee}"))
        .collect();
    let transcoded_total: usize = transcoded.values().sum();
    row(
        "transcoded calls (records)",
        if pairs.is_empty() {
            "0".to_string()
        } else {
            pairs.join(", ")
        },
    );
    for (name, mut mos) in [
        ("median MOS, callers → Tandem", callers),
        ("median MOS, agents → Tandem", agents_legs),
    ] {
        mos.sort_by(f64::total_cmp);
        let value = match (mos.first(), mos.get(mos.len() / 2)) {
            (Some(min), Some(median)) => {
                format!("{median:.2} (min {min:.2}, {} legs)", mos.len())
            }
            _ => "no rated legs".to_string(),
        };
        row(name, value);
    }
    println!("  └──────────────────────────────────┴──────────────────────────────┘");
    println!(
        "  (RTP in flight when a call hangs up is not returned: expect slightly under 100 %.)"
    );
    // The queues' figures, computed by the API from the durable queue log (METRICS.md).
    std::thread::sleep(Duration::from_millis(500));
    println!();
    println!(
        "  queue     offered answered abandoned  SL(20 s)     ASA     AHT  longest wait agents"
    );
    let mut answered_in_queues = 0;
    for (queue, _, _) in QUEUES {
        let stats = api(
            http,
            &token,
            "GET",
            &format!("/api/v1/tenants/demo/queues/{queue}/stats"),
            None,
        )?;
        let t = &stats["totals"];
        let pct =
            |v: &serde_json::Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.1} %"));
        let secs =
            |v: &serde_json::Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.2} s"));
        answered_in_queues += t["answered"].as_u64().unwrap_or(0);
        let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
        let members = agents
            .iter()
            .filter(|(_, q)| q.iter().any(|(n, _)| *n == queue))
            .count();
        println!(
            "  {queue:<9} {:>7} {:>8} {:>9} {:>9} {:>7} {:>7} {:>13} {:>6}",
            n(&t["offered"]),
            n(&t["answered"]),
            n(&t["abandoned"]),
            pct(&t["service_level_pct"]),
            secs(&t["asa_s"]),
            secs(&t["aht_s"]),
            secs(&t["longest_wait_s"]),
            members
        );
    }
    let events = count_items(http, &token, "/api/v1/tenants/demo/queue-events")?;
    println!(
        "  (queue log: {events} events stored; GET /api/v1/tenants/demo/queue-events, and .../queues/<q>/stats?interval=900 for 15-minute intervals)"
    );
    appliance.stop();
    let _ = std::fs::remove_dir_all(&data_dir);
    if stored as u64 != report.attempted {
        anyhow::bail!(
            "{stored} call records stored for {} calls",
            report.attempted
        );
    }
    if answered_in_queues != report.answered {
        anyhow::bail!(
            "the queues answered {answered_in_queues} calls, the callers saw {} answered",
            report.answered
        );
    }
    // Longest-idle gives every agent calls once there are twice as many as agents.
    let every_agent_rung = report.answered as usize >= 2 * agents.len();
    if !g722_phones.is_empty() && every_agent_rung && transcoded_total == 0 {
        anyhow::bail!("the G.722 phones answered, yet no call record says it was transcoded");
    }
    if report.failed > 0 || report.answered == 0 || returned < 95.0 {
        anyhow::bail!("the demo did not complete cleanly (see the table above)");
    }
    Ok(())
}

/// Transcoded calls per (caller's codec, callee's codec), and the E-model MOS of every stored
/// call's caller and callee legs (legs that carried RTP in a codec the E-model rates).
type MediaSummary = (BTreeMap<(String, String), usize>, [Vec<f64>; 2]);

fn media_summary(http: SocketAddr, token: &str) -> anyhow::Result<MediaSummary> {
    let mut mos = [Vec::new(), Vec::new()];
    let mut transcoded = BTreeMap::new();
    for_each_item(http, token, "/api/v1/tenants/demo/calls", |call| {
        let media = &call["media"];
        for (i, leg) in ["caller", "callee"].into_iter().enumerate() {
            if let Some(m) = media[leg]["quality"]["mos"].as_f64() {
                mos[i].push(m);
            }
        }
        let codec = |leg: &str| media["transcoding"][leg].as_str().map(str::to_string);
        if let (Some(caller), Some(callee)) = (codec("caller"), codec("callee")) {
            *transcoded.entry((caller, callee)).or_insert(0) += 1;
        }
    })?;
    Ok((transcoded, mos))
}

/// Items of one of the demo tenant's lists (call records, queue events), counted page by page.
fn count_items(http: SocketAddr, token: &str, path: &str) -> anyhow::Result<usize> {
    let mut count = 0;
    for_each_item(http, token, path, |_| count += 1)?;
    Ok(count)
}

/// Hands every item of one of the demo tenant's lists to `f`, page by page.
fn for_each_item(
    http: SocketAddr,
    token: &str,
    path: &str,
    mut f: impl FnMut(&serde_json::Value),
) -> anyhow::Result<()> {
    let mut offset = 0;
    loop {
        let page = api(
            http,
            token,
            "GET",
            &format!("{path}?limit=500&offset={offset}"),
            None,
        )?;
        page["items"]
            .as_array()
            .into_iter()
            .flatten()
            .for_each(&mut f);
        match page["next_offset"].as_i64() {
            Some(next) => offset = next,
            None => return Ok(()),
        }
    }
}
