use super::*;

fn write(at: u64, outcome: Outcome) -> Op {
    Op {
        kind: OpKind::RouteWrite,
        node: 1,
        id: format!("w-{at}"),
        start_ms: at,
        end_ms: at + 5,
        outcome,
    }
}

fn window(what: &str, from_ms: u64, to_ms: u64, caught_up_ms: Option<u64>) -> Window {
    Window {
        what: what.into(),
        from_ms,
        to_ms,
        caught_up_ms,
    }
}

fn unknown() -> Outcome {
    Outcome::Unknown {
        reason: "timeout".into(),
    }
}

#[test]
fn ring_and_bridge_cuts_leave_each_node_a_majority() {
    let cuts = ring_cuts(&[3, 1, 4, 5, 2]);
    // 5 nodes have 10 pairs; a ring keeps 5 of them.
    assert_eq!(cuts.len(), 5, "{cuts:?}");
    for (a, b) in [(3, 1), (1, 4), (4, 5), (5, 2), (2, 3)] {
        assert!(
            !cuts.contains(&(a, b)) && !cuts.contains(&(b, a)),
            "{a}-{b} cut"
        );
    }
    assert!(cuts.contains(&(3, 4)) && cuts.contains(&(1, 2)));
    let cuts = bridge_cuts(&[1, 2, 3, 4, 5]);
    assert_eq!(cuts, vec![(1, 4), (1, 5), (2, 4), (2, 5)]);
}

#[test]
fn a_fault_window_without_an_acked_write_is_caught() {
    let mut h = History::default();
    h.windows.push(window("ring", 100, 200, Some(10)));
    h.windows.push(window("bridge", 300, 400, Some(10)));
    h.ops.push(write(110, Outcome::Ok));
    h.ops.push(write(120, unknown()));
    h.ops.push(write(310, Outcome::Fail { status: 503 }));
    // Acked, but it ended after the heal: it does not count for the window.
    h.ops.push(write(398, Outcome::Ok));
    let c = writes_acked_during_faults(&h);
    assert!(!c.ok);
    assert!(
        c.detail
            .contains("1 windows without an acked write (first: bridge"),
        "{}",
        c.detail
    );
    assert!(
        c.detail.contains("ring (1x): 1 of the 2 writes sent"),
        "{}",
        c.detail
    );

    h.ops.push(write(330, Outcome::Ok));
    let c = writes_acked_during_faults(&h);
    assert!(c.ok, "{}", c.detail);
    assert!(
        c.detail.contains("bridge (1x): 1 of the 3 writes sent"),
        "{}",
        c.detail
    );
    assert!(!writes_acked_during_faults(&History::default()).ok);
}

#[test]
fn a_late_or_missing_catch_up_fails() {
    let mut h = History::default();
    h.windows.push(window("ring", 0, 10, Some(300)));
    assert!(caught_up_after_heal(&h, 1000).ok);
    h.windows.push(window("ring", 20, 30, Some(1001)));
    assert!(!caught_up_after_heal(&h, 1000).ok);
    h.windows[1].caught_up_ms = None;
    let c = caught_up_after_heal(&h, 1000);
    assert!(
        !c.ok && c.detail.contains("1 late or never"),
        "{}",
        c.detail
    );
}

fn change(add: bool, id: u64, result: ChangeResult) -> MemberChange {
    MemberChange {
        at_ms: 0,
        add,
        id,
        attempts: 1,
        settled_ms: 10,
        result,
    }
}

fn view(node: u64, voters: &[u64], learners: &[u64]) -> MemberView {
    MemberView {
        at_ms: 20,
        node,
        voters: voters.iter().copied().collect(),
        learners: learners.iter().copied().collect(),
    }
}

#[test]
fn the_membership_must_match_the_settled_changes_on_every_node() {
    let initial: BTreeSet<u64> = [1, 2, 3].into();
    let mut h = History::default();
    // Node 1's view from before the last change settled: it was removed since.
    h.member_views.push(MemberView {
        at_ms: 5,
        ..view(1, &[1, 2, 3, 4], &[])
    });
    h.member_changes
        .push(change(true, 4, ChangeResult::Applied));
    h.member_changes
        .push(change(false, 2, ChangeResult::Refused { status: 409 }));
    h.member_changes
        .push(change(false, 1, ChangeResult::Applied));
    for n in [2, 3, 4] {
        h.member_views.push(view(n, &[2, 3, 4], &[]));
    }
    assert!(membership_consistent(&h, &initial).ok);

    // One node still counts the removed node.
    let mut split = h.clone();
    split.member_views.push(view(3, &[1, 2, 3, 4], &[]));
    assert!(!membership_consistent(&split, &initial).ok);

    // A half-done add: the node stayed a learner.
    let mut half = h.clone();
    half.member_views.push(view(4, &[2, 3], &[4]));
    let c = membership_consistent(&half, &initial);
    assert!(
        !c.ok && c.detail.contains("learners left [4]"),
        "{}",
        c.detail
    );

    // Every node agrees, but not with what was acknowledged.
    let mut wrong = History {
        member_changes: h.member_changes.clone(),
        ..History::default()
    };
    for n in [2, 3, 4] {
        wrong.member_views.push(view(n, &[1, 2, 3, 4], &[]));
    }
    assert!(!membership_consistent(&wrong, &initial).ok);

    // An unknown outcome allows either, as long as every node agrees.
    wrong.member_changes[2].result = ChangeResult::Unknown;
    assert!(membership_consistent(&wrong, &initial).ok);
    assert!(!membership_consistent(&History::default(), &initial).ok);
}

#[test]
fn retries_that_find_the_change_done_count_as_applied() {
    let exists = serde_json::json!({"error": {"code": "member_exists", "message": "node 4 is already a member (at a:1, voter)"}});
    let learner = serde_json::json!({"error": {"code": "member_exists", "message": "node 4 is already a member (at a:1, learner)"}});
    let conflict = Outcome::Fail { status: 409 };
    assert_eq!(
        judge(true, 2, &conflict, Some(&exists)),
        Some(ChangeResult::Applied)
    );
    assert_eq!(judge(true, 2, &conflict, Some(&learner)), None);
    assert_eq!(
        judge(true, 1, &conflict, Some(&exists)),
        Some(ChangeResult::Refused { status: 409 })
    );
    let pending = serde_json::json!({"voter": false, "promotion_pending": true});
    assert_eq!(judge(true, 1, &Outcome::Ok, Some(&pending)), None);
    let gone = Outcome::Fail { status: 404 };
    assert_eq!(judge(false, 2, &gone, None), Some(ChangeResult::Applied));
    assert_eq!(
        judge(false, 1, &gone, None),
        Some(ChangeResult::Refused { status: 404 })
    );
    assert_eq!(judge(false, 1, &unknown(), None), None);
}

fn probe(outcome: Outcome, body: &str) -> Probe {
    Probe {
        at_ms: 5,
        node: 2,
        outcome,
        body: body.into(),
    }
}

#[test]
fn a_full_node_must_answer_with_an_error_message() {
    let mut h = History::default();
    h.probes.push(probe(Outcome::Ok, r#"{"name":"full-1"}"#));
    h.probes.push(probe(
        Outcome::Unknown {
            reason: "status 503".into(),
        },
        r#"{"error":{"code":"unavailable","message":"storage: no space left on device"}}"#,
    ));
    assert!(full_node_errors_clear(&h).ok);
    // Refused with a message, but none says the storage failed.
    let mut vague = h.clone();
    vague.probes.remove(1);
    vague.probes.push(probe(
        Outcome::Fail { status: 503 },
        r#"{"error":{"code":"unavailable","message":"this node is shutting down"}}"#,
    ));
    assert!(!full_node_errors_clear(&vague).ok);
    h.probes.push(probe(unknown(), ""));
    let c = full_node_errors_clear(&h);
    assert!(!c.ok && c.detail.contains("1 of 3 writes"), "{}", c.detail);
    assert!(!full_node_errors_clear(&History::default()).ok);
}
