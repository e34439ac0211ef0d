//! Topic subscriptions of this gateway's connections. Publications travel through the
//! sync shard that owns hash(topic), so every gateway sees every message and fans it
//! out to its own subscribers.

use super::connections::ConnHandle;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use topgun_proto::wire::{Message, TopicMessagePayload};

/// topic -> subscribed connections.
#[derive(Debug, Default)]
pub struct TopicRegistry {
    by_topic: RwLock<HashMap<String, HashMap<u64, Arc<ConnHandle>>>>,
}

impl TopicRegistry {
    /// Subscribes (idempotent).
    pub fn subscribe(&self, topic: &str, conn: Arc<ConnHandle>) {
        self.by_topic
            .write()
            .entry(topic.to_string())
            .or_default()
            .insert(conn.id, conn);
    }

    /// Unsubscribes (no-op when not subscribed).
    pub fn unsubscribe(&self, topic: &str, conn_id: u64) {
        let mut by_topic = self.by_topic.write();
        if let Some(subs) = by_topic.get_mut(topic) {
            subs.remove(&conn_id);
            if subs.is_empty() {
                by_topic.remove(topic);
            }
        }
    }

    /// Drops every subscription of a closed connection.
    pub fn remove_connection(&self, conn_id: u64) {
        self.by_topic.write().retain(|_, subs| {
            subs.remove(&conn_id);
            !subs.is_empty()
        });
    }

    /// Delivers a message to every subscriber except the publishing connection; best
    /// effort (a full queue closes that subscriber as a slow consumer).
    pub fn deliver(&self, payload: TopicMessagePayload, publisher_conn: Option<u64>) {
        let subs: Vec<Arc<ConnHandle>> = match self.by_topic.read().get(&payload.topic) {
            Some(subs) => subs.values().cloned().collect(),
            None => return,
        };
        let message = Message::TopicMessage { payload };
        for conn in subs.iter().filter(|c| Some(c.id) != publisher_conn) {
            conn.push(&message);
        }
    }
}
