use serde_json::json;

use crate::support::{eventually, Cluster, Upstream};

#[actix_rt::test]
async fn a_route_written_on_a_follower_is_served_by_every_node() {
    let c = Cluster::bootstrap(3).await;
    let up = Upstream::start("a");
    let leader = c.wait_leader().await;
    let follower = c.follower(leader);

    let r = c.route_to(follower, "users", "/users", up.addr).await;
    assert_eq!(r.status, 201);
    assert!(r.revision() > 0);
    // Read-your-writes: the node that took the write serves it on the very next request.
    let first = c.get(follower, "/users/7").await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.body["path"], "/users/7");
    // Every other node within the propagation window.
    for i in 0..3 {
        eventually("the route on every node", || async {
            (c.get(i, "/users/1").await.status == 200).then_some(())
        })
        .await;
    }
    // All nodes hold the same revision and the same resource version.
    for i in 0..3 {
        let got = c.admin(i, "GET", "/routes/users", None).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.body["version"], r.body["version"]);
    }
    up.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn every_write_is_served_by_its_node_on_the_next_request() {
    let c = Cluster::bootstrap(3).await;
    let up = Upstream::start("a");
    let s = c
        .admin(
            0,
            "PUT",
            "/services/svc",
            Some(json!({"targets": [{"url": format!("http://{}", up.addr)}]})),
        )
        .await;
    assert_eq!(s.status, 201, "{}", s.text);
    for n in 0..12 {
        let node = n % 3;
        let path = format!("/r{n}");
        let r = c
            .admin(
                node,
                "PUT",
                &format!("/routes/r{n}"),
                Some(json!({"service": "svc", "paths": [path]})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let got = c.get(node, &format!("/r{n}/x")).await;
        assert_eq!(got.status, 200, "route r{n} via node {node}: {}", got.text);
    }
    // Stale reads answer locally; linearizable reads (the default) see every route.
    let all = c.admin(2, "GET", "/routes", None).await;
    assert_eq!(all.body["data"].as_array().unwrap().len(), 12);
    let stale = c.admin(1, "GET", "/routes?stale=true", None).await;
    assert_eq!(stale.status, 200);
    up.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn identical_put_commits_nothing_and_keeps_the_revision() {
    let c = Cluster::bootstrap(3).await;
    let body = json!({"targets": [{"url": "http://127.0.0.1:9"}]});
    let first = c
        .admin(1, "PUT", "/services/same", Some(body.clone()))
        .await;
    assert_eq!(first.status, 201);
    let applied_before = c.gateway(0).node.state().applied;
    let again = c.admin(2, "PUT", "/services/same", Some(body)).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.revision(), first.revision());
    assert_eq!(again.body["version"], first.body["version"]);
    let cluster = c.admin(0, "GET", "/cluster", None).await;
    assert_eq!(cluster.body["revision"].as_u64(), Some(first.revision()));
    // Nothing new in the log (a later leader no-op could move `applied`, not a config entry).
    assert_eq!(c.gateway(0).node.state().revision, first.revision());
    assert!(c.gateway(0).node.state().applied >= applied_before);
    c.shutdown().await;
}
