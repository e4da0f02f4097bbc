//! RFC 3261 §17 transactions with RFC 6026's Accepted states, sans-IO.
//!
//! The layer takes `now` and inputs (bytes received, requests and responses from the TU, timer
//! ticks) and queues [`Output`]s; it owns no socket and reads no clock. Timers A–K (and RFC 6026
//! L and M) are deadlines kept per transaction; [`TransactionLayer::next_deadline`] tells the shell
//! when to call [`TransactionLayer::on_timer`]. Over reliable transports the retransmit timers are
//! not armed and the wait timers D, I, J and K are zero, as §17 prescribes.

use super::message::{Message, Method, StartLine, Via};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    pub fn parse(name: &str) -> Option<Transport> {
        match name.to_ascii_uppercase().as_str() {
            "UDP" => Some(Transport::Udp),
            "TCP" => Some(Transport::Tcp),
            "TLS" => Some(Transport::Tls),
            _ => None,
        }
    }
}

/// The far end of one hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: Transport,
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, Copy)]
pub struct Timers {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerTxId(pub u64);
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientTxId(pub u64);

#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Send {
        peer: Peer,
        bytes: Vec<u8>,
    },
    /// A new request for the TU. `tx` is `None` for an ACK to a 2xx (end to end, no transaction).
    Request {
        tx: Option<ServerTxId>,
        message: Message,
        peer: Peer,
    },
    /// A response to one of our requests: every provisional, the first non-2xx final, and every
    /// 2xx (RFC 6026: retransmitted and forked 2xx reach the TU, which answers each with ACK).
    Response {
        tx: ClientTxId,
        message: Message,
    },
    /// Timer B or F fired: the TU maps it to 408.
    Timeout {
        tx: ClientTxId,
    },
    /// The INVITE whose server transaction this is was cancelled; the layer already answered the
    /// CANCEL with 200, the TU now answers the INVITE with 487.
    Cancelled {
        invite: ServerTxId,
    },
    /// Our 2xx to an INVITE was retransmitted for 64*T1 without an ACK (RFC 3261 §13.3.1.4): the
    /// TU confirms and then ends the dialog with BYE.
    AckTimeout {
        invite: ServerTxId,
    },
    /// A datagram that could not be read and could not be answered.
    Dropped {
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    Trying,
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
}

struct ServerTx {
    key: String,
    invite: bool,
    state: ServerState,
    peer: Peer,
    last_response: Option<Vec<u8>>,
    /// For matching the ACK of a 2xx, which carries a new branch.
    dialog_key: Option<(String, u32)>,
    retransmit_at: Option<Instant>,
    interval: Duration,
    end_at: Option<Instant>,
    acked: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    Calling,
    Proceeding,
    Completed,
    Accepted,
}

struct ClientTx {
    key: String,
    invite: bool,
    request: Message,
    bytes: Vec<u8>,
    peer: Peer,
    state: ClientState,
    retransmit_at: Option<Instant>,
    interval: Duration,
    end_at: Option<Instant>,
    /// The TU asked to CANCEL before any provisional arrived (§9.1: wait for one).
    cancel_pending: bool,
}

pub struct TransactionLayer {
    timers: Timers,
    /// Host (and port) we put in our Via headers, per transport.
    via_sent_by: HashMap<Transport, String>,
    server: HashMap<u64, ServerTx>,
    server_by_key: HashMap<String, u64>,
    accepted_by_dialog: HashMap<(String, u32), u64>,
    client: HashMap<u64, ClientTx>,
    client_by_key: HashMap<String, u64>,
    deadlines: BinaryHeap<Reverse<(Instant, bool, u64)>>,
    next_id: u64,
    branch_seed: u64,
    outputs: Vec<Output>,
}

fn server_key(msg: &Message, via: &Via) -> String {
    let method = match msg.method() {
        Some(Method::Ack) | Some(Method::Cancel) => "INVITE".to_string(),
        Some(m) => m.to_string(),
        None => String::new(),
    };
    let cancel = if msg.method() == Some(&Method::Cancel) {
        "|cancel"
    } else {
        ""
    };
    match via.branch().filter(|b| b.starts_with("z9hG4bK")) {
        Some(branch) => format!("{branch}|{}|{method}{cancel}", via.host_port()),
        // RFC 2543 peers: no usable branch, fall back to the dialog identifiers.
        None => format!(
            "{}|{}|{}|{method}{cancel}",
            msg.call_id(),
            msg.from_tag().unwrap_or_default(),
            msg.cseq().map(|c| c.0).unwrap_or_default()
        ),
    }
}

fn client_key(branch: &str, method: &Method) -> String {
    let method = match method {
        Method::Ack => "INVITE",
        m => m.as_str(),
    };
    format!("{branch}|{method}")
}

impl TransactionLayer {
    pub fn new(timers: Timers, branch_seed: u64) -> TransactionLayer {
        TransactionLayer {
            timers,
            via_sent_by: HashMap::new(),
            server: HashMap::new(),
            server_by_key: HashMap::new(),
            accepted_by_dialog: HashMap::new(),
            client: HashMap::new(),
            client_by_key: HashMap::new(),
            deadlines: BinaryHeap::new(),
            next_id: 1,
            branch_seed,
            outputs: Vec::new(),
        }
    }

    pub fn set_sent_by(&mut self, transport: Transport, sent_by: String) {
        self.via_sent_by.insert(transport, sent_by);
    }

    pub fn timers(&self) -> Timers {
        self.timers
    }

    pub fn drain(&mut self) -> std::vec::Drain<'_, Output> {
        self.outputs.drain(..)
    }

    pub fn active(&self) -> (usize, usize) {
        (self.server.len(), self.client.len())
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn new_branch(&mut self) -> String {
        let id = self.id();
        format!("z9hG4bK{:x}{:x}", self.branch_seed, id)
    }

    fn arm(&mut self, at: Instant, server: bool, id: u64) {
        self.deadlines.push(Reverse((at, server, id)));
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Bytes from the network.
    pub fn receive(&mut self, now: Instant, bytes: &[u8], peer: Peer) {
        // RFC 5626 keep-alives.
        if bytes.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            return;
        }
        let mut message = match Message::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                match e.partial {
                    Some(request) if request.method() != Some(&Method::Ack) => {
                        let response = Message::response_to(&request, 400, None)
                            .with_reason(&format!("Bad Request ({})", e.reason));
                        self.send_response_stateless(&request, response, peer);
                    }
                    _ => self.outputs.push(Output::Dropped {
                        reason: e.reason.clone(),
                    }),
                }
                return;
            }
        };
        if message.is_request() {
            message.stamp_received(peer.addr);
            self.receive_request(now, message, peer);
        } else {
            self.receive_response(now, message);
        }
    }

    fn response_peer(request: &Message, peer: Peer) -> Peer {
        if peer.transport.is_reliable() {
            return peer;
        }
        let addr = request
            .top_via()
            .and_then(|v| v.response_target())
            .unwrap_or(peer.addr);
        Peer {
            transport: peer.transport,
            addr,
        }
    }

    fn send_response_stateless(&mut self, request: &Message, response: Message, peer: Peer) {
        let peer = Self::response_peer(request, peer);
        self.outputs.push(Output::Send {
            peer,
            bytes: response.to_bytes(),
        });
    }

    fn receive_request(&mut self, now: Instant, message: Message, peer: Peer) {
        let Some(via) = message.top_via() else { return };
        let key = server_key(&message, &via);
        let method = message
            .method()
            .cloned()
            .unwrap_or(Method::Other(String::new()));

        if let Some(&id) = self.server_by_key.get(&key) {
            let tx = self.server.get_mut(&id).expect("index and table agree");
            match (&method, tx.state) {
                (Method::Ack, ServerState::Completed) => {
                    tx.state = ServerState::Confirmed;
                    tx.retransmit_at = None;
                    let wait = if tx.peer.transport.is_reliable() {
                        Duration::ZERO
                    } else {
                        self.timers.t4
                    };
                    tx.end_at = Some(now + wait);
                    self.arm(now + wait, true, id);
                }
                (Method::Ack, _) => {}
                _ => {
                    // A retransmitted request: repeat the last response, if any.
                    if let Some(bytes) = &tx.last_response {
                        let send = Output::Send {
                            peer: tx.peer,
                            bytes: bytes.clone(),
                        };
                        self.outputs.push(send);
                    }
                }
            }
            return;
        }

        match method {
            Method::Ack => {
                // The ACK of a 2xx: a new transaction of its own, matched to the INVITE by dialog.
                let dialog = (
                    message.call_id().to_string(),
                    message.cseq().map_or(0, |c| c.0),
                );
                if let Some(id) = self.accepted_by_dialog.get(&dialog).copied() {
                    if let Some(tx) = self.server.get_mut(&id) {
                        tx.acked = true;
                        tx.retransmit_at = None;
                    }
                }
                self.outputs.push(Output::Request {
                    tx: None,
                    message,
                    peer,
                });
            }
            Method::Cancel => {
                let invite_key = key.trim_end_matches("|cancel").to_string();
                let invite = self.server_by_key.get(&invite_key).copied().filter(|id| {
                    self.server
                        .get(id)
                        .is_some_and(|tx| tx.state == ServerState::Proceeding)
                });
                let id = self.create_server_tx(now, key, false, &message, peer);
                let code = if invite.is_some() { 200 } else { 481 };
                let response = Message::response_to(&message, code, None);
                self.respond(now, ServerTxId(id), response);
                if let Some(invite) = invite {
                    self.outputs.push(Output::Cancelled {
                        invite: ServerTxId(invite),
                    });
                }
            }
            _ => {
                let invite = method == Method::Invite;
                let id = self.create_server_tx(now, key, invite, &message, peer);
                if invite {
                    // §17.2.1: a 100 at once stops the client's INVITE retransmissions.
                    let trying = Message::response_to(&message, 100, None);
                    self.respond(now, ServerTxId(id), trying);
                }
                self.outputs.push(Output::Request {
                    tx: Some(ServerTxId(id)),
                    message,
                    peer,
                });
            }
        }
    }

    fn create_server_tx(
        &mut self,
        now: Instant,
        key: String,
        invite: bool,
        request: &Message,
        peer: Peer,
    ) -> u64 {
        let id = self.id();
        let dialog_key = invite.then(|| {
            (
                request.call_id().to_string(),
                request.cseq().map_or(0, |c| c.0),
            )
        });
        self.server_by_key.insert(key.clone(), id);
        self.server.insert(
            id,
            ServerTx {
                key,
                invite,
                state: if invite {
                    ServerState::Proceeding
                } else {
                    ServerState::Trying
                },
                peer: Self::response_peer(request, peer),
                last_response: None,
                dialog_key,
                retransmit_at: None,
                interval: self.timers.t1,
                // A transaction the TU never answers must not live forever.
                end_at: Some(now + self.timers.t1 * 64 * 6),
                acked: false,
            },
        );
        self.arm(now + self.timers.t1 * 64 * 6, true, id);
        id
    }

    /// The TU answers a request. Responses to finished transactions are ignored.
    pub fn respond(&mut self, now: Instant, tx: ServerTxId, response: Message) {
        let Some(code) = response.status() else {
            return;
        };
        let reliable;
        let t1 = self.timers.t1;
        let bytes = response.to_bytes();
        {
            let Some(state) = self.server.get_mut(&tx.0) else {
                return;
            };
            reliable = state.peer.transport.is_reliable();
            if matches!(
                state.state,
                ServerState::Completed | ServerState::Confirmed | ServerState::Accepted
            ) {
                return;
            }
            self.outputs.push(Output::Send {
                peer: state.peer,
                bytes: bytes.clone(),
            });
            state.last_response = Some(bytes);
            if code < 200 {
                if state.state == ServerState::Trying {
                    state.state = ServerState::Proceeding;
                }
                return;
            }
        }
        let state = self.server.get_mut(&tx.0).expect("checked above");
        let end_wait;
        if state.invite && code < 300 {
            state.state = ServerState::Accepted;
            state.retransmit_at = Some(now + t1);
            state.interval = t1;
            end_wait = t1 * 64;
            if let Some(dialog) = state.dialog_key.clone() {
                self.accepted_by_dialog.insert(dialog, tx.0);
            }
            self.arm(now + t1, true, tx.0);
        } else if state.invite {
            state.state = ServerState::Completed;
            if !reliable {
                state.retransmit_at = Some(now + t1);
                state.interval = t1;
                self.arm(now + t1, true, tx.0);
            }
            end_wait = t1 * 64;
        } else {
            state.state = ServerState::Completed;
            end_wait = if reliable { Duration::ZERO } else { t1 * 64 };
        }
        let state = self.server.get_mut(&tx.0).expect("checked above");
        state.end_at = Some(now + end_wait);
        self.arm(now + end_wait, true, tx.0);
    }

    /// Sends a request in a new client transaction. The layer adds the top Via (with a fresh
    /// branch unless `branch` is given, as CANCEL needs) and Max-Forwards when absent.
    pub fn send_request(
        &mut self,
        now: Instant,
        mut request: Message,
        peer: Peer,
        branch: Option<String>,
    ) -> ClientTxId {
        let method = request.method().cloned().unwrap_or(Method::Options);
        let branch = branch.unwrap_or_else(|| self.new_branch());
        self.add_via(&mut request, peer.transport, &branch);
        if request.get("Max-Forwards").is_none() {
            request.push("Max-Forwards", "70");
        }
        let bytes = request.to_bytes();
        let id = self.id();
        let invite = method == Method::Invite;
        let key = client_key(&branch, &method);
        self.outputs.push(Output::Send {
            peer,
            bytes: bytes.clone(),
        });
        let t1 = self.timers.t1;
        let retransmit_at = (!peer.transport.is_reliable()).then_some(now + t1);
        if let Some(at) = retransmit_at {
            self.arm(at, false, id);
        }
        self.arm(now + t1 * 64, false, id);
        self.client_by_key.insert(key.clone(), id);
        self.client.insert(
            id,
            ClientTx {
                key,
                invite,
                request,
                bytes,
                peer,
                state: ClientState::Calling,
                retransmit_at,
                interval: t1,
                end_at: Some(now + t1 * 64),
                cancel_pending: false,
            },
        );
        ClientTxId(id)
    }

    fn add_via(&self, request: &mut Message, transport: Transport, branch: &str) {
        let sent_by = self
            .via_sent_by
            .get(&transport)
            .cloned()
            .unwrap_or_else(|| "127.0.0.1".into());
        let via = format!(
            "SIP/2.0/{} {sent_by};branch={branch};rport",
            transport.via_name()
        );
        request.headers.insert(
            0,
            super::message::Header {
                name: "Via".into(),
                value: via,
            },
        );
    }

    /// Sends the ACK for a 2xx: end to end, outside any transaction, with its own branch.
    pub fn send_ack(&mut self, mut ack: Message, peer: Peer) -> Vec<u8> {
        let branch = self.new_branch();
        self.add_via(&mut ack, peer.transport, &branch);
        if ack.get("Max-Forwards").is_none() {
            ack.push("Max-Forwards", "70");
        }
        let bytes = ack.to_bytes();
        self.outputs.push(Output::Send {
            peer,
            bytes: bytes.clone(),
        });
        bytes
    }

    /// Resends bytes as they are (an ACK repeated for a retransmitted 2xx).
    pub fn resend(&mut self, peer: Peer, bytes: Vec<u8>) {
        self.outputs.push(Output::Send { peer, bytes });
    }

    /// Cancels a pending INVITE (§9.1). Before any provisional response the CANCEL waits.
    pub fn cancel(&mut self, now: Instant, invite: ClientTxId) {
        let Some(tx) = self.client.get_mut(&invite.0) else {
            return;
        };
        match tx.state {
            ClientState::Calling => tx.cancel_pending = true,
            ClientState::Proceeding => {
                let cancel = Self::build_cancel(&tx.request);
                let peer = tx.peer;
                let branch = tx
                    .request
                    .top_via()
                    .and_then(|v| v.branch().map(String::from));
                let mut cancel = cancel;
                cancel.remove("Via");
                self.send_request(now, cancel, peer, branch);
            }
            _ => {}
        }
    }

    fn build_cancel(invite: &Message) -> Message {
        let uri = invite.request_uri().unwrap_or_default().to_string();
        let mut cancel = Message::request(Method::Cancel, uri);
        for h in &invite.headers {
            match h.name.as_str() {
                "From" | "To" | "Call-ID" | "Route" | "Max-Forwards" => {
                    cancel.headers.push(h.clone())
                }
                _ => {}
            }
        }
        let number = invite.cseq().map_or(1, |c| c.0);
        cancel.push("CSeq", format!("{number} CANCEL"));
        cancel
    }

    fn receive_response(&mut self, now: Instant, message: Message) {
        let Some(via) = message.top_via() else { return };
        let Some((_, method)) = message.cseq() else {
            return;
        };
        let Some(branch) = via.branch() else { return };
        let key = client_key(branch, &method);
        let Some(&id) = self.client_by_key.get(&key) else {
            return; // stray or late response: §17.1.3 says discard.
        };
        let code = message.status().unwrap_or(0);
        let t1 = self.timers.t1;
        let tx = self.client.get_mut(&id).expect("index and table agree");
        let reliable = tx.peer.transport.is_reliable();
        match (tx.invite, tx.state, code) {
            (_, ClientState::Calling | ClientState::Proceeding, 100..=199) => {
                let first = tx.state == ClientState::Calling;
                tx.state = ClientState::Proceeding;
                if tx.invite {
                    tx.retransmit_at = None;
                    // Timer B only covers Calling; the TU owns the ringing time-out.
                    tx.end_at = None;
                } else if let Some(at) = tx.retransmit_at.as_mut() {
                    tx.interval = self.timers.t2;
                    *at = now + self.timers.t2;
                }
                let cancel = first && tx.cancel_pending;
                if let Some(at) = tx.retransmit_at {
                    self.arm(at, false, id);
                }
                self.outputs.push(Output::Response {
                    tx: ClientTxId(id),
                    message,
                });
                if cancel {
                    self.cancel(now, ClientTxId(id));
                }
            }
            (true, ClientState::Calling | ClientState::Proceeding, 200..=299) => {
                tx.state = ClientState::Accepted;
                tx.retransmit_at = None;
                tx.end_at = Some(now + t1 * 64);
                self.arm(now + t1 * 64, false, id);
                self.outputs.push(Output::Response {
                    tx: ClientTxId(id),
                    message,
                });
            }
            (true, ClientState::Accepted, 200..=299) => {
                self.outputs.push(Output::Response {
                    tx: ClientTxId(id),
                    message,
                });
            }
            (true, ClientState::Calling | ClientState::Proceeding, 300..) => {
                let ack = Self::non_2xx_ack(&tx.request, &message);
                let peer = tx.peer;
                tx.state = ClientState::Completed;
                tx.retransmit_at = None;
                let wait = if reliable {
                    Duration::ZERO
                } else {
                    Duration::from_secs(32)
                };
                tx.end_at = Some(now + wait);
                self.arm(now + wait, false, id);
                self.outputs.push(Output::Send {
                    peer,
                    bytes: ack.to_bytes(),
                });
                self.outputs.push(Output::Response {
                    tx: ClientTxId(id),
                    message,
                });
            }
            (true, ClientState::Completed, 300..) => {
                // A retransmitted final: ACK again, tell nobody.
                let ack = Self::non_2xx_ack(&tx.request, &message);
                let peer = tx.peer;
                self.outputs.push(Output::Send {
                    peer,
                    bytes: ack.to_bytes(),
                });
            }
            (false, ClientState::Calling | ClientState::Proceeding, 200..) => {
                tx.state = ClientState::Completed;
                tx.retransmit_at = None;
                let wait = if reliable {
                    Duration::ZERO
                } else {
                    self.timers.t4
                };
                tx.end_at = Some(now + wait);
                self.arm(now + wait, false, id);
                self.outputs.push(Output::Response {
                    tx: ClientTxId(id),
                    message,
                });
            }
            _ => {}
        }
    }

    /// §17.1.1.3: the ACK for a non-2xx final shares the INVITE's branch and takes the To tag of
    /// the response.
    fn non_2xx_ack(invite: &Message, response: &Message) -> Message {
        let uri = invite.request_uri().unwrap_or_default().to_string();
        let mut ack = Message::request(Method::Ack, uri);
        for h in &invite.headers {
            match h.name.as_str() {
                "Call-ID" | "From" | "Route" | "Max-Forwards" => ack.headers.push(h.clone()),
                _ => {}
            }
        }
        if let Some(via) = invite.get_all("Via").next() {
            ack.headers.insert(
                0,
                super::message::Header {
                    name: "Via".into(),
                    value: via.to_string(),
                },
            );
        }
        if let Some(to) = response.get("To") {
            ack.push("To", to);
        }
        let number = invite.cseq().map_or(1, |c| c.0);
        ack.push("CSeq", format!("{number} ACK"));
        ack
    }

    pub fn on_timer(&mut self, now: Instant) {
        while let Some(Reverse((at, server, id))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            if server {
                self.server_timer(now, id);
            } else {
                self.client_timer(now, id);
            }
        }
    }

    fn server_timer(&mut self, now: Instant, id: u64) {
        let t2 = self.timers.t2;
        let Some(tx) = self.server.get_mut(&id) else {
            return;
        };
        if tx.end_at.is_some_and(|end| end <= now) {
            let tx = self.server.remove(&id).expect("present");
            self.server_by_key.remove(&tx.key);
            if let Some(dialog) = &tx.dialog_key {
                if self.accepted_by_dialog.get(dialog) == Some(&id) {
                    self.accepted_by_dialog.remove(dialog);
                }
            }
            if tx.state == ServerState::Accepted && !tx.acked {
                self.outputs.push(Output::AckTimeout {
                    invite: ServerTxId(id),
                });
            }
            return;
        }
        if let Some(at) = tx.retransmit_at.filter(|at| *at <= now) {
            // Timer G (non-2xx) or the §13.3.1.4 2xx retransmission: double up to T2.
            let _ = at;
            if let Some(bytes) = &tx.last_response {
                self.outputs.push(Output::Send {
                    peer: tx.peer,
                    bytes: bytes.clone(),
                });
            }
            tx.interval = (tx.interval * 2).min(t2);
            let next = now + tx.interval;
            tx.retransmit_at = Some(next);
            self.arm(next, true, id);
        }
    }

    fn client_timer(&mut self, now: Instant, id: u64) {
        let t2 = self.timers.t2;
        let Some(tx) = self.client.get_mut(&id) else {
            return;
        };
        if tx.end_at.is_some_and(|end| end <= now) {
            let tx = self.client.remove(&id).expect("present");
            self.client_by_key.remove(&tx.key);
            if matches!(tx.state, ClientState::Calling | ClientState::Proceeding) {
                self.outputs.push(Output::Timeout { tx: ClientTxId(id) });
            }
            return;
        }
        if tx.retransmit_at.is_some_and(|at| at <= now) {
            // Timer A doubles without bound; Timer E doubles up to T2.
            self.outputs.push(Output::Send {
                peer: tx.peer,
                bytes: tx.bytes.clone(),
            });
            tx.interval = if tx.invite {
                tx.interval * 2
            } else {
                (tx.interval * 2).min(t2)
            };
            let next = now + tx.interval;
            tx.retransmit_at = Some(next);
            self.arm(next, false, id);
        }
    }

    pub fn client_peer(&self, tx: ClientTxId) -> Option<Peer> {
        self.client.get(&tx.0).map(|t| t.peer)
    }

    /// The request a client transaction sent (for building ACK, CANCEL and retries).
    pub fn client_request(&self, tx: ClientTxId) -> Option<&Message> {
        self.client.get(&tx.0).map(|t| &t.request)
    }
}

/// Which kind of message a datagram holds, for metrics before parsing succeeds.
pub fn start_line_kind(message: &Message) -> (&str, Option<u16>) {
    match &message.start {
        StartLine::Request { method, .. } => (method.as_str(), None),
        StartLine::Response { code, .. } => ("", Some(*code)),
    }
}
