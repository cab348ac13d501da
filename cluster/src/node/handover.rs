//! Leadership hand-over when a leader shuts down gracefully.
//!
//! openraft 0.9 has no leadership transfer (`trigger().transfer_leader()` came in 0.10). Left
//! alone, the followers of a leader that stops elect a new one only after the leader lease
//! plus an election timeout (`election_timeout_max` + [min, max): 0.75–1 s with the defaults),
//! because every voter refuses votes while the lease of the last heartbeat it saw runs.
//!
//! So the leader picks its most caught-up voter, waits (briefly) until that voter has its
//! whole log, and sends it [`RpcRequest::TakeOver`]. The successor campaigns at once; the old
//! leader, still running, grants the vote (its own lease counts from when it was elected, and
//! the successor's log is as long as its own) and steps down. With 3 voters that is a quorum,
//! so a new leader is in place within a round trip; with 5, the successor also needs a vote
//! from a follower whose lease has expired, and it keeps campaigning until it gets one — still
//! sooner than an election timeout. Only then does the old leader stop Raft.
//!
//! Meanwhile the old leader appends nothing: writes that reach it wait for the successor and
//! are forwarded there (or, if the hand-over fails, are written here once it has given up).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::ClusterNode;
use crate::rpc::{RpcRequest, RpcResponse};
use crate::types::NodeId;

/// How long the old leader waits for its successor to hold its whole log.
const CATCH_UP_WAIT: Duration = Duration::from_secs(1);

impl ClusterNode {
    /// The first step of a graceful stop, taken while the proxy drains: the node stops
    /// campaigning and, when it leads, hands leadership over at once (the drain may last
    /// seconds). It still follows, and still forwards writes, until
    /// [`ClusterNode::shutdown_gracefully`].
    pub async fn step_down(&self) {
        self.inner.contact.leaving();
        self.hand_over().await;
    }

    /// When this node leads: hands leadership to a caught-up voter and waits (bounded) until
    /// it has stepped down. Does nothing on a follower or a single-voter cluster.
    pub(super) async fn hand_over(&self) {
        let me = self.id();
        if self.leader() != Some(me) {
            return;
        }
        // New writes wait meanwhile: a successor whose log is shorter than ours would be
        // refused our vote, and under a steady stream of writes it would never catch up.
        self.inner.handing_over.store(true, Ordering::Release);
        self.hand_over_paused().await;
        self.inner.handing_over.store(false, Ordering::Release);
    }

    async fn hand_over_paused(&self) {
        let me = self.id();
        let config = self.raft().config().clone();
        let Some(successor) = self.pick_successor().await else {
            return;
        };
        let Some(addr) = self.addr_of(successor) else {
            return;
        };
        let started = Instant::now();
        let peer = self.inner.network.peer(&addr);
        match peer
            .call(&RpcRequest::TakeOver { from: me }, Duration::from_secs(1))
            .await
        {
            Ok(RpcResponse::TakingOver) => {}
            other => {
                tracing::warn!(successor, answer = ?other.map(|_| ()), "leadership hand-over refused");
                return;
            }
        }
        // The successor may need the other voters' leases to run out (5 voters and more).
        let deadline = started + Duration::from_millis(config.election_timeout_max * 3);
        let mut metrics = self.raft().metrics();
        let stepped_down = tokio::time::timeout_at(
            deadline.into(),
            metrics.wait_for(|m| m.current_leader.is_some_and(|l| l != me)),
        )
        .await;
        match stepped_down {
            Ok(Ok(m)) => tracing::info!(
                leader = m.current_leader,
                took_ms = started.elapsed().as_millis() as u64,
                "handed leadership over"
            ),
            _ => tracing::warn!(
                successor,
                "no new leader in time; the followers elect one after their election timeout"
            ),
        }
    }

    /// The voter with the longest replicated log, once it holds all of this leader's log (or
    /// after [`CATCH_UP_WAIT`], whatever it has).
    async fn pick_successor(&self) -> Option<NodeId> {
        let me = self.id();
        let membership = self.membership();
        let voters: Vec<NodeId> = membership.voter_ids().filter(|v| *v != me).collect();
        let matched = |m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>, id: NodeId| {
            m.replication
                .as_ref()
                .and_then(|r| r.get(&id).cloned())
                .flatten()
                .map(|l| l.index)
        };
        let best = {
            let m = self.raft().metrics().borrow().clone();
            voters.iter().copied().max_by_key(|v| matched(&m, *v))?
        };
        let mut rx = self.raft().metrics();
        let _ = tokio::time::timeout(
            CATCH_UP_WAIT,
            rx.wait_for(|m| matched(m, best) >= m.last_log_index),
        )
        .await;
        Some(best)
    }

    /// The successor's side of [`RpcRequest::TakeOver`]: campaign now, and again while no
    /// leader but `from` is known (votes are refused until the old leader's lease runs out).
    pub(super) fn campaign(&self, from: NodeId) {
        let node = self.clone();
        tokio::spawn(async move {
            let config = node.raft().config().clone();
            let deadline = Instant::now() + Duration::from_millis(config.election_timeout_max * 3);
            let retry = Duration::from_millis(config.heartbeat_interval * 3);
            while Instant::now() < deadline {
                if node.leader().is_some_and(|l| l != from) {
                    return;
                }
                if node.raft().trigger().elect().await.is_err() {
                    return;
                }
                let mut metrics = node.raft().metrics();
                let _ = tokio::time::timeout(
                    retry,
                    metrics.wait_for(|m| m.current_leader.is_some_and(|l| l != from)),
                )
                .await;
            }
        });
    }
}
