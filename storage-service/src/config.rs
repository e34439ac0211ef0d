//! Configuration of the storage service, read from flags or the environment.

use crate::error::StorageError;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default gRPC listen address.
pub const DEFAULT_GRPC_ADDR: &str = "0.0.0.0:50053";
/// Default address of the ops HTTP port (health, metrics).
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:9093";
/// Default SQLite data folder.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Default maximum number of pooled database connections.
pub const DEFAULT_POOL_MAX: u32 = 10;
/// Default time a call waits for a pooled connection before failing as UNAVAILABLE.
pub const DEFAULT_ACQUIRE_TIMEOUT_SECS: u64 = 5;
/// Default time startup keeps retrying an unreachable database.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 30;

/// Settings of the storage service. Every field can be given as a flag or through the
/// environment variable named in its `env` attribute.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "storage-service",
    version,
    about = "TopGun storage service (gRPC)"
)]
pub struct StorageConfig {
    /// gRPC listen address.
    #[arg(long, env = "STORAGE_GRPC_ADDR", default_value = DEFAULT_GRPC_ADDR)]
    pub grpc_addr: SocketAddr,

    /// Ops HTTP port serving `/health`, `/health/live`, `/health/ready` and `/metrics`
    /// (empty = no ops port).
    #[arg(long, env = "STORAGE_HTTP_ADDR", default_value = DEFAULT_HTTP_ADDR)]
    pub http_addr: String,

    /// `postgres`, `sqlite` or `null`. Unset: `postgres` when DATABASE_URL is a
    /// postgres:// URL, otherwise `sqlite`.
    #[arg(long, env = "STORAGE_BACKEND")]
    pub backend: Option<String>,

    /// PostgreSQL connection URL (required by the postgres backend).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Folder of the SQLite database file.
    #[arg(long, env = "TOPGUN_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// Table holding the records (validated against `^[a-zA-Z_][a-zA-Z0-9_]*$`).
    #[arg(long, env = "STORAGE_TABLE", default_value = crate::datastores::DEFAULT_TABLE_NAME)]
    pub table: String,

    /// Maximum pooled database connections.
    #[arg(long, env = "STORAGE_POOL_MAX", default_value_t = DEFAULT_POOL_MAX)]
    pub pool_max: u32,

    /// Seconds a call waits for a pooled connection before failing with UNAVAILABLE.
    #[arg(long, env = "STORAGE_ACQUIRE_TIMEOUT_SECS", default_value_t = DEFAULT_ACQUIRE_TIMEOUT_SECS)]
    pub acquire_timeout_secs: u64,

    /// Seconds startup keeps retrying an unreachable database before giving up.
    #[arg(long, env = "STORAGE_CONNECT_TIMEOUT_SECS", default_value_t = DEFAULT_CONNECT_TIMEOUT_SECS)]
    pub connect_timeout_secs: u64,

    /// Shared token every internal gRPC call must carry (unset or empty = no check).
    #[arg(long, env = "TOPGUN_INTERNAL_TOKEN", hide_env_values = true)]
    pub internal_token: Option<String>,
}

impl Default for StorageConfig {
    /// The documented defaults, ignoring the environment (for in-process use).
    fn default() -> Self {
        StorageConfig {
            grpc_addr: SocketAddr::from(([0, 0, 0, 0], 50053)),
            http_addr: DEFAULT_HTTP_ADDR.to_string(),
            backend: None,
            database_url: None,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            table: crate::datastores::DEFAULT_TABLE_NAME.to_string(),
            pool_max: DEFAULT_POOL_MAX,
            acquire_timeout_secs: DEFAULT_ACQUIRE_TIMEOUT_SECS,
            connect_timeout_secs: DEFAULT_CONNECT_TIMEOUT_SECS,
            internal_token: None,
        }
    }
}

/// The storage backend chosen by a [`StorageConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL at this URL.
    Postgres {
        /// Connection URL.
        url: String,
    },
    /// An SQLite file in this folder.
    Sqlite {
        /// Data folder.
        data_dir: PathBuf,
    },
    /// Keep nothing.
    Null,
}

impl StorageConfig {
    /// Reads the configuration from the environment only (no command-line flags), for
    /// binaries that embed the service.
    pub fn from_env() -> Result<Self, clap::Error> {
        <Self as clap::Parser>::try_parse_from(["storage-service"])
    }

    /// Resolves `STORAGE_BACKEND` / `DATABASE_URL` into a backend, with the startup
    /// errors the operator sees for a wrong setting.
    pub fn resolve_backend(&self) -> Result<Backend, StorageError> {
        let url = self.database_url.clone().filter(|u| !u.trim().is_empty());
        let name = match self
            .backend
            .as_deref()
            .map(str::trim)
            .filter(|b| !b.is_empty())
        {
            Some(name) => name.to_ascii_lowercase(),
            None => match &url {
                Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                    "postgres".to_string()
                }
                _ => "sqlite".to_string(),
            },
        };
        match name.as_str() {
            "postgres" | "postgresql" => url
                .map(|url| Backend::Postgres { url })
                .ok_or(StorageError::MissingDatabaseUrl),
            "sqlite" => Ok(Backend::Sqlite {
                data_dir: self.data_dir.clone(),
            }),
            "null" => Ok(Backend::Null),
            _ => Err(StorageError::UnknownBackend(
                self.backend.clone().unwrap_or_default(),
            )),
        }
    }

    /// [`Self::acquire_timeout_secs`] as a duration.
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_secs(self.acquire_timeout_secs.max(1))
    }

    /// [`Self::connect_timeout_secs`] as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(backend: Option<&str>, url: Option<&str>) -> StorageConfig {
        StorageConfig {
            backend: backend.map(String::from),
            database_url: url.map(String::from),
            ..StorageConfig::default()
        }
    }

    #[test]
    fn chooses_the_backend_from_the_environment_settings() {
        assert_eq!(
            with(None, None).resolve_backend().ok(),
            Some(Backend::Sqlite {
                data_dir: PathBuf::from("./data")
            })
        );
        assert_eq!(
            with(None, Some("postgres://u@h/db")).resolve_backend().ok(),
            Some(Backend::Postgres {
                url: "postgres://u@h/db".into()
            })
        );
        assert_eq!(
            with(Some("NULL"), Some("postgres://x"))
                .resolve_backend()
                .ok(),
            Some(Backend::Null)
        );
        let err = with(Some("mongo"), None)
            .resolve_backend()
            .expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "Unknown STORAGE_BACKEND='mongo' (expected: postgres, sqlite, null)"
        );
        let err = with(Some("postgres"), None)
            .resolve_backend()
            .expect_err("no url");
        assert_eq!(
            err.to_string(),
            "STORAGE_BACKEND=postgres requires DATABASE_URL"
        );
    }

    #[test]
    fn default_matches_the_flag_defaults() {
        let parsed = <StorageConfig as clap::Parser>::try_parse_from([
            "storage-service",
            "--grpc-addr",
            DEFAULT_GRPC_ADDR,
            "--http-addr",
            DEFAULT_HTTP_ADDR,
        ])
        .expect("defaults parse");
        let default = StorageConfig::default();
        assert_eq!(parsed.grpc_addr, default.grpc_addr);
        assert_eq!(parsed.http_addr, default.http_addr);
        assert_eq!(parsed.table, default.table);
        assert_eq!(parsed.pool_max, default.pool_max);
    }
}
