//! The client wire protocol: every message is one MsgPack map with a `type` key
//! (core.md §1.4). [`Message`] is the tagged union; [`decode`] / [`encode`] are the
//! only entry points the gateway uses.

pub mod batch;
pub mod core;
pub mod extended;
pub mod http;
pub mod messaging;
pub mod query;
pub mod records;
pub mod search;

pub use self::core::*;
pub use extended::*;
pub use http::*;
pub use messaging::*;
pub use query::*;
pub use records::*;
pub use search::*;

use crate::numbers::u64_flex;
use serde::{Deserialize, Serialize};

/// BATCH envelope (flat): `count` inner messages framed in `data` (see [`batch`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchEnvelope {
    /// Number of inner messages.
    #[serde(deserialize_with = "u64_flex")]
    pub count: u64,
    /// Framed inner messages.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

macro_rules! messages {
    (
        flat { $( $fname:literal => $fvar:ident($fty:ty) ),* $(,)? }
        payload { $( $pname:literal => $pvar:ident($pty:ty) ),* $(,)? }
    ) => {
        /// Every message of the protocol, tagged by its `type` string.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type")]
        pub enum Message {
            $(
                #[doc = concat!("`", $fname, "` (flat).")]
                #[serde(rename = $fname)]
                $fvar($fty),
            )*
            $(
                #[doc = concat!("`", $pname, "` (payload-wrapped).")]
                #[serde(rename = $pname)]
                $pvar { payload: $pty },
            )*
            /// `PARTITION_MAP_REQUEST` (optional payload).
            #[serde(rename = "PARTITION_MAP_REQUEST")]
            PartitionMapRequest {
                /// Version the client holds.
                #[serde(default, skip_serializing_if = "Option::is_none")]
                payload: Option<PartitionMapRequestPayload>,
            },
            /// `JOURNAL_EVENT` (fields under `event`).
            #[serde(rename = "JOURNAL_EVENT")]
            JournalEvent(JournalEventBody),
            /// `SERVER_EVENT`, with the server HLC as top-level side channel (core.md §1.9).
            #[serde(rename = "SERVER_EVENT")]
            ServerEvent {
                /// The event.
                payload: ServerEventPayload,
                /// Server `hlc.now()`; the client feeds it to its clock.
                #[serde(default, skip_serializing_if = "Option::is_none")]
                timestamp: Option<crate::hlc::Timestamp>,
            },
            /// `SERVER_BATCH_EVENT`, with the same optional side channel.
            #[serde(rename = "SERVER_BATCH_EVENT")]
            ServerBatchEvent {
                /// The events.
                payload: ServerBatchEventPayload,
                /// Server `hlc.now()`.
                #[serde(default, skip_serializing_if = "Option::is_none")]
                timestamp: Option<crate::hlc::Timestamp>,
            },
        }

        /// Every `type` string the protocol defines.
        pub const MESSAGE_TYPES: &[&str] = &[
            $( $fname, )* $( $pname, )* "PARTITION_MAP_REQUEST", "JOURNAL_EVENT", "SERVER_EVENT",
            "SERVER_BATCH_EVENT",
        ];

        impl Message {
            /// Decodes a frame of the given `type` straight into its variant's type, without
            /// the content buffering serde needs for an internally tagged enum (the `type`
            /// key is then an unknown field, ignored). `None` for the hand-written variants.
            fn decode_tagged(
                message_type: &str,
                bytes: &[u8],
            ) -> Option<Result<Message, rmp_serde::decode::Error>> {
                Some(match message_type {
                    $( $fname => rmp_serde::from_slice::<$fty>(bytes).map(Message::$fvar), )*
                    $( $pname => rmp_serde::from_slice::<Payload<$pty>>(bytes)
                        .map(|p| Message::$pvar { payload: p.payload }), )*
                    _ => return None,
                })
            }

            /// The message's `type` string.
            pub fn type_name(&self) -> &'static str {
                match self {
                    $( Message::$fvar(..) => $fname, )*
                    $( Message::$pvar { .. } => $pname, )*
                    Message::PartitionMapRequest { .. } => "PARTITION_MAP_REQUEST",
                    Message::JournalEvent(..) => "JOURNAL_EVENT",
                    Message::ServerEvent { .. } => "SERVER_EVENT",
                    Message::ServerBatchEvent { .. } => "SERVER_BATCH_EVENT",
                }
            }
        }
    };
}

messages! {
    flat {
        "AUTH" => Auth(Auth),
        "AUTH_REQUIRED" => AuthRequired(AuthRequired),
        "AUTH_ACK" => AuthAck(AuthAck),
        "AUTH_FAIL" => AuthFail(AuthFail),
        "PING" => Ping(Ping),
        "PONG" => Pong(Pong),
        "BATCH" => Batch(BatchEnvelope),
        "MERGE_REJECTED" => MergeRejected(MergeRejected),
        "SYNC_INIT" => SyncInit(SyncInit),
        "ORMAP_SYNC_INIT" => OrMapSyncInit(OrMapSyncInit),
        "ENTRY_PROCESS" => EntryProcess(EntryProcess),
        "ENTRY_PROCESS_BATCH" => EntryProcessBatch(EntryProcessBatch),
        "ENTRY_PROCESS_RESPONSE" => EntryProcessResponse(EntryProcessResponse),
        "ENTRY_PROCESS_BATCH_RESPONSE" => EntryProcessBatchResponse(EntryProcessBatchResponse),
        "JOURNAL_SUBSCRIBE" => JournalSubscribe(JournalSubscribe),
        "JOURNAL_UNSUBSCRIBE" => JournalUnsubscribe(JournalUnsubscribe),
        "JOURNAL_READ" => JournalRead(JournalRead),
        "JOURNAL_READ_RESPONSE" => JournalReadResponse(JournalReadResponse),
        "REGISTER_RESOLVER" => RegisterResolver(RegisterResolver),
        "REGISTER_RESOLVER_RESPONSE" => RegisterResolverResponse(ResolverResponse),
        "UNREGISTER_RESOLVER" => UnregisterResolver(UnregisterResolver),
        "UNREGISTER_RESOLVER_RESPONSE" => UnregisterResolverResponse(ResolverResponse),
        "LIST_RESOLVERS" => ListResolvers(ListResolvers),
        "LIST_RESOLVERS_RESPONSE" => ListResolversResponse(ListResolversResponse),
    }
    payload {
        "CLIENT_OP" => ClientOp(ClientOp),
        "OP_BATCH" => OpBatch(OpBatchPayload),
        "OP_ACK" => OpAck(OpAckPayload),
        "OP_REJECTED" => OpRejected(OpRejectedPayload),
        "GC_PRUNE" => GcPrune(GcPrunePayload),
        "ERROR" => Error(ErrorPayload),
        "SYNC_RESP_ROOT" => SyncRespRoot(SyncRespRootPayload),
        "SYNC_RESP_BUCKETS" => SyncRespBuckets(SyncRespBucketsPayload),
        "SYNC_RESP_LEAF" => SyncRespLeaf(SyncRespLeafPayload),
        "MERKLE_REQ_BUCKET" => MerkleReqBucket(MerkleReqBucketPayload),
        "SYNC_RESET_REQUIRED" => SyncResetRequired(SyncResetRequiredPayload),
        "ORMAP_SYNC_RESP_ROOT" => OrMapSyncRespRoot(SyncRespRootPayload),
        "ORMAP_SYNC_RESP_BUCKETS" => OrMapSyncRespBuckets(SyncRespBucketsPayload),
        "ORMAP_SYNC_RESP_LEAF" => OrMapSyncRespLeaf(OrMapSyncRespLeafPayload),
        "ORMAP_MERKLE_REQ_BUCKET" => OrMapMerkleReqBucket(MerkleReqBucketPayload),
        "ORMAP_DIFF_REQUEST" => OrMapDiffRequest(OrMapDiffRequestPayload),
        "ORMAP_DIFF_RESPONSE" => OrMapDiffResponse(OrMapEntriesPayload),
        "ORMAP_PUSH_DIFF" => OrMapPushDiff(OrMapEntriesPayload),
        "PARTITION_MAP" => PartitionMap(PartitionMapPayload),
        "PARTITION_MAP_DELTA" => PartitionMapDelta(PartitionMapDeltaPayload),
        "QUERY_SUB" => QuerySub(QuerySubPayload),
        "QUERY_UNSUB" => QueryUnsub(QueryUnsubPayload),
        "QUERY_RESP" => QueryResp(QueryRespPayload),
        "QUERY_UPDATE" => QueryUpdate(QueryUpdatePayload),
        "QUERY_SYNC_INIT" => QuerySyncInit(QuerySyncInitPayload),
        "HYBRID_QUERY_SUBSCRIBE" => HybridQuerySubscribe(HybridQuerySubscribePayload),
        "HYBRID_QUERY_UNSUBSCRIBE" => HybridQueryUnsubscribe(SubscriptionIdPayload),
        "SEARCH" => Search(SearchPayload),
        "SEARCH_RESP" => SearchResp(SearchRespPayload),
        "SEARCH_SUB" => SearchSub(SearchSubPayload),
        "SEARCH_UPDATE" => SearchUpdate(SearchUpdatePayload),
        "SEARCH_UNSUB" => SearchUnsub(SubscriptionIdPayload),
        "TOPIC_SUB" => TopicSub(TopicPayload),
        "TOPIC_UNSUB" => TopicUnsub(TopicPayload),
        "TOPIC_PUB" => TopicPub(TopicPubPayload),
        "TOPIC_MESSAGE" => TopicMessage(TopicMessagePayload),
        "LOCK_REQUEST" => LockRequest(LockRequestPayload),
        "LOCK_RELEASE" => LockRelease(LockReleasePayload),
        "LOCK_GRANTED" => LockGranted(LockGrantedPayload),
        "LOCK_RELEASED" => LockReleased(LockReleasedPayload),
        "COUNTER_REQUEST" => CounterRequest(CounterRequestPayload),
        "COUNTER_SYNC" => CounterSync(CounterStatePayload),
        "COUNTER_RESPONSE" => CounterResponse(CounterStatePayload),
        "COUNTER_UPDATE" => CounterUpdate(CounterStatePayload),
        "HYBRID_SEARCH" => HybridSearch(HybridSearchPayload),
        "HYBRID_SEARCH_RESP" => HybridSearchResp(HybridSearchRespPayload),
        "HYBRID_SEARCH_SUB" => HybridSearchSub(HybridSearchPayload),
        "HYBRID_SEARCH_UPDATE" => HybridSearchUpdate(HybridSearchUpdatePayload),
        "HYBRID_SEARCH_UNSUB" => HybridSearchUnsub(SubscriptionIdPayload),
        "VECTOR_SEARCH" => VectorSearch(VectorSearchPayload),
        "VECTOR_SEARCH_RESP" => VectorSearchResp(VectorSearchRespPayload),
        "SQL_QUERY" => SqlQuery(SqlQueryPayload),
        "SQL_QUERY_RESP" => SqlQueryResp(SqlQueryRespPayload),
        "CLUSTER_SUB_REGISTER" => ClusterSubRegister(ClusterSubRegisterPayload),
        "CLUSTER_SUB_ACK" => ClusterSubAck(ClusterSubAckPayload),
        "CLUSTER_SUB_UPDATE" => ClusterSubUpdate(ClusterSubUpdatePayload),
        "CLUSTER_SUB_UNREGISTER" => ClusterSubUnregister(SubscriptionIdPayload),
        "CLUSTER_SEARCH_REQ" => ClusterSearchReq(ClusterSearchReqPayload),
        "CLUSTER_SEARCH_RESP" => ClusterSearchResp(ClusterSearchRespPayload),
        "CLUSTER_SEARCH_SUBSCRIBE" => ClusterSearchSubscribe(ClusterSearchSubscribePayload),
        "CLUSTER_SEARCH_UNSUBSCRIBE" => ClusterSearchUnsubscribe(SubscriptionIdPayload),
        "CLUSTER_SEARCH_UPDATE" => ClusterSearchUpdate(ClusterSearchUpdatePayload),
    }
}

/// Why a frame could not be turned into a [`Message`].
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    /// Not MsgPack, or not a map with a string `type`.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A `type` this protocol does not define.
    #[error("unknown message type: {0}")]
    UnknownType(String),
    /// A known type whose fields do not fit its schema.
    #[error("invalid {message_type} message: {reason}")]
    Invalid {
        /// The `type` string.
        message_type: String,
        /// The schema failure.
        reason: String,
    },
}

/// Decodes one frame. Unknown keys are ignored; the error says what was wrong.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    // serde would accept a sequence whose first element is a variant index; the
    // protocol only has maps.
    if !matches!(bytes.first(), Some(0x80..=0x8f | 0xde | 0xdf)) {
        return Err(DecodeError::Malformed("expected a map".into()));
    }
    // Fast path: the TypeScript client writes `type` first. Anything it cannot decode
    // takes the general path, so errors and odd frames are handled in one place.
    if let Some(Some(Ok(message))) =
        leading_type(bytes).map(|message_type| Message::decode_tagged(message_type, bytes))
    {
        return Ok(message);
    }
    match rmp_serde::from_slice::<Message>(bytes) {
        Ok(message) => Ok(message),
        Err(err) => Err(diagnose(bytes, err)),
    }
}

/// The body of a payload-wrapped message, read without its `type`.
#[derive(Deserialize)]
struct Payload<T> {
    payload: T,
}

/// The `type` of a map frame whose first key is `type`.
fn leading_type(bytes: &[u8]) -> Option<&str> {
    let mut rest = bytes;
    rmp::decode::read_map_len(&mut rest).ok()?;
    let (key, rest) = rmp::decode::read_str_from_slice(rest).ok()?;
    if key != "type" {
        return None;
    }
    rmp::decode::read_str_from_slice(rest)
        .ok()
        .map(|(value, _)| value)
}

/// Decodes a standalone body (e.g. an HTTP sync request) of type `T`.
pub fn decode_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
}

// Slow path, only for bad frames: find out which of the three failures it was.
fn diagnose(bytes: &[u8], err: rmp_serde::decode::Error) -> DecodeError {
    let value = match rmpv::decode::read_value(&mut &bytes[..]) {
        Ok(value) => value,
        Err(e) => return DecodeError::Malformed(e.to_string()),
    };
    let Some(entries) = value.as_map() else {
        return DecodeError::Malformed("expected a map".into());
    };
    let type_name = entries
        .iter()
        .find(|(k, _)| k.as_str() == Some("type"))
        .and_then(|(_, v)| v.as_str());
    match type_name {
        None => DecodeError::Malformed("missing string field `type`".into()),
        Some(t) if !MESSAGE_TYPES.contains(&t) => DecodeError::UnknownType(t.to_string()),
        Some(t) => DecodeError::Invalid {
            message_type: t.to_string(),
            reason: err.to_string(),
        },
    }
}

/// Encodes a message as a MsgPack map with camelCase string keys.
pub fn encode(message: &Message) -> Vec<u8> {
    encode_body(message)
}

/// Encodes any serializable body (maps with string keys).
pub fn encode_body<T: Serialize + ?Sized>(body: &T) -> Vec<u8> {
    // Serializing plain data structs into a Vec cannot fail: there is no I/O and every
    // key is a string.
    rmp_serde::to_vec_named(body)
        .unwrap_or_else(|e| unreachable!("encoding a protocol body into memory failed: {e}"))
}

/// Encodes an rmpv value (user data) to MsgPack bytes.
pub fn encode_value(value: &rmpv::Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, value);
    out
}

/// Decodes MsgPack bytes (user data) into an rmpv value.
pub fn decode_value(bytes: &[u8]) -> Result<rmpv::Value, String> {
    rmpv::decode::read_value(&mut &bytes[..]).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The general path alone: serde's internally tagged enum.
    fn decode_general(bytes: &[u8]) -> Result<Message, String> {
        rmp_serde::from_slice::<Message>(bytes).map_err(|e| e.to_string())
    }

    #[test]
    fn the_fast_path_decodes_every_client_fixture_as_the_general_path_does() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut fast = 0;
        for entry in std::fs::read_dir(dir).expect("fixtures folder") {
            let path = entry.expect("entry").path();
            if path.extension().and_then(|e| e.to_str()) != Some("msgpack") {
                continue;
            }
            let bytes = std::fs::read(&path).expect("fixture");
            let Some(message_type) = leading_type(&bytes) else {
                continue;
            };
            let Some(tagged) = Message::decode_tagged(message_type, &bytes) else {
                continue;
            };
            // Both paths accept the same fixtures (a fast-path miss would only cost time,
            // but would go unnoticed) and produce the same message.
            assert_eq!(
                tagged.map_err(|e| e.to_string()).ok(),
                decode_general(&bytes).ok(),
                "{path:?}"
            );
            fast += 1;
        }
        assert!(fast >= 20, "only {fast} fixtures took the fast path");
    }

    #[test]
    fn frames_the_fast_path_cannot_take_get_the_general_paths_answer() {
        let batch = Message::OpBatch {
            payload: OpBatchPayload {
                ops: Vec::new(),
                write_concern: None,
                timeout: None,
            },
        };
        let bytes = encode(&batch);
        assert_eq!(leading_type(&bytes), Some("OP_BATCH"));
        assert_eq!(decode(&bytes), Ok(batch.clone()));

        // `type` not first: decoded by the general path, to the same message.
        let mut reordered = Vec::new();
        rmp::encode::write_map_len(&mut reordered, 2).expect("vec write");
        rmp::encode::write_str(&mut reordered, "payload").expect("vec write");
        reordered.extend_from_slice(&encode_value_of(&batch, "payload"));
        rmp::encode::write_str(&mut reordered, "type").expect("vec write");
        rmp::encode::write_str(&mut reordered, "OP_BATCH").expect("vec write");
        assert_eq!(leading_type(&reordered), None);
        assert_eq!(decode(&reordered), Ok(batch));

        // A body that does not fit: the general path's diagnosis.
        let mut broken = Vec::new();
        rmp::encode::write_map_len(&mut broken, 2).expect("vec write");
        rmp::encode::write_str(&mut broken, "type").expect("vec write");
        rmp::encode::write_str(&mut broken, "OP_BATCH").expect("vec write");
        rmp::encode::write_str(&mut broken, "payload").expect("vec write");
        rmp::encode::write_str(&mut broken, "not a payload").expect("vec write");
        assert!(matches!(
            decode(&broken),
            Err(DecodeError::Invalid { message_type, .. }) if message_type == "OP_BATCH"
        ));
    }

    /// The MsgPack of one top-level field of `message`.
    fn encode_value_of(message: &Message, field: &str) -> Vec<u8> {
        let value = decode_value(&encode(message)).expect("valid msgpack");
        let inner = value
            .as_map()
            .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some(field)))
            .map(|(_, v)| v.clone())
            .expect("field present");
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &inner).expect("vec write");
        out
    }

    #[test]
    fn absent_optionals_are_not_encoded() {
        let bytes = encode(&Message::AuthAck(AuthAck::default()));
        let value = decode_value(&bytes).expect("valid msgpack");
        assert_eq!(
            value.as_map().map(Vec::len),
            Some(1),
            "only `type`: {value}"
        );

        let bytes = encode(&Message::PartitionMapRequest { payload: None });
        let value = decode_value(&bytes).expect("valid msgpack");
        assert_eq!(value.to_string(), r#"{"type": "PARTITION_MAP_REQUEST"}"#);

        let bytes = encode(&Message::LockRequest {
            payload: LockRequestPayload {
                request_id: "r".into(),
                name: "n".into(),
                ttl: None,
            },
        });
        let value = decode_value(&bytes).expect("valid msgpack");
        assert!(!value.to_string().contains("ttl"), "{value}");
    }

    #[test]
    fn bad_frames_are_classified() {
        assert!(matches!(decode(&[0xc1]), Err(DecodeError::Malformed(_))));
        let arr = decode(&[0x91, 0x01]);
        assert!(matches!(arr, Err(DecodeError::Malformed(_))), "{arr:?}");
        let unknown = encode_body(&serde_json::json!({"type": "NOPE"}));
        assert_eq!(
            decode(&unknown),
            Err(DecodeError::UnknownType("NOPE".into()))
        );
        let bad = encode_body(&serde_json::json!({"type": "AUTH", "token": 5}));
        assert!(matches!(decode(&bad), Err(DecodeError::Invalid { .. })));
    }

    #[test]
    fn op_classification_follows_the_rules_in_order() {
        let ts = crate::hlc::Timestamp::new(1, 0, "n");
        let lww = LwwRecord {
            value: rmpv::Value::from(1),
            timestamp: ts.clone(),
            ttl_ms: None,
        };
        let or = OrMapRecord {
            value: rmpv::Value::from(1),
            timestamp: ts,
            tag: "t".into(),
            ttl_ms: None,
        };
        let base = ClientOp {
            map_name: "m".into(),
            key: "k".into(),
            ..Default::default()
        };
        let put = ClientOp {
            record: Some(Some(lww.clone())),
            ..base.clone()
        };
        assert_eq!(put.kind(), Some(OpKind::LwwPut(&lww)));
        let remove = ClientOp {
            op_type: Some("REMOVE".into()),
            ..base.clone()
        };
        assert_eq!(remove.kind(), Some(OpKind::LwwRemove));
        let nil_record = ClientOp {
            record: Some(None),
            ..base.clone()
        };
        assert_eq!(nil_record.kind(), Some(OpKind::LwwRemove));
        let add = ClientOp {
            or_record: Some(Some(or.clone())),
            ..base.clone()
        };
        assert_eq!(add.kind(), Some(OpKind::OrAdd(&or)));
        let or_remove = ClientOp {
            or_tag: Some(Some("t".into())),
            ..base.clone()
        };
        assert_eq!(or_remove.kind(), Some(OpKind::OrRemove("t")));
        let set = ClientOp {
            op_type: Some("set".into()),
            record: Some(Some(lww.clone())),
            ..base.clone()
        };
        assert_eq!(set.kind(), Some(OpKind::LwwPut(&lww)));
        assert_eq!(base.kind(), None);
    }
}
