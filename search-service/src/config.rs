//! Configuration of the search service, read from flags or the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

use crate::engine::{
    EngineConfig, DEFAULT_MAX_BUFFERED_DOCS, DEFAULT_MAX_PENDING_DOCS, DEFAULT_SUBSCRIBER_BUFFER,
};
use crate::maps::IndexedMaps;

/// Default gRPC listen address.
pub const DEFAULT_GRPC_ADDR: &str = "0.0.0.0:50052";
/// Default address of the ops HTTP port (health, metrics).
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:9092";
/// Default commit interval in milliseconds: the minimum time between commits, so the
/// longest a write waits to become searchable under load.
pub const DEFAULT_COMMIT_INTERVAL_MS: u64 = 50;

/// Settings of the search service. Every field can be given as a flag or through the
/// environment variable named in its `env` attribute.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "search-service",
    version,
    about = "TopGun search service (gRPC)"
)]
pub struct SearchConfig {
    /// gRPC listen address.
    #[arg(long, env = "SEARCH_GRPC_ADDR", default_value = DEFAULT_GRPC_ADDR)]
    pub grpc_addr: SocketAddr,

    /// Ops HTTP port serving `/health`, `/health/live`, `/health/ready` and `/metrics`
    /// (empty = no ops port).
    #[arg(long, env = "SEARCH_HTTP_ADDR", default_value = DEFAULT_HTTP_ADDR)]
    pub http_addr: String,

    /// Sync shards to index, comma-separated gRPC URLs (e.g. `http://127.0.0.1:50051`).
    /// Empty: nothing is ingested.
    #[arg(long, env = "SYNC_ADDRS", value_delimiter = ',')]
    pub sync_addrs: Vec<String>,

    /// Runtime source of shard addresses, for embedding processes whose set of sync
    /// shards changes (peer-cluster mode). When set, the replica follows exactly the
    /// addresses last sent, starting and stopping followers as the set changes;
    /// `sync_addrs` is the initial set. Only set programmatically (no flag, no env).
    #[arg(skip)]
    pub sync_addrs_updates: Option<watch::Receiver<Vec<String>>>,

    /// Folder for the indexes, one sub-folder per map, rebuilt at every start. Unset:
    /// indexes are kept in memory.
    #[arg(long, env = "SEARCH_INDEX_DIR")]
    pub index_dir: Option<PathBuf>,

    /// Maps to index, comma-separated. Empty: every map.
    #[arg(long, env = "SEARCH_MAPS", default_value = "")]
    pub maps: String,

    /// Shared token every internal gRPC call must carry, and that calls to the shards
    /// carry (unset or empty = no check).
    #[arg(long, env = "TOPGUN_INTERNAL_TOKEN", hide_env_values = true)]
    pub internal_token: Option<String>,

    /// Minimum milliseconds between commits; a write after a quiet spell is committed at
    /// once, writes under load wait at most this long to become searchable.
    #[arg(long, env = "SEARCH_COMMIT_INTERVAL_MS", default_value_t = DEFAULT_COMMIT_INTERVAL_MS)]
    pub commit_interval_ms: u64,

    /// Changed keys of maps without a live search that may wait, over all maps, before
    /// they are indexed without waiting for a search or a pause in writes.
    #[arg(long, env = "SEARCH_MAX_PENDING_KEYS", default_value_t = DEFAULT_MAX_BUFFERED_DOCS)]
    pub max_pending_keys: usize,
}

impl Default for SearchConfig {
    /// The documented defaults, ignoring the environment (for in-process use).
    fn default() -> Self {
        SearchConfig {
            grpc_addr: SocketAddr::from(([0, 0, 0, 0], 50052)),
            http_addr: DEFAULT_HTTP_ADDR.to_string(),
            sync_addrs: Vec::new(),
            sync_addrs_updates: None,
            index_dir: None,
            maps: String::new(),
            internal_token: None,
            commit_interval_ms: DEFAULT_COMMIT_INTERVAL_MS,
            max_pending_keys: DEFAULT_MAX_BUFFERED_DOCS,
        }
    }
}

impl SearchConfig {
    /// Reads the configuration from the environment only (no command-line flags), for
    /// binaries that embed the service.
    pub fn from_env() -> Result<Self, clap::Error> {
        <Self as clap::Parser>::try_parse_from(["search-service"])
    }

    /// The initial shard addresses, trimmed, blanks and repeats dropped.
    pub fn shard_addrs(&self) -> Vec<String> {
        normalize_addrs(&self.sync_addrs)
    }

    /// The engine settings this configuration implies.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            index_dir: self.index_dir.clone(),
            indexed_maps: IndexedMaps::parse(&self.maps),
            commit_interval: Duration::from_millis(self.commit_interval_ms.max(1)),
            max_pending_docs: DEFAULT_MAX_PENDING_DOCS,
            max_buffered_docs: self.max_pending_keys.max(1),
            subscriber_buffer: DEFAULT_SUBSCRIBER_BUFFER,
        }
    }
}

/// `addrs` trimmed, blanks dropped, each address once (first occurrence kept): a
/// follower is keyed by its address.
pub(crate) fn normalize_addrs(addrs: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(addrs.len());
    for addr in addrs.iter().map(|a| a.trim()).filter(|a| !a.is_empty()) {
        if !out.iter().any(|seen| seen == addr) {
            out.push(addr.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_and_lists_parse() {
        let parsed = SearchConfig::try_parse_from(["search-service"]).expect("defaults parse");
        let default = SearchConfig::default();
        assert_eq!(parsed.grpc_addr, default.grpc_addr);
        assert_eq!(parsed.commit_interval_ms, 50);
        assert!(parsed.index_dir.is_none());
        assert_eq!(parsed.engine_config().indexed_maps, IndexedMaps::All);

        let parsed = SearchConfig::try_parse_from([
            "search-service",
            "--sync-addrs",
            "http://127.0.0.1:1, http://127.0.0.1:2,http://127.0.0.1:1",
            "--maps",
            "a,b",
        ])
        .expect("parse");
        assert_eq!(
            parsed.shard_addrs(),
            vec!["http://127.0.0.1:1", "http://127.0.0.1:2"]
        );
        assert!(parsed.sync_addrs_updates.is_none());
        assert!(parsed.engine_config().indexed_maps.contains("b"));
        assert!(!parsed.engine_config().indexed_maps.contains("c"));
    }
}
