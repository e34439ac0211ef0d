//! `sync-service`: one sync shard, configured by environment variables (see
//! `topgun_sync::SyncConfig`).

use std::process::ExitCode;
use topgun_sync::SyncConfig;

/// glibc malloc dominated server profiles under write load (≈47% of CPU); mimalloc's
/// per-thread free lists remove that cost (README, performance).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    topgun_ops::init_logging();
    let config = match SyncConfig::from_env() {
        Ok(config) => config,
        // Prints usage or the parse error and exits with clap's code.
        Err(err) => err.exit(),
    };
    match topgun_sync::serve(config, topgun_ops::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "sync service failed");
            ExitCode::FAILURE
        }
    }
}
