//! Clips the cores play (hold music): G.711 frames encoded once at start, in both laws, and
//! shared read-only by every core. Playing one is a copy of 160 bytes per 20 ms, no DSP.

use std::path::Path;
use std::sync::{Arc, LazyLock};
pub use tandem_media::clip::ClipError;
pub use tandem_media::g711::Law;

/// Samples in one 20 ms frame at 8 kHz: one RTP packet's payload and timestamp step.
pub const FRAME_SAMPLES: usize = 160;

/// An audio clip as G.711 frames. Immutable once built.
pub struct Clip {
    name: String,
    frames: u32,
    pcmu: Box<[u8]>,
    pcma: Box<[u8]>,
}

impl std::fmt::Debug for Clip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clip")
            .field("name", &self.name)
            .field("frames", &self.frames)
            .finish()
    }
}

static HOLD_MUSIC: LazyLock<Arc<Clip>> = LazyLock::new(|| {
    let pcm = tandem_media::clip::hold_melody();
    // The melody is several seconds long: never empty, never over the limit.
    Arc::new(Clip::from_pcm("hold-melody", &pcm).expect("built-in melody"))
});

impl Clip {
    /// Encodes 8 kHz linear PCM. A last partial frame is completed with silence.
    pub fn from_pcm(name: impl Into<String>, pcm: &[i16]) -> Result<Clip, ClipError> {
        if pcm.is_empty() {
            return Err(ClipError::Empty);
        }
        let max = tandem_media::clip::MAX_CLIP_SECONDS as usize
            * tandem_media::clip::CLIP_RATE_HZ as usize;
        if pcm.len() > max {
            return Err(ClipError::TooLong {
                seconds: (pcm.len() / tandem_media::clip::CLIP_RATE_HZ as usize) as u64,
            });
        }
        let frames = pcm.len().div_ceil(FRAME_SAMPLES);
        let encode = |law: Law| {
            let mut out = vec![law.silence(); frames * FRAME_SAMPLES].into_boxed_slice();
            law.encode(pcm, &mut out);
            out
        };
        Ok(Clip {
            name: name.into(),
            frames: frames as u32,
            pcmu: encode(Law::Ulaw),
            pcma: encode(Law::Alaw),
        })
    }

    /// Reads a WAV (8 kHz mono 16-bit PCM; other WAV formats are refused) or Ogg Vorbis or Opus
    /// (one logical stream, 8 to 96 kHz, mixed down and resampled once, here) file; named after
    /// it.
    pub fn from_file(path: &Path) -> Result<Clip, ClipError> {
        let pcm = tandem_media::clip::read_clip_file(path)?;
        Clip::from_pcm(path.display().to_string(), &pcm)
    }

    /// The built-in hold melody (when no file is configured), built once per process.
    pub fn hold_music() -> Arc<Clip> {
        HOLD_MUSIC.clone()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Length in 20 ms frames (at least one).
    pub fn frames(&self) -> u32 {
        self.frames
    }

    pub fn duration_ms(&self) -> u64 {
        self.frames as u64 * 20
    }

    /// Frame `i` (taken modulo the clip's length) in the law of `law`.
    pub fn frame(&self, law: Law, i: u32) -> &[u8] {
        let start = (i % self.frames) as usize * FRAME_SAMPLES;
        let all = match law {
            Law::Ulaw => &self.pcmu,
            Law::Alaw => &self.pcma,
        };
        &all[start..start + FRAME_SAMPLES]
    }
}

/// The G.711 law of a static payload type: 0 PCMU, 8 PCMA. Playback supports no other.
pub fn law_of_payload_type(pt: u8) -> Option<Law> {
    match pt {
        0 => Some(Law::Ulaw),
        8 => Some(Law::Alaw),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_both_laws_and_pads_the_last_frame_with_silence() {
        let pcm: Vec<i16> = (0..400).map(|i| (i * 50) as i16).collect();
        let c = Clip::from_pcm("ramp", &pcm).unwrap();
        assert_eq!(c.frames(), 3);
        assert_eq!(c.duration_ms(), 60);
        assert_eq!(
            c.frame(Law::Ulaw, 0)[5],
            tandem_media::g711::ulaw_encode(250)
        );
        assert_eq!(
            c.frame(Law::Alaw, 1)[0],
            tandem_media::g711::alaw_encode(8000)
        );
        assert!(c.frame(Law::Ulaw, 2)[80..].iter().all(|&b| b == 0xff));
        assert!(c.frame(Law::Alaw, 2)[80..].iter().all(|&b| b == 0xd5));
        // Indices wrap: playing loops.
        assert_eq!(c.frame(Law::Ulaw, 3), c.frame(Law::Ulaw, 0));
        assert!(matches!(Clip::from_pcm("x", &[]), Err(ClipError::Empty)));
    }

    #[test]
    fn hold_music_is_shared_and_file_errors_name_the_file() {
        assert!(Arc::ptr_eq(&Clip::hold_music(), &Clip::hold_music()));
        assert!(Clip::hold_music().frames() > 100);
        let err = Clip::from_file(Path::new("/nonexistent/music.wav")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/music.wav"), "{err}");
        assert_eq!(law_of_payload_type(0), Some(Law::Ulaw));
        assert_eq!(law_of_payload_type(8), Some(Law::Alaw));
        assert_eq!(law_of_payload_type(9), None);
    }
}
