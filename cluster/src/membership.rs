//! Membership changes (`POST /cluster/members`, `DELETE /cluster/members/{id}`): what a change
//! may do given the current membership, decided without IO, and its errors and answer. The
//! leader runs them ([`crate::node`]); followers forward them like writes.

use openraft::{BasicNode, Membership};
use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// What a membership call did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberChange {
    pub id: NodeId,
    pub addr: String,
    /// Whether the node votes now (false for a removed node).
    pub voter: bool,
    /// A voter was asked for, but the node had not caught up within the call's wait: it is a
    /// learner and the leader promotes it in the background once it has caught up.
    pub promotion_pending: bool,
    /// The log index of the last membership entry the call committed (or the current one
    /// when there was nothing to do).
    pub index: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MembershipError {
    #[error("node {id} is already a member (at {addr}, {role})", role = if *voter { "voter" } else { "learner" })]
    Exists {
        id: NodeId,
        addr: String,
        voter: bool,
    },
    #[error("{addr} is already the address of node {id}")]
    AddrTaken { addr: String, id: NodeId },
    #[error("node {id} is not a member of the cluster")]
    NotMember { id: NodeId },
    #[error("node {id} is the last voter; a cluster cannot lose its last voter")]
    LastVoter { id: NodeId },
    #[error("another membership change is still in progress; try again shortly")]
    InProgress,
}

/// How to carry out an add.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddPlan {
    /// A new node: add it as a learner (then promote it when `voter`).
    AddLearner,
    /// Already a learner at this address and now wanted as a voter: promote it. This is also
    /// how a call that answered "promotion pending" is retried.
    Promote,
}

/// How to carry out a removal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemovePlan {
    Voter,
    Learner,
}

pub fn is_voter(m: &Membership<NodeId, BasicNode>, id: NodeId) -> bool {
    m.voter_ids().any(|v| v == id)
}

/// Checks an add against the current membership: a known id is a conflict unless it is the
/// promotion of a learner at the same address; an address may belong to one node only.
pub fn plan_add(
    m: &Membership<NodeId, BasicNode>,
    id: NodeId,
    addr: &str,
    voter: bool,
) -> Result<AddPlan, MembershipError> {
    if let Some(node) = m.get_node(&id) {
        let is_voter = is_voter(m, id);
        if node.addr == addr && voter && !is_voter {
            return Ok(AddPlan::Promote);
        }
        return Err(MembershipError::Exists {
            id,
            addr: node.addr.clone(),
            voter: is_voter,
        });
    }
    if let Some((other, _)) = m.nodes().find(|(_, n)| n.addr == addr) {
        return Err(MembershipError::AddrTaken {
            addr: addr.to_string(),
            id: *other,
        });
    }
    Ok(AddPlan::AddLearner)
}

/// Checks a removal against the current membership.
pub fn plan_remove(
    m: &Membership<NodeId, BasicNode>,
    id: NodeId,
) -> Result<RemovePlan, MembershipError> {
    if m.get_node(&id).is_none() {
        return Err(MembershipError::NotMember { id });
    }
    if !is_voter(m, id) {
        return Ok(RemovePlan::Learner);
    }
    if m.voter_ids().all(|v| v == id) {
        return Err(MembershipError::LastVoter { id });
    }
    Ok(RemovePlan::Voter)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// Voters 1 and 2, learner 3.
    fn membership() -> Membership<NodeId, BasicNode> {
        let nodes: BTreeMap<NodeId, BasicNode> = [(1, "a:1"), (2, "b:1"), (3, "c:1")]
            .into_iter()
            .map(|(id, addr)| (id, BasicNode::new(addr)))
            .collect();
        Membership::new(vec![BTreeSet::from([1, 2])], nodes)
    }

    #[test]
    fn a_new_id_at_a_new_address_is_added_as_a_learner() {
        assert_eq!(
            plan_add(&membership(), 4, "d:1", true),
            Ok(AddPlan::AddLearner)
        );
        assert_eq!(
            plan_add(&membership(), 4, "d:1", false),
            Ok(AddPlan::AddLearner)
        );
    }

    #[test]
    fn a_known_id_conflicts_unless_it_promotes_a_learner_at_the_same_address() {
        assert_eq!(
            plan_add(&membership(), 3, "c:1", true),
            Ok(AddPlan::Promote)
        );
        assert!(matches!(
            plan_add(&membership(), 3, "c:1", false),
            Err(MembershipError::Exists { voter: false, .. })
        ));
        assert!(matches!(
            plan_add(&membership(), 3, "x:1", true),
            Err(MembershipError::Exists { .. })
        ));
        assert!(matches!(
            plan_add(&membership(), 1, "a:1", true),
            Err(MembershipError::Exists { voter: true, .. })
        ));
    }

    #[test]
    fn an_address_belongs_to_one_node() {
        assert_eq!(
            plan_add(&membership(), 9, "b:1", true),
            Err(MembershipError::AddrTaken {
                addr: "b:1".into(),
                id: 2
            })
        );
    }

    #[test]
    fn removals_know_voters_from_learners_and_keep_the_last_voter() {
        let m = membership();
        assert_eq!(plan_remove(&m, 1), Ok(RemovePlan::Voter));
        assert_eq!(plan_remove(&m, 3), Ok(RemovePlan::Learner));
        assert_eq!(
            plan_remove(&m, 7),
            Err(MembershipError::NotMember { id: 7 })
        );
        let single = Membership::new(
            vec![BTreeSet::from([1])],
            BTreeMap::from([(1, BasicNode::new("a:1"))]),
        );
        assert_eq!(
            plan_remove(&single, 1),
            Err(MembershipError::LastVoter { id: 1 })
        );
    }
}
