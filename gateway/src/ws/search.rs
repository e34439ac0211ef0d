//! SEARCH / SEARCH_SUB / SEARCH_UNSUB, forwarded to the search replicas
//! (queries-search-messaging.md §2.3–2.5).

use super::session::Session;
use crate::error::GatewayError;
use crate::live::connections::ConnHandle;
use crate::state::Gateway;
use std::sync::Arc;
use std::time::Duration;
use topgun_proto::grpc::search::{search_event, ChangeType as PbChange, SearchHit, SearchRequest};
use topgun_proto::wire::{
    self, ChangeType, Message, SearchOptions, SearchPayload, SearchRespPayload, SearchResult,
    SearchSubPayload, SearchUpdatePayload,
};

fn request(map_name: &str, query: &str, options: Option<&SearchOptions>) -> SearchRequest {
    SearchRequest {
        map_name: map_name.to_string(),
        query: query.to_string(),
        limit: options
            .and_then(|o| o.limit)
            .map_or(10, |l| l.min(10_000) as u32),
        min_score: options.and_then(|o| o.min_score),
    }
}

fn to_result(hit: SearchHit) -> SearchResult {
    SearchResult {
        key: hit.key,
        value: wire::decode_value(&hit.value).unwrap_or(rmpv::Value::Nil),
        score: hit.score,
        matched_terms: hit.matched_terms,
    }
}

fn response(request_id: String, results: Vec<SearchResult>, error: Option<String>) -> Message {
    let total_count = results.len() as u64;
    Message::SearchResp {
        payload: SearchRespPayload {
            request_id,
            results,
            total_count,
            error,
        },
    }
}

/// Runs one search for HTTP and WebSocket callers alike.
pub(crate) async fn run(
    gw: &Gateway,
    map_name: &str,
    query: &str,
    options: Option<&SearchOptions>,
) -> Result<Vec<SearchResult>, GatewayError> {
    let replicas = gw
        .search
        .as_ref()
        .ok_or_else(|| GatewayError::NotImplemented("search service not configured".into()))?;
    let resp = replicas
        .search(request(map_name, query, options))
        .await
        .map_err(|s| GatewayError::from_status(&s, gw.operation_timeout_ms()))?;
    Ok(resp.hits.into_iter().map(to_result).collect())
}

pub(super) async fn search(s: &Session, p: SearchPayload) {
    if s.gw.check_read(s.principal(), &p.map_name).is_err() {
        return s
            .send(response(p.request_id, vec![], Some("Forbidden".into())))
            .await;
    }
    match run(&s.gw, &p.map_name, &p.query, p.options.as_ref()).await {
        Ok(results) => s.send(response(p.request_id, results, None)).await,
        Err(err) => {
            s.send(response(p.request_id, vec![], Some(err.to_string())))
                .await
        }
    }
}

pub(super) async fn subscribe(s: &mut Session, p: SearchSubPayload) {
    if s.gw.check_read(s.principal(), &p.map_name).is_err() {
        return s
            .send(response(
                p.subscription_id,
                vec![],
                Some("Forbidden".into()),
            ))
            .await;
    }
    if s.gw.search.is_none() {
        let err = GatewayError::NotImplemented("search service not configured".into());
        return s
            .send(response(p.subscription_id, vec![], Some(err.to_string())))
            .await;
    }
    unsubscribe(s, &p.subscription_id);
    let task = tokio::spawn(forward(s.gw.clone(), s.conn.clone(), p.clone()));
    s.search_subs.insert(p.subscription_id, task);
}

/// Drops a live search; never answered (an OP_ACK here would acknowledge client ops, §2.5).
pub(super) fn unsubscribe(s: &mut Session, subscription_id: &str) {
    if let Some(task) = s.search_subs.remove(subscription_id) {
        task.abort();
    }
}

/// Keeps one live search alive: initial results as SEARCH_RESP, changes as SEARCH_UPDATE;
/// when the replica dies, re-subscribes on another and re-sends the result set.
async fn forward(gw: Arc<Gateway>, conn: Arc<ConnHandle>, p: SearchSubPayload) {
    let Some(replicas) = gw.search.as_ref() else {
        return;
    };
    let req = request(&p.map_name, &p.query, p.options.as_ref());
    let mut backoff = Duration::from_millis(100);
    loop {
        let (replica, mut stream) = match replicas.subscribe(req.clone()).await {
            Ok(ok) => ok,
            Err(status) => {
                tracing::warn!(error = %status, "no search replica accepted a live search; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        loop {
            match stream.message().await {
                Ok(Some(event)) => match event.kind {
                    Some(search_event::Kind::Initial(initial)) => {
                        let results = initial.hits.into_iter().map(to_result).collect();
                        conn.push(&response(p.subscription_id.clone(), results, None));
                    }
                    Some(search_event::Kind::Change(change)) => {
                        let change_type = match PbChange::try_from(change.change_type) {
                            Ok(PbChange::Enter) => ChangeType::Enter,
                            Ok(PbChange::Update) => ChangeType::Update,
                            _ => ChangeType::Leave,
                        };
                        let payload = SearchUpdatePayload {
                            subscription_id: p.subscription_id.clone(),
                            key: change.key,
                            value: wire::decode_value(&change.value).unwrap_or(rmpv::Value::Nil),
                            score: change.score,
                            matched_terms: change.matched_terms,
                            change_type,
                        };
                        conn.push(&Message::SearchUpdate { payload });
                    }
                    None => {}
                },
                Ok(None) | Err(_) => {
                    tracing::info!(replica = %replica.addr, "live search stream ended; moving to another replica");
                    replicas.mark_failed(&replica);
                    break;
                }
            }
        }
    }
}
