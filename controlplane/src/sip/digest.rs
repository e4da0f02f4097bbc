//! HTTP Digest for SIP (RFC 3261 §22, RFC 7616 hashing, RFC 8760 SHA-256 for SIP).
//!
//! Nonces are stateless: `<issue time>.<HMAC-SHA256(secret, time:realm)>`, so any worker can
//! verify them and a restart only invalidates outstanding challenges. An expired nonce with a
//! valid signature and correct credentials is answered with `stale=true` (the client retries
//! without asking the user again).

use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest as _, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    pub fn parse(name: &str) -> Option<Algorithm> {
        match name.to_ascii_uppercase().as_str() {
            "MD5" => Some(Algorithm::Md5),
            "SHA-256" => Some(Algorithm::Sha256),
            _ => None,
        }
    }

    pub fn hash(self, input: &str) -> String {
        match self {
            Algorithm::Md5 => hex(&Md5::digest(input.as_bytes())),
            Algorithm::Sha256 => hex(&Sha256::digest(input.as_bytes())),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Parses `Digest k=v, k="v, with commas", ...` into lower-cased keys and unquoted values.
pub fn parse_params(header: &str) -> Option<Vec<(String, String)>> {
    let rest = header.trim();
    let (scheme, rest) = rest.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return None;
    }
    let mut params = Vec::new();
    let mut chars = rest.char_indices().peekable();
    let bytes = rest;
    loop {
        while chars
            .peek()
            .is_some_and(|(_, c)| c.is_whitespace() || *c == ',')
        {
            chars.next();
        }
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut eq = None;
        for (i, c) in chars.by_ref() {
            if c == '=' {
                eq = Some(i);
                break;
            }
        }
        let eq = eq?;
        let key = bytes[start..eq].trim().to_ascii_lowercase();
        while chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
            chars.next();
        }
        let value = if chars.peek().is_some_and(|(_, c)| *c == '"') {
            chars.next();
            let mut value = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return None;
            }
            value
        } else {
            let mut value = String::new();
            while let Some(&(_, c)) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            value.trim().to_string()
        };
        if key.is_empty() {
            return None;
        }
        params.push((key, value));
    }
    Some(params)
}

fn get<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// What a client sent in Authorization / Proxy-Authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Algorithm,
    pub qop: Option<String>,
    pub nc: Option<String>,
    pub cnonce: Option<String>,
}

impl Credentials {
    pub fn parse(header: &str) -> Option<Credentials> {
        let params = parse_params(header)?;
        let algorithm = match get(&params, "algorithm") {
            Some(a) => Algorithm::parse(a)?,
            None => Algorithm::Md5,
        };
        Some(Credentials {
            username: get(&params, "username")?.to_string(),
            realm: get(&params, "realm")?.to_string(),
            nonce: get(&params, "nonce")?.to_string(),
            uri: get(&params, "uri")?.to_string(),
            response: get(&params, "response")?.to_ascii_lowercase(),
            algorithm,
            qop: get(&params, "qop").map(str::to_string),
            nc: get(&params, "nc").map(str::to_string),
            cnonce: get(&params, "cnonce").map(str::to_string),
        })
    }
}

/// The expected `response` value (RFC 7616 §3.4.1, qop=auth or none).
#[allow(clippy::too_many_arguments)]
pub fn response(
    algorithm: Algorithm,
    username: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    qop: Option<(&str, &str, &str)>,
) -> String {
    let ha1 = algorithm.hash(&format!("{username}:{realm}:{password}"));
    response_from_ha1(algorithm, &ha1, method, uri, nonce, qop)
}

/// The expected `response` from a stored HA1 (`H(username:realm:password)`), which is what a
/// registrar keeps instead of the password.
pub fn response_from_ha1(
    algorithm: Algorithm,
    ha1: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    qop: Option<(&str, &str, &str)>,
) -> String {
    let ha2 = algorithm.hash(&format!("{method}:{uri}"));
    match qop {
        Some((qop, nc, cnonce)) => {
            algorithm.hash(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"))
        }
        None => algorithm.hash(&format!("{ha1}:{nonce}:{ha2}")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Right password, old nonce: challenge again with `stale=true`.
    Stale,
    /// Wrong password, forged or foreign nonce, unknown qop.
    Invalid,
}

pub struct Authenticator {
    secret: [u8; 32],
    pub nonce_ttl_s: u64,
}

impl Authenticator {
    pub fn new(secret: [u8; 32], nonce_ttl_s: u64) -> Authenticator {
        Authenticator {
            secret,
            nonce_ttl_s,
        }
    }

    fn signature(&self, issued: u64, realm: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("any key size");
        mac.update(format!("{issued}:{realm}").as_bytes());
        hex(&mac.finalize().into_bytes()[..16])
    }

    pub fn nonce(&self, now_unix_s: u64, realm: &str) -> String {
        format!("{now_unix_s:x}.{}", self.signature(now_unix_s, realm))
    }

    /// The challenge headers' values, one per algorithm in order of preference (RFC 8760 §2.4).
    pub fn challenges(
        &self,
        now_unix_s: u64,
        realm: &str,
        stale: bool,
        algorithms: &[Algorithm],
    ) -> Vec<String> {
        let nonce = self.nonce(now_unix_s, realm);
        let stale = if stale { ", stale=true" } else { "" };
        algorithms
            .iter()
            .map(|a| {
                format!(
                    "Digest realm=\"{realm}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"{stale}",
                    a.name()
                )
            })
            .collect()
    }

    /// Checks credentials against a plain password (trunk peers in tests, the config's accounts).
    pub fn verify(
        &self,
        now_unix_s: u64,
        credentials: &Credentials,
        method: &str,
        password: &str,
    ) -> Verdict {
        let ha1 = credentials.algorithm.hash(&format!(
            "{}:{}:{password}",
            credentials.username, credentials.realm
        ));
        self.verify_ha1(now_unix_s, credentials, method, &ha1)
    }

    /// Checks credentials against the HA1 for `credentials.algorithm`.
    pub fn verify_ha1(
        &self,
        now_unix_s: u64,
        credentials: &Credentials,
        method: &str,
        ha1: &str,
    ) -> Verdict {
        let Some((issued_hex, signature)) = credentials.nonce.split_once('.') else {
            return Verdict::Invalid;
        };
        let Ok(issued) = u64::from_str_radix(issued_hex, 16) else {
            return Verdict::Invalid;
        };
        if signature != self.signature(issued, &credentials.realm) {
            return Verdict::Invalid;
        }
        let qop = match credentials.qop.as_deref() {
            None => None,
            Some("auth") => match (&credentials.nc, &credentials.cnonce) {
                (Some(nc), Some(cnonce)) => Some(("auth", nc.as_str(), cnonce.as_str())),
                _ => return Verdict::Invalid,
            },
            Some(_) => return Verdict::Invalid,
        };
        let expected = response_from_ha1(
            credentials.algorithm,
            ha1,
            method,
            &credentials.uri,
            &credentials.nonce,
            qop,
        );
        if !constant_time_eq(expected.as_bytes(), credentials.response.as_bytes()) {
            return Verdict::Invalid;
        }
        if now_unix_s.saturating_sub(issued) > self.nonce_ttl_s || issued > now_unix_s + 60 {
            return Verdict::Stale;
        }
        Verdict::Ok
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Client side (outbound registration to a carrier, tests): answers a challenge.
pub fn authorize(
    challenge: &str,
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
    nc: u32,
) -> Option<String> {
    let params = parse_params(challenge)?;
    let realm = get(&params, "realm")?;
    let nonce = get(&params, "nonce")?;
    let algorithm = match get(&params, "algorithm") {
        Some(a) => Algorithm::parse(a)?,
        None => Algorithm::Md5,
    };
    let qop_offered = get(&params, "qop").is_some_and(|q| q.split(',').any(|q| q.trim() == "auth"));
    let nc = format!("{nc:08x}");
    let qop = qop_offered.then_some(("auth", nc.as_str(), cnonce));
    let response = response(
        algorithm, username, realm, password, method, uri, nonce, qop,
    );
    let mut header = format!(
        "Digest username=\"{username}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm={}",
        algorithm.name()
    );
    if qop_offered {
        header.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
    }
    if let Some(opaque) = get(&params, "opaque") {
        header.push_str(&format!(", opaque=\"{opaque}\""));
    }
    Some(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_2617_md5_example() {
        // RFC 2617 §3.5's worked example (HTTP, but the computation is the same).
        let r = response(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            Some(("auth", "00000001", "0a4f113b")),
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn rfc_7616_sha256_example() {
        let r = response(
            Algorithm::Sha256,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            Some((
                "auth",
                "00000001",
                "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            )),
        );
        assert_eq!(
            r,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn challenge_answer_verify_round_trip_both_algorithms() {
        let auth = Authenticator::new([7; 32], 300);
        for (i, challenge) in auth
            .challenges(1000, "acme", false, &[Algorithm::Sha256, Algorithm::Md5])
            .iter()
            .enumerate()
        {
            let header = authorize(challenge, "agent1", "pw", "REGISTER", "sip:acme", "c1", 1)
                .expect("well-formed challenge");
            let creds = Credentials::parse(&header).expect("parses");
            assert_eq!(
                creds.algorithm,
                [Algorithm::Sha256, Algorithm::Md5][i],
                "preferred algorithm first"
            );
            assert_eq!(auth.verify(1010, &creds, "REGISTER", "pw"), Verdict::Ok);
            assert_eq!(
                auth.verify(1010, &creds, "REGISTER", "bad"),
                Verdict::Invalid
            );
            assert_eq!(auth.verify(1010, &creds, "INVITE", "pw"), Verdict::Invalid);
            assert_eq!(auth.verify(1400, &creds, "REGISTER", "pw"), Verdict::Stale);
        }
    }

    #[test]
    fn forged_nonce_and_foreign_realm_rejected() {
        let auth = Authenticator::new([7; 32], 300);
        let other = Authenticator::new([8; 32], 300);
        let challenge = &other.challenges(1000, "acme", false, &[Algorithm::Sha256])[0];
        let header = authorize(challenge, "a", "pw", "REGISTER", "sip:acme", "c", 1).unwrap();
        let creds = Credentials::parse(&header).unwrap();
        assert_eq!(
            auth.verify(1000, &creds, "REGISTER", "pw"),
            Verdict::Invalid
        );
        let mut moved = creds.clone();
        moved.realm = "other".into();
        assert_eq!(
            auth.verify(1000, &moved, "REGISTER", "pw"),
            Verdict::Invalid
        );
    }

    #[test]
    fn quoted_commas_and_escapes() {
        let p = parse_params(r#"Digest username="a\"b", realm="x, y", nc=00000001"#).unwrap();
        assert_eq!(get(&p, "username"), Some("a\"b"));
        assert_eq!(get(&p, "realm"), Some("x, y"));
        assert_eq!(get(&p, "nc"), Some("00000001"));
        assert!(parse_params(r#"Digest realm="unterminated"#).is_none());
        assert!(parse_params("Basic abc").is_none());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_headers_never_panic(s in ".{0,200}") {
            let _ = Credentials::parse(&s);
            let _ = parse_params(&s);
            let _ = authorize(&s, "u", "p", "INVITE", "sip:x", "c", 1);
        }
    }
}
