//! Scenarios that reshape the cluster: partial partitions on 5 nodes (#4 `ring-bridge`),
//! membership changes under load with the leader killed mid-change (#8 `membership-change`),
//! a node whose disk fills up (#13 `full-disk`), and the checks only they have.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::Value;

use super::{leader, others, sleep_ms};
use crate::api;
use crate::checkers::Check;
use crate::history::{
    ChangeResult, History, MemberChange, MemberView, Op, OpKind, Outcome, Probe, Window,
};
use crate::scenario::Ctx;
use crate::workload::Endpoint;

/// How long every node may take, after a heal, to apply what the most advanced node had.
pub const CATCH_UP_BUDGET_MS: u64 = 10_000;

// ---------------------------------------------------------------------------------------------
// #4 ring-bridge

/// Every pair of `ring` that are not neighbours on it (the ring closes: last and first are).
fn ring_cuts(ring: &[u64]) -> Vec<(u64, u64)> {
    let n = ring.len();
    let mut cuts = Vec::new();
    for i in 0..n {
        for j in i + 1..n {
            let neighbours = j == i + 1 || (i == 0 && j == n - 1);
            if !neighbours {
                cuts.push((ring[i], ring[j]));
            }
        }
    }
    cuts
}

/// `order[0..2]` and `order[3..]` cannot reach each other; `order[2]` reaches everyone.
fn bridge_cuts(order: &[u64]) -> Vec<(u64, u64)> {
    let mut cuts = Vec::new();
    for a in &order[..2] {
        for b in &order[3..] {
            cuts.push((*a, *b));
        }
    }
    cuts
}

/// A majorities ring (each node reaches its two neighbours only), heal, then a bridge (two
/// pairs that reach one node in the middle, not each other), heal; the node order is random.
pub(super) async fn ring_bridge(ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut order = ctx.cluster.ids();
    anyhow::ensure!(order.len() == 5, "ring-bridge needs 5 nodes");
    order.shuffle(&mut ctx.rng);
    let ring = format!("ring {order:?} (each node reaches its two neighbours)");
    hold_cuts(ctx, "ring", ring, &ring_cuts(&order)).await;
    order.shuffle(&mut ctx.rng);
    let bridge = format!(
        "bridge {:?} | [{}] | {:?}",
        &order[..2],
        order[2],
        &order[3..]
    );
    hold_cuts(ctx, "bridge", bridge, &bridge_cuts(&order)).await;
    Ok(())
}

/// Cuts `cuts` (both directions) for 3-5 s, heals, records the window and how long the nodes
/// took to catch up, lets the cluster settle.
async fn hold_cuts(ctx: &mut Ctx, kind: &str, what: String, cuts: &[(u64, u64)]) {
    ctx.shared.fault(what);
    let from_ms = ctx.shared.now_ms();
    for (a, b) in cuts {
        ctx.cluster.faults.cut(*a, *b);
    }
    // Besides the workload (whose writers can sit out a whole window on a node that cannot
    // reach the leader), writes go to every node in turn.
    let ids = ctx.cluster.ids();
    let hold = Instant::now() + Duration::from_millis(ctx.rng.gen_range(3000..=5000));
    let mut n = 0;
    while Instant::now() < hold {
        n += 1;
        probe(ctx, ids[n as usize % ids.len()], n, kind).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ctx.shared.fault(format!("heal the {kind}"));
    ctx.cluster.faults.heal();
    close_window(ctx, kind, from_ms).await;
    sleep_ms(ctx, 1500, 2500).await;
}

/// Ends a fault window at its heal (now): records it with the time every node took to reach
/// the revision the most advanced one had at the heal.
async fn close_window(ctx: &Ctx, kind: &str, from_ms: u64) {
    let to_ms = ctx.shared.now_ms();
    let caught_up_ms = catch_up(ctx, Duration::from_millis(2 * CATCH_UP_BUDGET_MS)).await;
    ctx.shared
        .fault(format!("  every node caught up after {caught_up_ms:?} ms"));
    ctx.shared.history.borrow_mut().windows.push(Window {
        what: kind.to_string(),
        from_ms,
        to_ms,
        caught_up_ms,
    });
}

/// Polls until every node of the cluster has reached the highest revision any of them had at
/// the start; the time that took, `None` past `wait`.
async fn catch_up(ctx: &Ctx, wait: Duration) -> Option<u64> {
    let start = Instant::now();
    let mut target = None;
    while start.elapsed() < wait {
        let mut revisions = Vec::new();
        for id in ctx.cluster.ids() {
            let st = api::status(&ctx.client, &ctx.endpoint(id).admin).await;
            revisions.push(st.map(|s| s.revision));
        }
        let highest = revisions.iter().flatten().max().copied();
        let goal = *target.get_or_insert(highest.unwrap_or(0));
        if revisions.iter().all(|r| matches!(r, Some(r) if *r >= goal)) {
            return Some(start.elapsed().as_millis() as u64);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

// ---------------------------------------------------------------------------------------------
// #8 membership-change

/// How long a membership change is retried before its outcome is left unknown.
const CHANGE_PATIENCE: Duration = Duration::from_secs(60);

/// Adds a new node as a voter, then removes another voter; during each change the leader is
/// SIGKILLed right after the call was sent, then restarted. Unknown outcomes are retried until
/// definite, as an operator would. Ends once every node reports the same membership.
pub(super) async fn membership_change(ctx: &mut Ctx) -> anyhow::Result<()> {
    let new = ctx.cluster.add_node(&ctx.opts)?;
    let n = ctx.cluster.node(new)?;
    let relay = n.relay.clone();
    ctx.shared.add_node(Endpoint {
        id: new,
        admin: n.admin.clone(),
        proxy: n.proxy.clone(),
    });
    ctx.shared.fault(format!(
        "start node {new} (join = true) and add it as a voter"
    ));
    let body = format!(r#"{{"id":{new},"addr":"{relay}","voter":true}}"#);
    let added = change(
        ctx,
        true,
        new,
        "POST",
        "/cluster/members".into(),
        Some(body),
    )
    .await?;
    if added == ChangeResult::Applied {
        if !ctx.await_ready(new, Duration::from_secs(20)).await {
            ctx.shared
                .fault(format!("node {new} not ready 20 s after it joined"));
        }
        ctx.shared.mark_up(new);
    } else {
        ctx.shared.fault(format!("node {new} not added: stopped"));
        ctx.shared.retire(new);
        ctx.cluster.retire(new);
    }
    settle_membership(ctx).await;

    let victim = *ctx.cluster.ids().choose(&mut ctx.rng).expect("nodes");
    ctx.shared.fault(format!("remove node {victim}"));
    let path = format!("/cluster/members/{victim}");
    let removed = change(ctx, false, victim, "DELETE", path, None).await?;
    if removed == ChangeResult::Applied {
        ctx.shared
            .fault(format!("node {victim} removed: stopped for good"));
        ctx.shared.retire(victim);
        ctx.cluster.retire(victim);
    }
    settle_membership(ctx).await;
    Ok(())
}

/// Sends one membership call to a random node, SIGKILLs the leader 0-150 ms later (mid-change),
/// restarts it, then retries until a definite answer; records the change.
async fn change(
    ctx: &mut Ctx,
    add: bool,
    id: u64,
    method: &'static str,
    path: String,
    body: Option<String>,
) -> anyhow::Result<ChangeResult> {
    let at_ms = ctx.shared.now_ms();
    let deadline = Instant::now() + CHANGE_PATIENCE;
    let client = api::client(Duration::from_secs(30));
    let (l, term) = leader(ctx).await?;
    // Through a member that clients use (not the joining node, which knows no leader yet).
    let members: Vec<u64> = others(ctx, l)
        .into_iter()
        .filter(|i| ctx.shared.is_up(*i))
        .collect();
    let via = *members.choose(&mut ctx.rng).unwrap_or(&l);
    let url = format!("{}{path}", ctx.endpoint(via).admin);
    let call = actix_rt::spawn({
        let (client, body) = (client.clone(), body.clone());
        async move { api::admin_write(&client, method, url, body).await }
    });
    sleep_ms(ctx, 0, 150).await;
    ctx.shared.fault(format!(
        "  SIGKILL leader {l} (term {term}) mid-change, call sent to {via}"
    ));
    ctx.shared.mark_down(l);
    ctx.cluster.kill(l);
    sleep_ms(ctx, 500, 1000).await;
    ctx.bring_back(l).await?;
    let (mut outcome, mut json) = call.await?;
    let mut attempts = 1;
    let result = loop {
        match judge(add, attempts, &outcome, json.as_ref()) {
            Some(r) => break r,
            None if Instant::now() >= deadline => break ChangeResult::Unknown,
            None => {}
        }
        ctx.shared
            .fault(format!("  answer {outcome:?} {json:?}: retry"));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let target = ctx.leader().await.map(|(l, _)| l).unwrap_or(via);
        let url = format!("{}{path}", ctx.endpoint(target).admin);
        (outcome, json) = api::admin_write(&client, method, url, body.clone()).await;
        attempts += 1;
    };
    ctx.shared.fault(format!(
        "  change settled after {attempts} attempt(s): {result:?}"
    ));
    ctx.shared
        .history
        .borrow_mut()
        .member_changes
        .push(MemberChange {
            at_ms,
            add,
            id,
            attempts,
            settled_ms: ctx.shared.now_ms(),
            result: result.clone(),
        });
    Ok(result)
}

/// What a membership call's answer says about the change; `None`: not definite, retry. A
/// retry that finds the change already done (the add: the node is a voter; the removal: not a
/// member) means an earlier attempt took effect.
fn judge(add: bool, attempt: u32, outcome: &Outcome, json: Option<&Value>) -> Option<ChangeResult> {
    let code = json.and_then(|j| j["error"]["code"].as_str()).unwrap_or("");
    let message = json
        .and_then(|j| j["error"]["message"].as_str())
        .unwrap_or("");
    match outcome {
        Outcome::Ok if add => json
            .is_some_and(|j| j["voter"] == true)
            .then_some(ChangeResult::Applied),
        Outcome::Ok => Some(ChangeResult::Applied),
        Outcome::Fail { status: 409 } if add && code == "member_exists" && attempt > 1 => {
            message.contains("voter").then_some(ChangeResult::Applied)
        }
        Outcome::Fail { status: 404 } if !add && attempt > 1 => Some(ChangeResult::Applied),
        // Another change still in flight, or the node was down: try again.
        Outcome::Fail { status: 409 } if code == "membership_change_in_progress" => None,
        Outcome::Fail { status: 0 } => None,
        Outcome::Fail { status } => Some(ChangeResult::Refused { status: *status }),
        Outcome::Unknown { .. } => None,
    }
}

/// Waits (up to 20 s) until every node reports the same voters and no learner, then records
/// what each node reported.
async fn settle_membership(ctx: &Ctx) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut views = Vec::new();
        for id in ctx.cluster.ids() {
            if let Some((voters, learners)) =
                api::members(&ctx.client, &ctx.endpoint(id).admin).await
            {
                views.push(MemberView {
                    at_ms: ctx.shared.now_ms(),
                    node: id,
                    voters,
                    learners,
                });
            }
        }
        let agreed = views.len() == ctx.cluster.ids().len()
            && views
                .iter()
                .all(|v| v.voters == views[0].voters && v.learners.is_empty());
        if agreed || Instant::now() >= deadline {
            ctx.shared.fault(format!(
                "  membership: {:?}",
                views
                    .iter()
                    .map(|v| (v.node, &v.voters))
                    .collect::<Vec<_>>()
            ));
            ctx.shared.history.borrow_mut().member_views.extend(views);
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// #13 full-disk

/// The tmpfs under the full node's data dir: room for its state and some growth.
const DISK_MB: u64 = 32;
const FILLER: &str = "chaos-filler";

/// Puts one node's data dir on a small tmpfs (once), fills it to the last byte while the
/// workload writes through every node and the nemesis probes the full node's admin API; then
/// frees the space, restarts the node and times its catch-up.
pub(super) async fn full_disk(ctx: &mut Ctx) -> anyhow::Result<()> {
    let id = match ctx.cluster.limited() {
        Some(id) => id,
        None => {
            let id = *ctx.cluster.ids().choose(&mut ctx.rng).expect("nodes");
            ctx.shared.fault(format!(
                "node {id}: data dir onto a {DISK_MB} MiB tmpfs (restart)"
            ));
            ctx.shared.mark_down(id);
            ctx.cluster.kill(id);
            ctx.cluster.limit_disk(id, DISK_MB)?;
            ctx.bring_back(id).await?;
            sleep_ms(ctx, 500, 1000).await;
            id
        }
    };
    let filler = ctx.cluster.node(id)?.data.join(FILLER);
    let bytes = fill(&filler)?;
    ctx.shared.fault(format!(
        "node {id}: disk full ({} KiB of filler)",
        bytes >> 10
    ));
    let from_ms = ctx.shared.now_ms();
    let hold = Instant::now() + Duration::from_millis(4000);
    let mut n = 0;
    let mut exited = None;
    let mut unready_seen = false;
    while Instant::now() < hold {
        n += 1;
        probe(ctx, id, n, "full").await;
        if !unready_seen {
            unready_seen = report_unready(ctx, id).await;
        }
        if exited.is_none() {
            exited = ctx.cluster.exited(id);
            if let Some(status) = &exited {
                ctx.shared
                    .fault(format!("node {id} exited on the full disk: {status}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ctx.shared.fault(format!(
        "node {id}: free the space and restart it (it {})",
        if exited.is_some() {
            "had exited"
        } else {
            "was still running"
        }
    ));
    std::fs::remove_file(&filler)?;
    ctx.shared.mark_down(id);
    ctx.cluster.kill(id);
    ctx.bring_back(id).await?;
    close_window(ctx, "disk full", from_ms).await;
    sleep_ms(ctx, 1000, 2000).await;
    Ok(())
}

/// Records the full node's `/readyz` answer the first time it is not 200; whether it was not.
async fn report_unready(ctx: &Ctx, id: u64) -> bool {
    let url = format!("{}/readyz", ctx.endpoint(id).admin);
    let Ok(mut r) = ctx.client.get(&url).send().await else {
        return false;
    };
    if r.status().is_success() {
        return false;
    }
    let body = r.body().await.unwrap_or_default();
    ctx.shared.fault(format!(
        "  node {id} /readyz: {} {}",
        r.status().as_u16(),
        String::from_utf8_lossy(&body)
    ));
    true
}

/// Writes `path` until the file system refuses (ENOSPC); the bytes written.
fn fill(path: &std::path::Path) -> anyhow::Result<u64> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    let chunk = vec![0xa5u8; 64 << 10];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(k) => written += k as u64,
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => return Err(e.into()),
        }
    }
    let _ = f.sync_all();
    Ok(written)
}

/// A route write (`{prefix}-N`) sent straight to node `id`: recorded as a workload write (so an
/// ack must survive) and as a probe, with the answer's body.
async fn probe(ctx: &Ctx, id: u64, n: u32, prefix: &str) {
    let name = format!("{prefix}-{n}-{}", ctx.shared.now_ms());
    let url = format!("{}/routes/{name}", ctx.endpoint(id).admin);
    let body = format!(r#"{{"service":"up","paths":["/{name}"]}}"#);
    let start_ms = ctx.shared.now_ms();
    let (outcome, json) = api::admin_write(&ctx.client, "PUT", url, Some(body)).await;
    let end_ms = ctx.shared.now_ms();
    let mut h = ctx.shared.history.borrow_mut();
    h.ops.push(Op {
        kind: OpKind::RouteWrite,
        node: id,
        id: name,
        start_ms,
        end_ms,
        outcome: outcome.clone(),
    });
    h.probes.push(Probe {
        at_ms: start_ms,
        node: id,
        outcome,
        body: json.map(|j| j.to_string()).unwrap_or_default(),
    });
}

// ---------------------------------------------------------------------------------------------
// Checks

/// Every fault window saw acknowledged writes (a majority stayed reachable), per kind.
pub fn writes_acked_during_faults(h: &History) -> Check {
    let mut kinds: Vec<(String, usize, usize, usize)> = Vec::new();
    for w in &h.windows {
        let sent = h
            .ops
            .iter()
            .filter(|o| o.kind == OpKind::RouteWrite && (w.from_ms..w.to_ms).contains(&o.start_ms))
            .count();
        let acked = h.ops.iter().filter(|o| acked_within(o, w)).count();
        match kinds.iter_mut().find(|k| k.0 == w.what) {
            Some(k) => {
                k.1 += 1;
                k.2 += sent;
                k.3 += acked;
            }
            None => kinds.push((w.what.clone(), 1, sent, acked)),
        }
    }
    let starved: Vec<&Window> = h
        .windows
        .iter()
        .filter(|w| !h.ops.iter().any(|o| acked_within(o, w)))
        .collect();
    let summary: Vec<String> = kinds
        .iter()
        .map(|(what, n, sent, acked)| {
            format!("{what} ({n}x): {acked} of the {sent} writes sent acked within it")
        })
        .collect();
    let mut detail = summary.join("; ");
    if let Some(w) = starved.first() {
        detail = format!(
            "{} windows without an acked write (first: {} at {}-{} ms); {detail}",
            starved.len(),
            w.what,
            w.from_ms,
            w.to_ms
        );
    }
    Check {
        name: "writes_acked_during_fault",
        ok: starved.is_empty() && !h.windows.is_empty(),
        detail: if h.windows.is_empty() {
            "no fault window recorded".into()
        } else {
            detail
        },
    }
}

/// A route write sent and acknowledged while the fault of `w` was in force.
fn acked_within(o: &Op, w: &Window) -> bool {
    o.kind == OpKind::RouteWrite
        && o.outcome == Outcome::Ok
        && o.start_ms >= w.from_ms
        && o.end_ms <= w.to_ms
}

/// After every heal, every node reached the most advanced node's revision within `budget_ms`.
pub fn caught_up_after_heal(h: &History, budget_ms: u64) -> Check {
    let times: Vec<Option<u64>> = h.windows.iter().map(|w| w.caught_up_ms).collect();
    let late = times
        .iter()
        .filter(|t| !matches!(t, Some(t) if *t <= budget_ms))
        .count();
    let max = times.iter().flatten().max();
    Check {
        name: "caught_up_after_heal",
        ok: late == 0 && !times.is_empty(),
        detail: format!(
            "{} heals: every node caught up within {max:?} ms at worst (budget {budget_ms} ms); {late} late or never",
            times.len()
        ),
    }
}

/// The voters every node should end with: the initial ones, plus applied adds, minus applied
/// removals; `None` once a change's outcome stayed unknown (then either is allowed).
fn expected_voters(initial: &BTreeSet<u64>, changes: &[MemberChange]) -> Option<BTreeSet<u64>> {
    let mut voters = initial.clone();
    for c in changes {
        match c.result {
            ChangeResult::Applied if c.add => {
                voters.insert(c.id);
            }
            ChangeResult::Applied => {
                voters.remove(&c.id);
            }
            ChangeResult::Refused { .. } => {}
            ChangeResult::Unknown => return None,
        }
    }
    Some(voters)
}

/// Every node's view of the membership after the last change settled is the same voter set,
/// with no learner left behind (a half-done add), and it is what the settled changes imply.
pub fn membership_consistent(h: &History, initial: &BTreeSet<u64>) -> Check {
    let since = h
        .member_changes
        .iter()
        .map(|c| c.settled_ms)
        .max()
        .unwrap_or(0);
    let mut last: std::collections::BTreeMap<u64, &MemberView> = Default::default();
    for v in h.member_views.iter().filter(|v| v.at_ms >= since) {
        last.insert(v.node, v);
    }
    let sets: BTreeSet<&BTreeSet<u64>> = last.values().map(|v| &v.voters).collect();
    let half: Vec<u64> = last
        .values()
        .flat_map(|v| v.learners.iter().copied())
        .collect();
    let expected = expected_voters(initial, &h.member_changes);
    let matches = match (&expected, sets.iter().next()) {
        (Some(e), Some(s)) => e == *s,
        (None, Some(_)) => true,
        (_, None) => false,
    };
    let applied = h
        .member_changes
        .iter()
        .filter(|c| c.result == ChangeResult::Applied)
        .count();
    let ok = sets.len() == 1 && half.is_empty() && matches && !h.member_changes.is_empty();
    Check {
        name: "membership_consistent",
        ok,
        detail: format!(
            "{} changes ({applied} applied); final voters per node {:?}; expected {:?}; learners left {:?}",
            h.member_changes.len(),
            last.values().map(|v| (v.node, &v.voters)).collect::<Vec<_>>(),
            expected,
            half
        ),
    }
}

/// Admin writes sent to the node whose disk was full were either acknowledged (and then must
/// survive: `acked_writes_present`) or refused with an error that says what happened: a JSON
/// error with a message, never a timeout or an empty answer.
pub fn full_node_errors_clear(h: &History) -> Check {
    let unclear: Vec<&Probe> = h
        .probes
        .iter()
        .filter(|p| p.outcome != Outcome::Ok && !has_message(&p.body))
        .collect();
    let acked = h.probes.iter().filter(|p| p.outcome == Outcome::Ok).count();
    let refused = h.probes.len() - acked;
    // Some refusal must say that the storage failed, not only that the node is unavailable.
    let named = h.probes.iter().any(|p| p.body.contains("storage"));
    let sample = h
        .probes
        .iter()
        .find(|p| p.outcome != Outcome::Ok)
        .map(|p| format!("{:?} {}", p.outcome, p.body));
    let detail = match unclear.first() {
        None if refused > 0 && !named => format!(
            "{refused} writes to the full node refused, none saying its storage failed (e.g. {sample:?})"
        ),
        None => format!(
            "{} writes to the full node: {acked} acked, {refused} refused with a message (e.g. {sample:?})",
            h.probes.len()
        ),
        Some(p) => format!(
            "{} of {} writes to the full node got no clear error; first at {} ms: {:?} {:?}",
            unclear.len(),
            h.probes.len(),
            p.at_ms,
            p.outcome,
            p.body
        ),
    };
    Check {
        name: "full_node_errors_clear",
        ok: unclear.is_empty() && !h.probes.is_empty() && (refused == 0 || named),
        detail,
    }
}

fn has_message(body: &str) -> bool {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|j| j["error"]["message"].as_str().map(|m| !m.trim().is_empty()))
        .unwrap_or(false)
}

#[cfg(test)]
#[path = "topology_test.rs"]
mod tests;
