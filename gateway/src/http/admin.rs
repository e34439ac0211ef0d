//! The admin and auth API (http-admin-ops.md §4): login, status, cluster status, maps,
//! settings and permission policies.

use super::api_types::{
    ClusterStatus, ErrorBody, LoginRequest, MapInfo, MapsResponse, NodeStatus, PartitionOwner,
    PolicyList, Settings, SettingsUpdate, StatusResponse, TokenResponse,
};
use super::json_error;
use crate::auth::{bearer_token, Principal};
use crate::rbac::{Policy, PolicyRequest};
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
use topgun_proto::partition::PARTITION_COUNT;

/// Admin tokens from login live one day.
const ADMIN_TOKEN_TTL_SECS: u64 = 86_400;

/// Settings that exist but cannot be changed at runtime.
const READ_ONLY_SETTINGS: [&str; 7] = [
    "nodeId",
    "host",
    "port",
    "partitionCount",
    "requireAuth",
    "maxValueBytes",
    "defaultOperationTimeoutMs",
];

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

/// Exchanges the admin credentials for an admin JWT.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), (status = 401, description = "invalid credentials", body = ErrorBody),
              (status = 429, description = "rate limited"), (status = 500, description = "login not configured", body = ErrorBody)))]
pub async fn login(State(gw): State<Arc<Gateway>>, body: Bytes) -> Response {
    let Ok(login) = serde_json::from_slice::<LoginRequest>(&body) else {
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
        Ok(token) => Json(TokenResponse { token }).into_response(),
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

/// Version, uptime and load of this gateway (public).
#[utoipa::path(get, path = "/api/status", tag = "status", responses((status = 200, body = StatusResponse)))]
pub async fn status(State(gw): State<Arc<Gateway>>) -> Json<StatusResponse> {
    Json(StatusResponse {
        configured: true,
        version: env!("CARGO_PKG_VERSION").to_string(),
        mode: "normal".into(),
        node_id: gw.node_id(),
        connections: gw.connections.len(),
        uptime_seconds: gw.uptime_secs(),
        total_operations: gw.total_operations(),
    })
}

/// Members (gateway, sync shards with their partitions, search replicas) and the partition table.
#[utoipa::path(get, path = "/api/admin/cluster/status", tag = "admin", security(("bearer_auth" = [])),
    responses((status = 200, body = ClusterStatus), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn cluster_status(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Err(resp) = require_admin(&gw, &headers) {
        return resp;
    }
    gw.sync.refresh().await;
    let topology = gw.sync.topology();
    let table = topology.owners();
    let uptime = gw.uptime_secs();
    let node = |node_id: String,
                role: &str,
                address: String,
                status: &str,
                partition_count: usize,
                connections: usize| NodeStatus {
        node_id,
        role: role.into(),
        address,
        status: status.into(),
        partition_count,
        connections,
        memory: 0,
        uptime,
    };
    let shard_id = |index: usize| {
        topology.shards[index]
            .info()
            .map_or_else(|| format!("sync-{index}"), |i| i.node_id)
    };
    let mut nodes = vec![node(
        gw.node_id(),
        "gateway",
        format!("{}:{}", gw.network.host, gw.network.port),
        "healthy",
        0,
        gw.connections.len(),
    )];
    for (index, shard) in topology.shards.iter().enumerate() {
        let status = if shard.is_reachable() {
            "healthy"
        } else {
            "dead"
        };
        let owned = table.iter().filter(|s| **s == index).count();
        nodes.push(node(
            shard_id(index),
            "sync",
            shard.addr.clone(),
            status,
            owned,
            0,
        ));
    }
    // Storage services as the shards see them (one row per distinct address).
    let mut storages: BTreeMap<String, bool> = BTreeMap::new();
    for info in topology.shards.iter().filter_map(|s| s.info()) {
        if !info.storage_addr.is_empty() {
            *storages.entry(info.storage_addr).or_insert(true) &= info.storage_healthy;
        }
    }
    for (addr, healthy) in storages {
        let status = if healthy { "healthy" } else { "suspect" };
        nodes.push(node(addr.clone(), "storage", addr, status, 0, 0));
    }
    for replica in gw.search.iter().flat_map(|r| r.replicas()) {
        let status = if replica.is_healthy() {
            "healthy"
        } else {
            "suspect"
        };
        nodes.push(node(
            replica.addr.clone(),
            "search",
            replica.addr.clone(),
            status,
            0,
            0,
        ));
    }
    let partitions = table
        .iter()
        .enumerate()
        .map(|(id, shard)| PartitionOwner {
            id: id as u32,
            owner_node_id: shard_id(*shard),
        })
        .collect();
    Json(ClusterStatus {
        nodes,
        partitions,
        total_partitions: PARTITION_COUNT,
        is_rebalancing: false,
    })
    .into_response()
}

/// Maps with record counts, summed over the shards.
#[utoipa::path(get, path = "/api/admin/maps", tag = "admin", security(("bearer_auth" = [])),
    responses((status = 200, body = MapsResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 503, description = "a shard is unreachable", body = ErrorBody)))]
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
                let message = format!(
                    "sync shard {} unavailable: {}",
                    shard.addr,
                    status.message()
                );
                return json_error(StatusCode::SERVICE_UNAVAILABLE, message, None);
            }
        }
    }
    let maps = totals
        .into_iter()
        .filter(|((name, _), _)| !name.starts_with("$sys/"))
        .map(|((name, kind), (entry_count, partitions))| MapInfo {
            name,
            entry_count,
            kind: if kind == MapKind::Or as i32 {
                "or"
            } else {
                "lww"
            }
            .into(),
            partitions,
        })
        .collect();
    Json(MapsResponse { maps }).into_response()
}

async fn settings_body(gw: &Gateway) -> Settings {
    let searchable_maps = match &gw.search {
        Some(replicas) => match replicas.indexed_maps().await {
            Ok(None) => Some(vec!["*".to_string()]),
            Ok(Some(maps)) => Some(maps),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the searchable maps");
                None
            }
        },
        None => None,
    };
    let server = gw.server.read().clone();
    Settings {
        searchable_maps,
        node_id: gw.node_id(),
        default_operation_timeout_ms: server.default_operation_timeout_ms,
        max_concurrent_operations: server.max_concurrent_operations,
        gc_interval_ms: server.gc_interval_ms,
        partition_count: server.partition_count,
        host: gw.network.host.clone(),
        port: gw.network.port,
        require_auth: server.security.require_auth,
        max_value_bytes: server.security.max_value_bytes,
        log_level: gw.log_control().map(|l| l.current()),
    }
}

/// The runtime settings.
#[utoipa::path(get, path = "/api/admin/settings", tag = "admin", security(("bearer_auth" = [])),
    responses((status = 200, body = Settings), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn get_settings(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Err(resp) = require_admin(&gw, &headers) {
        return resp;
    }
    Json(settings_body(&gw).await).into_response()
}

/// Changes runtime settings; every field is validated before anything is applied.
#[utoipa::path(put, path = "/api/admin/settings", tag = "admin", security(("bearer_auth" = [])), request_body = SettingsUpdate,
    responses((status = 200, body = Settings), (status = 400, description = "invalid or read-only field; nothing changed", body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
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
    if let Some(key) = READ_ONLY_SETTINGS.iter().find(|k| json.get(**k).is_some()) {
        return json_error(
            StatusCode::BAD_REQUEST,
            format!("field '{key}' is read-only and cannot be updated"),
            Some(key),
        );
    }
    let Some(obj) = json.as_object() else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "invalid settings: expected an object",
            None,
        );
    };
    let invalid = |field: &str, rule: &str| {
        json_error(
            StatusCode::BAD_REQUEST,
            format!("invalid settings: {field} must be {rule}"),
            Some(field),
        )
    };
    let gc = match obj.get("gcIntervalMs") {
        None => None,
        Some(v) => match v.as_u64().filter(|v| *v >= 1_000) {
            Some(v) => Some(v),
            None => return invalid("gcIntervalMs", "an integer >= 1000"),
        },
    };
    let max_ops = match obj.get("maxConcurrentOperations") {
        None => None,
        Some(v) => match v.as_u64().filter(|v| (1..=1_000_000).contains(v)) {
            Some(v) => Some(v as u32),
            None => return invalid("maxConcurrentOperations", "an integer in 1..=1000000"),
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
        Some(_) => return invalid("logLevel", "a string"),
    };
    let searchable = match obj.get("searchableMaps") {
        None => None,
        Some(v) => {
            let names: Option<Vec<String>> = v.as_array().and_then(|items| {
                items
                    .iter()
                    .map(|i| i.as_str().filter(|n| !n.is_empty()).map(str::to_string))
                    .collect()
            });
            match names {
                Some(_) if gw.search.is_none() => {
                    return json_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "search service not configured",
                        None,
                    );
                }
                // `["*"]` means every map.
                Some(names) if names.iter().any(|n| n == "*") => Some(None),
                Some(names) => Some(Some(names)),
                None => {
                    return invalid(
                        "searchableMaps",
                        "an array of non-empty map names or [\"*\"]",
                    )
                }
            }
        }
    };
    // The only setting that can fail remotely goes first, so a failure changes nothing.
    if let (Some(maps), Some(replicas)) = (searchable, &gw.search) {
        if let Err(e) = replicas.set_indexed_maps(maps).await {
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("search replicas refused: {}", e.message()),
                Some("searchableMaps"),
            );
        }
    }
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
    Json(settings_body(&gw).await).into_response()
}

/// Every permission policy.
#[utoipa::path(get, path = "/api/admin/policies", tag = "admin", security(("bearer_auth" = [])),
    responses((status = 200, body = PolicyList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_policies(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Err(resp) = require_admin(&gw, &headers) {
        return resp;
    }
    Json(PolicyList {
        policies: gw.policies.list(),
    })
    .into_response()
}

/// Creates or replaces a policy; it applies to open connections at once.
#[utoipa::path(post, path = "/api/admin/policies", tag = "admin", security(("bearer_auth" = [])), request_body = PolicyRequest,
    responses((status = 201, body = Policy), (status = 400, description = "bad conditionExpr", body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
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
        Ok(policy) => match crate::live::policy_sync::store(&gw, &policy).await {
            Ok(()) => (StatusCode::CREATED, Json(policy)).into_response(),
            Err(e) => json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("failed to create policy: {e}"),
                None,
            ),
        },
        Err(e) => json_error(StatusCode::BAD_REQUEST, e.to_string(), Some(e.field())),
    }
}

/// Deletes a policy (204 also when the id is unknown).
#[utoipa::path(delete, path = "/api/admin/policies/{id}", tag = "admin", security(("bearer_auth" = [])),
    params(("id" = String, Path, description = "Policy id")),
    responses((status = 204, description = "deleted"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn delete_policy(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(resp) = require_admin(&gw, &headers) {
        return resp;
    }
    match crate::live::policy_sync::delete(&gw, &id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("failed to delete policy: {e}"),
            None,
        ),
    }
}
