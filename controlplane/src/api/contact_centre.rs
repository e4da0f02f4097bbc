//! The contact centre's definitions: skills, queues, agents and agents' queue memberships.
//! Queues and agents are addressed by name (immutable, unique in the tenant): the name is what
//! routes (`queue:<name>`), overflows and the SIP engine use. Every change reloads the SIP
//! directory, so the engine's ACD follows it (queues and agents removed once idle).

use super::{
    check_len, check_slug, check_version, with_etag, ApiError, ApiState, Body, ErrorBody,
    ListParams, Params, Principal, ADMINS, STAFF,
};
use crate::sip::config::{parse_target, RouteTarget};
use crate::sip::queues::{RelaxDef, SkillLevel, STRATEGIES};
use crate::storage::{new_id, now_ms, Agent, Listed, Membership, Queue, Skill, StoreError};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Deserializer};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_skills, create_skill))
        .routes(routes!(get_skill, update_skill, delete_skill))
        .routes(routes!(list_queues, create_queue))
        .routes(routes!(get_queue, update_queue, delete_queue))
        .routes(routes!(list_agents, create_agent))
        .routes(routes!(get_agent, update_agent, delete_agent))
        .routes(routes!(list_agent_queues))
        .routes(routes!(put_membership, delete_membership))
        .routes(routes!(list_queue_members))
}

/// `null` in a patch clears the setting; an absent field leaves it alone.
pub(super) fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Levels 1–5, each skill once, each one a skill of the tenant.
async fn check_skills(
    state: &ApiState,
    tenant: &str,
    field: &str,
    skills: &[SkillLevel],
) -> Result<(), ApiError> {
    if skills.len() > 100 {
        return Err(ApiError::invalid(field, "at most 100 skills"));
    }
    let known = state.storage.skill_names(tenant).await?;
    for (i, s) in skills.iter().enumerate() {
        if !(1..=5).contains(&s.level) {
            return Err(ApiError::invalid(field, "skill levels are 1–5"));
        }
        if skills[..i].iter().any(|o| o.skill == s.skill) {
            return Err(ApiError::invalid(
                field,
                format!("skill {} is named twice", s.skill),
            ));
        }
        if !known.contains(&s.skill) {
            return Err(ApiError::invalid(
                field,
                format!("no skill named {} in this tenant", s.skill),
            ));
        }
    }
    Ok(())
}

fn check_range(field: &str, v: i64, min: i64, max: i64) -> Result<(), ApiError> {
    if !(min..=max).contains(&v) {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be {min}–{max}"),
        ));
    }
    Ok(())
}

// ---------- skills ----------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSkill {
    /// a-z, 0-9, '-', '_', '.'; 1–64; unique in the tenant.
    pub name: String,
    pub description: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SkillPatch {
    pub description: Option<String>,
}

/// The tenant's skills.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/skills", tag = "contact-centre",
    params(("tenant" = String, Path), ListParams),
    responses((status = 200, body = inline(Listed<Skill>)), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_skills(
    State(state): State<ApiState>,
    who: Principal,
    Path(tenant): Path<String>,
    Params(q): Params<ListParams>,
) -> Result<Json<Listed<Skill>>, ApiError> {
    who.require(&tenant, STAFF)?;
    let page = q.page(&[("name", "name"), ("created", "created_ms")])?;
    state.tenant_exists(&who, &tenant).await?;
    Ok(Json(state.storage.list_skills(&tenant, &page).await?))
}

/// Add a skill that queues can require and agents can have.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/skills", tag = "contact-centre",
    params(("tenant" = String, Path)), request_body = NewSkill,
    responses((status = 201, body = Skill), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_skill(
    State(state): State<ApiState>,
    who: Principal,
    Path(tenant): Path<String>,
    Body(req): Body<NewSkill>,
) -> Result<Response, ApiError> {
    who.require(&tenant, ADMINS)?;
    state.tenant_exists(&who, &tenant).await?;
    check_slug("name", &req.name, 64)?;
    let description = req.description.unwrap_or_default();
    check_len("description", &description, 0, 500)?;
    let now = now_ms();
    let skill = Skill {
        id: new_id(),
        tenant: tenant.clone(),
        name: req.name,
        description,
        version: 1,
        created_ms: now,
        updated_ms: now,
    };
    state.storage.create_skill(&skill).await?;
    state
        .audit(
            &who,
            Some(&tenant),
            "create",
            "skill",
            &skill.id,
            serde_json::json!({"name": skill.name}),
        )
        .await?;
    Ok(with_etag(StatusCode::CREATED, skill.version, &skill))
}

/// One skill.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/skills/{skill}", tag = "contact-centre",
    params(("tenant" = String, Path), ("skill" = String, Path)),
    responses((status = 200, body = Skill), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_skill(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    who.require(&tenant, STAFF)?;
    let s = state.storage.skill(&tenant, &name).await?;
    Ok(with_etag(StatusCode::OK, s.version, &s))
}

/// Change a skill's description.
#[utoipa::path(patch, path = "/api/v1/tenants/{tenant}/skills/{skill}", tag = "contact-centre",
    params(("tenant" = String, Path), ("skill" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body = SkillPatch,
    responses((status = 200, body = Skill), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_skill(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, name)): Path<(String, String)>,
    headers: HeaderMap,
    Body(req): Body<SkillPatch>,
) -> Result<Response, ApiError> {
    who.require(&tenant, ADMINS)?;
    let mut s = state.storage.skill(&tenant, &name).await?;
    check_version(&headers, s.version)?;
    if let Some(d) = req.description {
        check_len("description", &d, 0, 500)?;
        s.description = d;
    }
    s.version += 1;
    s.updated_ms = now_ms();
    state.storage.update_skill(&s).await?;
    state
        .audit(
            &who,
            Some(&tenant),
            "update",
            "skill",
            &s.id,
            serde_json::json!({"name": s.name, "description": s.description}),
        )
        .await?;
    Ok(with_etag(StatusCode::OK, s.version, &s))
}

/// Remove a skill no queue or agent names (409 otherwise).
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/skills/{skill}", tag = "contact-centre",
    params(("tenant" = String, Path), ("skill" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody)))]
async fn delete_skill(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    who.require(&tenant, ADMINS)?;
    let s = state.storage.skill(&tenant, &name).await?;
    check_version(&headers, s.version)?;
    let uses = |skills: &[SkillLevel]| skills.iter().any(|l| l.skill == name);
    let queues = state.storage.all_queues(&tenant).await?;
    let agents = state.storage.all_agents(&tenant).await?;
    let users: Vec<String> = queues
        .iter()
        .filter(|q| uses(&q.skills))
        .map(|q| format!("queue {}", q.name))
        .chain(
            agents
                .iter()
                .filter(|a| uses(&a.skills))
                .map(|a| format!("agent {}", a.name)),
        )
        .take(10)
        .collect();
    if !users.is_empty() {
        return Err(StoreError::Conflict(format!(
            "skill {name} is still required or held by: {}",
            users.join(", ")
        ))
        .into());
    }
    state.storage.delete_skill(&tenant, &s.id).await?;
    state
        .audit(
            &who,
            Some(&tenant),
            "delete",
            "skill",
            &s.id,
            serde_json::json!({"name": s.name}),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------- queues ----------

/// A new queue; every setting but the name has the default shown.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewQueue {
    /// a-z, 0-9, '-', '_', '.'; 1–64; unique in the tenant; routes name it as `queue:<name>`.
    pub name: String,
    /// `longest-idle` (default), `ring-all`, `least-recent`, `fewest-calls`, `least-talk-time`,
    /// `round-robin`, `top-down`, `random`, `weighted-random`, `ring-progressively`,
    /// `best-proficiency`.
    pub strategy: Option<String>,
    /// Ring-progressively: seconds between widening the ring by one agent (default 5).
    pub ring_step_s: Option<i64>,
    /// Weight against the agent's other queues, 1–1000 (default 1).
    pub priority: Option<i64>,
    /// Service-level threshold T in seconds (default 20).
    pub service_level_s: Option<i64>,
    /// Callers waiting at most; beyond it callers overflow (default: no limit).
    pub max_len: Option<i64>,
    /// Seconds a caller waits at most before overflowing (default: no limit).
    pub max_wait_s: Option<i64>,
    /// `queue:<name>` of this tenant, or a route target (`user:`, `trunk:`, `uri:`).
    pub overflow: Option<String>,
    /// Callers leave (overflow) when no agent is logged in (default false).
    pub leave_when_empty: Option<bool>,
    /// Waiting callers hear the hold music as early media (default true).
    pub music: Option<bool>,
    /// Seconds between spoken announcements of a waiting caller's position and estimated wait
    /// over the hold music: 0 (off, the default) or 10–3600.
    pub announce_period_s: Option<i64>,
    /// Announcements say the caller's position (default true).
    pub announce_position: Option<bool>,
    /// Announcements say the estimated wait (default true).
    pub announce_wait: Option<bool>,
    /// A caller first hears a spoken greeting, then joins the queue (default false; needs
    /// `music`).
    pub greeting: Option<bool>,
    /// A key (0-9, *, #) that takes a waiting caller out of the queue to the overflow target
    /// when that is not a queue, else ends the call (default none).
    pub leave_key: Option<String>,
    /// A key (0-9, *, #) with which a waiting caller asks to be called back: they keep their
    /// place, the call ends, and the customer is dialled when an agent is reserved (default none).
    pub callback_key: Option<String>,
    /// Skills a caller needs, each with the least level (1–5) accepted.
    pub skills: Option<Vec<SkillLevel>>,
    /// Time-based relaxation of tier and level requirements.
    pub relax: Option<Vec<RelaxDef>>,
    /// Agents of tier above this are not offered callers until a relax rule allows them.
    pub max_tier: Option<i64>,
    /// Seconds an offer rings (default 20).
    pub ring_timeout_s: Option<i64>,
    /// Agents' wrap-up seconds after a call (default 0).
    pub wrapup_s: Option<i64>,
    /// Seconds an agent is skipped after rejecting an offer (default 5).
    pub reject_delay_s: Option<i64>,
    /// Seconds an agent is skipped after letting an offer ring out (default 5).
    pub no_answer_delay_s: Option<i64>,
    /// Ring-outs in a row after which the agent is put on break (default 3).
    pub max_no_answer: Option<i64>,
    /// Seconds before callers are offered across queues (default 0).
    pub routing_delay_s: Option<i64>,
}

/// Changes to a queue; `null` clears max_len, max_wait_s, overflow, leave_key, callback_key and
/// max_tier.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueuePatch {
    pub strategy: Option<String>,
    pub ring_step_s: Option<i64>,
    pub priority: Option<i64>,
    pub service_level_s: Option<i64>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    pub max_len: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    pub max_wait_s: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub overflow: Option<Option<String>>,
    pub leave_when_empty: Option<bool>,
    pub music: Option<bool>,
    pub announce_period_s: Option<i64>,
    pub announce_position: Option<bool>,
    pub announce_wait: Option<bool>,
    pub greeting: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub leave_key: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub callback_key: Option<Option<String>>,
    pub skills: Option<Vec<SkillLevel>>,
    pub relax: Option<Vec<RelaxDef>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    pub max_tier: Option<Option<i64>>,
    pub ring_timeout_s: Option<i64>,
    pub wrapup_s: Option<i64>,
    pub reject_delay_s: Option<i64>,
    pub no_answer_delay_s: Option<i64>,
    pub max_no_answer: Option<i64>,
    pub routing_delay_s: Option<i64>,
}

impl NewQueue {
    fn split(self) -> (String, QueuePatch) {
        let patch = QueuePatch {
            strategy: self.strategy,
            ring_step_s: self.ring_step_s,
            priority: self.priority,
            service_level_s: self.service_level_s,
            max_len: self.max_len.map(Some),
            max_wait_s: self.max_wait_s.map(Some),
            overflow: self.overflow.map(Some),
            leave_when_empty: self.leave_when_empty,
            music: self.music,
            announce_period_s: self.announce_period_s,
            announce_position: self.announce_position,
            announce_wait: self.announce_wait,
            greeting: self.greeting,
            leave_key: self.leave_key.map(Some),
            callback_key: self.callback_key.map(Some),
            skills: self.skills,
            relax: self.relax,
            max_tier: self.max_tier.map(Some),
            ring_timeout_s: self.ring_timeout_s,
            wrapup_s: self.wrapup_s,
            reject_delay_s: self.reject_delay_s,
            no_answer_delay_s: self.no_answer_delay_s,
            max_no_answer: self.max_no_answer,
            routing_delay_s: self.routing_delay_s,
        };
        (self.name, patch)
    }
}

impl QueuePatch {
    fn apply(self, q: &mut Queue) {
        macro_rules! set {
            ($($f:ident),*) => { $(if let Some(v) = self.$f { q.$f = v; })* };
        }
        set!(
            strategy,
            ring_step_s,
            priority,
            service_level_s,
            max_len,
            max_wait_s,
            overflow,
            leave_when_empty,
            music,
            announce_period_s,
            announce_position,
            announce_wait,
            greeting,
            leave_key,
            callback_key,
            skills,
            relax,
            max_tier,
            ring_timeout_s,
            wrapup_s,
            reject_delay_s,
            no_answer_delay_s,
            max_no_answer,
            routing_delay_s
        );
    }
}

/// Everything a queue's settings must satisfy, with the field each error is about.
async fn check_queue(state: &ApiState, q: &Queue) -> Result<(), ApiError> {
    check_slug("name", &q.name, 64)?;
    if !STRATEGIES.contains(&q.strategy.as_str()) {
        return Err(ApiError::invalid(
            "strategy",
            format!("strategy is one of {}", STRATEGIES.join(", ")),
        ));
    }
    const DAY: i64 = 86_400;
    check_range("ring_step_s", q.ring_step_s, 1, 3600)?;
    check_range("priority", q.priority, 1, 1000)?;
    check_range("service_level_s", q.service_level_s, 1, DAY)?;
    if let Some(v) = q.max_len {
        check_range("max_len", v, 0, 100_000)?;
    }
    if let Some(v) = q.max_wait_s {
        check_range("max_wait_s", v, 1, DAY)?;
    }
    if let Some(v) = q.max_tier {
        check_range("max_tier", v, 0, 255)?;
    }
    check_range("ring_timeout_s", q.ring_timeout_s, 1, 600)?;
    check_range("wrapup_s", q.wrapup_s, 0, DAY)?;
    check_range("reject_delay_s", q.reject_delay_s, 0, DAY)?;
    check_range("no_answer_delay_s", q.no_answer_delay_s, 0, DAY)?;
    check_range("max_no_answer", q.max_no_answer, 0, 100)?;
    check_range("routing_delay_s", q.routing_delay_s, 0, DAY)?;
    if q.announce_period_s != 0 {
        let min = i64::from(crate::sip::queues::MIN_ANNOUNCE_PERIOD_S);
        check_range("announce_period_s", q.announce_period_s, min, 3600).map_err(|_| {
            ApiError::invalid(
                "announce_period_s",
                format!("announce_period_s is 0 (off) or {min}-3600"),
            )
        })?;
    }
    for (field, key) in [
        ("leave_key", &q.leave_key),
        ("callback_key", &q.callback_key),
    ] {
        if key.as_ref().is_some_and(|k| !crate::sip::queues::is_key(k)) {
            return Err(ApiError::invalid(
                field,
                format!("{field} is one of 0-9, * and #"),
            ));
        }
    }
    if q.callback_key.is_some() && q.callback_key == q.leave_key {
        return Err(ApiError::invalid(
            "callback_key",
            "callback_key and leave_key must differ",
        ));
    }
    check_skills(state, &q.tenant, "skills", &q.skills).await?;
    if q.relax.len() > 20 {
        return Err(ApiError::invalid("relax", "at most 20 relax rules"));
    }
    if q.relax
        .iter()
        .any(|r| r.min_level.is_some_and(|l| !(1..=5).contains(&l)))
    {
        return Err(ApiError::invalid("relax", "relax min_level is 1–5"));
    }
    if let Some(target) = &q.overflow {
        check_len("overflow", target, 1, 256)?;
        match parse_target(target) {
            Some(RouteTarget::Queue(name)) => {
                if name == q.name {
                    return Err(ApiError::invalid(
                        "overflow",
                        "a queue cannot overflow to itself",
                    ));
                }
                match state.storage.queue(&q.tenant, &name).await {
                    Ok(_) => {}
                    Err(StoreError::NotFound) => {
                        return Err(ApiError::invalid(
                            "overflow",
                            format!("no queue named {name} in this tenant"),
                        ))
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Some(RouteTarget::Trunk(name)) => {
                if !state.storage.trunk_named(&q.tenant, &name).await? {
                    return Err(ApiError::invalid(
                        "overflow",
                        format!("no trunk named {name} in this tenant"),
                    ));
                }
            }
            Some(RouteTarget::User(user)) => check_slug("overflow", &user, 64)?,
            // A room is entered by a caller's own INVITE, not by the ACD sending a call on.
            Some(RouteTarget::Conference(_)) => {
                return Err(ApiError::invalid(
                    "overflow",
                    "a queue cannot overflow to a conference room",
                ))
            }
            Some(RouteTarget::Uri(uri)) => {
                if crate::sip::message::SipUri::parse(&uri)
                    .and_then(|u| u.socket_addr())
                    .is_none()
                {
                    return Err(ApiError::invalid(
                        "overflow",
                        "a uri: target needs an IP address host",
                    ));
                }
            }
            None => return Err(ApiError::invalid(
                "overflow",
                "overflow is queue:<name>, user:<account>, trunk:<name> or uri:sip:user@ip:port",
            )),
        }
    }
    // What the engine itself checks, in case it checks more than the above.
    q.def().validate().map_err(|m| ApiError::invalid("body", m))
}

/// The tenant's queues.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/queues", tag = "contact-centre",
    params(("tenant" = String, Path), ListParams),
    responses((status = 200, body = inline(Listed<Queue>)), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_queues(
    State(state): State<ApiState>,
    who: Principal,
    Path(tenant): Path<String>,
    Params(q): Params<ListParams>,
) -> Result<Json<Listed<Queue>>, ApiError> {
    who.require(&tenant, STAFF)?;
    let page = q.page(&[("name", "name"), ("created", "created_ms")])?;
    state.tenant_exists(&who, &tenant).await?;
    Ok(Json(state.storage.list_queues(&tenant, &page).await?))
}

/// Add a queue; callers reach it through a route whose target is `queue:<name>`.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/queues", tag = "contact-centre",
    params(("tenant" = String, Path)), request_body = NewQueue,
    responses((status = 201, body = Queue), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_queue(
    State(state): State<ApiState>,
    who: Principal,
    Path(tenant): Path<String>,
    Body(req): Body<NewQueue>,
) -> Result<Response, ApiError> {
    who.require(&tenant, ADMINS)?;
    state.tenant_exists(&who, &tenant).await?;
    let (name, settings) = req.split();
    check_slug("name", &name, 64)?;
    let mut queue = Queue::new(&tenant, &name, now_ms());
    settings.apply(&mut queue);
    check_queue(&state, &queue).await?;
    state.storage.create_queue(&queue).await?;
    state
        .audit(
            &who,
            Some(&tenant),
            "create",
            "queue",
            &queue.id,
            serde_json::to_value(&queue).unwrap_or_default(),
        )
        .await?;
    state.directory_changed().await;
    Ok(with_etag(StatusCode::CREATED, queue.version, &queue))
}

/// One queue.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/queues/{queue}", tag = "contact-centre",
    params(("tenant" = String, Path), ("queue" = String, Path)),
    responses((status = 200, body = Queue), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_queue(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    who.require(&tenant, STAFF)?;
    let q = state.storage.queue(&tenant, &name).await?;
    Ok(with_etag(StatusCode::OK, q.version, &q))
}

/// Change a queue's settings.
#[utoipa::path(patch, path = "/api/v1/tenants/{tenant}/queues/{queue}", tag = "contact-centre",
    params(("tenant" = String, Path), ("queue" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body = QueuePatch,
    responses((status = 200, body = Queue), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_queue(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, name)): Path<(String, String)>,
    headers: HeaderMap,
    Body(req): Body<QueuePatch>,
) -> Result<Response, ApiError> {
    who.require(&tenant, ADMINS)?;
    let mut q = state.storage.queue(&tenant, &name).await?;
    check_version(&headers, q.version)?;
    req.apply(&mut q);
    check_queue(&state, &q).await?;
    q.version += 1;
    q.updated_ms = now_ms();
    state.storage.update_queue(&q).await?;
    state
        .audit(
            &who,
            Some(&tenant),
            "update",
            "queue",
            &q.id,
            serde_json::to_value(&q).unwrap_or_default(),
        )
        .await?;
    state.directory_changed().await;
    Ok(with_etag(StatusCode::OK, q.version, &q))
}

/// Remove a queue and its memberships; 409 while a route or another queue's overflow names it.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/queues/{queue}", tag = "contact-centre",
    params(("tenant" = String, Path), ("queue" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody)))]
async fn delete_queue(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    who.require(&tenant, ADMINS)?;
    let q = state.storage.queue(&tenant, &name).await?;
    check_version(&headers, q.version)?;
    let users = state.storage.queue_references(&tenant, &name).await?;
    if !users.is_empty() {
        return Err(StoreError::Conflict(format!(
            "queue {name} is still the target of: {}",
            users.join(", ")
        ))
        .into());
    }
    state.storage.delete_queue(&tenant, &q.id).await?;
    state
        .audit(
            &who,
            Some(&tenant),
            "delete",
            "queue",
            &q.id,
            serde_json::json!({"name": q.name}),
        )
        .await?;
    state.directory_changed().await;
    Ok(StatusCode::NO_CONTENT)
}

// ---------- agents ----------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAgent {
    /// a-z, 0-9, '-', '_', '.'; 1–64; unique in the tenant. An API user with role `agent` and
    /// this username acts as this agent.
    pub name: String,
    /// The tenant's SIP account whose registered devices ring for this agent.
    pub user: String,
    #[serde(default)]
    pub skills: Vec<SkillLevel>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentPatch {
    pub user: Option<String>,
    pub skills: Option<Vec<SkillLevel>>,
}

async fn check_agent(state: &ApiState, a: &Agent) -> Result<(), ApiError> {
    check_slug("name", &a.name, 64)?;
    check_slug("user", &a.user, 64)?;
    match state.storage.account_by_username(&a.tenant, &a.user).await {
        Ok(_) => {}
        Err(StoreError::NotFound) => {
            return Err(ApiError::invalid(
                "user",
                format!("no SIP account named {} in this tenant", a.user),
            ))
        }
        Err(e) => return Err(e.into()),
    }
    check_skills(state, &a.tenant, "skills", &a.skills).await?;
    let def = crate::sip::queues::AgentDef {
        tenant: a.tenant.clone(),
        name: a.name.clone(),
        user: a.user.clone(),
        skills: a.skills.clone(),
        queues: Vec::new(),
    };
    def.validate().map_err(|m| ApiError::invalid("body", m))
}

/// The tenant's agents.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/agents", tag = "contact-centre",
    params(("tenant" = String, Path), ListParams),
    responses((status = 200, body = inline(Listed<Agent>)), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_agents(
    State(state): State<ApiState>,
    who: Principal,
    Path(tenant): Path<String>,
    Params(q): Params<ListParams>,
) -> Result<Json<Listed<Agent>>, ApiError> {
    who.require(&tenant, STAFF)?;
    let page = q.page(&[("name", "name"), ("created", "created_ms")])?;
    state.tenant_exists(&who, &tenant).await?;
    Ok(Json(state.storage.list_agents(&tenant, &page).await?))
}

/// Add an agent.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/agents", tag = "contact-centre",
    params(("tenant" = String, Path)), request_body = NewAgent,
    responses((status = 201, body = Agent), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_agent(
    State(state): State<ApiState>,
    who: Principal,
    Path(tenant): Path<String>,
    Body(req): Body<NewAgent>,
) -> Result<Response, ApiError> {
    who.require(&tenant, ADMINS)?;
    state.tenant_exists(&who, &tenant).await?;
    let now = now_ms();
    let agent = Agent {
        id: new_id(),
        tenant: tenant.clone(),
        name: req.name,
        user: req.user,
        skills: req.skills,
        version: 1,
        created_ms: now,
        updated_ms: now,
    };
    check_agent(&state, &agent).await?;
    state.storage.create_agent(&agent).await?;
    state
        .audit(
            &who,
            Some(&tenant),
            "create",
            "agent",
            &agent.id,
            serde_json::json!({"name": agent.name, "user": agent.user, "skills": agent.skills}),
        )
        .await?;
    state.directory_changed().await;
    Ok(with_etag(StatusCode::CREATED, agent.version, &agent))
}

/// One agent.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/agents/{agent}", tag = "contact-centre",
    params(("tenant" = String, Path), ("agent" = String, Path)),
    responses((status = 200, body = Agent), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_agent(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    super::acd::require_self_or(&who, &tenant, &name, STAFF)?;
    let a = state.storage.agent(&tenant, &name).await?;
    Ok(with_etag(StatusCode::OK, a.version, &a))
}

/// Change an agent's SIP account or skills.
#[utoipa::path(patch, path = "/api/v1/tenants/{tenant}/agents/{agent}", tag = "contact-centre",
    params(("tenant" = String, Path), ("agent" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body = AgentPatch,
    responses((status = 200, body = Agent), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_agent(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, name)): Path<(String, String)>,
    headers: HeaderMap,
    Body(req): Body<AgentPatch>,
) -> Result<Response, ApiError> {
    who.require(&tenant, ADMINS)?;
    let mut a = state.storage.agent(&tenant, &name).await?;
    check_version(&headers, a.version)?;
    if let Some(v) = req.user {
        a.user = v;
    }
    if let Some(v) = req.skills {
        a.skills = v;
    }
    check_agent(&state, &a).await?;
    a.version += 1;
    a.updated_ms = now_ms();
    state.storage.update_agent(&a).await?;
    state
        .audit(
            &who,
            Some(&tenant),
            "update",
            "agent",
            &a.id,
            serde_json::json!({"name": a.name, "user": a.user, "skills": a.skills}),
        )
        .await?;
    state.directory_changed().await;
    Ok(with_etag(StatusCode::OK, a.version, &a))
}

/// Remove an agent and its memberships (the engine lets a call in progress finish).
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/agents/{agent}", tag = "contact-centre",
    params(("tenant" = String, Path), ("agent" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)))]
async fn delete_agent(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    who.require(&tenant, ADMINS)?;
    let a = state.storage.agent(&tenant, &name).await?;
    check_version(&headers, a.version)?;
    state.storage.delete_agent(&tenant, &a.id).await?;
    state
        .audit(
            &who,
            Some(&tenant),
            "delete",
            "agent",
            &a.id,
            serde_json::json!({"name": a.name}),
        )
        .await?;
    state.directory_changed().await;
    Ok(StatusCode::NO_CONTENT)
}

// ---------- memberships ----------

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MembershipBody {
    /// 0–255 (default 0): tier 0 is offered callers first.
    pub tier: Option<i64>,
    /// Seconds a caller must have waited before this agent is offered it (default 0).
    pub delay_s: Option<i64>,
    /// Share for weighted-random, 1–1000 (default 1).
    pub weight: Option<i64>,
}

/// An agent's queues.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/agents/{agent}/queues", tag = "contact-centre",
    params(("tenant" = String, Path), ("agent" = String, Path), ListParams),
    responses((status = 200, body = inline(Listed<Membership>)), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_agent_queues(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, agent)): Path<(String, String)>,
    Params(q): Params<ListParams>,
) -> Result<Json<Listed<Membership>>, ApiError> {
    super::acd::require_self_or(&who, &tenant, &agent, STAFF)?;
    let page = q.page(&[("queue", "queue"), ("created", "created_ms")])?;
    state.storage.agent(&tenant, &agent).await?;
    Ok(Json(
        state
            .storage
            .list_memberships(&tenant, Some(&agent), None, &page)
            .await?,
    ))
}

/// A queue's members.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/queues/{queue}/members", tag = "contact-centre",
    params(("tenant" = String, Path), ("queue" = String, Path), ListParams),
    responses((status = 200, body = inline(Listed<Membership>)), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_queue_members(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, queue)): Path<(String, String)>,
    Params(q): Params<ListParams>,
) -> Result<Json<Listed<Membership>>, ApiError> {
    who.require(&tenant, STAFF)?;
    let page = q.page(&[("agent", "agent"), ("created", "created_ms")])?;
    state.storage.queue(&tenant, &queue).await?;
    Ok(Json(
        state
            .storage
            .list_memberships(&tenant, None, Some(&queue), &page)
            .await?,
    ))
}

/// Make the agent a member of the queue, or change its membership (201 when new).
#[utoipa::path(put, path = "/api/v1/tenants/{tenant}/agents/{agent}/queues/{queue}", tag = "contact-centre",
    params(("tenant" = String, Path), ("agent" = String, Path), ("queue" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body = MembershipBody,
    responses((status = 200, body = Membership), (status = 201, body = Membership), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn put_membership(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, agent, queue)): Path<(String, String, String)>,
    headers: HeaderMap,
    Body(req): Body<MembershipBody>,
) -> Result<Response, ApiError> {
    who.require(&tenant, ADMINS)?;
    state.storage.agent(&tenant, &agent).await?;
    state.storage.queue(&tenant, &queue).await?;
    let tier = req.tier.unwrap_or(0);
    let delay_s = req.delay_s.unwrap_or(0);
    let weight = req.weight.unwrap_or(1);
    check_range("tier", tier, 0, 255)?;
    check_range("delay_s", delay_s, 0, 86_400)?;
    check_range("weight", weight, 1, 1000)?;
    let now = now_ms();
    let (m, status, action) = match state.storage.membership(&tenant, &agent, &queue).await {
        Ok(mut m) => {
            check_version(&headers, m.version)?;
            m.tier = tier;
            m.delay_s = delay_s;
            m.weight = weight;
            m.version += 1;
            m.updated_ms = now;
            state.storage.update_membership(&m).await?;
            (m, StatusCode::OK, "update")
        }
        Err(StoreError::NotFound) => {
            let m = Membership {
                id: new_id(),
                tenant: tenant.clone(),
                agent,
                queue,
                tier,
                delay_s,
                weight,
                version: 1,
                created_ms: now,
                updated_ms: now,
            };
            state.storage.create_membership(&m).await?;
            (m, StatusCode::CREATED, "create")
        }
        Err(e) => return Err(e.into()),
    };
    state
        .audit(
            &who,
            Some(&tenant),
            action,
            "membership",
            &m.id,
            serde_json::json!({"agent": m.agent, "queue": m.queue, "tier": m.tier, "delay_s": m.delay_s, "weight": m.weight}),
        )
        .await?;
    state.directory_changed().await;
    Ok(with_etag(status, m.version, &m))
}

/// Take the agent out of the queue.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/agents/{agent}/queues/{queue}", tag = "contact-centre",
    params(("tenant" = String, Path), ("agent" = String, Path), ("queue" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)))]
async fn delete_membership(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, agent, queue)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    who.require(&tenant, ADMINS)?;
    let m = state.storage.membership(&tenant, &agent, &queue).await?;
    check_version(&headers, m.version)?;
    state.storage.delete_membership(&tenant, &m.id).await?;
    state
        .audit(
            &who,
            Some(&tenant),
            "delete",
            "membership",
            &m.id,
            serde_json::json!({"agent": m.agent, "queue": m.queue}),
        )
        .await?;
    state.directory_changed().await;
    Ok(StatusCode::NO_CONTENT)
}
