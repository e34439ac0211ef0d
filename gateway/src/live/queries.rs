//! Live query subscriptions and their evaluation against the change feed
//! (queries-search-messaging.md §1.6). The shards send each change with the record
//! before and after it, so detection is stateless: `matches(old)` vs `matches(new)`.

use super::connections::ConnHandle;
use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use topgun_proto::hlc::wall_clock_ms;
use topgun_proto::predicate::{project, QueryPlan};
use topgun_proto::wire::{ChangeType, LwwRecord, Message, QueryUpdatePayload};

/// One QUERY_SUB of one connection.
#[derive(Debug)]
pub struct QuerySub {
    /// Client-chosen id.
    pub query_id: String,
    /// Map it watches.
    pub map_name: String,
    /// Compiled filter and sort.
    pub plan: QueryPlan,
    /// Projection.
    pub fields: Option<Vec<String>>,
    /// The subscriber.
    pub conn: Arc<ConnHandle>,
    /// Updates held back until QUERY_RESP is queued (`None` once live), so no update
    /// overtakes the initial results and none that happens in between is lost.
    pending: Mutex<Option<Vec<Message>>>,
}

impl QuerySub {
    /// A subscription that buffers updates until [`QuerySub::go_live`].
    pub fn new(
        query_id: String,
        map_name: String,
        plan: QueryPlan,
        fields: Option<Vec<String>>,
        conn: Arc<ConnHandle>,
    ) -> Self {
        QuerySub {
            query_id,
            map_name,
            plan,
            fields,
            conn,
            pending: Mutex::new(Some(Vec::new())),
        }
    }

    /// Call after QUERY_RESP is queued: flushes buffered updates and switches to direct push.
    pub fn go_live(&self) {
        let buffered = self.pending.lock().take();
        for message in buffered.into_iter().flatten() {
            self.conn.push(&message);
        }
    }

    fn deliver(&self, message: Message) {
        let mut pending = self.pending.lock();
        match pending.as_mut() {
            Some(buffer) => buffer.push(message),
            None => {
                drop(pending);
                self.conn.push(&message);
            }
        }
    }

    /// ENTER / UPDATE / LEAVE for a change from `old` to `new` (None = absent/tombstone/expired).
    fn evaluate(
        &self,
        key: &str,
        old: Option<&rmpv::Value>,
        new: Option<&rmpv::Value>,
    ) -> Option<Message> {
        let was = old.is_some_and(|v| self.plan.matches(v));
        let is = new.is_some_and(|v| self.plan.matches(v));
        let (change_type, value) = match (was, is, new) {
            (false, true, Some(v)) => (ChangeType::Enter, project(self.fields.as_deref(), v)),
            (true, true, Some(v)) => (ChangeType::Update, project(self.fields.as_deref(), v)),
            (true, false, _) => (ChangeType::Leave, rmpv::Value::Nil),
            _ => return None,
        };
        Some(Message::QueryUpdate {
            payload: QueryUpdatePayload {
                query_id: self.query_id.clone(),
                key: key.to_string(),
                value,
                change_type,
            },
        })
    }
}

/// All live query subscriptions of this gateway, indexed by map and by connection.
#[derive(Debug, Default)]
pub struct QueryRegistry {
    by_map: RwLock<HashMap<String, Vec<Arc<QuerySub>>>>,
}

impl QueryRegistry {
    /// Adds a subscription, replacing one with the same id on the same connection.
    pub fn insert(&self, sub: Arc<QuerySub>) {
        self.remove(sub.conn.id, &sub.query_id);
        self.by_map
            .write()
            .entry(sub.map_name.clone())
            .or_default()
            .push(sub);
    }

    /// Drops one subscription; unknown ids are ignored.
    pub fn remove(&self, conn_id: u64, query_id: &str) {
        let mut by_map = self.by_map.write();
        by_map.retain(|_, subs| {
            subs.retain(|s| !(s.conn.id == conn_id && s.query_id == query_id));
            !subs.is_empty()
        });
    }

    /// Drops every subscription of a closed connection.
    pub fn remove_connection(&self, conn_id: u64) {
        let mut by_map = self.by_map.write();
        by_map.retain(|_, subs| {
            subs.retain(|s| s.conn.id != conn_id);
            !subs.is_empty()
        });
    }

    /// Connections holding at least one subscription on `map_name`.
    pub fn subscribers(&self, map_name: &str) -> Vec<Arc<ConnHandle>> {
        let by_map = self.by_map.read();
        let mut seen = HashSet::new();
        by_map
            .get(map_name)
            .into_iter()
            .flatten()
            .filter(|s| seen.insert(s.conn.id))
            .map(|s| s.conn.clone())
            .collect()
    }

    /// Whether any subscription watches `map_name`.
    pub fn has_map(&self, map_name: &str) -> bool {
        self.by_map.read().contains_key(map_name)
    }

    /// Evaluates an LWW change for every subscription on the map except the writer's.
    pub fn on_lww_change(
        &self,
        map_name: &str,
        key: &str,
        previous: Option<&LwwRecord>,
        record: &LwwRecord,
        writer_conn: Option<u64>,
    ) {
        let subs: Vec<Arc<QuerySub>> = match self.by_map.read().get(map_name) {
            Some(subs) => subs.clone(),
            None => return,
        };
        let now = wall_clock_ms();
        fn visible(r: &LwwRecord, now: u64) -> Option<&rmpv::Value> {
            (!r.is_tombstone() && !r.is_expired(now)).then_some(&r.value)
        }
        let old = previous.and_then(|r| visible(r, now));
        let new = visible(record, now);
        for sub in subs.iter().filter(|s| Some(s.conn.id) != writer_conn) {
            if let Some(message) = sub.evaluate(key, old, new) {
                sub.deliver(message);
            }
        }
    }
}
