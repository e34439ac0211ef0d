//! TopGun storage service: the only component that touches durable storage.
//!
//! * [`datastores`] — the [`DataStore`] trait with the PostgreSQL, embedded SQLite and
//!   null implementations;
//! * [`service`] — the `topgun.storage.v1.StorageService` gRPC front;
//! * [`metrics`] — its Prometheus metrics, served with health on the ops HTTP port;
//! * [`serve`] / [`serve_with_listener`] / [`open_store`] — entry points for the
//!   `storage-service` binary and for single-process binaries that embed the service.

pub mod config;
pub mod datastores;
pub mod error;
pub mod metrics;
pub mod model;
pub mod service;

pub use config::{Backend, StorageConfig};
pub use datastores::{DataStore, NullDataStore, PostgresDataStore, SqliteDataStore};
pub use error::{ErrorClass, StorageError};
pub use metrics::StorageMetrics;
pub use service::StorageGrpc;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use topgun_ops::{HealthState, OpsServer};
use topgun_proto::grpc::storage::storage_service_server::StorageServiceServer;
use topgun_proto::internal_auth::TokenCheck;

/// Largest gRPC message accepted or sent: a write batch of large values must fit.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// How long in-flight calls may run after shutdown was requested.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Server-side deadline of a call whose client sent none (a shorter `grpc-timeout`
/// from the client wins).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Name of the service in `/health`.
const SERVICE_NAME: &str = "storage-service";
/// Idle pooled connections are closed after this, so a pool never hoards connections
/// (or keeps ones a restarted database has already dropped).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Opens the store selected by `config`, creating its schema. An unreachable database
/// is retried with backoff for up to `STORAGE_CONNECT_TIMEOUT_SECS`; configuration
/// errors (unknown backend, bad table name, wrong password) fail at once.
pub async fn open_store(config: &StorageConfig) -> Result<Arc<dyn DataStore>, StorageError> {
    let backend = config.resolve_backend()?;
    datastores::validate_table_name(&config.table)?;
    let store: Arc<dyn DataStore> = match backend {
        Backend::Postgres { url } => {
            let options: PgConnectOptions =
                url.parse().map_err(|e: sqlx::Error| StorageError::Config {
                    setting: "DATABASE_URL",
                    reason: e.to_string(),
                })?;
            let options = options.application_name("topgun-storage");
            // Lazy: the pool connects on first use, so an unreachable database is
            // handled by the retry loop below rather than by a failed constructor.
            // `test_before_acquire` pings a pooled connection before handing it out,
            // so connections killed by a database restart are dropped, not reused.
            let pool = PgPoolOptions::new()
                .max_connections(config.pool_max.max(1))
                .min_connections(0)
                .acquire_timeout(config.acquire_timeout())
                .idle_timeout(Some(POOL_IDLE_TIMEOUT))
                .test_before_acquire(true)
                .connect_lazy_with(options);
            Arc::new(PostgresDataStore::new(pool, Some(config.table.clone()))?)
        }
        Backend::Sqlite { data_dir } => Arc::new(
            SqliteDataStore::open(
                &data_dir,
                Some(config.table.clone()),
                config.pool_max,
                config.acquire_timeout(),
            )
            .await?,
        ),
        Backend::Null => Arc::new(NullDataStore::new()),
    };
    initialize_with_retry(store.as_ref(), config.connect_timeout()).await?;
    tracing::info!(backend = store.backend_name(), table = %config.table, "storage ready");
    Ok(store)
}

/// Runs `initialize()` until it succeeds, a non-retryable error occurs, or `limit` has
/// passed. Backoff doubles from 200 ms to 5 s so a database that is still starting up
/// (compose, Kubernetes) is picked up quickly without hammering it.
async fn initialize_with_retry(store: &dyn DataStore, limit: Duration) -> Result<(), StorageError> {
    let started = Instant::now();
    let deadline = started + limit;
    let mut backoff = Duration::from_millis(200);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let attempt = match tokio::time::timeout(remaining, store.initialize()).await {
            Ok(result) => result,
            Err(_) => Err(StorageError::Unavailable(sqlx::Error::PoolTimedOut)),
        };
        let err = match attempt {
            Ok(()) => return Ok(()),
            Err(err) if err.is_retryable() => err,
            Err(err) => return Err(err),
        };
        if Instant::now() + backoff >= deadline {
            return Err(StorageError::StartupTimeout {
                waited: started.elapsed(),
                source: Box::new(err),
            });
        }
        tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "database not reachable yet");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Runs the storage service as configured until `shutdown` completes: binds the ops
/// port (`STORAGE_HTTP_ADDR`, unless empty; ready once the store is open, draining from
/// the shutdown signal until the service stopped), opens the store (see
/// [`open_store`]), binds `STORAGE_GRPC_ADDR`, then serves.
pub async fn serve(
    config: StorageConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StorageError> {
    let metrics = StorageMetrics::new();
    let health = HealthState::new(SERVICE_NAME);
    let ops = match topgun_ops::parse_http_addr("STORAGE_HTTP_ADDR", &config.http_addr)? {
        Some(addr) => Some(OpsServer::spawn(
            topgun_ops::bind("STORAGE_HTTP_ADDR", addr).await?,
            metrics.registry().clone(),
            health.clone(),
        )),
        None => None,
    };
    let served = open_and_serve(config, metrics, health.clone(), shutdown).await;
    // The ops port outlives the drain, so readiness reads 503 until the very end.
    health.set_draining();
    if let Some(ops) = ops {
        ops.stop().await;
    }
    served
}

/// The body of [`serve`] once the ops port is up.
async fn open_and_serve(
    config: StorageConfig,
    metrics: StorageMetrics,
    health: HealthState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StorageError> {
    let stop = StopSignal::new(shutdown);
    let store = tokio::select! {
        store = open_store(&config) => store?,
        () = stop.wait() => return Ok(()),
    };
    let listener = TcpListener::bind(config.grpc_addr)
        .await
        .map_err(|source| StorageError::Io {
            context: format!("cannot bind STORAGE_GRPC_ADDR {}", config.grpc_addr),
            source,
        })?;
    tracing::info!(addr = %config.grpc_addr, backend = store.backend_name(), "storage service listening");
    let backend = store.backend_name();
    let table = config.table.clone();
    health.set_details(move || {
        let mut doc = serde_json::Map::new();
        doc.insert("backend".into(), backend.into());
        doc.insert("table".into(), table.clone().into());
        doc
    });
    health.set_ready();
    serve_store(
        listener,
        store,
        config.internal_token,
        metrics,
        health,
        stop.wait(),
    )
    .await
}

/// Serves an already opened store on `listener` until `shutdown` completes, with the
/// gRPC health service (SERVING from the start, NOT_SERVING while draining) and server
/// reflection. With a non-empty `token`, every StorageService call must carry it.
/// In-flight calls get [`SHUTDOWN_GRACE`] to finish after `shutdown`. No ops port is
/// served (embedding processes have their own).
pub async fn serve_with_listener(
    listener: TcpListener,
    store: Arc<dyn DataStore>,
    token: Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StorageError> {
    let health = HealthState::new(SERVICE_NAME);
    health.set_ready();
    serve_store(
        listener,
        store,
        token,
        StorageMetrics::new(),
        health,
        shutdown,
    )
    .await
}

/// [`serve_with_listener`], recording into `metrics` and turning `ops_health` to
/// draining when `shutdown` completes.
async fn serve_store(
    listener: TcpListener,
    store: Arc<dyn DataStore>,
    token: Option<String>,
    metrics: StorageMetrics,
    ops_health: HealthState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StorageError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<StorageServiceServer<StorageGrpc>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(topgun_proto::grpc::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| StorageError::Config {
            setting: "reflection",
            reason: e.to_string(),
        })?;
    let storage = StorageServiceServer::new(StorageGrpc::new(store).with_metrics(metrics))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let storage = InterceptedService::new(storage, TokenCheck::new(token).interceptor());

    let (draining_tx, mut draining_rx) = watch::channel(false);
    let signal = async move {
        shutdown.await;
        tracing::info!("shutdown requested, draining storage service");
        ops_health.set_draining();
        health
            .set_not_serving::<StorageServiceServer<StorageGrpc>>()
            .await;
        let _ = draining_tx.send(true);
    };
    let server = topgun_proto::internal_tls::server_builder()
        .map_err(|reason| StorageError::Config {
            setting: "TOPGUN_INTERNAL_TLS_CERT",
            reason,
        })?
        .timeout(CALL_TIMEOUT)
        .layer(topgun_proto::trace_context::TraceLayer)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(storage)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), signal);
    // Graceful shutdown waits for every open call; a stalled LoadMap stream must not keep
    // the process alive forever, so draining is capped.
    let grace = async move {
        if draining_rx.wait_for(|draining| *draining).await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => result?,
        () = grace => tracing::warn!("shutdown grace period over, dropping remaining calls"),
    }
    tracing::info!("storage service stopped");
    Ok(())
}

/// A shutdown future that several places can wait on.
struct StopSignal(watch::Receiver<bool>);

impl StopSignal {
    fn new(shutdown: impl Future<Output = ()> + Send + 'static) -> Self {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = tx.send(true);
        });
        StopSignal(rx)
    }

    /// Completes once shutdown was requested (or its task is gone).
    fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    }
}
