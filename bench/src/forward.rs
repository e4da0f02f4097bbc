//! `tandem-bench forward`: the bare kernel-path relay, the yardstick for the real ones.
//!
//! Two modes, both epoll + one recvmmsg per ready socket + one sendmmsg per batch, no checks:
//! - ng mode answers just enough ng (ping, offer, answer, delete) for `tandem-bench rtp` to drive
//!   it like any relay: each call gets a port pair, and what arrives on one side leaves through
//!   the other to that side's latched peer. Whatever a real relay costs beyond this is its own.
//! - plain mode (`--ports N --base-port P --to Q`) forwards everything from N ports to one
//!   address through N transmit sockets: the kernel path's limit with no sessions at all.

use crate::sys::{raise_fd_limit, sockaddr_in_to_std, std_to_sockaddr_in, Epoll, MmsgBufs};
use anyhow::{bail, Context};
use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use tandem_controlplane::bencode::{self, dict, Value};
use tandem_controlplane::sdp::{MediaRewrite, RewriteOptions, Sdp};

const BATCH: usize = 64;
const NG_TOKEN: u64 = u64::MAX;

struct Side {
    /// `None` once the call is deleted (the slot stays: its index is the epoll token).
    socket: Option<UdpSocket>,
    /// Where packets leaving through this socket go (SDP address, then the latched source).
    peer: Option<SocketAddrV4>,
    latched: bool,
    /// Packets received on this side.
    packets: u64,
}

pub struct Forwarder {
    ng: UdpSocket,
    epoll: Epoll,
    sides: Vec<Side>,
    calls: HashMap<String, usize>,
    connected: bool,
}

/// Sends the first `n` datagrams of `mm` (lengths as received) through `fd`, to `dest` unless
/// the socket is connected. Drops what the kernel refuses: this is the no-frills yardstick.
fn send_batch(mm: &mut MmsgBufs, n: usize, fd: i32, dest: Option<libc::sockaddr_in>) {
    for i in 0..n {
        mm.iov[i].iov_len = mm.hdrs[i].msg_len as usize;
        let h = &mut mm.hdrs[i].msg_hdr;
        match dest {
            Some(d) => mm.names[i] = d,
            None => {
                h.msg_name = std::ptr::null_mut();
                h.msg_namelen = 0;
            }
        }
    }
    // SAFETY: the headers point into buffers `mm` owns.
    unsafe { libc::sendmmsg(fd, mm.hdrs.as_mut_ptr(), n as u32, libc::MSG_DONTWAIT) };
    mm.reset_for_receive();
}

impl Forwarder {
    pub fn bind(ng: SocketAddr, connected: bool) -> anyhow::Result<Self> {
        raise_fd_limit();
        let ng = UdpSocket::bind(ng).with_context(|| format!("binding ng {ng}"))?;
        ng.set_nonblocking(true)?;
        let epoll = Epoll::new()?;
        epoll.add(ng.as_raw_fd(), NG_TOKEN)?;
        Ok(Forwarder {
            ng,
            epoll,
            sides: Vec::new(),
            calls: HashMap::new(),
            connected,
        })
    }

    /// Serves until `stop` is set (checked at least every 100 ms).
    pub fn run(mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut mm = MmsgBufs::new(BATCH);
        while !stop.load(Relaxed) {
            let n = self.epoll.wait(&mut events, 100);
            for e in &events[..n] {
                if e.u64 == NG_TOKEN {
                    self.serve_ng();
                } else {
                    self.forward(e.u64 as usize, &mut mm);
                }
            }
        }
        Ok(())
    }

    fn forward(&mut self, side: usize, mm: &mut MmsgBufs) {
        let Some(fd) = self
            .sides
            .get(side)
            .and_then(|s| s.socket.as_ref())
            .map(|s| s.as_raw_fd())
        else {
            return;
        };
        let got = mm.recv(fd);
        if got == 0 {
            return;
        }
        let connected = self.connected;
        let s = &mut self.sides[side];
        s.packets += got as u64;
        // Latch the sender of this socket's packets: replies to it leave through it.
        if !s.latched {
            if let SocketAddr::V4(addr) = sockaddr_in_to_std(&mm.names[0]) {
                s.peer = Some(addr);
                s.latched = true;
                if connected {
                    if let Some(sock) = &s.socket {
                        let _ = sock.connect(addr);
                    }
                }
            }
        }
        let out = &self.sides[side ^ 1];
        let (Some(out_sock), Some(dest)) = (&out.socket, out.peer) else {
            mm.reset_for_receive();
            return;
        };
        let dest = (!(connected && out.latched)).then(|| std_to_sockaddr_in(dest));
        send_batch(mm, got, out_sock.as_raw_fd(), dest);
    }

    fn serve_ng(&mut self) {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = self.ng.recv_from(&mut buf) {
            let Some(space) = buf[..n].iter().position(|&b| b == b' ') else {
                continue;
            };
            let reply = match bencode::decode(&buf[space + 1..n]) {
                Ok(req) => self.answer(&req),
                Err(e) => error(&e.to_string()),
            };
            let mut wire = buf[..=space].to_vec();
            bencode::encode_into(&reply, &mut wire);
            let _ = self.ng.send_to(&wire, from);
        }
    }

    fn answer(&mut self, req: &Value<'_>) -> Value<'static> {
        let command = req.get("command").and_then(Value::as_str).unwrap_or("");
        let call_id = req
            .get("call-id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match command {
            "ping" => dict([("result", Value::str("pong"))]),
            "delete" => match self.calls.remove(&call_id) {
                Some(pair) => {
                    let mut packets = 0;
                    for s in [pair, pair + 1] {
                        let side = &mut self.sides[s];
                        if let Some(sock) = side.socket.take() {
                            self.epoll.remove(sock.as_raw_fd());
                        }
                        side.peer = None;
                        packets += side.packets as i64;
                    }
                    let rtp = dict([("packets", Value::Int(packets))]);
                    dict([
                        ("result", Value::str("ok")),
                        ("totals", dict([("RTP", rtp)])),
                    ])
                }
                None => error("Call-ID not found"),
            },
            "offer" | "answer" => self.offer_answer(command, call_id, req),
            _ => error("unsupported"),
        }
    }

    fn offer_answer(&mut self, command: &str, call_id: String, req: &Value<'_>) -> Value<'static> {
        let Some(Ok(sdp)) = req.get("sdp").and_then(Value::as_str).map(Sdp::parse) else {
            return error("bad SDP");
        };
        let Some(SocketAddr::V4(target)) = sdp.media.first().and_then(|m| m.rtp_target()) else {
            return error("no IPv4 media");
        };
        let pair = match self.calls.get(&call_id) {
            Some(&p) => p,
            None if command == "offer" => match self.new_pair() {
                Ok(p) => {
                    self.calls.insert(call_id, p);
                    p
                }
                Err(e) => return error(&e.to_string()),
            },
            None => return error("Unknown call-id"),
        };
        // The offerer (A) is reached through side `pair`, the answerer through `pair + 1`; the
        // SDP goes to the other party, naming the socket it should send to.
        let (own, other) = if command == "offer" {
            (pair, pair + 1)
        } else {
            (pair + 1, pair)
        };
        self.sides[own].peer = Some(target);
        let port = self.sides[other]
            .socket
            .as_ref()
            .and_then(|s| s.local_addr().ok())
            .map(|a| a.port())
            .unwrap_or(0);
        let out = sdp.rewrite(
            &[MediaRewrite { port: Some(port) }],
            &RewriteOptions {
                address: Some([127, 0, 0, 1].into()),
                replace_origin: true,
                remove_ice: true,
                ..Default::default()
            },
        );
        dict([("result", Value::str("ok")), ("sdp", Value::string(out))])
    }

    fn new_pair(&mut self) -> std::io::Result<usize> {
        let first = self.sides.len();
        let mut pair = Vec::with_capacity(2);
        for i in 0..2 {
            let socket = UdpSocket::bind("127.0.0.1:0")?;
            socket.set_nonblocking(true)?;
            self.epoll.add(socket.as_raw_fd(), (first + i) as u64)?;
            pair.push(socket);
        }
        self.sides.extend(pair.into_iter().map(|s| Side {
            socket: Some(s),
            peer: None,
            latched: false,
            packets: 0,
        }));
        Ok(first)
    }
}

fn error(why: &str) -> Value<'static> {
    dict([
        ("result", Value::str("error")),
        ("error-reason", Value::string(why.to_string())),
    ])
}

/// Plain mode: `ports` sockets from `base_port` on `bind_ip`, everything forwarded to `to`
/// through transmit socket i for receive socket i (connected to `to` when asked). Prints the
/// forwarded rate once per second on stderr until `stop` is set.
pub fn forward_plain(
    bind_ip: std::net::IpAddr,
    base_port: u16,
    ports: u16,
    to: SocketAddr,
    connected: bool,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let SocketAddr::V4(to4) = to else {
        bail!("plain mode forwards to IPv4 only");
    };
    raise_fd_limit();
    let epoll = Epoll::new()?;
    let mut rx = Vec::with_capacity(ports as usize);
    let mut tx = Vec::with_capacity(ports as usize);
    for i in 0..ports {
        let port = base_port
            .checked_add(i)
            .context("port range runs past 65535")?;
        let r = UdpSocket::bind(SocketAddr::new(bind_ip, port))
            .with_context(|| format!("binding {bind_ip}:{port}"))?;
        r.set_nonblocking(true)?;
        epoll.add(r.as_raw_fd(), i as u64)?;
        let t = UdpSocket::bind(SocketAddr::new(bind_ip, 0))?;
        if connected {
            t.connect(to)?;
        }
        rx.push(r);
        tx.push(t);
    }
    let dest = (!connected).then(|| std_to_sockaddr_in(to4));
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut mm = MmsgBufs::new(BATCH);
    let (mut total, mut last_total) = (0u64, 0u64);
    let mut next_report = crate::sys::monotonic_ns() + 1_000_000_000;
    while !stop.load(Relaxed) {
        let n = epoll.wait(&mut events, 100);
        for e in &events[..n] {
            let i = e.u64 as usize;
            let got = mm.recv(rx[i].as_raw_fd());
            if got > 0 {
                total += got as u64;
                send_batch(&mut mm, got, tx[i].as_raw_fd(), dest);
            }
        }
        let now = crate::sys::monotonic_ns();
        if now >= next_report {
            next_report = now + 1_000_000_000;
            eprintln!("forwarded {total} ({} pps)", total - last_total);
            last_total = total;
        }
    }
    Ok(())
}
