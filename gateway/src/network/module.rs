//! The embeddable gateway: `NetworkModule::new(config)`, wire services, `start()` to bind
//! (returns the real port), then `serve(shutdown)` until the shutdown future resolves,
//! followed by the drain of http-admin-ops.md §7.

use super::config::{NetworkConfig, ServerConfig};
use crate::auth::JwtVerifier;
use crate::http::{admin, dashboard, health, openapi, rate_limit, sync};
use crate::live::feed;
use crate::services::search::SearchReplicas;
use crate::services::sync_cluster::SyncCluster;
use crate::state::{AdminCredentials, Gateway, LifecycleState};
use crate::ws;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use topgun_proto::internal_auth::TokenAttach;

/// How long in-flight work may take to finish after the shutdown signal.
pub const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// Where the gateway finds the other services.
#[derive(Debug, Clone, Default)]
pub struct ServiceEndpoints {
    /// gRPC URLs of the sync shards, in shard order.
    pub sync_addrs: Vec<String>,
    /// gRPC URLs of the search replicas.
    pub search_addrs: Vec<String>,
    /// Shared internal token.
    pub internal_token: Option<String>,
}

/// Errors of starting or serving the gateway.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// Invalid configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Binding or serving failed.
    #[error("network error: {0}")]
    Io(#[from] std::io::Error),
    /// `serve` before `start`.
    #[error("start() must be called before serve()")]
    NotStarted,
}

/// The gateway as a library component.
pub struct NetworkModule {
    config: NetworkConfig,
    server: ServerConfig,
    services: ServiceEndpoints,
    jwt_secret: Option<String>,
    admin: AdminCredentials,
    admin_dir: Option<PathBuf>,
    log: Option<crate::logging::LogControl>,
    listener: Option<TcpListener>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    gateway: Option<Arc<Gateway>>,
}

impl std::fmt::Debug for NetworkModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkModule")
            .field("config", &self.config)
            .field("services", &self.services)
            .field("tls", &self.tls.is_some())
            .field("started", &self.listener.is_some())
            .finish()
    }
}

impl NetworkModule {
    /// A module with the given network settings; binds nothing yet.
    pub fn new(config: NetworkConfig) -> Self {
        NetworkModule {
            config,
            server: ServerConfig::default(),
            services: ServiceEndpoints::default(),
            jwt_secret: None,
            admin: AdminCredentials {
                username: "admin".into(),
                password: None,
            },
            admin_dir: None,
            log: None,
            listener: None,
            tls: None,
            gateway: None,
        }
    }

    /// Server-wide settings.
    pub fn set_server_config(&mut self, server: ServerConfig) {
        self.server = server;
    }

    /// Backing service addresses.
    pub fn set_services(&mut self, services: ServiceEndpoints) {
        self.services = services;
    }

    /// JWT secret (HMAC) or RSA public key; `None` disables authentication.
    pub fn set_jwt_secret(&mut self, secret: Option<String>) {
        self.jwt_secret = secret.filter(|s| !s.is_empty());
    }

    /// Admin login credentials.
    pub fn set_admin(&mut self, admin: AdminCredentials) {
        self.admin = admin;
    }

    /// Folder of the admin dashboard served at `/admin`.
    pub fn set_admin_dir(&mut self, dir: Option<PathBuf>) {
        self.admin_dir = dir;
    }

    /// Runtime log-level control for the settings API.
    pub fn set_log_control(&mut self, log: Option<crate::logging::LogControl>) {
        self.log = log;
    }

    /// The shared state (after `start`).
    pub fn gateway(&self) -> Option<Arc<Gateway>> {
        self.gateway.clone()
    }

    /// Binds `host:port` and builds the state; returns the bound port.
    pub async fn start(&mut self) -> Result<u16, ModuleError> {
        let token = TokenAttach::new(self.services.internal_token.as_deref())
            .map_err(ModuleError::Config)?;
        let timeout = Duration::from_millis(self.server.default_operation_timeout_ms);
        let sync = SyncCluster::new(&self.services.sync_addrs, token.clone(), timeout)
            .map_err(ModuleError::Config)?;
        let search = if self.services.search_addrs.is_empty() {
            None
        } else {
            Some(
                SearchReplicas::new(&self.services.search_addrs, token, timeout)
                    .map_err(ModuleError::Config)?,
            )
        };
        let auth = match &self.jwt_secret {
            Some(secret) => Some(
                JwtVerifier::from_secret(secret, self.config.jwt_clock_skew_secs)
                    .map_err(|e| ModuleError::Config(e.to_string()))?,
            ),
            None => None,
        };
        // Certificate problems are start-up errors, not first-connection surprises.
        self.tls = match &self.config.tls {
            Some(tls) => Some(super::tls::acceptor(tls).map_err(ModuleError::Config)?),
            None => None,
        };
        let listener = TcpListener::bind((self.config.host.as_str(), self.config.port)).await?;
        let port = listener.local_addr()?.port();
        self.config.port = port;
        let gateway = Gateway::new(
            self.config.clone(),
            self.server.clone(),
            auth,
            sync,
            search,
            self.admin.clone(),
        );
        gateway.set_log_control(self.log.clone());
        self.listener = Some(listener);
        self.gateway = Some(gateway);
        Ok(port)
    }

    /// Serves until `shutdown` resolves, then drains: readiness fails at once, every
    /// WebSocket gets Close 1000 "server shutting down", in-flight work gets up to 30 s.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ModuleError> {
        let (Some(listener), Some(gw)) = (self.listener, self.gateway) else {
            return Err(ModuleError::NotStarted);
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        feed::spawn_consumers(gw.clone(), stop_rx.clone());
        tokio::spawn(track_shards(gw.clone(), stop_rx.clone()));
        tokio::spawn(discover_search_replicas(gw.clone(), stop_rx));
        let app = router(gw.clone(), self.admin_dir);

        // Drain while still listening, so readiness answers 503 during the drain:
        // every WebSocket gets a Close, in-flight work gets up to 30 s, then the
        // listener closes (which also waits for open HTTP requests).
        let drain_gw = gw.clone();
        let drain = async move {
            shutdown.await;
            drain_gw.advance(LifecycleState::Draining);
            tracing::info!("shutdown requested: draining");
            for conn in drain_gw.connections.all() {
                conn.close_after_pending(1000, "server shutting down").await;
            }
            let deadline = tokio::time::Instant::now() + DRAIN_GRACE;
            while drain_gw.in_flight() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if drain_gw.in_flight() > 0 {
                tracing::warn!(
                    in_flight = drain_gw.in_flight(),
                    "drain grace period expired"
                );
            }
        };
        match self.tls {
            Some(acceptor) => serve_tls(listener, acceptor, app, drain).await,
            None => {
                use axum::serve::ListenerExt;
                // Small protocol frames (acks, PONG) must not wait for Nagle's algorithm.
                let listener = listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
                )
                .with_graceful_shutdown(drain)
                .await?
            }
        }
        let _ = stop_tx.send(true);
        if gw.in_flight() == 0 {
            gw.advance(LifecycleState::Stopped);
        }
        Ok(())
    }
}

/// Accepts TLS connections until `drain` resolves; each connection is served by hyper
/// with upgrades enabled, so WebSockets work over `wss://`.
async fn serve_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    drain: impl Future<Output = ()>,
) {
    tokio::pin!(drain);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut drain => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => {
                    let _ = pair.0.set_nodelay(true);
                    pair
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                };
            // Same peer information as the plain listener, for per-IP rate limiting.
            let app = app.layer(axum::Extension(axum::extract::ConnectInfo(peer)));
            let service = hyper_util::service::TowerToHyperService::new(app);
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .with_upgrades();
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// Re-resolves search replica addresses every few seconds (scaled services).
async fn discover_search_replicas(gw: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    let Some(replicas) = gw.search.as_ref() else {
        return;
    };
    loop {
        replicas.discover().await;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Keeps the partition table and shard health current; flips to Ready once every
/// shard has answered and its change feed is followed (so no event is missed).
async fn track_shards(gw: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    loop {
        let answered = gw.sync.refresh().await;
        let following = gw.sync.shards().iter().all(|s| s.is_following());
        if answered == gw.sync.shards().len() && following && gw.state() == LifecycleState::Starting
        {
            // Stored permission policies must be in force before the first client op.
            match crate::live::policy_sync::load(&gw).await {
                Ok(count) => {
                    tracing::info!(policies = count, "permission policies loaded");
                    gw.advance(LifecycleState::Ready);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "loading permission policies failed; retrying")
                }
            }
        }
        let pause = if gw.state() == LifecycleState::Starting {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(2)
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
    }
}

/// CORS from `NetworkConfig.cors_origins`: `*` allows any origin (without credentials),
/// explicit origins allow credentials; an empty list adds no CORS headers at all.
fn cors_layer(network: &super::config::NetworkConfig) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, Any, CorsLayer};
    let methods = [
        http::Method::GET,
        http::Method::POST,
        http::Method::PUT,
        http::Method::DELETE,
        http::Method::PATCH,
        http::Method::OPTIONS,
    ];
    if network.cors_origins.is_empty() {
        return CorsLayer::new();
    }
    let base = CorsLayer::new()
        .allow_methods(methods)
        .max_age(network.cors_max_age);
    if network.cors_origins.iter().any(|o| o == "*") {
        base.allow_origin(Any).allow_headers(Any)
    } else {
        let origins: Vec<http::HeaderValue> = network
            .cors_origins
            .iter()
            .filter_map(|o| o.parse().ok())
            .collect();
        base.allow_origin(AllowOrigin::list(origins))
            .allow_credentials(true)
            .allow_headers([
                http::header::AUTHORIZATION,
                http::header::CONTENT_TYPE,
                http::header::ACCEPT,
            ])
    }
}

/// Every route of the gateway.
pub fn router(gw: Arc<Gateway>, admin_dir: Option<PathBuf>) -> Router {
    let body_limit = gw.network.max_body_size;
    let limiter =
        rate_limit::RateLimiter::new(gw.network.rate_limit_per_ip, gw.network.rate_limit_burst);
    // Login and admin routes are rate-limited per peer IP; protocol, health and docs are not.
    let limited = Router::new()
        .route("/api/auth/login", post(admin::login))
        .route("/api/admin/cluster/status", get(admin::cluster_status))
        .route("/api/admin/maps", get(admin::maps))
        .route(
            "/api/admin/settings",
            get(admin::get_settings).put(admin::put_settings),
        )
        .route(
            "/api/admin/policies",
            get(admin::list_policies).post(admin::create_policy),
        )
        .route("/api/admin/policies/{id}", delete(admin::delete_policy))
        .layer(axum::middleware::from_fn_with_state(
            limiter,
            rate_limit::limit,
        ));
    let router = Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/", get(ws::upgrade))
        .route("/sync", post(sync::sync))
        .route("/health", get(health::health))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .route("/api/status", get(admin::status))
        .route("/api/openapi.json", get(openapi::openapi_json))
        .route("/api/docs", get(openapi::docs_redirect))
        .route("/api/docs/", get(openapi::docs_index))
        .route("/api/docs/{*file}", get(openapi::docs_asset))
        .merge(limited)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            http::StatusCode::REQUEST_TIMEOUT,
            gw.network.request_timeout,
        ))
        .layer(cors_layer(&gw.network))
        // Each HTTP request continues the caller's `traceparent` or starts a trace.
        .layer(topgun_proto::trace_context::TraceLayer)
        .with_state(gw);
    let dashboard = Router::new()
        .route("/admin", get(dashboard::index))
        .route("/admin/", get(dashboard::index))
        .route("/admin/{*path}", get(dashboard::asset))
        .with_state(dashboard::DashboardDir::resolve(admin_dir));
    router.merge(dashboard)
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
