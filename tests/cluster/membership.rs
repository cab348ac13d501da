//! `POST /cluster/members`, `DELETE /cluster/members/{id}` and `join = true`: nodes join while
//! writes flow (none is lost), learners follow without voting, nodes leave, the leader too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::support::{client, eventually, Cluster, Upstream, TOKEN};

/// `GET /cluster` on node `i`: member id → voter.
async fn members(c: &Cluster, i: usize) -> Vec<(u64, bool)> {
    let r = c.admin(i, "GET", "/cluster", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_u64().unwrap(), m["voter"].as_bool().unwrap()))
        .collect()
}

/// Route names node `i` holds, read linearizably.
async fn route_names(c: &Cluster, i: usize) -> Vec<String> {
    let r = c.admin(i, "GET", "/routes", None).await;
    assert_eq!(r.status, 200, "node {i}: {}", r.text);
    r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

/// A task that writes routes `w0, w1, …` through `admins` in turn until `stop`, recording the
/// names whose write was acknowledged.
fn writer(
    admins: Vec<String>,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Vec<String>>>, actix_rt::task::JoinHandle<usize>) {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let handle = actix_rt::spawn({
        let acked = acked.clone();
        async move {
            let http = client();
            let mut failed = 0;
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) && n < 100_000 {
                let name = format!("w{n}");
                let sent = http
                    .put(format!("{}/routes/{name}", admins[n % admins.len()]))
                    .insert_header(("authorization", format!("Bearer {TOKEN}")))
                    .insert_header(("content-type", "application/json"))
                    .send_body(json!({"service": "svc", "paths": [format!("/{name}")]}).to_string())
                    .await;
                match sent {
                    Ok(r) if r.status() == 201 => acked.lock().unwrap().push(name),
                    _ => failed += 1,
                }
                n += 1;
            }
            failed
        }
    });
    (acked, handle)
}

#[actix_rt::test]
async fn nodes_join_as_voter_and_learner_while_writes_flow_and_no_acknowledged_write_is_lost() {
    let mut c = Cluster::bootstrap(3).await;
    let up = Upstream::start("a");
    c.route_to(0, "svc", "/before", up.addr).await;
    let leader = c.wait_leader().await;
    let via = c.follower(leader);

    // Checked before anything reaches the leader.
    let r = c
        .admin(
            via,
            "POST",
            "/cluster/members",
            Some(json!({"id": 9, "addr": "nope", "voter": true})),
        )
        .await;
    assert_eq!(
        (r.status, r.error_code()),
        (422, "invalid_config"),
        "{}",
        r.text
    );
    assert_eq!(r.body["error"]["field"], "addr");
    let r = c
        .admin(
            via,
            "POST",
            "/cluster/members",
            Some(json!({"id": 9, "addr": "h:1", "vote": true})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let taken = c.cluster_addr(leader);
    let r = c
        .admin(
            via,
            "POST",
            "/cluster/members",
            Some(json!({"id": 2, "addr": "h:1"})),
        )
        .await;
    assert_eq!(
        (r.status, r.error_code()),
        (409, "member_exists"),
        "{}",
        r.text
    );
    let r = c
        .admin(
            via,
            "POST",
            "/cluster/members",
            Some(json!({"id": 9, "addr": taken})),
        )
        .await;
    assert_eq!(
        (r.status, r.error_code()),
        (409, "addr_taken"),
        "{}",
        r.text
    );
    let r = c.admin(via, "DELETE", "/cluster/members/9", None).await;
    assert_eq!((r.status, r.error_code()), (404, "not_found"), "{}", r.text);

    // Writes flow through every node while a 4th joins as a voter through a follower.
    let admins: Vec<String> = (0..3).map(|i| c.admin_url(i, "")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (acked, writes) = writer(admins, stop.clone());
    eventually("writes flowing", || async {
        (acked.lock().unwrap().len() >= 5).then_some(())
    })
    .await;
    let fourth = c.add_node().await;
    let r = c
        .admin(
            via,
            "POST",
            "/cluster/members",
            Some(json!({"id": 4, "addr": c.cluster_addr(fourth), "voter": true})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["voter"], true, "{}", r.text);
    assert!(r.header("x-raftgate-revision").is_some());
    let seen = acked.lock().unwrap().len();
    eventually("writes after the join", || async {
        (acked.lock().unwrap().len() >= seen + 10).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    writes.await.unwrap();

    // No acknowledged write is missing anywhere, the new node included.
    let acked = acked.lock().unwrap().clone();
    for i in 0..4 {
        let names = route_names(&c, i).await;
        for name in &acked {
            assert!(names.contains(name), "node {} lost {name}", i + 1);
        }
    }
    assert!(members(&c, fourth).await.contains(&(4, true)));
    // The new node serves a route created before it joined.
    eventually("the new node proxies /before", || async {
        (c.get(fourth, "/before").await.status == 200).then_some(())
    })
    .await;
    assert_eq!(
        c.admin_raw(fourth, "GET", "/readyz", "", None).await.status,
        200
    );

    // A 5th joins as a learner for good: it follows and serves, but does not vote.
    let fifth = c.add_node().await;
    let r = c
        .admin(
            leader,
            "POST",
            "/cluster/members",
            Some(json!({"id": 5, "addr": c.cluster_addr(fifth), "voter": false})),
        )
        .await;
    assert_eq!(
        (r.status, &r.body["voter"]),
        (200, &Value::Bool(false)),
        "{}",
        r.text
    );
    // The node that took the call knows at once; the others once the entry reaches them.
    let m = members(&c, leader).await;
    assert!(m.contains(&(5, false)), "{m:?}");
    for i in [0, fourth, fifth] {
        let m = eventually("every node sees the learner", || async {
            let m = members(&c, i).await;
            m.contains(&(5, false)).then_some(m)
        })
        .await;
        assert_eq!(m.iter().filter(|(_, v)| *v).count(), 4, "{m:?}");
    }
    c.route_to(via, "late", "/late", up.addr).await;
    eventually("the learner proxies a later route", || async {
        (c.get(fifth, "/late").await.status == 200).then_some(())
    })
    .await;

    // A voter leaves (through the learner's admin API); writes continue.
    let gone = c.follower(leader);
    let r = c
        .admin(
            fifth,
            "DELETE",
            &format!("/cluster/members/{}", gone + 1),
            None,
        )
        .await;
    assert_eq!(
        (r.status, &r.body["voter"]),
        (200, &Value::Bool(false)),
        "{}",
        r.text
    );
    c.kill(gone).await;
    for i in c.running().collect::<Vec<_>>() {
        eventually("the removed node gone from the membership", || async {
            let m = members(&c, i).await;
            (!m.iter().any(|(id, _)| *id == gone as u64 + 1)).then_some(())
        })
        .await;
    }
    let r = c
        .admin(
            fourth,
            "PUT",
            "/services/after",
            Some(json!({"targets": [{"url": "http://127.0.0.1:9"}]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    up.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn removing_the_leader_makes_it_step_down_and_the_rest_elect_a_new_one() {
    let mut c = Cluster::bootstrap(3).await;
    let leader = c.wait_leader().await;
    let via = c.follower(leader);
    let r = c
        .admin(
            via,
            "DELETE",
            &format!("/cluster/members/{}", leader + 1),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    c.kill(leader).await;
    let new = c.wait_leader().await;
    assert_ne!(new, leader);
    let m = members(&c, new).await;
    assert_eq!(m.len(), 2, "{m:?}");
    let r = c
        .admin(
            via,
            "PUT",
            "/services/after",
            Some(json!({"targets": [{"url": "http://127.0.0.1:9"}]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    c.shutdown().await;
}

#[actix_rt::test]
async fn the_last_voter_cannot_be_removed() {
    let c = Cluster::bootstrap(1).await;
    let r = c.admin(0, "DELETE", "/cluster/members/1", None).await;
    assert_eq!(
        (r.status, r.error_code()),
        (409, "last_voter"),
        "{}",
        r.text
    );
    let r = c.admin(0, "DELETE", "/cluster/members/x", None).await;
    assert_eq!(r.status, 400, "{}", r.text);
    c.shutdown().await;
}
