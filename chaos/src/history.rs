//! The client-side oracle: every operation the workload sent, with its outcome, plus what the
//! nemesis did and what the observers saw. Times are milliseconds since the scenario started.

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

#[derive(Clone, Debug, Default, Serialize)]
pub struct History {
    pub ops: Vec<Op>,
    pub down: Vec<Down>,
    pub samples: Vec<Sample>,
    pub faults: Vec<Fault>,
    pub failovers: Vec<Failover>,
}
