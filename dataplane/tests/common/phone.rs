//! A phone on loopback for the mixing tests (supervisor monitoring, conferences): it sends
//! its tone every 20 ms in its codec and decodes what it hears; which tones a phone heard is
//! judged by spectrum (Hann-windowed Goertzel per 20 ms frame).

use super::call;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use tandem_dataplane::api::{Codec, Command, Event, LegCodec, LegParams, SessionId};
use tandem_dataplane::CoreHandle;
use tandem_media::codec::{
    Decoder, Encoder, G711Encoder, G722Encoder, G729Encoder, OpusDecoder, OpusEncoder,
};
use tandem_media::g711::Law;
use tandem_media::tones::{ToneGenerator, ToneSpec};

/// Ticks (20 ms) per phase of a test, and the first ones of each not judged (a switch
/// settling).
pub const PHASE_TICKS: usize = 30;
pub const SETTLE_TICKS: usize = 10;

pub fn updated(core: &mut CoreHandle, cmd: Command) {
    let answer = call(core, cmd);
    assert!(matches!(answer, Event::Updated { .. }), "{answer:?}");
}

pub fn endpoint() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_nonblocking(true).unwrap();
    s
}

pub fn leg(sock: &UdpSocket) -> LegParams {
    let a = sock.local_addr().unwrap();
    LegParams {
        rtp: Some(a),
        rtcp: Some(SocketAddr::new(a.ip(), a.port() + 1)),
        ..LegParams::default()
    }
}

pub fn create(core: &mut CoreHandle, a: LegParams, b: LegParams) -> (SessionId, [u16; 2]) {
    match call(core, Command::Create { token: 1, a, b }) {
        Event::Created { id, ports, .. } => (id, ports),
        other => panic!("{other:?}"),
    }
}

pub fn lc(codec: Codec) -> LegCodec {
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
        options: tandem_dataplane::api::CodecOptions::NONE,
    }
}

/// A phone: sends its tone in its codec every 20 ms, and decodes what it receives.
pub struct Phone {
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
pub struct Heard {
    pub phase: usize,
    pub tick: usize,
    pub marker: bool,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub pcm: Vec<i16>,
}

impl Phone {
    pub fn new(sock: UdpSocket, to: u16, codec: Codec, ssrc: u32, tone_hz: f64) -> Phone {
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

    pub fn send(&mut self) {
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

    pub fn receive(&mut self, phase: usize, tick: usize, into: &mut Vec<Heard>) {
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

/// One phase of `PHASE_TICKS`: every phone sends its tone each 20 ms (paced from `tick_at`)
/// and keeps what it heard in its entry of `heard`.
pub fn play_phase(
    phones: &mut [Phone],
    heard: &mut [Vec<Heard>],
    phase: usize,
    tick_at: &mut Instant,
) {
    for tick in 0..PHASE_TICKS {
        for p in phones.iter_mut() {
            p.send();
        }
        *tick_at += Duration::from_millis(20);
        std::thread::sleep(tick_at.saturating_duration_since(Instant::now()));
        for (p, into) in phones.iter_mut().zip(heard.iter_mut()) {
            p.receive(phase, tick, into);
        }
    }
}

/// Energy at `hz` summed over 20 ms frames, each through a Hann window and a Goertzel filter.
pub fn tone_energy(pcm: &[i16], hz: f64) -> f64 {
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

/// Asserts which of `tones` `heard` carries in `phase` (after it settled): each expected tone
/// within 15 dB of the strongest, each other one 25 dB or more below it.
pub fn assert_hears<const N: usize>(
    who: &str,
    heard: &[Heard],
    phase: usize,
    tones: [f64; N],
    expect: [bool; N],
) {
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
    let e = tones.map(|f| tone_energy(&pcm, f));
    let max = e.iter().cloned().fold(0.0, f64::max);
    let db = e.map(|x| 10.0 * (x / max).log10());
    for k in 0..N {
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
pub fn ssrc_in(heard: &[Heard], phase: usize) -> u32 {
    let mut it = heard
        .iter()
        .filter(|h| h.phase == phase && h.tick >= SETTLE_TICKS);
    let first = it.next().expect("packets").ssrc;
    assert!(it.all(|h| h.ssrc == first), "one stream in phase {phase}");
    first
}

/// `ssrc`'s packets in `heard`: marked first only, sequence +1 per packet, timestamp a whole
/// number of 20 ms frames on (a frame skipped by a late core shows as a time gap).
pub fn assert_continuous(heard: &[Heard], ssrc: u32, frame_ticks: u32) {
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

/// A party's `LegCodec` (static payload types; 111 for Opus) and an encoder at its own rate.
pub fn party(codec: Codec) -> (LegCodec, Box<dyn Encoder>) {
    let (payload_type, encoder): (u8, Box<dyn Encoder>) = match codec {
        Codec::Pcmu => (0, Box::new(G711Encoder::new(Law::Ulaw, 20).unwrap())),
        Codec::Pcma => (8, Box::new(G711Encoder::new(Law::Alaw, 20).unwrap())),
        Codec::G722 => (9, Box::new(G722Encoder::new(20).unwrap())),
        Codec::Opus => (111, Box::new(OpusEncoder::new(8000, 20).unwrap())),
        Codec::G729 => (18, Box::new(G729Encoder::new(20).unwrap())),
    };
    let lc = LegCodec {
        payload_type,
        codec,
        event_payload_type: None,
        ptime_ms: 0,
        options: tandem_dataplane::api::CodecOptions::NONE,
    };
    (lc, encoder)
}

/// `n` 20 ms RTP packets of a tone at `hz`, encoded by `party`'s encoder at its own rate.
pub fn encoded_tone(codec: Codec, hz: f32, n: usize) -> Vec<Vec<u8>> {
    let (lc, mut encoder) = party(codec);
    let rate = encoder.sample_rate_hz();
    let mut tone = ToneGenerator::new(&ToneSpec::continuous(hz, 0.0, -12.0), rate).unwrap();
    let mut pcm = vec![0i16; encoder.frame_samples()];
    let ts_step = codec.rtp_clock_hz() / 50;
    (0..n)
        .map(|i| {
            tone.fill(&mut pcm);
            let mut payload = [0u8; 500];
            let len = encoder.encode(&pcm, &mut payload).unwrap();
            let mut p = vec![0x80, lc.payload_type];
            p.extend_from_slice(&(i as u16).to_be_bytes());
            p.extend_from_slice(&(i as u32 * ts_step).to_be_bytes());
            p.extend_from_slice(&(0x1000 + hz as u32).to_be_bytes());
            p.extend_from_slice(&payload[..len]);
            p
        })
        .collect()
}

/// `packets` with every seventh pair swapped (packets 3 and 4, 10 and 11, ...): reordering
/// the mix must undo.
pub fn swap_pairs(mut packets: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut i = 3;
    while i + 1 < packets.len() {
        packets.swap(i, i + 1);
        i += 7;
    }
    packets
}
