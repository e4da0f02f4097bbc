//! Playing a once-only sequence allocates nothing per frame or at its end: starting the
//! player, each frame's header and payload, finishing, stopping it and resuming relaying to
//! its leg (the session decision, held back while it plays) all run on what was allocated at
//! start, as in the core.

use std::net::SocketAddr;
use tandem_dataplane::api::{ClipSequence, LegIndex, LegParams, PLAY_ONCE_ONLY};
use tandem_dataplane::clip::Law;
use tandem_dataplane::playback::{Player, Players, FRAME_NS};
use tandem_dataplane::session::{Sessions, Verdict};
use tandem_dataplane::stats::DropReason;
use tandem_dataplane::Clip;

mod common;
use common::counting_alloc::allocations;

fn rtp(seq: u16) -> [u8; 172] {
    let mut p = [0u8; 172];
    p[0] = 0x80;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[8..12].copy_from_slice(&0xb0bu32.to_be_bytes());
    p
}

#[test]
fn a_once_only_sequence_plays_ends_and_resumes_relaying_without_allocating() {
    let pcm: Vec<i16> = (0..5 * 160).map(|i| (i % 80) as i16 * 100).collect();
    let clips = [
        Clip::hold_music(),
        std::sync::Arc::new(Clip::from_pcm("prompt", &pcm).unwrap()),
    ];
    let frames_of = |c: u16| clips[c as usize].frames();
    let (a, b): (SocketAddr, SocketAddr) = (
        "10.0.0.1:5000".parse().unwrap(),
        "10.0.0.2:6000".parse().unwrap(),
    );
    let leg = |rtp| LegParams {
        rtp: Some(rtp),
        ..LegParams::default()
    };
    let mut sessions = Sessions::new(0, 4, 30_000);
    sessions.activate(1, &leg(a), &leg(b), 0);
    let mut players = Players::new(4);
    // Leg B's RTP socket of session 1: what B sends arrives there, for A.
    let from_b = 4 + 2;
    let (mut played, mut held, mut relayed, mut bytes) = (0u32, 0u32, 0u32, 0usize);
    let n = allocations(|| {
        let mut player = Player::new(Player::key(1, LegIndex::A), 0, Law::Ulaw, 7, 1, 0);
        player.set_clips(ClipSequence::new(&[1, 1]).unwrap(), PLAY_ONCE_ONLY);
        players.start(player, 0);
        sessions.set_playing(1, LegIndex::A, true);
        let mut now = 0;
        for seq in 0..20u16 {
            match sessions.on_packet(from_b, b, &rtp(seq), now) {
                Verdict::Drop(DropReason::Playback)
                | Verdict::DropLatched {
                    reason: DropReason::Playback,
                    ..
                } => held += 1,
                Verdict::Forward { .. } => relayed += 1,
                other => panic!("{other:?}"),
            }
            for _ in 0..players.due(now) {
                let Some(mut p) = players.find(player.key).copied() else {
                    break;
                };
                if !p.finished {
                    let (header, clip, frame) = p.next_packet(frames_of);
                    bytes += header.len() + clips[clip as usize].frame(p.law, frame).len();
                    played += 1;
                }
                players.set(0, p);
                if p.finished {
                    players.stop(p.key);
                    sessions.set_playing(1, LegIndex::A, false);
                }
            }
            now += FRAME_NS;
        }
    });
    assert_eq!(n, 0, "{n} allocations");
    // Two plays of the five-frame prompt, then relaying: B's packets of those ten frames held.
    assert_eq!((played, bytes), (10, 10 * 172));
    assert_eq!((held, relayed), (10, 10));
    assert!(players.is_empty());
}
