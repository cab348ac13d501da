//! The response cache: what is stored and served (X-Cache), keys (vary, consumers), single
//! flight, and purges replicated through the Raft log.

use serde_json::json;

use crate::support::{eventually, into_reply, Cluster, Reply, Upstream};

async fn send(c: &Cluster, i: usize, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = crate::support::client().request(method.parse().unwrap(), c.proxy_url(i, path));
    for h in headers {
        req = req.insert_header(*h);
    }
    into_reply(req.send().await.expect("proxy request")).await
}

async fn get(c: &Cluster, i: usize, path: &str) -> Reply {
    send(c, i, "GET", path, &[]).await
}

/// Request headers, as `send` takes them.
type Headers<'a> = &'a [(&'a str, &'a str)];

fn x_cache(r: &Reply) -> &str {
    r.header("x-cache").unwrap_or("(none)")
}

fn serial(r: &Reply) -> u64 {
    r.body["serial"].as_u64().expect("a /cc answer")
}

/// A cached route `name` for `path` on `up`.
async fn cached_route(
    c: &Cluster,
    name: &str,
    path: &str,
    up: &Upstream,
    cache: serde_json::Value,
) {
    c.route_with(0, name, path, up.addr, json!({ "cache": cache }))
        .await;
}

#[actix_rt::test]
async fn a_miss_is_stored_then_served_without_the_upstream_as_cache_control_allows() {
    let c = Cluster::bootstrap_with(1, |cfg| cfg.cache.max_entry_bytes = 64 * 1024).await;
    let up = Upstream::start("up");
    cached_route(&c, "cc", "/cc", &up, json!({"ttl_s": 60})).await;
    c.route_to(0, "plain", "/plain", up.addr).await;

    // MISS, then HITs that never reach the upstream, with their own request id and an Age.
    let first = get(&c, 0, "/cc/a?x=1").await;
    assert_eq!(
        (first.status, x_cache(&first)),
        (200, "MISS"),
        "{}",
        first.text
    );
    let seen = up.received();
    for _ in 0..3 {
        let hit = get(&c, 0, "/cc/a?x=1").await;
        assert_eq!((hit.status, x_cache(&hit)), (200, "HIT"), "{}", hit.text);
        assert_eq!(serial(&hit), serial(&first));
        assert_eq!(hit.header("content-type"), Some("application/json"));
        assert!(hit.header("age").is_some());
        assert_ne!(hit.header("x-request-id"), first.header("x-request-id"));
    }
    let hit = send(&c, 0, "GET", "/cc/a?x=1", &[("x-request-id", "mine-1")]).await;
    assert_eq!(hit.header("x-request-id"), Some("mine-1"));
    assert_eq!(up.received(), seen, "a HIT reached the upstream");
    // The path is normalised before it keys the entry.
    assert_eq!(x_cache(&get(&c, 0, "/cc//b/../a?x=1").await), "HIT");

    // Another query, another entry; HEAD is cached on its own.
    assert_eq!(x_cache(&get(&c, 0, "/cc/a?x=2").await), "MISS");
    let head = send(&c, 0, "HEAD", "/cc/a?x=1", &[]).await;
    assert_eq!((head.status, x_cache(&head)), (200, "MISS"));
    let head = send(&c, 0, "HEAD", "/cc/a?x=1", &[]).await;
    assert_eq!(
        (head.status, x_cache(&head), head.text.as_str()),
        (200, "HIT", "")
    );

    // Unstorable answers and uncacheable requests: BYPASS, and every one reaches the upstream.
    let bypass: [(&str, &str, Headers); 10] = [
        ("POST", "/cc/a?x=1", &[]),
        ("GET", "/cc/p?cc=private", &[]),
        ("GET", "/cc/p?cc=private,max-age%3D60", &[]),
        ("GET", "/cc/p?cc=no-store", &[]),
        ("GET", "/cc/p?cc=no-cache", &[]),
        ("GET", "/cc/p?cookie=true", &[]),
        ("GET", "/cc/p?status=500", &[]),
        ("GET", "/cc/a?x=1", &[("cache-control", "no-cache")]),
        ("GET", "/cc/a?x=1", &[("authorization", "Basic dTpw")]),
        ("GET", "/cc/a?x=1", &[("range", "bytes=0-1")]),
    ];
    for (method, path, headers) in bypass {
        for _ in 0..2 {
            let before = up.received();
            let r = send(&c, 0, method, path, headers).await;
            assert_eq!(
                x_cache(&r),
                "BYPASS",
                "{method} {path} {headers:?}: {}",
                r.text
            );
            assert_eq!(up.received(), before + 1, "{method} {path} {headers:?}");
        }
    }
    // What the upstream limits the lifetime to counts; max-age=0 is not stored.
    assert_eq!(x_cache(&get(&c, 0, "/cc/m?cc=max-age%3D0").await), "BYPASS");
    assert_eq!(
        x_cache(&get(&c, 0, "/cc/m?cc=public,max-age%3D30").await),
        "MISS"
    );
    assert_eq!(
        x_cache(&get(&c, 0, "/cc/m?cc=public,max-age%3D30").await),
        "HIT"
    );
    // An entry is served while fresh, then fetched anew.
    assert_eq!(
        x_cache(&get(&c, 0, "/cc/short?cc=max-age%3D1").await),
        "MISS"
    );
    eventually("the entry to expire after its max-age", || async {
        (x_cache(&get(&c, 0, "/cc/short?cc=max-age%3D1").await) == "MISS").then_some(())
    })
    .await;
    // 404s are kept like nginx's `proxy_cache_valid any`; the upstream said nothing against it.
    assert_eq!(x_cache(&get(&c, 0, "/cc/gone?status=404").await), "MISS");
    let r = get(&c, 0, "/cc/gone?status=404").await;
    assert_eq!((r.status, x_cache(&r)), (404, "HIT"));

    // Bodies without a Content-Length are read whole up to the entry size and stored.
    let chunked = get(&c, 0, "/cc/s?chunked=true").await;
    assert_eq!(x_cache(&chunked), "MISS", "{}", chunked.text);
    let again = get(&c, 0, "/cc/s?chunked=true").await;
    assert_eq!((x_cache(&again), serial(&again)), ("HIT", serial(&chunked)));
    // Larger than cache.max_entry_bytes: streamed whole, never stored.
    for path in ["/cc/big?pad=100000", "/cc/big?pad=100000&chunked=true"] {
        for _ in 0..2 {
            let r = get(&c, 0, path).await;
            assert_eq!((r.status, x_cache(&r)), (200, "BYPASS"), "{path}");
            assert_eq!(
                r.body["pad"].as_str().map(str::len),
                Some(100_000),
                "{path}"
            );
        }
    }
    // Routes without `cache` carry no X-Cache; gateway errors on cached routes do.
    assert_eq!(get(&c, 0, "/plain").await.header("x-cache"), None);
    up.stop().await;
    // The stopped server's workers drop their kept-alive connections a moment after `stop`
    // returns; until then a request may still ride one of them.
    let r = eventually("the stopped upstream's connections to close", || async {
        let r = get(&c, 0, "/cc/down").await;
        (r.status != 200).then_some(r)
    })
    .await;
    assert_eq!((r.status, x_cache(&r)), (502, "BYPASS"), "{}", r.text);
    // ...and what was stored is still served with the upstream gone.
    assert_eq!(x_cache(&get(&c, 0, "/cc/a?x=1").await), "HIT");
    c.shutdown().await;
}

#[actix_rt::test]
async fn entries_vary_by_the_routes_headers_and_the_upstreams_vary() {
    let c = Cluster::bootstrap(1).await;
    let up = Upstream::start("up");
    cached_route(
        &c,
        "cc",
        "/cc",
        &up,
        json!({"ttl_s": 60, "vary": ["accept"]}),
    )
    .await;
    let with = |accept: &'static str| [("accept", accept)];

    // The route's vary list: one entry per `accept`.
    let json_miss = send(&c, 0, "GET", "/cc/v", &with("application/json")).await;
    let html_miss = send(&c, 0, "GET", "/cc/v", &with("text/html")).await;
    assert_eq!((x_cache(&json_miss), x_cache(&html_miss)), ("MISS", "MISS"));
    let json_hit = send(&c, 0, "GET", "/cc/v", &with("application/json")).await;
    let html_hit = send(&c, 0, "GET", "/cc/v", &with("text/html")).await;
    assert_eq!((x_cache(&json_hit), x_cache(&html_hit)), ("HIT", "HIT"));
    assert_eq!(json_hit.body["accept"], "application/json");
    assert_eq!(html_hit.body["accept"], "text/html");
    assert_eq!(
        x_cache(&get(&c, 0, "/cc/v").await),
        "MISS",
        "no accept at all"
    );

    // The upstream's Vary: one entry per value of the headers it names.
    let lang = |l: &'static str| [("accept-language", l)];
    let path = "/cc/l?vary=Accept-Language";
    assert_eq!(
        x_cache(&send(&c, 0, "GET", path, &lang("en")).await),
        "MISS"
    );
    assert_eq!(
        x_cache(&send(&c, 0, "GET", path, &lang("fr")).await),
        "MISS"
    );
    let en = send(&c, 0, "GET", path, &lang("en")).await;
    let fr = send(&c, 0, "GET", path, &lang("fr")).await;
    assert_eq!((x_cache(&en), x_cache(&fr)), ("HIT", "HIT"));
    assert_ne!(serial(&en), serial(&fr));
    assert_eq!(en.header("vary"), Some("Accept-Language"));
    // Vary: * is never stored.
    for _ in 0..2 {
        assert_eq!(x_cache(&get(&c, 0, "/cc/any?vary=*").await), "BYPASS");
    }
    c.shutdown().await;
}

#[actix_rt::test]
async fn one_consumers_cached_answer_is_never_served_to_another() {
    let c = Cluster::bootstrap(1).await;
    let up = Upstream::start("up");
    c.route_with(
        0,
        "private",
        "/cc",
        up.addr,
        json!({"auth": "api_key", "cache": {"ttl_s": 60}}),
    )
    .await;
    for name in ["alice", "bob"] {
        c.admin(0, "PUT", &format!("/consumers/{name}"), Some(json!({})))
            .await;
        let k = c
            .admin(
                0,
                "POST",
                &format!("/consumers/{name}/keys"),
                Some(json!({"key": format!("{name}-key-0123456789")})),
            )
            .await;
        assert_eq!(k.status, 201, "{}", k.text);
    }
    let as_alice = [("apikey", "alice-key-0123456789")];
    let bearer_bob = [("authorization", "Bearer bob-key-0123456789")];
    let a = send(&c, 0, "GET", "/cc/me", &as_alice).await;
    assert_eq!((a.status, x_cache(&a)), (200, "MISS"), "{}", a.text);
    let b = send(&c, 0, "GET", "/cc/me", &bearer_bob).await;
    assert_eq!((b.status, x_cache(&b)), (200, "MISS"), "{}", b.text);
    assert_eq!(
        (&a.body["consumer"], &b.body["consumer"]),
        (&json!("alice"), &json!("bob"))
    );
    for _ in 0..2 {
        let a2 = send(&c, 0, "GET", "/cc/me", &as_alice).await;
        let b2 = send(&c, 0, "GET", "/cc/me", &bearer_bob).await;
        assert_eq!(
            (x_cache(&a2), a2.body["consumer"].as_str()),
            ("HIT", Some("alice"))
        );
        assert_eq!(
            (x_cache(&b2), b2.body["consumer"].as_str()),
            ("HIT", Some("bob"))
        );
    }
    // The key in the query is the consumer's, not part of the entry's key.
    let q = send(&c, 0, "GET", "/cc/me?apikey=alice-key-0123456789", &[]).await;
    assert_eq!((x_cache(&q), serial(&q)), ("HIT", serial(&a)));
    // No credential: 401, not a cached answer.
    let anon = get(&c, 0, "/cc/me").await;
    assert_eq!((anon.status, x_cache(&anon)), (401, "BYPASS"));
    c.shutdown().await;
}

#[actix_rt::test]
async fn concurrent_misses_make_one_upstream_request() {
    let c = Cluster::bootstrap(1).await;
    let up = Upstream::start("up");
    cached_route(&c, "cc", "/cc", &up, json!({"ttl_s": 60})).await;

    let burst = |path: &'static str| {
        let c = &c;
        futures_util::future::join_all((0..20).map(move |_| get(c, 0, path)))
    };
    let before = up.received();
    let replies = burst("/cc/slow?ms=300").await;
    assert_eq!(
        up.received() - before,
        1,
        "20 concurrent misses, one upstream request"
    );
    let first = serial(&replies[0]);
    for r in &replies {
        assert_eq!((r.status, serial(r)), (200, first), "{}", r.text);
    }
    let misses = replies.iter().filter(|r| x_cache(r) == "MISS").count();
    let hits = replies.iter().filter(|r| x_cache(r) == "HIT").count();
    assert_eq!((misses, hits), (1, 19));

    // When the answer turns out unstorable, the waiters go upstream themselves.
    let before = up.received();
    let replies = burst("/cc/slow?ms=300&cc=private").await;
    assert_eq!(up.received() - before, 20);
    assert!(replies
        .iter()
        .all(|r| r.status == 200 && x_cache(r) == "BYPASS"));
    c.shutdown().await;
}

#[actix_rt::test]
async fn purges_are_replicated_and_route_changes_empty_their_entries() {
    let c = Cluster::bootstrap(3).await;
    let up = Upstream::start("up");
    cached_route(&c, "cc", "/cc", &up, json!({"ttl_s": 300})).await;
    cached_route(&c, "dd", "/dd", &up, json!({"ttl_s": 300})).await;
    let paths = ["/cc/users/1", "/cc/usersfoo", "/cc/items/1", "/dd/users/1"];
    // Every node caches on its own: fill each (the route reaches nodes 1 and 2 within the
    // propagation window).
    let fill = || async {
        for i in 0..3 {
            for p in paths {
                eventually("the entry cached on the node", || async {
                    (x_cache(&get(&c, i, p).await) == "HIT").then_some(())
                })
                .await;
            }
        }
    };
    let cached = |i: usize, p: &'static str| {
        let c = &c;
        async move { x_cache(&get(c, i, p).await) == "HIT" }
    };
    fill().await;
    let revision = c.admin(0, "GET", "/cluster", None).await.body["revision"].clone();

    // A purge through node 2 (index 1): gone there when the call returns, then everywhere.
    let purge = c
        .admin(
            1,
            "POST",
            "/cache/purge",
            Some(json!({"prefix": "/cc/users"})),
        )
        .await;
    assert_eq!(purge.status, 200, "{}", purge.text);
    assert!(purge.body["index"].as_u64().is_some(), "{}", purge.text);
    assert_eq!(
        json!(purge.revision()),
        revision,
        "purges do not move the revision"
    );
    assert!(!cached(1, "/cc/users/1").await);
    for i in [0, 2] {
        eventually("the purge on every node", || async {
            (!cached(i, "/cc/users/1").await).then_some(())
        })
        .await;
    }
    // Only the matching paths went (prefixes match at segment boundaries).
    for i in 0..3 {
        for p in ["/cc/usersfoo", "/cc/items/1", "/dd/users/1"] {
            assert!(cached(i, p).await, "node {i} {p}");
        }
    }
    let after = c.admin(2, "GET", "/cluster", None).await;
    assert_eq!(after.body["revision"], revision);

    // By route: only that route's entries.
    fill().await;
    let purge = c
        .admin(2, "POST", "/cache/purge", Some(json!({"route": "dd"})))
        .await;
    assert_eq!(purge.status, 200, "{}", purge.text);
    assert!(!cached(2, "/dd/users/1").await);
    assert!(cached(2, "/cc/users/1").await);
    for i in [0, 1] {
        eventually("the route purge on every node", || async {
            (!cached(i, "/dd/users/1").await).then_some(())
        })
        .await;
    }

    // Everything.
    fill().await;
    let purge = c.admin(0, "POST", "/cache/purge", Some(json!({}))).await;
    assert_eq!(purge.status, 200, "{}", purge.text);
    for p in paths {
        assert!(!cached(0, p).await, "{p}");
    }
    for i in [1, 2] {
        eventually("purge-all on every node", || async {
            for p in paths {
                if cached(i, p).await {
                    return None;
                }
            }
            Some(())
        })
        .await;
    }

    // A route change drops that route's entries on every node, and only its own.
    fill().await;
    let changed = c
        .admin(
            1,
            "PUT",
            "/routes/cc",
            Some(json!({"service": "cc", "paths": ["/cc"], "cache": {"ttl_s": 120}})),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text);
    assert!(!cached(1, "/cc/items/1").await);
    assert!(cached(1, "/dd/users/1").await);
    for i in [0, 2] {
        eventually("the changed route's entries gone on every node", || async {
            (!cached(i, "/cc/items/1").await).then_some(())
        })
        .await;
        assert!(cached(i, "/dd/users/1").await);
    }
    c.shutdown().await;
}

#[actix_rt::test]
async fn bad_purges_are_refused_before_anything_is_committed() {
    let c = Cluster::bootstrap(1).await;
    let up = Upstream::start("up");
    cached_route(&c, "cc", "/cc", &up, json!({"ttl_s": 60})).await;
    let revision = c.admin(0, "GET", "/cluster", None).await.body["revision"].clone();
    for (body, status, code, field) in [
        ("", 400, "invalid_json", None),
        ("not json", 400, "invalid_json", None),
        (r#"{"route": 5}"#, 400, "bad_request", None),
        (r#"{"prefx": "/a"}"#, 400, "unknown_field", Some("prefx")),
        (
            r#"{"prefix": "users"}"#,
            422,
            "invalid_config",
            Some("prefix"),
        ),
        (
            r#"{"prefix": "/a?b=1"}"#,
            422,
            "invalid_config",
            Some("prefix"),
        ),
        (
            r#"{"route": "no such"}"#,
            422,
            "invalid_config",
            Some("route"),
        ),
        (r#"{"route": "nope"}"#, 404, "not_found", None),
    ] {
        let r = c
            .admin_raw(0, "POST", "/cache/purge", body, Some(crate::support::TOKEN))
            .await;
        assert_eq!(
            (r.status, r.error_code(), r.body["error"]["field"].as_str()),
            (status, code, field),
            "{body}: {}",
            r.text
        );
    }
    let r = c.admin_raw(0, "POST", "/cache/purge", "{}", None).await;
    assert_eq!(r.status, 401);
    let cluster = c.admin(0, "GET", "/cluster", None).await;
    assert_eq!(cluster.body["revision"], revision);
    // A bad cache spec on a route: 422 naming the field.
    let bad = c
        .admin(
            0,
            "PUT",
            "/routes/bad",
            Some(json!({"service": "cc", "paths": ["/bad"], "cache": {"ttl_s": 0}})),
        )
        .await;
    assert_eq!(
        (bad.status, bad.body["error"]["field"].as_str()),
        (422, Some("cache.ttl_s")),
        "{}",
        bad.text
    );
    let bad = c
        .admin(
            0,
            "PUT",
            "/routes/bad",
            Some(json!({"service": "cc", "paths": ["/bad"], "cache": {"ttl_s": 5, "vary": ["Accept"]}})),
        )
        .await;
    assert_eq!(bad.body["error"]["field"], "cache.vary.0", "{}", bad.text);
    c.shutdown().await;
}
