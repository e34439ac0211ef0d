//! The ops port over real HTTP: routes, status codes, content type, lifecycle, stop.

use prometheus::{IntCounter, Registry};
use std::net::SocketAddr;
use topgun_ops::{HealthState, OpsServer, METRICS_CONTENT_TYPE};

async fn start() -> (OpsServer, HealthState, IntCounter, String) {
    let registry = Registry::new();
    let counter = IntCounter::new("topgun_test_things_total", "Things").expect("valid");
    registry
        .register(Box::new(counter.clone()))
        .expect("registers");
    let health = HealthState::new("test-service");
    health.set_details(|| {
        let mut m = serde_json::Map::new();
        m.insert("backend".into(), "null".into());
        m
    });
    let listener = topgun_ops::bind("TEST_HTTP_ADDR", SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("ephemeral port");
    let server = OpsServer::spawn(listener, registry, health.clone());
    let base = format!("http://{}", server.local_addr());
    (server, health, counter, base)
}

async fn status(url: &str) -> u16 {
    reqwest::get(url).await.expect("request").status().as_u16()
}

#[tokio::test]
async fn health_follows_the_lifecycle_and_metrics_are_prometheus_text() {
    let (server, health, counter, base) = start().await;

    assert_eq!(status(&format!("{base}/health/live")).await, 200);
    assert_eq!(status(&format!("{base}/health/ready")).await, 503);
    let doc: serde_json::Value = reqwest::get(format!("{base}/health"))
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(doc["service"], "test-service");
    assert_eq!(doc["state"], "starting");
    assert_eq!(doc["backend"], "null");
    assert!(doc["uptime_secs"].is_u64());

    health.set_ready();
    assert_eq!(status(&format!("{base}/health/ready")).await, 200);

    counter.inc_by(3);
    let resp = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some(METRICS_CONTENT_TYPE)
    );
    let text = resp.text().await.expect("body");
    assert!(
        text.contains("# TYPE topgun_test_things_total counter"),
        "{text}"
    );
    assert!(text.contains("topgun_test_things_total 3"), "{text}");

    assert_eq!(status(&format!("{base}/nope")).await, 404);

    health.set_draining();
    assert_eq!(status(&format!("{base}/health/ready")).await, 503);
    assert_eq!(status(&format!("{base}/health/live")).await, 200);

    let addr = server.local_addr();
    tokio::time::timeout(std::time::Duration::from_secs(10), server.stop())
        .await
        .expect("stops promptly");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the port is closed after stop"
    );
}

#[tokio::test]
async fn idle_connections_do_not_stop_the_server() {
    let (server, _health, _counter, base) = start().await;
    // Open (and keep) more idle connections than the cap: they wait in the backlog or
    // hold slots, but stop() still completes within the grace period.
    let mut idle = Vec::new();
    for _ in 0..(topgun_ops::server::MAX_CONNECTIONS + 4) {
        idle.push(
            tokio::net::TcpStream::connect(server.local_addr())
                .await
                .expect("connect"),
        );
    }
    tokio::time::timeout(
        std::time::Duration::from_secs(2) + topgun_ops::server::SHUTDOWN_GRACE,
        server.stop(),
    )
    .await
    .expect("stop is bounded");
    drop(idle);
    assert!(reqwest::get(format!("{base}/health/live")).await.is_err());
}
