//! The pipelined ng client against a scripted, lossy ng server: retransmission under the same
//! cookie, refusals counted by reason, garbage ignored.

use std::collections::HashSet;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tandem_bench::ng_client::{count_failures, NgClient};
use tandem_controlplane::bencode::{self, dict, Value};

/// Drops the first copy of every request (so only retransmits are answered), refuses call 3 with
/// "load limit", sends a garbage datagram before each real reply, and answers with SDP whose
/// port is 40000 + call number (+1000 for answers).
fn lossy_server(stop: Arc<AtomicBool>) -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let addr = s.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let mut seen = HashSet::new();
        let mut buf = [0u8; 65536];
        while !stop.load(Relaxed) {
            let Ok((n, from)) = s.recv_from(&mut buf) else {
                continue;
            };
            let msg = &buf[..n];
            let space = msg.iter().position(|&b| b == b' ').unwrap();
            let cookie = msg[..space].to_vec();
            if seen.insert(cookie.clone()) {
                continue; // lose the first copy
            }
            let req = bencode::decode(&msg[space + 1..]).unwrap();
            let cmd = req
                .get("command")
                .and_then(Value::as_str)
                .unwrap()
                .to_string();
            let id = req.get("call-id").and_then(Value::as_str).unwrap_or("");
            let k: u16 = id
                .rsplit('-')
                .next()
                .and_then(|x| x.parse().ok())
                .unwrap_or(0);
            let reply = match cmd.as_str() {
                "offer" | "answer" if k == 3 => dict([
                    ("result", Value::str("error")),
                    ("error-reason", Value::str("load limit")),
                ]),
                "offer" | "answer" => {
                    let port = 40_000 + k + if cmd == "answer" { 1000 } else { 0 };
                    let sdp = format!("v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio {port} RTP/AVP 0\r\n");
                    dict([("result", Value::str("ok")), ("sdp", Value::string(sdp))])
                }
                _ => dict([("result", Value::str("ok"))]),
            };
            let _ = s.send_to(b"garbage without cookie", from);
            let mut wire = cookie;
            wire.push(b' ');
            bencode::encode_into(&reply, &mut wire);
            let _ = s.send_to(&wire, from);
        }
    });
    (addr, h)
}

#[test]
fn retransmits_and_counts_refusals() {
    let stop = Arc::new(AtomicBool::new(false));
    let (addr, server) = lossy_server(stop.clone());
    let mut ng = NgClient::new(addr).unwrap();
    ng.timeout = Duration::from_millis(50);
    ng.window = 3;
    let a = "127.0.0.1:1000".parse().unwrap();
    let b = "127.0.0.1:2000".parse().unwrap();
    let calls: Vec<_> = (0..8).map(|i| (format!("c-{i}"), a, b)).collect();
    let out = ng.setup_calls(&calls).unwrap();
    for (i, r) in out.iter().enumerate() {
        if i == 3 {
            assert_eq!(r.as_ref().unwrap_err(), "load limit");
        } else {
            let (to_a, to_b) = r.as_ref().unwrap();
            assert_eq!(
                to_a.port(),
                41_000 + i as u16,
                "A sends to the answer's port"
            );
            assert_eq!(
                to_b.port(),
                40_000 + i as u16,
                "B sends to the offer's port"
            );
        }
    }
    let why = count_failures(
        out.iter()
            .filter_map(|r| r.as_ref().err().map(String::as_str)),
    );
    assert_eq!(why.get("load limit"), Some(&1));
    let ids: Vec<String> = calls.iter().map(|c| c.0.clone()).collect();
    let d = ng.delete_calls(&ids).unwrap();
    assert_eq!((d.ok, d.failed), (8, 0));
    stop.store(true, Relaxed);
    server.join().unwrap();
}

#[test]
fn gives_up_on_a_silent_server() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut ng = NgClient::new(silent.local_addr().unwrap()).unwrap();
    ng.timeout = Duration::from_millis(20);
    ng.retries = 1;
    let a = "127.0.0.1:1000".parse().unwrap();
    let out = ng.setup_calls(&[("x".into(), a, a)]).unwrap();
    assert_eq!(out[0].as_ref().unwrap_err(), "no ng reply after 2 tries");
    assert!(ng.ping().is_err());
}
