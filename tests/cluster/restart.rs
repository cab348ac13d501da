use serde_json::json;

use crate::support::{eventually, Cluster, Upstream};

#[actix_rt::test]
async fn every_acknowledged_write_survives_a_whole_cluster_restart() {
    let mut c = Cluster::bootstrap(3).await;
    let up = Upstream::start("a");
    let mut acked = Vec::new();
    c.admin(
        0,
        "PUT",
        "/services/svc",
        Some(json!({"targets": [{"url": format!("http://{}", up.addr)}]})),
    )
    .await;
    for n in 0..30 {
        let r = c
            .admin(
                n % 3,
                "PUT",
                &format!("/routes/r{n}"),
                Some(json!({"service": "svc", "paths": [format!("/r{n}")]})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        acked.push(format!("r{n}"));
    }
    for i in 0..3 {
        c.kill(i).await;
    }
    for i in 0..3 {
        c.restart(i).await;
    }
    c.wait_leader().await;
    for i in 0..3 {
        let all = c.admin(i, "GET", "/routes", None).await;
        assert_eq!(all.status, 200, "{}", all.text);
        let names: Vec<&str> = all.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        for name in &acked {
            assert!(names.contains(&name.as_str()), "node {i} lost {name}");
        }
        eventually("proxy serves restored routes", || async {
            (c.get(i, "/r29").await.status == 200).then_some(())
        })
        .await;
    }
    up.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn a_follower_down_during_many_writes_catches_up_through_a_snapshot() {
    // Snapshot every 20 entries and keep only 5 behind it: the follower's gap is purged.
    let mut c = Cluster::bootstrap_with(3, |cfg| {
        cfg.raft.snapshot_every = 20;
        cfg.raft.logs_to_keep = 5;
    })
    .await;
    let leader = c.wait_leader().await;
    let down = c.follower(leader);
    c.kill(down).await;
    let writer = (0..3).find(|i| *i != down).unwrap();
    c.admin(
        writer,
        "PUT",
        "/services/svc",
        Some(json!({"targets": [{"url": "http://127.0.0.1:9"}]})),
    )
    .await;
    for n in 0..120 {
        let r = c
            .admin(
                writer,
                "PUT",
                &format!("/routes/r{n}"),
                Some(json!({"service": "svc", "paths": [format!("/r{n}")]})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let target = c.gateway(writer).node.state();
    // A leader keeps the entries a down follower still needs, but followers purge after their
    // own snapshots. Hand leadership to the other follower once it has purged: the returning
    // node's gap is then gone from the leader's log and only a snapshot can fill it.
    let other = (0..3).find(|i| *i != down && *i != leader).unwrap();
    let raft = c.gateway(other).node.raft().clone();
    eventually("the other follower to purge its log", || async {
        (raft.metrics().borrow().purged.map(|l| l.index).unwrap_or(0) > 20).then_some(())
    })
    .await;
    // An election can be lost (the old leader may hold an entry `other` lacks, or win the
    // race): ask again until `other` leads.
    eventually("leadership to move", || async {
        if raft.metrics().borrow().current_leader == Some(other as u64 + 1) {
            return Some(());
        }
        raft.trigger().elect().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        None
    })
    .await;
    c.wait_leader().await;
    c.restart(down).await;
    let node = &c.gateway(down).node;
    eventually("the follower to catch up", || async {
        (node.state().applied >= target.applied).then_some(())
    })
    .await;
    assert_eq!(node.state().routes.len(), 120);
    assert_eq!(
        node.state().digest(),
        c.gateway(other).node.state().digest()
    );
    let snap = node.raft().metrics().borrow().snapshot;
    assert!(snap.is_some(), "the follower installed a snapshot");
    assert!(
        node.snapshots_installed() >= 1,
        "the follower caught up through a snapshot sent by the leader"
    );
    c.shutdown().await;
}
