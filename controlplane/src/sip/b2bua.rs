//! The SIP engine: registrar, routing and back-to-back user agent, sans-IO.
//!
//! Every call is two dialogs — leg A towards the caller, leg B towards the callee — with the
//! media of both anchored in one data-plane session: the SDP each side receives names our
//! address and the port of its own leg. Inputs are bytes from the network, timer ticks and the
//! results of data-plane requests; outputs are bytes to send, data-plane requests and events.
//! Time is a parameter ([`Now`]), so every flow is tested with simulated time.

use super::config::{RouteTarget, SipConfig};
use super::digest::{Authenticator, Credentials, Verdict};
use super::message::{header_param, name_addr_uri, Message, Method, SipUri, StartLine};
use super::metrics::SipMetrics;
use super::registrar::{aor_of, Location, Lockout, RateLimiter, RegistrationEvent};
use super::transaction::{ClientTxId, Output, Peer, ServerTxId, TransactionLayer, Transport};
use crate::sdp::{MediaRewrite, RewriteOptions, Sdp};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem_dataplane::api::{
    ClipSequence, CoreError, LegCodec, LegIndex, LegParams, MonitorMode, SessionId, SessionStats,
};

#[path = "callback.rs"]
mod callback;
#[cfg(test)]
pub(crate) use callback::callback_number as callback_number_of;
#[path = "conference.rs"]
mod conference;
#[path = "contact_centre.rs"]
mod contact_centre;
#[path = "live_calls.rs"]
mod live_calls;
#[path = "monitor.rs"]
mod monitor;
use contact_centre::{ContactCentre, Queued};
#[path = "dtmf_info.rs"]
mod dtmf_info;
#[path = "transcoding.rs"]
mod transcoding;
use monitor::Monitor;
use tandem_acd::ContactId;

#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    pub unix_ms: u64,
}

impl Now {
    fn unix_s(&self) -> u64 {
        self.unix_ms / 1000
    }
}

pub type CallId = u64;

#[derive(Debug, Clone, PartialEq)]
pub enum MediaOp {
    Create {
        call: CallId,
        a: LegParams,
        b: LegParams,
    },
    Update {
        session: SessionId,
        leg: LegIndex,
        params: LegParams,
    },
    Delete {
        call: CallId,
        session: SessionId,
    },
    /// Loop a clip (0: the hold music) to one leg's peer as its own RTP stream.
    Play {
        session: SessionId,
        leg: LegIndex,
        clip: u16,
        payload_type: u8,
    },
    /// Play clips once each (an announcement), then loop `then` (the music), as the same
    /// RTP stream as what the leg was playing.
    PlaySequence {
        session: SessionId,
        leg: LegIndex,
        once: ClipSequence,
        then: u16,
        payload_type: u8,
    },
    StopPlay {
        session: SessionId,
        leg: LegIndex,
    },
    /// Holds (`held`) or releases relaying to `leg`: the caller is held from the offer that
    /// may bring transcoding to the answer's codec plan (`transcoding.rs`).
    HoldRelay {
        session: SessionId,
        leg: LegIndex,
        held: bool,
    },
    /// The session's codec plan (`[A, B]`): each leg in its own codec, transcoded between
    /// them; `None` relays as it is.
    SetCodecs {
        session: SessionId,
        codecs: Option<[LegCodec; 2]>,
    },
    /// How the keys a leg's peer presses are heard (RFC 4733 payload type, in-band tones) and
    /// whether they are kept from the other leg.
    SetDtmf {
        session: SessionId,
        leg: LegIndex,
        options: tandem_dataplane::api::DtmfOptions,
    },
    /// A supervisor's session for monitoring `call`, on `core` (the core of the call's session).
    CreateSupervisor {
        call: CallId,
        core: u16,
    },
    /// The supervisor answered: point its session's leg A at `params`, then attach it to the
    /// call's session (in that order, one request after the other).
    AttachMonitor {
        call: CallId,
        session: SessionId,
        supervisor: SessionId,
        params: LegParams,
        mode: MonitorMode,
        codecs: [LegCodec; 3],
    },
    SetMonitorMode {
        session: SessionId,
        mode: MonitorMode,
    },
    /// Deletes a supervisor's session (which ends its monitor).
    DeleteSupervisor {
        session: SessionId,
    },
    /// A conference member's session (leg A towards the caller at `a`, leg B unused) on the
    /// core of room `conference` (the shell picks it from the id, so a room stays on one).
    CreateInConference {
        call: CallId,
        conference: u32,
        a: LegParams,
    },
    /// The member's session joins room `conference`, its caller speaking `codec`.
    JoinConference {
        call: CallId,
        session: SessionId,
        conference: u32,
        codec: LegCodec,
    },
    /// Send keys to a leg's peer inside its RTP stream (a SIP INFO's key, as RFC 4733).
    SendDtmf {
        session: SessionId,
        leg: LegIndex,
        send: tandem_dataplane::api::DtmfSend,
    },
}

/// What the engine asks of its shell.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Send { peer: Peer, bytes: Vec<u8> },
    Media(MediaOp),
    Event(SipEvent),
}

#[derive(Debug, Clone, PartialEq)]
pub enum SipEvent {
    Registration(RegistrationEvent),
    CallOffered {
        call: CallId,
        tenant: String,
        from: String,
        to: String,
    },
    CallAnswered {
        call: CallId,
        tenant: String,
    },
    CallEnded(Box<CallRecord>),
    /// The ACD's queue log, agent state changes and screen-pops.
    Acd(Box<super::queues::AcdEvent>),
    /// A call's supervisor monitor changed (`monitor.started`, `monitor.answered`,
    /// `monitor.mode`, `monitor.ended`).
    Monitor {
        tenant: String,
        kind: &'static str,
        detail: serde_json::Value,
    },
}

/// One finished call, as handed to storage.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    pub call: CallId,
    pub tenant: String,
    pub a_call_id: String,
    pub b_call_id: Option<String>,
    pub caller: String,
    pub dialled: String,
    pub target: String,
    pub started_unix_ms: u64,
    pub answered_unix_ms: Option<u64>,
    pub ended_unix_ms: u64,
    /// INVITE received → 200 sent to the caller.
    pub setup_ms: Option<u64>,
    pub disposition: Disposition,
    pub final_code: u16,
    pub ended_by: &'static str,
    pub codecs: Vec<String>,
    /// The codecs of the caller's and the callee's legs when the call was transcoded (the
    /// last plan); `None` when it was relayed as it is throughout.
    pub transcoded: Option<[String; 2]>,
    pub media: Option<SessionStats>,
    /// `inbound` (from a trunk), `outbound` (to a trunk) or `internal`.
    pub direction: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Answered,
    Busy,
    NoAnswer,
    Cancelled,
    Failed,
    Rejected,
}

impl Disposition {
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Answered => "answered",
            Disposition::Busy => "busy",
            Disposition::NoAnswer => "no_answer",
            Disposition::Cancelled => "cancelled",
            Disposition::Failed => "failed",
            Disposition::Rejected => "rejected",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    A,
    B,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
    fn index(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }
    fn leg(self) -> LegIndex {
        match self {
            Side::A => LegIndex::A,
            Side::B => LegIndex::B,
        }
    }
}

/// One dialog of a call, from our point of view.
#[derive(Debug, Clone)]
struct Leg {
    call_id: String,
    local_tag: String,
    /// Our From/To value without the tag.
    local_uri: String,
    /// The peer's From/To value, with its tag when known.
    remote: String,
    remote_tag: Option<String>,
    remote_target: String,
    route_set: Vec<String>,
    local_cseq: u32,
    peer: Peer,
}

impl Leg {
    /// Takes what a 2xx to our INVITE says about the dialog (RFC 3261 §12.1.2): the peer's tag
    /// and To, its target, and the route set (Record-Route in reverse).
    fn confirm(&mut self, res: &Message) {
        self.remote_tag = res.to_tag().map(str::to_string);
        self.remote = res.get("To").unwrap_or_default().to_string();
        if let Some(target) = res.contact_uri() {
            self.remote_target = target.to_string();
        }
        self.route_set = res.get_all("Record-Route").map(str::to_string).collect();
        self.route_set.reverse();
    }

    fn request(&mut self, method: Method, contact: &str) -> Message {
        let mut m = Message::request(method.clone(), self.remote_target.clone());
        if method != Method::Ack {
            self.local_cseq += 1;
        }
        m.push("From", format!("{};tag={}", self.local_uri, self.local_tag));
        m.push("To", self.remote.clone());
        m.push("Call-ID", self.call_id.clone());
        m.push("CSeq", format!("{} {method}", self.local_cseq));
        for route in &self.route_set {
            m.push("Route", route.clone());
        }
        m.push("Contact", contact.to_string());
        m
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    /// Waiting for the data plane to allocate the session.
    Media,
    /// INVITE sent to B.
    Calling,
    /// Waiting in an ACD queue (caller rung with 180), offered to agents' devices.
    Queued,
    /// A queued callback: our INVITE to the customer (leg A, a dialog we started) is out.
    Dialling,
    Answered,
    Ending,
}

struct Call {
    tenant: String,
    state: CallState,
    a: Leg,
    b: Option<Leg>,
    /// The caller's INVITE transaction; `None` when leg A is a dialog we started (a queued
    /// callback dialling the customer), so there is no caller to respond to.
    a_invite: Option<ServerTxId>,
    /// The caller's INVITE (body dropped): responses to it are built from its headers. For a
    /// callback, the INVITE we sent.
    a_request: Message,
    /// The latest SDP each side sent (index 0: A, 1: B): offers to a new party (transfer) are
    /// built from the side that stays.
    sdp: [String; 2],
    b_invite: Option<ClientTxId>,
    b_ack: Option<Vec<u8>>,
    session: Option<SessionId>,
    ports: [u16; 2],
    caller: String,
    dialled: String,
    target_uri: String,
    target_peer: Peer,
    redirects: u8,
    started: Instant,
    started_unix_ms: u64,
    answered_unix_ms: Option<u64>,
    setup_ms: Option<u64>,
    no_answer_at: Instant,
    final_code: u16,
    disposition: Disposition,
    ended_by: &'static str,
    codecs: Vec<String>,
    /// RFC 4028: the session interval agreed with the caller, and when the call is declared
    /// dead unless a refresh (re-INVITE or UPDATE) crosses it first.
    session_interval: Option<Duration>,
    session_expires_at: Option<Instant>,
    /// Highest RSeq of a reliable provisional from B already acknowledged with PRACK.
    b_rseq: Option<u32>,
    /// A blind transfer in progress (REFER accepted, the new party being called).
    transfer: Option<Transfer>,
    /// The trunk leg B goes to, whose credentials answer its challenges (once per call).
    trunk: Option<String>,
    b_auth_tried: bool,
    /// An attended transfer in progress on this call (REFER with Replaces).
    replacement: Option<Replacement>,
    /// A side that must not get our BYE when the call ends (its dialog moved to another call).
    no_bye: Option<Side>,
    /// `inbound` (from a trunk), `outbound` (to a trunk) or `internal`.
    direction: &'static str,
    /// Routed to an ACD queue: the contact and its offers to agents.
    queue: Option<Queued>,
    /// Codec negotiation across the legs: the offer sent on, the transcoding plan.
    transcoding: transcoding::CallCodecs,
    /// Keys sent as SIP INFO to a peer that takes them that way.
    info_dtmf: dtmf_info::InfoDtmf,
}

impl Call {
    /// In a queue with nobody on leg B: waiting to be answered, or answered and transferred
    /// back into a queue by its agent.
    fn awaiting_agent(&self) -> bool {
        self.queue.is_some()
            && (self.state == CallState::Queued
                || (self.state == CallState::Answered && self.b.is_none()))
    }

    /// The leg on `side` (B is absent until the call has been sent on).
    fn leg_mut(&mut self, side: Side) -> Option<&mut Leg> {
        match side {
            Side::A => Some(&mut self.a),
            Side::B => self.b.as_mut(),
        }
    }
}

/// Attended transfer (RFC 5589 §7): the transferor joins the party it holds on this call with
/// the party of its consultation call. The joined party keeps its data-plane port; the other is
/// re-INVITEd onto this call's port and its dialog moves here.
struct Replacement {
    transferor: Side,
    consultation: CallId,
    /// The side of the consultation call that is the transfer target.
    target_side: Side,
    reinvite: ClientTxId,
}

/// Our registration at a carrier trunk (we are its client).
struct TrunkRegistration {
    call_id: String,
    tag: String,
    cseq: u32,
    next_at: Instant,
    registered_until: Option<Instant>,
    auth_tried: bool,
}

impl TrunkRegistration {
    fn new(i: usize, seed: u64, now: Instant) -> TrunkRegistration {
        TrunkRegistration {
            call_id: format!("trunk-reg-{i}-{:x}@tandem", seed & 0xffff_ffff),
            tag: format!("tr{i}{:x}", seed & 0xffff),
            cseq: 0,
            next_at: now,
            registered_until: None,
            auth_tried: false,
        }
    }
}

/// (realm, user) → account, realms from the tenants' domains.
fn account_index(
    cfg: &SipConfig,
    accounts: Vec<super::config::DigestAccount>,
) -> HashMap<(String, String), super::config::DigestAccount> {
    accounts
        .into_iter()
        .filter_map(|a| {
            let realm = cfg.tenant_domain(&a.tenant)?.to_ascii_lowercase();
            Some(((realm, a.user.clone()), a))
        })
        .collect()
}

struct Transfer {
    /// The side that sent REFER and is being replaced.
    transferor: Side,
    leg: Leg,
    invite: ClientTxId,
    /// The transferor hung up after REFER: nobody to NOTIFY or BYE when the transfer ends.
    transferor_gone: bool,
}

struct RelayedRequest {
    call: CallId,
    from: Side,
    server: ServerTxId,
    method: Method,
    /// The request as received (body dropped), to address the response.
    request: Box<Message>,
    /// CSeq of the relayed copy, for the ACK of its 2xx.
    cseq: u32,
}

/// What a client transaction of ours was for.
enum Pending {
    Invite(CallId),
    /// A request relayed from one leg to the other; its response goes back on `server`.
    Relay(Box<RelayedRequest>),
    /// Our INFO carrying a key to this side's peer.
    DtmfInfo(CallId, Side),
    Bye,
    /// Our REGISTER at a trunk.
    TrunkRegister(String),
    /// PRACKs and NOTIFYs: their answers change nothing.
    Ignore,
    /// The INVITE to the target of a blind transfer.
    TransferInvite(CallId),
    /// The re-INVITE moving an attended transfer's target onto the call (keyed by that call).
    Replace(CallId),
    Ping {
        aor: String,
        contact: String,
    },
    /// An INVITE offering a queued call to one of an agent's devices.
    Offer(CallId),
    /// A queued callback's INVITE to the customer (leg A of that call).
    Callback(CallId),
    /// The INVITE ringing a supervisor to monitor this call.
    Monitor(CallId),
}

pub struct Engine {
    cfg: SipConfig,
    /// (realm, user) → account: REGISTER storms from thousands of phones must not scan a list.
    accounts: HashMap<(String, String), super::config::DigestAccount>,
    contact: String,
    media_address: IpAddr,
    tx: TransactionLayer,
    location: Location,
    auth: Authenticator,
    lockout: Lockout,
    invite_limit: RateLimiter,
    register_limit: RateLimiter,
    calls: HashMap<CallId, Call>,
    dialogs: HashMap<(String, String), (CallId, Side)>,
    invites: HashMap<ServerTxId, CallId>,
    pending: HashMap<ClientTxId, Pending>,
    call_timers: BinaryHeap<Reverse<(Instant, CallId)>>,
    trunk_registrations: HashMap<String, TrunkRegistration>,
    /// Numbers trunk registrations' Call-IDs uniquely across directory changes.
    next_trunk_registration: usize,
    next_housekeeping: Instant,
    next_ping: Instant,
    next_call: CallId,
    /// Records of ended calls waiting for their media statistics from the data plane.
    ending: HashMap<CallId, CallRecord>,
    seed: u64,
    actions: Vec<Action>,
    metrics: Arc<SipMetrics>,
    /// The ACD and the name ↔ id maps of its queues and agents.
    cc: ContactCentre,
    /// Supervisor monitors by the call they monitor (one each), and their dialogs.
    monitors: HashMap<CallId, Monitor>,
    /// Calls in a conference room, by the room's id (`conference.rs`); the ids of the rooms
    /// the routes name, by (tenant, room), given out as calls first reach them.
    conference_calls: HashMap<CallId, u32>,
    rooms: HashMap<(String, String), u32>,
    monitor_dialogs: HashMap<(String, String), CallId>,
}

const MAX_REDIRECTS: u8 = 3;
/// RFC 4028's recommended floor for the session interval.
const MIN_SE_S: u64 = 90;

impl Engine {
    pub fn new(
        cfg: SipConfig,
        media_address: IpAddr,
        secret: [u8; 32],
        now: Instant,
        metrics: Arc<SipMetrics>,
    ) -> Engine {
        let seed = u64::from_le_bytes(secret[..8].try_into().expect("8 bytes"));
        let mut tx = TransactionLayer::new(cfg.timers(), seed & 0xffff_ffff);
        let sent_by = cfg.sent_by();
        tx.set_sent_by(Transport::Udp, sent_by.clone());
        tx.set_sent_by(Transport::Tcp, sent_by.clone());
        if let Some(tls) = cfg.listen_tls {
            let host = sent_by
                .rsplit_once(':')
                .map_or(sent_by.as_str(), |(h, _)| h);
            tx.set_sent_by(Transport::Tls, format!("{host}:{}", tls.port()));
        }
        let contact = format!("<sip:tandem@{sent_by}>");
        let trunk_registrations = cfg
            .trunks
            .iter()
            .filter(|t| t.register && t.username.is_some())
            .enumerate()
            .map(|(i, t)| (t.name.clone(), TrunkRegistration::new(i, seed, now)))
            .collect::<HashMap<_, _>>();
        let next_trunk_registration = trunk_registrations.len();
        let accounts = account_index(&cfg, cfg.digest_accounts());
        let cc = ContactCentre::new(now, &cfg);
        Engine {
            cc,
            accounts,
            auth: Authenticator::new(secret, cfg.nonce_ttl_s),
            lockout: Lockout::new(
                cfg.auth_failures_before_lockout,
                Duration::from_secs(cfg.lockout_s),
                Duration::from_secs(cfg.lockout_s),
            ),
            invite_limit: RateLimiter::new(cfg.invite_rate_per_source, cfg.rate_burst),
            register_limit: RateLimiter::new(cfg.register_rate_per_source, cfg.rate_burst),
            cfg,
            contact,
            media_address,
            tx,
            location: Location::new(),
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            monitors: HashMap::new(),
            conference_calls: HashMap::new(),
            rooms: HashMap::new(),
            monitor_dialogs: HashMap::new(),
            invites: HashMap::new(),
            pending: HashMap::new(),
            call_timers: BinaryHeap::new(),
            trunk_registrations,
            next_trunk_registration,
            next_housekeeping: now,
            next_ping: now,
            next_call: 0,
            ending: HashMap::new(),
            seed,
            actions: Vec::new(),
            metrics,
        }
    }

    pub fn drain(&mut self) -> std::vec::Drain<'_, Action> {
        self.actions.drain(..)
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Our tags on the callers' dialogs (tests and diagnostics).
    pub fn leg_a_tags(&self) -> Vec<String> {
        self.calls.values().map(|c| c.a.local_tag.clone()).collect()
    }

    /// Replaces tenants, accounts, trunks and routes (an API change). Calls in progress keep
    /// going; registrations of accounts that no longer exist lapse at their expiry; trunk
    /// registrations start for new trunks and stop for removed ones.
    pub fn set_directory(&mut self, at: Now, directory: super::config::SipDirectory) {
        let now = at.mono;
        self.cfg.tenants = directory.tenants;
        self.cfg.trunks = directory.trunks;
        self.cfg.routes = directory.routes;
        let now_ms = self.cc.now_ms(now);
        self.cc
            .reconcile(now_ms, &directory.queues, &directory.agents);
        self.acd_pump(at);
        self.pump(at);
        self.accounts = account_index(&self.cfg, directory.accounts);
        let wanted: Vec<String> = self
            .cfg
            .trunks
            .iter()
            .filter(|t| t.register && t.username.is_some())
            .map(|t| t.name.clone())
            .collect();
        self.trunk_registrations
            .retain(|name, _| wanted.contains(name));
        for name in wanted {
            if !self.trunk_registrations.contains_key(&name) {
                self.next_trunk_registration += 1;
                let i = self.next_trunk_registration;
                let registration = TrunkRegistration::new(i, self.seed, now);
                self.trunk_registrations.insert(name, registration);
            }
        }
        self.metrics
            .set_trunks(self.trunk_registrations.keys().cloned().collect());
    }

    /// One account added, changed or removed (API), without rereading the directory.
    pub fn change_account(&mut self, change: super::config::AccountChange) {
        use super::config::AccountChange;
        match change {
            AccountChange::Upsert(account) => {
                if let Some(realm) = self.cfg.tenant_domain(&account.tenant) {
                    self.accounts
                        .insert((realm.to_ascii_lowercase(), account.user.clone()), account);
                }
            }
            AccountChange::Remove { tenant, user } => {
                self.accounts
                    .retain(|_, a| !(a.tenant == tenant && a.user == user));
            }
        }
    }

    pub fn metrics(&self) -> &SipMetrics {
        &self.metrics
    }

    /// The tenant whose SIP domain this is.
    pub fn tenant_by_domain(&self, domain: &str) -> Option<String> {
        self.cfg
            .tenants
            .iter()
            .find(|t| t.domain.eq_ignore_ascii_case(domain))
            .map(|t| t.name.clone())
    }

    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    fn token(&mut self, kind: &str) -> String {
        self.next_call += 1;
        format!("{kind}{:x}{:x}", self.seed & 0xffff_ffff, self.next_call)
    }

    pub fn next_deadline(&mut self) -> Instant {
        let mut next = self.next_housekeeping;
        if self.cfg.options_ping_s > 0 {
            next = next.min(self.next_ping);
        }
        if let Some(at) = self.tx.next_deadline() {
            next = next.min(at);
        }
        if let Some(Reverse((at, _))) = self.call_timers.peek() {
            next = next.min(*at);
        }
        if let Some(at) = self.cc.deadline() {
            next = next.min(at);
        }
        next
    }

    pub fn receive(&mut self, now: Now, bytes: &[u8], peer: Peer) {
        self.metrics.bytes_in(bytes.len());
        self.tx.receive(now.mono, bytes, peer);
        self.pump(now);
    }

    pub fn on_timer(&mut self, now: Now) {
        self.tx.on_timer(now.mono);
        while let Some(Reverse((at, call))) = self.call_timers.peek().copied() {
            if at > now.mono {
                break;
            }
            self.call_timers.pop();
            self.call_timer(now, call);
        }
        self.acd_timer(now);
        if now.mono >= self.next_housekeeping {
            self.next_housekeeping = now.mono + Duration::from_secs(1);
            for event in self.location.expire(now.mono) {
                self.actions
                    .push(Action::Event(SipEvent::Registration(event)));
            }
            self.lockout.forget_older_than(now.mono);
            let due: Vec<String> = self
                .trunk_registrations
                .iter()
                .filter(|(_, r)| r.next_at <= now.mono)
                .map(|(name, _)| name.clone())
                .collect();
            for name in due {
                self.send_trunk_register(now, &name, None);
            }
            if self.cc.retiring() {
                let now_ms = self.cc.now_ms(now.mono);
                self.cc.retire(now_ms);
                self.acd_pump(now);
            }
            self.invite_limit.forget_idle(now.mono);
            self.register_limit.forget_idle(now.mono);
            self.metrics
                .set_gauges(self.calls.len(), self.location.binding_count());
        }
        if now.mono >= self.next_ping && self.cfg.options_ping_s > 0 {
            self.next_ping = now.mono + Duration::from_secs(self.cfg.options_ping_s);
            self.ping_contacts(now);
        }
        self.pump(now);
    }

    /// The data plane allocated (or refused) the session for a call.
    pub fn media_created(
        &mut self,
        now: Now,
        call: CallId,
        result: Result<(SessionId, [u16; 2]), CoreError>,
    ) {
        let Some(c) = self.calls.get_mut(&call) else {
            // The caller gave up while we waited: give the session back.
            if let Ok((session, _)) = result {
                self.actions
                    .push(Action::Media(MediaOp::Delete { call, session }));
            }
            return;
        };
        if c.state != CallState::Media {
            if let Ok((session, _)) = result {
                self.actions
                    .push(Action::Media(MediaOp::Delete { call, session }));
            }
            return;
        }
        match result {
            Err(e) => {
                tracing::warn!(
                    "call {call}: the data plane refused a session: {}",
                    e.reason()
                );
                self.metrics.media_failure();
                let code = match e {
                    CoreError::LoadLimit | CoreError::PortsExhausted | CoreError::Unresponsive => {
                        503
                    }
                    _ => 500,
                };
                self.fail_call(now, call, code, Disposition::Failed, "system");
            }
            Ok((session, ports)) => {
                c.session = Some(session);
                c.ports = ports;
                if c.queue.as_ref().is_some_and(|q| q.callback.is_some()) {
                    self.dial_customer(now, call);
                } else if c.queue.is_some() {
                    self.enter_queue(now, call);
                } else if let Some(&conference) = self.conference_calls.get(&call) {
                    self.answer_conference(now, call, conference);
                } else {
                    self.send_b_invite(now, call);
                }
            }
        }
        self.pump(now);
    }

    /// The data plane deleted a call's session; the stats go into the call record.
    pub fn media_deleted(&mut self, call: CallId, stats: Option<SessionStats>) {
        if let Some(mut record) = self.ending.remove(&call) {
            if record.media.is_none() {
                record.media = stats;
            }
            self.actions
                .push(Action::Event(SipEvent::CallEnded(Box::new(record))));
        }
    }

    /// A data-plane session timed out (no media either way): end the call.
    pub fn media_timed_out(&mut self, now: Now, session: SessionId, stats: SessionStats) {
        if self.supervisor_timed_out(now, session) {
            self.pump(now);
            return;
        }
        let Some((&id, _)) = self.calls.iter().find(|(_, c)| c.session == Some(session)) else {
            return;
        };
        if let Some(c) = self.calls.get_mut(&id) {
            c.session = None; // already gone from the core
            c.ended_by = "media_timeout";
        }
        self.hang_up_both(now, id, Some(stats));
        self.pump(now);
    }

    fn pump(&mut self, now: Now) {
        loop {
            let outputs: Vec<Output> = self.tx.drain().collect();
            if outputs.is_empty() {
                break;
            }
            for output in outputs {
                self.handle_output(now, output);
            }
        }
    }

    fn handle_output(&mut self, now: Now, output: Output) {
        match output {
            Output::Send { peer, bytes } => {
                if let Ok(m) = Message::parse(&bytes) {
                    match m.status() {
                        Some(code) => self.metrics.response_out(code),
                        None => self
                            .metrics
                            .request_out(m.method().map_or("", |m| m.as_str())),
                    }
                }
                self.metrics.bytes_out(bytes.len());
                self.actions.push(Action::Send { peer, bytes });
            }
            Output::Request { tx, message, peer } => {
                self.metrics
                    .request_in(message.method().map_or("", |m| m.as_str()));
                self.on_request(now, tx, message, peer);
            }
            Output::Response { tx, message } => {
                self.metrics.response_in(message.status().unwrap_or(0));
                self.on_response(now, tx, message);
            }
            Output::Timeout { tx } => self.on_client_timeout(now, tx),
            Output::Cancelled { invite } => self.on_cancelled(now, invite),
            Output::AckTimeout { invite } => {
                if let Some(&call) = self.invites.get(&invite) {
                    if let Some(c) = self.calls.get_mut(&call) {
                        c.ended_by = "ack_timeout";
                    }
                    self.hang_up_both(now, call, None);
                }
            }
            Output::Dropped { reason } => {
                self.metrics.malformed();
                tracing::debug!("SIP message dropped: {reason}");
            }
        }
    }

    fn respond(&mut self, now: Now, tx: ServerTxId, response: Message) {
        self.tx.respond(now.mono, tx, response);
    }

    fn reply(&mut self, now: Now, tx: ServerTxId, req: &Message, code: u16) {
        let tag = self.token("t");
        let res = Message::response_to(req, code, Some(&tag));
        self.respond(now, tx, res);
    }

    fn on_request(&mut self, now: Now, tx: Option<ServerTxId>, req: Message, peer: Peer) {
        let method = req.method().cloned().unwrap_or(Method::Options);
        let Some(tx) = tx else {
            // ACK for a 2xx: confirms a dialog, or is one we absorb (relayed re-INVITEs are
            // ACKed by us hop by hop). A caller answered only to be hung up (it asked for a
            // callback) gets its BYE now.
            self.callback_caller_acked(now, &req);
            return;
        };
        // In-dialog requests carry our tag in To.
        if let Some(to_tag) = req.to_tag() {
            let key = (req.call_id().to_string(), to_tag.to_string());
            if let Some(&call) = self.monitor_dialogs.get(&key) {
                self.supervisor_request(now, tx, req, call);
                return;
            }
            match self.dialogs.get(&key).copied() {
                Some((call, side)) => self.in_dialog(now, tx, req, call, side),
                None if method == Method::Options => self.reply(now, tx, &req, 200),
                None => self.reply(now, tx, &req, 481),
            }
            return;
        }
        match method {
            Method::Register => self.on_register(now, tx, req, peer),
            Method::Invite => self.on_invite(now, tx, req, peer),
            Method::Options => {
                let mut res = Message::response_to(&req, 200, Some(&self.token("t")));
                res.push("Allow", ALLOW);
                res.push("Accept", "application/sdp");
                self.respond(now, tx, res);
            }
            Method::Bye | Method::Info | Method::Update | Method::Prack | Method::Refer => {
                self.reply(now, tx, &req, 481)
            }
            Method::Other(_) | Method::Subscribe | Method::Notify | Method::Message => {
                let mut res = Message::response_to(&req, 405, Some(&self.token("t")));
                res.push("Allow", ALLOW);
                self.respond(now, tx, res);
            }
            Method::Ack | Method::Cancel => {}
        }
    }

    /// Digest authentication of a request against the SIP accounts; on success the account's
    /// tenant and user. Sends the challenge or refusal itself.
    /// How keys reach the phones of account `user` of `tenant` (`rfc4733` for an unknown one).
    fn account_dtmf(&self, tenant: &str, user: &str) -> super::config::DtmfMode {
        let Some(realm) = self.cfg.tenant_domain(tenant) else {
            return Default::default();
        };
        self.accounts
            .get(&(realm.to_ascii_lowercase(), user.to_string()))
            .map_or_else(Default::default, |a| a.dtmf)
    }

    fn authenticate(
        &mut self,
        now: Now,
        tx: ServerTxId,
        req: &Message,
        peer: Peer,
        header: &str,
        challenge_code: u16,
    ) -> Option<(String, String)> {
        let realm_hint = req
            .get("To")
            .and_then(|t| SipUri::parse(name_addr_uri(t)))
            .map(|u| u.host)
            .unwrap_or_default();
        let credentials = req.get(header).and_then(Credentials::parse);
        let Some(credentials) = credentials else {
            self.challenge(now, tx, req, &realm_hint, false, challenge_code);
            return None;
        };
        let ip = peer.addr.ip();
        if self.lockout.is_locked(now.mono, ip, &credentials.username) {
            self.metrics.auth_locked();
            let res = Message::response_to(req, 403, Some(&self.token("t")))
                .with_reason("Forbidden (too many failed attempts)");
            self.respond(now, tx, res);
            return None;
        }
        let account = self
            .accounts
            .get(&(
                credentials.realm.to_ascii_lowercase(),
                credentials.username.clone(),
            ))
            .cloned();
        let verdict = match &account {
            Some(a) => {
                let method = req.method().map_or("", |m| m.as_str()).to_string();
                let ha1 = match credentials.algorithm {
                    super::digest::Algorithm::Md5 => &a.ha1_md5,
                    super::digest::Algorithm::Sha256 => &a.ha1_sha256,
                };
                self.auth
                    .verify_ha1(now.unix_s(), &credentials, &method, ha1)
            }
            None => Verdict::Invalid,
        };
        match (verdict, account) {
            (Verdict::Ok, Some(account)) => {
                self.lockout.succeeded(ip, &credentials.username);
                Some((account.tenant, account.user))
            }
            (Verdict::Stale, _) => {
                self.challenge(now, tx, req, &credentials.realm, true, challenge_code);
                None
            }
            _ => {
                self.metrics.auth_failure();
                if self.lockout.failed(now.mono, ip, &credentials.username) {
                    self.metrics.auth_locked();
                    tracing::warn!(
                        "SIP: {} from {ip} locked out after failed authentication",
                        credentials.username
                    );
                }
                self.reply(now, tx, req, 403);
                None
            }
        }
    }

    fn challenge(
        &mut self,
        now: Now,
        tx: ServerTxId,
        req: &Message,
        realm_hint: &str,
        stale: bool,
        code: u16,
    ) {
        let realm = self
            .cfg
            .realm_for(realm_hint)
            .unwrap_or_else(|| self.cfg.default_realm());
        let mut res = Message::response_to(req, code, Some(&self.token("t")));
        let header = if code == 407 {
            "Proxy-Authenticate"
        } else {
            "WWW-Authenticate"
        };
        let algorithms = self.cfg.algorithms();
        for c in self
            .auth
            .challenges(now.unix_s(), &realm, stale, &algorithms)
        {
            res.push(header, c);
        }
        self.respond(now, tx, res);
    }

    fn on_register(&mut self, now: Now, tx: ServerTxId, req: Message, peer: Peer) {
        if !self.register_limit.allow(now.mono, peer.addr.ip()) {
            self.metrics.rate_limited("REGISTER");
            let mut res = Message::response_to(&req, 503, Some(&self.token("t")));
            res.push("Retry-After", "5");
            self.respond(now, tx, res);
            return;
        }
        let Some(aor) = req.get("To").and_then(aor_of) else {
            self.reply(now, tx, &req, 400);
            return;
        };
        let Some((tenant, user)) = self.authenticate(now, tx, &req, peer, "Authorization", 401)
        else {
            return;
        };
        // An account may only register its own address-of-record.
        let domain = self.cfg.tenant_domain(&tenant).unwrap_or_default();
        if aor != format!("{user}@{domain}").to_ascii_lowercase() {
            self.reply(now, tx, &req, 403);
            return;
        }
        let limits = self.cfg.registrar_limits();
        let outcome = self.location.register(now.mono, &aor, &req, peer, &limits);
        let mut res = Message::response_to(&req, outcome.code, Some(&self.token("t")));
        for (name, value) in outcome.headers {
            res.push(name, value);
        }
        self.respond(now, tx, res);
        for event in outcome.events {
            self.actions
                .push(Action::Event(SipEvent::Registration(event)));
        }
        self.metrics
            .set_gauges(self.calls.len(), self.location.binding_count());
    }

    fn on_invite(&mut self, now: Now, tx: ServerTxId, req: Message, peer: Peer) {
        let ip = peer.addr.ip();
        if !self.invite_limit.allow(now.mono, ip) {
            self.metrics.rate_limited("INVITE");
            let mut res = Message::response_to(&req, 503, Some(&self.token("t")));
            res.push("Retry-After", "5");
            self.respond(now, tx, res);
            return;
        }
        if req
            .get("Max-Forwards")
            .is_some_and(|m| m.trim().parse::<u8>() == Ok(0))
        {
            self.reply(now, tx, &req, 483);
            return;
        }
        if let Some(unsupported) = req
            .get_all("Require")
            .find(|t| !SUPPORTED_REQUIRE.iter().any(|s| s.eq_ignore_ascii_case(t)))
        {
            let mut res = Message::response_to(&req, 420, Some(&self.token("t")));
            res.push("Unsupported", unsupported.to_string());
            self.respond(now, tx, res);
            return;
        }
        let Some(request_uri) = req.request_uri().and_then(SipUri::parse) else {
            self.reply(now, tx, &req, 416);
            return;
        };
        let dialled = request_uri.user.clone().unwrap_or_default();

        // Trusted trunks by source address; everyone else authenticates as a SIP account.
        let from_trunk = self.cfg.trunk_for_source(ip).is_some();
        // How keys reach the caller: its trunk's mode, or its account's.
        let (caller_tenant, a_dtmf) = match self.cfg.trunk_for_source(ip) {
            Some(trunk) => (trunk.tenant.clone(), trunk.dtmf),
            None => match self.authenticate(now, tx, &req, peer, "Proxy-Authorization", 407) {
                Some((tenant, user)) => {
                    let mode = self.account_dtmf(&tenant, &user);
                    (tenant, mode)
                }
                None => return,
            },
        };
        let Some(route) = self.cfg.route(&caller_tenant, &dialled) else {
            self.reply(now, tx, &req, 404);
            return;
        };
        let tenant = route.tenant.clone();
        if let Some(limit) = self.cfg.tenant_max_calls(&tenant) {
            let active = self.calls.values().filter(|c| c.tenant == tenant).count();
            if active >= limit {
                self.metrics.over_limit();
                let mut res = Message::response_to(&req, 503, Some(&self.token("t")));
                res.push("Retry-After", "10");
                self.respond(
                    now,
                    tx,
                    res.with_reason("Service Unavailable (tenant call limit)"),
                );
                return;
            }
        }
        if self.calls.len() >= self.cfg.max_calls {
            self.metrics.over_limit();
            let mut res = Message::response_to(&req, 503, Some(&self.token("t")));
            res.push("Retry-After", "10");
            self.respond(now, tx, res);
            return;
        }
        let number = self.cfg.normalize(&tenant, &dialled);
        let queued = match &route.target {
            RouteTarget::Queue(name) => match self.cc.queue_id(&tenant, name) {
                // The contact is the call (its id is set below).
                Some(queue) => Some(Queued::new(queue, ContactId(0))),
                None => {
                    self.reply(now, tx, &req, 404);
                    return;
                }
            },
            _ => None,
        };
        let b_dtmf = match &route.target {
            RouteTarget::Trunk(name) => self
                .cfg
                .trunk(name)
                .map_or_else(Default::default, |t| t.dtmf),
            RouteTarget::User(user) => self.account_dtmf(&tenant, user),
            _ => Default::default(),
        };
        let (target_uri, target_peer) = match &route.target {
            // Which agent's device takes the call is decided later; the caller's own address
            // stands in until then.
            RouteTarget::Queue(name) => (format!("queue:{name}"), peer),
            RouteTarget::Conference(room) => (format!("conference:{room}"), peer),
            target => match self.resolve(now, &tenant, target, &number) {
                Ok(target) => target,
                Err(code) => {
                    self.reply(now, tx, &req, code);
                    return;
                }
            },
        };

        let Some(offer) = req
            .body_str()
            .filter(|_| req.content_type() == Some("application/sdp"))
            .map(str::to_string)
        else {
            // Offerless INVITEs would need a late-offer dance through the data plane.
            let res = Message::response_to(&req, 488, Some(&self.token("t")))
                .with_reason("Not Acceptable Here (SDP offer required)");
            self.respond(now, tx, res);
            return;
        };
        let Ok(sdp) = Sdp::parse(&offer) else {
            let res = Message::response_to(&req, 400, Some(&self.token("t")))
                .with_reason("Bad Request (malformed SDP)");
            self.respond(now, tx, res);
            return;
        };
        let Some(first_audio) = sdp.media.iter().find(|m| m.kind == "audio") else {
            self.reply(now, tx, &req, 488);
            return;
        };
        let a_params = leg_params(first_audio);
        let codecs = codec_names(&offer);
        // RFC 4028: honour the caller's session interval, refusing ones below our Min-SE.
        let session_interval = match req.get("Session-Expires") {
            Some(v) => match v
                .split(';')
                .next()
                .and_then(|n| n.trim().parse::<u64>().ok())
            {
                Some(n) if n < MIN_SE_S => {
                    let mut res = Message::response_to(&req, 422, Some(&self.token("t")));
                    res.push("Min-SE", MIN_SE_S.to_string());
                    self.respond(now, tx, res);
                    return;
                }
                Some(n) => Some(Duration::from_secs(n)),
                None => {
                    self.reply(now, tx, &req, 400);
                    return;
                }
            },
            None => None,
        };

        let id = self.next_call + 1;
        let local_tag = self.token("a");
        let a = Leg {
            call_id: req.call_id().to_string(),
            local_tag: local_tag.clone(),
            local_uri: strip_tag(req.get("To").unwrap_or_default()),
            remote: req.get("From").unwrap_or_default().to_string(),
            remote_tag: req.from_tag().map(str::to_string),
            remote_target: req.contact_uri().unwrap_or_default().to_string(),
            route_set: req.get_all("Record-Route").map(str::to_string).collect(),
            local_cseq: 0,
            peer,
        };
        let caller = name_addr_uri(req.get("From").unwrap_or_default()).to_string();
        self.dialogs
            .insert((a.call_id.clone(), local_tag), (id, Side::A));
        self.invites.insert(tx, id);
        let no_answer_at = now.mono + Duration::from_secs(self.cfg.no_answer_timeout_s);
        self.call_timers.push(Reverse((no_answer_at, id)));
        self.calls.insert(
            id,
            Call {
                tenant: tenant.clone(),
                state: CallState::Media,
                a,
                b: None,
                a_invite: Some(tx),
                a_request: Message {
                    body: Vec::new(),
                    ..req.clone()
                },
                sdp: [offer, String::new()],
                b_invite: None,
                b_ack: None,
                session: None,
                ports: [0, 0],
                caller: caller.clone(),
                dialled: number.clone(),
                target_uri,
                target_peer,
                redirects: 0,
                started: now.mono,
                started_unix_ms: now.unix_ms,
                answered_unix_ms: None,
                setup_ms: None,
                no_answer_at,
                final_code: 0,
                disposition: Disposition::Failed,
                ended_by: "",
                codecs,
                session_interval,
                session_expires_at: None,
                b_rseq: None,
                transfer: None,
                trunk: match &route.target {
                    RouteTarget::Trunk(name) => Some(name.clone()),
                    _ => None,
                },
                b_auth_tried: false,
                replacement: None,
                no_bye: None,
                direction: match (from_trunk, &route.target) {
                    (true, _) => "inbound",
                    (false, RouteTarget::Trunk(_)) => "outbound",
                    _ => "internal",
                },
                queue: queued.map(|q| Queued {
                    contact: ContactId(id),
                    ..q
                }),
                transcoding: Default::default(),
                info_dtmf: dtmf_info::InfoDtmf::new(a_dtmf, b_dtmf),
            },
        );
        self.next_call = id;
        self.metrics.call_started();
        self.actions.push(Action::Event(SipEvent::CallOffered {
            call: id,
            tenant,
            from: caller,
            to: number,
        }));
        let create = match &route.target {
            RouteTarget::Conference(room) => {
                let conference = self.room_id(&route.tenant, room);
                self.conference_calls.insert(id, conference);
                MediaOp::CreateInConference {
                    call: id,
                    conference,
                    a: a_params,
                }
            }
            _ => MediaOp::Create {
                call: id,
                a: a_params,
                b: LegParams::default(),
            },
        };
        self.actions.push(Action::Media(create));
    }

    /// Where a route target lives now: a registered binding (480 when none), a fixed URI, or a
    /// trunk with the number in the Request-URI.
    fn resolve(
        &self,
        now: Now,
        tenant: &str,
        target: &RouteTarget,
        number: &str,
    ) -> Result<(String, Peer), u16> {
        match target {
            RouteTarget::User(user) => {
                let domain = self.cfg.tenant_domain(tenant).unwrap_or_default();
                let bindings = self.location.lookup(&format!("{user}@{domain}"), now.mono);
                let binding = bindings.first().ok_or(480u16)?;
                Ok((binding.contact.clone(), binding.peer))
            }
            RouteTarget::Uri(uri) => {
                let parsed = SipUri::parse(uri.as_str()).ok_or(500u16)?;
                let addr = parsed.socket_addr().ok_or(500u16)?;
                let transport = Transport::parse(parsed.transport()).unwrap_or(Transport::Udp);
                Ok((uri.clone(), Peer { transport, addr }))
            }
            // Queued calls are offered to agents by the ACD, not sent to one target; a room is
            // entered by a caller's own INVITE only.
            RouteTarget::Queue(_) | RouteTarget::Conference(_) => Err(480),
            RouteTarget::Trunk(name) => {
                let trunk = self.cfg.trunk(name.as_str()).ok_or(500u16)?;
                let uri = format!("sip:{}@{}", number.trim_start_matches('+'), trunk.address);
                Ok((
                    uri,
                    Peer {
                        transport: Transport::Udp,
                        addr: trunk.address,
                    },
                ))
            }
        }
    }

    fn rewrite_for(&self, sdp_text: &str, port: u16) -> Option<String> {
        let sdp = Sdp::parse(sdp_text).ok()?;
        let anchored = transcoding::relayed_audio(&sdp);
        Some(self.rewrite_parsed(&sdp, port, anchored, None))
    }

    /// `sdp` with our address, `port` on the `anchored` section (one audio stream per call;
    /// other streams are declined with port 0) and `edit` on its formats.
    fn rewrite_parsed(
        &self,
        sdp: &Sdp<'_>,
        port: u16,
        anchored: Option<usize>,
        edit: Option<crate::sdp::CodecEdit>,
    ) -> String {
        let rewrites: Vec<MediaRewrite> = (0..sdp.media.len())
            .map(|i| MediaRewrite {
                port: Some(if Some(i) == anchored { port } else { 0 }),
            })
            .collect();
        let mut edits = vec![None; sdp.media.len()];
        if let (Some(i), Some(edit)) = (anchored, edit) {
            edits[i] = Some(edit);
        }
        sdp.rewrite_with_codecs(
            &rewrites,
            &edits,
            &RewriteOptions {
                address: Some(self.media_address),
                replace_origin: true,
                transport_protocol: None,
                remove_ice: true,
            },
        )
    }

    fn send_b_invite(&mut self, now: Now, call: CallId) {
        let contact = self.contact.clone();
        let from_tag = self.token("b");
        let b_call_id = format!("{}@tandem", self.token("c"));
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let (caller_offer, port) = (c.sdp[0].clone(), c.ports[1]);
        let Some(offer) = self.offer_onward(call, Side::A, &caller_offer, port) else {
            self.fail_call(now, call, 488, Disposition::Failed, "system");
            return;
        };
        let c = self.calls.get_mut(&call).expect("checked");
        let from_value = caller_identity(&c.a.remote);
        let mut leg = Leg {
            call_id: b_call_id.clone(),
            local_tag: from_tag.clone(),
            local_uri: from_value,
            remote: format!("<{}>", c.target_uri),
            remote_tag: None,
            remote_target: c.target_uri.clone(),
            route_set: Vec::new(),
            local_cseq: 0,
            peer: c.target_peer,
        };
        let mut invite = leg.request(Method::Invite, &contact);
        // Carry the hop budget across the bridge: a route that points back at us (or two
        // B2BUAs pointing at each other) then ends in 483 instead of looping forever.
        let hops = c
            .a_request
            .get("Max-Forwards")
            .and_then(|m| m.trim().parse::<u8>().ok())
            .unwrap_or(70);
        invite.push("Max-Forwards", hops.saturating_sub(1).to_string());
        invite.push("Allow", ALLOW);
        invite.push("Supported", "replaces, 100rel, timer");
        if let Some(interval) = c.session_interval {
            // The caller refreshes; its re-INVITEs and UPDATEs are relayed, so they refresh B too.
            invite.push(
                "Session-Expires",
                format!("{};refresher=uac", interval.as_secs()),
            );
            invite.push("Min-SE", MIN_SE_S.to_string());
        }
        invite.set_body("application/sdp", offer.into_bytes());
        let peer = leg.peer;
        c.b = Some(leg);
        c.state = CallState::Calling;
        let tx = self.tx.send_request(now.mono, invite, peer, None);
        self.pending.insert(tx, Pending::Invite(call));
        let c = self.calls.get_mut(&call).expect("checked");
        c.b_invite = Some(tx);
        self.dialogs.insert((b_call_id, from_tag), (call, Side::B));
    }

    fn on_response(&mut self, now: Now, tx: ClientTxId, res: Message) {
        let code = res.status().unwrap_or(0);
        match self.pending.get(&tx) {
            Some(Pending::Invite(call)) => {
                let call = *call;
                if code >= 200 {
                    // Further 2xx retransmissions come here again: keep the entry for them.
                    if code >= 300 {
                        self.pending.remove(&tx);
                    }
                }
                self.on_b_invite_response(now, call, tx, res);
            }
            Some(Pending::Relay(_)) => {
                if code < 200 {
                    return;
                }
                if let Some(Pending::Relay(relay)) = self.pending.remove(&tx) {
                    self.relay_response(now, *relay, res);
                }
            }
            Some(Pending::TransferInvite(call)) => {
                let call = *call;
                if code >= 300 {
                    self.pending.remove(&tx);
                }
                self.on_transfer_response(now, call, tx, res);
            }
            Some(Pending::Replace(call)) => {
                let call = *call;
                if code >= 200 {
                    self.pending.remove(&tx);
                }
                self.on_replace_response(now, call, tx, res);
            }
            Some(Pending::TrunkRegister(_)) if code >= 200 => {
                if let Some(Pending::TrunkRegister(name)) = self.pending.remove(&tx) {
                    self.on_trunk_register_response(now, &name, res);
                }
            }
            Some(Pending::Bye | Pending::Ignore) if code >= 200 => {
                self.pending.remove(&tx);
            }
            Some(&Pending::DtmfInfo(call, side)) if code >= 200 => {
                self.pending.remove(&tx);
                self.info_dtmf_done(now, call, side);
            }
            Some(Pending::Offer(call)) => {
                let call = *call;
                self.on_offer_response(now, call, tx, res);
            }
            Some(Pending::Callback(call)) => {
                let call = *call;
                if code >= 300 {
                    self.pending.remove(&tx);
                }
                self.on_callback_response(now, call, tx, res);
            }
            Some(Pending::Monitor(call)) => {
                let call = *call;
                if code >= 300 {
                    self.pending.remove(&tx);
                }
                self.on_supervisor_response(now, call, tx, res);
            }
            Some(Pending::Ping { .. }) if code >= 200 => {
                if let Some(Pending::Ping { aor, contact }) = self.pending.remove(&tx) {
                    let limit = self.cfg.ping_failures;
                    self.location.ping_result(&aor, &contact, true, limit);
                }
            }
            _ => {}
        }
    }

    fn on_b_invite_response(&mut self, now: Now, call: CallId, tx: ClientTxId, res: Message) {
        let code = res.status().unwrap_or(0);
        let contact = self.contact.clone();
        let Some(c) = self.calls.get_mut(&call) else {
            // A 2xx for a call that ended meanwhile: ACK and BYE it (RFC 3261 §15).
            if (200..300).contains(&code) {
                self.ack_and_bye_orphan(now, tx, &res);
            }
            return;
        };
        if c.b_invite != Some(tx) {
            return; // a superseded INVITE (redirected)
        }
        if c.state == CallState::Ending {
            if (200..300).contains(&code) {
                self.ack_and_bye_orphan(now, tx, &res);
            }
            return;
        }
        match code {
            100 => {}
            101..=199 => {
                if let (Some(b), Some(tag)) = (c.b.as_mut(), res.to_tag()) {
                    b.remote_tag = Some(tag.to_string());
                    b.remote = res.get("To").unwrap_or_default().to_string();
                    if let Some(target) = res.contact_uri() {
                        b.remote_target = target.to_string();
                    }
                    b.route_set = res.get_all("Record-Route").map(str::to_string).collect();
                    b.route_set.reverse();
                }
                // RFC 3262: acknowledge a reliable provisional once; relay it to A as an
                // ordinary one (A never asked us for 100rel).
                if res.has_option_tag("Require", "100rel") {
                    let Some(rseq) = res.get("RSeq").and_then(|r| r.trim().parse::<u32>().ok())
                    else {
                        return;
                    };
                    if c.b_rseq.is_some_and(|last| rseq <= last) {
                        return; // a retransmission: our PRACK's own transaction covers it
                    }
                    c.b_rseq = Some(rseq);
                    let invite_cseq = res.cseq().map_or(1, |c| c.0);
                    if let Some(b) = c.b.as_mut() {
                        let mut prack = b.request(Method::Prack, &contact);
                        prack.push("RAck", format!("{rseq} {invite_cseq} INVITE"));
                        let peer = b.peer;
                        let prack_tx = self.tx.send_request(now.mono, prack, peer, None);
                        self.pending.insert(prack_tx, Pending::Ignore);
                    }
                }
                let Some(c) = self.calls.get_mut(&call) else {
                    return;
                };
                let sdp = res
                    .body_str()
                    .filter(|_| res.content_type() == Some("application/sdp"))
                    .map(str::to_string);
                let a_port = c.ports[0];
                let (a_invite, session) = (c.a_invite, c.session);
                let a_tag = c.a.local_tag.clone();
                let mut relay = Message::response_to(&c.a_request, code, Some(&a_tag));
                if let Some(sdp) = sdp {
                    if let (Some(session), Some(params)) = (session, first_audio_params(&sdp)) {
                        self.actions.push(Action::Media(MediaOp::Update {
                            session,
                            leg: LegIndex::B,
                            params,
                        }));
                    }
                    // Early media: transcoded like the final answer when it needs to be.
                    if let Some(rewritten) = self.answer_back(call, Side::B, &sdp, a_port) {
                        relay.set_body("application/sdp", rewritten.into_bytes());
                    }
                    if let Some(c) = self.calls.get_mut(&call) {
                        c.sdp[1] = sdp;
                    }
                }
                relay.push("Contact", contact);
                if let Some(a_invite) = a_invite {
                    self.respond(now, a_invite, relay);
                }
            }
            200..=299 => self.on_b_answered(now, call, res),
            300..=399 if c.redirects < MAX_REDIRECTS => {
                // Follow the first usable Contact of the redirect on the outbound leg.
                let next = res
                    .get_all("Contact")
                    .map(name_addr_uri)
                    .find_map(|u| SipUri::parse(u).and_then(|p| p.socket_addr().map(|a| (u, a))));
                match next {
                    Some((uri, addr)) => {
                        c.redirects += 1;
                        c.target_uri = uri.to_string();
                        c.target_peer = Peer {
                            transport: Transport::Udp,
                            addr,
                        };
                        if let Some(b) = c.b.take() {
                            self.dialogs.remove(&(b.call_id, b.local_tag));
                        }
                        self.send_b_invite(now, call);
                    }
                    None => self.fail_call(now, call, 480, Disposition::Failed, "callee"),
                }
            }
            401 | 407 if !c.b_auth_tried && c.trunk.is_some() => {
                c.b_auth_tried = true;
                if !self.answer_trunk_challenge(now, call, tx, &res) {
                    self.fail_call(now, call, code, Disposition::Rejected, "callee");
                }
            }
            _ => {
                let disposition = match code {
                    486 | 600 => Disposition::Busy,
                    408 | 480 => Disposition::NoAnswer,
                    403 | 603 => Disposition::Rejected,
                    _ => Disposition::Failed,
                };
                // 3xx past the redirect limit becomes 480; other codes pass through.
                let relayed = if (300..400).contains(&code) {
                    480
                } else {
                    code
                };
                self.fail_call(now, call, relayed, disposition, "callee");
            }
        }
    }

    fn on_b_answered(&mut self, now: Now, call: CallId, res: Message) {
        let contact = self.contact.clone();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.state == CallState::Answered {
            // A retransmitted 2xx: our ACK was lost.
            if let (Some(ack), Some(b)) = (c.b_ack.clone(), c.b.as_ref()) {
                let peer = b.peer;
                self.tx.resend(peer, ack);
            }
            return;
        }
        let Some(b) = c.b.as_mut() else { return };
        b.confirm(&res);
        let ack = b.request(Method::Ack, &contact);
        let peer = b.peer;
        let ack_bytes = self.tx.send_ack(ack, peer);
        let c = self.calls.get_mut(&call).expect("checked");
        c.b_ack = Some(ack_bytes);
        let answer = res
            .body_str()
            .filter(|_| res.content_type() == Some("application/sdp"))
            .map(str::to_string);
        let Some(answer) = answer else {
            c.ended_by = "system";
            c.final_code = 488;
            self.hang_up_both(now, call, None);
            return;
        };
        self.answer_caller(now, call, answer);
    }

    /// Leg B answered with `answer`: point leg B's media at it and answer the caller with our
    /// address and leg A's port (or end both legs when the answer cannot be rewritten).
    fn answer_caller(&mut self, now: Now, call: CallId, answer: String) {
        let contact = self.contact.clone();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if let (Some(session), Some(params)) = (c.session, first_audio_params(&answer)) {
            self.actions.push(Action::Media(MediaOp::Update {
                session,
                leg: LegIndex::B,
                params,
            }));
        }
        let a_port = c.ports[0];
        let Some(rewritten) = self.answer_back(call, Side::B, &answer, a_port) else {
            let c = self.calls.get_mut(&call).expect("checked");
            c.ended_by = "system";
            c.final_code = 488;
            self.hang_up_both(now, call, None);
            return;
        };
        let c = self.calls.get_mut(&call).expect("checked");
        c.sdp[1] = answer.clone();
        let answered_codecs = codec_names(&answer);
        if !answered_codecs.is_empty() {
            c.codecs = answered_codecs;
        }
        c.state = CallState::Answered;
        c.final_code = 200;
        c.disposition = Disposition::Answered;
        c.answered_unix_ms = Some(now.unix_ms);
        let setup = now.mono.saturating_duration_since(c.started);
        c.setup_ms = Some(setup.as_millis() as u64);
        let mut ok = Message::response_to(&c.a_request, 200, Some(&c.a.local_tag));
        ok.push("Contact", contact);
        ok.push("Allow", ALLOW);
        ok.push("Supported", "replaces, timer");
        if let Some(interval) = c.session_interval {
            ok.push("Require", "timer");
            ok.push(
                "Session-Expires",
                format!("{};refresher=uac", interval.as_secs()),
            );
            let at = now.mono + interval;
            c.session_expires_at = Some(at);
            self.call_timers.push(Reverse((at, call)));
        }
        ok.set_body("application/sdp", rewritten.into_bytes());
        let a_invite = c.a_invite;
        let tenant = c.tenant.clone();
        self.metrics.setup_time(setup);
        if let Some(a_invite) = a_invite {
            self.respond(now, a_invite, ok);
        }
        self.actions
            .push(Action::Event(SipEvent::CallAnswered { call, tenant }));
        self.arm_dtmf(call);
    }

    /// Ends a call that was never answered: the final response goes to the caller.
    fn fail_call(
        &mut self,
        now: Now,
        call: CallId,
        code: u16,
        disposition: Disposition,
        ended_by: &'static str,
    ) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.state == CallState::Answered {
            c.ended_by = ended_by;
            self.hang_up_both(now, call, None);
            return;
        }
        c.final_code = code;
        c.disposition = disposition;
        c.ended_by = ended_by;
        let mut res = Message::response_to(&c.a_request, code, Some(&c.a.local_tag));
        if code == 503 {
            res.push("Retry-After", "10");
        }
        let a_invite = c.a_invite;
        let b_invite = c.b_invite.filter(|_| c.state == CallState::Calling);
        // A callback still dialling the customer: our own INVITE on leg A is cancelled.
        let a_dial = c
            .queue
            .as_ref()
            .and_then(|q| q.callback.as_ref())
            .and_then(|d| d.invite)
            .filter(|_| c.state == CallState::Dialling);
        if let Some(a_invite) = a_invite {
            self.respond(now, a_invite, res);
        }
        if let Some(b_invite) = b_invite {
            self.tx.cancel(now.mono, b_invite);
        }
        if let Some(a_dial) = a_dial {
            self.tx.cancel(now.mono, a_dial);
        }
        self.finish(now, call);
    }

    /// Ends an answered call: BYE to whichever legs did not end it.
    fn hang_up_both(&mut self, now: Now, call: CallId, stats: Option<SessionStats>) {
        let contact = self.contact.clone();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.state != CallState::Answered {
            let ended_by = if c.ended_by.is_empty() {
                "system"
            } else {
                c.ended_by
            };
            let code = if c.final_code >= 300 {
                c.final_code
            } else {
                500
            };
            self.fail_call(now, call, code, Disposition::Failed, ended_by);
            return;
        }
        c.state = CallState::Ending;
        let mut byes = Vec::new();
        if c.ended_by != "caller" && c.no_bye != Some(Side::A) {
            byes.push((c.a.request(Method::Bye, &contact), c.a.peer));
        }
        if c.ended_by != "callee" && c.no_bye != Some(Side::B) {
            if let Some(b) = c.b.as_mut() {
                byes.push((b.request(Method::Bye, &contact), b.peer));
            }
        }
        for (bye, peer) in byes {
            let tx = self.tx.send_request(now.mono, bye, peer, None);
            self.pending.insert(tx, Pending::Bye);
        }
        self.finish_with(now, call, stats);
    }

    fn finish(&mut self, now: Now, call: CallId) {
        self.finish_with(now, call, None);
    }

    fn finish_with(&mut self, now: Now, call: CallId, stats: Option<SessionStats>) {
        let queued = self.calls.get(&call).is_some_and(|c| c.queue.is_some());
        if queued {
            self.leave_acd(now, call);
        }
        let Some(c) = self.calls.remove(&call) else {
            return;
        };
        self.conference_calls.remove(&call);
        self.end_monitor(now, call, "call ended");
        self.dialogs
            .remove(&(c.a.call_id.clone(), c.a.local_tag.clone()));
        if let Some(b) = &c.b {
            self.dialogs
                .remove(&(b.call_id.clone(), b.local_tag.clone()));
        }
        if let Some(a_invite) = c.a_invite {
            self.invites.remove(&a_invite);
        }
        let record = CallRecord {
            call,
            tenant: c.tenant,
            a_call_id: c.a.call_id,
            b_call_id: c.b.map(|b| b.call_id),
            caller: c.caller,
            dialled: c.dialled,
            target: c.target_uri,
            started_unix_ms: c.started_unix_ms,
            answered_unix_ms: c.answered_unix_ms,
            ended_unix_ms: now.unix_ms,
            setup_ms: c.setup_ms,
            disposition: c.disposition,
            final_code: c.final_code,
            ended_by: if c.ended_by.is_empty() {
                "system"
            } else {
                c.ended_by
            },
            codecs: c.codecs,
            transcoded: c.transcoding.transcoded,
            media: stats,
            direction: c.direction,
        };
        self.metrics.call_ended(record.disposition.as_str());
        match c.session {
            Some(session) => {
                self.ending.insert(call, record);
                self.actions
                    .push(Action::Media(MediaOp::Delete { call, session }));
            }
            None => self
                .actions
                .push(Action::Event(SipEvent::CallEnded(Box::new(record)))),
        }
        self.metrics
            .set_gauges(self.calls.len(), self.location.binding_count());
        if queued {
            self.acd_pump(now);
        }
    }

    fn in_dialog(&mut self, now: Now, tx: ServerTxId, req: Message, call: CallId, side: Side) {
        let method = req.method().cloned().unwrap_or(Method::Options);
        let contact = self.contact.clone();
        let Some(c) = self.calls.get_mut(&call) else {
            self.reply(now, tx, &req, 481);
            return;
        };
        if side == Side::B
            && c.queue.is_some()
            && c.b.as_ref().is_none_or(|b| b.call_id != req.call_id())
        {
            // From an agent's device that was offered the call but is not its leg B.
            self.offer_dialog_request(now, tx, req, call);
            return;
        }
        // Requests from a peer must not go backwards in CSeq (§12.2.2); BYE included.
        match method {
            Method::Bye if c.transfer.as_ref().is_some_and(|t| t.transferor == side) => {
                // The transferor leaves after REFER (blind transfer): the transfer goes on.
                let res = Message::response_to(&req, 200, None);
                let leg = match side {
                    Side::A => &c.a,
                    Side::B => c.b.as_ref().unwrap_or(&c.a),
                };
                let key = (leg.call_id.clone(), leg.local_tag.clone());
                if let Some(t) = c.transfer.as_mut() {
                    t.transferor_gone = true;
                }
                self.dialogs.remove(&key);
                self.respond(now, tx, res);
            }
            Method::Bye => {
                let res = Message::response_to(&req, 200, None);
                self.respond(now, tx, res);
                let c = self.calls.get_mut(&call).expect("checked");
                c.ended_by = match side {
                    Side::A => "caller",
                    Side::B => "callee",
                };
                if c.state == CallState::Answered {
                    self.hang_up_both(now, call, None);
                } else {
                    // BYE from the callee's early dialog before its 2xx: treat as a failure.
                    let code = if side == Side::B { 480 } else { 487 };
                    self.fail_call(now, call, code, Disposition::Failed, c_ended_by(side));
                }
            }
            Method::Options => {
                let mut res = Message::response_to(&req, 200, None);
                res.push("Allow", ALLOW);
                self.respond(now, tx, res);
            }
            Method::Refer => self.on_refer(now, tx, req, call, side),
            Method::Prack => {
                // We never send reliable provisionals, so there is nothing to acknowledge.
                self.reply(now, tx, &req, 481);
            }
            // Not answered yet, or back in a queue with nobody on leg B to relay to.
            _ if c.state != CallState::Answered || c.b.is_none() => {
                let mut res = Message::response_to(&req, 491, None);
                res.push("Retry-After", "1");
                self.respond(now, tx, res);
            }
            _ => {
                // A key sent as SIP INFO, to a peer that takes RFC 4733: sent as events in its
                // stream and answered here (a peer without telephone-event gets the INFO).
                let target_side = side.other();
                let events = match (method == Method::Info, c.session) {
                    (true, Some(session)) => info_as_events(
                        &req,
                        session,
                        &c.sdp[target_side.index()],
                        target_side.leg(),
                    ),
                    _ => None,
                };
                if let Some(op) = events {
                    self.actions.push(Action::Media(op));
                    self.reply(now, tx, &req, 200);
                    return;
                }
                // Relay INVITE (re-INVITE: hold, resume, codec change), UPDATE, INFO (DTMF)
                // and anything else in-dialog to the other leg.
                let target_port = c.ports[match target_side {
                    Side::A => 0,
                    Side::B => 1,
                }];
                let session = c.session;
                let sdp = req
                    .body_str()
                    .filter(|_| req.content_type() == Some("application/sdp"))
                    .map(str::to_string);
                // An SDP in a re-INVITE or UPDATE is an offer (hold, resume, codec change).
                let offers = matches!(method, Method::Invite | Method::Update);
                let body = match &sdp {
                    Some(sdp) if offers => match self.offer_onward(call, side, sdp, target_port) {
                        Some(s) => Some(("application/sdp".to_string(), s.into_bytes())),
                        None => {
                            self.reply(now, tx, &req, 488);
                            return;
                        }
                    },
                    Some(sdp) => match self.rewrite_for(sdp, target_port) {
                        Some(s) => Some(("application/sdp".to_string(), s.into_bytes())),
                        None => {
                            self.reply(now, tx, &req, 488);
                            return;
                        }
                    },
                    None if !req.body.is_empty() => Some((
                        req.get("Content-Type")
                            .unwrap_or("application/octet-stream")
                            .to_string(),
                        req.body.clone(),
                    )),
                    None => None,
                };
                if let (Some(sdp), Some(session)) = (&sdp, session) {
                    if let Some(params) = first_audio_params(sdp) {
                        self.actions.push(Action::Media(MediaOp::Update {
                            session,
                            leg: side.leg(),
                            params,
                        }));
                    }
                }
                let c = self.calls.get_mut(&call).expect("checked");
                if let Some(sdp) = sdp {
                    c.sdp[side.index()] = sdp;
                }
                let leg = c.leg_mut(target_side);
                let Some(leg) = leg else {
                    self.reply(now, tx, &req, 481);
                    return;
                };
                let mut out = leg.request(method.clone(), &contact);
                let cseq = leg.local_cseq;
                let peer = leg.peer;
                for name in RELAYED_HEADERS {
                    for value in req.get_all(name).map(str::to_string).collect::<Vec<_>>() {
                        out.push(name, value);
                    }
                }
                if let Some((content_type, body)) = body {
                    out.set_body(&content_type, body);
                }
                let client = self.tx.send_request(now.mono, out, peer, None);
                let relay = RelayedRequest {
                    call,
                    from: side,
                    server: tx,
                    method,
                    request: Box::new(Message {
                        body: Vec::new(),
                        ..req
                    }),
                    cseq,
                };
                self.pending.insert(client, Pending::Relay(Box::new(relay)));
            }
        }
    }

    fn relay_response(&mut self, now: Now, relay: RelayedRequest, res: Message) {
        let RelayedRequest {
            call,
            from,
            server,
            method,
            request,
            cseq,
        } = relay;
        let code = res.status().unwrap_or(500);
        let contact = self.contact.clone();
        let Some(c) = self.calls.get_mut(&call) else {
            let out = Message::response_to(&request, 481, None);
            self.respond(now, server, out);
            return;
        };
        let responder = from.other();
        if method == Method::Invite && (200..300).contains(&code) {
            let leg = c.leg_mut(responder);
            if let Some(leg) = leg {
                let mut ack = leg.request(Method::Ack, &contact);
                ack.set("CSeq", format!("{cseq} ACK"));
                let peer = leg.peer;
                self.tx.send_ack(ack, peer);
            }
        }
        let c = self.calls.get_mut(&call).expect("checked");
        let from_port = c.ports[match from {
            Side::A => 0,
            Side::B => 1,
        }];
        let session = c.session;
        // RFC 4028: a successful refresh restarts the session interval.
        if matches!(method, Method::Invite | Method::Update) && (200..300).contains(&code) {
            if let Some(interval) = c.session_interval {
                let at = now.mono + interval;
                c.session_expires_at = Some(at);
                self.call_timers.push(Reverse((at, call)));
            }
        }
        if let Some(sdp) = res
            .body_str()
            .filter(|_| res.content_type() == Some("application/sdp"))
        {
            if let Some(c) = self.calls.get_mut(&call) {
                c.sdp[responder.index()] = sdp.to_string();
            }
        }
        let mut out = Message::response_to(&request, code, None);
        if let StartLine::Response { reason, .. } = &res.start {
            out = out.with_reason(reason);
        }
        if let Some(sdp) = res
            .body_str()
            .filter(|_| res.content_type() == Some("application/sdp"))
        {
            if let (Some(session), Some(params)) = (session, first_audio_params(sdp)) {
                self.actions.push(Action::Media(MediaOp::Update {
                    session,
                    leg: responder.leg(),
                    params,
                }));
            }
            let answered = matches!(method, Method::Invite | Method::Update);
            let rewritten = if answered && (200..300).contains(&code) {
                self.answer_back(call, responder, sdp, from_port)
            } else {
                self.rewrite_for(sdp, from_port)
            };
            if let Some(rewritten) = rewritten {
                out.set_body("application/sdp", rewritten.into_bytes());
            }
        } else if !res.body.is_empty() {
            let content_type = res
                .get("Content-Type")
                .unwrap_or("application/octet-stream")
                .to_string();
            out.set_body(&content_type, res.body.clone());
        }
        if method == Method::Invite && (200..300).contains(&code) {
            out.push("Contact", contact);
        }
        self.respond(now, server, out);
    }

    fn on_client_timeout(&mut self, now: Now, tx: ClientTxId) {
        match self.pending.remove(&tx) {
            Some(Pending::Invite(call)) => {
                if self
                    .calls
                    .get(&call)
                    .is_some_and(|c| c.b_invite == Some(tx))
                {
                    self.fail_call(now, call, 408, Disposition::NoAnswer, "system");
                }
            }
            Some(Pending::Relay(relay)) => {
                let out = Message::response_to(&relay.request, 408, None);
                self.respond(now, relay.server, out);
            }
            Some(Pending::Ping { aor, contact }) => {
                let limit = self.cfg.ping_failures;
                if let Some(event) = self.location.ping_result(&aor, &contact, false, limit) {
                    self.actions
                        .push(Action::Event(SipEvent::Registration(event)));
                }
            }
            Some(Pending::Offer(call)) => self.offer_timed_out(now, call, tx),
            Some(Pending::Callback(call)) => {
                self.fail_call(now, call, 408, Disposition::NoAnswer, "system")
            }
            Some(Pending::Monitor(call)) => self.supervisor_timed_out_ringing(call, tx, now),
            Some(Pending::TransferInvite(call)) => {
                self.notify_transferor(now, call, "SIP/2.0 408 Request Timeout", true);
                self.transfer_failed(now, call);
            }
            Some(Pending::Replace(call)) => {
                self.notify_replacement(now, call, "SIP/2.0 408 Request Timeout", true);
                if let Some(c) = self.calls.get_mut(&call) {
                    c.replacement = None;
                }
            }
            Some(Pending::TrunkRegister(name)) => {
                tracing::warn!("SIP: trunk {name} did not answer our REGISTER; retrying in 30 s");
                if let Some(r) = self.trunk_registrations.get_mut(&name) {
                    r.next_at = now.mono + Duration::from_secs(30);
                    r.auth_tried = false;
                }
            }
            Some(Pending::DtmfInfo(call, side)) => self.info_dtmf_done(now, call, side),
            Some(Pending::Bye | Pending::Ignore) | None => {}
        }
    }

    fn on_cancelled(&mut self, now: Now, invite: ServerTxId) {
        let Some(&call) = self.invites.get(&invite) else {
            return;
        };
        if self
            .calls
            .get(&call)
            .is_some_and(|c| c.state != CallState::Answered)
        {
            self.fail_call(now, call, 487, Disposition::Cancelled, "caller");
        }
    }

    /// REFER (RFC 3515) as a blind transfer: the side that sent it is replaced by the target.
    /// The party who stays keeps its data-plane leg and port, so it needs no re-INVITE; the new
    /// party is offered the stayer's last SDP on the transferor's port.
    fn on_refer(&mut self, now: Now, tx: ServerTxId, req: Message, call: CallId, side: Side) {
        let contact = self.contact.clone();
        let Some(c) = self.calls.get(&call) else {
            self.reply(now, tx, &req, 481);
            return;
        };
        if c.state != CallState::Answered || c.transfer.is_some() {
            let mut res = Message::response_to(&req, 491, None);
            res.push("Retry-After", "1");
            self.respond(now, tx, res);
            return;
        }
        let Some(refer_to) = req.get("Refer-To").map(name_addr_uri) else {
            self.reply(now, tx, &req, 400);
            return;
        };
        if let Some((_, headers)) = refer_to.split_once('?') {
            match replaces_of(headers) {
                Some(replaces) => self.attended_transfer(now, tx, &req, call, side, replaces),
                None => {
                    let res = Message::response_to(&req, 501, None)
                        .with_reason("Not Implemented (Refer-To headers other than Replaces)");
                    self.respond(now, tx, res);
                }
            }
            return;
        }
        let Some(uri) = SipUri::parse(refer_to) else {
            self.reply(now, tx, &req, 416);
            return;
        };
        let tenant = c.tenant.clone();
        let dialled = uri.user.clone().unwrap_or_default();
        // Transfers follow the tenant's routes like any call: agents cannot refer callers to
        // arbitrary addresses.
        let Some(route) = self.cfg.route(&tenant, &dialled) else {
            self.reply(now, tx, &req, 404);
            return;
        };
        if let RouteTarget::Queue(name) = &route.target {
            self.refer_to_queue(now, tx, &req, call, side, name);
            return;
        }
        let number = self.cfg.normalize(&tenant, &dialled);
        let (target_uri, target_peer) = match self.resolve(now, &tenant, &route.target, &number) {
            Ok(target) => target,
            Err(code) => {
                self.reply(now, tx, &req, code);
                return;
            }
        };
        let stays = side.other();
        let onward = self.onward_offer(&c.tenant, &c.sdp[stays.index()], c.ports[side.index()]);
        let Some((offer, _)) = onward else {
            self.reply(now, tx, &req, 488);
            return;
        };
        let stayer = match stays {
            Side::A => Some(&c.a),
            Side::B => c.b.as_ref(),
        };
        let presented = stayer
            .map(|l| name_addr_uri(&l.remote).to_string())
            .unwrap_or_default();
        let referred_by = req
            .get("Referred-By")
            .map(str::to_string)
            .unwrap_or_else(|| req.get("From").map(strip_tag).unwrap_or_default());
        self.respond(now, tx, Message::response_to(&req, 202, None));

        let mut leg = Leg {
            call_id: format!("{}@tandem", self.token("c")),
            local_tag: self.token("x"),
            local_uri: format!("<{presented}>"),
            remote: format!("<{target_uri}>"),
            remote_tag: None,
            remote_target: target_uri,
            route_set: Vec::new(),
            local_cseq: 0,
            peer: target_peer,
        };
        let mut invite = leg.request(Method::Invite, &contact);
        invite.push("Allow", ALLOW);
        invite.push("Supported", "replaces, 100rel, timer");
        invite.push("Referred-By", referred_by);
        invite.set_body("application/sdp", offer.into_bytes());
        let invite_tx = self.tx.send_request(now.mono, invite, target_peer, None);
        self.pending
            .insert(invite_tx, Pending::TransferInvite(call));
        if let Some(c) = self.calls.get_mut(&call) {
            c.transfer = Some(Transfer {
                transferor: side,
                leg,
                invite: invite_tx,
                transferor_gone: false,
            });
        }
        self.notify_transferor(now, call, "SIP/2.0 100 Trying", false);
    }

    fn attended_transfer(
        &mut self,
        now: Now,
        tx: ServerTxId,
        req: &Message,
        call: CallId,
        side: Side,
        (call_id, tag_a, tag_b): (String, String, String),
    ) {
        let contact = self.contact.clone();
        // The dialog to replace is one of ours: find it by our tag, whichever way it is named.
        let found = [tag_a, tag_b]
            .into_iter()
            .find_map(|tag| self.dialogs.get(&(call_id.clone(), tag)).copied());
        let Some((consultation, transferor_side)) = found.filter(|(c2, _)| *c2 != call) else {
            self.reply(now, tx, req, 481);
            return;
        };
        let (Some(c1), Some(c2)) = (self.calls.get(&call), self.calls.get(&consultation)) else {
            self.reply(now, tx, req, 481);
            return;
        };
        if c1.tenant != c2.tenant
            || c1.state != CallState::Answered
            || c2.state != CallState::Answered
            || c1.replacement.is_some()
            || c1.transfer.is_some()
        {
            let mut res = Message::response_to(req, 491, None);
            res.push("Retry-After", "1");
            self.respond(now, tx, res);
            return;
        }
        let target_side = transferor_side.other();
        let onward = self.onward_offer(
            &c1.tenant,
            &c1.sdp[side.other().index()],
            c1.ports[side.index()],
        );
        let Some((offer, _)) = onward else {
            self.reply(now, tx, req, 488);
            return;
        };
        self.respond(now, tx, Message::response_to(req, 202, None));
        let Some(c2) = self.calls.get_mut(&consultation) else {
            return;
        };
        let leg = c2.leg_mut(target_side);
        let Some(leg) = leg else { return };
        let mut reinvite = leg.request(Method::Invite, &contact);
        reinvite.push("Allow", ALLOW);
        reinvite.set_body("application/sdp", offer.into_bytes());
        let peer = leg.peer;
        let reinvite_tx = self.tx.send_request(now.mono, reinvite, peer, None);
        self.pending.insert(reinvite_tx, Pending::Replace(call));
        if let Some(c1) = self.calls.get_mut(&call) {
            c1.replacement = Some(Replacement {
                transferor: side,
                consultation,
                target_side,
                reinvite: reinvite_tx,
            });
        }
        self.notify_replacement(now, call, "SIP/2.0 100 Trying", false);
    }

    /// NOTIFY for an attended transfer's REFER, on the transferor's leg of the call.
    fn notify_replacement(&mut self, now: Now, call: CallId, sipfrag: &str, terminated: bool) {
        let contact = self.contact.clone();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(side) = c.replacement.as_ref().map(|r| r.transferor) else {
            return;
        };
        let leg = c.leg_mut(side);
        let Some(leg) = leg else { return };
        let notify = sipfrag_notify(leg, &contact, sipfrag, terminated);
        let peer = leg.peer;
        let notify_tx = self.tx.send_request(now.mono, notify, peer, None);
        self.pending.insert(notify_tx, Pending::Ignore);
    }

    fn on_replace_response(&mut self, now: Now, call: CallId, tx: ClientTxId, res: Message) {
        let code = res.status().unwrap_or(0);
        let contact = self.contact.clone();
        let Some(r) = self
            .calls
            .get(&call)
            .and_then(|c| c.replacement.as_ref())
            .filter(|r| r.reinvite == tx)
        else {
            return;
        };
        let (transferor, consultation, target_side) = (r.transferor, r.consultation, r.target_side);
        if code < 200 {
            return;
        }
        let reason = match &res.start {
            StartLine::Response { reason, .. } => reason.clone(),
            StartLine::Request { .. } => String::new(),
        };
        if code >= 300 {
            self.notify_replacement(now, call, &format!("SIP/2.0 {code} {reason}"), true);
            if let Some(c) = self.calls.get_mut(&call) {
                c.replacement = None;
            }
            return;
        }
        // The target accepted our port: ACK it on its (consultation) dialog, then move it here.
        let Some(c2) = self.calls.get_mut(&consultation) else {
            return;
        };
        let leg = c2.leg_mut(target_side);
        let Some(leg) = leg else { return };
        let ack = leg.request(Method::Ack, &contact);
        let target_leg = leg.clone();
        self.tx.send_ack(ack, target_leg.peer);
        // The consultation call ends: BYE to the transferor's leg only.
        c2.no_bye = Some(target_side);
        c2.ended_by = "transferred";
        self.hang_up_both(now, consultation, None);

        self.notify_replacement(now, call, &format!("SIP/2.0 {code} {reason}"), true);
        let answer = res
            .body_str()
            .filter(|_| res.content_type() == Some("application/sdp"))
            .map(str::to_string)
            .unwrap_or_default();
        let Some(c1) = self.calls.get_mut(&call) else {
            return;
        };
        c1.replacement = None;
        if let (Some(session), Some(params)) = (c1.session, first_audio_params(&answer)) {
            self.actions.push(Action::Media(MediaOp::Update {
                session,
                leg: transferor.leg(),
                params,
            }));
        }
        c1.sdp[transferor.index()] = answer.clone();
        c1.target_uri = target_leg.remote_target.clone();
        self.settle_joined(call, transferor, &answer);
        let Some(c1) = self.calls.get_mut(&call) else {
            return;
        };
        let new_key = (target_leg.call_id.clone(), target_leg.local_tag.clone());
        let old = match transferor {
            Side::A => Some(std::mem::replace(&mut c1.a, target_leg)),
            Side::B => c1.b.replace(target_leg),
        };
        self.dialogs.insert(new_key, (call, transferor));
        if let Some(mut old) = old {
            self.dialogs
                .remove(&(old.call_id.clone(), old.local_tag.clone()));
            let bye = old.request(Method::Bye, &contact);
            let bye_tx = self.tx.send_request(now.mono, bye, old.peer, None);
            self.pending.insert(bye_tx, Pending::Bye);
        }
        self.metrics.transferred();
        if transferor == Side::B {
            self.agent_transferred(now, call);
        }
    }

    /// NOTIFY of the REFER's implicit subscription, with the transfer's progress as sipfrag.
    fn notify_transferor(&mut self, now: Now, call: CallId, sipfrag: &str, terminated: bool) {
        let contact = self.contact.clone();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(t) = c.transfer.as_ref().filter(|t| !t.transferor_gone) else {
            return;
        };
        let leg = c.leg_mut(t.transferor);
        let Some(leg) = leg else { return };
        let notify = sipfrag_notify(leg, &contact, sipfrag, terminated);
        let peer = leg.peer;
        let notify_tx = self.tx.send_request(now.mono, notify, peer, None);
        self.pending.insert(notify_tx, Pending::Ignore);
    }

    fn on_transfer_response(&mut self, now: Now, call: CallId, tx: ClientTxId, res: Message) {
        let code = res.status().unwrap_or(0);
        let contact = self.contact.clone();
        let in_progress = self
            .calls
            .get(&call)
            .and_then(|c| c.transfer.as_ref())
            .is_some_and(|t| t.invite == tx);
        if !in_progress {
            if (200..300).contains(&code) && !self.calls.contains_key(&call) {
                self.ack_and_bye_orphan(now, tx, &res);
            }
            return;
        }
        let reason = match &res.start {
            StartLine::Response { reason, .. } => reason.clone(),
            StartLine::Request { .. } => String::new(),
        };
        match code {
            100 => {}
            101..=199 => {
                self.notify_transferor(now, call, &format!("SIP/2.0 {code} {reason}"), false)
            }
            200..=299 => {
                self.notify_transferor(now, call, &format!("SIP/2.0 {code} {reason}"), true);
                let c = self.calls.get_mut(&call).expect("checked");
                let mut t = c.transfer.take().expect("checked");
                t.leg.confirm(&res);
                let ack = t.leg.request(Method::Ack, &contact);
                let answer = res
                    .body_str()
                    .filter(|_| res.content_type() == Some("application/sdp"))
                    .map(str::to_string)
                    .unwrap_or_default();
                if let (Some(session), Some(params)) = (c.session, first_audio_params(&answer)) {
                    self.actions.push(Action::Media(MediaOp::Update {
                        session,
                        leg: t.transferor.leg(),
                        params,
                    }));
                }
                c.sdp[t.transferor.index()] = answer.clone();
                self.settle_joined(call, t.transferor, &answer);
                let c = self.calls.get_mut(&call).expect("checked");
                let new_key = (t.leg.call_id.clone(), t.leg.local_tag.clone());
                let peer = t.leg.peer;
                c.target_uri = t.leg.remote_target.clone();
                let old = match t.transferor {
                    Side::A => Some(std::mem::replace(&mut c.a, t.leg)),
                    Side::B => c.b.replace(t.leg),
                };
                let ack_bytes = self.tx.send_ack(ack, peer);
                if t.transferor == Side::B {
                    if let Some(c) = self.calls.get_mut(&call) {
                        c.b_ack = Some(ack_bytes);
                    }
                }
                self.dialogs.insert(new_key, (call, t.transferor));
                if let Some(mut old) = old {
                    self.dialogs
                        .remove(&(old.call_id.clone(), old.local_tag.clone()));
                    if !t.transferor_gone {
                        let bye = old.request(Method::Bye, &contact);
                        let bye_tx = self.tx.send_request(now.mono, bye, old.peer, None);
                        self.pending.insert(bye_tx, Pending::Bye);
                    }
                }
                self.metrics.transferred();
                if t.transferor == Side::B {
                    self.agent_transferred(now, call);
                }
            }
            _ => {
                self.notify_transferor(now, call, &format!("SIP/2.0 {code} {reason}"), true);
                self.transfer_failed(now, call);
            }
        }
    }

    /// The transfer target refused or never answered: the call stays with the transferor, or
    /// ends if the transferor already hung up.
    fn transfer_failed(&mut self, now: Now, call: CallId) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(t) = c.transfer.take() else { return };
        if t.transferor_gone {
            c.ended_by = c_ended_by(t.transferor);
            self.hang_up_both(now, call, None);
        }
    }

    /// Re-sends leg B's INVITE with credentials for the trunk's challenge (RFC 3261 §22.2).
    fn answer_trunk_challenge(
        &mut self,
        now: Now,
        call: CallId,
        tx: ClientTxId,
        res: &Message,
    ) -> bool {
        let code = res.status().unwrap_or(0);
        let Some(c) = self.calls.get(&call) else {
            return false;
        };
        let Some(trunk) = c.trunk.as_deref().and_then(|t| self.cfg.trunk(t)) else {
            return false;
        };
        let (Some(user), Some(password)) = (trunk.username.clone(), trunk.password.clone()) else {
            return false;
        };
        let (challenge_header, answer_header) = if code == 407 {
            ("Proxy-Authenticate", "Proxy-Authorization")
        } else {
            ("WWW-Authenticate", "Authorization")
        };
        let Some(mut invite) = self.tx.client_request(tx).cloned() else {
            return false;
        };
        let peer = self.tx.client_peer(tx);
        let uri = invite.request_uri().unwrap_or_default().to_string();
        let cnonce = self.token("n");
        // The first challenge we can answer (MD5 or SHA-256).
        let Some(authorization) = res.get_all(challenge_header).find_map(|ch| {
            super::digest::authorize(ch, &user, &password, "INVITE", &uri, &cnonce, 1)
        }) else {
            return false;
        };
        let (Some(peer), Some(c)) = (peer, self.calls.get_mut(&call)) else {
            return false;
        };
        let Some(b) = c.b.as_mut() else { return false };
        b.local_cseq += 1;
        invite.remove("Via");
        invite.remove("Max-Forwards");
        invite.set("CSeq", format!("{} INVITE", b.local_cseq));
        invite.push(answer_header, authorization);
        // The challenge's To tag belongs to a finished transaction, not to a dialog.
        let new_tx = self.tx.send_request(now.mono, invite, peer, None);
        self.pending.insert(new_tx, Pending::Invite(call));
        if let Some(c) = self.calls.get_mut(&call) {
            c.b_invite = Some(new_tx);
            if let Some(b) = c.b.as_mut() {
                b.remote_tag = None;
            }
        }
        true
    }

    fn send_trunk_register(&mut self, now: Now, name: &str, authorization: Option<(&str, String)>) {
        let Some(trunk) = self.cfg.trunk(name).cloned() else {
            return;
        };
        let Some(user) = trunk.username.clone() else {
            return;
        };
        let sent_by = self.cfg.sent_by();
        let Some(reg) = self.trunk_registrations.get_mut(name) else {
            return;
        };
        reg.cseq += 1;
        // Until an answer comes, do not start another.
        reg.next_at = now.mono + Duration::from_secs(3600);
        let host = trunk.address;
        let mut m = Message::request(Method::Register, format!("sip:{host}"));
        m.push("From", format!("<sip:{user}@{host}>;tag={}", reg.tag))
            .push("To", format!("<sip:{user}@{host}>"))
            .push("Call-ID", reg.call_id.clone())
            .push("CSeq", format!("{} REGISTER", reg.cseq))
            .push("Contact", format!("<sip:{user}@{sent_by}>"))
            .push("Expires", trunk.register_expires_s.to_string());
        if let Some((header, value)) = authorization {
            m.push(header, value);
        }
        let peer = Peer {
            transport: Transport::Udp,
            addr: host,
        };
        let tx = self.tx.send_request(now.mono, m, peer, None);
        self.pending
            .insert(tx, Pending::TrunkRegister(name.to_string()));
    }

    fn on_trunk_register_response(&mut self, now: Now, name: &str, res: Message) {
        let code = res.status().unwrap_or(0);
        let Some(trunk) = self.cfg.trunk(name).cloned() else {
            return;
        };
        let Some(reg) = self.trunk_registrations.get_mut(name) else {
            return;
        };
        match code {
            200..=299 => {
                let granted = res
                    .get_all("Contact")
                    .find_map(|c| header_param(c, "expires").and_then(|e| e.parse::<u64>().ok()))
                    .or_else(|| res.get("Expires").and_then(|e| e.trim().parse().ok()))
                    .unwrap_or(u64::from(trunk.register_expires_s))
                    .max(10);
                reg.registered_until = Some(now.mono + Duration::from_secs(granted));
                reg.next_at = now.mono + Duration::from_secs(granted / 2);
                reg.auth_tried = false;
                self.metrics.trunk_registered(name, true);
                tracing::info!("SIP: registered at trunk {name} for {granted} s");
            }
            401 | 407 if !reg.auth_tried => {
                reg.auth_tried = true;
                let (challenge, answer) = if code == 407 {
                    ("Proxy-Authenticate", "Proxy-Authorization")
                } else {
                    ("WWW-Authenticate", "Authorization")
                };
                let uri = format!("sip:{}", trunk.address);
                let (user, password) = (
                    trunk.username.clone().unwrap_or_default(),
                    trunk.password.clone().unwrap_or_default(),
                );
                let cnonce = format!("{:x}", reg.cseq ^ 0x5a5a);
                let authorization = res.get_all(challenge).find_map(|ch| {
                    super::digest::authorize(ch, &user, &password, "REGISTER", &uri, &cnonce, 1)
                });
                match authorization {
                    Some(a) => self.send_trunk_register(now, name, Some((answer, a))),
                    None => {
                        reg.next_at = now.mono + Duration::from_secs(60);
                        tracing::warn!("SIP: trunk {name} challenged with no algorithm we speak");
                    }
                }
            }
            _ => {
                reg.auth_tried = false;
                reg.next_at = now.mono + Duration::from_secs(60);
                if reg.registered_until.is_none_or(|u| u <= now.mono) {
                    self.metrics.trunk_registered(name, false);
                }
                tracing::warn!(
                    "SIP: trunk {name} refused our REGISTER with {code}; retrying in 60 s"
                );
            }
        }
    }

    fn call_timer(&mut self, now: Now, call: CallId) {
        self.supervisor_ring_timer(now, call);
        if self.callback_agent_timer(now, call) || self.greeting_timer(now, call) {
            return;
        }
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.no_answer_at <= now.mono && matches!(c.state, CallState::Media | CallState::Calling) {
            self.fail_call(now, call, 480, Disposition::NoAnswer, "system");
        } else if c.state == CallState::Answered
            && c.session_expires_at.is_some_and(|at| at <= now.mono)
        {
            // No refresh within the session interval: the caller is gone (RFC 4028 §10).
            c.ended_by = "session_timer";
            self.hang_up_both(now, call, None);
        }
    }

    /// A 2xx for a call we no longer want: confirm it and end it at once (RFC 3261 §15).
    fn ack_and_bye_orphan(&mut self, now: Now, tx: ClientTxId, res: &Message) {
        let Some((request, peer)) = self
            .tx
            .client_request(tx)
            .map(|r| (r.clone(), self.tx.client_peer(tx)))
        else {
            return;
        };
        let Some(peer) = peer else { return };
        let contact = self.contact.clone();
        let mut leg = Leg {
            call_id: request.call_id().to_string(),
            local_tag: request.from_tag().unwrap_or_default().to_string(),
            local_uri: strip_tag(request.get("From").unwrap_or_default()),
            remote: res.get("To").unwrap_or_default().to_string(),
            remote_tag: res.to_tag().map(str::to_string),
            remote_target: res
                .contact_uri()
                .or(request.request_uri())
                .unwrap_or_default()
                .to_string(),
            route_set: {
                let mut r: Vec<String> = res.get_all("Record-Route").map(str::to_string).collect();
                r.reverse();
                r
            },
            local_cseq: request.cseq().map_or(1, |c| c.0),
            peer,
        };
        let ack = leg.request(Method::Ack, &contact);
        self.tx.send_ack(ack, peer);
        let bye = leg.request(Method::Bye, &contact);
        let bye_tx = self.tx.send_request(now.mono, bye, peer, None);
        self.pending.insert(bye_tx, Pending::Bye);
    }

    fn ping_contacts(&mut self, now: Now) {
        let targets: Vec<(String, String, Peer)> = self
            .location
            .all()
            .map(|(aor, b)| (aor.clone(), b.contact.clone(), b.peer))
            .collect();
        let contact = self.contact.clone();
        for (aor, uri, peer) in targets {
            let mut ping = Message::request(Method::Options, uri.clone());
            let tag = self.token("p");
            ping.push("From", format!("{contact};tag={tag}"));
            ping.push("To", format!("<{uri}>"));
            ping.push("Call-ID", format!("{}@tandem", self.token("o")));
            ping.push("CSeq", "1 OPTIONS");
            let tx = self.tx.send_request(now.mono, ping, peer, None);
            self.pending.insert(tx, Pending::Ping { aor, contact: uri });
        }
    }
}

/// NOTIFY for REFER's implicit subscription (RFC 3515) carrying the transfer's progress.
fn sipfrag_notify(leg: &mut Leg, contact: &str, sipfrag: &str, terminated: bool) -> Message {
    let mut notify = leg.request(Method::Notify, contact);
    notify.push("Event", "refer");
    notify.push(
        "Subscription-State",
        if terminated {
            "terminated;reason=noresource"
        } else {
            "active;expires=60"
        },
    );
    notify.set_body(
        "message/sipfrag;version=2.0",
        format!("{sipfrag}\r\n").into_bytes(),
    );
    notify
}

/// The dialog named by a Refer-To's `Replaces` header (RFC 3891), percent-decoded:
/// (Call-ID, to-tag, from-tag).
fn replaces_of(headers: &str) -> Option<(String, String, String)> {
    let value = headers.split('&').find_map(|h| {
        let (name, value) = h.split_once('=')?;
        name.eq_ignore_ascii_case("Replaces").then_some(value)
    })?;
    let decoded = percent_decode(value)?;
    let mut parts = decoded.split(';');
    let call_id = parts.next()?.trim().to_string();
    let (mut to_tag, mut from_tag) = (None, None);
    for p in parts {
        match p.trim().split_once('=') {
            Some((k, v)) if k.eq_ignore_ascii_case("to-tag") => to_tag = Some(v.to_string()),
            Some((k, v)) if k.eq_ignore_ascii_case("from-tag") => from_tag = Some(v.to_string()),
            _ => {}
        }
    }
    (!call_id.is_empty()).then_some(())?;
    Some((call_id, to_tag?, from_tag?))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn c_ended_by(side: Side) -> &'static str {
    match side {
        Side::A => "caller",
        Side::B => "callee",
    }
}

/// What the B2BUA supports, advertised in Allow.
/// The key and duration (ms) of a SIP INFO DTMF body: `application/dtmf-relay`
/// (`Signal=5` and `Duration=160` lines) or `application/dtmf` (the key alone). `Signal` may
/// be the key or its RFC 4733 code (`11` for `#`). None for anything else.
pub fn info_dtmf(content_type: &str, body: &str) -> Option<(char, u32)> {
    let key = |v: &str| {
        let v = v.trim();
        let mut chars = v.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => tandem_media::rfc4733::dtmf_event(c).map(|_| c.to_ascii_uppercase()),
            _ => tandem_media::rfc4733::dtmf_digit(v.parse().ok()?),
        }
    };
    if content_type.eq_ignore_ascii_case("application/dtmf") {
        return Some((key(body)?, DEFAULT_INFO_DURATION_MS));
    }
    if !content_type.eq_ignore_ascii_case("application/dtmf-relay") {
        return None;
    }
    let mut signal = None;
    let mut duration = DEFAULT_INFO_DURATION_MS;
    for line in body.lines() {
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "signal" => signal = Some(key(value)?),
            "duration" => duration = value.trim().parse().ok()?,
            _ => {}
        }
    }
    Some((signal?, duration))
}

/// When `req` is a SIP INFO carrying a DTMF key and the SDP of `leg`'s peer (`target_sdp`)
/// took telephone-event, the key as RFC 4733 events in the stream to that peer.
fn info_as_events(
    req: &Message,
    session: SessionId,
    target_sdp: &str,
    leg: LegIndex,
) -> Option<MediaOp> {
    let (key, duration_ms) = info_dtmf(req.content_type()?, req.body_str()?)?;
    let payload_type = contact_centre::telephone_event_pt(target_sdp)?;
    let send = tandem_dataplane::api::DtmfSend {
        keys: tandem_dataplane::api::DtmfKeys::new(&key.to_string())?,
        // Q.24's shortest press, up to five seconds.
        duration_ms: duration_ms.clamp(40, 5000) as u16,
        pause_ms: 100,
        volume: 8,
        via: tandem_dataplane::api::DtmfVia::Events {
            payload_type,
            clock_hz: 8000,
        },
    };
    Some(MediaOp::SendDtmf { session, leg, send })
}

/// A SIP INFO key without a `Duration`.
const DEFAULT_INFO_DURATION_MS: u32 = 250;

pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REGISTER";
/// Option tags a caller may Require of us.
const SUPPORTED_REQUIRE: [&str; 0] = [];
/// Headers copied onto a relayed in-dialog request.
const RELAYED_HEADERS: [&str; 4] = ["Event", "Info-Package", "Content-Disposition", "Subject"];

/// The caller's From (display name and URI, no tag or parameters) for the INVITEs we send on
/// its behalf.
fn caller_identity(remote: &str) -> String {
    let uri = name_addr_uri(remote);
    let display = remote
        .split('<')
        .next()
        .map(str::trim)
        .filter(|d| !d.is_empty() && remote.contains('<'))
        .map(|d| format!("{d} "))
        .unwrap_or_default();
    format!("{display}<{uri}>")
}

fn strip_tag(value: &str) -> String {
    match header_param(value, "tag") {
        Some(tag) => value.replace(&format!(";tag={tag}"), "").trim().to_string(),
        None => value.trim().to_string(),
    }
}

fn leg_params(media: &crate::sdp::Media) -> LegParams {
    LegParams {
        rtp: media.rtp_target(),
        rtcp: media.rtcp_target(),
        rtcp_mux: media.rtcp_mux,
        strict_source: false,
    }
}

fn first_audio_params(sdp: &str) -> Option<LegParams> {
    let sdp = Sdp::parse(sdp).ok()?;
    sdp.media.iter().find(|m| m.kind == "audio").map(leg_params)
}

/// Codec names of the first audio stream (`a=rtpmap` names, static payload types by number).
pub fn codec_names(sdp: &str) -> Vec<String> {
    let mut payloads: Vec<&str> = Vec::new();
    let mut names = Vec::new();
    let mut in_audio = false;
    for line in sdp.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            if in_audio {
                break;
            }
            in_audio = m.starts_with("audio");
            if in_audio {
                payloads = m.split_whitespace().skip(3).collect();
            }
        } else if in_audio {
            if let Some(map) = line.strip_prefix("a=rtpmap:") {
                if let Some((pt, name)) = map.split_once(' ') {
                    if payloads.contains(&pt) {
                        names.push((
                            pt.to_string(),
                            name.split('/').next().unwrap_or(name).to_string(),
                        ));
                    }
                }
            }
        }
    }
    payloads
        .iter()
        .map(|pt| {
            names
                .iter()
                .find(|(p, _)| p == pt)
                .map(|(_, n)| n.clone())
                .unwrap_or_else(|| match *pt {
                    "0" => "PCMU".into(),
                    "8" => "PCMA".into(),
                    "9" => "G722".into(),
                    "18" => "G729".into(),
                    other => other.to_string(),
                })
        })
        .collect()
}
