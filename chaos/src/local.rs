//! The local environment: `raftgate serve` processes on loopback, each cluster port behind a
//! relay (see relay.rs), and the process nemeses: SIGKILL, SIGSTOP/SIGCONT, SIGTERM, restart
//! on the same data dir.
//!
//! Only processes this module started are ever signalled, by their pid.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::relay::{self, Faults};

pub const TOKEN: &str = "chaos-token";

/// How the nodes are configured (`[cluster]` timing and snapshots).
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    pub snapshot_every: u64,
}

pub struct LocalNode {
    pub id: u64,
    pub proxy: String,
    pub admin: String,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

pub struct LocalCluster {
    pub nodes: Vec<LocalNode>,
    pub faults: Arc<Faults>,
    bin: PathBuf,
}

fn free_listener() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port")
}

fn free_port() -> u16 {
    free_listener().local_addr().expect("local addr").port()
}

/// The raftgate binary: `RAFTGATE_BIN`, else target/release/raftgate (with the `broken-quota`
/// feature: target/chaos-broken/release/raftgate, built on demand with the fault enabled).
pub fn binary() -> anyhow::Result<PathBuf> {
    if let Ok(b) = std::env::var("RAFTGATE_BIN") {
        return Ok(PathBuf::from(b));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if cfg!(feature = "broken-quota") {
        let target = root.join("target/chaos-broken");
        eprintln!(
            "building the deliberately broken raftgate (chaos-broken-quota) into {}",
            target.display()
        );
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&root)
            .args(["build", "--release", "-p", "raftgate", "--bin", "raftgate"])
            .args([
                "--features",
                "raftgate-cluster/chaos-broken-quota",
                "--target-dir",
            ])
            .arg(&target)
            .status()
            .context("run cargo build for the broken binary")?;
        if !status.success() {
            bail!("building the broken binary failed");
        }
        return Ok(target.join("release/raftgate"));
    }
    let bin = root.join("target/release/raftgate");
    if !bin.exists() {
        bail!(
            "{} not found: run `cargo build --release` first or set RAFTGATE_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

impl LocalCluster {
    /// Writes the configs, starts a relay per node on `rt` and every node.
    pub fn start(
        dir: &Path,
        bin: &Path,
        n: usize,
        opts: &NodeOptions,
        rt: &tokio::runtime::Handle,
    ) -> anyhow::Result<LocalCluster> {
        let faults = Arc::new(Faults::default());
        let relays: Vec<std::net::TcpListener> = (0..n).map(|_| free_listener()).collect();
        let members: Vec<String> = relays
            .iter()
            .enumerate()
            .map(|(i, l)| format!("\"{}@{}\"", i + 1, l.local_addr().expect("relay addr")))
            .collect();
        let mut nodes = Vec::new();
        for (i, relay_listener) in relays.into_iter().enumerate() {
            let id = i as u64 + 1;
            let (proxy, admin, cluster) = (free_port(), free_port(), free_port());
            let config = dir.join(format!("node{id}.toml"));
            std::fs::write(
                &config,
                format!(
                    "node_id = {id}\ndata_dir = \"{data}\"\nworkers = 1\n\
                     [listen]\nproxy = \"127.0.0.1:{proxy}\"\nadmin = \"127.0.0.1:{admin}\"\ncluster = \"127.0.0.1:{cluster}\"\n\
                     [cluster]\nmembers = [{members}]\nsecret = \"chaos\"\n\
                     heartbeat_ms = {hb}\nelection_timeout_ms = {et}\nsnapshot_every = {snap}\n\
                     [admin]\ntoken = \"{TOKEN}\"\n",
                    data = dir.join(format!("data{id}")).display(),
                    members = members.join(", "),
                    hb = opts.heartbeat_ms,
                    et = opts.election_timeout_ms,
                    snap = opts.snapshot_every,
                ),
            )?;
            relay::spawn(
                rt,
                relay_listener,
                id,
                format!("127.0.0.1:{cluster}").parse()?,
                faults.clone(),
            );
            nodes.push(LocalNode {
                id,
                proxy: format!("http://127.0.0.1:{proxy}"),
                admin: format!("http://127.0.0.1:{admin}"),
                config,
                log: dir.join(format!("node{id}.log")),
                child: None,
                paused: false,
            });
        }
        let mut c = LocalCluster {
            nodes,
            faults,
            bin: bin.to_path_buf(),
        };
        for id in 1..=n as u64 {
            c.restart(id)?;
        }
        Ok(c)
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub fn node(&self, id: u64) -> &LocalNode {
        &self.nodes[id as usize - 1]
    }

    fn node_mut(&mut self, id: u64) -> &mut LocalNode {
        &mut self.nodes[id as usize - 1]
    }

    /// Starts node `id` (again) on its config and data dir; a running node is left alone.
    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        let bin = self.bin.clone();
        let node = self.node_mut(id);
        if node.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let child = Command::new(&bin)
            .args(["serve", "--config"])
            .arg(&node.config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// SIGKILL (a crash: nothing flushed beyond what raftgate already fsynced).
    pub fn kill(&mut self, id: u64) {
        let node = self.node_mut(id);
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
    }

    fn signal(&self, id: u64, sig: &str) {
        if let Some(child) = &self.node(id).child {
            let _ = Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status();
        }
    }

    /// SIGSTOP: the process stays, its sockets accept, nothing answers.
    pub fn pause(&mut self, id: u64) {
        self.signal(id, "-STOP");
        self.node_mut(id).paused = true;
    }

    pub fn resume(&mut self, id: u64) {
        self.signal(id, "-CONT");
        self.node_mut(id).paused = false;
    }

    #[allow(dead_code)] // for the rolling-restart scenario (#9), not built yet
    /// SIGTERM, then waits for the graceful stop (drain, lease return, leadership hand-over);
    /// SIGKILL after `timeout`.
    pub fn stop(&mut self, id: u64, timeout: Duration) {
        self.signal(id, "-TERM");
        let node = self.node_mut(id);
        if let Some(mut child) = node.child.take() {
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self, id: u64) -> bool {
        let n = self.node(id);
        n.child.is_some() && !n.paused
    }

    /// Resumes paused nodes, restarts killed ones, heals the network.
    pub fn heal_all(&mut self) -> anyhow::Result<()> {
        self.faults.heal();
        for id in self.ids() {
            if self.node(id).paused {
                self.resume(id);
            }
            self.restart(id)?;
        }
        Ok(())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for id in self.ids() {
            if self.node(id).paused {
                self.resume(id);
            }
            self.kill(id);
        }
    }
}
