//! The balancer actor: owns every service's live target state ([`ServiceRuntime`]) and its
//! active health checker. On each applied cluster state whose configuration moved it reconciles
//! (new or changed services get a runtime that keeps the health of targets whose URL stayed;
//! deleted ones lose theirs and their checker), publishes the [`HealthTable`] through an
//! `ArcSwap`, and only then passes the state on to the router: a route table never names a
//! service the balancer has not reconciled.
//!
//! The request path never messages this actor: it updates the runtime's atomics itself (in
//! flight, latency, passive failures). Checkers probe on their own task and report here, where
//! the healthy/unhealthy thresholds flip a target's `active_up`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix::WeakAddr;
use actix_rt::task::JoinHandle;
use arc_swap::ArcSwap;
use raftgate_cluster::spec::{HealthCheck, Service};
use raftgate_cluster::ClusterState;
use tokio::sync::watch;

use crate::balancing::probe::{probe_target, targets_of, ProbeTarget};
use crate::balancing::{HealthTable, ServiceRuntime};

/// A new cluster state was applied on this node.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConfigApplied {
    pub state: Arc<ClusterState>,
}

/// One round of a checker's probes, one verdict per target.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ProbeResults {
    pub service: String,
    /// Which checker probed: results of a checker that was since replaced are dropped.
    pub generation: u64,
    /// `healthy[i]` is target `i`'s probe result.
    pub healthy: Vec<bool>,
}

/// The running checkers, by service name.
#[derive(Message)]
#[rtype(result = "Vec<CheckerInfo>")]
pub struct ListCheckers;

/// Stops the actor and every checker.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckerInfo {
    pub service: String,
    /// Unique per checker started on this node: a config change that restarts the checker
    /// shows as a new generation.
    pub generation: u64,
    pub config: HealthCheck,
}

pub struct Balancer {
    health: Arc<ArcSwap<HealthTable>>,
    services: HashMap<String, Entry>,
    reconciled_revision: Option<u64>,
    /// States go on to the router from here, once reconciled.
    reconciled: watch::Sender<Arc<ClusterState>>,
    generations: u64,
    /// Checker tasks alive (counted by the tasks themselves, so a leak would show).
    live_checkers: Arc<AtomicUsize>,
}

struct Entry {
    /// The latest spec; may differ from the runtime's in fields it does not use (timeouts).
    spec: Arc<Service>,
    runtime: Arc<ServiceRuntime>,
    checker: Option<Checker>,
}

struct Checker {
    generation: u64,
    config: HealthCheck,
    task: JoinHandle<()>,
    /// Consecutive probe results per target.
    streaks: Vec<Streak>,
}

#[derive(Clone, Copy, Default)]
struct Streak {
    healthy: u32,
    unhealthy: u32,
}

impl Drop for Checker {
    /// Replacing or removing a service's entry ends its checker: no path leaks a task.
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Balancer {
    fn reconcile(&mut self, state: &ClusterState, me: &WeakAddr<Balancer>) {
        if self.reconciled_revision == Some(state.revision) {
            return;
        }
        self.services
            .retain(|name, _| state.services.contains_key(name));
        for (name, spec) in &state.services {
            match self.services.get_mut(name) {
                Some(entry) if Arc::ptr_eq(&entry.spec, spec) => continue,
                Some(entry) if entry.runtime.fits(spec) => {
                    entry.spec = Arc::clone(spec);
                    continue;
                }
                _ => {}
            }
            // The old entry (and with it its checker) goes first.
            let previous = self.services.remove(name);
            let runtime = match &previous {
                Some(p) => ServiceRuntime::new_from(spec, &p.runtime),
                None => ServiceRuntime::new(spec),
            };
            drop(previous);
            let Some(runtime) = runtime.map(Arc::new) else {
                tracing::warn!(service = %name, "service skipped: unparsable target");
                continue;
            };
            let checker = spec
                .health_check
                .as_ref()
                .map(|config| self.start_checker(name, &runtime, config, me));
            self.services.insert(
                name.clone(),
                Entry {
                    spec: Arc::clone(spec),
                    runtime,
                    checker,
                },
            );
        }
        let runtimes = self
            .services
            .iter()
            .map(|(name, e)| (name.clone(), Arc::clone(&e.runtime)))
            .collect();
        self.health
            .store(Arc::new(HealthTable::new(state.revision, runtimes)));
        self.reconciled_revision = Some(state.revision);
    }

    fn start_checker(
        &mut self,
        service: &str,
        runtime: &ServiceRuntime,
        config: &HealthCheck,
        me: &WeakAddr<Balancer>,
    ) -> Checker {
        self.generations += 1;
        let generation = self.generations;
        let targets = targets_of(runtime);
        let n = targets.len();
        let live = LiveChecker::new(&self.live_checkers);
        let task = actix_rt::spawn(check_loop(
            me.clone(),
            service.to_string(),
            generation,
            targets,
            config.clone(),
            live,
        ));
        tracing::debug!(service, generation, path = %config.path, "health checker started");
        Checker {
            generation,
            config: config.clone(),
            task,
            streaks: vec![Streak::default(); n],
        }
    }
}

impl Actor for Balancer {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.services.clear();
    }
}

impl Handler<ConfigApplied> for Balancer {
    type Result = ();

    fn handle(&mut self, msg: ConfigApplied, ctx: &mut Context<Self>) {
        self.reconcile(&msg.state, &ctx.address().downgrade());
        self.reconciled.send_replace(msg.state);
    }
}

impl Handler<ProbeResults> for Balancer {
    type Result = ();

    fn handle(&mut self, msg: ProbeResults, _: &mut Context<Self>) {
        let Some(entry) = self.services.get_mut(&msg.service) else {
            return;
        };
        let Some(checker) = entry
            .checker
            .as_mut()
            .filter(|c| c.generation == msg.generation)
        else {
            return;
        };
        let (config, runtime) = (&checker.config, &entry.runtime);
        for (i, (healthy, streak)) in msg.healthy.iter().zip(&mut checker.streaks).enumerate() {
            let target = runtime.target(i);
            if *healthy {
                streak.healthy = streak.healthy.saturating_add(1);
                streak.unhealthy = 0;
                if !target.active_up() && streak.healthy >= config.healthy_threshold {
                    runtime.set_active_up(i, true);
                    tracing::info!(service = %msg.service, target = %target.url(), "target passes its health check: up");
                }
            } else {
                streak.unhealthy = streak.unhealthy.saturating_add(1);
                streak.healthy = 0;
                if target.active_up() && streak.unhealthy >= config.unhealthy_threshold {
                    runtime.set_active_up(i, false);
                    tracing::warn!(service = %msg.service, target = %target.url(), "target fails its health check: down");
                }
            }
        }
    }
}

impl Handler<ListCheckers> for Balancer {
    type Result = MessageResult<ListCheckers>;

    fn handle(&mut self, _: ListCheckers, _: &mut Context<Self>) -> Self::Result {
        let mut list: Vec<CheckerInfo> = self
            .services
            .iter()
            .filter_map(|(name, e)| {
                e.checker.as_ref().map(|c| CheckerInfo {
                    service: name.clone(),
                    generation: c.generation,
                    config: c.config.clone(),
                })
            })
            .collect();
        list.sort_by(|a, b| a.service.cmp(&b.service));
        MessageResult(list)
    }
}

impl Handler<Stop> for Balancer {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Counts a checker task while it lives; dropped with the task's future (abort included).
struct LiveChecker(Arc<AtomicUsize>);

impl LiveChecker {
    fn new(count: &Arc<AtomicUsize>) -> LiveChecker {
        count.fetch_add(1, Ordering::SeqCst);
        LiveChecker(Arc::clone(count))
    }
}

impl Drop for LiveChecker {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Probes every target each `interval_ms` (the first round at once), all targets concurrently,
/// and reports the round. Ends when aborted or when the actor is gone.
async fn check_loop(
    me: WeakAddr<Balancer>,
    service: String,
    generation: u64,
    targets: Vec<ProbeTarget>,
    config: HealthCheck,
    _live: LiveChecker,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(config.interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let timeout = Duration::from_millis(config.timeout_ms);
    loop {
        tick.tick().await;
        let probes = targets
            .iter()
            .map(|t| probe_target(t, &config.path, timeout));
        let healthy = futures_util::future::join_all(probes).await;
        let Some(addr) = me.upgrade() else {
            return;
        };
        addr.do_send(ProbeResults {
            service: service.clone(),
            generation,
            healthy,
        });
    }
}

/// What the rest of the node holds.
#[derive(Clone)]
pub struct BalancerHandle {
    /// Every service's runtime; the router reads it when it compiles a route table.
    pub health: Arc<ArcSwap<HealthTable>>,
    addr: Addr<Balancer>,
    reconciled: watch::Receiver<Arc<ClusterState>>,
    live_checkers: Arc<AtomicUsize>,
    feed: Arc<JoinHandle<()>>,
}

impl BalancerHandle {
    /// The cluster states this actor has reconciled, in order: what the router is fed with.
    pub fn states(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.reconciled.clone()
    }

    /// The checkers the actor runs; empty once it stopped.
    pub async fn checkers(&self) -> Vec<CheckerInfo> {
        self.addr.send(ListCheckers).await.unwrap_or_default()
    }

    /// Checker tasks still alive, counted by the tasks: drops to 0 only when none leaked.
    pub fn running_checkers(&self) -> usize {
        self.live_checkers.load(Ordering::SeqCst)
    }

    /// Stops the actor, its checkers and its feed.
    pub fn stop(&self) {
        self.feed.abort();
        self.addr.do_send(Stop);
    }
}

/// Starts the balancer on the current arbiter, fed by the state machine's `watch` channel. The
/// current state is reconciled before this returns, so the first route table finds its
/// runtimes; later states are reconciled in order, intermediate ones skipped when they come
/// faster than that.
pub fn start(mut states: watch::Receiver<Arc<ClusterState>>) -> BalancerHandle {
    let initial = states.borrow_and_update().clone();
    let health = Arc::new(ArcSwap::from_pointee(HealthTable::default()));
    let live_checkers = Arc::new(AtomicUsize::new(0));
    let (reconciled, reconciled_rx) = watch::channel(Arc::clone(&initial));
    let addr = Balancer::create(|ctx| {
        let mut balancer = Balancer {
            health: Arc::clone(&health),
            services: HashMap::new(),
            reconciled_revision: None,
            reconciled,
            generations: 0,
            live_checkers: Arc::clone(&live_checkers),
        };
        balancer.reconcile(&initial, &ctx.address().downgrade());
        balancer
    });
    let feed = super::feed(states, addr.clone(), |state| ConfigApplied { state });
    BalancerHandle {
        health,
        addr,
        reconciled: reconciled_rx,
        live_checkers,
        feed: Arc::new(feed),
    }
}
