//! The change feed: every state change of the shard, numbered with contiguous
//! sequence numbers within an epoch (one random id per process start), kept in a
//! bounded ring so a subscriber can resume after a reconnect without missing or
//! repeating an event.
//!
//! Writers only append to the ring and bump a watch value; they never wait for a
//! subscriber. Each subscriber stream pulls from the ring at its own pace (HTTP/2 flow
//! control is its bounded buffer); one that falls out of the ring gets OUT_OF_RANGE
//! and must rescan, which is the price of never blocking writers.
//!
//! Each event also carries the shard clock's millis when it was applied, so the ring
//! can tell which keys changed since a server time (the delta pushed to a reconnecting
//! client, core.md §6.4) as long as it still holds every change since then.

use crate::error::SyncError;
use crate::requests::Origin;
use crate::shutdown::stopped;
use crate::state::{Change, ChangeKind};
use futures::Stream;
use parking_lot::Mutex;
use prost::Message as _;
use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::watch;
use tonic::Status;
use topgun_proto::grpc::sync as pb;
use topgun_proto::hlc::wall_clock_ms;

/// Most events examined per read, so a catching-up subscriber holds the ring lock
/// only briefly and sends moderately sized batches.
const MAX_EVENTS_PER_BATCH: usize = 512;
/// Encoded bytes of events per batch (a batch always holds at least one event), so
/// batches of large records stay far below the gRPC message cap.
const MAX_BYTES_PER_BATCH: usize = 4 * 1024 * 1024;

/// The shard's change feed.
#[derive(Debug)]
pub struct ChangeFeed {
    epoch: String,
    capacity: usize,
    ring: Mutex<Ring>,
    last_seq: watch::Sender<u64>,
    /// Open subscription streams (for the ops metrics).
    subscribers: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct Ring {
    events: VecDeque<Arc<pb::ChangeEvent>>,
    /// Shard clock millis each event of `events` was applied at (non-decreasing).
    stamps: VecDeque<u64>,
    /// Encoded size of each event of `events`.
    sizes: VecDeque<usize>,
    /// Every change stamped after this is in the ring: the stamp of the newest evicted
    /// event, the start of the feed, or the last time state changed outside it.
    complete_after: u64,
    /// Sequence number the next event gets; sequences start at 1 (0 = "from now on").
    next_seq: u64,
}

impl Ring {
    fn first_seq(&self) -> u64 {
        self.next_seq - self.events.len() as u64
    }
}

/// Where a subscription starts.
#[derive(Debug, Clone, Default)]
pub struct SubscribeFrom {
    /// Only these maps (empty = all).
    pub map_names: Vec<String>,
    /// First sequence wanted; 0 = from now on.
    pub from_seq: u64,
    /// Epoch `from_seq` belongs to.
    pub epoch: String,
}

impl ChangeFeed {
    /// A feed keeping the last `capacity` events, with a fresh random epoch.
    pub fn new(capacity: usize) -> Self {
        let (last_seq, _) = watch::channel(0);
        ChangeFeed {
            epoch: uuid::Uuid::new_v4().to_string(),
            capacity: capacity.max(1),
            ring: Mutex::new(Ring {
                events: VecDeque::new(),
                stamps: VecDeque::new(),
                sizes: VecDeque::new(),
                complete_after: wall_clock_ms(),
                next_seq: 1,
            }),
            last_seq,
            subscribers: Arc::default(),
        }
    }

    /// Subscription streams currently open.
    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// This run's epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Sequence number of the newest event (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.ring.lock().next_seq - 1
    }

    /// Appends the changes as events applied at shard clock millis `stamp`. Callers
    /// hold the shard's state and clock locks, so sequence order is merge order for
    /// every key and stamps never go down.
    pub fn publish(&self, changes: Vec<Change>, origin: &Origin, stamp: u64) {
        if changes.is_empty() {
            return;
        }
        let origin = origin.to_proto();
        // Sized before the lock; `seq` adds at most a tag and a 10-byte varint.
        let events: Vec<(pb::ChangeEvent, usize)> = changes
            .into_iter()
            .map(|c| {
                let event = to_event(c, &origin);
                let size = event.encoded_len() + 11;
                (event, size)
            })
            .collect();
        let last = {
            let mut ring = self.ring.lock();
            for (mut event, size) in events {
                event.seq = ring.next_seq;
                ring.next_seq += 1;
                ring.sizes.push_back(size);
                ring.events.push_back(Arc::new(event));
                ring.stamps.push_back(stamp);
                if ring.events.len() > self.capacity {
                    ring.events.pop_front();
                    ring.sizes.pop_front();
                    if let Some(evicted) = ring.stamps.pop_front() {
                        ring.complete_after = ring.complete_after.max(evicted);
                    }
                }
            }
            ring.next_seq - 1
        };
        self.last_seq.send_replace(last);
    }

    /// Records that state changed at shard clock millis `stamp` without events (rows
    /// loaded from storage): the feed cannot say what changed up to then.
    pub fn mark_gap(&self, stamp: u64) {
        let mut ring = self.ring.lock();
        ring.complete_after = ring.complete_after.max(stamp);
    }

    /// Keys of LWW map `map_name` changed at or after shard clock millis `since`, in key
    /// order; `None` when the ring may miss some of them (`since` is not after what it
    /// covers) or when more than `limit` keys changed.
    pub fn lww_keys_changed_since(
        &self,
        map_name: &str,
        since: u64,
        limit: usize,
    ) -> Option<BTreeSet<String>> {
        // Only the range is copied under the lock (reference counts), so writers wait
        // for a memcpy-sized moment, not for the filtering.
        let events: Vec<Arc<pb::ChangeEvent>> = {
            let ring = self.ring.lock();
            if since <= ring.complete_after {
                return None;
            }
            let start = ring.stamps.partition_point(|&stamp| stamp < since);
            ring.events.range(start..).cloned().collect()
        };
        let mut keys = BTreeSet::new();
        for event in &events {
            let lww = event.event_type == pb::EventType::Put as i32
                || event.event_type == pb::EventType::Remove as i32;
            if lww && event.map_name == map_name && !keys.contains(&event.key) {
                if keys.len() == limit {
                    return None;
                }
                keys.insert(event.key.clone());
            }
        }
        Some(keys)
    }

    /// Opens a subscription, checking the resume position first: an epoch mismatch, a
    /// position older than the ring or one ahead of the feed fails with OUT_OF_RANGE.
    /// The stream starts with an empty batch carrying the epoch, ends with UNAVAILABLE
    /// when `shutdown` turns true, and with OUT_OF_RANGE if the subscriber falls behind.
    pub fn subscribe(
        self: &Arc<Self>,
        from: SubscribeFrom,
        shutdown: watch::Receiver<bool>,
    ) -> Result<impl Stream<Item = Result<pb::ChangeBatch, Status>> + Send + 'static, SyncError>
    {
        let cursor = {
            let ring = self.ring.lock();
            if from.from_seq == 0 {
                ring.next_seq
            } else if from.epoch != self.epoch {
                return Err(SyncError::OutOfRange(format!(
                    "change feed epoch {:?} is not the current epoch {:?}; rescan and resubscribe",
                    from.epoch, self.epoch
                )));
            } else if from.from_seq < ring.first_seq() {
                return Err(behind(from.from_seq, ring.first_seq()));
            } else if from.from_seq > ring.next_seq {
                return Err(SyncError::OutOfRange(format!(
                    "change feed position {} is ahead of the feed (next is {})",
                    from.from_seq, ring.next_seq
                )));
            } else {
                from.from_seq
            }
        };
        let filter: HashSet<String> = from.map_names.into_iter().collect();
        let state = Subscription {
            feed: Arc::clone(self),
            cursor,
            filter,
            wake: self.last_seq.subscribe(),
            shutdown,
            greeted: false,
            done: false,
            _counted: SubscriberCount::enter(&self.subscribers),
        };
        Ok(futures::stream::unfold(state, Subscription::next))
    }

    /// Events from `cursor` on (at most [`MAX_EVENTS_PER_BATCH`] examined, and no more
    /// than [`MAX_BYTES_PER_BATCH`] of them kept unless it is the first), the ones
    /// passing `filter`, and the cursor after them.
    fn read_from(
        &self,
        cursor: u64,
        filter: &HashSet<String>,
    ) -> Result<(Vec<pb::ChangeEvent>, u64), SyncError> {
        let ring = self.ring.lock();
        let first = ring.first_seq();
        if cursor < first {
            return Err(behind(cursor, first));
        }
        let start = (cursor - first) as usize;
        let end = ring.events.len().min(start + MAX_EVENTS_PER_BATCH);
        let mut events = Vec::new();
        let mut bytes = 0;
        let mut next = start;
        while next < end {
            let event = &ring.events[next];
            if filter.is_empty() || filter.contains(&event.map_name) {
                let size = ring.sizes[next];
                if !events.is_empty() && bytes + size > MAX_BYTES_PER_BATCH {
                    break;
                }
                bytes += size;
                events.push((**event).clone());
            }
            next += 1;
        }
        Ok((events, first + next as u64))
    }
}

fn behind(position: u64, oldest: u64) -> SyncError {
    SyncError::OutOfRange(format!(
        "change feed position {position} is no longer buffered (oldest is {oldest}); rescan and resubscribe"
    ))
}

struct Subscription {
    feed: Arc<ChangeFeed>,
    cursor: u64,
    filter: HashSet<String>,
    wake: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    greeted: bool,
    done: bool,
    _counted: SubscriberCount,
}

/// Counts a subscription as open for as long as its stream exists, however it ends
/// (finished, failed, or dropped by a departing client).
struct SubscriberCount(Arc<AtomicUsize>);

impl SubscriberCount {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        SubscriberCount(Arc::clone(count))
    }
}

impl Drop for SubscriberCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Subscription {
    async fn next(mut self) -> Option<(Result<pb::ChangeBatch, Status>, Self)> {
        if self.done {
            return None;
        }
        if !self.greeted {
            // The first batch tells a subscriber starting "from now on" its epoch.
            self.greeted = true;
            let batch = pb::ChangeBatch {
                epoch: self.feed.epoch.clone(),
                events: Vec::new(),
            };
            return Some((Ok(batch), self));
        }
        loop {
            // Mark the current value seen before reading, so a publish racing with the
            // read still wakes the wait below.
            self.wake.borrow_and_update();
            match self.feed.read_from(self.cursor, &self.filter) {
                Err(err) => {
                    self.done = true;
                    tracing::warn!(
                        cursor = self.cursor,
                        "change feed subscriber fell behind the ring"
                    );
                    return Some((Err(err.into()), self));
                }
                Ok((events, cursor)) => {
                    let advanced = cursor != self.cursor;
                    self.cursor = cursor;
                    if !events.is_empty() {
                        let batch = pb::ChangeBatch {
                            epoch: self.feed.epoch.clone(),
                            events,
                        };
                        return Some((Ok(batch), self));
                    }
                    if advanced {
                        // Everything examined was filtered out; there may be more.
                        continue;
                    }
                }
            }
            let woke = tokio::select! {
                changed = self.wake.changed() => changed.is_ok(),
                () = stopped(&mut self.shutdown) => false,
            };
            if !woke {
                // Shutdown, or the feed itself is gone.
                self.done = true;
                return Some((Err(SyncError::ShuttingDown.into()), self));
            }
        }
    }
}

fn to_event(change: Change, origin: &topgun_proto::grpc::common::Origin) -> pb::ChangeEvent {
    let mut event = pb::ChangeEvent {
        seq: 0,
        partition: change.key.partition(),
        map_name: change.map_name,
        key: change.key.key,
        origin: Some(origin.clone()),
        ..Default::default()
    };
    match change.kind {
        ChangeKind::Lww { record, previous } => {
            event.event_type = if record.is_tombstone() {
                pb::EventType::Remove as i32
            } else {
                pb::EventType::Put as i32
            };
            event.record = Some((&record).into());
            event.previous = previous.as_ref().map(Into::into);
        }
        ChangeKind::OrAdd(record) => {
            event.event_type = pb::EventType::OrAdd as i32;
            event.or_tag = record.tag.clone();
            event.or_record = Some((&record).into());
        }
        ChangeKind::OrRemove(tag) => {
            event.event_type = pb::EventType::OrRemove as i32;
            event.or_tag = tag;
        }
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requests::HashedKey;
    use futures::StreamExt;
    use rmpv::Value;
    use topgun_proto::hlc::Timestamp;
    use topgun_proto::wire::LwwRecord;

    fn change(map: &str, key: &str) -> Change {
        Change {
            map_name: map.into(),
            key: HashedKey::new(key),
            kind: ChangeKind::Lww {
                record: LwwRecord {
                    value: Value::from(1),
                    timestamp: Timestamp::new(1, 0, "n"),
                    ttl_ms: None,
                },
                previous: None,
            },
        }
    }

    fn from(feed: &ChangeFeed, seq: u64) -> SubscribeFrom {
        SubscribeFrom {
            map_names: vec![],
            from_seq: seq,
            epoch: feed.epoch().to_string(),
        }
    }

    #[tokio::test]
    async fn resumes_from_a_sequence_and_filters_maps() {
        let feed = Arc::new(ChangeFeed::new(100));
        let (_stop, shutdown) = watch::channel(false);
        feed.publish(
            vec![change("a", "1"), change("b", "2"), change("a", "3")],
            &Origin::default(),
            0,
        );
        assert_eq!(feed.last_seq(), 3);
        let stream = feed
            .subscribe(from(&feed, 2), shutdown.clone())
            .expect("in range");
        let mut stream = Box::pin(stream);
        let hello = stream.next().await.expect("greeting").expect("ok");
        assert!(hello.events.is_empty());
        assert_eq!(hello.epoch, feed.epoch());
        let batch = stream.next().await.expect("batch").expect("ok");
        assert_eq!(
            batch.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![2, 3]
        );

        let only_a = SubscribeFrom {
            map_names: vec!["a".into()],
            ..from(&feed, 1)
        };
        let mut stream = Box::pin(feed.subscribe(only_a, shutdown).expect("in range"));
        assert_eq!(feed.subscribers(), 2);
        stream.next().await;
        let batch = stream.next().await.expect("batch").expect("ok");
        assert_eq!(
            batch
                .events
                .iter()
                .map(|e| e.key.as_str())
                .collect::<Vec<_>>(),
            vec!["1", "3"]
        );
        // Live events arrive after the backlog.
        feed.publish(
            vec![change("b", "x"), change("a", "4")],
            &Origin::default(),
            0,
        );
        let batch = stream.next().await.expect("batch").expect("ok");
        assert_eq!(
            batch.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![5]
        );
        drop(stream);
        assert_eq!(
            feed.subscribers(),
            1,
            "a dropped stream is no longer counted"
        );
    }

    #[tokio::test]
    async fn stale_positions_and_foreign_epochs_are_out_of_range() {
        let feed = Arc::new(ChangeFeed::new(2));
        let (stop, shutdown) = watch::channel(false);
        feed.publish(
            (0..5).map(|i| change("a", &i.to_string())).collect(),
            &Origin::default(),
            0,
        );
        let err = feed
            .subscribe(from(&feed, 3), shutdown.clone())
            .err()
            .expect("evicted");
        assert_eq!(err.code(), tonic::Code::OutOfRange);
        assert!(feed.subscribe(from(&feed, 4), shutdown.clone()).is_ok());
        let err = feed
            .subscribe(from(&feed, 7), shutdown.clone())
            .err()
            .expect("future");
        assert_eq!(err.code(), tonic::Code::OutOfRange);
        let foreign = SubscribeFrom {
            epoch: "other".into(),
            ..from(&feed, 4)
        };
        assert!(feed.subscribe(foreign, shutdown.clone()).is_err());

        // A subscriber that falls out of the ring is told so instead of slowing writers.
        let mut slow = Box::pin(
            feed.subscribe(from(&feed, 4), shutdown.clone())
                .expect("ok"),
        );
        slow.next().await;
        feed.publish(
            (0..5).map(|i| change("a", &i.to_string())).collect(),
            &Origin::default(),
            0,
        );
        let status = slow.next().await.expect("item").expect_err("fell behind");
        assert_eq!(status.code(), tonic::Code::OutOfRange);
        assert!(slow.next().await.is_none());
        assert_eq!(
            feed.subscribers(),
            0,
            "a finished stream is no longer counted"
        );

        // Shutdown ends idle streams.
        let mut idle = Box::pin(feed.subscribe(from(&feed, 0), shutdown).expect("ok"));
        idle.next().await;
        stop.send_replace(true);
        let status = idle.next().await.expect("item").expect_err("shutdown");
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }

    fn or_change(map: &str, key: &str) -> Change {
        Change {
            map_name: map.into(),
            key: HashedKey::new(key),
            kind: ChangeKind::OrRemove("tag".into()),
        }
    }

    #[test]
    fn keys_changed_since_a_stamp_are_the_lww_keys_of_that_map_at_or_after_it() {
        let feed = ChangeFeed::new(100);
        let t = wall_clock_ms() + 1_000;
        let origin = Origin::default();
        feed.publish(vec![change("a", "old")], &origin, t);
        feed.publish(
            vec![change("a", "k2"), change("b", "other")],
            &origin,
            t + 5,
        );
        feed.publish(vec![change("a", "k1"), change("a", "k2")], &origin, t + 9);
        feed.publish(vec![or_change("a", "or-key")], &origin, t + 9);
        let keys = feed
            .lww_keys_changed_since("a", t + 5, 10)
            .expect("covered");
        assert_eq!(keys.into_iter().collect::<Vec<_>>(), vec!["k1", "k2"]);
        assert_eq!(
            feed.lww_keys_changed_since("a", t + 10, 10)
                .map(|k| k.len()),
            Some(0),
            "nothing changed since"
        );
        assert_eq!(
            feed.lww_keys_changed_since("a", t + 5, 1),
            None,
            "two keys are over a limit of one"
        );
    }

    #[test]
    fn keys_changed_since_are_unknown_before_the_feed_started_or_its_oldest_event() {
        let feed = ChangeFeed::new(2);
        let t = wall_clock_ms() + 1_000;
        assert_eq!(feed.lww_keys_changed_since("a", t - 2_000, 10), None);
        let origin = Origin::default();
        for (i, key) in ["1", "2", "3"].iter().enumerate() {
            feed.publish(vec![change("a", key)], &origin, t + i as u64);
        }
        // "1" (at t) was evicted: from t on the ring may miss changes, after t it does not.
        assert_eq!(feed.lww_keys_changed_since("a", t, 10), None);
        let keys = feed
            .lww_keys_changed_since("a", t + 1, 10)
            .expect("covered");
        assert_eq!(keys.into_iter().collect::<Vec<_>>(), vec!["2", "3"]);
    }

    #[test]
    fn a_gap_hides_everything_up_to_it() {
        let feed = ChangeFeed::new(100);
        let t = wall_clock_ms() + 1_000;
        feed.publish(vec![change("a", "1")], &Origin::default(), t);
        feed.mark_gap(t + 3);
        assert_eq!(feed.lww_keys_changed_since("a", t + 3, 10), None);
        assert_eq!(
            feed.lww_keys_changed_since("a", t + 4, 10).map(|k| k.len()),
            Some(0)
        );
    }

    #[tokio::test]
    async fn batches_of_large_events_stay_under_the_byte_budget() {
        let feed = Arc::new(ChangeFeed::new(100));
        let (_stop, shutdown) = watch::channel(false);
        let big = |key: &str| {
            let mut c = change("a", key);
            if let ChangeKind::Lww { record, .. } = &mut c.kind {
                record.value = Value::from("x".repeat(MAX_BYTES_PER_BATCH / 2 + 1));
            }
            c
        };
        feed.publish(
            vec![big("1"), big("2"), big("3"), change("a", "small")],
            &Origin::default(),
            0,
        );
        let mut stream = Box::pin(feed.subscribe(from(&feed, 1), shutdown).expect("in range"));
        stream.next().await;
        let mut sizes = Vec::new();
        let mut seqs = Vec::new();
        while seqs.len() < 4 {
            let batch = stream.next().await.expect("batch").expect("ok");
            sizes.push(batch.events.iter().map(|e| e.encoded_len()).sum::<usize>());
            seqs.extend(batch.events.iter().map(|e| e.seq));
        }
        assert_eq!(seqs, vec![1, 2, 3, 4], "nothing skipped or repeated");
        assert!(sizes.len() >= 3, "one large event per batch: {sizes:?}");
        assert!(
            sizes.iter().all(|&b| b <= MAX_BYTES_PER_BATCH + 1_000),
            "{sizes:?}"
        );
    }
}
