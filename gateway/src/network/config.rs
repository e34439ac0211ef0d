//! Configuration structs of the gateway, with the defaults of the seed (http-admin-ops.md §5).

use std::path::PathBuf;
use std::time::Duration;

/// Listener, TLS, CORS and per-connection settings.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Bind address.
    pub host: String,
    /// Port; 0 = OS-assigned ([`super::module::NetworkModule::start`] returns the real one).
    pub port: u16,
    /// PEM certificate and key; serves `wss://` and `https://` when set.
    pub tls: Option<TlsConfig>,
    /// Per-connection settings.
    pub connection: ConnectionConfig,
    /// Allowed CORS origins; `*` = any, empty = no CORS headers.
    pub cors_origins: Vec<String>,
    /// Preflight cache.
    pub cors_max_age: Duration,
    /// Largest accepted HTTP body.
    pub max_body_size: usize,
    /// Whole-request deadline for HTTP routes.
    pub request_timeout: Duration,
    /// JWT `exp` leeway.
    pub jwt_clock_skew_secs: u64,
    /// Admin-route rate limit per peer IP (tokens per second).
    pub rate_limit_per_ip: u32,
    /// Admin-route burst.
    pub rate_limit_burst: u32,
    /// Put detailed auth failure reasons into AUTH_FAIL / 401 bodies.
    pub insecure_forward_auth_errors: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            host: "0.0.0.0".into(),
            port: 0,
            tls: None,
            connection: ConnectionConfig::default(),
            cors_origins: vec!["*".into()],
            cors_max_age: Duration::from_secs(86_400),
            max_body_size: 2 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            jwt_clock_skew_secs: 60,
            rate_limit_per_ip: 100,
            rate_limit_burst: 50,
            insecure_forward_auth_errors: false,
        }
    }
}

/// Certificate paths; `ca_cert_path` makes client certificates mandatory.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_path: PathBuf,
    /// PEM private key.
    pub key_path: PathBuf,
    /// PEM CA for client certificates.
    pub ca_cert_path: Option<PathBuf>,
}

/// Per-connection limits: every queue is bounded and a slow consumer is disconnected.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Outbound messages queued per connection.
    pub outbound_channel_capacity: usize,
    /// How long a direct reply may wait for queue space before the connection is closed.
    pub send_timeout: Duration,
    /// A connection with no inbound frame for this long is closed.
    pub idle_timeout: Duration,
    /// WebSocket read buffer. tungstenite zero-fills the free part of it before every
    /// socket read, so the 128 KiB default cost ≈ 5% of server CPU under many small
    /// frames; larger messages simply take more reads.
    pub ws_read_buffer_size: usize,
    /// WebSocket write buffer target.
    pub ws_write_buffer_size: usize,
    /// WebSocket write buffer hard cap. tungstenite refuses a message that does not fit
    /// next to what is buffered, and the connection ends, so this must exceed the largest
    /// message the gateway sends. Leaf chunks and query pages are bounded by record
    /// counts, not bytes, so it matches the inbound message limit's default. The buffer
    /// only grows that far for such a message, but keeps its capacity afterwards.
    pub ws_max_write_buffer_size: usize,
    /// Largest inbound WebSocket message.
    pub max_message_size: usize,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            outbound_channel_capacity: 256,
            send_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            ws_read_buffer_size: 8 * 1024,
            ws_write_buffer_size: 128 * 1024,
            ws_max_write_buffer_size: 64 * 1024 * 1024 + 128 * 1024,
            max_message_size: 64 * 1024 * 1024,
        }
    }
}

/// Server-wide behaviour (http-admin-ops.md §5.3).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// This gateway's node id.
    pub node_id: String,
    /// Deadline for one operation (every internal call carries it).
    pub default_operation_timeout_ms: u64,
    /// In-flight operations before new ones are shed with a retryable error.
    pub max_concurrent_operations: u32,
    /// GC period (forwarded to the sync shards' settings).
    pub gc_interval_ms: u64,
    /// 271.
    pub partition_count: u32,
    /// Write validator settings.
    pub security: SecurityConfig,
    /// Cap on rows in one QUERY_RESP.
    pub max_query_records: u32,
    /// Most changed records pushed ahead of SYNC_RESP_ROOT (0 = no push).
    pub delta_push_limit: u32,
    /// Extra look-back of the delta push for shard clocks lagging the gateway's.
    pub delta_clock_skew_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            node_id: String::new(),
            default_operation_timeout_ms: 30_000,
            max_concurrent_operations: 1_000,
            gc_interval_ms: 60_000,
            partition_count: topgun_proto::partition::PARTITION_COUNT,
            security: SecurityConfig::default(),
            max_query_records: 10_000,
            delta_push_limit: 20_000,
            delta_clock_skew_ms: 0,
        }
    }
}

/// The write validator (core.md §3.2).
#[derive(Debug, Clone)]
pub struct SecurityConfig {
    /// Writes need an authenticated connection; `/sync` needs a token.
    pub require_auth: bool,
    /// Largest MsgPack-encoded record of a write; 0 = unlimited.
    pub max_value_bytes: u64,
    /// Per-map fallback permissions.
    pub default_permissions: Permissions,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            require_auth: false,
            max_value_bytes: 0,
            default_permissions: Permissions {
                read: true,
                write: true,
            },
        }
    }
}

/// Read / write flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permissions {
    /// May read.
    pub read: bool,
    /// May write.
    pub write: bool,
}
