//! `write-ack`: N connections, each sends an OP_BATCH, waits for its OP_ACK, pauses, repeats.

use super::{padded_value, secs, settle, BatchBuilder, Ctx, Settled, WriteTotals, FAILURE_GRACE};
use crate::cli::WriteAckArgs;
use crate::conn::Conn;
use crate::error::BenchError;
use crate::failures::{Failure, FailureKind};
use crate::in_flight::{InFlight, SentBatch};
use crate::machine_noise::{CpuTimes, WakeLagProbe};
use crate::report::Report;
use crate::timeline::Timeline;
use std::time::{Duration, Instant};

/// Width of a `--timeline` window and of the wake-up probe's maxima.
const TIMELINE_WINDOW: Duration = Duration::from_millis(100);

/// Runs the scenario.
pub async fn run(ctx: &Ctx, args: &WriteAckArgs) -> Result<Report, BenchError> {
    if args.connections == 0 || args.batch_size == 0 || args.key_space == 0 {
        return Err(BenchError::InvalidOption(
            "--connections, --batch-size and --key-space must be at least 1".into(),
        ));
    }
    let map_name = ctx.map_name(&args.map, "write");
    let conns = ctx.connect_many(args.connections).await?;
    let cpu_before = CpuTimes::read();
    // The probe wakes every millisecond, which costs a closed loop on a small machine several
    // percent of its throughput: it runs only when a timeline is asked for.
    let probe = args
        .timeline
        .as_ref()
        .and_then(|_| WakeLagProbe::start(TIMELINE_WINDOW).ok());
    let start = Instant::now();
    let deadline = start + ctx.duration;
    let interval = Duration::from_millis(args.interval_ms);
    let mut tasks = Vec::with_capacity(conns.len());
    for (i, conn) in conns.into_iter().enumerate() {
        let builder = BatchBuilder::new(ctx.node_id("w", i), map_name.clone())
            .with_write_concern(args.write_concern, args.write_timeout_ms);
        // Spread the first sends over one interval so the connections do not move in lockstep.
        let offset = interval.mul_f64(i as f64 / args.connections as f64);
        let worker = Worker {
            index: i,
            args: args.clone(),
            builder,
            deadline,
            offset,
            timeout: ctx.response_timeout,
            timeline: Timeline::new(start, TIMELINE_WINDOW),
        };
        tasks.push(tokio::spawn(worker.run(conn)));
    }
    let mut totals = WriteTotals::default();
    let mut timeline = Timeline::new(start, TIMELINE_WINDOW);
    for task in tasks {
        let (t, line) = task
            .await
            .map_err(|e| BenchError::Setup(format!("writer task: {e}")))?;
        totals.merge(&t);
        timeline.merge(&line);
    }
    let elapsed = start.elapsed();
    let wake_lag = probe.and_then(WakeLagProbe::finish);
    let cpu = cpu_before
        .zip(CpuTimes::read())
        .map(|(before, after)| before.share_until(&after));

    let mut report = Report::new("write-ack", &ctx.connect.url);
    report.duration_secs = elapsed.as_secs_f64();
    report
        .param("connections", args.connections)
        .param("batch_size", args.batch_size)
        .param("interval_ms", args.interval_ms)
        .param("duration_s", ctx.duration.as_secs())
        .param("value_bytes", args.value_bytes)
        .param(
            "write_concern",
            args.write_concern
                .map_or_else(|| "default".to_string(), |w| w.to_string()),
        );
    report
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
        .metric("batches sent", totals.batches as f64, "batches")
        .metric("disconnects", totals.disconnects as f64, "connections");
    report
        .latencies
        .push(totals.latency.summary("OP_BATCH → OP_ACK"));
    // The machine's side of the tail: a stall that delays this 1 ms sleep delays every
    // process here, the server and this client included.
    if let Some(seen) = &wake_lag {
        report
            .latencies
            .push(seen.lag.summary("machine: wake-up lag of a 1 ms sleep"));
    }
    if let Some(share) = cpu {
        report
            .metric("machine CPU busy", share.busy_pct, "%")
            .metric("machine CPU stolen by the hypervisor", share.steal_pct, "%");
    }
    if let Some(path) = &args.timeline {
        let lag = wake_lag
            .as_ref()
            .map_or(&[][..], |w| &w.worst_per_window[..]);
        timeline.write_csv(path, lag)?;
    }
    report.set_failures(&totals.failures);
    Ok(report)
}

struct Worker {
    index: usize,
    args: WriteAckArgs,
    builder: BatchBuilder,
    deadline: Instant,
    offset: Duration,
    timeout: Duration,
    timeline: Timeline,
}

impl Worker {
    async fn run(mut self, mut conn: Conn) -> (WriteTotals, Timeline) {
        let mut totals = WriteTotals::default();
        let mut tracker = InFlight::new(self.args.write_concern, self.timeout, FAILURE_GRACE);
        let interval = Duration::from_millis(self.args.interval_ms);
        tokio::time::sleep(self.offset).await;
        let mut seq = 0u64;
        while Instant::now() < self.deadline {
            let (index, key_space, pad) = (self.index, self.args.key_space, self.args.value_bytes);
            let entries = (0..self.args.batch_size).map(|_| {
                seq += 1;
                (
                    format!("c{index}-k{}", seq % key_space),
                    padded_value(seq, pad),
                )
            });
            let (msg, first_id, last_id) = self.builder.batch(entries);
            tracker.sent(SentBatch {
                first_id,
                last_id,
                sent_at: Instant::now(),
            });
            totals.batches += 1;
            totals.ops_sent += last_id - first_id + 1;
            if let Err(e) = conn.send(&msg).await {
                let gone = Failure::new(FailureKind::Disconnected, e.to_string());
                let outcomes = tracker.abandon(Instant::now(), &gone);
                totals.add_settled(&Settled {
                    outcomes,
                    unattributed: Vec::new(),
                    disconnected: Some(e.to_string()),
                });
                return (totals, self.timeline);
            }
            let settled = settle(&mut conn.reader, &mut tracker).await;
            let answered_at = Instant::now();
            for o in settled.outcomes.iter().filter(|o| o.succeeded()) {
                self.timeline.record(answered_at, o.latency);
            }
            totals.add_settled(&settled);
            if settled.disconnected.is_some() {
                return (totals, self.timeline);
            }
            let pause = interval.min(self.deadline.saturating_duration_since(Instant::now()));
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        conn.close().await;
        (totals, self.timeline)
    }
}
