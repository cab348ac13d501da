//! Real `raftgate serve` processes on loopback for the examples: free ports, one config file
//! per node, the release binary (`RAFTGATE_BIN` overrides it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub const TOKEN: &str = "bench-token";

pub struct Node {
    #[allow(dead_code)] // not every example sends proxied requests
    pub proxy: String,
    pub admin: String,
    pub child: Child,
    /// What `restart` runs again: the binary, the node's config file and its `RUST_LOG`.
    bin: PathBuf,
    config: PathBuf,
    rust_log: String,
}

impl Node {
    /// Starts the node again on its config and data dir after it exited (or was killed).
    #[allow(dead_code)] // not every example restarts nodes
    pub fn restart(&mut self, stderr: Stdio) {
        self.child = spawn(&self.bin, &self.config, &self.rust_log, stderr);
    }
}

fn spawn(bin: &Path, config: &Path, rust_log: &str, stderr: Stdio) -> Child {
    Command::new(bin)
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start raftgate")
}

/// The value after `--name` in `args`, parsed; `default` when it is missing or does not parse.
#[allow(dead_code)] // not every example takes options this way
pub fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts an `n`-node cluster in `dir`. `extra` is appended to every node's config (TOML),
/// `rust_log` is the nodes' `RUST_LOG`, `stderr(i)` where node `i`'s log goes.
pub fn start_cluster(
    dir: &Path,
    n: usize,
    extra: &str,
    rust_log: &str,
    stderr: impl Fn(usize) -> Stdio,
) -> Vec<Node> {
    let bin = std::env::var("RAFTGATE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/raftgate")
        });
    assert!(
        bin.exists(),
        "{} not found: run `cargo build --release` first",
        bin.display()
    );
    let ports: Vec<[u16; 3]> = (0..n)
        .map(|_| [free_port(), free_port(), free_port()])
        .collect();
    let members: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("\"{}@127.0.0.1:{}\"", i + 1, p[2]))
        .collect();
    ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let config = dir.join(format!("node{}.toml", i + 1));
            std::fs::write(
                &config,
                format!(
                    "node_id = {}\ndata_dir = \"{}\"\nworkers = 1\n[listen]\nproxy = \"127.0.0.1:{}\"\nadmin = \"127.0.0.1:{}\"\ncluster = \"127.0.0.1:{}\"\n[cluster]\nmembers = [{}]\nsecret = \"bench\"\n[admin]\ntoken = \"{TOKEN}\"\n{extra}",
                    i + 1,
                    dir.join(format!("data{}", i + 1)).display(),
                    p[0],
                    p[1],
                    p[2],
                    members.join(", ")
                ),
            )
            .unwrap();
            Node {
                proxy: format!("http://127.0.0.1:{}", p[0]),
                admin: format!("http://127.0.0.1:{}", p[1]),
                child: spawn(&bin, &config, rust_log, stderr(i)),
                bin: bin.clone(),
                config,
                rust_log: rust_log.to_string(),
            }
        })
        .collect()
}
