use std::net::SocketAddr;
use std::path::Path;

use super::*;

const FULL: &str = r#"
node_id  = 2
data_dir = "/var/lib/raftgate"
workers  = 4

[listen]
proxy     = "127.0.0.1:18000"
admin     = "127.0.0.1:18001"
cluster   = "127.0.0.1:18002"
proxy_tls = { addr = "127.0.0.1:18443" }

[cluster]
members = ["1@node1:8002", "2@node2:8002", "3@10.0.0.3:8002"]
secret  = "change-me"
heartbeat_ms = 50
election_timeout_ms = 500
snapshot_every = 100
logs_to_keep = 10

[admin]
token = "change-me-too"

[limits]
max_header_bytes = 1024
max_headers      = 10
max_body_bytes   = 2048
header_timeout_ms = 3000

[cache]
max_bytes       = 1048576
max_entry_bytes = 65536
"#;

fn no_env() -> MapEnv {
    MapEnv::default()
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    from_str(text, Path::new("x.toml"), &no_env())
}

fn parse_err(text: &str) -> ConfigError {
    parse(text).expect_err("config should be rejected")
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn full_file_parses_with_its_values() {
    let c = parse(FULL).unwrap();

    assert_eq!(c.node_id, 2);
    assert_eq!(c.data_dir, Path::new("/var/lib/raftgate"));
    assert_eq!(c.workers, 4);
    assert_eq!(
        c.listen,
        Listen {
            proxy: addr("127.0.0.1:18000"),
            admin: addr("127.0.0.1:18001"),
            cluster: addr("127.0.0.1:18002"),
            proxy_tls: Some(addr("127.0.0.1:18443")),
        }
    );
    let members: Vec<String> = c.members.iter().map(Member::to_string).collect();
    assert_eq!(members, ["1@node1:8002", "2@node2:8002", "3@10.0.0.3:8002"]);
    assert!(!c.join);
    assert_eq!(c.secret.as_deref(), Some("change-me"));
    assert_eq!(c.admin_token.as_deref(), Some("change-me-too"));
    assert_eq!(
        c.raft,
        RaftTiming {
            heartbeat_ms: 50,
            election_timeout_ms: 500,
            snapshot_every: 100,
            logs_to_keep: 10,
        }
    );
    assert_eq!(c.raft.election_timeout_max_ms(), 1000);
    assert_eq!(
        c.cache,
        CacheLimits {
            max_bytes: 1_048_576,
            max_entry_bytes: 65_536,
        }
    );
    assert_eq!(
        c.limits,
        Limits {
            max_header_bytes: 1024,
            max_headers: 10,
            max_body_bytes: 2048,
            header_timeout_ms: 3000,
            drain_timeout_ms: 10_000,
            drain_grace_ms: 1_000,
        }
    );
}

#[test]
fn debug_output_hides_secrets() {
    let c = parse(FULL).unwrap();

    let shown = format!("{c:?}");

    assert!(!shown.contains("change-me"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
}

#[test]
fn minimal_file_gets_the_defaults() {
    let c = parse("node_id = 7\ndata_dir = \"/data\"\n").unwrap();

    assert!(c.workers >= 1, "workers = 0 means one per core");
    assert_eq!(c.listen, Listen::default());
    assert_eq!(c.listen.proxy, addr("0.0.0.0:8000"));
    assert_eq!(c.listen.admin, addr("127.0.0.1:8001"));
    assert_eq!(c.listen.cluster, addr("0.0.0.0:8002"));
    // Neither members nor join: a single-node cluster on the cluster listen address.
    assert_eq!(
        c.members,
        [Member {
            id: 7,
            addr: "0.0.0.0:8002".into()
        }]
    );
    assert_eq!(c.secret, None);
    assert_eq!(c.admin_token, None);
    assert_eq!(c.raft, RaftTiming::default());
    assert_eq!(c.raft.heartbeat_ms, 100);
    assert_eq!(c.raft.election_timeout_ms, 250);
    assert_eq!(c.raft.snapshot_every, 5000);
    assert_eq!(c.raft.logs_to_keep, 1000);
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.limits.max_header_bytes, 65536);
    assert_eq!(c.limits.max_headers, 100);
    assert_eq!(c.limits.max_body_bytes, 10_485_760);
    assert_eq!(c.limits.header_timeout_ms, 10_000);
}

#[test]
fn config_new_matches_a_minimal_file() {
    let from_file = parse("node_id = 7\ndata_dir = \"/data\"\n").unwrap();

    let built = Config::new(7, "/data", Listen::default());

    assert_eq!(format!("{built:?}"), format!("{from_file:?}"));
}

#[test]
fn missing_node_id_is_named() {
    let err = parse_err("data_dir = \"/data\"\n");

    assert_eq!(err.key(), Some("node_id"));
    assert_eq!(err.to_string(), "config x.toml: key \"node_id\": required");
}

#[test]
fn unknown_top_level_key_is_named_with_its_line() {
    let err = parse_err("node_id = 1\ndata_dir = \"/d\"\nnode_idd = 2\n");

    assert_eq!(err.key(), Some("node_idd"));
    let msg = err.to_string();
    assert!(
        msg.starts_with("config x.toml:3: unknown key \"node_idd\""),
        "{msg}"
    );
    assert!(msg.contains("node_id"), "lists the known keys: {msg}");
}

#[test]
fn unknown_key_inside_a_table_is_named_by_its_dotted_path() {
    let text = FULL.replace("secret  = \"change-me\"", "secrte  = \"change-me\"");

    let err = parse_err(&text);

    assert_eq!(err.key(), Some("cluster.secrte"));
    let msg = err.to_string();
    assert!(
        msg.starts_with("config x.toml:14: unknown key \"cluster.secrte\""),
        "{msg}"
    );
}

#[test]
fn unknown_key_inside_an_inline_table_is_named() {
    let text = FULL.replace("{ addr = ", "{ adr = ");

    let err = parse_err(&text);

    assert_eq!(err.key(), Some("listen.proxy_tls.adr"));
}

#[test]
fn proxy_tls_comes_from_the_file_or_env_and_errors_name_it() {
    let env: MapEnv = [("RAFTGATE_LISTEN_PROXY_TLS", "127.0.0.1:18444")]
        .into_iter()
        .collect();
    let c = from_str(FULL, Path::new("x.toml"), &env).unwrap();
    assert_eq!(c.listen.proxy_tls, Some(addr("127.0.0.1:18444")));

    let text = FULL.replace("{ addr = \"127.0.0.1:18443\" }", "{ addr = \"nope\" }");
    let err = parse_err(&text);
    assert_eq!(err.key(), Some("listen.proxy_tls"), "{err}");
    assert!(err.to_string().contains("\"nope\""), "{err}");
}

#[test]
fn unknown_table_is_an_error() {
    let err = parse_err("node_id = 1\ndata_dir = \"/d\"\n[lmits]\nmax_headers = 1\n");

    assert_eq!(err.key(), Some("lmits"));
}

#[test]
fn wrong_type_names_the_key() {
    let err = parse_err("node_id = 1\ndata_dir = \"/d\"\n[limits]\nmax_headers = \"lots\"\n");

    assert_eq!(err.key(), Some("limits.max_headers"));
    let msg = err.to_string();
    assert!(
        msg.starts_with("config x.toml:4: key \"limits.max_headers\": invalid type"),
        "{msg}"
    );
}

#[test]
fn bad_toml_is_a_syntax_error_with_a_line() {
    let err = parse_err("node_id = 1\ndata_dir = \"/d\n");

    assert!(
        matches!(&err, ConfigError::Syntax { at, .. } if at.line == Some(2)),
        "{err}"
    );
}

#[test]
fn bad_address_names_key_and_value() {
    let text = FULL.replace("admin     = \"127.0.0.1:18001\"", "admin = \"nope:x\"");

    let err = parse_err(&text);

    assert_eq!(err.key(), Some("listen.admin"));
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "config x.toml:8: key \"listen.admin\": \"nope:x\" is not a HOST:PORT address"
        ),
        "{msg}"
    );
}

#[test]
fn bad_member_syntax_is_rejected() {
    for bad in [
        "node1:8002",
        "x@node1:8002",
        "1@node1",
        "1@node1:99999",
        "1@:80",
    ] {
        let text = FULL.replace("\"3@10.0.0.3:8002\"", &format!("{bad:?}"));

        let err = parse_err(&text);

        assert!(matches!(err, ConfigError::BadMember { .. }), "{bad}: {err}");
        assert_eq!(err.key(), Some("cluster.members"));
    }
}

#[test]
fn missing_secret_with_three_members_is_rejected() {
    let text = FULL.replace("secret  = \"change-me\"\n", "");

    let err = parse_err(&text);

    assert_eq!(
        err.to_string(),
        "config x.toml: key \"cluster.secret\": required when the cluster has more than one \
         member (or set cluster.secret_file)"
    );
}

#[test]
fn secret_and_secret_file_together_are_rejected() {
    let text = FULL.replace(
        "secret  = \"change-me\"",
        "secret = \"a\"\nsecret_file = \"/s\"",
    );

    let err = parse_err(&text);

    assert!(matches!(err, ConfigError::Conflict { .. }), "{err}");
}

#[test]
fn secret_file_is_read_without_its_trailing_newline() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "s3cret\n").unwrap();
    std::fs::write(dir.path().join("token"), "t0ken\r\n").unwrap();
    let text = FULL
        .replace("secret  = \"change-me\"", "secret_file = \"secret\"")
        .replace("token = \"change-me-too\"", "token_file = \"token\"");
    let path = dir.path().join("node.toml");
    std::fs::write(&path, text).unwrap();

    // Relative paths in the file are relative to the file's directory.
    let c = load(&path, &no_env()).unwrap();

    assert_eq!(c.secret.as_deref(), Some("s3cret"));
    assert_eq!(c.admin_token.as_deref(), Some("t0ken"));
}

#[test]
fn unreadable_secret_file_names_key_and_path() {
    let text = FULL.replace(
        "secret  = \"change-me\"",
        "secret_file = \"/nonexistent/raftgate-secret\"",
    );

    let err = parse_err(&text);

    assert_eq!(err.key(), Some("cluster.secret_file"));
    assert!(
        err.to_string().contains("/nonexistent/raftgate-secret"),
        "{err}"
    );
}

#[test]
fn unreadable_file_names_the_file() {
    let err = load(Path::new("/nonexistent/raftgate.toml"), &no_env()).unwrap_err();

    let msg = err.to_string();
    assert!(
        msg.starts_with("config /nonexistent/raftgate.toml: cannot read: "),
        "{msg}"
    );
}

#[test]
fn env_overrides_win_over_the_file() {
    let env: MapEnv = [
        ("RAFTGATE_NODE_ID", "3"),
        ("RAFTGATE_DATA_DIR", "/elsewhere"),
        ("RAFTGATE_WORKERS", "2"),
        ("RAFTGATE_LISTEN_ADMIN", "127.0.0.1:19001"),
        ("RAFTGATE_CLUSTER_MEMBERS", "3@a:1, 4@b:2"),
        ("RAFTGATE_CLUSTER_SECRET", "from-env"),
        ("RAFTGATE_ADMIN_TOKEN", "env-token"),
        ("RAFTGATE_LIMITS_MAX_HEADERS", "7"),
        ("RAFTGATE_LISTEN_PROXY", ""), // empty counts as unset
    ]
    .into_iter()
    .collect();

    let c = from_str(FULL, Path::new("x.toml"), &env).unwrap();

    assert_eq!(c.node_id, 3);
    assert_eq!(c.data_dir, Path::new("/elsewhere"));
    assert_eq!(c.workers, 2);
    assert_eq!(c.listen.admin, addr("127.0.0.1:19001"));
    assert_eq!(c.listen.proxy, addr("127.0.0.1:18000"));
    let members: Vec<String> = c.members.iter().map(Member::to_string).collect();
    assert_eq!(members, ["3@a:1", "4@b:2"]);
    assert_eq!(c.secret.as_deref(), Some("from-env"));
    assert_eq!(c.admin_token.as_deref(), Some("env-token"));
    assert_eq!(c.limits.max_headers, 7);
}

#[test]
fn env_secret_replaces_a_secret_file_from_the_file() {
    let text = FULL.replace(
        "secret  = \"change-me\"",
        "secret_file = \"/nonexistent/secret\"",
    );
    let env: MapEnv = [("RAFTGATE_CLUSTER_SECRET", "from-env")]
        .into_iter()
        .collect();

    let c = from_str(&text, Path::new("x.toml"), &env).unwrap();

    assert_eq!(c.secret.as_deref(), Some("from-env"));
}

#[test]
fn bad_env_value_names_the_variable() {
    let env: MapEnv = [("RAFTGATE_LISTEN_ADMIN", "nope:x")].into_iter().collect();

    let err = from_str(FULL, Path::new("x.toml"), &env).unwrap_err();

    assert_eq!(
        err.to_string(),
        "config x.toml: key \"listen.admin\" (from RAFTGATE_LISTEN_ADMIN): \"nope:x\" is not a \
         HOST:PORT address (PORT must be a number from 0 to 65535)"
    );

    let env: MapEnv = [("RAFTGATE_NODE_ID", "one")].into_iter().collect();

    let err = from_str(FULL, Path::new("x.toml"), &env).unwrap_err();

    assert_eq!(err.key(), Some("node_id"));
    assert!(err.to_string().contains("RAFTGATE_NODE_ID"), "{err}");
}

#[test]
fn join_without_self_in_members_is_accepted() {
    let text = FULL
        .replace("node_id  = 2", "node_id  = 9")
        .replace("[cluster]", "[cluster]\njoin = true");

    let c = parse(&text).unwrap();

    assert!(c.join);
    assert_eq!(c.members.len(), 3);
    assert!(c.members.iter().all(|m| m.id != 9));
}

#[test]
fn join_with_no_members_needs_a_secret() {
    let text = "node_id = 9\ndata_dir = \"/d\"\n[cluster]\njoin = true\n";

    let err = parse_err(text);

    assert_eq!(err.key(), Some("cluster.secret"));

    let c = parse(&format!("{text}secret = \"s\"\n")).unwrap();
    assert!(c.join);
    assert!(c.members.is_empty(), "a joining node does not imply itself");
}

#[test]
fn duplicate_member_id_is_rejected() {
    let text = FULL.replace("\"3@10.0.0.3:8002\"", "\"2@node3:8002\"");

    let err = parse_err(&text);

    assert!(
        matches!(err, ConfigError::DuplicateMember { id: 2, .. }),
        "{err}"
    );
    assert_eq!(err.key(), Some("cluster.members"));
}

#[test]
fn node_id_not_among_members_is_rejected() {
    let text = FULL.replace("node_id  = 2", "node_id  = 4");

    let err = parse_err(&text);

    assert!(
        matches!(&err, ConfigError::NotAMember { node_id: 4, members, .. } if members == &[1, 2, 3]),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("config x.toml:13: key \"cluster.members\": this node (node_id = 4)"),
        "{msg}"
    );
}

#[test]
fn heartbeat_must_be_shorter_than_the_election_timeout() {
    let text = FULL.replace("heartbeat_ms = 50", "heartbeat_ms = 500");

    let err = parse_err(&text);

    assert_eq!(err.key(), Some("cluster.heartbeat_ms"));
}

#[test]
fn zero_limits_are_rejected() {
    let text = FULL.replace("max_headers      = 10", "max_headers = 0");

    let err = parse_err(&text);

    assert_eq!(err.key(), Some("limits.max_headers"));
}

#[test]
fn limits_the_proxy_cannot_honour_are_rejected() {
    let text = FULL.replace("max_headers      = 10", "max_headers = 1001");
    let err = parse_err(&text);
    assert_eq!(err.key(), Some("limits.max_headers"));
    let msg = err.to_string();
    assert!(
        msg.contains("key \"limits.max_headers\"") && msg.contains("at most 1000"),
        "{msg}"
    );
    let text = FULL.replace("max_header_bytes = 1024", "max_header_bytes = 131073");
    assert_eq!(parse_err(&text).key(), Some("limits.max_header_bytes"));
    // Past actix-http's own 96 header fields: the proxy carries the rest through it.
    let text = FULL
        .replace("max_headers      = 10", "max_headers = 1000")
        .replace("max_header_bytes = 1024", "max_header_bytes = 131072");
    let c = parse(&text).unwrap();
    assert_eq!(
        (c.limits.max_headers, c.limits.max_header_bytes),
        (1000, 131_072)
    );
}

#[test]
fn the_cache_bound_defaults_to_64_mib_with_1_mib_entries() {
    let c = parse("node_id = 7\ndata_dir = \"/data\"\n").unwrap();
    assert_eq!(
        (c.cache.max_bytes, c.cache.max_entry_bytes),
        (64 << 20, 1 << 20)
    );
    assert_eq!(c.cache, CacheLimits::default());
}

#[test]
fn cache_bounds_are_checked() {
    let err = parse_err(&FULL.replace("max_bytes       = 1048576", "max_bytes = 0"));
    assert_eq!(err.key(), Some("cache.max_bytes"));
    // An entry larger than the whole cache could never be kept.
    let err = parse_err(&FULL.replace("max_entry_bytes = 65536", "max_entry_bytes = 2097152"));
    assert_eq!(err.key(), Some("cache.max_entry_bytes"));
    assert!(err.to_string().contains("cache.max_bytes"), "{err}");
    let text = FULL
        .replace("max_bytes       = 1048576", "max_bytes = 1073741824")
        .replace("max_entry_bytes = 65536", "max_entry_bytes = 67108865");
    let err = parse_err(&text);
    assert_eq!(err.key(), Some("cache.max_entry_bytes"));
    assert!(err.to_string().contains("at most 67108864"), "{err}");
    let err = parse_err(&FULL.replace("max_entry_bytes = 65536", "max_entry_bytes = \"big\""));
    assert_eq!(err.key(), Some("cache.max_entry_bytes"));
    let err = parse_err(&FULL.replace("[cache]", "[cache]\nmax_keys = 3"));
    assert!(err.to_string().contains("max_keys"), "{err}");
}

#[test]
fn env_overrides_the_cache_bound() {
    let env: MapEnv = [("RAFTGATE_CACHE_MAX_BYTES", "2097152")]
        .into_iter()
        .collect();
    let c = from_str(FULL, Path::new("x.toml"), &env).unwrap();
    assert_eq!(c.cache.max_bytes, 2_097_152);
    let env: MapEnv = [("RAFTGATE_CACHE_MAX_BYTES", "lots")].into_iter().collect();
    let err = from_str(FULL, Path::new("x.toml"), &env).unwrap_err();
    assert_eq!(err.key(), Some("cache.max_bytes"));
    assert!(
        err.to_string().contains("RAFTGATE_CACHE_MAX_BYTES"),
        "{err}"
    );
}

#[test]
fn telemetry_metrics_default_on_and_can_be_turned_off() {
    let c = parse("node_id = 7\ndata_dir = \"/data\"\n").unwrap();
    assert!(c.telemetry.metrics);
    let c = parse("node_id = 7\ndata_dir = \"/data\"\n[telemetry]\nmetrics = false\n").unwrap();
    assert!(!c.telemetry.metrics);
    let env: MapEnv = [("RAFTGATE_TELEMETRY_METRICS", "false")]
        .into_iter()
        .collect();
    let c = from_str(FULL, Path::new("x.toml"), &env).unwrap();
    assert!(!c.telemetry.metrics);
}

#[test]
fn telemetry_keys_are_checked() {
    let err = parse_err("node_id = 7\ndata_dir = \"/d\"\n[telemetry]\nmetrics = \"no\"\n");
    assert_eq!(err.key(), Some("telemetry.metrics"));
    let err = parse_err("node_id = 7\ndata_dir = \"/d\"\n[telemetry]\naccess_log = true\n");
    assert!(err.to_string().contains("access_log"), "{err}");
    let env: MapEnv = [("RAFTGATE_TELEMETRY_METRICS", "maybe")]
        .into_iter()
        .collect();
    let err = from_str(FULL, Path::new("x.toml"), &env).unwrap_err();
    assert_eq!(err.key(), Some("telemetry.metrics"));
    assert!(err.to_string().contains("boolean"), "{err}");
}

#[test]
fn the_drain_timeout_defaults_to_ten_seconds_and_must_be_positive() {
    let c = parse("node_id = 7\ndata_dir = \"/d\"\n").unwrap();
    assert_eq!(c.limits.drain_timeout(), std::time::Duration::from_secs(10));
    let c = parse("node_id = 7\ndata_dir = \"/d\"\n[limits]\ndrain_timeout_ms = 2500\n").unwrap();
    assert_eq!(c.limits.drain_timeout_ms, 2500);
    let err = parse_err("node_id = 7\ndata_dir = \"/d\"\n[limits]\ndrain_timeout_ms = 0\n");
    assert_eq!(err.key(), Some("limits.drain_timeout_ms"));
    let env: MapEnv = [("RAFTGATE_LIMITS_DRAIN_TIMEOUT_MS", "1500")]
        .into_iter()
        .collect();
    let c = from_str(FULL, Path::new("x.toml"), &env).unwrap();
    assert_eq!(c.limits.drain_timeout_ms, 1500);
}

#[test]
fn the_drain_grace_defaults_to_a_second_and_never_outlasts_the_drain() {
    let c = parse("node_id = 7\ndata_dir = \"/d\"\n").unwrap();
    assert_eq!(c.limits.drain_grace(), std::time::Duration::from_secs(1));
    let c = parse("node_id = 7\ndata_dir = \"/d\"\n[limits]\ndrain_timeout_ms = 400\n").unwrap();
    assert_eq!(
        c.limits.drain_grace(),
        std::time::Duration::from_millis(400)
    );
    let c = parse("node_id = 7\ndata_dir = \"/d\"\n[limits]\ndrain_grace_ms = 0\n").unwrap();
    assert_eq!(c.limits.drain_grace(), std::time::Duration::ZERO);
}
