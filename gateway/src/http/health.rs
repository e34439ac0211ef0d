//! `/health`, `/health/live`, `/health/ready` and `/metrics` (http-admin-ops.md §3).

use crate::state::{Gateway, LifecycleState};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use std::sync::Arc;

/// Overall state, connections, in-flight work, uptime, and each downstream service.
pub async fn health(State(gw): State<Arc<Gateway>>) -> impl IntoResponse {
    let shards: Vec<serde_json::Value> = gw
        .sync
        .shards()
        .iter()
        .map(|s| {
            let info = s.info();
            serde_json::json!({
                "address": s.addr,
                "reachable": s.is_reachable(),
                "following": s.is_following(),
                "nodeId": info.as_ref().map(|i| i.node_id.clone()),
                "partitions": info.as_ref().map(|i| i.partitions.len()),
            })
        })
        .collect();
    let search: Vec<serde_json::Value> = gw
        .search
        .iter()
        .flat_map(|r| r.replicas())
        .map(|r| serde_json::json!({ "address": r.addr, "reachable": r.is_healthy() }))
        .collect();
    Json(serde_json::json!({
        "state": gw.state().as_str(),
        "connections": gw.connections.len(),
        "in_flight": gw.in_flight(),
        "uptime_secs": gw.uptime_secs(),
        "services": { "sync": shards, "search": search },
    }))
}

/// 200 while the process serves HTTP.
pub async fn live() -> StatusCode {
    StatusCode::OK
}

/// 200 only while ready and every sync shard answered its last call.
pub async fn ready(State(gw): State<Arc<Gateway>>) -> StatusCode {
    let shards_ok = gw
        .sync
        .shards()
        .iter()
        .all(|s| s.is_reachable() && s.is_following());
    if gw.state() == LifecycleState::Ready && shards_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Prometheus text exposition.
pub async fn metrics(State(gw): State<Arc<Gateway>>) -> impl IntoResponse {
    gw.metrics
        .active_connections
        .set(gw.connections.len() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        gw.metrics.render(),
    )
}
