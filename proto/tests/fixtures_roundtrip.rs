//! Every byte-exact fixture produced by the TypeScript client decodes into its typed
//! message, matches its JSON rendering, and survives our own encode/decode round trip.

use std::path::{Path, PathBuf};
use topgun_proto::wire::{self, HttpSyncRequest, HttpSyncResponse, Message};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures folder exists")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".msgpack").map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

fn read(name: &str, ext: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join(format!("{name}.{ext}"))).expect("fixture readable")
}

/// Keys present in a fixture that the protocol says receivers ignore
/// (fixtures/README.md "The values are illustrative").
fn documented_extras(name: &str) -> &'static [&'static str] {
    match name {
        "AUTH_REQUIRED" => &["reason"],
        "SYNC_INIT" => &["rootHash", "bucketHashes"],
        _ => &[],
    }
}

/// JSON equality where numbers compare by value (msgpackr sends 30 as an int and
/// 1700000000000 as a float; our types may hold either).
fn json_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (a, b) {
        (J::Number(x), J::Number(y)) => x.as_f64() == y.as_f64(),
        (J::Array(x), J::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (J::Object(x), J::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn expected_json(name: &str) -> serde_json::Value {
    let mut json: serde_json::Value =
        serde_json::from_slice(&read(name, "json")).expect("fixture json parses");
    if let Some(obj) = json.as_object_mut() {
        for extra in documented_extras(name) {
            obj.remove(*extra);
        }
    }
    match name {
        // Node's Buffer rendering of the `bin` field is just the bytes.
        "BATCH" => json["data"] = json["data"]["data"].take(),
        // Upstream nests the event twice; the TS client (and we) read `event` directly.
        "JOURNAL_EVENT" => json["event"] = json["event"]["event"].take(),
        _ => {}
    }
    json
}

#[test]
fn there_are_at_least_forty_fixtures() {
    assert!(fixture_names().len() >= 40, "{:?}", fixture_names());
}

#[test]
fn every_union_fixture_decodes_matches_its_json_and_round_trips() {
    let mut checked = 0;
    for name in fixture_names() {
        if name.starts_with("HTTP_SYNC_") {
            continue;
        }
        let bytes = read(&name, "msgpack");
        let message = wire::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            message.type_name(),
            name,
            "{name} decodes to its own variant"
        );

        let as_json = serde_json::to_value(&message).expect("serializes to json");
        let expected = expected_json(&name);
        assert!(
            json_eq(&as_json, &expected),
            "{name}:\n ours: {as_json}\n json: {expected}"
        );

        let reencoded = wire::encode(&message);
        let again = wire::decode(&reencoded).unwrap_or_else(|e| panic!("{name} re-decode: {e}"));
        assert_eq!(again, message, "{name} round trip");
        checked += 1;
    }
    assert_eq!(checked, 59, "all 59 union fixtures checked");
}

#[test]
fn discriminators_route_to_their_variants() {
    let decode = |name: &str| wire::decode(&read(name, "msgpack")).expect("decodes");
    assert!(matches!(decode("AUTH"), Message::Auth(a) if a.token.starts_with("eyJ")));
    assert!(matches!(decode("PING"), Message::Ping(_)));
    assert!(matches!(decode("SEARCH"), Message::Search { .. }));
    assert!(
        matches!(decode("JOURNAL_EVENT"), Message::JournalEvent(e) if e.event.key == "order-7")
    );
    assert!(matches!(
        decode("PARTITION_MAP_REQUEST"),
        Message::PartitionMapRequest { payload: Some(p) } if p.current_version == Some(5)
    ));
    assert!(matches!(decode("BATCH"), Message::Batch(b) if b.data == [0xde, 0xad, 0xbe, 0xef]));
}

#[test]
fn http_sync_bodies_decode_with_their_own_types_and_round_trip() {
    let req: HttpSyncRequest =
        wire::decode_body(&read("HTTP_SYNC_REQUEST", "msgpack")).expect("request decodes");
    assert_eq!(req.client_id, "client-1");
    assert!(json_eq(
        &serde_json::to_value(&req).expect("json"),
        &expected_json("HTTP_SYNC_REQUEST")
    ));
    let again: HttpSyncRequest = wire::decode_body(&wire::encode_body(&req)).expect("re-decodes");
    assert_eq!(again, req);

    let resp: HttpSyncResponse =
        wire::decode_body(&read("HTTP_SYNC_RESPONSE", "msgpack")).expect("response decodes");
    assert_eq!(resp.server_hlc.millis, 1_700_000_000_000);
    assert!(resp.ack.is_some() && resp.deltas.is_some());
    assert!(json_eq(
        &serde_json::to_value(&resp).expect("json"),
        &expected_json("HTTP_SYNC_RESPONSE")
    ));
    let again: HttpSyncResponse = wire::decode_body(&wire::encode_body(&resp)).expect("re-decodes");
    assert_eq!(again, resp);
}

/// Message types without a fixture, checked against the examples of the specification.
#[test]
fn spec_examples_without_fixtures_round_trip() {
    let examples = [
        r#"{"type":"SYNC_RESP_LEAF","payload":{"mapName":"todos","path":"f55","records":[{"key":"user-1","record":{"value":{"name":"Alice"},"timestamp":{"millis":1700000000000,"counter":1,"nodeId":"node-1"}}}]}}"#,
        r#"{"type":"ORMAP_SYNC_RESP_ROOT","payload":{"mapName":"tags","rootHash":145664460,"timestamp":{"millis":1700000000100,"counter":0,"nodeId":"server-1"}}}"#,
        r#"{"type":"ORMAP_MERKLE_REQ_BUCKET","payload":{"mapName":"tags","path":"f4"}}"#,
        r#"{"type":"ORMAP_SYNC_RESP_BUCKETS","payload":{"mapName":"tags","path":"f4","buckets":{"1":145664460}}}"#,
        r#"{"type":"ORMAP_SYNC_RESP_LEAF","payload":{"mapName":"tags","path":"f41","entries":[{"key":"tags","records":[{"value":"Alice","timestamp":{"millis":1700000000000,"counter":0,"nodeId":"n1"},"tag":"1700000000000:0:n1"}],"tombstones":["1699999999000:0:n2"]}]}}"#,
        r#"{"type":"ORMAP_DIFF_REQUEST","payload":{"mapName":"tags","keys":["tags","colors"]}}"#,
        r#"{"type":"ORMAP_DIFF_RESPONSE","payload":{"mapName":"tags","entries":[{"key":"tags","records":[],"tombstones":[]}]}}"#,
        r#"{"type":"ORMAP_PUSH_DIFF","payload":{"mapName":"tags","entries":[{"key":"tags","records":[{"value":"Bob","timestamp":{"millis":1700000000200,"counter":0,"nodeId":"c1"},"tag":"1700000000200:0:c1"}],"tombstones":["1700000000000:0:n1"]}]}}"#,
        r#"{"type":"PARTITION_MAP_DELTA","payload":{"version":8,"previousVersion":7,"changes":[{"partitionId":12,"previousOwner":"node-1","newOwner":"node-2","reason":"REBALANCE"}],"timestamp":1700000000000}}"#,
        r#"{"type":"QUERY_SYNC_INIT","payload":{"queryId":"5b0f","rootHash":2849231977}}"#,
        r#"{"type":"COUNTER_UPDATE","payload":{"name":"likes:post-1","state":{"positive":{"client-a":5.5,"client-b":2.0},"negative":{"client-a":1.0}}}}"#,
        r#"{"type":"ENTRY_PROCESS_BATCH","requestId":"e-2","mapName":"stock","keys":["sku-1","sku-2"],"processor":{"name":"reset","code":"return { value: 0 };"}}"#,
        r#"{"type":"ENTRY_PROCESS_BATCH_RESPONSE","requestId":"e-2","results":{"sku-1":{"success":true,"newValue":0},"sku-2":{"success":false,"error":"x"}}}"#,
        r#"{"type":"JOURNAL_READ","requestId":"journal_1","fromSequence":"0","limit":100}"#,
        r#"{"type":"JOURNAL_READ_RESPONSE","requestId":"journal_1","events":[],"hasMore":false}"#,
        r#"{"type":"JOURNAL_UNSUBSCRIBE","subscriptionId":"journal_1"}"#,
        r#"{"type":"UNREGISTER_RESOLVER","requestId":"ru-1","mapName":"bookings","resolverName":"fww"}"#,
        r#"{"type":"HYBRID_SEARCH","payload":{"requestId":"h-1","mapName":"docs","queryText":"vector databases","methods":["fullText","exact"],"k":5,"predicate":{"op":"eq","attribute":"lang","value":"en"}}}"#,
        r#"{"type":"HYBRID_SEARCH_UPDATE","payload":{"subscriptionId":"hs-1","key":"d-8","score":0.01639,"methodScores":{"fullText":1.12},"changeType":"ENTER"}}"#,
        r#"{"type":"VECTOR_SEARCH","payload":{"id":"v-1","mapName":"docs","queryVector":{"0":1,"1":2},"k":3,"options":{"includeValue":false,"minScore":0.2}}}"#,
        r#"{"type":"SQL_QUERY","payload":{"sql":"SELECT 1","queryId":"s-1"}}"#,
        r#"{"type":"SQL_QUERY_RESP","payload":{"queryId":"s-1","columns":["name","price"],"rows":[["Mouse",59.9],["Desk",240]]}}"#,
        r#"{"type":"HYBRID_QUERY_SUBSCRIBE","payload":{"subscriptionId":"x","mapName":"articles","predicate":{"op":"match","attribute":"body","query":"rust"},"where":{"status":"published"},"sort":{"_score":"desc"},"limit":20}}"#,
        r#"{"type":"SERVER_EVENT","payload":{"mapName":"users","eventType":"REMOVE","key":"user-1","record":{"value":null,"timestamp":{"millis":1700000000000,"counter":1,"nodeId":"node-1"}}},"timestamp":{"millis":1700000000050,"counter":0,"nodeId":"server-1"}}"#,
    ];
    for example in examples {
        let json: serde_json::Value = serde_json::from_str(example).expect("example parses");
        let bytes = rmp_serde::to_vec_named(&json).expect("json encodes as msgpack");
        let message = wire::decode(&bytes).unwrap_or_else(|e| panic!("{example}: {e}"));
        assert_eq!(
            message.type_name(),
            json["type"].as_str().expect("type"),
            "{example}"
        );
        let ours = serde_json::to_value(&message).expect("serializes");
        assert!(json_eq(&ours, &json), "{example}\n ours: {ours}");
        assert_eq!(
            wire::decode(&wire::encode(&message)).expect("re-decodes"),
            message
        );
    }
}
