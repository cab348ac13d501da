//! The Raft type configuration and the commands that flow through the log.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::identity::{format_key_id, ApiKey, Consumer, JwtCredential};
use crate::spec::{Route, Service};
use crate::state::{Applied, StateError};
use crate::tls::Certificate;

openraft::declare_raft_types!(
    /// raftgate's Raft types: node ids are `u64`, nodes carry their cluster address.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;

/// A condition a write holds to, checked when it is applied (so a race cannot slip past it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Precondition {
    #[default]
    None,
    /// `If-Match: N`: the resource exists and its version is N.
    IfMatch(u64),
    /// `If-None-Match: *`: the resource does not exist yet.
    IfAbsent,
}

/// Every change to the replicated state. Validated before it is proposed; applied by
/// [`crate::state::ClusterState::apply`], which is pure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    PutService {
        service: Service,
        precondition: Precondition,
    },
    DeleteService {
        name: String,
        precondition: Precondition,
    },
    PutRoute {
        route: Route,
        precondition: Precondition,
    },
    DeleteRoute {
        name: String,
        precondition: Precondition,
    },
    PutConsumer {
        consumer: Consumer,
        precondition: Precondition,
    },
    /// Removes the consumer and every credential it holds.
    DeleteConsumer {
        name: String,
        precondition: Precondition,
    },
    /// Adds a key (already hashed by the node that took the call).
    CreateApiKey {
        key: ApiKey,
    },
    RevokeApiKey {
        consumer: String,
        id: u64,
    },
    /// Adds or replaces a JWT credential (its key material checked by the receiving node).
    PutJwt {
        credential: JwtCredential,
    },
    DeleteJwt {
        consumer: String,
        key_id: String,
    },
    /// Adds or replaces a TLS certificate (chain and key checked by the receiving node).
    PutCertificate {
        certificate: Certificate,
        precondition: Precondition,
    },
    DeleteCertificate {
        name: String,
        precondition: Precondition,
    },
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::PutService { service, .. } => write!(f, "put service {}", service.name),
            Command::DeleteService { name, .. } => write!(f, "delete service {name}"),
            Command::PutRoute { route, .. } => write!(f, "put route {}", route.name),
            Command::DeleteRoute { name, .. } => write!(f, "delete route {name}"),
            Command::PutConsumer { consumer, .. } => write!(f, "put consumer {}", consumer.name),
            Command::DeleteConsumer { name, .. } => write!(f, "delete consumer {name}"),
            Command::CreateApiKey { key } => {
                write!(
                    f,
                    "create key {} for {}",
                    format_key_id(key.id),
                    key.consumer
                )
            }
            Command::RevokeApiKey { consumer, id } => {
                write!(f, "revoke key {} of {consumer}", format_key_id(*id))
            }
            Command::PutJwt { credential: c } => {
                write!(f, "put jwt credential {} of {}", c.key_id, c.consumer)
            }
            Command::DeleteJwt { consumer, key_id } => {
                write!(f, "delete jwt credential {key_id} of {consumer}")
            }
            Command::PutCertificate { certificate, .. } => {
                write!(f, "put certificate {}", certificate.name)
            }
            Command::DeleteCertificate { name, .. } => write!(f, "delete certificate {name}"),
        }
    }
}

/// What applying one entry did, returned to the proposer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The configuration revision after this entry.
    pub revision: u64,
    pub outcome: Result<Applied, StateError>,
}
