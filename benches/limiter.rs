//! The per-request limiter decisions: a rate-limit token bucket (`ratelimit`) and a quota
//! lease spend (`actors::limiter`), admitted and refused.
//!
//! `cargo bench --bench limiter -- --warm-up-time 1 --measurement-time 3`
//!
//! The admitting limits are far larger than any run can spend, so every iteration admits.

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use raftgate::actors::limiter::{unix_now, Leases};
use raftgate::ratelimit::bucket::{Bucket, Limit};
use raftgate::ratelimit::{RateLimits, Subject};
use raftgate_cluster::quota::{LeaseRequest, Quota, QuotaBy, QuotaKey, QuotaPer};
use raftgate_cluster::spec::{RateLimit, RateLimitBy, RateLimitPer, Route, Service};
use raftgate_cluster::{ClusterState, Command, Precondition};

/// Live nodes: a node's share is a third of each limit.
const LIVE: u64 = 3;

/// `Bucket::take` alone: the integer arithmetic, no clock, no map.
fn bucket(c: &mut Criterion) {
    let mut group = c.benchmark_group("bucket_take");
    let plenty = Limit {
        requests: 1_000_000_000,
        period_us: 1_000_000,
    };
    let mut b = Bucket::full(plenty, LIVE, 0);
    let mut now_us = 0;
    group.bench_function("admit", |bench| {
        bench.iter(|| {
            now_us += 1;
            b.take(black_box(plenty), LIVE, now_us).admitted
        })
    });
    assert!(b.take(plenty, LIVE, now_us + 1).admitted);
    let one = Limit {
        requests: 1,
        period_us: 3_600_000_000,
    };
    let mut b = Bucket::full(one, LIVE, 0);
    assert!(b.take(one, LIVE, 0).admitted);
    group.bench_function("refuse", |bench| {
        bench.iter(|| b.take(black_box(one), LIVE, 1).admitted)
    });
    assert!(!b.take(one, LIVE, 1).admitted);
    group.finish();
}

fn limited_route(requests: u64, per: RateLimitPer, by: RateLimitBy) -> (Route, RateLimit) {
    let spec = RateLimit {
        requests,
        per,
        by: Some(by),
    };
    let mut route = Route::new(format!("r-{requests}-{by:?}"), "svc", &["/"]);
    route.version = 1;
    route.rate_limit = Some(spec.clone());
    (route, spec)
}

/// `RateLimits::check`, what the `rate_limit` phase calls: the route's buckets from the
/// published index, the subject's shard locked, its bucket taken from with the clock read.
fn check(c: &mut Criterion) {
    let limits = RateLimits::new(LIVE);
    let mut group = c.benchmark_group("rate_limit_check");
    let alice: Subject = Subject::Consumer("alice".into());
    let ip = Subject::Ip(IpAddr::from([203, 0, 113, 7]));
    let (by_consumer, spec_c) =
        limited_route(1_000_000_000, RateLimitPer::Second, RateLimitBy::Consumer);
    let (by_ip, spec_i) = limited_route(1_000_000_000, RateLimitPer::Second, RateLimitBy::Ip);
    let (one, spec_one) = limited_route(1, RateLimitPer::Hour, RateLimitBy::Consumer);
    assert!(limits.check(&one, &spec_one, alice.clone()).admitted);
    for (name, route, spec, subject, admits) in [
        ("consumer/admit", &by_consumer, &spec_c, &alice, true),
        ("ip/admit", &by_ip, &spec_i, &ip, true),
        ("consumer/refuse", &one, &spec_one, &alice, false),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                limits
                    .check(route, spec, black_box(subject).clone())
                    .admitted
            })
        });
        assert_eq!(limits.check(route, spec, subject.clone()).admitted, admits);
    }
    group.finish();
}

/// A state whose route `r` has a quota of 2^48 a day by route, this window's whole quota
/// granted to node 1, through `ClusterState::apply` as the limiter's writes would.
fn granted_state(window: (u64, u64), key: &QuotaKey) -> ClusterState {
    let mut route = Route::new("r", "svc", &["/"]);
    route.quota = Some(Quota {
        requests: 1 << 48,
        per: QuotaPer::Day,
        by: Some(QuotaBy::Route),
    });
    let commands = [
        Command::PutService {
            service: Service::new("svc", ["http://127.0.0.1:9000"]),
            precondition: Precondition::None,
        },
        Command::PutRoute {
            route,
            precondition: Precondition::None,
        },
        Command::Leases {
            node: 1,
            now: unix_now(),
            requests: vec![LeaseRequest {
                key: key.clone(),
                window_start: window.0,
                spent: 0,
                want: 1 << 48,
                release: false,
            }],
        },
    ];
    let mut state = ClusterState::default();
    for (i, cmd) in commands.iter().enumerate() {
        state.apply(i as u64 + 1, cmd).expect("command applies");
    }
    state
}

/// `Lease::try_spend` (one atomic step), and what the `quota` phase does before it: make the
/// key, find the window, look the lease up.
fn quota(c: &mut Criterion) {
    let key = |subject: &str| QuotaKey {
        route: "r".into(),
        subject: subject.into(),
    };
    let window = QuotaPer::Day.window(unix_now());
    let leases = Leases::new(1);
    let granted = leases.lease(key(""), window, 1 << 48);
    let dry = leases.lease(key("nobody"), window, 1 << 48);
    // New leases count earlier grants as spent (none here), then take the state's grant.
    leases.baseline(&raftgate_cluster::ClusterState::default());
    leases.refresh(&granted_state(window, &key("")));
    assert_eq!(granted.available(), 1 << 48);
    assert_eq!(dry.available(), 0);

    let mut group = c.benchmark_group("quota");
    group.bench_function("try_spend/admit", |b| {
        b.iter(|| black_box(&granted).try_spend())
    });
    group.bench_function("try_spend/refuse", |b| {
        b.iter(|| black_box(&dry).try_spend())
    });
    group.bench_function("lease_and_spend/admit", |b| {
        b.iter(|| {
            let window = QuotaPer::Day.window(unix_now());
            let lease: Arc<_> = leases.lease(key(black_box("")), window, 1 << 48);
            lease.try_spend()
        })
    });
    group.finish();
    assert!(granted.try_spend() && !dry.try_spend());
}

criterion_group!(benches, bucket, check, quota);
criterion_main!(benches);
