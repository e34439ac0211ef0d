//! Consumers of every shard's change feed and topic stream. Change events drive
//! SERVER_EVENTs and live-query updates for this gateway's clients, whichever gateway
//! took the write; resumption after a reconnect continues from the last sequence number.

use crate::services::sync_cluster::Shard;
use crate::state::Gateway;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use topgun_proto::grpc::sync::{
    ChangeEvent, EventType, SubscribeChangesRequest, SubscribeTopicsRequest,
};
use topgun_proto::local_feed;
use topgun_proto::wire::{
    self, LwwRecord, Message, OrMapRecord, ServerEventPayload, ServerEventType, TopicMessagePayload,
};

/// Follows every shard of the topology with one feed consumer and one topic consumer,
/// starting consumers for shards that join and letting those of leaving shards stop
/// (their `retired` flag flips); everything stops when `stop` flips.
pub fn spawn_consumers(gw: Arc<Gateway>, stop: watch::Receiver<bool>) {
    tokio::spawn(supervise(gw, stop));
}

async fn supervise(gw: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    let mut changes = gw.sync.changes();
    // By identity, not address: a shard that left and came back is a new object whose
    // consumers must start even if both changes arrive before this loop wakes.
    let mut followed: Vec<Arc<Shard>> = Vec::new();
    loop {
        let shards = gw.sync.shards();
        followed.retain(|f| shards.iter().any(|s| Arc::ptr_eq(s, f)));
        for shard in shards {
            if !followed.iter().any(|f| Arc::ptr_eq(f, &shard)) {
                followed.push(shard.clone());
                tokio::spawn(consume_changes(gw.clone(), shard.clone(), shard.retired()));
                tokio::spawn(consume_topics(gw.clone(), shard.clone(), shard.retired()));
            }
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { break },
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    gw.sync.retire_all();
}

async fn consume_changes(gw: Arc<Gateway>, shard: Arc<Shard>, mut stop: watch::Receiver<bool>) {
    let (mut epoch, mut next_seq) = (String::new(), 0u64);
    let mut backoff = Duration::from_millis(100);
    while !*stop.borrow() {
        let request = SubscribeChangesRequest {
            map_names: vec![],
            from_seq: next_seq,
            epoch: epoch.clone(),
        };
        let mut client = shard.client();
        let stream = tokio::select! {
            r = local_feed::subscribe(&shard.addr, request, |r| client.subscribe_changes(r)) => r,
            _ = stop.changed() => break,
        };
        let mut stream = match stream {
            Ok(s) => s,
            Err(status) => {
                if status.code() == tonic::Code::OutOfRange {
                    // The resume point is gone (shard restarted or we fell too far behind):
                    // continue from now; clients catch up through Merkle sync.
                    tracing::warn!(shard = %shard.addr, "change feed resume point lost; following from now");
                    (epoch, next_seq) = (String::new(), 0);
                } else {
                    tracing::debug!(shard = %shard.addr, error = %status, "change feed unavailable");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {},
                    _ = stop.changed() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        shard.set_following(true);
        loop {
            let batch = tokio::select! {
                m = stream.message() => m,
                _ = stop.changed() => return,
            };
            match batch {
                Ok(Some(batch)) => {
                    if batch.epoch != epoch {
                        epoch = batch.epoch.clone();
                    }
                    for event in batch.events {
                        next_seq = event.seq + 1;
                        dispatch(&gw, event);
                    }
                }
                Ok(None) | Err(_) => {
                    shard.set_following(false);
                    break;
                }
            }
        }
    }
}

/// Turns one change into SERVER_EVENTs and QUERY_UPDATEs (writer excluded).
fn dispatch(gw: &Gateway, event: ChangeEvent) {
    // Most writes have no watcher on this gateway: skip decoding their records.
    if event.map_name != super::policy_sync::POLICY_MAP && !gw.queries.has_map(&event.map_name) {
        return;
    }
    let writer_conn = event
        .origin
        .as_ref()
        .filter(|o| o.gateway_id == gw.gateway_id)
        .map(|o| o.connection_id);
    let event_type = EventType::try_from(event.event_type).unwrap_or(EventType::Put);
    let mut payload = ServerEventPayload {
        map_name: event.map_name.clone(),
        event_type: ServerEventType::Put,
        key: event.key.clone(),
        record: None,
        or_record: None,
        or_tag: None,
    };
    match event_type {
        EventType::Put | EventType::Remove => {
            let Some(record) = event.record.and_then(|r| LwwRecord::try_from(r).ok()) else {
                return;
            };
            if event.map_name == super::policy_sync::POLICY_MAP {
                super::policy_sync::on_change(gw, &event.key, &record);
            }
            let previous = event.previous.and_then(|r| LwwRecord::try_from(r).ok());
            gw.queries.on_lww_change(
                &event.map_name,
                &event.key,
                previous.as_ref(),
                &record,
                writer_conn,
            );
            payload.event_type = if record.is_tombstone() {
                ServerEventType::Remove
            } else {
                ServerEventType::Put
            };
            payload.record = Some(record);
        }
        EventType::OrAdd => {
            payload.event_type = ServerEventType::OrAdd;
            payload.or_record = event.or_record.and_then(|r| OrMapRecord::try_from(r).ok());
            payload.or_tag = Some(event.or_tag);
        }
        EventType::OrRemove => {
            payload.event_type = ServerEventType::OrRemove;
            payload.or_tag = Some(event.or_tag);
        }
    }
    let recipients = gw.queries.subscribers(&event.map_name);
    if recipients.is_empty() {
        return;
    }
    let message = Message::ServerEvent {
        payload,
        timestamp: Some(gw.now()),
    };
    let frame = bytes::Bytes::from(wire::encode(&message));
    for conn in recipients.iter().filter(|c| Some(c.id) != writer_conn) {
        gw.metrics
            .messages_out
            .with_label_values(&["SERVER_EVENT"])
            .inc();
        conn.push_encoded(frame.clone());
    }
}

async fn consume_topics(gw: Arc<Gateway>, shard: Arc<Shard>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(100);
    while !*stop.borrow() {
        let mut client = shard.client();
        let stream = tokio::select! {
            r = client.subscribe_topics(SubscribeTopicsRequest {}) => r,
            _ = stop.changed() => break,
        };
        let Ok(stream) = stream else {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {},
                _ = stop.changed() => break,
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        };
        backoff = Duration::from_millis(100);
        let mut stream = stream.into_inner();
        loop {
            let message = tokio::select! {
                m = stream.message() => m,
                _ = stop.changed() => return,
            };
            let Ok(Some(m)) = message else { break };
            let publisher_conn = m
                .origin
                .as_ref()
                .filter(|o| o.gateway_id == gw.gateway_id)
                .map(|o| o.connection_id);
            let payload = TopicMessagePayload {
                topic: m.topic,
                data: wire::decode_value(&m.data).unwrap_or(rmpv::Value::Nil),
                publisher_id: m.publisher_id,
                timestamp: m.timestamp,
            };
            gw.topics.deliver(payload, publisher_conn);
        }
    }
}
