//! The trace of a request crosses the gRPC hops (ARCHITECTURE.md "Conventions"): a
//! `traceparent` sent to the gateway shows up, as the same trace id, in the request
//! spans of the gateway and of every shard the request reached.

use serde_json::{json, Value};
use std::time::Duration;
use topgun_tests::{Layout, Suite};

/// Trace id of the request (the W3C specification's example).
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test]
async fn an_http_request_s_trace_id_is_logged_by_the_gateway_and_every_shard_it_called() {
    let logs = tempfile::tempdir().expect("log dir");
    let suite = Suite::start(Layout {
        logs: Some((
            logs.path().to_path_buf(),
            "warn,topgun_proto::trace_context=debug".into(),
        )),
        ..Layout::default()
    })
    .await;
    let http = reqwest::Client::new();
    let login: Value = http
        .post(format!("{}/api/auth/login", suite.http_url()))
        .json(&json!({"username": "admin", "password": "admin-pass"}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let admin = login["token"].as_str().expect("admin token");

    // Listing maps asks every shard (ListMaps).
    let listed = http
        .get(format!("{}/api/admin/maps", suite.http_url()))
        .bearer_auth(admin)
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .send()
        .await
        .expect("maps");
    assert_eq!(listed.status(), 200);

    let files = ["gateway-0.log", "sync-service-0.log", "sync-service-1.log"];
    let traced = topgun_tests::eventually(Duration::from_secs(10), || async {
        files
            .iter()
            .all(|file| {
                std::fs::read_to_string(logs.path().join(file)).is_ok_and(|log| {
                    log.lines()
                        .any(|line| line.contains(TRACE_ID) && line.contains("handled"))
                })
            })
            .then_some(())
    })
    .await;
    let contents: Vec<String> = files
        .iter()
        .map(|file| {
            let log = std::fs::read_to_string(logs.path().join(file)).unwrap_or_default();
            format!(
                "--- {file}\n{}",
                log.lines().take(20).collect::<Vec<_>>().join("\n")
            )
        })
        .collect();
    assert!(
        traced.is_some(),
        "trace {TRACE_ID} missing from some service's log:\n{}",
        contents.join("\n")
    );
    let shard_log =
        std::fs::read_to_string(logs.path().join("sync-service-0.log")).expect("shard log");
    assert!(
        shard_log
            .lines()
            .any(|line| line.contains(TRACE_ID) && line.contains("ListMaps")),
        "the shard's span names the call it served:\n{shard_log}"
    );
}
