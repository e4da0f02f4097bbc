//! The core's mixes, one 20 ms frame each: packets decoded into the mix, the mix (soft
//! clipping included) and each mixed stream encoded with our RTP header.
//!
//! `monitor_20ms_frame`: a supervised call in barge (three streams out: the most work a
//! monitor does per frame): G.711 on every leg (8 kHz mix); G.711 call legs with an Opus
//! supervisor, and a G.711 caller with G.722 agent and supervisor (16 kHz mixes, the G.711
//! party resampled in and out). `conference_20ms_frame`: a room of four, each hearing the
//! other three: all G.711 (8 kHz), and G.711, G.722, Opus, G.729 (16 kHz).
//! `cargo bench -p tandem-dataplane --bench monitor`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use tandem_dataplane::api::{Codec, CodecOptions, LegCodec, MonitorMode};
use tandem_dataplane::conference::Conferences;
use tandem_dataplane::monitor::Monitors;
use tandem_media::codec::{Encoder, G711Encoder, G722Encoder, G729Encoder, OpusEncoder};
use tandem_media::g711::Law;
use tandem_media::tones::{ToneGenerator, ToneSpec};

const FRAMES: usize = 250;

fn lc(codec: Codec) -> LegCodec {
    let payload_type = match codec {
        Codec::Pcmu => 0,
        Codec::Pcma => 8,
        Codec::G722 => 9,
        Codec::G729 => 18,
        Codec::Opus => 111,
    };
    LegCodec {
        payload_type,
        codec,
        event_payload_type: None,
        ptime_ms: 0,
        options: CodecOptions::NONE,
    }
}

/// Five seconds of one party's speech-like tone pair (-16 dBm0 each) as 20 ms packets, encoded
/// at the codec's own rate.
fn party_stream(who: &LegCodec, f1: f32, f2: f32) -> Vec<Vec<u8>> {
    let mut encoder: Box<dyn Encoder> = match who.codec {
        Codec::Pcmu => Box::new(G711Encoder::new(Law::Ulaw, 20).unwrap()),
        Codec::Pcma => Box::new(G711Encoder::new(Law::Alaw, 20).unwrap()),
        Codec::G722 => Box::new(G722Encoder::new(20).unwrap()),
        Codec::G729 => Box::new(G729Encoder::new(20).unwrap()),
        Codec::Opus => Box::new(OpusEncoder::new(16_000, 20).unwrap()),
    };
    let rate = encoder.sample_rate_hz();
    let mut g = ToneGenerator::new(&ToneSpec::continuous(f1, f2, -16.0), rate).unwrap();
    let mut pcm = vec![0i16; encoder.frame_samples()];
    (0..FRAMES)
        .map(|i| {
            g.fill(&mut pcm);
            let mut payload = [0u8; 400];
            let n = encoder.encode(&pcm, &mut payload).unwrap();
            let mut p = vec![0x80, who.payload_type];
            p.extend_from_slice(&(i as u16).to_be_bytes());
            p.extend_from_slice(&(i as u32 * who.codec.rtp_clock_hz() / 50).to_be_bytes());
            p.extend_from_slice(&(f1 as u32).to_be_bytes());
            p.extend_from_slice(&payload[..n]);
            p
        })
        .collect()
}

/// Each party's tone pair.
const VOICES: [(f32, f32); 4] = [
    (440.0, 1230.0),
    (350.0, 1020.0),
    (620.0, 1800.0),
    (530.0, 1480.0),
];

fn monitor(c: &mut Criterion) {
    let mut g = c.benchmark_group("monitor_20ms_frame");
    g.throughput(Throughput::Elements(1));
    use Codec::*;
    for (name, codecs) in [
        ("barge_pcma_pcma_pcmu", [Pcma, Pcma, Pcmu]),
        ("barge_pcma_pcma_opus_16k", [Pcma, Pcma, Opus]),
        ("barge_pcma_g722_g722_16k", [Pcma, G722, G722]),
    ] {
        let codecs = codecs.map(lc);
        let input: Vec<_> = (0..3)
            .map(|k| party_stream(&codecs[k], VOICES[k].0, VOICES[k].1))
            .collect();
        let mut m = Monitors::new(2);
        m.attach(0, 1, MonitorMode::Barge, codecs, [1, 2, 3], 0)
            .unwrap();
        // Counted across criterion's runs: sequence numbers only go forward (the wrap at
        // FRAMES is a jump the reorder window takes), as from a real phone.
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                let k = i % FRAMES;
                m.feed(0, 0, black_box(&input[0][k])).unwrap();
                m.feed(0, 1, black_box(&input[1][k])).unwrap();
                m.feed(1, 0, black_box(&input[2][k])).unwrap();
                let mut bytes = 0;
                m.mix_frame(0, 0, |_, _, header, payload| {
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

fn conference(c: &mut Criterion) {
    let mut g = c.benchmark_group("conference_20ms_frame");
    g.throughput(Throughput::Elements(1));
    use Codec::*;
    for (name, codecs) in [
        ("four_g711", [Pcmu, Pcma, Pcmu, Pcma]),
        ("four_g711_g722_opus_g729_16k", [Pcmu, G722, Opus, G729]),
    ] {
        let codecs = codecs.map(lc);
        let input: Vec<_> = (0..4)
            .map(|k| party_stream(&codecs[k], VOICES[k].0, VOICES[k].1))
            .collect();
        let mut room = Conferences::new(4);
        for (k, codec) in codecs.into_iter().enumerate() {
            room.join(k as u32, 1, codec, k as u64, 0).unwrap();
        }
        // Counted across criterion's runs: sequence numbers only go forward (the wrap at
        // FRAMES is a jump the reorder window takes), as from a real phone.
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                let f = i % FRAMES;
                for (k, member) in input.iter().enumerate() {
                    room.feed(k as u32, black_box(&member[f])).unwrap();
                }
                let mut bytes = 0;
                room.mix_frame(0, 0, |_, _, header, payload| {
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

criterion_group!(benches, monitor, conference);
criterion_main!(benches);
