//! The proxy's accepted sockets, plain TCP or TLS-terminated, as one type: both listeners run
//! the same HTTP service and pipeline over it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The TLS listener (`listen.proxy_tls`) and the config whose resolver picks certificates by
/// SNI from the published store.
pub struct TlsListener {
    pub listener: std::net::TcpListener,
    pub config: Arc<ServerConfig>,
}

/// In a connection's data (`req.conn_data::<Tls>()`) when it came in over TLS: what the
/// forwarded `X-Forwarded-Proto` says, whatever the client's headers claim.
#[derive(Clone, Copy, Debug)]
pub struct Tls;

pub enum ProxyIo {
    Plain(TcpStream),
    /// Boxed: a rustls connection is large, and plain connections should not pay for it.
    Tls(Box<TlsStream<TcpStream>>),
}

impl ProxyIo {
    /// The TLS handshake, bounded by `timeout` (the header timeout: a client that has not
    /// finished its handshake by then would not send a head in time either).
    pub async fn accept(
        acceptor: &TlsAcceptor,
        io: TcpStream,
        timeout: Duration,
    ) -> io::Result<ProxyIo> {
        match tokio::time::timeout(timeout, acceptor.accept(io)).await {
            Ok(Ok(tls)) => Ok(ProxyIo::Tls(Box::new(tls))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the TLS handshake was not complete within limits.header_timeout_ms",
            )),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, ProxyIo::Tls(_))
    }
}

impl AsyncRead for ProxyIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ProxyIo::Plain(io) => Pin::new(io).poll_read(cx, buf),
            ProxyIo::Tls(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ProxyIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ProxyIo::Plain(io) => Pin::new(io).poll_write(cx, buf),
            ProxyIo::Tls(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ProxyIo::Plain(io) => Pin::new(io).poll_flush(cx),
            ProxyIo::Tls(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ProxyIo::Plain(io) => Pin::new(io).poll_shutdown(cx),
            ProxyIo::Tls(io) => Pin::new(io).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ProxyIo::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            ProxyIo::Tls(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ProxyIo::Plain(io) => io.is_write_vectored(),
            ProxyIo::Tls(io) => io.is_write_vectored(),
        }
    }
}
