//! `/certificates`: the TLS listener's certificates, managed like the other resources except
//! that the private key is write-only: GET shows the chain and the SNIs, never `key`.

use std::sync::Arc;

use raftgate_cluster::spec::Invalid;
use raftgate_cluster::state::Kind;
use raftgate_cluster::tls::Certificate;
use raftgate_cluster::{ClusterState, Command, OrdMap, Precondition};
use serde::Serialize;

use super::resources::Resource;

/// A certificate as GET shows it.
#[derive(Serialize)]
pub struct CertificateView<'a> {
    name: &'a str,
    version: u64,
    cert: &'a str,
    snis: &'a [String],
}

impl Resource for Certificate {
    const KIND: Kind = Kind::Certificate;
    fn all(state: &ClusterState) -> &OrdMap<String, Arc<Self>> {
        &state.certificates
    }
    fn set_name(&mut self, name: String) {
        self.name = name;
    }
    /// Nothing invalid reaches the log: the chain parses and the key is the leaf's.
    fn validate(&self) -> Result<(), Invalid> {
        Certificate::validate(self)?;
        crate::tls::certs::certified_key(self).map(drop)
    }
    fn put(self, precondition: Precondition) -> Command {
        Command::PutCertificate {
            certificate: self,
            precondition,
        }
    }
    fn delete(name: String, precondition: Precondition) -> Command {
        Command::DeleteCertificate { name, precondition }
    }
    type View<'a> = CertificateView<'a>;
    fn view(&self) -> CertificateView<'_> {
        CertificateView {
            name: &self.name,
            version: self.version,
            cert: &self.cert,
            snis: &self.snis,
        }
    }
}
