//! The Raft type configuration and the commands that flow through the log.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::identity::{format_key_id, ApiKey, Consumer, JwtCredential};
use crate::purge::Purge;
use crate::quota::LeaseRequest;
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
    /// A node's quota lease requests and spend reports, many keys in one entry. Internal: it
    /// does not move the configuration revision.
    Leases {
        node: NodeId,
        /// The proposer's clock (unix seconds), used only to forget long-ended windows.
        now: u64,
        requests: Vec<LeaseRequest>,
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
    /// Drops matching cached responses on every node. Internal: it does not move the
    /// configuration revision.
    Purge {
        purge: Purge,
    },
    /// `PUT /config`: services, routes and consumers become exactly these, all at once.
    /// Unchanged resources keep their version; consumers that go lose their credentials;
    /// certificates stay. `IfMatch` holds to the cluster's revision.
    ReplaceConfig {
        services: Vec<Service>,
        routes: Vec<Route>,
        consumers: Vec<Consumer>,
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
            Command::Leases { node, requests, .. } => {
                write!(f, "quota leases of node {node} ({} keys)", requests.len())
            }
            Command::PutCertificate { certificate, .. } => {
                write!(f, "put certificate {}", certificate.name)
            }
            Command::DeleteCertificate { name, .. } => write!(f, "delete certificate {name}"),
            Command::Purge { purge } => write!(f, "purge cache: {purge}"),
            Command::ReplaceConfig {
                services,
                routes,
                consumers,
                ..
            } => write!(
                f,
                "replace config ({} services, {} routes, {} consumers)",
                services.len(),
                routes.len(),
                consumers.len()
            ),
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
