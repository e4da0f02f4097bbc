//! A blocking ng client: offer/answer/delete over UDP with retransmission under the same cookie.

use anyhow::{anyhow, bail, Context};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use tandem_controlplane::bencode::{self, dict, Value};
use tandem_controlplane::sdp::Sdp;

pub struct NgClient {
    socket: UdpSocket,
    server: SocketAddr,
    next_cookie: u64,
    pub timeout: Duration,
    pub retries: u32,
    buf: Vec<u8>,
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
            next_cookie: std::process::id() as u64 * 1_000_000,
            timeout: Duration::from_millis(1000),
            retries: 3,
            buf: vec![0u8; 65_536],
        })
    }

    /// Sends a request and returns the reply dictionary; retransmits with the same cookie.
    pub fn call(&mut self, request: &Value<'_>) -> anyhow::Result<Value<'static>> {
        self.next_cookie += 1;
        let cookie = format!("b{}", self.next_cookie);
        let mut wire = cookie.clone().into_bytes();
        wire.push(b' ');
        bencode::encode_into(request, &mut wire);
        for _ in 0..=self.retries {
            self.socket.send_to(&wire, self.server)?;
            let deadline = Instant::now() + self.timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                self.socket.set_read_timeout(Some(left))?;
                let n = match self.socket.recv(&mut self.buf) {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        break
                    }
                    Err(e) => return Err(e.into()),
                };
                let reply = &self.buf[..n];
                let Some(space) = reply.iter().position(|&b| b == b' ') else {
                    continue;
                };
                if &reply[..space] != cookie.as_bytes() {
                    continue; // a late reply to an earlier, retransmitted request
                }
                return bencode::decode(&reply[space + 1..])
                    .map(Value::into_owned)
                    .map_err(|e| anyhow!("undecodable ng reply: {e}"));
            }
        }
        bail!(
            "no ng reply from {} after {} tries",
            self.server,
            self.retries + 1
        )
    }

    pub fn ping(&mut self) -> anyhow::Result<()> {
        let r = self.call(&dict([("command", Value::str("ping"))]))?;
        match r.get("result").and_then(Value::as_str) {
            Some("pong") => Ok(()),
            other => bail!("ping answered {other:?}"),
        }
    }

    /// Offer (from A) then answer (from B). Returns (port A sends to, port B sends to).
    pub fn setup_call(
        &mut self,
        call_id: &str,
        a: SocketAddr,
        b: SocketAddr,
    ) -> anyhow::Result<(SocketAddr, SocketAddr)> {
        let offer = self.offer_answer("offer", call_id, None, a)?;
        let answer = self.offer_answer("answer", call_id, Some("tagB"), b)?;
        Ok((answer, offer))
    }

    fn offer_answer(
        &mut self,
        command: &str,
        call_id: &str,
        to_tag: Option<&str>,
        media: SocketAddr,
    ) -> anyhow::Result<SocketAddr> {
        let sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=bench\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\n\
             a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\na=ptime:20\r\n",
            ip = media.ip(),
            port = media.port()
        );
        let mut pairs = vec![
            ("command", Value::string(command.to_string())),
            ("call-id", Value::string(call_id.to_string())),
            ("from-tag", Value::str("tagA")),
            ("sdp", Value::string(sdp)),
            (
                "replace",
                Value::List(vec![Value::str("origin"), Value::str("session-connection")]),
            ),
            ("ICE", Value::str("remove")),
            ("supports", Value::List(vec![Value::str("load limit")])),
        ];
        if let Some(t) = to_tag {
            pairs.push(("to-tag", Value::string(t.to_string())));
        }
        let r = self.call(&Value::Dict(
            pairs
                .into_iter()
                .map(|(k, v)| (k.as_bytes().into(), v))
                .collect(),
        ))?;
        if r.get("result").and_then(Value::as_str) != Some("ok") {
            bail!(
                "{command} refused: {} {}",
                r.get("result").and_then(Value::as_str).unwrap_or("?"),
                r.get("error-reason").and_then(Value::as_str).unwrap_or("")
            );
        }
        let text = r
            .get("sdp")
            .and_then(Value::as_str)
            .context("reply has no SDP")?;
        let sdp = Sdp::parse(text).map_err(|e| anyhow!("reply SDP: {e}"))?;
        sdp.media
            .first()
            .and_then(|m| m.rtp_target())
            .context("reply SDP has no usable audio stream")
    }

    /// Deletes a call; returns the relay's RTP packet total for it when reported.
    pub fn delete(&mut self, call_id: &str) -> anyhow::Result<Option<i64>> {
        let r = self.call(&dict([
            ("command", Value::str("delete")),
            ("call-id", Value::string(call_id.to_string())),
            ("from-tag", Value::str("tagA")),
        ]))?;
        Ok(r.get("totals")
            .and_then(|t| t.get("RTP"))
            .and_then(|t| t.get("packets"))
            .and_then(Value::as_int))
    }
}
