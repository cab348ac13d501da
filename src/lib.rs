//! raftgate: a clustered HTTP API gateway. Nodes replicate their configuration through Raft
//! (crate `raftgate-cluster`) and serve every request the same way, with no external datastore.
//!
//! # Layout
//! - [`config`]: the node config file, raw → validated → [`config::Config`].
//! - [`routing`]: path normalisation and the compiled route table.
//! - [`actors`]: the actors that own the node's state and publish snapshots (the balancer,
//!   then the router).
//! - [`balancing`]: each service's live targets (health, load, latency) and the balancers.
//! - [`proxy`]: the client-facing request pipeline, one file per phase.
//! - [`cache`]: the response cache's store (bounded by bytes), its keys and HTTP caching rules.
//! - [`ratelimit`]: rate-limit token buckets, each node's fair share of a cluster-wide limit.
//! - [`tls`]: certificates and the SNI resolver of the TLS listener; TLS to `https://` targets.
//! - [`admin`]: the admin API on every node.
//! - [`telemetry`]: the Prometheus registry (`/metrics`), usage counts (`/usage`), the access
//!   log's JSON layer.
//! - [`dev`]: `raftgate dev`, a local cluster with a demo upstream.
//!
//! [`start`] runs a node on listeners the caller bound; tests call it too.
#![forbid(unsafe_code)]

pub mod actors;
pub mod admin;
pub mod auth;
pub mod balancing;
pub mod cache;
pub mod config;
pub mod dev;
pub mod proxy;
pub mod ratelimit;
pub mod routing;
pub mod telemetry;
pub mod tls;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use raftgate_cluster::{ClusterNode, NodeConfig};

use crate::config::Config;

/// The listening sockets of a node, bound before anything else starts.
pub struct Listeners {
    pub proxy: std::net::TcpListener,
    pub admin: std::net::TcpListener,
    pub cluster: std::net::TcpListener,
    /// `listen.proxy_tls`: the proxy again, behind TLS termination.
    pub proxy_tls: Option<std::net::TcpListener>,
}

impl Listeners {
    pub fn bind(config: &Config) -> std::io::Result<Listeners> {
        let bind = |addr| {
            std::net::TcpListener::bind(addr)
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
        };
        Ok(Listeners {
            proxy: bind(config.listen.proxy)?,
            admin: bind(config.listen.admin)?,
            cluster: bind(config.listen.cluster)?,
            proxy_tls: config.listen.proxy_tls.map(bind).transpose()?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Cluster(#[from] raftgate_cluster::node::StartError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A running node. Dropping it leaves it running; call [`Gateway::stop`] or [`Gateway::kill`].
pub struct Gateway {
    pub node: ClusterNode,
    pub router: actors::router::RouterHandle,
    pub balancer: actors::balancer::BalancerHandle,
    pub auth: actors::auth::AuthHandle,
    pub certificates: actors::certificates::CertificatesHandle,
    pub limiter: actors::limiter::LimiterHandle,
    pub rate_limiter: actors::ratelimit::RateLimiterHandle,
    pub cache: actors::cache::CacheHandle,
    accepting: Arc<AtomicBool>,
    proxy: actix_web::dev::ServerHandle,
    admin: actix_web::dev::ServerHandle,
    /// `limits.drain_timeout_ms`: how long a graceful stop waits for in-flight requests.
    drain: std::time::Duration,
}

/// Starts a node on the given listeners. Must run inside an actix system (`actix_rt`).
pub async fn start(config: Config, listeners: Listeners) -> Result<Gateway, RunError> {
    let cluster_listener = {
        listeners.cluster.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(listeners.cluster)?
    };
    let node = ClusterNode::start(node_config(&config), cluster_listener).await?;
    // State machine → balancer → auth → router: a route table is compiled only from states
    // whose services the balancer has already reconciled, so it finds their runtimes; and
    // the router announces an applied index only once the credentials of that state are
    // published too (read-your-writes for keys and revocations).
    let balancer = actors::balancer::start(node.subscribe());
    let auth = actors::auth::start(balancer.states());
    let router = actors::router::start(auth.states(), balancer.health.clone());
    // `/readyz` turns 200 only once the route table reflects everything the cluster had
    // committed when this node started (a restarted node catches up first), or, with no
    // quorum to ask, what the node replayed from its own disk (it then serves its last config).
    let caught_up = Arc::new(AtomicBool::new(false));
    actix_rt::spawn({
        let (node, router, caught_up) = (node.clone(), router.clone(), caught_up.clone());
        async move {
            let wait = std::time::Duration::from_secs(5);
            let _ = tokio::time::timeout(wait, node.read_barrier()).await;
            let target = node.state().applied;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            if !router.wait_published(target, deadline).await {
                tracing::warn!(
                    target,
                    "the route table did not reach the applied state in 30 s"
                );
            }
            caught_up.store(true, Ordering::Release);
        }
    });
    // Certificates only matter to the TLS listener: fed straight from the state machine.
    let certificates = actors::certificates::start(node.subscribe());
    // The cache actor too: it applies purges and drops changed routes' entries (their keys
    // carry the route version, so the router's new table never hits them anyway); a purge call
    // waits on its published index.
    let cache = actors::cache::start(
        node.subscribe(),
        Arc::new(cache::ResponseCache::new(&config.cache)),
    );
    let tls = listeners.proxy_tls.map(|listener| proxy::TlsListener {
        listener,
        config: tls::store::server_config(certificates.store.clone()),
    });

    let telemetry = telemetry::Telemetry::new(config.telemetry.metrics);
    telemetry.start_upkeep();
    {
        // `/usage?cluster=true` on any node asks this one over the cluster port.
        let telemetry = telemetry.clone();
        node.set_usage_source(Arc::new(move |filter| telemetry.usage(filter)));
    }
    let limiter = actors::limiter::start(node.clone());
    let rate_limiter = actors::ratelimit::start(node.clone(), router.table.clone());
    // False from the start of a graceful stop: `/readyz` answers 503 and the proxy closes each
    // kept-alive connection after its next answer.
    let accepting = Arc::new(AtomicBool::new(true));
    let proxy = proxy::server(
        &config,
        listeners.proxy,
        tls,
        proxy::ProxyShared {
            accepting: accepting.clone(),
            table: router.table.clone(),
            auth: auth.index.clone(),
            limiter: limiter.clone(),
            rate_limits: rate_limiter.limits.clone(),
            cache: cache.cache.clone(),
            limits: config.limits.clone(),
            telemetry: telemetry.clone(),
        },
    )?;
    let admin_state = web::Data::new(admin::AdminState {
        node: node.clone(),
        router: router.clone(),
        certificates: certificates.clone(),
        cache: cache.clone(),
        health: balancer.health.clone(),
        telemetry,
        token: config.admin_token.as_deref().map(Arc::from),
        accepting: accepting.clone(),
        caught_up,
    });
    let admin = HttpServer::new(move || {
        App::new()
            .app_data(admin_state.clone())
            .app_data(web::PayloadConfig::new(16 << 20))
            .wrap(from_fn(admin::require_token))
            .configure(admin::configure)
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(5)
    .listen(listeners.admin)?
    .run();

    let gateway = Gateway {
        node,
        router,
        balancer,
        auth,
        certificates,
        limiter,
        rate_limiter,
        cache,
        accepting,
        proxy: proxy.handle(),
        admin: admin.handle(),
        drain: config.limits.drain_timeout(),
    };
    actix_rt::spawn(proxy);
    actix_rt::spawn(admin);
    tracing::info!(node = config.node_id, proxy = %config.listen.proxy, admin = %config.listen.admin, cluster = %config.listen.cluster, "raftgate node started");
    Ok(gateway)
}

/// Completes on SIGINT or SIGTERM: what `serve` and `dev` stop on.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

/// Runs a node until `shutdown` completes, then stops it gracefully.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let gateway = start(config, listeners).await?;
    shutdown.await;
    gateway.stop().await;
    Ok(())
}

impl Gateway {
    /// Graceful (SIGTERM, SIGINT): `/readyz` turns 503; the proxy listeners close while
    /// in-flight requests and open WebSockets finish, for `limits.drain_timeout_ms` at most,
    /// and meanwhile a leader hands its leadership to a caught-up voter; unspent quota leases
    /// go back to the cluster; the admin API stops; then Raft stops.
    pub async fn stop(self) {
        let started = std::time::Instant::now();
        self.accepting.store(false, Ordering::Release);
        // actix stops accepting at once; every answer from now on closes its connection
        // (`Connection: close`), idle keep-alive connections close after
        // `limits.drain_grace_ms`, busy ones after their request; what is left is dropped after
        // actix's own (whole-second) timeout.
        // Meanwhile a leader hands its leadership over: the drain lasts at least the grace when
        // clients hold idle connections, and the cluster should not wait for it.
        let drain = async {
            if tokio::time::timeout(self.drain, self.proxy.stop(true))
                .await
                .is_err()
            {
                tracing::warn!(
                    drain_timeout_ms = self.drain.as_millis() as u64,
                    "in-flight requests did not finish within the drain timeout; dropping them"
                );
            }
        };
        tokio::join!(drain, self.node.step_down());
        let drained_ms = started.elapsed().as_millis() as u64;
        // No request is admitted any more: give unspent quota grants back to the cluster.
        self.limiter.release_all().await;
        self.admin.stop(true).await;
        self.balancer.stop();
        self.rate_limiter.stop();
        self.node.shutdown_gracefully().await;
        tracing::info!(
            drained_ms,
            total_ms = started.elapsed().as_millis() as u64,
            "stopped gracefully"
        );
    }

    /// Abrupt: connections are dropped and Raft stops at once, like a crash without the restart.
    pub async fn kill(self) {
        self.accepting.store(false, Ordering::Release);
        self.proxy.stop(false).await;
        self.admin.stop(false).await;
        self.balancer.stop();
        self.rate_limiter.stop();
        self.node.shutdown().await;
    }
}

fn node_config(config: &Config) -> NodeConfig {
    NodeConfig {
        node_id: config.node_id,
        data_dir: config.data_dir.clone(),
        members: config
            .members
            .iter()
            .map(|m| (m.id, m.addr.clone()))
            .collect(),
        join: config.join,
        secret: config.secret.clone().unwrap_or_default().into_bytes(),
        heartbeat_ms: config.raft.heartbeat_ms,
        election_timeout_ms: config.raft.election_timeout_ms,
        snapshot_every: config.raft.snapshot_every,
        logs_to_keep: config.raft.logs_to_keep,
    }
}
