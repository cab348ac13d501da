//! The proxy's connections: the HTTP/1 server assembled around a socket wrapper that times
//! every request head, not just the first.
//!
//! actix-http's `client_request_timeout` covers the first request of a connection only (it
//! answers 408 and closes). Once a connection has served a request, nothing limits how slowly
//! the next head may arrive: a client could trickle it, or leave half of it in the buffer,
//! forever. [`ClockedIo`] closes that gap: when an answer is finished, a `header_timeout_ms`
//! clock starts, and stops when the next request reaches the app; when it runs out, the next
//! read fails and actix drops the connection. So a kept-alive connection stays idle for the
//! keep-alive timeout (5 s) or `header_timeout_ms`, whichever is shorter.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use actix_http::body::{BodySize, MessageBody};
use actix_http::error::DispatchError;
use actix_http::{HttpService, KeepAlive, Request, Response};
use actix_service::{map_config, IntoServiceFactory, ServiceFactoryExt as _};
use actix_web::dev::{
    fn_service, AppConfig, Extensions, Server, Service, ServiceFactory, ServiceRequest,
    ServiceResponse,
};
use actix_web::Error;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant, Sleep};

use super::edge;
use crate::config::Config;

/// Builds the proxy's HTTP/1 server on `listener` with the app `factory` makes per worker;
/// the settings are those of `actix_web::HttpServer`, plus the header clock.
pub fn serve<F, I, S, B>(
    config: &Config,
    listener: std::net::TcpListener,
    factory: F,
) -> io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<Error> + 'static,
    S::InitError: std::fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    B: MessageBody + 'static,
{
    let header_timeout = config.limits.header_timeout();
    let local = listener.local_addr()?;
    let builder = Server::build();
    let shutdown = builder.graceful_shutdown_signal();
    Ok(builder
        .workers(config.workers)
        .disable_signals()
        .shutdown_timeout(10)
        .listen("raftgate-proxy", listener, move || {
            let shutdown = shutdown.clone();
            let app = factory()
                .into_factory()
                .map_err(|e| e.into().error_response());
            let http = HttpService::build()
                // As HttpServer does (the builder method is doc-hidden): on a graceful stop,
                // idle keep-alive connections close and busy ones close after their request.
                .graceful_shutdown_signal(move || {
                    let shutdown = shutdown.clone();
                    async move { shutdown.notified().await }
                })
                .keep_alive(KeepAlive::default())
                .client_request_timeout(header_timeout)
                .client_disconnect_timeout(Duration::from_secs(1))
                .h1_allow_half_closed(true)
                .local_addr(local)
                .on_connect_ext(|io: &ClockedIo, data: &mut Extensions| {
                    data.insert(io.clock.clone());
                })
                // AppConfig's host and address serve URL generation, which the proxy never does.
                .h1(map_config(app, |_| AppConfig::default()));
            fn_service(move |io: TcpStream| {
                let peer = io.peer_addr().ok();
                async move { Ok::<_, DispatchError>((ClockedIo::new(io, header_timeout), peer)) }
            })
            .and_then(http)
        })?
        .run())
}

/// One connection's header clock, shared by its socket and its requests.
pub struct HeadClock {
    timeout: Duration,
    /// Requests handed to the app whose answer is not finished yet.
    in_flight: Cell<usize>,
    /// Whether any request of this connection ever reached the app.
    dispatched: Cell<bool>,
    /// When the next request head must be complete; `None` while a request is being served
    /// (and before the first, which actix times).
    deadline: Cell<Option<Instant>>,
    /// Fires at `deadline`; created when the clock first runs.
    timer: RefCell<Option<Pin<Box<Sleep>>>>,
    /// The connection's task, for the timer to wake.
    task: RefCell<Option<Waker>>,
}

impl HeadClock {
    fn request_started(self: &Rc<Self>) -> InFlight {
        self.in_flight.set(self.in_flight.get() + 1);
        self.dispatched.set(true);
        self.deadline.set(None);
        InFlight(self.clone())
    }

    /// Starts the clock for the next head. The timer is registered for the connection's task
    /// at once: the task may have nothing else to wake it (half a head already buffered).
    fn start(&self) {
        let deadline = Instant::now() + self.timeout;
        self.deadline.set(Some(deadline));
        let mut timer = self.timer.borrow_mut();
        let timer = match timer.as_mut() {
            Some(sleep) => {
                sleep.as_mut().reset(deadline);
                sleep
            }
            None => timer.insert(Box::pin(sleep_until(deadline))),
        };
        if let Some(task) = self.task.borrow().as_ref() {
            let _ = timer.as_mut().poll(&mut Context::from_waker(task));
        }
    }

    /// Whether the clock ran out; registers the timer for `cx` when it has not.
    fn ran_out(&self, cx: &mut Context<'_>) -> bool {
        let Some(deadline) = self.deadline.get() else {
            return false;
        };
        Instant::now() >= deadline
            || self
                .timer
                .borrow_mut()
                .as_mut()
                .is_some_and(|t| t.as_mut().poll(cx).is_ready())
    }
}

/// Held by a request until its answer is finished (or dropped).
pub struct InFlight(Rc<HeadClock>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let clock = &self.0;
        let n = clock.in_flight.get().saturating_sub(1);
        clock.in_flight.set(n);
        if n == 0 {
            clock.start();
        }
    }
}

/// The client's socket with the header clock on its reads, and JSON bodies on the answers
/// actix-http's parser gives on its own.
pub struct ClockedIo {
    io: TcpStream,
    clock: Rc<HeadClock>,
    /// Our replacement for a parser answer being written, and how much of it has gone out.
    replacing: Option<(&'static [u8], usize)>,
}

/// actix-http refuses some requests before any app code runs (both Content-Length and
/// Transfer-Encoding, a duplicate or invalid Content-Length, more than 96 headers, a head over
/// 128 KiB) and answers with an empty body. The proxy's contract is a JSON error body, so the
/// socket swaps those answers for ours while no request of the connection has reached the app
/// yet: only then is an answer certainly the parser's (an app answer, an upstream's 400 among
/// them, may be flushed after its request has finished). A malformed request later on a
/// kept-alive connection keeps actix's empty body.
const PARSER_ANSWERS: [(&[u8], &[u8]); 2] = [
    (
        b"HTTP/1.1 400 ",
        b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 83\r\nconnection: close\r\n\r\n{\"error\":{\"code\":\"bad_request\",\"message\":\"malformed or ambiguous request framing\"}}",
    ),
    (
        b"HTTP/1.1 431 ",
        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\ncontent-length: 84\r\nconnection: close\r\n\r\n{\"error\":{\"code\":\"headers_too_large\",\"message\":\"the request headers are too large\"}}",
    ),
];

impl ClockedIo {
    /// Writes `buf`, or our replacement when `buf` is a parser answer; reports `buf` written
    /// once the replacement has gone out whole.
    fn write_answer(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.replacing.is_none() && !self.clock.dispatched.get() {
            self.replacing = PARSER_ANSWERS
                .iter()
                .find(|(prefix, _)| buf.starts_with(prefix))
                .map(|(_, ours)| (*ours, 0));
        }
        let Some((ours, sent)) = self.replacing.as_mut() else {
            return Pin::new(&mut self.io).poll_write(cx, buf);
        };
        while *sent < ours.len() {
            match Pin::new(&mut self.io).poll_write(cx, &ours[*sent..]) {
                Poll::Ready(Ok(n)) => *sent += n,
                other => return other,
            }
        }
        Poll::Ready(Ok(buf.len()))
    }
}

impl ClockedIo {
    fn new(io: TcpStream, timeout: Duration) -> ClockedIo {
        ClockedIo {
            io,
            clock: Rc::new(HeadClock {
                timeout,
                in_flight: Cell::new(0),
                dispatched: Cell::new(false),
                deadline: Cell::new(None),
                timer: RefCell::new(None),
                task: RefCell::new(None),
            }),
            replacing: None,
        }
    }
}

impl AsyncRead for ClockedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        let clock = &this.clock;
        if clock.deadline.get().is_none() {
            if polled.is_pending() {
                let mut task = clock.task.borrow_mut();
                if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                    *task = Some(cx.waker().clone());
                }
            }
            return polled;
        }
        if clock.ran_out(cx) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the request head was not complete within limits.header_timeout_ms",
            )));
        }
        polled
    }
}

impl AsyncWrite for ClockedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().write_answer(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match bufs.iter().find(|b| !b.is_empty()) {
            // Only the start of an answer can be a parser answer; write it on its own.
            Some(first) if !this.clock.dispatched.get() || this.replacing.is_some() => {
                this.write_answer(cx, first)
            }
            _ => Pin::new(&mut this.io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Middleware (`App::wrap_fn`): stops the header clock while a request is served, until its
/// answer is finished; and has the connection closed after a request body cut off at
/// the limit ([`edge::cut_body`]).
pub fn track<S, B>(
    req: ServiceRequest,
    srv: &S,
) -> impl Future<Output = Result<ServiceResponse<Tracked<B>>, Error>> + 'static
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    S::Future: 'static,
    B: MessageBody + Unpin + 'static,
{
    let in_flight = req
        .conn_data::<Rc<HeadClock>>()
        .map(HeadClock::request_started);
    let fut = srv.call(req);
    async move {
        let res = fut.await?;
        let unread = edge::cut_body(&res);
        Ok(res.map_body(|_, body| Tracked {
            body,
            _in_flight: in_flight,
            _unread: unread,
        }))
    }
}

/// A response body that holds, until it is finished, its request's [`InFlight`] and the
/// unread rest of a request body cut off at the limit.
pub struct Tracked<B> {
    body: B,
    _in_flight: Option<InFlight>,
    _unread: Option<edge::UnreadBody>,
}

impl<B: MessageBody + Unpin> MessageBody for Tracked<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parser_answers_are_well_formed_json_responses() {
        for (prefix, ours) in super::PARSER_ANSWERS {
            let text = std::str::from_utf8(ours).unwrap();
            assert!(ours.starts_with(prefix));
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(length, body.len(), "{head}");
            let json: serde_json::Value = serde_json::from_str(body).unwrap();
            assert!(json["error"]["code"].is_string());
        }
    }
}
