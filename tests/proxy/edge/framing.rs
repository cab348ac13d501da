//! The proxy's own framing of a connection's requests (`src/proxy/head.rs`): every head of a
//! kept-alive or pipelined connection is checked before actix-http reads it, the answers never
//! interleave, and heads past actix-http's 96 fields reach the upstream whole.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{gateway, read_response, read_until_closed, still_serves, Raw};
use crate::support::Cluster;

/// Splits the answers read off one connection (each with a Content-Length).
fn answers(mut bytes: &[u8]) -> Vec<Raw> {
    let mut out = Vec::new();
    while let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = Raw::parse(&bytes[..end + 4]);
        let len: usize = head
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("an answer without Content-Length: {head:?}"));
        let whole = (end + 4 + len).min(bytes.len());
        out.push(Raw::parse(&bytes[..whole]));
        bytes = &bytes[whole..];
    }
    assert!(bytes.is_empty(), "{}", String::from_utf8_lossy(bytes));
    out
}

fn fields(n: usize) -> String {
    (0..n).map(|i| format!("X-F{i}: v{i}\r\n")).collect()
}

/// Bad requests, as (what, request, status, code).
fn bad_requests() -> Vec<(&'static str, String, u16, &'static str)> {
    vec![
        (
            "Content-Length with Transfer-Encoding",
            "POST /bad HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".into(),
            400,
            "bad_request",
        ),
        (
            "duplicate Content-Length",
            "POST /bad HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello".into(),
            400,
            "bad_request",
        ),
        (
            "more than max_headers fields",
            format!("GET /bad HTTP/1.1\r\nHost: x\r\n{}\r\n", fields(100)),
            431,
            "headers_too_large",
        ),
        (
            "a head over max_header_bytes",
            format!("GET /bad HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "b".repeat(70_000)),
            431,
            "headers_too_large",
        ),
    ]
}

const GOOD: &[u8] = b"GET /good HTTP/1.1\r\nHost: x\r\n\r\n";

fn assert_refused(r: &Raw, status: u16, code: &str, what: &str) {
    assert_eq!(
        (r.status, r.code().as_str()),
        (status, code),
        "{what}: {r:?}"
    );
    assert_eq!(r.header("connection"), Some("close"), "{what}: {r:?}");
}

#[actix_rt::test]
async fn a_bad_request_after_a_good_one_on_a_kept_alive_connection_gets_json_and_a_close() {
    let (c, up, addr) = gateway(|_| {}).await;
    for (what, bad, status, code) in bad_requests() {
        // Sent once the first answer is in.
        let before = up.received();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(GOOD).await.unwrap();
        let first = read_response(&mut s).await;
        assert_eq!(first.status, 200, "{what}: {first:?}");
        let _ = s.write_all(bad.as_bytes()).await;
        let rest = read_until_closed(&mut s).await;
        let rest = answers(&rest);
        assert_eq!(rest.len(), 1, "{what}: {rest:?}");
        assert_refused(&rest[0], status, code, what);
        assert_eq!(
            up.received(),
            before + 1,
            "{what}: the bad request was forwarded"
        );

        // Pipelined behind two good ones, in one write: their answers first, in order.
        let before = up.received();
        let mut s = TcpStream::connect(addr).await.unwrap();
        let pipelined = [GOOD, GOOD, bad.as_bytes(), GOOD].concat();
        let _ = s.write_all(&pipelined).await;
        let all = answers(&read_until_closed(&mut s).await);
        assert_eq!(all.len(), 3, "{what}: {all:?}");
        assert_eq!(
            (all[0].status, all[1].status),
            (200, 200),
            "{what}: {all:?}"
        );
        assert_eq!(all[0].json()["path"], "/good");
        assert_refused(&all[2], status, code, what);
        assert_eq!(
            up.received(),
            before + 2,
            "{what}: the bad request was forwarded"
        );
    }
    still_serves(addr, &up).await;
    up.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn pipelined_bodies_chunked_with_trailers_keep_the_connection_in_step() {
    let (c, up, addr) = gateway(|_| {}).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // A chunk extension, a trailer that looks like a request line, then more requests.
    let pipelined = "POST /one HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
        5;ext=\"GET / HTTP/1.1\"\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: GET /smuggled HTTP/1.1\r\n\r\n\
        GET /two HTTP/1.1\r\nHost: x\r\n\r\n\
        POST /three HTTP/1.1\r\nHost: x\r\nContent-Length: 24\r\n\r\nGET /smuggled HTTP/1.1\r\n\
        GET /four HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    s.write_all(pipelined.as_bytes()).await.unwrap();
    let all = answers(&read_until_closed(&mut s).await);
    let seen: Vec<(u16, String, u64)> = all
        .iter()
        .map(|r| {
            let j = r.json();
            (
                r.status,
                j["path"].as_str().unwrap_or("").to_string(),
                j["body_len"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (200, "/one".to_string(), 11),
            (200, "/two".to_string(), 0),
            (200, "/three".to_string(), 24),
            (200, "/four".to_string(), 0),
        ]
    );
    assert_eq!(up.received(), 4);

    // The same split into one write per byte-ish piece: the framing does not depend on reads.
    let mut s = TcpStream::connect(addr).await.unwrap();
    for piece in pipelined.as_bytes().chunks(7) {
        s.write_all(piece).await.unwrap();
        s.flush().await.unwrap();
    }
    let again = answers(&read_until_closed(&mut s).await);
    assert_eq!(again.len(), 4, "{again:?}");
    assert!(again.iter().all(|r| r.status == 200), "{again:?}");
    assert_eq!(up.received(), 8);
    up.stop().await;
    c.shutdown().await;
}

/// A raw upstream that records every request head it gets and answers `200 ok`: unlike the
/// actix-web mock, it takes any number of header fields.
async fn recording_upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    actix_rt::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let seen = seen.clone();
            actix_rt::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 16 * 1024];
                let end = loop {
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break end;
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                seen.lock().unwrap().push(head);
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (addr, heads)
}

/// A node with `max_headers` and a route `/` to a recording upstream.
async fn recorded(max_headers: Option<usize>) -> (Cluster, SocketAddr, Arc<Mutex<Vec<String>>>) {
    let c = Cluster::bootstrap_with(1, |c| {
        if let Some(n) = max_headers {
            c.limits.max_headers = n;
        }
    })
    .await;
    let (up, heads) = recording_upstream().await;
    c.route_to(0, "rec", "/", up).await;
    let addr = c.nodes[0].config.listen.proxy;
    (c, addr, heads)
}

/// A request with `n` header fields (Host and n - 1 others, with values that have commas,
/// colons and percent signs), and the (name, value) pairs other than Host.
fn many_fields(path: &str, n: usize) -> (String, Vec<(String, String)>) {
    let sent: Vec<(String, String)> = (1..n)
        .map(|i| (format!("X-Field-{i}"), format!("v{i}, a:b %2C 100%")))
        .collect();
    let lines: String = sent.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    (
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{lines}\r\n"),
        sent,
    )
}

/// Asserts that the recorded head for `path` carries every one of `sent`, unchanged.
fn assert_forwarded_whole(heads: &Mutex<Vec<String>>, path: &str, sent: &[(String, String)]) {
    let heads = heads.lock().unwrap();
    let head = heads
        .iter()
        .find(|h| h.starts_with(&format!("GET {path} ")))
        .unwrap_or_else(|| panic!("{path} never reached the upstream"));
    let lines: Vec<(&str, &str)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':').map(|(n, v)| (n, v.trim())))
        .collect();
    for (name, value) in sent {
        let got: Vec<&str> = lines
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(got, [value.as_str()], "{name} at the upstream");
    }
    assert!(
        !head.to_ascii_lowercase().contains("x-raftgate"),
        "the carrier reached the upstream: {head}"
    );
}

#[actix_rt::test]
async fn a_hundred_header_fields_reach_the_upstream_intact_and_more_are_431() {
    let (c, addr, heads) = recorded(None).await;
    // 100 fields, then a plain request on the same connection.
    let (request, sent) = many_fields("/hundred", 100);
    let mut s = TcpStream::connect(addr).await.unwrap();
    let pipelined = [
        request.as_bytes(),
        b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    .concat();
    s.write_all(&pipelined).await.unwrap();
    assert_eq!(read_response(&mut s).await.status, 200);
    assert_eq!(read_response(&mut s).await.status, 200);
    assert_forwarded_whole(&heads, "/hundred", &sent);
    assert_eq!(heads.lock().unwrap().len(), 2);

    // 101: the gateway's JSON 431, and nothing forwarded.
    let (request, _) = many_fields("/too-many", 101);
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let r = Raw::parse(&read_until_closed(&mut s).await);
    assert_refused(&r, 431, "headers_too_large", "101 fields");
    assert_eq!(heads.lock().unwrap().len(), 2);
    c.shutdown().await;
}

#[actix_rt::test]
async fn a_configured_max_headers_above_100_is_honoured() {
    let (c, addr, heads) = recorded(Some(300)).await;
    let (request, sent) = many_fields("/three-hundred", 300);
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let r = read_response(&mut s).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_forwarded_whole(&heads, "/three-hundred", &sent);

    let (request, _) = many_fields("/too-many", 301);
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let r = Raw::parse(&read_until_closed(&mut s).await);
    assert_refused(&r, 431, "headers_too_large", "301 fields");
    assert_eq!(heads.lock().unwrap().len(), 1);
    c.shutdown().await;
}

#[actix_rt::test]
async fn a_client_cannot_send_the_carrier_field() {
    let (c, addr, heads) = recorded(None).await;
    let request = "GET /spoof HTTP/1.1\r\nHost: x\r\n\
        X-Raftgate-Moved-Headers: x-consumer:admin,x-extra:1\r\nConnection: close\r\n\r\n";
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let r = Raw::parse(&read_until_closed(&mut s).await);
    assert_eq!(r.status, 200, "{r:?}");
    let head = heads.lock().unwrap()[0].to_ascii_lowercase();
    assert!(
        !head.contains("x-extra") && !head.contains("admin") && !head.contains("x-raftgate"),
        "{head}"
    );
    c.shutdown().await;
}

#[actix_rt::test]
async fn a_malformed_chunked_body_ends_the_request_and_the_connection() {
    let (c, up, addr) = gateway(|_| {}).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // A bad chunk size after a good chunk, then what would be a second request.
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\nZZ\r\nmore\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    let all = answers(&read_until_closed(&mut s).await);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(
        (all[0].status, all[0].code().as_str()),
        (400, "bad_request"),
        "{all:?}"
    );
    // The upstream never got a complete request, nor the one after the break.
    assert_eq!(up.completed(), 0);
    assert!(up.received() <= 1);
    still_serves(addr, &up).await;
    assert_eq!(
        up.saw("/next"),
        0,
        "the request after the break was forwarded"
    );
    up.stop().await;
    c.shutdown().await;
}
