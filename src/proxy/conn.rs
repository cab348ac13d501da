//! The proxy's connections: the HTTP/1 server assembled around a socket wrapper,
//! [`ClockedIo`], that frames every request head itself and times it.
//!
//! Framing: actix-http's parser answers bad input (smuggling attempts, heads past its limits)
//! with an empty body, and reads at most 96 header fields. [`ClockedIo`] runs the proxy's own
//! framing ([`head`]) on every byte the client sends before actix reads it: a bad head never
//! reaches actix; the client gets the requests before it answered, then the gateway's JSON
//! 400/431, and the connection closes. A head with more fields than actix reads reaches it
//! with the extra fields packed into one, which [`track`] unpacks before any phase runs.
//!
//! The clock: actix-http's `client_request_timeout` covers the first request of a connection
//! only (it answers 408 and closes). Once a connection has served a request, nothing limits how
//! slowly the next head may arrive: a client could trickle it, or leave half of it in the
//! buffer, forever. When an answer is finished, a `header_timeout_ms` clock starts, and stops
//! when the next request reaches the app; when it runs out, the next read fails and actix drops
//! the connection. So a kept-alive connection stays idle for the keep-alive timeout (5 s) or
//! `header_timeout_ms`, whichever is shorter.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll, Waker};
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
use bytes::{Buf as _, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant, Sleep};

use super::tls_io::{ProxyIo, Tls, TlsListener};
use super::{edge, head};
use crate::config::{Config, Limits};

/// Builds the proxy's HTTP/1 server on `listener` (and on `tls`, after a TLS handshake bounded
/// by the header timeout) with the app `factory` makes per worker and listener; the settings
/// are those of `actix_web::HttpServer`, plus the header clock.
pub fn serve<F, I, S, B>(
    config: &Config,
    listener: std::net::TcpListener,
    tls: Option<TlsListener>,
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
    let grace = config.limits.drain_grace();
    let limits = config.limits.clone();
    let builder = Server::build();
    let shutdown = builder.graceful_shutdown_signal();
    let make = move |local, acceptor: Option<tokio_rustls::TlsAcceptor>| {
        let (shutdown, limits, factory) = (shutdown.clone(), limits.clone(), factory.clone());
        move || {
            let shutdown = shutdown.clone();
            let limits = limits.clone();
            let acceptor = acceptor.clone();
            let app = factory()
                .into_factory()
                .map_err(|e| e.into().error_response());
            let http = HttpService::build()
                // As HttpServer does (the builder method is doc-hidden), but a grace later: on
                // a graceful stop every answer closes its connection at once (`handle`), and
                // only after `limits.drain_grace_ms` do idle keep-alive connections close (busy ones
                // after their request). A client sending on an idle connection just as it
                // closes would meet a reset; within the grace it gets an answer instead.
                .graceful_shutdown_signal(move || {
                    let shutdown = shutdown.clone();
                    async move {
                        shutdown.notified().await;
                        tokio::time::sleep(grace).await;
                    }
                })
                .keep_alive(KeepAlive::default())
                .client_request_timeout(header_timeout)
                .client_disconnect_timeout(Duration::from_secs(1))
                .h1_allow_half_closed(true)
                .local_addr(local)
                .on_connect_ext(|io: &ClockedIo, data: &mut Extensions| {
                    data.insert(io.clock.clone());
                    if io.io.is_tls() {
                        data.insert(Tls);
                    }
                })
                // AppConfig's host and address serve URL generation, which the proxy never does.
                .h1(map_config(app, |_| AppConfig::default()));
            fn_service(move |io: TcpStream| {
                let peer = io.peer_addr().ok();
                let (acceptor, limits) = (acceptor.clone(), limits.clone());
                async move {
                    let io = match acceptor {
                        None => ProxyIo::Plain(io),
                        Some(tls) => ProxyIo::accept(&tls, io, limits.header_timeout())
                            .await
                            .map_err(DispatchError::Io)?,
                    };
                    Ok::<_, DispatchError>((ClockedIo::new(io, &limits), peer))
                }
            })
            .and_then(http)
        }
    };
    let local = listener.local_addr()?;
    let mut server = builder
        .workers(config.workers)
        .disable_signals()
        // actix counts whole seconds; `Gateway::stop` holds the exact bound.
        .shutdown_timeout(config.limits.drain_timeout_ms.div_ceil(1000))
        .listen("raftgate-proxy", listener, make(local, None))?;
    if let Some(tls) = tls {
        let local = tls.listener.local_addr()?;
        let acceptor = Some(tokio_rustls::TlsAcceptor::from(tls.config));
        server = server.listen("raftgate-proxy-tls", tls.listener, make(local, acceptor))?;
    }
    Ok(server.run())
}

/// One connection's header clock, shared by its socket and its requests.
pub struct HeadClock {
    timeout: Duration,
    /// Requests handed to the app whose answer is not finished yet.
    in_flight: Cell<usize>,
    /// Requests of this connection that reached the app.
    started: Cell<u64>,
    /// When the next request head must be complete; `None` while a request is being served
    /// (and before the first, which actix times).
    deadline: Cell<Option<Instant>>,
    /// Fires at `deadline`; created when the clock first runs.
    timer: RefCell<Option<Pin<Box<Sleep>>>>,
    /// The connection's task, for the timer to wake.
    task: RefCell<Option<Waker>>,
    /// The socket waits for the app to be idle (a refused head): wake it then.
    wake_when_idle: Cell<bool>,
}

impl HeadClock {
    fn new(timeout: Duration) -> HeadClock {
        HeadClock {
            timeout,
            in_flight: Cell::new(0),
            started: Cell::new(0),
            deadline: Cell::new(None),
            timer: RefCell::new(None),
            task: RefCell::new(None),
            wake_when_idle: Cell::new(false),
        }
    }

    fn request_started(self: &Rc<Self>) -> InFlight {
        self.in_flight.set(self.in_flight.get() + 1);
        self.started.set(self.started.get() + 1);
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
            if self.wake_when_idle.get() {
                task.wake_by_ref();
            }
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

    /// Keeps `cx`'s waker for the timer and for [`HeadClock::wake_when_idle`].
    fn register(&self, cx: &Context<'_>) {
        let mut task = self.task.borrow_mut();
        if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
            *task = Some(cx.waker().clone());
        }
    }
}

/// Held by a request until its answer is finished (or dropped).
pub struct InFlight(Rc<HeadClock>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let clock = &self.0;
        let n = clock.in_flight.get().saturating_sub(1);
        clock.in_flight.set(n);
        // Outside a runtime, the worker is being torn down (a drain timeout ran out): no next
        // head will come, and a timer cannot be created.
        if n == 0 && tokio::runtime::Handle::try_current().is_ok() {
            clock.start();
        }
    }
}

/// The client's socket with the header clock on its reads, and the proxy's own request framing
/// ([`head::Framing`]) between the socket and actix-http: actix reads only heads that passed
/// it. Bytes flow socket → `unframed` (only when a head is split across reads, or follows a
/// rewritten head; otherwise they are framed in actix's own buffer) → `ready` → actix.
pub struct ClockedIo {
    io: ProxyIo,
    clock: Rc<HeadClock>,
    framing: head::Framing,
    /// Bytes read from the socket and not framed yet.
    unframed: BytesMut,
    /// `unframed` starts with part of a head: it needs more bytes before it can be framed.
    needs_more: bool,
    /// Framed bytes for actix's next reads.
    ready: BytesMut,
    /// Heads passed to actix.
    heads: u64,
    end: End,
}

/// How the connection's reads end.
enum End {
    /// Still HTTP as far as the framing can tell.
    Open,
    /// A head was refused. Actix reads EOF once every request it got has been answered, and
    /// closes the connection; the answer goes out then, after theirs (`poll_shutdown`).
    Refused(Answer),
    /// A body's framing broke: actix reads EOF at once (its request's body is incomplete);
    /// the app answers that request.
    Broken,
}

/// The gateway's answer to a refused head, and how far it has gone out.
struct Answer {
    bytes: Vec<u8>,
    written: usize,
    shut_down: bool,
    /// Reading and discarding what the client still sends, for at most [`LINGER`]: closing
    /// with unread bytes would reset the connection, and the answer could be lost with it.
    linger: Option<Pin<Box<Sleep>>>,
}

const LINGER: Duration = Duration::from_secs(1);

/// Bytes read from the socket at a time while a head is incomplete.
const READ_CHUNK: usize = 8 * 1024;

impl ClockedIo {
    fn new(io: ProxyIo, limits: &Limits) -> ClockedIo {
        ClockedIo {
            io,
            clock: Rc::new(HeadClock::new(limits.header_timeout())),
            framing: head::Framing::new(limits.max_headers, limits.max_header_bytes),
            unframed: BytesMut::new(),
            needs_more: false,
            ready: BytesMut::new(),
            heads: 0,
            end: End::Open,
        }
    }

    /// Frames the start of `input`: records heads, queues a rewritten head in `ready`, and
    /// ends the connection's reads on a refusal or broken framing.
    fn take_step(&mut self, input: &[u8]) -> Took {
        match self.framing.step(input) {
            head::Step::Body(n) => Took::Pass(n),
            head::Step::Head { len, rewritten } => {
                self.heads += 1;
                match rewritten {
                    None => Took::Pass(len),
                    Some(head) => {
                        self.ready.extend_from_slice(&head);
                        Took::Rewrote(len)
                    }
                }
            }
            head::Step::Partial => {
                self.needs_more = true;
                Took::Stop
            }
            head::Step::Refuse(refusal) => {
                tracing::debug!(?refusal, "request head refused");
                self.end = End::Refused(Answer {
                    bytes: refusal.answer(),
                    written: 0,
                    shut_down: false,
                    linger: None,
                });
                Took::Stop
            }
            head::Step::Broken => {
                tracing::debug!("malformed chunked body");
                self.end = End::Broken;
                Took::Stop
            }
        }
    }

    /// Frames what was just read into `buf` (from `start` on) where it lies: what passes as it
    /// is stays; from a rewritten head, a partial one or the end on, the rest is cut off
    /// (into `unframed` when it is still to be framed).
    fn frame_in_place(&mut self, buf: &mut ReadBuf<'_>, start: usize) {
        let new = &buf.filled()[start..];
        let mut pos = 0;
        while pos < new.len() {
            match self.take_step(&new[pos..]) {
                Took::Pass(n) => pos += n,
                Took::Rewrote(len) => {
                    self.unframed.extend_from_slice(&new[pos + len..]);
                    break;
                }
                Took::Stop => {
                    if self.needs_more {
                        self.unframed.extend_from_slice(&new[pos..]);
                    }
                    break;
                }
            }
        }
        buf.set_filled(start + pos);
    }

    /// Frames the start of `unframed` into `ready`.
    fn frame_unframed(&mut self) {
        let mut unframed = std::mem::take(&mut self.unframed);
        match self.take_step(&unframed) {
            Took::Pass(n) => self.ready.extend_from_slice(&unframed.split_to(n)),
            Took::Rewrote(len) => unframed.advance(len),
            Took::Stop if self.needs_more => {}
            Took::Stop => unframed.clear(),
        }
        self.unframed = unframed;
    }

    /// Once every request passed to actix has been answered, EOF; until then, pending.
    fn poll_refused_eof(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let clock = &self.clock;
        if clock.started.get() >= self.heads && clock.in_flight.get() == 0 {
            clock.wake_when_idle.set(false);
            return Poll::Ready(Ok(()));
        }
        clock.register(cx);
        clock.wake_when_idle.set(true);
        Poll::Pending
    }
}

/// What one framing step let through.
enum Took {
    /// So many bytes pass as they are.
    Pass(usize),
    /// So many bytes were a head, passing rewritten (queued in `ready`).
    Rewrote(usize),
    /// Nothing more for now: a partial head, or the end of the connection's reads.
    Stop,
}

/// Reads from the socket into `buf`, unless the header clock ran out.
fn poll_socket(
    io: &mut ProxyIo,
    clock: &HeadClock,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    let polled = Pin::new(io).poll_read(cx, buf);
    if clock.deadline.get().is_none() {
        if polled.is_pending() {
            clock.register(cx);
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

impl AsyncRead for ClockedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            match this.end {
                End::Open => {}
                End::Broken => return Poll::Ready(Ok(())),
                End::Refused(_) => return this.poll_refused_eof(cx),
            }
            if !this.unframed.is_empty() && !this.needs_more {
                this.frame_unframed();
                continue;
            }
            if this.unframed.is_empty() {
                // The usual case: framed where actix reads it, nothing copied.
                let start = buf.filled().len();
                ready!(poll_socket(&mut this.io, &this.clock, cx, buf))?;
                if buf.filled().len() == start {
                    return Poll::Ready(Ok(()));
                }
                this.frame_in_place(buf, start);
                if buf.filled().len() > start {
                    return Poll::Ready(Ok(()));
                }
            } else {
                // The rest of a head split across reads.
                let had = this.unframed.len();
                this.unframed.resize(had + READ_CHUNK, 0);
                let mut chunk = ReadBuf::new(&mut this.unframed[had..]);
                let polled = poll_socket(&mut this.io, &this.clock, cx, &mut chunk);
                let got = chunk.filled().len();
                this.unframed.truncate(had + got);
                ready!(polled)?;
                if got == 0 {
                    // The client went away mid-head: actix reads EOF and never the half head.
                    return Poll::Ready(Ok(()));
                }
                this.needs_more = false;
            }
        }
    }
}

impl AsyncWrite for ClockedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    /// Actix shuts the connection down once it has flushed its last answer: after a refused
    /// head, the gateway's answer follows it here.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let End::Refused(answer) = &mut this.end else {
            return Pin::new(&mut this.io).poll_shutdown(cx);
        };
        while answer.written < answer.bytes.len() {
            let n = ready!(Pin::new(&mut this.io).poll_write(cx, &answer.bytes[answer.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            answer.written += n;
        }
        if !answer.shut_down {
            ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
            answer.shut_down = true;
        }
        let linger = answer
            .linger
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(LINGER)));
        let mut scratch = [0u8; 4096];
        while linger.as_mut().poll(cx).is_pending() {
            let mut discard = ReadBuf::new(&mut scratch);
            match ready!(Pin::new(&mut this.io).poll_read(cx, &mut discard)) {
                Ok(()) if !discard.filled().is_empty() => {}
                _ => break,
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Middleware (`App::wrap_fn`): puts back the header fields a rewritten head carried past
/// actix-http ([`head::restore_moved`]); stops the header clock while a request is served,
/// until its answer is finished; and has the connection closed after a request body cut off at
/// the limit ([`edge::cut_body`]).
pub fn track<S, B>(
    mut req: ServiceRequest,
    srv: &S,
) -> impl Future<Output = Result<ServiceResponse<Tracked<B>>, Error>> + 'static
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    S::Future: 'static,
    B: MessageBody + Unpin + 'static,
{
    if req.headers().contains_key(&head::CARRIER_NAME) {
        head::restore_moved(req.headers_mut());
    }
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
