//! `tandem-bench`: load generators for relays that speak the ng protocol and for SIP servers.
//! Logic lives in the library; this file only parses arguments and prints.

use clap::{Parser, Subcommand};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use tandem_bench::rtp::{self, RtpConfig};

#[derive(Parser)]
#[command(
    name = "tandem-bench",
    version,
    about = "Load generators for Tandem, rtpengine and friends"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Sets up calls over ng and relays paced RTP through them both ways.
    Rtp(RtpArgs),
    /// The bare recvmmsg/sendmmsg relay: ng mode (driven like a relay) or plain mode (--to).
    Forward {
        #[arg(long, default_value = "127.0.0.1:2223")]
        ng: SocketAddr,
        /// Connect each transmit socket to its peer (no route lookup per send).
        #[arg(long)]
        connected: bool,
        /// Plain mode: forward everything arriving on --ports ports from --base-port to here.
        #[arg(long, requires = "base_port")]
        to: Option<SocketAddr>,
        #[arg(long, default_value_t = 64)]
        ports: u16,
        #[arg(long)]
        base_port: Option<u16>,
        #[arg(long, default_value = "127.0.0.1")]
        bind: IpAddr,
    },
    /// Paced HTTP load on the control API: GETs of a path, or SIP-account creations (--write).
    Api {
        #[arg(long, default_value = "127.0.0.1:8080")]
        target: SocketAddr,
        /// Bearer token (an API token or session token).
        #[arg(long)]
        token: String,
        /// Path to GET in read mode.
        #[arg(long, default_value = "/api/v1/me")]
        path: String,
        /// Write mode: create SIP accounts in this tenant.
        #[arg(long)]
        write: Option<String>,
        /// Requests per second.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        duration_s: f64,
        /// Keep-alive connections.
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Write the report as JSON here too.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// ACD: simulate queues against the real state machine (Erlang C beside it for M/M/N), or
    /// time routing decisions at 10k agents / 1k queues / 100 skills (--routing).
    Acd {
        /// Time routing decisions instead of simulating.
        #[arg(long)]
        routing: bool,
        /// Decisions of each kind to time (--routing).
        #[arg(long, default_value_t = 1_000_000)]
        decisions: u64,
        #[arg(long, default_value_t = 20)]
        agents: u32,
        /// Target occupancy (offered load ÷ agents).
        #[arg(long, default_value_t = 0.9)]
        occupancy: f64,
        /// Mean talk time, seconds.
        #[arg(long, default_value_t = 180.0)]
        handle_s: f64,
        /// Log-normal talk times with this standard deviation (default: exponential).
        #[arg(long)]
        lognormal_sd_s: Option<f64>,
        #[arg(long, default_value_t = 0.0)]
        wrapup_s: f64,
        /// Mean caller patience, seconds (exponential); default: nobody abandons.
        #[arg(long)]
        patience_s: Option<f64>,
        /// Queues, each with its own skill; every agent serves two adjacent ones.
        #[arg(long, default_value_t = 1)]
        queues: u32,
        #[arg(long, default_value_t = 200_000)]
        calls: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// SIP call generator: INVITE with SDP, optional RTP, hold, BYE; paced, with a concurrency cap.
    Sip(SipArgs),
    /// SIP answering endpoint: registers its users (digest), answers every call, echoes RTP.
    SipUas {
        #[arg(long, default_value = "127.0.0.1:5080")]
        listen: SocketAddr,
        /// Register the users here first (and every two minutes).
        #[arg(long)]
        registrar: Option<SocketAddr>,
        /// Comma-separated user names to register.
        #[arg(long, value_delimiter = ',')]
        users: Vec<String>,
        #[arg(long, default_value = "")]
        password: String,
        #[arg(long, default_value = "127.0.0.1")]
        domain: String,
        /// Ringing time before the 200 OK.
        #[arg(long, default_value_t = 0)]
        ring_ms: u64,
    },
}

#[derive(clap::Args)]
struct SipArgs {
    /// Where to send INVITEs (Tandem, Kamailio, SIPp...).
    #[arg(long, default_value = "127.0.0.1:5060")]
    target: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:0")]
    local: SocketAddr,
    /// New calls per second.
    #[arg(long, default_value_t = 10.0)]
    cps: f64,
    #[arg(long, default_value_t = 1000)]
    max_concurrent: usize,
    /// Total calls to place...
    #[arg(long, default_value_t = 100)]
    calls: usize,
    /// ...or stop placing calls after this many seconds, whichever comes first.
    #[arg(long)]
    duration_s: Option<f64>,
    /// Talk time before our BYE.
    #[arg(long, default_value_t = 1000)]
    hold_ms: u64,
    /// User part of the Request-URI (the dialled number).
    #[arg(long, default_value = "1000")]
    to_user: String,
    /// Spread calls over this many consecutive numbers from --to-user.
    #[arg(long)]
    to_user_range: Option<u32>,
    #[arg(long, default_value = "bench")]
    from_user: String,
    /// Send 20 ms PCMA RTP on every answered call and count what comes back.
    #[arg(long)]
    rtp: bool,
    /// Exit 0 even when calls failed.
    #[arg(long)]
    allow_failures: bool,
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long)]
    quiet: bool,
}

fn run_sip(a: SipArgs) -> anyhow::Result<()> {
    let cfg = tandem_bench::sip::UacConfig {
        target: a.target,
        local: a.local,
        cps: a.cps,
        max_concurrent: a.max_concurrent,
        calls: a.calls,
        duration_s: a.duration_s,
        hold_ms: a.hold_ms,
        to_user: a.to_user,
        to_user_range: a.to_user_range,
        from_user: a.from_user,
        rtp: a.rtp,
    };
    let mut last = tandem_bench::sip::UacProgress::default();
    let report = tandem_bench::sip::run_uac(&cfg, |p| {
        if !a.quiet {
            let dt = (p.elapsed_s - last.elapsed_s).max(1e-3);
            eprintln!(
                "[{:5.1}s] attempted {:>7}  answered {:>7}  failed {:>5}  active {:>6}  {:>6.1} cps",
                p.elapsed_s,
                p.attempted,
                p.answered,
                p.failed,
                p.active,
                (p.attempted - last.attempted) as f64 / dt
            );
        }
        last = *p;
    })?;
    let label = format!("tandem-bench sip → {} at {} cps", a.target, a.cps);
    let mut out = std::io::stdout();
    let _ = write!(
        out,
        "{}",
        tandem_bench::sip::format_uac_report(&label, &report)
    );
    let _ = out.flush();
    if let Some(path) = a.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    if report.failed > 0 && !a.allow_failures {
        anyhow::bail!("{} of {} calls failed", report.failed, report.attempted);
    }
    Ok(())
}

#[derive(clap::Args)]
struct RtpArgs {
    #[arg(long, default_value = "127.0.0.1:2223")]
    ng: SocketAddr,
    #[arg(long, default_value_t = 100)]
    calls: usize,
    /// Packets per second per stream (50 = 20 ms G.711).
    #[arg(long, default_value_t = 50)]
    pps: u32,
    /// Seconds over which streams start one after another.
    #[arg(long, default_value_t = 0.0)]
    ramp_s: f64,
    /// Seconds of full load before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup_s: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Most ng requests in flight during setup and teardown.
    #[arg(long, default_value_t = 16)]
    ng_window: usize,
    /// The relay's PID, to report its CPU per packet and memory per call.
    #[arg(long)]
    target_pid: Option<u32>,
    /// Report per-stream recovery time after this many seconds of sending.
    #[arg(long)]
    recovery_after_s: Option<f64>,
    /// Pin the generator's threads to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
    /// Stall the relay: take this CPU with a real-time spinning thread...
    #[arg(long, requires_all = ["stall_at_s", "stall_s"])]
    stall_cpu: Option<usize>,
    /// ...this many seconds into the media...
    #[arg(long)]
    stall_at_s: Option<f64>,
    /// ...for this many seconds. Recovery is measured from the stall's end.
    #[arg(long)]
    stall_s: Option<f64>,
    /// Also write the numbers as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
}

fn run_rtp(a: RtpArgs) -> anyhow::Result<()> {
    let cfg = RtpConfig {
        ng: a.ng,
        calls: a.calls,
        pps: a.pps,
        ramp_s: a.ramp_s,
        warmup_s: a.warmup_s,
        duration_s: a.duration_s,
        bind: a.bind,
        target_pid: a.target_pid,
        ng_window: a.ng_window,
        recovery_after_s: a.recovery_after_s,
        cpu: a.cpu,
        stall: a.stall_cpu.map(|cpu| rtp::Stall {
            cpu,
            at_s: a.stall_at_s.unwrap_or(0.0),
            secs: a.stall_s.unwrap_or(0.0),
        }),
    };
    let mut last = rtp::Progress::default();
    let report = rtp::run(&cfg, |p| {
        if a.quiet {
            return;
        }
        let dt = (p.elapsed_s - last.elapsed_s).max(1e-3);
        eprintln!(
            "[{:5.1}s] sent {:>7.0} pps  received {:>7.0} pps  not yet received {:>8}  p99 {} µs",
            p.elapsed_s,
            (p.sent - last.sent) as f64 / dt,
            (p.received - last.received) as f64 / dt,
            p.sent.saturating_sub(p.received),
            p.p99_us,
        );
        last = *p;
    })?;
    // A closed stdout (`| head`) must not lose the JSON below.
    let mut out = std::io::stdout();
    let label = format!("tandem-bench rtp → {}", a.ng);
    let _ = writeln!(out, "{}", tandem_bench::format_report(&label, &report));
    let _ = out.flush();
    if let Some(path) = a.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // Runs until killed: nothing sets it, but the library loops take one for in-process use.
    let stop = AtomicBool::new(false);
    match Cli::parse().command {
        Cmd::Rtp(a) => run_rtp(a)?,
        Cmd::Sip(a) => run_sip(a)?,
        Cmd::Acd {
            routing,
            decisions,
            agents,
            occupancy,
            handle_s,
            lognormal_sd_s,
            wrapup_s,
            patience_s,
            queues,
            calls,
            seed,
        } => {
            if routing {
                tandem_bench::acd::run_routing(decisions, seed)?;
            } else {
                tandem_bench::acd::run_sim(&tandem_bench::acd::SimArgs {
                    agents,
                    occupancy,
                    handle_s,
                    calls,
                    seed,
                    queues,
                    patience_s,
                    lognormal_sd_s,
                    wrapup_s,
                })?;
            }
        }
        Cmd::Api {
            target,
            token,
            path,
            write,
            rate,
            duration_s,
            connections,
            json,
        } => {
            let cfg = tandem_bench::api::ApiConfig {
                target,
                token,
                path,
                write_tenant: write,
                rate,
                duration: std::time::Duration::from_secs_f64(duration_s),
                connections: connections.max(1),
            };
            let r = tandem_bench::api::run(&cfg)?;
            println!(
                "{:>6} {:>9} {:>9} {:>8} {:>7} {:>7} {:>7} {:>8} {:>8}",
                "kind",
                "offered",
                "achieved",
                "done",
                "errors",
                "non2xx",
                "p50ms",
                "p99ms",
                "maxms"
            );
            println!(
                "{:>6} {:>9.0} {:>9.0} {:>8} {:>7} {:>7} {:>7.2} {:>7.2} {:>8.2}",
                r.kind,
                r.offered_rps,
                r.achieved_rps,
                r.completed,
                r.errors,
                r.non_2xx,
                r.p50_ms,
                r.p99_ms,
                r.max_ms
            );
            if let Some(path) = json {
                std::fs::write(path, serde_json::to_vec_pretty(&r)?)?;
            }
        }
        Cmd::SipUas {
            listen,
            registrar,
            users,
            password,
            domain,
            ring_ms,
        } => {
            let cfg = tandem_bench::sip::UasConfig {
                listen,
                registrar,
                users,
                password,
                domain,
                ring_ms,
                codecs: Vec::new(),
            };
            eprintln!("tandem-bench sip-uas on {listen}");
            tandem_bench::sip::run_uas(&cfg, &stop, |s| {
                eprintln!(
                    "registered {} answered {} byes {} cancelled {} rtp echoed {}",
                    s.registered, s.answered, s.byes, s.cancelled, s.rtp_echoed
                )
            })?;
        }
        Cmd::Forward {
            ng,
            connected,
            to: Some(to),
            ports,
            base_port: Some(base),
            bind,
        } => {
            eprintln!("tandem-bench forward: {ports} ports from {bind}:{base} → {to}, connected: {connected}");
            tandem_bench::forward::forward_plain(bind, base, ports, to, connected, &stop)?;
            let _ = ng;
        }
        Cmd::Forward { ng, connected, .. } => {
            eprintln!("tandem-bench forward: ng {ng}, connected sockets: {connected}");
            tandem_bench::forward::Forwarder::bind(ng, connected)?.run(&stop)?;
        }
    }
    Ok(())
}
