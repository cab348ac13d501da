//! The node-to-node client: pooled, authenticated connections per peer, used by openraft's
//! replication and by write forwarding.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use tokio::net::TcpStream;

use crate::rpc::{client_handshake, read_frame, write_frame, RpcRequest, RpcResponse};
use crate::types::{NodeId, TypeConfig};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Forwarded admin writes run concurrently, one connection each: keep enough for a busy admin
/// API so that bursts reuse connections instead of paying a connect and a handshake.
const MAX_IDLE_PER_PEER: usize = 64;

/// Connections to one peer address.
pub struct PeerClient {
    addr: String,
    secret: Arc<Vec<u8>>,
    my_id: NodeId,
    /// Idle connections with the thread that opened them. A tokio socket belongs to the
    /// runtime it was opened on, and every actix runtime is one thread: the admin API's worker,
    /// each proxy worker and the main system each reuse only their own connections, so none
    /// picks up a socket whose runtime has stopped (a worker ends during a graceful stop).
    idle: Mutex<Vec<(ThreadId, TcpStream)>>,
    isolated: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Nothing was sent: safe to try again anywhere.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    /// The request may or may not have been received.
    #[error("lost the connection to {addr}: {source}")]
    Unreachable {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr} did not answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("{addr} answered with the wrong message kind")]
    Protocol { addr: String },
}

impl PeerClient {
    fn take_idle(&self) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let me = std::thread::current().id();
        while let Some(at) = idle.iter().rposition(|(t, _)| *t == me) {
            let (_, s) = idle.remove(at);
            // A pooled connection the peer closed (it restarted) reads EOF at once: drop it.
            let mut probe = [0u8; 1];
            match s.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(s),
                _ => continue,
            }
        }
        None
    }

    fn put_idle(&self, s: TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() >= MAX_IDLE_PER_PEER {
            // The oldest first: it may belong to a thread that has ended.
            idle.remove(0);
        }
        idle.push((std::thread::current().id(), s));
    }

    async fn connect(&self) -> std::io::Result<TcpStream> {
        let mut s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        s.set_nodelay(true)?;
        tokio::time::timeout(
            CONNECT_TIMEOUT * 5,
            client_handshake(&mut s, &self.secret, self.my_id),
        )
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out"))??;
        Ok(s)
    }

    /// One request, one response. Fails without retrying: callers decide what is safe to repeat.
    pub async fn call(
        &self,
        req: &RpcRequest,
        timeout: Duration,
    ) -> Result<RpcResponse, CallError> {
        let unreachable = |source| CallError::Unreachable {
            addr: self.addr.clone(),
            source,
        };
        if self.isolated.load(Ordering::Acquire) {
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
            return Err(CallError::Connect {
                addr: self.addr.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NetworkUnreachable,
                    "this node is isolated (fault injection)",
                ),
            });
        }
        let exchange = async {
            let mut s = match self.take_idle() {
                Some(s) => s,
                None => self.connect().await.map_err(|source| CallError::Connect {
                    addr: self.addr.clone(),
                    source,
                })?,
            };
            write_frame(&mut s, req).await.map_err(unreachable)?;
            let resp: RpcResponse = read_frame(&mut s).await.map_err(unreachable)?;
            self.put_idle(s);
            Ok(resp)
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout {
                addr: self.addr.clone(),
                timeout,
            }),
        }
    }
}

/// All peers, by address, shared by every openraft client and by forwarding.
#[derive(Clone)]
pub struct Network {
    secret: Arc<Vec<u8>>,
    my_id: NodeId,
    peers: Arc<Mutex<HashMap<String, Arc<PeerClient>>>>,
    /// Fault injection: while set, this node neither reaches nor answers its peers.
    isolated: Arc<AtomicBool>,
}

impl Network {
    pub fn new(my_id: NodeId, secret: Vec<u8>) -> Network {
        Network {
            secret: Arc::new(secret),
            my_id,
            peers: Default::default(),
            isolated: Default::default(),
        }
    }

    /// Cuts this node off from every peer (both ways) or heals it: the chaos suite's and the
    /// tests' partition, without touching the operating system.
    pub fn set_isolated(&self, isolated: bool) {
        self.isolated.store(isolated, Ordering::Release);
    }

    pub fn isolated(&self) -> bool {
        self.isolated.load(Ordering::Acquire)
    }

    pub fn my_id(&self) -> NodeId {
        self.my_id
    }

    pub fn peer(&self, addr: &str) -> Arc<PeerClient> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers
            .entry(addr.to_string())
            .or_insert_with(|| {
                Arc::new(PeerClient {
                    addr: addr.to_string(),
                    secret: self.secret.clone(),
                    my_id: self.my_id,
                    idle: Mutex::new(Vec::new()),
                    isolated: self.isolated.clone(),
                })
            })
            .clone()
    }
}

pub struct PeerConn {
    target: NodeId,
    peer: Arc<PeerClient>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConn;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConn {
        PeerConn {
            target,
            peer: self.peer(&node.addr),
        }
    }
}

fn to_rpc_error<E: std::error::Error>(e: CallError) -> RPCError<NodeId, BasicNode, E> {
    match e {
        CallError::Connect { .. } => RPCError::Unreachable(Unreachable::new(&e)),
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

impl PeerConn {
    /// Raft's own RPCs are safe to repeat; a pooled connection that died is retried once fresh.
    async fn raft_call(
        &self,
        req: RpcRequest,
        option: &RPCOption,
    ) -> Result<RpcResponse, CallError> {
        match self.peer.call(&req, option.hard_ttl()).await {
            Err(CallError::Unreachable { .. } | CallError::Connect { .. }) => {
                self.peer.call(&req, option.hard_ttl()).await
            }
            other => other,
        }
    }

    fn remote<E: std::error::Error>(
        &self,
        e: RaftError<NodeId, E>,
    ) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }

    fn protocol<E: std::error::Error>(&self) -> RPCError<NodeId, BasicNode, E> {
        to_rpc_error(CallError::Protocol {
            addr: self.peer.addr.clone(),
        })
    }
}

impl RaftNetwork<TypeConfig> for PeerConn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self
            .raft_call(RpcRequest::Append(rpc), &option)
            .await
            .map_err(to_rpc_error)?
        {
            RpcResponse::Append(r) => r.map_err(|e| self.remote(e)),
            _ => Err(self.protocol()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self
            .raft_call(RpcRequest::InstallSnapshot(rpc), &option)
            .await
            .map_err(to_rpc_error)?
        {
            RpcResponse::InstallSnapshot(r) => r.map_err(|e| self.remote(e)),
            _ => Err(self.protocol()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self
            .raft_call(RpcRequest::Vote(rpc), &option)
            .await
            .map_err(to_rpc_error)?
        {
            RpcResponse::Vote(r) => r.map_err(|e| self.remote(e)),
            _ => Err(self.protocol()),
        }
    }
}
