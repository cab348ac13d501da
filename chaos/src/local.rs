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
    /// `[cluster] logs_to_keep`: entries kept behind a snapshot. Low, so that a node down for
    /// a few hundred writes is past the leader's log and must install a snapshot.
    pub logs_to_keep: u64,
}

pub struct LocalNode {
    pub id: u64,
    pub proxy: String,
    pub admin: String,
    /// Its relay: the cluster address the other nodes (and the membership) know it by.
    pub relay: String,
    pub data: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// Removed from the cluster and stopped for good: no longer one of [`LocalCluster::ids`].
    retired: bool,
}

pub struct LocalCluster {
    pub nodes: Vec<LocalNode>,
    pub faults: Arc<Faults>,
    bin: PathBuf,
    dir: PathBuf,
    /// Where the relays run.
    rt: tokio::runtime::Handle,
    /// tmpfs mounts over data dirs (`limit_disk`), unmounted when the cluster is dropped.
    mounts: Vec<PathBuf>,
}

/// What every node's config shares.
struct Layout<'a> {
    dir: &'a Path,
    members: &'a str,
    opts: &'a NodeOptions,
    faults: &'a Arc<Faults>,
    rt: &'a tokio::runtime::Handle,
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
        let layout = Layout {
            dir,
            members: &members.join(", "),
            opts,
            faults: &faults,
            rt,
        };
        let nodes = relays
            .into_iter()
            .enumerate()
            .map(|(i, relay)| new_node(&layout, i as u64 + 1, relay, false))
            .collect::<anyhow::Result<_>>()?;
        let mut c = LocalCluster {
            nodes,
            faults,
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            rt: rt.clone(),
            mounts: Vec::new(),
        };
        for id in 1..=n as u64 {
            c.restart(id)?;
        }
        Ok(c)
    }

    /// The nodes that belong to the cluster (retired ones left out).
    pub fn ids(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| !n.retired)
            .map(|n| n.id)
            .collect()
    }

    /// Starts one more node, with `join = true` and its own relay: it starts empty and waits
    /// until `POST /cluster/members` adds it (at [`LocalNode::relay`]). Returns its id.
    pub fn add_node(&mut self, opts: &NodeOptions) -> anyhow::Result<u64> {
        let id = self.nodes.len() as u64 + 1;
        let relay = free_listener();
        let me = format!("\"{id}@{}\"", relay.local_addr()?);
        let layout = Layout {
            dir: &self.dir,
            members: &me,
            opts,
            faults: &self.faults,
            rt: &self.rt,
        };
        let node = new_node(&layout, id, relay, true)?;
        self.nodes.push(node);
        self.restart(id)?;
        Ok(id)
    }

    /// SIGKILLs a node that was removed from the cluster and leaves it out from now on.
    pub fn retire(&mut self, id: u64) {
        self.kill(id);
        self.node_mut(id).retired = true;
    }

    /// Puts node `id`'s data dir on a tmpfs of `mb` MiB (its contents copied over), so that it
    /// can run out of space. The node must be stopped. Unmounted when the cluster is dropped.
    pub fn limit_disk(&mut self, id: u64, mb: u64) -> anyhow::Result<PathBuf> {
        anyhow::ensure!(self.node(id).child.is_none(), "node {id} must be stopped");
        let data = self.node(id).data.clone();
        let saved = data.with_extension("before-tmpfs");
        std::fs::rename(&data, &saved).context("move the data dir aside")?;
        std::fs::create_dir(&data)?;
        let size = format!("size={mb}m");
        run(
            "mount",
            &["-t", "tmpfs", "-o", size.as_str(), "tmpfs"],
            &data,
        )
        .context("mount a tmpfs (needs root)")?;
        self.mounts.push(data.clone());
        let from = format!("{}/.", saved.display());
        run("cp", &["-a", from.as_str()], &data).context("copy the data dir onto the tmpfs")?;
        Ok(data)
    }

    /// The node whose data dir is on a tmpfs, if any.
    pub fn limited(&self) -> Option<u64> {
        self.nodes
            .iter()
            .find(|n| self.mounts.contains(&n.data))
            .map(|n| n.id)
    }

    /// How the node's process ended, if it exited by itself (it is then no longer running).
    pub fn exited(&mut self, id: u64) -> Option<String> {
        let node = self.node_mut(id);
        let status = node.child.as_mut()?.try_wait().ok()??;
        node.child = None;
        Some(status.to_string())
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

    /// SIGTERM without waiting: the caller polls [`LocalCluster::exited`] meanwhile, so that
    /// its clients keep sending to the draining node (the rolling restart).
    pub fn terminate(&mut self, id: u64) {
        self.signal(id, "-TERM");
    }

    #[allow(dead_code)] // the blocking form, for environments without `terminate`
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

/// Runs `cmd args.. path` and fails with its stderr.
fn run(cmd: &str, args: &[&str], path: &Path) -> anyhow::Result<()> {
    let out = Command::new(cmd).args(args).arg(path).output()?;
    if !out.status.success() {
        bail!(
            "{cmd} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Writes node `id`'s config, starts its relay (on `relay`); the process is not started yet.
fn new_node(
    l: &Layout,
    id: u64,
    relay: std::net::TcpListener,
    join: bool,
) -> anyhow::Result<LocalNode> {
    let (proxy, admin, cluster) = (free_port(), free_port(), free_port());
    let config = l.dir.join(format!("node{id}.toml"));
    let data = l.dir.join(format!("data{id}"));
    let relay_addr = relay.local_addr()?.to_string();
    std::fs::write(
        &config,
        format!(
            "node_id = {id}\ndata_dir = \"{data}\"\nworkers = 1\n\
             [listen]\nproxy = \"127.0.0.1:{proxy}\"\nadmin = \"127.0.0.1:{admin}\"\ncluster = \"127.0.0.1:{cluster}\"\n\
             [cluster]\nmembers = [{members}]\nsecret = \"chaos\"\njoin = {join}\n\
             heartbeat_ms = {hb}\nelection_timeout_ms = {et}\nsnapshot_every = {snap}\n\
             logs_to_keep = {keep}\n\
             [admin]\ntoken = \"{TOKEN}\"\n",
            data = data.display(),
            members = l.members,
            hb = l.opts.heartbeat_ms,
            et = l.opts.election_timeout_ms,
            snap = l.opts.snapshot_every,
            keep = l.opts.logs_to_keep,
        ),
    )?;
    relay::spawn(
        l.rt,
        relay,
        id,
        format!("127.0.0.1:{cluster}").parse()?,
        l.faults.clone(),
    );
    Ok(LocalNode {
        id,
        proxy: format!("http://127.0.0.1:{proxy}"),
        admin: format!("http://127.0.0.1:{admin}"),
        relay: relay_addr,
        data,
        config,
        log: l.dir.join(format!("node{id}.log")),
        child: None,
        paused: false,
        retired: false,
    })
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for id in 1..=self.nodes.len() as u64 {
            if self.node(id).paused {
                self.resume(id);
            }
            self.kill(id);
        }
        for m in self.mounts.drain(..) {
            if let Err(e) = run("umount", &[], &m) {
                eprintln!(
                    "raftgate-chaos: could not unmount the tmpfs: {e:#}; run `umount {}`",
                    m.display()
                );
            }
        }
    }
}
