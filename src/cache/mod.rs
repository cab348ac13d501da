//! The response cache's store: answers by [`Key`], bounded by bytes, read by every proxy worker
//! at once (moka: a concurrent map with TinyLFU admission and per-entry expiry), and the
//! single-flight table that makes concurrent misses for one key one upstream request.
//!
//! The request path reads and fills it directly (`proxy/cache.rs`); the cache actor
//! (`actors/cache.rs`) drops what purges and route changes invalidate.

pub mod control;
mod key;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use bytes::Bytes;
use moka::sync::Cache;
use moka::Expiry;
use raftgate_cluster::purge::Purge;
use tokio::sync::Notify;

pub use key::{Key, Request};

use crate::config::CacheLimits;

/// Bytes counted per entry on top of its key, headers and body: moka's node, the `Arc`s, the
/// header vector. An estimate; it keeps many tiny entries from escaping the bound.
const ENTRY_OVERHEAD: usize = 256;

/// What a key holds.
#[derive(Clone, Debug)]
pub enum Entry {
    Response(Arc<Stored>),
    /// The answer came with `Vary`: it lives under [`Key::secondary`] with these headers.
    Varies(Arc<Varies>),
}

/// A stored answer, as the client gets it (hop-by-hop headers already gone).
#[derive(Debug)]
pub struct Stored {
    pub status: StatusCode,
    /// Without `X-Request-Id` and `Age`, which every hit sets for itself.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    pub stored_at: Instant,
    pub ttl: Duration,
    /// The upstream's `Age` when stored.
    pub age: u64,
}

#[derive(Debug)]
pub struct Varies {
    pub names: Vec<HeaderName>,
    pub stored_at: Instant,
    pub ttl: Duration,
}

impl Entry {
    fn ttl(&self) -> Duration {
        match self {
            Entry::Response(s) => s.ttl,
            Entry::Varies(v) => v.ttl,
        }
    }

    fn fresh(&self, now: Instant) -> bool {
        let (at, ttl) = match self {
            Entry::Response(s) => (s.stored_at, s.ttl),
            Entry::Varies(v) => (v.stored_at, v.ttl),
        };
        now.saturating_duration_since(at) < ttl
    }

    fn weight(&self) -> usize {
        match self {
            Entry::Response(s) => {
                s.body.len()
                    + (s.headers.iter())
                        .map(|(n, v)| n.as_str().len() + v.len())
                        .sum::<usize>()
            }
            Entry::Varies(v) => v.names.iter().map(|n| n.as_str().len()).sum(),
        }
    }
}

/// Each entry expires after its own freshness lifetime, replaced or not.
struct PerEntry;

impl Expiry<Key, Entry> for PerEntry {
    fn expire_after_create(&self, _: &Key, value: &Entry, _: Instant) -> Option<Duration> {
        Some(value.ttl())
    }

    fn expire_after_update(
        &self,
        _: &Key,
        value: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl())
    }
}

pub struct ResponseCache {
    entries: Cache<Key, Entry>,
    flights: Arc<Mutex<HashMap<u64, Arc<Flight>>>>,
    /// Moves before every purge takes effect: a fill whose upstream request began before a
    /// purge does not keep its answer (see [`ResponseCache::generation`]).
    generation: AtomicU64,
    max_entry_bytes: usize,
}

impl ResponseCache {
    pub fn new(limits: &CacheLimits) -> ResponseCache {
        let entries = Cache::builder()
            .max_capacity(limits.max_bytes)
            .weigher(|k: &Key, v: &Entry| {
                (k.len() + v.weight() + ENTRY_OVERHEAD).min(u32::MAX as usize) as u32
            })
            .expire_after(PerEntry)
            .support_invalidation_closures()
            .build();
        ResponseCache {
            entries,
            flights: Arc::default(),
            generation: AtomicU64::new(0),
            max_entry_bytes: limits.max_entry_bytes.min(usize::MAX as u64) as usize,
        }
    }

    /// The largest body stored.
    pub fn max_entry_bytes(&self) -> usize {
        self.max_entry_bytes
    }

    /// The entry under `key` if it is still fresh at `now`.
    pub fn get(&self, key: &Key, now: Instant) -> Option<Entry> {
        self.entries.get(key).filter(|e| e.fresh(now))
    }

    pub fn insert(&self, key: Key, entry: Entry) {
        self.entries.insert(key, entry);
    }

    pub fn invalidate(&self, key: &Key) {
        self.entries.invalidate(key);
    }

    /// Read before a miss goes upstream and again once its answer is stored: if it moved, a
    /// purge took effect in between and the answer is dropped again (the purge may have been
    /// meant for exactly what it says).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Drops every entry `purge` matches; `get` stops returning them at once.
    pub fn purge(&self, purge: &Purge) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if purge.is_everything() {
            self.entries.invalidate_all();
            return;
        }
        let purge = purge.clone();
        self.invalidate_if(move |k| purge.matches(k.route(), k.path()));
    }

    /// Drops everything.
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.invalidate_all();
    }

    /// Drops the entries of routes that changed (to the version given) or were deleted (`None`).
    /// Their keys carry the old version, so they were no longer served anyway: this returns
    /// their memory now rather than when they expire.
    pub fn drop_routes(&self, stale: HashMap<String, Option<u64>>) {
        if stale.is_empty() {
            return;
        }
        self.invalidate_if(move |k| match stale.get(k.route()) {
            Some(Some(current)) => k.version() != *current,
            Some(None) => true,
            None => false,
        });
    }

    fn invalidate_if(&self, f: impl Fn(&Key) -> bool + Send + Sync + 'static) {
        if let Err(e) = self.entries.invalidate_entries_if(move |k, _| f(k)) {
            // Only when invalidation closures are off, which `new` never does.
            tracing::error!(error = %e, "cache invalidation failed: clearing the cache");
            self.entries.invalidate_all();
        }
    }

    /// Entries and their weighed bytes, after pending maintenance: for tests and metrics.
    pub fn usage(&self) -> (u64, u64) {
        self.entries.run_pending_tasks();
        (self.entries.entry_count(), self.entries.weighted_size())
    }

    /// Joins the upstream request in flight for `hash` ([`Key::flight_hash`]), or leads one.
    pub fn join(&self, hash: u64) -> Joined {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = flights.get(&hash) {
            return Joined::Wait(f.clone());
        }
        let flight = Arc::new(Flight::default());
        flights.insert(hash, flight.clone());
        Joined::Lead(FlightGuard {
            flights: self.flights.clone(),
            hash,
            flight,
        })
    }
}

pub enum Joined {
    /// This request goes upstream; the others for its key wait until the guard drops.
    Lead(FlightGuard),
    /// Another request is upstream for this key: wait for it, then look again.
    Wait(Arc<Flight>),
}

/// One upstream request that others wait on.
#[derive(Default, Debug)]
pub struct Flight {
    done: AtomicBool,
    notify: Notify,
}

impl Flight {
    /// Waits until the leader is done (its answer stored, or not storable, or failed); false at
    /// the deadline.
    pub async fn wait(&self, deadline: Instant) -> bool {
        // Registered before the check: `notify_waiters` wakes every `Notified` created earlier.
        let notified = self.notify.notified();
        if self.done.load(Ordering::Acquire) {
            return true;
        }
        tokio::time::timeout_at(deadline.into(), notified)
            .await
            .is_ok()
    }
}

/// The leader's hold on its flight: dropping it (after the fill, or when the request fails or
/// is abandoned) wakes the waiters.
#[derive(Debug)]
pub struct FlightGuard {
    flights: Arc<Mutex<HashMap<u64, Arc<Flight>>>>,
    hash: u64,
    flight: Arc<Flight>,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            if flights
                .get(&self.hash)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                flights.remove(&self.hash);
            }
        }
        self.flight.done.store(true, Ordering::Release);
        self.flight.notify.notify_waiters();
    }
}

#[cfg(test)]
#[path = "cache_test.rs"]
mod tests;
