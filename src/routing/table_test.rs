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

/// Enough regexes on one host group that they run as a `RegexSet`.
fn many_regexes() -> Vec<Route> {
    let mut routes: Vec<Route> = (0..super::REGEX_SET_MIN)
        .map(|i| route(&format!("filler{i}"), &[&format!("~^/filler{i}/[a-z]+$")]))
        .collect();
    routes.extend([
        route("b-any", &["~^/items/"]),
        route("a-digits", &["~^/items/[0-9]+$"]),
        priority(route("z-high", &["~/items/7$"]), 2),
        methods(priority(route("post-only", &["~^/items/"]), 5), &["POST"]),
    ]);
    routes
}

#[test]
fn overlapping_regexes_in_a_set_keep_priority_then_name() {
    let t = table(many_regexes());
    assert_eq!(pick(&t, "h", "GET", "/items/7"), Some("z-high"));
    assert_eq!(pick(&t, "h", "GET", "/items/8"), Some("a-digits"));
    assert_eq!(pick(&t, "h", "GET", "/items/x"), Some("b-any"));
    // The best match is filtered out by its method: the next match in order wins.
    assert_eq!(pick(&t, "h", "POST", "/items/8"), Some("post-only"));
    assert_eq!(pick(&t, "h", "GET", "/filler2/abc"), Some("filler2"));
    assert_eq!(pick(&t, "h", "GET", "/filler2/ab7"), None);
    assert_eq!(pick(&t, "h", "GET", "/nothing"), None);
}

#[test]
fn regexes_and_prefixes_on_one_host_compete_by_key() {
    let on = |r: Route| hosts(r, &["api.example.com"]);
    let mut routes: Vec<Route> = many_regexes().into_iter().map(on).collect();
    routes.push(on(route("items-prefix", &["/items"])));
    routes.push(on(priority(route("deep-prefix", &["/items/9/"]), 1)));
    let t = table(routes);
    let api = |path| pick(&t, "api.example.com", "GET", path);
    // Equal priority: a prefix beats a regex.
    assert_eq!(api("/items/8"), Some("items-prefix"));
    // Higher priority: the regex beats the prefix, and the prefix the lower regexes.
    assert_eq!(api("/items/7"), Some("z-high"));
    assert_eq!(api("/items/9/x"), Some("deep-prefix"));
    assert_eq!(api("/items/9"), Some("items-prefix"));
    assert_eq!(api("/filler1/abc"), Some("filler1"));
    assert_eq!(pick(&t, "other.example.com", "GET", "/items/7"), None);
}

#[test]
fn wildcard_host_regexes_in_a_set_compete_with_other_hosts() {
    let wild = |r: Route| hosts(r, &["*.example.com"]);
    let mut routes: Vec<Route> = many_regexes().into_iter().map(wild).collect();
    routes.push(hosts(
        route("exact-host", &["~^/items/[0-9]+$"]),
        &["a.example.com"],
    ));
    routes.push(priority(route("anywhere", &["~^/filler0/"]), 1));
    let t = table(routes);
    assert_eq!(
        pick(&t, "x.y.example.com", "GET", "/items/8"),
        Some("a-digits")
    );
    // Same priority and kind: the name decides across host groups.
    assert_eq!(
        pick(&t, "a.example.com", "GET", "/items/8"),
        Some("a-digits")
    );
    assert_eq!(pick(&t, "a.example.com", "GET", "/items/7"), Some("z-high"));
    assert_eq!(
        pick(&t, "a.example.com", "GET", "/filler0/x"),
        Some("anywhere")
    );
    assert_eq!(pick(&t, "example.com", "GET", "/items/8"), None);
    assert_eq!(
        pick(&t, "example.com", "GET", "/filler0/x"),
        Some("anywhere")
    );
}

#[test]
fn prefix_lookups_stop_where_no_pattern_goes_on() {
    let t = table(vec![
        route("deep", &["/a/b/c"]),
        route("deep-slash", &["/a/b/c/"]),
        route("a", &["/a"]),
        hosts(route("root", &["/"]), &["h"]),
    ]);
    // `/a/b` is only a node on the way to `/a/b/c`: it matches nothing of its own.
    assert_eq!(pick(&t, "x", "GET", "/a/b"), Some("a"));
    assert_eq!(pick(&t, "x", "GET", "/a/b/c"), Some("deep"));
    assert_eq!(pick(&t, "x", "GET", "/a/b/c/"), Some("deep-slash"));
    assert_eq!(pick(&t, "x", "GET", "/a/b/c/d/e"), Some("deep-slash"));
    assert_eq!(pick(&t, "x", "GET", "/a/b/cd"), Some("a"));
    assert_eq!(pick(&t, "x", "GET", "/b/a/b/c"), None);
    assert_eq!(pick(&t, "h", "GET", "/b/a/b/c"), Some("root"));
    let m = t.find("x", "GET", "/a/b/c/d", no_headers).unwrap();
    assert_eq!((m.kind(), m.strip_len()), (MatchKind::Prefix, 6));
}

/// The matching order of API.md §3.2 computed the slow way, route by route, to check the
/// table against: the best (priority, kind, prefix length, name) over every route whose host,
/// method and one path pattern match.
fn reference_pick<'r>(
    routes: &'r [Route],
    host: &str,
    method: &str,
    path: &str,
) -> Option<&'r str> {
    let host_ok = |r: &Route| {
        r.hosts.is_empty()
            || r.hosts.iter().any(|h| match h.strip_prefix("*.") {
                Some(suffix) => host.strip_suffix(suffix).is_some_and(|s| s.ends_with('.')),
                None => h == host,
            })
    };
    let pattern_key = |p: &str| match raftgate_cluster::spec::parse_path_pattern(p) {
        raftgate_cluster::spec::PathPattern::Exact(e) => {
            (e == path).then_some((MatchKind::Exact, 0))
        }
        raftgate_cluster::spec::PathPattern::Prefix(pre) => {
            let at_boundary = pre.ends_with('/')
                || path.len() == pre.len()
                || path.as_bytes().get(pre.len()) == Some(&b'/');
            (path.starts_with(pre) && at_boundary).then_some((MatchKind::Prefix, pre.len()))
        }
        raftgate_cluster::spec::PathPattern::Regex(re) => regex::Regex::new(re)
            .unwrap()
            .is_match(path)
            .then_some((MatchKind::Regex, 0)),
    };
    routes
        .iter()
        .filter(|r| host_ok(r) && (r.methods.is_empty() || r.methods.iter().any(|m| m == method)))
        .flat_map(|r| {
            r.paths
                .iter()
                .filter_map(move |p| pattern_key(p).map(|k| (r, k)))
        })
        .min_by_key(|(r, (kind, len))| {
            (
                std::cmp::Reverse(r.priority),
                *kind,
                std::cmp::Reverse(*len),
                r.name.clone(),
            )
        })
        .map(|(r, _)| r.name.as_str())
}

#[test]
fn the_table_agrees_with_the_slow_reference_on_a_crowded_mix() {
    let paths = [
        "/a", "/a/", "/a/b", "/a/1", "/a/1/", "/a/22/c", "/b/1", "/b/x/y", "/c",
    ];
    let host_sets: [&[&str]; 4] = [&[], &["h.example.com"], &["*.example.com"], &["x.org"]];
    let mut routes = Vec::new();
    for i in 0..60usize {
        let path = match i % 6 {
            0 => format!("/{}", &paths[i / 6 % paths.len()][1..]),
            1 => format!("={}", paths[(i * 7) % paths.len()]),
            2 => "~^/a/[0-9]+".to_string(),
            3 => format!("~^/{}/", ["a", "b", "c"][i % 3]),
            4 => "~[0-9]/?$".to_string(),
            _ => format!("/{}/", ["a", "b"][i % 2]),
        };
        let mut r = priority(
            route(&format!("r{:02}", (i * 37) % 60), &[&path]),
            (i % 3) as i32,
        );
        r.hosts = host_sets[i % 4].iter().map(|h| h.to_string()).collect();
        if i % 5 == 0 {
            r.methods = vec!["POST".into()];
        }
        routes.push(r);
    }
    let t = table(routes.clone());
    for host in ["h.example.com", "a.example.com", "x.org", "example.com"] {
        for method in ["GET", "POST"] {
            for path in paths.iter().chain(&["/", "/a/1/2", "/zz/9"]) {
                assert_eq!(
                    pick(&t, host, method, path),
                    reference_pick(&routes, host, method, path),
                    "{method} {host}{path}"
                );
            }
        }
    }
}
