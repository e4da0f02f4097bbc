//! `tandem-bench`: load generators for relays that speak the ng protocol.

use clap::{Parser, Subcommand};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
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
    Rtp {
        #[arg(long, default_value = "127.0.0.1:2223")]
        ng: SocketAddr,
        #[arg(long, default_value_t = 100)]
        calls: usize,
        /// Packets per second per stream (50 = 20 ms G.711).
        #[arg(long, default_value_t = 50)]
        pps: u32,
        /// Seconds of traffic before measuring.
        #[arg(long, default_value_t = 2.0)]
        warmup_s: f64,
        /// Seconds measured.
        #[arg(long, default_value_t = 10.0)]
        duration_s: f64,
        #[arg(long, default_value = "127.0.0.1")]
        bind: IpAddr,
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
    },
    /// The bare recvmmsg/sendmmsg relay (with just enough ng to be driven like a relay).
    Forward {
        #[arg(long, default_value = "127.0.0.1:2223")]
        ng: SocketAddr,
        /// Connect each socket to its latched peer (no route lookup per send).
        #[arg(long)]
        connected: bool,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Rtp {
            ng,
            calls,
            pps,
            warmup_s,
            duration_s,
            bind,
            target_pid,
            recovery_after_s,
            cpu,
            stall_cpu,
            stall_at_s,
            stall_s,
            json,
            quiet,
        } => {
            let stall = stall_cpu.map(|cpu| rtp::Stall {
                cpu,
                at_s: stall_at_s.unwrap_or(0.0),
                secs: stall_s.unwrap_or(0.0),
            });
            let cfg = RtpConfig {
                ng,
                calls,
                pps,
                warmup_s,
                duration_s,
                bind,
                target_pid,
                recovery_after_s,
                cpu,
                stall,
            };
            let mut last = (0.0, 0u64, 0u64);
            let report = rtp::run(&cfg, |p| {
                if quiet || p.elapsed_s - last.0 < 0.95 {
                    return;
                }
                let dt = p.elapsed_s - last.0;
                eprint!(
                    "\r[{:5.1}s] sent {:>9} ({:>7.0} pps)  received {:>9} ({:>7.0} pps)   ",
                    p.elapsed_s,
                    p.sent,
                    (p.sent - last.1) as f64 / dt,
                    p.received,
                    (p.received - last.2) as f64 / dt
                );
                let _ = std::io::stderr().flush();
                last = (p.elapsed_s, p.sent, p.received);
            })?;
            if !quiet {
                eprintln!();
            }
            println!(
                "{}",
                tandem_bench::format_report(&format!("tandem-bench rtp → {ng}"), &report)
            );
            if let Some(path) = json {
                std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
            }
        }
        Cmd::Forward { ng, connected } => {
            eprintln!("tandem-bench forward: ng {ng}, connected sockets: {connected}");
            tandem_bench::forward::Forwarder::bind(ng, connected)?.run()?;
        }
    }
    Ok(())
}
