//! TopGun search service: full-text search over map values (queries-search-messaging.md §2).
//!
//! * [`engine`] — one tantivy index per map, one-shot search and live search;
//! * [`ingest`] — fills the indexes from the sync shards (scan, then change feed);
//! * [`service`] — the `topgun.search.v1.SearchService` gRPC front;
//! * [`metrics`] — its Prometheus metrics, served with health on the ops HTTP port;
//! * [`serve`] / [`serve_with_listener`] — entry points of the `search-service` binary
//!   and of single-process binaries that embed the service.

pub mod config;
pub mod document;
pub mod engine;
pub mod error;
mod indexer;
pub mod ingest;
pub mod live;
pub mod maps;
pub mod metrics;
mod server;
pub mod service;
pub mod text;
pub mod text_index;

pub use config::SearchConfig;
pub use document::DocUpdate;
pub use engine::{EngineConfig, EngineStats, SearchEngine, SearchHit, SearchQuery};
pub use error::SearchError;
pub use live::LiveSearch;
pub use maps::IndexedMaps;
pub use metrics::SearchMetrics;
pub use server::{serve, serve_engine, serve_with_listener, serve_with_ops, SHUTDOWN_GRACE};
pub use service::SearchGrpc;

/// MsgPack nil: the value of a LEAVE event and of a hit whose record vanished.
pub const NIL_MSGPACK: &[u8] = &[0xc0];
