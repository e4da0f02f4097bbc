//! Contact-centre statistics per METRICS.md, per interval, for a queue or an agent, computed
//! from the stored queue event log: the events are mapped back to `tandem_acd`'s outputs (names
//! interned to ids) and `tandem_acd::stats::Stats` does the arithmetic, so there is one
//! implementation of the definitions.

use super::{ApiError, ApiState, ErrorBody, Params, Principal, STAFF};
use crate::storage::{now_ms, QueueEventFilter};
use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use tandem_acd::stats::{SlVariant, StatsConfig};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(queue_stats))
        .routes(routes!(agent_stats))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// Start, Unix ms (default: 24 hours before `to`); rounded down to an interval boundary.
    pub from: Option<i64>,
    /// End, Unix ms, exclusive (default: now). At most 31 days after `from`.
    pub to: Option<i64>,
    /// Interval length in seconds: 60–86400, a multiple of 60 (default 900).
    pub interval: Option<i64>,
    /// Service-level formula: `default` (answered within T ÷ (answered + abandoned after T)),
    /// `amazon-connect`, `asterisk`, `asterisk2` (see METRICS.md).
    pub sl: Option<String>,
    /// Abandons quicker than this many seconds are short abandons (default 5).
    pub short_abandon_s: Option<i64>,
    /// Leave short abandons out of abandoned, service level and abandonment rate.
    pub exclude_short_abandons: Option<bool>,
}

/// Contact-centre figures of one period (METRICS.md). Averages and rates are null where their
/// denominator is zero.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Figures {
    pub offered: u64,
    pub answered: u64,
    pub answered_within_sl: u64,
    pub abandoned: u64,
    pub short_abandoned: u64,
    pub callbacks_requested: u64,
    pub exit_timeout: u64,
    pub exit_full: u64,
    pub exit_empty: u64,
    pub exit_key: u64,
    pub transferred: u64,
    pub ring_no_answer: u64,
    /// Contacts whose handling (talk + wrap-up) ended in the period.
    pub handled: u64,
    pub service_level_pct: Option<f64>,
    pub asa_s: Option<f64>,
    /// Talk + after-contact work, per handled contact.
    pub aht_s: Option<f64>,
    pub acw_s: Option<f64>,
    pub abandonment_rate_pct: Option<f64>,
    pub avg_abandon_s: Option<f64>,
    /// Longest wait of a contact answered, abandoned or timed out in the period.
    pub longest_wait_s: f64,
    /// Time on contacts (talk + wrap-up) ÷ (that + available time), for agents; null for queues.
    pub occupancy_pct: Option<f64>,
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct IntervalFigures {
    pub start_ms: i64,
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct QueueStats {
    pub queue: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub interval_s: i64,
    /// The queue's service-level threshold T the figures use.
    pub service_level_s: i64,
    pub sl: String,
    pub totals: Figures,
    /// Every interval of the period, oldest first (empty ones included).
    pub intervals: Vec<IntervalFigures>,
}

/// What a stats query asks for, checked.
struct Period {
    from: i64,
    to: i64,
    interval_s: i64,
    variant: SlVariant,
    sl: String,
    cfg: StatsConfig,
}

fn period(q: StatsQuery) -> Result<Period, ApiError> {
    let interval_s = q.interval.unwrap_or(900);
    if !(60..=86_400).contains(&interval_s) || interval_s % 60 != 0 {
        return Err(ApiError::invalid(
            "interval",
            "interval is 60–86400 seconds, a multiple of 60",
        ));
    }
    let interval_ms = interval_s * 1000;
    // Unix milliseconds up to the year 9999; checked before any arithmetic on them.
    const LATEST: i64 = 253_402_300_799_999;
    let to = q.to.unwrap_or_else(now_ms);
    if !(0..=LATEST).contains(&to) {
        return Err(ApiError::invalid("to", "to is Unix milliseconds"));
    }
    let from = q.from.unwrap_or(to.saturating_sub(86_400_000).max(0));
    if !(0..=LATEST).contains(&from) {
        return Err(ApiError::invalid("from", "from is Unix milliseconds"));
    }
    if to <= from {
        return Err(ApiError::invalid("to", "to must be after from"));
    }
    if to - from > 31 * 86_400_000 {
        return Err(ApiError::invalid("to", "at most 31 days at once"));
    }
    let from = from - from % interval_ms;
    if (to - from) / interval_ms >= 3000 {
        return Err(ApiError::invalid(
            "interval",
            "at most 3000 intervals at once: choose a longer interval or a shorter period",
        ));
    }
    let sl = q.sl.unwrap_or_else(|| "default".into());
    let variant = match sl.as_str() {
        "default" => SlVariant::Default,
        "amazon-connect" => SlVariant::AmazonConnect,
        "asterisk" => SlVariant::AsteriskSl,
        "asterisk2" => SlVariant::AsteriskSl2,
        _ => {
            return Err(ApiError::invalid(
                "sl",
                "sl is default, amazon-connect, asterisk or asterisk2",
            ))
        }
    };
    let short_abandon_s = q.short_abandon_s.unwrap_or(5);
    if !(0..=3600).contains(&short_abandon_s) {
        return Err(ApiError::invalid(
            "short_abandon_s",
            "short_abandon_s must be 0–3600",
        ));
    }
    Ok(Period {
        from,
        to,
        interval_s,
        variant,
        sl,
        cfg: StatsConfig {
            interval_ms: interval_ms as u64,
            short_abandon_ms: short_abandon_s as u64 * 1000,
            exclude_short_abandons: q.exclude_short_abandons.unwrap_or(false),
            default_sl_ms: 20_000,
        },
    })
}

/// Per-interval statistics of one queue, computed from the stored event log.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/queues/{queue}/stats", tag = "contact-centre",
    params(("tenant" = String, Path), ("queue" = String, Path), StatsQuery),
    responses((status = 200, body = QueueStats), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn queue_stats(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, queue)): Path<(String, String)>,
    Params(q): Params<StatsQuery>,
) -> Result<Json<QueueStats>, ApiError> {
    who.require(&tenant, STAFF)?;
    let mut p = period(q)?;
    let stored = state.storage.queue(&tenant, &queue).await?;
    p.cfg.default_sl_ms = stored.service_level_s.max(0) as u64 * 1000;
    // Events before `from` are read too: a handled contact's figures land when its wrap-up
    // ends, which needs the call's completion and the agent's state before it.
    let events = state
        .storage
        .queue_stats_events(&tenant, &queue, (p.from - STATS_LOOKBACK_MS).max(0), p.to)
        .await?;
    let thresholds = [(queue.clone(), stored.service_level_s)];
    let (totals, intervals) = stats::compute(
        p.cfg,
        stats::Subject::Queue(&queue),
        &thresholds,
        &events,
        p.from,
        p.to,
        p.variant,
    );
    Ok(Json(QueueStats {
        queue,
        from_ms: p.from,
        to_ms: p.to,
        interval_s: p.interval_s,
        service_level_s: stored.service_level_s,
        sl: p.sl,
        totals,
        intervals,
    }))
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct AgentStats {
    pub agent: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub interval_s: i64,
    pub sl: String,
    /// The agent's share of the queue figures (answered, within each queue's service level,
    /// ring-no-answer, handled, AHT, ACW) and its occupancy; offered and abandoned are queue
    /// figures and stay 0 here.
    pub totals: Figures,
    pub intervals: Vec<IntervalFigures>,
}

/// Per-interval statistics of one agent (answered, handle times, occupancy), from the stored
/// event log. An agent may read its own.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/agents/{agent}/stats", tag = "contact-centre",
    params(("tenant" = String, Path), ("agent" = String, Path), StatsQuery),
    responses((status = 200, body = AgentStats), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn agent_stats(
    State(state): State<ApiState>,
    who: Principal,
    Path((tenant, agent)): Path<(String, String)>,
    Params(q): Params<StatsQuery>,
) -> Result<Json<AgentStats>, ApiError> {
    super::acd::require_self_or(&who, &tenant, &agent, STAFF)?;
    let p = period(q)?;
    state.storage.agent(&tenant, &agent).await?;
    let thresholds: Vec<(String, i64)> = state
        .storage
        .all_queues(&tenant)
        .await?
        .into_iter()
        .map(|q| (q.name, q.service_level_s))
        .collect();
    let filter = QueueEventFilter {
        from_ms: Some((p.from - STATS_LOOKBACK_MS).max(0)),
        to_ms: Some(p.to),
        agent: Some(agent.clone()),
        ..Default::default()
    };
    let events = state.storage.stats_events(&tenant, &filter).await?;
    let (totals, intervals) = stats::compute(
        p.cfg,
        stats::Subject::Agent(&agent),
        &thresholds,
        &events,
        p.from,
        p.to,
        p.variant,
    );
    Ok(Json(AgentStats {
        agent,
        from_ms: p.from,
        to_ms: p.to,
        interval_s: p.interval_s,
        sl: p.sl,
        totals,
        intervals,
    }))
}

/// How far before a period's start the statistics read (a call plus its wrap-up).
const STATS_LOOKBACK_MS: i64 = 4 * 3_600_000;

/// Stored events back into `tandem_acd`'s outputs, so the one implementation of METRICS.md
/// (`tandem_acd::stats`) computes the API's figures too.
pub mod stats {
    use super::{Figures, IntervalFigures};
    use crate::storage::QueueEventRow;
    use std::collections::HashMap;
    use tandem_acd::ids::{AgentId, ContactId, QueueId, ReasonCode, TenantId};
    use tandem_acd::io::{EventKind, Output, QueueEvent};
    use tandem_acd::state::AgentState;
    use tandem_acd::stats::{Counters, Scope, SlVariant, Stats, StatsConfig};

    /// Names to the numeric ids `Stats` keys by (local to one computation).
    #[derive(Default)]
    struct Ids(HashMap<String, u64>);

    impl Ids {
        fn of(&mut self, name: &str) -> u64 {
            let next = self.0.len() as u64 + 1;
            *self.0.entry(name.to_string()).or_insert(next)
        }
    }

    fn state_of(name: &str) -> Option<AgentState> {
        Some(match name {
            "logged-out" => AgentState::LoggedOut,
            "available" => AgentState::Available,
            "break" => AgentState::Break(ReasonCode(0)),
            "reserved" => AgentState::Reserved,
            "ringing" => AgentState::Ringing,
            "on-call" => AgentState::OnCall,
            "wrap-up" => AgentState::WrapUp,
            _ => return None,
        })
    }

    /// One stored event as the ACD output it came from; None for kinds statistics ignore.
    fn output(e: &QueueEventRow, queues: &mut Ids, agents: &mut Ids) -> Option<Output> {
        let d = &e.detail;
        let ms = |k: &str| d.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        let to_queue = |queues: &mut Ids| {
            d.get("to")
                .and_then(|v| v.as_str())
                .map(|q| QueueId(queues.of(q)))
        };
        let at_ms = e.at_ms.max(0) as u64;
        let tenant = TenantId(1);
        let agent = e.agent.as_deref().map(|a| AgentId(agents.of(a)));
        if e.kind == "agent_state" {
            let from = state_of(d.get("from")?.as_str()?)?;
            let to = state_of(d.get("to")?.as_str()?)?;
            return Some(Output::AgentStateChanged {
                agent: agent?,
                tenant,
                from,
                to,
                at_ms,
            });
        }
        let kind = match e.kind.as_str() {
            "enter" => EventKind::Enter {
                position: ms("position") as u32,
                ewt_ms: ms("ewt_ms"),
                resumed_from: d
                    .get("resumed_from")
                    .and_then(|v| v.as_u64())
                    .map(ContactId),
            },
            "connect" => EventKind::Connect {
                wait_ms: ms("wait_ms"),
                ring_ms: ms("ring_ms"),
                callback: d.get("callback").and_then(|v| v.as_bool()).unwrap_or(false),
            },
            "complete_caller" => EventKind::CompleteCaller {
                wait_ms: ms("wait_ms"),
                talk_ms: ms("talk_ms"),
            },
            "complete_agent" => EventKind::CompleteAgent {
                wait_ms: ms("wait_ms"),
                talk_ms: ms("talk_ms"),
            },
            "abandon" => EventKind::Abandon {
                wait_ms: ms("wait_ms"),
            },
            "transfer" => EventKind::Transfer {
                to: to_queue(queues).unwrap_or(QueueId(0)),
                wait_ms: ms("wait_ms"),
                talk_ms: ms("talk_ms"),
            },
            "callback_requested" => EventKind::CallbackRequested {
                wait_ms: ms("wait_ms"),
            },
            "exit_timeout" => EventKind::ExitTimeout {
                wait_ms: ms("wait_ms"),
                to: to_queue(queues),
            },
            "exit_key" => EventKind::ExitKey {
                wait_ms: ms("wait_ms"),
            },
            "exit_empty" => EventKind::ExitEmpty {
                wait_ms: ms("wait_ms"),
                to: to_queue(queues),
            },
            "exit_full" => EventKind::ExitFull {
                to: to_queue(queues),
            },
            "ring_no_answer" => EventKind::RingNoAnswer {
                ring_ms: ms("ring_ms"),
            },
            _ => return None,
        };
        Some(Output::Event(QueueEvent {
            at_ms,
            tenant,
            queue: e.queue.as_deref().map(|q| QueueId(queues.of(q))),
            contact: e.contact.map(|c| ContactId(c as u64)),
            agent,
            kind,
        }))
    }

    fn add(sum: &mut Counters, c: &Counters) {
        sum.offered += c.offered;
        sum.answered += c.answered;
        sum.answered_within += c.answered_within;
        sum.answered_within_direct += c.answered_within_direct;
        sum.abandoned += c.abandoned;
        sum.short_abandoned += c.short_abandoned;
        sum.abandoned_within += c.abandoned_within;
        sum.abandoned_after += c.abandoned_after;
        sum.callbacks_requested += c.callbacks_requested;
        sum.callbacks_within += c.callbacks_within;
        sum.exit_timeout += c.exit_timeout;
        sum.exit_key += c.exit_key;
        sum.exit_empty += c.exit_empty;
        sum.exit_full += c.exit_full;
        sum.transferred += c.transferred;
        sum.ring_no_answer += c.ring_no_answer;
        sum.answer_wait_ms += c.answer_wait_ms;
        sum.abandon_wait_ms += c.abandon_wait_ms;
        sum.max_wait_ms = sum.max_wait_ms.max(c.max_wait_ms);
        sum.handled += c.handled;
        sum.talk_ms += c.talk_ms;
        sum.acw_ms += c.acw_ms;
        sum.busy_ms += c.busy_ms;
        sum.idle_ms += c.idle_ms;
    }

    fn figures(c: &Counters, variant: SlVariant) -> Figures {
        let s = |ms: Option<f64>| ms.map(|v| v / 1000.0);
        Figures {
            offered: c.offered,
            answered: c.answered,
            answered_within_sl: c.answered_within,
            abandoned: c.abandoned,
            short_abandoned: c.short_abandoned,
            callbacks_requested: c.callbacks_requested,
            exit_timeout: c.exit_timeout,
            exit_full: c.exit_full,
            exit_empty: c.exit_empty,
            exit_key: c.exit_key,
            transferred: c.transferred,
            ring_no_answer: c.ring_no_answer,
            handled: c.handled,
            service_level_pct: c.service_level(variant),
            asa_s: s(c.asa_ms()),
            aht_s: s(c.aht_ms()),
            acw_s: s(c.acw_avg_ms()),
            abandonment_rate_pct: c.abandonment_rate(),
            avg_abandon_s: s(c.avg_abandon_ms()),
            longest_wait_s: c.max_wait_ms as f64 / 1000.0,
            occupancy_pct: c.occupancy(),
        }
    }

    /// Whose figures.
    #[derive(Debug, Clone, Copy)]
    pub enum Subject<'a> {
        Queue(&'a str),
        Agent(&'a str),
    }

    /// The figures of `subject` over [from, to) (from on an interval boundary), in total and
    /// per interval, from its events in emission order (earlier ones included for context).
    /// `thresholds`: each queue's service-level T in seconds.
    pub fn compute(
        cfg: StatsConfig,
        subject: Subject,
        thresholds: &[(String, i64)],
        events: &[QueueEventRow],
        from: i64,
        to: i64,
        variant: SlVariant,
    ) -> (Figures, Vec<IntervalFigures>) {
        let mut queues = Ids::default();
        let mut agents = Ids::default();
        let mut stats = Stats::new(cfg, &[]);
        for (name, t_s) in thresholds {
            stats.set_threshold(QueueId(queues.of(name)), (*t_s).max(0) as u64 * 1000);
        }
        let scope = match subject {
            Subject::Queue(q) => Scope::Queue(QueueId(queues.of(q))),
            Subject::Agent(a) => Scope::Agent(AgentId(agents.of(a))),
        };
        for e in events {
            if let Some(out) = output(e, &mut queues, &mut agents) {
                stats.observe(&out);
            }
        }
        let step = cfg.interval_ms.max(1) as i64;
        let mut total = Counters::default();
        let mut intervals = Vec::new();
        let mut start = from;
        while start < to {
            let c = stats.interval(start as u64, scope);
            add(&mut total, &c);
            intervals.push(IntervalFigures {
                start_ms: start,
                figures: figures(&c, variant),
            });
            start += step;
        }
        (figures(&total, variant), intervals)
    }
}
