//! Cluster benchmarks against three real `raftgate serve` processes on loopback:
//!
//! - `propagation`: acknowledged write → the route is served by all three proxies (p50/p99);
//! - `writes`: admin writes per second with fsync, from concurrent clients spread over the nodes;
//! - `revocation`: an API key revoked through one node → refused (401) by all three proxies;
//! - `leases`: quota lease Raft writes per second under load spread over many consumers;
//! - `memory`: resident memory of one node holding `--keys` API keys (created through the
//!   admin API, 64 at a time).
//!
//! ```text
//! cargo build --release && cargo run --release --example cluster_bench -- all
//! cargo run --release --example cluster_bench -- propagation --writes 300
//! cargo run --release --example cluster_bench -- writes --clients 64 --seconds 5
//! cargo run --release --example cluster_bench -- revocation --keys 200
//! cargo run --release --example cluster_bench -- leases --consumers 1000 --rate 10000 --seconds 10
//! cargo run --release --example cluster_bench -- memory --keys 1000000
//! ```
//! `RAFTGATE_BIN` picks the binary (default: target/release/raftgate).

use std::cell::RefCell;
use std::process::Stdio;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};

#[path = "support/nodes.rs"]
mod nodes;
use nodes::{arg, start_cluster, Node, TOKEN};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn admin_put(client: &awc::Client, url: String, body: String) -> Result<(), String> {
    let resp = client
        .put(url)
        .insert_header(("authorization", format!("Bearer {TOKEN}")))
        .insert_header(("content-type", "application/json"))
        .send_body(body)
        .await
        .map_err(|e| e.to_string())?;
    match resp.status().as_u16() {
        200 | 201 => Ok(()),
        s => Err(format!("status {s}")),
    }
}

async fn wait_ready(client: &awc::Client, nodes: &[Node]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut ok = 0;
        for n in nodes {
            let url = format!("{}/cluster", n.admin);
            if let Ok(mut r) = client
                .get(url)
                .insert_header(("authorization", format!("Bearer {TOKEN}")))
                .send()
                .await
            {
                if let Ok(v) = r.json::<serde_json::Value>().await {
                    ok += v["leader_id"].is_u64() as usize;
                }
            }
        }
        if ok == nodes.len() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster did not elect a leader within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn propagation(client: &awc::Client, nodes: &[Node], writes: usize) {
    let mut acked = Vec::new();
    let mut served = Vec::new();
    for i in 0..writes {
        let via = &nodes[i % nodes.len()];
        let start = Instant::now();
        admin_put(
            client,
            format!("{}/routes/p{i}", via.admin),
            format!("{{\"service\":\"bench\",\"paths\":[\"/p{i}\"]}}"),
        )
        .await
        .expect("route write");
        let ack = Instant::now();
        until_all(client, nodes, &format!("/p{i}"), None, 200).await;
        acked.push(ack - start);
        served.push(ack.elapsed());
    }
    acked.sort();
    served.sort();
    println!("propagation over {writes} route writes (round-robin over 3 nodes):");
    println!(
        "  write acknowledged:             p50 {}  p99 {}",
        ms(percentile(&acked, 0.5)),
        ms(percentile(&acked, 0.99))
    );
    println!(
        "  acknowledged -> served by all 3: p50 {}  p99 {}  max {}",
        ms(percentile(&served, 0.5)),
        ms(percentile(&served, 0.99)),
        ms(*served.last().unwrap())
    );
}

/// Polls every proxy until `path` (with an `apikey` header when given) answers `status`.
async fn until_all(
    client: &awc::Client,
    nodes: &[Node],
    path: &str,
    key: Option<&str>,
    status: u16,
) {
    for n in nodes {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut req = client.get(format!("{}{path}", n.proxy));
            if let Some(k) = key {
                req = req.insert_header(("apikey", k));
            }
            if matches!(req.send().await, Ok(r) if r.status().as_u16() == status) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{path} never answered {status} on {}",
                n.proxy
            );
        }
    }
}

async fn admin_call(client: &awc::Client, method: &str, url: String) -> serde_json::Value {
    let mut resp = client
        .request(method.parse().unwrap(), url)
        .insert_header(("authorization", format!("Bearer {TOKEN}")))
        .send()
        .await
        .expect("admin call");
    assert!(resp.status().is_success(), "{method}: {}", resp.status());
    resp.json().await.unwrap_or(serde_json::Value::Null)
}

async fn revocation(client: &awc::Client, nodes: &[Node], keys: usize) {
    let admin = &nodes[0].admin;
    admin_put(
        client,
        format!("{admin}/routes/keyed"),
        r#"{"service":"bench","paths":["/keyed"],"auth":"api_key"}"#.into(),
    )
    .await
    .expect("keyed route");
    admin_put(client, format!("{admin}/consumers/bench"), "{}".into())
        .await
        .expect("consumer");
    let mut refused = Vec::new();
    for i in 0..keys {
        let created = admin_call(
            client,
            "POST",
            format!("{}/consumers/bench/keys", nodes[i % nodes.len()].admin),
        )
        .await;
        let (id, key) = (
            created["id"].as_str().unwrap().to_string(),
            created["key"].as_str().unwrap().to_string(),
        );
        until_all(client, nodes, "/keyed", Some(&key), 200).await;
        let via = &nodes[(i + 1) % nodes.len()].admin;
        admin_call(client, "DELETE", format!("{via}/consumers/bench/keys/{id}")).await;
        let ack = Instant::now();
        until_all(client, nodes, "/keyed", Some(&key), 401).await;
        refused.push(ack.elapsed());
    }
    refused.sort();
    println!("revocation over {keys} keys (revoked round-robin over 3 nodes):");
    println!(
        "  revoke acknowledged -> refused by all 3: p50 {}  p99 {}  max {}",
        ms(percentile(&refused, 0.5)),
        ms(percentile(&refused, 0.99)),
        ms(*refused.last().unwrap())
    );
}

async fn applied_index(client: &awc::Client, node: &Node) -> u64 {
    admin_call(client, "GET", format!("{}/cluster", node.admin)).await["applied_index"]
        .as_u64()
        .expect("applied_index in GET /cluster")
}

/// Quota traffic from `consumers` consumers at up to `rate` requests/s over the three proxies;
/// every Raft entry applied meanwhile is a lease write (nothing else writes).
async fn leases(client: &awc::Client, nodes: &[Node], consumers: usize, rate: u64, seconds: u64) {
    let admin = nodes[0].admin.clone();
    admin_put(
        client,
        format!("{admin}/routes/quoted"),
        r#"{"service":"bench","paths":["/quoted"],"auth":"api_key","quota":{"requests":100000000,"per":"day"}}"#.into(),
    )
    .await
    .expect("quoted route");
    let keys: Vec<String> = (0..consumers)
        .map(|i| format!("lease-bench-key-{i:06}"))
        .collect();
    let setup = (0..32).map(|t| {
        let (client, admin, keys) = (client.clone(), admin.clone(), keys.clone());
        async move {
            for i in (t..keys.len()).step_by(32) {
                admin_put(&client, format!("{admin}/consumers/c{i}"), "{}".into())
                    .await
                    .expect("consumer");
                let resp = client
                    .post(format!("{admin}/consumers/c{i}/keys"))
                    .insert_header(("authorization", format!("Bearer {TOKEN}")))
                    .send_body(format!("{{\"key\":\"{}\"}}", keys[i]))
                    .await
                    .expect("key");
                assert_eq!(resp.status().as_u16(), 201);
            }
        }
    });
    futures_util::future::join_all(setup).await;
    for k in [&keys[0], &keys[consumers - 1]] {
        until_all(client, nodes, "/quoted", Some(k), 200).await;
    }

    let tasks = 64usize;
    let counts = Rc::new(RefCell::new((0u64, 0u64, 0u64)));
    let run = |duration: Duration, counts: Rc<RefCell<(u64, u64, u64)>>| {
        let per_task = Duration::from_secs_f64(tasks as f64 / rate as f64);
        let deadline = Instant::now() + duration;
        let jobs = (0..tasks).map(|t| {
            let (client, keys, counts) = (client.clone(), keys.clone(), counts.clone());
            let proxies: Vec<String> = nodes.iter().map(|n| n.proxy.clone()).collect();
            async move {
                let mut next = Instant::now();
                let mut n = t;
                while Instant::now() < deadline {
                    let url = format!("{}/quoted", proxies[n % proxies.len()]);
                    let key = &keys[(n * 7919) % keys.len()];
                    let status = client
                        .get(url)
                        .insert_header(("apikey", key.as_str()))
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0);
                    {
                        let mut c = counts.borrow_mut();
                        match status {
                            200 => c.0 += 1,
                            429 => c.1 += 1,
                            _ => c.2 += 1,
                        }
                    }
                    n += tasks;
                    next += per_task;
                    let now = Instant::now();
                    if next > now {
                        tokio::time::sleep(next - now).await;
                    } else {
                        next = now;
                    }
                }
            }
        });
        futures_util::future::join_all(jobs)
    };
    run(Duration::from_secs(2), Rc::new(RefCell::new((0, 0, 0)))).await;
    let before = applied_index(client, &nodes[0]).await;
    let started = Instant::now();
    run(Duration::from_secs(seconds), counts.clone()).await;
    let elapsed = started.elapsed().as_secs_f64();
    let after = applied_index(client, &nodes[0]).await;
    let (ok, limited, failed) = *counts.borrow();
    let writes = after - before;
    println!(
        "quota leases, {consumers} consumers, target {rate} req/s over 3 nodes for {seconds} s:"
    );
    println!(
        "  achieved {:.0} req/s ({ok} admitted, {limited} refused 429, {failed} other)",
        (ok + limited + failed) as f64 / elapsed
    );
    println!(
        "  lease Raft writes: {writes} = {:.1} writes/s, {:.0} requests per write",
        writes as f64 / elapsed,
        (ok + limited) as f64 / writes.max(1) as f64
    );
}

fn rss_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// One node's resident memory as it fills with API keys over 100 consumers.
async fn memory(client: &awc::Client, node: &Node, keys: usize) {
    let pid = node.child.id();
    let admin = node.admin.clone();
    for c in 0..100 {
        admin_put(client, format!("{admin}/consumers/m{c}"), "{}".into())
            .await
            .expect("consumer");
    }
    let idle = rss_mib(pid, "VmRSS:");
    let started = Instant::now();
    let created = Rc::new(RefCell::new(0usize));
    let jobs = (0..64).map(|t| {
        let (client, admin, created) = (client.clone(), admin.clone(), created.clone());
        async move {
            for i in (t..keys).step_by(64) {
                let mut resp = client
                    .post(format!("{admin}/consumers/m{}/keys", i % 100))
                    .insert_header(("authorization", format!("Bearer {TOKEN}")))
                    .send()
                    .await
                    .expect("key");
                assert_eq!(resp.status().as_u16(), 201);
                let _ = resp.body().await;
                let mut n = created.borrow_mut();
                *n += 1;
                if *n % 100_000 == 0 {
                    println!(
                        "  {n} keys after {:.0} s: VmRSS {:.1} MiB",
                        started.elapsed().as_secs_f64(),
                        rss_mib(pid, "VmRSS:")
                    );
                }
            }
        }
    });
    futures_util::future::join_all(jobs).await;
    println!(
        "one node with {keys} API keys (created in {:.0} s): VmRSS {:.1} MiB (idle with none: {idle:.1} MiB), peak VmHWM {:.1} MiB",
        started.elapsed().as_secs_f64(),
        rss_mib(pid, "VmRSS:"),
        rss_mib(pid, "VmHWM:"),
    );
}

async fn writes(client: &awc::Client, nodes: &[Node], clients: usize, seconds: u64) {
    let latencies = Rc::new(RefCell::new(Vec::new()));
    let errors = Rc::new(RefCell::new(0usize));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let admin = nodes[c % nodes.len()].admin.clone();
        let (client, latencies, errors) = (client.clone(), latencies.clone(), errors.clone());
        tasks.push(actix_rt::spawn(async move {
            let mut n = 0;
            while Instant::now() < deadline && n < 1_000_000 {
                let t = Instant::now();
                let body = format!("{{\"targets\":[{{\"url\":\"http://127.0.0.1:9/{c}/{n}\"}}]}}");
                match admin_put(&client, format!("{admin}/services/w{c}"), body).await {
                    Ok(()) => latencies.borrow_mut().push(t.elapsed()),
                    Err(_) => *errors.borrow_mut() += 1,
                }
                n += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let mut l = latencies.borrow_mut();
    l.sort();
    println!(
        "admin writes with fsync: {clients} concurrent clients over 3 nodes for {seconds} s: {:.0} writes/s ({} ok, {} errors), latency p50 {} p99 {}",
        l.len() as f64 / elapsed.as_secs_f64(),
        l.len(),
        errors.borrow(),
        ms(percentile(&l, 0.5)),
        ms(percentile(&l, 0.99))
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args.first().cloned().unwrap_or_else(|| "all".into());
    let dir = tempfile::tempdir().unwrap();
    // `memory` measures one node; everything else runs three.
    let n = if what == "memory" { 1 } else { 3 };
    let mut nodes = start_cluster(dir.path(), n, "", "warn", |_| Stdio::inherit());
    actix_rt::System::new().block_on(async {
        let upstream = HttpServer::new(|| {
            App::new().default_service(web::to(|| async { HttpResponse::Ok().body("ok") }))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
        let upstream_addr = upstream.addrs()[0];
        let server = upstream.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(30))
            .finish();
        wait_ready(&client, &nodes).await;
        admin_put(
            &client,
            format!("{}/services/bench", nodes[0].admin),
            format!("{{\"targets\":[{{\"url\":\"http://{upstream_addr}\"}}]}}"),
        )
        .await
        .expect("bench service");
        if what == "all" || what == "propagation" {
            propagation(&client, &nodes, arg(&args, "--writes", 300)).await;
        }
        if what == "all" || what == "revocation" {
            revocation(&client, &nodes, arg(&args, "--keys", 200)).await;
        }
        if what == "memory" {
            memory(&client, &nodes[0], arg(&args, "--keys", 1_000_000)).await;
        }
        if what == "all" || what == "leases" {
            leases(
                &client,
                &nodes,
                arg(&args, "--consumers", 1000),
                arg(&args, "--rate", 10_000),
                arg(&args, "--seconds", 10),
            )
            .await;
        }
        if what == "all" || what == "writes" {
            writes(
                &client,
                &nodes,
                arg(&args, "--clients", 64),
                arg(&args, "--seconds", 5),
            )
            .await;
        }
        handle.stop(false).await;
    });
    for n in &mut nodes {
        let _ = n.child.kill();
        let _ = n.child.wait();
    }
}
