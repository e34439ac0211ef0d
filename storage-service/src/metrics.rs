//! Prometheus metrics of the storage service, served on its ops port
//! (`STORAGE_HTTP_ADDR`). Recorded by the gRPC front ([`crate::service`]) around each
//! store call, so every backend is measured the same way.

use crate::error::{ErrorClass, StorageError};
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};
use std::time::Duration;

/// The storage service's metrics and the registry they are registered in.
#[derive(Debug, Clone)]
pub struct StorageMetrics {
    registry: Registry,
    write_batches: IntCounter,
    mutations: IntCounter,
    rows_written: IntCounter,
    batch_write_duration: HistogramVec,
    load_calls: IntCounterVec,
    errors: IntCounterVec,
}

impl StorageMetrics {
    /// Creates the metrics in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("static metric definition");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric name");
            c
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("static metric definition");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric name");
            c
        };
        let batch_write_duration = HistogramVec::new(
            HistogramOpts::new(
                "topgun_storage_batch_write_duration_seconds",
                "Latency of committing one WriteBatch (one transaction), by backend",
            )
            .buckets(topgun_ops::LATENCY_BUCKETS.to_vec()),
            &["backend"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(batch_write_duration.clone()))
            .expect("unique metric name");
        StorageMetrics {
            write_batches: counter(
                "topgun_storage_write_batches_total",
                "WriteBatch calls committed",
            ),
            mutations: counter(
                "topgun_storage_mutations_total",
                "Mutations (upserts and deletes) in committed WriteBatch calls",
            ),
            rows_written: counter(
                "topgun_storage_rows_written_total",
                "Rows inserted, replaced or deleted by committed batches (upserts that lose \
                 to the LWW guard and deletes that find nothing are not counted; the null \
                 store writes none)",
            ),
            load_calls: counter_vec(
                "topgun_storage_load_calls_total",
                "Read calls (load_keys, load_map, list_maps)",
                &["call"],
            ),
            errors: counter_vec(
                "topgun_storage_errors_total",
                "Failed calls by call and error class (retryable, invalid_input, internal)",
                &["call", "class"],
            ),
            batch_write_duration,
            registry,
        }
    }

    /// The registry to serve.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A committed batch of `mutations`, of which `written` changed a row.
    pub fn record_write(&self, backend: &str, mutations: usize, written: u64, took: Duration) {
        self.write_batches.inc();
        self.mutations.inc_by(mutations as u64);
        self.rows_written.inc_by(written);
        self.observe_write_latency(backend, took);
    }

    /// Creates the latency series of `backend` at zero, so it is exposed before the
    /// first write.
    pub fn prepare_backend(&self, backend: &str) {
        let _ = self.batch_write_duration.with_label_values(&[backend]);
    }

    /// How long a batch took to commit or fail at the store.
    pub fn observe_write_latency(&self, backend: &str, took: Duration) {
        self.batch_write_duration
            .with_label_values(&[backend])
            .observe(took.as_secs_f64());
    }

    /// One read call (`load_keys`, `load_map`, `list_maps`).
    pub fn record_load(&self, call: &str) {
        self.load_calls.with_label_values(&[call]).inc();
    }

    /// A failed call, by its error's class.
    pub fn record_error(&self, call: &str, err: &StorageError) {
        self.errors
            .with_label_values(&[call, class_label(err.class())])
            .inc();
    }
}

impl Default for StorageMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The `class` label of an error class.
fn class_label(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::Retryable => "retryable",
        ErrorClass::InvalidInput => "invalid_input",
        ErrorClass::Internal => "internal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_writes_loads_and_errors() {
        let metrics = StorageMetrics::new();
        metrics.record_write("sqlite", 3, 2, Duration::from_millis(4));
        metrics.record_load("load_map");
        metrics.record_error("write_batch", &StorageError::invalid("key", "empty"));
        metrics.record_error(
            "list_maps",
            &StorageError::Unavailable(sqlx::Error::PoolTimedOut),
        );
        let mut out = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &metrics.registry().gather(),
            &mut out,
        )
        .expect("encodes");
        let text = String::from_utf8(out).expect("utf-8");
        for line in [
            "topgun_storage_write_batches_total 1",
            "topgun_storage_mutations_total 3",
            "topgun_storage_rows_written_total 2",
            "topgun_storage_batch_write_duration_seconds_count{backend=\"sqlite\"} 1",
            "topgun_storage_load_calls_total{call=\"load_map\"} 1",
            "topgun_storage_errors_total{call=\"write_batch\",class=\"invalid_input\"} 1",
            "topgun_storage_errors_total{call=\"list_maps\",class=\"retryable\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
