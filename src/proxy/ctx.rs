//! `RequestCtx`: what the phases learn about one request, passed `&mut` from phase to phase.

use std::sync::Arc;
use std::time::Instant;

use crate::balancing::Attempt;
use crate::routing::CompiledRoute;

pub struct RequestCtx {
    pub started: Instant,
    /// Kept from the client's `X-Request-Id` or generated.
    pub request_id: String,
    pub route: Option<Arc<CompiledRoute>>,
    /// The path sent upstream (after `strip_path`), without the target's base path.
    pub forward_path: String,
    /// Index into the route's targets.
    pub target: Option<usize>,
    /// The attempt on `target` that `balance` started: counts it in flight until it is
    /// finished (`balance::finish`) or dropped.
    pub attempt: Option<Attempt>,
    pub status: u16,
    /// The gateway's error code (`rate_limited`, `no_route`, …) when it answered with one.
    pub error: Option<&'static str>,
    pub upstream_started: Option<Instant>,
    /// The most body bytes sent upstream (`limits.max_body_bytes`, set by `edge`).
    pub body_limit: u64,
    /// The authenticated consumer (`authenticate`), sent upstream as `X-Consumer`.
    pub consumer: Option<Arc<str>>,
    /// The credential came in `Authorization`: it is not forwarded.
    pub strip_authorization: bool,
    /// The query to forward when it differs from the client's (an `apikey` parameter removed).
    pub forward_query: Option<String>,
    /// On a cached route: what `cache lookup` found, what `cache fill` did (`X-Cache`).
    pub cache: Option<super::cache::CacheCtx>,
    /// What `rate_limit` decided on a limited route: the `RateLimit-*` headers of the answer.
    pub rate_limit: Option<crate::ratelimit::Verdict>,
}

impl RequestCtx {
    pub fn new(request_id: String) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            request_id,
            route: None,
            forward_path: String::new(),
            target: None,
            attempt: None,
            status: 0,
            error: None,
            upstream_started: None,
            body_limit: u64::MAX,
            consumer: None,
            strip_authorization: false,
            forward_query: None,
            cache: None,
            rate_limit: None,
        }
    }

    pub fn route_name(&self) -> &str {
        self.route.as_ref().map(|r| r.name()).unwrap_or("none")
    }

    /// The query string to send upstream, if any.
    pub fn upstream_query<'a>(&'a self, req: &'a actix_web::HttpRequest) -> Option<&'a str> {
        match &self.forward_query {
            Some(q) => Some(q.as_str()).filter(|q| !q.is_empty()),
            None => req.uri().query(),
        }
    }

    /// Whether a client request header stays out of the upstream request because it carried
    /// the gateway's credential or claims an identity: `X-Consumer` is the gateway's to set.
    pub fn is_credential_header(&self, name: &actix_web::http::header::HeaderName) -> bool {
        name == "x-consumer"
            || (self.consumer.is_some()
                && (name == "apikey"
                    || (self.strip_authorization
                        && name == actix_web::http::header::AUTHORIZATION)))
    }
}
