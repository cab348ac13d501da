//! Graceful shutdown under load, against three real `raftgate serve` processes on loopback:
//! clients keep requests in flight through one node (a slow upstream holds them), the node
//! gets SIGTERM, and the run reports the time from SIGTERM to exit, the requests that were in
//! flight at SIGTERM and how many of them failed (the target is 0), what happened to requests
//! sent after it (refused: the listener is closed), and how soon the two others agreed on a
//! new leader when the stopped node led.
//!
//! ```text
//! cargo build --release && cargo run --release --example drain_bench
//! cargo run --release --example drain_bench -- --target follower --clients 64 --slow-ms 2000
//! ```
//! `RAFTGATE_BIN` picks the binary (default: target/release/raftgate). Each node's log goes to
//! `node{i}.log` in a temporary directory, kept with `--keep`.

use std::cell::RefCell;
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::Value;

#[path = "support/nodes.rs"]
mod nodes;
use nodes::{start_cluster, Node, TOKEN};

struct Args {
    target: String,
    clients: usize,
    slow_ms: u64,
    drain_ms: u64,
    keep: bool,
}

fn args() -> Args {
    let mut a = Args {
        target: "leader".into(),
        clients: 32,
        slow_ms: 1000,
        drain_ms: 10_000,
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().expect("a value after the flag");
        match flag.as_str() {
            "--target" => a.target = value(),
            "--clients" => a.clients = value().parse().expect("--clients N"),
            "--slow-ms" => a.slow_ms = value().parse().expect("--slow-ms N"),
            "--drain-ms" => a.drain_ms = value().parse().expect("--drain-ms N"),
            "--keep" => a.keep = true,
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(a.target == "leader" || a.target == "follower");
    a
}

async fn cluster_status(client: &awc::Client, node: &Node) -> Option<Value> {
    let mut r = client
        .get(format!("{}/cluster", node.admin))
        .insert_header(("authorization", format!("Bearer {TOKEN}")))
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .ok()?;
    r.json::<Value>().await.ok()
}

/// The leader id all of `nodes` agree on.
async fn agreed_leader(client: &awc::Client, nodes: &[&Node]) -> Option<u64> {
    let mut seen = None;
    for n in nodes {
        let l = cluster_status(client, n).await?["leader_id"].as_u64()?;
        if seen.is_some_and(|s| s != l) {
            return None;
        }
        seen = Some(l);
    }
    seen
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

/// One proxied request: when it was sent, how long it took, and how it ended.
struct Outcome {
    sent: Instant,
    done: Instant,
    ok: bool,
    error: Option<String>,
}

fn main() {
    let a = args();
    actix_rt::System::new().block_on(run(a));
}

async fn run(a: Args) {
    let dir = tempfile::tempdir().unwrap();
    // The upstream: `/slow?ms=N` sleeps N ms.
    let upstream = HttpServer::new(|| {
        App::new().route(
            "/slow",
            web::get().to(
                |q: web::Query<std::collections::HashMap<String, String>>| async move {
                    let ms = q.get("ms").and_then(|v| v.parse().ok()).unwrap_or(0);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    HttpResponse::Ok().body("slow done")
                },
            ),
        )
    })
    .workers(2)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let up_addr = upstream.addrs()[0];
    let upstream = upstream.run();
    let up_handle = upstream.handle();
    actix_rt::spawn(upstream);

    let logs = dir.path().to_path_buf();
    let mut nodes = start_cluster(
        dir.path(),
        3,
        &format!("[limits]\ndrain_timeout_ms = {}\n", a.drain_ms),
        "info,openraft=warn",
        |i| {
            std::fs::File::create(logs.join(format!("node{}.log", i + 1)))
                .unwrap()
                .into()
        },
    );
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(60))
        .finish();
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        let all: Vec<&Node> = nodes.iter().collect();
        if let Some(l) = agreed_leader(&client, &all).await {
            break l as usize - 1;
        }
        assert!(Instant::now() < deadline, "no leader within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    admin_put(
        &client,
        format!("{}/services/slow", nodes[0].admin),
        format!("{{\"targets\":[{{\"url\":\"http://{up_addr}\"}}]}}"),
    )
    .await
    .expect("service");
    admin_put(
        &client,
        format!("{}/routes/slow", nodes[0].admin),
        "{\"service\":\"slow\",\"paths\":[\"/slow\"]}".into(),
    )
    .await
    .expect("route");
    let target = if a.target == "leader" {
        leader
    } else {
        (leader + 1) % 3
    };
    let url = format!("{}/slow", nodes[target].proxy);
    loop {
        if matches!(client.get(format!("{url}?ms=0")).send().await, Ok(r) if r.status() == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Load: each client loops over one keep-alive connection; half ask for slow answers.
    let outcomes: Rc<RefCell<Vec<Outcome>>> = Rc::default();
    let stop_load = Rc::new(std::cell::Cell::new(false));
    let mut tasks = Vec::new();
    for c in 0..a.clients {
        let (outcomes, stop_load, url) = (outcomes.clone(), stop_load.clone(), url.clone());
        let ms = if c % 2 == 0 { a.slow_ms } else { 5 };
        tasks.push(actix_rt::spawn(async move {
            let http = awc::Client::builder()
                .timeout(Duration::from_secs(60))
                .finish();
            while !stop_load.get() {
                let sent = Instant::now();
                let res = http.get(format!("{url}?ms={ms}")).send().await;
                let (ok, error) = match res {
                    Ok(mut r) => {
                        let status = r.status().as_u16();
                        match r.body().await {
                            Ok(_) if status == 200 => (true, None),
                            Ok(_) => (false, Some(format!("status {status}"))),
                            Err(e) => (false, Some(format!("body: {e}"))),
                        }
                    }
                    Err(e) => (false, Some(e.to_string())),
                };
                let failed = !ok;
                outcomes.borrow_mut().push(Outcome {
                    sent,
                    done: Instant::now(),
                    ok,
                    error,
                });
                if failed {
                    // The node is going away: a real client would try another one.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(a.slow_ms + 500)).await;

    // SIGTERM, by PID.
    let pid = nodes[target].child.id();
    let sigterm = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM {pid}");
    let mut ready_503_after = None;
    let exited = loop {
        if let Some(s) = nodes[target].child.try_wait().unwrap() {
            break (Instant::now(), s);
        }
        if ready_503_after.is_none() {
            if let Ok(r) = client
                .get(format!("{}/readyz", nodes[target].admin))
                .timeout(Duration::from_millis(500))
                .send()
                .await
            {
                if r.status() == 503 {
                    ready_503_after = Some(sigterm.elapsed());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let to_exit = exited.0 - sigterm;

    // A new leader among the two others, and a write through them.
    let others: Vec<&Node> = (0..3).filter(|i| *i != target).map(|i| &nodes[i]).collect();
    let new_leader = loop {
        if let Some(l) = agreed_leader(&client, &others).await {
            if l as usize - 1 != target {
                break (l, sigterm.elapsed());
            }
        }
        assert!(
            sigterm.elapsed() < Duration::from_secs(30),
            "no new leader within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let write = admin_put(
        &client,
        format!("{}/services/after", others[0].admin),
        "{\"targets\":[{\"url\":\"http://127.0.0.1:9\"}]}".into(),
    )
    .await;
    stop_load.set(true);
    for t in tasks {
        let _ = t.await;
    }

    let outcomes = std::mem::take(&mut *outcomes.borrow_mut());
    let in_flight: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.sent < sigterm && o.done >= sigterm)
        .collect();
    let failed_in_flight: Vec<&Outcome> = in_flight.iter().copied().filter(|o| !o.ok).collect();
    let after: Vec<&Outcome> = outcomes.iter().filter(|o| o.sent >= sigterm).collect();
    let after_ok = after.iter().filter(|o| o.ok).count();
    let before_failed = outcomes
        .iter()
        .filter(|o| o.done < sigterm && !o.ok)
        .count();
    let last_ok = in_flight.iter().map(|o| o.done).max().map(|d| d - sigterm);

    println!(
        "drain: SIGTERM to the {} (node {}) under {} clients (half of them {} ms slow)",
        a.target,
        target + 1,
        a.clients,
        a.slow_ms
    );
    println!(
        "  time from SIGTERM to exit:             {:.0} ms (exit status {})",
        to_exit.as_secs_f64() * 1000.0,
        exited.1
    );
    println!(
        "  /readyz 503 after:                     {}",
        ready_503_after
            .map(|d| format!("{:.1} ms", d.as_secs_f64() * 1000.0))
            .unwrap_or("not seen".into())
    );
    println!(
        "  in flight at SIGTERM:                  {} (failed: {}), the last answered {:.0} ms after SIGTERM",
        in_flight.len(),
        failed_in_flight.len(),
        last_ok.unwrap_or_default().as_secs_f64() * 1000.0
    );
    for o in failed_in_flight.iter().take(5) {
        println!("    failed: {:?}", o.error);
    }
    println!(
        "  sent after SIGTERM:                    {} ({} answered, the rest refused: the listener is closed)",
        after.len(),
        after_ok
    );
    println!("  failed before SIGTERM:                 {before_failed}");
    println!(
        "  new leader agreed by the two others:   node {} at {:.0} ms after SIGTERM{}",
        new_leader.0,
        new_leader.1.as_secs_f64() * 1000.0,
        if target == leader {
            ""
        } else {
            " (unchanged: a follower was stopped)"
        }
    );
    println!("  write through a survivor afterwards:   {write:?}");
    let log = std::fs::read_to_string(dir.path().join(format!("node{}.log", target + 1)))
        .unwrap_or_default();
    for line in log.lines().filter(|l| {
        l.contains("handed leadership")
            || l.contains("stopped gracefully")
            || l.contains("hand-over")
    }) {
        println!("  node log: {line}");
    }

    for n in nodes.iter_mut() {
        let _ = n.child.kill();
        let _ = n.child.wait();
    }
    up_handle.stop(false).await;
    if a.keep {
        println!("  logs and data kept in {}", dir.keep().display());
    }
}
