//! The auth supervisor: owns the credential index. On every state the balancer has reconciled
//! it builds an [`AuthIndex`] (re-parsing only the JWT credentials that changed), publishes it
//! through an `ArcSwap`, and only then passes the state on to the router. The router announces
//! the applied index its table covers, which is what an admin write waits on: so when a
//! revoke call returns, the receiving node's request path already refuses the key.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use arc_swap::ArcSwap;
use raftgate_cluster::ClusterState;
use tokio::sync::watch;

use crate::auth::AuthIndex;

/// A reconciled cluster state to index.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConfigApplied {
    pub state: Arc<ClusterState>,
}

pub struct AuthSupervisor {
    index: Arc<ArcSwap<AuthIndex>>,
    /// States go on to the router from here, once indexed.
    indexed: watch::Sender<Arc<ClusterState>>,
}

impl Actor for AuthSupervisor {
    type Context = Context<Self>;
}

impl Handler<ConfigApplied> for AuthSupervisor {
    type Result = ();

    fn handle(&mut self, msg: ConfigApplied, _: &mut Context<Self>) {
        let state = msg.state;
        // Cheap whatever the number of keys: the index shares the state's persistent maps and
        // rebuilds only the JWT verifiers, reusing those whose credential did not change.
        let started = Instant::now();
        let index = AuthIndex::build(state.clone(), &self.index.load());
        self.index.store(Arc::new(index));
        tracing::trace!(
            applied = state.applied,
            micros = started.elapsed().as_micros() as u64,
            "credential index built"
        );
        self.indexed.send_replace(state);
    }
}

/// The published index, and the states that have been indexed (the router's input).
#[derive(Clone)]
pub struct AuthHandle {
    pub index: Arc<ArcSwap<AuthIndex>>,
    indexed: watch::Receiver<Arc<ClusterState>>,
}

impl AuthHandle {
    pub fn states(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.indexed.clone()
    }
}

/// Starts the supervisor on the current arbiter, fed by `states` (the balancer's reconciled
/// ones). When states arrive faster than they are indexed, the intermediate ones are skipped.
pub fn start(mut states: watch::Receiver<Arc<ClusterState>>) -> AuthHandle {
    // The first index is built before anything can read it.
    let first = states.borrow().clone();
    let index = Arc::new(ArcSwap::from_pointee(AuthIndex::build(
        first.clone(),
        &AuthIndex::default(),
    )));
    let (indexed, indexed_rx) = watch::channel(first);
    let addr = AuthSupervisor {
        index: index.clone(),
        indexed,
    }
    .start();
    states.mark_changed();
    super::feed(states, addr, |state| ConfigApplied { state });
    AuthHandle {
        index,
        indexed: indexed_rx,
    }
}
