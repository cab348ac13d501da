//! `GET /quotas/{consumer}`: each quota counted by this consumer, cluster-wide.

use actix_web::{web, HttpRequest, HttpResponse};
use raftgate_cluster::quota::{QuotaBy, QuotaKey};
use raftgate_cluster::state::Kind;
use serde::Serialize;

use super::resources::{read_state, with_revision};
use super::{AdminError, AdminState};
use crate::actors::limiter::unix_now;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/quotas/{consumer}", web::get().to(quotas));
}

#[derive(Serialize)]
struct QuotaView<'a> {
    route: &'a str,
    per: raftgate_cluster::quota::QuotaPer,
    limit: u64,
    /// Admitted in this window, as the nodes last reported it (every second at most).
    used: u64,
    remaining: u64,
    /// Granted to nodes and not yet reported spent: admitted or still admissible there.
    leased: u64,
    window_start: u64,
    window_end: u64,
}

async fn quotas(
    state: web::Data<AdminState>,
    req: HttpRequest,
    consumer: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let st = read_state(&state, &req).await?;
    if !st.consumers.contains_key(consumer.as_str()) {
        return Err(AdminError::NotFound(format!(
            "{} {:?} does not exist",
            Kind::Consumer,
            consumer.as_str()
        )));
    }
    let now = unix_now();
    let data: Vec<QuotaView> = st
        .routes
        .values()
        .filter_map(|route| {
            let spec = route.quota.as_ref()?;
            if spec.by(route.auth) != QuotaBy::Consumer {
                return None;
            }
            let (window_start, window_end) = spec.per.window(now);
            let key = QuotaKey {
                route: route.name.clone(),
                subject: consumer.to_string(),
            };
            let usage = st
                .quotas
                .get(&key)
                .filter(|u| u.window_start == window_start);
            let (used, granted) = usage.map_or((0, 0), |u| (u.used, u.granted));
            Some(QuotaView {
                route: &route.name,
                per: spec.per,
                limit: spec.requests,
                used,
                remaining: spec.requests.saturating_sub(used),
                leased: granted.saturating_sub(used),
                window_start,
                window_end,
            })
        })
        .collect();
    Ok(with_revision(HttpResponse::Ok(), st.revision)
        .json(serde_json::json!({"consumer": consumer.as_str(), "data": data})))
}
