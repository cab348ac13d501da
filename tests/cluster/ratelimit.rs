//! Rate limits across the cluster: accuracy under load, whom a limit counts, the headers, and
//! how the shares follow the nodes a node can reach.
//!
//! Limits per hour make the budget of a fresh bucket exact (its share; the refill is a token
//! every few minutes), so most checks count admissions to the unit. Only the accuracy test
//! measures a rate.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{eventually, into_reply, Cluster, Reply, Upstream};

/// A client whose connections come from `ip` (Linux routes all of 127/8 to loopback): another
/// client IP as far as the gateway can tell.
fn client_from(ip: [u8; 4]) -> awc::Client {
    awc::Client::builder()
        .local_address(IpAddr::from(ip))
        .timeout(Duration::from_secs(30))
        .finish()
}

async fn send(client: &awc::Client, url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = client.get(url);
    for h in headers {
        req = req.insert_header(*h);
    }
    into_reply(req.send().await.expect("proxy request")).await
}

/// Sends until the first 429; how many were admitted. Bounded: a limit that never bites fails.
async fn admitted(client: &awc::Client, url: &str, headers: &[(&str, &str)]) -> u64 {
    for n in 0..1000 {
        let r = send(client, url, headers).await;
        match r.status {
            200 => {}
            429 => return n,
            other => panic!("{url}: {other} {}", r.text),
        }
    }
    panic!("{url}: 1000 requests admitted")
}

fn number(r: &Reply, name: &str) -> Option<u64> {
    r.header(name)?.parse().ok()
}

/// What every response of a limited route must carry: integer headers with
/// `Remaining ≤ Limit` and `Reset ≤ period`, and on a 429 `Retry-After ≥ 1`. `None` if so.
fn incoherent(r: &Reply, limit: u64, period_s: u64) -> Option<String> {
    let fields = (
        number(r, "ratelimit-limit"),
        number(r, "ratelimit-remaining"),
        number(r, "ratelimit-reset"),
    );
    let ok = match fields {
        (Some(l), Some(rem), Some(reset)) => l == limit && rem <= l && reset <= period_s,
        _ => false,
    };
    let refused_ok = r.status != 429
        || (r.error_code() == "rate_limited"
            && number(r, "retry-after").is_some_and(|s| s >= 1 && s <= period_s)
            && fields.1 == Some(0));
    (!ok || !refused_ok || !matches!(r.status, 200 | 429)).then(|| {
        format!(
            "{} limit {:?} remaining {:?} reset {:?} retry-after {:?}: {}",
            r.status,
            fields.0,
            fields.1,
            fields.2,
            r.header("retry-after"),
            r.text
        )
    })
}

async fn wait_live(c: &Cluster, nodes: &[usize], live: u64) {
    eventually(
        &format!("nodes {nodes:?} to count {live} live nodes"),
        || async {
            nodes
                .iter()
                .all(|i| c.gateway(*i).rate_limiter.live() == live)
                .then_some(())
        },
    )
    .await;
}

async fn wait_route(c: &Cluster, name: &str, version: u64) {
    eventually("the route on every running node", || async {
        c.running()
            .all(|i| {
                c.gateway(i)
                    .router
                    .table
                    .load()
                    .get(name)
                    .is_some_and(|r| r.route().version >= version)
            })
            .then_some(())
    })
    .await;
}

/// One request of the load test.
struct Sample {
    node: usize,
    sent: Instant,
    status: u16,
    incoherent: Option<String>,
}

/// Sends to `node` until `end`, at most one request per `pace`: far above any node's share.
async fn hammer(url: String, node: usize, pace: Duration, end: Instant) -> Vec<Sample> {
    let client = crate::support::client();
    let mut samples = Vec::new();
    let mut next = Instant::now();
    while Instant::now() < end {
        let sent = Instant::now();
        let r = send(&client, &url, &[]).await;
        samples.push(Sample {
            node,
            sent,
            status: r.status,
            incoherent: incoherent(&r, 50, 1),
        });
        next = (next + pace).max(Instant::now());
        tokio::time::sleep_until(next.into()).await;
    }
    samples
}

/// Issue #5: a limit of 50/s across 3 nodes admits 250 ± 10% in 5 s.
///
/// A bucket holds one period's share and starts full, so from a standing start the cluster
/// admits the limit once as a burst, then the limit per period. The burst is drained by a
/// one-second warm-up under the same load (every node must refuse within it); the 5 s window
/// that follows then admits exactly the refill, 5 × 50, give or take the requests in flight at
/// its edges. Nine clients, three per node, keep every node far above its share throughout.
#[actix_rt::test]
async fn fifty_a_second_across_three_nodes_admits_250_in_five_seconds() {
    let c = Cluster::bootstrap(3).await;
    let up = Upstream::start("up");
    let limit = json!({"requests": 50, "per": "second", "by": "route"});
    let r = c
        .route_with(0, "rl", "/rl", up.addr, json!({"rate_limit": limit}))
        .await;
    assert_eq!(r.body["rate_limit"], limit, "{}", r.text);
    wait_route(&c, "rl", 0).await;
    wait_live(&c, &[0, 1, 2], 3).await;

    let start = Instant::now();
    let (warm_up, window) = (Duration::from_secs(1), Duration::from_secs(5));
    let end = start + warm_up + window;
    let clients = (0..9).map(|k| {
        let node = k % 3;
        hammer(
            c.proxy_url(node, "/rl"),
            node,
            Duration::from_millis(5),
            end,
        )
    });
    // The share must stay a third throughout: a node that lost sight of a peer would admit more.
    let live = async {
        let mut lowest = 3;
        while Instant::now() < end {
            for i in 0..3 {
                lowest = lowest.min(c.gateway(i).rate_limiter.live());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        lowest
    };
    let (samples, lowest_live) =
        futures_util::future::join(futures_util::future::join_all(clients), live).await;
    let samples: Vec<Sample> = samples.into_iter().flatten().collect();
    assert_eq!(lowest_live, 3, "a node counted fewer live nodes under load");

    let bad: Vec<&String> = samples
        .iter()
        .filter_map(|s| s.incoherent.as_ref())
        .collect();
    assert!(
        bad.is_empty(),
        "{} incoherent responses, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(3)]
    );
    let in_window = |s: &&Sample| s.sent >= start + warm_up && s.sent < end;
    for node in 0..3 {
        let refused_in_warm_up = samples
            .iter()
            .any(|s| s.node == node && s.status == 429 && s.sent < start + warm_up);
        assert!(
            refused_in_warm_up,
            "node {node} never refused in the warm-up"
        );
    }
    let per_node: Vec<usize> = (0..3)
        .map(|node| {
            samples
                .iter()
                .filter(in_window)
                .filter(|s| s.node == node && s.status == 200)
                .count()
        })
        .collect();
    let admitted: usize = per_node.iter().sum();
    let sent = samples.iter().filter(in_window).count();
    let burst = samples
        .iter()
        .filter(|s| s.sent < start + warm_up && s.status == 200)
        .count();
    eprintln!(
        "rate limit 50/s on 3 nodes: {admitted} admitted of 250 expected in 5 s \
         ({per_node:?} per node; {sent} requests sent), {burst} in the 1 s warm-up \
         (burst 50 + refill 50)"
    );
    assert!(
        (225..=275).contains(&admitted),
        "{admitted} admitted in 5 s, expected 250 ± 10% ({per_node:?} per node, {sent} sent)"
    );
    c.shutdown().await;
}

#[actix_rt::test]
async fn rate_limits_are_validated_before_anything_is_proposed() {
    let c = Cluster::bootstrap(1).await;
    let up = Upstream::start("up");
    c.route_to(0, "r", "/r", up.addr).await;
    let put = |limit: Value, auth: &str| {
        let body = json!({"service": "r", "paths": ["/r"], "auth": auth, "rate_limit": limit});
        c.admin(0, "PUT", "/routes/r", Some(body))
    };
    for (limit, auth, status, field) in [
        (
            json!({"requests": 0, "per": "second"}),
            "none",
            422,
            "rate_limit.requests",
        ),
        (
            json!({"requests": 5, "per": "second", "by": "consumer"}),
            "none",
            422,
            "rate_limit.by",
        ),
        (json!({"requests": 5, "per": "day"}), "none", 400, ""),
        (
            json!({"requests": 5, "per": "second", "by": "header"}),
            "none",
            400,
            "",
        ),
        (
            json!({"requests": 5, "per": "second", "burst": 9}),
            "none",
            400,
            "burst",
        ),
    ] {
        let r = put(limit.clone(), auth).await;
        assert_eq!(r.status, status, "{limit}: {}", r.text);
        assert_eq!(
            r.body["error"]["field"].as_str().unwrap_or(""),
            field,
            "{limit}: {}",
            r.text
        );
    }
    let ok = json!({"requests": 5, "per": "minute", "by": "consumer"});
    let r = put(ok.clone(), "api_key").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = c.admin(0, "GET", "/routes/r", None).await;
    assert_eq!(r.body["rate_limit"], ok, "{}", r.text);
    c.shutdown().await;
}

/// Each consumer, each client IP, or everyone on the route together: with a limit of 3 an
/// hour on one node, each budget admits exactly 3.
#[actix_rt::test]
async fn each_consumer_each_ip_or_the_whole_route_has_its_own_budget() {
    let c = Cluster::bootstrap(1).await;
    let up = Upstream::start("up");
    let hourly = |by: Option<&str>| match by {
        Some(by) => json!({"requests": 3, "per": "hour", "by": by}),
        None => json!({"requests": 3, "per": "hour"}),
    };
    // Defaults: by consumer on an authenticated route, by IP on an open one.
    let keyed = json!({"auth": "api_key", "rate_limit": hourly(None)});
    c.route_with(0, "keyed", "/keyed", up.addr, keyed).await;
    c.route_with(
        0,
        "open",
        "/open",
        up.addr,
        json!({"rate_limit": hourly(None)}),
    )
    .await;
    let shared = json!({"auth": "any", "rate_limit": hourly(Some("route"))});
    c.route_with(0, "shared", "/shared", up.addr, shared).await;
    let mut keys = Vec::new();
    for name in ["alice", "bob"] {
        c.admin(0, "PUT", &format!("/consumers/{name}"), Some(json!({})))
            .await;
        let k = c
            .admin(0, "POST", &format!("/consumers/{name}/keys"), None)
            .await;
        assert_eq!(k.status, 201, "{}", k.text);
        keys.push(k.body["key"].as_str().unwrap().to_string());
    }
    let (alice, bob) = (
        [("apikey", keys[0].as_str())],
        [("apikey", keys[1].as_str())],
    );
    let local = crate::support::client();
    let url = |path: &str| c.proxy_url(0, path);

    // By consumer: Remaining counts down from the limit, then 429 until a token is back
    // (one every 3600 / 3 s).
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = send(&local, &url("/keyed"), &alice).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(incoherent(&r, 3, 3600), None);
        remaining.push(number(&r, "ratelimit-remaining").unwrap());
    }
    assert_eq!(remaining, [2, 1, 0]);
    let refused = send(&local, &url("/keyed"), &alice).await;
    assert_eq!(incoherent(&refused, 3, 3600), None);
    assert_eq!(refused.status, 429);
    let retry = number(&refused, "retry-after").unwrap();
    assert!((1190..=1200).contains(&retry), "Retry-After {retry}");
    assert!(number(&refused, "ratelimit-reset").unwrap() > 3500);
    assert_eq!(admitted(&local, &url("/keyed"), &bob).await, 3);
    // No consumer, no budget to count against: the 401 comes first, without the headers.
    let anonymous = send(&local, &url("/keyed"), &[]).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.header("ratelimit-limit"), None);

    // By IP: another client address has its own budget.
    assert_eq!(admitted(&local, &url("/open"), &[]).await, 3);
    assert_eq!(
        admitted(&client_from([127, 0, 0, 2]), &url("/open"), &[]).await,
        3
    );

    // By route: alice and bob share one.
    for key in [&alice, &bob] {
        assert_eq!(send(&local, &url("/shared"), key).await.status, 200);
    }
    assert_eq!(admitted(&local, &url("/shared"), &alice).await, 1);
    assert_eq!(admitted(&local, &url("/shared"), &bob).await, 0);

    // A changed limit starts from fresh buckets; an unchanged route keeps them.
    let four = json!({"auth": "api_key", "rate_limit": {"requests": 4, "per": "hour"}});
    c.route_with(0, "keyed", "/keyed", up.addr, four).await;
    assert_eq!(admitted(&local, &url("/keyed"), &alice).await, 4);
    let same = json!({"auth": "api_key", "rate_limit": {"requests": 4, "per": "hour"},
                      "methods": ["GET"]});
    c.route_with(0, "keyed", "/keyed", up.addr, same).await;
    assert_eq!(admitted(&local, &url("/keyed"), &alice).await, 0);
    c.shutdown().await;
}

/// The shares follow the nodes a node can reach: a stopped node's share goes to the other
/// two, and comes back when it returns. A node cut off from the majority keeps dividing by
/// every member: the cluster then admits the limit plus that node's share, not twice the limit.
#[actix_rt::test]
async fn shares_follow_the_reachable_nodes() {
    let mut c = Cluster::bootstrap(3).await;
    let up = Upstream::start("up");
    let limit = json!({"requests": 30, "per": "hour", "by": "ip"});
    let r = c
        .route_with(0, "rl", "/rl", up.addr, json!({"rate_limit": limit}))
        .await;
    let version = r.body["version"].as_u64().unwrap();
    wait_route(&c, "rl", version).await;
    wait_live(&c, &[0, 1, 2], 3).await;
    // Every client address below starts from fresh buckets: each node admits its share.
    let shares = |c: &Cluster, ip: [u8; 4], nodes: Vec<usize>| {
        let client = client_from(ip);
        let urls: Vec<String> = nodes.iter().map(|i| c.proxy_url(*i, "/rl")).collect();
        async move {
            let mut got = Vec::new();
            for url in &urls {
                got.push(admitted(&client, url, &[]).await);
            }
            got
        }
    };
    assert_eq!(
        shares(&c, [127, 0, 0, 2], vec![0, 1, 2]).await,
        [10, 10, 10]
    );

    // Node 3 stops: once the others' probes notice, they share the limit by two.
    c.kill(2).await;
    wait_live(&c, &[0, 1], 2).await;
    assert_eq!(shares(&c, [127, 0, 0, 3], vec![0, 1]).await, [15, 15]);
    // What a node had spent stays spent: no new burst for the drained buckets.
    assert_eq!(shares(&c, [127, 0, 0, 2], vec![0, 1]).await, [0, 0]);

    // It comes back: a third each again.
    c.restart(2).await;
    wait_route(&c, "rl", version).await;
    wait_live(&c, &[0, 1, 2], 3).await;
    assert_eq!(
        shares(&c, [127, 0, 0, 4], vec![0, 1, 2]).await,
        [10, 10, 10]
    );

    // Node 3 cut off: the majority side shares by two, node 3 reaches no majority and keeps
    // its third. 30 + 10 admitted cluster-wide, never 60.
    c.gateway(2).node.set_isolated(true);
    wait_live(&c, &[0, 1], 2).await;
    assert_eq!(c.gateway(2).rate_limiter.live(), 3);
    assert_eq!(
        shares(&c, [127, 0, 0, 5], vec![0, 1, 2]).await,
        [15, 15, 10]
    );
    c.gateway(2).node.set_isolated(false);
    wait_live(&c, &[0, 1, 2], 3).await;
    c.shutdown().await;
}
