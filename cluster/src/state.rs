//! `ClusterState`: the replicated configuration and its pure, deterministic `apply`.
//!
//! No IO and no clock: the same commands at the same indexes give the same state on every node.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Service,
    Route,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Service => "service",
            Kind::Route => "route",
        })
    }
}

impl ClusterState {
    /// Applies the command found at log `index`. On `Err` the state is untouched apart from
    /// `applied`; on `Ok(Unchanged)` likewise.
    pub fn apply(&mut self, index: u64, cmd: &Command) -> Result<Applied, StateError> {
        self.applied = index;
        let applied = match cmd {
            Command::PutService {
                service,
                precondition,
            } => {
                let current = self.services.get(&service.name).map(|s| s.version);
                check(Kind::Service, &service.name, current, *precondition)?;
                upsert(&mut self.services, service, index)
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
                self.services.remove(name);
                Applied::Deleted
            }
            Command::PutRoute {
                route,
                precondition,
            } => {
                let current = self.routes.get(&route.name).map(|r| r.version);
                check(Kind::Route, &route.name, current, *precondition)?;
                if !self.services.contains_key(&route.service) {
                    return Err(StateError::UnknownService {
                        route: route.name.clone(),
                        service: route.service.clone(),
                    });
                }
                upsert(&mut self.routes, route, index)
            }
            Command::DeleteRoute { name, precondition } => {
                let current = self.routes.get(name).map(|r| r.version);
                check(Kind::Route, name, current, *precondition)?;
                if self.routes.remove(name).is_none() {
                    return Err(StateError::NotFound {
                        kind: Kind::Route,
                        name: name.clone(),
                    });
                }
                Applied::Deleted
            }
        };
        if applied != Applied::Unchanged {
            self.revision = index;
        }
        Ok(applied)
    }

    /// What `apply` would answer, without changing anything: the proposer's pre-check, so that
    /// writes that would fail or change nothing never reach the log.
    pub fn dry_run(&self, cmd: &Command) -> Result<Applied, StateError> {
        // Cloning maps of `Arc`s copies pointers, not resources.
        let mut scratch = self.clone();
        scratch.apply(self.applied + 1, cmd)
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
        let bytes = postcard::to_stdvec(&(self.revision, &self.services, &self.routes))
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

/// Inserts `new` unless an equal resource (ignoring its version) is there already.
fn upsert<T: Versioned + Clone + PartialEq>(
    map: &mut BTreeMap<String, Arc<T>>,
    new: &T,
    index: u64,
) -> Applied {
    let mut stored = new.clone();
    let applied = match map.get(new.name()) {
        Some(old) => {
            stored.set_version(old.version());
            if stored == **old {
                return Applied::Unchanged;
            }
            Applied::Updated
        }
        None => Applied::Created,
    };
    stored.set_version(index);
    map.insert(new.name().to_string(), Arc::new(stored));
    applied
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
versioned!(Service, Route);

#[cfg(test)]
#[path = "state_test.rs"]
mod tests;
