//! I/O backends: how a core's UDP sockets get packets in and out, in batches.
//!
//! The core never sees a file descriptor. It addresses sockets by *slot* (local port minus the
//! core's first port), hands the backend an [`RxBatch`] to fill and a [`TxBatch`] to drain, and
//! otherwise decides everything itself. Both backends pass the same test suite.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::Duration;

pub mod portable;
pub mod sockaddr;
pub mod uring;

/// Largest datagram a batch slot holds. RTP over Ethernet stays under 1500 bytes; a bigger
/// datagram is truncated by the kernel and dropped by the core as malformed.
pub const PACKET_CAPACITY: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    Portable,
    Uring,
}

impl IoKind {
    pub fn name(self) -> &'static str {
        match self {
            IoKind::Portable => "portable",
            IoKind::Uring => "uring",
        }
    }
}

impl std::str::FromStr for IoKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "portable" | "epoll" => Ok(IoKind::Portable),
            "uring" | "io_uring" | "io-uring" => Ok(IoKind::Uring),
            other => Err(format!(
                "unknown io backend {other:?} (expected portable or uring)"
            )),
        }
    }
}

/// Metadata of one received datagram; its bytes are `RxBatch::packet(i)`.
#[derive(Debug, Clone, Copy)]
pub struct RxMeta {
    pub slot: u32,
    pub src: SocketAddr,
    pub len: u32,
    /// Kernel receive time (CLOCK_REALTIME ns, from SO_TIMESTAMPNS), 0 when unavailable.
    pub rx_realtime_ns: u64,
    /// The socket's cumulative kernel drop counter (SO_RXQ_OVFL) as of this datagram, if reported.
    pub socket_drops: Option<u32>,
    /// The datagram was larger than [`PACKET_CAPACITY`] and was cut.
    pub truncated: bool,
}

/// Received datagrams, written by the backend into buffers the core allocated at start.
pub struct RxBatch {
    buffers: Box<[[u8; PACKET_CAPACITY]]>,
    meta: Vec<RxMeta>,
}

impl RxBatch {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0);
        RxBatch {
            buffers: vec![[0u8; PACKET_CAPACITY]; capacity].into_boxed_slice(),
            meta: Vec::with_capacity(capacity),
        }
    }

    pub fn capacity(&self) -> usize {
        self.buffers.len()
    }

    pub fn len(&self) -> usize {
        self.meta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.meta.len() == self.buffers.len()
    }

    pub fn clear(&mut self) {
        self.meta.clear();
    }

    pub fn meta(&self, i: usize) -> &RxMeta {
        &self.meta[i]
    }

    pub fn packet(&self, i: usize) -> &[u8] {
        let m = &self.meta[i];
        &self.buffers[i][..m.len as usize]
    }

    /// The buffer the next datagram goes into; commit it with [`RxBatch::push`].
    /// `None` when the batch is full.
    pub fn next_buffer(&mut self) -> Option<&mut [u8; PACKET_CAPACITY]> {
        let i = self.meta.len();
        self.buffers.get_mut(i)
    }

    /// Raw buffers from `next` on, for backends that receive several datagrams in one call.
    pub fn spare_buffers(&mut self) -> &mut [[u8; PACKET_CAPACITY]] {
        let i = self.meta.len();
        &mut self.buffers[i..]
    }

    pub fn push(&mut self, meta: RxMeta) {
        debug_assert!(!self.is_full());
        debug_assert!(meta.len as usize <= PACKET_CAPACITY);
        self.meta.push(meta);
    }
}

/// One datagram to send.
#[derive(Debug, Clone, Copy)]
pub struct TxMeta {
    pub slot: u32,
    /// `None` when the socket is connected to its peer (no route lookup per packet).
    pub dest: Option<SocketAddr>,
    pub len: u32,
}

/// Datagrams to send, in buffers allocated at start.
pub struct TxBatch {
    buffers: Box<[[u8; PACKET_CAPACITY]]>,
    meta: Vec<TxMeta>,
}

impl TxBatch {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0);
        TxBatch {
            buffers: vec![[0u8; PACKET_CAPACITY]; capacity].into_boxed_slice(),
            meta: Vec::with_capacity(capacity),
        }
    }

    pub fn len(&self) -> usize {
        self.meta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.meta.len() == self.buffers.len()
    }

    pub fn clear(&mut self) {
        self.meta.clear();
    }

    pub fn meta(&self, i: usize) -> &TxMeta {
        &self.meta[i]
    }

    pub fn packet(&self, i: usize) -> &[u8] {
        &self.buffers[i][..self.meta[i].len as usize]
    }

    /// Copies `data` into the next buffer. Returns false (and queues nothing) when full.
    pub fn push(&mut self, slot: u32, dest: Option<SocketAddr>, data: &[u8]) -> bool {
        let i = self.meta.len();
        let Some(buf) = self.buffers.get_mut(i) else {
            return false;
        };
        let len = data.len().min(PACKET_CAPACITY);
        buf[..len].copy_from_slice(&data[..len]);
        self.meta.push(TxMeta {
            slot,
            dest,
            len: len as u32,
        });
        true
    }
}

/// Send outcomes a `send` call reports. A backend that completes sends asynchronously reports
/// the completions it has seen since its previous report, so counts may trail by one batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendReport {
    pub sent: u32,
    /// Bytes of the datagrams in `sent`.
    pub bytes: u64,
    /// Datagrams the kernel refused (ECONNREFUSED from an ICMP error, ENOBUFS, ...); not retried.
    pub failed: u32,
}

/// A core's socket set. Implementations own every file descriptor they open and close them on
/// drop. No method may block except `receive`, and that only up to its timeout or until the wake
/// descriptor becomes readable.
pub trait Backend {
    /// Short name printed at start-up.
    fn name(&self) -> &'static str;

    /// Binds a UDP socket to `addr` and files it under `slot`. The socket is non-blocking, has
    /// SO_TIMESTAMPNS and SO_RXQ_OVFL enabled, and is being received from when this returns.
    fn open(&mut self, slot: u32, addr: SocketAddr) -> io::Result<()>;

    /// Closes the socket in `slot` (no-op when empty). Datagrams still queued for it are lost.
    fn close(&mut self, slot: u32);

    /// Connects the socket to `peer` (`None` dissolves the association). A connected socket only
    /// receives from its peer and sends without a per-packet route lookup.
    fn connect(&mut self, slot: u32, peer: Option<SocketAddr>) -> io::Result<()>;

    /// Clears `rx`, then fills it with datagrams from any socket. Waits up to `timeout` (`None`:
    /// indefinitely) when nothing is ready; returns early, possibly with an empty batch, when the
    /// wake descriptor fires (the backend drains it).
    fn receive(&mut self, rx: &mut RxBatch, timeout: Option<Duration>) -> io::Result<()>;

    /// Sends (or queues for sending no later than the next `receive`) every datagram in `tx`,
    /// best effort: failures are counted, not retried. Clears `tx`; the backend keeps no pointer
    /// into it.
    fn send(&mut self, tx: &mut TxBatch) -> SendReport;
}

/// Sizing a backend is told at construction.
#[derive(Debug, Clone, Copy)]
pub struct BackendParams {
    /// Number of socket slots (the core's port range length).
    pub slots: u32,
    /// An eventfd the control plane writes to wake the core; the backend watches and drains it.
    pub wake_fd: RawFd,
    /// Largest rx batch the core will pass.
    pub batch: usize,
    /// SO_RCVBUF for every media socket (0: the kernel default).
    pub rcvbuf_bytes: u32,
}

/// Builds the requested backend, falling back to `portable` when io_uring is unavailable (old
/// kernel, seccomp). Returns the backend and, if a fallback happened, why.
pub fn build(
    kind: IoKind,
    params: BackendParams,
) -> io::Result<(Box<dyn Backend>, Option<String>)> {
    match kind {
        IoKind::Portable => Ok((Box::new(portable::Portable::new(params)?), None)),
        IoKind::Uring => match uring::Uring::new(params) {
            Ok(b) => Ok((Box::new(b), None)),
            Err(e) => Ok((
                Box::new(portable::Portable::new(params)?),
                Some(format!("io_uring unavailable ({e}); using portable")),
            )),
        },
    }
}

/// Options every backend sets on a fresh socket before binding.
pub(crate) fn new_udp_socket(
    addr: SocketAddr,
    rcvbuf_bytes: u32,
) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain syscall; the result is checked before being wrapped.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, owned descriptor.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    for (level, name) in [
        (libc::SOL_SOCKET, libc::SO_TIMESTAMPNS),
        (libc::SOL_SOCKET, libc::SO_RXQ_OVFL),
    ] {
        set_opt(fd, level, name, &one)?;
    }
    if rcvbuf_bytes > 0 {
        // A short queue bounds how much stale media a stall can pile up per stream; overflow is
        // dropped by the kernel and counted (SO_RXQ_OVFL).
        set_opt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &(rcvbuf_bytes as libc::c_int),
        )?;
    }
    let (storage, len) = sockaddr::to_raw(addr);
    // SAFETY: storage is a valid sockaddr of length len.
    let rc = unsafe { libc::bind(fd, &storage as *const _ as *const libc::sockaddr, len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(owned)
}

pub(crate) fn set_opt<T>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: value points to a live T of the given size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Connects (or, with `None`, disconnects) a UDP socket.
pub(crate) fn connect_fd(fd: RawFd, peer: Option<SocketAddr>) -> io::Result<()> {
    let rc = match peer {
        Some(p) => {
            let (storage, len) = sockaddr::to_raw(p);
            // SAFETY: storage is a valid sockaddr of length len.
            unsafe { libc::connect(fd, &storage as *const _ as *const libc::sockaddr, len) }
        }
        None => {
            // AF_UNSPEC dissolves a UDP association (connect(2)).
            // SAFETY: a zeroed sockaddr with family AF_UNSPEC is valid input.
            let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
            sa.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
            unsafe {
                libc::connect(
                    fd,
                    &sa,
                    std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
                )
            }
        }
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Reads SO_TIMESTAMPNS and SO_RXQ_OVFL out of a received message's control data.
///
/// # Safety
/// `hdr` must describe a control buffer the kernel filled in by `recvmsg`/`recvmmsg` (or an
/// io_uring recvmsg completion).
pub(crate) unsafe fn parse_cmsgs(hdr: &libc::msghdr) -> (u64, Option<u32>) {
    let mut rx_ns = 0u64;
    let mut drops = None;
    let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
    while !cmsg.is_null() {
        let c = &*cmsg;
        if c.cmsg_level == libc::SOL_SOCKET && c.cmsg_type == libc::SCM_TIMESTAMPNS {
            let ts: libc::timespec =
                std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::timespec);
            rx_ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
        } else if c.cmsg_level == libc::SOL_SOCKET && c.cmsg_type == libc::SO_RXQ_OVFL {
            drops = Some(std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const u32));
        }
        cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
    }
    (rx_ns, drops)
}

/// Control-buffer size that fits a timespec and a u32 drop counter.
pub(crate) const CMSG_SPACE: usize = 64;

/// Builds an eventfd for waking a core.
pub fn eventfd() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain syscall; checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh owned descriptor.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Signals an eventfd (wakes whoever polls it).
pub fn signal_eventfd(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64. EAGAIN (counter saturated) means it is already set.
    unsafe { libc::write(fd, &one as *const u64 as *const libc::c_void, 8) };
}

/// Resets an eventfd; returns whether it was set.
pub fn drain_eventfd(fd: RawFd) -> bool {
    let mut v: u64 = 0;
    // SAFETY: reads 8 bytes into a live u64.
    let n = unsafe { libc::read(fd, &mut v as *mut u64 as *mut libc::c_void, 8) };
    n == 8
}
