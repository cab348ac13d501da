//! Consumers and their credentials, as replicated: API keys exist only as SHA-256 hashes of
//! high-entropy secrets; JWT credentials carry the verification key and the pinned algorithm.

use std::sync::Arc;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::spec::{validate_name, Invalid};

/// `PUT /consumers/{name}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub version: u64,
    #[serde(default)]
    pub groups: Vec<String>,
}

impl Consumer {
    pub fn validate(&self) -> Result<(), Invalid> {
        validate_name(&self.name)?;
        for (i, g) in self.groups.iter().enumerate() {
            validate_name(g).map_err(|e| Invalid {
                field: format!("groups.{i}"),
                message: e.message,
            })?;
        }
        Ok(())
    }
}

/// A new API key as the receiving node hands it to the log: never the key itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Public identifier (shown as 16 hex digits), used in listings and to revoke.
    pub id: u64,
    pub consumer: String,
    /// SHA-256 of the key.
    pub hash: [u8; 32],
}

/// An API key as the state holds it, indexed by its hash: small on purpose, a node holds a
/// million of them (the consumer's name is shared with its other keys).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    pub id: u64,
    pub consumer: Arc<str>,
    /// The revision it was created at.
    pub version: u64,
}

/// A key id as shown to admins: 16 lower-case hex digits.
pub fn format_key_id(id: u64) -> String {
    format!("{id:016x}")
}

/// The id of a key from its shown form; `None` for anything that is not one.
pub fn parse_key_id(text: &str) -> Option<u64> {
    if text.len() != 16 {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

/// JWT algorithms a credential can be pinned to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    ES256,
    ES384,
    EdDSA,
}

impl JwtAlgorithm {
    /// HMAC algorithms verify with a shared secret, the others with a public key.
    pub fn is_hmac(self) -> bool {
        matches!(
            self,
            JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512
        )
    }
}

/// `PUT /consumers/{name}/jwt/{key_id}`: how tokens of this consumer are verified. The `kid`
/// is unique across the cluster, so a token's `kid` names one credential. (No
/// `skip_serializing_if` here or in any replicated type: postcard needs every field.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtCredential {
    /// From the path.
    #[serde(default)]
    pub consumer: String,
    /// From the path: the `kid` tokens carry.
    #[serde(default)]
    pub key_id: String,
    #[serde(default)]
    pub version: u64,
    pub algorithm: JwtAlgorithm,
    /// PEM public key (RS*, ES*, EdDSA).
    #[serde(default)]
    pub public_key: Option<String>,
    /// Shared secret (HS*).
    #[serde(default)]
    pub secret: Option<String>,
    /// When set, the token's `iss` must equal it (and tokens without `kid` are matched by it).
    #[serde(default)]
    pub issuer: Option<String>,
    /// When set, the token's `aud` must contain it.
    #[serde(default)]
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds (at most 300).
    #[serde(default = "default_leeway")]
    pub leeway_s: u64,
}

fn default_leeway() -> u64 {
    5
}

impl JwtCredential {
    /// The shape: the right kind of key material for the algorithm. Whether the PEM parses is
    /// checked by the node that takes the call, which has the crypto.
    pub fn validate(&self) -> Result<(), Invalid> {
        validate_name(&self.consumer)?;
        if self.key_id.is_empty()
            || self.key_id.len() > 200
            || !self.key_id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(Invalid {
                field: "key_id".into(),
                message: "a key id is 1-200 visible ASCII characters".into(),
            });
        }
        if self.leeway_s > 300 {
            return Err(Invalid {
                field: "leeway_s".into(),
                message: "the leeway is at most 300 seconds".into(),
            });
        }
        let (needed, material, unwanted, extra) = if self.algorithm.is_hmac() {
            ("secret", &self.secret, "public_key", &self.public_key)
        } else {
            ("public_key", &self.public_key, "secret", &self.secret)
        };
        let alg = self.algorithm;
        if extra.is_some() {
            return Err(Invalid {
                field: unwanted.into(),
                message: format!("{alg:?} verifies with a {needed}; remove {unwanted}"),
            });
        }
        match material {
            None => Err(Invalid {
                field: needed.into(),
                message: format!("{alg:?} needs a {needed}"),
            }),
            Some(s) if alg.is_hmac() && s.len() < 16 => Err(Invalid {
                field: "secret".into(),
                message: "an HMAC secret must be at least 16 bytes".into(),
            }),
            Some(_) => Ok(()),
        }
    }

    /// The credential as an admin reads it back: an HMAC secret never leaves the cluster.
    pub fn redacted(&self) -> JwtCredential {
        JwtCredential {
            secret: None,
            ..self.clone()
        }
    }
}

/// Bytes of entropy in a generated key (256 bits, above the 128 the contract asks for).
const KEY_BYTES: usize = 32;
/// Shortest admin-supplied key accepted: 16 characters.
pub const MIN_SUPPLIED_KEY_LEN: usize = 16;

pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A new key and its id, both from the OS-seeded CSPRNG.
pub fn generate_key() -> (String, u64) {
    let mut key = [0u8; KEY_BYTES];
    rand::thread_rng().fill_bytes(&mut key);
    (format!("rgk_{}", hex(&key)), generate_key_id())
}

/// A fresh key id (for generated and admin-supplied keys alike).
pub fn generate_key_id() -> u64 {
    rand::thread_rng().next_u64()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn validate_supplied_key(key: &str) -> Result<(), Invalid> {
    if key.len() < MIN_SUPPLIED_KEY_LEN
        || key.len() > 512
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(Invalid {
            field: "key".into(),
            message: format!(
                "a supplied key must be {MIN_SUPPLIED_KEY_LEN}-512 visible ASCII characters (no spaces)"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_long_unique_and_hash_stably() {
        let (a, id_a) = generate_key();
        let (b, id_b) = generate_key();
        assert_ne!(a, b);
        assert_ne!(id_a, id_b);
        assert_eq!(a.len(), 4 + 2 * KEY_BYTES);
        assert_eq!(hash_key(&a), hash_key(&a));
        assert_ne!(hash_key(&a), hash_key(&b));
    }

    #[test]
    fn supplied_keys_need_length_and_no_spaces() {
        assert!(validate_supplied_key("0123456789abcdef").is_ok());
        assert!(validate_supplied_key("short").is_err());
        assert!(validate_supplied_key("0123456789 abcdef").is_err());
    }

    #[test]
    fn consumer_groups_are_names() {
        let c = Consumer {
            name: "alice".into(),
            version: 0,
            groups: vec!["gold".into(), "bad group".into()],
        };
        assert_eq!(c.validate().unwrap_err().field, "groups.1");
    }
}

#[cfg(test)]
mod jwt_tests {
    use super::*;

    fn cred(
        algorithm: JwtAlgorithm,
        secret: Option<&str>,
        public_key: Option<&str>,
    ) -> JwtCredential {
        JwtCredential {
            consumer: "alice".into(),
            key_id: "k1".into(),
            version: 0,
            algorithm,
            public_key: public_key.map(Into::into),
            secret: secret.map(Into::into),
            issuer: None,
            audience: None,
            leeway_s: 5,
        }
    }

    #[test]
    fn a_credential_carries_the_key_material_its_algorithm_verifies_with() {
        assert!(cred(JwtAlgorithm::HS256, Some("0123456789abcdef"), None)
            .validate()
            .is_ok());
        assert_eq!(
            cred(JwtAlgorithm::HS256, Some("short"), None)
                .validate()
                .unwrap_err()
                .field,
            "secret"
        );
        assert_eq!(
            cred(JwtAlgorithm::RS256, Some("0123456789abcdef"), None)
                .validate()
                .unwrap_err()
                .field,
            "secret"
        );
        assert_eq!(
            cred(JwtAlgorithm::ES256, None, None)
                .validate()
                .unwrap_err()
                .field,
            "public_key"
        );
        let hs = cred(JwtAlgorithm::HS512, Some("0123456789abcdef"), None);
        assert_eq!(hs.redacted().secret, None);
    }

    #[test]
    fn key_ids_round_trip_through_their_shown_form() {
        let id = generate_key_id();
        assert_eq!(parse_key_id(&format_key_id(id)), Some(id));
        assert_eq!(parse_key_id("a1"), None);
    }
}
