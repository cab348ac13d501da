use raftgate_cluster::OrdMap;
use std::sync::Arc;

use raftgate_cluster::spec::{Route, Service};

use super::{MatchKind, RouteTable};

fn service(name: &str) -> Arc<Service> {
    Arc::new(Service {
        version: 1,
        ..Service::new(name, ["http://127.0.0.1:9000/base"])
    })
}

fn route(name: &str, paths: &[&str]) -> Route {
    Route {
        version: 1,
        ..Route::new(name, "svc", paths)
    }
}

fn hosts(mut r: Route, hosts: &[&str]) -> Route {
    r.hosts = hosts.iter().map(|h| h.to_string()).collect();
    r
}

fn methods(mut r: Route, methods: &[&str]) -> Route {
    r.methods = methods.iter().map(|m| m.to_string()).collect();
    r
}

fn priority(mut r: Route, p: i32) -> Route {
    r.priority = p;
    r
}

fn strip(mut r: Route) -> Route {
    r.strip_path = true;
    r
}

fn table(routes: Vec<Route>) -> RouteTable {
    let routes: Vec<Arc<Route>> = routes.into_iter().map(Arc::new).collect();
    let services = OrdMap::unit("svc".to_string(), service("svc"));
    RouteTable::compile(&routes, &services, &Default::default(), 7)
}

fn no_headers(_: &str) -> Option<&'static str> {
    None
}

/// The name of the route a request without headers picks.
fn pick<'t>(t: &'t RouteTable, host: &str, method: &str, path: &str) -> Option<&'t str> {
    t.find(host, method, path, no_headers)
        .map(|m| m.route().name())
}

#[test]
fn exact_beats_longest_prefix_beats_regex() {
    let t = table(vec![
        route("regex", &["~^/users/[0-9]+$"]),
        route("short", &["/users"]),
        route("long", &["/users/7"]),
        route("exact", &["=/users/7"]),
    ]);
    assert_eq!(pick(&t, "h", "GET", "/users/7"), Some("exact"));
    assert_eq!(pick(&t, "h", "GET", "/users/7/x"), Some("long"));
    assert_eq!(pick(&t, "h", "GET", "/users/8"), Some("short"));
    assert_eq!(pick(&t, "h", "GET", "/other"), None);

    let t = table(vec![
        route("regex", &["~^/users/[0-9]+$"]),
        route("root", &["/x"]),
    ]);
    assert_eq!(pick(&t, "h", "GET", "/users/8"), Some("regex"));
}

#[test]
fn priority_wins_over_kind_and_length() {
    let t = table(vec![
        route("exact", &["=/users/7"]),
        route("long", &["/users/7"]),
        priority(route("regex", &["~^/users/"]), 5),
        priority(route("short", &["/users"]), 3),
    ]);
    assert_eq!(pick(&t, "h", "GET", "/users/7"), Some("regex"));
    assert_eq!(pick(&t, "h", "GET", "/users"), Some("short"));

    // Priority also wins across host groups.
    let t = table(vec![
        hosts(route("on-host", &["=/a"]), &["api.example.com"]),
        priority(route("anywhere", &["~^/a$"]), 1),
    ]);
    assert_eq!(pick(&t, "api.example.com", "GET", "/a"), Some("anywhere"));
}

#[test]
fn ties_break_by_name() {
    let t = table(vec![
        route("b", &["/a"]),
        route("a", &["/a"]),
        route("c", &["/a"]),
    ]);
    assert_eq!(pick(&t, "h", "GET", "/a/x"), Some("a"));
    let t = table(vec![route("b", &["~^/a"]), route("a", &["~/a"])]);
    assert_eq!(pick(&t, "h", "GET", "/a"), Some("a"));
    let t = table(vec![
        hosts(route("b", &["/a"]), &["h"]),
        hosts(route("a", &["/a"]), &["*.h"]),
        route("c", &["/a"]),
    ]);
    assert_eq!(pick(&t, "x.h", "GET", "/a"), Some("a"));
    assert_eq!(pick(&t, "h", "GET", "/a"), Some("b"));
}

#[test]
fn prefixes_match_at_segment_boundaries() {
    let t = table(vec![route("users", &["/users"])]);
    for p in ["/users", "/users/", "/users/7", "/users/7/x"] {
        assert_eq!(pick(&t, "h", "GET", p), Some("users"), "{p}");
    }
    for p in ["/usersfoo", "/user", "/", "/x/users"] {
        assert_eq!(pick(&t, "h", "GET", p), None, "{p}");
    }

    let t = table(vec![route("slash", &["/users/"])]);
    assert_eq!(pick(&t, "h", "GET", "/users/x"), Some("slash"));
    assert_eq!(pick(&t, "h", "GET", "/users/"), Some("slash"));
    assert_eq!(pick(&t, "h", "GET", "/users"), None);

    // The longer pattern wins when both match.
    let t = table(vec![route("a", &["/users"]), route("b", &["/users/"])]);
    assert_eq!(pick(&t, "h", "GET", "/users/x"), Some("b"));
    assert_eq!(pick(&t, "h", "GET", "/users"), Some("a"));
}

#[test]
fn root_prefix_and_empty_paths_match_everything() {
    let t = table(vec![route("root", &["/"])]);
    for p in ["/", "/a", "/a/b/"] {
        assert_eq!(pick(&t, "h", "GET", p), Some("root"), "{p}");
    }
    let t = table(vec![route("empty", &[]), route("deeper", &["/a"])]);
    assert_eq!(pick(&t, "h", "GET", "/"), Some("empty"));
    assert_eq!(pick(&t, "h", "GET", "/b/c"), Some("empty"));
    assert_eq!(pick(&t, "h", "GET", "/a/c"), Some("deeper"));
}

#[test]
fn wildcard_hosts_match_subdomains_only() {
    let t = table(vec![
        hosts(route("wild", &["/"]), &["*.example.com"]),
        hosts(route("exact", &["/"]), &["api.example.com"]),
    ]);
    assert_eq!(pick(&t, "a.example.com", "GET", "/"), Some("wild"));
    assert_eq!(pick(&t, "a.b.example.com", "GET", "/"), Some("wild"));
    // Equal keys: the name decides, "exact" < "wild".
    assert_eq!(pick(&t, "api.example.com", "GET", "/"), Some("exact"));
    assert_eq!(pick(&t, "example.com", "GET", "/"), None);
    assert_eq!(pick(&t, "badexample.com", "GET", "/"), None);
    assert_eq!(pick(&t, "other.org", "GET", "/"), None);
}

#[test]
fn host_routes_and_hostless_routes_compete_by_key() {
    let t = table(vec![
        route("anyhost", &["/api"]),
        hosts(route("onhost", &["/"]), &["api.example.com"]),
    ]);
    assert_eq!(
        pick(&t, "api.example.com", "GET", "/api/x"),
        Some("anyhost")
    );
    assert_eq!(pick(&t, "api.example.com", "GET", "/x"), Some("onhost"));
    assert_eq!(pick(&t, "other", "GET", "/x"), None);
}

#[test]
fn methods_filter_and_the_next_candidate_is_tried() {
    let t = table(vec![
        methods(route("a-get", &["/a"]), &["GET"]),
        methods(route("b-post", &["/a"]), &["POST", "PUT"]),
    ]);
    assert_eq!(pick(&t, "h", "GET", "/a"), Some("a-get"));
    assert_eq!(pick(&t, "h", "POST", "/a/x"), Some("b-post"));
    assert_eq!(pick(&t, "h", "PUT", "/a"), Some("b-post"));
    assert_eq!(pick(&t, "h", "DELETE", "/a"), None);
    assert_eq!(pick(&t, "h", "PURGE", "/a"), None);

    // A filtered-out best candidate falls back to a worse kind, too.
    let t = table(vec![
        methods(route("exact", &["=/a"]), &["POST"]),
        methods(route("regex", &["~^/a$"]), &["GET"]),
        priority(methods(route("high", &["~^/a$"]), &["PATCH"]), 9),
        route("zany", &["~^/"]),
    ]);
    assert_eq!(pick(&t, "h", "POST", "/a"), Some("exact"));
    assert_eq!(pick(&t, "h", "GET", "/a"), Some("regex"));
    assert_eq!(pick(&t, "h", "PATCH", "/a"), Some("high"));
    assert_eq!(pick(&t, "h", "PURGE", "/a"), Some("zany"));
}

#[test]
fn headers_must_match_exactly() {
    // Header filters add no specificity of their own: without the priority, "v1" would win on
    // its name even when the header matches.
    let mut v2 = priority(route("v2", &["/a"]), 1);
    v2.headers.insert("x-api-version".into(), "2".into());
    let t = table(vec![v2, route("v1", &["/a"])]);
    let version = |v: &'static str| move |n: &str| (n == "x-api-version").then_some(v);
    let found = |headers| t.find("h", "GET", "/a", headers).map(|m| m.route().name());
    assert_eq!(found(version("2")), Some("v2"));
    assert_eq!(found(version("20")), Some("v1"));
    assert_eq!(
        t.find("h", "GET", "/a", no_headers).unwrap().route().name(),
        "v1"
    );
}

#[test]
fn strip_path_removes_the_matched_prefix() {
    let t = table(vec![
        strip(route("api", &["/api"])),
        strip(route("slash", &["/s/"])),
        strip(route("exact", &["=/e/x"])),
        priority(strip(route("regex", &["~^/r/"])), 1),
        strip(route("root", &["/"])),
        route("kept", &["/k"]),
    ]);
    let fwd = |path: &str| {
        let m = t.find("h", "GET", path, no_headers).unwrap();
        m.forward_path(path).into_owned()
    };
    assert_eq!(fwd("/api/x"), "/x");
    assert_eq!(fwd("/api"), "/");
    assert_eq!(fwd("/api/"), "/");
    assert_eq!(fwd("/s/x/y"), "/x/y");
    assert_eq!(fwd("/s/"), "/");
    assert_eq!(fwd("/e/x"), "/");
    assert_eq!(fwd("/r/1"), "/r/1");
    assert_eq!(fwd("/other"), "/other");
    assert_eq!(fwd("/k/x"), "/k/x");
    let m = t.find("h", "GET", "/api/x", no_headers).unwrap();
    assert_eq!((m.kind(), m.strip_len()), (MatchKind::Prefix, 4));
}

#[test]
fn patterns_are_normalised_and_broken_routes_skipped() {
    let mut no_service = route("orphan", &["/o"]);
    no_service.service = "missing".into();
    let t = table(vec![
        route("dots", &["/a/./b//c"]),
        route("bad-regex", &["~^/(x"]),
        route("escapes", &["/x/../y"]),
        route("above", &["/.."]),
        no_service,
    ]);
    assert_eq!(pick(&t, "h", "GET", "/a/b/c/d"), Some("dots"));
    assert_eq!(pick(&t, "h", "GET", "/x"), None);
    assert_eq!(pick(&t, "h", "GET", "/o"), None);
    assert_eq!(t.len(), 2);
    assert_eq!(pick(&t, "h", "GET", "/y"), Some("escapes"));
    assert_eq!(t.revision(), 7);

    let r = t.get("dots").unwrap();
    assert_eq!(r.targets()[0].authority, "127.0.0.1:9000");
    assert_eq!(r.service().name, "svc");
}

#[test]
fn ten_thousand_routes_find_the_right_one() {
    let mut routes = Vec::new();
    for i in 0..10_000 {
        let r = match i % 4 {
            0 => route(&format!("p{i:05}"), &[&format!("/svc{i}/api")]),
            1 => route(&format!("e{i:05}"), &[&format!("=/svc{i}/exact")]),
            2 => hosts(
                route(&format!("h{i:05}"), &["/"]),
                &[&format!("h{i}.example.com")],
            ),
            _ => hosts(
                route(&format!("w{i:05}"), &["/w"]),
                &[&format!("*.t{i}.example.com")],
            ),
        };
        routes.push(r);
    }
    routes.push(route("regex", &["~^/re/[0-9]+$"]));
    let t = table(routes);
    assert_eq!(t.len(), 10_001);
    assert_eq!(pick(&t, "x", "GET", "/svc4000/api/y"), Some("p04000"));
    assert_eq!(pick(&t, "x", "GET", "/svc4001/exact"), Some("e04001"));
    assert_eq!(pick(&t, "x", "GET", "/svc4001/exact/y"), None);
    assert_eq!(pick(&t, "h4002.example.com", "GET", "/any"), Some("h04002"));
    assert_eq!(
        pick(&t, "a.t9999.example.com", "GET", "/w/z"),
        Some("w09999")
    );
    assert_eq!(pick(&t, "t9999.example.com", "GET", "/w/z"), None);
    assert_eq!(
        pick(&t, "h4002.example.com", "GET", "/svc4000/api"),
        Some("p04000")
    );
    assert_eq!(pick(&t, "x", "GET", "/re/12"), Some("regex"));
    assert_eq!(pick(&t, "x", "GET", "/svc9999/api"), None);
}
