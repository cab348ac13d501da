//! The five balancers: which eligible target serves the next attempt. Each pick reads the
//! service's atomics and nothing else: no lock, no allocation.

use std::sync::atomic::Ordering;

use raftgate_cluster::spec::Balancer;
use rand::Rng;

use super::runtime::ServiceRuntime;

/// The longest weighted schedule kept; larger weight sums are scaled down (proportions within
/// 0.1%).
pub const MAX_SCHEDULE: u64 = 4096;

impl ServiceRuntime {
    /// The target for the next attempt: an eligible one (not ejected, not failing its active
    /// check), preferably not in `tried` (the targets this request already failed on). `key`
    /// is called once, for `consistent_hash` only. `None` when no target is eligible.
    pub fn pick(&self, tried: &[usize], now_us: u64, key: impl FnOnce() -> u64) -> Option<usize> {
        let now_ms = now_us / 1000;
        let key = match self.ring {
            Some(_) => key(),
            None => 0,
        };
        let eligible = |i: usize| self.targets[i].is_eligible(now_ms);
        let fresh = self.pick_among(key, now_us, |i| eligible(i) && !tried.contains(&i));
        match fresh {
            Some(i) => Some(i),
            // Only targets this request failed on are left: better one of them than none.
            None if !tried.is_empty() => self.pick_among(key, now_us, eligible),
            None => None,
        }
    }

    fn pick_among(&self, key: u64, now_us: u64, ok: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.targets.len();
        match self.balancer() {
            Balancer::RoundRobin | Balancer::Weighted => self.scheduled(n, ok),
            Balancer::LeastConn => self.least_conn(n, ok),
            Balancer::P2cEwma => self.p2c(n, now_us, ok),
            Balancer::ConsistentHash => self.ring.as_ref().and_then(|r| r.lookup(key, ok)),
        }
    }

    /// round_robin and weighted: the next entry of the schedule. A refused entry consumes its
    /// turn, so the others keep their proportions (A, B, C with B out serves A, C, A, C).
    fn scheduled(&self, n: usize, ok: impl Fn(usize) -> bool) -> Option<usize> {
        if !(0..n).any(&ok) {
            return None;
        }
        let len = self.schedule.len();
        for _ in 0..len {
            let turn = self.next.fetch_add(1, Ordering::Relaxed);
            let i = self.schedule[turn % len] as usize;
            if ok(i) {
                return Some(i);
            }
        }
        // Concurrent picks took every turn of an eligible target: take it anyway.
        (0..n).find(|i| ok(*i))
    }

    /// least_conn: the fewest requests in flight; ties take turns.
    fn least_conn(&self, n: usize, ok: impl Fn(usize) -> bool) -> Option<usize> {
        let mut first: Option<(usize, u32)> = None;
        let mut ties = 0;
        for i in (0..n).filter(|i| ok(*i)) {
            let load = self.targets[i].inflight();
            match first {
                Some((_, min)) if load > min => {}
                Some((_, min)) if load == min => ties += 1,
                _ => {
                    first = Some((i, load));
                    ties = 1;
                }
            }
        }
        let (first, min) = first?;
        if ties == 1 {
            return Some(first);
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % ties;
        let mut tied = (0..n).filter(|i| ok(*i) && self.targets[*i].inflight() == min);
        // Loads may have moved since the first pass: then the first minimum will do.
        Some(tied.nth(turn).unwrap_or(first))
    }

    /// p2c_ewma: two distinct eligible targets at random, the one with the lower
    /// latency-estimate × (in flight + 1).
    fn p2c(&self, n: usize, now_us: u64, ok: impl Fn(usize) -> bool) -> Option<usize> {
        let eligible = (0..n).filter(|i| ok(*i)).count();
        let nth_eligible = |rank: usize| (0..n).filter(|i| ok(*i)).nth(rank);
        match eligible {
            0 => None,
            1 => nth_eligible(0),
            m => {
                let mut rng = rand::thread_rng();
                let a = rng.gen_range(0..m);
                let mut b = rng.gen_range(0..m - 1);
                if b >= a {
                    b += 1;
                }
                match (nth_eligible(a), nth_eligible(b)) {
                    (Some(a), Some(b)) => {
                        let (ca, cb) = (self.targets[a].cost(now_us), self.targets[b].cost(now_us));
                        Some(if cb < ca { b } else { a })
                    }
                    // Eligibility changed between the passes.
                    (a, b) => a.or(b).or_else(|| nth_eligible(0)),
                }
            }
        }
    }
}

/// Smooth weighted round robin (nginx's algorithm), unrolled into a schedule of target indexes:
/// each target appears in proportion to its weight, interleaved rather than in bursts.
pub fn smooth_weighted(weights: &[u64]) -> Vec<u32> {
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
#[path = "pick_test.rs"]
mod tests;
