//! `fan-out`: M connections hold a live query on one map, one connection writes to it; every
//! write must reach every subscriber as QUERY_UPDATE. Each value carries its send time (on
//! this process's monotonic clock), so a subscriber measures write → update latency alone.

use super::{secs, settle, BatchBuilder, Ctx, WriteTotals, FAILURE_GRACE};
use crate::cli::FanOutArgs;
use crate::conn::Conn;
use crate::decode::{as_u64, field, ServerMsg};
use crate::encode::{self, map};
use crate::error::BenchError;
use crate::failures::{Failure, FailureKind, FailureTally};
use crate::in_flight::{InFlight, SentBatch};
use crate::latency::LatencyRecorder;
use crate::report::Report;
use rmpv::Value;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What a subscriber saw.
#[derive(Debug, Default)]
struct Seen {
    /// write seq → latency
    updates: Vec<(u64, Duration)>,
    failures: FailureTally,
    server_events: u64,
}

/// Sends QUERY_SUB and waits for its QUERY_RESP.
async fn subscribe(
    mut conn: Conn,
    query_id: String,
    map_name: String,
    timeout: Duration,
) -> Result<(Conn, String), BenchError> {
    conn.send(&encode::query_sub(&query_id, &map_name)).await?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.recv_timeout(left).await? {
            Some(ServerMsg::QueryResp { query_id: q, .. }) if q == query_id => {
                return Ok((conn, query_id))
            }
            Some(ServerMsg::Error { code, message }) => {
                return Err(BenchError::Setup(format!(
                    "QUERY_SUB on {map_name} answered with ERROR {code:?}: {message}"
                )));
            }
            Some(_) => continue,
            None => {
                return Err(BenchError::Timeout(
                    timeout,
                    format!("QUERY_RESP for {query_id}"),
                ))
            }
        }
    }
}

/// Reads QUERY_UPDATEs until told to stop.
async fn listen(
    mut conn: Conn,
    query_id: String,
    epoch: Instant,
    delivered: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> Seen {
    let mut seen = Seen::default();
    loop {
        let msg = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            msg = conn.recv() => msg,
        };
        match msg {
            Ok(ServerMsg::QueryUpdate {
                query_id: q,
                key,
                change_type,
                value,
            }) if q == query_id => {
                let now = epoch.elapsed();
                let seq = field(&value, "seq").and_then(as_u64);
                let sent = field(&value, "sentMicros").and_then(as_u64);
                match (seq, sent) {
                    (Some(seq), Some(sent)) => {
                        seen.updates
                            .push((seq, now.saturating_sub(Duration::from_micros(sent))));
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => seen.failures.add(&Failure::new(
                        FailureKind::Unexpected,
                        format!("{change_type} for {key} without the written value: {value}"),
                    )),
                }
            }
            Ok(ServerMsg::ServerEvents { count }) => seen.server_events += count as u64,
            Ok(ServerMsg::Error { code, message }) => seen
                .failures
                .add(&Failure::new(FailureKind::ProtocolError { code }, message)),
            Ok(_) => {}
            Err(BenchError::Disconnected(why)) => {
                seen.failures
                    .add(&Failure::new(FailureKind::Disconnected, why));
                return seen;
            }
            Err(e) => seen
                .failures
                .add(&Failure::new(FailureKind::Unexpected, e.to_string())),
        }
    }
    conn.close().await;
    seen
}

/// Runs the scenario.
pub async fn run(ctx: &Ctx, args: &FanOutArgs) -> Result<Report, BenchError> {
    if args.subscribers == 0 || args.keys == 0 {
        return Err(BenchError::InvalidOption(
            "--subscribers and --keys must be at least 1".into(),
        ));
    }
    let map_name = ctx.map_name(&args.map, "fanout");
    let conns = ctx.connect_many(args.subscribers).await?;
    let subscriptions = conns.into_iter().enumerate().map(|(i, c)| {
        subscribe(
            c,
            format!("bench-{}-q{i}", ctx.run_id),
            map_name.clone(),
            ctx.response_timeout,
        )
    });
    let subscribed = futures::future::try_join_all(subscriptions).await?;

    let epoch = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let listeners: Vec<_> = subscribed
        .into_iter()
        .map(|(conn, qid)| {
            tokio::spawn(listen(conn, qid, epoch, delivered.clone(), stop_rx.clone()))
        })
        .collect();

    let mut writer = ctx.connect().await?;
    let mut builder = BatchBuilder::new(ctx.node_id("fan-writer", 0), map_name.clone());
    let mut tracker = InFlight::new(None, ctx.response_timeout, FAILURE_GRACE);
    let mut writes = WriteTotals::default();
    let mut acked_seqs = BTreeSet::new();
    let start = Instant::now();
    let deadline = start + ctx.duration;
    let interval = Duration::from_millis(args.write_interval_ms);
    let mut seq = 0u64;
    while Instant::now() < deadline {
        seq += 1;
        let sent_micros = epoch.elapsed().as_micros() as u64;
        let value = map(vec![
            ("seq", Value::from(seq)),
            ("sentMicros", Value::from(sent_micros)),
        ]);
        let (msg, first_id, last_id) = builder.batch([(format!("k{}", seq % args.keys), value)]);
        tracker.sent(SentBatch {
            first_id,
            last_id,
            sent_at: Instant::now(),
        });
        writes.batches += 1;
        writes.ops_sent += 1;
        writer.send(&msg).await?;
        let settled = settle(&mut writer.reader, &mut tracker).await;
        if settled.outcomes.iter().any(|o| o.succeeded()) {
            acked_seqs.insert(seq);
        }
        writes.add_settled(&settled);
        if let Some(why) = settled.disconnected {
            return Err(BenchError::Disconnected(format!(
                "the fan-out writer lost its connection: {why}"
            )));
        }
        tokio::time::sleep(interval.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
    let write_phase = start.elapsed();
    writer.close().await;

    // Wait for the stragglers, then stop listening.
    let expected = acked_seqs.len() as u64 * args.subscribers as u64;
    let wait_until = Instant::now() + Duration::from_millis(args.delivery_timeout_ms);
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(true);

    let mut failures = writes.failures.clone();
    let mut each = LatencyRecorder::new();
    let mut slowest_per_write: HashMap<u64, Duration> = HashMap::new();
    let (mut received, mut server_events, mut missing, mut duplicates) = (0u64, 0u64, 0u64, 0u64);
    for (i, listener) in listeners.into_iter().enumerate() {
        let seen = listener
            .await
            .map_err(|e| BenchError::Setup(format!("subscriber task: {e}")))?;
        failures.merge(&seen.failures);
        server_events += seen.server_events;
        let mut got = BTreeSet::new();
        for (seq, latency) in seen.updates {
            if !got.insert(seq) {
                duplicates += 1;
                continue;
            }
            received += 1;
            each.record(latency);
            let slowest = slowest_per_write.entry(seq).or_default();
            *slowest = (*slowest).max(latency);
        }
        let lost: Vec<u64> = acked_seqs.difference(&got).copied().collect();
        if let Some(first) = lost.first() {
            missing += lost.len() as u64;
            failures.add_n(
                &FailureKind::MissingUpdate,
                lost.len() as u64,
                &format!("subscriber {i} never got write {first}"),
            );
        }
    }
    let mut all = LatencyRecorder::new();
    for seq in &acked_seqs {
        // A write counts as delivered to everyone only if no subscriber missed it.
        if let Some(latency) = slowest_per_write.get(seq) {
            all.record(*latency);
        }
    }

    let mut report = Report::new("fan-out", &ctx.connect.url);
    report.duration_secs = write_phase.as_secs_f64();
    report
        .param("subscribers", args.subscribers)
        .param("write_interval_ms", args.write_interval_ms)
        .param("duration_s", ctx.duration.as_secs());
    report
        .metric("writes acked", acked_seqs.len() as f64, "writes")
        .metric("updates expected", expected as f64, "updates")
        .metric("updates received", received as f64, "updates")
        .metric("updates missing", missing as f64, "updates")
        .metric("duplicate updates", duplicates as f64, "updates")
        .metric(
            "updates delivered/s",
            received as f64 / secs(write_phase),
            "updates/s",
        )
        .metric(
            "SERVER_EVENTs received by subscribers",
            server_events as f64,
            "events",
        );
    report
        .latencies
        .push(each.summary("write → QUERY_UPDATE (each subscriber)"));
    report
        .latencies
        .push(all.summary("write → QUERY_UPDATE on the last subscriber"));
    report
        .latencies
        .push(writes.latency.summary("writer OP_BATCH → OP_ACK"));
    report.set_failures(&failures);
    Ok(report)
}
