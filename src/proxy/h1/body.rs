//! The upstream's response body: framed by Content-Length, chunked coding or the end of the
//! connection (RFC 9112 §6.3), read from the connection's buffer; a connection whose body ended
//! cleanly goes back to the pool.

use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use actix_web::error::PayloadError;
use bytes::{Buf as _, Bytes, BytesMut};
use futures_util::Stream;

use super::pool::{Conn, Pool};

/// Bytes asked of the socket per read.
pub const READ_SIZE: usize = 8 * 1024;
/// Longest chunk-size line or trailer section accepted.
const MAX_LINE: usize = 16 * 1024;

/// How the body's end is known.
#[derive(Debug, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes remain.
    Length(u64),
    Chunked(Chunked),
    /// Until the upstream closes the connection, which then cannot be reused.
    Close,
}

/// The chunked transfer coding's decoder (RFC 9112 §7.1): chunk-size lines (extensions
/// ignored), data, and trailer fields (dropped).
#[derive(Debug, PartialEq, Eq)]
pub enum Chunked {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

/// What one step of decoding found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// The body is complete; what is left in the buffer is not part of it.
    End,
    /// The buffer holds no whole piece: read more.
    NeedMore,
    Invalid(&'static str),
}

impl Framing {
    /// Takes the next piece of the body from `buf`. `Close` never ends here: the caller sees
    /// the end of the connection.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Decoded {
        match self {
            Framing::Length(0) => Decoded::End,
            Framing::Length(left) => {
                if buf.is_empty() {
                    return Decoded::NeedMore;
                }
                let take = (*left).min(buf.len() as u64);
                *left -= take;
                Decoded::Data(buf.split_to(take as usize).freeze())
            }
            Framing::Close if buf.is_empty() => Decoded::NeedMore,
            Framing::Close => Decoded::Data(buf.split().freeze()),
            Framing::Chunked(state) => state.decode(buf),
        }
    }
}

impl Chunked {
    fn decode(&mut self, buf: &mut BytesMut) -> Decoded {
        loop {
            match self {
                Chunked::Size => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, 0))) => {
                        buf.advance(used);
                        *self = Chunked::Trailers;
                    }
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        *self = Chunked::Data(size);
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_LINE => {
                        return Decoded::Invalid("a chunk-size line is too long")
                    }
                    Ok(httparse::Status::Partial) => return Decoded::NeedMore,
                    Err(_) => return Decoded::Invalid("invalid chunk size"),
                },
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Decoded::NeedMore;
                    }
                    let take = (*left).min(buf.len() as u64);
                    *left -= take;
                    if *left == 0 {
                        *self = Chunked::DataEnd;
                    }
                    return Decoded::Data(buf.split_to(take as usize).freeze());
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Decoded::NeedMore;
                    }
                    if &buf[..2] != b"\r\n" {
                        return Decoded::Invalid("a chunk's data does not end with CRLF");
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers => {
                    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
                        if buf.len() > MAX_LINE {
                            return Decoded::Invalid("the trailer section is too long");
                        }
                        return Decoded::NeedMore;
                    };
                    buf.advance(eol + 2);
                    if eol == 0 {
                        return Decoded::End;
                    }
                }
            }
        }
    }
}

/// The body of one upstream answer, streamed from its connection. Dropped before its end, it
/// closes the connection.
pub struct RecvBody {
    conn: Option<Conn>,
    framing: Framing,
    /// Whether the connection may carry another request once the body has ended.
    keep_alive: bool,
    pool: Rc<Pool>,
    key: Rc<str>,
}

impl RecvBody {
    pub fn new(
        conn: Conn,
        framing: Framing,
        keep_alive: bool,
        pool: Rc<Pool>,
        key: Rc<str>,
    ) -> Self {
        let mut body = RecvBody {
            conn: Some(conn),
            framing,
            keep_alive,
            pool,
            key,
        };
        // A body-less answer frees its connection at once.
        if body.framing == Framing::Length(0) {
            body.finish();
        }
        body
    }

    /// The body is complete: the connection goes back to the pool when it can be reused.
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.keep_alive && self.framing != Framing::Close && conn.buf.is_empty() {
                self.pool.put(&self.key, conn);
            }
        }
    }

    fn fail(&mut self, err: io::Error) -> Poll<Option<Result<Bytes, PayloadError>>> {
        self.conn = None;
        Poll::Ready(Some(Err(PayloadError::Io(err))))
    }
}

impl Stream for RecvBody {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.framing.decode(&mut conn.buf) {
                Decoded::Data(bytes) => return Poll::Ready(Some(Ok(bytes))),
                Decoded::End => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Decoded::Invalid(why) => {
                    return this.fail(io::Error::new(io::ErrorKind::InvalidData, why))
                }
                Decoded::NeedMore => {}
            }
            if let Err(e) = ready!(conn.io.poll_read_ready(cx)) {
                return this.fail(e);
            }
            conn.buf.reserve(READ_SIZE);
            match conn.io.try_read_buf(&mut conn.buf) {
                Ok(0) if this.framing == Framing::Close => {
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    return this.fail(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the upstream closed the connection before the end of the body",
                    ))
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return this.fail(e),
            }
        }
    }
}
