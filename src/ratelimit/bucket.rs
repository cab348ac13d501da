//! One subject's token bucket on this node, sized to the node's fair share of a cluster-wide
//! limit, in exact integer arithmetic.
//!
//! With `requests` per `period` cluster-wide and `live` nodes, a node's share is
//! `requests / live` tokens per period, which is rarely a whole number. Counting in units of
//! `1 / (live × period_us)` token makes everything integral:
//!
//! - one token (one request) costs `live × period_us` units;
//! - the bucket refills `requests` units per microsecond (`share / period`);
//! - it holds at most `max(requests, live) × period_us` units: one period's share, or one
//!   whole token when the share is less than one (else it could never admit anything).
//!
//! With `requests ≤ 10^9` and a period up to an hour (3.6 × 10^9 µs), the largest level is
//! 3.6 × 10^18 units: it fits in a `u64`.

/// A limit as the bucket sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// Cluster-wide requests per period.
    pub requests: u64,
    pub period_us: u64,
}

/// The answer to one request, with what the `RateLimit-*` headers report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub admitted: bool,
    /// `RateLimit-Limit`: the route's cluster-wide `requests`.
    pub limit: u64,
    /// `RateLimit-Remaining`: this node's whole tokens left × live nodes, at most `limit`. It
    /// is 0 exactly when this node refuses the next request.
    pub remaining: u64,
    /// `RateLimit-Reset`: whole seconds until this node's bucket is full again; at most the
    /// period whenever `requests ≥ live`.
    pub reset_s: u64,
    /// Whole seconds until the next token is back, at least 1: `Retry-After` of a refusal.
    pub retry_after_s: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    level: u64,
    /// When `level` was last brought up to date, in µs since the limiter's epoch.
    last_us: u64,
    /// The live node count `level` is expressed for.
    live: u64,
}

const MICROS: u64 = 1_000_000;

impl Limit {
    fn token(&self, live: u64) -> u64 {
        live.saturating_mul(self.period_us)
    }

    fn capacity(&self, live: u64) -> u64 {
        self.requests.max(live).saturating_mul(self.period_us)
    }
}

impl Bucket {
    /// A bucket that was never used is full.
    pub fn full(limit: Limit, live: u64, now_us: u64) -> Bucket {
        let live = live.max(1);
        Bucket {
            level: limit.capacity(live),
            last_us: now_us,
            live,
        }
    }

    /// Refills for the time since the last call and re-expresses the level when the live node
    /// count changed: the node keeps the tokens it has (no burst when the share grows; clamped
    /// to the new capacity when it shrinks).
    fn refill(&mut self, limit: Limit, live: u64, now_us: u64) {
        let live = live.max(1);
        if live != self.live {
            let level = u128::from(self.level) * u128::from(live) / u128::from(self.live);
            self.level = u64::try_from(level).unwrap_or(u64::MAX);
            self.live = live;
        }
        let elapsed = now_us.saturating_sub(self.last_us);
        self.last_us = self.last_us.max(now_us);
        self.level = self
            .level
            .saturating_add(elapsed.saturating_mul(limit.requests))
            .min(limit.capacity(live));
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, limit: Limit, live: u64, now_us: u64) -> Verdict {
        self.refill(limit, live, now_us);
        let token = limit.token(self.live);
        let admitted = self.level >= token;
        if admitted {
            self.level -= token;
        }
        let capacity = limit.capacity(self.live);
        let until_us = |level: u64| {
            level
                .saturating_sub(self.level)
                .div_ceil(limit.requests)
                .div_ceil(MICROS)
        };
        Verdict {
            admitted,
            limit: limit.requests,
            remaining: (self.level / token)
                .saturating_mul(self.live)
                .min(limit.requests),
            reset_s: until_us(capacity),
            retry_after_s: until_us(token).max(1),
        }
    }

    /// Whether the bucket has refilled completely by `now_us`: then it is the same as no
    /// bucket at all, and can be forgotten.
    pub fn is_full(&self, limit: Limit, live: u64, now_us: u64) -> bool {
        let mut b = *self;
        b.refill(limit, live, now_us);
        b.level >= limit.capacity(b.live)
    }

    /// When it was last used, in µs since the limiter's epoch.
    pub fn last_us(&self) -> u64 {
        self.last_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = MICROS;

    fn per_second(requests: u64) -> Limit {
        Limit {
            requests,
            period_us: SECOND,
        }
    }

    /// Takes until refused at `now`; how many were admitted.
    fn drain(b: &mut Bucket, limit: Limit, live: u64, now: u64) -> u64 {
        let mut n = 0;
        while b.take(limit, live, now).admitted {
            n += 1;
        }
        n
    }

    #[test]
    fn a_fresh_bucket_holds_one_period_s_share() {
        let l = per_second(50);
        for (live, share) in [(1, 50), (2, 25), (3, 16), (5, 10), (7, 7)] {
            let mut b = Bucket::full(l, live, 0);
            assert_eq!(drain(&mut b, l, live, 0), share, "live {live}");
        }
    }

    #[test]
    fn it_refills_continuously_at_the_share_per_period() {
        let l = per_second(50);
        let mut b = Bucket::full(l, 3, 0);
        // 16 of the 16.67 tokens; the 2/3 token left is whole again after 20 ms, not 19.999.
        assert_eq!(drain(&mut b, l, 3, 0), 16);
        assert!(!b.take(l, 3, 19_999).admitted);
        assert!(b.take(l, 3, 20_000).admitted);
        // Then one every 60 ms (50/3 a second).
        assert!(!b.take(l, 3, 79_999).admitted);
        assert!(b.take(l, 3, 80_000).admitted);
        // Under steady demand it admits its share exactly: in 10 s, the 2/3 token left plus
        // 10 × 50/3 = 167.3 tokens.
        let mut admitted = 2;
        for ms in 81..=10_000 {
            admitted += drain(&mut b, l, 3, ms * 1000);
        }
        assert_eq!(admitted, 167);
        // Idle for long, it is full again, never more.
        assert!(b.is_full(l, 3, 60 * SECOND));
        assert_eq!(drain(&mut b, l, 3, 60 * SECOND), 16);
    }

    #[test]
    fn retry_after_is_the_wait_for_the_next_token_and_at_least_one_second() {
        let l = Limit {
            requests: 10,
            period_us: 60 * SECOND,
        };
        let mut b = Bucket::full(l, 2, 0);
        assert_eq!(drain(&mut b, l, 2, 0), 5);
        // Share 5 a minute: a token every 12 s.
        let v = b.take(l, 2, 0);
        assert_eq!((v.admitted, v.retry_after_s, v.remaining), (false, 12, 0));
        let v = b.take(l, 2, 11_500_000);
        assert_eq!(v.retry_after_s, 1);
        // Never 0, even a microsecond before the token.
        let v = b.take(l, 2, 12 * SECOND - 1);
        assert_eq!((v.admitted, v.retry_after_s), (false, 1));
        assert!(b.take(l, 2, 12 * SECOND).admitted);
    }

    #[test]
    fn remaining_is_this_node_s_whole_tokens_scaled_to_the_cluster() {
        let l = per_second(50);
        let mut b = Bucket::full(l, 3, 0);
        // 16.67 tokens; one taken leaves 15.67: 15 whole tokens × 3 nodes.
        let v = b.take(l, 3, 0);
        assert_eq!((v.limit, v.remaining), (50, 45));
        // One node alone: exact.
        let mut b = Bucket::full(l, 1, 0);
        assert_eq!(b.take(l, 1, 0).remaining, 49);
        // Never above the limit, even when the one-token floor makes the share larger.
        let tiny = per_second(2);
        let mut b = Bucket::full(tiny, 3, 0);
        let v = b.take(tiny, 3, 0);
        assert_eq!((v.admitted, v.remaining), (true, 0));
        assert!(!b.take(tiny, 3, 0).admitted);
        // Remaining 0 on a refusal, with fractional tokens left.
        let mut b = Bucket::full(l, 3, 0);
        drain(&mut b, l, 3, 0);
        assert_eq!(b.take(l, 3, 10_000).remaining, 0);
    }

    #[test]
    fn reset_is_the_time_to_full_and_never_past_the_period() {
        let l = Limit {
            requests: 100,
            period_us: 3600 * SECOND,
        };
        let mut b = Bucket::full(l, 3, 0);
        let v = b.take(l, 3, 0);
        // One token of 33.3 at 33.3 an hour: 108 s.
        assert_eq!(v.reset_s, 108);
        drain(&mut b, l, 3, 0);
        assert!(b.take(l, 3, 0).reset_s <= 3600);
        for live in 1..=7 {
            let mut b = Bucket::full(l, live, 0);
            drain(&mut b, l, live, 0);
            let v = b.take(l, live, 0);
            assert!(v.reset_s <= 3600 && v.reset_s >= 3000, "live {live}: {v:?}");
        }
    }

    #[test]
    fn a_new_share_keeps_the_tokens_the_node_holds() {
        let l = per_second(30);
        let mut b = Bucket::full(l, 3, 0);
        // 10 tokens; 4 spent.
        for _ in 0..4 {
            b.take(l, 3, 0);
        }
        // A node went away: the share is 15, the 6 tokens stay 6, the refill is faster.
        let mut copy = b;
        assert_eq!(drain(&mut copy, l, 2, 0), 6);
        drain(&mut b, l, 2, 0);
        assert_eq!(drain(&mut b, l, 2, SECOND), 15);
        // It came back: the 15 tokens are clamped to the share of 10.
        let mut b = Bucket::full(l, 2, 0);
        assert_eq!(drain(&mut b, l, 3, 0), 10);
    }

    #[test]
    fn time_going_backwards_between_workers_refills_nothing() {
        let l = per_second(10);
        let mut b = Bucket::full(l, 1, 5 * SECOND);
        drain(&mut b, l, 1, 5 * SECOND);
        assert!(!b.take(l, 1, 4 * SECOND).admitted);
        assert!(b.take(l, 1, 5 * SECOND + 100_000).admitted);
        assert_eq!(b.last_us(), 5 * SECOND + 100_000);
    }

    #[test]
    fn the_largest_limit_does_not_overflow() {
        let l = Limit {
            requests: raftgate_cluster::rate_limit::MAX_REQUESTS,
            period_us: 3600 * SECOND,
        };
        let mut b = Bucket::full(l, 1, 0);
        let v = b.take(l, 1, u64::MAX / 2);
        assert_eq!((v.admitted, v.remaining), (true, l.requests - 1));
        assert!(b.is_full(l, 9, u64::MAX));
    }
}
