//! The admin API: CRUD of the replicated resources, cluster status and health, on every node.
//! Writes go through [`ClusterNode::write`] (forwarded to the leader when needed) and answer only
//! once this node's router serves them.

mod cache;
mod certificates;
mod config;
mod dashboard;
mod error;
mod keys;
mod members;
mod metrics;
mod quotas;
mod resources;
mod upstreams;
mod usage;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse};
use arc_swap::ArcSwap;
use raftgate_cluster::ClusterNode;
use subtle::ConstantTimeEq;

pub use error::AdminError;

use crate::actors::cache::CacheHandle;
use crate::actors::certificates::CertificatesHandle;
use crate::actors::router::RouterHandle;
use crate::balancing::HealthTable;

/// Everything the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    pub node: ClusterNode,
    pub router: RouterHandle,
    /// The TLS listener's certificates: certificate writes wait until they are served too.
    pub certificates: CertificatesHandle,
    /// The response cache: a purge answers once it took effect here.
    pub cache: CacheHandle,
    /// The balancer's published target health: `GET /health/upstreams` reads it.
    pub health: Arc<ArcSwap<HealthTable>>,
    /// The node's counters: `GET /metrics` renders them, `GET /usage` sums them.
    pub telemetry: Arc<crate::telemetry::Telemetry>,
    pub token: Option<Arc<str>>,
    /// False while draining: `/readyz` answers 503.
    pub accepting: Arc<AtomicBool>,
    /// The route table reflects what the cluster had committed when this node started.
    pub caught_up: Arc<AtomicBool>,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/cluster", web::get().to(cluster))
        .configure(members::configure)
        .configure(dashboard::configure)
        .configure(upstreams::configure)
        .configure(keys::configure)
        .configure(cache::configure)
        .configure(config::configure)
        .configure(quotas::configure)
        .configure(metrics::configure)
        .configure(usage::configure)
        .configure(resources::configure)
        .default_service(web::to(not_found));
}

/// The bearer-token check, on every endpoint but `/healthz`, `/readyz` and the dashboard page
/// (`GET /`, which holds no data: its API calls carry the token); constant time.
pub async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let open = matches!(req.path(), "/healthz" | "/readyz")
        || (req.path() == "/" && req.method() == Method::GET);
    if !open {
        let expected = req
            .app_data::<web::Data<AdminState>>()
            .and_then(|s| s.token.clone());
        if let Some(expected) = expected {
            let presented = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if !bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
                return Err(AdminError::Unauthorized.into());
            }
        }
    }
    next.call(req).await
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn readyz(state: web::Data<AdminState>) -> HttpResponse {
    if !state.accepting.load(Ordering::Acquire) {
        return HttpResponse::ServiceUnavailable().json(serde_json::json!({"status": "draining"}));
    }
    // A node whose storage failed serves a table that no longer follows the cluster.
    if let Some(error) = state.node.failure() {
        return HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"status": "failed", "error": error}));
    }
    // Ready once the router serves a table built from applied state (the initial membership
    // entry at the least).
    if state.router.published() == 0 || !state.caught_up.load(Ordering::Acquire) {
        return HttpResponse::ServiceUnavailable().json(serde_json::json!({"status": "starting"}));
    }
    HttpResponse::Ok()
        .json(serde_json::json!({"status": "ready", "applied_index": state.router.published()}))
}

async fn cluster(state: web::Data<AdminState>) -> HttpResponse {
    HttpResponse::Ok().json(state.node.status().await)
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, AdminError> {
    Err(AdminError::NotFound(format!(
        "no admin endpoint {} {}",
        req.method(),
        req.path()
    )))
}
