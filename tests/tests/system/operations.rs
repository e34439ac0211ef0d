//! The operator surface: health, metrics, admin API (auth failures, invalid settings),
//! the dashboard's SPA fallback, and graceful shutdown.

use crate::common::*;
use serde_json::{json, Value};
use std::time::Duration;
use topgun_tests::ws_client::{encode, Received};
use topgun_tests::{admin_token, token, TestServer, WsClient};

const ADMIN_PASSWORD: &str = "s3cret-admin";

async fn server() -> TestServer {
    TestServer::start(&[("TOPGUN_ADMIN_PASSWORD", ADMIN_PASSWORD.to_string())]).await
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

#[tokio::test]
async fn health_probes_and_metrics_report_real_state() {
    let server = server().await;
    let _client = WsClient::connect_authed(&server.ws_url(), &token("u")).await;
    let health: Value = http()
        .get(format!("{}/health", server.http_url()))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(health["state"], "ready");
    assert_eq!(health["connections"], 1);
    assert!(health["uptime_secs"].is_u64());
    assert_eq!(health["services"]["sync"][0]["reachable"], true);
    for path in ["/health/live", "/health/ready"] {
        assert_eq!(
            http()
                .get(format!("{}{path}", server.http_url()))
                .send()
                .await
                .expect("probe")
                .status(),
            200,
            "{path}"
        );
    }
    let metrics = http()
        .get(format!("{}/metrics", server.http_url()))
        .send()
        .await
        .expect("metrics");
    assert!(metrics.headers()["content-type"]
        .to_str()
        .is_ok_and(|c| c.starts_with("text/plain; version=0.0.4")));
    let text = metrics.text().await.expect("text");
    assert!(text.contains("topgun_active_connections 1"), "{text}");
    assert!(
        text.contains("topgun_messages_in_total{type=\"AUTH\"}"),
        "{text}"
    );
    let unknown = http()
        .get(format!("{}/no-such-path", server.http_url()))
        .send()
        .await
        .expect("404");
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn admin_routes_require_an_admin_token() {
    let server = server().await;
    let url = format!("{}/api/admin/maps", server.http_url());
    let missing = http().get(&url).send().await.expect("request");
    assert_eq!(missing.status(), 401);
    assert_eq!(
        missing.json::<Value>().await.expect("json")["message"],
        "missing or invalid Bearer token"
    );
    let bad = http()
        .get(&url)
        .bearer_auth("not-a-jwt")
        .send()
        .await
        .expect("request");
    assert_eq!(bad.status(), 401);
    let user = http()
        .get(&url)
        .bearer_auth(token("u"))
        .send()
        .await
        .expect("request");
    assert_eq!(user.status(), 403);
    assert_eq!(
        user.json::<Value>().await.expect("json")["message"],
        "admin role required"
    );
    assert_eq!(
        http()
            .get(&url)
            .bearer_auth(admin_token())
            .send()
            .await
            .expect("request")
            .status(),
        200
    );
    // /api/status is public.
    let status: Value = http()
        .get(format!("{}/api/status", server.http_url()))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(status["configured"], true);
    assert_eq!(status["mode"], "normal");
}

#[tokio::test]
async fn login_issues_admin_tokens_for_the_right_credentials_only() {
    let server = server().await;
    let url = format!("{}/api/auth/login", server.http_url());
    let wrong = http()
        .post(&url)
        .json(&json!({"username": "admin", "password": "nope"}))
        .send()
        .await
        .expect("login");
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        wrong.json::<Value>().await.expect("json")["message"],
        "invalid credentials"
    );
    let ok = http()
        .post(&url)
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(ok.status(), 200);
    let token = ok.json::<Value>().await.expect("json")["token"]
        .as_str()
        .expect("token")
        .to_string();
    let maps = http()
        .get(format!("{}/api/admin/maps", server.http_url()))
        .bearer_auth(&token)
        .send()
        .await
        .expect("maps");
    assert_eq!(maps.status(), 200);
}

#[tokio::test]
async fn maps_and_cluster_status_describe_the_data_and_the_members() {
    // `topgun` on SQLite: every role, storage included (the null store of
    // `test-server` runs no storage service).
    let data = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start_bin(
        "topgun",
        &["--port", "0"],
        &[
            ("TOPGUN_DATA_DIR", data.path().to_string_lossy().to_string()),
            ("JWT_SECRET", topgun_tests::TEST_JWT_SECRET.to_string()),
            ("TOPGUN_ADMIN_PASSWORD", ADMIN_PASSWORD.to_string()),
        ],
    )
    .await;
    let map = map_name("admin-maps");
    let mut c = WsClient::connect_authed(&server.ws_url(), &token("u")).await;
    c.send(&batch(
        (0..5)
            .map(|i| {
                put(
                    &(i + 1).to_string(),
                    &map,
                    &format!("k{i}"),
                    json!(i),
                    1_700_000_000_000 + i,
                    "c",
                )
            })
            .collect(),
    ))
    .await;
    c.recv_type("OP_ACK").await;

    let maps: Value = http()
        .get(format!("{}/api/admin/maps", server.http_url()))
        .bearer_auth(admin_token())
        .send()
        .await
        .expect("maps")
        .json()
        .await
        .expect("json");
    let entry = maps["maps"]
        .as_array()
        .expect("maps")
        .iter()
        .find(|m| m["name"] == map.as_str())
        .cloned()
        .expect("our map");
    assert_eq!(entry["entryCount"], 5);
    assert_eq!(entry["kind"], "lww");

    let cluster: Value = http()
        .get(format!("{}/api/admin/cluster/status", server.http_url()))
        .bearer_auth(admin_token())
        .send()
        .await
        .expect("cluster")
        .json()
        .await
        .expect("json");
    assert_eq!(cluster["totalPartitions"], 271);
    assert_eq!(cluster["partitions"].as_array().map(Vec::len), Some(271));
    let roles: Vec<&str> = cluster["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["role"].as_str())
        .collect();
    for role in ["gateway", "sync", "storage", "search"] {
        assert!(roles.contains(&role), "{role} missing from {roles:?}");
    }
}

#[tokio::test]
async fn settings_reject_invalid_values_and_apply_valid_ones() {
    let server = server().await;
    let url = format!("{}/api/admin/settings", server.http_url());
    let before: Value = http()
        .get(&url)
        .bearer_auth(admin_token())
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(before["maxConcurrentOperations"], 1000);
    assert_eq!(before["partitionCount"], 271);

    for (body, field) in [
        (json!({"port": 1}), "port"),
        (
            json!({"maxConcurrentOperations": 0}),
            "maxConcurrentOperations",
        ),
        (json!({"gcIntervalMs": "soon"}), "gcIntervalMs"),
        (json!({"logLevel": "info,[[["}), "logLevel"),
        (
            json!({"maxConcurrentOperations": 50, "gcIntervalMs": -1}),
            "gcIntervalMs",
        ),
    ] {
        let resp = http()
            .put(&url)
            .bearer_auth(admin_token())
            .json(&body)
            .send()
            .await
            .expect("put");
        assert_eq!(resp.status(), 400, "{body}");
        assert_eq!(
            resp.json::<Value>().await.expect("json")["field"],
            field,
            "{body}"
        );
    }
    let after: Value = http()
        .get(&url)
        .bearer_auth(admin_token())
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(after, before, "rejected updates change nothing");

    let ok = http()
        .put(&url)
        .bearer_auth(admin_token())
        .json(&json!({"maxConcurrentOperations": 77, "gcIntervalMs": 120000}))
        .send()
        .await
        .expect("put");
    assert_eq!(ok.status(), 200);
    let updated: Value = ok.json().await.expect("json");
    assert_eq!(updated["maxConcurrentOperations"], 77);
    assert_eq!(updated["gcIntervalMs"], 120000);
    let unauth = http()
        .put(&url)
        .json(&json!({"gcIntervalMs": 5000}))
        .send()
        .await
        .expect("put");
    assert_eq!(unauth.status(), 401);
}

#[tokio::test]
async fn the_dashboard_is_served_with_spa_fallback() {
    let server = server().await;
    for path in ["/admin", "/admin/", "/admin/settings/deep/route"] {
        let resp = http()
            .get(format!("{}{path}", server.http_url()))
            .send()
            .await
            .expect("dashboard");
        assert_eq!(resp.status(), 200, "{path}");
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .is_ok_and(|c| c.starts_with("text/html")),
            "{path}"
        );
        assert!(resp.text().await.expect("html").contains("<html"), "{path}");
    }
    let traversal = http()
        .get(format!("{}/admin/../Cargo.toml", server.http_url()))
        .send()
        .await
        .expect("request");
    assert!(!traversal
        .text()
        .await
        .unwrap_or_default()
        .contains("[workspace]"));
}

#[tokio::test]
async fn sigterm_drains_readiness_closes_clients_finishes_in_flight_work_and_exits_zero() {
    let mut server = server().await;
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(WsClient::connect_authed(&server.ws_url(), &token(&format!("c{i}"))).await);
    }
    // A large HTTP sync request is in flight when the signal arrives.
    let map = map_name("drain");
    let ops: Vec<Value> = (0..12_000u64)
        .map(|i| json!({"id": (i + 1).to_string(), "mapName": map, "key": format!("k{i}"), "record": {"value": i, "timestamp": ts(1_700_000_000_000 + i, 0, "h")}}))
        .collect();
    let body = encode(&json!({"clientId": "c", "clientHlc": ts(1, 0, "c"), "operations": ops}));
    let url = format!("{}/sync", server.http_url());
    let in_flight = tokio::spawn(async move { http().post(url).body(body).send().await });
    tokio::time::sleep(Duration::from_millis(30)).await;

    let ready_url = format!("{}/health/ready", server.http_url());
    topgun_tests::process::send_signal(server.process.pid(), "TERM");
    let saw_503 = topgun_tests::eventually(Duration::from_secs(5), || async {
        let resp = http().get(&ready_url).send().await.ok()?;
        (resp.status() == 503).then_some(())
    })
    .await;

    for client in &mut clients {
        assert_eq!(
            client.next_within(Duration::from_secs(10)).await,
            Received::Closed(1000, "server shutting down".into())
        );
    }
    let resp = in_flight
        .await
        .expect("task")
        .expect("in-flight request completes");
    assert_eq!(resp.status(), 200);
    let body = topgun_tests::ws_client::decode(&resp.bytes().await.expect("body"));
    assert_eq!(body["ack"]["lastId"], "12000");
    assert!(saw_503.is_some(), "readiness turned 503 while draining");
    assert_eq!(
        server.process.terminate(Duration::from_secs(30)).await,
        Some(0)
    );
}

#[tokio::test]
async fn the_openapi_document_validates_and_lists_every_admin_endpoint() {
    let server = server().await;
    let doc: Value = http()
        .get(format!("{}/api/openapi.json", server.http_url()))
        .send()
        .await
        .expect("doc")
        .json()
        .await
        .expect("json");
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "TopGun Admin API");
    for (path, method) in [
        ("/api/status", "get"),
        ("/api/auth/login", "post"),
        ("/api/admin/cluster/status", "get"),
        ("/api/admin/maps", "get"),
        ("/api/admin/settings", "get"),
        ("/api/admin/settings", "put"),
        ("/api/admin/policies", "get"),
        ("/api/admin/policies", "post"),
        ("/api/admin/policies/{id}", "delete"),
        ("/api/openapi.json", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer_auth"]["scheme"],
        "bearer"
    );

    // An independent validator (openapi-spec-validator, installed by scripts/test.sh).
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), serde_json::to_vec(&doc).expect("json")).expect("write");
    let out = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(file.path())
        .output()
        .expect("python3 runs (scripts/test.sh installs openapi-spec-validator)");
    assert!(
        out.status.success(),
        "openapi-spec-validator rejected the document:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Swagger UI renders from assets the gateway serves itself.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let redirect = no_redirect
        .get(format!("{}/api/docs", server.http_url()))
        .send()
        .await
        .expect("docs");
    assert_eq!(redirect.status(), 303);
    let page = http()
        .get(format!("{}/api/docs/", server.http_url()))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(page.contains("/api/docs/swagger-ui-bundle.js") && page.contains("/api/openapi.json"));
    let js = http()
        .get(format!(
            "{}/api/docs/swagger-ui-bundle.js",
            server.http_url()
        ))
        .send()
        .await
        .expect("js");
    assert_eq!(js.status(), 200);
    assert!(js.bytes().await.expect("bytes").len() > 100_000);
}

#[tokio::test]
async fn login_is_rate_limited_per_peer() {
    let server = server().await;
    let url = format!("{}/api/auth/login", server.http_url());
    let mut limited = None;
    // Burst 50, refill 100/s: a tight loop of 200 attempts must hit the limit.
    for _ in 0..200 {
        let resp = http()
            .post(&url)
            .json(&json!({"username": "admin", "password": "guess"}))
            .send()
            .await
            .expect("login");
        if resp.status() == 429 {
            limited = Some(resp);
            break;
        }
        assert_eq!(resp.status(), 401);
    }
    let resp = limited.expect("429 after the burst");
    assert!(resp.headers().contains_key("retry-after"));
    assert!(resp
        .text()
        .await
        .expect("body")
        .starts_with("Too Many Requests! Wait for"));
    // Public routes are not limited.
    assert_eq!(
        http()
            .get(format!("{}/api/status", server.http_url()))
            .send()
            .await
            .expect("status")
            .status(),
        200
    );
}

#[tokio::test]
async fn cors_preflight_allows_any_origin_by_default() {
    let server = server().await;
    let resp = http()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api/status", server.http_url()),
        )
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .expect("preflight");
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let get = http()
        .get(format!("{}/api/status", server.http_url()))
        .header("origin", "https://app.example")
        .send()
        .await
        .expect("get");
    assert_eq!(get.headers()["access-control-allow-origin"], "*");
}

async fn search_hits(c: &mut WsClient, map: &str, query: &str) -> usize {
    let id = uuid::Uuid::new_v4().to_string();
    c.send(
        &json!({"type": "SEARCH", "payload": {"requestId": id, "mapName": map, "query": query}}),
    )
    .await;
    c.recv_type("SEARCH_RESP").await["payload"]["results"]
        .as_array()
        .map_or(0, Vec::len)
}

#[tokio::test]
async fn searchable_maps_are_a_runtime_setting() {
    let server = server().await;
    let url = format!("{}/api/admin/settings", server.http_url());
    let settings: Value = http()
        .get(&url)
        .bearer_auth(admin_token())
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(settings["searchableMaps"], json!(["*"]));
    let bad = http()
        .put(&url)
        .bearer_auth(admin_token())
        .json(&json!({"searchableMaps": "all"}))
        .send()
        .await
        .expect("put");
    assert_eq!(bad.status(), 400);
    assert_eq!(
        bad.json::<Value>().await.expect("json")["field"],
        "searchableMaps"
    );

    let (indexed, skipped) = (map_name("indexed"), map_name("skipped"));
    let ok = http()
        .put(&url)
        .bearer_auth(admin_token())
        .json(&json!({"searchableMaps": [indexed]}))
        .send()
        .await
        .expect("put");
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.json::<Value>().await.expect("json")["searchableMaps"],
        json!([indexed])
    );

    let mut c = WsClient::connect_authed(&server.ws_url(), &token("u")).await;
    c.send(&batch(vec![
        put(
            "1",
            &indexed,
            "a",
            json!({"t": "needle"}),
            1_700_000_000_000,
            "c",
        ),
        put(
            "2",
            &skipped,
            "b",
            json!({"t": "needle"}),
            1_700_000_000_001,
            "c",
        ),
    ]))
    .await;
    c.recv_type("OP_ACK").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while search_hits(&mut c, &indexed, "needle").await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "indexed map never searchable"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        search_hits(&mut c, &skipped, "needle").await,
        0,
        "maps outside the setting are not indexed"
    );

    // Back to every map: the skipped map is rescanned and becomes searchable.
    let all = http()
        .put(&url)
        .bearer_auth(admin_token())
        .json(&json!({"searchableMaps": ["*"]}))
        .send()
        .await
        .expect("put");
    assert_eq!(all.status(), 200);
    while search_hits(&mut c, &skipped, "needle").await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "rescan after the setting changed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
