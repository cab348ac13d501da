//! Scenarios that churn processes and the upstream: a follower crashed over and over so that
//! it must catch up through a snapshot (#2 `follower-crash-loop`), every node restarted
//! gracefully under load (#9 `rolling-restart`), an upstream slower than a route's timeout
//! (#12 `slow-upstream`), and the checks only they have.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use rand::seq::SliceRandom;

use super::{leader, others, sleep_ms};
use crate::api;
use crate::checkers::{percentile, Check};
use crate::history::{CatchUp, History, Op, OpKind, Outcome, Window};
use crate::scenario::Ctx;

const APPLIED: &str = "raftgate_raft_applied_index";
const INSTALLED: &str = "raftgate_raft_snapshots_installed_total";

/// A counter or gauge of node `id` (0 when it does not answer).
async fn metric(ctx: &Ctx, id: u64, series: &str) -> u64 {
    api::metric(&ctx.client, &ctx.endpoint(id).admin, series)
        .await
        .unwrap_or(0.0) as u64
}

/// Polls `series` on node `id` until it reaches `want`; `false` at the deadline.
async fn await_metric(ctx: &Ctx, id: u64, series: &str, want: u64, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if metric(ctx, id, series).await >= want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

// ---------------------------------------------------------------------------------------------
// #2 follower-crash-loop

/// How long the workload may take to write past a snapshot while the follower is down.
const WRITE_PAST_WAIT: Duration = Duration::from_secs(40);
/// How long a restarted follower may take to apply what the leader had at its restart.
const CATCH_UP_WAIT: Duration = Duration::from_secs(20);

/// SIGKILLs a follower, waits until the leader's log has moved past it by two snapshots and
/// `logs_to_keep` (so the entries it lacks are purged everywhere), restarts it and records
/// how it caught up.
pub(super) async fn follower_crash_loop(ctx: &mut Ctx) -> anyhow::Result<()> {
    let (l, term) = leader(ctx).await?;
    let f = *others(ctx, l).choose(&mut ctx.rng).expect("a follower");
    let from = metric(ctx, f, APPLIED).await;
    ctx.shared.fault(format!(
        "SIGKILL follower {f} at index {from} (leader {l}, term {term})"
    ));
    ctx.shared.mark_down(f);
    ctx.cluster.kill(f);
    // Snapshots are taken every `snapshot_every` entries from wherever the last one was: two of
    // them past `from`, plus what a node keeps behind its snapshot, purge `from` for sure.
    let past = from + 2 * ctx.opts.snapshot_every + ctx.opts.logs_to_keep;
    if !await_metric(ctx, l, APPLIED, past, WRITE_PAST_WAIT).await {
        return Err(anyhow!(
            "leader {l} did not apply index {past} within {WRITE_PAST_WAIT:?} while node {f} was \
             down: the workload wrote too slowly (lower --snapshot-every or --logs-to-keep)"
        ));
    }
    let target = metric(ctx, l, APPLIED).await;
    ctx.shared
        .fault(format!("restart node {f} (leader {l} at index {target})"));
    let at_ms = ctx.shared.now_ms();
    let restarted = Instant::now();
    ctx.bring_back(f).await?;
    let caught_up = await_metric(ctx, f, APPLIED, target, CATCH_UP_WAIT).await;
    let c = CatchUp {
        at_ms,
        node: f,
        behind: target.saturating_sub(from),
        took_ms: caught_up.then(|| restarted.elapsed().as_millis() as u64),
        snapshots_installed: metric(ctx, f, INSTALLED).await,
    };
    ctx.shared.fault(format!(
        "  node {f}: {} entries behind, caught up after {:?} ms, {} snapshot(s) installed",
        c.behind, c.took_ms, c.snapshots_installed
    ));
    ctx.shared.history.borrow_mut().catch_ups.push(c);
    sleep_ms(ctx, 500, 1000).await;
    Ok(())
}

/// Every restarted follower caught up, and through a snapshot from the leader (its log had
/// been purged past the follower's last entry), not by replaying the log.
pub fn caught_up_by_snapshot(h: &History) -> Check {
    let late: Vec<&CatchUp> = h.catch_ups.iter().filter(|c| c.took_ms.is_none()).collect();
    let no_snapshot: Vec<&CatchUp> = h
        .catch_ups
        .iter()
        .filter(|c| c.snapshots_installed == 0)
        .collect();
    let took: Vec<u64> = h.catch_ups.iter().filter_map(|c| c.took_ms).collect();
    let ok = !h.catch_ups.is_empty() && late.is_empty() && no_snapshot.is_empty();
    let detail = if h.catch_ups.is_empty() {
        "no follower was restarted".to_string()
    } else {
        format!(
            "{} restarts, {}-{} entries behind: {} caught up (p50 {:?} ms, max {:?} ms), {} \
             through a snapshot{}",
            h.catch_ups.len(),
            h.catch_ups.iter().map(|c| c.behind).min().unwrap_or(0),
            h.catch_ups.iter().map(|c| c.behind).max().unwrap_or(0),
            took.len(),
            percentile(&took, 0.5),
            took.iter().max(),
            h.catch_ups.len() - no_snapshot.len(),
            match (late.first(), no_snapshot.first()) {
                (Some(c), _) => format!("; node {} not caught up at {} ms", c.node, c.at_ms),
                (None, Some(c)) =>
                    format!("; node {} at {} ms installed no snapshot", c.node, c.at_ms),
                _ => String::new(),
            }
        )
    };
    Check {
        name: "caught_up_by_snapshot",
        ok,
        detail,
    }
}

// ---------------------------------------------------------------------------------------------
// #9 rolling-restart

/// How long a SIGTERMed node may take to exit: `[limits] drain_timeout_ms` (10 s) and a margin.
const EXIT_WAIT: Duration = Duration::from_secs(15);

/// Restarts every node gracefully, one after another, waiting for each to be ready again.
pub(super) async fn rolling_restart(ctx: &mut Ctx) -> anyhow::Result<()> {
    for id in ctx.cluster.ids() {
        graceful_restart(ctx, id).await?;
        sleep_ms(ctx, 500, 1000).await;
    }
    Ok(())
}

/// SIGTERM while the clients keep sending to the node (an orchestrator stops a pod before the
/// load balancer has noticed); they leave it only once it has exited. When it leads, the time
/// until another node reports a new leader is measured from the SIGTERM.
async fn graceful_restart(ctx: &mut Ctx, id: u64) -> anyhow::Result<()> {
    let led = ctx.leader().await.filter(|(l, _)| *l == id);
    ctx.shared.fault(match led {
        Some((_, term)) => format!("SIGTERM node {id} (the leader, term {term})"),
        None => format!("SIGTERM node {id}"),
    });
    let sent = Instant::now();
    ctx.cluster.local("rolling-restart")?.terminate(id);
    if let Some((_, term)) = led {
        ctx.measure_failover(id, term, &others(ctx, id), sent).await;
    }
    let status = loop {
        if let Some(status) = ctx.cluster.local("rolling-restart")?.exited(id) {
            break status;
        }
        if sent.elapsed() > EXIT_WAIT {
            ctx.cluster.kill(id);
            return Err(anyhow!(
                "node {id} still running {EXIT_WAIT:?} after SIGTERM (drain_timeout_ms is 10 s): \
                 SIGKILLed it; its log says why it hung"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    ctx.shared.mark_down(id);
    ctx.shared.fault(format!(
        "  node {id} exited ({status}) {} ms after SIGTERM; restart it",
        sent.elapsed().as_millis()
    ));
    if !status.ends_with("exit status: 0") {
        return Err(anyhow!(
            "node {id} ended with {status} after SIGTERM, not exit 0"
        ));
    }
    ctx.bring_back(id).await
}

/// A failed connect (awc's `SendRequestError::Connect`, "Failed to connect to host: ..."):
/// refused by a closed listener, or reset while still in the listen backlog when the listener
/// closed ("connector has been disconnected"). Nothing of the request was sent, so no node ever
/// accepted it; a client behind DNS or a load balancer retries it on another address.
fn refused(o: &Op) -> bool {
    matches!(&o.outcome, Outcome::Unknown { reason } if reason.starts_with("Failed to connect to host"))
}

/// Every proxied request was answered 200, on every node, draining ones included: a request a
/// node accepted must complete. Only refused connects are excused (see [`refused`]); down
/// intervals excuse nothing.
pub fn no_request_lost_in_drain(h: &History) -> Check {
    let proxied: Vec<&Op> = h.ops.iter().filter(|o| o.kind == OpKind::Proxy).collect();
    let excused = proxied.iter().filter(|o| refused(o)).count();
    let failed: Vec<&&Op> = proxied
        .iter()
        .filter(|o| o.outcome != Outcome::Ok && !refused(o))
        .collect();
    let detail = match failed.first() {
        None => format!(
            "{} proxied requests, none failed once accepted; {excused} connects failed on a \
             closed listener (nothing sent: retried by a real client)",
            proxied.len()
        ),
        Some(o) => format!(
            "{} of {} proxied requests failed after the connect; first: node {} at {} ms: {:?}",
            failed.len(),
            proxied.len(),
            o.node,
            o.start_ms,
            o.outcome
        ),
    };
    Check {
        name: "no_request_lost_in_drain",
        ok: failed.is_empty() && !proxied.is_empty(),
        detail,
    }
}

// ---------------------------------------------------------------------------------------------
// #12 slow-upstream

/// The request timeout of the `slow` route's service: the upstream's delay is over it.
pub const SLOW_TIMEOUT_MS: u64 = 300;
/// The upstream's delay: over the `slow` route's timeout, under the 3 s of the others.
const SLOW_UPSTREAM_MS: u64 = 800;
const SLOW_FOR: Duration = Duration::from_secs(3);
/// Client side scheduling and the gateway's own work on a loaded 2-core machine.
pub const SLOW_SLACK_MS: u64 = 250;
/// How long after the upstream is fast again the `slow` route may still answer 504.
pub const SLOW_GRACE_MS: u64 = 1000;
/// The most a node's `GET /cluster` may go unanswered while the upstream is slow.
pub const ADMIN_GAP_MS: u64 = 1000;
const SLOW_PATH: &str = "/slow";

/// A service with a short timeout on the same upstream, and its route; waits until every
/// node serves it.
async fn slow_route(ctx: &Ctx) -> anyhow::Result<()> {
    let admin = ctx.endpoint(1).admin;
    let service = format!(
        r#"{{"targets":[{{"url":"{}"}}],"timeouts":{{"connect_ms":500,"request_ms":{SLOW_TIMEOUT_MS}}}}}"#,
        ctx.cluster.upstream_url(&ctx.upstream)
    );
    let route = format!(r#"{{"service":"slow-svc","paths":["{SLOW_PATH}"]}}"#);
    for (url, body) in [
        (format!("{admin}/services/slow-svc"), service),
        (format!("{admin}/routes/slow"), route),
    ] {
        let (outcome, json) = api::admin_write(&ctx.client, "PUT", url.clone(), Some(body)).await;
        anyhow::ensure!(outcome == Outcome::Ok, "{url}: {outcome:?} {json:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for id in ctx.cluster.ids() {
        let url = format!("{}{SLOW_PATH}", ctx.endpoint(id).proxy);
        while api::proxy_get(&ctx.client, url.clone(), None).await != Ok(200) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "node {id} never served {SLOW_PATH}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Sends `GET /slow` to every node in turn until `stop`, into `history.scenario_ops`.
async fn probe_slow_route(ctx: Rc<ProbeCtx>, stop: Rc<Cell<bool>>) {
    let mut n = 0usize;
    while !stop.get() {
        let i = n % ctx.proxies.len();
        n += 1;
        let start = ctx.shared.now_ms();
        let url = format!("{}{SLOW_PATH}", ctx.proxies[i]);
        let outcome = match api::proxy_get(&ctx.client, url, None).await {
            Ok(200) => Outcome::Ok,
            Ok(status) => Outcome::Fail { status },
            Err(reason) => Outcome::Unknown { reason },
        };
        let end_ms = ctx.shared.now_ms();
        ctx.shared.history.borrow_mut().scenario_ops.push(Op {
            kind: OpKind::Proxy,
            node: i as u64 + 1,
            id: SLOW_PATH.into(),
            start_ms: start,
            end_ms,
            outcome,
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the probes need, owned (they run as tasks of their own).
struct ProbeCtx {
    shared: Rc<crate::workload::Shared>,
    client: awc::Client,
    proxies: Vec<String>,
}

/// Slows the upstream past the `slow` route's timeout for [`SLOW_FOR`] while two probes hit
/// that route (and the workload the others), then makes it fast again and keeps probing.
pub(super) async fn slow_upstream(ctx: &mut Ctx) -> anyhow::Result<()> {
    slow_route(ctx).await?;
    let probe = Rc::new(ProbeCtx {
        shared: ctx.shared.clone(),
        client: api::client(Duration::from_secs(5)),
        proxies: ctx
            .cluster
            .ids()
            .into_iter()
            .map(|id| ctx.endpoint(id).proxy)
            .collect(),
    });
    let stop = Rc::new(Cell::new(false));
    let tasks: Vec<_> = (0..2)
        .map(|_| actix_rt::spawn(probe_slow_route(probe.clone(), stop.clone())))
        .collect();
    ctx.shared.fault(format!(
        "upstream answers after {SLOW_UPSTREAM_MS} ms (route {SLOW_PATH}: {SLOW_TIMEOUT_MS} ms timeout, the others 3000 ms)"
    ));
    ctx.upstream.set_slow(SLOW_UPSTREAM_MS);
    let from_ms = ctx.shared.now_ms();
    tokio::time::sleep(SLOW_FOR).await;
    let to_ms = ctx.shared.now_ms();
    ctx.upstream.set_slow(0);
    ctx.shared.fault("upstream fast again");
    ctx.shared.history.borrow_mut().windows.push(Window {
        what: "slow upstream".into(),
        from_ms,
        to_ms,
        caught_up_ms: None,
    });
    sleep_ms(ctx, SLOW_GRACE_MS + 1000, SLOW_GRACE_MS + 2000).await;
    stop.set(true);
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

/// The windows a scenario recorded as "slow upstream".
fn slow_windows(h: &History) -> Vec<&Window> {
    h.windows
        .iter()
        .filter(|w| w.what == "slow upstream")
        .collect()
}

/// While the upstream is slower than the route's `timeout_ms`, every request on the route that
/// started and ended inside the window is answered 504 within `timeout_ms` + 10% + `slack_ms`;
/// from `grace_ms` after the window every request is answered 200 again.
pub fn slow_route_times_out(h: &History, timeout_ms: u64, slack_ms: u64, grace_ms: u64) -> Check {
    let windows = slow_windows(h);
    let budget = timeout_ms + timeout_ms / 10 + slack_ms;
    let inside = |o: &&Op| {
        windows
            .iter()
            .any(|w| o.start_ms >= w.from_ms && o.end_ms <= w.to_ms)
    };
    let after = |o: &&Op| {
        windows.iter().any(|w| o.start_ms >= w.to_ms + grace_ms)
            && !windows
                .iter()
                .any(|w| o.end_ms >= w.from_ms && o.start_ms <= w.to_ms)
    };
    let slow: Vec<&Op> = h.scenario_ops.iter().filter(inside).collect();
    let fast: Vec<&Op> = h.scenario_ops.iter().filter(after).collect();
    let late: Vec<&&Op> = slow
        .iter()
        .filter(|o| o.outcome != (Outcome::Fail { status: 504 }) || o.end_ms - o.start_ms > budget)
        .collect();
    let not_back: Vec<&&Op> = fast.iter().filter(|o| o.outcome != Outcome::Ok).collect();
    let took: Vec<u64> = slow.iter().map(|o| o.end_ms - o.start_ms).collect();
    let ok = !slow.is_empty() && !fast.is_empty() && late.is_empty() && not_back.is_empty();
    let mut detail = format!(
        "{} requests while slow: {} answered 504 within {budget} ms (p50 {:?} ms, max {:?} ms); \
         {} after it: {} answered 200",
        slow.len(),
        slow.len() - late.len(),
        percentile(&took, 0.5),
        took.iter().max(),
        fast.len(),
        fast.len() - not_back.len()
    );
    if let Some(o) = late.first() {
        detail += &format!(
            "; first miss: node {} at {} ms: {:?} after {} ms",
            o.node,
            o.start_ms,
            o.outcome,
            o.end_ms - o.start_ms
        );
    }
    if let Some(o) = not_back.first() {
        detail += &format!(
            "; first failure after: node {} at {} ms: {:?}",
            o.node, o.start_ms, o.outcome
        );
    }
    Check {
        name: "slow_route_times_out",
        ok,
        detail,
    }
}

/// No node's admin API stalled while the upstream was slow: the observer's `GET /cluster`
/// answers from each node are never more than `max_gap_ms` apart inside a window.
pub fn admin_kept_answering(h: &History, max_gap_ms: u64) -> Check {
    let windows = slow_windows(h);
    let mut nodes: Vec<u64> = h.samples.iter().map(|s| s.node).collect();
    nodes.sort_unstable();
    nodes.dedup();
    let mut worst: Option<(u64, u64, u64)> = None; // (gap, node, at)
    for w in &windows {
        for n in &nodes {
            let mut at: Vec<u64> = h
                .samples
                .iter()
                .filter(|s| s.node == *n)
                .map(|s| s.at_ms)
                .collect();
            // The window's edges count as answers: a node silent for the whole window shows.
            at.extend([w.from_ms, w.to_ms]);
            at.retain(|t| *t >= w.from_ms && *t <= w.to_ms);
            at.sort_unstable();
            for pair in at.windows(2) {
                let gap = pair[1] - pair[0];
                if worst.is_none_or(|(g, _, _)| gap > g) {
                    worst = Some((gap, *n, pair[0]));
                }
            }
        }
    }
    let ok = !windows.is_empty() && !nodes.is_empty() && worst.is_none_or(|w| w.0 <= max_gap_ms);
    let detail = match worst {
        None => "no slow window or no observation".to_string(),
        Some((gap, node, at)) => format!(
            "{} nodes observed in {} windows: longest silence {gap} ms (node {node} from {at} \
             ms; budget {max_gap_ms} ms)",
            nodes.len(),
            windows.len()
        ),
    };
    Check {
        name: "admin_kept_answering",
        ok,
        detail,
    }
}

#[cfg(test)]
#[path = "churn_test.rs"]
mod tests;
