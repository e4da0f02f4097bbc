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
use crate::mix::{is_wideband, MixParty, MixRate, MixSessions, MixTable, Scratch};
use crate::rtcp::SentStream;
use tandem_media::codec::CodecError;
use tandem_media::mixer::{Mixer, Role};

/// Most members of one conference.
pub const MAX_MEMBERS: usize = 8;

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

pub struct Conference {
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

    fn add_member(&mut self, session: u32, codec: LegCodec, seed: u64) -> Result<(), JoinError> {
        if self.members.len() == MAX_MEMBERS {
            return Err(JoinError::Conflict);
        }
        if self.rate == MixRate::Narrow && is_wideband(codec.codec) {
            self.change_rate(MixRate::Wide)
                .map_err(|_| JoinError::Codec)?;
        }
        let id = self
            .mixer
            .add(Role::Party)
            .map_err(|_| JoinError::Conflict)?;
        let party = match MixParty::new(codec, self.rate, seed, id) {
            Ok(p) => p,
            Err(_) => {
                let _ = self.mixer.remove(id);
                return Err(JoinError::Codec);
            }
        };
        self.members.push(Member { session, party });
        Ok(())
    }

    fn mix_frame(
        &mut self,
        now_ns: u64,
        send: &mut impl FnMut(u32, LegIndex, &[u8], &[u8]) -> bool,
    ) {
        for m in &mut self.members {
            m.party.pop_into(&mut self.mixer, &mut self.scratch);
        }
        self.mixer.mix();
        self.stats.frames += 1;
        for m in &mut self.members {
            let session = m.session;
            if m.party
                .send_mixed(&self.mixer, true, &mut self.scratch, now_ns, |h, p| {
                    send(session, LegIndex::A, h, p)
                })
            {
                self.stats.sent += 1;
            }
        }
    }
}

impl MixSessions for Conference {
    fn each_session(&self, mut f: impl FnMut(u32)) {
        for m in &self.members {
            f(m.session);
        }
    }
}

/// The conferences of one core: a session is a member of at most one.
pub type Conferences = MixTable<Conference>;

impl MixTable<Conference> {
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
        if !self.in_range(index) || self.contains(index) {
            return Err(JoinError::Conflict);
        }
        let at = match self.active.iter().position(|c| c.id == conference) {
            Some(at) => at,
            None => {
                let rate = MixRate::for_codecs([codec.codec]);
                self.push(Conference::new(conference, rate), now_ns)
            }
        };
        let result = self.active[at].add_member(index, codec, seed);
        match result {
            Ok(()) => self.set(index, Some(at)),
            // A room made for this join, which failed, goes again.
            Err(_) if self.active[at].members.is_empty() => {
                self.remove(at);
            }
            Err(_) => {}
        }
        result
    }

    /// Session `index` leaves its conference; returns the conference's id and whether it is
    /// now empty (and gone).
    pub fn leave(&mut self, index: u32) -> Option<(u32, bool)> {
        let at = self.at(index)?;
        self.set(index, None);
        let c = &mut self.active[at];
        let k = c.members.iter().position(|m| m.session == index)?;
        let gone = c.members.swap_remove(k);
        let _ = c.mixer.remove(gone.party.id);
        let (id, empty) = (c.id, c.members.is_empty());
        if empty {
            self.remove(at);
        }
        Some((id, empty))
    }

    /// Decodes an RTP packet from session `index`'s leg A into its member's FIFO. Refused: a
    /// session in no conference, not the member's audio payload type (muxed RTCP, events), a
    /// corrupt payload, a packet too late for the reorder window.
    pub fn feed(&mut self, index: u32, packet: &[u8]) -> Result<(), CodecError> {
        let c = self.find_mut(index).ok_or(CodecError::Rejected)?;
        let m = c
            .members
            .iter_mut()
            .find(|m| m.session == index)
            .ok_or(CodecError::Rejected)?;
        let decoded = m.party.feed(packet, &mut c.scratch)?;
        c.stats.fed += decoded as u64;
        Ok(())
    }

    /// Lets `n` frames of conference `i` pass unmixed.
    pub fn skip(&mut self, i: usize, n: u32) {
        for m in &mut self.active[i].members {
            m.party.skip(n);
        }
    }

    /// Mixes one frame of conference `i` and hands each member's packet to `send(session
    /// index, leg, header, payload)`, which says whether it was sent (at `now_ns`, for our
    /// reports).
    pub fn mix_frame(
        &mut self,
        i: usize,
        now_ns: u64,
        mut send: impl FnMut(u32, LegIndex, &[u8], &[u8]) -> bool,
    ) {
        self.active[i].mix_frame(now_ns, &mut send);
    }

    /// The mix leg `leg` of session `index` hears as a member, if any: its SSRC, what it
    /// sent, and its RTP clock (for our reports to that leg). Members are leg A.
    pub fn stream_to(&self, index: u32, leg: LegIndex) -> Option<(u32, SentStream, u32)> {
        if leg != LegIndex::A {
            return None;
        }
        let c = self.find(index)?;
        let m = c.members.iter().find(|m| m.session == index)?;
        Some(m.party.stream())
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
            options: crate::api::CodecOptions::NONE,
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
            let at = c.at(1).unwrap();
            c.mix_frame(at, 0, |s, leg, _, p| {
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
        c.mix_frame(0, 0, |_, _, _, _| {
            sent += 1;
            true
        });
        assert_eq!(sent, MAX_MEMBERS);
    }
}
