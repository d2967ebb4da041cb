//! JWT bearer auth. HS256 only (the algorithm is pinned, so `alg: none` or an
//! RS/HS confusion is refused); `exp`, `nbf`, `iss` and `aud` are checked with
//! a small leeway. Tenant, user and scopes come from the claims and nowhere
//! else.

use std::future::{Ready, ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sextant_common::internal_auth::Caller;

use crate::config::AuthConfig;
use crate::error::ApiError;

const ALGORITHM: Algorithm = Algorithm::HS256;
/// Longest accepted tenant or user id; both travel in gRPC metadata.
const MAX_ID_LEN: usize = 128;

/// The claims Sextant reads and the dev token command writes.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub tenant: String,
    /// Space-separated, as in OAuth 2.
    #[serde(default)]
    pub scope: String,
    pub iss: String,
    pub aud: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    pub iat: u64,
}

/// Who is calling: established from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: String,
    pub user: String,
    pub scopes: Vec<String>,
}

impl Principal {
    pub fn caller(&self) -> Caller {
        Caller {
            tenant: self.tenant.clone(),
            user: self.user.clone(),
        }
    }
}

/// Verifies tokens, and signs development tokens with the same key.
pub struct Authenticator {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
}

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Self {
        let secret = config.jwt_secret.expose_secret().as_bytes();
        let mut validation = Validation::new(ALGORITHM);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = config.leeway.as_secs();
        Self {
            decoding: DecodingKey::from_secret(secret),
            encoding: EncodingKey::from_secret(secret),
            validation,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
        }
    }

    pub fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        // Refuse any other algorithm by name before parsing further, so that
        // `alg: none` (which the JWT library cannot even represent) gets a
        // precise error rather than "malformed".
        if let Some(alg) = header_algorithm(token)
            && alg != "HS256"
        {
            return Err(ApiError::unauthenticated("token algorithm not allowed"));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
            let detail = match e.kind() {
                ErrorKind::ExpiredSignature => "token expired",
                ErrorKind::ImmatureSignature => "token not yet valid",
                ErrorKind::InvalidSignature => "token signature is invalid",
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "token algorithm not allowed",
                ErrorKind::InvalidIssuer => "token issuer not accepted",
                ErrorKind::InvalidAudience => "token audience not accepted",
                ErrorKind::MissingRequiredClaim(_) => "token lacks a required claim",
                _ => "token is malformed",
            };
            ApiError::unauthenticated(detail)
        })?;
        let claims = data.claims;
        for (name, value) in [("tenant", &claims.tenant), ("sub", &claims.sub)] {
            if !valid_id(value) {
                return Err(ApiError::unauthenticated(format!(
                    "token claim {name} must be 1 to {MAX_ID_LEN} printable ASCII characters"
                )));
            }
        }
        Ok(Principal {
            tenant: claims.tenant,
            user: claims.sub,
            scopes: claims.scope.split_whitespace().map(str::to_owned).collect(),
        })
    }

    /// Signs a token for `tenant`/`user`, valid for `ttl` from now.
    pub fn issue(&self, tenant: &str, user: &str, scopes: &[String], ttl: Duration) -> anyhow::Result<String> {
        anyhow::ensure!(
            valid_id(tenant),
            "tenant must be 1 to {MAX_ID_LEN} printable ASCII characters"
        );
        anyhow::ensure!(
            valid_id(user),
            "user must be 1 to {MAX_ID_LEN} printable ASCII characters"
        );
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = Claims {
            sub: user.to_owned(),
            tenant: tenant.to_owned(),
            scope: scopes.join(" "),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp: now + ttl.as_secs(),
            nbf: Some(now),
            iat: now,
        };
        Ok(jsonwebtoken::encode(&Header::new(ALGORITHM), &claims, &self.encoding)?)
    }
}

/// The `alg` of a token's header, if the header is readable JSON.
fn header_algorithm(token: &str) -> Option<String> {
    use base64::Engine as _;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some(value.get("alg")?.as_str()?.to_owned())
}

fn valid_id(value: &str) -> bool {
    !value.is_empty() && value.len() <= MAX_ID_LEN && value.bytes().all(|b| b.is_ascii_graphic())
}

/// The bearer token of an `Authorization` header, if the header is a bearer one.
pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The paths of the ecosystem's protocols, whose clients often speak only
/// HTTP basic auth (promtool, many remote-write agents).
const BASIC_AUTH_PREFIXES: &[&str] = &["/prometheus/", "/otlp/"];

/// The token of a request: its bearer token; on the Prometheus and OTLP
/// paths also the password of basic auth (`any-user:TOKEN`), as Grafana
/// Mimir and Grafana Cloud take it.
pub fn request_token(req: &HttpRequest) -> Option<String> {
    if let Some(token) = bearer_token(req) {
        return Some(token.to_owned());
    }
    if !BASIC_AUTH_PREFIXES.iter().any(|p| req.path().starts_with(p)) {
        return None;
    }
    use base64::Engine as _;
    let value = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (_, password) = decoded.split_once(':')?;
    Some(password.to_owned())
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let auth = req
            .app_data::<web::Data<Authenticator>>()
            .expect("Authenticator is registered as app data");
        ready(match request_token(req) {
            None => Err(ApiError::unauthenticated("missing bearer token")),
            Some(token) => auth.verify(&token),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AuthConfig {
        AuthConfig {
            jwt_secret: "0123456789abcdef0123456789abcdef".into(),
            issuer: "sextant".into(),
            audience: "sextant-api".into(),
            leeway: Duration::from_secs(0),
            dev_token_ttl: Duration::from_secs(60),
        }
    }

    #[test]
    fn issued_tokens_verify() {
        let auth = Authenticator::new(&config());
        let token = auth
            .issue("acme", "alice", &["jobs:write".into()], Duration::from_secs(60))
            .unwrap();
        let principal = auth.verify(&token).unwrap();
        assert_eq!(principal.tenant, "acme");
        assert_eq!(principal.user, "alice");
        assert_eq!(principal.scopes, vec!["jobs:write"]);
    }

    #[test]
    fn unsigned_tokens_are_refused_by_algorithm() {
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let token = format!(
            "{}.{}.",
            engine.encode(br#"{"alg":"none","typ":"JWT"}"#),
            engine.encode(br#"{"sub":"alice","tenant":"acme"}"#)
        );
        let err = Authenticator::new(&config()).verify(&token).unwrap_err();
        assert_eq!(err.detail, "token algorithm not allowed");
    }

    #[test]
    fn another_issuer_is_refused() {
        let mut other = config();
        other.issuer = "someone-else".into();
        let token = Authenticator::new(&other)
            .issue("acme", "alice", &[], Duration::from_secs(60))
            .unwrap();
        let err = Authenticator::new(&config()).verify(&token).unwrap_err();
        assert_eq!(err.detail, "token issuer not accepted");
    }

    #[test]
    fn ids_that_cannot_travel_in_metadata_are_refused() {
        let auth = Authenticator::new(&config());
        assert!(auth.issue("ac me", "alice", &[], Duration::from_secs(60)).is_err());
        assert!(auth.issue("", "alice", &[], Duration::from_secs(60)).is_err());
    }
}
