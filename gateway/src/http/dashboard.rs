//! The admin dashboard at `/admin`: static files from `TOPGUN_ADMIN_DIR` (default: the
//! dashboard shipped in the repository), with SPA fallback to `index.html`.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::path::{Component, PathBuf};
use std::sync::Arc;

/// Folder the dashboard is served from.
#[derive(Debug, Clone)]
pub struct DashboardDir(pub Arc<PathBuf>);

impl DashboardDir {
    /// The configured folder, else `./admin-dashboard`, else the repository copy.
    pub fn resolve(configured: Option<PathBuf>) -> Self {
        let dir = configured.unwrap_or_else(|| {
            let local = PathBuf::from("admin-dashboard");
            if local.join("index.html").exists() {
                local
            } else {
                PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../admin-dashboard"))
            }
        });
        DashboardDir(Arc::new(dir))
    }
}

fn content_type(path: &std::path::Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

async fn serve_file(dir: &std::path::Path, relative: &str) -> Response {
    // Only plain components: no `..`, no absolute paths.
    let safe = std::path::Path::new(relative)
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    let mut path = dir.join(if safe { relative } else { "" });
    if path.is_dir() {
        path = path.join("index.html");
    }
    let path = match tokio::fs::metadata(&path).await {
        Ok(meta) if meta.is_file() => path,
        // SPA fallback: client-side routes resolve to index.html.
        _ => dir.join("index.html"),
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => (
            [(header::CONTENT_TYPE, content_type(&path))],
            Body::from(bytes),
        )
            .into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `/admin` and `/admin/`.
pub async fn index(State(dir): State<DashboardDir>) -> Response {
    serve_file(&dir.0, "").await
}

/// `/admin/{*path}`.
pub async fn asset(State(dir): State<DashboardDir>, Path(path): Path<String>) -> Response {
    serve_file(&dir.0, &path).await
}
