//! Phase `forward`: send the request to the chosen target with awc, streaming the body both
//! ways, and turn the upstream's answer into the client's.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::{BodyStream, SizedStream};
use actix_web::error::{ParseError, PayloadError};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use awc::error::{ConnectError, SendRequestError};
use raftgate_cluster::spec::{Service, TargetUrl};

use super::ctx::RequestCtx;
use super::edge::{self, Limited};
use super::error::ProxyError;
use super::tls_io::Tls;
use crate::tls::upstream::{client_config, OwnedTrust, Trust};

/// Upstream HTTP clients of one worker, one per connect timeout (awc sets that per client) and,
/// for `https://` targets, per trust (web roots or the service's CA). Each keeps its own
/// keep-alive pool.
#[derive(Default)]
pub struct Upstreams {
    /// For `http://` targets, by connect timeout: few, so a list, searched without hashing.
    clients: RefCell<Vec<(u64, awc::Client)>>,
    /// For `https://` targets; few, so a list, searched without allocating.
    tls_clients: RefCell<Vec<(u64, OwnedTrust, awc::Client)>>,
}

impl Upstreams {
    /// The client for `target` of `service`; fails only when the service's CA cannot be used
    /// on this node.
    fn client(
        &self,
        connect_ms: u64,
        target: &TargetUrl,
        service: &Service,
    ) -> Result<awc::Client, String> {
        if target.scheme != "https" {
            let mut clients = self.clients.borrow_mut();
            if let Some((_, c)) = clients.iter().find(|(ms, _)| *ms == connect_ms) {
                return Ok(c.clone());
            }
            let client = upstream_client(connect_ms, None);
            clients.push((connect_ms, client.clone()));
            return Ok(client);
        }
        let trust = Trust::of(service);
        let mut clients = self.tls_clients.borrow_mut();
        if let Some((_, _, c)) =
            (clients.iter()).find(|(ms, t, _)| *ms == connect_ms && t.is(&trust))
        {
            return Ok(c.clone());
        }
        let client = upstream_client(connect_ms, Some(client_config(&trust)?));
        // Replaced CAs leave clients behind: start over rather than grow without bound.
        if clients.len() >= 32 {
            clients.clear();
        }
        clients.push((connect_ms, trust.to_owned(), client.clone()));
        Ok(client)
    }
}

fn upstream_client(connect_ms: u64, tls: Option<Arc<rustls::ClientConfig>>) -> awc::Client {
    let timeout = Duration::from_millis(connect_ms);
    let mut connector = awc::Connector::new()
        .timeout(timeout)
        .limit(0)
        .conn_keep_alive(Duration::from_secs(30));
    if let Some(tls) = tls {
        // `connect_ms` bounds the TLS handshake as well as the TCP connect.
        connector = connector.rustls_0_23(tls).handshake_timeout(timeout);
    }
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
    headers
        .get_all(header::CONNECTION)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
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

    let url = upstream_url(ctx, target, req);
    let client = upstreams
        .client(timeouts.connect_ms, target, service)
        .map_err(|reason| ProxyError::BadGateway {
            target: target.authority.clone(),
            reason,
        })?;
    let mut up = client
        .request(req.method().clone(), url.as_str())
        .no_decompress()
        .timeout(Duration::from_millis(timeouts.request_ms));

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
        up = up.append_header((name.clone(), value.clone()));
    }
    if let Some(consumer) = &ctx.consumer {
        up = up.insert_header((X_CONSUMER, &**consumer));
    }
    up = up
        .insert_header((X_FORWARDED_FOR, forwarded_for(req)))
        .insert_header((
            X_FORWARDED_PROTO,
            HeaderValue::from_static(forwarded_proto(req)),
        ))
        .insert_header((X_REQUEST_ID, ctx.request_id.as_str()));
    if let Some(host) = req.headers().get(header::HOST) {
        up = up.insert_header((X_FORWARDED_HOST, host.clone()));
    }

    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
    let target_name = target.authority.clone();
    ctx.upstream_started = Some(Instant::now());
    let sent = match (length, chunked) {
        (Some(len), _) if len > 0 => {
            let payload = body.take().expect("the body is sent once");
            let payload = Limited::new(payload, req, ctx.body_limit);
            up.send_body(SizedStream::new(len, payload)).await
        }
        (_, true) => {
            let payload = body.take().expect("the body is sent once");
            let payload = Limited::new(payload, req, ctx.body_limit);
            up.send_body(BodyStream::new(payload)).await
        }
        // No body: no `content-length: 0` on a GET that had none.
        _ => up.send_body(actix_web::body::None::new()).await,
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

    let mut out = HttpResponse::build(resp.status());
    let connection = connection_listed(resp.headers());
    for (name, value) in resp.headers() {
        if is_hop_by_hop(name, &connection) || name == header::CONTENT_LENGTH {
            continue;
        }
        out.append_header((name.clone(), value.clone()));
    }
    if !resp.headers().contains_key(X_REQUEST_ID) {
        out.insert_header((
            X_REQUEST_ID,
            HeaderValue::from_str(&ctx.request_id).unwrap_or(HeaderValue::from_static("")),
        ));
    }
    let resp_len = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    ctx.status = resp.status().as_u16();
    // A miss on a cached route whose answer may be stored reads bodies up to the cache's entry
    // size whole, so that `cache fill` can keep them; 0 everywhere else.
    let whole = SMALL_BODY.max(super::cache::body_limit(ctx, resp.status(), resp.headers()));
    let unreadable = |e: &dyn std::fmt::Display| ProxyError::BadGateway {
        target: target_name.clone(),
        reason: format!("reading the response body: {e}"),
    };
    let response = match resp_len {
        _ if req.method() == actix_web::http::Method::HEAD => out.finish(),
        // A small body of known size arrives with (or right after) the head: take it whole, so
        // head and body leave in one write without streaming machinery.
        Some(len) if len <= whole => {
            match super::cache::read_up_to(resp, whole as usize)
                .await
                .map_err(|e| unreadable(&e))?
            {
                super::cache::UpTo::Whole(bytes) => out.body(bytes),
                super::cache::UpTo::Over(..) => return Err(unreadable(&PayloadError::Overflow)),
            }
        }
        Some(len) => out.body(SizedStream::new(len, resp)),
        None if whole > SMALL_BODY => {
            match super::cache::read_up_to(resp, whole as usize)
                .await
                .map_err(|e| unreadable(&e))?
            {
                super::cache::UpTo::Whole(bytes) => out.body(bytes),
                super::cache::UpTo::Over(read, rest) => {
                    out.body(super::cache::prefixed(read, rest))
                }
            }
        }
        None => out.body(BodyStream::new(resp)),
    };
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
