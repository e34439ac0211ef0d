//! Prometheus metrics of the gateway (http-admin-ops.md §3.3, plus gRPC client latency).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every metric the gateway records, registered in one registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Open client WebSocket connections.
    pub active_connections: IntGauge,
    /// Inbound messages by type.
    pub messages_in: IntCounterVec,
    /// Outbound messages by type.
    pub messages_out: IntCounterVec,
    /// Operations by service and outcome.
    pub operations: IntCounterVec,
    /// Operation latency by service.
    pub operation_duration: HistogramVec,
    /// Failed operations by service and error kind.
    pub operation_errors: IntCounterVec,
    /// Internal gRPC call latency by service and method.
    pub grpc_client_duration: HistogramVec,
    /// Connections closed because they could not keep up.
    pub slow_consumer_disconnects: IntCounter,
    /// Frames that could not be decoded.
    pub bad_frames: IntCounterVec,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let buckets = vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            2.5, 5.0, 10.0,
        ];
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("static metric definition");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric name");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.clone()),
                labels,
            )
            .expect("static metric definition");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric name");
            h
        };
        let active_connections = IntGauge::new(
            "topgun_active_connections",
            "Open client WebSocket connections",
        )
        .expect("static metric definition");
        registry
            .register(Box::new(active_connections.clone()))
            .expect("unique metric name");
        let slow_consumer_disconnects = IntCounter::new(
            "topgun_slow_consumer_disconnects_total",
            "Connections closed because their outbound queue stayed full",
        )
        .expect("static metric definition");
        registry
            .register(Box::new(slow_consumer_disconnects.clone()))
            .expect("unique metric name");
        Metrics {
            messages_in: counter(
                "topgun_messages_in_total",
                "Inbound client messages",
                &["type"],
            ),
            messages_out: counter(
                "topgun_messages_out_total",
                "Outbound client messages",
                &["type"],
            ),
            operations: counter(
                "topgun_operations_total",
                "Completed operations",
                &["service", "outcome"],
            ),
            operation_duration: histogram(
                "topgun_operation_duration_seconds",
                "Operation latency",
                &["service"],
            ),
            operation_errors: counter(
                "topgun_operation_errors_total",
                "Failed operations",
                &["service", "error"],
            ),
            grpc_client_duration: histogram(
                "topgun_grpc_client_duration_seconds",
                "Latency of internal gRPC calls",
                &["service", "method"],
            ),
            bad_frames: counter(
                "topgun_bad_frames_total",
                "Frames rejected as invalid",
                &["reason"],
            ),
            active_connections,
            slow_consumer_disconnects,
            registry,
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on invalid metric families, which we never build.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
