//! A supervisor on a call through a real core on loopback sockets, once per I/O backend: the
//! caller sends one tone, the agent another, the supervisor a third, in real time; which
//! tones each phone hears (by spectrum) follows the mode — listen, whisper, barge — switched
//! live, and detaching brings back the plain relay.

use std::time::Instant;
use tandem_dataplane::api::{Codec, Command, CoreError, Event, LegParams, MonitorMode};
use tandem_dataplane::io::IoKind;

/// The caller's, the agent's and the supervisor's tones, Hz: apart by more than a Hann
/// window's main lobe over 20 ms, and off each other's G.711 harmonics.
const TONES: [f64; 3] = [500.0, 1200.0, 1900.0];
const CALLER_SSRC: u32 = 0xca11;
const AGENT_SSRC: u32 = 0xa6e7;

mod common;
use common::phone::*;
use common::{call, start_one_core as start};

fn supervises_a_call(io: IoKind, port_min: u16, agent_codec: Codec, sup_codec: Codec) {
    let (dp, mut core) = start(io, port_min);
    let (caller_sock, agent_sock, sup_sock) = (endpoint(), endpoint(), endpoint());
    let (call_id, ports) = create(&mut core, leg(&caller_sock), leg(&agent_sock));
    let transcoded = agent_codec != Codec::Pcma;
    let plan = [lc(Codec::Pcma), lc(agent_codec)];
    if transcoded {
        updated(
            &mut core,
            Command::SetCodecs {
                token: 2,
                id: call_id,
                codecs: Some(plan),
            },
        );
    }
    let (sup_id, sup_ports) = create(&mut core, leg(&sup_sock), LegParams::default());
    let mut phones = [
        Phone::new(caller_sock, ports[0], Codec::Pcma, CALLER_SSRC, TONES[0]),
        Phone::new(agent_sock, ports[1], agent_codec, AGENT_SSRC, TONES[1]),
        Phone::new(sup_sock, sup_ports[0], sup_codec, 0x50e5, TONES[2]),
    ];
    let codecs = [plan[0], plan[1], lc(sup_codec)];
    let attach = |mode| Command::AttachMonitor {
        token: 3,
        id: call_id,
        supervisor: sup_id,
        mode,
        codecs,
    };
    // Refused: the call as its own supervisor; a mode for a call with no supervisor.
    let refusals = [
        (
            Command::AttachMonitor {
                token: 3,
                id: call_id,
                supervisor: call_id,
                mode: MonitorMode::Listen,
                codecs,
            },
            CoreError::MonitorConflict,
        ),
        (
            Command::SetMonitorMode {
                token: 3,
                id: call_id,
                mode: MonitorMode::Barge,
            },
            CoreError::MonitorConflict,
        ),
    ];
    for (cmd, error) in refusals {
        let answer = call(&mut core, cmd);
        assert!(
            matches!(answer, Event::Failed { error: e, .. } if e == error),
            "{answer:?}"
        );
    }
    updated(&mut core, attach(MonitorMode::Listen));
    let answer = call(&mut core, attach(MonitorMode::Listen));
    assert!(
        matches!(
            answer,
            Event::Failed {
                error: CoreError::MonitorConflict,
                ..
            }
        ),
        "attached twice: {answer:?}"
    );

    // Phases: listen, whisper, barge, then detached. The switch happens at each phase's start.
    let switches = [
        None,
        Some(Command::SetMonitorMode {
            token: 4,
            id: call_id,
            mode: MonitorMode::Whisper,
        }),
        Some(Command::SetMonitorMode {
            token: 5,
            id: call_id,
            mode: MonitorMode::Barge,
        }),
        Some(Command::DetachMonitor {
            token: 6,
            id: call_id,
        }),
    ];
    let mut heard: [Vec<Heard>; 3] = Default::default();
    let mut tick_at = Instant::now();
    for (phase, switch) in switches.into_iter().enumerate() {
        if let Some(cmd) = switch {
            updated(&mut core, cmd);
        }
        play_phase(&mut phones, &mut heard, phase, &mut tick_at);
    }
    let [caller, agent, sup] = &heard;
    const LISTEN: usize = 0;
    const WHISPER: usize = 1;
    const BARGE: usize = 2;
    const DETACHED: usize = 3;
    //                                 caller's agent's sup's tone
    assert_hears("caller", caller, LISTEN, TONES, [false, true, false]);
    assert_hears("agent", agent, LISTEN, TONES, [true, false, false]);
    assert_hears("supervisor", sup, LISTEN, TONES, [true, true, false]);
    assert_hears("caller", caller, WHISPER, TONES, [false, true, false]);
    assert_hears("agent", agent, WHISPER, TONES, [true, false, true]);
    assert_hears("supervisor", sup, WHISPER, TONES, [true, true, false]);
    assert_hears("caller", caller, BARGE, TONES, [false, true, true]);
    assert_hears("agent", agent, BARGE, TONES, [true, false, true]);
    assert_hears("supervisor", sup, BARGE, TONES, [true, true, false]);
    assert_hears("caller", caller, DETACHED, TONES, [false, true, false]);
    assert_hears("agent", agent, DETACHED, TONES, [true, false, false]);
    assert!(
        sup.iter()
            .all(|h| h.phase < DETACHED || h.tick < SETTLE_TICKS),
        "the supervisor hears nothing once detached"
    );

    // Streams: listen and detached are the relay (the sender's own stream when not
    // transcoded); whisper and barge one stream of ours to the agent, barge one to the caller.
    let relayed_to_agent = ssrc_in(agent, LISTEN);
    assert_eq!(ssrc_in(agent, DETACHED), relayed_to_agent);
    assert_eq!(ssrc_in(caller, WHISPER), ssrc_in(caller, LISTEN));
    if !transcoded {
        assert_eq!(relayed_to_agent, CALLER_SSRC);
        assert_eq!(ssrc_in(caller, LISTEN), AGENT_SSRC);
    }
    let mixed_to_agent = ssrc_in(agent, WHISPER);
    assert_ne!(mixed_to_agent, relayed_to_agent);
    assert_eq!(ssrc_in(agent, BARGE), mixed_to_agent);
    assert_ne!(ssrc_in(caller, BARGE), ssrc_in(caller, LISTEN));
    let agent_ticks = plan[1].codec.rtp_clock_hz() / 50;
    assert_continuous(agent, mixed_to_agent, agent_ticks);
    let sup_stream = ssrc_in(sup, LISTEN);
    assert_eq!(ssrc_in(sup, BARGE), sup_stream);
    assert_continuous(sup, sup_stream, codecs[2].codec.rtp_clock_hz() / 50);

    // The supervisor's session outlives the monitor and can be deleted; both ids end.
    let answer = call(
        &mut core,
        Command::DetachMonitor {
            token: 7,
            id: sup_id,
        },
    );
    assert!(
        matches!(
            answer,
            Event::Failed {
                error: CoreError::MonitorConflict,
                ..
            }
        ),
        "{answer:?}"
    );
    let answer = call(
        &mut core,
        Command::Delete {
            token: 8,
            id: sup_id,
        },
    );
    let Event::Deleted { stats, .. } = answer else {
        panic!("{answer:?}");
    };
    assert!(stats.legs[0].rtp.packets >= 4 * PHASE_TICKS as u64 - 8);
    assert_eq!(stats.legs[0].rtp.errors, 0);
    assert!(matches!(
        call(
            &mut core,
            Command::Delete {
                token: 9,
                id: call_id
            }
        ),
        Event::Deleted { .. }
    ));
    drop(dp);
}

#[test]
fn portable_supervisor_listens_whispers_and_barges_on_g711() {
    supervises_a_call(IoKind::Portable, 49200, Codec::Pcma, Codec::Pcmu);
}

#[test]
fn uring_supervisor_on_a_transcoded_call_with_opus() {
    supervises_a_call(IoKind::Uring, 49600, Codec::Pcmu, Codec::Opus);
}
