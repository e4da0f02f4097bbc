//! RTCP reports of our own, for the streams the core sends under its own SSRC (transcoded
//! directions), written into a caller's buffer: no allocation, no clock read.
//!
//! A report is one RFC 3550 compound packet: an SR (sender info about our stream towards the
//! leg) or, before we have sent anything, an RR; at most one report block, about the stream we
//! receive from the same peer; then an SDES chunk with our CNAME (§6.1: every compound packet
//! carries one). The NTP time comes from a [`WallClock`]: one (monotonic, wall) pair taken when
//! the core starts, so a report costs no syscall.

use std::time::{SystemTime, UNIX_EPOCH};

pub const RTCP_SR: u8 = 200;
pub const RTCP_RR: u8 = 201;
pub const RTCP_SDES: u8 = 202;
/// SDES item type of the canonical name.
const SDES_CNAME: u8 = 1;
/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;
const NS_PER_S: u64 = 1_000_000_000;
/// Longest compound packet [`write_report`] makes: SR with one block (52), SDES with a
/// 255-byte CNAME (4 + 4 + 2 + 255 + 1, padded).
pub const MAX_REPORT_LEN: usize = 52 + 268;

/// Wall-clock time from the core's monotonic clock: the offset between the two is taken once.
/// (A wall clock stepped later is not followed; reports only need a consistent NTP timeline,
/// which is what the peer's LSR/DLSR arithmetic uses.)
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    /// Unix time in ns minus monotonic time in ns, at the moment of the pairing.
    unix_minus_monotonic_ns: u64,
}

impl WallClock {
    /// Pairs `monotonic_ns` (the core's clock) with the wall time `unix_ns` read at the same
    /// moment.
    pub fn new(monotonic_ns: u64, unix_ns: u64) -> Self {
        WallClock {
            unix_minus_monotonic_ns: unix_ns.wrapping_sub(monotonic_ns),
        }
    }

    /// Pairs `monotonic_ns` with the system's wall time now (once, at core start).
    pub fn now(monotonic_ns: u64) -> Self {
        let unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self::new(monotonic_ns, unix_ns)
    }

    /// The 64-bit NTP timestamp (32.32 seconds since 1900) of monotonic time `now_ns`.
    pub fn ntp(&self, now_ns: u64) -> u64 {
        ntp_from_unix_ns(now_ns.wrapping_add(self.unix_minus_monotonic_ns))
    }
}

/// A Unix time in ns as a 64-bit NTP timestamp.
pub fn ntp_from_unix_ns(unix_ns: u64) -> u64 {
    let seconds = unix_ns / NS_PER_S + NTP_UNIX_OFFSET_S;
    let fraction = ((unix_ns % NS_PER_S) << 32) / NS_PER_S;
    (seconds << 32) | fraction
}

pub use tandem_media::quality::ntp_compact;

/// A duration in ns as RTCP's 1/65536 s units (DLSR), saturating.
pub fn to_compact_units(ns: u64) -> u32 {
    ((ns as u128 * 65_536) / NS_PER_S as u128).min(u32::MAX as u128) as u32
}

/// What we have sent on one stream of ours: the counts and the timing an SR reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SentStream {
    /// Packets and payload octets sent (RFC 3550: wrapping 32-bit counts).
    pub packets: u32,
    pub octets: u32,
    /// RTP timestamp of the last media packet sent, and when it was sent (monotonic ns).
    last_timestamp: u32,
    last_sent_ns: u64,
    has_media: bool,
}

impl SentStream {
    /// Notes one packet of ours as queued at `now_ns` (our header: 12 bytes, no CSRCs or
    /// extension). `media`: its timestamp runs with the media clock (not a telephone event,
    /// whose timestamp stays at the key's start), so the SR's timestamp may follow it.
    pub fn on_sent(&mut self, packet: &[u8], media: bool, now_ns: u64) {
        if packet.len() < 12 {
            return;
        }
        let timestamp = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        self.on_sent_parts(timestamp, packet.len() - 12, media, now_ns);
    }

    /// [`SentStream::on_sent`] from a packet's RTP timestamp and payload length.
    pub fn on_sent_parts(&mut self, timestamp: u32, payload_len: usize, media: bool, now_ns: u64) {
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(payload_len as u32);
        if media {
            self.last_timestamp = timestamp;
            self.last_sent_ns = now_ns;
            self.has_media = true;
        }
    }

    /// The sender info of an SR at `now_ns` (NTP time `ntp`) for a stream with RTP clock
    /// `clock_hz`: the RTP timestamp is the last media packet's, moved on by the time since.
    /// `None` before anything was sent (the report is then an RR).
    pub fn sender_info(&self, ntp: u64, now_ns: u64, clock_hz: u32) -> Option<SenderInfo> {
        if self.packets == 0 {
            return None;
        }
        let rtp_timestamp = if self.has_media {
            let elapsed = now_ns.saturating_sub(self.last_sent_ns) as u128;
            let ticks = (elapsed * clock_hz as u128 / NS_PER_S as u128) as u32;
            self.last_timestamp.wrapping_add(ticks)
        } else {
            0
        };
        Some(SenderInfo {
            ntp,
            rtp_timestamp,
            packets: self.packets,
            octets: self.octets,
        })
    }
}

/// The sender info block of an SR (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    pub ntp: u64,
    pub rtp_timestamp: u32,
    pub packets: u32,
    pub octets: u32,
}

/// One report block: how we receive source `ssrc` (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    pub ssrc: u32,
    pub fraction_lost: u8,
    /// Signed 24 bits on the wire (clamped by the caller).
    pub cumulative_lost: i32,
    pub extended_highest_seq: u32,
    /// In the source's RTP clock units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP time of the source's last SR, 0 when none.
    pub lsr: u32,
    /// Time since that SR in 1/65536 s, 0 when none.
    pub dlsr: u32,
}

/// One report of ours.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a> {
    /// Our SSRC: the stream we send towards the peer the report goes to.
    pub ssrc: u32,
    /// `Some`: an SR; `None`: we have sent nothing yet, an RR.
    pub sender: Option<SenderInfo>,
    pub block: Option<ReportBlock>,
    /// At most 255 bytes.
    pub cname: &'a [u8],
}

/// Writes `report` as one compound packet into `out`; its length, or `None` when `out` is too
/// short or the CNAME too long.
pub fn write_report(report: &Report, out: &mut [u8]) -> Option<usize> {
    let cname_len = u8::try_from(report.cname.len()).ok()?;
    let blocks = report.block.is_some() as usize;
    let first_len = match report.sender {
        Some(_) => 28,
        None => 8,
    } + 24 * blocks;
    // SDES: header, SSRC, CNAME item (type, length, text), then at least one null octet that
    // ends the item list, padded to a 32-bit boundary.
    let sdes_len = (4 + 4 + 2 + cname_len as usize + 1).next_multiple_of(4);
    let total = first_len + sdes_len;
    let out = out.get_mut(..total)?;

    let (first, sdes) = out.split_at_mut(first_len);
    let packet_type = if report.sender.is_some() {
        RTCP_SR
    } else {
        RTCP_RR
    };
    write_common_header(first, blocks as u8, packet_type);
    first[4..8].copy_from_slice(&report.ssrc.to_be_bytes());
    let mut at = 8;
    if let Some(s) = report.sender {
        first[8..16].copy_from_slice(&s.ntp.to_be_bytes());
        first[16..20].copy_from_slice(&s.rtp_timestamp.to_be_bytes());
        first[20..24].copy_from_slice(&s.packets.to_be_bytes());
        first[24..28].copy_from_slice(&s.octets.to_be_bytes());
        at = 28;
    }
    if let Some(b) = report.block {
        let block = &mut first[at..at + 24];
        block[0..4].copy_from_slice(&b.ssrc.to_be_bytes());
        let lost = b.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32 & 0x00ff_ffff;
        block[4..8].copy_from_slice(&((b.fraction_lost as u32) << 24 | lost).to_be_bytes());
        block[8..12].copy_from_slice(&b.extended_highest_seq.to_be_bytes());
        block[12..16].copy_from_slice(&b.jitter.to_be_bytes());
        block[16..20].copy_from_slice(&b.lsr.to_be_bytes());
        block[20..24].copy_from_slice(&b.dlsr.to_be_bytes());
    }

    write_common_header(sdes, 1, RTCP_SDES);
    sdes[4..8].copy_from_slice(&report.ssrc.to_be_bytes());
    sdes[8] = SDES_CNAME;
    sdes[9] = cname_len;
    let text_end = 10 + cname_len as usize;
    sdes[10..text_end].copy_from_slice(report.cname);
    sdes[text_end..].fill(0);
    Some(total)
}

/// Version 2, no padding, `count` in the low 5 bits, the packet type, and the length in 32-bit
/// words minus one (`packet` is exactly the packet).
fn write_common_header(packet: &mut [u8], count: u8, packet_type: u8) {
    packet[0] = 0x80 | (count & 0x1f);
    packet[1] = packet_type;
    let words = (packet.len() / 4 - 1) as u16;
    packet[2..4].copy_from_slice(&words.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::{on_rtcp, LegQuality};
    use crate::rtp::{classify, classify_rtcp_port, Kind};

    const MS: u64 = 1_000_000;

    /// The fields of a parsed report, read back independently of the writer.
    fn parse(p: &[u8]) -> (u8, u32, Option<SenderInfo>, Vec<ReportBlock>, Vec<u8>) {
        let count = (p[0] & 0x1f) as usize;
        let packet_type = p[1];
        let len = (u16::from_be_bytes([p[2], p[3]]) as usize + 1) * 4;
        let word = |at: usize| u32::from_be_bytes(p[at..at + 4].try_into().unwrap());
        let ssrc = word(4);
        let (sender, mut at) = if packet_type == RTCP_SR {
            let ntp = u64::from_be_bytes(p[8..16].try_into().unwrap());
            let info = SenderInfo {
                ntp,
                rtp_timestamp: word(16),
                packets: word(20),
                octets: word(24),
            };
            (Some(info), 28)
        } else {
            (None, 8)
        };
        let mut blocks = Vec::new();
        for _ in 0..count {
            let lost = word(at + 4);
            blocks.push(ReportBlock {
                ssrc: word(at),
                fraction_lost: (lost >> 24) as u8,
                cumulative_lost: ((lost << 8) as i32) >> 8,
                extended_highest_seq: word(at + 8),
                jitter: word(at + 12),
                lsr: word(at + 16),
                dlsr: word(at + 20),
            });
            at += 24;
        }
        assert_eq!(at, len);
        let sdes = &p[len..];
        assert_eq!((sdes[0] & 0x1f, sdes[1]), (1, RTCP_SDES));
        let sdes_len = (u16::from_be_bytes([sdes[2], sdes[3]]) as usize + 1) * 4;
        assert_eq!(len + sdes_len, p.len(), "the compound fills the datagram");
        assert_eq!(word(len + 4), ssrc, "SDES chunk of the same source");
        assert_eq!(sdes[8], SDES_CNAME);
        let cname = sdes[10..10 + sdes[9] as usize].to_vec();
        assert!(sdes[10 + sdes[9] as usize..].iter().all(|&b| b == 0));
        (packet_type, ssrc, sender, blocks, cname)
    }

    #[test]
    fn ntp_of_the_unix_epoch_and_a_half_second() {
        assert_eq!(ntp_from_unix_ns(0), NTP_UNIX_OFFSET_S << 32);
        assert_eq!(
            ntp_from_unix_ns(1_500 * MS),
            ((NTP_UNIX_OFFSET_S + 1) << 32) | 0x8000_0000
        );
        let clock = WallClock::new(10 * NS_PER_S, 1_000 * NS_PER_S);
        assert_eq!(clock.ntp(12 * NS_PER_S) >> 32, NTP_UNIX_OFFSET_S + 1_002);
        assert_eq!(to_compact_units(NS_PER_S), 65_536);
        assert_eq!(to_compact_units(u64::MAX), u32::MAX);
    }

    #[test]
    fn sender_report_with_a_block_and_cname_round_trips() {
        let mut sent = SentStream::default();
        assert_eq!(sent.sender_info(1, 0, 8000), None);
        let mut rtp = [0u8; 172];
        rtp[0] = 0x80;
        for i in 0..10u32 {
            rtp[4..8].copy_from_slice(&(1_000 + i * 160).to_be_bytes());
            sent.on_sent(&rtp, true, i as u64 * 20 * MS);
        }
        // A telephone event (frozen timestamp) counts, but does not move the timeline.
        rtp[4..8].copy_from_slice(&5u32.to_be_bytes());
        sent.on_sent(&rtp[..16], false, 200 * MS);
        let clock = WallClock::new(0, 1_700_000_000 * NS_PER_S);
        // 50 ms after the last media packet (at 180 ms): 400 ticks of 8 kHz on.
        let now = 230 * MS;
        let info = sent.sender_info(clock.ntp(now), now, 8000).unwrap();
        assert_eq!(
            (info.packets, info.octets, info.rtp_timestamp),
            (11, 10 * 160 + 4, 1_000 + 9 * 160 + 400)
        );
        let block = ReportBlock {
            ssrc: 0xfeed,
            fraction_lost: 12,
            cumulative_lost: -3,
            extended_highest_seq: 0x1_0005,
            jitter: 77,
            lsr: 0x1234_5678,
            dlsr: 65_536,
        };
        let mut buf = [0u8; MAX_REPORT_LEN];
        let n = write_report(
            &Report {
                ssrc: 0xabcd,
                sender: Some(info),
                block: Some(block),
                cname: b"tandem-0",
            },
            &mut buf,
        )
        .unwrap();
        let p = &buf[..n];
        assert_eq!(classify(p), Ok(Kind::Rtcp));
        assert_eq!(classify_rtcp_port(p), Ok(Kind::Rtcp));
        let (pt, ssrc, back, blocks, cname) = parse(p);
        assert_eq!((pt, ssrc, back), (RTCP_SR, 0xabcd, Some(info)));
        assert_eq!(blocks, [block]);
        assert_eq!(cname, b"tandem-0");
        // Our own RTCP parser takes it: the SR is noted, and a peer's block echoing it gives
        // the round trip.
        let (mut from_us, mut peer) = (LegQuality::default(), LegQuality::default());
        on_rtcp(&mut from_us, &[], p, 10_000 * MS);
        let noted = from_us.peer_sr();
        assert_eq!((noted.ssrc, noted.compact), (0xabcd, ntp_compact(info.ntp)));
        let mut echo = [0u8; MAX_REPORT_LEN];
        let echoed = ReportBlock {
            ssrc: 0xabcd,
            lsr: noted.compact,
            dlsr: 65_536 / 2,
            ..ReportBlock::default()
        };
        let n = write_report(
            &Report {
                ssrc: 0xfeed,
                sender: None,
                block: Some(echoed),
                cname: b"peer",
            },
            &mut echo,
        )
        .unwrap();
        // Held 0.5 s, back 0.52 s after our SR: 20 ms.
        on_rtcp(&mut peer, &[noted], &echo[..n], 10_520 * MS);
        assert_eq!(peer.report().rtt_us, Some(20_000));
    }

    #[test]
    fn receiver_report_before_anything_was_sent_and_limits() {
        let mut buf = [0u8; MAX_REPORT_LEN];
        let cname = [b'x'; 255];
        let report = Report {
            ssrc: 9,
            sender: None,
            block: None,
            cname: &cname,
        };
        let n = write_report(&report, &mut buf).unwrap();
        let (pt, ssrc, sender, blocks, back) = parse(&buf[..n]);
        assert_eq!((pt, ssrc, sender, blocks.len()), (RTCP_RR, 9, None, 0));
        assert_eq!(back, cname);
        // Every CNAME length pads to a word boundary with at least one null.
        for len in 0..8 {
            let cname = vec![b'c'; len];
            let report = Report {
                cname: &cname,
                ..report
            };
            let n = write_report(&report, &mut buf).unwrap();
            assert_eq!(n % 4, 0);
            assert_eq!(parse(&buf[..n]).4, cname);
        }
        assert_eq!(write_report(&report, &mut buf[..15]), None);
        let long = [b'x'; 256];
        let report = Report {
            cname: &long,
            ..report
        };
        assert_eq!(write_report(&report, &mut buf), None);
    }
}
