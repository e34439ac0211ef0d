//! POST `/sync`: stateless HTTP sync (http-admin-ops.md §2). Operations run first, then
//! deltas, queries and searches, so a request's reads see its own writes.

use super::json_error;
use crate::auth::{bearer_token, Principal};
use crate::error::GatewayError;
use crate::scatter;
use crate::state::Gateway;
use crate::writes::{self, Writer};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::sync::Arc;
use topgun_proto::hlc::wall_clock_ms;
use topgun_proto::predicate::{Position, QueryPlan};
use topgun_proto::wire::{
    self, DeltaRecord, HttpAck, HttpQueryRequest, HttpQueryResult, HttpSearchResult, HttpSyncError,
    HttpSyncRequest, HttpSyncResponse, LwwRecord, MapDelta, Query, SearchOptions,
};

/// The handler.
pub async fn sync(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Bytes) -> Response {
    let _guard = gw.track();
    let principal = match authenticate(&gw, &headers) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let request: HttpSyncRequest = if body.is_empty() {
        HttpSyncRequest::default()
    } else {
        match wire::decode_body(&body) {
            Ok(r) => r,
            Err(e) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    format!("invalid MsgPack body: {e}"),
                    None,
                );
            }
        }
    };
    if request.client_hlc.millis > 0 {
        gw.observe(&request.client_hlc);
    }
    let mut response = HttpSyncResponse {
        server_hlc: gw.now(),
        ..Default::default()
    };
    let mut errors = Vec::new();
    let writer = Writer {
        conn_id: None,
        principal: principal.clone(),
        authenticated: principal.is_some(),
        via_connection: false,
    };

    if let Some(ops) = request.operations.filter(|ops| !ops.is_empty()) {
        let applied = match writes::validate_ops(&gw, &ops, None, &writer) {
            Ok(valid) => writes::apply(&gw, valid, &writer).await,
            Err(rejection) => Err(rejection.error),
        };
        match applied {
            Ok(applied) => {
                let last_id = ops
                    .last()
                    .and_then(|o| o.id.clone())
                    .unwrap_or_else(|| "unknown".into());
                response.ack = Some(HttpAck {
                    last_id,
                    results: applied.results_needed.then_some(applied.results),
                });
            }
            Err(err) => errors.push(HttpSyncError {
                code: 500,
                message: err.to_string(),
                context: None,
            }),
        }
    }

    let mut deltas = Vec::new();
    for entry in request.sync_maps.unwrap_or_default() {
        if gw.check_read(principal.as_ref(), &entry.map_name).is_err() {
            errors.push(HttpSyncError {
                code: 403,
                message: "Access denied".into(),
                context: Some(format!("Read deltas for {}", entry.map_name)),
            });
            continue;
        }
        match scatter::scan_since(&gw, &entry.map_name, &entry.last_sync_timestamp).await {
            Ok(states) => {
                let records = states
                    .into_iter()
                    .filter_map(|st| {
                        let record = LwwRecord::try_from(st.lww?).ok()?;
                        let event_type = if record.is_tombstone() {
                            "REMOVE"
                        } else {
                            "PUT"
                        };
                        Some(DeltaRecord {
                            key: st.key,
                            record,
                            event_type: event_type.into(),
                        })
                    })
                    .collect();
                deltas.push(MapDelta {
                    map_name: entry.map_name,
                    records,
                    server_sync_timestamp: gw.now(),
                });
            }
            Err(err) => errors.push(HttpSyncError {
                code: 500,
                message: err.to_string(),
                context: Some(format!("Map {}", entry.map_name)),
            }),
        }
    }

    let mut query_results = Vec::new();
    for query in request.queries.unwrap_or_default() {
        match run_query(&gw, principal.as_ref(), &query).await {
            Ok(result) => query_results.push(result),
            Err(error) => errors.push(error),
        }
    }

    let mut search_results = Vec::new();
    for search in request.searches.unwrap_or_default() {
        let context = Some(format!(
            "Search {} on {}",
            search.search_id, search.map_name
        ));
        if gw.check_read(principal.as_ref(), &search.map_name).is_err() {
            errors.push(HttpSyncError {
                code: 403,
                message: "Access denied".into(),
                context,
            });
            continue;
        }
        let options: Option<SearchOptions> = search
            .options
            .as_ref()
            .and_then(|o| rmpv::ext::from_value(o.clone()).ok());
        match crate::ws::search_http(&gw, &search.map_name, &search.query, options.as_ref()).await {
            Ok(hits) => {
                let total = hits.len() as u64;
                let results = hits.into_iter().map(search_hit_value).collect();
                search_results.push(HttpSearchResult {
                    search_id: search.search_id,
                    results,
                    total_count: Some(total),
                });
            }
            Err(err) => errors.push(HttpSyncError {
                code: u64::from(err.code()),
                message: err.to_string(),
                context,
            }),
        }
    }

    response.deltas = (!deltas.is_empty()).then_some(deltas);
    response.query_results = (!query_results.is_empty()).then_some(query_results);
    response.search_results = (!search_results.is_empty()).then_some(search_results);
    response.errors = (!errors.is_empty()).then_some(errors);
    (
        [(header::CONTENT_TYPE, "application/msgpack")],
        wire::encode_body(&response),
    )
        .into_response()
}

/// One search hit as the `{key, value, score, matchedTerms}` map the client reads.
fn search_hit_value(hit: topgun_proto::wire::SearchResult) -> rmpv::Value {
    rmpv::Value::Map(vec![
        ("key".into(), hit.key.into()),
        ("value".into(), hit.value),
        ("score".into(), rmpv::Value::F64(hit.score)),
        (
            "matchedTerms".into(),
            rmpv::Value::Array(
                hit.matched_terms
                    .into_iter()
                    .map(rmpv::Value::from)
                    .collect(),
            ),
        ),
    ])
}

/// Bearer token → principal; with `require_auth`, a missing or bad token is a 401.
#[allow(clippy::result_large_err)]
fn authenticate(gw: &Gateway, headers: &HeaderMap) -> Result<Option<Principal>, Response> {
    let require = gw.server.read().security.require_auth;
    let header_value = headers.get(header::AUTHORIZATION);
    let verified = match (bearer_token(header_value), &gw.auth) {
        (Some(token), Some(verifier)) => verifier.verify(token).map_err(|e| e.to_string()),
        (Some(_), None) => Err("no secret configured".to_string()),
        (None, _) => Err("no token".to_string()),
    };
    match verified {
        Ok(p) => Ok(Some(p)),
        Err(_) if !require => Ok(None),
        Err(_) if header_value.is_none() => Err(json_error(
            StatusCode::UNAUTHORIZED,
            "authentication required",
            None,
        )),
        Err(reason) => {
            let message = if gw.network.insecure_forward_auth_errors {
                format!("invalid or expired token: {reason}")
            } else {
                "Authentication failed".into()
            };
            Err(json_error(StatusCode::UNAUTHORIZED, message, None))
        }
    }
}

/// The HTTP cursor of §2.5.3: base64url JSON; our queries sort by key only.
fn encode_cursor(last_key: &str) -> String {
    let json = serde_json::json!({
        "lastSortValue": null, "lastKey": last_key, "sortField": null, "sortDirection": "asc",
        "predicateHash": 0, "sortHash": 0, "timestamp": wall_clock_ms(),
    });
    URL_SAFE_NO_PAD.encode(json.to_string())
}

fn decode_cursor(cursor: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let created = json.get("timestamp")?.as_u64()?;
    if wall_clock_ms().saturating_sub(created) > 600_000 {
        return None;
    }
    Some(json.get("lastKey")?.as_str()?.to_string())
}

async fn run_query(
    gw: &Arc<Gateway>,
    principal: Option<&Principal>,
    q: &HttpQueryRequest,
) -> Result<HttpQueryResult, HttpSyncError> {
    if gw.check_read(principal, &q.map_name).is_err() {
        return Err(HttpSyncError {
            code: 403,
            message: "access denied".into(),
            context: Some(q.query_id.clone()),
        });
    }
    // A map filter is an equality where-clause; anything else matches everything.
    let where_ = q.filter.clone().filter(|f| f.is_map());
    let query = Query {
        where_,
        ..Default::default()
    };
    let plan = QueryPlan::from_query(&query);
    let after = match &q.cursor {
        Some(cursor) => match decode_cursor(cursor) {
            Some(key) => Some(Position {
                sort_values: vec![],
                key,
            }),
            None => {
                return Err(HttpSyncError {
                    code: 400,
                    message: "invalid or expired cursor".into(),
                    context: Some(q.query_id.clone()),
                });
            }
        },
        None => None,
    };
    let offset = if after.is_some() {
        0
    } else {
        q.offset.unwrap_or(0) as usize
    };
    let limit = q.limit.map(|l| l as usize + offset);
    let page = scatter::run_query(gw, &q.map_name, &query, &plan, limit, after.as_ref())
        .await
        .map_err(|e: GatewayError| HttpSyncError {
            code: 500,
            message: e.to_string(),
            context: Some(q.query_id.clone()),
        })?;
    let rows: Vec<(String, rmpv::Value)> = page.rows.into_iter().skip(offset).collect();
    let (has_more, next_cursor) = match q.limit {
        Some(_) => (
            Some(page.has_more),
            page.has_more
                .then(|| rows.last().map(|(k, _)| encode_cursor(k)))
                .flatten(),
        ),
        None => (None, None),
    };
    Ok(HttpQueryResult {
        query_id: q.query_id.clone(),
        results: rows.into_iter().map(|(_, v)| v).collect(),
        has_more,
        next_cursor,
    })
}
