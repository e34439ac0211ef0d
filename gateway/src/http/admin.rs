//! The admin and auth API (http-admin-ops.md §4): login, status, cluster status, maps,
//! settings and permission policies.

use super::json_error;
use crate::auth::{bearer_token, Principal};
use crate::rbac::PolicyRequest;
use crate::state::Gateway;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::collections::BTreeMap;
use std::sync::Arc;
use topgun_proto::grpc::common::MapKind;
use topgun_proto::grpc::sync::ListMapsRequest;
use topgun_proto::internal_auth::constant_time_eq;

/// Admin tokens from login live one day.
const ADMIN_TOKEN_TTL_SECS: u64 = 86_400;

/// The admin JWT check, in the order of §4.1.
#[allow(clippy::result_large_err)]
pub fn require_admin(gw: &Gateway, headers: &HeaderMap) -> Result<Principal, Response> {
    let Some(verifier) = &gw.auth else {
        return Err(json_error(
            StatusCode::UNAUTHORIZED,
            "authentication not configured",
            None,
        ));
    };
    let Some(token) = bearer_token(headers.get(http::header::AUTHORIZATION)) else {
        return Err(json_error(
            StatusCode::UNAUTHORIZED,
            "missing or invalid Bearer token",
            None,
        ));
    };
    let principal = verifier
        .verify(token)
        .map_err(|_| json_error(StatusCode::UNAUTHORIZED, "invalid or expired token", None))?;
    if !principal.is_admin() {
        return Err(json_error(
            StatusCode::FORBIDDEN,
            "admin role required",
            None,
        ));
    }
    Ok(principal)
}

/// POST /api/auth/login.
pub async fn login(State(gw): State<Arc<Gateway>>, body: Bytes) -> Response {
    #[derive(serde::Deserialize)]
    struct Login {
        username: String,
        password: String,
    }
    let Ok(login) = serde_json::from_slice::<Login>(&body) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "body must be JSON {username, password}",
            None,
        );
    };
    let Some(password) = &gw.admin.password else {
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "admin password not configured",
            None,
        );
    };
    let Some(verifier) = &gw.auth else {
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "authentication not configured",
            None,
        );
    };
    let user_ok = constant_time_eq(login.username.as_bytes(), gw.admin.username.as_bytes());
    let pass_ok = constant_time_eq(login.password.as_bytes(), password.as_bytes());
    if !(user_ok && pass_ok) {
        return json_error(StatusCode::UNAUTHORIZED, "invalid credentials", None);
    }
    match verifier.sign(&gw.admin.username, &["admin"], ADMIN_TOKEN_TTL_SECS) {
        Ok(token) => Json(serde_json::json!({ "token": token })).into_response(),
        Err(crate::auth::AuthError::CannotSign) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "authentication not configured",
            None,
        ),
        Err(e) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("token generation failed: {e}"),
            None,
        ),
    }
}

/// GET /api/status (public).
pub async fn status(State(gw): State<Arc<Gateway>>) -> Response {
    Json(serde_json::json!({
        "configured": true,
        "version": env!("CARGO_PKG_VERSION"),
        "mode": "normal",
        "nodeId": gw.node_id(),
        "connections": gw.connections.len(),
        "uptimeSeconds": gw.uptime_secs(),
        "totalOperations": gw.total_operations(),
    }))
    .into_response()
}

/// GET /api/admin/cluster/status: gateway, shards with partitions, search replicas.
pub async fn cluster_status(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Err(resp) = require_admin(&gw, &headers) {
        return resp;
    }
    gw.sync.refresh().await;
    let table = gw.sync.partition_table();
    let mut nodes = vec![serde_json::json!({
        "nodeId": gw.node_id(), "role": "gateway", "address": format!("{}:{}", gw.network.host, gw.network.port),
        "status": "healthy", "partitionCount": 0, "connections": gw.connections.len(), "memory": 0, "uptime": gw.uptime_secs(),
    })];
    for (index, shard) in gw.sync.shards().iter().enumerate() {
        let info = shard.info();
        nodes.push(serde_json::json!({
            "nodeId": info.as_ref().map_or_else(|| format!("sync-{index}"), |i| i.node_id.clone()),
            "role": "sync",
            "address": shard.addr,
            "status": if shard.is_reachable() { "healthy" } else { "dead" },
            "partitionCount": table.iter().filter(|s| **s == index).count(),
            "connections": 0, "memory": 0, "uptime": gw.uptime_secs(),
        }));
    }
    for replica in gw.search.iter().flat_map(|r| r.replicas()) {
        nodes.push(serde_json::json!({
            "nodeId": replica.addr, "role": "search", "address": replica.addr,
            "status": if replica.is_healthy() { "healthy" } else { "suspect" },
            "partitionCount": 0, "connections": 0, "memory": 0, "uptime": gw.uptime_secs(),
        }));
    }
    let owner = |index: usize| {
        gw.sync.shards()[index]
            .info()
            .map_or_else(|| format!("sync-{index}"), |i| i.node_id)
    };
    let partitions: Vec<serde_json::Value> = table
        .iter()
        .enumerate()
        .map(|(id, shard)| serde_json::json!({ "id": id, "ownerNodeId": owner(*shard) }))
        .collect();
    Json(serde_json::json!({
        "nodes": nodes, "partitions": partitions,
        "totalPartitions": topgun_proto::partition::PARTITION_COUNT, "isRebalancing": false,
    }))
    .into_response()
}

/// GET /api/admin/maps: record counts summed over shards.
pub async fn maps(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Err(resp) = require_admin(&gw, &headers) {
        return resp;
    }
    let mut totals: BTreeMap<(String, i32), (u64, u64)> = BTreeMap::new();
    for shard in gw.sync.shards() {
        match shard
            .client()
            .list_maps(gw.sync.request(ListMapsRequest {}))
            .await
        {
            Ok(resp) => {
                for m in resp.into_inner().maps {
                    let entry = totals.entry((m.map_name, m.kind)).or_default();
                    entry.0 += m.records;
                    entry.1 += m.partitions.len() as u64;
                }
            }
            Err(status) => {
                return json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "sync shard {} unavailable: {}",
                        shard.addr,
                        status.message()
                    ),
                    None,
                );
            }
        }
    }
    let maps: Vec<serde_json::Value> = totals
        .into_iter()
        .filter(|((name, _), _)| !name.starts_with("$sys/"))
        .map(|((name, kind), (count, partitions))| {
            let kind = if kind == MapKind::Or as i32 { "or" } else { "lww" };
            serde_json::json!({ "name": name, "entryCount": count, "kind": kind, "partitions": partitions })
        })
        .collect();
    Json(serde_json::json!({ "maps": maps })).into_response()
}

fn settings_body(gw: &Gateway) -> serde_json::Value {
    let server = gw.server.read().clone();
    let mut body = serde_json::json!({
        "nodeId": gw.node_id(),
        "defaultOperationTimeoutMs": server.default_operation_timeout_ms,
        "maxConcurrentOperations": server.max_concurrent_operations,
        "gcIntervalMs": server.gc_interval_ms,
        "partitionCount": server.partition_count,
        "host": gw.network.host,
        "port": gw.network.port,
        "requireAuth": server.security.require_auth,
        "maxValueBytes": server.security.max_value_bytes,
    });
    if let Some(log) = gw.log_control() {
        body["logLevel"] = serde_json::Value::from(log.current());
    }
    body
}

/// GET /api/admin/settings.
pub async fn get_settings(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Err(resp) = require_admin(&gw, &headers) {
        return resp;
    }
    Json(settings_body(&gw)).into_response()
}

/// PUT /api/admin/settings: every field is validated before anything is applied.
pub async fn put_settings(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(resp) = require_admin(&gw, &headers) {
        return resp;
    }
    let json: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}"), None),
    };
    for key in [
        "nodeId",
        "host",
        "port",
        "partitionCount",
        "requireAuth",
        "maxValueBytes",
        "defaultOperationTimeoutMs",
    ] {
        if json.get(key).is_some() {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("field '{key}' is read-only and cannot be updated"),
                Some(key),
            );
        }
    }
    let Some(obj) = json.as_object() else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "invalid settings: expected an object",
            None,
        );
    };
    let gc = match obj.get("gcIntervalMs") {
        None => None,
        Some(v) => match v.as_u64().filter(|v| *v >= 1_000) {
            Some(v) => Some(v),
            None => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "invalid settings: gcIntervalMs must be an integer >= 1000",
                    Some("gcIntervalMs"),
                )
            }
        },
    };
    let max_ops =
        match obj.get("maxConcurrentOperations") {
            None => None,
            Some(v) => match v.as_u64().filter(|v| (1..=1_000_000).contains(v)) {
                Some(v) => Some(v as u32),
                None => return json_error(
                    StatusCode::BAD_REQUEST,
                    "invalid settings: maxConcurrentOperations must be an integer in 1..=1000000",
                    Some("maxConcurrentOperations"),
                ),
            },
        };
    let log_level = match obj.get("logLevel") {
        None => None,
        Some(serde_json::Value::String(s)) => {
            let Some(log) = gw.log_control() else {
                return json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "observability not configured",
                    None,
                );
            };
            if let Err(e) = tracing_subscriber::EnvFilter::try_new(s) {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    format!("invalid log level filter: {e}"),
                    Some("logLevel"),
                );
            }
            Some((log, s.clone()))
        }
        Some(_) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid settings: logLevel must be a string",
                Some("logLevel"),
            )
        }
    };
    if let Some((log, level)) = log_level {
        if let Err(e) = log.set(&level) {
            return json_error(StatusCode::BAD_REQUEST, e, Some("logLevel"));
        }
    }
    if let Some(gc) = gc {
        gw.server.write().gc_interval_ms = gc;
    }
    if let Some(max) = max_ops {
        gw.set_max_concurrent_operations(max);
    }
    Json(settings_body(&gw)).into_response()
}

/// GET /api/admin/policies.
pub async fn list_policies(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Err(resp) = require_admin(&gw, &headers) {
        return resp;
    }
    Json(serde_json::json!({ "policies": gw.policies.list() })).into_response()
}

/// POST /api/admin/policies: upsert; applies to open connections at once.
pub async fn create_policy(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(resp) = require_admin(&gw, &headers) {
        return resp;
    }
    let request: PolicyRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return json_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("invalid policy: {e}"),
                None,
            )
        }
    };
    match request.into_policy() {
        Ok(policy) => {
            gw.policies.upsert(policy.clone());
            (StatusCode::CREATED, Json(policy)).into_response()
        }
        Err(e) => json_error(
            StatusCode::BAD_REQUEST,
            e.to_string(),
            Some("conditionExpr"),
        ),
    }
}

/// DELETE /api/admin/policies/{id}: 204 even when the id is unknown.
pub async fn delete_policy(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(resp) = require_admin(&gw, &headers) {
        return resp;
    }
    gw.policies.delete(&id);
    StatusCode::NO_CONTENT.into_response()
}
