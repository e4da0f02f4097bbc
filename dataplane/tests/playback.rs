//! Playback and DTMF through a real core on loopback sockets, once per I/O backend.

mod common;
use common::{call, next_event};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem_dataplane::api::{
    ClipSequence, Command, CoreError, DtmfOptions, DtmfSource, Event, LegIndex, LegParams,
    SessionId, PLAY_ONCE_ONLY,
};
use tandem_dataplane::clip::Law;
use tandem_dataplane::io::IoKind;
use tandem_dataplane::stats::DropReason;
use tandem_dataplane::{Clip, Config, CoreHandle, DataPlane};

fn ramp_clip() -> Arc<Clip> {
    // Seven frames, each a different level, so a payload names its frame.
    let pcm: Vec<i16> = (0..7 * 160)
        .map(|i| ((i / 160) * 1000 + 500) as i16)
        .collect();
    Arc::new(Clip::from_pcm("ramp", &pcm).unwrap())
}

fn start(io: IoKind, port_min: u16) -> (DataPlane, CoreHandle) {
    start_in(io, port_min, port_min + 399)
}

fn start_in(io: IoKind, port_min: u16, port_max: u16) -> (DataPlane, CoreHandle) {
    let mut dp = DataPlane::start(&Config {
        cores: Some(1),
        port_min,
        port_max,
        io,
        sessions_per_core: Some(10),
        clips: vec![Clip::hold_music(), ramp_clip()],
        ..Config::default()
    })
    .expect("start data plane");
    assert!(
        dp.backend_name.starts_with(io.name()),
        "{}",
        dp.backend_name
    );
    let core = dp.take_cores().pop().unwrap();
    (dp, core)
}

fn endpoint() -> UdpSocket {
    common::endpoint_with(Duration::from_millis(500))
}

fn leg(sock: &UdpSocket) -> LegParams {
    let a = sock.local_addr().unwrap();
    LegParams {
        rtp: Some(a),
        rtcp: Some(SocketAddr::new(a.ip(), a.port() + 1)),
        ..LegParams::default()
    }
}

fn create(core: &mut CoreHandle, a: &UdpSocket, b: &UdpSocket) -> (SessionId, [u16; 2]) {
    match call(
        core,
        Command::Create {
            token: 1,
            a: leg(a),
            b: leg(b),
        },
    ) {
        Event::Created { id, ports, .. } => (id, ports),
        other => panic!("{other:?}"),
    }
}

fn rtp(pt: u8, seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0u8; 172];
    p[0] = 0x80;
    p[1] = pt;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p
}

/// Reads whatever is queued; returns how many datagrams that was.
fn drain(s: &UdpSocket) -> u64 {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while s.recv(&mut buf).is_ok() {
        n += 1;
    }
    s.set_nonblocking(false).unwrap();
    n
}

struct Header {
    marker: bool,
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
}

fn header(p: &[u8]) -> Header {
    Header {
        marker: p[1] & 0x80 != 0,
        pt: p[1] & 0x7f,
        seq: u16::from_be_bytes([p[2], p[3]]),
        ts: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
        ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
    }
}

fn stop_play(core: &mut CoreHandle, token: u64, id: SessionId, leg: LegIndex) -> Event {
    call(core, Command::StopPlay { token, id, leg })
}

fn plays_a_paced_stream_and_holds_back_relayed_media(io: IoKind, port_min: u16) {
    let (dp, mut core) = start(io, port_min);
    let (a, b) = (endpoint(), endpoint());
    let (id, ports) = create(&mut core, &a, &b);
    let a_side = SocketAddr::from(([127, 0, 0, 1], ports[0]));
    let b_side = SocketAddr::from(([127, 0, 0, 1], ports[1]));

    for (clip, pt, error) in [
        (9, 0, CoreError::UnknownClip),
        (1, 18, CoreError::UnsupportedPayloadType),
    ] {
        let answer = call(
            &mut core,
            Command::Play {
                token: 2,
                id,
                leg: LegIndex::A,
                clip,
                payload_type: pt,
            },
        );
        assert!(
            matches!(answer, Event::Failed { error: e, .. } if e == error),
            "{answer:?}"
        );
    }
    assert!(matches!(
        call(
            &mut core,
            Command::Play {
                token: 3,
                id,
                leg: LegIndex::A,
                clip: 1,
                payload_type: 8,
            }
        ),
        Event::Updated { token: 3 }
    ));

    // One second of playback while B talks: A hears the clip and nothing of B.
    let clip = ramp_clip();
    let started = Instant::now();
    let mut got: Vec<(Header, Vec<u8>)> = Vec::new();
    let mut buf = [0u8; 2048];
    let mut b_seq = 0u16;
    while started.elapsed() < Duration::from_secs(1) {
        b.send_to(&rtp(0, b_seq, 0xb0b), b_side).unwrap();
        b_seq += 1;
        let (n, from) = a.recv_from(&mut buf).unwrap();
        assert_eq!(from, a_side, "played from A's own port");
        got.push((header(&buf[..n]), buf[12..n].to_vec()));
    }
    let n = got.len();
    // 50 packets a second (a loaded CI machine may start a frame or two late).
    assert!((45..=56).contains(&n), "{n} packets in 1 s");
    let ssrc = got[0].0.ssrc;
    assert_ne!(ssrc, 0xb0b, "B's packets must not reach a played leg");
    let first_frame = (0..clip.frames())
        .find(|&f| clip.frame(Law::Alaw, f) == got[0].1.as_slice())
        .expect("payload is a frame of the clip");
    assert_eq!(first_frame, 0);
    for (i, (h, payload)) in got.iter().enumerate() {
        assert_eq!((h.pt, h.ssrc, h.marker), (8, ssrc, i == 0), "packet {i}");
        assert_eq!(h.seq, got[0].0.seq.wrapping_add(i as u16), "packet {i}");
        assert_eq!(h.ts, got[0].0.ts.wrapping_add(160 * i as u32), "packet {i}");
        // Loops through the clip: frame i mod 7.
        assert_eq!(
            payload.as_slice(),
            clip.frame(Law::Alaw, i as u32),
            "packet {i}"
        );
    }

    assert_eq!(
        stop_play(&mut core, 4, id, LegIndex::A),
        Event::Updated { token: 4 }
    );
    // Whatever was in flight is drained; from now on A hears B again, and only B.
    std::thread::sleep(Duration::from_millis(60));
    let in_flight = drain(&a);
    // The stop came within a frame or two of the last packet read.
    assert!(
        in_flight <= 3,
        "{in_flight} packets played after the last one read"
    );
    for seq in 0..20u16 {
        b.send_to(&rtp(0, 1000 + seq, 0xb0b), b_side).unwrap();
        let (n, _) = a.recv_from(&mut buf).unwrap();
        let h = header(&buf[..n]);
        assert_eq!((h.ssrc, h.seq), (0xb0b, 1000 + seq));
    }
    a.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    assert!(a.recv_from(&mut buf).is_err(), "playback stopped");

    // Counters: every played packet counted as played, none as relayed.
    std::thread::sleep(Duration::from_millis(50));
    let c = core.stats.snapshot();
    assert_eq!(c.played_packets, n as u64 + in_flight);
    assert_eq!(c.played_bytes, c.played_packets * 172);
    assert_eq!(c.drops[DropReason::Playback as usize], b_seq as u64);
    assert_eq!(c.relayed_packets, 20);

    // Deleting a playing session stops it too.
    assert!(matches!(
        call(
            &mut core,
            Command::Play {
                token: 5,
                id,
                leg: LegIndex::B,
                clip: 0,
                payload_type: 0,
            }
        ),
        Event::Updated { .. }
    ));
    let (n, _) = b.recv_from(&mut buf).unwrap();
    assert_eq!((n, header(&buf[..n]).pt), (172, 0));
    assert!(matches!(
        call(&mut core, Command::Delete { token: 6, id }),
        Event::Deleted { .. }
    ));
    assert!(matches!(
        stop_play(&mut core, 7, id, LegIndex::B),
        Event::Failed {
            error: CoreError::UnknownSession,
            ..
        }
    ));
    drop(core);
    dp.shutdown();
}

/// Music, then an announcement of two clips (the ramp twice) and the music again: one stream
/// whose sequence and timestamps run on through both switches, each clip from its first frame.
fn plays_a_sequence_then_the_loop(io: IoKind, port_min: u16) {
    let (dp, mut core) = start(io, port_min);
    let (a, b) = (endpoint(), endpoint());
    let (id, _) = create(&mut core, &a, &b);
    let play = |token, once: &[u16]| Command::PlaySequence {
        token,
        id,
        leg: LegIndex::A,
        once: ClipSequence::new(once).unwrap(),
        then: 0,
        payload_type: 0,
    };
    assert_eq!(call(&mut core, play(2, &[])), Event::Updated { token: 2 });
    let mut buf = [0u8; 2048];
    let mut got: Vec<(Header, Vec<u8>)> = Vec::new();
    for _ in 0..5 {
        let (n, _) = a.recv_from(&mut buf).unwrap();
        got.push((header(&buf[..n]), buf[12..n].to_vec()));
    }
    assert_eq!(
        call(&mut core, play(3, &[1, 1])),
        Event::Updated { token: 3 }
    );
    let ask = call(
        &mut core,
        Command::PlaySequence {
            token: 4,
            id,
            leg: LegIndex::B,
            once: ClipSequence::new(&[1, 9]).unwrap(),
            then: 0,
            payload_type: 0,
        },
    );
    assert_eq!(
        ask,
        Event::Failed {
            token: 4,
            error: CoreError::UnknownClip
        }
    );
    // 14 frames of the ramp and a few of the music after whatever was in flight.
    for _ in 0..30 {
        let (n, _) = a.recv_from(&mut buf).unwrap();
        got.push((header(&buf[..n]), buf[12..n].to_vec()));
    }
    for (i, (h, _)) in got.iter().enumerate() {
        assert_eq!(h.ssrc, got[0].0.ssrc, "packet {i}");
        assert_eq!(h.seq, got[0].0.seq.wrapping_add(i as u16), "packet {i}");
        assert_eq!(h.ts, got[0].0.ts.wrapping_add(160 * i as u32), "packet {i}");
    }
    let (ramp, music) = (ramp_clip(), Clip::hold_music());
    let start = got
        .iter()
        .position(|(_, p)| p.as_slice() == ramp.frame(Law::Ulaw, 0))
        .expect("the announcement was played");
    assert!(got[start].0.marker, "a new talkspurt");
    for k in 0..14 {
        assert_eq!(
            got[start + k].1,
            ramp.frame(Law::Ulaw, k as u32),
            "ramp {k}"
        );
    }
    for k in 0..(got.len() - start - 14).min(5) {
        let p = &got[start + 14 + k].1;
        assert_eq!(p.as_slice(), music.frame(Law::Ulaw, k as u32), "music {k}");
    }
    drop(core);
    dp.shutdown();
}

/// An announcement played once: A hears exactly the ramp's seven frames (B's packets held
/// back meanwhile), then `PlayDone` arrives, nothing more is played, and B is relayed to A
/// again.
fn plays_once_then_reports_and_relays(io: IoKind, port_min: u16, port_max: u16) {
    let (dp, mut core) = start_in(io, port_min, port_max);
    let (a, b) = (endpoint(), endpoint());
    let (id, ports) = create(&mut core, &a, &b);
    let b_side = SocketAddr::from(([127, 0, 0, 1], ports[1]));
    let once = ClipSequence::new(&[1]).unwrap();
    let play = |token, once| Command::PlaySequence {
        token,
        id,
        leg: LegIndex::A,
        once,
        then: PLAY_ONCE_ONLY,
        payload_type: 8,
    };
    assert_eq!(
        call(&mut core, play(2, ClipSequence::EMPTY)),
        Event::Failed {
            token: 2,
            error: CoreError::UnknownClip
        },
        "nothing to play once"
    );
    assert_eq!(call(&mut core, play(3, once)), Event::Updated { token: 3 });
    let clip = ramp_clip();
    let mut buf = [0u8; 2048];
    let mut first: Option<Header> = None;
    for k in 0..clip.frames() {
        let (n, _) = a.recv_from(&mut buf).unwrap();
        let h = header(&buf[..n]);
        let (seq0, ts0, ssrc) = match &first {
            Some(f) => (f.seq, f.ts, f.ssrc),
            None => (h.seq, h.ts, h.ssrc),
        };
        assert_eq!(&buf[12..n], clip.frame(Law::Alaw, k), "frame {k}");
        assert_eq!(
            (h.pt, h.marker, h.ssrc, h.seq, h.ts),
            (
                8,
                k == 0,
                ssrc,
                seq0.wrapping_add(k as u16),
                ts0.wrapping_add(160 * k)
            ),
            "frame {k}"
        );
        first.get_or_insert(h);
        // B talks during the announcement (not after its last frame, which would race the
        // end): held back from A.
        if k + 1 < clip.frames() {
            b.send_to(&rtp(0, k as u16, 0xb0b), b_side).unwrap();
        }
    }
    match next_event(&mut core, Duration::from_secs(2)) {
        Some(Event::PlayDone {
            id: got,
            leg,
            at_ns,
        }) => {
            assert_eq!((got, leg), (id, LegIndex::A));
            assert!(at_ns > 0);
        }
        other => panic!("{other:?}"),
    }
    // Nothing is played after the clip: no loop.
    a.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    assert!(a.recv_from(&mut buf).is_err(), "played after the end");
    // Relaying to A has resumed.
    for seq in 0..5u16 {
        b.send_to(&rtp(0, 500 + seq, 0xb0b), b_side).unwrap();
        let (n, _) = a.recv_from(&mut buf).unwrap();
        let h = header(&buf[..n]);
        assert_eq!((h.ssrc, h.seq), (0xb0b, 500 + seq));
    }
    std::thread::sleep(Duration::from_millis(50));
    let c = core.stats.snapshot();
    assert_eq!(c.played_packets, clip.frames() as u64);
    assert_eq!(
        c.drops[DropReason::Playback as usize],
        clip.frames() as u64 - 1
    );
    assert_eq!(c.relayed_packets, 5);
    // Reported once; a StopPlay after the end is the no-op it always was, and unreported.
    assert_eq!(
        stop_play(&mut core, 4, id, LegIndex::A),
        Event::Updated { token: 4 }
    );
    assert_eq!(next_event(&mut core, Duration::from_millis(100)), None);
    drop(core);
    dp.shutdown();
}

fn event_packet(pt: u8, seq: u16, ts: u32, event: u8, end: bool, duration: u16) -> Vec<u8> {
    let mut p = vec![0x80, pt, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a, 0x0b];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&[event, if end { 0x8a } else { 0x0a }]);
    p.extend_from_slice(&duration.to_be_bytes());
    p
}

/// A key press as a phone sends it: updates every 20 ms, then the end packet three times.
fn key_press(to: &SocketAddr, from: &UdpSocket, pt: u8, seq: &mut u16, ts: u32, event: u8) {
    for (i, d) in [160u16, 320, 480, 800, 800, 800].into_iter().enumerate() {
        from.send_to(&event_packet(pt, *seq, ts, event, i >= 3, d), to)
            .unwrap();
        if i < 3 {
            *seq += 1;
        }
    }
    *seq += 1;
}

fn reports_each_key_once(io: IoKind, port_min: u16) {
    let (dp, mut core) = start(io, port_min);
    let (a, b) = (endpoint(), endpoint());
    let (id, ports) = create(&mut core, &a, &b);
    let a_side = SocketAddr::from(([127, 0, 0, 1], ports[0]));
    assert!(matches!(
        call(
            &mut core,
            Command::SetDtmf {
                token: 2,
                id,
                leg: LegIndex::A,
                options: DtmfOptions {
                    event_payload_type: Some(101),
                    ..DtmfOptions::default()
                },
            }
        ),
        Event::Updated { token: 2 }
    ));
    let mut seq = 100;
    key_press(&a_side, &a, 101, &mut seq, 8000, 5);
    match next_event(&mut core, Duration::from_secs(2)) {
        Some(Event::Dtmf {
            id: got,
            leg,
            digit,
            duration_ms,
            source,
            ..
        }) => assert_eq!(
            (got, leg, digit, duration_ms, source),
            (id, LegIndex::A, '5', 100, DtmfSource::Rfc4733)
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(next_event(&mut core, Duration::from_millis(200)), None);
    // Still relayed: B got all six packets.
    let mut buf = [0u8; 2048];
    for _ in 0..6 {
        let (n, _) = b.recv_from(&mut buf).unwrap();
        assert_eq!((n, buf[1] & 0x7f), (16, 101));
    }

    // The same packets under another payload type are not telephone events.
    key_press(&a_side, &a, 100, &mut seq, 16000, 7);
    assert_eq!(next_event(&mut core, Duration::from_millis(300)), None);

    // A caller on hold music presses a key: still reported.
    assert!(matches!(
        call(
            &mut core,
            Command::Play {
                token: 3,
                id,
                leg: LegIndex::A,
                clip: 0,
                payload_type: 0,
            }
        ),
        Event::Updated { .. }
    ));
    key_press(&a_side, &a, 101, &mut seq, 24000, 11);
    match next_event(&mut core, Duration::from_secs(2)) {
        Some(Event::Dtmf { digit, .. }) => assert_eq!(digit, '#'),
        other => panic!("{other:?}"),
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(core.stats.snapshot().dtmf_events, 2);
    drop(core);
    dp.shutdown();
}

#[test]
fn portable_plays_a_paced_stream_and_holds_back_relayed_media() {
    plays_a_paced_stream_and_holds_back_relayed_media(IoKind::Portable, 42600);
}

#[test]
fn uring_plays_a_paced_stream_and_holds_back_relayed_media() {
    plays_a_paced_stream_and_holds_back_relayed_media(IoKind::Uring, 43000);
}

#[test]
fn portable_plays_a_sequence_then_the_loop() {
    plays_a_sequence_then_the_loop(IoKind::Portable, 45000);
}

#[test]
fn uring_plays_a_sequence_then_the_loop() {
    plays_a_sequence_then_the_loop(IoKind::Uring, 45400);
}

#[test]
fn portable_plays_once_then_reports_and_relays() {
    plays_once_then_reports_and_relays(IoKind::Portable, 49100, 49139);
}

#[test]
fn uring_plays_once_then_reports_and_relays() {
    plays_once_then_reports_and_relays(IoKind::Uring, 49140, 49179);
}

#[test]
fn portable_reports_each_key_once() {
    reports_each_key_once(IoKind::Portable, 43400);
}

#[test]
fn uring_reports_each_key_once() {
    reports_each_key_once(IoKind::Uring, 43800);
}
