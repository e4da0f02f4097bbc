//! Supervisor monitoring: a supervisor's leg attached to a running two-leg call, listening,
//! whispering to the agent, or barging in.
//!
//! The supervisor's leg is a session of its own (leg A facing the supervisor's phone, leg B
//! closed), so latching, counters, quality and timeouts work as for any leg. What changes is
//! where audio goes, per [`MonitorMode`]:
//!
//! | mode    | caller (A) hears          | agent (B) hears              | supervisor hears |
//! |---------|---------------------------|------------------------------|------------------|
//! | listen  | B, relayed untouched      | A, relayed untouched         | A + B mixed      |
//! | whisper | B, relayed untouched      | A + supervisor mixed         | A + B mixed      |
//! | barge   | B + supervisor mixed      | A + supervisor mixed         | A + B mixed      |
//!
//! A direction relayed untouched stays on the relay path (no added latency); its packets are
//! also decoded for the supervisor's mix ("tapped"). A leg whose listener hears a mix is
//! `mixed` in the session table: its RTP comes here instead of being forwarded. Each party's
//! decoded audio (8 kHz) waits in a small FIFO; on the core's 20 ms grid ([`FrameGrid`]) one
//! frame of each goes through `tandem_media::mixer` (who hears whom by role, soft clipping)
//! and out to each listener of a mix, encoded in its codec, as an RTP stream of ours: our SSRC,
//! a sequence number that counts the packets sent and a timestamp that counts the grid's
//! frames, so a stream paused (whisper back to listen) resumes marked, after a time gap, and a
//! mode change does not restart it.
//!
//! Everything (codec states, FIFOs, mixer) is allocated in [`Monitors::attach`], on a command;
//! [`Monitors::feed`] and [`Monitors::mix_frame`] allocate nothing
//! (`tests/monitor_no_alloc.rs`).

use crate::api::{Codec, LegCodec, LegIndex, MonitorMode};
use crate::playback::{FrameGrid, HEADER_LEN};
use tandem_media::codec::{
    CodecError, Decoder, Encoder, G722Decoder, G722Encoder, G729Decoder, G729Encoder, OpusDecoder,
    OpusEncoder,
};
use tandem_media::g711::Law;
use tandem_media::mixer::{Mixer, ParticipantId, Role, SupervisorMode};
use tandem_media::resample::Resampler;

/// Samples per 20 ms frame at the mix rate (8 kHz: the rate every G.711 call has).
pub const FRAME: usize = 160;
/// Longest packet decoded, at the mix rate: 120 ms, Opus's longest.
const MAX_DECODED: usize = 960;
/// G.722's 16 kHz side of one 20 ms frame.
const WIDE_FRAME: usize = 320;
/// Each party's FIFO holds at most this much; older audio is dropped beyond it.
const FIFO_SAMPLES: usize = 6 * FRAME;
/// A party's audio is mixed once this much has arrived (again after running dry): one frame
/// and a half absorbs the jitter between its packets and the core's grid.
const PRIME_SAMPLES: usize = FRAME + FRAME / 2;
/// Largest encoded frame we write (Opus at speech rates stays far below).
const MAX_PAYLOAD: usize = 1000;

/// The parties of a monitored call: indices of the per-party arrays.
const CALLER: usize = 0;
const AGENT: usize = 1;
const SUPERVISOR: usize = 2;

const NONE: u32 = u32::MAX;

/// Which legs of the monitored session are `mixed` in `mode` (`[A, B]`): A's audio goes to
/// the agent through the mix in whisper and barge, B's to the caller in barge.
pub fn mixed_legs(mode: MonitorMode) -> [bool; 2] {
    match mode {
        MonitorMode::Listen => [false, false],
        MonitorMode::Whisper => [true, false],
        MonitorMode::Barge => [true, true],
    }
}

/// Whether `party` is sent a mixed stream in `mode` (else it hears the relay, or nothing).
fn hears_mix(party: usize, mode: MonitorMode) -> bool {
    match party {
        SUPERVISOR => true,
        AGENT => mode != MonitorMode::Listen,
        _ => mode == MonitorMode::Barge,
    }
}

/// Why [`Monitors::attach`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachError {
    /// A session already in a monitor, or the same session as call and supervisor.
    Conflict,
    /// A codec state could not be made.
    Codec,
}

// Boxed once per party inside the boxed monitor: boxing the G.722 state again would only add
// a pointer chase per packet.
#[allow(clippy::large_enum_variant)]
enum Decode {
    G711(Law),
    G722 {
        decoder: G722Decoder,
        down: Box<Resampler>,
    },
    Opus(OpusDecoder),
    G729(G729Decoder),
}

impl Decode {
    fn new(codec: Codec) -> Result<Self, CodecError> {
        Ok(match codec {
            Codec::Pcmu => Decode::G711(Law::Ulaw),
            Codec::Pcma => Decode::G711(Law::Alaw),
            Codec::G722 => Decode::G722 {
                decoder: G722Decoder::new(),
                down: Box::new(Resampler::new(16_000, 8000, 20).map_err(|_| CodecError::Rejected)?),
            },
            // libopus decodes any bandwidth straight to the mix rate.
            Codec::Opus => Decode::Opus(OpusDecoder::new(8000)?),
            Codec::G729 => Decode::G729(G729Decoder::new()),
        })
    }

    /// Decodes `payload` to 8 kHz PCM in `out`; `wide` is scratch. Returns samples written.
    fn decode(
        &mut self,
        payload: &[u8],
        wide: &mut [i16; MAX_DECODED],
        out: &mut [i16; MAX_DECODED],
    ) -> Result<usize, CodecError> {
        match self {
            Decode::G711(law) => {
                let n = payload.len().min(out.len());
                Ok(law.decode(&payload[..n], &mut out[..n]))
            }
            Decode::G722 { decoder, down } => {
                // The resampler takes 20 ms frames only: 160 bytes of G.722.
                if payload.len() * 2 != WIDE_FRAME {
                    return Err(CodecError::FrameLength {
                        got: payload.len() * 2,
                        want: WIDE_FRAME,
                    });
                }
                let n = decoder.decode(payload, &mut wide[..])?;
                down.process(&wide[..n], &mut out[..])
                    .map_err(|_| CodecError::Rejected)
            }
            Decode::Opus(d) => d.decode(payload, &mut out[..]),
            Decode::G729(d) => d.decode(payload, &mut out[..]),
        }
    }
}

#[allow(clippy::large_enum_variant)]
enum Encode {
    G711(Law),
    G722 {
        encoder: G722Encoder,
        up: Box<Resampler>,
    },
    Opus(OpusEncoder),
    G729(G729Encoder),
}

impl Encode {
    fn new(codec: Codec) -> Result<Self, CodecError> {
        Ok(match codec {
            Codec::Pcmu => Encode::G711(Law::Ulaw),
            Codec::Pcma => Encode::G711(Law::Alaw),
            Codec::G722 => Encode::G722 {
                encoder: G722Encoder::new(20)?,
                up: Box::new(Resampler::new(8000, 16_000, 20).map_err(|_| CodecError::Rejected)?),
            },
            Codec::Opus => Encode::Opus(OpusEncoder::new(8000, 20)?),
            Codec::G729 => Encode::G729(G729Encoder::new(20)?),
        })
    }

    /// Encodes one mixed frame into `out`; `wide` is scratch. Returns payload bytes.
    fn encode(
        &mut self,
        pcm: &[i16; FRAME],
        wide: &mut [i16; MAX_DECODED],
        out: &mut [u8],
    ) -> Result<usize, CodecError> {
        match self {
            Encode::G711(law) => Ok(law.encode(pcm, &mut out[..FRAME])),
            Encode::G722 { encoder, up } => {
                let n = up
                    .process(pcm, &mut wide[..])
                    .map_err(|_| CodecError::Rejected)?;
                encoder.encode(&wide[..n], out)
            }
            Encode::Opus(e) => e.encode(pcm, out),
            Encode::G729(e) => e.encode(pcm, out),
        }
    }
}

/// A party's decoded audio waiting for the grid: a ring of samples at the mix rate.
struct SampleFifo {
    samples: [i16; FIFO_SAMPLES],
    start: usize,
    len: usize,
    /// Enough has arrived since the FIFO last ran dry to mix from it.
    primed: bool,
}

impl SampleFifo {
    fn new() -> Self {
        SampleFifo {
            samples: [0; FIFO_SAMPLES],
            start: 0,
            len: 0,
            primed: false,
        }
    }

    /// Appends `pcm`; beyond the FIFO's length the oldest audio goes (a sender faster than our
    /// clock, or a burst after a stall, must not grow the delay).
    fn push(&mut self, pcm: &[i16]) {
        let pcm = &pcm[pcm.len().saturating_sub(FIFO_SAMPLES)..];
        let excess = (self.len + pcm.len()).saturating_sub(FIFO_SAMPLES);
        self.start = (self.start + excess) % FIFO_SAMPLES;
        self.len -= excess;
        let end = (self.start + self.len) % FIFO_SAMPLES;
        let first = pcm.len().min(FIFO_SAMPLES - end);
        self.samples[end..end + first].copy_from_slice(&pcm[..first]);
        self.samples[..pcm.len() - first].copy_from_slice(&pcm[first..]);
        self.len += pcm.len();
    }

    /// The next frame, or `None` while priming or when it ran dry (the party is silent).
    fn pop(&mut self, out: &mut [i16; FRAME]) -> Option<()> {
        if !self.primed && self.len < PRIME_SAMPLES {
            return None;
        }
        if self.len < FRAME {
            self.primed = false;
            return None;
        }
        self.primed = true;
        let first = FRAME.min(FIFO_SAMPLES - self.start);
        out[..first].copy_from_slice(&self.samples[self.start..self.start + first]);
        out[first..].copy_from_slice(&self.samples[..FRAME - first]);
        self.start = (self.start + FRAME) % FIFO_SAMPLES;
        self.len -= FRAME;
        Some(())
    }
}

/// One of our outgoing mixed streams.
#[derive(Debug, Clone, Copy)]
struct OutStream {
    payload_type: u8,
    ssrc: u32,
    /// Sequence number of the next packet sent, and timestamp of the current grid frame.
    seq: u16,
    ts: u32,
    /// RTP clock ticks per 20 ms frame.
    frame_ticks: u32,
    /// Sent last frame; when a stream (re)starts its first packet is marked.
    sending: bool,
}

impl OutStream {
    fn new(codec: LegCodec, seed: u64) -> Self {
        OutStream {
            payload_type: codec.payload_type & 0x7f,
            ssrc: seed as u32,
            seq: (seed >> 32) as u16,
            ts: (seed >> 24) as u32,
            frame_ticks: codec.codec.rtp_clock_hz() / 50,
            sending: false,
        }
    }

    fn header(&self, marker: bool) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0] = 0x80;
        h[1] = (marker as u8) << 7 | self.payload_type;
        h[2..4].copy_from_slice(&self.seq.to_be_bytes());
        h[4..8].copy_from_slice(&self.ts.to_be_bytes());
        h[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        h
    }
}

struct Party {
    /// The audio payload type this party's peer sends (7 bits).
    payload_type: u8,
    decode: Decode,
    encode: Encode,
    fifo: SampleFifo,
    out: OutStream,
    id: ParticipantId,
}

/// Counters of one monitor, for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MonitorStats {
    /// Packets decoded into the mix, per party (caller, agent, supervisor).
    pub fed: [u64; 3],
    /// Mixed packets handed to the core, per party.
    pub sent: [u64; 3],
    /// Grid frames mixed.
    pub frames: u64,
}

/// One supervisor on one call.
pub struct Monitor {
    session: u32,
    supervisor: u32,
    mode: MonitorMode,
    mixer: Mixer,
    parties: [Party; 3],
    frame: [i16; FRAME],
    decoded: [i16; MAX_DECODED],
    wide: [i16; MAX_DECODED],
    payload: [u8; MAX_PAYLOAD],
    stats: MonitorStats,
}

fn role(mode: MonitorMode, agent: ParticipantId) -> Role {
    Role::Supervisor(match mode {
        MonitorMode::Listen => SupervisorMode::Listen,
        MonitorMode::Whisper => SupervisorMode::Whisper { to: agent },
        MonitorMode::Barge => SupervisorMode::Barge,
    })
}

impl Monitor {
    fn new(
        session: u32,
        supervisor: u32,
        mode: MonitorMode,
        codecs: [LegCodec; 3],
        seeds: [u64; 3],
    ) -> Result<Box<Self>, CodecError> {
        let mut mixer = Mixer::new(3, FRAME);
        let party = |i: usize, id: ParticipantId| -> Result<Party, CodecError> {
            Ok(Party {
                payload_type: codecs[i].payload_type & 0x7f,
                decode: Decode::new(codecs[i].codec)?,
                encode: Encode::new(codecs[i].codec)?,
                fifo: SampleFifo::new(),
                out: OutStream::new(codecs[i], seeds[i]),
                id,
            })
        };
        let full = |_| CodecError::Rejected;
        let caller = mixer.add(Role::Party).map_err(full)?;
        let agent = mixer.add(Role::Party).map_err(full)?;
        let sup = mixer.add(role(mode, agent)).map_err(full)?;
        Ok(Box::new(Monitor {
            session,
            supervisor,
            mode,
            parties: [party(0, caller)?, party(1, agent)?, party(2, sup)?],
            mixer,
            frame: [0; FRAME],
            decoded: [0; MAX_DECODED],
            wide: [0; MAX_DECODED],
            payload: [0; MAX_PAYLOAD],
            stats: MonitorStats::default(),
        }))
    }

    /// Where party `p`'s mixed stream goes: a session and its leg.
    fn target(&self, p: usize) -> (u32, LegIndex) {
        match p {
            CALLER => (self.session, LegIndex::A),
            AGENT => (self.session, LegIndex::B),
            _ => (self.supervisor, LegIndex::A),
        }
    }

    fn feed(&mut self, p: usize, packet: &[u8]) -> Result<(), CodecError> {
        let party = &mut self.parties[p];
        // Muxed RTCP and telephone events are not audio; nor is anything outside the plan.
        if packet.len() < HEADER_LEN || packet[1] & 0x7f != party.payload_type {
            return Err(CodecError::Rejected);
        }
        let payload = crate::rtp::rtp_payload(packet)
            .filter(|p| !p.is_empty())
            .ok_or(CodecError::Rejected)?;
        let n = party
            .decode
            .decode(payload, &mut self.wide, &mut self.decoded)?;
        party.fifo.push(&self.decoded[..n]);
        self.stats.fed[p] += 1;
        Ok(())
    }

    /// Lets `n` frames pass unmixed (a late core): the streams' clocks move on.
    fn skip(&mut self, n: u32) {
        for party in &mut self.parties {
            party.out.ts = party
                .out
                .ts
                .wrapping_add(n.wrapping_mul(party.out.frame_ticks));
        }
    }

    fn mix_frame(&mut self, send: &mut impl FnMut(u32, LegIndex, &[u8], &[u8]) -> bool) {
        for party in &mut self.parties {
            if party.fifo.pop(&mut self.frame).is_some() {
                // The mixer takes frames of its own length: this one always fits.
                let _ = self.mixer.set_input(party.id, &self.frame);
            }
        }
        self.mixer.mix();
        self.stats.frames += 1;
        for p in 0..3 {
            let hears = hears_mix(p, self.mode);
            let party = &mut self.parties[p];
            let restart = hears && !party.out.sending;
            party.out.sending = hears;
            if hears {
                let Ok(mixed) = self.mixer.output(party.id) else {
                    continue;
                };
                self.frame.copy_from_slice(mixed);
                if let Ok(len) = party
                    .encode
                    .encode(&self.frame, &mut self.wide, &mut self.payload)
                {
                    let header = party.out.header(restart);
                    let (index, leg) = self.target(p);
                    let party = &mut self.parties[p];
                    if send(index, leg, &header, &self.payload[..len]) {
                        party.out.seq = party.out.seq.wrapping_add(1);
                        self.stats.sent[p] += 1;
                    } else {
                        // Not sent (no address yet, a clip playing): mark the next one.
                        party.out.sending = false;
                    }
                }
            }
            let out = &mut self.parties[p].out;
            out.ts = out.ts.wrapping_add(out.frame_ticks);
        }
    }
}

/// The monitors of one core. At most one per session (as call or as supervisor), so the list
/// never outgrows the capacity it is given at start.
pub struct Monitors {
    active: Vec<Box<Monitor>>,
    /// Per session index: index into `active` of the monitor it takes part in, or NONE.
    position: Box<[u32]>,
    grid: FrameGrid,
}

impl Monitors {
    pub fn new(sessions: u32) -> Self {
        Monitors {
            active: Vec::with_capacity(sessions as usize / 2 + 1),
            position: vec![NONE; sessions as usize].into_boxed_slice(),
            grid: FrameGrid::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.active.len()
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Whether session `index` is a monitored call or a supervisor's leg.
    pub fn contains(&self, index: u32) -> bool {
        self.position
            .get(index as usize)
            .is_some_and(|&at| at != NONE)
    }

    /// The mode of the monitor that session `index` takes part in.
    pub fn mode(&self, index: u32) -> Option<MonitorMode> {
        self.find(index).map(|m| m.mode)
    }

    pub fn stats(&self, index: u32) -> Option<MonitorStats> {
        self.find(index).map(|m| m.stats)
    }

    fn find(&self, index: u32) -> Option<&Monitor> {
        let at = *self.position.get(index as usize)?;
        self.active.get(at as usize).map(|m| &**m)
    }

    fn find_mut(&mut self, index: u32) -> Option<&mut Monitor> {
        let at = *self.position.get(index as usize)?;
        self.active.get_mut(at as usize).map(|m| &mut **m)
    }

    /// Attaches session `supervisor`'s leg A to session `session` in `mode`. `codecs`: caller
    /// (session's A), agent (session's B), supervisor; `seeds` seed each mixed stream's SSRC,
    /// sequence and timestamp (RFC 3550 wants them random). The caller sets the session
    /// table's `mixed` flags ([`mixed_legs`], and the supervisor's leg A).
    pub fn attach(
        &mut self,
        session: u32,
        supervisor: u32,
        mode: MonitorMode,
        codecs: [LegCodec; 3],
        seeds: [u64; 3],
        now_ns: u64,
    ) -> Result<(), AttachError> {
        if session == supervisor || self.contains(session) || self.contains(supervisor) {
            return Err(AttachError::Conflict);
        }
        if session as usize >= self.position.len() || supervisor as usize >= self.position.len() {
            return Err(AttachError::Conflict);
        }
        let m = Monitor::new(session, supervisor, mode, codecs, seeds)
            .map_err(|_| AttachError::Codec)?;
        if self.active.is_empty() {
            self.grid.restart(now_ns);
        }
        let at = self.active.len() as u32;
        self.position[session as usize] = at;
        self.position[supervisor as usize] = at;
        self.active.push(m);
        Ok(())
    }

    /// Changes the mode of the monitor on session `session` (the call, not the supervisor).
    pub fn set_mode(&mut self, session: u32, mode: MonitorMode) -> Result<(), AttachError> {
        let m = self
            .find_mut(session)
            .filter(|m| m.session == session)
            .ok_or(AttachError::Conflict)?;
        let agent = m.parties[AGENT].id;
        let sup = m.parties[SUPERVISOR].id;
        m.mixer
            .set_role(sup, role(mode, agent))
            .map_err(|_| AttachError::Conflict)?;
        m.mode = mode;
        Ok(())
    }

    /// Ends the monitor that session `index` (call or supervisor) takes part in; returns the
    /// call's and the supervisor's session indices.
    pub fn detach(&mut self, index: u32) -> Option<(u32, u32)> {
        let at = *self.position.get(index as usize)?;
        if at == NONE {
            return None;
        }
        let m = self.active.swap_remove(at as usize);
        self.position[m.session as usize] = NONE;
        self.position[m.supervisor as usize] = NONE;
        if let Some(moved) = self.active.get(at as usize) {
            self.position[moved.session as usize] = at;
            self.position[moved.supervisor as usize] = at;
        }
        Some((m.session, m.supervisor))
    }

    /// Decodes an RTP packet received on leg `leg_in` of session `index` into its party's FIFO.
    /// Refused (counted by the caller where the packet was for the mix only): not the party's
    /// audio payload type, a corrupt payload, a session in no monitor, or a supervisor
    /// session's leg B.
    pub fn feed(&mut self, index: u32, leg_in: usize, packet: &[u8]) -> Result<(), CodecError> {
        let m = self.find_mut(index).ok_or(CodecError::Rejected)?;
        let party = match (m.session == index, leg_in) {
            (true, 0) => CALLER,
            (true, _) => AGENT,
            (false, 0) => SUPERVISOR,
            (false, _) => return Err(CodecError::Rejected),
        };
        m.feed(party, packet)
    }

    /// Frames due at `now` (0 with no monitor); moves the grid past them.
    pub fn due(&mut self, now_ns: u64) -> u32 {
        self.grid.due(now_ns, !self.active.is_empty())
    }

    pub fn sleep_hint_ns(&self, now_ns: u64) -> Option<u64> {
        self.grid.sleep_hint_ns(now_ns, !self.active.is_empty())
    }

    /// Lets `n` frames of monitor `i` pass unmixed.
    pub fn skip(&mut self, i: usize, n: u32) {
        self.active[i].skip(n);
    }

    /// Mixes one frame of monitor `i` and hands each mixed packet to `send(session index, leg,
    /// header, payload)`, which says whether it was sent.
    pub fn mix_frame(
        &mut self,
        i: usize,
        mut send: impl FnMut(u32, LegIndex, &[u8], &[u8]) -> bool,
    ) {
        self.active[i].mix_frame(&mut send);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn g711(payload_type: u8, codec: Codec) -> LegCodec {
        LegCodec {
            payload_type,
            codec,
            event_payload_type: None,
            ptime_ms: 0,
            options: crate::api::CodecOptions::NONE,
        }
    }
    const PCMA: LegCodec = g711(8, Codec::Pcma);
    const PCMU: LegCodec = g711(0, Codec::Pcmu);

    fn packet(pt: u8, seq: u16, law: Law, level: i16) -> Vec<u8> {
        let mut p = vec![0x80, pt];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(seq as u32 * 160).to_be_bytes());
        p.extend_from_slice(&9u32.to_be_bytes());
        let mut codes = [0u8; FRAME];
        law.encode(&[level; FRAME], &mut codes);
        p.extend_from_slice(&codes);
        p
    }

    type Sent = Vec<(u32, LegIndex, Vec<u8>, Vec<u8>)>;

    fn frame(m: &mut Monitors) -> Sent {
        let mut sent = Vec::new();
        m.mix_frame(0, |s, l, h, p| {
            sent.push((s, l, h.to_vec(), p.to_vec()));
            true
        });
        sent
    }

    fn seq_ts(h: &[u8]) -> (u16, u32) {
        (
            u16::from_be_bytes([h[2], h[3]]),
            u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        )
    }

    #[test]
    fn attach_refuses_conflicts_and_detach_frees_both_sessions() {
        let mut m = Monitors::new(8);
        let codecs = [PCMA, PCMA, PCMU];
        assert_eq!(
            m.attach(1, 1, MonitorMode::Listen, codecs, [1, 2, 3], 0),
            Err(AttachError::Conflict)
        );
        m.attach(1, 2, MonitorMode::Listen, codecs, [1, 2, 3], 0)
            .unwrap();
        assert_eq!(
            m.attach(3, 2, MonitorMode::Listen, codecs, [1, 2, 3], 0),
            Err(AttachError::Conflict)
        );
        assert_eq!(
            m.attach(3, 9, MonitorMode::Listen, codecs, [1, 2, 3], 0),
            Err(AttachError::Conflict)
        );
        m.attach(3, 4, MonitorMode::Barge, codecs, [1, 2, 3], 0)
            .unwrap();
        // The mode is changed through the call, not the supervisor's session.
        assert_eq!(
            m.set_mode(2, MonitorMode::Barge),
            Err(AttachError::Conflict)
        );
        m.set_mode(1, MonitorMode::Whisper).unwrap();
        assert_eq!(m.mode(2), Some(MonitorMode::Whisper));
        assert_eq!(m.detach(2), Some((1, 2)));
        assert!(!m.contains(1) && !m.contains(2));
        assert_eq!(m.mode(4), Some(MonitorMode::Barge));
        assert_eq!(m.detach(3), Some((3, 4)));
        assert!(m.is_empty());
        assert_eq!(m.detach(3), None);
    }

    #[test]
    fn whisper_reaches_the_agent_only_and_streams_run_on_across_modes() {
        let mut m = Monitors::new(4);
        m.attach(0, 1, MonitorMode::Whisper, [PCMA, PCMA, PCMU], [7, 8, 9], 0)
            .unwrap();
        // Caller 1000, agent 100 (not heard by the agent), supervisor 4000.
        let mut agent_heard = Vec::new();
        let mut streams: Vec<Sent> = Vec::new();
        for i in 0..10u16 {
            m.feed(0, 0, &packet(8, i, Law::Alaw, 1000)).unwrap();
            m.feed(0, 1, &packet(8, i, Law::Alaw, 100)).unwrap();
            m.feed(1, 0, &packet(0, i, Law::Ulaw, 4000)).unwrap();
            if i == 6 {
                m.set_mode(0, MonitorMode::Barge).unwrap();
            }
            let sent = frame(&mut m);
            for (s, l, _, p) in &sent {
                if (*s, *l) == (0, LegIndex::B) {
                    agent_heard.push(tandem_media::g711::alaw_decode(p[80]));
                }
            }
            streams.push(sent);
        }
        // Priming: nothing mixed from a party until a frame and a half has arrived.
        assert!(agent_heard[0].abs() < 10, "{agent_heard:?}");
        let settled = *agent_heard.last().unwrap() as i32;
        assert!((4900..=5100).contains(&settled), "{agent_heard:?}");
        // The caller hears the relay before barge, a mix of ours after it.
        let to_caller = |f: &Sent| f.iter().any(|(s, l, _, _)| (*s, *l) == (0, LegIndex::A));
        assert!(!to_caller(&streams[5]));
        assert!(to_caller(&streams[7]));
        // The agent's stream: consecutive through the switch, marked once at the start.
        let agent: Vec<&Vec<u8>> = streams
            .iter()
            .flat_map(|f| f.iter())
            .filter(|(s, l, _, _)| (*s, *l) == (0, LegIndex::B))
            .map(|(_, _, h, _)| h)
            .collect();
        assert_eq!(agent.len(), 10);
        for (k, h) in agent.iter().enumerate() {
            assert_eq!(h[1] & 0x80 != 0, k == 0, "marker of packet {k}");
            let (seq, ts) = seq_ts(h);
            let (seq0, ts0) = seq_ts(agent[0]);
            assert_eq!(seq, seq0.wrapping_add(k as u16));
            assert_eq!(ts, ts0.wrapping_add(160 * k as u32));
        }
        let stats = m.stats(1).unwrap();
        assert_eq!((stats.fed, stats.frames), ([10, 10, 10], 10));
    }

    #[test]
    fn a_paused_stream_resumes_marked_after_a_time_gap_and_foreign_packets_are_refused() {
        let mut m = Monitors::new(4);
        m.attach(2, 3, MonitorMode::Whisper, [PCMA, PCMU, PCMU], [7, 8, 9], 0)
            .unwrap();
        let agent_headers = |m: &mut Monitors| {
            frame(m)
                .into_iter()
                .filter(|(_, l, _, _)| *l == LegIndex::B)
                .map(|(_, _, h, _)| h)
                .collect::<Vec<_>>()
        };
        let first = agent_headers(&mut m).pop().unwrap();
        m.set_mode(2, MonitorMode::Listen).unwrap();
        assert!(agent_headers(&mut m).is_empty());
        m.skip(0, 3);
        m.set_mode(2, MonitorMode::Whisper).unwrap();
        let again = agent_headers(&mut m).pop().unwrap();
        assert_ne!(again[1] & 0x80, 0, "resumed stream is marked");
        let ((s0, t0), (s1, t1)) = (seq_ts(&first), seq_ts(&again));
        assert_eq!(s1, s0.wrapping_add(1));
        assert_eq!(t1, t0.wrapping_add(5 * 160));
        // Wrong payload type, muxed RTCP, a supervisor's leg B, a session in no monitor.
        assert!(m.feed(2, 0, &packet(0, 1, Law::Ulaw, 5)).is_err());
        assert!(m
            .feed(2, 0, &[0x80, 200, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0])
            .is_err());
        assert!(m.feed(3, 1, &packet(0, 1, Law::Ulaw, 5)).is_err());
        assert!(m.feed(1, 0, &packet(8, 1, Law::Alaw, 5)).is_err());
        assert!(m.feed(2, 0, &packet(8, 1, Law::Alaw, 5)).is_ok());
    }

    #[test]
    fn the_fifo_wraps_trims_to_its_length_and_reprimes_when_dry() {
        let mut f = SampleFifo::new();
        let mut out = [0i16; FRAME];
        let ramp: Vec<i16> = (0..FIFO_SAMPLES as i16 + 100).collect();
        f.push(&ramp[..100]);
        assert!(f.pop(&mut out).is_none(), "priming");
        f.push(&ramp[100..300]);
        assert!(f.pop(&mut out).is_some());
        assert_eq!(out[0], 0);
        assert!(f.pop(&mut out).is_none(), "140 left: dry");
        // Overfull: the oldest go, the newest stay, across the ring's end.
        f.push(&ramp);
        assert_eq!(f.len, FIFO_SAMPLES);
        assert!(f.pop(&mut out).is_some());
        assert_eq!(out[0], 100);
        assert_eq!(out[FRAME - 1], 100 + FRAME as i16 - 1);
    }
}
