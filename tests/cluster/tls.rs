//! TLS termination: certificates put through one node's admin API are served by every node's
//! TLS listener, chosen by SNI, replaced without a restart; invalid ones never reach the log.

use serde_json::{json, Value};

use crate::support::tls::{tls_get, Leaf, TestCa, TlsReply};
use crate::support::{eventually, Cluster, Upstream};

fn body(leaf: &Leaf, snis: &[&str]) -> Value {
    json!({"cert": leaf.cert_pem, "key": leaf.key_pem, "snis": snis})
}

/// Polls node `i`'s TLS listener with `sni` until it serves `leaf` and proxies the request.
async fn served(c: &Cluster, i: usize, ca: &TestCa, sni: &str, leaf: &Leaf) -> TlsReply {
    let addr = c.proxy_tls_addr(i);
    eventually(
        &format!("node {i} to serve {sni}'s certificate"),
        || async {
            let reply = tls_get(addr, sni, ca.roots(), "/tls/hello").await.ok()?;
            (reply.peer == leaf.der && reply.status == 200).then_some(reply)
        },
    )
    .await
}

#[actix_rt::test]
async fn certificates_are_replicated_picked_by_sni_and_replaced_live() {
    let c = Cluster::bootstrap(3).await;
    let up = Upstream::start("a");
    let leader = c.wait_leader().await;
    let writer = c.follower(leader);
    let other = (0..3).find(|i| *i != writer).unwrap();
    c.route_to(writer, "tls", "/tls", up.addr).await;

    let ca = TestCa::new("raftgate test CA");
    // b's certificate is valid for a.test too (it is registered for b.test only), so the
    // client can verify it when it becomes the default below.
    let (a, b) = (ca.leaf(&["a.test"]), ca.leaf(&["b.test", "a.test"]));
    let put_a = c
        .admin(
            writer,
            "PUT",
            "/certificates/a",
            Some(body(&a, &["a.test"])),
        )
        .await;
    assert_eq!(put_a.status, 201, "{}", put_a.text);
    assert!(put_a.body.get("key").is_none(), "a PUT answer has no key");
    let put_b = c
        .admin(
            writer,
            "PUT",
            "/certificates/b",
            Some(body(&b, &["b.test"])),
        )
        .await;
    assert_eq!(put_b.status, 201, "{}", put_b.text);

    // The key is write-only.
    let got = c.admin(other, "GET", "/certificates/a", None).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.body["snis"], json!(["a.test"]));
    assert_eq!(got.body["cert"], json!(a.cert_pem));
    assert_eq!(got.body["version"], put_a.body["version"]);
    assert!(got.body.get("key").is_none(), "{}", got.text);
    let list = c.admin(other, "GET", "/certificates", None).await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 2);
    assert!(!list.text.contains("PRIVATE KEY"), "{}", list.text);

    // Another node serves both, each by its SNI, through the same proxy pipeline.
    let reply = served(&c, other, &ca, "a.test", &a).await;
    assert_eq!(reply.body["upstream"], "a");
    assert_eq!(reply.body["path"], "/tls/hello");
    assert_eq!(reply.body["headers"]["x-forwarded-proto"], "https");
    served(&c, other, &ca, "b.test", &b).await;
    // Two certificates and an SNI neither lists: no guess, the handshake fails.
    let unknown = tls_get(c.proxy_tls_addr(other), "c.test", ca.roots(), "/tls/x").await;
    assert!(
        unknown.is_err(),
        "an unknown SNI must not get a certificate"
    );
    // The plain listener still says http.
    let plain = c.get(other, "/tls/plain").await;
    assert_eq!(plain.body["headers"]["x-forwarded-proto"], "http");

    // Renewal: the node that took the write serves the new certificate at once, the others
    // soon after; nothing restarts.
    let renewed = ca.leaf(&["a.test"]);
    let put = c
        .admin(
            writer,
            "PUT",
            "/certificates/a",
            Some(body(&renewed, &["a.test"])),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.text);
    let now = tls_get(c.proxy_tls_addr(writer), "a.test", ca.roots(), "/tls/x")
        .await
        .unwrap();
    assert!(now.peer == renewed.der, "read-your-writes on the writer");
    served(&c, other, &ca, "a.test", &renewed).await;

    // Deleted: gone from every node; the one left is now the default for any SNI.
    let del = c.admin(writer, "DELETE", "/certificates/a", None).await;
    assert_eq!(del.status, 204, "{}", del.text);
    served(&c, other, &ca, "a.test", &b).await;

    up.stop().await;
    c.shutdown().await;
}

async fn revision(c: &Cluster) -> Value {
    c.admin(0, "GET", "/cluster", None).await.body["revision"].clone()
}

#[actix_rt::test]
async fn invalid_certificates_never_reach_the_log() {
    let c = Cluster::bootstrap(1).await;
    let ca = TestCa::new("raftgate test CA");
    let (a, b) = (ca.leaf(&["a.test"]), ca.leaf(&["b.test"]));
    let before = revision(&c).await;

    let cases = [
        (
            json!({"cert": "not a certificate", "key": a.key_pem, "snis": ["a.test"]}),
            "cert",
        ),
        (
            json!({"cert": a.cert_pem, "key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "snis": ["a.test"]}),
            "key",
        ),
        // b's key with a's certificate.
        (
            json!({"cert": a.cert_pem, "key": b.key_pem, "snis": ["a.test"]}),
            "key",
        ),
        (body(&a, &[]), "snis"),
        (body(&a, &["A.test"]), "snis.0"),
        (body(&a, &["*.*.test"]), "snis.0"),
    ];
    for (case, field) in cases {
        let r = c.admin(0, "PUT", "/certificates/a", Some(case)).await;
        assert_eq!(r.status, 422, "{field}: {}", r.text);
        assert_eq!(r.body["error"]["field"], field, "{}", r.text);
    }
    let mismatch = c
        .admin(
            0,
            "PUT",
            "/certificates/a",
            Some(json!({"cert": a.cert_pem, "key": b.key_pem, "snis": ["a.test"]})),
        )
        .await;
    assert!(
        mismatch.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not match"),
        "{}",
        mismatch.text
    );
    let unknown = c
        .admin(
            0,
            "PUT",
            "/certificates/a",
            Some(json!({"cert": a.cert_pem, "key": a.key_pem, "snis": ["a.test"], "chain": 1})),
        )
        .await;
    assert_eq!(unknown.status, 400, "{}", unknown.text);
    assert_eq!(revision(&c).await, before, "nothing was committed");
    assert_eq!(c.admin(0, "GET", "/certificates/a", None).await.status, 404);

    // An SNI selects one certificate.
    let ok = c
        .admin(
            0,
            "PUT",
            "/certificates/a",
            Some(body(&a, &["a.test", "*.a.test"])),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.text);
    let taken = c
        .admin(
            0,
            "PUT",
            "/certificates/b",
            Some(body(&b, &["b.test", "*.a.test"])),
        )
        .await;
    assert_eq!(taken.status, 409, "{}", taken.text);
    assert_eq!(taken.error_code(), "sni_taken");
    assert_eq!(revision(&c).await, ok.body["version"]);

    c.shutdown().await;
}
