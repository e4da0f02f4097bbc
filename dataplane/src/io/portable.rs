//! The portable backend: level-triggered epoll over every socket, `recvmmsg` per ready socket and
//! `sendmmsg` per run of datagrams leaving the same socket. Works wherever Linux does, including
//! under seccomp profiles that forbid io_uring.

use super::{
    connect_fd, drain_eventfd, new_udp_socket, parse_cmsgs, sockaddr, Backend, BackendParams,
    RxBatch, RxMeta, SendReport, TxBatch, CMSG_SPACE, PACKET_CAPACITY,
};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Marks the wake eventfd in epoll's user data (slots are < u32::MAX).
const WAKE_TOKEN: u64 = u64::MAX;

pub struct Portable {
    epoll: OwnedFd,
    wake_fd: RawFd,
    rcvbuf_bytes: u32,
    sockets: Vec<Option<OwnedFd>>,
    events: Vec<libc::epoll_event>,
    /// Scratch for recvmmsg/sendmmsg, sized at start: no allocation per call.
    hdrs: Vec<libc::mmsghdr>,
    iovecs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
    cmsgs: Vec<[u8; CMSG_SPACE]>,
}

// SAFETY: the raw pointers inside the scratch arrays are only meaningful during one call and are
// rebuilt every time; the backend is moved to its core's thread once and stays there.
unsafe impl Send for Portable {}

impl Portable {
    pub fn new(params: BackendParams) -> io::Result<Self> {
        // SAFETY: plain syscall; checked.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh owned descriptor.
        let epoll = unsafe { OwnedFd::from_raw_fd(ep) };
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: WAKE_TOKEN,
        };
        // SAFETY: valid epoll fd, valid eventfd, live event struct.
        if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, params.wake_fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let batch = params.batch.max(1);
        let mut sockets = Vec::with_capacity(params.slots as usize);
        sockets.resize_with(params.slots as usize, || None);
        Ok(Portable {
            epoll,
            wake_fd: params.wake_fd,
            rcvbuf_bytes: params.rcvbuf_bytes,
            sockets,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; batch],
            // SAFETY: these are plain C structs for which all-zero is valid.
            hdrs: vec![unsafe { std::mem::zeroed() }; batch],
            iovecs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                batch
            ],
            addrs: vec![unsafe { std::mem::zeroed() }; batch],
            cmsgs: vec![[0u8; CMSG_SPACE]; batch],
        })
    }

    fn fd(&self, slot: u32) -> Option<RawFd> {
        self.sockets
            .get(slot as usize)?
            .as_ref()
            .map(|s| s.as_raw_fd())
    }

    /// Receives as many datagrams as fit from one socket with a single recvmmsg.
    fn drain_socket(&mut self, slot: u32, fd: RawFd, rx: &mut RxBatch) {
        let room = (rx.capacity() - rx.len()).min(self.hdrs.len());
        if room == 0 {
            return;
        }
        let spare = rx.spare_buffers();
        for (i, buffer) in spare.iter_mut().enumerate().take(room) {
            self.iovecs[i] = libc::iovec {
                iov_base: buffer.as_mut_ptr() as *mut libc::c_void,
                iov_len: PACKET_CAPACITY,
            };
            let h = &mut self.hdrs[i];
            h.msg_hdr.msg_name = &mut self.addrs[i] as *mut _ as *mut libc::c_void;
            h.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut self.iovecs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = self.cmsgs[i].as_mut_ptr() as *mut libc::c_void;
            h.msg_hdr.msg_controllen = CMSG_SPACE;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: every header points into live scratch buffers sized above.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                room as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            return; // EAGAIN (spurious readiness) or an ICMP error surfaced on a connected socket.
        }
        for i in 0..n as usize {
            let h = &self.hdrs[i];
            // SAFETY: the kernel filled name and control data for this message.
            let src = unsafe { sockaddr::from_raw(&self.addrs[i], h.msg_hdr.msg_namelen) };
            let (rx_ns, drops) = unsafe { parse_cmsgs(&h.msg_hdr) };
            let Some(src) = src else { continue };
            rx.push(RxMeta {
                slot,
                src,
                len: h.msg_len.min(PACKET_CAPACITY as u32),
                rx_realtime_ns: rx_ns,
                socket_drops: drops,
                truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            });
        }
    }
}

impl Backend for Portable {
    fn name(&self) -> &'static str {
        "portable (epoll + recvmmsg/sendmmsg)"
    }

    fn open(&mut self, slot: u32, addr: SocketAddr) -> io::Result<()> {
        let entry = self
            .sockets
            .get_mut(slot as usize)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "slot out of range"))?;
        if entry.is_some() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "slot in use"));
        }
        let sock = new_udp_socket(addr, self.rcvbuf_bytes)?;
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: slot as u64,
        };
        // SAFETY: valid descriptors and a live event struct.
        if unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                sock.as_raw_fd(),
                &mut ev,
            )
        } < 0
        {
            return Err(io::Error::last_os_error());
        }
        *entry = Some(sock);
        Ok(())
    }

    fn close(&mut self, slot: u32) {
        // Closing the descriptor removes it from the epoll set.
        if let Some(entry) = self.sockets.get_mut(slot as usize) {
            entry.take();
        }
    }

    fn connect(&mut self, slot: u32, peer: Option<SocketAddr>) -> io::Result<()> {
        let fd = self
            .fd(slot)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no socket in slot"))?;
        connect_fd(fd, peer)
    }

    fn receive(&mut self, rx: &mut RxBatch, timeout: Option<Duration>) -> io::Result<()> {
        rx.clear();
        let timeout_ms = match timeout {
            None => -1,
            // Rounded up: a timeout truncated to 0 ms would spin until a sub-ms deadline.
            Some(d) => d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32,
        };
        let max = self.events.len() as i32;
        // SAFETY: events has room for `max` entries.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                max,
                timeout_ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        for i in 0..n as usize {
            let token = self.events[i].u64;
            if token == WAKE_TOKEN {
                drain_eventfd(self.wake_fd);
                continue;
            }
            if rx.is_full() {
                // Level-triggered: the socket is reported again on the next call.
                break;
            }
            let slot = token as u32;
            if let Some(fd) = self.fd(slot) {
                self.drain_socket(slot, fd, rx);
            }
        }
        Ok(())
    }

    fn send(&mut self, tx: &mut TxBatch) -> SendReport {
        let mut report = SendReport::default();
        let total = tx.len();
        let mut start = 0;
        // Runs of consecutive datagrams leaving the same socket go out in one sendmmsg.
        while start < total {
            let slot = tx.meta(start).slot;
            let mut end = start + 1;
            while end < total && end - start < self.hdrs.len() && tx.meta(end).slot == slot {
                end += 1;
            }
            let Some(fd) = self.fd(slot) else {
                report.failed += (end - start) as u32;
                start = end;
                continue;
            };
            let count = end - start;
            for (k, i) in (start..end).enumerate() {
                let m = *tx.meta(i);
                let pkt = tx.packet(i);
                self.iovecs[k] = libc::iovec {
                    iov_base: pkt.as_ptr() as *mut libc::c_void,
                    iov_len: pkt.len(),
                };
                let h = &mut self.hdrs[k];
                match m.dest {
                    Some(d) => {
                        let (storage, len) = sockaddr::to_raw(d);
                        self.addrs[k] = storage;
                        h.msg_hdr.msg_name = &mut self.addrs[k] as *mut _ as *mut libc::c_void;
                        h.msg_hdr.msg_namelen = len;
                    }
                    None => {
                        h.msg_hdr.msg_name = std::ptr::null_mut();
                        h.msg_hdr.msg_namelen = 0;
                    }
                }
                h.msg_hdr.msg_iov = &mut self.iovecs[k];
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_control = std::ptr::null_mut();
                h.msg_hdr.msg_controllen = 0;
                h.msg_hdr.msg_flags = 0;
            }
            let mut done = 0usize;
            // The datagram at `done` has been refused once for an earlier datagram's ICMP error.
            let mut retried = false;
            while done < count {
                // SAFETY: headers point into tx's buffers, which live until this function returns.
                let n = unsafe {
                    libc::sendmmsg(
                        fd,
                        self.hdrs[done..].as_mut_ptr(),
                        (count - done) as u32,
                        libc::MSG_DONTWAIT,
                    )
                };
                if n <= 0 {
                    let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
                    if super::is_icmp_error(errno) && !retried {
                        // The error was an earlier datagram's and is now cleared; this one was
                        // not sent. Once more.
                        retried = true;
                        continue;
                    }
                    // The first datagram failed (the peer still refuses, no buffer space): skip
                    // it and go on.
                    if super::is_icmp_error(errno) {
                        report.unreachable += 1;
                    } else {
                        report.failed += 1;
                    }
                    retried = false;
                    done += 1;
                } else {
                    retried = false;
                    report.sent += n as u32;
                    for (k, v) in self.iovecs[done..done + n as usize].iter().enumerate() {
                        report.bytes += v.iov_len as u64;
                        if tx.meta(start + done + k).played {
                            report.played += 1;
                            report.played_bytes += v.iov_len as u64;
                        }
                    }
                    done += n as usize;
                }
            }
            start = end;
        }
        tx.clear();
        report
    }
}
