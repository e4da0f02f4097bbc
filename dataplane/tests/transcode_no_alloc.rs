//! The transcoding path allocates nothing per packet: the session decision and the
//! transcoder of each direction (resampler and loss concealment included), for every pair
//! the cores transcode, from the first packet on. Nor does DTMF: in-band detection, telephone
//! events, merging and blocking on a relayed leg (G.711, G.722 and Opus audio), and events
//! translated to tones. Nor do our RTCP reports on a transcoded session: the peers' RTCP
//! consumed, our sent stream noted, reports built on a timer.
//!
//! A counting global allocator (per thread, so parallel tests do not see each other's) counts
//! Rust's allocations. libopus's own state lives on the C heap from `opus_*_create`, called
//! when the plan is set; its encode and decode keep their scratch on the stack.

use std::net::SocketAddr;
use tandem_dataplane::api::{
    Codec, CodecOptions, DtmfKeys, DtmfOptions, DtmfSend, DtmfVia, InbandAudio, LegCodec, LegIndex,
    LegParams, TelephoneEvents,
};
use tandem_dataplane::dtmf::Senders;
use tandem_dataplane::session::{Sessions, Verdict};
use tandem_dataplane::transcode::{Skip, Transcoder, Transcoders};
use tandem_media::g711::Law;
use tandem_media::tones::{ToneGenerator, ToneSpec};

mod common;
use common::counting_alloc::allocations;

fn leg_codec(codec: Codec) -> LegCodec {
    let (payload_type, event) = match codec {
        Codec::Pcmu => (0, 101),
        Codec::Pcma => (8, 101),
        Codec::Opus => (111, 110),
        Codec::G722 => (9, 101),
        Codec::G729 => (18, 101),
    };
    LegCodec {
        payload_type,
        codec,
        event_payload_type: Some(event),
        ptime_ms: 20,
        options: CodecOptions::NONE,
    }
}

/// 20 ms RTP packets of a tone (speech-like level) in `codec`'s payload, encoded up front.
fn packets(codec: Codec, n: usize) -> Vec<Vec<u8>> {
    let spec = ToneSpec::continuous(440.0, 1230.0, -16.0);
    let mut g = ToneGenerator::new(&spec, 8000).unwrap();
    let mut g16 = ToneGenerator::new(&spec, 16000).unwrap();
    let mut g722 = tandem_media::codec::G722Encoder::new(20).unwrap();
    let mut g729 = tandem_media::codec::G729Encoder::new(20).unwrap();
    let mut enc = match codec {
        Codec::Opus => Some(tandem_media::codec::OpusEncoder::new(8000, 20).unwrap()),
        _ => None,
    };
    let lc = leg_codec(codec);
    (0..n)
        .map(|i| {
            let mut pcm = [0i16; 160];
            g.fill(&mut pcm);
            let mut payload = [0u8; 400];
            let len = match (codec, enc.as_mut()) {
                (Codec::Pcmu, _) => Law::Ulaw.encode(&pcm, &mut payload),
                (Codec::Pcma, _) => Law::Alaw.encode(&pcm, &mut payload),
                (Codec::G722, _) => {
                    let mut wide = [0i16; 320];
                    g16.fill(&mut wide);
                    g722.encode_any(&wide, &mut payload).unwrap()
                }
                (Codec::G729, _) => g729.encode_any(&pcm, &mut payload).unwrap().len,
                (_, Some(e)) => e.encode_any(&pcm, &mut payload).unwrap(),
                _ => unreachable!(),
            };
            let mut p = vec![0x80, lc.payload_type];
            p.extend_from_slice(&(i as u16).to_be_bytes());
            p.extend_from_slice(&(i as u32 * codec.rtp_clock_hz() / 50).to_be_bytes());
            p.extend_from_slice(&0x5eed_u32.to_be_bytes());
            p.extend_from_slice(&payload[..len]);
            p
        })
        .collect()
}

#[test]
fn decision_and_transcode_allocate_nothing_per_packet() {
    let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
    let b: SocketAddr = "10.0.0.2:6000".parse().unwrap();
    let pairs = [
        (Codec::Pcma, Codec::Pcmu),
        (Codec::Pcmu, Codec::Pcma),
        (Codec::Pcma, Codec::Opus),
        (Codec::Opus, Codec::Pcma),
        (Codec::Pcmu, Codec::Opus),
        (Codec::Opus, Codec::Pcmu),
        (Codec::Pcma, Codec::G722),
        (Codec::G722, Codec::Pcmu),
        (Codec::G722, Codec::Opus),
        (Codec::Opus, Codec::G722),
        (Codec::Pcma, Codec::G729),
        (Codec::G729, Codec::Pcmu),
        (Codec::G729, Codec::Opus),
        (Codec::Opus, Codec::G729),
        (Codec::G722, Codec::G729),
    ];
    for (from, to) in pairs {
        // Set-up: everything allocated here, as the core does on Create and SetCodecs.
        let mut sessions = Sessions::new(0, 4, 30_000);
        let leg = |rtp| LegParams {
            rtp: Some(rtp),
            ..LegParams::default()
        };
        sessions.activate(1, &leg(a), &leg(b), 0);
        sessions.set_transcode(1, LegIndex::A, true);
        let mut transcoders = Transcoders::new(4);
        let t = Transcoder::new(leg_codec(from), leg_codec(to), 42).unwrap();
        transcoders.set(2, Some(t));
        let input = packets(from, 100);
        let mut out = [0u8; 1500];
        let mut sent = 0;
        let mut concealed = 0;
        let n = allocations(|| {
            for (i, p) in input.iter().enumerate() {
                // Every 10th packet is lost: an Opus or G.729 sender's gap is concealed.
                if i % 10 == 5 {
                    continue;
                }
                // Leg A's RTP socket of session 1 is slot 4.
                match sessions.on_packet(4, a, p, 1) {
                    Verdict::Transcode { in_key, .. } => {
                        for _ in 0..transcoders.missing(in_key, p) {
                            assert!(transcoders.conceal(in_key, p, &mut out).unwrap() > 12);
                            concealed += 1;
                        }
                        let len = transcoders.process(in_key, p, &mut out).unwrap();
                        assert!(len > 12);
                        sent += 1;
                    }
                    other => panic!("{other:?}"),
                }
            }
        });
        assert_eq!(sent, input.len() - 10);
        let conceals = matches!(from, Codec::Opus | Codec::G729);
        assert_eq!(concealed, if conceals { 10 } else { 0 });
        assert_eq!(
            n, 0,
            "{from:?} -> {to:?}: {n} allocations in {sent} packets"
        );
    }
}

#[test]
fn dtmf_detection_events_and_blocking_allocate_nothing_per_packet() {
    let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
    let b: SocketAddr = "10.0.0.2:6000".parse().unwrap();
    let mut sessions = Sessions::new(0, 2, 30_000);
    let leg = |rtp| LegParams {
        rtp: Some(rtp),
        ..LegParams::default()
    };
    sessions.activate(0, &leg(a), &leg(b), 0);
    // Set-up: the detector is allocated here.
    let options = DtmfOptions {
        event_payload_type: Some(101),
        inband: Some(InbandAudio {
            payload_type: 8,
            codec: Codec::Pcma,
        }),
        block: true,
        tones_to_other: None,
        events_to_other: None,
    };
    sessions.set_dtmf(0, LegIndex::A, &options).unwrap();
    // 2 s of audio: a key every 200 ms (100 ms of tone), each also sent as telephone events.
    let mut input = Vec::new();
    for i in 0..100u32 {
        let key = ['1', '5', '9', '#', '0'][(i / 10) as usize % 5];
        let mut pcm = [0i16; 160];
        if i % 10 < 5 {
            let spec = ToneSpec::dtmf(key, 1000, 0, -8.0, -6.0).unwrap();
            let mut g = ToneGenerator::new(&spec, 8000).unwrap();
            g.fill(&mut pcm);
        }
        let mut p = vec![0x80, 8];
        p.extend_from_slice(&(i as u16).to_be_bytes());
        p.extend_from_slice(&(i * 160).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1]);
        let mut codes = [0u8; 160];
        Law::Alaw.encode(&pcm, &mut codes);
        p.extend_from_slice(&codes);
        input.push(p);
        if i % 10 < 6 {
            let event = tandem_media::rfc4733::dtmf_event(key).unwrap();
            let end = if i % 10 == 5 { 0x80 } else { 0 };
            let mut e = vec![0x80, 101, 0, 0];
            e.extend_from_slice(&((i / 10) * 1600).to_be_bytes());
            e.extend_from_slice(&[0, 0, 0, 1, event, end | 10, 0, 160]);
            input.push(e);
        }
    }
    let mut reports = 0;
    let mut silenced = 0;
    let n = allocations(|| {
        for (i, p) in input.iter().enumerate() {
            let _ = sessions.on_packet(0, a, p, i as u64 * 10_000_000);
            silenced += sessions.blocked_tone().is_some() as u32;
            sessions.drain_dtmf(|_| reports += 1);
        }
    });
    assert_eq!(reports, 10, "one report per press");
    assert!(silenced > 20, "{silenced} packets silenced");
    assert_eq!(n, 0, "{n} allocations");

    // Sending keys into a stream, as events and as tones: the sender is allocated by the
    // command, each packet it rewrites allocates nothing.
    for via in [
        DtmfVia::Events {
            payload_type: 101,
            clock_hz: 8000,
        },
        DtmfVia::Tones {
            payload_type: 8,
            codec: Codec::Pcma,
        },
    ] {
        let mut senders = Senders::new(1);
        let send = DtmfSend {
            keys: DtmfKeys::new("159#").unwrap(),
            duration_ms: 100,
            pause_ms: 100,
            volume: 8,
            via,
        };
        senders.send(0, &send).unwrap();
        let mut buf = [0u8; 2048];
        let mut busy = true;
        let n = allocations(|| {
            for p in input.iter().filter(|p| p[1] == 8) {
                buf[..p.len()].copy_from_slice(p);
                busy = senders.rewrite(0, &mut buf, p.len()).1;
            }
        });
        assert!(!busy, "all keys sent");
        assert_eq!(n, 0, "{via:?}: {n} allocations");
    }
}

#[test]
fn events_translated_to_tones_allocate_nothing_per_packet() {
    let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
    let b: SocketAddr = "10.0.0.2:6000".parse().unwrap();
    let mut sessions = Sessions::new(0, 1, 30_000);
    let leg = |rtp| LegParams {
        rtp: Some(rtp),
        ..LegParams::default()
    };
    sessions.activate(0, &leg(a), &leg(b), 0);
    // Set-up: A's events become tones in B's PCMU; B's sender of tones is allocated here.
    let to_b = InbandAudio {
        payload_type: 0,
        codec: Codec::Pcmu,
    };
    let options = DtmfOptions {
        event_payload_type: Some(101),
        tones_to_other: Some(to_b),
        ..DtmfOptions::default()
    };
    sessions.set_dtmf(0, LegIndex::A, &options).unwrap();
    let mut senders = Senders::new(1);
    senders.prepare_tones(1, to_b).unwrap();
    // 2 s of PCMU from A with five presses as events, each 60 ms long.
    let mut input = Vec::new();
    for i in 0..100u32 {
        let mut p = vec![0x80, 0];
        p.extend_from_slice(&(i as u16).to_be_bytes());
        p.extend_from_slice(&(i * 160).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1]);
        p.extend_from_slice(&[0xff; 160]);
        input.push(p);
        if i % 20 < 3 {
            let key = ['1', '5', '9', '#', '0'][(i / 20) as usize];
            let event = tandem_media::rfc4733::dtmf_event(key).unwrap();
            let end = if i % 20 == 2 { 0x80 } else { 0 };
            let mut e = vec![0x80, 101, 0, 0];
            e.extend_from_slice(&((i / 20) * 3200).to_be_bytes());
            e.extend_from_slice(&[0, 0, 0, 1, event, end | 10, 0, 160]);
            input.push(e);
        }
    }
    let mut buf = [0u8; 2048];
    let (mut sounded, mut held, mut toned) = (0, 0, 0);
    let n = allocations(|| {
        for (i, p) in input.iter().enumerate() {
            let verdict = sessions.on_packet(0, a, p, i as u64 * 10_000_000);
            sessions.drain_dtmf(|_| {});
            while let Some(t) = sessions.pop_translated_dtmf() {
                assert_eq!((t.key, t.as_events), (1, false), "tones towards B");
                sounded += senders.sound(t) as u32;
            }
            if !matches!(verdict, Verdict::Forward { .. }) {
                held += 1;
                continue;
            }
            buf[..p.len()].copy_from_slice(p);
            senders.rewrite(1, &mut buf, p.len());
            toned += (buf[12..p.len()] != p[12..]) as u32;
        }
    });
    assert_eq!((sounded, held), (5, 15), "five keys, every event held back");
    assert!(toned >= 20, "{toned} packets carried tones");
    assert_eq!(n, 0, "{n} allocations");
}

#[test]
fn tones_translated_to_events_allocate_nothing_per_packet() {
    let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
    let b: SocketAddr = "10.0.0.2:6000".parse().unwrap();
    let mut sessions = Sessions::new(0, 1, 30_000);
    let leg = |rtp| LegParams {
        rtp: Some(rtp),
        ..LegParams::default()
    };
    sessions.activate(0, &leg(a), &leg(b), 0);
    // Set-up: A's tones become events towards B; B's sender of events is allocated here.
    let to_b = TelephoneEvents {
        payload_type: 101,
        clock_hz: 8000,
    };
    let options = DtmfOptions {
        inband: Some(InbandAudio {
            payload_type: 0,
            codec: Codec::Pcmu,
        }),
        events_to_other: Some(to_b),
        ..DtmfOptions::default()
    };
    sessions.set_dtmf(0, LegIndex::A, &options).unwrap();
    let mut senders = Senders::new(1);
    senders.prepare_events(1, to_b).unwrap();
    // 2 s of PCMU from A, no events: a 100 ms key every 400 ms.
    let mut input = Vec::new();
    let mut tone = None;
    for i in 0..100u32 {
        let mut pcm = [0i16; 160];
        if i % 20 == 0 {
            let key = ['1', '5', '9', '#', '0'][(i / 20) as usize];
            let spec = ToneSpec::dtmf(key, 100, 0, -8.0, -6.0).unwrap();
            tone = Some(ToneGenerator::new(&spec, 8000).unwrap());
        }
        if i % 20 < 5 {
            tone.as_mut().unwrap().fill(&mut pcm);
        }
        let mut p = vec![0x80, 0];
        p.extend_from_slice(&(i as u16).to_be_bytes());
        p.extend_from_slice(&(i * 160).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1]);
        let mut codes = [0u8; 160];
        Law::Ulaw.encode(&pcm, &mut codes);
        p.extend_from_slice(&codes);
        input.push(p);
    }
    let mut buf = [0u8; 2048];
    let (mut sounded, mut silenced, mut events, mut reports) = (0, 0, 0, 0);
    let n = allocations(|| {
        for (i, p) in input.iter().enumerate() {
            let verdict = sessions.on_packet(0, a, p, i as u64 * 20_000_000);
            silenced += sessions.blocked_tone().is_some() as u32;
            sessions.drain_dtmf(|_| reports += 1);
            while let Some(t) = sessions.pop_translated_dtmf() {
                assert_eq!((t.key, t.as_events), (1, true), "events towards B");
                sounded += senders.sound(t) as u32;
            }
            assert!(matches!(verdict, Verdict::Forward { .. }));
            buf[..p.len()].copy_from_slice(p);
            let len = senders.rewrite(1, &mut buf, p.len()).0;
            events += (buf[1] & 0x7f == 101 && len == 16) as u32;
        }
    });
    assert_eq!(
        (sounded, reports),
        (5, 5),
        "five keys heard, each sent on once"
    );
    assert!(silenced >= 10, "{silenced} packets silenced");
    // 100 ms at 20 ms a packet, then the end twice more.
    assert_eq!(events, 5 * 7, "{events} event packets");
    assert_eq!(n, 0, "{n} allocations");
}

#[test]
fn in_band_detection_and_blocking_on_g722_and_opus_allocate_nothing_per_packet() {
    use tandem_media::codec::{Encoder, G722Encoder, OpusEncoder};
    let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
    let b: SocketAddr = "10.0.0.2:6000".parse().unwrap();
    for (codec, pt, rate) in [(Codec::G722, 9, 16_000), (Codec::Opus, 111, 8000)] {
        let mut encoder: Box<dyn Encoder> = match codec {
            Codec::G722 => Box::new(G722Encoder::new(20).unwrap()),
            _ => Box::new(OpusEncoder::new(8000, 20).unwrap()),
        };
        let mut sessions = Sessions::new(0, 1, 30_000);
        let leg = |rtp| LegParams {
            rtp: Some(rtp),
            ..LegParams::default()
        };
        sessions.activate(0, &leg(a), &leg(b), 0);
        // Set-up: the leg's decoder is allocated here.
        let options = DtmfOptions {
            inband: Some(InbandAudio {
                payload_type: pt,
                codec,
            }),
            block: true,
            ..DtmfOptions::default()
        };
        sessions.set_dtmf(0, LegIndex::A, &options).unwrap();
        // 2 s: a key every 200 ms (100 ms of tone).
        let frame = (rate / 50) as usize;
        let mut input = Vec::new();
        let mut tone = None;
        for i in 0..100u32 {
            let key = ['1', '5', '9', '#', '0'][(i / 10) as usize % 5];
            let mut pcm = vec![0i16; frame];
            if i % 10 == 0 {
                let spec = ToneSpec::dtmf(key, 1000, 0, -8.0, -8.0).unwrap();
                tone = Some(ToneGenerator::new(&spec, rate).unwrap());
            }
            if let (true, Some(g)) = (i % 10 < 5, tone.as_mut()) {
                g.fill(&mut pcm);
            }
            let mut payload = vec![0u8; encoder.max_payload_bytes()];
            let n = encoder.encode(&pcm, &mut payload).unwrap();
            let mut p = vec![0x80, pt];
            p.extend_from_slice(&(i as u16).to_be_bytes());
            p.extend_from_slice(&(i * frame as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 1]);
            p.extend_from_slice(&payload[..n]);
            input.push(p);
        }
        let (mut reports, mut held) = (0, 0);
        let n = allocations(|| {
            for (i, p) in input.iter().enumerate() {
                let verdict = sessions.on_packet(0, a, p, i as u64 * 20_000_000);
                held += !matches!(verdict, Verdict::Forward { .. }) as u32;
                sessions.drain_dtmf(|_| reports += 1);
            }
        });
        assert_eq!(reports, 10, "{codec:?}: one report per press");
        // Held back while a tone is heard (from its confirmation to its release): at most the
        // five packets after the first of each key, the last being the silent one that
        // releases it.
        assert!(
            (20..=60).contains(&held),
            "{codec:?}: {held} packets held back"
        );
        assert_eq!(n, 0, "{codec:?}: {n} allocations");
    }
}

#[test]
fn repacketising_allocates_nothing_per_packet() {
    // (from, to, the receiver's ptime): 20 ms packets in.
    let plans = [
        (Codec::Pcma, Codec::G729, 30),
        (Codec::G729, Codec::Pcmu, 60),
        (Codec::Opus, Codec::Pcma, 10),
        (Codec::Pcma, Codec::Opus, 40),
        (Codec::G722, Codec::Pcmu, 30),
        (Codec::Pcmu, Codec::G722, 60),
    ];
    for (from, to, ptime_ms) in plans {
        let mut transcoders = Transcoders::new(1);
        let receiver = LegCodec {
            ptime_ms,
            ..leg_codec(to)
        };
        let t = Transcoder::new(leg_codec(from), receiver, 42).unwrap();
        transcoders.set(0, Some(t));
        let input = packets(from, 100);
        let mut out = [0u8; 1500];
        let mut sent = 0u32;
        let n = allocations(|| {
            for (i, p) in input.iter().enumerate() {
                if i % 10 == 5 {
                    continue;
                }
                for _ in 0..transcoders.missing(0, p) {
                    match transcoders.conceal(0, p, &mut out) {
                        Ok(_) => sent += 1,
                        Err(e) => assert_eq!(e, Skip::Held),
                    }
                }
                match transcoders.process(0, p, &mut out) {
                    Ok(_) => sent += 1,
                    Err(e) => assert_eq!(e, Skip::Held),
                }
                while transcoders.queued(0) > 0 {
                    assert!(transcoders.pop(0, &mut out).unwrap() > 12);
                    sent += 1;
                }
            }
        });
        // About 2 s of audio in the receiver's packets (losses behind G.711/G.722 stay gaps).
        let expected = 2000 / ptime_ms as u32;
        assert!(
            sent + 12 >= expected && sent <= expected,
            "{from:?} -> {to:?}: {sent}"
        );
        assert_eq!(n, 0, "{from:?} -> {to:?} at {ptime_ms} ms: {n} allocations");
    }
}

/// 20 ms PCMA packets: `speech` of a tone, then `silence` of digital silence, counting on.
fn talk_then_silence(speech: usize, silence: usize) -> Vec<Vec<u8>> {
    let spec = ToneSpec::continuous(440.0, 1230.0, -16.0);
    let mut g = ToneGenerator::new(&spec, 8000).unwrap();
    (0..speech + silence)
        .map(|i| {
            let mut pcm = [0i16; 160];
            if i < speech {
                g.fill(&mut pcm);
            }
            let mut p = vec![0x80, 8];
            p.extend_from_slice(&(i as u16).to_be_bytes());
            p.extend_from_slice(&(i as u32 * 160).to_be_bytes());
            p.extend_from_slice(&0x5eed_u32.to_be_bytes());
            let mut payload = [0u8; 160];
            Law::Alaw.encode(&pcm, &mut payload);
            p.extend_from_slice(&payload);
            p
        })
        .collect()
}

#[test]
fn fec_recovery_vad_and_dtx_allocate_nothing_per_packet() {
    let with = |codec, fec, dtx, ptime_ms| LegCodec {
        ptime_ms,
        options: CodecOptions { fec, dtx },
        ..leg_codec(codec)
    };
    // Towards peers that asked for DTX (G.729 Annex B, Opus usedtx) and FEC (Opus), one
    // packet out per packet in and repacketised: silence is left untransmitted.
    let plans = [
        (with(Codec::G729, false, true, 20), 20),
        (with(Codec::G729, false, true, 30), 20),
        (with(Codec::Opus, true, true, 20), 20),
        (with(Codec::Opus, true, true, 40), 20),
    ];
    for (to, from_ms) in plans {
        let mut transcoders = Transcoders::new(1);
        let t = Transcoder::new(with(Codec::Pcma, false, false, from_ms), to, 42).unwrap();
        transcoders.set(0, Some(t));
        let input = talk_then_silence(50, 150);
        let mut out = [0u8; 1500];
        let (mut sent, mut untransmitted) = (0u32, 0u32);
        let mut opus = Vec::new();
        let n = allocations(|| {
            for p in &input {
                match transcoders.process(0, p, &mut out) {
                    Ok(_) => sent += 1,
                    Err(Skip::Untransmitted) => untransmitted += 1,
                    Err(e) => assert_eq!(e, Skip::Held),
                }
                while transcoders.queued(0) > 0 {
                    assert!(transcoders.pop(0, &mut out).unwrap() > 12);
                    sent += 1;
                }
            }
        });
        assert_eq!(n, 0, "PCMA -> {to:?}: {n} allocations");
        // 4 s in, 1 s of it a tone: the silence went (almost) unsent. Repacketised, what is
        // left untransmitted never leaves the repacketiser (`Skip::Held`).
        let frames = 4000 / to.ptime_ms as u32;
        assert!(
            sent > frames / 5 && sent < frames / 2,
            "PCMA -> {to:?}: {sent} sent"
        );
        if from_ms == to.ptime_ms {
            assert!(
                untransmitted > 100,
                "PCMA -> {to:?}: {untransmitted} untransmitted"
            );
        }
        if to.codec == Codec::Opus && to.ptime_ms == 20 {
            // Keep the Opus-with-FEC stream for the receiving side below.
            let t = Transcoder::new(
                with(Codec::Pcma, false, false, 20),
                with(Codec::Opus, true, false, 20),
                7,
            );
            let mut t = t.unwrap();
            let mut pcm = vec![0i16; 2 * tandem_dataplane::transcode::MAX_PCM_SAMPLES];
            for p in &input[..50] {
                let n = t.process(p, &mut pcm, &mut out).unwrap();
                opus.push(out[..n].to_vec());
            }
            // Behind the Opus sender, single losses are recovered from the next packet's FEC.
            let mut back = Transcoders::new(1);
            let t = Transcoder::new(leg_codec(Codec::Opus), leg_codec(Codec::Pcma), 9).unwrap();
            back.set(0, Some(t));
            let mut recovered = 0;
            let n = allocations(|| {
                for (i, p) in opus.iter().enumerate() {
                    if i % 10 == 5 {
                        continue;
                    }
                    for _ in 0..back.missing(0, p) {
                        assert!(back.conceal(0, p, &mut out).unwrap() > 12);
                        recovered += 1;
                    }
                    assert!(back.process(0, p, &mut out).unwrap() > 12);
                }
            });
            assert_eq!(n, 0, "Opus FEC -> PCMA: {n} allocations");
            assert_eq!(recovered, 5);
        }
    }
}

/// Our RTCP on a transcoded session: the peers' RTCP consumed into quality, what we send
/// noted, and each leg's report (SR with a block, CNAME) built into the send batch on a
/// timer, as the core does, allocate nothing.
#[test]
fn rtcp_reports_allocate_nothing() {
    use tandem_dataplane::io::TxBatch;
    use tandem_dataplane::rtcp::{ntp_compact, write_report, Report, WallClock};
    use tandem_dataplane::timer::TimerWheel;

    let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
    let a_rtcp: SocketAddr = "10.0.0.1:5001".parse().unwrap();
    let b: SocketAddr = "10.0.0.2:6000".parse().unwrap();
    let mut sessions = Sessions::new(0, 2, 30_000);
    let leg = |rtp: SocketAddr| LegParams {
        rtp: Some(rtp),
        rtcp: Some(SocketAddr::new(rtp.ip(), rtp.port() + 1)),
        ..LegParams::default()
    };
    sessions.activate(0, &leg(a), &leg(b), 0);
    sessions.set_transcode(0, LegIndex::A, true);
    sessions.set_transcode(0, LegIndex::B, true);
    let mut transcoders = Transcoders::new(2);
    let t = Transcoder::new(leg_codec(Codec::Pcma), leg_codec(Codec::Pcmu), 7).unwrap();
    transcoders.set(0, Some(t));
    let back = Transcoder::new(leg_codec(Codec::Pcmu), leg_codec(Codec::Pcma), 8).unwrap();
    transcoders.set(1, Some(back));
    let mut timers = TimerWheel::new(4, 64, 100_000_000, 0);
    timers.schedule(0, 0);
    timers.schedule(1, 0);
    let wall = WallClock::now(0);
    let cname = b"tandem-0-test".to_vec();
    let mut tx = TxBatch::new(8);
    let input = packets(Codec::Pcma, 200);
    let mut sr = vec![0x80, 200, 0, 6, 0, 0, 0x5e, 0xed];
    sr.extend_from_slice(&[0x11; 20]);
    let mut reports = 0;
    let n = allocations(|| {
        for (i, p) in input.iter().enumerate() {
            let now = i as u64 * 20_000_000;
            let Verdict::Transcode { in_key, .. } = sessions.on_packet(0, a, p, now) else {
                panic!("not transcoded");
            };
            tx.clear();
            let pushed = tx.push_with(2, None, |buf| transcoders.process(in_key, p, buf));
            assert_eq!(pushed, Ok(true));
            transcoders.on_sent(in_key, tx.last().unwrap(), now);
            if i % 50 == 0 {
                let consumed = sessions.on_packet(1, a_rtcp, &sr, now);
                assert!(matches!(consumed, Verdict::Consumed { .. }));
            }
            // Leg A's report (key 0): an RR with a block about A's stream (nothing goes to A);
            // leg B's (key 1): an SR about our stream to B, out of A's transcoder (key 0).
            let mut due = [0u32; 4];
            let fired = timers.take_due(now, &mut due);
            for &key in &due[..fired] {
                let leg = if key == 0 { LegIndex::A } else { LegIndex::B };
                let t = transcoders.get(key ^ 1).unwrap();
                let ntp = wall.ntp(now);
                let sender = t.sent().sender_info(ntp, now, t.out_clock_hz());
                let report = Report {
                    ssrc: t.ssrc(),
                    sender,
                    block: sessions.report_block(0, leg, now),
                    cname: &cname,
                };
                let (slot, dest) = sessions.rtcp_target(0, leg).unwrap();
                let written =
                    tx.push_generated_with(slot, dest, |buf| write_report(&report, buf).ok_or(()));
                assert_eq!(written, Ok(true));
                if sender.is_some() {
                    sessions.on_our_sender_report(0, leg, report.ssrc, ntp_compact(ntp), now);
                }
                timers.schedule(key, now + 500_000_000);
                reports += 1;
            }
        }
    });
    assert_eq!(reports, 16);
    assert_eq!(n, 0, "{n} allocations");
}
