//! Starts and stops the services of a single-process suite: storage, one sync shard,
//! one search replica and the gateway; in peer cluster mode also the membership that
//! shares the partitions with the other nodes.

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
use topgun_proto::grpc::cluster::membership_server::MembershipServer;
use topgun_proto::grpc::cluster::Member;
use topgun_proto::internal_auth::{TokenAttach, TokenCheck};
use topgun_storage::DataStore;

use crate::cluster::membership::Membership;
use crate::cluster::ownership::{self, Appliers};
use crate::cluster::ClusterOptions;

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
    /// Peer cluster flags (off unless `--cluster-port` or `--seed-nodes` is given).
    pub cluster: ClusterOptions,
}

async fn bind(addr: (&str, u16)) -> Result<(TcpListener, SocketAddr), SuiteError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| SuiteError::Start(format!("binding {}:{}: {e}", addr.0, addr.1)))?;
    let local = listener
        .local_addr()
        .map_err(|e| SuiteError::Start(e.to_string()))?;
    Ok((listener, local))
}

async fn loopback() -> Result<(TcpListener, SocketAddr), SuiteError> {
    bind(("127.0.0.1", 0)).await
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
    let clustered = options.cluster.enabled();
    let tls = topgun_proto::internal_tls::InternalTls::from_env()
        .map_err(SuiteError::Start)?
        .serves_tls();
    // Standalone: a per-process random token, so other local users cannot call the
    // loopback services. Clustered: the shared TOPGUN_INTERNAL_TOKEN, as peers call in.
    let token = if clustered {
        options.gateway.internal_token.clone().unwrap_or_default()
    } else {
        uuid::Uuid::new_v4().simple().to_string()
    };
    if clustered && token.is_empty() {
        tracing::warn!("the cluster port accepts calls without a token; set TOPGUN_INTERNAL_TOKEN (and internal TLS) outside a trusted network");
    }
    let token_opt = Some(token.clone()).filter(|t| !t.is_empty());
    let (storage_stop_tx, storage_stop) = watch::channel(false);
    let (sync_stop_tx, sync_stop) = watch::channel(false);

    // The null store keeps nothing: the shard reports writes persisted itself rather
    // than sending every row over a storage hop to be discarded.
    let null_storage = options.store.backend_name() == "null";
    let storage: Option<(JoinHandle<_>, SocketAddr)> = if null_storage {
        None
    } else {
        let (storage_listener, storage_addr) = loopback().await?;
        let task = tokio::spawn(topgun_storage::serve_with_listener(
            storage_listener,
            options.store,
            token_opt.clone(),
            until(storage_stop),
        ));
        Some((task, storage_addr))
    };

    // Clustered, the shard is the node's cluster endpoint on every interface.
    let (sync_listener, sync_addr) = if clustered {
        bind(("0.0.0.0", options.cluster.cluster_port.unwrap_or(0))).await?
    } else {
        loopback().await?
    };
    let me = Member {
        node_id: options.gateway.node_id.clone(),
        cluster_addr: format!("{}:{}", options.cluster.host, sync_addr.port()),
        client_addr: String::new(),
        client_scheme: String::new(),
    };
    let own_sync_addr = if clustered {
        ownership::sync_addr(&me, tls)
    } else {
        format!("http://{sync_addr}")
    };
    let token_attach = TokenAttach::new(token_opt.as_deref()).map_err(SuiteError::Start)?;
    let membership = Membership::new(me, options.cluster.seeds(), token_attach);
    let sync_config = topgun_sync::SyncConfig {
        grpc_addr: sync_addr,
        node_id: Some(format!("{}-sync", options.gateway.node_id)),
        // Clustered, membership hands out partitions; each gain loads from storage.
        start_unowned: clustered,
        storage_addr: storage.as_ref().map(|(_, addr)| format!("http://{addr}")),
        null_storage,
        // Clustered, the gateway and search replica know their own shard by the node's
        // advertised cluster address: keep those calls in-process too.
        in_process_aliases: vec![own_sync_addr.clone()],
        internal_token: token_opt.clone(),
        max_concurrent_operations: options.gateway.max_concurrent_operations as usize,
        default_operation_timeout_ms: options.gateway.default_operation_timeout_ms,
        ..Default::default()
    };
    let routes = tonic::service::Routes::new(tonic::service::interceptor::InterceptedService::new(
        MembershipServer::new(membership.clone()),
        TokenCheck::new(token_opt.clone()).interceptor(),
    ));
    let sync = tokio::spawn(topgun_sync::serve_with_routes(
        sync_listener,
        sync_config,
        routes,
        until(sync_stop),
    ));

    let (search_stop_tx, search_stop) = watch::channel(false);
    let (search_listener, search_addr) = loopback().await?;
    let (search_feeds, search_feeds_rx) = watch::channel(vec![own_sync_addr.clone()]);
    let search_config = topgun_search::SearchConfig {
        grpc_addr: search_addr,
        sync_addrs: vec![own_sync_addr.clone()],
        sync_addrs_updates: Some(search_feeds_rx),
        internal_token: token_opt.clone(),
        ..Default::default()
    };
    let search = tokio::spawn(topgun_search::serve_with_listener(
        search_listener,
        search_config,
        until(search_stop),
    ));

    let services = ServiceEndpoints {
        sync_addrs: vec![own_sync_addr],
        search_addrs: vec![format!("http://{search_addr}")],
        internal_token: token_opt.clone(),
    };
    let log = topgun_gateway::logging::init();
    let client_tls = options.gateway.tls_cert.is_some();
    let node_id = options.gateway.node_id.clone();
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
    let (cluster_stop_tx, cluster_stop) = watch::channel(false);
    if clustered {
        let scheme = if client_tls { "wss" } else { "ws" };
        membership.start_serving(format!("{}:{port}", options.cluster.host), scheme);
        let appliers = Appliers {
            node_id,
            tls,
            sync: gw.sync.shards()[0].client(),
            gateway: gw.clone(),
            search: search_feeds,
        };
        tokio::spawn(ownership::apply_views(
            appliers,
            membership.subscribe(),
            cluster_stop.clone(),
        ));
        tokio::spawn(membership.clone().run(cluster_stop.clone()));
        join_cluster(&gw, &membership, !options.cluster.seeds().is_empty()).await;
    } else {
        drop(search_feeds);
    }
    tracing::info!(port, "topgun ready");
    if options.announce_port {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "PORT={port}");
        let _ = out.flush();
    }

    let result = gateway.await;
    let _ = cluster_stop_tx.send(true);
    let _ = search_stop_tx.send(true);
    let _ = search.await;
    let _ = sync_stop_tx.send(true);
    let _ = sync.await;
    let _ = storage_stop_tx.send(true);
    if let Some((task, _)) = storage {
        let _ = task.await;
    }
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(SuiteError::Start(e.to_string())),
        Err(e) => Err(SuiteError::Start(e.to_string())),
    }
}

/// Gives a joining node a moment to meet its seeds and adopt the agreed map, so the
/// first clients already see the whole cluster; a node whose seeds are all down starts
/// alone after a few seconds and merges when they appear.
async fn join_cluster(
    gw: &topgun_gateway::state::Gateway,
    membership: &Membership,
    has_seeds: bool,
) {
    let mut views = membership.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let agreed = views.borrow_and_update().clone();
        let met = !has_seeds || agreed.live.len() > 1;
        let applied = gw
            .cluster
            .read()
            .as_ref()
            .is_some_and(|v| v.version >= agreed.version);
        if (met && applied) || tokio::time::Instant::now() > deadline {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), views.changed()).await;
    }
}

/// The `main` of both single-process binaries: validates the gateway options, opens the
/// store, runs the suite until SIGTERM/SIGINT, and exits 2 on bad configuration or 1 on
/// a start-up failure.
pub async fn run_binary(
    gateway: GatewayOptions,
    cluster: ClusterOptions,
    storage: topgun_storage::StorageConfig,
) {
    if let Err(e) = gateway.validate().and_then(|()| cluster.validate()) {
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
        cluster,
    };
    if let Err(e) = run(options, topgun_gateway::network::module::shutdown_signal()).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
