//! TLS, server and client side, on rustls with the ring provider only.
//!
//! - [`certs`]: a replicated [`Certificate`]'s PEM → a rustls [`CertifiedKey`], and the admin
//!   check that the chain parses and the key matches the leaf.
//! - [`store`]: the proxy's certificate snapshot and the SNI resolver the TLS listener reads
//!   on each handshake (rebuilt by [`crate::actors::certificates`] when the state changes).
//! - [`upstream`]: client configs for `https://` targets (web roots, or the service's CA).
//!
//! [`Certificate`]: raftgate_cluster::tls::Certificate
//! [`CertifiedKey`]: rustls::sign::CertifiedKey

pub mod certs;
pub mod store;
pub mod upstream;

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

/// The one crypto provider, passed explicitly everywhere: the process-wide default is never
/// installed or relied on, so another crate enabling a second provider cannot make a
/// config builder ambiguous.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}
