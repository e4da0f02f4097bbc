//! Reception quality of relayed media, per leg: what each leg's peer sends us, measured where
//! it enters Tandem.
//!
//! * RTP: RFC 3550 loss, reordering and interarrival jitter of the peer's stream
//!   ([`tandem_media::quality::ReceptionStats`]), restarted when the SSRC changes (a re-INVITE
//!   or transfer brings a new sender) with the earlier source's counts kept.
//! * RTCP: the round trip between Tandem and the peer, from the RTCP passing through. When peer
//!   X's sender report is relayed to peer Y, the core notes its NTP middle bits and when it
//!   passed; Y's next report block about X's SSRC echoes them as LSR with its own holding time
//!   as DLSR, so `now − passed − DLSR` is the Tandem ↔ Y round trip (RFC 3550 §6.4.1, measured
//!   from the middle). Both legs' round trips together are the end-to-end one.
//!
//! * On a transcoded session the peers' RTCP ends here and the core sends reports of its own
//!   (`crate::rtcp`): [`LegQuality::report_block`] is what we tell a peer about its stream,
//!   and a peer's block echoing our own last SR to it gives the round trip the same way.
//!
//! Pure state, no clock: the caller passes `now_ns`. Nothing allocates per packet; one
//! [`LegQuality`] per leg sits in a table sized at start.

use crate::api::RtpQuality;
use crate::rtcp::{to_compact_units, ReportBlock};
use tandem_media::quality::ReceptionStats;

/// RTCP packet types carrying report blocks (RFC 3550 §6.4).
const RTCP_SR: u8 = 200;
const RTCP_RR: u8 = 201;
/// A compound RTCP packet is walked for at most this many packets (a hostile one cannot make
/// the per-packet cost unbounded; real compounds hold two or three).
const MAX_COMPOUND: usize = 8;

/// RTP clock rate of a static payload type (RFC 3551 §6), 0 for dynamic or unassigned ones.
pub fn static_clock_hz(payload_type: u8) -> u32 {
    match payload_type {
        0 | 3 | 4 | 5 | 7 | 8 | 9 | 12 | 13 | 15 | 18 => 8_000,
        6 => 16_000,
        10 | 11 => 44_100,
        16 => 11_025,
        17 => 22_050,
        14 | 25 | 26 | 28 | 31 | 32 | 33 | 34 => 90_000,
        _ => 0,
    }
}

/// A sender report as a later report block's LSR/DLSR refer to it: whose, its NTP middle 32
/// bits (0: none yet), and when it passed or left (monotonic ns).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SrSeen {
    pub ssrc: u32,
    pub compact: u32,
    pub at_ns: u64,
}

#[derive(Debug, Clone, Default)]
pub struct LegQuality {
    stats: ReceptionStats,
    /// The source being measured, valid once `has_source` (two plain fields: the per-packet
    /// compare is then one load and one compare).
    ssrc: u32,
    has_source: bool,
    /// The leg's media payload type: the first one seen, replaced by the first with a known
    /// clock while it has none (a stream may open with RFC 4733 events). Kept across sources.
    /// Packets of other payload types (telephone events, comfort noise) count for loss but not
    /// for jitter.
    payload_type: u8,
    media_known: bool,
    clock_hz: u32,
    /// `clock_hz` as a 32.32 fixed-point factor from nanoseconds (arrival time in clock units
    /// without a division per packet).
    clock_per_ns_q32: u64,
    max_jitter: u32,
    /// Counts of the sources that came before the current one.
    prior_expected: u64,
    prior_lost: i64,
    prior_reordered: u64,
    /// The peer's last sender report as it arrived: its SSRC, NTP middle 32 bits, and when.
    peer_sr: SrSeen,
    /// Our own last two SRs to this leg's peer, newest first, which its blocks echo (the one
    /// before the last too: a block may cross our next SR in flight).
    our_sr: [SrSeen; 2],
    /// Round trip Tandem ↔ this leg's peer, last and largest, µs.
    rtt_us: Option<u32>,
    max_rtt_us: u32,
}

impl LegQuality {
    /// Takes one RTP packet from this leg's peer (`data` classified as RTP, so at least a
    /// fixed header long).
    #[inline]
    pub fn on_rtp(&mut self, data: &[u8], now_ns: u64) {
        if data.len() < 12 {
            return;
        }
        let payload_type = data[1] & 0x7f;
        let seq = u16::from_be_bytes([data[2], data[3]]);
        let timestamp = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
        let ssrc = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
        if self.ssrc != ssrc || !self.has_source {
            self.new_source(ssrc);
        }
        if self.clock_hz == 0 && (payload_type != self.payload_type || !self.media_known) {
            self.set_media(payload_type);
        }
        if payload_type == self.payload_type && self.clock_hz != 0 {
            let arrival = ((now_ns as u128 * self.clock_per_ns_q32 as u128) >> 32) as u32;
            self.stats.on_packet(seq, timestamp, arrival);
            self.max_jitter = self.max_jitter.max(self.stats.jitter());
        } else {
            self.stats.on_packet_untimed(seq);
        }
    }

    #[cold]
    fn new_source(&mut self, ssrc: u32) {
        if self.has_source {
            self.prior_expected += self.stats.expected();
            self.prior_lost += self.stats.cumulative_lost();
            self.prior_reordered += self.stats.reordered();
        }
        self.stats = ReceptionStats::new();
        self.ssrc = ssrc;
        self.has_source = true;
    }

    /// What signalling says the peer sends (a codec plan): its media payload type and RTP clock,
    /// so dynamic payload types (Opus) get jitter too.
    pub fn set_signalled_media(&mut self, payload_type: u8, clock_hz: u32) {
        self.set_media_clock(payload_type, clock_hz);
    }

    /// Takes `payload_type` as the leg's media (first packet, or the first with a known clock).
    #[cold]
    fn set_media(&mut self, payload_type: u8) {
        self.set_media_clock(payload_type, static_clock_hz(payload_type));
    }

    fn set_media_clock(&mut self, payload_type: u8, clock_hz: u32) {
        if clock_hz != self.clock_hz {
            // Jitter is in clock units: a new clock starts a new maximum and a new estimate.
            self.max_jitter = 0;
            self.stats.restart_jitter();
        }
        self.payload_type = payload_type;
        self.media_known = true;
        self.clock_hz = clock_hz;
        self.clock_per_ns_q32 = ((clock_hz as u128) << 32).div_ceil(1_000_000_000) as u64;
    }

    /// Notes a sender report from this leg's peer as it arrives.
    fn on_sender_report(&mut self, ssrc: u32, ntp_compact: u32, now_ns: u64) {
        self.peer_sr = SrSeen {
            ssrc,
            compact: ntp_compact,
            at_ns: now_ns,
        };
    }

    /// The peer's last sender report: what the other peer's blocks echo when it was relayed.
    pub fn peer_sr(&self) -> SrSeen {
        self.peer_sr
    }

    /// Our own last two SRs to this leg's peer, newest first: what its blocks echo about a
    /// stream of ours.
    pub fn our_sr(&self) -> [SrSeen; 2] {
        self.our_sr
    }

    /// Notes the SR of ours (SSRC, NTP middle bits) just queued to this leg's peer at `now_ns`.
    pub fn on_our_sender_report(&mut self, ssrc: u32, ntp_compact: u32, now_ns: u64) {
        self.our_sr = [
            SrSeen {
                ssrc,
                compact: ntp_compact,
                at_ns: now_ns,
            },
            self.our_sr[0],
        ];
    }

    /// The report block of our report to this leg's peer at `now_ns`: how we receive its
    /// current source. Starts a new interval for the fraction lost. `None` before any RTP.
    pub fn report_block(&mut self, now_ns: u64) -> Option<ReportBlock> {
        if !self.has_source {
            return None;
        }
        let interval = self.stats.take_interval();
        // LSR/DLSR only for an SR of the source the block is about.
        let sr = self.peer_sr;
        let (lsr, dlsr) = if sr.compact != 0 && sr.ssrc == self.ssrc {
            (
                sr.compact,
                to_compact_units(now_ns.saturating_sub(sr.at_ns)),
            )
        } else {
            (0, 0)
        };
        Some(ReportBlock {
            ssrc: self.ssrc,
            fraction_lost: interval.fraction_lost,
            cumulative_lost: self.stats.cumulative_lost_rr(),
            extended_highest_seq: self.stats.extended_max_seq(),
            jitter: self.stats.jitter(),
            lsr,
            dlsr,
        })
    }

    fn on_round_trip(&mut self, rtt_us: u32) {
        self.rtt_us = Some(rtt_us);
        self.max_rtt_us = self.max_rtt_us.max(rtt_us);
    }

    pub fn report(&self) -> RtpQuality {
        let to_us = |units: u32| {
            if self.clock_hz == 0 {
                None
            } else {
                Some((units as u64 * 1_000_000 / self.clock_hz as u64).min(u32::MAX as u64) as u32)
            }
        };
        let source = self.has_source.then_some(self.ssrc);
        RtpQuality {
            ssrc: source,
            payload_type: self.payload_type,
            expected: self.prior_expected + self.stats.expected(),
            lost: self.prior_lost + self.stats.cumulative_lost(),
            reordered: self.prior_reordered + self.stats.reordered(),
            jitter_us: source.and_then(|_| to_us(self.stats.jitter())),
            max_jitter_us: source.and_then(|_| to_us(self.max_jitter)),
            rtt_us: self.rtt_us,
            max_rtt_us: self.rtt_us.map(|_| self.max_rtt_us),
        }
    }
}

/// Takes one RTCP (compound) packet that `from`'s peer sent: a sender report is noted on
/// `from`; report blocks that echo one of `echoes` (the SRs that peer may have got: the other
/// peer's, relayed, and our own about a stream of ours it hears: transcoded, played, mixed;
/// the block's SSRC tells which) give `from`'s round trip.
pub fn on_rtcp(from: &mut LegQuality, echoes: &[SrSeen], data: &[u8], now_ns: u64) {
    let mut rest = data;
    for _ in 0..MAX_COMPOUND {
        if rest.len() < 8 {
            return;
        }
        let count = (rest[0] & 0x1f) as usize;
        let packet_type = rest[1];
        let len = (u16::from_be_bytes([rest[2], rest[3]]) as usize + 1) * 4;
        let Some(packet) = rest.get(..len) else {
            return;
        };
        rest = &rest[len..];
        if packet.len() < 8 {
            continue;
        }
        let sender = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        let blocks = match packet_type {
            RTCP_SR if packet.len() >= 28 => {
                // NTP timestamp at 8..16: its middle 32 bits are what LSR echoes.
                let compact = u32::from_be_bytes([packet[10], packet[11], packet[12], packet[13]]);
                from.on_sender_report(sender, compact, now_ns);
                &packet[28..]
            }
            RTCP_RR => &packet[8..],
            _ => continue,
        };
        for block in blocks.chunks_exact(24).take(count) {
            let about = u32::from_be_bytes([block[0], block[1], block[2], block[3]]);
            let lsr = u32::from_be_bytes([block[16], block[17], block[18], block[19]]);
            let dlsr = u32::from_be_bytes([block[20], block[21], block[22], block[23]]);
            if lsr == 0 {
                continue;
            }
            let Some(echoed) = echoes
                .iter()
                .find(|sr| sr.compact == lsr && sr.ssrc == about)
            else {
                continue;
            };
            let held_ns = (dlsr as u64 * 1_000_000_000) >> 16;
            let since_ns = now_ns.saturating_sub(echoed.at_ns);
            if let Some(rtt_ns) = since_ns.checked_sub(held_ns) {
                from.on_round_trip((rtt_ns / 1_000).min(u32::MAX as u64) as u32);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32) -> [u8; 172] {
        let mut p = [0u8; 172];
        p[0] = 0x80;
        p[1] = pt;
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&ts.to_be_bytes());
        p[8..12].copy_from_slice(&ssrc.to_be_bytes());
        p
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn loss_jitter_and_reordering_of_a_pcmu_stream() {
        let mut q = LegQuality::default();
        // 100 packets every 20 ms; 5 lost; every 10th arrives 10 ms late.
        for i in 0..100u16 {
            if i % 20 == 7 {
                continue;
            }
            let late = if i % 10 == 3 { 10 * MS } else { 0 };
            q.on_rtp(
                &rtp(0, i, i as u32 * 160, 7),
                1_000 * MS + i as u64 * 20 * MS + late,
            );
        }
        let r = q.report();
        assert_eq!(r.ssrc, Some(7));
        assert_eq!(r.expected, 100);
        assert_eq!(r.lost, 5);
        assert_eq!(r.reordered, 0);
        let jitter = r.jitter_us.unwrap();
        // Two 10 ms deviations every 10 packets: the RFC 3550 estimator settles near 1.4 ms.
        assert!((500..4_000).contains(&jitter), "jitter {jitter} µs");
        assert!(r.max_jitter_us.unwrap() >= jitter);
        assert_eq!(r.rtt_us, None);
    }

    #[test]
    fn telephone_events_count_for_loss_but_not_jitter_and_a_new_ssrc_keeps_old_counts() {
        let mut q = LegQuality::default();
        let mut now = 0;
        for i in 0..50u16 {
            now += 20 * MS;
            // Packets 20..30 are RFC 4733 events (PT 101) with a frozen timestamp.
            let (pt, ts) = if (20..30).contains(&i) {
                (101, 20 * 160)
            } else {
                (8, i as u32 * 160)
            };
            q.on_rtp(&rtp(pt, 1000 + i, ts, 1), now);
        }
        let r = q.report();
        assert_eq!((r.expected, r.lost), (50, 0));
        assert!(
            r.jitter_us.unwrap() < 100,
            "events skewed jitter: {:?}",
            r.jitter_us
        );
        // A transfer: new SSRC, new sequence space; one packet lost in it.
        for i in [0u16, 1, 3] {
            now += 20 * MS;
            q.on_rtp(&rtp(8, 40_000 + i, i as u32 * 160, 2), now);
        }
        let r = q.report();
        assert_eq!(r.ssrc, Some(2));
        assert_eq!((r.expected, r.lost), (54, 1));
    }

    #[test]
    fn a_stream_opening_with_events_takes_the_audio_that_follows_as_its_media() {
        let mut q = LegQuality::default();
        let mut now = 0;
        // Five RFC 4733 packets (own SSRC), then PCMA from another SSRC, then events again.
        for i in 0..5u16 {
            now += 20 * MS;
            q.on_rtp(&rtp(101, i, 0, 9), now);
        }
        for i in 0..50u16 {
            now += 20 * MS;
            q.on_rtp(&rtp(8, 500 + i, i as u32 * 160, 4), now);
        }
        for i in 0..5u16 {
            now += 20 * MS;
            q.on_rtp(&rtp(101, 900 + i, 7, 5), now);
        }
        let r = q.report();
        assert_eq!(r.payload_type, 8);
        assert_eq!((r.expected, r.lost), (60, 0));
        assert_eq!(r.max_jitter_us, Some(0), "{r:?}");
    }

    #[test]
    fn a_signalled_clock_gives_dynamic_payload_types_jitter() {
        let mut q = LegQuality::default();
        q.set_signalled_media(111, 48_000);
        for i in 0..10u16 {
            let late = if i == 5 { 5 * MS } else { 0 };
            q.on_rtp(&rtp(111, i, i as u32 * 960, 3), i as u64 * 20 * MS + late);
        }
        let r = q.report();
        assert_eq!(r.payload_type, 111);
        // One packet 5 ms late: |D| = 5 ms twice, each adding 1/16: ~0.6 ms.
        assert!((400..800).contains(&r.max_jitter_us.unwrap()), "{r:?}");
    }

    #[test]
    fn dynamic_payload_types_have_no_jitter_without_a_clock() {
        let mut q = LegQuality::default();
        for i in 0..10u16 {
            q.on_rtp(&rtp(111, i, i as u32 * 960, 3), i as u64 * 20 * MS);
        }
        let r = q.report();
        assert_eq!((r.expected, r.lost, r.jitter_us), (10, 0, None));
    }

    fn sender_report(ssrc: u32, ntp: u64) -> Vec<u8> {
        let mut p = vec![0x80, RTCP_SR, 0, 6];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&ntp.to_be_bytes());
        p.extend_from_slice(&[0; 12]);
        p
    }

    fn receiver_report(ssrc: u32, about: u32, lsr: u32, dlsr: u32) -> Vec<u8> {
        let mut p = vec![0x81, RTCP_RR, 0, 7];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&about.to_be_bytes());
        p.extend_from_slice(&[0; 12]);
        p.extend_from_slice(&lsr.to_be_bytes());
        p.extend_from_slice(&dlsr.to_be_bytes());
        p
    }

    #[test]
    fn round_trip_from_a_relayed_sender_report_and_its_echo() {
        let (mut a, mut b) = (LegQuality::default(), LegQuality::default());
        let ntp = 0x1234_5678_9abc_def0u64;
        let compact = (ntp >> 16) as u32;
        // A's SR passes at t = 10 s.
        on_rtcp(
            &mut a,
            &[b.peer_sr()],
            &sender_report(0xa, ntp),
            10_000 * MS,
        );
        // B held it 1 s (DLSR = 65536) and its RR arrives 1.06 s after: RTT 60 ms.
        let mut compound = receiver_report(0xb, 0xa, compact, 65_536);
        compound.extend_from_slice(&[0x81, 202, 0, 1, 0, 0, 0, 0xb]); // SDES, ignored
        on_rtcp(&mut b, &[a.peer_sr()], &compound, 11_060 * MS);
        assert_eq!(b.report().rtt_us, Some(60_000));
        assert_eq!(a.report().rtt_us, None);
        // A block about another source or another SR gives nothing.
        for rr in [
            receiver_report(0xb, 0xc, compact, 0),
            receiver_report(0xb, 0xa, compact + 1, 0),
        ] {
            on_rtcp(&mut b, &[a.peer_sr()], &rr, 12_000 * MS);
        }
        assert_eq!(b.report().rtt_us, Some(60_000));
    }

    #[test]
    fn report_blocks_give_the_fraction_lost_per_interval() {
        let mut q = LegQuality::default();
        assert_eq!(q.report_block(0), None);
        // 10 packets with 2 lost, then 10 with none lost.
        for i in (0..10u16).filter(|i| *i != 3 && *i != 6) {
            q.on_rtp(&rtp(0, 100 + i, i as u32 * 160, 5), i as u64 * 20 * MS);
        }
        let b = q.report_block(200 * MS).unwrap();
        assert_eq!((b.ssrc, b.fraction_lost, b.cumulative_lost), (5, 51, 2));
        assert_eq!((b.extended_highest_seq, b.lsr, b.dlsr), (109, 0, 0));
        for i in 10..20u16 {
            q.on_rtp(&rtp(0, 100 + i, i as u32 * 160, 5), i as u64 * 20 * MS);
        }
        let b = q.report_block(400 * MS).unwrap();
        assert_eq!((b.fraction_lost, b.cumulative_lost), (0, 2));
        // An SR from another source than the one the block is about is not echoed.
        on_rtcp(&mut q, &[], &sender_report(6, 1 << 16), 0);
        assert_eq!(q.report_block(0).unwrap().lsr, 0);
    }

    #[test]
    fn hostile_rtcp_is_ignored() {
        let mut a = LegQuality::default();
        for data in [
            &[][..],
            &[0x80, 200, 0xff, 0xff, 0, 0, 0, 1][..],
            &[0x9f, 201, 0, 1, 0, 0, 0, 1][..],
            &[0x80, 200, 0, 1, 0, 0, 0, 1][..],
        ] {
            on_rtcp(&mut a, &[], data, 0);
        }
        assert_eq!(a.report().rtt_us, None);
    }
}
