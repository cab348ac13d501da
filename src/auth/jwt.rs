//! JWT verification: a credential's key material parsed once into a [`Verifier`] pinned to the
//! credential's algorithm, so a token whose `alg` differs (`none`, or HS256 signed with an RSA
//! public key) is refused before any signature check.

use std::sync::Arc;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use raftgate_cluster::identity::{JwtAlgorithm, JwtCredential};
use raftgate_cluster::spec::Invalid;
use serde::Deserialize;

/// One credential, ready to verify tokens.
pub struct Verifier {
    pub consumer: Arc<str>,
    pub key_id: String,
    /// The credential's version: an unchanged credential keeps its verifier across states.
    pub version: u64,
    pub issuer: Option<String>,
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    /// Parses the credential's key; the error names the field and says what to send instead.
    pub fn new(credential: &JwtCredential) -> Result<Verifier, Invalid> {
        let algorithm = algorithm(credential.algorithm);
        let pem = || credential.public_key.as_deref().unwrap_or("").as_bytes();
        let key = match credential.algorithm {
            JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512 => Ok(
                DecodingKey::from_secret(credential.secret.as_deref().unwrap_or("").as_bytes()),
            ),
            JwtAlgorithm::RS256 | JwtAlgorithm::RS384 | JwtAlgorithm::RS512 => {
                DecodingKey::from_rsa_pem(pem()).map_err(|e| ("an RSA public key", e))
            }
            JwtAlgorithm::ES256 | JwtAlgorithm::ES384 => {
                DecodingKey::from_ec_pem(pem()).map_err(|e| ("an EC public key", e))
            }
            JwtAlgorithm::EdDSA => {
                DecodingKey::from_ed_pem(pem()).map_err(|e| ("an Ed25519 public key", e))
            }
        }
        .map_err(|(what, e)| Invalid {
            field: "public_key".into(),
            message: format!(
                "{:?} needs {what} in PEM (\"-----BEGIN PUBLIC KEY-----\"): {e}",
                credential.algorithm
            ),
        })?;
        let mut validation = Validation::new(algorithm);
        validation.leeway = credential.leeway_s;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        match &credential.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &credential.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(Verifier {
            consumer: Arc::from(credential.consumer.as_str()),
            key_id: credential.key_id.clone(),
            version: credential.version,
            issuer: credential.issuer.clone(),
            key,
            validation,
        })
    }

    /// Whether `token` is signed by this credential and valid now.
    pub fn verify(&self, token: &str) -> bool {
        jsonwebtoken::decode::<serde::de::IgnoredAny>(token, &self.key, &self.validation).is_ok()
    }
}

fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::HS384 => Algorithm::HS384,
        JwtAlgorithm::HS512 => Algorithm::HS512,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::RS384 => Algorithm::RS384,
        JwtAlgorithm::RS512 => Algorithm::RS512,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::ES384 => Algorithm::ES384,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

/// What picks a token's credential: the header's `kid`, else the claims' `iss`. Read without
/// verifying anything; the verifier then checks everything.
#[derive(Debug, Default, PartialEq)]
pub struct Selector {
    pub kid: Option<String>,
    pub iss: Option<String>,
}

/// The selector of a compact JWS, or `None` when `token` is not shaped like one.
pub fn selector(token: &str) -> Option<Selector> {
    #[derive(Deserialize)]
    struct Header {
        kid: Option<String>,
    }
    #[derive(Deserialize)]
    struct Claims {
        iss: Option<String>,
    }
    let mut parts = token.split('.');
    let (header, claims, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let decode = |part: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .ok()
    };
    let header: Header = serde_json::from_slice(&decode(header)?).ok()?;
    let kid = header.kid;
    // The claims are only needed when there is no kid.
    let iss = match kid {
        Some(_) => None,
        None => serde_json::from_slice::<Claims>(&decode(claims)?).ok()?.iss,
    };
    Some(Selector { kid, iss })
}

/// Whether a bearer credential is a JWT rather than an API key (for `auth: any`).
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.bytes().filter(|&b| b == b'.').count() == 2
}
