//! Phase `rate_limit`: takes a token from this node's share of the route's cluster-wide rate
//! limit for the request's subject (its consumer, its client IP, or the route as a whole), or
//! answers 429 `rate_limited` with `Retry-After`. What it learns goes on `ctx.rate_limit`, from
//! which `handle` writes the `RateLimit-*` headers on every response of a limited route.

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::HttpRequest;
use raftgate_cluster::spec::RateLimitBy;

use super::ctx::RequestCtx;
use super::error::ProxyError;
use crate::ratelimit::{RateLimits, Subject};

pub fn rate_limit(
    ctx: &mut RequestCtx,
    req: &HttpRequest,
    limits: &RateLimits,
) -> Result<(), ProxyError> {
    let Some(route) = &ctx.route else {
        return Ok(());
    };
    let route = route.route();
    let Some(spec) = &route.rate_limit else {
        return Ok(());
    };
    let ip = || {
        let ip = req.peer_addr().map(|a| a.ip().to_canonical());
        Subject::Ip(ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into()))
    };
    let subject = match spec.by(route.auth) {
        // Validation refuses `by: consumer` without auth; a route without one counts by IP.
        RateLimitBy::Consumer => ctx.consumer.clone().map_or_else(ip, Subject::Consumer),
        RateLimitBy::Ip => ip(),
        RateLimitBy::Route => Subject::Route,
    };
    let verdict = limits.check(route, spec, subject);
    ctx.rate_limit = Some(verdict);
    if verdict.admitted {
        Ok(())
    } else {
        Err(ProxyError::RateLimited {
            retry_after_s: verdict.retry_after_s,
        })
    }
}

/// `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` on a response of a limited
/// route, whatever answered it (the upstream, or the gateway with an error).
pub fn headers(ctx: &RequestCtx, headers: &mut HeaderMap) {
    if let Some(v) = &ctx.rate_limit {
        for (name, value) in [
            ("ratelimit-limit", v.limit),
            ("ratelimit-remaining", v.remaining),
            ("ratelimit-reset", v.reset_s),
        ] {
            headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
        }
    }
}
