//! The client-facing proxy: an ordered pipeline of phases, one file each, sharing one
//! [`RequestCtx`] (see docs/request-lifecycle.md):
//!
//! `edge → route → authenticate → authorize → rate_limit → quota → cache lookup → balance →
//! forward → cache fill → log`
//!
//! A WebSocket upgrade on a `websocket: true` route takes `balance → websocket` instead of
//! `balance → forward`: the socket is relayed by a task of its own that outlives the request.
//!
//! A cache hit answers at `cache lookup`, before any upstream is picked. A phase returns `Ok` to
//! continue or a [`ProxyError`] to answer early; `log`
//! always runs. The route table and the credential index are read from the snapshots the
//! router and the auth supervisor publish: no lock, no mailbox.

mod auth;
mod balance;
mod cache;
mod conn;
mod ctx;
mod edge;
mod error;
mod forward;
mod h1;
mod head;
mod limit;
mod log;
mod quota;
mod route;
mod tls_io;
mod websocket;

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::http::{ConnectionType, Method};
use actix_web::{web, App, HttpRequest, HttpResponse};
use arc_swap::ArcSwap;
use raftgate_cluster::spec::AuthMode;

pub use ctx::RequestCtx;
pub use error::ProxyError;
use forward::Upstreams;
pub use tls_io::TlsListener;

use crate::actors::limiter::LimiterHandle;
use crate::auth::AuthIndex;
use crate::cache::ResponseCache;
use crate::config::{Config, Limits};
use crate::ratelimit::RateLimits;
use crate::routing::RouteTable;
use crate::telemetry::Telemetry;

/// What every proxy worker shares: the snapshots and handles of the node's actors.
pub struct ProxyShared {
    /// False once a graceful stop has begun: every answer then closes its connection.
    pub accepting: Arc<AtomicBool>,
    pub table: Arc<ArcSwap<RouteTable>>,
    pub auth: Arc<ArcSwap<AuthIndex>>,
    pub limiter: LimiterHandle,
    /// The rate limits' live node count and buckets (the rate-limit actor's).
    pub rate_limits: Arc<RateLimits>,
    /// The response cache: read and filled here, purged by the cache actor.
    pub cache: Arc<ResponseCache>,
    pub limits: Limits,
    /// Counts every request (`log`).
    pub telemetry: Arc<Telemetry>,
}

/// Builds the proxy server on `listener`, and on `tls` behind TLS termination when given; the
/// caller runs (spawns) it.
pub fn server(
    config: &Config,
    listener: std::net::TcpListener,
    tls: Option<TlsListener>,
    shared: ProxyShared,
) -> std::io::Result<actix_web::dev::Server> {
    let shared = web::Data::new(shared);
    conn::serve(config, listener, tls, move || {
        App::new()
            .app_data(shared.clone())
            .app_data(web::Data::new(Upstreams::default()))
            .wrap_fn(conn::track)
            .default_service(web::to(handle))
    })
}

async fn handle(
    req: HttpRequest,
    body: web::Payload,
    shared: web::Data<ProxyShared>,
    upstreams: web::Data<Upstreams>,
) -> HttpResponse {
    let mut ctx = RequestCtx::new(request_id(&req));
    let mut response = match pipeline(&mut ctx, &req, body, &shared, &upstreams).await {
        Ok(r) => r,
        Err(e) => {
            ctx.status = e.status().as_u16();
            ctx.error = Some(e.code());
            if e.source() == error::Source::Upstream {
                tracing::warn!(request_id = %ctx.request_id, route = ctx.route_name(), error = %e, "upstream failure");
            }
            e.response(&ctx.request_id)
        }
    };
    // Draining: the client learns from this answer that the connection ends here, and sends
    // its next request elsewhere, rather than on a connection about to be closed (Envoy's
    // drain). An upgraded (WebSocket) connection is left as it is.
    if !shared.accepting.load(Ordering::Relaxed)
        && response.head().connection_type() != ConnectionType::Upgrade
    {
        response
            .head_mut()
            .set_connection_type(ConnectionType::Close);
    }
    limit::headers(&ctx, response.headers_mut());
    cache::mark(&ctx, &mut response);
    log::log(&ctx, &req, &response, &shared.telemetry);
    response
}

async fn pipeline(
    ctx: &mut RequestCtx,
    req: &HttpRequest,
    body: web::Payload,
    shared: &ProxyShared,
    upstreams: &Upstreams,
) -> Result<HttpResponse, ProxyError> {
    edge::edge(ctx, req, &shared.limits)?;
    // The guard is dropped before the first await; the matched route is held by `Arc`, so a
    // config change mid-request never affects it.
    route::route(ctx, req, &shared.table.load())?;
    if ctx
        .route
        .as_ref()
        .is_some_and(|r| r.route().auth != AuthMode::None)
    {
        let index = shared.auth.load();
        auth::authenticate(ctx, req, &index)?;
        auth::authorize(ctx, &index)?;
    }
    limit::rate_limit(ctx, req, &shared.rate_limits)?;
    quota::quota(ctx, req, &shared.limiter).await?;
    if websocket::wanted(ctx, req) {
        return websocket::websocket(ctx, req, body).await;
    }
    if let Some(hit) = cache::lookup(ctx, req, &shared.cache).await {
        return Ok(hit);
    }
    let retries = ctx.route.as_ref().map(|r| r.service().retries).unwrap_or(0);
    let idempotent = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    );
    let mut body = Some(body);
    // Targets this request failed on, for the retry to avoid; allocates only on a retry.
    let mut tried = Vec::new();
    loop {
        balance::balance(ctx, req, &tried)?;
        let forwarded = forward::forward(ctx, req, &mut body, upstreams).await;
        balance::finish(ctx, &forwarded);
        match forwarded {
            Ok(f) => return Ok(cache::fill(ctx, req, f.response, &shared.cache)),
            Err(e)
                if e.retry_safe()
                    && idempotent
                    && tried.len() < retries as usize
                    && body.is_some() =>
            {
                tracing::debug!(request_id = %ctx.request_id, error = %e, "retrying on another target");
                tried.extend(ctx.target);
            }
            Err(e) => return Err(e),
        }
    }
}

thread_local! {
    static REQUEST_IDS: Cell<(u64, u64)> = Cell::new((rand::random(), 0));
}

/// The client's `X-Request-Id` when it is sane, else a fresh one: a per-thread random prefix
/// and a counter, unique without a random draw per request.
fn request_id(req: &HttpRequest) -> String {
    if let Some(id) = req
        .headers()
        .get(forward::X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
    {
        if !id.is_empty() && id.len() <= 200 {
            return id.to_string();
        }
    }
    REQUEST_IDS.with(|c| {
        let (prefix, n) = c.get();
        c.set((prefix, n + 1));
        hex_id(prefix, n)
    })
}

/// 32 lower-case hex digits, written by hand (`format!` costs ~2k instructions a request).
fn hex_id(prefix: u64, n: u64) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(32);
    for word in [prefix, n] {
        for shift in (0..16).rev() {
            out.push(DIGITS[((word >> (shift * 4)) & 0xf) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_ids_are_32_hex_digits() {
        assert_eq!(
            super::hex_id(0xdead_beef, 1),
            format!("{:016x}{:016x}", 0xdead_beefu64, 1u64)
        );
    }
}
