//! SplitMix64: the seeded generator behind the random strategies and the simulator. Twenty
//! lines we own beat a dependency for one `next_u64`; quality is ample for picking agents and
//! drawing exponential variates (it passes BigCrush as a 64-bit generator).

/// A seeded, reproducible random source.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, n); n = 0 yields 0. Lemire's multiply-shift (bias below 2^-32 for our n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in (0, 1]: never 0, so `ln` of it is finite.
    pub fn unit_open0(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Exponential variate with the given mean.
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * self.unit_open0().ln()
    }

    /// Standard normal variate (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit_open0();
        let u2 = self.unit_open0();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_exp_has_its_mean() {
        let mut r = SplitMix64::new(7);
        let mut sum = 0.0;
        for _ in 0..100_000 {
            assert!(r.below(10) < 10);
            sum += r.exp(3.0);
        }
        let mean = sum / 100_000.0;
        assert!((mean - 3.0).abs() < 0.05, "{mean}");
        assert_eq!(r.below(0), 0);
    }
}
