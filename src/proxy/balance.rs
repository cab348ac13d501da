//! Phase `balance`: choose the target for this attempt on the route's service runtime and
//! count the attempt in flight there; `finish` tells the runtime how the attempt went (passive
//! health, latency estimate). Both touch atomics only.

use std::net::IpAddr;

use actix_web::HttpRequest;

use super::ctx::RequestCtx;
use super::error::ProxyError;
use crate::balancing::ring::stable_hash;
use crate::balancing::{now_us, HashOn, Outcome};

/// Picks the target and starts the attempt (`ctx.target`, `ctx.attempt`). `tried` are the
/// targets this request already failed on: a retry goes elsewhere while another is eligible.
/// `NoHealthyUpstream` when every target is ejected or failing its health check.
pub fn balance(ctx: &mut RequestCtx, req: &HttpRequest, tried: &[usize]) -> Result<(), ProxyError> {
    let route = ctx.route.as_ref().expect("balance runs after route");
    let upstream = route.upstream();
    let consumer = ctx.consumer.as_deref();
    let picked = upstream.pick(tried, now_us(), || {
        hash_key(upstream.hash_on(), req, consumer)
    });
    ctx.target = picked;
    ctx.attempt = picked.map(|i| upstream.begin(i));
    match picked {
        Some(_) => Ok(()),
        None => Err(ProxyError::NoHealthyUpstream {
            service: route.service().name.clone(),
        }),
    }
}

/// Ends the attempt `balance` started, recording its outcome: a response (a 5xx counts as a
/// failure), or an upstream failure. Errors that are not the upstream's end it unrecorded.
pub fn finish<T>(ctx: &mut RequestCtx, result: &Result<T, ProxyError>) {
    let Some(attempt) = ctx.attempt.take() else {
        return;
    };
    let outcome = match result {
        Ok(_) => Outcome::Status(ctx.status),
        Err(ProxyError::Timeout { .. }) => Outcome::TimedOut,
        Err(ProxyError::Connect { .. } | ProxyError::BadGateway { .. }) => Outcome::Failed,
        Err(_) => return,
    };
    attempt.finish(outcome);
}

/// The `consistent_hash` key of a request. `consumer` is the authenticated consumer (a
/// client-sent `X-Consumer` is never trusted); it and `header:NAME` fall back to the client IP
/// on a request without one.
fn hash_key(hash_on: &HashOn, req: &HttpRequest, consumer: Option<&str>) -> u64 {
    let key = match hash_on {
        HashOn::Header(name) => req.headers().get(name.as_str()).map(|v| v.as_bytes()),
        HashOn::Consumer => consumer.map(str::as_bytes),
        HashOn::Ip => None,
    };
    match key {
        Some(bytes) => stable_hash(&[bytes]),
        None => client_ip_key(req),
    }
}

/// The client's address as bytes, an IPv4-mapped IPv6 peer as its IPv4 address, so a client
/// hashes alike on every node whatever its listener's address family.
fn client_ip_key(req: &HttpRequest) -> u64 {
    match req.peer_addr().map(|a| a.ip().to_canonical()) {
        Some(IpAddr::V4(ip)) => stable_hash(&[&ip.octets()]),
        Some(IpAddr::V6(ip)) => stable_hash(&[&ip.octets()]),
        None => 0,
    }
}
