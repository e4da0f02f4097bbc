//! The B2BUA's codec negotiation: transcoding when the two sides of a call share no codec.
//!
//! Every offer the engine sends on (the caller's INVITE to the callee or to an agent's devices,
//! a re-INVITE or UPDATE from either side) carries the offerer's codecs first, then those of
//! the tenant's `transcode` list (else `sip.transcode`) it lacks (the ng `codec: {transcode}` logic, `ng::codecs`),
//! and telephone-event in their clocks when the offerer has none (its tones become events for
//! an answerer that takes them: `dtmf_info.rs`). When the answer
//! picks one of the added codecs, the data plane gets a codec plan (`MediaOp::SetCodecs`), and
//! the offerer is answered in a codec of its own; an answer in a codec the offerer has relays
//! as it is. A party that joins a call whose other side keeps its codec (a transfer target, the
//! next agent of a caller transferred back to a queue, the agent of a callback) is planned
//! against that codec instead. The codecs of a transcoded call's legs go into its record.

use super::*;
use crate::ng::codecs::{self, CodecRequest, OfferedCodecs};
use crate::sdp::{CodecEdit, Format, Media};
use tandem_dataplane::api::LegCodec;

/// What a call's legs send and receive, as far as the engine negotiated it.
#[derive(Debug, Clone, Default)]
pub(super) struct CallCodecs {
    /// The last offer sent on with codecs added: who offered it, and what it can take.
    offer: Option<(Side, OfferedCodecs)>,
    /// The data plane's plan now (`[A, B]`); `None`: relayed as it is.
    plan: Option<[LegCodec; 2]>,
    /// Relaying to this side is held until the other side's first answer is planned.
    held: Option<Side>,
    /// The codec each side settled on (A, B), by the last answer.
    active: [Option<Settled>; 2],
    /// The codecs of the caller's and the callee's legs while the call was transcoded (the
    /// latest plan), for its record; `None` when it never was.
    pub(super) transcoded: Option<[String; 2]>,
}

impl CallCodecs {
    /// The data plane's codec plan now (`[A, B]`): each leg's own codec while the call is
    /// transcoded; `None` while it is relayed as it is.
    pub(super) fn plan(&self) -> Option<[LegCodec; 2]> {
        self.plan
    }

    /// The codec each leg (A, B) settled on by the last answer, as the SDP named it.
    pub(super) fn leg_codecs(&self) -> [Option<&str>; 2] {
        self.active
            .each_ref()
            .map(|s| s.as_ref().map(|s| s.name.as_str()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Settled {
    codec: LegCodec,
    /// The encoding as the SDP named it (`PCMA`, `opus`).
    name: String,
}

/// The media section `rewrite_for` anchors: the first audio stream with a port.
pub(super) fn relayed_audio(sdp: &Sdp<'_>) -> Option<usize> {
    sdp.media
        .iter()
        .position(|m| m.kind == "audio" && m.port != 0)
}

fn is_audio_codec(f: &Format) -> bool {
    !f.is("telephone-event") && !f.is("CN")
}

/// `formats`' telephone-event in `clock`, if any.
fn event_in(formats: &[Format], clock: u32) -> Option<u8> {
    formats
        .iter()
        .find(|f| f.is("telephone-event") && f.clock_hz == clock)
        .map(|f| f.payload_type)
}

/// The codec a section's peer sends (its first audio format), when the data plane has it.
fn first_codec(m: &Media) -> Option<Settled> {
    let formats = m.payload_formats();
    let f = formats.iter().find(|f| is_audio_codec(f))?;
    Some(Settled {
        codec: LegCodec {
            payload_type: f.payload_type,
            codec: codecs::data_plane_codec(f)?,
            event_payload_type: event_in(&formats, f.clock_hz),
            ptime_ms: codecs::plan_ptime(m.ptime_ms),
            options: codecs::codec_options(f),
        },
        name: f.encoding.clone(),
    })
}

/// The formats an offer sent on gets (`None`: none to add), and what the offerer can take.
pub(super) fn onward_offer_edit(
    m: &Media,
    transcode: &[String],
) -> Option<(CodecEdit, OfferedCodecs)> {
    let request = CodecRequest {
        transcode: transcode.to_vec(),
        events_for_tones: true,
        ..CodecRequest::default()
    };
    codecs::offer_edit(m, &request)
}

/// `joined`'s answer against the codec the other side keeps: the plan (`[stayer, joined]`)
/// when they differ and the data plane has both, and what `joined` settled on.
fn plan_against(
    stayer: Option<&Settled>,
    answer: &Media,
) -> (Option<[Settled; 2]>, Option<Settled>) {
    let formats = answer.payload_formats();
    let Some(chosen) = formats.iter().find(|f| is_audio_codec(f)) else {
        return (None, None);
    };
    let Some(codec) = codecs::data_plane_codec(chosen) else {
        return (None, None);
    };
    let joined = Settled {
        codec: LegCodec {
            payload_type: chosen.payload_type,
            codec,
            event_payload_type: event_in(&formats, chosen.clock_hz),
            ptime_ms: codecs::plan_ptime(answer.ptime_ms),
            options: codecs::codec_options(chosen),
        },
        name: chosen.encoding.clone(),
    };
    match stayer {
        Some(s) if s.codec.codec != codec => {
            // Events are mapped only when both sides take them.
            let both_events =
                s.codec.event_payload_type.is_some() && joined.codec.event_payload_type.is_some();
            let strip = |mut x: Settled| {
                if !both_events {
                    x.codec.event_payload_type = None;
                }
                x
            };
            let pair = [strip(s.clone()), strip(joined.clone())];
            (Some(pair), Some(joined))
        }
        _ => (None, Some(joined)),
    }
}

impl Engine {
    /// `sdp_text` (an offer, or the SDP of a side that stays) sent on with our address and
    /// `port`, and the codecs of `sip.transcode` the offerer lacks added. Returns the text and
    /// what the offerer can take (`None` when nothing was added).
    pub(super) fn onward_offer(
        &self,
        tenant: &str,
        sdp_text: &str,
        port: u16,
    ) -> Option<(String, Option<OfferedCodecs>)> {
        let sdp = Sdp::parse(sdp_text).ok()?;
        let index = relayed_audio(&sdp);
        let transcode = self.cfg.transcode_for(tenant);
        let added = index.and_then(|i| onward_offer_edit(&sdp.media[i], transcode));
        let (edit, offered) = added.unzip();
        Some((self.rewrite_parsed(&sdp, port, index, edit), offered))
    }

    /// An offer from `from` sent on to the other side on `port` (see [`Self::onward_offer`]),
    /// remembered for its answer.
    pub(super) fn offer_onward(
        &mut self,
        call: CallId,
        from: Side,
        offer: &str,
        port: u16,
    ) -> Option<String> {
        let tenant = &self.calls.get(&call)?.tenant;
        let (text, offered) = self.onward_offer(tenant, offer, port)?;
        if let Some(c) = self.calls.get_mut(&call) {
            c.transcoding.offer = offered.map(|o| (from, o));
            // The answerer's first answer may pick a codec we added, and a phone can start its
            // media with its 200 OK, before that answer is planned here: until then nothing is
            // relayed to the offerer, which could not decode it. Later offers (re-INVITEs)
            // are left alone: media already flows in settled codecs.
            let first_answer = c.transcoding.active[from.other().index()].is_none();
            if c.transcoding.offer.is_some() && first_answer && c.transcoding.held.is_none() {
                if let Some(session) = c.session {
                    c.transcoding.held = Some(from);
                    self.actions.push(Action::Media(MediaOp::HoldRelay {
                        session,
                        leg: from.leg(),
                        held: true,
                    }));
                }
            }
        }
        Some(text)
    }

    /// Releases relaying held by [`Self::offer_onward`], after the answer's plan went out
    /// (the data plane applies them in order).
    fn release_held(&mut self, call: CallId) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if let (Some(side), Some(session)) = (c.transcoding.held.take(), c.session) {
            self.actions.push(Action::Media(MediaOp::HoldRelay {
                session,
                leg: side.leg(),
                held: false,
            }));
        }
    }

    /// An answer from `answerer` going back to the offerer on `port`: when it chose a codec we
    /// added, the data plane transcodes and the offerer is answered in its own codec.
    pub(super) fn answer_back(
        &mut self,
        call: CallId,
        answerer: Side,
        answer: &str,
        port: u16,
    ) -> Option<String> {
        let sdp = Sdp::parse(answer).ok()?;
        let index = relayed_audio(&sdp);
        let c = self.calls.get(&call)?;
        let offerer = answerer.other();
        let offered = c
            .transcoding
            .offer
            .as_ref()
            .filter(|(from, _)| *from == offerer)
            .map(|(_, o)| o);
        let mut edit = None;
        let mut settled: [Option<Settled>; 2] = [None, None];
        if let Some(i) = index {
            let m = &sdp.media[i];
            match offered.and_then(|o| codecs::answer_plan(o, m).map(|p| (o, p))) {
                Some((offered, (e, [o, a]))) => {
                    let name_of = |formats: &[Format], pt: u8| {
                        formats
                            .iter()
                            .find(|f| f.payload_type == pt)
                            .map_or_else(String::new, |f| f.encoding.clone())
                    };
                    settled[offerer.index()] = Some(Settled {
                        codec: o,
                        name: name_of(&offered.offerer, o.payload_type),
                    });
                    settled[answerer.index()] = Some(Settled {
                        codec: a,
                        name: name_of(&m.payload_formats(), a.payload_type),
                    });
                    edit = Some(e);
                }
                None => {
                    // One codec both ways; the offerer keeps its own payload types for it.
                    let answered = first_codec(m);
                    let own = answered.as_ref().and_then(|a| {
                        let formats = &offered?.offerer;
                        let f = formats.iter().find(|f| {
                            is_audio_codec(f) && codecs::data_plane_codec(f) == Some(a.codec.codec)
                        })?;
                        Some(Settled {
                            codec: LegCodec {
                                payload_type: f.payload_type,
                                codec: a.codec.codec,
                                event_payload_type: event_in(formats, f.clock_hz)
                                    .filter(|_| a.codec.event_payload_type.is_some()),
                                ptime_ms: codecs::plan_ptime(offered?.ptime_ms),
                                options: codecs::codec_options(f),
                            },
                            name: f.encoding.clone(),
                        })
                    });
                    settled[offerer.index()] = own.or_else(|| answered.clone());
                    settled[answerer.index()] = answered;
                }
            }
        }
        let plan = edit.is_some().then(|| settled.clone());
        self.set_plan(call, plan.and_then(|[a, b]| Some([a?, b?])));
        self.release_held(call);
        if let Some(c) = self.calls.get_mut(&call) {
            c.transcoding.active = settled;
        }
        Some(self.rewrite_parsed(&sdp, port, index, edit))
    }

    /// `joined` answered an offer built from the other side's SDP while that side keeps the
    /// codec it has (a transfer target, a queue's next agent, a called-back customer's agent):
    /// transcode between the two when they differ.
    pub(super) fn settle_joined(&mut self, call: CallId, joined: Side, answer: &str) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let stayer = joined.other();
        // A side that never had an answer from us (a called-back customer answered our own
        // offer) sends the first codec of its SDP.
        let kept = c.transcoding.active[stayer.index()].clone().or_else(|| {
            let sdp = Sdp::parse(&c.sdp[stayer.index()]).ok()?;
            first_codec(&sdp.media[relayed_audio(&sdp)?])
        });
        let Some(answer_sdp) = Sdp::parse(answer).ok() else {
            return;
        };
        let Some(m) = relayed_audio(&answer_sdp).map(|i| &answer_sdp.media[i]) else {
            return;
        };
        let (pair, joined_codec) = plan_against(kept.as_ref(), m);
        let plan = pair.map(|[s, j]| match joined {
            Side::B => [s, j],
            Side::A => [j, s],
        });
        self.set_plan(call, plan);
        self.release_held(call);
        if let Some(c) = self.calls.get_mut(&call) {
            c.transcoding.active[stayer.index()] = kept;
            c.transcoding.active[joined.index()] = joined_codec;
            c.transcoding.offer = None;
        }
    }

    /// Asks the data plane for `plan` (`[A, B]`) when it differs from the call's current one;
    /// counts the call as transcoded the first time it is.
    fn set_plan(&mut self, call: CallId, plan: Option<[Settled; 2]>) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let codecs = plan.as_ref().map(|[a, b]| [a.codec, b.codec]);
        if codecs == c.transcoding.plan {
            return;
        }
        c.transcoding.plan = codecs;
        if let Some([a, b]) = &plan {
            if c.transcoding.transcoded.is_none() {
                self.metrics.call_transcoded(&a.name, &b.name);
            }
            c.transcoding.transcoded = Some([a.name.clone(), b.name.clone()]);
        }
        if let Some(session) = c.session {
            self.actions
                .push(Action::Media(MediaOp::SetCodecs { session, codecs }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(sdp: &str) -> Media {
        Sdp::parse(sdp).unwrap().media[0].clone()
    }

    #[test]
    fn a_joining_party_is_planned_against_the_codec_the_other_side_keeps() {
        let pcma = Settled {
            codec: LegCodec {
                payload_type: 8,
                codec: tandem_dataplane::api::Codec::Pcma,
                event_payload_type: Some(101),
                ptime_ms: 0,
                options: tandem_dataplane::api::CodecOptions::NONE,
            },
            name: "PCMA".into(),
        };
        let g722 = media(
            "v=0\r\nc=IN IP4 10.0.0.3\r\nm=audio 7000 RTP/AVP 9 101\r\n\
             a=rtpmap:101 telephone-event/8000\r\n",
        );
        let (pair, joined) = plan_against(Some(&pcma), &g722);
        let [s, j] = pair.expect("PCMA against G.722 is transcoded");
        assert_eq!(
            (s.codec, j.codec.payload_type, j.name.as_str()),
            (pcma.codec, 9, "G722")
        );
        assert_eq!(j.codec.event_payload_type, Some(101));
        assert_eq!(joined.unwrap().name, "G722");
        // The same codec: relayed as it is.
        let same = media("v=0\r\nc=IN IP4 10.0.0.3\r\nm=audio 7000 RTP/AVP 8\r\n");
        let (pair, joined) = plan_against(Some(&pcma), &same);
        assert!(pair.is_none());
        assert_eq!(joined.unwrap().codec.event_payload_type, None);
        // Events are mapped only when both sides take them.
        let quiet = media("v=0\r\nc=IN IP4 10.0.0.3\r\nm=audio 7000 RTP/AVP 0\r\n");
        let [s, j] = plan_against(Some(&pcma), &quiet).0.unwrap();
        assert_eq!(
            (s.codec.event_payload_type, j.codec.event_payload_type),
            (None, None)
        );
        // A codec the data plane lacks, or nothing known of the other side: no plan.
        let gsm = media("v=0\r\nc=IN IP4 10.0.0.3\r\nm=audio 7000 RTP/AVP 3\r\n");
        assert_eq!(plan_against(Some(&pcma), &gsm), (None, None));
        assert!(plan_against(None, &g722).0.is_none());
    }

    #[test]
    fn the_joining_partys_fmtp_becomes_its_codec_options() {
        use tandem_dataplane::api::{Codec, CodecOptions};
        let pcma = Settled {
            codec: LegCodec {
                payload_type: 8,
                codec: Codec::Pcma,
                event_payload_type: None,
                ptime_ms: 0,
                options: CodecOptions::NONE,
            },
            name: "PCMA".into(),
        };
        let opus = media(
            "v=0\r\nc=IN IP4 10.0.0.3\r\nm=audio 7000 RTP/AVP 111\r\n\
             a=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1\r\n",
        );
        let [_, j] = plan_against(Some(&pcma), &opus).0.unwrap();
        let want = CodecOptions {
            fec: true,
            dtx: false,
        };
        assert_eq!((j.codec.codec, j.codec.options), (Codec::Opus, want));
        // G.729 without fmtp takes Annex B; `annexb=no` does not.
        let g729 = "v=0\r\nc=IN IP4 10.0.0.3\r\nm=audio 7000 RTP/AVP 18\r\n";
        let [_, j] = plan_against(Some(&pcma), &media(g729)).0.unwrap();
        assert!(j.codec.options.dtx);
        let no = format!("{g729}a=fmtp:18 annexb=no\r\n");
        let [_, j] = plan_against(Some(&pcma), &media(&no)).0.unwrap();
        assert_eq!(j.codec.options, CodecOptions::NONE);
        // The side that keeps its codec is planned with the options it settled with.
        let first = first_codec(&media(&no)).unwrap();
        assert_eq!(first.codec.options, CodecOptions::NONE);
    }
}
