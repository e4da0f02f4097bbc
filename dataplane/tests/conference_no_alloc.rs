//! A conference allocates nothing per packet or per frame: the session decision, reordering
//! and decoding each member's packets, the mix and encoding every member's stream, for rooms
//! of narrowband members (8 kHz) and of mixed ones (16 kHz: G.722 and Opus beside G.711 and
//! G.729, resampled in and out). Everything is allocated by `Conferences::join`, as the core
//! does on `JoinConference`.

use std::net::SocketAddr;
use tandem_dataplane::api::{Codec, LegIndex, LegParams};
use tandem_dataplane::conference::Conferences;
use tandem_dataplane::mix::MixRate;
use tandem_dataplane::session::{Sessions, Verdict};

mod common;
use common::counting_alloc::allocations;
use common::phone::{encoded_tone, party, swap_pairs};

#[test]
fn feeding_and_mixing_a_room_allocate_nothing() {
    let rooms = [
        (
            [Codec::Pcmu, Codec::Pcma, Codec::G729, Codec::Pcmu],
            MixRate::Narrow,
        ),
        (
            [Codec::G722, Codec::Pcmu, Codec::Opus, Codec::G729],
            MixRate::Wide,
        ),
    ];
    const FRAMES: usize = 100;
    for (codecs, rate) in rooms {
        let mut sessions = Sessions::new(0, 8, 30_000);
        let mut rooms = Conferences::new(8);
        let addrs: Vec<SocketAddr> = (0..4)
            .map(|k| SocketAddr::from(([10, 0, 0, 1 + k as u8], 5000)))
            .collect();
        for (k, &codec) in codecs.iter().enumerate() {
            let leg = LegParams {
                rtp: Some(addrs[k]),
                ..LegParams::default()
            };
            sessions.activate(k as u32, &leg, &LegParams::default(), 0);
            sessions.set_mixed(k as u32, LegIndex::A, true);
            rooms
                .join(k as u32, 9, party(codec).0, k as u64, 0)
                .unwrap();
        }
        assert_eq!(rooms.rate(0), Some(rate));
        let input: Vec<Vec<Vec<u8>>> = codecs
            .iter()
            .enumerate()
            .map(|(k, &c)| swap_pairs(encoded_tone(c, 400.0 + 300.0 * k as f32, FRAMES)))
            .collect();
        let mut sent = 0;
        let n = allocations(|| {
            for i in 0..FRAMES {
                for (k, member) in input.iter().enumerate() {
                    let p = &member[i];
                    // Leg A's RTP slot of session k.
                    match sessions.on_packet(4 * k as u32, addrs[k], p, 1) {
                        Verdict::Mix { in_key, .. } => rooms.feed(in_key / 2, p).unwrap(),
                        other => panic!("{other:?}"),
                    }
                }
                rooms.mix_frame(0, 0, |_, leg, header, payload| {
                    assert!(leg == LegIndex::A && header.len() == 12 && !payload.is_empty());
                    sent += 1;
                    true
                });
            }
        });
        assert_eq!(n, 0, "{codecs:?}: {n} allocations");
        assert_eq!(sent, 4 * FRAMES, "{codecs:?}");
        let stats = rooms.stats(0).unwrap();
        assert_eq!(
            (stats.fed, stats.frames),
            (4 * FRAMES as u64, FRAMES as u64)
        );
    }
}
