//! Ingestion: keeps the indexes in step with the sync shards, one follower task per
//! shard address, and reports how far each shard has been indexed. The set of shards is
//! `SYNC_ADDRS`, or, for an embedding process whose cluster changes, whatever set it
//! last sent ([`Ingestor::set_addrs`], [`Ingestor::follow_updates`]).

mod client;
mod convert;
mod shard;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use topgun_proto::grpc::sync::ShardInfoRequest;

use crate::config::normalize_addrs;
use crate::engine::SearchEngine;
use crate::error::SearchError;
use client::{call, request, SyncClient};

pub use client::CALL_TIMEOUT;

/// How far one shard has been indexed.
#[derive(Debug)]
pub struct ShardProgress {
    /// The shard's address as configured.
    pub addr: String,
    /// Last feed sequence whose effects are committed (searchable).
    pub committed_seq: Arc<AtomicU64>,
    /// Highest sequence seen from the shard.
    pub head_seq: AtomicU64,
    /// The epoch `committed_seq` belongs to.
    pub epoch: Mutex<String>,
    /// The first scan is committed.
    pub ready: AtomicBool,
    /// The last call to the shard succeeded.
    pub connected: AtomicBool,
    /// Completed scans.
    pub scans: AtomicU64,
    /// The ingestion's change signal, poked when `ready` turns true.
    ready_tx: watch::Sender<()>,
}

/// Indexing position and lag of one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardLag {
    /// The shard's address.
    pub shard: String,
    /// Last sequence indexed.
    pub last_seq: u64,
    /// Events the shard has that are not indexed yet.
    pub lag_events: u64,
}

/// How long removing a follower waits for its task to end before aborting it. Its
/// task ends at its next poll, so this only bounds a bug.
const FOLLOWER_STOP_WAIT: Duration = Duration::from_secs(5);

/// The running ingestion: one follower per shard address.
#[derive(Debug, Clone)]
pub struct Ingestor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    engine: SearchEngine,
    token: Option<String>,
    stop: watch::Receiver<bool>,
    /// Poked when a follower finishes its first scan or the set of followers changes,
    /// so [`Ingestor::wait_ready`] checks again.
    changes: watch::Sender<()>,
    followers: Mutex<Followers>,
}

#[derive(Debug, Default)]
struct Followers {
    /// The current followers, in the order of the last address list.
    list: Vec<Follower>,
    /// Shard index of the next follower. Never reused: documents carry the index of the
    /// follower that last wrote them, and a follower's end-of-scan sweep only removes
    /// its own, so a new follower (even of a returning address) never sweeps what a
    /// stopped one indexed.
    next_index: usize,
}

/// One shard being followed.
#[derive(Debug)]
struct Follower {
    progress: Arc<ShardProgress>,
    client: SyncClient,
    /// Sending (not dropping) tells the task to stop.
    remove: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Ingestor {
    /// Starts one follower per shard address (blank and repeated addresses skipped):
    /// each scans its shard, then tails its change feed. Followers run until `stop`
    /// turns true or their address is dropped by [`Ingestor::set_addrs`]. Fails only on
    /// an invalid address or token; unreachable shards are retried.
    pub fn start(
        engine: &SearchEngine,
        addrs: &[String],
        token: Option<&str>,
        stop: watch::Receiver<bool>,
    ) -> Result<Self, SearchError> {
        let addrs = normalize_addrs(addrs);
        // Every address is checked before any follower starts.
        let clients = addrs
            .iter()
            .map(|addr| client::connect(addr, token))
            .collect::<Result<Vec<_>, _>>()?;
        let (changes, _) = watch::channel(());
        let inner = Arc::new(Inner {
            engine: engine.clone(),
            token: token.map(str::to_string),
            stop,
            changes,
            followers: Mutex::default(),
        });
        {
            let mut followers = inner.followers.lock();
            for (addr, client) in addrs.into_iter().zip(clients) {
                let follower = inner.spawn(&mut followers.next_index, addr, client);
                followers.list.push(follower);
            }
        }
        Ok(Ingestor { inner })
    }

    /// Follows exactly `addrs` from now on (blank and repeated addresses skipped):
    /// starts a follower (scan, then tail) for each address not followed yet, keeps the
    /// followers of addresses still listed as they are, and stops the others, dropping
    /// their progress at once. Documents a stopped follower indexed stay: whichever
    /// shard owns their partitions now feeds their further changes, and documents are
    /// keyed by map and key. An address that is not a valid URL is skipped with a
    /// warning. Returns once the stopped followers' tasks have ended.
    pub async fn set_addrs(&self, addrs: &[String]) {
        let removed = {
            let mut guard = self.inner.followers.lock();
            let followers = &mut *guard;
            let mut previous: HashMap<String, Follower> = followers
                .list
                .drain(..)
                .map(|f| (f.progress.addr.clone(), f))
                .collect();
            for addr in normalize_addrs(addrs) {
                if let Some(follower) = previous.remove(&addr) {
                    followers.list.push(follower);
                    continue;
                }
                match client::connect(&addr, self.inner.token.as_deref()) {
                    Ok(client) => {
                        tracing::info!(addr = %addr, "following shard");
                        let follower = self.inner.spawn(&mut followers.next_index, addr, client);
                        followers.list.push(follower);
                    }
                    Err(error) => {
                        tracing::warn!(addr = %addr, %error, "invalid shard address skipped");
                    }
                }
            }
            // Told to stop right away; waited for below, outside the lock.
            previous
                .into_values()
                .filter_map(Follower::signal_stop)
                .collect::<Vec<_>>()
        };
        // The set changed: readiness may have changed with it.
        self.inner.changes.send_modify(|()| {});
        for (addr, task) in removed {
            stop_task(addr, task).await;
        }
    }

    /// Applies every address set sent on `updates` (see [`Ingestor::set_addrs`]) until
    /// `stop` turns true. Only values sent after the receiver was last marked seen
    /// count; when the sender goes away, the last set stays.
    pub fn follow_updates(&self, mut updates: watch::Receiver<Vec<String>>) {
        let ingestor = self.clone();
        let mut stop = self.inner.stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.wait_for(|stopped| *stopped) => return,
                    changed = updates.changed() => {
                        if changed.is_err() {
                            tracing::debug!("shard address updates ended, keeping the last set");
                            return;
                        }
                    }
                }
                // Cloned so the watch is not borrowed across the await.
                let addrs = updates.borrow_and_update().clone();
                ingestor.set_addrs(&addrs).await;
            }
        });
    }

    /// Progress of every current follower, in the order of the last address list.
    pub fn progress(&self) -> Vec<Arc<ShardProgress>> {
        self.inner
            .followers
            .lock()
            .list
            .iter()
            .map(|f| f.progress.clone())
            .collect()
    }

    /// True once every current follower's first scan is searchable.
    pub fn is_ready(&self) -> bool {
        self.inner
            .followers
            .lock()
            .list
            .iter()
            .all(|f| f.progress.ready.load(Ordering::Relaxed))
    }

    /// Completes once every current follower's first scan is searchable. A follower
    /// added meanwhile is waited for too; one removed meanwhile is not.
    pub async fn wait_ready(&self) {
        // Subscribed before checking, so a change between the check and the wait is
        // not missed.
        let mut changes = self.inner.changes.subscribe();
        while !self.is_ready() {
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// Indexed position and lag per current follower. Asks each shard for its head
    /// (short deadline, all shards at once); a shard that does not answer is reported
    /// against the last head seen.
    pub async fn lags(&self) -> Vec<ShardLag> {
        let followers: Vec<(Arc<ShardProgress>, SyncClient)> = self
            .inner
            .followers
            .lock()
            .list
            .iter()
            .map(|f| (f.progress.clone(), f.client.clone()))
            .collect();
        let asks = followers
            .into_iter()
            .map(|(progress, mut client)| async move {
                let committed = progress.committed_seq.load(Ordering::Relaxed);
                let mut head = progress.head_seq.load(Ordering::Relaxed);
                let mut ask = request(ShardInfoRequest {});
                ask.set_timeout(Duration::from_secs(1));
                let answer =
                    tokio::time::timeout(Duration::from_secs(1), call(client.shard_info(ask)))
                        .await;
                if let Ok(Ok(info)) = answer {
                    if info.epoch == *progress.epoch.lock() {
                        head = head.max(info.last_seq);
                    } else {
                        // A new epoch we have not rescanned yet: all of it is lag.
                        return ShardLag {
                            shard: progress.addr.clone(),
                            last_seq: committed,
                            lag_events: info.last_seq,
                        };
                    }
                }
                ShardLag {
                    shard: progress.addr.clone(),
                    last_seq: committed,
                    lag_events: head.saturating_sub(committed),
                }
            });
        futures::future::join_all(asks).await
    }
}

impl Inner {
    /// Spawns the follower of `addr` under the next shard index.
    fn spawn(&self, next_index: &mut usize, addr: String, client: SyncClient) -> Follower {
        let index = *next_index;
        *next_index += 1;
        let progress = Arc::new(ShardProgress {
            addr,
            committed_seq: Arc::default(),
            head_seq: AtomicU64::new(0),
            epoch: Mutex::default(),
            ready: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            scans: AtomicU64::new(0),
            ready_tx: self.changes.clone(),
        });
        let ingest = shard::ShardIngest {
            index,
            client: client.clone(),
            engine: self.engine.clone(),
            progress: progress.clone(),
            stop: self.stop.clone(),
            rescans: self.engine.watch_indexed_changes(),
            generation: 0,
            last_attempt: 0,
        };
        let (remove, removed) = oneshot::channel();
        let span = tracing::info_span!("shard", addr = %progress.addr, index);
        let task = tokio::spawn(tracing::Instrument::instrument(
            async move {
                // Dropping the follower at any await is safe: updates already queued stay
                // valid (idempotent by key and timestamp), and an interrupted scan sends
                // no end-of-scan, so it sweeps nothing. A dropped `remove` sender (the
                // ingestion handle gone) disables the branch: followers then run until
                // `stop`, as before.
                tokio::select! {
                    () = ingest.run() => {}
                    Ok(()) = removed => tracing::info!("stopped following shard"),
                }
            },
            span,
        ));
        Follower {
            progress,
            client,
            remove,
            task,
        }
    }
}

impl Follower {
    /// Tells the task to stop; returns its address and task to wait for, or `None` when
    /// it had already ended.
    fn signal_stop(self) -> Option<(String, JoinHandle<()>)> {
        let addr = self.progress.addr.clone();
        match self.remove.send(()) {
            Ok(()) => Some((addr, self.task)),
            Err(()) => None,
        }
    }
}

/// Waits for a signalled follower task to end; aborts it after [`FOLLOWER_STOP_WAIT`].
async fn stop_task(addr: String, mut task: JoinHandle<()>) {
    match tokio::time::timeout(FOLLOWER_STOP_WAIT, &mut task).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(addr = %addr, %error, "shard follower failed"),
        Err(_) => {
            tracing::warn!(addr = %addr, "shard follower did not stop in time, aborted");
            task.abort();
        }
    }
}
