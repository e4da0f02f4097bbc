//! Registrar and location service (RFC 3261 §10), sans-IO.
//!
//! Bindings are kept per address-of-record `user@domain`; each remembers the hop the REGISTER
//! really came from, so requests reach a phone behind NAT at its public address (the
//! received/rport of RFC 3581) whatever private address its Contact claims.

use super::message::{header_param, name_addr_uri, Message, SipUri};
use super::transaction::Peer;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Binding {
    pub contact: String,
    /// Where requests for this contact are sent (the REGISTER's source).
    pub peer: Peer,
    pub expires_at: Instant,
    pub call_id: String,
    pub cseq: u32,
    pub registered_at: Instant,
    pub q: f32,
    /// Consecutive keep-alive OPTIONS that got no answer.
    pub missed_pings: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationEvent {
    Added {
        aor: String,
        contact: String,
    },
    Refreshed {
        aor: String,
        contact: String,
    },
    Removed {
        aor: String,
        contact: String,
        why: &'static str,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct RegistrarLimits {
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    pub max_contacts_per_aor: usize,
}

impl Default for RegistrarLimits {
    fn default() -> Self {
        RegistrarLimits {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts_per_aor: 10,
        }
    }
}

/// The outcome of one REGISTER after authentication: the response code and, for 200 and 423,
/// the headers to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterOutcome {
    pub code: u16,
    pub headers: Vec<(&'static str, String)>,
    pub events: Vec<RegistrationEvent>,
}

#[derive(Default)]
pub struct Location {
    bindings: HashMap<String, Vec<Binding>>,
}

pub fn aor_of(uri: &str) -> Option<String> {
    let uri = SipUri::parse(name_addr_uri(uri))?;
    Some(format!("{}@{}", uri.user?, uri.host).to_ascii_lowercase())
}

impl Location {
    pub fn new() -> Location {
        Location::default()
    }

    pub fn binding_count(&self) -> usize {
        self.bindings.values().map(Vec::len).sum()
    }

    pub fn aor_count(&self) -> usize {
        self.bindings.len()
    }

    /// Live contacts for an AOR, best first (highest q, then most recent).
    pub fn lookup(&self, aor: &str, now: Instant) -> Vec<&Binding> {
        let mut found: Vec<&Binding> = self
            .bindings
            .get(&aor.to_ascii_lowercase())
            .map(|b| b.iter().filter(|b| b.expires_at > now).collect())
            .unwrap_or_default();
        found.sort_by(|a, b| {
            b.q.partial_cmp(&a.q)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(b.registered_at.cmp(&a.registered_at))
        });
        found
    }

    /// Applies an authenticated REGISTER for `aor`.
    pub fn register(
        &mut self,
        now: Instant,
        aor: &str,
        request: &Message,
        peer: Peer,
        limits: &RegistrarLimits,
    ) -> RegisterOutcome {
        let aor = aor.to_ascii_lowercase();
        let call_id = request.call_id().to_string();
        let cseq = request.cseq().map_or(0, |c| c.0);
        let header_expires = request
            .get("Expires")
            .and_then(|e| e.trim().parse::<u32>().ok());
        let contacts: Vec<&str> = request.get_all("Contact").collect();
        let mut events = Vec::new();

        if contacts.iter().any(|c| c.trim() == "*") {
            // §10.3 step 6: "*" only with Expires: 0 and alone.
            if header_expires != Some(0) || contacts.len() != 1 {
                return outcome(400, vec![], events);
            }
            for b in self.bindings.remove(&aor).unwrap_or_default() {
                events.push(RegistrationEvent::Removed {
                    aor: aor.clone(),
                    contact: b.contact,
                    why: "unregistered",
                });
            }
            return outcome(200, vec![], events);
        }

        let existing = self.bindings.entry(aor.clone()).or_default();
        existing.retain(|b| b.expires_at > now);
        for contact in &contacts {
            let uri = name_addr_uri(contact).to_string();
            if SipUri::parse(&uri).is_none() {
                return outcome(400, vec![], events);
            }
            let expires = header_param(contact, "expires")
                .and_then(|e| e.parse::<u32>().ok())
                .or(header_expires)
                .unwrap_or(limits.default_expires);
            if expires != 0 && expires < limits.min_expires {
                return outcome(
                    423,
                    vec![("Min-Expires", limits.min_expires.to_string())],
                    events,
                );
            }
            let q = header_param(contact, "q")
                .and_then(|q| q.parse::<f32>().ok())
                .filter(|q| (0.0..=1.0).contains(q))
                .unwrap_or(1.0);
            let position = existing.iter().position(|b| b.contact == uri);
            if let Some(i) = position {
                // §10.3 step 7: an older CSeq on the same Call-ID is out of order.
                if existing[i].call_id == call_id && existing[i].cseq >= cseq {
                    return outcome(500, vec![("Retry-After", "1".into())], events);
                }
            }
            if expires == 0 {
                if let Some(i) = position {
                    let b = existing.remove(i);
                    events.push(RegistrationEvent::Removed {
                        aor: aor.clone(),
                        contact: b.contact,
                        why: "unregistered",
                    });
                }
                continue;
            }
            let expires = expires.min(limits.max_expires);
            let binding = Binding {
                contact: uri.clone(),
                peer,
                expires_at: now + Duration::from_secs(u64::from(expires)),
                call_id: call_id.clone(),
                cseq,
                registered_at: now,
                q,
                missed_pings: 0,
            };
            match position {
                Some(i) => {
                    existing[i] = binding;
                    events.push(RegistrationEvent::Refreshed {
                        aor: aor.clone(),
                        contact: uri,
                    });
                }
                None => {
                    if existing.len() >= limits.max_contacts_per_aor {
                        // Make room by dropping the oldest binding, as phones re-register
                        // with new contacts after an address change.
                        if let Some(oldest) = existing
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, b)| b.registered_at)
                            .map(|(i, _)| i)
                        {
                            let b = existing.remove(oldest);
                            events.push(RegistrationEvent::Removed {
                                aor: aor.clone(),
                                contact: b.contact,
                                why: "replaced",
                            });
                        }
                    }
                    existing.push(binding);
                    events.push(RegistrationEvent::Added {
                        aor: aor.clone(),
                        contact: uri,
                    });
                }
            }
        }
        let headers = existing
            .iter()
            .map(|b| {
                let left = b.expires_at.saturating_duration_since(now).as_secs();
                ("Contact", format!("<{}>;expires={left}", b.contact))
            })
            .collect();
        if existing.is_empty() {
            self.bindings.remove(&aor);
        }
        outcome(200, headers, events)
    }

    /// Drops expired bindings.
    pub fn expire(&mut self, now: Instant) -> Vec<RegistrationEvent> {
        let mut events = Vec::new();
        self.bindings.retain(|aor, bindings| {
            bindings.retain(|b| {
                let live = b.expires_at > now;
                if !live {
                    events.push(RegistrationEvent::Removed {
                        aor: aor.clone(),
                        contact: b.contact.clone(),
                        why: "expired",
                    });
                }
                live
            });
            !bindings.is_empty()
        });
        events
    }

    /// Every binding, for keep-alive pings.
    pub fn all(&self) -> impl Iterator<Item = (&String, &Binding)> {
        self.bindings
            .iter()
            .flat_map(|(aor, bs)| bs.iter().map(move |b| (aor, b)))
    }

    /// Records a keep-alive result; a contact that misses `limit` pings in a row is removed.
    pub fn ping_result(
        &mut self,
        aor: &str,
        contact: &str,
        answered: bool,
        limit: u32,
    ) -> Option<RegistrationEvent> {
        let bindings = self.bindings.get_mut(aor)?;
        let i = bindings.iter().position(|b| b.contact == contact)?;
        if answered {
            bindings[i].missed_pings = 0;
            return None;
        }
        bindings[i].missed_pings += 1;
        if bindings[i].missed_pings < limit {
            return None;
        }
        let b = bindings.remove(i);
        if bindings.is_empty() {
            self.bindings.remove(aor);
        }
        Some(RegistrationEvent::Removed {
            aor: aor.to_string(),
            contact: b.contact,
            why: "unreachable",
        })
    }
}

fn outcome(
    code: u16,
    headers: Vec<(&'static str, String)>,
    events: Vec<RegistrationEvent>,
) -> RegisterOutcome {
    RegisterOutcome {
        code,
        headers,
        events,
    }
}

/// Counts failed authentications per (source IP, user) and locks the pair out for a while
/// after too many: brute-forcing a password over SIP then costs hours, not seconds.
pub struct Lockout {
    failures: HashMap<(std::net::IpAddr, String), (u32, Instant)>,
    pub max_failures: u32,
    pub window: Duration,
    pub lock_for: Duration,
}

impl Lockout {
    pub fn new(max_failures: u32, window: Duration, lock_for: Duration) -> Lockout {
        Lockout {
            failures: HashMap::new(),
            max_failures,
            window,
            lock_for,
        }
    }

    pub fn is_locked(&self, now: Instant, ip: std::net::IpAddr, user: &str) -> bool {
        self.failures
            .get(&(ip, user.to_string()))
            .is_some_and(|(n, since)| *n >= self.max_failures && now < *since + self.lock_for)
    }

    /// Returns true when this failure locked the pair.
    pub fn failed(&mut self, now: Instant, ip: std::net::IpAddr, user: &str) -> bool {
        let entry = self
            .failures
            .entry((ip, user.to_string()))
            .or_insert((0, now));
        if now > entry.1 + self.window.max(self.lock_for) {
            *entry = (0, now);
        }
        entry.0 += 1;
        if entry.0 == self.max_failures {
            entry.1 = now;
            return true;
        }
        false
    }

    pub fn succeeded(&mut self, ip: std::net::IpAddr, user: &str) {
        self.failures.remove(&(ip, user.to_string()));
    }

    pub fn forget_older_than(&mut self, now: Instant) {
        let keep = self.window.max(self.lock_for);
        self.failures.retain(|_, (_, since)| now < *since + keep);
    }
}

/// A token bucket per source address: `rate` requests per second, bursts of `burst`.
pub struct RateLimiter {
    buckets: HashMap<std::net::IpAddr, (f64, Instant)>,
    pub rate: f64,
    pub burst: f64,
}

impl RateLimiter {
    pub fn new(rate: f64, burst: f64) -> RateLimiter {
        RateLimiter {
            buckets: HashMap::new(),
            rate,
            burst,
        }
    }

    pub fn allow(&mut self, now: Instant, ip: std::net::IpAddr) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let (tokens, last) = self.buckets.entry(ip).or_insert((self.burst, now));
        let refill = now.saturating_duration_since(*last).as_secs_f64() * self.rate;
        *tokens = (*tokens + refill).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    pub fn forget_idle(&mut self, now: Instant) {
        let full_after = Duration::from_secs_f64(self.burst / self.rate.max(1e-9));
        self.buckets
            .retain(|_, (_, last)| now.saturating_duration_since(*last) < full_after);
    }
}
