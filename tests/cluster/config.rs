//! The declarative config, `GET /config` and `PUT /config`: export-then-apply commits nothing,
//! a replace is one atomic entry (an invalid document changes nothing), consumers it keeps keep
//! their keys and those it removes lose them, a dry run changes nothing, and every node ends
//! with the same configuration.

use serde_json::{json, Value};

use crate::support::{eventually, Cluster, Reply, Upstream};

async fn send(c: &Cluster, i: usize, path: &str, key: &str) -> u16 {
    crate::support::client()
        .get(c.proxy_url(i, path))
        .insert_header(("apikey", key))
        .send()
        .await
        .expect("proxy request")
        .status()
        .as_u16()
}

async fn put_config(c: &Cluster, i: usize, doc: &Value) -> Reply {
    c.admin(i, "PUT", "/config", Some(doc.clone())).await
}

async fn key_of(c: &Cluster, consumer: &str) -> String {
    let k = c
        .admin(0, "POST", &format!("/consumers/{consumer}/keys"), None)
        .await;
    assert_eq!(k.status, 201, "{}", k.text);
    k.body["key"].as_str().unwrap().to_string()
}

#[actix_rt::test]
async fn export_then_apply_commits_nothing_and_a_dry_run_changes_nothing() {
    let c = Cluster::bootstrap(3).await;
    let up = Upstream::start("up");
    c.route_with(
        0,
        "api",
        "/api",
        up.addr,
        json!({"auth": "api_key", "rate_limit": {"requests": 100, "per": "second"}}),
    )
    .await;
    c.admin(
        0,
        "PUT",
        "/consumers/alice",
        Some(json!({"groups": ["gold"]})),
    )
    .await;
    let key = key_of(&c, "alice").await;

    let exported = c.admin(1, "GET", "/config", None).await;
    assert_eq!(exported.status, 200, "{}", exported.text);
    let doc = exported.body.clone();
    assert_eq!(doc["consumers"]["alice"]["groups"], json!(["gold"]));
    assert_eq!(doc["routes"]["api"]["service"], "api");
    assert!(doc["services"]["api"].get("version").is_none());
    assert!(!exported.text.contains(&key) && !exported.text.contains("keys"));
    let revision = exported.revision();
    let applied = c.gateway(0).node.state().applied;

    // The same document back, through another node: nothing is committed.
    let again = put_config(&c, 2, &doc).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.body["changed"], false, "{}", again.text);
    assert_eq!(again.revision(), revision);
    assert_eq!(
        c.gateway(0).node.state().applied,
        applied,
        "an entry was committed"
    );

    // A dry run of a real change answers the diff and changes nothing.
    let mut changed = doc.clone();
    changed["services"]["extra"] = json!({"targets": [{"url": format!("http://{}", up.addr)}]});
    changed["routes"]["api"]["priority"] = json!(5);
    changed["consumers"]
        .as_object_mut()
        .unwrap()
        .remove("alice");
    let dry = c
        .admin(1, "PUT", "/config?dry_run=true", Some(changed.clone()))
        .await;
    assert_eq!(dry.status, 200, "{}", dry.text);
    assert_eq!(
        (dry.body["dry_run"].clone(), dry.body["changed"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(
        dry.body["diff"],
        json!({
            "services": {"created": ["extra"], "updated": [], "deleted": []},
            "routes": {"created": [], "updated": ["api"], "deleted": []},
            "consumers": {"created": [], "updated": [], "deleted": ["alice"]},
        })
    );
    assert_eq!(dry.revision(), revision);
    assert_eq!(c.gateway(0).node.state().applied, applied);
    assert_eq!(c.admin(0, "GET", "/config", None).await.body, doc);
    assert_eq!(
        send(&c, 1, "/api/x", &key).await,
        200,
        "the key still works"
    );

    // A stale If-Match refuses the replace.
    let stale = c
        .admin_with(
            0,
            "PUT",
            "/config",
            Some(changed),
            &[("if-match", &(revision - 1).to_string())],
        )
        .await;
    assert_eq!(
        (stale.status, stale.error_code()),
        (412, "version_mismatch"),
        "{}",
        stale.text
    );
    assert_eq!(c.admin(0, "GET", "/config", None).await.body, doc);
    c.shutdown().await;
}

#[actix_rt::test]
async fn a_document_with_one_invalid_resource_changes_nothing() {
    let c = Cluster::bootstrap(1).await;
    let up = Upstream::start("up");
    c.route_to(0, "users", "/users", up.addr).await;
    let before = c.admin(0, "GET", "/config", None).await;
    let target = json!({"targets": [{"url": format!("http://{}", up.addr)}]});

    let cases = [
        (
            json!({"services": {"users": target, "more": target},
                   "routes": {"users": {"service": "users", "paths": ["~^/items/[0-9+$"]},
                              "ok": {"service": "more", "paths": ["/ok"]}}}),
            422,
            "routes.users.paths.0",
        ),
        (
            json!({"services": {"more": target},
                   "routes": {"users": {"service": "users", "paths": ["/users"]}}}),
            422,
            "routes.users.service",
        ),
        (
            json!({"services": {"users": {"targets": [{"url": "ftp://x"}]}}}),
            422,
            "services.users.targets.0.url",
        ),
        (
            json!({"routes": {"users": {"service": "users", "pathz": []}}}),
            400,
            "routes.users.pathz",
        ),
    ];
    for (doc, status, field) in cases {
        let r = put_config(&c, 0, &doc).await;
        assert_eq!(r.status, status, "{}", r.text);
        assert_eq!(r.body["error"]["field"], field, "{}", r.text);
    }
    let after = c.admin(0, "GET", "/config", None).await;
    assert_eq!(after.body, before.body);
    assert_eq!(after.revision(), before.revision());
    assert_eq!(c.get(0, "/users/1").await.status, 200);
    c.shutdown().await;
}

#[actix_rt::test]
async fn a_replace_keeps_the_keys_of_kept_consumers_and_drops_the_others_everywhere() {
    let c = Cluster::bootstrap(3).await;
    let up = Upstream::start("up");
    let target = json!({"targets": [{"url": format!("http://{}", up.addr)}]});
    let doc = json!({
        "services": {"up": target},
        "routes": {"api": {"service": "up", "paths": ["/api"], "auth": "api_key"}},
        "consumers": {"alice": {"groups": ["gold"]}, "bob": {}},
    });
    let created = put_config(&c, 1, &doc).await;
    assert_eq!(created.status, 200, "{}", created.text);
    assert_eq!(
        created.body["diff"]["consumers"]["created"],
        json!(["alice", "bob"])
    );
    let first = created.revision();
    let alice = key_of(&c, "alice").await;
    let bob = key_of(&c, "bob").await;
    for i in 0..3 {
        for key in [&alice, &bob] {
            eventually("both keys accepted on every node", || async {
                (send(&c, i, "/api/x", key).await == 200).then_some(())
            })
            .await;
        }
    }

    // Bob goes, a route and a service come: one entry, answered from a follower.
    let leader = c.wait_leader().await;
    let follower = c.follower(leader);
    let mut next = doc.clone();
    next["consumers"] = json!({"alice": {"groups": ["gold"]}});
    next["services"]["more"] = target.clone();
    next["routes"]["open"] = json!({"service": "more", "paths": ["/open"]});
    let replaced = put_config(&c, follower, &next).await;
    assert_eq!(replaced.status, 200, "{}", replaced.text);
    assert_eq!(
        replaced.body["diff"],
        json!({
            "services": {"created": ["more"], "updated": [], "deleted": []},
            "routes": {"created": ["open"], "updated": [], "deleted": []},
            "consumers": {"created": [], "updated": [], "deleted": ["bob"]},
        })
    );
    let revision = replaced.revision();
    assert!(revision > first);

    // Read-your-writes on the node that took it, then everywhere.
    assert_eq!(send(&c, follower, "/api/x", &bob).await, 401);
    assert_eq!(send(&c, follower, "/api/x", &alice).await, 200);
    for i in 0..3 {
        eventually("bob's key refused on every node", || async {
            (send(&c, i, "/api/x", &bob).await == 401).then_some(())
        })
        .await;
        assert_eq!(
            send(&c, i, "/api/x", &alice).await,
            200,
            "alice kept her key"
        );
        eventually("the new route served on every node", || async {
            (c.get(i, "/open").await.status == 200).then_some(())
        })
        .await;
    }
    let keys = c.admin(0, "GET", "/consumers/alice/keys", None).await;
    assert_eq!(
        keys.body["data"].as_array().map(Vec::len),
        Some(1),
        "{}",
        keys.text
    );
    let gone = c.admin(0, "GET", "/consumers/bob/keys", None).await;
    assert_eq!(gone.status, 404, "{}", gone.text);

    // Unchanged resources kept their version; new ones got the entry's revision.
    let api = c.admin(0, "GET", "/routes/api", None).await;
    assert_eq!(api.body["version"], json!(first));
    let open = c.admin(0, "GET", "/routes/open", None).await;
    assert_eq!(open.body["version"], json!(revision));

    // Every node holds the same configuration.
    let expected = c.admin(leader, "GET", "/config", None).await.body;
    for i in 0..3 {
        eventually("the same /config on every node", || async {
            let r = c.admin(i, "GET", "/config?stale=true", None).await;
            (r.body == expected && r.revision() == revision).then_some(())
        })
        .await;
    }
    c.shutdown().await;
}
