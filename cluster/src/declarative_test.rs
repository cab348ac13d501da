use super::*;
use crate::identity::{hash_key, ApiKey, JwtAlgorithm, JwtCredential};

fn service(name: &str) -> Service {
    Service::new(name, ["http://127.0.0.1:9000"])
}

fn route(name: &str, service: &str) -> Route {
    Route::new(name, service, &["/x"])
}

fn consumer(name: &str) -> Consumer {
    Consumer {
        name: name.into(),
        version: 0,
        groups: vec![],
    }
}

fn replace(services: Vec<Service>, routes: Vec<Route>, consumers: Vec<Consumer>) -> Command {
    Command::ReplaceConfig {
        services,
        routes,
        consumers,
        precondition: Precondition::None,
    }
}

fn key(consumer: &str, id: u64, secret: &str) -> Command {
    Command::CreateApiKey {
        key: ApiKey {
            id,
            consumer: consumer.into(),
            hash: hash_key(secret),
        },
    }
}

fn jwt(consumer: &str, kid: &str) -> Command {
    Command::PutJwt {
        credential: JwtCredential {
            consumer: consumer.into(),
            key_id: kid.into(),
            version: 0,
            algorithm: JwtAlgorithm::HS256,
            public_key: None,
            secret: Some("0123456789abcdef".into()),
            issuer: None,
            audience: None,
            leeway_s: 5,
        },
    }
}

/// a, b (route r → a), consumers alice and bob with a key and a JWT each, at indexes 1-8.
fn populated() -> ClusterState {
    let mut st = ClusterState::default();
    let cmds = [
        replace(
            vec![service("a"), service("b")],
            vec![route("r", "a")],
            vec![consumer("alice"), consumer("bob")],
        ),
        key("alice", 1, "alice-secret-key-0001"),
        key("bob", 2, "bob-secret-key-00002"),
        jwt("alice", "ka"),
        jwt("bob", "kb"),
    ];
    for (i, c) in cmds.iter().enumerate() {
        st.apply(i as u64 + 1, c).unwrap();
    }
    st
}

#[test]
fn a_replace_keeps_unchanged_versions_and_stamps_the_rest() {
    let mut st = populated();
    assert_eq!((st.revision, st.services["a"].version), (5, 1));
    let mut b = service("b");
    b.retries = 3;
    let cmd = replace(
        vec![service("a"), b, service("c")],
        vec![route("r", "a")],
        vec![consumer("alice"), consumer("bob")],
    );
    let diff = st.diff(
        &[
            service("a"),
            st.services["b"].as_ref().clone(),
            service("c"),
        ],
        &[],
        &[],
    );
    assert_eq!(diff.services.created, ["c"]);
    assert_eq!(diff.routes.deleted, ["r"]);
    assert_eq!(diff.consumers.deleted, ["alice", "bob"]);

    let bytes = postcard::to_stdvec(&cmd).unwrap();
    assert_eq!(postcard::from_bytes::<Command>(&bytes).unwrap(), cmd);
    assert_eq!(st.apply(10, &cmd), Ok(Applied::Updated));
    assert_eq!(st.revision, 10);
    let versions: Vec<u64> = st.services.values().map(|s| s.version).collect();
    assert_eq!(versions, [1, 10, 10], "a kept, b updated, c created");
    assert_eq!(
        (st.routes["r"].version, st.consumers["alice"].version),
        (1, 1)
    );
}

#[test]
fn the_same_configuration_again_changes_nothing() {
    let mut st = populated();
    let before = st.clone();
    let doc = Document::from_state(&st).named().unwrap();
    assert!(st.diff_document(&doc).is_empty());
    let cmd = doc.replace(Precondition::IfMatch(5));
    assert_eq!(st.plan(&cmd), Ok(Applied::Unchanged));
    assert_eq!(st.apply(9, &cmd), Ok(Applied::Unchanged));
    assert_eq!(st.applied, 9);
    st.applied = before.applied;
    assert_eq!(st, before);
}

#[test]
fn removed_consumers_lose_their_credentials_kept_ones_keep_them() {
    let mut st = populated();
    let cmd = replace(
        vec![service("a"), service("b")],
        vec![route("r", "a")],
        vec![consumer("alice")],
    );
    assert_eq!(st.apply(6, &cmd), Ok(Applied::Updated));
    assert_eq!(st.key_ids_of("alice"), [1]);
    assert!(st.key_ids_of("bob").is_empty());
    assert!(!st.api_keys.contains_key(&hash_key("bob-secret-key-00002")));
    assert!(st.api_keys.contains_key(&hash_key("alice-secret-key-0001")));
    assert_eq!(st.jwts.keys().collect::<Vec<_>>(), ["ka"]);
    assert!(!st.consumers.contains_key("bob"));
}

#[test]
fn a_route_to_a_service_outside_the_new_set_refuses_the_whole_entry() {
    let mut st = populated();
    let before = st.clone();
    // Service a goes, route r still names it.
    let cmd = replace(vec![service("b")], vec![route("r", "a")], vec![]);
    assert_eq!(
        st.apply(6, &cmd),
        Err(StateError::UnknownService {
            route: "r".into(),
            service: "a".into()
        })
    );
    st.applied = before.applied;
    assert_eq!(st, before, "nothing changed");
}

#[test]
fn if_match_holds_to_the_cluster_revision() {
    let mut st = populated();
    let doc = Document {
        services: [("a".to_string(), service("a"))].into(),
        ..Document::default()
    };
    let stale = doc.clone().replace(Precondition::IfMatch(4));
    assert_eq!(
        st.apply(6, &stale),
        Err(StateError::RevisionMismatch {
            expected: 4,
            actual: 5
        })
    );
    assert_eq!(
        st.apply(7, &doc.replace(Precondition::IfMatch(5))),
        Ok(Applied::Updated)
    );
    assert_eq!(st.services.len(), 1);
    assert!(st.api_keys.is_empty() && st.jwts.is_empty());
}

#[test]
fn a_document_names_resources_after_their_keys() {
    let doc: Document = serde_json::from_value(serde_json::json!({
        "services": {"s": {"targets": [{"url": "http://127.0.0.1:9000"}]}},
        "routes": {"r": {"service": "s", "paths": ["/r"]}},
        "consumers": {"alice": {"groups": ["gold"]}},
    }))
    .unwrap();
    let doc = doc.named().unwrap();
    assert_eq!(doc.routes["r"].name, "r");
    assert_eq!(doc.consumers["alice"].groups, ["gold"]);
    doc.validate_references().unwrap();

    let mut wrong = doc.clone();
    wrong.routes.get_mut("r").unwrap().service = "nope".into();
    assert_eq!(
        wrong.validate_references().unwrap_err().field,
        "routes.r.service"
    );
    let mut contradicting = doc.clone();
    contradicting.services.get_mut("s").unwrap().name = "t".into();
    assert_eq!(contradicting.named().unwrap_err().field, "services.s.name");
}

#[test]
fn an_export_reads_back_as_the_same_document() {
    let mut st = ClusterState::default();
    let mut r = route("r", "s");
    r.rate_limit = Some(crate::spec::RateLimit {
        requests: 5,
        per: crate::spec::RateLimitPer::Second,
        by: None,
    });
    st.apply(
        1,
        &replace(vec![service("s")], vec![r], vec![consumer("c")]),
    )
    .unwrap();
    let json = Document::from_state(&st).to_json();
    assert!(json["services"]["s"].get("version").is_none());
    assert!(json["services"]["s"].get("hash_on").is_none(), "no nulls");
    assert!(
        json["services"]["s"].get("timeouts").is_none(),
        "no defaults"
    );
    assert_eq!(
        json["routes"]["r"]["rate_limit"],
        serde_json::json!({"requests": 5, "per": "second"})
    );
    assert_eq!(json["consumers"]["c"], serde_json::json!({}));
    let back: Document = serde_json::from_value(json).unwrap();
    assert!(st.diff_document(&back.named().unwrap()).is_empty());
}
