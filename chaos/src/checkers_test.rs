use super::*;
use crate::history::{Down, Failover, Op, Sample};

fn op(kind: OpKind, node: u64, id: &str, at: u64, outcome: Outcome) -> Op {
    Op {
        kind,
        node,
        id: id.into(),
        start_ms: at,
        end_ms: at + 5,
        outcome,
    }
}

fn node(id: u64, routes: &[&str], keys: &[&str]) -> NodeFinal {
    NodeFinal {
        node: id,
        revision: 7,
        config_hash: "h".into(),
        routes: routes.iter().map(|s| s.to_string()).collect(),
        keys: keys.iter().map(|s| s.to_string()).collect(),
    }
}

fn unknown() -> Outcome {
    Outcome::Unknown {
        reason: "timeout".into(),
    }
}

#[test]
fn a_lost_acknowledged_write_is_caught_and_unknown_ones_are_not_required() {
    let mut h = History::default();
    h.ops.push(op(OpKind::RouteWrite, 1, "w1", 0, Outcome::Ok));
    h.ops.push(op(OpKind::RouteWrite, 2, "w2", 0, unknown()));
    h.ops.push(op(OpKind::KeyCreate, 1, "k1", 0, Outcome::Ok));
    let fin = FinalState {
        nodes: vec![node(1, &["w1"], &["k1"]), node(2, &["w1"], &["k1"])],
        ..FinalState::default()
    };
    assert!(acked_writes_present(&h, &fin).ok);

    let lost = FinalState {
        nodes: vec![node(1, &["w1"], &["k1"]), node(2, &[], &["k1"])],
        ..FinalState::default()
    };
    let c = acked_writes_present(&h, &lost);
    assert!(!c.ok);
    assert!(
        c.detail.contains("node 2: 1 routes missing"),
        "{}",
        c.detail
    );
}

#[test]
fn a_revoked_key_need_not_be_present() {
    let mut h = History::default();
    h.ops.push(op(OpKind::KeyCreate, 1, "k1", 0, Outcome::Ok));
    h.ops.push(op(OpKind::KeyRevoke, 1, "k1", 10, unknown()));
    let fin = FinalState {
        nodes: vec![node(1, &[], &[])],
        ..FinalState::default()
    };
    assert!(acked_writes_present(&h, &fin).ok);
}

#[test]
fn no_answering_node_is_a_violation() {
    assert!(!acked_writes_present(&History::default(), &FinalState::default()).ok);
}

#[test]
fn convergence_needs_one_revision_one_hash_and_the_budget() {
    let mut fin = FinalState {
        nodes: vec![node(1, &[], &[]), node(2, &[], &[])],
        converged_ms: Some(300),
        ..FinalState::default()
    };
    assert!(converged(&fin, 10_000).ok);
    assert!(!converged(&fin, 100).ok);
    fin.nodes[1].config_hash = "other".into();
    assert!(!converged(&fin, 10_000).ok);
    fin.converged_ms = None;
    assert!(!converged(&fin, 10_000).ok);
}

#[test]
fn two_leaders_in_one_term_are_caught() {
    let mut h = History::default();
    let s = |node, term, leader| Sample {
        at_ms: 0,
        node,
        term,
        leader,
    };
    h.samples
        .extend([s(1, 3, Some(1)), s(2, 3, Some(1)), s(3, 4, None)]);
    assert!(one_leader_per_term(&h).ok);
    h.samples.push(s(3, 3, Some(2)));
    let c = one_leader_per_term(&h);
    assert!(!c.ok);
    assert!(c.detail.contains("term 3"), "{}", c.detail);
}

#[test]
fn quota_admissions_over_the_limit_are_caught() {
    let mut h = History::default();
    for i in 0..5 {
        h.ops
            .push(op(OpKind::Quota, 1, &format!("q{i}"), i, Outcome::Ok));
    }
    h.ops
        .push(op(OpKind::Quota, 1, "q5", 9, Outcome::Fail { status: 429 }));
    assert!(quota_within_limit(&h, 5).ok);
    assert!(!quota_within_limit(&h, 4).ok);
}

#[test]
fn proxy_failures_count_only_on_nodes_that_were_up() {
    let mut h = History::default();
    h.down.push(Down {
        node: 2,
        from_ms: 100,
        to_ms: 200,
    });
    h.ops.push(op(OpKind::Proxy, 1, "p", 150, Outcome::Ok));
    h.ops.push(op(OpKind::Proxy, 2, "p", 150, unknown()));
    h.ops.push(op(OpKind::Proxy, 2, "p", 97, unknown())); // in flight when it went down
    assert!(no_failed_proxy(&h).ok);
    h.ops.push(op(
        OpKind::Proxy,
        2,
        "p",
        300,
        Outcome::Fail { status: 502 },
    ));
    assert!(!no_failed_proxy(&h).ok);
}

#[test]
fn failover_uses_the_p99_and_a_missing_leader_fails() {
    let f = |took: Option<u64>| Failover {
        at_ms: 0,
        old_leader: 1,
        new_leader: took.map(|_| 2),
        took_ms: took,
    };
    let mut h = History::default();
    assert!(
        failover_within(&h, 2000).ok,
        "no leader loss: nothing to hold"
    );
    h.failovers.extend([f(Some(900)), f(Some(1200))]);
    assert!(failover_within(&h, 2000).ok);
    h.failovers.push(f(Some(2500)));
    assert!(!failover_within(&h, 2000).ok);
    h.failovers.pop();
    h.failovers.push(f(None));
    assert!(!failover_within(&h, 2000).ok);
}

#[test]
fn percentile_is_nearest_rank() {
    let v: Vec<u64> = (1..=100).collect();
    assert_eq!(percentile(&v, 0.99), Some(99));
    assert_eq!(percentile(&v, 0.5), Some(50));
    assert_eq!(percentile(&[7], 0.99), Some(7));
    assert_eq!(percentile(&[], 0.99), None);
}

#[test]
fn a_revoked_key_accepted_anywhere_is_caught() {
    let mut fin = FinalState::default();
    fin.revoked_probes.push(Probe {
        node: 1,
        key_id: "k".into(),
        status: 401,
    });
    assert!(revoked_refused(&fin).ok);
    fin.revoked_probes.push(Probe {
        node: 2,
        key_id: "k".into(),
        status: 200,
    });
    assert!(!revoked_refused(&fin).ok);
}
