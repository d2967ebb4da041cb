//! Tokens for tests: valid ones from the gateway's own signing code path
//! (same secret, issuer and audience), and the bad ones a frontend might send.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

pub const ISSUER: &str = "sextant";
pub const AUDIENCE: &str = "sextant-api";

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

pub fn sign(secret: &str, claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

pub fn claims(tenant: &str, user: &str) -> serde_json::Value {
    let now = now();
    json!({
        "sub": user, "tenant": tenant, "scope": "",
        "iss": ISSUER, "aud": AUDIENCE,
        "iat": now, "nbf": now, "exp": now + 3600,
    })
}

/// `alg: none` with no signature: must never be accepted.
pub fn unsigned(claims: &serde_json::Value) -> String {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = engine.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = engine.encode(claims.to_string());
    format!("{header}.{body}.")
}
