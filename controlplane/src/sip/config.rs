//! The `[sip]` section: listeners, tenants, accounts, trunks, routes and protection limits.

use super::registrar::RegistrarLimits;
use super::transaction::Timers;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    pub enabled: bool,
    pub listen_udp: Option<SocketAddr>,
    pub listen_tcp: Option<SocketAddr>,
    pub listen_tls: Option<SocketAddr>,
    /// PEM certificate chain and private key for TLS; without them a self-signed pair is made
    /// at start (fine for the demo and tests, not for phones that verify).
    pub tls_certificate: Option<std::path::PathBuf>,
    pub tls_private_key: Option<std::path::PathBuf>,
    /// Host (and port) written into our Via and Contact; default: the UDP listen address.
    pub advertise: Option<String>,
    /// Realm used when a request names no tenant domain.
    pub default_realm: Option<String>,
    pub t1_ms: u64,
    pub no_answer_timeout_s: u64,
    /// Calls at once across all tenants; beyond it INVITEs get 503 with Retry-After.
    pub max_calls: usize,
    pub nonce_ttl_s: u64,
    /// Digest challenges offered, most preferred first (RFC 8760). Some deployed clients fail on
    /// any challenge they do not know (baresip 1.0's libre answers ENOSYS when one names
    /// SHA-256): offer only MD5 to such fleets.
    pub digest_algorithms: Vec<String>,
    pub auth_failures_before_lockout: u32,
    pub lockout_s: u64,
    /// Per source address, per second; 0 = unlimited.
    pub invite_rate_per_source: f64,
    pub register_rate_per_source: f64,
    pub rate_burst: f64,
    pub min_expires: u32,
    pub max_expires: u32,
    /// OPTIONS keep-alive interval to registered contacts; 0 = off.
    pub options_ping_s: u64,
    /// Unanswered keep-alives in a row before a contact is dropped.
    pub ping_failures: u32,
    /// A caller who hangs up while queued and calls the same queue again within this many
    /// seconds gets its old place and waiting time back (0: off).
    pub queue_resume_grace_s: u64,
    /// Queued callbacks (a queue's `callback_key`): attempts to reach the customer before
    /// giving up, the wait between failed attempts, and how long one attempt may take to be
    /// answered.
    pub queue_callback_attempts: u32,
    pub queue_callback_retry_s: u64,
    pub queue_callback_dial_timeout_s: u64,
    /// Codecs the B2BUA adds to every offer it sends on (after the offerer's own, those it
    /// lacks), so that an answerer without the offerer's codecs can still take the call: the
    /// data plane then transcodes between the legs. PCMU, PCMA, G722, opus; empty: offers
    /// carry the offerer's codecs only and nothing is transcoded.
    pub transcode: Vec<String>,
    pub tenants: Vec<TenantConfig>,
    pub accounts: Vec<AccountConfig>,
    pub trunks: Vec<TrunkConfig>,
    pub routes: Vec<RouteConfig>,
    /// Contact-centre queues and agents (`[[sip.queues]]`, `[[sip.agents]]`), seeded into
    /// storage on the first start like the entries above.
    pub queues: Vec<super::queues::QueueDef>,
    pub agents: Vec<super::queues::AgentDef>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub name: String,
    /// SIP domain, also the digest realm of the tenant's accounts.
    pub domain: String,
    pub max_calls: Option<usize>,
    /// For E.164 normalisation of national numbers ("44" turns 020… into +4420…).
    pub country_code: Option<String>,
    /// The codecs the B2BUA adds to offers on this tenant's calls, instead of `[sip] transcode`
    /// (`[]`: none, so nothing is transcoded); unset: the global list.
    #[serde(default)]
    pub transcode: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    pub tenant: String,
    pub user: String,
    pub password: String,
    /// How keys pressed on the other leg of a call reach this account's phone (as caller or
    /// callee), like a trunk's.
    #[serde(default)]
    pub dtmf: DtmfMode,
}

/// A SIP account as the registrar checks it: digest HA1s in its tenant's realm, never the
/// password (storage keeps only these).
#[derive(Debug, Clone, PartialEq)]
pub struct DigestAccount {
    pub tenant: String,
    pub user: String,
    pub ha1_md5: String,
    pub ha1_sha256: String,
    /// How keys reach the account's phone (`AccountConfig::dtmf`).
    pub dtmf: DtmfMode,
}

/// What the API tells the SIP engine. Account changes (the frequent ones: provisioning agents)
/// travel one by one; anything else sends the whole directory.
#[derive(Debug, Clone, PartialEq)]
pub enum DirectoryUpdate {
    /// Everything as read from storage; account changes numbered above `after` were not yet
    /// committed when it was read and must be applied again on top of it.
    Full {
        directory: SipDirectory,
        after: u64,
        /// The API's change number this directory was read at (reported back once applied).
        generation: u64,
    },
    Account {
        seq: u64,
        change: AccountChange,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum AccountChange {
    Upsert(DigestAccount),
    Remove { tenant: String, user: String },
}

/// Tenants, accounts, trunks and routes: what the API changes at run time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SipDirectory {
    pub tenants: Vec<TenantConfig>,
    pub accounts: Vec<DigestAccount>,
    pub trunks: Vec<TrunkConfig>,
    pub routes: Vec<RouteConfig>,
    pub queues: Vec<super::queues::QueueDef>,
    pub agents: Vec<super::queues::AgentDef>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    pub name: String,
    pub tenant: String,
    /// Where calls routed to this trunk are sent.
    pub address: SocketAddr,
    /// Source addresses (`ip` or `ip/prefix`) whose INVITEs are accepted as this trunk's without
    /// authentication.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Credentials the carrier challenges us with (digest), for our INVITEs and REGISTERs.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Keep a registration at the trunk (`sip:<username>@<address>`), refreshed at half-time.
    #[serde(default)]
    pub register: bool,
    #[serde(default = "default_trunk_expires")]
    pub register_expires_s: u32,
    /// How keys pressed on the other leg of a call reach this trunk.
    #[serde(default)]
    pub dtmf: DtmfMode,
}

/// How a peer is sent the keys pressed on the other leg of its call.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DtmfMode {
    /// RFC 4733 events in its RTP stream (relayed as they came; in-band tones pass in the audio).
    #[default]
    Rfc4733,
    /// In-dialog SIP INFO (`application/dtmf-relay`), one per key; nothing of the keys in RTP.
    Info,
    /// `Info` when its SDP does not take `telephone-event/8000`, else `Rfc4733`.
    Auto,
}

impl DtmfMode {
    pub fn parse(s: &str) -> Option<DtmfMode> {
        match s {
            "rfc4733" => Some(DtmfMode::Rfc4733),
            "info" => Some(DtmfMode::Info),
            "auto" => Some(DtmfMode::Auto),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DtmfMode::Rfc4733 => "rfc4733",
            DtmfMode::Info => "info",
            DtmfMode::Auto => "auto",
        }
    }

    /// Whether a peer is sent keys as SIP INFO, given whether its SDP takes telephone-event.
    pub fn sends_info(self, takes_events: bool) -> bool {
        match self {
            DtmfMode::Rfc4733 => false,
            DtmfMode::Info => true,
            DtmfMode::Auto => !takes_events,
        }
    }
}

fn default_trunk_expires() -> u32 {
    600
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub tenant: String,
    /// Dialled user part: exact (`2000`), prefix (`44*`) or anything (`*`).
    #[serde(rename = "match")]
    pub pattern: String,
    /// `user:<name>` (a registered account), `uri:sip:…` (a fixed target), `trunk:<name>`,
    /// `queue:<name>` (the tenant's ACD queue) or `conference:<room>` (a room of the tenant's,
    /// mixed on one core: every call routed there hears all the others).
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    User(String),
    Uri(String),
    Trunk(String),
    Queue(String),
    Conference(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub tenant: String,
    pub target: RouteTarget,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            enabled: true,
            listen_udp: Some(SocketAddr::from(([127, 0, 0, 1], 5060))),
            listen_tcp: Some(SocketAddr::from(([127, 0, 0, 1], 5060))),
            listen_tls: Some(SocketAddr::from(([127, 0, 0, 1], 5061))),
            tls_certificate: None,
            tls_private_key: None,
            advertise: None,
            default_realm: None,
            t1_ms: 500,
            no_answer_timeout_s: 60,
            max_calls: 20_000,
            nonce_ttl_s: 300,
            digest_algorithms: vec!["SHA-256".into(), "MD5".into()],
            auth_failures_before_lockout: 10,
            lockout_s: 600,
            invite_rate_per_source: 0.0,
            register_rate_per_source: 0.0,
            rate_burst: 50.0,
            min_expires: 60,
            max_expires: 3600,
            options_ping_s: 30,
            ping_failures: 3,
            queue_resume_grace_s: 0,
            queue_callback_attempts: 3,
            queue_callback_retry_s: 60,
            queue_callback_dial_timeout_s: 45,
            transcode: ["PCMU", "PCMA", "G722", "opus"].map(String::from).to_vec(),
            tenants: Vec::new(),
            accounts: Vec::new(),
            trunks: Vec::new(),
            routes: Vec::new(),
            queues: Vec::new(),
            agents: Vec::new(),
        }
    }
}

pub fn parse_target(target: &str) -> Option<RouteTarget> {
    let (kind, value) = target.split_once(':')?;
    match kind {
        "user" if !value.is_empty() => Some(RouteTarget::User(value.to_string())),
        "uri" if value.starts_with("sip:") => Some(RouteTarget::Uri(value.to_string())),
        "trunk" if !value.is_empty() => Some(RouteTarget::Trunk(value.to_string())),
        "queue" if !value.is_empty() => Some(RouteTarget::Queue(value.to_string())),
        "conference" if !value.is_empty() => Some(RouteTarget::Conference(value.to_string())),
        _ => None,
    }
}

pub(crate) fn cidr_contains(cidr: &str, ip: IpAddr) -> bool {
    let (net, bits) = match cidr.split_once('/') {
        Some((net, bits)) => (net, bits.parse::<u32>().ok()),
        None => (cidr, None),
    };
    let Ok(net) = net.parse::<IpAddr>() else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let bits = bits.unwrap_or(32).min(32);
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let bits = bits.unwrap_or(128).min(128);
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// Every codec of a `transcode` list is one the data plane can produce.
pub fn check_transcode(field: &str, codecs: &[String]) -> Result<(), String> {
    match codecs.iter().find(|c| !crate::ng::codecs::is_producible(c)) {
        Some(bad) => Err(format!(
            "{field}: {bad} is not a codec the data plane transcodes (PCMU, PCMA, G722, opus)"
        )),
        None => Ok(()),
    }
}

impl SipConfig {
    /// The codecs offers on `tenant`'s calls get added: its own list, else the global one.
    pub fn transcode_for(&self, tenant: &str) -> &[String] {
        self.tenants
            .iter()
            .find(|t| t.name == tenant)
            .and_then(|t| t.transcode.as_deref())
            .unwrap_or(&self.transcode)
    }

    /// Checks references between sections; the appliance refuses to start on an error.
    pub fn validate(&self) -> Result<(), String> {
        let tenant = |name: &str| self.tenants.iter().any(|t| t.name == name);
        for a in &self.accounts {
            if !tenant(&a.tenant) {
                return Err(format!(
                    "sip.accounts: {}: unknown tenant {}",
                    a.user, a.tenant
                ));
            }
        }
        for t in &self.trunks {
            if !tenant(&t.tenant) {
                return Err(format!(
                    "sip.trunks: {}: unknown tenant {}",
                    t.name, t.tenant
                ));
            }
            if t.register && (t.username.is_none() || t.password.is_none()) {
                return Err(format!(
                    "sip.trunks: {}: register needs username and password",
                    t.name
                ));
            }
            for a in &t.allow {
                let net = a.split('/').next().unwrap_or(a);
                if net.parse::<IpAddr>().is_err() {
                    return Err(format!("sip.trunks: {}: bad allow entry {a}", t.name));
                }
            }
        }
        for q in &self.queues {
            if !tenant(&q.tenant) {
                return Err(format!(
                    "sip.queues: {}: unknown tenant {}",
                    q.name, q.tenant
                ));
            }
            q.validate().map_err(|e| format!("sip.queues: {e}"))?;
        }
        let queue = |tenant: &str, name: &str| {
            self.queues
                .iter()
                .any(|q| q.tenant == tenant && q.name == name)
        };
        for q in &self.queues {
            if let Some(to) = q.overflow.as_deref().and_then(|o| o.strip_prefix("queue:")) {
                if !queue(&q.tenant, to) {
                    return Err(format!(
                        "sip.queues: {}: unknown overflow queue {to}",
                        q.name
                    ));
                }
            }
        }
        for a in &self.agents {
            if !tenant(&a.tenant) {
                return Err(format!(
                    "sip.agents: {}: unknown tenant {}",
                    a.name, a.tenant
                ));
            }
            a.validate().map_err(|e| format!("sip.agents: {e}"))?;
            if let Some(m) = a.queues.iter().find(|m| !queue(&a.tenant, &m.queue)) {
                return Err(format!("sip.agents: {}: unknown queue {}", a.name, m.queue));
            }
        }
        for r in &self.routes {
            if !tenant(&r.tenant) {
                return Err(format!(
                    "sip.routes: {}: unknown tenant {}",
                    r.pattern, r.tenant
                ));
            }
            match parse_target(&r.target) {
                None => {
                    return Err(format!(
                        "sip.routes: {}: bad target {}",
                        r.pattern, r.target
                    ))
                }
                Some(RouteTarget::Trunk(name)) if self.trunk(&name).is_none() => {
                    return Err(format!("sip.routes: {}: unknown trunk {name}", r.pattern))
                }
                Some(RouteTarget::Uri(uri))
                    if super::message::SipUri::parse(&uri)
                        .and_then(|u| u.socket_addr())
                        .is_none() =>
                {
                    return Err(format!(
                        "sip.routes: {}: {uri} needs an IP address host",
                        r.pattern
                    ))
                }
                _ => {}
            }
        }
        if self.digest_algorithms.is_empty()
            || self
                .digest_algorithms
                .iter()
                .any(|a| super::digest::Algorithm::parse(a).is_none())
        {
            return Err("sip.digest_algorithms: list of \"SHA-256\" and/or \"MD5\"".into());
        }
        if self.tls_certificate.is_some() != self.tls_private_key.is_some() {
            return Err("sip.tls_certificate and sip.tls_private_key go together".into());
        }
        check_transcode("sip.transcode", &self.transcode)?;
        for t in &self.tenants {
            if let Some(list) = &t.transcode {
                check_transcode(&format!("sip.tenants: {}: transcode", t.name), list)?;
            }
        }
        if self.t1_ms == 0 {
            return Err("sip.t1_ms must be positive".into());
        }
        Ok(())
    }

    pub fn timers(&self) -> Timers {
        let t1 = Duration::from_millis(self.t1_ms);
        Timers {
            t1,
            t2: t1 * 8,
            t4: t1 * 10,
        }
    }

    pub fn sent_by(&self) -> String {
        if let Some(a) = &self.advertise {
            return a.clone();
        }
        match self.listen_udp.or(self.listen_tcp) {
            Some(addr) => addr.to_string(),
            None => "127.0.0.1".into(),
        }
    }

    pub fn default_realm(&self) -> String {
        self.default_realm
            .clone()
            .or_else(|| self.tenants.first().map(|t| t.domain.clone()))
            .unwrap_or_else(|| "tandem".into())
    }

    pub fn realm_for(&self, host: &str) -> Option<String> {
        self.tenants
            .iter()
            .find(|t| t.domain.eq_ignore_ascii_case(host))
            .map(|t| t.domain.clone())
    }

    pub fn tenant_domain(&self, tenant: &str) -> Option<String> {
        self.tenants
            .iter()
            .find(|t| t.name == tenant)
            .map(|t| t.domain.clone())
    }

    pub fn tenant_max_calls(&self, tenant: &str) -> Option<usize> {
        self.tenants
            .iter()
            .find(|t| t.name == tenant)
            .and_then(|t| t.max_calls)
    }

    pub fn trunk(&self, name: &str) -> Option<&TrunkConfig> {
        self.trunks.iter().find(|t| t.name == name)
    }

    pub fn trunk_for_source(&self, ip: IpAddr) -> Option<&TrunkConfig> {
        self.trunks
            .iter()
            .find(|t| t.allow.iter().any(|a| cidr_contains(a, ip)))
    }

    /// The first route of the caller's tenant whose pattern matches the dialled user part.
    pub fn route(&self, tenant: &str, dialled: &str) -> Option<Route> {
        self.routes
            .iter()
            .filter(|r| r.tenant == tenant)
            .find(|r| match r.pattern.strip_suffix('*') {
                Some(prefix) => dialled.starts_with(prefix),
                None => r.pattern == dialled,
            })
            .and_then(|r| {
                Some(Route {
                    tenant: r.tenant.clone(),
                    target: parse_target(&r.target)?,
                })
            })
    }

    /// E.164 normalisation: `+CC…` kept, `00CC…` → `+CC…`, `0…` → `+<country code>…` when the
    /// tenant has one; short internal numbers (extensions, queues) are left as they are.
    pub fn normalize(&self, tenant: &str, number: &str) -> String {
        let digits: String = number
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
            .collect();
        if digits.starts_with('+')
            || digits.len() < 7
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return digits;
        }
        if let Some(rest) = digits.strip_prefix("00") {
            return format!("+{rest}");
        }
        let cc = self
            .tenants
            .iter()
            .find(|t| t.name == tenant)
            .and_then(|t| t.country_code.clone());
        match (digits.strip_prefix('0'), cc) {
            (Some(national), Some(cc)) => format!("+{cc}{national}"),
            _ => digits,
        }
    }

    /// The config file's accounts with their HA1s computed.
    pub fn digest_accounts(&self) -> Vec<DigestAccount> {
        use super::digest::Algorithm;
        self.accounts
            .iter()
            .filter_map(|a| {
                let realm = self.tenant_domain(&a.tenant)?.to_ascii_lowercase();
                let input = format!("{}:{realm}:{}", a.user, a.password);
                Some(DigestAccount {
                    tenant: a.tenant.clone(),
                    user: a.user.clone(),
                    ha1_md5: Algorithm::Md5.hash(&input),
                    ha1_sha256: Algorithm::Sha256.hash(&input),
                    dtmf: a.dtmf,
                })
            })
            .collect()
    }

    pub fn algorithms(&self) -> Vec<super::digest::Algorithm> {
        self.digest_algorithms
            .iter()
            .filter_map(|a| super::digest::Algorithm::parse(a))
            .collect()
    }

    pub fn registrar_limits(&self) -> RegistrarLimits {
        RegistrarLimits {
            min_expires: self.min_expires,
            max_expires: self.max_expires,
            ..RegistrarLimits::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matching() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(cidr_contains("127.0.0.1", ip("127.0.0.1")));
        assert!(!cidr_contains("127.0.0.1", ip("127.0.0.2")));
        assert!(cidr_contains("10.0.0.0/8", ip("10.9.8.7")));
        assert!(!cidr_contains("10.0.0.0/8", ip("11.0.0.1")));
        assert!(cidr_contains("0.0.0.0/0", ip("1.2.3.4")));
        assert!(cidr_contains("::1", ip("::1")));
        assert!(!cidr_contains("garbage", ip("::1")));
    }

    #[test]
    fn e164_normalisation() {
        let mut cfg = SipConfig::default();
        cfg.tenants.push(TenantConfig {
            name: "acme".into(),
            domain: "acme.test".into(),
            max_calls: None,
            country_code: Some("44".into()),
            transcode: None,
        });
        assert_eq!(cfg.normalize("acme", "02079460000"), "+442079460000");
        assert_eq!(cfg.normalize("acme", "0033 1 23 45 67 89"), "+33123456789");
        assert_eq!(cfg.normalize("acme", "+1 (555) 010-0000"), "+15550100000");
        assert_eq!(cfg.normalize("acme", "2000"), "2000");
        assert_eq!(cfg.normalize("other", "02079460000"), "02079460000");
    }

    #[test]
    fn routes_match_in_order_within_the_tenant() {
        let mut cfg = SipConfig::default();
        for (tenant, pattern, target) in [
            ("acme", "2000", "user:agent1"),
            ("acme", "44*", "uri:sip:x@127.0.0.1:5080"),
            ("acme", "*", "user:fallback"),
            ("beta", "*", "user:b"),
        ] {
            cfg.routes.push(RouteConfig {
                tenant: tenant.into(),
                pattern: pattern.into(),
                target: target.into(),
            });
        }
        let t = |tenant: &str, n: &str| cfg.route(tenant, n).map(|r| r.target);
        assert_eq!(t("acme", "2000"), Some(RouteTarget::User("agent1".into())));
        assert_eq!(
            t("acme", "4420"),
            Some(RouteTarget::Uri("sip:x@127.0.0.1:5080".into()))
        );
        assert_eq!(t("acme", "99"), Some(RouteTarget::User("fallback".into())));
        assert_eq!(t("beta", "2000"), Some(RouteTarget::User("b".into())));
        assert_eq!(t("gamma", "2000"), None);
    }
}
