//! The TopGun gateway: the only component clients talk to. It terminates `/ws` (and `/`)
//! WebSockets and POST `/sync`, authenticates and authorizes, routes writes by partition
//! to the sync shards, recombines Merkle trees and query pages, pushes live events from
//! the shards' change feeds, and serves health, metrics and the admin API.

pub mod auth;
pub mod cluster_view;
pub mod config;
pub mod error;
pub mod http;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod network;
pub mod query_cursor;
pub mod rbac;
pub mod scatter;
pub mod services;
pub mod state;
pub mod writes;
pub mod ws;
