//! The mixing machinery shared by supervisor monitoring (`crate::monitor`) and conferences
//! (`crate::conference`): one [`MixParty`] per participant of a mix.
//!
//! A party's packets are put back in sequence order ([`Reorder`]: a window of
//! [`REORDER_PACKETS`]), decoded at the codec's own rate ("native": 8 kHz for G.711 and G.729,
//! 16 kHz for G.722, the mix rate for Opus, which libopus decodes and encodes at any rate) and
//! wait in a FIFO. On the core's 20 ms grid one native frame is taken, resampled to the mix
//! rate where that differs, given to `tandem_media::mixer`; what the party hears comes back at
//! the mix rate, is resampled to the native rate where that differs, encoded and sent as an
//! RTP stream of ours ([`OutStream`]).
//!
//! The mix rate ([`MixRate`]) is 16 kHz as soon as one party speaks a wideband codec (G.722,
//! Opus), else 8 kHz: wideband parties hear each other's full band while narrowband parties
//! are resampled into and out of it. Everything is sized at construction; feeding, mixing and
//! encoding allocate nothing.

use crate::api::{Codec, LegCodec};
use crate::playback::{FrameGrid, HEADER_LEN};
use crate::rtcp::SentStream;
use tandem_media::codec::{
    CodecError, Decoder, Encoder, G722Decoder, G722Encoder, G729Decoder, G729Encoder, OpusDecoder,
    OpusEncoder,
};
use tandem_media::g711::Law;
use tandem_media::mixer::{Mixer, ParticipantId};
use tandem_media::resample::Resampler;

/// Samples per 20 ms frame at the widest rate mixed (16 kHz).
pub const MAX_FRAME: usize = 320;
/// Longest packet decoded: 120 ms (Opus's longest) at 16 kHz.
const MAX_DECODED: usize = 6 * MAX_FRAME;
/// Each party's FIFO holds at most six frames at its native rate; older audio is dropped
/// beyond it.
const FIFO_FRAMES: usize = 6;
/// Largest encoded frame we write (Opus at speech rates stays far below).
const MAX_PAYLOAD: usize = 1000;
/// Packets that may arrive ahead of a missing one before it is given up for lost.
pub const REORDER_PACKETS: usize = 3;
/// Largest payload held back for reordering (a bigger one is decoded as it comes).
const HELD_BYTES: usize = 1280;
/// A packet this far behind the next one expected (or further ahead than the window) means the
/// sender restarted its sequence: the window starts again from it.
const RESYNC_DISTANCE: i16 = 100;

/// The rate a mix runs at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MixRate {
    /// 8 kHz: every party narrowband.
    Narrow,
    /// 16 kHz: at least one G.722 or Opus party.
    Wide,
}

impl MixRate {
    /// Wide as soon as one of `codecs` carries more than telephone band.
    pub fn for_codecs(codecs: impl IntoIterator<Item = Codec>) -> Self {
        if codecs.into_iter().any(is_wideband) {
            MixRate::Wide
        } else {
            MixRate::Narrow
        }
    }

    pub fn hz(self) -> u32 {
        match self {
            MixRate::Narrow => 8000,
            MixRate::Wide => 16_000,
        }
    }

    /// Samples per 20 ms frame.
    pub fn frame(self) -> usize {
        self.hz() as usize / 50
    }
}

pub fn is_wideband(codec: Codec) -> bool {
    matches!(codec, Codec::G722 | Codec::Opus)
}

/// The rate `codec` is decoded and encoded at in a mix of `rate`.
fn native_hz(codec: Codec, rate: MixRate) -> u32 {
    match codec {
        Codec::Pcmu | Codec::Pcma | Codec::G729 => 8000,
        Codec::G722 => 16_000,
        Codec::Opus => rate.hz(),
    }
}

// Boxed once per party inside the boxed monitor or conference: boxing the G.722 state again
// would only add a pointer chase per packet.
#[allow(clippy::large_enum_variant)]
enum Decode {
    G711(Law),
    G722(G722Decoder),
    Opus(OpusDecoder),
    G729(G729Decoder),
}

impl Decode {
    fn new(codec: Codec, native_hz: u32) -> Result<Self, CodecError> {
        Ok(match codec {
            Codec::Pcmu => Decode::G711(Law::Ulaw),
            Codec::Pcma => Decode::G711(Law::Alaw),
            Codec::G722 => Decode::G722(G722Decoder::new()),
            Codec::Opus => Decode::Opus(OpusDecoder::new(native_hz)?),
            Codec::G729 => Decode::G729(G729Decoder::new()),
        })
    }

    /// Decodes `payload` at the native rate into `out`. Returns samples written.
    fn decode(
        &mut self,
        payload: &[u8],
        out: &mut [i16; MAX_DECODED],
    ) -> Result<usize, CodecError> {
        match self {
            Decode::G711(law) => {
                let n = payload.len().min(out.len());
                Ok(law.decode(&payload[..n], &mut out[..n]))
            }
            Decode::G722(d) => d.decode(payload, &mut out[..]),
            Decode::Opus(d) => d.decode(payload, &mut out[..]),
            Decode::G729(d) => d.decode(payload, &mut out[..]),
        }
    }
}

#[allow(clippy::large_enum_variant)]
enum Encode {
    G711(Law),
    G722(G722Encoder),
    Opus(OpusEncoder),
    G729(G729Encoder),
}

impl Encode {
    fn new(codec: Codec, native_hz: u32) -> Result<Self, CodecError> {
        Ok(match codec {
            Codec::Pcmu => Encode::G711(Law::Ulaw),
            Codec::Pcma => Encode::G711(Law::Alaw),
            Codec::G722 => Encode::G722(G722Encoder::new(20)?),
            Codec::Opus => Encode::Opus(OpusEncoder::new(native_hz, 20)?),
            Codec::G729 => Encode::G729(G729Encoder::new(20)?),
        })
    }

    /// Encodes one 20 ms frame at the native rate into `out`. Returns payload bytes.
    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        match self {
            Encode::G711(law) => Ok(law.encode(pcm, &mut out[..pcm.len()])),
            Encode::G722(e) => e.encode(pcm, out),
            Encode::Opus(e) => e.encode(pcm, out),
            Encode::G729(e) => e.encode(pcm, out),
        }
    }
}

/// A party's decoded audio waiting for the grid: a ring of samples at its native rate.
pub(crate) struct SampleFifo {
    samples: [i16; FIFO_FRAMES * MAX_FRAME],
    /// Samples per 20 ms frame, and the ring's length (`FIFO_FRAMES` of them).
    frame: usize,
    capacity: usize,
    start: usize,
    len: usize,
    /// Enough has arrived since the FIFO last ran dry to mix from it.
    primed: bool,
}

impl SampleFifo {
    pub(crate) fn new(frame: usize) -> Self {
        debug_assert!(frame <= MAX_FRAME);
        SampleFifo {
            samples: [0; FIFO_FRAMES * MAX_FRAME],
            frame,
            capacity: FIFO_FRAMES * frame,
            start: 0,
            len: 0,
            primed: false,
        }
    }

    /// A party's audio is mixed once a frame and a half has arrived (again after running
    /// dry): that absorbs the jitter between its packets and the core's grid.
    fn prime_samples(&self) -> usize {
        self.frame + self.frame / 2
    }

    /// Appends `pcm`; beyond the FIFO's length the oldest audio goes (a sender faster than our
    /// clock, or a burst after a stall, must not grow the delay).
    pub(crate) fn push(&mut self, pcm: &[i16]) {
        let cap = self.capacity;
        let pcm = &pcm[pcm.len().saturating_sub(cap)..];
        let excess = (self.len + pcm.len()).saturating_sub(cap);
        self.start = (self.start + excess) % cap;
        self.len -= excess;
        let end = (self.start + self.len) % cap;
        let first = pcm.len().min(cap - end);
        self.samples[end..end + first].copy_from_slice(&pcm[..first]);
        self.samples[..pcm.len() - first].copy_from_slice(&pcm[first..]);
        self.len += pcm.len();
    }

    /// The next frame into `out[..frame]`, or `None` while priming or when it ran dry (the
    /// party is silent).
    pub(crate) fn pop(&mut self, out: &mut [i16]) -> Option<()> {
        let (cap, frame) = (self.capacity, self.frame);
        if !self.primed && self.len < self.prime_samples() {
            return None;
        }
        if self.len < frame {
            self.primed = false;
            return None;
        }
        self.primed = true;
        let first = frame.min(cap - self.start);
        out[..first].copy_from_slice(&self.samples[self.start..self.start + first]);
        out[first..frame].copy_from_slice(&self.samples[..frame - first]);
        self.start = (self.start + frame) % cap;
        self.len -= frame;
        Some(())
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[derive(Clone, Copy)]
struct Held {
    used: bool,
    seq: u16,
    len: u16,
    bytes: [u8; HELD_BYTES],
}

/// Puts a party's packets back in sequence order before they are decoded: a packet that
/// arrives ahead of a missing one is held until the missing one comes, or until
/// [`REORDER_PACKETS`] are held (it is then taken as lost). A packet behind what was already
/// decoded is too late and dropped: decoding it then would scramble the audio.
pub(crate) struct Reorder {
    /// The sequence number decoded next; `None` before the first packet.
    next: Option<u16>,
    held: [Held; REORDER_PACKETS],
}

/// What [`Reorder::offer`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offered {
    /// Handed on (perhaps with held ones after it) or held for later.
    Taken,
    /// Behind what was already decoded, or a duplicate of one held: dropped.
    Late,
}

impl Reorder {
    pub(crate) fn new() -> Self {
        Reorder {
            next: None,
            held: [Held {
                used: false,
                seq: 0,
                len: 0,
                bytes: [0; HELD_BYTES],
            }; REORDER_PACKETS],
        }
    }

    /// Takes the packet numbered `seq`; hands every payload now in order to `deliver`.
    pub(crate) fn offer(
        &mut self,
        seq: u16,
        payload: &[u8],
        mut deliver: impl FnMut(&[u8]),
    ) -> Offered {
        let Some(next) = self.next else {
            self.next = Some(seq.wrapping_add(1));
            deliver(payload);
            return Offered::Taken;
        };
        let ahead = seq.wrapping_sub(next) as i16;
        if ahead == 0 {
            self.next = Some(seq.wrapping_add(1));
            deliver(payload);
            self.drain(&mut deliver);
            return Offered::Taken;
        }
        if (-RESYNC_DISTANCE..0).contains(&ahead) {
            return Offered::Late;
        }
        if ahead < 0 || ahead as usize > REORDER_PACKETS || payload.len() > HELD_BYTES {
            // The gap is longer than the window (or the sender restarted, or the packet cannot
            // be held): what is held goes first, then this packet, and the window moves on.
            self.flush(&mut deliver);
            self.next = Some(seq.wrapping_add(1));
            deliver(payload);
            return Offered::Taken;
        }
        if self.held.iter().any(|h| h.used && h.seq == seq) {
            return Offered::Late;
        }
        let Some(free) = self.held.iter_mut().find(|h| !h.used) else {
            // Unreachable: a full window is flushed as soon as it fills.
            self.flush(&mut deliver);
            deliver(payload);
            return Offered::Taken;
        };
        free.used = true;
        free.seq = seq;
        free.len = payload.len() as u16;
        free.bytes[..payload.len()].copy_from_slice(payload);
        if self.held.iter().all(|h| h.used) {
            // Waited the whole window for the missing packet: it is lost.
            self.flush(&mut deliver);
        }
        Offered::Taken
    }

    /// Hands on every held packet in sequence order, skipping the gaps.
    fn flush(&mut self, deliver: &mut impl FnMut(&[u8])) {
        let Some(next) = self.next else { return };
        while let Some(first) = self
            .held
            .iter()
            .filter(|h| h.used)
            .map(|h| h.seq)
            .min_by_key(|&s| s.wrapping_sub(next))
        {
            self.next = Some(first);
            self.drain(deliver);
        }
    }

    /// Hands on the held packets that follow on from `next` without a gap.
    fn drain(&mut self, deliver: &mut impl FnMut(&[u8])) {
        while let Some(next) = self.next {
            let Some(h) = self.held.iter_mut().find(|h| h.used && h.seq == next) else {
                return;
            };
            h.used = false;
            self.next = Some(next.wrapping_add(1));
            deliver(&h.bytes[..h.len as usize]);
        }
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
    /// What went out: our SR's sender info (`crate::rtcp`).
    sent: SentStream,
    /// The RTP clock.
    clock_hz: u32,
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
            sent: SentStream::default(),
            clock_hz: codec.codec.rtp_clock_hz(),
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

/// Buffers a mix works through, one set per monitor or conference.
pub(crate) struct Scratch {
    decoded: [i16; MAX_DECODED],
    native: [i16; MAX_FRAME],
    frame: [i16; MAX_FRAME],
    payload: [u8; MAX_PAYLOAD],
}

impl Scratch {
    pub(crate) fn new() -> Self {
        Scratch {
            decoded: [0; MAX_DECODED],
            native: [0; MAX_FRAME],
            frame: [0; MAX_FRAME],
            payload: [0; MAX_PAYLOAD],
        }
    }
}

/// One participant of a mix: its codec both ways, the resamplers to and from the mix rate,
/// its reorder window and FIFO, and its outgoing stream.
pub(crate) struct MixParty {
    codec: LegCodec,
    decode: Decode,
    encode: Encode,
    /// Native rate → mix rate, and back; `None` where they are the same.
    into_mix: Option<Box<Resampler>>,
    out_of_mix: Option<Box<Resampler>>,
    reorder: Reorder,
    fifo: SampleFifo,
    out: OutStream,
    pub(crate) id: ParticipantId,
}

impl MixParty {
    pub(crate) fn new(
        codec: LegCodec,
        rate: MixRate,
        seed: u64,
        id: ParticipantId,
    ) -> Result<Self, CodecError> {
        let native = native_hz(codec.codec, rate);
        let resampler = |from: u32, to: u32| -> Result<Option<Box<Resampler>>, CodecError> {
            if from == to {
                return Ok(None);
            }
            Resampler::new(from, to, 20)
                .map(|r| Some(Box::new(r)))
                .map_err(|_| CodecError::Rejected)
        };
        Ok(MixParty {
            codec,
            decode: Decode::new(codec.codec, native)?,
            encode: Encode::new(codec.codec, native)?,
            into_mix: resampler(native, rate.hz())?,
            out_of_mix: resampler(rate.hz(), native)?,
            reorder: Reorder::new(),
            fifo: SampleFifo::new(native as usize / 50),
            out: OutStream::new(codec, seed),
            id,
        })
    }

    /// The same party in a mix at another rate, as participant `id`: its codec states are made
    /// again (allocates), its outgoing stream runs on.
    pub(crate) fn at_rate(&self, rate: MixRate, id: ParticipantId) -> Result<Self, CodecError> {
        let mut again = MixParty::new(self.codec, rate, 0, id)?;
        again.out = self.out;
        Ok(again)
    }

    /// Takes an RTP packet from the party's peer; returns how many packets were decoded into
    /// the FIFO (0 while it waits in the reorder window). Refused: not the party's audio
    /// payload type (muxed RTCP, telephone events), an empty payload, a packet too late.
    pub(crate) fn feed(&mut self, packet: &[u8], scratch: &mut Scratch) -> Result<u32, CodecError> {
        if packet.len() < HEADER_LEN || packet[1] & 0x7f != self.codec.payload_type & 0x7f {
            return Err(CodecError::Rejected);
        }
        let payload = crate::rtp::rtp_payload(packet)
            .filter(|p| !p.is_empty())
            .ok_or(CodecError::Rejected)?;
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let (decode, fifo) = (&mut self.decode, &mut self.fifo);
        let mut decoded = 0;
        let mut result = Ok(());
        let offered = self.reorder.offer(seq, payload, |p| {
            match decode.decode(p, &mut scratch.decoded) {
                Ok(n) => {
                    fifo.push(&scratch.decoded[..n]);
                    decoded += 1;
                }
                Err(e) => result = Err(e),
            }
        });
        if offered == Offered::Late {
            return Err(CodecError::Rejected);
        }
        result.map(|()| decoded)
    }

    /// Gives the mixer this party's next frame, at the mix rate, if it has one.
    pub(crate) fn pop_into(&mut self, mixer: &mut Mixer, scratch: &mut Scratch) {
        if self.fifo.pop(&mut scratch.native).is_none() {
            return;
        }
        let frame = self.fifo.frame;
        let pcm = match self.into_mix.as_mut() {
            None => &scratch.native[..frame],
            Some(r) => match r.process(&scratch.native[..frame], &mut scratch.frame) {
                Ok(n) => &scratch.frame[..n],
                Err(_) => return,
            },
        };
        // The mixer takes frames of its own length: this one always fits.
        let _ = mixer.set_input(self.id, pcm);
    }

    /// Sends what this party hears from the last mix (when it `hears` one) to `send(header,
    /// payload)`, which says whether it was sent; the stream's clock moves on a frame either
    /// way. Returns whether a packet went; one that went is counted for our reports, as sent at
    /// `now_ns`.
    pub(crate) fn send_mixed(
        &mut self,
        mixer: &Mixer,
        hears: bool,
        scratch: &mut Scratch,
        now_ns: u64,
        send: impl FnOnce(&[u8], &[u8]) -> bool,
    ) -> bool {
        let restart = hears && !self.out.sending;
        self.out.sending = hears;
        let mut sent = false;
        if hears {
            if let Ok(len) = self.encode_mixed(mixer, scratch) {
                if send(&self.out.header(restart), &scratch.payload[..len]) {
                    self.out.sent.on_sent_parts(self.out.ts, len, true, now_ns);
                    self.out.seq = self.out.seq.wrapping_add(1);
                    sent = true;
                } else {
                    // Not sent (no address yet, a clip playing): mark the next one.
                    self.out.sending = false;
                }
            }
        }
        self.out.ts = self.out.ts.wrapping_add(self.out.frame_ticks);
        sent
    }

    /// Our stream to this party: its SSRC, what it sent, and its RTP clock (for our reports).
    pub(crate) fn stream(&self) -> (u32, SentStream, u32) {
        (self.out.ssrc, self.out.sent, self.out.clock_hz)
    }

    fn encode_mixed(&mut self, mixer: &Mixer, scratch: &mut Scratch) -> Result<usize, CodecError> {
        let mixed = mixer.output(self.id).map_err(|_| CodecError::Rejected)?;
        let pcm = match self.out_of_mix.as_mut() {
            None => mixed,
            Some(r) => {
                let n = r
                    .process(mixed, &mut scratch.native)
                    .map_err(|_| CodecError::Rejected)?;
                &scratch.native[..n]
            }
        };
        self.encode.encode(pcm, &mut scratch.payload)
    }

    /// Lets `n` frames pass unmixed (a late core): the stream's clock moves on.
    pub(crate) fn skip(&mut self, n: u32) {
        self.out.ts = self
            .out
            .ts
            .wrapping_add(n.wrapping_mul(self.out.frame_ticks));
    }
}

const NONE: u32 = u32::MAX;

/// What a [`MixTable`] needs of a mix: the sessions taking part in it.
pub trait MixSessions {
    fn each_session(&self, f: impl FnMut(u32));
}

/// The mixes of one kind on one core (monitors, conferences), each boxed and found by any
/// session taking part; a session takes part in at most one, so the list never outgrows the
/// capacity given at start. They share one 20 ms grid.
pub struct MixTable<T> {
    pub(crate) active: Vec<Box<T>>,
    /// Per session index: index into `active` of the mix it takes part in, or NONE.
    position: Box<[u32]>,
    grid: FrameGrid,
}

impl<T: MixSessions> MixTable<T> {
    pub fn new(sessions: u32) -> Self {
        MixTable {
            active: Vec::with_capacity(sessions as usize / 2 + 1),
            position: vec![NONE; sessions as usize].into_boxed_slice(),
            grid: FrameGrid::default(),
        }
    }

    /// Mixes now.
    pub fn len(&self) -> usize {
        self.active.len()
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Whether `index` is a session index of this core.
    pub(crate) fn in_range(&self, index: u32) -> bool {
        (index as usize) < self.position.len()
    }

    /// Index into `active` of the mix session `index` takes part in.
    pub(crate) fn at(&self, index: u32) -> Option<usize> {
        let at = *self.position.get(index as usize)?;
        (at != NONE).then_some(at as usize)
    }

    /// Whether session `index` takes part in a mix.
    pub fn contains(&self, index: u32) -> bool {
        self.at(index).is_some()
    }

    pub(crate) fn find(&self, index: u32) -> Option<&T> {
        self.at(index).map(|at| &*self.active[at])
    }

    pub(crate) fn find_mut(&mut self, index: u32) -> Option<&mut T> {
        self.at(index).map(|at| &mut *self.active[at])
    }

    /// Adds a mix (its sessions must be free); the grid starts with the first. Returns its
    /// index.
    pub(crate) fn push(&mut self, mix: Box<T>, now_ns: u64) -> usize {
        if self.active.is_empty() {
            self.grid.restart(now_ns);
        }
        let at = self.active.len();
        mix.each_session(|s| self.position[s as usize] = at as u32);
        self.active.push(mix);
        at
    }

    /// Records that session `index` now takes part in mix `at` (`None`: in none).
    pub(crate) fn set(&mut self, index: u32, at: Option<usize>) {
        self.position[index as usize] = at.map_or(NONE, |at| at as u32);
    }

    /// Removes mix `at`, freeing its sessions.
    pub(crate) fn remove(&mut self, at: usize) -> Box<T> {
        let gone = self.active.swap_remove(at);
        let position = &mut self.position;
        gone.each_session(|s| position[s as usize] = NONE);
        if let Some(moved) = self.active.get(at) {
            moved.each_session(|s| position[s as usize] = at as u32);
        }
        gone
    }

    /// Frames due at `now` (0 with no mix); moves the grid past them.
    pub fn due(&mut self, now_ns: u64) -> u32 {
        self.grid.due(now_ns, !self.active.is_empty())
    }

    pub fn sleep_hint_ns(&self, now_ns: u64) -> Option<u64> {
        self.grid.sleep_hint_ns(now_ns, !self.active.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer_all(r: &mut Reorder, seqs: &[u16]) -> (Vec<u16>, usize) {
        let mut out = Vec::new();
        let mut late = 0;
        for &s in seqs {
            let payload = s.to_be_bytes();
            if r.offer(s, &payload, |p| out.push(u16::from_be_bytes([p[0], p[1]]))) == Offered::Late
            {
                late += 1;
            }
        }
        (out, late)
    }

    #[test]
    fn reordered_packets_come_out_in_sequence() {
        let mut r = Reorder::new();
        // Swapped pairs, a packet three late, across the sequence number's wrap.
        let (out, late) = offer_all(&mut r, &[65533, 65535, 65534, 1, 0, 2, 5, 3, 4, 6, 7, 8]);
        assert_eq!(late, 0);
        assert_eq!(out, [65533, 65534, 65535, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn a_lost_packet_is_given_up_after_the_window_and_a_late_one_dropped() {
        let mut r = Reorder::new();
        // 11 never comes: 12, 13 wait; 14 fills the window, so 11 is taken as lost.
        let (out, late) = offer_all(&mut r, &[10, 12, 13]);
        assert_eq!((out.as_slice(), late), (&[10u16][..], 0));
        let (out, _) = offer_all(&mut r, &[14]);
        assert_eq!(out, [12, 13, 14]);
        // 11 now is too late; so is a duplicate of 14; 15 follows on.
        let (out, late) = offer_all(&mut r, &[11, 14, 15]);
        assert_eq!((out.as_slice(), late), (&[15u16][..], 2));
        // A jump past the window: what is held goes first, then the jump.
        let (out, _) = offer_all(&mut r, &[17, 30, 31]);
        assert_eq!(out, [17, 30, 31]);
        // A sender that restarts far ahead or far behind starts the window again.
        let (out, late) = offer_all(&mut r, &[5000, 5001, 100, 101]);
        assert_eq!((out.as_slice(), late), (&[5000u16, 5001, 100, 101][..], 0));
    }

    proptest::proptest! {
        /// Packets shuffled within runs of three (less than the window) come out complete
        /// and in order, from any starting sequence number, across its wrap.
        #[test]
        fn shuffles_within_the_window_are_undone(
            start: u16,
            orders in proptest::collection::vec(0usize..6, 1..40),
        ) {
            const PERMUTATIONS: [[u16; 3]; 6] =
                [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
            let seqs: Vec<u16> = orders
                .iter()
                .enumerate()
                .flat_map(|(block, &o)| {
                    PERMUTATIONS[o].map(|k| start.wrapping_add(3 * block as u16 + k))
                })
                .collect();
            let mut r = Reorder::new();
            // The first packet sets where the window starts: lead with the block's first.
            let (mut out, late) = offer_all(&mut r, &[start.wrapping_sub(1)]);
            let (more, more_late) = offer_all(&mut r, &seqs);
            out.extend(more);
            proptest::prop_assert_eq!(late + more_late, 0);
            let want: Vec<u16> = (0..=seqs.len() as u16)
                .map(|k| start.wrapping_sub(1).wrapping_add(k))
                .collect();
            proptest::prop_assert_eq!(out, want);
        }

        /// Any arrival whatever: no panic, nothing handed on twice in a row, never more out
        /// than in.
        #[test]
        fn any_arrival_order_is_taken_without_panic(seqs in proptest::collection::vec(0u16..200, 0..200)) {
            let mut r = Reorder::new();
            let (out, late) = offer_all(&mut r, &seqs);
            proptest::prop_assert!(out.len() + late <= seqs.len());
            proptest::prop_assert!(out.windows(2).all(|w| w[0] != w[1]));
        }
    }

    #[test]
    fn the_fifo_wraps_trims_to_its_length_and_reprimes_when_dry() {
        const FRAME: usize = 160;
        let cap = FIFO_FRAMES * FRAME;
        let mut f = SampleFifo::new(FRAME);
        let mut out = [0i16; MAX_FRAME];
        let ramp: Vec<i16> = (0..cap as i16 + 100).collect();
        f.push(&ramp[..100]);
        assert!(f.pop(&mut out).is_none(), "priming");
        f.push(&ramp[100..300]);
        assert!(f.pop(&mut out).is_some());
        assert_eq!(out[0], 0);
        assert!(f.pop(&mut out).is_none(), "140 left: dry");
        // Overfull: the oldest go, the newest stay, across the ring's end.
        f.push(&ramp);
        assert_eq!(f.len(), cap);
        assert!(f.pop(&mut out).is_some());
        assert_eq!(out[0], 100);
        assert_eq!(out[FRAME - 1], 100 + FRAME as i16 - 1);
    }
}
