//! Choosing the upstream target: each service's live target state ([`ServiceRuntime`]: health,
//! in-flight requests, latency estimates as atomics), the five balancers over it, the
//! consistent-hash ring, and the active health probe. The balancer actor
//! ([`crate::actors::balancer`]) builds the runtimes and runs the checks; the router hands each
//! compiled route its service's runtime; the request path picks and records on it directly.

mod pick;
pub mod probe;
pub mod ring;
mod runtime;

pub use pick::{smooth_weighted, MAX_SCHEDULE};
pub use runtime::{
    now_ms, now_us, Attempt, HashOn, HealthTable, Outcome, ServiceRuntime, TargetState,
};
