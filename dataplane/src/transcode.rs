//! Transcoding: one direction of a session whose legs use different codecs.
//!
//! A [`Transcoder`] turns each RTP packet from one leg's peer into the packet the other leg's
//! peer expects: decode → resample when the rates differ → encode. The chain runs at 8 kHz when
//! a side is G.711 or G.729, else (G.722 ↔ Opus) at 16 kHz; libopus converts its own PCM side,
//! so only G.722 ↔ G.711/G.729 goes through `tandem_media::resample` (20 ms packets only: the resampler
//! works on fixed frames; 10 ms of delay). The output carries an RTP header of our own: our SSRC, and a
//! sequence and timestamp that follow the sender's (gaps, reordering and silence carry over,
//! so the receiver's jitter buffer and concealment see what really happened), timestamps in
//! the output codec's clock (Opus: 48 kHz always). Telephone events (RFC 4733) pass through
//! with their payload type mapped and their duration rescaled to the output clock.
//!
//! Everything is allocated in [`Transcoder::new`] (called when the plan is set, on a command):
//! the codec states and the per-core PCM scratch. [`Transcoders::process`] writes into the
//! caller's buffer and never allocates (`tests/transcode_no_alloc.rs`).

use crate::api::{Codec, LegCodec};
use tandem_media::codec::{
    CodecError, Decoder, G722Decoder, G722Encoder, G729Decoder, G729Encoder, OpusDecoder,
    OpusEncoder,
};
use tandem_media::g711::Law;
use tandem_media::resample::Resampler;

/// RTP fixed header we write (no CSRCs, no extension).
const HEADER_LEN: usize = 12;

/// Longest packet we decode: 120 ms (Opus's maximum) at 16 kHz, the chain's highest rate.
pub const MAX_PCM_SAMPLES: usize = 16 * 120;

/// `0xff` is no 7-bit payload type: the "none" of a payload-type byte.
const NO_PT: u8 = 0xff;

/// Why a packet was not transcoded (counted as the `transcode` drop reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not valid RTP, or an empty payload.
    Malformed,
    /// A payload type the plan does not name for the sending leg (comfort noise, a codec the
    /// peer switched to without signalling), or a telephone event the receiver cannot take.
    PayloadType,
    /// The decoder or encoder refused it (corrupt payload, a duration Opus cannot encode).
    Codec,
    /// The output does not fit the buffer.
    TooLarge,
}

impl From<CodecError> for Skip {
    fn from(_: CodecError) -> Self {
        Skip::Codec
    }
}

// The whole transcoder is boxed once per leg; boxing the G.722 state again would only add a
// pointer chase per packet.
#[allow(clippy::large_enum_variant)]
enum Dec {
    G711(Law),
    G722(G722Decoder),
    G729(G729Decoder),
    Opus(OpusDecoder),
}

// The whole transcoder is boxed once per leg; boxing the G.722 state again would only add a
// pointer chase per packet.
#[allow(clippy::large_enum_variant)]
enum Enc {
    G711(Law),
    G722(G722Encoder),
    G729(G729Encoder),
    Opus(OpusEncoder),
}

/// The PCM rate a codec's own side runs at in a chain at `chain_hz` (Opus follows the chain).
fn native_rate_hz(codec: Codec, chain_hz: u32) -> u32 {
    match codec {
        Codec::Pcmu | Codec::Pcma | Codec::G729 => 8000,
        Codec::G722 => 16000,
        Codec::Opus => chain_hz,
    }
}

/// One direction: packets from the peer of the leg whose codec is `from`, re-encoded for the
/// peer of the leg whose codec is `to`.
pub struct Transcoder {
    dec: Dec,
    enc: Enc,
    /// G.722 ↔ G.711: between the decoder's rate and the encoder's.
    resampler: Option<Box<Resampler>>,
    in_pt: u8,
    in_event_pt: u8,
    in_clock_hz: u32,
    out_pt: u8,
    out_event_pt: u8,
    out_clock_hz: u32,
    ssrc: u32,
    /// Sequence number and timestamp of the first packet of a new input stream (the first
    /// packet, or one after the sender's SSRC changed): where our stream continues.
    next_seq: u16,
    next_ts: u32,
    /// The last input packet and what it became; `None` before the first.
    last: Option<Last>,
    /// Samples (at the decoder's rate) of the last audio packet decoded, and that rate: the
    /// length of a concealed frame.
    last_samples: usize,
    dec_rate_hz: u32,
}

/// Most lost packets in a row concealed (Opus senders); a longer gap is passed on as a gap.
pub const MAX_CONCEAL: u16 = 2;

#[derive(Debug, Clone, Copy)]
struct Last {
    in_ssrc: u32,
    in_seq: u16,
    in_ts: u32,
    out_seq: u16,
    out_ts: u32,
}

/// The fields of an RTP header the transcoder reads.
struct Header {
    marker: bool,
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
}

impl Transcoder {
    /// A transcoder from `from`'s peer to `to`'s. `initial` seeds our SSRC, first sequence
    /// number and first timestamp (RFC 3550 wants them random). Fails for a pair it cannot
    /// transcode (the same codec on both sides is a relay, not a transcode).
    pub fn new(from: LegCodec, to: LegCodec, initial: u64) -> Result<Self, CodecError> {
        if from.codec == to.codec {
            return Err(CodecError::Rejected);
        }
        let narrowband = |c| matches!(c, Codec::Pcmu | Codec::Pcma | Codec::G729);
        let chain_hz = if narrowband(from.codec) || narrowband(to.codec) {
            8000
        } else {
            16000
        };
        let dec = match from.codec {
            Codec::Pcmu => Dec::G711(Law::Ulaw),
            Codec::Pcma => Dec::G711(Law::Alaw),
            Codec::G722 => Dec::G722(G722Decoder::new()),
            Codec::G729 => Dec::G729(G729Decoder::new()),
            Codec::Opus => Dec::Opus(OpusDecoder::new(chain_hz)?),
        };
        let enc = match to.codec {
            Codec::Pcmu => Enc::G711(Law::Ulaw),
            Codec::Pcma => Enc::G711(Law::Alaw),
            Codec::G722 => Enc::G722(G722Encoder::new(20)?),
            Codec::G729 => Enc::G729(G729Encoder::new(20)?),
            Codec::Opus => Enc::Opus(OpusEncoder::new(chain_hz, 20)?),
        };
        let (in_hz, out_hz) = (
            native_rate_hz(from.codec, chain_hz),
            native_rate_hz(to.codec, chain_hz),
        );
        let resampler = if in_hz == out_hz {
            None
        } else {
            let r = Resampler::new(in_hz, out_hz, 20).map_err(|_| CodecError::Rejected)?;
            Some(Box::new(r))
        };
        Ok(Transcoder {
            dec,
            enc,
            resampler,
            in_pt: from.payload_type & 0x7f,
            in_event_pt: from.event_payload_type.map_or(NO_PT, |pt| pt & 0x7f),
            in_clock_hz: from.codec.rtp_clock_hz(),
            out_pt: to.payload_type & 0x7f,
            out_event_pt: to.event_payload_type.map_or(NO_PT, |pt| pt & 0x7f),
            out_clock_hz: to.codec.rtp_clock_hz(),
            ssrc: initial as u32,
            next_seq: (initial >> 32) as u16,
            next_ts: (initial >> 24) as u32,
            last: None,
            last_samples: 0,
            dec_rate_hz: native_rate_hz(from.codec, chain_hz),
        })
    }

    /// A timestamp interval of the input clock in the output clock.
    fn rescale(&self, in_ticks: i64) -> i64 {
        in_ticks * self.out_clock_hz as i64 / self.in_clock_hz as i64
    }

    /// Our sequence number and timestamp for input packet `h`, and whether it starts a new
    /// input stream (marked). Offsets from the last packet carry the sender's gaps over.
    fn place(&mut self, h: &Header) -> (u16, u32, bool) {
        let (seq, ts, new_stream) = match self.last {
            Some(l) if l.in_ssrc == h.ssrc => {
                let dseq = h.seq.wrapping_sub(l.in_seq) as i16;
                let dts = self.rescale(h.ts.wrapping_sub(l.in_ts) as i32 as i64);
                (
                    l.out_seq.wrapping_add(dseq as u16),
                    l.out_ts.wrapping_add(dts as i32 as u32),
                    false,
                )
            }
            _ => (self.next_seq, self.next_ts, true),
        };
        self.last = Some(Last {
            in_ssrc: h.ssrc,
            in_seq: h.seq,
            in_ts: h.ts,
            out_seq: seq,
            out_ts: ts,
        });
        // A later stream change continues after this packet (20 ms on, a typical frame).
        self.next_seq = seq.wrapping_add(1);
        self.next_ts = ts.wrapping_add(self.out_clock_hz / 50);
        (seq, ts, new_stream)
    }

    /// Transcodes one RTP packet into `out` (header and payload); returns its length.
    /// `pcm` is scratch space of at least 2 × [`MAX_PCM_SAMPLES`].
    pub fn process(
        &mut self,
        packet: &[u8],
        pcm: &mut [i16],
        out: &mut [u8],
    ) -> Result<usize, Skip> {
        let payload = crate::rtp::rtp_payload(packet).ok_or(Skip::Malformed)?;
        if payload.is_empty() || out.len() < HEADER_LEN {
            return Err(Skip::Malformed);
        }
        let h = Header {
            marker: packet[1] & 0x80 != 0,
            pt: packet[1] & 0x7f,
            seq: u16::from_be_bytes([packet[2], packet[3]]),
            ts: u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]),
            ssrc: u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
        };
        let (head, body) = out.split_at_mut(HEADER_LEN);
        let (len, out_pt) = if h.pt == self.in_pt {
            (self.transcode_audio(payload, pcm, body)?, self.out_pt)
        } else if h.pt == self.in_event_pt && self.out_event_pt != NO_PT {
            (self.map_event(payload, body)?, self.out_event_pt)
        } else {
            return Err(Skip::PayloadType);
        };
        let (seq, ts, new_stream) = self.place(&h);
        head[0] = 0x80;
        head[1] = ((h.marker || new_stream) as u8) << 7 | out_pt;
        head[2..4].copy_from_slice(&seq.to_be_bytes());
        head[4..8].copy_from_slice(&ts.to_be_bytes());
        head[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        Ok(HEADER_LEN + len)
    }

    fn transcode_audio(
        &mut self,
        payload: &[u8],
        pcm: &mut [i16],
        out: &mut [u8],
    ) -> Result<usize, Skip> {
        let decoded = &mut pcm[..MAX_PCM_SAMPLES];
        let n = match &mut self.dec {
            Dec::G711(law) => {
                let n = payload.len().min(decoded.len());
                law.decode(&payload[..n], &mut decoded[..n])
            }
            Dec::G722(d) => {
                let n = payload.len().min(decoded.len() / 2);
                d.decode(&payload[..n], decoded)?
            }
            Dec::G729(d) => d.decode(payload, decoded)?,
            Dec::Opus(d) => d.decode(payload, decoded)?,
        };
        self.last_samples = n;
        self.encode_decoded(n, pcm, out)
    }

    /// Resamples (when the rates differ) and encodes the `n` samples decoded into the first
    /// half of `pcm`.
    fn encode_decoded(&mut self, n: usize, pcm: &mut [i16], out: &mut [u8]) -> Result<usize, Skip> {
        let (decoded, resampled) = pcm.split_at_mut(MAX_PCM_SAMPLES);
        let pcm: &[i16] = match self.resampler.as_deref_mut() {
            None => &decoded[..n],
            Some(r) => {
                // Fixed 20 ms frames: another packetisation cannot pass this resampler.
                if n != r.input_frame() {
                    return Err(Skip::Codec);
                }
                let m = r
                    .process(&decoded[..n], &mut resampled[..MAX_PCM_SAMPLES])
                    .map_err(|_| Skip::Codec)?;
                &resampled[..m]
            }
        };
        let n = pcm.len();
        match &mut self.enc {
            Enc::G711(law) => {
                if out.len() < n {
                    return Err(Skip::TooLarge);
                }
                Ok(law.encode(pcm, &mut out[..n]))
            }
            Enc::G722(e) => Ok(e.encode_any(pcm, out)?),
            // Whole 10 ms frames, as many as the sender packed.
            Enc::G729(e) => Ok(e.encode_any(pcm, out)?),
            // Any duration Opus can frame (2.5 to 60 ms): the sender's packetisation is kept.
            Enc::Opus(e) => Ok(e.encode_any(pcm, out)?),
        }
    }

    /// How many packets were lost just before `packet` that [`Transcoder::conceal`] can stand
    /// in for: only behind a sender whose decoder conceals (Opus; G.729, which after a SID
    /// frame fills in comfort noise instead), in the same stream, for gaps of at most
    /// [`MAX_CONCEAL`] audio packets; else 0.
    pub fn missing(&self, packet: &[u8]) -> u16 {
        let Some(l) = self.last else {
            return 0;
        };
        if !matches!(self.dec, Dec::Opus(_) | Dec::G729(_)) {
            return 0;
        }
        if packet.len() < HEADER_LEN || packet[1] & 0x7f != self.in_pt || self.last_samples == 0 {
            return 0;
        }
        let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let gap = seq.wrapping_sub(l.in_seq).wrapping_sub(1);
        if ssrc != l.in_ssrc || gap > MAX_CONCEAL {
            return 0;
        }
        gap
    }

    /// Writes one packet of concealed audio (as long as the last one decoded) into `out`,
    /// following our last packet, as if the next input packet had arrived; its length.
    pub fn conceal(&mut self, pcm: &mut [i16], out: &mut [u8]) -> Result<usize, Skip> {
        let Some(l) = self.last else {
            return Err(Skip::Codec);
        };
        let n = self.last_samples;
        if out.len() < HEADER_LEN || n == 0 || n > MAX_PCM_SAMPLES {
            return Err(Skip::Codec);
        }
        match &mut self.dec {
            Dec::Opus(d) => d.conceal(&mut pcm[..n])?,
            Dec::G729(d) => d.conceal(&mut pcm[..n])?,
            Dec::G711(_) | Dec::G722(_) => return Err(Skip::Codec),
        };
        let (head, body) = out.split_at_mut(HEADER_LEN);
        let len = self.encode_decoded(n, pcm, body)?;
        let in_ticks = (n as u64 * self.in_clock_hz as u64 / self.dec_rate_hz as u64) as u32;
        let out_ticks = self.rescale(in_ticks as i64) as u32;
        let (seq, ts) = (l.out_seq.wrapping_add(1), l.out_ts.wrapping_add(out_ticks));
        self.last = Some(Last {
            in_seq: l.in_seq.wrapping_add(1),
            in_ts: l.in_ts.wrapping_add(in_ticks),
            out_seq: seq,
            out_ts: ts,
            ..l
        });
        self.next_seq = seq.wrapping_add(1);
        self.next_ts = ts.wrapping_add(out_ticks);
        head[0] = 0x80;
        head[1] = self.out_pt;
        head[2..4].copy_from_slice(&seq.to_be_bytes());
        head[4..8].copy_from_slice(&ts.to_be_bytes());
        head[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        Ok(HEADER_LEN + len)
    }

    /// Copies a telephone-event payload, its duration rescaled to the output clock.
    fn map_event(&self, payload: &[u8], out: &mut [u8]) -> Result<usize, Skip> {
        if payload.len() < 4 {
            return Err(Skip::Malformed);
        }
        let out = out.get_mut(..payload.len()).ok_or(Skip::TooLarge)?;
        out.copy_from_slice(payload);
        let duration = u16::from_be_bytes([payload[2], payload[3]]) as i64;
        let scaled = self.rescale(duration).min(u16::MAX as i64) as u16;
        out[2..4].copy_from_slice(&scaled.to_be_bytes());
        Ok(payload.len())
    }
}

/// The transcoders of one core: one slot per session leg (`index * 2 + leg`, the direction
/// from that leg's peer), filled when a plan is set, plus the PCM scratch they share.
pub struct Transcoders {
    slots: Box<[Option<Box<Transcoder>>]>,
    pcm: Box<[i16]>,
}

impl Transcoders {
    pub fn new(sessions: u32) -> Self {
        Transcoders {
            slots: (0..sessions as usize * 2).map(|_| None).collect(),
            pcm: vec![0; 2 * MAX_PCM_SAMPLES].into_boxed_slice(),
        }
    }

    /// Installs (or with `None` removes) the transcoder for packets from `key`'s leg.
    pub fn set(&mut self, key: u32, t: Option<Transcoder>) {
        self.slots[key as usize] = t.map(Box::new);
    }

    pub fn is_set(&self, key: u32) -> bool {
        self.slots.get(key as usize).is_some_and(|t| t.is_some())
    }

    /// Lost packets before `packet` that the transcoder of `key`'s leg can conceal.
    pub fn missing(&self, key: u32, packet: &[u8]) -> u16 {
        self.slots
            .get(key as usize)
            .and_then(|t| t.as_deref())
            .map_or(0, |t| t.missing(packet))
    }

    /// One concealed packet from `key`'s leg into `out` (see [`Transcoder::conceal`]).
    pub fn conceal(&mut self, key: u32, out: &mut [u8]) -> Result<usize, Skip> {
        let t = self
            .slots
            .get_mut(key as usize)
            .and_then(|t| t.as_deref_mut())
            .ok_or(Skip::Codec)?;
        t.conceal(&mut self.pcm, out)
    }

    /// Transcodes a packet received from `key`'s leg into `out`.
    pub fn process(&mut self, key: u32, packet: &[u8], out: &mut [u8]) -> Result<usize, Skip> {
        let t = self
            .slots
            .get_mut(key as usize)
            .and_then(|t| t.as_deref_mut())
            .ok_or(Skip::PayloadType)?;
        t.process(packet, &mut self.pcm, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_media::codec::sine_snr_db;
    use tandem_media::tones::{ToneGenerator, ToneSpec};

    const PCMA: LegCodec = LegCodec {
        payload_type: 8,
        codec: Codec::Pcma,
        event_payload_type: Some(101),
    };
    const PCMU: LegCodec = LegCodec {
        payload_type: 0,
        codec: Codec::Pcmu,
        event_payload_type: None,
    };
    const OPUS: LegCodec = LegCodec {
        payload_type: 111,
        codec: Codec::Opus,
        event_payload_type: Some(110),
    };

    fn packet(pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, (marker as u8) << 7 | pt];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    fn fields(p: &[u8]) -> (bool, u8, u16, u32, u32) {
        (
            p[1] & 0x80 != 0,
            p[1] & 0x7f,
            u16::from_be_bytes([p[2], p[3]]),
            u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
        )
    }

    /// One second of a 1020 Hz tone at -10 dBm0, in `law`, 20 ms per packet.
    fn tone_packets(law: Law, pt: u8) -> Vec<Vec<u8>> {
        let mut g = ToneGenerator::new(&ToneSpec::continuous(1020.0, 0.0, -10.0), 8000).unwrap();
        (0..50u16)
            .map(|i| {
                let mut pcm = [0i16; 160];
                g.fill(&mut pcm);
                let mut codes = [0u8; 160];
                law.encode(&pcm, &mut codes);
                packet(pt, i == 0, 1000 + i, 5000 + 160 * i as u32, 7, &codes)
            })
            .collect()
    }

    fn run(t: &mut Transcoder, packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut pcm = vec![0i16; 2 * MAX_PCM_SAMPLES];
        packets
            .iter()
            .map(|p| {
                let mut out = [0u8; 1500];
                let n = t.process(p, &mut pcm, &mut out).unwrap();
                out[..n].to_vec()
            })
            .collect()
    }

    fn decode_law(law: Law, packets: &[Vec<u8>]) -> Vec<i16> {
        let mut pcm = Vec::new();
        for p in packets {
            let mut frame = vec![0i16; p.len() - 12];
            law.decode(&p[12..], &mut frame);
            pcm.extend_from_slice(&frame);
        }
        pcm
    }

    #[test]
    fn pcma_to_pcmu_keeps_the_tone_and_writes_our_own_header() {
        let mut t = Transcoder::new(PCMA, PCMU, 0x1234_5678_9abc_def0).unwrap();
        let out = run(&mut t, &tone_packets(Law::Alaw, 8));
        let (m0, pt0, seq0, ts0, ssrc) = fields(&out[0]);
        assert!(m0);
        assert_eq!(pt0, 0);
        for (i, p) in out.iter().enumerate() {
            let (m, pt, seq, ts, s) = fields(p);
            assert_eq!((pt, s), (0, ssrc));
            assert_eq!(m, i == 0);
            assert_eq!(seq, seq0.wrapping_add(i as u16));
            assert_eq!(ts, ts0.wrapping_add(160 * i as u32));
            assert_eq!(p.len(), 12 + 160);
        }
        let pcm = decode_law(Law::Ulaw, &out);
        let snr = sine_snr_db(&pcm, 1020.0, 8000.0, 0);
        assert!(snr > 30.0, "SNR {snr:.1} dB");
    }

    #[test]
    fn pcma_through_opus_and_back_keeps_the_tone() {
        let mut there = Transcoder::new(PCMA, OPUS, 1).unwrap();
        let mut back = Transcoder::new(OPUS, PCMA, 2).unwrap();
        let opus = run(&mut there, &tone_packets(Law::Alaw, 8));
        for (i, p) in opus.iter().enumerate() {
            let (_, pt, _, ts, _) = fields(p);
            assert_eq!(pt, 111);
            // The Opus clock is 48 kHz: 960 per 20 ms.
            assert_eq!(ts.wrapping_sub(fields(&opus[0]).3), 960 * i as u32);
            assert!(p.len() > 12 && p.len() < 12 + 160, "{}", p.len());
        }
        let pcma = run(&mut back, &opus);
        for (i, p) in pcma.iter().enumerate() {
            assert_eq!(fields(p).3.wrapping_sub(fields(&pcma[0]).3), 160 * i as u32);
            assert_eq!(p.len(), 12 + 160);
        }
        let pcm = decode_law(Law::Alaw, &pcma);
        // Skip the codec's start-up (look-ahead and the encoder's first frames).
        let snr = sine_snr_db(&pcm, 1020.0, 8000.0, 1600);
        assert!(snr > 15.0, "SNR {snr:.1} dB");
        let energy =
            |x: &[i16]| x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / x.len() as f64;
        let sent = decode_law(Law::Alaw, &tone_packets(Law::Alaw, 8));
        let ratio = energy(&pcm[1600..]) / energy(&sent[1600..]);
        assert!((0.5..2.0).contains(&ratio), "energy ratio {ratio:.2}");
    }

    #[test]
    fn gaps_reordering_and_a_new_input_stream_carry_over() {
        let mut t = Transcoder::new(PCMU, PCMA, 3).unwrap();
        let mut pcm = vec![0i16; 2 * MAX_PCM_SAMPLES];
        let mut go = |p: Vec<u8>| {
            let mut out = [0u8; 1500];
            let n = t.process(&p, &mut pcm, &mut out).unwrap();
            fields(&out[..n])
        };
        let first = go(packet(0, false, 10, 800, 9, &[0xff; 160]));
        assert!(first.0, "a new stream is marked");
        // Two packets lost: sequence and timestamp jump by the same.
        let after_gap = go(packet(0, false, 13, 800 + 3 * 160, 9, &[0xff; 160]));
        assert_eq!(after_gap.2, first.2.wrapping_add(3));
        assert_eq!(after_gap.3, first.3.wrapping_add(480));
        assert!(!after_gap.0);
        // A late packet lands where it belongs.
        let late = go(packet(0, false, 12, 800 + 2 * 160, 9, &[0xff; 160]));
        assert_eq!(
            (late.2, late.3),
            (first.2.wrapping_add(2), first.3.wrapping_add(320))
        );
        // The sender's marker is kept.
        assert!(go(packet(0, true, 14, 800 + 10 * 160, 9, &[0xff; 160])).0);
        // A new sender SSRC continues our stream after the last packet, marked.
        let last = go(packet(0, false, 15, 800 + 11 * 160, 9, &[0xff; 160]));
        let new = go(packet(0, false, 40_000, 7, 10, &[0xff; 160]));
        assert!(new.0);
        assert_eq!(
            (new.2, new.3),
            (last.2.wrapping_add(1), last.3.wrapping_add(160))
        );
        assert_eq!(new.4, first.4, "our SSRC never changes");
    }

    #[test]
    fn telephone_events_are_mapped_and_rescaled() {
        let mut t = Transcoder::new(PCMA, OPUS, 4).unwrap();
        let mut pcm = vec![0i16; 2 * MAX_PCM_SAMPLES];
        let mut out = [0u8; 1500];
        let audio = packet(8, false, 1, 8000, 5, &[0xd5; 160]);
        t.process(&audio, &mut pcm, &mut out).unwrap();
        let ts0 = fields(&out).3;
        // Key 5, end bit clear, volume 10, duration 400 (50 ms at 8 kHz).
        let event = packet(101, true, 2, 8160, 5, &[5, 10, 0x01, 0x90]);
        let n = t.process(&event, &mut pcm, &mut out).unwrap();
        let (m, pt, _, ts, _) = fields(&out[..n]);
        assert_eq!((m, pt, ts), (true, 110, ts0 + 960));
        assert_eq!(&out[12..n], &[5, 10, 0x09, 0x60], "2400 at 48 kHz");
        // Towards a leg without telephone-event, and an unknown payload type: dropped.
        let mut to_pcmu = Transcoder::new(PCMA, PCMU, 5).unwrap();
        assert_eq!(
            to_pcmu.process(&event, &mut pcm, &mut out),
            Err(Skip::PayloadType)
        );
        let cn = packet(13, false, 3, 8320, 5, &[40]);
        assert_eq!(t.process(&cn, &mut pcm, &mut out), Err(Skip::PayloadType));
        assert_eq!(
            t.process(&[0x80, 8, 0, 1], &mut pcm, &mut out),
            Err(Skip::Malformed)
        );
        // Opus cannot frame 7 ms (56 samples at 8 kHz).
        let odd = packet(8, false, 4, 8480, 5, &[0xd5; 56]);
        assert_eq!(t.process(&odd, &mut pcm, &mut out), Err(Skip::Codec));
    }

    #[test]
    fn g722_to_and_from_g711_and_opus_keeps_the_tone() {
        const G722: LegCodec = LegCodec {
            payload_type: 9,
            codec: Codec::G722,
            event_payload_type: Some(101),
        };
        // PCMA → G.722 (8 → 16 kHz through the resampler) → PCMU (16 → 8 kHz).
        let mut up = Transcoder::new(PCMA, G722, 1).unwrap();
        let mut down = Transcoder::new(G722, PCMU, 2).unwrap();
        let wide = run(&mut up, &tone_packets(Law::Alaw, 8));
        for (i, p) in wide.iter().enumerate() {
            // 160 bytes per 20 ms on an 8 kHz clock (320 samples of audio).
            assert_eq!((fields(p).1, p.len()), (9, 12 + 160));
            assert_eq!(fields(p).3.wrapping_sub(fields(&wide[0]).3), 160 * i as u32);
        }
        let narrow = run(&mut down, &wide);
        let pcm = decode_law(Law::Ulaw, &narrow);
        let snr = sine_snr_db(&pcm, 1020.0, 8000.0, 1600);
        assert!(snr > 25.0, "G.711 → G.722 → G.711: SNR {snr:.1} dB");
        // G.722 ↔ Opus at 16 kHz, no resampler.
        let mut to_opus = Transcoder::new(G722, OPUS, 3).unwrap();
        let mut back = Transcoder::new(OPUS, G722, 4).unwrap();
        assert!(to_opus.resampler.is_none() && back.resampler.is_none());
        let opus = run(&mut to_opus, &wide);
        assert_eq!(fields(&opus[1]).3.wrapping_sub(fields(&opus[0]).3), 960);
        let wide2 = run(&mut back, &opus);
        let mut dec = G722Decoder::new();
        let mut pcm = Vec::new();
        for p in &wide2 {
            let mut f = [0i16; 320];
            assert_eq!(dec.decode(&p[12..], &mut f), Ok(320));
            pcm.extend_from_slice(&f);
        }
        let snr = sine_snr_db(&pcm, 1020.0, 16000.0, 3200);
        assert!(snr > 15.0, "G.722 → Opus → G.722: SNR {snr:.1} dB");
        // The resampler takes 20 ms only.
        let mut pcm = vec![0i16; 2 * MAX_PCM_SAMPLES];
        let mut out = [0u8; 1500];
        let odd = packet(8, false, 9, 0, 5, &[0xd5; 80]);
        assert_eq!(up.process(&odd, &mut pcm, &mut out), Err(Skip::Codec));
    }

    #[test]
    fn short_losses_behind_an_opus_sender_are_concealed() {
        let mut there = Transcoder::new(PCMA, OPUS, 1).unwrap();
        let mut back = Transcoder::new(OPUS, PCMA, 2).unwrap();
        let opus = run(&mut there, &tone_packets(Law::Alaw, 8));
        let mut pcm = vec![0i16; 2 * MAX_PCM_SAMPLES];
        let mut out_packets = Vec::new();
        for (i, p) in opus.iter().enumerate() {
            // Packets 20 and 21 are lost; 30..33 (three in a row) too.
            if [20, 21, 30, 31, 32].contains(&i) {
                continue;
            }
            let missing = back.missing(p);
            assert_eq!(missing, if i == 22 { 2 } else { 0 }, "before packet {i}");
            for _ in 0..missing {
                let mut out = [0u8; 1500];
                let n = back.conceal(&mut pcm, &mut out).unwrap();
                out_packets.push(out[..n].to_vec());
            }
            let mut out = [0u8; 1500];
            let n = back.process(p, &mut pcm, &mut out).unwrap();
            out_packets.push(out[..n].to_vec());
        }
        // 50 sent, 5 lost, 2 concealed: 47 out; sequence and timestamp run on through the
        // concealed pair, and jump over the three not concealed.
        assert_eq!(out_packets.len(), 47);
        let f: Vec<_> = out_packets.iter().map(|p| fields(p)).collect();
        for k in 1..f.len() {
            let (dseq, dts) = (
                f[k].2.wrapping_sub(f[k - 1].2),
                f[k].3.wrapping_sub(f[k - 1].3),
            );
            let want = if k == 30 { (4, 640) } else { (1, 160) };
            assert_eq!((dseq, dts), want, "packet {k}");
        }
        // The concealed frames carry the tone on, not silence.
        let concealed = decode_law(Law::Alaw, &out_packets[20..22]);
        let rms = (concealed.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / 320.0).sqrt();
        assert!(rms > 1000.0, "concealed RMS {rms:.0}");
        // G.711 senders: nothing to conceal with.
        let mut from_pcma = Transcoder::new(PCMA, OPUS, 3).unwrap();
        let p = tone_packets(Law::Alaw, 8);
        from_pcma
            .process(&p[0], &mut pcm, &mut [0u8; 1500])
            .unwrap();
        assert_eq!(from_pcma.missing(&p[2]), 0);
    }

    const G729: LegCodec = LegCodec {
        payload_type: 18,
        codec: Codec::G729,
        event_payload_type: Some(101),
    };

    #[test]
    fn pcma_through_g729_and_back_keeps_the_tone_sid_and_losses() {
        let mut there = Transcoder::new(PCMA, G729, 1).unwrap();
        let mut back = Transcoder::new(G729, PCMA, 2).unwrap();
        let g729 = run(&mut there, &tone_packets(Law::Alaw, 8));
        for (i, p) in g729.iter().enumerate() {
            // Two 10-byte frames per 20 ms, on an 8 kHz clock.
            assert_eq!((fields(p).1, p.len()), (18, 12 + 20));
            assert_eq!(fields(p).3.wrapping_sub(fields(&g729[0]).3), 160 * i as u32);
        }
        let pcma = run(&mut back, &g729);
        assert!(pcma.iter().all(|p| p.len() == 12 + 160));
        let pcm = decode_law(Law::Alaw, &pcma);
        let snr = sine_snr_db(&pcm, 1020.0, 8000.0, 800);
        assert!(snr > 10.0, "PCMA → G.729 → PCMA: SNR {snr:.1} dB");
        // A lost packet is concealed (the tone carries on), as behind Opus.
        let mut pcm = vec![0i16; 2 * MAX_PCM_SAMPLES];
        let mut out = [0u8; 1500];
        let (_, _, in_seq, in_ts, in_ssrc) = fields(&g729[49]);
        let next = |k: u16, payload: &[u8]| {
            let ts = in_ts.wrapping_add(160 * k as u32);
            packet(18, false, in_seq.wrapping_add(k), ts, in_ssrc, payload)
        };
        let last = fields(&pcma[49]);
        let after_gap = next(2, &g729[10][12..]);
        assert_eq!(back.missing(&after_gap), 1);
        let n = back.conceal(&mut pcm, &mut out).unwrap();
        assert_eq!(n, 12 + 160);
        assert_eq!(fields(&out).2, last.2.wrapping_add(1));
        let concealed = decode_law(Law::Alaw, &[out[..n].to_vec()]);
        let rms = (concealed.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / 160.0).sqrt();
        assert!(rms > 300.0, "concealed RMS {rms:.0}");
        back.process(&after_gap, &mut pcm, &mut out).unwrap();
        // Speech and a SID frame in one packet: three frames out; SID alone: one.
        let mut with_sid = g729[11][12..].to_vec();
        with_sid.extend_from_slice(&[0x20, 0x10]);
        let n = back
            .process(&next(3, &with_sid), &mut pcm, &mut out)
            .unwrap();
        assert_eq!(n, 12 + 240);
        let n = back
            .process(&next(10, &[0x21, 0x11]), &mut pcm, &mut out)
            .unwrap();
        assert_eq!(n, 12 + 80);
        // No G.729 payload is 13 bytes long.
        assert_eq!(
            back.process(&next(11, &[0; 13]), &mut pcm, &mut out),
            Err(Skip::Codec)
        );
        // Towards G.729 only whole 10 ms frames.
        let odd = packet(8, false, 99, 0, 5, &[0xd5; 100]);
        assert_eq!(there.process(&odd, &mut pcm, &mut out), Err(Skip::Codec));
    }

    proptest::proptest! {
        /// Hostile packets on every pair: a typed skip or a packet that fits, never a panic.
        #[test]
        fn hostile_packets_never_panic(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            pt in proptest::sample::select(vec![0u8, 8, 9, 18, 101, 110, 111, 0x80 | 8, 13]),
        ) {
            const G722: LegCodec = LegCodec {
                payload_type: 9,
                codec: Codec::G722,
                event_payload_type: None,
            };
            let mut packet = data;
            if packet.len() >= 2 {
                packet[0] = 0x80 | (packet[0] & 0x3f);
                packet[1] = pt;
            }
            let mut pcm = vec![0i16; 2 * MAX_PCM_SAMPLES];
            let mut out = [0u8; 1500];
            const G729: LegCodec = LegCodec {
                payload_type: 18,
                codec: Codec::G729,
                event_payload_type: None,
            };
            let pairs = [
                (PCMA, OPUS), (OPUS, PCMU), (PCMU, G722), (G722, OPUS), (OPUS, G722),
                (G729, PCMA), (PCMU, G729), (G729, G722),
            ];
            for (from, to) in pairs {
                let mut t = Transcoder::new(from, to, 9).unwrap();
                if let Ok(n) = t.process(&packet, &mut pcm, &mut out) {
                    proptest::prop_assert!((12..=out.len()).contains(&n));
                }
            }
        }
    }

    #[test]
    fn the_same_codec_is_not_a_transcode() {
        assert!(Transcoder::new(PCMA, PCMA, 0).is_err());
    }
}
