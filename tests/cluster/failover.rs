use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::json;

use crate::support::{client, eventually, Cluster, Upstream};

#[actix_rt::test]
async fn a_new_leader_takes_over_and_the_survivors_serve_every_request_meanwhile() {
    let mut c = Cluster::bootstrap(3).await;
    let up = Upstream::start("a");
    c.route_to(0, "api", "/api", up.addr).await;
    for i in 0..3 {
        eventually("route everywhere", || async {
            (c.get(i, "/api").await.status == 200).then_some(())
        })
        .await;
    }
    let old = c.wait_leader().await;
    let survivors: Vec<usize> = (0..3).filter(|i| *i != old).collect();

    // Clients hammer the survivors' proxies through the whole failover.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let urls: Vec<String> = survivors
        .iter()
        .map(|i| c.proxy_url(*i, "/api/ping"))
        .collect();
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        actix_rt::spawn(async move {
            let http = client();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) && n < 100_000 {
                let url = &urls[n % urls.len()];
                match http.get(url).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                n += 1;
            }
        })
    };

    c.kill(old).await;
    let new = c.wait_leader().await;
    assert_ne!(new, old);
    // Writes go through again, via either survivor.
    let w = c
        .admin(
            survivors[0],
            "PUT",
            "/services/after",
            Some(json!({"targets": [{"url": "http://127.0.0.1:9"}]})),
        )
        .await;
    assert_eq!(w.status, 201, "{}", w.text);
    let w = c
        .admin(
            survivors[1],
            "PUT",
            "/services/after2",
            Some(json!({"targets": [{"url": "http://127.0.0.1:9"}]})),
        )
        .await;
    assert_eq!(w.status, 201, "{}", w.text);
    // Let the load run a little past the election too.
    let seen = ok.load(Ordering::Relaxed);
    eventually("more requests after failover", || async {
        (ok.load(Ordering::Relaxed) > seen + 50).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "proxied requests failed during failover"
    );
    assert!(ok.load(Ordering::Relaxed) > 50);
    up.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn without_quorum_writes_answer_503_and_proxies_keep_serving() {
    let mut c = Cluster::bootstrap(3).await;
    let up = Upstream::start("a");
    c.route_to(0, "api", "/api", up.addr).await;
    eventually("route on node 3", || async {
        (c.get(2, "/api").await.status == 200).then_some(())
    })
    .await;
    c.kill(0).await;
    c.kill(1).await;
    let r = c
        .admin(
            2,
            "PUT",
            "/services/x",
            Some(json!({"targets": [{"url": "http://127.0.0.1:9"}]})),
        )
        .await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.error_code(), "unavailable");
    assert!(r.header("retry-after").is_some());
    // A linearizable read cannot be served either; a stale one can.
    assert_eq!(c.admin(2, "GET", "/routes", None).await.status, 503);
    assert_eq!(
        c.admin(2, "GET", "/routes?stale=true", None).await.status,
        200
    );
    // The data path keeps the last applied config.
    assert_eq!(c.get(2, "/api").await.status, 200);
    up.stop().await;
    c.shutdown().await;
}
