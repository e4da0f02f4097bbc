//! A three-party conference through a real core on loopback sockets, once per I/O backend:
//! each member sends its own tone in real time and must hear the other two and not itself
//! (by spectrum); a member that leaves is no longer heard and hears nothing.

use std::time::Instant;
use tandem_dataplane::api::{Codec, Command, CoreError, Event, LegParams};
use tandem_dataplane::io::IoKind;

mod common;
use common::phone::*;
use common::{call, start_one_core_in};

/// The three members' tones, Hz (as the monitor test's: apart, off each other's harmonics).
const TONES: [f64; 3] = [500.0, 1200.0, 1900.0];
const ROOM: u32 = 42;

fn refused(answer: Event, want: CoreError) {
    assert!(
        matches!(answer, Event::Failed { error, .. } if error == want),
        "{answer:?}"
    );
}

fn three_members_hear_each_other(io: IoKind, port_min: u16, codecs: [Codec; 3]) {
    let (dp, mut core) = start_one_core_in(io, port_min, port_min + 49);
    let mut phones = Vec::new();
    let mut ids = Vec::new();
    for (k, codec) in codecs.into_iter().enumerate() {
        let sock = endpoint();
        let (id, ports) = create(&mut core, leg(&sock), LegParams::default());
        updated(
            &mut core,
            Command::JoinConference {
                token: 10 + k as u64,
                id,
                conference: ROOM,
                codec: lc(codec),
            },
        );
        phones.push(Phone::new(
            sock,
            ports[0],
            codec,
            0x100 + k as u32,
            TONES[k],
        ));
        ids.push(id);
    }
    // Refused: a second join; leaving when in no conference.
    refused(
        call(
            &mut core,
            Command::JoinConference {
                token: 20,
                id: ids[0],
                conference: ROOM + 1,
                codec: lc(codecs[0]),
            },
        ),
        CoreError::ConferenceConflict,
    );
    let (outsider, _) = create(&mut core, LegParams::default(), LegParams::default());
    refused(
        call(
            &mut core,
            Command::LeaveConference {
                token: 21,
                id: outsider,
            },
        ),
        CoreError::ConferenceConflict,
    );

    // Phase 0: all three; phase 1: member 2 has left (and goes on sending).
    let mut heard: [Vec<Heard>; 3] = Default::default();
    let mut tick_at = Instant::now();
    for phase in 0..2 {
        if phase == 1 {
            updated(
                &mut core,
                Command::LeaveConference {
                    token: 30,
                    id: ids[2],
                },
            );
        }
        play_phase(&mut phones, &mut heard, phase, &mut tick_at);
    }
    let [m0, m1, m2] = &heard;
    assert_hears("member 0", m0, 0, TONES, [false, true, true]);
    assert_hears("member 1", m1, 0, TONES, [true, false, true]);
    assert_hears("member 2", m2, 0, TONES, [true, true, false]);
    assert_hears("member 0", m0, 1, TONES, [false, true, false]);
    assert_hears("member 1", m1, 1, TONES, [true, false, false]);
    assert!(
        m2.iter().all(|h| h.phase == 0 || h.tick < SETTLE_TICKS),
        "a member that left hears nothing"
    );
    // Each member's stream of ours runs on unbroken through the other's leaving.
    for (k, m) in [m0, m1].into_iter().enumerate() {
        let ssrc = ssrc_in(m, 0);
        assert_eq!(ssrc_in(m, 1), ssrc);
        assert_continuous(m, ssrc, codecs[k].rtp_clock_hz() / 50);
    }

    for (token, id) in ids.into_iter().enumerate() {
        let answer = call(
            &mut core,
            Command::Delete {
                token: 40 + token as u64,
                id,
            },
        );
        let Event::Deleted { stats, .. } = answer else {
            panic!("{answer:?}");
        };
        assert!(stats.legs[0].rtp.packets >= 2 * PHASE_TICKS as u64 - 8);
    }
    drop(dp);
}

#[test]
fn portable_conference_of_three_on_g711() {
    three_members_hear_each_other(
        IoKind::Portable,
        48400,
        [Codec::Pcmu, Codec::Pcma, Codec::Pcmu],
    );
}

#[test]
fn uring_conference_with_an_opus_member_mixes_wideband() {
    three_members_hear_each_other(
        IoKind::Uring,
        48450,
        [Codec::Pcma, Codec::Opus, Codec::Pcmu],
    );
}
