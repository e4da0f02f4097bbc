//! Audio for playback (hold music, prompts) as 8 kHz 16-bit linear PCM: the built-in hold
//! melody, and WAV files.
//!
//! This is the cold path: clips are read and synthesised once, at start, and allocate freely.
//! Only 8 kHz mono 16-bit integer PCM WAV is accepted; anything else is refused with an error
//! that says what the file is, rather than resampled or mixed down behind the operator's back.
//! Speech the appliance renders itself (queue announcements from a synthesiser) is read at its
//! own rate and resampled here ([`read_speech_wav`], [`resample_to_clip_rate`], [`trim_silence`]).

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

/// Reads a mono 16-bit integer PCM WAV at any rate (speech rendered by a synthesiser, which
/// writes its own rate): the samples and the rate. Other formats are refused like in
/// [`read_wav`]; turn the result into a clip with [`resample_to_clip_rate`].
pub fn read_speech_wav<R: std::io::Read>(reader: R) -> Result<(u32, Vec<i16>), ClipError> {
    let wav = hound::WavReader::new(reader).map_err(|e| ClipError::Wav(e.to_string()))?;
    let spec = wav.spec();
    let integer = spec.sample_format == hound::SampleFormat::Int;
    if spec.channels != 1 || spec.bits_per_sample != 16 || !integer || spec.sample_rate == 0 {
        return Err(ClipError::Format {
            channels: spec.channels,
            rate_hz: spec.sample_rate,
            bits: spec.bits_per_sample,
            kind: if integer { "integer" } else { "float" },
        });
    }
    let samples = wav.duration() as u64;
    if samples > MAX_CLIP_SECONDS as u64 * spec.sample_rate as u64 {
        return Err(ClipError::TooLong {
            seconds: samples / spec.sample_rate as u64,
        });
    }
    let pcm = wav
        .into_samples::<i16>()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClipError::Wav(e.to_string()))?;
    if pcm.is_empty() {
        return Err(ClipError::Empty);
    }
    Ok((spec.sample_rate, pcm))
}

/// Zero crossings of the resampling filter on each side of its centre.
const SINC_ZERO_CROSSINGS: f64 = 16.0;

/// Converts mono PCM at `from_hz` to [`CLIP_RATE_HZ`] with a Blackman-windowed sinc low-pass
/// at 90% of the lower Nyquist frequency (3.6 kHz when downsampling). Cold path: a whole clip
/// at once, never per frame. The output starts at the input's first sample (no delay).
///
/// Output sample n sits at input position n·M/L (M/L = `from_hz`/8000 in lowest terms), so
/// its fractional part takes only L values: the filter is tabulated once per phase (L × ~100
/// taps from 22.05 kHz, L = 160) and each output sample is then a dot product. Rates whose L
/// would make the table large are filtered directly.
pub fn resample_to_clip_rate(pcm: &[i16], from_hz: u32) -> Vec<i16> {
    if from_hz == CLIP_RATE_HZ || pcm.is_empty() || from_hz == 0 {
        return pcm.to_vec();
    }
    let gcd = {
        let (mut a, mut b) = (from_hz as u64, CLIP_RATE_HZ as u64);
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let (m, l) = (from_hz as u64 / gcd, CLIP_RATE_HZ as u64 / gcd);
    let step = from_hz as f64 / CLIP_RATE_HZ as f64; // input samples per output sample
                                                     // Cut-off relative to the input's Nyquist frequency.
    let cutoff = 0.9 * (1.0 / step).min(1.0);
    let half = SINC_ZERO_CROSSINGS / cutoff; // the filter's half width, in input samples
    let reach = half.ceil() as i64;
    let taps = (2 * reach + 1) as usize;
    let tap = |d: f64| {
        if d.abs() >= half {
            return 0.0;
        }
        let u = d * cutoff;
        let sinc = if u.abs() < 1e-9 {
            1.0
        } else {
            (std::f64::consts::PI * u).sin() / (std::f64::consts::PI * u)
        };
        let v = d / half;
        let window = 0.42
            + 0.5 * (std::f64::consts::PI * v).cos()
            + 0.08 * (2.0 * std::f64::consts::PI * v).cos();
        cutoff * sinc * window
    };
    // Per phase p (x = i + p/L), the weight of input sample i + j - reach.
    let table: Option<Vec<f64>> = (l <= 1024).then(|| {
        (0..l)
            .flat_map(|p| (0..taps).map(move |j| (p, j)))
            .map(|(p, j)| tap(p as f64 / l as f64 - (j as i64 - reach) as f64))
            .collect()
    });
    let out_len = ((pcm.len() as u64 * CLIP_RATE_HZ as u64).div_ceil(from_hz as u64)) as usize;
    let mut out = Vec::with_capacity(out_len);
    for n in 0..out_len as u64 {
        let (i, p) = ((n * m / l) as i64, n * m % l);
        let mut acc = 0.0f64;
        for j in 0..taps {
            let k = i + j as i64 - reach;
            let Some(&s) = usize::try_from(k).ok().and_then(|k| pcm.get(k)) else {
                continue;
            };
            let w = match &table {
                Some(t) => t[p as usize * taps + j],
                None => tap(p as f64 / l as f64 - (j as i64 - reach) as f64),
            };
            acc += s as f64 * w;
        }
        // `as` saturates: an overshoot past full scale clips instead of wrapping.
        out.push(acc.round() as i16);
    }
    out
}

/// Cuts leading and trailing near-silence (|sample| below `threshold`) from speech, keeping
/// `margin` samples on each side, so that phrases played back to back sound like one sentence.
/// All-quiet input gives an empty clip.
pub fn trim_silence(pcm: &[i16], threshold: u16, margin: usize) -> &[i16] {
    let loud = |s: &i16| s.unsigned_abs() >= threshold;
    let Some(first) = pcm.iter().position(loud) else {
        return &[];
    };
    // A loud sample exists, so rposition finds one too.
    let last = pcm.iter().rposition(loud).unwrap_or(first);
    &pcm[first.saturating_sub(margin)..(last + 1 + margin).min(pcm.len())]
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

    /// RMS of a sine's samples away from the ends.
    fn rms(pcm: &[i16]) -> f64 {
        let mid = &pcm[pcm.len() / 4..pcm.len() * 3 / 4];
        (mid.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / mid.len() as f64).sqrt()
    }

    fn sine(hz: f64, rate: u32, seconds: f64) -> Vec<i16> {
        (0..(rate as f64 * seconds) as usize)
            .map(|i| {
                (10_000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / rate as f64).sin()) as i16
            })
            .collect()
    }

    #[test]
    fn speech_at_22050_hz_resamples_to_8k_keeping_the_band_and_removing_what_would_alias() {
        // A 1 kHz tone keeps its level and frequency.
        let out = resample_to_clip_rate(&sine(1000.0, 22_050, 0.5), 22_050);
        assert_eq!(out.len(), 4000);
        let level = rms(&out) / (10_000.0 / 2f64.sqrt());
        assert!((0.97..1.03).contains(&level), "{level}");
        let reference = sine(1000.0, 8000, 0.5);
        let err: f64 = out[1000..3000]
            .iter()
            .zip(&reference[1000..3000])
            .map(|(&a, &b)| (a as f64 - b as f64).abs())
            .fold(0.0, f64::max);
        assert!(err < 300.0, "{err}");
        // 6 kHz would fold to 2 kHz at 8 kHz: it is filtered out instead (> 40 dB down).
        let out = resample_to_clip_rate(&sine(6000.0, 22_050, 0.5), 22_050);
        assert!(rms(&out) < 70.0, "{}", rms(&out));
        // A rate with no small common factor with 8 kHz is filtered directly, same result.
        let out = resample_to_clip_rate(&sine(1000.0, 8_001, 0.5), 8_001);
        let level = rms(&out) / (10_000.0 / 2f64.sqrt());
        assert!((0.97..1.03).contains(&level), "{level}");
        // Already 8 kHz: unchanged.
        assert_eq!(resample_to_clip_rate(&[1, 2, 3], 8000), [1, 2, 3]);
    }

    #[test]
    fn speech_wav_at_any_rate_is_read_and_silence_is_trimmed() {
        use hound::SampleFormat::Int;
        let bytes = wav_bytes(spec(1, 22_050, 16, Int), &[0, 5, 900, -800, 3, 0, 0]);
        let (rate, pcm) = read_speech_wav(Cursor::new(bytes)).unwrap();
        assert_eq!(
            (rate, pcm.as_slice()),
            (22_050, &[0, 5, 900, -800, 3, 0, 0][..])
        );
        assert_eq!(trim_silence(&pcm, 100, 1), &[5, 900, -800, 3]);
        assert_eq!(trim_silence(&pcm, 100, 10), pcm.as_slice());
        assert!(trim_silence(&[1, -2, 3], 100, 5).is_empty());
        let stereo = wav_bytes(spec(2, 22_050, 16, Int), &[0, 0]);
        assert!(matches!(
            read_speech_wav(Cursor::new(stereo)),
            Err(ClipError::Format { channels: 2, .. })
        ));
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
