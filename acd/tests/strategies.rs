//! One test per routing strategy, plus tiers and time-based relaxation.

mod common;
use common::*;
use tandem_acd::*;

fn three_agents(strategy: Strategy) -> H {
    let mut q = queue(1);
    q.strategy = strategy;
    H::new(vec![q], (1..=3).map(|a| agent(a, &[1], &[])).collect())
}

/// Offers `n` contacts one after another, serving each at once; returns who got each.
fn sequence(h: &mut H, first_id: u64, n: u64) -> Vec<u64> {
    let mut got = Vec::new();
    for c in first_id..first_id + n {
        h.take();
        h.now += 1;
        h.enter(req(c, 1));
        let offers = h.offers();
        assert_eq!(offers.len(), 1, "{offers:?}");
        let a = offers[0].1[0];
        got.push(a);
        h.serve(c, a);
    }
    got
}

#[test]
fn longest_idle_picks_the_agent_available_longest() {
    let mut h = three_agents(Strategy::LongestIdle);
    for a in [2, 3, 1] {
        h.now += 10;
        h.login(a);
    }
    // Agent 2 logged in first; after serving it goes to the back.
    assert_eq!(sequence(&mut h, 1, 4), vec![2, 3, 1, 2]);
}

#[test]
fn least_recent_uses_the_end_of_the_last_call() {
    let mut h = three_agents(Strategy::LeastRecent);
    for a in [1, 2, 3] {
        h.login(a);
    }
    // Nobody has taken a call: ties break in membership order.
    let got = sequence(&mut h, 1, 3);
    assert_eq!(got, vec![1, 2, 3]);
    assert_eq!(sequence(&mut h, 10, 1), vec![1]);
}

#[test]
fn fewest_calls_and_least_talk_time() {
    let mut h = three_agents(Strategy::FewestCalls);
    for a in [1, 2, 3] {
        h.login(a);
    }
    assert_eq!(sequence(&mut h, 1, 6), vec![1, 2, 3, 1, 2, 3]);

    let mut h = three_agents(Strategy::LeastTalkTime);
    for a in [1, 2, 3] {
        h.login(a);
    }
    // Agent 1 talks 100 s, agent 2 10 s; then agent 3 (0 s), then 2.
    h.enter(req(1, 1));
    h.ok(Input::Answer {
        agent: AgentId(1),
        contact: ContactId(1),
    });
    h.enter(req(2, 1));
    h.ok(Input::Answer {
        agent: AgentId(2),
        contact: ContactId(2),
    });
    h.now += 10_000;
    h.ok(Input::Hangup {
        contact: ContactId(2),
        by: Party::Agent,
    });
    h.now += 90_000;
    h.ok(Input::Hangup {
        contact: ContactId(1),
        by: Party::Agent,
    });
    assert_eq!(sequence(&mut h, 3, 2), vec![3, 3]);
    h.enter(req(9, 1));
    h.ok(Input::Answer {
        agent: AgentId(3),
        contact: ContactId(9),
    });
    assert_eq!(sequence(&mut h, 10, 1), vec![2]);
}

#[test]
fn round_robin_remembers_where_it_stopped() {
    let mut h = three_agents(Strategy::RoundRobin);
    for a in [1, 2, 3] {
        h.login(a);
    }
    assert_eq!(sequence(&mut h, 1, 5), vec![1, 2, 3, 1, 2]);
    // Agent 3 on break: skipped, the rotation continues.
    h.ok(Input::Pause {
        agent: AgentId(3),
        reason: ReasonCode(7),
    });
    assert_eq!(sequence(&mut h, 10, 3), vec![1, 2, 1]);
}

#[test]
fn top_down_always_starts_at_the_top() {
    let mut h = three_agents(Strategy::TopDown);
    for a in [3, 2, 1] {
        h.login(a);
    }
    assert_eq!(sequence(&mut h, 1, 3), vec![1, 1, 1]);
    h.enter(req(10, 1));
    h.ok(Input::Answer {
        agent: AgentId(1),
        contact: ContactId(10),
    });
    assert_eq!(sequence(&mut h, 11, 2), vec![2, 2]);
}

#[test]
fn random_and_weighted_random_spread_by_weight() {
    let mut h = three_agents(Strategy::Random);
    for a in [1, 2, 3] {
        h.login(a);
    }
    let got = sequence(&mut h, 1, 600);
    for a in 1..=3 {
        let n = got.iter().filter(|&&x| x == a).count();
        assert!((140..=260).contains(&n), "agent {a}: {n}");
    }

    let mut q = queue(1);
    q.strategy = Strategy::WeightedRandom;
    let mut heavy = agent(2, &[1], &[]);
    heavy.memberships[0].weight = 9;
    let mut h = H::new(vec![q], vec![agent(1, &[1], &[]), heavy]);
    h.login(1);
    h.login(2);
    let got = sequence(&mut h, 1, 1000);
    let n2 = got.iter().filter(|&&x| x == 2).count();
    assert!((850..=950).contains(&n2), "{n2}");
}

#[test]
fn ring_all_first_answer_wins_and_the_rest_are_cancelled() {
    let mut h = three_agents(Strategy::RingAll);
    for a in [1, 2, 3] {
        h.login(a);
    }
    h.enter(req(1, 1));
    assert_eq!(h.offers(), vec![(1, vec![1, 2, 3])]);
    h.take();
    h.ok(Input::Ringing {
        agent: AgentId(3),
        contact: ContactId(1),
    });
    h.ok(Input::Answer {
        agent: AgentId(2),
        contact: ContactId(1),
    });
    let out = h.take();
    let cancelled: Vec<u64> = out
        .iter()
        .filter_map(|o| match o {
            Output::CancelOffer { agent, .. } => Some(agent.0),
            _ => None,
        })
        .collect();
    assert_eq!(cancelled, vec![1, 3]);
    assert!(out.contains(&Output::Connect {
        contact: ContactId(1),
        agent: AgentId(2)
    }));
    // The loser's late answer is refused; it is free again.
    assert_eq!(
        h.try_do(Input::Answer {
            agent: AgentId(1),
            contact: ContactId(1)
        }),
        Err(AcdError::NotOffered {
            agent: AgentId(1),
            contact: ContactId(1)
        })
    );
    assert_eq!(h.state(1), AgentState::Available);
    assert_eq!(h.state(2), AgentState::OnCall);
}

#[test]
fn ring_progressively_adds_an_agent_each_step() {
    let mut h = three_agents(Strategy::RingProgressively { step_ms: 5_000 });
    for a in [1, 2, 3] {
        h.login(a);
    }
    h.enter(req(1, 1));
    assert_eq!(h.offers(), vec![(1, vec![1])]);
    h.take();
    h.advance(5_000);
    assert_eq!(h.offers(), vec![(1, vec![2])]);
    h.take();
    h.advance(5_000);
    assert_eq!(h.offers(), vec![(1, vec![3])]);
    h.take();
    h.ok(Input::Answer {
        agent: AgentId(1),
        contact: ContactId(1),
    });
    let cancels = h
        .out
        .iter()
        .filter(|o| matches!(o, Output::CancelOffer { .. }))
        .count();
    assert_eq!(cancels, 2);
}

#[test]
fn best_proficiency_takes_the_most_skilled() {
    let mut q = queue(1);
    q.strategy = Strategy::BestProficiency;
    let mut h = H::new(
        vec![q],
        vec![
            agent(1, &[1], &[(3, 2)]),
            agent(2, &[1], &[(3, 5)]),
            agent(3, &[1], &[(3, 4)]),
        ],
    );
    for a in [1, 2, 3] {
        h.login(a);
    }
    let mut r = req(1, 1);
    r.skills = vec![(SkillId(3), 1)];
    h.enter(r);
    assert_eq!(h.offers(), vec![(1, vec![2])]);
}

#[test]
fn skills_filter_and_proficiency_relaxation() {
    let mut q = queue(1);
    q.relax = vec![RelaxRule {
        after_ms: 30_000,
        max_tier: None,
        min_proficiency: Some(2),
    }];
    let mut h = H::new(
        vec![q],
        vec![agent(1, &[1], &[(5, 2)]), agent(2, &[1], &[(6, 5)])],
    );
    h.login(1);
    h.login(2);
    let mut r = req(1, 1);
    r.skills = vec![(SkillId(5), 4)];
    h.enter(r);
    assert!(h.offers().is_empty(), "nobody has skill 5 at 4");
    h.advance(29_999);
    assert!(h.offers().is_empty());
    h.advance(1);
    assert_eq!(
        h.offers(),
        vec![(1, vec![1])],
        "after 30 s proficiency 2 will do"
    );
}

#[test]
fn tiers_relax_over_time() {
    let mut q = queue(1);
    q.base_max_tier = 1;
    q.relax = vec![RelaxRule {
        after_ms: 60_000,
        max_tier: Some(2),
        min_proficiency: None,
    }];
    let mut far = agent(2, &[1], &[]);
    far.memberships[0].tier = 2;
    let mut near = agent(1, &[1], &[]);
    near.memberships[0].tier = 1;
    let mut h = H::new(vec![q], vec![near, far]);
    h.login(2);
    h.login(1);
    h.enter(req(1, 1));
    assert_eq!(
        h.offers(),
        vec![(1, vec![1])],
        "tier 1 first even if tier 2 idled longer"
    );
    h.ok(Input::Answer {
        agent: AgentId(1),
        contact: ContactId(1),
    });
    h.take();
    h.enter(req(2, 1));
    assert!(h.offers().is_empty());
    h.advance(60_000);
    assert_eq!(h.offers(), vec![(2, vec![2])]);
}

#[test]
fn membership_delay_and_routing_delay() {
    let mut q = queue(1);
    q.routing_delay_ms = 2_000;
    let mut late = agent(1, &[1], &[]);
    late.memberships[0].delay_ms = 10_000;
    let mut h = H::new(vec![q], vec![late]);
    h.login(1);
    h.enter(req(1, 1));
    h.advance(11_999);
    assert!(h.offers().is_empty());
    h.advance(1);
    assert_eq!(h.offers(), vec![(1, vec![1])]);
}
