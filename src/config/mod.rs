//! Node configuration (API.md §2): the TOML file, overridden by `RAFTGATE_*` env vars,
//! validated into a typed [`Config`].
//!
//! The flow is raw → validated → typed: `file::FileConfig` (serde, unknown keys rejected) →
//! env overlay → `validate` → [`Config`]. Every error names the file, the key (and the line or
//! the env var it came from) and what is wrong with it.
//!
//! Env overrides: every key `a.b` of the file can be set with `RAFTGATE_A_B`, e.g.
//! `RAFTGATE_LISTEN_ADMIN`, `RAFTGATE_CLUSTER_SECRET`, `RAFTGATE_ADMIN_TOKEN`;
//! `RAFTGATE_CLUSTER_MEMBERS` is comma-separated, `RAFTGATE_LISTEN_PROXY_TLS` is the TLS
//! address. An empty variable counts as unset. Relative paths in the file are relative to the
//! file's directory; relative paths in env vars are relative to the working directory.

mod error;
mod file;

pub use error::{At, ConfigError, Place};
pub use file::{Env, MapEnv, SystemEnv};

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::net::{Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use file::FileConfig;

/// A validated node configuration. Fields are public so that tests and `raftgate dev` can build
/// one without a file (start from [`Config::new`]).
#[derive(Clone)]
pub struct Config {
    pub node_id: u64,
    pub data_dir: PathBuf,
    /// Proxy worker threads, never 0: a 0 in the file means one per core.
    pub workers: usize,
    pub listen: Listen,
    /// Initial members for bootstrap. Empty only when `join` is set; a file with neither means a
    /// single-node cluster of this node on its cluster listen address.
    pub members: Vec<Member>,
    /// A new node for an existing cluster: do not bootstrap, wait to be added.
    pub join: bool,
    /// Node-to-node authentication; always set when there is more than one member or `join`.
    pub secret: Option<String>,
    /// Bearer token for the admin API; `None` leaves it open.
    pub admin_token: Option<String>,
    pub raft: RaftTiming,
    pub limits: Limits,
    pub cache: CacheLimits,
    pub telemetry: TelemetryConfig,
}

/// `[telemetry]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// Count every request (Prometheus counters and histograms, `/usage`). Off, `/metrics`
    /// keeps only the gauges read at scrape time; for measuring what counting costs.
    pub metrics: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig { metrics: true }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listen {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub cluster: SocketAddr,
    /// Parsed and validated, not served yet.
    pub proxy_tls: Option<SocketAddr>,
}

/// One initial cluster member, `ID@HOST:PORT` in the file. The address stays a string: hosts
/// may be DNS names that only resolve once the peer is up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub addr: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    /// Lower bound of the election timeout; each election waits a random time in [x, 2x).
    pub election_timeout_ms: u64,
    /// Take a snapshot every this many applied log entries.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot, so lagging followers catch up without one.
    pub logs_to_keep: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: u64,
    pub header_timeout_ms: u64,
    /// On a graceful stop (SIGTERM, SIGINT), how long in-flight requests and open WebSockets
    /// have to finish before their connections are dropped.
    pub drain_timeout_ms: u64,
    /// On a graceful stop, how long idle keep-alive connections stay open, so that a request
    /// sent on one is answered (with `Connection: close`) rather than reset; at most the drain
    /// timeout. 0 closes them at once.
    pub drain_grace_ms: u64,
}

/// `[cache]`: the response cache's memory bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheLimits {
    /// Bytes of cached responses (bodies, headers and keys) a node keeps at most.
    pub max_bytes: u64,
    /// The largest response body stored; larger answers stream through uncached.
    pub max_entry_bytes: u64,
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits {
            max_bytes: file::DEFAULT_CACHE_MAX_BYTES,
            max_entry_bytes: file::DEFAULT_CACHE_MAX_ENTRY_BYTES,
        }
    }
}

/// The most `cache.max_entry_bytes` may be: a cached body is held whole in memory, and read
/// whole from the upstream before the client gets a byte of it.
pub const MAX_CACHE_ENTRY_BYTES_SUPPORTED: u64 = 64 * 1024 * 1024;

impl Config {
    /// A single-node cluster with default knobs, no secret and an open admin API.
    pub fn new(node_id: u64, data_dir: impl Into<PathBuf>, listen: Listen) -> Config {
        Config {
            node_id,
            data_dir: data_dir.into(),
            workers: default_workers(),
            members: vec![Member {
                id: node_id,
                addr: listen.cluster.to_string(),
            }],
            listen,
            join: false,
            secret: None,
            admin_token: None,
            raft: RaftTiming::default(),
            limits: Limits::default(),
            cache: CacheLimits::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

// Hand-written so that secrets never reach a log through `{:?}`.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("Config")
            .field("node_id", &self.node_id)
            .field("data_dir", &self.data_dir)
            .field("workers", &self.workers)
            .field("listen", &self.listen)
            .field("members", &self.members)
            .field("join", &self.join)
            .field("secret", &redact(&self.secret))
            .field("admin_token", &redact(&self.admin_token))
            .field("raft", &self.raft)
            .field("limits", &self.limits)
            .field("cache", &self.cache)
            .field("telemetry", &self.telemetry)
            .finish()
    }
}

impl Default for Listen {
    fn default() -> Self {
        let addr = |s: &str| s.parse().expect("default listen address");
        Listen {
            proxy: addr(file::DEFAULT_PROXY),
            admin: addr(file::DEFAULT_ADMIN),
            cluster: addr(file::DEFAULT_CLUSTER),
            proxy_tls: None,
        }
    }
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat_ms: file::DEFAULT_HEARTBEAT_MS,
            election_timeout_ms: file::DEFAULT_ELECTION_TIMEOUT_MS,
            snapshot_every: file::DEFAULT_SNAPSHOT_EVERY,
            logs_to_keep: file::DEFAULT_LOGS_TO_KEEP,
        }
    }
}

impl RaftTiming {
    /// Exclusive upper bound of the election timeout (and the leader lease).
    pub fn election_timeout_max_ms(&self) -> u64 {
        raftgate_cluster::election_timeout_max_ms(self.election_timeout_ms)
    }
}

/// The most `limits.max_headers` may be. The proxy frames heads itself and carries fields past
/// actix-http's 96 through it (`proxy/head.rs`); the cap bounds the work one head may cost.
pub const MAX_HEADERS_SUPPORTED: usize = 1000;
/// The largest request head actix-http buffers (128 KiB), so the most `limits.max_header_bytes`
/// may be.
pub const MAX_HEADER_BYTES_SUPPORTED: usize = 131_072;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: file::DEFAULT_MAX_HEADER_BYTES,
            max_headers: file::DEFAULT_MAX_HEADERS,
            max_body_bytes: file::DEFAULT_MAX_BODY_BYTES,
            header_timeout_ms: file::DEFAULT_HEADER_TIMEOUT_MS,
            drain_timeout_ms: file::DEFAULT_DRAIN_TIMEOUT_MS,
            drain_grace_ms: file::DEFAULT_DRAIN_GRACE_MS,
        }
    }
}

impl Limits {
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    /// `drain_grace_ms`, bounded by the drain timeout.
    pub fn drain_grace(&self) -> Duration {
        Duration::from_millis(self.drain_grace_ms.min(self.drain_timeout_ms))
    }
}

impl FromStr for Member {
    type Err = ParseMemberError;

    fn from_str(s: &str) -> Result<Member, ParseMemberError> {
        let s = s.trim();
        let fail = |reason| ParseMemberError {
            input: s.to_owned(),
            reason,
        };
        let (id, addr) = s.split_once('@').ok_or_else(|| fail("missing \"ID@\""))?;
        let id = id
            .parse()
            .map_err(|_| fail("ID must be an unsigned integer"))?;
        let (_, port) = check_host_port(addr).map_err(fail)?;
        if port == 0 {
            return Err(fail("port 0 cannot be dialled"));
        }
        Ok(Member {
            id,
            addr: addr.to_owned(),
        })
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.addr)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not ID@HOST:PORT ({reason})")]
pub struct ParseMemberError {
    pub input: String,
    pub reason: &'static str,
}

/// Reads, overlays env and validates the config file at `path`.
pub fn load(path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_owned(),
        source,
    })?;
    from_str(&text, path, env)
}

/// Like [`load`] for text already in memory; `origin` names it in errors and anchors relative
/// paths.
pub fn from_str(text: &str, origin: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
    let (mut raw, mut origin) = file::parse(text, origin)?;
    raw.apply_env(env, &mut origin)?;
    validate(raw, &origin)
}

/// Checks every value of `raw` and builds the typed config.
fn validate(raw: FileConfig, origin: &file::Origin) -> Result<Config, ConfigError> {
    let required = |key: &str| ConfigError::Required {
        place: origin.place(key),
        when: "",
    };
    let node_id = raw.node_id.ok_or_else(|| required("node_id"))?;
    let data_dir = raw
        .data_dir
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| required("data_dir"))?;
    let workers = match raw.workers {
        0 => default_workers(),
        n => n,
    };

    let listen = Listen {
        proxy: resolve(&raw.listen.proxy, origin.place("listen.proxy"))?,
        admin: resolve(&raw.listen.admin, origin.place("listen.admin"))?,
        cluster: resolve(&raw.listen.cluster, origin.place("listen.cluster"))?,
        proxy_tls: match &raw.listen.proxy_tls {
            Some(tls) => Some(resolve(&tls.addr, origin.place("listen.proxy_tls"))?),
            None => None,
        },
    };

    let cluster = raw.cluster;
    let join = cluster.join;
    let members = members(&cluster.members, node_id, join, listen.cluster, origin)?;

    let secret = read_secret(
        cluster.secret,
        cluster.secret_file,
        ("cluster.secret", "cluster.secret_file"),
        origin,
    )?;
    if secret.is_none() && (members.len() > 1 || join) {
        return Err(ConfigError::Required {
            place: origin.place("cluster.secret"),
            when: if join {
                " when cluster.join = true (or set cluster.secret_file)"
            } else {
                " when the cluster has more than one member (or set cluster.secret_file)"
            },
        });
    }
    let admin_token = read_secret(
        raw.admin.token,
        raw.admin.token_file,
        ("admin.token", "admin.token_file"),
        origin,
    )?;

    let raft = RaftTiming {
        heartbeat_ms: positive(cluster.heartbeat_ms, "cluster.heartbeat_ms", origin)?,
        election_timeout_ms: positive(
            cluster.election_timeout_ms,
            "cluster.election_timeout_ms",
            origin,
        )?,
        snapshot_every: positive(cluster.snapshot_every, "cluster.snapshot_every", origin)?,
        logs_to_keep: cluster.logs_to_keep,
    };
    if raft.heartbeat_ms >= raft.election_timeout_ms {
        return Err(ConfigError::Invalid {
            place: origin.place("cluster.heartbeat_ms"),
            problem: format!(
                "{} must be less than cluster.election_timeout_ms ({}), or followers start \
                 elections between heartbeats",
                raft.heartbeat_ms, raft.election_timeout_ms
            ),
        });
    }

    let l = raw.limits;
    let limits = Limits {
        max_header_bytes: positive(l.max_header_bytes, "limits.max_header_bytes", origin)?,
        max_headers: positive(l.max_headers, "limits.max_headers", origin)?,
        max_body_bytes: positive(l.max_body_bytes, "limits.max_body_bytes", origin)?,
        header_timeout_ms: positive(l.header_timeout_ms, "limits.header_timeout_ms", origin)?,
        drain_timeout_ms: positive(l.drain_timeout_ms, "limits.drain_timeout_ms", origin)?,
        drain_grace_ms: l.drain_grace_ms,
    };
    at_most(
        limits.max_headers,
        MAX_HEADERS_SUPPORTED,
        "header fields",
        "limits.max_headers",
        origin,
    )?;
    at_most(
        limits.max_header_bytes,
        MAX_HEADER_BYTES_SUPPORTED,
        "bytes of request head (what its HTTP parser buffers)",
        "limits.max_header_bytes",
        origin,
    )?;

    let cache = CacheLimits {
        max_bytes: positive(raw.cache.max_bytes, "cache.max_bytes", origin)?,
        max_entry_bytes: positive(raw.cache.max_entry_bytes, "cache.max_entry_bytes", origin)?,
    };
    at_most(
        cache.max_entry_bytes,
        MAX_CACHE_ENTRY_BYTES_SUPPORTED,
        "bytes (a cached body is held whole in memory)",
        "cache.max_entry_bytes",
        origin,
    )?;
    if cache.max_entry_bytes > cache.max_bytes {
        return Err(ConfigError::Invalid {
            place: origin.place("cache.max_entry_bytes"),
            problem: format!(
                "{} is more than cache.max_bytes ({}): no such entry would fit",
                cache.max_entry_bytes, cache.max_bytes
            ),
        });
    }

    Ok(Config {
        node_id,
        data_dir,
        workers,
        listen,
        members,
        join,
        secret,
        admin_token,
        raft,
        limits,
        cache,
        telemetry: TelemetryConfig {
            metrics: raw.telemetry.metrics,
        },
    })
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Checks HOST:PORT syntax without resolving: a non-empty host (IPv6 in brackets) and a port.
fn check_host_port(s: &str) -> Result<(&str, u16), &'static str> {
    let (host, port) = s.rsplit_once(':').ok_or("missing \":PORT\"")?;
    let port = port
        .parse()
        .map_err(|_| "PORT must be a number from 0 to 65535")?;
    if host.is_empty() {
        return Err("missing HOST");
    }
    if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .and_then(|ip| ip.parse::<Ipv6Addr>().ok())
            .ok_or("bad IPv6 address in brackets")?;
    } else if host.contains(':') {
        return Err("an IPv6 HOST goes in brackets, like [::1]:8000");
    } else if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err("HOST has a character that is not allowed in a host name");
    }
    Ok((host, port))
}

/// HOST:PORT → the first address it resolves to.
fn resolve(value: &str, place: Place) -> Result<SocketAddr, ConfigError> {
    let value = value.trim();
    if let Err(reason) = check_host_port(value) {
        return Err(ConfigError::BadAddress {
            place,
            value: value.to_owned(),
            reason,
        });
    }
    let first = value
        .to_socket_addrs()
        .and_then(|mut addrs| addrs.next().ok_or_else(|| io::Error::other("no address")));
    first.map_err(|source| ConfigError::Unresolvable {
        place,
        value: value.to_owned(),
        source,
    })
}

fn members(
    written: &[String],
    node_id: u64,
    join: bool,
    cluster_addr: SocketAddr,
    origin: &file::Origin,
) -> Result<Vec<Member>, ConfigError> {
    let place = || origin.place("cluster.members");
    if written.is_empty() && !join {
        return Ok(vec![Member {
            id: node_id,
            addr: cluster_addr.to_string(),
        }]);
    }
    let mut members = Vec::with_capacity(written.len());
    let (mut ids, mut addrs) = (BTreeSet::new(), BTreeSet::new());
    for m in written {
        let m: Member = m.parse().map_err(|source| ConfigError::BadMember {
            place: place(),
            source,
        })?;
        if !ids.insert(m.id) {
            return Err(ConfigError::DuplicateMember {
                place: place(),
                id: m.id,
            });
        }
        if !addrs.insert(m.addr.clone()) {
            return Err(ConfigError::DuplicateAddr {
                place: place(),
                addr: m.addr,
            });
        }
        members.push(m);
    }
    if !join && !ids.contains(&node_id) {
        return Err(ConfigError::NotAMember {
            place: place(),
            node_id,
            members: ids.into_iter().collect(),
        });
    }
    Ok(members)
}

/// One secret given inline or by file (exactly one of them, or neither). A file's trailing
/// newline is not part of the secret; an empty secret is refused rather than taken as "none".
fn read_secret(
    inline: Option<String>,
    path: Option<PathBuf>,
    (key, key_file): (&str, &str),
    origin: &file::Origin,
) -> Result<Option<String>, ConfigError> {
    let (value, key) = match (inline, path) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(ConfigError::Conflict {
                place: origin.place(key),
                other: key_file.to_owned(),
            })
        }
        (Some(value), None) => (value, key),
        (None, Some(path)) => {
            let text =
                std::fs::read_to_string(&path).map_err(|source| ConfigError::ReadSecret {
                    place: origin.place(key_file),
                    path: path.clone(),
                    source,
                })?;
            (text.trim_end_matches(['\n', '\r']).to_owned(), key_file)
        }
    };
    if value.is_empty() {
        return Err(ConfigError::Invalid {
            place: origin.place(key),
            problem: "must not be empty".into(),
        });
    }
    Ok(Some(value))
}

/// A limit the proxy cannot honour above `max`.
fn at_most<T: PartialOrd + fmt::Display>(
    value: T,
    max: T,
    what: &str,
    key: &str,
    origin: &file::Origin,
) -> Result<(), ConfigError> {
    if value > max {
        return Err(ConfigError::Invalid {
            place: origin.place(key),
            problem: format!("{value} is more than the proxy supports: at most {max} {what}"),
        });
    }
    Ok(())
}

fn positive<T: Default + PartialEq>(
    value: T,
    key: &str,
    origin: &file::Origin,
) -> Result<T, ConfigError> {
    if value == T::default() {
        return Err(ConfigError::Invalid {
            place: origin.place(key),
            problem: "must be greater than 0".into(),
        });
    }
    Ok(value)
}

#[cfg(test)]
#[path = "config_test.rs"]
mod tests;
