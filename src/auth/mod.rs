//! Who a request is: the credential index the auth supervisor publishes
//! ([`crate::actors::auth`]) and the lookups the request path makes on it.
//!
//! API keys are looked up by their SHA-256 (the state holds nothing else); JWTs by `kid`,
//! else `iss`, then verified by the credential's pinned algorithm ([`jwt::Verifier`]). Every
//! lookup reads the published snapshot: no lock, no mailbox.

pub mod jwt;

use std::collections::HashMap;
use std::sync::Arc;

use raftgate_cluster::identity::hash_key;
use raftgate_cluster::ClusterState;

use jwt::Verifier;

/// One published view of every credential, built from one applied cluster state.
#[derive(Default)]
pub struct AuthIndex {
    /// The applied index this index was built from.
    pub applied: u64,
    state: Arc<ClusterState>,
    by_kid: HashMap<String, Arc<Verifier>>,
    /// Verifiers of credentials with an `issuer`, for tokens without a `kid`.
    by_issuer: HashMap<String, Vec<Arc<Verifier>>>,
}

impl AuthIndex {
    /// The index for `state`. Verifiers of credentials unchanged since `previous` are kept,
    /// so a key's PEM is parsed once per change, not once per state.
    pub fn build(state: Arc<ClusterState>, previous: &AuthIndex) -> AuthIndex {
        let mut by_kid = HashMap::with_capacity(state.jwts.len());
        let mut by_issuer: HashMap<String, Vec<Arc<Verifier>>> = HashMap::new();
        for (kid, credential) in &state.jwts {
            let verifier = match previous.by_kid.get(kid) {
                Some(v) if v.version == credential.version => v.clone(),
                _ => match Verifier::new(credential) {
                    Ok(v) => Arc::new(v),
                    // Validated before it was proposed, so only a node with a different crypto
                    // library could get here; the credential then verifies nothing.
                    Err(e) => {
                        tracing::error!(kid = %kid, consumer = %credential.consumer, error = %e.message, "unusable JWT credential");
                        continue;
                    }
                },
            };
            if let Some(iss) = &verifier.issuer {
                by_issuer
                    .entry(iss.clone())
                    .or_default()
                    .push(verifier.clone());
            }
            by_kid.insert(kid.clone(), verifier);
        }
        AuthIndex {
            applied: state.applied,
            state,
            by_kid,
            by_issuer,
        }
    }

    /// The consumer an API key belongs to.
    ///
    /// The key is found by its SHA-256 in a sorted map: comparisons touch only the hash of
    /// what the client sent, so their timing says nothing about any stored key.
    pub fn api_key(&self, key: &str) -> Option<&Arc<str>> {
        self.state.api_keys.get(&hash_key(key)).map(|k| &k.consumer)
    }

    /// The consumer whose credential signed `token`, when the token is valid now.
    pub fn jwt(&self, token: &str) -> Option<&Arc<str>> {
        let selector = jwt::selector(token)?;
        let candidates: &[Arc<Verifier>] = match (&selector.kid, &selector.iss) {
            (Some(kid), _) => std::slice::from_ref(self.by_kid.get(kid)?),
            (None, Some(iss)) => self.by_issuer.get(iss)?,
            (None, None) => return None,
        };
        candidates
            .iter()
            .find(|v| v.verify(token))
            .map(|v| &v.consumer)
    }

    /// The groups of a consumer (empty when it has none or no longer exists).
    pub fn groups(&self, consumer: &str) -> &[String] {
        self.state
            .consumers
            .get(consumer)
            .map(|c| c.groups.as_slice())
            .unwrap_or(&[])
    }
}

#[cfg(test)]
#[path = "auth_test.rs"]
mod tests;
