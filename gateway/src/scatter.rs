//! Reads that span every shard, recombined at the gateway: Merkle nodes (hashes are
//! wrapping sums, so shard trees add up to the one tree the client sees), query pages
//! (merged in query order), key lookups and delta scans.

use crate::error::GatewayError;
use crate::state::Gateway;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use topgun_proto::grpc::common::{self as pbc, KeyState, MapKind};
use topgun_proto::grpc::sync::{
    ChangedSinceRequest, GetRecordsRequest, MerkleNodeRequest, RunQueryRequest, ScanMapRequest,
};
use topgun_proto::hlc::Timestamp;
use topgun_proto::predicate::{Position, QueryPlan};
use topgun_proto::wire::{self, Query};

/// What a Merkle path resolves to across all shards.
#[derive(Debug)]
pub enum MerkleAnswer {
    /// Child buckets (possibly empty).
    Buckets(BTreeMap<String, u32>),
    /// Leaf entries (path of length 3 holding data).
    Leaf(Vec<KeyState>),
}

/// Valid Merkle paths: "" or 1–3 lowercase hex characters.
pub fn valid_merkle_path(path: &str) -> bool {
    path.len() <= 3
        && path
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Runs one call per shard concurrently and records the whole fan-out's duration
/// under the sync service's `method`.
async fn timed_join_all<F: std::future::Future>(
    gw: &Gateway,
    method: &str,
    calls: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let started = Instant::now();
    let results = futures::future::join_all(calls).await;
    gw.metrics
        .grpc_client_duration
        .with_label_values(&["sync", method])
        .observe(started.elapsed().as_secs_f64());
    results
}

async fn merkle_nodes(
    gw: &Arc<Gateway>,
    map: &str,
    kind: MapKind,
    path: &str,
) -> Result<Vec<topgun_proto::grpc::sync::MerkleNodeResponse>, GatewayError> {
    let timeout_ms = gw.operation_timeout_ms();
    let calls = gw.sync.shards().into_iter().map(|shard| {
        let req = gw.sync.request(MerkleNodeRequest {
            map_name: map.to_string(),
            kind: kind as i32,
            path: path.to_string(),
        });
        async move {
            let result = shard.client().merkle_node(req).await;
            shard.mark(result.is_ok());
            result
        }
    });
    let results = timed_join_all(gw, "MerkleNode", calls).await;
    results
        .into_iter()
        .map(|r| {
            r.map(|r| r.into_inner())
                .map_err(|s| GatewayError::from_status(&s, timeout_ms))
        })
        .collect()
}

/// Root hash of a map's tree: the wrapping sum of every shard's root.
pub async fn merkle_root(gw: &Arc<Gateway>, map: &str, kind: MapKind) -> Result<u32, GatewayError> {
    let nodes = merkle_nodes(gw, map, kind, "").await?;
    Ok(nodes.iter().fold(0u32, |acc, n| acc.wrapping_add(n.hash)))
}

/// The node at `path`: leaf entries from every shard, or element-wise summed buckets.
pub async fn merkle_node(
    gw: &Arc<Gateway>,
    map: &str,
    kind: MapKind,
    path: &str,
) -> Result<MerkleAnswer, GatewayError> {
    let nodes = merkle_nodes(gw, map, kind, path).await?;
    let entries: Vec<KeyState> = nodes
        .iter()
        .flat_map(|n| n.entries.iter().cloned())
        .collect();
    if !entries.is_empty() {
        return Ok(MerkleAnswer::Leaf(entries));
    }
    let mut buckets = BTreeMap::new();
    for node in nodes {
        for (child, hash) in node.buckets {
            let slot: &mut u32 = buckets.entry(child).or_default();
            *slot = slot.wrapping_add(hash);
        }
    }
    Ok(MerkleAnswer::Buckets(buckets))
}

/// One page of query results merged from every shard.
#[derive(Debug)]
pub struct QueryPage {
    /// Rows in query order.
    pub rows: Vec<(String, rmpv::Value)>,
    /// More rows matched than were returned.
    pub has_more: bool,
    /// Position of the last returned row (for the next cursor).
    pub last: Option<Position>,
}

/// Runs a query on every shard and merges the pages in query order.
pub async fn run_query(
    gw: &Arc<Gateway>,
    map: &str,
    query: &Query,
    plan: &QueryPlan,
    limit: Option<usize>,
    after: Option<&Position>,
) -> Result<QueryPage, GatewayError> {
    let timeout_ms = gw.operation_timeout_ms();
    let filter = Query {
        where_: query.where_.clone(),
        predicate: query.predicate.clone(),
        sort: query.sort.clone(),
        ..Default::default()
    };
    let query_bytes = wire::encode_body(&filter);
    let after_bytes = after.map(|p| wire::encode_value(&p.to_value()));
    let calls = gw.sync.shards().into_iter().map(|shard| {
        let req = gw.sync.request(RunQueryRequest {
            map_name: map.to_string(),
            query: query_bytes.clone(),
            limit: limit.map_or(0, |l| l as u32),
            after: after_bytes.clone(),
        });
        async move {
            let result = shard.client().run_query(req).await;
            shard.mark(result.is_ok());
            result
        }
    });
    let responses = timed_join_all(gw, "RunQuery", calls).await;
    let mut matched = 0u64;
    let mut rows = Vec::new();
    for response in responses {
        let response = response
            .map_err(|s| GatewayError::from_status(&s, timeout_ms))?
            .into_inner();
        matched += response.matched;
        for row in response.rows {
            let value = wire::decode_value(&row.value).map_err(GatewayError::Internal)?;
            rows.push((plan.position(&row.key, &value), row.key, value));
        }
    }
    rows.sort_by(|a, b| plan.cmp_positions(&a.0, &b.0));
    if let Some(limit) = limit {
        rows.truncate(limit);
    }
    let has_more = matched > rows.len() as u64;
    let last = rows.last().map(|(p, _, _)| p.clone());
    Ok(QueryPage {
        rows: rows.into_iter().map(|(_, k, v)| (k, v)).collect(),
        has_more,
        last,
    })
}

/// Full state of the given keys, each asked of its owning shard.
pub async fn get_records(
    gw: &Arc<Gateway>,
    map: &str,
    kind: MapKind,
    keys: &[String],
) -> Result<Vec<KeyState>, GatewayError> {
    let timeout_ms = gw.operation_timeout_ms();
    let topology = gw.sync.topology();
    let mut by_shard: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for key in keys {
        by_shard
            .entry(topology.index_for_key(key))
            .or_default()
            .push(key.clone());
    }
    let calls = by_shard.into_iter().map(|(shard, keys)| {
        let req = gw.sync.request(GetRecordsRequest {
            map_name: map.to_string(),
            kind: kind as i32,
            keys,
        });
        let shard = topology.shards[shard].clone();
        async move { shard.client().get_records(req).await }
    });
    let mut out = Vec::new();
    for response in futures::future::join_all(calls).await {
        out.extend(
            response
                .map_err(|s| GatewayError::from_status(&s, timeout_ms))?
                .into_inner()
                .records,
        );
    }
    Ok(out)
}

/// How long the optional delta push may hold up a SYNC_INIT answer.
const CHANGED_SINCE_TIMEOUT: Duration = Duration::from_secs(2);

/// The LWW records of a map changed at or after server millis `since` on every shard,
/// or `None` when some shard cannot tell exactly, fails, or is slow, or when more than
/// `limit` changed in all. The answer is optional, so a failure here neither fails the
/// request nor counts against the shard's reachability.
pub async fn changed_since(
    gw: &Arc<Gateway>,
    map: &str,
    since: u64,
    limit: u32,
) -> Option<Vec<KeyState>> {
    let calls = gw.sync.shards().into_iter().map(|shard| {
        let mut req = gw.sync.request(ChangedSinceRequest {
            map_name: map.to_string(),
            since_millis: since,
            limit,
        });
        req.set_timeout(CHANGED_SINCE_TIMEOUT);
        async move { shard.client().changed_since(req).await }
    });
    let results = timed_join_all(gw, "ChangedSince", calls).await;
    let mut records = Vec::new();
    for result in results {
        let answer = match result {
            Ok(answer) => answer.into_inner(),
            Err(status) => {
                tracing::debug!(map, code = ?status.code(), message = status.message(), "no delta push");
                return None;
            }
        };
        if !answer.complete {
            return None;
        }
        records.extend(answer.records);
        if records.len() > limit as usize {
            return None;
        }
    }
    Some(records)
}

/// Every LWW record of a map with a timestamp strictly greater than `since`.
pub async fn scan_since(
    gw: &Arc<Gateway>,
    map: &str,
    since: &Timestamp,
) -> Result<Vec<KeyState>, GatewayError> {
    let timeout_ms = gw.operation_timeout_ms();
    let mut out = Vec::new();
    for shard in gw.sync.shards() {
        let mut after_key: Option<String> = None;
        loop {
            let req = gw.sync.request(ScanMapRequest {
                map_name: map.to_string(),
                kind: MapKind::Lww as i32,
                after_key: after_key.clone(),
                limit: 1000,
                since: Some(pbc::Timestamp::from(since)),
            });
            let page = shard
                .client()
                .scan_map(req)
                .await
                .map_err(|s| GatewayError::from_status(&s, timeout_ms))?
                .into_inner();
            out.extend(page.records);
            if page.done || page.last_key.is_empty() {
                break;
            }
            after_key = Some(page.last_key);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merkle_paths_are_up_to_three_lowercase_hex_chars() {
        assert!(valid_merkle_path(""));
        assert!(valid_merkle_path("f55"));
        assert!(!valid_merkle_path("F5"));
        assert!(!valid_merkle_path("0/1/2"));
        assert!(!valid_merkle_path("f551"));
    }
}
