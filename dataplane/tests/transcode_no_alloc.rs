//! The transcoding path allocates nothing per packet: the session decision and the
//! transcoder of each direction (resampler and loss concealment included), for every pair
//! the cores transcode, from the first packet on.
//!
//! A counting global allocator (per thread, so parallel tests do not see each other's) counts
//! Rust's allocations. libopus's own state lives on the C heap from `opus_*_create`, called
//! when the plan is set; its encode and decode keep their scratch on the stack.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use tandem_dataplane::api::{Codec, LegCodec, LegIndex, LegParams};
use tandem_dataplane::session::{Sessions, Verdict};
use tandem_dataplane::transcode::{Skip, Transcoder, Transcoders};
use tandem_media::g711::Law;
use tandem_media::tones::{ToneGenerator, ToneSpec};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.with(|c| c.get());
    f();
    ALLOCS.with(|c| c.get()) - before
}

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
                (Codec::G729, _) => g729.encode_any(&pcm, &mut payload).unwrap(),
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
                            assert!(transcoders.conceal(in_key, &mut out).unwrap() > 12);
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
                    match transcoders.conceal(0, &mut out) {
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
