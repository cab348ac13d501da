//! A [`Certificate`]'s PEM text → a rustls [`CertifiedKey`]: what the admin API checks before a
//! certificate is proposed, and what the certificate store does once per change.

use std::sync::Arc;

use raftgate_cluster::spec::Invalid;
use raftgate_cluster::tls::Certificate;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;

fn invalid(field: &str, message: String) -> Invalid {
    Invalid {
        field: field.into(),
        message,
    }
}

/// Parses the chain and the key and checks that the key belongs to the leaf. Errors name
/// `cert` or `key` and say what to send instead.
pub fn certified_key(cert: &Certificate) -> Result<Arc<CertifiedKey>, Invalid> {
    let chain = parse_chain("cert", &cert.cert)?;
    let key = PrivateKeyDer::from_pem_slice(cert.key.as_bytes()).map_err(|e| {
        invalid(
            "key",
            format!(
                "no private key found ({e}): send the leaf's key as PEM \
                 (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)"
            ),
        )
    })?;
    let signing = super::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| {
            invalid(
                "key",
                format!(
                    "the key cannot be used ({e}): send an RSA, ECDSA P-256/P-384 or Ed25519 key"
                ),
            )
        })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => Ok(Arc::new(certified)),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(invalid(
                "key",
                "the key does not match the certificate (the first one in `cert`): send the key \
             the certificate was issued for, or put the leaf certificate first"
                    .into(),
            ))
        }
        Err(e) => Err(invalid(
            "key",
            format!("the key cannot be checked against the certificate: {e}"),
        )),
    }
}

/// A PEM bundle of X.509 certificates, each one parsed; at least one.
pub fn parse_chain(field: &str, pem: &str) -> Result<Vec<CertificateDer<'static>>, Invalid> {
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(field, format!("{field} is not valid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(invalid(
            field,
            format!("{field} holds no -----BEGIN CERTIFICATE----- block: send PEM certificates"),
        ));
    }
    for (i, der) in chain.iter().enumerate() {
        if let Err(e) = ParsedCertificate::try_from(der) {
            return Err(invalid(
                field,
                format!("certificate {i} in {field} is not a valid X.509 certificate: {e}"),
            ));
        }
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    fn certificate(cert: String, key: String) -> Certificate {
        Certificate {
            name: "c".into(),
            version: 0,
            cert,
            key,
            snis: vec!["a.test".into()],
        }
    }

    #[test]
    fn a_matching_pair_loads() {
        let (cert, key) = pair("a.test");
        let ck = certified_key(&certificate(cert, key)).unwrap();
        assert_eq!(ck.cert.len(), 1);
    }

    #[test]
    fn bad_pem_and_foreign_keys_name_their_field() {
        let (cert, key) = pair("a.test");
        let (_, other_key) = pair("b.test");
        let field = |c, k| certified_key(&certificate(c, k)).unwrap_err();

        let e = field("not pem".into(), key.clone());
        assert_eq!(e.field, "cert", "{e}");
        let e = field(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
            key.clone(),
        );
        assert_eq!(e.field, "cert", "{e}");
        let e = field(cert.clone(), "garbage".into());
        assert_eq!(e.field, "key", "{e}");
        let e = field(cert, other_key);
        assert_eq!(e.field, "key");
        assert!(e.message.contains("does not match"), "{e}");
    }
}
