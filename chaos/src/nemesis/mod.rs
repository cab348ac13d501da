//! The scenarios: what each one breaks, how often, and which checks decide it. Every scenario
//! repeats its fault until `--duration` has passed (at least once), then the runner heals.
//! Newer scenarios live in submodules of their own, one file per family of faults.

use std::time::{Duration, Instant};

use anyhow::anyhow;
use rand::seq::SliceRandom;
use rand::Rng;

use crate::checkers::Check;
use crate::history::{History, OpKind, Outcome};
use crate::scenario::Ctx;

mod churn;
mod topology;

#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: &'static str,
    /// The number in the list.
    pub number: u32,
    pub nodes: usize,
    /// Proxied requests to nodes that are up must all succeed.
    pub proxy_must_not_fail: bool,
    /// Leader losses are timed: a new leader within 2 s (p99).
    pub measures_failover: bool,
    /// What it does and its pass criterion, for `list` and the README.
    pub about: &'static str,
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "leader-crash",
        number: 1,
        nodes: 3,
        proxy_must_not_fail: true,
        measures_failover: true,
        about: "SIGKILL the leader during writes, restart it, repeat. Pass: no acked write lost, \
                converged, new leader p99 <= 2 s, no proxied failure on live nodes",
    },
    Scenario {
        name: "follower-crash-loop",
        number: 2,
        nodes: 3,
        proxy_must_not_fail: true,
        measures_failover: false,
        about: "SIGKILL a follower, keep writing until the leader's log has purged past it (two \
                snapshots + logs_to_keep), restart it, repeat. Pass: it catches up within 20 s \
                through a snapshot it installed (its raftgate_raft_snapshots_installed_total), \
                converged, no acked write lost",
    },
    Scenario {
        name: "minority-partition",
        number: 3,
        nodes: 3,
        proxy_must_not_fail: true,
        measures_failover: true,
        about: "cut the leader off from the majority (both directions), heal, repeat. Pass: the \
                majority elects within 2 s; the cut-off node keeps proxying; no acked write lost",
    },
    Scenario {
        name: "ring-bridge",
        number: 4,
        nodes: 5,
        proxy_must_not_fail: true,
        measures_failover: false,
        about: "5 nodes: a majorities ring (each node reaches its two neighbours only), heal, a \
                bridge ({a,b} and {d,e} reach c, not each other), heal, repeat. Pass: writes \
                acked during every fault, one leader per term, no acked write lost, every node \
                caught up within 10 s of each heal",
    },
    Scenario {
        name: "leader-pause",
        number: 5,
        nodes: 3,
        proxy_must_not_fail: true,
        measures_failover: true,
        about: "SIGSTOP the leader for 3 leader leases, SIGCONT, repeat. Pass: new leader \
                p99 <= 2 s, one leader per term, the old leader rejoins and converges",
    },
    Scenario {
        name: "lossy-network",
        number: 6,
        nodes: 3,
        proxy_must_not_fail: true,
        measures_failover: false,
        about: "every cluster link 40 ms +0-40 ms jitter, 5% of chunks pay a 200 ms retransmit. \
                Pass: writes keep being acked, nothing lost, converged, no proxied failure",
    },
    Scenario {
        name: "cluster-crash",
        number: 7,
        nodes: 3,
        proxy_must_not_fail: true,
        measures_failover: false,
        about: "SIGKILL every node at once, restart all, repeat. Pass: every acked write (fsynced \
                before the ack) survives, one config everywhere after the restart",
    },
    Scenario {
        name: "membership-change",
        number: 8,
        nodes: 3,
        proxy_must_not_fail: true,
        measures_failover: false,
        about: "under load add a new node (join = true) as a voter, then remove a voter; the \
                leader is SIGKILLed right after each call is sent. Pass: every change applied or \
                refused, the same voters on every node with no learner left, the removed node \
                not counted, no acked write lost",
    },
    Scenario {
        name: "rolling-restart",
        number: 9,
        nodes: 3,
        // Judged by `no_request_lost_in_drain` instead: a stopping node's requests count.
        proxy_must_not_fail: false,
        measures_failover: true,
        about: "under load SIGTERM each node in turn (clients keep sending to it until it has \
                exited), restart it, wait until ready, next; repeat. Pass: every proxied request \
                a node accepted answered 200 (only refused connects excused), new leader p99 <= \
                2 s after SIGTERMing the leader, no acked write lost, converged",
    },
    Scenario {
        name: "quota-partition",
        number: 10,
        nodes: 3,
        proxy_must_not_fail: true,
        measures_failover: false,
        about: "quota traffic on every node while a random node is cut off, heal, repeat. Pass: \
                admissions <= the quota's limit cluster-wide",
    },
    Scenario {
        name: "upstream-down",
        number: 11,
        nodes: 3,
        proxy_must_not_fail: true,
        measures_failover: false,
        about: "close the upstream's listener and connections for 3 s, bring it back, repeat. \
                Pass: during the outage every request is answered 502/503/504 within 2 s; \
                200s again within 1 s of its return",
    },
    Scenario {
        name: "slow-upstream",
        number: 12,
        nodes: 3,
        proxy_must_not_fail: true,
        measures_failover: false,
        about: "the upstream answers after 800 ms for 3 s: over a 300 ms route's timeout, under \
                the others' 3 s; repeat. Pass: that route answers 504 within 300 ms + 10% + 250 \
                ms, the others 200, admin writes acked and GET /cluster answered throughout, 200s \
                on it again 1 s after",
    },
    Scenario {
        name: "full-disk",
        number: 13,
        nodes: 3,
        proxy_must_not_fail: true,
        measures_failover: false,
        about: "one node's data dir on a tmpfs filled to the last byte while writes go to every \
                node; free it, restart the node, repeat. Pass: writes acked while it is full, \
                its admin writes refused with a clear error (or acked and kept), no acked write \
                lost, it restarts cleanly and catches up within 10 s",
    },
];

pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

pub(crate) fn others(ctx: &Ctx, id: u64) -> Vec<u64> {
    ctx.cluster.ids().into_iter().filter(|i| *i != id).collect()
}

pub(crate) async fn sleep_ms(ctx: &mut Ctx, lo: u64, hi: u64) {
    let ms = ctx.rng.gen_range(lo..=hi);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

pub(crate) async fn leader(ctx: &Ctx) -> anyhow::Result<(u64, u64)> {
    ctx.await_leader(Duration::from_secs(10))
        .await
        .ok_or_else(|| anyhow!("no leader within 10 s"))
}

pub async fn run(s: &Scenario, ctx: &mut Ctx) -> anyhow::Result<()> {
    let until = Instant::now() + ctx.duration;
    let mut first = true;
    while first || ctx.left(until) {
        first = false;
        match s.name {
            "leader-crash" => leader_crash(ctx).await?,
            "minority-partition" => minority_partition(ctx).await?,
            "leader-pause" => leader_pause(ctx).await?,
            "lossy-network" => lossy_network(ctx, until).await,
            "cluster-crash" => cluster_crash(ctx).await?,
            "quota-partition" => quota_partition(ctx).await,
            "upstream-down" => upstream_down(ctx).await,
            "ring-bridge" => topology::ring_bridge(ctx).await?,
            "membership-change" => topology::membership_change(ctx).await?,
            "full-disk" => topology::full_disk(ctx).await?,
            "follower-crash-loop" => churn::follower_crash_loop(ctx).await?,
            "rolling-restart" => churn::rolling_restart(ctx).await?,
            "slow-upstream" => churn::slow_upstream(ctx).await?,
            other => return Err(anyhow!("no nemesis for {other}")),
        }
    }
    Ok(())
}

async fn leader_crash(ctx: &mut Ctx) -> anyhow::Result<()> {
    let (l, term) = leader(ctx).await?;
    ctx.shared
        .fault(format!("SIGKILL leader {l} (term {term})"));
    ctx.shared.mark_down(l);
    let lost = Instant::now();
    ctx.cluster.kill(l);
    ctx.measure_failover(l, term, &others(ctx, l), lost).await;
    sleep_ms(ctx, 500, 1500).await;
    ctx.shared.fault(format!("restart node {l}"));
    ctx.bring_back(l).await?;
    sleep_ms(ctx, 1000, 2000).await;
    Ok(())
}

async fn minority_partition(ctx: &mut Ctx) -> anyhow::Result<()> {
    let (l, term) = leader(ctx).await?;
    let rest = others(ctx, l);
    ctx.shared.fault(format!(
        "partition [{l}] | {rest:?} (old leader alone, term {term})"
    ));
    let lost = Instant::now();
    ctx.cluster.faults.partition(&[vec![l], rest.clone()]);
    ctx.measure_failover(l, term, &rest, lost).await;
    sleep_ms(ctx, 2000, 4000).await;
    ctx.shared.fault("heal the partition");
    ctx.cluster.faults.heal();
    sleep_ms(ctx, 2000, 3000).await;
    Ok(())
}

async fn leader_pause(ctx: &mut Ctx) -> anyhow::Result<()> {
    let (l, term) = leader(ctx).await?;
    // Three times the leader lease (the election timeout's upper bound), so followers campaign.
    let hold = Duration::from_millis(6 * ctx.opts.election_timeout_ms);
    ctx.shared
        .fault(format!("SIGSTOP leader {l} (term {term}) for {hold:?}"));
    ctx.shared.mark_down(l);
    let lost = Instant::now();
    ctx.cluster.pause(l);
    ctx.measure_failover(l, term, &others(ctx, l), lost).await;
    let rest = hold.saturating_sub(lost.elapsed());
    tokio::time::sleep(rest).await;
    ctx.shared.fault(format!("SIGCONT node {l}"));
    ctx.cluster.resume(l);
    ctx.bring_back(l).await?;
    sleep_ms(ctx, 1500, 2500).await;
    Ok(())
}

async fn lossy_network(ctx: &mut Ctx, until: Instant) {
    ctx.shared
        .fault("every cluster link: delay 40 ms, jitter 40 ms, 5% retransmits");
    ctx.cluster.faults.set_network(40, 40, 0.05);
    tokio::time::sleep(until.saturating_duration_since(Instant::now())).await;
    ctx.shared.fault("network back to normal");
    ctx.cluster.faults.heal();
}

async fn cluster_crash(ctx: &mut Ctx) -> anyhow::Result<()> {
    let ids = ctx.cluster.ids();
    ctx.shared.fault("SIGKILL every node");
    for id in &ids {
        ctx.shared.mark_down(*id);
    }
    for id in &ids {
        ctx.cluster.kill(*id);
    }
    sleep_ms(ctx, 500, 1500).await;
    ctx.shared.fault("restart every node");
    for id in &ids {
        ctx.cluster.restart(*id)?;
    }
    for id in &ids {
        ctx.bring_back(*id).await?;
    }
    leader(ctx).await?;
    sleep_ms(ctx, 2000, 3000).await;
    Ok(())
}

async fn quota_partition(ctx: &mut Ctx) {
    let ids = ctx.cluster.ids();
    let cut = *ids.choose(&mut ctx.rng).expect("nodes");
    let rest = others(ctx, cut);
    ctx.shared.fault(format!(
        "partition [{cut}] | {rest:?}, quota clients on both sides"
    ));
    ctx.cluster.faults.partition(&[vec![cut], rest]);
    sleep_ms(ctx, 2500, 4000).await;
    ctx.shared.fault("heal the partition");
    ctx.cluster.faults.heal();
    sleep_ms(ctx, 1500, 2500).await;
}

/// How long after the upstream's return requests may still fail.
const UPSTREAM_GRACE_MS: u64 = 1000;

async fn upstream_down(ctx: &mut Ctx) {
    ctx.shared
        .fault("upstream down (listener and connections closed)");
    let from = ctx.shared.now_ms();
    ctx.upstream.down();
    tokio::time::sleep(Duration::from_secs(3)).await;
    ctx.shared.fault("upstream back");
    ctx.upstream.up();
    let to = ctx.shared.now_ms() + UPSTREAM_GRACE_MS;
    ctx.shared.excuse_all(from, to);
    sleep_ms(ctx, 2000, 3000).await;
}

/// Checks only some scenarios have.
pub fn extra_checks(s: &Scenario, h: &History) -> Vec<Check> {
    match s.name {
        "upstream-down" => vec![upstream_outage_answered(h)],
        "follower-crash-loop" => vec![churn::caught_up_by_snapshot(h)],
        "rolling-restart" => vec![churn::no_request_lost_in_drain(h)],
        "slow-upstream" => vec![
            churn::slow_route_times_out(
                h,
                churn::SLOW_TIMEOUT_MS,
                churn::SLOW_SLACK_MS,
                churn::SLOW_GRACE_MS,
            ),
            topology::writes_acked_during_faults(h),
            churn::admin_kept_answering(h, churn::ADMIN_GAP_MS),
        ],
        "ring-bridge" => vec![
            topology::writes_acked_during_faults(h),
            topology::caught_up_after_heal(h, topology::CATCH_UP_BUDGET_MS),
        ],
        "membership-change" => vec![topology::membership_consistent(
            h,
            &(1..=s.nodes as u64).collect(),
        )],
        "full-disk" => vec![
            topology::writes_acked_during_faults(h),
            topology::full_node_errors_clear(h),
            topology::caught_up_after_heal(h, topology::CATCH_UP_BUDGET_MS),
        ],
        _ => Vec::new(),
    }
}

/// During an upstream outage the gateway answers every request, with a gateway error, fast.
pub fn upstream_outage_answered(h: &History) -> Check {
    let windows: Vec<(u64, u64)> = h
        .down
        .iter()
        .filter(|d| d.node == 0)
        .map(|d| (d.from_ms, d.to_ms))
        .collect();
    let during: Vec<_> = h
        .ops
        .iter()
        .filter(|o| o.kind == OpKind::Proxy)
        .filter(|o| {
            windows
                .iter()
                .any(|(f, t)| o.start_ms >= *f && o.start_ms <= *t)
        })
        .collect();
    let bad: Vec<_> = during
        .iter()
        .filter(|o| {
            let answered = matches!(o.outcome, Outcome::Ok | Outcome::Fail { status: 502..=504 });
            !answered || o.end_ms - o.start_ms > 2000
        })
        .collect();
    let gateway_errors = during.iter().filter(|o| o.outcome != Outcome::Ok).count();
    Check {
        name: "upstream_outage_answered",
        ok: bad.is_empty() && !windows.is_empty(),
        detail: match bad.first() {
            None => format!(
                "{} requests during {} outages: {gateway_errors} answered 502-504, all within 2 s",
                during.len(),
                windows.len()
            ),
            Some(o) => format!(
                "{} of {} requests during outages not answered fast with 502-504; first: {:?} after {} ms",
                bad.len(),
                during.len(),
                o.outcome,
                o.end_ms - o.start_ms
            ),
        },
    }
}
