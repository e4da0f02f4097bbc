//! The ng protocol's decisions: which sessions a call has, which leg an SDP belongs to, what to
//! answer. Time and the data plane are parameters (`now`, `Media`), so it is tested with a fake.

use super::cache::ReplyCache;
use super::codecs::{self, OfferedCodecs};
use super::request::{self, Command, Request, RequestError};
use crate::bencode::{self, dict, Value};
use crate::sdp::{CodecEdit, MediaRewrite, RewriteOptions, Sdp};
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tandem_dataplane::api::{
    Codec, CoreError, DtmfKeys, DtmfOptions, DtmfSend, DtmfVia, InbandAudio, LegCodec, LegIndex,
    LegParams, SessionId, SessionStats, StreamStats, TelephoneEvents,
};

/// What the handler needs from the data plane.
pub trait Media {
    fn create(
        &self,
        a: LegParams,
        b: LegParams,
    ) -> impl Future<Output = Result<(SessionId, [u16; 2]), CoreError>> + Send;
    fn update(
        &self,
        id: SessionId,
        leg: LegIndex,
        params: LegParams,
    ) -> impl Future<Output = Result<(), CoreError>> + Send;
    fn delete(&self, id: SessionId)
        -> impl Future<Output = Result<SessionStats, CoreError>> + Send;
    fn query(&self, id: SessionId) -> impl Future<Output = Result<SessionStats, CoreError>> + Send;
    /// The session's codec plan (`[A, B]`), or `None` to relay untouched.
    fn set_codecs(
        &self,
        id: SessionId,
        codecs: Option<[LegCodec; 2]>,
    ) -> impl Future<Output = Result<(), CoreError>> + Send;
    /// How `leg`'s DTMF is heard and whether it is blocked towards the other leg.
    fn set_dtmf(
        &self,
        id: SessionId,
        leg: LegIndex,
        options: DtmfOptions,
    ) -> impl Future<Output = Result<(), CoreError>> + Send;
    /// Sends keys to `leg`'s peer.
    fn send_dtmf(
        &self,
        id: SessionId,
        leg: LegIndex,
        send: DtmfSend,
    ) -> impl Future<Output = Result<(), CoreError>> + Send;
    fn advertised_address(&self) -> IpAddr;
}

impl Media for crate::media::DataPlaneClient {
    fn create(
        &self,
        a: LegParams,
        b: LegParams,
    ) -> impl Future<Output = Result<(SessionId, [u16; 2]), CoreError>> + Send {
        crate::media::DataPlaneClient::create(self, a, b)
    }
    fn update(
        &self,
        id: SessionId,
        leg: LegIndex,
        params: LegParams,
    ) -> impl Future<Output = Result<(), CoreError>> + Send {
        crate::media::DataPlaneClient::update(self, id, leg, params)
    }
    fn delete(
        &self,
        id: SessionId,
    ) -> impl Future<Output = Result<SessionStats, CoreError>> + Send {
        crate::media::DataPlaneClient::delete(self, id)
    }
    fn query(&self, id: SessionId) -> impl Future<Output = Result<SessionStats, CoreError>> + Send {
        crate::media::DataPlaneClient::query(self, id)
    }
    fn set_codecs(
        &self,
        id: SessionId,
        codecs: Option<[LegCodec; 2]>,
    ) -> impl Future<Output = Result<(), CoreError>> + Send {
        crate::media::DataPlaneClient::set_codecs(self, id, codecs)
    }
    fn set_dtmf(
        &self,
        id: SessionId,
        leg: LegIndex,
        options: DtmfOptions,
    ) -> impl Future<Output = Result<(), CoreError>> + Send {
        crate::media::DataPlaneClient::set_dtmf(self, id, leg, options)
    }
    fn send_dtmf(
        &self,
        id: SessionId,
        leg: LegIndex,
        send: DtmfSend,
    ) -> impl Future<Output = Result<(), CoreError>> + Send {
        crate::media::DataPlaneClient::send_dtmf(self, id, leg, send)
    }
    fn advertised_address(&self) -> IpAddr {
        crate::media::DataPlaneClient::advertised_address(self)
    }
}

/// One relayed media section (`m=` line) of a call.
#[derive(Debug, Clone)]
struct Stream {
    id: SessionId,
    ports: [u16; 2],
    /// The last offer carried codec instructions: who offered, and what it can take.
    codec_offer: Option<(LegIndex, OfferedCodecs)>,
    /// The data plane transcodes this stream (a plan was set).
    transcoding: bool,
    /// What each leg's SDP said about DTMF (`[A, B]`), for `play DTMF` and `block DTMF`.
    dtmf: [LegDtmf; 2],
    /// An offer or answer carried rtpengine's `inject DTMF` flag: telephone events from a leg
    /// are sounded as tones towards a leg whose SDP has G.711 but no telephone-event.
    inject_dtmf: bool,
}

/// DTMF as one leg's peer takes it, from its last SDP.
#[derive(Debug, Clone, Copy, Default)]
struct LegDtmf {
    /// Its telephone-event payload type and clock.
    events: Option<(u8, u32)>,
    /// Its first G.711 format (the audio tones can be sent and heard in).
    g711: Option<(u8, Codec)>,
    /// `block DTMF` is in force for the DTMF this leg sends.
    blocked: bool,
    /// This leg's telephone events are sounded as tones in the other leg's G.711 audio.
    tones_to_other: Option<(u8, Codec)>,
    /// Its first audio format, when in-band detection can hear it (any codec the data plane
    /// has: G.711, G.722, Opus, G.729): the codec its peer sends.
    heard: Option<(u8, Codec)>,
    /// The keys heard as tones in this leg's audio go to the other leg as telephone events
    /// (its payload type and clock).
    events_to_other: Option<(u8, u32)>,
}

impl LegDtmf {
    fn from_sdp(m: &crate::sdp::Media) -> LegDtmf {
        let formats = m.payload_formats();
        let g711 = formats.iter().find_map(|f| {
            if f.is("PCMU/8000") {
                Some((f.payload_type, Codec::Pcmu))
            } else if f.is("PCMA/8000") {
                Some((f.payload_type, Codec::Pcma))
            } else {
                None
            }
        });
        // The event clock follows the audio: the first audio format's.
        let first_audio = formats
            .iter()
            .find(|f| !f.is("telephone-event") && !f.is("CN"));
        let audio_clock = first_audio.map_or(8000, |f| f.clock_hz);
        let heard =
            first_audio.and_then(|f| codecs::data_plane_codec(f).map(|c| (f.payload_type, c)));
        let events = formats
            .iter()
            .filter(|f| f.is("telephone-event"))
            .min_by_key(|f| f.clock_hz != audio_clock)
            .map(|f| (f.payload_type, f.clock_hz));
        LegDtmf {
            events,
            g711,
            blocked: false,
            tones_to_other: None,
            heard,
            events_to_other: None,
        }
    }

    /// What the core is told about DTMF from this leg.
    fn options(&self) -> DtmfOptions {
        DtmfOptions {
            event_payload_type: self.events.map(|(pt, _)| pt),
            // Tones are heard (to silence them, or to send them on as events) in the codec
            // the peer sends when the detector takes it, else its G.711 if it has one.
            inband: self
                .heard
                .or(self.g711)
                .filter(|_| self.blocked || self.events_to_other.is_some())
                .map(|(payload_type, codec)| InbandAudio {
                    payload_type,
                    codec,
                }),
            block: self.blocked,
            tones_to_other: self
                .tones_to_other
                .map(|(payload_type, codec)| InbandAudio {
                    payload_type,
                    codec,
                }),
            events_to_other: self
                .events_to_other
                .map(|(payload_type, clock_hz)| TelephoneEvents {
                    payload_type,
                    clock_hz,
                }),
        }
    }

    /// How keys reach this leg's peer: events when it takes telephone-event, else tones in
    /// its G.711 audio.
    fn via(&self) -> Option<DtmfVia> {
        match (self.events, self.g711) {
            (Some((payload_type, clock_hz)), _) => Some(DtmfVia::Events {
                payload_type,
                clock_hz,
            }),
            (None, Some((payload_type, codec))) => Some(DtmfVia::Tones {
                payload_type,
                codec,
            }),
            (None, None) => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Call {
    from_tag: String,
    to_tag: Option<String>,
    /// Per `m=` index; `None` for sections that are not relayed (port 0).
    streams: Vec<Option<Stream>>,
    created_unix_us: u64,
    last_signal_unix: u64,
}

/// Outcome of one datagram, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    pub reply: Option<Vec<u8>>,
    /// The command name ("other" when unknown), and whether it succeeded.
    pub command: &'static str,
    pub ok: bool,
    pub cached: bool,
}

pub struct NgHandler {
    calls: HashMap<String, Call>,
    by_session: HashMap<SessionId, String>,
    cache: ReplyCache,
    max_calls: usize,
    default_strict: bool,
    sessions_total: u64,
}

struct Failure(String);

impl From<RequestError> for Failure {
    fn from(e: RequestError) -> Self {
        Failure(e.0)
    }
}

type Reply = Value<'static>;

fn ok_reply(mut pairs: Vec<(&'static str, Value<'static>)>) -> Reply {
    pairs.push(("result", Value::str("ok")));
    dict(pairs)
}

/// rtpengine's `SSRC` dictionary: per received source, its quality. Tandem scores a source
/// once over the whole call (`crate::quality`), so only `average MOS` is given (MOS × 10,
/// round trip µs, jitter ms, loss %, as rtpengine reports them); sources without a rated codec
/// carry the measurements without `MOS`.
fn ssrc_dict(stats: &[SessionStats]) -> Reply {
    let mut sources: Vec<(std::borrow::Cow<'static, [u8]>, Reply)> = Vec::new();
    for q in stats.iter().flat_map(|s| s.legs.iter().map(|l| &l.quality)) {
        let (Some(ssrc), Some(score)) = (q.ssrc, crate::quality::score(q)) else {
            continue;
        };
        let mut average = vec![(
            "packet loss",
            Value::Int((score.loss_ratio * 100.0).round() as i64),
        )];
        if let Some(mos) = score.mos {
            average.push(("MOS", Value::Int((mos * 10.0).round() as i64)));
        }
        if let Some(jitter) = score.max_jitter_ms {
            average.push(("jitter", Value::Int(jitter.round() as i64)));
        }
        if let Some(rtt) = q.rtt_us {
            average.push(("round-trip time", Value::Int(rtt as i64)));
        }
        sources.push((
            ssrc.to_string().into_bytes().into(),
            dict([("average MOS", dict(average))]),
        ));
    }
    Value::Dict(sources)
}

fn stream_dict(s: &StreamStats) -> Reply {
    let mut pairs = vec![
        ("local port", Value::Int(s.local_port as i64)),
        (
            "stats",
            dict([
                ("packets", Value::Int(s.packets as i64)),
                ("bytes", Value::Int(s.bytes as i64)),
                ("errors", Value::Int(s.errors as i64)),
            ]),
        ),
        (
            "last packet",
            Value::Int((s.last_seen_ns / 1_000_000_000) as i64),
        ),
    ];
    if let Some(peer) = s.peer {
        pairs.push((
            "endpoint",
            dict([
                (
                    "family",
                    Value::str(if peer.is_ipv4() { "IPv4" } else { "IPv6" }),
                ),
                ("address", Value::string(peer.ip().to_string())),
                ("port", Value::Int(peer.port() as i64)),
            ]),
        ));
    }
    dict(pairs)
}

impl NgHandler {
    pub fn new(max_calls: usize, default_strict: bool) -> Self {
        NgHandler {
            calls: HashMap::new(),
            by_session: HashMap::new(),
            cache: ReplyCache::new(16_384, Duration::from_secs(30)),
            max_calls,
            default_strict,
            sessions_total: 0,
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// Answers one datagram `<cookie> <bencode or JSON>`. `None` when there is nobody to answer
    /// (no cookie).
    pub async fn handle(
        &mut self,
        now: Instant,
        unix_us: u64,
        datagram: &[u8],
        media: &impl Media,
    ) -> Handled {
        let Some(space) = datagram.iter().position(|&b| b == b' ') else {
            return Handled {
                reply: None,
                command: "other",
                ok: false,
                cached: false,
            };
        };
        let (cookie, body) = (&datagram[..space], &datagram[space + 1..]);
        if cookie.is_empty() {
            return Handled {
                reply: None,
                command: "other",
                ok: false,
                cached: false,
            };
        }
        if let Some(reply) = self.cache.get(now, cookie) {
            return Handled {
                reply: Some(reply.to_vec()),
                command: "other",
                ok: true,
                cached: true,
            };
        }
        let json = body.first() == Some(&b'{');
        let decoded = if json {
            request::from_json(body).map_err(|e| Failure(e.0))
        } else {
            bencode::decode(body).map_err(|e| Failure(format!("Failed to decode bencode: {e}")))
        };
        let (command, result) = match decoded {
            Err(f) => ("other", Err(f)),
            Ok(dict_value) => match request::parse(&dict_value) {
                Err(e) => ("other", Err(Failure::from(e))),
                Ok(req) => (req.command.name(), self.execute(&req, unix_us, media).await),
            },
        };
        let ok = result.is_ok();
        let body = result.unwrap_or_else(|Failure(reason)| {
            dict([
                ("result", Value::str("error")),
                ("error-reason", Value::string(reason)),
            ])
        });
        let mut reply = cookie.to_vec();
        reply.push(b' ');
        if json {
            reply.extend_from_slice(request::to_json(&body).to_string().as_bytes());
        } else {
            bencode::encode_into(&body, &mut reply);
        }
        self.cache.insert(now, cookie, reply.clone());
        Handled {
            reply: Some(reply),
            command,
            ok,
            cached: false,
        }
    }

    async fn execute(
        &mut self,
        req: &Request<'_>,
        unix_us: u64,
        media: &impl Media,
    ) -> Result<Reply, Failure> {
        match req.command {
            Command::Ping => Ok(dict([("result", Value::str("pong"))])),
            Command::Offer | Command::Answer => self.offer_answer(req, unix_us, media).await,
            Command::Delete => self.delete(req, media).await,
            Command::Query => self.query(req, media).await,
            Command::List => {
                let limit = req.limit.unwrap_or(32).clamp(0, 100_000) as usize;
                let ids = self
                    .calls
                    .keys()
                    .take(limit)
                    .map(|k| Value::string(k.clone()))
                    .collect();
                Ok(ok_reply(vec![("calls", Value::List(ids))]))
            }
            Command::PlayDtmf => self.play_dtmf(req, media).await,
            Command::BlockDtmf | Command::UnblockDtmf => self.block_dtmf(req, media).await,
            Command::Statistics => Ok(ok_reply(vec![(
                "statistics",
                dict([(
                    "currentstatistics",
                    dict([
                        ("sessionsown", Value::Int(self.calls.len() as i64)),
                        ("sessionsforeign", Value::Int(0)),
                        ("sessionstotal", Value::Int(self.calls.len() as i64)),
                        ("streams", Value::Int(self.by_session.len() as i64)),
                        ("streamstotal", Value::Int(self.sessions_total as i64)),
                    ]),
                )]),
            )])),
        }
    }

    async fn offer_answer(
        &mut self,
        req: &Request<'_>,
        unix_us: u64,
        media: &impl Media,
    ) -> Result<Reply, Failure> {
        let call_id = req.require_call_id()?;
        let from_tag = req
            .from_tag
            .filter(|t| !t.is_empty())
            .ok_or(Failure("No from-tag in message".into()))?;
        let sdp_text = req.sdp.ok_or(Failure("No SDP body in message".into()))?;
        let sdp = Sdp::parse(sdp_text).map_err(|e| Failure(format!("Failed to parse SDP: {e}")))?;
        let is_offer = req.command == Command::Offer;
        if !is_offer && req.to_tag.is_none_or(str::is_empty) {
            return Err(Failure("No to-tag in message".into()));
        }

        // Which leg sent this SDP. The SDP goes to the other side, which sends to the other leg.
        let sender = match self.calls.get(call_id) {
            None if is_offer => LegIndex::A,
            None => return Err(Failure("Unknown call-id".into())),
            Some(call) => {
                let tag = if is_offer {
                    from_tag
                } else {
                    req.to_tag.unwrap_or_default()
                };
                let b_tag = call.to_tag.as_deref();
                if tag == call.from_tag {
                    LegIndex::A
                } else if Some(tag) == b_tag || (!is_offer && b_tag.is_none()) {
                    LegIndex::B
                } else if is_offer {
                    // A new offerer on a known call (a fork or a restarted dialog): start over.
                    self.drop_call(call_id, media).await;
                    LegIndex::A
                } else {
                    return Err(Failure("Unknown to-tag".into()));
                }
            }
        };
        if !self.calls.contains_key(call_id) {
            if self.calls.len() >= self.max_calls {
                return Err(Failure("load limit".into()));
            }
            self.calls.insert(
                call_id.to_string(),
                Call {
                    from_tag: from_tag.to_string(),
                    to_tag: None,
                    streams: Vec::new(),
                    created_unix_us: unix_us,
                    last_signal_unix: unix_us / 1_000_000,
                },
            );
        }
        let strict = self.default_strict || req.has_flag("strict-source");
        let source_address = req
            .received_from
            .filter(|_| req.has_flag("SIP-source-address"));
        let mut rewrites = Vec::with_capacity(sdp.media.len());
        let mut edits: Vec<Option<CodecEdit>> = Vec::with_capacity(sdp.media.len());
        for (i, m) in sdp.media.iter().enumerate() {
            let mut params = LegParams {
                rtp: m.rtp_target(),
                rtcp: m.rtcp_target(),
                rtcp_mux: m.rtcp_mux,
                strict_source: strict,
            };
            if let Some(ip) = source_address {
                params.rtp = params.rtp.map(|a| std::net::SocketAddr::new(ip, a.port()));
                params.rtcp = params.rtcp.map(|a| std::net::SocketAddr::new(ip, a.port()));
            }
            let existing = self.calls[call_id].streams.get(i).cloned().flatten();
            let stream = match existing {
                Some(s) => {
                    self.session_op(call_id, media.update(s.id, sender, params).await, media)
                        .await?;
                    Some(s)
                }
                None if m.port == 0 => None,
                None => {
                    let (a, b) = match sender {
                        LegIndex::A => (params, LegParams::default()),
                        LegIndex::B => (LegParams::default(), params),
                    };
                    match media.create(a, b).await {
                        Ok((id, ports)) => {
                            self.sessions_total += 1;
                            self.by_session.insert(id, call_id.to_string());
                            Some(Stream {
                                id,
                                ports,
                                codec_offer: None,
                                transcoding: false,
                                dtmf: [LegDtmf::default(); 2],
                                inject_dtmf: false,
                            })
                        }
                        Err(e) => {
                            // A call whose first offer failed must not linger half-made.
                            if self.calls[call_id].streams.iter().all(Option::is_none) {
                                self.drop_call(call_id, media).await;
                            }
                            return Err(Failure(match e {
                                CoreError::LoadLimit if req.supports("load limit") => {
                                    "load limit".into()
                                }
                                CoreError::LoadLimit => "Parallel session limit reached".into(),
                                other => other.reason().into(),
                            }));
                        }
                    }
                }
            };
            let mut stream = stream;
            if let Some(s) = stream.as_mut() {
                let LegDtmf {
                    blocked,
                    tones_to_other,
                    events_to_other,
                    ..
                } = s.dtmf[sender as usize];
                s.dtmf[sender as usize] = LegDtmf {
                    blocked,
                    tones_to_other,
                    events_to_other,
                    ..LegDtmf::from_sdp(m)
                };
                if blocked {
                    // New payload types for a blocked leg: the core must know them.
                    let options = s.dtmf[sender as usize].options();
                    let r = media.set_dtmf(s.id, sender, options).await;
                    self.session_op(call_id, r, media).await?;
                }
                s.inject_dtmf |= req.has_flag("inject DTMF") || req.has_flag("inject-DTMF");
                if s.inject_dtmf {
                    // Once both SDPs are known (the answer), each direction from a leg with
                    // events to one without them but with G.711 (events become tones), and
                    // from a leg without events whose audio the detector hears to one with
                    // them (tones become events).
                    for leg in [LegIndex::A, LegIndex::B] {
                        let (from, to) = (s.dtmf[leg as usize], s.dtmf[leg.other() as usize]);
                        let (tones, events) = match (from.events, to.events) {
                            (Some(_), None) => (to.g711, None),
                            (None, Some(events)) => (None, from.heard.map(|_| events)),
                            _ => (None, None),
                        };
                        if tones != from.tones_to_other || events != from.events_to_other {
                            s.dtmf[leg as usize].tones_to_other = tones;
                            s.dtmf[leg as usize].events_to_other = events;
                            let options = s.dtmf[leg as usize].options();
                            let r = media.set_dtmf(s.id, leg, options).await;
                            self.session_op(call_id, r, media).await?;
                        }
                    }
                }
            }
            let edit = match stream.as_mut() {
                Some(s) => {
                    self.negotiate(call_id, s, sender, is_offer, req, m, media)
                        .await?
                }
                None => None,
            };
            edits.push(edit);
            let call = self.calls.get_mut(call_id).expect("inserted above");
            if call.streams.len() <= i {
                call.streams.resize(i + 1, None);
            }
            call.streams[i] = stream.clone();
            rewrites.push(MediaRewrite {
                port: stream.map(|s| s.ports[sender.other() as usize]),
            });
        }
        let call = self.calls.get_mut(call_id).expect("inserted above");
        call.last_signal_unix = unix_us / 1_000_000;
        if !is_offer && sender == LegIndex::B && call.to_tag.is_none() {
            call.to_tag = req.to_tag.map(str::to_string);
        }
        let out = sdp.rewrite_with_codecs(
            &rewrites,
            &edits,
            &RewriteOptions {
                address: Some(media.advertised_address()),
                replace_origin: req.replaces("origin"),
                transport_protocol: req.transport_protocol,
                // ICE is always removed: candidates would name the peers, not us.
                remove_ice: true,
            },
        );
        Ok(ok_reply(vec![("sdp", Value::string(out))]))
    }

    /// The `codec` dictionary for one stream: an offer with instructions rewrites the formats
    /// sent onward and is remembered; the answer to it sets the data plane's plan (when the
    /// answerer chose a codec the offerer lacks) and is rewritten into the offerer's codec.
    /// Returns the section's codec edit.
    #[allow(clippy::too_many_arguments)]
    async fn negotiate(
        &mut self,
        call_id: &str,
        stream: &mut Stream,
        sender: LegIndex,
        is_offer: bool,
        req: &Request<'_>,
        m: &crate::sdp::Media,
        media: &impl Media,
    ) -> Result<Option<CodecEdit>, Failure> {
        if is_offer {
            return Ok(match codecs::offer_edit(m, &req.codec) {
                Some((edit, offered)) => {
                    stream.codec_offer = Some((sender, offered));
                    Some(edit)
                }
                None => {
                    stream.codec_offer = None;
                    None
                }
            });
        }
        let plan = match &stream.codec_offer {
            Some((offerer, offered)) if *offerer == sender.other() => {
                codecs::answer_plan(offered, m).map(|(edit, [o, a])| {
                    let plan = match offerer {
                        LegIndex::A => [o, a],
                        LegIndex::B => [a, o],
                    };
                    (edit, plan)
                })
            }
            _ => None,
        };
        let (edit, codecs) = plan.unzip();
        if codecs.is_some() || stream.transcoding {
            let r = media.set_codecs(stream.id, codecs).await;
            self.session_op(call_id, r, media).await?;
            stream.transcoding = codecs.is_some();
        }
        Ok(edit)
    }

    /// Maps a data-plane failure on an existing stream: a session the core already ended
    /// (inactivity) means the call is gone.
    async fn session_op<T>(
        &mut self,
        call_id: &str,
        r: Result<T, CoreError>,
        media: &impl Media,
    ) -> Result<T, Failure> {
        match r {
            Ok(v) => Ok(v),
            Err(CoreError::UnknownSession) => {
                self.drop_call(call_id, media).await;
                Err(Failure("Call-ID not found (media timed out)".into()))
            }
            Err(e) => Err(Failure(e.reason().into())),
        }
    }

    /// The leg `tag` names in `call`.
    fn leg_of_tag(call: &Call, tag: &str) -> Option<LegIndex> {
        if tag == call.from_tag {
            Some(LegIndex::A)
        } else if call.to_tag.as_deref() == Some(tag) {
            Some(LegIndex::B)
        } else {
            None
        }
    }

    /// `play DTMF`: the participant `from-tag` names "presses" the key; the other hears it,
    /// as events when its SDP took telephone-event, else as tones in its G.711 audio.
    async fn play_dtmf(&mut self, req: &Request<'_>, media: &impl Media) -> Result<Reply, Failure> {
        let call_id = req.require_call_id()?;
        let call = self
            .calls
            .get(call_id)
            .cloned()
            .ok_or(Failure("Call-ID not found".into()))?;
        let code = req
            .dtmf
            .code
            .ok_or(Failure("No DTMF code in message".into()))?;
        let tag = req
            .from_tag
            .ok_or(Failure("No from-tag in message".into()))?;
        let presser = Self::leg_of_tag(&call, tag).ok_or(Failure("Unknown from-tag".into()))?;
        let hearer = presser.other();
        let keys = DtmfKeys::new(&code.to_string()).ok_or(Failure("Invalid DTMF code".into()))?;
        // The first stream that can carry a key to the hearer (the audio).
        let (id, via) = call
            .streams
            .iter()
            .flatten()
            .find_map(|s| Some((s.id, s.dtmf[hearer as usize].via()?)))
            .ok_or(Failure(
                "Participant takes neither telephone-event nor G.711".into(),
            ))?;
        let send = DtmfSend {
            keys,
            duration_ms: req.dtmf.duration_ms,
            pause_ms: req.dtmf.pause_ms,
            volume: req.dtmf.volume,
            via,
        };
        let r = media.send_dtmf(id, hearer, send).await;
        self.session_op(call_id, r, media).await?;
        Ok(ok_reply(Vec::new()))
    }

    /// `block DTMF` / `unblock DTMF`: for the participant `from-tag` names with the
    /// `directional` flag, else for both; its telephone events are not relayed, and its
    /// tones (G.711 audio) are relayed as silence.
    async fn block_dtmf(
        &mut self,
        req: &Request<'_>,
        media: &impl Media,
    ) -> Result<Reply, Failure> {
        let call_id = req.require_call_id()?;
        let block = req.command == Command::BlockDtmf;
        let call = self
            .calls
            .get(call_id)
            .ok_or(Failure("Call-ID not found".into()))?;
        let legs: &[LegIndex] = match req.from_tag.filter(|_| req.has_flag("directional")) {
            Some(tag) => match Self::leg_of_tag(call, tag) {
                Some(LegIndex::A) => &[LegIndex::A],
                Some(LegIndex::B) => &[LegIndex::B],
                None => return Err(Failure("Unknown from-tag".into())),
            },
            None => &[LegIndex::A, LegIndex::B],
        };
        let mut changes = Vec::new();
        let call = self.calls.get_mut(call_id).expect("looked up above");
        for s in call.streams.iter_mut().flatten() {
            for &leg in legs {
                s.dtmf[leg as usize].blocked = block;
                changes.push((s.id, leg, s.dtmf[leg as usize].options()));
            }
        }
        for (id, leg, options) in changes {
            let r = media.set_dtmf(id, leg, options).await;
            self.session_op(call_id, r, media).await?;
        }
        Ok(ok_reply(Vec::new()))
    }

    async fn drop_call(&mut self, call_id: &str, media: &impl Media) -> Vec<SessionStats> {
        let Some(call) = self.calls.remove(call_id) else {
            return Vec::new();
        };
        let mut stats = Vec::new();
        for s in call.streams.into_iter().flatten() {
            self.by_session.remove(&s.id);
            if let Ok(st) = media.delete(s.id).await {
                stats.push(st);
            }
        }
        stats
    }

    async fn delete(&mut self, req: &Request<'_>, media: &impl Media) -> Result<Reply, Failure> {
        let call_id = req.require_call_id()?;
        let Some(call) = self.calls.get(call_id).cloned() else {
            return Err(Failure("Call-ID not found".into()));
        };
        let stats = self.drop_call(call_id, media).await;
        Ok(self.stats_reply(&call, &stats))
    }

    async fn query(&mut self, req: &Request<'_>, media: &impl Media) -> Result<Reply, Failure> {
        let call_id = req.require_call_id()?;
        let Some(call) = self.calls.get(call_id).cloned() else {
            return Err(Failure("Call-ID not found".into()));
        };
        let mut stats = Vec::new();
        for s in call.streams.iter().flatten() {
            if let Ok(st) = media.query(s.id).await {
                stats.push(st);
            }
        }
        Ok(self.stats_reply(&call, &stats))
    }

    /// rtpengine's shape: `totals` per protocol, `tags` per party with their streams.
    fn stats_reply(&self, call: &Call, stats: &[SessionStats]) -> Reply {
        let sum = |rtcp: bool| {
            let mut t = StreamStats::default();
            for s in stats.iter().flat_map(|s| s.legs.iter()) {
                let x = if rtcp { &s.rtcp } else { &s.rtp };
                t.packets += x.packets;
                t.bytes += x.bytes;
                t.errors += x.errors;
            }
            dict([
                ("packets", Value::Int(t.packets as i64)),
                ("bytes", Value::Int(t.bytes as i64)),
                ("errors", Value::Int(t.errors as i64)),
            ])
        };
        let tag = |leg: usize, name: &str| {
            let streams: Vec<Reply> = stats
                .iter()
                .flat_map(|s| {
                    [
                        stream_dict(&s.legs[leg].rtp),
                        stream_dict(&s.legs[leg].rtcp),
                    ]
                })
                .collect();
            dict([
                ("tag", Value::string(name.to_string())),
                (
                    "medias",
                    Value::List(vec![dict([("streams", Value::List(streams))])]),
                ),
            ])
        };
        let mut tags: Vec<(std::borrow::Cow<'static, [u8]>, Reply)> = vec![(
            call.from_tag.clone().into_bytes().into(),
            tag(0, &call.from_tag),
        )];
        if let Some(to) = &call.to_tag {
            tags.push((to.clone().into_bytes().into(), tag(1, to)));
        }
        ok_reply(vec![
            (
                "created",
                Value::Int((call.created_unix_us / 1_000_000) as i64),
            ),
            (
                "created_us",
                Value::Int((call.created_unix_us % 1_000_000) as i64),
            ),
            ("last signal", Value::Int(call.last_signal_unix as i64)),
            ("totals", dict([("RTP", sum(false)), ("RTCP", sum(true))])),
            ("tags", Value::Dict(tags)),
            ("SSRC", ssrc_dict(stats)),
        ])
    }

    /// The data plane ended a session on its own (no media for the inactivity timeout): the
    /// whole call goes, as in rtpengine.
    pub async fn timed_out(&mut self, id: SessionId, media: &impl Media) {
        if let Some(call_id) = self.by_session.remove(&id) {
            self.drop_call(&call_id, media).await;
        }
    }
}
