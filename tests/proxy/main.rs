//! Proxy integration tests: a one-node cluster in front of mock upstreams.

#[path = "../support/mod.rs"]
mod support;

mod balancing;
mod edge;
mod forwarding;
mod tls_upstream;
mod upstream_failures;
mod websocket;
