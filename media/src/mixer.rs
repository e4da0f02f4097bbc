//! N-party mixing with the contact centre's supervisor modes.
//!
//! Who hears whom follows from each participant's [`Role`]:
//!
//! | source role | heard by |
//! |---|---|
//! | `Party` (caller, agent, conference member) | everyone but itself |
//! | `Supervisor(Barge)` | everyone but itself |
//! | `Supervisor(Whisper { to })` | only `to` |
//! | `Supervisor(Listen)` | nobody |
//!
//! Every participant hears the sum of the sources audible to it, never its own voice, so a
//! supervisor in any mode hears the agent and the caller. The sum is formed once in `i32`
//! (the sources audible to all), then per listener its own voice is subtracted and whispers
//! addressed to it added, and the result goes through a soft clipper: linear up to
//! [`KNEE`], then bending smoothly towards full scale, never wrapping.
//!
//! The mixer is sized at construction (participants × frame length) and refuses to grow.

use thiserror::Error;

/// Magnitude up to which the clipper is the identity.
pub const KNEE: i32 = 24_576;
const LIMIT: i32 = i16::MAX as i32;

/// What a supervisor's voice does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SupervisorMode {
    /// Silent monitoring: the supervisor hears everyone, nobody hears the supervisor.
    Listen,
    /// Coaching: only the named participant (the agent) hears the supervisor.
    Whisper {
        /// Who hears the whisper.
        to: ParticipantId,
    },
    /// Joins the call: everyone hears the supervisor.
    Barge,
}

/// A participant's role in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An ordinary party (caller, agent, conference member): heard by all.
    Party,
    /// A supervisor in one of the three modes.
    Supervisor(SupervisorMode),
}

/// Handle of a participant; stale after removal (a reused slot gets a new generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParticipantId {
    slot: u16,
    generation: u16,
}

/// Why a mixer call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum MixerError {
    /// Every slot is taken.
    #[error("mixer is full")]
    Full,
    /// The id names no current participant.
    #[error("unknown participant")]
    UnknownParticipant,
    /// A whisper must go to a current `Party` other than the whisperer.
    #[error("whisper target must be another participant with role Party")]
    BadWhisperTarget,
    /// The frame is not `frame_len` samples.
    #[error("frame of {got} samples, mixer takes {want}")]
    FrameLength {
        /// Samples given.
        got: usize,
        /// The mixer's frame length.
        want: usize,
    },
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    used: bool,
    generation: u16,
    role: Role,
    has_input: bool,
}

/// Mixes one frame at a time for up to `max_participants`.
#[derive(Debug)]
pub struct Mixer {
    frame_len: usize,
    slots: Vec<Slot>,
    /// `slots.len() × frame_len` each.
    inputs: Vec<i16>,
    outputs: Vec<i16>,
    /// Sum of the sources audible to all.
    common: Vec<i32>,
    scratch: Vec<i32>,
}

impl Mixer {
    /// A mixer for up to `max_participants` (at most 65535) with frames of `frame_len` samples.
    pub fn new(max_participants: usize, frame_len: usize) -> Self {
        let max = max_participants.min(u16::MAX as usize);
        Mixer {
            frame_len,
            slots: vec![
                Slot {
                    used: false,
                    generation: 0,
                    role: Role::Party,
                    has_input: false,
                };
                max
            ],
            inputs: vec![0; max * frame_len],
            outputs: vec![0; max * frame_len],
            common: vec![0; frame_len],
            scratch: vec![0; frame_len],
        }
    }

    /// Samples per frame.
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// Adds a participant.
    pub fn add(&mut self, role: Role) -> Result<ParticipantId, MixerError> {
        let slot = self
            .slots
            .iter()
            .position(|s| !s.used)
            .ok_or(MixerError::Full)?;
        let generation = self.slots[slot].generation;
        let id = ParticipantId {
            slot: slot as u16,
            generation,
        };
        self.check_role(id, role)?;
        self.slots[slot] = Slot {
            used: true,
            generation,
            role,
            has_input: false,
        };
        self.output_mut(slot).fill(0);
        Ok(id)
    }

    /// Removes a participant; whispers addressed to it fall silent (the whisperer keeps
    /// listening). The id becomes stale.
    pub fn remove(&mut self, id: ParticipantId) -> Result<(), MixerError> {
        let slot = self.slot_of(id)?;
        let s = &mut self.slots[slot];
        s.used = false;
        s.has_input = false;
        s.generation = s.generation.wrapping_add(1);
        for other in self.slots.iter_mut().filter(|o| o.used) {
            if other.role == Role::Supervisor(SupervisorMode::Whisper { to: id }) {
                other.role = Role::Supervisor(SupervisorMode::Listen);
            }
        }
        Ok(())
    }

    /// Changes a participant's role (e.g. a supervisor going from listen to whisper to barge).
    pub fn set_role(&mut self, id: ParticipantId, role: Role) -> Result<(), MixerError> {
        let slot = self.slot_of(id)?;
        self.check_role(id, role)?;
        self.slots[slot].role = role;
        Ok(())
    }

    /// The participant's role.
    pub fn role(&self, id: ParticipantId) -> Result<Role, MixerError> {
        Ok(self.slots[self.slot_of(id)?].role)
    }

    /// Gives the participant's frame for the next [`Self::mix`]; a participant without one
    /// contributes silence.
    pub fn set_input(&mut self, id: ParticipantId, frame: &[i16]) -> Result<(), MixerError> {
        let slot = self.slot_of(id)?;
        if frame.len() != self.frame_len {
            return Err(MixerError::FrameLength {
                got: frame.len(),
                want: self.frame_len,
            });
        }
        let l = self.frame_len;
        self.inputs[slot * l..(slot + 1) * l].copy_from_slice(frame);
        self.slots[slot].has_input = true;
        Ok(())
    }

    /// What the participant hears from the last [`Self::mix`].
    pub fn output(&self, id: ParticipantId) -> Result<&[i16], MixerError> {
        let slot = self.slot_of(id)?;
        let l = self.frame_len;
        Ok(&self.outputs[slot * l..(slot + 1) * l])
    }

    /// Mixes the frames given since the last call and clears the inputs.
    pub fn mix(&mut self) {
        let l = self.frame_len;
        self.common.fill(0);
        for (slot, s) in self.slots.iter().enumerate() {
            if s.used && s.has_input && heard_by_all(s.role) {
                let x = &self.inputs[slot * l..(slot + 1) * l];
                for (a, &v) in self.common.iter_mut().zip(x) {
                    *a += v as i32;
                }
            }
        }
        for slot in 0..self.slots.len() {
            let s = self.slots[slot];
            if !s.used {
                continue;
            }
            self.scratch.copy_from_slice(&self.common);
            if s.has_input && heard_by_all(s.role) {
                let own = &self.inputs[slot * l..(slot + 1) * l];
                for (a, &v) in self.scratch.iter_mut().zip(own) {
                    *a -= v as i32;
                }
            }
            let me = ParticipantId {
                slot: slot as u16,
                generation: s.generation,
            };
            for (wslot, w) in self.slots.iter().enumerate() {
                if w.used
                    && w.has_input
                    && w.role == Role::Supervisor(SupervisorMode::Whisper { to: me })
                {
                    let x = &self.inputs[wslot * l..(wslot + 1) * l];
                    for (a, &v) in self.scratch.iter_mut().zip(x) {
                        *a += v as i32;
                    }
                }
            }
            let out = &mut self.outputs[slot * l..(slot + 1) * l];
            for (o, &a) in out.iter_mut().zip(&self.scratch) {
                *o = soft_clip(a);
            }
        }
        for s in &mut self.slots {
            s.has_input = false;
        }
    }

    fn slot_of(&self, id: ParticipantId) -> Result<usize, MixerError> {
        match self.slots.get(id.slot as usize) {
            Some(s) if s.used && s.generation == id.generation => Ok(id.slot as usize),
            _ => Err(MixerError::UnknownParticipant),
        }
    }

    fn check_role(&self, me: ParticipantId, role: Role) -> Result<(), MixerError> {
        if let Role::Supervisor(SupervisorMode::Whisper { to }) = role {
            let target = self.slot_of(to).map_err(|_| MixerError::BadWhisperTarget)?;
            if to == me || self.slots[target].role != Role::Party {
                return Err(MixerError::BadWhisperTarget);
            }
        }
        Ok(())
    }

    fn output_mut(&mut self, slot: usize) -> &mut [i16] {
        let l = self.frame_len;
        &mut self.outputs[slot * l..(slot + 1) * l]
    }
}

fn heard_by_all(role: Role) -> bool {
    matches!(role, Role::Party | Role::Supervisor(SupervisorMode::Barge))
}

/// Identity up to [`KNEE`]; above it `KNEE + e·R/(e+R)` with `e` the excess and `R` the
/// headroom to full scale: continuous, slope 1 at the knee, monotonic, never past ±32767.
#[inline]
pub fn soft_clip(v: i32) -> i16 {
    let mag = v.unsigned_abs() as i64;
    let knee = KNEE as i64;
    if mag <= knee {
        return v as i16; // |v| ≤ KNEE < 32767
    }
    let room = (LIMIT - KNEE) as i64;
    let excess = mag - knee;
    let bent = knee + excess * room / (excess + room);
    debug_assert!(bent <= LIMIT as i64);
    let bent = bent as i16;
    if v < 0 {
        -bent
    } else {
        bent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const L: usize = 160;

    /// Feeds each participant a constant "signature" and returns what each hears (all
    /// samples equal, so one number each).
    fn hear(m: &mut Mixer, who: &[(ParticipantId, i16)]) -> Vec<i16> {
        for &(id, sig) in who {
            m.set_input(id, &[sig; L]).unwrap();
        }
        m.mix();
        who.iter()
            .map(|&(id, _)| {
                let out = m.output(id).unwrap();
                assert!(out.iter().all(|&v| v == out[0]));
                out[0]
            })
            .collect()
    }

    // Signatures: caller 1000, agent 100, supervisor 10, so any sum names its sources.
    fn call() -> (Mixer, ParticipantId, ParticipantId, ParticipantId) {
        let mut m = Mixer::new(4, L);
        let caller = m.add(Role::Party).unwrap();
        let agent = m.add(Role::Party).unwrap();
        let sup = m.add(Role::Supervisor(SupervisorMode::Listen)).unwrap();
        (m, caller, agent, sup)
    }

    #[test]
    fn supervisor_listen_hears_both_and_is_heard_by_nobody() {
        let (mut m, caller, agent, sup) = call();
        let got = hear(&mut m, &[(caller, 1000), (agent, 100), (sup, 10)]);
        assert_eq!(got, [100, 1000, 1100]);
    }

    #[test]
    fn whisper_reaches_only_the_agent() {
        let (mut m, caller, agent, sup) = call();
        m.set_role(sup, Role::Supervisor(SupervisorMode::Whisper { to: agent }))
            .unwrap();
        let got = hear(&mut m, &[(caller, 1000), (agent, 100), (sup, 10)]);
        assert_eq!(got, [100, 1010, 1100]);
    }

    #[test]
    fn barge_everyone_hears_everyone_else() {
        let (mut m, caller, agent, sup) = call();
        m.set_role(sup, Role::Supervisor(SupervisorMode::Barge))
            .unwrap();
        let got = hear(&mut m, &[(caller, 1000), (agent, 100), (sup, 10)]);
        assert_eq!(got, [110, 1010, 1100]);
        // And back to listening.
        m.set_role(sup, Role::Supervisor(SupervisorMode::Listen))
            .unwrap();
        let got = hear(&mut m, &[(caller, 1000), (agent, 100), (sup, 10)]);
        assert_eq!(got, [100, 1000, 1100]);
    }

    #[test]
    fn two_supervisors_do_not_hear_each_others_whispers() {
        let (mut m, caller, agent, sup) = call();
        let sup2 = m
            .add(Role::Supervisor(SupervisorMode::Whisper { to: agent }))
            .unwrap();
        let got = hear(
            &mut m,
            &[(caller, 1000), (agent, 100), (sup, 10), (sup2, 1)],
        );
        assert_eq!(got, [100, 1001, 1100, 1100]);
    }

    #[test]
    fn conference_everyone_hears_the_rest() {
        let mut m = Mixer::new(8, L);
        let ids: Vec<_> = (0..8).map(|_| m.add(Role::Party).unwrap()).collect();
        let sigs = [1, 2, 4, 8, 16, 32, 64, 128];
        let who: Vec<_> = ids.iter().copied().zip(sigs).collect();
        let got = hear(&mut m, &who);
        for (i, g) in got.iter().enumerate() {
            assert_eq!(*g, 255 - sigs[i]);
        }
        assert_eq!(m.add(Role::Party), Err(MixerError::Full));
    }

    #[test]
    fn missing_input_is_silence_and_inputs_clear_after_mix() {
        let (mut m, caller, agent, _sup) = call();
        m.set_input(caller, &[500; L]).unwrap();
        m.mix();
        assert_eq!(m.output(agent).unwrap()[0], 500);
        assert_eq!(m.output(caller).unwrap()[0], 0);
        m.mix();
        assert_eq!(m.output(agent).unwrap()[0], 0);
    }

    #[test]
    fn errors() {
        let (mut m, caller, agent, sup) = call();
        assert_eq!(
            m.set_input(caller, &[0; 10]),
            Err(MixerError::FrameLength { got: 10, want: L })
        );
        assert_eq!(
            m.set_role(sup, Role::Supervisor(SupervisorMode::Whisper { to: sup })),
            Err(MixerError::BadWhisperTarget)
        );
        let sup2 = m.add(Role::Party).unwrap();
        m.set_role(sup2, Role::Supervisor(SupervisorMode::Barge))
            .unwrap();
        assert_eq!(
            m.set_role(sup, Role::Supervisor(SupervisorMode::Whisper { to: sup2 })),
            Err(MixerError::BadWhisperTarget),
            "whisper only to a party"
        );
        m.set_role(sup, Role::Supervisor(SupervisorMode::Whisper { to: agent }))
            .unwrap();
        m.remove(agent).unwrap();
        assert_eq!(m.output(agent), Err(MixerError::UnknownParticipant));
        assert_eq!(m.remove(agent), Err(MixerError::UnknownParticipant));
        // The whisperer fell back to listening; a new participant in the old slot is not
        // the old agent.
        assert_eq!(m.role(sup), Ok(Role::Supervisor(SupervisorMode::Listen)));
        let new = m.add(Role::Party).unwrap();
        assert_ne!(new, agent);
        assert_eq!(
            m.set_input(agent, &[0; L]),
            Err(MixerError::UnknownParticipant)
        );
    }

    #[test]
    fn loud_sums_bend_instead_of_wrapping() {
        let mut m = Mixer::new(8, L);
        let ids: Vec<_> = (0..8).map(|_| m.add(Role::Party).unwrap()).collect();
        let who: Vec<_> = ids.iter().map(|&i| (i, 30000)).collect();
        let got = hear(&mut m, &who);
        assert!(got.iter().all(|&v| v > 32000), "{got:?}");
        let who: Vec<_> = ids.iter().map(|&i| (i, -32768)).collect();
        let got = hear(&mut m, &who);
        assert!(
            got.iter().all(|&v| (-32767..-32000).contains(&v)),
            "{got:?}"
        );
    }

    #[test]
    fn soft_clip_shape() {
        assert_eq!(soft_clip(0), 0);
        assert_eq!(soft_clip(KNEE), KNEE as i16);
        assert_eq!(soft_clip(-KNEE), -KNEE as i16);
        assert!(
            soft_clip(KNEE + 100) >= KNEE as i16 + 98,
            "slope near 1 just above the knee"
        );
        assert!(soft_clip(i32::MAX) >= 32760);
        assert!(soft_clip(i32::MIN) <= -32760);
    }

    proptest! {
        #[test]
        fn soft_clip_is_monotonic_odd_and_bounded(a in any::<i32>(), b in any::<i32>()) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(soft_clip(lo) <= soft_clip(hi));
            if a != i32::MIN {
                prop_assert_eq!(soft_clip(-a), -soft_clip(a));
            }
            prop_assert!(soft_clip(a).unsigned_abs() <= i16::MAX as u16);
        }

        /// Each output equals the soft-clipped sum of exactly the sources its listener may hear.
        #[test]
        fn outputs_follow_the_rules(
            roles in proptest::collection::vec(0u8..4, 1..8),
            frames in proptest::collection::vec(proptest::collection::vec(any::<i16>(), 4), 8),
        ) {
            let mut m = Mixer::new(8, 4);
            let ids: Vec<_> = roles.iter().map(|_| m.add(Role::Party).unwrap()).collect();
            // Role code: 0 party, 1 listen, 2 whisper to participant 0 (if it is a party), 3 barge.
            for (i, &r) in roles.iter().enumerate() {
                let role = match r {
                    1 => Role::Supervisor(SupervisorMode::Listen),
                    2 if i > 0 && roles[0] == 0 => Role::Supervisor(SupervisorMode::Whisper { to: ids[0] }),
                    3 => Role::Supervisor(SupervisorMode::Barge),
                    _ => Role::Party,
                };
                m.set_role(ids[i], role).unwrap();
            }
            for (i, &id) in ids.iter().enumerate() {
                m.set_input(id, &frames[i]).unwrap();
            }
            m.mix();
            for (li, &listener) in ids.iter().enumerate() {
                for (n, &got) in m.output(listener).unwrap().iter().enumerate() {
                    let mut want = 0i32;
                    for (si, &src) in ids.iter().enumerate() {
                        if si == li { continue; }
                        let hears = match m.role(src).unwrap() {
                            Role::Party | Role::Supervisor(SupervisorMode::Barge) => true,
                            Role::Supervisor(SupervisorMode::Listen) => false,
                            Role::Supervisor(SupervisorMode::Whisper { to }) => to == listener,
                        };
                        if hears { want += frames[si][n] as i32; }
                    }
                    prop_assert_eq!(got, soft_clip(want));
                }
            }
        }
    }
}
