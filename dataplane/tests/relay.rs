//! The engine end to end on real loopback sockets: commands over the rings, RTP through the cores.
//! Runs once per I/O backend.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use tandem_dataplane::api::{Command, CoreError, Event, LegIndex, LegParams};
use tandem_dataplane::io::IoKind;
use tandem_dataplane::stats::DropReason;
use tandem_dataplane::{Config, CoreHandle, DataPlane};

fn start(io: IoKind, port_min: u16, sessions: u32, timeout_ms: u64) -> (DataPlane, CoreHandle) {
    let mut dp = DataPlane::start(&Config {
        cores: Some(1),
        port_min,
        port_max: port_min + 399,
        io,
        sessions_per_core: Some(sessions),
        timeout_ms,
        relatch_ms: 300,
        ..Config::default()
    })
    .expect("start data plane");
    // On this kernel io_uring must not silently fall back: the test is about that backend.
    assert!(
        dp.backend_name.starts_with(io.name()),
        "{} != {}",
        dp.backend_name,
        io.name()
    );
    let core = dp.take_cores().pop().unwrap();
    (dp, core)
}

fn call(core: &mut CoreHandle, cmd: Command) -> Event {
    core.send(cmd).expect("ring has room");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(ev) = core.events.pop() {
            return ev;
        }
        assert!(Instant::now() < deadline, "core did not answer");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn endpoint() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
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

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0u8; 172];
    p[0] = 0x80;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p
}

fn relays_both_ways(io: IoKind, port_min: u16) {
    let (dp, mut core) = start(io, port_min, 50, 60_000);
    let (a, b) = (endpoint(), endpoint());
    let Event::Created { id, ports, .. } = call(
        &mut core,
        Command::Create {
            token: 1,
            a: leg(&a),
            b: LegParams::default(),
        },
    ) else {
        panic!("create failed")
    };
    assert_eq!(ports[1], ports[0] + 2);
    assert!(matches!(
        call(
            &mut core,
            Command::Update {
                token: 2,
                id,
                leg: LegIndex::B,
                params: leg(&b)
            }
        ),
        Event::Updated { token: 2 }
    ));
    let to_a_side = SocketAddr::from(([127, 0, 0, 1], ports[0]));
    let to_b_side = SocketAddr::from(([127, 0, 0, 1], ports[1]));
    let mut buf = [0u8; 2048];
    for seq in 0..100u16 {
        a.send_to(&rtp(seq), to_a_side).unwrap();
        let (n, from) = b.recv_from(&mut buf).unwrap();
        assert_eq!((n, &buf[2..4]), (172, &seq.to_be_bytes()[..]));
        // Symmetric: B sees the packets coming from the port it was told to send to.
        assert_eq!(from, to_b_side);
        b.send_to(&rtp(seq), to_b_side).unwrap();
        let (_, from) = a.recv_from(&mut buf).unwrap();
        assert_eq!(from, to_a_side);
    }
    // Garbage and a stranger on a latched leg are counted, and the stream survives them.
    a.send_to(b"not rtp", to_a_side).unwrap();
    let stranger = endpoint();
    stranger.send_to(&rtp(7), to_a_side).unwrap();
    a.send_to(&rtp(1000), to_a_side).unwrap();
    let (n, _) = b.recv_from(&mut buf).unwrap();
    assert_eq!((n, &buf[2..4]), (172, &1000u16.to_be_bytes()[..]));

    let Event::Deleted { stats, .. } = call(&mut core, Command::Delete { token: 3, id }) else {
        panic!("delete failed")
    };
    assert_eq!(stats.legs[0].rtp.packets, 101);
    assert_eq!(stats.legs[0].rtp.errors, 1);
    assert_eq!(stats.legs[1].rtp.packets, 100);
    assert_eq!(stats.legs[0].rtp.peer, Some(a.local_addr().unwrap()));
    assert!(matches!(
        call(&mut core, Command::Delete { token: 4, id }),
        Event::Failed {
            error: CoreError::UnknownSession,
            ..
        }
    ));
    // Published counters agree (published once per loop pass; give it one).
    std::thread::sleep(Duration::from_millis(50));
    let c = core.stats.snapshot();
    assert_eq!(c.relayed_packets, 201);
    assert_eq!(c.drops[DropReason::Malformed as usize], 1);
    assert!(c.latency_buckets.iter().sum::<u64>() >= 201);
    assert_eq!(c.sessions_active, 0);
    drop(core);
    dp.shutdown();
}

fn refuses_beyond_budget_and_times_out(io: IoKind, port_min: u16) {
    let (dp, mut core) = start(io, port_min, 2, 1_500);
    let mut ids = Vec::new();
    for token in 0..2 {
        match call(
            &mut core,
            Command::Create {
                token,
                a: LegParams::default(),
                b: LegParams::default(),
            },
        ) {
            Event::Created { id, .. } => ids.push(id),
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        call(
            &mut core,
            Command::Create {
                token: 9,
                a: LegParams::default(),
                b: LegParams::default()
            }
        ),
        Event::Failed {
            error: CoreError::LoadLimit,
            ..
        }
    ));
    // No media at all: both sessions end on their own and are reported.
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut timed_out = 0;
    while timed_out < 2 {
        assert!(Instant::now() < deadline, "sessions did not time out");
        if let Ok(Event::TimedOut { id, .. }) = core.events.pop() {
            assert!(ids.contains(&id));
            timed_out += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Budget is free again.
    assert!(matches!(
        call(
            &mut core,
            Command::Create {
                token: 10,
                a: LegParams::default(),
                b: LegParams::default()
            }
        ),
        Event::Created { .. }
    ));
    drop(core);
    dp.shutdown();
}

/// A caller's media arrives before the callee's address is known (early media, a queued call):
/// the packets cannot be relayed, but they latch leg A, and its socket must be connected to
/// the latched peer, or later sends to A (which rely on the connection) would fail.
fn a_leg_latched_by_an_unrelayable_packet_still_receives(io: IoKind, port_min: u16) {
    let (dp, mut core) = start(io, port_min, 10, 60_000);
    let (a, b) = (endpoint(), endpoint());
    let Event::Created { id, ports, .. } = call(
        &mut core,
        Command::Create {
            token: 1,
            a: leg(&a),
            b: LegParams::default(),
        },
    ) else {
        panic!("create failed")
    };
    let to_a_side = SocketAddr::from(([127, 0, 0, 1], ports[0]));
    let to_b_side = SocketAddr::from(([127, 0, 0, 1], ports[1]));
    for seq in 0..3 {
        a.send_to(&rtp(seq), to_a_side).unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    assert!(matches!(
        call(
            &mut core,
            Command::Update {
                token: 2,
                id,
                leg: LegIndex::B,
                params: leg(&b)
            }
        ),
        Event::Updated { token: 2 }
    ));
    let mut buf = [0u8; 2048];
    for seq in 10..20u16 {
        b.send_to(&rtp(seq), to_b_side).unwrap();
        let (n, from) = a.recv_from(&mut buf).unwrap();
        assert_eq!(
            (n, from, &buf[2..4]),
            (172, to_a_side, &seq.to_be_bytes()[..])
        );
    }
    std::thread::sleep(Duration::from_millis(50));
    let c = core.stats.snapshot();
    assert_eq!(c.drops[DropReason::NoDestination as usize], 3);
    assert_eq!(c.drops[DropReason::SendFailed as usize], 0);
    drop(core);
    dp.shutdown();
}

/// A connected socket reports a datagram's ICMP "port unreachable" on its next call, and that
/// call sends nothing. A peer that closes its port for a moment (a phone re-binding its socket)
/// must not cost the first packet after it is back; a peer that stays gone is counted as
/// `peer_unreachable`, never as a local send failure.
fn a_peer_back_from_a_closed_port_loses_nothing(io: IoKind, port_min: u16) {
    let (dp, mut core) = start(io, port_min, 10, 60_000);
    let (a, b) = (endpoint(), endpoint());
    let b_addr = b.local_addr().unwrap();
    let Event::Created { ports, .. } = call(
        &mut core,
        Command::Create {
            token: 1,
            a: leg(&a),
            b: leg(&b),
        },
    ) else {
        panic!("create failed")
    };
    let to_a_side = SocketAddr::from(([127, 0, 0, 1], ports[0]));
    let to_b_side = SocketAddr::from(([127, 0, 0, 1], ports[1]));
    let mut buf = [0u8; 2048];
    // Both peers latch.
    b.send_to(&rtp(1), to_b_side).unwrap();
    a.recv_from(&mut buf).unwrap();
    a.send_to(&rtp(2), to_a_side).unwrap();
    b.recv_from(&mut buf).unwrap();

    let mut b = Some(b);
    for round in 0..5u16 {
        // B closes its port; the next packet toward it draws an ICMP error onto Tandem's B side.
        drop(b.take());
        a.send_to(&rtp(100 + round), to_a_side).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        // B is back on the same port: every packet from now on must arrive.
        let back = UdpSocket::bind(b_addr).unwrap();
        back.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        for seq in 0..3u16 {
            let seq = 1000 + round * 10 + seq;
            a.send_to(&rtp(seq), to_a_side).unwrap();
            let (n, _) = back
                .recv_from(&mut buf)
                .expect("packet after the port came back");
            assert_eq!((n, &buf[2..4]), (172, &seq.to_be_bytes()[..]));
        }
        b = Some(back);
    }

    // B leaves for good, and A's packets reach Tandem in bursts (one batch): each is either
    // sent (drawing an ICMP error) or counted as the peer's loss, never as a local failure.
    drop(b.take());
    std::thread::sleep(Duration::from_millis(20));
    let before = core.stats.snapshot();
    for burst in 0..4u16 {
        for seq in 0..10u16 {
            a.send_to(&rtp(2000 + burst * 10 + seq), to_a_side).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(50));
    let after = core.stats.snapshot();
    let unreachable = after.drops[DropReason::PeerUnreachable as usize];
    assert_eq!(after.drops[DropReason::SendFailed as usize], 0);
    assert_eq!(
        after.relayed_packets - before.relayed_packets + unreachable,
        40,
        "{:?}",
        after.drops
    );
    drop(core);
    dp.shutdown();
}

#[test]
fn portable_a_peer_back_from_a_closed_port_loses_nothing() {
    a_peer_back_from_a_closed_port_loses_nothing(IoKind::Portable, 45000);
}

#[test]
fn uring_a_peer_back_from_a_closed_port_loses_nothing() {
    a_peer_back_from_a_closed_port_loses_nothing(IoKind::Uring, 45400);
}

#[test]
fn portable_latched_by_an_unrelayable_packet_still_receives() {
    a_leg_latched_by_an_unrelayable_packet_still_receives(IoKind::Portable, 44200);
}

#[test]
fn uring_latched_by_an_unrelayable_packet_still_receives() {
    a_leg_latched_by_an_unrelayable_packet_still_receives(IoKind::Uring, 44600);
}

#[test]
fn portable_relays_both_ways() {
    relays_both_ways(IoKind::Portable, 41000);
}

#[test]
fn uring_relays_both_ways() {
    relays_both_ways(IoKind::Uring, 41400);
}

#[test]
fn portable_refuses_beyond_budget_and_times_out() {
    refuses_beyond_budget_and_times_out(IoKind::Portable, 41800);
}

#[test]
fn uring_refuses_beyond_budget_and_times_out() {
    refuses_beyond_budget_and_times_out(IoKind::Uring, 42200);
}
