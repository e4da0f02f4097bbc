//! Supervisor monitoring allocates nothing per packet or per frame: the session decision,
//! reordering and decoding into the mix (tapped and mixed legs, the supervisor's leg), the mix
//! (at 8 kHz, or 16 kHz with a G.722 or Opus party, narrowband parties resampled in and out)
//! and the encoding of each mixed stream, through live mode changes, for G.711 (both laws),
//! G.722, G.729 and Opus parties. Everything is allocated by `Monitors::attach`, as the core does on
//! `AttachMonitor`.

use std::net::SocketAddr;
use tandem_dataplane::api::{Codec, LegIndex, LegParams, MonitorMode};
use tandem_dataplane::mix::MixRate;
use tandem_dataplane::monitor::{mixed_legs, Monitors};
use tandem_dataplane::session::{Sessions, Verdict};

mod common;
use common::counting_alloc::allocations;
use common::phone::{encoded_tone as stream, party, swap_pairs};

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
        let wide = codecs
            .iter()
            .any(|c| matches!(c, Codec::G722 | Codec::Opus));
        let rate = [MixRate::Narrow, MixRate::Wide][wide as usize];
        assert_eq!(monitors.rate(3), Some(rate), "{codecs:?}");
        sessions.set_mixed(3, LegIndex::A, true);
        // Every party's packets arrive with pairs swapped now and then: the reorder window
        // puts them back without allocating.
        let input = [
            swap_pairs(stream(codecs[0], 500.0, FRAMES)),
            swap_pairs(stream(codecs[1], 1200.0, FRAMES)),
            swap_pairs(stream(codecs[2], 1900.0, FRAMES)),
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
                monitors.mix_frame(0, 0, |index, leg, header, payload| {
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
