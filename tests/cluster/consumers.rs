use serde_json::json;

use crate::support::{eventually, Cluster};

#[actix_rt::test]
async fn consumers_and_keys_are_replicated_and_keys_are_shown_once() {
    let c = Cluster::bootstrap(3).await;
    let r = c
        .admin(
            1,
            "PUT",
            "/consumers/alice",
            Some(json!({"groups": ["gold"]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["groups"], json!(["gold"]));

    // A generated key: shown in this answer, then never again.
    let k = c.admin(2, "POST", "/consumers/alice/keys", None).await;
    assert_eq!(k.status, 201, "{}", k.text);
    let (id, key) = (
        k.body["id"].as_str().unwrap().to_string(),
        k.body["key"].as_str().unwrap().to_string(),
    );
    assert!(key.len() >= 32, "a key of at least 128 bits: {key}");
    let listed = c.admin(0, "GET", "/consumers/alice/keys", None).await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(listed.body["data"][0]["id"], id.as_str());
    assert!(!listed.text.contains(&key), "a listing shows the key");
    // Every node holds the hash, never the key.
    for i in 0..3 {
        let node = &c.gateway(i).node;
        eventually("the key on every node", || async {
            (node.state().api_keys.len() == 1).then_some(())
        })
        .await;
        let st = node.state();
        let hash = raftgate_cluster::identity::hash_key(&key);
        let stored = &st.api_keys[&hash];
        assert_eq!(raftgate_cluster::identity::format_key_id(stored.id), id);
        assert!(!format!("{:?}", st.api_keys).contains(&key));
    }

    // Admin-supplied keys: accepted once, refused when reused or too short.
    let supplied = c
        .admin(
            0,
            "POST",
            "/consumers/alice/keys",
            Some(json!({"key": "my-own-key-0123456789"})),
        )
        .await;
    assert_eq!(supplied.status, 201, "{}", supplied.text);
    assert_eq!(supplied.body["key"], "my-own-key-0123456789");
    c.admin(0, "PUT", "/consumers/bob", Some(json!({}))).await;
    let dup = c
        .admin(
            1,
            "POST",
            "/consumers/bob/keys",
            Some(json!({"key": "my-own-key-0123456789"})),
        )
        .await;
    assert_eq!(
        (dup.status, dup.error_code()),
        (409, "duplicate_key"),
        "{}",
        dup.text
    );
    let short = c
        .admin(
            1,
            "POST",
            "/consumers/bob/keys",
            Some(json!({"key": "short"})),
        )
        .await;
    assert_eq!(
        (short.status, short.error_code()),
        (422, "invalid_config"),
        "{}",
        short.text
    );
    let nobody = c.admin(1, "POST", "/consumers/nobody/keys", None).await;
    assert_eq!(nobody.status, 404, "{}", nobody.text);

    // Revoke via another node; only the owner's path revokes.
    assert_eq!(
        c.admin(2, "DELETE", &format!("/consumers/bob/keys/{id}"), None)
            .await
            .status,
        404
    );
    assert_eq!(
        c.admin(0, "DELETE", &format!("/consumers/alice/keys/{id}"), None)
            .await
            .status,
        204
    );
    assert_eq!(
        c.admin(1, "DELETE", &format!("/consumers/alice/keys/{id}"), None)
            .await
            .status,
        404
    );
    let listed = c.admin(2, "GET", "/consumers/alice/keys", None).await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 1);

    // Deleting a consumer takes its keys with it.
    assert_eq!(
        c.admin(1, "DELETE", "/consumers/alice", None).await.status,
        204
    );
    assert_eq!(
        c.admin(2, "GET", "/consumers/alice/keys", None)
            .await
            .status,
        404
    );
    assert!(c.gateway(1).node.state().api_keys.is_empty());
    c.shutdown().await;
}
