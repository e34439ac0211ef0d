//! HTTP routes: POST `/sync`, health and metrics, the admin API and dashboard.

pub mod admin;
pub mod api_types;
pub mod dashboard;
pub mod health;
pub mod openapi;
pub mod rate_limit;
pub mod sync;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// JSON error body `{code, message, field?}` (http-admin-ops.md §1.3); `error` mirrors
/// `message` for the dashboard, which reads that key.
pub fn json_error(status: StatusCode, message: impl Into<String>, field: Option<&str>) -> Response {
    let message = message.into();
    let mut body =
        serde_json::json!({ "code": status.as_u16(), "message": message, "error": message });
    if let Some(field) = field {
        body["field"] = serde_json::Value::from(field);
    }
    (status, Json(body)).into_response()
}
