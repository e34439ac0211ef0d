//! Command-line options.

use crate::write_concern::WriteConcern;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Load generator for the TopGun client protocol (MsgPack over WebSocket).
///
/// Exits 0 when the scenario saw no failure, 1 when any request failed (OP_REJECTED, ERROR,
/// missing or late answers, …) unless --allow-errors, 2 when the run could not be done at all.
#[derive(Debug, Parser)]
#[command(name = "topgun-bench", version, about)]
pub struct Cli {
    /// Options shared by every scenario.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The scenario to run.
    #[command(subcommand)]
    pub scenario: ScenarioArgs,
}

/// Options shared by every scenario.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Server WebSocket URL.
    #[arg(
        long,
        global = true,
        env = "TOPGUN_BENCH_URL",
        default_value = "ws://127.0.0.1:8080/ws"
    )]
    pub url: String,
    /// JWT to authenticate with (default: one minted with --jwt-secret).
    #[arg(
        long,
        global = true,
        env = "TOPGUN_BENCH_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// HS256 secret for minting test tokens (claims: sub, roles ["USER"], iat, exp).
    #[arg(long, global = true, default_value = "test-e2e-secret")]
    pub jwt_secret: String,
    /// The server runs without authentication: send no AUTH.
    #[arg(long, global = true)]
    pub no_auth: bool,
    /// Length of the measured phase of time-based scenarios, in seconds.
    #[arg(long, global = true, default_value_t = 10)]
    pub duration: u64,
    /// How long to wait for any single answer before counting it as missing, in ms.
    #[arg(long, global = true, default_value_t = 10_000)]
    pub response_timeout_ms: u64,
    /// Connections opened at the same time while setting up.
    #[arg(long, global = true, default_value_t = 50)]
    pub connect_parallelism: usize,
    /// Server process ids whose memory (VmRSS, VmHWM) is reported at the end, comma-separated.
    #[arg(long, global = true, value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// Write the report as JSON to this file.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// Append the report as a Markdown section to this file.
    #[arg(long, global = true)]
    pub markdown: Option<PathBuf>,
    /// Name of this run in the report heading (default: the scenario name).
    #[arg(long, global = true)]
    pub label: Option<String>,
    /// Exit 0 even when requests failed (they are still reported).
    #[arg(long, global = true)]
    pub allow_errors: bool,
}

/// The scenarios.
#[derive(Debug, Clone, Subcommand)]
pub enum ScenarioArgs {
    /// N connections each send OP_BATCHes and wait for every OP_ACK (latency and throughput).
    WriteAck(WriteAckArgs),
    /// Fire-and-forget OP_BATCHes as fast as the server accepts them.
    WriteFlood(WriteFloodArgs),
    /// M subscribers on one live query, one writer: write → QUERY_UPDATE latency.
    FanOut(FanOutArgs),
    /// Merkle sync of a fresh client, then of a client whose state is 1 % behind.
    InitialSync(InitialSyncArgs),
    /// SEARCH latency under concurrent load.
    Search(SearchArgs),
}

impl ScenarioArgs {
    /// The scenario's name as used on the command line and in reports.
    pub fn name(&self) -> &'static str {
        match self {
            ScenarioArgs::WriteAck(_) => "write-ack",
            ScenarioArgs::WriteFlood(_) => "write-flood",
            ScenarioArgs::FanOut(_) => "fan-out",
            ScenarioArgs::InitialSync(_) => "initial-sync",
            ScenarioArgs::Search(_) => "search",
        }
    }
}

/// Options of `write-ack`.
#[derive(Debug, Clone, Args)]
pub struct WriteAckArgs {
    /// Concurrent connections.
    #[arg(long, default_value_t = 200)]
    pub connections: usize,
    /// LWW puts per OP_BATCH.
    #[arg(long, default_value_t = 10)]
    pub batch_size: usize,
    /// Pause after each OP_ACK, in ms (0 = closed loop).
    #[arg(long, default_value_t = 50)]
    pub interval_ms: u64,
    /// Request this write concern for every batch (e.g. PERSISTED); it must be reached.
    #[arg(long, value_enum)]
    pub write_concern: Option<WriteConcern>,
    /// Write-concern timeout sent with each batch, in ms.
    #[arg(long)]
    pub write_timeout_ms: Option<u64>,
    /// Distinct keys per connection (keys are overwritten round-robin).
    #[arg(long, default_value_t = 1000)]
    pub key_space: u64,
    /// Size of the string payload of each value, in bytes.
    #[arg(long, default_value_t = 64)]
    pub value_bytes: usize,
    /// Map to write to (default: a fresh one per run).
    #[arg(long)]
    pub map: Option<String>,
    /// Write a CSV of the run in 100 ms windows (batches answered, worst latency, the
    /// machine's worst wake-up lag) to this file, to place a latency tail in time.
    #[arg(long)]
    pub timeline: Option<PathBuf>,
}

/// Options of `write-flood`.
#[derive(Debug, Clone, Args)]
pub struct WriteFloodArgs {
    /// Concurrent connections.
    #[arg(long, default_value_t = 20)]
    pub connections: usize,
    /// LWW puts per OP_BATCH.
    #[arg(long, default_value_t = 10)]
    pub batch_size: usize,
    /// Most unacknowledged batches per connection (0 = no limit).
    #[arg(long, default_value_t = 0)]
    pub max_in_flight: usize,
    /// After the flood, wait this long for outstanding OP_ACKs, in seconds.
    #[arg(long, default_value_t = 5)]
    pub drain_secs: u64,
    /// Distinct keys per connection.
    #[arg(long, default_value_t = 1000)]
    pub key_space: u64,
    /// Size of the string payload of each value, in bytes.
    #[arg(long, default_value_t = 64)]
    pub value_bytes: usize,
    /// Map to write to (default: a fresh one per run).
    #[arg(long)]
    pub map: Option<String>,
}

/// Options of `fan-out`.
#[derive(Debug, Clone, Args)]
pub struct FanOutArgs {
    /// Connections subscribed to the live query.
    #[arg(long, default_value_t = 50)]
    pub subscribers: usize,
    /// Pause between the writer's writes, in ms.
    #[arg(long, default_value_t = 100)]
    pub write_interval_ms: u64,
    /// Distinct keys the writer cycles through.
    #[arg(long, default_value_t = 100)]
    pub keys: u64,
    /// After the last write, wait this long for missing updates, in ms.
    #[arg(long, default_value_t = 5_000)]
    pub delivery_timeout_ms: u64,
    /// Map to write to (default: a fresh one per run).
    #[arg(long)]
    pub map: Option<String>,
}

/// Options of `initial-sync`.
#[derive(Debug, Clone, Args)]
pub struct InitialSyncArgs {
    /// Records in the map.
    #[arg(long, default_value_t = 10_000)]
    pub records: u64,
    /// Percentage of keys changed before the second sync.
    #[arg(long, default_value_t = 1.0)]
    pub change_percent: f64,
    /// Puts per OP_BATCH while seeding.
    #[arg(long, default_value_t = 500)]
    pub seed_batch: usize,
    /// Connections used for seeding.
    #[arg(long, default_value_t = 4)]
    pub seed_connections: usize,
    /// Size of the string payload of each value, in bytes.
    #[arg(long, default_value_t = 64)]
    pub value_bytes: usize,
    /// Map to use (default: a fresh one per run; it must not exist yet).
    #[arg(long)]
    pub map: Option<String>,
}

/// Options of `search`.
#[derive(Debug, Clone, Args)]
pub struct SearchArgs {
    /// Concurrent searching connections.
    #[arg(long, default_value_t = 10)]
    pub connections: usize,
    /// Documents written before searching.
    #[arg(long, default_value_t = 1_000)]
    pub records: u64,
    /// `limit` of each SEARCH.
    #[arg(long, default_value_t = 10)]
    pub limit: u32,
    /// Pause after each SEARCH_RESP, in ms (0 = closed loop).
    #[arg(long, default_value_t = 0)]
    pub interval_ms: u64,
    /// Map to use (default: a fresh one per run).
    #[arg(long)]
    pub map: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_issue() {
        let cli = Cli::try_parse_from(["topgun-bench", "write-ack"]).expect("parses");
        let ScenarioArgs::WriteAck(a) = cli.scenario else {
            panic!("not write-ack")
        };
        assert_eq!((a.connections, a.batch_size, a.interval_ms), (200, 10, 50));
        assert_eq!(a.write_concern, None);
        assert_eq!(cli.common.jwt_secret, "test-e2e-secret");
    }

    #[test]
    fn global_options_go_after_the_scenario_too() {
        let cli = Cli::try_parse_from([
            "topgun-bench",
            "write-ack",
            "--write-concern",
            "PERSISTED",
            "--pids",
            "12,34",
            "--duration",
            "5",
            "--url",
            "ws://127.0.0.1:9/ws",
        ])
        .expect("parses");
        let ScenarioArgs::WriteAck(a) = &cli.scenario else {
            panic!("not write-ack")
        };
        assert_eq!(a.write_concern, Some(WriteConcern::Persisted));
        assert_eq!(cli.common.pids, vec![12, 34]);
        assert_eq!(cli.common.duration, 5);
        assert_eq!(cli.common.url, "ws://127.0.0.1:9/ws");
        assert_eq!(cli.scenario.name(), "write-ack");
    }

    #[test]
    fn scenario_names() {
        for (arg, name) in [
            ("write-flood", "write-flood"),
            ("fan-out", "fan-out"),
            ("initial-sync", "initial-sync"),
            ("search", "search"),
        ] {
            let cli = Cli::try_parse_from(["topgun-bench", arg]).expect("parses");
            assert_eq!(cli.scenario.name(), name);
        }
        assert!(
            Cli::try_parse_from(["topgun-bench", "write-ack", "--write-concern", "SOMETIMES"])
                .is_err()
        );
    }
}
