//! Frame-based codec interface and its implementations: G.711 (own tables), G.722 (our own,
//! `g722.rs`), G.729 (`g729-sys`, pure Rust) and Opus (`opus`, libopus, behind the feature
//! `opus`).
//!
//! Frames are 16-bit PCM at the codec's own sample rate; the caller owns both buffers.

use crate::g711::Law;
use thiserror::Error;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CodecError {
    /// The PCM frame does not have the encoder's frame length.
    #[error("frame of {got} samples, encoder takes {want}")]
    FrameLength {
        /// Samples given.
        got: usize,
        /// Samples per frame.
        want: usize,
    },
    /// The output buffer is too small for the result.
    #[error("output needs {need} elements, buffer has {have}")]
    OutputTooSmall {
        /// Elements needed.
        need: usize,
        /// Buffer length.
        have: usize,
    },
    /// A frame duration that is not a whole number of samples (or codec units), or zero.
    #[error("unsupported frame duration {0} ms")]
    FrameDuration(u32),
    /// The codec library refused the payload, the frame or its settings.
    #[error("codec library refused the frame")]
    Rejected,
}

/// Turns PCM frames into payloads.
pub trait Encoder {
    /// PCM sample rate, Hz.
    fn sample_rate_hz(&self) -> u32;
    /// PCM samples per frame.
    fn frame_samples(&self) -> usize;
    /// Largest payload one frame produces, bytes.
    fn max_payload_bytes(&self) -> usize;
    /// Encodes one frame of exactly [`Encoder::frame_samples`] samples; returns payload bytes.
    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError>;
}

/// Turns payloads into PCM.
pub trait Decoder {
    /// PCM sample rate, Hz.
    fn sample_rate_hz(&self) -> u32;
    /// PCM samples a payload of `bytes` decodes to.
    fn samples_for(&self, bytes: usize) -> usize;
    /// Decodes one payload; returns PCM samples written.
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError>;
}

fn samples_per_frame(rate_hz: u32, frame_ms: u32) -> Result<usize, CodecError> {
    let n = rate_hz as u64 * frame_ms as u64;
    if frame_ms == 0 || !n.is_multiple_of(1000) {
        return Err(CodecError::FrameDuration(frame_ms));
    }
    Ok((n / 1000) as usize)
}

/// G.711 encoder (PCMU or PCMA): one byte per sample at 8 kHz.
#[derive(Debug, Clone)]
pub struct G711Encoder {
    law: Law,
    frame: usize,
}

impl G711Encoder {
    /// An encoder for frames of `frame_ms` (usually 20).
    pub fn new(law: Law, frame_ms: u32) -> Result<Self, CodecError> {
        Ok(G711Encoder {
            law,
            frame: samples_per_frame(8000, frame_ms)?,
        })
    }
}

impl Encoder for G711Encoder {
    fn sample_rate_hz(&self) -> u32 {
        8000
    }
    fn frame_samples(&self) -> usize {
        self.frame
    }
    fn max_payload_bytes(&self) -> usize {
        self.frame
    }
    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        check_frame(pcm.len(), self.frame)?;
        check_room(self.frame, out.len())?;
        Ok(self.law.encode(pcm, out))
    }
}

/// G.711 decoder.
#[derive(Debug, Clone)]
pub struct G711Decoder {
    law: Law,
}

impl G711Decoder {
    /// A decoder for `law`.
    pub fn new(law: Law) -> Self {
        G711Decoder { law }
    }
}

impl Decoder for G711Decoder {
    fn sample_rate_hz(&self) -> u32 {
        8000
    }
    fn samples_for(&self, bytes: usize) -> usize {
        bytes
    }
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        check_room(payload.len(), out.len())?;
        Ok(self.law.decode(payload, out))
    }
}

fn check_frame(got: usize, want: usize) -> Result<(), CodecError> {
    if got != want {
        return Err(CodecError::FrameLength { got, want });
    }
    Ok(())
}

fn check_room(need: usize, have: usize) -> Result<(), CodecError> {
    if need > have {
        return Err(CodecError::OutputTooSmall { need, have });
    }
    Ok(())
}

/// G.722 encoder at 64 kbit/s (mode 1): 16 kHz PCM, two samples per byte ([`crate::g722`]).
#[derive(Debug, Clone)]
pub struct G722Encoder {
    inner: crate::g722::Encoder,
    frame: usize,
}

impl G722Encoder {
    /// An encoder for frames of `frame_ms` (usually 20: 320 samples → 160 bytes).
    pub fn new(frame_ms: u32) -> Result<Self, CodecError> {
        Ok(G722Encoder {
            inner: crate::g722::Encoder::new(),
            frame: samples_per_frame(16000, frame_ms)?,
        })
    }

    /// Encodes any even number of samples (a transcoder follows the sender's packetisation).
    pub fn encode_any(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        check_room(pcm.len() / 2, out.len())?;
        Ok(self.inner.encode(pcm, out))
    }
}

impl Encoder for G722Encoder {
    fn sample_rate_hz(&self) -> u32 {
        16000
    }
    fn frame_samples(&self) -> usize {
        self.frame
    }
    fn max_payload_bytes(&self) -> usize {
        self.frame / 2
    }
    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        check_frame(pcm.len(), self.frame)?;
        self.encode_any(pcm, out)
    }
}

/// G.722 decoder at 64 kbit/s: 16 kHz PCM, or 8 kHz for a narrowband peer
/// ([`G722Decoder::narrowband`]).
#[derive(Debug, Clone, Default)]
pub struct G722Decoder {
    inner: crate::g722::Decoder,
}

impl G722Decoder {
    /// A decoder of 16 kHz PCM, in its reset state.
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder of 8 kHz PCM (the lower band alone): for a narrowband peer or detector, with
    /// no QMF and no resampling.
    pub fn narrowband() -> Self {
        G722Decoder {
            inner: crate::g722::Decoder::narrowband(),
        }
    }
}

impl Decoder for G722Decoder {
    fn sample_rate_hz(&self) -> u32 {
        8000 * self.inner.samples_per_byte() as u32
    }
    fn samples_for(&self, bytes: usize) -> usize {
        bytes * self.inner.samples_per_byte()
    }
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        check_room(self.samples_for(payload.len()), out.len())?;
        Ok(self.inner.decode(payload, out))
    }
}

/// PCM samples in one G.729 frame (10 ms at 8 kHz).
pub const G729_FRAME_SAMPLES: usize = g729_sys::FRAME_SAMPLES;
/// Bytes of one G.729 speech frame (80 bits).
pub const G729_FRAME_BYTES: usize = g729_sys::VOICE_FRAME_BYTES;
/// Bytes of one G.729 Annex B silence-insertion (SID) frame; RFC 3551 §4.5.6 puts it last in a
/// packet, after any speech frames.
pub const G729_SID_BYTES: usize = 2;

/// G.729 encoder (Annex A complexity, 8 kbit/s). Without VAD every frame is a 10-byte speech
/// frame, which any G.729 receiver takes whether or not it signalled `annexb=no`. With VAD
/// (Annex B, for a peer that takes it) silence becomes discontinuous transmission: a 2-byte
/// SID frame when the background noise changes, otherwise nothing at all.
pub struct G729Encoder {
    inner: g729_sys::Encoder,
    frame: usize,
    vad: bool,
}

/// One G.729 payload as [`G729Encoder::encode_any`] packed it: `len` bytes (speech frames,
/// then at most one SID frame, RFC 3551 §4.5.6) starting `skipped_frames` 10 ms frames after
/// the first sample given, since with VAD on the frames before it may have been left
/// untransmitted. `len == 0`: nothing to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct G729Payload {
    /// Frames at the start of the audio that the payload does not carry.
    pub skipped_frames: usize,
    /// Payload bytes.
    pub len: usize,
}

impl G729Encoder {
    /// An encoder for packets of `frame_ms` (a multiple of 10; usually 20: two frames),
    /// VAD off.
    pub fn new(frame_ms: u32) -> Result<Self, CodecError> {
        Self::with_vad(frame_ms, false)
    }

    /// An encoder with Annex B voice activity detection and discontinuous transmission when
    /// `vad` (only for a peer that takes Annex B: `annexb` absent or `yes`).
    pub fn with_vad(frame_ms: u32, vad: bool) -> Result<Self, CodecError> {
        if !frame_ms.is_multiple_of(10) {
            return Err(CodecError::FrameDuration(frame_ms));
        }
        Ok(G729Encoder {
            inner: g729_sys::Encoder::new(vad),
            frame: samples_per_frame(8000, frame_ms)?,
            vad,
        })
    }

    /// Whether silence is sent as SID frames or nothing (Annex B).
    pub fn vad(&self) -> bool {
        self.vad
    }

    /// Encodes any whole number of 10 ms frames as one payload (a transcoder follows the
    /// sender's packetisation). With VAD on, a payload holds what RTP can carry in one packet:
    /// untransmitted frames before the first sent one move its start (`skipped_frames`); a
    /// speech frame after a SID or after an untransmitted frame starts the payload afresh
    /// (the onset of speech matters more than the silence before it, whose frames are then
    /// lost to the receiver, which keeps its comfort noise); a SID after such a break is
    /// dropped when speech is already written.
    pub fn encode_any(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<G729Payload, CodecError> {
        if pcm.is_empty() || !pcm.len().is_multiple_of(G729_FRAME_SAMPLES) {
            return Err(CodecError::FrameLength {
                got: pcm.len(),
                want: G729_FRAME_SAMPLES,
            });
        }
        let frames = pcm.len() / G729_FRAME_SAMPLES;
        check_room(frames * G729_FRAME_BYTES, out.len())?;
        let mut payload = G729Payload {
            skipped_frames: 0,
            len: 0,
        };
        // What is written ends in a SID frame / was followed by an untransmitted frame: only a
        // fresh start can come next.
        let (mut ends_in_sid, mut broken) = (false, false);
        for (i, frame) in pcm.chunks_exact(G729_FRAME_SAMPLES).enumerate() {
            let Ok(frame) = frame.try_into() else {
                unreachable!("chunks_exact gives whole frames");
            };
            let mut bytes = [0u8; G729_FRAME_BYTES];
            let n = self.inner.encode_into(frame, &mut bytes) as usize;
            let closed = ends_in_sid || broken;
            match n {
                G729_FRAME_BYTES | G729_SID_BYTES => {
                    let speech = n == G729_FRAME_BYTES;
                    let has_speech = payload.len > 0 && payload.len != G729_SID_BYTES;
                    if closed && !speech && has_speech {
                        continue;
                    }
                    if closed || payload.len == 0 {
                        payload = G729Payload {
                            skipped_frames: i,
                            len: 0,
                        };
                        broken = false;
                    }
                    out[payload.len..payload.len + n].copy_from_slice(&bytes[..n]);
                    payload.len += n;
                    ends_in_sid = !speech;
                }
                _ => {
                    // Untransmitted (DTX): breaks what is written, or moves the start on.
                    debug_assert_eq!(n, 0, "bcg729 frames are 10, 2 or 0 bytes");
                    if payload.len == 0 {
                        payload.skipped_frames = i + 1;
                    } else {
                        broken = true;
                    }
                }
            }
        }
        Ok(payload)
    }
}

impl std::fmt::Debug for G729Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("G729Encoder")
            .field("frame", &self.frame)
            .field("vad", &self.vad)
            .finish()
    }
}

impl Encoder for G729Encoder {
    fn sample_rate_hz(&self) -> u32 {
        8000
    }
    fn frame_samples(&self) -> usize {
        self.frame
    }
    fn max_payload_bytes(&self) -> usize {
        self.frame / G729_FRAME_SAMPLES * G729_FRAME_BYTES
    }
    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        check_frame(pcm.len(), self.frame)?;
        // With VAD on, a payload that skipped leading frames loses its place in time here:
        // callers that packetise DTX use `encode_any`.
        Ok(self.encode_any(pcm, out)?.len)
    }
}

/// G.729 decoder (Annex A) that understands Annex B: a 2-byte SID frame updates the comfort
/// noise, and while the sender is silent (after a SID) missing frames are comfort noise, not
/// concealed speech.
pub struct G729Decoder {
    inner: g729_sys::Decoder,
    /// The last frame was a SID: the sender is in discontinuous transmission.
    silent: bool,
}

impl Default for G729Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for G729Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("G729Decoder")
            .field("silent", &self.silent)
            .finish()
    }
}

impl G729Decoder {
    /// A decoder in its reset state.
    pub fn new() -> Self {
        G729Decoder {
            inner: g729_sys::Decoder::new(),
            silent: false,
        }
    }

    /// Frames in a payload of `bytes`: whole speech frames, then at most one SID frame;
    /// `None` for a length no G.729 packet has.
    pub fn frames_in(bytes: usize) -> Option<usize> {
        let (speech, rest) = (bytes / G729_FRAME_BYTES, bytes % G729_FRAME_BYTES);
        match rest {
            0 if speech > 0 => Some(speech),
            G729_SID_BYTES => Some(speech + 1),
            _ => None,
        }
    }

    /// Stands in for `out.len()` samples (whole frames) that did not arrive: concealment
    /// after speech (the decoder extrapolates the last frames), comfort noise after a SID
    /// (the sender stopped sending on purpose). Returns the samples written.
    pub fn conceal(&mut self, out: &mut [i16]) -> Result<usize, CodecError> {
        if !out.len().is_multiple_of(G729_FRAME_SAMPLES) {
            return Err(CodecError::FrameLength {
                got: out.len(),
                want: G729_FRAME_SAMPLES,
            });
        }
        for frame in out.chunks_exact_mut(G729_FRAME_SAMPLES) {
            frame.copy_from_slice(&self.inner.decode(&[], !self.silent, self.silent, false));
        }
        Ok(out.len())
    }
}

impl Decoder for G729Decoder {
    fn sample_rate_hz(&self) -> u32 {
        8000
    }
    fn samples_for(&self, bytes: usize) -> usize {
        G729Decoder::frames_in(bytes).unwrap_or(0) * G729_FRAME_SAMPLES
    }
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        let frames = G729Decoder::frames_in(payload.len()).ok_or(CodecError::Rejected)?;
        let n = frames * G729_FRAME_SAMPLES;
        check_room(n, out.len())?;
        let speech = payload.chunks_exact(G729_FRAME_BYTES);
        let sid = speech.remainder();
        let mut pcm = out[..n].chunks_exact_mut(G729_FRAME_SAMPLES);
        for (bytes, frame) in speech.zip(pcm.by_ref()) {
            frame.copy_from_slice(&self.inner.decode(bytes, false, false, false));
        }
        self.silent = !sid.is_empty();
        if let Some(frame) = pcm.next() {
            frame.copy_from_slice(&self.inner.decode(sid, false, true, false));
        }
        Ok(n)
    }
}

#[cfg(feature = "opus")]
pub use opus_codec::{fec_bitrate_bps, OpusDecoder, OpusEncoder, OPUS_RTP_CLOCK_HZ};

#[cfg(feature = "opus")]
mod opus_codec {
    //! Opus (RFC 6716), mono, through libopus. The PCM side runs at 8, 16 or 48 kHz (libopus
    //! resamples internally); the RTP clock is 48 kHz whatever the PCM rate (RFC 7587).
    //! libopus allocates its state in `new` (C heap) and encodes and decodes on the stack.
    use super::*;
    use opus::{Application, Channels};

    /// RTP timestamp rate of Opus, always (RFC 7587 §4.1).
    pub const OPUS_RTP_CLOCK_HZ: u32 = 48_000;

    /// Largest payload we produce for one frame (RFC 6716 allows 1275 bytes per frame; at
    /// speech bitrates a 20 ms frame is well under 200).
    const MAX_PAYLOAD_BYTES: usize = 400;

    fn check_rate(rate_hz: u32) -> Result<(), CodecError> {
        if [8000, 16000, 48000].contains(&rate_hz) {
            Ok(())
        } else {
            Err(CodecError::Rejected)
        }
    }

    /// Opus encoder (VoIP application, variable bitrate chosen by libopus for the rate).
    /// In-band FEC and DTX are off unless turned on for a peer that asked for them.
    pub struct OpusEncoder {
        inner: opus::Encoder,
        rate_hz: u32,
        frame: usize,
        dtx: bool,
    }

    /// The bitrate an encoder with in-band FEC runs at, by PCM rate: enough for libopus to
    /// add the FEC copy (it leaves it out below a threshold of about 14 kbit/s narrowband, 18
    /// wideband, at 10% expected loss, measured after its own overheads: at 20 kbit/s
    /// narrowband it still added none in our tests, at 24 it does) with room for the primary
    /// frame.
    pub fn fec_bitrate_bps(rate_hz: u32) -> i32 {
        match rate_hz {
            8000 => 24_000,
            16000 => 28_000,
            _ => 32_000,
        }
    }

    /// Payloads of this many bytes or fewer are what libopus's DTX produces for frames it
    /// wants left untransmitted (the TOC byte alone, or with a frame-count byte).
    const DTX_MAX_BYTES: usize = 2;

    impl OpusEncoder {
        /// An encoder taking `frame_ms` frames (10, 20, 40 or 60) of PCM at `rate_hz`.
        pub fn new(rate_hz: u32, frame_ms: u32) -> Result<Self, CodecError> {
            check_rate(rate_hz)?;
            if ![10, 20, 40, 60].contains(&frame_ms) {
                return Err(CodecError::FrameDuration(frame_ms));
            }
            let inner = opus::Encoder::new(rate_hz, Channels::Mono, Application::Voip)
                .map_err(|_| CodecError::Rejected)?;
            Ok(OpusEncoder {
                inner,
                rate_hz,
                frame: samples_per_frame(rate_hz, frame_ms)?,
                dtx: false,
            })
        }

        /// In-band forward error correction (the receiver asked with `useinbandfec=1`): each
        /// packet also carries a low-bitrate copy of the previous frame, sized for
        /// `expected_loss_pct` packet loss (libopus spends more bits on it the higher that
        /// is, and adds none at 0). Only SILK frames carry it, i.e. speech at these rates.
        /// The bitrate is set to [`fec_bitrate_bps`] for the encoder's rate: libopus leaves the
        /// FEC copy out at its default narrowband bitrate.
        pub fn enable_fec(&mut self, expected_loss_pct: u8) -> Result<(), CodecError> {
            let bitrate = fec_bitrate_bps(self.rate_hz);
            self.inner
                .set_inband_fec(true)
                .and_then(|()| {
                    self.inner
                        .set_packet_loss_perc(expected_loss_pct.min(100) as i32)
                })
                .and_then(|()| self.inner.set_bitrate(opus::Bitrate::Bits(bitrate)))
                .map_err(|_| CodecError::Rejected)
        }

        /// Discontinuous transmission (the receiver asked with `usedtx=1`): in silence,
        /// libopus marks most frames as not to be sent, and [`OpusEncoder::encode_any`]
        /// returns 0 for them.
        pub fn enable_dtx(&mut self) -> Result<(), CodecError> {
            self.inner.set_dtx(true).map_err(|_| CodecError::Rejected)?;
            self.dtx = true;
            Ok(())
        }

        /// Encodes `pcm` as one packet of its own duration (2.5 to 60 ms at the encoder's
        /// rate), whatever the frame set at construction: a transcoder follows the sender's
        /// packetisation. Returns the payload's length; 0 with DTX on when the frame is not
        /// to be transmitted (RFC 7587 §3.1.3: the receiver sees the timestamp jump).
        pub fn encode_any(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
            let n = self
                .inner
                .encode(pcm, out)
                .map_err(|_| CodecError::Rejected)?;
            Ok(if self.dtx && n <= DTX_MAX_BYTES { 0 } else { n })
        }
    }

    impl std::fmt::Debug for OpusEncoder {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("OpusEncoder")
                .field("rate_hz", &self.rate_hz)
                .field("frame", &self.frame)
                .field("dtx", &self.dtx)
                .finish()
        }
    }

    impl Encoder for OpusEncoder {
        fn sample_rate_hz(&self) -> u32 {
            self.rate_hz
        }
        fn frame_samples(&self) -> usize {
            self.frame
        }
        fn max_payload_bytes(&self) -> usize {
            MAX_PAYLOAD_BYTES
        }
        fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
            check_frame(pcm.len(), self.frame)?;
            self.encode_any(pcm, out)
        }
    }

    /// Opus decoder, mono output at the rate asked for.
    pub struct OpusDecoder {
        inner: opus::Decoder,
        rate_hz: u32,
    }

    impl OpusDecoder {
        /// A decoder giving PCM at `rate_hz` (8, 16 or 48 kHz).
        pub fn new(rate_hz: u32) -> Result<Self, CodecError> {
            check_rate(rate_hz)?;
            let inner =
                opus::Decoder::new(rate_hz, Channels::Mono).map_err(|_| CodecError::Rejected)?;
            Ok(OpusDecoder { inner, rate_hz })
        }

        /// Packet-loss concealment: fills all of `out` (a multiple of 2.5 ms) with what the
        /// decoder predicts followed the last packet.
        pub fn conceal(&mut self, out: &mut [i16]) -> Result<usize, CodecError> {
            self.inner
                .decode(&[], out, false)
                .map_err(|_| CodecError::Rejected)
        }

        /// Recovers the frame lost just before `next` (the packet that arrived after it) from
        /// the in-band FEC data `next` carries, filling all of `out` (the lost duration, a
        /// multiple of 2.5 ms). Where `next` has none (a CELT frame, a sender without FEC),
        /// libopus conceals as [`OpusDecoder::conceal`] does. `next` is decoded normally
        /// afterwards.
        pub fn recover(&mut self, next: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
            if next.is_empty() {
                return Err(CodecError::Rejected);
            }
            self.inner
                .decode(next, out, true)
                .map_err(|_| CodecError::Rejected)
        }
    }

    impl std::fmt::Debug for OpusDecoder {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("OpusDecoder")
                .field("rate_hz", &self.rate_hz)
                .finish()
        }
    }

    impl Decoder for OpusDecoder {
        fn sample_rate_hz(&self) -> u32 {
            self.rate_hz
        }
        /// At most: a packet's duration is in its TOC byte, not its length (up to 120 ms).
        fn samples_for(&self, _bytes: usize) -> usize {
            self.rate_hz as usize * 120 / 1000
        }
        fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
            if payload.is_empty() {
                // An empty payload would ask libopus for concealment; that is `conceal`.
                return Err(CodecError::Rejected);
            }
            self.inner
                .decode(payload, out, false)
                .map_err(|_| CodecError::Rejected)
        }
    }
}

/// Signal-to-noise ratio (dB) of `x` against the best-fitting sine at `freq_hz`, over the
/// samples from `skip` on: the residual after least-squares removal of that sine is the noise.
/// For tests and measurements.
pub fn sine_snr_db(x: &[i16], freq_hz: f64, rate_hz: f64, skip: usize) -> f64 {
    let x = &x[skip.min(x.len())..];
    let w = std::f64::consts::TAU * freq_hz / rate_hz;
    let (mut ss, mut cc, mut sc, mut xs, mut xc) = (0f64, 0f64, 0f64, 0f64, 0f64);
    for (n, &v) in x.iter().enumerate() {
        let (s, c) = ((w * n as f64).sin(), (w * n as f64).cos());
        ss += s * s;
        cc += c * c;
        sc += s * c;
        xs += v as f64 * s;
        xc += v as f64 * c;
    }
    // Solve [ss sc; sc cc] [a b]ᵀ = [xs xc]ᵀ.
    let det = ss * cc - sc * sc;
    let a = (xs * cc - xc * sc) / det;
    let b = (xc * ss - xs * sc) / det;
    let (mut sig, mut noise) = (0f64, 0f64);
    for (n, &v) in x.iter().enumerate() {
        let fit = a * (w * n as f64).sin() + b * (w * n as f64).cos();
        sig += fit * fit;
        noise += (v as f64 - fit).powi(2);
    }
    10.0 * (sig / noise.max(1e-9)).log10()
}

/// `n` samples at `rate` of something voice activity detectors call speech, for tests and
/// measurements: a harmonic complex (10 harmonics, falling 6 dB per octave) whose pitch glides
/// between 110 and 230 Hz, under a 4 Hz syllable envelope that falls to zero (what concealment
/// cannot extrapolate from the last frame, and what gives a VAD a floor to measure against).
pub fn speech_like(rate_hz: u32, n: usize) -> Vec<i16> {
    let mut phase = 0f64;
    (0..n)
        .map(|i| {
            let t = i as f64 / rate_hz as f64;
            let f0 = 170.0 + 60.0 * (std::f64::consts::TAU * 1.3 * t).sin();
            phase += std::f64::consts::TAU * f0 / rate_hz as f64;
            let envelope = 0.5 + 0.5 * (std::f64::consts::TAU * 4.0 * t).sin();
            let voiced: f64 = (1..=10).map(|k| (k as f64 * phase).sin() / k as f64).sum();
            (3000.0 * envelope * voiced) as i16
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tones::{ToneGenerator, ToneSpec};

    fn sine(rate: u32, f: f32, dbm0: f32, n: usize) -> Vec<i16> {
        let mut g = ToneGenerator::new(&ToneSpec::continuous(f, 0.0, dbm0), rate).unwrap();
        let mut x = vec![0i16; n];
        g.fill(&mut x);
        x
    }

    fn round_trip(enc: &mut dyn Encoder, dec: &mut dyn Decoder, x: &[i16]) -> Vec<i16> {
        let mut out = Vec::new();
        let mut payload = vec![0u8; enc.max_payload_bytes()];
        for frame in x.chunks_exact(enc.frame_samples()) {
            let n = enc.encode(frame, &mut payload).unwrap();
            let mut pcm = vec![0i16; dec.samples_for(n)];
            let m = dec.decode(&payload[..n], &mut pcm).unwrap();
            out.extend_from_slice(&pcm[..m]);
        }
        out
    }

    #[test]
    fn g711_round_trip_snr() {
        // G.711's SQNR for a sine near 0 dBm0 is about 38 dB for both laws.
        for law in [Law::Ulaw, Law::Alaw] {
            let x = sine(8000, 1020.0, -3.0, 8000);
            let mut enc = G711Encoder::new(law, 20).unwrap();
            let mut dec = G711Decoder::new(law);
            assert_eq!((enc.frame_samples(), enc.max_payload_bytes()), (160, 160));
            let y = round_trip(&mut enc, &mut dec, &x);
            let snr = sine_snr_db(&y, 1020.0, 8000.0, 0);
            assert!(snr > 35.0, "{law:?} SNR {snr:.1} dB");
        }
    }

    #[cfg(feature = "opus")]
    #[test]
    fn opus_round_trip_keeps_the_tone() {
        // A perceptual codec: the waveform is not kept sample for sample, but a steady tone
        // comes back at its frequency with most of its energy (libopus delays it by its
        // look-ahead, which the least-squares fit absorbs as phase).
        for rate in [8000u32, 16000, 48000] {
            let x = sine(rate, 1020.0, -10.0, rate as usize);
            let mut enc = OpusEncoder::new(rate, 20).unwrap();
            let mut dec = OpusDecoder::new(rate).unwrap();
            assert_eq!(enc.frame_samples(), rate as usize / 50);
            let y = round_trip(&mut enc, &mut dec, &x);
            assert_eq!(y.len(), x.len());
            let snr = sine_snr_db(&y, 1020.0, rate as f64, rate as usize / 5);
            assert!(snr > 15.0, "{rate} Hz: SNR {snr:.1} dB");
            let mut plc = vec![0i16; rate as usize / 50];
            assert_eq!(dec.conceal(&mut plc), Ok(plc.len()));
        }
        assert!(OpusEncoder::new(11025, 20).is_err());
        assert_eq!(
            OpusEncoder::new(8000, 25).map(|_| ()),
            Err(CodecError::FrameDuration(25))
        );
        let mut dec = OpusDecoder::new(8000).unwrap();
        assert_eq!(dec.decode(&[], &mut [0; 160]), Err(CodecError::Rejected));
    }

    /// SNR (dB) of `y[range]` against `x` shifted by `lag` samples (the codec's delay).
    #[cfg(feature = "opus")]
    fn snr_against(x: &[i16], y: &[i16], lag: usize, range: std::ops::Range<usize>) -> f64 {
        let (mut sig, mut noise) = (0f64, 0f64);
        for i in range {
            let want = x[i - lag] as f64;
            sig += want * want;
            noise += (y[i] as f64 - want).powi(2);
        }
        10.0 * (sig / noise.max(1e-9)).log10()
    }

    #[cfg(feature = "opus")]
    #[test]
    fn opus_fec_recovers_a_lost_frame_better_than_concealment() {
        let rate = 8000u32;
        let frame = rate as usize / 50;
        let x = speech_like(rate, rate as usize);
        let mut enc = OpusEncoder::new(rate, 20).unwrap();
        enc.enable_fec(10).unwrap();
        let mut packets = Vec::new();
        for f in x.chunks_exact(frame) {
            let mut out = [0u8; 400];
            let n = enc.encode_any(f, &mut out).unwrap();
            packets.push(out[..n].to_vec());
        }
        // Packet 23 is lost: one decoder conceals it, the other recovers it from packet 24.
        const LOST: usize = 23;
        let decode_all = |fec: bool| {
            let mut dec = OpusDecoder::new(rate).unwrap();
            let mut y = Vec::new();
            for (i, p) in packets.iter().enumerate() {
                let mut pcm = vec![0i16; frame];
                let n = match (i == LOST, fec) {
                    (true, false) => dec.conceal(&mut pcm).unwrap(),
                    (true, true) => dec.recover(&packets[i + 1], &mut pcm).unwrap(),
                    (false, _) => dec.decode(p, &mut pcm).unwrap(),
                };
                assert_eq!(n, frame);
                y.extend_from_slice(&pcm);
            }
            y
        };
        let (plc, fec) = (decode_all(false), decode_all(true));
        assert!(plc != fec, "the FEC copy was not used");
        // The codec's delay: where the decoded audio best matches the original.
        let clean = {
            let mut dec = OpusDecoder::new(rate).unwrap();
            let mut y = Vec::new();
            for p in &packets {
                let mut pcm = vec![0i16; frame];
                dec.decode(p, &mut pcm).unwrap();
                y.extend_from_slice(&pcm);
            }
            y
        };
        let lag = (0..200)
            .max_by_key(|&lag| {
                let range = 2000..7000;
                range
                    .map(|i| x[i - lag] as i64 * clean[i] as i64)
                    .sum::<i64>()
            })
            .unwrap();
        let lost = LOST * frame..(LOST + 1) * frame;
        let (snr_plc, snr_fec) = (
            snr_against(&x, &plc, lag, lost.clone()),
            snr_against(&x, &fec, lag, lost.clone()),
        );
        let snr_clean = snr_against(&x, &clean, lag, lost);
        eprintln!("lost frame SNR: clean {snr_clean:.1} dB, FEC {snr_fec:.1} dB, PLC {snr_plc:.1} dB (lag {lag})");
        assert!(
            snr_fec > snr_plc + 3.0,
            "FEC {snr_fec:.1} dB, PLC {snr_plc:.1} dB"
        );
        assert!(snr_fec > 3.0, "FEC {snr_fec:.1} dB");
        // libopus adds the FEC copy only for frames its VAD rates as speech, which
        // `speech_like` is built to be.
        let mut dec = OpusDecoder::new(rate).unwrap();
        assert_eq!(dec.recover(&[], &mut [0; 160]), Err(CodecError::Rejected));
    }

    #[cfg(feature = "opus")]
    #[test]
    fn opus_dtx_leaves_silence_untransmitted() {
        let rate = 8000u32;
        let mut enc = OpusEncoder::new(rate, 20).unwrap();
        enc.enable_dtx().unwrap();
        let mut lengths = Vec::new();
        let speech = speech_like(rate, 8000);
        let silence = vec![0i16; 16000];
        for f in speech.chunks_exact(160).chain(silence.chunks_exact(160)) {
            let mut out = [0u8; 400];
            lengths.push(enc.encode_any(f, &mut out).unwrap());
        }
        // Speech is all sent; in 2 s of silence most frames are not (libopus still sends one
        // now and then to refresh the receiver's comfort noise).
        assert!(lengths[..50].iter().all(|&n| n > 2));
        let untransmitted = lengths[50..].iter().filter(|&&n| n == 0).count();
        assert!(
            untransmitted > 80,
            "{untransmitted} of 100 silent frames untransmitted"
        );
        // Without DTX every frame is sent.
        let mut plain = OpusEncoder::new(rate, 20).unwrap();
        let mut out = [0u8; 400];
        assert!(silence
            .chunks_exact(160)
            .all(|f| plain.encode_any(f, &mut out).unwrap() > 0));
    }

    #[test]
    fn g729_vad_sends_sid_or_nothing_for_silence_and_speech_for_a_tone() {
        let mut enc = G729Encoder::with_vad(20, true).unwrap();
        assert!(enc.vad());
        let tone = sine(8000, 700.0, -10.0, 8000);
        // Low background noise rather than digital zero, as a line carries.
        let mut seed = 1u32;
        let noise: Vec<i16> = (0..16000)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                ((seed >> 16) as i16) >> 10
            })
            .collect();
        let mut out = [0u8; 20];
        let mut tone_payloads = Vec::new();
        for f in tone.chunks_exact(160) {
            tone_payloads.push(enc.encode_any(f, &mut out).unwrap());
        }
        // A tone is speech: two 10-byte frames per 20 ms, from the first frame.
        let whole = G729Payload {
            skipped_frames: 0,
            len: 20,
        };
        assert!(
            tone_payloads[5..].iter().all(|&p| p == whole),
            "{tone_payloads:?}"
        );
        let mut silent = Vec::new();
        for f in noise.chunks_exact(160) {
            silent.push(enc.encode_any(f, &mut out).unwrap());
        }
        // After the hangover, silence is SID frames (2 bytes, last in the payload) or
        // nothing; most 20 ms packets carry nothing.
        let settled = &silent[20..];
        assert!(
            settled.iter().all(|p| p.len == 0 || p.len == 2),
            "{settled:?}"
        );
        let empty = settled.iter().filter(|p| p.len == 0).count();
        assert!(
            empty > settled.len() / 2,
            "{empty} of {} empty",
            settled.len()
        );
        assert!(silent.iter().any(|p| p.len % 10 == 2), "{silent:?}");
        // Speech again: speech frames once more (the first packet may start a frame late).
        let mut back = Vec::new();
        for f in tone.chunks_exact(160).take(10) {
            back.push(enc.encode_any(f, &mut out).unwrap());
        }
        assert!(back[2..].iter().all(|&p| p == whole), "{back:?}");
        assert!(back[..2].iter().all(|p| p.len % 10 == 0 || p.len % 10 == 2));
        // What VAD-off sends for the same silence: all speech frames.
        let mut plain = G729Encoder::new(20).unwrap();
        assert!(!plain.vad());
        assert!(noise
            .chunks_exact(160)
            .all(|f| plain.encode_any(f, &mut out).unwrap() == whole));
    }

    #[test]
    fn g729_vad_survives_long_silence() {
        // bcg729's VAD counts noise frames in 8 bits: 5 s of digital silence wraps it, which
        // must not panic (the workspace turns overflow checks off for g729-sys).
        let mut enc = G729Encoder::with_vad(20, true).unwrap();
        let mut out = [0u8; 20];
        let silence = [0i16; 160];
        let sent: usize = (0..250)
            .map(|_| enc.encode_any(&silence, &mut out).unwrap().len)
            .sum();
        assert!(sent < 250 * 20 / 4, "{sent} bytes for 5 s of silence");
    }

    #[test]
    fn frame_and_buffer_errors() {
        let mut enc = G711Encoder::new(Law::Ulaw, 20).unwrap();
        assert_eq!(
            enc.encode(&[0; 100], &mut [0; 160]),
            Err(CodecError::FrameLength {
                got: 100,
                want: 160
            })
        );
        assert_eq!(
            enc.encode(&[0; 160], &mut [0; 10]),
            Err(CodecError::OutputTooSmall {
                need: 160,
                have: 10
            })
        );
        let mut dec = G711Decoder::new(Law::Alaw);
        assert_eq!(
            dec.decode(&[0; 20], &mut [0; 10]),
            Err(CodecError::OutputTooSmall { need: 20, have: 10 })
        );
        assert_eq!(
            G711Encoder::new(Law::Ulaw, 0).unwrap_err(),
            CodecError::FrameDuration(0)
        );
    }

    #[test]
    fn g722_round_trip_snr() {
        // A 1 kHz sine at -10 dBm0 through 64 kbit/s G.722: the codec's delay (22 samples)
        // is absorbed by fitting the sine; the first 20 ms (adaptation) are skipped.
        let x = sine(16000, 1000.0, -10.0, 16000);
        let mut enc = G722Encoder::new(20).unwrap();
        let mut dec = G722Decoder::new();
        assert_eq!((enc.frame_samples(), enc.max_payload_bytes()), (320, 160));
        let y = round_trip(&mut enc, &mut dec, &x);
        assert_eq!(y.len(), x.len());
        let snr = sine_snr_db(&y, 1000.0, 16000.0, 320);
        assert!(snr > 45.0, "G.722 SNR {snr:.1} dB");
        // Odd frame durations are refused, short buffers are errors.
        assert!(G722Encoder::new(0).is_err());
        assert_eq!(
            dec.decode(&[0; 160], &mut [0; 100]),
            Err(CodecError::OutputTooSmall {
                need: 320,
                have: 100
            })
        );
    }

    #[test]
    fn g729_round_trip_keeps_the_tone() {
        // CELP keeps the spectrum, not the waveform: a steady tone comes back at its frequency
        // with most of its energy once the decoder has adapted (first 100 ms skipped).
        let x = sine(8000, 1020.0, -10.0, 8000);
        let mut enc = G729Encoder::new(20).unwrap();
        let mut dec = G729Decoder::new();
        assert_eq!((enc.frame_samples(), enc.max_payload_bytes()), (160, 20));
        let y = round_trip(&mut enc, &mut dec, &x);
        assert_eq!(y.len(), x.len());
        let snr = sine_snr_db(&y, 1020.0, 8000.0, 800);
        assert!(snr > 10.0, "G.729 SNR {snr:.1} dB");
        let energy = |v: &[i16]| v.iter().map(|&s| (s as f64).powi(2)).sum::<f64>();
        let ratio = energy(&y[800..]) / energy(&x[800..]);
        assert!((0.5..2.0).contains(&ratio), "energy ratio {ratio:.2}");
        // 30 ms packets are three frames; 15 ms is no whole number of frames.
        let mut payload = [0u8; 30];
        assert_eq!(
            enc.encode_any(&x[..240], &mut payload).map(|p| p.len),
            Ok(30)
        );
        assert!(G729Encoder::new(15).is_err());
        assert!(enc.encode_any(&x[..100], &mut payload).is_err());
        assert!(enc.encode_any(&x[..240], &mut payload[..20]).is_err());
    }

    #[test]
    fn g729_payload_lengths_sid_and_concealment() {
        assert_eq!(G729Decoder::frames_in(20), Some(2));
        assert_eq!(G729Decoder::frames_in(2), Some(1));
        assert_eq!(G729Decoder::frames_in(22), Some(3));
        for bad in [0, 1, 5, 11, 13] {
            assert_eq!(G729Decoder::frames_in(bad), None, "{bad} bytes");
        }
        let mut dec = G729Decoder::new();
        let mut out = [0i16; 240];
        assert_eq!(dec.decode(&[0x55; 13], &mut out), Err(CodecError::Rejected));
        assert!(dec.decode(&[0x55; 30], &mut out[..100]).is_err());
        // Speech, then a SID: the packet decodes to three frames and the decoder is silent.
        let x = sine(8000, 700.0, -10.0, 1600);
        let mut enc = G729Encoder::new(20).unwrap();
        let mut payload = [0u8; 22];
        for frame in x.chunks_exact(160) {
            let n = enc.encode_any(frame, &mut payload).unwrap().len;
            assert_eq!(dec.decode(&payload[..n], &mut out), Ok(160));
        }
        // Concealment after speech carries the tone on.
        let mut plc = [0i16; 160];
        assert_eq!(dec.conceal(&mut plc), Ok(160));
        let rms = |v: &[i16]| {
            (v.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
        };
        assert!(rms(&plc) > 300.0, "concealed RMS {:.0}", rms(&plc));
        payload[20..22].copy_from_slice(&[0x20, 0x10]);
        assert_eq!(dec.decode(&payload, &mut out), Ok(240));
        assert!(dec.silent);
        assert_eq!(dec.conceal(&mut plc), Ok(160));
        assert!(dec.conceal(&mut plc[..100]).is_err());
    }

    #[test]
    fn sine_snr_of_a_clean_sine_is_high_and_of_noise_low() {
        let x = sine(8000, 700.0, -3.0, 4000);
        assert!(sine_snr_db(&x, 700.0, 8000.0, 0) > 60.0);
        let y = sine(8000, 1500.0, -3.0, 4000);
        assert!(sine_snr_db(&y, 700.0, 8000.0, 0) < 0.0);
    }
}
