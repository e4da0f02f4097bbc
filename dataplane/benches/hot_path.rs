//! The per-packet primitives of the relay: classification and the forwarding decision.
//! `cargo bench -p tandem-dataplane --bench hot_path`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::net::SocketAddr;
use tandem_dataplane::api::LegParams;
use tandem_dataplane::rtp;
use tandem_dataplane::session::Sessions;

fn packet() -> Vec<u8> {
    let mut p = vec![0u8; 172];
    p[0] = 0x80;
    p[1] = 8;
    p
}

fn leg(port: u16) -> LegParams {
    LegParams {
        rtp: Some(SocketAddr::from(([127, 0, 0, 1], port))),
        rtcp: Some(SocketAddr::from(([127, 0, 0, 1], port + 1))),
        ..LegParams::default()
    }
}

fn bench(c: &mut Criterion) {
    let p = packet();
    let mut g = c.benchmark_group("hot_path");
    g.throughput(Throughput::Elements(1));
    g.bench_function("classify_rtp_172B", |b| {
        b.iter(|| rtp::classify(black_box(&p)))
    });

    // 10k sessions, packets spread across them so the slab is not all in L1.
    let n = 10_000u32;
    let mut sessions = Sessions::new(0, n, 30_000);
    for i in 0..n {
        sessions.activate(i, &leg(10_000), &leg(20_000), 0);
    }
    let src = SocketAddr::from(([127, 0, 0, 1], 10_000));
    let mut i = 0u32;
    g.bench_function("forward_decision_10k_sessions", |b| {
        b.iter(|| {
            i = (i + 7919) % n;
            black_box(sessions.on_packet(i * 4, black_box(src), black_box(&p), 1))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
