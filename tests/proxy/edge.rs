//! The hardened edge (API.md §2 `[limits]`, §4): bad input is answered at the gateway, over
//! raw TCP because an HTTP client would refuse to send it, and never reaches the upstream.
//! Kept-alive and pipelined connections, and heads past actix-http's 96 fields: [`framing`].

mod framing;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Cluster, Upstream, DEADLINE};

/// One answer read off a raw connection.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: String,
}

impl Raw {
    fn parse(bytes: &[u8]) -> Raw {
        let text = String::from_utf8_lossy(bytes).to_string();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Raw {
            status,
            head: head.to_string(),
            body: body.to_string(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The gateway's JSON error code.
    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// An answer actix-http wrote itself: no body at all, and the connection closes.
    fn is_bare(&self) -> bool {
        self.body.is_empty()
            && self.header("content-length") == Some("0")
            && self.header("connection") == Some("close")
    }
}

/// Sends `request` and reads until the server closes the connection. A reset (the server
/// closed with part of the request unread) ends the answer like a close does.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Raw {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    // The server may answer and close before it has read everything.
    let _ = s.write_all(request).await;
    Raw::parse(&read_until_closed(&mut s).await)
}

async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the server did not close the connection; so far: {}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
}

/// Reads one answer with a Content-Length off a kept-alive connection.
async fn read_response(s: &mut TcpStream) -> Raw {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = Raw::parse(&out[..end + 4]);
            let len: usize = head
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .expect("a Content-Length");
            if out.len() >= end + 4 + len {
                return Raw::parse(&out[..end + 4 + len]);
            }
        }
        let n = tokio::time::timeout(DEADLINE, s.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(
            n > 0,
            "closed mid-answer: {}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
}

/// Sends one more header line every 100 ms, never finishing the head, until the server closes
/// the connection. Returns when that happened (from `start`) and what the server answered.
async fn trickle_until_closed(s: &mut TcpStream, start: Instant) -> (Duration, Raw) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    for i in 0.. {
        assert!(
            start.elapsed() < DEADLINE,
            "a trickling client was never closed"
        );
        if s.write_all(format!("X-Slow-{i}: v\r\n").as_bytes())
            .await
            .is_err()
        {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    (start.elapsed(), Raw::parse(&got))
}

/// A one-node cluster with `tune`d limits and a route `/` to a fresh mock upstream.
async fn gateway(tune: impl Fn(&mut raftgate::config::Config)) -> (Cluster, Upstream, SocketAddr) {
    let c = Cluster::bootstrap_with(1, tune).await;
    let up = Upstream::start("a");
    c.route_to(0, "all", "/", up.addr).await;
    let addr = c.nodes[0].config.listen.proxy;
    (c, up, addr)
}

/// The node still serves, and `up` saw that request once. (By path: a broken request before
/// it may reach the upstream's count late, after the proxy has answered it.)
async fn still_serves(addr: SocketAddr, up: &Upstream) {
    let before = up.saw("/ok");
    let r = exchange(
        addr,
        b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(up.saw("/ok"), before + 1);
}

#[actix_rt::test]
async fn smuggling_and_bad_content_length_are_400_and_never_forwarded() {
    let (c, up, addr) = gateway(|_| {}).await;
    let cases = [
        (
            "Content-Length with Transfer-Encoding",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "duplicate Content-Length",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            "hello",
        ),
        (
            "conflicting Content-Length",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "hello!",
        ),
        ("Content-Length list", "Content-Length: 5, 5\r\n", "hello"),
        ("non-numeric Content-Length", "Content-Length: abc\r\n", ""),
        ("negative Content-Length", "Content-Length: -1\r\n", ""),
        ("signed Content-Length", "Content-Length: +5\r\n", "hello"),
        (
            "Content-Length past u64",
            "Content-Length: 99999999999999999999\r\n",
            "",
        ),
        (
            "unknown Transfer-Encoding",
            "Transfer-Encoding: gzip\r\n",
            "",
        ),
    ];
    for (what, headers, body) in cases {
        let request =
            format!("POST /upload HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n{body}");
        let r = exchange(addr, request.as_bytes()).await;
        // Refused by the connection's own framing, before actix-http reads the head.
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "bad_request"),
            "{what}: {r:?}"
        );
        assert_eq!(r.header("connection"), Some("close"), "{what}: {r:?}");
    }
    assert_eq!(up.received(), 0, "a bad request reached the upstream");
    still_serves(addr, &up).await;
    up.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn headers_over_the_limits_are_431_and_never_forwarded() {
    let (c, up, addr) = gateway(|c| {
        c.limits.max_headers = 20;
        c.limits.max_header_bytes = 4096;
    })
    .await;
    let request = |extra: &str| {
        format!("GET /h HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n").into_bytes()
    };
    let fields = |n: usize| (0..n).map(|i| format!("X-F{i}: v\r\n")).collect::<String>();

    // 18 fields + Host + Connection = 20: at the limit.
    let r = exchange(addr, &request(&fields(18))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(up.received(), 1);

    // 21 fields: the gateway's own JSON answer.
    let r = exchange(addr, &request(&fields(19))).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (431, "headers_too_large"),
        "{r:?}"
    );
    // 5000 bytes of head: JSON too.
    let r = exchange(addr, &request(&format!("X-Big: {}\r\n", "b".repeat(5000)))).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (431, "headers_too_large"),
        "{r:?}"
    );
    // More than actix-http's 96 fields: still the gateway's answer.
    let r = exchange(addr, &request(&fields(100))).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (431, "headers_too_large"),
        "{r:?}"
    );
    let r = exchange(
        addr,
        &request(&format!("X-Big: {}\r\n", "b".repeat(140_000))),
    )
    .await;
    // Past what the gateway reads before answering; it reads and discards the rest for a
    // while, but a slow client may still see a reset instead of the answer.
    assert!(r.status == 431 || r.status == 0, "{r:?}");

    assert_eq!(up.received(), 1, "an oversized head reached the upstream");
    still_serves(addr, &up).await;
    up.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn default_header_limit_is_64_kib_and_answered_in_json() {
    let (c, up, addr) = gateway(|_| {}).await;
    let head = |n: usize| {
        format!(
            "GET /h HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "b".repeat(n)
        )
    };
    let r = exchange(addr, head(60_000).as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.head);
    let r = exchange(addr, head(70_000).as_bytes()).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (431, "headers_too_large"),
        "{r:?}"
    );
    assert_eq!(up.received(), 1);
    up.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn a_body_over_the_limit_by_content_length_is_413_before_it_is_sent() {
    let (c, up, addr) = gateway(|c| c.limits.max_body_bytes = 1024).await;
    // Only the head: the answer must come without the client sending a byte of the body.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        .await
        .unwrap();
    let r = Raw::parse(&read_until_closed(&mut s).await);
    assert_eq!(
        (r.status, r.code().as_str()),
        (413, "body_too_large"),
        "{r:?}"
    );
    assert_eq!(r.header("connection"), Some("close"));
    assert!(r.header("x-request-id").is_some());
    assert_eq!(
        up.received(),
        0,
        "the upstream saw a request over the limit"
    );

    // Exactly at the limit is fine.
    let body = "x".repeat(1024);
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\nConnection: close\r\n\r\n{body}"
    );
    let r = exchange(addr, request.as_bytes()).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["body_len"], 1024);
    up.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn a_chunked_body_growing_past_the_limit_is_cut_off() {
    // Chunks of 16 KiB: awc flushes what it sends upstream once 8 KiB are buffered.
    let (c, up, addr) = gateway(|c| c.limits.max_body_bytes = 64 * 1024).await;
    let chunk = format!("4000\r\n{}\r\n", "y".repeat(0x4000));

    // Under the limit, a chunked body streams through.
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{}0\r\n\r\n",
        chunk.repeat(4)
    );
    let r = exchange(addr, request.as_bytes()).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["body_len"], 64 * 1024);
    assert_eq!((up.received(), up.completed()), (1, 1));

    // Over it: the first chunk is on its way upstream before the limit is passed.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}")
            .as_bytes(),
    )
    .await
    .unwrap();
    crate::support::eventually("the upstream to see the streamed request", || async {
        (up.received() == 2).then_some(())
    })
    .await;
    // Four more chunks pass the limit; the client never finishes the body.
    s.write_all(chunk.repeat(4).as_bytes()).await.unwrap();
    let started = Instant::now();
    let r = Raw::parse(&read_until_closed(&mut s).await);
    assert_eq!(
        (r.status, r.code().as_str()),
        (413, "body_too_large"),
        "{r:?}"
    );
    assert_eq!(r.header("connection"), Some("close"));
    // Closed after a short linger, not drained for as long as the client keeps sending.
    assert!(started.elapsed() < Duration::from_secs(10));
    // The upstream's request was aborted mid-body: it never completed.
    still_serves(addr, &up).await;
    assert_eq!(
        up.completed(),
        2,
        "the upstream received the cut-off body whole"
    );
    up.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn a_trickling_client_is_closed_after_the_header_timeout() {
    let (c, up, addr) = gateway(|c| c.limits.header_timeout_ms = 1000).await;
    let timeout = Duration::from_millis(1000);

    // First request of a connection: actix-http's own request timeout, a bare 408. Its clock
    // ticks every 500 ms, so it may fire up to 500 ms early.
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (closed, r) = trickle_until_closed(&mut s, start).await;
    assert!(
        closed >= timeout * 2 / 5 && closed < timeout * 10,
        "{closed:?}"
    );
    assert!(r.status == 408 && r.is_bare(), "{r:?}");

    // A kept-alive connection: a first request, then a second one split in two writes
    // (within the timeout, so it is served), then a third that trickles. The gateway's clock
    // runs from the end of the previous answer.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut s).await.status, 200);
    s.write_all(b"GET /two HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await; // pacing, not synchronisation
    s.write_all(b"Host: x\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut s).await.status, 200);
    let start = Instant::now();
    s.write_all(b"GET /three HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (closed, r) = trickle_until_closed(&mut s, start).await;
    assert!(
        closed >= timeout * 4 / 5 && closed < timeout * 10,
        "{closed:?}"
    );
    // The gateway drops the connection without an answer.
    assert_eq!(r.status, 0, "{r:?}");

    assert_eq!(up.received(), 2, "a trickled head reached the upstream");
    still_serves(addr, &up).await;
    up.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn half_a_head_left_after_a_kept_alive_request_is_closed() {
    let (c, up, addr) = gateway(|c| c.limits.header_timeout_ms = 500).await;
    // The start of a second head arrives with the first request, then nothing more.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut s).await.status, 200);
    let start = Instant::now();
    let rest = read_until_closed(&mut s).await;
    let closed = start.elapsed();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    // Well before actix's own 5 s keep-alive timeout.
    assert!(
        closed >= Duration::from_millis(250) && closed < Duration::from_secs(3),
        "{closed:?}"
    );
    assert_eq!(up.received(), 1);
    up.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn a_slow_body_is_not_a_slow_head() {
    // The header clock stops once the head is in: a body may take longer than the timeout,
    // on the first request of a connection and on a kept-alive one.
    let (c, up, addr) = gateway(|c| c.limits.header_timeout_ms = 300).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    for _ in 0..2 {
        s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        for _ in 0..8 {
            s.write_all(b"4\r\nslow\r\n").await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await; // pacing
        }
        s.write_all(b"0\r\n\r\n").await.unwrap();
        let r = read_response(&mut s).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json()["body_len"], 32);
    }
    assert_eq!(up.completed(), 2);
    up.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn paths_are_normalised_end_to_end() {
    let (c, up, addr) = gateway(|_| {}).await;
    let forwarded = |path: &str| {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        async move { exchange(addr, request.as_bytes()).await }
    };
    for (sent, seen) in [
        // Dot-segments, encoded dots and duplicate slashes are resolved.
        ("/a/./b/../c", "/a/c"),
        ("/a/%2e%2E/b//c", "/b/c"),
        ("//a///b/%2e/", "/a/b/"),
        // `%2F` stays encoded: `a%2F..` is one segment, not `a/..`.
        ("/x/a%2F..", "/x/a%2F.."),
        ("/x/a%2f%2e%2e/y", "/x/a%2F../y"),
        ("/x/a%2Fb/../c", "/x/c"),
    ] {
        let r = forwarded(sent).await;
        assert_eq!(r.status, 200, "{sent}: {r:?}");
        assert_eq!(r.json()["path"], seen, "{sent}");
    }
    let before = up.received();
    for escaping in [
        "/../etc/passwd",
        "/a/../../b",
        "/%2e%2e/b",
        "/a/%2E%2e/%2e./x",
    ] {
        let r = forwarded(escaping).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "bad_request"),
            "{escaping}: {r:?}"
        );
    }
    assert_eq!(
        up.received(),
        before,
        "a path escaping the root was forwarded"
    );
    up.stop().await;
    c.shutdown().await;
}
