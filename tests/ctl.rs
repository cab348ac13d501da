//! `raftgate ctl` end to end: the real binary against an in-process cluster. The child runs on
//! a blocking thread so that the cluster, on this test's runtime, keeps serving it.

#[path = "support/mod.rs"]
mod support;

use serde_json::{json, Value};
use support::{Cluster, Upstream, TOKEN};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// `raftgate ctl --admin <node i> --token TOKEN ARGS…`, with no RAFTGATE_* from outside.
async fn ctl(c: &Cluster, i: usize, args: &[&str]) -> Out {
    let mut all = vec![
        "ctl".to_string(),
        "--admin".into(),
        c.admin_url(i, ""),
        "--token".into(),
        TOKEN.into(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    run(all, vec![]).await
}

async fn run(args: Vec<String>, env: Vec<(&'static str, String)>) -> Out {
    let out = actix_rt::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_raftgate"))
            .args(&args)
            .env_remove("RAFTGATE_ADMIN")
            .env_remove("RAFTGATE_TOKEN")
            .env_remove("RAFTGATE_CACERT")
            .envs(env)
            .output()
            .expect("run raftgate")
    })
    .await
    .expect("the blocking thread");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

#[actix_rt::test]
async fn status_and_put_get_delete_of_a_service() {
    let c = Cluster::bootstrap(3).await;
    let up = Upstream::start("up");

    let status = ctl(&c, 1, &["status"]).await;
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert!(
        status.stdout.starts_with("node 2: leader "),
        "{}",
        status.stdout
    );
    assert_eq!(
        status.stdout.matches("voter").count(),
        3,
        "{}",
        status.stdout
    );
    assert!(status.stdout.contains("this node"), "{}", status.stdout);

    // The admin URL and the token from the environment work as well as the flags.
    let env = vec![
        ("RAFTGATE_ADMIN", c.admin_url(2, "")),
        ("RAFTGATE_TOKEN", TOKEN.to_string()),
    ];
    let as_json = run(vec!["ctl".into(), "status".into(), "--json".into()], env).await;
    assert_eq!(as_json.code, 0, "{}", as_json.stderr);
    assert_eq!(as_json.json()["node_id"], 3);

    let body =
        json!({"targets": [{"url": format!("http://{}", up.addr)}], "retries": 1}).to_string();
    let put = ctl(&c, 0, &["put", "services", "s", "--data", &body]).await;
    assert_eq!(put.code, 0, "{}", put.stderr);
    assert_eq!(put.json()["retries"], 1);
    assert!(
        put.stderr.starts_with("created service s (revision "),
        "{}",
        put.stderr
    );

    let got = ctl(&c, 2, &["get", "service", "s"]).await;
    assert_eq!(got.code, 0, "{}", got.stderr);
    assert_eq!(
        got.json()["targets"][0]["url"],
        format!("http://{}", up.addr)
    );
    let list = ctl(&c, 2, &["get", "services"]).await;
    assert_eq!(
        list.json().as_array().map(Vec::len),
        Some(1),
        "{}",
        list.stdout
    );

    let deleted = ctl(&c, 1, &["delete", "services", "s"]).await;
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    assert!(
        deleted.stdout.starts_with("deleted service s (revision "),
        "{}",
        deleted.stdout
    );

    // A consumer and its keys.
    let alice = ctl(
        &c,
        0,
        &[
            "put",
            "consumer",
            "alice",
            "--data",
            r#"{"groups":["gold"]}"#,
        ],
    )
    .await;
    assert_eq!(alice.code, 0, "{}", alice.stderr);
    let created = ctl(&c, 1, &["keys", "create", "alice"]).await;
    assert_eq!(created.code, 0, "{}", created.stderr);
    let id = created.json()["id"].as_str().unwrap().to_string();
    assert!(created.json()["key"].as_str().unwrap().starts_with("rgk_"));
    let listed = ctl(&c, 2, &["keys", "list", "alice"]).await;
    assert_eq!(listed.json()[0]["id"], id.as_str(), "{}", listed.stdout);
    let revoked = ctl(&c, 0, &["keys", "revoke", "alice", &id]).await;
    assert_eq!(revoked.code, 0, "{}", revoked.stderr);
    assert!(revoked
        .stdout
        .starts_with(&format!("revoked key {id} of alice")));
    assert_eq!(
        ctl(&c, 0, &["keys", "list", "alice"]).await.json(),
        json!([])
    );

    let missing = ctl(&c, 0, &["get", "services", "s"]).await;
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.starts_with("error: 404 not_found: "),
        "{}",
        missing.stderr
    );
    c.shutdown().await;
}

const DOCUMENT: &str = r#"
[services.echo]
targets = [{ url = "http://UPSTREAM" }]

[routes.echo]
service = "echo"
paths = ["/echo"]
auth = "api_key"

[consumers.alice]
groups = ["gold"]
"#;

#[actix_rt::test]
async fn apply_shows_the_diff_applies_once_then_has_nothing_to_do() {
    let c = Cluster::bootstrap(3).await;
    let up = Upstream::start("up");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, DOCUMENT.replace("UPSTREAM", &up.addr.to_string())).unwrap();
    let file = file.to_str().unwrap();

    // A dry run shows the diff and changes nothing.
    let dry = ctl(&c, 1, &["apply", "-f", file, "--dry-run"]).await;
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(
        dry.stdout.starts_with("+ service echo\n+ route echo\n+ consumer alice\ndry run: 3 created, 0 updated, 0 deleted; nothing applied"),
        "{}",
        dry.stdout
    );
    let config = c.admin(0, "GET", "/config", None).await;
    assert_eq!(config.body["services"], json!({}));

    let applied = ctl(&c, 1, &["apply", "-f", file]).await;
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    assert!(
        applied
            .stdout
            .contains("applied: 3 created, 0 updated, 0 deleted at revision "),
        "{}",
        applied.stdout
    );
    let key = c.admin(1, "POST", "/consumers/alice/keys", None).await;
    let key = key.body["key"].as_str().unwrap().to_string();
    let proxied = crate::support::client()
        .get(c.proxy_url(1, "/echo"))
        .insert_header(("apikey", key.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), 200);
    let revision = c.admin(0, "GET", "/config", None).await.revision();

    let again = ctl(&c, 2, &["apply", "-f", file]).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again
            .stdout
            .starts_with("nothing to do: the cluster already matches "),
        "{}",
        again.stdout
    );

    // Export, in either format, then apply: nothing to do either.
    for (format, name) in [("toml", "exported.toml"), ("json", "exported.json")] {
        let exported = ctl(&c, 0, &["export", "--format", format]).await;
        assert_eq!(exported.code, 0, "{}", exported.stderr);
        assert!(!exported.stdout.contains(&key));
        let path = dir.path().join(name);
        std::fs::write(&path, &exported.stdout).unwrap();
        let back = ctl(&c, 1, &["apply", "-f", path.to_str().unwrap()]).await;
        assert_eq!(back.code, 0, "{}", back.stderr);
        assert!(
            back.stdout.starts_with("nothing to do"),
            "{format}: {}",
            back.stdout
        );
    }
    assert_eq!(
        c.admin(0, "GET", "/config", None).await.revision(),
        revision
    );

    // Alice leaves the document: her key goes with her.
    let without = DOCUMENT.replace("UPSTREAM", &up.addr.to_string());
    let without = without.split("[consumers.alice]").next().unwrap();
    std::fs::write(dir.path().join("gateway.toml"), without).unwrap();
    let removed = ctl(&c, 0, &["apply", "-f", file]).await;
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    assert!(
        removed
            .stdout
            .starts_with("- consumer alice\napplied: 0 created, 0 updated, 1 deleted"),
        "{}",
        removed.stdout
    );
    let refused = crate::support::client()
        .get(c.proxy_url(0, "/echo"))
        .insert_header(("apikey", key.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    c.shutdown().await;
}

#[actix_rt::test]
async fn errors_are_one_line_exit_1_and_usage_errors_exit_2() {
    let c = Cluster::bootstrap(1).await;
    let up = Upstream::start("up");
    c.route_to(0, "used", "/used", up.addr).await;

    let in_use = ctl(&c, 0, &["delete", "services", "used"]).await;
    assert_eq!(in_use.code, 1, "{}", in_use.stderr);
    assert_eq!(in_use.stderr.lines().count(), 1, "{}", in_use.stderr);
    assert!(
        in_use.stderr.starts_with("error: 409 service_in_use: "),
        "{}",
        in_use.stderr
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        json!({"services": {"s": {"targets": []}}}).to_string(),
    )
    .unwrap();
    let invalid = ctl(&c, 0, &["apply", "-f", bad.to_str().unwrap()]).await;
    assert_eq!(invalid.code, 1, "{}", invalid.stderr);
    assert_eq!(invalid.stderr.lines().count(), 1, "{}", invalid.stderr);
    assert!(
        invalid
            .stderr
            .starts_with("error: 422 invalid_config: services.s.targets"),
        "{}",
        invalid.stderr
    );

    let wrong_token = run(
        vec![
            "ctl".into(),
            "--admin".into(),
            c.admin_url(0, ""),
            "--token".into(),
            "nope".into(),
            "status".into(),
        ],
        vec![],
    )
    .await;
    assert_eq!(wrong_token.code, 1);
    assert!(
        wrong_token.stderr.starts_with("error: 401 unauthorized: "),
        "{}",
        wrong_token.stderr
    );

    let usage = ctl(&c, 0, &["get", "widgets"]).await;
    assert_eq!(usage.code, 2, "{}", usage.stderr);
    let unreadable = ctl(&c, 0, &["apply", "-f", "/nonexistent/raftgate.toml"]).await;
    assert_eq!(unreadable.code, 2, "{}", unreadable.stderr);
    assert!(unreadable
        .stderr
        .starts_with("error: cannot read /nonexistent/raftgate.toml"));

    // Purge goes through; the route is named.
    let purged = ctl(&c, 0, &["purge", "--route", "used"]).await;
    assert_eq!(purged.code, 0, "{}", purged.stderr);
    assert!(
        purged.stdout.starts_with("purged route used on every node"),
        "{}",
        purged.stdout
    );
    c.shutdown().await;
}
