//! Queued callbacks (a queue's `callback_key`): the caller keeps its place in the ACD and is
//! hung up; when the ACD reserves an agent for the contact (`PlaceCallback`), Tandem dials the
//! customer itself and, once the customer answers, rings the agent's devices and bridges them.
//!
//! A callback call is an ordinary `Call` whose leg A is a dialog Tandem started (we are its
//! UAC: `a_invite` is `None` and `CallState::Dialling` while our INVITE is out) and whose
//! `Queued` carries the contact of the call that asked for it (`Queued::contact`,
//! `ContactCentre::callback_calls`). From the customer's 2xx on it is an answered call with
//! leg B empty, the same shape as a caller transferred back into a queue, so the agent's
//! devices are offered and connected by the contact-centre code, and BYE, re-INVITE, session
//! and media timeouts and the call record work as for any call.
//!
//! The ACD's sequence: `PlaceCallback` (agent reserved, the attempt's dial timeout running) →
//! our INVITE → the customer's 2xx → `CallbackResult { answered: true }` → the ACD's `Connect`
//! (the agent is on the call for the ACD from here) → the agent's devices ring, the customer
//! hears the queue's music → a device's 2xx becomes leg B. A customer who is busy, does not
//! answer or cannot be routed is `CallbackResult { answered: false }` (the ACD retries after
//! `queue_callback_retry_s`, up to `queue_callback_attempts`); the ACD's dial timeout is its
//! `CancelOffer`, which CANCELs our INVITE. Once the ACD has connected there is no way back to
//! waiting: an agent whose devices then refuse or ring out (the queue's ring timeout) ends the
//! call, booked as completed by the agent.

use super::contact_centre::{CallbackDial, CallbackOrigin};
use super::*;
use tandem_acd::{AgentId, Input};

impl Engine {
    /// The call of a contact: the call dialling it back for a callback, else the call itself.
    pub(super) fn call_of(&self, contact: ContactId) -> CallId {
        self.cc
            .callback_calls
            .get(&contact)
            .copied()
            .unwrap_or(contact.0)
    }

    /// The ACD contact of a queued call.
    pub(super) fn contact_of(&self, call: CallId) -> ContactId {
        self.calls
            .get(&call)
            .and_then(|c| c.queue.as_ref())
            .map_or(ContactId(call), |q| q.contact)
    }

    fn callback_of(&mut self, call: CallId) -> Option<&mut CallbackDial> {
        self.calls.get_mut(&call)?.queue.as_mut()?.callback.as_mut()
    }

    /// A waiting caller pressed the queue's callback key: the ACD keeps its place as a callback
    /// to the caller's number, and the call ends (answered and hung up once the caller's ACK
    /// confirms the dialog; BYE at once when it was answered already).
    pub(super) fn request_callback(&mut self, now: Now, call: CallId) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let Some(q) = c.queue.as_ref().filter(|q| q.callback.is_none()) else {
            return;
        };
        let Some(raw) = callback_number(&c.a_request) else {
            tracing::debug!("call {call}: callback key, but no usable caller number");
            return;
        };
        let (contact, tenant) = (q.contact, c.tenant.clone());
        let number = self.cfg.normalize(&tenant, &raw);
        let origin = CallbackOrigin {
            tenant,
            queue: q.queue,
            raw,
            ours: c.dialled.clone(),
        };
        // Known before the ACD answers: an agent free at once gets `PlaceCallback` right away.
        self.cc.callbacks.insert(contact, origin);
        if let Err(e) = self.acd_input(now, Input::RequestCallback { contact, number }) {
            tracing::debug!("call {call}: callback refused by the ACD: {e}");
            self.cc.callbacks.remove(&contact);
            return;
        }
        // The contact lives on without this call.
        self.stop_music(call);
        self.drop_offers(now, call);
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        c.queue = None;
        c.ended_by = "callback";
        if c.state == CallState::Answered {
            self.hang_up_both(now, call, None);
            return;
        }
        let (offer, port) = (c.sdp[0].clone(), c.ports[0]);
        let Some(sdp) = self.rewrite_for(&offer, port) else {
            self.fail_call(now, call, 480, Disposition::NoAnswer, "callback");
            return;
        };
        self.answer_with_our_sdp(now, call, sdp);
    }

    /// Answers the caller of an unanswered call ourselves (200 with `sdp`, our SDP): no leg B
    /// answered it.
    pub(super) fn answer_with_our_sdp(&mut self, now: Now, call: CallId, sdp: String) {
        let contact = self.contact.clone();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        c.state = CallState::Answered;
        c.final_code = 200;
        c.disposition = Disposition::Answered;
        c.answered_unix_ms = Some(now.unix_ms);
        c.setup_ms = Some(now.mono.saturating_duration_since(c.started).as_millis() as u64);
        let mut ok = Message::response_to(&c.a_request, 200, Some(&c.a.local_tag));
        ok.push("Contact", contact);
        ok.push("Allow", ALLOW);
        ok.set_body("application/sdp", sdp.into_bytes());
        let (a_invite, tenant) = (c.a_invite, c.tenant.clone());
        if let Some(a_invite) = a_invite {
            self.respond(now, a_invite, ok);
        }
        self.actions
            .push(Action::Event(SipEvent::CallAnswered { call, tenant }));
    }

    /// The ACK of a caller answered only to be hung up for its callback: BYE now (RFC 3261
    /// §15: not before the ACK; without one, the ACK timeout ends the call).
    pub(super) fn callback_caller_acked(&mut self, now: Now, ack: &Message) {
        let Some(tag) = ack.to_tag() else { return };
        let key = (ack.call_id().to_string(), tag.to_string());
        let Some(&(call, Side::A)) = self.dialogs.get(&key) else {
            return;
        };
        if self
            .calls
            .get(&call)
            .is_some_and(|c| c.ended_by == "callback" && c.state == CallState::Answered)
        {
            self.hang_up_both(now, call, None);
        }
    }

    /// The ACD reserved `agent` for a callback (rung once the customer answers): a call to the customer's number, routed with
    /// the tenant's routes like any dialled number, on a fresh data-plane session. Any reason
    /// it cannot start (no route, no registered user, call limits) is a failed attempt.
    pub(super) fn place_callback(
        &mut self,
        now: Now,
        contact: ContactId,
        agent: AgentId,
        number: String,
        attempt: u32,
    ) {
        let failed = Input::CallbackResult {
            contact,
            answered: false,
        };
        let Some(origin) = self.cc.callbacks.get(&contact).cloned() else {
            self.cc.deferred.push_back(failed);
            return;
        };
        let tenant = origin.tenant.clone();
        let route = self
            .cfg
            .route(&tenant, &number)
            .or_else(|| self.cfg.route(&tenant, &origin.raw));
        let resolved = match route.as_ref().map(|r| &r.target) {
            None | Some(RouteTarget::Queue(_) | RouteTarget::Conference(_)) => Err(404),
            Some(target) => self.resolve(now, &tenant, target, &number),
        };
        let over_limit = self.calls.len() >= self.cfg.max_calls
            || self.cfg.tenant_max_calls(&tenant).is_some_and(|limit| {
                self.calls.values().filter(|c| c.tenant == tenant).count() >= limit
            });
        // Nobody would take the customer's call: not worth ringing the customer for.
        let agent_reachable = self.cc.agent_info.get(&agent).is_some_and(|info| {
            let domain = self.cfg.tenant_domain(&info.tenant).unwrap_or_default();
            !self
                .location
                .lookup(&format!("{}@{domain}", info.user), now.mono)
                .is_empty()
        });
        let (uri, peer) = match resolved {
            Ok(target) if !over_limit && agent_reachable => target,
            other => {
                tracing::info!(
                    "callback to {number} (attempt {attempt}) not placed: {}",
                    match other {
                        Err(code) => format!("no route ({code})"),
                        Ok(_) if over_limit => "call limit".into(),
                        Ok(_) => "the agent has no registered phone".into(),
                    }
                );
                self.cc.deferred.push_back(failed);
                return;
            }
        };
        let trunk = match route.map(|r| r.target) {
            Some(RouteTarget::Trunk(name)) => Some(name),
            _ => None,
        };
        self.next_call += 1;
        let id = self.next_call;
        let domain = self.cfg.tenant_domain(&tenant).unwrap_or_default();
        let ours = format!("sip:{}@{domain}", origin.ours);
        let a = Leg {
            call_id: format!("{}@tandem", self.token("c")),
            local_tag: self.token("a"),
            local_uri: format!("<{ours}>"),
            remote: format!("<{uri}>"),
            remote_tag: None,
            remote_target: uri.clone(),
            route_set: Vec::new(),
            local_cseq: 0,
            peer,
        };
        self.dialogs
            .insert((a.call_id.clone(), a.local_tag.clone()), (id, Side::A));
        let mut queued = Queued::new(origin.queue, contact);
        queued.callback = Some(CallbackDial {
            invite: None,
            ack: None,
            answered: false,
            reported: false,
            agent_ring_until: None,
        });
        let direction = if trunk.is_some() {
            "outbound"
        } else {
            "internal"
        };
        self.calls.insert(
            id,
            Call {
                tenant: tenant.clone(),
                state: CallState::Media,
                a,
                b: None,
                a_invite: None,
                a_request: Message::request(Method::Invite, uri.clone()),
                sdp: [String::new(), String::new()],
                b_invite: None,
                b_ack: None,
                session: None,
                ports: [0, 0],
                caller: ours.clone(),
                dialled: number.clone(),
                target_uri: uri,
                target_peer: peer,
                redirects: 0,
                started: now.mono,
                started_unix_ms: now.unix_ms,
                answered_unix_ms: None,
                setup_ms: None,
                // The ACD's dial timeout bounds the attempt (its CancelOffer).
                no_answer_at: now.mono,
                final_code: 0,
                disposition: Disposition::Failed,
                ended_by: "",
                codecs: Vec::new(),
                session_interval: None,
                session_expires_at: None,
                b_rseq: None,
                transfer: None,
                trunk,
                b_auth_tried: false,
                replacement: None,
                no_bye: None,
                direction,
                queue: Some(queued),
                transcoding: Default::default(),
                info_dtmf: Default::default(),
            },
        );
        self.cc.callback_calls.insert(contact, id);
        self.metrics.call_started();
        self.actions.push(Action::Event(SipEvent::CallOffered {
            call: id,
            tenant,
            from: ours,
            to: number,
        }));
        // Nobody's address is known for either leg yet: the customer's comes with its answer.
        self.actions.push(Action::Media(MediaOp::Create {
            call: id,
            a: LegParams::default(),
            b: LegParams::default(),
        }));
    }

    /// The callback's session exists: INVITE the customer, offering leg A's port.
    pub(super) fn dial_customer(&mut self, now: Now, call: CallId) {
        let contact = self.contact.clone();
        let address = self.media_address;
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let offer = callback_offer(address, c.ports[0], call);
        let mut invite = c.a.request(Method::Invite, &contact);
        invite.push("Max-Forwards", "70");
        invite.push("Allow", ALLOW);
        invite.push("Supported", "replaces, timer");
        c.a_request = invite.clone();
        invite.set_body("application/sdp", offer.into_bytes());
        c.state = CallState::Dialling;
        let peer = c.a.peer;
        let tx = self.tx.send_request(now.mono, invite, peer, None);
        self.pending.insert(tx, Pending::Callback(call));
        if let Some(d) = self.callback_of(call) {
            d.invite = Some(tx);
        }
    }

    /// A response of the customer to our callback INVITE.
    pub(super) fn on_callback_response(
        &mut self,
        now: Now,
        call: CallId,
        tx: ClientTxId,
        res: Message,
    ) {
        let code = res.status().unwrap_or(0);
        let Some(c) = self.calls.get_mut(&call) else {
            if (200..300).contains(&code) {
                self.ack_and_bye_orphan(now, tx, &res);
            }
            return;
        };
        let (state, peer) = (c.state, c.a.peer);
        let Some(d) = c
            .queue
            .as_mut()
            .and_then(|q| q.callback.as_mut())
            .filter(|d| d.invite == Some(tx))
        else {
            return;
        };
        if state != CallState::Dialling {
            if (200..300).contains(&code) {
                match d.ack.clone() {
                    // A retransmitted 2xx: our ACK was lost.
                    Some(ack) => self.tx.resend(peer, ack),
                    None => self.ack_and_bye_orphan(now, tx, &res),
                }
            }
            return;
        }
        match code {
            0..=199 => {}
            200..=299 => self.callback_answered(now, call, res),
            _ => {
                c.final_code = code;
                c.disposition = match code {
                    486 | 600 => Disposition::Busy,
                    408 | 480 | 487 => Disposition::NoAnswer,
                    403 | 603 => Disposition::Rejected,
                    _ => Disposition::Failed,
                };
                c.ended_by = "callee";
                // Leaving the ACD reports the failed attempt.
                self.finish(now, call);
            }
        }
    }

    /// The customer answered: ACK, point leg A's media at it, and tell the ACD, whose
    /// `Connect` rings the reserved agent.
    fn callback_answered(&mut self, now: Now, call: CallId, res: Message) {
        let contact_header = self.contact.clone();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let a = &mut c.a;
        a.confirm(&res);
        let ack = a.request(Method::Ack, &contact_header);
        let peer = a.peer;
        let ack_bytes = self.tx.send_ack(ack, peer);
        c.state = CallState::Answered;
        c.final_code = 200;
        c.disposition = Disposition::Answered;
        c.answered_unix_ms = Some(now.unix_ms);
        let setup = now.mono.saturating_duration_since(c.started);
        c.setup_ms = Some(setup.as_millis() as u64);
        let answer = res
            .body_str()
            .filter(|_| res.content_type() == Some("application/sdp"))
            .map(str::to_string);
        let params = answer.as_deref().and_then(first_audio_params);
        let session = c.session;
        let Some(d) = self.callback_of(call) else {
            return;
        };
        d.ack = Some(ack_bytes);
        let (Some(answer), Some(params)) = (answer, params) else {
            // Nothing to bridge to: hang up; leaving the ACD reports the failed attempt.
            if let Some(c) = self.calls.get_mut(&call) {
                c.ended_by = "system";
                c.final_code = 488;
            }
            self.hang_up_both(now, call, None);
            return;
        };
        d.answered = true;
        d.reported = true;
        if let Some(session) = session {
            self.actions.push(Action::Media(MediaOp::Update {
                session,
                leg: LegIndex::A,
                params,
            }));
        }
        // Fetched again after the callback's borrow of the engine; nothing above removes it.
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        c.codecs = codec_names(&answer);
        c.sdp[0] = answer;
        let tenant = c.tenant.clone();
        self.metrics.setup_time(setup);
        self.actions
            .push(Action::Event(SipEvent::CallAnswered { call, tenant }));
        let contact = self.contact_of(call);
        let result = self.acd_input(
            now,
            Input::CallbackResult {
                contact,
                answered: true,
            },
        );
        if let Err(e) = result {
            // The ACD gave up on this attempt as the answer crossed its timeout.
            tracing::debug!("call {call}: callback answer refused by the ACD: {e}");
            if let Some(c) = self.calls.get_mut(&call) {
                c.ended_by = "system";
            }
            self.hang_up_both(now, call, None);
        }
    }

    /// A callback whose customer answered and whose agent's devices are not connected yet.
    pub(super) fn callback_waiting_for_agent(&self, call: CallId) -> bool {
        self.calls.get(&call).is_some_and(|c| {
            c.state == CallState::Answered
                && c.b.is_none()
                && c.queue
                    .as_ref()
                    .and_then(|q| q.callback.as_ref())
                    .is_some_and(|d| d.answered)
        })
    }

    /// The ACD connected the customer with `agent`: ring its devices with the customer's SDP
    /// (the customer hears the queue's music meanwhile), for at most the queue's ring timeout.
    pub(super) fn ring_callback_agent(&mut self, now: Now, call: CallId, agent: AgentId) {
        if let Some(q) = self.calls.get_mut(&call).and_then(|c| c.queue.as_mut()) {
            q.agent = Some(agent);
        }
        if !self.offer_to_agent(now, call, agent) {
            self.callback_agent_unreachable(now, call);
            return;
        }
        let _ = self.start_music(call, None);
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let Some(q) = c.queue.as_ref() else { return };
        let (queue, contact) = (q.queue, q.contact);
        let ring_s = self
            .cc
            .queue_defs
            .get(&queue)
            .map_or(20, |d| d.ring_timeout_s.max(1));
        let mut detail = serde_json::Map::new();
        detail.insert("caller".into(), c.dialled.clone().into());
        detail.insert("tenant".into(), c.tenant.clone().into());
        detail.insert("callback".into(), "true".into());
        let until = now.mono + Duration::from_secs(u64::from(ring_s));
        if let Some(d) = self.callback_of(call) {
            d.agent_ring_until = Some(until);
        }
        self.call_timers.push(Reverse((until, call)));
        self.emit_acd(
            now,
            "offer",
            None,
            Some(queue),
            Some(agent),
            Some(contact),
            detail,
        );
    }

    /// The agent's device answered a callback's offer: it becomes leg B (no ACD input: the
    /// ACD connected the agent when the customer answered).
    pub(super) fn callback_agent_answered(&mut self, now: Now, call: CallId, agent: AgentId) {
        if let Some(d) = self.callback_of(call) {
            d.agent_ring_until = None;
        }
        self.connect_agent(now, call, agent);
    }

    /// The customer is on the line but the agent's devices refused or rang out: the call ends
    /// (the ACD has the contact connected, so it is booked as completed by the agent).
    pub(super) fn callback_agent_unreachable(&mut self, now: Now, call: CallId) {
        tracing::info!("call {call}: the reserved agent did not answer the called-back customer");
        if let Some(c) = self.calls.get_mut(&call) {
            c.ended_by = "callee";
        }
        self.hang_up_both(now, call, None);
    }

    /// The agent's ring timeout of a callback fell due; true when it was that.
    pub(super) fn callback_agent_timer(&mut self, now: Now, call: CallId) -> bool {
        let due = self.callback_waiting_for_agent(call)
            && self
                .calls
                .get(&call)
                .and_then(|c| c.queue.as_ref()?.callback.as_ref()?.agent_ring_until)
                .is_some_and(|at| at <= now.mono);
        if due {
            self.callback_agent_unreachable(now, call);
        }
        due
    }

    /// The ACD withdrew a callback attempt before the customer answered (its dial timeout):
    /// CANCEL our INVITE. True when `call` was such an attempt.
    pub(super) fn cancel_callback(&mut self, now: Now, call: CallId) -> bool {
        let Some(d) = self.callback_of(call).filter(|d| !d.answered) else {
            return false;
        };
        d.reported = true;
        self.fail_call(now, call, 408, Disposition::NoAnswer, "system");
        true
    }
}

/// The caller's number for a callback: the user of P-Asserted-Identity, else of From (SIP or
/// tel URI). None when it is not something a route can match (bounded, no odd characters).
pub(crate) fn callback_number(invite: &Message) -> Option<String> {
    let identity = invite
        .get("P-Asserted-Identity")
        .or_else(|| invite.get("From"))?;
    let uri = name_addr_uri(identity);
    let user = match uri.strip_prefix("tel:") {
        Some(tel) => tel.split(';').next().map(str::to_string),
        None => SipUri::parse(uri).and_then(|u| u.user),
    }?;
    let ok = !user.is_empty()
        && user.len() <= 64
        && user
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "+*#.-_".contains(ch));
    ok.then_some(user)
}

/// Our offer to a called-back customer: G.711 (both laws) and telephone-event on leg A's port.
/// No transcoding: the agent is offered whichever the customer chose.
pub(super) fn callback_offer(address: IpAddr, port: u16, version: u64) -> String {
    let ip = if address.is_ipv4() { "IP4" } else { "IP6" };
    format!(
        "v=0\r\no=tandem {version} {version} IN {ip} {address}\r\ns=tandem\r\n\
         c=IN {ip} {address}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 8 101\r\n\
         a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n"
    )
}
