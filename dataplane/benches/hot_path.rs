//! The per-packet primitives of the relay: classification and the forwarding decision (plain,
//! and with DTMF parsing armed on every leg, which adds a payload-type compare), one telephone-
//! event packet through the decision and the RFC 4733 receiver, one 20 ms G.711 packet through
//! the decision with in-band DTMF detection on its leg, and building one played packet.
//! `cargo bench -p tandem-dataplane --bench hot_path`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::net::SocketAddr;
use tandem_dataplane::api::{Codec, DtmfOptions, InbandAudio, LegIndex, LegParams};
use tandem_dataplane::clip::{Clip, Law};
use tandem_dataplane::io::TxBatch;
use tandem_dataplane::playback::Player;
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

    // The same with a telephone-event payload type on every leg: audio packets pay a compare.
    let events = DtmfOptions {
        event_payload_type: Some(101),
        ..DtmfOptions::default()
    };
    for s in 0..n {
        sessions.set_dtmf(s, LegIndex::A, &events).unwrap();
        sessions.set_dtmf(s, LegIndex::B, &events).unwrap();
    }
    g.bench_function("forward_decision_10k_sessions_dtmf_armed", |b| {
        b.iter(|| {
            i = (i + 7919) % n;
            black_box(sessions.on_packet(i * 4, black_box(src), black_box(&p), 1))
        })
    });

    // A telephone-event packet (an update of a key held down): parsed and fed to the receiver.
    let mut event = vec![0x80, 101, 0, 1, 0, 0, 0x0f, 0xa0, 0, 0, 0, 1, 5, 0x0a, 0, 0];
    let mut duration = 0u16;
    g.bench_function("forward_decision_telephone_event", |b| {
        b.iter(|| {
            duration = duration.wrapping_add(160);
            event[14..16].copy_from_slice(&duration.to_be_bytes());
            let v = sessions.on_packet(0, black_box(src), black_box(&event), 1);
            sessions.drain_dtmf(|r| {
                black_box(r);
            });
            black_box(v)
        })
    });

    // In-band detection on a leg: each 20 ms PCMA packet decoded and run through the detector
    // (four 5 ms analyses), on top of the decision. Speech-level audio that is no key.
    let inband = DtmfOptions {
        event_payload_type: Some(101),
        inband: Some(InbandAudio {
            payload_type: 8,
            codec: Codec::Pcma,
        }),
        block: false,
        tones_to_other: None,
        events_to_other: None,
    };
    sessions.set_dtmf(1, LegIndex::A, &inband).unwrap();
    let mut audio = packet();
    let pcm: Vec<i16> = (0..160)
        .map(|k| (((k * 37) % 200) as i16 - 100) * 60)
        .collect();
    Law::Alaw.encode(&pcm, &mut audio[12..]);
    g.bench_function("forward_decision_inband_dtmf_20ms", |b| {
        b.iter(|| black_box(sessions.on_packet(4, black_box(src), black_box(&audio), 1)))
    });

    // One played packet: header, clip frame, copied into a send batch.
    let clip = Clip::hold_music();
    let mut player = Player::new(0, 8, Law::Alaw, 1, 0, 0);
    let mut tx = TxBatch::new(64);
    g.bench_function("play_packet_build", |b| {
        b.iter(|| {
            if tx.is_full() {
                tx.clear();
            }
            let (header, _, frame) = player.next_packet(|_| clip.frames());
            black_box(tx.push_played(0, None, &header, clip.frame(player.law, frame)))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
