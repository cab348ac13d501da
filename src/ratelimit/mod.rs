//! Cluster-wide rate limits, enforced locally: every node keeps a token bucket per (route,
//! subject) sized to its fair share of the route's limit, `requests / live nodes`, where the
//! live nodes are the members this node can reach (itself included). The rate-limit actor
//! (`actors::ratelimit`) publishes the live count and sweeps idle buckets; the request path
//! takes tokens here directly: a lock-free load of the route index, then one short lock on
//! one shard of the route's buckets, never held across an `.await`.

pub mod bucket;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use raftgate_cluster::spec::{RateLimit, Route};

pub use bucket::Verdict;
use bucket::{Bucket, Limit};

/// Whom a bucket counts for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    Consumer(Arc<str>),
    Ip(IpAddr),
    /// `by: route`: one bucket for everyone.
    Route,
}

/// Buckets per shard at most: 2^18 per route in all. Past that, a new subject evicts the
/// least recently used of a few sampled buckets (that subject starts from a full bucket again
/// if it comes back). An idle bucket goes anyway once it has refilled.
const SHARDS: usize = 16;
const MAX_PER_SHARD: usize = 1 << 14;
const EVICTION_SAMPLE: usize = 8;

/// The buckets of one route's limit. Replaced (all buckets reset) when the limit changes.
struct RouteBuckets {
    spec: RateLimit,
    /// The route's version the buckets were made for: a request still holding an older route
    /// never resets them.
    version: u64,
    limit: Limit,
    hasher: std::collections::hash_map::RandomState,
    shards: Box<[Mutex<HashMap<Subject, Bucket>>]>,
}

impl RouteBuckets {
    fn new(route: &Route, spec: &RateLimit) -> RouteBuckets {
        RouteBuckets {
            spec: spec.clone(),
            version: route.version,
            limit: Limit {
                requests: spec.requests,
                period_us: spec.per.seconds() * 1_000_000,
            },
            hasher: Default::default(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, subject: &Subject) -> &Mutex<HashMap<Subject, Bucket>> {
        &self.shards[self.hasher.hash_one(subject) as usize % SHARDS]
    }
}

/// What the proxy and the rate-limit actor share: the live node count and every bucket.
pub struct RateLimits {
    epoch: Instant,
    /// Live nodes, this one included: published by the actor, read by every request.
    live: AtomicU64,
    /// By route name. Copied on write: a route's entry is added or replaced on the first
    /// request after its limit changed, and dropped by the sweep once the route is gone.
    routes: ArcSwap<HashMap<String, Arc<RouteBuckets>>>,
}

impl RateLimits {
    pub fn new(live: u64) -> RateLimits {
        RateLimits {
            epoch: Instant::now(),
            live: AtomicU64::new(live.max(1)),
            routes: ArcSwap::default(),
        }
    }

    pub fn live(&self) -> u64 {
        self.live.load(Ordering::Relaxed)
    }

    pub fn set_live(&self, live: u64) {
        self.live.store(live.max(1), Ordering::Relaxed);
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Takes a token for `subject` from `route`'s limit `spec` (the route's `rate_limit`).
    pub fn check(&self, route: &Route, spec: &RateLimit, subject: Subject) -> Verdict {
        let buckets = self.buckets_for(route, spec);
        let (live, now) = (self.live(), self.now_us());
        let mut shard = buckets
            .shard(&subject)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if shard.len() >= MAX_PER_SHARD && !shard.contains_key(&subject) {
            evict_one(&mut shard);
        }
        shard
            .entry(subject)
            .or_insert_with(|| Bucket::full(buckets.limit, live, now))
            .take(buckets.limit, live, now)
    }

    fn buckets_for(&self, route: &Route, spec: &RateLimit) -> Arc<RouteBuckets> {
        if let Some(b) = self.routes.load().get(&route.name) {
            if b.spec == *spec || b.version >= route.version {
                return Arc::clone(b);
            }
        }
        // New or changed (rare): copy the index with this route's fresh buckets. A racing
        // request for the same route that got there first wins, so both share its buckets.
        let mut made = None;
        self.routes.rcu(|routes| {
            let mut routes = HashMap::clone(routes);
            match routes.get(&route.name) {
                Some(b) if b.spec == *spec || b.version >= route.version => {
                    made = Some(Arc::clone(b));
                }
                _ => {
                    let b = Arc::new(RouteBuckets::new(route, spec));
                    made = Some(Arc::clone(&b));
                    routes.insert(route.name.clone(), b);
                }
            }
            routes
        });
        made.expect("rcu ran its closure")
    }

    /// Forgets the buckets that have refilled completely (no different from a new one) and
    /// the routes for which `current` no longer gives the same limit. Returns the buckets kept.
    pub fn sweep(&self, current: impl Fn(&str) -> Option<RateLimit>) -> usize {
        let stale: Vec<String> = self
            .routes
            .load()
            .iter()
            .filter(|(name, b)| current(name).as_ref() != Some(&b.spec))
            .map(|(name, _)| name.clone())
            .collect();
        if !stale.is_empty() {
            self.routes.rcu(|routes| {
                let mut routes = HashMap::clone(routes);
                for name in &stale {
                    routes.remove(name);
                }
                routes
            });
        }
        let (live, now) = (self.live(), self.now_us());
        let mut kept = 0;
        for buckets in self.routes.load().values() {
            for shard in buckets.shards.iter() {
                let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
                shard.retain(|_, b| !b.is_full(buckets.limit, live, now));
                kept += shard.len();
            }
        }
        kept
    }
}

/// Drops the least recently used of a few buckets of a full shard.
fn evict_one(shard: &mut HashMap<Subject, Bucket>) {
    let oldest = shard
        .iter()
        .take(EVICTION_SAMPLE)
        .min_by_key(|(_, b)| b.last_us())
        .map(|(s, _)| s.clone());
    if let Some(s) = oldest {
        shard.remove(&s);
    }
}

#[cfg(test)]
mod tests {
    use raftgate_cluster::spec::{RateLimitBy, RateLimitPer};

    use super::*;

    fn route(version: u64, requests: u64) -> (Route, RateLimit) {
        let mut r = Route::new("r", "s", &["/"]);
        r.version = version;
        let spec = RateLimit {
            requests,
            per: RateLimitPer::Hour,
            by: Some(RateLimitBy::Ip),
        };
        r.rate_limit = Some(spec.clone());
        (r, spec)
    }

    fn admitted(limits: &RateLimits, route: &Route, spec: &RateLimit, subject: Subject) -> u64 {
        let mut n = 0;
        while limits.check(route, spec, subject.clone()).admitted {
            n += 1;
        }
        n
    }

    #[test]
    fn subjects_have_their_own_buckets_and_a_changed_limit_resets_them() {
        let limits = RateLimits::new(2);
        let (r, spec) = route(1, 10);
        let alice = Subject::Consumer("alice".into());
        assert_eq!(admitted(&limits, &r, &spec, alice.clone()), 5);
        assert_eq!(admitted(&limits, &r, &spec, Subject::Route), 5);
        assert_eq!(admitted(&limits, &r, &spec, alice.clone()), 0);
        // A request that still holds the old route does not reset the new buckets.
        let (r2, spec2) = route(2, 20);
        assert_eq!(admitted(&limits, &r2, &spec2, alice.clone()), 10);
        assert_eq!(admitted(&limits, &r, &spec, alice.clone()), 0);
        // The same limit in a later version keeps its buckets.
        let (r3, spec3) = route(3, 20);
        assert_eq!(admitted(&limits, &r3, &spec3, alice), 0);
    }

    #[test]
    fn the_sweep_forgets_full_buckets_and_gone_routes() {
        let limits = RateLimits::new(1);
        let (r, spec) = route(1, 10);
        let ip = |n: u8| Subject::Ip(IpAddr::from([10, 0, 0, n]));
        limits.check(&r, &spec, ip(1));
        limits.check(&r, &spec, ip(2));
        assert_eq!(limits.sweep(|_| Some(spec.clone())), 2);
        assert_eq!(limits.sweep(|_| None), 0);
        assert!(limits.routes.load().is_empty());
    }

    #[test]
    fn a_full_shard_evicts_rather_than_grows() {
        let limits = RateLimits::new(1);
        let (r, spec) = route(1, 10);
        for i in 0..(MAX_PER_SHARD * SHARDS * 2) as u32 {
            limits.check(&r, &spec, Subject::Ip(IpAddr::from(i.to_be_bytes())));
        }
        let routes = limits.routes.load();
        for shard in routes["r"].shards.iter() {
            assert!(shard.lock().unwrap().len() <= MAX_PER_SHARD);
        }
    }
}
