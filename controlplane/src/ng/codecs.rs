//! The ng `codec` dictionary (`transcode`, `strip`, `mask`, `offer`, `accept`; the data plane
//! transcodes PCMU, PCMA, G.722, G.729 and Opus): what the offer sent onward offers, and, from
//! what the answerer chose, the per-leg codec plan the data plane runs.
//!
//! Pure functions over parsed SDP; the handler stores what the offer left for the answer.

use crate::sdp::{CodecEdit, Format, Media};
use tandem_dataplane::api::{Codec, CodecOptions, LegCodec};

/// The codec instructions of one offer. Names are encodings, optionally with a clock
/// (`opus`, `PCMA/8000`); `all` in `strip`/`mask` means every codec of the offer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodecRequest {
    /// Codecs added to the offer sent onward (when the offerer has one we can transcode from).
    pub transcode: Vec<String>,
    /// Codecs removed from the offer sent onward, and never used towards the offerer.
    pub strip: Vec<String>,
    /// Codecs removed from the offer sent onward, but still usable towards the offerer.
    pub mask: Vec<String>,
    /// Codecs kept in the offer sent onward even when `strip`/`mask` (`all`) would remove
    /// them, and put first, in this order (rtpengine's `offer`: `strip: [all], offer: [G729]`
    /// offers G.729 alone).
    pub offer: Vec<String>,
    /// Codecs offered onward as usual which, when the answerer turns them down, are still
    /// answered to the offerer and transcoded to what the answerer chose (rtpengine's
    /// `accept`).
    pub accept: Vec<String>,
    /// When the offerer signals no telephone-event and codecs are added: offer telephone-event
    /// too (8 kHz beside an added 8 kHz codec, 48 kHz beside an added Opus), so an answerer in
    /// an added codec can take keys as events, which the data plane makes from the offerer's
    /// tones (the SIP B2BUA, `sip::dtmf_info`).
    pub events_for_tones: bool,
}

impl CodecRequest {
    pub fn is_empty(&self) -> bool {
        self.transcode.is_empty()
            && self.strip.is_empty()
            && self.mask.is_empty()
            && self.offer.is_empty()
            && self.accept.is_empty()
    }
}

/// What an offer with codec instructions leaves for its answer (per media section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedCodecs {
    /// The offerer's formats we may send it (its offer minus `strip`), in its order.
    pub offerer: Vec<Format>,
    /// The offerer's `a=ptime`, ms, if it gave one.
    pub ptime_ms: Option<u32>,
    /// The request's `accept` codecs the offerer has (and we can transcode), in order.
    pub accept: Vec<Format>,
}

/// A ptime for the data plane's plan: what fits its byte (0 for none or out of range).
pub fn plan_ptime(ms: Option<u32>) -> u8 {
    ms.and_then(|ms| u8::try_from(ms).ok()).unwrap_or(0)
}

/// The codec the data plane transcodes for a format, if it does.
pub fn data_plane_codec(f: &Format) -> Option<Codec> {
    if f.is("PCMU/8000") {
        Some(Codec::Pcmu)
    } else if f.is("PCMA/8000") {
        Some(Codec::Pcma)
    } else if f.is("opus/48000") {
        Some(Codec::Opus)
    } else if f.is("G722/8000") {
        Some(Codec::G722)
    } else if f.is("G729/8000") {
        Some(Codec::G729)
    } else {
        None
    }
}

/// The codec options a peer asked for in a format's `a=fmtp` (RFC 7587 §6.1 for Opus: FEC
/// with `useinbandfec=1`, DTX with `usedtx=1`, both off when absent; RFC 7261 §4.1 / RFC 4856
/// for G.729: Annex B unless `annexb=no`). Parameter names and values are matched without
/// regard to case; anything else in the fmtp is ignored.
pub fn codec_options(f: &Format) -> CodecOptions {
    let param = |name: &str| {
        f.fmtp.as_deref().and_then(|fmtp| {
            fmtp.split(';').find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
            })
        })
    };
    match data_plane_codec(f) {
        Some(Codec::Opus) => CodecOptions {
            fec: param("useinbandfec") == Some("1"),
            dtx: param("usedtx") == Some("1"),
        },
        Some(Codec::G729) => CodecOptions {
            fec: false,
            dtx: !param("annexb").is_some_and(|v| v.eq_ignore_ascii_case("no")),
        },
        _ => CodecOptions::NONE,
    }
}

/// A codec the data plane can encode, as an offer adds it.
struct Producible {
    encoding: &'static str,
    clock: u32,
    /// The rtpmap's encoding parameters.
    params: Option<&'static str>,
    static_pt: Option<u8>,
    /// What we ask of the answerer's stream to us (`a=fmtp`): Opus with in-band FEC, which
    /// our decoder uses for a single lost packet (not `usedtx`: DTX gaps would reach a G.711
    /// receiver as gaps); G.729 with Annex B, whose SID frames our decoder takes.
    fmtp: Option<&'static str>,
}

/// A codec name (`opus`, `PCMA/8000`) the data plane can encode, as an offer adds it.
fn producible(name: &str) -> Option<Producible> {
    let (encoding, clock, params, static_pt, fmtp) = match name.split('/').next() {
        Some(n) if n.eq_ignore_ascii_case("PCMU") => ("PCMU", 8000, None, Some(0), None),
        Some(n) if n.eq_ignore_ascii_case("PCMA") => ("PCMA", 8000, None, Some(8), None),
        Some(n) if n.eq_ignore_ascii_case("opus") => {
            ("opus", 48_000, Some("2"), None, Some("useinbandfec=1"))
        }
        Some(n) if n.eq_ignore_ascii_case("G722") => ("G722", 8000, None, Some(9), None),
        Some(n) if n.eq_ignore_ascii_case("G729") => {
            ("G729", 8000, None, Some(18), Some("annexb=yes"))
        }
        _ => return None,
    };
    Some(Producible {
        encoding,
        clock,
        params,
        static_pt,
        fmtp,
    })
}

/// Whether `transcode` may name this codec (configuration checks).
pub fn is_producible(name: &str) -> bool {
    producible(name).is_some()
}

/// Named in `names` itself (not through `all`).
fn listed(f: &Format, names: &[String]) -> bool {
    names.iter().any(|n| f.is(n))
}

fn named(f: &Format, names: &[String]) -> bool {
    names
        .iter()
        .any(|n| n.eq_ignore_ascii_case("all") || f.is(n))
}

fn is_event(f: &Format) -> bool {
    f.is("telephone-event")
}

/// Rewrites an offer's section: `strip` and `mask` removed, `transcode` codecs added with
/// payload types of their own. `None` when the request changes nothing in this section.
pub fn offer_edit(m: &Media, req: &CodecRequest) -> Option<(CodecEdit, OfferedCodecs)> {
    if req.is_empty() {
        return None;
    }
    let formats = m.payload_formats();
    let mut edit = CodecEdit::default();
    let mut kept: Vec<&Format> = Vec::new();
    for f in &formats {
        // Telephone events are not a codec: never stripped by `all`. `offer` keeps a codec.
        let kept_by_offer = listed(f, &req.offer);
        if !is_event(f) && !kept_by_offer && (named(f, &req.strip) || named(f, &req.mask)) {
            edit.drop.push(f.payload_type);
        } else {
            kept.push(f);
        }
    }
    let offerer: Vec<Format> = formats
        .iter()
        .filter(|f| is_event(f) || listed(f, &req.offer) || !named(f, &req.strip))
        .cloned()
        .collect();
    // `offer` also orders: its codecs first, in its order, the rest as they were.
    kept.sort_by_key(|f| {
        req.offer
            .iter()
            .position(|n| f.is(n))
            .unwrap_or(req.offer.len())
    });
    let accept: Vec<Format> = req
        .accept
        .iter()
        .filter_map(|n| {
            offerer
                .iter()
                .find(|f| f.is(n) && data_plane_codec(f).is_some())
        })
        .cloned()
        .collect();
    let can_transcode = offerer.iter().any(|f| data_plane_codec(f).is_some());
    let mut used: Vec<u8> = formats.iter().map(|f| f.payload_type).collect();
    let free_dynamic = |used: &mut Vec<u8>| {
        let pt = (96..=127).find(|p| !used.contains(p))?;
        used.push(pt);
        Some(pt)
    };
    let mut added: Vec<u8> = Vec::new();
    let (mut added_opus, mut added_8k) = (false, false);
    for name in &req.transcode {
        // Not a codec the data plane can produce: not offered.
        let Some(Producible {
            encoding,
            clock,
            params,
            static_pt,
            fmtp,
        }) = producible(name)
        else {
            continue;
        };
        let wanted = format!("{encoding}/{clock}");
        if !can_transcode || kept.iter().any(|f| f.is(&wanted)) {
            continue;
        }
        let pt = match static_pt.filter(|p| !used.contains(p)) {
            Some(p) => {
                used.push(p);
                p
            }
            None => match free_dynamic(&mut used) {
                Some(p) => p,
                None => continue,
            },
        };
        added.push(pt);
        added_opus |= encoding == "opus";
        added_8k |= clock == 8000;
        edit.add.push(match params {
            Some(p) => format!("rtpmap:{pt} {encoding}/{clock}/{p}"),
            None => format!("rtpmap:{pt} {encoding}/{clock}"),
        });
        if let Some(fmtp) = fmtp {
            edit.add.push(format!("fmtp:{pt} {fmtp}"));
        }
    }
    // Events in Opus's clock for an answerer that takes Opus, when the offerer sends events.
    let events_8k = kept.iter().find(|f| f.is("telephone-event/8000"));
    if added_opus && !kept.iter().any(|f| f.is("telephone-event/48000")) {
        if let (Some(ev), Some(pt)) = (events_8k, free_dynamic(&mut used)) {
            added.push(pt);
            edit.add.push(format!("rtpmap:{pt} telephone-event/48000"));
            if let Some(fmtp) = &ev.fmtp {
                edit.add.push(format!("fmtp:{pt} {fmtp}"));
            }
        }
    }
    if req.events_for_tones && !added.is_empty() && !kept.iter().any(|f| is_event(f)) {
        for clock in [(added_8k, 8000), (added_opus, 48_000)]
            .into_iter()
            .filter_map(|(added, clock)| added.then_some(clock))
        {
            let Some(pt) = free_dynamic(&mut used) else {
                break;
            };
            added.push(pt);
            edit.add
                .push(format!("rtpmap:{pt} telephone-event/{clock}"));
            edit.add.push(format!("fmtp:{pt} 0-15"));
        }
    }
    let reordered = kept.iter().map(|f| f.payload_type).ne(formats
        .iter()
        .map(|f| f.payload_type)
        .filter(|pt| !edit.drop.contains(pt)));
    if edit.drop.is_empty() && added.is_empty() && !reordered && accept.is_empty() {
        return None;
    }
    // Added codecs go after the offerer's own audio codecs, before its events.
    let (events, codecs): (Vec<&Format>, Vec<&Format>) = kept.iter().partition(|f| is_event(f));
    edit.formats = codecs
        .iter()
        .map(|f| f.payload_type.to_string())
        .chain(added.iter().map(u8::to_string))
        .chain(events.iter().map(|f| f.payload_type.to_string()))
        .collect();
    // Formats the m= line had that we did not resolve (no rtpmap) stay, after the rest.
    for f in &m.formats {
        let resolved = f
            .parse::<u8>()
            .is_ok_and(|pt| formats.iter().any(|x| x.payload_type == pt));
        if !resolved {
            edit.formats.push(f.clone());
        }
    }
    Some((
        edit,
        OfferedCodecs {
            offerer,
            ptime_ms: m.ptime_ms,
            accept,
        },
    ))
}

/// From the answerer's section and what the offer left: the plan (`[offerer, answerer]`) and
/// the answer's rewrite for the offerer, when the answerer chose a codec the offerer does not
/// have. `None`: no transcoding (the answer passes as it is).
pub fn answer_plan(offered: &OfferedCodecs, answer: &Media) -> Option<(CodecEdit, [LegCodec; 2])> {
    let formats = answer.payload_formats();
    let chosen = formats.iter().find(|f| !is_event(f) && !f.is("CN"))?;
    let b_codec = data_plane_codec(chosen)?;
    // An `accept` codec the answerer turned down is still answered to the offerer.
    let turned_down = |f: &&Format| {
        let name = format!("{}/{}", f.encoding, f.clock_hz);
        !formats.iter().any(|a| a.is(&name))
    };
    let accepted = offered
        .accept
        .iter()
        .filter(turned_down)
        .find(|f| data_plane_codec(f).is_some_and(|c| c != b_codec));
    let same = format!("{}/{}", chosen.encoding, chosen.clock_hz);
    if accepted.is_none() && offered.offerer.iter().any(|f| f.is(&same)) {
        return None;
    }
    let a_format = accepted.or_else(|| {
        offered
            .offerer
            .iter()
            .find(|f| data_plane_codec(f).is_some_and(|c| c != b_codec))
    })?;
    let a_codec = data_plane_codec(a_format)?;
    // Events are mapped only between event streams in their codec's clock.
    let event_in = |list: &[Format], clock: u32| {
        list.iter()
            .find(|f| is_event(f) && f.clock_hz == clock)
            .cloned()
    };
    let (a_event, b_event) = match (
        event_in(&offered.offerer, a_format.clock_hz),
        event_in(&formats, chosen.clock_hz),
    ) {
        (Some(a), Some(b)) => (Some(a), Some(b)),
        _ => (None, None),
    };
    let mut edit = CodecEdit {
        drop: formats.iter().map(|f| f.payload_type).collect(),
        ..CodecEdit::default()
    };
    for f in std::iter::once(a_format).chain(a_event.as_ref()) {
        edit.formats.push(f.payload_type.to_string());
        edit.add
            .push(format!("rtpmap:{} {}", f.payload_type, f.rtpmap()));
        if let Some(fmtp) = &f.fmtp {
            edit.add.push(format!("fmtp:{} {fmtp}", f.payload_type));
        }
    }
    let plan = [
        LegCodec {
            payload_type: a_format.payload_type,
            codec: a_codec,
            event_payload_type: a_event.map(|f| f.payload_type),
            ptime_ms: plan_ptime(offered.ptime_ms),
            options: codec_options(a_format),
        },
        LegCodec {
            payload_type: chosen.payload_type,
            codec: b_codec,
            event_payload_type: b_event.map(|f| f.payload_type),
            ptime_ms: plan_ptime(answer.ptime_ms),
            options: codec_options(chosen),
        },
    ];
    Some((edit, plan))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::{MediaRewrite, RewriteOptions, Sdp};

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
        m=audio 4000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-16\r\na=ptime:20\r\n";

    fn request(transcode: &[&str], strip: &[&str], mask: &[&str]) -> CodecRequest {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        CodecRequest {
            transcode: v(transcode),
            strip: v(strip),
            mask: v(mask),
            ..CodecRequest::default()
        }
    }

    fn names(l: &[&str]) -> Vec<String> {
        l.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn offer_keeps_and_orders_what_strip_all_would_remove() {
        let text = OFFER.replace("RTP/AVP 8 0 101", "RTP/AVP 8 0 18 101");
        let sdp = Sdp::parse(&text).unwrap();
        let req = CodecRequest {
            strip: names(&["all"]),
            offer: names(&["G729", "PCMU"]),
            ..CodecRequest::default()
        };
        let (edit, offered) = offer_edit(&sdp.media[0], &req).unwrap();
        assert_eq!(edit.formats, ["18", "0", "101"]);
        assert_eq!(edit.drop, [8]);
        // What `offer` kept stays usable towards the offerer; stripped PCMA does not.
        let pts: Vec<u8> = offered.offerer.iter().map(|f| f.payload_type).collect();
        assert_eq!(pts, [0, 18, 101]);
        // `offer` alone reorders (nothing stripped).
        let req = CodecRequest {
            offer: names(&["PCMU"]),
            ..CodecRequest::default()
        };
        let (edit, _) = offer_edit(&sdp.media[0], &req).unwrap();
        assert_eq!(edit.formats, ["0", "8", "18", "101"]);
        assert!(edit.drop.is_empty());
        // Already first: nothing to change.
        let req = CodecRequest {
            offer: names(&["PCMA"]),
            ..CodecRequest::default()
        };
        assert!(offer_edit(&sdp.media[0], &req).is_none());
    }

    #[test]
    fn accept_transcodes_a_codec_the_answerer_turned_down() {
        let text = OFFER.replace("RTP/AVP 8 0 101", "RTP/AVP 18 8 101");
        let sdp = Sdp::parse(&text).unwrap();
        let req = CodecRequest {
            accept: names(&["G729"]),
            ..CodecRequest::default()
        };
        let (edit, offered) = offer_edit(&sdp.media[0], &req).unwrap();
        // Offered onward as it was.
        assert_eq!(edit.formats, ["18", "8", "101"]);
        assert!(edit.drop.is_empty() && edit.add.is_empty());
        // The answerer takes PCMA only: the offerer is still answered G.729, transcoded.
        let answer = "v=0\r\nc=IN IP4 10.0.0.2\r\nm=audio 5000 RTP/AVP 8\r\n";
        let (edit, plan) = answer_plan(&offered, &Sdp::parse(answer).unwrap().media[0]).unwrap();
        assert_eq!((plan[0].codec, plan[1].codec), (Codec::G729, Codec::Pcma));
        assert_eq!(edit.formats, ["18"]);
        // The answerer takes G.729: nothing to transcode.
        let answer = "v=0\r\nc=IN IP4 10.0.0.2\r\nm=audio 5000 RTP/AVP 18 8\r\n";
        assert!(answer_plan(&offered, &Sdp::parse(answer).unwrap().media[0]).is_none());
        // Without `accept`, an answer in a codec the offerer has passes as it is.
        let (_, plain) = offer_edit(&sdp.media[0], &request(&["PCMU"], &[], &[])).unwrap();
        let answer = "v=0\r\nc=IN IP4 10.0.0.2\r\nm=audio 5000 RTP/AVP 8\r\n";
        assert!(answer_plan(&plain, &Sdp::parse(answer).unwrap().media[0]).is_none());
    }

    fn rewrite(sdp: &Sdp<'_>, edit: Option<CodecEdit>) -> String {
        sdp.rewrite_with_codecs(
            &[MediaRewrite { port: Some(30000) }],
            &[edit],
            &RewriteOptions {
                address: Some("192.0.2.9".parse().unwrap()),
                ..Default::default()
            },
        )
    }

    #[test]
    fn transcode_adds_opus_and_its_events_and_strip_removes() {
        let sdp = Sdp::parse(OFFER).unwrap();
        let (edit, offered) =
            offer_edit(&sdp.media[0], &request(&["opus"], &["PCMU"], &[])).unwrap();
        assert_eq!(
            rewrite(&sdp, Some(edit)),
            "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n\
             m=audio 30000 RTP/AVP 8 96 97 101\r\na=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n\
             a=rtpmap:96 opus/48000/2\r\na=fmtp:96 useinbandfec=1\r\n\
             a=rtpmap:97 telephone-event/48000\r\na=fmtp:97 0-16\r\n\
             a=sendrecv\r\na=rtcp:30001\r\n"
        );
        // PCMU was stripped: the offerer is never sent it.
        let names: Vec<_> = offered
            .offerer
            .iter()
            .map(|f| f.encoding.as_str())
            .collect();
        assert_eq!(names, ["PCMA", "telephone-event"]);
    }

    proptest::proptest! {
        /// Hostile m= lines and rtpmaps: the offer edit and the answer plan never panic, and
        /// an edit names only payload types below 128.
        #[test]
        fn hostile_sections_never_panic(
            lines in proptest::collection::vec("(m=audio 4000 RTP/AVP[ 0-9]{0,12}|a=(rtpmap|fmtp):[0-9]{1,3} [ -~]{0,16})", 0..8),
            transcode in proptest::collection::vec("(opus|PCMU|PCMA|G722|G729|all|x)", 0..3),
            strip in proptest::collection::vec("(opus|PCMU|PCMA|G722|G729|all|x)", 0..3),
        ) {
            let text = format!("v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 8 0 101\r\n{}\r\n", lines.join("\r\n"));
            if let Ok(sdp) = Sdp::parse(&text) {
                let req = CodecRequest { transcode, strip, ..CodecRequest::default() };
                for m in &sdp.media {
                    if let Some((edit, offered)) = offer_edit(m, &req) {
                        proptest::prop_assert!(edit.drop.iter().all(|&pt| pt < 128));
                        for answer in &sdp.media {
                            let _ = answer_plan(&offered, answer);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn g722_and_g729_are_offered_with_their_static_types_and_answered_into_pcma() {
        for (name, pt, codec) in [("G722", 9, Codec::G722), ("G729", 18, Codec::G729)] {
            let sdp = Sdp::parse(OFFER).unwrap();
            let (edit, offered) = offer_edit(&sdp.media[0], &request(&[name], &[], &[])).unwrap();
            assert_eq!(edit.formats, ["8", "0", &pt.to_string(), "101"]);
            let mut add = vec![format!("rtpmap:{pt} {name}/8000")];
            if name == "G729" {
                add.push(format!("fmtp:{pt} annexb=yes"));
            }
            assert_eq!(edit.add, add);
            let answer = format!("v=0\r\nc=IN IP4 10.0.0.2\r\nm=audio 5000 RTP/AVP {pt}\r\n");
            let (_, plan) = answer_plan(&offered, &Sdp::parse(&answer).unwrap().media[0]).unwrap();
            assert_eq!((plan[0].codec, plan[1].codec), (Codec::Pcma, codec));
            assert_eq!(plan[1].payload_type, pt);
            // Each leg's a=ptime goes into its plan (the data plane repacketises).
            assert_eq!((plan[0].ptime_ms, plan[1].ptime_ms), (20, 0));
            let answer = format!("{answer}a=ptime:30\r\n");
            let (_, plan) = answer_plan(&offered, &Sdp::parse(&answer).unwrap().media[0]).unwrap();
            assert_eq!((plan[0].ptime_ms, plan[1].ptime_ms), (20, 30));
        }
    }

    #[test]
    fn mask_hides_but_keeps_for_the_offerer_and_nothing_to_do_is_none() {
        let sdp = Sdp::parse(OFFER).unwrap();
        let (edit, offered) =
            offer_edit(&sdp.media[0], &request(&["PCMU"], &[], &["PCMA"])).unwrap();
        // PCMU is already offered (static 0): only PCMA goes, and it stays usable.
        assert_eq!(edit.formats, ["0", "101"]);
        assert_eq!(edit.drop, [8]);
        assert!(edit.add.is_empty());
        assert_eq!(offered.offerer.len(), 3);
        let out = rewrite(&sdp, Some(edit));
        assert!(out.contains("m=audio 30000 RTP/AVP 0 101\r\n"), "{out}");
        assert!(!out.contains("PCMA"), "{out}");
        assert!(offer_edit(&sdp.media[0], &request(&["PCMA"], &[], &[])).is_none());
        assert!(offer_edit(&sdp.media[0], &CodecRequest::default()).is_none());
        // Nothing to transcode from: GSM only, so Opus is not offered.
        let gsm = OFFER.replace("RTP/AVP 8 0 101", "RTP/AVP 3");
        let sdp = Sdp::parse(&gsm).unwrap();
        assert!(offer_edit(&sdp.media[0], &request(&["opus"], &[], &[])).is_none());
    }

    #[test]
    fn an_answer_in_an_added_codec_makes_a_plan_and_is_rewritten_for_the_offerer() {
        let sdp = Sdp::parse(OFFER).unwrap();
        let (_, offered) = offer_edit(&sdp.media[0], &request(&["opus"], &["PCMU"], &[])).unwrap();
        let answer = "v=0\r\no=- 2 2 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n\
            m=audio 5000 RTP/AVP 96 97\r\na=rtpmap:96 opus/48000/2\r\na=fmtp:96 useinbandfec=1\r\n\
            a=rtpmap:97 telephone-event/48000\r\na=fmtp:97 0-16\r\n";
        let asdp = Sdp::parse(answer).unwrap();
        let (edit, plan) = answer_plan(&offered, &asdp.media[0]).unwrap();
        assert_eq!(
            plan,
            [
                LegCodec {
                    payload_type: 8,
                    codec: Codec::Pcma,
                    event_payload_type: Some(101),
                    ptime_ms: 20,
                    options: CodecOptions::NONE,
                },
                LegCodec {
                    payload_type: 96,
                    codec: Codec::Opus,
                    event_payload_type: Some(97),
                    ptime_ms: 0,
                    // The answerer's `useinbandfec=1`: what we send it carries FEC.
                    options: CodecOptions {
                        fec: true,
                        dtx: false
                    },
                }
            ]
        );
        assert_eq!(
            rewrite(&asdp, Some(edit)),
            "v=0\r\no=- 2 2 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n\
             m=audio 30000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n\
             a=sendrecv\r\na=rtcp:30001\r\n"
        );
        // An answer in the offerer's own codec is relayed as it is.
        let same = answer.replace("RTP/AVP 96 97", "RTP/AVP 8");
        let ssdp = Sdp::parse(&same).unwrap();
        assert!(answer_plan(&offered, &ssdp.media[0]).is_none());
        // Without events on the answerer's side, none are mapped (nor offered back).
        let quiet = "v=0\r\nc=IN IP4 10.0.0.2\r\nm=audio 5000 RTP/AVP 0\r\n";
        let (_, offered) = offer_edit(
            &Sdp::parse(&OFFER.replace("8 0 101", "8 101"))
                .unwrap()
                .media[0],
            &request(&["PCMU"], &[], &[]),
        )
        .unwrap();
        let (edit, plan) = answer_plan(&offered, &Sdp::parse(quiet).unwrap().media[0]).unwrap();
        assert_eq!(plan[0].event_payload_type, None);
        assert_eq!(plan[1].codec, Codec::Pcmu);
        assert_eq!(edit.formats, ["8"]);
    }

    #[test]
    fn fmtp_parameters_become_codec_options() {
        let format = |encoding: &str, fmtp: Option<&str>| Format {
            payload_type: 96,
            encoding: encoding.into(),
            clock_hz: if encoding == "opus" { 48_000 } else { 8000 },
            params: None,
            fmtp: fmtp.map(str::to_string),
        };
        let opts = |fec, dtx| CodecOptions { fec, dtx };
        let cases = [
            ("opus", None, opts(false, false)),
            ("opus", Some("useinbandfec=1"), opts(true, false)),
            (
                "opus",
                Some("minptime=10; useinbandfec=1;usedtx=1"),
                opts(true, true),
            ),
            ("opus", Some("USEINBANDFEC=0;usedtx=0"), opts(false, false)),
            ("opus", Some("useinbandfec; usedtx=yes"), opts(false, false)),
            // G.729: Annex B unless the peer says no (RFC 7261: yes when absent).
            ("G729", None, opts(false, true)),
            ("G729", Some("annexb=yes"), opts(false, true)),
            ("G729", Some("annexb=no"), opts(false, false)),
            ("G729", Some(" AnnexB = No "), opts(false, false)),
            ("G729", Some("garbage;;=;annexb"), opts(false, true)),
            // Others have none.
            ("PCMA", Some("useinbandfec=1"), CodecOptions::NONE),
        ];
        for (encoding, fmtp, want) in cases {
            assert_eq!(
                codec_options(&format(encoding, fmtp)),
                want,
                "{encoding} {fmtp:?}"
            );
        }
        // Through a plan: the offerer's G.729 said no, the answerer's Opus asked for both.
        let offer = OFFER
            .replace("RTP/AVP 8 0 101", "RTP/AVP 18 101")
            .replace("a=ptime:20", "a=fmtp:18 annexb=no");
        let sdp = Sdp::parse(&offer).unwrap();
        let (_, offered) = offer_edit(&sdp.media[0], &request(&["opus"], &[], &[])).unwrap();
        let answer = "v=0\r\nc=IN IP4 10.0.0.2\r\nm=audio 5000 RTP/AVP 96\r\n\
            a=rtpmap:96 opus/48000/2\r\na=fmtp:96 usedtx=1;useinbandfec=1\r\n";
        let (edit, plan) = answer_plan(&offered, &Sdp::parse(answer).unwrap().media[0]).unwrap();
        assert_eq!(
            (plan[0].codec, plan[0].options),
            (Codec::G729, opts(false, false))
        );
        assert_eq!(
            (plan[1].codec, plan[1].options),
            (Codec::Opus, opts(true, true))
        );
        // The offerer is answered with its own fmtp.
        assert!(
            edit.add.contains(&"fmtp:18 annexb=no".to_string()),
            "{:?}",
            edit.add
        );
    }
}
