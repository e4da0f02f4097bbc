//! Starting the cores: split the port range, pin threads, wire the rings.

use crate::api::{Command, Event};
use crate::clip::Clip;
use crate::core::{Core, CoreConfig};
use crate::io::{self, signal_eventfd, BackendParams, IoKind};
use crate::session::PORTS_PER_SESSION;
use crate::stats::CoreStats;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::thread::JoinHandle;

#[derive(Debug, Clone)]
pub struct Config {
    /// Worker cores; `None` = every CPU in the process's affinity mask but one (at least one).
    pub cores: Option<usize>,
    pub bind: IpAddr,
    pub port_min: u16,
    pub port_max: u16,
    pub io: IoKind,
    /// Datagrams per receive/send batch.
    pub batch: usize,
    /// Most sessions per core; `None` = as many as the core's ports allow.
    pub sessions_per_core: Option<u32>,
    /// A session with no media in either direction for this long is removed.
    pub timeout_ms: u64,
    /// A non-strict leg silent for this long is unlatched, so it can re-latch elsewhere.
    pub relatch_ms: u64,
    /// Depth of each core's command and event rings.
    pub ring_capacity: usize,
    /// A datagram that waited longer than this in its socket queue is dropped, not relayed.
    pub max_packet_age_ms: u64,
    /// SO_RCVBUF of each media socket (0: kernel default). The kernel doubles it for overhead.
    pub socket_rcvbuf_bytes: u32,
    /// Mean interval between the RTCP reports the core sends on each leg of a transcoded
    /// session (each one randomised to 0.5–1.5 times it, RFC 3550 §6.3).
    pub rtcp_interval_ms: u64,
    /// The clips `Command::Play` names by index, encoded once and shared read-only by every
    /// core. Default: the built-in hold melody as clip 0.
    pub clips: Vec<Arc<Clip>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cores: None,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_min: 30000,
            port_max: 40000,
            io: IoKind::Portable,
            batch: 64,
            sessions_per_core: None,
            timeout_ms: 60_000,
            relatch_ms: 2_000,
            ring_capacity: 4096,
            max_packet_age_ms: 200,
            socket_rcvbuf_bytes: 32 * 1024,
            rtcp_interval_ms: 5_000,
            clips: vec![Clip::hold_music()],
        }
    }
}

/// The core's command ring is full: it is overwhelmed, and the command was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingFull;

/// The control plane's end of one core.
pub struct CoreHandle {
    pub id: u16,
    pub commands: rtrb::Producer<Command>,
    pub events: rtrb::Consumer<Event>,
    /// Readable when the core has pushed events.
    pub notify: OwnedFd,
    pub stats: Arc<CoreStats>,
    pub base_port: u16,
    pub capacity: u32,
    pub budget: u32,
    wake: Arc<OwnedFd>,
}

impl CoreHandle {
    /// Pushes a command and wakes the core. Fails when the ring is full: the core is overwhelmed
    /// and the caller should answer `load limit`.
    pub fn send(&mut self, cmd: Command) -> Result<(), RingFull> {
        self.commands.push(cmd).map_err(|_| RingFull)?;
        signal_eventfd(self.wake.as_raw_fd());
        Ok(())
    }

    pub fn notify_fd(&self) -> RawFd {
        self.notify.as_raw_fd()
    }

    /// Separates the sending half (commands, wake) from the receiving half (events, notify) so
    /// they can live in different tasks.
    pub fn split(self) -> (CommandSender, EventReceiver) {
        (
            CommandSender {
                id: self.id,
                commands: self.commands,
                wake: self.wake,
                stats: self.stats,
                base_port: self.base_port,
                capacity: self.capacity,
                budget: self.budget,
            },
            EventReceiver {
                id: self.id,
                events: self.events,
                notify: self.notify,
            },
        )
    }
}

pub struct CommandSender {
    pub id: u16,
    commands: rtrb::Producer<Command>,
    wake: Arc<OwnedFd>,
    pub stats: Arc<CoreStats>,
    pub base_port: u16,
    pub capacity: u32,
    pub budget: u32,
}

impl CommandSender {
    /// As [`CoreHandle::send`].
    pub fn send(&mut self, cmd: Command) -> Result<(), RingFull> {
        self.commands.push(cmd).map_err(|_| RingFull)?;
        signal_eventfd(self.wake.as_raw_fd());
        Ok(())
    }
}

pub struct EventReceiver {
    pub id: u16,
    pub events: rtrb::Consumer<Event>,
    /// Readable when the core has pushed events; reset it with [`crate::io::drain_eventfd`].
    pub notify: OwnedFd,
}

pub struct DataPlane {
    pub cores: Vec<CoreHandle>,
    pub backend_name: String,
    /// Set when the requested backend was unavailable and another was used.
    pub fallback: Option<String>,
    /// CPUs left for the control plane (the affinity mask minus the workers' CPUs; never empty).
    pub control_cpus: Vec<usize>,
    threads: Vec<JoinHandle<()>>,
    wakes: Vec<Arc<OwnedFd>>,
}

/// CPUs this process may run on (respects `taskset`).
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return vec![0];
    }
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Pins the calling thread to `cpus`.
pub fn pin_current_thread(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: as above; CPU_SET writes within the set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl DataPlane {
    pub fn start(cfg: &Config) -> std::io::Result<DataPlane> {
        let allowed = allowed_cpus();
        let n = cfg
            .cores
            .unwrap_or_else(|| allowed.len().saturating_sub(1))
            .max(1);
        let mut fallback_notes = Vec::new();
        let span = (cfg.port_max as u32 + 1).saturating_sub(cfg.port_min as u32);
        // Even start so every session's RTP port is even (RFC 3550 §11).
        let first = cfg.port_min as u32 + (cfg.port_min as u32 % 2);
        let per_core =
            (span.saturating_sub(first - cfg.port_min as u32) / n as u32) / PORTS_PER_SESSION;
        if per_core == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "port range {}-{} is too small for {n} cores",
                    cfg.port_min, cfg.port_max
                ),
            ));
        }
        let wanted = per_core as u64 * n as u64 * PORTS_PER_SESSION as u64 + 1024;
        let got = raise_fd_limit(wanted);
        if got < wanted {
            // Say so once at start rather than refusing calls mysteriously later.
            fallback_notes.push(format!(
                "open-file limit is {got}, below the {wanted} the port range needs: sessions are capped by it"
            ));
        }

        // Workers take the last CPUs of the mask; the control plane keeps the first.
        let worker_cpus: Vec<usize> = (0..n)
            .map(|i| allowed[(allowed.len() - 1 - (i % allowed.len())) % allowed.len()])
            .collect();
        let mut control_cpus: Vec<usize> = allowed
            .iter()
            .copied()
            .filter(|c| !worker_cpus.contains(c))
            .collect();
        if control_cpus.is_empty() {
            control_cpus = allowed.clone();
        }

        if cfg.clips.len() > u16::MAX as usize + 1 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} clips: at most 65536", cfg.clips.len()),
            ));
        }
        let clips: Arc<[Arc<Clip>]> = cfg.clips.clone().into();
        let mut cores = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        let mut wakes = Vec::with_capacity(n);
        let mut backend_name = String::new();
        let mut fallback = None;
        for (i, &cpu) in worker_cpus.iter().enumerate() {
            let base_port = (first + i as u32 * per_core * PORTS_PER_SESSION) as u16;
            let capacity = per_core;
            let budget = cfg.sessions_per_core.unwrap_or(capacity).min(capacity);
            let wake = Arc::new(io::eventfd()?);
            let notify = io::eventfd()?;
            let (cmd_tx, cmd_rx) = rtrb::RingBuffer::new(cfg.ring_capacity);
            let (ev_tx, ev_rx) = rtrb::RingBuffer::new(cfg.ring_capacity);
            let stats = Arc::new(CoreStats::default());
            let core_cfg = CoreConfig {
                id: i as u16,
                bind: cfg.bind,
                base_port,
                capacity,
                budget,
                batch: cfg.batch,
                timeout_ms: cfg.timeout_ms,
                relatch_ms: cfg.relatch_ms,
                max_packet_age_ms: cfg.max_packet_age_ms,
                rtcp_interval_ms: cfg.rtcp_interval_ms.max(1),
            };
            let notify_fd = notify.as_raw_fd();
            let core_stats = stats.clone();
            let keep_wake = wake.clone();
            let params = BackendParams {
                slots: capacity * PORTS_PER_SESSION,
                wake_fd: wake.as_raw_fd(),
                batch: cfg.batch,
                rcvbuf_bytes: cfg.socket_rcvbuf_bytes,
            };
            let io_kind = cfg.io;
            let core_clips = clips.clone();
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let thread = std::thread::Builder::new()
                .name(format!("dp-core-{i}"))
                .spawn(move || {
                    // Pinning can be refused (restricted cgroup); the core still works unpinned.
                    let _ = pin_current_thread(&[cpu]);
                    let _keep_wake = keep_wake;
                    // Built on its own thread: an io_uring set up single-issuer belongs to the
                    // thread that created it.
                    let backend = match io::build(io_kind, params) {
                        Ok((backend, fell_back)) => {
                            let _ = ready_tx.send(Ok((backend.name().to_string(), fell_back)));
                            backend
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    Core::new(
                        core_cfg, backend, cmd_rx, ev_tx, notify_fd, core_stats, core_clips,
                    )
                    .run();
                })?;
            let (name, fell_back) = ready_rx
                .recv()
                .map_err(|_| std::io::Error::other("data-plane core died during start"))??;
            if i == 0 {
                backend_name = name;
                fallback = fell_back;
            }
            threads.push(thread);
            wakes.push(wake.clone());
            cores.push(CoreHandle {
                id: i as u16,
                commands: cmd_tx,
                events: ev_rx,
                notify,
                stats,
                base_port,
                capacity,
                budget,
                wake,
            });
        }
        fallback_notes.extend(fallback);
        Ok(DataPlane {
            cores,
            backend_name,
            fallback: (!fallback_notes.is_empty()).then(|| fallback_notes.join("; ")),
            control_cpus,
            threads,
            wakes,
        })
    }

    /// Splits off the core handles (the control plane moves them into its tasks); the `DataPlane`
    /// keeps what it needs to stop the threads.
    pub fn take_cores(&mut self) -> Vec<CoreHandle> {
        std::mem::take(&mut self.cores)
    }

    /// Stops every core: asks politely through the ring, or, if the handles were dropped, the
    /// abandoned ring tells the core to stop; the wake makes it look.
    pub fn shutdown(mut self) {
        for core in &mut self.cores {
            let _ = core.commands.push(Command::Shutdown);
        }
        self.cores.clear();
        for w in &self.wakes {
            signal_eventfd(w.as_raw_fd());
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Raises RLIMIT_NOFILE towards `want` (the hard limit too, where privileged); returns the
/// resulting soft limit.
pub fn raise_fd_limit(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < want {
            let raised = libc::rlimit {
                rlim_cur: want,
                rlim_max: lim.rlim_max.max(want),
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                lim.rlim_cur = want.min(lim.rlim_max);
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
        lim.rlim_cur
    }
}
