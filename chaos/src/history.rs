//! The client-side oracle: every operation the workload sent, with its outcome, plus what the
//! nemesis did and what the observers saw. Times are milliseconds since the scenario started.

use std::collections::BTreeSet;

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// `PUT /routes/{id}` (a new, unique route).
    RouteWrite,
    /// `POST /consumers/chaos/keys` with a key the workload chose.
    KeyCreate,
    /// `DELETE /consumers/chaos/keys/{id}`.
    KeyRevoke,
    /// A proxied `GET` on the plain route.
    Proxy,
    /// A proxied `GET` on the quota-limited route.
    Quota,
}

/// What the client learnt. `Unknown` means the operation may or may not have taken effect
/// (a timeout, a lost connection, a 503 after the write was proposed): a checker may neither
/// require nor forbid its effect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged: an admin write answered 2xx; a proxied request answered 200.
    Ok,
    /// Definitely refused (a 4xx for writes; 429 for quota requests; any other status for
    /// proxied requests).
    Fail {
        status: u16,
    },
    Unknown {
        reason: String,
    },
}

#[derive(Clone, Debug, Serialize)]
pub struct Op {
    pub kind: OpKind,
    /// The node the client sent it to.
    pub node: u64,
    /// The unique id: route name, key id (or the key's value before it has an id).
    pub id: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub outcome: Outcome,
}

/// A node made unavailable on purpose (killed, paused, stopped) from `from_ms` until it was
/// back and serving, `to_ms`. Requests to it in that window are not data-path failures.
#[derive(Clone, Debug, Serialize)]
pub struct Down {
    pub node: u64,
    pub from_ms: u64,
    pub to_ms: u64,
}

/// One observation of `GET /cluster` on one node.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub at_ms: u64,
    pub node: u64,
    pub term: u64,
    pub leader: Option<u64>,
}

/// A fault the nemesis injected, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct Fault {
    pub at_ms: u64,
    pub what: String,
}

/// The time from losing a leader (crash, pause, cut off) to a new leader seen by the others.
#[derive(Clone, Debug, Serialize)]
pub struct Failover {
    pub at_ms: u64,
    pub old_leader: u64,
    /// `None`: no new leader within the wait.
    pub new_leader: Option<u64>,
    pub took_ms: Option<u64>,
}

/// A span during which a scenario's fault was in force (a ring, a bridge, a full disk), for
/// checks that count what the cluster did meanwhile.
#[derive(Clone, Debug, Serialize)]
pub struct Window {
    pub what: String,
    pub from_ms: u64,
    /// The heal.
    pub to_ms: u64,
    /// From the heal until every node had reached the revision the most advanced one had at
    /// the heal; `None`: not within the wait.
    pub caught_up_ms: Option<u64>,
}

/// One membership change the nemesis asked for, with the answer it settled on after retrying
/// unknown outcomes (as an operator would).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberChange {
    pub at_ms: u64,
    /// `true`: add `id` as a voter; `false`: remove it.
    pub add: bool,
    pub id: u64,
    pub attempts: u32,
    /// When the nemesis stopped retrying.
    pub settled_ms: u64,
    pub result: ChangeResult,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeResult {
    /// Acknowledged (or a retry found it already done).
    Applied,
    /// Definitely refused (a 4xx that is not "already done").
    Refused { status: u16 },
    /// Never a definite answer: it may or may not have taken effect.
    Unknown,
}

/// One node's membership as `GET /cluster` reported it.
#[derive(Clone, Debug, Serialize)]
pub struct MemberView {
    pub at_ms: u64,
    pub node: u64,
    pub voters: BTreeSet<u64>,
    pub learners: BTreeSet<u64>,
}

/// An admin write a scenario sent itself, with the answer's body, to judge the error it got.
#[derive(Clone, Debug, Serialize)]
pub struct Probe {
    pub at_ms: u64,
    pub node: u64,
    pub outcome: Outcome,
    /// The answer's body (empty when none came).
    pub body: String,
}

/// A crashed follower's return: how far behind the leader it was and how it caught up.
#[derive(Clone, Debug, Serialize)]
pub struct CatchUp {
    /// Its restart.
    pub at_ms: u64,
    pub node: u64,
    /// Log entries the leader applied while it was down.
    pub behind: u64,
    /// From the restart until it had applied the leader's index at the restart; `None`: not
    /// within the wait.
    pub took_ms: Option<u64>,
    /// `raftgate_raft_snapshots_installed_total` of the restarted process after catching up.
    pub snapshots_installed: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct History {
    pub ops: Vec<Op>,
    pub down: Vec<Down>,
    pub samples: Vec<Sample>,
    pub faults: Vec<Fault>,
    pub failovers: Vec<Failover>,
    pub windows: Vec<Window>,
    pub member_changes: Vec<MemberChange>,
    pub member_views: Vec<MemberView>,
    pub probes: Vec<Probe>,
    pub catch_ups: Vec<CatchUp>,
    /// Proxied requests a scenario sent itself on routes of its own (not the workload's): only
    /// that scenario's checks judge them.
    pub scenario_ops: Vec<Op>,
}
