//! Resident memory of a node's credential state with many API keys (issue #4: one million
//! keys in at most 300 MB per node).
//!
//! Applies `--keys N` `CreateApiKey` commands (spread over `--consumers M`) through the same
//! pure `ClusterState::apply` every node runs, builds the auth supervisor's index on top,
//! keeps one older state alive as the state machine's watch channel does while an apply batch
//! is published, and reports resident memory (VmRSS, VmHWM) before and after, plus the
//! snapshot size and a lookup's cost.
//!
//! `cargo run --release --example keys_memory -- --keys 1000000`

use std::sync::Arc;
use std::time::Instant;

use raftgate::auth::AuthIndex;
use raftgate_cluster::identity::{generate_key, hash_key, ApiKey, Consumer};
use raftgate_cluster::{ClusterState, Command, Precondition};

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn main() {
    let keys = arg("--keys", 1_000_000);
    let consumers = arg("--consumers", 10_000).max(1);
    let base = status_kib("VmRSS:");
    let mut state = ClusterState::default();
    let mut index = 0u64;
    for c in 0..consumers {
        index += 1;
        let consumer = Consumer {
            name: format!("consumer-{c}"),
            version: 0,
            groups: vec!["gold".into()],
        };
        state
            .apply(
                index,
                &Command::PutConsumer {
                    consumer,
                    precondition: Precondition::None,
                },
            )
            .unwrap();
    }
    let started = Instant::now();
    let mut sample = Vec::new();
    let mut published = Arc::new(state.clone());
    for k in 0..keys {
        let (key, id) = generate_key();
        if k % (keys / 1000).max(1) == 0 {
            sample.push(key.clone());
        }
        index += 1;
        let cmd = Command::CreateApiKey {
            key: ApiKey {
                id,
                consumer: format!("consumer-{}", k % consumers),
                hash: hash_key(&key),
            },
        };
        state.apply(index, &cmd).unwrap();
        // What the state machine does per batch: publish, keeping the previous state alive
        // until readers drop it (here every 1000 entries).
        if k % 1000 == 999 {
            published = Arc::new(state.clone());
        }
    }
    let applied = started.elapsed();
    let published_state = Arc::new(state);
    drop(published);
    let auth = AuthIndex::build(published_state.clone(), &AuthIndex::default());
    let rss = status_kib("VmRSS:");
    let hwm = status_kib("VmHWM:");

    let lookups = Instant::now();
    let mut found = 0;
    for _ in 0..100 {
        for key in &sample {
            found += auth.api_key(key).is_some() as usize;
        }
    }
    let per_lookup = lookups.elapsed() / (100 * sample.len() as u32);
    assert_eq!(found, 100 * sample.len(), "every sampled key is found");

    let snapshot = postcard::to_stdvec(&*published_state).expect("serialises");
    println!("keys {keys} consumers {consumers}");
    println!(
        "applied in {:.1} s ({:.0} applies/s)",
        applied.as_secs_f64(),
        keys as f64 / applied.as_secs_f64()
    );
    println!(
        "resident: {:.1} MiB above the {:.1} MiB baseline (VmRSS {:.1} MiB, peak VmHWM {:.1} MiB)",
        (rss - base) as f64 / 1024.0,
        base as f64 / 1024.0,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!(
        "snapshot: {:.1} MiB; key lookup (SHA-256 + map): {} ns",
        snapshot.len() as f64 / (1 << 20) as f64,
        per_lookup.as_nanos()
    );
}
