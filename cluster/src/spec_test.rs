use super::*;

fn route(paths: &[&str]) -> Route {
    Route::new("r", "s", paths)
}

#[test]
fn target_urls_parse_with_explicit_ports() {
    let t = parse_target_url("http://127.0.0.1:9000").unwrap();
    assert_eq!(t.authority, "127.0.0.1:9000");
    assert_eq!(t.base_path, "");
    let t = parse_target_url("http://example.com/api/").unwrap();
    assert_eq!(t.authority, "example.com:80");
    assert_eq!(t.base_path, "/api");
    let t = parse_target_url("http://[::1]:81/x").unwrap();
    assert_eq!(t.authority, "[::1]:81");
    assert!(parse_target_url("ftp://x").is_err());
    assert!(parse_target_url("http://").is_err());
    assert!(parse_target_url("http://a:99999").is_err());
    assert!(parse_target_url("http://u@a:1").is_err());
    assert!(parse_target_url("http://a b").is_err());
}

#[test]
fn https_targets_keep_their_scheme_and_default_to_443() {
    let t = parse_target_url("https://api.example.com/v1").unwrap();
    assert_eq!(
        (t.scheme, t.authority.as_str(), t.base_path.as_str()),
        ("https", "api.example.com:443", "/v1")
    );
    let t = parse_target_url("https://127.0.0.1:8443").unwrap();
    assert_eq!(
        (t.scheme, t.authority.as_str()),
        ("https", "127.0.0.1:8443")
    );
    assert_eq!(parse_target_url("http://a").unwrap().scheme, "http");
    assert!(parse_target_url("https://").is_err());
    assert!(parse_target_url("HTTPS://a").is_err());
}

#[test]
fn route_paths_are_checked() {
    assert!(route(&["/a", "=/b", "~^/c/[0-9]+$"]).validate().is_ok());
    let e = route(&["~^/c/[0-9+$"]).validate().unwrap_err();
    assert_eq!(e.field, "paths.0");
    assert!(e.message.contains("invalid regex"));
    assert_eq!(
        route(&["/a", "nope"]).validate().unwrap_err().field,
        "paths.1"
    );
}

#[test]
fn route_caches_are_checked() {
    let cached = |ttl_s: u64, vary: &[&str]| {
        let mut r = route(&["/"]);
        r.cache = Some(CacheSpec {
            ttl_s,
            vary: vary.iter().map(|v| v.to_string()).collect(),
        });
        r.validate().map_err(|e| e.field)
    };
    assert_eq!(cached(60, &["accept", "x-tenant_id"]), Ok(()));
    assert_eq!(cached(MAX_CACHE_TTL_S, &[]), Ok(()));
    assert_eq!(cached(0, &[]), Err("cache.ttl_s".into()));
    assert_eq!(cached(MAX_CACHE_TTL_S + 1, &[]), Err("cache.ttl_s".into()));
    assert_eq!(
        cached(60, &["accept", "Accept"]),
        Err("cache.vary.1".into())
    );
    assert_eq!(cached(60, &["a b"]), Err("cache.vary.0".into()));
    assert_eq!(
        cached(60, &["accept", "accept"]),
        Err("cache.vary.1".into())
    );
}

#[test]
fn built_features_validate() {
    let mut r = route(&["/"]);
    r.websocket = true;
    assert!(r.validate().is_ok());
}

#[test]
fn names_are_plain() {
    assert!(validate_name("users-v2.1").is_ok());
    assert!(validate_name("").is_err());
    assert!(validate_name("a/b").is_err());
}

fn service(balancer: Balancer) -> Service {
    Service {
        balancer,
        ..Service::new("s", ["http://127.0.0.1:9000"])
    }
}

fn check() -> HealthCheck {
    HealthCheck {
        path: "/health".into(),
        interval_ms: 2000,
        timeout_ms: 500,
        healthy_threshold: 2,
        unhealthy_threshold: 3,
    }
}

#[test]
fn every_balancer_health_check_and_passive_ejection_validate() {
    for b in [
        Balancer::RoundRobin,
        Balancer::Weighted,
        Balancer::LeastConn,
        Balancer::P2cEwma,
        Balancer::ConsistentHash,
    ] {
        let mut s = service(b);
        s.health_check = Some(check());
        s.passive = Some(Passive {
            max_failures: 5,
            eject_ms: 30_000,
        });
        assert_eq!(s.validate(), Ok(()), "{b:?}");
    }
    let mut s = service(Balancer::ConsistentHash);
    for h in ["ip", "consumer", "header:x-user-id", "header:session_2"] {
        s.hash_on = Some(h.into());
        assert_eq!(s.validate(), Ok(()), "{h}");
    }
}

#[test]
fn hash_on_is_for_consistent_hash_and_names_ip_consumer_or_a_header() {
    let mut s = service(Balancer::RoundRobin);
    s.hash_on = Some("ip".into());
    assert_eq!(s.validate().unwrap_err().field, "hash_on");
    let mut s = service(Balancer::ConsistentHash);
    for bad in [
        "",
        "cookie",
        "header:",
        "header:X-User",
        "header:a b",
        "header:a:b",
        "IP",
    ] {
        s.hash_on = Some(bad.into());
        assert_eq!(s.validate().unwrap_err().field, "hash_on", "{bad:?}");
    }
}

#[test]
fn health_check_values_are_checked() {
    type Spoil = fn(&mut HealthCheck);
    let cases: [(Spoil, &str); 8] = [
        (|c| c.path = "health".into(), "health_check.path"),
        (|c| c.path = "/a b".into(), "health_check.path"),
        (|c| c.path = "/a\r\nX: y".into(), "health_check.path"),
        (|c| c.interval_ms = 0, "health_check.interval_ms"),
        (|c| c.timeout_ms = 0, "health_check.timeout_ms"),
        (|c| c.timeout_ms = c.interval_ms, "health_check.timeout_ms"),
        (
            |c| c.healthy_threshold = 0,
            "health_check.healthy_threshold",
        ),
        (
            |c| c.unhealthy_threshold = 0,
            "health_check.unhealthy_threshold",
        ),
    ];
    for (spoil, field) in cases {
        let mut c = check();
        spoil(&mut c);
        let mut s = service(Balancer::RoundRobin);
        s.health_check = Some(c);
        assert_eq!(s.validate().unwrap_err().field, field);
    }
    let mut s = service(Balancer::RoundRobin);
    s.health_check = Some(HealthCheck {
        path: "/h?deep=1".into(),
        interval_ms: 2,
        timeout_ms: 1,
        healthy_threshold: 1,
        unhealthy_threshold: 1,
    });
    assert_eq!(s.validate(), Ok(()));
}

#[test]
fn passive_values_are_checked() {
    let mut s = service(Balancer::RoundRobin);
    s.passive = Some(Passive {
        max_failures: 0,
        eject_ms: 1,
    });
    assert_eq!(s.validate().unwrap_err().field, "passive.max_failures");
    s.passive = Some(Passive {
        max_failures: 1,
        eject_ms: 0,
    });
    assert_eq!(s.validate().unwrap_err().field, "passive.eject_ms");
    s.passive = Some(Passive {
        max_failures: 1,
        eject_ms: 1,
    });
    assert_eq!(s.validate(), Ok(()));
}
