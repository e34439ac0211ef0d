//! The load generator against the real `test-server` binary: every scenario end to end on a
//! small scale, and the failure paths (a refused batch, SEARCH without a search service,
//! wrong credentials) reported as failures and reflected in the exit status.
//!
//! Needs `target/debug/test-server`; `scripts/test.sh` builds every binary before testing.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use topgun_bench::cli::{
    FanOutArgs, InitialSyncArgs, ScenarioArgs, SearchArgs, WriteAckArgs, WriteFloodArgs,
};
use topgun_bench::conn::{Auth, Conn, ConnectOptions};
use topgun_bench::encode::{self, map};
use topgun_bench::failures::FailureKind;
use topgun_bench::in_flight::{InFlight, SentBatch};
use topgun_bench::report::Report;
use topgun_bench::scenarios::{self, settle, Ctx};
use topgun_bench::write_concern::WriteConcern;
use topgun_bench::{token, BenchError};

/// A `test-server --port 0` process, killed on drop.
struct TestServer {
    child: Child,
    port: u16,
}

impl TestServer {
    fn start() -> TestServer {
        Self::start_with_env(&[])
    }

    fn start_with_env(env: &[(&str, &str)]) -> TestServer {
        let exe = std::env::current_exe().expect("test executable path");
        // target/debug/deps/<test> → target/debug/test-server
        let bin: PathBuf = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("target dir")
            .join("test-server");
        assert!(
            bin.exists(),
            "{} is missing: build it first with `cargo build -j 2 --bin test-server` (scripts/test.sh builds every binary)",
            bin.display()
        );
        let mut child = Command::new(&bin)
            .args(["--port", "0"])
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let port = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(p) = line.strip_prefix("PORT=") {
                        break p.trim().parse::<u16>().expect("numeric port");
                    }
                }
                other => {
                    let _ = child.kill();
                    panic!("test-server exited before printing PORT=: {other:?}");
                }
            }
        };
        TestServer { child, port }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ctx(server: &TestServer, duration: Duration, tag: &str) -> Ctx {
    let token =
        token::mint("test-e2e-secret", "bench-test", Duration::from_secs(3600)).expect("token");
    Ctx {
        connect: ConnectOptions {
            url: server.url(),
            auth: Auth::Token(token),
            handshake_timeout: Duration::from_secs(10),
        },
        duration,
        response_timeout: Duration::from_secs(10),
        connect_parallelism: 8,
        run_id: format!("{tag}{}", std::process::id()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_ack_is_all_acknowledged_and_persisted_is_reached() {
    let server = TestServer::start();
    let ctx = ctx(&server, Duration::from_secs(2), "wa");
    let mut args = WriteAckArgs {
        connections: 4,
        batch_size: 10,
        interval_ms: 10,
        write_concern: None,
        write_timeout_ms: None,
        key_space: 50,
        value_bytes: 16,
        map: None,
        timeline: None,
    };
    let report = scenarios::run(&ctx, &ScenarioArgs::WriteAck(args.clone()), &[server.pid()])
        .await
        .expect("runs");
    assert!(report.passed, "{}", report.to_markdown());
    let sent = report.metric_value("ops sent").expect("ops sent");
    assert!(sent >= 40.0, "only {sent} ops sent");
    assert_eq!(report.metric_value("ops acked"), Some(sent));
    assert_eq!(report.metric_value("acked/sent"), Some(1.0));
    assert_eq!(report.latencies[0].count as f64, sent / 10.0);
    assert_eq!(report.rss.len(), 1);
    assert!(report.rss[0].rss_kib > 0);
    assert!(report.metric_value("machine CPU busy").is_some());

    // The timeline accounts for every answered batch, window by window, beside the machine's
    // wake-up lag.
    let timeline = std::env::temp_dir().join(format!("wa-timeline-{}.csv", std::process::id()));
    args.timeline = Some(timeline.clone());
    let report = scenarios::run(&ctx, &ScenarioArgs::WriteAck(args.clone()), &[])
        .await
        .expect("runs");
    let csv = std::fs::read_to_string(&timeline).expect("timeline written");
    let _ = std::fs::remove_file(&timeline);
    let mut rows = csv.lines();
    assert_eq!(
        rows.next(),
        Some("t_ms,answered,worst_latency_ms,worst_wake_lag_ms")
    );
    let answered: u64 = rows
        .map(|r| {
            r.split(',')
                .nth(1)
                .expect("answered column")
                .parse::<u64>()
                .expect("a count")
        })
        .sum();
    assert_eq!(answered, report.latencies[0].count);
    assert_eq!(
        report.latencies[1].name,
        "machine: wake-up lag of a 1 ms sleep"
    );
    assert!(report.latencies[1].count > 100, "{:?}", report.latencies[1]);
    args.timeline = None;

    args.write_concern = Some(WriteConcern::Persisted);
    args.connections = 2;
    let report = scenarios::run(&ctx, &ScenarioArgs::WriteAck(args.clone()), &[])
        .await
        .expect("runs");
    assert!(report.passed, "{}", report.to_markdown());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_is_a_failure_never_a_success() {
    let server = TestServer::start();
    let ctx = ctx(&server, Duration::from_secs(1), "rej");
    let mut conn = ctx.connect().await.expect("connects");
    // An op with neither record nor OR fields cannot be classified (core.md §5.2 rule 5).
    let bad = map(vec![
        ("id", rmpv::Value::from("1")),
        ("mapName", rmpv::Value::from("bench-refused")),
        ("key", rmpv::Value::from("k")),
        ("opType", rmpv::Value::from("PUT")),
    ]);
    let mut tracker = InFlight::new(None, Duration::from_secs(10), Duration::from_secs(1));
    tracker.sent(SentBatch {
        first_id: 1,
        last_id: 1,
        sent_at: Instant::now(),
    });
    conn.send(&encode::op_batch_raw(vec![bad]))
        .await
        .expect("sends");
    let settled = settle(&mut conn.reader, &mut tracker).await;
    assert!(settled.disconnected.is_none());
    assert_eq!(settled.outcomes.len(), 1, "{settled:?}");
    let outcome = &settled.outcomes[0];
    assert!(
        !outcome.succeeded(),
        "a refused batch must not count as acknowledged: {outcome:?}"
    );
    assert!(
        outcome.failures.iter().any(|f| matches!(
            f.kind,
            FailureKind::ProtocolError { .. } | FailureKind::OpRejected { .. }
        )),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_delivers_every_write_to_every_subscriber() {
    let server = TestServer::start();
    let ctx = ctx(&server, Duration::from_secs(1), "fan");
    let args = FanOutArgs {
        subscribers: 3,
        write_interval_ms: 50,
        keys: 5,
        delivery_timeout_ms: 5_000,
        map: None,
    };
    let report = scenarios::run(&ctx, &ScenarioArgs::FanOut(args), &[])
        .await
        .expect("runs");
    assert!(report.passed, "{}", report.to_markdown());
    let writes = report.metric_value("writes acked").expect("writes");
    assert!(writes >= 3.0, "{}", report.to_markdown());
    assert_eq!(report.metric_value("updates received"), Some(writes * 3.0));
    assert_eq!(report.metric_value("updates missing"), Some(0.0));
    assert_eq!(report.latencies[0].count as f64, writes * 3.0);
}

/// Runs initial-sync over 120 records with 5% changed against `server`.
async fn small_initial_sync(server: &TestServer) -> Report {
    let ctx = ctx(server, Duration::from_secs(1), "sync");
    let args = InitialSyncArgs {
        records: 120,
        change_percent: 5.0,
        seed_batch: 50,
        seed_connections: 2,
        value_bytes: 16,
        map: None,
    };
    let report = scenarios::run(&ctx, &ScenarioArgs::InitialSync(args), &[])
        .await
        .expect("runs");
    assert!(report.passed, "{}", report.to_markdown());
    assert_eq!(
        report.metric_value("full sync records received"),
        Some(120.0)
    );
    assert_eq!(report.metric_value("keys changed"), Some(6.0));
    let ratio = report.metric_value("delta/full bytes").expect("ratio");
    assert!(
        ratio > 0.0 && ratio < 0.5,
        "delta should cost a fraction of the full sync: {ratio}"
    );
    assert_eq!(
        report
            .metric_value("up-to-date resync bytes")
            .map(|b| b < 1_000.0),
        Some(true)
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_sync_gets_just_the_changed_records_pushed_ahead_of_the_root() {
    let server = TestServer::start();
    let report = small_initial_sync(&server).await;
    assert_eq!(report.metric_value("delta sync records pushed"), Some(6.0));
    assert_eq!(report.metric_value("delta sync requests"), Some(0.0));
    assert_eq!(report.metric_value("delta sync leaves fetched"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_push_delta_sync_walks_to_only_the_leaves_that_changed() {
    let server = TestServer::start_with_env(&[("TOPGUN_SYNC_DELTA_PUSH_LIMIT", "0")]);
    let report = small_initial_sync(&server).await;
    assert_eq!(report.metric_value("delta sync records pushed"), Some(0.0));
    assert_eq!(
        report.metric_value("delta sync leaves fetched"),
        report.metric_value("leaves holding changed keys")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_answers_are_timed_and_counted() {
    let server = TestServer::start();
    let ctx = ctx(&server, Duration::from_secs(1), "search");
    let args = SearchArgs {
        connections: 2,
        records: 50,
        limit: 5,
        interval_ms: 10,
        map: None,
    };
    let report = scenarios::run(&ctx, &ScenarioArgs::Search(args), &[])
        .await
        .expect("runs");
    // A SEARCH_RESP carrying `error` would make this fail (see the unit tests of `search`).
    assert!(report.passed, "{}", report.to_markdown());
    let answered = report.metric_value("searches answered").expect("answered");
    assert!(answered >= 2.0, "{}", report.to_markdown());
    assert_eq!(report.metric_value("searches sent"), Some(answered));
    // The load-phase histogram holds every answered search except the separately timed first one.
    assert_eq!(report.latencies[0].count as f64, answered - 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_writes_fail_the_scenario_and_are_listed() {
    // Values above the server's limit are refused with 413 (core.md §3.4).
    let server = TestServer::start_with_env(&[("TOPGUN_MAX_VALUE_BYTES", "100")]);
    let ctx = ctx(&server, Duration::from_millis(500), "big");
    let args = WriteAckArgs {
        connections: 2,
        batch_size: 3,
        interval_ms: 20,
        write_concern: None,
        write_timeout_ms: None,
        key_space: 10,
        value_bytes: 500,
        map: None,
        timeline: None,
    };
    let report = scenarios::run(&ctx, &ScenarioArgs::WriteAck(args), &[])
        .await
        .expect("runs");
    assert!(!report.passed);
    assert_eq!(
        report.metric_value("ops acked"),
        Some(0.0),
        "{}",
        report.to_markdown()
    );
    assert!(report.metric_value("ops sent").expect("sent") > 0.0);
    assert!(
        report
            .failures
            .iter()
            .any(|f| f.kind.starts_with("OP_REJECTED")),
        "{:?}",
        report.failures
    );
    assert!(
        report.failures.iter().any(|f| f.kind.starts_with("ERROR")),
        "{:?}",
        report.failures
    );
    assert_eq!(
        report.latencies[0].count, 0,
        "refused batches are not timed as acknowledged"
    );
}

/// Runs write-flood against a fresh test-server; checks that something was sent and every
/// op was acknowledged, and returns the report.
async fn flood_answered_in_full(tag: &str, flood_for: Duration, args: WriteFloodArgs) -> Report {
    let server = TestServer::start();
    let ctx = ctx(&server, flood_for, tag);
    let report = scenarios::run(&ctx, &ScenarioArgs::WriteFlood(args), &[])
        .await
        .expect("runs");
    let sent = report.metric_value("ops sent").expect("sent");
    let acked = report.metric_value("ops acked").expect("acked");
    assert!(sent > 0.0);
    assert_eq!(acked, sent, "{}", report.to_markdown());
    assert!(report.passed, "{}", report.to_markdown());
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_flood_accounts_for_every_batch() {
    // Bounded in flight and a long drain: the server answers everything.
    let args = WriteFloodArgs {
        connections: 2,
        batch_size: 5,
        max_in_flight: 20,
        drain_secs: 10,
        key_space: 20,
        value_bytes: 8,
        map: None,
    };
    let report = flood_answered_in_full("flood", Duration::from_millis(500), args).await;
    assert!(
        report
            .metric_value("peak batches in flight on one connection")
            .expect("peak")
            <= 20.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbounded_flood_gets_its_last_batches_answered_after_the_deadline() {
    // Unbounded pipelining fills the socket, so the flood's deadline usually cuts a flush
    // short; the frames still queued must reach the server and be answered in the drain.
    let args = WriteFloodArgs {
        connections: 4,
        batch_size: 10,
        max_in_flight: 0,
        drain_secs: 30,
        key_space: 100,
        value_bytes: 64,
        map: None,
    };
    flood_answered_in_full("flood-unbounded", Duration::from_millis(800), args).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_stop_the_run() {
    let server = TestServer::start();
    let bad = token::mint("not-the-secret", "x", Duration::from_secs(60)).expect("token");
    let opts = ConnectOptions {
        url: server.url(),
        auth: Auth::Token(bad),
        handshake_timeout: Duration::from_secs(10),
    };
    assert!(matches!(
        Conn::connect(&opts).await,
        Err(BenchError::AuthFailed(_))
    ));
    let none = ConnectOptions {
        auth: Auth::None,
        ..opts
    };
    assert!(matches!(
        Conn::connect(&none).await,
        Err(BenchError::AuthRequired)
    ));
}

#[test]
fn the_binary_exits_non_zero_on_failures_unless_allowed() {
    let server = TestServer::start_with_env(&[("TOPGUN_MAX_VALUE_BYTES", "100")]);
    let dir = std::env::temp_dir().join(format!("topgun-bench-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let json = dir.join("write-ack.json");
    let md = dir.join("README.md");
    let run = |value_bytes: &str, extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_topgun-bench"));
        cmd.args([
            "--url",
            &server.url(),
            "--duration",
            "1",
            "write-ack",
            "--connections",
            "2",
            "--interval-ms",
            "50",
        ]);
        cmd.args(["--value-bytes", value_bytes]);
        cmd.args([
            "--json",
            json.to_str().expect("utf-8 path"),
            "--markdown",
            md.to_str().expect("utf-8 path"),
        ]);
        cmd.args(extra);
        cmd.output().expect("runs topgun-bench")
    };
    let failed = run("500", &[]);
    assert_eq!(
        failed.status.code(),
        Some(1),
        "stderr: {}",
        String::from_utf8_lossy(&failed.stderr)
    );
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("FAILED") && stderr.contains("OP_REJECTED (413)"),
        "{stderr}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written"))
            .expect("valid json");
    assert_eq!(report["passed"], false);
    assert_eq!(report["scenario"], "write-ack");

    let allowed = run("500", &["--allow-errors"]);
    assert_eq!(
        allowed.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&allowed.stderr)
    );

    let fine = run("10", &[]);
    assert_eq!(
        fine.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&fine.stderr)
    );
    assert!(String::from_utf8_lossy(&fine.stdout).contains("### write-ack — PASS"));
    let markdown = std::fs::read_to_string(&md).expect("markdown written");
    assert_eq!(markdown.matches("### write-ack — FAIL").count(), 2);
    assert_eq!(markdown.matches("### write-ack — PASS").count(), 1);

    let unreachable = Command::new(env!("CARGO_BIN_EXE_topgun-bench"))
        .args([
            "--url",
            "ws://127.0.0.1:1/ws",
            "--duration",
            "1",
            "write-ack",
            "--connections",
            "1",
        ])
        .output()
        .expect("runs topgun-bench");
    assert_eq!(
        unreachable.status.code(),
        Some(2),
        "a run that cannot start is not a benchmark result"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
