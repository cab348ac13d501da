//! The certificates actor: owns the proxy's parsed TLS certificates. On every applied cluster
//! state whose certificate map changed it rebuilds the [`CertStore`] (parsing only the
//! certificates that are new or changed) and publishes it through an `ArcSwap`, which the TLS
//! listener's SNI resolver reads on each handshake; then it announces the applied index it
//! covers, so an admin write can wait until this node serves it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use arc_swap::ArcSwap;
use raftgate_cluster::tls::Certificate;
use raftgate_cluster::{ClusterState, OrdMap};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use crate::tls::certs::certified_key;
use crate::tls::store::CertStore;

/// A new cluster state was applied on this node.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConfigApplied {
    pub state: Arc<ClusterState>,
}

pub struct Certificates {
    store: Arc<ArcSwap<CertStore>>,
    /// The certificate map the store was built from (compared by pointer first: cheap when
    /// nothing changed, which is nearly always).
    built_from: Option<OrdMap<String, Arc<Certificate>>>,
    /// Parsed keys by certificate name, with the version they were parsed at.
    parsed: HashMap<String, (u64, Arc<CertifiedKey>)>,
    /// The last applied index the published store reflects.
    published: watch::Sender<u64>,
}

impl Actor for Certificates {
    type Context = Context<Self>;
}

impl Handler<ConfigApplied> for Certificates {
    type Result = ();

    fn handle(&mut self, msg: ConfigApplied, _: &mut Context<Self>) {
        let certs = &msg.state.certificates;
        let unchanged = self
            .built_from
            .as_ref()
            .is_some_and(|old| old.ptr_eq(certs) || old == certs);
        if !unchanged {
            let started = Instant::now();
            self.rebuild(certs);
            self.built_from = Some(certs.clone());
            tracing::debug!(
                certificates = certs.len(),
                micros = started.elapsed().as_micros() as u64,
                "TLS certificates published"
            );
        }
        self.published.send_replace(msg.state.applied);
    }
}

impl Certificates {
    fn rebuild(&mut self, certs: &OrdMap<String, Arc<Certificate>>) {
        let mut parsed = HashMap::with_capacity(certs.len());
        for cert in certs.values() {
            let key = match self.parsed.remove(&cert.name) {
                Some((version, key)) if version == cert.version => key,
                _ => match certified_key(cert) {
                    Ok(key) => key,
                    // Checked by the node that took the write, so only a node whose TLS library
                    // disagrees gets here: it serves the others rather than none.
                    Err(e) => {
                        tracing::error!(certificate = %cert.name, error = %e, "certificate not served");
                        continue;
                    }
                },
            };
            parsed.insert(cert.name.clone(), (cert.version, key));
        }
        let store = CertStore::new(certs.values().filter_map(|c| {
            let (_, key) = parsed.get(&c.name)?;
            Some((key.clone(), &c.snis[..]))
        }));
        self.store.store(Arc::new(store));
        self.parsed = parsed;
    }
}

/// What the rest of the node holds: the published certificates and the index they cover.
#[derive(Clone)]
pub struct CertificatesHandle {
    pub store: Arc<ArcSwap<CertStore>>,
    published: watch::Receiver<u64>,
}

impl CertificatesHandle {
    /// Waits until the store reflects `index`; false at the deadline or when the actor stopped.
    pub async fn wait_published(&self, index: u64, deadline: Instant) -> bool {
        let mut rx = self.published.clone();
        let waited = tokio::time::timeout_at(deadline.into(), rx.wait_for(|i| *i >= index)).await;
        matches!(waited, Ok(Ok(_)))
    }
}

/// Starts the actor on the current arbiter, fed by the node's applied states. When states
/// arrive faster than stores build, the intermediate ones are skipped.
pub fn start(mut states: watch::Receiver<Arc<ClusterState>>) -> CertificatesHandle {
    let store = Arc::new(ArcSwap::from_pointee(CertStore::default()));
    let (published, published_rx) = watch::channel(0);
    let addr = Certificates {
        store: store.clone(),
        built_from: None,
        parsed: HashMap::new(),
        published,
    }
    .start();
    states.mark_changed();
    super::feed(states, addr, |state| ConfigApplied { state });
    CertificatesHandle {
        store,
        published: published_rx,
    }
}
