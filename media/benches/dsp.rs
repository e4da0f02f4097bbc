//! Cost of one 20 ms frame through each media primitive.
//! `cargo bench -p tandem-media --bench dsp -- --warm-up-time 1 --measurement-time 3`

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use tandem_media::codec::{speech_like, Decoder, Encoder, G711Decoder, G711Encoder};
use tandem_media::dtmf::DtmfDetector;
use tandem_media::g711::Law;
use tandem_media::mixer::{Mixer, Role, SupervisorMode};
use tandem_media::resample::Resampler;
use tandem_media::tones::{call_progress, Country, ProgressTone, ToneGenerator};

/// A frame of something speech-like in level (not silence, which some paths shortcut).
fn frame(n: usize, seed: u32) -> Vec<i16> {
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            ((s >> 16) as i16) / 4
        })
        .collect()
}

fn codecs(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec_20ms");
    for law in [Law::Ulaw, Law::Alaw] {
        let pcm = frame(160, 1);
        let mut enc = G711Encoder::new(law, 20).unwrap();
        let mut dec = G711Decoder::new(law);
        let mut payload = [0u8; 160];
        let mut out = [0i16; 160];
        g.bench_function(format!("g711_{law:?}_encode"), |b| {
            b.iter(|| enc.encode(black_box(&pcm), &mut payload).unwrap())
        });
        g.bench_function(format!("g711_{law:?}_decode"), |b| {
            b.iter(|| dec.decode(black_box(&payload), &mut out).unwrap())
        });
    }
    {
        use tandem_media::codec::{G722Decoder, G722Encoder};
        let pcm = frame(320, 2);
        let mut enc = G722Encoder::new(20).unwrap();
        let mut dec = G722Decoder::new();
        let mut payload = [0u8; 160];
        let mut out = [0i16; 320];
        g.bench_function("g722_encode", |b| {
            b.iter(|| enc.encode(black_box(&pcm), &mut payload).unwrap())
        });
        g.bench_function("g722_decode", |b| {
            b.iter(|| dec.decode(black_box(&payload), &mut out).unwrap())
        });
        // 8 kHz PCM out (towards a narrowband peer): the lower band alone.
        let mut dec = G722Decoder::narrowband();
        let mut out = [0i16; 160];
        g.bench_function("g722_decode_narrowband", |b| {
            b.iter(|| dec.decode(black_box(&payload), &mut out).unwrap())
        });
        // The crate ours replaced (dev-dependency), side by side: it returns a fresh Vec.
        use ezk_g722::libg722::{decoder, encoder, Bitrate};
        let mut enc = encoder::Encoder::new(Bitrate::Mode1_64000, false, false);
        let mut dec = decoder::Decoder::new(Bitrate::Mode1_64000, false, false);
        g.bench_function("g722_encode_ezk", |b| {
            b.iter(|| enc.encode(black_box(&pcm)))
        });
        g.bench_function("g722_decode_ezk", |b| {
            b.iter(|| dec.decode(black_box(&payload)))
        });
    }
    {
        use tandem_media::codec::{G729Decoder, G729Encoder};
        // Two 10 ms frames, as one 20 ms RTP packet carries them.
        let pcm = frame(160, 3);
        let mut enc = G729Encoder::new(20).unwrap();
        let mut dec = G729Decoder::new();
        let mut payload = [0u8; 20];
        let mut out = [0i16; 160];
        g.bench_function("g729_encode", |b| {
            b.iter(|| enc.encode(black_box(&pcm), &mut payload).unwrap())
        });
        g.bench_function("g729_decode", |b| {
            b.iter(|| dec.decode(black_box(&payload), &mut out).unwrap())
        });
    }
    {
        use tandem_media::codec::G729Encoder;
        // Annex B VAD/DTX on (a peer that takes it) against VAD off, over 1 s of speech-like
        // audio cycled (a repeated frame is stationary, which the VAD soon calls noise), and
        // on silence (the VAD's noise path: SID frames or nothing).
        let speech = speech_like(8000, 8000);
        let silence = [0i16; 160];
        let mut payload = [0u8; 20];
        let mut frames = speech.chunks_exact(160).cycle();
        let mut plain = G729Encoder::new(20).unwrap();
        g.bench_function("g729_encode_speechlike", |b| {
            b.iter(|| plain.encode_any(black_box(frames.next().unwrap()), &mut payload))
        });
        let mut enc = G729Encoder::with_vad(20, true).unwrap();
        g.bench_function("g729_encode_vad_speechlike", |b| {
            b.iter(|| enc.encode_any(black_box(frames.next().unwrap()), &mut payload))
        });
        let mut enc = G729Encoder::with_vad(20, true).unwrap();
        g.bench_function("g729_encode_vad_silence", |b| {
            b.iter(|| enc.encode_any(black_box(&silence), &mut payload).unwrap())
        });
    }
    #[cfg(feature = "opus")]
    {
        use tandem_media::codec::OpusEncoder;
        // 8 kHz, as a G.711 ↔ Opus call encodes, over the same speech-like second (libopus
        // adds the FEC copy only to frames its VAD calls speech): libopus's defaults, and with
        // in-band FEC (10% expected loss, the bitrate FEC needs) as for `useinbandfec=1`.
        let speech = speech_like(8000, 8000);
        let mut frames = speech.chunks_exact(160).cycle();
        let mut payload = [0u8; 400];
        let mut plain = OpusEncoder::new(8000, 20).unwrap();
        g.bench_function("opus_encode_8k_speechlike", |b| {
            b.iter(|| plain.encode_any(black_box(frames.next().unwrap()), &mut payload))
        });
        let mut fec = OpusEncoder::new(8000, 20).unwrap();
        fec.enable_fec(10).unwrap();
        g.bench_function("opus_encode_8k_fec_speechlike", |b| {
            b.iter(|| fec.encode_any(black_box(frames.next().unwrap()), &mut payload))
        });
    }
    g.finish();
}

fn resampler(c: &mut Criterion) {
    let mut g = c.benchmark_group("resample_20ms");
    for (from, to) in [
        (8000, 16000),
        (16000, 8000),
        (8000, 48000),
        (48000, 8000),
        (16000, 48000),
        (48000, 16000),
    ] {
        let mut r = Resampler::new(from, to, 20).unwrap();
        let x = frame(r.input_frame(), 3);
        let mut y = vec![0i16; r.output_frame()];
        g.bench_function(format!("{}k_to_{}k", from / 1000, to / 1000), |b| {
            b.iter(|| r.process(black_box(&x), &mut y).unwrap())
        });
    }
    g.finish();
}

fn dtmf_and_tones(c: &mut Criterion) {
    let mut g = c.benchmark_group("signalling_20ms");
    let mut d = DtmfDetector::new();
    let x = frame(160, 4);
    g.bench_function("dtmf_detect", |b| {
        b.iter(|| {
            d.handle_frame(black_box(&x));
            d.poll_digit()
        })
    });
    let mut t = ToneGenerator::new(&call_progress(Country::Us, ProgressTone::Dial), 8000).unwrap();
    let mut out = [0i16; 160];
    g.bench_function("tone_two_freq", |b| b.iter(|| t.fill(black_box(&mut out))));
    g.finish();
}

fn mixer(c: &mut Criterion) {
    let mut g = c.benchmark_group("mix_20ms_8k");
    for parties in [3usize, 8] {
        let mut m = Mixer::new(parties, 160);
        let ids: Vec<_> = (0..parties).map(|_| m.add(Role::Party).unwrap()).collect();
        // The last one is a supervisor whispering to the second (the agent).
        m.set_role(
            ids[parties - 1],
            Role::Supervisor(SupervisorMode::Whisper { to: ids[1] }),
        )
        .unwrap();
        let inputs: Vec<Vec<i16>> = (0..parties).map(|i| frame(160, 10 + i as u32)).collect();
        g.bench_function(format!("{parties}_parties"), |b| {
            b.iter(|| {
                for (id, x) in ids.iter().zip(&inputs) {
                    m.set_input(*id, black_box(x)).unwrap();
                }
                m.mix();
                black_box(m.output(ids[0]).unwrap()[0])
            })
        });
    }
    g.finish();
}

criterion_group!(benches, codecs, resampler, dtmf_and_tones, mixer);
criterion_main!(benches);
