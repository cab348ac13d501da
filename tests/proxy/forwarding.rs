use serde_json::json;

use crate::support::{into_reply, Cluster, Upstream};

#[actix_rt::test]
async fn forwards_with_gateway_headers_and_without_hop_by_hop_ones() {
    let c = Cluster::bootstrap(1).await;
    let up = Upstream::start("a");
    c.route_to(0, "api", "/api", up.addr).await;
    let resp = c
        .client
        .get(c.proxy_url(0, "/api/x?q=1&r=two"))
        .insert_header(("host", "Api.Example.com"))
        .insert_header(("x-forwarded-for", "10.1.1.1"))
        .insert_header(("x-keep", "yes"))
        .send()
        .await
        .unwrap();
    let r = into_reply(resp).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let h = &r.body["headers"];
    assert_eq!(r.body["path"], "/api/x");
    assert_eq!(r.body["query"], "q=1&r=two");
    assert_eq!(h["x-forwarded-for"], "10.1.1.1, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "Api.Example.com");
    assert_eq!(h["x-keep"], "yes");
    let id = h["x-request-id"].as_str().expect("generated request id");
    assert!(id.len() >= 16);
    assert_eq!(r.header("x-request-id"), Some(id));
    assert_eq!(r.header("x-upstream"), Some("a"));

    // Hop-by-hop request headers, including those named in Connection, stay behind (raw TCP:
    // HTTP clients rewrite Connection themselves).
    let raw = crate::support::raw_request(
        c.nodes[0].config.listen.proxy,
        "GET /api/hop HTTP/1.1\r\nHost: x\r\nConnection: close, x-drop-me\r\nX-Drop-Me: hop\r\nTE: trailers\r\nKeep-Alive: 5\r\nX-Keep: yes\r\n\r\n",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let body: serde_json::Value =
        serde_json::from_str(&raw[raw.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    let h = &body["headers"];
    assert_eq!(h["x-keep"], "yes");
    for hop in ["x-drop-me", "te", "keep-alive"] {
        assert!(h.get(hop).is_none(), "{hop} was forwarded: {h}");
    }
    assert_ne!(h["connection"], "close, x-drop-me");

    // A client's request id is kept.
    let resp = c
        .client
        .get(c.proxy_url(0, "/api"))
        .insert_header(("x-request-id", "abc-123"))
        .send()
        .await
        .unwrap();
    let r = into_reply(resp).await;
    assert_eq!(r.body["headers"]["x-request-id"], "abc-123");
    // The upstream's hop-by-hop headers, including one it names in Connection, stay behind.
    let raw = crate::support::raw_upstream(
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close, x-secret-hop\r\nX-Secret-Hop: no\r\nKeep-Alive: timeout=5\r\nX-Visible: yes\r\n\r\nok",
    )
    .await;
    c.route_to(0, "raw", "/raw", raw).await;
    let r = c.get(0, "/raw").await;
    assert_eq!((r.status, r.text.as_str()), (200, "ok"));
    assert_eq!(r.header("x-visible"), Some("yes"));
    assert!(
        r.header("x-secret-hop").is_none() && r.header("keep-alive").is_none(),
        "{:?}",
        r.headers
    );
    up.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn matching_order_normalisation_and_strip_path() {
    let c = Cluster::bootstrap(1).await;
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    for (name, up) in [("a", &a), ("b", &b)] {
        let s = c
            .admin(
                0,
                "PUT",
                &format!("/services/{name}"),
                Some(json!({"targets": [{"url": format!("http://{}", up.addr)}]})),
            )
            .await;
        assert_eq!(s.status, 201);
    }
    let routes = [
        (
            "prefix",
            json!({"service": "a", "paths": ["/users"], "strip_path": true}),
        ),
        ("longer", json!({"service": "b", "paths": ["/users/admin"]})),
        ("exact", json!({"service": "b", "paths": ["=/users/me"]})),
        (
            "regex",
            json!({"service": "b", "paths": ["~^/items/[0-9]+$"], "methods": ["GET"]}),
        ),
        (
            "hosted",
            json!({"service": "b", "paths": ["/"], "hosts": ["*.example.com"], "priority": 5}),
        ),
    ];
    for (name, body) in routes {
        let r = c
            .admin(0, "PUT", &format!("/routes/{name}"), Some(body))
            .await;
        assert_eq!(r.status, 201, "{name}: {}", r.text);
    }
    let upstream_of =
        |r: &crate::support::Reply| r.body["upstream"].as_str().unwrap_or("none").to_string();
    let r = c.get(0, "/users/7").await;
    assert_eq!(
        (upstream_of(&r).as_str(), r.body["path"].as_str()),
        ("a", Some("/7"))
    );
    let r = c.get(0, "/users").await;
    assert_eq!(r.body["path"], "/");
    assert_eq!(upstream_of(&c.get(0, "/users/admin/x").await), "b");
    assert_eq!(upstream_of(&c.get(0, "/users/me").await), "b");
    assert_eq!(c.get(0, "/usersfoo").await.status, 404);
    assert_eq!(upstream_of(&c.get(0, "/items/42").await), "b");
    assert_eq!(c.get(0, "/items/x").await.status, 404);
    // Dot-segments and duplicate slashes are resolved before matching and forwarded resolved.
    let r = c.get(0, "/x/..//users/./a/%2e%2e/9").await;
    assert_eq!(
        (upstream_of(&r).as_str(), r.body["path"].as_str()),
        ("a", Some("/9"))
    );
    let r = c.get(0, "/../etc/passwd").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "bad_request");
    // Host routes with higher priority win.
    let resp = c
        .client
        .get(c.proxy_url(0, "/users/7"))
        .insert_header(("host", "api.example.com:8080"))
        .send()
        .await
        .unwrap();
    assert_eq!(into_reply(resp).await.body["upstream"], "b");
    let r = c.get(0, "/nothing").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "no_route");
    a.stop().await;
    b.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn bodies_stream_both_ways() {
    let c = Cluster::bootstrap(1).await;
    let up = Upstream::start("a");
    c.route_to(0, "api", "/", up.addr).await;
    // 8 MiB up, with a known byte sum; 32 MiB down.
    let body: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let sum: u64 = body.iter().map(|b| *b as u64).sum();
    let resp = c
        .client
        .post(c.proxy_url(0, "/upload"))
        .send_body(body.clone())
        .await
        .unwrap();
    let r = into_reply(resp).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["body_len"], body.len());
    assert_eq!(r.body["body_sum"], sum);
    // A chunked upload (no Content-Length) streams too.
    let chunks = futures_util::stream::iter(
        (0..64).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![1u8; 4096]))),
    );
    let resp = c
        .client
        .post(c.proxy_url(0, "/upload"))
        .send_stream(chunks)
        .await
        .unwrap();
    let r = into_reply(resp).await;
    assert_eq!(r.body["body_len"], 64 * 4096);
    let mut resp = c
        .client
        .get(c.proxy_url(0, "/big?bytes=33554432"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = resp.body().limit(64 << 20).await.unwrap();
    assert_eq!(got.len(), 32 << 20);
    up.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn upstream_error_answers_pass_through_untouched() {
    let c = Cluster::bootstrap(1).await;
    for (status, reason) in [
        (400, "Bad Request"),
        (431, "Request Header Fields Too Large"),
        (502, "Bad Gateway"),
    ] {
        let response: &'static str = Box::leak(
            format!("HTTP/1.1 {status} {reason}\r\nContent-Length: 14\r\nX-From: upstream\r\n\r\nupstream says!").into_boxed_str(),
        );
        let raw = crate::support::raw_upstream(response).await;
        let name = format!("u{status}");
        c.route_to(0, &name, &format!("/{name}"), raw).await;
        // Twice on one keep-alive connection, and once asking to close.
        for _ in 0..2 {
            let r = c.get(0, &format!("/{name}")).await;
            assert_eq!(
                (r.status, r.text.as_str()),
                (status, "upstream says!"),
                "{:?}",
                r.headers
            );
            assert_eq!(r.header("x-from"), Some("upstream"));
        }
        let resp = c
            .client
            .get(c.proxy_url(0, &format!("/{name}")))
            .insert_header(("connection", "close"))
            .send()
            .await
            .unwrap();
        let r = into_reply(resp).await;
        assert_eq!((r.status, r.text.as_str()), (status, "upstream says!"));
    }
    c.shutdown().await;
}
