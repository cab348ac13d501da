use super::*;
use crate::history::Sample;

fn op(node: u64, start_ms: u64, end_ms: u64, outcome: Outcome) -> Op {
    Op {
        kind: OpKind::Proxy,
        node,
        id: "/p".into(),
        start_ms,
        end_ms,
        outcome,
    }
}

fn unknown(reason: &str) -> Outcome {
    Outcome::Unknown {
        reason: reason.into(),
    }
}

fn catch_up(took_ms: Option<u64>, snapshots_installed: u64) -> CatchUp {
    CatchUp {
        at_ms: 1000,
        node: 2,
        behind: 450,
        took_ms,
        snapshots_installed,
    }
}

#[test]
fn a_follower_that_replayed_the_log_or_never_caught_up_fails() {
    let mut h = History::default();
    assert!(!caught_up_by_snapshot(&h).ok, "no restart: nothing shown");
    h.catch_ups.push(catch_up(Some(300), 1));
    let c = caught_up_by_snapshot(&h);
    assert!(c.ok, "{}", c.detail);
    h.catch_ups.push(catch_up(Some(200), 0));
    let c = caught_up_by_snapshot(&h);
    assert!(!c.ok);
    assert!(c.detail.contains("installed no snapshot"), "{}", c.detail);
    h.catch_ups[1] = catch_up(None, 1);
    let c = caught_up_by_snapshot(&h);
    assert!(!c.ok);
    assert!(c.detail.contains("not caught up"), "{}", c.detail);
}

#[test]
fn a_draining_node_is_not_excused_but_a_refused_connect_is() {
    let mut h = History::default();
    h.ops.push(op(1, 0, 5, Outcome::Ok));
    h.ops.push(op(
        2,
        10,
        11,
        unknown("Failed to connect to host: Connection refused (os error 111)"),
    ));
    // A down interval excuses nothing here.
    h.down.push(crate::history::Down {
        node: 2,
        from_ms: 0,
        to_ms: 100,
    });
    h.ops.push(op(
        3,
        12,
        13,
        unknown("Failed to connect to host: Internal error: connector has been disconnected"),
    ));
    let c = no_request_lost_in_drain(&h);
    assert!(c.ok, "{}", c.detail);
    assert!(c.detail.contains("2 connects failed"), "{}", c.detail);
    h.ops
        .push(op(2, 20, 30, unknown("Connection reset by peer")));
    let c = no_request_lost_in_drain(&h);
    assert!(!c.ok);
    assert!(c.detail.contains("first: node 2 at 20 ms"), "{}", c.detail);
    h.ops.pop();
    h.ops.push(op(2, 20, 30, Outcome::Fail { status: 503 }));
    assert!(!no_request_lost_in_drain(&h).ok);
}

fn slow_history() -> History {
    let mut h = History::default();
    h.windows.push(Window {
        what: "slow upstream".into(),
        from_ms: 1000,
        to_ms: 4000,
        caught_up_ms: None,
    });
    let timeout = Outcome::Fail { status: 504 };
    let mut ops = vec![
        op(1, 1100, 1420, timeout.clone()),
        op(2, 3500, 3820, timeout),
        // Across the window's end: not judged.
        op(3, 3900, 4700, Outcome::Ok),
        // Inside the grace: not judged.
        op(1, 4300, 4310, Outcome::Fail { status: 504 }),
        op(2, 5100, 5110, Outcome::Ok),
    ];
    h.scenario_ops.append(&mut ops);
    h
}

#[test]
fn the_slow_route_must_time_out_in_budget_and_recover() {
    let mut h = slow_history();
    let c = slow_route_times_out(&h, 300, 250, 1000);
    assert!(c.ok, "{}", c.detail);
    assert!(c.detail.contains("2 requests while slow"), "{}", c.detail);

    // A 504 later than 300 + 30 + 250 ms.
    h.scenario_ops[0].end_ms = 1100 + 600;
    let c = slow_route_times_out(&h, 300, 250, 1000);
    assert!(!c.ok);
    assert!(c.detail.contains("first miss: node 1"), "{}", c.detail);

    // A 200 inside the window means the timeout did not apply.
    let mut h = slow_history();
    h.scenario_ops[1].outcome = Outcome::Ok;
    assert!(!slow_route_times_out(&h, 300, 250, 1000).ok);

    // Still failing after the grace.
    let mut h = slow_history();
    h.scenario_ops[4].outcome = Outcome::Fail { status: 504 };
    let c = slow_route_times_out(&h, 300, 250, 1000);
    assert!(!c.ok);
    assert!(c.detail.contains("first failure after"), "{}", c.detail);

    // No window: nothing shown.
    h.windows.clear();
    assert!(!slow_route_times_out(&h, 300, 250, 1000).ok);
}

#[test]
fn a_node_whose_admin_went_silent_while_slow_is_caught() {
    let mut h = History::default();
    h.windows.push(Window {
        what: "slow upstream".into(),
        from_ms: 1000,
        to_ms: 2000,
        caught_up_ms: None,
    });
    let s = |node, at_ms| Sample {
        at_ms,
        node,
        term: 1,
        leader: Some(1),
    };
    for t in (900..=2100).step_by(200) {
        h.samples.push(s(1, t));
        h.samples.push(s(2, t + 50));
    }
    let c = admin_kept_answering(&h, 500);
    assert!(c.ok, "{}", c.detail);
    // Node 2 silent from 1250 to the window's end.
    h.samples
        .retain(|x| !(x.node == 2 && x.at_ms > 1250 && x.at_ms < 2100));
    let c = admin_kept_answering(&h, 500);
    assert!(!c.ok);
    assert!(
        c.detail.contains("850 ms (node 2 from 1150"),
        "{}",
        c.detail
    );
}
