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
//! `mixed` in the session table: its RTP comes here instead of being forwarded. Each party
//! ([`crate::mix::MixParty`]) puts its packets back in sequence order, decodes them and keeps
//! the audio in a small FIFO; on the core's 20 ms grid (`crate::playback::FrameGrid`) one frame of each goes
//! through `tandem_media::mixer` (who hears whom by role, soft clipping) at the mix's rate
//! (16 kHz when any party speaks G.722 or Opus, else 8 kHz; chosen at attach) and out to each
//! listener of a mix, encoded in its codec, as an RTP stream of ours: our SSRC,
//! a sequence number that counts the packets sent and a timestamp that counts the grid's
//! frames, so a stream paused (whisper back to listen) resumes marked, after a time gap, and a
//! mode change does not restart it.
//!
//! Everything (codec states, FIFOs, mixer) is allocated in [`Monitors::attach`], on a command;
//! [`Monitors::feed`] and [`Monitors::mix_frame`] allocate nothing
//! (`tests/monitor_no_alloc.rs`).

use crate::api::{LegCodec, LegIndex, MonitorMode};
use crate::mix::{MixParty, MixRate, MixSessions, MixTable, Scratch};
use crate::rtcp::SentStream;
use tandem_media::codec::CodecError;
use tandem_media::mixer::{Mixer, ParticipantId, Role, SupervisorMode};

/// The parties of a monitored call: indices of the per-party arrays.
const CALLER: usize = 0;
const AGENT: usize = 1;
const SUPERVISOR: usize = 2;

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
    rate: MixRate,
    mixer: Mixer,
    parties: [MixParty; 3],
    scratch: Scratch,
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
        let rate = MixRate::for_codecs(codecs.map(|c| c.codec));
        let mut mixer = Mixer::new(3, rate.frame());
        let party = |i: usize, id: ParticipantId| MixParty::new(codecs[i], rate, seeds[i], id);
        let full = |_| CodecError::Rejected;
        let caller = mixer.add(Role::Party).map_err(full)?;
        let agent = mixer.add(Role::Party).map_err(full)?;
        let sup = mixer.add(role(mode, agent)).map_err(full)?;
        Ok(Box::new(Monitor {
            session,
            supervisor,
            mode,
            rate,
            parties: [party(0, caller)?, party(1, agent)?, party(2, sup)?],
            mixer,
            scratch: Scratch::new(),
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
        let decoded = self.parties[p].feed(packet, &mut self.scratch)?;
        self.stats.fed[p] += decoded as u64;
        Ok(())
    }

    /// Lets `n` frames pass unmixed (a late core): the streams' clocks move on.
    fn skip(&mut self, n: u32) {
        for party in &mut self.parties {
            party.skip(n);
        }
    }

    fn mix_frame(
        &mut self,
        now_ns: u64,
        send: &mut impl FnMut(u32, LegIndex, &[u8], &[u8]) -> bool,
    ) {
        for party in &mut self.parties {
            party.pop_into(&mut self.mixer, &mut self.scratch);
        }
        self.mixer.mix();
        self.stats.frames += 1;
        for p in 0..3 {
            let (index, leg) = self.target(p);
            let hears = hears_mix(p, self.mode);
            if self.parties[p].send_mixed(
                &self.mixer,
                hears,
                &mut self.scratch,
                now_ns,
                |h, payload| send(index, leg, h, payload),
            ) {
                self.stats.sent[p] += 1;
            }
        }
    }
}

impl MixSessions for Monitor {
    fn each_session(&self, mut f: impl FnMut(u32)) {
        f(self.session);
        f(self.supervisor);
    }
}

/// The monitors of one core: at most one per session (as call or as supervisor).
pub type Monitors = MixTable<Monitor>;

impl MixTable<Monitor> {
    /// The mode of the monitor that session `index` takes part in.
    pub fn mode(&self, index: u32) -> Option<MonitorMode> {
        self.find(index).map(|m| m.mode)
    }

    pub fn stats(&self, index: u32) -> Option<MonitorStats> {
        self.find(index).map(|m| m.stats)
    }

    /// The rate the mix that session `index` takes part in runs at.
    pub fn rate(&self, index: u32) -> Option<MixRate> {
        self.find(index).map(|m| m.rate)
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
        if !self.in_range(session) || !self.in_range(supervisor) {
            return Err(AttachError::Conflict);
        }
        let m = Monitor::new(session, supervisor, mode, codecs, seeds)
            .map_err(|_| AttachError::Codec)?;
        self.push(m, now_ns);
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
        let m = self.remove(self.at(index)?);
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

    /// Lets `n` frames of monitor `i` pass unmixed.
    pub fn skip(&mut self, i: usize, n: u32) {
        self.active[i].skip(n);
    }

    /// Mixes one frame of monitor `i` and hands each mixed packet to `send(session index, leg,
    /// header, payload)`, which says whether it was sent.
    pub fn mix_frame(
        &mut self,
        i: usize,
        now_ns: u64,
        mut send: impl FnMut(u32, LegIndex, &[u8], &[u8]) -> bool,
    ) {
        self.active[i].mix_frame(now_ns, &mut send);
    }

    /// The mixed stream leg `leg` of session `index` hears now, if any: its SSRC, what it
    /// sent, and its RTP clock (for our reports to that leg).
    pub fn stream_to(&self, index: u32, leg: LegIndex) -> Option<(u32, SentStream, u32)> {
        let m = self.find(index)?;
        let p = (0..3).find(|&p| m.target(p) == (index, leg))?;
        hears_mix(p, m.mode).then(|| m.parties[p].stream())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Codec;
    use tandem_media::g711::Law;

    const FRAME: usize = 160;

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
        m.mix_frame(0, 0, |s, l, h, p| {
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

    /// Energy at `hz` in `pcm` (sampled at `rate`), 20 ms Hann-windowed Goertzel frames summed.
    fn tone_energy(pcm: &[i16], hz: f64, rate: f64) -> f64 {
        let n = (rate / 50.0) as usize;
        let coeff = 2.0 * (2.0 * std::f64::consts::PI * hz / rate).cos();
        pcm.chunks_exact(n)
            .map(|frame| {
                let (mut s1, mut s2) = (0.0f64, 0.0f64);
                for (k, &x) in frame.iter().enumerate() {
                    let w = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * k as f64 / n as f64).cos();
                    let s = x as f64 * w + coeff * s1 - s2;
                    s2 = s1;
                    s1 = s;
                }
                s1 * s1 + s2 * s2 - coeff * s1 * s2
            })
            .sum()
    }

    #[test]
    fn a_wideband_mix_carries_5_khz_between_g722_parties_and_g711_still_hears() {
        use tandem_media::codec::{Decoder, Encoder, G722Decoder, G722Encoder};
        use tandem_media::tones::{ToneGenerator, ToneSpec};
        const G722: LegCodec = g711(9, Codec::G722);
        let mut m = Monitors::new(4);
        // Caller G.711 at 500 Hz, agent G.722 at 1200 Hz, supervisor G.722 at 5 kHz.
        m.attach(0, 1, MonitorMode::Barge, [PCMA, G722, G722], [7, 8, 9], 0)
            .unwrap();
        assert_eq!(m.rate(0), Some(MixRate::Wide));
        let mut caller_tone =
            ToneGenerator::new(&ToneSpec::continuous(500.0, 0.0, -10.0), 8000).unwrap();
        let mut tones = [1200.0, 5000.0]
            .map(|hz| ToneGenerator::new(&ToneSpec::continuous(hz, 0.0, -10.0), 16_000).unwrap());
        let mut encoders = [(); 2].map(|_| G722Encoder::new(20).unwrap());
        let mut decoders = [(); 2].map(|_| G722Decoder::new());
        let (mut caller_heard, mut agent_heard, mut sup_heard) = (vec![], vec![], vec![]);
        for i in 0..40u16 {
            let mut narrow = [0i16; 160];
            caller_tone.fill(&mut narrow);
            let mut codes = [0u8; 160];
            Law::Alaw.encode(&narrow, &mut codes);
            let mut p = vec![0x80, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
            p[2..4].copy_from_slice(&i.to_be_bytes());
            p.extend_from_slice(&codes);
            m.feed(0, 0, &p).unwrap();
            for (k, (session, leg)) in [(0, 1), (1, 0)].into_iter().enumerate() {
                let mut wide = [0i16; 320];
                tones[k].fill(&mut wide);
                let mut p = vec![0x80, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2 + k as u8];
                p[2..4].copy_from_slice(&i.to_be_bytes());
                let mut payload = [0u8; 160];
                encoders[k].encode(&wide, &mut payload).unwrap();
                p.extend_from_slice(&payload);
                m.feed(session, leg, &p).unwrap();
            }
            for (s, l, _, payload) in frame(&mut m) {
                if i < 10 {
                    continue;
                }
                let mut pcm = [0i16; 320];
                match (s, l) {
                    (0, LegIndex::A) => {
                        let n = Law::Alaw.decode(&payload, &mut pcm);
                        caller_heard.extend_from_slice(&pcm[..n]);
                    }
                    (0, LegIndex::B) => {
                        let n = decoders[0].decode(&payload, &mut pcm).unwrap();
                        agent_heard.extend_from_slice(&pcm[..n]);
                    }
                    _ => {
                        let n = decoders[1].decode(&payload, &mut pcm).unwrap();
                        sup_heard.extend_from_slice(&pcm[..n]);
                    }
                }
            }
        }
        let db = |pcm: &[i16], rate: f64, hz: f64, of: f64| {
            10.0 * (tone_energy(pcm, hz, rate) / tone_energy(pcm, of, rate)).log10()
        };
        // The agent hears the supervisor's 5 kHz as loud as the caller's 500 Hz, and not itself.
        let to_agent = db(&agent_heard, 16_000.0, 5000.0, 500.0);
        assert!(to_agent > -6.0, "5 kHz to the agent: {to_agent:.1} dB");
        assert!(db(&agent_heard, 16_000.0, 1200.0, 500.0) < -25.0);
        // The supervisor hears both parties, the agent's 1200 Hz through G.722 both ways.
        assert!(db(&sup_heard, 16_000.0, 1200.0, 500.0).abs() < 6.0);
        assert!(db(&sup_heard, 16_000.0, 5000.0, 500.0) < -25.0);
        // The G.711 caller hears the agent (5 kHz cannot reach it: above its band).
        assert!(caller_heard.len() >= 160 * 29);
        assert!(db(&caller_heard, 8000.0, 500.0, 1200.0) < -25.0);
        assert!(tone_energy(&caller_heard, 1200.0, 8000.0) > 1e9);
    }

    #[test]
    fn narrowband_parties_mix_at_8_khz() {
        let mut m = Monitors::new(4);
        m.attach(0, 1, MonitorMode::Listen, [PCMA, PCMU, PCMA], [1, 2, 3], 0)
            .unwrap();
        assert_eq!(m.rate(1), Some(MixRate::Narrow));
    }
}
