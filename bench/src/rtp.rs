//! `tandem-bench rtp`: K calls set up over ng, then paced 172-byte RTP both ways through the
//! relay, measuring what came back: rate, loss, one-way latency, and the relay's CPU per packet.
//!
//! Timeline: setup (pipelined ng) → ramp (streams start one after another) → warm-up → measured
//! window → drain (late packets still counted) → delete. Only packets *sent* inside the window
//! are measured, and the relay's CPU time is sampled exactly at the window's edges.

use crate::ng_client::{count_failures, DeleteStats, NgClient};
use crate::procstat;
use crate::sys::{monotonic_ns, pin, raise_fd_limit, sleep_until};
use crate::traffic::{self, Live, Plan};
use anyhow::{anyhow, bail, Context};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

pub use crate::packet::{build_packet, due_ns, parse_packet, PACKET_BYTES};

/// How long after the last send the receiver keeps counting, so packets still queued in the
/// relay are not mistaken for loss.
const DRAIN: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct RtpConfig {
    pub ng: SocketAddr,
    pub calls: usize,
    pub pps: u32,
    /// Seconds over which streams start, one after another.
    pub ramp_s: f64,
    /// Seconds of full load before measuring.
    pub warmup_s: f64,
    pub duration_s: f64,
    pub bind: IpAddr,
    pub target_pid: Option<u32>,
    /// Most ng requests in flight during setup and teardown.
    pub ng_window: usize,
    /// Report how long each stream took to deliver again after this many seconds of sending
    /// (the end of an injected stall or overload).
    pub recovery_after_s: Option<f64>,
    pub cpu: Option<usize>,
    /// Take a CPU away from the relay for a while (a SCHED_FIFO spinning thread pinned to it);
    /// recovery is then measured from the stall's end.
    pub stall: Option<Stall>,
}

#[derive(Debug, Clone, Copy)]
pub struct Stall {
    pub cpu: usize,
    /// Seconds after media starts.
    pub at_s: f64,
    pub secs: f64,
}

impl Default for RtpConfig {
    fn default() -> Self {
        RtpConfig {
            ng: SocketAddr::from(([127, 0, 0, 1], 2223)),
            calls: 100,
            pps: 50,
            ramp_s: 0.0,
            warmup_s: 2.0,
            duration_s: 10.0,
            bind: IpAddr::from([127, 0, 0, 1]),
            target_pid: None,
            ng_window: 16,
            recovery_after_s: None,
            cpu: None,
            stall: None,
        }
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub calls: usize,
    pub calls_failed: usize,
    /// Setup failures by reason ("load limit", "no ng reply after 4 tries", ...).
    pub failures: BTreeMap<String, u64>,
    pub first_failure: Option<String>,
    pub setup_s: f64,
    pub offered_pps: f64,
    pub relayed_pps: f64,
    pub sent: u64,
    pub received: u64,
    pub loss_pct: f64,
    /// Streams that lost at least one measured packet.
    pub streams_with_loss: usize,
    pub latency_p50_us: u64,
    pub latency_p99_us: u64,
    pub latency_p999_us: u64,
    pub latency_max_us: u64,
    pub target_cpu_pct: Option<f64>,
    pub target_cpu_us_per_packet: Option<f64>,
    pub target_rss_bytes_per_call: Option<f64>,
    /// Packets that arrived after a newer one of their stream.
    pub reordered: u64,
    pub duplicates: u64,
    pub streams: usize,
    /// Streams that delivered nothing sent in the last second.
    pub dead_streams: usize,
    pub recovery_max_ms: Option<f64>,
    pub recovery_p99_ms: Option<f64>,
    pub streams_not_recovered: Option<usize>,
    pub deletes: DeleteStats,
}

/// Live numbers for a progress display.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub elapsed_s: f64,
    pub sent: u64,
    pub received: u64,
    /// p99 one-way latency over the last second, µs.
    pub p99_us: u64,
}

struct Call {
    id: String,
    a: UdpSocket,
    b: UdpSocket,
}

/// Binds both endpoints of every call and sets the calls up over ng; failures are counted.
fn set_up(cfg: &RtpConfig, ng: &mut NgClient, report: &mut Report) -> anyhow::Result<Vec<Call>> {
    let fd_limit = raise_fd_limit();
    let run_id = monotonic_ns() % 1_000_000_007;
    let mut endpoints = Vec::with_capacity(cfg.calls);
    for i in 0..cfg.calls {
        let bind = |what| {
            UdpSocket::bind(SocketAddr::new(cfg.bind, 0)).with_context(|| {
                format!("binding endpoint {what} of call {i} (open-file limit {fd_limit})")
            })
        };
        let (a, b) = (bind("A")?, bind("B")?);
        endpoints.push((format!("bench-{run_id}-{i}"), a, b));
    }
    let requests = endpoints
        .iter()
        .map(|(id, a, b)| Ok((id.clone(), a.local_addr()?, b.local_addr()?)))
        .collect::<std::io::Result<Vec<_>>>()?;
    let t0 = monotonic_ns();
    let results = ng.setup_calls(&requests)?;
    report.setup_s = (monotonic_ns() - t0) as f64 / 1e9;
    let mut calls = Vec::with_capacity(cfg.calls);
    let mut why = Vec::new();
    for ((id, a, b), result) in endpoints.into_iter().zip(results) {
        match result {
            Ok((to_a_side, to_b_side)) => {
                // Connected: sends skip the route lookup, and only the relay's port is heard.
                a.connect(to_a_side)?;
                b.connect(to_b_side)?;
                a.set_nonblocking(true)?;
                b.set_nonblocking(true)?;
                calls.push(Call { id, a, b });
            }
            Err(e) => why.push(e),
        }
    }
    report.calls = calls.len();
    report.calls_failed = why.len();
    report.first_failure = why.first().cloned();
    report.failures = count_failures(why.iter().map(String::as_str));
    Ok(calls)
}

pub fn run(cfg: &RtpConfig, mut progress: impl FnMut(&Progress)) -> anyhow::Result<Report> {
    pin(cfg.cpu);
    let mut ng = NgClient::new(cfg.ng)?;
    ng.window = cfg.ng_window;
    ng.ping().context("the ng server does not answer ping")?;
    let rss_before = cfg.target_pid.and_then(procstat::rss_bytes);
    let mut report = Report::default();
    let calls = set_up(cfg, &mut ng, &mut report)?;
    if calls.is_empty() {
        bail!(
            "no call could be set up: {}",
            report.first_failure.unwrap_or_default()
        );
    }
    let rss_after = cfg.target_pid.and_then(procstat::rss_bytes);
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        report.target_rss_bytes_per_call =
            Some(after.saturating_sub(before) as f64 / calls.len() as f64);
    }

    // Stream 2c: A sends, B receives; stream 2c+1: B sends, A receives.
    let streams = calls.len() * 2;
    let fds: Vec<i32> = calls
        .iter()
        .flat_map(|c| [c.a.as_raw_fd(), c.b.as_raw_fd()])
        .collect();
    let start = monotonic_ns() + 50_000_000;
    let ramp_ns = (cfg.ramp_s.max(0.0) * 1e9) as u64;
    let window_start = start + ramp_ns + (cfg.warmup_s.max(0.0) * 1e9) as u64;
    let end = window_start + (cfg.duration_s.max(0.001) * 1e9) as u64;
    let plan = Plan {
        start,
        end,
        window: (window_start, end),
        ramp_ns,
        pps: cfg.pps.max(1),
    };
    let live = Arc::new(Live::default());

    let recovery_after_s = cfg.recovery_after_s.or(cfg.stall.map(|s| s.at_s + s.secs));
    let hog = cfg.stall.map(|s| {
        let from = start + (s.at_s * 1e9) as u64;
        let until = from + (s.secs * 1e9) as u64;
        std::thread::spawn(move || hog_cpu(s.cpu, from, until))
    });
    let receiver = {
        let (live, fds, cpu) = (live.clone(), fds.clone(), cfg.cpu);
        let mark = recovery_after_s.map(|s| start + (s * 1e9) as u64);
        std::thread::Builder::new()
            .name("bench-rx".into())
            .spawn(move || {
                pin(cpu);
                traffic::receive_loop(&fds, plan, mark, &live)
            })?
    };
    let sender = {
        let (live, cpu) = (live.clone(), cfg.cpu);
        std::thread::Builder::new()
            .name("bench-tx".into())
            .spawn(move || {
                pin(cpu);
                traffic::send_loop(&fds, plan, &live)
            })?
    };

    // Sleep to each progress tick or window edge exactly, so the CPU samples bound the window.
    let mut cpu_start = None;
    let mut next_tick = start + 1_000_000_000;
    let cpu_end = loop {
        let edge = if cpu_start.is_none() {
            window_start
        } else {
            end
        };
        sleep_until(next_tick.min(edge));
        let now = monotonic_ns();
        if now >= edge {
            let sample = cfg.target_pid.and_then(procstat::cpu_seconds);
            if cpu_start.is_none() {
                cpu_start = Some(sample);
                continue;
            }
            break sample;
        }
        if now >= next_tick {
            next_tick += 1_000_000_000;
            progress(&Progress {
                elapsed_s: (now - start) as f64 / 1e9,
                sent: live.sent.load(Relaxed),
                received: live.received.load(Relaxed),
                p99_us: live.p99_us.load(Relaxed),
            });
        }
    };
    if let Some(h) = hog {
        let _ = h.join();
    }
    let sent = sender
        .join()
        .map_err(|_| anyhow!("sender thread panicked"))?;
    std::thread::sleep(DRAIN);
    live.stop.store(true, Relaxed);
    let rx = receiver
        .join()
        .map_err(|_| anyhow!("receiver thread panicked"))?;

    let window_s = (end - window_start) as f64 / 1e9;
    report.streams = streams;
    report.sent = sent.iter().sum();
    report.received = rx.in_window.iter().sum();
    report.streams_with_loss = sent
        .iter()
        .zip(&rx.in_window)
        .filter(|(s, r)| r < s)
        .count();
    report.offered_pps = report.sent as f64 / window_s;
    report.relayed_pps = report.received as f64 / window_s;
    report.loss_pct = loss_pct(report.sent, report.received);
    let h = &rx.latency;
    report.latency_p50_us = h.value_at_quantile(0.5);
    report.latency_p99_us = h.value_at_quantile(0.99);
    report.latency_p999_us = h.value_at_quantile(0.999);
    report.latency_max_us = h.max();
    report.reordered = rx.late;
    report.duplicates = rx.duplicates;
    let last_second = end.saturating_sub(1_000_000_000);
    report.dead_streams = rx.last_sent_ns.iter().filter(|&&t| t < last_second).count();
    if let (Some(Some(a)), Some(b)) = (cpu_start, cpu_end) {
        let cpu_s = b - a;
        report.target_cpu_pct = Some(100.0 * cpu_s / window_s);
        if report.received > 0 {
            report.target_cpu_us_per_packet = Some(cpu_s * 1e6 / report.received as f64);
        }
    }
    if recovery_after_s.is_some() {
        let mut recovered: Vec<u64> = rx.recovery_ns.iter().flatten().copied().collect();
        recovered.sort_unstable();
        report.streams_not_recovered = Some(streams - recovered.len());
        report.recovery_max_ms = recovered.last().map(|&n| n as f64 / 1e6);
        report.recovery_p99_ms = recovered
            .get((recovered.len() * 99 / 100).min(recovered.len().saturating_sub(1)))
            .map(|&n| n as f64 / 1e6);
    }
    let ids: Vec<String> = calls.iter().map(|c| c.id.clone()).collect();
    report.deletes = ng.delete_calls(&ids)?;
    Ok(report)
}

/// Percentage of `sent` that did not arrive (never negative: duplicates are not counted).
pub fn loss_pct(sent: u64, received: u64) -> f64 {
    if sent == 0 {
        return 0.0;
    }
    100.0 * sent.saturating_sub(received) as f64 / sent as f64
}

/// Spins at real-time priority on `cpu` from `from` to `until` (CLOCK_MONOTONIC ns): whatever
/// else runs there gets only what the kernel's RT throttle leaves (5% by default).
fn hog_cpu(cpu: usize, from: u64, until: u64) {
    sleep_until(from);
    pin(Some(cpu));
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: changes this thread's own policy; failure (no privilege) leaves a normal-priority
    // spinner, which still halves the relay's share of the CPU.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    while monotonic_ns() < until {
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_is_never_negative() {
        assert_eq!(loss_pct(0, 0), 0.0);
        assert_eq!(loss_pct(100, 99), 1.0);
        assert_eq!(loss_pct(100, 101), 0.0);
    }
}
