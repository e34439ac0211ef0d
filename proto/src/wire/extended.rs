//! Extended families: entry processors, event journal, conflict resolvers, hybrid and
//! vector search, SQL, and the server-to-server CLUSTER_* messages. The gateway decodes
//! them faithfully and answers with each family's "not supported" reply.

use super::query::ChangeType;
use super::search::SearchOptions;
use crate::hlc::Timestamp;
use crate::numbers::{opt_u64_flex, u64_flex};
use rmpv::Value;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

/// An entry processor definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryProcessor {
    /// Name.
    pub name: String,
    /// JS source.
    pub code: String,
    /// Arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
}

/// ENTRY_PROCESS (flat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryProcess {
    /// Correlation id.
    pub request_id: String,
    /// Map.
    pub map_name: String,
    /// Key.
    pub key: String,
    /// Processor.
    pub processor: EntryProcessor,
}

/// ENTRY_PROCESS_BATCH (flat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryProcessBatch {
    /// Correlation id.
    pub request_id: String,
    /// Map.
    pub map_name: String,
    /// Keys.
    pub keys: Vec<String>,
    /// Processor.
    pub processor: EntryProcessor,
}

/// Outcome of an entry processor on one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryProcessOutcome {
    /// Outcome.
    pub success: bool,
    /// Processor return value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// New record value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_value: Option<Value>,
    /// Failure text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// ENTRY_PROCESS_RESPONSE (flat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryProcessResponse {
    /// Echo.
    pub request_id: String,
    /// Outcome fields.
    #[serde(flatten)]
    pub outcome: EntryProcessOutcome,
}

/// ENTRY_PROCESS_BATCH_RESPONSE (flat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryProcessBatchResponse {
    /// Echo.
    pub request_id: String,
    /// One outcome per key.
    pub results: BTreeMap<String, EntryProcessOutcome>,
}

/// One event of the event journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalEventData {
    /// Decimal sequence.
    pub sequence: String,
    /// PUT, UPDATE, DELETE.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Map.
    pub map_name: String,
    /// Key.
    pub key: String,
    /// New value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// Old value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_value: Option<Value>,
    /// Write time.
    pub timestamp: Timestamp,
    /// Producing node.
    pub node_id: String,
    /// Free-form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, Value>>,
}

/// Accepts both the normative `event` map and upstream's doubly nested `event.event`.
fn journal_event_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<JournalEventData, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Shape {
        Nested { event: JournalEventData },
        Flat(JournalEventData),
    }
    Ok(match Shape::deserialize(d)? {
        Shape::Nested { event } | Shape::Flat(event) => event,
    })
}

/// JOURNAL_EVENT body (fields under `event`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEventBody {
    /// The event map.
    #[serde(deserialize_with = "journal_event_lenient")]
    pub event: JournalEventData,
}

/// JOURNAL_SUBSCRIBE (flat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalSubscribe {
    /// Also the subscription id.
    pub request_id: String,
    /// Start sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_sequence: Option<String>,
    /// Map filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_name: Option<String>,
    /// Kind filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
}

/// JOURNAL_UNSUBSCRIBE (flat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalUnsubscribe {
    /// The subscribe requestId.
    pub subscription_id: String,
}

/// JOURNAL_READ (flat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalRead {
    /// Correlation id.
    pub request_id: String,
    /// Inclusive start.
    pub from_sequence: String,
    /// Max events.
    #[serde(
        default,
        deserialize_with = "opt_u64_flex",
        skip_serializing_if = "Option::is_none"
    )]
    pub limit: Option<u64>,
    /// Map filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_name: Option<String>,
}

/// JOURNAL_READ_RESPONSE (flat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalReadResponse {
    /// Echo.
    pub request_id: String,
    /// Oldest first.
    pub events: Vec<JournalEventData>,
    /// More matched.
    pub has_more: bool,
}

/// A conflict resolver definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolverDef {
    /// Name.
    pub name: String,
    /// JS source.
    #[serde(default)]
    pub code: String,
    /// 0–100.
    #[serde(
        default,
        deserialize_with = "opt_u64_flex",
        skip_serializing_if = "Option::is_none"
    )]
    pub priority: Option<u64>,
    /// Key glob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pattern: Option<String>,
}

/// REGISTER_RESOLVER (flat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterResolver {
    /// Correlation id.
    pub request_id: String,
    /// Map.
    pub map_name: String,
    /// Resolver.
    pub resolver: ResolverDef,
}

/// UNREGISTER_RESOLVER (flat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnregisterResolver {
    /// Correlation id.
    pub request_id: String,
    /// Map.
    pub map_name: String,
    /// Resolver name.
    pub resolver_name: String,
}

/// REGISTER_RESOLVER_RESPONSE / UNREGISTER_RESOLVER_RESPONSE (flat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolverResponse {
    /// Echo.
    pub request_id: String,
    /// Outcome.
    pub success: bool,
    /// Failure text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// LIST_RESOLVERS (flat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListResolvers {
    /// Correlation id.
    pub request_id: String,
    /// Map filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_name: Option<String>,
}

/// One entry of LIST_RESOLVERS_RESPONSE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolverInfo {
    /// Map.
    pub map_name: String,
    /// Name.
    pub name: String,
    /// Priority.
    #[serde(
        default,
        deserialize_with = "opt_u64_flex",
        skip_serializing_if = "Option::is_none"
    )]
    pub priority: Option<u64>,
    /// Key glob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pattern: Option<String>,
}

/// LIST_RESOLVERS_RESPONSE (flat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListResolversResponse {
    /// Echo.
    pub request_id: String,
    /// Resolvers.
    pub resolvers: Vec<ResolverInfo>,
}

/// HYBRID_SEARCH / HYBRID_SEARCH_SUB payload (`requestId` or `subscriptionId`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HybridSearchPayload {
    /// Correlation id (HYBRID_SEARCH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Subscription id (HYBRID_SEARCH_SUB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<String>,
    /// Map.
    pub map_name: String,
    /// Text.
    pub query_text: String,
    /// Legs to run.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Fused results wanted.
    #[serde(default, deserialize_with = "u64_flex")]
    pub k: u64,
    /// Query embedding (bin, int array or index-keyed map).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_vector: Option<Value>,
    /// Exact-leg predicate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicate: Option<Value>,
    /// Include values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_value: Option<bool>,
    /// Fused score floor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_score: Option<f64>,
}

/// HYBRID_SEARCH_RESP payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HybridSearchRespPayload {
    /// Echo.
    pub request_id: String,
    /// Fused results.
    pub results: Vec<Value>,
    /// Wall time.
    #[serde(deserialize_with = "u64_flex")]
    pub search_time_ms: u64,
    /// Failure text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// HYBRID_SEARCH_UPDATE payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HybridSearchUpdatePayload {
    /// Subscription.
    pub subscription_id: String,
    /// Key.
    pub key: String,
    /// Fused score.
    pub score: f64,
    /// Per-leg scores.
    #[serde(default)]
    pub method_scores: BTreeMap<String, f64>,
    /// Value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// Kind.
    pub change_type: ChangeType,
}

/// VECTOR_SEARCH payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VectorSearchPayload {
    /// Correlation id.
    pub id: String,
    /// Map.
    pub map_name: String,
    /// Index attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_name: Option<String>,
    /// Query embedding.
    #[serde(default = "crate::numbers::nil")]
    pub query_vector: Value,
    /// Neighbours wanted.
    #[serde(default, deserialize_with = "u64_flex")]
    pub k: u64,
    /// Search breadth.
    #[serde(
        default,
        deserialize_with = "opt_u64_flex",
        skip_serializing_if = "Option::is_none"
    )]
    pub ef_search: Option<u64>,
    /// Options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Value>,
}

/// VECTOR_SEARCH_RESP payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VectorSearchRespPayload {
    /// Echo.
    pub id: String,
    /// Results.
    pub results: Vec<Value>,
    /// Raw candidates.
    #[serde(deserialize_with = "u64_flex")]
    pub total_candidates: u64,
    /// Wall time.
    #[serde(deserialize_with = "u64_flex")]
    pub search_time_ms: u64,
    /// Failure text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// SQL_QUERY payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SqlQueryPayload {
    /// SQL text.
    pub sql: String,
    /// Correlation id.
    pub query_id: String,
}

/// SQL_QUERY_RESP payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SqlQueryRespPayload {
    /// Echo.
    pub query_id: String,
    /// Column names.
    pub columns: Vec<String>,
    /// Rows.
    pub rows: Vec<Vec<Value>>,
    /// Failure text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// CLUSTER_SUB_REGISTER payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSubRegisterPayload {
    /// Subscription.
    pub subscription_id: String,
    /// Coordinator.
    pub coordinator_node_id: String,
    /// Map.
    pub map_name: String,
    /// SEARCH or QUERY.
    #[serde(rename = "type")]
    pub sub_type: String,
    /// Search text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_query: Option<String>,
    /// Search options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_options: Option<SearchOptions>,
    /// Query predicate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_predicate: Option<Value>,
    /// Query sort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_sort: Option<Value>,
}

/// A scored hit inside CLUSTER_* messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterHit {
    /// Key.
    pub key: String,
    /// Value.
    #[serde(default = "crate::numbers::nil")]
    pub value: Value,
    /// Score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Terms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_terms: Option<Vec<String>>,
}

/// CLUSTER_SUB_ACK payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSubAckPayload {
    /// Subscription.
    pub subscription_id: String,
    /// Node.
    pub node_id: String,
    /// Outcome.
    pub success: bool,
    /// Failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Initial hits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_results: Option<Vec<ClusterHit>>,
    /// Total hits.
    #[serde(
        default,
        deserialize_with = "opt_u64_flex",
        skip_serializing_if = "Option::is_none"
    )]
    pub total_hits: Option<u64>,
}

/// CLUSTER_SUB_UPDATE payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSubUpdatePayload {
    /// Subscription.
    pub subscription_id: String,
    /// Source node.
    pub source_node_id: String,
    /// Key.
    pub key: String,
    /// Value.
    #[serde(default = "crate::numbers::nil")]
    pub value: Value,
    /// Score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Terms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_terms: Option<Vec<String>>,
    /// Kind.
    pub change_type: ChangeType,
    /// Millis.
    #[serde(deserialize_with = "u64_flex")]
    pub timestamp: u64,
}

/// CLUSTER_SEARCH_REQ payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSearchReqPayload {
    /// Request.
    pub request_id: String,
    /// Map.
    pub map_name: String,
    /// Text.
    pub query: String,
    /// Options.
    pub options: Value,
    /// Timeout.
    #[serde(
        default,
        deserialize_with = "opt_u64_flex",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout_ms: Option<u64>,
}

/// CLUSTER_SEARCH_RESP payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSearchRespPayload {
    /// Request.
    pub request_id: String,
    /// Node.
    pub node_id: String,
    /// Hits.
    pub results: Vec<ClusterHit>,
    /// Total.
    #[serde(deserialize_with = "u64_flex")]
    pub total_hits: u64,
    /// Time.
    pub execution_time_ms: f64,
    /// Failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// CLUSTER_SEARCH_SUBSCRIBE payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSearchSubscribePayload {
    /// Subscription.
    pub subscription_id: String,
    /// Map.
    pub map_name: String,
    /// Text.
    pub query: String,
    /// Options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<SearchOptions>,
}

/// CLUSTER_SEARCH_UPDATE payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSearchUpdatePayload {
    /// Subscription.
    pub subscription_id: String,
    /// Node.
    pub node_id: String,
    /// Key.
    pub key: String,
    /// Value.
    #[serde(default = "crate::numbers::nil")]
    pub value: Value,
    /// Score.
    pub score: f64,
    /// Terms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_terms: Option<Vec<String>>,
    /// Kind.
    pub change_type: ChangeType,
}
