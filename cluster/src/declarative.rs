//! The declarative configuration: services, routes and consumers as one [`Document`] (what
//! `GET /config` exports, `PUT /config` and `raftgate ctl apply` send, and config/demo.toml
//! holds), its [`ConfigDiff`] against a state, and the pure apply of
//! [`Command::ReplaceConfig`], which replaces all three in one entry.
//!
//! Credentials (API keys, JWT credentials) and certificates are not part of a document: a
//! replace keeps the credentials of the consumers it keeps and drops those of the consumers it
//! removes, and leaves certificates alone.

use std::collections::BTreeMap;
use std::sync::Arc;

use imbl::OrdMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::identity::Consumer;
use crate::spec::{Invalid, Route, Service};
use crate::state::{upsert_outcome, Applied, ClusterState, StateError, Versioned};
use crate::types::{Command, Precondition};

/// Services, routes and consumers by name. The name is the key; a resource may repeat it but
/// not contradict it. `version`s in a document are ignored.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
    #[serde(default)]
    pub routes: BTreeMap<String, Route>,
    #[serde(default)]
    pub consumers: BTreeMap<String, Consumer>,
}

impl Document {
    /// The configuration part of a state.
    pub fn from_state(state: &ClusterState) -> Document {
        fn section<T: Clone>(map: &OrdMap<String, Arc<T>>) -> BTreeMap<String, T> {
            map.iter()
                .map(|(k, v)| (k.clone(), (**v).clone()))
                .collect()
        }
        Document {
            services: section(&state.services),
            routes: section(&state.routes),
            consumers: section(&state.consumers),
        }
    }

    /// The document as `GET /config` shows it: each resource without its `name` (the key),
    /// its `version` (read-only) and every field that reads back as its default anyway, so an
    /// export is as short as a hand-written file, and without nulls, so it reads back from TOML
    /// too (TOML has no null). Reading it back gives the same resources: each field left out
    /// was tried.
    pub fn to_json(&self) -> Value {
        fn section<T>(map: &BTreeMap<String, T>) -> Value
        where
            T: Serialize + DeserializeOwned + PartialEq + Clone + Versioned + Named,
        {
            Value::Object(
                (map.iter())
                    .map(|(name, r)| (name.clone(), minimal(r)))
                    .collect(),
            )
        }
        serde_json::json!({
            "services": section(&self.services),
            "routes": section(&self.routes),
            "consumers": section(&self.consumers),
        })
    }

    /// Names each resource after its key and clears its version. Fails, naming the field, when
    /// a resource's own `name` contradicts its key.
    pub fn named(mut self) -> Result<Document, Invalid> {
        fn name_all<T: Versioned + Named>(
            kind: &str,
            map: &mut BTreeMap<String, T>,
        ) -> Result<(), Invalid> {
            for (key, r) in map.iter_mut() {
                if !r.name().is_empty() && r.name() != key {
                    return Err(Invalid {
                        field: format!("{kind}.{key}.name"),
                        message: format!(
                            "the resource names {:?} but its key is {key:?}",
                            r.name()
                        ),
                    });
                }
                r.set_name(key.clone());
                r.set_version(0);
            }
            Ok(())
        }
        name_all("services", &mut self.services)?;
        name_all("routes", &mut self.routes)?;
        name_all("consumers", &mut self.consumers)?;
        Ok(self)
    }

    /// What holds across resources: every route names a service of this document. Each
    /// resource's own `validate` is the caller's (the gateway adds checks of its own).
    pub fn validate_references(&self) -> Result<(), Invalid> {
        for (name, route) in &self.routes {
            if !self.services.contains_key(&route.service) {
                return Err(Invalid {
                    field: format!("routes.{name}.service"),
                    message: format!(
                        "names service {:?}, which is not in the document",
                        route.service
                    ),
                });
            }
        }
        Ok(())
    }

    /// The one entry that makes the cluster's configuration this document.
    pub fn replace(self, precondition: Precondition) -> Command {
        Command::ReplaceConfig {
            services: self.services.into_values().collect(),
            routes: self.routes.into_values().collect(),
            consumers: self.consumers.into_values().collect(),
            precondition,
        }
    }

    /// Upserts of every resource, services first (routes need them): loads a document without
    /// removing anything (`raftgate dev` on a data dir that already has state).
    pub fn commands(self) -> Vec<Command> {
        let services = self
            .services
            .into_values()
            .map(|service| Command::PutService {
                service,
                precondition: Precondition::None,
            });
        let routes = self.routes.into_values().map(|route| Command::PutRoute {
            route,
            precondition: Precondition::None,
        });
        let consumers = self
            .consumers
            .into_values()
            .map(|consumer| Command::PutConsumer {
                consumer,
                precondition: Precondition::None,
            });
        services.chain(routes).chain(consumers).collect()
    }
}

/// Resources whose name a document sets from its key.
pub trait Named {
    fn set_name(&mut self, name: String);
}

macro_rules! named {
    ($($t:ty),*) => {$(
        impl Named for $t {
            fn set_name(&mut self, name: String) { self.name = name }
        }
    )*};
}
named!(Service, Route, Consumer);

/// `r` as JSON without the fields that read back as what they are.
fn minimal<T>(r: &T) -> Value
where
    T: Serialize + DeserializeOwned + PartialEq + Clone + Versioned + Named,
{
    let mut bare = r.clone();
    bare.set_name(String::new());
    bare.set_version(0);
    let mut v = serde_json::to_value(&bare).expect("resources serialise to JSON");
    drop_nulls(&mut v);
    let Value::Object(o) = &mut v else {
        return v;
    };
    let keys: Vec<String> = o.keys().cloned().collect();
    for k in keys {
        let Some(removed) = o.remove(&k) else {
            continue;
        };
        let same = serde_json::from_value::<T>(Value::Object(o.clone())).is_ok_and(|t| t == bare);
        if !same {
            o.insert(k, removed);
        }
    }
    v
}

fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(o) => {
            o.retain(|_, v| !v.is_null());
            o.values_mut().for_each(drop_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// What replacing the configuration changes, by name, for one kind of resource.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub deleted: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.updated.is_empty() && self.deleted.is_empty()
    }
}

/// What replacing the configuration changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigDiff {
    pub services: Changes,
    pub routes: Changes,
    pub consumers: Changes,
}

impl ConfigDiff {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.routes.is_empty() && self.consumers.is_empty()
    }
}

/// The wanted resources by name; a name given twice counts once, the last one.
fn wanted<T: Versioned>(resources: &[T]) -> BTreeMap<&str, &T> {
    resources.iter().map(|r| (r.name(), r)).collect()
}

fn changes<T: Versioned + Clone + PartialEq>(
    current: &OrdMap<String, Arc<T>>,
    resources: &[T],
) -> Changes {
    let wanted = wanted(resources);
    let mut out = Changes::default();
    for (name, new) in &wanted {
        match upsert_outcome(current.get(*name).map(|c| &**c), *new) {
            Applied::Created => out.created.push(name.to_string()),
            Applied::Updated => out.updated.push(name.to_string()),
            _ => {}
        }
    }
    out.deleted = (current.keys())
        .filter(|k| !wanted.contains_key(k.as_str()))
        .cloned()
        .collect();
    out
}

/// The new map: unchanged resources keep their stored value (and version), the others get
/// `index`.
fn replaced<T: Versioned + Clone + PartialEq>(
    current: &OrdMap<String, Arc<T>>,
    resources: &[T],
    index: u64,
) -> OrdMap<String, Arc<T>> {
    (wanted(resources).into_iter())
        .map(|(name, new)| {
            let old = current.get(name);
            let kept = old.filter(|old| upsert_outcome(Some(&***old), new) == Applied::Unchanged);
            let stored = kept.cloned().unwrap_or_else(|| {
                let mut stored = new.clone();
                stored.set_version(index);
                Arc::new(stored)
            });
            (name.to_string(), stored)
        })
        .collect()
}

impl ClusterState {
    /// What replacing services, routes and consumers with these would change.
    pub fn diff(
        &self,
        services: &[Service],
        routes: &[Route],
        consumers: &[Consumer],
    ) -> ConfigDiff {
        ConfigDiff {
            services: changes(&self.services, services),
            routes: changes(&self.routes, routes),
            consumers: changes(&self.consumers, consumers),
        }
    }

    /// What replacing the configuration with `doc` would change.
    pub fn diff_document(&self, doc: &Document) -> ConfigDiff {
        let services: Vec<Service> = doc.services.values().cloned().collect();
        let routes: Vec<Route> = doc.routes.values().cloned().collect();
        let consumers: Vec<Consumer> = doc.consumers.values().cloned().collect();
        self.diff(&services, &routes, &consumers)
    }

    /// [`Command::ReplaceConfig`]'s verdict: `If-Match` holds to the cluster's revision, every
    /// route names a service of the new set; Unchanged when the set equals the current one.
    pub(crate) fn plan_replace(
        &self,
        services: &[Service],
        routes: &[Route],
        consumers: &[Consumer],
        precondition: Precondition,
    ) -> Result<Applied, StateError> {
        match precondition {
            Precondition::None => {}
            Precondition::IfMatch(expected) if expected == self.revision => {}
            Precondition::IfMatch(expected) => {
                return Err(StateError::RevisionMismatch {
                    expected,
                    actual: self.revision,
                })
            }
            // "Only if nothing is configured yet".
            Precondition::IfAbsent if self.revision == 0 => {}
            Precondition::IfAbsent => {
                return Err(StateError::RevisionMismatch {
                    expected: 0,
                    actual: self.revision,
                })
            }
        }
        let names = wanted(services);
        if let Some(route) = wanted(routes)
            .into_values()
            .find(|r| !names.contains_key(r.service.as_str()))
        {
            return Err(StateError::UnknownService {
                route: route.name.clone(),
                service: route.service.clone(),
            });
        }
        if self.diff(services, routes, consumers).is_empty() {
            Ok(Applied::Unchanged)
        } else {
            Ok(Applied::Updated)
        }
    }

    /// Applies a planned [`Command::ReplaceConfig`] at `index`.
    pub(crate) fn apply_replace(
        &mut self,
        index: u64,
        services: &[Service],
        routes: &[Route],
        consumers: &[Consumer],
    ) {
        let removed: Vec<String> = (self.consumers.keys())
            .filter(|k| !consumers.iter().any(|c| &c.name == *k))
            .cloned()
            .collect();
        for name in &removed {
            self.drop_credentials(name);
        }
        self.services = replaced(&self.services, services, index);
        self.routes = replaced(&self.routes, routes, index);
        self.consumers = replaced(&self.consumers, consumers, index);
    }
}

#[cfg(test)]
#[path = "declarative_test.rs"]
mod tests;
