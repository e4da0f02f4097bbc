//! Playback: clips sent as RTP to one leg's peer, every 20 ms, from the core's loop: a few
//! once each (an announcement), then one in a loop (the hold music), or nothing
//! ([`PLAY_ONCE_ONLY`]: the player finishes and the core stops it).
//!
//! Pure state, no sockets and no clock: the core asks [`Players::due`] how many frames are due
//! at `now` (one shared 20 ms grid per core, so every playing leg goes out in the same batch),
//! then takes each player's next header with [`Player::next_packet`] and sends it with the
//! clip's frame. The list of players is sized at start (two per session) and never grows.

use crate::api::{ClipSequence, LegIndex, PLAY_ONCE_ONLY};
use crate::clip::FRAME_SAMPLES;
use crate::rtcp::SentStream;
use tandem_media::g711::Law;

/// One packet every 20 ms.
pub const FRAME_NS: u64 = 20_000_000;

/// After a stall, at most this many frames per player go out at once; the rest are skipped
/// (their timestamps pass without packets), so a late core does not flood a jitter buffer.
pub const MAX_BURST: u32 = 3;

const NONE: u32 = u32::MAX;

/// The RTP stream one leg is being played: optionally a few clips once each (an announcement),
/// then one clip in a loop (the hold music).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Player {
    /// `session index * 2 + leg`.
    pub key: u32,
    /// Index into the core's clips of the clip playing now.
    pub clip: u16,
    pub payload_type: u8,
    pub law: Law,
    pub ssrc: u32,
    /// Sequence number and timestamp of the next packet.
    pub seq: u16,
    pub ts: u32,
    /// Next frame of `clip`.
    pub frame: u32,
    /// The next packet carries the marker bit (start of a talkspurt).
    pub marker: bool,
    /// The clips played once; `clip` is `once[next_once - 1]` while `next_once` is not 0 and
    /// `clip` is not looping.
    pub once: ClipSequence,
    pub next_once: u8,
    /// The clip looped after `once` (a loop continues seq and ts), or [`PLAY_ONCE_ONLY`].
    pub then: u16,
    /// `clip` is `then`: it wraps at its end instead of moving on.
    pub looping: bool,
    /// `then` is [`PLAY_ONCE_ONLY`] and the last frame of `once` has gone (or passed unsent):
    /// nothing more to send; the core stops the player and reports it.
    pub finished: bool,
    /// What went out (noted by the core as each packet is queued): our SR's sender info.
    pub sent: SentStream,
}

/// RTP fixed header length (no CSRCs, no extension).
pub const HEADER_LEN: usize = 12;

impl Player {
    /// A new stream to the leg of `key`: marker on its first packet, looping clip 0 until
    /// [`Player::set_clips`] says what to play.
    pub fn new(key: u32, payload_type: u8, law: Law, ssrc: u32, seq: u16, ts: u32) -> Self {
        Player {
            key,
            clip: 0,
            payload_type,
            law,
            ssrc,
            seq,
            ts,
            frame: 0,
            marker: true,
            once: ClipSequence::EMPTY,
            next_once: 0,
            then: 0,
            looping: true,
            finished: false,
            sent: Default::default(),
        }
    }

    pub fn key(index: u32, leg: LegIndex) -> u32 {
        index * 2 + leg as u32
    }

    pub fn session(&self) -> u32 {
        self.key / 2
    }

    pub fn leg(&self) -> LegIndex {
        if self.key & 1 == 0 {
            LegIndex::A
        } else {
            LegIndex::B
        }
    }

    /// Points the player at `once` then `then` from their first frame; the stream (SSRC,
    /// sequence, timestamp, marker) is left as it is.
    pub fn set_clips(&mut self, once: ClipSequence, then: u16) {
        self.once = once;
        self.then = then;
        self.frame = 0;
        self.finished = false;
        match once.as_slice().first() {
            Some(&first) => {
                self.clip = first;
                self.next_once = 1;
                self.looping = false;
            }
            None => {
                self.clip = then;
                self.next_once = 0;
                self.looping = true;
            }
        }
    }

    /// The next packet's RTP header, clip and frame; advances seq, timestamp and frame.
    /// `frames_of(clip)` is a clip's length in frames (at least 1).
    pub fn next_packet(&mut self, frames_of: impl Fn(u16) -> u32) -> ([u8; HEADER_LEN], u16, u32) {
        let mut h = [0u8; HEADER_LEN];
        h[0] = 0x80;
        h[1] = (self.marker as u8) << 7 | (self.payload_type & 0x7f);
        h[2..4].copy_from_slice(&self.seq.to_be_bytes());
        h[4..8].copy_from_slice(&self.ts.to_be_bytes());
        h[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        let (clip, frame) = (self.clip, self.frame);
        self.marker = false;
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(FRAME_SAMPLES as u32);
        self.advance(1, frames_of);
        (h, clip, frame)
    }

    /// Lets `n` frames pass unsent: the timestamp and the clips move on, the sequence does not
    /// (nothing was lost; the receiver sees a gap in time, as after silence suppression).
    pub fn skip(&mut self, n: u32, frames_of: impl Fn(u16) -> u32) {
        self.ts = self.ts.wrapping_add(n.wrapping_mul(FRAME_SAMPLES as u32));
        self.advance(n, frames_of);
    }

    /// Moves `n` frames on: through the rest of the once-clips, then round the loop (or to
    /// `finished`, with nothing to loop).
    fn advance(&mut self, n: u32, frames_of: impl Fn(u16) -> u32) {
        if self.finished {
            return;
        }
        let mut at = self.frame as u64 + n as u64;
        // At most `MAX_SEQUENCE` + 1 turns: each moves to the next clip or returns.
        loop {
            let len = frames_of(self.clip).max(1) as u64;
            if at < len {
                break;
            }
            if self.looping {
                at %= len;
                break;
            }
            at -= len;
            match self.once.as_slice().get(self.next_once as usize) {
                Some(&next) => {
                    self.clip = next;
                    self.next_once += 1;
                }
                None if self.then == PLAY_ONCE_ONLY => {
                    self.finished = true;
                    at = 0;
                    break;
                }
                None => {
                    self.clip = self.then;
                    self.looping = true;
                }
            }
        }
        self.frame = at as u32;
    }
}

/// A core's 20 ms frame clock: when the next frame is due, and how many are due at `now`.
/// Playback and the supervisor mixer (`crate::monitor`) each pace their streams with one.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameGrid {
    next_tick_ns: u64,
}

impl FrameGrid {
    /// The next frame is due at once (the first stream on an idle grid).
    pub fn restart(&mut self, now_ns: u64) {
        self.next_tick_ns = now_ns;
    }

    /// Frames due at `now` (0 before the next tick, or when nothing `running` uses the grid);
    /// moves the grid past them.
    pub fn due(&mut self, now_ns: u64, running: bool) -> u32 {
        if !running || now_ns < self.next_tick_ns {
            return 0;
        }
        let n = (now_ns - self.next_tick_ns) / FRAME_NS + 1;
        self.next_tick_ns += n * FRAME_NS;
        n.min(u32::MAX as u64) as u32
    }

    /// How long until the next frame is due, when anything `running` uses the grid.
    pub fn sleep_hint_ns(&self, now_ns: u64, running: bool) -> Option<u64> {
        running.then(|| self.next_tick_ns.saturating_sub(now_ns))
    }
}

/// Every playing leg of one core.
pub struct Players {
    active: Vec<Player>,
    /// Per key: index into `active`, or NONE.
    position: Box<[u32]>,
    /// When the next frame of every player is due.
    grid: FrameGrid,
}

impl Players {
    pub fn new(sessions: u32) -> Self {
        let keys = sessions as usize * 2;
        Players {
            active: Vec::with_capacity(keys),
            position: vec![NONE; keys].into_boxed_slice(),
            grid: FrameGrid::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.active.len()
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    pub fn get(&self, i: usize) -> Player {
        self.active[i]
    }

    pub fn set(&mut self, i: usize, p: Player) {
        debug_assert_eq!(self.active[i].key, p.key);
        self.active[i] = p;
    }

    pub fn find(&self, key: u32) -> Option<&Player> {
        let at = *self.position.get(key as usize)?;
        (at != NONE).then(|| &self.active[at as usize])
    }

    /// Starts `p`, replacing whatever its leg was playing. The first player on an idle core
    /// sends at once; later ones join the core's 20 ms grid.
    pub fn start(&mut self, p: Player, now_ns: u64) {
        let k = p.key as usize;
        let at = self.position[k];
        if at != NONE {
            self.active[at as usize] = p;
            return;
        }
        if self.active.is_empty() {
            self.grid.restart(now_ns);
        }
        // Two keys per session slot and one entry per key: the capacity is never exceeded.
        debug_assert!(self.active.len() < self.active.capacity());
        self.position[k] = self.active.len() as u32;
        self.active.push(p);
    }

    /// Stops the leg's player; false when it was not playing.
    pub fn stop(&mut self, key: u32) -> bool {
        let k = key as usize;
        let at = self.position[k];
        if at == NONE {
            return false;
        }
        self.position[k] = NONE;
        self.active.swap_remove(at as usize);
        if let Some(moved) = self.active.get(at as usize) {
            self.position[moved.key as usize] = at;
        }
        true
    }

    /// Frames due per player at `now` (0 before the next tick); moves the grid past them.
    pub fn due(&mut self, now_ns: u64) -> u32 {
        self.grid.due(now_ns, !self.active.is_empty())
    }

    /// How long the core may sleep before the next frame is due, when anything plays.
    pub fn sleep_hint_ns(&self, now_ns: u64) -> Option<u64> {
        self.grid.sleep_hint_ns(now_ns, !self.active.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MAX_SEQUENCE;

    fn player(key: u32) -> Player {
        Player::new(key, 8, Law::Alaw, 0xdead_beef, 65_534, u32::MAX - 159)
    }

    fn seq_of(h: &[u8; HEADER_LEN]) -> u16 {
        u16::from_be_bytes([h[2], h[3]])
    }

    fn ts_of(h: &[u8; HEADER_LEN]) -> u32 {
        u32::from_be_bytes([h[4], h[5], h[6], h[7]])
    }

    #[test]
    fn headers_count_on_across_the_loop_and_wraps() {
        let mut p = player(3);
        assert_eq!((p.session(), p.leg()), (1, LegIndex::B));
        let mut frames = Vec::new();
        for i in 0..5u32 {
            let (h, c, f) = p.next_packet(|_| 2);
            assert_eq!(c, 0);
            frames.push(f);
            assert_eq!(h[0], 0x80);
            assert_eq!(h[1], if i == 0 { 0x80 | 8 } else { 8 });
            let seq = u16::from_be_bytes([h[2], h[3]]);
            let ts = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
            assert_eq!(seq, 65_534u16.wrapping_add(i as u16));
            assert_eq!(ts, (u32::MAX - 159).wrapping_add(160 * i));
            assert_eq!(&h[8..], &0xdead_beefu32.to_be_bytes());
        }
        assert_eq!(frames, [0, 1, 0, 1, 0]);
        let (seq, ts) = (p.seq, p.ts);
        p.skip(3, |_| 2);
        assert_eq!((p.seq, p.ts, p.frame), (seq, ts.wrapping_add(480), 0));
    }

    /// Clip lengths of the sequence tests: 0 the music (3 frames), 1 and 2 prompts (2 and 1).
    fn frames_of(clip: u16) -> u32 {
        [3, 2, 1][clip as usize]
    }

    #[test]
    fn a_sequence_plays_each_clip_once_then_loops_with_one_continuous_stream() {
        let mut p = player(0);
        // Music has played two frames when the announcement starts.
        p.next_packet(frames_of);
        p.next_packet(frames_of);
        let (seq0, ts0) = (p.seq, p.ts);
        p.set_clips(ClipSequence::new(&[1, 2, 1]).unwrap(), 0);
        let mut got = Vec::new();
        for i in 0..10u32 {
            let (h, c, f) = p.next_packet(frames_of);
            assert_eq!(seq_of(&h), seq0.wrapping_add(i as u16), "packet {i}");
            assert_eq!(ts_of(&h), ts0.wrapping_add(160 * i), "packet {i}");
            assert_eq!(h[1] & 0x80, 0, "no marker: the stream goes on");
            got.push((c, f));
        }
        assert_eq!(
            got,
            [
                (1, 0),
                (1, 1),
                (2, 0),
                (1, 0),
                (1, 1),
                // Back to the music, from its start, and round its loop.
                (0, 0),
                (0, 1),
                (0, 2),
                (0, 0),
                (0, 1)
            ]
        );
        assert!(p.looping);
    }

    /// A play-once sequence on the core's grid, in simulated time: exactly its frames go out,
    /// one per 20 ms tick, then the player is finished, sends nothing more and is stopped.
    #[test]
    fn a_once_only_sequence_sends_its_frames_then_finishes() {
        let mut ps = Players::new(2);
        let mut p = player(Player::key(1, LegIndex::A));
        p.set_clips(ClipSequence::new(&[1, 2]).unwrap(), PLAY_ONCE_ONLY);
        let t0 = 7_000;
        ps.start(p, t0);
        let mut got = Vec::new();
        let mut now = t0;
        while let Some(i) = (0..ps.len()).find(|&i| ps.get(i).key == p.key) {
            let mut q = ps.get(i);
            for _ in 0..ps.due(now) {
                if q.finished {
                    break;
                }
                let (h, c, f) = q.next_packet(frames_of);
                got.push((seq_of(&h), c, f, now));
            }
            ps.set(i, q);
            if q.finished {
                assert!(ps.stop(q.key));
            }
            now += FRAME_NS;
        }
        let seq0 = 65_534u16;
        assert_eq!(
            got,
            [
                (seq0, 1, 0, t0),
                (seq0.wrapping_add(1), 1, 1, t0 + FRAME_NS),
                (seq0.wrapping_add(2), 2, 0, t0 + 2 * FRAME_NS),
            ]
        );
        // Finished with the last frame's pass, not a frame later.
        assert_eq!(now, t0 + 3 * FRAME_NS);
        assert!(ps.is_empty() && ps.find(p.key).is_none());
        assert_eq!(ps.sleep_hint_ns(now), None, "an idle grid sets no wake-up");
    }

    #[test]
    fn a_once_only_sequence_finishes_across_skipped_frames_and_restarts_on_new_clips() {
        let mut p = player(0);
        p.set_clips(ClipSequence::new(&[1, 2]).unwrap(), PLAY_ONCE_ONLY);
        p.skip(2, frames_of);
        assert!(!p.finished);
        // A stall past the end: finished, and more time changes nothing.
        p.skip(5, frames_of);
        assert!(p.finished);
        let ts = p.ts;
        p.skip(1, frames_of);
        assert!(p.finished);
        assert_eq!(p.ts, ts.wrapping_add(160));
        // New clips on the same player play again.
        p.set_clips(ClipSequence::new(&[2]).unwrap(), 0);
        assert!(!p.finished);
        let (_, c, _) = p.next_packet(frames_of);
        let (_, c2, _) = p.next_packet(frames_of);
        assert_eq!((c, c2, p.looping), (2, 0, true));
    }

    #[test]
    fn skipping_crosses_clips_of_the_sequence_into_the_loop() {
        let mut p = player(0);
        p.set_clips(ClipSequence::new(&[1, 2]).unwrap(), 0);
        p.skip(2, frames_of);
        assert_eq!((p.clip, p.frame, p.looping), (2, 0, false));
        let ts = p.ts;
        // Three clips' worth and more: through clip 2 into the music, and round it.
        p.skip(1 + 3 + 2, frames_of);
        assert_eq!((p.clip, p.frame, p.looping), (0, 2, true));
        assert_eq!(p.ts, ts.wrapping_add(6 * 160));
        // An empty sequence is the plain loop.
        p.set_clips(ClipSequence::EMPTY, 1);
        assert_eq!((p.clip, p.frame, p.looping), (1, 0, true));
        let (_, c, f) = p.next_packet(frames_of);
        assert_eq!((c, f), (1, 0));
        assert_eq!(p.next_packet(frames_of).1, 1);
        assert_eq!(p.next_packet(frames_of).2, 0);
        assert!(ClipSequence::new(&[0; MAX_SEQUENCE + 1]).is_none());
        assert_eq!(ClipSequence::new(&[4, 5]).unwrap().as_slice(), &[4, 5]);
    }

    #[test]
    fn start_stop_keep_positions_consistent_and_the_grid_paces() {
        let mut ps = Players::new(4);
        assert_eq!(ps.due(0), 0);
        assert_eq!(ps.sleep_hint_ns(0), None);
        ps.start(player(1), 1_000);
        ps.start(player(6), 5_000);
        ps.start(player(4), 6_000);
        assert_eq!(ps.len(), 3);
        // The first player's start set the grid: due at once, then every 20 ms.
        assert_eq!(ps.due(1_000), 1);
        assert_eq!(ps.due(1_000 + FRAME_NS - 1), 0);
        assert_eq!(ps.sleep_hint_ns(1_000 + FRAME_NS - 1), Some(1));
        assert_eq!(ps.due(1_000 + FRAME_NS), 1);
        // A 100 ms stall: five frames due.
        assert_eq!(ps.due(1_000 + 6 * FRAME_NS + 7), 5);
        assert!(ps.stop(1));
        assert!(!ps.stop(1));
        assert_eq!(ps.find(4).map(|p| p.key), Some(4));
        assert_eq!(ps.find(6).map(|p| p.key), Some(6));
        assert!(ps.find(1).is_none());
        // Replacing keeps one entry per key.
        let mut again = player(6);
        again.clip = 1;
        ps.start(again, 0);
        assert_eq!(ps.len(), 2);
        assert_eq!(ps.find(6).unwrap().clip, 1);
        assert!(ps.stop(4) && ps.stop(6));
        assert!(ps.is_empty());
    }
}
