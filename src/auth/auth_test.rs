//! The fixtures in tests/fixtures/jwt were made with openssl 3:
//! `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`, `-algorithm EC -pkeyopt
//! ec_paramgen_curve:P-256 | openssl pkcs8 -topk8 -nocrypt` (and P-384), `-algorithm ED25519`;
//! public halves with `openssl pkey -pubout`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use raftgate_cluster::identity::{hash_key, ApiKey, Consumer, JwtAlgorithm, JwtCredential};
use raftgate_cluster::{ClusterState, Command, Precondition};

use super::AuthIndex;

const SECRET: &str = "a-shared-secret-of-some-length";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/jwt/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn credential(kid: &str, algorithm: JwtAlgorithm, public: Option<&str>) -> JwtCredential {
    JwtCredential {
        consumer: "alice".into(),
        key_id: kid.into(),
        version: 0,
        algorithm,
        public_key: public.map(fixture),
        secret: algorithm.is_hmac().then(|| SECRET.to_string()),
        issuer: None,
        audience: None,
        leeway_s: 5,
    }
}

/// Every algorithm's credential, with the key that signs for it.
fn credentials() -> Vec<(JwtCredential, Algorithm, EncodingKey)> {
    let pem = |f: &str| fixture(f).into_bytes();
    let hs = || EncodingKey::from_secret(SECRET.as_bytes());
    vec![
        (
            credential("hs256", JwtAlgorithm::HS256, None),
            Algorithm::HS256,
            hs(),
        ),
        (
            credential("hs384", JwtAlgorithm::HS384, None),
            Algorithm::HS384,
            hs(),
        ),
        (
            credential("hs512", JwtAlgorithm::HS512, None),
            Algorithm::HS512,
            hs(),
        ),
        (
            credential("rs256", JwtAlgorithm::RS256, Some("rsa.pub")),
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&pem("rsa.key")).unwrap(),
        ),
        (
            credential("rs384", JwtAlgorithm::RS384, Some("rsa.pub")),
            Algorithm::RS384,
            EncodingKey::from_rsa_pem(&pem("rsa.key")).unwrap(),
        ),
        (
            credential("rs512", JwtAlgorithm::RS512, Some("rsa.pub")),
            Algorithm::RS512,
            EncodingKey::from_rsa_pem(&pem("rsa.key")).unwrap(),
        ),
        (
            credential("es256", JwtAlgorithm::ES256, Some("ec256.pub")),
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&pem("ec256.key")).unwrap(),
        ),
        (
            credential("es384", JwtAlgorithm::ES384, Some("ec384.pub")),
            Algorithm::ES384,
            EncodingKey::from_ec_pem(&pem("ec384.key")).unwrap(),
        ),
        (
            credential("ed", JwtAlgorithm::EdDSA, Some("ed25519.pub")),
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(&pem("ed25519.key")).unwrap(),
        ),
    ]
}

fn index(credentials: impl IntoIterator<Item = JwtCredential>) -> AuthIndex {
    let mut st = ClusterState::default();
    let mut index = 0;
    let mut apply = |st: &mut ClusterState, cmd: Command| {
        index += 1;
        st.apply(index, &cmd).unwrap();
    };
    apply(
        &mut st,
        Command::PutConsumer {
            consumer: Consumer {
                name: "alice".into(),
                version: 0,
                groups: vec!["gold".into()],
            },
            precondition: Precondition::None,
        },
    );
    apply(
        &mut st,
        Command::CreateApiKey {
            key: ApiKey {
                id: 7,
                consumer: "alice".into(),
                hash: hash_key("alice-key-0123456789"),
            },
        },
    );
    for credential in credentials {
        apply(&mut st, Command::PutJwt { credential });
    }
    AuthIndex::build(Arc::new(st), &AuthIndex::default())
}

fn token(
    alg: Algorithm,
    kid: Option<&str>,
    claims: serde_json::Value,
    key: &EncodingKey,
) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(Into::into);
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

fn valid_claims() -> serde_json::Value {
    serde_json::json!({"sub": "alice", "exp": now() + 600, "nbf": now() - 10})
}

#[test]
fn api_keys_are_found_by_their_hash() {
    let idx = index([]);
    assert_eq!(
        idx.api_key("alice-key-0123456789").map(|c| &**c),
        Some("alice")
    );
    assert_eq!(idx.api_key("alice-key-0123456788"), None);
    assert_eq!(idx.groups("alice"), ["gold".to_string()]);
    assert!(idx.groups("bob").is_empty());
}

#[test]
fn every_algorithm_verifies_its_own_tokens() {
    let creds = credentials();
    let idx = index(creds.iter().map(|(c, _, _)| c.clone()));
    for (cred, alg, key) in &creds {
        let t = token(*alg, Some(&cred.key_id), valid_claims(), key);
        assert_eq!(idx.jwt(&t).map(|c| &**c), Some("alice"), "{alg:?}");
    }
}

#[test]
fn a_token_whose_alg_differs_from_the_credential_is_refused() {
    let creds = credentials();
    let idx = index(creds.iter().map(|(c, _, _)| c.clone()));
    // RS/HS confusion: an HS256 token keyed with the RS credential's public key, under its kid.
    let public = EncodingKey::from_secret(fixture("rsa.pub").as_bytes());
    let forged = token(Algorithm::HS256, Some("rs256"), valid_claims(), &public);
    assert_eq!(idx.jwt(&forged), None);
    // A correctly signed RS384 token sent under the RS256 credential's kid.
    let (_, _, rsa) = &creds[4];
    let t = token(Algorithm::RS384, Some("rs256"), valid_claims(), rsa);
    assert_eq!(idx.jwt(&t), None);
    // `alg: none`, unsigned.
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    for kid in ["hs256", "rs256"] {
        let none = format!(
            "{}.{}.",
            b64(serde_json::json!({"alg": "none", "typ": "JWT", "kid": kid})),
            b64(valid_claims())
        );
        assert_eq!(idx.jwt(&none), None, "{kid}");
    }
}

#[test]
fn time_issuer_audience_kid_and_garbage_are_checked() {
    let mut cred = credential("k", JwtAlgorithm::HS256, None);
    cred.issuer = Some("https://issuer.test".into());
    cred.audience = Some("gateway".into());
    let idx = index([cred]);
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let claims = |exp: u64, nbf: u64, iss: &str, aud: &str| serde_json::json!({"exp": exp, "nbf": nbf, "iss": iss, "aud": aud});
    let sign = |c| token(Algorithm::HS256, Some("k"), c, &key);
    let (iss, aud) = ("https://issuer.test", "gateway");
    assert!(idx
        .jwt(&sign(claims(now() + 60, now() - 60, iss, aud)))
        .is_some());
    // Expired (beyond the 5 s leeway), not yet valid, wrong iss, wrong aud.
    assert!(idx
        .jwt(&sign(claims(now() - 60, now() - 120, iss, aud)))
        .is_none());
    assert!(idx
        .jwt(&sign(claims(now() + 600, now() + 300, iss, aud)))
        .is_none());
    assert!(idx
        .jwt(&sign(claims(
            now() + 60,
            now() - 60,
            "https://evil.test",
            aud
        )))
        .is_none());
    assert!(idx
        .jwt(&sign(claims(now() + 60, now() - 60, iss, "other")))
        .is_none());
    // Within the leeway.
    assert!(idx
        .jwt(&sign(claims(now() - 2, now() - 60, iss, aud)))
        .is_some());
    // `exp` is required.
    assert!(idx
        .jwt(&sign(serde_json::json!({"iss": iss, "aud": aud})))
        .is_none());
    // No kid: matched by iss.
    let by_iss = token(
        Algorithm::HS256,
        None,
        claims(now() + 60, now() - 60, iss, aud),
        &key,
    );
    assert!(idx.jwt(&by_iss).is_some());
    // Unknown kid, unknown iss, garbage.
    let unknown = token(
        Algorithm::HS256,
        Some("nope"),
        claims(now() + 60, 0, iss, aud),
        &key,
    );
    assert!(idx.jwt(&unknown).is_none());
    let stranger = token(
        Algorithm::HS256,
        None,
        claims(now() + 60, 0, "x", aud),
        &key,
    );
    assert!(idx.jwt(&stranger).is_none());
    for garbage in ["", "a.b.c", "eyJ.eyJ.x", "not a token", "...."] {
        assert!(idx.jwt(garbage).is_none(), "{garbage:?}");
    }
}

#[test]
fn key_material_that_does_not_parse_is_refused_with_its_field() {
    let mut cred = credential("k", JwtAlgorithm::RS256, Some("ec256.pub"));
    assert_eq!(
        super::jwt::Verifier::new(&cred).err().unwrap().field,
        "public_key"
    );
    cred.public_key = Some("not a pem".into());
    assert!(super::jwt::Verifier::new(&cred).is_err());
}

#[test]
fn unchanged_credentials_keep_their_verifier() {
    let creds = credentials();
    let first = index(creds.iter().map(|(c, _, _)| c.clone()));
    let again = AuthIndex::build(first.state.clone(), &first);
    assert!(Arc::ptr_eq(&first.by_kid["rs256"], &again.by_kid["rs256"]));
}
