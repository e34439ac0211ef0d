//! Request and response bodies of the admin API; the OpenAPI document is generated
//! from these types and the handlers' annotations.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Error body of every admin/auth failure; `error` mirrors `message` for the dashboard.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// HTTP status.
    pub code: u16,
    /// What went wrong.
    pub message: String,
    /// Same as `message`.
    pub error: String,
    /// The offending field, when one is to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// POST /api/auth/login body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    /// Admin user name.
    pub username: String,
    /// Admin password.
    pub password: String,
}

/// A signed admin JWT.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// HS256 JWT with role `admin`, valid one day.
    pub token: String,
}

/// GET /api/status.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusResponse {
    /// Always true.
    pub configured: bool,
    /// Server version.
    pub version: String,
    /// Always `normal`.
    pub mode: String,
    /// This gateway's node id.
    pub node_id: String,
    /// Open client connections.
    pub connections: usize,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// Operations completed since start.
    pub total_operations: u64,
}

/// One member of the suite.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Node id.
    pub node_id: String,
    /// `gateway`, `sync` or `search`.
    pub role: String,
    /// Address.
    pub address: String,
    /// `healthy`, `suspect` or `dead`.
    pub status: String,
    /// Partitions owned.
    pub partition_count: usize,
    /// Client connections (gateways).
    pub connections: usize,
    /// Reserved; 0.
    pub memory: u64,
    /// Seconds since this gateway started.
    pub uptime: u64,
}

/// Owner of one partition.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionOwner {
    /// Partition id.
    pub id: u32,
    /// Owning shard's node id.
    pub owner_node_id: String,
}

/// GET /api/admin/cluster/status.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Gateways, sync shards and search replicas.
    pub nodes: Vec<NodeStatus>,
    /// The partition table.
    pub partitions: Vec<PartitionOwner>,
    /// 271.
    pub total_partitions: u32,
    /// Whether partitions are moving.
    pub is_rebalancing: bool,
}

/// One map.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MapInfo {
    /// Map name.
    pub name: String,
    /// Records (tombstones included).
    pub entry_count: u64,
    /// `lww` or `or`.
    pub kind: String,
    /// Partitions holding records of the map.
    pub partitions: u64,
}

/// GET /api/admin/maps.
#[derive(Debug, Serialize, ToSchema)]
pub struct MapsResponse {
    /// Every map except `$sys/` ones.
    pub maps: Vec<MapInfo>,
}

/// GET /api/admin/settings (and the PUT answer).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// Read-only.
    pub node_id: String,
    /// Read-only.
    pub default_operation_timeout_ms: u64,
    /// Admission limit.
    pub max_concurrent_operations: u32,
    /// GC period.
    pub gc_interval_ms: u64,
    /// Read-only: 271.
    pub partition_count: u32,
    /// Read-only.
    pub host: String,
    /// Read-only.
    pub port: u16,
    /// Read-only.
    pub require_auth: bool,
    /// Read-only.
    pub max_value_bytes: u64,
    /// Live log filter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// Maps the search replicas index (`["*"]` = every map); absent without search.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub searchable_maps: Option<Vec<String>>,
}

/// PUT /api/admin/settings body: any subset of the changeable fields.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SettingsUpdate {
    /// Tracing filter directive, e.g. `info,topgun_gateway=debug`.
    pub log_level: Option<String>,
    /// At least 1000.
    pub gc_interval_ms: Option<u64>,
    /// 1 ..= 1 000 000.
    pub max_concurrent_operations: Option<u32>,
    /// Map names to index, or `["*"]` for every map.
    pub searchable_maps: Option<Vec<String>>,
}

/// GET /api/admin/policies.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyList {
    /// Every policy, by id.
    pub policies: Vec<crate::rbac::Policy>,
}
