//! The gateway's shared state: configuration, auth, service clients, live registries,
//! permission policies, metrics and lifecycle.

use crate::auth::{JwtVerifier, Principal};
use crate::error::GatewayError;
use crate::live::connections::Connections;
use crate::live::queries::QueryRegistry;
use crate::live::topics::TopicRegistry;
use crate::metrics::Metrics;
use crate::network::config::{NetworkConfig, ServerConfig};
use crate::rbac::{decide, Action, Decision, PolicyStore};
use crate::services::search::SearchReplicas;
use crate::services::sync_cluster::SyncCluster;
use parking_lot::{Mutex, RwLock};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;
use topgun_proto::hlc::{Hlc, Timestamp};

/// Lifecycle states (http-admin-ops.md §7); never goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum LifecycleState {
    /// Binding, waiting for services.
    Starting = 0,
    /// Serving.
    Ready = 1,
    /// Shutdown signalled: readiness fails, clients are being closed.
    Draining = 2,
    /// Drained.
    Stopped = 3,
}

impl LifecycleState {
    /// Lowercase name used by `/health`.
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleState::Starting => "starting",
            LifecycleState::Ready => "ready",
            LifecycleState::Draining => "draining",
            LifecycleState::Stopped => "stopped",
        }
    }
}

/// Admin login credentials (`TOPGUN_ADMIN_USERNAME` / `TOPGUN_ADMIN_PASSWORD`).
#[derive(Debug, Clone, Default)]
pub struct AdminCredentials {
    /// Username (default `admin`).
    pub username: String,
    /// Password; `None` disables login.
    pub password: Option<String>,
}

/// Shared state of one gateway process.
#[derive(Debug)]
pub struct Gateway {
    /// Identity used as the origin of writes, so this gateway can skip echoing them.
    pub gateway_id: String,
    /// Listener and connection settings.
    pub network: NetworkConfig,
    /// Runtime-changeable server settings.
    pub server: RwLock<ServerConfig>,
    /// `None` = authentication disabled.
    pub auth: Option<JwtVerifier>,
    /// The sync shards.
    pub sync: SyncCluster,
    /// Peer cluster membership as last agreed (None = a single node or a static suite).
    pub cluster: RwLock<Option<Arc<crate::cluster_view::ClusterView>>>,
    /// Search replicas, if any.
    pub search: Option<SearchReplicas>,
    /// Open connections.
    pub connections: Connections,
    /// Live queries.
    pub queries: QueryRegistry,
    /// Topic subscriptions.
    pub topics: TopicRegistry,
    /// Permission policies.
    pub policies: PolicyStore,
    /// Metrics.
    pub metrics: Metrics,
    /// Admin login.
    pub admin: AdminCredentials,
    log: RwLock<Option<crate::logging::LogControl>>,
    hlc: Mutex<Hlc>,
    state: AtomicU8,
    started: Instant,
    next_conn_id: AtomicU64,
    in_flight: AtomicU64,
    /// Admission control for operations (`max_concurrent_operations`).
    pub permits: Semaphore,
    permits_configured: AtomicU64,
    total_operations: AtomicU64,
}

impl Gateway {
    /// Assembles the state; the gateway starts in [`LifecycleState::Starting`].
    pub fn new(
        network: NetworkConfig,
        server: ServerConfig,
        auth: Option<JwtVerifier>,
        sync: SyncCluster,
        search: Option<SearchReplicas>,
        admin: AdminCredentials,
    ) -> Arc<Self> {
        let node_id = if server.node_id.is_empty() {
            "gateway".to_string()
        } else {
            server.node_id.clone()
        };
        let permits = server.max_concurrent_operations as usize;
        Arc::new(Gateway {
            gateway_id: uuid::Uuid::new_v4().to_string(),
            network,
            server: RwLock::new(server),
            auth,
            sync,
            cluster: RwLock::new(None),
            search,
            connections: Connections::default(),
            queries: QueryRegistry::default(),
            topics: TopicRegistry::default(),
            policies: PolicyStore::default(),
            metrics: Metrics::new(),
            admin,
            log: RwLock::new(None),
            hlc: Mutex::new(Hlc::new(node_id)),
            state: AtomicU8::new(LifecycleState::Starting as u8),
            started: Instant::now(),
            next_conn_id: AtomicU64::new(1),
            in_flight: AtomicU64::new(0),
            permits: Semaphore::new(permits),
            permits_configured: AtomicU64::new(permits as u64),
            total_operations: AtomicU64::new(0),
        })
    }

    /// Installs the handle that lets the admin API change the log filter.
    pub fn set_log_control(&self, control: Option<crate::logging::LogControl>) {
        *self.log.write() = control;
    }

    /// The log filter handle, if logging was initialised by this process.
    pub fn log_control(&self) -> Option<crate::logging::LogControl> {
        self.log.read().clone()
    }

    /// This gateway's node id.
    pub fn node_id(&self) -> String {
        self.hlc.lock().node_id().to_string()
    }

    /// A fresh server HLC timestamp.
    pub fn now(&self) -> Timestamp {
        self.hlc.lock().now()
    }

    /// Absorbs a client timestamp into the server clock (non-strict).
    pub fn observe(&self, ts: &Timestamp) {
        let _ = self.hlc.lock().update(ts);
    }

    /// Current lifecycle state.
    pub fn state(&self) -> LifecycleState {
        match self.state.load(Ordering::SeqCst) {
            0 => LifecycleState::Starting,
            1 => LifecycleState::Ready,
            2 => LifecycleState::Draining,
            _ => LifecycleState::Stopped,
        }
    }

    /// Moves forward in the lifecycle (never back).
    pub fn advance(&self, to: LifecycleState) {
        self.state.fetch_max(to as u8, Ordering::SeqCst);
    }

    /// Seconds since start.
    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// A new connection id.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Requests and WebSocket dispatches in progress.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Counts one unit of in-flight work until the guard drops.
    pub fn track(self: &Arc<Self>) -> InFlightGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.clone())
    }

    /// Operations that completed (for `/api/status`).
    pub fn total_operations(&self) -> u64 {
        self.total_operations.load(Ordering::Relaxed)
    }

    /// Records a completed operation.
    pub fn record_operation(
        &self,
        service: &str,
        started: Instant,
        result: Result<(), &GatewayError>,
    ) {
        self.total_operations.fetch_add(1, Ordering::Relaxed);
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.metrics
            .operations
            .with_label_values(&[service, outcome])
            .inc();
        self.metrics
            .operation_duration
            .with_label_values(&[service])
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = result {
            self.metrics
                .operation_errors
                .with_label_values(&[service, e.metric_label()])
                .inc();
        }
    }

    /// Applies a new `max_concurrent_operations` to admission control.
    pub fn set_max_concurrent_operations(&self, max: u32) {
        let old = self
            .permits_configured
            .swap(u64::from(max), Ordering::SeqCst) as i64;
        let diff = i64::from(max) - old;
        if diff > 0 {
            self.permits.add_permits(diff as usize);
        } else if diff < 0 {
            self.permits.forget_permits((-diff) as usize);
        }
        self.server.write().max_concurrent_operations = max;
    }

    /// Default operation deadline in ms.
    pub fn operation_timeout_ms(&self) -> u64 {
        self.server.read().default_operation_timeout_ms
    }

    /// RBAC read check (core.md §3.3).
    pub fn check_read(
        &self,
        principal: Option<&Principal>,
        resource: &str,
    ) -> Result<(), GatewayError> {
        if !system_access_allowed(principal, resource) {
            return Err(GatewayError::Forbidden(format!(
                "Access Denied for map {resource}"
            )));
        }
        if !self.server.read().security.default_permissions.read {
            return Err(GatewayError::Forbidden(format!(
                "Access Denied for map {resource}"
            )));
        }
        match decide(
            &self.policies,
            principal,
            Action::Read,
            resource,
            &rmpv::Value::Nil,
        ) {
            Decision::Allow => Ok(()),
            Decision::Deny(_) => Err(GatewayError::Forbidden(format!(
                "Access Denied for map {resource}"
            ))),
        }
    }

    /// RBAC write check of one op with its data.
    pub fn check_write(
        &self,
        principal: Option<&Principal>,
        resource: &str,
        data: &rmpv::Value,
    ) -> Result<(), GatewayError> {
        if !system_access_allowed(principal, resource) {
            return Err(GatewayError::Forbidden(format!(
                "write access denied for map: {resource}"
            )));
        }
        match decide(&self.policies, principal, Action::Write, resource, data) {
            Decision::Allow => Ok(()),
            Decision::Deny(_) => Err(GatewayError::Forbidden(format!(
                "write access denied for map: {resource}"
            ))),
        }
    }
}

/// `$sys/` maps hold suite state (e.g. policies): only admins may touch them.
fn system_access_allowed(principal: Option<&Principal>, resource: &str) -> bool {
    !resource.starts_with(crate::live::policy_sync::SYSTEM_PREFIX)
        || principal.is_some_and(Principal::is_admin)
}

/// Decrements the in-flight counter on drop.
#[derive(Debug)]
pub struct InFlightGuard(Arc<Gateway>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
