//! The node's actors: each owns one concern, changes it on messages, and publishes snapshots that
//! the request path reads without locks or mailbox round trips.

pub mod auth;
pub mod balancer;
pub mod cache;
pub mod certificates;
pub mod limiter;
pub mod ratelimit;
pub mod router;
