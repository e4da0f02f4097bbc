//! `tandem-bench rtp`: K calls set up over ng, then paced 172-byte RTP both ways through the
//! relay, measuring what came back: rate, loss, one-way latency, and the relay's CPU per packet.
//!
//! One sender thread spreads every stream's packets evenly over the 20 ms period (stream i's
//! phase is i/N of it), so the offered load is smooth; one receiver thread epolls every endpoint
//! socket. Each packet carries its stream id and send time, so latency needs no matching table.

use crate::ng_client::NgClient;
use crate::procstat;
use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

pub const PACKET_BYTES: usize = 172;
const RTP_HEADER: usize = 12;
/// Payload layout after the RTP header: stream id (u32), send time (u64, CLOCK_MONOTONIC ns).
const STAMP_BYTES: usize = 12;

#[derive(Debug, Clone)]
pub struct RtpConfig {
    pub ng: SocketAddr,
    pub calls: usize,
    pub pps: u32,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub bind: IpAddr,
    pub target_pid: Option<u32>,
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
            warmup_s: 2.0,
            duration_s: 10.0,
            bind: IpAddr::from([127, 0, 0, 1]),
            target_pid: None,
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
    pub first_failure: Option<String>,
    pub offered_pps: f64,
    pub relayed_pps: f64,
    pub sent: u64,
    pub received: u64,
    pub loss_pct: f64,
    pub latency_p50_us: u64,
    pub latency_p99_us: u64,
    pub latency_p999_us: u64,
    pub latency_max_us: u64,
    pub target_cpu_pct: Option<f64>,
    pub target_cpu_us_per_packet: Option<f64>,
    pub target_rss_bytes_per_call: Option<f64>,
    pub reordered: u64,
    pub streams: usize,
    /// Streams that delivered nothing sent in the last second.
    pub dead_streams: usize,
    pub recovery_max_ms: Option<f64>,
    pub recovery_p99_ms: Option<f64>,
    pub streams_not_recovered: Option<usize>,
}

/// Live numbers for a progress display.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub elapsed_s: f64,
    pub sent: u64,
    pub received: u64,
}

pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Writes a 172-byte PCMU packet carrying `stream` and `sent_ns`.
pub fn build_packet(
    buf: &mut [u8; PACKET_BYTES],
    stream: u32,
    seq: u16,
    ts: u32,
    ssrc: u32,
    sent_ns: u64,
) {
    buf[0] = 0x80;
    buf[1] = 0;
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&ts.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
    buf[RTP_HEADER..RTP_HEADER + 4].copy_from_slice(&stream.to_be_bytes());
    buf[RTP_HEADER + 4..RTP_HEADER + STAMP_BYTES].copy_from_slice(&sent_ns.to_be_bytes());
}

/// (stream, seq, sent_ns) from a packet we built; `None` for anything else.
pub fn parse_packet(p: &[u8]) -> Option<(u32, u16, u64)> {
    if p.len() < RTP_HEADER + STAMP_BYTES || p[0] != 0x80 {
        return None;
    }
    let stream = u32::from_be_bytes(p[12..16].try_into().ok()?);
    let sent = u64::from_be_bytes(p[16..24].try_into().ok()?);
    Some((stream, u16::from_be_bytes([p[2], p[3]]), sent))
}

/// Send `k` of the schedule (0-based) is due this many ns after the start: sends are spaced
/// evenly at the aggregate rate, visiting streams round-robin, so stream i's phase is i/N.
pub fn due_ns(k: u64, streams: usize, pps: u32) -> u64 {
    let rate = streams as u128 * pps as u128;
    (k as u128 * 1_000_000_000u128 / rate.max(1)) as u64
}

struct Call {
    id: String,
    a: UdpSocket,
    b: UdpSocket,
}

fn pin(cpu: Option<usize>) {
    if let Some(c) = cpu {
        // SAFETY: cpu_set_t is plain data.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        unsafe {
            libc::CPU_SET(c, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
}

fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            // Root may raise the hard limit too (each call holds two sockets here).
            let want = libc::rlimit {
                rlim_cur: 1 << 20,
                rlim_max: (1 << 20).max(lim.rlim_max),
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) != 0 {
                lim.rlim_cur = lim.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
        }
    }
}

pub fn run(cfg: &RtpConfig, mut progress: impl FnMut(&Progress)) -> anyhow::Result<Report> {
    pin(cfg.cpu);
    raise_fd_limit();
    let mut ng = NgClient::new(cfg.ng)?;
    ng.ping().context("the ng server does not answer ping")?;
    let rss_before = cfg.target_pid.and_then(procstat::rss_bytes);
    let run_id = monotonic_ns() % 1_000_000_007;
    let mut calls = Vec::with_capacity(cfg.calls);
    let mut report = Report::default();
    for i in 0..cfg.calls {
        let a = UdpSocket::bind(SocketAddr::new(cfg.bind, 0))?;
        let b = UdpSocket::bind(SocketAddr::new(cfg.bind, 0))?;
        let id = format!("bench-{run_id}-{i}");
        match ng.setup_call(&id, a.local_addr()?, b.local_addr()?) {
            Ok((to_a_side, to_b_side)) => {
                // Connected: sends skip the route lookup, and only the relay's port is heard.
                a.connect(to_a_side)?;
                b.connect(to_b_side)?;
                a.set_nonblocking(true)?;
                b.set_nonblocking(true)?;
                calls.push(Call { id, a, b });
            }
            Err(e) => {
                report.calls_failed += 1;
                report.first_failure.get_or_insert_with(|| e.to_string());
            }
        }
    }
    report.calls = calls.len();
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
    let send_fds: Vec<i32> = calls
        .iter()
        .flat_map(|c| [c.a.as_raw_fd(), c.b.as_raw_fd()])
        .collect();
    let start_ns = monotonic_ns() + 50_000_000;
    let warmup_ns = (cfg.warmup_s * 1e9) as u64;
    let end_ns = start_ns + warmup_ns + (cfg.duration_s * 1e9) as u64;
    let window = (start_ns + warmup_ns, end_ns);
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    let recovery_after_s = cfg.recovery_after_s.or(cfg.stall.map(|s| s.at_s + s.secs));
    let hog = cfg.stall.map(|s| {
        let from = start_ns + (s.at_s * 1e9) as u64;
        let until = from + (s.secs * 1e9) as u64;
        std::thread::spawn(move || hog_cpu(s.cpu, from, until))
    });
    let receiver = {
        let (received, stop) = (received.clone(), stop.clone());
        let recovery_mark = recovery_after_s.map(|s| start_ns + (s * 1e9) as u64);
        let fds = send_fds.clone();
        let cpu = cfg.cpu;
        std::thread::Builder::new()
            .name("bench-rx".into())
            .spawn(move || {
                pin(cpu);
                receive_loop(&fds, window, end_ns, recovery_mark, &received, &stop)
            })?
    };
    let sender = {
        let (sent, pps, cpu) = (sent.clone(), cfg.pps, cfg.cpu);
        std::thread::Builder::new()
            .name("bench-tx".into())
            .spawn(move || {
                pin(cpu);
                send_loop(&send_fds, pps, start_ns, end_ns, window, &sent)
            })?
    };

    let mut cpu_start = None;
    let mut cpu_end = None;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = monotonic_ns();
        if cpu_start.is_none() && now >= window.0 {
            cpu_start = cfg.target_pid.and_then(procstat::cpu_seconds);
        }
        if cpu_end.is_none() && now >= window.1 {
            cpu_end = cfg.target_pid.and_then(procstat::cpu_seconds);
            break;
        }
        if (now.saturating_sub(start_ns) / 100_000_000) % 10 == 0 {
            progress(&Progress {
                elapsed_s: now.saturating_sub(start_ns) as f64 / 1e9,
                sent: sent.load(Relaxed),
                received: received.load(Relaxed),
            });
        }
    }
    if let Some(h) = hog {
        let _ = h.join();
    }
    let sent_in_window = sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender thread panicked"))?;
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Relaxed);
    let rx = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver thread panicked"))?;

    let window_s = (window.1 - window.0) as f64 / 1e9;
    report.streams = streams;
    report.sent = sent_in_window;
    report.received = rx.in_window;
    report.offered_pps = sent_in_window as f64 / window_s;
    report.relayed_pps = rx.in_window as f64 / window_s;
    report.loss_pct = if sent_in_window > 0 {
        100.0 * sent_in_window.saturating_sub(rx.in_window) as f64 / sent_in_window as f64
    } else {
        0.0
    };
    let h = &rx.latency;
    report.latency_p50_us = h.value_at_quantile(0.5);
    report.latency_p99_us = h.value_at_quantile(0.99);
    report.latency_p999_us = h.value_at_quantile(0.999);
    report.latency_max_us = h.max();
    report.reordered = rx.reordered;
    let last_second = end_ns.saturating_sub(1_000_000_000);
    report.dead_streams = rx.last_sent_ns.iter().filter(|&&t| t < last_second).count();
    if let (Some(a), Some(b)) = (cpu_start, cpu_end) {
        let cpu_s = b - a;
        report.target_cpu_pct = Some(100.0 * cpu_s / window_s);
        if rx.in_window > 0 {
            report.target_cpu_us_per_packet = Some(cpu_s * 1e6 / rx.in_window as f64);
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
    for c in &calls {
        let _ = ng.delete(&c.id);
    }
    drop(calls);
    Ok(report)
}

/// Spins at real-time priority on `cpu` from `from` to `until` (CLOCK_MONOTONIC ns): whatever
/// else runs there gets only what the kernel's RT throttle leaves (5% by default).
fn hog_cpu(cpu: usize, from: u64, until: u64) {
    while monotonic_ns() < from {
        std::thread::sleep(Duration::from_millis(1));
    }
    pin(Some(cpu));
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: changes this thread's own policy; failure (no privilege) leaves a normal-priority
    // spinner, which still halves the relay's share of the CPU.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    while monotonic_ns() < until {
        std::hint::spin_loop();
    }
}

fn send_loop(
    fds: &[i32],
    pps: u32,
    start_ns: u64,
    end_ns: u64,
    window: (u64, u64),
    sent: &AtomicU64,
) -> u64 {
    let n = fds.len();
    let mut seq = vec![0u16; n];
    let ssrc_base = (start_ns as u32) | 1;
    let mut buf = [0u8; PACKET_BYTES];
    let mut k = 0u64;
    let mut in_window = 0u64;
    loop {
        let now = monotonic_ns();
        if now >= end_ns {
            break;
        }
        let mut burst = 0;
        // Catch up with every send due by now (bounded, so the clock is re-read regularly).
        while start_ns + due_ns(k, n, pps) <= now && burst < 256 {
            let stream = (k % n as u64) as usize;
            let t = monotonic_ns();
            build_packet(
                &mut buf,
                stream as u32,
                seq[stream],
                seq[stream] as u32 * 160,
                ssrc_base.wrapping_add(stream as u32),
                t,
            );
            seq[stream] = seq[stream].wrapping_add(1);
            // SAFETY: sends from a live buffer on a connected socket.
            let rc = unsafe {
                libc::send(
                    fds[stream],
                    buf.as_ptr() as *const libc::c_void,
                    PACKET_BYTES,
                    libc::MSG_DONTWAIT,
                )
            };
            if rc > 0 && t >= window.0 && t < window.1 {
                in_window += 1;
            }
            k += 1;
            burst += 1;
        }
        sent.store(k, Relaxed);
        // Sleep until the next send is due: never spin, so the receiver thread (which may share
        // this CPU) is not starved, which would show up as latency that is the generator's own.
        let next = start_ns + due_ns(k, n, pps);
        let now = monotonic_ns();
        if next > now {
            std::thread::sleep(Duration::from_nanos(next - now));
        }
    }
    in_window
}

struct RxResult {
    in_window: u64,
    latency: Histogram<u64>,
    reordered: u64,
    /// Per receiving stream, the send time of the newest packet that arrived.
    last_sent_ns: Vec<u64>,
    recovery_ns: Vec<Option<u64>>,
}

fn receive_loop(
    fds: &[i32],
    window: (u64, u64),
    end_ns: u64,
    recovery_mark: Option<u64>,
    received: &AtomicU64,
    stop: &AtomicBool,
) -> RxResult {
    let n = fds.len();
    let mut r = RxResult {
        in_window: 0,
        latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
        reordered: 0,
        last_sent_ns: vec![0; n],
        recovery_ns: vec![None; n],
    };
    let mut last_seq: Vec<Option<u16>> = vec![None; n];
    // SAFETY: epoll on descriptors owned by the caller for the whole loop.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    for (i, &fd) in fds.iter().enumerate() {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) };
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut buf = [0u8; 2048];
    let mut total = 0u64;
    while !stop.load(Relaxed) {
        // SAFETY: events has room for its length.
        let ready = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 10) };
        for e in events.iter().take(ready.max(0) as usize) {
            let fd = fds[e.u64 as usize];
            loop {
                // SAFETY: receives into a live buffer.
                let len = unsafe {
                    libc::recv(
                        fd,
                        buf.as_mut_ptr() as *mut libc::c_void,
                        buf.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if len <= 0 {
                    break;
                }
                let now = monotonic_ns();
                let Some((stream, seq, sent_ns)) = parse_packet(&buf[..len as usize]) else {
                    continue;
                };
                let s = stream as usize;
                if s >= n || sent_ns > now {
                    continue;
                }
                total += 1;
                if sent_ns >= window.0 && sent_ns < window.1 {
                    r.in_window += 1;
                    let _ = r.latency.record(((now - sent_ns) / 1000).max(1));
                }
                if let Some(prev) = last_seq[s] {
                    if seq.wrapping_sub(prev) > 0x8000 {
                        r.reordered += 1;
                    }
                }
                last_seq[s] = Some(seq);
                r.last_sent_ns[s] = r.last_sent_ns[s].max(sent_ns.min(end_ns));
                if let Some(mark) = recovery_mark {
                    if sent_ns >= mark && r.recovery_ns[s].is_none() {
                        r.recovery_ns[s] = Some(now - mark);
                    }
                }
            }
        }
        received.store(total, Relaxed);
    }
    // SAFETY: closing the epoll descriptor we created.
    unsafe { libc::close(ep) };
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_round_trips_its_stamp() {
        let mut b = [0u8; PACKET_BYTES];
        build_packet(&mut b, 77, 65535, 160, 5, 123_456_789);
        assert_eq!(parse_packet(&b), Some((77, 65535, 123_456_789)));
        assert_eq!(parse_packet(&b[..10]), None);
    }

    #[test]
    fn schedule_spreads_sends_evenly() {
        // 1000 streams at 50 pps = 50k pps: one send every 20 µs; stream i first sends at i*20 µs.
        assert_eq!(due_ns(0, 1000, 50), 0);
        assert_eq!(due_ns(1, 1000, 50), 20_000);
        assert_eq!(due_ns(1000, 1000, 50), 20_000_000);
        assert_eq!(due_ns(50_000, 1000, 50), 1_000_000_000);
    }
}
