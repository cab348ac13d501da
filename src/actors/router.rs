//! The router actor: owns the compiled route table. On every applied cluster state it recompiles
//! (when the configuration revision moved) and publishes the table through an `ArcSwap`, then
//! announces the applied index it covers, which is what read-your-writes waits on. It is fed
//! the states the balancer actor has reconciled, and hands each compiled route its service's
//! runtime from the balancer's health table.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use arc_swap::ArcSwap;
use raftgate_cluster::ClusterState;
use tokio::sync::watch;

use crate::balancing::HealthTable;
use crate::routing::RouteTable;

/// A new cluster state was applied on this node.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConfigApplied {
    /// The state as published by the state machine; every field is shared, nothing is copied.
    pub state: Arc<ClusterState>,
}

pub struct Router {
    table: Arc<ArcSwap<RouteTable>>,
    /// The balancer's published runtimes, reconciled with at least the state being compiled.
    health: Arc<ArcSwap<HealthTable>>,
    /// The last applied index the published table reflects.
    published: watch::Sender<u64>,
    compiled_revision: Option<u64>,
}

impl Actor for Router {
    type Context = Context<Self>;
}

impl Handler<ConfigApplied> for Router {
    type Result = ();

    fn handle(&mut self, msg: ConfigApplied, _: &mut Context<Self>) {
        let state = msg.state;
        if self.compiled_revision != Some(state.revision) {
            let started = Instant::now();
            let table = RouteTable::compile(
                state.routes.values(),
                &state.services,
                &self.health.load(),
                state.revision,
            );
            self.table.store(Arc::new(table));
            self.compiled_revision = Some(state.revision);
            tracing::debug!(
                revision = state.revision,
                routes = state.routes.len(),
                micros = started.elapsed().as_micros() as u64,
                "route table compiled"
            );
        }
        self.published.send_replace(state.applied);
    }
}

/// What the rest of the node holds: the published table and the index it covers.
#[derive(Clone)]
pub struct RouterHandle {
    pub table: Arc<ArcSwap<RouteTable>>,
    published: watch::Receiver<u64>,
}

impl RouterHandle {
    /// The applied index the current table reflects.
    pub fn published(&self) -> u64 {
        *self.published.borrow()
    }

    /// Waits until the table reflects `index`; false at the deadline or when the router stopped.
    pub async fn wait_published(&self, index: u64, deadline: Instant) -> bool {
        let mut rx = self.published.clone();
        let waited = tokio::time::timeout_at(deadline.into(), rx.wait_for(|i| *i >= index)).await;
        matches!(waited, Ok(Ok(_)))
    }
}

/// Starts the router on the current arbiter, fed by the balancer's reconciled states
/// ([`super::balancer::BalancerHandle::states`]). When states arrive faster than tables
/// compile, the intermediate ones are skipped.
pub fn start(
    mut states: watch::Receiver<Arc<ClusterState>>,
    health: Arc<ArcSwap<HealthTable>>,
) -> RouterHandle {
    let table = Arc::new(ArcSwap::from_pointee(RouteTable::default()));
    let (published, published_rx) = watch::channel(0);
    let router = Router {
        table: table.clone(),
        health,
        published,
        compiled_revision: None,
    };
    let addr = router.start();
    states.mark_changed();
    super::feed(states, addr, |state| ConfigApplied { state });
    RouterHandle {
        table,
        published: published_rx,
    }
}
