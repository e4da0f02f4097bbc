//! The control plane's async client for the data-plane cores: turns ring commands and events
//! into request/response futures, and surfaces the cores' own reports (inactivity timeouts on
//! the channel `new` returns; DTMF keys to every [`DataPlaneClient::subscribe_dtmf`]; the
//! ends of play-once sequences to every [`DataPlaneClient::subscribe_play_done`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tandem_dataplane::api::{
    ClipSequence, Command, CoreError, DtmfOptions, Event, LegCodec, LegIndex, LegParams,
    MonitorMode, SessionId, SessionStats,
};
use tandem_dataplane::engine::{CommandSender, EventReceiver};
use tandem_dataplane::stats::CoreStats;
use tandem_dataplane::CoreHandle;
use tokio::io::unix::AsyncFd;
use tokio::sync::{broadcast, mpsc, oneshot};

/// How long a core may take to answer a command before the request fails.
const CORE_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// DTMF reports a slow subscriber may fall behind by before it loses the oldest (it is then
/// told how many with `RecvError::Lagged`).
const DTMF_BACKLOG: usize = 1024;

/// Ends of playback a slow subscriber may fall behind by, as for DTMF.
const PLAY_DONE_BACKLOG: usize = 1024;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Event>>>>;

pub struct DataPlaneClient {
    senders: Vec<Mutex<CommandSender>>,
    stats: Vec<Arc<CoreStats>>,
    pending: Pending,
    next_token: AtomicU64,
    advertise: IpAddr,
    dtmf: broadcast::Sender<Dtmf>,
    play_done: broadcast::Sender<PlayDone>,
}

/// A session a core ended by itself, with its final counters.
pub type TimedOut = (SessionId, SessionStats);

/// A DTMF key pressed on a leg [`DataPlaneClient::set_dtmf`] listens to; reported once,
/// when the key is released, however many ways the phone sent it.
pub type Dtmf = tandem_dataplane::dtmf::DtmfReport;

/// A play-once sequence ([`DataPlaneClient::play_sequence`] with `then` =
/// [`tandem_dataplane::api::PLAY_ONCE_ONLY`]) that sent its last frame and stopped by itself;
/// relaying to the leg has resumed. Not reported for playback stopped or replaced on request,
/// or ended with its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayDone {
    pub id: SessionId,
    pub leg: LegIndex,
    /// CLOCK_MONOTONIC nanoseconds of the core's pass that queued the last frame.
    pub at_ns: u64,
}

impl DataPlaneClient {
    /// Takes ownership of the cores' handles and spawns one event pump per core on the current
    /// tokio runtime. Timeouts reported by the cores arrive on the returned receiver.
    pub fn new(
        cores: Vec<CoreHandle>,
        advertise: IpAddr,
    ) -> std::io::Result<(Arc<Self>, mpsc::Receiver<TimedOut>)> {
        let pending: Pending = Arc::default();
        let (timeouts_tx, timeouts_rx) = mpsc::channel(4096);
        let (dtmf, _) = broadcast::channel(DTMF_BACKLOG);
        let (play_done, _) = broadcast::channel(PLAY_DONE_BACKLOG);
        let mut senders = Vec::new();
        let mut stats = Vec::new();
        for core in cores {
            let (tx, rx) = core.split();
            stats.push(tx.stats.clone());
            senders.push(Mutex::new(tx));
            let notify = rx.notify.try_clone()?;
            // SAFETY: `notify` is an OwnedFd moved into the AsyncFd, so it stays open and names
            // the same eventfd for the AsyncFd's whole life.
            let fd =
                unsafe { AsyncFd::register_with_interest(notify, tokio::io::Interest::READABLE) }
                    .map_err(|e| e.into_parts().1)?;
            let pump = EventPump {
                fd,
                rx,
                pending: pending.clone(),
                timeouts: timeouts_tx.clone(),
                dtmf: dtmf.clone(),
                play_done: play_done.clone(),
            };
            tokio::spawn(pump.run());
        }
        Ok((
            Arc::new(DataPlaneClient {
                senders,
                stats,
                pending,
                next_token: AtomicU64::new(1),
                advertise,
                dtmf,
                play_done,
            }),
            timeouts_rx,
        ))
    }

    pub fn advertised_address(&self) -> IpAddr {
        self.advertise
    }

    pub fn core_stats(&self) -> &[Arc<CoreStats>] {
        &self.stats
    }

    /// Every DTMF key the cores report from now on, for each front end that wants them (each
    /// ignores sessions it does not own). Keys reported while nobody subscribes are dropped.
    pub fn subscribe_dtmf(&self) -> broadcast::Receiver<Dtmf> {
        self.dtmf.subscribe()
    }

    /// Every play-once sequence the cores report ended from now on (see [`PlayDone`]), for
    /// each front end that wants them. Ends reported while nobody subscribes are dropped.
    pub fn subscribe_play_done(&self) -> broadcast::Receiver<PlayDone> {
        self.play_done.subscribe()
    }

    async fn request(
        &self,
        core: usize,
        make: impl FnOnce(u64) -> Command,
    ) -> Result<Event, CoreError> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(token, tx);
        let sent = {
            let sender = self.senders.get(core).ok_or(CoreError::UnknownSession)?;
            sender.lock().unwrap().send(make(token))
        };
        if sent.is_err() {
            self.pending.lock().unwrap().remove(&token);
            return Err(CoreError::Unresponsive);
        }
        match tokio::time::timeout(CORE_ANSWER_TIMEOUT, rx).await {
            Ok(Ok(Event::Failed { error, .. })) => Err(error),
            Ok(Ok(event)) => Ok(event),
            _ => {
                self.pending.lock().unwrap().remove(&token);
                Err(CoreError::Unresponsive)
            }
        }
    }

    /// The core with the most free budget takes the new session.
    fn pick_core(&self) -> usize {
        self.senders
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let budget = s.lock().unwrap().budget as u64;
                let active = self.stats[i].snapshot().sessions_active;
                (budget.saturating_sub(active), std::cmp::Reverse(i))
            })
            .max()
            .map(|(_, std::cmp::Reverse(i))| i)
            .unwrap_or(0)
    }

    pub async fn create(
        &self,
        a: LegParams,
        b: LegParams,
    ) -> Result<(SessionId, [u16; 2]), CoreError> {
        self.create_on(self.pick_core(), a, b).await
    }

    /// [`Self::create`] on a given core: a supervisor's session must live on the core of the
    /// call it monitors (see [`Self::attach_monitor`]).
    pub async fn create_on(
        &self,
        core: usize,
        a: LegParams,
        b: LegParams,
    ) -> Result<(SessionId, [u16; 2]), CoreError> {
        match self
            .request(core, |token| Command::Create { token, a, b })
            .await?
        {
            Event::Created { id, ports, .. } => Ok((id, ports)),
            _ => Err(CoreError::Unresponsive),
        }
    }

    pub async fn update(
        &self,
        id: SessionId,
        leg: LegIndex,
        params: LegParams,
    ) -> Result<(), CoreError> {
        match self
            .request(id.core as usize, |token| Command::Update {
                token,
                id,
                leg,
                params,
            })
            .await?
        {
            Event::Updated { .. } => Ok(()),
            _ => Err(CoreError::Unresponsive),
        }
    }

    pub async fn delete(&self, id: SessionId) -> Result<SessionStats, CoreError> {
        match self
            .request(id.core as usize, |token| Command::Delete { token, id })
            .await?
        {
            Event::Deleted { stats, .. } => Ok(stats),
            _ => Err(CoreError::Unresponsive),
        }
    }

    /// Plays clip `clip` (an index into the engine's `Config::clips`; 0 is the built-in hold
    /// melody unless configured otherwise) in a loop to `leg`'s peer, as PCMU (`payload_type`
    /// 0) or PCMA (8). Nothing is relayed to that leg until [`Self::stop_play`].
    pub async fn play(
        &self,
        id: SessionId,
        leg: LegIndex,
        clip: u16,
        payload_type: u8,
    ) -> Result<(), CoreError> {
        self.expect_updated(id, |token| Command::Play {
            token,
            id,
            leg,
            clip,
            payload_type,
        })
        .await
    }

    /// Plays the clips of `once` to `leg`'s peer, each once, then clip `then` in a loop, in the
    /// same RTP stream as what the leg was playing (an announcement between the hold music).
    /// With `then` = [`tandem_dataplane::api::PLAY_ONCE_ONLY`] nothing loops: the playback
    /// ends by itself after `once`, relaying resumes, and [`Self::subscribe_play_done`] hears it.
    pub async fn play_sequence(
        &self,
        id: SessionId,
        leg: LegIndex,
        once: ClipSequence,
        then: u16,
        payload_type: u8,
    ) -> Result<(), CoreError> {
        self.expect_updated(id, |token| Command::PlaySequence {
            token,
            id,
            leg,
            once,
            then,
            payload_type,
        })
        .await
    }

    /// Holds or releases relaying to `leg` (see `Command::HoldRelay`).
    pub async fn hold_relay(
        &self,
        id: SessionId,
        leg: LegIndex,
        held: bool,
    ) -> Result<(), CoreError> {
        self.expect_updated(id, |token| Command::HoldRelay {
            token,
            id,
            leg,
            held,
        })
        .await
    }

    /// Stops playing to `leg` (a no-op if it was not playing); relaying to it resumes.
    pub async fn stop_play(&self, id: SessionId, leg: LegIndex) -> Result<(), CoreError> {
        self.expect_updated(id, |token| Command::StopPlay { token, id, leg })
            .await
    }

    /// Sets the session's codec plan (`[A, B]`): transcoding when the codecs differ, plain
    /// relaying with `None`.
    pub async fn set_codecs(
        &self,
        id: SessionId,
        codecs: Option<[tandem_dataplane::api::LegCodec; 2]>,
    ) -> Result<(), CoreError> {
        self.expect_updated(id, |token| Command::SetCodecs { token, id, codecs })
            .await
    }

    /// Sets how `leg`'s DTMF is heard: its telephone-event payload type (from its SDP's
    /// `a=rtpmap:<pt> telephone-event/8000`), in-band detection, blocking towards the other
    /// leg. Keys pressed on that leg then arrive on [`Self::subscribe_dtmf`].
    pub async fn set_dtmf(
        &self,
        id: SessionId,
        leg: LegIndex,
        options: DtmfOptions,
    ) -> Result<(), CoreError> {
        self.expect_updated(id, |token| Command::SetDtmf {
            token,
            id,
            leg,
            options,
        })
        .await
    }

    /// Sends DTMF keys to `leg`'s peer inside the stream it receives.
    pub async fn send_dtmf(
        &self,
        id: SessionId,
        leg: LegIndex,
        send: tandem_dataplane::api::DtmfSend,
    ) -> Result<(), CoreError> {
        self.expect_updated(id, |token| Command::SendDtmf {
            token,
            id,
            leg,
            send,
        })
        .await
    }

    /// Attaches `supervisor` (a session made with [`Self::create_on`] on `call`'s core, leg A
    /// facing the supervisor's phone) to `call` in `mode`. `codecs`: what the caller (leg A),
    /// the agent (leg B) and the supervisor use.
    pub async fn attach_monitor(
        &self,
        call: SessionId,
        supervisor: SessionId,
        mode: MonitorMode,
        codecs: [LegCodec; 3],
    ) -> Result<(), CoreError> {
        if supervisor.core != call.core {
            return Err(CoreError::MonitorConflict);
        }
        self.expect_updated(call, |token| Command::AttachMonitor {
            token,
            id: call,
            supervisor,
            mode,
            codecs,
        })
        .await
    }

    /// Switches the mode of the supervisor attached to `call`, live.
    pub async fn set_monitor_mode(
        &self,
        call: SessionId,
        mode: MonitorMode,
    ) -> Result<(), CoreError> {
        self.expect_updated(call, |token| Command::SetMonitorMode {
            token,
            id: call,
            mode,
        })
        .await
    }

    /// Ends the monitor `id` (the call or the supervisor's session) takes part in; the
    /// supervisor's session stays until deleted.
    pub async fn detach_monitor(&self, id: SessionId) -> Result<(), CoreError> {
        self.expect_updated(id, |token| Command::DetachMonitor { token, id })
            .await
    }

    /// The core of conference room `conference`: every member's session is made there.
    pub fn conference_core(&self, conference: u32) -> usize {
        conference as usize % self.senders.len().max(1)
    }

    /// Session `id` (made on [`Self::conference_core`]) joins room `conference`, its peer
    /// speaking `codec`.
    pub async fn join_conference(
        &self,
        id: SessionId,
        conference: u32,
        codec: LegCodec,
    ) -> Result<(), CoreError> {
        self.expect_updated(id, |token| Command::JoinConference {
            token,
            id,
            conference,
            codec,
        })
        .await
    }

    async fn expect_updated(
        &self,
        id: SessionId,
        make: impl FnOnce(u64) -> Command,
    ) -> Result<(), CoreError> {
        match self.request(id.core as usize, make).await? {
            Event::Updated { .. } => Ok(()),
            _ => Err(CoreError::Unresponsive),
        }
    }

    pub async fn query(&self, id: SessionId) -> Result<SessionStats, CoreError> {
        match self
            .request(id.core as usize, |token| Command::Query { token, id })
            .await?
        {
            Event::Stats { stats, .. } => Ok(stats),
            _ => Err(CoreError::Unresponsive),
        }
    }
}

struct EventPump {
    fd: AsyncFd<std::os::fd::OwnedFd>,
    rx: EventReceiver,
    pending: Pending,
    timeouts: mpsc::Sender<TimedOut>,
    dtmf: broadcast::Sender<Dtmf>,
    play_done: broadcast::Sender<PlayDone>,
}

impl EventPump {
    async fn run(mut self) {
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                return;
            };
            tandem_dataplane::io::drain_eventfd(std::os::fd::AsRawFd::as_raw_fd(&self.rx.notify));
            guard.clear_ready();
            while let Ok(event) = self.rx.events.pop() {
                let token = match event {
                    Event::Created { token, .. }
                    | Event::Updated { token }
                    | Event::Deleted { token, .. }
                    | Event::Stats { token, .. }
                    | Event::Failed { token, .. } => token,
                    Event::TimedOut { id, stats } => {
                        // A full channel means the consumer is gone or stuck; the session is
                        // already gone from the core either way.
                        let _ = self.timeouts.try_send((id, stats));
                        continue;
                    }
                    Event::Dtmf {
                        id,
                        leg,
                        digit,
                        duration_ms,
                        source,
                        at_ns,
                    } => {
                        // No subscriber: nobody listens for keys, and that is no error.
                        let _ = self.dtmf.send(Dtmf {
                            id,
                            leg,
                            digit,
                            duration_ms,
                            source,
                            at_ns,
                        });
                        continue;
                    }
                    Event::PlayDone { id, leg, at_ns } => {
                        let _ = self.play_done.send(PlayDone { id, leg, at_ns });
                        continue;
                    }
                };
                if let Some(waiter) = self.pending.lock().unwrap().remove(&token) {
                    let _ = waiter.send(event);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tandem_dataplane::api::DtmfSource;
    use tandem_dataplane::{Config, DataPlane};

    fn event_packet(seq: u16, ts: u32, event: u8, end: bool, duration: u16) -> Vec<u8> {
        let mut p = vec![0x80, 101, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&[event, if end { 0x8a } else { 0x0a }]);
        p.extend_from_slice(&duration.to_be_bytes());
        p
    }

    /// One core of `cfg` (four sessions) behind a client, and a session whose leg A sends to
    /// a local phone: its socket, the session and its ports.
    async fn one_core_and_a_phone(
        cfg: Config,
    ) -> (
        DataPlane,
        Arc<DataPlaneClient>,
        tokio::net::UdpSocket,
        SessionId,
        [u16; 2],
    ) {
        let mut dp = DataPlane::start(&Config {
            cores: Some(1),
            sessions_per_core: Some(4),
            ..cfg
        })
        .unwrap();
        let (client, _timeouts) =
            DataPlaneClient::new(dp.take_cores(), "127.0.0.1".parse().unwrap()).unwrap();
        let phone = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let params = LegParams {
            rtp: Some(phone.local_addr().unwrap()),
            ..LegParams::default()
        };
        let (id, ports) = client.create(params, LegParams::default()).await.unwrap();
        (dp, client, phone, id, ports)
    }

    /// The client end to end against a real core: play and stop on a leg, and a key pressed
    /// on a leg with a telephone-event payload type reaching every subscriber once.
    #[tokio::test]
    async fn plays_stops_and_fans_out_dtmf() {
        let (dp, client, phone, id, ports) = one_core_and_a_phone(Config {
            port_min: 45000,
            port_max: 45399,
            ..Config::default()
        })
        .await;
        let ours = SocketAddr::from(([127, 0, 0, 1], ports[0]));

        // Hold music: clip 0 is the built-in melody.
        client.play(id, LegIndex::A, 0, 0).await.unwrap();
        let mut buf = [0u8; 256];
        let (n, from) = tokio::time::timeout(Duration::from_secs(2), phone.recv_from(&mut buf))
            .await
            .expect("a played packet")
            .unwrap();
        assert_eq!((n, from, buf[1]), (172, ours, 0x80));
        assert_eq!(
            client.play(id, LegIndex::A, 7, 0).await,
            Err(CoreError::UnknownClip)
        );
        client.stop_play(id, LegIndex::A).await.unwrap();

        let (mut first, mut second) = (client.subscribe_dtmf(), client.subscribe_dtmf());
        let options = DtmfOptions {
            event_payload_type: Some(101),
            ..DtmfOptions::default()
        };
        client.set_dtmf(id, LegIndex::A, options).await.unwrap();
        for (i, d) in [160u16, 320, 640, 640, 640].into_iter().enumerate() {
            let pkt = event_packet(i as u16, 3200, 9, i >= 2, d);
            phone.send_to(&pkt, ours).await.unwrap();
        }
        for rx in [&mut first, &mut second] {
            let got = tokio::time::timeout(Duration::from_secs(2), rx.recv())
                .await
                .expect("a DTMF report")
                .unwrap();
            assert_eq!(
                (got.id, got.leg, got.digit, got.duration_ms, got.source),
                (id, LegIndex::A, '9', 80, DtmfSource::Rfc4733)
            );
            assert!(rx.try_recv().is_err(), "reported once");
        }
        client.delete(id).await.unwrap();
        assert_eq!(
            client.stop_play(id, LegIndex::A).await,
            Err(CoreError::UnknownSession)
        );
        drop(client);
        dp.shutdown();
    }

    /// A play-once announcement: its frames reach the phone, then every subscriber hears that
    /// it ended, once; a looping one stopped on request is not reported.
    #[tokio::test]
    async fn reports_the_end_of_a_play_once_sequence() {
        // Three frames of silence-free PCM: 60 ms.
        let pcm: Vec<i16> = (0..3 * 160).map(|i| (i % 100) as i16 * 50).collect();
        let short = Arc::new(tandem_dataplane::Clip::from_pcm("short", &pcm).unwrap());
        let (dp, client, phone, id, _) = one_core_and_a_phone(Config {
            port_min: 49180,
            port_max: 49199,
            clips: vec![tandem_dataplane::Clip::hold_music(), short],
            ..Config::default()
        })
        .await;
        let (mut first, mut second) = (client.subscribe_play_done(), client.subscribe_play_done());
        let once = ClipSequence::new(&[1]).unwrap();
        let only = tandem_dataplane::api::PLAY_ONCE_ONLY;
        assert_eq!(
            client
                .play_sequence(id, LegIndex::A, ClipSequence::EMPTY, only, 0)
                .await,
            Err(CoreError::UnknownClip),
            "nothing to play once"
        );
        client
            .play_sequence(id, LegIndex::A, once, only, 0)
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        for _ in 0..3 {
            let n = tokio::time::timeout(Duration::from_secs(2), phone.recv(&mut buf))
                .await
                .expect("a played packet")
                .unwrap();
            assert_eq!(n, 172);
        }
        for rx in [&mut first, &mut second] {
            let done = tokio::time::timeout(Duration::from_secs(2), rx.recv())
                .await
                .expect("the end of playback")
                .unwrap();
            assert_eq!((done.id, done.leg), (id, LegIndex::A));
            assert!(done.at_ns > 0);
        }
        // Looping music stopped on request: no report.
        client.play(id, LegIndex::A, 0, 0).await.unwrap();
        client.stop_play(id, LegIndex::A).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(first.try_recv().is_err() && second.try_recv().is_err());
        client.delete(id).await.unwrap();
        drop(client);
        dp.shutdown();
    }

    /// A supervisor's session made on the call's core attaches, switches mode and detaches;
    /// one on another core is refused before it reaches a core.
    #[tokio::test]
    async fn attaches_a_supervisor_on_the_calls_core() {
        let mut dp = DataPlane::start(&Config {
            cores: Some(2),
            port_min: 46400,
            port_max: 46799,
            sessions_per_core: Some(4),
            ..Config::default()
        })
        .unwrap();
        let (client, _timeouts) =
            DataPlaneClient::new(dp.take_cores(), "127.0.0.1".parse().unwrap()).unwrap();
        let none = LegParams::default();
        let (call, _) = client.create(none, none).await.unwrap();
        let (elsewhere, _) = client
            .create_on(1 - call.core as usize, none, none)
            .await
            .unwrap();
        let (supervisor, _) = client
            .create_on(call.core as usize, none, none)
            .await
            .unwrap();
        assert_eq!(supervisor.core, call.core);
        let pcma = LegCodec {
            payload_type: 8,
            codec: tandem_dataplane::api::Codec::Pcma,
            event_payload_type: None,
            ptime_ms: 0,
            options: tandem_dataplane::api::CodecOptions::NONE,
        };
        let codecs = [pcma; 3];
        assert_eq!(
            client
                .attach_monitor(call, elsewhere, MonitorMode::Listen, codecs)
                .await,
            Err(CoreError::MonitorConflict)
        );
        client
            .attach_monitor(call, supervisor, MonitorMode::Listen, codecs)
            .await
            .unwrap();
        client
            .set_monitor_mode(call, MonitorMode::Whisper)
            .await
            .unwrap();
        client.detach_monitor(supervisor).await.unwrap();
        assert_eq!(
            client.set_monitor_mode(call, MonitorMode::Barge).await,
            Err(CoreError::MonitorConflict)
        );
        // The supervisor's session outlives the detach and joins again; deleting the call
        // ends the monitor.
        client
            .attach_monitor(call, supervisor, MonitorMode::Barge, codecs)
            .await
            .unwrap();
        client.delete(call).await.unwrap();
        assert_eq!(
            client.detach_monitor(supervisor).await,
            Err(CoreError::MonitorConflict)
        );
        for id in [elsewhere, supervisor] {
            client.delete(id).await.unwrap();
        }
        drop(client);
        dp.shutdown();
    }
}
