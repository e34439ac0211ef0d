//! `topgun`: the product's zero-setup mode. The whole suite in one process with durable
//! embedded storage (SQLite in `TOPGUN_DATA_DIR`, default `./data`); set
//! `DATABASE_URL=postgres://...` to store in PostgreSQL instead. Gateway on port 8080.

use clap::Parser;
use topgun_gateway::config::GatewayOptions;
use topgun_standalone::cluster::ClusterOptions;
use topgun_storage::StorageConfig;

/// glibc malloc dominated server profiles under write load (≈47% of CPU); mimalloc's
/// per-thread free lists remove that cost (README, performance).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// TopGun, single process.
#[derive(Debug, Parser)]
#[command(name = "topgun", version, about)]
struct Cli {
    #[command(flatten)]
    gateway: GatewayOptions,
    #[command(flatten)]
    cluster: ClusterOptions,
    #[command(flatten)]
    storage: StorageArgs,
}

/// Storage selection (see the storage service for every option).
#[derive(Debug, clap::Args)]
struct StorageArgs {
    /// `sqlite` (default), `postgres` (default when DATABASE_URL is postgres://) or `null`.
    #[arg(long, env = "STORAGE_BACKEND")]
    storage_backend: Option<String>,
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Folder of the embedded database.
    #[arg(long, env = "TOPGUN_DATA_DIR", default_value = "./data")]
    data_dir: std::path::PathBuf,
    /// Table name.
    #[arg(long, env = "STORAGE_TABLE", default_value = "topgun_maps")]
    table: String,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let storage = StorageConfig {
        backend: cli.storage.storage_backend,
        database_url: cli.storage.database_url,
        data_dir: cli.storage.data_dir,
        table: cli.storage.table,
        ..StorageConfig::default()
    };
    topgun_standalone::suite::run_binary(cli.gateway, cli.cluster, storage).await;
}
