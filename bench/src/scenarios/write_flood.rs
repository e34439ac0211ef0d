//! `write-flood`: OP_BATCHes sent back to back without waiting for OP_ACK, to see what the
//! server does under more load than it can take (ERRORs, disconnects, growing latency).

use super::{padded_value, secs, BatchBuilder, Ctx, Settled, WriteTotals, FAILURE_GRACE};
use crate::cli::WriteFloodArgs;
use crate::conn::{Conn, ConnReader};
use crate::error::BenchError;
use crate::failures::{Failure, FailureKind};
use crate::in_flight::{InFlight, SentBatch};
use crate::report::Report;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// Runs the scenario.
pub async fn run(ctx: &Ctx, args: &WriteFloodArgs) -> Result<Report, BenchError> {
    if args.connections == 0 || args.batch_size == 0 || args.key_space == 0 {
        return Err(BenchError::InvalidOption(
            "--connections, --batch-size and --key-space must be at least 1".into(),
        ));
    }
    let map_name = ctx.map_name(&args.map, "flood");
    let conns = ctx.connect_many(args.connections).await?;
    let start = Instant::now();
    let deadline = start + ctx.duration;
    let mut tasks = Vec::with_capacity(conns.len());
    for (i, conn) in conns.into_iter().enumerate() {
        let builder = BatchBuilder::new(ctx.node_id("f", i), map_name.clone());
        let flood = Flood {
            index: i,
            args: args.clone(),
            deadline,
            timeout: ctx.response_timeout,
        };
        tasks.push(tokio::spawn(flood.run(conn, builder)));
    }
    let mut totals = WriteTotals::default();
    let mut bytes_sent = 0u64;
    let mut peak_in_flight = 0usize;
    for task in tasks {
        let r = task
            .await
            .map_err(|e| BenchError::Setup(format!("flood task: {e}")))?;
        totals.merge(&r.totals);
        bytes_sent += r.bytes_sent;
        peak_in_flight = peak_in_flight.max(r.peak_in_flight);
    }
    let elapsed = start.elapsed();
    let flood_secs = secs(ctx.duration);

    let mut report = Report::new("write-flood", &ctx.connect.url);
    report.duration_secs = elapsed.as_secs_f64();
    report
        .param("connections", args.connections)
        .param("batch_size", args.batch_size)
        .param("duration_s", ctx.duration.as_secs())
        .param("max_in_flight", args.max_in_flight)
        .param("value_bytes", args.value_bytes);
    report
        .metric("sent ops/s", totals.ops_sent as f64 / flood_secs, "ops/s")
        .metric(
            "acked ops/s",
            totals.ops_acked as f64 / secs(elapsed),
            "ops/s",
        )
        .metric("ops sent", totals.ops_sent as f64, "ops")
        .metric("ops acked", totals.ops_acked as f64, "ops")
        .metric(
            "acked/sent",
            if totals.ops_sent == 0 {
                0.0
            } else {
                totals.ops_acked as f64 / totals.ops_sent as f64
            },
            "ratio",
        )
        .metric(
            "sent MiB/s",
            bytes_sent as f64 / 1_048_576.0 / flood_secs,
            "MiB/s",
        )
        .metric(
            "peak batches in flight on one connection",
            peak_in_flight as f64,
            "batches",
        )
        .metric("disconnects", totals.disconnects as f64, "connections");
    for f in totals
        .failures
        .summary()
        .iter()
        .filter(|f| f.kind.starts_with("ERROR"))
    {
        report.metric(&format!("{} messages", f.kind), f.count as f64, "messages");
    }
    report
        .latencies
        .push(totals.latency.summary("OP_BATCH → OP_ACK under flood"));
    report.set_failures(&totals.failures);
    Ok(report)
}

struct FloodResult {
    totals: WriteTotals,
    bytes_sent: u64,
    peak_in_flight: usize,
}

struct Flood {
    index: usize,
    args: WriteFloodArgs,
    deadline: Instant,
    timeout: Duration,
}

fn lock(tracker: &Mutex<InFlight>) -> MutexGuard<'_, InFlight> {
    // A panic while holding the lock leaves plain counters behind: still usable.
    tracker
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Flood {
    async fn run(self, conn: Conn, mut builder: BatchBuilder) -> FloodResult {
        let Conn { mut writer, reader } = conn;
        // Under a flood, answers queue behind each other: a late OP_ACK is still an OP_ACK and
        // its latency is the finding. Only what is unanswered after the drain time counts as lost.
        let drain = Duration::from_secs(self.args.drain_secs);
        let patience =
            self.deadline.saturating_duration_since(Instant::now()) + drain + self.timeout;
        let tracker = Arc::new(Mutex::new(InFlight::new(None, patience, FAILURE_GRACE)));
        let settled_some = Arc::new(Notify::new());
        let gone = Arc::new(AtomicBool::new(false));
        let (done_tx, done_rx) = watch::channel(None::<Instant>);
        let read = tokio::spawn(read_loop(
            reader,
            tracker.clone(),
            settled_some.clone(),
            gone.clone(),
            done_rx,
            drain,
        ));

        let mut totals = WriteTotals::default();
        let mut peak = 0usize;
        let mut seq = 0u64;
        'flood: while Instant::now() < self.deadline && !gone.load(Ordering::Relaxed) {
            while self.args.max_in_flight > 0
                && lock(&tracker).len() >= self.args.max_in_flight
                && !gone.load(Ordering::Relaxed)
            {
                if Instant::now() >= self.deadline {
                    break 'flood;
                }
                // The reader wakes us on every settled batch; the timeout re-checks the deadline.
                let _ =
                    tokio::time::timeout(Duration::from_millis(50), settled_some.notified()).await;
            }
            let (index, key_space, pad) = (self.index, self.args.key_space, self.args.value_bytes);
            let entries = (0..self.args.batch_size).map(|_| {
                seq += 1;
                (
                    format!("c{index}-k{}", seq % key_space),
                    padded_value(seq, pad),
                )
            });
            let (msg, first_id, last_id) = builder.batch(entries);
            {
                let mut t = lock(&tracker);
                t.sent(SentBatch {
                    first_id,
                    last_id,
                    sent_at: Instant::now(),
                });
                peak = peak.max(t.len());
            }
            totals.batches += 1;
            totals.ops_sent += last_id - first_id + 1;
            match writer.send_before(&msg, self.deadline.into()).await {
                Ok(true) => {}
                Ok(false) => {
                    // The server stopped reading and the flood time is over: this one never left.
                    lock(&tracker).withdraw(last_id);
                    totals.batches -= 1;
                    totals.ops_sent -= last_id - first_id + 1;
                    break;
                }
                Err(e) => {
                    // The reader sees the same broken connection and settles what is in flight.
                    totals.failures.add(&Failure::new(
                        FailureKind::Disconnected,
                        format!("send failed: {e}"),
                    ));
                    break;
                }
            }
            if totals.batches % 32 == 0 {
                // Let the reader and other connections run even when the socket never blocks.
                tokio::task::yield_now().await;
            }
        }
        // The last frame may still sit in the sink (its flush was cut at the deadline); it
        // counts as sent, so it must leave now, not when the connection closes after the drain.
        // Failing that, it stays unanswered and is reported as such.
        // The drain counts from the end of the flood, flush included.
        let flood_end = Instant::now();
        let _ = writer.flush_within(drain).await;
        let _ = done_tx.send(Some(flood_end));
        let read_totals = read.await.unwrap_or_else(|e| {
            let mut t = WriteTotals::default();
            t.failures.add(&Failure::new(
                FailureKind::Unexpected,
                format!("reader task: {e}"),
            ));
            t
        });
        writer.close().await;
        let bytes_sent = writer.traffic().bytes_sent;
        totals.merge(&read_totals);
        // A batch registered after the reader gave up can no longer be answered.
        let stranded = Failure::new(
            FailureKind::Disconnected,
            "sent after the connection was lost",
        );
        let outcomes = lock(&tracker).abandon(Instant::now(), &stranded);
        totals.add_settled(&Settled {
            outcomes,
            ..Settled::default()
        });
        FloodResult {
            totals,
            bytes_sent,
            peak_in_flight: peak,
        }
    }
}

/// Reads answers until the writer is done and every batch is settled, or the drain time is
/// over (what is left is unanswered), or the server closes the connection.
async fn read_loop(
    mut reader: ConnReader,
    tracker: Arc<Mutex<InFlight>>,
    settled_some: Arc<Notify>,
    gone: Arc<AtomicBool>,
    done: watch::Receiver<Option<Instant>>,
    drain: Duration,
) -> WriteTotals {
    let mut totals = WriteTotals::default();
    let tick = Duration::from_millis(100);
    loop {
        let finished_at = *done.borrow();
        if let Some(at) = finished_at {
            let mut t = lock(&tracker);
            if t.is_empty() {
                break;
            }
            if Instant::now() >= at + drain {
                let left = Failure::new(
                    FailureKind::NoResponse,
                    format!("no OP_ACK within {drain:?} after the flood stopped"),
                );
                let outcomes = t.abandon(Instant::now(), &left);
                totals.add_settled(&Settled {
                    outcomes,
                    ..Settled::default()
                });
                break;
            }
        }
        let mut settled = Settled::default();
        match reader.recv_timeout(tick).await {
            Ok(Some(msg)) => {
                let observed = lock(&tracker).observe(&msg, Instant::now());
                settled.outcomes = observed.outcomes;
                settled.unattributed = observed.unattributed;
            }
            Ok(None) => {}
            Err(BenchError::Disconnected(why)) => {
                gone.store(true, Ordering::Relaxed);
                let failure = Failure::new(FailureKind::Disconnected, why.clone());
                settled.outcomes = lock(&tracker).abandon(Instant::now(), &failure);
                settled.disconnected = Some(why);
                totals.add_settled(&settled);
                settled_some.notify_one();
                break;
            }
            Err(e) => settled
                .unattributed
                .push(Failure::new(FailureKind::Unexpected, e.to_string())),
        }
        settled
            .outcomes
            .extend(lock(&tracker).expire(Instant::now()));
        if !settled.outcomes.is_empty() {
            settled_some.notify_one();
        }
        totals.add_settled(&settled);
    }
    totals
}
