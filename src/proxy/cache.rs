//! Phases `cache lookup` (before `balance`) and `cache fill` (after `forward`), on routes with
//! `cache`: GET and HEAD answers are served from the node's [`ResponseCache`] while fresh, and
//! concurrent misses for one key make one upstream request (the others wait for its answer).
//! `mark` gives every answer of a cached route its `X-Cache`: `HIT` (from the cache), `MISS`
//! (fetched and stored) or `BYPASS` (neither read nor stored: see README, "Response cache").

use std::time::{Duration, Instant, SystemTime};

use actix_web::body::{BodyStream, BoxBody, MessageBody};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use raftgate_cluster::spec::CacheSpec;

use super::ctx::RequestCtx;
use crate::cache::control::{self, Decision};
use crate::cache::{Entry, FlightGuard, Joined, Key, Request, ResponseCache, Stored};
use crate::routing::normalize_path;

/// Where a request of a cached route stands with the cache.
#[derive(Debug)]
pub enum CacheCtx {
    /// Not cacheable: the method, the client's `Cache-Control`, or what it carries.
    Bypass,
    Hit,
    /// Looked up, not found: the answer is stored if it may be.
    Miss(Box<Pending>),
    /// The answer was stored.
    Stored,
}

#[derive(Debug)]
pub struct Pending {
    key: Key,
    /// [`ResponseCache::generation`] before the upstream request.
    generation: u64,
    /// Held by the request that leads the upstream request for its key.
    flight: Option<FlightGuard>,
    /// Set by `forward` from the answer's head when it may be stored.
    decision: Option<Decision>,
    max_entry_bytes: usize,
}

const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// Phase `cache lookup`: a fresh stored answer, or `None` to go upstream (as the one request
/// for this key, or after the one ahead of it found nothing to store).
pub async fn lookup(
    ctx: &mut RequestCtx,
    req: &HttpRequest,
    cache: &ResponseCache,
) -> Option<HttpResponse> {
    // Routes without `cache` pay this check only.
    if ctx.route.as_ref().is_none_or(|r| r.route().cache.is_none()) {
        return None;
    }
    let route = ctx.route.clone()?;
    let spec = route.route().cache.as_ref()?;
    if !cacheable_request(ctx, req) {
        ctx.cache = Some(CacheCtx::Bypass);
        return None;
    }
    let Ok(path) = normalize_path(req.uri().path()) else {
        ctx.cache = Some(CacheCtx::Bypass);
        return None;
    };
    let key = Key::primary(&Request {
        route: route.name(),
        version: route.route().version,
        method: req.method().as_str(),
        path: &path,
        query: ctx.upstream_query(req),
        vary: &spec.vary,
        headers: req.headers(),
        consumer: ctx.consumer.as_deref(),
    });
    if let Some(hit) = serve(ctx, req, cache, &key) {
        return Some(hit);
    }
    let flight = match cache.join(key.flight_hash()) {
        Joined::Lead(guard) => {
            // The answer may have been stored between the lookup and the join.
            if let Some(hit) = serve(ctx, req, cache, &key) {
                return Some(hit);
            }
            Some(guard)
        }
        Joined::Wait(flight) => {
            let timeouts = route.route().timeouts.unwrap_or(route.service().timeouts);
            let deadline = Instant::now() + Duration::from_millis(timeouts.request_ms);
            flight.wait(deadline).await;
            if let Some(hit) = serve(ctx, req, cache, &key) {
                return Some(hit);
            }
            // The answer ahead was not stored (or differs by `Vary`): go upstream alone.
            None
        }
    };
    ctx.cache = Some(CacheCtx::Miss(Box::new(Pending {
        key,
        generation: cache.generation(),
        flight,
        decision: None,
        max_entry_bytes: cache.max_entry_bytes(),
    })));
    None
}

/// GET or HEAD without a body, a `Range`, the client's refusal of cached answers, or an
/// `Authorization` the gateway forwards (the upstream may personalise the answer to it).
fn cacheable_request(ctx: &RequestCtx, req: &HttpRequest) -> bool {
    let headers = req.headers();
    matches!(*req.method(), Method::GET | Method::HEAD)
        && !headers.contains_key(header::TRANSFER_ENCODING)
        && headers
            .get(header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() == b"0")
        && !headers.contains_key(header::RANGE)
        && (ctx.strip_authorization || !headers.contains_key(header::AUTHORIZATION))
        && control::request_allows_cache(headers)
}

/// The fresh answer under `key` (or under its `Vary` variant), as this request's response.
fn serve(
    ctx: &mut RequestCtx,
    req: &HttpRequest,
    cache: &ResponseCache,
    key: &Key,
) -> Option<HttpResponse> {
    let now = Instant::now();
    let stored = match cache.get(key, now)? {
        Entry::Response(s) => s,
        Entry::Varies(v) => match cache.get(&key.secondary(&v.names, req.headers()), now)? {
            Entry::Response(s) => s,
            Entry::Varies(_) => return None,
        },
    };
    ctx.cache = Some(CacheCtx::Hit);
    ctx.status = stored.status.as_u16();
    Some(respond(&stored, req.method() == Method::HEAD, ctx, now))
}

fn respond(stored: &Stored, head: bool, ctx: &RequestCtx, now: Instant) -> HttpResponse {
    let mut resp = if head {
        HttpResponse::new(stored.status)
    } else {
        HttpResponse::with_body(stored.status, BoxBody::new(stored.body.clone()))
    };
    let headers = resp.headers_mut();
    for (name, value) in &stored.headers {
        headers.append(name.clone(), value.clone());
    }
    if let Ok(id) = HeaderValue::from_str(&ctx.request_id) {
        headers.insert(HeaderName::from_static("x-request-id"), id);
    }
    let age = stored.age + now.saturating_duration_since(stored.stored_at).as_secs();
    headers.insert(header::AGE, HeaderValue::from(age));
    resp
}

/// For `forward`, once the answer's head is in: how much of its body to read whole so that it
/// can be stored (0: stream it as usual). Non-zero only for a miss whose answer may be stored.
pub fn body_limit(ctx: &mut RequestCtx, status: StatusCode, headers: &HeaderMap) -> u64 {
    let Some(CacheCtx::Miss(pending)) = &mut ctx.cache else {
        return 0;
    };
    let Some(spec) = ctx.route.as_ref().and_then(|r| r.route().cache.as_ref()) else {
        return 0;
    };
    pending.decision = decide(spec, status, headers);
    match pending.decision {
        Some(_) => pending.max_entry_bytes as u64,
        None => 0,
    }
}

fn decide(spec: &CacheSpec, status: StatusCode, headers: &HeaderMap) -> Option<Decision> {
    control::decide(status.as_u16(), headers, spec.ttl_s, SystemTime::now())
}

/// Phase `cache fill`: stores the answer of a miss when it may be (its body was read whole by
/// `forward` and fits), then lets the requests waiting for it look again.
pub fn fill(
    ctx: &mut RequestCtx,
    req: &HttpRequest,
    response: HttpResponse,
    cache: &ResponseCache,
) -> HttpResponse {
    let Some(CacheCtx::Miss(mut pending)) = ctx.cache.take() else {
        return response;
    };
    // Not stored unless it is: `BYPASS`. The flight ends when `pending` drops.
    ctx.cache = Some(CacheCtx::Bypass);
    let Some(decision) = pending.decision.take() else {
        return response;
    };
    let (response, body) = response.into_parts();
    let body = match body.try_into_bytes() {
        Ok(bytes) if bytes.len() <= pending.max_entry_bytes => bytes,
        Ok(bytes) => return response.set_body(BoxBody::new(bytes)),
        Err(body) => return response.set_body(body),
    };
    let now = Instant::now();
    let headers = (response.headers().iter())
        .filter(|(n, _)| *n != header::AGE && *n != "x-request-id")
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let stored = Entry::Response(std::sync::Arc::new(Stored {
        status: response.status(),
        headers,
        body: body.clone(),
        stored_at: now,
        ttl: decision.ttl,
        age: decision.age,
    }));
    let key = pending.key;
    let variant = (!decision.vary.is_empty()).then(|| key.secondary(&decision.vary, req.headers()));
    match &variant {
        None => cache.insert(key.clone(), stored),
        Some(variant) => {
            cache.insert(variant.clone(), stored);
            let varies = crate::cache::Varies {
                names: decision.vary,
                stored_at: now,
                ttl: decision.ttl,
            };
            cache.insert(key.clone(), Entry::Varies(std::sync::Arc::new(varies)));
        }
    }
    if cache.generation() == pending.generation {
        ctx.cache = Some(CacheCtx::Stored);
    } else {
        // A purge took effect while this answer was upstream: it may be what was purged.
        cache.invalidate(variant.as_ref().unwrap_or(&key));
    }
    drop(pending.flight.take());
    response.set_body(BoxBody::new(body))
}

/// Sets `X-Cache` on every answer of a cached route, gateway errors included.
pub fn mark(ctx: &RequestCtx, response: &mut HttpResponse) {
    if let Some(value) = result(ctx) {
        response
            .headers_mut()
            .insert(X_CACHE, HeaderValue::from_static(value));
    }
}

/// The `X-Cache` value of a request on a cached route (what `mark` sets and `log` counts).
pub fn result(ctx: &RequestCtx) -> Option<&'static str> {
    if ctx.route.as_ref().is_none_or(|r| r.route().cache.is_none()) {
        return None;
    }
    Some(match ctx.cache {
        Some(CacheCtx::Hit) => "HIT",
        Some(CacheCtx::Stored) => "MISS",
        _ => "BYPASS",
    })
}

/// An answer body of unknown length, read up to `limit` bytes.
pub enum UpTo<S> {
    /// All of it.
    Whole(Bytes),
    /// More than `limit`: what was read, and the rest of the stream.
    Over(Bytes, S),
}

/// Reads `stream` whole if it ends within `limit` bytes. A body that arrives in one chunk (a
/// small answer, read with its head) is kept as it is: copied only once a second chunk comes.
pub async fn read_up_to<S, E>(mut stream: S, limit: usize) -> Result<UpTo<S>, E>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let Some(first) = stream.next().await.transpose()? else {
        return Ok(UpTo::Whole(Bytes::new()));
    };
    if first.len() > limit {
        return Ok(UpTo::Over(first, stream));
    }
    let Some(second) = stream.next().await.transpose()? else {
        return Ok(UpTo::Whole(first));
    };
    let mut buf = BytesMut::with_capacity(first.len() + second.len());
    buf.extend_from_slice(&first);
    let mut next = Some(second);
    while let Some(chunk) = next {
        buf.extend_from_slice(&chunk);
        if buf.len() > limit {
            return Ok(UpTo::Over(buf.freeze(), stream));
        }
        next = stream.next().await.transpose()?;
    }
    Ok(UpTo::Whole(buf.freeze()))
}

/// The body `forward` answers with when an unknown-length answer overran `read_up_to`.
pub fn prefixed<S, E>(prefix: Bytes, rest: S) -> BodyStream<impl Stream<Item = Result<Bytes, E>>>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<Box<dyn std::error::Error>> + 'static,
{
    BodyStream::new(futures_util::stream::once(async move { Ok(prefix) }).chain(rest))
}
