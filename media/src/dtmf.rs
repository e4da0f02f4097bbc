//! In-band DTMF detection on 8 kHz audio, to the limits of ITU-T Q.24.
//!
//! ## How
//!
//! Every [`HOP`] samples (5 ms) the last [`WINDOW`] samples (16 ms) are Hann-windowed and run
//! through eight complex Goertzel filters, one per DTMF frequency. Per group the strongest
//! filter names the candidate row/column. A frame is *valid* for a key when all of these hold:
//!
//! * **frequency**: the phase advance of the filter output from the previous frame (one hop
//!   earlier) gives the tone's offset from nominal; it must be within ±[`FREQ_TOLERANCE`]
//!   (2.5%, between Q.24's "accept ±1.5%" and "reject ≥3.5%");
//! * **level**: each tone at least [`MIN_LEVEL_DBM0`] (amplitudes corrected for the window's
//!   response at the measured offset);
//! * **twist**: high group at most [`MAX_REVERSE_TWIST_DB`] above and at most
//!   [`MAX_NORMAL_TWIST_DB`] below the low group (Q.24: 4 dB and 8 dB, plus 0.5 dB of
//!   measurement allowance);
//! * **purity**: the two tones carry at least [`MIN_TONE_FRACTION`] of the frame's power
//!   (rejects speech and noise; passes DTMF at 10 dB SNR);
//! * **steadiness**: the four quarters of the window differ in energy by less than 4 dB
//!   (the tone fills the window: this is what makes short bursts fail).
//!
//! A key is reported once, when [`CONFIRM_FRAMES`] consecutive frames are valid for it, with
//! the start of the first of them as its timestamp. It stays "on" while frames still show its
//! two tones dominant (at half the level), so a dropout of 10–20 ms does not report it again;
//! [`RELEASE_FRAMES`] frames without it end it, so a 40 ms pause separates two presses.
//!
//! Durations follow from the frame geometry: a 40 ms tone always gives at least four frames
//! that lie wholly inside it (accepted); a tone of 25 ms or less cannot give four steady ones
//! (rejected). Between the two lies Q.24's own grey zone.

/// Sample rate the detector works at.
pub const SAMPLE_RATE_HZ: u32 = 8000;
/// Analysis window (samples): 16 ms.
pub const WINDOW: usize = 128;
/// Distance between analyses (samples): 5 ms.
pub const HOP: usize = 40;
/// Consecutive valid frames before a key is reported.
pub const CONFIRM_FRAMES: u32 = 4;
/// Consecutive frames without the key before it is considered released.
pub const RELEASE_FRAMES: u32 = 4;
/// Largest accepted frequency deviation, as a fraction of the nominal frequency.
pub const FREQ_TOLERANCE: f32 = 0.025;
/// Lowest accepted level of each tone, dBm0.
pub const MIN_LEVEL_DBM0: f32 = -33.0;
/// Largest accepted normal twist (low group louder), dB.
pub const MAX_NORMAL_TWIST_DB: f32 = 8.5;
/// Largest accepted reverse twist (high group louder), dB.
pub const MAX_REVERSE_TWIST_DB: f32 = 4.5;
/// Share of the frame's power the two tones must carry.
pub const MIN_TONE_FRACTION: f32 = 0.75;
/// Largest to smallest quarter-window energy ratio of a steady tone (4 dB).
const MAX_QUARTER_RATIO: f32 = 2.5;

const FREQS_HZ: [f32; 8] = [697.0, 770.0, 852.0, 941.0, 1209.0, 1336.0, 1477.0, 1633.0];
const KEYPAD: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];
const QUEUE: usize = 4;
const _: () = assert!(WINDOW.is_power_of_two() && WINDOW >= 4);

/// A detected key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfDigit {
    /// `0`–`9`, `*`, `#`, `A`–`D`.
    pub key: char,
    /// Estimated start of the tone: index of the sample (counted from the detector's first
    /// sample) where the first confirming frame begins: from 2 ms before to 6 ms after the
    /// true start.
    pub at_sample: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bin {
    /// 2cos(w), for the Goertzel recursion.
    coeff: f32,
    cos: f32,
    sin: f32,
    /// Expected phase advance over one hop at the nominal frequency, radians.
    hop_phase: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Candidate {
    row: usize,
    col: usize,
}

/// Frame verdict.
#[derive(Debug, Clone, Copy)]
struct FrameResult {
    /// The strongest row/column, when both tones are at least weakly present.
    present: Option<Candidate>,
    /// Whether the frame passes every strict check for `present`.
    valid: bool,
}

/// Goertzel DTMF detector for one 8 kHz stream. No allocation after `new` (all state is
/// in fixed-size arrays inside the value).
#[derive(Debug, Clone)]
pub struct DtmfDetector {
    bins: [Bin; 8],
    window: [f32; WINDOW],
    window_sum: f32,
    window_energy: f32,
    min_amplitude: f32,
    /// Twist limits as power ratios.
    max_reverse_twist: f32,
    max_normal_twist: f32,
    /// Last WINDOW samples, circular; `ring_pos` is the oldest.
    ring: [f32; WINDOW],
    ring_pos: usize,
    since_hop: usize,
    samples_seen: u64,
    scratch: [f32; WINDOW],
    prev: [(f32, f32); 8],
    have_prev: bool,
    // Confirmation and release.
    run_key: Option<Candidate>,
    run_len: u32,
    run_start: u64,
    active: Option<Candidate>,
    absent_for: u32,
    /// Sample index where the last frame that still showed the active key's tones ends.
    active_heard_until: u64,
    queue: [Option<DtmfDigit>; QUEUE],
    queued: usize,
    dropped: u64,
}

impl Default for DtmfDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl DtmfDetector {
    /// A detector with the limits documented on the module.
    pub fn new() -> Self {
        let mut bins = [Bin::default(); 8];
        for (b, &f) in bins.iter_mut().zip(&FREQS_HZ) {
            let w = std::f32::consts::TAU * f / SAMPLE_RATE_HZ as f32;
            b.coeff = 2.0 * w.cos();
            b.cos = w.cos();
            b.sin = w.sin();
            b.hop_phase = wrap_phase(w * HOP as f32);
        }
        let mut window = [0f32; WINDOW];
        for (m, w) in window.iter_mut().enumerate() {
            *w = 0.5 - 0.5 * (std::f32::consts::TAU * m as f32 / WINDOW as f32).cos();
        }
        DtmfDetector {
            bins,
            window,
            window_sum: window.iter().sum(),
            window_energy: window.iter().map(|w| w * w).sum(),
            min_amplitude: crate::tones::dbm0_to_peak(MIN_LEVEL_DBM0),
            max_reverse_twist: db_to_power(MAX_REVERSE_TWIST_DB),
            max_normal_twist: db_to_power(MAX_NORMAL_TWIST_DB),
            ring: [0.0; WINDOW],
            ring_pos: 0,
            since_hop: 0,
            samples_seen: 0,
            scratch: [0.0; WINDOW],
            prev: [(0.0, 0.0); 8],
            have_prev: false,
            run_key: None,
            run_len: 0,
            run_start: 0,
            active: None,
            absent_for: 0,
            active_heard_until: 0,
            queue: [None; QUEUE],
            queued: 0,
            dropped: 0,
        }
    }

    /// Feeds samples (any count; usually one 20 ms frame of 160). Detected keys are then
    /// available from [`Self::poll_digit`].
    pub fn handle_frame(&mut self, samples: &[i16]) {
        for &s in samples {
            self.ring[self.ring_pos] = s as f32;
            self.ring_pos = (self.ring_pos + 1) & (WINDOW - 1);
            self.samples_seen += 1;
            self.since_hop += 1;
            if self.since_hop == HOP && self.samples_seen >= WINDOW as u64 {
                self.since_hop = 0;
                let frame_start = self.samples_seen - WINDOW as u64;
                let r = self.analyse();
                self.track(r, frame_start);
            } else if self.since_hop == HOP {
                self.since_hop = 0;
            }
        }
    }

    /// The next detected key, oldest first.
    pub fn poll_digit(&mut self) -> Option<DtmfDigit> {
        if self.queued == 0 {
            return None;
        }
        let d = self.queue[0].take();
        self.queue.rotate_left(1);
        self.queued -= 1;
        d
    }

    /// Keys lost because nobody polled (the queue holds four).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Samples fed so far (the clock of [`DtmfDigit::at_sample`]).
    pub fn samples_seen(&self) -> u64 {
        self.samples_seen
    }

    /// The key reported last, while its tones are still heard (it has not been released).
    pub fn active_key(&self) -> Option<char> {
        self.active.map(|k| KEYPAD[k.row][k.col])
    }

    /// Sample index (the clock of [`DtmfDigit::at_sample`]) where the last analysis window
    /// that still held the active key's tones ends: the tone's end, to within a window.
    pub fn heard_until(&self) -> u64 {
        self.active_heard_until
    }

    /// Whether a key's tones are in the audio now: a key is active, or the latest frame
    /// passed every check for one (a press being confirmed). What a caller muting DTMF
    /// (PCI card entry) silences; speech passes all the checks rarely and for one frame.
    pub fn tone_present(&self) -> bool {
        self.active.is_some() || self.run_len > 0
    }

    fn analyse(&mut self) -> FrameResult {
        // Window the last WINDOW samples in time order; note quarter energies and total power.
        let mut quarters = [0f32; 4];
        let mut windowed_energy = 0f32;
        for m in 0..WINDOW {
            let x = self.ring[(self.ring_pos + m) & (WINDOW - 1)];
            quarters[m / (WINDOW / 4)] += x * x;
            let xw = x * self.window[m];
            windowed_energy += xw * xw;
            self.scratch[m] = xw;
        }
        // Complex Goertzel per frequency. The output is the DFT at the bin times a constant
        // phase factor that is the same for every frame, so frame-to-frame phase differences
        // are those of the DFT.
        let cur = goertzel8(&self.bins, &self.scratch);
        let prev = std::mem::replace(&mut self.prev, cur);
        let had_prev = std::mem::replace(&mut self.have_prev, true);

        let strongest = |range: std::ops::Range<usize>| {
            range
                .max_by(|&a, &b| mag2(cur[a]).total_cmp(&mag2(cur[b])))
                .unwrap_or(0)
        };
        let (lo, hi) = (strongest(0..4), strongest(4..8));
        let cand = Candidate {
            row: lo,
            col: hi - 4,
        };
        let power = windowed_energy / self.window_energy;
        // Amplitude of a sine from the windowed DFT: |X| = A/2 · Σw.
        let amp = |i: usize| 2.0 * mag2(cur[i]).sqrt() / self.window_sum;
        let (a_lo, a_hi) = (amp(lo), amp(hi));

        // Weak presence (keeps an active key on through dropouts): both tones above half the
        // minimum level and dominant.
        let weak = a_lo >= 0.5 * self.min_amplitude
            && a_hi >= 0.5 * self.min_amplitude
            && (a_lo * a_lo + a_hi * a_hi) * 0.5 >= 0.5 * power;
        let present = weak.then_some(cand);
        if !weak || !had_prev {
            return FrameResult {
                present,
                valid: false,
            };
        }

        // Frequency offsets from the phase advance over one hop.
        let offset_hz = |i: usize| {
            let (re, im) = mul_conj(cur[i], prev[i]);
            let dphi = wrap_phase(im.atan2(re) - self.bins[i].hop_phase);
            dphi / (std::f32::consts::TAU * HOP as f32) * SAMPLE_RATE_HZ as f32
        };
        let (d_lo, d_hi) = (offset_hz(lo), offset_hz(hi));
        let freq_ok = d_lo.abs() <= FREQ_TOLERANCE * FREQS_HZ[lo]
            && d_hi.abs() <= FREQ_TOLERANCE * FREQS_HZ[hi];
        // Undo the window's attenuation at the measured offset.
        let a_lo = a_lo / hann_response(d_lo * WINDOW as f32 / SAMPLE_RATE_HZ as f32);
        let a_hi = a_hi / hann_response(d_hi * WINDOW as f32 / SAMPLE_RATE_HZ as f32);
        let level_ok = a_lo >= self.min_amplitude && a_hi >= self.min_amplitude;
        let (p_lo, p_hi) = (a_lo * a_lo, a_hi * a_hi);
        let twist_ok =
            p_hi <= p_lo * self.max_reverse_twist && p_lo <= p_hi * self.max_normal_twist;
        let pure = (p_lo + p_hi) * 0.5 >= MIN_TONE_FRACTION * power;
        let (qmin, qmax) = quarters
            .iter()
            .fold((f32::MAX, 0f32), |(lo, hi), &q| (lo.min(q), hi.max(q)));
        let steady = qmax <= MAX_QUARTER_RATIO * qmin;
        FrameResult {
            present,
            valid: freq_ok && level_ok && twist_ok && pure && steady,
        }
    }

    fn track(&mut self, r: FrameResult, frame_start: u64) {
        // Release: the active key needs RELEASE_FRAMES frames without its tones.
        if let Some(active) = self.active {
            if r.present == Some(active) {
                self.absent_for = 0;
                self.active_heard_until = frame_start + WINDOW as u64;
            } else {
                self.absent_for += 1;
                if self.absent_for >= RELEASE_FRAMES {
                    self.active = None;
                }
            }
        }
        // Confirmation: CONFIRM_FRAMES consecutive valid frames for the same key.
        let valid_key = if r.valid { r.present } else { None };
        match valid_key {
            Some(k) if self.run_key == Some(k) => self.run_len += 1,
            Some(k) => {
                self.run_key = Some(k);
                self.run_len = 1;
                self.run_start = frame_start;
            }
            None => {
                self.run_key = None;
                self.run_len = 0;
            }
        }
        if let Some(k) = self.run_key {
            if self.run_len >= CONFIRM_FRAMES && self.active != Some(k) {
                self.active = Some(k);
                self.absent_for = 0;
                self.active_heard_until = frame_start + WINDOW as u64;
                self.push(DtmfDigit {
                    key: KEYPAD[k.row][k.col],
                    at_sample: self.run_start,
                });
            }
        }
    }

    fn push(&mut self, d: DtmfDigit) {
        if self.queued == QUEUE {
            let _ = self.poll_digit();
            self.dropped += 1;
        }
        self.queue[self.queued] = Some(d);
        self.queued += 1;
    }
}

/// Complex Goertzel output of each bin over `x`. The eight recursions run side by side, one
/// sample at a time: each is a serial chain, so interleaving them is what lets the CPU (and the
/// vectoriser) overlap their latencies.
fn goertzel8(bins: &[Bin; 8], x: &[f32; WINDOW]) -> [(f32, f32); 8] {
    let coeff: [f32; 8] = std::array::from_fn(|k| bins[k].coeff);
    let mut s1 = [0f32; 8];
    let mut s2 = [0f32; 8];
    for &v in x {
        for k in 0..8 {
            let s0 = v + coeff[k] * s1[k] - s2[k];
            s2[k] = s1[k];
            s1[k] = s0;
        }
    }
    std::array::from_fn(|k| (s1[k] - bins[k].cos * s2[k], bins[k].sin * s2[k]))
}

fn mag2(c: (f32, f32)) -> f32 {
    c.0 * c.0 + c.1 * c.1
}

fn mul_conj(a: (f32, f32), b: (f32, f32)) -> (f32, f32) {
    (a.0 * b.0 + a.1 * b.1, a.1 * b.0 - a.0 * b.1)
}

fn wrap_phase(p: f32) -> f32 {
    let t = std::f32::consts::TAU;
    p - t * (p / t).round()
}

fn db_to_power(db: f32) -> f32 {
    10f32.powf(db / 10.0)
}

/// Magnitude of the Hann window's spectrum `b` bins from its centre, relative to the centre.
fn hann_response(b: f32) -> f32 {
    let b = b.abs().min(0.9);
    if b < 1e-4 {
        return 1.0;
    }
    let x = std::f32::consts::PI * b;
    (x.sin() / x) / (1.0 - b * b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tones::{dbm0_to_peak, DTMF_HIGH_HZ, DTMF_LOW_HZ};
    use proptest::prelude::*;

    /// xorshift64*: deterministic test noise.
    struct Rng(u64);
    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn uniform(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }
        fn gauss(&mut self) -> f64 {
            let u1 = self.uniform().max(1e-300);
            let u2 = self.uniform();
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        }
    }

    const FS: f64 = 8000.0;

    /// Adds a two-tone burst to `x` at `start` for `len` samples.
    #[allow(clippy::too_many_arguments)]
    fn add_tone(x: &mut [f64], start: usize, len: usize, f1: f64, a1: f64, f2: f64, a2: f64) {
        for n in 0..len {
            let t = n as f64 / FS;
            x[start + n] += a1 * (std::f64::consts::TAU * f1 * t + 0.3).sin()
                + a2 * (std::f64::consts::TAU * f2 * t + 1.1).sin();
        }
    }

    fn key_freqs(key: char) -> (f64, f64) {
        let (r, c) = crate::tones::dtmf_position(key).unwrap();
        (DTMF_LOW_HZ[r] as f64, DTMF_HIGH_HZ[c] as f64)
    }

    fn add_key(x: &mut [f64], start: usize, len: usize, key: char, low_dbm0: f64, high_dbm0: f64) {
        let (fl, fh) = key_freqs(key);
        add_tone(
            x,
            start,
            len,
            fl,
            dbm0_to_peak(low_dbm0 as f32) as f64,
            fh,
            dbm0_to_peak(high_dbm0 as f32) as f64,
        );
    }

    fn add_noise(x: &mut [f64], rms: f64, rng: &mut Rng) {
        for v in x.iter_mut() {
            *v += rms * rng.gauss();
        }
    }

    fn detect(x: &[f64]) -> Vec<DtmfDigit> {
        let pcm: Vec<i16> = x
            .iter()
            .map(|&v| v.round().clamp(-32768.0, 32767.0) as i16)
            .collect();
        let mut d = DtmfDetector::new();
        let mut out = Vec::new();
        for frame in pcm.chunks(160) {
            d.handle_frame(frame);
            while let Some(k) = d.poll_digit() {
                out.push(k);
            }
        }
        assert_eq!(d.dropped(), 0);
        out
    }

    fn keys(d: &[DtmfDigit]) -> String {
        d.iter().map(|d| d.key).collect()
    }

    const ALL: &str = "123A456B789C*0#D";

    /// All 16 keys, 50 ms on / 50 ms off, at `dbm0` per tone with white noise at `snr_db`
    /// relative to the two tones' total power.
    fn sequence(snr_db: Option<f64>, dbm0: f64, seed: u64) -> (Vec<f64>, Vec<usize>) {
        let mut x = vec![0f64; 16 * 800 + 800];
        let mut starts = Vec::new();
        for (i, k) in ALL.chars().enumerate() {
            let s = 400 + i * 800;
            add_key(&mut x, s, 400, k, dbm0, dbm0);
            starts.push(s);
        }
        if let Some(snr) = snr_db {
            let p = dbm0_to_peak(dbm0 as f32) as f64;
            let signal_power = p * p; // two tones of power p²/2 each
            let noise_rms = (signal_power / 10f64.powf(snr / 10.0)).sqrt();
            add_noise(&mut x, noise_rms, &mut Rng(seed));
        }
        (x, starts)
    }

    #[test]
    fn goertzel_phase_advance_measures_frequency_offset() {
        // Offsets of ±1%, ±2% on every frequency come out within 1 Hz.
        for &f in &FREQS_HZ {
            for pct in [-2.0f32, -1.0, 0.0, 1.0, 2.0] {
                let d = DtmfDetector::new();
                let true_f = f * (1.0 + pct / 100.0);
                let frame = |start: usize| {
                    let mut w = [0f32; WINDOW];
                    for (m, v) in w.iter_mut().enumerate() {
                        let n = (start + m) as f32;
                        *v = 10000.0
                            * (std::f32::consts::TAU * true_f * n / 8000.0 + 0.7).sin()
                            * d.window[m];
                    }
                    goertzel8(&d.bins, &w)
                };
                let (a, b) = (frame(0), frame(HOP));
                let i = FREQS_HZ.iter().position(|&g| g == f).unwrap();
                let (re, im) = mul_conj(b[i], a[i]);
                let dphi = wrap_phase(im.atan2(re) - d.bins[i].hop_phase);
                let est = dphi / (std::f32::consts::TAU * HOP as f32) * 8000.0;
                assert!(
                    (est - (true_f - f)).abs() < 1.0,
                    "{f} Hz {pct}%: {est} vs {}",
                    true_f - f
                );
                // And the amplitude, corrected for the window, is the tone's.
                let amp = 2.0 * mag2(b[i]).sqrt()
                    / d.window_sum
                    / hann_response(est * WINDOW as f32 / 8000.0);
                assert!(
                    (amp / 10000.0 - 1.0).abs() < 0.02,
                    "{f} {pct}%: amplitude {amp}"
                );
            }
        }
    }

    #[test]
    fn all_keys_clean_and_timestamps_within_6_ms() {
        let (x, starts) = sequence(None, -10.0, 1);
        let got = detect(&x);
        assert_eq!(keys(&got), ALL);
        for (d, &s) in got.iter().zip(&starts) {
            let err = d.at_sample as i64 - s as i64;
            assert!(
                (-16..=48).contains(&err),
                "{} at {} vs {s}",
                d.key,
                d.at_sample
            );
        }
    }

    #[test]
    fn all_keys_in_white_noise_at_20_15_10_db_snr() {
        for snr in [20.0, 15.0, 10.0] {
            for seed in 1..=3 {
                let (x, _) = sequence(Some(snr), -10.0, seed);
                assert_eq!(keys(&detect(&x)), ALL, "SNR {snr} dB seed {seed}");
            }
        }
    }

    #[test]
    fn level_range() {
        for dbm0 in [0.0, -10.0, -20.0, -30.0] {
            let (x, _) = sequence(None, dbm0, 1);
            assert_eq!(keys(&detect(&x)), ALL, "{dbm0} dBm0");
        }
        let (x, _) = sequence(None, -40.0, 1);
        assert_eq!(keys(&detect(&x)), "", "-40 dBm0 is below the minimum");
    }

    fn one_key_with(
        f_lo: f64,
        f_hi: f64,
        lo_dbm0: f64,
        hi_dbm0: f64,
        len: usize,
        noise: bool,
    ) -> String {
        let mut x = vec![0f64; 4000];
        add_tone(
            &mut x,
            1000,
            len,
            f_lo,
            dbm0_to_peak(lo_dbm0 as f32) as f64,
            f_hi,
            dbm0_to_peak(hi_dbm0 as f32) as f64,
        );
        if noise {
            add_noise(&mut x, 30.0, &mut Rng(7));
        }
        keys(&detect(&x))
    }

    #[test]
    fn frequency_deviation_accept_1_5_percent_reject_3_5_percent() {
        for key in ALL.chars() {
            let (fl, fh) = key_freqs(key);
            for (dl, dh) in [
                (1.015, 1.015),
                (0.985, 0.985),
                (1.015, 0.985),
                (0.985, 1.015),
            ] {
                let got = one_key_with(fl * dl, fh * dh, -10.0, -10.0, 400, true);
                assert_eq!(got, key.to_string(), "{key} at {dl}/{dh}");
            }
            for (dl, dh) in [(1.035, 1.0), (0.965, 1.0), (1.0, 1.035), (1.0, 0.965)] {
                let got = one_key_with(fl * dl, fh * dh, -10.0, -10.0, 400, true);
                assert_eq!(got, "", "{key} at {dl}/{dh} must be rejected");
            }
        }
    }

    #[test]
    fn twist_normal_8_db_and_reverse_4_db_accepted_beyond_rejected() {
        for key in ALL.chars() {
            let (fl, fh) = key_freqs(key);
            // Normal twist: low group louder.
            assert_eq!(
                one_key_with(fl, fh, -6.0, -14.0, 400, true),
                key.to_string()
            );
            assert_eq!(
                one_key_with(fl, fh, -6.0, -16.0, 400, true),
                "",
                "{key} 10 dB"
            );
            // Reverse twist: high group louder.
            assert_eq!(
                one_key_with(fl, fh, -14.0, -10.0, 400, true),
                key.to_string()
            );
            assert_eq!(
                one_key_with(fl, fh, -16.0, -10.0, 400, true),
                "",
                "{key} -6 dB"
            );
        }
    }

    #[test]
    fn duration_40_ms_accepted_25_ms_and_shorter_rejected() {
        // Every alignment against the 5 ms hop.
        for key in ALL.chars() {
            let (fl, fh) = key_freqs(key);
            for shift in (0..HOP).step_by(7) {
                let mut x = vec![0f64; 4000];
                add_tone(&mut x, 1000 + shift, 320, fl, 7000.0, fh, 7000.0);
                assert_eq!(keys(&detect(&x)), key.to_string(), "{key} 40 ms +{shift}");
                for len in [200, 160, 80] {
                    let mut x = vec![0f64; 4000];
                    add_tone(&mut x, 1000 + shift, len, fl, 7000.0, fh, 7000.0);
                    assert_eq!(keys(&detect(&x)), "", "{key} {len} samples +{shift}");
                }
            }
        }
    }

    #[test]
    fn dropouts_do_not_double_and_40_ms_pauses_separate() {
        let (fl, fh) = key_freqs('5');
        let a = dbm0_to_peak(-10.0) as f64;
        // 200 ms of '5' with a 10 ms hole in the middle: one '5'.
        for hole in [40, 80] {
            let mut x = vec![0f64; 4000];
            add_tone(&mut x, 500, 800, fl, a, fh, a);
            x[1300..1300 + hole].fill(0.0);
            add_noise(&mut x, 20.0, &mut Rng(3));
            assert_eq!(keys(&detect(&x)), "5", "hole {hole}");
        }
        // '55' with a 40 ms pause: two.
        let mut x = vec![0f64; 4000];
        add_tone(&mut x, 500, 400, fl, a, fh, a);
        add_tone(&mut x, 1220, 400, fl, a, fh, a);
        add_noise(&mut x, 20.0, &mut Rng(4));
        let got = detect(&x);
        assert_eq!(keys(&got), "55");
        assert!(got[1].at_sample >= 1220);
    }

    #[test]
    fn active_key_tone_present_and_heard_until_follow_the_tone() {
        let mut x = vec![0f64; 4000];
        add_key(&mut x, 800, 800, '5', -10.0, -10.0);
        let pcm: Vec<i16> = x.iter().map(|&v| v.round() as i16).collect();
        let mut d = DtmfDetector::new();
        d.handle_frame(&pcm[..800]);
        assert!(!d.tone_present() && d.active_key().is_none());
        d.handle_frame(&pcm[800..1200]);
        assert!(d.tone_present());
        assert_eq!(d.active_key(), Some('5'));
        d.handle_frame(&pcm[1200..]);
        assert_eq!((d.active_key(), d.tone_present()), (None, false));
        // The tone ended at sample 1600: the last window that held it ends within a window.
        let until = d.heard_until();
        assert!((1600..=1600 + WINDOW as u64).contains(&until), "{until}");
    }

    #[test]
    fn key_changes_without_pause() {
        let mut x = vec![0f64; 3000];
        add_key(&mut x, 200, 400, '1', -10.0, -10.0);
        add_key(&mut x, 600, 400, '9', -10.0, -10.0);
        assert_eq!(keys(&detect(&x)), "19");
    }

    #[test]
    fn no_detections_in_noise() {
        let mut rng = Rng(11);
        for rms in [10.0, 300.0, 3000.0, 12000.0] {
            let mut x = vec![0f64; 8000 * 10];
            add_noise(&mut x, rms, &mut rng);
            assert_eq!(keys(&detect(&x)), "", "noise rms {rms}");
        }
    }

    fn near_dtmf(f: f64) -> bool {
        FREQS_HZ.iter().any(|&g| (f / g as f64 - 1.0).abs() < 0.05)
    }

    #[test]
    fn no_detections_on_random_non_dtmf_sines() {
        // 60 s of 2–5 sines at random non-DTMF frequencies (≥5% off every DTMF frequency),
        // each set lasting 40–400 ms, levels -30..0 dBm0.
        let mut rng = Rng(5);
        let mut x = vec![0f64; 8000 * 60];
        let mut pos = 0;
        while pos < x.len() {
            let len = (320 + (rng.uniform() * 2880.0) as usize).min(x.len() - pos);
            let n = 2 + (rng.uniform() * 4.0) as usize;
            for _ in 0..n {
                let f = loop {
                    let f = 200.0 + rng.uniform() * 3200.0;
                    if !near_dtmf(f) {
                        break f;
                    }
                };
                let a = dbm0_to_peak(-30.0 + rng.uniform() as f32 * 30.0) as f64 / n as f64;
                let ph = rng.uniform() * std::f64::consts::TAU;
                for i in 0..len {
                    x[pos + i] += a * (std::f64::consts::TAU * f * i as f64 / FS + ph).sin();
                }
            }
            pos += len;
        }
        assert_eq!(keys(&detect(&x)), "");
    }

    #[test]
    fn no_detections_on_voice_like_harmonics() {
        // 60 s of "vowels": a gliding fundamental of 85–255 Hz with 30 harmonics up to 3.4 kHz
        // under a random spectral envelope, syllables of 60–300 ms, plus a little noise. Any
        // harmonic may fall on a DTMF frequency; the rest of the spectrum must keep it from
        // counting.
        let mut rng = Rng(9);
        let mut x = vec![0f64; 8000 * 60];
        let mut pos = 0;
        while pos < x.len() {
            let len = (480 + (rng.uniform() * 1920.0) as usize).min(x.len() - pos);
            let f0a = 85.0 + rng.uniform() * 170.0;
            let f0b = f0a * (0.9 + rng.uniform() * 0.2);
            let peak = dbm0_to_peak(-25.0 + rng.uniform() as f32 * 20.0) as f64;
            let env: Vec<f64> = (0..30).map(|_| rng.uniform()).collect();
            let mut phase = [0f64; 30];
            for i in 0..len {
                let f0 = f0a + (f0b - f0a) * i as f64 / len as f64;
                let mut v = 0.0;
                for (k, ph) in phase.iter_mut().enumerate() {
                    let f = f0 * (k + 1) as f64;
                    if f > 3400.0 {
                        break;
                    }
                    *ph += std::f64::consts::TAU * f / FS;
                    v += env[k] / (k + 1) as f64 * ph.sin();
                }
                x[pos + i] = peak * 0.4 * v;
            }
            pos += len;
        }
        add_noise(&mut x, 30.0, &mut rng);
        assert_eq!(keys(&detect(&x)), "");
    }

    proptest! {
        /// Whatever the frame sizes, the same keys come out.
        #[test]
        fn frame_size_does_not_matter(sizes in proptest::collection::vec(1usize..500, 1..60)) {
            let (x, _) = sequence(Some(20.0), -10.0, 2);
            let pcm: Vec<i16> = x.iter().map(|&v| v.round() as i16).collect();
            let mut d = DtmfDetector::new();
            let mut got = String::new();
            let mut pos = 0;
            for n in sizes.iter().cycle() {
                if pos >= pcm.len() { break; }
                let end = (pos + n).min(pcm.len());
                d.handle_frame(&pcm[pos..end]);
                pos = end;
                while let Some(k) = d.poll_digit() { got.push(k.key); }
            }
            prop_assert_eq!(got, ALL);
        }

        /// Arbitrary samples never panic, and keys come out at most once per 40 ms.
        #[test]
        fn arbitrary_input_is_harmless(x in proptest::collection::vec(any::<i16>(), 0..4000)) {
            let mut d = DtmfDetector::new();
            d.handle_frame(&x);
            let mut n = 0;
            while d.poll_digit().is_some() { n += 1; }
            prop_assert!(n <= x.len() / 320 + 1);
        }
    }
}
