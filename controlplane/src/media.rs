//! The control plane's async client for the data-plane cores: turns ring commands and events
//! into request/response futures, and surfaces the cores' own reports (inactivity timeouts).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tandem_dataplane::api::{
    Command, CoreError, Event, LegIndex, LegParams, SessionId, SessionStats,
};
use tandem_dataplane::engine::{CommandSender, EventReceiver};
use tandem_dataplane::stats::CoreStats;
use tandem_dataplane::CoreHandle;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};

/// How long a core may take to answer a command before the request fails.
const CORE_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Event>>>>;

pub struct DataPlaneClient {
    senders: Vec<Mutex<CommandSender>>,
    stats: Vec<Arc<CoreStats>>,
    pending: Pending,
    next_token: AtomicU64,
    advertise: IpAddr,
}

/// A session a core ended by itself, with its final counters.
pub type TimedOut = (SessionId, SessionStats);

impl DataPlaneClient {
    /// Takes ownership of the cores' handles and spawns one event pump per core on the current
    /// tokio runtime. Timeouts reported by the cores arrive on the returned receiver.
    pub fn new(
        cores: Vec<CoreHandle>,
        advertise: IpAddr,
    ) -> std::io::Result<(Arc<Self>, mpsc::Receiver<TimedOut>)> {
        let pending: Pending = Arc::default();
        let (timeouts_tx, timeouts_rx) = mpsc::channel(4096);
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
        let core = self.pick_core();
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
                };
                if let Some(waiter) = self.pending.lock().unwrap().remove(&token) {
                    let _ = waiter.send(event);
                }
            }
        }
    }
}
