//! `ServiceRuntime`: the live state of one service's targets (health, load, latency) as atomics,
//! written by the request path and the balancer actor, read by every pick without a lock.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use raftgate_cluster::spec::{parse_target_url, Balancer, Passive, Service, TargetUrl};

use super::pick::smooth_weighted;
use super::ring::Ring;

/// Milliseconds on a monotonic clock whose zero is the first call in this process. Ejection
/// deadlines are stored in it, so they fit an `AtomicU64`.
pub fn now_ms() -> u64 {
    clock_base().elapsed().as_millis() as u64
}

/// Microseconds on the same clock, for latency estimates.
pub fn now_us() -> u64 {
    clock_base().elapsed().as_micros() as u64
}

fn clock_base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// How long a latency estimate takes to decay to 1/e without new samples (peak-EWMA's τ, as in
/// Finagle and linkerd): a target that was slow is tried again once its estimate has decayed
/// below its peers' load-weighted cost.
const DECAY_US: f64 = 10_000_000.0;

/// What `consistent_hash` hashes to pick a target (`hash_on`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashOn {
    /// The client's IP address (the TCP peer).
    Ip,
    /// The authenticated consumer (as the auth phase found it); the client IP on a request
    /// without one (a route with `auth: none`).
    Consumer,
    /// A request header (lower-case name); the client IP when the request lacks it.
    Header(String),
}

impl HashOn {
    /// Parses a validated `hash_on` (`Service::validate` refused anything else); `None` → `ip`.
    pub fn parse(hash_on: Option<&str>) -> HashOn {
        match hash_on {
            Some("consumer") => HashOn::Consumer,
            Some(h) if h.starts_with("header:") => HashOn::Header(h["header:".len()..].to_string()),
            _ => HashOn::Ip,
        }
    }
}

/// One target's live state. Plain atomics, shared through the `ServiceRuntime`'s `Arc`.
#[derive(Debug)]
pub struct TargetState {
    /// The URL as configured: the target's identity when a service changes.
    url: String,
    /// Passive: failures since the last success.
    consecutive_failures: AtomicU32,
    /// Passive: ejected while `now_ms() < ejected_until`.
    ejected_until: AtomicU64,
    /// Active: what the health checker last concluded. Starts up.
    active_up: AtomicBool,
    /// Requests sent to this target and not yet answered (least_conn, p2c_ewma).
    inflight: AtomicU32,
    /// Peak-EWMA latency estimate in microseconds (`f64` bits); 0 = no sample yet.
    ewma_us: AtomicU64,
    /// When `ewma_us` was last updated (`now_us`).
    ewma_stamp: AtomicU64,
    failures_total: AtomicU64,
    ejections_total: AtomicU64,
}

impl TargetState {
    fn new(url: &str) -> TargetState {
        TargetState {
            url: url.to_string(),
            consecutive_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            active_up: AtomicBool::new(true),
            inflight: AtomicU32::new(0),
            ewma_us: AtomicU64::new(0f64.to_bits()),
            ewma_stamp: AtomicU64::new(0),
            failures_total: AtomicU64::new(0),
            ejections_total: AtomicU64::new(0),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Neither ejected nor failing its active health check.
    pub fn is_eligible(&self, now_ms: u64) -> bool {
        self.active_up() && !self.is_ejected(now_ms)
    }

    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now_ms
    }

    pub fn active_up(&self) -> bool {
        self.active_up.load(Ordering::Relaxed)
    }

    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Failed attempts (connect error, reset, timeout, bad response, 5xx) since the target
    /// entered this runtime or one it was carried over from.
    pub fn failures_total(&self) -> u64 {
        self.failures_total.load(Ordering::Relaxed)
    }

    /// How often passive checking ejected the target.
    pub fn ejections_total(&self) -> u64 {
        self.ejections_total.load(Ordering::Relaxed)
    }

    /// The latency estimate at `now_us`, decayed toward 0 since the last sample; 0 when there
    /// has been no sample.
    pub fn latency_estimate_us(&self, now_us: u64) -> f64 {
        let ewma = f64::from_bits(self.ewma_us.load(Ordering::Relaxed));
        if ewma == 0.0 {
            return 0.0;
        }
        let age = now_us.saturating_sub(self.ewma_stamp.load(Ordering::Relaxed)) as f64;
        ewma * (-age / DECAY_US).exp()
    }

    /// Peak-EWMA: a sample above the estimate replaces it at once; one below pulls it down by
    /// a weight that grows with the time since the last sample. Concurrent updates may lose a
    /// sample, which only delays the estimate.
    fn observe_latency(&self, sample_us: f64, now_us: u64) {
        let current = f64::from_bits(self.ewma_us.load(Ordering::Relaxed));
        let next = if sample_us > current {
            sample_us
        } else {
            let age = now_us.saturating_sub(self.ewma_stamp.load(Ordering::Relaxed)) as f64;
            let w = (-age / DECAY_US).exp();
            current * w + sample_us * (1.0 - w)
        };
        self.ewma_us
            .store(next.max(1.0).to_bits(), Ordering::Relaxed);
        self.ewma_stamp.store(now_us, Ordering::Relaxed);
    }

    /// Load-weighted cost for p2c: the latency estimate times the requests it would queue
    /// behind. A target with no sample yet costs nothing while idle and more than any sampled
    /// one while busy (Finagle's rule), so new targets are tried without being flooded.
    pub fn cost(&self, now_us: u64) -> f64 {
        let inflight = f64::from(self.inflight());
        let sampled = self.ewma_us.load(Ordering::Relaxed) != 0f64.to_bits();
        match (sampled, inflight == 0.0) {
            (true, _) => self.latency_estimate_us(now_us) * (inflight + 1.0),
            (false, true) => 0.0,
            (false, false) => 1e12 + inflight,
        }
    }

    fn carry_over(&self, old: &TargetState, keep_passive: bool, keep_active: bool) {
        if keep_passive {
            let failures = old.consecutive_failures.load(Ordering::Relaxed);
            self.consecutive_failures.store(failures, Ordering::Relaxed);
            let until = old.ejected_until.load(Ordering::Relaxed);
            self.ejected_until.store(until, Ordering::Relaxed);
        }
        if keep_active {
            self.active_up.store(old.active_up(), Ordering::Relaxed);
        }
        let ewma = old.ewma_us.load(Ordering::Relaxed);
        self.ewma_us.store(ewma, Ordering::Relaxed);
        let stamp = old.ewma_stamp.load(Ordering::Relaxed);
        self.ewma_stamp.store(stamp, Ordering::Relaxed);
        let failures = old.failures_total();
        self.failures_total.store(failures, Ordering::Relaxed);
        let ejections = old.ejections_total();
        self.ejections_total.store(ejections, Ordering::Relaxed);
    }
}

/// A service's targets and their live state, with what its balancer needs precomputed.
/// Built by the balancer actor when a service is created or its targets, balancer, hash key or
/// checks change; the router hands it to every compiled route of the service.
#[derive(Debug)]
pub struct ServiceRuntime {
    /// The spec this runtime was built from (only the fields `fits` compares matter).
    pub(super) spec: Arc<Service>,
    pub(super) urls: Arc<[TargetUrl]>,
    pub(super) targets: Box<[TargetState]>,
    pub(super) hash_on: HashOn,
    /// round_robin / weighted: target indexes in serving order.
    pub(super) schedule: Box<[u32]>,
    /// Rotation for the schedule and for least_conn's ties.
    pub(super) next: AtomicUsize,
    /// consistent_hash only.
    pub(super) ring: Option<Ring>,
}

impl ServiceRuntime {
    /// A runtime with every target healthy and idle. `None` when a target URL does not parse
    /// (validation refuses those, so only a corrupt state gets here).
    pub fn new(service: &Arc<Service>) -> Option<ServiceRuntime> {
        let urls: Vec<TargetUrl> = service
            .targets
            .iter()
            .map(|t| parse_target_url(&t.url))
            .collect::<Result<_, _>>()
            .ok()?;
        let n = urls.len() as u32;
        let schedule: Vec<u32> = match service.balancer {
            Balancer::Weighted => smooth_weighted(
                &service
                    .targets
                    .iter()
                    .map(|t| u64::from(t.weight))
                    .collect::<Vec<_>>(),
            ),
            _ => (0..n).collect(),
        };
        let ring = (service.balancer == Balancer::ConsistentHash)
            .then(|| Ring::new(service.targets.iter().map(|t| t.url.as_str())));
        Some(ServiceRuntime {
            spec: Arc::clone(service),
            urls: urls.into(),
            targets: service
                .targets
                .iter()
                .map(|t| TargetState::new(&t.url))
                .collect(),
            hash_on: HashOn::parse(service.hash_on.as_deref()),
            schedule: schedule.into_boxed_slice(),
            next: AtomicUsize::new(0),
            ring,
        })
    }

    /// Like `new`, keeping the health, failure counts and latency estimate of every target
    /// whose URL `previous` has too. Passive state carries over only while passive checking
    /// stays on, and the active verdict only while active checking stays on: a check that was
    /// removed cannot keep a target out.
    pub fn new_from(service: &Arc<Service>, previous: &ServiceRuntime) -> Option<ServiceRuntime> {
        let runtime = ServiceRuntime::new(service)?;
        let keep_passive = service.passive.is_some() && previous.spec.passive.is_some();
        let keep_active = service.health_check.is_some() && previous.spec.health_check.is_some();
        for target in runtime.targets.iter() {
            if let Some(old) = previous.targets.iter().find(|o| o.url == target.url) {
                target.carry_over(old, keep_passive, keep_active);
            }
        }
        Some(runtime)
    }

    /// Whether this runtime serves `service` as is: same targets, balancer, hash key, checks and
    /// CA (which the checker verifies with); timeouts and retries are read from the route.
    pub fn fits(&self, service: &Service) -> bool {
        let s = &self.spec;
        s.targets == service.targets
            && s.balancer == service.balancer
            && s.hash_on == service.hash_on
            && s.passive == service.passive
            && s.health_check == service.health_check
            && s.ca_file == service.ca_file
            && s.ca_pem == service.ca_pem
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn balancer(&self) -> Balancer {
        self.spec.balancer
    }

    pub fn hash_on(&self) -> &HashOn {
        &self.hash_on
    }

    pub fn passive(&self) -> Option<&Passive> {
        self.spec.passive.as_ref()
    }

    /// The parsed targets; index `i` is `target(i)`.
    pub fn urls(&self) -> &Arc<[TargetUrl]> {
        &self.urls
    }

    pub fn targets(&self) -> &[TargetState] {
        &self.targets
    }

    pub fn target(&self, i: usize) -> &TargetState {
        &self.targets[i]
    }

    /// Sets the active-check verdict; true when it changed.
    pub fn set_active_up(&self, i: usize, up: bool) -> bool {
        self.targets[i].active_up.swap(up, Ordering::Relaxed) != up
    }

    /// Counts an answered attempt (any status below 500): resets the failure streak.
    pub fn record_success(&self, i: usize, latency: Duration, now_us: u64) {
        let t = &self.targets[i];
        if t.consecutive_failures.load(Ordering::Relaxed) != 0 {
            t.consecutive_failures.store(0, Ordering::Relaxed);
        }
        t.observe_latency(latency.as_micros() as f64, now_us);
    }

    /// Feeds the latency estimate without touching the failure streak.
    pub fn record_latency(&self, i: usize, latency: Duration, now_us: u64) {
        self.targets[i].observe_latency(latency.as_micros() as f64, now_us);
    }

    /// Counts a failed attempt; with passive checking, the `max_failures`-th in a row ejects
    /// the target for `eject_ms`. The streak is not reset by the ejection, so a target that
    /// fails its first attempt after coming back is ejected again at once. True when this
    /// failure ejected it.
    pub fn record_failure(&self, i: usize, now_ms: u64) -> bool {
        let t = &self.targets[i];
        t.failures_total.fetch_add(1, Ordering::Relaxed);
        let Some(passive) = &self.spec.passive else {
            return false;
        };
        let streak = t
            .consecutive_failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if streak < passive.max_failures {
            return false;
        }
        let until = now_ms.saturating_add(passive.eject_ms);
        let before = t.ejected_until.swap(until, Ordering::Relaxed);
        if before <= now_ms {
            t.ejections_total.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(service = %self.name(), target = %t.url, failures = streak, eject_ms = passive.eject_ms, "target ejected");
            return true;
        }
        false
    }

    /// Starts an attempt on target `i`: counts it in flight until the returned guard drops.
    pub fn begin(self: &Arc<Self>, i: usize) -> Attempt {
        self.targets[i].inflight.fetch_add(1, Ordering::Relaxed);
        Attempt {
            runtime: Arc::clone(self),
            target: i,
            started: Instant::now(),
        }
    }
}

/// How an attempt ended, for the passive check and the latency estimate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status.
    Status(u16),
    /// No usable answer: connect failure, reset, unparsable response.
    Failed,
    /// No answer within the request timeout.
    TimedOut,
}

/// One attempt on one target, in flight while it lives (whatever ends it: an outcome, an error
/// or the client going away).
#[derive(Debug)]
pub struct Attempt {
    runtime: Arc<ServiceRuntime>,
    target: usize,
    started: Instant,
}

impl Attempt {
    pub fn target(&self) -> usize {
        self.target
    }

    pub fn runtime(&self) -> &Arc<ServiceRuntime> {
        &self.runtime
    }

    /// Records the outcome and ends the attempt. A 5xx answer counts as a failure.
    pub fn finish(self, outcome: Outcome) {
        let latency = self.started.elapsed();
        let (rt, i, now) = (&self.runtime, self.target, now_us());
        match outcome {
            Outcome::Status(s) if s < 500 => rt.record_success(i, latency, now),
            // A slow failure is evidence of slowness too; a refused connect says nothing.
            Outcome::Status(_) | Outcome::TimedOut => {
                rt.record_latency(i, latency, now);
                rt.record_failure(i, now / 1000);
            }
            Outcome::Failed => {
                rt.record_failure(i, now / 1000);
            }
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.runtime.targets[self.target]
            .inflight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the balancer actor publishes: every service's runtime, by name.
#[derive(Debug, Default)]
pub struct HealthTable {
    revision: u64,
    services: std::collections::HashMap<String, Arc<ServiceRuntime>>,
}

impl HealthTable {
    pub fn new(
        revision: u64,
        services: std::collections::HashMap<String, Arc<ServiceRuntime>>,
    ) -> HealthTable {
        HealthTable { revision, services }
    }

    /// The config revision the table was reconciled with.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn get(&self, service: &str) -> Option<&Arc<ServiceRuntime>> {
        self.services.get(service)
    }

    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<ServiceRuntime>)> {
        self.services.iter().map(|(k, v)| (k.as_str(), v))
    }
}
