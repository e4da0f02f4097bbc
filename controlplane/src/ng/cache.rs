//! Replies by cookie, so a retransmitted request (same cookie) gets the same bytes without being
//! executed twice. Bounded in entries; entries expire. Time is a parameter.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

pub struct ReplyCache {
    entries: HashMap<Vec<u8>, (Instant, Vec<u8>)>,
    /// Insertion order, for expiry and eviction.
    order: VecDeque<(Instant, Vec<u8>)>,
    capacity: usize,
    ttl: Duration,
}

impl ReplyCache {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        assert!(capacity > 0);
        ReplyCache {
            entries: HashMap::with_capacity(capacity),
            order: VecDeque::with_capacity(capacity),
            capacity,
            ttl,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.ttl && self.order.len() <= self.capacity {
                break;
            }
            let (at, cookie) = self.order.pop_front().expect("front exists");
            // Only remove the map entry if it is the one this queue slot refers to.
            if self.entries.get(&cookie).is_some_and(|(t, _)| *t == at) {
                self.entries.remove(&cookie);
            }
        }
    }

    pub fn get(&mut self, now: Instant, cookie: &[u8]) -> Option<&[u8]> {
        self.expire(now);
        self.entries.get(cookie).map(|(_, reply)| reply.as_slice())
    }

    pub fn insert(&mut self, now: Instant, cookie: &[u8], reply: Vec<u8>) {
        self.order.push_back((now, cookie.to_vec()));
        self.entries.insert(cookie.to_vec(), (now, reply));
        self.expire(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_until_expiry_and_stays_bounded() {
        let t0 = Instant::now();
        let mut c = ReplyCache::new(3, Duration::from_secs(30));
        c.insert(t0, b"a", b"ra".to_vec());
        assert_eq!(c.get(t0 + Duration::from_secs(29), b"a"), Some(&b"ra"[..]));
        assert_eq!(c.get(t0 + Duration::from_secs(30), b"a"), None);
        for i in 0..10u8 {
            c.insert(t0, &[i], vec![i]);
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(t0, &[9]), Some(&[9u8][..]));
        assert_eq!(c.get(t0, &[0]), None);
    }
}
