//! `test-server`: the whole suite in one process with the in-memory (null) store and the
//! fixed test JWT secret `test-e2e-secret`. Prints exactly one line `PORT=<n>` on stdout
//! when ready; logs go to stderr (filter with `RUST_LOG`).

use clap::Parser;
use topgun_gateway::config::GatewayOptions;
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
}

#[tokio::main]
async fn main() {
    let mut cli = Cli::parse();
    if cli.gateway.node_id == "gateway-1" {
        cli.gateway.node_id = "test-server-node".into();
    }
    // JWT_SECRET is ignored: harnesses rely on the fixed secret (or TOPGUN_NO_AUTH).
    cli.gateway.jwt_secret = Some(TEST_JWT_SECRET.to_string());
    if let Err(e) = cli.gateway.validate() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    let storage = StorageConfig {
        backend: Some(std::env::var("STORAGE_BACKEND").unwrap_or_else(|_| "null".into())),
        database_url: std::env::var("DATABASE_URL").ok(),
        ..StorageConfig::default()
    };
    let store = match topgun_storage::open_store(&storage).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let options = topgun_standalone::suite::SuiteOptions {
        gateway: cli.gateway,
        store,
        announce_port: true,
    };
    if let Err(e) =
        topgun_standalone::suite::run(options, topgun_gateway::network::module::shutdown_signal())
            .await
    {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
