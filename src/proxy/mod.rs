//! The client-facing proxy: an ordered pipeline of phases, one file each, sharing one
//! [`RequestCtx`] (see docs/request-lifecycle.md):
//!
//! `route → balance → forward → log`
//!
//! Authentication, authorisation, limits and the cache slot in between `route` and `balance` as
//! they are built. A phase returns `Ok` to continue or a [`ProxyError`] to answer early; `log`
//! always runs. The route table is read from the router's published snapshot: no lock, no
//! mailbox.

mod balance;
mod ctx;
mod error;
mod forward;
mod log;
mod route;

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::Method;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use arc_swap::ArcSwap;

pub use ctx::RequestCtx;
pub use error::ProxyError;
use forward::Upstreams;

use crate::config::Config;
use crate::routing::RouteTable;

/// What every proxy worker shares.
pub struct ProxyShared {
    pub table: Arc<ArcSwap<RouteTable>>,
}

/// Builds the proxy server on `listener`; the caller runs (spawns) it.
pub fn server(
    config: &Config,
    listener: std::net::TcpListener,
    table: Arc<ArcSwap<RouteTable>>,
) -> std::io::Result<actix_web::dev::Server> {
    let shared = web::Data::new(ProxyShared { table });
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(shared.clone())
            .app_data(web::Data::new(Upstreams::default()))
            .default_service(web::to(handle))
    })
    .workers(config.workers)
    .disable_signals()
    .client_request_timeout(Duration::from_millis(config.limits.header_timeout_ms))
    .shutdown_timeout(10)
    .listen(listener)?
    .run())
}

async fn handle(
    req: HttpRequest,
    body: web::Payload,
    shared: web::Data<ProxyShared>,
    upstreams: web::Data<Upstreams>,
) -> HttpResponse {
    let mut ctx = RequestCtx::new(request_id(&req));
    let response = match pipeline(&mut ctx, &req, body, &shared, &upstreams).await {
        Ok(r) => r,
        Err(e) => {
            ctx.status = e.status().as_u16();
            if e.source() == error::Source::Upstream {
                tracing::warn!(request_id = %ctx.request_id, route = ctx.route_name(), error = %e, "upstream failure");
            }
            e.response(&ctx.request_id)
        }
    };
    log::log(&ctx, req.method().as_str());
    response
}

async fn pipeline(
    ctx: &mut RequestCtx,
    req: &HttpRequest,
    body: web::Payload,
    shared: &ProxyShared,
    upstreams: &Upstreams,
) -> Result<HttpResponse, ProxyError> {
    // The guard is dropped before the first await; the matched route is held by `Arc`, so a
    // config change mid-request never affects it.
    route::route(ctx, req, &shared.table.load())?;
    let retries = ctx.route.as_ref().map(|r| r.service().retries).unwrap_or(0);
    let idempotent = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    );
    let mut body = Some(body);
    let mut failed = None;
    let mut attempt = 0;
    loop {
        balance::balance(ctx, failed)?;
        match forward::forward(ctx, req, &mut body, upstreams).await {
            Ok(f) => return Ok(f.response),
            Err(e) if e.retry_safe() && idempotent && attempt < retries && body.is_some() => {
                tracing::debug!(request_id = %ctx.request_id, error = %e, "retrying on another target");
                failed = ctx.target;
                attempt += 1;
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
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
    {
        if !id.is_empty() && id.len() <= 200 {
            return id.to_string();
        }
    }
    REQUEST_IDS.with(|c| {
        let (prefix, n) = c.get();
        c.set((prefix, n + 1));
        format!("{prefix:016x}{n:016x}")
    })
}
