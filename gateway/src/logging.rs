//! Log setup shared by every gateway-hosting binary: `tracing` to stderr filtered by
//! `RUST_LOG`, with a handle so the admin API can change the filter at runtime.

use parking_lot::Mutex;
use std::sync::Arc;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Reads and replaces the live log filter.
#[derive(Clone)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    current: Arc<Mutex<String>>,
}

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogControl")
            .field("current", &*self.current.lock())
            .finish()
    }
}

impl LogControl {
    /// The filter directive in force.
    pub fn current(&self) -> String {
        self.current.lock().clone()
    }

    /// Validates and applies a new directive (e.g. `info,topgun_gateway=debug`).
    pub fn set(&self, directive: &str) -> Result<(), String> {
        let filter =
            EnvFilter::try_new(directive).map_err(|e| format!("invalid log level filter: {e}"))?;
        self.handle
            .reload(filter)
            .map_err(|e| format!("failed to reload log level: {e}"))?;
        *self.current.lock() = directive.to_string();
        Ok(())
    }
}

/// Installs the global subscriber once; later calls return `None`.
pub fn init() -> Option<LogControl> {
    let directive = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string());
    let filter = EnvFilter::try_new(&directive).unwrap_or_else(|_| EnvFilter::new("info"));
    let (layer, handle) = reload::Layer::new(filter);
    // Colours only on a terminal, so log files and collectors get plain text.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(true);
    tracing_subscriber::registry()
        .with(layer)
        .with(fmt)
        .try_init()
        .ok()?;
    Some(LogControl {
        handle,
        current: Arc::new(Mutex::new(directive)),
    })
}
