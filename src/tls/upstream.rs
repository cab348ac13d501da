//! Client TLS for `https://` targets: upstream certificates are verified against the public web
//! roots (webpki-roots), or against the service's own CA (`ca_file` or `ca_pem`) instead.

use std::sync::{Arc, Mutex, OnceLock};

use raftgate_cluster::spec::{Invalid, Service};
use rustls::{ClientConfig, RootCertStore};

use super::certs::parse_chain;

/// Where a service's upstream certificates are verified from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust<'a> {
    WebRoots,
    /// A PEM file, read when the client is built.
    File(&'a str),
    /// Inline PEM.
    Pem(&'a str),
}

impl<'a> Trust<'a> {
    pub fn of(service: &'a Service) -> Trust<'a> {
        match (&service.ca_file, &service.ca_pem) {
            (Some(path), _) => Trust::File(path),
            (None, Some(pem)) => Trust::Pem(pem),
            (None, None) => Trust::WebRoots,
        }
    }

    pub fn to_owned(&self) -> OwnedTrust {
        match self {
            Trust::WebRoots => OwnedTrust::WebRoots,
            Trust::File(p) => OwnedTrust::File(p.to_string()),
            Trust::Pem(p) => OwnedTrust::Pem(p.to_string()),
        }
    }
}

/// [`Trust`] to keep, for a client cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnedTrust {
    WebRoots,
    File(String),
    Pem(String),
}

impl OwnedTrust {
    pub fn is(&self, trust: &Trust<'_>) -> bool {
        match (self, trust) {
            (OwnedTrust::WebRoots, Trust::WebRoots) => true,
            (OwnedTrust::File(a), Trust::File(b)) | (OwnedTrust::Pem(a), Trust::Pem(b)) => a == b,
            _ => false,
        }
    }
}

/// Configs built so far, shared by every worker: a CA is read and parsed once per process,
/// not per worker or per connection. Bounded: replaced CAs would otherwise pile up.
static BUILT: Mutex<Vec<(OwnedTrust, Arc<ClientConfig>)>> = Mutex::new(Vec::new());
const MAX_BUILT: usize = 64;

/// The client config for `trust`: HTTP/1.1 by ALPN (the proxy speaks HTTP/1.1 upstream).
/// The first call for a `ca_file` reads it; a failure is not kept, so a file that appears
/// later is picked up.
pub fn client_config(trust: &Trust<'_>) -> Result<Arc<ClientConfig>, String> {
    static WEB: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    if *trust == Trust::WebRoots {
        return Ok(WEB
            .get_or_init(|| {
                build(RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                })
            })
            .clone());
    }
    let found = BUILT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(t, _)| t.is(trust))
        .map(|(_, c)| c.clone());
    if let Some(config) = found {
        return Ok(config);
    }
    // Built outside the lock: reading a file must not stall other workers.
    let config = load(trust)?;
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if built.len() >= MAX_BUILT {
        built.clear();
    }
    built.push((trust.to_owned(), config.clone()));
    Ok(config)
}

fn load(trust: &Trust<'_>) -> Result<Arc<ClientConfig>, String> {
    let roots = match trust {
        Trust::WebRoots => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
        Trust::File(path) => {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read ca_file {path}: {e}"))?;
            roots("ca_file", &pem).map_err(|e| e.message)?
        }
        Trust::Pem(pem) => roots("ca_pem", pem).map_err(|e| e.message)?,
    };
    Ok(build(roots))
}

fn build(roots: RootCertStore) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The trust anchors of a PEM bundle: every certificate must parse and be usable as an anchor.
pub fn roots(field: &str, pem: &str) -> Result<RootCertStore, Invalid> {
    let mut store = RootCertStore::empty();
    for (i, der) in parse_chain(field, pem)?.into_iter().enumerate() {
        store.add(der).map_err(|e| Invalid {
            field: field.into(),
            message: format!("certificate {i} in {field} cannot be a trust anchor: {e}"),
        })?;
    }
    Ok(store)
}

/// The admin's check of a service before it is proposed: its CA (file or inline) parses here.
/// Each node reads `ca_file` again when it builds its client, so it must exist on all of them.
pub fn check_service(service: &Service) -> Result<(), Invalid> {
    match Trust::of(service) {
        Trust::WebRoots => Ok(()),
        Trust::File(path) => {
            let pem = std::fs::read_to_string(path).map_err(|e| Invalid {
                field: "ca_file".into(),
                message: format!(
                    "cannot read {path} on this node ({e}): it must exist on every node"
                ),
            })?;
            roots("ca_file", &pem).map(drop)
        }
        Trust::Pem(pem) => roots("ca_pem", pem).map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_is_read_from_a_file_or_inline_and_checked() {
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
        let pem = ca.cert.pem();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, &pem).unwrap();
        let path = path.to_str().unwrap().to_string();
        let https = Service::new("s", ["https://127.0.0.1:8443"]);

        let with = |file: Option<&str>, inline: Option<&str>| Service {
            ca_file: file.map(String::from),
            ca_pem: inline.map(String::from),
            ..https.clone()
        };
        assert_eq!(check_service(&with(Some(&path), None)), Ok(()));
        assert_eq!(check_service(&with(None, Some(&pem))), Ok(()));
        assert!(client_config(&Trust::File(&path)).is_ok());
        assert!(client_config(&Trust::WebRoots).is_ok());

        let missing = check_service(&with(Some("/nonexistent/ca.pem"), None)).unwrap_err();
        assert_eq!(missing.field, "ca_file");
        let junk = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(
            check_service(&with(None, Some(junk))).unwrap_err().field,
            "ca_pem"
        );
        assert!(client_config(&Trust::File("/nonexistent")).is_err());
    }
}
