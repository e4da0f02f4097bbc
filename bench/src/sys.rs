//! Thin wrappers over the few syscalls the generators share.

use std::time::Duration;

/// CLOCK_MONOTONIC in ns: the clock packets are stamped with (vDSO, no syscall).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps until `ns` on the monotonic clock (returns at once if it has passed).
pub fn sleep_until(ns: u64) {
    let now = monotonic_ns();
    if ns > now {
        std::thread::sleep(Duration::from_nanos(ns - now));
    }
}

/// Pins the calling thread to `cpu`, when one is given.
pub fn pin(cpu: Option<usize>) {
    if let Some(c) = cpu {
        // SAFETY: cpu_set_t is plain data; the calls only read it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(c, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
}

/// Raises the open-file limit as far as allowed (every call holds two sockets here, the
/// forwarder two more) and returns the soft limit now in force.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on structs we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        // Root may raise the hard limit too; otherwise settle for the hard limit.
        let want = libc::rlimit {
            rlim_cur: 1 << 20,
            rlim_max: (1 << 20).max(lim.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
            return want.rlim_cur;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// An epoll instance closed on drop.
pub struct Epoll(i32);

impl Epoll {
    pub fn new() -> std::io::Result<Self> {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Epoll(fd))
    }

    /// Level-triggered read interest, reported with `token`.
    pub fn add(&self, fd: i32, token: u64) -> std::io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: live descriptors, event struct we own.
        if unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn remove(&self, fd: i32) {
        // SAFETY: live descriptors; a failure leaves nothing to undo.
        unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
    }

    /// Ready events into `events`; returns how many (0 on timeout or EINTR).
    pub fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> usize {
        // SAFETY: events has room for its length.
        let n = unsafe {
            libc::epoll_wait(self.0, events.as_mut_ptr(), events.len() as i32, timeout_ms)
        };
        n.max(0) as usize
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor we created.
        unsafe { libc::close(self.0) };
    }
}

/// Receive buffers and the mmsghdr array pointing into them, for recvmmsg/sendmmsg. Boxed
/// slices: the headers hold raw pointers into the buffers, which must never move.
pub struct MmsgBufs {
    pub bufs: Box<[[u8; 2048]]>,
    pub iov: Box<[libc::iovec]>,
    pub names: Box<[libc::sockaddr_in]>,
    pub hdrs: Box<[libc::mmsghdr]>,
}

impl MmsgBufs {
    pub fn new(n: usize) -> Self {
        let mut m = MmsgBufs {
            bufs: vec![[0u8; 2048]; n].into_boxed_slice(),
            iov: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
                n
            ]
            .into_boxed_slice(),
            // SAFETY: all-zero is a valid sockaddr_in and mmsghdr.
            names: vec![unsafe { std::mem::zeroed() }; n].into_boxed_slice(),
            hdrs: vec![unsafe { std::mem::zeroed() }; n].into_boxed_slice(),
        };
        m.reset_for_receive();
        m
    }

    /// Points every header at its whole buffer and source-address slot, ready for recvmmsg.
    pub fn reset_for_receive(&mut self) {
        for i in 0..self.hdrs.len() {
            self.iov[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr() as *mut _,
                iov_len: self.bufs[i].len(),
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_iov = &mut self.iov[i];
            h.msg_iovlen = 1;
            h.msg_name = &mut self.names[i] as *mut _ as *mut _;
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
        }
    }

    /// recvmmsg without blocking; returns how many datagrams arrived (0 when none or on error).
    pub fn recv(&mut self, fd: i32) -> usize {
        // SAFETY: the headers point into buffers this struct owns.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        n.max(0) as usize
    }

    /// Datagram i of the last receive.
    pub fn packet(&self, i: usize) -> &[u8] {
        let len = (self.hdrs[i].msg_len as usize).min(self.bufs[i].len());
        &self.bufs[i][..len]
    }
}

pub fn sockaddr_in_to_std(a: &libc::sockaddr_in) -> std::net::SocketAddr {
    std::net::SocketAddr::from((
        u32::from_be(a.sin_addr.s_addr).to_be_bytes(),
        u16::from_be(a.sin_port),
    ))
}

pub fn std_to_sockaddr_in(a: std::net::SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}
