//! Families this server decodes but does not implement: each gets its family's error
//! reply (or ERROR 501) instead of silence, so clients fail fast instead of timing out.

use super::session::Session;
use crate::error::GatewayError;
use topgun_proto::wire::{
    EntryProcessBatchResponse, EntryProcessOutcome, EntryProcessResponse, HybridSearchRespPayload,
    ListResolversResponse, Message, ResolverResponse, SqlQueryRespPayload, VectorSearchRespPayload,
};

const ENTRY_PROCESSING: &str = "Entry processing not available: WASM sandbox required";
const RESOLVERS: &str = "Conflict resolvers not available: WASM sandbox required";

fn not_implemented(family: &str) -> GatewayError {
    GatewayError::NotImplemented(family.to_string())
}

pub(super) async fn handle(s: &Session, message: Message) {
    let failed = |error: &str| EntryProcessOutcome {
        success: false,
        result: None,
        new_value: None,
        error: Some(error.to_string()),
    };
    let reply = match message {
        Message::EntryProcess(m) => Message::EntryProcessResponse(EntryProcessResponse {
            request_id: m.request_id,
            outcome: failed(ENTRY_PROCESSING),
        }),
        Message::EntryProcessBatch(m) => {
            Message::EntryProcessBatchResponse(EntryProcessBatchResponse {
                request_id: m.request_id,
                results: m
                    .keys
                    .into_iter()
                    .map(|k| (k, failed(ENTRY_PROCESSING)))
                    .collect(),
            })
        }
        Message::RegisterResolver(m) => Message::RegisterResolverResponse(ResolverResponse {
            request_id: m.request_id,
            success: false,
            error: Some(RESOLVERS.into()),
        }),
        Message::UnregisterResolver(m) => Message::UnregisterResolverResponse(ResolverResponse {
            request_id: m.request_id,
            success: false,
            error: Some(RESOLVERS.into()),
        }),
        // No resolver can be registered, so the list is truthfully empty.
        Message::ListResolvers(m) => Message::ListResolversResponse(ListResolversResponse {
            request_id: m.request_id,
            resolvers: vec![],
        }),
        Message::HybridSearch { payload } => Message::HybridSearchResp {
            payload: HybridSearchRespPayload {
                request_id: payload.request_id.unwrap_or_default(),
                results: vec![],
                search_time_ms: 0,
                error: Some(not_implemented("hybrid search").to_string()),
            },
        },
        Message::HybridSearchSub { payload } => Message::HybridSearchResp {
            payload: HybridSearchRespPayload {
                request_id: payload.subscription_id.unwrap_or_default(),
                results: vec![],
                search_time_ms: 0,
                error: Some(not_implemented("hybrid search").to_string()),
            },
        },
        Message::VectorSearch { payload } => Message::VectorSearchResp {
            payload: VectorSearchRespPayload {
                id: payload.id,
                results: vec![],
                total_candidates: 0,
                search_time_ms: 0,
                error: Some(not_implemented("vector search").to_string()),
            },
        },
        Message::SqlQuery { payload } => Message::SqlQueryResp {
            payload: SqlQueryRespPayload {
                query_id: payload.query_id,
                columns: vec![],
                rows: vec![],
                error: Some("SqlNotEnabled".into()),
            },
        },
        Message::LockRequest { .. } | Message::LockRelease { .. } => {
            not_implemented("locks").to_message()
        }
        Message::CounterRequest { .. } | Message::CounterSync { .. } => {
            not_implemented("counters").to_message()
        }
        Message::JournalSubscribe(_) | Message::JournalRead(_) => {
            not_implemented("event journal").to_message()
        }
        // Unsubscribes and client-only hybrid queries need no answer (§1.10, §2.5).
        Message::JournalUnsubscribe(_)
        | Message::HybridSearchUnsub { .. }
        | Message::HybridQuerySubscribe { .. }
        | Message::HybridQueryUnsubscribe { .. } => return,
        // Server-to-client and server-to-server types arriving from a client are ignored.
        other => {
            tracing::debug!(
                conn = s.conn.id,
                message_type = other.type_name(),
                "ignoring message not meant for a server"
            );
            return;
        }
    };
    s.send(reply).await;
}
