//! Balancers, active health checks and passive ejection through a real node.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use raftgate::balancing::{now_ms, ServiceRuntime};
use serde_json::{json, Value};

use crate::support::{eventually, into_reply, Cluster, Upstream};

fn runtime(c: &Cluster, service: &str) -> Arc<ServiceRuntime> {
    c.gateway(0)
        .balancer
        .health
        .load()
        .get(service)
        .cloned()
        .expect("the service has a runtime")
}

async fn put(c: &Cluster, path: &str, body: Value) {
    let r = c.admin(0, "PUT", path, Some(body)).await;
    assert!(
        r.status == 200 || r.status == 201,
        "{path}: {} {}",
        r.status,
        r.text
    );
}

fn urls(ups: &[&Upstream]) -> Value {
    ups.iter()
        .map(|u| json!({"url": format!("http://{}", u.addr)}))
        .collect()
}

/// Which upstream answered `GET path` (its `x-upstream`), asserting a 200.
async fn who(c: &Cluster, path: &str, headers: &[(&str, &str)]) -> String {
    let mut req = c.client.get(c.proxy_url(0, path));
    for h in headers {
        req = req.insert_header(*h);
    }
    let r = into_reply(req.send().await.expect("proxy request")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.header("x-upstream").unwrap_or("").to_string()
}

#[actix_rt::test]
async fn a_killed_target_is_ejected_retried_around_and_used_again_after_eject_ms() {
    let c = Cluster::bootstrap(1).await;
    let (a, b, dead) = (
        Upstream::start("a"),
        Upstream::start("b"),
        Upstream::start("c"),
    );
    put(
        &c,
        "/services/svc",
        json!({"targets": urls(&[&a, &b, &dead]), "retries": 1,
               "passive": {"max_failures": 2, "eject_ms": 3000}}),
    )
    .await;
    put(&c, "/routes/svc", json!({"service": "svc", "paths": ["/"]})).await;

    // One client, one request at a time, for the whole test.
    let seen: Rc<RefCell<Vec<(u16, String)>>> = Rc::default();
    let running = Rc::new(std::cell::Cell::new(true));
    let client = {
        let (seen, running, http) = (seen.clone(), running.clone(), c.client.clone());
        let url = c.proxy_url(0, "/load");
        actix_rt::spawn(async move {
            while running.get() {
                let r = into_reply(http.get(&url).send().await.expect("proxy request")).await;
                let upstream = r.header("x-upstream").unwrap_or("").to_string();
                seen.borrow_mut().push((r.status, upstream));
            }
        })
    };
    let served_by = |name: &'static str| {
        let seen = seen.clone();
        move || {
            let hit = seen.borrow().iter().any(|(_, u)| u == name);
            async move { hit.then_some(()) }
        }
    };
    for name in ["a", "b", "c"] {
        eventually("every target to serve", served_by(name)).await;
    }

    let rt = runtime(&c, "svc");
    let killed = dead.addr;
    dead.stop().await;
    let failures = eventually("the killed target to be ejected", || async {
        let t = rt.target(2);
        (t.ejections_total() >= 1).then(|| t.failures_total())
    })
    .await;
    assert_eq!(failures, 2, "ejected after max_failures failed attempts");
    assert!(rt.target(2).is_ejected(now_ms()));

    // It comes back where it was; once eject_ms is over it is tried, and serves again.
    let back = Upstream::start_on("c-again", killed).await;
    eventually("the returned target to serve again", served_by("c-again")).await;
    assert!(!rt.target(2).is_ejected(now_ms()));

    running.set(false);
    client.await.unwrap();
    let seen = seen.take();
    let failed: Vec<_> = seen.iter().filter(|(s, _)| *s != 200).collect();
    assert!(failed.is_empty(), "requests failed: {failed:?}");
    assert!(seen.len() > 20, "the client kept going: {}", seen.len());
    for u in [a, b, back] {
        u.stop().await;
    }
    c.shutdown().await;
}

#[actix_rt::test]
async fn an_active_check_marks_a_target_down_and_back_up() {
    let c = Cluster::bootstrap(1).await;
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    put(
        &c,
        "/services/svc",
        json!({"targets": urls(&[&a, &b]),
               "health_check": {"path": "/health", "interval_ms": 300, "timeout_ms": 250,
                                "healthy_threshold": 2, "unhealthy_threshold": 2}}),
    )
    .await;
    put(&c, "/routes/svc", json!({"service": "svc", "paths": ["/"]})).await;
    let rt = runtime(&c, "svc");
    eventually("probes to reach the upstream", || async {
        (a.health.hits("/health") >= 2).then_some(())
    })
    .await;
    assert!(rt.target(0).active_up());

    a.health.set_status(503);
    eventually("a failing check to mark the target down", || async {
        (!rt.target(0).active_up()).then_some(())
    })
    .await;
    for _ in 0..10 {
        assert_eq!(who(&c, "/x", &[]).await, "b");
    }

    a.health.set_status(200);
    eventually("a passing check to mark it up again", || async {
        rt.target(0).active_up().then_some(())
    })
    .await;
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(who(&c, "/x", &[]).await);
    }
    assert!(answers.iter().any(|u| u == "a"), "{answers:?}");
    assert!(rt.target(1).active_up());
    a.stop().await;
    b.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn all_targets_down_is_503_no_healthy_upstream() {
    let c = Cluster::bootstrap(1).await;
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    put(
        &c,
        "/services/checked",
        json!({"targets": urls(&[&a, &b]),
               "health_check": {"path": "/health", "interval_ms": 200, "timeout_ms": 150,
                                "healthy_threshold": 1, "unhealthy_threshold": 1}}),
    )
    .await;
    put(
        &c,
        "/routes/checked",
        json!({"service": "checked", "paths": ["/checked"]}),
    )
    .await;
    a.health.set_status(500);
    b.health.set_status(503);
    let r = eventually("every target to fail its check", || async {
        let r = c.get(0, "/checked").await;
        (r.status == 503).then_some(r)
    })
    .await;
    assert_eq!(r.error_code(), "no_healthy_upstream", "{}", r.text);
    assert!(r.body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert!(r.header("x-request-id").is_some());
    b.health.set_status(200);
    let r = eventually("a target to pass again", || async {
        let r = c.get(0, "/checked").await;
        (r.status == 200).then_some(r)
    })
    .await;
    assert_eq!(r.header("x-upstream"), Some("b"));

    // Passive: two dead targets, one failure ejects. The first request fails on both (502),
    // the next finds none left (503).
    let dead: Vec<Value> = (0..2)
        .map(|_| {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            json!({"url": format!("http://{}", port.local_addr().unwrap())})
        })
        .collect();
    put(
        &c,
        "/services/dead",
        json!({"targets": dead, "retries": 1, "passive": {"max_failures": 1, "eject_ms": 60000}}),
    )
    .await;
    put(
        &c,
        "/routes/dead",
        json!({"service": "dead", "paths": ["/dead"]}),
    )
    .await;
    let r = c.get(0, "/dead").await;
    assert_eq!(
        (r.status, r.error_code()),
        (502, "bad_gateway"),
        "{}",
        r.text
    );
    let r = c.get(0, "/dead").await;
    assert_eq!(
        (r.status, r.error_code()),
        (503, "no_healthy_upstream"),
        "{}",
        r.text
    );
    a.stop().await;
    b.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn deleting_a_service_stops_its_checker_and_changing_it_restarts_it() {
    let c = Cluster::bootstrap(1).await;
    let up = Upstream::start("u");
    let check = |path: &str| {
        json!({"path": path, "interval_ms": 100, "timeout_ms": 80,
               "healthy_threshold": 1, "unhealthy_threshold": 1})
    };
    let target = json!([{"url": format!("http://{}", up.addr)}]);
    put(
        &c,
        "/services/svc",
        json!({"targets": target, "health_check": check("/health/one")}),
    )
    .await;
    // A second checked service is the clock: its probes show time passing for the first.
    put(
        &c,
        "/services/clock",
        json!({"targets": target, "health_check": check("/health/clock")}),
    )
    .await;
    let balancer = &c.gateway(0).balancer;
    let health = up.health.clone();
    let ticks = |n: u64| {
        let health = health.clone();
        let start = health.hits("/health/clock");
        move || {
            let done = health.hits("/health/clock") >= start + n;
            async move { done.then_some(()) }
        }
    };
    eventually("the first probes", || async {
        (up.health.hits("/health/one") >= 2).then_some(())
    })
    .await;
    let before = balancer.checkers().await;
    assert_eq!(
        before
            .iter()
            .map(|i| i.service.as_str())
            .collect::<Vec<_>>(),
        ["clock", "svc"]
    );
    assert_eq!(balancer.running_checkers(), 2);

    // A change that does not touch the check keeps the checker.
    put(
        &c,
        "/services/svc",
        json!({"targets": target, "health_check": check("/health/one"), "retries": 2}),
    )
    .await;
    assert_eq!(balancer.checkers().await, before);

    // A new path restarts it with the new config; the old one stops probing.
    put(
        &c,
        "/services/svc",
        json!({"targets": target, "health_check": check("/health/two")}),
    )
    .await;
    let after = balancer.checkers().await;
    assert_eq!(after[1].config.path, "/health/two");
    assert_ne!(after[1].generation, before[1].generation);
    eventually("the old checker's task to end", || async {
        (balancer.running_checkers() == 2).then_some(())
    })
    .await;
    let one = up.health.hits("/health/one");
    eventually("probes on the new path", || async {
        (up.health.hits("/health/two") >= 2).then_some(())
    })
    .await;
    eventually("three more rounds", ticks(3)).await;
    // One probe may have been on the wire when the checker was replaced.
    assert!(up.health.hits("/health/one") <= one + 1);

    // Deleting the service ends its checker.
    assert_eq!(
        c.admin(0, "DELETE", "/services/svc", None).await.status,
        204
    );
    let left = balancer.checkers().await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].service, "clock");
    eventually("the deleted service's task to end", || async {
        (balancer.running_checkers() == 1).then_some(())
    })
    .await;
    let two = up.health.hits("/health/two");
    eventually("three more rounds", ticks(3)).await;
    assert!(up.health.hits("/health/two") <= two + 1);

    // Removing the check from a service ends it too.
    put(&c, "/services/clock", json!({"targets": target})).await;
    assert!(balancer.checkers().await.is_empty());
    eventually("no checker task left", || async {
        (balancer.running_checkers() == 0).then_some(())
    })
    .await;
    up.stop().await;
    c.shutdown().await;
}

#[actix_rt::test]
async fn least_conn_avoids_the_busy_target_and_consistent_hash_sticks() {
    let c = Cluster::bootstrap(1).await;
    let (a, b, d) = (
        Upstream::start("a"),
        Upstream::start("b"),
        Upstream::start("d"),
    );
    put(
        &c,
        "/services/lc",
        json!({"targets": urls(&[&a, &b]), "balancer": "least_conn"}),
    )
    .await;
    put(
        &c,
        "/routes/lc",
        json!({"service": "lc", "paths": ["/lc"], "strip_path": true}),
    )
    .await;
    // A slow request keeps one target busy; every quick one goes to the other.
    let slow = c.client.get(c.proxy_url(0, "/lc/slow?ms=3000")).send();
    let slow = actix_rt::spawn(async move { into_reply(slow.await.unwrap()).await });
    let busy = eventually("the slow request to be upstream", || async {
        if a.slow_inflight.load(std::sync::atomic::Ordering::SeqCst) == 1 {
            Some("a")
        } else if b.slow_inflight.load(std::sync::atomic::Ordering::SeqCst) == 1 {
            Some("b")
        } else {
            None
        }
    })
    .await;
    for _ in 0..10 {
        assert_ne!(who(&c, "/lc/x", &[]).await, busy);
    }
    assert_eq!(slow.await.unwrap().status, 200);

    put(
        &c,
        "/services/ch",
        json!({"targets": urls(&[&a, &b, &d]), "balancer": "consistent_hash",
               "hash_on": "header:x-user"}),
    )
    .await;
    put(&c, "/routes/ch", json!({"service": "ch", "paths": ["/ch"]})).await;
    let mut owners = std::collections::BTreeSet::new();
    for user in 0..30 {
        let user = format!("user-{user}");
        let first = who(&c, "/ch/x", &[("x-user", &user)]).await;
        for _ in 0..3 {
            assert_eq!(
                who(&c, "/ch/x", &[("x-user", &user)]).await,
                first,
                "{user}"
            );
        }
        owners.insert(first);
    }
    assert_eq!(
        owners.len(),
        3,
        "30 users spread over the 3 targets: {owners:?}"
    );
    // Without the header, the client IP is the key: one client, one target.
    let first = who(&c, "/ch/x", &[]).await;
    for _ in 0..5 {
        assert_eq!(who(&c, "/ch/x", &[]).await, first);
    }
    for u in [a, b, d] {
        u.stop().await;
    }
    c.shutdown().await;
}
