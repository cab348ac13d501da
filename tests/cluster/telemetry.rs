//! Telemetry: `GET /metrics` (the token, every metric name of API.md §5 with its labels and
//! exact counts) and `GET /usage` (per node, summed over the cluster, filters, a member down).

use serde_json::{json, Value};

use crate::support::{client, eventually, into_reply, Cluster, Reply, Upstream};

const ALICE: &str = "alice-key-0123456789";
const BOB: &str = "bob-key-0123456789ab";

async fn send(c: &Cluster, i: usize, path: &str, key: Option<&str>) -> Reply {
    let mut req = client().get(c.proxy_url(i, path));
    if let Some(k) = key {
        req = req.insert_header(("apikey", k));
    }
    into_reply(req.send().await.expect("proxy request")).await
}

/// Sends `n` requests and checks each answer's status.
async fn send_n(c: &Cluster, i: usize, path: &str, key: Option<&str>, n: usize, status: u16) {
    for _ in 0..n {
        let r = send(c, i, path, key).await;
        assert_eq!(r.status, status, "{path} on node {i}: {}", r.text);
    }
}

/// Waits until every running node's router serves the state of `revision`.
async fn everywhere(c: &Cluster, revision: u64) {
    for i in c.running().collect::<Vec<_>>() {
        eventually(
            &format!("node {i} to serve revision {revision}"),
            || async { (c.gateway(i).router.published() >= revision).then_some(()) },
        )
        .await;
    }
}

async fn consumer(c: &Cluster, name: &str, key: &str) -> u64 {
    c.admin(0, "PUT", &format!("/consumers/{name}"), Some(json!({})))
        .await;
    let k = c
        .admin(
            0,
            "POST",
            &format!("/consumers/{name}/keys"),
            Some(json!({ "key": key })),
        )
        .await;
    assert_eq!(k.status, 201, "{}", k.text);
    k.revision()
}

async fn scrape(c: &Cluster, i: usize) -> String {
    let r = c.admin(i, "GET", "/metrics", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        r.headers
    );
    r.text
}

/// The value of the series written exactly as `series` (name and labels as rendered).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn must(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

#[actix_rt::test]
async fn metrics_need_the_token_and_count_what_was_proxied() {
    let c = Cluster::bootstrap(3).await;
    let up = Upstream::start("up");
    c.route_to(0, "plain", "/plain", up.addr).await;
    c.route_with(0, "cached", "/cc", up.addr, json!({"cache": {"ttl_s": 60}}))
        .await;
    let limited = json!({"rate_limit": {"requests": 3, "per": "hour", "by": "route"}});
    c.route_with(0, "limited", "/limited", up.addr, limited)
        .await;
    let quota = json!({"auth": "api_key", "quota": {"requests": 2, "per": "day"}});
    c.route_with(0, "q", "/q", up.addr, quota).await;
    everywhere(&c, consumer(&c, "alice", ALICE).await).await;

    // The token, like every admin endpoint.
    for token in [None, Some("wrong")] {
        let r = c.admin_raw(0, "GET", "/metrics", "", token).await;
        assert_eq!(r.status, 401, "{token:?}: {}", r.text);
    }

    // Node 0 and node 1 count their own requests only.
    send_n(&c, 0, "/plain/a", None, 5, 200).await;
    send_n(&c, 1, "/plain/b", None, 2, 200).await;
    send_n(&c, 0, "/nothing", None, 1, 404).await;
    let cc = [
        send(&c, 0, "/cc/x", None).await,
        send(&c, 0, "/cc/x", None).await,
    ];
    let cc: Vec<_> = cc
        .iter()
        .map(|r| r.header("x-cache").unwrap_or(""))
        .collect();
    assert_eq!(cc, ["MISS", "HIT"]);
    // The route's limit is shared among 3 nodes: node 0 admits its share, then refuses.
    let (mut admitted, mut refused) = (0, 0);
    while refused < 2 {
        match send(&c, 0, "/limited", None).await.status {
            200 => admitted += 1,
            429 => refused += 1,
            other => panic!("/limited answered {other}"),
        }
        assert!(admitted <= 3, "the rate limit never refused");
    }
    // The quota: 2 a day, cluster-wide (a lease write slower than its wait refuses early).
    let (mut q_ok, mut q_refused) = (0, 0);
    for _ in 0..4 {
        match send(&c, 0, "/q", Some(ALICE)).await.status {
            200 => q_ok += 1,
            429 => q_refused += 1,
            other => panic!("/q answered {other}"),
        }
    }
    assert!(
        q_ok <= 2 && q_refused >= 2,
        "{q_ok} admitted, {q_refused} refused"
    );

    let m = scrape(&c, 0).await;
    let at = |s: &str| must(&m, s);
    assert_eq!(
        at(r#"raftgate_requests_total{route="plain",status="200"}"#),
        5.0
    );
    assert_eq!(
        at(r#"raftgate_requests_total{route="none",status="404"}"#),
        1.0
    );
    assert_eq!(
        at(r#"raftgate_requests_total{route="cached",status="200"}"#),
        2.0
    );
    assert_eq!(
        at(r#"raftgate_requests_total{route="limited",status="200"}"#),
        admitted as f64
    );
    assert_eq!(
        at(r#"raftgate_requests_total{route="limited",status="429"}"#),
        2.0
    );
    let q_429 = r#"raftgate_requests_total{route="q",status="429"}"#;
    assert_eq!(at(q_429), q_refused as f64);
    assert_eq!(
        at(r#"raftgate_request_duration_seconds_count{route="plain"}"#),
        5.0
    );
    assert_eq!(
        at(r#"raftgate_request_duration_seconds_count{route="none"}"#),
        1.0
    );
    assert!(m.contains(r#"raftgate_request_duration_seconds_bucket{route="plain",le="+Inf"} 5"#));
    // Upstream time: only requests that went upstream (the HIT did not).
    assert_eq!(
        at(r#"raftgate_upstream_duration_seconds_count{route="plain"}"#),
        5.0
    );
    assert_eq!(
        at(r#"raftgate_upstream_duration_seconds_count{route="cached"}"#),
        1.0
    );
    assert_eq!(
        at(r#"raftgate_cache_total{route="cached",result="MISS"}"#),
        1.0
    );
    assert_eq!(
        at(r#"raftgate_cache_total{route="cached",result="HIT"}"#),
        1.0
    );
    let limited = r#"raftgate_rate_limited_total{route="limited",reason="rate_limited"}"#;
    assert_eq!(at(limited), 2.0);
    let exceeded = r#"raftgate_rate_limited_total{route="q",reason="quota_exceeded"}"#;
    assert_eq!(at(exceeded), q_refused as f64);
    let healthy = format!(
        r#"raftgate_upstream_healthy{{service="plain",target="http://{}"}}"#,
        up.addr
    );
    assert_eq!(at(&healthy), 1.0);
    assert!(
        m.contains("# TYPE raftgate_request_duration_seconds histogram"),
        "{m}"
    );
    assert!(m.contains("# TYPE raftgate_raft_term gauge"), "{m}");
    assert!(
        m.contains("# TYPE raftgate_raft_snapshots_installed_total counter"),
        "{m}"
    );

    let m1 = scrape(&c, 1).await;
    let plain = r#"raftgate_requests_total{route="plain",status="200"}"#;
    assert_eq!(must(&m1, plain), 2.0);
    assert_eq!(
        value(&m1, r#"raftgate_requests_total{route="none",status="404"}"#),
        None
    );

    // Raft: every node names the same leader, in the same term; revision ≤ applied.
    let leader = c.wait_leader().await as f64 + 1.0;
    for i in 0..3 {
        let m = scrape(&c, i).await;
        assert_eq!(must(&m, "raftgate_raft_leader_id"), leader, "node {i}");
        assert!(must(&m, "raftgate_raft_term") >= 1.0);
        let revision = must(&m, "raftgate_config_revision");
        assert!(revision >= 1.0 && must(&m, "raftgate_raft_applied_index") >= revision);
        // No node fell behind the leader's log: none needed a snapshot.
        assert_eq!(must(&m, "raftgate_raft_snapshots_installed_total"), 0.0);
    }

    // Quota spend is reported to the cluster about once a second: remaining converges.
    let remaining = r#"raftgate_quota_remaining{consumer="alice",route="q"}"#;
    let want = (2 - q_ok) as f64;
    eventually("alice's remaining quota on node 2", || async {
        (value(&scrape(&c, 2).await, remaining) == Some(want)).then_some(())
    })
    .await;

    up.stop().await;
    c.shutdown().await;
}

fn rows(v: &Value) -> Vec<(Option<&str>, &str, &str, u64)> {
    v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data in {v}"))
        .iter()
        .map(|r| {
            (
                r["consumer"].as_str(),
                r["route"].as_str().unwrap(),
                r["status_class"].as_str().unwrap(),
                r["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn usage(c: &Cluster, i: usize, query: &str) -> Value {
    let r = c.admin(i, "GET", &format!("/usage{query}"), None).await;
    assert_eq!(r.status, 200, "{query}: {}", r.text);
    r.body
}

#[actix_rt::test]
async fn usage_counts_per_node_and_sums_over_the_cluster() {
    let mut c = Cluster::bootstrap(3).await;
    let up = Upstream::start("up");
    c.route_with(0, "keyed", "/keyed", up.addr, json!({"auth": "api_key"}))
        .await;
    c.route_to(0, "open", "/open", up.addr).await;
    consumer(&c, "alice", ALICE).await;
    everywhere(&c, consumer(&c, "bob", BOB).await).await;

    send_n(&c, 0, "/keyed", Some(ALICE), 3, 200).await;
    send_n(&c, 0, "/keyed", Some(BOB), 2, 200).await;
    send_n(&c, 0, "/keyed", None, 1, 401).await;
    send_n(&c, 0, "/open", None, 2, 200).await;
    send_n(&c, 1, "/keyed", Some(ALICE), 4, 200).await;
    send_n(&c, 1, "/nothing", None, 1, 404).await;
    send_n(&c, 2, "/keyed", Some(BOB), 1, 200).await;

    let node0 = usage(&c, 0, "").await;
    assert_eq!(
        (&node0["node_id"], &node0["cluster"]),
        (&json!(1), &json!(false))
    );
    assert!(node0.get("nodes").is_none(), "{node0}");
    // Sorted by route, then consumer (none first), then class.
    assert_eq!(
        rows(&node0),
        [
            (None, "keyed", "4xx", 1),
            (Some("alice"), "keyed", "2xx", 3),
            (Some("bob"), "keyed", "2xx", 2),
            (None, "open", "2xx", 2),
        ]
    );
    let node1 = usage(&c, 1, "").await;
    assert_eq!(
        rows(&node1),
        [(Some("alice"), "keyed", "2xx", 4), (None, "none", "4xx", 1)]
    );

    // Filters.
    assert_eq!(
        rows(&usage(&c, 0, "?consumer=alice").await),
        [(Some("alice"), "keyed", "2xx", 3)]
    );
    assert_eq!(
        rows(&usage(&c, 0, "?route=open&consumer=").await),
        [(None, "open", "2xx", 2)]
    );
    assert!(rows(&usage(&c, 0, "?route=open&consumer=alice").await).is_empty());
    let bad = c.admin(0, "GET", "/usage?cluster=maybe", None).await;
    assert_eq!(bad.status, 400, "{}", bad.text);

    // The cluster's sum, asked of node 3.
    let all = usage(&c, 2, "?cluster=true").await;
    assert_eq!(all["node_id"], 3);
    assert_eq!(all["cluster"], true);
    assert_eq!(all["nodes"], json!([1, 2, 3]));
    assert_eq!(all["missing"], json!([]));
    assert_eq!(
        rows(&all),
        [
            (None, "keyed", "4xx", 1),
            (Some("alice"), "keyed", "2xx", 7),
            (Some("bob"), "keyed", "2xx", 3),
            (None, "none", "4xx", 1),
            (None, "open", "2xx", 2),
        ]
    );
    let alice = usage(&c, 1, "?cluster=true&consumer=alice&route=keyed").await;
    assert_eq!(rows(&alice), [(Some("alice"), "keyed", "2xx", 7)]);

    // A member that is down is listed, and the sum is of those that answered.
    c.kill(1).await;
    let without = usage(&c, 0, "?cluster=true&consumer=alice").await;
    assert_eq!(without["nodes"], json!([1, 3]));
    assert_eq!(without["missing"], json!([2]));
    assert_eq!(rows(&without), [(Some("alice"), "keyed", "2xx", 3)]);

    up.stop().await;
    c.shutdown().await;
}
