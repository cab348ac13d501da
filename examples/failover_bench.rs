//! Failover time: how long three real `raftgate serve` processes on loopback take to elect a new
//! leader after the leader is SIGKILLed, while a client keeps writing routes through the
//! followers (so the followers' logs are in flight when the leader dies, as in production).
//!
//! Each round finds the leader, kills it, polls the two survivors' `GET /cluster` every 5 ms
//! until one names another leader in a later term, then restarts the dead node and waits until
//! it follows the new leader. The nodes run raftgate's default timing (`heartbeat_ms` 100,
//! `election_timeout_ms` 250); `RAFTGATE_CLUSTER_ELECTION_TIMEOUT_MS` in the environment
//! overrides it for the nodes.
//!
//! ```text
//! cargo build --release && cargo run --release --example failover_bench -- --rounds 20
//! ```
//! `RAFTGATE_BIN` picks the binary (default: target/release/raftgate).

use std::cell::Cell;
use std::process::Stdio;
use std::rc::Rc;
use std::time::{Duration, Instant};

#[path = "support/nodes.rs"]
mod nodes;
use nodes::{arg, start_cluster, Node, TOKEN};

/// `GET /cluster` of one node: (leader, term), or None when it does not answer.
async fn leader_of(client: &awc::Client, node: &Node) -> Option<(Option<u64>, u64)> {
    let mut resp = client
        .get(format!("{}/cluster", node.admin))
        .insert_header(("authorization", format!("Bearer {TOKEN}")))
        .send()
        .await
        .ok()?;
    let v: serde_json::Value = resp.json().await.ok()?;
    Some((v["leader_id"].as_u64(), v["term"].as_u64()?))
}

/// Waits (up to 30 s) until every node in `alive` names the same leader; returns it and its term.
async fn agreed_leader(client: &awc::Client, nodes: &[Node], alive: &[usize]) -> (usize, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut seen = Vec::new();
        for i in alive {
            seen.push(leader_of(client, &nodes[*i]).await);
        }
        if let Some(Some((Some(l), term))) = seen.first().cloned() {
            if seen.iter().all(|s| *s == Some((Some(l), term))) {
                return (l as usize - 1, term);
            }
        }
        assert!(
            Instant::now() < deadline,
            "the nodes {alive:?} did not agree on a leader within 30 s: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the survivors until one names a leader other than `old` in a term after `term`.
async fn new_leader(client: &awc::Client, nodes: &[Node], old: usize, term: u64) -> Duration {
    let lost = Instant::now();
    loop {
        for (i, n) in nodes.iter().enumerate().filter(|(i, _)| *i != old) {
            if let Some((Some(l), t)) = leader_of(client, n).await {
                if l as usize - 1 != old && t > term {
                    return lost.elapsed();
                }
            }
            assert!(
                lost.elapsed() < Duration::from_secs(30),
                "no new leader within 30 s of killing node {} (asked node {})",
                old + 1,
                i + 1
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Writes routes through the followers until `stop`; returns how many were acknowledged.
async fn write_load(client: awc::Client, nodes: Rc<Vec<String>>, stop: Rc<Cell<bool>>) -> u64 {
    let mut acked = 0;
    let mut i = 0u64;
    while !stop.get() {
        i += 1;
        let admin = &nodes[i as usize % nodes.len()];
        let sent = client
            .put(format!("{admin}/routes/f{i}"))
            .insert_header(("authorization", format!("Bearer {TOKEN}")))
            .insert_header(("content-type", "application/json"))
            .timeout(Duration::from_secs(2))
            .send_body(format!("{{\"service\":\"none\",\"paths\":[\"/f{i}\"]}}"))
            .await;
        match sent {
            Ok(r) if r.status().is_success() => acked += 1,
            // A dead or leaderless node: try the next one a little later.
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    acked
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds: usize = arg(&args, "--rounds", 20);
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 3, "", "warn", |_| Stdio::null());
    actix_rt::System::new().block_on(async {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(2))
            .finish();
        let all = [0, 1, 2];
        // A route's service must exist: create it once, then the writers only add routes.
        let (l, _) = agreed_leader(&client, &nodes, &all).await;
        let resp = client
            .put(format!("{}/services/none", nodes[l].admin))
            .insert_header(("authorization", format!("Bearer {TOKEN}")))
            .insert_header(("content-type", "application/json"))
            .send_body(r#"{"targets":[{"url":"http://127.0.0.1:9"}]}"#)
            .await
            .expect("create the service");
        assert!(resp.status().is_success(), "service: {}", resp.status());

        let stop = Rc::new(Cell::new(false));
        let admins = Rc::new(nodes.iter().map(|n| n.admin.clone()).collect::<Vec<_>>());
        let writer = actix_rt::spawn(write_load(client.clone(), admins, stop.clone()));
        let mut took = Vec::new();
        for round in 0..rounds {
            let (old, term) = agreed_leader(&client, &nodes, &all).await;
            // Let the writes run a while under this leader.
            tokio::time::sleep(Duration::from_millis(300)).await;
            nodes[old].child.kill().expect("SIGKILL the leader");
            nodes[old].child.wait().expect("reap the leader");
            let t = new_leader(&client, &nodes, old, term).await;
            println!(
                "round {:>2}: killed leader {} (term {term}): new leader after {:.0} ms",
                round + 1,
                old + 1,
                t.as_secs_f64() * 1000.0
            );
            took.push(t);
            nodes[old].restart(Stdio::null());
        }
        agreed_leader(&client, &nodes, &all).await;
        stop.set(true);
        let acked = writer.await.unwrap_or(0);
        took.sort();
        let pct = |p: f64| took[((took.len() as f64 - 1.0) * p).round() as usize];
        println!(
            "failover after SIGKILL of the leader, {rounds} rounds, {acked} route writes acked \
             meanwhile: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            pct(0.5).as_secs_f64() * 1000.0,
            pct(0.99).as_secs_f64() * 1000.0,
            took.last().unwrap().as_secs_f64() * 1000.0
        );
    });
    for n in &mut nodes {
        let _ = n.child.kill();
        let _ = n.child.wait();
    }
}
