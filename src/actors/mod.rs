//! The node's actors: each owns one concern, changes it on messages, and publishes snapshots that
//! the request path reads without locks or mailbox round trips.

pub mod auth;
pub mod balancer;
pub mod cache;
pub mod certificates;
pub mod limiter;
pub mod ratelimit;
pub mod router;

use std::sync::Arc;

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler, Message};
use actix_rt::task::JoinHandle;
use raftgate_cluster::ClusterState;
use tokio::sync::watch;

/// Feeds `addr` every state `states` has not shown yet, as `message(state)` (call
/// `mark_changed` first to include the current one). When states arrive faster than the actor
/// handles them, the intermediate ones are skipped. Ends when either side is gone.
pub fn feed<A, M>(
    mut states: watch::Receiver<Arc<ClusterState>>,
    addr: Addr<A>,
    message: fn(Arc<ClusterState>) -> M,
) -> JoinHandle<()>
where
    A: Actor + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: Message + Send + 'static,
    M::Result: Send,
{
    actix_rt::spawn(async move {
        while states.changed().await.is_ok() {
            let state = states.borrow_and_update().clone();
            if addr.send(message(state)).await.is_err() {
                return;
            }
        }
    })
}
