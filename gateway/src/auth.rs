//! JWT verification (core.md §2.4): HS256 with the shared secret, or RS256 when the
//! secret is an RSA public key in PEM; `exp` required with leeway; `sub` is the principal.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;

pub use crate::rbac::Principal;

/// Why a token was refused; `Display` is the detailed reason.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Signature, algorithm, expiry or format.
    #[error("{0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
    /// `sub` missing or not a string.
    #[error("missing sub claim in JWT")]
    MissingSub,
    /// The secret is unusable (e.g. a malformed PEM).
    #[error("invalid JWT key: {0}")]
    BadKey(String),
    /// Tokens cannot be signed with a public key.
    #[error("authentication not configured")]
    CannotSign,
}

/// Verifies (and, with an HMAC secret, issues) JWTs.
pub struct JwtVerifier {
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
    validation: Validation,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .finish()
    }
}

impl JwtVerifier {
    /// Builds a verifier from the configured secret; literal `\n` sequences become newlines.
    pub fn from_secret(secret: &str, leeway_secs: u64) -> Result<Self, AuthError> {
        let unescaped = secret.replace("\\n", "\n");
        let (decoding, encoding, alg) = if unescaped.starts_with("-----BEGIN") {
            let key = DecodingKey::from_rsa_pem(unescaped.as_bytes())
                .map_err(|e| AuthError::BadKey(e.to_string()))?;
            (key, None, Algorithm::RS256)
        } else {
            let bytes = secret.as_bytes();
            (
                DecodingKey::from_secret(bytes),
                Some(EncodingKey::from_secret(bytes)),
                Algorithm::HS256,
            )
        };
        let mut validation = Validation::new(alg);
        validation.leeway = leeway_secs;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        Ok(JwtVerifier {
            decoding,
            encoding,
            validation,
        })
    }

    /// Checks the token and extracts the principal.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let data =
            jsonwebtoken::decode::<serde_json::Value>(token, &self.decoding, &self.validation)?;
        let claims = data.claims;
        let id = claims
            .get("sub")
            .and_then(|s| s.as_str())
            .ok_or(AuthError::MissingSub)?;
        let roles = claims
            .get("roles")
            .and_then(|r| r.as_array())
            .map(|roles| {
                roles
                    .iter()
                    .filter_map(|r| r.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Principal {
            id: id.to_string(),
            roles,
        })
    }

    /// Issues an HS256 token `{sub, roles, exp}`; refused when the key is a public key.
    pub fn sign(&self, sub: &str, roles: &[&str], ttl_secs: u64) -> Result<String, AuthError> {
        #[derive(Serialize)]
        struct Claims<'a> {
            sub: &'a str,
            roles: &'a [&'a str],
            exp: u64,
        }
        let key = self.encoding.as_ref().ok_or(AuthError::CannotSign)?;
        let exp = topgun_proto::hlc::wall_clock_ms() / 1000 + ttl_secs;
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims { sub, roles, exp },
            key,
        )?)
    }
}

/// Extracts the token of an `Authorization: Bearer <token>` header value.
pub fn bearer_token(header: Option<&http::HeaderValue>) -> Option<&str> {
    let value = header?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?.trim();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_its_own_tokens_and_rejects_others() {
        let verifier = JwtVerifier::from_secret("test-e2e-secret", 60).expect("hmac key");
        let token = verifier.sign("user-1", &["USER"], 3600).expect("signs");
        let principal = verifier.verify(&token).expect("valid");
        assert_eq!(
            principal,
            Principal {
                id: "user-1".into(),
                roles: vec!["USER".into()]
            }
        );

        let other = JwtVerifier::from_secret("another-secret", 60).expect("hmac key");
        assert!(other.verify(&token).is_err(), "wrong secret");
        assert!(verifier.verify("not.a.jwt").is_err());
    }

    #[test]
    fn expired_tokens_are_rejected_beyond_the_leeway() {
        #[derive(Serialize)]
        struct Claims {
            sub: String,
            exp: u64,
        }
        let key = EncodingKey::from_secret(b"s");
        let now = topgun_proto::hlc::wall_clock_ms() / 1000;
        let token = |exp| {
            jsonwebtoken::encode(
                &Header::default(),
                &Claims {
                    sub: "u".into(),
                    exp,
                },
                &key,
            )
            .expect("signs")
        };
        let verifier = JwtVerifier::from_secret("s", 60).expect("hmac key");
        assert!(verifier.verify(&token(now - 30)).is_ok(), "within leeway");
        assert!(verifier.verify(&token(now - 120)).is_err(), "expired");
    }

    #[test]
    fn bearer_prefix_is_exact() {
        let h = |s: &str| http::HeaderValue::from_str(s).expect("ascii");
        assert_eq!(bearer_token(Some(&h("Bearer abc"))), Some("abc"));
        assert_eq!(bearer_token(Some(&h("bearer abc"))), None);
        assert_eq!(bearer_token(Some(&h("Bearer "))), None);
        assert_eq!(bearer_token(None), None);
    }
}
