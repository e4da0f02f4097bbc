//! `tandem-bench sip`: a SIP call generator (UAC) and an answering endpoint (UAS).
//!
//! The UAC places calls at a paced rate with a concurrency cap: INVITE with an SDP offer,
//! retransmitted per Timer A until a response (Timer B → counted as 408), ACK for every final
//! response (end to end for 2xx, through the Record-Route set), optional 20 ms PCMA media to the
//! answered address, BYE after the hold time (Timer E/F). A BYE from the far end is answered and
//! counted. The UAS registers its users with digest authentication, answers every INVITE
//! (retransmitting its 2xx until the ACK), echoes RTP, and takes CANCEL and BYE. One thread and
//! two UDP sockets each, so thousands of calls cost no file descriptors per call.
//!
//! Messages are read with Tandem's own SIP parser (`tandem_controlplane::sip::message`); the
//! generator checks Kamailio and SIPp the same way it checks Tandem.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use tandem_controlplane::sdp::Sdp;
use tandem_controlplane::sip::digest;
use tandem_controlplane::sip::message::{Message, Method};

const T1: Duration = Duration::from_millis(500);
const RTP_PACKET: usize = 172;

#[derive(Debug, Clone)]
pub struct UacConfig {
    pub target: SocketAddr,
    pub local: SocketAddr,
    pub cps: f64,
    pub max_concurrent: usize,
    pub calls: usize,
    pub duration_s: Option<f64>,
    pub hold_ms: u64,
    pub to_user: String,
    /// Dial `to_user` + 0..n (numbers in a range), when set.
    pub to_user_range: Option<u32>,
    pub from_user: String,
    pub rtp: bool,
}

impl Default for UacConfig {
    fn default() -> Self {
        UacConfig {
            target: SocketAddr::from(([127, 0, 0, 1], 5060)),
            local: SocketAddr::from(([127, 0, 0, 1], 0)),
            cps: 10.0,
            max_concurrent: 1000,
            calls: 100,
            duration_s: None,
            hold_ms: 1000,
            to_user: "1000".into(),
            to_user_range: None,
            from_user: "bench".into(),
            rtp: false,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct UacReport {
    pub attempted: u64,
    pub answered: u64,
    pub failed: u64,
    /// Final status codes of failed calls (408 includes our own Timer B).
    pub failed_by_code: BTreeMap<u16, u64>,
    pub ended_by_remote: u64,
    pub bye_failed: u64,
    pub setup_p50_ms: f64,
    pub setup_p90_ms: f64,
    pub setup_p99_ms: f64,
    pub setup_max_ms: f64,
    pub elapsed_s: f64,
    pub achieved_cps: f64,
    pub rtp_sent: u64,
    pub rtp_received: u64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct UacProgress {
    pub elapsed_s: f64,
    pub attempted: u64,
    pub answered: u64,
    pub failed: u64,
    pub active: usize,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum UacState {
    Inviting,
    Ringing,
    Talking,
    Hanging,
}

struct UacCall {
    state: UacState,
    invite: Vec<u8>,
    branch: String,
    sent_at: Instant,
    retransmit_at: Instant,
    interval: Duration,
    give_up_at: Instant,
    to: String,
    request_uri: String,
    routes: Vec<String>,
    ack: Option<Vec<u8>>,
    bye: Option<Vec<u8>>,
    hangup_at: Option<Instant>,
    rtp_to: Option<SocketAddr>,
    rtp_seq: u16,
}

fn sdp_offer(ip: std::net::IpAddr, port: u16) -> String {
    format!(
        "v=0\r\no=bench 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    )
}

fn rtp_target(sdp: &str) -> Option<SocketAddr> {
    let sdp = Sdp::parse(sdp).ok()?;
    sdp.media.iter().find(|m| m.kind == "audio")?.rtp_target()
}

fn rtp_packet(seq: u16, ssrc: u32) -> [u8; RTP_PACKET] {
    let mut p = [0xd5u8; RTP_PACKET];
    p[0] = 0x80;
    p[1] = 8;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p
}

/// Places calls and returns the tally. `progress` is called about once a second.
pub fn run_uac(
    cfg: &UacConfig,
    mut progress: impl FnMut(&UacProgress),
) -> anyhow::Result<UacReport> {
    let sip = UdpSocket::bind(cfg.local)?;
    sip.set_nonblocking(true)?;
    let local = sip.local_addr()?;
    let rtp = UdpSocket::bind(SocketAddr::new(local.ip(), 0))?;
    rtp.set_nonblocking(true)?;
    let rtp_port = rtp.local_addr()?.port();
    let mut report = UacReport::default();
    let mut setup = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let mut calls: HashMap<String, UacCall> = HashMap::new();
    let start = Instant::now();
    let deadline = cfg.duration_s.map(|s| start + Duration::from_secs_f64(s));
    let pace = Duration::from_secs_f64(1.0 / cfg.cps.max(0.001));
    let mut next_call_at = start;
    let mut last_launch = start;
    let mut next_progress = start + Duration::from_secs(1);
    let mut next_rtp = start;
    let mut buf = vec![0u8; 65_535];
    let run = std::process::id();

    loop {
        let now = Instant::now();
        let launching = report.attempted < cfg.calls as u64 && deadline.is_none_or(|d| now < d);
        if !launching && calls.is_empty() {
            break;
        }
        // Launch calls that are due (catching up after a slow iteration, within the cap).
        while launching
            && now >= next_call_at
            && calls.len() < cfg.max_concurrent
            && report.attempted < cfg.calls as u64
        {
            let n = report.attempted;
            report.attempted += 1;
            next_call_at += pace;
            last_launch = now;
            let user = match cfg.to_user_range {
                Some(range) if range > 0 => match cfg.to_user.parse::<u64>() {
                    Ok(base) => (base + n % u64::from(range)).to_string(),
                    Err(_) => format!("{}{}", cfg.to_user, n % u64::from(range)),
                },
                _ => cfg.to_user.clone(),
            };
            let call_id = format!("b{n}-{run}@bench");
            let branch = format!("z9hG4bKb{run}i{n}");
            let request_uri = format!("sip:{user}@{}", cfg.target);
            let to = format!("<sip:{user}@{}>", cfg.target);
            let mut invite = Message::request(Method::Invite, request_uri.clone());
            invite
                .push("Via", format!("SIP/2.0/UDP {local};branch={branch};rport"))
                .push("From", format!("<sip:{}@{local}>;tag=f{n}", cfg.from_user))
                .push("To", to.clone())
                .push("Call-ID", call_id.clone())
                .push("CSeq", "1 INVITE")
                .push("Contact", format!("<sip:{}@{local}>", cfg.from_user))
                .push("Max-Forwards", "70");
            invite.set_body(
                "application/sdp",
                sdp_offer(local.ip(), rtp_port).into_bytes(),
            );
            let bytes = invite.to_bytes();
            let _ = sip.send_to(&bytes, cfg.target);
            calls.insert(
                call_id,
                UacCall {
                    state: UacState::Inviting,
                    invite: bytes,
                    branch,
                    sent_at: now,
                    retransmit_at: now + T1,
                    interval: T1,
                    give_up_at: now + T1 * 64,
                    to,
                    request_uri,
                    routes: Vec::new(),
                    ack: None,
                    bye: None,
                    hangup_at: None,
                    rtp_to: None,
                    rtp_seq: 0,
                },
            );
        }
        if !launching && next_call_at > now {
            next_call_at = now;
        }

        // Receive: poll(2) waits with a high-resolution timer; SO_RCVTIMEO rounds up to
        // scheduler ticks and would add milliseconds to every measured setup time.
        wait_readable(&[&sip, &rtp], 1);
        while let Ok((n, from)) = sip.recv_from(&mut buf) {
            let Ok(msg) = Message::parse(&buf[..n]) else {
                continue;
            };
            let now = Instant::now();
            if msg.is_request() {
                let method = msg.method().cloned();
                let mut ok = Message::response_to(&msg, 200, None);
                if method == Some(Method::Bye) {
                    if let Some(c) = calls.remove(msg.call_id()) {
                        if c.state == UacState::Talking {
                            report.ended_by_remote += 1;
                        }
                    }
                } else if method == Some(Method::Ack) {
                    continue;
                }
                ok.remove("Content-Length");
                let _ = sip.send_to(&ok.to_bytes(), from);
                continue;
            }
            let code = msg.status().unwrap_or(0);
            let Some((_, method)) = msg.cseq() else {
                continue;
            };
            let call_id = msg.call_id().to_string();
            let Some(c) = calls.get_mut(&call_id) else {
                continue;
            };
            match (method, code) {
                (Method::Invite, 100..=199) if c.state == UacState::Inviting => {
                    c.state = UacState::Ringing;
                }
                (Method::Invite, 200..=299) => {
                    if c.state == UacState::Talking || c.state == UacState::Hanging {
                        if let Some(ack) = &c.ack {
                            let _ = sip.send_to(ack, cfg.target);
                        }
                        continue;
                    }
                    let elapsed = now.duration_since(c.sent_at);
                    let _ = setup.record(elapsed.as_micros().max(1) as u64);
                    report.answered += 1;
                    c.state = UacState::Talking;
                    c.to = msg.get("To").unwrap_or_default().to_string();
                    if let Some(contact) = msg.contact_uri() {
                        c.request_uri = contact.to_string();
                    }
                    c.routes = msg.get_all("Record-Route").map(str::to_string).collect();
                    c.routes.reverse();
                    c.rtp_to = msg.body_str().and_then(rtp_target);
                    let mut ack = Message::request(Method::Ack, c.request_uri.clone());
                    ack.push(
                        "Via",
                        format!("SIP/2.0/UDP {local};branch={}a;rport", c.branch),
                    );
                    in_dialog_headers(&mut ack, &msg, c, "1 ACK");
                    let bytes = ack.to_bytes();
                    let _ = sip.send_to(&bytes, cfg.target);
                    c.ack = Some(bytes);
                    c.hangup_at = Some(now + Duration::from_millis(cfg.hold_ms));
                }
                (Method::Invite, 300..) => {
                    // ACK in the INVITE's transaction, then count the failure.
                    let mut ack = Message::request(Method::Ack, c.request_uri.clone());
                    ack.push(
                        "Via",
                        format!("SIP/2.0/UDP {local};branch={};rport", c.branch),
                    );
                    in_dialog_headers(&mut ack, &msg, c, "1 ACK");
                    let _ = sip.send_to(&ack.to_bytes(), cfg.target);
                    if matches!(c.state, UacState::Inviting | UacState::Ringing) {
                        report.failed += 1;
                        *report.failed_by_code.entry(code).or_default() += 1;
                        calls.remove(&call_id);
                    }
                }
                (Method::Bye, 200..) => {
                    if code >= 300 {
                        report.bye_failed += 1;
                    }
                    calls.remove(&call_id);
                }
                _ => {}
            }
        }

        // Timers: retransmissions, time-outs, hang-ups.
        let now = Instant::now();
        let mut finished = Vec::new();
        for (id, c) in calls.iter_mut() {
            match c.state {
                UacState::Inviting if now >= c.give_up_at => {
                    report.failed += 1;
                    *report.failed_by_code.entry(408).or_default() += 1;
                    finished.push(id.clone());
                }
                UacState::Inviting if now >= c.retransmit_at => {
                    let _ = sip.send_to(&c.invite, cfg.target);
                    c.interval *= 2;
                    c.retransmit_at = now + c.interval;
                }
                UacState::Ringing if now >= c.give_up_at + Duration::from_secs(120) => {
                    report.failed += 1;
                    *report.failed_by_code.entry(408).or_default() += 1;
                    finished.push(id.clone());
                }
                UacState::Talking if c.hangup_at.is_some_and(|t| now >= t) => {
                    let mut bye = Message::request(Method::Bye, c.request_uri.clone());
                    bye.push(
                        "Via",
                        format!("SIP/2.0/UDP {local};branch={}b;rport", c.branch),
                    );
                    let from = format!("<sip:{}@{local}>", cfg.from_user);
                    bye.push("From", format!("{from};tag=f{}", tag_index(id)));
                    bye.push("To", c.to.clone());
                    bye.push("Call-ID", id.clone());
                    bye.push("CSeq", "2 BYE");
                    for r in &c.routes {
                        bye.push("Route", r.clone());
                    }
                    bye.push("Max-Forwards", "70");
                    let bytes = bye.to_bytes();
                    let _ = sip.send_to(&bytes, cfg.target);
                    c.bye = Some(bytes);
                    c.state = UacState::Hanging;
                    c.interval = T1;
                    c.retransmit_at = now + T1;
                    c.give_up_at = now + T1 * 64;
                    c.rtp_to = None;
                }
                UacState::Hanging if now >= c.give_up_at => {
                    report.bye_failed += 1;
                    finished.push(id.clone());
                }
                UacState::Hanging if now >= c.retransmit_at => {
                    if let Some(bye) = &c.bye {
                        let _ = sip.send_to(bye, cfg.target);
                    }
                    c.interval = (c.interval * 2).min(Duration::from_secs(4));
                    c.retransmit_at = now + c.interval;
                }
                _ => {}
            }
        }
        for id in finished {
            calls.remove(&id);
        }

        // Media: one 20 ms packet per talking call, received packets counted.
        if cfg.rtp {
            if now >= next_rtp {
                next_rtp += Duration::from_millis(20);
                for (i, c) in calls.values_mut().enumerate() {
                    if let Some(to) = c.rtp_to {
                        c.rtp_seq = c.rtp_seq.wrapping_add(1);
                        let p = rtp_packet(c.rtp_seq, 0x1000 + i as u32);
                        if rtp.send_to(&p, to).is_ok() {
                            report.rtp_sent += 1;
                        }
                    }
                }
            }
            while rtp.recv_from(&mut buf).is_ok() {
                report.rtp_received += 1;
            }
        }

        if now >= next_progress {
            next_progress += Duration::from_secs(1);
            progress(&UacProgress {
                elapsed_s: start.elapsed().as_secs_f64(),
                attempted: report.attempted,
                answered: report.answered,
                failed: report.failed,
                active: calls.len(),
            });
        }
    }
    report.elapsed_s = start.elapsed().as_secs_f64();
    // Calls launched per second over the launching period (one pace interval per call).
    let launching_s = last_launch.duration_since(start).as_secs_f64() + pace.as_secs_f64();
    report.achieved_cps = report.attempted as f64 / launching_s.max(1e-3);
    let ms = |q: f64| setup.value_at_quantile(q) as f64 / 1000.0;
    if !setup.is_empty() {
        report.setup_p50_ms = ms(0.5);
        report.setup_p90_ms = ms(0.9);
        report.setup_p99_ms = ms(0.99);
        report.setup_max_ms = setup.max() as f64 / 1000.0;
    }
    Ok(report)
}

fn wait_readable(sockets: &[&UdpSocket], timeout_ms: i32) {
    use std::os::fd::AsRawFd;
    let mut fds: Vec<libc::pollfd> = sockets
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures for the call's duration.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
}

fn tag_index(call_id: &str) -> &str {
    call_id
        .strip_prefix('b')
        .and_then(|s| s.split('-').next())
        .unwrap_or("0")
}

fn in_dialog_headers(m: &mut Message, res: &Message, c: &UacCall, cseq: &str) {
    if let Some(from) = res.get("From") {
        m.push("From", from.to_string());
    }
    m.push("To", res.get("To").unwrap_or(&c.to).to_string());
    m.push("Call-ID", res.call_id().to_string());
    m.push("CSeq", cseq);
    for r in &c.routes {
        m.push("Route", r.clone());
    }
    m.push("Max-Forwards", "70");
}

pub fn format_uac_report(label: &str, r: &UacReport) -> String {
    let codes: String = r
        .failed_by_code
        .iter()
        .map(|(c, n)| format!(" {c}×{n}"))
        .collect();
    format!(
        "{label}\n{:>9} {:>9} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9}\n{:>9} {:>9} {:>7} {:>8.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n  failed by code:{}\n  ended by the far end: {}, BYE failures: {}; RTP sent {}, received {}; {:.1} s\n",
        "attempted", "answered", "failed", "cps", "setup p50", "p90 ms", "p99 ms", "max ms",
        r.attempted, r.answered, r.failed, r.achieved_cps, r.setup_p50_ms, r.setup_p90_ms,
        r.setup_p99_ms, r.setup_max_ms,
        if codes.is_empty() { " none".to_string() } else { codes },
        r.ended_by_remote, r.bye_failed, r.rtp_sent, r.rtp_received, r.elapsed_s
    )
}

#[derive(Debug, Clone)]
pub struct UasConfig {
    pub listen: SocketAddr,
    /// Register these users (with `password`, in `domain`) at this registrar before answering.
    pub registrar: Option<SocketAddr>,
    pub users: Vec<String>,
    pub password: String,
    pub domain: String,
    pub ring_ms: u64,
    /// Users whose phones take one codec other than PCMA, by its SDP encoding name
    /// (`("agent3", "G722")`): they answer in it when the offer carries it and refuse the call
    /// (488) when it does not. Everyone else answers PCMA.
    pub codecs: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct UasStats {
    pub registered: u64,
    pub answered: u64,
    pub byes: u64,
    pub cancelled: u64,
    pub rtp_echoed: u64,
}

struct Answering {
    ok: Vec<u8>,
    peer: SocketAddr,
    retransmit_at: Instant,
    interval: Duration,
    give_up_at: Instant,
}

/// Answers calls until `stop` is set; registers (and re-registers) its users first.
pub fn run_uas(
    cfg: &UasConfig,
    stop: &std::sync::atomic::AtomicBool,
    mut on_stats: impl FnMut(&UasStats),
) -> anyhow::Result<UasStats> {
    use std::sync::atomic::Ordering;
    let sip = UdpSocket::bind(cfg.listen)?;
    sip.set_nonblocking(true)?;
    let local = sip.local_addr()?;
    let rtp = UdpSocket::bind(SocketAddr::new(local.ip(), 0))?;
    rtp.set_nonblocking(true)?;
    let rtp_port = rtp.local_addr()?.port();
    let mut stats = UasStats::default();
    let mut answering: HashMap<String, Answering> = HashMap::new();
    let mut ringing: Vec<(Instant, Message, SocketAddr)> = Vec::new();
    let mut buf = vec![0u8; 65_535];
    // Registrations are paced (a window of REGISTERs in flight) and retried when unanswered:
    // ten thousand at once would only overflow socket buffers.
    let mut to_register: std::collections::VecDeque<String> = cfg.users.iter().cloned().collect();
    let mut in_flight: HashMap<String, Instant> = HashMap::new();
    let mut refresh: Vec<(Instant, String)> = Vec::new();
    const REGISTER_WINDOW: usize = 200;
    let mut cseq = 1u32;
    let mut next_report = Instant::now() + Duration::from_secs(1);

    let register = |user: &str, cseq: u32, auth: Option<String>| -> Vec<u8> {
        let mut m = Message::request(Method::Register, format!("sip:{}", cfg.domain));
        m.push(
            "Via",
            format!("SIP/2.0/UDP {local};branch=z9hG4bKr{user}{cseq};rport"),
        )
        .push("From", format!("<sip:{user}@{}>;tag=r{user}", cfg.domain))
        .push("To", format!("<sip:{user}@{}>", cfg.domain))
        .push("Call-ID", format!("reg-{user}-{}@bench", local.port()))
        .push("CSeq", format!("{cseq} REGISTER"))
        .push("Contact", format!("<sip:{user}@{local}>"))
        .push("Expires", "300")
        .push("Max-Forwards", "70");
        if let Some(a) = auth {
            m.push("Authorization", a);
        }
        m.to_bytes()
    };

    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if let Some(registrar) = cfg.registrar {
            in_flight.retain(|user, sent| {
                let alive = now.duration_since(*sent) < Duration::from_secs(2);
                if !alive {
                    to_register.push_back(user.clone());
                }
                alive
            });
            refresh.retain(|(at, user)| {
                if *at <= now {
                    to_register.push_back(user.clone());
                    return false;
                }
                true
            });
            while in_flight.len() < REGISTER_WINDOW {
                let Some(user) = to_register.pop_front() else {
                    break;
                };
                cseq += 1;
                let _ = sip.send_to(&register(&user, cseq, None), registrar);
                in_flight.insert(user, now);
            }
        }
        wait_readable(&[&sip, &rtp], 1);
        while let Ok((n, from)) = sip.recv_from(&mut buf) {
            let Ok(msg) = Message::parse(&buf[..n]) else {
                continue;
            };
            if let Some(code) = msg.status() {
                if msg.cseq().is_some_and(|(_, m)| m == Method::Register) {
                    let user = msg
                        .get("To")
                        .and_then(|t| t.split("sip:").nth(1))
                        .and_then(|t| t.split('@').next())
                        .unwrap_or_default()
                        .to_string();
                    match code {
                        401 => {
                            let challenge = msg.get("WWW-Authenticate").unwrap_or_default();
                            let uri = format!("sip:{}", cfg.domain);
                            if let Some(auth) = digest::authorize(
                                challenge,
                                &user,
                                &cfg.password,
                                "REGISTER",
                                &uri,
                                "benchcnonce",
                                1,
                            ) {
                                cseq += 1;
                                let _ = sip.send_to(&register(&user, cseq, Some(auth)), from);
                            }
                        }
                        200 if in_flight.remove(&user).is_some() => {
                            stats.registered += 1;
                            // Expires is 300 s: refresh at half-time.
                            refresh.push((now + Duration::from_secs(150), user));
                        }
                        _ => {}
                    }
                }
                continue;
            }
            let Some(method) = msg.method().cloned() else {
                continue;
            };
            match method {
                Method::Invite => {
                    if answering.contains_key(msg.call_id()) {
                        continue; // a retransmission; our 2xx retransmits itself
                    }
                    let trying = Message::response_to(&msg, 180, Some("uas"));
                    let _ = sip.send_to(&trying.to_bytes(), from);
                    // From the moment it arrived, not the loop's start (up to a poll interval earlier).
                    ringing.push((
                        Instant::now() + Duration::from_millis(cfg.ring_ms),
                        msg,
                        from,
                    ));
                }
                Method::Ack => {
                    answering.remove(msg.call_id());
                }
                Method::Bye => {
                    stats.byes += 1;
                    answering.remove(msg.call_id());
                    let _ = sip.send_to(&Message::response_to(&msg, 200, None).to_bytes(), from);
                }
                Method::Cancel => {
                    stats.cancelled += 1;
                    ringing.retain(|(_, m, _)| m.call_id() != msg.call_id());
                    let _ = sip.send_to(&Message::response_to(&msg, 200, None).to_bytes(), from);
                }
                _ => {
                    let _ = sip.send_to(&Message::response_to(&msg, 200, None).to_bytes(), from);
                }
            }
        }
        let now = Instant::now();
        let mut i = 0;
        while i < ringing.len() {
            if ringing[i].0 > now {
                i += 1;
                continue;
            }
            let (_, invite, peer) = ringing.swap_remove(i);
            let Some(format) = answer_format(&invite, &cfg.codecs) else {
                let refused = Message::response_to(&invite, 488, Some("uas"));
                let _ = sip.send_to(&refused.to_bytes(), peer);
                continue;
            };
            let mut ok = Message::response_to(&invite, 200, Some("uas"));
            ok.push("Contact", format!("<sip:uas@{local}>"));
            ok.set_body(
                "application/sdp",
                format!(
                    "v=0\r\no=uas 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {rtp_port} RTP/AVP {pt}\r\na=rtpmap:{pt} {rtpmap}\r\n",
                    ip = local.ip(),
                    pt = format.0,
                    rtpmap = format.1,
                )
                .into_bytes(),
            );
            let bytes = ok.to_bytes();
            let _ = sip.send_to(&bytes, peer);
            stats.answered += 1;
            answering.insert(
                invite.call_id().to_string(),
                Answering {
                    ok: bytes,
                    peer,
                    retransmit_at: now + T1,
                    interval: T1,
                    give_up_at: now + T1 * 64,
                },
            );
        }
        answering.retain(|_, a| {
            if now >= a.give_up_at {
                return false;
            }
            if now >= a.retransmit_at {
                let _ = sip.send_to(&a.ok, a.peer);
                a.interval = (a.interval * 2).min(Duration::from_secs(4));
                a.retransmit_at = now + a.interval;
            }
            true
        });
        while let Ok((n, from)) = rtp.recv_from(&mut buf) {
            if rtp.send_to(&buf[..n], from).is_ok() {
                stats.rtp_echoed += 1;
            }
        }
        if now >= next_report {
            next_report += Duration::from_secs(1);
            on_stats(&stats);
        }
    }
    Ok(stats)
}

/// The payload type and rtpmap a phone answers `invite` with: PCMA, or the one codec its user
/// takes (`codecs`) when the offer carries it (None: it does not).
fn answer_format(invite: &Message, codecs: &[(String, String)]) -> Option<(u8, String)> {
    let user = invite
        .request_uri()
        .and_then(|u| u.strip_prefix("sip:"))
        .and_then(|u| u.split('@').next())
        .unwrap_or_default();
    let Some((_, encoding)) = codecs.iter().find(|(u, _)| u == user) else {
        return Some((8, "PCMA/8000".into()));
    };
    let offer = Sdp::parse(invite.body_str()?).ok()?;
    let audio = offer.media.iter().find(|m| m.kind == "audio")?;
    let format = audio
        .payload_formats()
        .into_iter()
        .find(|f| f.encoding.eq_ignore_ascii_case(encoding))?;
    Some((format.payload_type, format.rtpmap()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn uac_against_uas_directly() {
        let stop = Arc::new(AtomicBool::new(false));
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let listen = probe.local_addr().unwrap();
        drop(probe);
        let uas_stop = stop.clone();
        let uas = std::thread::spawn(move || {
            let cfg = UasConfig {
                listen,
                registrar: None,
                users: vec![],
                password: String::new(),
                domain: "x".into(),
                ring_ms: 10,
                codecs: Vec::new(),
            };
            run_uas(&cfg, &uas_stop, |_| {}).unwrap()
        });
        std::thread::sleep(Duration::from_millis(100));
        let cfg = UacConfig {
            target: listen,
            cps: 50.0,
            calls: 20,
            hold_ms: 200,
            rtp: true,
            ..UacConfig::default()
        };
        let report = run_uac(&cfg, |_| {}).unwrap();
        stop.store(true, Ordering::Relaxed);
        let uas = uas.join().unwrap();
        assert_eq!(report.answered, 20, "{report:?}");
        assert_eq!(report.failed, 0);
        assert_eq!(uas.byes, 20);
        assert!(report.rtp_received > 0 && report.rtp_sent > 0, "{report:?}");
        assert!(report.setup_p50_ms >= 10.0, "ring time is part of setup");
    }

    #[test]
    fn a_phone_with_its_own_codec_answers_in_it_or_refuses() {
        let mut invite = Message::request(Method::Invite, "sip:agent3@127.0.0.1:5070");
        invite.set_body(
            "application/sdp",
            b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/AVP 8 9 101\r\n".to_vec(),
        );
        let g722 = vec![("agent3".to_string(), "G722".to_string())];
        assert_eq!(answer_format(&invite, &g722), Some((9, "G722/8000".into())));
        assert_eq!(answer_format(&invite, &[]), Some((8, "PCMA/8000".into())));
        let opus = vec![("agent3".to_string(), "opus".to_string())];
        assert_eq!(answer_format(&invite, &opus), None);
    }

    #[test]
    fn nobody_answering_is_a_408_per_call() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let cfg = UacConfig {
            target: silent.local_addr().unwrap(),
            cps: 100.0,
            calls: 2,
            ..UacConfig::default()
        };
        // Timer B is 32 s: this test is slow by nature, so keep it to two calls.
        let report = run_uac(&cfg, |_| {}).unwrap();
        assert_eq!(report.failed_by_code.get(&408), Some(&2));
    }
}
