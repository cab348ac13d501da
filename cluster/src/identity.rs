//! Consumers and their credentials, as replicated: API keys exist only as SHA-256 hashes of
//! high-entropy secrets; JWT credentials carry the verification key and the pinned algorithm.

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

/// An API key as the cluster stores it: never the key itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Public identifier, shown in listings and used to revoke.
    pub id: String,
    pub consumer: String,
    /// SHA-256 of the key.
    pub hash: [u8; 32],
    /// The revision it was created at.
    pub version: u64,
}

/// Bytes of entropy in a generated key (256 bits, above the 128 the contract asks for).
const KEY_BYTES: usize = 32;
/// Shortest admin-supplied key accepted: 16 characters.
pub const MIN_SUPPLIED_KEY_LEN: usize = 16;

pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A new key and its id, both from the OS-seeded CSPRNG.
pub fn generate_key() -> (String, String) {
    let mut rng = rand::thread_rng();
    let mut key = [0u8; KEY_BYTES];
    rng.fill_bytes(&mut key);
    let mut id = [0u8; 8];
    rng.fill_bytes(&mut id);
    (format!("rgk_{}", hex(&key)), hex(&id))
}

/// A fresh key id for an admin-supplied key.
pub fn generate_key_id() -> String {
    let mut id = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut id);
    hex(&id)
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
