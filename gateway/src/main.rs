//! `gateway`: the edge service of the distributed suite, configured by environment.

use clap::Parser;
use topgun_gateway::config::{parse_addr_list, GatewayOptions};
use topgun_gateway::network::module::ServiceEndpoints;

/// glibc malloc dominated server profiles under write load (≈47% of CPU); mimalloc's
/// per-thread free lists remove that cost (README, performance).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// TopGun gateway.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    gateway: GatewayOptions,
    /// Comma-separated sync-service gRPC addresses, in shard order.
    #[arg(long, env = "SYNC_ADDRS")]
    sync_addrs: String,
    /// Comma-separated search-service gRPC addresses.
    #[arg(long, env = "SEARCH_ADDRS", default_value = "")]
    search_addrs: String,
}

#[tokio::main]
async fn main() {
    let log = topgun_gateway::logging::init();
    let cli = Cli::parse();
    if let Err(e) = cli.gateway.validate() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    let services = ServiceEndpoints {
        sync_addrs: parse_addr_list(&cli.sync_addrs),
        search_addrs: parse_addr_list(&cli.search_addrs),
        internal_token: cli.gateway.internal_token.clone(),
    };
    let mut module = cli.gateway.into_module(services);
    module.set_log_control(log);
    let port = match module.start().await {
        Ok(port) => port,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    tracing::info!(port, "gateway listening");
    if let Err(e) = module
        .serve(topgun_gateway::network::module::shutdown_signal())
        .await
    {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
