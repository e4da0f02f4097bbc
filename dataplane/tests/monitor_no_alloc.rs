//! Supervisor monitoring allocates nothing per packet or per frame: the session decision,
//! decoding into the mix (tapped and mixed legs, the supervisor's leg), the mix and the
//! encoding of each mixed stream, through live mode changes, for G.711 (both laws), G.722
//! and Opus parties. Everything is allocated by `Monitors::attach`, as the core does on
//! `AttachMonitor`.

use std::net::SocketAddr;
use tandem_dataplane::api::{Codec, CodecOptions, LegCodec, LegIndex, LegParams, MonitorMode};
use tandem_dataplane::monitor::{mixed_legs, Monitors};
use tandem_dataplane::session::{Sessions, Verdict};
use tandem_media::codec::{Encoder, G711Encoder, G722Encoder, G729Encoder, OpusEncoder};
use tandem_media::g711::Law;
use tandem_media::tones::{ToneGenerator, ToneSpec};

mod common;
use common::counting_alloc::allocations;

fn party(codec: Codec) -> (LegCodec, Box<dyn Encoder>) {
    let (payload_type, encoder): (u8, Box<dyn Encoder>) = match codec {
        Codec::Pcmu => (0, Box::new(G711Encoder::new(Law::Ulaw, 20).unwrap())),
        Codec::Pcma => (8, Box::new(G711Encoder::new(Law::Alaw, 20).unwrap())),
        Codec::G722 => (9, Box::new(G722Encoder::new(20).unwrap())),
        Codec::Opus => (111, Box::new(OpusEncoder::new(8000, 20).unwrap())),
        Codec::G729 => (18, Box::new(G729Encoder::new(20).unwrap())),
    };
    let lc = LegCodec {
        payload_type,
        codec,
        event_payload_type: None,
        ptime_ms: 0,
        options: CodecOptions::NONE,
    };
    (lc, encoder)
}

/// `n` 20 ms RTP packets of a tone at `hz`, encoded by `party`'s encoder at its own rate.
fn stream(codec: Codec, hz: f32, n: usize) -> Vec<Vec<u8>> {
    let (lc, mut encoder) = party(codec);
    let rate = encoder.sample_rate_hz();
    let mut tone = ToneGenerator::new(&ToneSpec::continuous(hz, 0.0, -12.0), rate).unwrap();
    let mut pcm = vec![0i16; encoder.frame_samples()];
    let ts_step = codec.rtp_clock_hz() / 50;
    (0..n)
        .map(|i| {
            tone.fill(&mut pcm);
            let mut payload = [0u8; 500];
            let len = encoder.encode(&pcm, &mut payload).unwrap();
            let mut p = vec![0x80, lc.payload_type];
            p.extend_from_slice(&(i as u16).to_be_bytes());
            p.extend_from_slice(&(i as u32 * ts_step).to_be_bytes());
            p.extend_from_slice(&(0x1000 + hz as u32).to_be_bytes());
            p.extend_from_slice(&payload[..len]);
            p
        })
        .collect()
}

#[test]
fn feeding_mixing_and_mode_changes_allocate_nothing() {
    let addrs: [SocketAddr; 3] = [
        "10.0.0.1:5000".parse().unwrap(),
        "10.0.0.2:6000".parse().unwrap(),
        "10.0.0.3:7000".parse().unwrap(),
    ];
    let triples = [
        [Codec::Pcma, Codec::Pcma, Codec::Pcmu],
        [Codec::Pcmu, Codec::Opus, Codec::Pcma],
        [Codec::G722, Codec::Pcmu, Codec::Opus],
        [Codec::Opus, Codec::G722, Codec::G722],
        [Codec::G729, Codec::Pcma, Codec::G729],
    ];
    const FRAMES: usize = 120;
    for codecs in triples {
        let mut sessions = Sessions::new(0, 4, 30_000);
        let leg = |rtp| LegParams {
            rtp: Some(rtp),
            ..LegParams::default()
        };
        // Session 2 is the call, session 3 the supervisor's leg.
        sessions.activate(2, &leg(addrs[0]), &leg(addrs[1]), 0);
        sessions.activate(3, &leg(addrs[2]), &LegParams::default(), 0);
        let mut monitors = Monitors::new(4);
        let plan = codecs.map(|c| party(c).0);
        monitors
            .attach(2, 3, MonitorMode::Listen, plan, [1, 2, 3], 0)
            .unwrap();
        sessions.set_mixed(3, LegIndex::A, true);
        let input = [
            stream(codecs[0], 500.0, FRAMES),
            stream(codecs[1], 1200.0, FRAMES),
            stream(codecs[2], 1900.0, FRAMES),
        ];
        // Slots of leg A and leg B of session 2, leg A of session 3.
        let slots = [8, 10, 12];
        let mut sent = [0u32; 3];
        let mut relayed = 0;
        let n = allocations(|| {
            for i in 0..FRAMES {
                let mode = [
                    MonitorMode::Listen,
                    MonitorMode::Whisper,
                    MonitorMode::Barge,
                ][i / (FRAMES / 3)];
                if i % (FRAMES / 3) == 0 {
                    monitors.set_mode(2, mode).unwrap();
                    let [a, b] = mixed_legs(mode);
                    sessions.set_mixed(2, LegIndex::A, a);
                    sessions.set_mixed(2, LegIndex::B, b);
                }
                for k in 0..3 {
                    let p = &input[k][i];
                    let (index, leg) = (slots[k] / 4, (slots[k] % 4 / 2) as usize);
                    match sessions.on_packet(slots[k], addrs[k], p, 1) {
                        Verdict::Mix { in_key, .. } => {
                            monitors.feed(in_key / 2, (in_key % 2) as usize, p).unwrap();
                        }
                        Verdict::Forward { .. } => {
                            relayed += 1;
                            monitors.feed(index, leg, p).unwrap();
                        }
                        other => panic!("{other:?}"),
                    }
                }
                monitors.mix_frame(0, |index, leg, header, payload| {
                    assert!(header.len() == 12 && !payload.is_empty());
                    let to = match (index, leg) {
                        (2, LegIndex::A) => 0,
                        (2, LegIndex::B) => 1,
                        _ => 2,
                    };
                    sent[to] += 1;
                    true
                });
            }
        });
        assert_eq!(n, 0, "{codecs:?}: {n} allocations");
        // Barge a third of the time, whisper another third; the supervisor always.
        let third = FRAMES as u32 / 3;
        assert_eq!(sent, [third, 2 * third, 3 * third], "{codecs:?}");
        // Listen relays both ways, whisper the agent's voice only.
        assert_eq!(relayed, 2 * third + third, "{codecs:?}");
        let stats = monitors.stats(2).unwrap();
        assert_eq!(stats.fed, [FRAMES as u64; 3], "{codecs:?}");
    }
}
