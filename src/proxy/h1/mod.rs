//! The proxy's own HTTP/1.1 client for `http://` targets: per worker, a pool of kept-alive
//! connections that keep their read buffers; the request head written in one piece from the
//! client's headers as they are; the response head parsed in place (header values share its
//! bytes), the body streamed from the same buffer.
//!
//! Why not awc (bench/RESULTS.md, "Own upstream client"): per request, awc builds a codec whose
//! date service spawns a timer task (a wake-up through the runtime's eventfd: one more system
//! call per request), fresh framing buffers, and a request of its own with every header cloned
//! into it. `https://` targets still go through awc.

mod body;
mod pool;

#[cfg(test)]
mod h1_test;

use std::io;
use std::mem::MaybeUninit;
use std::rc::Rc;
use std::time::Duration;

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use bytes::{Buf as _, Bytes};
use futures_util::{Stream, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

pub use body::RecvBody;
use body::{Chunked, Framing, READ_SIZE};
use pool::Conn;
pub use pool::{Pool, IDLE_TIMEOUT};

use super::edge::{decimal_length, BodyError};

/// Longest response head read; the answer is a 502 past it.
const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a response head.
const MAX_FIELDS: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connect timed out after {} ms", .0.as_millis())]
    ConnectTimeout(Duration),
    #[error("{0}")]
    Connect(io::Error),
    /// The connection failed or closed before any byte of the answer.
    #[error("the connection broke before the response: {0}")]
    Broken(io::Error),
    /// The client's body could not be read, or passed the limit.
    #[error(transparent)]
    Body(BodyError),
    /// The upstream's answer is not HTTP/1.x as RFC 9112 frames it.
    #[error("invalid response: {0}")]
    Invalid(String),
}

/// The request body, with how it is framed upstream.
pub enum SendBody<S> {
    Empty,
    /// Sent as it comes, announced by `Content-Length`.
    Sized(u64, S),
    /// Sent with the chunked coding.
    Chunked(S),
}

/// The upstream's answer: its head, and its body still on the connection.
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: RecvBody,
}

/// A request head under construction: request line and `Host`, then the fields, then the
/// body's framing.
pub struct RequestHead(Vec<u8>);

impl RequestHead {
    /// `target_parts` concatenated make the request target (origin form); refused unless every
    /// byte is visible ASCII, so nothing the client sent can break the head's framing.
    pub fn new(method: &str, target_parts: &[&str], authority: &str) -> Result<Self, String> {
        let target_len: usize = target_parts.iter().map(|p| p.len()).sum();
        let mut buf = Vec::with_capacity(256 + target_len);
        buf.extend_from_slice(method.as_bytes());
        buf.push(b' ');
        for part in target_parts {
            if !part.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "the request target {part:?} cannot be sent as it is"
                ));
            }
            buf.extend_from_slice(part.as_bytes());
        }
        buf.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        // The port is left out when it is the scheme's default, as clients write it.
        buf.extend_from_slice(
            authority
                .strip_suffix(":80")
                .unwrap_or(authority)
                .as_bytes(),
        );
        buf.extend_from_slice(b"\r\n");
        Ok(RequestHead(buf))
    }

    /// One field; `value` is a valid field value (a `HeaderValue`'s bytes or checked text).
    pub fn field(&mut self, name: &HeaderName, value: &[u8]) {
        self.0.extend_from_slice(name.as_str().as_bytes());
        self.0.extend_from_slice(b": ");
        self.0.extend_from_slice(value);
        self.0.extend_from_slice(b"\r\n");
    }

    /// Ends the head with the framing of `body`.
    pub fn finish<S>(mut self, body: &SendBody<S>) -> Vec<u8> {
        match body {
            SendBody::Empty => {}
            SendBody::Sized(len, _) => {
                self.0.extend_from_slice(b"content-length: ");
                self.0.extend_from_slice(len.to_string().as_bytes());
                self.0.extend_from_slice(b"\r\n");
            }
            SendBody::Chunked(_) => self.0.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        }
        self.0.extend_from_slice(b"\r\n");
        self.0
    }
}

/// Sends `head` and `body` to `authority` on a pooled connection (or a new one, within
/// `connect`) and reads the answer's head. A pooled connection the upstream closed just as it
/// was reused fails before any answer; when `may_resend` (the request is idempotent and has no
/// body) it is sent once more on a new connection, as nginx and Envoy do.
pub async fn send<S>(
    pool: &Rc<Pool>,
    authority: &str,
    head: &[u8],
    mut body: SendBody<S>,
    head_request: bool,
    may_resend: bool,
    connect: Duration,
) -> Result<Response, Error>
where
    S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
{
    let (key, pooled) = pool.take(authority);
    let reused = pooled.is_some();
    let mut conn = match pooled {
        Some(conn) => conn,
        None => open(authority, connect).await?,
    };
    let mut answer = exchange(&mut conn, head, &mut body, head_request).await;
    if reused && may_resend && matches!(body, SendBody::Empty) {
        if let Err(Error::Broken(_)) = answer {
            conn = open(authority, connect).await?;
            answer = exchange(&mut conn, head, &mut body, head_request).await;
        }
    }
    let answer = answer?;
    Ok(Response {
        status: answer.status,
        headers: answer.headers,
        body: RecvBody::new(conn, answer.framing, answer.keep_alive, pool.clone(), key),
    })
}

async fn open(authority: &str, timeout: Duration) -> Result<Conn, Error> {
    let io = match tokio::time::timeout(timeout, TcpStream::connect(authority)).await {
        Err(_) => return Err(Error::ConnectTimeout(timeout)),
        Ok(Err(e)) => return Err(Error::Connect(e)),
        Ok(Ok(io)) => io,
    };
    // The head goes out in one write; never hold it back for more.
    io.set_nodelay(true).map_err(Error::Connect)?;
    Ok(Conn::new(io))
}

struct Head {
    status: StatusCode,
    headers: HeaderMap,
    framing: Framing,
    keep_alive: bool,
}

async fn exchange<S>(
    conn: &mut Conn,
    head: &[u8],
    body: &mut SendBody<S>,
    head_request: bool,
) -> Result<Head, Error>
where
    S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
{
    conn.io.write_all(head).await.map_err(Error::Broken)?;
    match body {
        SendBody::Empty => {}
        SendBody::Sized(_, stream) => {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(Error::Body)?;
                conn.io.write_all(&chunk).await.map_err(Error::Broken)?;
            }
        }
        SendBody::Chunked(stream) => {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(Error::Body)?;
                if chunk.is_empty() {
                    continue; // an empty chunk would end the body
                }
                let mut framed = Vec::with_capacity(chunk.len() + 20);
                framed.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                framed.extend_from_slice(&chunk);
                framed.extend_from_slice(b"\r\n");
                conn.io.write_all(&framed).await.map_err(Error::Broken)?;
            }
            conn.io
                .write_all(b"0\r\n\r\n")
                .await
                .map_err(Error::Broken)?;
        }
    }
    read_head(conn, head_request).await
}

async fn read_head(conn: &mut Conn, head_request: bool) -> Result<Head, Error> {
    loop {
        if !conn.buf.is_empty() {
            if let Some(head) = parse_head(conn, head_request)? {
                return Ok(head);
            }
            if conn.buf.len() > MAX_HEAD {
                return Err(Error::Invalid(format!(
                    "the head is longer than {MAX_HEAD} bytes"
                )));
            }
        }
        let started = !conn.buf.is_empty();
        conn.buf.reserve(READ_SIZE);
        match conn.io.read_buf(&mut conn.buf).await {
            Ok(0) if started => {
                return Err(Error::Invalid(
                    "the connection closed inside the head".into(),
                ))
            }
            Ok(0) => {
                return Err(Error::Broken(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the upstream closed the connection",
                )))
            }
            Ok(_) => {}
            Err(e) if started => return Err(Error::Invalid(format!("reading the head: {e}"))),
            Err(e) => return Err(Error::Broken(e)),
        }
    }
}

/// Parses a complete head at the front of the buffer, skipping interim (1xx) answers; `None`
/// until the head is whole.
fn parse_head(conn: &mut Conn, head_request: bool) -> Result<Option<Head>, Error> {
    loop {
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
        let mut res = httparse::Response::new(&mut []);
        let used = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut res,
            &conn.buf,
            &mut fields,
        ) {
            Ok(httparse::Status::Complete(used)) => used,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Error::Invalid(format!(
                    "more than {MAX_FIELDS} header fields"
                )))
            }
            Err(e) => return Err(Error::Invalid(e.to_string())),
        };
        let code = res.code.unwrap_or(0);
        if (100..200).contains(&code) {
            if code == 101 {
                return Err(Error::Invalid(
                    "101 Switching Protocols to a request that asked for no upgrade".into(),
                ));
            }
            conn.buf.advance(used);
            continue;
        }
        let status =
            StatusCode::from_u16(code).map_err(|_| Error::Invalid(format!("status {code}")))?;
        let keep_alive = res.version == Some(1);
        // Names now; values as offsets into the head, which then becomes shared bytes.
        let base = conn.buf.as_ptr() as usize;
        let mut named = Vec::with_capacity(res.headers.len());
        for field in res.headers.iter() {
            let name = HeaderName::from_bytes(field.name.as_bytes())
                .map_err(|_| Error::Invalid(format!("header name {:?}", field.name)))?;
            // An empty value may not point into the buffer: it is empty wherever it points.
            let start = match field.value {
                [] => 0,
                value => value.as_ptr() as usize - base,
            };
            named.push((name, start, start + field.value.len()));
        }
        let bytes = conn.buf.split_to(used).freeze();
        let mut headers = HeaderMap::with_capacity(named.len());
        for (name, start, end) in named {
            let value = HeaderValue::from_maybe_shared(bytes.slice(start..end))
                .map_err(|_| Error::Invalid(format!("the value of {name}")))?;
            headers.append(name, value);
        }
        let (framing, keep_alive) = framing(&headers, status, head_request, keep_alive)?;
        return Ok(Some(Head {
            status,
            headers,
            framing,
            keep_alive,
        }));
    }
}

/// How the answer's body ends (RFC 9112 §6.3), and whether the connection outlives it.
fn framing(
    headers: &HeaderMap,
    status: StatusCode,
    head_request: bool,
    http11: bool,
) -> Result<(Framing, bool), Error> {
    let close = list_tokens(headers, header::CONNECTION).any(|t| t.eq_ignore_ascii_case("close"));
    let keep_alive = http11 && !close;
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Length(0), keep_alive));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        let last = list_tokens(headers, header::TRANSFER_ENCODING)
            .filter(|t| !t.is_empty())
            .last();
        return Ok(match last {
            // With Content-Length beside it the message is suspect: never reuse the connection.
            Some(c) if c.eq_ignore_ascii_case("chunked") => (
                Framing::Chunked(Chunked::Size),
                keep_alive && !headers.contains_key(header::CONTENT_LENGTH),
            ),
            _ => (Framing::Close, false),
        });
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let n = decimal_length(value.as_bytes())
            .ok_or_else(|| Error::Invalid("invalid Content-Length".into()))?;
        if length.is_some_and(|l| l != n) {
            return Err(Error::Invalid("conflicting Content-Length values".into()));
        }
        length = Some(n);
    }
    Ok(match length {
        Some(n) => (Framing::Length(n), keep_alive),
        None => (Framing::Close, false),
    })
}

/// The comma-separated tokens of every `name` field (`Connection`, `Transfer-Encoding`),
/// trimmed; read in place.
pub fn list_tokens(headers: &HeaderMap, name: HeaderName) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}
