//! Phase `quota`: spend one request of the route's quota from this node's lease. The lease is
//! an atomic counter; only a dry lease waits for the limiter actor's next lease write.

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::HttpRequest;
use raftgate_cluster::quota::{QuotaBy, QuotaKey};

use super::ctx::RequestCtx;
use super::error::ProxyError;
use crate::actors::limiter::{unix_now, LimiterHandle};

/// The longest a request waits for a lease write (a cluster without quorum grants nothing:
/// the request is refused, never admitted unaccounted).
const LEASE_WAIT: Duration = Duration::from_secs(2);

pub async fn quota(
    ctx: &mut RequestCtx,
    req: &HttpRequest,
    limiter: &LimiterHandle,
) -> Result<(), ProxyError> {
    let Some(route) = ctx.route.as_ref() else {
        return Ok(());
    };
    let Some(spec) = route.route().quota.as_ref() else {
        return Ok(());
    };
    let subject = match spec.by(route.route().auth) {
        // An authenticated route always has a consumer here (validation refuses `by:
        // consumer` on routes without auth).
        QuotaBy::Consumer => ctx.consumer.as_deref().unwrap_or("").to_string(),
        QuotaBy::Ip => req
            .peer_addr()
            .map(|a| a.ip().to_canonical().to_string())
            .unwrap_or_default(),
        QuotaBy::Route => String::new(),
    };
    let key = QuotaKey {
        route: route.name().to_string(),
        subject,
    };
    let now = unix_now();
    let window = spec.per.window(now);
    let lease = limiter.leases.lease(key, window, spec.requests);
    let exceeded = || ProxyError::QuotaExceeded {
        retry_after_s: window.1.saturating_sub(unix_now()).max(1),
    };
    loop {
        if lease.try_spend() {
            return Ok(());
        }
        if lease.exhausted() || !limiter.need(lease.clone(), LEASE_WAIT).await {
            tracing::debug!(
                route = route.name(),
                limit = lease.limit.load(Ordering::Relaxed),
                "quota exceeded"
            );
            return Err(exceeded());
        }
    }
}
