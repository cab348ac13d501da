//! `GET /health/upstreams`: every service's targets as this node's balancer sees them (active
//! check verdict, passive ejection, load), read from the `HealthTable` snapshot it publishes.
//! Local by nature: each node checks its targets itself, so nodes may disagree for a moment.

use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::AdminState;
use crate::balancing::now_ms;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health/upstreams", web::get().to(upstreams));
}

#[derive(Serialize)]
struct ServiceHealth<'a> {
    service: &'a str,
    /// Targets a request may be sent to now.
    up: usize,
    targets: Vec<TargetHealth<'a>>,
}

#[derive(Serialize)]
struct TargetHealth<'a> {
    url: &'a str,
    /// Eligible: passes its active check (or has none) and is not ejected.
    up: bool,
    /// The active health check's verdict (true when the service has no check).
    active_up: bool,
    /// Ejected by passive checking (outlier detection) right now.
    ejected: bool,
    inflight: u32,
    failures_total: u64,
    ejections_total: u64,
}

async fn upstreams(state: web::Data<AdminState>) -> HttpResponse {
    let table = state.health.load();
    let now = now_ms();
    let mut data: Vec<ServiceHealth> = table
        .iter()
        .map(|(name, runtime)| {
            let targets: Vec<TargetHealth> = runtime
                .targets()
                .iter()
                .map(|t| TargetHealth {
                    url: t.url(),
                    up: t.is_eligible(now),
                    active_up: t.active_up(),
                    ejected: t.is_ejected(now),
                    inflight: t.inflight(),
                    failures_total: t.failures_total(),
                    ejections_total: t.ejections_total(),
                })
                .collect();
            ServiceHealth {
                service: name,
                up: targets.iter().filter(|t| t.up).count(),
                targets,
            }
        })
        .collect();
    data.sort_by(|a, b| a.service.cmp(b.service));
    HttpResponse::Ok().json(serde_json::json!({
        "node_id": state.node.id(),
        "revision": table.revision(),
        "data": data,
    }))
}
