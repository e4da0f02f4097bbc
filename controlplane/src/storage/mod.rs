//! Durable storage: one interface, two back ends. SQLite (the embedded default: a file in the
//! data directory, WAL mode) and PostgreSQL (`storage.url = "postgres://…"`) run the same SQL
//! through sqlx's `Any` driver, so the same test suite proves both.
//!
//! Every tenant-scoped query takes the tenant as a bound parameter: an object of another tenant
//! is simply not found. Updates are optimistic: the caller passes the version it read and a
//! concurrent change makes the write fail with [`StoreError::VersionMismatch`].

mod acd;
mod read;
pub mod schema;

pub use acd::{Agent, Membership, Queue, QueueEventFilter, QueueEventRow, Skill};

use read::{Arg, Cols, FromRow, SqliteReader};

use serde::Serialize;
use sqlx::any::AnyPoolOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, AssertSqlSafe, Row};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("the object changed since it was read (version {current})")]
    VersionMismatch { current: i64 },
    #[error("storage: {0}")]
    Db(#[from] sqlx::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Storage {
    pool: AnyPool,
    /// SQLite's read path (see `read.rs`); None on PostgreSQL and for in-memory databases.
    reader: Option<std::sync::Arc<SqliteReader>>,
    pub backend: Backend,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A new row id: a UUIDv7, so ids sort in the order this process made them and every list's
/// `…, id` tie-break (rows of the same millisecond: an audit entry written right after another)
/// is creation order, not chance.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// A page of a list: at most `limit` items from `offset`, in `order` (a whitelisted SQL ORDER BY
/// built by the caller, never from raw input).
#[derive(Debug, Clone)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
    pub order: &'static str,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Listed<T> {
    pub items: Vec<T>,
    pub next_offset: Option<i64>,
}

fn listed<T>(mut items: Vec<T>, page: &Page) -> Listed<T> {
    let more = items.len() as i64 > page.limit;
    items.truncate(page.limit as usize);
    Listed {
        next_offset: more.then_some(page.offset + page.limit),
        items,
    }
}

fn unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.is_unique_violation() || d.message().contains("UNIQUE constraint failed")
        }
        _ => false,
    }
}

fn conflict(e: sqlx::Error, what: &str) -> StoreError {
    if unique_violation(&e) {
        StoreError::Conflict(format!("{what} already exists"))
    } else {
        StoreError::Db(e)
    }
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Tenant {
    /// Short immutable name used in paths (`/api/v1/tenants/{name}/…`).
    pub name: String,
    /// SIP domain, also the digest realm of the tenant's SIP accounts (immutable).
    pub domain: String,
    pub display_name: String,
    pub max_calls: Option<i64>,
    pub country_code: Option<String>,
    /// Codecs the B2BUA adds to offers on this tenant's calls (transcoding); `null`: the
    /// appliance's `[sip] transcode`.
    pub transcode: Option<Vec<String>>,
    pub version: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A tenant's transcode list as stored (JSON text; NULL when it uses the global list).
fn transcode_json(t: &Tenant) -> Option<String> {
    t.transcode.as_ref().map(acd::json_text)
}

impl FromRow for Tenant {
    fn from_row<R: Cols>(r: &R) -> Result<Tenant, sqlx::Error> {
        Ok(Tenant {
            name: r.col("name")?,
            domain: r.col("domain")?,
            display_name: r.col("display_name")?,
            max_calls: r.col("max_calls")?,
            country_code: r.col("country_code")?,
            transcode: r
                .col::<Option<String>>("transcode_json")?
                .map(|j| acd::json_list(&j)),
            version: r.col("version")?,
            created_ms: r.col("created_ms")?,
            updated_ms: r.col("updated_ms")?,
        })
    }
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct User {
    pub id: String,
    /// Absent for system administrators.
    pub tenant: Option<String>,
    pub username: String,
    pub display_name: String,
    pub role: String,
    #[serde(skip)]
    pub password_hash: String,
    pub version: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl FromRow for User {
    fn from_row<R: Cols>(r: &R) -> Result<User, sqlx::Error> {
        Ok(User {
            id: r.col("id")?,
            tenant: r.col("tenant")?,
            username: r.col("username")?,
            display_name: r.col("display_name")?,
            role: r.col("role")?,
            password_hash: r.col("password_hash")?,
            version: r.col("version")?,
            created_ms: r.col("created_ms")?,
            updated_ms: r.col("updated_ms")?,
        })
    }
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct ApiToken {
    pub id: String,
    pub tenant: Option<String>,
    pub name: String,
    pub role: String,
    #[serde(skip)]
    pub secret_sha256: String,
    /// User or token id that created it.
    pub created_by: String,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
}

impl FromRow for ApiToken {
    fn from_row<R: Cols>(r: &R) -> Result<ApiToken, sqlx::Error> {
        Ok(ApiToken {
            id: r.col("id")?,
            tenant: r.col("tenant")?,
            name: r.col("name")?,
            role: r.col("role")?,
            secret_sha256: r.col("secret_sha256")?,
            created_by: r.col("created_by")?,
            created_ms: r.col("created_ms")?,
            expires_ms: r.col("expires_ms")?,
            revoked_ms: r.col("revoked_ms")?,
        })
    }
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct SipAccount {
    pub id: String,
    pub tenant: String,
    pub username: String,
    pub display_name: String,
    #[serde(skip)]
    pub ha1_md5: String,
    #[serde(skip)]
    pub ha1_sha256: String,
    /// How keys pressed on the other leg reach the account's phone: `rfc4733`, `info`,
    /// `auto` (as for trunks).
    pub dtmf: String,
    pub version: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl SipAccount {
    /// What the SIP engine is told of the account.
    pub fn digest(&self) -> crate::sip::config::DigestAccount {
        crate::sip::config::DigestAccount {
            tenant: self.tenant.clone(),
            user: self.username.clone(),
            ha1_md5: self.ha1_md5.clone(),
            ha1_sha256: self.ha1_sha256.clone(),
            dtmf: crate::sip::config::DtmfMode::parse(&self.dtmf).unwrap_or_default(),
        }
    }
}

impl FromRow for SipAccount {
    fn from_row<R: Cols>(r: &R) -> Result<SipAccount, sqlx::Error> {
        Ok(SipAccount {
            id: r.col("id")?,
            tenant: r.col("tenant")?,
            username: r.col("username")?,
            display_name: r.col("display_name")?,
            ha1_md5: r.col("ha1_md5")?,
            ha1_sha256: r.col("ha1_sha256")?,
            dtmf: r.col("dtmf")?,
            version: r.col("version")?,
            created_ms: r.col("created_ms")?,
            updated_ms: r.col("updated_ms")?,
        })
    }
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Trunk {
    pub id: String,
    pub tenant: String,
    pub name: String,
    /// `ip:port` calls routed to this trunk are sent to.
    pub address: String,
    /// Source addresses (`ip` or `ip/prefix`) accepted as this trunk without authentication.
    pub allow: Vec<String>,
    pub username: Option<String>,
    #[serde(skip)]
    pub password: Option<String>,
    pub register: bool,
    pub register_expires_s: i64,
    /// How keys pressed on the other leg reach this trunk: `rfc4733` (default), `info`, `auto`.
    pub dtmf: String,
    pub version: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl FromRow for Trunk {
    fn from_row<R: Cols>(r: &R) -> Result<Trunk, sqlx::Error> {
        let allow: String = r.col("allow_json")?;
        Ok(Trunk {
            id: r.col("id")?,
            tenant: r.col("tenant")?,
            name: r.col("name")?,
            address: r.col("address")?,
            allow: serde_json::from_str(&allow).unwrap_or_default(),
            username: r.col("username")?,
            password: r.col("password")?,
            register: r.col::<i64>("register")? != 0,
            register_expires_s: r.col("register_expires_s")?,
            dtmf: r.col("dtmf")?,
            version: r.col("version")?,
            created_ms: r.col("created_ms")?,
            updated_ms: r.col("updated_ms")?,
        })
    }
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Route {
    pub id: String,
    pub tenant: String,
    /// Routes are tried in ascending position; the first whose pattern matches wins.
    pub position: i64,
    /// Dialled user part: exact (`2000`), prefix (`44*`) or anything (`*`).
    pub pattern: String,
    /// `user:<account>`, `trunk:<trunk name>` or `uri:sip:user@ip:port`.
    pub target: String,
    pub version: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl FromRow for Route {
    fn from_row<R: Cols>(r: &R) -> Result<Route, sqlx::Error> {
        Ok(Route {
            id: r.col("id")?,
            tenant: r.col("tenant")?,
            position: r.col("position")?,
            pattern: r.col("pattern")?,
            target: r.col("target")?,
            version: r.col("version")?,
            created_ms: r.col("created_ms")?,
            updated_ms: r.col("updated_ms")?,
        })
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CallRecordRow {
    pub id: String,
    pub tenant: String,
    /// `inbound` (from a trunk), `outbound` (to a trunk) or `internal`.
    pub direction: String,
    pub caller: String,
    pub dialled: String,
    pub target: String,
    pub caller_call_id: String,
    pub callee_call_id: Option<String>,
    pub started_ms: i64,
    pub answered_ms: Option<i64>,
    pub ended_ms: i64,
    pub setup_ms: Option<i64>,
    pub duration_ms: i64,
    /// `answered`, `busy`, `no_answer`, `cancelled`, `failed` or `rejected`.
    pub disposition: String,
    pub final_code: i64,
    pub ended_by: String,
    pub codecs: Vec<String>,
    /// Per-leg RTP/RTCP counters from the data plane. Kept as the stored JSON text: a record
    /// page passes it through without building a tree for every call.
    #[schema(value_type = Option<Object>)]
    pub media: Option<Box<serde_json::value::RawValue>>,
}

impl FromRow for CallRecordRow {
    fn from_row<R: Cols>(r: &R) -> Result<CallRecordRow, sqlx::Error> {
        let codecs: String = r.col("codecs")?;
        let media: Option<String> = r.col("media_json")?;
        Ok(CallRecordRow {
            id: r.col("id")?,
            tenant: r.col("tenant")?,
            direction: r.col("direction")?,
            caller: r.col("caller")?,
            dialled: r.col("dialled")?,
            target: r.col("target")?,
            caller_call_id: r.col("caller_call_id")?,
            callee_call_id: r.col("callee_call_id")?,
            started_ms: r.col("started_ms")?,
            answered_ms: r.col("answered_ms")?,
            ended_ms: r.col("ended_ms")?,
            setup_ms: r.col("setup_ms")?,
            duration_ms: r.col("duration_ms")?,
            disposition: r.col("disposition")?,
            final_code: r.col("final_code")?,
            ended_by: r.col("ended_by")?,
            codecs: codecs
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect(),
            media: media.and_then(|m| serde_json::value::RawValue::from_string(m).ok()),
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct CallFilter {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// Matches caller or dialled number (exact).
    pub number: Option<String>,
    pub direction: Option<String>,
    pub disposition: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct AuditEntry {
    pub id: String,
    pub at_ms: i64,
    pub tenant: Option<String>,
    /// `user:<id> (<name>)` or `token:<id> (<name>)`.
    pub actor: String,
    /// `create`, `update`, `delete` or `revoke`.
    pub action: String,
    pub object_type: String,
    pub object_id: String,
    /// Client address the change came from.
    pub source: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

impl FromRow for AuditEntry {
    fn from_row<R: Cols>(r: &R) -> Result<AuditEntry, sqlx::Error> {
        let detail: String = r.col("detail_json")?;
        Ok(AuditEntry {
            id: r.col("id")?,
            at_ms: r.col("at_ms")?,
            tenant: r.col("tenant")?,
            actor: r.col("actor")?,
            action: r.col("action")?,
            object_type: r.col("object_type")?,
            object_id: r.col("object_id")?,
            source: r.col("source")?,
            detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
        })
    }
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Webhook {
    pub id: String,
    pub tenant: String,
    pub url: String,
    #[serde(skip)]
    pub secret: String,
    /// Event types delivered (`call.offered`, `call.answered`, `call.ended`,
    /// `registration.changed`, the contact centre's `acd.<kind>`), or `*`.
    pub events: Vec<String>,
    pub active: bool,
    pub version: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl FromRow for Webhook {
    fn from_row<R: Cols>(r: &R) -> Result<Webhook, sqlx::Error> {
        let events: String = r.col("events")?;
        Ok(Webhook {
            id: r.col("id")?,
            tenant: r.col("tenant")?,
            url: r.col("url")?,
            secret: r.col("secret")?,
            events: events.split(',').map(str::to_string).collect(),
            active: r.col::<i64>("active")? != 0,
            version: r.col("version")?,
            created_ms: r.col("created_ms")?,
            updated_ms: r.col("updated_ms")?,
        })
    }
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Delivery {
    pub id: String,
    pub webhook_id: String,
    pub event_seq: i64,
    pub event_type: String,
    pub attempt: i64,
    /// HTTP status the receiver answered, absent when it could not be reached.
    pub status: Option<i64>,
    pub error: Option<String>,
    pub at_ms: i64,
}

impl FromRow for Delivery {
    fn from_row<R: Cols>(r: &R) -> Result<Delivery, sqlx::Error> {
        Ok(Delivery {
            id: r.col("id")?,
            webhook_id: r.col("webhook_id")?,
            event_seq: r.col("event_seq")?,
            event_type: r.col("event_type")?,
            attempt: r.col("attempt")?,
            status: r.col("status")?,
            error: r.col("error")?,
            at_ms: r.col("at_ms")?,
        })
    }
}

/// Everything the SIP engine needs from storage, read in one go.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    pub tenants: Vec<Tenant>,
    pub accounts: Vec<SipAccount>,
    pub trunks: Vec<Trunk>,
    pub routes: Vec<Route>,
    pub queues: Vec<Queue>,
    pub agents: Vec<Agent>,
    pub memberships: Vec<Membership>,
}

/// The engine's name for a tenant's trunk: trunk names are unique per tenant, not globally.
pub fn trunk_key(tenant: &str, name: &str) -> String {
    format!("{tenant}/{name}")
}

impl Directory {
    /// The SIP engine's view: trunk names qualified by tenant, routes pointing at those.
    pub fn to_sip(&self) -> crate::sip::config::SipDirectory {
        use crate::sip::config::{RouteConfig, TenantConfig, TrunkConfig};
        crate::sip::config::SipDirectory {
            tenants: self
                .tenants
                .iter()
                .map(|t| TenantConfig {
                    name: t.name.clone(),
                    domain: t.domain.clone(),
                    max_calls: t.max_calls.map(|m| m.max(0) as usize),
                    country_code: t.country_code.clone(),
                    transcode: t.transcode.clone(),
                })
                .collect(),
            accounts: self.accounts.iter().map(SipAccount::digest).collect(),
            trunks: self
                .trunks
                .iter()
                .filter_map(|t| {
                    Some(TrunkConfig {
                        name: trunk_key(&t.tenant, &t.name),
                        tenant: t.tenant.clone(),
                        address: t.address.parse().ok()?,
                        allow: t.allow.clone(),
                        username: t.username.clone(),
                        password: t.password.clone(),
                        register: t.register,
                        register_expires_s: t.register_expires_s.clamp(60, 86400) as u32,
                        dtmf: crate::sip::config::DtmfMode::parse(&t.dtmf).unwrap_or_default(),
                    })
                })
                .collect(),
            routes: self
                .routes
                .iter()
                .map(|r| RouteConfig {
                    tenant: r.tenant.clone(),
                    pattern: r.pattern.clone(),
                    target: match r.target.strip_prefix("trunk:") {
                        Some(name) => format!("trunk:{}", trunk_key(&r.tenant, name)),
                        None => r.target.clone(),
                    },
                })
                .collect(),
            queues: self
                .queues
                .iter()
                .map(|q| {
                    let mut def = q.def();
                    // An overflow to a trunk names it the way routes do.
                    if let Some(name) = def
                        .overflow
                        .as_deref()
                        .and_then(|o| o.strip_prefix("trunk:"))
                    {
                        def.overflow = Some(format!("trunk:{}", trunk_key(&q.tenant, name)));
                    }
                    def
                })
                .collect(),
            agents: acd::agent_defs(&self.agents, &self.memberships),
        }
    }
}

impl Storage {
    /// Writes the config file's `[sip]` tenants, accounts, trunks, routes, queues and agents
    /// where storage does not have them yet; what the API changed since is left alone.
    /// Returns how many entries were added and how many were already stored (and kept as
    /// stored: once seeded, storage wins and changes go through the API).
    pub async fn seed(
        &self,
        sip: &crate::sip::config::SipConfig,
    ) -> Result<(usize, usize), StoreError> {
        let now = now_ms();
        let (mut added, mut kept) = (0, 0);
        let mut add = |r: Result<(), StoreError>| -> Result<(), StoreError> {
            match r {
                Ok(()) => {
                    added += 1;
                    Ok(())
                }
                Err(StoreError::Conflict(_)) => {
                    kept += 1;
                    Ok(())
                }
                Err(e) => Err(e),
            }
        };
        for t in &sip.tenants {
            add(self
                .create_tenant(&Tenant {
                    name: t.name.clone(),
                    domain: t.domain.to_ascii_lowercase(),
                    display_name: t.name.clone(),
                    max_calls: t.max_calls.map(|m| m as i64),
                    country_code: t.country_code.clone(),
                    transcode: t.transcode.clone(),
                    version: 1,
                    created_ms: now,
                    updated_ms: now,
                })
                .await)?;
        }
        for a in sip.digest_accounts() {
            add(self
                .create_account(&SipAccount {
                    id: new_id(),
                    tenant: a.tenant,
                    username: a.user.clone(),
                    display_name: a.user,
                    ha1_md5: a.ha1_md5,
                    ha1_sha256: a.ha1_sha256,
                    dtmf: a.dtmf.as_str().to_string(),
                    version: 1,
                    created_ms: now,
                    updated_ms: now,
                })
                .await)?;
        }
        for t in &sip.trunks {
            add(self
                .create_trunk(&Trunk {
                    id: new_id(),
                    tenant: t.tenant.clone(),
                    name: t.name.clone(),
                    address: t.address.to_string(),
                    allow: t.allow.clone(),
                    username: t.username.clone(),
                    password: t.password.clone(),
                    register: t.register,
                    register_expires_s: t.register_expires_s as i64,
                    dtmf: t.dtmf.as_str().to_string(),
                    version: 1,
                    created_ms: now,
                    updated_ms: now,
                })
                .await)?;
        }
        for (i, r) in sip.routes.iter().enumerate() {
            add(self
                .create_route(&Route {
                    id: new_id(),
                    tenant: r.tenant.clone(),
                    // Config order is match order.
                    position: (i as i64 + 1) * 10,
                    pattern: r.pattern.clone(),
                    target: r.target.clone(),
                    version: 1,
                    created_ms: now,
                    updated_ms: now,
                })
                .await)?;
        }
        self.seed_contact_centre(sip, now, &mut add).await?;
        Ok((added, kept))
    }

    /// `[[sip.queues]]` and `[[sip.agents]]` with their memberships; the skills they name are
    /// created (without a description) where the tenant has none of that name.
    async fn seed_contact_centre(
        &self,
        sip: &crate::sip::config::SipConfig,
        now: i64,
        add: &mut impl FnMut(Result<(), StoreError>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut skills: Vec<(&str, &str)> = Vec::new();
        for (tenant, levels) in sip
            .queues
            .iter()
            .map(|q| (&q.tenant, &q.skills))
            .chain(sip.agents.iter().map(|a| (&a.tenant, &a.skills)))
        {
            for l in levels {
                if !skills.contains(&(tenant.as_str(), l.skill.as_str())) {
                    skills.push((tenant, &l.skill));
                }
            }
        }
        for (tenant, name) in skills {
            match self
                .create_skill(&Skill {
                    id: new_id(),
                    tenant: tenant.to_string(),
                    name: name.to_string(),
                    description: String::new(),
                    version: 1,
                    created_ms: now,
                    updated_ms: now,
                })
                .await
            {
                // A skill is implied, not an entry of its own: not counted either way.
                Ok(()) | Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        for q in &sip.queues {
            add(self.create_queue(&Queue::from_def(q, now)).await)?;
        }
        for a in &sip.agents {
            add(self
                .create_agent(&Agent {
                    id: new_id(),
                    tenant: a.tenant.clone(),
                    name: a.name.clone(),
                    user: a.user.clone(),
                    skills: a.skills.clone(),
                    version: 1,
                    created_ms: now,
                    updated_ms: now,
                })
                .await)?;
            for m in &a.queues {
                add(self
                    .create_membership(&Membership {
                        id: new_id(),
                        tenant: a.tenant.clone(),
                        agent: a.name.clone(),
                        queue: m.queue.clone(),
                        tier: m.tier.into(),
                        delay_s: m.delay_s.into(),
                        weight: m.weight.into(),
                        version: 1,
                        created_ms: now,
                        updated_ms: now,
                    })
                    .await)?;
            }
        }
        Ok(())
    }

    /// Opens (creating if needed) and migrates. `sqlite://PATH` or `postgres://…`.
    pub async fn open(url: &str) -> Result<Storage, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::Conflict(format!(
                "storage.url must start with sqlite: or postgres://, not {url}"
            )));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains('?') && !url.contains(":memory:") => {
                format!("{url}?mode=rwc")
            }
            _ => url.to_string(),
        };
        let options = AnyPoolOptions::new()
            .max_connections(match backend {
                // SQLite has one writer; with several connections they meet its lock and sleep
                // in its busy handler (milliseconds each). One connection queues them instead,
                // and on the one core the control plane has, parallel readers gain nothing.
                Backend::Sqlite => 1,
                Backend::Postgres => 8,
            })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL: readers never wait for the writer. synchronous=NORMAL: a commit
                        // survives a crash of this process (the OS holds it) without an fsync
                        // per transaction; FULL would be needed only for power loss.
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = NORMAL",
                            "PRAGMA foreign_keys = ON",
                            "PRAGMA busy_timeout = 5000",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            });
        let pool = options.connect(&url).await?;
        let mut storage = Storage {
            pool,
            reader: None,
            backend,
        };
        storage.migrate().await?;
        if backend == Backend::Sqlite {
            let file = SqliteConnectOptions::from_str(&url)?
                .get_filename()
                .to_path_buf();
            if file.as_os_str() != ":memory:" && !url.contains("mode=memory") {
                storage.reader = Some(SqliteReader::open(&file).map_err(|e| {
                    StoreError::Db(sqlx::Error::Protocol(format!(
                        "opening {} for reading: {e}",
                        file.display()
                    )))
                })?);
            }
        }
        Ok(storage)
    }

    /// Rows of a read (a SELECT with `$n` placeholders bound from `args` in order).
    async fn read_all<T: FromRow>(
        &self,
        sql: String,
        args: Vec<Arg>,
    ) -> Result<Vec<T>, StoreError> {
        if let Some(reader) = &self.reader {
            return Ok(reader.read(&sql, args).await?);
        }
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for arg in args {
            q = match arg {
                Arg::Int(v) => q.bind(v),
                Arg::Text(v) => q.bind(v),
            };
        }
        let rows = q.fetch_all(&self.pool).await?;
        Ok(rows.iter().map(T::from_row).collect::<Result<_, _>>()?)
    }

    /// The one row a read by key finds, or `NotFound`.
    async fn read_one<T: FromRow>(&self, sql: String, args: Vec<Arg>) -> Result<T, StoreError> {
        self.read_all(sql, args)
            .await?
            .into_iter()
            .next()
            .ok_or(StoreError::NotFound)
    }

    /// A page of `sql` (a SELECT ending in its ORDER BY). LIMIT and OFFSET go into the text as
    /// numbers, not placeholders: SQLite (3.46+) plans a bound LIMIT by its value and so
    /// re-prepares such a statement every time it is bound again, which cost more than the
    /// read itself. They are integers validated by `ListParams::page`, never text.
    async fn read_page<T: FromRow>(
        &self,
        mut sql: String,
        args: Vec<Arg>,
        page: &Page,
    ) -> Result<Listed<T>, StoreError> {
        use std::fmt::Write as _;
        let _ = write!(sql, " LIMIT {} OFFSET {}", page.limit + 1, page.offset);
        Ok(listed(self.read_all(sql, args).await?, page))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_ms BIGINT NOT NULL)",
        )
        .execute(&self.pool)
        .await?;
        let applied: Vec<i64> = sqlx::query("SELECT version FROM schema_migrations")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get::<i64, _>(0))
            .collect::<Result<_, _>>()?;
        for m in schema::MIGRATIONS {
            if applied.contains(&m.version) {
                continue;
            }
            let mut tx = self.pool.begin().await?;
            for statement in m.statements {
                sqlx::query(*statement).execute(&mut *tx).await?;
            }
            let inserted = sqlx::query(
                "INSERT INTO schema_migrations (version, name, applied_ms) VALUES ($1, $2, $3)",
            )
            .bind(m.version)
            .bind(m.name)
            .bind(now_ms())
            .execute(&mut *tx)
            .await;
            match inserted {
                Ok(_) => tx.commit().await?,
                // Another node migrated first (PostgreSQL): theirs stands.
                Err(e) if unique_violation(&e) => tx.rollback().await?,
                Err(e) => return Err(e.into()),
            }
            tracing::info!("storage: applied migration {} ({})", m.version, m.name);
        }
        Ok(())
    }

    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT MAX(version) AS v FROM schema_migrations")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<Option<i64>, _>("v")?.unwrap_or(0))
    }

    // ---- tenants ----

    pub async fn create_tenant(&self, t: &Tenant) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO tenants (name, domain, display_name, max_calls, country_code, version, created_ms, updated_ms, transcode_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(&t.name)
            .bind(&t.domain)
            .bind(&t.display_name)
            .bind(t.max_calls)
            .bind(&t.country_code)
            .bind(t.version)
            .bind(t.created_ms)
            .bind(t.updated_ms)
            .bind(transcode_json(t))
            .execute(&self.pool)
            .await
            .map_err(|e| conflict(e, "a tenant with this name or domain"))?;
        Ok(())
    }

    pub async fn tenant(&self, name: &str) -> Result<Tenant, StoreError> {
        self.read_one(
            "SELECT * FROM tenants WHERE name = $1".into(),
            vec![name.into()],
        )
        .await
    }

    pub async fn list_tenants(&self, page: &Page) -> Result<Listed<Tenant>, StoreError> {
        let sql = format!("SELECT * FROM tenants ORDER BY {}", page.order);
        self.read_page(sql, vec![], page).await
    }

    /// Writes `t` over the stored tenant if its version is still `t.version - 1`.
    pub async fn update_tenant(&self, t: &Tenant) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE tenants SET display_name = $1, max_calls = $2, country_code = $3, version = $4, updated_ms = $5, transcode_json = $8 WHERE name = $6 AND version = $7")
            .bind(&t.display_name)
            .bind(t.max_calls)
            .bind(&t.country_code)
            .bind(t.version)
            .bind(t.updated_ms)
            .bind(&t.name)
            .bind(t.version - 1)
            .bind(transcode_json(t))
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(self.why_not_updated("tenants", "name", &t.name, None).await);
        }
        Ok(())
    }

    pub async fn delete_tenant(&self, name: &str) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM tenants WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn why_not_updated(
        &self,
        table: &str,
        key: &str,
        value: &str,
        tenant: Option<&str>,
    ) -> StoreError {
        let sql = match tenant {
            Some(_) => format!("SELECT version FROM {table} WHERE {key} = $1 AND tenant = $2"),
            None => format!("SELECT version FROM {table} WHERE {key} = $1"),
        };
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(value);
        if let Some(t) = tenant {
            q = q.bind(t);
        }
        match q.fetch_optional(&self.pool).await {
            Ok(Some(row)) => match row.try_get::<i64, _>("version") {
                Ok(current) => StoreError::VersionMismatch { current },
                Err(e) => e.into(),
            },
            Ok(None) => StoreError::NotFound,
            Err(e) => e.into(),
        }
    }

    /// Deletes a tenant-scoped row by id; `NotFound` for another tenant's.
    async fn delete_scoped(&self, table: &str, tenant: &str, id: &str) -> Result<(), StoreError> {
        let sql = format!("DELETE FROM {table} WHERE id = $1 AND tenant = $2");
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .bind(tenant)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn get_scoped<T: FromRow>(
        &self,
        table: &str,
        tenant: &str,
        id: &str,
    ) -> Result<T, StoreError> {
        let sql = format!("SELECT * FROM {table} WHERE id = $1 AND tenant = $2");
        self.read_one(sql, vec![id.into(), tenant.into()]).await
    }

    async fn list_scoped<T: FromRow>(
        &self,
        table: &str,
        tenant: &str,
        page: &Page,
    ) -> Result<Listed<T>, StoreError> {
        let sql = format!(
            "SELECT * FROM {table} WHERE tenant = $1 ORDER BY {}",
            page.order
        );
        self.read_page(sql, vec![tenant.into()], page).await
    }

    // ---- users ----

    pub async fn create_user(&self, u: &User) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO users (id, tenant, username, display_name, role, password_hash, version, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(&u.id)
            .bind(&u.tenant)
            .bind(&u.username)
            .bind(&u.display_name)
            .bind(&u.role)
            .bind(&u.password_hash)
            .bind(u.version)
            .bind(u.created_ms)
            .bind(u.updated_ms)
            .execute(&self.pool)
            .await
            .map_err(|e| conflict(e, "a user with this username"))?;
        Ok(())
    }

    pub async fn user(&self, tenant: &str, id: &str) -> Result<User, StoreError> {
        self.get_scoped("users", tenant, id).await
    }

    pub async fn user_by_id(&self, id: &str) -> Result<User, StoreError> {
        self.read_one("SELECT * FROM users WHERE id = $1".into(), vec![id.into()])
            .await
    }

    /// A login: `tenant` None looks among system administrators.
    pub async fn user_by_login(
        &self,
        tenant: Option<&str>,
        username: &str,
    ) -> Result<User, StoreError> {
        self.read_one(
            "SELECT * FROM users WHERE COALESCE(tenant, '') = $1 AND username = $2".into(),
            vec![tenant.unwrap_or("").into(), username.into()],
        )
        .await
    }

    pub async fn list_users(&self, tenant: &str, page: &Page) -> Result<Listed<User>, StoreError> {
        self.list_scoped("users", tenant, page).await
    }

    pub async fn count_users(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")?)
    }

    pub async fn update_user(&self, u: &User) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE users SET display_name = $1, role = $2, password_hash = $3, version = $4, updated_ms = $5 WHERE id = $6 AND COALESCE(tenant, '') = $7 AND version = $8")
            .bind(&u.display_name)
            .bind(&u.role)
            .bind(&u.password_hash)
            .bind(u.version)
            .bind(u.updated_ms)
            .bind(&u.id)
            .bind(u.tenant.as_deref().unwrap_or(""))
            .bind(u.version - 1)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(self
                .why_not_updated("users", "id", &u.id, u.tenant.as_deref())
                .await);
        }
        Ok(())
    }

    pub async fn delete_user(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        self.delete_scoped("users", tenant, id).await
    }

    // ---- API tokens ----

    pub async fn create_token(&self, t: &ApiToken) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO api_tokens (id, tenant, name, role, secret_sha256, created_by, created_ms, expires_ms, revoked_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(&t.id)
            .bind(&t.tenant)
            .bind(&t.name)
            .bind(&t.role)
            .bind(&t.secret_sha256)
            .bind(&t.created_by)
            .bind(t.created_ms)
            .bind(t.expires_ms)
            .bind(t.revoked_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn token(&self, id: &str) -> Result<ApiToken, StoreError> {
        self.read_one(
            "SELECT * FROM api_tokens WHERE id = $1".into(),
            vec![id.into()],
        )
        .await
    }

    pub async fn list_tokens(
        &self,
        tenant: &str,
        page: &Page,
    ) -> Result<Listed<ApiToken>, StoreError> {
        self.list_scoped("api_tokens", tenant, page).await
    }

    pub async fn revoke_token(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE api_tokens SET revoked_ms = $1 WHERE id = $2 AND tenant = $3 AND revoked_ms IS NULL")
            .bind(now_ms())
            .bind(id)
            .bind(tenant)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    // ---- SIP accounts ----

    pub async fn create_account(&self, a: &SipAccount) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO sip_accounts (id, tenant, username, display_name, ha1_md5, ha1_sha256, version, created_ms, updated_ms, dtmf) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .bind(&a.id)
            .bind(&a.tenant)
            .bind(&a.username)
            .bind(&a.display_name)
            .bind(&a.ha1_md5)
            .bind(&a.ha1_sha256)
            .bind(a.version)
            .bind(a.created_ms)
            .bind(a.updated_ms)
            .bind(&a.dtmf)
            .execute(&self.pool)
            .await
            .map_err(|e| conflict(e, "a SIP account with this username"))?;
        Ok(())
    }

    pub async fn account(&self, tenant: &str, id: &str) -> Result<SipAccount, StoreError> {
        self.get_scoped("sip_accounts", tenant, id).await
    }

    pub async fn list_accounts(
        &self,
        tenant: &str,
        page: &Page,
    ) -> Result<Listed<SipAccount>, StoreError> {
        self.list_scoped("sip_accounts", tenant, page).await
    }

    pub async fn update_account(&self, a: &SipAccount) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE sip_accounts SET display_name = $1, ha1_md5 = $2, ha1_sha256 = $3, version = $4, updated_ms = $5, dtmf = $9 WHERE id = $6 AND tenant = $7 AND version = $8")
            .bind(&a.display_name)
            .bind(&a.ha1_md5)
            .bind(&a.ha1_sha256)
            .bind(a.version)
            .bind(a.updated_ms)
            .bind(&a.id)
            .bind(&a.tenant)
            .bind(a.version - 1)
            .bind(&a.dtmf)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(self
                .why_not_updated("sip_accounts", "id", &a.id, Some(&a.tenant))
                .await);
        }
        Ok(())
    }

    pub async fn delete_account(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        self.delete_scoped("sip_accounts", tenant, id).await
    }

    // ---- trunks ----

    pub async fn create_trunk(&self, t: &Trunk) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO trunks (id, tenant, name, address, allow_json, username, password, register, register_expires_s, version, created_ms, updated_ms, dtmf) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)")
            .bind(&t.id)
            .bind(&t.tenant)
            .bind(&t.name)
            .bind(&t.address)
            .bind(serde_json::to_string(&t.allow).unwrap_or_else(|_| "[]".into()))
            .bind(&t.username)
            .bind(&t.password)
            .bind(t.register as i64)
            .bind(t.register_expires_s)
            .bind(t.version)
            .bind(t.created_ms)
            .bind(t.updated_ms)
            .bind(&t.dtmf)
            .execute(&self.pool)
            .await
            .map_err(|e| conflict(e, "a trunk with this name"))?;
        Ok(())
    }

    pub async fn trunk(&self, tenant: &str, id: &str) -> Result<Trunk, StoreError> {
        self.get_scoped("trunks", tenant, id).await
    }

    pub async fn list_trunks(
        &self,
        tenant: &str,
        page: &Page,
    ) -> Result<Listed<Trunk>, StoreError> {
        self.list_scoped("trunks", tenant, page).await
    }

    pub async fn update_trunk(&self, t: &Trunk) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE trunks SET address = $1, allow_json = $2, username = $3, password = $4, register = $5, register_expires_s = $6, version = $7, updated_ms = $8, dtmf = $12 WHERE id = $9 AND tenant = $10 AND version = $11")
            .bind(&t.address)
            .bind(serde_json::to_string(&t.allow).unwrap_or_else(|_| "[]".into()))
            .bind(&t.username)
            .bind(&t.password)
            .bind(t.register as i64)
            .bind(t.register_expires_s)
            .bind(t.version)
            .bind(t.updated_ms)
            .bind(&t.id)
            .bind(&t.tenant)
            .bind(t.version - 1)
            .bind(&t.dtmf)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(self
                .why_not_updated("trunks", "id", &t.id, Some(&t.tenant))
                .await);
        }
        Ok(())
    }

    pub async fn delete_trunk(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        self.delete_scoped("trunks", tenant, id).await
    }

    // ---- routes ----

    pub async fn create_route(&self, r: &Route) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO routes (id, tenant, position, pattern, target, version, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(&r.id)
            .bind(&r.tenant)
            .bind(r.position)
            .bind(&r.pattern)
            .bind(&r.target)
            .bind(r.version)
            .bind(r.created_ms)
            .bind(r.updated_ms)
            .execute(&self.pool)
            .await
            .map_err(|e| conflict(e, "a route with this pattern"))?;
        Ok(())
    }

    pub async fn route(&self, tenant: &str, id: &str) -> Result<Route, StoreError> {
        self.get_scoped("routes", tenant, id).await
    }

    pub async fn list_routes(
        &self,
        tenant: &str,
        page: &Page,
    ) -> Result<Listed<Route>, StoreError> {
        self.list_scoped("routes", tenant, page).await
    }

    pub async fn update_route(&self, r: &Route) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE routes SET position = $1, pattern = $2, target = $3, version = $4, updated_ms = $5 WHERE id = $6 AND tenant = $7 AND version = $8")
            .bind(r.position)
            .bind(&r.pattern)
            .bind(&r.target)
            .bind(r.version)
            .bind(r.updated_ms)
            .bind(&r.id)
            .bind(&r.tenant)
            .bind(r.version - 1)
            .execute(&self.pool)
            .await
            .map_err(|e| conflict(e, "a route with this pattern"))?;
        if done.rows_affected() == 0 {
            return Err(self
                .why_not_updated("routes", "id", &r.id, Some(&r.tenant))
                .await);
        }
        Ok(())
    }

    pub async fn delete_route(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        self.delete_scoped("routes", tenant, id).await
    }

    /// All tenants, accounts, trunks, routes (in position order), queues, agents and
    /// memberships.
    pub async fn directory(&self) -> Result<Directory, StoreError> {
        Ok(Directory {
            tenants: self
                .read_all("SELECT * FROM tenants ORDER BY name".into(), vec![])
                .await?,
            accounts: self
                .read_all(
                    "SELECT * FROM sip_accounts ORDER BY tenant, username".into(),
                    vec![],
                )
                .await?,
            trunks: self
                .read_all("SELECT * FROM trunks ORDER BY tenant, name".into(), vec![])
                .await?,
            routes: self
                .read_all(
                    "SELECT * FROM routes ORDER BY tenant, position, created_ms".into(),
                    vec![],
                )
                .await?,
            queues: self
                .read_all("SELECT * FROM queues ORDER BY tenant, name".into(), vec![])
                .await?,
            agents: self
                .read_all("SELECT * FROM agents ORDER BY tenant, name".into(), vec![])
                .await?,
            memberships: self
                .read_all(
                    "SELECT * FROM agent_queues ORDER BY tenant, agent, queue".into(),
                    vec![],
                )
                .await?,
        })
    }

    // ---- call records ----

    /// Writes a batch of finished calls in one transaction (group commit): when this returns
    /// Ok, every record is durable.
    pub async fn insert_call_records(&self, records: &[CallRecordRow]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for c in records {
            let result = sqlx::query("INSERT INTO call_records (id, tenant, direction, caller, dialled, target, caller_call_id, callee_call_id, started_ms, answered_ms, ended_ms, setup_ms, duration_ms, disposition, final_code, ended_by, codecs, media_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)")
                .bind(&c.id)
                .bind(&c.tenant)
                .bind(&c.direction)
                .bind(&c.caller)
                .bind(&c.dialled)
                .bind(&c.target)
                .bind(&c.caller_call_id)
                .bind(&c.callee_call_id)
                .bind(c.started_ms)
                .bind(c.answered_ms)
                .bind(c.ended_ms)
                .bind(c.setup_ms)
                .bind(c.duration_ms)
                .bind(&c.disposition)
                .bind(c.final_code)
                .bind(&c.ended_by)
                .bind(c.codecs.join(","))
                .bind(c.media.as_ref().map(|m| m.get().to_string()))
                .execute(&mut *tx)
                .await;
            match result {
                Ok(_) => {}
                // A record of a tenant deleted meanwhile has nowhere to go; the rest must land.
                Err(sqlx::Error::Database(d)) if d.is_foreign_key_violation() => {
                    tracing::warn!("call record {} for unknown tenant {}", c.id, c.tenant);
                    tx.rollback().await?;
                    let rest: Vec<_> = records
                        .iter()
                        .filter(|r| r.tenant != c.tenant)
                        .cloned()
                        .collect();
                    return Box::pin(self.insert_call_records(&rest)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn call_record(&self, tenant: &str, id: &str) -> Result<CallRecordRow, StoreError> {
        self.get_scoped("call_records", tenant, id).await
    }

    pub async fn list_call_records(
        &self,
        tenant: &str,
        filter: &CallFilter,
        page: &Page,
    ) -> Result<Listed<CallRecordRow>, StoreError> {
        // Placeholders are numbered in the order the values are bound below.
        let mut n = 1;
        let mut arg = || {
            n += 1;
            format!("${n}")
        };
        let mut sql = String::from("SELECT * FROM call_records WHERE tenant = $1");
        if filter.from_ms.is_some() {
            sql += &format!(" AND started_ms >= {}", arg());
        }
        if filter.to_ms.is_some() {
            sql += &format!(" AND started_ms < {}", arg());
        }
        if filter.number.is_some() {
            sql += &format!(" AND (caller = {} OR dialled = {})", arg(), arg());
        }
        if filter.direction.is_some() {
            sql += &format!(" AND direction = {}", arg());
        }
        if filter.disposition.is_some() {
            sql += &format!(" AND disposition = {}", arg());
        }
        sql += &format!(" ORDER BY {}", page.order);
        let mut args = vec![Arg::from(tenant)];
        args.extend(filter.from_ms.map(Arg::Int));
        args.extend(filter.to_ms.map(Arg::Int));
        if let Some(v) = &filter.number {
            args.push(v.into());
            args.push(v.into());
        }
        args.extend(filter.direction.as_ref().map(Arg::from));
        args.extend(filter.disposition.as_ref().map(Arg::from));
        self.read_page(sql, args, page).await
    }

    // ---- audit log ----

    pub async fn insert_audit(&self, a: &AuditEntry) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO audit_log (id, at_ms, tenant, actor, action, object_type, object_id, source, detail_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(&a.id)
            .bind(a.at_ms)
            .bind(&a.tenant)
            .bind(&a.actor)
            .bind(&a.action)
            .bind(&a.object_type)
            .bind(&a.object_id)
            .bind(&a.source)
            .bind(a.detail.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// `tenant` None: the whole log (system administrators).
    pub async fn list_audit(
        &self,
        tenant: Option<&str>,
        page: &Page,
    ) -> Result<Listed<AuditEntry>, StoreError> {
        match tenant {
            Some(t) => self.list_scoped("audit_log", t, page).await,
            None => {
                let sql = format!("SELECT * FROM audit_log ORDER BY {}", page.order);
                self.read_page(sql, vec![], page).await
            }
        }
    }

    // ---- webhooks ----

    pub async fn create_webhook(&self, w: &Webhook) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO webhooks (id, tenant, url, secret, events, active, version, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(&w.id)
            .bind(&w.tenant)
            .bind(&w.url)
            .bind(&w.secret)
            .bind(w.events.join(","))
            .bind(w.active as i64)
            .bind(w.version)
            .bind(w.created_ms)
            .bind(w.updated_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn webhook(&self, tenant: &str, id: &str) -> Result<Webhook, StoreError> {
        self.get_scoped("webhooks", tenant, id).await
    }

    pub async fn list_webhooks(
        &self,
        tenant: &str,
        page: &Page,
    ) -> Result<Listed<Webhook>, StoreError> {
        self.list_scoped("webhooks", tenant, page).await
    }

    /// Every active webhook of every tenant (the delivery worker's view).
    pub async fn active_webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        self.read_all("SELECT * FROM webhooks WHERE active = 1".into(), vec![])
            .await
    }

    pub async fn update_webhook(&self, w: &Webhook) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE webhooks SET url = $1, events = $2, active = $3, version = $4, updated_ms = $5 WHERE id = $6 AND tenant = $7 AND version = $8")
            .bind(&w.url)
            .bind(w.events.join(","))
            .bind(w.active as i64)
            .bind(w.version)
            .bind(w.updated_ms)
            .bind(&w.id)
            .bind(&w.tenant)
            .bind(w.version - 1)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(self
                .why_not_updated("webhooks", "id", &w.id, Some(&w.tenant))
                .await);
        }
        Ok(())
    }

    pub async fn delete_webhook(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        self.delete_scoped("webhooks", tenant, id).await
    }

    pub async fn insert_delivery(&self, tenant: &str, d: &Delivery) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO webhook_deliveries (id, webhook_id, tenant, event_seq, event_type, attempt, status, error, at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(&d.id)
            .bind(&d.webhook_id)
            .bind(tenant)
            .bind(d.event_seq)
            .bind(&d.event_type)
            .bind(d.attempt)
            .bind(d.status)
            .bind(&d.error)
            .bind(d.at_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn list_deliveries(
        &self,
        tenant: &str,
        webhook_id: &str,
        page: &Page,
    ) -> Result<Listed<Delivery>, StoreError> {
        let sql = format!(
            "SELECT * FROM webhook_deliveries WHERE tenant = $1 AND webhook_id = $2 ORDER BY {}",
            page.order
        );
        self.read_page(sql, vec![tenant.into(), webhook_id.into()], page)
            .await
    }
}
