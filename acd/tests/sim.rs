//! The simulator beyond M/M/N: several queues with skills, log-normal talk, patience, wrap-up;
//! and the wait estimate beats the naive "no wait" guess.

use tandem_acd::config::{AgentConfig, Membership, QueueConfig};
use tandem_acd::ids::{AgentId, QueueId, SkillId, TenantId};
use tandem_acd::sim::{self, HandleDist, SimConfig, SimQueue};

#[test]
fn several_queues_with_skills_patience_and_wrap_up() {
    let t = TenantId(1);
    let queues = (1..=3u64)
        .map(|q| {
            let mut c = QueueConfig::new(QueueId(q), t);
            c.wrapup_ms = 10_000;
            c.initial_aht_ms = 130_000;
            SimQueue {
                cfg: c,
                arrivals_per_hour: 120.0,
                handle: HandleDist::LogNormal {
                    mean_ms: 120_000.0,
                    sd_ms: 90_000.0,
                },
                skills: vec![(SkillId(q as u16), 2)],
                patience_mean_ms: Some(60_000.0),
            }
        })
        .collect();
    let agents = (0..14u64)
        .map(|i| {
            let q1 = i % 3 + 1;
            let q2 = (i + 1) % 3 + 1;
            AgentConfig {
                id: AgentId(i),
                tenant: t,
                skills: vec![(SkillId(q1 as u16), 3), (SkillId(q2 as u16), 2)],
                memberships: vec![Membership::new(QueueId(q1)), Membership::new(QueueId(q2))],
            }
        })
        .collect();
    let r = sim::run(&SimConfig {
        seed: 9,
        queues,
        agents,
        warmup_ms: 1_800_000,
        duration_ms: 20 * 3_600_000,
        sl_threshold_ms: 20_000,
    })
    .unwrap();
    // 360 calls/h × 130 s = 13 Erl on 14 agents with impatient callers: some abandon.
    assert!(r.offered > 6_000, "{r:?}");
    assert_eq!(r.offered, r.answered + r.abandoned);
    assert!(
        r.abandonment_rate > 0.01 && r.abandonment_rate < 0.5,
        "{r:?}"
    );
    assert!(r.occupancy > 0.75 && r.occupancy < 0.95, "{r:?}");
    assert!(r.service_level > 0.2 && r.service_level < 1.0, "{r:?}");
}

#[test]
fn the_wait_estimate_beats_guessing_no_wait() {
    let r = sim::run(&sim::mmn(3, 20, 0.9, 180_000.0, 40_000)).unwrap();
    // Predicting 0 always would err by the mean wait itself.
    assert!(r.ewt_mae_ms < 0.5 * r.mean_wait_ms, "{r:?}");
}
