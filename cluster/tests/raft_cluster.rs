//! Three Raft nodes in one process on port 0: bootstrap, forwarding, the secret handshake.

use std::time::{Duration, Instant};

use raftgate_cluster::spec::Service;
use raftgate_cluster::{ClusterNode, Command, NodeConfig, Precondition, WriteError};
use tokio::net::TcpListener;

fn service(name: &str) -> Service {
    Service::new(name, ["http://127.0.0.1:1"])
}

async fn start(n: u64, secrets: &[&str], dir: &std::path::Path) -> Vec<ClusterNode> {
    let mut listeners = Vec::new();
    for _ in 0..n {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let members: Vec<(u64, String)> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.local_addr().unwrap().to_string()))
        .collect();
    let mut nodes = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let cfg = NodeConfig {
            node_id: i as u64 + 1,
            data_dir: dir.join(format!("n{}", i + 1)),
            members: members.clone(),
            join: false,
            secret: secrets[i].as_bytes().to_vec(),
            heartbeat_ms: 50,
            election_timeout_ms: 300,
            snapshot_every: 1000,
            logs_to_keep: 100,
        };
        nodes.push(ClusterNode::start(cfg, l).await.unwrap());
    }
    nodes
}

async fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_via_follower_is_applied_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start(3, &["s", "s", "s"], dir.path()).await;
    let leader = poll("a leader", || nodes[0].leader()).await;
    let follower = nodes.iter().find(|n| n.id() != leader).unwrap();
    let ok = follower
        .write(Command::PutService {
            service: service("a"),
            precondition: Precondition::None,
        })
        .await
        .unwrap();
    // Read-your-writes on the receiving node, without waiting.
    assert!(follower.state().services.contains_key("a"));
    assert_eq!(follower.state().revision, ok.revision);
    for n in &nodes {
        poll("replication", || {
            (n.state().applied >= ok.index).then_some(())
        })
        .await;
        assert!(n.state().services.contains_key("a"));
    }
    // The same PUT again changes nothing and commits nothing.
    let again = nodes[2]
        .write(Command::PutService {
            service: service("a"),
            precondition: Precondition::None,
        })
        .await
        .unwrap();
    assert_eq!(again.revision, ok.revision);
    // Linearizable read barrier on a follower.
    follower.read_barrier().await.unwrap();
    let st = nodes[0].status().await;
    assert_eq!(st.members.len(), 3);
    assert!(st.members.iter().all(|m| m.reachable && m.voter));
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_secret_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start(3, &["right", "right", "wrong"], dir.path()).await;
    let leader = poll("a leader", || nodes[0].leader()).await;
    assert_ne!(
        leader, 3,
        "the node with the wrong secret cannot win an election"
    );
    let ok = nodes[0]
        .write(Command::PutService {
            service: service("a"),
            precondition: Precondition::None,
        })
        .await
        .unwrap();
    nodes[1]
        .wait_applied(ok.index, Instant::now() + Duration::from_secs(10))
        .await
        .unwrap();
    // Node 3 cannot forward a write, and (after all that time) has received no entry.
    let err = nodes[2]
        .write(Command::PutService {
            service: service("b"),
            precondition: Precondition::None,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::Unavailable(_)), "{err:?}");
    assert!(!nodes[0].state().services.contains_key("b"));
    assert!(nodes[2].state().services.is_empty());
    let st = nodes[0].status().await;
    assert!(!st.members.iter().find(|m| m.id == 3).unwrap().reachable);
    for n in &nodes {
        n.shutdown().await;
    }
}
