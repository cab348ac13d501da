//! Balancer latency benchmark: one raftgate node in this process on loopback, three upstreams
//! of which one answers `--slow-ms` late, and the client-side latency through the gateway for
//! each balancer (`round_robin` against `p2c_ewma` by default).
//!
//! ```text
//! cargo run --release --example p2c_bench
//! cargo run --release --example p2c_bench -- --requests 20000 --concurrency 32 --slow-ms 50
//! cargo run --release --example p2c_bench -- --balancers round_robin,least_conn,p2c_ewma
//! ```
//! Each balancer gets a fresh service (no latency learnt beforehand), a short unmeasured
//! warm-up, then `--requests` requests from `--concurrency` sequential clients.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use raftgate::config::{Config, Listen};
use raftgate::Listeners;
use serde_json::json;

const TOKEN: &str = "bench-token";

struct Args {
    requests: usize,
    concurrency: usize,
    slow_ms: u64,
    warmup: usize,
    balancers: Vec<String>,
}

fn args() -> Args {
    let mut a = Args {
        requests: 5000,
        concurrency: 16,
        slow_ms: 50,
        warmup: 200,
        balancers: vec!["round_robin".into(), "p2c_ewma".into()],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--" {
            continue;
        }
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--requests" => a.requests = value.parse().expect("--requests N"),
            "--concurrency" => a.concurrency = value.parse().expect("--concurrency N"),
            "--slow-ms" => a.slow_ms = value.parse().expect("--slow-ms MS"),
            "--warmup" => a.warmup = value.parse().expect("--warmup N"),
            "--balancers" => a.balancers = value.split(',').map(str::to_string).collect(),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn bind0() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0")
}

/// An upstream answering `ok` after `delay`, tagged with its name.
fn upstream(name: &'static str, delay: Duration) -> std::net::SocketAddr {
    let listener = bind0();
    let addr = listener.local_addr().unwrap();
    let server = HttpServer::new(move || {
        App::new().default_service(web::to(move || async move {
            if !delay.is_zero() {
                actix_rt::time::sleep(delay).await;
            }
            HttpResponse::Ok()
                .insert_header(("x-upstream", name))
                .body("ok")
        }))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    actix_rt::spawn(server);
    addr
}

struct Run {
    latencies_us: Vec<u64>,
    slow_hits: usize,
    errors: usize,
    took: Duration,
}

/// `total` requests from `concurrency` clients, each sending one at a time.
async fn load(url: &str, total: usize, concurrency: usize) -> Run {
    let issued = Rc::new(Cell::new(0usize));
    let latencies = Rc::new(RefCell::new(Vec::with_capacity(total)));
    let (slow_hits, errors) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (issued, latencies) = (issued.clone(), latencies.clone());
            let (slow_hits, errors) = (slow_hits.clone(), errors.clone());
            let url = url.to_string();
            let client = awc::Client::builder()
                .timeout(Duration::from_secs(30))
                .finish();
            actix_rt::spawn(async move {
                while issued.get() < total {
                    issued.set(issued.get() + 1);
                    let t = Instant::now();
                    match client.get(&url).send().await {
                        Ok(mut resp) => {
                            let ok = resp.status().is_success() && resp.body().await.is_ok();
                            latencies.borrow_mut().push(t.elapsed().as_micros() as u64);
                            if !ok {
                                errors.set(errors.get() + 1);
                            }
                            if resp
                                .headers()
                                .get("x-upstream")
                                .is_some_and(|v| v == "slow")
                            {
                                slow_hits.set(slow_hits.get() + 1);
                            }
                        }
                        Err(_) => errors.set(errors.get() + 1),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();
    let mut latencies_us = latencies.take();
    latencies_us.sort_unstable();
    Run {
        latencies_us,
        slow_hits: slow_hits.get(),
        errors: errors.get(),
        took,
    }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

fn main() {
    let args = args();
    actix_rt::System::new().block_on(async move {
        let dir = tempfile::tempdir().expect("temp dir");
        let listeners = Listeners {
            proxy: bind0(),
            admin: bind0(),
            cluster: bind0(),
            proxy_tls: None,
        };
        let listen = Listen {
            proxy: listeners.proxy.local_addr().unwrap(),
            admin: listeners.admin.local_addr().unwrap(),
            cluster: listeners.cluster.local_addr().unwrap(),
            proxy_tls: None,
        };
        let mut config = Config::new(1, dir.path().join("node1"), listen.clone());
        config.admin_token = Some(TOKEN.into());
        config.workers = 1;
        let gateway = raftgate::start(config, listeners).await.expect("node starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while gateway.node.leader() != Some(1) {
            assert!(Instant::now() < deadline, "no leader");
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }

        let slow = Duration::from_millis(args.slow_ms);
        let targets = [
            upstream("fast-1", Duration::ZERO),
            upstream("slow", slow),
            upstream("fast-2", Duration::ZERO),
        ];
        let admin = awc::Client::default();
        println!(
            "p2c_bench: 1 node (1 proxy worker), 3 upstreams (one +{} ms), {} requests, {} clients, {} warm-up",
            args.slow_ms, args.requests, args.concurrency, args.warmup
        );
        println!(
            "{:<16} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>7}",
            "balancer", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "mean ms", "to slow", "req/s"
        );
        for balancer in &args.balancers {
            let service = json!({
                "targets": targets.iter().map(|t| json!({"url": format!("http://{t}")})).collect::<Vec<_>>(),
                "balancer": balancer,
            });
            let route = json!({"service": balancer, "paths": [format!("/{balancer}")], "strip_path": true});
            for (path, body) in [
                (format!("/services/{balancer}"), service),
                (format!("/routes/{balancer}"), route),
            ] {
                let resp = admin
                    .put(format!("http://{}{path}", listen.admin))
                    .insert_header(("authorization", format!("Bearer {TOKEN}")))
                    .send_json(&body)
                    .await
                    .expect("admin request");
                assert!(resp.status().is_success(), "{path}: {}", resp.status());
            }
            let url = format!("http://{}/{balancer}/x", listen.proxy);
            load(&url, args.warmup, args.concurrency).await;
            let run = load(&url, args.requests, args.concurrency).await;
            let l = &run.latencies_us;
            let mean = l.iter().sum::<u64>() as f64 / l.len().max(1) as f64 / 1000.0;
            println!(
                "{:<16} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}% {:>7.0}{}",
                balancer,
                pct(l, 0.50),
                pct(l, 0.90),
                pct(l, 0.99),
                pct(l, 0.999),
                pct(l, 1.0),
                mean,
                100.0 * run.slow_hits as f64 / l.len().max(1) as f64,
                l.len() as f64 / run.took.as_secs_f64(),
                if run.errors > 0 {
                    format!("  ({} errors)", run.errors)
                } else {
                    String::new()
                },
            );
        }
        gateway.kill().await;
    });
}
