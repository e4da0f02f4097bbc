//! DTMF through a real core over loopback sockets: RFC 4733 from SIPp's capture, in-band
//! tones (noise, twist, short bursts), a press sent both ways reported once, no keys in a
//! spoken prompt, and blocking towards the other leg.

mod common;
use common::{call, next_event};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use tandem_dataplane::api::{
    Codec, CodecOptions, Command, DtmfKeys, DtmfOptions, DtmfSend, DtmfSource, DtmfVia, Event,
    InbandAudio, LegCodec, LegIndex, LegParams, SessionId, TelephoneEvents,
};
use tandem_dataplane::io::IoKind;
use tandem_dataplane::stats::DropReason;
use tandem_dataplane::{Config, CoreHandle, DataPlane};
use tandem_media::codec::{Decoder, Encoder, G722Encoder, G729Encoder, OpusDecoder, OpusEncoder};
use tandem_media::g711::Law;
use tandem_media::resample::Resampler;
use tandem_media::tones::{dbm0_to_peak, ToneGenerator, ToneSpec};

fn start(port_min: u16) -> (DataPlane, CoreHandle) {
    let mut dp = DataPlane::start(&Config {
        cores: Some(1),
        port_min,
        port_max: port_min + 19,
        io: IoKind::Portable,
        sessions_per_core: Some(4),
        ..Config::default()
    })
    .expect("start data plane");
    let core = dp.take_cores().pop().unwrap();
    (dp, core)
}

fn endpoint() -> UdpSocket {
    common::endpoint_with(Duration::from_millis(300))
}

fn leg(sock: &UdpSocket) -> LegParams {
    LegParams {
        rtp: Some(sock.local_addr().unwrap()),
        ..LegParams::default()
    }
}

/// A session between two local phones, leg A's DTMF handled as `options`; A's phone, B's
/// phone, and where A sends to.
struct Call {
    dp: DataPlane,
    core: CoreHandle,
    id: SessionId,
    a: UdpSocket,
    b: UdpSocket,
    to_core: SocketAddr,
    seq: u16,
}

impl Call {
    fn new(port_min: u16, options: DtmfOptions) -> Call {
        let (dp, mut core) = start(port_min);
        let (a, b) = (endpoint(), endpoint());
        let (id, ports) = match call(
            &mut core,
            Command::Create {
                token: 1,
                a: leg(&a),
                b: leg(&b),
            },
        ) {
            Event::Created { id, ports, .. } => (id, ports),
            other => panic!("{other:?}"),
        };
        let set = Command::SetDtmf {
            token: 2,
            id,
            leg: LegIndex::A,
            options,
        };
        assert_eq!(call(&mut core, set), Event::Updated { token: 2 });
        let to_core = SocketAddr::from(([127, 0, 0, 1], ports[0]));
        Call {
            dp,
            core,
            id,
            a,
            b,
            to_core,
            seq: 0,
        }
    }

    fn send(&mut self, pt: u8, ts: u32, payload: &[u8]) {
        let mut p = vec![0x80, pt];
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        p.extend_from_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        self.a.send_to(&p, self.to_core).unwrap();
    }

    /// Sends 20 ms frames of `law` audio, one every 20 ms (the detector's time is the
    /// arrival time), with `extra(frame)` packets (telephone events) after each.
    fn stream(&mut self, law: Law, pcm: &[i16], mut extra: impl FnMut(usize) -> Vec<Vec<u8>>) {
        let begin = Instant::now();
        let pt = if law == Law::Ulaw { 0 } else { 8 };
        for (i, frame) in pcm.chunks(160).enumerate() {
            let due = begin + Duration::from_millis(20 * i as u64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let mut codes = vec![0u8; frame.len()];
            law.encode(frame, &mut codes);
            self.send(pt, 160 * i as u32, &codes);
            for p in extra(i) {
                self.a.send_to(&p, self.to_core).unwrap();
            }
        }
    }

    /// Sends encoded frames of payload type `pt`, one every 20 ms.
    fn stream_frames(&mut self, pt: u8, ts_step: u32, frames: &[Vec<u8>]) {
        let begin = Instant::now();
        for (i, frame) in frames.iter().enumerate() {
            let due = begin + Duration::from_millis(20 * i as u64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            self.send(pt, ts_step * i as u32, frame);
        }
    }

    /// The DTMF reports that arrive within `wait` of the last.
    fn keys(&mut self, wait: Duration) -> Vec<(char, DtmfSource, u32)> {
        let mut got = Vec::new();
        while let Some(ev) = next_event(&mut self.core, wait) {
            match ev {
                Event::Dtmf {
                    id,
                    leg,
                    digit,
                    duration_ms,
                    source,
                    ..
                } => {
                    assert_eq!((id, leg), (self.id, LegIndex::A));
                    got.push((digit, source, duration_ms));
                }
                other => panic!("{other:?}"),
            }
        }
        got
    }

    fn finish(self) {
        drop(self.core);
        self.dp.shutdown();
    }
}

fn listen(codec: Codec, event_payload_type: Option<u8>, block: bool) -> DtmfOptions {
    let payload_type = if codec == Codec::Pcmu { 0 } else { 8 };
    DtmfOptions {
        event_payload_type,
        inband: Some(InbandAudio {
            payload_type,
            codec,
        }),
        block,
        tones_to_other: None,
        events_to_other: None,
    }
}

/// The RTP datagrams of a classic pcap (Ethernet, IPv4, UDP) with their capture times.
fn pcap_rtp(path: &str) -> Vec<(Duration, Vec<u8>)> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(
        &data[..4],
        &[0xd4, 0xc3, 0xb2, 0xa1],
        "little-endian µs pcap"
    );
    let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
    let mut out = Vec::new();
    let mut first = None;
    let mut at = 24;
    while at + 16 <= data.len() {
        let t = Duration::new(u32_at(at) as u64, u32_at(at + 4) * 1000);
        let len = u32_at(at + 8) as usize;
        let frame = &data[at + 16..at + 16 + len];
        at += 16 + len;
        let ihl = 4 * (frame[14] & 0x0f) as usize;
        let udp = 14 + ihl;
        let t0 = *first.get_or_insert(t);
        out.push((t - t0, frame[udp + 8..].to_vec()));
    }
    out
}

/// `ms` of a DTMF key at the given levels, then `gap_ms` of silence.
fn key(k: char, ms: u32, gap_ms: u32, low_dbm0: f32, high_dbm0: f32) -> Vec<i16> {
    let spec = ToneSpec::dtmf(k, ms, gap_ms, low_dbm0, high_dbm0).unwrap();
    let mut g = ToneGenerator::new(&spec, 8000).unwrap();
    let mut pcm = vec![0i16; ((ms + gap_ms) * 8) as usize];
    g.fill(&mut pcm);
    pcm
}

/// Deterministic white noise at `rms`.
fn add_noise(pcm: &mut [i16], rms: f32, seed: u64) {
    let mut s = seed;
    for v in pcm {
        // Sum of four uniforms: near enough Gaussian for a noise floor.
        let mut sum = 0f32;
        for _ in 0..4 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            sum += (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        }
        let n = sum * rms * 1.732;
        *v = (*v as f32 + n).clamp(-32768.0, 32767.0) as i16;
    }
}

#[test]
fn sipp_event_capture_is_reported_once_alone_and_with_its_tone() {
    let mut c = Call::new(46200, listen(Codec::Pcma, Some(101), false));
    // SIPp's '1': 140 ms of events, ending with three end packets, 280 ms long.
    let capture = pcap_rtp("/usr/share/sip-tester/dtmf_2833_1.pcap");
    assert_eq!(capture.len(), 10);
    let begin = Instant::now();
    for (t, p) in &capture {
        if let Some(wait) = (begin + *t).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        c.a.send_to(p, c.to_core).unwrap();
    }
    assert_eq!(
        c.keys(Duration::from_millis(300)),
        [('1', DtmfSource::Rfc4733, 280)]
    );
    // The same events, now with the phone's tone for the press in the audio beside them
    // (as phones that send both do), from the first frame of the tone.
    let mut pcm = vec![0i16; 160 * 3];
    pcm.extend(key('1', 280, 200, -8.0, -6.0));
    // A later press: the events' timestamp moves on (an equal one would be a retransmission).
    let mut events = capture.iter().map(|(_, p)| {
        let mut p = p.clone();
        let ts = u32::from_be_bytes(p[4..8].try_into().unwrap()) + 8000;
        p[4..8].copy_from_slice(&ts.to_be_bytes());
        p
    });
    c.stream(Law::Alaw, &pcm, |frame| match frame {
        3..=9 => events.next().into_iter().collect(),
        10 => events.by_ref().collect(),
        _ => Vec::new(),
    });
    assert_eq!(
        c.keys(Duration::from_millis(300)),
        [('1', DtmfSource::Rfc4733, 280)]
    );
    c.finish();
}

#[test]
fn in_band_keys_through_noise_twist_and_short_bursts() {
    let mut c = Call::new(46240, listen(Codec::Pcmu, None, false));
    let mut pcm = Vec::new();
    pcm.extend(key('1', 60, 60, -10.0, -10.0));
    // 15 dB below the tones' power: noise added over the whole stretch below.
    let noisy_from = pcm.len();
    pcm.extend(key('5', 80, 60, -10.0, -10.0));
    let noisy_to = pcm.len();
    // Normal twist of 7 dB, and reverse twist of 3 dB.
    pcm.extend(key('9', 60, 60, -6.0, -13.0));
    pcm.extend(key('*', 60, 60, -13.0, -10.0));
    // Q.24's shortest press: 40 ms. A 20 ms burst is not a press.
    pcm.extend(key('#', 40, 60, -10.0, -10.0));
    pcm.extend(key('3', 20, 60, -10.0, -10.0));
    // One key twice with a 40 ms pause: two presses.
    pcm.extend(key('0', 60, 40, -10.0, -10.0));
    pcm.extend(key('0', 60, 100, -10.0, -10.0));
    let tone_power = 2.0 * (dbm0_to_peak(-10.0).powi(2) / 2.0);
    let noise_rms = (tone_power / 10f32.powf(1.5)).sqrt();
    add_noise(&mut pcm[noisy_from..noisy_to], noise_rms, 7);
    c.stream(Law::Ulaw, &pcm, |_| Vec::new());
    let got = c.keys(Duration::from_millis(300));
    let keys: String = got.iter().map(|k| k.0).collect();
    assert_eq!(keys, "159*#00");
    for (k, source, ms) in &got {
        assert_eq!(*source, DtmfSource::Inband);
        let sent = match k {
            '5' => 80,
            '#' => 40,
            _ => 60,
        };
        assert!(ms.abs_diff(sent) <= 20, "{k}: {ms} ms heard, {sent} sent");
    }
    c.finish();
}

#[test]
fn a_spoken_prompt_has_no_keys() {
    let mut c = Call::new(46280, listen(Codec::Pcma, Some(101), false));
    // SIPp's 7 s A-law prompt (30 ms packets), sent faster than real time: the detector
    // counts samples, not arrival times.
    let prompt = pcap_rtp("/usr/share/sip-tester/g711a.pcap");
    assert!(prompt.len() > 200);
    // B reads as it goes: 236 datagrams overflow a default socket buffer.
    c.b.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let mut relayed = 0;
    for (_, p) in &prompt {
        assert_eq!(p[1] & 0x7f, 8);
        c.a.send_to(p, c.to_core).unwrap();
        // It is relayed, untouched.
        let n = c.b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], prompt[relayed].1.as_slice());
        relayed += 1;
    }
    assert_eq!(c.keys(Duration::from_millis(300)), []);
    let drops = c.core.stats.snapshot().drops;
    assert_eq!(drops, [0; DropReason::ALL.len()]);
    assert_eq!(relayed, prompt.len());
    c.finish();
}

#[test]
fn blocked_dtmf_does_not_reach_the_other_leg() {
    let mut c = Call::new(46320, listen(Codec::Pcma, Some(101), true));
    // 100 ms of speech-level noise, 200 ms of '4', 100 ms of noise; then a key by events.
    let mut pcm = vec![0i16; 160 * 5];
    add_noise(&mut pcm, 2000.0, 3);
    pcm.extend(key('4', 200, 0, -8.0, -6.0));
    let mut tail = vec![0i16; 160 * 5];
    add_noise(&mut tail, 2000.0, 4);
    pcm.extend(tail);
    c.stream(Law::Alaw, &pcm, |_| Vec::new());
    for (i, d) in [160u16, 320, 480, 480, 480].into_iter().enumerate() {
        let flags = if i >= 2 { 0x8a } else { 0x0a };
        let [d0, d1] = d.to_be_bytes();
        c.send(101, 9000, &[6, flags, d0, d1]);
    }
    assert_eq!(
        c.keys(Duration::from_millis(300))
            .iter()
            .map(|k| (k.0, k.1))
            .collect::<Vec<_>>(),
        [('4', DtmfSource::Inband), ('6', DtmfSource::Rfc4733)]
    );
    // B hears every audio packet, none of the events; the tone's frames after the first
    // 40 ms (the detector needs them) are silence, the noise is not.
    let mut frames = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(n) = c.b.recv(&mut buf) {
        assert_eq!(buf[1] & 0x7f, 8, "no telephone event reaches B");
        assert_eq!(n, 12 + 160);
        frames.push(buf[12..n].iter().all(|&b| b == Law::Alaw.silence()));
    }
    assert_eq!(frames.len(), 20);
    let silenced: Vec<usize> = (0..20).filter(|&i| frames[i]).collect();
    assert!(
        silenced.first().is_some_and(|&f| f <= 7) && silenced.iter().all(|&f| (5..16).contains(&f)),
        "silenced frames {silenced:?}"
    );
    assert!(silenced.len() >= 8, "silenced frames {silenced:?}");
    std::thread::sleep(Duration::from_millis(20));
    let drops = c.core.stats.snapshot().drops[DropReason::DtmfBlocked as usize];
    assert_eq!(drops, 5);
    c.finish();
}

#[test]
fn keys_sent_to_a_leg_ride_in_the_stream_it_receives() {
    // A listens for events on 101, as the peer that hears the keys would.
    let mut c = Call::new(46360, DtmfOptions::default());
    let send = |keys: &str| Command::SendDtmf {
        token: 3,
        id: c.id,
        leg: LegIndex::A,
        send: DtmfSend {
            keys: DtmfKeys::new(keys).unwrap(),
            duration_ms: 60,
            pause_ms: 60,
            volume: 8,
            via: DtmfVia::Events {
                payload_type: 101,
                clock_hz: 8000,
            },
        },
    };
    let (first, second) = (send("4"), send("2"));
    assert_eq!(call(&mut c.core, first), Event::Updated { token: 3 });
    // Queued behind the first.
    assert_eq!(call(&mut c.core, second), Event::Updated { token: 3 });
    // B's phone talks to A: 20 packets of PCMU.
    let to_b_port = SocketAddr::new(c.to_core.ip(), c.to_core.port() + 2);
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    for i in 0..20u16 {
        let mut p = vec![0x80, 0];
        p.extend_from_slice(&(1000 + i).to_be_bytes());
        p.extend_from_slice(&(160 * i as u32).to_be_bytes());
        p.extend_from_slice(&0xbbbb_bbbbu32.to_be_bytes());
        p.extend_from_slice(&[0xfe; 160]);
        c.b.send_to(&p, to_b_port).unwrap();
        let n = c.a.recv(&mut buf).unwrap();
        got.push(buf[..n].to_vec());
    }
    let mut plan = String::new();
    for (i, p) in got.iter().enumerate() {
        assert_eq!(
            u16::from_be_bytes([p[2], p[3]]),
            1000 + i as u16,
            "continuous"
        );
        assert_eq!(&p[8..12], &0xbbbb_bbbbu32.to_be_bytes(), "B's stream");
        plan.push(match p[1] & 0x7f {
            101 if p[13] & 0x80 != 0 => 'E',
            101 => char::from(b'0' + p[12]),
            _ => '.',
        });
    }
    // 60 ms each (three packets, the third the first end), 60 ms apart.
    assert_eq!(plan, "44EEE.22EEE.........");
    c.finish();
}

#[test]
fn events_towards_a_leg_without_telephone_event_become_tones_it_hears() {
    // A sends SIPp's '1' as RFC 2833 events beside its PCMU audio; B's peer takes PCMU only.
    let options = DtmfOptions {
        event_payload_type: Some(101),
        tones_to_other: Some(InbandAudio {
            payload_type: 0,
            codec: Codec::Pcmu,
        }),
        ..DtmfOptions::default()
    };
    let mut c = Call::new(48340, options);
    let capture = pcap_rtp("/usr/share/sip-tester/dtmf_2833_1.pcap");
    let mut events = capture.into_iter().map(|(_, p)| p);
    // 600 ms of silence from A, the ten event packets alongside frames 3 to 12.
    let silence = vec![0i16; 160 * 30];
    c.stream(Law::Ulaw, &silence, |frame| match frame {
        3..=12 => events.next().into_iter().collect(),
        _ => Vec::new(),
    });
    // The press is still reported to the control plane.
    assert_eq!(
        c.keys(Duration::from_millis(300)),
        [('1', DtmfSource::Rfc4733, 280)]
    );
    // What B's phone got: audio only, in which its own detector hears the key once.
    let mut buf = [0u8; 2048];
    let mut detector = tandem_media::dtmf::DtmfDetector::new();
    let (mut audio, mut heard) = (0, String::new());
    while let Ok(n) = c.b.recv(&mut buf) {
        assert_eq!(buf[1] & 0x7f, 0, "no telephone events reach B");
        audio += 1;
        let mut pcm = [0i16; 160];
        Law::Ulaw.decode(&buf[12..n], &mut pcm[..n - 12]);
        detector.handle_frame(&pcm[..n - 12]);
        while let Some(d) = detector.poll_digit() {
            heard.push(d.key);
        }
    }
    assert_eq!(audio, 30, "every audio packet relayed");
    assert_eq!(heard, "1");
    c.finish();
}

/// A's phone presses `k` as tones alone (PCMU: 100 ms of silence, 200 ms of the key, 300 ms
/// of silence), reported once.
fn press_as_tones(c: &mut Call, k: char) {
    let mut pcm = vec![0i16; 800];
    pcm.extend(key(k, 200, 300, -7.0, -5.0));
    c.stream(Law::Ulaw, &pcm, |_| Vec::new());
    let keys = c.keys(Duration::from_millis(300));
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!((keys[0].0, keys[0].1), (k, DtmfSource::Inband));
}

/// Runs `detector` over `pcm`, adding the keys it confirms to `heard`.
fn detect(detector: &mut tandem_media::dtmf::DtmfDetector, pcm: &[i16], heard: &mut String) {
    detector.handle_frame(pcm);
    while let Some(d) = detector.poll_digit() {
        heard.push(d.key);
    }
}

/// B got all 30 packets of [`press_as_tones`]' stream and heard no key in their audio.
fn assert_heard_all_and_no_tone(packets: usize, heard: &str) {
    assert_eq!(packets, 30, "every packet of A's stream reaches B");
    assert_eq!(heard, "", "B hears no tone");
}

#[test]
fn tones_from_a_leg_without_telephone_event_reach_the_other_as_events_only() {
    // A's phone sends its keys as tones in PCMU (no telephone-event); B's peer takes
    // telephone-event on 101.
    let options = DtmfOptions {
        inband: Some(InbandAudio {
            payload_type: 0,
            codec: Codec::Pcmu,
        }),
        events_to_other: Some(TelephoneEvents {
            payload_type: 101,
            clock_hz: 8000,
        }),
        ..DtmfOptions::default()
    };
    let mut c = Call::new(49000, options);
    // 100 ms of silence, '5' for 200 ms, 300 ms of silence.
    press_as_tones(&mut c, '5');
    // What B's phone got: one press as RFC 4733 events in A's stream, and audio in which its
    // own detector hears nothing.
    let mut buf = [0u8; 2048];
    let mut detector = tandem_media::dtmf::DtmfDetector::new();
    let (mut audio, mut loud, mut heard) = (0, 0, String::new());
    let mut events: Vec<(bool, u32, u8, bool, u16)> = Vec::new();
    let mut seq = None;
    while let Ok(n) = c.b.recv(&mut buf) {
        let s = u16::from_be_bytes([buf[2], buf[3]]);
        if let Some(prev) = seq {
            assert_eq!(s, u16::wrapping_add(prev, 1), "one stream, no gap");
        }
        seq = Some(s);
        if buf[1] & 0x7f == 101 {
            let ts = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
            let duration = u16::from_be_bytes([buf[14], buf[15]]);
            events.push((
                buf[1] & 0x80 != 0,
                ts,
                buf[12],
                buf[13] & 0x80 != 0,
                duration,
            ));
            continue;
        }
        assert_eq!(buf[1] & 0x7f, 0);
        audio += 1;
        let mut frame = [0i16; 160];
        Law::Ulaw.decode(&buf[12..n], &mut frame[..n - 12]);
        let rms = (frame[..n - 12]
            .iter()
            .map(|&x| (x as f64).powi(2))
            .sum::<f64>()
            / (n - 12) as f64)
            .sqrt();
        // -40 dBm0 and up: tone, not the silence (or its quantisation noise).
        loud += (rms > dbm0_to_peak(-40.0) as f64 / 2f64.sqrt()) as u32;
        detect(&mut detector, &frame[..n - 12], &mut heard);
    }
    assert_heard_all_and_no_tone(audio + events.len(), &heard);
    // A tone starting on a packet's boundary is heard (a frame passing every check) within
    // that packet: none of it reaches B.
    assert_eq!(loud, 0, "{loud} packets of tone reached B");
    // One press: marker on the first, one timestamp and key throughout, 100 ms, the end
    // three times.
    assert_eq!(events.len(), 7, "{events:?}");
    assert!(
        events[0].0 && events[1..].iter().all(|e| !e.0),
        "{events:?}"
    );
    assert!(events.iter().all(|e| e.1 == events[0].1 && e.2 == 5));
    let ends: Vec<bool> = events.iter().map(|e| e.3).collect();
    assert_eq!(ends, [false, false, false, false, true, true, true]);
    assert_eq!(events[6].4, 800, "100 ms at 8 kHz");
    c.finish();
}

#[test]
fn tones_from_a_pcmu_leg_reach_a_transcoded_opus_leg_as_events_in_its_clock() {
    // A sends PCMU with its keys as tones; B takes Opus (111) and telephone-event/48000 (110).
    let options = DtmfOptions {
        inband: Some(InbandAudio {
            payload_type: 0,
            codec: Codec::Pcmu,
        }),
        events_to_other: Some(TelephoneEvents {
            payload_type: 110,
            clock_hz: 48_000,
        }),
        ..DtmfOptions::default()
    };
    let mut c = Call::new(49020, options);
    let plan = [
        LegCodec {
            payload_type: 0,
            codec: Codec::Pcmu,
            event_payload_type: None,
            ptime_ms: 0,
            options: CodecOptions::NONE,
        },
        LegCodec {
            payload_type: 111,
            codec: Codec::Opus,
            event_payload_type: Some(110),
            ptime_ms: 0,
            options: CodecOptions::NONE,
        },
    ];
    let set = Command::SetCodecs {
        token: 3,
        id: c.id,
        codecs: Some(plan),
    };
    assert_eq!(call(&mut c.core, set), Event::Updated { token: 3 });
    press_as_tones(&mut c, '8');
    // B: Opus in which its own detector hears nothing, and one press of '8' as events.
    let mut buf = [0u8; 2048];
    let mut opus = OpusDecoder::new(8000).unwrap();
    let mut detector = tandem_media::dtmf::DtmfDetector::new();
    let (mut audio, mut heard) = (0, String::new());
    let mut events = Vec::new();
    while let Ok(n) = c.b.recv(&mut buf) {
        if buf[1] & 0x7f == 110 {
            let duration = u16::from_be_bytes([buf[14], buf[15]]);
            events.push((buf[12], buf[13] & 0x80 != 0, duration));
            continue;
        }
        assert_eq!(buf[1] & 0x7f, 111);
        audio += 1;
        let mut frame = [0i16; 960];
        let got = opus.decode(&buf[12..n], &mut frame).unwrap();
        detect(&mut detector, &frame[..got], &mut heard);
    }
    assert_heard_all_and_no_tone(audio + events.len(), &heard);
    assert_eq!(events.len(), 7, "{events:?}");
    assert!(events.iter().all(|e| e.0 == 8));
    assert_eq!(
        events.iter().filter(|e| e.1).count(),
        3,
        "the end three times"
    );
    assert_eq!(events[6].2, 4800, "100 ms at 48 kHz");
    c.finish();
}

/// `ms` of a DTMF key at `rate_hz`, then `gap_ms` of silence.
fn key_at(rate_hz: u32, k: char, ms: u32, gap_ms: u32, dbm0: f32) -> Vec<i16> {
    let spec = ToneSpec::dtmf(k, ms, gap_ms, dbm0, dbm0).unwrap();
    let mut g = ToneGenerator::new(&spec, rate_hz).unwrap();
    let mut pcm = vec![0i16; ((ms + gap_ms) * rate_hz / 1000) as usize];
    g.fill(&mut pcm);
    pcm
}

/// `pcm` at `rate_hz` cut into 20 ms frames, each encoded by `encoder`.
fn encoded(encoder: &mut dyn Encoder, pcm: &[i16]) -> Vec<Vec<u8>> {
    let frame = encoder.frame_samples();
    pcm.chunks_exact(frame)
        .map(|f| {
            let mut out = vec![0u8; encoder.max_payload_bytes()];
            let n = encoder.encode(f, &mut out).unwrap();
            out.truncate(n);
            out
        })
        .collect()
}

#[test]
fn in_band_keys_in_g722_opus_and_g729_audio_but_none_in_speech() {
    // SIPp's spoken A-law prompt, as 8 and 16 kHz PCM.
    let mut speech8 = Vec::new();
    for (_, p) in pcap_rtp("/usr/share/sip-tester/g711a.pcap") {
        let mut pcm = vec![0i16; p.len() - 12];
        Law::Alaw.decode(&p[12..], &mut pcm);
        speech8.extend(pcm);
    }
    speech8.truncate(speech8.len() / 160 * 160);
    let mut up = Resampler::new(8000, 16_000, 10).unwrap();
    let mut speech16 = vec![0i16; speech8.len() * 2];
    for (i, o) in speech8.chunks_exact(80).zip(speech16.chunks_exact_mut(160)) {
        up.process(i, o).unwrap();
    }
    let mut c = Call::new(48360, DtmfOptions::default());
    c.b.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let cases = [
        (Codec::G722, 9, 16_000, &speech16),
        (Codec::Opus, 111, 8000, &speech8),
        (Codec::G729, 18, 8000, &speech8),
    ];
    for (i, (codec, pt, rate, speech)) in cases.into_iter().enumerate() {
        let mut encoder: Box<dyn Encoder> = match codec {
            Codec::G722 => Box::new(G722Encoder::new(20).unwrap()),
            Codec::G729 => Box::new(G729Encoder::new(20).unwrap()),
            _ => Box::new(OpusEncoder::new(8000, 20).unwrap()),
        };
        let set = Command::SetDtmf {
            token: 10 + i as u64,
            id: c.id,
            leg: LegIndex::A,
            options: DtmfOptions {
                inband: Some(InbandAudio {
                    payload_type: pt,
                    codec,
                }),
                ..DtmfOptions::default()
            },
        };
        assert_eq!(
            call(&mut c.core, set),
            Event::Updated {
                token: 10 + i as u64
            }
        );
        // Keys at -10 dBm0, '5' under noise 15 dB below the tones' power.
        let mut pcm = vec![0i16; rate as usize / 10];
        pcm.extend(key_at(rate, '1', 80, 80, -10.0));
        let noisy_from = pcm.len();
        pcm.extend(key_at(rate, '5', 80, 80, -10.0));
        let noisy_to = pcm.len();
        pcm.extend(key_at(rate, '9', 80, 80, -10.0));
        pcm.extend(key_at(rate, '#', 80, 200, -10.0));
        let tone_power = 2.0 * (dbm0_to_peak(-10.0).powi(2) / 2.0);
        add_noise(
            &mut pcm[noisy_from..noisy_to],
            (tone_power / 10f32.powf(1.5)).sqrt(),
            11,
        );
        let ts_step = if codec == Codec::Opus { 960 } else { 160 };
        c.stream_frames(pt, ts_step, &encoded(encoder.as_mut(), &pcm));
        let keys: String = c
            .keys(Duration::from_millis(300))
            .iter()
            .map(|k| k.0)
            .collect();
        assert_eq!(keys, "159#", "{codec:?}");
        // The prompt, faster than real time (the detector counts samples): no key.
        let mut buf = [0u8; 2048];
        for frame in encoded(encoder.as_mut(), speech) {
            c.send(pt, 0, &frame);
            let _ = c.b.recv(&mut buf);
        }
        assert_eq!(c.keys(Duration::from_millis(300)), [], "{codec:?} speech");
        while c.b.recv(&mut buf).is_ok() {}
    }
    c.finish();
}
