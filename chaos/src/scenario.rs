//! One scenario run: start a cluster, set up the routes, run the workload while the nemesis
//! acts, heal, wait for convergence, read every node's final state and run the checkers.

use std::rc::Rc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use serde::Serialize;

use crate::api;
use crate::checkers::{self, Check, FinalState, NodeFinal, Probe};
use crate::cluster::{Cluster, EnvSpec};
use crate::history::{Failover, OpKind, Outcome};
use crate::local::NodeOptions;
use crate::nemesis::{self, Scenario};
use crate::upstream::Upstream;
use crate::workload::{self, Endpoint, Shared};

/// The quota on the `q` route (per day, by route: one budget for every client).
pub const QUOTA_LIMIT: u64 = 300;
const CONVERGE_BUDGET_MS: u64 = 10_000;
const FAILOVER_BUDGET_MS: u64 = 2_000;

/// Everything a nemesis acts on.
pub struct Ctx {
    pub cluster: Cluster,
    pub shared: Rc<Shared>,
    pub upstream: Upstream,
    pub client: awc::Client,
    pub rng: StdRng,
    pub duration: Duration,
    pub opts: NodeOptions,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub seed: u64,
    pub nodes: usize,
    pub faults: usize,
    pub operations: usize,
    /// Operations that did not succeed (refused, failed or unknown), by kind.
    pub failures: Vec<(OpKind, usize)>,
    pub recovery_ms: Option<u64>,
    pub checks: Vec<Check>,
    pub ok: bool,
    pub history: crate::history::History,
    pub final_state: FinalState,
    pub error: Option<String>,
}

impl Ctx {
    pub fn endpoint(&self, id: u64) -> Endpoint {
        self.shared.nodes.borrow()[id as usize - 1].clone()
    }

    /// The leader most live nodes agree on, and its term.
    pub async fn leader(&self) -> Option<(u64, u64)> {
        let mut votes: Vec<(u64, u64)> = Vec::new();
        for id in self.cluster.ids() {
            if !self.cluster.is_running(id) {
                continue;
            }
            if let Some(s) = api::status(&self.client, &self.endpoint(id).admin).await {
                if let Some(l) = s.leader {
                    votes.push((l, s.term));
                }
            }
        }
        let best = votes
            .iter()
            .max_by_key(|v| (v.1, votes.iter().filter(|w| *w == *v).count()))?;
        Some(*best)
    }

    /// Waits (up to `timeout`) for a leader.
    pub async fn await_leader(&self, timeout: Duration) -> Option<(u64, u64)> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(l) = self.leader().await {
                return Some(l);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// After the leader `old` (of `term`) was lost: polls the nodes in `among` until one reports
    /// another leader in a later term, and records the failover.
    pub async fn measure_failover(&self, old: u64, term: u64, among: &[u64], lost_at: Instant) {
        let at_ms = self.shared.now_ms();
        let deadline = lost_at + Duration::from_secs(15);
        // `GET /cluster` reads the leader and term when it starts, then pings every member (up
        // to 500 ms for a paused or cut-off one). So a new poll goes out every 20 ms without
        // waiting for the last, and a new leader counts from when the poll that saw it was sent.
        let mut polls = futures_util::stream::FuturesUnordered::new();
        let mut found = None;
        'wait: while Instant::now() < deadline {
            for id in among {
                let (client, admin) = (self.client.clone(), self.endpoint(*id).admin);
                let sent = Instant::now();
                polls.push(async move { (sent, api::status(&client, &admin).await) });
            }
            let tick = tokio::time::sleep(Duration::from_millis(20));
            tokio::pin!(tick);
            loop {
                tokio::select! {
                    _ = &mut tick => break,
                    Some((sent, status)) = futures_util::StreamExt::next(&mut polls) => {
                        let new = status.and_then(|s| s.leader.filter(|l| *l != old && s.term > term));
                        if let Some(l) = new {
                            found = Some((l, sent.duration_since(lost_at)));
                            break 'wait;
                        }
                    }
                }
            }
        }
        let f = Failover {
            at_ms,
            old_leader: old,
            new_leader: found.map(|f| f.0),
            took_ms: found.map(|f| f.1.as_millis() as u64),
        };
        self.shared.fault(format!(
            "  new leader {:?} after {:?} ms",
            f.new_leader, f.took_ms
        ));
        self.shared.history.borrow_mut().failovers.push(f);
    }

    /// Waits until node `id` answers `/readyz` 200 (up to `timeout`).
    pub async fn await_ready(&self, id: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let url = format!("{}/readyz", self.endpoint(id).admin);
        while Instant::now() < deadline {
            if matches!(self.client.get(&url).send().await, Ok(r) if r.status().is_success()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Brings a node back: restart (or resume), wait until ready, send clients to it again.
    pub async fn bring_back(&mut self, id: u64) -> anyhow::Result<()> {
        self.cluster.restart(id)?;
        if !self.await_ready(id, Duration::from_secs(20)).await {
            self.shared
                .fault(format!("node {id} not ready 20 s after restart"));
        }
        self.shared.mark_up(id);
        Ok(())
    }

    pub fn left(&self, until: Instant) -> bool {
        Instant::now() < until
    }
}

async fn admin_put(c: &awc::Client, url: String, body: &str) -> anyhow::Result<()> {
    let (outcome, json) = api::admin_write(c, "PUT", url.clone(), Some(body.into())).await;
    anyhow::ensure!(outcome == Outcome::Ok, "{url}: {outcome:?} {json:?}");
    Ok(())
}

/// Service, routes and consumer every scenario uses.
async fn set_up(ctx: &Ctx) -> anyhow::Result<()> {
    let admin = ctx.endpoint(1).admin;
    let c = &ctx.client;
    admin_put(
        c,
        format!("{admin}/services/up"),
        &format!(
            r#"{{"targets":[{{"url":"{}"}}],"timeouts":{{"connect_ms":500,"request_ms":3000}}}}"#,
            ctx.cluster.upstream_url(&ctx.upstream)
        ),
    )
    .await?;
    admin_put(
        c,
        format!("{admin}/routes/base"),
        r#"{"service":"up","paths":["/base"]}"#,
    )
    .await?;
    admin_put(
        c,
        format!("{admin}/routes/q"),
        &format!(r#"{{"service":"up","paths":["/q"],"quota":{{"requests":{QUOTA_LIMIT},"per":"day","by":"route"}}}}"#),
    )
    .await?;
    admin_put(
        c,
        format!("{admin}/routes/keyed"),
        r#"{"service":"up","paths":["/k"],"auth":"api_key"}"#,
    )
    .await?;
    admin_put(c, format!("{admin}/consumers/{}", api::CONSUMER), "{}").await?;
    // Every proxy serves the plain route before the workload starts.
    for id in ctx.cluster.ids() {
        let url = format!("{}/base", ctx.endpoint(id).proxy);
        let deadline = Instant::now() + Duration::from_secs(10);
        while api::proxy_get(c, url.clone(), None).await != Ok(200) {
            anyhow::ensure!(Instant::now() < deadline, "node {id} never served /base");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Polls every node until they all answer the same revision and config hash.
async fn await_convergence(ctx: &Ctx, healed: Instant, wait: Duration) -> Option<u64> {
    while healed.elapsed() < wait {
        let mut seen = Vec::new();
        for id in ctx.cluster.ids() {
            let admin = ctx.endpoint(id).admin;
            let st = api::status(&ctx.client, &admin).await;
            let hash = api::config_hash(&ctx.client, &admin).await;
            seen.push(st.map(|s| s.revision).zip(hash));
        }
        if seen.iter().all(|s| s.is_some() && *s == seen[0]) {
            return Some(healed.elapsed().as_millis() as u64);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn final_state(ctx: &Ctx, converged_ms: Option<u64>) -> FinalState {
    let c = &ctx.client;
    let mut nodes = Vec::new();
    for id in ctx.cluster.ids() {
        let admin = ctx.endpoint(id).admin;
        let (Some(st), Some(hash), Some(routes), Some(keys)) = (
            api::status(c, &admin).await,
            api::config_hash(c, &admin).await,
            api::routes(c, &admin).await,
            api::keys(c, &admin).await,
        ) else {
            continue;
        };
        nodes.push(NodeFinal {
            node: id,
            revision: st.revision,
            config_hash: hash,
            routes,
            keys,
        });
    }
    let mut revoked_probes = Vec::new();
    let revoked = ctx.shared.revoked.borrow().clone();
    for (key_id, key) in revoked {
        for id in ctx.cluster.ids() {
            let url = format!("{}/k", ctx.endpoint(id).proxy);
            let status = api::proxy_get(c, url, Some(&key)).await.unwrap_or(0);
            revoked_probes.push(Probe {
                node: id,
                key_id: key_id.clone(),
                status,
            });
        }
    }
    FinalState {
        nodes,
        converged_ms,
        revoked_probes,
    }
}

/// Runs one scenario end to end. Errors in the harness itself end up in the report (and make
/// the verdict FAIL), never in a panic.
pub async fn run(
    scenario: &Scenario,
    seed: u64,
    duration: Duration,
    env: &EnvSpec,
    rt: &tokio::runtime::Handle,
    opts: &NodeOptions,
) -> anyhow::Result<Report> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("raftgate-chaos-{}-", scenario.name))
        .tempdir()?;
    // Dropped before `dir` (declared after it): a docker project's compose file lives there.
    let cluster = Cluster::start(env, dir.path(), scenario.nodes, opts, rt)?;
    let endpoints: Vec<Endpoint> = cluster.endpoints();
    let mut ctx = Ctx {
        cluster,
        shared: Shared::new(endpoints, seed),
        upstream: Upstream::start(rt)?,
        client: api::client(Duration::from_secs(2)),
        rng: rand::SeedableRng::seed_from_u64(seed),
        duration,
        opts: opts.clone(),
    };
    let mut error = None;
    if ctx.await_leader(Duration::from_secs(30)).await.is_none() {
        error = Some("no leader within 30 s of start".to_string());
    } else if let Err(e) = set_up(&ctx).await {
        error = Some(format!("set-up: {e:#}"));
    }
    let mut recovery_ms = None;
    let mut fin = FinalState::default();
    if error.is_none() {
        let tasks = workload::start(&ctx.shared);
        // Let the workload reach a steady state before the first fault.
        tokio::time::sleep(Duration::from_secs(2)).await;
        if let Err(e) = nemesis::run(scenario, &mut ctx).await {
            error = Some(format!("nemesis: {e:#}"));
        }
        // Heal everything and stop the workload; convergence counts from here.
        ctx.shared.fault("heal: network healed, every node running");
        let healed = Instant::now();
        ctx.cluster.heal_all()?;
        let unapplied = ctx.cluster.take_errors();
        if error.is_none() && !unapplied.is_empty() {
            error = Some(format!("faults not applied: {}", unapplied.join("; ")));
        }
        ctx.upstream.up();
        ctx.upstream.set_slow(0);
        for id in ctx.cluster.ids() {
            if !ctx.shared.is_up(id) {
                ctx.await_ready(id, Duration::from_secs(20)).await;
                ctx.shared.mark_up(id);
            }
        }
        ctx.shared.stop.set(true);
        for t in tasks {
            let _ = t.await;
        }
        recovery_ms = await_convergence(&ctx, healed, Duration::from_secs(30)).await;
        fin = final_state(&ctx, recovery_ms).await;
    }
    let h = ctx.shared.history.borrow().clone();
    let mut checks = Vec::new();
    if error.is_none() {
        checks.push(checkers::acked_writes_present(&h, &fin));
        checks.push(checkers::converged(&fin, CONVERGE_BUDGET_MS));
        checks.push(checkers::one_leader_per_term(&h));
        checks.push(checkers::quota_within_limit(&h, QUOTA_LIMIT));
        if scenario.proxy_must_not_fail {
            checks.push(checkers::no_failed_proxy(&h));
        }
        if scenario.measures_failover {
            checks.push(checkers::failover_within(&h, FAILOVER_BUDGET_MS));
        }
        checks.push(checkers::revoked_refused(&fin));
        checks.extend(nemesis::extra_checks(scenario, &h));
    }
    let failures = [
        OpKind::RouteWrite,
        OpKind::KeyCreate,
        OpKind::KeyRevoke,
        OpKind::Proxy,
        OpKind::Quota,
    ]
    .into_iter()
    .map(|k| {
        let n = h
            .ops
            .iter()
            .filter(|o| o.kind == k && o.outcome != Outcome::Ok)
            .count();
        (k, n)
    })
    .collect();
    let ok = error.is_none() && checks.iter().all(|c| c.ok);
    if !ok && std::env::var_os("CHAOS_KEEP").is_some() {
        ctx.cluster.save_logs(dir.path());
        let kept = dir.keep();
        eprintln!("kept the cluster's files in {}", kept.display());
    }
    Ok(Report {
        scenario: scenario.name,
        seed,
        nodes: scenario.nodes,
        faults: h.faults.len(),
        operations: h.ops.len(),
        failures,
        recovery_ms,
        checks,
        ok,
        history: h,
        final_state: fin,
        error,
    })
}
