//! The ops HTTP port of every service process (storage, sync shards, search replica):
//! liveness, readiness, the `/health` document, and Prometheus metrics that reflect
//! writes made through the gateway.

use crate::common::*;
use serde_json::{json, Value};
use std::time::Duration;
use topgun_proto::partition::{partition_of, shard_of_partition};
use topgun_tests::{token, Layout, Suite, WsClient};

/// Records written, spread over both shards by their keys.
const RECORDS: u64 = 20;

/// The value of one sample line (`series` includes its labels) of a text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Sum of every sample of a metric family (all label combinations).
fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let series_name = series.split('{').next()?;
            (series_name == name).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

async fn get(url: &str) -> reqwest::Response {
    reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// Checks liveness, readiness and `/health` of one process; returns its `/metrics`.
async fn check_process(base: &str, service: &str) -> String {
    assert_eq!(get(&format!("{base}/health/live")).await.status(), 200);
    // Readiness may lag the gateway's by a moment (e.g. a search bootstrap).
    let ready = topgun_tests::eventually(Duration::from_secs(20), || async {
        let status = reqwest::get(format!("{base}/health/ready"))
            .await
            .ok()?
            .status();
        (status == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "{service} at {base} never became ready");
    let doc: Value = get(&format!("{base}/health"))
        .await
        .json()
        .await
        .expect("health JSON");
    assert_eq!(doc["service"], service, "{doc}");
    assert_eq!(doc["state"], "ready", "{doc}");
    assert!(doc["uptime_secs"].is_u64(), "{doc}");

    let resp = get(&format!("{base}/metrics")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    resp.text().await.expect("metrics body")
}

#[tokio::test]
async fn every_service_process_serves_health_and_metrics() {
    let suite = Suite::start(Layout {
        search_replicas: 1,
        ..Default::default()
    })
    .await;
    let shard_count = suite.shard_http.len();
    assert_eq!(shard_count, 2);

    let map = map_name("ops");
    let keys: Vec<String> = (0..RECORDS).map(|i| format!("rec-{i}")).collect();
    let mut c = WsClient::connect_authed(&suite.ws_url(), &token("u")).await;
    let ops: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            put(
                &(i + 1).to_string(),
                &map,
                key,
                json!({"title": format!("observable record {i}")}),
                1_700_000_000_000 + i as u64,
                "ops-test",
            )
        })
        .collect();
    c.send(&batch(ops)).await;
    let ack = c.recv_type("OP_ACK").await;
    assert_eq!(ack["payload"]["lastId"], RECORDS.to_string(), "{ack}");

    // Sync shards: each applied exactly the ops of the keys it owns.
    for (index, base) in suite.shard_http.iter().enumerate() {
        let text = check_process(base, "sync-service").await;
        let owned = keys
            .iter()
            .filter(|k| shard_of_partition(partition_of(k), shard_count as u32) == index as u32)
            .count();
        assert!(owned > 0, "the keys should cover shard {index}");
        assert_eq!(
            sample(
                &text,
                "topgun_sync_ops_applied_total{kind=\"lww_put\",result=\"changed\"}"
            ),
            Some(owned as f64),
            "shard {index}:\n{text}"
        );
        assert!(
            total(&text, "topgun_sync_apply_batch_duration_seconds_count") >= 1.0,
            "shard {index}:\n{text}"
        );
        assert!(
            sample(&text, "topgun_sync_change_feed_last_seq").is_some_and(|n| n >= owned as f64),
            "shard {index}:\n{text}"
        );
        // The gateway and the search replica both follow every shard's feed (the
        // replica subscribes right after its bootstrap scan, so allow it a moment).
        let following = topgun_tests::eventually(Duration::from_secs(20), || async {
            let text = reqwest::get(format!("{base}/metrics"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (sample(&text, "topgun_sync_change_feed_subscribers")? >= 2.0).then_some(())
        })
        .await;
        assert!(
            following.is_some(),
            "shard {index}: fewer than 2 feed subscribers"
        );
        for name in [
            "topgun_sync_pending_rows",
            "topgun_sync_topic_messages_skipped_total",
        ] {
            assert!(sample(&text, name).is_some(), "{name} on shard {index}");
        }
    }

    // Storage (null backend): every shard's batch was committed; the null store keeps
    // no rows, so rows written stays 0 but is exposed.
    let storage = suite.storage_http.as_deref().expect("distributed suite");
    let text = check_process(storage, "storage-service").await;
    assert!(
        sample(&text, "topgun_storage_write_batches_total").is_some_and(|n| n >= 2.0),
        "{text}"
    );
    assert!(
        sample(&text, "topgun_storage_mutations_total").is_some_and(|n| n >= RECORDS as f64),
        "{text}"
    );
    assert!(
        sample(&text, "topgun_storage_rows_written_total").is_some(),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "topgun_storage_batch_write_duration_seconds_count{backend=\"null\"}"
        )
        .is_some_and(|n| n >= 2.0),
        "{text}"
    );
    // Each shard loaded its partitions at start-up.
    assert!(
        sample(&text, "topgun_storage_load_calls_total{call=\"load_map\"}")
            .is_some_and(|n| n >= shard_count as f64),
        "{text}"
    );

    // Search: the records become searchable, one search is counted, and the lag of
    // both shards is reported.
    let search = &suite.search_http[0];
    check_process(search, "search-service").await;
    let indexed = topgun_tests::eventually(Duration::from_secs(20), || async {
        let text = reqwest::get(format!("{search}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (sample(&text, "topgun_search_documents_indexed")? >= RECORDS as f64).then_some(())
    })
    .await;
    assert!(indexed.is_some(), "search never indexed the records");
    c.send(&json!({"type": "SEARCH", "payload": {"requestId": "r1", "mapName": map, "query": "observable"}}))
        .await;
    let resp = c.recv_type("SEARCH_RESP").await;
    assert!(resp["payload"].get("error").is_none(), "{resp}");
    let text = get(&format!("{search}/metrics"))
        .await
        .text()
        .await
        .expect("metrics body");
    assert!(
        sample(
            &text,
            "topgun_search_searches_total{kind=\"one_shot\",outcome=\"ok\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        total(&text, "topgun_search_search_duration_seconds_count") >= 1.0,
        "{text}"
    );
    assert!(
        sample(&text, "topgun_search_commits_total").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        sample(&text, "topgun_search_live_subscriptions").is_some(),
        "{text}"
    );
    for shard in &suite.shard_addrs {
        let series = format!("topgun_search_index_lag_events{{shard=\"{shard}\"}}");
        assert!(sample(&text, &series).is_some(), "{series} in\n{text}");
    }
}
