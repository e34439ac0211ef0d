//! HS256 test tokens like the upstream integration tests mint (core.md §2.10).

use crate::error::BenchError;
use serde::Serialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    roles: [&'a str; 1],
    iat: u64,
    exp: u64,
}

/// A token for principal `sub` with role `USER`, valid for `ttl`, signed with `secret`.
pub fn mint(secret: &str, sub: &str, ttl: Duration) -> Result<String, BenchError> {
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = Claims {
        sub,
        roles: ["USER"],
        iat,
        exp: iat + ttl.as_secs(),
    };
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    Ok(jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_verifies_with_the_secret_and_carries_the_claims() {
        let token = mint("test-e2e-secret", "bench-1", Duration::from_secs(3600)).expect("mints");
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(b"test-e2e-secret"),
            &validation,
        )
        .expect("verifies");
        assert_eq!(data.claims["sub"], "bench-1");
        assert_eq!(data.claims["roles"], serde_json::json!(["USER"]));
        let iat = data.claims["iat"].as_u64().expect("iat");
        assert_eq!(data.claims["exp"].as_u64(), Some(iat + 3600));
        let wrong = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(b"other"),
            &validation,
        );
        assert!(wrong.is_err());
    }
}
