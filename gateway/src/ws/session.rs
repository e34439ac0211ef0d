//! One client connection's protocol state machine (core.md §2.1) and message dispatch.

use super::{extended, merkle, queries, search};
use crate::auth::Principal;
use crate::error::GatewayError;
use crate::live::connections::ConnHandle;
use crate::state::Gateway;
use crate::writes::{self, Writer};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::task::JoinHandle;
use topgun_proto::grpc::sync::PublishTopicRequest;
use topgun_proto::hlc::wall_clock_ms;
use topgun_proto::partition::partition_of;
use topgun_proto::trace_context::TraceContext;
use topgun_proto::wire::{
    self, batch, AuthAck, AuthFail, ClientOp, DecodeError, Message, OpAckPayload,
    OpRejectedPayload, Pong, WriteConcern,
};
use tracing::Instrument;

/// Whether the reader keeps going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next frame.
    Continue,
    /// Stop reading (the connection is being closed).
    Stop,
}

#[derive(Debug)]
enum AuthState {
    Unauthenticated,
    /// `None` principal in no-auth mode without a token.
    Authenticated(Option<Principal>),
}

/// Per-connection state.
#[derive(Debug)]
pub struct Session {
    pub(super) gw: Arc<Gateway>,
    pub(super) conn: Arc<ConnHandle>,
    auth: AuthState,
    host: String,
    /// Live search forwarding tasks by subscription id.
    pub(super) search_subs: HashMap<String, JoinHandle<()>>,
}

impl Session {
    /// A session; in no-auth mode it starts authenticated.
    pub fn new(gw: Arc<Gateway>, conn: Arc<ConnHandle>, host: String) -> Self {
        let auth = if gw.auth.is_some() {
            AuthState::Unauthenticated
        } else {
            conn.mark_authenticated();
            AuthState::Authenticated(None)
        };
        Session {
            gw,
            conn,
            auth,
            host,
            search_subs: HashMap::new(),
        }
    }

    pub(super) fn principal(&self) -> Option<&Principal> {
        match &self.auth {
            AuthState::Authenticated(p) => p.as_ref(),
            AuthState::Unauthenticated => None,
        }
    }

    pub(super) fn writer(&self) -> Writer {
        Writer {
            conn_id: Some(self.conn.id),
            principal: self.principal().cloned(),
            authenticated: matches!(self.auth, AuthState::Authenticated(_)),
            via_connection: true,
        }
    }

    pub(super) async fn send(&self, message: Message) {
        self.conn.reply(&message).await;
    }

    pub(super) async fn send_error(&self, error: &GatewayError) {
        self.send(error.to_message()).await;
    }

    /// Releases everything the connection held.
    pub fn close(&mut self) {
        self.gw.queries.remove_connection(self.conn.id);
        self.gw.topics.remove_connection(self.conn.id);
        for (_, task) in self.search_subs.drain() {
            task.abort();
        }
    }

    /// Handles one binary frame.
    pub async fn handle(&mut self, bytes: &[u8]) -> Flow {
        let message = match wire::decode(bytes) {
            Ok(message) => message,
            Err(err) => {
                let reason = match &err {
                    DecodeError::Malformed(_) => "malformed",
                    DecodeError::UnknownType(_) => "unknown_type",
                    DecodeError::Invalid { .. } => "invalid",
                };
                self.gw
                    .metrics
                    .bad_frames
                    .with_label_values(&[reason])
                    .inc();
                tracing::debug!(conn = self.conn.id, error = %err, "bad frame");
                let text = match err {
                    DecodeError::UnknownType(t) => format!("Unknown message type: {t}"),
                    other => format!("Invalid message format: {other}"),
                };
                self.send_error(&GatewayError::BadRequest(text)).await;
                return Flow::Continue;
            }
        };
        let kind = message.type_name();
        self.gw.metrics.messages_in.with_label_values(&[kind]).inc();
        // One trace per client message; every internal call made for it carries the id.
        // The span is debug-level: thousands of messages a second should not pay for it
        // unless asked (`RUST_LOG=info,topgun_gateway::ws=debug`).
        let trace = TraceContext::new_root();
        let span = tracing::debug_span!(
            "message",
            conn = self.conn.id,
            kind,
            trace_id = %trace.trace_id_hex(),
        );
        trace.scope(self.dispatch(message)).instrument(span).await
    }

    async fn dispatch(&mut self, message: Message) -> Flow {
        match (&self.auth, message) {
            (_, Message::Ping(ping)) => {
                self.send(Message::Pong(Pong {
                    timestamp: ping.timestamp,
                    server_time: wall_clock_ms(),
                }))
                .await;
                Flow::Continue
            }
            (AuthState::Unauthenticated, Message::Auth(auth)) => {
                self.authenticate(&auth.token).await
            }
            // No-auth mode with a token-holding client: it waits for AUTH_ACK (core.md §2.8).
            (AuthState::Authenticated(None), Message::Auth(_)) if self.gw.auth.is_none() => {
                self.send(Message::AuthAck(AuthAck {
                    protocol_version: Some(1),
                    user_id: None,
                }))
                .await;
                Flow::Continue
            }
            // A second AUTH on an authenticated connection is ignored silently.
            (AuthState::Authenticated(_), Message::Auth(_)) => Flow::Continue,
            // Everything else before authentication is dropped (core.md §2.7).
            (AuthState::Unauthenticated, _) => Flow::Continue,
            (AuthState::Authenticated(_), message) => {
                self.dispatch_authenticated(message).await;
                Flow::Continue
            }
        }
    }

    async fn authenticate(&mut self, token: &str) -> Flow {
        let Some(verifier) = &self.gw.auth else {
            return Flow::Continue;
        };
        match verifier.verify(token) {
            Ok(principal) => {
                let user_id = Some(principal.id.clone());
                self.auth = AuthState::Authenticated(Some(principal));
                self.conn.mark_authenticated();
                self.send(Message::AuthAck(AuthAck {
                    protocol_version: Some(1),
                    user_id,
                }))
                .await;
                Flow::Continue
            }
            Err(err) => {
                tracing::debug!(conn = self.conn.id, error = %err, "authentication failed");
                let error = if self.gw.network.insecure_forward_auth_errors {
                    err.to_string()
                } else {
                    "Authentication failed".to_string()
                };
                self.send(Message::AuthFail(AuthFail {
                    error: Some(error),
                    code: Some(401),
                }))
                .await;
                self.conn.close_after_pending(4001, "Unauthorized").await;
                Flow::Stop
            }
        }
    }

    async fn dispatch_authenticated(&mut self, message: Message) {
        match message {
            Message::OpBatch { payload } => {
                self.write_batch(&payload.ops, payload.write_concern, true)
                    .await
            }
            Message::ClientOp { payload } => {
                self.write_batch(std::slice::from_ref(&payload), None, false)
                    .await
            }
            Message::SyncInit(m) => merkle::sync_init(self, m).await,
            Message::MerkleReqBucket { payload } => merkle::lww_bucket(self, payload).await,
            Message::OrMapSyncInit(m) => merkle::or_sync_init(self, m).await,
            Message::OrMapMerkleReqBucket { payload } => merkle::or_bucket(self, payload).await,
            Message::OrMapDiffRequest { payload } => merkle::or_diff(self, payload).await,
            Message::OrMapPushDiff { payload } => merkle::or_push(self, payload).await,
            Message::QuerySub { payload } => queries::subscribe(self, payload).await,
            Message::QueryUnsub { payload } => {
                self.gw.queries.remove(self.conn.id, &payload.query_id)
            }
            // Ignored on purpose: QUERY_SUB already delivered a full snapshot (§1.8).
            Message::QuerySyncInit { .. } => {}
            Message::Search { payload } => search::search(self, payload).await,
            Message::SearchSub { payload } => search::subscribe(self, payload).await,
            Message::SearchUnsub { payload } => search::unsubscribe(self, &payload.subscription_id),
            Message::TopicSub { payload } => self.topic_sub(&payload.topic).await,
            Message::TopicUnsub { payload } => {
                self.gw.topics.unsubscribe(&payload.topic, self.conn.id)
            }
            Message::TopicPub { payload } => self.topic_pub(payload.topic, payload.data).await,
            Message::PartitionMapRequest { payload } => {
                let current = payload.and_then(|p| p.current_version).unwrap_or(0);
                if current < crate::cluster_view::version(&self.gw) {
                    self.send(crate::cluster_view::current(&self.gw, &self.host))
                        .await;
                }
            }
            Message::Batch(envelope) => self.client_batch(&envelope.data).await,
            other => extended::handle(self, other).await,
        }
    }

    /// OP_BATCH (`ack_last = true`) or CLIENT_OP: validate all, apply all, then one OP_ACK.
    async fn write_batch(
        &mut self,
        ops: &[ClientOp],
        batch_concern: Option<WriteConcern>,
        is_batch: bool,
    ) {
        if ops.is_empty() {
            return;
        }
        let writer = self.writer();
        let valid = match writes::validate_ops(&self.gw, ops, batch_concern, &writer) {
            Ok(valid) => valid,
            Err(rejection) => {
                // core.md §3.4: ERROR first, OP_REJECTED per op with an id, then an OP_ACK
                // (batches only) so the client stops re-sending the refused ops.
                self.send_error(&rejection.error).await;
                let code = u64::from(rejection.error.code());
                for (i, op) in ops.iter().enumerate() {
                    let Some(id) = &op.id else { continue };
                    let reason = if i == rejection.index {
                        rejection.error.to_string()
                    } else {
                        format!("batch rejected: {}", rejection.error)
                    };
                    self.send(Message::OpRejected {
                        payload: OpRejectedPayload {
                            op_id: id.clone(),
                            reason,
                            code: Some(code),
                        },
                    })
                    .await;
                }
                if is_batch {
                    if let Some(last_id) = ops.last().and_then(|op| op.id.clone()) {
                        let ack = OpAckPayload {
                            last_id,
                            achieved_level: Some(WriteConcern::FireAndForget),
                            results: None,
                        };
                        self.send(Message::OpAck { payload: ack }).await;
                    }
                }
                return;
            }
        };
        match writes::apply(&self.gw, valid, &writer).await {
            Ok(applied) => {
                let Some(last_id) = ops.last().and_then(|op| op.id.clone()) else {
                    return;
                };
                let results = applied.results_needed.then_some(applied.results);
                let ack = OpAckPayload {
                    last_id,
                    achieved_level: Some(applied.achieved),
                    results,
                };
                self.send(Message::OpAck { payload: ack }).await;
            }
            // No OP_ACK: the client keeps the ops and re-sends them (idempotent merges).
            Err(err) => self.send_error(&err).await,
        }
    }

    async fn topic_sub(&mut self, topic: &str) {
        if !wire::is_valid_topic_name(topic) {
            self.send_error(&GatewayError::BadRequest(format!(
                "invalid topic name: {topic:?}"
            )))
            .await;
            return;
        }
        self.gw.topics.subscribe(topic, self.conn.clone());
    }

    async fn topic_pub(&mut self, topic: String, data: rmpv::Value) {
        if !wire::is_valid_topic_name(&topic) {
            self.send_error(&GatewayError::BadRequest(format!(
                "invalid topic name: {topic:?}"
            )))
            .await;
            return;
        }
        if let Err(err) = self.gw.check_write(self.principal(), &topic, &data) {
            self.send_error(&err).await;
            return;
        }
        // The shard owning hash(topic) relays to every gateway, this one included.
        let shard = self.gw.sync.shard_for_partition(partition_of(&topic));
        let request = self.gw.sync.request(PublishTopicRequest {
            topic,
            data: wire::encode_value(&data),
            origin: Some(topgun_proto::grpc::common::Origin {
                gateway_id: self.gw.gateway_id.clone(),
                connection_id: self.conn.id,
            }),
            publisher_id: self.principal().map(|p| p.id.clone()),
        });
        if let Err(status) = shard.client().publish_topic(request).await {
            self.send_error(&GatewayError::from_status(
                &status,
                self.gw.operation_timeout_ms(),
            ))
            .await;
        }
    }

    /// Client BATCH envelopes (never sent by the TS client) use the same LE layout.
    async fn client_batch(&mut self, data: &[u8]) {
        let Some(inner) = batch::unpack_batch_data(data) else {
            self.send_error(&GatewayError::BadRequest(
                "Invalid message format: truncated BATCH".into(),
            ))
            .await;
            return;
        };
        let frames: Vec<Vec<u8>> = inner.into_iter().map(<[u8]>::to_vec).collect();
        for frame in frames {
            // Boxed: a BATCH may nest BATCHes.
            if Box::pin(self.handle(&frame)).await == Flow::Stop {
                return;
            }
        }
    }
}
