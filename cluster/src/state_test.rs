use super::*;
use crate::spec::{AuthMode, Balancer, Target, Timeouts};

fn service(name: &str) -> Service {
    Service::new(name, ["http://127.0.0.1:9000"])
}

fn route(name: &str, service: &str) -> Route {
    Route::new(name, service, &["/x"])
}

fn put_service(s: Service) -> Command {
    Command::PutService {
        service: s,
        precondition: Precondition::None,
    }
}

fn put_route(r: Route) -> Command {
    Command::PutRoute {
        route: r,
        precondition: Precondition::None,
    }
}

#[test]
fn create_update_unchanged_move_revision_and_versions() {
    let mut st = ClusterState::default();
    assert_eq!(
        st.apply(1, &put_service(service("a"))),
        Ok(Applied::Created)
    );
    assert_eq!((st.revision, st.services["a"].version), (1, 1));

    // The same content again: nothing moves, even though the entry was applied.
    assert_eq!(
        st.apply(2, &put_service(service("a"))),
        Ok(Applied::Unchanged)
    );
    assert_eq!(
        (st.revision, st.applied, st.services["a"].version),
        (1, 2, 1)
    );

    let mut changed = service("a");
    changed.retries = 2;
    assert_eq!(st.apply(3, &put_service(changed)), Ok(Applied::Updated));
    assert_eq!(
        (
            st.revision,
            st.services["a"].version,
            st.services["a"].retries
        ),
        (3, 3, 2)
    );
}

#[test]
fn routes_need_their_service_and_pin_it() {
    let mut st = ClusterState::default();
    let err = st.apply(1, &put_route(route("r", "missing"))).unwrap_err();
    assert!(matches!(err, StateError::UnknownService { .. }));
    assert!(st.routes.is_empty());
    assert_eq!(st.revision, 0);

    st.apply(2, &put_service(service("s"))).unwrap();
    st.apply(3, &put_route(route("r", "s"))).unwrap();
    let del = Command::DeleteService {
        name: "s".into(),
        precondition: Precondition::None,
    };
    assert_eq!(
        st.apply(4, &del),
        Err(StateError::ServiceInUse {
            service: "s".into(),
            routes: vec!["r".into()]
        })
    );
    assert!(st.services.contains_key("s"));

    let del_route = Command::DeleteRoute {
        name: "r".into(),
        precondition: Precondition::None,
    };
    assert_eq!(st.apply(5, &del_route), Ok(Applied::Deleted));
    assert_eq!(st.apply(6, &del), Ok(Applied::Deleted));
    assert_eq!(st.revision, 6);
    assert_eq!(
        st.apply(7, &del),
        Err(StateError::NotFound {
            kind: Kind::Service,
            name: "s".into()
        })
    );
}

#[test]
fn preconditions_are_enforced_at_apply() {
    let mut st = ClusterState::default();
    st.apply(1, &put_service(service("s"))).unwrap();
    let stale = Command::PutService {
        service: {
            let mut s = service("s");
            s.retries = 1;
            s
        },
        precondition: Precondition::IfMatch(7),
    };
    assert!(matches!(
        st.apply(2, &stale),
        Err(StateError::VersionMismatch {
            expected: 7,
            actual: Some(1),
            ..
        })
    ));
    let fresh = Command::PutService {
        service: {
            let mut s = service("s");
            s.retries = 1;
            s
        },
        precondition: Precondition::IfMatch(1),
    };
    assert_eq!(st.apply(3, &fresh), Ok(Applied::Updated));
    let create_only = Command::PutService {
        service: service("s"),
        precondition: Precondition::IfAbsent,
    };
    assert!(matches!(
        st.apply(4, &create_only),
        Err(StateError::AlreadyExists { .. })
    ));
}

#[test]
fn plan_predicts_apply_and_changes_nothing() {
    let mut st = ClusterState::default();
    st.apply(1, &put_service(service("s"))).unwrap();
    let before = st.clone();
    assert_eq!(st.plan(&put_route(route("r", "s"))), Ok(Applied::Created));
    assert_eq!(st.plan(&put_service(service("s"))), Ok(Applied::Unchanged));
    assert!(st.plan(&put_route(route("r", "nope"))).is_err());
    assert_eq!(st, before);
}

#[test]
fn same_entries_give_same_digest() {
    let cmds = [
        put_service(service("s")),
        put_route(route("r", "s")),
        put_route(route("q", "s")),
    ];
    let mut a = ClusterState::default();
    let mut b = ClusterState::default();
    for (i, c) in cmds.iter().enumerate() {
        let _ = a.apply(i as u64 + 1, c);
        let _ = b.apply(i as u64 + 1, c);
    }
    assert_eq!(a.digest(), b.digest());
    let _ = b.apply(
        9,
        &Command::DeleteRoute {
            name: "q".into(),
            precondition: Precondition::None,
        },
    );
    assert_ne!(a.digest(), b.digest());
}

#[test]
fn commands_round_trip_through_postcard() {
    let mut r = route("r", "s");
    r.headers.insert("x-v".into(), "2".into());
    r.timeouts = Some(Timeouts {
        connect_ms: 5,
        request_ms: 6,
    });
    for cmd in [
        put_route(r),
        put_service(service("s")),
        Command::DeleteRoute {
            name: "r".into(),
            precondition: Precondition::IfMatch(3),
        },
    ] {
        let bytes = postcard::to_stdvec(&cmd).unwrap();
        assert_eq!(postcard::from_bytes::<Command>(&bytes).unwrap(), cmd);
    }
}

fn consumer(name: &str) -> crate::identity::Consumer {
    crate::identity::Consumer {
        name: name.into(),
        version: 0,
        groups: vec!["gold".into()],
    }
}

fn key(id: &str, consumer: &str, secret: &str) -> Command {
    Command::CreateApiKey {
        key: crate::identity::ApiKey {
            id: id.into(),
            consumer: consumer.into(),
            hash: crate::identity::hash_key(secret),
            version: 0,
        },
    }
}

#[test]
fn keys_belong_to_existing_consumers_and_are_unique() {
    let mut st = ClusterState::default();
    assert!(matches!(
        st.apply(1, &key("k1", "alice", "secret-aaaaaaaaaaaa")),
        Err(StateError::NotFound {
            kind: Kind::Consumer,
            ..
        })
    ));
    st.apply(
        2,
        &Command::PutConsumer {
            consumer: consumer("alice"),
            precondition: Precondition::None,
        },
    )
    .unwrap();
    assert_eq!(
        st.apply(3, &key("k1", "alice", "secret-aaaaaaaaaaaa")),
        Ok(Applied::Created)
    );
    assert_eq!(st.revision, 3);
    let stored = &st.api_keys[&crate::identity::hash_key("secret-aaaaaaaaaaaa")];
    assert_eq!((stored.consumer.as_str(), stored.version), ("alice", 3));
    // The same id or the same secret again is refused.
    assert!(matches!(
        st.apply(4, &key("k1", "alice", "secret-bbbbbbbbbbbb")),
        Err(StateError::AlreadyExists { .. })
    ));
    assert_eq!(
        st.apply(5, &key("k2", "alice", "secret-aaaaaaaaaaaa")),
        Err(StateError::DuplicateKey)
    );
    assert_eq!(st.api_keys.len(), 1);
}

#[test]
fn revoking_and_deleting_a_consumer_remove_its_keys() {
    let mut st = ClusterState::default();
    for (i, name) in ["alice", "bob"].iter().enumerate() {
        st.apply(
            i as u64 + 1,
            &Command::PutConsumer {
                consumer: consumer(name),
                precondition: Precondition::None,
            },
        )
        .unwrap();
    }
    st.apply(3, &key("a1", "alice", "alice-key-one-xxxx"))
        .unwrap();
    st.apply(4, &key("a2", "alice", "alice-key-two-xxxx"))
        .unwrap();
    st.apply(5, &key("b1", "bob", "bob-key-one-xxxxxx"))
        .unwrap();
    // Only the owner can revoke a key.
    let wrong = Command::RevokeApiKey {
        consumer: "bob".into(),
        id: "a1".into(),
    };
    assert!(matches!(
        st.apply(6, &wrong),
        Err(StateError::NotFound {
            kind: Kind::ApiKey,
            ..
        })
    ));
    let revoke = Command::RevokeApiKey {
        consumer: "alice".into(),
        id: "a1".into(),
    };
    assert_eq!(st.apply(7, &revoke), Ok(Applied::Deleted));
    assert!(!st
        .api_keys
        .contains_key(&crate::identity::hash_key("alice-key-one-xxxx")));
    assert_eq!(
        st.apply(8, &revoke).unwrap_err(),
        StateError::NotFound {
            kind: Kind::ApiKey,
            name: "a1".into()
        }
    );
    st.apply(
        9,
        &Command::DeleteConsumer {
            name: "alice".into(),
            precondition: Precondition::None,
        },
    )
    .unwrap();
    assert_eq!(st.api_keys.len(), 1);
    assert_eq!(st.key_ids.keys().collect::<Vec<_>>(), vec!["b1"]);
    assert_eq!(st.revision, 9);
}
