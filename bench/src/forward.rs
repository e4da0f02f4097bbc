//! `tandem-bench forward`: the bare kernel-path relay, the yardstick for the real ones.
//!
//! It answers just enough ng (ping, offer, answer, delete) for `tandem-bench rtp` to drive it like
//! any relay, then forwards with no checks at all: epoll, recvmmsg per ready socket, one
//! sendmmsg per batch, optionally on sockets connected to the latched peer. Whatever a real relay
//! costs beyond this is its own overhead.

use anyhow::Context;
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use tandem_controlplane::bencode::{self, dict, Value};
use tandem_controlplane::sdp::{MediaRewrite, RewriteOptions, Sdp};

const BATCH: usize = 64;
const NG_TOKEN: u64 = u64::MAX;

struct Side {
    socket: UdpSocket,
    /// Where packets leaving through this socket go (SDP address, then the latched source).
    peer: Option<SocketAddr>,
    latched: bool,
}

pub struct Forwarder {
    ng: UdpSocket,
    epoll: i32,
    sides: Vec<Side>,
    calls: HashMap<String, usize>,
    connected: bool,
}

impl Forwarder {
    pub fn bind(ng: SocketAddr, connected: bool) -> anyhow::Result<Self> {
        let ng = UdpSocket::bind(ng).with_context(|| format!("binding ng {ng}"))?;
        ng.set_nonblocking(true)?;
        // SAFETY: plain syscall.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: NG_TOKEN,
        };
        unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, ng.as_raw_fd(), &mut ev) };
        Ok(Forwarder {
            ng,
            epoll,
            sides: Vec::new(),
            calls: HashMap::new(),
            connected,
        })
    }

    pub fn run(mut self) -> anyhow::Result<()> {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        // SAFETY (below): scratch arrays live for the whole loop; headers point into them.
        let mut bufs = vec![[0u8; 2048]; BATCH];
        let mut iov: Vec<libc::iovec> = vec![
            libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0
            };
            BATCH
        ];
        let mut names: Vec<libc::sockaddr_in> = vec![unsafe { std::mem::zeroed() }; BATCH];
        let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
        loop {
            let n = unsafe {
                libc::epoll_wait(self.epoll, events.as_mut_ptr(), events.len() as i32, -1)
            };
            for e in events.iter().take(n.max(0) as usize) {
                if e.u64 == NG_TOKEN {
                    self.serve_ng();
                    continue;
                }
                let side = e.u64 as usize;
                let (fd, out) = (self.sides[side].socket.as_raw_fd(), side ^ 1);
                for i in 0..BATCH {
                    iov[i] = libc::iovec {
                        iov_base: bufs[i].as_mut_ptr() as *mut _,
                        iov_len: 2048,
                    };
                    hdrs[i].msg_hdr.msg_iov = &mut iov[i];
                    hdrs[i].msg_hdr.msg_iovlen = 1;
                    hdrs[i].msg_hdr.msg_name = &mut names[i] as *mut _ as *mut _;
                    hdrs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
                }
                let got = unsafe {
                    libc::recvmmsg(
                        fd,
                        hdrs.as_mut_ptr(),
                        BATCH as u32,
                        libc::MSG_DONTWAIT,
                        std::ptr::null_mut(),
                    )
                };
                if got <= 0 {
                    continue;
                }
                // Latch the sender of this socket's packets: replies to it leave through it.
                if !self.sides[side].latched {
                    let src = names[0];
                    let addr = SocketAddr::from((
                        u32::from_be(src.sin_addr.s_addr).to_be_bytes(),
                        u16::from_be(src.sin_port),
                    ));
                    self.sides[side].peer = Some(addr);
                    self.sides[side].latched = true;
                    if self.connected {
                        let _ = self.sides[side].socket.connect(addr);
                    }
                }
                let Some(dest) = self.sides[out].peer else {
                    continue;
                };
                let dest_connected = self.connected && self.sides[out].latched;
                let raw = match dest {
                    SocketAddr::V4(a) => libc::sockaddr_in {
                        sin_family: libc::AF_INET as u16,
                        sin_port: a.port().to_be(),
                        sin_addr: libc::in_addr {
                            s_addr: u32::from(*a.ip()).to_be(),
                        },
                        sin_zero: [0; 8],
                    },
                    SocketAddr::V6(_) => continue,
                };
                for i in 0..got as usize {
                    iov[i].iov_len = hdrs[i].msg_len as usize;
                    names[i] = raw;
                    if dest_connected {
                        hdrs[i].msg_hdr.msg_name = std::ptr::null_mut();
                        hdrs[i].msg_hdr.msg_namelen = 0;
                    }
                }
                let out_fd = self.sides[out].socket.as_raw_fd();
                unsafe {
                    libc::sendmmsg(out_fd, hdrs.as_mut_ptr(), got as u32, libc::MSG_DONTWAIT)
                };
            }
        }
    }

    fn serve_ng(&mut self) {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = self.ng.recv_from(&mut buf) {
            let Some(space) = buf[..n].iter().position(|&b| b == b' ') else {
                continue;
            };
            let reply = match bencode::decode(&buf[space + 1..n]) {
                Ok(req) => self.answer(&req),
                Err(e) => dict([
                    ("result", Value::str("error")),
                    ("error-reason", Value::string(e.to_string())),
                ]),
            };
            let mut wire = buf[..=space].to_vec();
            bencode::encode_into(&reply, &mut wire);
            let _ = self.ng.send_to(&wire, from);
        }
    }

    fn answer(&mut self, req: &Value<'_>) -> Value<'static> {
        let error = |why: &str| {
            dict([
                ("result", Value::str("error")),
                ("error-reason", Value::string(why.to_string())),
            ])
        };
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
                    for s in [pair, pair + 1] {
                        unsafe {
                            libc::epoll_ctl(
                                self.epoll,
                                libc::EPOLL_CTL_DEL,
                                self.sides[s].socket.as_raw_fd(),
                                std::ptr::null_mut(),
                            )
                        };
                        // Keep the slot (indices are tokens) but release the port.
                        self.sides[s].socket =
                            UdpSocket::bind("127.0.0.1:0").expect("loopback bind");
                        self.sides[s].peer = None;
                    }
                    dict([("result", Value::str("ok"))])
                }
                None => error("Call-ID not found"),
            },
            "offer" | "answer" => {
                let Some(Ok(sdp)) = req.get("sdp").and_then(Value::as_str).map(Sdp::parse) else {
                    return error("bad SDP");
                };
                let Some(target) = sdp.media.first().and_then(|m| m.rtp_target()) else {
                    return error("no media");
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
                // The offerer (A) is reached through side `pair`, the answerer through `pair + 1`;
                // the SDP goes to the other party, naming the socket it should send to.
                let (own, other) = if command == "offer" {
                    (pair, pair + 1)
                } else {
                    (pair + 1, pair)
                };
                self.sides[own].peer = Some(target);
                let port = self.sides[other]
                    .socket
                    .local_addr()
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
            _ => error("unsupported"),
        }
    }

    fn new_pair(&mut self) -> std::io::Result<usize> {
        let first = self.sides.len();
        for i in 0..2 {
            let socket = UdpSocket::bind("127.0.0.1:0")?;
            socket.set_nonblocking(true)?;
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: (first + i) as u64,
            };
            // SAFETY: live epoll and socket descriptors.
            unsafe {
                libc::epoll_ctl(self.epoll, libc::EPOLL_CTL_ADD, socket.as_raw_fd(), &mut ev)
            };
            self.sides.push(Side {
                socket,
                peer: None,
                latched: false,
            });
        }
        Ok(first)
    }
}
