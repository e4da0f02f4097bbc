//! Discrete-event simulator: drives the real [`Acd`] with simulated time. Poisson arrivals per
//! queue, exponential or log-normal handle times, optional exponential patience (abandonment),
//! agents who answer at once; seeded, so a run is reproducible. Reports service level, ASA,
//! P(wait), abandonment, occupancy (from the [`Stats`] module, i.e. from the event stream) and
//! the wait estimate's mean absolute error against realised waits.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::config::{AcdConfig, AgentConfig, QueueConfig};
use crate::engine::Acd;
use crate::error::AcdError;
use crate::ids::{AgentId, ContactId, QueueId, SkillId};
use crate::io::{ContactRequest, EventKind, Input, Output, Party};
use crate::rng::SplitMix64;
use crate::stats::{Scope, Stats, StatsConfig};

/// Handle-time distribution (talk only; wrap-up comes from the queue's `wrapup_ms`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HandleDist {
    Exponential {
        mean_ms: f64,
    },
    /// Log-normal with this mean and standard deviation.
    LogNormal {
        mean_ms: f64,
        sd_ms: f64,
    },
}

impl HandleDist {
    fn sample(&self, rng: &mut SplitMix64) -> f64 {
        match *self {
            HandleDist::Exponential { mean_ms } => rng.exp(mean_ms),
            HandleDist::LogNormal { mean_ms, sd_ms } => {
                let s2 = (1.0 + (sd_ms / mean_ms).powi(2)).ln();
                let mu = mean_ms.ln() - s2 / 2.0;
                (mu + s2.sqrt() * rng.normal()).exp()
            }
        }
    }
}

/// One queue's traffic.
#[derive(Debug, Clone)]
pub struct SimQueue {
    pub cfg: QueueConfig,
    pub arrivals_per_hour: f64,
    pub handle: HandleDist,
    /// Skills every caller of this queue needs.
    pub skills: Vec<(SkillId, u8)>,
    /// Mean patience (exponential); `None` = callers never abandon.
    pub patience_mean_ms: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub queues: Vec<SimQueue>,
    pub agents: Vec<AgentConfig>,
    /// Contacts arriving before this are not measured (the system starts empty).
    pub warmup_ms: u64,
    /// Arrivals stop here; the run continues until every contact has finished.
    pub duration_ms: u64,
    /// Service-level threshold T for the report.
    pub sl_threshold_ms: u64,
}

/// Figures over the measured contacts (arrived after warm-up).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SimReport {
    pub offered: u64,
    pub answered: u64,
    pub abandoned: u64,
    /// Share of contacts that waited at all.
    pub p_wait: f64,
    /// Mean wait of answered contacts.
    pub asa_ms: f64,
    /// Answered within T ÷ (answered + abandoned after T) — the METRICS.md default.
    pub service_level: f64,
    pub abandonment_rate: f64,
    /// Agent occupancy over the measured period, from the event stream.
    pub occupancy: f64,
    /// Mean |EWT at entry − realised wait| over answered contacts.
    pub ewt_mae_ms: f64,
    pub mean_wait_ms: f64,
    /// Standard errors from 20 batch means over answered contacts in arrival order (waits are
    /// correlated, so the plain √n formula would understate them).
    pub asa_stderr_ms: f64,
    pub p_wait_stderr: f64,
    pub sl_stderr: f64,
    /// ACD inputs handled (arrivals, answers, hang-ups, abandons).
    pub inputs: u64,
    /// Realised offered load of the measured contacts: arrivals per ms × mean talk time
    /// (random traffic is never exactly the nominal load; near 95% occupancy the difference
    /// moves ASA by several percent).
    pub realised_load: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Arrival(u32),
    Hangup(ContactId),
    Abandon(ContactId),
}

struct Live {
    queue: u32,
    entered_ms: u64,
    ewt_ms: u64,
    measured: bool,
    connected: bool,
}

#[derive(Default)]
struct Acc {
    offered: u64,
    answered: u64,
    abandoned: u64,
    waited: u64,
    within: u64,
    abandoned_after: u64,
    wait_sum: f64,
    ewt_err_sum: f64,
    first_arrival_ms: Option<u64>,
    last_arrival_ms: u64,
    talk_sum: f64,
    talks: u64,
    /// Waits of answered measured contacts in answer order, for batch means.
    waits: Vec<f64>,
    sl_threshold_ms: u64,
}

/// Runs the simulation to the end and reports.
pub fn run(cfg: &SimConfig) -> Result<SimReport, AcdError> {
    let mut acd = Acd::new(AcdConfig {
        seed: cfg.seed ^ 0x5EED,
        queues: cfg.queues.iter().map(|q| q.cfg.clone()).collect(),
        agents: cfg.agents.clone(),
        ..AcdConfig::default()
    })?;
    let qcfgs: Vec<QueueConfig> = cfg.queues.iter().map(|q| q.cfg.clone()).collect();
    let mut stats = Stats::new(StatsConfig::default(), &qcfgs);
    let mut rng = SplitMix64::new(cfg.seed);
    let mut heap: BinaryHeap<Reverse<(u64, Ev)>> = BinaryHeap::new();
    for (i, q) in cfg.queues.iter().enumerate() {
        if q.arrivals_per_hour > 0.0 {
            let gap = rng.exp(3_600_000.0 / q.arrivals_per_hour).round() as u64;
            heap.push(Reverse((gap, Ev::Arrival(i as u32))));
        }
    }
    let tenant = cfg.queues.first().map(|q| q.cfg.tenant);
    for a in &cfg.agents {
        acd.handle(0, Input::Login { agent: a.id })?;
    }
    let mut live: HashMap<ContactId, Live> = HashMap::new();
    let mut acc = Acc {
        sl_threshold_ms: cfg.sl_threshold_ms,
        ..Acc::default()
    };
    let mut next_id = 1u64;
    let mut inputs = 0u64;
    let mut occ_start = None;
    let mut pending: Vec<Output> = Vec::new();
    let mut now = 0u64;
    loop {
        // Drain and react until the ACD has nothing more to say at this instant.
        loop {
            pending.extend(std::iter::from_fn(|| acd.poll_output()));
            if pending.is_empty() {
                break;
            }
            for o in pending.drain(..) {
                stats.observe(&o);
                match o {
                    Output::Offer {
                        contact, agents, ..
                    } => {
                        inputs += 1;
                        acd.handle(
                            now,
                            Input::Answer {
                                agent: agents[0],
                                contact,
                            },
                        )?;
                    }
                    Output::Event(e) => on_event(
                        &e.kind, e.contact, now, &mut live, &mut acc, cfg, &mut heap, &mut rng,
                    ),
                    _ => {}
                }
            }
        }
        if occ_start.is_none() && now >= cfg.warmup_ms {
            occ_start = tenant.map(|t| stats.live(Scope::Tenant(t), now));
        }
        let sim_next = heap.peek().map(|r| r.0 .0);
        let acd_next = acd.poll_timeout();
        let Some(t) = [sim_next, acd_next].into_iter().flatten().min() else {
            break;
        };
        now = t;
        if acd_next == Some(t) && sim_next != Some(t) {
            acd.handle_timeout(now);
            continue;
        }
        let Some(Reverse((_, ev))) = heap.pop() else {
            break;
        };
        match ev {
            Ev::Arrival(qi) => {
                let q = &cfg.queues[qi as usize];
                let id = ContactId(next_id);
                next_id += 1;
                live.insert(
                    id,
                    Live {
                        queue: qi,
                        entered_ms: now,
                        ewt_ms: 0,
                        measured: now >= cfg.warmup_ms,
                        connected: false,
                    },
                );
                inputs += 1;
                acd.handle(
                    now,
                    Input::Enter(ContactRequest {
                        id,
                        queue: q.cfg.id,
                        priority: 0,
                        skills: q.skills.clone(),
                        data: Vec::new(),
                        caller_key: None,
                    }),
                )?;
                if let Some(p) = q.patience_mean_ms {
                    let at = now + rng.exp(p).round() as u64;
                    heap.push(Reverse((at, Ev::Abandon(id))));
                }
                let gap = rng.exp(3_600_000.0 / q.arrivals_per_hour).round() as u64;
                if now + gap < cfg.duration_ms {
                    heap.push(Reverse((now + gap, Ev::Arrival(qi))));
                }
            }
            Ev::Hangup(id) => {
                inputs += 1;
                acd.handle(
                    now,
                    Input::Hangup {
                        contact: id,
                        by: Party::Caller,
                    },
                )?;
            }
            Ev::Abandon(id) => {
                if live.get(&id).is_some_and(|l| !l.connected) {
                    inputs += 1;
                    acd.handle(
                        now,
                        Input::Hangup {
                            contact: id,
                            by: Party::Caller,
                        },
                    )?;
                }
            }
        }
    }
    let end_occ = tenant.map(|t| stats.live(Scope::Tenant(t), cfg.duration_ms));
    let occupancy = match (occ_start, end_occ) {
        (Some(a), Some(b)) => {
            let busy = b.busy_ms.saturating_sub(a.busy_ms) as f64;
            let idle = b.idle_ms.saturating_sub(a.idle_ms) as f64;
            if busy + idle > 0.0 {
                busy / (busy + idle)
            } else {
                0.0
            }
        }
        _ => 0.0,
    };
    Ok(report(&acc, occupancy, inputs))
}

// The run loop's state, lent piecewise (a struct would have to borrow the loop's locals).
#[allow(clippy::too_many_arguments)]
fn on_event(
    kind: &EventKind,
    contact: Option<ContactId>,
    now: u64,
    live: &mut HashMap<ContactId, Live>,
    acc: &mut Acc,
    cfg: &SimConfig,
    heap: &mut BinaryHeap<Reverse<(u64, Ev)>>,
    rng: &mut SplitMix64,
) {
    let Some(id) = contact else {
        return;
    };
    let Some(l) = live.get_mut(&id) else {
        return;
    };
    let t = cfg.sl_threshold_ms;
    match kind {
        EventKind::Enter { ewt_ms, .. } => {
            l.ewt_ms = *ewt_ms;
            if l.measured {
                acc.offered += 1;
                acc.first_arrival_ms.get_or_insert(now);
                acc.last_arrival_ms = now;
            }
        }
        EventKind::Connect { .. } => {
            l.connected = true;
            let wait = (now - l.entered_ms) as f64;
            if l.measured {
                acc.answered += 1;
                acc.wait_sum += wait;
                acc.waits.push(wait);
                acc.waited += u64::from(wait > 0.0);
                acc.within += u64::from(now - l.entered_ms <= t);
                if l.ewt_ms != u64::MAX {
                    acc.ewt_err_sum += (l.ewt_ms as f64 - wait).abs();
                }
            }
            let talk = cfg.queues[l.queue as usize]
                .handle
                .sample(rng)
                .round()
                .max(1.0) as u64;
            if l.measured {
                acc.talk_sum += talk as f64;
                acc.talks += 1;
            }
            heap.push(Reverse((now + talk, Ev::Hangup(id))));
        }
        EventKind::Abandon { wait_ms } => {
            if l.measured {
                acc.abandoned += 1;
                acc.waited += 1;
                acc.abandoned_after += u64::from(*wait_ms > t);
            }
            live.remove(&id);
        }
        k if k.ends_contact() => {
            live.remove(&id);
        }
        _ => {}
    }
}

fn report(acc: &Acc, occupancy: f64, inputs: u64) -> SimReport {
    let div = |n: f64, d: f64| if d > 0.0 { n / d } else { 0.0 };
    let asa = div(acc.wait_sum, acc.answered as f64);
    let t = acc.sl_threshold_ms as f64;
    let asa_stderr_ms = batch_stderr(&acc.waits, |w| w);
    let p_wait_stderr = batch_stderr(&acc.waits, |w| f64::from(u8::from(w > 0.0)));
    let sl_stderr = batch_stderr(&acc.waits, |w| f64::from(u8::from(w <= t)));
    SimReport {
        offered: acc.offered,
        answered: acc.answered,
        abandoned: acc.abandoned,
        p_wait: div(acc.waited as f64, (acc.answered + acc.abandoned) as f64),
        asa_ms: asa,
        service_level: div(
            acc.within as f64,
            (acc.answered + acc.abandoned_after) as f64,
        ),
        abandonment_rate: div(acc.abandoned as f64, acc.offered as f64),
        occupancy,
        ewt_mae_ms: div(acc.ewt_err_sum, acc.answered as f64),
        mean_wait_ms: asa,
        asa_stderr_ms,
        p_wait_stderr,
        sl_stderr,
        inputs,
        realised_load: {
            let span = acc
                .last_arrival_ms
                .saturating_sub(acc.first_arrival_ms.unwrap_or(0));
            div(acc.offered.saturating_sub(1) as f64, span as f64)
                * div(acc.talk_sum, acc.talks as f64)
        },
    }
}

/// Standard error of the mean of `f(x)` by 20 batch means.
fn batch_stderr(xs: &[f64], f: impl Fn(f64) -> f64) -> f64 {
    const BATCHES: usize = 20;
    let per = xs.len() / BATCHES;
    if per == 0 {
        return 0.0;
    }
    let means: Vec<f64> = xs
        .chunks_exact(per)
        .take(BATCHES)
        .map(|c| c.iter().map(|&x| f(x)).sum::<f64>() / per as f64)
        .collect();
    let m = means.iter().sum::<f64>() / BATCHES as f64;
    let var = means.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (BATCHES - 1) as f64;
    (var / BATCHES as f64).sqrt()
}

/// An M/M/N scenario: one queue, FIFO (longest idle), no abandonment, no wrap-up.
pub fn mmn(seed: u64, agents: u32, occupancy: f64, handle_mean_ms: f64, calls: u64) -> SimConfig {
    let tenant = crate::ids::TenantId(1);
    let mut q = QueueConfig::new(QueueId(1), tenant);
    q.initial_aht_ms = handle_mean_ms as u64;
    q.max_no_answer = 0;
    let lambda_per_ms = occupancy * f64::from(agents) / handle_mean_ms;
    let duration_ms = (calls as f64 / lambda_per_ms) as u64;
    SimConfig {
        seed,
        queues: vec![SimQueue {
            cfg: q,
            arrivals_per_hour: lambda_per_ms * 3_600_000.0,
            handle: HandleDist::Exponential {
                mean_ms: handle_mean_ms,
            },
            skills: Vec::new(),
            patience_mean_ms: None,
        }],
        agents: (0..agents)
            .map(|i| AgentConfig {
                id: AgentId(u64::from(i) + 1),
                tenant,
                skills: Vec::new(),
                memberships: vec![crate::config::Membership::new(QueueId(1))],
            })
            .collect(),
        // Ten handle times reach steady state comfortably below 95% load; more above.
        warmup_ms: (handle_mean_ms * 20.0) as u64,
        duration_ms,
        sl_threshold_ms: 20_000,
    }
}
