//! Keys heard on one leg of a call sent to the other leg's peer as SIP INFO, for peers set to
//! `dtmf = "info"` (or `"auto"` without telephone-event in their SDP): the data plane reports
//! each key pressed on the heard leg (RFC 4733 events, and in-band tones in G.711, G.722 or
//! Opus) and holds
//! both back from the INFO peer's stream; the engine sends one in-dialog INFO
//! (`application/dtmf-relay`) per key, in order, one transaction at a time.

use super::*;
use crate::sip::config::DtmfMode;
use std::collections::VecDeque;
use tandem_dataplane::api::{Codec, DtmfOptions, InbandAudio, LegCodec, TelephoneEvents};

/// Keys a burst may queue towards one peer while its INFOs are answered; more are dropped (a
/// peer that takes seconds per INFO is not keeping up with a person pressing keys).
const MAX_QUEUED_KEYS: usize = 32;

/// How long each key lasts in its INFO: the data plane reports a key when it ends, and what a
/// receiver needs is a press it can act on, not the measured length.
const INFO_KEY_DURATION_MS: u32 = 250;

/// Per call: how each side's peer takes keys, and the INFOs towards it.
#[derive(Debug, Default)]
pub(super) struct InfoDtmf {
    /// The configured mode of each side's peer (its trunk's `dtmf`; `rfc4733` otherwise).
    modes: [DtmfMode; 2],
    /// Set at the answer: this side's peer is sent keys as INFO.
    to_info: [bool; 2],
    queued: [VecDeque<char>; 2],
    /// An INFO to this side is waiting for its final response.
    pending: [bool; 2],
}

impl InfoDtmf {
    pub(super) fn new(a: DtmfMode, b: DtmfMode) -> InfoDtmf {
        InfoDtmf {
            modes: [a, b],
            ..InfoDtmf::default()
        }
    }

    /// Whether `side`'s peer gets keys as INFO (known once the call is answered).
    pub(super) fn to_info(&self, side: Side) -> bool {
        self.to_info[side.index()]
    }
}

/// The payload type and codec of the audio an SDP's first format names, when it is G.711 (the
/// codec the peer sends, RFC 3264): what in-band detection listens to.
fn first_g711(sdp: &str) -> Option<InbandAudio> {
    let m = sdp.lines().find_map(|l| l.strip_prefix("m=audio "))?;
    let first = m.split_whitespace().nth(2)?.parse::<u8>().ok()?;
    let codec = match first {
        0 => Codec::Pcmu,
        8 => Codec::Pcma,
        _ => return None,
    };
    Some(InbandAudio {
        payload_type: first,
        codec,
    })
}

/// The payload type and codec of the first format of an SDP's audio (the codec the peer sends),
/// when in-band detection can hear it: any codec the data plane has (G.711, G.722, Opus, G.729).
fn first_detectable(sdp: &str) -> Option<InbandAudio> {
    let parsed = crate::sdp::Sdp::parse(sdp).ok()?;
    let first = parsed
        .media
        .iter()
        .find(|m| m.kind == "audio")?
        .payload_formats()
        .into_iter()
        .next()?;
    let codec = crate::ng::codecs::data_plane_codec(&first)?;
    Some(InbandAudio {
        payload_type: first.payload_type,
        codec,
    })
}

/// The telephone-event payload type an SDP's audio takes in `clock_hz`.
fn events_in(sdp: &str, clock_hz: u32) -> Option<u8> {
    let parsed = crate::sdp::Sdp::parse(sdp).ok()?;
    let m = parsed.media.iter().find(|m| m.kind == "audio")?;
    m.payload_formats()
        .into_iter()
        .find(|f| f.is("telephone-event") && f.clock_hz == clock_hz)
        .map(|f| f.payload_type)
}

/// Tones to events, for a transcoded call (`plan`, `[A, B]`; `sdps`, what each side's peer
/// signalled): when the `heard` side's peer signalled no telephone-event (its keys come as
/// tones, in a codec the detector hears) and the other side's peer took telephone-event in
/// its codec's clock, the options that send each key heard on `heard`'s leg to the other as
/// RFC 4733 events and keep the tone from it (a codec such as Opus or G.729 on that side
/// would garble it). A relayed call passes tones as they came: both sides share the codec,
/// and the detector's cost is not paid on every call.
///
/// Only the caller's tones (`heard` = A): the callee's answer took telephone-event from our
/// offer (`transcoding.rs` adds it for this), whereas the answer we give a caller in a
/// transcoded call keeps its telephone-event only when the callee has one too, so a caller
/// was never told to expect events made from the callee's tones.
fn tones_to_events(
    plan: Option<[LegCodec; 2]>,
    sdps: &[String; 2],
    heard: Side,
) -> Option<DtmfOptions> {
    if heard != Side::A {
        return None;
    }
    let plan = plan?;
    let (from, to) = (plan[heard.index()], plan[heard.other().index()]);
    if contact_centre::telephone_event_pt(&sdps[heard.index()]).is_some()
        || events_in(&sdps[heard.index()], from.codec.rtp_clock_hz()).is_some()
    {
        return None;
    }
    let clock_hz = to.codec.rtp_clock_hz();
    let events = TelephoneEvents {
        payload_type: events_in(&sdps[heard.other().index()], clock_hz)?,
        clock_hz,
    };
    Some(DtmfOptions {
        inband: Some(InbandAudio {
            payload_type: from.payload_type,
            codec: from.codec,
        }),
        events_to_other: Some(events),
        ..DtmfOptions::default()
    })
}

impl Engine {
    /// At the answer (both SDPs known), for each side: when its peer takes keys as INFO, ask
    /// the data plane to report the keys pressed on the other leg (events, and tones when it
    /// is G.711, G.722, Opus or G.729) and to keep them out of the INFO peer's stream; else, when its peer takes no
    /// telephone-event but G.711 and the other leg's peer sends events, have those events
    /// sounded as tones in its audio (a PSTN-only peer hears the keys); else, on a transcoded
    /// call whose other leg's peer sends tones and this one takes telephone-event, have those
    /// tones sent to it as events instead (`tones_to_events`).
    pub(super) fn arm_dtmf(&mut self, call: CallId) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(session) = c.session else { return };
        for side in [Side::A, Side::B] {
            let takes_events = contact_centre::telephone_event_pt(&c.sdp[side.index()]).is_some();
            let to_info = c.info_dtmf.modes[side.index()].sends_info(takes_events);
            c.info_dtmf.to_info[side.index()] = to_info;
            let heard = side.other();
            let sdp = &c.sdp[heard.index()];
            let heard_events = contact_centre::telephone_event_pt(sdp);
            let options = if to_info {
                DtmfOptions {
                    event_payload_type: heard_events,
                    inband: first_detectable(sdp),
                    block: true,
                    ..DtmfOptions::default()
                }
            } else if let Some(options) = tones_to_events(c.transcoding.plan(), &c.sdp, heard) {
                options
            } else {
                match first_g711(&c.sdp[side.index()]) {
                    Some(audio) if !takes_events && heard_events.is_some() => DtmfOptions {
                        event_payload_type: heard_events,
                        tones_to_other: Some(audio),
                        ..DtmfOptions::default()
                    },
                    _ => continue,
                }
            };
            self.actions.push(Action::Media(MediaOp::SetDtmf {
                session,
                leg: heard.leg(),
                options,
            }));
        }
    }

    /// A key the data plane heard on `leg` of `session`: queued for an INFO when the other
    /// side's peer takes keys that way.
    pub(super) fn info_dtmf_key(&mut self, now: Now, session: SessionId, leg: LegIndex, key: char) {
        let heard = if leg == LegIndex::A { Side::A } else { Side::B };
        let to = heard.other();
        let Some((&call, c)) = self
            .calls
            .iter_mut()
            .find(|(_, c)| c.session == Some(session))
        else {
            return;
        };
        if c.state != CallState::Answered || !c.info_dtmf.to_info(to) {
            return;
        }
        let queue = &mut c.info_dtmf.queued[to.index()];
        if queue.len() >= MAX_QUEUED_KEYS {
            tracing::debug!("SIP: call {call}: key {key} dropped, {MAX_QUEUED_KEYS} INFOs queued");
            return;
        }
        queue.push_back(key);
        self.send_next_info(now, call, to);
        self.pump(now);
    }

    /// Sends the next queued key to `side`'s peer unless an INFO to it is still out.
    fn send_next_info(&mut self, now: Now, call: CallId, side: Side) {
        let contact = self.contact.clone();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.info_dtmf.pending[side.index()] {
            return;
        }
        let Some(key) = c.info_dtmf.queued[side.index()].pop_front() else {
            return;
        };
        let Some(leg) = c.leg_mut(side) else { return };
        let mut info = leg.request(Method::Info, &contact);
        let body = format!("Signal={key}\r\nDuration={INFO_KEY_DURATION_MS}\r\n");
        info.set_body("application/dtmf-relay", body.into_bytes());
        let peer = leg.peer;
        c.info_dtmf.pending[side.index()] = true;
        let tx = self.tx.send_request(now.mono, info, peer, None);
        self.pending.insert(tx, Pending::DtmfInfo(call, side));
    }

    /// An INFO of ours got its final response (or none came): the next key may go. A refusal
    /// does not stop the queue: each key is its own request.
    pub(super) fn info_dtmf_done(&mut self, now: Now, call: CallId, side: Side) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        c.info_dtmf.pending[side.index()] = false;
        self.send_next_info(now, call, side);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdp(m: &str, maps: &str) -> String {
        format!("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP {m}\r\n{maps}")
    }

    #[test]
    fn in_band_detection_listens_to_the_first_format_when_it_can_hear_it() {
        let opus = "a=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n";
        let cases = [
            (sdp("0 8 101", ""), Some((0, Codec::Pcmu))),
            (sdp("9 0", ""), Some((9, Codec::G722))),
            (sdp("111 101", opus), Some((111, Codec::Opus))),
            (sdp("18 0", ""), Some((18, Codec::G729))),
            // GSM first: no decoder for it.
            (sdp("3 0", ""), None),
            ("garbage".to_string(), None),
        ];
        for (text, want) in cases {
            let got = first_detectable(&text).map(|a| (a.payload_type, a.codec));
            assert_eq!(got, want, "{text}");
        }
        // Tones are sent in G.711 only.
        assert_eq!(first_g711(&sdp("9 0", "")), None);
    }

    fn leg(payload_type: u8, codec: Codec) -> LegCodec {
        LegCodec {
            payload_type,
            codec,
            // What the plan says of events does not matter: the SDPs do.
            event_payload_type: None,
            ptime_ms: 0,
            options: tandem_dataplane::api::CodecOptions::NONE,
        }
    }

    #[test]
    fn tones_become_events_on_a_transcoded_call_towards_the_side_that_took_telephone_event() {
        let (pcmu, opus, g722, g729) = (
            leg(0, Codec::Pcmu),
            leg(111, Codec::Opus),
            leg(9, Codec::G722),
            leg(18, Codec::G729),
        );
        let pcmu_tones = sdp("0", "");
        let pcmu_events = sdp("0 101", "a=rtpmap:101 telephone-event/8000\r\n");
        let opus_events = sdp(
            "111 110",
            "a=rtpmap:111 opus/48000/2\r\na=rtpmap:110 telephone-event/48000\r\n",
        );
        // Events only in 8 kHz beside Opus: not in the stream's clock.
        let opus_events_8k = sdp(
            "111 101",
            "a=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n",
        );
        let opus_tones = sdp("111", "a=rtpmap:111 opus/48000/2\r\n");
        let g729_events = sdp("18 101", "a=rtpmap:101 telephone-event/8000\r\n");
        // A sends tones in PCMU, B takes Opus and telephone-event/48000: A's leg listens and
        // B gets events in its clock.
        let sdps = [pcmu_tones.clone(), opus_events.clone()];
        let options = tones_to_events(Some([pcmu, opus]), &sdps, Side::A).unwrap();
        assert_eq!(
            options,
            DtmfOptions {
                inband: Some(InbandAudio {
                    payload_type: 0,
                    codec: Codec::Pcmu
                }),
                events_to_other: Some(TelephoneEvents {
                    payload_type: 110,
                    clock_hz: 48_000
                }),
                ..DtmfOptions::default()
            }
        );
        // Not the other way: B sends events already.
        assert_eq!(tones_to_events(Some([pcmu, opus]), &sdps, Side::B), None);
        // The caller in G.722 towards G.729 with events.
        let sdps = [sdp("9", ""), g729_events.clone()];
        let options = tones_to_events(Some([g722, g729]), &sdps, Side::A);
        let events = options.and_then(|o| o.events_to_other);
        assert_eq!(
            events.map(|e| (e.payload_type, e.clock_hz)),
            Some((101, 8000))
        );
        // Never the callee's tones: the caller was not answered telephone-event.
        let sdps = [g729_events, sdp("9", "")];
        assert_eq!(tones_to_events(Some([g729, g722]), &sdps, Side::B), None);
        // The caller's tones in G.729 towards PCMU with events.
        let sdps = [sdp("18", ""), pcmu_events.clone()];
        let options = tones_to_events(Some([g729, pcmu]), &sdps, Side::A).unwrap();
        assert_eq!(
            options.inband.map(|i| (i.payload_type, i.codec)),
            Some((18, Codec::G729))
        );
        // Nothing when: relayed (no plan), both or neither take telephone-event, or the events
        // are not in the other side's clock.
        let cases = [
            (None, [pcmu_tones.clone(), opus_events.clone()]),
            (
                Some([pcmu, opus]),
                [pcmu_events.clone(), opus_events.clone()],
            ),
            (Some([pcmu, opus]), [pcmu_tones.clone(), opus_tones]),
            (Some([pcmu, opus]), [pcmu_tones.clone(), opus_events_8k]),
        ];
        for (plan, sdps) in cases {
            assert_eq!(tones_to_events(plan, &sdps, Side::A), None, "{sdps:?}");
        }
    }
}
