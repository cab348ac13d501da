//! raftgate-cluster: everything Raft.
//!
//! # Layout
//! - [`spec`]: the replicated resources (services, routes) and their stateless validation.
//! - [`identity`]: consumers and credentials (API keys stored as hashes).
//! - [`tls`]: TLS certificates for the proxy's TLS listener.
//! - [`purge`]: cache purges, replicated as log entries.
//! - [`declarative`]: the whole configuration as one document (`/config`), its diff and replace.
//! - [`rate_limit`]: a route's `rate_limit` spec (enforced per node, never in the log).
//! - [`types`]: openraft's type configuration, [`types::Command`] and [`types::Response`].
//! - [`state`]: [`state::ClusterState`] and its pure `apply`.
//! - [`log_store`]: the durable Raft log on redb.
//! - [`state_machine`]: applies entries, writes snapshots, publishes the state.
//! - [`rpc`], [`network`]: the authenticated node-to-node protocol, server and client.
//! - [`node`]: starts a node and offers the write/read API the admin layer uses.
//! - [`membership`]: adding and removing nodes, decided against the current membership.
#![forbid(unsafe_code)]
// openraft's storage traits fix `StorageError` (224 bytes) as the error type; boxing it in our
// helpers would only add a conversion at every trait boundary.
#![allow(clippy::result_large_err)]

pub mod declarative;
pub mod purge;
pub mod quota;
pub mod rate_limit;
pub mod spec;
pub mod state;
pub mod tls;
pub mod types;
pub mod usage;

pub use imbl::OrdMap;
pub use state::ClusterState;
pub use types::{Command, NodeId, Precondition, Raft, Response, TypeConfig};
pub mod identity;
pub mod log_store;
pub mod membership;
pub mod network;
pub mod node;
pub mod rpc;
pub mod state_machine;

pub use node::{election_timeout_max_ms, ClusterNode, ClusterStatus, NodeConfig};
pub use rpc::{WriteError, WriteOk};
