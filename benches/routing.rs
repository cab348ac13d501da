//! Route matching and path normalisation, the two steps every request takes before anything
//! else (issue #8: "10k routes within 1.2× of 10 routes").
//!
//! `cargo bench --bench routing -- --warm-up-time 1 --measurement-time 3`
//!
//! Tables of 10 and 10,000 routes built the same way: a repeating mix of prefix, exact and
//! regex routes, a fifth of them bound to an exact host and some to a `*.` wildcard host. The
//! `mixed` tables hold 10% regex routes (half of them on any host), the `no_regex` tables the
//! same routes with the regexes made prefixes: the table indexes exact and prefix paths by
//! hash, and runs the regexes of each host it searches as one `RegexSet` pass.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use raftgate::routing::{normalize_path, RouteTable};
use raftgate_cluster::spec::{Route, Service};
use raftgate_cluster::OrdMap;

/// Route `i` of a table: prefix (6 in 10), exact (3 in 10) or regex (1 in 10, unless
/// `regexes` is off). A fifth of the prefix and exact routes and half the regexes have an
/// exact host, one in twenty routes a wildcard host; the rest match any host.
fn route(i: usize, regexes: bool) -> Route {
    let path = match i % 10 {
        0..=5 => format!("/svc{i}/v1"),
        6..=8 => format!("=/svc{i}/v1/items"),
        _ if regexes => format!("~^/svc{i}/users/[0-9]+$"),
        _ => format!("/svc{i}/users"),
    };
    let mut r = Route::new(format!("route-{i}"), "svc", &[path.as_str()]);
    r.version = 1;
    if i % 5 == 1 || i % 20 == 19 {
        r.hosts = vec![format!("tenant{}.example.com", i % 100)];
    } else if i % 20 == 3 {
        r.hosts = vec![format!("*.tenant{}.example.net", i % 100)];
    }
    r
}

/// The one service every route of the benches forwards to.
fn services() -> OrdMap<String, Arc<Service>> {
    let service = Service {
        version: 1,
        ..Service::new("svc", ["http://127.0.0.1:9000/base"])
    };
    OrdMap::unit("svc".to_string(), Arc::new(service))
}

fn table(n: usize, regexes: bool) -> RouteTable {
    let routes: Vec<Arc<Route>> = (0..n).map(|i| Arc::new(route(i, regexes))).collect();
    let table = RouteTable::compile(&routes, &services(), &Default::default(), 1);
    assert_eq!(table.len(), n);
    table
}

fn no_headers(_: &str) -> Option<&'static str> {
    None
}

fn route_match(c: &mut Criterion) {
    // Route 2 is a prefix route on any host (`/svc2/v1`) in every table; the host has routes
    // of its own in both tables (route 1 …), so its index is searched too. The miss has the
    // same shape under a prefix no route has, so it also tries every any-host regex.
    let host = "tenant1.example.com";
    let hit = "/svc2/v1/orders/42";
    let miss = "/nothing/v1/orders/42";
    let mut group = c.benchmark_group("route_match");
    for (label, regexes) in [("mixed", true), ("no_regex", false)] {
        for n in [10, 10_000] {
            let table = table(n, regexes);
            assert_eq!(
                table
                    .find(host, "GET", hit, no_headers)
                    .map(|m| m.route().name()),
                Some("route-2")
            );
            assert!(table.find(host, "GET", miss, no_headers).is_none());
            for (outcome, path) in [("hit", hit), ("miss", miss)] {
                group.bench_function(format!("{label}/{n}/{outcome}"), |b| {
                    b.iter(|| {
                        table
                            .find(black_box(host), "GET", black_box(path), no_headers)
                            .is_some()
                    })
                });
            }
        }
    }
    group.finish();
}

/// Compiling the table, which the router does on every config change: its cost grows with the
/// table, so this is the figure to watch rather than a ratio.
fn route_compile(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_compile");
    group.sample_size(10);
    for n in [10, 10_000] {
        let routes: Vec<Arc<Route>> = (0..n).map(|i| Arc::new(route(i, true))).collect();
        let services = services();
        group.bench_function(format!("mixed/{n}"), |b| {
            b.iter(|| RouteTable::compile(&routes, &services, &Default::default(), 1).len())
        });
    }
    group.finish();
}

fn normalize(c: &mut Criterion) {
    let clean = "/api/v1/users/12345/orders";
    let dirty = "//api/./v1//%75sers/%7Ealice/../12345/orders/%2e%2e/orders";
    assert_eq!(normalize_path(dirty).unwrap(), clean);
    let mut group = c.benchmark_group("normalize");
    group.bench_function("clean", |b| {
        b.iter(|| normalize_path(black_box(clean)).map(|p| p.len()))
    });
    group.bench_function("dirty", |b| {
        b.iter(|| normalize_path(black_box(dirty)).map(|p| p.len()))
    });
    group.finish();
}

criterion_group!(benches, route_match, route_compile, normalize);
criterion_main!(benches);
