//! Sample-rate conversion between 8, 16 and 48 kHz, one fixed frame at a time.
//!
//! Wraps `rubato`'s synchronous FFT resampler (fixed input and output chunk) with `f32`
//! buffers allocated at construction; `process` converts `i16` in and out without allocating.
//! The FFT resampler delays the signal by [`Resampler::delay_samples`] output samples.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler as _};
use thiserror::Error;

/// Rates supported.
pub const RATES_HZ: [u32; 3] = [8000, 16000, 48000];

/// Why a resampler could not be built or run.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResampleError {
    /// A rate outside [`RATES_HZ`], or a frame that is not a whole number of samples at both.
    #[error("unsupported conversion {from_hz} Hz -> {to_hz} Hz with {frame_ms} ms frames")]
    Unsupported {
        /// Input rate.
        from_hz: u32,
        /// Output rate.
        to_hz: u32,
        /// Frame duration.
        frame_ms: u32,
    },
    /// The input frame has the wrong length.
    #[error("input of {got} samples, resampler takes {want}")]
    InputLength {
        /// Samples given.
        got: usize,
        /// Samples per input frame.
        want: usize,
    },
    /// The output buffer is shorter than one output frame.
    #[error("output buffer of {have} samples, need {need}")]
    OutputTooSmall {
        /// Samples needed.
        need: usize,
        /// Buffer length.
        have: usize,
    },
    /// rubato refused (construction or processing), with its message.
    #[error("rubato: {0}")]
    Rubato(String),
}

/// Mono resampler from one rate to another, frame by frame.
pub struct Resampler {
    inner: Fft<f32>,
    input: Vec<f32>,
    output: Vec<f32>,
    in_frame: usize,
    out_frame: usize,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("in_frame", &self.in_frame)
            .field("out_frame", &self.out_frame)
            .finish()
    }
}

impl Resampler {
    /// A resampler taking frames of `frame_ms` at `from_hz` and giving frames of `frame_ms` at
    /// `to_hz`.
    pub fn new(from_hz: u32, to_hz: u32, frame_ms: u32) -> Result<Self, ResampleError> {
        let unsupported = ResampleError::Unsupported {
            from_hz,
            to_hz,
            frame_ms,
        };
        let frame = |rate: u32| {
            let n = rate as u64 * frame_ms as u64;
            (frame_ms > 0 && n.is_multiple_of(1000)).then_some((n / 1000) as usize)
        };
        if !RATES_HZ.contains(&from_hz) || !RATES_HZ.contains(&to_hz) {
            return Err(unsupported);
        }
        let (Some(in_frame), Some(out_frame)) = (frame(from_hz), frame(to_hz)) else {
            return Err(unsupported);
        };
        let inner = Fft::<f32>::new(
            from_hz as usize,
            to_hz as usize,
            in_frame,
            1,
            FixedSync::Both,
        )
        .map_err(|e| ResampleError::Rubato(e.to_string()))?;
        // With both sides fixed rubato may round the chunk; we need exactly one frame.
        if inner.input_frames_next() != in_frame || inner.output_frames_next() != out_frame {
            return Err(unsupported);
        }
        Ok(Resampler {
            inner,
            input: vec![0.0; in_frame],
            output: vec![0.0; out_frame],
            in_frame,
            out_frame,
        })
    }

    /// Input samples per frame.
    pub fn input_frame(&self) -> usize {
        self.in_frame
    }

    /// Output samples per frame.
    pub fn output_frame(&self) -> usize {
        self.out_frame
    }

    /// How many output samples the signal is delayed by.
    pub fn delay_samples(&self) -> usize {
        self.inner.output_delay()
    }

    /// Converts one frame; returns the output samples written ([`Self::output_frame`]).
    pub fn process(&mut self, input: &[i16], output: &mut [i16]) -> Result<usize, ResampleError> {
        if input.len() != self.in_frame {
            return Err(ResampleError::InputLength {
                got: input.len(),
                want: self.in_frame,
            });
        }
        if output.len() < self.out_frame {
            return Err(ResampleError::OutputTooSmall {
                need: self.out_frame,
                have: output.len(),
            });
        }
        for (f, &s) in self.input.iter_mut().zip(input) {
            *f = s as f32 * (1.0 / 32768.0);
        }
        let src = InterleavedSlice::new(&self.input, 1, self.in_frame)
            .map_err(|e| ResampleError::Rubato(e.to_string()))?;
        let mut dst = InterleavedSlice::new_mut(&mut self.output, 1, self.out_frame)
            .map_err(|e| ResampleError::Rubato(e.to_string()))?;
        let (_, produced) = self
            .inner
            .process_into_buffer(&src, &mut dst, None)
            .map_err(|e| ResampleError::Rubato(e.to_string()))?;
        debug_assert_eq!(produced, self.out_frame);
        for (o, &f) in output.iter_mut().zip(&self.output[..produced]) {
            // `as` saturates, so an overshoot past full scale clips instead of wrapping.
            *o = (f * 32768.0).round() as i16;
        }
        Ok(produced)
    }

    /// Forgets the signal history (e.g. after a gap).
    pub fn reset(&mut self) {
        self.inner.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::sine_snr_db;
    use crate::tones::{ToneGenerator, ToneSpec};

    fn run(r: &mut Resampler, x: &[i16]) -> Vec<i16> {
        let mut out = vec![0i16; r.output_frame()];
        let mut y = Vec::new();
        for frame in x.chunks_exact(r.input_frame()) {
            let n = r.process(frame, &mut out).unwrap();
            y.extend_from_slice(&out[..n]);
        }
        y
    }

    #[test]
    fn every_pair_keeps_a_sine_clean() {
        for from in RATES_HZ {
            for to in RATES_HZ {
                let mut r = Resampler::new(from, to, 20).unwrap();
                assert_eq!(r.input_frame(), from as usize / 50);
                assert_eq!(r.output_frame(), to as usize / 50);
                // 1 kHz at -6 dBm0, one second; skip the delay plus 20 ms of settling.
                let mut g =
                    ToneGenerator::new(&ToneSpec::continuous(1000.0, 0.0, -6.0), from).unwrap();
                let mut x = vec![0i16; from as usize];
                g.fill(&mut x);
                let y = run(&mut r, &x);
                assert_eq!(y.len(), to as usize);
                let skip = r.delay_samples() + to as usize / 50;
                let snr = sine_snr_db(&y, 1000.0, to as f64, skip);
                assert!(snr > 80.0, "{from}->{to}: SNR {snr:.1} dB");
                // The level survives (within 0.1 dB).
                let rms_in = rms(&x[from as usize / 10..]);
                let rms_out = rms(&y[skip..]);
                assert!(
                    (20.0 * (rms_out / rms_in).log10()).abs() < 0.1,
                    "{from}->{to}"
                );
            }
        }
    }

    #[test]
    fn downsampling_removes_what_the_lower_rate_cannot_carry() {
        // 6 kHz at 48 kHz must not alias into 8 kHz output (it would land at 2 kHz).
        let mut r = Resampler::new(48000, 8000, 20).unwrap();
        let mut g = ToneGenerator::new(&ToneSpec::continuous(6000.0, 0.0, -6.0), 48000).unwrap();
        let mut x = vec![0i16; 48000];
        g.fill(&mut x);
        let y = run(&mut r, &x);
        let skip = r.delay_samples() + 160;
        assert!(rms(&y[skip..]) < 10.0, "alias rms {}", rms(&y[skip..]));
    }

    fn rms(x: &[i16]) -> f64 {
        (x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / x.len() as f64).sqrt()
    }

    #[test]
    fn errors() {
        assert!(matches!(
            Resampler::new(44100, 8000, 20),
            Err(ResampleError::Unsupported { .. })
        ));
        assert!(matches!(
            Resampler::new(8000, 16000, 0),
            Err(ResampleError::Unsupported { .. })
        ));
        let mut r = Resampler::new(8000, 16000, 20).unwrap();
        assert_eq!(
            r.process(&[0; 100], &mut [0; 320]),
            Err(ResampleError::InputLength {
                got: 100,
                want: 160
            })
        );
        assert_eq!(
            r.process(&[0; 160], &mut [0; 100]),
            Err(ResampleError::OutputTooSmall {
                need: 320,
                have: 100
            })
        );
    }
}
