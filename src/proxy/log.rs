//! Phase `log`: counts every request ([`Telemetry::record`]) and writes its access log line,
//! always, whatever the earlier phases answered. Durations run to the response head: the body
//! streams to the client after this phase.

use actix_web::body::{BodySize, MessageBody};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

use super::cache;
use super::ctx::RequestCtx;
use crate::telemetry::{self, AccessLine, Observation, Telemetry};

/// The path logged is the one the client sent, as web servers' access logs do.
pub fn log(ctx: &RequestCtx, req: &HttpRequest, response: &HttpResponse, telemetry: &Telemetry) {
    let status = response.status().as_u16();
    let total = ctx.started.elapsed();
    let upstream_time = ctx.upstream_started.map(|s| s.elapsed());
    let cache = cache::result(ctx);
    telemetry.record(&Observation {
        route: ctx.route.as_deref(),
        status,
        consumer: ctx.consumer.as_ref(),
        error: ctx.error,
        cache,
        total,
        upstream: upstream_time,
    });
    if !tracing::enabled!(target: telemetry::ACCESS_TARGET, tracing::Level::INFO) {
        return;
    }
    let upstream = ctx.route.as_ref().and_then(|r| {
        let i = ctx.target?;
        r.service().targets.get(i).map(|t| t.url.as_str())
    });
    telemetry::access_event(&AccessLine {
        request_id: &ctx.request_id,
        method: req.method().as_str(),
        path: req.uri().path(),
        route: ctx.route_name(),
        consumer: ctx.consumer.as_deref(),
        client: req.peer_addr().map(|a| a.ip().to_canonical()),
        status,
        upstream,
        error: ctx.error,
        cache,
        total,
        upstream_time,
        bytes_in: req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()),
        bytes_out: match response.body().size() {
            BodySize::Sized(n) => Some(n),
            _ => None,
        },
    });
}
