//! Proxy integration tests: a one-node cluster in front of mock upstreams.

#[path = "../support/mod.rs"]
mod support;

mod balancing;
mod edge;
mod forwarding;
mod upstream_failures;
mod websocket;
