//! Audio for playback (hold music, prompts) as 8 kHz 16-bit linear PCM: the built-in hold
//! melody, and WAV files.
//!
//! This is the cold path: clips are read and synthesised once, at start, and allocate freely.
//! Only 8 kHz mono 16-bit integer PCM WAV is accepted; anything else is refused with an error
//! that says what the file is, rather than resampled or mixed down behind the operator's back.

use crate::tones::{ToneGenerator, ToneSpec};
use std::path::Path;
use thiserror::Error;

/// The sample rate of every clip.
pub const CLIP_RATE_HZ: u32 = 8_000;

/// The longest clip accepted: 10 minutes (9.6 MB once encoded in both G.711 laws).
pub const MAX_CLIP_SECONDS: u32 = 600;

/// Why a clip could not be read.
#[derive(Debug, Error)]
pub enum ClipError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The bytes are not a WAV file (or a broken one).
    #[error("not a readable WAV file: {0}")]
    Wav(String),
    /// A WAV file in a format we do not play.
    #[error(
        "WAV is {channels} channel(s), {rate_hz} Hz, {bits}-bit {kind}: only 8000 Hz mono 16-bit integer PCM is supported"
    )]
    Format {
        /// Channels in the file.
        channels: u16,
        /// Its sample rate.
        rate_hz: u32,
        /// Bits per sample.
        bits: u16,
        /// `integer` or `float`.
        kind: &'static str,
    },
    /// Longer than [`MAX_CLIP_SECONDS`].
    #[error("clip is {seconds} s long, the limit is {MAX_CLIP_SECONDS} s")]
    TooLong {
        /// Its length.
        seconds: u64,
    },
    /// No samples at all.
    #[error("clip has no samples")]
    Empty,
}

/// Reads an 8 kHz mono 16-bit PCM WAV stream.
pub fn read_wav<R: std::io::Read>(reader: R) -> Result<Vec<i16>, ClipError> {
    let wav = hound::WavReader::new(reader).map_err(|e| ClipError::Wav(e.to_string()))?;
    let spec = wav.spec();
    let integer = spec.sample_format == hound::SampleFormat::Int;
    if spec.channels != 1
        || spec.sample_rate != CLIP_RATE_HZ
        || spec.bits_per_sample != 16
        || !integer
    {
        return Err(ClipError::Format {
            channels: spec.channels,
            rate_hz: spec.sample_rate,
            bits: spec.bits_per_sample,
            kind: if integer { "integer" } else { "float" },
        });
    }
    let samples = wav.duration() as u64;
    if samples > MAX_CLIP_SECONDS as u64 * CLIP_RATE_HZ as u64 {
        return Err(ClipError::TooLong {
            seconds: samples / CLIP_RATE_HZ as u64,
        });
    }
    let pcm = wav
        .into_samples::<i16>()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClipError::Wav(e.to_string()))?;
    if pcm.is_empty() {
        return Err(ClipError::Empty);
    }
    Ok(pcm)
}

/// Reads an 8 kHz mono 16-bit PCM WAV file.
pub fn read_wav_file(path: &Path) -> Result<Vec<i16>, ClipError> {
    let file = std::fs::File::open(path).map_err(|source| ClipError::Io {
        path: path.display().to_string(),
        source,
    })?;
    read_wav(std::io::BufReader::new(file))
}

/// Writes `pcm` as an 8 kHz mono 16-bit PCM WAV (tests, and turning the built-in melody into a
/// file an operator can listen to).
pub fn write_wav<W: std::io::Write + std::io::Seek>(out: W, pcm: &[i16]) -> Result<(), ClipError> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: CLIP_RATE_HZ,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let err = |e: hound::Error| ClipError::Wav(e.to_string());
    let mut w = hound::WavWriter::new(out, spec).map_err(err)?;
    for &s in pcm {
        w.write_sample(s).map_err(err)?;
    }
    w.finalize().map_err(err)
}

/// One note of the hold melody: frequency in Hz (0 = rest) and length in 20 ms frames.
const MELODY: [(f32, u32); 16] = [
    (523.25, 20),  // C5
    (659.25, 20),  // E5
    (783.99, 20),  // G5
    (659.25, 20),  // E5
    (698.46, 20),  // F5
    (880.00, 20),  // A5
    (1046.50, 20), // C6
    (880.00, 20),  // A5
    (783.99, 20),  // G5
    (987.77, 20),  // B5
    (1174.66, 20), // D6
    (987.77, 20),  // B5
    (1046.50, 30), // C6
    (783.99, 15),  // G5
    (523.25, 35),  // C5
    (0.0, 20),
];

/// Level of each note's fundamental; the octave below sits 6 dB under it.
const MELODY_LEVEL_DBM0: f32 = -16.0;

/// The built-in hold music: a gentle 6.8 s arpeggio (C – F – G – C) of soft, decaying notes,
/// each a fundamental plus its lower octave. It starts and ends near silence, so it loops
/// without a click. A whole number of 20 ms frames.
pub fn hold_melody() -> Vec<i16> {
    let frame = (CLIP_RATE_HZ / 50) as usize;
    let total: usize = MELODY.iter().map(|&(_, f)| f as usize * frame).sum();
    let mut pcm = Vec::with_capacity(total);
    let attack = (CLIP_RATE_HZ / 100) as f32; // 10 ms
    let decay = CLIP_RATE_HZ as f32 * 0.35; // e-folding time of the note's fade
    for &(hz, frames) in &MELODY {
        let len = frames as usize * frame;
        let start = pcm.len();
        pcm.resize(start + len, 0);
        if hz == 0.0 {
            continue;
        }
        let spec = ToneSpec {
            freqs_hz: [hz, hz / 2.0],
            levels_dbm0: [MELODY_LEVEL_DBM0, MELODY_LEVEL_DBM0 - 6.0],
            ..ToneSpec::continuous(0.0, 0.0, 0.0)
        };
        // Every melody frequency is below 4 kHz: the generator cannot refuse it.
        let mut tone = ToneGenerator::new(&spec, CLIP_RATE_HZ).expect("melody frequency in band");
        let note = &mut pcm[start..];
        tone.fill(note);
        let release = (CLIP_RATE_HZ / 25) as f32; // the last 40 ms fade to zero
        for (i, s) in note.iter_mut().enumerate() {
            let t = i as f32;
            let mut gain = (t / attack).min(1.0) * (-t / decay).exp();
            let left = (len - i) as f32;
            if left < release {
                gain *= left / release;
            }
            *s = (*s as f32 * gain).round() as i16;
        }
    }
    debug_assert_eq!(pcm.len(), total);
    pcm
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn wav_bytes(spec: hound::WavSpec, samples: &[i32]) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut buf, spec).unwrap();
        for &s in samples {
            if spec.sample_format == hound::SampleFormat::Float {
                w.write_sample(s as f32 / 32768.0).unwrap();
            } else {
                w.write_sample(s).unwrap();
            }
        }
        w.finalize().unwrap();
        buf.into_inner()
    }

    fn spec(channels: u16, rate: u32, bits: u16, fmt: hound::SampleFormat) -> hound::WavSpec {
        hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: fmt,
        }
    }

    #[test]
    fn reads_8k_mono_16bit_and_round_trips_the_melody() {
        let melody = hold_melody();
        let mut buf = Cursor::new(Vec::new());
        write_wav(&mut buf, &melody).unwrap();
        let back = read_wav(Cursor::new(buf.into_inner())).unwrap();
        assert_eq!(back, melody);
    }

    #[test]
    fn refuses_other_formats_with_what_they_are() {
        use hound::SampleFormat::{Float, Int};
        for (s, want) in [
            (
                spec(2, 8000, 16, Int),
                "2 channel(s), 8000 Hz, 16-bit integer",
            ),
            (
                spec(1, 16000, 16, Int),
                "1 channel(s), 16000 Hz, 16-bit integer",
            ),
            (
                spec(1, 8000, 8, Int),
                "1 channel(s), 8000 Hz, 8-bit integer",
            ),
            (
                spec(1, 8000, 32, Float),
                "1 channel(s), 8000 Hz, 32-bit float",
            ),
        ] {
            let err = read_wav(Cursor::new(wav_bytes(s, &[0, 1, 2, 3]))).unwrap_err();
            assert!(matches!(err, ClipError::Format { .. }), "{err}");
            let text = err.to_string();
            assert!(text.contains(want), "{text}");
            assert!(
                text.contains("only 8000 Hz mono 16-bit integer PCM"),
                "{text}"
            );
        }
        let err = read_wav(Cursor::new(b"RIFF....not a wave".to_vec())).unwrap_err();
        assert!(matches!(err, ClipError::Wav(_)), "{err}");
        let empty = wav_bytes(spec(1, 8000, 16, Int), &[]);
        assert!(matches!(
            read_wav(Cursor::new(empty)),
            Err(ClipError::Empty)
        ));
        let missing = read_wav_file(Path::new("/nonexistent/hold.wav")).unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/hold.wav"));
    }

    #[test]
    fn melody_is_whole_frames_audible_and_loops_quietly() {
        let m = hold_melody();
        assert_eq!(m.len() % 160, 0);
        let seconds = m.len() as f32 / CLIP_RATE_HZ as f32;
        assert!((5.0..10.0).contains(&seconds), "{seconds}");
        let peak = m.iter().map(|s| s.unsigned_abs()).max().unwrap();
        // Audible, and well clear of clipping.
        assert!((3_000..20_000).contains(&peak), "{peak}");
        // Both ends of the loop are (near) silence: no click at the seam.
        assert!(m[..8].iter().all(|s| s.unsigned_abs() < 1_500));
        assert!(m[m.len() - 8..].iter().all(|&s| s == 0));
    }
}
