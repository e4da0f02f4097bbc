//! One 20 ms RTP packet through a transcoder (decode, encode, our header), per direction the
//! cores transcode, beside copying the same packet (what relaying costs the core per packet
//! beyond the decision). Speech-like input: two tones at -16 dBm0 each.
//! `cargo bench -p tandem-dataplane --bench transcode`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use tandem_dataplane::api::{Codec, CodecOptions, LegCodec};
use tandem_dataplane::transcode::{Transcoder, MAX_PCM_SAMPLES};
use tandem_media::codec::{G722Encoder, G729Encoder, OpusEncoder};
use tandem_media::g711::Law;
use tandem_media::tones::{ToneGenerator, ToneSpec};

const FRAMES: usize = 250;

fn leg(codec: Codec) -> LegCodec {
    LegCodec {
        payload_type: match codec {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
            Codec::Opus => 111,
            Codec::G722 => 9,
            Codec::G729 => 18,
        },
        codec,
        event_payload_type: None,
        ptime_ms: 20,
        options: CodecOptions::NONE,
    }
}

/// Five seconds of 20 ms packets in `codec`, timestamps and sequence numbers counting on.
fn stream(codec: Codec) -> Vec<Vec<u8>> {
    let spec = ToneSpec::continuous(440.0, 1230.0, -16.0);
    let mut g = ToneGenerator::new(&spec, 8000).unwrap();
    let mut g16 = ToneGenerator::new(&spec, 16000).unwrap();
    let mut opus = OpusEncoder::new(8000, 20).unwrap();
    let mut g722 = G722Encoder::new(20).unwrap();
    let mut g729 = G729Encoder::new(20).unwrap();
    (0..FRAMES)
        .map(|i| {
            let mut pcm = [0i16; 160];
            g.fill(&mut pcm);
            let mut payload = [0u8; 400];
            let n = match codec {
                Codec::Pcmu => Law::Ulaw.encode(&pcm, &mut payload),
                Codec::Pcma => Law::Alaw.encode(&pcm, &mut payload),
                Codec::Opus => opus.encode_any(&pcm, &mut payload).unwrap(),
                Codec::G722 => {
                    let mut wide = [0i16; 320];
                    g16.fill(&mut wide);
                    g722.encode_any(&wide, &mut payload).unwrap()
                }
                Codec::G729 => g729.encode_any(&pcm, &mut payload).unwrap().len,
            };
            let mut p = vec![0x80, leg(codec).payload_type];
            p.extend_from_slice(&(i as u16).to_be_bytes());
            p.extend_from_slice(&(i as u32 * codec.rtp_clock_hz() / 50).to_be_bytes());
            p.extend_from_slice(&7u32.to_be_bytes());
            p.extend_from_slice(&payload[..n]);
            p
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("transcode_20ms");
    g.throughput(Throughput::Elements(1));
    let mut out = [0u8; 1500];
    let pcma = stream(Codec::Pcma);
    g.bench_function("copy_pcma_172B", |b| {
        let mut i = 0;
        b.iter(|| {
            let p = &pcma[i % FRAMES];
            out[..p.len()].copy_from_slice(black_box(p));
            i += 1;
            black_box(&out);
        })
    });
    for (from, to) in [
        (Codec::Pcma, Codec::Pcmu),
        (Codec::Pcma, Codec::Opus),
        (Codec::Opus, Codec::Pcma),
        (Codec::Pcma, Codec::G722),
        (Codec::G722, Codec::Opus),
        (Codec::Pcma, Codec::G729),
        (Codec::G729, Codec::Pcma),
    ] {
        let input = stream(from);
        let mut t = Transcoder::new(leg(from), leg(to), 1).unwrap();
        let mut pcm = vec![0i16; 2 * MAX_PCM_SAMPLES];
        let name = format!("{from:?}_to_{to:?}").to_lowercase();
        g.bench_function(name, |b| {
            let mut i = 0;
            b.iter(|| {
                let n = t
                    .process(black_box(&input[i % FRAMES]), &mut pcm, &mut out)
                    .unwrap();
                i += 1;
                black_box(n)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
