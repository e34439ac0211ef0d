//! QUERY_SUB: scatter-gather the initial page, register the live subscription first so
//! no change between the snapshot and the first update is lost (queries-search-messaging.md §1).

use super::session::Session;
use crate::live::queries::QuerySub;
use crate::query_cursor::{self, CursorStatus};
use crate::scatter;
use crate::writes::validate_map_name;
use std::sync::Arc;
use topgun_proto::predicate::{project, QueryPlan};
use topgun_proto::wire::{Message, QueryRespPayload, QueryResultRow, QuerySubPayload};

fn empty_response(query_id: &str) -> Message {
    Message::QueryResp {
        payload: QueryRespPayload {
            query_id: query_id.to_string(),
            results: vec![],
            next_cursor: None,
            has_more: None,
            cursor_status: None,
            merkle_root_hash: None,
        },
    }
}

pub(super) async fn subscribe(s: &Session, p: QuerySubPayload) {
    let check =
        validate_map_name(&p.map_name).and_then(|_| s.gw.check_read(s.principal(), &p.map_name));
    if let Err(err) = check {
        // An empty QUERY_RESP is harmless to the client; the ERROR says why.
        s.send(empty_response(&p.query_id)).await;
        return s.send_error(&err).await;
    }
    let plan = QueryPlan::from_query(&p.query);
    let sub = Arc::new(QuerySub::new(
        p.query_id.clone(),
        p.map_name.clone(),
        plan.clone(),
        p.fields.clone(),
        s.conn.clone(),
    ));
    s.gw.queries.insert(sub.clone());

    let (after, cursor_status) = match &p.query.cursor {
        None => (None, None),
        Some(cursor) => match query_cursor::decode(cursor, &p.query) {
            Ok(position) => (Some(position), Some(CursorStatus::Valid)),
            Err(status) => (None, Some(status)),
        },
    };
    let max = s.gw.server.read().max_query_records as usize;
    let limit = p.query.limit.map(|l| (l as usize).min(max)).unwrap_or(max);
    match scatter::run_query(
        &s.gw,
        &p.map_name,
        &p.query,
        &plan,
        Some(limit),
        after.as_ref(),
    )
    .await
    {
        Ok(page) => {
            let next_cursor = match (&page.last, page.has_more) {
                (Some(last), true) => Some(query_cursor::encode(last, &p.query)),
                _ => None,
            };
            let results = page
                .rows
                .into_iter()
                .map(|(key, value)| QueryResultRow {
                    key,
                    value: project(p.fields.as_deref(), &value),
                })
                .collect();
            let payload = QueryRespPayload {
                query_id: p.query_id,
                results,
                next_cursor,
                has_more: Some(page.has_more),
                cursor_status: cursor_status.map(|c| c.as_str().to_string()),
                merkle_root_hash: None,
            };
            s.send(Message::QueryResp { payload }).await;
        }
        Err(err) => {
            s.send(empty_response(&p.query_id)).await;
            s.send_error(&err).await;
        }
    }
    sub.go_live();
}
