//! Small conferences: up to [`MAX_MEMBERS`] parties on one core, each hearing all the others
//! mixed and never itself.
//!
//! Each member is leg A of a session of its own (made with `Create` on this core; leg B's
//! sockets are closed on join, as for a supervisor), so latching, counters, quality and
//! timeouts work as for any leg. The leg is `mixed` in the session table: its RTP comes here.
//! A member is a [`MixParty`] (reorder window, decoding, FIFO, resampling to and from the mix
//! rate, its own outgoing RTP stream); on the core's 20 ms grid one frame of each goes through
//! `tandem_media::mixer` with role `Party` (everyone hears everyone else; the sum is soft
//! clipped above the mixer's knee, never wrapped) and back out to every member.
//!
//! A conference mixes at 8 kHz while every member is narrowband and at 16 kHz from the first
//! G.722 or Opus member on (the members' codec states are made again at the new rate then;
//! their streams run on); it stays wideband until it empties. Everything is allocated on
//! join; feeding and mixing allocate nothing (`tests/conference_no_alloc.rs`).

use crate::api::{LegCodec, LegIndex};
use crate::mix::{is_wideband, MixParty, MixRate, Scratch};
use crate::playback::FrameGrid;
use tandem_media::codec::CodecError;
use tandem_media::mixer::{Mixer, Role};

/// Most members of one conference.
pub const MAX_MEMBERS: usize = 8;

const NONE: u32 = u32::MAX;

/// Why [`Conferences::join`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinError {
    /// The session is already in a conference, or the conference is full.
    Conflict,
    /// A codec state could not be made.
    Codec,
}

struct Member {
    session: u32,
    party: MixParty,
}

/// Counters of one conference, for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConferenceStats {
    /// Members now.
    pub members: usize,
    /// Packets decoded into the mix, and mixed packets handed to the core, over all members.
    pub fed: u64,
    pub sent: u64,
    /// Grid frames mixed.
    pub frames: u64,
}

struct Conference {
    id: u32,
    rate: MixRate,
    mixer: Mixer,
    members: Vec<Member>,
    scratch: Scratch,
    stats: ConferenceStats,
}

impl Conference {
    fn new(id: u32, rate: MixRate) -> Box<Self> {
        Box::new(Conference {
            id,
            rate,
            mixer: Mixer::new(MAX_MEMBERS, rate.frame()),
            members: Vec::with_capacity(MAX_MEMBERS),
            scratch: Scratch::new(),
            stats: ConferenceStats::default(),
        })
    }

    /// Moves every member to a mix at `rate` (a wideband member joining a narrowband room).
    fn change_rate(&mut self, rate: MixRate) -> Result<(), CodecError> {
        let mut mixer = Mixer::new(MAX_MEMBERS, rate.frame());
        let mut members = Vec::with_capacity(MAX_MEMBERS);
        for m in &self.members {
            let id = mixer.add(Role::Party).map_err(|_| CodecError::Rejected)?;
            members.push(Member {
                session: m.session,
                party: m.party.at_rate(rate, id)?,
            });
        }
        self.rate = rate;
        self.mixer = mixer;
        self.members = members;
        Ok(())
    }

    fn mix_frame(&mut self, send: &mut impl FnMut(u32, LegIndex, &[u8], &[u8]) -> bool) {
        for m in &mut self.members {
            m.party.pop_into(&mut self.mixer, &mut self.scratch);
        }
        self.mixer.mix();
        self.stats.frames += 1;
        for m in &mut self.members {
            let session = m.session;
            if m.party
                .send_mixed(&self.mixer, true, &mut self.scratch, |h, p| {
                    send(session, LegIndex::A, h, p)
                })
            {
                self.stats.sent += 1;
            }
        }
    }
}

/// The conferences of one core. A session is in at most one, so the list never outgrows the
/// capacity it is given at start.
pub struct Conferences {
    active: Vec<Box<Conference>>,
    /// Per session index: index into `active` of its conference, or NONE.
    position: Box<[u32]>,
    grid: FrameGrid,
}

impl Conferences {
    pub fn new(sessions: u32) -> Self {
        Conferences {
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

    /// Whether session `index` is a member of a conference.
    pub fn contains(&self, index: u32) -> bool {
        self.position
            .get(index as usize)
            .is_some_and(|&at| at != NONE)
    }

    fn find(&self, index: u32) -> Option<&Conference> {
        let at = *self.position.get(index as usize)?;
        self.active.get(at as usize).map(|c| &**c)
    }

    /// The conference id session `index` is a member of.
    pub fn conference_of(&self, index: u32) -> Option<u32> {
        self.find(index).map(|c| c.id)
    }

    /// The counters of the conference session `index` is a member of.
    pub fn stats(&self, index: u32) -> Option<ConferenceStats> {
        self.find(index).map(|c| ConferenceStats {
            members: c.members.len(),
            ..c.stats
        })
    }

    /// The rate of the conference session `index` is a member of.
    pub fn rate(&self, index: u32) -> Option<MixRate> {
        self.find(index).map(|c| c.rate)
    }

    /// Session `index`'s leg A joins conference `conference` (made on the first join), its
    /// peer speaking `codec`; `seed` seeds its mixed stream's SSRC, sequence and timestamp.
    /// The caller marks the leg `mixed`.
    pub fn join(
        &mut self,
        index: u32,
        conference: u32,
        codec: LegCodec,
        seed: u64,
        now_ns: u64,
    ) -> Result<(), JoinError> {
        if index as usize >= self.position.len() || self.contains(index) {
            return Err(JoinError::Conflict);
        }
        let at = match self.active.iter().position(|c| c.id == conference) {
            Some(at) => at,
            None => {
                if self.active.is_empty() {
                    self.grid.restart(now_ns);
                }
                let rate = MixRate::for_codecs([codec.codec]);
                self.active.push(Conference::new(conference, rate));
                self.active.len() - 1
            }
        };
        let result = self.add_member(at, index, codec, seed);
        if self.active[at].members.is_empty() {
            // A room made for this join, which failed.
            self.remove_conference(at);
        }
        result
    }

    fn add_member(
        &mut self,
        at: usize,
        index: u32,
        codec: LegCodec,
        seed: u64,
    ) -> Result<(), JoinError> {
        let c = &mut self.active[at];
        if c.members.len() == MAX_MEMBERS {
            return Err(JoinError::Conflict);
        }
        if c.rate == MixRate::Narrow && is_wideband(codec.codec) {
            c.change_rate(MixRate::Wide).map_err(|_| JoinError::Codec)?;
        }
        let id = c.mixer.add(Role::Party).map_err(|_| JoinError::Conflict)?;
        let party = match MixParty::new(codec, c.rate, seed, id) {
            Ok(p) => p,
            Err(_) => {
                let _ = c.mixer.remove(id);
                return Err(JoinError::Codec);
            }
        };
        c.members.push(Member {
            session: index,
            party,
        });
        self.position[index as usize] = at as u32;
        Ok(())
    }

    /// Session `index` leaves its conference; returns the conference's id and whether it is
    /// now empty (and gone).
    pub fn leave(&mut self, index: u32) -> Option<(u32, bool)> {
        let at = *self.position.get(index as usize)?;
        if at == NONE {
            return None;
        }
        self.position[index as usize] = NONE;
        let c = &mut self.active[at as usize];
        let k = c.members.iter().position(|m| m.session == index)?;
        let gone = c.members.swap_remove(k);
        let _ = c.mixer.remove(gone.party.id);
        let id = c.id;
        let empty = c.members.is_empty();
        if empty {
            self.remove_conference(at as usize);
        }
        Some((id, empty))
    }

    fn remove_conference(&mut self, at: usize) {
        self.active.swap_remove(at);
        if let Some(moved) = self.active.get(at) {
            for m in &moved.members {
                self.position[m.session as usize] = at as u32;
            }
        }
    }

    /// Decodes an RTP packet from session `index`'s leg A into its member's FIFO. Refused: a
    /// session in no conference, not the member's audio payload type (muxed RTCP, events), a
    /// corrupt payload, a packet too late for the reorder window.
    pub fn feed(&mut self, index: u32, packet: &[u8]) -> Result<(), CodecError> {
        let at = *self
            .position
            .get(index as usize)
            .ok_or(CodecError::Rejected)?;
        let c = self
            .active
            .get_mut(at as usize)
            .ok_or(CodecError::Rejected)?;
        let m = c
            .members
            .iter_mut()
            .find(|m| m.session == index)
            .ok_or(CodecError::Rejected)?;
        let decoded = m.party.feed(packet, &mut c.scratch)?;
        c.stats.fed += decoded as u64;
        Ok(())
    }

    /// Frames due at `now` (0 with no conference); moves the grid past them.
    pub fn due(&mut self, now_ns: u64) -> u32 {
        self.grid.due(now_ns, !self.active.is_empty())
    }

    pub fn sleep_hint_ns(&self, now_ns: u64) -> Option<u64> {
        self.grid.sleep_hint_ns(now_ns, !self.active.is_empty())
    }

    /// Lets `n` frames of conference `i` pass unmixed.
    pub fn skip(&mut self, i: usize, n: u32) {
        for m in &mut self.active[i].members {
            m.party.skip(n);
        }
    }

    /// Mixes one frame of conference `i` and hands each member's packet to `send(session
    /// index, leg, header, payload)`, which says whether it was sent.
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
    use crate::api::Codec;
    use tandem_media::g711::Law;

    const fn lc(payload_type: u8, codec: Codec) -> LegCodec {
        LegCodec {
            payload_type,
            codec,
            event_payload_type: None,
            ptime_ms: 0,
        }
    }
    const PCMU: LegCodec = lc(0, Codec::Pcmu);
    const G722: LegCodec = lc(9, Codec::G722);

    fn packet(seq: u16, level: i16) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        let mut codes = [0u8; 160];
        Law::Ulaw.encode(&[level; 160], &mut codes);
        p.extend_from_slice(&codes);
        p
    }

    #[test]
    fn members_hear_the_others_never_themselves_and_rooms_go_when_empty() {
        let mut c = Conferences::new(16);
        for (session, seed) in [(1, 11), (2, 12), (3, 13)] {
            c.join(session, 77, PCMU, seed, 0).unwrap();
        }
        assert_eq!(c.join(2, 78, PCMU, 1, 0), Err(JoinError::Conflict));
        c.join(9, 78, PCMU, 1, 0).unwrap();
        assert_eq!(c.len(), 2);
        let levels = [(1, 1000), (2, 2000), (3, 4000)];
        let mut heard = [0i32; 4];
        for seq in 0..5 {
            for (s, level) in levels {
                c.feed(s, &packet(seq, level)).unwrap();
            }
            let at = c.position[1] as usize;
            c.mix_frame(at, |s, leg, _, p| {
                assert_eq!(leg, LegIndex::A);
                heard[s as usize] = tandem_media::g711::ulaw_decode(p[80]) as i32;
                true
            });
        }
        let near = |got: i32, want: i32| (got - want).abs() < want / 20;
        assert!(near(heard[1], 6000), "{heard:?}");
        assert!(near(heard[2], 5000), "{heard:?}");
        assert!(near(heard[3], 3000), "{heard:?}");
        assert_eq!(c.stats(2).unwrap().members, 3);
        assert_eq!(c.leave(2), Some((77, false)));
        assert!(!c.contains(2) && c.feed(2, &packet(9, 5)).is_err());
        assert_eq!(c.leave(9), Some((78, true)));
        assert_eq!(c.len(), 1);
        // The remaining room still finds its members after the other one went.
        assert_eq!(c.conference_of(3), Some(77));
        assert_eq!(c.leave(1), Some((77, false)));
        assert_eq!(c.leave(3), Some((77, true)));
        assert!(c.is_empty() && c.leave(3).is_none());
    }

    #[test]
    fn a_wideband_member_turns_the_room_wideband_and_the_room_has_a_size() {
        let mut c = Conferences::new(16);
        c.join(0, 5, PCMU, 1, 0).unwrap();
        assert_eq!(c.rate(0), Some(MixRate::Narrow));
        c.join(1, 5, G722, 2, 0).unwrap();
        assert_eq!(c.rate(0), Some(MixRate::Wide));
        for s in 2..MAX_MEMBERS as u32 {
            c.join(s, 5, PCMU, 3, 0).unwrap();
        }
        assert_eq!(c.join(12, 5, PCMU, 4, 0), Err(JoinError::Conflict));
        assert!(!c.contains(12));
        let mut sent = 0;
        c.mix_frame(0, |_, _, _, _| {
            sent += 1;
            true
        });
        assert_eq!(sent, MAX_MEMBERS);
    }
}
