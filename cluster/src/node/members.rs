//! Membership changes on the leader: add a node as a learner, promote it once it has caught up,
//! remove a node. Followers forward these calls like writes ([`ClusterNode::on_leader`]).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::raft::ClientWriteResponse;
use openraft::{BasicNode, ChangeMembers, Membership, RaftMetrics};

use super::{ClusterNode, REQUEST_TIMEOUT};
use crate::membership::{self, AddPlan, MemberChange, MembershipError, RemovePlan};
use crate::rpc::{RpcRequest, RpcResponse, WriteError};
use crate::types::{NodeId, TypeConfig};

/// How long a membership call may take, forwarding included: one commit to add the learner,
/// [`PROMOTE_WAIT`], two commits to promote it.
pub const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(25);
/// How long an add with `voter: true` waits for the new node to catch up before it answers
/// "promotion pending" and leaves the promotion to a background task on the leader.
const PROMOTE_WAIT: Duration = Duration::from_secs(8);
/// How long that background task waits for the learner (a big snapshot to install, a slow link).
const PROMOTE_LIMIT: Duration = Duration::from_secs(600);
/// A learner this close to the leader's last log index has caught up: under a steady stream of
/// writes it is never exactly level, and the entries it lacks arrive with the next append.
const CATCH_UP_SLACK: u64 = 64;

type ChangeResult =
    Result<ClientWriteResponse<TypeConfig>, RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>>;

impl ClusterNode {
    /// `POST /cluster/members`: adds `id` at `addr` as a learner and, with `voter`, promotes it
    /// once it has caught up (or answers `promotion_pending` and promotes it in the background).
    pub async fn add_member(
        &self,
        id: NodeId,
        addr: String,
        voter: bool,
    ) -> Result<MemberChange, WriteError> {
        let deadline = Instant::now() + MEMBERSHIP_TIMEOUT;
        let change = self
            .on_leader(
                deadline,
                async || self.add_member_as_leader(id, addr.clone(), voter).await,
                || RpcRequest::AddMember {
                    id,
                    addr: addr.clone(),
                    voter,
                },
                member_answer,
            )
            .await?;
        self.wait_applied(change.index, deadline).await?;
        Ok(change)
    }

    /// `DELETE /cluster/members/{id}`: removes a voter or a learner. Removing the leader works:
    /// it commits the membership without itself, then steps down.
    pub async fn remove_member(&self, id: NodeId) -> Result<MemberChange, WriteError> {
        let deadline = Instant::now() + MEMBERSHIP_TIMEOUT;
        let change = self
            .on_leader(
                deadline,
                async || self.remove_member_as_leader(id).await,
                || RpcRequest::RemoveMember { id },
                member_answer,
            )
            .await?;
        // The removed node itself may never receive the entry that removes it.
        if id != self.id() {
            self.wait_applied(change.index, deadline).await?;
        }
        Ok(change)
    }

    /// The effective membership (the latest appended, committed or not).
    pub(super) fn membership(&self) -> Membership<NodeId, BasicNode> {
        self.raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone()
    }

    fn ensure_leading(&self) -> Result<(), WriteError> {
        match self.leader() {
            Some(l) if l == self.id() => Ok(()),
            other => Err(WriteError::NotLeader { leader: other }),
        }
    }

    pub(super) async fn add_member_as_leader(
        &self,
        id: NodeId,
        addr: String,
        voter: bool,
    ) -> Result<MemberChange, WriteError> {
        self.ensure_leading()?;
        let plan = membership::plan_add(&self.membership(), id, &addr, voter)?;
        let mut index = match plan {
            AddPlan::AddLearner => {
                let add = self.raft().add_learner(id, BasicNode::new(&addr), false);
                committed(tokio::time::timeout(REQUEST_TIMEOUT, add).await)?
            }
            AddPlan::Promote => self.membership_index(),
        };
        tracing::info!(node = id, %addr, voter, "added a learner");
        let mut change = MemberChange {
            id,
            addr,
            voter: false,
            promotion_pending: false,
            index,
        };
        if !voter {
            return Ok(change);
        }
        if self.wait_caught_up(id, Instant::now() + PROMOTE_WAIT).await {
            index = self.promote(id).await?;
            change.voter = true;
            change.index = index;
            return Ok(change);
        }
        tracing::info!(
            node = id,
            "the new node has not caught up yet; it is promoted once it has"
        );
        let node = self.clone();
        tokio::spawn(async move {
            if !node
                .wait_caught_up(id, Instant::now() + PROMOTE_LIMIT)
                .await
            {
                tracing::warn!(
                    node = id,
                    "the learner never caught up (or this node stopped leading): not promoted; \
                     POST it again to retry"
                );
                return;
            }
            if let Err(e) = node.promote(id).await {
                tracing::warn!(node = id, error = %e, "promoting the learner failed; POST it again to retry");
            }
        });
        change.promotion_pending = true;
        Ok(change)
    }

    async fn promote(&self, id: NodeId) -> Result<u64, WriteError> {
        let change = self
            .raft()
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true);
        let index = committed(tokio::time::timeout(REQUEST_TIMEOUT, change).await)?;
        tracing::info!(node = id, "promoted to voter");
        Ok(index)
    }

    pub(super) async fn remove_member_as_leader(
        &self,
        id: NodeId,
    ) -> Result<MemberChange, WriteError> {
        self.ensure_leading()?;
        let m = self.membership();
        let plan = membership::plan_remove(&m, id)?;
        let addr = m.get_node(&id).map(|n| n.addr.clone()).unwrap_or_default();
        let ids = BTreeSet::from([id]);
        let changes = match plan {
            RemovePlan::Voter => ChangeMembers::RemoveVoters(ids),
            RemovePlan::Learner => ChangeMembers::RemoveNodes(ids),
        };
        // `retain = false`: a removed voter leaves the membership instead of staying a learner.
        let change = self.raft().change_membership(changes, false);
        let index = committed(tokio::time::timeout(REQUEST_TIMEOUT, change).await)?;
        tracing::info!(node = id, "removed from the cluster");
        Ok(MemberChange {
            id,
            addr,
            voter: false,
            promotion_pending: false,
            index,
        })
    }

    fn membership_index(&self) -> u64 {
        let m = self.raft().metrics();
        let m = m.borrow();
        m.membership_config.log_id().map(|l| l.index).unwrap_or(0)
    }

    /// Waits until the leader's replication to `id` is within [`CATCH_UP_SLACK`] of its log;
    /// false at the deadline or once this node no longer leads.
    async fn wait_caught_up(&self, id: NodeId, deadline: Instant) -> bool {
        let mut rx = self.raft().metrics();
        let me = self.id();
        let waited = tokio::time::timeout_at(
            deadline.into(),
            rx.wait_for(|m| m.current_leader != Some(me) || caught_up(m, id)),
        )
        .await;
        matches!(waited, Ok(Ok(m)) if caught_up(&m, id))
    }
}

fn caught_up(m: &RaftMetrics<NodeId, BasicNode>, id: NodeId) -> bool {
    let matched = m
        .replication
        .as_ref()
        .and_then(|r| r.get(&id))
        .and_then(|l| l.as_ref())
        .map(|l| l.index);
    match matched {
        Some(matched) => matched + CATCH_UP_SLACK >= m.last_log_index.unwrap_or(0),
        None => false,
    }
}

fn member_answer(r: RpcResponse) -> Option<Result<MemberChange, WriteError>> {
    match r {
        RpcResponse::Member(r) => Some(r),
        _ => None,
    }
}

/// The log index a membership change committed at, or why it did not.
fn committed(r: Result<ChangeResult, tokio::time::error::Elapsed>) -> Result<u64, WriteError> {
    use ChangeMembershipError as C;
    match r {
        Ok(Ok(resp)) => Ok(resp.log_id.index),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            Err(WriteError::NotLeader {
                leader: f.leader_id,
            })
        }
        Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
            Err(match e {
                C::InProgress(_) => MembershipError::InProgress.into(),
                C::LearnerNotFound(l) => MembershipError::NotMember { id: l.node_id }.into(),
                // `plan_remove` refuses this first; only a race with another change gets here.
                C::EmptyMembership(e) => WriteError::Unavailable(e.to_string()),
            })
        }
        Ok(Err(e)) => Err(WriteError::Unavailable(e.to_string())),
        Err(_) => Err(WriteError::Unavailable(
            "no quorum: the membership change was not committed in time; it may still be".into(),
        )),
    }
}
