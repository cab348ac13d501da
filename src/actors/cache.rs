//! The cache actor: owns what leaves the response cache. On every applied cluster state it
//! applies the purges committed since the last one it handled (from the state's window of
//! recent purges, so a skipped intermediate state loses none; a node that fell further behind
//! than the window clears everything), drops the entries of routes that changed or went away,
//! then announces the applied index it covers: what a purge call waits on (read-your-writes).
//!
//! The request path never messages it: proxy workers read and fill the cache themselves.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use raftgate_cluster::spec::Route;
use raftgate_cluster::{ClusterState, OrdMap};
use tokio::sync::watch;

use crate::cache::ResponseCache;

/// A new cluster state was applied on this node.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConfigApplied {
    pub state: Arc<ClusterState>,
}

pub struct CacheActor {
    cache: Arc<ResponseCache>,
    /// The routes of the last state handled, to see which changed.
    routes: OrdMap<String, Arc<Route>>,
    /// Every purge at or below this log index has been applied (or could not concern
    /// this node's cache: it was empty then).
    purged_through: u64,
    /// The last applied index handled.
    published: watch::Sender<u64>,
}

impl Actor for CacheActor {
    type Context = Context<Self>;
}

impl Handler<ConfigApplied> for CacheActor {
    type Result = ();

    fn handle(&mut self, msg: ConfigApplied, _: &mut Context<Self>) {
        let state = msg.state;
        if !self.routes.ptr_eq(&state.routes) {
            self.cache
                .drop_routes(stale_routes(&self.routes, &state.routes));
            self.routes = state.routes.clone();
        }
        if state.purges_forgotten > self.purged_through {
            tracing::warn!(
                handled = self.purged_through,
                forgotten = state.purges_forgotten,
                "missed cache purges (more than the state keeps): clearing the cache"
            );
            self.cache.clear();
        } else {
            for (index, purge) in state.purges.range(self.purged_through + 1..) {
                let started = Instant::now();
                self.cache.purge(purge);
                tracing::debug!(
                    index,
                    %purge,
                    micros = started.elapsed().as_micros() as u64,
                    "cache purged"
                );
            }
        }
        self.purged_through = self.purged_through.max(state.applied);
        self.published.send_replace(state.applied);
    }
}

/// Routes of `old` that `new` changed (name → new version) or deleted (name → `None`).
fn stale_routes(
    old: &OrdMap<String, Arc<Route>>,
    new: &OrdMap<String, Arc<Route>>,
) -> HashMap<String, Option<u64>> {
    old.iter()
        .filter(|(_, r)| r.cache.is_some())
        .filter_map(|(name, r)| match new.get(name) {
            Some(n) if n.version == r.version => None,
            Some(n) => Some((name.clone(), Some(n.version))),
            None => Some((name.clone(), None)),
        })
        .collect()
}

/// What the rest of the node holds: the cache itself and the applied index its purges cover.
#[derive(Clone)]
pub struct CacheHandle {
    pub cache: Arc<ResponseCache>,
    published: watch::Receiver<u64>,
}

impl CacheHandle {
    /// Waits until every purge up to `index` has taken effect here; false at the deadline or
    /// when the actor stopped.
    pub async fn wait_published(&self, index: u64, deadline: Instant) -> bool {
        let mut rx = self.published.clone();
        let waited = tokio::time::timeout_at(deadline.into(), rx.wait_for(|i| *i >= index)).await;
        matches!(waited, Ok(Ok(_)))
    }
}

/// Starts the actor on the current arbiter, fed by the node's applied states. The cache is
/// empty at start, so purges already applied then concern nothing here.
pub fn start(
    mut states: watch::Receiver<Arc<ClusterState>>,
    cache: Arc<ResponseCache>,
) -> CacheHandle {
    let first = states.borrow().clone();
    let (published, published_rx) = watch::channel(0);
    let addr = CacheActor {
        cache: cache.clone(),
        routes: first.routes.clone(),
        purged_through: first.applied,
        published,
    }
    .start();
    states.mark_changed();
    super::feed(states, addr, |state| ConfigApplied { state });
    CacheHandle {
        cache,
        published: published_rx,
    }
}

#[cfg(test)]
mod tests {
    use raftgate_cluster::spec::CacheSpec;

    use super::*;

    fn routes(list: &[(&str, u64, bool)]) -> OrdMap<String, Arc<Route>> {
        list.iter()
            .map(|(name, version, cached)| {
                let mut r = Route::new(*name, "s", &["/"]);
                r.version = *version;
                r.cache = cached.then(|| CacheSpec {
                    ttl_s: 60,
                    vary: vec![],
                });
                (name.to_string(), Arc::new(r))
            })
            .collect()
    }

    #[test]
    fn changed_and_deleted_cached_routes_are_stale() {
        let old = routes(&[
            ("a", 1, true),
            ("b", 2, true),
            ("c", 3, true),
            ("d", 4, false),
        ]);
        let new = routes(&[("a", 1, true), ("b", 5, false), ("d", 6, true)]);
        let stale = stale_routes(&old, &new);
        assert_eq!(
            stale,
            HashMap::from([("b".into(), Some(5)), ("c".into(), None)])
        );
    }
}
