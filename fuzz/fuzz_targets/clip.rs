#![no_main]
//! Clip files (`[dataplane] hold_music`: WAV, Ogg Vorbis, Ogg Opus): arbitrary bytes are
//! refused with an error or decoded, never a panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tandem_media::clip::read_clip(data);
});
