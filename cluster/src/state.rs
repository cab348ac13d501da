//! `ClusterState`: the replicated configuration and its pure, deterministic `apply`.
//!
//! No IO and no clock: the same commands at the same indexes give the same state on every node.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::identity::{ApiKey, Consumer};
use crate::spec::{Route, Service};
use crate::types::{Command, Precondition};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    /// The log index at which the configuration last changed.
    pub revision: u64,
    /// The last log index applied to this state (any entry kind).
    pub applied: u64,
    pub services: BTreeMap<String, Arc<Service>>,
    pub routes: BTreeMap<String, Arc<Route>>,
    pub consumers: BTreeMap<String, Arc<Consumer>>,
    /// API keys by the SHA-256 of the key: the lookup the auth path makes.
    pub api_keys: BTreeMap<[u8; 32], Arc<ApiKey>>,
    /// Key id → key hash, for listing and revoking by id.
    pub key_ids: BTreeMap<String, [u8; 32]>,
}

/// What an entry did to the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    Created,
    Updated,
    Deleted,
    /// The write equals what is there: nothing changed, the revision did not move.
    Unchanged,
}

/// Why an entry left the state as it was. Deterministic: every node reaches the same verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum StateError {
    #[error("{kind} {name:?} does not exist")]
    NotFound { kind: Kind, name: String },
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: Kind, name: String },
    #[error("{kind} {name:?} is at version {actual:?}, not {expected}")]
    VersionMismatch {
        kind: Kind,
        name: String,
        expected: u64,
        actual: Option<u64>,
    },
    #[error("service {service:?} is used by routes {routes:?}; delete or repoint them first")]
    ServiceInUse {
        service: String,
        routes: Vec<String>,
    },
    #[error("route {route:?} names service {service:?}, which does not exist")]
    UnknownService { route: String, service: String },
    #[error("that key is already registered; keys must be unique")]
    DuplicateKey,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Service,
    Route,
    Consumer,
    ApiKey,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Service => "service",
            Kind::Route => "route",
            Kind::Consumer => "consumer",
            Kind::ApiKey => "key",
        })
    }
}

impl ClusterState {
    /// Applies the command found at log `index`. On `Err` or `Ok(Unchanged)` nothing but
    /// `applied` moves.
    pub fn apply(&mut self, index: u64, cmd: &Command) -> Result<Applied, StateError> {
        self.applied = index;
        let outcome = self.plan(cmd)?;
        if outcome == Applied::Unchanged {
            return Ok(outcome);
        }
        match cmd {
            Command::PutService { service, .. } => insert(&mut self.services, service, index),
            Command::DeleteService { name, .. } => {
                self.services.remove(name);
            }
            Command::PutRoute { route, .. } => insert(&mut self.routes, route, index),
            Command::DeleteRoute { name, .. } => {
                self.routes.remove(name);
            }
            Command::PutConsumer { consumer, .. } => insert(&mut self.consumers, consumer, index),
            Command::DeleteConsumer { name, .. } => {
                self.consumers.remove(name);
                let owned: Vec<[u8; 32]> = self
                    .api_keys
                    .values()
                    .filter(|k| &k.consumer == name)
                    .map(|k| k.hash)
                    .collect();
                for hash in owned {
                    if let Some(k) = self.api_keys.remove(&hash) {
                        self.key_ids.remove(&k.id);
                    }
                }
            }
            Command::CreateApiKey { key } => {
                let mut stored = key.clone();
                stored.version = index;
                self.key_ids.insert(key.id.clone(), key.hash);
                self.api_keys.insert(key.hash, Arc::new(stored));
            }
            Command::RevokeApiKey { id, .. } => {
                if let Some(hash) = self.key_ids.remove(id) {
                    self.api_keys.remove(&hash);
                }
            }
        }
        self.revision = index;
        Ok(outcome)
    }

    /// What `apply` will answer, without changing anything: also the proposer's pre-check, so
    /// that writes that would fail or change nothing never reach the log.
    pub fn plan(&self, cmd: &Command) -> Result<Applied, StateError> {
        match cmd {
            Command::PutService {
                service,
                precondition,
            } => {
                let current = self.services.get(&service.name);
                check(
                    Kind::Service,
                    &service.name,
                    current.map(|s| s.version),
                    *precondition,
                )?;
                Ok(upsert_outcome(current.map(|s| &**s), service))
            }
            Command::DeleteService { name, precondition } => {
                let current = self.services.get(name).map(|s| s.version);
                check(Kind::Service, name, current, *precondition)?;
                if current.is_none() {
                    return Err(StateError::NotFound {
                        kind: Kind::Service,
                        name: name.clone(),
                    });
                }
                let routes = self.routes_using(name);
                if !routes.is_empty() {
                    return Err(StateError::ServiceInUse {
                        service: name.clone(),
                        routes,
                    });
                }
                Ok(Applied::Deleted)
            }
            Command::PutRoute {
                route,
                precondition,
            } => {
                let current = self.routes.get(&route.name);
                check(
                    Kind::Route,
                    &route.name,
                    current.map(|r| r.version),
                    *precondition,
                )?;
                if !self.services.contains_key(&route.service) {
                    return Err(StateError::UnknownService {
                        route: route.name.clone(),
                        service: route.service.clone(),
                    });
                }
                Ok(upsert_outcome(current.map(|r| &**r), route))
            }
            Command::DeleteRoute { name, precondition } => {
                let current = self.routes.get(name).map(|r| r.version);
                check(Kind::Route, name, current, *precondition)?;
                if current.is_none() {
                    return Err(StateError::NotFound {
                        kind: Kind::Route,
                        name: name.clone(),
                    });
                }
                Ok(Applied::Deleted)
            }
            Command::PutConsumer {
                consumer,
                precondition,
            } => {
                let current = self.consumers.get(&consumer.name);
                check(
                    Kind::Consumer,
                    &consumer.name,
                    current.map(|c| c.version),
                    *precondition,
                )?;
                Ok(upsert_outcome(current.map(|c| &**c), consumer))
            }
            Command::DeleteConsumer { name, precondition } => {
                let current = self.consumers.get(name).map(|c| c.version);
                check(Kind::Consumer, name, current, *precondition)?;
                if current.is_none() {
                    return Err(StateError::NotFound {
                        kind: Kind::Consumer,
                        name: name.clone(),
                    });
                }
                Ok(Applied::Deleted)
            }
            Command::CreateApiKey { key } => {
                if !self.consumers.contains_key(&key.consumer) {
                    return Err(StateError::NotFound {
                        kind: Kind::Consumer,
                        name: key.consumer.clone(),
                    });
                }
                if self.key_ids.contains_key(&key.id) {
                    return Err(StateError::AlreadyExists {
                        kind: Kind::ApiKey,
                        name: key.id.clone(),
                    });
                }
                if self.api_keys.contains_key(&key.hash) {
                    return Err(StateError::DuplicateKey);
                }
                Ok(Applied::Created)
            }
            Command::RevokeApiKey { consumer, id } => {
                let owned = self
                    .key_ids
                    .get(id)
                    .and_then(|h| self.api_keys.get(h))
                    .is_some_and(|k| &k.consumer == consumer);
                if !owned {
                    return Err(StateError::NotFound {
                        kind: Kind::ApiKey,
                        name: id.clone(),
                    });
                }
                Ok(Applied::Deleted)
            }
        }
    }

    pub fn routes_using(&self, service: &str) -> Vec<String> {
        self.routes
            .values()
            .filter(|r| r.service == service)
            .map(|r| r.name.clone())
            .collect()
    }

    /// A digest of the configuration, equal on every node that applied the same entries.
    pub fn digest(&self) -> [u8; 32] {
        use sha2::Digest;
        let bytes = postcard::to_stdvec(&(
            self.revision,
            &self.services,
            &self.routes,
            &self.consumers,
            &self.api_keys,
        ))
        .expect("in-memory state always serialises");
        sha2::Sha256::digest(bytes).into()
    }
}

fn check(
    kind: Kind,
    name: &str,
    current: Option<u64>,
    pre: Precondition,
) -> Result<(), StateError> {
    match pre {
        Precondition::None => Ok(()),
        Precondition::IfMatch(expected) if current == Some(expected) => Ok(()),
        Precondition::IfMatch(expected) => Err(StateError::VersionMismatch {
            kind,
            name: name.to_string(),
            expected,
            actual: current,
        }),
        Precondition::IfAbsent if current.is_none() => Ok(()),
        Precondition::IfAbsent => Err(StateError::AlreadyExists {
            kind,
            name: name.to_string(),
        }),
    }
}

/// Created, Updated, or Unchanged when `new` equals what is stored (versions aside).
fn upsert_outcome<T: Versioned + Clone + PartialEq>(current: Option<&T>, new: &T) -> Applied {
    match current {
        None => Applied::Created,
        Some(old) => {
            let mut candidate = new.clone();
            candidate.set_version(old.version());
            if candidate == *old {
                Applied::Unchanged
            } else {
                Applied::Updated
            }
        }
    }
}

fn insert<T: Versioned + Clone>(map: &mut BTreeMap<String, Arc<T>>, new: &T, index: u64) {
    let mut stored = new.clone();
    stored.set_version(index);
    map.insert(new.name().to_string(), Arc::new(stored));
}

/// A resource with a name and a read-only version.
pub trait Versioned {
    fn name(&self) -> &str;
    fn version(&self) -> u64;
    fn set_version(&mut self, version: u64);
}

macro_rules! versioned {
    ($($t:ty),*) => {$(
        impl Versioned for $t {
            fn name(&self) -> &str { &self.name }
            fn version(&self) -> u64 { self.version }
            fn set_version(&mut self, version: u64) { self.version = version }
        }
    )*};
}
versioned!(Service, Route, Consumer);

#[cfg(test)]
#[path = "state_test.rs"]
mod tests;
