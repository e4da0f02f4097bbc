//! Erlang C (M/M/N, FIFO, no abandonment), exactly as `shared/METRICS.md` states it.
//!
//! The Erlang B recursion B(0)=1, B(k) = A·B(k−1) / (k + A·B(k−1)) never forms A^N or N!, so
//! it is stable for thousands of agents; Erlang C follows as C = N·B / (N − A·(1 − B)), which is
//! algebraically the METRICS.md ratio (A^N/N!·N/(N−A)) / (Σ_{k<N} A^k/k! + A^N/N!·N/(N−A)).

/// Erlang C figures for one load point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErlangC {
    /// Probability that a contact waits at all.
    pub p_wait: f64,
    /// Average speed of answer, in the unit of `handle`.
    pub asa: f64,
    /// Occupancy A/N.
    pub occupancy: f64,
}

/// P_wait, ASA and occupancy for arrival rate `lambda`, mean handle time `handle` (same time
/// unit) and `agents`. `None` when the load is not below the agents (A ≥ N) or inputs are not
/// finite and positive.
pub fn erlang_c(lambda: f64, handle: f64, agents: u32) -> Option<ErlangC> {
    let a = lambda * handle;
    let n = f64::from(agents);
    if !(a.is_finite() && a > 0.0 && handle > 0.0 && a < n) {
        return None;
    }
    let mut b = 1.0;
    for k in 1..=agents {
        b = a * b / (f64::from(k) + a * b);
    }
    let p_wait = n * b / (n - a * (1.0 - b));
    Some(ErlangC {
        p_wait,
        asa: p_wait * handle / (n - a),
        occupancy: a / n,
    })
}

impl ErlangC {
    /// SL(t) = 1 − P_wait·e^{−(N−A)·t/h}: the share answered within `t` (same unit as `handle`).
    pub fn service_level(&self, t: f64, handle: f64, agents: u32) -> f64 {
        let n = f64::from(agents);
        let a = self.occupancy * n;
        1.0 - self.p_wait * (-(n - a) * t / handle).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The METRICS.md formula term by term, for small N where factorials are exact enough.
    fn direct(a: f64, n: u32) -> f64 {
        let fact = |k: u32| (1..=k).map(f64::from).product::<f64>();
        let top = a.powi(n as i32) / fact(n) * f64::from(n) / (f64::from(n) - a);
        let sum: f64 = (0..n).map(|k| a.powi(k as i32) / fact(k)).sum();
        top / (sum + top)
    }

    #[test]
    fn matches_the_direct_formula() {
        for &(a, n) in &[(1.0, 2), (8.5, 10), (15.0, 20), (2.0, 3), (45.0, 50)] {
            let e = erlang_c(a / 100.0, 100.0, n).unwrap();
            assert!((e.p_wait - direct(a, n)).abs() < 1e-12, "{a} {n}");
        }
    }

    #[test]
    fn textbook_value_and_stability() {
        // A = 10 Erl, N = 11: P_wait ≈ 0.6821 (standard tables).
        let e = erlang_c(10.0 / 180.0, 180.0, 11).unwrap();
        assert!((e.p_wait - 0.6821).abs() < 1e-3, "{}", e.p_wait);
        assert!((e.asa - e.p_wait * 180.0).abs() < 1e-9);
        // Thousands of agents: no overflow, a probability.
        let big = erlang_c(4_900.0, 1.0, 5_000).unwrap();
        assert!(big.p_wait > 0.0 && big.p_wait < 1.0);
        assert!(erlang_c(1.0, 10.0, 10).is_none());
        let sl = e.service_level(20.0, 180.0, 11);
        assert!(sl > 1.0 - e.p_wait && sl < 1.0);
    }
}
