//! Starts and stops the services of a single-process suite: storage, one sync shard,
//! one search replica and the gateway.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use topgun_gateway::config::GatewayOptions;
use topgun_gateway::network::module::ServiceEndpoints;
use topgun_gateway::state::LifecycleState;
use topgun_storage::DataStore;

/// Errors while starting or running the suite.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    /// A service failed to start or stopped with an error.
    #[error("failed to start: {0}")]
    Start(String),
}

/// What to run.
#[derive(Debug)]
pub struct SuiteOptions {
    /// Gateway settings (port, auth, limits).
    pub gateway: GatewayOptions,
    /// The opened record store.
    pub store: Arc<dyn DataStore>,
    /// Print `PORT=<n>` on stdout once the gateway is ready.
    pub announce_port: bool,
}

async fn loopback() -> Result<(TcpListener, SocketAddr), SuiteError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| SuiteError::Start(e.to_string()))?;
    let addr = listener
        .local_addr()
        .map_err(|e| SuiteError::Start(e.to_string()))?;
    Ok((listener, addr))
}

async fn until(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Runs the suite until `shutdown` resolves; the gateway drains first, then the sync
/// shard, then storage, so every acknowledged write has reached the store.
pub async fn run(
    options: SuiteOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SuiteError> {
    // A per-process random token: other local users cannot call the loopback services.
    let token = uuid::Uuid::new_v4().simple().to_string();
    let (storage_stop_tx, storage_stop) = watch::channel(false);
    let (sync_stop_tx, sync_stop) = watch::channel(false);

    let (storage_listener, storage_addr) = loopback().await?;
    let storage: JoinHandle<_> = tokio::spawn(topgun_storage::serve_with_listener(
        storage_listener,
        options.store,
        Some(token.clone()),
        until(storage_stop),
    ));

    let (sync_listener, sync_addr) = loopback().await?;
    let sync_config = topgun_sync::SyncConfig {
        grpc_addr: sync_addr,
        node_id: Some(format!("{}-sync", options.gateway.node_id)),
        storage_addr: Some(format!("http://{storage_addr}")),
        internal_token: Some(token.clone()),
        max_concurrent_operations: options.gateway.max_concurrent_operations as usize,
        default_operation_timeout_ms: options.gateway.default_operation_timeout_ms,
        ..Default::default()
    };
    let sync = tokio::spawn(topgun_sync::serve_with_listener(
        sync_listener,
        sync_config,
        until(sync_stop),
    ));

    let (search_stop_tx, search_stop) = watch::channel(false);
    let (search_listener, search_addr) = loopback().await?;
    let search_config = topgun_search::SearchConfig {
        grpc_addr: search_addr,
        sync_addrs: vec![format!("http://{sync_addr}")],
        internal_token: Some(token.clone()),
        ..Default::default()
    };
    let search = tokio::spawn(topgun_search::serve_with_listener(
        search_listener,
        search_config,
        until(search_stop),
    ));

    let services = ServiceEndpoints {
        sync_addrs: vec![format!("http://{sync_addr}")],
        search_addrs: vec![format!("http://{search_addr}")],
        internal_token: Some(token),
    };
    let log = topgun_gateway::logging::init();
    let mut module = options.gateway.into_module(services);
    module.set_log_control(log);
    let port = module
        .start()
        .await
        .map_err(|e| SuiteError::Start(e.to_string()))?;
    let gw = module
        .gateway()
        .ok_or_else(|| SuiteError::Start("gateway state missing".into()))?;
    let gateway = tokio::spawn(module.serve(shutdown));

    // Ready = every shard answered (its data is loaded); only then announce the port.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while gw.state() == LifecycleState::Starting {
        if tokio::time::Instant::now() > deadline || gateway.is_finished() {
            return Err(SuiteError::Start(
                "services did not become ready within 60 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!(port, "topgun ready");
    if options.announce_port {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "PORT={port}");
        let _ = out.flush();
    }

    let result = gateway.await;
    let _ = search_stop_tx.send(true);
    let _ = search.await;
    let _ = sync_stop_tx.send(true);
    let _ = sync.await;
    let _ = storage_stop_tx.send(true);
    let _ = storage.await;
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(SuiteError::Start(e.to_string())),
        Err(e) => Err(SuiteError::Start(e.to_string())),
    }
}

/// The `main` of both single-process binaries: validates the gateway options, opens the
/// store, runs the suite until SIGTERM/SIGINT, and exits 2 on bad configuration or 1 on
/// a start-up failure.
pub async fn run_binary(gateway: GatewayOptions, storage: topgun_storage::StorageConfig) {
    if let Err(e) = gateway.validate() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    let store = match topgun_storage::open_store(&storage).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let options = SuiteOptions {
        gateway,
        store,
        announce_port: true,
    };
    if let Err(e) = run(options, topgun_gateway::network::module::shutdown_signal()).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
