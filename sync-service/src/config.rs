//! Start-up configuration of one sync shard, read from the environment (or flags).

use crate::error::SyncError;
use clap::Parser;
use std::net::SocketAddr;
use std::time::Duration;
use topgun_proto::partition::{shard_partitions, PARTITION_COUNT};

/// Default address of the ops HTTP port.
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:9091";

/// Configuration of a sync shard. Every field has an environment variable; the
/// defaults run a single shard owning all 271 partitions, in memory only.
#[derive(Debug, Clone, Parser, PartialEq, Eq)]
#[command(
    name = "sync-service",
    about = "TopGun sync shard: CRDT maps, Merkle trees, change feed"
)]
pub struct SyncConfig {
    /// Address the gRPC server binds (`SYNC_GRPC_ADDR`, default `0.0.0.0:50051`).
    #[arg(long, env = "SYNC_GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,

    /// Address of the ops HTTP port serving `/health`, `/health/live`, `/health/ready`
    /// and `/metrics` (`SYNC_HTTP_ADDR`, default `0.0.0.0:9091`; empty = no ops port).
    #[arg(long, env = "SYNC_HTTP_ADDR", default_value = DEFAULT_HTTP_ADDR)]
    pub http_addr: String,

    /// HLC node id stamped on timestamps this shard issues (`NODE_ID`, default
    /// `sync-<shard index>`). Must be non-empty and must not contain `:`.
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<String>,

    /// Index of this shard among `shard_count` (`SHARD_INDEX`, default 0).
    #[arg(long, env = "SHARD_INDEX", default_value_t = 0)]
    pub shard_index: u32,

    /// Number of sync shards (`SHARD_COUNT`, default 1).
    #[arg(long, env = "SHARD_COUNT", default_value_t = 1)]
    pub shard_count: u32,

    /// Explicit partition list such as `0-99,150` (`SYNC_PARTITIONS`); overrides the
    /// range derived from the shard index and count.
    #[arg(long, env = "SYNC_PARTITIONS")]
    pub partitions: Option<String>,

    /// Start owning no partition and wait for `SetPartitions` (peer cluster mode, where
    /// membership decides ownership; set programmatically, overrides the above).
    #[arg(skip)]
    pub start_unowned: bool,

    /// Without `storage_addr`, still report writes PERSISTED: the single-process
    /// binaries with the null store, where a storage hop would only discard the rows
    /// (set programmatically).
    #[arg(skip)]
    pub null_storage: bool,

    /// More URLs callers in this process know the shard by (the peer-cluster node's
    /// advertised cluster address), besides its listener's own; calls to any of them
    /// stay in-process (set programmatically).
    #[arg(skip)]
    pub in_process_aliases: Vec<String>,

    /// Storage service endpoint, e.g. `http://127.0.0.1:50053` (`STORAGE_ADDR`); unset
    /// = memory only (writes reach APPLIED, never PERSISTED).
    #[arg(long, env = "STORAGE_ADDR")]
    pub storage_addr: Option<String>,

    /// Shared token required on every internal call (`TOPGUN_INTERNAL_TOKEN`); unset or
    /// empty disables the check.
    #[arg(long, env = "TOPGUN_INTERNAL_TOKEN", hide_env_values = true)]
    pub internal_token: Option<String>,

    /// Period of the garbage-collection sweep in ms (`GC_INTERVAL_MS`, default 60000).
    #[arg(long, env = "GC_INTERVAL_MS", default_value_t = 60_000)]
    pub gc_interval_ms: u64,

    /// Age after which LWW tombstones and OR tombstone tags are pruned, in ms
    /// (`TOMBSTONE_TTL_MS`, default 30 days).
    #[arg(long, env = "TOMBSTONE_TTL_MS", default_value_t = 2_592_000_000)]
    pub tombstone_ttl_ms: u64,

    /// RPCs allowed in flight before new ones are refused with RESOURCE_EXHAUSTED
    /// (`MAX_CONCURRENT_OPERATIONS`, default 1000).
    #[arg(long, env = "MAX_CONCURRENT_OPERATIONS", default_value_t = 1000)]
    pub max_concurrent_operations: usize,

    /// Upper bound on any RPC's run time, also capping the caller's deadline
    /// (`DEFAULT_OPERATION_TIMEOUT_MS`, default 30000).
    #[arg(long, env = "DEFAULT_OPERATION_TIMEOUT_MS", default_value_t = 30_000)]
    pub default_operation_timeout_ms: u64,

    /// Change events kept for resuming subscribers (`CHANGE_FEED_BUFFER`, default 100000).
    #[arg(long, env = "CHANGE_FEED_BUFFER", default_value_t = 100_000)]
    pub change_feed_buffer: usize,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            grpc_addr: SocketAddr::from(([0, 0, 0, 0], 50051)),
            http_addr: DEFAULT_HTTP_ADDR.to_string(),
            node_id: None,
            shard_index: 0,
            shard_count: 1,
            partitions: None,
            start_unowned: false,
            null_storage: false,
            in_process_aliases: Vec::new(),
            storage_addr: None,
            internal_token: None,
            gc_interval_ms: 60_000,
            tombstone_ttl_ms: 2_592_000_000,
            max_concurrent_operations: 1000,
            default_operation_timeout_ms: 30_000,
            change_feed_buffer: 100_000,
        }
    }
}

/// The checked form of [`SyncConfig`] the server runs with.
#[derive(Debug, Clone)]
pub struct ValidatedConfig {
    /// Ops HTTP port address; `None` = disabled.
    pub http_addr: Option<SocketAddr>,
    /// HLC node id.
    pub node_id: String,
    /// Shard index.
    pub shard_index: u32,
    /// Shard count.
    pub shard_count: u32,
    /// Owned partitions.
    pub partitions: PartitionSet,
    /// Storage endpoint, if any.
    pub storage_addr: Option<String>,
    /// Internal token, if any (never empty).
    pub internal_token: Option<String>,
    /// GC period.
    pub gc_interval: Duration,
    /// Tombstone age limit in ms.
    pub tombstone_ttl_ms: u64,
    /// Writes without storage count as persisted (see [`SyncConfig::null_storage`]).
    pub null_storage: bool,
    /// See [`SyncConfig::in_process_aliases`].
    pub in_process_aliases: Vec<String>,
    /// In-flight RPC limit.
    pub max_concurrent_operations: usize,
    /// Cap on every RPC's deadline.
    pub operation_timeout: Duration,
    /// Change feed ring size.
    pub change_feed_buffer: usize,
}

impl SyncConfig {
    /// Reads the configuration from flags and environment variables.
    pub fn from_env() -> Result<Self, clap::Error> {
        SyncConfig::try_parse()
    }

    /// Checks every setting and resolves the defaults that depend on others.
    pub fn validate(&self) -> Result<ValidatedConfig, SyncError> {
        let bad = |msg: String| Err(SyncError::Config(msg));
        if self.shard_count == 0 {
            return bad("SHARD_COUNT must be at least 1".into());
        }
        if self.shard_count > PARTITION_COUNT {
            return bad(format!(
                "SHARD_COUNT must not exceed {PARTITION_COUNT}, got {}",
                self.shard_count
            ));
        }
        if self.shard_index >= self.shard_count {
            return bad(format!(
                "SHARD_INDEX must be below SHARD_COUNT ({}), got {}",
                self.shard_count, self.shard_index
            ));
        }
        let node_id = self
            .node_id
            .clone()
            .unwrap_or_else(|| format!("sync-{}", self.shard_index));
        if node_id.is_empty() || node_id.contains(':') || node_id.contains('\0') {
            return bad(format!(
                "NODE_ID must be non-empty without ':' or NUL, got {node_id:?}"
            ));
        }
        let partitions = match self.partitions.as_deref().filter(|p| !p.trim().is_empty()) {
            _ if self.start_unowned => PartitionSet::from_list([]),
            Some(spec) => PartitionSet::parse(spec)?,
            None => PartitionSet::from_list(shard_partitions(self.shard_index, self.shard_count)),
        };
        if partitions.is_empty() && !self.start_unowned {
            return bad("the shard owns no partition".into());
        }
        let storage_addr = self.storage_addr.clone().filter(|a| !a.trim().is_empty());
        if let Some(addr) = &storage_addr {
            if !(addr.starts_with("http://") || addr.starts_with("https://")) {
                return bad(format!(
                    "STORAGE_ADDR must be an http:// or https:// URL, got {addr:?}"
                ));
            }
        }
        if self.gc_interval_ms == 0 {
            return bad("GC_INTERVAL_MS must be positive".into());
        }
        if self.max_concurrent_operations == 0 {
            return bad("MAX_CONCURRENT_OPERATIONS must be positive".into());
        }
        if self.default_operation_timeout_ms == 0 {
            return bad("DEFAULT_OPERATION_TIMEOUT_MS must be positive".into());
        }
        if self.change_feed_buffer == 0 {
            return bad("CHANGE_FEED_BUFFER must be positive".into());
        }
        let http_addr = topgun_ops::parse_http_addr("SYNC_HTTP_ADDR", &self.http_addr)
            .map_err(|e| SyncError::Config(e.to_string()))?;
        Ok(ValidatedConfig {
            http_addr,
            node_id,
            shard_index: self.shard_index,
            shard_count: self.shard_count,
            partitions,
            storage_addr,
            internal_token: self.internal_token.clone().filter(|t| !t.is_empty()),
            gc_interval: Duration::from_millis(self.gc_interval_ms),
            tombstone_ttl_ms: self.tombstone_ttl_ms,
            null_storage: self.null_storage && self.storage_addr.is_none(),
            in_process_aliases: self.in_process_aliases.clone(),
            max_concurrent_operations: self.max_concurrent_operations,
            operation_timeout: Duration::from_millis(self.default_operation_timeout_ms),
            change_feed_buffer: self.change_feed_buffer,
        })
    }
}

/// The partitions a shard owns: a membership table plus the sorted list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSet {
    owned: Vec<bool>,
    list: Vec<u32>,
}

impl PartitionSet {
    /// Every partition.
    pub fn all() -> Self {
        Self::from_list(0..PARTITION_COUNT)
    }

    /// The given partitions (values at or above 271 are ignored).
    pub fn from_list(partitions: impl IntoIterator<Item = u32>) -> Self {
        let mut owned = vec![false; PARTITION_COUNT as usize];
        for p in partitions {
            if let Some(slot) = owned.get_mut(p as usize) {
                *slot = true;
            }
        }
        let list = (0..PARTITION_COUNT)
            .filter(|p| owned[*p as usize])
            .collect();
        PartitionSet { owned, list }
    }

    /// Parses `0-99,150`: comma-separated partitions and inclusive ranges.
    pub fn parse(spec: &str) -> Result<Self, SyncError> {
        let mut partitions = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let number = |s: &str| -> Result<u32, SyncError> {
                let p: u32 = s.trim().parse().map_err(|_| {
                    SyncError::Config(format!("SYNC_PARTITIONS: {s:?} is not a partition number"))
                })?;
                if p >= PARTITION_COUNT {
                    return Err(SyncError::Config(format!(
                        "SYNC_PARTITIONS: partition {p} is not below {PARTITION_COUNT}"
                    )));
                }
                Ok(p)
            };
            match item.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (number(lo)?, number(hi)?);
                    if lo > hi {
                        return Err(SyncError::Config(format!(
                            "SYNC_PARTITIONS: empty range {item:?}"
                        )));
                    }
                    partitions.extend(lo..=hi);
                }
                None => partitions.push(number(item)?),
            }
        }
        Ok(Self::from_list(partitions))
    }

    /// Whether `partition` is owned.
    pub fn contains(&self, partition: u32) -> bool {
        self.owned.get(partition as usize).copied().unwrap_or(false)
    }

    /// The owned partitions, ascending.
    pub fn as_slice(&self) -> &[u32] {
        &self.list
    }

    /// True when nothing is owned.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_clap_defaults() {
        let parsed = SyncConfig::try_parse_from(["sync-service"]).expect("defaults parse");
        // The environment of the test run may set some variables; compare the rest.
        if std::env::vars().all(|(k, _)| !k.starts_with("SYNC_") && k != "SHARD_INDEX") {
            assert_eq!(parsed.gc_interval_ms, SyncConfig::default().gc_interval_ms);
            assert_eq!(parsed.grpc_addr, SyncConfig::default().grpc_addr);
            assert_eq!(parsed.http_addr, SyncConfig::default().http_addr);
            assert_eq!(
                parsed.tombstone_ttl_ms,
                SyncConfig::default().tombstone_ttl_ms
            );
            assert_eq!(
                parsed.change_feed_buffer,
                SyncConfig::default().change_feed_buffer
            );
        }
        let v = SyncConfig::default()
            .validate()
            .expect("defaults are valid");
        assert_eq!(v.node_id, "sync-0");
        assert_eq!(v.http_addr, Some(SocketAddr::from(([0, 0, 0, 0], 9091))));
        let off = SyncConfig {
            http_addr: String::new(),
            ..Default::default()
        };
        assert_eq!(off.validate().expect("valid").http_addr, None);
        assert_eq!(v.partitions.as_slice().len(), PARTITION_COUNT as usize);
    }

    #[test]
    fn partition_lists_parse_ranges_and_reject_junk() {
        let set = PartitionSet::parse("0-3, 150,7-7").expect("valid");
        assert_eq!(set.as_slice(), &[0, 1, 2, 3, 7, 150]);
        assert!(set.contains(150) && !set.contains(4) && !set.contains(9999));
        for bad in ["x", "5-2", "271", "0-300", "1--2"] {
            assert!(PartitionSet::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn invalid_settings_are_reported_clearly() {
        let cases = [
            SyncConfig {
                shard_count: 0,
                ..Default::default()
            },
            SyncConfig {
                shard_index: 2,
                shard_count: 2,
                ..Default::default()
            },
            SyncConfig {
                node_id: Some("a:b".into()),
                ..Default::default()
            },
            SyncConfig {
                storage_addr: Some("127.0.0.1:50053".into()),
                ..Default::default()
            },
            SyncConfig {
                gc_interval_ms: 0,
                ..Default::default()
            },
            SyncConfig {
                change_feed_buffer: 0,
                ..Default::default()
            },
            SyncConfig {
                partitions: Some("300".into()),
                ..Default::default()
            },
            SyncConfig {
                http_addr: "localhost".into(),
                ..Default::default()
            },
        ];
        for config in cases {
            let err = config.validate().expect_err("invalid");
            assert!(matches!(err, SyncError::Config(_)), "{err}");
        }
        let split = SyncConfig {
            shard_index: 1,
            shard_count: 2,
            ..Default::default()
        }
        .validate()
        .expect("valid");
        assert_eq!(split.node_id, "sync-1");
        assert_eq!(split.partitions.as_slice(), &shard_partitions(1, 2)[..]);
    }
}
