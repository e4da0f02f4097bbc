//! Our G.729 decoder against bcg729's reference output, sample for sample.
//!
//! `g729-sys` ships, beside its source, a G.729 Annex B bitstream made by bcg729's encoder
//! (speech, SID frames and untransmitted frames) and bcg729's decoded output of it. The
//! bitstream goes through `G729Decoder` the way a transcoder sees it: speech frames packed two
//! to an RTP payload, a SID frame last in its payload, and each untransmitted frame stood in
//! for with `conceal` (comfort noise, since a SID came before). The PCM must be identical.
//! The files are read from the crate's source that Cargo unpacked, found with
//! `cargo metadata`, so nothing of them is copied into this repository.

use std::path::PathBuf;
use std::process::Command;
use tandem_media::codec::{Decoder, G729Decoder, G729_FRAME_SAMPLES};

/// The directory of the `g729-sys` source this build uses.
fn g729_source_dir() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline"])
        .args(["--manifest-path", manifest])
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "cargo metadata failed");
    let json = String::from_utf8(out.stdout).expect("metadata is UTF-8");
    // Each package has `"manifest_path":"<dir>/Cargo.toml"`; ours is the one under g729-sys-*.
    let path = json
        .split("\"manifest_path\":\"")
        .skip(1)
        .map(|rest| &rest[..rest.find('"').expect("closing quote")])
        .find(|p| p.contains("/g729-sys-"))
        .expect("g729-sys in the dependency graph");
    PathBuf::from(path)
        .parent()
        .expect("manifest has a directory")
        .to_path_buf()
}

/// One line per 10 ms frame: index, length (10 speech, 2 SID, 0 untransmitted), the frame's
/// bytes, then 11 bytes we do not use (the encoder's RFC 3389 view).
fn reference_frames(text: &str) -> Vec<Vec<u8>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let nums: Vec<u8> = line
                .split_whitespace()
                .map(|t| t.parse::<u32>().expect("number") as u8)
                .collect();
            let len = nums[1] as usize;
            assert!([0, 2, 10].contains(&len), "frame length {len}");
            nums[2..2 + len].to_vec()
        })
        .collect()
}

#[test]
fn decoder_matches_bcg729_on_the_annex_b_reference_stream() {
    let dir = g729_source_dir().join("fixtures");
    let text = std::fs::read_to_string(dir.join("annex_b_ref_enc.txt")).expect("bitstream");
    let frames = reference_frames(&text);
    let want: Vec<i16> = std::fs::read(dir.join("annex_b_ref_dec.pcm"))
        .expect("reference output")
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    assert!(want.len() >= frames.len() * G729_FRAME_SAMPLES);

    let mut dec = G729Decoder::new();
    let mut got: Vec<i16> = Vec::new();
    let mut payload: Vec<u8> = Vec::new();
    let mut pcm = [0i16; 3 * G729_FRAME_SAMPLES];
    let mut flush = |payload: &mut Vec<u8>, dec: &mut G729Decoder, got: &mut Vec<i16>| {
        if !payload.is_empty() {
            let n = dec.decode(payload, &mut pcm).expect("valid payload");
            got.extend_from_slice(&pcm[..n]);
            payload.clear();
        }
    };
    let (mut speech, mut sid, mut untransmitted) = (0, 0, 0);
    for frame in &frames {
        match frame.len() {
            10 => {
                speech += 1;
                payload.extend_from_slice(frame);
                if payload.len() == 20 {
                    flush(&mut payload, &mut dec, &mut got);
                }
            }
            2 => {
                sid += 1;
                payload.extend_from_slice(frame);
                flush(&mut payload, &mut dec, &mut got);
            }
            _ => {
                untransmitted += 1;
                flush(&mut payload, &mut dec, &mut got);
                let mut cn = [0i16; G729_FRAME_SAMPLES];
                dec.conceal(&mut cn).expect("one frame");
                got.extend_from_slice(&cn);
            }
        }
    }
    flush(&mut payload, &mut dec, &mut got);
    assert!(
        speech > 600 && sid > 10 && untransmitted > 20,
        "{speech} {sid} {untransmitted}"
    );
    assert_eq!(got.len(), frames.len() * G729_FRAME_SAMPLES);
    let first_difference = got.iter().zip(&want).position(|(a, b)| a != b);
    assert_eq!(first_difference, None, "decoded PCM differs from bcg729's");
}
