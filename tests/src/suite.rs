//! A running suite in one of two topologies: the single-process `test-server`, or the
//! distributed shape (storage-service, N sync shards, M search replicas, K gateways as
//! separate processes on loopback ports). Protocol tests run against both.

use crate::process::{free_port, Service};
use crate::TEST_JWT_SECRET;
use std::time::Duration;

/// Which storage the distributed suite's storage-service uses.
#[derive(Debug, Clone)]
pub enum Storage {
    /// Keeps nothing.
    Null,
    /// PostgreSQL at `DATABASE_URL`, in a table of its own.
    Postgres {
        /// Connection URL.
        url: String,
        /// Table name (unique per test).
        table: String,
    },
}

/// Shape of a distributed suite.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Sync shards.
    pub shards: usize,
    /// Search replicas.
    pub search_replicas: usize,
    /// Gateways.
    pub gateways: usize,
    /// Storage backend.
    pub storage: Storage,
    /// Internal gRPC over (mutual) TLS with a throw-away certificate.
    pub internal_tls: bool,
    /// Capture every service's log: stderr to `<dir>/<binary>-<n>.log`, with this
    /// `RUST_LOG` filter. `None`: logs go to the test output at the usual level.
    pub logs: Option<(std::path::PathBuf, String)>,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            shards: 2,
            search_replicas: 0,
            gateways: 1,
            storage: Storage::Null,
            internal_tls: false,
            logs: None,
        }
    }
}

/// A throw-away certificate for internal gRPC TLS (empty paths when TLS is off, which
/// the services read as "not configured").
#[derive(Debug)]
struct InternalTlsFiles {
    _dir: Option<tempfile::TempDir>,
    cert: String,
    key: String,
}

impl InternalTlsFiles {
    fn new(enabled: bool) -> Self {
        if !enabled {
            return InternalTlsFiles {
                _dir: None,
                cert: String::new(),
                key: String::new(),
            };
        }
        let certified = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .expect("self-signed certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        let cert = dir.path().join("internal.pem");
        let key = dir.path().join("internal.key");
        std::fs::write(&cert, certified.cert.pem()).expect("write cert");
        std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
        InternalTlsFiles {
            cert: cert.to_string_lossy().into_owned(),
            key: key.to_string_lossy().into_owned(),
            _dir: Some(dir),
        }
    }
}

/// A running suite; every process is killed when it is dropped.
#[derive(Debug)]
pub struct Suite {
    /// Gateway client ports.
    pub gateway_ports: Vec<u16>,
    /// The storage-service process (distributed only).
    pub storage: Option<Service>,
    /// Sync shard processes.
    pub shards: Vec<Service>,
    /// Search replica processes.
    pub search: Vec<Service>,
    /// Gateway processes (or the single test-server).
    pub gateways: Vec<Service>,
    /// gRPC address of storage.
    pub storage_addr: Option<String>,
    /// gRPC addresses of the shards.
    pub shard_addrs: Vec<String>,
    /// `http://…` of storage's ops port (health, metrics; distributed only).
    pub storage_http: Option<String>,
    /// `http://…` of each shard's ops port, in shard order.
    pub shard_http: Vec<String>,
    /// `http://…` of each search replica's ops port.
    pub search_http: Vec<String>,
    token: String,
    _tls: Option<InternalTlsFiles>,
}

impl Suite {
    /// `test-server --port 0` with extra environment.
    pub async fn single(env: &[(&str, String)]) -> Suite {
        let mut process = Service::spawn("test-server", &["--port", "0"], env);
        let port = process.wait_for_port(Duration::from_secs(60)).await;
        Suite {
            gateway_ports: vec![port],
            storage: None,
            shards: vec![],
            search: vec![],
            gateways: vec![process],
            storage_addr: None,
            shard_addrs: vec![],
            storage_http: None,
            shard_http: vec![],
            search_http: vec![],
            token: String::new(),
            _tls: None,
        }
    }

    /// The default distributed suite: storage (null), 2 shards, 1 gateway.
    pub async fn distributed() -> Suite {
        Self::start(Layout::default()).await
    }

    /// Starts every process of `layout` and waits until each gateway is ready.
    pub async fn start(layout: Layout) -> Suite {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let storage_port = free_port();
        let tls = InternalTlsFiles::new(layout.internal_tls);
        let scheme = if layout.internal_tls { "https" } else { "http" };
        let storage_addr = format!("{scheme}://127.0.0.1:{storage_port}");
        // Every process gets its own ops port: the defaults would collide on one machine.
        let storage_http_port = free_port();
        let mut storage_env = vec![
            ("STORAGE_GRPC_ADDR", format!("127.0.0.1:{storage_port}")),
            (
                "STORAGE_HTTP_ADDR",
                format!("127.0.0.1:{storage_http_port}"),
            ),
            ("TOPGUN_INTERNAL_TOKEN", token.clone()),
            ("TOPGUN_INTERNAL_TLS_CERT", tls.cert.clone()),
            ("TOPGUN_INTERNAL_TLS_KEY", tls.key.clone()),
            ("TOPGUN_INTERNAL_TLS_CA", tls.cert.clone()),
        ];
        match &layout.storage {
            Storage::Null => storage_env.push(("STORAGE_BACKEND", "null".into())),
            Storage::Postgres { url, table } => {
                storage_env.push(("STORAGE_BACKEND", "postgres".into()));
                storage_env.push(("DATABASE_URL", url.clone()));
                storage_env.push(("STORAGE_TABLE", table.clone()));
            }
        }
        let storage = spawn(&layout, "storage-service", 0, storage_env);

        let mut shards = Vec::new();
        let mut shard_addrs = Vec::new();
        let mut shard_http = Vec::new();
        for index in 0..layout.shards {
            let port = free_port();
            let http_port = free_port();
            shard_addrs.push(format!("{scheme}://127.0.0.1:{port}"));
            shard_http.push(format!("http://127.0.0.1:{http_port}"));
            shards.push(spawn(
                &layout,
                "sync-service",
                index,
                vec![
                    ("SYNC_GRPC_ADDR", format!("127.0.0.1:{port}")),
                    ("SYNC_HTTP_ADDR", format!("127.0.0.1:{http_port}")),
                    ("SHARD_INDEX", index.to_string()),
                    ("SHARD_COUNT", layout.shards.to_string()),
                    ("NODE_ID", format!("sync-{index}")),
                    ("STORAGE_ADDR", storage_addr.clone()),
                    ("TOPGUN_INTERNAL_TOKEN", token.clone()),
                    ("TOPGUN_INTERNAL_TLS_CERT", tls.cert.clone()),
                    ("TOPGUN_INTERNAL_TLS_KEY", tls.key.clone()),
                    ("TOPGUN_INTERNAL_TLS_CA", tls.cert.clone()),
                ],
            ));
        }

        let mut search = Vec::new();
        let mut search_addrs = Vec::new();
        let mut search_http = Vec::new();
        for index in 0..layout.search_replicas {
            let port = free_port();
            let http_port = free_port();
            search_addrs.push(format!("{scheme}://127.0.0.1:{port}"));
            search_http.push(format!("http://127.0.0.1:{http_port}"));
            search.push(spawn(
                &layout,
                "search-service",
                index,
                vec![
                    ("SEARCH_GRPC_ADDR", format!("127.0.0.1:{port}")),
                    ("SEARCH_HTTP_ADDR", format!("127.0.0.1:{http_port}")),
                    ("SYNC_ADDRS", shard_addrs.join(",")),
                    ("NODE_ID", format!("search-{index}")),
                    ("TOPGUN_INTERNAL_TOKEN", token.clone()),
                    ("TOPGUN_INTERNAL_TLS_CERT", tls.cert.clone()),
                    ("TOPGUN_INTERNAL_TLS_KEY", tls.key.clone()),
                    ("TOPGUN_INTERNAL_TLS_CA", tls.cert.clone()),
                ],
            ));
        }

        let mut gateways = Vec::new();
        let mut gateway_ports = Vec::new();
        for index in 0..layout.gateways {
            let port = free_port();
            gateway_ports.push(port);
            gateways.push(spawn(
                &layout,
                "gateway",
                index,
                vec![
                    ("PORT", port.to_string()),
                    ("TOPGUN_BIND_ADDR", "127.0.0.1".into()),
                    ("NODE_ID", format!("gateway-{index}")),
                    ("SYNC_ADDRS", shard_addrs.join(",")),
                    ("SEARCH_ADDRS", search_addrs.join(",")),
                    ("JWT_SECRET", TEST_JWT_SECRET.into()),
                    ("TOPGUN_ADMIN_PASSWORD", "admin-pass".into()),
                    ("TOPGUN_INTERNAL_TOKEN", token.clone()),
                    ("TOPGUN_INTERNAL_TLS_CERT", tls.cert.clone()),
                    ("TOPGUN_INTERNAL_TLS_KEY", tls.key.clone()),
                    ("TOPGUN_INTERNAL_TLS_CA", tls.cert.clone()),
                ],
            ));
        }
        let mut suite = Suite {
            gateway_ports,
            storage: Some(storage),
            shards,
            search,
            gateways,
            storage_addr: Some(storage_addr),
            shard_addrs,
            storage_http: Some(format!("http://127.0.0.1:{storage_http_port}")),
            shard_http,
            search_http,
            token,
            _tls: Some(tls),
        };
        suite.wait_started(Duration::from_secs(60)).await;
        suite
    }

    /// Waits until every gateway is ready; fails at once, naming it, if any process of
    /// the suite exits meanwhile (its stderr is in the test output).
    async fn wait_started(&mut self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        for i in 0..self.gateway_ports.len() {
            let url = format!("{}/health/ready", self.http_url_of(i));
            loop {
                if let Some((name, status)) = self.exited_process() {
                    panic!("{name} exited during start-up ({status})");
                }
                let ready = match reqwest::get(&url).await {
                    Ok(resp) => resp.status() == 200,
                    Err(_) => false,
                };
                if ready {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "gateway {i} not ready within {timeout:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// The first process of the suite that has exited, with its status.
    fn exited_process(&mut self) -> Option<(String, std::process::ExitStatus)> {
        self.storage
            .iter_mut()
            .chain(self.shards.iter_mut())
            .chain(self.search.iter_mut())
            .chain(self.gateways.iter_mut())
            .find_map(|service| {
                let status = service.exit_status()?;
                Some((service.name().to_string(), status))
            })
    }

    /// Waits until gateway `i` answers 200 on `/health/ready`.
    pub async fn wait_ready(&self, i: usize, timeout: Duration) {
        let url = format!("{}/health/ready", self.http_url_of(i));
        let ready = crate::eventually(timeout, || async {
            let resp = reqwest::get(&url).await.ok()?;
            (resp.status() == 200).then_some(())
        })
        .await;
        assert!(ready.is_some(), "gateway {i} not ready within {timeout:?}");
    }

    /// The shared internal token of this suite.
    pub fn internal_token(&self) -> &str {
        &self.token
    }

    /// `ws://…/ws` of the first gateway.
    pub fn ws_url(&self) -> String {
        self.ws_url_of(0)
    }

    /// `ws://…/ws` of gateway `i`.
    pub fn ws_url_of(&self, i: usize) -> String {
        format!("ws://127.0.0.1:{}/ws", self.gateway_ports[i])
    }

    /// `http://…` of the first gateway.
    pub fn http_url(&self) -> String {
        self.http_url_of(0)
    }

    /// `http://…` of gateway `i`.
    pub fn http_url_of(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.gateway_ports[i])
    }
}

/// Starts service binary `name` (the `index`th of its kind) of `layout`.
fn spawn(layout: &Layout, name: &str, index: usize, mut env: Vec<(&str, String)>) -> Service {
    let stderr = layout.logs.as_ref().map(|(dir, filter)| {
        env.push(("RUST_LOG", filter.clone()));
        dir.join(format!("{name}-{index}.log"))
    });
    Service::spawn_logged(name, &[], &env, stderr)
}

/// Runs an async test body against both topologies: `topologies!(name, ...)` defines
/// `name::single` and `name::distributed` tests calling `name(suite)`.
#[macro_export]
macro_rules! topologies {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn single() {
                    super::$name($crate::suite::Suite::single(&[]).await).await
                }
                #[tokio::test]
                async fn distributed() {
                    super::$name($crate::suite::Suite::distributed().await).await
                }
            }
        )*
    };
}

/// Like [`topologies!`], with two search replicas in the distributed suite.
#[macro_export]
macro_rules! topologies_with_search {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn single() {
                    super::$name($crate::suite::Suite::single(&[]).await).await
                }
                #[tokio::test]
                async fn distributed() {
                    let layout = $crate::suite::Layout { search_replicas: 2, ..Default::default() };
                    super::$name($crate::suite::Suite::start(layout).await).await
                }
            }
        )*
    };
}
