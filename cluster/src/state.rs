//! `ClusterState`: the replicated configuration and its pure, deterministic `apply`.
//!
//! No IO and no clock: the same commands at the same indexes give the same state on every node.

use std::sync::Arc;

use imbl::OrdMap;
use serde::{Deserialize, Serialize};

use crate::identity::{format_key_id, Consumer, JwtCredential, StoredKey};
use crate::purge::{Purge, PURGES_KEPT};
use crate::quota::{self, QuotaKey, QuotaUsage};
use crate::spec::{Route, Service};
use crate::tls::Certificate;
use crate::types::{Command, Precondition};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    /// The log index at which the configuration last changed.
    pub revision: u64,
    /// The last log index applied to this state (any entry kind).
    pub applied: u64,
    pub services: OrdMap<String, Arc<Service>>,
    pub routes: OrdMap<String, Arc<Route>>,
    pub consumers: OrdMap<String, Arc<Consumer>>,
    /// API keys by the SHA-256 of the key: the lookup the auth path makes.
    pub api_keys: OrdMap<[u8; 32], StoredKey>,
    /// (consumer, key id) → key hash, for listing and revoking a consumer's keys. Derived from
    /// `api_keys`: not in snapshots (half their size with a million keys), rebuilt by
    /// [`ClusterState::decode`].
    #[serde(skip)]
    pub key_ids: OrdMap<(Arc<str>, u64), [u8; 32]>,
    /// Quota accounting by route and subject, for the current window of each.
    pub quotas: OrdMap<QuotaKey, QuotaUsage>,
    /// The hour (of a proposer's clock) ended windows were last forgotten in.
    pub quotas_forgotten_hour: u64,
    /// JWT credentials by key id (`kid`), unique across consumers.
    pub jwts: OrdMap<String, Arc<JwtCredential>>,
    /// TLS certificates by name; an SNI belongs to one certificate at most.
    pub certificates: OrdMap<String, Arc<Certificate>>,
    /// The last [`PURGES_KEPT`] cache purges by log index: a node's cache actor applies each
    /// one past the last it handled, however many states its `watch` channel skipped.
    pub purges: OrdMap<u64, Purge>,
    /// The log index of the newest purge dropped from `purges` (0: none yet). A cache that
    /// handled less than this has missed a purge and clears everything.
    pub purges_forgotten: u64,
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
    #[error("JWT key id {key_id:?} belongs to consumer {consumer:?}; key ids are unique across consumers")]
    KeyIdTaken { key_id: String, consumer: String },
    #[error("SNI {sni:?} belongs to certificate {certificate:?}; remove it there first (an SNI selects one certificate)")]
    SniTaken { sni: String, certificate: String },
    #[error("the cluster is at revision {actual}, not {expected}")]
    RevisionMismatch { expected: u64, actual: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Service,
    Route,
    Consumer,
    ApiKey,
    Jwt,
    Certificate,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Service => "service",
            Kind::Route => "route",
            Kind::Consumer => "consumer",
            Kind::ApiKey => "key",
            Kind::Jwt => "JWT credential",
            Kind::Certificate => "certificate",
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
            Command::Leases {
                node,
                now,
                requests,
            } => {
                quota::apply_leases(&mut self.quotas, &self.routes, *node, requests);
                if now / 3600 > self.quotas_forgotten_hour {
                    quota::forget_ended(&mut self.quotas, *now);
                    self.quotas_forgotten_hour = now / 3600;
                }
                // Internal: the configuration revision stays.
                return Ok(outcome);
            }
            Command::Purge { purge } => {
                self.purges.insert(index, purge.clone());
                while self.purges.len() > PURGES_KEPT {
                    let (oldest, rest) = self.purges.without_min_with_key();
                    self.purges = rest;
                    if let Some((i, _)) = oldest {
                        self.purges_forgotten = i;
                    }
                }
                // Internal: the configuration revision stays.
                return Ok(outcome);
            }
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
                self.drop_credentials(name);
            }
            Command::ReplaceConfig {
                services,
                routes,
                consumers,
                ..
            } => self.apply_replace(index, services, routes, consumers),
            Command::CreateApiKey { key } => {
                // Every key of a consumer shares one copy of its name.
                let consumer = self
                    .key_ids
                    .get_next(&(Arc::from(key.consumer.as_str()), 0))
                    .map(|((c, _), _)| c.clone())
                    .filter(|c| **c == *key.consumer)
                    .unwrap_or_else(|| Arc::from(key.consumer.as_str()));
                self.key_ids.insert((consumer.clone(), key.id), key.hash);
                self.api_keys.insert(
                    key.hash,
                    StoredKey {
                        id: key.id,
                        consumer,
                        version: index,
                    },
                );
            }
            Command::RevokeApiKey { consumer, id } => {
                if let Some(hash) = self.key_ids.remove(&(Arc::from(consumer.as_str()), *id)) {
                    self.api_keys.remove(&hash);
                }
            }
            Command::PutJwt { credential } => {
                let mut stored = credential.clone();
                stored.version = index;
                self.jwts.insert(stored.key_id.clone(), Arc::new(stored));
            }
            Command::DeleteJwt { key_id, .. } => {
                self.jwts.remove(key_id);
            }
            Command::PutCertificate { certificate, .. } => {
                insert(&mut self.certificates, certificate, index)
            }
            Command::DeleteCertificate { name, .. } => {
                self.certificates.remove(name);
            }
        }
        self.revision = index;
        Ok(outcome)
    }

    /// A state from its snapshot encoding (postcard), with its derived indexes rebuilt.
    pub fn decode(bytes: &[u8]) -> Result<ClusterState, postcard::Error> {
        let mut state: ClusterState = postcard::from_bytes(bytes)?;
        state.key_ids = state
            .api_keys
            .iter()
            .map(|(hash, k)| ((k.consumer.clone(), k.id), *hash))
            .collect();
        Ok(state)
    }

    /// What `apply` will answer, without changing anything: also the proposer's pre-check, so
    /// that writes that would fail or change nothing never reach the log.
    pub fn plan(&self, cmd: &Command) -> Result<Applied, StateError> {
        match cmd {
            Command::Leases { .. } => Ok(Applied::Updated),
            Command::ReplaceConfig {
                services,
                routes,
                consumers,
                precondition,
            } => self.plan_replace(services, routes, consumers, *precondition),
            Command::Purge { purge } => match &purge.route {
                Some(route) if !self.routes.contains_key(route) => Err(StateError::NotFound {
                    kind: Kind::Route,
                    name: route.clone(),
                }),
                _ => Ok(Applied::Deleted),
            },
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
                self.consumer_exists(&key.consumer)?;
                if self
                    .key_ids
                    .contains_key(&(Arc::from(key.consumer.as_str()), key.id))
                {
                    return Err(StateError::AlreadyExists {
                        kind: Kind::ApiKey,
                        name: format_key_id(key.id),
                    });
                }
                if self.api_keys.contains_key(&key.hash) {
                    return Err(StateError::DuplicateKey);
                }
                Ok(Applied::Created)
            }
            Command::RevokeApiKey { consumer, id } => {
                if !self
                    .key_ids
                    .contains_key(&(Arc::from(consumer.as_str()), *id))
                {
                    return Err(StateError::NotFound {
                        kind: Kind::ApiKey,
                        name: format_key_id(*id),
                    });
                }
                Ok(Applied::Deleted)
            }
            Command::PutJwt { credential } => {
                self.consumer_exists(&credential.consumer)?;
                let current = self.jwts.get(&credential.key_id);
                if let Some(other) = current.filter(|c| c.consumer != credential.consumer) {
                    return Err(StateError::KeyIdTaken {
                        key_id: credential.key_id.clone(),
                        consumer: other.consumer.clone(),
                    });
                }
                Ok(upsert_outcome(current.map(|c| &**c), credential))
            }
            Command::DeleteJwt { consumer, key_id } => {
                let owned = self.jwts.get(key_id).map(|c| &c.consumer);
                if owned != Some(consumer) {
                    return Err(StateError::NotFound {
                        kind: Kind::Jwt,
                        name: key_id.clone(),
                    });
                }
                Ok(Applied::Deleted)
            }
            Command::PutCertificate {
                certificate,
                precondition,
            } => {
                let current = self.certificates.get(&certificate.name);
                check(
                    Kind::Certificate,
                    &certificate.name,
                    current.map(|c| c.version),
                    *precondition,
                )?;
                let holder = (self.certificates.values())
                    .filter(|c| c.name != certificate.name)
                    .find_map(|c| {
                        let sni = certificate.snis.iter().find(|s| c.snis.contains(s))?;
                        Some((sni, &c.name))
                    });
                if let Some((sni, other)) = holder {
                    return Err(StateError::SniTaken {
                        sni: sni.clone(),
                        certificate: other.clone(),
                    });
                }
                Ok(upsert_outcome(current.map(|c| &**c), certificate))
            }
            Command::DeleteCertificate { name, precondition } => {
                let current = self.certificates.get(name).map(|c| c.version);
                check(Kind::Certificate, name, current, *precondition)?;
                if current.is_none() {
                    return Err(StateError::NotFound {
                        kind: Kind::Certificate,
                        name: name.clone(),
                    });
                }
                Ok(Applied::Deleted)
            }
        }
    }

    /// Drops every API key and JWT credential of `consumer`.
    pub(crate) fn drop_credentials(&mut self, consumer: &str) {
        for id in self.key_ids_of(consumer) {
            if let Some(hash) = self.key_ids.remove(&(Arc::from(consumer), id)) {
                self.api_keys.remove(&hash);
            }
        }
        let owned: Vec<String> = (self.jwts.values())
            .filter(|c| c.consumer == consumer)
            .map(|c| c.key_id.clone())
            .collect();
        for kid in owned {
            self.jwts.remove(&kid);
        }
    }

    fn consumer_exists(&self, name: &str) -> Result<(), StateError> {
        if self.consumers.contains_key(name) {
            Ok(())
        } else {
            Err(StateError::NotFound {
                kind: Kind::Consumer,
                name: name.to_string(),
            })
        }
    }

    /// The ids of a consumer's API keys, in order.
    pub fn key_ids_of(&self, consumer: &str) -> Vec<u64> {
        let name: Arc<str> = Arc::from(consumer);
        self.key_ids
            .range((name.clone(), 0)..=(name, u64::MAX))
            .map(|((_, id), _)| *id)
            .collect()
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
            &self.jwts,
            &self.certificates,
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
pub(crate) fn upsert_outcome<T: Versioned + Clone + PartialEq>(
    current: Option<&T>,
    new: &T,
) -> Applied {
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

fn insert<T: Versioned + Clone>(map: &mut OrdMap<String, Arc<T>>, new: &T, index: u64) {
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
versioned!(Service, Route, Consumer, Certificate);

impl Versioned for JwtCredential {
    fn name(&self) -> &str {
        &self.key_id
    }
    fn version(&self) -> u64 {
        self.version
    }
    fn set_version(&mut self, version: u64) {
        self.version = version
    }
}

#[cfg(test)]
#[path = "state_test.rs"]
mod tests;
