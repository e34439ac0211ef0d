//! The trace of a request crosses the gRPC hops: a `traceparent` sent to the gateway shows
//! up, as the same trace id, in the request spans of the gateway and of every shard the
//! request reached — over the network in the distributed suite, and in-process in the
//! single-process binary.

use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use topgun_tests::process::Service;
use topgun_tests::{Layout, Suite};

/// Trace id of the request (the W3C specification's example).
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
/// Log filter that shows the request spans and their `handled` lines.
const TRACE_LOG: &str = "warn,topgun_proto::trace_context=debug";
/// The gateway's request and the shard call it makes.
const GATEWAY_PATH: &str = "/api/admin/maps";
const SHARD_PATH: &str = "/topgun.sync.v1.SyncService/ListMaps";

/// Logs in as admin and lists maps (which asks every shard) under [`TRACE_ID`].
async fn list_maps_traced(base: &str) {
    let http = reqwest::Client::new();
    let login: Value = http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"username": "admin", "password": "admin-pass"}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let admin = login["token"].as_str().expect("admin token");
    let listed = http
        .get(format!("{base}{GATEWAY_PATH}"))
        .bearer_auth(admin)
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .send()
        .await
        .expect("maps");
    assert_eq!(listed.status(), 200);
}

/// Whether the log at `file` has a `handled` line of the traced request to `path`.
fn logged(file: &Path, path: &str) -> bool {
    std::fs::read_to_string(file).is_ok_and(|log| {
        log.lines()
            .any(|line| line.contains(TRACE_ID) && line.contains(path) && line.contains("handled"))
    })
}

/// Waits for every `(file, path)` pair to be logged; panics with the logs otherwise.
async fn expect_logged(expected: &[(&Path, &str)]) {
    let found = topgun_tests::eventually(Duration::from_secs(10), || async {
        expected
            .iter()
            .all(|(file, path)| logged(file, path))
            .then_some(())
    })
    .await;
    if found.is_none() {
        let logs: Vec<String> = expected
            .iter()
            .map(|(file, path)| {
                let log = std::fs::read_to_string(file).unwrap_or_default();
                format!(
                    "--- {} (want {path}): {}\n{}",
                    file.display(),
                    logged(file, path),
                    log.lines().take(30).collect::<Vec<_>>().join("\n")
                )
            })
            .collect();
        panic!(
            "trace {TRACE_ID} not logged everywhere:\n{}",
            logs.join("\n")
        );
    }
}

#[tokio::test]
async fn an_http_request_s_trace_id_is_logged_by_the_gateway_and_every_shard_it_called() {
    let logs = tempfile::tempdir().expect("log dir");
    let suite = Suite::start(Layout {
        logs: Some((logs.path().to_path_buf(), TRACE_LOG.into())),
        ..Layout::default()
    })
    .await;
    list_maps_traced(&suite.http_url()).await;
    let gateway = logs.path().join("gateway-0.log");
    let shard_0 = logs.path().join("sync-service-0.log");
    let shard_1 = logs.path().join("sync-service-1.log");
    expect_logged(&[
        (&gateway, GATEWAY_PATH),
        (&shard_0, SHARD_PATH),
        (&shard_1, SHARD_PATH),
    ])
    .await;
}

#[tokio::test]
async fn the_single_process_binary_s_shard_logs_the_trace_of_an_in_process_call() {
    let logs = tempfile::tempdir().expect("log dir");
    let log_file = logs.path().join("test-server.log");
    let mut server = Service::spawn_logged(
        "test-server",
        &["--port", "0"],
        &[
            ("RUST_LOG", TRACE_LOG.into()),
            ("TOPGUN_ADMIN_PASSWORD", "admin-pass".into()),
        ],
        Some(log_file.clone()),
    );
    let port = server.wait_for_port(Duration::from_secs(60)).await;
    list_maps_traced(&format!("http://127.0.0.1:{port}")).await;
    expect_logged(&[(&log_file, GATEWAY_PATH), (&log_file, SHARD_PATH)]).await;
    server.terminate(Duration::from_secs(10)).await;
}
