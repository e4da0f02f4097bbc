//! The generator's two threads: a paced sender and an epoll/recvmmsg receiver.
//!
//! Every stream has its own connected socket (the relay latches on the source port), so one
//! `send` per packet is unavoidable: sendmmsg batches only within one socket. What keeps the
//! sender cheap is the precomputed round-robin schedule and never spinning. The receiver takes
//! each ready socket's whole queue with one recvmmsg, which also saves the EAGAIN call a
//! recv-until-empty loop would make per wake-up.

use crate::packet::{self, Arrival, SeqTracker, PACKET_BYTES, TS_PER_PACKET};
use crate::sys::{monotonic_ns, Epoll, MmsgBufs};
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Counters the progress display reads while the threads run.
#[derive(Default)]
pub struct Live {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub p99_us: AtomicU64,
    pub stop: AtomicBool,
}

/// Times on the monotonic clock, ns.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub start: u64,
    pub end: u64,
    /// Packets sent in [window.0, window.1) are the measured ones.
    pub window: (u64, u64),
    pub ramp_ns: u64,
    pub pps: u32,
}

/// Sends on `fds[i]` for stream i until `plan.end`; returns per-stream packets sent in the window.
pub fn send_loop(fds: &[i32], plan: Plan, live: &Live) -> Vec<u64> {
    let n = fds.len();
    let mut seq = vec![0u16; n];
    let mut in_window = vec![0u64; n];
    let ssrc_base = (plan.start as u32) | 1;
    let active_from: Vec<u64> = (0..n)
        .map(|i| plan.start + packet::activation_ns(i, n, plan.ramp_ns))
        .collect();
    let mut buf = [0u8; PACKET_BYTES];
    let mut k = 0u64;
    // Datagrams the kernel took (the schedule index `k` also counts slots skipped while ramping).
    let mut sent = 0u64;
    loop {
        let now = monotonic_ns();
        if now >= plan.end {
            break;
        }
        let mut burst = 0;
        // Catch up with every send due by now (bounded, so the clock is re-read regularly).
        while plan.start + packet::due_ns(k, n, plan.pps) <= now && burst < 256 {
            let stream = (k % n as u64) as usize;
            k += 1;
            burst += 1;
            let t = monotonic_ns();
            if t < active_from[stream] {
                continue; // still ramping up
            }
            let s = seq[stream];
            build_packet_for(&mut buf, stream, s, ssrc_base, t);
            seq[stream] = s.wrapping_add(1);
            // SAFETY: sends from a live buffer on a connected socket.
            let rc = unsafe {
                libc::send(
                    fds[stream],
                    buf.as_ptr() as *const libc::c_void,
                    PACKET_BYTES,
                    libc::MSG_DONTWAIT,
                )
            };
            if rc > 0 {
                sent += 1;
                if t >= plan.window.0 && t < plan.window.1 {
                    in_window[stream] += 1;
                }
            }
        }
        live.sent.store(sent, Relaxed);
        // Sleep until the next send is due: never spin, so the receiver thread (which may share
        // this CPU) is not starved, which would show up as latency that is the generator's own.
        crate::sys::sleep_until(plan.start + packet::due_ns(k, n, plan.pps));
    }
    in_window
}

fn build_packet_for(buf: &mut [u8; PACKET_BYTES], stream: usize, seq: u16, ssrc: u32, t: u64) {
    packet::build_packet(
        buf,
        stream as u32,
        seq,
        (seq as u32).wrapping_mul(TS_PER_PACKET),
        ssrc.wrapping_add(stream as u32),
        t,
    );
}

pub struct RxResult {
    /// Distinct packets sent in the window that arrived, per stream.
    pub in_window: Vec<u64>,
    pub latency: Histogram<u64>,
    pub late: u64,
    pub duplicates: u64,
    /// Per receiving stream, the send time of the newest packet that arrived.
    pub last_sent_ns: Vec<u64>,
    pub recovery_ns: Vec<Option<u64>>,
}

/// Stream 2c is received on `fds[2c + 1]` and stream 2c+1 on `fds[2c]`; the stream id in the
/// payload says which it was, so the receiver needs no mapping.
pub fn receive_loop(fds: &[i32], plan: Plan, recovery_mark: Option<u64>, live: &Live) -> RxResult {
    let n = fds.len();
    let mut r = RxResult {
        in_window: vec![0; n],
        latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
        late: 0,
        duplicates: 0,
        last_sent_ns: vec![0; n],
        recovery_ns: vec![None; n],
    };
    let mut seqs = vec![SeqTracker::default(); n];
    let ep = match Epoll::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("receiver: epoll: {e}");
            return r;
        }
    };
    for (i, &fd) in fds.iter().enumerate() {
        if let Err(e) = ep.add(fd, i as u64) {
            eprintln!("receiver: epoll_ctl: {e}");
        }
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
    let mut mm = MmsgBufs::new(16);
    let mut total = 0u64;
    // The progress display's p99 is over the last second only, warm-up included.
    let mut recent = r.latency.clone();
    let mut next_p99 = monotonic_ns() + 1_000_000_000;
    while !live.stop.load(Relaxed) {
        let ready = ep.wait(&mut events, 10);
        for e in &events[..ready] {
            let fd = fds[e.u64 as usize];
            let got = mm.recv(fd);
            let now = monotonic_ns();
            for i in 0..got {
                let Some((stream, seq, sent_ns)) = packet::parse_packet(mm.packet(i)) else {
                    continue;
                };
                let s = stream as usize;
                if s >= n || sent_ns > now {
                    continue; // not ours
                }
                total += 1;
                let _ = recent.record(((now - sent_ns) / 1000).max(1));
                match seqs[s].on_packet(seq) {
                    Arrival::Duplicate => {
                        r.duplicates += 1;
                        continue;
                    }
                    Arrival::Late => r.late += 1,
                    Arrival::InOrder => {}
                }
                if sent_ns >= plan.window.0 && sent_ns < plan.window.1 {
                    r.in_window[s] += 1;
                    let _ = r.latency.record(((now - sent_ns) / 1000).max(1));
                }
                r.last_sent_ns[s] = r.last_sent_ns[s].max(sent_ns.min(plan.end));
                if let Some(mark) = recovery_mark {
                    if sent_ns >= mark && r.recovery_ns[s].is_none() {
                        r.recovery_ns[s] = Some(now - mark);
                    }
                }
            }
        }
        live.received.store(total, Relaxed);
        let now = monotonic_ns();
        if now >= next_p99 {
            next_p99 = now + 1_000_000_000;
            live.p99_us.store(recent.value_at_quantile(0.99), Relaxed);
            recent.reset();
        }
    }
    r
}
