//! Supervisor monitoring (listen, whisper, barge) of an answered call, asked for through the
//! API (`AcdOp::Monitor`).
//!
//! The supervisor is a SIP user of the call's tenant. Tandem rings its registered phone itself
//! (we are the UAC of that dialog) from a data-plane session of its own made on the core of the
//! call's session (`MediaOp::CreateSupervisor`): the phone is that session's leg A. Once the
//! phone answers, `MediaOp::AttachMonitor` points leg A at the phone's SDP and joins the session
//! to the call's, with the codecs the caller, the agent and the supervisor use; from then on
//! the mode changes live (`MediaOp::SetMonitorMode`).
//!
//! A monitor ends when the API stops it (CANCEL while ringing, BYE once answered), when the
//! supervisor hangs up or refuses, when its phone does not answer within the no-answer
//! timeout, when its media times out, or when the monitored call ends (the supervisor gets a
//! BYE). Its session is deleted then, which detaches it on the core. One monitor per call.

use super::super::queues::{AcdRefusal, AcdReply, MonitorOp, MonitorView, SupervisorMode};
use super::callback::callback_offer;
use super::*;
use crate::ng::codecs::data_plane_codec;
use tandem_dataplane::api::{Codec, CodecOptions};

/// One call's supervisor: its dialog (leg A of its own session) and where it stands.
pub(super) struct Monitor {
    tenant: String,
    supervisor: String,
    mode: SupervisorMode,
    state: MonitorState,
    leg: Leg,
    invite: Option<ClientTxId>,
    /// Our ACK to its 2xx, resent when the 2xx is.
    ack: Option<Vec<u8>>,
    session: Option<SessionId>,
    ring_until: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MonitorState {
    /// Waiting for the supervisor's session.
    Media,
    /// Our INVITE to the supervisor's phone is out.
    Ringing,
    /// Answered and attached to the call (or being attached).
    Active,
}

fn core_mode(mode: SupervisorMode) -> MonitorMode {
    match mode {
        SupervisorMode::Listen => MonitorMode::Listen,
        SupervisorMode::Whisper => MonitorMode::Whisper,
        SupervisorMode::Barge => MonitorMode::Barge,
    }
}

impl Engine {
    /// The API's request about the monitor of `call` (which must be of `tenant`).
    pub(super) fn monitor_request(
        &mut self,
        now: Now,
        tenant: &str,
        call: CallId,
        op: MonitorOp,
    ) -> Result<AcdReply, AcdRefusal> {
        // A queued call's contact id names the call too (a callback's: the call dialling it).
        let call = self.call_of(ContactId(call));
        let no_call = || AcdRefusal::NotFound(format!("no call {call}"));
        let c = self
            .calls
            .get(&call)
            .filter(|c| c.tenant == tenant)
            .ok_or_else(no_call)?;
        let answered = c.state == CallState::Answered && c.b.is_some();
        let session = c.session;
        let result = match op {
            MonitorOp::Start { supervisor, mode } => {
                let Some(session) = session.filter(|_| answered) else {
                    return Err(AcdRefusal::Conflict(format!(
                        "call {call} is not answered by an agent"
                    )));
                };
                self.start_monitor(now, call, session, supervisor, mode)
            }
            MonitorOp::SetMode(mode) => {
                let m = self
                    .monitors
                    .get_mut(&call)
                    .ok_or_else(|| AcdRefusal::NotFound(format!("call {call} has no monitor")))?;
                if m.mode != mode {
                    m.mode = mode;
                    if let (MonitorState::Active, Some(session)) = (m.state, session) {
                        self.actions.push(Action::Media(MediaOp::SetMonitorMode {
                            session,
                            mode: core_mode(mode),
                        }));
                    }
                    let tenant = tenant.to_string();
                    self.monitor_event(
                        tenant,
                        "monitor.mode",
                        serde_json::json!({"call": call, "mode": mode.as_str()}),
                    );
                }
                self.monitor_view(call)
                    .ok_or_else(|| AcdRefusal::NotFound(format!("call {call} has no monitor")))
            }
            MonitorOp::Stop => {
                let view = self
                    .monitor_view(call)
                    .ok_or_else(|| AcdRefusal::NotFound(format!("call {call} has no monitor")))?;
                self.end_monitor(now, call, "stopped");
                Ok(view)
            }
        };
        self.pump(now);
        result.map(AcdReply::Monitor)
    }

    pub(super) fn monitor_view(&self, call: CallId) -> Option<MonitorView> {
        self.monitors.get(&call).map(|m| MonitorView {
            call,
            supervisor: m.supervisor.clone(),
            mode: m.mode,
            state: match m.state {
                MonitorState::Media | MonitorState::Ringing => "ringing",
                MonitorState::Active => "active",
            }
            .into(),
        })
    }

    fn monitor_event(&mut self, tenant: String, kind: &'static str, detail: serde_json::Value) {
        self.actions.push(Action::Event(SipEvent::Monitor {
            tenant,
            kind,
            detail,
        }));
    }

    /// A new monitor of the answered `call`: the supervisor's session first, on its core.
    fn start_monitor(
        &mut self,
        now: Now,
        call: CallId,
        session: SessionId,
        supervisor: String,
        mode: SupervisorMode,
    ) -> Result<MonitorView, AcdRefusal> {
        if self.monitors.contains_key(&call) {
            return Err(AcdRefusal::Conflict(format!("call {call} has a monitor")));
        }
        let tenant = self.calls.get(&call).map(|c| c.tenant.clone());
        let tenant = tenant.unwrap_or_default();
        let domain = self.cfg.tenant_domain(&tenant).unwrap_or_default();
        if !self
            .accounts
            .contains_key(&(domain.to_ascii_lowercase(), supervisor.clone()))
        {
            return Err(AcdRefusal::NotFound(format!("no SIP user {supervisor}")));
        }
        let binding = self
            .location
            .lookup(&format!("{supervisor}@{domain}"), now.mono)
            .first()
            .map(|b| (b.contact.clone(), b.peer));
        let Some((contact, peer)) = binding else {
            return Err(AcdRefusal::Conflict(format!(
                "{supervisor} has no registered phone"
            )));
        };
        let leg = Leg {
            call_id: format!("{}@tandem", self.token("m")),
            local_tag: self.token("s"),
            local_uri: format!("\"Monitor {call}\" <sip:monitor@{domain}>"),
            remote: format!("<sip:{supervisor}@{domain}>"),
            remote_tag: None,
            remote_target: contact,
            route_set: Vec::new(),
            local_cseq: 0,
            peer,
        };
        self.monitors.insert(
            call,
            Monitor {
                tenant: tenant.clone(),
                supervisor: supervisor.clone(),
                mode,
                state: MonitorState::Media,
                leg,
                invite: None,
                ack: None,
                session: None,
                ring_until: now.mono + Duration::from_secs(self.cfg.no_answer_timeout_s),
            },
        );
        self.actions.push(Action::Media(MediaOp::CreateSupervisor {
            call,
            core: session.core,
        }));
        self.monitor_event(
            tenant,
            "monitor.started",
            serde_json::json!({"call": call, "supervisor": supervisor, "mode": mode.as_str()}),
        );
        self.monitor_view(call)
            .ok_or_else(|| AcdRefusal::NotFound(format!("call {call} has no monitor")))
    }

    /// The data plane made (or refused) the supervisor's session: ring the supervisor.
    pub fn supervisor_created(
        &mut self,
        now: Now,
        call: CallId,
        result: Result<(SessionId, [u16; 2]), CoreError>,
    ) {
        let wanted = self
            .monitors
            .get(&call)
            .is_some_and(|m| m.state == MonitorState::Media);
        match result {
            Ok((session, _)) if !wanted => {
                self.actions
                    .push(Action::Media(MediaOp::DeleteSupervisor { session }));
            }
            Err(e) => {
                if wanted {
                    tracing::warn!("call {call}: no session for its supervisor: {}", e.reason());
                    self.metrics.media_failure();
                    self.end_monitor(now, call, "media");
                }
            }
            Ok((session, ports)) => self.ring_supervisor(now, call, session, ports[0]),
        }
        self.pump(now);
    }

    fn ring_supervisor(&mut self, now: Now, call: CallId, session: SessionId, port: u16) {
        let (contact, address) = (self.contact.clone(), self.media_address);
        let Some(m) = self.monitors.get_mut(&call) else {
            return;
        };
        m.session = Some(session);
        let offer = callback_offer(address, port, call);
        let mut invite = m.leg.request(Method::Invite, &contact);
        invite.push("Max-Forwards", "70");
        invite.push("Allow", ALLOW);
        invite.set_body("application/sdp", offer.into_bytes());
        m.state = MonitorState::Ringing;
        self.monitor_dialogs
            .insert((m.leg.call_id.clone(), m.leg.local_tag.clone()), call);
        let (peer, at) = (m.leg.peer, m.ring_until);
        let tx = self.tx.send_request(now.mono, invite, peer, None);
        m.invite = Some(tx);
        self.pending.insert(tx, Pending::Monitor(call));
        self.call_timers.push(Reverse((at, call)));
    }

    /// A response of the supervisor's phone to our INVITE.
    pub(super) fn on_supervisor_response(
        &mut self,
        now: Now,
        call: CallId,
        tx: ClientTxId,
        res: Message,
    ) {
        let code = res.status().unwrap_or(0);
        let Some(m) = self.monitors.get(&call).filter(|m| m.invite == Some(tx)) else {
            if (200..300).contains(&code) {
                self.ack_and_bye_orphan(now, tx, &res);
            }
            return;
        };
        match (m.state, code) {
            (_, 0..=199) => {}
            (MonitorState::Ringing, 200..=299) => self.supervisor_answered(now, call, res),
            (_, 200..=299) => match m.ack.clone() {
                // A retransmitted 2xx: our ACK was lost.
                Some(ack) => self.tx.resend(m.leg.peer, ack),
                None => self.ack_and_bye_orphan(now, tx, &res),
            },
            _ => {
                if let Some(m) = self.monitors.get_mut(&call) {
                    // The transaction layer ACKed the refusal; nothing to cancel or BYE.
                    m.invite = None;
                    m.state = MonitorState::Media;
                }
                self.end_monitor(now, call, "refused");
            }
        }
    }

    /// The supervisor answered: ACK, and attach its session to the call in the codecs each
    /// phone uses. An answer without usable audio is hung up.
    fn supervisor_answered(&mut self, now: Now, call: CallId, res: Message) {
        let contact = self.contact.clone();
        let codecs = self.calls.get(&call).and_then(call_codecs);
        let call_session = self.calls.get(&call).and_then(|c| c.session);
        let Some(m) = self.monitors.get_mut(&call) else {
            return;
        };
        m.leg.confirm(&res);
        let ack = m.leg.request(Method::Ack, &contact);
        let peer = m.leg.peer;
        m.ack = Some(self.tx.send_ack(ack, peer));
        m.state = MonitorState::Active;
        let answer = res
            .body_str()
            .filter(|_| res.content_type() == Some("application/sdp"))
            .unwrap_or_default();
        let attach = (
            first_audio_params(answer),
            answer_leg_codec(answer),
            codecs,
            call_session,
            m.session,
        );
        let (Some(params), Some(theirs), Some([caller, agent]), Some(session), Some(supervisor)) =
            attach
        else {
            tracing::info!("call {call}: the supervisor's answer has no audio we can mix");
            self.end_monitor(now, call, "codec");
            return;
        };
        let (mode, tenant, user) = (m.mode, m.tenant.clone(), m.supervisor.clone());
        self.actions.push(Action::Media(MediaOp::AttachMonitor {
            call,
            session,
            supervisor,
            params,
            mode: core_mode(mode),
            codecs: [caller, agent, theirs],
        }));
        self.monitor_event(
            tenant,
            "monitor.answered",
            serde_json::json!({"call": call, "supervisor": user, "mode": mode.as_str()}),
        );
    }

    /// The data plane attached (or refused to attach) the supervisor.
    pub fn supervisor_attached(&mut self, now: Now, call: CallId, result: Result<(), CoreError>) {
        if let Err(e) = result {
            tracing::warn!("call {call}: supervisor not attached: {}", e.reason());
            self.end_monitor(now, call, "media");
            self.pump(now);
        }
    }

    /// An in-dialog request from a supervisor's phone: BYE ends the monitor; its media stays
    /// as agreed (no re-INVITE or UPDATE of it).
    pub(super) fn supervisor_request(
        &mut self,
        now: Now,
        tx: ServerTxId,
        req: Message,
        call: CallId,
    ) {
        match req.method() {
            Some(Method::Bye) => {
                let res = Message::response_to(&req, 200, None);
                self.respond(now, tx, res);
                if let Some(m) = self.monitors.get_mut(&call) {
                    // Its dialog is over: nothing to send it.
                    m.state = MonitorState::Media;
                    m.invite = None;
                }
                self.end_monitor(now, call, "supervisor");
            }
            Some(Method::Options) => self.reply(now, tx, &req, 200),
            Some(Method::Invite | Method::Update) => self.reply(now, tx, &req, 488),
            _ => {
                let mut res = Message::response_to(&req, 405, None);
                res.push("Allow", "ACK, BYE, CANCEL, OPTIONS");
                self.respond(now, tx, res);
            }
        }
    }

    /// Ends the monitor of `call`, if any: CANCEL while ringing, BYE once answered, the
    /// supervisor's session deleted.
    pub(super) fn end_monitor(&mut self, now: Now, call: CallId, reason: &str) {
        let Some(mut m) = self.monitors.remove(&call) else {
            return;
        };
        let contact = self.contact.clone();
        self.monitor_dialogs
            .remove(&(m.leg.call_id.clone(), m.leg.local_tag.clone()));
        match m.state {
            MonitorState::Ringing => {
                if let Some(invite) = m.invite {
                    // A 2xx racing the CANCEL finds no monitor: ACKed and BYEd.
                    self.tx.cancel(now.mono, invite);
                }
            }
            MonitorState::Active => {
                let bye = m.leg.request(Method::Bye, &contact);
                let tx = self.tx.send_request(now.mono, bye, m.leg.peer, None);
                self.pending.insert(tx, Pending::Bye);
            }
            MonitorState::Media => {}
        }
        if let Some(session) = m.session {
            self.actions
                .push(Action::Media(MediaOp::DeleteSupervisor { session }));
        }
        self.monitor_event(
            m.tenant,
            "monitor.ended",
            serde_json::json!({"call": call, "supervisor": m.supervisor, "reason": reason}),
        );
    }

    /// Our INVITE to the supervisor got no final answer in time.
    pub(super) fn supervisor_timed_out_ringing(&mut self, call: CallId, tx: ClientTxId, now: Now) {
        if let Some(m) = self
            .monitors
            .get_mut(&call)
            .filter(|m| m.invite == Some(tx))
        {
            m.state = MonitorState::Media;
            m.invite = None;
            self.end_monitor(now, call, "no answer");
        }
    }

    /// The supervisor's ring timeout (no-answer timeout) fell due.
    pub(super) fn supervisor_ring_timer(&mut self, now: Now, call: CallId) {
        let due = self
            .monitors
            .get(&call)
            .is_some_and(|m| m.state == MonitorState::Ringing && m.ring_until <= now.mono);
        if due {
            self.end_monitor(now, call, "no answer");
        }
    }

    /// A session timed out on its core: when it was a supervisor's, that monitor ends. True
    /// when it was.
    pub(super) fn supervisor_timed_out(&mut self, now: Now, session: SessionId) -> bool {
        let Some((&call, _)) = self
            .monitors
            .iter()
            .find(|(_, m)| m.session == Some(session))
        else {
            return false;
        };
        if let Some(m) = self.monitors.get_mut(&call) {
            m.session = None; // already gone from the core
        }
        self.end_monitor(now, call, "media_timeout");
        true
    }
}

/// What the caller (leg A) and the agent (leg B) send: a transcoded call's plan; for a relayed
/// call the agent's answer chose the codec, and the caller sends the same one when it offered
/// it, else the first of its offer the cores can decode.
fn call_codecs(c: &Call) -> Option<[LegCodec; 2]> {
    // A transcoded call's legs each have their own codec: the plan says which.
    if let Some(plan) = c.transcoding.plan() {
        return Some(plan);
    }
    let agent = answer_leg_codec(&c.sdp[1])?;
    let caller = offered_leg_codec(&c.sdp[0], Some(agent.codec))
        .or_else(|| offered_leg_codec(&c.sdp[0], None))?;
    Some([caller, agent])
}

/// The codec an answer chose (its first format) when the cores can mix it, with the stream's
/// telephone-event payload type in that codec's clock.
fn answer_leg_codec(sdp: &str) -> Option<LegCodec> {
    let formats = audio_formats(sdp)?;
    let chosen = formats
        .iter()
        .find(|f| !f.is("telephone-event") && !f.is("CN"))?;
    leg_codec(&formats, chosen)
}

/// The first format of an offer the cores can mix (`only`: of that codec).
pub(super) fn offered_leg_codec(sdp: &str, only: Option<Codec>) -> Option<LegCodec> {
    let formats = audio_formats(sdp)?;
    let format = formats
        .iter()
        .find(|f| data_plane_codec(f).is_some_and(|codec| only.is_none_or(|o| o == codec)))?;
    leg_codec(&formats, format)
}

fn audio_formats(sdp: &str) -> Option<Vec<crate::sdp::Format>> {
    let sdp = Sdp::parse(sdp).ok()?;
    let media = sdp
        .media
        .iter()
        .find(|m| m.kind == "audio" && m.port != 0)?;
    Some(media.payload_formats())
}

fn leg_codec(formats: &[crate::sdp::Format], format: &crate::sdp::Format) -> Option<LegCodec> {
    let event = formats
        .iter()
        .find(|f| f.is("telephone-event") && f.clock_hz == format.clock_hz);
    Some(LegCodec {
        payload_type: format.payload_type,
        codec: data_plane_codec(format)?,
        event_payload_type: event.map(|f| f.payload_type),
        // The mix runs on 20 ms frames whatever the phones' packetisation.
        ptime_ms: 0,
        // The mix encodes towards the supervisor without DTX or FEC whatever it asked.
        options: CodecOptions::NONE,
    })
}
