//! One 20 ms frame of a supervised call: the three parties' packets decoded into the mix,
//! the three-party mix (soft clipping included) and each mixed stream encoded with our RTP
//! header, in barge (three streams out: the most work a monitor does per frame). G.711 on
//! every leg, and G.711 call legs with an Opus supervisor.
//! `cargo bench -p tandem-dataplane --bench monitor`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use tandem_dataplane::api::{Codec, CodecOptions, LegCodec, MonitorMode};
use tandem_dataplane::monitor::Monitors;
use tandem_media::codec::{Encoder, OpusEncoder};
use tandem_media::g711::Law;
use tandem_media::tones::{ToneGenerator, ToneSpec};

const FRAMES: usize = 250;

fn lc(payload_type: u8, codec: Codec) -> LegCodec {
    LegCodec {
        payload_type,
        codec,
        event_payload_type: None,
        ptime_ms: 0,
        options: CodecOptions::NONE,
    }
}

/// Five seconds of one party's speech-like tone pair (-16 dBm0 each) as 20 ms packets.
fn party_stream(who: &LegCodec, f1: f32, f2: f32) -> Vec<Vec<u8>> {
    let mut g = ToneGenerator::new(&ToneSpec::continuous(f1, f2, -16.0), 8000).unwrap();
    let mut opus = OpusEncoder::new(8000, 20).unwrap();
    (0..FRAMES)
        .map(|i| {
            let mut pcm = [0i16; 160];
            g.fill(&mut pcm);
            let mut payload = [0u8; 400];
            let n = match who.codec {
                Codec::Pcmu => Law::Ulaw.encode(&pcm, &mut payload),
                Codec::Pcma => Law::Alaw.encode(&pcm, &mut payload),
                _ => opus.encode(&pcm, &mut payload).unwrap(),
            };
            let mut p = vec![0x80, who.payload_type];
            p.extend_from_slice(&(i as u16).to_be_bytes());
            p.extend_from_slice(&(i as u32 * who.codec.rtp_clock_hz() / 50).to_be_bytes());
            p.extend_from_slice(&(f1 as u32).to_be_bytes());
            p.extend_from_slice(&payload[..n]);
            p
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("monitor_20ms_frame");
    g.throughput(Throughput::Elements(1));
    let pcma = lc(8, Codec::Pcma);
    for (name, sup) in [
        ("barge_pcma_pcma_pcmu", lc(0, Codec::Pcmu)),
        ("barge_pcma_pcma_opus", lc(111, Codec::Opus)),
    ] {
        let codecs = [pcma, pcma, sup];
        let input = [
            party_stream(&codecs[0], 440.0, 1230.0),
            party_stream(&codecs[1], 350.0, 1020.0),
            party_stream(&codecs[2], 620.0, 1800.0),
        ];
        let mut m = Monitors::new(2);
        m.attach(0, 1, MonitorMode::Barge, codecs, [1, 2, 3], 0)
            .unwrap();
        g.bench_function(name, |b| {
            let mut i = 0;
            b.iter(|| {
                let k = i % FRAMES;
                m.feed(0, 0, black_box(&input[0][k])).unwrap();
                m.feed(0, 1, black_box(&input[1][k])).unwrap();
                m.feed(1, 0, black_box(&input[2][k])).unwrap();
                let mut bytes = 0;
                m.mix_frame(0, |_, _, header, payload| {
                    bytes += header.len() + black_box(payload).len();
                    true
                });
                i += 1;
                black_box(bytes)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
