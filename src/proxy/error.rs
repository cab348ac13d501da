//! `ProxyError`: every gateway-made answer, with where it came from, and its one mapping to the
//! status table of API.md §4.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;

/// Who caused a failure: the client's request, the upstream, or the gateway itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Client,
    Upstream,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0}")]
    BadRequest(String),
    /// Missing or invalid credentials: one message for every reason.
    #[error("missing or invalid credentials")]
    Unauthorized { challenge: &'static str },
    #[error("this consumer is not allowed on this route")]
    Forbidden,
    /// The route's rate limit is spent; `retry_after_s` until a token is back.
    #[error("rate limit exceeded; retry in {retry_after_s} s")]
    RateLimited { retry_after_s: u64 },
    /// The quota of this window is spent cluster-wide; `retry_after_s` until the next window.
    #[error("quota exceeded; retry in {retry_after_s} s")]
    QuotaExceeded { retry_after_s: u64 },
    #[error("request headers too large: {0}")]
    HeadersTooLarge(String),
    #[error("the request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("no route matches {method} {host}{path}")]
    NoRoute {
        method: String,
        host: String,
        path: String,
    },
    /// No answer came back: the connection failed, or broke before the response began. An
    /// idempotent request may go to another target.
    #[error("cannot connect to the upstream {target}: {reason}")]
    Connect { target: String, reason: String },
    #[error("the upstream {target} failed: {reason}")]
    BadGateway { target: String, reason: String },
    #[error("the upstream {target} did not answer within {ms} ms")]
    Timeout { target: String, ms: u64 },
    /// Every target of the service is ejected or failing its active health check.
    #[error("no healthy target in the service {service}")]
    NoHealthyUpstream { service: String },
}

impl ProxyError {
    pub fn source(&self) -> Source {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::HeadersTooLarge(_)
            | ProxyError::BodyTooLarge { .. }
            | ProxyError::NoRoute { .. }
            | ProxyError::Unauthorized { .. }
            | ProxyError::Forbidden
            | ProxyError::RateLimited { .. }
            | ProxyError::QuotaExceeded { .. } => Source::Client,
            _ => Source::Upstream,
        }
    }

    /// The attempt got no answer at all: safe to send again to another target when the method
    /// is idempotent (the caller checks that).
    pub fn retry_safe(&self) -> bool {
        matches!(self, ProxyError::Connect { .. })
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ProxyError::Forbidden => StatusCode::FORBIDDEN,
            ProxyError::RateLimited { .. } | ProxyError::QuotaExceeded { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ProxyError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::Connect { .. } | ProxyError::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::NoHealthyUpstream { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::Unauthorized { .. } => "unauthorized",
            ProxyError::Forbidden => "forbidden",
            ProxyError::RateLimited { .. } => "rate_limited",
            ProxyError::QuotaExceeded { .. } => "quota_exceeded",
            ProxyError::HeadersTooLarge(_) => "headers_too_large",
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::NoRoute { .. } => "no_route",
            ProxyError::Connect { .. } | ProxyError::BadGateway { .. } => "bad_gateway",
            ProxyError::Timeout { .. } => "upstream_timeout",
            ProxyError::NoHealthyUpstream { .. } => "no_healthy_upstream",
        }
    }

    /// The JSON body clients see. Upstream addresses stay in the log, not in the answer.
    pub fn response(&self, request_id: &str) -> HttpResponse {
        let message = match self.source() {
            Source::Client => self.to_string(),
            Source::Upstream => match self {
                ProxyError::Timeout { .. } => "the upstream did not answer in time".to_string(),
                ProxyError::NoHealthyUpstream { .. } => {
                    "no healthy upstream target is available".to_string()
                }
                _ => "the upstream could not be reached or answered badly".to_string(),
            },
        };
        let mut response = HttpResponse::build(self.status());
        match self {
            ProxyError::Unauthorized { challenge } => {
                response.insert_header((actix_web::http::header::WWW_AUTHENTICATE, *challenge));
            }
            ProxyError::RateLimited { retry_after_s }
            | ProxyError::QuotaExceeded { retry_after_s } => {
                response.insert_header((
                    actix_web::http::header::RETRY_AFTER,
                    retry_after_s.to_string(),
                ));
            }
            _ => {}
        }
        response
            .insert_header(("X-Request-Id", request_id))
            .json(serde_json::json!({"error": {"code": self.code(), "message": message}}))
    }
}
