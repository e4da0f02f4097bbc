//! DTMF heard on the cores: RFC 4733 telephone events and, where asked, in-band tones, merged
//! into one report per key press.
//!
//! Per leg (`session index * 2 + leg`): an RFC 4733 [`EventReceiver`], and for a leg with
//! in-band detection a boxed [`Inband`] (its audio's decoder: G.711 tables, or a G.722
//! decoder of the lower band at 8 kHz, a libopus decoder at 8 kHz, or a G.729 decoder; PCM
//! buffers and a Q.24
//! [`DtmfDetector`]) allocated when `SetDtmf` turns it on, never per packet.
//!
//! ## One report per press
//!
//! A phone may send a press both ways (events and the tones in its audio), and the two views
//! start and end at slightly different moments. Each view, once its key is released, is a
//! press: a key and an interval of arrival time (events: first packet to the end packet;
//! tones: as the detector heard them). A press is reported unless the *other* source's last
//! reported press has the same key and an interval that overlaps it, each widened by
//! [`MERGE_SLACK_NS`]: then both are the same press, already reported. Two real presses of
//! one key are at least a 40 ms pause apart (Q.24's shortest), twice the widening, and the
//! detector places a tone's ends to within a few ms, so they never merge; one press seen twice overlaps whatever its two views' timing, so it never
//! doubles. The first view to finish is the one reported (its source says which).

use crate::api::{
    Codec, CoreError, DtmfKeys, DtmfOptions, DtmfSend, DtmfSource, DtmfVia, LegIndex, SessionId,
};
use tandem_media::codec::{Decoder, G722Decoder, G729Decoder, OpusDecoder};
use tandem_media::dtmf::DtmfDetector;
use tandem_media::g711::Law;
use tandem_media::rfc4733::{dtmf_digit, dtmf_event, EventReceiver, EventReport, TelephoneEvent};
use tandem_media::tones::{ToneGenerator, ToneSpec};

/// Reports held between two drains by the core (it drains after every batch; one packet
/// yields at most three).
pub const DTMF_QUEUE: usize = 256;

/// How far apart the two views of one press may lie and still be merged.
pub const MERGE_SLACK_NS: u64 = 10_000_000;

/// Audio decoded per detector call: 20 ms at 8 kHz (longer packets go in several calls).
const PCM_CHUNK: usize = 160;

/// Nanoseconds per sample at 8 kHz.
const SAMPLE_NS: u64 = 125_000;

/// A DTMF key press on a leg, for the core to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfReport {
    pub id: SessionId,
    pub leg: LegIndex,
    pub digit: char,
    pub duration_ms: u32,
    pub source: DtmfSource,
    /// CLOCK_MONOTONIC ns when the press began.
    pub at_ns: u64,
}

/// One view of a press: its key and when it was heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Press {
    digit: char,
    start_ns: u64,
    end_ns: u64,
}

impl Press {
    fn same_press_as(&self, other: &Press) -> bool {
        self.digit == other.digit
            && self.start_ns <= other.end_ns + 2 * MERGE_SLACK_NS
            && other.start_ns <= self.end_ns + 2 * MERGE_SLACK_NS
    }
}

/// The dedupe rule of the module doc: the last reported press per source.
#[derive(Debug, Clone, Copy, Default)]
struct Merger {
    last: [Option<Press>; 2],
}

impl Merger {
    /// Whether `press` from `source` is a press not yet reported (it is then remembered).
    fn admit(&mut self, source: DtmfSource, press: Press) -> bool {
        let (mine, other) = match source {
            DtmfSource::Rfc4733 => (0, 1),
            DtmfSource::Inband => (1, 0),
        };
        if self.last[other].is_some_and(|o| o.same_press_as(&press)) {
            return false;
        }
        self.last[mine] = Some(press);
        true
    }
}

/// What turns a leg's audio into the detector's 8 kHz PCM: G.711 tables, or a codec state of
/// the leg's own (allocated with the leg's `Inband`, never per packet). The variants differ in
/// size, but each lives inside its leg's boxed `Inband`, sized once at set-up.
#[allow(clippy::large_enum_variant)]
enum AudioDecoder {
    G711(Law),
    /// G.722's lower band alone, at 8 kHz (every DTMF frequency lies in it).
    G722(G722Decoder),
    /// libopus decoding straight at 8 kHz.
    Opus(OpusDecoder),
    /// G.729 (with Annex B SID frames), 8 kHz.
    G729(G729Decoder),
}

/// Longest payload decoded for the detector: 120 ms (Opus's maximum; a longer G.729 payload is
/// refused by its decoder and skipped) at 8 kHz, or as many G.722 bytes (one 8 kHz sample each).
const MAX_DECODED: usize = 960;

/// In-band detection on one leg's audio (G.711, G.722, Opus or G.729).
pub struct Inband {
    payload_type: u8,
    decoder: AudioDecoder,
    detector: DtmfDetector,
    pcm: [i16; PCM_CHUNK],
    /// A payload decoded to 8 kHz (G.722, Opus, G.729), before it reaches the detector.
    decoded: [i16; MAX_DECODED],
    /// The key being heard (reported by the detector, not yet released) and when it began.
    pressed: Option<(char, u64)>,
}

/// Decodes one payload with a codec's own decoder (8 kHz) and runs the detector over it, 20 ms
/// at a time. A payload the codec refuses (corrupt, or longer than 120 ms) is skipped: the
/// detector only misses its duration.
fn decode_and_detect(
    decoder: &mut impl Decoder,
    payload: &[u8],
    decoded: &mut [i16; MAX_DECODED],
    detector: &mut DtmfDetector,
) {
    let Ok(n) = decoder.decode(payload, decoded) else {
        return;
    };
    for pcm in decoded[..n].chunks(PCM_CHUNK) {
        detector.handle_frame(pcm);
    }
}

impl Inband {
    fn new(payload_type: u8, codec: Codec) -> Result<Self, Codec> {
        let decoder = match codec {
            Codec::Pcmu => AudioDecoder::G711(Law::Ulaw),
            Codec::Pcma => AudioDecoder::G711(Law::Alaw),
            Codec::G722 => AudioDecoder::G722(G722Decoder::narrowband()),
            Codec::Opus => AudioDecoder::Opus(OpusDecoder::new(8000).map_err(|_| codec)?),
            Codec::G729 => AudioDecoder::G729(G729Decoder::new()),
        };
        Ok(Inband {
            payload_type: payload_type & 0x7f,
            decoder,
            detector: DtmfDetector::new(),
            pcm: [0; PCM_CHUNK],
            decoded: [0; MAX_DECODED],
            pressed: None,
        })
    }

    /// Decodes one payload and runs the detector over it, 20 ms at a time. A payload the
    /// codec refuses (corrupt) is skipped: the detector only misses its duration.
    fn detect(&mut self, payload: &[u8]) {
        let det = &mut self.detector;
        match &mut self.decoder {
            AudioDecoder::G711(law) => {
                for codes in payload.chunks(PCM_CHUNK) {
                    let pcm = &mut self.pcm[..codes.len()];
                    law.decode(codes, pcm);
                    det.handle_frame(pcm);
                }
            }
            AudioDecoder::G722(d) => decode_and_detect(d, payload, &mut self.decoded, det),
            AudioDecoder::Opus(d) => decode_and_detect(d, payload, &mut self.decoded, det),
            AudioDecoder::G729(d) => decode_and_detect(d, payload, &mut self.decoded, det),
        }
    }

    /// Arrival time of the detector's sample `at`, the packet ending at `now_ns`.
    fn sample_ns(&self, at: u64, now_ns: u64) -> u64 {
        let ago = self.detector.samples_seen().saturating_sub(at);
        now_ns.saturating_sub(ago * SAMPLE_NS)
    }
}

#[derive(Default)]
struct LegDtmf {
    /// Each key's events start a key in tones towards the other leg (`tones_to_other`).
    translate: bool,
    /// Each key heard in the audio starts a key in events towards the other leg
    /// (`events_to_other`).
    tones_as_events: bool,
    events: EventReceiver,
    /// Arrival of the first packet of the event in progress.
    event_started_ns: u64,
    merger: Merger,
    inband: Option<Box<Inband>>,
}

/// A key translated for the other leg: the sender key (`index * 2 + leg`) of the leg whose
/// peer gets it, its event code, and how it is sent (events, or tones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translated {
    pub key: u32,
    pub event: u8,
    pub as_events: bool,
}

/// The DTMF state of every leg of one core, and the reports waiting for the core.
pub struct Dtmf {
    legs: Box<[LegDtmf]>,
    reports: Vec<DtmfReport>,
    /// Keys translated for the other leg, to be started on its sender after the batch.
    translated: std::collections::VecDeque<Translated>,
    /// Reports lost because the queue was full (the core did not drain it in time).
    pub overflow: u64,
}

/// The leg of a per-leg key (`index * 2 + leg`).
pub fn leg_index(key: u32) -> LegIndex {
    if key & 1 == 0 {
        LegIndex::A
    } else {
        LegIndex::B
    }
}

impl Dtmf {
    pub fn new(sessions: u32) -> Self {
        Dtmf {
            legs: (0..sessions as usize * 2)
                .map(|_| LegDtmf::default())
                .collect(),
            reports: Vec::with_capacity(DTMF_QUEUE),
            translated: std::collections::VecDeque::with_capacity(DTMF_QUEUE),
            overflow: 0,
        }
    }

    /// Forgets leg `key`'s state (a new session, or new options); in-band detection is set up
    /// (allocated) here when `options` ask for it.
    pub fn configure(&mut self, key: u32, options: &DtmfOptions) -> Result<(), Codec> {
        let inband = match options.inband {
            None => None,
            Some(audio) => Some(Box::new(Inband::new(audio.payload_type, audio.codec)?)),
        };
        if let Some(other) = options.tones_to_other {
            if !matches!(other.codec, Codec::Pcmu | Codec::Pcma) {
                return Err(other.codec);
            }
        }
        self.legs[key as usize] = LegDtmf {
            inband,
            translate: options.tones_to_other.is_some(),
            tones_as_events: options.events_to_other.is_some(),
            ..LegDtmf::default()
        };
        Ok(())
    }

    /// The next key translated for the other leg. Oldest first.
    pub fn pop_translated(&mut self) -> Option<Translated> {
        self.translated.pop_front()
    }

    /// The in-band payload type of leg `key`, if it listens for tones.
    pub fn inband_payload_type(&self, key: u32) -> Option<u8> {
        self.legs[key as usize]
            .inband
            .as_ref()
            .map(|i| i.payload_type)
    }

    /// The G.711 silence code of leg `key`'s audio, when it listens for tones in G.711 (other
    /// codecs have no code that is silence whatever the decoder's state: their packets are
    /// dropped instead while a tone is heard).
    pub fn silence_code(&self, key: u32) -> Option<u8> {
        match self.legs[key as usize].inband.as_deref()?.decoder {
            AudioDecoder::G711(law) => Some(law.silence()),
            _ => None,
        }
    }

    /// Feeds one telephone-event packet (`data`, the whole RTP packet) from leg `key`.
    pub fn on_event(&mut self, id: SessionId, key: u32, data: &[u8], now_ns: u64) {
        let Some(event) = crate::rtp::rtp_payload(data).and_then(|p| TelephoneEvent::parse(p).ok())
        else {
            return;
        };
        let timestamp = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
        let leg = &mut self.legs[key as usize];
        leg.events.handle_packet(timestamp, event);
        while let Some(report) = leg.events.poll_report() {
            let (event, duration) = match report {
                EventReport::Started { event, .. } => {
                    leg.event_started_ns = now_ns;
                    // Sounded at once, not at the end: the other peer hears the key as it is
                    // pressed (for a fixed length, as the length is not known yet).
                    if leg.translate && dtmf_digit(event).is_some() {
                        let t = Translated {
                            key: key ^ 1,
                            event,
                            as_events: false,
                        };
                        queue_translated(&mut self.translated, &mut self.overflow, t);
                    }
                    continue;
                }
                EventReport::Ended {
                    event, duration, ..
                } => (event, duration),
            };
            let Some(digit) = dtmf_digit(event) else {
                continue;
            };
            let press = Press {
                digit,
                start_ns: leg.event_started_ns,
                end_ns: now_ns,
            };
            if leg.merger.admit(DtmfSource::Rfc4733, press) {
                let report = DtmfReport {
                    id,
                    leg: leg_index(key),
                    digit,
                    // The telephone-event clock is 8 kHz (the rate every G.711 call signals).
                    duration_ms: duration as u32 / 8,
                    source: DtmfSource::Rfc4733,
                    at_ns: press.start_ns,
                };
                push(&mut self.reports, &mut self.overflow, report);
            }
        }
    }

    /// Feeds one audio packet from leg `key` (which listens for tones) to its detector.
    /// Returns whether a key's tones are in the audio now (for blocking).
    pub fn on_audio(&mut self, id: SessionId, key: u32, data: &[u8], now_ns: u64) -> bool {
        let LegDtmf {
            inband,
            merger,
            tones_as_events,
            ..
        } = &mut self.legs[key as usize];
        let Some(inband) = inband.as_deref_mut() else {
            return false;
        };
        let Some(payload) = crate::rtp::rtp_payload(data) else {
            return false;
        };
        inband.detect(payload);
        let (reports, overflow) = (&mut self.reports, &mut self.overflow);
        let (translated, mut translated_lost) = (&mut self.translated, 0);
        let mut finish = |digit, start_ns, end_ns: u64| {
            let press = Press {
                digit,
                start_ns,
                end_ns: end_ns.max(start_ns),
            };
            if merger.admit(DtmfSource::Inband, press) {
                let report = DtmfReport {
                    id,
                    leg: leg_index(key),
                    digit,
                    duration_ms: ((press.end_ns - start_ns) / 1_000_000) as u32,
                    source: DtmfSource::Inband,
                    at_ns: start_ns,
                };
                push(reports, overflow, report);
            }
        };
        // A new key: the one before it (if a key changed without a pause) ends where it
        // begins.
        while let Some(d) = inband.detector.poll_digit() {
            // Sent on at once (for a fixed length, as for events sounded as tones).
            if let (true, Some(event)) = (*tones_as_events, dtmf_event(d.key)) {
                let t = Translated {
                    key: key ^ 1,
                    event,
                    as_events: true,
                };
                queue_translated(translated, &mut translated_lost, t);
            }
            let start_ns = inband.sample_ns(d.at_sample, now_ns);
            if let Some((digit, began)) = inband.pressed.replace((d.key, start_ns)) {
                finish(digit, began, start_ns);
            }
        }
        if let Some((digit, began)) = inband.pressed {
            if inband.detector.active_key() != Some(digit) {
                inband.pressed = None;
                finish(
                    digit,
                    began,
                    inband.sample_ns(inband.detector.heard_until(), now_ns),
                );
            }
        }
        self.overflow += translated_lost;
        inband.detector.tone_present()
    }

    /// Hands every pending report to `f`, oldest first.
    pub fn drain(&mut self, mut f: impl FnMut(DtmfReport)) {
        for r in self.reports.drain(..) {
            f(r);
        }
    }
}

fn queue_translated(
    queue: &mut std::collections::VecDeque<Translated>,
    overflow: &mut u64,
    t: Translated,
) {
    if queue.len() == queue.capacity() {
        *overflow += 1;
    } else {
        queue.push_back(t);
    }
}

fn push(reports: &mut Vec<DtmfReport>, overflow: &mut u64, report: DtmfReport) {
    if reports.len() == reports.capacity() {
        *overflow += 1;
    } else {
        reports.push(report);
    }
}

/// The DTMF senders of one core: one slot per leg (`index * 2 + leg`, the leg whose peer
/// hears the keys), filled by `SendDtmf` (a command, not a packet) and kept, idle, until the
/// session ends.
pub struct Senders {
    slots: Box<[Option<Box<Sender>>]>,
}

impl Senders {
    pub fn new(sessions: u32) -> Self {
        Senders {
            slots: (0..sessions as usize * 2).map(|_| None).collect(),
        }
    }

    /// Queues `send` for leg `key`: after the keys still queued when it sends the same way,
    /// else in place of them.
    pub fn send(&mut self, key: u32, send: &DtmfSend) -> Result<(), CoreError> {
        let slot = &mut self.slots[key as usize];
        match slot {
            Some(s) if s.busy() && s.via == send.via => s.enqueue(&send.keys),
            _ => {
                *slot = Some(Box::new(Sender::new(send)?));
                Ok(())
            }
        }
    }

    /// Rewrites a packet going to leg `key`'s peer (see [`Sender::rewrite`]); its new length,
    /// and whether keys remain to be sent.
    pub fn rewrite(&mut self, key: u32, buf: &mut [u8], len: usize) -> (usize, bool) {
        match self
            .slots
            .get_mut(key as usize)
            .and_then(|s| s.as_deref_mut())
        {
            Some(s) => {
                let len = s.rewrite(buf, len);
                (len, s.busy())
            }
            None => (len, false),
        }
    }

    /// Makes sure leg `key` has a sender of tones in `audio`, idle, for keys translated from
    /// the other leg's events ([`Senders::sound`]).
    pub fn prepare_tones(
        &mut self,
        key: u32,
        audio: crate::api::InbandAudio,
    ) -> Result<(), CoreError> {
        self.prepare_translated(
            key,
            DtmfVia::Tones {
                payload_type: audio.payload_type,
                codec: audio.codec,
            },
        )
    }

    /// Makes sure leg `key` has a sender of RFC 4733 events, idle, for keys heard as tones
    /// in the other leg's audio ([`Senders::sound`]).
    pub fn prepare_events(
        &mut self,
        key: u32,
        events: crate::api::TelephoneEvents,
    ) -> Result<(), CoreError> {
        self.prepare_translated(
            key,
            DtmfVia::Events {
                payload_type: events.payload_type,
                clock_hz: events.clock_hz,
            },
        )
    }

    /// An idle sender `via` on leg `key` for translated keys; one already there that sends
    /// the same way is kept (with what it has queued).
    fn prepare_translated(&mut self, key: u32, via: DtmfVia) -> Result<(), CoreError> {
        let slot = &mut self.slots[key as usize];
        if slot.as_ref().is_none_or(|s| s.via != via) {
            *slot = Some(Box::new(Sender::idle(
                via,
                TRANSLATED_KEY_MS,
                TRANSLATED_PAUSE_MS,
                TRANSLATED_VOLUME,
            )?));
        }
        Ok(())
    }

    /// Queues one translated key on its leg's sender; false when there is none that sends
    /// the way it asks (a later `SendDtmf` the other way took the slot) or its queue is full.
    pub fn sound(&mut self, t: Translated) -> bool {
        match self.slots[t.key as usize].as_deref_mut() {
            Some(s) if matches!(s.via, DtmfVia::Events { .. }) == t.as_events => {
                s.push_event(t.event)
            }
            _ => false,
        }
    }

    /// Forgets leg `key`'s sender (its session ended).
    pub fn clear(&mut self, key: u32) {
        self.slots[key as usize] = None;
    }
}

/// Keys a [`Sender`] holds queued at most (one command's worth, and another queued behind).
const SEND_QUEUE: usize = 2 * crate::api::MAX_DTMF_KEYS;

/// A key translated from events to tones (or tones to events) sounds this long (Q.24 asks receivers to take 40 ms;
/// 100 ms is what phones send for a short press), with at least this pause before the next,
/// at -8 dBm0 (rtpengine's default for injected DTMF).
const TRANSLATED_KEY_MS: u16 = 100;
const TRANSLATED_PAUSE_MS: u16 = 60;
const TRANSLATED_VOLUME: u8 = 8;

/// RFC 4733 end packets per event: the end is sent three times (§2.5.1.4).
const END_PACKETS: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendState {
    /// Waiting for the stream's next packet to start the next key (if any) once the pause
    /// since `since_ts` has passed (`None`: at once).
    Between { since_ts: Option<u32> },
    /// Key `event` has been sounding since the stream's timestamp `start_ts`; `ends` end
    /// packets are sent.
    Sounding { event: u8, start_ts: u32, ends: u8 },
}

/// DTMF being sent to one leg's peer: rewrites the packets of the stream it receives.
pub struct Sender {
    via: DtmfVia,
    volume: u8,
    /// Duration and pause in the stream's clock.
    duration_ticks: u32,
    pause_ticks: u32,
    queue: [u8; SEND_QUEUE],
    head: usize,
    queued: usize,
    state: SendState,
    /// Timestamp step between the stream's packets (its ptime), learnt as it goes.
    step: u32,
    last_ts: Option<u32>,
    tone: Option<ToneGenerator>,
    law: Law,
}

/// Longest G.711 payload a tone is written into (the receive buffer's size).
const MAX_TONE_PACKET: usize = crate::io::PACKET_CAPACITY;

/// RTP fixed header we write for an event packet (no CSRCs, no extension, no padding).
const HEADER_LEN: usize = 12;

impl Sender {
    fn new(send: &DtmfSend) -> Result<Sender, CoreError> {
        let mut sender = Sender::idle(send.via, send.duration_ms, send.pause_ms, send.volume)?;
        sender.enqueue(&send.keys)?;
        Ok(sender)
    }

    /// A sender with nothing queued.
    fn idle(
        via: DtmfVia,
        duration_ms: u16,
        pause_ms: u16,
        volume: u8,
    ) -> Result<Sender, CoreError> {
        let (clock_hz, law) = match via {
            DtmfVia::Events { clock_hz, .. } => (clock_hz.max(1), Law::Ulaw),
            DtmfVia::Tones { codec, .. } => match codec {
                Codec::Pcmu => (8000, Law::Ulaw),
                Codec::Pcma => (8000, Law::Alaw),
                _ => return Err(CoreError::UnsupportedCodec),
            },
        };
        let ticks = |ms: u16| (ms as u64 * clock_hz as u64 / 1000) as u32;
        Ok(Sender {
            via,
            volume: volume.min(tandem_media::rfc4733::MAX_VOLUME),
            duration_ticks: ticks(duration_ms).max(1),
            pause_ticks: ticks(pause_ms),
            queue: [0; SEND_QUEUE],
            head: 0,
            queued: 0,
            state: SendState::Between { since_ts: None },
            step: clock_hz / 50,
            last_ts: None,
            tone: None,
            law,
        })
    }

    fn enqueue(&mut self, keys: &DtmfKeys) -> Result<(), CoreError> {
        if self.queued + keys.events().len() > SEND_QUEUE {
            return Err(CoreError::UnsupportedPayloadType);
        }
        for &e in keys.events() {
            self.push_event(e);
        }
        Ok(())
    }

    /// Queues one key; false when the queue is full.
    fn push_event(&mut self, event: u8) -> bool {
        if self.queued == SEND_QUEUE {
            return false;
        }
        self.queue[(self.head + self.queued) % SEND_QUEUE] = event;
        self.queued += 1;
        true
    }

    /// Whether keys are queued or one is still sounding.
    pub fn busy(&self) -> bool {
        self.queued > 0 || matches!(self.state, SendState::Sounding { .. })
    }

    /// Rewrites the RTP packet `buf[..len]` going to the leg's peer; returns its new length.
    /// RTCP (muxed) and packets outside a key pass untouched.
    pub fn rewrite(&mut self, buf: &mut [u8], len: usize) -> usize {
        let Some(payload) = crate::rtp::rtp_payload(&buf[..len]) else {
            return len;
        };
        let payload_at = payload.as_ptr() as usize - buf.as_ptr() as usize;
        let payload_len = payload.len();
        let ts = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        if let Some(last) = self.last_ts {
            let step = ts.wrapping_sub(last);
            if step > 0 && step < 1 << 16 {
                self.step = step;
            }
        }
        self.last_ts = Some(ts);
        if let SendState::Between { since_ts } = self.state {
            let paused = since_ts.is_none_or(|t| ts.wrapping_sub(t) >= self.pause_ticks);
            if !paused || self.queued == 0 {
                return len;
            }
            let event = self.queue[self.head];
            self.head = (self.head + 1) % SEND_QUEUE;
            self.queued -= 1;
            self.state = SendState::Sounding {
                event,
                start_ts: ts,
                ends: 0,
            };
            if let DtmfVia::Tones { .. } = self.via {
                let high = -(self.volume as f32);
                let key = tandem_media::rfc4733::dtmf_digit(event).unwrap_or('0');
                let on_ms = self.duration_ticks / 8;
                self.tone = ToneSpec::dtmf(key, on_ms, 0, high - 2.0, high)
                    .and_then(|spec| ToneGenerator::new(&spec, 8000))
                    .ok();
            }
        }
        let SendState::Sounding {
            event,
            start_ts,
            ends,
        } = self.state
        else {
            return len;
        };
        match self.via {
            DtmfVia::Events { payload_type, .. } => {
                let elapsed = ts.wrapping_sub(start_ts).saturating_add(self.step);
                let end = elapsed >= self.duration_ticks;
                let duration = elapsed.min(self.duration_ticks).min(u16::MAX as u32) as u16;
                let marker = ts == start_ts && ends == 0;
                buf[0] = 0x80;
                buf[1] = (marker as u8) << 7 | (payload_type & 0x7f);
                buf[4..8].copy_from_slice(&start_ts.to_be_bytes());
                let ev = TelephoneEvent {
                    event,
                    end,
                    volume: self.volume,
                    duration,
                };
                let written = ev.write(&mut buf[HEADER_LEN..]).unwrap_or(0);
                if end {
                    self.state = if ends + 1 >= END_PACKETS {
                        let ended = start_ts.wrapping_add(self.duration_ticks);
                        SendState::Between {
                            since_ts: Some(ended),
                        }
                    } else {
                        SendState::Sounding {
                            event,
                            start_ts,
                            ends: ends + 1,
                        }
                    };
                }
                HEADER_LEN + written
            }
            DtmfVia::Tones { payload_type, .. } => {
                if buf[1] & 0x7f == payload_type & 0x7f {
                    // G.711: one byte per sample.
                    let n = payload_len.min(MAX_TONE_PACKET);
                    let mut pcm = [0i16; MAX_TONE_PACKET];
                    if let Some(g) = self.tone.as_mut() {
                        g.fill(&mut pcm[..n]);
                    }
                    self.law
                        .encode(&pcm[..n], &mut buf[payload_at..payload_at + n]);
                }
                if ts.wrapping_sub(start_ts).saturating_add(self.step) >= self.duration_ticks {
                    let ended = start_ts.wrapping_add(self.duration_ticks);
                    self.state = SendState::Between {
                        since_ts: Some(ended),
                    };
                }
                len
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::InbandAudio;
    use tandem_media::tones::{ToneGenerator, ToneSpec};

    const ID: SessionId = SessionId {
        core: 0,
        slot: 0,
        generation: 1,
    };
    const MS: u64 = 1_000_000;

    fn packet(pt: u8, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, pt];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&7u32.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    /// A leg that sends PCMU (0) with telephone events on 101, and listens both ways.
    fn both_ways() -> Dtmf {
        let mut d = Dtmf::new(1);
        let options = DtmfOptions {
            event_payload_type: Some(101),
            inband: Some(InbandAudio {
                payload_type: 0,
                codec: Codec::Pcmu,
            }),
            block: false,
            tones_to_other: None,
            events_to_other: None,
        };
        d.configure(0, &options).unwrap();
        d
    }

    /// What a phone sends over time: per 20 ms, an audio packet (the key's tone while
    /// `tone` covers the frame, else silence) and, while `events` covers it, an event packet
    /// (three end packets after). Times in 20 ms frames; returns the reports.
    struct Phone {
        d: Dtmf,
        seq: u16,
        reports: Vec<DtmfReport>,
    }

    impl Phone {
        fn new() -> Self {
            Phone {
                d: both_ways(),
                seq: 0,
                reports: Vec::new(),
            }
        }

        /// Plays `key` from frame `from` for `frames`; its events from `ev_from` for
        /// `ev_frames` (none if 0); the whole run lasts `total` frames starting at `t0`.
        #[allow(clippy::too_many_arguments)]
        fn press(&mut self, t0: u64, total: u64, key: char, tone: (u64, u64), events: (u64, u64)) {
            let spec = ToneSpec::dtmf(key, 10_000, 0, -10.0, -8.0).unwrap();
            let mut g = ToneGenerator::new(&spec, 8000).unwrap();
            let code = tandem_media::rfc4733::dtmf_event(key).unwrap();
            let ev_ts = (t0 + events.0) as u32 * 160;
            for f in 0..total {
                let now = (t0 + f + 1) * 20 * MS;
                let mut pcm = [0i16; 160];
                if f >= tone.0 && f < tone.0 + tone.1 {
                    g.fill(&mut pcm);
                }
                let mut codes = [0u8; 160];
                Law::Ulaw.encode(&pcm, &mut codes);
                self.seq += 1;
                let audio = packet(0, self.seq, (t0 + f) as u32 * 160, &codes);
                self.d.on_audio(ID, 0, &audio, now);
                if events.1 > 0 && f >= events.0 && f < events.0 + events.1 + 3 {
                    let end = f >= events.0 + events.1 - 1;
                    let dur = ((f.min(events.0 + events.1 - 1) - events.0 + 1) * 160) as u16;
                    let flags = if end { 0x80 } else { 0 } | 10;
                    let [d0, d1] = dur.to_be_bytes();
                    self.seq += 1;
                    let ev = packet(101, self.seq, ev_ts, &[code, flags, d0, d1]);
                    self.d.on_event(ID, 0, &ev, now);
                }
                self.d.drain(|r| self.reports.push(r));
            }
        }

        fn heard(&self) -> Vec<(char, DtmfSource)> {
            self.reports.iter().map(|r| (r.digit, r.source)).collect()
        }
    }

    use DtmfSource::{Inband, Rfc4733};

    #[test]
    fn tones_alone_are_reported_once_with_their_start_and_duration() {
        let mut p = Phone::new();
        // 100 ms of '7' from frame 5 (100 ms in), nothing else.
        p.press(0, 20, '7', (5, 5), (0, 0));
        assert_eq!(p.heard(), [('7', Inband)]);
        let r = p.reports[0];
        // Frame 5 starts at 100 ms; it arrived at 120 ms (the end of its audio).
        assert!((95 * MS..=110 * MS).contains(&r.at_ns), "{}", r.at_ns);
        assert!((90..=125).contains(&r.duration_ms), "{}", r.duration_ms);
    }

    /// One phone's presses, each `(t0, total, key, tone, events)` as [`Phone::press`] takes.
    type Presses<'a> = &'a [(u64, u64, char, (u64, u64), (u64, u64))];

    fn heard(presses: Presses) -> Vec<(char, DtmfSource)> {
        let mut p = Phone::new();
        for &(t0, total, key, tone, events) in presses {
            p.press(t0, total, key, tone, events);
        }
        p.heard()
    }

    #[test]
    fn a_press_sent_both_ways_is_reported_once_whichever_view_comes_first() {
        // Events and tone together (the usual phone).
        let both = heard(&[(0, 25, '5', (5, 8), (5, 8))]);
        assert_eq!(both, [('5', Rfc4733)]);
        // Events late by 60 ms and ending after the tone is released: the tone is reported.
        let late = heard(&[(0, 30, '5', (5, 6), (8, 10))]);
        assert_eq!(late, [('5', Inband)]);
        // Events first and short, the tone lingering after their end (an event/tone
        // transition): still one.
        let lingering = heard(&[(0, 30, '#', (5, 12), (4, 3))]);
        assert_eq!(lingering, [('#', Rfc4733)]);
        // The tone only starts as the events end (no overlap but within the slack).
        let abutting = heard(&[(0, 30, '#', (8, 6), (4, 4))]);
        assert_eq!(abutting, [('#', Rfc4733)]);
    }

    #[test]
    fn two_presses_of_one_key_are_two_whatever_the_mix() {
        // '3' by events only, then 60 ms later '3' by tone only: two presses.
        let mixed = heard(&[(0, 10, '3', (0, 0), (2, 5)), (10, 20, '3', (0, 5), (0, 0))]);
        assert_eq!(mixed, [('3', Rfc4733), ('3', Inband)]);
        // Tone first, then events after Q.24's shortest pause (40 ms): two.
        let close = heard(&[(0, 6, '8', (1, 3), (0, 0)), (6, 10, '8', (0, 0), (0, 3))]);
        assert_eq!(close, [('8', Inband), ('8', Rfc4733)]);
        // Both ways, twice, 60 ms apart: two.
        let twice = heard(&[(0, 10, '3', (2, 5), (2, 5)), (10, 15, '3', (0, 5), (0, 5))]);
        assert_eq!(twice, [('3', Rfc4733), ('3', Rfc4733)]);
        // Different keys at once (a mis-sent pair) are both reported.
        let pair = heard(&[(0, 20, '1', (2, 6), (0, 0)), (20, 20, '2', (0, 0), (0, 6))]);
        assert_eq!(pair, [('1', Inband), ('2', Rfc4733)]);
    }

    /// 20 ms PCMU packets of a quiet stream through a sender of `digits`; what came out.
    fn sent(via: DtmfVia, digits: &str, packets: u16) -> Vec<Vec<u8>> {
        let send = DtmfSend {
            keys: DtmfKeys::new(digits).unwrap(),
            duration_ms: 100,
            pause_ms: 100,
            volume: 10,
            via,
        };
        let mut senders = Senders::new(1);
        senders.send(1, &send).unwrap();
        let mut busy = true;
        (0..packets)
            .map(|i| {
                let mut buf = [0u8; 2048];
                let p = packet(0, 500 + i, 9000 + 160 * i as u32, &[0xfe; 160]);
                buf[..p.len()].copy_from_slice(&p);
                assert!(busy || i > 0, "idle before the end");
                let (n, more) = senders.rewrite(1, &mut buf, p.len());
                busy = more;
                buf[..n].to_vec()
            })
            .collect()
    }

    #[test]
    fn events_replace_the_streams_packets_with_continuous_sequence_and_three_ends() {
        let via = DtmfVia::Events {
            payload_type: 101,
            clock_hz: 8000,
        };
        let out = sent(via, "1#", 40);
        let mut plan = Vec::new();
        for (i, p) in out.iter().enumerate() {
            // Sequence and SSRC are the stream's, whatever the packet became.
            assert_eq!(u16::from_be_bytes([p[2], p[3]]), 500 + i as u16);
            assert_eq!(&p[8..12], &7u32.to_be_bytes());
            if p[1] & 0x7f != 101 {
                assert_eq!(p.len(), 172, "audio passes untouched");
                plan.push('.');
                continue;
            }
            let ev = TelephoneEvent::parse(&p[12..]).unwrap();
            let ts = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
            // Each event keeps the timestamp of its first packet, which carries the marker.
            let first = out[..=i].iter().rposition(|q| q[1] & 0x80 != 0).unwrap();
            assert_eq!(ts, 9000 + 160 * first as u32);
            assert_eq!(ev.volume, 10);
            let expect = (160 * (i - first + 1)).min(800) as u16;
            assert_eq!(ev.duration, expect, "packet {i}");
            plan.push(if ev.end {
                'E'
            } else {
                ev.dtmf_digit().unwrap()
            });
        }
        // '1' for 100 ms (five packets, the last with E, sent three times), 100 ms after its
        // end '#', then the stream's audio again.
        let plan: String = plan.into_iter().collect();
        assert_eq!(plan, format!("1111EEE...####EEE{}", ".".repeat(23)));
    }

    #[test]
    fn tones_replace_the_audio_and_are_heard_as_the_keys() {
        let via = DtmfVia::Tones {
            payload_type: 0,
            codec: Codec::Pcmu,
        };
        let out = sent(via, "73", 30);
        let mut detector = DtmfDetector::new();
        let mut keys = String::new();
        for p in &out {
            assert_eq!((p.len(), p[1]), (172, 0), "the stream's own packets");
            let mut pcm = [0i16; 160];
            Law::Ulaw.decode(&p[12..], &mut pcm);
            detector.handle_frame(&pcm);
            while let Some(d) = detector.poll_digit() {
                keys.push(d.key);
            }
        }
        assert_eq!(keys, "73");
        // Audio between the keys is the stream's own.
        assert_eq!(&out[6][12..], &[0xfe; 160]);
    }

    #[test]
    fn in_band_on_every_codec() {
        let mut d = Dtmf::new(1);
        let listen = |payload_type, codec| DtmfOptions {
            inband: Some(InbandAudio {
                payload_type,
                codec,
            }),
            ..DtmfOptions::default()
        };
        // Decoded for the detector; blocking drops their packets (no silence code).
        for (pt, codec) in [(9, Codec::G722), (111, Codec::Opus), (18, Codec::G729)] {
            assert_eq!(d.configure(1, &listen(pt, codec)), Ok(()));
            assert_eq!(
                (d.inband_payload_type(1), d.silence_code(1)),
                (Some(pt), None)
            );
        }
        let d = both_ways();
        assert_eq!(
            (d.inband_payload_type(0), d.silence_code(0)),
            (Some(0), Some(0xff))
        );
    }
}
