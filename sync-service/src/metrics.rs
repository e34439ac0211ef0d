//! Prometheus metrics of a sync shard, served on its ops port (`SYNC_HTTP_ADDR`).
//!
//! ApplyBatch outcomes and latency are recorded as calls complete; queue lengths and
//! feed positions already live in the shard, so they are read when Prometheus scrapes.

use crate::shard::Shard;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use std::sync::Arc;
use std::time::Duration;
use topgun_proto::grpc::sync as pb;

/// `result` label of an op whose batch merged and changed the state.
pub const RESULT_CHANGED: &str = "changed";
/// `result` label of an op that merged without changing anything (older or repeated).
pub const RESULT_UNCHANGED: &str = "unchanged";
/// `result` label of an op whose batch failed (storage down, deadline, wrong shard...).
pub const RESULT_ERROR: &str = "error";

/// The shard's metrics and the registry they are registered in.
#[derive(Debug, Clone)]
pub struct SyncMetrics {
    registry: Registry,
    ops_applied: IntCounterVec,
    apply_batch_duration: Histogram,
}

impl SyncMetrics {
    /// Creates the metrics in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let ops_applied = IntCounterVec::new(
            Opts::new(
                "topgun_sync_ops_applied_total",
                "Ops received in ApplyBatch calls, by op kind and result (changed, unchanged, error)",
            ),
            &["kind", "result"],
        )
        .expect("static metric definition");
        let apply_batch_duration = Histogram::with_opts(
            HistogramOpts::new(
                "topgun_sync_apply_batch_duration_seconds",
                "ApplyBatch latency: merge, change feed and the storage write, whatever the outcome",
            )
            .buckets(topgun_ops::LATENCY_BUCKETS.to_vec()),
        )
        .expect("static metric definition");
        registry
            .register(Box::new(ops_applied.clone()))
            .expect("unique metric name");
        registry
            .register(Box::new(apply_batch_duration.clone()))
            .expect("unique metric name");
        SyncMetrics {
            registry,
            ops_applied,
            apply_batch_duration,
        }
    }

    /// The registry to serve.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Records one ApplyBatch call: `kinds` are the ops' [`crate::requests::OpKind::label`]s
    /// in request order, `results` the per-op answers (`None` when the call failed).
    pub fn record_batch(
        &self,
        kinds: &[&'static str],
        results: Option<&[pb::OpResult]>,
        elapsed: Duration,
    ) {
        self.apply_batch_duration.observe(elapsed.as_secs_f64());
        for (index, kind) in kinds.iter().enumerate() {
            let result = match results.and_then(|r| r.get(index)) {
                Some(r) if r.changed => RESULT_CHANGED,
                Some(_) => RESULT_UNCHANGED,
                None => RESULT_ERROR,
            };
            self.ops_applied.with_label_values(&[kind, result]).inc();
        }
    }

    /// Registers the gauges read from `shard` at scrape time: rows waiting for storage,
    /// the change feed's head and subscribers, and topic messages lagging subscribers
    /// skipped.
    pub fn watch_shard(&self, shard: &Arc<Shard>) -> Result<(), topgun_ops::OpsError> {
        let pending = IntGauge::new(
            "topgun_sync_pending_rows",
            "Changed rows not yet persisted by the storage service (retried in the background)",
        )?;
        let last_seq = IntGauge::new(
            "topgun_sync_change_feed_last_seq",
            "Sequence number of the newest change-feed event in this shard's epoch",
        )?;
        let subscribers = IntGauge::new(
            "topgun_sync_change_feed_subscribers",
            "Open change-feed subscription streams (gateways, search replicas)",
        )?;
        let skipped = IntCounter::new(
            "topgun_sync_topic_messages_skipped_total",
            "Topic messages skipped by subscribers that lagged behind the relay buffer \
             (they stay connected and resume with the newest messages)",
        )?;
        let shard = Arc::clone(shard);
        let (p, l, s, k) = (
            pending.clone(),
            last_seq.clone(),
            subscribers.clone(),
            skipped.clone(),
        );
        topgun_ops::register_sampled(
            &self.registry,
            vec![
                Box::new(pending),
                Box::new(last_seq),
                Box::new(subscribers),
                Box::new(skipped),
            ],
            move || {
                p.set(gauge_value(shard.pending_rows() as u64));
                l.set(gauge_value(shard.feed().last_seq()));
                s.set(gauge_value(shard.feed().subscribers() as u64));
                // The relay's own counter is monotonic: add what it gained since the
                // last scrape.
                k.inc_by(shard.topics().dropped().saturating_sub(k.get()));
            },
        )
    }
}

impl Default for SyncMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Gauges are `i64`; the counts here never get near its limit, but saturate anyway.
fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SyncConfig;
    use crate::requests::{ApplyBatch, HashedKey, Op, OpKind, Origin, WriteConcern};
    use topgun_proto::hlc::Timestamp;
    use topgun_proto::wire::LwwRecord;

    fn render(registry: &Registry) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .expect("encodes");
        String::from_utf8(out).expect("utf-8")
    }

    fn put(key: &str, millis: u64) -> Op {
        Op {
            op_id: key.into(),
            map_name: "m".into(),
            key: HashedKey::new(key),
            kind: OpKind::LwwPut(LwwRecord {
                value: rmpv::Value::from(1),
                timestamp: Timestamp::new(millis, 0, "n"),
                ttl_ms: None,
            }),
        }
    }

    #[tokio::test]
    async fn batches_and_shard_state_show_up_in_the_exposition() {
        let metrics = SyncMetrics::new();
        let shard = Arc::new(Shard::new(
            &SyncConfig::default().validate().expect("valid"),
            None,
        ));
        metrics.watch_shard(&shard).expect("registers");
        let batch = ApplyBatch {
            ops: vec![put("a", 1), put("b", 1)],
            write_concern: WriteConcern::Applied,
            origin: Origin::default(),
        };
        let kinds: Vec<_> = batch.ops.iter().map(|op| op.kind.label()).collect();
        let results = shard.apply_batch(batch).await.expect("applies");
        metrics.record_batch(&kinds, Some(&results), Duration::from_millis(2));
        // The same ops again merge as unchanged; a failed call counts as error.
        let again = ApplyBatch {
            ops: vec![put("a", 1)],
            write_concern: WriteConcern::Applied,
            origin: Origin::default(),
        };
        let results = shard.apply_batch(again).await.expect("applies");
        metrics.record_batch(&["lww_put"], Some(&results), Duration::from_millis(1));
        metrics.record_batch(&["or_add"], None, Duration::from_millis(1));

        let text = render(metrics.registry());
        for line in [
            "topgun_sync_ops_applied_total{kind=\"lww_put\",result=\"changed\"} 2",
            "topgun_sync_ops_applied_total{kind=\"lww_put\",result=\"unchanged\"} 1",
            "topgun_sync_ops_applied_total{kind=\"or_add\",result=\"error\"} 1",
            "topgun_sync_apply_batch_duration_seconds_count 3",
            "topgun_sync_change_feed_last_seq 2",
            "topgun_sync_change_feed_subscribers 0",
            "topgun_sync_pending_rows 0",
            "topgun_sync_topic_messages_skipped_total 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
