//! Tone generation: DTMF digits and call-progress tones with national cadences.
//!
//! Each component is a 32-bit phase accumulator reading a 1024-point sine table with linear
//! interpolation (error below -110 dB). A [`ToneSpec`] says which one or two frequencies, at
//! which level, and the on/off cadence; a [`ToneGenerator`] plays it into caller-owned frames.

use std::sync::LazyLock;
use thiserror::Error;

/// Peak amplitude (16-bit linear) of a 0 dBm0 sine: G.711 µ-law's full-load sine (peak 8159
/// in 14 bits, 32636 in 16) is +3.17 dBm0, so 0 dBm0 is 32636 · 10^(-3.17/20).
pub const DBM0_PEAK: f32 = 22_666.0;

/// Peak amplitude of a sine at `dbm0`.
pub fn dbm0_to_peak(dbm0: f32) -> f32 {
    DBM0_PEAK * 10f32.powf(dbm0 / 20.0)
}

const TABLE_BITS: u32 = 10;
const TABLE_LEN: usize = 1 << TABLE_BITS;

/// One period of sine plus a guard point, so interpolation never wraps an index.
static SINE: LazyLock<[f32; TABLE_LEN + 1]> = LazyLock::new(|| {
    let mut t = [0f32; TABLE_LEN + 1];
    for (i, v) in t.iter_mut().enumerate() {
        *v = (i as f64 * std::f64::consts::TAU / TABLE_LEN as f64).sin() as f32;
    }
    t
});

#[inline]
fn sine_at(table: &[f32; TABLE_LEN + 1], phase: u32) -> f32 {
    let idx = (phase >> (32 - TABLE_BITS)) as usize;
    let frac = (phase << TABLE_BITS) as f32 * (1.0 / 4_294_967_296.0);
    let a = table[idx];
    a + (table[idx + 1] - a) * frac
}

/// Most on/off segments a cadence may have (the UK's congestion tone needs four).
pub const MAX_CADENCE: usize = 4;

/// What to play: up to two frequencies, their level, and the cadence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToneSpec {
    /// Frequencies in Hz; a 0 means "no second component".
    pub freqs_hz: [f32; 2],
    /// Level of each component in dBm0.
    pub levels_dbm0: [f32; 2],
    /// Alternating on/off durations in ms starting with "on"; all zero means continuous.
    pub cadence_ms: [u32; MAX_CADENCE],
    /// Whether the cadence repeats; if not, the generator is finished after it.
    pub repeat: bool,
}

/// Why a [`ToneSpec`] cannot be played.
#[derive(Debug, Clone, Copy, PartialEq, Error)]
pub enum ToneError {
    /// A frequency at or above half the sample rate, or negative, or not a number.
    #[error("frequency {0} Hz cannot be generated at this sample rate")]
    Frequency(f32),
    /// The sample rate is zero.
    #[error("sample rate must be positive")]
    SampleRate,
    /// Not a DTMF key.
    #[error("{0:?} is not a DTMF key")]
    NotDtmf(char),
}

/// DTMF low-group frequencies (rows) and high-group (columns), Hz (ITU-T Q.23).
pub const DTMF_LOW_HZ: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
/// DTMF high-group frequencies, Hz.
pub const DTMF_HIGH_HZ: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
/// The keypad, row by row.
pub const DTMF_KEYPAD: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

/// Row and column of a DTMF key on the keypad.
pub fn dtmf_position(key: char) -> Option<(usize, usize)> {
    let key = key.to_ascii_uppercase();
    DTMF_KEYPAD
        .iter()
        .enumerate()
        .find_map(|(r, row)| row.iter().position(|&k| k == key).map(|c| (r, c)))
}

impl ToneSpec {
    /// A continuous tone of one or two frequencies (0 for none) at one level.
    pub const fn continuous(f1: f32, f2: f32, level_dbm0: f32) -> Self {
        ToneSpec {
            freqs_hz: [f1, f2],
            levels_dbm0: [level_dbm0, level_dbm0],
            cadence_ms: [0; MAX_CADENCE],
            repeat: true,
        }
    }

    /// A repeating cadence of one or two frequencies.
    pub const fn cadenced(f1: f32, f2: f32, level_dbm0: f32, cadence_ms: [u32; 4]) -> Self {
        ToneSpec {
            freqs_hz: [f1, f2],
            levels_dbm0: [level_dbm0, level_dbm0],
            cadence_ms,
            repeat: true,
        }
    }

    /// One DTMF key: `on_ms` of tone, then `off_ms` of silence, once. Levels per group in dBm0
    /// (Q.23 leaves them to administrations; [`DTMF_LEVEL_DBM0`] is a usual choice).
    pub fn dtmf(
        key: char,
        on_ms: u32,
        off_ms: u32,
        low_dbm0: f32,
        high_dbm0: f32,
    ) -> Result<Self, ToneError> {
        let (r, c) = dtmf_position(key).ok_or(ToneError::NotDtmf(key))?;
        Ok(ToneSpec {
            freqs_hz: [DTMF_LOW_HZ[r], DTMF_HIGH_HZ[c]],
            levels_dbm0: [low_dbm0, high_dbm0],
            cadence_ms: [on_ms, off_ms, 0, 0],
            repeat: false,
        })
    }
}

/// Default DTMF levels (low, high group) in dBm0: the high group 2 dB above the low one, a
/// common sender pre-emphasis.
pub const DTMF_LEVEL_DBM0: (f32, f32) = (-8.0, -6.0);

/// Countries whose call-progress tones are built in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Country {
    /// North American Precise Tone Plan.
    Us,
    /// United Kingdom (BT SIN 350).
    Uk,
    /// Germany (425 Hz tones, ITU-T E.180 Supplement 2).
    De,
}

/// Call-progress tones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProgressTone {
    /// Dial tone.
    Dial,
    /// Ringing (ringback) tone.
    Ringback,
    /// Busy (subscriber engaged).
    Busy,
    /// Congestion / reorder (network engaged).
    Congestion,
}

/// The built-in call-progress tone of a country.
///
/// Frequencies and cadences are the national ones (US Precise Tone Plan; UK BT SIN 350; Germany
/// per E.180 Supplement 2). Levels: US as in the Precise Tone Plan (dial -13, ringback -19,
/// busy/reorder -24 dBm0 per frequency); for UK and DE we use -19 dBm0 for every tone, a level
/// of our choosing in the usual range, not one taken from those documents.
pub fn call_progress(country: Country, tone: ProgressTone) -> ToneSpec {
    use Country::*;
    use ProgressTone::*;
    match (country, tone) {
        (Us, Dial) => ToneSpec::continuous(350.0, 440.0, -13.0),
        (Us, Ringback) => ToneSpec::cadenced(440.0, 480.0, -19.0, [2000, 4000, 0, 0]),
        (Us, Busy) => ToneSpec::cadenced(480.0, 620.0, -24.0, [500, 500, 0, 0]),
        (Us, Congestion) => ToneSpec::cadenced(480.0, 620.0, -24.0, [250, 250, 0, 0]),
        (Uk, Dial) => ToneSpec::continuous(350.0, 440.0, -19.0),
        (Uk, Ringback) => ToneSpec::cadenced(400.0, 450.0, -19.0, [400, 200, 400, 2000]),
        (Uk, Busy) => ToneSpec::cadenced(400.0, 0.0, -19.0, [375, 375, 0, 0]),
        (Uk, Congestion) => ToneSpec::cadenced(400.0, 0.0, -19.0, [400, 350, 225, 525]),
        (De, Dial) => ToneSpec::continuous(425.0, 0.0, -19.0),
        (De, Ringback) => ToneSpec::cadenced(425.0, 0.0, -19.0, [1000, 4000, 0, 0]),
        (De, Busy) => ToneSpec::cadenced(425.0, 0.0, -19.0, [480, 480, 0, 0]),
        (De, Congestion) => ToneSpec::cadenced(425.0, 0.0, -19.0, [240, 240, 0, 0]),
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Osc {
    phase: u32,
    step: u32,
    peak: f32,
}

/// Plays a [`ToneSpec`] into frames of any length. No allocation after `new`.
#[derive(Debug, Clone)]
pub struct ToneGenerator {
    table: &'static [f32; TABLE_LEN + 1],
    osc: [Osc; 2],
    /// Cadence in samples; `segments == 0` means continuous.
    cadence: [u32; MAX_CADENCE],
    segments: usize,
    repeat: bool,
    seg: usize,
    left_in_seg: u32,
    finished: bool,
}

impl ToneGenerator {
    /// A generator for `spec` at `sample_rate_hz`.
    pub fn new(spec: &ToneSpec, sample_rate_hz: u32) -> Result<Self, ToneError> {
        if sample_rate_hz == 0 {
            return Err(ToneError::SampleRate);
        }
        let mut osc = [Osc::default(); 2];
        for (o, (&f, &l)) in osc
            .iter_mut()
            .zip(spec.freqs_hz.iter().zip(&spec.levels_dbm0))
        {
            if !(f >= 0.0 && f < sample_rate_hz as f32 / 2.0) {
                return Err(ToneError::Frequency(f));
            }
            if f > 0.0 {
                o.step = (f as f64 / sample_rate_hz as f64 * 4_294_967_296.0).round() as u32;
                o.peak = dbm0_to_peak(l);
            }
        }
        let mut cadence = [0u32; MAX_CADENCE];
        let mut segments = 0;
        for (c, &ms) in cadence.iter_mut().zip(&spec.cadence_ms) {
            *c = (ms as u64 * sample_rate_hz as u64 / 1000).min(u32::MAX as u64) as u32;
        }
        // Trailing zero segments are absent; an interior zero is a zero-length segment.
        while segments < MAX_CADENCE && cadence[segments..].iter().any(|&c| c > 0) {
            segments += 1;
        }
        Ok(ToneGenerator {
            table: &SINE,
            osc,
            cadence,
            segments,
            repeat: spec.repeat,
            seg: 0,
            left_in_seg: cadence[0],
            finished: false,
        })
    }

    /// Whether a non-repeating tone has played all of its cadence (it then writes silence).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Starts the cadence again from its first "on" segment.
    pub fn restart(&mut self) {
        self.seg = 0;
        self.left_in_seg = self.cadence[0];
        self.finished = false;
        for o in &mut self.osc {
            o.phase = 0;
        }
    }

    /// Writes the next `out.len()` samples.
    pub fn fill(&mut self, out: &mut [i16]) {
        if self.segments == 0 {
            self.render(out);
            return;
        }
        let mut done = 0;
        while done < out.len() {
            if self.finished {
                out[done..].fill(0);
                return;
            }
            if self.left_in_seg == 0 {
                self.next_segment();
                continue;
            }
            let n = (out.len() - done).min(self.left_in_seg as usize);
            let chunk = &mut out[done..done + n];
            if self.seg & 1 == 0 {
                self.render(chunk);
            } else {
                chunk.fill(0);
            }
            self.left_in_seg -= n as u32;
            done += n;
        }
    }

    fn next_segment(&mut self) {
        self.seg += 1;
        if self.seg >= self.segments {
            if !self.repeat {
                self.finished = true;
                return;
            }
            self.seg = 0;
        }
        self.left_in_seg = self.cadence[self.seg];
        if self.seg & 1 == 0 {
            // Each burst starts at phase 0 (a zero crossing), so bursts start without a click.
            for o in &mut self.osc {
                o.phase = 0;
            }
        }
    }

    fn render(&mut self, out: &mut [i16]) {
        let t = self.table;
        let [a, b] = &mut self.osc;
        for s in out {
            let v = sine_at(t, a.phase) * a.peak + sine_at(t, b.phase) * b.peak;
            a.phase = a.phase.wrapping_add(a.step);
            b.phase = b.phase.wrapping_add(b.step);
            // `as` saturates float-to-int conversions.
            *s = v.round() as i16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Amplitude of `f` in `x` by direct correlation.
    fn amplitude_at(x: &[i16], f: f32, fs: f32) -> f32 {
        let (mut re, mut im) = (0f64, 0f64);
        for (n, &v) in x.iter().enumerate() {
            let w = std::f64::consts::TAU * f as f64 * n as f64 / fs as f64;
            re += v as f64 * w.cos();
            im += v as f64 * w.sin();
        }
        (2.0 * (re * re + im * im).sqrt() / x.len() as f64) as f32
    }

    fn rms(x: &[i16]) -> f32 {
        (x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / x.len() as f64).sqrt() as f32
    }

    #[test]
    fn dtmf_digit_has_both_frequencies_at_their_levels() {
        let spec = ToneSpec::dtmf('5', 1000, 50, -8.0, -6.0).unwrap();
        let mut g = ToneGenerator::new(&spec, 8000).unwrap();
        let mut x = vec![0i16; 8800];
        g.fill(&mut x);
        let on = &x[..8000];
        let a770 = amplitude_at(on, 770.0, 8000.0);
        let a1336 = amplitude_at(on, 1336.0, 8000.0);
        assert!((a770 / dbm0_to_peak(-8.0) - 1.0).abs() < 0.01, "{a770}");
        assert!((a1336 / dbm0_to_peak(-6.0) - 1.0).abs() < 0.01, "{a1336}");
        // An unrelated frequency is absent.
        assert!(amplitude_at(on, 697.0, 8000.0) < 0.01 * a770);
        assert!(x[8000..].iter().all(|&v| v == 0));
        assert!(g.is_finished());
    }

    #[test]
    fn sine_is_pure() {
        // A 1 kHz tone at 0 dBm0: RMS of peak/sqrt(2) and nothing left after removing it.
        let mut g = ToneGenerator::new(&ToneSpec::continuous(1000.0, 0.0, 0.0), 8000).unwrap();
        let mut x = vec![0i16; 8000];
        g.fill(&mut x);
        assert!((rms(&x) / (DBM0_PEAK / 2f32.sqrt()) - 1.0).abs() < 1e-3);
        let mut err = 0f64;
        for (n, &v) in x.iter().enumerate() {
            let want = DBM0_PEAK as f64 * (std::f64::consts::TAU * n as f64 / 8.0).sin();
            err = err.max((v as f64 - want).abs());
        }
        assert!(err <= 1.0, "max error {err}");
    }

    #[test]
    fn cadences_of_every_country() {
        for (country, tone, want) in [
            (Country::Us, ProgressTone::Ringback, vec![2000, 4000, 2000]),
            (Country::Us, ProgressTone::Busy, vec![500, 500, 500, 500]),
            (
                Country::Us,
                ProgressTone::Congestion,
                vec![250, 250, 250, 250],
            ),
            (
                Country::Uk,
                ProgressTone::Ringback,
                vec![400, 200, 400, 2000, 400],
            ),
            (Country::Uk, ProgressTone::Busy, vec![375, 375, 375]),
            (
                Country::Uk,
                ProgressTone::Congestion,
                vec![400, 350, 225, 525, 400],
            ),
            (Country::De, ProgressTone::Ringback, vec![1000, 4000, 1000]),
            (Country::De, ProgressTone::Busy, vec![480, 480, 480]),
            (Country::De, ProgressTone::Congestion, vec![240, 240, 240]),
        ] {
            let spec = call_progress(country, tone);
            let total: u32 = want.iter().sum();
            let mut g = ToneGenerator::new(&spec, 8000).unwrap();
            // Odd frame sizes, so segment edges fall inside frames.
            let mut x = vec![0i16; (total * 8) as usize];
            for chunk in x.chunks_mut(157) {
                g.fill(chunk);
            }
            let got = on_off_ms(&x);
            // The buffer ends inside the last burst, maybe on a zero crossing: allow 1 ms.
            let last = want.len() - 1;
            assert_eq!(got.len(), want.len(), "{country:?} {tone:?}: {got:?}");
            assert_eq!(got[..last], want[..last], "{country:?} {tone:?}");
            assert!(got[last].abs_diff(want[last]) <= 1, "{country:?} {tone:?}");
        }
    }

    /// Durations (ms) of alternating on/off stretches, where "off" is a run of zeros of at
    /// least 2 ms (a sine also crosses zero).
    fn on_off_ms(x: &[i16]) -> Vec<u32> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut on = true;
        let mut i = 0;
        while i < x.len() {
            let zero_run = x[i..].iter().take_while(|&&v| v == 0).count();
            if on && zero_run >= 16 {
                out.push(((i - start + 4) / 8) as u32);
                start = i;
                on = false;
                i += zero_run;
                continue;
            }
            if !on && x[i] != 0 {
                out.push(((i - start + 4) / 8) as u32);
                start = i;
                on = true;
            }
            i += zero_run.max(1);
        }
        out.push(((x.len() - start + 4) / 8) as u32);
        out
    }

    #[test]
    fn continuous_dial_tones_have_their_frequencies() {
        for (country, f) in [(Country::Us, [350.0, 440.0]), (Country::De, [425.0, 0.0])] {
            let spec = call_progress(country, ProgressTone::Dial);
            let mut g = ToneGenerator::new(&spec, 16000).unwrap();
            let mut x = vec![0i16; 16000];
            g.fill(&mut x);
            for f in f.into_iter().filter(|&f| f > 0.0) {
                let a = amplitude_at(&x, f, 16000.0);
                assert!((a / dbm0_to_peak(spec.levels_dbm0[0]) - 1.0).abs() < 0.01);
            }
        }
    }

    #[test]
    fn bad_specs_are_errors() {
        assert_eq!(
            ToneGenerator::new(&ToneSpec::continuous(4000.0, 0.0, 0.0), 8000).unwrap_err(),
            ToneError::Frequency(4000.0)
        );
        assert!(ToneGenerator::new(&ToneSpec::continuous(f32::NAN, 0.0, 0.0), 8000).is_err());
        assert_eq!(
            ToneGenerator::new(&ToneSpec::continuous(400.0, 0.0, 0.0), 0).unwrap_err(),
            ToneError::SampleRate
        );
        assert_eq!(
            ToneSpec::dtmf('x', 1, 1, 0.0, 0.0),
            Err(ToneError::NotDtmf('x'))
        );
    }

    #[test]
    fn restart_plays_again() {
        let spec = ToneSpec::dtmf('1', 10, 0, -8.0, -6.0).unwrap();
        let mut g = ToneGenerator::new(&spec, 8000).unwrap();
        let mut a = [0i16; 100];
        g.fill(&mut a);
        assert!(g.is_finished());
        g.restart();
        let mut b = [0i16; 100];
        g.fill(&mut b);
        assert_eq!(a, b);
    }

    proptest! {
        /// Filling in frames of any size gives the same samples as one big fill, and never
        /// exceeds the sum of the component peaks.
        #[test]
        fn frame_size_does_not_matter(sizes in proptest::collection::vec(1usize..400, 1..30),
                                      country in 0..3usize, tone in 0..4usize) {
            let c = [Country::Us, Country::Uk, Country::De][country];
            let t = [ProgressTone::Dial, ProgressTone::Ringback, ProgressTone::Busy, ProgressTone::Congestion][tone];
            let spec = call_progress(c, t);
            let total: usize = sizes.iter().sum();
            let mut whole = vec![0i16; total];
            ToneGenerator::new(&spec, 8000).unwrap().fill(&mut whole);
            let mut g = ToneGenerator::new(&spec, 8000).unwrap();
            let mut pieces = Vec::with_capacity(total);
            for n in sizes {
                let mut buf = vec![0i16; n];
                g.fill(&mut buf);
                pieces.extend_from_slice(&buf);
            }
            prop_assert_eq!(&whole, &pieces);
            let limit = dbm0_to_peak(spec.levels_dbm0[0]) * 2.0 + 1.0;
            prop_assert!(whole.iter().all(|&v| (v as f32).abs() <= limit));
        }
    }
}
