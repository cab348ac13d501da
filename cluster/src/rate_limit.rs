//! Rate limits: the route's `rate_limit` spec and its validation. Unlike a quota, a rate limit
//! is never accounted in the log: each node enforces its fair share of it locally (see the
//! gateway's `ratelimit` module), so only the spec is replicated.

use serde::{Deserialize, Serialize};

use crate::spec::{invalid, AuthMode, Invalid};

/// The largest `requests`: keeps every node's bucket arithmetic in 64-bit integers.
pub const MAX_REQUESTS: u64 = 1_000_000_000;

/// `rate_limit` on a route: `{"requests": 100, "per": "second", "by": "consumer"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Cluster-wide: what every node together admits per `per`.
    pub requests: u64,
    pub per: RateLimitPer,
    /// Default: `consumer` on authenticated routes, `ip` on the others.
    #[serde(default)]
    pub by: Option<RateLimitBy>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitPer {
    Second,
    Minute,
    Hour,
}

/// Whom a rate limit counts: each consumer, each client IP, or the route as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitBy {
    Consumer,
    Ip,
    Route,
}

impl RateLimitPer {
    pub fn seconds(self) -> u64 {
        match self {
            RateLimitPer::Second => 1,
            RateLimitPer::Minute => 60,
            RateLimitPer::Hour => 3600,
        }
    }
}

impl RateLimit {
    /// Whom the limit counts: as given, else the consumer on an authenticated route.
    pub fn by(&self, auth: AuthMode) -> RateLimitBy {
        match (self.by, auth) {
            (Some(by), _) => by,
            (None, AuthMode::None) => RateLimitBy::Ip,
            (None, _) => RateLimitBy::Consumer,
        }
    }

    /// `auth` is the route's: counting by consumer needs one. (Kong falls back to the IP there,
    /// because one plugin may span routes with and without auth; a route's own limit knows its
    /// auth when it is written, so the mistake is refused instead, as a quota's is.)
    pub fn validate(&self, auth: AuthMode) -> Result<(), Invalid> {
        if self.requests == 0 || self.requests > MAX_REQUESTS {
            return Err(invalid(
                "rate_limit.requests",
                format!("a rate limit is 1 to {MAX_REQUESTS} requests per period"),
            ));
        }
        if self.by == Some(RateLimitBy::Consumer) && auth == AuthMode::None {
            return Err(invalid(
                "rate_limit.by",
                "a rate limit by consumer needs an authenticated route: set auth, or use by ip or route",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(requests: u64, by: Option<RateLimitBy>) -> RateLimit {
        RateLimit {
            requests,
            per: RateLimitPer::Second,
            by,
        }
    }

    #[test]
    fn the_json_shape_is_the_contract_s() {
        let l: RateLimit =
            serde_json::from_str(r#"{"requests": 100, "per": "minute", "by": "consumer"}"#)
                .unwrap();
        assert_eq!(l.per, RateLimitPer::Minute);
        assert_eq!(l.by, Some(RateLimitBy::Consumer));
        assert_eq!(
            serde_json::to_value(&l).unwrap(),
            serde_json::json!({"requests": 100, "per": "minute", "by": "consumer"})
        );
        let l: RateLimit = serde_json::from_str(r#"{"requests": 1, "per": "hour"}"#).unwrap();
        assert_eq!(l.by, None);
        for bad in [
            r#"{"requests": 1, "per": "day"}"#,
            r#"{"requests": 1, "per": "second", "by": "header"}"#,
            r#"{"requests": 1, "per": "second", "burst": 5}"#,
        ] {
            assert!(serde_json::from_str::<RateLimit>(bad).is_err(), "{bad}");
        }
        // The log's encoding writes every field, `by: None` included.
        let bytes = postcard::to_allocvec(&l).unwrap();
        assert_eq!(postcard::from_bytes::<RateLimit>(&bytes).unwrap(), l);
    }

    #[test]
    fn requests_and_by_are_checked_against_the_route_s_auth() {
        assert!(limit(1, None).validate(AuthMode::None).is_ok());
        assert!(limit(MAX_REQUESTS, Some(RateLimitBy::Route))
            .validate(AuthMode::None)
            .is_ok());
        for requests in [0, MAX_REQUESTS + 1] {
            let e = limit(requests, None)
                .validate(AuthMode::ApiKey)
                .unwrap_err();
            assert_eq!(e.field, "rate_limit.requests");
        }
        let by_consumer = limit(5, Some(RateLimitBy::Consumer));
        assert_eq!(
            by_consumer.validate(AuthMode::None).unwrap_err().field,
            "rate_limit.by"
        );
        assert!(by_consumer.validate(AuthMode::Jwt).is_ok());
        assert_eq!(limit(5, None).by(AuthMode::None), RateLimitBy::Ip);
        assert_eq!(limit(5, None).by(AuthMode::Any), RateLimitBy::Consumer);
        assert_eq!(
            limit(5, Some(RateLimitBy::Route)).by(AuthMode::Any),
            RateLimitBy::Route
        );
    }
}
