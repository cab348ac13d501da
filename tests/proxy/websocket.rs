//! WebSocket proxying: frames both ways, close frames both ways, sockets that outlive config
//! changes, and upgrades on routes that do not allow them.

use std::net::SocketAddr;
use std::time::Duration;

use actix_http::ws::{CloseCode, CloseReason, Frame, Message, ProtocolError};
use awc::error::WsClientError;
use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde_json::{json, Value};

use crate::support::{client, eventually, Cluster, Upstream, DEADLINE};

/// A service `name` on `upstream` and a `websocket: true` route for `path`.
async fn ws_route(c: &Cluster, name: &str, path: &str, upstream: SocketAddr) {
    c.route_with(0, name, path, upstream, json!({"websocket": true}))
        .await;
}

trait Socket:
    Stream<Item = Result<Frame, ProtocolError>> + Sink<Message, Error = ProtocolError> + Unpin
{
}
impl<T> Socket for T where
    T: Stream<Item = Result<Frame, ProtocolError>> + Sink<Message, Error = ProtocolError> + Unpin
{
}

async fn try_open(
    c: &Cluster,
    path: &str,
) -> Result<(awc::ClientResponse, impl Socket), WsClientError> {
    client()
        .ws(c.proxy_url(0, path))
        .max_frame_size(8 << 20)
        .connect()
        .await
}

async fn open(c: &Cluster, path: &str) -> impl Socket {
    match try_open(c, path).await {
        Ok((resp, ws)) => {
            assert_eq!(resp.status(), 101);
            ws
        }
        Err(e) => panic!("WebSocket to {path} through the gateway: {e:?}"),
    }
}

/// The status the gateway answered an upgrade with, when it did not switch protocols.
async fn refused_status(c: &Cluster, path: &str) -> u16 {
    match try_open(c, path).await {
        Err(WsClientError::InvalidResponseStatus(s)) => s.as_u16(),
        Ok(_) => panic!("{path} became a WebSocket"),
        Err(e) => panic!("{path}: {e:?}"),
    }
}

async fn next(ws: &mut impl Socket) -> Option<Frame> {
    tokio::time::timeout(DEADLINE, ws.next())
        .await
        .expect("a frame in time")
        .map(|f| f.expect("a valid frame"))
}

async fn say(ws: &mut impl Socket, text: &str) -> String {
    ws.send(Message::Text(text.into())).await.expect("send");
    match next(ws).await {
        Some(Frame::Text(t)) => String::from_utf8(t.to_vec()).unwrap(),
        other => panic!("expected text after {text:?}, got {other:?}"),
    }
}

fn close_of(frame: Option<Frame>) -> (u16, String) {
    match frame {
        Some(Frame::Close(Some(r))) => (r.code.into(), r.description.unwrap_or_default()),
        other => panic!("expected a close frame with a code, got {other:?}"),
    }
}

/// Closes from the client with `code`/`reason` and returns the close that came back.
async fn close(ws: &mut impl Socket, code: u16, reason: &str) -> (u16, String) {
    let reason = CloseReason {
        code: CloseCode::from(code),
        description: Some(reason.to_string()),
    };
    ws.send(Message::Close(Some(reason)))
        .await
        .expect("send close");
    close_of(next(ws).await)
}

#[actix_rt::test]
async fn relays_text_binary_pings_and_the_handshake() {
    let c = Cluster::bootstrap(1).await;
    let up = Upstream::start("a");
    ws_route(&c, "chat", "/chat", up.addr).await;

    let (resp, mut ws) = client()
        .ws(c.proxy_url(0, "/chat/room?x=1"))
        .protocols(["x.v1", "echo.v2"])
        .set_header("x-request-id", "ws-req-1")
        .set_header("x-keep", "yes")
        .max_frame_size(8 << 20)
        .connect()
        .await
        .expect("upgrade through the gateway");
    assert_eq!(resp.status(), 101);
    let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok());
    assert_eq!(header("sec-websocket-protocol"), Some("echo.v2"));
    assert_eq!(header("x-request-id"), Some("ws-req-1"));

    assert_eq!(say(&mut ws, "hello").await, "hello");
    let blob: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
    ws.send(Message::Binary(Bytes::from(blob.clone())))
        .await
        .unwrap();
    match next(&mut ws).await {
        Some(Frame::Binary(b)) => assert!(b == blob, "binary echo differs"),
        other => panic!("expected binary, got {other:?}"),
    }
    // Pings pass both ways, and the far side's pong comes back.
    ws.send(Message::Ping(Bytes::from_static(b"hi")))
        .await
        .unwrap();
    assert_eq!(
        next(&mut ws).await,
        Some(Frame::Pong(Bytes::from_static(b"hi")))
    );
    ws.send(Message::Text("ping-me".into())).await.unwrap();
    assert_eq!(
        next(&mut ws).await,
        Some(Frame::Ping(Bytes::from_static(b"up")))
    );

    // The upstream saw the gateway's headers and the client's end-to-end ones.
    let h: Value = serde_json::from_str(&say(&mut ws, "headers").await).unwrap();
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert!(h["x-forwarded-host"].is_string(), "{h}");
    assert_eq!(h["x-request-id"], "ws-req-1");
    assert_eq!(h["x-keep"], "yes");
    assert_eq!(h["sec-websocket-protocol"], "x.v1,echo.v2");
    assert_eq!(h["host"], up.addr.to_string());

    assert_eq!(
        close(&mut ws, 4000, "client bye").await,
        (4000, "client bye".into())
    );
    assert_eq!(up.ws.closes(), vec![(4000, "client bye".to_string())]);
    eventually("the upstream socket to end", || async {
        (up.ws.open() == 0).then_some(())
    })
    .await;
    up.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn a_close_from_the_upstream_reaches_the_client() {
    let c = Cluster::bootstrap(1).await;
    let up = Upstream::start("a");
    ws_route(&c, "chat", "/chat", up.addr).await;
    let mut ws = open(&c, "/chat").await;
    assert_eq!(say(&mut ws, "before").await, "before");
    ws.send(Message::Text("close:4002:upstream bye".into()))
        .await
        .unwrap();
    assert_eq!(close_of(next(&mut ws).await), (4002, "upstream bye".into()));
    // Then the gateway ends the client's connection.
    assert_eq!(next(&mut ws).await, None);
    eventually("the upstream socket to end", || async {
        (up.ws.open() == 0).then_some(())
    })
    .await;
    up.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn a_vanished_client_closes_the_upstream_socket() {
    let c = Cluster::bootstrap(1).await;
    let up = Upstream::start("a");
    ws_route(&c, "chat", "/chat", up.addr).await;
    let mut ws = open(&c, "/chat").await;
    assert_eq!(say(&mut ws, "hi").await, "hi");
    assert_eq!(up.ws.open(), 1);
    drop(ws); // no close frame: the TCP connection just goes
    let closes = eventually("the upstream to see a close", || async {
        let closes = up.ws.closes();
        (!closes.is_empty() && up.ws.open() == 0).then_some(closes)
    })
    .await;
    assert_eq!(closes, vec![(1001, String::new())]);
    up.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn an_open_socket_survives_route_and_service_changes() {
    let c = Cluster::bootstrap(1).await;
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    ws_route(&c, "chat", "/chat", a.addr).await;
    let mut ws = open(&c, "/chat").await;
    assert_eq!(say(&mut ws, "whoami").await, "a");

    // The route moves: the open socket carries on, new upgrades follow the new route.
    let r = c
        .admin(
            0,
            "PUT",
            "/routes/chat",
            Some(json!({"service": "chat", "paths": ["/talk"], "priority": 5, "websocket": true})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(say(&mut ws, "still here").await, "still here");
    assert_eq!(refused_status(&c, "/chat").await, 404);
    let mut fresh = open(&c, "/talk").await;
    assert_eq!(say(&mut fresh, "whoami").await, "a");

    // The service moves to another target: both open sockets stay on a; new ones go to b.
    let s = c
        .admin(
            0,
            "PUT",
            "/services/chat",
            Some(json!({"targets": [{"url": format!("http://{}", b.addr)}]})),
        )
        .await;
    assert_eq!(s.status, 200, "{}", s.text);
    assert_eq!(say(&mut ws, "whoami").await, "a");
    assert_eq!(say(&mut fresh, "whoami").await, "a");
    let mut on_b = open(&c, "/talk").await;
    assert_eq!(say(&mut on_b, "whoami").await, "b");

    // Route and service deleted: the sockets still work; nothing new gets through.
    assert_eq!(c.admin(0, "DELETE", "/routes/chat", None).await.status, 204);
    assert_eq!(
        c.admin(0, "DELETE", "/services/chat", None).await.status,
        204
    );
    assert_eq!(say(&mut ws, "after delete").await, "after delete");
    assert_eq!(say(&mut on_b, "whoami").await, "b");
    assert_eq!(refused_status(&c, "/talk").await, 404);

    // Recreated on b: new sockets use it, the old one is still on a.
    ws_route(&c, "chat", "/talk", b.addr).await;
    let mut recreated = open(&c, "/talk").await;
    assert_eq!(say(&mut recreated, "whoami").await, "b");
    assert_eq!(say(&mut ws, "whoami").await, "a");

    assert_eq!(close(&mut ws, 1000, "done").await, (1000, "done".into()));
    for s in [&mut fresh, &mut on_b, &mut recreated] {
        assert_eq!(close(s, 1000, "").await.0, 1000);
    }
    eventually("every upstream socket to end", || async {
        (a.ws.open() == 0 && b.ws.open() == 0).then_some(())
    })
    .await;
    a.stop().await;
    b.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn a_socket_outlives_request_limits_and_timeouts() {
    let c = Cluster::bootstrap_with(1, |c| {
        // Short, yet long enough for the handshake's own head on a loaded machine.
        c.limits.header_timeout_ms = 1000;
        c.limits.max_body_bytes = 4096;
    })
    .await;
    let up = Upstream::start("a");
    ws_route(&c, "chat", "/chat", up.addr).await;
    let mut ws = open(&c, "/chat").await;
    // Frames keep coming for several header timeouts (none of them is a request head), more
    // bytes in all than a request body may have.
    for i in 0..12 {
        let text = format!("chatty {i} {}", "x".repeat(3000));
        assert_eq!(say(&mut ws, &text).await, text);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Then silence past the keep-alive timeout (5 s), which applies between requests only.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(say(&mut ws, "still open").await, "still open");
    assert_eq!(close(&mut ws, 1000, "bye").await, (1000, "bye".into()));
    up.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn an_open_socket_counts_in_flight_on_its_target() {
    let c = Cluster::bootstrap(1).await;
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let targets = [a.addr, b.addr].map(|t| json!({"url": format!("http://{t}")}));
    let s = c
        .admin(
            0,
            "PUT",
            "/services/chat",
            Some(json!({"targets": targets, "balancer": "least_conn"})),
        )
        .await;
    assert_eq!(s.status, 201, "{}", s.text);
    let r = c
        .admin(
            0,
            "PUT",
            "/routes/chat",
            Some(json!({"service": "chat", "paths": ["/chat"], "websocket": true})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let mut ws = open(&c, "/chat").await;
    let busy = say(&mut ws, "whoami").await;
    // While the socket is open, least_conn sends plain requests to the other target.
    for _ in 0..6 {
        let r = c.get(0, "/chat/plain").await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_ne!(r.body["upstream"], busy.as_str(), "went to the busy target");
    }
    assert_eq!(close(&mut ws, 1000, "").await.0, 1000);
    // Once it is closed, the target is idle again and gets its turn.
    eventually(
        "the closed socket's target to get requests again",
        || async {
            (c.get(0, "/chat/plain").await.body["upstream"] == busy.as_str()).then_some(())
        },
    )
    .await;
    a.stop().await;
    b.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn an_upgrade_on_a_plain_route_is_forwarded_as_a_plain_request() {
    let c = Cluster::bootstrap(1).await;
    let up = Upstream::start("a");
    c.route_to(0, "plain", "/plain", up.addr).await;
    // The upstream answers the request as an ordinary GET: no 101, no socket.
    assert_eq!(refused_status(&c, "/plain").await, 200);
    assert_eq!(up.ws.open(), 0);
    assert!(up.ws.closes().is_empty());
    // It never saw the upgrade headers.
    let (head, body) = exchange(
        c.nodes[0].config.listen.proxy,
        "GET /plain/x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let echoed: Value = serde_json::from_slice(&body).unwrap();
    let h = &echoed["headers"];
    assert!(h.get("upgrade").is_none(), "{h}");
    assert_ne!(
        h["connection"].as_str().map(str::to_lowercase),
        Some("upgrade".into())
    );
    up.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn upstream_failures_answer_before_the_upgrade() {
    let c = Cluster::bootstrap(1).await;
    // Nobody listens: 502, as for any request.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    ws_route(&c, "dead", "/dead", dead).await;
    assert_eq!(refused_status(&c, "/dead").await, 502);
    // The upstream refuses the upgrade: its status reaches the client.
    let forbidden =
        crate::support::raw_upstream("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n").await;
    ws_route(&c, "forbidden", "/forbidden", forbidden).await;
    assert_eq!(refused_status(&c, "/forbidden").await, 403);
    // The upstream answers as if no upgrade was asked: not a valid answer, 502.
    let plain =
        crate::support::raw_upstream("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    ws_route(&c, "plain", "/plain", plain).await;
    assert_eq!(refused_status(&c, "/plain").await, 502);
    // A broken client handshake on a WebSocket route is the client's error.
    let up = Upstream::start("a");
    ws_route(&c, "chat", "/chat", up.addr).await;
    let (head, _) = exchange(
        c.nodes[0].config.listen.proxy,
        "GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert_eq!(up.ws.open(), 0);
    up.stop().await;
    c.shutdown().await;
}

/// Sends raw bytes and reads one response: its head, and its body by `Content-Length`.
async fn exchange(addr: SocketAddr, request: &str) -> (String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let read = async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    return (head, buf[end + 4..end + 4 + len].to_vec());
                }
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.expect("read");
            assert!(
                n > 0,
                "connection closed mid-response: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("an answer in time")
}
