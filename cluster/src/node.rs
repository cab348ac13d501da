//! A running cluster member: starts Raft on the redb store, serves peers, bootstraps, and offers
//! the write / linearizable-read API the admin layer uses.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, SnapshotPolicy};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::log_store::LogStore;
use crate::network::{CallError, Network};
use crate::rpc::{self, RpcRequest, RpcResponse, WriteError, WriteOk};
use crate::state::ClusterState;
use crate::state_machine::StateMachine;
use crate::types::{Command, NodeId, Raft};

mod handover;
mod members;
mod outbid;
mod stopped;

pub use members::MEMBERSHIP_TIMEOUT;

/// How long a write or a linearizable read may take before it answers 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    /// Initial members `(id, cluster address)`; ignored once the data dir holds state.
    pub members: Vec<(NodeId, String)>,
    /// A new node for an existing cluster: never bootstraps, waits to be added.
    pub join: bool,
    pub secret: Vec<u8>,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    pub snapshot_every: u64,
    pub logs_to_keep: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the Raft store in {dir}: {message}")]
    Storage { dir: PathBuf, message: String },
    #[error("invalid Raft settings: {0}")]
    Config(String),
    #[error("Raft failed to start: {0}")]
    Raft(String),
}

#[derive(Clone)]
pub struct ClusterNode {
    inner: Arc<Inner>,
}

struct Inner {
    id: NodeId,
    raft: Raft,
    network: Network,
    state: watch::Receiver<Arc<ClusterState>>,
    shutdown: watch::Sender<bool>,
    /// The gateway's request counts, for `RpcRequest::Usage` (see `usage.rs`).
    usage: std::sync::OnceLock<crate::usage::UsageSource>,
    /// Snapshots installed from a leader since start (the state machine counts them).
    snapshots_installed: Arc<std::sync::atomic::AtomicU64>,
    /// When a leader was last heard from (see `outbid.rs`).
    contact: outbid::LeaderContact,
    /// Set while this leader hands its leadership over (`handover.rs`): it appends nothing
    /// more, so that its successor's log can match its own.
    handing_over: std::sync::atomic::AtomicBool,
}

/// `GET /cluster`.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterStatus {
    pub node_id: NodeId,
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub revision: u64,
    pub applied_index: u64,
    pub members: Vec<MemberStatus>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MemberStatus {
    pub id: NodeId,
    pub addr: String,
    pub voter: bool,
    pub reachable: bool,
}

/// The exclusive upper bound of the randomised election timeout: twice its lower bound.
///
/// It is also openraft 0.9's leader lease: a follower that saw a leader refuses votes until
/// this long after the last heartbeat, and campaigns only after the lease plus its own election
/// timeout (drawn once per process from [min, max)). So losing a leader costs `max + [min, max)`
/// before a new one is elected, and `max` more when the first candidate holds the shorter log
/// and loses; with the default 250 ms that is 0.75–1.5 s.
pub fn election_timeout_max_ms(election_timeout_ms: u64) -> u64 {
    election_timeout_ms * 2
}

impl ClusterNode {
    pub async fn start(cfg: NodeConfig, listener: TcpListener) -> Result<ClusterNode, StartError> {
        let raft_config = openraft::Config {
            cluster_name: "raftgate".into(),
            heartbeat_interval: cfg.heartbeat_ms,
            election_timeout_min: cfg.election_timeout_ms,
            election_timeout_max: election_timeout_max_ms(cfg.election_timeout_ms),
            install_snapshot_timeout: 10_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_every),
            max_in_snapshot_log_to_keep: cfg.logs_to_keep,
            // Purge in batches, but never wait for more than a snapshot's worth.
            purge_batch_size: (cfg.snapshot_every / 4).clamp(1, 256),
            ..Default::default()
        };
        let raft_config = Arc::new(
            raft_config
                .validate()
                .map_err(|e| StartError::Config(e.to_string()))?,
        );
        let (log, sm, state) = open_stores(&cfg.data_dir).await?;
        let replay_to = log.saved_committed().map(|l| l.index);
        let snapshots_installed = sm.installed_snapshots();
        let network = Network::new(cfg.node_id, cfg.secret.clone());
        let raft = Raft::new(cfg.node_id, raft_config, network.clone(), log, sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let node = ClusterNode {
            inner: Arc::new(Inner {
                id: cfg.node_id,
                raft,
                network,
                state,
                shutdown,
                usage: std::sync::OnceLock::new(),
                snapshots_installed,
                contact: outbid::LeaderContact::default(),
                handing_over: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        if replay_to.is_some() {
            node.hold_fire_after_restart();
        }
        node.watch_elections();
        tokio::spawn(rpc::serve(
            listener,
            cfg.secret.clone(),
            node.clone(),
            shutdown_rx,
        ));

        let initialized = node
            .raft()
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let lowest = cfg.members.iter().map(|m| m.0).min();
        if !initialized && !cfg.join && lowest == Some(cfg.node_id) {
            let members: BTreeMap<NodeId, BasicNode> = cfg
                .members
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr)))
                .collect();
            match node.raft().initialize(members).await {
                Ok(()) => tracing::info!(node = cfg.node_id, "initialised a new cluster"),
                // Another path (a vote, an append) got here first: the cluster exists already.
                Err(e) => tracing::info!(error = %e, "cluster already initialised"),
            }
        }
        // A restarted node re-applies what it had committed before it serves anything, so its
        // proxy never answers from a half-rebuilt config.
        if let Some(index) = replay_to {
            let deadline = Instant::now() + Duration::from_secs(60);
            if node.wait_applied(index, deadline).await.is_err() {
                tracing::warn!(
                    index,
                    "local log replay did not finish in 60 s; serving what is applied"
                );
            }
        }
        Ok(node)
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// How many snapshots a leader sent this node and it installed since it started (a node
    /// too far behind for the leader's log catches up this way).
    pub fn snapshots_installed(&self) -> u64 {
        self.inner
            .snapshots_installed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The last applied state, as published by the state machine.
    pub fn state(&self) -> Arc<ClusterState> {
        self.inner.state.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.inner.state.clone()
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.inner.raft.metrics().borrow().current_leader
    }

    fn addr_of(&self, id: NodeId) -> Option<String> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    }

    /// Commits `cmd` through the leader (forwarding when this node follows) and returns once this
    /// node has applied it: the caller's next read here sees the write.
    pub async fn write(&self, cmd: Command) -> Result<WriteOk, WriteError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let ok = self
            .on_leader(
                deadline,
                async || self.write_as_leader(cmd.clone(), deadline).await,
                || RpcRequest::Write(cmd.clone()),
                |r| match r {
                    RpcResponse::Write(r) => Some(r),
                    _ => None,
                },
            )
            .await?;
        self.wait_applied(ok.index, deadline).await?;
        Ok(ok)
    }

    /// A linearizable read barrier: on return this node has applied everything committed before
    /// the call began.
    pub async fn read_barrier(&self) -> Result<(), WriteError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let index = self
            .on_leader(
                deadline,
                async || self.read_index_as_leader(deadline).await,
                || RpcRequest::ReadIndex,
                |r| match r {
                    RpcResponse::ReadIndex(r) => Some(r),
                    _ => None,
                },
            )
            .await?;
        self.wait_applied(index, deadline).await
    }

    /// Runs a leader-only operation: here when this node leads, else on the leader over the
    /// cluster port. Waits out elections and leader changes until `deadline`.
    async fn on_leader<T>(
        &self,
        deadline: Instant,
        local: impl AsyncFn() -> Result<T, WriteError>,
        remote: impl Fn() -> RpcRequest,
        answer: impl Fn(RpcResponse) -> Option<Result<T, WriteError>>,
    ) -> Result<T, WriteError> {
        loop {
            let attempt = match self.leader() {
                Some(l) if l == self.id() => local().await,
                Some(l) => self.forward(l, remote(), deadline).await.and_then(|r| {
                    answer(r).unwrap_or_else(|| {
                        Err(WriteError::Unavailable(
                            "the leader answered with the wrong message".into(),
                        ))
                    })
                }),
                None => Err(WriteError::NotLeader { leader: None }),
            };
            match attempt {
                Err(WriteError::NotLeader { .. }) if Instant::now() < deadline => {
                    self.await_leader_change().await
                }
                Err(WriteError::NotLeader { .. }) => return Err(no_leader()),
                other => return other,
            }
        }
    }

    pub async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), WriteError> {
        let mut rx = self.inner.state.clone();
        let waited = tokio::time::timeout_at(deadline.into(), rx.wait_for(|s| s.applied >= index))
            .await
            .map(|r| r.map(|_| ()));
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.stopped()),
            Err(_) => Err(WriteError::Unavailable(format!(
                "this node has not applied log index {index} yet; it is catching up with the leader"
            ))),
        }
    }

    async fn await_leader_change(&self) {
        let mut m = self.inner.raft.metrics();
        let _ = tokio::time::timeout(Duration::from_millis(100), m.changed()).await;
    }

    /// Sends a leader-only request. A request that never left (the leader is unreachable) counts
    /// as "no leader" so the caller waits for an election and tries again; one that may have
    /// arrived is not repeated.
    async fn forward(
        &self,
        leader: NodeId,
        req: RpcRequest,
        deadline: Instant,
    ) -> Result<RpcResponse, WriteError> {
        let addr = self
            .addr_of(leader)
            .ok_or(WriteError::NotLeader { leader: None })?;
        let timeout = deadline.saturating_duration_since(Instant::now());
        match self.inner.network.peer(&addr).call(&req, timeout).await {
            Ok(r) => Ok(r),
            Err(CallError::Connect { .. }) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(WriteError::NotLeader { leader: None })
            }
            Err(e) => Err(WriteError::Unavailable(format!(
                "forwarding to the leader failed: {e}; the write may or may not have been applied"
            ))),
        }
    }

    async fn write_as_leader(
        &self,
        cmd: Command,
        deadline: Instant,
    ) -> Result<WriteOk, WriteError> {
        // Validate against a state that holds every write acknowledged so far: once an entry of
        // the current term is applied, everything committed before it is too.
        let mut metrics = self.inner.raft.metrics();
        let caught_up = metrics.wait_for(|m| {
            m.current_leader == Some(m.id)
                && m.last_applied.map(|l| l.leader_id.term) == Some(m.current_term)
        });
        let waited = tokio::time::timeout_at(deadline.into(), caught_up)
            .await
            .map(|r| r.map(|_| ()));
        match waited {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(self.stopped()),
            Err(_) => return Err(no_leader()),
        }
        // A leader handing over takes no more writes: they wait (`on_leader`) for its successor
        // and go there, or come back here if the hand-over fails.
        if self.leader() != Some(self.id())
            || (self.inner.handing_over).load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(WriteError::NotLeader {
                leader: self.leader(),
            });
        }
        let state = self.state();
        if crate::state::Applied::Unchanged == state.plan(&cmd)? {
            return Ok(WriteOk {
                index: state.applied,
                revision: state.revision,
                applied: crate::state::Applied::Unchanged,
            });
        }
        let write = self.inner.raft.client_write(cmd);
        let resp = match tokio::time::timeout_at(deadline.into(), write).await {
            Ok(r) => r,
            Err(_) => {
                return Err(WriteError::Unavailable(
                    "no quorum: the write was not committed in time; it may still be".into(),
                ))
            }
        };
        match resp {
            Ok(r) => {
                let applied = r.data.outcome?;
                Ok(WriteOk {
                    index: r.log_id.index,
                    revision: r.data.revision,
                    applied,
                })
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(WriteError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(e) => Err(WriteError::Unavailable(e.to_string())),
        }
    }

    async fn read_index_as_leader(&self, deadline: Instant) -> Result<u64, WriteError> {
        match tokio::time::timeout_at(deadline.into(), self.inner.raft.ensure_linearizable()).await
        {
            Ok(Ok(log_id)) => Ok(log_id.map(|l| l.index).unwrap_or(0)),
            Ok(Err(RaftError::APIError(e))) => Err(WriteError::NotLeader {
                leader: match e {
                    openraft::error::CheckIsLeaderError::ForwardToLeader(f) => f.leader_id,
                    _ => None,
                },
            }),
            Ok(Err(e)) => Err(WriteError::Unavailable(e.to_string())),
            Err(_) => Err(no_leader()),
        }
    }

    /// `GET /cluster`: membership from the applied config, reachability by probing each peer.
    pub async fn status(&self) -> ClusterStatus {
        let m = self.inner.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership().clone();
        let probes = membership.nodes().map(|(id, node)| {
            let (id, addr) = (*id, node.addr.clone());
            let voter = membership.voter_ids().any(|v| v == id);
            let peer = self.inner.network.peer(&addr);
            let me = self.id();
            async move {
                let reachable = id == me
                    || matches!(
                        peer.call(&RpcRequest::Ping, PING_TIMEOUT).await,
                        Ok(RpcResponse::Pong)
                    );
                MemberStatus {
                    id,
                    addr,
                    voter,
                    reachable,
                }
            }
        });
        let members = futures_util::future::join_all(probes).await;
        let state = self.state();
        ClusterStatus {
            node_id: self.id(),
            leader_id: m.current_leader,
            term: m.current_term,
            revision: state.revision,
            applied_index: state.applied,
            members,
        }
    }

    /// Where this node's request counts come from (the gateway's telemetry); set once.
    pub fn set_usage_source(&self, source: crate::usage::UsageSource) {
        let _ = self.inner.usage.set(source);
    }

    /// This node's request counts (none before a source is set).
    pub fn local_usage(&self, filter: &crate::usage::UsageFilter) -> Vec<crate::usage::UsageRow> {
        self.inner
            .usage
            .get()
            .map(|s| s(filter))
            .unwrap_or_default()
    }

    /// One request to the member at `addr`; `None` when it did not answer in time.
    pub(crate) async fn call_member(
        &self,
        addr: &str,
        req: &RpcRequest,
        timeout: Duration,
    ) -> Option<RpcResponse> {
        self.inner.network.peer(addr).call(req, timeout).await.ok()
    }

    /// Fault injection (tests, the chaos suite): cut this node off from every peer, both
    /// ways, or heal it. Its proxy and admin listeners keep running.
    pub fn set_isolated(&self, isolated: bool) {
        self.inner.network.set_isolated(isolated);
    }

    /// Graceful: [`ClusterNode::step_down`] (`node/handover.rs`), then
    /// [`ClusterNode::shutdown`].
    pub async fn shutdown_gracefully(&self) {
        self.step_down().await;
        self.shutdown().await;
    }

    /// Stops serving peers and stops Raft; the store is closed once its tasks have ended.
    pub async fn shutdown(&self) {
        self.inner.contact.leaving();
        let _ = self.inner.shutdown.send(true);
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shut down with an error");
        }
    }
}

fn no_leader() -> WriteError {
    WriteError::Unavailable("no leader is reachable (no quorum); try again shortly".into())
}

/// Opens the log store and the state machine. A restarted node may find its previous incarnation
/// still closing the redb file (its writer thread ends just after Raft): wait for it briefly.
async fn open_stores(
    dir: &std::path::Path,
) -> Result<(LogStore, StateMachine, watch::Receiver<Arc<ClusterState>>), StartError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        match LogStore::open(&dir.join("raft")) {
            Ok(l) => break l,
            Err(e) if Instant::now() < deadline && e.to_string().contains("already open") => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                return Err(StartError::Storage {
                    dir: dir.to_path_buf(),
                    message: e.to_string(),
                })
            }
        }
    };
    let (sm, state) =
        StateMachine::open(&dir.join("snapshots")).map_err(|e| StartError::Storage {
            dir: dir.to_path_buf(),
            message: e.to_string(),
        })?;
    Ok((log, sm, state))
}

impl rpc::Handler for ClusterNode {
    async fn handle(&self, req: RpcRequest) -> RpcResponse {
        if self.inner.network.isolated() {
            // Partitioned: the request is never answered (the caller times out).
            return std::future::pending().await;
        }
        let raft = self.raft();
        match req {
            RpcRequest::Append(r) => {
                let resp = raft.append_entries(r).await;
                if let Ok(ok) = &resp {
                    self.inner.contact.appended(ok);
                }
                RpcResponse::Append(resp)
            }
            RpcRequest::Vote(r) => {
                let resp = raft.vote(r.clone()).await;
                if matches!(&resp, Ok(v) if outbid::refused_for_log(&r, v)) {
                    self.outbid(&r);
                }
                RpcResponse::Vote(resp)
            }
            RpcRequest::InstallSnapshot(r) => {
                let vote = r.vote;
                let resp = raft.install_snapshot(r).await;
                if let Ok(ok) = &resp {
                    self.inner.contact.installed(&vote, &ok.vote);
                }
                RpcResponse::InstallSnapshot(resp)
            }
            RpcRequest::Write(cmd) => {
                let deadline = Instant::now() + REQUEST_TIMEOUT;
                RpcResponse::Write(match self.leader() {
                    Some(l) if l == self.id() => self.write_as_leader(cmd, deadline).await,
                    other => Err(WriteError::NotLeader { leader: other }),
                })
            }
            RpcRequest::ReadIndex => {
                let deadline = Instant::now() + REQUEST_TIMEOUT;
                RpcResponse::ReadIndex(match self.leader() {
                    Some(l) if l == self.id() => self.read_index_as_leader(deadline).await,
                    other => Err(WriteError::NotLeader { leader: other }),
                })
            }
            RpcRequest::Ping => RpcResponse::Pong,
            RpcRequest::Usage(filter) => RpcResponse::Usage(self.local_usage(&filter)),
            // `*_as_leader` answer NotLeader themselves when this node does not lead.
            RpcRequest::AddMember { id, addr, voter } => {
                RpcResponse::Member(self.add_member_as_leader(id, addr, voter).await)
            }
            RpcRequest::RemoveMember { id } => {
                RpcResponse::Member(self.remove_member_as_leader(id).await)
            }
            RpcRequest::TakeOver { from } => {
                self.campaign(from);
                RpcResponse::TakingOver
            }
        }
    }
}
