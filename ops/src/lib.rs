//! The operations HTTP port shared by the TopGun services (ARCHITECTURE.md, "Conventions
//! every service follows"): `/health` (JSON), `/health/live`, `/health/ready` and
//! `/metrics` (Prometheus text exposition).
//!
//! A service builds a [`HealthState`] and a [`prometheus::Registry`], binds its
//! `*_HTTP_ADDR` with [`bind`], and runs [`serve_ops`] (or [`OpsServer::spawn`], which
//! also gives a handle to stop it). It flips the state to ready once it can serve and to
//! draining when shutdown starts, and keeps the ops port open while it drains, so
//! orchestrators see readiness turn 503 before the process goes away.

#![warn(missing_docs)]

pub mod addr;
pub mod error;
pub mod health;
pub mod process;
mod routes;
pub mod sampled;
pub mod server;

pub use addr::{bind, parse_http_addr};
pub use error::OpsError;
pub use health::{HealthState, Lifecycle};
pub use process::{init_logging, shutdown_signal};
pub use sampled::{register_sampled, Sampled};
pub use server::{serve_ops, OpsServer};

/// Histogram buckets (seconds) for request latencies, from 100 µs to 10 s: internal
/// calls are sub-millisecond when healthy and bounded by multi-second deadlines.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Content type of the Prometheus text exposition format served at `/metrics`.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
