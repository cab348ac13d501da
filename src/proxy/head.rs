//! The proxy's own HTTP/1 request framing, run on a connection's bytes before actix-http sees
//! them ([`super::conn::ClockedIo`] drives it). It finds every request head of the connection,
//! pipelined or kept alive, validates it (API.md §2 `[limits]`, §4) and follows the body's
//! framing to the next head.
//!
//! Why not leave this to actix-http: its parser answers bad input itself with an empty body,
//! and it stops at 96 header fields. Here a head is refused with the gateway's JSON before
//! actix sees a byte of it, and a head over 96 fields (up to `limits.max_headers`) reaches actix
//! with the fields past what it reads moved into one [`CARRIER`] field, which
//! [`restore_moved`] unpacks before any phase runs.
//!
//! The framing must agree with actix-http's byte for byte (its `h1/decoder.rs` and
//! `h1/chunked.rs`): what it would frame differently, or refuse, is refused here first.

use std::mem::MaybeUninit;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, Uri};

/// The most header fields actix-http's parser reads in one head.
pub const PARSER_MAX_HEADERS: usize = 96;
/// The longest head actix-http buffers (its `MAX_BUFFER_SIZE`).
pub const PARSER_MAX_HEAD: usize = 131_072;
/// The field that carries a head's fields past [`PARSER_MAX_HEADERS`] through actix-http. A
/// client never gets to send it: the framing drops it from every head.
pub const CARRIER: &str = "x-raftgate-moved-headers";
/// [`CARRIER`], ready for map lookups without parsing the name each time.
pub static CARRIER_NAME: HeaderName = HeaderName::from_static(CARRIER);

/// Header fields parsed on the stack; with a larger `max_headers`, a head with more parses
/// again on the heap.
const STACK_HEADERS: usize = 128;

/// One connection's request framing.
pub struct Framing {
    state: State,
    max_headers: usize,
    max_head_bytes: usize,
    /// How much of a partial head has been searched for its end: it is parsed again only once
    /// a blank line has arrived, so a head trickled byte by byte is not parsed byte by byte.
    searched: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// A request head starts here.
    Head,
    /// A Content-Length body with this much left.
    Length(u64),
    /// A chunked body: where in it, and the chunk size being read or the data left.
    Chunked(Chunk, u64),
    /// The rest of the connection is not HTTP (a WebSocket upgrade, CONNECT).
    Opaque,
    /// The body framing was broken; nothing more passes.
    Broken,
}

/// actix-http's `ChunkedState`, minus `End`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    SizeFirst,
    SizeRest,
    SizeLws,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    Trailer,
    TrailerLf,
    EndCr,
    EndLf,
}

/// What the start of the input is.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// `n` bytes of a body (or of a connection no longer HTTP): they pass as they are.
    Body(usize),
    /// A complete, valid head of `len` bytes; it passes as it is, or as `rewritten`.
    Head {
        len: usize,
        rewritten: Option<Vec<u8>>,
    },
    /// The start of a head: call again with more bytes appended.
    Partial,
    /// A head that is refused; nothing of it or after it may pass.
    Refuse(Refusal),
    /// The body's framing is broken here; nothing from here on may pass.
    Broken,
}

/// Why a head is refused: the gateway's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 400 `bad_request`.
    BadRequest(String),
    /// 431 `headers_too_large`.
    TooLarge(String),
}

impl Refusal {
    /// The whole HTTP answer; the connection closes after it.
    pub fn answer(&self) -> Vec<u8> {
        let (status, code, message) = match self {
            Refusal::BadRequest(m) => ("400 Bad Request", "bad_request", m.as_str()),
            Refusal::TooLarge(m) => (
                "431 Request Header Fields Too Large",
                "headers_too_large",
                m.as_str(),
            ),
        };
        let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

fn bad(message: impl Into<String>) -> Step {
    Step::Refuse(Refusal::BadRequest(message.into()))
}

fn too_large(message: impl Into<String>) -> Step {
    Step::Refuse(Refusal::TooLarge(message.into()))
}

impl Framing {
    /// `max_headers` and `max_head_bytes` are `limits.max_headers` and `max_header_bytes`;
    /// a head over either is 431.
    pub fn new(max_headers: usize, max_head_bytes: usize) -> Framing {
        Framing {
            state: State::Head,
            max_headers,
            max_head_bytes,
            searched: 0,
        }
    }

    /// Frames the start of `input` (not empty). After `Partial`, the next call must start
    /// with the same bytes.
    pub fn step(&mut self, input: &[u8]) -> Step {
        debug_assert!(!input.is_empty());
        match self.state {
            State::Head => self.head(input),
            State::Length(left) => {
                let n = left.min(input.len() as u64);
                self.state = match left - n {
                    0 => State::Head,
                    left => State::Length(left),
                };
                Step::Body(n as usize)
            }
            State::Chunked(at, size) => self.chunked(input, at, size),
            State::Opaque => Step::Body(input.len()),
            State::Broken => Step::Broken,
        }
    }

    fn head(&mut self, input: &[u8]) -> Step {
        if self.searched > 0 && !has_blank_line(input, self.searched) {
            return self.partial(input.len());
        }
        let mut stack = [const { MaybeUninit::uninit() }; STACK_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let parsed = req.parse_with_uninit_headers(input, &mut stack);
        let step = match parsed {
            Ok(httparse::Status::Complete(len)) => self.complete(&req, len),
            Ok(httparse::Status::Partial) => return self.partial(input.len()),
            Err(httparse::Error::TooManyHeaders) if self.max_headers >= STACK_HEADERS => {
                let mut heap = vec![httparse::EMPTY_HEADER; self.max_headers + 1];
                let mut req = httparse::Request::new(&mut heap);
                match req.parse(input) {
                    Ok(httparse::Status::Complete(len)) => self.complete(&req, len),
                    Ok(httparse::Status::Partial) => return self.partial(input.len()),
                    Err(e) => self.malformed(e),
                }
            }
            Err(e) => self.malformed(e),
        };
        self.searched = 0;
        step
    }

    fn partial(&mut self, len: usize) -> Step {
        if len > self.max_head_bytes {
            self.searched = 0;
            return too_large(format!(
                "the request head passed the limit of {} bytes",
                self.max_head_bytes
            ));
        }
        self.searched = len;
        Step::Partial
    }

    fn malformed(&self, e: httparse::Error) -> Step {
        match e {
            httparse::Error::TooManyHeaders => too_large(format!(
                "more header fields than the limit of {}",
                self.max_headers
            )),
            e => bad(format!("malformed request head: {e}")),
        }
    }

    /// Validates a complete head as actix-http would, plus the limits, and sets the framing of
    /// its body.
    fn complete(&mut self, req: &httparse::Request<'_, '_>, len: usize) -> Step {
        let headers = &*req.headers;
        if headers.len() > self.max_headers {
            return too_large(format!(
                "{} header fields, the limit is {}",
                headers.len(),
                self.max_headers
            ));
        }
        if len > self.max_head_bytes {
            return too_large(format!(
                "{len} bytes of request head, the limit is {}",
                self.max_head_bytes
            ));
        }
        let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
            return bad("malformed request line");
        };
        if Method::from_bytes(method.as_bytes()).is_err() {
            return bad("invalid method");
        }
        if !plain_target(path) && Uri::try_from(path).is_err() {
            return bad("invalid request target");
        }
        let http11 = version == 1;

        let mut length = None;
        let (mut transfer_encoding, mut host, mut websocket, mut carrier) =
            (false, false, false, false);
        for h in headers {
            let name = h.name;
            if name.eq_ignore_ascii_case("content-length") {
                if length.is_some() {
                    return bad("more than one Content-Length");
                }
                // As actix-http reads it: `HeaderValue::to_str` (visible ASCII and tab only),
                // trimmed, no sign, a u64.
                let visible = h
                    .value
                    .iter()
                    .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b));
                match std::str::from_utf8(h.value).map(str::trim) {
                    Ok(v) if visible && !v.starts_with('+') => match v.parse::<u64>() {
                        Ok(n) => length = Some(n),
                        Err(_) => return bad("invalid Content-Length"),
                    },
                    _ => return bad("invalid Content-Length"),
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                if !http11 {
                    return bad("Transfer-Encoding in an HTTP/1.0 request");
                }
                if transfer_encoding {
                    return bad("more than one Transfer-Encoding");
                }
                transfer_encoding = true;
                if !trimmed_eq(h.value, "chunked") {
                    return bad("a Transfer-Encoding other than chunked");
                }
            } else if name.eq_ignore_ascii_case("host") {
                if host {
                    return bad("more than one Host");
                }
                host = true;
            } else if name.eq_ignore_ascii_case("upgrade") {
                websocket |= trimmed_eq(h.value, "websocket");
            } else if name.eq_ignore_ascii_case(CARRIER) {
                carrier = true;
            }
        }
        if http11 && !host {
            return bad("an HTTP/1.1 request without Host");
        }
        if transfer_encoding && length.is_some() {
            return bad("both Content-Length and Transfer-Encoding");
        }
        if !http11 && method == "POST" && length.is_none() && !websocket {
            return bad("an HTTP/1.0 POST without Content-Length");
        }

        let rewritten = if carrier || headers.len() > PARSER_MAX_HEADERS {
            match rewrite(method, path, http11, headers) {
                Ok(head) => Some(head),
                Err(refused) => return Step::Refuse(refused),
            }
        } else {
            None
        };

        // The order of actix-http's decoder: chunked, then a WebSocket upgrade (the rest of the
        // connection is its body), then a non-zero Content-Length, then CONNECT (the same).
        self.state = match length {
            _ if transfer_encoding => State::Chunked(Chunk::SizeFirst, 0),
            _ if websocket => State::Opaque,
            Some(n) if n > 0 => State::Length(n),
            _ if method == "CONNECT" => State::Opaque,
            _ => State::Head,
        };
        Step::Head { len, rewritten }
    }

    /// actix-http's chunked decoder, one byte at a time except for chunk data.
    fn chunked(&mut self, input: &[u8], mut at: Chunk, mut size: u64) -> Step {
        let mut i = 0;
        while i < input.len() {
            if at == Chunk::Data {
                let n = size.min((input.len() - i) as u64);
                i += n as usize;
                size -= n;
                if size == 0 {
                    at = Chunk::DataCr;
                }
                continue;
            }
            let b = input[i];
            i += 1;
            let next = match (at, b) {
                (Chunk::SizeFirst, _) => hex(b).map(|d| {
                    size = d;
                    Chunk::SizeRest
                }),
                (Chunk::SizeRest, b'\t' | b' ') => Some(Chunk::SizeLws),
                (Chunk::SizeRest | Chunk::SizeLws, b';') => Some(Chunk::Extension),
                (Chunk::SizeRest | Chunk::SizeLws | Chunk::Extension, b'\r') => Some(Chunk::SizeLf),
                (Chunk::SizeRest, _) => hex(b)
                    .and_then(|d| size.checked_mul(16).map(|s| s + d))
                    .map(|s| {
                        size = s;
                        Chunk::SizeRest
                    }),
                (Chunk::SizeLws, b'\t' | b' ') => Some(Chunk::SizeLws),
                (Chunk::Extension, 0x00..=0x08 | 0x0a..=0x1f | 0x7f) => None,
                (Chunk::Extension, _) => Some(Chunk::Extension),
                (Chunk::SizeLf, b'\n') if size > 0 => Some(Chunk::Data),
                (Chunk::SizeLf, b'\n') => Some(Chunk::EndCr),
                (Chunk::DataCr, b'\r') => Some(Chunk::DataLf),
                (Chunk::DataLf, b'\n') => Some(Chunk::SizeFirst),
                (Chunk::Trailer, b'\r') => Some(Chunk::TrailerLf),
                (Chunk::Trailer, _) => Some(Chunk::Trailer),
                (Chunk::TrailerLf, b'\n') => Some(Chunk::EndCr),
                (Chunk::EndCr, b'\r') => Some(Chunk::EndLf),
                (Chunk::EndCr, _) => Some(Chunk::Trailer),
                (Chunk::EndLf, b'\n') => {
                    self.state = State::Head;
                    return Step::Body(i);
                }
                _ => None,
            };
            match next {
                Some(n) => at = n,
                None => {
                    self.state = State::Broken;
                    return if i > 1 {
                        Step::Body(i - 1)
                    } else {
                        Step::Broken
                    };
                }
            }
        }
        self.state = State::Chunked(at, size);
        Step::Body(i)
    }
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

fn trimmed_eq(value: &[u8], word: &str) -> bool {
    value.trim_ascii().eq_ignore_ascii_case(word.as_bytes())
}

/// Whether a blank line (the end of a head) may have arrived since `from`.
fn has_blank_line(input: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(3);
    input[start..].iter().enumerate().any(|(i, &b)| {
        b == b'\n' && matches!(&input[start + i + 1..], [b'\n', ..] | [b'\r', b'\n', ..])
    })
}

/// An origin-form target made of characters `Uri` takes as they are: it needs no parse to know
/// that actix-http will accept it (most targets; the rest are checked with `Uri::try_from`).
fn plain_target(path: &str) -> bool {
    path.len() < 8 * 1024
        && path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-._~%!$&'()*+,;=:@?".contains(&b))
}

/// Fields actix-http reads itself, or that decide where and as whom a request goes: they stay
/// in the head; others may move into the carrier.
fn pinned(name: &str) -> bool {
    const PINNED: [&str; 10] = [
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
        "expect",
        "authorization",
        "apikey",
        "x-consumer",
        "x-request-id",
    ];
    let lower = |prefix: &str| {
        name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix)
    };
    PINNED.iter().any(|p| name.eq_ignore_ascii_case(p))
        || lower("x-forwarded-")
        || lower("sec-websocket-")
}

/// The head as actix-http can read it: without a client's [`CARRIER`] field, and with the
/// fields past [`PARSER_MAX_HEADERS`] (the last ones that are not [`pinned`]) packed into one.
fn rewrite(
    method: &str,
    path: &str,
    http11: bool,
    headers: &[httparse::Header<'_>],
) -> Result<Vec<u8>, Refusal> {
    let fields: Vec<&httparse::Header<'_>> = headers
        .iter()
        .filter(|h| !h.name.eq_ignore_ascii_case(CARRIER))
        .collect();
    let mut moved = vec![false; fields.len()];
    if fields.len() > PARSER_MAX_HEADERS {
        // One slot goes to the carrier.
        let mut to_move = fields.len() - (PARSER_MAX_HEADERS - 1);
        for (i, h) in fields.iter().enumerate().rev() {
            if to_move == 0 {
                break;
            }
            if !pinned(h.name) {
                moved[i] = true;
                to_move -= 1;
            }
        }
        if to_move > 0 {
            return Err(Refusal::TooLarge(format!(
                "more than {} fields the gateway reads itself (Host, Authorization, \
                 X-Forwarded-*, …)",
                PARSER_MAX_HEADERS - 1
            )));
        }
    }
    let mut out = Vec::with_capacity(PARSER_MAX_HEADERS * 32);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(if http11 {
        b" HTTP/1.1\r\n"
    } else {
        b" HTTP/1.0\r\n"
    });
    let mut carried = Vec::new();
    for (h, moved) in fields.iter().zip(&moved) {
        if *moved {
            pack(&mut carried, h.name, h.value);
        } else {
            for part in [h.name.as_bytes(), b": ", h.value, b"\r\n"] {
                out.extend_from_slice(part);
            }
        }
    }
    if !carried.is_empty() {
        for part in [CARRIER.as_bytes(), b": ", &carried, b"\r\n"] {
            out.extend_from_slice(part);
        }
    }
    out.extend_from_slice(b"\r\n");
    if out.len() > PARSER_MAX_HEAD {
        return Err(Refusal::TooLarge(format!(
            "the request head passed the limit of {PARSER_MAX_HEAD} bytes"
        )));
    }
    Ok(out)
}

/// Appends `name:value` to a carrier value, `,`-separated. A value may hold any byte a field
/// value may (visible ASCII, space, tab, obs-text); `%` and `,` are escaped. Names are tokens:
/// no `:` nor `,`. Values have no whitespace at either end (httparse trims it), so neither has
/// the carrier's.
fn pack(carried: &mut Vec<u8>, name: &str, value: &[u8]) {
    if !carried.is_empty() {
        carried.push(b',');
    }
    carried.extend_from_slice(name.as_bytes());
    carried.push(b':');
    for &b in value {
        match b {
            b'%' => carried.extend_from_slice(b"%25"),
            b',' => carried.extend_from_slice(b"%2C"),
            b => carried.push(b),
        }
    }
}

/// The fields packed into a carrier value, in order.
fn unpack(carried: &[u8]) -> impl Iterator<Item = (HeaderName, HeaderValue)> + '_ {
    carried.split(|&b| b == b',').filter_map(|field| {
        let colon = field.iter().position(|&b| b == b':')?;
        let name = HeaderName::from_bytes(&field[..colon]).ok()?;
        let mut value = Vec::with_capacity(field.len() - colon - 1);
        let mut rest = &field[colon + 1..];
        while !rest.is_empty() {
            let (b, skip) = match rest {
                [b'%', b'2', b'5', ..] => (b'%', 3),
                [b'%', b'2', b'C', ..] => (b',', 3),
                [b, ..] => (*b, 1),
                [] => unreachable!(),
            };
            value.push(b);
            rest = &rest[skip..];
        }
        Some((name, HeaderValue::from_bytes(&value).ok()?))
    })
}

/// Puts the fields a rewritten head carried in [`CARRIER`] back among the request's headers,
/// after the ones of the same name that stayed in the head (the order the client sent).
pub fn restore_moved(headers: &mut HeaderMap) {
    let Some(carried) = headers.get(&CARRIER_NAME).map(|v| v.as_bytes().to_vec()) else {
        return;
    };
    headers.remove(&CARRIER_NAME);
    for (name, value) in unpack(&carried) {
        headers.append(name, value);
    }
}

#[cfg(test)]
#[path = "head_test.rs"]
mod tests;
