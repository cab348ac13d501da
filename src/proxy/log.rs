//! Phase `log`: one line per request, always, whatever the earlier phases answered.

use super::ctx::RequestCtx;

/// The path logged is the one the client sent, as web servers' access logs do.
pub fn log(ctx: &RequestCtx, method: &str, path: &str) {
    if !tracing::enabled!(target: "raftgate::access", tracing::Level::INFO) {
        return;
    }
    let upstream_ms = ctx
        .upstream_started
        .map(|s| s.elapsed().as_secs_f64() * 1000.0);
    tracing::info!(
        target: "raftgate::access",
        request_id = %ctx.request_id,
        method,
        path,
        route = ctx.route_name(),
        status = ctx.status,
        target = ?ctx.target,
        upstream_ms,
        total_ms = ctx.started.elapsed().as_secs_f64() * 1000.0,
    );
}
