//! A hashed timer wheel over a fixed set of entries (one per session slot).
//!
//! Entries live in intrusive doubly linked lists threaded through arrays sized at start, so
//! scheduling, cancelling and expiring never allocate. Deadlines beyond one revolution wait in
//! their slot and are re-filed when it comes round.

const NONE: u32 = u32::MAX;

pub struct TimerWheel {
    tick_ns: u64,
    heads: Box<[u32]>,
    next: Box<[u32]>,
    prev: Box<[u32]>,
    /// Wheel slot an entry is filed in, NONE when not scheduled.
    filed_in: Box<[u32]>,
    deadline_ns: Box<[u64]>,
    /// Ticks up to (not including) this one have been expired.
    current_tick: u64,
    scheduled: usize,
}

impl TimerWheel {
    pub fn new(entries: usize, slots: usize, tick_ns: u64, now_ns: u64) -> Self {
        assert!(slots.is_power_of_two() && tick_ns > 0);
        assert!(entries < NONE as usize);
        TimerWheel {
            tick_ns,
            heads: vec![NONE; slots].into_boxed_slice(),
            next: vec![NONE; entries].into_boxed_slice(),
            prev: vec![NONE; entries].into_boxed_slice(),
            filed_in: vec![NONE; entries].into_boxed_slice(),
            deadline_ns: vec![0; entries].into_boxed_slice(),
            current_tick: now_ns / tick_ns,
            scheduled: 0,
        }
    }

    pub fn is_scheduled(&self, entry: u32) -> bool {
        self.filed_in[entry as usize] != NONE
    }

    pub fn len(&self) -> usize {
        self.scheduled
    }

    pub fn is_empty(&self) -> bool {
        self.scheduled == 0
    }

    /// Schedules (or reschedules) `entry` to fire at `deadline_ns`.
    pub fn schedule(&mut self, entry: u32, deadline_ns: u64) {
        self.cancel(entry);
        // A deadline in the past fires on the next expire call.
        let tick = (deadline_ns / self.tick_ns).max(self.current_tick);
        let slot = (tick as usize) & (self.heads.len() - 1);
        let e = entry as usize;
        self.deadline_ns[e] = deadline_ns;
        self.filed_in[e] = slot as u32;
        self.prev[e] = NONE;
        self.next[e] = self.heads[slot];
        if self.heads[slot] != NONE {
            self.prev[self.heads[slot] as usize] = entry;
        }
        self.heads[slot] = entry;
        self.scheduled += 1;
    }

    pub fn cancel(&mut self, entry: u32) {
        let e = entry as usize;
        let slot = self.filed_in[e];
        if slot == NONE {
            return;
        }
        let (p, n) = (self.prev[e], self.next[e]);
        if p == NONE {
            self.heads[slot as usize] = n;
        } else {
            self.next[p as usize] = n;
        }
        if n != NONE {
            self.prev[n as usize] = p;
        }
        self.filed_in[e] = NONE;
        self.scheduled -= 1;
        debug_assert!(!self.is_scheduled(entry));
    }

    /// Calls `fire` for every entry whose deadline is at or before `now_ns`; fired entries are
    /// unscheduled before the call, so `fire` may reschedule them.
    pub fn expire(&mut self, now_ns: u64, mut fire: impl FnMut(&mut Self, u32)) {
        let now_tick = now_ns / self.tick_ns;
        let slots = self.heads.len() as u64;
        // After a long stall, one revolution visits every slot once.
        let last = now_tick.min(self.current_tick + slots - 1);
        let mut tick = self.current_tick;
        while tick <= last {
            let slot = (tick as usize) & (self.heads.len() - 1);
            let mut entry = self.heads[slot];
            while entry != NONE {
                let following = self.next[entry as usize];
                if self.deadline_ns[entry as usize] <= now_ns {
                    self.cancel(entry);
                    fire(self, entry);
                }
                entry = following;
            }
            tick += 1;
        }
        self.current_tick = now_tick;
    }

    /// Unschedules the entries due at `now_ns` into `due`, as many as it holds; the number
    /// taken. Due entries beyond that stay due for the next call.
    pub fn take_due(&mut self, now_ns: u64, due: &mut [u32]) -> usize {
        let mut n = 0;
        self.expire(now_ns, |wheel, entry| {
            if let Some(place) = due.get_mut(n) {
                *place = entry;
                n += 1;
            } else {
                wheel.schedule(entry, now_ns);
            }
        });
        n
    }

    /// Time until the next tick boundary when anything is scheduled: the longest a core may sleep.
    pub fn sleep_hint_ns(&self, now_ns: u64) -> Option<u64> {
        if self.scheduled == 0 {
            return None;
        }
        let next_boundary = (now_ns / self.tick_ns + 1) * self.tick_ns;
        Some(next_boundary - now_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn fires_in_order_of_deadline_ticks() {
        let mut w = TimerWheel::new(8, 16, 100 * MS, 0);
        w.schedule(1, 250 * MS);
        w.schedule(2, 50 * MS);
        w.schedule(3, 10_000 * MS); // several revolutions ahead
        let mut fired = Vec::new();
        w.expire(100 * MS, |_, e| fired.push(e));
        assert_eq!(fired, vec![2]);
        w.expire(300 * MS, |_, e| fired.push(e));
        assert_eq!(fired, vec![2, 1]);
        w.expire(9_999 * MS, |_, e| fired.push(e));
        assert_eq!(fired, vec![2, 1]);
        w.expire(10_000 * MS, |_, e| fired.push(e));
        assert_eq!(fired, vec![2, 1, 3]);
        assert!(w.is_empty());
    }

    #[test]
    fn reschedule_from_callback_and_cancel() {
        let mut w = TimerWheel::new(4, 8, MS, 0);
        w.schedule(0, 5 * MS);
        w.schedule(1, 5 * MS);
        w.cancel(1);
        let mut count = 0;
        w.expire(5 * MS, |w, e| {
            count += 1;
            w.schedule(e, 50 * MS);
        });
        assert_eq!(count, 1);
        assert!(w.is_scheduled(0) && !w.is_scheduled(1));
    }

    proptest! {
        /// Every scheduled entry fires exactly once, never early, and no later than one tick late.
        #[test]
        fn fires_each_once_never_early(deadlines in proptest::collection::vec(0u64..5_000, 1..64), step in 1u64..300) {
            let tick = 10 * MS;
            let mut w = TimerWheel::new(deadlines.len(), 32, tick, 0);
            for (i, d) in deadlines.iter().enumerate() {
                w.schedule(i as u32, d * MS);
            }
            let mut fired_at = vec![None; deadlines.len()];
            let mut now = 0;
            while !w.is_empty() {
                now += step * MS;
                w.expire(now, |_, e| {
                    assert!(fired_at[e as usize].is_none());
                    fired_at[e as usize] = Some(now);
                });
            }
            for (i, d) in deadlines.iter().enumerate() {
                let at = fired_at[i].unwrap();
                prop_assert!(at >= d * MS);
                prop_assert!(at < d * MS + step * MS + tick);
            }
        }
    }
}
