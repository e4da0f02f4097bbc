//! The I/O shell around [`Engine`]: UDP and TCP sockets, the data plane, the clock.
//!
//! One task owns the engine and feeds it datagrams, frames read by per-connection TCP tasks,
//! data-plane results and timer ticks; it then carries out what the engine asked for. Data-plane
//! requests run as their own tasks so a slow core never stalls signalling.
//!
//! Durable call records: the messages the engine sends while a call ends (the 200 to a BYE, the
//! BYE to the other side) are held until that call's record is committed to storage, so a peer
//! that saw its call finish can rely on the record existing even if the process dies a moment
//! later. Records are written in groups (one transaction for whatever is queued), so the hold
//! costs one commit, not one per call.

use super::b2bua::{Action, CallId, CallRecord, Engine, MediaOp, Now, SipEvent};
use super::message::{stream_frame_len, MAX_MESSAGE_BYTES};
use super::queues::{AcdRefusal, AcdReply};
use super::transaction::{Peer, Transport};
use crate::media::{DataPlaneClient, TimedOut};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tandem_dataplane::api::{CoreError, LegIndex, SessionId, SessionStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};

/// A finished call for storage; `done` is answered once it is durable.
pub struct CdrJob {
    pub record: CallRecord,
    pub done: oneshot::Sender<()>,
}

/// How the SIP shell is joined to the rest of the appliance.
#[derive(Default)]
pub struct Wiring {
    /// Finished calls; replies are held until each record is durable. None: not held.
    pub cdr: Option<mpsc::Sender<CdrJob>>,
    /// Call and registration events for the API's WebSocket and webhooks.
    pub events: Option<Arc<crate::api::events::EventHub>>,
    /// Directory changes from the API (whole directories and single accounts).
    pub directory: Option<mpsc::UnboundedReceiver<super::config::DirectoryUpdate>>,
    /// Where the ACD's queue log, agent state changes and screen-pops go (storage, WebSocket).
    pub acd_events: Option<mpsc::UnboundedSender<super::queues::AcdEvent>>,
    /// Agent actions and status queries from the API, answered by the engine's ACD.
    pub acd_requests: Option<mpsc::Receiver<super::queues::AcdRequest>>,
    /// Where the generation of each applied whole directory is reported.
    pub directory_applied: Option<Arc<tokio::sync::watch::Sender<u64>>>,
}

/// Longest a reply waits for its call record; past it the reply goes anyway (storage is down
/// or slow) and `tandem_sip_cdr_hold_expired_total` counts it.
const CDR_HOLD: std::time::Duration = std::time::Duration::from_secs(2);

/// Messages held back until the calls they end have durable records.
struct HeldBatch {
    waiting: Vec<CallId>,
    since: Instant,
    sends: Vec<(Peer, Vec<u8>)>,
}

/// Recent call records, newest last, until storage takes them.
pub struct CallRecords {
    records: Mutex<VecDeque<CallRecord>>,
    capacity: usize,
}

impl CallRecords {
    pub fn new(capacity: usize) -> CallRecords {
        CallRecords {
            records: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity,
        }
    }

    pub fn push(&self, record: CallRecord) {
        if let Ok(mut r) = self.records.lock() {
            if r.len() == self.capacity {
                r.pop_front();
            }
            r.push_back(record);
        }
    }

    pub fn recent(&self, limit: usize) -> Vec<CallRecord> {
        self.records
            .lock()
            .map(|r| r.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default()
    }
}

enum Inbound {
    Stream {
        bytes: Vec<u8>,
        peer: Peer,
    },
    Accepted(SocketAddr, mpsc::Sender<Vec<u8>>),
    Closed(SocketAddr),
    Created {
        call: CallId,
        result: Result<(SessionId, [u16; 2]), CoreError>,
    },
    Deleted {
        call: CallId,
        stats: Option<Box<SessionStats>>,
    },
    Durable(CallId),
    SupervisorCreated {
        call: CallId,
        result: Result<(SessionId, [u16; 2]), CoreError>,
    },
    SupervisorAttached {
        call: CallId,
        result: Result<(), CoreError>,
    },
    ConferenceJoined {
        call: CallId,
        result: Result<(), CoreError>,
    },
}

/// The wall and monotonic clocks, read once for one input to the engine.
pub fn now() -> Now {
    Now {
        mono: Instant::now(),
        unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    }
}

pub struct Listeners {
    pub udp: Option<UdpSocket>,
    pub tcp: Option<TcpListener>,
    pub tls: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
}

pub async fn run(
    mut engine: Engine,
    listeners: Listeners,
    media: Arc<DataPlaneClient>,
    mut timeouts: mpsc::Receiver<TimedOut>,
    records: Arc<CallRecords>,
    mut wiring: Wiring,
) {
    let (inbox_tx, mut inbox) = mpsc::channel::<Inbound>(4096);
    let mut streams: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
    if let Some(listener) = listeners.tcp {
        let inbox = inbox_tx.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, addr)) = listener.accept().await else {
                    continue;
                };
                let writer = spawn_connection(stream, addr, Transport::Tcp, inbox.clone());
                if inbox.send(Inbound::Accepted(addr, writer)).await.is_err() {
                    break;
                }
            }
        });
    }
    if let Some((listener, acceptor)) = listeners.tls {
        let inbox = inbox_tx.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, addr)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, inbox) = (acceptor.clone(), inbox.clone());
                // Handshakes run on their own, so a slow or hostile client stalls nobody.
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(stream),
                    );
                    match handshake.await {
                        Ok(Ok(tls)) => {
                            let writer = spawn_connection(tls, addr, Transport::Tls, inbox.clone());
                            let _ = inbox.send(Inbound::Accepted(addr, writer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!("SIP TLS handshake with {addr}: {e}"),
                        Err(_) => tracing::debug!("SIP TLS handshake with {addr} timed out"),
                    }
                });
            }
        });
    }
    run_loop(
        &mut engine,
        listeners.udp,
        &media,
        &mut timeouts,
        &records,
        &inbox_tx,
        &mut inbox,
        &mut streams,
        &mut wiring,
    )
    .await;
}

#[allow(clippy::too_many_arguments)]
async fn run_loop(
    engine: &mut Engine,
    udp: Option<UdpSocket>,
    media: &Arc<DataPlaneClient>,
    timeouts: &mut mpsc::Receiver<TimedOut>,
    records: &Arc<CallRecords>,
    inbox_tx: &mpsc::Sender<Inbound>,
    inbox: &mut mpsc::Receiver<Inbound>,
    streams: &mut HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    wiring: &mut Wiring,
) {
    let mut buf = vec![0u8; MAX_MESSAGE_BYTES + 1];
    let mut held: Vec<HeldBatch> = Vec::new();
    let mut recent_accounts: VecDeque<(u64, Instant, super::config::AccountChange)> =
        VecDeque::new();
    let mut hold_check = tokio::time::interval(std::time::Duration::from_millis(250));
    let mut dtmf = media.subscribe_dtmf();
    let mut dtmf_open = true;
    loop {
        let deadline = tokio::time::Instant::from_std(engine.next_deadline());
        let directory = async {
            match wiring.directory.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let acd_request = async {
            match wiring.acd_requests.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            key = dtmf.recv(), if dtmf_open => match key {
                Ok(key) => engine.media_dtmf(now(), key.id, key.leg, key.digit),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("{n} DTMF keys from the data plane dropped (SIP task behind)");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    dtmf_open = false;
                    continue;
                }
            },
            Some(request) = acd_request => {
                let super::queues::AcdRequest { tenant, op, reply } = request;
                match engine.acd_request(now(), &tenant, op) {
                    Ok(AcdReply::Calls(calls)) => {
                        let sessions = calls.iter().map(|c| engine.call_session(c.call)).collect();
                        tokio::spawn(answer_with_quality(media.clone(), calls, sessions, reply));
                    }
                    answer => {
                        let _ = reply.send(answer);
                    }
                }
            }
            Some(update) = directory => {
                let generation = match &update {
                    super::config::DirectoryUpdate::Full { generation, .. } => Some(*generation),
                    super::config::DirectoryUpdate::Account { .. } => None,
                };
                apply_directory(engine, &mut recent_accounts, update);
                if let (Some(g), Some(applied)) = (generation, &wiring.directory_applied) {
                    applied.send_if_modified(|v| {
                        let newer = g > *v;
                        *v = (*v).max(g);
                        newer
                    });
                }
                continue;
            }
            _ = hold_check.tick(), if !held.is_empty() => {
                let expired: Vec<HeldBatch> = extract(&mut held, |b| b.since.elapsed() >= CDR_HOLD);
                for batch in expired {
                    tracing::warn!("call records of {:?} not durable after {CDR_HOLD:?}; replying anyway", batch.waiting);
                    engine.metrics().cdr_hold_expired();
                    for (peer, bytes) in batch.sends {
                        transmit(peer, bytes, udp.as_ref(), streams, inbox_tx);
                    }
                }
                continue;
            }
            received = recv(udp.as_ref(), &mut buf) => {
                if let Some((n, from)) = received {
                    let peer = Peer { transport: Transport::Udp, addr: from };
                    if n > MAX_MESSAGE_BYTES {
                        continue; // truncated: unreadable by definition
                    }
                    engine.receive(now(), &buf[..n], peer);
                }
            }
            Some(message) = inbox.recv() => match message {
                Inbound::Stream { bytes, peer } => engine.receive(now(), &bytes, peer),
                Inbound::Accepted(addr, writer) => {
                    streams.insert(addr, writer);
                }
                Inbound::Closed(addr) => {
                    streams.remove(&addr);
                }
                Inbound::Created { call, result } => engine.media_created(now(), call, result),
                Inbound::Deleted { call, stats } => engine.media_deleted(call, stats.map(|s| *s)),
                Inbound::SupervisorCreated { call, result } => {
                    engine.supervisor_created(now(), call, result)
                }
                Inbound::SupervisorAttached { call, result } => {
                    engine.supervisor_attached(now(), call, result)
                }
                Inbound::ConferenceJoined { call, result } => {
                    engine.conference_joined(now(), call, result)
                }
                Inbound::Durable(call) => {
                    for batch in held.iter_mut() {
                        batch.waiting.retain(|c| *c != call);
                    }
                    for batch in extract(&mut held, |b| b.waiting.is_empty()) {
                        for (peer, bytes) in batch.sends {
                            transmit(peer, bytes, udp.as_ref(), streams, inbox_tx);
                        }
                    }
                    continue;
                }
            },
            Some((session, stats)) = timeouts.recv() => engine.media_timed_out(now(), session, stats),
            _ = tokio::time::sleep_until(deadline) => engine.on_timer(now()),
        }
        let actions: Vec<Action> = engine.drain().collect();
        // Calls ending in this batch: their messages wait for their records (see module doc).
        let ending: Vec<CallId> = if wiring.cdr.is_some() {
            actions
                .iter()
                .filter_map(|a| match a {
                    Action::Media(MediaOp::Delete { call, .. }) => Some(*call),
                    Action::Event(SipEvent::CallEnded(r)) => Some(r.call),
                    _ => None,
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut hold: Vec<(Peer, Vec<u8>)> = Vec::new();
        for action in actions {
            match action {
                Action::Send { peer, bytes } if !ending.is_empty() => hold.push((peer, bytes)),
                Action::Send { peer, bytes } => {
                    transmit(peer, bytes, udp.as_ref(), streams, inbox_tx)
                }
                Action::Media(op) => spawn_media(op, media.clone(), inbox_tx.clone()),
                Action::Event(event) => match event {
                    SipEvent::CallEnded(record) => {
                        tracing::debug!(
                            "call {} {} -> {} {} ({} by {})",
                            record.call,
                            record.caller,
                            record.dialled,
                            record.disposition.as_str(),
                            record.final_code,
                            record.ended_by
                        );
                        if let Some(media) = &record.media {
                            engine.metrics().call_quality(media);
                        }
                        records.push((*record).clone());
                        if let Some(cdr) = &wiring.cdr {
                            let (done, durable) = oneshot::channel();
                            let call = record.call;
                            let job = CdrJob {
                                record: *record,
                                done,
                            };
                            if cdr.try_send(job).is_err() {
                                tracing::error!(
                                    "call record queue full: record of call {call} not stored"
                                );
                                engine.metrics().cdr_dropped();
                            }
                            let inbox = inbox_tx.clone();
                            tokio::spawn(async move {
                                // Answered once durable; dropped unanswered if the write failed
                                // for good, in which case the hold expires.
                                if durable.await.is_ok() {
                                    let _ = inbox.send(Inbound::Durable(call)).await;
                                }
                            });
                        }
                    }
                    SipEvent::Monitor {
                        tenant,
                        kind,
                        detail,
                    } => {
                        if let Some(hub) = &wiring.events {
                            hub.publish(&tenant, kind, detail);
                        }
                    }
                    SipEvent::Acd(event) => {
                        if let Some(sink) = &wiring.acd_events {
                            let _ = sink.send(*event);
                        }
                    }
                    SipEvent::Registration(e) => {
                        tracing::info!("registration: {e:?}");
                        if let Some(hub) = &wiring.events {
                            publish_registration(hub, engine, &e);
                        }
                    }
                    SipEvent::CallOffered {
                        call,
                        tenant,
                        from,
                        to,
                    } => {
                        if let Some(hub) = &wiring.events {
                            hub.publish(
                                &tenant,
                                "call.offered",
                                serde_json::json!({"call": call, "from": from, "to": to}),
                            );
                        }
                    }
                    SipEvent::CallAnswered { call, tenant } => {
                        if let Some(hub) = &wiring.events {
                            hub.publish(
                                &tenant,
                                "call.answered",
                                serde_json::json!({"call": call}),
                            );
                        }
                    }
                },
            }
        }
        if !hold.is_empty() {
            held.push(HeldBatch {
                waiting: ending,
                since: Instant::now(),
                sends: hold,
            });
        }
    }
}

/// Applies a directory change. Account changes are remembered for a minute so that a whole
/// directory read before they were committed (and delivered after them) does not undo them.
fn apply_directory(
    engine: &mut Engine,
    recent: &mut VecDeque<(u64, Instant, super::config::AccountChange)>,
    update: super::config::DirectoryUpdate,
) {
    use super::config::DirectoryUpdate;
    let now = Instant::now();
    while recent
        .front()
        .is_some_and(|(_, at, _)| now.duration_since(*at) > std::time::Duration::from_secs(60))
    {
        recent.pop_front();
    }
    match update {
        DirectoryUpdate::Account { seq, change } => {
            engine.change_account(change.clone());
            recent.push_back((seq, now, change));
        }
        DirectoryUpdate::Full {
            directory, after, ..
        } => {
            engine.set_directory(self::now(), directory);
            for (_, _, change) in recent.iter().filter(|(seq, _, _)| *seq > after) {
                engine.change_account(change.clone());
            }
        }
    }
}

/// Removes and returns the batches matching `pred`, keeping the others in order.
fn extract(held: &mut Vec<HeldBatch>, pred: impl Fn(&HeldBatch) -> bool) -> Vec<HeldBatch> {
    let (out, keep): (Vec<_>, Vec<_>) = std::mem::take(held).into_iter().partition(|b| pred(b));
    *held = keep;
    out
}

fn publish_registration(
    hub: &crate::api::events::EventHub,
    engine: &Engine,
    e: &super::registrar::RegistrationEvent,
) {
    use super::registrar::RegistrationEvent as R;
    let (aor, contact, change, why) = match e {
        R::Added { aor, contact } => (aor, contact, "added", None),
        R::Refreshed { aor, contact } => (aor, contact, "refreshed", None),
        R::Removed { aor, contact, why } => (aor, contact, "removed", Some(*why)),
    };
    // Refreshes are routine and frequent: only real changes are events.
    if change == "refreshed" {
        return;
    }
    let domain = aor.rsplit('@').next().unwrap_or("");
    if let Some(tenant) = engine.tenant_by_domain(domain) {
        hub.publish(
            &tenant,
            "registration.changed",
            serde_json::json!({"aor": aor, "contact": contact, "change": change, "reason": why}),
        );
    }
}

fn transmit(
    peer: Peer,
    bytes: Vec<u8>,
    udp: Option<&UdpSocket>,
    streams: &mut HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    inbox_tx: &mpsc::Sender<Inbound>,
) {
    match peer.transport {
        Transport::Udp => {
            if let Some(socket) = udp {
                if let Err(e) = socket.try_send_to(&bytes, peer.addr) {
                    tracing::debug!("SIP send to {} failed: {e}", peer.addr);
                }
            }
        }
        Transport::Tcp => {
            let writer = streams
                .entry(peer.addr)
                .or_insert_with(|| connect(peer.addr, inbox_tx.clone()));
            if writer.try_send(bytes).is_err() {
                streams.remove(&peer.addr);
            }
        }
        Transport::Tls => {
            // Only over connections the peer opened: outbound TLS is not built.
            match streams.get(&peer.addr) {
                Some(writer) => {
                    if writer.try_send(bytes).is_err() {
                        streams.remove(&peer.addr);
                    }
                }
                None => tracing::debug!("no TLS connection to {}", peer.addr),
            }
        }
    }
}

async fn recv(socket: Option<&UdpSocket>, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await.ok(),
        None => std::future::pending().await,
    }
}

/// How long the live calls' quality queries may take together: the API waits 2 s for the
/// whole answer.
const LIVE_QUALITY_WAIT: std::time::Duration = std::time::Duration::from_millis(1000);

/// Answers the API's live calls with each leg's quality so far, asked of the calls' data-plane
/// cores one after another (off the SIP task: the engine goes on meanwhile). Calls not reached
/// within [`LIVE_QUALITY_WAIT`], or whose session has gone, are answered without it.
async fn answer_with_quality(
    media: Arc<DataPlaneClient>,
    mut calls: Vec<super::queues::LiveCallView>,
    sessions: Vec<Option<SessionId>>,
    reply: oneshot::Sender<Result<AcdReply, AcdRefusal>>,
) {
    let deadline = tokio::time::Instant::now() + LIVE_QUALITY_WAIT;
    for (call, session) in calls.iter_mut().zip(sessions) {
        let Some(session) = session else {
            continue;
        };
        let stats = match tokio::time::timeout_at(deadline, media.query(session)).await {
            Ok(Ok(stats)) => stats,
            Ok(Err(_)) => continue,
            Err(_) => break,
        };
        for (leg, stats) in call.legs.iter_mut().zip(&stats.legs) {
            let quality = crate::quality::json(&stats.quality);
            leg.quality = (!quality.is_null()).then_some(quality);
        }
    }
    let _ = reply.send(Ok(AcdReply::Calls(calls)));
}

fn spawn_media(op: MediaOp, media: Arc<DataPlaneClient>, inbox: mpsc::Sender<Inbound>) {
    spawn_in_order(async move {
        match op {
            MediaOp::Create { call, a, b } => {
                let result = media.create(a, b).await;
                let _ = inbox.send(Inbound::Created { call, result }).await;
            }
            MediaOp::Update {
                session,
                leg,
                params,
            } => {
                if let Err(e) = media.update(session, leg, params).await {
                    tracing::debug!("media update failed: {e:?}");
                }
            }
            MediaOp::Delete { call, session } => {
                let stats = media.delete(session).await.ok().map(Box::new);
                let _ = inbox.send(Inbound::Deleted { call, stats }).await;
            }
            MediaOp::Play {
                session,
                leg,
                clip,
                payload_type,
            } => {
                if let Err(e) = media.play(session, leg, clip, payload_type).await {
                    tracing::debug!("media play failed: {e:?}");
                }
            }
            MediaOp::PlaySequence {
                session,
                leg,
                once,
                then,
                payload_type,
            } => {
                let played = media.play_sequence(session, leg, once, then, payload_type);
                if let Err(e) = played.await {
                    tracing::debug!("media play-sequence failed: {e:?}");
                }
            }
            MediaOp::StopPlay { session, leg } => {
                if let Err(e) = media.stop_play(session, leg).await {
                    tracing::debug!("media stop-play failed: {e:?}");
                }
            }
            MediaOp::HoldRelay { session, leg, held } => {
                if let Err(e) = media.hold_relay(session, leg, held).await {
                    tracing::warn!("media hold-relay failed: {e:?}");
                }
            }
            MediaOp::SetCodecs { session, codecs } => {
                if let Err(e) = media.set_codecs(session, codecs).await {
                    tracing::warn!("media set-codecs failed: {e:?}");
                }
            }
            MediaOp::SetDtmf {
                session,
                leg,
                options,
            } => {
                if let Err(e) = media.set_dtmf(session, leg, options).await {
                    tracing::debug!("media set-dtmf failed: {e:?}");
                }
            }
            MediaOp::CreateInConference {
                call,
                conference,
                a,
            } => {
                let core = media.conference_core(conference);
                let none = tandem_dataplane::api::LegParams::default();
                let result = media.create_on(core, a, none).await;
                let _ = inbox.send(Inbound::Created { call, result }).await;
            }
            MediaOp::JoinConference {
                call,
                session,
                conference,
                codec,
            } => {
                let result = media.join_conference(session, conference, codec).await;
                let _ = inbox.send(Inbound::ConferenceJoined { call, result }).await;
            }
            MediaOp::CreateSupervisor { call, core } => {
                let none = tandem_dataplane::api::LegParams::default();
                let result = media.create_on(usize::from(core), none, none).await;
                let _ = inbox
                    .send(Inbound::SupervisorCreated { call, result })
                    .await;
            }
            MediaOp::AttachMonitor {
                call,
                session,
                supervisor,
                params,
                mode,
                codecs,
            } => {
                let result = match media.update(supervisor, LegIndex::A, params).await {
                    Ok(()) => {
                        media
                            .attach_monitor(session, supervisor, mode, codecs)
                            .await
                    }
                    Err(e) => Err(e),
                };
                let _ = inbox
                    .send(Inbound::SupervisorAttached { call, result })
                    .await;
            }
            MediaOp::SetMonitorMode { session, mode } => {
                if let Err(e) = media.set_monitor_mode(session, mode).await {
                    tracing::debug!("media set-monitor-mode failed: {e:?}");
                }
            }
            MediaOp::DeleteSupervisor { session } => {
                if let Err(e) = media.delete(session).await {
                    tracing::debug!("supervisor session delete failed: {e:?}");
                }
            }
            MediaOp::SendDtmf { session, leg, send } => {
                if let Err(e) = media.send_dtmf(session, leg, send).await {
                    tracing::debug!("media send-dtmf failed: {e:?}");
                }
            }
        }
    });
}

/// Spawns a data-plane request after running it here up to its first wait. Every request's
/// first step is pushing its command onto the core's ring, so commands reach the core in the
/// order the engine emitted them (a leg's new address before a codec plan, a play before its
/// stop) and before the engine's next SIP message goes out (the 200 OK that tells the peer
/// where to send): spawned tasks alone run in any order, and later.
fn spawn_in_order(request: impl std::future::Future<Output = ()> + Send + 'static) {
    let mut request = Box::pin(request);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    if request.as_mut().poll(&mut cx).is_pending() {
        // The spawned task polls it again at once, registering its real waker.
        tokio::spawn(request);
    }
}

/// Reader and writer tasks for one TCP or TLS connection; returns the writer's queue.
fn spawn_connection<S>(
    stream: S,
    addr: SocketAddr,
    transport: Transport,
    inbox: mpsc::Sender<Inbound>,
) -> mpsc::Sender<Vec<u8>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(256);
    let (mut reader, mut writer) = tokio::io::split(stream);
    tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if writer.write_all(&bytes).await.is_err() || writer.flush().await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        let peer = Peer { transport, addr };
        let mut pending: Vec<u8> = Vec::with_capacity(4096);
        let mut chunk = vec![0u8; 16 * 1024];
        'read: loop {
            let n = match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pending.extend_from_slice(&chunk[..n]);
            loop {
                // RFC 5626 keep-alive CRLFs between messages.
                let skip = pending
                    .iter()
                    .take_while(|b| matches!(b, b'\r' | b'\n'))
                    .count();
                pending.drain(..skip);
                match stream_frame_len(&pending) {
                    Ok(Some(len)) => {
                        let bytes: Vec<u8> = pending.drain(..len).collect();
                        if inbox.send(Inbound::Stream { bytes, peer }).await.is_err() {
                            break 'read;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        // A stream that cannot be framed cannot be resynchronised: close it.
                        tracing::debug!("SIP TCP {addr}: {e}; closing");
                        break 'read;
                    }
                }
            }
        }
        let _ = inbox.send(Inbound::Closed(addr)).await;
    });
    tx
}

/// An outbound TCP connection: the writer queue is usable at once, bytes wait for the connect.
fn connect(addr: SocketAddr, inbox: mpsc::Sender<Inbound>) -> mpsc::Sender<Vec<u8>> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(256);
    tokio::spawn(async move {
        let Ok(stream) = TcpStream::connect(addr).await else {
            let _ = inbox.send(Inbound::Closed(addr)).await;
            return;
        };
        let writer = spawn_connection(stream, addr, Transport::Tcp, inbox);
        while let Some(bytes) = rx.recv().await {
            if writer.send(bytes).await.is_err() {
                break;
            }
        }
    });
    tx
}

#[cfg(test)]
mod tests {
    use super::spawn_in_order;
    use std::sync::{Arc, Mutex};

    /// What each request does before its first wait happens in the order the requests were
    /// spawned, before `spawn_in_order` returns; the rest finishes on the runtime.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_start_in_the_order_they_are_spawned() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (done_tx, mut done_rx) = tokio::sync::mpsc::channel(100);
        for i in 0..100 {
            let (entries, done_tx) = (log.clone(), done_tx.clone());
            spawn_in_order(async move {
                entries.lock().unwrap().push(i);
                tokio::task::yield_now().await;
                done_tx.send(i).await.unwrap();
            });
            assert_eq!(log.lock().unwrap().len(), i + 1);
        }
        assert_eq!(*log.lock().unwrap(), (0..100).collect::<Vec<_>>());
        for _ in 0..100 {
            done_rx.recv().await.unwrap();
        }
    }
}
