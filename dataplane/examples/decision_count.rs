//! The forwarding decision over 10k sessions, N packets (default 1M), as in
//! `benches/hot_path.rs`, for an instruction count that a shared machine cannot blur:
//!
//! ```text
//! cargo build --release -p tandem-dataplane --example decision_count
//! for n in 0 1000000; do
//!   valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
//!     target/release/examples/decision_count $n 2>&1 | grep 'I *refs'
//! done
//! ```
//!
//! (instructions at 1M − at 0) / 1M = instructions per decision.

use std::hint::black_box;
use std::net::SocketAddr;
use tandem_dataplane::api::LegParams;
use tandem_dataplane::session::Sessions;

fn leg(port: u16) -> LegParams {
    LegParams {
        rtp: Some(SocketAddr::from(([127, 0, 0, 1], port))),
        rtcp: Some(SocketAddr::from(([127, 0, 0, 1], port + 1))),
        ..LegParams::default()
    }
}

fn main() {
    let iterations: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let mut p = vec![0u8; 172];
    p[0] = 0x80;
    p[1] = 8;
    let n = 10_000u32;
    let mut sessions = Sessions::new(0, n, 30_000);
    for i in 0..n {
        sessions.activate(i, &leg(10_000), &leg(20_000), 0);
    }
    let src = SocketAddr::from(([127, 0, 0, 1], 10_000));
    let mut i = 0u32;
    for _ in 0..iterations {
        i = (i + 7919) % n;
        black_box(sessions.on_packet(i * 4, black_box(src), black_box(&p), 1));
    }
}
