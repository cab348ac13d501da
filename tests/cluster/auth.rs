//! Authentication on the proxy, across the cluster: API keys, JWTs, ACLs, and what reaches the
//! upstream.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::support::{eventually, into_reply, Cluster, Reply, Upstream};

async fn send(c: &Cluster, i: usize, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = crate::support::client().get(c.proxy_url(i, path));
    for h in headers {
        req = req.insert_header(*h);
    }
    into_reply(req.send().await.expect("proxy request")).await
}

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

fn sign(alg: Algorithm, kid: &str, claims: Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

/// The headers the upstream saw, from the mock's echo.
fn seen(r: &Reply) -> &serde_json::Map<String, Value> {
    r.body["headers"].as_object().expect("an echoed request")
}

#[actix_rt::test]
async fn a_key_works_on_every_node_and_a_revocation_anywhere_stops_it_everywhere() {
    let c = Cluster::bootstrap(3).await;
    let up = Upstream::start("up");
    c.route_with(0, "api", "/api", up.addr, json!({"auth": "api_key"}))
        .await;
    c.route_to(0, "open", "/open", up.addr).await;
    c.admin(
        0,
        "PUT",
        "/consumers/alice",
        Some(json!({"groups": ["gold"]})),
    )
    .await;
    let k = c.admin(0, "POST", "/consumers/alice/keys", None).await;
    assert_eq!(k.status, 201, "{}", k.text);
    let (id, key) = (
        k.body["id"].as_str().unwrap().to_string(),
        k.body["key"].as_str().unwrap().to_string(),
    );

    // Read-your-writes on the node that took the call; the others within propagation.
    let r = send(&c, 0, "/api/x", &[("apikey", &key)]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    for i in 1..3 {
        eventually("the key accepted on every node", || async {
            (send(&c, i, "/api/x", &[("apikey", &key)]).await.status == 200).then_some(())
        })
        .await;
    }

    // Each way of sending the key; the upstream sees the consumer, never the key.
    let bearer = format!("Bearer {key}");
    let ways: [(&str, Vec<(&str, &str)>); 3] = [
        ("/api/x?a=1", vec![("apikey", key.as_str())]),
        ("/api/x?a=1", vec![("authorization", bearer.as_str())]),
        (&format!("/api/x?apikey={key}&a=1"), vec![]),
    ];
    for (path, headers) in &ways {
        let mut headers = headers.clone();
        headers.push(("x-consumer", "mallory"));
        let r = send(&c, 1, path, &headers).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        assert_eq!(seen(&r)["x-consumer"], "alice", "{path}");
        assert!(
            !r.text.contains(&key),
            "the key reached the upstream: {}",
            r.text
        );
        assert!(!seen(&r).contains_key("authorization") && !seen(&r).contains_key("apikey"));
        assert_eq!(r.body["query"], "a=1");
    }
    // A client-sent X-Consumer never reaches the upstream, authenticated route or not.
    let r = send(&c, 2, "/open", &[("x-consumer", "mallory")]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!seen(&r).contains_key("x-consumer"), "{}", r.text);

    // Every failure answers the same 401.
    let missing = send(&c, 2, "/api/x", &[]).await;
    let wrong = send(&c, 2, "/api/x", &[("apikey", "rgk_not-a-key-at-all")]).await;
    for r in [&missing, &wrong] {
        assert_eq!(
            (r.status, r.error_code()),
            (401, "unauthorized"),
            "{}",
            r.text
        );
        assert_eq!(r.header("www-authenticate"), Some("Key realm=\"raftgate\""));
    }
    assert_eq!(missing.body, wrong.body);

    // Revoked through node 1: refused there as soon as the call returns, then everywhere.
    let revoked = c
        .admin(1, "DELETE", &format!("/consumers/alice/keys/{id}"), None)
        .await;
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    let r = send(&c, 1, "/api/x", &[("apikey", &key)]).await;
    assert_eq!(
        r.status, 401,
        "read-your-writes on the revoking node: {}",
        r.text
    );
    for i in [0, 2] {
        eventually("the revocation on every node", || async {
            (send(&c, i, "/api/x", &[("apikey", &key)]).await.status == 401).then_some(())
        })
        .await;
    }
    // Once refused everywhere, a refused request never reaches the upstream.
    let before = up.received();
    for i in 0..3 {
        let r = send(&c, i, "/api/x", &[("apikey", &key)]).await;
        assert_eq!(r.body, missing.body);
    }
    assert_eq!(
        up.received(),
        before,
        "a refused request reached the upstream"
    );
    c.shutdown().await;
}

#[actix_rt::test]
async fn allow_groups_refuse_other_consumers_with_403() {
    let c = Cluster::bootstrap(1).await;
    let up = Upstream::start("up");
    c.route_with(
        0,
        "gold",
        "/gold",
        up.addr,
        json!({"auth": "api_key", "allow_groups": ["gold"]}),
    )
    .await;
    for (name, groups) in [("alice", json!(["gold"])), ("bob", json!(["silver"]))] {
        c.admin(
            0,
            "PUT",
            &format!("/consumers/{name}"),
            Some(json!({ "groups": groups })),
        )
        .await;
        let key = format!("{name}-key-0123456789");
        let k = c
            .admin(
                0,
                "POST",
                &format!("/consumers/{name}/keys"),
                Some(json!({ "key": key })),
            )
            .await;
        assert_eq!(k.status, 201, "{}", k.text);
    }
    let r = send(&c, 0, "/gold", &[("apikey", "alice-key-0123456789")]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = send(&c, 0, "/gold", &[("apikey", "bob-key-0123456789")]).await;
    assert_eq!((r.status, r.error_code()), (403, "forbidden"), "{}", r.text);
    // A group change applies at once.
    c.admin(
        0,
        "PUT",
        "/consumers/bob",
        Some(json!({"groups": ["gold"]})),
    )
    .await;
    let r = send(&c, 0, "/gold", &[("apikey", "bob-key-0123456789")]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // allow_groups on a route without auth is a config error.
    let bad = c
        .admin(
            0,
            "PUT",
            "/routes/bad",
            Some(json!({"service": "gold", "paths": ["/bad"], "allow_groups": ["gold"]})),
        )
        .await;
    assert_eq!(
        (bad.status, bad.body["error"]["field"].as_str()),
        (422, Some("allow_groups"))
    );
    c.shutdown().await;
}

#[actix_rt::test]
async fn jwt_routes_take_valid_tokens_and_refuse_the_rest_alike() {
    let c = Cluster::bootstrap(3).await;
    let up = Upstream::start("up");
    c.route_with(0, "jwt", "/jwt", up.addr, json!({"auth": "jwt"}))
        .await;
    c.route_with(0, "any", "/any", up.addr, json!({"auth": "any"}))
        .await;
    c.admin(0, "PUT", "/consumers/alice", Some(json!({}))).await;
    let cred = json!({"algorithm": "RS256", "public_key": fixture("rsa.pub"),
                      "issuer": "https://idp.test", "audience": "raftgate"});
    let put = c
        .admin(1, "PUT", "/consumers/alice/jwt/rsa-1", Some(cred))
        .await;
    assert_eq!(put.status, 201, "{}", put.text);
    // Bad key material is refused before anything is committed.
    let revision = put.revision();
    for (body, field) in [
        (
            json!({"algorithm": "RS256", "public_key": "not a pem"}),
            "public_key",
        ),
        (
            json!({"algorithm": "ES256", "public_key": fixture("rsa.pub")}),
            "public_key",
        ),
        (
            json!({"algorithm": "HS256", "public_key": fixture("rsa.pub")}),
            "public_key",
        ),
        (json!({"algorithm": "HS256", "secret": "short"}), "secret"),
    ] {
        let r = c
            .admin(1, "PUT", "/consumers/alice/jwt/bad", Some(body))
            .await;
        assert_eq!(
            (r.status, r.body["error"]["field"].as_str()),
            (422, Some(field)),
            "{}",
            r.text
        );
    }
    let after = c.admin(0, "GET", "/cluster", None).await;
    assert_eq!(after.body["revision"], revision);
    // The same kid for another consumer is a conflict.
    c.admin(0, "PUT", "/consumers/bob", Some(json!({}))).await;
    let taken = c
        .admin(
            0,
            "PUT",
            "/consumers/bob/jwt/rsa-1",
            Some(json!({"algorithm": "HS256", "secret": "0123456789abcdef"})),
        )
        .await;
    assert_eq!(taken.status, 409, "{}", taken.text);

    let rsa = EncodingKey::from_rsa_pem(fixture("rsa.key").as_bytes()).unwrap();
    let claims = |exp: u64, iss: &str, aud: &str| json!({"exp": exp, "iss": iss, "aud": aud});
    let good = sign(
        Algorithm::RS256,
        "rsa-1",
        claims(now() + 300, "https://idp.test", "raftgate"),
        &rsa,
    );
    let bearer = |t: &str| format!("Bearer {t}");
    for i in 0..3 {
        eventually("the credential on every node", || async {
            let r = send(&c, i, "/jwt", &[("authorization", &bearer(&good))]).await;
            (r.status == 200).then_some(r)
        })
        .await;
    }
    let r = send(&c, 2, "/jwt", &[("authorization", &bearer(&good))]).await;
    assert_eq!(seen(&r)["x-consumer"], "alice");
    assert!(!seen(&r).contains_key("authorization"), "{}", r.text);

    let forged = sign(
        Algorithm::HS256,
        "rsa-1",
        claims(now() + 300, "https://idp.test", "raftgate"),
        &EncodingKey::from_secret(fixture("rsa.pub").as_bytes()),
    );
    let bad_tokens = [
        sign(
            Algorithm::RS256,
            "rsa-1",
            claims(now() - 600, "https://idp.test", "raftgate"),
            &rsa,
        ),
        sign(
            Algorithm::RS256,
            "rsa-1",
            claims(now() + 300, "https://evil.test", "raftgate"),
            &rsa,
        ),
        sign(
            Algorithm::RS256,
            "rsa-1",
            claims(now() + 300, "https://idp.test", "other"),
            &rsa,
        ),
        sign(
            Algorithm::RS256,
            "nope",
            claims(now() + 300, "https://idp.test", "raftgate"),
            &rsa,
        ),
        forged,
        "garbage".to_string(),
    ];
    let missing = send(&c, 1, "/jwt", &[]).await;
    assert_eq!(missing.status, 401);
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Bearer realm=\"raftgate\"")
    );
    for t in &bad_tokens {
        let r = send(&c, 1, "/jwt", &[("authorization", &bearer(t))]).await;
        assert_eq!(r.status, 401, "{t}: {}", r.text);
        assert_eq!(r.body, missing.body);
    }

    // `any` takes a JWT or an API key.
    c.admin(
        0,
        "POST",
        "/consumers/bob/keys",
        Some(json!({"key": "bob-key-0123456789"})),
    )
    .await;
    let r = send(&c, 0, "/any", &[("authorization", &bearer(&good))]).await;
    assert_eq!(seen(&r)["x-consumer"], "alice", "{}", r.text);
    let r = send(
        &c,
        0,
        "/any",
        &[("authorization", "Bearer bob-key-0123456789")],
    )
    .await;
    assert_eq!(seen(&r)["x-consumer"], "bob", "{}", r.text);
    // A JWT is not an API key on an api_key... and a key is not a JWT on a jwt route.
    let r = send(
        &c,
        0,
        "/jwt",
        &[("authorization", "Bearer bob-key-0123456789")],
    )
    .await;
    assert_eq!(r.status, 401);

    // The credential reads back without secrets; deleting it stops its tokens.
    let got = c.admin(2, "GET", "/consumers/alice/jwt/rsa-1", None).await;
    assert_eq!(got.body["algorithm"], "RS256", "{}", got.text);
    let del = c
        .admin(2, "DELETE", "/consumers/alice/jwt/rsa-1", None)
        .await;
    assert_eq!(del.status, 204, "{}", del.text);
    let r = send(&c, 2, "/jwt", &[("authorization", &bearer(&good))]).await;
    assert_eq!(r.status, 401);
    c.shutdown().await;
}
