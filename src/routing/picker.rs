//! Target selection for a service: `round_robin` and `weighted` (smooth weighted round robin,
//! nginx's algorithm, unrolled into a fixed schedule at compile time so a pick is one atomic add).

use std::sync::atomic::{AtomicUsize, Ordering};

use raftgate_cluster::spec::{Balancer, Service};

/// The longest schedule kept; larger weight sums are scaled down (proportions within 0.1%).
const MAX_SCHEDULE: u64 = 4096;

#[derive(Debug)]
pub struct Picker {
    /// Target indexes in the order they are served.
    schedule: Box<[u32]>,
    next: AtomicUsize,
}

impl Picker {
    pub fn new(service: &Service) -> Picker {
        let n = service.targets.len();
        let schedule: Vec<u32> = match service.balancer {
            Balancer::Weighted => smooth_weighted(
                &service
                    .targets
                    .iter()
                    .map(|t| t.weight as u64)
                    .collect::<Vec<_>>(),
            ),
            _ => (0..n as u32).collect(),
        };
        Picker {
            schedule: schedule.into_boxed_slice(),
            next: AtomicUsize::new(0),
        }
    }

    /// The next target index, or `None` for a service with no targets.
    pub fn pick(&self) -> Option<usize> {
        if self.schedule.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        Some(self.schedule[i % self.schedule.len()] as usize)
    }
}

fn smooth_weighted(weights: &[u64]) -> Vec<u32> {
    let total: u64 = weights.iter().sum();
    if total == 0 {
        return (0..weights.len() as u32).collect();
    }
    let scale = total.div_ceil(MAX_SCHEDULE).max(1);
    let weights: Vec<i64> = weights
        .iter()
        .map(|w| {
            if *w == 0 {
                0
            } else {
                (w / scale).max(1) as i64
            }
        })
        .collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..weights.len() {
            current[i] += weights[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgate_cluster::spec::{Target, Timeouts};

    fn service(balancer: Balancer, weights: &[u32]) -> Service {
        Service {
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
            passive: None,
            timeouts: Timeouts::default(),
            retries: 0,
        }
    }

    fn counts(p: &Picker, n: usize, picks: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for _ in 0..picks {
            c[p.pick().unwrap()] += 1;
        }
        c
    }

    #[test]
    fn round_robin_cycles_evenly() {
        let p = Picker::new(&service(Balancer::RoundRobin, &[5, 1, 1]));
        assert_eq!(counts(&p, 3, 3000), vec![1000, 1000, 1000]);
    }

    #[test]
    fn weighted_follows_weights_within_5_percent_over_10k_picks() {
        let weights = [5u32, 3, 1, 1];
        let p = Picker::new(&service(Balancer::Weighted, &weights));
        let c = counts(&p, 4, 10_000);
        for (i, w) in weights.iter().enumerate() {
            let expected = 10_000.0 * *w as f64 / 10.0;
            let got = c[i] as f64;
            assert!(
                (got - expected).abs() <= expected * 0.05,
                "target {i}: {got} vs {expected}"
            );
        }
    }

    #[test]
    fn weighted_interleaves_rather_than_bursting() {
        let p = Picker::new(&service(Balancer::Weighted, &[2, 1]));
        let seq: Vec<usize> = (0..6).map(|_| p.pick().unwrap()).collect();
        assert_eq!(seq, vec![0, 1, 0, 0, 1, 0]);
    }

    #[test]
    fn huge_weights_are_scaled_not_exploded() {
        let p = Picker::new(&service(
            Balancer::Weighted,
            &[1_000_000, 1_000_000, 2_000_000],
        ));
        assert!(p.schedule.len() as u64 <= MAX_SCHEDULE + 3);
        let c = counts(&p, 3, 4000);
        assert!((c[2] as f64 / 2000.0 - 1.0).abs() < 0.05);
    }
}
