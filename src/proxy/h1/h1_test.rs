//! The upstream client against scripted upstreams on loopback: framing, reuse, and a pooled
//! connection closed under it.

use std::rc::Rc;
use std::time::Duration;

use actix_web::http::header::HeaderMap;
use actix_web::http::StatusCode;
use bytes::{Bytes, BytesMut};
use futures_util::{stream, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::body::{Chunked, Decoded, Framing};
use super::{framing, send, Error, Pool, RequestHead, SendBody};
use crate::proxy::edge::BodyError;

type NoBody = stream::Empty<Result<Bytes, BodyError>>;

/// Feeds `wire` to the decoder in pieces of `step` bytes; the data, or the first complaint.
fn decode_in_steps(wire: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>), &'static str> {
    let mut framing = Framing::Chunked(Chunked::Size);
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    for piece in wire.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match framing.decode(&mut buf) {
                Decoded::Data(d) => data.extend_from_slice(&d),
                Decoded::End => return Ok((data, buf.to_vec())),
                Decoded::NeedMore => break,
                Decoded::Invalid(why) => return Err(why),
            }
        }
    }
    Err("the body never ended")
}

#[test]
fn chunked_bodies_decode_however_they_are_split() {
    let wire =
        b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-trailer: t\r\n\r\nNEXT";
    for step in [1, 2, 3, 7, wire.len()] {
        let (data, rest) = decode_in_steps(wire, step).unwrap();
        assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
        // What follows the body stays in the buffer (and keeps the connection out of the pool).
        assert!(b"NEXT".starts_with(&rest), "step {step}: {rest:?}");
    }
}

#[test]
fn broken_chunked_bodies_are_refused() {
    assert_eq!(decode_in_steps(b"zz\r\n", 4), Err("invalid chunk size"));
    assert_eq!(
        decode_in_steps(b"3\r\nabcXY", 9),
        Err("a chunk's data does not end with CRLF")
    );
}

#[test]
fn content_length_bodies_end_at_their_length() {
    let mut framing = Framing::Length(5);
    let mut buf = BytesMut::from(&b"helloEXTRA"[..]);
    assert_eq!(
        framing.decode(&mut buf),
        Decoded::Data(Bytes::from_static(b"hello"))
    );
    assert_eq!(framing.decode(&mut buf), Decoded::End);
    assert_eq!(&buf[..], b"EXTRA");
}

fn headers(fields: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in fields {
        h.append(n.parse().unwrap(), v.parse().unwrap());
    }
    h
}

#[test]
fn framing_follows_rfc_9112() {
    let ok = StatusCode::OK;
    let f = |fields, status, head| framing(&headers(fields), status, head, true);
    let cl = [("content-length", "12")];
    assert_eq!(f(&cl, ok, false).unwrap(), (Framing::Length(12), true));
    // HEAD, 204 and 304 answers have no body whatever they announce.
    assert_eq!(f(&cl, ok, true).unwrap(), (Framing::Length(0), true));
    assert_eq!(
        f(&cl, StatusCode::NOT_MODIFIED, false).unwrap(),
        (Framing::Length(0), true)
    );
    let chunked = [("transfer-encoding", "gzip, chunked")];
    assert_eq!(
        f(&chunked, ok, false).unwrap(),
        (Framing::Chunked(Chunked::Size), true)
    );
    // Both: chunked wins and the connection is not reused.
    let both = [("transfer-encoding", "chunked"), ("content-length", "3")];
    assert_eq!(
        f(&both, ok, false).unwrap(),
        (Framing::Chunked(Chunked::Size), false)
    );
    assert_eq!(f(&[], ok, false).unwrap(), (Framing::Close, false));
    let close = [("content-length", "1"), ("connection", "Close")];
    assert_eq!(f(&close, ok, false).unwrap(), (Framing::Length(1), false));
    let conflict = [("content-length", "1"), ("content-length", "2")];
    assert!(matches!(f(&conflict, ok, false), Err(Error::Invalid(_))));
    assert!(matches!(
        f(&[("content-length", "-1")], ok, false),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn request_heads_refuse_targets_that_would_break_framing() {
    let head = RequestHead::new("GET", &["/a", "?b=1"], "127.0.0.1:80").unwrap();
    let bytes = head.finish::<NoBody>(&SendBody::Empty);
    assert_eq!(bytes, b"GET /a?b=1 HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n");
    assert!(RequestHead::new("GET", &["/a b"], "h:1").is_err());
    assert!(RequestHead::new("GET", &["/a\r\nx: y"], "h:1").is_err());
}

/// An upstream on loopback that reads one request head per answer in `script` and writes the
/// answer; after the last one of a connection (`None` in the script) it closes. Reports each
/// request head it read.
async fn upstream(
    script: Vec<Option<&'static str>>,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    actix_rt::spawn(async move {
        let mut script = script.into_iter();
        'conns: loop {
            let Ok((mut io, _)) = listener.accept().await else {
                return;
            };
            loop {
                let Some(step) = script.next() else { return };
                let Some(answer) = step else { continue 'conns };
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8; 1];
                    if io.read(&mut byte).await.unwrap_or(0) == 0 {
                        continue 'conns;
                    }
                    head.push(byte[0]);
                }
                let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
                io.write_all(answer.as_bytes()).await.unwrap();
            }
        }
    });
    (addr, rx)
}

async fn get(
    pool: &Rc<Pool>,
    addr: &str,
    may_resend: bool,
) -> Result<(StatusCode, Vec<u8>), Error> {
    let head = RequestHead::new("GET", &["/x"], addr)
        .unwrap()
        .finish::<NoBody>(&SendBody::Empty);
    let resp = send::<NoBody>(
        pool,
        addr,
        &head,
        SendBody::Empty,
        false,
        may_resend,
        Duration::from_secs(5),
    )
    .await?;
    let mut body = resp.body;
    let mut data = Vec::new();
    while let Some(chunk) = body.next().await {
        data.extend_from_slice(&chunk.expect("the body reads"));
    }
    Ok((resp.status, data))
}

#[actix_rt::test]
async fn a_kept_alive_connection_carries_the_next_request() {
    let (addr, mut heads) = upstream(vec![
        Some("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nx-empty:\r\ncontent-length: 2\r\n\r\nok"),
        Some("HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
        None,
        Some("HTTP/1.1 200 OK\r\n\r\nuntil close"),
    ])
    .await;
    let pool = Rc::new(Pool::default());
    assert_eq!(
        get(&pool, &addr, false).await.unwrap(),
        (StatusCode::OK, b"ok".to_vec())
    );
    assert_eq!(pool.idle(&addr), 1);
    // The second request goes on the same connection: the upstream's script accepts only one
    // more connection, for the third.
    assert_eq!(
        get(&pool, &addr, false).await.unwrap(),
        (StatusCode::CREATED, b"abc".to_vec())
    );
    assert_eq!(pool.idle(&addr), 1);
    let first = heads.recv().await.unwrap();
    assert!(
        first.starts_with("GET /x HTTP/1.1\r\nhost: 127.0.0.1:"),
        "{first}"
    );
    heads.recv().await.unwrap();
}

#[actix_rt::test]
async fn a_body_read_to_the_close_leaves_nothing_in_the_pool() {
    let (addr, _heads) = upstream(vec![Some("HTTP/1.1 200 OK\r\n\r\nuntil close"), None]).await;
    let pool = Rc::new(Pool::default());
    assert_eq!(
        get(&pool, &addr, false).await.unwrap(),
        (StatusCode::OK, b"until close".to_vec())
    );
    assert_eq!(pool.idle(&addr), 0);
}

/// The upstream answers and closes at once, as a server closing an idle keep-alive connection
/// does; the pool still holds the connection when the next request comes.
#[actix_rt::test]
async fn a_pooled_connection_closed_by_the_upstream_is_replaced() {
    let ok = "HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n1";
    let (addr, _heads) = upstream(vec![Some(ok), None, Some(ok), None, Some(ok), None]).await;
    let pool = Rc::new(Pool::default());
    get(&pool, &addr, false).await.unwrap();
    assert_eq!(pool.idle(&addr), 1);
    // Whether the close has been seen when the connection is taken or only when the request
    // fails on it, an idempotent request gets through.
    assert_eq!(
        get(&pool, &addr, true).await.unwrap(),
        (StatusCode::OK, b"1".to_vec())
    );
    assert_eq!(
        get(&pool, &addr, true).await.unwrap(),
        (StatusCode::OK, b"1".to_vec())
    );
}

#[actix_rt::test]
async fn a_request_the_upstream_drops_unanswered_is_broken_not_invalid() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    actix_rt::spawn(async move {
        let (mut io, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 256];
        let _ = io.read(&mut buf).await;
        // closed unanswered
    });
    let pool = Rc::new(Pool::default());
    assert!(matches!(
        get(&pool, &addr, false).await,
        Err(Error::Broken(_))
    ));
    // And a refused connect is a connect failure.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone = closed.local_addr().unwrap().to_string();
    drop(closed);
    assert!(matches!(
        get(&pool, &gone, false).await,
        Err(Error::Connect(_))
    ));
}

#[actix_rt::test]
async fn header_values_keep_their_order_and_may_be_empty() {
    let (addr, _heads) = upstream(vec![Some(
        "HTTP/1.1 200 OK\r\nx-empty:\r\nx-a: 1\r\nX-A: 2\r\ncontent-length: 0\r\n\r\n",
    )])
    .await;
    let pool = Rc::new(Pool::default());
    let head = RequestHead::new("GET", &["/"], &addr)
        .unwrap()
        .finish::<NoBody>(&SendBody::Empty);
    let resp = send::<NoBody>(
        &pool,
        &addr,
        &head,
        SendBody::Empty,
        false,
        false,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(resp.headers.get("x-empty").unwrap(), "");
    let a: Vec<_> = resp
        .headers
        .get_all("x-a")
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(a, ["1", "2"]);
    // A body-less answer frees its connection at once.
    assert_eq!(pool.idle(&addr), 1);
}
