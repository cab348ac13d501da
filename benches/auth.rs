//! Credential lookups on the request path: an API key in an index of 1 and of 1,000,000 keys,
//! and JWT verification (HS256, RS256), each through `AuthIndex` as the auth phase calls it.
//!
//! `cargo bench --bench auth -- --warm-up-time 1 --measurement-time 3`
//!
//! The states are built like a node builds them: `ClusterState::apply` of `PutConsumer`,
//! `CreateApiKey` and `PutJwt` commands (the million keys take several seconds, once).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use raftgate::auth::AuthIndex;
use raftgate_cluster::identity::{
    generate_key, hash_key, ApiKey, Consumer, JwtAlgorithm, JwtCredential,
};
use raftgate_cluster::{ClusterState, Command, Precondition};

const SECRET: &str = "a-shared-secret-of-some-length";

/// Applies `commands` in order from index 1, as the state machine would.
fn state(commands: impl IntoIterator<Item = Command>) -> ClusterState {
    let mut state = ClusterState::default();
    for (i, cmd) in commands.into_iter().enumerate() {
        state.apply(i as u64 + 1, &cmd).expect("command applies");
    }
    state
}

fn consumer(name: String) -> Command {
    Command::PutConsumer {
        consumer: Consumer {
            name,
            version: 0,
            groups: vec!["gold".into()],
        },
        precondition: Precondition::None,
    }
}

/// An index of `keys` API keys over up to 10,000 consumers (as `examples/keys_memory.rs`),
/// with one of its keys and a key it does not hold.
fn keys_index(keys: usize) -> (AuthIndex, String, String) {
    let consumers = keys.clamp(1, 10_000);
    let mut sample = None;
    let key_commands = (0..keys).map(|k| {
        let (key, id) = generate_key();
        if k == keys / 2 {
            sample = Some(key.clone());
        }
        Command::CreateApiKey {
            key: ApiKey {
                id,
                consumer: format!("consumer-{}", k % consumers),
                hash: hash_key(&key),
            },
        }
    });
    let st = state(
        (0..consumers)
            .map(|c| consumer(format!("consumer-{c}")))
            .chain(key_commands),
    );
    let index = AuthIndex::build(Arc::new(st), &AuthIndex::default());
    let (unknown, _) = generate_key();
    (index, sample.expect("a key was sampled"), unknown)
}

fn api_key(c: &mut Criterion) {
    let mut group = c.benchmark_group("api_key");
    for keys in [1, 1_000_000] {
        let (index, key, unknown) = keys_index(keys);
        assert!(index.api_key(&key).is_some());
        assert!(index.api_key(&unknown).is_none());
        group.bench_function(format!("{keys}/hit"), |b| {
            b.iter(|| index.api_key(black_box(&key)).is_some())
        });
        group.bench_function(format!("{keys}/miss"), |b| {
            b.iter(|| index.api_key(black_box(&unknown)).is_some())
        });
    }
    group.finish();
}

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn credential(kid: &str, algorithm: JwtAlgorithm, public_key: Option<String>) -> JwtCredential {
    JwtCredential {
        consumer: "alice".into(),
        key_id: kid.into(),
        version: 0,
        algorithm,
        public_key,
        secret: algorithm.is_hmac().then(|| SECRET.to_string()),
        issuer: None,
        audience: None,
        leeway_s: 5,
    }
}

/// A token for `kid` that stays valid for a day.
fn token(alg: Algorithm, kid: &str, key: &EncodingKey) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    let claims = serde_json::json!({ "sub": "alice", "iat": now, "exp": now + 86_400 });
    jsonwebtoken::encode(&header, &claims, key).expect("signs")
}

fn jwt(c: &mut Criterion) {
    let st = state([
        consumer("alice".into()),
        Command::PutJwt {
            credential: credential("hs256", JwtAlgorithm::HS256, None),
        },
        Command::PutJwt {
            credential: credential("rs256", JwtAlgorithm::RS256, Some(fixture("rsa.pub"))),
        },
    ]);
    let index = AuthIndex::build(Arc::new(st), &AuthIndex::default());
    let rsa = EncodingKey::from_rsa_pem(fixture("rsa.key").as_bytes()).expect("RSA key");
    let tokens = [
        (
            "hs256",
            token(
                Algorithm::HS256,
                "hs256",
                &EncodingKey::from_secret(SECRET.as_bytes()),
            ),
        ),
        ("rs256", token(Algorithm::RS256, "rs256", &rsa)),
    ];
    let mut group = c.benchmark_group("jwt");
    for (name, token) in &tokens {
        assert_eq!(index.jwt(token).map(|c| &**c), Some("alice"), "{name}");
        group.bench_function(*name, |b| b.iter(|| index.jwt(black_box(token)).is_some()));
    }
    group.finish();
}

criterion_group!(benches, api_key, jwt);
criterion_main!(benches);
