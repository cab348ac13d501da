//! Cluster integration tests: n raftgate nodes in one process on port 0.

#[path = "../support/mod.rs"]
mod support;

mod admin_errors;
mod auth;
mod cache;
mod config;
mod consumers;
mod dashboard;
mod failover;
mod membership;
mod quota;
mod ratelimit;
mod replication;
mod restart;
mod shutdown;
mod telemetry;
mod tls;
