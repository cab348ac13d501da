//! Cluster-wide quotas: never more than the limit, partitions included; leases returned on a
//! graceful stop; `GET /quotas/{consumer}`.

use std::cell::RefCell;
use std::rc::Rc;

use futures_util::future::join_all;
use raftgate_cluster::quota::QuotaKey;
use serde_json::json;

use crate::support::{client, eventually, Cluster, Upstream};

const KEY: &str = "alice-key-0123456789";

/// A 3-node cluster with route `q` (API key, `quota`) and consumer alice with [`KEY`].
async fn quota_cluster(quota: serde_json::Value) -> (Cluster, Upstream) {
    let c = Cluster::bootstrap(3).await;
    let up = Upstream::start("up");
    c.route_with(
        0,
        "q",
        "/q",
        up.addr,
        json!({"auth": "api_key", "quota": quota}),
    )
    .await;
    c.admin(0, "PUT", "/consumers/alice", Some(json!({}))).await;
    let k = c
        .admin(
            0,
            "POST",
            "/consumers/alice/keys",
            Some(json!({ "key": KEY })),
        )
        .await;
    assert_eq!(k.status, 201, "{}", k.text);
    for i in 0..3 {
        eventually("the key on every node", || async {
            let st = c.gateway(i).node.state();
            (!st.api_keys.is_empty() && st.routes.contains_key("q")).then_some(())
        })
        .await;
    }
    (c, up)
}

#[derive(Clone, Default, Debug)]
struct Tally {
    admitted: usize,
    refused: usize,
}

/// Sends `n` requests to each of `nodes` from `parallel` concurrent clients per node.
async fn load(c: &Cluster, nodes: &[usize], n: usize, parallel: usize, tally: &Rc<RefCell<Tally>>) {
    let tasks = nodes.iter().flat_map(|&i| {
        (0..parallel).map(move |p| {
            let url = c.proxy_url(i, "/q");
            let tally = tally.clone();
            async move {
                let client = client();
                for _ in (p..n).step_by(parallel) {
                    let resp = client
                        .get(&url)
                        .insert_header(("apikey", KEY))
                        .send()
                        .await
                        .expect("proxy request");
                    match resp.status().as_u16() {
                        200 => tally.borrow_mut().admitted += 1,
                        429 => {
                            assert!(resp.headers().contains_key("retry-after"));
                            tally.borrow_mut().refused += 1;
                        }
                        other => panic!("unexpected status {other}"),
                    }
                }
            }
        })
    });
    join_all(tasks).await;
}

/// What the leases may strand: each node asks for at most `limit / (4 × nodes)` at a time.
fn stranded_bound(limit: usize, nodes: usize) -> usize {
    nodes * (limit / (4 * nodes)).max(1)
}

#[actix_rt::test]
async fn a_quota_is_never_exceeded_by_concurrent_clients_on_every_node() {
    let (c, up) = quota_cluster(json!({"requests": 100, "per": "day"})).await;
    let tally = Rc::new(RefCell::new(Tally::default()));
    load(&c, &[0, 1, 2], 100, 10, &tally).await;
    let t = tally.borrow().clone();
    println!("quota 100/day, 300 requests over 3 nodes: {t:?}");
    assert_eq!(t.admitted + t.refused, 300);
    assert!(t.admitted <= 100, "{t:?}");
    assert!(t.admitted >= 100 - stranded_bound(100, 3), "{t:?}");
    assert_eq!(
        up.received(),
        t.admitted,
        "refused requests never reach the upstream"
    );

    // The cluster's account: reported spend catches up within the report interval.
    let admitted = t.admitted as u64;
    eventually("the spend reported", || async {
        let r = c.admin(1, "GET", "/quotas/alice", None).await;
        let q = &r.body["data"][0];
        (q["used"] == admitted).then_some(())
    })
    .await;
    let r = c.admin(2, "GET", "/quotas/alice", None).await;
    let q = &r.body["data"][0];
    assert_eq!(
        (q["route"].as_str(), q["limit"].as_u64()),
        (Some("q"), Some(100)),
        "{}",
        r.text
    );
    assert_eq!(q["remaining"], 100 - admitted);
    assert!(q["window_end"].as_u64().unwrap() > q["window_start"].as_u64().unwrap());
    assert_eq!(c.admin(0, "GET", "/quotas/nobody", None).await.status, 404);
    c.shutdown().await;
}

#[actix_rt::test]
async fn a_node_cut_off_half_way_spends_only_what_it_holds() {
    let (c, up) = quota_cluster(json!({"requests": 100, "per": "day"})).await;
    let tally = Rc::new(RefCell::new(Tally::default()));
    load(&c, &[0, 1, 2], 20, 4, &tally).await;
    let before = tally.borrow().admitted;
    assert!(before > 0);

    // Node 2 is partitioned from the others: both sides keep taking requests.
    c.gateway(2).node.set_isolated(true);
    let majority = load(&c, &[0, 1], 120, 6, &tally);
    let minority = load(&c, &[2], 30, 6, &tally);
    futures_util::join!(majority, minority);
    let t = tally.borrow().clone();
    println!("quota 100/day with node 3 cut off half-way: {t:?} ({before} admitted before)");
    assert!(t.admitted <= 100, "{t:?}");
    assert_eq!(up.received(), t.admitted);

    // Healed, the cluster still never grants past the limit.
    c.gateway(2).node.set_isolated(false);
    load(&c, &[0, 1, 2], 20, 4, &tally).await;
    assert!(tally.borrow().admitted <= 100, "{:?}", tally.borrow());
    c.shutdown().await;
}

#[actix_rt::test]
async fn a_graceful_stop_returns_unspent_grants() {
    let (mut c, _up) = quota_cluster(json!({"requests": 1000, "per": "hour"})).await;
    let tally = Rc::new(RefCell::new(Tally::default()));
    load(&c, &[2], 40, 4, &tally).await;
    assert_eq!(tally.borrow().admitted, 40);
    let key = QuotaKey {
        route: "q".into(),
        subject: "alice".into(),
    };
    let node3 = c.gateway(2).node.id();
    let held = c.gateway(0).node.state().quotas[&key].granted_to(node3);
    assert!(held >= 40, "grants cover what was admitted: {held}");
    c.stop(2).await;
    let st = c.gateway(0).node.state();
    let usage = &st.quotas[&key];
    assert_eq!(
        (usage.granted, usage.used, usage.granted_to(node3)),
        (40, 40, 40),
        "after a graceful stop the cluster holds exactly what was spent"
    );
    c.shutdown().await;
}

#[actix_rt::test]
async fn a_node_restarted_after_a_crash_never_spends_its_old_grants_again() {
    let (mut c, up) = quota_cluster(json!({"requests": 100, "per": "day"})).await;
    let tally = Rc::new(RefCell::new(Tally::default()));
    load(&c, &[2], 60, 4, &tally).await;
    assert_eq!(tally.borrow().admitted, 60);
    // Crashed: whatever it held unspent is lost for the window, never admitted twice.
    c.kill(2).await;
    c.restart(2).await;
    eventually("the restarted node ready", || async {
        (c.admin(2, "GET", "/readyz", None).await.status == 200).then_some(())
    })
    .await;
    load(&c, &[0, 1, 2], 60, 4, &tally).await;
    let t = tally.borrow().clone();
    println!("quota 100/day, node 3 crashed after 60 and restarted: {t:?}");
    assert!(t.admitted <= 100, "{t:?}");
    assert_eq!(up.received(), t.admitted);
    c.shutdown().await;
}
