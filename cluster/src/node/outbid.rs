//! Faster elections after a leader is lost: a follower that refuses a candidate for its shorter
//! log campaigns itself at once, in a term the candidate will grant.
//!
//! openraft 0.9 has no pre-vote, and a voter that refuses a candidate for its log does not take
//! the candidate's term (Raft's §5.1 would). So when the follower with the shorter log times out
//! first, it wins nothing but holds its own vote in term T+1: the follower with the longer log,
//! whose own timer fires later, campaigns in T+1 too, is refused (that vote is taken), and only
//! wins in T+2, an election timeout later. With writes in flight when a leader dies that was the
//! common case, and a failover took `lease + 2 × timeout` (up to 1.5 s with the defaults, 3 s
//! before, and more under load) instead of `lease + timeout`.
//!
//! Here the voter that refused steps in right away: it calls elections until its term passes the
//! candidate's, so its next request outbids the doomed candidacy, which grants it (the voter's log
//! is longer). It does so only when it heard from a leader once but not for a whole lease
//! (`election_timeout_max`), and neither leads nor is stopping: while a leader's heartbeats
//! arrive, it never campaigns. Elections are always safe in Raft; this changes only when one
//! starts.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openraft::raft::{AppendEntriesResponse, VoteRequest, VoteResponse};
use openraft::Vote;

use super::ClusterNode;
use crate::types::NodeId;

/// When this node last accepted a leader's AppendEntries, and whether it is outbidding now.
#[derive(Debug)]
pub(super) struct LeaderContact {
    epoch: Instant,
    /// Milliseconds after `epoch`; 0 = never.
    heard_ms: AtomicU64,
    outbidding: AtomicBool,
    /// Set when the node starts to stop: a leaving node never campaigns (it hands over).
    leaving: AtomicBool,
}

impl Default for LeaderContact {
    fn default() -> Self {
        LeaderContact {
            epoch: Instant::now(),
            heard_ms: AtomicU64::new(0),
            outbidding: AtomicBool::new(false),
            leaving: AtomicBool::new(false),
        }
    }
}

impl LeaderContact {
    /// Records an AppendEntries answer: any but `HigherVote` means the sender is our leader.
    pub(super) fn appended(&self, resp: &AppendEntriesResponse<NodeId>) {
        if !matches!(resp, AppendEntriesResponse::HigherVote(_)) {
            self.heard();
        }
    }

    /// Records a snapshot chunk accepted from a leader: a follower far behind may hear nothing
    /// else from it for as long as the transfer takes.
    pub(super) fn installed(&self, req: &Vote<NodeId>, resp: &Vote<NodeId>) {
        if req == resp {
            self.heard();
        }
    }

    fn heard(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.heard_ms.store(ms.max(1), Ordering::Relaxed);
    }

    pub(super) fn leaving(&self) {
        self.leaving.store(true, Ordering::Relaxed);
    }

    /// A leader was heard from once, but not for `lease`. (A node that never heard one is
    /// starting or was the first leader: it leaves elections to the timers.)
    fn lease_expired(&self, lease: Duration) -> bool {
        let heard = self.heard_ms.load(Ordering::Relaxed);
        heard != 0 && self.epoch.elapsed() > Duration::from_millis(heard) + lease
    }
}

/// A refusal of a candidate whose log is shorter than ours: the candidacy cannot win.
pub(super) fn refused_for_log(req: &VoteRequest<NodeId>, resp: &VoteResponse<NodeId>) -> bool {
    !resp.vote_granted && resp.last_log_id > req.last_log_id
}

impl ClusterNode {
    /// A restarted member of a multi-voter cluster holds its fire until it hears a leader, or
    /// for two leases at most (the whole cluster restarting). Its first election timeout runs
    /// from the moment it starts, often before the leader's replication reaches it again; it
    /// would then campaign in a new term, and once that term reaches the others (a vote it
    /// wins, or the leader seeing it) the cluster holds an election it did not need: one per
    /// restart, several in a rolling restart.
    pub(super) fn hold_fire_after_restart(&self) {
        let voters = (self.raft().metrics().borrow())
            .membership_config
            .membership()
            .voter_ids()
            .count();
        if voters < 2 {
            return;
        }
        self.raft().runtime_config().elect(false);
        let hold = Duration::from_millis(self.raft().config().election_timeout_max * 2);
        let node = self.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + hold;
            while Instant::now() < deadline
                && node.inner.contact.heard_ms.load(Ordering::Relaxed) == 0
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            node.raft().runtime_config().elect(true);
        });
    }

    /// After refusing `req` for its log: campaign until our term is past the candidate's.
    pub(super) fn outbid(&self, req: &VoteRequest<NodeId>) {
        let contact = &self.inner.contact;
        let config = self.raft().config().clone();
        if contact.leaving.load(Ordering::Relaxed)
            || self.leader() == Some(self.id())
            || !contact.lease_expired(Duration::from_millis(config.election_timeout_max))
            || contact.outbidding.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let rival_term = req.vote.leader_id.term;
        let node = self.clone();
        tokio::spawn(async move {
            // Each election raises the term by one; a few suffice (the rival is at most a term
            // or two ahead), the bound keeps a confused node from spinning.
            for _ in 0..4 {
                // Past the rival's term: our request is out (or a newer leader was seen).
                let term = node.raft().metrics().borrow().current_term;
                if term > rival_term {
                    break;
                }
                if node.raft().trigger().elect().await.is_err() {
                    break;
                }
                let mut metrics = node.raft().metrics();
                let _ = tokio::time::timeout(
                    Duration::from_millis(config.heartbeat_interval),
                    metrics.wait_for(|m| m.current_term > term),
                )
                .await;
            }
            node.inner
                .contact
                .outbidding
                .store(false, Ordering::Release);
        });
    }

    /// The election deadline openraft 0.9 loses after a log refusal. Its follower campaigns
    /// `lease + [min, max)` after the last heartbeat, but adds `smaller_log_timeout`
    /// (2 × `election_timeout_max`, 1 s with the defaults) while its `seen_greater_log` flag is
    /// set — and sets that flag whenever one of its vote requests is refused for a longer log,
    /// clearing it only at its own next timer-driven election. So one refusal in any earlier
    /// election delays the next failover, however much later, by a second (bench/RESULTS.md,
    /// "Failover"). Here a voter that has heard nothing from a leader for
    /// `lease + max + [0, max - min)` — later than openraft's own deadline without the
    /// penalty, earlier than with it — calls the election itself, once per silence.
    pub(super) fn watch_elections(&self) {
        let node = self.clone();
        let mut stopped = self.inner.shutdown.subscribe();
        tokio::spawn(async move {
            let config = node.raft().config().clone();
            let tick = Duration::from_millis(config.heartbeat_interval);
            let spread = config.election_timeout_max - config.election_timeout_min;
            let patience =
                |jitter: u64| Duration::from_millis(config.election_timeout_max * 2 + jitter);
            let mut wait = patience(rand::random::<u64>() % spread.max(1));
            // The silence (by when it began) already answered with an election.
            let mut answered = 0;
            loop {
                tokio::select! {
                    _ = stopped.changed() => return,
                    _ = tokio::time::sleep(tick) => {}
                }
                let contact = &node.inner.contact;
                let heard = contact.heard_ms.load(Ordering::Relaxed);
                if heard == 0
                    || heard == answered
                    || contact.leaving.load(Ordering::Relaxed)
                    || contact.outbidding.load(Ordering::Relaxed)
                    || contact.epoch.elapsed() < Duration::from_millis(heard) + wait
                    || node.leader() == Some(node.id())
                    || !node.membership().voter_ids().any(|v| v == node.id())
                {
                    continue;
                }
                answered = heard;
                wait = patience(rand::random::<u64>() % spread.max(1));
                tracing::info!(
                    silent_ms = contact.epoch.elapsed().as_millis() as u64 - heard,
                    "no leader heard for a lease and an election timeout: calling an election"
                );
                if node.raft().trigger().elect().await.is_err() {
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
#[path = "outbid_test.rs"]
mod tests;
