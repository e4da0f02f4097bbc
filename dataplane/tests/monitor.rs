//! A supervisor on a call through a real core on loopback sockets, once per I/O backend: the
//! caller sends one tone, the agent another, the supervisor a third, in real time; which
//! tones each phone hears (by spectrum) follows the mode — listen, whisper, barge — switched
//! live, and detaching brings back the plain relay.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use tandem_dataplane::api::{
    Codec, CodecOptions, Command, CoreError, Event, LegCodec, LegParams, MonitorMode, SessionId,
};
use tandem_dataplane::io::IoKind;
use tandem_dataplane::CoreHandle;
use tandem_media::codec::{Decoder, Encoder, OpusDecoder, OpusEncoder};
use tandem_media::g711::Law;
use tandem_media::tones::{ToneGenerator, ToneSpec};

/// The caller's, the agent's and the supervisor's tones, Hz: apart by more than a Hann
/// window's main lobe over 20 ms, and off each other's G.711 harmonics.
const TONES: [f64; 3] = [500.0, 1200.0, 1900.0];
const CALLER_SSRC: u32 = 0xca11;
const AGENT_SSRC: u32 = 0xa6e7;
/// Ticks (20 ms) per phase, and the first ones of each not judged (the switch settling).
const PHASE_TICKS: usize = 30;
const SETTLE_TICKS: usize = 10;

mod common;
use common::{call, start_one_core as start};

fn updated(core: &mut CoreHandle, cmd: Command) {
    let answer = call(core, cmd);
    assert!(matches!(answer, Event::Updated { .. }), "{answer:?}");
}

fn endpoint() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_nonblocking(true).unwrap();
    s
}

fn leg(sock: &UdpSocket) -> LegParams {
    let a = sock.local_addr().unwrap();
    LegParams {
        rtp: Some(a),
        rtcp: Some(SocketAddr::new(a.ip(), a.port() + 1)),
        ..LegParams::default()
    }
}

fn create(core: &mut CoreHandle, a: LegParams, b: LegParams) -> (SessionId, [u16; 2]) {
    match call(core, Command::Create { token: 1, a, b }) {
        Event::Created { id, ports, .. } => (id, ports),
        other => panic!("{other:?}"),
    }
}

fn lc(codec: Codec) -> LegCodec {
    let payload_type = match codec {
        Codec::Pcmu => 0,
        Codec::Pcma => 8,
        Codec::G722 => 9,
        Codec::Opus => 111,
        Codec::G729 => 18,
    };
    LegCodec {
        payload_type,
        codec,
        event_payload_type: None,
        ptime_ms: 0,
        options: CodecOptions::NONE,
    }
}

/// A phone: sends its tone in its codec every 20 ms, and decodes what it receives.
struct Phone {
    sock: UdpSocket,
    to: SocketAddr,
    codec: LegCodec,
    ssrc: u32,
    seq: u16,
    tone: ToneGenerator,
    opus_enc: Option<OpusEncoder>,
    opus_dec: Option<OpusDecoder>,
}

/// One packet a phone received.
struct Heard {
    phase: usize,
    tick: usize,
    marker: bool,
    seq: u16,
    ts: u32,
    ssrc: u32,
    pcm: Vec<i16>,
}

impl Phone {
    fn new(sock: UdpSocket, to: u16, codec: Codec, ssrc: u32, tone_hz: f64) -> Phone {
        let opus = codec == Codec::Opus;
        Phone {
            sock,
            to: SocketAddr::from(([127, 0, 0, 1], to)),
            codec: lc(codec),
            ssrc,
            seq: 0,
            tone: ToneGenerator::new(&ToneSpec::continuous(tone_hz as f32, 0.0, -10.0), 8000)
                .unwrap(),
            opus_enc: opus.then(|| OpusEncoder::new(8000, 20).unwrap()),
            opus_dec: opus.then(|| OpusDecoder::new(8000).unwrap()),
        }
    }

    fn send(&mut self) {
        let mut pcm = [0i16; 160];
        self.tone.fill(&mut pcm);
        let mut payload = [0u8; 400];
        let n = match (self.codec.codec, self.opus_enc.as_mut()) {
            (Codec::Pcmu, _) => Law::Ulaw.encode(&pcm, &mut payload),
            (Codec::Pcma, _) => Law::Alaw.encode(&pcm, &mut payload),
            (_, Some(e)) => e.encode(&pcm, &mut payload).unwrap(),
            other => panic!("{other:?}"),
        };
        let mut p = vec![0x80, self.codec.payload_type];
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&(self.seq as u32 * 160).to_be_bytes());
        p.extend_from_slice(&self.ssrc.to_be_bytes());
        p.extend_from_slice(&payload[..n]);
        self.sock.send_to(&p, self.to).unwrap();
        self.seq = self.seq.wrapping_add(1);
    }

    fn receive(&mut self, phase: usize, tick: usize, into: &mut Vec<Heard>) {
        let mut buf = [0u8; 2048];
        while let Ok(n) = self.sock.recv(&mut buf) {
            let p = &buf[..n];
            assert_eq!(p[1] & 0x7f, self.codec.payload_type, "in our own codec");
            let mut pcm = vec![0i16; 960];
            let samples = match (self.codec.codec, self.opus_dec.as_mut()) {
                (Codec::Pcmu, _) => Law::Ulaw.decode(&p[12..], &mut pcm),
                (Codec::Pcma, _) => Law::Alaw.decode(&p[12..], &mut pcm),
                (_, Some(d)) => d.decode(&p[12..], &mut pcm).unwrap(),
                other => panic!("{other:?}"),
            };
            pcm.truncate(samples);
            into.push(Heard {
                phase,
                tick,
                marker: p[1] & 0x80 != 0,
                seq: u16::from_be_bytes([p[2], p[3]]),
                ts: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
                ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
                pcm,
            });
        }
    }
}

/// Energy at `hz` summed over 20 ms frames, each through a Hann window and a Goertzel filter.
fn tone_energy(pcm: &[i16], hz: f64) -> f64 {
    let coeff = 2.0 * (2.0 * std::f64::consts::PI * hz / 8000.0).cos();
    pcm.chunks_exact(160)
        .map(|frame| {
            let (mut s1, mut s2) = (0.0f64, 0.0f64);
            for (n, &x) in frame.iter().enumerate() {
                let w = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / 160.0).cos();
                let s = x as f64 * w + coeff * s1 - s2;
                s2 = s1;
                s1 = s;
            }
            s1 * s1 + s2 * s2 - coeff * s1 * s2
        })
        .sum()
}

/// Asserts which of the three tones `heard` carries in `phase` (after it settled): each
/// expected tone within 15 dB of the strongest, each other one 25 dB or more below it.
fn assert_hears(who: &str, heard: &[Heard], phase: usize, expect: [bool; 3]) {
    let pcm: Vec<i16> = heard
        .iter()
        .filter(|h| h.phase == phase && h.tick >= SETTLE_TICKS)
        .flat_map(|h| h.pcm.iter().copied())
        .collect();
    assert!(
        pcm.len() >= 160 * (PHASE_TICKS - SETTLE_TICKS - 6),
        "{who} in phase {phase}: only {} samples",
        pcm.len()
    );
    let e = TONES.map(|f| tone_energy(&pcm, f));
    let max = e.iter().cloned().fold(0.0, f64::max);
    let db = e.map(|x| 10.0 * (x / max).log10());
    for k in 0..3 {
        if expect[k] {
            assert!(
                db[k] > -15.0,
                "{who} in phase {phase} misses tone {k}: {db:.1?} dB"
            );
        } else {
            assert!(
                db[k] < -25.0,
                "{who} in phase {phase} hears tone {k}: {db:.1?} dB"
            );
        }
    }
}

/// One SSRC for `heard` in `phase` after it settled.
fn ssrc_in(heard: &[Heard], phase: usize) -> u32 {
    let mut it = heard
        .iter()
        .filter(|h| h.phase == phase && h.tick >= SETTLE_TICKS);
    let first = it.next().expect("packets").ssrc;
    assert!(it.all(|h| h.ssrc == first), "one stream in phase {phase}");
    first
}

/// `ssrc`'s packets in `heard`: marked first only, sequence +1 per packet, timestamp a whole
/// number of 20 ms frames on (a frame skipped by a late core shows as a time gap).
fn assert_continuous(heard: &[Heard], ssrc: u32, frame_ticks: u32) {
    let stream: Vec<&Heard> = heard.iter().filter(|h| h.ssrc == ssrc).collect();
    assert!(stream.len() > 2 * (PHASE_TICKS - SETTLE_TICKS));
    assert!(stream[0].marker);
    for w in stream.windows(2) {
        assert!(!w[1].marker, "marker mid-stream");
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
        let dts = w[1].ts.wrapping_sub(w[0].ts);
        assert!(
            dts >= frame_ticks && dts % frame_ticks == 0 && dts <= 4 * frame_ticks,
            "timestamp step {dts}"
        );
    }
}

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
    let t0 = Instant::now();
    let mut tick_at = t0;
    for (phase, switch) in switches.into_iter().enumerate() {
        if let Some(cmd) = switch {
            updated(&mut core, cmd);
        }
        for tick in 0..PHASE_TICKS {
            for p in &mut phones {
                p.send();
            }
            tick_at += Duration::from_millis(20);
            std::thread::sleep(tick_at.saturating_duration_since(Instant::now()));
            for (p, into) in phones.iter_mut().zip(&mut heard) {
                p.receive(phase, tick, into);
            }
        }
    }
    let [caller, agent, sup] = &heard;
    const LISTEN: usize = 0;
    const WHISPER: usize = 1;
    const BARGE: usize = 2;
    const DETACHED: usize = 3;
    //                                 caller's agent's sup's tone
    assert_hears("caller", caller, LISTEN, [false, true, false]);
    assert_hears("agent", agent, LISTEN, [true, false, false]);
    assert_hears("supervisor", sup, LISTEN, [true, true, false]);
    assert_hears("caller", caller, WHISPER, [false, true, false]);
    assert_hears("agent", agent, WHISPER, [true, false, true]);
    assert_hears("supervisor", sup, WHISPER, [true, true, false]);
    assert_hears("caller", caller, BARGE, [false, true, true]);
    assert_hears("agent", agent, BARGE, [true, false, true]);
    assert_hears("supervisor", sup, BARGE, [true, true, false]);
    assert_hears("caller", caller, DETACHED, [false, true, false]);
    assert_hears("agent", agent, DETACHED, [true, false, false]);
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
