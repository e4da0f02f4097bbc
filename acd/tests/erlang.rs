//! The simulator running the real ACD against Erlang C (M/M/N, FIFO, no abandonment).
//!
//! Load points are staffed so that P_wait lies between ~0.3 and ~0.6, where all three figures
//! are sizeable. Waits are autocorrelated (strongly so near 95% load), so each run also reports
//! batch-means standard errors, and the load the random traffic actually offered (arrivals per
//! ms × mean talk time of the measured contacts).
//!
//! Release (`cargo test --release -p tandem-acd --test erlang -- --nocapture`, 1.5–6 min on two
//! shared cores; 1.2M–16M calls per point): P_wait and SL(20 s) within ±2 points of the formula
//! at the nominal load; ASA within ±5% of the formula at the realised load, and within ±5% or
//! 3.5σ (the wider) of the formula at the nominal load. The last clause is for 95%: there ASA
//! moves ~25% per 1% of load, so 16M calls whose load came out 0.09% above nominal land 5.4%
//! (3.1σ) above the nominal formula and 2.4% from the formula at their own load (RESULTS.md).
//! A debug build runs 1/40 of the calls on two seeds and asserts each figure within its
//! tolerance or 4σ, whichever is wider: a consistency check, not the precision claim.

use tandem_acd::erlang::erlang_c;
use tandem_acd::sim;

const HANDLE_MS: f64 = 180_000.0;

/// (occupancy, agents, calls per seed in release, seeds)
const POINTS: [(f64, u32, u64, u64); 5] = [
    (0.50, 2, 600_000, 2),
    (0.70, 5, 750_000, 2),
    (0.80, 10, 1_000_000, 2),
    (0.90, 30, 2_000_000, 2),
    (0.95, 100, 4_000_000, 4),
];

const DEBUG_DIVISOR: u64 = 40;

fn check(point: usize) {
    let (occ, n, calls, seeds) = POINTS[point];
    let strict = !cfg!(debug_assertions);
    let seeds = if strict { seeds } else { seeds.min(2) };
    let calls = if strict { calls } else { calls / DEBUG_DIVISOR };
    let lambda = occ * f64::from(n) / HANDLE_MS;
    let e = erlang_c(lambda, HANDLE_MS, n).expect("stable load");
    let sl_formula = e.service_level(20_000.0, HANDLE_MS, n);
    let (mut pw, mut asa, mut sl, mut occ_sim, mut mae) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut pw_v, mut asa_v, mut sl_v, mut load) = (0.0, 0.0, 0.0, 0.0);
    for seed in 0..seeds {
        let r = sim::run(&sim::mmn(seed * 7919 + 1, n, occ, HANDLE_MS, calls)).expect("sim");
        assert!(r.answered as f64 > calls as f64 * 0.9, "{r:?}");
        assert_eq!(r.abandoned, 0);
        pw += r.p_wait;
        asa += r.asa_ms;
        sl += r.service_level;
        occ_sim += r.occupancy;
        mae += r.ewt_mae_ms;
        load += r.realised_load;
        pw_v += r.p_wait_stderr.powi(2);
        asa_v += r.asa_stderr_ms.powi(2);
        sl_v += r.sl_stderr.powi(2);
    }
    let k = seeds as f64;
    let (pw, asa, sl, occ_sim, mae) = (pw / k, asa / k, sl / k, occ_sim / k, mae / k);
    let (pw_se, asa_se, sl_se) = (pw_v.sqrt() / k, asa_v.sqrt() / k, sl_v.sqrt() / k);
    // Erlang C at the load the random traffic actually offered.
    let load = load / k;
    let er = erlang_c(load / HANDLE_MS, HANDLE_MS, n).expect("realised load below N");
    println!(
        "  realised load {:.3} Erl (nominal {:.3}): Erlang C there P_wait {:.4}, ASA {:.2} s",
        load,
        occ * f64::from(n),
        er.p_wait,
        er.asa / 1000.0
    );
    println!(
        "| {:.0}% | {n} | {} | {:.4} ± {:.4} | {:.4} | {:.2} ± {:.2} | {:.2} | {:.4} ± {:.4} | {:.4} | {:.4} | {:.1} |",
        occ * 100.0,
        calls * seeds,
        pw,
        pw_se,
        e.p_wait,
        asa / 1000.0,
        asa_se / 1000.0,
        e.asa / 1000.0,
        sl,
        sl_se,
        sl_formula,
        occ_sim,
        mae / 1000.0
    );
    let slack = |tol: f64, se: f64| if strict { tol } else { tol.max(4.0 * se) };
    assert!(
        (pw - e.p_wait).abs() <= slack(0.02, pw_se),
        "P_wait {pw} vs {}",
        e.p_wait
    );
    assert!(
        (sl - sl_formula).abs() <= slack(0.02, sl_se),
        "SL {sl} vs {sl_formula}"
    );
    let asa_slack = if strict {
        (0.05 * e.asa).max(3.5 * asa_se)
    } else {
        slack(0.05 * e.asa, asa_se)
    };
    assert!(
        (asa - e.asa).abs() <= asa_slack,
        "ASA {asa} vs {} (1σ {asa_se})",
        e.asa
    );
    assert!(
        (asa - er.asa).abs() <= slack(0.05 * er.asa, asa_se),
        "ASA {asa} vs {} at the realised load",
        er.asa
    );
    assert!((occ_sim - occ).abs() <= 0.02, "occupancy {occ_sim}");
}

#[test]
fn erlang_c_50() {
    check(0);
}
#[test]
fn erlang_c_70() {
    check(1);
}
#[test]
fn erlang_c_80() {
    check(2);
}
#[test]
fn erlang_c_90() {
    check(3);
}
#[test]
fn erlang_c_95() {
    check(4);
}
