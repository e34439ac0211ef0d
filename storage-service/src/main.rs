//! `storage-service`: the TopGun storage service as its own process.

use clap::Parser;
use std::process::ExitCode;
use topgun_storage::{serve, StorageConfig};

/// glibc malloc dominated server profiles under write load (≈47% of CPU); mimalloc's
/// per-thread free lists remove that cost (README, performance).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = StorageConfig::parse();
    topgun_ops::init_logging();
    match serve(config, topgun_ops::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "storage service failed");
            ExitCode::FAILURE
        }
    }
}
