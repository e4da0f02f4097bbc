//! Contact-centre statistics computed only from the ACD's outputs (queue events and agent state
//! changes), per `shared/METRICS.md`: live totals and 15-minute intervals, per queue, per agent,
//! per tenant. Each figure is attributed to the interval in which its event happened (queue_log
//! style); a handled contact's AHT lands when its wrap-up ends.

use std::collections::{BTreeMap, HashMap};

use crate::config::QueueConfig;
use crate::ids::{AgentId, QueueId, TenantId};
use crate::io::{EventKind, Output, QueueEvent};
use crate::state::AgentState;

/// What a set of counters is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Tenant(TenantId),
    Queue(QueueId),
    Agent(AgentId),
}

/// Which service-level formula (METRICS.md, chosen per tenant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlVariant {
    /// answered within T ÷ (answered + abandoned after T).
    Default,
    /// removed from queue within T (answered, abandoned, callback) ÷ contacts queued.
    AmazonConnect,
    /// answered within T ÷ answered.
    AsteriskSl,
    /// (answered within T + abandoned within T) ÷ (answered + abandoned).
    AsteriskSl2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsConfig {
    pub interval_ms: u64,
    /// Abandons quicker than this are short abandons (default 5 s).
    pub short_abandon_ms: u64,
    /// Leave short abandons out of Abandoned (and so out of SL and abandonment rate).
    pub exclude_short_abandons: bool,
    /// T for queues the stats were not told about.
    pub default_sl_ms: u64,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            interval_ms: 15 * 60 * 1000,
            short_abandon_ms: 5_000,
            exclude_short_abandons: false,
            default_sl_ms: 20_000,
        }
    }
}

/// Raw counts and sums; the derived metrics are methods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub offered: u64,
    pub answered: u64,
    pub answered_within: u64,
    /// Answered within T, callbacks excluded (Amazon Connect counts the callback request).
    pub answered_within_direct: u64,
    pub abandoned: u64,
    pub short_abandoned: u64,
    pub abandoned_within: u64,
    pub abandoned_after: u64,
    pub callbacks_requested: u64,
    pub callbacks_within: u64,
    pub exit_timeout: u64,
    pub exit_key: u64,
    pub exit_empty: u64,
    pub exit_full: u64,
    pub transferred: u64,
    pub ring_no_answer: u64,
    pub answer_wait_ms: u64,
    pub abandon_wait_ms: u64,
    pub max_wait_ms: u64,
    /// Contacts whose handling (talk + wrap-up) ended.
    pub handled: u64,
    pub talk_ms: u64,
    pub acw_ms: u64,
    /// Agent time on contacts (talk + hold + ACW) and available idle time.
    pub busy_ms: u64,
    pub idle_ms: u64,
}

fn ratio(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

impl Counters {
    /// Service level in percent; `None` when the denominator is zero.
    pub fn service_level(&self, v: SlVariant) -> Option<f64> {
        let r = match v {
            SlVariant::Default => ratio(self.answered_within, self.answered + self.abandoned_after),
            SlVariant::AmazonConnect => ratio(
                self.answered_within_direct + self.abandoned_within + self.callbacks_within,
                self.offered,
            ),
            SlVariant::AsteriskSl => ratio(self.answered_within, self.answered),
            SlVariant::AsteriskSl2 => ratio(
                self.answered_within + self.abandoned_within,
                self.answered + self.abandoned,
            ),
        };
        r.map(|x| x * 100.0)
    }
    pub fn asa_ms(&self) -> Option<f64> {
        ratio(self.answer_wait_ms, self.answered)
    }
    pub fn aht_ms(&self) -> Option<f64> {
        ratio(self.talk_ms + self.acw_ms, self.handled)
    }
    pub fn acw_avg_ms(&self) -> Option<f64> {
        ratio(self.acw_ms, self.handled)
    }
    pub fn abandonment_rate(&self) -> Option<f64> {
        ratio(self.abandoned, self.offered).map(|x| x * 100.0)
    }
    pub fn avg_abandon_ms(&self) -> Option<f64> {
        ratio(self.abandon_wait_ms, self.abandoned)
    }
    /// Occupancy in percent.
    pub fn occupancy(&self) -> Option<f64> {
        ratio(self.busy_ms, self.busy_ms + self.idle_ms).map(|x| x * 100.0)
    }
}

#[derive(Debug, Clone)]
struct AgentTrack {
    tenant: TenantId,
    state: AgentState,
    since_ms: u64,
    /// The call whose wrap-up is running or to come: (queue, talk).
    call: Option<(QueueId, u64)>,
}

/// The statistics accumulator. Feed it every output (`observe`); ask for figures by scope.
#[derive(Debug, Clone)]
pub struct Stats {
    cfg: StatsConfig,
    sl_ms: HashMap<QueueId, u64>,
    live: HashMap<Scope, Counters>,
    intervals: BTreeMap<(u64, Scope), Counters>,
    agents: HashMap<AgentId, AgentTrack>,
}

impl Stats {
    pub fn new(cfg: StatsConfig, queues: &[QueueConfig]) -> Self {
        Stats {
            cfg,
            sl_ms: queues
                .iter()
                .map(|q| (q.id, u64::from(q.service_level_s) * 1000))
                .collect(),
            live: HashMap::new(),
            intervals: BTreeMap::new(),
            agents: HashMap::new(),
        }
    }

    /// Sets a queue's service-level threshold T.
    pub fn set_threshold(&mut self, queue: QueueId, t_ms: u64) {
        self.sl_ms.insert(queue, t_ms);
    }

    fn bump(&mut self, at: u64, scopes: &[Scope], f: impl Fn(&mut Counters)) {
        let start = at - at % self.cfg.interval_ms.max(1);
        for &s in scopes {
            f(self.live.entry(s).or_default());
            f(self.intervals.entry((start, s)).or_default());
        }
    }

    /// Adds agent time [from, to) to busy or idle, split across interval boundaries.
    fn add_time(&mut self, scopes: &[Scope], from: u64, to: u64, busy: bool) {
        let step = self.cfg.interval_ms.max(1);
        let mut t = from;
        while t < to {
            let end = (t - t % step + step).min(to);
            let d = end - t;
            self.bump(t, scopes, |c| {
                if busy {
                    c.busy_ms += d
                } else {
                    c.idle_ms += d
                }
            });
            t = end;
        }
    }

    pub fn observe(&mut self, out: &Output) {
        match out {
            Output::Event(e) => self.on_event(e),
            Output::AgentStateChanged {
                agent,
                tenant,
                to,
                at_ms,
                ..
            } => self.on_state(*agent, *tenant, *to, *at_ms),
            _ => {}
        }
    }

    fn on_event(&mut self, e: &QueueEvent) {
        let mut scopes = vec![Scope::Tenant(e.tenant)];
        if let Some(q) = e.queue {
            scopes.push(Scope::Queue(q));
        }
        let t_ms = e
            .queue
            .and_then(|q| self.sl_ms.get(&q).copied())
            .unwrap_or(self.cfg.default_sl_ms);
        let at = e.at_ms;
        match e.kind {
            // A resumed caller was offered once already (its first entry).
            EventKind::Enter {
                resumed_from: None, ..
            } => self.bump(at, &scopes, |c| c.offered += 1),
            EventKind::Connect {
                wait_ms, callback, ..
            } => {
                if let Some(a) = e.agent {
                    scopes.push(Scope::Agent(a));
                }
                let within = wait_ms <= t_ms;
                self.bump(at, &scopes, |c| {
                    c.answered += 1;
                    c.answer_wait_ms += wait_ms;
                    c.max_wait_ms = c.max_wait_ms.max(wait_ms);
                    if within {
                        c.answered_within += 1;
                        if !callback {
                            c.answered_within_direct += 1;
                        }
                    }
                });
            }
            EventKind::CompleteCaller { talk_ms, .. }
            | EventKind::CompleteAgent { talk_ms, .. }
            | EventKind::Transfer { talk_ms, .. }
                if e.agent.is_some() =>
            {
                if matches!(e.kind, EventKind::Transfer { .. }) {
                    self.bump(at, &scopes, |c| c.transferred += 1);
                }
                if let (Some(a), Some(q)) = (e.agent, e.queue) {
                    if let Some(t) = self.agents.get_mut(&a) {
                        t.call = Some((q, talk_ms));
                    }
                }
            }
            EventKind::Transfer { .. } => self.bump(at, &scopes, |c| c.transferred += 1),
            EventKind::Abandon { wait_ms } => {
                let short = wait_ms < self.cfg.short_abandon_ms;
                let counted = !(short && self.cfg.exclude_short_abandons);
                let within = wait_ms <= t_ms;
                self.bump(at, &scopes, |c| {
                    c.short_abandoned += u64::from(short);
                    c.max_wait_ms = c.max_wait_ms.max(wait_ms);
                    if counted {
                        c.abandoned += 1;
                        c.abandon_wait_ms += wait_ms;
                        if within {
                            c.abandoned_within += 1;
                        } else {
                            c.abandoned_after += 1;
                        }
                    }
                });
            }
            EventKind::CallbackRequested { wait_ms } => {
                let within = wait_ms <= t_ms;
                self.bump(at, &scopes, |c| {
                    c.callbacks_requested += 1;
                    c.callbacks_within += u64::from(within);
                });
            }
            EventKind::ExitTimeout { wait_ms, .. } => self.bump(at, &scopes, |c| {
                c.exit_timeout += 1;
                c.max_wait_ms = c.max_wait_ms.max(wait_ms);
            }),
            EventKind::ExitKey { .. } => self.bump(at, &scopes, |c| c.exit_key += 1),
            EventKind::ExitEmpty { .. } => self.bump(at, &scopes, |c| c.exit_empty += 1),
            EventKind::ExitFull { .. } => self.bump(at, &scopes, |c| c.exit_full += 1),
            EventKind::RingNoAnswer { .. } => {
                if let Some(a) = e.agent {
                    scopes.push(Scope::Agent(a));
                }
                self.bump(at, &scopes, |c| c.ring_no_answer += 1);
            }
            _ => {}
        }
    }

    fn on_state(&mut self, agent: AgentId, tenant: TenantId, to: AgentState, at: u64) {
        let prev = self.agents.insert(
            agent,
            AgentTrack {
                tenant,
                state: to,
                since_ms: at,
                call: None,
            },
        );
        let scopes = [Scope::Tenant(tenant), Scope::Agent(agent)];
        let mut call = None;
        if let Some(p) = prev {
            call = p.call;
            match p.state {
                AgentState::OnCall | AgentState::WrapUp => {
                    self.add_time(&scopes, p.since_ms, at, true)
                }
                AgentState::Available => self.add_time(&scopes, p.since_ms, at, false),
                _ => {}
            }
            if p.state == AgentState::WrapUp {
                if let Some((q, talk)) = call.take() {
                    let acw = at - p.since_ms;
                    let s = [scopes[0], scopes[1], Scope::Queue(q)];
                    self.bump(at, &s, |c| {
                        c.handled += 1;
                        c.talk_ms += talk;
                        c.acw_ms += acw;
                    });
                }
            }
        }
        if let Some(t) = self.agents.get_mut(&agent) {
            t.call = call;
        }
    }

    /// Live totals for a scope, with agent time accrued up to `now_ms`.
    pub fn live(&self, scope: Scope, now_ms: u64) -> Counters {
        let mut c = self.live.get(&scope).copied().unwrap_or_default();
        for (id, t) in &self.agents {
            let mine = match scope {
                Scope::Agent(a) => a == *id,
                Scope::Tenant(x) => x == t.tenant,
                Scope::Queue(_) => false,
            };
            if mine {
                let d = now_ms.saturating_sub(t.since_ms);
                match t.state {
                    AgentState::OnCall | AgentState::WrapUp => c.busy_ms += d,
                    AgentState::Available => c.idle_ms += d,
                    _ => {}
                }
            }
        }
        c
    }

    /// The counters of the interval starting at `start_ms` (a multiple of the interval).
    pub fn interval(&self, start_ms: u64, scope: Scope) -> Counters {
        self.intervals
            .get(&(start_ms, scope))
            .copied()
            .unwrap_or_default()
    }

    /// Every (interval start, counters) recorded for a scope, oldest first.
    pub fn intervals(&self, scope: Scope) -> Vec<(u64, Counters)> {
        self.intervals
            .iter()
            .filter(|((_, s), _)| *s == scope)
            .map(|((t, _), c)| (*t, *c))
            .collect()
    }
}
