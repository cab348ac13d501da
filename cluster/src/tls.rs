//! TLS certificates as a replicated resource: `PUT /certificates/{name}`.
//!
//! The state holds the PEM text as the admin sent it. Whether the chain and key parse and match
//! is checked by the receiving node before the write is proposed (the node crate owns the TLS
//! library); here is only what needs no cryptography: names and SNIs.

use serde::{Deserialize, Serialize};

use crate::spec::{validate_name, Invalid, Service};

/// The largest PEM text accepted for `cert` or `key`: a long chain with RSA-4096 keys fits.
pub const MAX_PEM_BYTES: usize = 64 * 1024;

/// A certificate chain, its private key and the server names (SNI) it answers for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// Taken from the URL path; a body may repeat it but not contradict it.
    #[serde(default)]
    pub name: String,
    /// Read-only: the log index of this resource's last change. Ignored on input.
    #[serde(default)]
    pub version: u64,
    /// PEM: the leaf first, then its intermediates.
    pub cert: String,
    /// PEM: the leaf's private key (PKCS#8, PKCS#1 or SEC1). Never shown by the admin API.
    pub key: String,
    /// Exact names (`api.example.com`) or one leading wildcard label (`*.example.com`).
    pub snis: Vec<String>,
}

impl Certificate {
    /// Stateless validation; that no other certificate holds one of the SNIs is checked against
    /// the state.
    pub fn validate(&self) -> Result<(), Invalid> {
        validate_name(&self.name)?;
        for (field, pem) in [("cert", &self.cert), ("key", &self.key)] {
            if pem.trim().is_empty() {
                return Err(Invalid {
                    field: field.into(),
                    message: format!("{field} is empty: paste the PEM text"),
                });
            }
            if pem.len() > MAX_PEM_BYTES {
                return Err(Invalid {
                    field: field.into(),
                    message: format!("{field} is over {MAX_PEM_BYTES} bytes"),
                });
            }
        }
        if self.snis.is_empty() {
            return Err(Invalid {
                field: "snis".into(),
                message: "a certificate needs at least one SNI (the host names it serves)".into(),
            });
        }
        for (i, sni) in self.snis.iter().enumerate() {
            if !valid_sni(sni) {
                return Err(Invalid {
                    field: format!("snis.{i}"),
                    message: format!(
                        "{sni:?} is not a lowercase DNS name or a leading `*.` wildcard \
                         (e.g. \"api.example.com\", \"*.example.com\")"
                    ),
                });
            }
            if self.snis[..i].contains(sni) {
                return Err(Invalid {
                    field: format!("snis.{i}"),
                    message: format!("{sni:?} is listed twice"),
                });
            }
        }
        Ok(())
    }
}

/// A lowercase DNS name of at least two labels, optionally with `*.` as its whole first label.
pub fn valid_sni(sni: &str) -> bool {
    let bare = sni.strip_prefix("*.").unwrap_or(sni);
    let labels: Vec<&str> = bare.split('.').collect();
    bare.len() <= 253
        && labels.len() >= if bare.len() < sni.len() { 2 } else { 1 }
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
        // A name of digits and dots is an IP address, which SNI never carries.
        && !bare.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// The largest inline CA bundle accepted (`ca_pem`).
pub const MAX_CA_PEM_BYTES: usize = 256 * 1024;

/// The syntax of a service's `ca_file` / `ca_pem`; whether they hold certificates is the
/// receiving node's check.
pub(crate) fn validate_ca(service: &Service) -> Result<(), Invalid> {
    let invalid = |field: &str, message: String| Invalid {
        field: field.into(),
        message,
    };
    let field = match (&service.ca_file, &service.ca_pem) {
        (None, None) => return Ok(()),
        (Some(_), Some(_)) => {
            return Err(invalid(
                "ca_pem",
                "set ca_file or ca_pem, not both: they are two ways to give the same CA".into(),
            ))
        }
        (Some(_), None) => "ca_file",
        (None, Some(_)) => "ca_pem",
    };
    if !service.has_tls_targets() {
        return Err(invalid(
            field,
            format!("{field} verifies https:// targets, and this service has none"),
        ));
    }
    if let Some(path) = &service.ca_file {
        if !path.starts_with('/') || path.len() > 4096 || path.contains('\0') {
            return Err(invalid(
                "ca_file",
                format!("{path:?} must be an absolute path (the same on every node)"),
            ));
        }
    }
    if let Some(pem) = &service.ca_pem {
        if !pem.contains("-----BEGIN CERTIFICATE-----") || pem.len() > MAX_CA_PEM_BYTES {
            return Err(invalid(
                "ca_pem",
                format!(
                    "must hold PEM certificates (-----BEGIN CERTIFICATE-----), \
                     at most {MAX_CA_PEM_BYTES} bytes"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snis_are_dns_names_or_one_leading_wildcard() {
        for ok in ["a.test", "localhost", "*.example.com", "x-1.example.com"] {
            assert!(valid_sni(ok), "{ok}");
        }
        for bad in [
            "",
            "*.",
            "*",
            "*.com",
            "a.*.com",
            "**.a.com",
            "A.test",
            "a..test",
            "-a.test",
            "a_b.test",
            "127.0.0.1",
            "a.test.",
            "a test",
        ] {
            assert!(!valid_sni(bad), "{bad}");
        }
    }

    #[test]
    fn a_ca_is_for_https_targets_and_given_once() {
        let https = Service::new("s", ["https://10.0.0.1"]);
        let pem = "-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n";
        let with = |file: Option<&str>, inline: Option<&str>, s: &Service| {
            validate_ca(&Service {
                ca_file: file.map(String::from),
                ca_pem: inline.map(String::from),
                ..s.clone()
            })
        };
        assert_eq!(with(None, None, &https), Ok(()));
        assert_eq!(with(Some("/etc/ca.pem"), None, &https), Ok(()));
        assert_eq!(with(None, Some(pem), &https), Ok(()));
        let field = |r: Result<(), Invalid>| r.unwrap_err().field;
        assert_eq!(field(with(Some("ca.pem"), None, &https)), "ca_file");
        assert_eq!(field(with(None, Some("junk"), &https)), "ca_pem");
        assert_eq!(field(with(Some("/ca.pem"), Some(pem), &https)), "ca_pem");
        let plain = Service::new("s", ["http://10.0.0.1"]);
        assert_eq!(field(with(Some("/ca.pem"), None, &plain)), "ca_file");
    }

    #[test]
    fn a_certificate_needs_pem_and_distinct_snis() {
        let cert = Certificate {
            name: "c".into(),
            version: 0,
            cert: "-----BEGIN CERTIFICATE-----".into(),
            key: "-----BEGIN PRIVATE KEY-----".into(),
            snis: vec!["a.test".into()],
        };
        assert_eq!(cert.validate(), Ok(()));
        let field = |c: Certificate| c.validate().unwrap_err().field;
        assert_eq!(
            field(Certificate {
                snis: vec![],
                ..cert.clone()
            }),
            "snis"
        );
        assert_eq!(
            field(Certificate {
                snis: vec!["a.test".into(), "a.test".into()],
                ..cert.clone()
            }),
            "snis.1"
        );
        assert_eq!(
            field(Certificate {
                key: " ".into(),
                ..cert.clone()
            }),
            "key"
        );
        assert_eq!(
            field(Certificate {
                cert: "x".repeat(MAX_PEM_BYTES + 1),
                ..cert
            }),
            "cert"
        );
    }
}
