//! `/api/openapi.json` (generated from the handlers' annotations and the body types) and
//! the Swagger UI at `/api/docs/`, whose assets are compiled into the binary so it renders
//! without internet access.

use super::admin;
use super::api_types::{
    ClusterStatus, ErrorBody, LoginRequest, MapInfo, MapsResponse, NodeStatus, PartitionOwner,
    PolicyList, Settings, SettingsUpdate, StatusResponse, TokenResponse,
};
use crate::rbac::{Action, Effect, Policy, PolicyRequest};
use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The admin API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "TopGun Admin API", description = "Status, authentication and administration of a TopGun gateway."),
    paths(
        openapi_json,
        admin::status,
        admin::login,
        admin::cluster_status,
        admin::maps,
        admin::get_settings,
        admin::put_settings,
        admin::list_policies,
        admin::create_policy,
        admin::delete_policy,
    ),
    components(schemas(
        ErrorBody, LoginRequest, TokenResponse, StatusResponse, NodeStatus, PartitionOwner, ClusterStatus, MapInfo,
        MapsResponse, Settings, SettingsUpdate, PolicyList, Policy, PolicyRequest, Action, Effect,
    )),
    modifiers(&BearerAuth),
    tags((name = "status"), (name = "auth"), (name = "admin", description = "Requires a JWT with role `admin`"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer_auth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The OpenAPI 3.1 document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "status", responses((status = 200, description = "OpenAPI document")))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    Json(doc)
}

const INDEX_HTML: &str = r##"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>TopGun Admin API</title>
  <link rel="stylesheet" href="/api/docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/api/docs/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({ url: "/api/openapi.json", dom_id: "#swagger-ui" });
  </script>
</body>
</html>
"##;

const SWAGGER_JS: &[u8] = include_bytes!("../../vendor/swagger-ui/swagger-ui-bundle.js");
const SWAGGER_CSS: &[u8] = include_bytes!("../../vendor/swagger-ui/swagger-ui.css");

/// `/api/docs` -> `/api/docs/`.
pub async fn docs_redirect() -> Redirect {
    Redirect::to("/api/docs/")
}

/// The Swagger UI page.
pub async fn docs_index() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
    )
        .into_response()
}

/// Swagger UI assets.
pub async fn docs_asset(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "" | "index.html" => docs_index().await,
        "swagger-ui-bundle.js" => (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            SWAGGER_JS,
        )
            .into_response(),
        "swagger-ui.css" => (
            [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
            SWAGGER_CSS,
        )
            .into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
