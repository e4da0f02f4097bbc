//! Repacketisation: one transcoded direction whose receiver wants another packet duration
//! (ptime) than the sender sends, e.g. PCMA at 20 ms in and G.729 at 30 ms out.
//!
//! Decoded audio (at the encoder's rate) is held until it fills an output frame, which is then
//! encoded straight into a small queue of finished packets that the core drains after each
//! input packet. Our sequence numbers count output packets; timestamps follow the sender's
//! timeline (rescaled to the output clock), so an output frame starts at the sender's
//! timestamp of its first sample. A gap in the sender's timestamps (loss, silence) pads the
//! frame being filled with silence, then skips whole frames (their sequence numbers too, so the
//! receiver sees the loss), then pads the start of the frame the next audio lands in. A packet
//! from before what is held (reordered, duplicated) is too late to place and is dropped.
//!
//! Everything is sized in [`Repacketiser::new`] (the held frame and the queue); nothing is
//! allocated per packet.

use crate::transcode::Skip;

/// Longest output packet duration, ms.
pub const MAX_PTIME_MS: u32 = 60;

/// Packets one input packet can finish: its audio (up to 120 ms) in 10 ms frames, plus one
/// frame padded before it and one after a gap.
const MAX_QUEUED: usize = 16;

/// Bytes the queued payloads may take: 16 frames of the largest we produce (60 ms of G.711 or
/// G.722, 480 bytes; Opus frames stay under its 400-byte cap).
const QUEUE_BYTES: usize = MAX_QUEUED * 480;

/// A sender gap longer than this (in its own clock's seconds) is a new stream, not silence.
const MAX_GAP_S: u32 = 60;

#[derive(Debug, Clone, Copy, Default)]
struct Queued {
    start: u16,
    len: u16,
    seq: u16,
    ts: u32,
    marker: bool,
    pt: u8,
}

/// Where the audio held so far ends in the sender's stream.
#[derive(Debug, Clone, Copy)]
struct InputEnd {
    ssrc: u32,
    /// Sequence number and timestamp the next contiguous packet has.
    seq: u16,
    ts: u32,
}

/// The re-framing state of one direction (see the module doc).
pub struct Repacketiser {
    /// Payload type of the audio packets.
    audio_pt: u8,
    /// Samples per output frame at the encoder's rate, and their RTP ticks.
    frame: usize,
    frame_ticks: u32,
    enc_rate_hz: u32,
    in_clock_hz: u32,
    out_clock_hz: u32,
    held: Box<[i16]>,
    held_len: usize,
    end: Option<InputEnd>,
    /// Our sequence number and timestamp for the frame being filled, and its marker.
    seq: u16,
    ts: u32,
    mark: bool,
    queue: PacketQueue,
}

impl Repacketiser {
    /// A repacketiser emitting `ptime_ms` frames of audio at `enc_rate_hz`, on an RTP clock of
    /// `out_clock_hz`, for a sender on a clock of `in_clock_hz`; our stream starts at `seq`,
    /// `ts`, audio with payload type `audio_pt`. `None` for a ptime that is not a whole
    /// number of ticks, or over the maximum.
    pub fn new(
        audio_pt: u8,
        ptime_ms: u32,
        enc_rate_hz: u32,
        in_clock_hz: u32,
        out_clock_hz: u32,
        seq: u16,
        ts: u32,
    ) -> Option<Self> {
        if ptime_ms == 0 || ptime_ms > MAX_PTIME_MS {
            return None;
        }
        let whole = |rate: u32| {
            (rate * ptime_ms)
                .is_multiple_of(1000)
                .then_some(rate * ptime_ms / 1000)
        };
        let frame = whole(enc_rate_hz)? as usize;
        let frame_ticks = whole(out_clock_hz)?;
        Some(Repacketiser {
            audio_pt,
            frame,
            frame_ticks,
            enc_rate_hz,
            in_clock_hz,
            out_clock_hz,
            held: vec![0; frame].into_boxed_slice(),
            held_len: 0,
            end: None,
            seq,
            ts,
            mark: true,
            queue: PacketQueue::new(),
        })
    }

    /// Samples per output frame at the encoder's rate.
    pub fn frame_samples(&self) -> usize {
        self.frame
    }

    /// Where the sender's next contiguous packet continues: its SSRC, sequence number and
    /// timestamp.
    pub fn next_input(&self) -> Option<(u32, u16, u32)> {
        self.end.map(|e| (e.ssrc, e.seq, e.ts))
    }

    /// Ticks of the sender's clock in `samples` at the encoder's rate.
    fn in_ticks(&self, samples: usize) -> u32 {
        (samples as u64 * self.in_clock_hz as u64 / self.enc_rate_hz as u64) as u32
    }

    /// Adds `pcm` (audio at the encoder's rate) from the sender's packet `seq`/`ts` of stream
    /// `ssrc`, encoding each frame it completes with `encode` into the queue.
    pub fn push_audio(
        &mut self,
        ssrc: u32,
        seq: u16,
        ts: u32,
        marker: bool,
        pcm: &[i16],
        encode: &mut impl FnMut(&[i16], &mut [u8]) -> Result<(usize, usize), Skip>,
    ) -> Result<(), Skip> {
        self.queue.reset_if_drained();
        self.place(ssrc, seq, ts, encode)?;
        self.mark |= marker;
        self.push_samples(pcm, encode);
        self.end = Some(InputEnd {
            ssrc,
            seq: seq.wrapping_add(1),
            ts: ts.wrapping_add(self.in_ticks(pcm.len())),
        });
        Ok(())
    }

    /// Positions the held audio for a packet at `seq`/`ts`: a new stream flushes what is held,
    /// a gap pads and skips, a packet from the past is refused.
    fn place(
        &mut self,
        ssrc: u32,
        seq: u16,
        ts: u32,
        encode: &mut impl FnMut(&[i16], &mut [u8]) -> Result<(usize, usize), Skip>,
    ) -> Result<(), Skip> {
        let Some(end) = self.end.filter(|e| e.ssrc == ssrc) else {
            self.new_stream(encode);
            return Ok(());
        };
        let dseq = seq.wrapping_sub(end.seq) as i16;
        let dts = ts.wrapping_sub(end.ts) as i32;
        if dts as i64 > (MAX_GAP_S * self.in_clock_hz) as i64 || dts < -(self.in_clock_hz as i32) {
            // The sender restarted its timeline: a new stream of ours, after what we sent.
            self.new_stream(encode);
            return Ok(());
        }
        if dseq < 0 || dts < 0 {
            return Err(Skip::Late);
        }
        let gap = (dts as u64 * self.enc_rate_hz as u64 / self.in_clock_hz as u64) as usize;
        if gap == 0 {
            return Ok(());
        }
        // Pad the frame being filled (if one is), skip the frames the gap covers, pad the
        // start of the frame the packet lands in.
        let fill = if self.held_len == 0 {
            0
        } else {
            gap.min(self.frame - self.held_len)
        };
        self.push_silence(fill, encode);
        let rest = gap - fill;
        let skipped = rest / self.frame;
        self.seq = self.seq.wrapping_add(skipped as u16);
        self.ts = self
            .ts
            .wrapping_add((skipped as u32).wrapping_mul(self.frame_ticks));
        self.push_silence(rest % self.frame, encode);
        Ok(())
    }

    /// A new input stream: what is held goes out padded with silence, our stream continues
    /// after it, marked.
    fn new_stream(
        &mut self,
        encode: &mut impl FnMut(&[i16], &mut [u8]) -> Result<(usize, usize), Skip>,
    ) {
        if self.held_len > 0 {
            self.push_silence(self.frame - self.held_len, encode);
        }
        self.end = None;
        self.mark = true;
    }

    fn push_silence(
        &mut self,
        mut n: usize,
        encode: &mut impl FnMut(&[i16], &mut [u8]) -> Result<(usize, usize), Skip>,
    ) {
        while n > 0 {
            let take = n.min(self.frame - self.held_len);
            self.held[self.held_len..self.held_len + take].fill(0);
            self.held_len += take;
            n -= take;
            self.emit_if_full(encode);
        }
    }

    fn push_samples(
        &mut self,
        mut pcm: &[i16],
        encode: &mut impl FnMut(&[i16], &mut [u8]) -> Result<(usize, usize), Skip>,
    ) {
        while !pcm.is_empty() {
            let take = pcm.len().min(self.frame - self.held_len);
            self.held[self.held_len..self.held_len + take].copy_from_slice(&pcm[..take]);
            self.held_len += take;
            pcm = &pcm[take..];
            self.emit_if_full(encode);
        }
    }

    /// Encodes the held frame into the queue once it is full. A frame the encoder refuses or
    /// the queue has no room for is lost (its sequence number too: the receiver sees a loss).
    /// A frame the encoder's DTX leaves untransmitted is no loss: its sequence number goes to
    /// the next frame sent, which is marked (a talkspurt's first). A payload that starts after
    /// untransmitted samples (G.729 VAD) is stamped where it starts.
    fn emit_if_full(
        &mut self,
        encode: &mut impl FnMut(&[i16], &mut [u8]) -> Result<(usize, usize), Skip>,
    ) {
        if self.held_len < self.frame {
            return;
        }
        let held = &self.held;
        let mut lead = 0;
        let pushed = self
            .queue
            .push(self.seq, self.ts, self.mark, self.audio_pt, |buf| {
                let (len, skipped) = encode(held, buf)?;
                lead = skipped;
                Ok(len)
            });
        self.held_len = 0;
        self.ts = self.ts.wrapping_add(self.frame_ticks);
        match pushed {
            Err(Skip::Untransmitted) => self.mark = true,
            // A refused frame is lost; its sequence number still goes (see above).
            result => {
                if result.is_ok() && lead > 0 {
                    let ticks = lead as u64 * self.out_clock_hz as u64 / self.enc_rate_hz as u64;
                    self.queue.delay_last(ticks as u32);
                }
                self.seq = self.seq.wrapping_add(1);
                self.mark = false;
            }
        }
    }

    /// Queues a telephone event from the sender's packet at `ts` (its payload written by
    /// `write`): sent at once, in our sequence, at the output timestamp of its input one.
    pub fn push_event(
        &mut self,
        ssrc: u32,
        ts: u32,
        marker: bool,
        pt: u8,
        write: impl FnOnce(&mut [u8]) -> Result<usize, Skip>,
    ) -> Result<(), Skip> {
        self.queue.reset_if_drained();
        let held_ticks =
            (self.held_len as u64 * self.out_clock_hz as u64 / self.enc_rate_hz as u64) as u32;
        let out_ts = match self.end.filter(|e| e.ssrc == ssrc) {
            Some(end) => {
                let dts = ts.wrapping_sub(end.ts) as i32 as i64;
                let scaled = dts * self.out_clock_hz as i64 / self.in_clock_hz as i64;
                self.ts
                    .wrapping_add(held_ticks)
                    .wrapping_add(scaled as i32 as u32)
            }
            None => self.ts.wrapping_add(held_ticks),
        };
        let seq = self.seq;
        // The audio frame being filled takes the sequence number after the event's.
        self.seq = self.seq.wrapping_add(1);
        self.queue.push(seq, out_ts, marker, pt, write)
    }

    /// Packets queued and not yet taken.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Writes the oldest queued packet (our header with `ssrc`, then its payload) into `out`;
    /// its length, or `None` when nothing is queued (or `out` cannot hold it).
    pub fn pop(&mut self, ssrc: u32, out: &mut [u8]) -> Option<usize> {
        self.queue.pop(ssrc, out)
    }
}

/// Finished packets of one direction, waiting for the core to take them; their payloads in
/// one buffer. Emptied by taking them all, then reused from the start.
struct PacketQueue {
    entries: [Queued; MAX_QUEUED],
    queued: usize,
    popped: usize,
    bytes: Box<[u8]>,
    bytes_used: usize,
}

impl PacketQueue {
    fn new() -> Self {
        PacketQueue {
            entries: [Queued::default(); MAX_QUEUED],
            queued: 0,
            popped: 0,
            bytes: vec![0; QUEUE_BYTES].into_boxed_slice(),
            bytes_used: 0,
        }
    }

    fn len(&self) -> usize {
        self.queued - self.popped
    }

    /// Starts afresh once everything was taken.
    fn reset_if_drained(&mut self) {
        if self.popped == self.queued {
            self.queued = 0;
            self.popped = 0;
            self.bytes_used = 0;
        }
    }

    /// Queues a packet whose payload `write` puts into the buffer it is given.
    fn push(
        &mut self,
        seq: u16,
        ts: u32,
        marker: bool,
        pt: u8,
        write: impl FnOnce(&mut [u8]) -> Result<usize, Skip>,
    ) -> Result<(), Skip> {
        if self.queued == MAX_QUEUED {
            return Err(Skip::TooLarge);
        }
        let start = self.bytes_used;
        let len = write(&mut self.bytes[start..])?;
        self.entries[self.queued] = Queued {
            start: start as u16,
            len: len as u16,
            seq,
            ts,
            marker,
            pt,
        };
        self.queued += 1;
        self.bytes_used += len;
        Ok(())
    }

    /// Moves the timestamp of the packet queued last `ticks` later.
    fn delay_last(&mut self, ticks: u32) {
        if let Some(q) = self.queued.checked_sub(1).map(|i| &mut self.entries[i]) {
            q.ts = q.ts.wrapping_add(ticks);
        }
    }

    fn pop(&mut self, ssrc: u32, out: &mut [u8]) -> Option<usize> {
        if self.popped == self.queued {
            return None;
        }
        let q = self.entries[self.popped];
        let (start, len) = (q.start as usize, q.len as usize);
        let total = crate::transcode::HEADER_LEN + len;
        let out = out.get_mut(..total)?;
        self.popped += 1;
        crate::transcode::write_header(out, q.marker, q.pt, q.seq, q.ts, ssrc);
        out[crate::transcode::HEADER_LEN..].copy_from_slice(&self.bytes[start..start + len]);
        Some(total)
    }
}
