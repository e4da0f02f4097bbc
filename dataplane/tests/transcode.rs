//! Transcoding through a real core on loopback sockets, once per I/O backend: PCMA on leg A,
//! PCMU, Opus or G.729 on leg B, a tone sent each way arrives in the other codec with its frequency,
//! telephone events mapped, and the plan can be taken away again.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;
use tandem_dataplane::api::{
    Codec, CodecOptions, Command, CoreError, Event, LegCodec, LegParams, SessionId,
};
use tandem_dataplane::io::IoKind;
use tandem_dataplane::CoreHandle;
use tandem_media::codec::{
    sine_snr_db, Decoder, G729Decoder, G729Encoder, OpusDecoder, OpusEncoder,
};
use tandem_media::g711::Law;
use tandem_media::tones::{ToneGenerator, ToneSpec};

mod common;
use common::{call, start_one_core as start};

fn endpoint() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
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

fn create(core: &mut CoreHandle, a: &UdpSocket, b: &UdpSocket) -> (SessionId, [u16; 2]) {
    let cmd = Command::Create {
        token: 1,
        a: leg(a),
        b: leg(b),
    };
    match call(core, cmd) {
        Event::Created { id, ports, .. } => (id, ports),
        other => panic!("{other:?}"),
    }
}

fn lc(payload_type: u8, codec: Codec, event: Option<u8>) -> LegCodec {
    LegCodec {
        payload_type,
        codec,
        event_payload_type: event,
        ptime_ms: 20,
        options: CodecOptions::NONE,
    }
}

fn rtp(pt: u8, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&0x0abc_def0_u32.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// 20 ms frames of a 1020 Hz tone at 8 kHz.
fn tone_frames(n: usize) -> Vec<[i16; 160]> {
    let mut g = ToneGenerator::new(&ToneSpec::continuous(1020.0, 0.0, -10.0), 8000).unwrap();
    (0..n)
        .map(|_| {
            let mut f = [0i16; 160];
            g.fill(&mut f);
            f
        })
        .collect()
}

/// `frames` as PCMA packets, sequence numbers from `seq0`, timestamps from 0.
fn pcma_packets(frames: &[[i16; 160]], seq0: u16) -> Vec<Vec<u8>> {
    frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut codes = [0u8; 160];
            Law::Alaw.encode(f, &mut codes);
            rtp(8, seq0 + i as u16, 160 * i as u32, &codes)
        })
        .collect()
}

/// Sends `payloads` from `from` to `to` (one per 2 ms: the test does not need real time) and
/// collects what `rx` receives.
fn send_and_collect(
    from: &UdpSocket,
    to: SocketAddr,
    rx: &UdpSocket,
    packets: &[Vec<u8>],
) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    for p in packets {
        from.send_to(p, to).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    rx.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    while let Ok(n) = rx.recv(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    got
}

fn transcodes_both_ways(io: IoKind, port_min: u16, b_codec: Codec) {
    let (dp, mut core) = start(io, port_min);
    let (a, b) = (endpoint(), endpoint());
    let (id, ports) = create(&mut core, &a, &b);
    let a_side = SocketAddr::from(([127, 0, 0, 1], ports[0]));
    let b_side = SocketAddr::from(([127, 0, 0, 1], ports[1]));
    let b_pt = match b_codec {
        Codec::Opus => 111,
        Codec::G729 => 18,
        _ => 0,
    };
    // G.729 keeps the spectrum rather than the waveform: a lower bar for the sine fit.
    let min_snr = if b_codec == Codec::G729 { 10.0 } else { 15.0 };
    let plan = [lc(8, Codec::Pcma, Some(101)), lc(b_pt, b_codec, Some(100))];
    let set = Command::SetCodecs {
        token: 2,
        id,
        codecs: Some(plan),
    };
    assert_eq!(call(&mut core, set), Event::Updated { token: 2 });

    // A → B: PCMA in, B's codec out, with our header.
    let frames = tone_frames(50);
    let pcma = pcma_packets(&frames, 100);
    let got = send_and_collect(&a, a_side, &b, &pcma);
    assert_eq!(got.len(), pcma.len());
    let step = b_codec.rtp_clock_hz() / 50;
    let ts0 = u32::from_be_bytes([got[0][4], got[0][5], got[0][6], got[0][7]]);
    let mut pcm = Vec::new();
    let mut opus = OpusDecoder::new(8000).unwrap();
    let mut g729 = G729Decoder::new();
    for (i, p) in got.iter().enumerate() {
        assert_eq!(p[1] & 0x7f, b_pt);
        assert_eq!(p[1] & 0x80 != 0, i == 0);
        let ts = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
        assert_eq!(ts.wrapping_sub(ts0), step * i as u32);
        assert_ne!(&p[8..12], &0x0abc_def0_u32.to_be_bytes(), "our own SSRC");
        let mut frame = [0i16; 960];
        let n = match b_codec {
            Codec::Opus => opus.decode(&p[12..], &mut frame).unwrap(),
            Codec::G729 => g729.decode(&p[12..], &mut frame).unwrap(),
            _ => Law::Ulaw.decode(&p[12..], &mut frame),
        };
        assert_eq!(n, 160);
        pcm.extend_from_slice(&frame[..n]);
    }
    let snr = sine_snr_db(&pcm, 1020.0, 8000.0, 1600);
    assert!(snr > min_snr, "{b_codec:?}: SNR {snr:.1} dB");

    // B → A: B's codec in, PCMA out.
    let mut enc = OpusEncoder::new(8000, 20).unwrap();
    let mut g729_enc = G729Encoder::new(20).unwrap();
    let from_b: Vec<Vec<u8>> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut payload = [0u8; 400];
            let n = match b_codec {
                Codec::Opus => enc.encode_any(f, &mut payload).unwrap(),
                Codec::G729 => g729_enc.encode_any(f, &mut payload).unwrap().len,
                _ => Law::Ulaw.encode(f, &mut payload),
            };
            rtp(b_pt, i as u16, step * i as u32, &payload[..n])
        })
        .collect();
    // Packet 25 is lost on the way: behind an Opus or G.729 sender the core conceals it, so
    // A still gets an unbroken stream; behind PCMU it stays a gap.
    let sent: Vec<Vec<u8>> = from_b
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 25)
        .map(|(_, p)| p.clone())
        .collect();
    let got = send_and_collect(&b, b_side, &a, &sent);
    let concealed = matches!(b_codec, Codec::Opus | Codec::G729);
    assert_eq!(got.len(), from_b.len() - 1 + concealed as usize);
    let seq0 = u16::from_be_bytes([got[0][2], got[0][3]]);
    let mut pcm = Vec::new();
    for (i, p) in got.iter().enumerate() {
        let gap = (!concealed && i >= 25) as u16;
        let seq = u16::from_be_bytes([p[2], p[3]]);
        assert_eq!(
            seq,
            seq0.wrapping_add(i as u16 + gap),
            "{b_codec:?}: packet {i}"
        );
        assert_eq!((p[1] & 0x7f, p.len()), (8, 12 + 160));
        let mut frame = [0i16; 160];
        Law::Alaw.decode(&p[12..], &mut frame);
        pcm.extend_from_slice(&frame);
    }
    // The tone's fit over the packets before the loss (a gap or a concealed frame breaks the
    // phase the fit assumes).
    let snr = sine_snr_db(&pcm[..25 * 160], 1020.0, 8000.0, 1600);
    assert!(snr > min_snr, "{b_codec:?} back: SNR {snr:.1} dB");

    // A telephone event from A arrives with B's event payload type.
    let event = rtp(101, 150, 160 * 50, &[1, 10, 0, 160]);
    let got = send_and_collect(&a, a_side, &b, &[event]);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0][1] & 0x7f, 100);

    // Without a plan, packets are relayed untouched again.
    let clear = Command::SetCodecs {
        token: 3,
        id,
        codecs: None,
    };
    assert_eq!(call(&mut core, clear), Event::Updated { token: 3 });
    let got = send_and_collect(&a, a_side, &b, &pcma[..1]);
    assert_eq!(got, pcma[..1].to_vec());

    // A plan for a session that is gone fails.
    assert!(matches!(
        call(&mut core, Command::Delete { token: 4, id }),
        Event::Deleted { token: 4, .. }
    ));
    let stale = Command::SetCodecs {
        token: 5,
        id,
        codecs: Some(plan),
    };
    assert_eq!(
        call(&mut core, stale),
        Event::Failed {
            token: 5,
            error: CoreError::UnknownSession
        }
    );
    drop(dp);
}

#[test]
fn portable_transcodes_pcma_and_pcmu() {
    transcodes_both_ways(IoKind::Portable, 47200, Codec::Pcmu);
}

#[test]
fn uring_transcodes_pcma_and_opus() {
    transcodes_both_ways(IoKind::Uring, 47600, Codec::Opus);
}

#[test]
fn portable_transcodes_pcma_and_opus() {
    transcodes_both_ways(IoKind::Portable, 48000, Codec::Opus);
}

#[test]
fn portable_transcodes_pcma_and_g729() {
    transcodes_both_ways(IoKind::Portable, 48400, Codec::G729);
}

/// PCMA at 20 ms on leg A, G.729 at 30 ms on leg B: the core sends each leg its own ptime, the
/// 20 ms packets from A as 30 ms packets to B (two in, three out and so on) and back.
#[test]
fn portable_repacketises_pcma_20_ms_and_g729_30_ms() {
    let (dp, mut core) = start(IoKind::Portable, 48800);
    let (a, b) = (endpoint(), endpoint());
    let (id, ports) = create(&mut core, &a, &b);
    let a_side = SocketAddr::from(([127, 0, 0, 1], ports[0]));
    let b_side = SocketAddr::from(([127, 0, 0, 1], ports[1]));
    let g729_30 = LegCodec {
        ptime_ms: 30,
        ..lc(18, Codec::G729, None)
    };
    let plan = [lc(8, Codec::Pcma, None), g729_30];
    let set = Command::SetCodecs {
        token: 2,
        id,
        codecs: Some(plan),
    };
    assert_eq!(call(&mut core, set), Event::Updated { token: 2 });
    let pcma = pcma_packets(&tone_frames(30), 0);
    let got = send_and_collect(&a, a_side, &b, &pcma);
    assert_eq!(got.len(), 20, "600 ms in 30 ms packets");
    let mut dec = G729Decoder::new();
    let mut pcm = Vec::new();
    for (i, p) in got.iter().enumerate() {
        assert_eq!((p[1] & 0x7f, p.len()), (18, 12 + 30));
        let ts = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
        let ts0 = u32::from_be_bytes([got[0][4], got[0][5], got[0][6], got[0][7]]);
        assert_eq!(ts.wrapping_sub(ts0), 240 * i as u32);
        let mut frame = [0i16; 240];
        assert_eq!(dec.decode(&p[12..], &mut frame), Ok(240));
        pcm.extend_from_slice(&frame);
    }
    let snr = sine_snr_db(&pcm, 1020.0, 8000.0, 800);
    assert!(snr > 10.0, "PCMA 20 → G.729 30: SNR {snr:.1} dB");
    // Back: B's 30 ms G.729 packets reach A as 20 ms PCMA.
    let from_b: Vec<Vec<u8>> = got
        .iter()
        .enumerate()
        .map(|(i, p)| rtp(18, i as u16, 240 * i as u32, &p[12..]))
        .collect();
    let back = send_and_collect(&b, b_side, &a, &from_b);
    assert_eq!(back.len(), 30);
    assert!(back.iter().all(|p| p[1] & 0x7f == 8 && p.len() == 12 + 160));
    drop(dp);
}

/// PCMA on leg A, G.729 on leg B whose peer takes Annex B (`CodecOptions::dtx`): silence
/// reaches B as SID frames or nothing, a tone as speech frames, our sequence numbers counting
/// only what is sent and the first packet after the silence marked.
#[test]
fn portable_sends_g729_with_vad_to_a_peer_taking_annex_b() {
    let (dp, mut core) = start(IoKind::Portable, 48200);
    let (a, b) = (endpoint(), endpoint());
    let (id, ports) = create(&mut core, &a, &b);
    let a_side = SocketAddr::from(([127, 0, 0, 1], ports[0]));
    let annex_b = LegCodec {
        options: CodecOptions {
            fec: false,
            dtx: true,
        },
        ..lc(18, Codec::G729, None)
    };
    let set = Command::SetCodecs {
        token: 2,
        id,
        codecs: Some([lc(8, Codec::Pcma, None), annex_b]),
    };
    assert_eq!(call(&mut core, set), Event::Updated { token: 2 });
    // 1 s of silence, then 400 ms of tone.
    let mut frames = vec![[0i16; 160]; 50];
    frames.extend(tone_frames(20));
    let got = send_and_collect(&a, a_side, &b, &pcma_packets(&frames, 0));
    let at = |p: &[u8]| u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
    let ts0 = at(&got[0]);
    let (silent, talk): (Vec<_>, Vec<_>) = got.iter().partition(|p| at(p).wrapping_sub(ts0) < 8000);
    // Silence: SID frames (2 bytes) or nothing at all, far fewer packets than went in.
    assert!(
        silent.iter().all(|p| p.len() == 12 + 2),
        "{:?}",
        silent.iter().map(|p| p.len()).collect::<Vec<_>>()
    );
    assert!(
        silent.len() < 10,
        "{} packets for 1 s of silence",
        silent.len()
    );
    // The tone: two 10-byte speech frames per 20 ms (the first packet may start late).
    assert!(
        talk.len() >= 19,
        "{} packets for 400 ms of tone",
        talk.len()
    );
    assert!(talk[1..].iter().all(|p| p.len() == 12 + 20));
    // Sequence numbers count the packets sent; the first after the silence is marked.
    for w in got.windows(2) {
        let seq = |p: &[u8]| u16::from_be_bytes([p[2], p[3]]);
        assert_eq!(seq(&w[1]).wrapping_sub(seq(&w[0])), 1);
    }
    assert!(talk[0][1] & 0x80 != 0, "talkspurt marked");
    drop(dp);
}
