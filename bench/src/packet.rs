//! The generator's RTP packets, its send schedule, and per-stream sequence bookkeeping: the pure
//! parts of `tandem-bench rtp`, kept apart so they are tested without sockets.

pub const PACKET_BYTES: usize = 172;
pub const RTP_HEADER: usize = 12;
/// Payload layout after the RTP header: stream id (u32), send time (u64, CLOCK_MONOTONIC ns).
/// The relay forwards the payload untouched, so latency needs no matching table.
pub const STAMP_BYTES: usize = 12;
/// PCMU: 8 kHz, 20 ms → 160 timestamp units per packet.
pub const TS_PER_PACKET: u32 = 160;

/// Writes a 172-byte PCMU (payload type 0) packet carrying `stream` and `sent_ns`.
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
/// evenly at the aggregate rate, visiting streams round-robin, so stream i's phase is i/N of the
/// packet period and the relay sees a smooth load rather than one burst per period.
pub fn due_ns(k: u64, streams: usize, pps: u32) -> u64 {
    let rate = streams as u128 * pps as u128;
    (k as u128 * 1_000_000_000u128 / rate.max(1)) as u64
}

/// With a ramp, stream i starts sending this many ns after the start (i/N of the ramp), so the
/// offered load grows linearly instead of arriving all at once.
pub fn activation_ns(stream: usize, streams: usize, ramp_ns: u64) -> u64 {
    (ramp_ns as u128 * stream as u128 / streams.max(1) as u128) as u64
}

/// What one arriving packet was, relative to what its stream delivered before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    InOrder,
    /// Older than the newest seen, not seen before (reordered).
    Late,
    Duplicate,
}

/// Per-stream receive window: the newest sequence number and a 64-packet bitmap behind it.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqTracker {
    newest: Option<u16>,
    /// Bit j set: `newest - j` has arrived.
    seen: u64,
}

impl SeqTracker {
    pub fn on_packet(&mut self, seq: u16) -> Arrival {
        let Some(newest) = self.newest else {
            self.newest = Some(seq);
            self.seen = 1;
            return Arrival::InOrder;
        };
        let ahead = seq.wrapping_sub(newest) as i16;
        if ahead > 0 {
            self.seen = if ahead >= 64 { 0 } else { self.seen << ahead };
            self.seen |= 1;
            self.newest = Some(seq);
            return Arrival::InOrder;
        }
        let behind = (-(ahead as i32)) as u32;
        if behind >= 64 {
            return Arrival::Late; // too old to tell; a duplicate this late is not plausible
        }
        let bit = 1u64 << behind;
        if self.seen & bit != 0 {
            Arrival::Duplicate
        } else {
            self.seen |= bit;
            Arrival::Late
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_round_trips_its_stamp() {
        let mut b = [0u8; PACKET_BYTES];
        build_packet(&mut b, 77, 65535, 160, 5, 123_456_789);
        assert_eq!(parse_packet(&b), Some((77, 65535, 123_456_789)));
        assert_eq!(b[1] & 0x7f, 0, "payload type 0 (PCMU)");
        assert_eq!(&b[8..12], &5u32.to_be_bytes());
        assert_eq!(parse_packet(&b[..10]), None);
        let mut not_rtp = b;
        not_rtp[0] = 0x90;
        assert_eq!(parse_packet(&not_rtp), None);
    }

    #[test]
    fn schedule_spreads_sends_evenly() {
        // 1000 streams at 50 pps = 50k pps: one send every 20 µs; stream i first sends at i*20 µs.
        assert_eq!(due_ns(0, 1000, 50), 0);
        assert_eq!(due_ns(1, 1000, 50), 20_000);
        assert_eq!(due_ns(1000, 1000, 50), 20_000_000);
        assert_eq!(due_ns(50_000, 1000, 50), 1_000_000_000);
        // Each stream's own sends are exactly one period apart.
        assert_eq!(due_ns(1003, 1000, 50) - due_ns(3, 1000, 50), 20_000_000);
        assert_eq!(due_ns(5, 0, 50), 5_000_000_000, "no division by zero");
    }

    #[test]
    fn ramp_activates_streams_linearly() {
        assert_eq!(activation_ns(0, 100, 1_000_000_000), 0);
        assert_eq!(activation_ns(50, 100, 1_000_000_000), 500_000_000);
        assert_eq!(activation_ns(99, 100, 0), 0);
    }

    #[test]
    fn tracks_duplicates_and_reordering() {
        let mut t = SeqTracker::default();
        assert_eq!(t.on_packet(10), Arrival::InOrder);
        assert_eq!(t.on_packet(12), Arrival::InOrder);
        assert_eq!(t.on_packet(11), Arrival::Late);
        assert_eq!(t.on_packet(11), Arrival::Duplicate);
        assert_eq!(t.on_packet(12), Arrival::Duplicate);
        assert_eq!(t.on_packet(13), Arrival::InOrder);
        // Wraps around 65535 → 0.
        let mut w = SeqTracker::default();
        w.on_packet(65534);
        assert_eq!(w.on_packet(0), Arrival::InOrder);
        assert_eq!(w.on_packet(65535), Arrival::Late);
        assert_eq!(w.on_packet(65535), Arrival::Duplicate);
        // A big jump forgets the window instead of shifting by ≥ 64 (which would overflow).
        assert_eq!(w.on_packet(1000), Arrival::InOrder);
        assert_eq!(w.on_packet(0), Arrival::Late);
    }
}
