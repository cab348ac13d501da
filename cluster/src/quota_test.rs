use std::sync::Arc;

use imbl::OrdMap;

use super::*;
use crate::spec::Route;

fn routes(limit: u64) -> OrdMap<String, Arc<Route>> {
    let mut r = Route::new("r", "svc", &["/"]);
    r.auth = AuthMode::ApiKey;
    r.quota = Some(Quota {
        requests: limit,
        per: QuotaPer::Day,
        by: None,
    });
    OrdMap::unit("r".to_string(), Arc::new(r))
}

fn key() -> QuotaKey {
    QuotaKey {
        route: "r".into(),
        subject: "alice".into(),
    }
}

fn req(window_start: u64, spent: u64, want: u64) -> LeaseRequest {
    LeaseRequest {
        key: key(),
        window_start,
        spent,
        want,
        release: false,
    }
}

#[test]
fn windows_are_calendar_aligned() {
    // 2026-11-27T10:23:17Z
    let now = 1_795_774_997;
    assert_eq!(QuotaPer::Minute.window(now), (1_795_774_980, 1_795_775_040));
    assert_eq!(QuotaPer::Hour.window(now), (1_795_773_600, 1_795_777_200));
    assert_eq!(QuotaPer::Day.window(now), (1_795_737_600, 1_795_824_000));
    // November 2026 → December 2026.
    assert_eq!(QuotaPer::Month.window(now), (1_793_491_200, 1_796_083_200));
    // December → January of the next year; a leap February.
    let dec = QuotaPer::Month.window(1_796_083_200 + 5);
    assert_eq!(dec, (1_796_083_200, 1_798_761_600));
    let feb_2028 = QuotaPer::Month.window(1_832_976_000 + 100);
    assert_eq!(feb_2028.1 - feb_2028.0, 29 * 86_400);
}

#[test]
fn grants_never_exceed_the_limit_whoever_asks() {
    let routes = routes(100);
    let mut q = OrdMap::new();
    for node in 1..=3 {
        apply_leases(&mut q, &routes, node, &[req(0, 0, 40)]);
    }
    let u = &q[&key()];
    assert_eq!(
        (u.granted, u.granted_to(1), u.granted_to(2), u.granted_to(3)),
        (100, 40, 40, 20)
    );
    apply_leases(&mut q, &routes, 3, &[req(0, 20, 40)]);
    let u = &q[&key()];
    assert_eq!((u.granted, u.used, u.granted_to(3)), (100, 20, 20));
}

#[test]
fn reports_are_cumulative_so_a_retry_changes_nothing() {
    let routes = routes(100);
    let mut q = OrdMap::new();
    apply_leases(&mut q, &routes, 1, &[req(0, 0, 10)]);
    apply_leases(&mut q, &routes, 1, &[req(0, 7, 0)]);
    apply_leases(&mut q, &routes, 1, &[req(0, 7, 0)]);
    assert_eq!(q[&key()].used, 7);
    // A node cannot report more than it was granted.
    apply_leases(&mut q, &routes, 1, &[req(0, 50, 0)]);
    assert_eq!(q[&key()].used, 10);
    // An older report never lowers it.
    apply_leases(&mut q, &routes, 1, &[req(0, 3, 0)]);
    assert_eq!(q[&key()].used, 10);
}

#[test]
fn a_release_returns_the_unspent_rest_for_others() {
    let routes = routes(100);
    let mut q = OrdMap::new();
    apply_leases(&mut q, &routes, 1, &[req(0, 0, 60)]);
    let mut release = req(0, 25, 0);
    release.release = true;
    apply_leases(&mut q, &routes, 1, &[release]);
    let u = &q[&key()];
    assert_eq!((u.granted, u.used, u.granted_to(1)), (25, 25, 25));
    apply_leases(&mut q, &routes, 2, &[req(0, 0, 100)]);
    assert_eq!(q[&key()].granted_to(2), 75);
}

#[test]
fn a_new_window_starts_afresh_and_an_old_one_grants_nothing() {
    let routes = routes(100);
    let mut q = OrdMap::new();
    apply_leases(&mut q, &routes, 1, &[req(0, 0, 100)]);
    let day = 86_400;
    apply_leases(&mut q, &routes, 2, &[req(day, 0, 30)]);
    let u = &q[&key()];
    assert_eq!(
        (u.window_start, u.window_end, u.granted, u.granted_to(1)),
        (day, 2 * day, 30, 0)
    );
    // A node still in the old window (a lagging clock) gets nothing.
    apply_leases(&mut q, &routes, 1, &[req(0, 100, 50)]);
    assert_eq!(q[&key()].granted, 30);
    // Long-ended windows are forgotten.
    forget_ended(&mut q, 2 * day + KEEP_ENDED_S - 1);
    assert_eq!(q.len(), 1);
    forget_ended(&mut q, 2 * day + KEEP_ENDED_S);
    assert!(q.is_empty());
}

#[test]
fn keys_of_routes_without_a_quota_are_ignored() {
    let mut q = OrdMap::new();
    apply_leases(&mut q, &OrdMap::new(), 1, &[req(0, 0, 10)]);
    assert!(q.is_empty());
}

#[test]
fn validation_names_the_field() {
    let q = Quota {
        requests: 10,
        per: QuotaPer::Hour,
        by: Some(QuotaBy::Consumer),
    };
    assert_eq!(q.validate(AuthMode::None).unwrap_err().field, "quota.by");
    assert!(q.validate(AuthMode::Jwt).is_ok());
    assert_eq!(q.by(AuthMode::Jwt), QuotaBy::Consumer);
    let ip = Quota { by: None, ..q };
    assert_eq!(ip.by(AuthMode::None), QuotaBy::Ip);
    let zero = Quota { requests: 0, ..ip };
    assert_eq!(
        zero.validate(AuthMode::None).unwrap_err().field,
        "quota.requests"
    );
}
