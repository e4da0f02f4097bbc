//! The per-frame paths allocate nothing once their state is constructed; and no count read
//! from a hostile clip file sizes a big allocation.
//!
//! A counting global allocator counts allocations per thread (so parallel tests do not see
//! each other's), and notes the largest; each check constructs its object, then runs frames
//! from the first one on and asserts the count did not move.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

/// Counts an allocation of `bytes` on this thread.
fn note(bytes: usize) {
    ALLOCS.with(|c| c.set(c.get() + 1));
    LARGEST.with(|l| l.set(l.get().max(bytes)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The largest single allocation made on this thread while `f` runs.
fn largest_allocation(f: impl FnOnce()) -> usize {
    LARGEST.with(|l| l.set(0));
    f();
    LARGEST.with(|l| l.get())
}

/// Allocations made on this thread while `f` runs.
fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.with(|c| c.get());
    f();
    ALLOCS.with(|c| c.get()) - before
}

use tandem_media::codec::{Decoder, Encoder, G711Decoder, G711Encoder};
use tandem_media::dtmf::DtmfDetector;
use tandem_media::g711::Law;
use tandem_media::mixer::{Mixer, Role, SupervisorMode};
use tandem_media::quality::ReceptionStats;
use tandem_media::resample::{Resampler, RATES_HZ};
use tandem_media::rfc4733::{EventReceiver, TelephoneEvent};
use tandem_media::tones::{call_progress, Country, ProgressTone, ToneGenerator, ToneSpec};

const FRAMES: usize = 200;

fn speechish(n: usize, seed: i32) -> Vec<i16> {
    (0..n as i32)
        .map(|i| ((i * 37 + seed) % 2000 - 1000) as i16 * 8)
        .collect()
}

#[test]
fn g711_encode_decode() {
    let pcm = speechish(160, 1);
    let mut payload = [0u8; 160];
    let mut out = [0i16; 160];
    for law in [Law::Ulaw, Law::Alaw] {
        let mut enc = G711Encoder::new(law, 20).unwrap();
        let mut dec = G711Decoder::new(law);
        let n = allocations(|| {
            for _ in 0..FRAMES {
                enc.encode(&pcm, &mut payload).unwrap();
                dec.decode(&payload, &mut out).unwrap();
                law.encode(&pcm, &mut payload);
                law.decode(&payload, &mut out);
            }
        });
        assert_eq!(n, 0, "{law:?}");
    }
}

#[test]
fn tone_generator() {
    let mut out = [0i16; 160];
    let mut gens: Vec<ToneGenerator> = [
        call_progress(Country::Uk, ProgressTone::Congestion),
        call_progress(Country::Us, ProgressTone::Ringback),
        ToneSpec::dtmf('7', 60, 40, -8.0, -6.0).unwrap(),
    ]
    .iter()
    .map(|s| ToneGenerator::new(s, 8000).unwrap())
    .collect();
    let n = allocations(|| {
        for _ in 0..FRAMES {
            for g in &mut gens {
                g.fill(&mut out);
            }
        }
    });
    assert_eq!(n, 0);
}

#[test]
fn dtmf_detector_including_detections() {
    // A key sequence so the confirmation and queue paths run too.
    let mut audio = vec![0i16; 160 * FRAMES];
    let mut g =
        ToneGenerator::new(&ToneSpec::dtmf('5', 80, 80, -8.0, -6.0).unwrap(), 8000).unwrap();
    for chunk in audio.chunks_mut(1280) {
        g.restart();
        g.fill(chunk);
    }
    let mut d = DtmfDetector::new();
    let mut found = 0;
    let n = allocations(|| {
        for frame in audio.chunks(160) {
            d.handle_frame(frame);
            while d.poll_digit().is_some() {
                found += 1;
            }
        }
    });
    assert_eq!(n, 0);
    assert_eq!(found, FRAMES / 8);
}

#[test]
fn mixer_3_and_8_parties() {
    for parties in [3usize, 8] {
        let mut m = Mixer::new(parties, 160);
        let mut ids = Vec::new();
        for i in 0..parties {
            ids.push(m.add(Role::Party).unwrap());
            if i == parties - 1 {
                m.set_role(
                    ids[i],
                    Role::Supervisor(SupervisorMode::Whisper { to: ids[1] }),
                )
                .unwrap();
            }
        }
        let inputs: Vec<Vec<i16>> = (0..parties).map(|i| speechish(160, i as i32)).collect();
        let n = allocations(|| {
            for _ in 0..FRAMES {
                for (id, x) in ids.iter().zip(&inputs) {
                    m.set_input(*id, x).unwrap();
                }
                m.mix();
                for id in &ids {
                    std::hint::black_box(m.output(*id).unwrap());
                }
            }
        });
        assert_eq!(n, 0, "{parties} parties");
    }
}

#[test]
fn resampler_all_pairs() {
    for from in RATES_HZ {
        for to in RATES_HZ {
            let mut r = Resampler::new(from, to, 20).unwrap();
            let x = speechish(r.input_frame(), 3);
            let mut y = vec![0i16; r.output_frame()];
            let n = allocations(|| {
                for _ in 0..FRAMES {
                    r.process(&x, &mut y).unwrap();
                }
            });
            assert_eq!(n, 0, "{from} -> {to}");
        }
    }
}

#[test]
fn rfc4733_receiver_and_reception_stats() {
    let mut rx = EventReceiver::new();
    let mut stats = ReceptionStats::new();
    let n = allocations(|| {
        for i in 0..FRAMES as u32 {
            let payload = [
                (i / 10) as u8 % 16,
                if i % 10 == 9 { 0x8a } else { 0x0a },
                0,
                160,
            ];
            let ev = TelephoneEvent::parse(&payload).unwrap();
            rx.handle_packet(i / 10 * 1600, ev);
            while rx.poll_report().is_some() {}
            stats.on_packet(i as u16, i * 160, i * 160 + 7);
        }
        std::hint::black_box(stats.take_interval());
    });
    assert_eq!(n, 0);
}

#[test]
fn g722_encodes_and_decodes_without_allocating() {
    use tandem_media::codec::{G722Decoder, G722Encoder};
    let mut enc = G722Encoder::new(20).unwrap();
    let mut dec = G722Decoder::new();
    let mut narrowband = G722Decoder::narrowband();
    let pcm = speechish(320, 5);
    let mut payload = [0u8; 160];
    let mut out = [0i16; 320];
    let n = allocations(|| {
        for _ in 0..FRAMES {
            enc.encode(&pcm, &mut payload).unwrap();
            dec.decode(&payload, &mut out).unwrap();
            narrowband.decode(&payload, &mut out[..160]).unwrap();
        }
    });
    assert_eq!(n, 0);
}

#[test]
fn g729_encodes_decodes_and_conceals_without_allocating() {
    use tandem_media::codec::{G729Decoder, G729Encoder};
    let mut enc = G729Encoder::new(20).unwrap();
    let mut dec = G729Decoder::new();
    let pcm = speechish(160, 6);
    let mut payload = [0u8; 22];
    let mut out = [0i16; 240];
    let n = allocations(|| {
        for i in 0..FRAMES {
            let len = enc.encode(&pcm, &mut payload).unwrap();
            dec.decode(&payload[..len], &mut out).unwrap();
            if i % 7 == 0 {
                dec.conceal(&mut out[..160]).unwrap();
                // A SID frame after the speech, then comfort noise.
                payload[20..22].copy_from_slice(&[0x20, 0x10]);
                dec.decode(&payload, &mut out).unwrap();
                dec.conceal(&mut out[..160]).unwrap();
            }
        }
    });
    assert_eq!(n, 0);
}

/// The Ogg page checksum (CRC-32, polynomial 0x04c11db7, not reflected, over the page with its
/// checksum field zeroed).
fn ogg_crc(page: &[u8]) -> u32 {
    page.iter().fold(0u32, |crc, &byte| {
        (0..8).fold(crc ^ (u32::from(byte) << 24), |c, _| {
            (c << 1) ^ if c & 0x8000_0000 != 0 { 0x04c1_1db7 } else { 0 }
        })
    })
}

/// Sets every page's checksum in an Ogg file whose page headers are intact.
fn fix_ogg_checksums(file: &mut [u8]) {
    let mut at = 0;
    while at + 27 <= file.len() {
        let segments = file[at + 26] as usize;
        let body: usize = file[at + 27..at + 27 + segments]
            .iter()
            .map(|&s| s as usize)
            .sum();
        let end = at + 27 + segments + body;
        file[at + 22..at + 26].fill(0);
        let crc = ogg_crc(&file[at..end]);
        file[at + 22..at + 26].copy_from_slice(&crc.to_le_bytes());
        at = end;
    }
}

#[test]
fn hostile_ogg_header_fields_size_no_big_allocation() {
    const FILE: &[u8] = include_bytes!("data/sine440_stereo_44k1.ogg");
    // What decoding the good file takes at most at once, with room: the hostile variants
    // below claim up to 4 GiB (a u32 count) or terabytes (codebook entries × dimensions).
    let good = largest_allocation(|| {
        tandem_media::clip::read_clip(FILE).unwrap();
    });
    let bound = 4 * good.max(64 * 1024);
    let mut fixed = FILE.to_vec();
    fix_ogg_checksums(&mut fixed);
    assert_eq!(fixed, FILE, "the checksum is Ogg's");
    // The headers end where the second page does: 0xffffffff over every 4 bytes of them,
    // checksums fixed. Among them: the comment count (the field whose 1,701,670,511 once made
    // lewton reserve 81 GB), the vendor length, codebook dimensions and entries.
    let second_page_end = 58
        + 27
        + 16
        + FILE[58 + 27..58 + 27 + 16]
            .iter()
            .map(|&s| s as usize)
            .sum::<usize>();
    for at in (101..second_page_end - 4).step_by(2) {
        let mut file = FILE.to_vec();
        file[at..at + 4].fill(0xff);
        fix_ogg_checksums(&mut file);
        let largest = largest_allocation(|| {
            let _ = tandem_media::clip::read_clip(&file);
        });
        assert!(
            largest <= bound,
            "0xffffffff at {at}: {largest} bytes at once (bound {bound})"
        );
    }
}
