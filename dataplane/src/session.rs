//! The per-core session table and the forwarding decision for one packet.
//!
//! Pure logic: no sockets, no clock. The core feeds it packets and `now`, and applies what it
//! returns (send, connect, count). Sessions sit in a slab sized at start; session `s` owns the
//! four consecutive ports `base + 4s ..= base + 4s + 3` (leg A RTP, leg A RTCP, leg B RTP,
//! leg B RTCP), so a packet's port names its session and stream by arithmetic, with no lookup.

use crate::api::{
    Codec, DtmfOptions, LegIndex, LegParams, LegStats, SessionId, SessionStats, StreamStats,
};
use crate::dtmf::Dtmf;
pub use crate::dtmf::{DtmfReport, DTMF_QUEUE};
use crate::quality::{self, LegQuality};
use crate::rtcp::ReportBlock;
use crate::rtp::{self, Kind};
use crate::stats::DropReason;
use std::net::SocketAddr;

pub const PORTS_PER_SESSION: u32 = 4;

/// One direction-pair on one socket: what we know about the peer behind it, and what it sent us.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stream {
    /// Where signalling says the peer receives.
    pub advertised: Option<SocketAddr>,
    /// Where we send: the latched source once a packet arrived, else `advertised`.
    pub peer: Option<SocketAddr>,
    /// The peer's source address has been learnt (and the socket connected to it).
    pub latched: bool,
    pub stats: Counters,
}

/// What a stream received from its peer. Kept apart from the API's `StreamStats` so the slab
/// holds only what changes per packet (address and port are known elsewhere).
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
    pub errors: u64,
    pub last_seen_ns: u64,
}

impl Stream {
    fn report(&self, local_port: u16) -> StreamStats {
        StreamStats {
            packets: self.stats.packets,
            bytes: self.stats.bytes,
            errors: self.stats.errors,
            last_seen_ns: self.stats.last_seen_ns,
            peer: self.peer,
            local_port,
        }
    }
}

const _: () = assert!(
    std::mem::size_of::<Session>() <= 512,
    "keep the session slab compact"
);

/// `Leg::dtmf_pt` of a leg without telephone events.
pub const NO_DTMF: u8 = 0xff;

#[derive(Debug, Clone, Copy)]
pub struct Leg {
    pub rtp: Stream,
    pub rtcp: Stream,
    pub rtcp_mux: bool,
    pub strict_source: bool,
    /// A clip is being played to this leg's peer: nothing is relayed to it meanwhile.
    pub playing: bool,
    /// The control plane holds relaying to this leg's peer (`Command::HoldRelay`): nothing is
    /// relayed to it meanwhile (played and mixed streams still go).
    pub held: bool,
    /// The telephone-event payload type whose packets from this leg are parsed for DTMF, or
    /// [`NO_DTMF`] (which no 7-bit payload type equals, so the check is one byte compare).
    pub dtmf_pt: u8,
    /// The audio payload type whose packets from this leg go through the in-band DTMF
    /// detector (`crate::dtmf`), or [`NO_DTMF`].
    pub inband_pt: u8,
    /// DTMF from this leg is kept from the other (PCI): telephone events dropped, audio
    /// silenced while a tone is heard.
    pub block_dtmf: bool,
    /// DTMF keys are being sent to this leg's peer (`crate::dtmf::Senders`): the RTP packets
    /// going to it pass through the sender.
    pub sending_dtmf: bool,
    /// This leg's telephone events become tones towards the other leg
    /// (`DtmfOptions::tones_to_other`): the events themselves are not relayed.
    pub translate_dtmf: bool,
    /// Keys heard as tones in this leg's audio go to the other leg as events
    /// (`DtmfOptions::events_to_other`): the tones themselves are kept from it.
    pub tones_as_events: bool,
    /// RTP from this leg's peer is transcoded for the other leg (the core holds the
    /// transcoder, `crate::transcode`); its RTCP ends at the core, which reports on the
    /// transcoded streams itself (`crate::rtcp`).
    pub transcode: bool,
    /// RTP from this leg's peer goes to the core's supervisor mix (`crate::monitor`) instead
    /// of to the other leg: a supervisor's leg, or a monitored leg in whisper or barge.
    pub mixed: bool,
}

impl Default for Leg {
    fn default() -> Self {
        Leg {
            rtp: Stream::default(),
            rtcp: Stream::default(),
            rtcp_mux: false,
            strict_source: false,
            playing: false,
            held: false,
            dtmf_pt: NO_DTMF,
            inband_pt: NO_DTMF,
            block_dtmf: false,
            sending_dtmf: false,
            translate_dtmf: false,
            tones_as_events: false,
            transcode: false,
            mixed: false,
        }
    }
}

impl Leg {
    fn apply(&mut self, p: &LegParams) {
        self.rtcp_mux = p.rtcp_mux;
        self.strict_source = p.strict_source;
        let rtcp_advertised = if p.rtcp_mux { p.rtp } else { p.rtcp };
        for (stream, advertised) in [(&mut self.rtp, p.rtp), (&mut self.rtcp, rtcp_advertised)] {
            if stream.advertised != advertised {
                // Signalling moved the peer (re-INVITE): forget the latch, send where told.
                stream.advertised = advertised;
                stream.peer = advertised;
                stream.latched = false;
            }
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Session {
    pub live: bool,
    pub generation: u32,
    pub created_ns: u64,
    pub legs: [Leg; 2],
}

/// What to do with one received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Forward {
        out_slot: u32,
        /// `None`: the out socket is connected to the peer.
        dest: Option<SocketAddr>,
        /// The in socket should be connected to this newly latched source first.
        latch: Option<SocketAddr>,
    },
    /// Like `Forward`, but the RTP packet goes through the core's transcoder for its leg
    /// first (`in_key`: session index * 2 + the receiving leg).
    Transcode {
        out_slot: u32,
        dest: Option<SocketAddr>,
        latch: Option<SocketAddr>,
        in_key: u32,
    },
    /// RTP for the core's supervisor mix (`in_key`: session index * 2 + the receiving leg).
    Mix {
        latch: Option<SocketAddr>,
        in_key: u32,
    },
    /// RTCP from a transcoded leg: it describes streams the other peer never receives, so it
    /// ends here (it has fed the leg's quality); not a drop.
    Consumed {
        latch: Option<SocketAddr>,
    },
    Drop(DropReason),
    /// Not relayed, but the packet latched its stream: the in socket is connected to `latch`
    /// all the same (later sends to this leg rely on the connection).
    DropLatched {
        reason: DropReason,
        latch: SocketAddr,
    },
}

/// Socket operations the core must carry out after a timer pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerAction {
    /// Dissolve the connection of this socket: its peer fell silent and may come back elsewhere.
    Unlatch { slot: u32 },
    /// The whole session was silent for the inactivity timeout.
    Expire { slot: u32 },
}

pub struct Sessions {
    pub core: u16,
    base_port: u16,
    slots: Box<[Session]>,
    /// DTMF state per leg (`index * 2 + leg`), kept out of the slab: only legs that listen
    /// for DTMF touch theirs.
    dtmf: Dtmf,
    /// The packet [`Sessions::on_packet`] judged last carried a DTMF tone from a leg that
    /// blocks DTMF: the G.711 silence code its relayed audio must be replaced with.
    blocked_tone: Option<u8>,
    /// Reception quality per leg (`index * 2 + leg`), also out of the slab: its state is
    /// larger than the rest of a leg and only this packet's leg is touched.
    quality: Box<[LegQuality]>,
}

fn stream_mut(leg: &mut Leg, rtcp: bool) -> &mut Stream {
    if rtcp {
        &mut leg.rtcp
    } else {
        &mut leg.rtp
    }
}

impl Sessions {
    pub fn new(core: u16, capacity: u32, base_port: u16) -> Self {
        Sessions {
            core,
            base_port,
            slots: vec![Session::default(); capacity as usize].into_boxed_slice(),
            dtmf: Dtmf::new(capacity),
            blocked_tone: None,
            quality: vec![LegQuality::default(); capacity as usize * 2].into_boxed_slice(),
        }
    }

    pub fn capacity(&self) -> u32 {
        self.slots.len() as u32
    }

    pub fn get(&self, index: u32) -> Option<&Session> {
        self.slots.get(index as usize).filter(|s| s.live)
    }

    /// Resolves an id from the control plane; stale generations do not resolve.
    pub fn resolve(&self, id: SessionId) -> Option<u32> {
        let s = self.slots.get(id.slot as usize)?;
        (id.core == self.core && s.live && s.generation == id.generation).then_some(id.slot)
    }

    pub fn id(&self, index: u32) -> SessionId {
        SessionId {
            core: self.core,
            slot: index,
            generation: self.slots[index as usize].generation,
        }
    }

    /// Brings slot `index` to life with fresh counters. The caller has bound its sockets.
    pub fn activate(&mut self, index: u32, a: &LegParams, b: &LegParams, now_ns: u64) -> SessionId {
        let s = &mut self.slots[index as usize];
        debug_assert!(!s.live);
        let generation = s.generation.wrapping_add(1);
        *s = Session {
            live: true,
            generation,
            created_ns: now_ns,
            legs: [Leg::default(); 2],
        };
        s.legs[0].apply(a);
        s.legs[1].apply(b);
        for k in 0..2 {
            let _ = self
                .dtmf
                .configure(index * 2 + k as u32, &DtmfOptions::default());
            self.quality[index as usize * 2 + k] = LegQuality::default();
        }
        self.id(index)
    }

    /// Marks `leg` as played to (or not): while it is, nothing is relayed to it.
    pub fn set_playing(&mut self, index: u32, leg: LegIndex, playing: bool) {
        self.slots[index as usize].legs[leg as usize].playing = playing;
    }

    pub fn set_held(&mut self, index: u32, leg: LegIndex, held: bool) {
        self.slots[index as usize].legs[leg as usize].held = held;
    }

    /// Tells `leg`'s quality measurement what its peer sends (from a codec plan).
    pub fn set_signalled_media(
        &mut self,
        index: u32,
        leg: LegIndex,
        payload_type: u8,
        clock_hz: u32,
    ) {
        self.quality[index as usize * 2 + leg as usize].set_signalled_media(payload_type, clock_hz);
    }

    /// Marks RTP from `leg`'s peer as transcoded (or relayed untouched again).
    pub fn set_transcode(&mut self, index: u32, leg: LegIndex, on: bool) {
        self.slots[index as usize].legs[leg as usize].transcode = on;
    }

    /// Sends RTP from `leg`'s peer to the supervisor mix (or relays it again).
    pub fn set_mixed(&mut self, index: u32, leg: LegIndex, on: bool) {
        self.slots[index as usize].legs[leg as usize].mixed = on;
    }

    /// Sets how DTMF from `leg` is heard and passed on; any press in progress is forgotten.
    /// In-band detection is allocated here. Fails (changing nothing) for in-band detection on
    /// a codec other than G.711.
    pub fn set_dtmf(
        &mut self,
        index: u32,
        leg: LegIndex,
        options: &DtmfOptions,
    ) -> Result<(), Codec> {
        let key = index * 2 + leg as u32;
        self.dtmf.configure(key, options)?;
        let l = &mut self.slots[index as usize].legs[leg as usize];
        l.dtmf_pt = options.event_payload_type.map_or(NO_DTMF, |pt| pt & 0x7f);
        l.inband_pt = self.dtmf.inband_payload_type(key).unwrap_or(NO_DTMF);
        l.block_dtmf = options.block;
        l.tones_as_events = options.events_to_other.is_some();
        l.translate_dtmf = options.tones_to_other.is_some();
        Ok(())
    }

    /// The next key translated for the other leg (`Dtmf::pop_translated`).
    pub fn pop_translated_dtmf(&mut self) -> Option<crate::dtmf::Translated> {
        self.dtmf.pop_translated()
    }

    /// Marks `leg` as being sent DTMF keys (or no longer).
    pub fn set_sending_dtmf(&mut self, index: u32, leg: LegIndex, on: bool) {
        self.slots[index as usize].legs[leg as usize].sending_dtmf = on;
    }

    /// The sender key (`index * 2 + leg`) of the leg whose RTP socket is `out_slot`, when DTMF
    /// keys are being sent to it.
    pub fn dtmf_sender_for(&self, out_slot: u32) -> Option<u32> {
        if out_slot % 2 == 1 {
            return None;
        }
        let leg = &self
            .slots
            .get((out_slot / PORTS_PER_SESSION) as usize)?
            .legs[((out_slot % PORTS_PER_SESSION) / 2) as usize];
        leg.sending_dtmf.then_some(out_slot / 2)
    }

    /// Whether the packet [`Sessions::on_packet`] judged last must be relayed as silence: it
    /// is audio carrying a DTMF tone from a leg that blocks DTMF. The G.711 code of silence.
    pub fn blocked_tone(&self) -> Option<u8> {
        self.blocked_tone
    }

    /// Where playback to `leg` goes: its RTP socket's slot, and the destination (`None` when
    /// the socket is connected to the latched peer). `None` while the peer is unknown.
    pub fn play_target(&self, index: u32, leg: LegIndex) -> Option<(u32, Option<SocketAddr>)> {
        let s = self.get(index)?;
        let rtp = &s.legs[leg as usize].rtp;
        let peer = rtp.peer?;
        let slot = index * PORTS_PER_SESSION + 2 * leg as u32;
        Some((slot, if rtp.latched { None } else { Some(peer) }))
    }

    /// Where RTCP of ours to `leg` goes: its RTCP socket's slot (its RTP socket's when the leg
    /// muxes) and the destination (`None` when the socket is connected to the latched peer).
    /// `None` while the peer's address is unknown.
    pub fn rtcp_target(&self, index: u32, leg: LegIndex) -> Option<(u32, Option<SocketAddr>)> {
        let l = &self.get(index)?.legs[leg as usize];
        let (stream, port_kind) = if l.rtcp_mux {
            (&l.rtp, 0)
        } else {
            (&l.rtcp, 1)
        };
        let peer = stream.peer?;
        let slot = index * PORTS_PER_SESSION + 2 * leg as u32 + port_kind;
        Some((slot, if stream.latched { None } else { Some(peer) }))
    }

    /// The report block about what `leg`'s peer sends us, for our report to it at `now_ns`
    /// (starts a new loss interval).
    pub fn report_block(&mut self, index: u32, leg: LegIndex, now_ns: u64) -> Option<ReportBlock> {
        self.quality[index as usize * 2 + leg as usize].report_block(now_ns)
    }

    /// Notes our SR (SSRC, NTP middle bits) queued to `leg`'s peer at `now_ns`: its report
    /// blocks that echo it give the leg's round trip.
    pub fn on_our_sender_report(
        &mut self,
        index: u32,
        leg: LegIndex,
        ssrc: u32,
        compact: u32,
        now_ns: u64,
    ) {
        self.quality[index as usize * 2 + leg as usize].on_our_sender_report(ssrc, compact, now_ns);
    }

    /// Hands every pending DTMF report to `f`, oldest first.
    pub fn drain_dtmf(&mut self, f: impl FnMut(DtmfReport)) {
        self.dtmf.drain(f);
    }

    /// DTMF reports lost since the last call because the queue was full.
    pub fn take_dtmf_overflow(&mut self) -> u64 {
        std::mem::take(&mut self.dtmf.overflow)
    }

    pub fn update(&mut self, index: u32, leg: LegIndex, params: &LegParams) -> [Option<u32>; 2] {
        let s = &mut self.slots[index as usize];
        let l = &mut s.legs[leg as usize];
        let before = [l.rtp.latched, l.rtcp.latched];
        l.apply(params);
        // Sockets whose latch was dropped must be disconnected by the caller.
        let base = index * PORTS_PER_SESSION + 2 * leg as u32;
        [
            (before[0] && !l.rtp.latched).then_some(base),
            (before[1] && !l.rtcp.latched).then_some(base + 1),
        ]
    }

    pub fn deactivate(&mut self, index: u32) -> SessionStats {
        let stats = self.stats(index);
        self.slots[index as usize].live = false;
        stats
    }

    pub fn stats(&self, index: u32) -> SessionStats {
        let s = &self.slots[index as usize];
        let first = (self.base_port as u32 + index * PORTS_PER_SESSION) as u16;
        let leg = |l: usize| {
            let port = first + 2 * l as u16;
            LegStats {
                rtp: s.legs[l].rtp.report(port),
                rtcp: s.legs[l].rtcp.report(port + 1),
                quality: self.quality[index as usize * 2 + l].report(),
            }
        };
        SessionStats {
            legs: [leg(0), leg(1)],
            created_ns: s.created_ns,
        }
    }

    /// Parse, decide: what to do with `data` received on socket `slot` from `src`.
    pub fn on_packet(&mut self, slot: u32, src: SocketAddr, data: &[u8], now_ns: u64) -> Verdict {
        let index = slot / PORTS_PER_SESSION;
        let port_kind = slot % PORTS_PER_SESSION;
        let leg_in = (port_kind / 2) as usize;
        let on_rtcp_port = port_kind % 2 == 1;
        let Some(session) = self.slots.get_mut(index as usize).filter(|s| s.live) else {
            // A datagram that was queued when its session ended.
            return Verdict::Drop(DropReason::NoDestination);
        };

        let classified = if on_rtcp_port {
            rtp::classify_rtcp_port(data)
        } else {
            rtp::classify(data)
        };
        let stream = stream_mut(&mut session.legs[leg_in], on_rtcp_port);
        let kind = match classified {
            Ok(k) => k,
            Err(_) => {
                stream.stats.errors += 1;
                return Verdict::Drop(DropReason::Malformed);
            }
        };

        let mut latch = None;
        if !stream.latched {
            stream.latched = true;
            stream.peer = Some(src);
            latch = Some(src);
        } else if stream.peer != Some(src) {
            // Connected sockets never deliver foreign sources; this is the unconnected window
            // (connect failed, or a datagram queued before the latch). Strict or not, the latch
            // only moves after the peer has been silent (see `on_timer`).
            stream.stats.errors += 1;
            return Verdict::Drop(DropReason::ForeignSource);
        }
        stream.stats.packets += 1;
        stream.stats.bytes += data.len() as u64;
        stream.stats.last_seen_ns = now_ns;

        // Only the two payload types are read for every packet; what a DTMF match then does
        // (block, translate) is read in its branch, off the common path.
        let (dtmf_pt, inband_pt) = {
            let l = &session.legs[leg_in];
            (l.dtmf_pt, l.inband_pt)
        };
        // A transcoded leg's RTCP describes streams the other peer never receives: it feeds
        // quality and ends here (out of line; RTP pays one compare for it).
        if kind == Kind::Rtcp && session.legs[leg_in].transcode {
            return self.consume_rtcp(index, leg_in, data, now_ns, latch);
        }
        let transcode = session.legs[leg_in].transcode && kind == Kind::Rtp;
        let mixed = session.legs[leg_in].mixed;
        let out_leg_index = 1 - leg_in;
        let out_leg = &session.legs[out_leg_index];
        let to_rtcp = kind == Kind::Rtcp && !out_leg.rtcp_mux;
        let out = if to_rtcp { &out_leg.rtcp } else { &out_leg.rtp };
        let out_slot = index * PORTS_PER_SESSION + 2 * out_leg_index as u32 + to_rtcp as u32;
        let mut verdict = if mixed && kind == Kind::Rtp {
            Verdict::Mix {
                latch,
                in_key: index * 2 + leg_in as u32,
            }
        } else if out_leg.playing | out_leg.held {
            let reason = if out_leg.playing {
                DropReason::Playback
            } else {
                DropReason::Held
            };
            drop_latched(reason, latch)
        } else {
            match out.peer {
                None => {
                    // A supervisor's leg has no other leg: its RTCP ends here, not in error.
                    if !mixed {
                        let in_stream = stream_mut(&mut session.legs[leg_in], on_rtcp_port);
                        in_stream.stats.errors += 1;
                    }
                    drop_latched(DropReason::NoDestination, latch)
                }
                Some(peer) => {
                    let dest = if out.latched { None } else { Some(peer) };
                    if transcode {
                        Verdict::Transcode {
                            out_slot,
                            dest,
                            latch,
                            in_key: index * 2 + leg_in as u32,
                        }
                    } else {
                        Verdict::Forward {
                            out_slot,
                            dest,
                            latch,
                        }
                    }
                }
            }
        };
        // Telephone events and in-band tones: one compare each per packet, the work only on a
        // match (muxed RTCP that happens to match is refused by the RTP parser). Heard whether
        // or not the packet can be relayed (a caller on hold music presses keys too).
        self.blocked_tone = None;
        let pt = data[1] & 0x7f;
        if dtmf_pt != NO_DTMF && dtmf_pt == pt {
            self.on_telephone_event(index, leg_in, data, now_ns);
            let l = &self.slots[index as usize].legs[leg_in];
            if l.block_dtmf || l.translate_dtmf {
                verdict = match verdict {
                    Verdict::Forward { latch, .. } | Verdict::Transcode { latch, .. } => {
                        drop_latched(DropReason::DtmfBlocked, latch)
                    }
                    other => other,
                };
            }
        } else if inband_pt != NO_DTMF && inband_pt == pt && kind == Kind::Rtp {
            let key = index * 2 + leg_in as u32;
            let id = self.id(index);
            let legs = &self.slots[index as usize].legs;
            let tones_as_events = legs[leg_in].tones_as_events;
            let block_tones = legs[leg_in].block_dtmf || tones_as_events;
            if self.dtmf.on_audio(id, key, data, now_ns) && block_tones {
                let keys_out = self.slots[index as usize].legs[1 - leg_in].sending_dtmf;
                match self.dtmf.silence_code(key) {
                    Some(code) => self.blocked_tone = Some(code),
                    // The heard key is being sent to the other leg as events: its sender
                    // replaces this packet with an event packet, so it must go on (held
                    // back, the key would wait for the tone to end).
                    None if tones_as_events && keys_out => {}
                    // G.722 and Opus: no payload is silence whatever the receiver's decoder
                    // state, so the packet is held back and the receiver conceals the gap.
                    None => {
                        verdict = match verdict {
                            Verdict::Forward { latch, .. } | Verdict::Transcode { latch, .. } => {
                                drop_latched(DropReason::DtmfBlocked, latch)
                            }
                            other => other,
                        }
                    }
                }
            }
        }
        // Quality is measured on everything the peer sent that parsed, relayed or not.
        let q = index as usize * 2;
        let (a, b) = self.quality[q..q + 2].split_at_mut(1);
        let (from, other) = if leg_in == 0 {
            (&mut a[0], &b[0])
        } else {
            (&mut b[0], &a[0])
        };
        match kind {
            Kind::Rtp => from.on_rtp(data, now_ns),
            Kind::Rtcp => {
                // The peer's blocks may echo the other peer's SR (relayed) or ours (a stream
                // of ours it hears: played, mixed).
                let [ours, before] = from.our_sr();
                quality::on_rtcp(from, &[other.peer_sr(), ours, before], data, now_ns)
            }
        }
        verdict
    }

    /// RTCP from a transcoded leg: the peer's blocks echo our own SRs (the streams it hears
    /// are ours), and nothing is relayed.
    #[cold]
    #[inline(never)]
    fn consume_rtcp(
        &mut self,
        index: u32,
        leg_in: usize,
        data: &[u8],
        now_ns: u64,
        latch: Option<SocketAddr>,
    ) -> Verdict {
        let from = &mut self.quality[index as usize * 2 + leg_in];
        let ours = from.our_sr();
        quality::on_rtcp(from, &ours, data, now_ns);
        Verdict::Consumed { latch }
    }

    /// Feeds one telephone-event packet to its leg's DTMF state. Out of line: a few packets
    /// per key press come here, every other packet only pays the compare before it.
    #[cold]
    #[inline(never)]
    fn on_telephone_event(&mut self, index: u32, leg_in: usize, data: &[u8], now_ns: u64) {
        let id = self.id(index);
        self.dtmf
            .on_event(id, index * 2 + leg_in as u32, data, now_ns);
    }

    /// The core could not connect a socket to its latched peer: fall back to addressed sends.
    pub fn connect_failed(&mut self, slot: u32) {
        let index = slot / PORTS_PER_SESSION;
        let kind = slot % PORTS_PER_SESSION;
        if let Some(s) = self.slots.get_mut(index as usize) {
            let stream = stream_mut(&mut s.legs[(kind / 2) as usize], kind % 2 == 1);
            stream.latched = false;
        }
    }

    /// Periodic check of one session. Returns the socket operations due; `Expire` ends it.
    pub fn on_timer(
        &mut self,
        index: u32,
        now_ns: u64,
        timeout_ns: u64,
        relatch_ns: u64,
        out: &mut [Option<TimerAction>; 4],
    ) {
        *out = [None; 4];
        let Some(s) = self.slots.get_mut(index as usize).filter(|s| s.live) else {
            return;
        };
        let mut last_activity = s.created_ns;
        for leg in &s.legs {
            last_activity = last_activity
                .max(leg.rtp.stats.last_seen_ns)
                .max(leg.rtcp.stats.last_seen_ns);
        }
        if now_ns.saturating_sub(last_activity) >= timeout_ns {
            out[0] = Some(TimerAction::Expire {
                slot: index * PORTS_PER_SESSION,
            });
            return;
        }
        for (l, leg) in s.legs.iter_mut().enumerate() {
            if leg.strict_source {
                continue;
            }
            for (k, stream) in [&mut leg.rtp, &mut leg.rtcp].into_iter().enumerate() {
                if stream.latched && now_ns.saturating_sub(stream.stats.last_seen_ns) >= relatch_ns
                {
                    stream.latched = false;
                    out[2 * l + k] = Some(TimerAction::Unlatch {
                        slot: index * PORTS_PER_SESSION + (2 * l + k) as u32,
                    });
                }
            }
        }
    }
}

fn drop_latched(reason: DropReason, latch: Option<SocketAddr>) -> Verdict {
    match latch {
        Some(latch) => Verdict::DropLatched { reason, latch },
        None => Verdict::Drop(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn rtp() -> Vec<u8> {
        let mut p = vec![0u8; 172];
        p[0] = 0x80;
        p
    }

    fn params(rtp_port: u16) -> LegParams {
        LegParams {
            rtp: Some(addr(&format!("10.0.0.1:{rtp_port}"))),
            rtcp: Some(addr(&format!("10.0.0.1:{}", rtp_port + 1))),
            ..LegParams::default()
        }
    }

    #[test]
    fn relays_between_legs_and_latches_on_first_packet() {
        let mut t = Sessions::new(0, 4, 30000);
        let id = t.activate(1, &params(5000), &LegParams::default(), 0);
        assert_eq!(t.resolve(id), Some(1));
        // From A (slot 4 = session 1, leg A RTP): B's address is not known yet. The packet is
        // dropped but latches A all the same.
        assert_eq!(
            t.on_packet(4, addr("10.0.0.1:5000"), &rtp(), 1),
            Verdict::DropLatched {
                reason: DropReason::NoDestination,
                latch: addr("10.0.0.1:5000")
            }
        );
        assert_eq!(
            t.on_packet(4, addr("10.0.0.1:5000"), &rtp(), 1),
            Verdict::Drop(DropReason::NoDestination)
        );
        t.update(1, LegIndex::B, &params(6000));
        assert_eq!(
            t.on_packet(4, addr("10.0.0.1:5000"), &rtp(), 2),
            Verdict::Forward {
                out_slot: 6,
                dest: Some(addr("10.0.0.1:6000")),
                latch: None
            }
        );
        // B's first packet latches its (NATed) source; from then on leg B sends connected.
        assert_eq!(
            t.on_packet(6, addr("192.0.2.7:40000"), &rtp(), 3),
            Verdict::Forward {
                out_slot: 4,
                dest: None,
                latch: Some(addr("192.0.2.7:40000"))
            }
        );
        assert_eq!(
            t.on_packet(4, addr("10.0.0.1:5000"), &rtp(), 4),
            Verdict::Forward {
                out_slot: 6,
                dest: None,
                latch: None
            }
        );
        assert_eq!(
            t.on_packet(6, addr("192.0.2.8:1"), &rtp(), 5),
            Verdict::Drop(DropReason::ForeignSource)
        );
        let stats = t.stats(1);
        assert_eq!(stats.legs[0].rtp.packets, 4);
        assert_eq!(stats.legs[0].rtp.errors, 2);
        assert_eq!(stats.legs[1].rtp.packets, 1);
        assert_eq!(stats.legs[1].rtp.errors, 1);
    }

    #[test]
    fn rtcp_follows_mux_choice_of_the_out_leg() {
        let mut t = Sessions::new(0, 1, 30000);
        let mut muxed = params(6000);
        muxed.rtcp_mux = true;
        t.activate(0, &params(5000), &muxed, 0);
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 1];
        // RTCP from A's RTCP port goes out of B's RTP port (mux).
        assert_eq!(
            t.on_packet(1, addr("10.0.0.1:5001"), &rr, 1),
            Verdict::Forward {
                out_slot: 2,
                dest: Some(addr("10.0.0.1:6000")),
                latch: Some(addr("10.0.0.1:5001"))
            }
        );
        // Muxed RTCP from B goes to A's RTCP port.
        assert!(matches!(
            t.on_packet(2, addr("10.0.0.1:6000"), &rr, 2),
            Verdict::Forward { out_slot: 1, .. }
        ));
        // RTP on an RTCP port is garbage.
        assert_eq!(
            t.on_packet(1, addr("10.0.0.1:5001"), &rtp(), 3),
            Verdict::Drop(DropReason::Malformed)
        );
    }

    #[test]
    fn stale_ids_do_not_resolve_and_timers_expire_and_unlatch() {
        let mut t = Sessions::new(3, 2, 30000);
        let id = t.activate(0, &params(5000), &params(6000), 0);
        t.deactivate(0);
        assert_eq!(t.resolve(id), None);
        let id2 = t.activate(0, &params(5000), &params(6000), 0);
        assert_ne!(id, id2);
        let _ = t.on_packet(0, addr("10.0.0.1:5000"), &rtp(), 1_000);
        let mut out = [None; 4];
        t.on_timer(0, 2_000, 10_000, 500, &mut out);
        assert_eq!(out[0], Some(TimerAction::Unlatch { slot: 0 }));
        t.on_timer(0, 20_000, 10_000, 500, &mut out);
        assert_eq!(out[0], Some(TimerAction::Expire { slot: 0 }));
    }

    #[test]
    fn strict_source_never_unlatches_and_resignalling_resets_latch() {
        let mut t = Sessions::new(0, 1, 30000);
        let mut strict = params(5000);
        strict.strict_source = true;
        t.activate(0, &strict, &params(6000), 0);
        let _ = t.on_packet(0, addr("10.0.0.1:5000"), &rtp(), 1);
        let mut out = [None; 4];
        t.on_timer(0, 5_000, 1_000_000, 10, &mut out);
        assert_eq!(out, [None; 4]);
        let mut moved = strict;
        moved.rtp = Some(addr("10.0.0.9:7000"));
        assert_eq!(t.update(0, LegIndex::A, &moved), [Some(0), None]);
    }

    fn event_packet(pt: u8, seq: u16, ts: u32, event: u8, end: bool, duration: u16) -> Vec<u8> {
        let mut p = vec![0x80, pt, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&ts.to_be_bytes());
        let flags = if end { 0x80 } else { 0 } | 10;
        p.extend_from_slice(&[event, flags]);
        p.extend_from_slice(&duration.to_be_bytes());
        p
    }

    fn events(payload_type: Option<u8>) -> DtmfOptions {
        DtmfOptions {
            event_payload_type: payload_type,
            ..DtmfOptions::default()
        }
    }

    fn drained(t: &mut Sessions) -> Vec<DtmfReport> {
        let mut v = Vec::new();
        t.drain_dtmf(|r| v.push(r));
        v
    }

    #[test]
    fn telephone_events_on_the_signalled_type_are_reported_once_and_still_relayed() {
        let mut t = Sessions::new(0, 2, 30000);
        let id = t.activate(1, &params(5000), &params(6000), 0);
        t.set_dtmf(1, LegIndex::A, &events(Some(101))).unwrap();
        let a = addr("10.0.0.1:5000");
        // '#': three updates, then the end packet three times.
        let durations = [160u16, 320, 480, 800, 800, 800];
        for (i, &d) in durations.iter().enumerate() {
            let pkt = event_packet(101, 7 + i as u16, 4000, 11, i >= 3, d);
            assert!(matches!(
                t.on_packet(4, a, &pkt, 1),
                Verdict::Forward { out_slot: 6, .. }
            ));
        }
        assert_eq!(
            drained(&mut t),
            [DtmfReport {
                id,
                leg: LegIndex::A,
                digit: '#',
                duration_ms: 100,
                source: crate::api::DtmfSource::Rfc4733,
                at_ns: 1,
            }]
        );
        // The same payload under another payload type is not an event; nor is leg B's.
        let pkt = event_packet(96, 20, 9000, 1, true, 800);
        let _ = t.on_packet(4, a, &pkt, 2);
        let pkt = event_packet(101, 20, 9000, 1, true, 800);
        let _ = t.on_packet(6, addr("10.0.0.1:6000"), &pkt, 2);
        assert!(drained(&mut t).is_empty());
        // Cleared: nothing more.
        t.set_dtmf(1, LegIndex::A, &events(None)).unwrap();
        let pkt = event_packet(101, 30, 12000, 2, true, 800);
        let _ = t.on_packet(4, a, &pkt, 3);
        assert!(drained(&mut t).is_empty());
    }

    #[test]
    fn a_played_leg_gets_nothing_relayed_but_its_own_keys_still_count() {
        let mut t = Sessions::new(0, 1, 30000);
        t.activate(0, &params(5000), &params(6000), 0);
        t.set_dtmf(0, LegIndex::A, &events(Some(101))).unwrap();
        let (a, b) = (addr("10.0.0.1:5000"), addr("10.0.0.1:6000"));
        assert_eq!(t.play_target(0, LegIndex::A), Some((0, Some(a))));
        t.set_playing(0, LegIndex::A, true);
        assert_eq!(
            t.on_packet(2, b, &rtp(), 1),
            Verdict::DropLatched {
                reason: DropReason::Playback,
                latch: b
            }
        );
        assert_eq!(
            t.on_packet(2, b, &rtp(), 1),
            Verdict::Drop(DropReason::Playback)
        );
        // B latched on that packet; A's packets still go to B, and A's keys are heard.
        assert!(matches!(
            t.on_packet(0, a, &rtp(), 2),
            Verdict::Forward { out_slot: 2, .. }
        ));
        let _ = t.on_packet(0, a, &event_packet(101, 1, 160, 4, true, 400), 3);
        assert_eq!(drained(&mut t)[0].digit, '4');
        // A latched: playback goes out of A's connected socket.
        assert_eq!(t.play_target(0, LegIndex::A), Some((0, None)));
        t.set_playing(0, LegIndex::A, false);
        assert!(matches!(
            t.on_packet(2, b, &rtp(), 4),
            Verdict::Forward { out_slot: 0, .. }
        ));
        assert_eq!(t.play_target(0, LegIndex::B), Some((2, None)));
        let mut fresh = Sessions::new(0, 1, 30000);
        fresh.activate(0, &LegParams::default(), &LegParams::default(), 0);
        assert_eq!(fresh.play_target(0, LegIndex::A), None);
    }

    #[test]
    fn a_held_leg_gets_nothing_relayed_until_released_and_still_sends() {
        let mut t = Sessions::new(0, 1, 30000);
        t.activate(0, &params(5000), &params(6000), 0);
        let (a, b) = (addr("10.0.0.1:5000"), addr("10.0.0.1:6000"));
        t.set_held(0, LegIndex::A, true);
        // B's first packet latches B but is not relayed to the held caller.
        assert_eq!(
            t.on_packet(2, b, &rtp(), 1),
            Verdict::DropLatched {
                reason: DropReason::Held,
                latch: b
            }
        );
        // The held side's own media still goes out.
        assert!(matches!(
            t.on_packet(0, a, &rtp(), 2),
            Verdict::Forward { out_slot: 2, .. }
        ));
        // A clip played to a held leg is still the reason its relay is closed.
        t.set_playing(0, LegIndex::A, true);
        assert_eq!(
            t.on_packet(2, b, &rtp(), 3),
            Verdict::Drop(DropReason::Playback)
        );
        t.set_playing(0, LegIndex::A, false);
        t.set_held(0, LegIndex::A, false);
        assert!(matches!(
            t.on_packet(2, b, &rtp(), 4),
            Verdict::Forward { out_slot: 0, .. }
        ));
    }

    #[test]
    fn a_mixed_legs_rtp_goes_to_the_mix_and_its_rtcp_is_relayed_or_ends_quietly() {
        let mut t = Sessions::new(0, 2, 30000);
        let (a, b, sup) = (
            addr("10.0.0.1:5000"),
            addr("10.0.0.1:6000"),
            addr("10.0.0.3:7000"),
        );
        // Session 0 the call (A mixed: whisper), session 1 the supervisor's leg alone.
        t.activate(0, &params(5000), &params(6000), 0);
        t.activate(1, &params(7000), &LegParams::default(), 0);
        t.set_mixed(0, LegIndex::A, true);
        t.set_mixed(1, LegIndex::A, true);
        assert_eq!(
            t.on_packet(0, a, &rtp(), 1),
            Verdict::Mix {
                latch: Some(a),
                in_key: 0
            }
        );
        assert!(matches!(
            t.on_packet(2, b, &rtp(), 1),
            Verdict::Forward { out_slot: 0, .. }
        ));
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 1];
        assert!(matches!(
            t.on_packet(1, addr("10.0.0.1:5001"), &rr, 2),
            Verdict::Forward { out_slot: 3, .. }
        ));
        assert_eq!(
            t.on_packet(4, sup, &rtp(), 2),
            Verdict::Mix {
                latch: Some(sup),
                in_key: 2
            }
        );
        assert_eq!(
            t.on_packet(5, addr("10.0.0.3:7001"), &rr, 3),
            Verdict::DropLatched {
                reason: DropReason::NoDestination,
                latch: addr("10.0.0.3:7001")
            }
        );
        assert_eq!(
            t.stats(1).legs[0].rtcp.errors,
            0,
            "the supervisor's RTCP ends here"
        );
        t.set_mixed(0, LegIndex::A, false);
        assert!(matches!(
            t.on_packet(0, a, &rtp(), 4),
            Verdict::Forward { out_slot: 2, .. }
        ));
    }

    #[test]
    fn rtcp_of_a_transcoded_leg_ends_here_and_gives_the_round_trip_to_our_sr() {
        let mut t = Sessions::new(0, 1, 30000);
        let mut muxed = params(6000);
        muxed.rtcp_mux = true;
        t.activate(0, &params(5000), &muxed, 0);
        // Our reports go to A's RTCP port (signalled, then latched) and B's RTP port (mux).
        assert_eq!(
            t.rtcp_target(0, LegIndex::A),
            Some((1, Some(addr("10.0.0.1:5001"))))
        );
        assert_eq!(
            t.rtcp_target(0, LegIndex::B),
            Some((2, Some(addr("10.0.0.1:6000"))))
        );
        t.set_transcode(0, LegIndex::A, true);
        t.set_transcode(0, LegIndex::B, true);
        // A's RTP (seq 7, 8) and then A's SR: the SR is consumed, latching A's RTCP socket.
        let mut a_rtp = rtp();
        a_rtp[1] = 8;
        a_rtp[8..12].copy_from_slice(&0xaaaa_u32.to_be_bytes());
        for seq in [7u16, 8] {
            a_rtp[2..4].copy_from_slice(&seq.to_be_bytes());
            assert!(matches!(
                t.on_packet(0, addr("10.0.0.1:5000"), &a_rtp, 1),
                Verdict::Transcode { out_slot: 2, .. }
            ));
        }
        let ntp = 0x0000_1234_5678_0000u64;
        let mut sr = vec![0x80, 200, 0, 6];
        sr.extend_from_slice(&0xaaaa_u32.to_be_bytes());
        sr.extend_from_slice(&ntp.to_be_bytes());
        sr.extend_from_slice(&[0; 12]);
        let a_rtcp = addr("10.0.0.1:5001");
        assert_eq!(
            t.on_packet(1, a_rtcp, &sr, 1_000_000_000),
            Verdict::Consumed {
                latch: Some(a_rtcp)
            }
        );
        assert_eq!(t.rtcp_target(0, LegIndex::A), Some((1, None)));
        // Our block about A's stream echoes its SR, held 0.5 s.
        let block = t.report_block(0, LegIndex::A, 1_500_000_000).unwrap();
        assert_eq!(
            (
                block.ssrc,
                block.extended_highest_seq,
                block.cumulative_lost
            ),
            (0xaaaa, 8, 0)
        );
        assert_eq!((block.lsr, block.dlsr), (0x1234_5678, 32_768));
        assert_eq!(t.report_block(0, LegIndex::B, 0), None, "B sent nothing");
        // Our SR to A leaves at 2 s; A's RR about our SSRC echoes it 0.25 s held, 0.28 s on.
        t.on_our_sender_report(0, LegIndex::A, 0xc0de, 0x0001_0000, 2_000_000_000);
        let mut rr = vec![0x81, 201, 0, 7];
        rr.extend_from_slice(&0xaaaa_u32.to_be_bytes());
        rr.extend_from_slice(&0xc0de_u32.to_be_bytes());
        rr.extend_from_slice(&[0; 12]);
        rr.extend_from_slice(&0x0001_0000_u32.to_be_bytes());
        rr.extend_from_slice(&16_384_u32.to_be_bytes());
        assert_eq!(
            t.on_packet(1, a_rtcp, &rr, 2_280_000_000),
            Verdict::Consumed { latch: None }
        );
        assert_eq!(t.stats(0).legs[0].quality.rtt_us, Some(30_000));
        // Towards a leg without an address, or one being played to, it ends here all the
        // same, not in error.
        t.set_playing(0, LegIndex::B, true);
        assert_eq!(
            t.on_packet(1, a_rtcp, &rr, 2_290_000_000),
            Verdict::Consumed { latch: None }
        );
        t.set_playing(0, LegIndex::B, false);
        t.update(0, LegIndex::B, &LegParams::default());
        assert_eq!(
            t.on_packet(1, a_rtcp, &rr, 2_290_000_000),
            Verdict::Consumed { latch: None }
        );
        assert_eq!(t.stats(0).legs[0].rtcp.errors, 0);
        t.update(0, LegIndex::B, &muxed);
        // Relayed again once the plan is gone.
        t.set_transcode(0, LegIndex::A, false);
        assert!(matches!(
            t.on_packet(1, a_rtcp, &rr, 2_300_000_000),
            Verdict::Forward { out_slot: 2, .. }
        ));
    }

    proptest::proptest! {
        /// Hostile traffic (garbage, strangers, any port of the session) interleaved with a real
        /// call never stops the real call's packets from being relayed.
        #[test]
        fn hostile_traffic_never_kills_a_latched_stream(
            noise in proptest::collection::vec(
                (0u32..4, 0u8..4, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)),
                0..200,
            )
        ) {
            let mut t = Sessions::new(0, 1, 30000);
            t.activate(0, &params(5000), &params(6000), 0);
            let a = addr("10.0.0.1:5000");
            let b = addr("10.0.0.1:6000");
            // Both legs latch first.
            let _ = t.on_packet(0, a, &rtp(), 1);
            let _ = t.on_packet(2, b, &rtp(), 1);
            for (i, (slot, who, bytes)) in noise.iter().enumerate() {
                let src = addr(&format!("192.0.2.{who}:9999"));
                let _ = t.on_packet(*slot, src, bytes, 2 + i as u64);
                let v = t.on_packet(0, a, &rtp(), 2 + i as u64);
                proptest::prop_assert_eq!(v, Verdict::Forward { out_slot: 2, dest: None, latch: None });
                let v = t.on_packet(2, b, &rtp(), 2 + i as u64);
                proptest::prop_assert_eq!(v, Verdict::Forward { out_slot: 0, dest: None, latch: None });
            }
        }
    }
}
