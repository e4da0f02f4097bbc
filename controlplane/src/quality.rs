//! Call quality as operators read it: the data plane's per-leg reception measurements
//! ([`RtpQuality`]) turned into loss, jitter, round trip and an ITU-T G.107 E-model MOS, for call
//! records, ng `query`/`delete` replies and the Prometheus histograms.
//!
//! Each leg's figures describe the path from that leg's peer to Tandem. The E-model needs the
//! mouth-to-ear delay, which nobody on the path knows; Tandem uses what it measures: half the
//! round trip to the peer (when relayed RTCP gave one), plus a jitter buffer of twice the
//! highest jitter seen, plus one 20 ms frame of packetisation. Loss is whole-call loss and
//! taken as random (BurstR 1). A MOS is only given for codecs G.113 Appendix I rates: G.711
//! (with concealment, as phones do) and G.729; G.722, Opus and dynamic payload types, whose
//! codec the data plane does not know, have loss and jitter without a MOS.

use serde_json::{json, Value};
use tandem_dataplane::api::RtpQuality;
use tandem_media::quality::{mos_from_r, r_factor, CodecImpairment};

/// Packetisation delay assumed in the delay term: one 20 ms frame.
const FRAME_MS: f64 = 20.0;

/// A leg's quality in people's units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LegScore {
    /// Packets expected from the peer (RTP sequence numbers).
    pub expected: u64,
    /// Lost packets as a share of expected, 0..=1.
    pub loss_ratio: f64,
    /// Highest interarrival jitter, ms, when the clock rate is known.
    pub max_jitter_ms: Option<f64>,
    /// Last round trip Tandem ↔ peer, ms, when relayed RTCP gave one.
    pub rtt_ms: Option<f64>,
    /// E-model MOS (1..=4.5) for codecs with a G.113 rating.
    pub mos: Option<f64>,
}

fn impairment(payload_type: u8) -> Option<CodecImpairment> {
    match payload_type {
        0 | 8 => Some(CodecImpairment::G711_PLC),
        18 => Some(CodecImpairment::G729A),
        _ => None,
    }
}

/// The leg's score; `None` when the peer sent no RTP.
pub fn score(q: &RtpQuality) -> Option<LegScore> {
    q.ssrc?;
    let loss_ratio = if q.expected == 0 {
        0.0
    } else {
        (q.lost.max(0) as f64 / q.expected as f64).min(1.0)
    };
    let max_jitter_ms = q.max_jitter_us.map(|us| us as f64 / 1000.0);
    let rtt_ms = q.rtt_us.map(|us| us as f64 / 1000.0);
    let mos = impairment(q.payload_type).map(|codec| {
        let delay_ms = rtt_ms.unwrap_or(0.0) / 2.0 + 2.0 * max_jitter_ms.unwrap_or(0.0) + FRAME_MS;
        mos_from_r(r_factor(delay_ms, loss_ratio * 100.0, 1.0, codec))
    });
    Some(LegScore {
        expected: q.expected,
        loss_ratio,
        max_jitter_ms,
        rtt_ms,
        mos,
    })
}

fn round(x: f64, places: i32) -> f64 {
    let p = 10f64.powi(places);
    (x * p).round() / p
}

/// The leg's quality as call records and the API show it (`null` before any RTP).
pub fn json(q: &RtpQuality) -> Value {
    let Some(s) = score(q) else {
        return Value::Null;
    };
    json!({
        "ssrc": q.ssrc,
        "payload_type": q.payload_type,
        "packets_expected": s.expected,
        "packets_lost": q.lost,
        "packets_reordered": q.reordered,
        "loss_percent": round(s.loss_ratio * 100.0, 3),
        "jitter_ms": q.jitter_us.map(|us| round(us as f64 / 1000.0, 3)),
        "max_jitter_ms": s.max_jitter_ms.map(|ms| round(ms, 3)),
        "rtt_ms": s.rtt_ms.map(|ms| round(ms, 3)),
        "max_rtt_ms": q.max_rtt_us.map(|us| round(us as f64 / 1000.0, 3)),
        "mos": s.mos.map(|m| round(m, 2)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcmu(expected: u64, lost: i64, jitter_us: u32, rtt_us: Option<u32>) -> RtpQuality {
        RtpQuality {
            ssrc: Some(1),
            payload_type: 0,
            expected,
            lost,
            reordered: 0,
            jitter_us: Some(jitter_us),
            max_jitter_us: Some(jitter_us),
            rtt_us,
            max_rtt_us: rtt_us,
        }
    }

    #[test]
    fn a_clean_g711_leg_scores_near_the_top_and_loss_costs_what_g107_says() {
        let clean = score(&pcmu(1000, 0, 1_000, Some(20_000))).unwrap();
        let m = clean.mos.unwrap();
        // R = 93.2 − 0.024 × (10 + 2 + 20) ≈ 92.4 → MOS ≈ 4.40.
        assert!((4.38..=4.42).contains(&m), "{m}");
        let lossy = score(&pcmu(1000, 50, 1_000, Some(20_000))).unwrap();
        assert!((lossy.loss_ratio - 0.05).abs() < 1e-12);
        // 5% random loss with PLC (Bpl 25.1): Ie,eff = 95 × 5/30.1 ≈ 15.8, R ≈ 76.7 → MOS ≈ 3.89.
        let m = lossy.mos.unwrap();
        assert!((3.85..=3.93).contains(&m), "{m}");
    }

    #[test]
    fn codecs_without_a_rating_and_silent_legs() {
        let mut opus = pcmu(100, 0, 0, None);
        opus.payload_type = 111;
        assert_eq!(score(&opus).unwrap().mos, None);
        assert_eq!(score(&RtpQuality::default()), None);
        assert_eq!(json(&RtpQuality::default()), Value::Null);
        let j = json(&pcmu(200, 2, 1_500, None));
        assert_eq!(j["loss_percent"], 1.0);
        assert_eq!(j["rtt_ms"], Value::Null);
        assert!(j["mos"].as_f64().unwrap() > 4.0);
    }
}
