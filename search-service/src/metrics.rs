//! Prometheus metrics of a search replica, served on its ops port (`SEARCH_HTTP_ADDR`).
//!
//! Searches are recorded as they complete; index size, live subscriptions, commits and
//! per-shard lag already live in the engine and the ingestion, so they are read when
//! Prometheus scrapes.

use crate::engine::SearchEngine;
use crate::ingest::Ingestor;
use parking_lot::Mutex;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// `kind` label of a one-shot search.
pub const KIND_ONE_SHOT: &str = "one_shot";
/// `kind` label of a live search (its latency is the time to the initial results).
pub const KIND_LIVE: &str = "live";

/// The replica's metrics and the registry they are registered in.
#[derive(Debug, Clone)]
pub struct SearchMetrics {
    registry: Registry,
    searches: IntCounterVec,
    search_duration: HistogramVec,
}

impl SearchMetrics {
    /// Creates the metrics in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let searches = IntCounterVec::new(
            Opts::new(
                "topgun_search_searches_total",
                "Searches by kind (one_shot, live) and outcome (ok, error)",
            ),
            &["kind", "outcome"],
        )
        .expect("static metric definition");
        let search_duration = HistogramVec::new(
            HistogramOpts::new(
                "topgun_search_search_duration_seconds",
                "Search latency by kind; for a live search, the time to its initial results",
            )
            .buckets(topgun_ops::LATENCY_BUCKETS.to_vec()),
            &["kind"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(searches.clone()))
            .expect("unique metric name");
        registry
            .register(Box::new(search_duration.clone()))
            .expect("unique metric name");
        SearchMetrics {
            registry,
            searches,
            search_duration,
        }
    }

    /// The registry to serve.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// One search of `kind` that succeeded (`ok`) or failed, after `took`.
    pub fn record_search(&self, kind: &str, ok: bool, took: Duration) {
        let outcome = if ok { "ok" } else { "error" };
        self.searches.with_label_values(&[kind, outcome]).inc();
        self.search_duration
            .with_label_values(&[kind])
            .observe(took.as_secs_f64());
    }

    /// Registers the values read at scrape time from `engine` and `ingest`: indexed
    /// documents, live subscriptions, commits, and per shard the events received but
    /// not yet searchable.
    pub fn watch(
        &self,
        engine: &SearchEngine,
        ingest: Option<&Ingestor>,
    ) -> Result<(), topgun_ops::OpsError> {
        let documents = IntGauge::new(
            "topgun_search_documents_indexed",
            "Documents with a value over every map, as searches see them (buffered writes included: a search indexes them first)",
        )?;
        let subscriptions =
            IntGauge::new("topgun_search_live_subscriptions", "Open live searches")?;
        let commits = IntCounter::new(
            "topgun_search_commits_total",
            "Index commits (one per changed map per commit round)",
        )?;
        let lag = IntGaugeVec::new(
            Opts::new(
                "topgun_search_index_lag_events",
                "Change-feed events received from a shard but not yet searchable, by shard address",
            ),
            &["shard"],
        )?;
        let engine = engine.clone();
        let ingest = ingest.cloned();
        // Shards given a lag series, so a shard no longer followed loses its series.
        let labelled: Mutex<Vec<String>> = Mutex::default();
        let (d, s, c, l) = (
            documents.clone(),
            subscriptions.clone(),
            commits.clone(),
            lag.clone(),
        );
        topgun_ops::register_sampled(
            &self.registry,
            vec![
                Box::new(documents),
                Box::new(subscriptions),
                Box::new(commits),
                Box::new(lag),
            ],
            move || {
                let stats = engine.stats();
                d.set(gauge_value(stats.documents));
                s.set(gauge_value(stats.subscriptions as u64));
                // The engine's counter is monotonic: add what it gained since last time.
                c.inc_by(stats.commits.saturating_sub(c.get()));
                // Read at every scrape: the set of shards can change at runtime.
                let progress = ingest.as_ref().map(Ingestor::progress).unwrap_or_default();
                let mut labelled = labelled.lock();
                for gone in labelled
                    .iter()
                    .filter(|addr| !progress.iter().any(|p| p.addr == **addr))
                {
                    let _ = l.remove_label_values(&[gone.as_str()]);
                }
                labelled.clear();
                for shard in &progress {
                    let head = shard.head_seq.load(Ordering::Relaxed);
                    let committed = shard.committed_seq.load(Ordering::Relaxed);
                    l.with_label_values(&[shard.addr.as_str()])
                        .set(gauge_value(head.saturating_sub(committed)));
                    labelled.push(shard.addr.clone());
                }
            },
        )
    }
}

impl Default for SearchMetrics {
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
    use crate::document::DocUpdate;
    use crate::engine::{EngineConfig, SearchQuery};
    use topgun_proto::hlc::Timestamp;
    use topgun_proto::wire::encode_value;

    fn render(registry: &Registry) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .expect("encodes");
        String::from_utf8(out).expect("utf-8")
    }

    #[tokio::test]
    async fn engine_state_and_searches_show_up_in_the_exposition() {
        let engine = SearchEngine::start(EngineConfig::default()).expect("start");
        let metrics = SearchMetrics::new();
        metrics.watch(&engine, None).expect("registers");
        let title = rmpv::Value::Map(vec![(
            rmpv::Value::from("title"),
            rmpv::Value::from("rust search"),
        )]);
        engine
            .apply(vec![DocUpdate::Lww {
                map: "docs".into(),
                key: "k".into(),
                timestamp: Timestamp::new(1, 0, "t"),
                value: Some(encode_value(&title)),
            }])
            .await
            .expect("apply");
        engine.flush().await.expect("flush");
        let live = engine
            .subscribe(SearchQuery::new("docs", "rust"))
            .await
            .expect("live");
        metrics.record_search(KIND_ONE_SHOT, true, Duration::from_millis(1));
        metrics.record_search(KIND_LIVE, false, Duration::from_millis(1));

        let text = render(metrics.registry());
        for line in [
            "topgun_search_documents_indexed 1",
            "topgun_search_live_subscriptions 1",
            "topgun_search_commits_total 1",
            "topgun_search_searches_total{kind=\"one_shot\",outcome=\"ok\"} 1",
            "topgun_search_searches_total{kind=\"live\",outcome=\"error\"} 1",
            "topgun_search_search_duration_seconds_count{kind=\"one_shot\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        drop(live);
        engine.shutdown().await;
    }
}
