//! RTCP of our own on a transcoded session, through a real core on loopback, once per I/O
//! backend: PCMA on leg A, PCMU on leg B, reports every ~300 ms. Each phone sends RTP and one
//! SR; each gets SRs whose SSRC is the SSRC of the RTP it receives, whose counts are what it
//! received, with a block about its own stream echoing its SR, and never the other phone's
//! RTCP. An RR echoing our SR gives the leg's round trip. Then a phone played hold music gets
//! SRs about the music's stream, and a whispering supervisor and the agent get SRs about
//! the mixes they hear.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use tandem_dataplane::api::{
    Codec, Command, Event, LegCodec, LegIndex, LegParams, MonitorMode, SessionId,
};
use tandem_dataplane::io::IoKind;
use tandem_dataplane::{Config, CoreHandle};

mod common;
use common::{call, endpoint_with, start_core};

const PACKETS: u16 = 25;

/// One phone: its RTP and RTCP sockets and the SSRC it sends under.
struct Phone {
    rtp: UdpSocket,
    rtcp: UdpSocket,
    ssrc: u32,
    /// RTCP muxed on the RTP socket (RFC 5761): each report arrives right behind the packets
    /// sent before it, so its counts can be checked exactly.
    mux: bool,
}

impl Phone {
    fn new(ssrc: u32) -> Self {
        Phone {
            rtp: endpoint_with(Duration::from_millis(2)),
            rtcp: endpoint_with(Duration::from_millis(2)),
            ssrc,
            mux: false,
        }
    }

    fn muxed(ssrc: u32) -> Self {
        Phone {
            mux: true,
            ..Phone::new(ssrc)
        }
    }

    fn leg(&self) -> LegParams {
        LegParams {
            rtp: Some(self.rtp.local_addr().unwrap()),
            rtcp: (!self.mux).then(|| self.rtcp.local_addr().unwrap()),
            rtcp_mux: self.mux,
            ..LegParams::default()
        }
    }
}

/// What one phone received: RTP (SSRC, last timestamp, count) and our reports with the time
/// each arrived.
#[derive(Default)]
struct Heard {
    rtp_ssrc: Option<u32>,
    rtp_packets: u32,
    last_ts: u32,
    /// Each report, when it was read, and how much RTP had been read by then.
    reports: Vec<(Instant, Vec<u8>, u32)>,
}

fn word(p: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(p[at..at + 4].try_into().unwrap())
}

/// A report of ours, read from the wire.
#[derive(Debug)]
struct Parsed {
    ssrc: u32,
    /// NTP, RTP timestamp, packets, octets.
    sender: Option<(u64, u32, u32, u32)>,
    /// About, cumulative lost, extended highest sequence, LSR, DLSR.
    blocks: Vec<(u32, u32, u32, u32, u32)>,
    cname: Vec<u8>,
}

fn parse(p: &[u8]) -> Parsed {
    assert_eq!(p[0] >> 6, 2, "version");
    let count = (p[0] & 0x1f) as usize;
    let len = (u16::from_be_bytes([p[2], p[3]]) as usize + 1) * 4;
    let (sender, mut at) = match p[1] {
        200 => {
            let ntp = u64::from_be_bytes(p[8..16].try_into().unwrap());
            (Some((ntp, word(p, 16), word(p, 20), word(p, 24))), 28)
        }
        201 => (None, 8),
        other => panic!("report of type {other}"),
    };
    let blocks = (0..count)
        .map(|k| {
            let b = at + 24 * k;
            (
                word(p, b),
                word(p, b + 4) & 0xff_ffff,
                word(p, b + 8),
                word(p, b + 16),
                word(p, b + 20),
            )
        })
        .collect();
    at += 24 * count;
    assert_eq!(at, len);
    // SDES with one chunk: our SSRC, CNAME.
    let sdes = &p[len..];
    assert_eq!((sdes[0] & 0x1f, sdes[1]), (1, 202));
    assert_eq!(
        len + (u16::from_be_bytes([sdes[2], sdes[3]]) as usize + 1) * 4,
        p.len()
    );
    assert_eq!(word(sdes, 4), word(p, 4));
    assert_eq!(sdes[8], 1, "CNAME item");
    Parsed {
        ssrc: word(p, 4),
        sender,
        blocks,
        cname: sdes[10..10 + sdes[9] as usize].to_vec(),
    }
}

/// Reads what `phone` has been sent so far (each read waits at most 2 ms).
fn listen(phone: &Phone, heard: &mut Heard) {
    drain_rtp(phone, heard);
    let mut buf = [0u8; 1500];
    while let Ok(n) = phone.rtcp.recv(&mut buf) {
        // The RTP queued before the report may have arrived since the last read.
        drain_rtp(phone, heard);
        heard
            .reports
            .push((Instant::now(), buf[..n].to_vec(), heard.rtp_packets));
    }
}

fn drain_rtp(phone: &Phone, heard: &mut Heard) {
    let mut buf = [0u8; 1500];
    while let Ok(n) = phone.rtp.recv(&mut buf) {
        let rtcp = (200..=204).contains(&buf[1]);
        if rtcp && phone.mux {
            let report = buf[..n].to_vec();
            heard
                .reports
                .push((Instant::now(), report, heard.rtp_packets));
            continue;
        }
        assert!(n >= 12 && !rtcp, "RTCP on the RTP socket");
        heard.rtp_ssrc = Some(word(&buf, 8));
        heard.last_ts = word(&buf, 4);
        heard.rtp_packets += 1;
    }
}

fn rtp(pt: u8, seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(seq as u32 * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xd5; 160]);
    p
}

fn sender_report(ssrc: u32, ntp: u64) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&ntp.to_be_bytes());
    p.extend_from_slice(&[0; 12]);
    p
}

fn reports_on_a_transcoded_session(io: IoKind, port_min: u16) {
    let (dp, mut core) = start_core(Config {
        cores: Some(1),
        port_min,
        port_max: port_min + 49,
        io,
        sessions_per_core: Some(4),
        rtcp_interval_ms: 300,
        ..Config::default()
    });
    let (a, b) = (Phone::new(0xa0a0_a0a0), Phone::new(0xb0b0_b0b0));
    let (id, ports) = create(&mut core, a.leg(), b.leg());
    let codec = |payload_type, codec| LegCodec {
        payload_type,
        codec,
        event_payload_type: None,
        ptime_ms: 20,
        options: tandem_dataplane::api::CodecOptions::NONE,
    };
    let plan = [codec(8, Codec::Pcma), codec(0, Codec::Pcmu)];
    let set = Command::SetCodecs {
        token: 2,
        id,
        codecs: Some(plan),
    };
    assert_eq!(call(&mut core, set), Event::Updated { token: 2 });
    let ours = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let (a_rtp, a_rtcp) = (ours(ports[0]), ours(ports[0] + 1));
    let (b_rtp, b_rtcp) = (ours(ports[1]), ours(ports[1] + 1));

    // RTP both ways, then one SR from each phone.
    for seq in 0..PACKETS {
        a.rtp.send_to(&rtp(8, 1000 + seq, a.ssrc), a_rtp).unwrap();
        b.rtp.send_to(&rtp(0, 2000 + seq, b.ssrc), b_rtp).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let (a_ntp, b_ntp) = (0x0000_aaaa_1111_0000u64, 0x0000_bbbb_2222_0000u64);
    let (a_sr, b_sr) = (sender_report(a.ssrc, a_ntp), sender_report(b.ssrc, b_ntp));
    a.rtcp.send_to(&a_sr, a_rtcp).unwrap();
    b.rtcp.send_to(&b_sr, b_rtcp).unwrap();

    // Reports come every 150-450 ms: 1.1 s holds at least two after the SRs.
    let (mut heard_a, mut heard_b) = (Heard::default(), Heard::default());
    let until = Instant::now() + Duration::from_millis(1_100);
    while Instant::now() < until {
        listen(&a, &mut heard_a);
        listen(&b, &mut heard_b);
    }

    for (phone, heard, peer_sr, peer_ssrc, first_seq, peer_ntp) in [
        (&a, &heard_a, &b_sr, b.ssrc, 1000u32, a_ntp),
        (&b, &heard_b, &a_sr, a.ssrc, 2000, b_ntp),
    ] {
        assert_eq!(heard.rtp_packets, PACKETS as u32, "all RTP transcoded");
        let our_ssrc = heard.rtp_ssrc.unwrap();
        assert!(heard.reports.len() >= 2, "{} reports", heard.reports.len());
        let mut last_packets = 0;
        for (_, report, _) in &heard.reports {
            assert_ne!(report, peer_sr, "the other phone's RTCP was relayed");
            let r = parse(report);
            assert_eq!(r.ssrc, our_ssrc, "SR of the stream the phone receives");
            assert_ne!(r.ssrc, peer_ssrc);
            assert!(r.cname.starts_with(b"tandem-"));
            let (_, _, packets, octets) = r.sender.expect("we had sent RTP: an SR");
            assert!(packets >= last_packets && packets <= PACKETS as u32);
            assert_eq!(octets, packets * 160);
            last_packets = packets;
            let block = r.blocks[0];
            assert_eq!(block.0, phone.ssrc, "a block about the phone's stream");
            assert_eq!(block.1, 0, "nothing lost");
            assert_eq!(block.2, first_seq + PACKETS as u32 - 1);
        }
        // The last report: everything sent, its timestamp moved on from the last packet's by
        // the time since (less than 2 s at 8 kHz), and the phone's SR echoed.
        let last = parse(&heard.reports.last().unwrap().1);
        assert_eq!(
            last.cname,
            parse(&heard_b.reports[0].1).cname,
            "one CNAME per core"
        );
        let (_, rtp_ts, packets, _) = last.sender.unwrap();
        assert_eq!(packets, PACKETS as u32);
        let ahead = rtp_ts.wrapping_sub(heard.last_ts) as i32;
        assert!(
            (0..16_000).contains(&ahead),
            "SR timestamp {ahead} ticks on"
        );
        let block = last.blocks[0];
        assert_eq!(
            block.3,
            (peer_ntp >> 16) as u32,
            "LSR echoes the phone's SR"
        );
        assert!(block.4 > 0 && block.4 < 2 * 65_536, "DLSR {}", block.4);
    }

    // Phone A answers our last SR with an RR echoing it: A's round trip from our SR.
    echo_last_sr(&a, &mut heard_a, a_rtcp);
    assert_round_trip(&mut core, id);
    let counters = core.stats.snapshot();
    assert_eq!(counters.rtcp_terminated, 3, "two SRs and an RR consumed");
    let delivered = (heard_a.reports.len() + heard_b.reports.len()) as u64;
    assert!(counters.rtcp_sent >= delivered, "{counters:?}");

    // A plain session whose leg A is played hold music: SRs about the music's stream.
    let (c, d) = (Phone::muxed(0xc0c0_c0c0), Phone::new(0xd0d0_d0d0));
    let (id, ports) = create(&mut core, c.leg(), d.leg());
    let play = Command::Play {
        token: 5,
        id,
        leg: LegIndex::A,
        clip: 0,
        payload_type: 0,
    };
    assert_eq!(call(&mut core, play), Event::Updated { token: 5 });
    let mut heard = Heard::default();
    let until = Instant::now() + Duration::from_millis(700);
    while Instant::now() < until {
        listen(&c, &mut heard);
    }
    assert_srs_about_what_it_hears(&heard, "music");
    // Its RR about the music's stream gives its round trip (the RR itself is relayed to D).
    echo_last_sr(&c, &mut heard, ours(ports[0]));
    assert_round_trip(&mut core, id);

    // A supervisor whispering on a plain call: the agent (leg B) and the supervisor hear
    // mixes of ours and get SRs about them; the caller hears the agent relayed, no reports.
    let (caller, agent, sup) = (
        Phone::muxed(0xe0e0_e0e0),
        Phone::muxed(0xf0f0_f0f0),
        Phone::muxed(0x5005_5005),
    );
    let (call_id, _) = create(&mut core, caller.leg(), agent.leg());
    let (sup_id, _) = create(&mut core, sup.leg(), LegParams::default());
    let pcmu = codec(0, Codec::Pcmu);
    let attach = Command::AttachMonitor {
        token: 8,
        id: call_id,
        supervisor: sup_id,
        mode: MonitorMode::Whisper,
        codecs: [pcmu; 3],
    };
    assert_eq!(call(&mut core, attach), Event::Updated { token: 8 });
    let mut heard = [Heard::default(), Heard::default(), Heard::default()];
    let until = Instant::now() + Duration::from_millis(700);
    while Instant::now() < until {
        for (phone, heard) in [&caller, &agent, &sup].into_iter().zip(&mut heard) {
            listen(phone, heard);
        }
    }
    let [to_caller, to_agent, to_sup] = heard;
    assert!(
        to_caller.reports.is_empty(),
        "the caller hears nothing of ours"
    );
    assert_srs_about_what_it_hears(&to_agent, "the agent's mix");
    assert_srs_about_what_it_hears(&to_sup, "the supervisor's mix");
    assert_ne!(to_agent.rtp_ssrc, to_sup.rtp_ssrc);
    drop(dp);
}

/// Every report `heard` is an SR about the stream of ours it received (`what`), counting what
/// was sent before it.
fn assert_srs_about_what_it_hears(heard: &Heard, what: &str) {
    let ssrc = heard.rtp_ssrc.expect(what);
    assert!(!heard.reports.is_empty(), "no reports about {what}");
    for (_, report, read_before) in &heard.reports {
        let r = parse(report);
        assert_eq!(r.ssrc, ssrc, "SR of {what}");
        assert!(r.blocks.is_empty(), "the phone sent nothing");
        let (_, _, packets, octets) = r.sender.expect("SR");
        assert_eq!(octets, packets * 160);
        // Queued right after the packets it counts, on the same (muxed) socket.
        assert_eq!(packets, *read_before, "{what}: the SR's count");
    }
}

/// A session with legs `a` and `b`: its id and our RTP ports.
fn create(core: &mut CoreHandle, a: LegParams, b: LegParams) -> (SessionId, [u16; 2]) {
    match call(core, Command::Create { token: 1, a, b }) {
        Event::Created { id, ports, .. } => (id, ports),
        other => panic!("{other:?}"),
    }
}

/// `phone` answers the last SR it got with an RR about it, sent to `to` (our RTCP port, or
/// RTP port when it muxes).
fn echo_last_sr(phone: &Phone, heard: &mut Heard, to: SocketAddr) {
    listen(phone, heard);
    let (received, report, _) = heard.reports.last().unwrap();
    let r = parse(report);
    let lsr = (r.sender.unwrap().0 >> 16) as u32;
    let dlsr = (received.elapsed().as_nanos() * 65_536 / 1_000_000_000) as u32;
    let mut rr = vec![0x81, 201, 0, 7];
    rr.extend_from_slice(&phone.ssrc.to_be_bytes());
    rr.extend_from_slice(&r.ssrc.to_be_bytes());
    rr.extend_from_slice(&[0; 12]);
    rr.extend_from_slice(&lsr.to_be_bytes());
    rr.extend_from_slice(&dlsr.to_be_bytes());
    let socket = if phone.mux { &phone.rtp } else { &phone.rtcp };
    socket.send_to(&rr, to).unwrap();
}

/// Leg A of session `id` has a loopback round trip.
fn assert_round_trip(core: &mut CoreHandle, id: SessionId) {
    std::thread::sleep(Duration::from_millis(20));
    let stats = match call(core, Command::Query { token: 9, id }) {
        Event::Stats { stats, .. } => stats,
        other => panic!("{other:?}"),
    };
    let rtt = stats.legs[0].quality.rtt_us.expect("leg A's round trip");
    assert!(rtt < 200_000, "loopback round trip {rtt} µs");
}

#[test]
fn portable_sends_rtcp_of_its_own_on_transcoded_sessions() {
    reports_on_a_transcoded_session(IoKind::Portable, 48100);
}

#[test]
fn uring_sends_rtcp_of_its_own_on_transcoded_sessions() {
    reports_on_a_transcoded_session(IoKind::Uring, 48150);
}
