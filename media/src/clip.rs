//! Audio for playback (hold music, prompts) as 8 kHz 16-bit linear PCM: the built-in hold
//! melody, WAV files and Ogg Vorbis or Opus files ([`read_clip_file`] tells them apart by
//! their first bytes).
//!
//! This is the cold path: clips are read, decoded and synthesised once, at start, and allocate
//! freely. A WAV file must be 8 kHz mono 16-bit integer PCM; anything else is refused with an
//! error that says what the file is, rather than resampled or mixed down behind the operator's
//! back (a WAV can be written in the right format losslessly). An Ogg file is lossy and never
//! 8 kHz telephone audio to begin with, so it is mixed down to mono and resampled to 8 kHz
//! ([`resample_to_clip_rate`]) when it is loaded.
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
    /// The bytes start like an Ogg file but are not a readable Ogg Vorbis or Opus stream.
    #[error("not a readable Ogg Vorbis or Opus file: {0}")]
    Ogg(String),
    /// Neither WAV nor Ogg.
    #[error("not a WAV (RIFF) or Ogg (OggS) file: it starts with {magic:02x?}")]
    UnknownFormat {
        /// The file's first bytes (up to four).
        magic: Vec<u8>,
    },
    /// A file bigger than [`MAX_CLIP_FILE_BYTES`], refused before it is read.
    #[error("clip file is {bytes} bytes, the limit is {MAX_CLIP_FILE_BYTES}")]
    FileTooBig {
        /// Its size.
        bytes: u64,
    },
}

/// The largest clip file read: ten minutes of 48 kHz stereo 16-bit WAV is 115 MB, and of
/// Ogg Vorbis at a generous 500 kbit/s 38 MB. Ogg files are read whole into memory.
pub const MAX_CLIP_FILE_BYTES: u64 = 128 * 1024 * 1024;

/// Reads a clip from a WAV, Ogg Vorbis or Ogg Opus file, told apart by its first four bytes
/// (`RIFF`, `OggS`) and, for Ogg, its first packet: 8 kHz mono PCM, at most
/// [`MAX_CLIP_SECONDS`] long. Errors name the file.
pub fn read_clip_file(path: &Path) -> Result<Vec<i16>, ClipError> {
    let io = |source| ClipError::Io {
        path: path.display().to_string(),
        source,
    };
    let bytes = std::fs::metadata(path).map_err(io)?.len();
    if bytes > MAX_CLIP_FILE_BYTES {
        return Err(ClipError::FileTooBig { bytes });
    }
    read_clip(&std::fs::read(path).map_err(io)?)
}

#[cfg(feature = "opus")]
fn decode_ogg_opus(bytes: &[u8]) -> Result<(u32, Vec<i16>), ClipError> {
    let pcm = crate::clip_ogg::decode_ogg_opus(bytes)?;
    Ok((crate::clip_ogg::OPUS_RATE_HZ, pcm))
}

#[cfg(not(feature = "opus"))]
fn decode_ogg_opus(_: &[u8]) -> Result<(u32, Vec<i16>), ClipError> {
    Err(ClipError::Ogg(
        "Ogg Opus, and this build has no Opus decoder (feature `opus`)".into(),
    ))
}

/// Decodes a clip held in memory (see [`read_clip_file`]).
pub fn read_clip(bytes: &[u8]) -> Result<Vec<i16>, ClipError> {
    match bytes.get(..4) {
        Some(b"RIFF") => read_wav(std::io::Cursor::new(bytes)),
        Some(b"OggS") => {
            let (rate, pcm) = if crate::clip_ogg::is_ogg_opus(bytes) {
                decode_ogg_opus(bytes)?
            } else {
                crate::clip_ogg::decode_ogg_vorbis(bytes)?
            };
            let pcm = resample_to_clip_rate(&pcm, rate);
            // A rate a hair over 8 kHz can round a clip just under the limit to just over it.
            if pcm.len() > MAX_CLIP_SECONDS as usize * CLIP_RATE_HZ as usize {
                return Err(ClipError::TooLong {
                    seconds: (pcm.len() / CLIP_RATE_HZ as usize) as u64,
                });
            }
            Ok(pcm)
        }
        _ => Err(ClipError::UnknownFormat {
            magic: bytes.iter().take(4).copied().collect(),
        }),
    }
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

    use crate::clip_ogg::{edit_packets, VORBIS_SINE_440};

    /// Power of `pcm` at `hz` (Goertzel), normalised by the length.
    fn goertzel_power(pcm: &[i16], hz: f64) -> f64 {
        let coeff = 2.0 * (2.0 * std::f64::consts::PI * hz / CLIP_RATE_HZ as f64).cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &x in pcm {
            let s0 = x as f64 + coeff * s1 - s2;
            (s2, s1) = (s1, s0);
        }
        (s1 * s1 + s2 * s2 - coeff * s1 * s2) / pcm.len() as f64
    }

    /// `pcm` is 0.5 s at 8 kHz of a 440 Hz tone and little else, at half scale: what the test
    /// files hold in both channels survives the mix-down and the resampler.
    fn assert_half_scale_440_for_half_a_second(pcm: &[i16]) {
        assert_eq!(pcm.len(), 4000);
        let middle = &pcm[1000..3000];
        let at_440 = goertzel_power(middle, 440.0);
        for other in [300.0, 600.0, 1000.0, 2000.0] {
            let ratio = at_440 / goertzel_power(middle, other);
            assert!(ratio > 1000.0, "440 Hz vs {other} Hz: {ratio}");
        }
        let level = rms(pcm) / (16384.0 / 2f64.sqrt());
        assert!((0.9..1.1).contains(&level), "{level}");
    }

    #[test]
    fn ogg_vorbis_is_mixed_down_and_resampled_to_8k_keeping_its_tone() {
        let pcm = read_clip(VORBIS_SINE_440).unwrap();
        // 22050 samples at 44.1 kHz are 4000 at 8 kHz.
        assert_half_scale_440_for_half_a_second(&pcm);
        // The same through a file, told apart from WAV by its first bytes.
        let dir = std::env::temp_dir().join(format!("tandem-clip-ogg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ogg = dir.join("music.ogg");
        std::fs::write(&ogg, VORBIS_SINE_440).unwrap();
        assert_eq!(read_clip_file(&ogg).unwrap(), pcm);
        let wav = dir.join("music.wav");
        let mut buf = Cursor::new(Vec::new());
        write_wav(&mut buf, &pcm).unwrap();
        std::fs::write(&wav, buf.into_inner()).unwrap();
        assert_eq!(read_clip_file(&wav).unwrap(), pcm);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `seconds` of a 440 Hz sine at half scale in both channels, 48 kHz stereo Ogg Opus as
    /// RFC 7845 lays it out, the header's output gain set to `gain_q8` (dB in Q7.8) and its
    /// channel count to `channels_field` (2 but to test refusals).
    #[cfg(feature = "opus")]
    fn ogg_opus_sine_440(seconds: f64, gain_q8: i16, channels_field: u8) -> Vec<u8> {
        let mut encoder =
            opus::Encoder::new(48_000, opus::Channels::Stereo, opus::Application::Audio).unwrap();
        let pre_skip = encoder.get_lookahead().unwrap() as u16;
        let mut head = b"OpusHead\x01".to_vec();
        head.push(channels_field);
        head.extend_from_slice(&pre_skip.to_le_bytes());
        head.extend_from_slice(&48_000u32.to_le_bytes());
        head.extend_from_slice(&gain_q8.to_le_bytes());
        head.push(0); // mapping family 0: mono or stereo
        let mut tags = b"OpusTags".to_vec();
        tags.extend_from_slice(&4u32.to_le_bytes());
        tags.extend_from_slice(b"test");
        tags.extend_from_slice(&0u32.to_le_bytes());
        let samples = (48_000.0 * seconds) as usize;
        let sine: Vec<i16> = (0..samples + pre_skip as usize)
            .flat_map(|i| {
                let s = if i < samples {
                    (16384.0 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / 48_000.0).sin())
                        as i16
                } else {
                    0
                };
                [s, s]
            })
            .collect();
        let frames: Vec<&[i16]> = sine.chunks(960 * 2).collect();
        let mut out = Vec::new();
        let mut writer = ogg::PacketWriter::new(&mut out);
        use ogg::PacketWriteEndInfo::{EndPage, EndStream, NormalPacket};
        writer
            .write_packet(head.into_boxed_slice(), 7, EndPage, 0)
            .unwrap();
        writer
            .write_packet(tags.into_boxed_slice(), 7, EndPage, 0)
            .unwrap();
        for (i, frame) in frames.iter().enumerate() {
            let mut full = frame.to_vec();
            full.resize(960 * 2, 0);
            let packet = encoder.encode_vec(&full, 4000).unwrap();
            let last = i + 1 == frames.len();
            let granule = if last {
                pre_skip as u64 + samples as u64
            } else {
                (i as u64 + 1) * 960
            };
            let end = if last { EndStream } else { NormalPacket };
            writer
                .write_packet(packet.into_boxed_slice(), 7, end, granule)
                .unwrap();
        }
        drop(writer);
        out
    }

    #[cfg(feature = "opus")]
    #[test]
    fn ogg_opus_is_decoded_trimmed_mixed_down_and_resampled_to_8k() {
        let file = ogg_opus_sine_440(0.5, 0, 2);
        let pcm = read_clip(&file).unwrap();
        // 24000 samples at 48 kHz, the pre-skip dropped and the end trimmed: 4000 at 8 kHz.
        assert_half_scale_440_for_half_a_second(&pcm);
        // The header's output gain is applied: -6.02 dB halves the level.
        let quieter = read_clip(&ogg_opus_sine_440(0.5, -6 * 256 - 5, 2)).unwrap();
        let ratio = rms(&quieter) / rms(&pcm);
        assert!((0.48..0.52).contains(&ratio), "{ratio}");
        // Hostile Opus: truncations are errors or shorter clips, never panics.
        for cut in (0..file.len()).step_by(7) {
            if let Ok(pcm) = read_clip(&file[..cut]) {
                assert!(pcm.len() <= 4000);
            }
        }
        let err = read_clip(&ogg_opus_sine_440(0.1, 0, 6))
            .unwrap_err()
            .to_string();
        assert!(err.contains("only mono and stereo"), "{err}");
    }

    #[test]
    fn files_neither_wav_nor_ogg_and_broken_ogg_are_refused_with_the_reason() {
        let err = read_clip(b"ID3\x04 an mp3").unwrap_err();
        assert!(
            err.to_string()
                .contains("not a WAV (RIFF) or Ogg (OggS) file: it starts with [49, 44, 33, 04]"),
            "{err}"
        );
        assert!(matches!(
            read_clip(b""),
            Err(ClipError::UnknownFormat { .. })
        ));
        let err = read_clip(b"OggS but nothing after").unwrap_err();
        assert!(matches!(err, ClipError::Ogg(_)), "{err}");
        assert!(err
            .to_string()
            .starts_with("not a readable Ogg Vorbis or Opus file"));
        let missing = read_clip_file(Path::new("/nonexistent/hold.ogg")).unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/hold.ogg"));
        // Every truncation of a good file is an error or a shorter clip, never a panic.
        for cut in 0..VORBIS_SINE_440.len() {
            if let Ok(pcm) = read_clip(&VORBIS_SINE_440[..cut]) {
                assert!(pcm.len() <= 4000);
            }
        }
    }

    /// `file`'s Ogg packets with bytes changed (packet, byte, value; indices taken modulo),
    /// behind good checksums.
    fn damage_packets(file: &[u8], changes: &[(usize, usize, u8)]) -> Vec<u8> {
        edit_packets(file, |packets| {
            for &(packet, at, value) in changes {
                let count = packets.len();
                let data = &mut packets[packet % count].data;
                if !data.is_empty() {
                    let at = at % data.len();
                    data[at] = value;
                }
            }
        })
    }

    /// Where a Vorbis comment header keeps its comment count: after the packet type and magic
    /// (7 bytes), the vendor string's length (4) and the vendor string.
    fn comment_count_at(comment: &[u8]) -> usize {
        11 + u32::from_le_bytes(comment[7..11].try_into().unwrap()) as usize
    }

    #[test]
    fn a_vorbis_floor_that_wraps_lewtons_arithmetic_decodes_without_a_panic() {
        // The test file with a few bytes of its audio packets changed (found by the `clip` fuzz
        // target, checksums fixed since): a floor 1 point lands outside its range, lewton's
        // floor arithmetic wraps (a panic where overflow checks are on, hence the workspace
        // turns them off for lewton) and clamps the point before it indexes anything. Decoding
        // goes on past that packet to a later one the fuzzer turned into a header.
        let file = include_bytes!("../tests/data/vorbis_floor1_wraps.ogg");
        let err = read_clip(file).unwrap_err().to_string();
        assert!(
            err.contains("a header packet among the audio packets"),
            "{err}"
        );
    }

    #[test]
    fn a_hostile_vorbis_comment_header_is_checked_for_its_magic_and_never_parsed() {
        let good = read_clip(VORBIS_SINE_440).unwrap();
        // 1,701,670,511 ("ooem" read as a count) is the comment count that made lewton's own
        // comment reader reserve 81,680,184,528 bytes and abort the process; u32::MAX the most.
        for count in [1_701_670_511u32, u32::MAX] {
            let file = edit_packets(VORBIS_SINE_440, |packets| {
                let comment = &mut packets[1].data;
                let at = comment_count_at(comment);
                comment[at..at + 4].copy_from_slice(&count.to_le_bytes());
            });
            assert_eq!(read_clip(&file).unwrap(), good, "count {count}");
        }
        // A vendor string longer than the file, likewise.
        let file = edit_packets(VORBIS_SINE_440, |packets| {
            packets[1].data[7..11].copy_from_slice(&u32::MAX.to_le_bytes());
        });
        assert_eq!(read_clip(&file).unwrap(), good);
        // A second packet that is no comment header is refused.
        let file = edit_packets(VORBIS_SINE_440, |packets| packets[1].data[0] = 0x05);
        let err = read_clip(&file).unwrap_err().to_string();
        assert!(err.contains("not a comment header"), "{err}");
    }

    #[cfg(feature = "opus")]
    static OGG_OPUS_SINE: std::sync::LazyLock<Vec<u8>> =
        std::sync::LazyLock::new(|| ogg_opus_sine_440(0.2, 0, 2));

    proptest::proptest! {
        #[test]
        fn hostile_clip_bytes_are_errors_not_panics(
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            changes in proptest::collection::vec(
                (0..64usize, 0..8192usize, proptest::prelude::any::<u8>()), 0..8),
            header_words in proptest::collection::vec(
                (0..3usize, 0..64usize, proptest::prop_oneof![
                    proptest::strategy::Just(u32::MAX),
                    proptest::strategy::Just(0x00ff_ffff),
                    proptest::prelude::any::<u32>(),
                ]), 0..3),
            cut in proptest::option::of(0..8192usize),
        ) {
            // Random bytes, random bytes behind each magic, and good files with bytes of their
            // packets changed, with 32-bit counts and lengths (huge ones more often than chance
            // would give) written over the fields of their header packets (the first three;
            // indices past a packet's end wrap), and cut short.
            let _ = read_clip(&junk);
            for magic in [&b"RIFF"[..], b"OggS"] {
                let _ = read_clip(&[magic, &junk].concat());
            }
            #[cfg(feature = "opus")]
            let good: [&[u8]; 2] = [VORBIS_SINE_440, &OGG_OPUS_SINE];
            #[cfg(not(feature = "opus"))]
            let good: [&[u8]; 1] = [VORBIS_SINE_440];
            for file in good {
                let mut file = edit_packets(&damage_packets(file, &changes), |packets| {
                    for &(packet, at, word) in &header_words {
                        let data = &mut packets[packet].data;
                        if data.len() >= 4 {
                            let at = at % (data.len() - 3);
                            data[at..at + 4].copy_from_slice(&word.to_le_bytes());
                        }
                    }
                });
                if let Some(cut) = cut {
                    file.truncate(cut % (file.len() + 1));
                }
                if let Ok(pcm) = read_clip(&file) {
                    proptest::prop_assert!(pcm.len() <= MAX_CLIP_SECONDS as usize * 8000);
                }
            }
        }
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
