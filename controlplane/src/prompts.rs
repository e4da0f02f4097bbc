//! Spoken prompts for queue announcements ("You are caller number three. Your estimated wait
//! is about five minutes."): the phrases, how an announcement is put together from them, and
//! rendering them at start.
//!
//! Rendering is the cold path: each phrase is spoken by `espeak-ng` (a child process: it is
//! GPL-3, so it is never linked), read back at its own rate (22.05 kHz), resampled to 8 kHz,
//! trimmed of leading and trailing silence and cached as an 8 kHz WAV under
//! `<data_dir>/prompts/`, named by a hash of the voice and text; a later start reads the cache
//! and runs no synthesiser. The phrases become extra data-plane clips after the hold music, and
//! an announcement is a [`ClipSequence`] of them that the data plane plays once before going
//! back to the music. Without `espeak-ng` the appliance runs with music only.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tandem_dataplane::api::ClipSequence;
use tandem_dataplane::Clip;
use tandem_media::clip::{self as media_clip, CLIP_RATE_HZ};

/// The synthesiser's voice and speed (words per minute).
const VOICE: &str = "en-us";
const SPEED_WPM: u32 = 150;
/// Bumped when rendering changes, so that cached prompts are rendered again.
const RENDER_VERSION: u32 = 1;

/// A short pause: before an announcement (after the music) and after it.
const PAUSE_MS: usize = 400;
/// Silence after each phrase, so that phrases played back to back sound like one sentence.
const GAP_MS: usize = 120;

/// The phrases, in clip order from [`PromptClips::first`]. Index 0 is a pause (silence, not
/// spoken); 2..=21 are the numbers one to twenty; the last is a queue's greeting.
pub const PHRASES: [&str; 34] = [
    "",
    "You are caller number",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
    "thirty",
    "forty",
    "fifty",
    "sixty",
    "There are at least twenty callers ahead of you.",
    "Your estimated wait is",
    "less than one minute.",
    "about",
    "minute.",
    "minutes.",
    "more than one hour.",
    "Thank you for calling. Please hold.",
];

const PAUSE: u16 = 0;
const CALLER_NUMBER: u16 = 1;
/// `NUMBER + n - 1` says n, for n in 1..=20.
const NUMBER: u16 = 2;
/// `TENS + (n / 10 - 3)` says n, for n in 30, 40, 50, 60.
const TENS: u16 = 22;
const MANY_AHEAD: u16 = 26;
const WAIT_IS: u16 = 27;
const LESS_THAN_A_MINUTE: u16 = 28;
const ABOUT: u16 = 29;
const MINUTE: u16 = 30;
const MINUTES: u16 = 31;
const OVER_AN_HOUR: u16 = 32;
const GREETING: u16 = 33;

/// Where the rendered phrases sit among the data plane's clips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptClips {
    /// The clip index of [`PHRASES`]`[0]`; the others follow in order.
    pub first: u16,
    /// How long [`PromptClips::greeting`] plays, in milliseconds.
    pub greeting_ms: u32,
}

impl PromptClips {
    /// A queue's greeting as the data plane plays it once (pause, the greeting, pause), and
    /// how long that takes.
    pub fn greeting(&self) -> Option<(ClipSequence, std::time::Duration)> {
        let clips = [PAUSE, GREETING, PAUSE].map(|p| self.first + p);
        let played = std::time::Duration::from_millis(self.greeting_ms.into());
        Some((ClipSequence::new(&clips)?, played))
    }

    /// The clips of one announcement: the caller's position (when given; 1 is first in line)
    /// and the wait estimate (when given). None when there is nothing to say.
    ///
    /// Positions 1–20 are said as numbers, beyond that "at least twenty callers ahead". Waits
    /// under a minute are "less than one minute", then "about N minutes" to the nearest minute
    /// up to 20, to the nearest ten up to 60, and "more than one hour" beyond.
    pub fn announcement(&self, position: Option<u32>, ewt_ms: Option<u64>) -> Option<ClipSequence> {
        let mut phrases = [PAUSE; tandem_dataplane::api::MAX_SEQUENCE];
        let mut n = 1; // the leading pause
        let mut say = |p: u16| {
            phrases[n] = p;
            n += 1;
        };
        match position {
            Some(p @ 1..=20) => {
                say(CALLER_NUMBER);
                say(NUMBER + p as u16 - 1);
            }
            Some(p) if p > 20 => say(MANY_AHEAD),
            _ => {}
        }
        if let Some(ms) = ewt_ms {
            say(WAIT_IS);
            let minutes = ms.saturating_add(30_000) / 60_000;
            match minutes {
                _ if ms < 60_000 => say(LESS_THAN_A_MINUTE),
                1..=20 => {
                    say(ABOUT);
                    say(NUMBER + minutes as u16 - 1);
                    say(if minutes == 1 { MINUTE } else { MINUTES });
                }
                21..=60 => {
                    let tens = (minutes + 5) / 10;
                    say(ABOUT);
                    say(if tens == 2 {
                        NUMBER + 19
                    } else {
                        TENS + tens as u16 - 3
                    });
                    say(MINUTES);
                }
                _ => say(OVER_AN_HOUR),
            }
        }
        if n == 1 {
            return None;
        }
        // At most: pause, caller number, N, wait is, about, N, minutes, pause.
        phrases[n] = PAUSE;
        n += 1;
        let clips: Vec<u16> = phrases[..n].iter().map(|p| self.first + p).collect();
        ClipSequence::new(&clips)
    }
}

/// Why no prompts could be rendered.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("{program} is not installed (Debian package espeak-ng)")]
    Missing { program: String },
    #[error("{0}")]
    Failed(String),
}

/// Renders (or reads from the cache) every phrase and appends them to `clips`; returns where
/// they start. Without `espeak-ng`, or when rendering fails, logs one warning and returns None:
/// queues then play music only.
pub fn load(clips: &mut Vec<Arc<Clip>>, data_dir: &Path) -> Option<PromptClips> {
    let started = Instant::now();
    let first = u16::try_from(clips.len()).ok()?;
    match render("espeak-ng", &data_dir.join("prompts")) {
        Ok(rendered) => {
            tracing::info!(
                "queue announcements: {} prompts ready in {} ms",
                rendered.len(),
                started.elapsed().as_millis()
            );
            let ms = |p: u16| rendered.get(usize::from(p)).map_or(0, |c| c.duration_ms());
            let greeting_ms = u32::try_from(2 * ms(PAUSE) + ms(GREETING)).ok()?;
            clips.extend(rendered);
            Some(PromptClips { first, greeting_ms })
        }
        Err(e) => {
            tracing::warn!("queue announcements are off, callers hear music only: {e}");
            None
        }
    }
}

/// The cache file of one phrase.
fn cache_path(cache: &Path, text: &str) -> PathBuf {
    // FNV-1a 64: stable across releases and platforms, unlike `DefaultHasher`.
    let key = format!("{RENDER_VERSION}\n{VOICE}\n{SPEED_WPM}\n{text}");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    cache.join(format!("{h:016x}.wav"))
}

/// Every phrase of [`PHRASES`] as a clip, in order, rendered with `program` where the cache in
/// `cache` lacks it. The synthesiser runs once per missing phrase, all at once.
pub fn render(program: &str, cache: &Path) -> Result<Vec<Arc<Clip>>, PromptError> {
    let failed = PromptError::Failed;
    // Cached phrases: read back; the rest are spoken.
    let mut pcm: Vec<Option<Vec<i16>>> = PHRASES
        .iter()
        .map(|text| {
            if text.is_empty() {
                return Some(vec![0; PAUSE_MS * CLIP_RATE_HZ as usize / 1000]);
            }
            media_clip::read_wav_file(&cache_path(cache, text)).ok()
        })
        .collect();
    if pcm.iter().any(Option::is_none) {
        std::fs::create_dir_all(cache)
            .map_err(|e| failed(format!("creating {}: {e}", cache.display())))?;
        let mut children = Vec::new();
        for (i, text) in PHRASES.iter().enumerate() {
            if pcm[i].is_some() {
                continue;
            }
            let out = cache_path(cache, text).with_extension("speech.wav");
            let child = std::process::Command::new(program)
                .args(["-v", VOICE, "-s", &SPEED_WPM.to_string(), "-w"])
                .arg(&out)
                .arg(text)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => PromptError::Missing {
                        program: program.into(),
                    },
                    _ => failed(format!("starting {program}: {e}")),
                })?;
            children.push((i, out, child));
        }
        for (i, out, child) in children {
            let text = PHRASES[i];
            let done = child
                .wait_with_output()
                .map_err(|e| failed(format!("{program} {text:?}: {e}")))?;
            if !done.status.success() {
                let why = String::from_utf8_lossy(&done.stderr);
                return Err(failed(format!(
                    "{program} {text:?}: {}: {}",
                    done.status,
                    why.trim()
                )));
            }
            let read = std::fs::File::open(&out)
                .map_err(|e| failed(format!("{}: {e}", out.display())))
                .and_then(|f| {
                    media_clip::read_speech_wav(std::io::BufReader::new(f))
                        .map_err(|e| failed(format!("{program} {text:?}: {e}")))
                });
            let _ = std::fs::remove_file(&out);
            let (rate_hz, speech) = read?;
            let phrase = speak(&speech, rate_hz)
                .ok_or_else(|| failed(format!("{program} {text:?}: only silence")))?;
            // The cache is an optimisation: a read-only data directory only costs a render.
            if let Err(e) = std::fs::File::create(cache_path(cache, text))
                .map_err(|e| e.to_string())
                .and_then(|f| {
                    media_clip::write_wav(std::io::BufWriter::new(f), &phrase)
                        .map_err(|e| e.to_string())
                })
            {
                tracing::debug!("prompt cache {}: {e}", cache.display());
            }
            pcm[i] = Some(phrase);
        }
    }
    PHRASES
        .iter()
        .zip(pcm)
        .map(|(text, pcm)| {
            // Every slot was filled above, or the function returned.
            let pcm = pcm.unwrap_or_default();
            Clip::from_pcm(format!("prompt {text:?}"), &pcm)
                .map(Arc::new)
                .map_err(|e| failed(format!("prompt {text:?}: {e}")))
        })
        .collect()
}

/// A phrase as spoken by the synthesiser → an 8 kHz clip: resampled, trimmed of its leading and
/// trailing silence (keeping 10 ms) and followed by the gap between phrases. None if silent.
fn speak(speech: &[i16], rate_hz: u32) -> Option<Vec<i16>> {
    let at_8k = media_clip::resample_to_clip_rate(speech, rate_hz);
    let margin = CLIP_RATE_HZ as usize / 100;
    let mut phrase = media_clip::trim_silence(&at_8k, 250, margin).to_vec();
    if phrase.is_empty() {
        return None;
    }
    phrase.resize(phrase.len() + GAP_MS * CLIP_RATE_HZ as usize / 1000, 0);
    Some(phrase)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(seq: Option<ClipSequence>) -> Vec<&'static str> {
        let p = PromptClips {
            first: 5,
            greeting_ms: 0,
        };
        let seq = seq.expect("an announcement");
        seq.as_slice()
            .iter()
            .map(|&c| match PHRASES[(c - p.first) as usize] {
                "" => "|",
                w => w,
            })
            .collect()
    }

    #[test]
    fn announcements_say_the_position_and_the_rounded_wait() {
        let p = PromptClips {
            first: 5,
            greeting_ms: 0,
        };
        let say = |pos, ewt| words(p.announcement(pos, ewt)).join(" ");
        assert_eq!(
            say(Some(3), Some(5 * 60_000 + 20_000)),
            "| You are caller number three Your estimated wait is about five minutes. |"
        );
        assert_eq!(say(Some(1), None), "| You are caller number one |");
        assert_eq!(say(Some(20), None), "| You are caller number twenty |");
        assert_eq!(
            say(Some(21), Some(0)),
            "| There are at least twenty callers ahead of you. Your estimated wait is less than one minute. |"
        );
        assert_eq!(
            say(None, Some(59_999)),
            "| Your estimated wait is less than one minute. |"
        );
        assert_eq!(
            say(None, Some(60_000)),
            "| Your estimated wait is about one minute. |"
        );
        assert_eq!(
            say(None, Some(90_000)),
            "| Your estimated wait is about two minutes. |"
        );
        assert_eq!(
            say(None, Some(23 * 60_000)),
            "| Your estimated wait is about twenty minutes. |"
        );
        assert_eq!(
            say(None, Some(26 * 60_000)),
            "| Your estimated wait is about thirty minutes. |"
        );
        assert_eq!(
            say(None, Some(60 * 60_000)),
            "| Your estimated wait is about sixty minutes. |"
        );
        assert_eq!(
            say(None, Some(61 * 60_000)),
            "| Your estimated wait is more than one hour. |"
        );
        assert_eq!(
            say(Some(7), Some(u64::MAX)),
            "| You are caller number seven Your estimated wait is more than one hour. |"
        );
        assert_eq!(p.announcement(None, None), None);
        assert_eq!(p.announcement(Some(0), None), None);
        // The longest fits the data plane's sequence.
        assert_eq!(
            p.announcement(Some(12), Some(12 * 60_000)).unwrap().len(),
            8
        );
    }

    #[test]
    fn without_the_synthesiser_rendering_says_so() {
        let dir = std::env::temp_dir().join(format!("tandem-prompts-{}", std::process::id()));
        let err = render("espeak-ng-not-installed", &dir).unwrap_err();
        assert!(matches!(err, PromptError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("espeak-ng"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Runs where espeak-ng is installed (scripts/setup installs it); elsewhere it only says so.
    #[test]
    fn renders_every_phrase_and_a_second_start_reads_the_cache() {
        let dir = std::env::temp_dir().join(format!("tandem-prompts-r{}", std::process::id()));
        let clips = match render("espeak-ng", &dir) {
            Err(PromptError::Missing { .. }) => {
                eprintln!("espeak-ng not installed: rendering not tested");
                return;
            }
            other => other.expect("rendered"),
        };
        assert_eq!(clips.len(), PHRASES.len());
        assert_eq!(clips[0].duration_ms(), PAUSE_MS as u64);
        for (clip, text) in clips.iter().zip(PHRASES).skip(1) {
            // A spoken word or phrase: a quarter second to a few seconds.
            assert!(
                (250..4000).contains(&clip.duration_ms()),
                "{text:?}: {} ms",
                clip.duration_ms()
            );
        }
        let cached = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(cached, PHRASES.len() - 1, "one file per spoken phrase");
        // The second time nothing is spoken: a synthesiser that does not exist is not missed.
        let again = render("espeak-ng-not-installed", &dir).expect("from the cache");
        for (a, b) in clips.iter().zip(&again) {
            assert_eq!(a.frames(), b.frames());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
