//! A fixed workload for counting instructions per forwarding decision (bench/RESULTS.md §Q):
//! 10k sessions, in-order PCMA streams (sequence and timestamp advancing per session), packets
//! spread across the sessions. Run it twice under cachegrind, with 0 and with N decisions, and
//! divide the difference by N:
//!
//! ```text
//! cargo bench -p tandem-dataplane --bench decision_instructions --no-run
//! valgrind --tool=cachegrind --cache-sim=no target/release/deps/decision_instructions-<hash> 1000000
//! ```
//!
//! `cargo bench` runs it once with a small count so it stays working.

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
    let sessions_n = 10_000u32;
    // The first argument that parses as a number (cargo bench passes `--bench` first).
    let decisions: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let mut sessions = Sessions::new(0, sessions_n, 30_000);
    for i in 0..sessions_n {
        sessions.activate(i, &leg(10_000), &leg(20_000), 0);
    }
    let src = SocketAddr::from(([127, 0, 0, 1], 10_000));
    let mut packet = [0u8; 172];
    packet[0] = 0x80;
    packet[1] = 8;
    let mut index = 0u32;
    for k in 0..decisions {
        index = (index + 7919) % sessions_n;
        let seq = (k / sessions_n as u64) as u16;
        packet[2..4].copy_from_slice(&seq.to_be_bytes());
        packet[4..8].copy_from_slice(&(seq as u32 * 160).to_be_bytes());
        let now_ns = k * 2_000;
        black_box(sessions.on_packet(index * 4, black_box(src), black_box(&packet), now_ns));
    }
    println!("{decisions} forwarding decisions over {sessions_n} sessions");
}
