//! The contact centre's stored definitions (skills, queues, agents, queue memberships) and the
//! ACD's event log. Queues and agents are keyed by name within their tenant: the SIP engine, the
//! route target `queue:<name>` and the API paths all use the name; it never changes.

use super::read::{Arg, Cols, FromRow};
use super::{conflict, listed, new_id, Listed, Page, Storage, StoreError};
use crate::sip::queues::{AgentDef, MembershipDef, QueueDef, RelaxDef, SkillLevel};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Skill {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub description: String,
    pub version: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl FromRow for Skill {
    fn from_row<R: Cols>(r: &R) -> Result<Skill, sqlx::Error> {
        Ok(Skill {
            id: r.col("id")?,
            tenant: r.col("tenant")?,
            name: r.col("name")?,
            description: r.col("description")?,
            version: r.col("version")?,
            created_ms: r.col("created_ms")?,
            updated_ms: r.col("updated_ms")?,
        })
    }
}

/// A queue as stored and shown: every setting of [`QueueDef`] (see there for what each does).
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Queue {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub strategy: String,
    pub ring_step_s: i64,
    pub priority: i64,
    pub service_level_s: i64,
    pub max_len: Option<i64>,
    pub max_wait_s: Option<i64>,
    pub overflow: Option<String>,
    pub leave_when_empty: bool,
    pub music: bool,
    pub announce_period_s: i64,
    pub announce_position: bool,
    pub announce_wait: bool,
    pub greeting: bool,
    pub leave_key: Option<String>,
    pub callback_key: Option<String>,
    pub skills: Vec<SkillLevel>,
    pub relax: Vec<RelaxDef>,
    pub max_tier: Option<i64>,
    pub ring_timeout_s: i64,
    pub wrapup_s: i64,
    pub reject_delay_s: i64,
    pub no_answer_delay_s: i64,
    pub max_no_answer: i64,
    pub routing_delay_s: i64,
    pub version: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

fn u32_of(v: i64) -> u32 {
    v.clamp(0, u32::MAX as i64) as u32
}

pub(super) fn json_list<T: serde::de::DeserializeOwned>(text: &str) -> Vec<T> {
    serde_json::from_str(text).unwrap_or_default()
}

pub(super) fn json_text<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

impl Queue {
    /// A queue with every setting at [`QueueDef`]'s default.
    pub fn new(tenant: &str, name: &str, now: i64) -> Queue {
        Queue::from_def(&QueueDef::new(tenant, name), now)
    }

    pub fn from_def(d: &QueueDef, now: i64) -> Queue {
        Queue {
            id: new_id(),
            tenant: d.tenant.clone(),
            name: d.name.clone(),
            strategy: d.strategy.clone(),
            ring_step_s: d.ring_step_s.into(),
            priority: d.priority.into(),
            service_level_s: d.service_level_s.into(),
            max_len: d.max_len.map(i64::from),
            max_wait_s: d.max_wait_s.map(i64::from),
            overflow: d.overflow.clone(),
            leave_when_empty: d.leave_when_empty,
            music: d.music,
            announce_period_s: d.announce_period_s.into(),
            announce_position: d.announce_position,
            announce_wait: d.announce_wait,
            greeting: d.greeting,
            leave_key: d.leave_key.clone(),
            callback_key: d.callback_key.clone(),
            skills: d.skills.clone(),
            relax: d.relax.clone(),
            max_tier: d.max_tier.map(i64::from),
            ring_timeout_s: d.ring_timeout_s.into(),
            wrapup_s: d.wrapup_s.into(),
            reject_delay_s: d.reject_delay_s.into(),
            no_answer_delay_s: d.no_answer_delay_s.into(),
            max_no_answer: d.max_no_answer.into(),
            routing_delay_s: d.routing_delay_s.into(),
            version: 1,
            created_ms: now,
            updated_ms: now,
        }
    }

    /// The engine's definition. Numbers were range-checked by the API; out-of-range stored
    /// values are clamped rather than failing the whole directory.
    pub fn def(&self) -> QueueDef {
        QueueDef {
            tenant: self.tenant.clone(),
            name: self.name.clone(),
            strategy: self.strategy.clone(),
            ring_step_s: u32_of(self.ring_step_s),
            priority: u32_of(self.priority),
            service_level_s: u32_of(self.service_level_s),
            max_len: self.max_len.map(u32_of),
            max_wait_s: self.max_wait_s.map(u32_of),
            overflow: self.overflow.clone(),
            leave_when_empty: self.leave_when_empty,
            music: self.music,
            announce_period_s: u32_of(self.announce_period_s),
            announce_position: self.announce_position,
            announce_wait: self.announce_wait,
            greeting: self.greeting,
            leave_key: self.leave_key.clone(),
            callback_key: self.callback_key.clone(),
            skills: self.skills.clone(),
            relax: self.relax.clone(),
            max_tier: self.max_tier.map(|t| t.clamp(0, 255) as u8),
            ring_timeout_s: u32_of(self.ring_timeout_s),
            wrapup_s: u32_of(self.wrapup_s),
            reject_delay_s: u32_of(self.reject_delay_s),
            no_answer_delay_s: u32_of(self.no_answer_delay_s),
            max_no_answer: u32_of(self.max_no_answer),
            routing_delay_s: u32_of(self.routing_delay_s),
        }
    }
}

impl FromRow for Queue {
    fn from_row<R: Cols>(r: &R) -> Result<Queue, sqlx::Error> {
        let skills: String = r.col("skills_json")?;
        let relax: String = r.col("relax_json")?;
        Ok(Queue {
            id: r.col("id")?,
            tenant: r.col("tenant")?,
            name: r.col("name")?,
            strategy: r.col("strategy")?,
            ring_step_s: r.col("ring_step_s")?,
            priority: r.col("priority")?,
            service_level_s: r.col("service_level_s")?,
            max_len: r.col("max_len")?,
            max_wait_s: r.col("max_wait_s")?,
            overflow: r.col("overflow")?,
            leave_when_empty: r.col::<i64>("leave_when_empty")? != 0,
            music: r.col::<i64>("music")? != 0,
            announce_period_s: r.col("announce_period_s")?,
            announce_position: r.col::<i64>("announce_position")? != 0,
            announce_wait: r.col::<i64>("announce_wait")? != 0,
            greeting: r.col::<i64>("greeting")? != 0,
            leave_key: r.col("leave_key")?,
            callback_key: r.col("callback_key")?,
            skills: json_list(&skills),
            relax: json_list(&relax),
            max_tier: r.col("max_tier")?,
            ring_timeout_s: r.col("ring_timeout_s")?,
            wrapup_s: r.col("wrapup_s")?,
            reject_delay_s: r.col("reject_delay_s")?,
            no_answer_delay_s: r.col("no_answer_delay_s")?,
            max_no_answer: r.col("max_no_answer")?,
            routing_delay_s: r.col("routing_delay_s")?,
            version: r.col("version")?,
            created_ms: r.col("created_ms")?,
            updated_ms: r.col("updated_ms")?,
        })
    }
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Agent {
    pub id: String,
    pub tenant: String,
    pub name: String,
    /// The tenant's SIP account whose registered devices ring for this agent.
    pub user: String,
    pub skills: Vec<SkillLevel>,
    pub version: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl FromRow for Agent {
    fn from_row<R: Cols>(r: &R) -> Result<Agent, sqlx::Error> {
        let skills: String = r.col("skills_json")?;
        Ok(Agent {
            id: r.col("id")?,
            tenant: r.col("tenant")?,
            name: r.col("name")?,
            user: r.col("sip_user")?,
            skills: json_list(&skills),
            version: r.col("version")?,
            created_ms: r.col("created_ms")?,
            updated_ms: r.col("updated_ms")?,
        })
    }
}

/// An agent's membership of a queue.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Membership {
    pub id: String,
    pub tenant: String,
    pub agent: String,
    pub queue: String,
    /// 0 is offered callers first.
    pub tier: i64,
    /// Seconds a caller must have waited before this agent is offered it.
    pub delay_s: i64,
    /// Share for weighted-random.
    pub weight: i64,
    pub version: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl FromRow for Membership {
    fn from_row<R: Cols>(r: &R) -> Result<Membership, sqlx::Error> {
        Ok(Membership {
            id: r.col("id")?,
            tenant: r.col("tenant")?,
            agent: r.col("agent")?,
            queue: r.col("queue")?,
            tier: r.col("tier")?,
            delay_s: r.col("delay_s")?,
            weight: r.col("weight")?,
            version: r.col("version")?,
            created_ms: r.col("created_ms")?,
            updated_ms: r.col("updated_ms")?,
        })
    }
}

impl Membership {
    pub fn def(&self) -> MembershipDef {
        MembershipDef {
            queue: self.queue.clone(),
            tier: self.tier.clamp(0, 255) as u8,
            delay_s: u32_of(self.delay_s),
            weight: u32_of(self.weight),
        }
    }
}

/// One line of the ACD's event log (`sip::queues::AcdEvent` as stored).
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct QueueEventRow {
    pub id: String,
    pub tenant: String,
    pub at_ms: i64,
    /// `enter`, `connect`, `complete_caller`, `complete_agent`, `abandon`, `offer`,
    /// `agent_state`, … (see the event stream's `acd.<kind>` types).
    pub kind: String,
    pub queue: Option<String>,
    pub agent: Option<String>,
    pub contact: Option<i64>,
    pub call: Option<i64>,
    /// Kind-specific figures: wait_ms, talk_ms, ring_ms, position, ewt_ms, reason, to, from,
    /// caller, data.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

impl FromRow for QueueEventRow {
    fn from_row<R: Cols>(r: &R) -> Result<QueueEventRow, sqlx::Error> {
        let detail: String = r.col("detail_json")?;
        Ok(QueueEventRow {
            id: r.col("id")?,
            tenant: r.col("tenant")?,
            at_ms: r.col("at_ms")?,
            kind: r.col("kind")?,
            queue: r.col("queue")?,
            agent: r.col("agent")?,
            contact: r.col("contact")?,
            call: r.col("call_id")?,
            detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
        })
    }
}

static EVENT_SEQ: AtomicU64 = AtomicU64::new(0);

impl QueueEventRow {
    /// The stored form of an engine event. The id is the time, this node's arrival number and
    /// a random tail: ordered like the engine emitted them, unique across nodes.
    pub fn from_event(e: &crate::sip::queues::AcdEvent) -> QueueEventRow {
        let seq = EVENT_SEQ.fetch_add(1, Ordering::Relaxed);
        let tail: [u8; 4] = crate::api::auth::random_bytes();
        QueueEventRow {
            id: format!(
                "{:013}{:012}{:08x}",
                e.at_unix_ms,
                seq % 1_000_000_000_000,
                u32::from_le_bytes(tail)
            ),
            tenant: e.tenant.clone(),
            at_ms: e.at_unix_ms as i64,
            kind: e.kind.to_string(),
            queue: e.queue.clone(),
            agent: e.agent.clone(),
            contact: e.contact.map(|c| c as i64),
            call: e.call.map(|c| c as i64),
            detail: serde_json::Value::Object(e.detail.clone()),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct QueueEventFilter {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub queue: Option<String>,
    pub agent: Option<String>,
    pub kind: Option<String>,
}

impl Storage {
    // ---- skills ----

    pub async fn create_skill(&self, s: &Skill) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO skills (id, tenant, name, description, version, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&s.id)
            .bind(&s.tenant)
            .bind(&s.name)
            .bind(&s.description)
            .bind(s.version)
            .bind(s.created_ms)
            .bind(s.updated_ms)
            .execute(&self.pool)
            .await
            .map_err(|e| conflict(e, "a skill with this name"))?;
        Ok(())
    }

    pub async fn skill(&self, tenant: &str, name: &str) -> Result<Skill, StoreError> {
        self.get_named("skills", tenant, name).await
    }

    pub async fn list_skills(
        &self,
        tenant: &str,
        page: &Page,
    ) -> Result<Listed<Skill>, StoreError> {
        self.list_scoped("skills", tenant, page).await
    }

    /// Every skill name of the tenant.
    pub async fn skill_names(&self, tenant: &str) -> Result<Vec<String>, StoreError> {
        let skills: Vec<Skill> = self
            .read_all(
                "SELECT * FROM skills WHERE tenant = $1".into(),
                vec![tenant.into()],
            )
            .await?;
        Ok(skills.into_iter().map(|s| s.name).collect())
    }

    pub async fn update_skill(&self, s: &Skill) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE skills SET description = $1, version = $2, updated_ms = $3 WHERE id = $4 AND tenant = $5 AND version = $6")
            .bind(&s.description)
            .bind(s.version)
            .bind(s.updated_ms)
            .bind(&s.id)
            .bind(&s.tenant)
            .bind(s.version - 1)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(self
                .why_not_updated("skills", "id", &s.id, Some(&s.tenant))
                .await);
        }
        Ok(())
    }

    pub async fn delete_skill(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        self.delete_scoped("skills", tenant, id).await
    }

    // ---- queues ----

    pub async fn create_queue(&self, q: &Queue) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO queues (id, tenant, name, strategy, ring_step_s, priority, service_level_s, max_len, max_wait_s, overflow, leave_when_empty, skills_json, relax_json, max_tier, ring_timeout_s, wrapup_s, reject_delay_s, no_answer_delay_s, max_no_answer, routing_delay_s, version, created_ms, updated_ms, music, leave_key, announce_period_s, announce_position, announce_wait, callback_key, greeting) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30)")
            .bind(&q.id)
            .bind(&q.tenant)
            .bind(&q.name)
            .bind(&q.strategy)
            .bind(q.ring_step_s)
            .bind(q.priority)
            .bind(q.service_level_s)
            .bind(q.max_len)
            .bind(q.max_wait_s)
            .bind(&q.overflow)
            .bind(q.leave_when_empty as i64)
            .bind(json_text(&q.skills))
            .bind(json_text(&q.relax))
            .bind(q.max_tier)
            .bind(q.ring_timeout_s)
            .bind(q.wrapup_s)
            .bind(q.reject_delay_s)
            .bind(q.no_answer_delay_s)
            .bind(q.max_no_answer)
            .bind(q.routing_delay_s)
            .bind(q.version)
            .bind(q.created_ms)
            .bind(q.updated_ms)
            .bind(q.music as i64)
            .bind(&q.leave_key)
            .bind(q.announce_period_s)
            .bind(q.announce_position as i64)
            .bind(q.announce_wait as i64)
            .bind(&q.callback_key)
            .bind(q.greeting as i64)
            .execute(&self.pool)
            .await
            .map_err(|e| conflict(e, "a queue with this name"))?;
        Ok(())
    }

    pub async fn queue(&self, tenant: &str, name: &str) -> Result<Queue, StoreError> {
        self.get_named("queues", tenant, name).await
    }

    pub async fn list_queues(
        &self,
        tenant: &str,
        page: &Page,
    ) -> Result<Listed<Queue>, StoreError> {
        self.list_scoped("queues", tenant, page).await
    }

    /// Every queue of the tenant, by name.
    pub async fn all_queues(&self, tenant: &str) -> Result<Vec<Queue>, StoreError> {
        self.read_all(
            "SELECT * FROM queues WHERE tenant = $1 ORDER BY name".into(),
            vec![tenant.into()],
        )
        .await
    }

    pub async fn update_queue(&self, q: &Queue) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE queues SET strategy = $1, ring_step_s = $2, priority = $3, service_level_s = $4, max_len = $5, max_wait_s = $6, overflow = $7, leave_when_empty = $8, skills_json = $9, relax_json = $10, max_tier = $11, ring_timeout_s = $12, wrapup_s = $13, reject_delay_s = $14, no_answer_delay_s = $15, max_no_answer = $16, routing_delay_s = $17, version = $18, updated_ms = $19, music = $23, leave_key = $24, announce_period_s = $25, announce_position = $26, announce_wait = $27, callback_key = $28, greeting = $29 WHERE id = $20 AND tenant = $21 AND version = $22")
            .bind(&q.strategy)
            .bind(q.ring_step_s)
            .bind(q.priority)
            .bind(q.service_level_s)
            .bind(q.max_len)
            .bind(q.max_wait_s)
            .bind(&q.overflow)
            .bind(q.leave_when_empty as i64)
            .bind(json_text(&q.skills))
            .bind(json_text(&q.relax))
            .bind(q.max_tier)
            .bind(q.ring_timeout_s)
            .bind(q.wrapup_s)
            .bind(q.reject_delay_s)
            .bind(q.no_answer_delay_s)
            .bind(q.max_no_answer)
            .bind(q.routing_delay_s)
            .bind(q.version)
            .bind(q.updated_ms)
            .bind(&q.id)
            .bind(&q.tenant)
            .bind(q.version - 1)
            .bind(q.music as i64)
            .bind(&q.leave_key)
            .bind(q.announce_period_s)
            .bind(q.announce_position as i64)
            .bind(q.announce_wait as i64)
            .bind(&q.callback_key)
            .bind(q.greeting as i64)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(self
                .why_not_updated("queues", "id", &q.id, Some(&q.tenant))
                .await);
        }
        Ok(())
    }

    /// Deletes a queue and its memberships.
    pub async fn delete_queue(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        self.delete_scoped("queues", tenant, id).await
    }

    /// What names the queue as a target: routes (`queue:<name>`) and other queues' overflow.
    pub async fn queue_references(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Vec<String>, StoreError> {
        let target = format!("queue:{name}");
        let routes: Vec<super::Route> = self
            .read_all(
                "SELECT * FROM routes WHERE tenant = $1 AND target = $2 ORDER BY position, id"
                    .into(),
                vec![tenant.into(), (&target).into()],
            )
            .await?;
        let queues: Vec<Queue> = self
            .read_all(
                "SELECT * FROM queues WHERE tenant = $1 AND overflow = $2 ORDER BY name".into(),
                vec![tenant.into(), (&target).into()],
            )
            .await?;
        Ok(routes
            .iter()
            .map(|r| format!("route {}", r.pattern))
            .chain(
                queues
                    .iter()
                    .map(|q| format!("queue {} (overflow)", q.name)),
            )
            .collect())
    }

    /// Whether the tenant has a trunk of this name.
    pub async fn trunk_named(&self, tenant: &str, name: &str) -> Result<bool, StoreError> {
        match self.get_named::<super::Trunk>("trunks", tenant, name).await {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn account_by_username(
        &self,
        tenant: &str,
        username: &str,
    ) -> Result<super::SipAccount, StoreError> {
        self.read_one(
            "SELECT * FROM sip_accounts WHERE tenant = $1 AND username = $2".into(),
            vec![tenant.into(), username.into()],
        )
        .await
    }

    // ---- agents ----

    /// Every agent of the tenant, by name.
    pub async fn all_agents(&self, tenant: &str) -> Result<Vec<Agent>, StoreError> {
        self.read_all(
            "SELECT * FROM agents WHERE tenant = $1 ORDER BY name".into(),
            vec![tenant.into()],
        )
        .await
    }

    pub async fn create_agent(&self, a: &Agent) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO agents (id, tenant, name, sip_user, skills_json, version, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(&a.id)
            .bind(&a.tenant)
            .bind(&a.name)
            .bind(&a.user)
            .bind(json_text(&a.skills))
            .bind(a.version)
            .bind(a.created_ms)
            .bind(a.updated_ms)
            .execute(&self.pool)
            .await
            .map_err(|e| conflict(e, "an agent with this name"))?;
        Ok(())
    }

    pub async fn agent(&self, tenant: &str, name: &str) -> Result<Agent, StoreError> {
        self.get_named("agents", tenant, name).await
    }

    pub async fn list_agents(
        &self,
        tenant: &str,
        page: &Page,
    ) -> Result<Listed<Agent>, StoreError> {
        self.list_scoped("agents", tenant, page).await
    }

    pub async fn update_agent(&self, a: &Agent) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE agents SET sip_user = $1, skills_json = $2, version = $3, updated_ms = $4 WHERE id = $5 AND tenant = $6 AND version = $7")
            .bind(&a.user)
            .bind(json_text(&a.skills))
            .bind(a.version)
            .bind(a.updated_ms)
            .bind(&a.id)
            .bind(&a.tenant)
            .bind(a.version - 1)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(self
                .why_not_updated("agents", "id", &a.id, Some(&a.tenant))
                .await);
        }
        Ok(())
    }

    /// Deletes an agent and its memberships.
    pub async fn delete_agent(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        self.delete_scoped("agents", tenant, id).await
    }

    // ---- memberships ----

    pub async fn create_membership(&self, m: &Membership) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO agent_queues (id, tenant, agent, queue, tier, delay_s, weight, version, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .bind(&m.id)
            .bind(&m.tenant)
            .bind(&m.agent)
            .bind(&m.queue)
            .bind(m.tier)
            .bind(m.delay_s)
            .bind(m.weight)
            .bind(m.version)
            .bind(m.created_ms)
            .bind(m.updated_ms)
            .execute(&self.pool)
            .await
            .map_err(|e| conflict(e, "this membership"))?;
        Ok(())
    }

    pub async fn membership(
        &self,
        tenant: &str,
        agent: &str,
        queue: &str,
    ) -> Result<Membership, StoreError> {
        self.read_one(
            "SELECT * FROM agent_queues WHERE tenant = $1 AND agent = $2 AND queue = $3".into(),
            vec![tenant.into(), agent.into(), queue.into()],
        )
        .await
    }

    /// One agent's memberships (`agent` Some) or one queue's members (`queue` Some).
    pub async fn list_memberships(
        &self,
        tenant: &str,
        agent: Option<&str>,
        queue: Option<&str>,
        page: &Page,
    ) -> Result<Listed<Membership>, StoreError> {
        let (column, value) = match (agent, queue) {
            (Some(a), _) => ("agent", a),
            (None, Some(q)) => ("queue", q),
            (None, None) => return Ok(listed(Vec::new(), page)),
        };
        let sql = format!(
            "SELECT * FROM agent_queues WHERE tenant = $1 AND {column} = $2 ORDER BY {}",
            page.order
        );
        self.read_page(sql, vec![tenant.into(), value.into()], page)
            .await
    }

    pub async fn update_membership(&self, m: &Membership) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE agent_queues SET tier = $1, delay_s = $2, weight = $3, version = $4, updated_ms = $5 WHERE id = $6 AND tenant = $7 AND version = $8")
            .bind(m.tier)
            .bind(m.delay_s)
            .bind(m.weight)
            .bind(m.version)
            .bind(m.updated_ms)
            .bind(&m.id)
            .bind(&m.tenant)
            .bind(m.version - 1)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(self
                .why_not_updated("agent_queues", "id", &m.id, Some(&m.tenant))
                .await);
        }
        Ok(())
    }

    pub async fn delete_membership(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        self.delete_scoped("agent_queues", tenant, id).await
    }

    /// A tenant-scoped row by its name.
    async fn get_named<T: FromRow>(
        &self,
        table: &str,
        tenant: &str,
        name: &str,
    ) -> Result<T, StoreError> {
        let sql = format!("SELECT * FROM {table} WHERE tenant = $1 AND name = $2");
        self.read_one(sql, vec![tenant.into(), name.into()]).await
    }

    // ---- the event log ----

    /// Writes a batch of events in one transaction (group commit). Events of a tenant deleted
    /// meanwhile are dropped; the rest land.
    pub async fn insert_queue_events(&self, events: &[QueueEventRow]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for e in events {
            let result = sqlx::query("INSERT INTO queue_events (id, tenant, at_ms, kind, queue, agent, contact, call_id, detail_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
                .bind(&e.id)
                .bind(&e.tenant)
                .bind(e.at_ms)
                .bind(&e.kind)
                .bind(&e.queue)
                .bind(&e.agent)
                .bind(e.contact)
                .bind(e.call)
                .bind(e.detail.to_string())
                .execute(&mut *tx)
                .await;
            match result {
                Ok(_) => {}
                Err(sqlx::Error::Database(d)) if d.is_foreign_key_violation() => {
                    tracing::warn!("queue event of unknown tenant {}", e.tenant);
                    tx.rollback().await?;
                    let rest: Vec<_> = events
                        .iter()
                        .filter(|r| r.tenant != e.tenant)
                        .cloned()
                        .collect();
                    return Box::pin(self.insert_queue_events(&rest)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_queue_events(
        &self,
        tenant: &str,
        filter: &QueueEventFilter,
        page: &Page,
    ) -> Result<Listed<QueueEventRow>, StoreError> {
        let (sql, args) = event_query(tenant, filter, false);
        let sql = format!("{sql} ORDER BY {}", page.order);
        self.read_page(sql, args, page).await
    }

    /// What the statistics of one queue read: its events in [from, to) and the state changes of
    /// the agents named in them, in emission order.
    pub async fn queue_stats_events(
        &self,
        tenant: &str,
        queue: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<QueueEventRow>, StoreError> {
        let filter = QueueEventFilter {
            from_ms: Some(from_ms),
            to_ms: Some(to_ms),
            queue: Some(queue.to_string()),
            ..Default::default()
        };
        let (sql, args) = event_query(tenant, &filter, true);
        self.read_all(format!("{sql} ORDER BY at_ms ASC, id ASC"), args)
            .await
    }
}

impl Storage {
    /// A filtered read of the event log in emission order, whole (statistics).
    pub async fn stats_events(
        &self,
        tenant: &str,
        filter: &QueueEventFilter,
    ) -> Result<Vec<QueueEventRow>, StoreError> {
        let (sql, args) = event_query(tenant, filter, false);
        self.read_all(format!("{sql} ORDER BY at_ms ASC, id ASC"), args)
            .await
    }
}

/// The SELECT for a filtered read of the event log. `with_agent_states`: the queue filter also
/// lets agent state changes through (they name no queue).
fn event_query(tenant: &str, f: &QueueEventFilter, with_agent_states: bool) -> (String, Vec<Arg>) {
    let mut sql = String::from("SELECT * FROM queue_events WHERE tenant = $1");
    let mut args = vec![Arg::from(tenant)];
    let arg = |v: Arg, args: &mut Vec<Arg>| {
        args.push(v);
        format!("${}", args.len())
    };
    if let Some(v) = f.from_ms {
        sql += &format!(" AND at_ms >= {}", arg(Arg::Int(v), &mut args));
    }
    if let Some(v) = f.to_ms {
        sql += &format!(" AND at_ms < {}", arg(Arg::Int(v), &mut args));
    }
    if let Some(v) = &f.queue {
        let p = arg(v.into(), &mut args);
        if with_agent_states {
            // State changes of the agents that took this queue's calls in the period: a handled
            // contact's figures land when its agent's wrap-up ends. Nobody else's are read.
            let mut inner = String::from("tenant = $1");
            if f.from_ms.is_some() {
                inner += " AND at_ms >= $2";
            }
            if f.to_ms.is_some() {
                inner += &format!(" AND at_ms < ${}", if f.from_ms.is_some() { 3 } else { 2 });
            }
            sql += &format!(
                " AND (queue = {p} OR (kind = 'agent_state' AND agent IN \
                 (SELECT agent FROM queue_events WHERE {inner} AND queue = {p} AND agent IS NOT NULL)))"
            );
        } else {
            sql += &format!(" AND queue = {p}");
        }
    }
    if let Some(v) = &f.agent {
        sql += &format!(" AND agent = {}", arg(v.into(), &mut args));
    }
    if let Some(v) = &f.kind {
        sql += &format!(" AND kind = {}", arg(v.into(), &mut args));
    }
    (sql, args)
}

/// The engine's agents: each with its memberships.
pub(super) fn agent_defs(agents: &[Agent], memberships: &[Membership]) -> Vec<AgentDef> {
    let mut of: std::collections::HashMap<(&str, &str), Vec<MembershipDef>> =
        std::collections::HashMap::new();
    for m in memberships {
        of.entry((m.tenant.as_str(), m.agent.as_str()))
            .or_default()
            .push(m.def());
    }
    agents
        .iter()
        .map(|a| AgentDef {
            tenant: a.tenant.clone(),
            name: a.name.clone(),
            user: a.user.clone(),
            skills: a.skills.clone(),
            queues: of
                .remove(&(a.tenant.as_str(), a.name.as_str()))
                .unwrap_or_default(),
        })
        .collect()
}
