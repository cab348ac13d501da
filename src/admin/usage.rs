//! `GET /usage?consumer=&route=[&cluster=true]`: requests by consumer, route and status class,
//! counted by this node since it started, or summed over every member (each asked over the
//! cluster port; one that does not answer in time is listed in `missing`).

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use raftgate_cluster::usage::{merge, UsageFilter};
use serde::Deserialize;

use super::{AdminError, AdminState};

/// How long `?cluster=true` waits for a member's counts.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(1);

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/usage", web::get().to(usage));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Query {
    consumer: Option<String>,
    route: Option<String>,
    #[serde(default)]
    cluster: bool,
}

async fn usage(state: web::Data<AdminState>, req: HttpRequest) -> Result<HttpResponse, AdminError> {
    let Query {
        consumer,
        route,
        cluster,
    } = web::Query::<Query>::from_query(req.query_string())
        .map_err(|e| AdminError::bad_request(format!("bad query string: {e}")))?
        .into_inner();
    // An empty parameter (`?consumer=`) filters nothing.
    let filter = UsageFilter {
        consumer: consumer.filter(|c| !c.is_empty()),
        route: route.filter(|r| !r.is_empty()),
    };
    let node_id = state.node.id();
    if !cluster {
        let data = merge(state.telemetry.usage(&filter));
        return Ok(HttpResponse::Ok().json(serde_json::json!({
            "node_id": node_id,
            "cluster": false,
            "data": data,
        })));
    }
    let usage = state.node.cluster_usage(&filter, MEMBER_TIMEOUT).await;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "node_id": node_id,
        "cluster": true,
        "nodes": usage.nodes,
        "missing": usage.missing,
        "data": usage.data,
    })))
}
