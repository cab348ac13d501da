//! The cluster a scenario acts on, in either environment: the same calls (`kill`, `pause`,
//! `restart`, `faults.partition`, ...) act on `raftgate serve` processes behind relays
//! (`--env local`, local.rs) or on a docker compose project (`--env docker`, docker.rs).
//! What only one environment can do is reached through [`Cluster::local`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::docker::{DockerCluster, DockerEnv, DockerNet};
use crate::local::{LocalCluster, NodeOptions};
use crate::relay::Faults;
use crate::upstream::Upstream;
use crate::workload::Endpoint;

/// Where the scenarios run, chosen once per invocation.
pub enum EnvSpec {
    /// The raftgate binary to start.
    Local(PathBuf),
    Docker(DockerEnv),
}

impl EnvSpec {
    pub fn name(&self) -> &'static str {
        match self {
            EnvSpec::Local(_) => "local",
            EnvSpec::Docker(_) => "docker",
        }
    }
}

pub struct Cluster {
    /// The network faults: relays locally, iptables rules and network disconnects in docker.
    pub faults: Network,
    nodes: Nodes,
}

enum Nodes {
    Local(LocalCluster),
    Docker(DockerCluster),
}

pub enum Network {
    Relay(Arc<Faults>),
    Docker(Arc<DockerNet>),
}

/// The same call on whichever environment `$nodes` is.
macro_rules! each {
    ($nodes:expr, $c:ident => $e:expr) => {
        match $nodes {
            Nodes::Local($c) => $e,
            Nodes::Docker($c) => $e,
        }
    };
}

impl Cluster {
    /// Starts `n` nodes in `dir` (configs; data dirs locally), as `env` says.
    pub fn start(
        env: &EnvSpec,
        dir: &Path,
        n: usize,
        opts: &NodeOptions,
        rt: &tokio::runtime::Handle,
    ) -> anyhow::Result<Cluster> {
        Ok(match env {
            EnvSpec::Local(bin) => {
                let c = LocalCluster::start(dir, bin, n, opts, rt)?;
                Cluster {
                    faults: Network::Relay(c.faults.clone()),
                    nodes: Nodes::Local(c),
                }
            }
            EnvSpec::Docker(env) => {
                let c = DockerCluster::start(env, dir, n, opts)?;
                Cluster {
                    faults: Network::Docker(c.net.clone()),
                    nodes: Nodes::Docker(c),
                }
            }
        })
    }

    /// The local cluster, for what only the local environment does; in docker, an error
    /// naming `what`.
    pub fn local(&mut self, what: &str) -> anyhow::Result<&mut LocalCluster> {
        match &mut self.nodes {
            Nodes::Local(c) => Ok(c),
            Nodes::Docker(_) => anyhow::bail!("{what} needs --env local"),
        }
    }

    /// How clients reach each node.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        match &self.nodes {
            Nodes::Local(c) => c
                .nodes
                .iter()
                .map(|n| Endpoint {
                    id: n.id,
                    admin: n.admin.clone(),
                    proxy: n.proxy.clone(),
                })
                .collect(),
            Nodes::Docker(c) => c.endpoints.clone(),
        }
    }

    /// The URL the routes' service points at: the in-process upstream, or the upstream
    /// container (the in-process one is then idle: scenarios driving it are local-only).
    pub fn upstream_url(&self, local: &Upstream) -> String {
        match &self.nodes {
            Nodes::Local(_) => format!("http://{}", local.addr),
            Nodes::Docker(_) => crate::docker::UPSTREAM_URL.to_string(),
        }
    }

    /// Faults that could not be applied (docker commands that failed), emptied.
    pub fn take_errors(&self) -> Vec<String> {
        match &self.faults {
            Network::Relay(_) => Vec::new(),
            Network::Docker(n) => n.take_errors(),
        }
    }

    /// Keeps what a failed run leaves to read (`CHAOS_KEEP`): locally the node logs are in
    /// `dir` already; in docker the containers' logs are saved there.
    pub fn save_logs(&self, dir: &Path) {
        if let Nodes::Docker(c) = &self.nodes {
            c.save_logs(dir);
        }
    }

    pub fn ids(&self) -> Vec<u64> {
        each!(&self.nodes, c => c.ids())
    }

    pub fn is_running(&self, id: u64) -> bool {
        each!(&self.nodes, c => c.is_running(id))
    }

    /// Starts node `id` again on its data; a running node is left alone.
    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        each!(&mut self.nodes, c => c.restart(id))
    }

    /// A crash: SIGKILL, or `docker kill`.
    pub fn kill(&mut self, id: u64) {
        each!(&mut self.nodes, c => c.kill(id))
    }

    /// SIGSTOP, or `docker pause`.
    pub fn pause(&mut self, id: u64) {
        each!(&mut self.nodes, c => c.pause(id))
    }

    pub fn resume(&mut self, id: u64) {
        each!(&mut self.nodes, c => c.resume(id))
    }

    #[allow(dead_code)] // for the rolling-restart scenario (#9)
    /// A graceful stop (SIGTERM, or `docker stop`), SIGKILL after `timeout`.
    pub fn stop(&mut self, id: u64, timeout: Duration) {
        each!(&mut self.nodes, c => c.stop(id, timeout))
    }

    /// Heals the network, resumes paused nodes, restarts stopped ones.
    pub fn heal_all(&mut self) -> anyhow::Result<()> {
        each!(&mut self.nodes, c => c.heal_all())
    }

    /// Stops a node removed from the cluster for good and leaves it out of [`Cluster::ids`].
    pub fn retire(&mut self, id: u64) {
        each!(&mut self.nodes, c => c.retire(id))
    }

    /// A local node (its relay address, data dir); local only.
    pub fn node(&mut self, id: u64) -> anyhow::Result<&crate::local::LocalNode> {
        Ok(self.local("a node's relay and data dir")?.node(id))
    }

    /// Starts one more node that waits to be added; local only (`membership-change`).
    pub fn add_node(&mut self, opts: &NodeOptions) -> anyhow::Result<u64> {
        self.local("adding a node")?.add_node(opts)
    }

    /// Puts a stopped node's data dir on a small tmpfs; local only (`full-disk`).
    pub fn limit_disk(&mut self, id: u64, mb: u64) -> anyhow::Result<PathBuf> {
        self.local("a size-limited data dir")?.limit_disk(id, mb)
    }

    /// The node whose data dir [`Cluster::limit_disk`] limited (never one in docker).
    pub fn limited(&self) -> Option<u64> {
        match &self.nodes {
            Nodes::Local(c) => c.limited(),
            Nodes::Docker(_) => None,
        }
    }

    /// How node `id` exited, if it did on its own since it was started (local only: in docker,
    /// `None`; no docker scenario waits for a node to exit by itself).
    pub fn exited(&mut self, id: u64) -> Option<String> {
        match &mut self.nodes {
            Nodes::Local(c) => c.exited(id),
            Nodes::Docker(_) => None,
        }
    }
}

/// The same call on whichever network `$net` is.
macro_rules! each_net {
    ($net:expr, $n:ident => $e:expr) => {
        match $net {
            Network::Relay($n) => $e,
            Network::Docker($n) => $e,
        }
    };
}

impl Network {
    /// Groups that cannot reach each other (both directions).
    pub fn partition(&self, groups: &[Vec<u64>]) {
        each_net!(self, n => n.partition(groups))
    }

    #[allow(dead_code)] // for the one-way and ring/bridge scenarios (#4)
    pub fn cut_one_way(&self, from: u64, to: u64) {
        each_net!(self, n => n.cut_one_way(from, to))
    }

    #[allow(dead_code)] // for the ring/bridge scenarios (#4)
    pub fn cut(&self, a: u64, b: u64) {
        each_net!(self, n => n.cut(a, b))
    }

    /// Delay, jitter and loss on every cluster link (local only: in docker, a recorded
    /// failure).
    pub fn set_network(&self, delay_ms: u64, jitter_ms: u64, loss: f64) {
        each_net!(self, n => n.set_network(delay_ms, jitter_ms, loss))
    }

    pub fn heal(&self) {
        each_net!(self, n => n.heal())
    }
}
