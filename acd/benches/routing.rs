//! Routing decisions at scale: 10,000 agents, 1,000 queues, 100 skills (10 queues per agent).
//! `cargo bench -p tandem-acd --bench routing`. p99 per decision: `tandem-bench acd --routing`.
//!
//! `arrive`: a contact arrives while agents are free and is offered (one `handle(Enter)` plus
//! draining its outputs). `agent_freed`: with every agent busy and 5,000 contacts waiting, a
//! call ends and the freed agent takes the best waiting contact across its 10 queues. Only the
//! decision is timed; answering and re-filling happen outside the measurement.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::{Duration, Instant};
use tandem_acd::scenario::RoutingScenario;

// The bench is a shell around the sans-IO engine: reading the clock here is its job.
#[allow(clippy::disallowed_methods)]
fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("routing");
    g.throughput(Throughput::Elements(1));
    let mut s = RoutingScenario::new(1, 10_000, 1_000, 100, 10);
    g.bench_function("arrive_10k_agents_1k_queues", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let offer = s.arrive();
                total += t.elapsed();
                if let Some((c, a)) = offer {
                    s.complete(c, a);
                }
            }
            total
        })
    });
    let mut s = RoutingScenario::new(2, 10_000, 1_000, 100, 10);
    s.fill(5_000);
    g.bench_function("agent_freed_5k_waiting", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let Some((_, contact)) = s.pick_busy() else {
                    continue;
                };
                let t = Instant::now();
                let offer = s.free(contact);
                total += t.elapsed();
                s.refill(offer);
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
