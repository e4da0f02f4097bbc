//! `tandem-bench`: load generators for relays that speak the ng protocol. Logic lives in the
//! library; this file only parses arguments and prints.

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
