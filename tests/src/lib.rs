//! Harness for whole-system tests: locate the built binaries, start them as real
//! processes on loopback ports, wait for readiness, and tear them down even when a test
//! fails (processes are killed on drop). Plus a MsgPack WebSocket client written from
//! the protocol spec and JWT minting with the test secret.

pub mod postgres;
pub mod process;
pub mod suite;
pub mod ws_client;

pub use process::{bin_path, Service, TestServer};
pub use suite::{Layout, Storage, Suite};
pub use ws_client::{unpack_batch, WsClient};

/// The JWT secret of `test-server`.
pub const TEST_JWT_SECRET: &str = "test-e2e-secret";

/// Signs an HS256 token `{sub, roles, iat, exp}` valid for `ttl_secs` (negative = expired).
pub fn token_with(secret: &str, sub: &str, roles: &[&str], ttl_secs: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let claims =
        serde_json::json!({ "sub": sub, "roles": roles, "iat": now, "exp": now + ttl_secs });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("signing a test token")
}

/// A valid one-hour test token for `sub` with role USER.
pub fn token(sub: &str) -> String {
    token_with(TEST_JWT_SECRET, sub, &["USER"], 3600)
}

/// A valid one-hour admin token.
pub fn admin_token() -> String {
    token_with(TEST_JWT_SECRET, "admin", &["admin"], 3600)
}

/// Current epoch millis.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Polls `check` every 50 ms until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: std::time::Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
