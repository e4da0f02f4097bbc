//! `tandem-bench acd`: the ACD simulator (figures beside Erlang C when the scenario is M/M/N)
//! and the routing-decision timer (`--routing`: p50/p99/p99.9 per decision and decisions/s).

use std::time::Instant;

use hdrhistogram::Histogram;
use tandem_acd::config::{AgentConfig, Membership, QueueConfig};
use tandem_acd::erlang::erlang_c;
use tandem_acd::ids::{AgentId, QueueId, SkillId, TenantId};
use tandem_acd::scenario::RoutingScenario;
use tandem_acd::sim::{self, HandleDist, SimConfig, SimQueue};

/// A simulation scenario from the command line.
#[derive(Debug, Clone)]
pub struct SimArgs {
    pub agents: u32,
    pub occupancy: f64,
    pub handle_s: f64,
    pub calls: u64,
    pub seed: u64,
    pub queues: u32,
    pub patience_s: Option<f64>,
    pub lognormal_sd_s: Option<f64>,
    pub wrapup_s: f64,
}

/// Builds the simulation: `queues` queues with a skill each; every agent serves two adjacent
/// queues (with both skills), so several queues share agents. One queue is plain M/M/N.
pub fn scenario(a: &SimArgs) -> SimConfig {
    let k = a.queues.max(1);
    let mut cfg = sim::mmn(a.seed, a.agents, a.occupancy, a.handle_s * 1000.0, a.calls);
    let handle = match a.lognormal_sd_s {
        Some(sd) => HandleDist::LogNormal {
            mean_ms: a.handle_s * 1000.0,
            sd_ms: sd * 1000.0,
        },
        None => HandleDist::Exponential {
            mean_ms: a.handle_s * 1000.0,
        },
    };
    // Offered load includes wrap-up: A = λ·(talk + wrap-up).
    let total_per_hour = a.occupancy * f64::from(a.agents) * 3_600.0 / (a.handle_s + a.wrapup_s);
    let tenant = TenantId(1);
    cfg.queues = (0..k)
        .map(|q| {
            let mut c = QueueConfig::new(QueueId(u64::from(q) + 1), tenant);
            c.initial_aht_ms = ((a.handle_s + a.wrapup_s) * 1000.0) as u64;
            c.wrapup_ms = (a.wrapup_s * 1000.0) as u64;
            c.max_no_answer = 0;
            SimQueue {
                cfg: c,
                arrivals_per_hour: total_per_hour / f64::from(k),
                handle,
                skills: if k > 1 {
                    vec![(SkillId(q as u16), 1)]
                } else {
                    Vec::new()
                },
                patience_mean_ms: a.patience_s.map(|p| p * 1000.0),
            }
        })
        .collect();
    cfg.agents = (0..a.agents)
        .map(|i| {
            let q1 = i % k;
            let q2 = (i + 1) % k;
            let mut qs = vec![q1];
            if q2 != q1 {
                qs.push(q2);
            }
            AgentConfig {
                id: AgentId(u64::from(i) + 1),
                tenant,
                skills: qs.iter().map(|&q| (SkillId(q as u16), 3)).collect(),
                memberships: qs
                    .iter()
                    .map(|&q| Membership::new(QueueId(u64::from(q) + 1)))
                    .collect(),
            }
        })
        .collect();
    cfg.duration_ms = (a.calls as f64 / (total_per_hour / 3_600_000.0)) as u64;
    cfg
}

/// Runs the simulation and prints its figures, with Erlang C beside them for M/M/N.
#[allow(clippy::disallowed_methods)]
pub fn run_sim(a: &SimArgs) -> anyhow::Result<()> {
    let cfg = scenario(a);
    let t = Instant::now();
    let r = sim::run(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
    let secs = t.elapsed().as_secs_f64();
    let mmn =
        a.queues <= 1 && a.patience_s.is_none() && a.lognormal_sd_s.is_none() && a.wrapup_s == 0.0;
    println!(
        "ACD simulation: {} agents, {} queue(s), occupancy target {:.0}%, handle {} s, {} calls, seed {}",
        a.agents,
        a.queues.max(1),
        a.occupancy * 100.0,
        a.handle_s,
        a.calls,
        a.seed
    );
    println!(
        "measured contacts {} (answered {}, abandoned {}); {:.2} s wall, {:.0} ACD inputs/s",
        r.offered,
        r.answered,
        r.abandoned,
        secs,
        r.inputs as f64 / secs
    );
    let e = if mmn {
        erlang_c(
            a.occupancy * f64::from(a.agents) / a.handle_s,
            a.handle_s,
            a.agents,
        )
    } else {
        None
    };
    let fmt = |x: Option<f64>, d: usize| x.map_or("-".to_string(), |v| format!("{v:.d$}"));
    println!("{:<22} {:>18} {:>12}", "figure", "simulated", "Erlang C");
    println!(
        "{:<22} {:>18} {:>12}",
        "P(wait)",
        format!("{:.4} ± {:.4}", r.p_wait, r.p_wait_stderr),
        fmt(e.map(|e| e.p_wait), 4)
    );
    println!(
        "{:<22} {:>18} {:>12}",
        "ASA s",
        format!("{:.2} ± {:.2}", r.asa_ms / 1000.0, r.asa_stderr_ms / 1000.0),
        fmt(e.map(|e| e.asa), 2)
    );
    println!(
        "{:<22} {:>18} {:>12}",
        "SL(20 s)",
        format!("{:.4} ± {:.4}", r.service_level, r.sl_stderr),
        fmt(e.map(|e| e.service_level(20.0, a.handle_s, a.agents)), 4)
    );
    println!(
        "{:<22} {:>18.4} {:>12}",
        "abandonment",
        r.abandonment_rate,
        fmt(e.map(|_| 0.0), 4)
    );
    println!(
        "{:<22} {:>18.4} {:>12}",
        "occupancy",
        r.occupancy,
        fmt(e.map(|e| e.occupancy), 4)
    );
    println!(
        "{:<22} {:>18.2} {:>12}",
        "EWT MAE s",
        r.ewt_mae_ms / 1000.0,
        "-"
    );
    println!("(± = one standard error by batch means; SL = answered within 20 s ÷ (answered + abandoned after 20 s))");
    Ok(())
}

/// Times `decisions` routing decisions of each kind at 10k agents / 1k queues / 100 skills.
#[allow(clippy::disallowed_methods)]
pub fn run_routing(decisions: u64, seed: u64) -> anyhow::Result<()> {
    let t = Instant::now();
    let mut s = RoutingScenario::new(seed, 10_000, 1_000, 100, 10);
    println!(
        "scenario: 10,000 agents, 1,000 queues, 100 skills, 10 queues per agent (built in {:.1} s)",
        t.elapsed().as_secs_f64()
    );
    let mut h = Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3)?;
    let mut busy_ns = 0u64;
    let mut offered = 0u64;
    for _ in 0..decisions {
        let t = Instant::now();
        let o = s.arrive();
        let ns = t.elapsed().as_nanos() as u64;
        busy_ns += ns;
        // A preempted process can stall past any bound: saturate rather than fail the run.
        h.saturating_record(ns.max(1));
        if let Some((c, a)) = o {
            offered += 1;
            s.complete(c, a);
        }
    }
    report("arrive (agents free)", &h, busy_ns, decisions, offered);

    let mut s = RoutingScenario::new(seed + 1, 10_000, 1_000, 100, 10);
    s.fill(5_000);
    let mut h = Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3)?;
    let (mut busy_ns, mut offered, mut n) = (0u64, 0u64, 0u64);
    for _ in 0..decisions {
        let Some((_, contact)) = s.pick_busy() else {
            break;
        };
        let t = Instant::now();
        let o = s.free(contact);
        let ns = t.elapsed().as_nanos() as u64;
        busy_ns += ns;
        n += 1;
        // A preempted process can stall past any bound: saturate rather than fail the run.
        h.saturating_record(ns.max(1));
        offered += u64::from(o.is_some());
        s.refill(o);
    }
    report("agent freed (5k waiting)", &h, busy_ns, n, offered);
    Ok(())
}

fn report(label: &str, h: &Histogram<u64>, busy_ns: u64, n: u64, offered: u64) {
    println!(
        "{label:<26} n {n:>9}  offered {offered:>9}  p50 {:>6.2} µs  p99 {:>6.2} µs  p99.9 {:>6.2} µs  max {:>8.2} µs  {:>9.0} decisions/s (one core)",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.value_at_quantile(0.999) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
        n as f64 / (busy_ns as f64 / 1e9)
    );
}
