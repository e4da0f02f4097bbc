//! Credentials: argon2 password hashes, API tokens (random secrets stored as SHA-256, shown
//! once) and short-lived session tokens (HMAC-SHA256 signed, so they need no table).

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const ROLES: [&str; 5] = ["system_admin", "tenant_admin", "supervisor", "agent", "qa"];

/// Privilege order for "may grant": a principal can create users and tokens of its own rank or
/// below, never above. QA reviewers and agents are peers at the bottom.
pub fn rank(role: &str) -> u8 {
    match role {
        "system_admin" => 4,
        "tenant_admin" => 3,
        "supervisor" => 2,
        "agent" | "qa" => 1,
        _ => 0,
    }
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // Without the OS's randomness no secret can be made; there is no safe fallback.
    getrandom::fill(&mut out).expect("the OS random source");
    out
}

pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new API token: `tdm_<id>_<secret>`; only the secret's SHA-256 is stored.
pub struct NewToken {
    pub id: String,
    pub secret_sha256: String,
    pub plaintext: String,
}

pub fn new_api_token() -> NewToken {
    let id = crate::storage::new_id();
    let secret = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
    NewToken {
        secret_sha256: sha256_hex(secret.as_bytes()),
        plaintext: format!("tdm_{id}_{secret}"),
        id,
    }
}

/// `(id, secret)` of an API token's text, if it has the shape of one.
pub fn split_api_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("tdm_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 32 && !secret.is_empty()).then_some((id, secret))
}

pub fn api_token_matches(secret: &str, stored_sha256: &str) -> bool {
    constant_time_eq(
        sha256_hex(secret.as_bytes()).as_bytes(),
        stored_sha256.as_bytes(),
    )
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionClaims {
    /// User id.
    pub sub: String,
    pub tenant: Option<String>,
    pub role: String,
    /// The user's version when the session began: a password or role change ends it.
    pub ver: i64,
    /// Expiry, Unix milliseconds.
    pub exp: i64,
}

pub struct SessionKeys {
    key: [u8; 32],
}

impl SessionKeys {
    pub fn new(key: [u8; 32]) -> SessionKeys {
        SessionKeys { key }
    }

    fn mac(&self, payload: &str) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key size");
        mac.update(payload.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// `tds_<payload>.<signature>`, both base64url.
    pub fn issue(&self, claims: &SessionClaims) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signature = URL_SAFE_NO_PAD.encode(self.mac(&payload));
        format!("tds_{payload}.{signature}")
    }

    /// The claims of a well-signed, unexpired session token.
    pub fn verify(&self, token: &str, now_ms: i64) -> Option<SessionClaims> {
        let (payload, signature) = token.strip_prefix("tds_")?.split_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        if !constant_time_eq(&signature, &self.mac(payload)) {
            return None;
        }
        let claims: SessionClaims =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (claims.exp > now_ms).then_some(claims)
    }
}

/// Password guessing through `POST /sessions` is throttled: a (login, source address) pair that
/// fails [`LoginGuard::PAIR_FAILURES`] times in the window is refused for the window, and so is
/// a source address that fails [`LoginGuard::SOURCE_FAILURES`] times over any logins. Keying on
/// the pair keeps an attacker from locking a user out from everywhere by failing on purpose.
/// Sans-IO: the caller passes `now_ms`.
#[derive(Debug, Default)]
pub struct LoginGuard {
    failures: std::collections::HashMap<String, Failures>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    window_start_ms: i64,
}

impl LoginGuard {
    pub const PAIR_FAILURES: u32 = 5;
    pub const SOURCE_FAILURES: u32 = 30;
    pub const WINDOW_MS: i64 = 15 * 60 * 1000;
    /// Entries kept at most; beyond it, expired ones are dropped, then the oldest.
    const MAX_ENTRIES: usize = 100_000;

    fn keys(login: &str, source: &str) -> [(String, u32); 2] {
        [
            (format!("{login}\u{0}{source}"), Self::PAIR_FAILURES),
            (format!("\u{0}{source}"), Self::SOURCE_FAILURES),
        ]
    }

    /// Milliseconds until this login from this source may be tried again, if it is locked.
    pub fn locked_for_ms(&self, login: &str, source: &str, now_ms: i64) -> Option<i64> {
        Self::keys(login, source)
            .iter()
            .filter_map(|(key, limit)| {
                let f = self.failures.get(key)?;
                let until = f.window_start_ms + Self::WINDOW_MS;
                (f.count >= *limit && until > now_ms).then_some(until - now_ms)
            })
            .max()
    }

    pub fn failed(&mut self, login: &str, source: &str, now_ms: i64) {
        if self.failures.len() >= Self::MAX_ENTRIES {
            self.failures
                .retain(|_, f| f.window_start_ms + Self::WINDOW_MS > now_ms);
            if self.failures.len() >= Self::MAX_ENTRIES {
                if let Some(oldest) = self
                    .failures
                    .iter()
                    .min_by_key(|(_, f)| f.window_start_ms)
                    .map(|(k, _)| k.clone())
                {
                    self.failures.remove(&oldest);
                }
            }
        }
        for (key, _) in Self::keys(login, source) {
            let f = self.failures.entry(key).or_insert(Failures {
                count: 0,
                window_start_ms: now_ms,
            });
            if f.window_start_ms + Self::WINDOW_MS <= now_ms {
                *f = Failures {
                    count: 0,
                    window_start_ms: now_ms,
                };
            }
            f.count += 1;
        }
    }

    /// A correct password clears the pair's failures (not the source's).
    pub fn succeeded(&mut self, login: &str, source: &str) {
        let [(pair, _), _] = Self::keys(login, source);
        self.failures.remove(&pair);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_guard_locks_the_pair_then_the_source() {
        let mut g = LoginGuard::default();
        for i in 0..LoginGuard::PAIR_FAILURES {
            assert_eq!(
                g.locked_for_ms("acme/alice", "10.0.0.1", 1000),
                None,
                "after {i}"
            );
            g.failed("acme/alice", "10.0.0.1", 1000);
        }
        assert_eq!(
            g.locked_for_ms("acme/alice", "10.0.0.1", 2000),
            Some(LoginGuard::WINDOW_MS - 1000)
        );
        // Another source is not locked out of alice; the window ends the lock.
        assert_eq!(g.locked_for_ms("acme/alice", "10.0.0.2", 2000), None);
        assert_eq!(
            g.locked_for_ms("acme/alice", "10.0.0.1", 1000 + LoginGuard::WINDOW_MS),
            None
        );
        // A source guessing across many logins is locked for all of them.
        let mut g = LoginGuard::default();
        for i in 0..LoginGuard::SOURCE_FAILURES {
            g.failed(&format!("acme/user{i}"), "10.0.0.9", 5);
        }
        assert!(g
            .locked_for_ms("acme/someone-else", "10.0.0.9", 6)
            .is_some());
        // Success clears the pair only.
        let mut g = LoginGuard::default();
        g.failed("acme/bob", "10.0.0.3", 0);
        g.succeeded("acme/bob", "10.0.0.3");
        assert_eq!(g.failures.len(), 1);
    }

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn api_tokens_round_trip() {
        let t = new_api_token();
        let (id, secret) = split_api_token(&t.plaintext).unwrap();
        assert_eq!(id, t.id);
        assert!(api_token_matches(secret, &t.secret_sha256));
        assert!(!api_token_matches("other", &t.secret_sha256));
        assert!(split_api_token("tdm_short_x").is_none());
        assert!(split_api_token("Bearer x").is_none());
    }

    #[test]
    fn session_tokens_are_signed_and_expire() {
        let keys = SessionKeys::new([7; 32]);
        let claims = SessionClaims {
            sub: "u1".into(),
            tenant: Some("acme".into()),
            role: "agent".into(),
            ver: 1,
            exp: 10_000,
        };
        let t = keys.issue(&claims);
        assert_eq!(keys.verify(&t, 9_999), Some(claims.clone()));
        assert_eq!(keys.verify(&t, 10_000), None, "expired");
        assert_eq!(SessionKeys::new([8; 32]).verify(&t, 0), None, "other key");
        // A payload edited to claim another role fails the signature.
        let forged = SessionClaims {
            role: "system_admin".into(),
            ..claims
        };
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let sig = t.split_once('.').unwrap().1;
        assert_eq!(keys.verify(&format!("tds_{forged_payload}.{sig}"), 0), None);
        assert_eq!(keys.verify("tds_garbage", 0), None);
    }

    #[test]
    fn ranks_order_roles() {
        assert!(rank("system_admin") > rank("tenant_admin"));
        assert!(rank("tenant_admin") > rank("supervisor"));
        assert!(rank("supervisor") > rank("agent"));
        assert_eq!(rank("agent"), rank("qa"));
        assert_eq!(rank("nobody"), 0);
    }
}
