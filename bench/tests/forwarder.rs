//! The generator against the bare forwarder, as child process: the whole rtp path end to end.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command};
use std::time::Duration;
use tandem_bench::ng_client::NgClient;
use tandem_bench::rtp::{self, RtpConfig};

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the child even when an assertion fails.
struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str]) -> Kill {
    Kill(
        Command::new(env!("CARGO_BIN_EXE_tandem-bench"))
            .args(args)
            .spawn()
            .expect("spawn tandem-bench"),
    )
}

#[test]
fn ten_calls_through_the_forwarder_lose_nothing() {
    let ng: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
    let fwd = spawn(&["forward", "--connected", "--ng", &ng.to_string()]);
    let mut client = NgClient::new(ng).unwrap();
    client.timeout = Duration::from_millis(100);
    client.retries = 30;
    client.ping().expect("forwarder answers ping");

    let cfg = RtpConfig {
        ng,
        calls: 10,
        warmup_s: 0.3,
        duration_s: 2.0,
        target_pid: Some(fwd.0.id()),
        ..RtpConfig::default()
    };
    let r = rtp::run(&cfg, |_| {}).expect("run");
    assert_eq!(r.calls, 10);
    assert_eq!(r.calls_failed, 0);
    assert!(r.sent >= 1900 && r.sent <= 2100, "sent {}", r.sent);
    assert!(r.loss_pct < 0.5, "loss {}%", r.loss_pct);
    assert_eq!(r.duplicates, 0);
    assert!(r.latency_p50_us > 0 && r.latency_p50_us < 50_000);
    assert!(r.target_cpu_pct.is_some());
    assert_eq!(r.deletes.ok, 10);
    assert!(r.deletes.relay_rtp_packets.unwrap_or(0) >= r.received as i64);
}

#[test]
fn plain_mode_forwards_to_one_address() {
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    // A base port unlikely to be taken: try a few.
    let base = free_udp_port().saturating_sub(10).max(20_000);
    let to = sink.local_addr().unwrap().to_string();
    let _fwd = spawn(&[
        "forward",
        "--ports",
        "4",
        "--base-port",
        &base.to_string(),
        "--to",
        &to,
    ]);
    let src = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut buf = [0u8; 64];
    // Retry the first packet until the forwarder is up.
    let mut got = None;
    for _ in 0..50 {
        src.send_to(b"hello", ("127.0.0.1", base + 3)).unwrap();
        sink.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        if let Ok(n) = sink.recv(&mut buf) {
            got = Some(n);
            break;
        }
    }
    assert_eq!(got.map(|n| &buf[..n]), Some(&b"hello"[..]));
}
