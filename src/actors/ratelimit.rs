//! The rate-limit actor: owns this node's count of live nodes, the divisor of every route's
//! rate limit ([`RateLimits`]). A probe task asks [`ClusterNode::status`] every
//! [`PROBE_EVERY`] which members answer a ping; the actor counts the live ones (see
//! [`live_nodes`]) and publishes the count through an atomic that the request path reads, so
//! every bucket re-shares on its next request. It also sweeps the buckets: idle ones that have
//! refilled, and those of routes whose limit is gone or changed.
//!
//! The request path never messages this actor: it takes tokens in [`RateLimits`] itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix::WeakAddr;
use actix_rt::task::JoinHandle;
use arc_swap::ArcSwap;
use raftgate_cluster::node::MemberStatus;
use raftgate_cluster::{ClusterNode, NodeId};

use crate::ratelimit::RateLimits;
use crate::routing::RouteTable;

/// How often the members are probed.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);
/// A peer stops counting as live after this many failed probes in a row: one ping lost on a
/// loaded machine does not hand the other nodes a larger share. A peer that answers counts
/// again at once. Both err towards admitting less, never more.
pub const MISSES_TO_DROP: u32 = 2;
/// How often idle buckets are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// One round of probes: every member of the cluster, voter or learner, and whether it
/// answered.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Probed {
    pub members: Vec<MemberStatus>,
}

/// Stops the actor and its probe task.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

pub struct RateLimiter {
    me: NodeId,
    limits: Arc<RateLimits>,
    /// The router's published table: which routes still have which limit (for the sweep).
    table: Arc<ArcSwap<RouteTable>>,
    /// Failed probes in a row, per member.
    misses: HashMap<NodeId, u32>,
}

impl RateLimiter {
    fn sweep(&mut self) {
        let table = self.table.load();
        let kept = self
            .limits
            .sweep(|name| table.get(name)?.route().rate_limit.clone());
        tracing::trace!(buckets = kept, "rate-limit buckets swept");
    }
}

impl Actor for RateLimiter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(SWEEP_EVERY, |act, _| act.sweep());
    }
}

impl Handler<Probed> for RateLimiter {
    type Result = ();

    fn handle(&mut self, msg: Probed, _: &mut Context<Self>) {
        self.misses
            .retain(|id, _| msg.members.iter().any(|m| m.id == *id));
        for m in &msg.members {
            let misses = self.misses.entry(m.id).or_default();
            *misses = if m.reachable || m.id == self.me {
                0
            } else {
                misses.saturating_add(1)
            };
        }
        let live = live_nodes(self.me, &msg.members, |id| {
            self.misses.get(&id).is_some_and(|m| *m < MISSES_TO_DROP)
        });
        let before = self.limits.live();
        if live != before {
            self.limits.set_live(live);
            tracing::info!(live, before, "live nodes changed: rate limits re-shared");
        }
    }
}

impl Handler<Stop> for RateLimiter {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// The nodes a limit is shared among, as this node sees them: itself (a member or not yet) and
/// the members it reaches (`up`), voters and learners alike, since every one serves traffic.
///
/// Unless it reaches no majority of the voters: then it cannot tell peers that crashed from
/// peers still serving on the other side of a partition, and counts every member. So in a
/// partition the majority side shares the whole limit among itself, and each node cut off from
/// it admits `limit / members`: the cluster admits at most the limit plus the cut-off nodes'
/// shares.
pub fn live_nodes(me: NodeId, members: &[MemberStatus], up: impl Fn(NodeId) -> bool) -> u64 {
    let up = |m: &MemberStatus| m.id == me || up(m.id);
    let count = |f: &dyn Fn(&MemberStatus) -> bool| members.iter().filter(|m| f(m)).count();
    let outsider = u64::from(!members.iter().any(|m| m.id == me));
    let voters = count(&|m| m.voter);
    let reached_voters = count(&|m| m.voter && up(m));
    if voters == 0 || reached_voters * 2 > voters {
        count(&up) as u64 + outsider
    } else {
        members.len() as u64 + outsider
    }
}

/// Probes the members every [`PROBE_EVERY`] (the first round at once) and reports each round.
/// Ends when aborted or when the actor is gone.
async fn probe_loop(me: WeakAddr<RateLimiter>, node: ClusterNode) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let status = node.status().await;
        let Some(addr) = me.upgrade() else {
            return;
        };
        addr.do_send(Probed {
            members: status.members,
        });
    }
}

/// What the rest of the node holds.
#[derive(Clone)]
pub struct RateLimiterHandle {
    /// The live count and the buckets: what the proxy's `rate_limit` phase uses.
    pub limits: Arc<RateLimits>,
    addr: Addr<RateLimiter>,
    probe: Arc<JoinHandle<()>>,
}

impl RateLimiterHandle {
    /// The live nodes every limit is shared among, this one included.
    pub fn live(&self) -> u64 {
        self.limits.live()
    }

    /// Stops the actor and its probes.
    pub fn stop(&self) {
        self.probe.abort();
        self.addr.do_send(Stop);
    }
}

/// Starts the actor on the current arbiter. Until the first probe answers, every member of
/// the membership this node knows counts as live (the smallest shares).
pub fn start(node: ClusterNode, table: Arc<ArcSwap<RouteTable>>) -> RateLimiterHandle {
    let members = {
        let metrics = node.raft().metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let me = membership.get_node(&node.id()).is_some();
        membership.nodes().count() as u64 + u64::from(!me)
    };
    let limits = Arc::new(RateLimits::new(members));
    let addr = RateLimiter {
        me: node.id(),
        limits: Arc::clone(&limits),
        table,
        misses: HashMap::new(),
    }
    .start();
    let probe = actix_rt::spawn(probe_loop(addr.downgrade(), node));
    RateLimiterHandle {
        limits,
        addr,
        probe: Arc::new(probe),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(voters: &[NodeId], learners: &[NodeId]) -> Vec<MemberStatus> {
        let m = |id: &NodeId, voter| MemberStatus {
            id: *id,
            addr: String::new(),
            voter,
            reachable: false,
        };
        voters
            .iter()
            .map(|id| m(id, true))
            .chain(learners.iter().map(|id| m(id, false)))
            .collect()
    }

    #[test]
    fn a_node_with_a_majority_shares_among_what_it_reaches() {
        let three = members(&[1, 2, 3], &[]);
        assert_eq!(live_nodes(1, &three, |_| true), 3);
        // Node 3 is down or cut off: 1 and 2 are a majority and share by two.
        assert_eq!(live_nodes(1, &three, |id| id != 3), 2);
        // Learners serve traffic too.
        let with_learner = members(&[1, 2, 3], &[4]);
        assert_eq!(live_nodes(2, &with_learner, |_| true), 4);
        assert_eq!(live_nodes(4, &with_learner, |id| id != 1), 3);
        // A node the membership does not list yet counts itself.
        assert_eq!(live_nodes(9, &three, |_| true), 4);
        // Alone, and the only voter.
        assert_eq!(live_nodes(1, &members(&[1], &[]), |_| false), 1);
        assert_eq!(live_nodes(1, &[], |_| false), 1);
    }

    #[test]
    fn a_node_without_a_majority_keeps_counting_every_member() {
        let three = members(&[1, 2, 3], &[]);
        assert_eq!(live_nodes(3, &three, |_| false), 3);
        let four = members(&[1, 2, 3, 4], &[5]);
        // 2 of 4 voters is no majority.
        assert_eq!(live_nodes(1, &four, |id| id == 2), 5);
        assert_eq!(live_nodes(1, &four, |id| id == 2 || id == 3), 3);
    }
}
