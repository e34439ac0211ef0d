//! The four routes of the ops port.

use crate::error::OpsError;
use crate::health::HealthState;
use crate::METRICS_CONTENT_TYPE;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus::{Encoder, Registry, TextEncoder};

/// What the handlers read.
#[derive(Clone)]
struct Ops {
    registry: Registry,
    health: HealthState,
}

/// `/health`, `/health/live`, `/health/ready`, `/metrics`; everything else is 404.
pub(crate) fn router(registry: Registry, health: HealthState) -> Router {
    Router::new()
        .route("/health", get(health_doc))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(Ops { registry, health })
}

/// Service name, state, uptime and the service's own fields.
async fn health_doc(State(ops): State<Ops>) -> Json<serde_json::Value> {
    Json(ops.health.snapshot())
}

/// 200 whenever the process answers at all.
async fn live() -> &'static str {
    "ok"
}

/// 200 only while ready; 503 while starting and while draining.
async fn ready(State(ops): State<Ops>) -> (StatusCode, &'static str) {
    let state = ops.health.state();
    let status = if ops.health.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, state.as_str())
}

/// Prometheus text exposition of the registry.
async fn metrics(State(ops): State<Ops>) -> Response {
    // Sampled collectors take locks and may touch index files: gather off the runtime.
    let registry = ops.registry;
    let rendered = tokio::task::spawn_blocking(move || render(&registry))
        .await
        .map_err(|e| OpsError::Render(e.to_string()))
        .and_then(|r| r);
    match rendered {
        Ok(text) => ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "cannot render metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response()
        }
    }
}

/// Encodes every metric family of `registry` in the text format.
pub(crate) fn render(registry: &Registry) -> Result<String, OpsError> {
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .map_err(|e| OpsError::Render(e.to_string()))?;
    String::from_utf8(out).map_err(|e| OpsError::Render(e.to_string()))
}
