//! Expected wait time: a per-queue running average of handle times (talk + wrap-up) and the
//! M/M/N conditional wait for a position.

/// Exponentially weighted moving average; each sample moves it by 1/div of the difference.
#[derive(Debug, Clone)]
pub(crate) struct Ewma {
    value: f64,
    div: f64,
    /// Whether any sample has been added (before that, `value` is the configured guess).
    measured: bool,
}

impl Ewma {
    pub(crate) fn new(initial: f64, div: u32) -> Self {
        Ewma {
            value: initial,
            div: f64::from(div.max(1)),
            measured: false,
        }
    }

    pub(crate) fn add(&mut self, sample: f64) {
        self.value += (sample - self.value) / self.div;
        self.measured = true;
    }

    /// A new initial guess replaces the old one only while nothing has been measured.
    pub(crate) fn set_initial(&mut self, initial: f64) {
        if !self.measured {
            self.value = initial;
        }
    }

    pub(crate) fn get(&self) -> f64 {
        self.value
    }
}

/// Estimated wait for the contact at `position` (1 = head) when `idle` agents are free right
/// now and `staffed` serve the queue. When every agent is busy, the p-th contact in line waits
/// for p departures, each arriving at rate staffed/AHT: p·AHT/staffed (exact for exponential
/// handle times and FIFO). Idle agents take the first `idle` positions at once. `None` when
/// nobody is staffed: there is no honest estimate.
pub fn estimate_wait_ms(position: u32, idle: u32, staffed: u32, aht_ms: f64) -> Option<u64> {
    if position <= idle {
        return Some(0);
    }
    if staffed == 0 {
        return None;
    }
    let ahead = f64::from(position - idle);
    Some((ahead * aht_ms / f64::from(staffed)).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_estimates() {
        assert_eq!(estimate_wait_ms(1, 1, 5, 100_000.0), Some(0));
        assert_eq!(estimate_wait_ms(1, 0, 5, 100_000.0), Some(20_000));
        assert_eq!(estimate_wait_ms(3, 0, 5, 100_000.0), Some(60_000));
        assert_eq!(estimate_wait_ms(3, 0, 0, 100_000.0), None);
        let mut e = Ewma::new(100.0, 4);
        e.add(200.0);
        assert_eq!(e.get(), 125.0);
    }
}
