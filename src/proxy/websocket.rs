//! Phase `websocket`, in place of `forward` for a WebSocket upgrade on a route with
//! `websocket: true`: open the upstream WebSocket first (a failure is an ordinary 502/504, before
//! any 101), then accept the client's and relay frames both ways from a task of the worker.
//!
//! The relay task owns both connections and nothing of the configuration, so a route or service
//! change (even a delete) never reaches an open WebSocket; new upgrades use the new config.
//! Frames pass one for one (text, binary, ping, pong, continuations); close frames pass with
//! their code and reason, and when one side ends the other is closed too.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message, MessageStream, ProtocolError, Session};
use awc::error::{ConnectError, SendRequestError, WsClientError};
use awc::ws::Frame;
use bytestring::ByteString;
use futures_util::future::{select, Either};
use futures_util::{Sink, SinkExt, Stream, StreamExt};

use super::balance;
use super::ctx::RequestCtx;
use super::error::ProxyError;
use super::forward::{
    connection_listed, forwarded_for, forwarded_proto, is_hop_by_hop, upstream_url,
};
use crate::tls::upstream::{client_config, Trust};

/// The largest frame relayed either way (the relay holds a whole frame); a larger one closes
/// the connection with 1009.
const MAX_FRAME_BYTES: usize = 16 << 20;
/// How long a closing handshake may take before both connections are dropped anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Close code 1014 (IANA registry, "Bad Gateway"): the upstream's connection failed.
const UPSTREAM_FAILED: CloseCode = CloseCode::Other(1014);

/// Whether this request is a WebSocket upgrade this route proxies as one: the route has
/// `websocket: true` and the request carries `Connection: upgrade` and `Upgrade: websocket`.
/// Any other upgrade is forwarded as a plain request, its hop-by-hop `Upgrade` stripped.
pub fn wanted(ctx: &RequestCtx, req: &HttpRequest) -> bool {
    ctx.route.as_ref().is_some_and(|r| r.route().websocket)
        && req.head().upgrade()
        && req
            .headers()
            .get_all(header::UPGRADE)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
}

/// Connects upstream (retrying a connect failure on another target, like `forward`), then
/// answers the client's handshake and leaves the relay running on the worker.
pub async fn websocket(
    ctx: &mut RequestCtx,
    req: &HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ProxyError> {
    actix_http::ws::verify_handshake(req.head())
        .map_err(|e| ProxyError::BadRequest(format!("invalid WebSocket handshake: {e}")))?;
    let retries = ctx
        .route
        .as_ref()
        .map(|r| r.service().retries as usize)
        .unwrap_or(0);
    let mut tried = Vec::new();
    let (head, upstream, in_flight) = loop {
        balance::balance(ctx, req, &tried)?;
        let connected = connect(ctx, req).await;
        ctx.status = match &connected {
            Ok(Upstream::Open(..)) => StatusCode::SWITCHING_PROTOCOLS.as_u16(),
            Ok(Upstream::Refused { status, .. }) => refused_status(*status).as_u16(),
            Err(_) => 0,
        };
        // The handshake is the attempt the balancer learns from (its latency and outcome); the
        // open socket then stays counted in flight on its target until it closes.
        let target = ctx
            .attempt
            .as_ref()
            .map(|a| (a.runtime().clone(), a.target()));
        balance::finish(ctx, &connected);
        match connected {
            Ok(Upstream::Open(head, socket)) => {
                break (head, socket, target.map(|(runtime, i)| runtime.begin(i)));
            }
            Ok(Upstream::Refused { target, status }) => return Ok(refused(ctx, target, status)),
            Err(e) if e.retry_safe() && tried.len() < retries => {
                tracing::debug!(request_id = %ctx.request_id, error = %e, "retrying the WebSocket on another target");
                tried.extend(ctx.target);
            }
            Err(e) => return Err(e),
        }
    };
    // The client gets the subprotocol the upstream chose (when the client offered it).
    let chosen = head
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (mut response, session, messages) =
        actix_ws::handle_with_protocols(req, body, chosen.as_deref().as_slice())
            .map_err(|e| ProxyError::BadRequest(format!("invalid WebSocket handshake: {e}")))?;
    let connection = connection_listed(head.headers());
    for (name, value) in head.headers() {
        if !is_hop_by_hop(name, &connection)
            && !is_handshake_header(name)
            && name != header::CONTENT_LENGTH
        {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    if let Ok(id) = HeaderValue::from_str(&ctx.request_id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-request-id"), id);
    }
    let info = Info {
        request_id: ctx.request_id.clone(),
        route: ctx.route_name().to_string(),
        opened: Instant::now(),
    };
    // The task holds the connections and the in-flight count only: no route, no service, no
    // table snapshot.
    actix_web::rt::spawn(async move {
        relay(
            upstream,
            session,
            messages.max_frame_size(MAX_FRAME_BYTES),
            info,
        )
        .await;
        drop(in_flight);
    });
    Ok(response)
}

enum Upstream<S> {
    /// The upstream switched protocols: its 101 head and the socket.
    Open(awc::ClientResponse, S),
    /// The upstream answered the upgrade with something other than 101.
    Refused { target: String, status: StatusCode },
}

async fn connect(
    ctx: &mut RequestCtx,
    req: &HttpRequest,
) -> Result<
    Upstream<
        impl Stream<Item = Result<Frame, ProtocolError>> + Sink<Message, Error = ProtocolError>,
    >,
    ProxyError,
> {
    let route = ctx.route.clone().expect("websocket runs after route");
    let target = &route.targets()[ctx.target.expect("websocket runs after balance")];
    let timeouts = route.route().timeouts.unwrap_or(route.service().timeouts);

    let url = upstream_url(ctx, target, req);
    // A client of its own: an upgraded connection never returns to a keep-alive pool, and the
    // handshake is bounded below rather than by a client-wide timeout.
    let mut connector = awc::Connector::new().timeout(Duration::from_millis(timeouts.connect_ms));
    if target.scheme == "https" {
        let tls = client_config(&Trust::of(route.service())).map_err(|reason| {
            ProxyError::BadGateway {
                target: target.authority.clone(),
                reason,
            }
        })?;
        connector = connector.rustls_0_23(tls);
    }
    let client = awc::Client::builder()
        .connector(connector)
        .no_default_headers()
        .disable_timeout()
        .finish();
    let mut up = client.ws(url.as_str()).max_frame_size(MAX_FRAME_BYTES);
    let connection = connection_listed(req.headers());
    for (name, value) in req.headers() {
        if is_hop_by_hop(name, &connection)
            || is_handshake_header(name)
            || name == header::HOST
            || name == header::CONTENT_LENGTH
            || name.as_str().starts_with("x-forwarded-")
            || name == "x-request-id"
            || ctx.is_credential_header(name)
        {
            continue;
        }
        up = up.header(name.clone(), value.clone());
    }
    if let Some(consumer) = &ctx.consumer {
        up = up.set_header("x-consumer", &**consumer);
    }
    let offered: Vec<&str> = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !offered.is_empty() {
        up = up.set_header(header::SEC_WEBSOCKET_PROTOCOL, offered.join(", "));
    }
    up = up
        .set_header("x-forwarded-for", forwarded_for(req))
        .set_header("x-forwarded-proto", forwarded_proto(req))
        .set_header("x-request-id", ctx.request_id.as_str());
    if let Some(host) = req.headers().get(header::HOST) {
        up = up.set_header(HeaderName::from_static("x-forwarded-host"), host.clone());
    }

    let target_name = target.authority.clone();
    ctx.upstream_started = Some(Instant::now());
    let timeout = Duration::from_millis(timeouts.request_ms);
    let connected = actix_web::rt::time::timeout(timeout, up.connect())
        .await
        .map_err(|_| ProxyError::Timeout {
            target: target_name.clone(),
            ms: timeouts.request_ms,
        })?;
    match connected {
        Ok((head, socket)) => Ok(Upstream::Open(head, socket)),
        Err(WsClientError::InvalidResponseStatus(status)) => Ok(Upstream::Refused {
            target: target_name,
            status,
        }),
        Err(WsClientError::SendRequest(SendRequestError::Connect(ConnectError::Timeout))) => {
            Err(ProxyError::Connect {
                target: target_name,
                reason: format!("connect timed out after {} ms", timeouts.connect_ms),
            })
        }
        Err(WsClientError::SendRequest(SendRequestError::Connect(c))) => Err(ProxyError::Connect {
            target: target_name,
            reason: c.to_string(),
        }),
        Err(WsClientError::SendRequest(SendRequestError::Timeout)) => Err(ProxyError::Timeout {
            target: target_name,
            ms: timeouts.request_ms,
        }),
        Err(e) => Err(ProxyError::BadGateway {
            target: target_name,
            reason: format!("WebSocket handshake: {e}"),
        }),
    }
}

/// The handshake headers each leg negotiates for itself. Extensions are never passed on: the
/// relay reads frames, so an extension such as permessage-deflate cannot span both legs.
fn is_handshake_header(name: &HeaderName) -> bool {
    name.as_str().starts_with("sec-websocket-")
}

/// What the client gets when the upstream declines the upgrade: the upstream's error status
/// (not its body: the WebSocket client drops it); any other answer is not a valid one to an
/// upgrade, 502.
fn refused_status(status: StatusCode) -> StatusCode {
    if status.is_client_error() || status.is_server_error() {
        status
    } else {
        StatusCode::BAD_GATEWAY
    }
}

fn refused(ctx: &mut RequestCtx, target: String, status: StatusCode) -> HttpResponse {
    if refused_status(status) == status {
        ctx.status = status.as_u16();
        HttpResponse::build(status)
            .insert_header(("x-request-id", ctx.request_id.as_str()))
            .finish()
    } else {
        let e = ProxyError::BadGateway {
            target,
            reason: format!("the upstream answered {status} to a WebSocket upgrade"),
        };
        tracing::warn!(request_id = %ctx.request_id, route = ctx.route_name(), error = %e, "upstream failure");
        ctx.status = e.status().as_u16();
        e.response(&ctx.request_id)
    }
}

/// What the relay task keeps for its last log line.
struct Info {
    request_id: String,
    route: String,
    opened: Instant,
}

/// How one direction of the relay ended.
#[derive(Debug)]
enum End {
    /// The sending side sent a close frame; it was passed on.
    Closed(Option<CloseReason>),
    /// The sending side's connection ended without a close frame, or broke the protocol: the
    /// code to send back to it (if its connection can still carry one) and the code to send on.
    Broken {
        back: Option<CloseCode>,
        on: CloseCode,
    },
    /// Writing to the receiving side failed: its connection is gone.
    ReceiverGone,
}

type Direction<'a> = Pin<Box<dyn Future<Output = End> + 'a>>;

/// Relays until one side closes or fails, then finishes the closing handshake on the other:
/// a close from the client waits (bounded) for the upstream's answering close and passes it
/// back; a close from the upstream is answered to it by the gateway, since the client's answer
/// cannot arrive once its response has ended.
async fn relay<U>(upstream: U, client: Session, mut messages: MessageStream, info: Info)
where
    U: Stream<Item = Result<Frame, ProtocolError>> + Sink<Message, Error = ProtocolError>,
{
    let (mut up_tx, mut up_rx) = upstream.split();
    let mut to_client = client.clone();
    let mut client = client;
    let outbound: Direction<'_> = Box::pin(client_to_upstream(&mut messages, &mut up_tx));
    let inbound: Direction<'_> = Box::pin(upstream_to_client(&mut up_rx, &mut to_client));
    let (client_first, end, rest) = match select(outbound, inbound).await {
        Either::Left((end, inbound)) => (true, end, inbound),
        Either::Right((end, outbound)) => (false, end, outbound),
    };
    match (client_first, &end) {
        (true, End::Closed(reason)) => {
            let answered = actix_web::rt::time::timeout(CLOSE_GRACE, rest).await;
            if !matches!(answered, Ok(End::Closed(_))) {
                close(&mut client, reason.clone()).await;
            }
        }
        (true, End::Broken { back, on }) => {
            drop(rest);
            if let Some(code) = back {
                close(&mut client, Some((*code).into())).await;
            }
            close_upstream(&mut up_tx, &mut up_rx, Some((*on).into())).await;
        }
        (true, End::ReceiverGone) => {
            drop(rest);
            close(&mut client, Some(UPSTREAM_FAILED.into())).await;
        }
        (false, End::Closed(reason)) => {
            drop(rest);
            close(&mut up_tx, reason.clone()).await;
        }
        (false, End::Broken { back, on }) => {
            drop(rest);
            close(&mut client, Some((*on).into())).await;
            if let Some(code) = back {
                close(&mut up_tx, Some((*code).into())).await;
            }
        }
        (false, End::ReceiverGone) => {
            drop(rest);
            close_upstream(&mut up_tx, &mut up_rx, Some(CloseCode::Away.into())).await;
        }
    }
    tracing::debug!(
        request_id = %info.request_id,
        route = %info.route,
        first = if client_first { "client" } else { "upstream" },
        end = ?end,
        open_ms = info.opened.elapsed().as_millis() as u64,
        "websocket closed"
    );
}

/// Sends a close frame, best effort and bounded: the connection is dropped right after.
async fn close<S: Sink<Message> + Unpin>(sink: &mut S, reason: Option<CloseReason>) {
    let _ = actix_web::rt::time::timeout(CLOSE_GRACE, sink.send(Message::Close(reason))).await;
}

/// Closes the upstream from the gateway's side and waits (bounded) for its answering close, so
/// the upstream reads our close before the connection drops (RFC 6455 §7.1.1: the server closes
/// the TCP connection first).
async fn close_upstream<S, U>(up_tx: &mut S, up_rx: &mut U, reason: Option<CloseReason>)
where
    S: Sink<Message> + Unpin,
    U: Stream<Item = Result<Frame, ProtocolError>> + Unpin,
{
    close(up_tx, reason).await;
    let answer = async {
        while let Some(Ok(frame)) = up_rx.next().await {
            if matches!(frame, Frame::Close(_)) {
                break;
            }
        }
    };
    let _ = actix_web::rt::time::timeout(CLOSE_GRACE, answer).await;
}

async fn client_to_upstream<S>(messages: &mut MessageStream, upstream: &mut S) -> End
where
    S: Sink<Message> + Unpin,
{
    loop {
        let msg = match messages.next().await {
            Some(Ok(Message::Nop)) => continue,
            Some(Ok(msg)) => msg,
            Some(Err(e)) => {
                return End::Broken {
                    back: close_code(&e),
                    on: CloseCode::Away,
                }
            }
            None => {
                return End::Broken {
                    back: None,
                    on: CloseCode::Away,
                }
            }
        };
        if let Some(end) = pass(upstream, msg).await {
            return end;
        }
    }
}

async fn upstream_to_client<U, S>(frames: &mut U, client: &mut S) -> End
where
    U: Stream<Item = Result<Frame, ProtocolError>> + Unpin,
    S: Sink<Message> + Unpin,
{
    loop {
        let msg = match frames.next().await {
            Some(Ok(Frame::Text(bytes))) => match ByteString::try_from(bytes) {
                Ok(text) => Message::Text(text),
                Err(_) => {
                    return End::Broken {
                        back: Some(CloseCode::Invalid),
                        on: UPSTREAM_FAILED,
                    }
                }
            },
            Some(Ok(Frame::Binary(bytes))) => Message::Binary(bytes),
            Some(Ok(Frame::Ping(bytes))) => Message::Ping(bytes),
            Some(Ok(Frame::Pong(bytes))) => Message::Pong(bytes),
            Some(Ok(Frame::Continuation(item))) => Message::Continuation(item),
            Some(Ok(Frame::Close(reason))) => Message::Close(reason),
            Some(Err(e)) => {
                return End::Broken {
                    back: close_code(&e),
                    on: UPSTREAM_FAILED,
                }
            }
            None => {
                return End::Broken {
                    back: None,
                    on: UPSTREAM_FAILED,
                }
            }
        };
        if let Some(end) = pass(client, msg).await {
            return end;
        }
    }
}

/// Passes one message on; `Some` when this direction is over.
async fn pass<S: Sink<Message> + Unpin>(to: &mut S, msg: Message) -> Option<End> {
    let closing = match &msg {
        Message::Close(reason) => Some(reason.clone()),
        _ => None,
    };
    if to.send(msg).await.is_err() {
        return Some(End::ReceiverGone);
    }
    closing.map(End::Closed)
}

/// The close code owed to a side whose frames could not be read; `None` when its connection
/// itself failed and cannot carry one.
fn close_code(e: &ProtocolError) -> Option<CloseCode> {
    match e {
        ProtocolError::Overflow => Some(CloseCode::Size),
        ProtocolError::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            Some(CloseCode::Invalid)
        }
        ProtocolError::Io(_) => None,
        _ => Some(CloseCode::Protocol),
    }
}
