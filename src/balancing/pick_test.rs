use std::sync::Arc;
use std::time::Duration;

use raftgate_cluster::spec::{Balancer, Passive, Service, Target, Timeouts};

use super::*;
use crate::balancing::ring::stable_hash;

fn service(balancer: Balancer, weights: &[u32]) -> Arc<Service> {
    Arc::new(Service {
        name: "s".into(),
        version: 0,
        targets: weights
            .iter()
            .enumerate()
            .map(|(i, w)| Target {
                url: format!("http://127.0.0.1:{}", 9000 + i),
                weight: *w,
            })
            .collect(),
        balancer,
        hash_on: None,
        health_check: None,
        passive: Some(Passive {
            max_failures: 3,
            eject_ms: 1000,
        }),
        timeouts: Timeouts::default(),
        retries: 0,
        ca_file: None,
        ca_pem: None,
    })
}

fn runtime(balancer: Balancer, weights: &[u32]) -> Arc<ServiceRuntime> {
    Arc::new(ServiceRuntime::new(&service(balancer, weights)).unwrap())
}

/// A fixed instant (µs): ejection deadlines are compared against it, never against a clock.
const NOW: u64 = 1_000_000_000;

fn pick(rt: &ServiceRuntime) -> usize {
    rt.pick(&[], NOW, || 0).expect("an eligible target")
}

fn counts(rt: &ServiceRuntime, picks: usize) -> Vec<usize> {
    let mut c = vec![0; rt.targets().len()];
    for _ in 0..picks {
        c[pick(rt)] += 1;
    }
    c
}

fn key(k: usize) -> u64 {
    stable_hash(&[format!("client-{k}").as_bytes()])
}

#[test]
fn round_robin_cycles_evenly() {
    let rt = runtime(Balancer::RoundRobin, &[5, 1, 1]);
    assert_eq!(counts(&rt, 3000), vec![1000, 1000, 1000]);
}

#[test]
fn weighted_follows_weights_within_5_percent_over_10k_picks() {
    let weights = [5u32, 3, 1, 1];
    let rt = runtime(Balancer::Weighted, &weights);
    let c = counts(&rt, 10_000);
    for (i, w) in weights.iter().enumerate() {
        let expected = 10_000.0 * f64::from(*w) / 10.0;
        let got = c[i] as f64;
        assert!(
            (got - expected).abs() <= expected * 0.05,
            "target {i}: {got} vs {expected}"
        );
    }
}

#[test]
fn weighted_interleaves_rather_than_bursting() {
    let rt = runtime(Balancer::Weighted, &[2, 1]);
    let seq: Vec<usize> = (0..6).map(|_| pick(&rt)).collect();
    assert_eq!(seq, vec![0, 1, 0, 0, 1, 0]);
}

#[test]
fn huge_weights_are_scaled_not_exploded() {
    let rt = runtime(Balancer::Weighted, &[1_000_000, 1_000_000, 2_000_000]);
    assert!(rt.schedule.len() as u64 <= MAX_SCHEDULE + 3);
    let c = counts(&rt, 4000);
    assert!((c[2] as f64 / 2000.0 - 1.0).abs() < 0.05);
}

#[test]
fn an_unhealthy_target_is_skipped_and_the_others_keep_their_proportions() {
    let rt = runtime(Balancer::RoundRobin, &[1, 1, 1]);
    rt.set_active_up(1, false);
    assert_eq!(counts(&rt, 3000), vec![1500, 0, 1500]);

    let rt = runtime(Balancer::Weighted, &[3, 1, 1]);
    for _ in 0..3 {
        rt.record_failure(0, NOW / 1000);
    }
    let c = counts(&rt, 2000);
    assert_eq!(c[0], 0);
    assert!((c[1] as i64 - c[2] as i64).abs() <= 2, "{c:?}");
}

#[test]
fn least_conn_prefers_the_idle_target_and_rotates_ties() {
    let rt = runtime(Balancer::LeastConn, &[1, 1, 1]);
    let busy = [rt.begin(0), rt.begin(0), rt.begin(1)];
    for _ in 0..20 {
        assert_eq!(pick(&rt), 2);
    }
    let on_two = rt.begin(2);
    // 0: 2 in flight, 1: 1, 2: 1 → ties between 1 and 2 alternate.
    let c = counts(&rt, 100);
    assert_eq!(c, vec![0, 50, 50]);
    drop(busy);
    drop(on_two);
    assert_eq!(rt.targets().iter().map(|t| t.inflight()).sum::<u32>(), 0);
    assert_eq!(counts(&rt, 300), vec![100, 100, 100]);
}

#[test]
fn p2c_prefers_the_low_latency_target() {
    let rt = runtime(Balancer::P2cEwma, &[1, 1, 1]);
    rt.record_success(0, Duration::from_millis(50), NOW);
    rt.record_success(1, Duration::from_millis(1), NOW);
    rt.record_success(2, Duration::from_millis(2), NOW);
    let c = counts(&rt, 3000);
    // The slow target loses every pair it is drawn into.
    assert_eq!(c[0], 0, "{c:?}");
    assert!(c[1] > c[2], "{c:?}");

    // Load counts too: the fast targets with enough requests queued cost more than the slow
    // one idle (1 ms × 60 > 50 ms × 1).
    let held: Vec<_> = (0..60).flat_map(|_| [rt.begin(1), rt.begin(2)]).collect();
    let slow = counts(&rt, 300)[0];
    assert!(
        (160..240).contains(&slow),
        "drawn in 2 pairs of 3, target 0 wins ~200: {slow}"
    );
    drop(held);
}

#[test]
fn p2c_latency_estimates_rise_at_once_and_decay_toward_the_observed() {
    let rt = runtime(Balancer::P2cEwma, &[1, 1]);
    let t = rt.target(0);
    rt.record_success(0, Duration::from_millis(10), NOW);
    assert_eq!(t.latency_estimate_us(NOW), 10_000.0);
    rt.record_success(0, Duration::from_millis(40), NOW + 1000);
    assert!((t.latency_estimate_us(NOW + 1000) - 40_000.0).abs() < 1.0);
    // Fast samples over 30 s pull it down toward 1 ms.
    for s in 1..=300 {
        rt.record_success(0, Duration::from_millis(1), NOW + s * 100_000);
    }
    let e = t.latency_estimate_us(NOW + 300 * 100_000);
    assert!(e > 1000.0 && e < 4000.0, "{e}");
    // Without samples the estimate decays, so a target once slow is tried again.
    assert!(t.latency_estimate_us(NOW + 300 * 100_000 + 60_000_000) < 10.0);
}

#[test]
fn p2c_does_not_flood_a_target_without_a_latency_sample() {
    let rt = runtime(Balancer::P2cEwma, &[1, 1]);
    rt.record_success(0, Duration::from_millis(20), NOW);
    let first = rt.begin(1);
    // Target 1 has no sample and a request in flight: the sampled one wins.
    assert_eq!(counts(&rt, 50), vec![50, 0]);
    drop(first);
    assert_eq!(
        counts(&rt, 50),
        vec![0, 50],
        "idle and unsampled costs nothing"
    );
}

#[test]
fn consistent_hash_maps_a_key_to_the_same_target_on_every_node() {
    let (a, b) = (
        runtime(Balancer::ConsistentHash, &[1, 1, 1, 1]),
        runtime(Balancer::ConsistentHash, &[1, 1, 1, 1]),
    );
    let mut per_target = [0usize; 4];
    for k in 0..10_000 {
        let on_a = a.pick(&[], NOW, || key(k)).unwrap();
        assert_eq!(on_a, a.pick(&[], NOW, || key(k)).unwrap(), "key {k}");
        assert_eq!(on_a, b.pick(&[], NOW, || key(k)).unwrap(), "key {k}");
        per_target[on_a] += 1;
    }
    for n in per_target {
        assert!((1500..3500).contains(&n), "{per_target:?}");
    }
}

#[test]
fn consistent_hash_moves_about_one_nth_of_keys_when_a_target_is_added() {
    for n in [2usize, 3, 4, 5, 8] {
        let before = runtime(Balancer::ConsistentHash, &vec![1; n]);
        let after = runtime(Balancer::ConsistentHash, &vec![1; n + 1]);
        let mut moved = 0;
        for k in 0..10_000 {
            let (x, y) = (
                before.pick(&[], NOW, || key(k)).unwrap(),
                after.pick(&[], NOW, || key(k)).unwrap(),
            );
            if x != y {
                assert_eq!(y, n, "a key only ever moves to the new target");
                moved += 1;
            }
        }
        let share = moved as f64 / 10_000.0;
        let bound = 1.0 / (n as f64 + 1.0) + 0.05;
        assert!(share <= bound, "N={n}: moved {share:.3} > {bound:.3}");
        assert!(share > 0.0, "N={n}: the new target got no key");
    }
}

#[test]
fn consistent_hash_walks_past_an_ejected_target_and_only_its_keys_move() {
    let rt = runtime(Balancer::ConsistentHash, &[1, 1, 1]);
    let owners: Vec<usize> = (0..3000)
        .map(|k| rt.pick(&[], NOW, || key(k)).unwrap())
        .collect();
    for _ in 0..3 {
        rt.record_failure(1, NOW / 1000);
    }
    for (k, owner) in owners.iter().enumerate() {
        let now = rt.pick(&[], NOW, || key(k)).unwrap();
        if *owner == 1 {
            assert_ne!(now, 1);
        } else {
            assert_eq!(now, *owner, "key {k} moved though its target is healthy");
        }
    }
}

#[test]
fn a_retry_avoids_the_failed_target_unless_it_is_the_only_one_left() {
    for balancer in [
        Balancer::RoundRobin,
        Balancer::Weighted,
        Balancer::LeastConn,
        Balancer::P2cEwma,
        Balancer::ConsistentHash,
    ] {
        let rt = runtime(balancer, &[1, 1, 1]);
        for k in 0..200 {
            let first = rt.pick(&[], NOW, || key(k)).unwrap();
            let second = rt.pick(&[first], NOW, || key(k)).unwrap();
            assert_ne!(first, second, "{balancer:?}");
            let third = rt.pick(&[first, second], NOW, || key(k)).unwrap();
            assert!(third != first && third != second, "{balancer:?}");
        }
        rt.set_active_up(0, false);
        rt.set_active_up(1, false);
        assert_eq!(rt.pick(&[2], NOW, || 7), Some(2), "{balancer:?}");
        rt.set_active_up(2, false);
        assert_eq!(rt.pick(&[], NOW, || 7), None, "{balancer:?}");
    }
}

#[test]
fn passive_ejection_lasts_eject_ms_and_a_failure_after_it_ejects_again() {
    let rt = runtime(Balancer::RoundRobin, &[1, 1]);
    let ms = NOW / 1000;
    let t = rt.target(0);
    assert!(!rt.record_failure(0, ms));
    rt.record_success(0, Duration::from_millis(1), NOW);
    assert!(!rt.record_failure(0, ms));
    assert!(!rt.record_failure(0, ms));
    assert!(
        t.is_eligible(ms),
        "a success reset the streak: 2 in a row so far"
    );
    assert!(rt.record_failure(0, ms), "the third in a row ejects");
    assert!(!t.is_eligible(ms + 999));
    assert!(t.is_eligible(ms + 1000), "eligible again after eject_ms");
    assert!(
        rt.record_failure(0, ms + 1000),
        "first failure back ejects again"
    );
    assert!(!t.is_eligible(ms + 1999));
    rt.record_success(0, Duration::from_millis(1), (ms + 2000) * 1000);
    assert!(
        !rt.record_failure(0, ms + 2000),
        "a success starts a new streak"
    );
    assert_eq!((t.failures_total(), t.ejections_total()), (6, 2));
}

#[test]
fn without_passive_checking_failures_never_eject() {
    let mut s = (*service(Balancer::RoundRobin, &[1, 1])).clone();
    s.passive = None;
    let rt = ServiceRuntime::new(&Arc::new(s)).unwrap();
    for _ in 0..100 {
        assert!(!rt.record_failure(0, NOW / 1000));
    }
    assert!(rt.target(0).is_eligible(NOW / 1000));
}

#[test]
fn a_rebuilt_runtime_keeps_the_state_of_targets_whose_url_is_unchanged() {
    let mut spec = (*service(Balancer::RoundRobin, &[1, 1])).clone();
    spec.health_check = Some(raftgate_cluster::spec::HealthCheck {
        path: "/h".into(),
        interval_ms: 1000,
        timeout_ms: 100,
        healthy_threshold: 1,
        unhealthy_threshold: 1,
    });
    let old = ServiceRuntime::new(&Arc::new(spec.clone())).unwrap();
    for _ in 0..3 {
        old.record_failure(0, NOW / 1000);
    }
    old.set_active_up(1, false);

    // Target 1 keeps its URL, target 0 is replaced, a third is added.
    spec.targets[0].url = "http://127.0.0.1:8999".into();
    spec.targets.push(Target {
        url: "http://127.0.0.1:9000".into(),
        weight: 1,
    });
    let new = ServiceRuntime::new_from(&Arc::new(spec.clone()), &old).unwrap();
    assert!(
        new.target(0).is_eligible(NOW / 1000),
        "a new URL starts healthy"
    );
    assert!(!new.target(1).active_up(), "same URL: still down");
    assert!(
        !new.target(2).is_eligible(NOW / 1000),
        "same URL as old target 0: still ejected"
    );

    // Dropping the checks drops their verdicts: nothing would ever bring the targets back.
    spec.health_check = None;
    spec.passive = None;
    let bare = ServiceRuntime::new_from(&Arc::new(spec.clone()), &new).unwrap();
    assert!(bare.targets().iter().all(|t| t.is_eligible(NOW / 1000)));
    assert!(!bare.fits(&new.spec) && new.fits(&new.spec));
}
