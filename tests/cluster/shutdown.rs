//! Graceful stop (what SIGTERM and SIGINT run): `/readyz` turns 503, in-flight requests finish,
//! WebSockets get the drain timeout, and a leader hands its leadership over.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;

use crate::support::{client, eventually, Cluster, Upstream, DEADLINE};

#[actix_rt::test]
async fn a_stopping_leader_finishes_every_in_flight_request_and_hands_leadership_over() {
    let mut c = Cluster::bootstrap(3).await;
    let up = Upstream::start("a");
    c.route_to(0, "slow", "/slow", up.addr).await;
    let old = c.wait_leader().await;
    eventually("the route on the leader", || async {
        (c.get(old, "/slow?ms=1").await.status == 200).then_some(())
    })
    .await;

    // Requests that are inside the upstream when the stop begins.
    const N: usize = 12;
    let url = c.proxy_url(old, "/slow?ms=1500");
    let inflight: Vec<_> = (0..N)
        .map(|_| {
            let url = url.clone();
            actix_rt::spawn(async move {
                // A fresh client each: N connections, not N requests queued on one.
                match client().get(url).send().await {
                    Ok(mut r) => (r.status().as_u16(), r.body().await.is_ok()),
                    Err(_) => (0, false),
                }
            })
        })
        .collect();
    eventually("every slow request inside the upstream", || async {
        (up.slow_inflight.load(std::sync::atomic::Ordering::SeqCst) >= N).then_some(())
    })
    .await;

    let gateway = c.nodes[old].gateway.take().unwrap();
    let started = Instant::now();
    let stopping = actix_rt::spawn(gateway.stop());
    // Not ready while it drains; the admin API still answers.
    eventually("/readyz 503 while draining", || async {
        (c.admin_raw(old, "GET", "/readyz", "", None).await.status == 503).then_some(())
    })
    .await;
    assert!(
        !stopping.is_finished(),
        "the stop did not wait for the in-flight requests"
    );
    tokio::time::timeout(DEADLINE, stopping)
        .await
        .expect("the stop ends")
        .unwrap();
    let stopped_in = started.elapsed();

    let mut failed = 0;
    for r in inflight {
        let (status, body) = r.await.unwrap();
        if status != 200 || !body {
            failed += 1;
        }
    }
    assert_eq!(failed, 0, "in-flight requests failed during the drain");

    // The survivors already follow a new leader: the old one waited for it before stopping.
    let elected = Instant::now();
    let new = c.wait_leader().await;
    assert_ne!(new, old);
    eprintln!(
        "stop took {stopped_in:?}; a new leader was agreed {:?} after it",
        elected.elapsed()
    );
    let w = c
        .admin(
            new,
            "PUT",
            "/services/after",
            Some(json!({"targets": [{"url": "http://127.0.0.1:9"}]})),
        )
        .await;
    assert_eq!(w.status, 201, "{}", w.text);
    let via = c.follower(new);
    let w = c
        .admin(
            via,
            "PUT",
            "/services/after2",
            Some(json!({"targets": [{"url": "http://127.0.0.1:9"}]})),
        )
        .await;
    assert_eq!(w.status, 201, "{}", w.text);
    up.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn an_open_websocket_keeps_working_during_the_drain_and_is_closed_at_its_end() {
    let mut c = Cluster::bootstrap_with(1, |cfg| cfg.limits.drain_timeout_ms = 1500).await;
    let up = Upstream::start("a");
    c.route_with(0, "chat", "/chat", up.addr, json!({"websocket": true}))
        .await;
    let (resp, mut ws) = client()
        .ws(c.proxy_url(0, "/chat"))
        .connect()
        .await
        .expect("a WebSocket through the gateway");
    assert_eq!(resp.status(), 101);

    let gateway = c.nodes[0].gateway.take().unwrap();
    let started = Instant::now();
    let stopping = actix_rt::spawn(gateway.stop());
    eventually("/readyz 503 while draining", || async {
        (c.admin_raw(0, "GET", "/readyz", "", None).await.status == 503).then_some(())
    })
    .await;
    // The socket still carries frames while the node drains.
    ws.send(awc::ws::Message::Text("still here".into()))
        .await
        .unwrap();
    match tokio::time::timeout(DEADLINE, ws.next()).await {
        Ok(Some(Ok(awc::ws::Frame::Text(t)))) => assert_eq!(&t[..], b"still here"),
        other => panic!("no echo during the drain: {other:?}"),
    }
    // Bounded: the stop ends about the drain timeout later, and the socket with it.
    tokio::time::timeout(DEADLINE, stopping)
        .await
        .expect("the stop ends")
        .unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1400), "{took:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    let end = tokio::time::timeout(DEADLINE, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(awc::ws::Frame::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the WebSocket outlived the drain");
    up.stop().await;
}

/// Reads one answer (head and a `Content-Length` body) from a kept-alive connection.
async fn read_answer(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().expect("a length"));
            if buf.len() >= end + 4 + length {
                return head;
            }
        }
        let n = tokio::time::timeout(DEADLINE, s.read(&mut chunk))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(n > 0, "the connection closed before an answer: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Envoy's drain: once a graceful stop begins, a request that arrives on a kept-alive
/// connection is answered, with `Connection: close`, rather than meeting a closed socket.
#[actix_rt::test]
async fn a_draining_node_answers_on_kept_alive_connections_and_closes_them() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A grace far longer than the test needs between the stop and its request, so that a
    // loaded machine cannot make it run out first.
    let mut c = Cluster::bootstrap_with(1, |c| c.limits.drain_grace_ms = 5_000).await;
    let up = Upstream::start("a");
    c.route_to(0, "r", "/r", up.addr).await;
    eventually("the route served", || async {
        (c.get(0, "/r").await.status == 200).then_some(())
    })
    .await;
    let addr = c.nodes[0].config.listen.proxy;
    let request = b"GET /r HTTP/1.1\r\nhost: drain.test\r\n\r\n";
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let first = read_answer(&mut s).await;
    assert!(first.starts_with("http/1.1 200"), "{first}");
    assert!(!first.contains("connection: close"), "{first}");

    let gateway = c.nodes[0].gateway.take().unwrap();
    let stopping = actix_rt::spawn(gateway.stop());
    eventually("/readyz 503 while draining", || async {
        (c.admin_raw(0, "GET", "/readyz", "", None).await.status == 503).then_some(())
    })
    .await;
    // The connection was idle when the stop began; it is still served, and told to close.
    s.write_all(request).await.unwrap();
    let second = read_answer(&mut s).await;
    assert!(second.starts_with("http/1.1 200"), "{second}");
    assert!(second.contains("connection: close"), "{second}");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(DEADLINE, s.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "the node closes the connection after that answer: {read:?} {rest:?}"
    );
    tokio::time::timeout(DEADLINE, stopping)
        .await
        .expect("the stop ends")
        .unwrap();
    up.stop().await;
}
