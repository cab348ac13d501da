//! The limiter actor: holds this node's quota leases and keeps them topped up through Raft.
//!
//! The request path spends from a lease with one atomic step ([`Lease::try_spend`]); only when
//! a lease has run dry does a request message this actor ([`Need`]) and wait for the next
//! lease write. The actor batches every key that needs more, or has spend to report, into one
//! [`Command::Leases`] entry: one Raft write serves many consumers. Grants come back through
//! the replicated state (`quotas`), which the actor reads after each write and on every state
//! the node applies.
//!
//! Sizing: a lease asks for about two seconds of the key's recent demand on this node, at
//! least 1 and at most `limit / (4 × nodes)`: what a crashed node strands is bounded by that.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use raftgate_cluster::quota::{LeaseRequest, QuotaKey};
use raftgate_cluster::{ClusterNode, ClusterState, Command};
use tokio::sync::oneshot;

/// How often low leases are topped up and spend is considered for reporting.
const TICK: Duration = Duration::from_millis(50);
/// Spend is reported at least this often (what `GET /quotas` lags by).
const REPORT_EVERY: Duration = Duration::from_millis(1000);
/// Seconds of recent demand a lease asks for.
const LEASE_SECONDS: u64 = 2;

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One quota key's allowance on this node, for one window.
pub struct Lease {
    pub key: QuotaKey,
    pub window_start: u64,
    pub window_end: u64,
    pub limit: AtomicU64,
    /// What this node may still admit: the request path takes from it, the actor adds what
    /// the state grants. Taking it to 0 (a release) stops admissions at once.
    remaining: AtomicU64,
    /// Cumulative grants to this node in the window as the actor last saw them (only the
    /// actor writes it). Spent = granted − remaining.
    granted: AtomicU64,
    /// The cluster has granted the whole limit: asking for more is pointless until a node
    /// gives some back.
    exhausted: AtomicBool,
    /// Requests that tried this lease since the actor last looked: sizes the next grant.
    demand: AtomicU64,
    /// Set once the grants this node held for the key before the lease existed here (from an
    /// earlier run: it crashed or restarted) are counted as spent (see [`Leases::baseline`]).
    baselined: AtomicBool,
}

impl Lease {
    /// Admits one request when the lease allows it.
    pub fn try_spend(&self) -> bool {
        self.demand.fetch_add(1, Ordering::Relaxed);
        self.remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_sub(1))
            .is_ok()
    }

    /// What this node may still admit without asking.
    pub fn available(&self) -> u64 {
        self.remaining.load(Ordering::Acquire)
    }

    pub fn exhausted(&self) -> bool {
        self.exhausted.load(Ordering::Acquire)
    }

    /// Cumulative admissions in the window (exact when read by the actor).
    fn spent(&self) -> u64 {
        self.granted
            .load(Ordering::Acquire)
            .saturating_sub(self.remaining.load(Ordering::Acquire))
    }

    /// Takes the state's cumulative grant to this node (actor only).
    fn granted_now(&self, granted: u64) {
        let seen = self.granted.load(Ordering::Acquire);
        if granted > seen {
            self.granted.store(granted, Ordering::Release);
            self.remaining.fetch_add(granted - seen, Ordering::AcqRel);
        }
    }
}

/// What the request path and the actor share.
pub struct Leases {
    node: u64,
    by_key: RwLock<HashMap<(QuotaKey, u64), Arc<Lease>>>,
}

impl Leases {
    /// No leases yet, for node `node` (whose grants `refresh` takes).
    pub fn new(node: u64) -> Leases {
        Leases {
            node,
            by_key: RwLock::new(HashMap::new()),
        }
    }

    /// The lease of `key` for the window starting at `window_start`, made empty when new.
    pub fn lease(&self, key: QuotaKey, window: (u64, u64), limit: u64) -> Arc<Lease> {
        let id = (key, window.0);
        if let Some(l) = self.by_key.read().expect("leases lock").get(&id) {
            return l.clone();
        }
        let mut map = self.by_key.write().expect("leases lock");
        map.entry(id.clone())
            .or_insert_with(|| {
                Arc::new(Lease {
                    key: id.0,
                    window_start: window.0,
                    window_end: window.1,
                    limit: AtomicU64::new(limit),
                    remaining: AtomicU64::new(0),
                    granted: AtomicU64::new(0),
                    exhausted: AtomicBool::new(false),
                    demand: AtomicU64::new(0),
                    baselined: AtomicBool::new(false),
                })
            })
            .clone()
    }

    fn all(&self) -> Vec<Arc<Lease>> {
        self.by_key
            .read()
            .expect("leases lock")
            .values()
            .cloned()
            .collect()
    }

    /// Counts as spent what `state` already granted this node for leases new in this process:
    /// such grants come from an earlier run of the node, whose spending died with it, so they
    /// are never admitted twice (they are the documented under-admission of a crash). `state`
    /// must hold everything committed before this process started (the limiter waits for a
    /// read barrier before asking for any grant).
    pub fn baseline(&self, state: &ClusterState) {
        for lease in self.all() {
            self.baseline_one(&lease, state);
        }
    }

    fn baseline_one(&self, lease: &Lease, state: &ClusterState) {
        if lease.baselined.swap(true, Ordering::AcqRel) {
            return;
        }
        let prior = state
            .quotas
            .get(&lease.key)
            .filter(|u| u.window_start == lease.window_start)
            .map_or(0, |u| u.granted_to(self.node));
        lease.granted.store(prior, Ordering::Release);
    }

    /// Takes the grants in `state` for this node. Public for `benches/limiter.rs`, which grants
    /// through the state machine without running a node.
    pub fn refresh(&self, state: &ClusterState) {
        for lease in self.all() {
            if !lease.baselined.load(Ordering::Acquire) {
                continue;
            }
            let Some(usage) = state.quotas.get(&lease.key) else {
                continue;
            };
            if usage.window_start != lease.window_start {
                // The cluster moved to a later window: nothing more for this one.
                lease
                    .exhausted
                    .store(usage.window_start > lease.window_start, Ordering::Release);
                continue;
            }
            lease.granted_now(usage.granted_to(self.node));
            lease.limit.store(usage.limit, Ordering::Release);
            lease
                .exhausted
                .store(usage.granted >= usage.limit, Ordering::Release);
        }
    }
}

/// A request found its lease dry: ask for more now. Answers whether the lease has grants
/// left after the write that carried the ask.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Need(pub Arc<Lease>);

/// Give back every unspent grant (graceful shutdown); answers when the write is done.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReleaseAll;

struct Applied(Arc<ClusterState>);

impl Message for Applied {
    type Result = ();
}

pub struct Limiter {
    leases: Arc<Leases>,
    node: ClusterNode,
    /// Leases a [`Need`] is waiting on, with the waiters; sent with the next write.
    needed: Vec<(Arc<Lease>, oneshot::Sender<bool>)>,
    writing: bool,
    /// Per lease: spend last reported and when.
    reported: HashMap<(QuotaKey, u64), (u64, std::time::Instant)>,
    /// Per lease: recent demand per second (EWMA).
    rates: HashMap<(QuotaKey, u64), f64>,
    released: bool,
    /// This node has applied everything committed before it started.
    caught_up: bool,
}

impl Actor for Limiter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(TICK, |act, ctx| act.tick(ctx));
        // Nothing is asked for until this node has applied everything committed before it
        // started, its own grants of an earlier run included (see `Leases::baseline`).
        let node = self.node.clone();
        let barrier = async move {
            while node.read_barrier().await.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        ctx.spawn(barrier.into_actor(self).map(|_, act, ctx| {
            act.caught_up = true;
            act.tick(ctx);
        }));
    }
}

impl Limiter {
    fn nodes(&self) -> u64 {
        let m = self
            .node
            .raft()
            .metrics()
            .borrow()
            .membership_config
            .clone();
        m.membership().nodes().count().max(1) as u64
    }

    /// How much `lease` asks for: about two seconds of its recent demand here, bounded so a
    /// crash strands little. Also answers whether the lease saw demand since the last tick.
    fn want(&mut self, lease: &Lease) -> (u64, bool) {
        let id = (lease.key.clone(), lease.window_start);
        let tried = lease.demand.swap(0, Ordering::AcqRel);
        let demand = tried as f64 / TICK.as_secs_f64();
        let cap = (lease.limit.load(Ordering::Acquire) / (4 * self.nodes())).max(1);
        let rate = self.rates.entry(id).or_insert(demand);
        *rate = 0.8 * *rate + 0.2 * demand;
        let want = ((*rate * LEASE_SECONDS as f64).ceil() as u64).clamp(1, cap);
        (want, tried > 0)
    }

    /// Batches what every lease needs into one write: top-ups for leases in use that run low
    /// (and those a request waits on), spend reports at most every [`REPORT_EVERY`].
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.writing || self.released || !self.caught_up {
            return;
        }
        // Every lease is baselined before its first ask (a lease made after `all()` below waits
        // for the next tick).
        let state = self.node.state();
        let now = unix_now();
        let waiters = std::mem::take(&mut self.needed);
        let mut requests = Vec::new();
        let mut forget = Vec::new();
        for lease in self.leases.all() {
            self.leases.baseline_one(&lease, &state);
            let id = (lease.key.clone(), lease.window_start);
            if lease.window_end + 60 <= now {
                forget.push(id);
                continue;
            }
            let (want, in_use) = self.want(&lease);
            let waited_on = waiters.iter().any(|(l, _)| Arc::ptr_eq(l, &lease));
            let low =
                (in_use || waited_on) && !lease.exhausted() && lease.available() < want.div_ceil(2);
            let spent = lease.spent();
            let last = self.reported.get(&id).copied();
            let report = spent > last.map_or(0, |(s, _)| s)
                && last.is_none_or(|(_, at)| at.elapsed() >= REPORT_EVERY);
            if low || waited_on || report {
                requests.push(request(
                    &lease,
                    if low || waited_on { want } else { 0 },
                    false,
                ));
            }
        }
        if !forget.is_empty() {
            let mut map = self.leases.by_key.write().expect("leases lock");
            for id in &forget {
                map.remove(id);
                self.reported.remove(id);
                self.rates.remove(id);
            }
        }
        if requests.is_empty() {
            for (lease, tx) in waiters {
                let _ = tx.send(lease.available() > 0);
            }
            return;
        }
        self.write(ctx, requests, waiters);
    }

    fn write(
        &mut self,
        ctx: &mut Context<Self>,
        requests: Vec<LeaseRequest>,
        waiters: Vec<(Arc<Lease>, oneshot::Sender<bool>)>,
    ) {
        self.writing = true;
        let node = self.node.clone();
        let sent: Vec<((QuotaKey, u64), u64)> = requests
            .iter()
            .map(|r| ((r.key.clone(), r.window_start), r.spent))
            .collect();
        let cmd = Command::Leases {
            node: node.id(),
            now: unix_now(),
            requests,
        };
        let write = async move {
            let result = node.write(cmd).await;
            (result, node.state())
        };
        ctx.spawn(write.into_actor(self).map(move |(result, state), act, ctx| {
            act.writing = false;
            match result {
                Ok(_) => {
                    act.leases.refresh(&state);
                    let at = std::time::Instant::now();
                    for (id, spent) in sent {
                        act.reported.insert(id, (spent, at));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "quota lease write failed; leases stay as they are"),
            }
            for (lease, tx) in waiters {
                let _ = tx.send(lease.available() > 0);
            }
            if !act.needed.is_empty() {
                act.tick(ctx);
            }
        }));
    }
}

fn request(lease: &Lease, want: u64, release: bool) -> LeaseRequest {
    LeaseRequest {
        key: lease.key.clone(),
        window_start: lease.window_start,
        spent: lease.spent(),
        want,
        release,
    }
}

impl Handler<Need> for Limiter {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, msg: Need, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.needed.push((msg.0, tx));
        if !self.writing {
            // Do not wait for the tick: a request is waiting.
            self.tick(ctx);
        }
        Box::pin(async move { rx.await.unwrap_or(false) })
    }
}

impl Handler<Applied> for Limiter {
    type Result = ();

    fn handle(&mut self, msg: Applied, _: &mut Context<Self>) {
        self.leases.refresh(&msg.0);
    }
}

impl Handler<ReleaseAll> for Limiter {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: ReleaseAll, _: &mut Context<Self>) -> Self::Result {
        self.released = true;
        // Taking every lease to 0 first stops admissions; what is reported spent is then final.
        let requests: Vec<LeaseRequest> = self
            .leases
            .all()
            .iter()
            .filter(|l| l.granted.load(Ordering::Acquire) > 0)
            .map(|l| {
                let unspent = l.remaining.swap(0, Ordering::AcqRel);
                LeaseRequest {
                    spent: l.granted.load(Ordering::Acquire) - unspent,
                    ..request(l, 0, true)
                }
            })
            .collect();
        let node = self.node.clone();
        Box::pin(async move {
            if requests.is_empty() {
                return;
            }
            let keys = requests.len();
            let cmd = Command::Leases {
                node: node.id(),
                now: unix_now(),
                requests,
            };
            match tokio::time::timeout(Duration::from_secs(3), node.write(cmd)).await {
                Ok(Ok(_)) => tracing::info!(keys, "quota leases returned"),
                Ok(Err(e)) => tracing::warn!(error = %e, "could not return quota leases"),
                Err(_) => tracing::warn!("could not return quota leases within 3 s"),
            }
        })
    }
}

/// What the rest of the node holds.
#[derive(Clone)]
pub struct LimiterHandle {
    pub leases: Arc<Leases>,
    addr: Addr<Limiter>,
}

impl LimiterHandle {
    /// Asks for more grants for a dry lease; false when none came within `wait`.
    pub async fn need(&self, lease: Arc<Lease>, wait: Duration) -> bool {
        matches!(
            tokio::time::timeout(wait, self.addr.send(Need(lease))).await,
            Ok(Ok(true))
        )
    }

    /// Returns every unspent grant to the cluster.
    pub async fn release_all(&self) {
        let _ = self.addr.send(ReleaseAll).await;
    }
}

/// Starts the limiter on the current arbiter.
pub fn start(node: ClusterNode) -> LimiterHandle {
    let leases = Arc::new(Leases::new(node.id()));
    let states = node.subscribe();
    let addr = Limiter {
        leases: leases.clone(),
        node,
        needed: Vec::new(),
        writing: false,
        reported: HashMap::new(),
        rates: HashMap::new(),
        released: false,
        caught_up: false,
    }
    .start();
    super::feed(states, addr.clone(), Applied);
    LimiterHandle { leases, addr }
}
