//! The node-to-node protocol: a mutually authenticated handshake, then postcard frames.
//!
//! Handshake (both sides prove they hold the cluster secret; nothing secret crosses the wire):
//! 1. server → client: `MAGIC`, a 16-byte server nonce;
//! 2. client → server: `MAGIC`, a 16-byte client nonce, its node id, HMAC(secret, "c" ‖ nonces ‖ id);
//! 3. server → client: status byte (0 = accepted), HMAC(secret, "s" ‖ nonces).
//!
//! A peer that fails the handshake is disconnected before it can send a single Raft message, so a
//! node with the wrong secret can neither vote, append nor forward writes. Then each request is
//! one frame (`u32` big-endian length, postcard body) answered by one frame.

use std::time::Duration;

use hmac::{Hmac, Mac};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::membership::{MemberChange, MembershipError};
use crate::state::{Applied, StateError};
use crate::types::{Command, NodeId, TypeConfig};

const MAGIC: &[u8; 4] = b"RGv1";
/// Snapshot chunks are the largest frames; openraft's default chunk is 3 MiB.
const MAX_FRAME: usize = 64 << 20;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize, Deserialize)]
pub enum RpcRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A write forwarded by a follower; only the leader accepts it.
    Write(Command),
    /// A follower's linearizable read: the leader confirms its leadership and answers the index
    /// the follower must have applied before it reads.
    ReadIndex,
    /// Reachability probe for `GET /cluster`.
    Ping,
    /// `POST /cluster/members` forwarded by a follower; only the leader accepts it.
    AddMember {
        id: NodeId,
        addr: String,
        voter: bool,
    },
    /// `DELETE /cluster/members/{id}` forwarded by a follower; only the leader accepts it.
    RemoveMember {
        id: NodeId,
    },
    /// A leader that is shutting down asks its most caught-up voter to campaign now, rather
    /// than after its election timeout (openraft 0.9 has no leadership transfer).
    TakeOver {
        from: NodeId,
    },
    /// `GET /usage?cluster=true` on another node: this node's request counts, filtered.
    Usage(crate::usage::UsageFilter),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum RpcResponse {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    Write(Result<WriteOk, WriteError>),
    ReadIndex(Result<u64, WriteError>),
    Pong,
    Member(Result<MemberChange, WriteError>),
    /// The successor got the hand-over and campaigns.
    TakingOver,
    Usage(Vec<crate::usage::UsageRow>),
}

/// A write the cluster committed (or found already in place).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOk {
    /// The log index a node must have applied to reflect this write.
    pub index: u64,
    /// The configuration revision after it.
    pub revision: u64,
    pub applied: Applied,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Membership(#[from] MembershipError),
    #[error("this node is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("{0}")]
    Unavailable(String),
}

/// What the server side needs from the node: the Raft handle and the leader-only operations.
pub trait Handler: Clone + Send + Sync + 'static {
    fn handle(&self, req: RpcRequest) -> impl std::future::Future<Output = RpcResponse> + Send;
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    m
}

pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> std::io::Result<()> {
    let body = postcard::to_stdvec(msg).map_err(std::io::Error::other)?;
    let mut buf = Vec::with_capacity(body.len() + 4);
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf).await?;
    w.flush().await
}

pub async fn read_frame<R: AsyncRead + Unpin, T: serde::de::DeserializeOwned>(
    r: &mut R,
) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "frame of {len} bytes exceeds the limit"
        )));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    postcard::from_bytes(&body).map_err(std::io::Error::other)
}

fn refused(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, what.to_string())
}

/// Client half of the handshake.
pub async fn client_handshake(
    stream: &mut TcpStream,
    secret: &[u8],
    my_id: NodeId,
) -> std::io::Result<()> {
    let mut hello = [0u8; 20];
    stream.read_exact(&mut hello).await?;
    if &hello[..4] != MAGIC {
        return Err(refused(
            "the peer does not speak the raftgate cluster protocol",
        ));
    }
    let server_nonce = &hello[4..];
    let mut client_nonce = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut client_nonce);
    let id = my_id.to_be_bytes();
    let proof = mac(secret, &[b"c", server_nonce, &client_nonce, &id])
        .finalize()
        .into_bytes();
    let mut msg = Vec::with_capacity(60);
    msg.extend_from_slice(MAGIC);
    msg.extend_from_slice(&client_nonce);
    msg.extend_from_slice(&id);
    msg.extend_from_slice(&proof);
    stream.write_all(&msg).await?;
    let mut answer = [0u8; 33];
    stream.read_exact(&mut answer).await.map_err(|_| {
        refused("the peer refused our cluster secret (check [cluster] secret on every node)")
    })?;
    if answer[0] != 0 {
        return Err(refused(
            "the peer refused our cluster secret (check [cluster] secret on every node)",
        ));
    }
    mac(secret, &[b"s", server_nonce, &client_nonce])
        .verify_slice(&answer[1..])
        .map_err(|_| {
            refused(
                "the peer does not hold our cluster secret (check [cluster] secret on every node)",
            )
        })
}

/// Server half of the handshake; answers the peer's node id once it proved the secret.
async fn server_handshake(stream: &mut TcpStream, secret: &[u8]) -> std::io::Result<NodeId> {
    let mut server_nonce = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut server_nonce);
    let mut hello = Vec::with_capacity(20);
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&server_nonce);
    stream.write_all(&hello).await?;
    let mut msg = [0u8; 60];
    stream.read_exact(&mut msg).await?;
    let (magic, client_nonce, id, proof) = (&msg[..4], &msg[4..20], &msg[20..28], &msg[28..]);
    if magic != MAGIC
        || mac(secret, &[b"c", &server_nonce, client_nonce, id])
            .verify_slice(proof)
            .is_err()
    {
        let _ = stream.write_all(&[1u8; 33]).await;
        return Err(refused("a peer failed the cluster-secret handshake"));
    }
    let mut answer = Vec::with_capacity(33);
    answer.push(0);
    answer.extend_from_slice(
        &mac(secret, &[b"s", &server_nonce, client_nonce])
            .finalize()
            .into_bytes(),
    );
    stream.write_all(&answer).await?;
    Ok(NodeId::from_be_bytes(id.try_into().expect("8 bytes")))
}

/// Accepts peers on `listener` until `shutdown` turns true.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    secret: Vec<u8>,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let (mut stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cluster listener accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (secret, handler, mut shutdown) = (secret.clone(), handler.clone(), shutdown.clone());
        tokio::spawn(async move {
            let node = match tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                server_handshake(&mut stream, &secret),
            )
            .await
            {
                Ok(Ok(id)) => id,
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "refused a cluster connection");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%peer, "cluster handshake timed out");
                    return;
                }
            };
            tracing::debug!(%peer, node, "cluster peer connected");
            loop {
                let req: RpcRequest = tokio::select! {
                    r = read_frame(&mut stream) => match r {
                        Ok(r) => r,
                        Err(_) => return,
                    },
                    _ = shutdown.wait_for(|s| *s) => return,
                };
                let resp = tokio::select! {
                    r = handler.handle(req) => r,
                    _ = shutdown.wait_for(|s| *s) => return,
                };
                if write_frame(&mut stream, &resp).await.is_err() {
                    return;
                }
            }
        });
    }
}
