//! The binary's contract for config errors: exit 2, name the file and the key, bind nothing.

use std::process::Command;

fn serve(config: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_raftgate"))
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove("RAFTGATE_CONFIG")
        .output()
        .expect("run raftgate");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        stderr.contains("node.toml"),
        "the error names the file: {stderr}"
    );
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn an_unknown_key_exits_2_naming_file_and_key() {
    let (code, err) =
        serve("node_id = 1\ndata_dir = \"/tmp/x\"\n[listen]\nproxxy = \"127.0.0.1:1\"\n");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("listen.proxxy"), "{err}");
}

#[test]
fn a_bad_address_exits_2_naming_the_key() {
    let (code, err) =
        serve("node_id = 1\ndata_dir = \"/tmp/x\"\n[listen]\nadmin = \"nope:port\"\n");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("listen.admin"), "{err}");
}

#[test]
fn a_missing_secret_exits_2_before_binding_any_port() {
    // Hold the proxy port: a node that bound before validating would fail with exit 1 instead.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let config = format!(
        "node_id = 1\ndata_dir = \"/tmp/x\"\n[listen]\nproxy = \"127.0.0.1:{port}\"\n[cluster]\nmembers = [\"1@127.0.0.1:7001\", \"2@127.0.0.1:7002\", \"3@127.0.0.1:7003\"]\n"
    );
    let (code, err) = serve(&config);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cluster.secret"), "{err}");
}

#[test]
fn the_example_node_configs_are_valid() {
    let env: raftgate::config::MapEnv = [
        ("RAFTGATE_CLUSTER_SECRET", "s"),
        ("RAFTGATE_ADMIN_TOKEN", "t"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for i in 1..=3 {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(format!("config/node{i}.example.toml"));
        let text = std::fs::read_to_string(&path).unwrap();
        let c = raftgate::config::from_str(&text, &path, &env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.node_id, i);
        assert_eq!(c.members.len(), 3);
        assert_eq!(c.listen.admin.to_string(), "127.0.0.1:8001");
    }
}
