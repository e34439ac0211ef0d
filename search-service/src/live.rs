//! Live search (queries-search-messaging.md §2.5): per-subscription result sets, the
//! ENTER / UPDATE / LEAVE decision, and the stream a subscriber reads.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use futures::Stream;
use parking_lot::Mutex;
use tantivy::query::Query;
use tokio::sync::mpsc;
use tonic::Status;
use topgun_proto::grpc::search::{search_event, ChangeType, SearchChange, SearchEvent};

/// Items of a live-search stream.
pub type LiveItem = Result<SearchEvent, Status>;

/// How one write changed one document's membership in one live search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LiveChange {
    /// The document now matches and was not in the result set.
    Enter(f32),
    /// The document still matches (sent on every write, even with an unchanged score).
    Update(f32),
    /// The document was in the result set and no longer matches, or was removed.
    Leave,
}

/// The §2.5 decision for one key and one subscription: `cached` says whether the key is
/// in the subscription's result set, `score` is its score against the subscription
/// query (`None` when it does not match or was removed). `None` = nothing to send.
pub fn classify(cached: bool, score: Option<f32>, min_score: f64) -> Option<LiveChange> {
    match score {
        Some(score) if f64::from(score) >= min_score => Some(if cached {
            LiveChange::Update(score)
        } else {
            LiveChange::Enter(score)
        }),
        _ if cached => Some(LiveChange::Leave),
        _ => None,
    }
}

impl LiveChange {
    /// The gRPC event for this change of `key`: ENTER / UPDATE carry the current value
    /// and the query terms, LEAVE carries nil, score 0 and no terms.
    pub fn to_event(self, key: &str, value: Option<&[u8]>, terms: &[String]) -> SearchEvent {
        let (change_type, score) = match self {
            LiveChange::Enter(score) => (ChangeType::Enter, f64::from(score)),
            LiveChange::Update(score) => (ChangeType::Update, f64::from(score)),
            LiveChange::Leave => (ChangeType::Leave, 0.0),
        };
        let leave = matches!(self, LiveChange::Leave);
        SearchEvent {
            kind: Some(search_event::Kind::Change(SearchChange {
                key: key.to_string(),
                value: match value {
                    Some(bytes) if !leave => bytes.to_vec(),
                    _ => crate::NIL_MSGPACK.to_vec(),
                },
                score,
                matched_terms: if leave { Vec::new() } else { terms.to_vec() },
                change_type: change_type as i32,
            })),
        }
    }
}

/// What happened to an event offered to a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Queued.
    Sent,
    /// The subscriber went away.
    Closed,
    /// The subscriber's queue is full: it cannot keep up.
    Overflow,
}

/// The status a stream ends with once the server has dropped its subscription.
#[derive(Debug, Default)]
struct Terminal(Mutex<Option<Status>>);

/// One live search held by the indexer.
pub(crate) struct Subscription {
    id: u64,
    /// `None` when the query did not parse: the subscription never matches anything.
    pub query: Option<Box<dyn Query>>,
    pub terms: Vec<String>,
    pub min_score: f64,
    /// Keys currently in the result set.
    pub cache: HashSet<String>,
    tx: mpsc::Sender<LiveItem>,
    terminal: Arc<Terminal>,
}

impl Subscription {
    /// Offers `event` without waiting: the indexer never blocks on a subscriber.
    pub fn offer(&self, event: SearchEvent) -> Delivery {
        match self.tx.try_send(Ok(event)) {
            Ok(()) => Delivery::Sent,
            Err(mpsc::error::TrySendError::Full(_)) => Delivery::Overflow,
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Closed,
        }
    }

    /// Records the status the subscriber sees after the events already queued; takes
    /// effect when the subscription (and with it the sender) is dropped.
    pub fn end_with(&self, status: Status) {
        *self.terminal.0.lock() = Some(status);
    }
}

/// The subscriptions of one map.
#[derive(Default)]
pub(crate) struct LiveRegistry {
    next_id: u64,
    subs: Vec<Subscription>,
    /// Subscriptions being set up (see [`Joining`]).
    joining: usize,
}

impl LiveRegistry {
    /// Mutable access to every subscription, for the indexer's per-commit pass.
    pub fn subs_mut(&mut self) -> &mut Vec<Subscription> {
        &mut self.subs
    }

    /// True when nobody watches this map.
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// Number of subscriptions.
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    /// True when the map has a subscription or one is being set up: the indexer then
    /// indexes its writes as they come instead of buffering them.
    pub fn is_watched(&self) -> bool {
        !self.subs.is_empty() || self.joining > 0
    }
}

/// Marks a map as watched while a subscription to it is being set up, from before the
/// indexer is asked to flush the map's buffered writes until the subscription is
/// registered: no write can slip into the buffer in between, where neither the initial
/// results nor the live events would cover it. Dropping it ends the mark.
pub(crate) struct Joining {
    registry: Arc<Mutex<LiveRegistry>>,
}

impl Joining {
    /// Marks the map of `registry` as watched.
    pub fn start(registry: &Arc<Mutex<LiveRegistry>>) -> Self {
        registry.lock().joining += 1;
        Joining {
            registry: registry.clone(),
        }
    }
}

impl Drop for Joining {
    fn drop(&mut self) {
        let mut registry = self.registry.lock();
        debug_assert!(registry.joining > 0, "unbalanced joining count");
        registry.joining = registry.joining.saturating_sub(1);
    }
}

/// Parameters of a new subscription.
pub(crate) struct NewSubscription {
    pub query: Option<Box<dyn Query>>,
    pub terms: Vec<String>,
    pub min_score: f64,
    pub cache: HashSet<String>,
    pub initial: SearchEvent,
    pub buffer: usize,
}

/// Adds a subscription to `registry` (which the caller has locked, so no commit can
/// slip between the initial snapshot and the registration) and returns its stream,
/// whose first item is `initial`.
pub(crate) fn register(
    registry_handle: &Arc<Mutex<LiveRegistry>>,
    registry: &mut LiveRegistry,
    new: NewSubscription,
) -> LiveSearch {
    let (tx, rx) = mpsc::channel(new.buffer.max(1));
    // The channel is new and has room for at least one item.
    let _ = tx.try_send(Ok(new.initial));
    let terminal = Arc::new(Terminal::default());
    let id = registry.next_id;
    registry.next_id += 1;
    registry.subs.push(Subscription {
        id,
        query: new.query,
        terms: new.terms,
        min_score: new.min_score,
        cache: new.cache,
        tx,
        terminal: terminal.clone(),
    });
    LiveSearch {
        rx,
        terminal,
        registration: Some((Arc::downgrade(registry_handle), id)),
        done: false,
    }
}

/// A live search as a stream: the initial results, then changes. Dropping it (the
/// client went away) unregisters the subscription at once.
pub struct LiveSearch {
    rx: mpsc::Receiver<LiveItem>,
    terminal: Arc<Terminal>,
    registration: Option<(Weak<Mutex<LiveRegistry>>, u64)>,
    done: bool,
}

impl std::fmt::Debug for LiveSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSearch")
            .field("done", &self.done)
            .finish()
    }
}

impl LiveSearch {
    /// A stream that yields only `initial` and then ends: the live search of a map that
    /// is not indexed.
    pub(crate) fn finished(initial: SearchEvent) -> Self {
        let (tx, rx) = mpsc::channel(1);
        let _ = tx.try_send(Ok(initial));
        LiveSearch {
            rx,
            terminal: Arc::default(),
            registration: None,
            done: false,
        }
    }
}

impl Stream for LiveSearch {
    type Item = LiveItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<LiveItem>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(item)) => Poll::Ready(Some(item)),
            Poll::Ready(None) => {
                // The sender is gone: queued events were delivered first, now the
                // reason (if the server ended the subscription) and the end.
                self.done = true;
                Poll::Ready(self.terminal.0.lock().take().map(Err))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for LiveSearch {
    fn drop(&mut self) {
        if let Some((registry, id)) = self.registration.take() {
            if let Some(registry) = registry.upgrade() {
                registry.lock().subs.retain(|sub| sub.id != id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use topgun_proto::grpc::search::SearchResponse;

    #[test]
    fn classify_follows_the_live_search_algorithm() {
        // Not in the result set.
        assert_eq!(
            classify(false, Some(1.5), 0.0),
            Some(LiveChange::Enter(1.5))
        );
        assert_eq!(classify(false, None, 0.0), None);
        assert_eq!(
            classify(false, Some(0.4), 0.5),
            None,
            "below minScore never enters"
        );
        // In the result set.
        assert_eq!(
            classify(true, Some(2.0), 0.0),
            Some(LiveChange::Update(2.0))
        );
        assert_eq!(classify(true, None, 0.0), Some(LiveChange::Leave));
        assert_eq!(classify(true, Some(0.4), 0.5), Some(LiveChange::Leave));
        // minScore is inclusive.
        assert_eq!(
            classify(false, Some(0.5), 0.5),
            Some(LiveChange::Enter(0.5))
        );
    }

    #[test]
    fn leave_events_carry_nil_zero_and_no_terms() {
        let terms = vec!["wireless".to_string()];
        let leave = LiveChange::Leave.to_event("p-1", Some(b"\xa1x"), &terms);
        let Some(search_event::Kind::Change(change)) = leave.kind else {
            panic!("a change event");
        };
        assert_eq!(change.change_type, ChangeType::Leave as i32);
        assert_eq!(change.value, crate::NIL_MSGPACK);
        assert_eq!(change.score, 0.0);
        assert!(change.matched_terms.is_empty());

        let enter = LiveChange::Enter(1.25).to_event("p-1", Some(b"\xa1x"), &terms);
        let Some(search_event::Kind::Change(change)) = enter.kind else {
            panic!("a change event");
        };
        assert_eq!(change.change_type, ChangeType::Enter as i32);
        assert_eq!(change.value, b"\xa1x");
        assert_eq!(change.score, 1.25);
        assert_eq!(change.matched_terms, terms);
    }

    fn initial() -> SearchEvent {
        SearchEvent {
            kind: Some(search_event::Kind::Initial(SearchResponse {
                hits: Vec::new(),
            })),
        }
    }

    #[tokio::test]
    async fn a_slow_subscriber_gets_its_queued_events_then_a_status() {
        let handle = Arc::new(Mutex::new(LiveRegistry::default()));
        let mut stream = {
            let mut registry = handle.lock();
            register(
                &handle,
                &mut registry,
                NewSubscription {
                    query: None,
                    terms: Vec::new(),
                    min_score: 0.0,
                    cache: HashSet::new(),
                    initial: initial(),
                    buffer: 2,
                },
            )
        };
        {
            let mut registry = handle.lock();
            let sub = &registry.subs_mut()[0];
            let event = LiveChange::Leave.to_event("k", None, &[]);
            assert_eq!(sub.offer(event.clone()), Delivery::Sent);
            assert_eq!(sub.offer(event), Delivery::Overflow);
            sub.end_with(Status::resource_exhausted("too slow"));
            registry.subs_mut().clear();
        }
        assert!(matches!(stream.next().await, Some(Ok(_))), "initial");
        assert!(matches!(stream.next().await, Some(Ok(_))), "queued change");
        let status = stream.next().await.and_then(Result::err).expect("a status");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(stream.next().await.is_none());
    }

    #[test]
    fn a_joining_subscription_marks_the_map_watched() {
        let handle = Arc::new(Mutex::new(LiveRegistry::default()));
        assert!(!handle.lock().is_watched());
        let joining = Joining::start(&handle);
        assert!(handle.lock().is_watched());
        assert!(handle.lock().is_empty(), "not a subscription yet");
        drop(joining);
        assert!(!handle.lock().is_watched());
    }

    #[tokio::test]
    async fn dropping_the_stream_unregisters() {
        let handle = Arc::new(Mutex::new(LiveRegistry::default()));
        let stream = {
            let mut registry = handle.lock();
            register(
                &handle,
                &mut registry,
                NewSubscription {
                    query: None,
                    terms: Vec::new(),
                    min_score: 0.0,
                    cache: HashSet::new(),
                    initial: initial(),
                    buffer: 4,
                },
            )
        };
        assert_eq!(handle.lock().len(), 1);
        drop(stream);
        assert!(handle.lock().is_empty());
    }
}
