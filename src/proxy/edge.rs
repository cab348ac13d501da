//! Phase `edge`: the hardened edge (API.md §2 `[limits]`, §4), run before anything reads the
//! request. Header count and size (431), Content-Length framing (400) and the body limit
//! against Content-Length (413, before a byte of the body is read). The body limit while
//! streaming is [`Limited`], which `forward` wraps around the payload it sends upstream.
//!
//! The connection's own framing ([`super::head`]) has already refused, in JSON, every head
//! that breaks these limits or frames its body ambiguously, before actix-http read it. The
//! checks are repeated here, on the head as the app sees it (fields carried past actix-http
//! restored), so that the gateway's guarantee does not rest on one parser alone.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use actix_web::dev::ServiceResponse;
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderMap};
use actix_web::{web, HttpMessage, HttpRequest};
use awc::error::SendRequestError;
use bytes::Bytes;
use futures_util::Stream;

use super::ctx::RequestCtx;
use super::error::ProxyError;
use crate::config::Limits;

pub fn edge(ctx: &mut RequestCtx, req: &HttpRequest, limits: &Limits) -> Result<(), ProxyError> {
    let headers = req.headers();
    if headers.len() > limits.max_headers {
        return Err(ProxyError::HeadersTooLarge(format!(
            "{} header fields, the limit is {}",
            headers.len(),
            limits.max_headers
        )));
    }
    let size = head_size(req);
    if size > limits.max_header_bytes {
        return Err(ProxyError::HeadersTooLarge(format!(
            "{size} bytes of request line and headers, the limit is {}",
            limits.max_header_bytes
        )));
    }
    if let Some(length) = content_length(headers)? {
        if length > limits.max_body_bytes {
            return Err(ProxyError::BodyTooLarge {
                limit: limits.max_body_bytes,
            });
        }
    }
    ctx.body_limit = limits.max_body_bytes;
    Ok(())
}

/// The request head as a client writes it: request line, `name: value` lines, blank line.
/// Optional whitespace around values is not counted (the parser has dropped it).
fn head_size(req: &HttpRequest) -> usize {
    let uri = req.uri();
    let mut target = uri.path_and_query().map_or(1, |pq| pq.as_str().len());
    if let Some(authority) = uri.authority() {
        // absolute-form: `http://host:port/path`
        target += uri.scheme_str().map_or(0, |s| s.len() + 3) + authority.as_str().len();
    }
    let line = req.method().as_str().len() + 1 + target + " HTTP/1.1\r\n".len();
    let fields: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum();
    line + fields + 2
}

/// The one Content-Length a request may carry (RFC 9112 §6.3): none with Transfer-Encoding,
/// never two, only digits.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ProxyError> {
    let mut values = headers.get_all(header::CONTENT_LENGTH);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bad = |why: &str| Err(ProxyError::BadRequest(why.to_string()));
    if values.next().is_some() {
        return bad("more than one Content-Length");
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return bad("both Content-Length and Transfer-Encoding");
    }
    match decimal_length(value.as_bytes()) {
        Some(length) => Ok(Some(length)),
        None => bad("invalid Content-Length"),
    }
}

/// A Content-Length value: 1 to 19 digits and nothing else (no sign, no spaces, no list).
pub(super) fn decimal_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // At most 19 digits: always fits in a u64.
    Some(digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Why the body sent upstream ended early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body passed the limit of {limit} bytes")]
    OverLimit { limit: u64 },
    #[error(transparent)]
    Client(#[from] PayloadError),
}

/// Whether an upstream send failed because the body passed the limit.
pub fn over_limit(err: &SendRequestError) -> bool {
    matches!(err, SendRequestError::Body(e)
        if matches!(e.downcast_ref::<BodyError>(), Some(BodyError::OverLimit { .. })))
}

/// The client's body, counted on its way upstream: past `limit` it ends with
/// [`BodyError::OverLimit`], which makes awc drop the upstream connection mid-body, so the
/// upstream never sees a complete request.
pub struct Limited {
    payload: Option<web::Payload>,
    /// Where the unread rest of the body is parked once the limit is passed.
    req: HttpRequest,
    seen: u64,
    limit: u64,
}

impl Limited {
    pub fn new(payload: web::Payload, req: &HttpRequest, limit: u64) -> Limited {
        Limited {
            payload: Some(payload),
            req: req.clone(),
            seen: 0,
            limit,
        }
    }
}

impl Stream for Limited {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(payload) = this.payload.as_mut() else {
            return Poll::Ready(None);
        };
        match ready!(Pin::new(payload).poll_next(cx)) {
            Some(Ok(chunk)) => {
                this.seen += chunk.len() as u64;
                if this.seen > this.limit {
                    // Dropped, the payload would make actix read and discard the rest of a
                    // chunked body for as long as the client sends it. Kept alive until the
                    // answer goes out, it makes actix close the connection after the 413.
                    if let Some(rest) = this.payload.take() {
                        this.req.extensions_mut().insert(UnreadBody(rest));
                    }
                    return Poll::Ready(Some(Err(BodyError::OverLimit { limit: this.limit })));
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            None => Poll::Ready(None),
        }
    }
}

/// The rest of a body cut off at the limit.
pub struct UnreadBody(#[allow(dead_code)] web::Payload);

/// The rest of the request's body if it was cut off at the limit. Held by the response body
/// until it is sent, it makes actix see the request body unread when the response ends, and so
/// close the connection (after a short linger) instead of draining it.
pub fn cut_body<B>(res: &ServiceResponse<B>) -> Option<UnreadBody> {
    res.request().extensions_mut().remove::<UnreadBody>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn limits() -> Limits {
        Limits {
            max_header_bytes: 200,
            max_headers: 4,
            max_body_bytes: 10,
            header_timeout_ms: 1000,
            drain_timeout_ms: 10_000,
            drain_grace_ms: 1_000,
        }
    }

    fn check(req: TestRequest) -> Result<(), ProxyError> {
        let req = req.to_http_request();
        let mut ctx = RequestCtx::new("t".into());
        edge(&mut ctx, &req, &limits())
    }

    fn code(r: Result<(), ProxyError>) -> &'static str {
        r.err().map_or("ok", |e| e.code())
    }

    #[test]
    fn head_size_counts_the_request_line_and_every_field() {
        let req = TestRequest::get()
            .uri("/abc?x=1")
            .insert_header(("host", "h"))
            .insert_header(("x-a", "12"))
            .to_http_request();
        let raw = "GET /abc?x=1 HTTP/1.1\r\nhost: h\r\nx-a: 12\r\n\r\n";
        assert_eq!(head_size(&req), raw.len());
    }

    #[test]
    fn headers_over_the_limits_are_431() {
        let mut many = TestRequest::get();
        for i in 0..5 {
            many = many.append_header((format!("x-{i}"), "v"));
        }
        assert_eq!(code(check(many)), "headers_too_large");
        let long = TestRequest::get().insert_header(("x-long", "v".repeat(200)));
        assert_eq!(code(check(long)), "headers_too_large");
        assert_eq!(
            code(check(TestRequest::get().insert_header(("x-a", "v")))),
            "ok"
        );
    }

    #[test]
    fn content_length_must_be_one_number_without_transfer_encoding() {
        let cl = |v: &str| TestRequest::post().insert_header((header::CONTENT_LENGTH, v));
        assert_eq!(code(check(cl("10"))), "ok");
        assert_eq!(code(check(cl("11"))), "body_too_large");
        for bad in ["", "+5", "-1", "5, 5", "0x5", "99999999999999999999"] {
            assert_eq!(code(check(cl(bad))), "bad_request", "{bad:?}");
        }
        let dup = cl("5").append_header((header::CONTENT_LENGTH, "5"));
        assert_eq!(code(check(dup)), "bad_request");
        let both = cl("5").insert_header((header::TRANSFER_ENCODING, "chunked"));
        assert_eq!(code(check(both)), "bad_request");
    }
}
