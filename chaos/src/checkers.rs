//! The invariants, as pure functions over the history and the nodes' final states.
//! Each returns a [`Check`]: its name, whether it held, and the evidence.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::history::{History, OpKind, Outcome};

/// What one node holds after the heal (read with `?stale=true`, so from its own state).
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeFinal {
    pub node: u64,
    pub revision: u64,
    /// SHA-256 of `GET /config?stale=true` (services, routes, consumers).
    pub config_hash: String,
    pub routes: BTreeSet<String>,
    /// Key ids of the workload's consumer.
    pub keys: BTreeSet<String>,
}

/// A revoked key sent to one node's proxy after the heal.
#[derive(Clone, Debug, Serialize)]
pub struct Probe {
    pub node: u64,
    pub key_id: String,
    pub status: u16,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct FinalState {
    pub nodes: Vec<NodeFinal>,
    /// From the heal until every node answered the same revision and config hash; `None`:
    /// never within the wait.
    pub converged_ms: Option<u64>,
    pub revoked_probes: Vec<Probe>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

fn check(name: &'static str, ok: bool, detail: String) -> Check {
    Check { name, ok, detail }
}

/// Every acknowledged route write and key creation is present on every node (a key is exempt
/// once a revocation of it was sent, whatever its outcome).
pub fn acked_writes_present(h: &History, fin: &FinalState) -> Check {
    let acked = |kind| {
        h.ops
            .iter()
            .filter(move |o| o.kind == kind && o.outcome == Outcome::Ok)
            .map(|o| o.id.clone())
    };
    let routes: BTreeSet<String> = acked(OpKind::RouteWrite).collect();
    let revoking: BTreeSet<String> = h
        .ops
        .iter()
        .filter(|o| o.kind == OpKind::KeyRevoke)
        .map(|o| o.id.clone())
        .collect();
    let keys: BTreeSet<String> = acked(OpKind::KeyCreate)
        .filter(|k| !revoking.contains(k))
        .collect();
    let mut missing = Vec::new();
    for n in &fin.nodes {
        let lost_routes: Vec<&String> = routes.difference(&n.routes).collect();
        let lost_keys: Vec<&String> = keys.difference(&n.keys).collect();
        if !lost_routes.is_empty() || !lost_keys.is_empty() {
            missing.push(format!(
                "node {}: {} routes missing (first: {:?}), {} keys missing (first: {:?})",
                n.node,
                lost_routes.len(),
                lost_routes.first(),
                lost_keys.len(),
                lost_keys.first()
            ));
        }
    }
    let ok = missing.is_empty() && !fin.nodes.is_empty();
    let detail = if ok {
        format!(
            "{} acked route writes and {} live acked keys on all {} nodes",
            routes.len(),
            keys.len(),
            fin.nodes.len()
        )
    } else if fin.nodes.is_empty() {
        "no node answered after the heal".into()
    } else {
        missing.join("; ")
    };
    check("acked_writes_present", ok, detail)
}

/// Every node reached the same revision and the same config within `budget_ms` of the heal.
pub fn converged(fin: &FinalState, budget_ms: u64) -> Check {
    let revisions: BTreeSet<u64> = fin.nodes.iter().map(|n| n.revision).collect();
    let hashes: BTreeSet<&str> = fin.nodes.iter().map(|n| n.config_hash.as_str()).collect();
    let ok = matches!(fin.converged_ms, Some(t) if t <= budget_ms)
        && revisions.len() == 1
        && hashes.len() == 1;
    let detail = match fin.converged_ms {
        Some(t) => format!(
            "same revision {:?} and config hash on {} nodes {t} ms after the heal (budget {budget_ms} ms)",
            revisions, fin.nodes.len()
        ),
        None => format!(
            "not converged within the wait: revisions {revisions:?}, {} distinct configs",
            hashes.len()
        ),
    };
    check("converged", ok, detail)
}

/// No two nodes ever reported different leaders for the same term.
pub fn one_leader_per_term(h: &History) -> Check {
    let mut leaders: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for s in &h.samples {
        if let Some(l) = s.leader {
            leaders.entry(s.term).or_default().insert(l);
        }
    }
    let bad: Vec<String> = leaders
        .iter()
        .filter(|(_, ls)| ls.len() > 1)
        .map(|(t, ls)| format!("term {t}: leaders {ls:?}"))
        .collect();
    let detail = if bad.is_empty() {
        format!(
            "{} terms observed in {} samples, one leader each",
            leaders.len(),
            h.samples.len()
        )
    } else {
        bad.join("; ")
    };
    check("one_leader_per_term", bad.is_empty(), detail)
}

/// The cluster admitted at most `limit` requests on the quota route (one window: scenarios
/// use a per-day quota and run for minutes).
pub fn quota_within_limit(h: &History, limit: u64) -> Check {
    let admitted = h
        .ops
        .iter()
        .filter(|o| o.kind == OpKind::Quota && o.outcome == Outcome::Ok)
        .count() as u64;
    let refused = h
        .ops
        .iter()
        .filter(|o| o.kind == OpKind::Quota && o.outcome == (Outcome::Fail { status: 429 }))
        .count();
    check(
        "quota_within_limit",
        admitted <= limit,
        format!("{admitted} admitted (limit {limit}), {refused} refused with 429"),
    )
}

/// No proxied request failed on a node that was up: requests to a node inside one of its
/// down intervals (killed, paused, stopped; node 0: every node, the upstream was down) do not
/// count.
pub fn no_failed_proxy(h: &History) -> Check {
    let counted = h
        .ops
        .iter()
        .filter(|o| o.kind == OpKind::Proxy)
        .filter(|o| {
            !h.down.iter().any(|d| {
                (d.node == 0 || d.node == o.node) && o.start_ms <= d.to_ms && o.end_ms >= d.from_ms
            })
        });
    let (mut total, mut failed) = (0usize, Vec::new());
    for o in counted {
        total += 1;
        if o.outcome != Outcome::Ok {
            failed.push(o);
        }
    }
    let detail = match failed.first() {
        None => format!("{total} proxied requests to live nodes, none failed"),
        Some(f) => format!(
            "{} of {total} proxied requests to live nodes failed; first: node {} at {} ms: {:?}",
            failed.len(),
            f.node,
            f.start_ms,
            f.outcome
        ),
    };
    check("no_failed_proxy", failed.is_empty(), detail)
}

/// Nearest-rank percentile of `values` (sorted here).
pub fn percentile(values: &[u64], p: f64) -> Option<u64> {
    let mut v = values.to_vec();
    v.sort_unstable();
    if v.is_empty() {
        return None;
    }
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// Every leader loss was followed by a new leader, p99 within `budget_ms`.
pub fn failover_within(h: &History, budget_ms: u64) -> Check {
    let took: Vec<u64> = h.failovers.iter().filter_map(|f| f.took_ms).collect();
    let never = h.failovers.len() - took.len();
    let p99 = percentile(&took, 0.99);
    let ok = never == 0 && p99.is_none_or(|p| p <= budget_ms);
    let detail = match p99 {
        None if never == 0 => "no leader loss in this run".into(),
        _ => format!(
            "{} leader losses: new leader p50 {:?} ms, p99 {:?} ms, max {:?} ms (budget {budget_ms} ms); {never} without a new leader",
            h.failovers.len(),
            percentile(&took, 0.5),
            p99,
            took.iter().max()
        ),
    };
    check("failover_within", ok, detail)
}

/// Every key whose revocation was acknowledged is refused (401) by every node's proxy.
pub fn revoked_refused(fin: &FinalState) -> Check {
    let bad: Vec<&crate::checkers::Probe> = fin
        .revoked_probes
        .iter()
        .filter(|p| p.status != 401)
        .collect();
    let detail = match bad.first() {
        None => format!(
            "{} probes of revoked keys, all refused with 401",
            fin.revoked_probes.len()
        ),
        Some(p) => format!(
            "{} of {} probes not refused; first: key {} on node {} answered {}",
            bad.len(),
            fin.revoked_probes.len(),
            p.key_id,
            p.node,
            p.status
        ),
    };
    check("revoked_refused", bad.is_empty(), detail)
}

#[cfg(test)]
#[path = "checkers_test.rs"]
mod tests;
