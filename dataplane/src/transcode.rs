//! Transcoding: one direction of a session whose legs use different codecs.
//!
//! A [`Transcoder`] turns each RTP packet from one leg's peer into the packet the other leg's
//! peer expects: decode → resample when the rates differ → encode. The chain runs at 8 kHz when
//! a side is G.711 or G.729, else (G.722 ↔ Opus) at 16 kHz; libopus converts its own PCM side,
//! and a G.722 decoder in an 8 kHz chain decodes the lower band alone, at 8 kHz, so only audio
//! towards a G.722 peer from a G.711/G.729 one goes through `tandem_media::resample` (8 → 16
//! kHz, 10 ms at a time). The
//! output carries an RTP header of our own: our SSRC, and a sequence and timestamp that follow
//! the sender's (gaps, reordering and silence carry over, so the receiver's jitter buffer and
//! concealment see what really happened), timestamps in the output codec's clock (Opus: 48 kHz
//! always). Telephone events (RFC 4733) pass through with their payload type mapped and their
//! duration rescaled to the output clock. When the legs asked for different packet durations
//! (`LegCodec::ptime_ms`), the audio is re-framed to the receiver's (`crate::repacketise`).
//!
//! Everything is allocated in [`Transcoder::new`] (called when the plan is set, on a command):
//! the codec states and the per-core PCM scratch. [`Transcoders::process`] writes into the
//! caller's buffer and never allocates (`tests/transcode_no_alloc.rs`).

use crate::api::{Codec, CodecOptions, LegCodec};
use crate::repacketise::Repacketiser;
use crate::rtcp::SentStream;
use tandem_media::codec::{
    CodecError, Decoder, G722Decoder, G722Encoder, G729Decoder, G729Encoder, OpusDecoder,
    OpusEncoder, G729_FRAME_SAMPLES,
};
use tandem_media::g711::Law;
use tandem_media::resample::Resampler;

/// RTP fixed header we write (no CSRCs, no extension).
pub(crate) const HEADER_LEN: usize = 12;

/// Frames the resampler converts at a time: any packet of whole 10 ms passes it.
const RESAMPLE_FRAME_MS: u32 = 10;

/// The packet loss an Opus encoder with in-band FEC is told to expect, %. libopus sizes the
/// FEC copy by it (none at 0, more bits the higher); we measure no loss of our own before
/// encoding, so a fixed, typical figure for a WAN leg: 10% buys a usable copy of the last
/// frame for about a fifth more bits.
pub const OPUS_FEC_EXPECTED_LOSS_PCT: u8 = 10;

/// Writes our RTP header (version 2, no padding, extension or CSRCs) into `out[..12]`.
pub(crate) fn write_header(out: &mut [u8], marker: bool, pt: u8, seq: u16, ts: u32, ssrc: u32) {
    out[0] = 0x80;
    out[1] = (marker as u8) << 7 | pt;
    out[2..4].copy_from_slice(&seq.to_be_bytes());
    out[4..8].copy_from_slice(&ts.to_be_bytes());
    out[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

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
    /// Repacketising: the packet is from before the audio already held (reordered or
    /// duplicated), too late to place.
    Late,
    /// Repacketising: not a drop; the audio is held until it fills an output packet.
    Held,
    /// Not a drop: discontinuous transmission (Opus DTX, G.729 Annex B towards a peer that
    /// takes it) has nothing to send for this stretch of silence. Our sequence numbers do not
    /// advance (RFC 7587 §3.1.3, RFC 3551 §4.5.6: the receiver sees the timestamps jump, not a
    /// loss) and the next packet sent is marked as a talkspurt's first.
    Untransmitted,
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

/// The PCM rate a codec's decoder runs at in a chain at `chain_hz`: Opus follows the chain,
/// and so does G.722's, whose lower band alone is what an 8 kHz chain keeps (the resampler
/// down to 8 kHz would remove the upper band anyway).
fn decoder_rate_hz(codec: Codec, chain_hz: u32) -> u32 {
    match codec {
        Codec::Pcmu | Codec::Pcma | Codec::G729 => 8000,
        Codec::G722 | Codec::Opus => chain_hz,
    }
}

/// The PCM rate a codec's encoder runs at in a chain at `chain_hz`: Opus follows the chain;
/// G.722 takes 16 kHz (its transmit QMF needs the 4–8 kHz band to cancel the aliasing its
/// lower band has near 4 kHz, so 8 kHz audio is resampled up, not coded in the lower band).
fn encoder_rate_hz(codec: Codec, chain_hz: u32) -> u32 {
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
    /// G.711/G.729 → G.722: 8 kHz up to the encoder's 16 kHz.
    resampler: Option<Box<Resampler>>,
    /// The receiver wants another packet duration than the sender's ptime
    /// (`repacketise.rs`); `None`: one packet out per packet in.
    repack: Option<Box<Repacketiser>>,
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
    /// The encoder's PCM rate (to place a payload that starts after untransmitted frames).
    enc_rate_hz: u32,
    /// The encoder left packets untransmitted (DTX): the next one sent starts a talkspurt
    /// and is marked.
    talkspurt: bool,
    /// What went out under our SSRC (noted by the core as each packet is queued): the sender
    /// info of our RTCP reports to the receiver.
    sent: SentStream,
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
        let (in_hz, out_hz) = (
            decoder_rate_hz(from.codec, chain_hz),
            encoder_rate_hz(to.codec, chain_hz),
        );
        let dec = match from.codec {
            Codec::Pcmu => Dec::G711(Law::Ulaw),
            Codec::Pcma => Dec::G711(Law::Alaw),
            Codec::G722 if in_hz == 8000 => Dec::G722(G722Decoder::narrowband()),
            Codec::G722 => Dec::G722(G722Decoder::new()),
            Codec::G729 => Dec::G729(G729Decoder::new()),
            Codec::Opus => Dec::Opus(OpusDecoder::new(in_hz)?),
        };
        let enc = match to.codec {
            Codec::Pcmu => Enc::G711(Law::Ulaw),
            Codec::Pcma => Enc::G711(Law::Alaw),
            Codec::G722 => Enc::G722(G722Encoder::new(20)?),
            Codec::G729 => Enc::G729(G729Encoder::with_vad(20, to.options.dtx)?),
            Codec::Opus => Enc::Opus(opus_encoder(out_hz, to.options)?),
        };
        let resampler = if in_hz == out_hz {
            None
        } else {
            let r = Resampler::new(in_hz, out_hz, RESAMPLE_FRAME_MS)
                .map_err(|_| CodecError::Rejected)?;
            Some(Box::new(r))
        };
        let (seq, ts) = ((initial >> 32) as u16, (initial >> 24) as u32);
        let (from_ms, to_ms) = (from.ptime_ms as u32, to.ptime_ms as u32);
        let repack = if from_ms == 0 || to_ms == 0 || from_ms == to_ms {
            None
        } else {
            if !to_ms.is_multiple_of(10)
                || (to.codec == Codec::Opus && to_ms % 20 != 0 && to_ms != 10)
            {
                return Err(CodecError::FrameDuration(to_ms));
            }
            let r = Repacketiser::new(
                to.payload_type & 0x7f,
                to_ms,
                out_hz,
                from.codec.rtp_clock_hz(),
                to.codec.rtp_clock_hz(),
                seq,
                ts,
            )
            .ok_or(CodecError::FrameDuration(to_ms))?;
            Some(Box::new(r))
        };
        Ok(Transcoder {
            dec,
            enc,
            resampler,
            repack,
            in_pt: from.payload_type & 0x7f,
            in_event_pt: from.event_payload_type.map_or(NO_PT, |pt| pt & 0x7f),
            in_clock_hz: from.codec.rtp_clock_hz(),
            out_pt: to.payload_type & 0x7f,
            out_event_pt: to.event_payload_type.map_or(NO_PT, |pt| pt & 0x7f),
            out_clock_hz: to.codec.rtp_clock_hz(),
            ssrc: initial as u32,
            next_seq: seq,
            next_ts: ts,
            last: None,
            last_samples: 0,
            dec_rate_hz: in_hz,
            enc_rate_hz: out_hz,
            talkspurt: false,
            sent: SentStream::default(),
        })
    }

    /// Our SSRC: the stream the receiving peer gets.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The output codec's RTP clock.
    pub fn out_clock_hz(&self) -> u32 {
        self.out_clock_hz
    }

    /// What we have sent so far (for our SR).
    pub fn sent(&self) -> &SentStream {
        &self.sent
    }

    /// Notes one packet of ours as queued at `now_ns` (after any rewriting: DTMF keys sent
    /// into the stream). Its timestamp paces our SR's only for audio, not events.
    pub fn on_sent(&mut self, packet: &[u8], now_ns: u64) {
        let audio = packet.len() > 1 && packet[1] & 0x7f == self.out_pt;
        self.sent.on_sent(packet, audio, now_ns);
    }

    /// Output clock ticks in `samples` at the encoder's rate.
    fn out_ticks(&self, samples: usize) -> u32 {
        (samples as u64 * self.out_clock_hz as u64 / self.enc_rate_hz as u64) as u32
    }

    /// Input packet `h` became nothing to send (DTX): it is placed like any other, so its
    /// timestamp carries on and it is no loss to [`Transcoder::missing`], but the sequence
    /// number it would have had goes to the next packet sent.
    fn untransmitted(&mut self, h: &Header) {
        let (seq, _, _) = self.place(h);
        if let Some(l) = self.last.as_mut() {
            l.out_seq = seq.wrapping_sub(1);
        }
        self.next_seq = seq;
        self.talkspurt = true;
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
        if self.repack.is_some() {
            return self.repacketise(&h, payload, pcm, out);
        }
        let (head, body) = out.split_at_mut(HEADER_LEN);
        let audio = h.pt == self.in_pt;
        let (len, lead, out_pt) = if audio {
            match self.transcode_audio(payload, pcm, body) {
                Ok((len, lead)) => (len, lead, self.out_pt),
                Err(Skip::Untransmitted) => {
                    self.untransmitted(&h);
                    return Err(Skip::Untransmitted);
                }
                Err(e) => return Err(e),
            }
        } else if h.pt == self.in_event_pt && self.out_event_pt != NO_PT {
            (self.map_event(payload, body)?, 0, self.out_event_pt)
        } else {
            return Err(Skip::PayloadType);
        };
        let (seq, ts, new_stream) = self.place(&h);
        let talkspurt = audio && std::mem::take(&mut self.talkspurt);
        let ts = ts.wrapping_add(self.out_ticks(lead));
        let marker = h.marker || new_stream || talkspurt;
        write_header(head, marker, out_pt, seq, ts, self.ssrc);
        Ok(HEADER_LEN + len)
    }

    /// [`Transcoder::process`] for a receiver with its own packet duration: the audio joins
    /// what is held, events are queued at once; the first finished packet goes into `out`
    /// (`Skip::Held` when none is), the rest wait for [`Transcoder::pop`].
    fn repacketise(
        &mut self,
        h: &Header,
        payload: &[u8],
        pcm: &mut [i16],
        out: &mut [u8],
    ) -> Result<usize, Skip> {
        let Some(r) = self.repack.as_deref_mut() else {
            return Err(Skip::Codec);
        };
        if h.pt == self.in_pt {
            let n = decode(&mut self.dec, payload, &mut pcm[..MAX_PCM_SAMPLES])?;
            self.last_samples = n;
            let audio = resampled(self.resampler.as_deref_mut(), n, pcm)?;
            let enc = &mut self.enc;
            let mut encode = |p: &[i16], o: &mut [u8]| encode(enc, p, o);
            r.push_audio(h.ssrc, h.seq, h.ts, h.marker, audio, &mut encode)?;
        } else if h.pt == self.in_event_pt && self.out_event_pt != NO_PT {
            let clocks = (self.in_clock_hz, self.out_clock_hz);
            r.push_event(h.ssrc, h.ts, h.marker, self.out_event_pt, |buf| {
                map_event(payload, buf, clocks)
            })?;
        } else {
            return Err(Skip::PayloadType);
        }
        self.pop(out)
    }

    /// Packets finished by repacketising and not yet taken with [`Transcoder::pop`].
    pub fn queued(&self) -> usize {
        self.repack.as_deref().map_or(0, Repacketiser::queued)
    }

    /// The next finished packet (repacketising) into `out`; `Skip::Held` when none is.
    pub fn pop(&mut self, out: &mut [u8]) -> Result<usize, Skip> {
        let ssrc = self.ssrc;
        self.repack
            .as_deref_mut()
            .and_then(|r| r.pop(ssrc, out))
            .ok_or(Skip::Held)
    }

    fn transcode_audio(
        &mut self,
        payload: &[u8],
        pcm: &mut [i16],
        out: &mut [u8],
    ) -> Result<(usize, usize), Skip> {
        let n = decode(&mut self.dec, payload, &mut pcm[..MAX_PCM_SAMPLES])?;
        self.last_samples = n;
        self.encode_decoded(n, pcm, out)
    }

    /// Resamples (when the rates differ) and encodes the `n` samples decoded into the first
    /// half of `pcm`: the payload's length and the samples left untransmitted before it.
    fn encode_decoded(
        &mut self,
        n: usize,
        pcm: &mut [i16],
        out: &mut [u8],
    ) -> Result<(usize, usize), Skip> {
        let pcm = resampled(self.resampler.as_deref_mut(), n, pcm)?;
        encode(&mut self.enc, pcm, out)
    }

    /// How many packets were lost just before `packet` that [`Transcoder::conceal`] can stand
    /// in for: only behind a sender whose decoder conceals (Opus; G.729, which after a SID
    /// frame fills in comfort noise instead), in the same stream, for gaps of at most
    /// [`MAX_CONCEAL`] audio packets; else 0.
    pub fn missing(&self, packet: &[u8]) -> u16 {
        let Some((due_ssrc, due_seq)) = self.due() else {
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
        let gap = seq.wrapping_sub(due_seq);
        if ssrc != due_ssrc || gap > MAX_CONCEAL {
            return 0;
        }
        gap
    }

    /// Where the sender's next packet is due (its SSRC and sequence number): after the last
    /// one placed.
    fn due(&self) -> Option<(u32, u16)> {
        match self.repack.as_deref() {
            Some(r) => r.next_input().map(|(ssrc, seq, _)| (ssrc, seq)),
            None => self.last.map(|l| (l.in_ssrc, l.in_seq.wrapping_add(1))),
        }
    }

    /// The payload of `next` when it can recover the packet due now from its in-band FEC:
    /// behind an Opus sender, when `next` is the packet right after the due one (the last
    /// of a gap; earlier ones are concealed). libopus falls back to concealment when `next`
    /// carries no FEC copy.
    fn fec_source<'a>(&self, next: &'a [u8]) -> Option<&'a [u8]> {
        if !matches!(self.dec, Dec::Opus(_)) || next.len() < HEADER_LEN {
            return None;
        }
        let (due_ssrc, due_seq) = self.due()?;
        let ssrc = u32::from_be_bytes([next[8], next[9], next[10], next[11]]);
        let seq = u16::from_be_bytes([next[2], next[3]]);
        let follows = ssrc == due_ssrc && seq == due_seq.wrapping_add(1);
        if !follows || next[1] & 0x7f != self.in_pt {
            return None;
        }
        crate::rtp::rtp_payload(next).filter(|p| !p.is_empty())
    }

    /// Writes one packet standing in for a lost one (as long as the last one decoded) into
    /// `out`, following our last packet, as if the next input packet had arrived; its length.
    /// `next` is the packet that revealed the gap: when the lost packet is the one right
    /// before it and the sender is Opus, its in-band FEC recovers the audio, else the
    /// decoder conceals. Repacketising, the audio joins what is held instead, as that packet
    /// would have (`Skip::Held` when it finishes no packet). `Skip::Untransmitted` when the
    /// encoder's DTX sends nothing for it.
    pub fn conceal(&mut self, pcm: &mut [i16], next: &[u8], out: &mut [u8]) -> Result<usize, Skip> {
        let n = self.last_samples;
        if out.len() < HEADER_LEN || n == 0 || n > MAX_PCM_SAMPLES {
            return Err(Skip::Codec);
        }
        let fec = self.fec_source(next);
        if let Some(r) = self.repack.as_deref_mut() {
            let (ssrc, seq, ts) = r.next_input().ok_or(Skip::Codec)?;
            stand_in(&mut self.dec, fec, &mut pcm[..n])?;
            let audio = resampled(self.resampler.as_deref_mut(), n, pcm)?;
            let enc = &mut self.enc;
            let mut encode = |p: &[i16], o: &mut [u8]| encode(enc, p, o);
            r.push_audio(ssrc, seq, ts, false, audio, &mut encode)?;
            return self.pop(out);
        }
        let Some(l) = self.last else {
            return Err(Skip::Codec);
        };
        stand_in(&mut self.dec, fec, &mut pcm[..n])?;
        let (head, body) = out.split_at_mut(HEADER_LEN);
        let sent = match self.encode_decoded(n, pcm, body) {
            Ok(sent) => Some(sent),
            Err(Skip::Untransmitted) => None,
            Err(e) => return Err(e),
        };
        let in_ticks = (n as u64 * self.in_clock_hz as u64 / self.dec_rate_hz as u64) as u32;
        let out_ticks = self.rescale(in_ticks as i64) as u32;
        // Untransmitted, the packet keeps the sequence number of the last one sent.
        let seq = l.out_seq.wrapping_add(sent.is_some() as u16);
        let ts = l.out_ts.wrapping_add(out_ticks);
        self.last = Some(Last {
            in_seq: l.in_seq.wrapping_add(1),
            in_ts: l.in_ts.wrapping_add(in_ticks),
            out_seq: seq,
            out_ts: ts,
            ..l
        });
        self.next_seq = seq.wrapping_add(1);
        self.next_ts = ts.wrapping_add(out_ticks);
        let Some((len, lead)) = sent else {
            self.talkspurt = true;
            return Err(Skip::Untransmitted);
        };
        let marker = std::mem::take(&mut self.talkspurt);
        let ts = ts.wrapping_add(self.out_ticks(lead));
        write_header(head, marker, self.out_pt, seq, ts, self.ssrc);
        Ok(HEADER_LEN + len)
    }

    /// Copies a telephone-event payload, its duration rescaled to the output clock.
    fn map_event(&self, payload: &[u8], out: &mut [u8]) -> Result<usize, Skip> {
        map_event(payload, out, (self.in_clock_hz, self.out_clock_hz))
    }
}

/// Copies a telephone-event payload, its duration rescaled from the input clock to the output
/// clock (`clocks`: input, output).
fn map_event(payload: &[u8], out: &mut [u8], clocks: (u32, u32)) -> Result<usize, Skip> {
    if payload.len() < 4 {
        return Err(Skip::Malformed);
    }
    let out = out.get_mut(..payload.len()).ok_or(Skip::TooLarge)?;
    out.copy_from_slice(payload);
    let duration = u16::from_be_bytes([payload[2], payload[3]]) as i64;
    let scaled = (duration * clocks.1 as i64 / clocks.0 as i64).min(u16::MAX as i64) as u16;
    out[2..4].copy_from_slice(&scaled.to_be_bytes());
    Ok(payload.len())
}

/// Decodes one payload into `decoded`; the samples written.
fn decode(dec: &mut Dec, payload: &[u8], decoded: &mut [i16]) -> Result<usize, Skip> {
    Ok(match dec {
        Dec::G711(law) => {
            let n = payload.len().min(decoded.len());
            law.decode(&payload[..n], &mut decoded[..n])
        }
        Dec::G722(d) => {
            let n = payload.len().min(decoded.len() / d.samples_for(1));
            d.decode(&payload[..n], decoded)?
        }
        Dec::G729(d) => d.decode(payload, decoded)?,
        Dec::Opus(d) => d.decode(payload, decoded)?,
    })
}

/// Fills `out` with the decoder's stand-in for audio that did not arrive: recovered from the
/// next packet's in-band FEC when `fec` is that payload (Opus), else concealed.
fn stand_in(dec: &mut Dec, fec: Option<&[u8]>, out: &mut [i16]) -> Result<usize, Skip> {
    match dec {
        Dec::Opus(d) => Ok(match fec {
            Some(next) => d.recover(next, out)?,
            None => d.conceal(out)?,
        }),
        Dec::G729(d) => Ok(d.conceal(out)?),
        Dec::G711(_) | Dec::G722(_) => Err(Skip::Codec),
    }
}

/// The `n` samples decoded into the first half of `pcm`, resampled into its second half when
/// there is a resampler (10 ms at a time: any whole number of 10 ms passes).
fn resampled<'a>(
    resampler: Option<&mut Resampler>,
    n: usize,
    pcm: &'a mut [i16],
) -> Result<&'a [i16], Skip> {
    let (decoded, resampled) = pcm.split_at_mut(MAX_PCM_SAMPLES);
    let Some(r) = resampler else {
        return Ok(&decoded[..n]);
    };
    if n == 0 || !n.is_multiple_of(r.input_frame()) {
        return Err(Skip::Codec);
    }
    let mut m = 0;
    for chunk in decoded[..n].chunks_exact(r.input_frame()) {
        let room = resampled
            .get_mut(m..MAX_PCM_SAMPLES)
            .ok_or(Skip::TooLarge)?;
        m += r.process(chunk, room).map_err(|_| Skip::Codec)?;
    }
    Ok(&resampled[..m])
}

/// Encodes `pcm` as one payload of its own duration into `out`: its length and the samples
/// at the start left untransmitted (G.729 with VAD). `Skip::Untransmitted` when DTX sends
/// nothing at all.
fn encode(enc: &mut Enc, pcm: &[i16], out: &mut [u8]) -> Result<(usize, usize), Skip> {
    let n = pcm.len();
    let (len, lead) = match enc {
        Enc::G711(law) => {
            if out.len() < n {
                return Err(Skip::TooLarge);
            }
            (law.encode(pcm, &mut out[..n]), 0)
        }
        Enc::G722(e) => (e.encode_any(pcm, out)?, 0),
        // Whole 10 ms frames, as many as the sender packed.
        Enc::G729(e) => {
            let p = e.encode_any(pcm, out)?;
            (p.len, p.skipped_frames * G729_FRAME_SAMPLES)
        }
        // Any duration Opus can frame (2.5 to 60 ms): the sender's packetisation is kept.
        Enc::Opus(e) => (e.encode_any(pcm, out)?, 0),
    };
    if len == 0 {
        return Err(Skip::Untransmitted);
    }
    Ok((len, lead))
}

/// An Opus encoder at `rate_hz` with what the receiving peer asked for.
fn opus_encoder(rate_hz: u32, options: CodecOptions) -> Result<OpusEncoder, CodecError> {
    let mut e = OpusEncoder::new(rate_hz, 20)?;
    if options.fec {
        e.enable_fec(OPUS_FEC_EXPECTED_LOSS_PCT)?;
    }
    if options.dtx {
        e.enable_dtx()?;
    }
    Ok(e)
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

    /// One packet standing in for a lost one from `key`'s leg, before `next`, into `out`
    /// (see [`Transcoder::conceal`]).
    pub fn conceal(&mut self, key: u32, next: &[u8], out: &mut [u8]) -> Result<usize, Skip> {
        let t = self
            .slots
            .get_mut(key as usize)
            .and_then(|t| t.as_deref_mut())
            .ok_or(Skip::Codec)?;
        t.conceal(&mut self.pcm, next, out)
    }

    /// Packets repacketising finished for `key`'s leg and not yet taken.
    pub fn queued(&self, key: u32) -> usize {
        self.slots
            .get(key as usize)
            .and_then(|t| t.as_deref())
            .map_or(0, Transcoder::queued)
    }

    /// The next finished packet (repacketising) from `key`'s leg into `out`.
    pub fn pop(&mut self, key: u32, out: &mut [u8]) -> Result<usize, Skip> {
        self.slots
            .get_mut(key as usize)
            .and_then(|t| t.as_deref_mut())
            .ok_or(Skip::Held)?
            .pop(out)
    }

    /// The transcoder of packets from `key`'s leg, if there is one.
    pub fn get(&self, key: u32) -> Option<&Transcoder> {
        self.slots.get(key as usize).and_then(|t| t.as_deref())
    }

    /// Notes a packet from `key`'s transcoder as queued at `now_ns` (see
    /// [`Transcoder::on_sent`]).
    pub fn on_sent(&mut self, key: u32, packet: &[u8], now_ns: u64) {
        if let Some(t) = self
            .slots
            .get_mut(key as usize)
            .and_then(|t| t.as_deref_mut())
        {
            t.on_sent(packet, now_ns);
        }
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
        ptime_ms: 20,
        options: CodecOptions::NONE,
    };
    const PCMU: LegCodec = LegCodec {
        payload_type: 0,
        codec: Codec::Pcmu,
        event_payload_type: None,
        ptime_ms: 20,
        options: CodecOptions::NONE,
    };
    const OPUS: LegCodec = LegCodec {
        payload_type: 111,
        codec: Codec::Opus,
        event_payload_type: Some(110),
        ptime_ms: 20,
        options: CodecOptions::NONE,
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
            ptime_ms: 20,
            options: CodecOptions::NONE,
        };
        // PCMA → G.722 (8 → 16 kHz through the resampler) → PCMU (the lower band alone).
        let mut up = Transcoder::new(PCMA, G722, 1).unwrap();
        let mut down = Transcoder::new(G722, PCMU, 2).unwrap();
        assert!(up.resampler.is_some() && down.resampler.is_none());
        assert_eq!(down.dec_rate_hz, 8000);
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
        // The resampler takes whole 10 ms: 10 and 30 ms pass, 5 ms does not.
        let mut pcm = vec![0i16; 2 * MAX_PCM_SAMPLES];
        let mut out = [0u8; 1500];
        for (ms, want) in [(10, Ok(12 + 80)), (30, Ok(12 + 240)), (5, Err(Skip::Codec))] {
            let p = packet(8, false, 9, 0, 5, &vec![0xd5; 8 * ms]);
            assert_eq!(up.process(&p, &mut pcm, &mut out), want, "{ms} ms");
        }
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
                let n = back.conceal(&mut pcm, p, &mut out).unwrap();
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
        ptime_ms: 20,
        options: CodecOptions::NONE,
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
        let n = back.conceal(&mut pcm, &after_gap, &mut out).unwrap();
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

    fn with_ptime(leg: LegCodec, ptime_ms: u8) -> LegCodec {
        LegCodec { ptime_ms, ..leg }
    }

    /// Every packet in, and all it finished (process, then pop until nothing is queued).
    fn run_repack(t: &mut Transcoder, packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut pcm = vec![0i16; 2 * MAX_PCM_SAMPLES];
        let mut got = Vec::new();
        for p in packets {
            let mut out = [0u8; 1500];
            match t.process(p, &mut pcm, &mut out) {
                Ok(n) => got.push(out[..n].to_vec()),
                Err(Skip::Held) => {}
                Err(e) => panic!("{e:?}"),
            }
            while t.queued() > 0 {
                let n = t.pop(&mut out).unwrap();
                got.push(out[..n].to_vec());
            }
        }
        got
    }

    #[test]
    fn pcma_at_20_ms_is_repacketised_into_g729_at_30_ms_and_back() {
        let mut there = Transcoder::new(PCMA, with_ptime(G729, 30), 1).unwrap();
        let g729 = run_repack(&mut there, &tone_packets(Law::Alaw, 8));
        // 1 s in: 33 packets of 30 ms out (10 ms still held), each three frames.
        assert_eq!(g729.len(), 33);
        let f0 = fields(&g729[0]);
        assert!(f0.0);
        for (i, p) in g729.iter().enumerate() {
            let f = fields(p);
            assert_eq!((f.1, p.len(), f.0), (18, 12 + 30, i == 0));
            assert_eq!(f.2, f0.2.wrapping_add(i as u16));
            assert_eq!(f.3, f0.3.wrapping_add(240 * i as u32));
        }
        // And back into PCMA at 60 ms (from G.729 at 30): two in, one out.
        let mut back = Transcoder::new(with_ptime(G729, 30), with_ptime(PCMA, 60), 2).unwrap();
        let pcma = run_repack(&mut back, &g729);
        assert_eq!(pcma.len(), 16);
        assert!(pcma.iter().all(|p| p.len() == 12 + 480));
        for w in pcma.windows(2) {
            assert_eq!(fields(&w[1]).3.wrapping_sub(fields(&w[0]).3), 480);
        }
        let pcm = decode_law(Law::Alaw, &pcma);
        let snr = sine_snr_db(&pcm, 1020.0, 8000.0, 800);
        assert!(snr > 10.0, "PCMA 20 → G.729 30 → PCMA 60: SNR {snr:.1} dB");
        // 60 ms in, 20 ms out: three packets each.
        let mut split = Transcoder::new(with_ptime(PCMA, 60), with_ptime(PCMU, 20), 3).unwrap();
        let pcmu = run_repack(&mut split, &pcma);
        assert_eq!(pcmu.len(), 48);
        assert!(pcmu.iter().all(|p| p.len() == 12 + 160));
    }

    #[test]
    fn repacketising_carries_gaps_over_and_drops_late_packets() {
        let mut t = Transcoder::new(PCMU, with_ptime(PCMA, 30), 4).unwrap();
        let mut pcm = vec![0i16; 2 * MAX_PCM_SAMPLES];
        let mut out = [0u8; 1500];
        let p = |seq: u16| packet(0, false, seq, 800 + 160 * seq as u32, 9, &[0xff; 160]);
        // 20 ms in: the first 30 ms packet comes with the second input packet.
        assert_eq!(t.process(&p(0), &mut pcm, &mut out), Err(Skip::Held));
        let n = t.process(&p(1), &mut pcm, &mut out).unwrap();
        let first = fields(&out[..n]);
        assert!(first.0);
        // 10 ms held (30..40 ms). Packets 2..=5 lost (40..120 ms): the held frame is padded
        // and sent, the two frames wholly inside the gap skipped (their sequence numbers too),
        // and packet 6 starts the frame at 120 ms.
        let n = t.process(&p(6), &mut pcm, &mut out).unwrap();
        let padded = fields(&out[..n]);
        assert_eq!(
            (padded.2, padded.3),
            (first.2.wrapping_add(1), first.3.wrapping_add(240))
        );
        assert_eq!(t.queued(), 0);
        let n = t.process(&p(7), &mut pcm, &mut out).unwrap();
        let after = fields(&out[..n]);
        assert_eq!(
            (after.2, after.3),
            (first.2.wrapping_add(4), first.3.wrapping_add(960))
        );
        // A packet from before what is held is too late.
        assert_eq!(t.process(&p(5), &mut pcm, &mut out), Err(Skip::Late));
        assert_eq!(t.process(&p(7), &mut pcm, &mut out), Err(Skip::Late));
        // An event goes out at once, in our sequence, at its mapped timestamp.
        let event = packet(101, true, 8, 800 + 160 * 8, 9, &[5, 10, 0, 160]);
        let mut t2 = Transcoder::new(with_ptime(PCMA, 20), with_ptime(OPUS, 40), 5).unwrap();
        let audio = tone_packets(Law::Alaw, 8);
        let out_audio = run_repack(&mut t2, &audio[..3]);
        assert_eq!(out_audio.len(), 1);
        let a0 = fields(&out_audio[0]);
        let (_, _, seq2, ts2, ssrc2) = fields(&audio[2]);
        let event = packet(
            101,
            true,
            seq2.wrapping_add(1),
            ts2 + 160,
            ssrc2,
            &event[12..],
        );
        let n = t2.process(&event, &mut pcm, &mut out).unwrap();
        let e = fields(&out[..n]);
        assert_eq!((e.0, e.1, e.2), (true, 110, a0.2.wrapping_add(1)));
        assert_eq!(
            e.3,
            a0.3.wrapping_add(3 * 960),
            "60 ms after the first audio"
        );
        assert_eq!(&out[12..n], &[5, 10, 0x03, 0xc0], "duration at 48 kHz");
        // A new sender SSRC: what is held goes out padded, our stream continues marked.
        let n = t.process(
            &packet(0, false, 1, 0, 10, &[0xff; 480]),
            &mut pcm,
            &mut out,
        );
        let flushed = fields(&out[..n.unwrap()]);
        assert_eq!(flushed.2, after.2.wrapping_add(1));
        // Its 60 ms: two frames behind the flushed one.
        assert_eq!(t.queued(), 2);
        let n = t.pop(&mut out).unwrap();
        let new = fields(&out[..n]);
        assert!(new.0 && !flushed.0);
        assert_eq!(
            (new.2, new.3),
            (flushed.2.wrapping_add(1), flushed.3.wrapping_add(240))
        );
    }

    #[test]
    fn ptimes_the_output_codec_cannot_frame_are_refused() {
        assert!(Transcoder::new(PCMA, with_ptime(OPUS, 30), 1).is_err());
        assert!(Transcoder::new(PCMA, with_ptime(PCMU, 70), 1).is_err());
        assert!(Transcoder::new(PCMA, with_ptime(G729, 25), 1).is_err());
        assert!(Transcoder::new(PCMA, with_ptime(OPUS, 60), 1).is_ok());
        // Unknown on either side: the sender's packetisation is kept.
        assert!(Transcoder::new(with_ptime(PCMA, 0), with_ptime(OPUS, 30), 1).is_ok());
    }

    #[test]
    fn concealment_behind_opus_feeds_the_repacketiser() {
        let opus = run(
            &mut Transcoder::new(PCMA, OPUS, 1).unwrap(),
            &tone_packets(Law::Alaw, 8),
        );
        let mut back = Transcoder::new(OPUS, with_ptime(PCMA, 30), 2).unwrap();
        let mut pcm = vec![0i16; 2 * MAX_PCM_SAMPLES];
        let mut got = Vec::new();
        for (i, p) in opus.iter().enumerate() {
            if i == 20 {
                continue;
            }
            let mut out = [0u8; 1500];
            for _ in 0..back.missing(p) {
                match back.conceal(&mut pcm, p, &mut out) {
                    Ok(n) => got.push(out[..n].to_vec()),
                    Err(e) => assert_eq!(e, Skip::Held),
                }
            }
            match back.process(p, &mut pcm, &mut out) {
                Ok(n) => got.push(out[..n].to_vec()),
                Err(e) => assert_eq!(e, Skip::Held),
            }
            while back.queued() > 0 {
                let n = back.pop(&mut out).unwrap();
                got.push(out[..n].to_vec());
            }
        }
        // The lost packet was concealed: 1 s of audio, 33 packets of 30 ms, no gap.
        assert_eq!(got.len(), 33);
        for w in got.windows(2) {
            assert_eq!(fields(&w[1]).2.wrapping_sub(fields(&w[0]).2), 1);
            assert_eq!(fields(&w[1]).3.wrapping_sub(fields(&w[0]).3), 240);
        }
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
                ptime_ms: 20,
                options: CodecOptions::NONE,
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
                ptime_ms: 20,
                options: CodecOptions::NONE,
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

    /// PCMA packets: `tone` 20 ms packets of a tone, `silence` of silence, `tone` again.
    fn tone_silence_tone(tone: usize, silence: usize) -> Vec<Vec<u8>> {
        let talk = tone_packets(Law::Alaw, 8);
        let (_, _, seq0, ts0, ssrc) = fields(&talk[0]);
        (0..2 * tone + silence)
            .map(|i| {
                let payload = if i < tone || i >= tone + silence {
                    talk[i % talk.len()][12..].to_vec()
                } else {
                    vec![0xd5; 160]
                };
                let (seq, ts) = (
                    seq0.wrapping_add(i as u16),
                    ts0.wrapping_add(160 * i as u32),
                );
                packet(8, false, seq, ts, ssrc, &payload)
            })
            .collect()
    }

    #[test]
    fn dtx_keeps_sequence_numbers_contiguous_and_marks_the_next_talkspurt() {
        let dtx = CodecOptions {
            fec: false,
            dtx: true,
        };
        let to_opus = LegCodec {
            options: dtx,
            ..OPUS
        };
        let to_g729 = LegCodec {
            options: dtx,
            ..G729
        };
        let input = tone_silence_tone(20, 100);
        for to in [
            to_opus,
            with_ptime(to_opus, 40),
            to_g729,
            with_ptime(to_g729, 30),
        ] {
            let mut t = Transcoder::new(PCMA, to, 3).unwrap();
            let mut pcm = vec![0i16; 2 * MAX_PCM_SAMPLES];
            let mut got = Vec::new();
            let mut untransmitted = 0;
            for p in &input {
                let mut out = [0u8; 1500];
                match t.process(p, &mut pcm, &mut out) {
                    Ok(n) => got.push(out[..n].to_vec()),
                    Err(Skip::Untransmitted) => untransmitted += 1,
                    Err(e) => assert_eq!(e, Skip::Held),
                }
                while t.queued() > 0 {
                    let n = t.pop(&mut out).unwrap();
                    got.push(out[..n].to_vec());
                }
            }
            let ptime = if to.ptime_ms == 20 {
                20
            } else {
                to.ptime_ms as u32
            };
            let clock = to.codec.rtp_clock_hz();
            // 2.8 s in, 2 s of it silence: far fewer packets out than the audio's length.
            let frames = 2800 / ptime as usize;
            assert!(got.len() < frames / 2, "{to:?}: {} of {frames}", got.len());
            if to.ptime_ms == 20 {
                assert!(untransmitted > 50, "{to:?}: {untransmitted}");
            }
            let f: Vec<_> = got.iter().map(|p| fields(p)).collect();
            let mut jumped = false;
            for k in 1..f.len() {
                assert_eq!(f[k].2.wrapping_sub(f[k - 1].2), 1, "{to:?}: packet {k}");
                let dts = f[k].3.wrapping_sub(f[k - 1].3);
                assert_eq!(dts % (clock / 100), 0, "{to:?}: whole 10 ms");
                if dts > 10 * clock * ptime / 1000 {
                    // The first packet after a long untransmitted stretch starts a talkspurt.
                    assert!(f[k].0, "{to:?}: packet {k} after a gap of {dts} unmarked");
                    jumped = true;
                }
            }
            assert!(jumped, "{to:?}: no timestamp jump over the silence");
        }
    }

    #[test]
    fn a_single_loss_behind_an_opus_sender_with_fec_is_recovered_from_the_next_packet() {
        let with_fec = LegCodec {
            options: CodecOptions {
                fec: true,
                dtx: false,
            },
            ..OPUS
        };
        let opus = run(
            &mut Transcoder::new(PCMA, with_fec, 1).unwrap(),
            &tone_silence_tone(25, 0),
        );
        // The same loss, once concealed (the stand-in is given no following packet) and once
        // recovered from packet 21's FEC: the two stand-ins differ.
        let mut stand_ins = Vec::new();
        for next in [&[][..], &opus[21][..]] {
            let mut back = Transcoder::new(OPUS, PCMA, 2).unwrap();
            let mut pcm = vec![0i16; 2 * MAX_PCM_SAMPLES];
            let mut out = [0u8; 1500];
            for p in &opus[..20] {
                back.process(p, &mut pcm, &mut out).unwrap();
            }
            assert_eq!(back.missing(&opus[21]), 1);
            assert_eq!(back.fec_source(next).is_some(), !next.is_empty());
            let n = back.conceal(&mut pcm, next, &mut out).unwrap();
            stand_ins.push(out[12..n].to_vec());
        }
        assert_ne!(stand_ins[0], stand_ins[1]);
        // Two lost: the first is concealed, only the second comes from the FEC.
        let mut back = Transcoder::new(OPUS, PCMA, 2).unwrap();
        let mut pcm = vec![0i16; 2 * MAX_PCM_SAMPLES];
        let mut out = [0u8; 1500];
        for p in &opus[..20] {
            back.process(p, &mut pcm, &mut out).unwrap();
        }
        assert_eq!(back.missing(&opus[22]), 2);
        assert!(back.fec_source(&opus[22]).is_none());
        back.conceal(&mut pcm, &opus[22], &mut out).unwrap();
        assert!(back.fec_source(&opus[22]).is_some());
    }

    #[test]
    fn the_same_codec_is_not_a_transcode() {
        assert!(Transcoder::new(PCMA, PCMA, 0).is_err());
    }
}
