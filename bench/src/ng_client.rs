//! An ng client: `<cookie> <bencode dict>` over UDP.
//!
//! Call setup and teardown are pipelined: a bounded number of requests are in flight at once (so
//! the relay is neither flooded nor idle between round trips), and a request unanswered after the
//! timeout is retransmitted under the same cookie, so a relay that did answer the first copy can
//! recognise the repeat and a late reply still matches.

use anyhow::{anyhow, bail, Context};
use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use tandem_controlplane::bencode::{self, dict, Value};
use tandem_controlplane::sdp::Sdp;

pub struct NgClient {
    socket: UdpSocket,
    server: SocketAddr,
    /// Distinguishes this client's pipelines, so a late reply to an earlier one is ignored.
    batch: u64,
    pub timeout: Duration,
    pub retries: u32,
    /// Most requests in flight at once.
    pub window: usize,
    buf: Vec<u8>,
}

/// What a pipelined job is told about its previous request.
pub enum Event {
    Start,
    Reply(Value<'static>),
    /// No reply after every retransmission, or an undecodable one.
    Failed(String),
}

/// How the deletes went, with the relay's own packet counts where it reports them.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DeleteStats {
    pub ok: usize,
    pub failed: usize,
    /// Sum of `totals.RTP.packets` over the delete replies that carry it (rtpengine does).
    pub relay_rtp_packets: Option<i64>,
}

/// The reason an ng reply is not `ok`, as the bench groups failures ("load limit", ...).
pub fn refusal(reply: &Value<'_>) -> Option<String> {
    let result = reply.get("result").and_then(Value::as_str).unwrap_or("");
    if result == "ok" || result == "pong" {
        return None;
    }
    let reason = reply.get("error-reason").and_then(Value::as_str);
    Some(match (result, reason) {
        ("", None) => "reply without result".into(),
        (r, None) => r.into(),
        (_, Some(why)) => why.into(),
    })
}

/// Where media must be sent, from an offer or answer reply: its SDP's first audio stream.
pub fn reply_rtp_target(reply: &Value<'_>) -> anyhow::Result<SocketAddr> {
    if let Some(why) = refusal(reply) {
        bail!("{why}");
    }
    let text = reply
        .get("sdp")
        .and_then(Value::as_str)
        .context("reply has no SDP")?;
    let sdp = Sdp::parse(text).map_err(|e| anyhow!("reply SDP: {e}"))?;
    sdp.media
        .first()
        .and_then(|m| m.rtp_target())
        .context("reply SDP has no usable audio stream")
}

/// The SDP an endpoint at `media` offers or answers with: PCMU + telephone-event, 20 ms.
pub fn endpoint_sdp(media: SocketAddr) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=bench\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\n\
         a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\na=ptime:20\r\n",
        ip = media.ip(),
        port = media.port()
    )
}

/// An offer (from A, tag `tagA`) or answer (from B, tag `tagB`) as ng_client.py sends them.
pub fn offer_answer_request(command: &str, call_id: &str, media: SocketAddr) -> Value<'static> {
    let mut pairs = vec![
        ("command", Value::string(command.to_string())),
        ("call-id", Value::string(call_id.to_string())),
        ("from-tag", Value::str("tagA")),
        ("sdp", Value::string(endpoint_sdp(media))),
        (
            "replace",
            Value::List(vec![Value::str("origin"), Value::str("session-connection")]),
        ),
        ("ICE", Value::str("remove")),
        ("transport-protocol", Value::str("RTP/AVP")),
    ];
    if command == "answer" {
        pairs.push(("to-tag", Value::str("tagB")));
    }
    dict(pairs)
}

fn delete_request(call_id: &str) -> Value<'static> {
    dict([
        ("command", Value::str("delete")),
        ("call-id", Value::string(call_id.to_string())),
        ("from-tag", Value::str("tagA")),
    ])
}

/// `t<batch>_<job>_<request>` → (batch, job, request); anything else (another client's cookie,
/// garbage) → None. Every request gets its own cookie (a relay caches replies by cookie, so an
/// answer sent under its offer's cookie would get the offer's reply back); retransmits reuse it.
fn parse_cookie(c: &[u8]) -> Option<(u64, usize, u32)> {
    let s = std::str::from_utf8(c.strip_prefix(b"t")?).ok()?;
    let mut parts = s.split('_');
    let cookie = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    parts.next().is_none().then_some(cookie)
}

struct InFlight {
    /// Which of its job's requests this is (part of the cookie).
    request: u32,
    wire: Vec<u8>,
    sent: Instant,
    tries: u32,
}

impl NgClient {
    pub fn new(server: SocketAddr) -> anyhow::Result<Self> {
        let bind: SocketAddr = if server.is_ipv4() {
            "127.0.0.1:0".parse()?
        } else {
            "[::1]:0".parse()?
        };
        let socket = UdpSocket::bind(bind)?;
        Ok(NgClient {
            socket,
            server,
            batch: std::process::id() as u64 * 1000,
            timeout: Duration::from_millis(1000),
            retries: 3,
            window: 16,
            buf: vec![0u8; 65_536],
        })
    }

    /// Runs `jobs` request sequences with at most `window` requests in flight. `step(job, event)`
    /// returns the job's next request, or `None` when the job is finished.
    pub fn pipeline(
        &mut self,
        jobs: usize,
        mut step: impl FnMut(usize, Event) -> Option<Value<'static>>,
    ) -> anyhow::Result<()> {
        self.batch += 1;
        let batch = self.batch;
        let mut flight: Vec<Option<InFlight>> = (0..jobs).map(|_| None).collect();
        let (mut next_job, mut in_flight) = (0usize, 0usize);
        let server = self.server;
        let mut requests = vec![0u32; jobs];
        let mut send = |socket: &UdpSocket, job: usize, req: Value<'static>| -> InFlight {
            requests[job] += 1;
            let request = requests[job];
            let mut wire = format!("t{batch}_{job}_{request} ").into_bytes();
            bencode::encode_into(&req, &mut wire);
            // A failed send is retried by the timeout like a lost datagram.
            let _ = socket.send_to(&wire, server);
            InFlight {
                request,
                wire,
                sent: Instant::now(),
                tries: 1,
            }
        };
        self.socket
            .set_read_timeout(Some(Duration::from_millis(5)))?;
        let mut next_scan = Instant::now();
        while next_job < jobs || in_flight > 0 {
            while in_flight < self.window.max(1) && next_job < jobs {
                let job = next_job;
                next_job += 1;
                if let Some(req) = step(job, Event::Start) {
                    flight[job] = Some(send(&self.socket, job, req));
                    in_flight += 1;
                }
            }
            match self.socket.recv(&mut self.buf) {
                Ok(n) => {
                    let reply = &self.buf[..n];
                    let Some(space) = reply.iter().position(|&b| b == b' ') else {
                        continue;
                    };
                    let Some((b, job, request)) = parse_cookie(&reply[..space]) else {
                        continue;
                    };
                    let current = flight.get(job).and_then(|f| f.as_ref()).map(|f| f.request);
                    if b != batch || current != Some(request) {
                        continue; // late duplicate, or a reply to an earlier request or pipeline
                    }
                    let event = match bencode::decode(&reply[space + 1..]) {
                        Ok(v) => Event::Reply(v.into_owned()),
                        Err(e) => Event::Failed(format!("undecodable ng reply: {e}")),
                    };
                    flight[job] = None;
                    in_flight -= 1;
                    if let Some(req) = step(job, event) {
                        flight[job] = Some(send(&self.socket, job, req));
                        in_flight += 1;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                // ICMP port unreachable from an earlier send: the timeout handles it.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e.into()),
            }
            // Timeouts are checked every 10 ms, not per reply: the scan is over every job.
            let now = Instant::now();
            if now < next_scan {
                continue;
            }
            next_scan = now + Duration::from_millis(10);
            for (job, slot) in flight.iter_mut().enumerate() {
                let Some(f) = slot.as_mut() else {
                    continue;
                };
                if now.duration_since(f.sent) < self.timeout {
                    continue;
                }
                if f.tries <= self.retries {
                    let _ = self.socket.send_to(&f.wire, self.server);
                    f.sent = now;
                    f.tries += 1;
                    continue;
                }
                *slot = None;
                in_flight -= 1;
                let why = format!("no ng reply after {} tries", self.retries + 1);
                if let Some(req) = step(job, Event::Failed(why)) {
                    *slot = Some(send(&self.socket, job, req));
                    in_flight += 1;
                }
            }
        }
        Ok(())
    }

    /// One request, one reply (retransmitted like any pipelined request).
    pub fn call(&mut self, request: &Value<'_>) -> anyhow::Result<Value<'static>> {
        let mut req = Some(request.clone().into_owned());
        let mut out = Err(anyhow!("no reply"));
        self.pipeline(1, |_, ev| match ev {
            Event::Start => req.take(),
            Event::Reply(v) => {
                out = Ok(v);
                None
            }
            Event::Failed(why) => {
                out = Err(anyhow!("{why}"));
                None
            }
        })?;
        out
    }

    pub fn ping(&mut self) -> anyhow::Result<()> {
        let r = self.call(&dict([("command", Value::str("ping"))]))?;
        match r.get("result").and_then(Value::as_str) {
            Some("pong") => Ok(()),
            other => bail!("ping answered {other:?}"),
        }
    }

    /// Offer (from A) then answer (from B) for every call, pipelined. Per call: the address A
    /// must send to (from the answer SDP) and the one B must send to (from the offer SDP), or
    /// why the call could not be set up.
    pub fn setup_calls(
        &mut self,
        calls: &[(String, SocketAddr, SocketAddr)],
    ) -> anyhow::Result<Vec<Result<(SocketAddr, SocketAddr), String>>> {
        let mut out: Vec<Result<(SocketAddr, SocketAddr), String>> =
            vec![Err("not attempted".into()); calls.len()];
        // The B-side target learnt from each offer reply, until its answer comes back.
        let mut to_b: Vec<Option<SocketAddr>> = vec![None; calls.len()];
        self.pipeline(calls.len(), |i, ev| {
            let (id, a, b) = &calls[i];
            match ev {
                Event::Start => Some(offer_answer_request("offer", id, *a)),
                Event::Failed(why) => {
                    out[i] = Err(why);
                    None
                }
                Event::Reply(r) => match (reply_rtp_target(&r), to_b[i]) {
                    (Err(e), _) => {
                        out[i] = Err(e.to_string());
                        None
                    }
                    (Ok(offer_target), None) => {
                        to_b[i] = Some(offer_target);
                        Some(offer_answer_request("answer", id, *b))
                    }
                    (Ok(answer_target), Some(b_target)) => {
                        out[i] = Ok((answer_target, b_target));
                        None
                    }
                },
            }
        })?;
        Ok(out)
    }

    /// Deletes every call, pipelined.
    pub fn delete_calls(&mut self, ids: &[String]) -> anyhow::Result<DeleteStats> {
        let mut stats = DeleteStats::default();
        self.pipeline(ids.len(), |i, ev| {
            match ev {
                Event::Start => return Some(delete_request(&ids[i])),
                Event::Reply(r) if refusal(&r).is_none() => {
                    stats.ok += 1;
                    if let Some(p) = delete_rtp_packets(&r) {
                        *stats.relay_rtp_packets.get_or_insert(0) += p;
                    }
                }
                _ => stats.failed += 1,
            }
            None
        })?;
        Ok(stats)
    }
}

/// `totals.RTP.packets` of a delete reply.
pub fn delete_rtp_packets(reply: &Value<'_>) -> Option<i64> {
    reply
        .get("totals")
        .and_then(|t| t.get("RTP"))
        .and_then(|t| t.get("packets"))
        .and_then(Value::as_int)
}

/// Failure reasons with how often each happened, for the report.
pub fn count_failures<'a>(why: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for w in why {
        *m.entry(w.to_string()).or_insert(0) += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(b: &[u8]) -> Value<'static> {
        bencode::decode(b).unwrap().into_owned()
    }

    #[test]
    fn extracts_the_port_from_an_rtpengine_style_reply() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                   m=audio 30012 RTP/AVP 0 101\r\na=rtcp:30013\r\n";
        let reply = dict([("result", Value::str("ok")), ("sdp", Value::str(sdp))]);
        let wire = bencode::encode(&reply);
        let target = reply_rtp_target(&decode(&wire)).unwrap();
        assert_eq!(target, "127.0.0.1:30012".parse().unwrap());
    }

    #[test]
    fn bad_replies_are_errors_not_panics() {
        let load = decode(b"d6:result5:error12:error-reason10:load limite");
        assert_eq!(
            reply_rtp_target(&load).unwrap_err().to_string(),
            "load limit"
        );
        assert!(reply_rtp_target(&decode(b"d6:result2:oke")).is_err());
        assert!(reply_rtp_target(&decode(b"d6:result2:ok3:sdp3:xyze")).is_err());
        assert!(reply_rtp_target(&decode(b"le")).is_err());
        let no_port = dict([
            ("result", Value::str("ok")),
            (
                "sdp",
                Value::str("v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 0 RTP/AVP 0\r\n"),
            ),
        ]);
        assert!(reply_rtp_target(&no_port).is_err());
    }

    #[test]
    fn reads_delete_totals() {
        let r = decode(b"d6:result2:ok6:totalsd3:RTPd7:packetsi42eeee");
        assert_eq!(delete_rtp_packets(&r), Some(42));
        assert_eq!(delete_rtp_packets(&decode(b"d6:result2:oke")), None);
    }

    #[test]
    fn cookies_round_trip_and_reject_garbage() {
        assert_eq!(parse_cookie(b"t12_7_2"), Some((12, 7, 2)));
        assert_eq!(parse_cookie(b"x12_7_2"), None);
        assert_eq!(parse_cookie(b"t12_7"), None);
        assert_eq!(parse_cookie(b"t12_7_2_1"), None);
        assert_eq!(parse_cookie(b"t_\xff"), None);
    }

    #[test]
    fn counts_failure_reasons() {
        let m = count_failures(["load limit", "load limit", "timeout"]);
        assert_eq!(m["load limit"], 2);
        assert_eq!(m["timeout"], 1);
    }
}
