//! Call quality: RFC 3550 reception statistics, RTT from RTCP, and an E-model MOS estimate.
//!
//! * [`ReceptionStats`] keeps, per received RTP source, what an RTCP receiver report carries:
//!   extended highest sequence number, cumulative and fractional loss, interarrival jitter,
//!   plus a count of reordered packets. Sequence handling follows RFC 3550 Appendix A.1
//!   (wrap counting, `MAX_DROPOUT`/`MAX_MISORDER`, restart after two in-sequence packets
//!   following a large jump) without the new-source probation: the first packet counts.
//! * [`rtt_from_report`] computes the round-trip time from an RR/SR report block's LSR/DLSR.
//! * [`r_factor`] and [`mos_from_r`] are ITU-T G.107's E-model in its simplified form:
//!   every parameter at G.107's default except delay and equipment/loss impairment, so
//!   `R = 93.2 − Id − Ie,eff`.

/// Sequence gap above which a packet is treated as a jump rather than loss (RFC 3550 A.1).
pub const MAX_DROPOUT: u16 = 3000;
/// How far behind the highest sequence number a packet may be and still count as reordered.
pub const MAX_MISORDER: u16 = 100;

/// How a packet was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    /// In order, possibly after a gap (loss).
    InOrder,
    /// Older than the highest sequence number seen: reordered (or duplicated).
    Late,
    /// A large jump: ignored until the next packet confirms it, then the source restarts.
    Jump,
}

/// One interval's loss, for a receiver report (RFC 3550 A.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalLoss {
    /// Packets expected in the interval.
    pub expected: u32,
    /// Packets lost in the interval (negative with duplicates).
    pub lost: i64,
    /// The RR's "fraction lost": lost/expected in 1/256, 0 when nothing was lost.
    pub fraction_lost: u8,
}

/// What a packet does to the jitter estimate.
enum JitterStep {
    /// The source (re)started: the packet sets the transit reference.
    First,
    Next,
    /// A jump not yet confirmed: the packet is ignored.
    Skip,
}

/// RFC 3550 receiver-side statistics for one RTP source.
#[derive(Debug, Clone, Default)]
pub struct ReceptionStats {
    started: bool,
    base_seq: u32,
    max_seq: u16,
    /// Sequence wraps × 65536.
    cycles: u32,
    /// The sequence number that would confirm a jump.
    bad_seq: Option<u16>,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    reordered: u64,
    last_transit: i32,
    /// Jitter × 16, in timestamp units (RFC 3550 A.8's fixed-point form).
    jitter_q4: u32,
    /// No timed packet since the jitter estimate was restarted: the next one only sets the
    /// transit reference.
    jitter_fresh: bool,
}

impl ReceptionStats {
    /// Statistics for a source not yet heard.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one packet: its sequence number, RTP timestamp, and arrival time expressed in the
    /// same timestamp units (see [`arrival_units`]); wrapping is fine for both clocks.
    pub fn on_packet(&mut self, seq: u16, rtp_timestamp: u32, arrival: u32) -> SeqVerdict {
        let (verdict, jitter) = self.sequence(seq);
        match jitter {
            JitterStep::First => self.update_jitter(rtp_timestamp, arrival, true),
            JitterStep::Next => self.update_jitter(rtp_timestamp, arrival, self.jitter_fresh),
            JitterStep::Skip => {}
        }
        verdict
    }

    /// Takes one packet for the sequence accounting only (loss, reordering), leaving jitter
    /// alone: for packets of the same source whose timestamps do not follow the media clock
    /// (RFC 4733 events repeat their start timestamp), or whose clock rate is unknown.
    pub fn on_packet_untimed(&mut self, seq: u16) -> SeqVerdict {
        let (verdict, jitter) = self.sequence(seq);
        if let JitterStep::First = jitter {
            // The source (re)started without a transit reference: the next timed packet sets it.
            self.jitter_fresh = true;
        }
        verdict
    }

    fn sequence(&mut self, seq: u16) -> (SeqVerdict, JitterStep) {
        if !self.started {
            self.restart(seq);
            return (SeqVerdict::InOrder, JitterStep::First);
        }
        let delta = seq.wrapping_sub(self.max_seq);
        let verdict = if delta == 0 {
            SeqVerdict::Late // a duplicate of the newest packet
        } else if delta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(1 << 16);
            }
            self.max_seq = seq;
            SeqVerdict::InOrder
        } else if delta <= u16::MAX - MAX_MISORDER {
            // A jump. Two in a row (seq right after the first jump) mean the sender restarted.
            if self.bad_seq == Some(seq) {
                self.restart(seq);
                return (SeqVerdict::InOrder, JitterStep::First);
            }
            self.bad_seq = Some(seq.wrapping_add(1));
            return (SeqVerdict::Jump, JitterStep::Skip);
        } else {
            self.reordered += 1;
            SeqVerdict::Late
        };
        self.bad_seq = None;
        self.received += 1;
        (verdict, JitterStep::Next)
    }

    /// Forgets the jitter estimate (the media clock changed); the next timed packet sets the
    /// transit reference again. Sequence accounting is untouched.
    pub fn restart_jitter(&mut self) {
        self.jitter_q4 = 0;
        self.jitter_fresh = true;
    }

    fn restart(&mut self, seq: u16) {
        *self = ReceptionStats {
            started: true,
            base_seq: seq as u32,
            max_seq: seq,
            received: 1,
            ..ReceptionStats::default()
        };
    }

    fn update_jitter(&mut self, rtp_timestamp: u32, arrival: u32, first: bool) {
        let transit = arrival.wrapping_sub(rtp_timestamp) as i32;
        if !first {
            let d = transit.wrapping_sub(self.last_transit).unsigned_abs();
            // J += (|D| − J)/16, kept ×16: J16 += |D| − J16/16 (rounded).
            self.jitter_q4 = self
                .jitter_q4
                .wrapping_add(d)
                .wrapping_sub((self.jitter_q4 + 8) >> 4);
        }
        self.last_transit = transit;
        self.jitter_fresh = false;
    }

    /// Extended highest sequence number received (cycles in the upper 16 bits).
    pub fn extended_max_seq(&self) -> u32 {
        self.cycles.wrapping_add(self.max_seq as u32)
    }

    /// Packets expected since the first one.
    pub fn expected(&self) -> u64 {
        if !self.started {
            return 0;
        }
        (self.extended_max_seq() as u64 + 1).saturating_sub(self.base_seq as u64)
    }

    /// Packets received (accepted) since the first one.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Cumulative packets lost: expected − received (negative with duplicates).
    pub fn cumulative_lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    /// [`Self::cumulative_lost`] clamped to the RR's signed 24-bit field.
    pub fn cumulative_lost_rr(&self) -> i32 {
        self.cumulative_lost().clamp(-0x80_0000, 0x7f_ffff) as i32
    }

    /// Packets that arrived after a higher sequence number.
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// Interarrival jitter in timestamp units (the RR's field).
    pub fn jitter(&self) -> u32 {
        self.jitter_q4 >> 4
    }

    /// Loss since the previous call (the RR's "fraction lost"), and starts a new interval.
    pub fn take_interval(&mut self) -> IntervalLoss {
        let expected = self.expected();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost = expected_interval as i64 - received_interval as i64;
        let fraction_lost = if expected_interval == 0 || lost <= 0 {
            0
        } else {
            ((lost as u64 * 256) / expected_interval).min(255) as u8
        };
        IntervalLoss {
            expected: expected_interval.min(u32::MAX as u64) as u32,
            lost,
            fraction_lost,
        }
    }
}

/// An arrival time in RTP timestamp units: `now_ns` (any monotonic origin) × `clock_rate_hz`,
/// truncated to 32 bits. Only differences matter.
pub fn arrival_units(now_ns: u64, clock_rate_hz: u32) -> u32 {
    ((now_ns as u128 * clock_rate_hz as u128) / 1_000_000_000) as u32
}

/// The middle 32 bits of a 64-bit NTP timestamp (the format of LSR, DLSR and RTT).
pub fn ntp_compact(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// Round-trip time in 1/65536 s from a report block received at `arrival` (compact NTP),
/// with its LSR and DLSR fields (RFC 3550 §6.4.1). `None` when the peer has not had an SR
/// from us yet (LSR 0) or the clocks give a negative result.
pub fn rtt_from_report(arrival: u32, lsr: u32, dlsr: u32) -> Option<u32> {
    if lsr == 0 {
        return None;
    }
    let rtt = arrival.wrapping_sub(lsr).wrapping_sub(dlsr);
    // Anything past half the 32-bit range (≈ 9 hours) is a negative difference.
    (rtt as i32 >= 0).then_some(rtt)
}

/// Compact NTP units (1/65536 s) to microseconds.
pub fn compact_to_micros(units: u32) -> u64 {
    (units as u64 * 1_000_000) >> 16
}

/// A codec's equipment impairment and packet-loss robustness (ITU-T G.113 Appendix I).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CodecImpairment {
    /// Equipment impairment factor Ie (0 for G.711).
    pub ie: f64,
    /// Packet-loss robustness factor Bpl.
    pub bpl: f64,
}

impl CodecImpairment {
    /// G.711 with packet-loss concealment (G.711 Appendix I): Ie 0, Bpl 25.1.
    pub const G711_PLC: Self = CodecImpairment { ie: 0.0, bpl: 25.1 };
    /// G.711 without concealment (lost frames as silence): Ie 0, Bpl 4.3.
    pub const G711: Self = CodecImpairment { ie: 0.0, bpl: 4.3 };
    /// G.729 Annex A (with VAD): Ie 11, Bpl 19.0.
    pub const G729A: Self = CodecImpairment {
        ie: 11.0,
        bpl: 19.0,
    };
    /// G.723.1 at 6.3 kbit/s (with VAD): Ie 15, Bpl 16.1.
    pub const G723_1_6K3: Self = CodecImpairment {
        ie: 15.0,
        bpl: 16.1,
    };
}

/// R with every G.107 parameter at its default (no delay, no loss, G.711).
pub const R_DEFAULT: f64 = 93.2;

/// E-model transmission rating `R = 93.2 − Id − Ie,eff`.
///
/// * `one_way_delay_ms`: mouth-to-ear delay (network one way, jitter buffer, packetisation
///   and codec). `Id` uses the common simplification of G.107's delay terms (Cole & Rosenbluth,
///   2001): `Id = 0.024·d + 0.11·(d − 177.3)·H(d − 177.3)`.
/// * `loss_percent`: packet loss Ppl in percent; `burst_ratio`: BurstR (1 for random loss).
/// * `Ie,eff = Ie + (95 − Ie) · Ppl / (Ppl/BurstR + Bpl)` (G.107 §3.5).
pub fn r_factor(
    one_way_delay_ms: f64,
    loss_percent: f64,
    burst_ratio: f64,
    codec: CodecImpairment,
) -> f64 {
    let d = one_way_delay_ms.max(0.0);
    let id = 0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 };
    let ppl = loss_percent.clamp(0.0, 100.0);
    let burst = if burst_ratio > 0.0 { burst_ratio } else { 1.0 };
    let ie_eff = codec.ie + (95.0 - codec.ie) * ppl / (ppl / burst + codec.bpl);
    R_DEFAULT - id - ie_eff
}

/// G.107 Annex B: MOS (conversational quality estimate) from R. The cubic dips just below 1
/// for 0 < R < 6.5; the result is held at 1 there, so MOS stays within 1..=4.5.
pub fn mos_from_r(r: f64) -> f64 {
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        (1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6).max(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn feed(s: &mut ReceptionStats, seqs: impl IntoIterator<Item = u16>) {
        for q in seqs {
            // 20 ms packets at 8 kHz, arriving exactly on time.
            let ts = q as u32 * 160;
            s.on_packet(q, ts, ts + 1000);
        }
    }

    #[test]
    fn no_loss_no_jitter() {
        let mut s = ReceptionStats::new();
        feed(&mut s, 0..100);
        assert_eq!(
            (s.expected(), s.received(), s.cumulative_lost()),
            (100, 100, 0)
        );
        assert_eq!(s.jitter(), 0);
        assert_eq!(s.take_interval().fraction_lost, 0);
    }

    #[test]
    fn loss_cumulative_and_fractional() {
        let mut s = ReceptionStats::new();
        // 100 packets, every 10th lost: 10 lost of 100 → fraction 25/256.
        feed(&mut s, (0..100).filter(|q| q % 10 != 5));
        assert_eq!(s.cumulative_lost(), 10);
        let i = s.take_interval();
        assert_eq!((i.expected, i.lost, i.fraction_lost), (100, 10, 25));
        // Next interval: 50 more, none lost.
        feed(&mut s, 100..150);
        let i = s.take_interval();
        assert_eq!((i.expected, i.lost, i.fraction_lost), (50, 0, 0));
        assert_eq!(s.cumulative_lost(), 10);
    }

    #[test]
    fn reordering_is_counted_and_not_loss() {
        let mut s = ReceptionStats::new();
        feed(&mut s, [0, 1, 3, 2, 4, 6, 5, 7]);
        assert_eq!(s.reordered(), 2);
        assert_eq!(s.cumulative_lost(), 0);
        assert_eq!(s.extended_max_seq(), 7);
    }

    #[test]
    fn duplicates_make_loss_negative_and_clamp() {
        let mut s = ReceptionStats::new();
        feed(&mut s, [0, 1, 2, 2, 1]);
        assert_eq!(s.cumulative_lost(), -2);
        assert_eq!(s.cumulative_lost_rr(), -2);
    }

    #[test]
    fn sequence_wrap_counts_cycles() {
        let mut s = ReceptionStats::new();
        feed(&mut s, (65530..=65535).chain(0..6));
        assert_eq!(s.extended_max_seq(), 65536 + 5);
        assert_eq!((s.expected(), s.cumulative_lost()), (12, 0));
    }

    #[test]
    fn a_single_jump_is_ignored_two_restart() {
        let mut s = ReceptionStats::new();
        feed(&mut s, 0..10);
        assert_eq!(s.on_packet(20000, 0, 0), SeqVerdict::Jump);
        assert_eq!(s.on_packet(10, 0, 0), SeqVerdict::InOrder);
        assert_eq!((s.expected(), s.received()), (11, 11));
        assert_eq!(s.on_packet(30000, 0, 0), SeqVerdict::Jump);
        assert_eq!(s.on_packet(30001, 0, 0), SeqVerdict::InOrder);
        assert_eq!(
            (s.expected(), s.received(), s.extended_max_seq()),
            (1, 1, 30001)
        );
    }

    #[test]
    fn jitter_follows_rfc3550_recursion() {
        // Transit alternates 0, 160, 0, 160…: |D| = 160 each time, so
        // J_n = 160·(1 − (15/16)^n).
        let mut s = ReceptionStats::new();
        for q in 0u16..200 {
            let ts = q as u32 * 160;
            let late = if q % 2 == 1 { 160 } else { 0 };
            s.on_packet(q, ts, ts + late);
            if q == 16 {
                let want = 160.0 * (1.0 - (15.0f64 / 16.0).powi(16));
                assert!(
                    (s.jitter() as f64 - want).abs() <= 1.0,
                    "{} vs {want}",
                    s.jitter()
                );
            }
        }
        assert!((158..=160).contains(&s.jitter()), "{}", s.jitter());
    }

    #[test]
    fn arrival_units_from_nanoseconds() {
        assert_eq!(arrival_units(1_000_000_000, 8000), 8000);
        assert_eq!(arrival_units(20_000_000, 48000), 960);
    }

    #[test]
    fn rtt_rfc3550_example() {
        // RFC 3550 §6.4.1: LSR 0xb705:2000, DLSR 0x0005:4000 (5.25 s), A 0xb710:8000 →
        // RTT 0x0006:2000 = 6.125 s.
        let rtt = rtt_from_report(0xb710_8000, 0xb705_2000, 0x0005_4000).unwrap();
        assert_eq!(rtt, 0x0006_2000);
        assert_eq!(compact_to_micros(rtt), 6_125_000);
        assert_eq!(rtt_from_report(0xb710_8000, 0, 0), None);
        assert_eq!(rtt_from_report(0x0000_1000, 0x0000_2000, 0), None);
        assert_eq!(ntp_compact(0x0001_0002_0003_0004), 0x0002_0003);
    }

    #[test]
    fn e_model_known_values() {
        let r = r_factor(0.0, 0.0, 1.0, CodecImpairment::G711_PLC);
        assert!((r - 93.2).abs() < 1e-9);
        assert!((mos_from_r(r) - 4.41).abs() < 0.005, "{}", mos_from_r(r));
        // G.711+PLC, 1% random loss: Ie,eff = 95·1/(1 + 25.1) = 3.64.
        let r = r_factor(0.0, 1.0, 1.0, CodecImpairment::G711_PLC);
        assert!((r - (93.2 - 95.0 / 26.1)).abs() < 1e-9);
        // G.729A, no loss: 93.2 − 11.
        assert!((r_factor(0.0, 0.0, 1.0, CodecImpairment::G729A) - 82.2).abs() < 1e-9);
        // 200 ms one way: Id = 4.8 + 0.11·22.7 = 7.297.
        let r = r_factor(200.0, 0.0, 1.0, CodecImpairment::G711_PLC);
        assert!((r - (93.2 - 7.297)).abs() < 1e-9);
        // Bursty loss hurts more than random loss of the same rate.
        assert!(
            r_factor(0.0, 5.0, 2.0, CodecImpairment::G711_PLC)
                < r_factor(0.0, 5.0, 1.0, CodecImpairment::G711_PLC)
        );
        // MOS anchors.
        assert_eq!(mos_from_r(-5.0), 1.0);
        assert_eq!(mos_from_r(120.0), 4.5);
        assert!((mos_from_r(50.0) - 2.575).abs() < 1e-9);
        assert!((mos_from_r(80.0) - 4.024).abs() < 1e-3);
    }

    proptest! {
        /// Any arrival order of a loss-free run: nothing counted lost, and everything that came
        /// after a higher number is counted reordered.
        #[test]
        fn shuffled_runs_lose_nothing(start in any::<u16>(), swaps in proptest::collection::vec((0usize..50, 0usize..50), 0..20)) {
            let mut seqs: Vec<u16> = (0..50).map(|i| start.wrapping_add(i)).collect();
            // Keep the first packet first (it defines the base), shuffle the rest locally.
            for (a, b) in swaps {
                let (a, b) = (a.max(1), b.max(1));
                seqs.swap(a, b);
            }
            let mut s = ReceptionStats::new();
            for &q in &seqs { s.on_packet(q, 0, 0); }
            prop_assert_eq!(s.cumulative_lost(), 0);
            prop_assert_eq!(s.expected(), 50);
            let late = seqs.iter().enumerate().filter(|&(i, &q)| {
                seqs[..i].iter().any(|&p| p.wrapping_sub(start) > q.wrapping_sub(start))
            }).count() as u64;
            prop_assert_eq!(s.reordered(), late);
        }

        #[test]
        fn r_and_mos_are_monotonic_in_loss_and_delay(d in 0.0f64..800.0, l in 0.0f64..30.0) {
            let c = CodecImpairment::G711_PLC;
            let r = r_factor(d, l, 1.0, c);
            prop_assert!(r_factor(d + 10.0, l, 1.0, c) <= r);
            prop_assert!(r_factor(d, l + 1.0, 1.0, c) <= r);
            let m = mos_from_r(r);
            prop_assert!((1.0..=4.5).contains(&m));
        }
    }
}
