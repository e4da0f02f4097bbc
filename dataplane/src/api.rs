//! The data plane's interface to the control plane: commands in, events out, one pair of bounded
//! SPSC rings per core. Everything that crosses between threads is in this file.

use std::net::SocketAddr;

/// Identifies a session across cores. `generation` makes a stale id (a session deleted and its
/// slot reused) fail instead of touching someone else's call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId {
    pub core: u16,
    pub slot: u32,
    pub generation: u32,
}

/// The two sides of a relayed call. Media received from leg A is sent out of leg B's sockets to
/// leg B's peer, and the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegIndex {
    A = 0,
    B = 1,
}

impl LegIndex {
    pub fn other(self) -> LegIndex {
        match self {
            LegIndex::A => LegIndex::B,
            LegIndex::B => LegIndex::A,
        }
    }
}

/// What signalling told us about one leg's peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LegParams {
    /// Where the peer said (in SDP) it receives RTP; used until its own packets latch the address.
    pub rtp: Option<SocketAddr>,
    /// Where the peer receives RTCP (`a=rtcp`, or RTP port + 1).
    pub rtcp: Option<SocketAddr>,
    /// The peer multiplexes RTCP on the RTP port (RFC 5761).
    pub rtcp_mux: bool,
    /// Strict source: after latching, packets from any other address are dropped and the latch
    /// never moves. Without it a leg that falls silent unlatches, so a NAT rebinding re-latches.
    pub strict_source: bool,
}

/// A codec the cores can decode and encode when two legs do not share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// Opus, mono (RFC 7587: `opus/48000/2` in SDP whatever is sent).
    Opus,
    /// G.722 at 64 kbit/s: 16 kHz audio on an 8 kHz RTP clock (RFC 3551's historical quirk).
    G722,
    /// G.729 (Annex A) at 8 kbit/s: 10 ms frames of 10 bytes; Annex B SID frames (2 bytes)
    /// are understood, and sent (VAD on) to a peer whose [`CodecOptions::dtx`] says it takes
    /// Annex B.
    G729,
}

impl Codec {
    /// The RTP timestamp rate.
    pub fn rtp_clock_hz(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma | Codec::G722 | Codec::G729 => 8000,
            Codec::Opus => 48_000,
        }
    }
}

/// What one leg's peer sends and expects to receive (the codec signalling settled on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegCodec {
    pub payload_type: u8,
    pub codec: Codec,
    /// The leg's telephone-event (RFC 4733) payload type, whose clock is the codec's RTP
    /// clock; `None` when the peer takes none (events towards it are then dropped).
    pub event_payload_type: Option<u8>,
    /// The packet duration the peer asked for (SDP `a=ptime`), ms; 0 when it did not say.
    /// When both legs say and differ, what is sent to this leg is repacketised to it (10 to
    /// 60 ms in steps of 10; Opus takes 10, 20, 40 or 60); otherwise each packet out carries
    /// what the packet in did.
    pub ptime_ms: u8,
    /// What the peer asked of the stream sent to it beyond the codec (SDP `a=fmtp`).
    pub options: CodecOptions,
}

/// Per-leg codec options from the peer's `a=fmtp`: how what we encode towards it is sent.
/// They change only what is sent to the leg; what it sends is decoded whatever they say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CodecOptions {
    /// Opus in-band forward error correction (`useinbandfec=1`): each packet also carries a
    /// coarse copy of the previous frame, which the receiver decodes when that one is lost.
    pub fec: bool,
    /// Discontinuous transmission: silence is sent as occasional comfort-noise updates or not
    /// at all, the timestamps jumping over the gap and the sequence numbers not. Opus:
    /// `usedtx=1`; G.729: Annex B, which `annexb=yes` or no `annexb` at all means (RFC 7261
    /// §4.1, RFC 4856), `annexb=no` turns off.
    pub dtx: bool,
}

impl CodecOptions {
    /// Neither: every frame sent, no FEC.
    pub const NONE: CodecOptions = CodecOptions {
        fec: false,
        dtx: false,
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Allocates a session (four ports) on this core.
    Create {
        token: u64,
        a: LegParams,
        b: LegParams,
    },
    /// Replaces what signalling knows about one leg (answer, re-INVITE).
    Update {
        token: u64,
        id: SessionId,
        leg: LegIndex,
        params: LegParams,
    },
    Delete {
        token: u64,
        id: SessionId,
    },
    Query {
        token: u64,
        id: SessionId,
    },
    /// Plays clip `clip` (an index into [`crate::engine::Config::clips`]) in a loop to `leg`'s
    /// peer as RTP with `payload_type` 0 (PCMU) or 8 (PCMA), replacing whatever it played. While
    /// it plays, nothing from the other leg is relayed to it. Answered with `Updated`.
    Play {
        token: u64,
        id: SessionId,
        leg: LegIndex,
        clip: u16,
        payload_type: u8,
    },
    /// Plays the clips of `once` to `leg`'s peer one after the other, once each, then clip
    /// `then` in a loop (an announcement followed by the hold music), as one RTP stream: when
    /// the leg was already playing, its SSRC, sequence and timestamps carry on. Otherwise as
    /// [`Command::Play`]. With `then` = [`PLAY_ONCE_ONLY`] nothing loops: after the last
    /// frame of `once` (which must not be empty) the playback stops by itself, relaying to the
    /// leg resumes as after `StopPlay`, and the core reports [`Event::PlayDone`]. Answered
    /// with `Updated`.
    PlaySequence {
        token: u64,
        id: SessionId,
        leg: LegIndex,
        once: ClipSequence,
        then: u16,
        payload_type: u8,
    },
    /// Stops playing to `leg` (no-op if it was not playing); relaying to it resumes. Answered
    /// with `Updated`.
    StopPlay {
        token: u64,
        id: SessionId,
        leg: LegIndex,
    },
    /// Holds (or releases) relaying to `leg`'s peer: while held, what the other leg sends is
    /// dropped as `held` instead of relayed (clips and mixes still reach it). The B2BUA holds
    /// its caller between an offer that may bring transcoding and the answer's codec plan.
    /// Answered with `Updated`.
    HoldRelay {
        token: u64,
        id: SessionId,
        leg: LegIndex,
        held: bool,
    },
    /// How DTMF from `leg`'s peer is heard and passed on (see [`DtmfOptions`]): the core
    /// reports each key pressed on that leg once as [`Event::Dtmf`]. Answered with `Updated`,
    /// or `Failed` with `UnsupportedCodec` when in-band detection names a codec other than
    /// G.711.
    SetDtmf {
        token: u64,
        id: SessionId,
        leg: LegIndex,
        options: DtmfOptions,
    },
    /// Sends DTMF keys to `leg`'s peer inside the RTP stream it already receives (relayed,
    /// transcoded or played): each key replaces the stream's packets for its duration, as
    /// RFC 4733 events or as tones in its G.711 audio (see [`DtmfSend`]); the stream's SSRC,
    /// sequence and timestamps run on unbroken. Keys sent while keys are still queued follow
    /// them. Answered with `Updated`, or `Failed` with `UnsupportedCodec` for tones in a codec
    /// other than G.711, `UnsupportedPayloadType` when more keys are queued than fit.
    SendDtmf {
        token: u64,
        id: SessionId,
        leg: LegIndex,
        send: DtmfSend,
    },
    /// Sets the session's codec plan: what each leg's peer uses (`[A, B]`). When the codecs
    /// differ, RTP is transcoded in both directions (telephone events mapped), with our own
    /// SSRC, sequence and timestamps per direction; RTCP is still relayed. When they are the
    /// same, or with `None`, packets are relayed untouched. The codec states are allocated
    /// here, not per packet. Answered with `Updated`, or `Failed` with `UnsupportedCodec`.
    SetCodecs {
        token: u64,
        id: SessionId,
        codecs: Option<[LegCodec; 2]>,
    },
    /// Makes session `supervisor` (one made with `Create` on this core, its leg A facing the
    /// supervisor's phone; its leg B's sockets are closed here) the supervisor leg of session
    /// `id` in `mode` (see [`MonitorMode`] and `crate::monitor`). `codecs` are what the peers
    /// of `id`'s leg A, `id`'s leg B and the supervisor use. Codec states and mixing buffers
    /// are allocated here. Answered with `Updated`, or `Failed` with `UnknownSession`,
    /// `MonitorConflict` or `UnsupportedCodec`.
    AttachMonitor {
        token: u64,
        id: SessionId,
        supervisor: SessionId,
        mode: MonitorMode,
        codecs: [LegCodec; 3],
    },
    /// Changes the mode of the supervisor attached to session `id`, live: the mixed streams
    /// carry on (SSRC, sequence, timestamps). Answered with `Updated`.
    SetMonitorMode {
        token: u64,
        id: SessionId,
        mode: MonitorMode,
    },
    /// Detaches the supervisor from session `id` (named by either session): A and B are relayed
    /// plainly again. The supervisor's session stays (`Delete` it, or attach it elsewhere).
    /// Deleting either session detaches too. Answered with `Updated`.
    DetachMonitor {
        token: u64,
        id: SessionId,
    },
    /// Session `id` (one made with `Create` on this core, its leg A facing the member's phone;
    /// its leg B's sockets are closed here) joins conference `conference` of this core (made
    /// on its first join; ids are the control plane's): its peer, speaking `codec`, hears
    /// every other member mixed and is heard by all of them (`crate::conference`). Codec
    /// states and buffers are allocated here. Answered with `Updated`, or `Failed` with
    /// `UnknownSession`, `ConferenceConflict` (already in a conference or a monitor, or the
    /// conference full) or `UnsupportedCodec`.
    JoinConference {
        token: u64,
        id: SessionId,
        conference: u32,
        codec: LegCodec,
    },
    /// Session `id` leaves its conference; the conference ends with its last member. The
    /// session stays (its leg A's RTP now goes nowhere; `Delete` it). Deleting a member's
    /// session leaves too. Answered with `Updated`, or `Failed` with `ConferenceConflict`
    /// when it is in none.
    LeaveConference {
        token: u64,
        id: SessionId,
    },
    /// Stops the core's thread after closing every socket.
    Shutdown,
}

/// What a supervisor attached to a call hears and who hears the supervisor. The supervisor
/// always hears caller (leg A) and agent (leg B) mixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorMode {
    /// Nobody hears the supervisor; A and B are relayed to each other untouched.
    Listen,
    /// The agent (leg B) hears the caller and the supervisor mixed; the caller hears the agent
    /// relayed untouched.
    Whisper,
    /// Three-way: both legs hear the other leg and the supervisor mixed.
    Barge,
}

/// How the core treats DTMF from one leg's peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DtmfOptions {
    /// The telephone-event payload type (RFC 4733, 8 kHz clock) the peer sends, or `None`:
    /// its events are parsed and reported.
    pub event_payload_type: Option<u8>,
    /// Listen for in-band tones in the peer's audio too: the payload type and codec of that
    /// audio (PCMU or PCMA). A press heard both ways is reported once (`crate::dtmf`).
    pub inband: Option<InbandAudio>,
    /// Keep the peer's DTMF from the other leg (PCI card entry): its telephone events are not
    /// relayed, and while an in-band tone is heard (with `inband` set) the relayed audio is
    /// silence.
    pub block: bool,
    /// The other leg's peer takes no telephone-event: this leg's telephone events are not
    /// relayed to it but each key sounds as DTMF tones in the audio it receives, given here
    /// (its payload type and G.711 codec). Tones heard in this leg's audio pass as they are.
    pub tones_to_other: Option<InbandAudio>,
    /// The other leg's peer takes telephone-event (given here) and this leg's peer sends its
    /// keys as tones (it signalled no telephone-event): each key the detector hears (needs
    /// `inband`) is sent to the other leg as RFC 4733 events in the stream it receives, and
    /// the tone itself is kept from it (silence on G.711, held back otherwise, as `block`
    /// does), so a low-bit-rate codec on that side does not garble it. This leg's own events,
    /// if it sends any after all, still pass. Not together with `tones_to_other` (the other
    /// leg's peer either takes events or not).
    pub events_to_other: Option<TelephoneEvents>,
}

/// The telephone-event format a leg's peer takes: payload type and clock (that of its audio).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvents {
    pub payload_type: u8,
    pub clock_hz: u32,
}

/// The audio a leg's peer sends, for in-band DTMF detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InbandAudio {
    pub payload_type: u8,
    pub codec: Codec,
}

/// DTMF keys to send to one leg's peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfSend {
    pub keys: DtmfKeys,
    /// How long each key sounds, and the pause after it.
    pub duration_ms: u16,
    pub pause_ms: u16,
    /// Level in -dBm0 (0 loudest, 63 quietest): the events' volume field; for tones the high
    /// group's level, the low group 2 dB below.
    pub volume: u8,
    pub via: DtmfVia,
}

/// How keys reach a leg's peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfVia {
    /// RFC 4733 events on the payload type the peer takes telephone-event on, whose clock is
    /// that of the leg's codec.
    Events { payload_type: u8, clock_hz: u32 },
    /// Tones in the peer's PCMU or PCMA audio of this payload type.
    Tones { payload_type: u8, codec: Codec },
}

/// Most keys one [`DtmfSend`] carries.
pub const MAX_DTMF_KEYS: usize = 16;

/// Up to [`MAX_DTMF_KEYS`] RFC 4733 event codes (0–15), inline so [`Command`] stays `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DtmfKeys {
    len: u8,
    events: [u8; MAX_DTMF_KEYS],
}

impl DtmfKeys {
    /// The keys of `digits` (`0`-`9`, `*`, `#`, `A`-`D`); `None` for anything else, none, or
    /// too many.
    pub fn new(digits: &str) -> Option<DtmfKeys> {
        let mut keys = DtmfKeys::default();
        for c in digits.chars() {
            let event = tandem_media::rfc4733::dtmf_event(c)?;
            *keys.events.get_mut(keys.len as usize)? = event;
            keys.len += 1;
        }
        (keys.len > 0).then_some(keys)
    }

    /// The event codes, in order.
    pub fn events(&self) -> &[u8] {
        &self.events[..self.len as usize]
    }
}

/// How a DTMF key press reached the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfSource {
    /// RFC 4733 telephone events.
    Rfc4733,
    /// Tones in the audio, found by the in-band detector.
    Inband,
}

impl DtmfSource {
    pub fn label(self) -> &'static str {
        match self {
            DtmfSource::Rfc4733 => "rfc4733",
            DtmfSource::Inband => "inband",
        }
    }
}

/// Clips a [`Command::PlaySequence`] plays at most before its loop.
pub const MAX_SEQUENCE: usize = 8;

/// `then` of a [`Command::PlaySequence`] that loops nothing: the clips of `once` are played
/// and the playback ends by itself with [`Event::PlayDone`]. No clip has this index (a core
/// holds far fewer clips).
pub const PLAY_ONCE_ONLY: u16 = u16::MAX;

/// Up to [`MAX_SEQUENCE`] clip indices, inline so that [`Command`] stays `Copy` and the player
/// that holds them is sized at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClipSequence {
    len: u8,
    clips: [u16; MAX_SEQUENCE],
}

impl ClipSequence {
    /// No clips: play the loop at once.
    pub const EMPTY: ClipSequence = ClipSequence {
        len: 0,
        clips: [0; MAX_SEQUENCE],
    };

    /// None when there are more than [`MAX_SEQUENCE`] clips.
    pub fn new(clips: &[u16]) -> Option<ClipSequence> {
        if clips.len() > MAX_SEQUENCE {
            return None;
        }
        let mut s = ClipSequence::EMPTY;
        s.clips[..clips.len()].copy_from_slice(clips);
        s.len = clips.len() as u8;
        Some(s)
    }

    pub fn as_slice(&self) -> &[u16] {
        &self.clips[..self.len as usize]
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Created {
        token: u64,
        id: SessionId,
        /// The RTP port of each leg's socket (RTCP is the next port). Leg A's port is advertised to
        /// A's peer, leg B's to B's peer.
        ports: [u16; 2],
    },
    Updated {
        token: u64,
    },
    Deleted {
        token: u64,
        stats: SessionStats,
    },
    Stats {
        token: u64,
        stats: SessionStats,
    },
    Failed {
        token: u64,
        error: CoreError,
    },
    /// The session saw no media for the inactivity timeout and was removed by the core.
    TimedOut {
        id: SessionId,
        stats: SessionStats,
    },
    /// A DTMF key pressed on `leg` (a leg `SetDtmf` listens to), reported once, when the key
    /// is released, however many ways it was sent.
    Dtmf {
        id: SessionId,
        leg: LegIndex,
        digit: char,
        /// RFC 4733: the sender's own duration; in-band: as heard (within a few ms).
        duration_ms: u32,
        source: DtmfSource,
        /// CLOCK_MONOTONIC nanoseconds when the press began (its first event packet arrived,
        /// or its tone started in the audio as it arrived).
        at_ns: u64,
    },
    /// A [`Command::PlaySequence`] with `then` = [`PLAY_ONCE_ONLY`] sent its last frame to
    /// `leg` and stopped by itself; relaying to the leg has resumed. Only a playback that ends
    /// by itself is reported: not one that `StopPlay`, a later `Play`/`PlaySequence` on the
    /// leg, or the session's end (delete or timeout) cut short.
    PlayDone {
        id: SessionId,
        leg: LegIndex,
        /// CLOCK_MONOTONIC nanoseconds of the core's pass that queued the last frame.
        at_ns: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoreError {
    /// The core is at its session budget (ng `load limit`, SIP 503).
    LoadLimit,
    /// No free ports could be bound on this core.
    PortsExhausted,
    /// The id names no live session (deleted, timed out, or never existed).
    UnknownSession,
    /// The core did not answer in time or its command ring was full: it is overwhelmed.
    Unresponsive,
    /// `Play` named a clip the engine was not started with.
    UnknownClip,
    /// `Play` asked for a payload type other than 0 (PCMU) or 8 (PCMA).
    UnsupportedPayloadType,
    /// `SetCodecs` named a pair the core cannot transcode, or a codec library refused it.
    UnsupportedCodec,
    /// `AttachMonitor` named a session that already takes part in a monitor, or the same
    /// session twice; or `SetMonitorMode` a session without one.
    MonitorConflict,
    /// `JoinConference` named a session already in a conference or a monitor, or a full
    /// conference; or `LeaveConference` a session in none.
    ConferenceConflict,
}

impl CoreError {
    pub fn reason(self) -> &'static str {
        match self {
            CoreError::LoadLimit => "load limit",
            CoreError::PortsExhausted => "ran out of ports",
            CoreError::UnknownSession => "unknown session",
            CoreError::Unresponsive => "media core unresponsive",
            CoreError::UnknownClip => "unknown clip",
            CoreError::UnsupportedPayloadType => "payload type cannot be played",
            CoreError::UnsupportedCodec => "codecs cannot be transcoded",
            CoreError::MonitorConflict => "session is already monitored or not monitored",
            CoreError::ConferenceConflict => {
                "session is already in a conference or in none, or the conference is full"
            }
        }
    }
}

/// Counters for one direction of one socket (what was received from a leg's peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamStats {
    pub packets: u64,
    pub bytes: u64,
    /// Packets received that were malformed, from a foreign source, or could not be forwarded.
    pub errors: u64,
    /// CLOCK_MONOTONIC nanoseconds of the last packet, 0 if none yet.
    pub last_seen_ns: u64,
    /// The address media is latched to (where we send), if any.
    pub peer: Option<SocketAddr>,
    pub local_port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LegStats {
    pub rtp: StreamStats,
    pub rtcp: StreamStats,
    /// Reception quality of the RTP this leg's peer sent (see `quality.rs`).
    pub quality: RtpQuality,
}

/// Reception quality of one leg's incoming RTP, measured as it enters Tandem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RtpQuality {
    /// The current source; `None` before the first RTP packet.
    pub ssrc: Option<u32>,
    /// The source's media payload type (its first packet's).
    pub payload_type: u8,
    /// RTP packets expected from the sequence numbers (every source of the call so far).
    pub expected: u64,
    /// Expected minus received (negative when duplicates arrived).
    pub lost: i64,
    /// Packets that arrived after a higher sequence number.
    pub reordered: u64,
    /// RFC 3550 interarrival jitter, now and at its highest, µs; `None` when the payload type's
    /// clock rate is unknown to the data plane (dynamic payload types).
    pub jitter_us: Option<u32>,
    pub max_jitter_us: Option<u32>,
    /// Round trip between Tandem and this leg's peer from relayed RTCP, last and largest, µs;
    /// `None` until a report block echoed a relayed sender report.
    pub rtt_us: Option<u32>,
    pub max_rtt_us: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionStats {
    pub legs: [LegStats; 2],
    /// CLOCK_MONOTONIC nanoseconds when the session was created.
    pub created_ns: u64,
}
