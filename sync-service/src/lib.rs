//! TopGun sync service: one shard of the live CRDT data.
//!
//! A shard owns a set of the 271 partitions and holds, for every map with keys in
//! them, an LWW-Map and an OR-Map (independent stores), each with its Merkle tree. It
//! merges client ops exactly as the TypeScript client does (core.md §4), keeps the
//! client's exact Merkle hashes (§6), streams every change through a resumable change
//! feed, relays topic messages, and writes every change through to the storage
//! service before acknowledging it.
//!
//! Entry points: [`serve`], [`serve_with_listener`], [`serve_with_routes`] (extra gRPC
//! services on the same listener) and [`serve_with_ops`], configured by [`SyncConfig`];
//! the ops HTTP port (health, Prometheus metrics) is served by the first and the last.

#![warn(missing_docs)]

pub mod admission;
pub mod config;
pub mod crdt;
pub mod error;
pub mod feed;
pub mod gc;
pub mod merkle;
pub mod metrics;
pub mod persistence;
pub mod requests;
pub mod server;
pub mod service;
pub mod shard;
pub mod shutdown;
pub mod state;
pub mod topics;

#[cfg(test)]
mod convergence_tests;

pub use config::SyncConfig;
pub use error::SyncError;
pub use server::{serve, serve_with_listener, serve_with_ops, serve_with_routes};
pub use shard::{Ownership, SetPartitionsOutcome, Shard};
