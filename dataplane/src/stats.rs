//! Per-core counters the control plane reads at scrape time.
//!
//! Each core counts into plain integers on its own stack and publishes them here once per loop
//! iteration with relaxed stores: one writer per cache line, no atomic read-modify-write on the
//! packet path. Readers may see values up to one batch old, which is what a scrape wants anyway.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a received datagram was not relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not RTP/RTCP, or its header does not fit the datagram.
    Malformed = 0,
    /// Larger than the receive buffer.
    Truncated,
    /// From an address other than the latched peer.
    ForeignSource,
    /// The other leg's address is not known yet (no answer) .
    NoDestination,
    /// The kernel refused to send it for a local reason (no buffer space, socket gone).
    SendFailed,
    /// The kernel refused to send it because an ICMP error said the peer's port or host is
    /// unreachable, and the one retry failed too: the peer has gone (a phone that hung up and
    /// closed its port while the other side still talks), not a loss inside Tandem.
    PeerUnreachable,
    /// The kernel dropped it because the socket's receive queue was full (overload edge).
    SocketOverflow,
    /// Waited in the socket queue longer than the age limit (a stall): relaying audio that old
    /// only delays fresh packets behind it, so it is dropped at receive cost.
    Stale,
    /// Bound for a leg that is being played a clip: its peer hears the clip instead.
    Playback,
    /// On a transcoded leg, a packet that could not be transcoded: a payload type outside the
    /// plan, a corrupt payload, or a duration the output codec cannot frame.
    Transcode,
    /// On a leg whose audio goes to a supervisor mix (`crate::monitor`), a packet the mixer
    /// could not take: a payload type other than the leg's codec (events, comfort noise), a
    /// corrupt payload, or media from a supervisor's leg attached to no call.
    Mix,
    /// DTMF (a telephone event) from a leg whose DTMF is blocked towards the other (PCI).
    DtmfBlocked,
    /// Bound for a leg the control plane holds relaying to (`Command::HoldRelay`): a B2BUA
    /// caller whose callee's answer, and the codec plan it may bring, is not processed yet, so
    /// a callee that starts media with its 200 OK cannot reach the caller in a codec it lacks.
    Held,
}

impl DropReason {
    pub const ALL: [DropReason; 13] = [
        DropReason::Malformed,
        DropReason::Truncated,
        DropReason::ForeignSource,
        DropReason::NoDestination,
        DropReason::SendFailed,
        DropReason::PeerUnreachable,
        DropReason::SocketOverflow,
        DropReason::Stale,
        DropReason::Playback,
        DropReason::Transcode,
        DropReason::Mix,
        DropReason::DtmfBlocked,
        DropReason::Held,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Truncated => "truncated",
            DropReason::ForeignSource => "foreign_source",
            DropReason::NoDestination => "no_destination",
            DropReason::SendFailed => "send_failed",
            DropReason::PeerUnreachable => "peer_unreachable",
            DropReason::SocketOverflow => "socket_overflow",
            DropReason::Stale => "stale",
            DropReason::Playback => "playback",
            DropReason::Transcode => "transcode",
            DropReason::Mix => "mix",
            DropReason::DtmfBlocked => "dtmf_blocked",
            DropReason::Held => "held",
        }
    }
}

/// Upper bounds (ns) of the relay-latency histogram buckets: kernel receive timestamp to the
/// return of the send call. The last bucket is +Inf.
pub const LATENCY_BOUNDS_NS: [u64; 14] = [
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    50_000_000,
    250_000_000,
    1_000_000_000,
];
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_NS.len() + 1;

pub fn latency_bucket(ns: u64) -> usize {
    LATENCY_BOUNDS_NS
        .iter()
        .position(|&b| ns <= b)
        .unwrap_or(LATENCY_BOUNDS_NS.len())
}

/// Plain counters owned by one core.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub relayed_packets: u64,
    pub relayed_bytes: u64,
    /// Datagrams the core generated itself (playback), sent; not in `relayed_*`.
    pub played_packets: u64,
    pub played_bytes: u64,
    /// DTMF keys reported to the control plane.
    pub dtmf_events: u64,
    /// RTCP reports the core generated (transcoded sessions) and queued; as generated
    /// datagrams they are also in `played_*` once sent.
    pub rtcp_sent: u64,
    /// RTCP from the peers of transcoded legs that fed quality and ended here (not relayed:
    /// it describes streams the other peer never receives). Not a drop.
    pub rtcp_terminated: u64,
    pub drops: [u64; DropReason::ALL.len()],
    pub sessions_active: u64,
    pub sessions_created: u64,
    pub sessions_refused: u64,
    pub sessions_timed_out: u64,
    pub events_lost: u64,
    pub latency_buckets: [u64; LATENCY_BUCKETS],
    pub latency_sum_ns: u64,
    pub loop_wakeups: u64,
}

impl Counters {
    pub fn drop(&mut self, reason: DropReason, n: u64) {
        self.drops[reason as usize] += n;
    }

    pub fn record_latency(&mut self, ns: u64) {
        self.latency_buckets[latency_bucket(ns)] += 1;
        self.latency_sum_ns += ns;
    }
}

#[repr(align(128))]
#[derive(Default)]
pub struct CoreStats {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    relayed_packets: AtomicU64,
    relayed_bytes: AtomicU64,
    played_packets: AtomicU64,
    played_bytes: AtomicU64,
    dtmf_events: AtomicU64,
    rtcp_sent: AtomicU64,
    rtcp_terminated: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
    sessions_active: AtomicU64,
    sessions_created: AtomicU64,
    sessions_refused: AtomicU64,
    sessions_timed_out: AtomicU64,
    events_lost: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS],
    latency_sum_ns: AtomicU64,
    loop_wakeups: AtomicU64,
}

impl CoreStats {
    /// Called only by the owning core.
    pub fn publish(&self, c: &Counters) {
        self.rx_packets.store(c.rx_packets, Relaxed);
        self.rx_bytes.store(c.rx_bytes, Relaxed);
        self.relayed_packets.store(c.relayed_packets, Relaxed);
        self.relayed_bytes.store(c.relayed_bytes, Relaxed);
        self.played_packets.store(c.played_packets, Relaxed);
        self.played_bytes.store(c.played_bytes, Relaxed);
        self.dtmf_events.store(c.dtmf_events, Relaxed);
        self.rtcp_sent.store(c.rtcp_sent, Relaxed);
        self.rtcp_terminated.store(c.rtcp_terminated, Relaxed);
        for (a, v) in self.drops.iter().zip(c.drops) {
            a.store(v, Relaxed);
        }
        self.sessions_active.store(c.sessions_active, Relaxed);
        self.sessions_created.store(c.sessions_created, Relaxed);
        self.sessions_refused.store(c.sessions_refused, Relaxed);
        self.sessions_timed_out.store(c.sessions_timed_out, Relaxed);
        self.events_lost.store(c.events_lost, Relaxed);
        for (a, v) in self.latency_buckets.iter().zip(c.latency_buckets) {
            a.store(v, Relaxed);
        }
        self.latency_sum_ns.store(c.latency_sum_ns, Relaxed);
        self.loop_wakeups.store(c.loop_wakeups, Relaxed);
    }

    /// A copy of the last published counters.
    pub fn snapshot(&self) -> Counters {
        Counters {
            rx_packets: self.rx_packets.load(Relaxed),
            rx_bytes: self.rx_bytes.load(Relaxed),
            relayed_packets: self.relayed_packets.load(Relaxed),
            relayed_bytes: self.relayed_bytes.load(Relaxed),
            played_packets: self.played_packets.load(Relaxed),
            played_bytes: self.played_bytes.load(Relaxed),
            dtmf_events: self.dtmf_events.load(Relaxed),
            rtcp_sent: self.rtcp_sent.load(Relaxed),
            rtcp_terminated: self.rtcp_terminated.load(Relaxed),
            drops: std::array::from_fn(|i| self.drops[i].load(Relaxed)),
            sessions_active: self.sessions_active.load(Relaxed),
            sessions_created: self.sessions_created.load(Relaxed),
            sessions_refused: self.sessions_refused.load(Relaxed),
            sessions_timed_out: self.sessions_timed_out.load(Relaxed),
            events_lost: self.events_lost.load(Relaxed),
            latency_buckets: std::array::from_fn(|i| self.latency_buckets[i].load(Relaxed)),
            latency_sum_ns: self.latency_sum_ns.load(Relaxed),
            loop_wakeups: self.loop_wakeups.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_inclusive_upper_bounds() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(5_000), 0);
        assert_eq!(latency_bucket(5_001), 1);
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS - 1);
    }

    #[test]
    fn publish_then_snapshot_round_trips() {
        let mut c = Counters {
            rx_packets: 7,
            played_packets: 5,
            rtcp_sent: 3,
            rtcp_terminated: 2,
            ..Counters::default()
        };
        c.drop(DropReason::ForeignSource, 3);
        c.record_latency(42_000);
        let s = CoreStats::default();
        s.publish(&c);
        let back = s.snapshot();
        assert_eq!((back.rx_packets, back.played_packets), (7, 5));
        assert_eq!((back.rtcp_sent, back.rtcp_terminated), (3, 2));
        assert_eq!(back.drops[DropReason::ForeignSource as usize], 3);
        assert_eq!(back.latency_buckets[latency_bucket(42_000)], 1);
    }
}
