//! Server lifecycle: build the shard, serve gRPC (sync service, health, reflection, and
//! any extra services the caller brings) and optionally the ops HTTP port, load from storage before reporting SERVING (and ready),
//! run GC and the storage retry in the background, and drain on shutdown.

use crate::admission::Admission;
use crate::config::{SyncConfig, ValidatedConfig};
use crate::error::SyncError;
use crate::metrics::SyncMetrics;
use crate::persistence::Persistence;
use crate::service::SyncGrpc;
use crate::shard::Shard;
use crate::shutdown::stopped;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Routes;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use topgun_ops::{HealthState, OpsServer};
use topgun_proto::grpc::sync::sync_service_server::SyncServiceServer;
use topgun_proto::grpc::FILE_DESCRIPTOR_SET;
use topgun_proto::internal_auth::TokenCheck;
use topgun_proto::trace_context::TraceLayer;

/// How often rows waiting for storage are retried.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Gateways send batches of many ops; allow requests larger than tonic's 4 MiB default.
const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;
/// A change event carries a record and the one it replaced, each up to a request's
/// size, so answers may be larger than requests.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Storage calls get this long, capped by the operation timeout.
const STORAGE_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Name of the service in `/health`.
const SERVICE_NAME: &str = "sync-service";

/// Binds `config.grpc_addr` and the ops port (`config.http_addr`, unless empty) and
/// serves until `shutdown` completes.
pub async fn serve(
    config: SyncConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SyncError> {
    let cfg = config.validate()?;
    let listener = TcpListener::bind(config.grpc_addr).await?;
    let ops = match cfg.http_addr {
        Some(addr) => Some(topgun_ops::bind("SYNC_HTTP_ADDR", addr).await?),
        None => None,
    };
    serve_with_ops(listener, ops, config, shutdown).await
}

/// Serves on an already bound listener (the single-process binaries bind
/// `127.0.0.1:0` themselves), without an ops port, until `shutdown` completes; see
/// [`serve_with_ops`].
pub async fn serve_with_listener(
    listener: TcpListener,
    config: SyncConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SyncError> {
    serve_with_ops(listener, None, config, shutdown).await
}

/// Like [`serve_with_listener`], with `extra` services (such as the cluster membership
/// service of the single-process binaries) served on the same listener, next to the
/// sync, health and reflection services. They get no internal-token check of ours:
/// wrap them in one if they need it.
pub async fn serve_with_routes(
    listener: TcpListener,
    config: SyncConfig,
    extra: Routes,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SyncError> {
    serve_inner(listener, None, config, extra, shutdown).await
}

/// Serves gRPC on `listener` and, when given, the ops HTTP port on `ops` (ready once
/// the partitions are loaded, draining from the shutdown signal until the shard
/// stopped) until `shutdown` completes; in-flight calls then get up to the operation
/// timeout to finish, and rows still waiting for storage get one last write.
pub async fn serve_with_ops(
    listener: TcpListener,
    ops: Option<TcpListener>,
    config: SyncConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SyncError> {
    serve_inner(listener, ops, config, Routes::default(), shutdown).await
}

async fn serve_inner(
    listener: TcpListener,
    ops: Option<TcpListener>,
    config: SyncConfig,
    extra: Routes,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SyncError> {
    let cfg = config.validate()?;
    let persistence = match &cfg.storage_addr {
        Some(addr) => {
            let timeout = STORAGE_CALL_TIMEOUT.min(cfg.operation_timeout);
            Some(Arc::new(Persistence::connect(
                addr,
                cfg.internal_token.as_deref(),
                timeout,
            )?))
        }
        None => None,
    };
    let shard = Arc::new(Shard::new(&cfg, persistence));
    let (stop_tx, stop_rx) = watch::channel(false);

    let metrics = Arc::new(SyncMetrics::new());
    metrics.watch_shard(&shard)?;
    let ops_health = HealthState::new(SERVICE_NAME);
    ops_health.set_details(health_details(&shard, &cfg));
    // Started before the load so probes see "starting" rather than a closed port.
    let ops_server = ops
        .map(|listener| OpsServer::spawn(listener, metrics.registry().clone(), ops_health.clone()));

    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::NotServing).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| SyncError::Internal(format!("reflection service: {e}")))?;

    let admission = Admission::new(cfg.max_concurrent_operations, cfg.operation_timeout);
    let in_flight = admission.clone();
    let grpc = SyncGrpc::new(Arc::clone(&shard), admission, stop_rx.clone())
        .with_metrics(Arc::clone(&metrics));
    let sync = SyncServiceServer::new(grpc.clone())
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES);
    let sync = InterceptedService::new(
        sync,
        TokenCheck::new(cfg.internal_token.clone()).interceptor(),
    );

    let local_addr = listener.local_addr()?;
    // Callers in this process (the single-process binaries' gateway and search replica)
    // reach the shard without a socket until the drain starts.
    let mut aliases = in_process_addrs(local_addr);
    aliases.extend(cfg.in_process_aliases.iter().cloned());
    // Followers in this process also read the change feed without encoding its batches.
    let mut in_process = Some((
        topgun_proto::in_process::serve(
            &aliases,
            TraceLayer::around(
                extra
                    .clone()
                    .add_service(health_service.clone())
                    .add_service(sync.clone()),
            ),
        ),
        topgun_proto::local_feed::serve(&aliases, Arc::new(grpc)),
    ));
    tracing::info!(
        %local_addr,
        node_id = %cfg.node_id,
        shard = cfg.shard_index,
        shards = cfg.shard_count,
        partitions = cfg.partitions.as_slice().len(),
        storage = cfg.storage_addr.as_deref().unwrap_or("none (memory only)"),
        "sync shard listening"
    );

    let background = tokio::spawn(run_background(
        Arc::clone(&shard),
        health.clone(),
        ops_health.clone(),
        cfg.clone(),
        stop_rx.clone(),
    ));

    let mut server_stop = stop_rx.clone();
    let server = topgun_proto::internal_tls::server_builder()
        .map_err(SyncError::Config)?
        // Change-feed streams idle for long stretches; pings keep them (and the
        // proxies between) alive and detect dead peers.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .tcp_nodelay(true)
        .layer(TraceLayer)
        .add_routes(extra)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(sync)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                stopped(&mut server_stop).await;
            },
        );
    tokio::pin!(server);

    let served = tokio::select! {
        result = &mut server => result.map_err(SyncError::from),
        () = shutdown => {
            tracing::info!("shutdown requested, draining");
            in_process.take();
            ops_health.set_draining();
            set_health(&health, ServingStatus::NotServing).await;
            stop_tx.send_replace(true);
            match tokio::time::timeout(cfg.operation_timeout, &mut server).await {
                Ok(result) => result.map_err(SyncError::from),
                Err(_) => {
                    tracing::warn!("in-flight calls did not finish in time; stopping anyway");
                    Ok(())
                }
            }
        }
    };
    in_process.take();
    stop_tx.send_replace(true);
    // In-process calls hold no connection the server waited for: wait for those admitted.
    if tokio::time::timeout(cfg.operation_timeout, in_flight.drained())
        .await
        .is_err()
    {
        tracing::warn!("in-process calls did not finish in time; stopping anyway");
    }
    if let Err(err) = background.await {
        tracing::error!(error = %err, "background task failed");
    }
    final_flush(&shard).await;
    // The ops port stays up through the drain, so readiness reads 503 until the end.
    ops_health.set_draining();
    if let Some(ops_server) = ops_server {
        ops_server.stop().await;
    }
    tracing::info!("sync shard stopped");
    served
}

/// The URLs in-process callers may know this listener by.
fn in_process_addrs(local: SocketAddr) -> Vec<String> {
    let port = local.port();
    let mut hosts = vec![local.ip().to_string()];
    if local.ip().is_unspecified() || local.ip().is_loopback() {
        hosts.extend(["127.0.0.1".to_string(), "localhost".to_string()]);
    }
    hosts
        .iter()
        .flat_map(|host| {
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.clone()
            };
            [
                format!("http://{host}:{port}"),
                format!("https://{host}:{port}"),
            ]
        })
        .collect()
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health
        .set_service_status("topgun.sync.v1.SyncService", status)
        .await;
}

/// Loads the shard, flips health to SERVING, then runs GC and the storage retry until
/// shutdown.
async fn run_background(
    shard: Arc<Shard>,
    health: HealthReporter,
    ops_health: HealthState,
    cfg: ValidatedConfig,
    mut stop: watch::Receiver<bool>,
) {
    match shard.load_from_storage(stop.clone()).await {
        Ok(rows) => tracing::info!(rows, "partitions loaded"),
        Err(err) => {
            tracing::info!(reason = %err, "start-up load abandoned");
            return;
        }
    }
    shard.mark_ready();
    set_health(&health, ServingStatus::Serving).await;
    ops_health.set_ready();

    let start = tokio::time::Instant::now();
    let mut gc = tokio::time::interval_at(start + cfg.gc_interval, cfg.gc_interval);
    gc.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retry = tokio::time::interval_at(start + RETRY_INTERVAL, RETRY_INTERVAL);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stopped(&mut stop) => break,
            _ = gc.tick() => match shard.gc_round().await {
                Ok(report) if report.expired + report.pruned > 0 => {
                    tracing::info!(expired = report.expired, pruned = report.pruned, "gc round");
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "gc round could not persist; rows kept pending"),
            },
            _ = retry.tick() => match shard.flush_pending().await {
                Ok(0) => {}
                Ok(rows) => tracing::info!(rows, "pending rows persisted"),
                Err(err) => tracing::warn!(error = %err, pending = shard.pending_rows(), "storage still unavailable"),
            },
        }
    }
}

/// The shard's own `/health` fields: identity, ownership, feed head, pending rows.
fn health_details(
    shard: &Arc<Shard>,
    cfg: &ValidatedConfig,
) -> impl Fn() -> serde_json::Map<String, serde_json::Value> + Send + Sync + 'static {
    let shard = Arc::clone(shard);
    let storage = cfg.storage_addr.is_some();
    move || {
        let mut doc = serde_json::Map::new();
        doc.insert("node_id".into(), shard.node_id().into());
        doc.insert("shard_index".into(), shard.shard_index().into());
        doc.insert("shard_count".into(), shard.shard_count().into());
        let ownership = shard.ownership();
        doc.insert(
            "partitions".into(),
            ownership.partitions.as_slice().len().into(),
        );
        doc.insert("ownership_version".into(), ownership.version.into());
        doc.insert("loaded".into(), shard.is_ready().into());
        doc.insert("storage".into(), storage.into());
        doc.insert("pending_rows".into(), shard.pending_rows().into());
        doc.insert("change_feed_epoch".into(), shard.feed().epoch().into());
        doc.insert(
            "change_feed_last_seq".into(),
            shard.feed().last_seq().into(),
        );
        doc
    }
}

/// One bounded attempt to persist what is still pending before the process exits.
async fn final_flush(shard: &Shard) {
    let deadline = tokio::time::Instant::now() + STORAGE_CALL_TIMEOUT;
    while shard.pending_rows() > 0 && tokio::time::Instant::now() < deadline {
        if let Err(err) = shard.flush_pending().await {
            tracing::error!(error = %err, pending = shard.pending_rows(), "rows not persisted at shutdown");
            return;
        }
    }
}
