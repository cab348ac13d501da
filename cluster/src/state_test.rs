use super::*;
use crate::spec::Timeouts;

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

fn key(id: u64, consumer: &str, secret: &str) -> Command {
    Command::CreateApiKey {
        key: crate::identity::ApiKey {
            id,
            consumer: consumer.into(),
            hash: crate::identity::hash_key(secret),
        },
    }
}

#[test]
fn keys_belong_to_existing_consumers_and_are_unique() {
    let mut st = ClusterState::default();
    assert!(matches!(
        st.apply(1, &key(1, "alice", "secret-aaaaaaaaaaaa")),
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
        st.apply(3, &key(1, "alice", "secret-aaaaaaaaaaaa")),
        Ok(Applied::Created)
    );
    assert_eq!(st.revision, 3);
    let stored = &st.api_keys[&crate::identity::hash_key("secret-aaaaaaaaaaaa")];
    assert_eq!((&*stored.consumer, stored.version), ("alice", 3));
    // The same id or the same secret again is refused.
    assert!(matches!(
        st.apply(4, &key(1, "alice", "secret-bbbbbbbbbbbb")),
        Err(StateError::AlreadyExists { .. })
    ));
    assert_eq!(
        st.apply(5, &key(2, "alice", "secret-aaaaaaaaaaaa")),
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
    st.apply(3, &key(0xa1, "alice", "alice-key-one-xxxx"))
        .unwrap();
    st.apply(4, &key(0xa2, "alice", "alice-key-two-xxxx"))
        .unwrap();
    st.apply(5, &key(0xb1, "bob", "bob-key-one-xxxxxx"))
        .unwrap();
    // Only the owner can revoke a key.
    let wrong = Command::RevokeApiKey {
        consumer: "bob".into(),
        id: 0xa1,
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
        id: 0xa1,
    };
    assert_eq!(st.apply(7, &revoke), Ok(Applied::Deleted));
    assert!(!st
        .api_keys
        .contains_key(&crate::identity::hash_key("alice-key-one-xxxx")));
    assert_eq!(
        st.apply(8, &revoke).unwrap_err(),
        StateError::NotFound {
            kind: Kind::ApiKey,
            name: "00000000000000a1".into()
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
    assert_eq!(st.key_ids_of("bob"), vec![0xb1]);
    assert!(st.key_ids_of("alice").is_empty());
    assert_eq!(st.revision, 9);
}

fn jwt(consumer: &str, kid: &str) -> Command {
    Command::PutJwt {
        credential: crate::identity::JwtCredential {
            consumer: consumer.into(),
            key_id: kid.into(),
            version: 0,
            algorithm: crate::identity::JwtAlgorithm::HS256,
            public_key: None,
            secret: Some("0123456789abcdef0123".into()),
            issuer: None,
            audience: None,
            leeway_s: 5,
        },
    }
}

#[test]
fn jwt_key_ids_are_unique_across_consumers_and_go_with_their_consumer() {
    let mut st = ClusterState::default();
    assert!(matches!(
        st.apply(1, &jwt("alice", "k1")),
        Err(StateError::NotFound {
            kind: Kind::Consumer,
            ..
        })
    ));
    for (i, name) in ["alice", "bob"].iter().enumerate() {
        st.apply(
            i as u64 + 2,
            &Command::PutConsumer {
                consumer: consumer(name),
                precondition: Precondition::None,
            },
        )
        .unwrap();
    }
    assert_eq!(st.apply(4, &jwt("alice", "k1")), Ok(Applied::Created));
    assert_eq!(st.apply(5, &jwt("alice", "k1")), Ok(Applied::Unchanged));
    assert_eq!(st.revision, 4);
    assert_eq!(
        st.apply(6, &jwt("bob", "k1")),
        Err(StateError::KeyIdTaken {
            key_id: "k1".into(),
            consumer: "alice".into()
        })
    );
    let wrong_owner = Command::DeleteJwt {
        consumer: "bob".into(),
        key_id: "k1".into(),
    };
    assert!(matches!(
        st.apply(7, &wrong_owner),
        Err(StateError::NotFound {
            kind: Kind::Jwt,
            ..
        })
    ));
    st.apply(8, &jwt("bob", "k2")).unwrap();
    st.apply(
        9,
        &Command::DeleteConsumer {
            name: "alice".into(),
            precondition: Precondition::None,
        },
    )
    .unwrap();
    assert_eq!(st.jwts.keys().collect::<Vec<_>>(), vec!["k2"]);
}

fn certificate(name: &str, snis: &[&str]) -> crate::tls::Certificate {
    crate::tls::Certificate {
        name: name.into(),
        version: 0,
        cert: "-----BEGIN CERTIFICATE-----".into(),
        key: "-----BEGIN PRIVATE KEY-----".into(),
        snis: snis.iter().map(|s| s.to_string()).collect(),
    }
}

fn put_certificate(c: crate::tls::Certificate, precondition: Precondition) -> Command {
    Command::PutCertificate {
        certificate: c,
        precondition,
    }
}

#[test]
fn certificates_are_upserted_versioned_and_deleted() {
    let mut st = ClusterState::default();
    let a = certificate("a", &["a.test", "*.a.test"]);
    assert_eq!(
        st.apply(1, &put_certificate(a.clone(), Precondition::IfAbsent)),
        Ok(Applied::Created)
    );
    assert_eq!((st.revision, st.certificates["a"].version), (1, 1));
    assert_eq!(
        st.apply(2, &put_certificate(a.clone(), Precondition::None)),
        Ok(Applied::Unchanged)
    );
    assert_eq!(st.revision, 1);
    assert!(matches!(
        st.apply(3, &put_certificate(a.clone(), Precondition::IfAbsent)),
        Err(StateError::AlreadyExists {
            kind: Kind::Certificate,
            ..
        })
    ));

    let renewed = crate::tls::Certificate {
        cert: "-----BEGIN CERTIFICATE----- renewed".into(),
        ..a
    };
    assert!(matches!(
        st.apply(
            4,
            &put_certificate(renewed.clone(), Precondition::IfMatch(9))
        ),
        Err(StateError::VersionMismatch { .. })
    ));
    assert_eq!(
        st.apply(5, &put_certificate(renewed, Precondition::IfMatch(1))),
        Ok(Applied::Updated)
    );
    assert_eq!((st.revision, st.certificates["a"].version), (5, 5));

    let delete = |name: &str| Command::DeleteCertificate {
        name: name.into(),
        precondition: Precondition::None,
    };
    assert!(matches!(
        st.apply(6, &delete("nope")),
        Err(StateError::NotFound {
            kind: Kind::Certificate,
            ..
        })
    ));
    assert_eq!(st.apply(7, &delete("a")), Ok(Applied::Deleted));
    assert!(st.certificates.is_empty());
    assert_eq!(st.revision, 7);
}

#[test]
fn an_sni_belongs_to_one_certificate() {
    let mut st = ClusterState::default();
    let put = |c| put_certificate(c, Precondition::None);
    st.apply(1, &put(certificate("a", &["a.test", "*.a.test"])))
        .unwrap();
    let before = st.clone();
    assert_eq!(
        st.apply(2, &put(certificate("b", &["b.test", "*.a.test"]))),
        Err(StateError::SniTaken {
            sni: "*.a.test".into(),
            certificate: "a".into()
        })
    );
    assert_eq!(st.certificates, before.certificates);
    assert_eq!(st.revision, 1);

    // A certificate may keep or drop its own SNIs; a freed SNI can be taken.
    st.apply(3, &put(certificate("a", &["a.test"]))).unwrap();
    st.apply(4, &put(certificate("b", &["b.test", "*.a.test"])))
        .unwrap();
    assert_eq!(st.certificates.len(), 2);

    let digest = st.digest();
    st.apply(5, &put(certificate("b", &["b.test"]))).unwrap();
    assert_ne!(st.digest(), digest, "certificates are part of the digest");
}

#[test]
fn a_decoded_snapshot_equals_the_state_it_encodes() {
    let mut st = ClusterState::default();
    st.apply(
        1,
        &Command::PutConsumer {
            consumer: consumer("alice"),
            precondition: Precondition::None,
        },
    )
    .unwrap();
    st.apply(2, &key(0xa1, "alice", "alice-key-one-xxxx"))
        .unwrap();
    st.apply(3, &jwt("alice", "k1")).unwrap();
    let bytes = postcard::to_stdvec(&st).unwrap();
    let decoded = ClusterState::decode(&bytes).unwrap();
    assert_eq!(decoded, st);
    assert_eq!(decoded.key_ids_of("alice"), vec![0xa1]);
}
