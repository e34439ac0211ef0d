//! `test-server`: the whole suite in one process with the in-memory (null) store and the
//! fixed test JWT secret `test-e2e-secret`. Prints exactly one line `PORT=<n>` on stdout
//! when ready; logs go to stderr (filter with `RUST_LOG`).

use clap::Parser;
use topgun_gateway::config::GatewayOptions;
use topgun_standalone::cluster::ClusterOptions;
use topgun_storage::StorageConfig;

/// glibc malloc dominated server profiles under write load (≈47% of CPU); mimalloc's
/// per-thread free lists remove that cost (README, performance).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The JWT secret of the upstream test-server, which test harnesses sign tokens with.
const TEST_JWT_SECRET: &str = "test-e2e-secret";

/// TopGun test server.
#[derive(Debug, Parser)]
#[command(name = "test-server", version, about)]
struct Cli {
    #[command(flatten)]
    gateway: GatewayOptions,
    #[command(flatten)]
    cluster: ClusterOptions,
}

#[tokio::main]
async fn main() {
    let mut cli = Cli::parse();
    if cli.gateway.node_id == "gateway-1" {
        cli.gateway.node_id = "test-server-node".into();
    }
    // JWT_SECRET is ignored: harnesses rely on the fixed secret (or TOPGUN_NO_AUTH).
    cli.gateway.jwt_secret = Some(TEST_JWT_SECRET.to_string());
    let storage = StorageConfig {
        backend: Some(std::env::var("STORAGE_BACKEND").unwrap_or_else(|_| "null".into())),
        database_url: std::env::var("DATABASE_URL").ok(),
        ..StorageConfig::default()
    };
    topgun_standalone::suite::run_binary(cli.gateway, cli.cluster, storage).await;
}
