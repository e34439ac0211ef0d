//! Whole-system tests against the real binaries. One test binary (faster to link) with a
//! module per area.

mod auth_and_bad_input;
mod common;
mod compose;
mod durability;
mod live_queries;
mod merkle_sync;
mod operations;
mod peer_cluster;
mod search;
mod service_ops;
mod tls;
mod topics_rbac_http;
mod topology;
mod tracing;
mod writes_and_events;
