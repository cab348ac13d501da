use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{into_reply, Cluster, Upstream};

#[actix_rt::test]
async fn connect_failure_is_502_and_a_slow_upstream_is_504_on_time() {
    let c = Cluster::bootstrap(1).await;
    let up = Upstream::start("a");
    // A port nobody listens on: bind, note it, close.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let s = c
        .admin(
            0,
            "PUT",
            "/services/dead",
            Some(json!({"targets": [{"url": format!("http://{dead}")}]})),
        )
        .await;
    assert_eq!(s.status, 201);
    c.admin(
        0,
        "PUT",
        "/routes/dead",
        Some(json!({"service": "dead", "paths": ["/dead"]})),
    )
    .await;
    let r = c.get(0, "/dead").await;
    assert_eq!(r.status, 502, "{}", r.text);
    assert_eq!(r.error_code(), "bad_gateway");

    let s = c
        .admin(0, "PUT", "/services/slow", Some(json!({"targets": [{"url": format!("http://{}", up.addr)}], "timeouts": {"connect_ms": 1000, "request_ms": 2000}})))
        .await;
    assert_eq!(s.status, 201, "{}", s.text);
    c.admin(
        0,
        "PUT",
        "/routes/slow",
        Some(json!({"service": "slow", "paths": ["/slow"]})),
    )
    .await;
    let started = Instant::now();
    let r = c.get(0, "/slow?ms=10000").await;
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.text);
    assert_eq!(r.error_code(), "upstream_timeout");
    assert!(
        // The configured time ±10%.
        took >= Duration::from_millis(1800) && took <= Duration::from_millis(2200),
        "took {took:?}"
    );
    up.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn a_retry_goes_to_another_target_when_one_refuses_connections() {
    let c = Cluster::bootstrap(1).await;
    let up = Upstream::start("live");
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let body = json!({"targets": [{"url": format!("http://{dead}")}, {"url": format!("http://{}", up.addr)}], "retries": 1});
    assert_eq!(
        c.admin(0, "PUT", "/services/mixed", Some(body))
            .await
            .status,
        201
    );
    c.admin(
        0,
        "PUT",
        "/routes/mixed",
        Some(json!({"service": "mixed", "paths": ["/"]})),
    )
    .await;
    for _ in 0..10 {
        let r = c.get(0, "/x").await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    // POST is not idempotent: no retry, so the dead target shows through as 502 half the time.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let resp = c
            .client
            .post(c.proxy_url(0, "/x"))
            .send_body("x")
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert!(
        statuses.contains(&502) && statuses.contains(&200),
        "{statuses:?}"
    );
    up.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn a_config_change_never_fails_an_in_flight_request() {
    let c = Cluster::bootstrap(1).await;
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    c.route_to(0, "api", "/", a.addr).await;
    // Slow requests in flight while the route and its service are rewritten and deleted.
    let mut inflight = Vec::new();
    for _ in 0..5 {
        let req = c.client.get(c.proxy_url(0, "/slow?ms=1500")).send();
        inflight.push(actix_rt::spawn(async move {
            into_reply(req.await.unwrap()).await
        }));
    }
    let counter = a.slow_inflight.clone();
    crate::support::eventually("5 requests in flight upstream", || async {
        (counter.load(std::sync::atomic::Ordering::SeqCst) == 5).then_some(())
    })
    .await;
    let s = c
        .admin(
            0,
            "PUT",
            "/services/other",
            Some(json!({"targets": [{"url": format!("http://{}", b.addr)}]})),
        )
        .await;
    assert_eq!(s.status, 201);
    let r = c
        .admin(
            0,
            "PUT",
            "/routes/api",
            Some(json!({"service": "other", "paths": ["/"]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        c.admin(0, "DELETE", "/services/api", None).await.status,
        204
    );
    assert_eq!(c.get(0, "/now").await.body["upstream"], "b");
    for h in inflight {
        let r = h.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.text, "slow done");
    }
    a.stop().await;
    b.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn a_connect_timeout_answers_502_at_the_configured_time() {
    // A listener that never accepts, its backlog filled: further SYNs are dropped on loopback,
    // so a connect hangs until the gateway's connect timeout.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        if let Ok(Ok(conn)) =
            tokio::time::timeout(Duration::from_millis(200), s.connect(addr)).await
        {
            fillers.push(conn);
        }
    }
    let c = Cluster::bootstrap(1).await;
    let body = json!({"targets": [{"url": format!("http://{addr}")}], "timeouts": {"connect_ms": 1500, "request_ms": 30000}});
    assert_eq!(
        c.admin(0, "PUT", "/services/blackhole", Some(body))
            .await
            .status,
        201
    );
    c.admin(
        0,
        "PUT",
        "/routes/blackhole",
        Some(json!({"service": "blackhole", "paths": ["/"]})),
    )
    .await;
    let started = Instant::now();
    let r = c.get(0, "/x").await;
    let took = started.elapsed();
    assert_eq!(
        (r.status, r.error_code()),
        (502, "bad_gateway"),
        "{}",
        r.text
    );
    assert!(
        took >= Duration::from_millis(1350) && took <= Duration::from_millis(1650),
        "took {took:?}"
    );
    drop(listener);
    c.shutdown().await;
}

#[actix_rt::test]
async fn a_client_abandoning_its_upload_does_not_eject_the_upstream() {
    let c = Cluster::bootstrap(1).await;
    let up = Upstream::start("a");
    let body = json!({"targets": [{"url": format!("http://{}", up.addr)}], "passive": {"max_failures": 1, "eject_ms": 60000}});
    assert_eq!(
        c.admin(0, "PUT", "/services/up", Some(body)).await.status,
        201
    );
    c.admin(
        0,
        "PUT",
        "/routes/up",
        Some(json!({"service": "up", "paths": ["/"]})),
    )
    .await;
    assert_eq!(c.get(0, "/before").await.status, 200);
    for _ in 0..3 {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(c.nodes[0].config.listen.proxy)
            .await
            .unwrap();
        s.write_all(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n0123456789",
        )
        .await
        .unwrap();
        // Vanish mid-body once the gateway is streaming the upload to the upstream.
        let route = c.gateway(0).router.table.load().get("up").unwrap().clone();
        crate::support::eventually("the upload to be in flight upstream", || async {
            (route.upstream().target(0).inflight() == 1).then_some(())
        })
        .await;
        drop(s);
        crate::support::eventually("the attempt to end", || async {
            (route.upstream().target(0).inflight() == 0).then_some(())
        })
        .await;
    }
    // A single failure would eject the only target (503 for a minute): the client's abandoned
    // uploads must not count.
    let r = c.get(0, "/after").await;
    assert_eq!(r.status, 200, "{}", r.text);
    up.stop().await;
    c.shutdown().await;
}
