//! Running the service: engine, ingestion, gRPC server with health and reflection, the
//! optional ops HTTP port (health, metrics), graceful shutdown.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use topgun_ops::{HealthState, OpsServer};
use topgun_proto::grpc::search::search_service_server::SearchServiceServer;
use topgun_proto::internal_auth::TokenCheck;

use crate::config::SearchConfig;
use crate::engine::SearchEngine;
use crate::error::SearchError;
use crate::ingest::Ingestor;
use crate::metrics::SearchMetrics;
use crate::service::SearchGrpc;

/// How long in-flight calls (live searches included) may run after shutdown was
/// requested.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Server-side deadline of a unary call whose client sent none (a shorter
/// `grpc-timeout` from the client wins). Live searches end when their client leaves.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Name of the service in `/health`.
const SERVICE_NAME: &str = "search-service";

/// Runs the search service as configured until `shutdown` completes: binds
/// `SEARCH_GRPC_ADDR` and the ops port (`SEARCH_HTTP_ADDR`, unless empty), then serves
/// (see [`serve_with_ops`]).
pub async fn serve(
    config: SearchConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SearchError> {
    let listener = TcpListener::bind(config.grpc_addr)
        .await
        .map_err(|source| SearchError::Io {
            context: format!("cannot bind SEARCH_GRPC_ADDR {}", config.grpc_addr),
            source,
        })?;
    let local = listener
        .local_addr()
        .map_or_else(|_| config.grpc_addr.to_string(), |a| a.to_string());
    tracing::info!(addr = %local, "search service listening");
    let ops = match topgun_ops::parse_http_addr("SEARCH_HTTP_ADDR", &config.http_addr)? {
        Some(addr) => Some(topgun_ops::bind("SEARCH_HTTP_ADDR", addr).await?),
        None => None,
    };
    serve_with_ops(listener, ops, config, shutdown).await
}

/// Serves on `listener`, without an ops port, until `shutdown` completes: starts the
/// engine and one ingestion task per shard of `SYNC_ADDRS` (then of each set sent on
/// `sync_addrs_updates`, when given), and the gRPC server with the health service
/// (NOT_SERVING until every initial shard's first scan is searchable, NOT_SERVING
/// again while draining) and server reflection. With a non-empty internal
/// token, every SearchService call must carry it and every call to the shards carries
/// it.
pub async fn serve_with_listener(
    listener: TcpListener,
    config: SearchConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SearchError> {
    serve_with_ops(listener, None, config, shutdown).await
}

/// [`serve_with_listener`] plus, when given, the ops HTTP port on `ops`: ready once the
/// bootstrap is searchable, draining from the shutdown signal until the service
/// stopped.
pub async fn serve_with_ops(
    listener: TcpListener,
    ops: Option<TcpListener>,
    config: SearchConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SearchError> {
    let engine = SearchEngine::start(config.engine_config())?;
    run(listener, ops, config, engine, shutdown).await
}

/// [`serve_with_listener`] with an engine the caller started, so an embedding process
/// keeps a handle on it (e.g. to call [`SearchEngine::set_indexed_maps`]). The engine's
/// indexed-map setting wins over `SEARCH_MAPS`; the engine is shut down on return.
pub async fn serve_engine(
    listener: TcpListener,
    config: SearchConfig,
    engine: SearchEngine,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SearchError> {
    run(listener, None, config, engine, shutdown).await
}

/// Serves `engine` on `listener`, and on `ops` when given; see [`serve_with_ops`].
async fn run(
    listener: TcpListener,
    ops: Option<TcpListener>,
    config: SearchConfig,
    engine: SearchEngine,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SearchError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let addrs = config.shard_addrs();
    if addrs.is_empty() && config.sync_addrs_updates.is_none() {
        tracing::warn!("SYNC_ADDRS is empty: nothing will be indexed");
    }
    let ingest = Ingestor::start(&engine, &addrs, config.internal_token.as_deref(), stop_rx)?;
    if let Some(updates) = config.sync_addrs_updates.clone() {
        ingest.follow_updates(updates);
    }

    let metrics = SearchMetrics::new();
    metrics.watch(&engine, Some(&ingest))?;
    let ops_health = HealthState::new(SERVICE_NAME);
    ops_health.set_details(health_details(ingest.clone()));
    let ops_server = ops
        .map(|listener| OpsServer::spawn(listener, metrics.registry().clone(), ops_health.clone()));

    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::NotServing).await;
    let ready = {
        let ingest = ingest.clone();
        let health = health.clone();
        let ops_health = ops_health.clone();
        tokio::spawn(async move {
            ingest.wait_ready().await;
            set_health(&health, ServingStatus::Serving).await;
            ops_health.set_ready();
            tracing::info!("bootstrap finished, serving");
        })
    };
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(topgun_proto::grpc::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| SearchError::Config {
            setting: "reflection",
            reason: e.to_string(),
        })?;
    let search = SearchServiceServer::new(
        SearchGrpc::new(engine.clone(), Some(ingest)).with_metrics(metrics),
    );
    let search = InterceptedService::new(
        search,
        TokenCheck::new(config.internal_token.clone()).interceptor(),
    );

    let (draining_tx, mut draining_rx) = watch::channel(false);
    let signal = {
        let health = health.clone();
        let engine = engine.clone();
        let ops_health = ops_health.clone();
        async move {
            shutdown.await;
            tracing::info!("shutdown requested, draining search service");
            ops_health.set_draining();
            ready.abort();
            set_health(&health, ServingStatus::NotServing).await;
            engine.end_live_searches(&tonic::Status::unavailable("search service shutting down"));
            let _ = draining_tx.send(true);
        }
    };
    let server = topgun_proto::internal_tls::server_builder()
        .map_err(|reason| SearchError::Config {
            setting: "TOPGUN_INTERNAL_TLS_CERT",
            reason,
        })?
        .timeout(CALL_TIMEOUT)
        .layer(topgun_proto::trace_context::TraceLayer)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(search)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), signal);
    // Live searches are endless streams: graceful shutdown would wait for them forever,
    // so draining is capped.
    let grace = async move {
        if draining_rx.wait_for(|draining| *draining).await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let result = tokio::select! {
        result = server => result.map_err(SearchError::from),
        () = grace => {
            tracing::warn!("shutdown grace period over, dropping remaining calls");
            Ok(())
        }
    };
    let _ = stop_tx.send(true);
    engine.shutdown().await;
    // The ops port stays up through the drain, so readiness reads 503 until the end.
    ops_health.set_draining();
    if let Some(ops_server) = ops_server {
        ops_server.stop().await;
    }
    tracing::info!("search service stopped");
    result
}

/// The replica's own `/health` fields: whether the bootstrap is done, and per shard
/// its connection and indexed position.
fn health_details(
    ingest: Ingestor,
) -> impl Fn() -> serde_json::Map<String, serde_json::Value> + Send + Sync + 'static {
    move || {
        let shards: Vec<serde_json::Value> = ingest
            .progress()
            .iter()
            .map(|p| {
                serde_json::json!({
                    "address": p.addr,
                    "ready": p.ready.load(Ordering::Relaxed),
                    "connected": p.connected.load(Ordering::Relaxed),
                    "indexed_seq": p.committed_seq.load(Ordering::Relaxed),
                    "scans": p.scans.load(Ordering::Relaxed),
                })
            })
            .collect();
        let mut doc = serde_json::Map::new();
        doc.insert("bootstrapped".into(), ingest.is_ready().into());
        doc.insert("shards".into(), shards.into());
        doc
    }
}

/// Sets both the whole-server status (`""`, what plain probes ask) and the service's.
async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health
        .set_service_status(
            <SearchServiceServer<SearchGrpc> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
}
