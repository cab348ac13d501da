//! The docker environment: each scenario's cluster is a docker compose project of its own
//! (`raftgate-chaos-<pid>-<n>`) made of the image `raftgate:local` (docker/build-image.sh), and
//! the nemeses are docker's: `docker kill` (SIGKILL), `docker pause`/`unpause` (the cgroup
//! freezer), `docker stop`, `docker start` on the same volume.
//!
//! Two networks per project, so that a partition cuts Raft and nothing else:
//! - `edge`: the published admin/proxy ports (127.0.0.1 only) and the upstream container `up`
//!   (the `raftgate demo-upstream` of docker-compose.yml): the clients reach every node, and
//!   every node reaches the upstream, on every side of a partition, as with the local relays;
//! - `cluster` (internal): node-to-node traffic only; node *i* is `peer<i>` there and nowhere
//!   else. A node cut off from every other one is `docker network disconnect`ed from it; any
//!   other cut (groups, one pair, one direction) is an iptables DROP between the nodes' cluster
//!   addresses in the `DOCKER-USER` chain, which docker evaluates first in `FORWARD`.
//!
//! Every rule carries the comment `raftgate-chaos-<pid>` and every container, network and
//! volume the compose project label `raftgate-chaos-<pid>-<n>`: heal removes the rules, dropping
//! the cluster runs `compose down -v`, Ctrl-C removes everything of this process ([`sweep`]),
//! and each run first removes what runs whose process is gone left behind.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::local::{NodeOptions, TOKEN};
use crate::workload::Endpoint;

/// The upstream container, as the nodes reach it on the `edge` network.
pub const UPSTREAM_URL: &str = "http://up:9900";
/// The prefix of every compose project and iptables comment this tool creates.
const PREFIX: &str = "raftgate-chaos-";
const PROJECT_LABEL: &str = "com.docker.compose.project";

/// What every docker cluster of this run shares: the image and the compose command.
pub struct DockerEnv {
    pub image: String,
    compose: Vec<String>,
}

/// Why a scenario cannot run in docker, for those that cannot.
pub fn local_only(scenario: &str) -> Option<&'static str> {
    match scenario {
        "lossy-network" => Some(
            "delay and loss are injected by the local relays (docker would need tc netem in each \
             container's network namespace, not built)",
        ),
        "upstream-down" | "slow-upstream" => Some(
            "it drives the in-process upstream, which containers cannot reach (in docker the \
             routes point at the upstream container)",
        ),
        "membership-change" => Some("adding a node is built for the local cluster only"),
        "rolling-restart" => Some(
            "it sends SIGTERM and watches the process exit, built for local processes only (the \
             docker analogue, `docker stop`, is `Cluster::stop`)",
        ),
        "full-disk" => Some("the size-limited (tmpfs) data dir is built for local nodes only"),
        _ => None,
    }
}

/// This process's tag: the iptables comment and the prefix of its compose projects.
pub fn run_tag() -> String {
    format!("{PREFIX}{}", std::process::id())
}

/// Runs a command and returns its stdout; fails with the command line and its stderr.
fn run(cmd: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("cannot run `{cmd}`: is it installed and on PATH?"))?;
    if !out.status.success() {
        bail!(
            "`{cmd} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn docker(args: &[&str]) -> anyhow::Result<String> {
    run("docker", args)
}

impl DockerEnv {
    /// Checks the prerequisites (docker reachable, compose, the image, root for iptables,
    /// br_netfilter) and removes what dead runs left behind.
    pub fn new() -> anyhow::Result<DockerEnv> {
        docker(&["info", "--format", "{{.ServerVersion}}"]).context(
            "--env docker needs a running Docker Engine this user may use (docker info failed)",
        )?;
        let compose = if docker(&["compose", "version"]).is_ok() {
            vec!["docker".to_string(), "compose".to_string()]
        } else if run("docker-compose", &["version"]).is_ok() {
            vec!["docker-compose".to_string()]
        } else {
            bail!("--env docker needs `docker compose` (the Compose plugin) or `docker-compose`");
        };
        let image = std::env::var("RAFTGATE_IMAGE").unwrap_or_else(|_| "raftgate:local".into());
        docker(&["image", "inspect", "--format", "{{.Id}}", &image]).with_context(|| {
            format!("no image {image}: build it with docker/build-image.sh (or set RAFTGATE_IMAGE)")
        })?;
        let nf = std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables");
        if nf.map(|s| s.trim() != "1").unwrap_or(true) {
            bail!(
                "bridged traffic between containers skips iptables here, so partitions would not \
                 cut anything: run `modprobe br_netfilter && sysctl -w \
                 net.bridge.bridge-nf-call-iptables=1` (as root)"
            );
        }
        let env = DockerEnv { image, compose };
        sweep(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        Ok(env)
    }
}

/// Runs `compose -p PROJECT -f FILE ARGS..` (`compose` is `docker compose` or `docker-compose`).
fn compose(
    compose: &[String],
    project: &str,
    file: &Path,
    args: &[&str],
) -> anyhow::Result<String> {
    let file = file.to_string_lossy();
    let mut all: Vec<&str> = compose[1..].iter().map(String::as_str).collect();
    all.extend(["-p", project, "-f", &file]);
    all.extend(args);
    run(&compose[0], &all)
}

/// How a partition of `total` nodes is applied: the nodes to disconnect (a group of one facing
/// every other node) and the ordered pairs to DROP (the rest of the cross-group pairs).
fn plan(groups: &[Vec<u64>], total: usize) -> (BTreeSet<u64>, Vec<(u64, u64)>) {
    let named: BTreeSet<u64> = groups.iter().flatten().copied().collect();
    let alone: BTreeSet<u64> = groups
        .iter()
        .filter(|g| g.len() == 1 && groups.len() > 1 && named.len() == total)
        .map(|g| g[0])
        .collect();
    let mut pairs = Vec::new();
    for (i, a) in groups.iter().enumerate() {
        for (j, b) in groups.iter().enumerate() {
            if i == j {
                continue;
            }
            for x in a.iter().filter(|x| !alone.contains(x)) {
                for y in b.iter().filter(|y| !alone.contains(y)) {
                    pairs.push((*x, *y));
                }
            }
        }
    }
    (alone, pairs)
}

/// The pid in a tag or project name `raftgate-chaos-<pid>[-<n>]`.
fn pid_of(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// Removes the iptables rules, containers, networks and volumes of every run of this tool whose
/// pid satisfies `stale` (dead processes at start-up; this process on Ctrl-C). Best effort:
/// what cannot be removed is reported on stderr.
pub fn sweep(stale: impl Fn(u32) -> bool) {
    for ipt in iptables_candidates() {
        let Ok(rules) = run(ipt, &["-w", "-S", "DOCKER-USER"]) else {
            continue;
        };
        for rule in rules.lines() {
            let words: Vec<&str> = rule.split_whitespace().collect();
            let tagged = words
                .windows(2)
                .any(|w| w[0] == "--comment" && pid_of(w[1].trim_matches('"')).is_some_and(&stale));
            if tagged && words.first() == Some(&"-A") {
                let mut del = vec!["-w", "-D"];
                del.extend(&words[1..]);
                if let Err(e) = run(ipt, &del) {
                    eprintln!("raftgate-chaos: could not remove the stale rule `{rule}`: {e:#}");
                }
            }
        }
    }
    let label = format!("{{{{.Label \"{PROJECT_LABEL}\"}}}}");
    let mut projects = BTreeSet::new();
    for kind in ["container", "network", "volume"] {
        let listed = docker(&[kind, "ls", "-a", "--format", &label])
            .or_else(|_| docker(&[kind, "ls", "--format", &label]));
        for p in listed.unwrap_or_default().lines() {
            if pid_of(p).is_some_and(&stale) {
                projects.insert(p.to_string());
            }
        }
    }
    for p in projects {
        eprintln!("raftgate-chaos: removing the leftovers of compose project {p}");
        if let Err(e) = remove_project(&p) {
            eprintln!("raftgate-chaos: {e:#}");
        }
    }
}

/// Removes a compose project's containers, then its networks and volumes, by label.
fn remove_project(project: &str) -> anyhow::Result<()> {
    let filter = format!("label={PROJECT_LABEL}={project}");
    for kind in ["container", "network", "volume"] {
        let list = ["ls", "-q", "--filter", filter.as_str()];
        let mut args = vec![kind];
        args.extend(list);
        if kind == "container" {
            args.push("-a");
        }
        let ids = docker(&args)?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            continue;
        }
        let mut rm = vec![kind, "rm"];
        if kind == "container" {
            rm.extend(["-f", "-v"]);
        }
        rm.extend(ids);
        docker(&rm)?;
    }
    Ok(())
}

fn iptables_candidates() -> [&'static str; 3] {
    ["iptables", "iptables-nft", "iptables-legacy"]
}

/// The iptables tool whose rules docker's daemon actually evaluates: the one holding docker's
/// rules for `bridge` (on a host with both backends, the other one's rules change nothing).
fn iptables_for(bridge: &str) -> anyhow::Result<&'static str> {
    let mut tried = Vec::new();
    for ipt in iptables_candidates() {
        match run(ipt, &["-w", "-S"]) {
            Ok(rules) if rules.contains(bridge) && rules.contains("-N DOCKER-USER") => {
                return Ok(ipt)
            }
            Ok(_) => tried.push(format!("{ipt}: no docker rules for {bridge}")),
            Err(e) => tried.push(format!("{e:#}")),
        }
    }
    bail!(
        "no iptables tool shows docker's rules for the bridge {bridge} ({}). Install iptables \
         (`apt-get update && apt-get install -y iptables`), run as root, and keep docker's \
         iptables management on",
        tried.join("; ")
    )
}

/// The network faults of one docker cluster. Methods never fail loudly (the scenarios' fault
/// calls return nothing, as the relays cannot fail): a failure is printed and kept, and the
/// runner turns kept failures into a harness error, so a fault that was not applied never
/// passes silently.
pub struct DockerNet {
    iptables: &'static str,
    tag: String,
    cluster_net: String,
    containers: Vec<String>,
    state: Mutex<NetState>,
}

#[derive(Default)]
struct NetState {
    /// The DROP rules in force (their match part, after the chain name).
    rules: Vec<Vec<String>>,
    /// Nodes disconnected from the cluster network.
    isolated: BTreeSet<u64>,
    errors: Vec<String>,
}

impl DockerNet {
    fn lock(&self) -> std::sync::MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn container(&self, id: u64) -> &str {
        &self.containers[id as usize - 1]
    }

    fn record(&self, what: &str, r: anyhow::Result<()>) {
        if let Err(e) = r {
            let msg = format!("{what}: {e:#}");
            eprintln!("raftgate-chaos: {msg}");
            self.lock().errors.push(msg);
        }
    }

    /// The failures so far (emptied).
    pub fn take_errors(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().errors)
    }

    /// Node `id`'s address on the cluster network (it changes when the container restarts).
    fn ip(&self, id: u64) -> anyhow::Result<String> {
        let fmt = format!(
            "{{{{with index .NetworkSettings.Networks \"{}\"}}}}{{{{.IPAddress}}}}{{{{end}}}}",
            self.cluster_net
        );
        let ip = docker(&["inspect", "--format", &fmt, self.container(id)])?;
        let ip = ip.trim();
        if ip.is_empty() {
            bail!(
                "node {id} has no address on {} (stopped?)",
                self.cluster_net
            );
        }
        Ok(ip.to_string())
    }

    /// Splits the nodes into groups that cannot reach each other (both directions): a group of
    /// one node facing all the others is disconnected from the cluster network; other pairs
    /// get DROP rules.
    pub fn partition(&self, groups: &[Vec<u64>]) {
        let (alone, pairs) = plan(groups, self.containers.len());
        for id in alone {
            self.record(&format!("isolate node {id}"), self.isolate(id));
        }
        for (from, to) in pairs {
            self.cut_one_way(from, to);
        }
    }

    /// `docker network disconnect` from the cluster network: no peer reaches it, it reaches
    /// none; clients and the upstream still do (edge network).
    fn isolate(&self, id: u64) -> anyhow::Result<()> {
        docker(&[
            "network",
            "disconnect",
            &self.cluster_net,
            self.container(id),
        ])?;
        self.lock().isolated.insert(id);
        Ok(())
    }

    /// Cuts one direction: packets from `from` to `to` are dropped (TCP needs both, so
    /// connections either way stall; datagrams the other way would pass).
    pub fn cut_one_way(&self, from: u64, to: u64) {
        let r = (|| {
            let spec: Vec<String> = [
                "-s",
                &self.ip(from)?,
                "-d",
                &self.ip(to)?,
                "-m",
                "comment",
                "--comment",
                &self.tag,
                "-j",
                "DROP",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let mut args = vec!["-w", "-I", "DOCKER-USER"];
            args.extend(spec.iter().map(String::as_str));
            run(self.iptables, &args)?;
            self.lock().rules.push(spec);
            Ok(())
        })();
        self.record(&format!("cut {from} -> {to}"), r);
    }

    /// Cuts both directions between two nodes.
    pub fn cut(&self, a: u64, b: u64) {
        self.cut_one_way(a, b);
        self.cut_one_way(b, a);
    }

    /// Delay and loss are not built for docker (they would need `tc netem` in each container's
    /// namespace, on the cluster network's interface only): recorded as a failure.
    pub fn set_network(&self, delay_ms: u64, jitter_ms: u64, loss: f64) {
        self.record(
            &format!("delay {delay_ms} ms, jitter {jitter_ms} ms, loss {loss}"),
            Err(anyhow::anyhow!(
                "not available with --env docker; use --env local"
            )),
        );
    }

    /// Deletes one rule; a rule already gone (a Ctrl-C sweep got there first) is not an error.
    fn remove_rule(&self, spec: &[String]) -> anyhow::Result<()> {
        let with = |op: &'static str| {
            let mut args = vec!["-w", op, "DOCKER-USER"];
            args.extend(spec.iter().map(String::as_str));
            run(self.iptables, &args)
        };
        match with("-D") {
            Err(e) if with("-C").is_ok() => Err(e),
            _ => Ok(()),
        }
    }

    /// Removes every rule and reconnects every isolated node (under its `peer<i>` alias).
    pub fn heal(&self) {
        let (rules, isolated) = {
            let mut s = self.lock();
            (
                std::mem::take(&mut s.rules),
                std::mem::take(&mut s.isolated),
            )
        };
        for spec in rules {
            self.record("remove a DROP rule", self.remove_rule(&spec));
        }
        for id in isolated {
            let alias = format!("peer{id}");
            let r = docker(&[
                "network",
                "connect",
                "--alias",
                &alias,
                &self.cluster_net,
                self.container(id),
            ]);
            self.record(&format!("reconnect node {id}"), r.map(drop));
        }
    }
}

#[derive(Clone, Copy, Default)]
struct NodeState {
    stopped: bool,
    paused: bool,
    /// Removed from the cluster and stopped for good.
    retired: bool,
}

/// One scenario's compose project.
pub struct DockerCluster {
    pub net: Arc<DockerNet>,
    pub endpoints: Vec<Endpoint>,
    project: String,
    file: PathBuf,
    compose: Vec<String>,
    nodes: Vec<NodeState>,
}

static PROJECTS: AtomicU32 = AtomicU32::new(0);

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local addr").port()
}

/// Node `id`'s config: listens on every interface of its container, peers by their `peer<i>`
/// alias on the cluster network, data on its named volume.
fn node_config(id: u64, n: usize, opts: &NodeOptions) -> String {
    let members: Vec<String> = (1..=n).map(|i| format!("\"{i}@peer{i}:8002\"")).collect();
    format!(
        "node_id = {id}\ndata_dir = \"/var/lib/raftgate\"\nworkers = 1\n\
         [listen]\nproxy = \"0.0.0.0:8000\"\nadmin = \"0.0.0.0:8001\"\ncluster = \"0.0.0.0:8002\"\n\
         [cluster]\nmembers = [{}]\nsecret = \"chaos\"\n\
         heartbeat_ms = {}\nelection_timeout_ms = {}\nsnapshot_every = {}\nlogs_to_keep = {}\n\
         [admin]\ntoken = \"{TOKEN}\"\n",
        members.join(", "),
        opts.heartbeat_ms,
        opts.election_timeout_ms,
        opts.snapshot_every,
        opts.logs_to_keep,
    )
}

/// The compose file: `n` nodes (admin and proxy published on the given loopback ports) and
/// the upstream.
fn compose_file(project: &str, image: &str, ports: &[(u16, u16)]) -> String {
    let mut y = String::from("services:\n");
    let common = format!(
        "    image: {image}\n    environment:\n      RUST_LOG: warn\n      NO_COLOR: \"1\"\n"
    );
    for (i, (proxy, admin)) in ports.iter().enumerate() {
        let id = i + 1;
        y += &format!(
            "  node{id}:\n{common}    container_name: {project}-node{id}\n    volumes:\n      \
             - ./node{id}.toml:/etc/raftgate/raftgate.toml:ro\n      - node{id}-data:/var/lib/raftgate\n    \
             ports:\n      - \"127.0.0.1:{proxy}:8000\"\n      - \"127.0.0.1:{admin}:8001\"\n    \
             networks:\n      edge: {{}}\n      cluster:\n        aliases: [peer{id}]\n"
        );
    }
    y += &format!(
        "  up:\n{common}    container_name: {project}-up\n    \
         command: [\"demo-upstream\", \"--listen\", \"0.0.0.0:9900\", \"--name\", \"up\"]\n    \
         networks: [edge]\nnetworks:\n  edge: {{}}\n  cluster:\n    internal: true\nvolumes:\n"
    );
    for id in 1..=ports.len() {
        y += &format!("  node{id}-data: {{}}\n");
    }
    y
}

impl DockerCluster {
    /// Writes the configs and the compose file into `dir` and brings the project up.
    pub fn start(
        env: &DockerEnv,
        dir: &Path,
        n: usize,
        opts: &NodeOptions,
    ) -> anyhow::Result<DockerCluster> {
        let tag = run_tag();
        let project = format!("{tag}-{}", PROJECTS.fetch_add(1, Ordering::Relaxed));
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        for id in 1..=n as u64 {
            std::fs::write(dir.join(format!("node{id}.toml")), node_config(id, n, opts))?;
        }
        let file = dir.join("docker-compose.yml");
        std::fs::write(&file, compose_file(&project, &env.image, &ports))?;
        let containers: Vec<String> = (1..=n).map(|i| format!("{project}-node{i}")).collect();
        let cluster_net = format!("{project}_cluster");
        let endpoints = ports
            .iter()
            .enumerate()
            .map(|(i, (proxy, admin))| Endpoint {
                id: i as u64 + 1,
                proxy: format!("http://127.0.0.1:{proxy}"),
                admin: format!("http://127.0.0.1:{admin}"),
            })
            .collect();
        // From here on, dropping the cluster removes the project, even if `up` fails halfway.
        let mut c = DockerCluster {
            net: Arc::new(DockerNet {
                iptables: "iptables",
                tag,
                cluster_net: cluster_net.clone(),
                containers,
                state: Mutex::default(),
            }),
            endpoints,
            project,
            file,
            compose: env.compose.clone(),
            nodes: vec![NodeState::default(); n],
        };
        compose(&c.compose, &c.project, &c.file, &["up", "-d", "--no-build"])
            .context("docker compose up")?;
        let net_id = docker(&["network", "inspect", "--format", "{{.Id}}", &cluster_net])?;
        let bridge = format!("br-{}", &net_id.trim()[..12]);
        let net = Arc::get_mut(&mut c.net).expect("not shared yet");
        net.iptables = iptables_for(&bridge)?;
        Ok(c)
    }

    /// The nodes that belong to the cluster (retired ones left out).
    pub fn ids(&self) -> Vec<u64> {
        (1..=self.nodes.len() as u64)
            .filter(|id| !self.nodes[*id as usize - 1].retired)
            .collect()
    }

    /// `docker kill`s a node removed from the cluster and leaves it out from now on.
    pub fn retire(&mut self, id: u64) {
        self.kill(id);
        self.state(id).retired = true;
    }

    fn container(&self, id: u64) -> String {
        self.net.container(id).to_string()
    }

    fn state(&mut self, id: u64) -> &mut NodeState {
        &mut self.nodes[id as usize - 1]
    }

    /// Runs a docker nemesis on node `id`'s container; a failure is kept like a network one.
    fn act(&self, verb: &[&str], id: u64) -> bool {
        let c = self.container(id);
        let mut args = verb.to_vec();
        args.push(&c);
        let r = docker(&args);
        let ok = r.is_ok();
        self.net
            .record(&format!("docker {} node {id}", verb.join(" ")), r.map(drop));
        ok
    }

    /// `docker start` on the same volume; a running node is left alone.
    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        if !self.nodes[id as usize - 1].stopped {
            return Ok(());
        }
        docker(&["start", &self.container(id)])?;
        self.state(id).stopped = false;
        self.state(id).paused = false;
        Ok(())
    }

    /// `docker kill`: SIGKILL to raftgate (PID 1 of the container).
    pub fn kill(&mut self, id: u64) {
        if self.act(&["kill"], id) {
            self.state(id).stopped = true;
            self.state(id).paused = false;
        }
    }

    /// `docker pause`: every process of the container frozen; its sockets still accept.
    pub fn pause(&mut self, id: u64) {
        if self.act(&["pause"], id) {
            self.state(id).paused = true;
        }
    }

    pub fn resume(&mut self, id: u64) {
        if self.nodes[id as usize - 1].paused && self.act(&["unpause"], id) {
            self.state(id).paused = false;
        }
    }

    /// `docker stop`: SIGTERM, SIGKILL after `timeout` (whole seconds, at least 1).
    pub fn stop(&mut self, id: u64, timeout: Duration) {
        let secs = timeout.as_secs().max(1).to_string();
        if self.act(&["stop", "-t", &secs], id) {
            self.state(id).stopped = true;
            self.state(id).paused = false;
        }
    }

    pub fn is_running(&self, id: u64) -> bool {
        let s = self.nodes[id as usize - 1];
        !s.stopped && !s.paused
    }

    /// Heals the network, unpauses paused nodes, starts stopped ones.
    pub fn heal_all(&mut self) -> anyhow::Result<()> {
        self.net.heal();
        for id in self.ids() {
            self.resume(id);
            self.restart(id)?;
        }
        Ok(())
    }

    /// Saves every container's log into `dir` (for `CHAOS_KEEP`).
    pub fn save_logs(&self, dir: &Path) {
        for c in self
            .net
            .containers
            .iter()
            .chain([&format!("{}-up", self.project)])
        {
            let out = Command::new("docker").args(["logs", c]).output();
            if let Ok(out) = out {
                let log = [out.stdout, out.stderr].concat();
                let _ = std::fs::write(dir.join(format!("{c}.log")), log);
            }
        }
    }
}

impl Drop for DockerCluster {
    /// Removes the rules, then the containers, networks and volumes (`down -v`); falls back to
    /// removal by label if compose fails.
    fn drop(&mut self) {
        self.net.heal();
        for id in self.ids() {
            self.resume(id);
        }
        let down = ["down", "-v", "--remove-orphans", "-t", "1"];
        if let Err(e) = compose(&self.compose, &self.project, &self.file, &down) {
            eprintln!("raftgate-chaos: {e:#}; removing the project by label instead");
        }
        if let Err(e) = remove_project(&self.project) {
            eprintln!(
                "raftgate-chaos: removing compose project {}: {e:#}",
                self.project
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_alone_is_disconnected_and_other_cuts_are_rules() {
        let (alone, pairs) = plan(&[vec![2], vec![1, 3]], 3);
        assert_eq!(alone, BTreeSet::from([2]));
        assert!(
            pairs.is_empty(),
            "every cut pair involves node 2: {pairs:?}"
        );

        let (alone, pairs) = plan(&[vec![1, 2], vec![3, 4, 5]], 5);
        assert!(alone.is_empty());
        assert_eq!(pairs.len(), 12, "2 x 3 pairs, both directions");
        assert!(pairs.contains(&(1, 3)) && pairs.contains(&(3, 1)));
        assert!(!pairs.contains(&(1, 2)), "no cut inside a group");
    }

    #[test]
    fn a_group_of_one_that_leaves_nodes_out_is_not_isolated() {
        // Node 3 is in no group: it keeps every link, so node 1 must not lose its link to it.
        let (alone, pairs) = plan(&[vec![1], vec![2]], 3);
        assert!(alone.is_empty());
        assert_eq!(pairs, vec![(1, 2), (2, 1)]);
    }

    #[test]
    fn tags_name_their_process() {
        assert_eq!(pid_of("raftgate-chaos-1234"), Some(1234));
        assert_eq!(pid_of("raftgate-chaos-1234-7"), Some(1234));
        assert_eq!(pid_of("raftgate-ci"), None);
        assert_eq!(pid_of("raftgate-chaos-x"), None);
    }

    #[test]
    fn the_compose_file_keeps_raft_on_the_internal_network() {
        let y = compose_file("p", "raftgate:local", &[(1001, 2001), (1002, 2002)]);
        assert!(y.contains("127.0.0.1:1002:8000") && y.contains("127.0.0.1:2002:8001"));
        assert!(y.contains("aliases: [peer2]") && y.contains("internal: true"));
        assert!(y.contains("container_name: p-up") && y.contains("node2-data: {}"));
        let c = node_config(
            2,
            3,
            &NodeOptions {
                heartbeat_ms: 100,
                election_timeout_ms: 250,
                snapshot_every: 200,
                logs_to_keep: 20,
            },
        );
        assert!(c.contains(r#"members = ["1@peer1:8002", "2@peer2:8002", "3@peer3:8002"]"#));
    }
}
