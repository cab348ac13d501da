//! The proxy's certificates as one immutable snapshot, and the rustls resolver that picks one by
//! SNI on each handshake: a hash lookup, never a parse (keys are parsed once per change).
//!
//! Selection: the exact SNI first, then a wildcard one label deep (`*.example.com` serves
//! `a.example.com`, not `example.com` nor `a.b.example.com`). A handshake without SNI, or with
//! one no certificate lists, gets the only certificate when exactly one exists; otherwise it
//! fails (the client sees a handshake alert), since any choice would be a guess.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

/// Every certificate of the applied state, indexed by SNI.
#[derive(Default)]
pub struct CertStore {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` is held under `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// The certificate served without a match: the only one, if there is exactly one.
    fallback: Option<Arc<CertifiedKey>>,
}

impl CertStore {
    /// A store of `certs`: each parsed certificate with the SNIs it serves. The state
    /// guarantees an SNI is listed once.
    pub fn new<'a>(certs: impl IntoIterator<Item = (Arc<CertifiedKey>, &'a [String])>) -> Self {
        let mut store = CertStore::default();
        let mut count = 0;
        for (key, snis) in certs {
            count += 1;
            store.fallback = Some(key.clone());
            for sni in snis {
                match sni.strip_prefix("*.") {
                    Some(parent) => store.wildcard.insert(parent.to_string(), key.clone()),
                    None => store.exact.insert(sni.clone(), key.clone()),
                };
            }
        }
        if count != 1 {
            store.fallback = None;
        }
        store
    }

    /// The certificate for a client's SNI (rustls hands it over lowercased).
    pub fn select(&self, sni: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        let found = sni.and_then(|name| {
            self.exact.get(name).or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent)
            })
        });
        found.or(self.fallback.as_ref())
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }
}

/// rustls's hook into the published [`CertStore`].
#[derive(Debug)]
pub struct SniResolver(pub Arc<ArcSwap<CertStore>>);

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("exact", &self.exact.keys().collect::<Vec<_>>())
            .field("wildcard", &self.wildcard.keys().collect::<Vec<_>>())
            .field("fallback", &self.fallback.is_some())
            .finish()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let found = self.0.load().select(hello.server_name()).cloned();
        if found.is_none() {
            tracing::debug!(
                sni = hello.server_name().unwrap_or("-"),
                "TLS handshake refused: no certificate for this SNI"
            );
        }
        found
    }
}

/// The proxy's TLS server config: TLS 1.2 and 1.3, HTTP/1.1 by ALPN, certificates by SNI from
/// `store`.
pub fn server_config(store: Arc<ArcSwap<CertStore>>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver(store)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Arc<CertifiedKey> {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let cert = raftgate_cluster::tls::Certificate {
            name: "c".into(),
            version: 0,
            cert: c.cert.pem(),
            key: c.signing_key.serialize_pem(),
            snis: vec![name.into()],
        };
        super::super::certs::certified_key(&cert).unwrap()
    }

    fn snis(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exact_names_win_over_wildcards_one_label_deep() {
        let (a, wild) = (key("a.example.com"), key("*.example.com"));
        let (a_snis, wild_snis) = (snis(&["a.example.com"]), snis(&["*.example.com"]));
        let store = CertStore::new([(a.clone(), &a_snis[..]), (wild.clone(), &wild_snis[..])]);
        let pick = |sni| store.select(sni).cloned();
        assert!(Arc::ptr_eq(&pick(Some("a.example.com")).unwrap(), &a));
        assert!(Arc::ptr_eq(&pick(Some("b.example.com")).unwrap(), &wild));
        // Two certificates: no SNI or an unknown one has no default.
        assert!(pick(Some("example.com")).is_none());
        assert!(pick(Some("x.b.example.com")).is_none());
        assert!(pick(Some("other.test")).is_none());
        assert!(pick(None).is_none());
    }

    #[test]
    fn a_single_certificate_is_the_default() {
        let only = key("only.test");
        let only_snis = snis(&["only.test"]);
        let store = CertStore::new([(only.clone(), &only_snis[..])]);
        assert!(Arc::ptr_eq(store.select(None).unwrap(), &only));
        assert!(Arc::ptr_eq(store.select(Some("else.test")).unwrap(), &only));

        let empty = CertStore::default();
        assert!(empty.is_empty());
        assert!(empty.select(Some("only.test")).is_none());
    }
}
