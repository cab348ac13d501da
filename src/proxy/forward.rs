//! Phase `forward`: send the request to the chosen target — `http://` targets with the
//! proxy's own client ([`h1`]), `https://` ones with awc —, streaming the body both ways, and
//! turn the upstream's answer into the client's.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BodyStream, SizedStream};
use actix_web::error::{ParseError, PayloadError};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use awc::error::{ConnectError, SendRequestError};
use bytes::Bytes;
use futures_util::Stream;
use raftgate_cluster::spec::{Service, TargetUrl, Timeouts};

use super::ctx::RequestCtx;
use super::edge::{self, BodyError, Limited};
use super::error::ProxyError;
use super::h1;
use super::tls_io::Tls;
use crate::tls::upstream::{client_config, OwnedTrust, Trust};

/// Upstream HTTP clients of one worker: for `http://` targets the proxy's own ([`h1`], one
/// keep-alive pool); for `https://` targets awc clients, one per connect timeout (awc sets that
/// per client) and trust (web roots or the service's CA), each with its own pool.
#[derive(Default)]
pub struct Upstreams {
    plain: Rc<h1::Pool>,
    /// Few, so a list, searched without allocating.
    tls_clients: RefCell<Vec<(u64, OwnedTrust, awc::Client)>>,
}

impl Upstreams {
    /// The awc client for the `https://` `target` of `service`; fails only when the service's
    /// CA cannot be used on this node.
    fn client(
        &self,
        connect_ms: u64,
        target: &TargetUrl,
        service: &Service,
    ) -> Result<awc::Client, String> {
        debug_assert_eq!(target.scheme, "https");
        let trust = Trust::of(service);
        let mut clients = self.tls_clients.borrow_mut();
        if let Some((_, _, c)) =
            (clients.iter()).find(|(ms, t, _)| *ms == connect_ms && t.is(&trust))
        {
            return Ok(c.clone());
        }
        let client = upstream_client(connect_ms, client_config(&trust)?);
        // Replaced CAs leave clients behind: start over rather than grow without bound.
        if clients.len() >= 32 {
            clients.clear();
        }
        clients.push((connect_ms, trust.to_owned(), client.clone()));
        Ok(client)
    }
}

fn upstream_client(connect_ms: u64, tls: Arc<rustls::ClientConfig>) -> awc::Client {
    let timeout = Duration::from_millis(connect_ms);
    // `connect_ms` bounds the TLS handshake as well as the TCP connect.
    let connector = awc::Connector::new()
        .timeout(timeout)
        .limit(0)
        .conn_keep_alive(h1::IDLE_TIMEOUT)
        .rustls_0_23(tls)
        .handshake_timeout(timeout);
    awc::Client::builder()
        .connector(connector)
        .disable_redirects()
        .no_default_headers()
        .timeout(Duration::from_secs(3600))
        .finish()
}

/// `X-Forwarded-Proto` for the upstream: how the client reached this gateway. Never taken from
/// the client's own `Forwarded` / `X-Forwarded-Proto` headers (the gateway is the edge).
pub(super) fn forwarded_proto(req: &HttpRequest) -> &'static str {
    if req.conn_data::<Tls>().is_some() {
        "https"
    } else {
        "http"
    }
}

/// Response bodies up to this size (with a Content-Length) are read whole before answering.
const SMALL_BODY: u64 = 16 * 1024;

/// Headers the gateway sets on the upstream request (and `X-Request-Id` on the answer). Named
/// once: a `&str` name is parsed into a `HeaderName` at every use.
pub(super) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(super) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(super) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(super) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(super) const X_CONSUMER: HeaderName = HeaderName::from_static("x-consumer");

/// Connection-level headers, never forwarded in either direction (RFC 9110 §7.6.1), and
/// `Upgrade`. Names, not `HeaderName`s: a `const` array of those is built and dropped at every
/// use.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub(super) fn is_hop_by_hop(name: &HeaderName, connection: &ConnectionListed<'_>) -> bool {
    HOP_BY_HOP.contains(&name.as_str()) || connection.lists(name)
}

/// The header names a message lists in `Connection`, which are hop-by-hop too. Read in place
/// when asked: no `HeaderName` parsed, nothing allocated per request. Holds the headers only
/// when `Connection` lists a name that is not hop-by-hop anyway (not `keep-alive`, `upgrade`…).
pub(super) struct ConnectionListed<'a>(Option<&'a HeaderMap>);

impl ConnectionListed<'_> {
    fn lists(&self, name: &HeaderName) -> bool {
        self.0
            .is_some_and(|h| connection_tokens(h).any(|t| t.eq_ignore_ascii_case(name.as_str())))
    }
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    h1::list_tokens(headers, header::CONNECTION)
}

/// Header names listed in `Connection`, which are hop-by-hop too.
pub(super) fn connection_listed(headers: &HeaderMap) -> ConnectionListed<'_> {
    let other = connection_tokens(headers)
        .any(|t| !t.is_empty() && !HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(t)));
    ConnectionListed(other.then_some(headers))
}

/// `X-Forwarded-For` for the upstream: the client's value with the peer's address appended.
pub(super) fn forwarded_for(req: &HttpRequest) -> String {
    let prior = req
        .headers()
        .get(X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .filter(|p| !p.is_empty());
    let mut out = String::with_capacity(prior.map_or(0, |p| p.len() + 2) + 39);
    if let Some(p) = prior {
        out.push_str(p);
        out.push_str(", ");
    }
    match req.peer_addr().map(|a| a.ip()) {
        // By hand: `Display` for addresses goes through the formatting machinery, a measurable
        // share of a proxied request's instructions.
        Some(std::net::IpAddr::V4(v4)) => {
            for (i, octet) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_decimal(&mut out, *octet);
            }
        }
        Some(ip) => out.push_str(&ip.to_string()),
        None => {}
    }
    out
}

fn push_decimal(out: &mut String, n: u8) {
    if n >= 100 {
        out.push((b'0' + n / 100) as char);
    }
    if n >= 10 {
        out.push((b'0' + n / 10 % 10) as char);
    }
    out.push((b'0' + n % 10) as char);
}

/// The upstream URL of a request: target, base path, forwarded path and query.
pub(super) fn upstream_url(ctx: &RequestCtx, target: &TargetUrl, req: &HttpRequest) -> String {
    let query = ctx.upstream_query(req);
    let mut url = String::with_capacity(
        16 + target.authority.len()
            + target.base_path.len()
            + ctx.forward_path.len()
            + query.map_or(0, str::len),
    );
    url.push_str(target.scheme);
    url.push_str("://");
    url.push_str(&target.authority);
    url.push_str(&target.base_path);
    url.push_str(&ctx.forward_path);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

pub struct Forwarded {
    pub response: HttpResponse,
}

/// The upstream's answer, from whichever client carried the request.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: AnswerBody,
}

enum AnswerBody {
    H1(h1::RecvBody),
    /// `https://` targets (awc).
    Awc(Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>),
}

impl Stream for AnswerBody {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            AnswerBody::H1(body) => Pin::new(body).poll_next(cx),
            AnswerBody::Awc(body) => body.as_mut().poll_next(cx),
        }
    }
}

/// Sends one attempt. The body is consumed only by the attempt that reaches the upstream; a
/// connect failure leaves `body` in place for a retry.
pub async fn forward(
    ctx: &mut RequestCtx,
    req: &HttpRequest,
    body: &mut Option<web::Payload>,
    upstreams: &Upstreams,
) -> Result<Forwarded, ProxyError> {
    let route = ctx.route.clone().expect("forward runs after route");
    let target = &route.targets()[ctx.target.expect("forward runs after balance")];
    let service = route.service();
    let timeouts = route.route().timeouts.unwrap_or(service.timeouts);
    ctx.upstream_started = Some(Instant::now());
    let answer = if target.scheme == "https" {
        send_awc(ctx, req, body, upstreams, target, service, timeouts).await?
    } else {
        send_h1(ctx, req, body, upstreams, target, timeouts).await?
    };
    answer_client(ctx, req, answer, &target.authority).await
}

/// The request body as it goes upstream: counted against the limit, framed as the client
/// framed it. Taken from `body` only when there is one.
fn upstream_body(
    ctx: &RequestCtx,
    req: &HttpRequest,
    body: &mut Option<web::Payload>,
) -> h1::SendBody<Limited> {
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
    let mut take = || {
        let payload = body.take().expect("the body is sent once");
        Limited::new(payload, req, ctx.body_limit)
    };
    match (length, chunked) {
        (Some(len), _) if len > 0 => h1::SendBody::Sized(len, take()),
        (_, true) => h1::SendBody::Chunked(take()),
        // No body: no `content-length: 0` on a GET that had none.
        _ => h1::SendBody::Empty,
    }
}

/// Calls `put` with every header the upstream request carries besides `Host` and the body's
/// framing: the client's, except hop-by-hop ones, its `Content-Length` (the body is framed
/// again), `X-Forwarded-*`, `X-Request-Id` and credentials; then the gateway's own.
fn upstream_headers(
    ctx: &RequestCtx,
    req: &HttpRequest,
    mut put: impl FnMut(&HeaderName, &HeaderValue),
) {
    let connection = connection_listed(req.headers());
    for (name, value) in req.headers() {
        if is_hop_by_hop(name, &connection)
            || name == header::HOST
            || name == header::CONTENT_LENGTH
            || name.as_str().starts_with("x-forwarded-")
            || name == X_REQUEST_ID
            || ctx.is_credential_header(name)
        {
            continue;
        }
        put(name, value);
    }
    // Consumer names are plain (letters, digits, `-_.`) and request ids come from a header
    // value or are hex: both always make valid values.
    if let Some(value) = (ctx.consumer.as_deref()).and_then(|c| HeaderValue::from_str(c).ok()) {
        put(&X_CONSUMER, &value);
    }
    if let Ok(value) = HeaderValue::try_from(forwarded_for(req)) {
        put(&X_FORWARDED_FOR, &value);
    }
    put(
        &X_FORWARDED_PROTO,
        &HeaderValue::from_static(forwarded_proto(req)),
    );
    if let Ok(value) = HeaderValue::from_str(&ctx.request_id) {
        put(&X_REQUEST_ID, &value);
    }
    if let Some(host) = req.headers().get(header::HOST) {
        put(&X_FORWARDED_HOST, host);
    }
}

/// `http://` targets: the proxy's own client ([`h1`]).
async fn send_h1(
    ctx: &RequestCtx,
    req: &HttpRequest,
    body: &mut Option<web::Payload>,
    upstreams: &Upstreams,
    target: &TargetUrl,
    timeouts: Timeouts,
) -> Result<Answer, ProxyError> {
    let query = ctx.upstream_query(req);
    let parts = [
        target.base_path.as_str(),
        ctx.forward_path.as_str(),
        if query.is_some() { "?" } else { "" },
        query.unwrap_or(""),
    ];
    let mut head = h1::RequestHead::new(req.method().as_str(), &parts, &target.authority)
        .map_err(ProxyError::BadRequest)?;
    upstream_headers(ctx, req, |name, value| head.field(name, value.as_bytes()));
    let upload = upstream_body(ctx, req, body);
    let head = head.finish(&upload);
    let method = req.method();
    let may_resend = matches!(upload, h1::SendBody::Empty)
        && matches!(
            *method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
        );
    let sent = tokio::time::timeout(
        Duration::from_millis(timeouts.request_ms),
        h1::send(
            &upstreams.plain,
            &target.authority,
            &head,
            upload,
            *method == Method::HEAD,
            may_resend,
            Duration::from_millis(timeouts.connect_ms),
        ),
    )
    .await;
    let connect = |reason: String| ProxyError::Connect {
        target: target.authority.clone(),
        reason,
    };
    match sent {
        Ok(Ok(r)) => Ok(Answer {
            status: r.status,
            headers: r.headers,
            body: AnswerBody::H1(r.body),
        }),
        Err(_) => Err(ProxyError::Timeout {
            target: target.authority.clone(),
            ms: timeouts.request_ms,
        }),
        Ok(Err(e)) => Err(match e {
            h1::Error::ConnectTimeout(_) | h1::Error::Broken(_) => connect(e.to_string()),
            h1::Error::Connect(io) => connect(io.to_string()),
            h1::Error::Body(BodyError::OverLimit { .. }) => ProxyError::BodyTooLarge {
                limit: ctx.body_limit,
            },
            // The client went away mid-upload: its failure, never the upstream's.
            h1::Error::Body(BodyError::Client(e)) => ProxyError::BadRequest(format!(
                "the request body could not be read from the client: {e}"
            )),
            h1::Error::Invalid(_) => ProxyError::BadGateway {
                target: target.authority.clone(),
                reason: e.to_string(),
            },
        }),
    }
}

/// `https://` targets: awc with rustls.
async fn send_awc(
    ctx: &RequestCtx,
    req: &HttpRequest,
    body: &mut Option<web::Payload>,
    upstreams: &Upstreams,
    target: &TargetUrl,
    service: &Service,
    timeouts: Timeouts,
) -> Result<Answer, ProxyError> {
    let url = upstream_url(ctx, target, req);
    let target_name = &target.authority;
    let client = upstreams
        .client(timeouts.connect_ms, target, service)
        .map_err(|reason| ProxyError::BadGateway {
            target: target_name.clone(),
            reason,
        })?;
    let mut up = client
        .request(req.method().clone(), url.as_str())
        .no_decompress()
        .timeout(Duration::from_millis(timeouts.request_ms));
    upstream_headers(ctx, req, |name, value| {
        up.headers_mut().append(name.clone(), value.clone());
    });
    let sent = match upstream_body(ctx, req, body) {
        h1::SendBody::Sized(len, payload) => up.send_body(SizedStream::new(len, payload)).await,
        h1::SendBody::Chunked(payload) => up.send_body(BodyStream::new(payload)).await,
        h1::SendBody::Empty => up.send_body(actix_web::body::None::new()).await,
    };
    let resp = sent.map_err(|e| match e {
        SendRequestError::Connect(ConnectError::Timeout) => ProxyError::Connect {
            target: target_name.clone(),
            reason: format!("connect timed out after {} ms", timeouts.connect_ms),
        },
        SendRequestError::Connect(c) => ProxyError::Connect {
            target: target_name.clone(),
            reason: c.to_string(),
        },
        // The connection broke before any answer. awc reports a clean close there as
        // `Connect(Disconnected)`; a reset (an upstream killed mid-request, or closing a pooled
        // connection as it is reused) is the same event and is retried the same way.
        SendRequestError::Send(io) | SendRequestError::Response(ParseError::Io(io)) => {
            ProxyError::Connect {
                target: target_name.clone(),
                reason: format!("the connection broke before the response: {io}"),
            }
        }
        SendRequestError::Timeout => ProxyError::Timeout {
            target: target_name.clone(),
            ms: timeouts.request_ms,
        },
        other if edge::over_limit(&other) => ProxyError::BodyTooLarge {
            limit: ctx.body_limit,
        },
        // The client's body broke (it went away mid-upload): the client's failure, never
        // counted against the upstream's health.
        SendRequestError::Body(e) => ProxyError::BadRequest(format!(
            "the request body could not be read from the client: {e}"
        )),
        other => ProxyError::BadGateway {
            target: target_name.clone(),
            reason: other.to_string(),
        },
    })?;
    Ok(Answer {
        status: resp.status(),
        headers: resp.headers().clone(),
        body: AnswerBody::Awc(Box::pin(resp)),
    })
}

/// Drops the answer's hop-by-hop headers (and any it names in `Connection`) and its
/// `Content-Length`, which actix writes again from the body it sends.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<String> = if connection_listed(headers).0.is_some() {
        connection_tokens(headers)
            .map(str::to_ascii_lowercase)
            .collect()
    } else {
        Vec::new()
    };
    headers.retain(|name, _| {
        let name = name.as_str();
        !(HOP_BY_HOP.contains(&name)
            || name == "content-length"
            || listed.iter().any(|l| l == name))
    });
}

/// Turns the upstream's answer into the client's: its headers (hop-by-hop ones dropped, an
/// `X-Request-Id` added), its body whole when small or streamed.
async fn answer_client(
    ctx: &mut RequestCtx,
    req: &HttpRequest,
    answer: Answer,
    target: &str,
) -> Result<Forwarded, ProxyError> {
    let Answer {
        status,
        mut headers,
        body,
    } = answer;
    let resp_len = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    ctx.status = status.as_u16();
    // A miss on a cached route whose answer may be stored reads bodies up to the cache's entry
    // size whole, so that `cache fill` can keep them; 0 everywhere else.
    let whole = SMALL_BODY.max(super::cache::body_limit(ctx, status, &headers));
    strip_hop_by_hop(&mut headers);
    if !headers.contains_key(X_REQUEST_ID) {
        if let Ok(id) = HeaderValue::from_str(&ctx.request_id) {
            headers.insert(X_REQUEST_ID, id);
        }
    }
    let unreadable = |e: &dyn std::fmt::Display| ProxyError::BadGateway {
        target: target.to_string(),
        reason: format!("reading the response body: {e}"),
    };
    let out = || HttpResponse::build(status);
    let mut response = match resp_len {
        _ if req.method() == actix_web::http::Method::HEAD => out().finish(),
        // A small body of known size arrives with (or right after) the head: take it whole, so
        // head and body leave in one write without streaming machinery.
        Some(len) if len <= whole => {
            match super::cache::read_up_to(body, whole as usize)
                .await
                .map_err(|e| unreadable(&e))?
            {
                super::cache::UpTo::Whole(bytes) => out().body(bytes),
                super::cache::UpTo::Over(..) => return Err(unreadable(&PayloadError::Overflow)),
            }
        }
        Some(len) => out().body(SizedStream::new(len, body)),
        None if whole > SMALL_BODY => {
            match super::cache::read_up_to(body, whole as usize)
                .await
                .map_err(|e| unreadable(&e))?
            {
                super::cache::UpTo::Whole(bytes) => out().body(bytes),
                super::cache::UpTo::Over(read, rest) => {
                    out().body(super::cache::prefixed(read, rest))
                }
            }
        }
        None => out().body(BodyStream::new(body)),
    };
    *response.headers_mut() = headers;
    Ok(Forwarded { response })
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION};

    fn headers(connection: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in connection {
            h.append(CONNECTION, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn connection_lists_names_case_blind_and_hop_by_hop_stays_out() {
        let name = |n: &'static str| HeaderName::from_static(n);
        let h = headers(&["keep-alive", "Close , X-Drop-Me"]);
        let listed = super::connection_listed(&h);
        assert!(super::is_hop_by_hop(&name("x-drop-me"), &listed));
        assert!(super::is_hop_by_hop(&name("te"), &listed));
        assert!(!super::is_hop_by_hop(&name("x-keep"), &listed));
        // Only names that are hop-by-hop anyway: nothing is kept to look up.
        let plain = headers(&["Keep-Alive, upgrade"]);
        assert!(super::connection_listed(&plain).0.is_none());
        assert!(super::connection_listed(&HeaderMap::new()).0.is_none());
    }

    #[test]
    fn decimal_octets() {
        for n in [0u8, 7, 10, 99, 100, 255] {
            let mut s = String::new();
            super::push_decimal(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }
}
