//! Who is calling: API keys (compared in constant time, by their SHA-256) and JWTs (HS256 with a
//! shared secret, RS256 with a public key; `exp` required). A credential arrives as
//! `Authorization: Bearer <key or JWT>`, `X-API-Key: <key>`, gRPC metadata `authorization`, or
//! (WebSockets only, since browsers cannot set headers there) the query parameter
//! `access_token`. Credentials are never logged: a caller is named by [`Principal::id`].

use std::path::Path;

use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::warn;

use crate::config::ApiConfig;
use crate::error::{ApiError, HttpError};

/// Who a request comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// An API key, named by the first 12 hex digits of its SHA-256.
    Key(String),
    /// A JWT's subject (`sub`, or `-` when absent).
    Jwt(String),
    /// Authentication is off (`--insecure-no-auth`).
    Anonymous,
}

impl Principal {
    /// A name for rate limits and logs, never the credential itself.
    pub fn id(&self) -> String {
        match self {
            Principal::Key(h) => format!("key:{h}"),
            Principal::Jwt(s) => format!("jwt:{s}"),
            Principal::Anonymous => "anonymous".into(),
        }
    }
}

#[derive(serde::Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
}

/// Checks credentials.
pub struct Authenticator {
    keys: Vec<[u8; 32]>,
    hs256: Option<DecodingKey>,
    rs256: Option<DecodingKey>,
    disabled: bool,
}

fn sha(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

impl Authenticator {
    /// From `[api]` and the environment (`AURORAQ_API_KEYS`, the variable named by
    /// `jwt_secret_env`). Refuses to build with nothing configured unless auth is off.
    pub fn from_config(cfg: &ApiConfig, env: impl Fn(&str) -> Option<String>) -> Result<Self, ApiError> {
        let mut keys: Vec<[u8; 32]> = cfg.keys.iter().map(|k| sha(k.0.trim())).collect();
        if let Some(list) = env("AURORAQ_API_KEYS") {
            for k in list.split(',').map(str::trim).filter(|k| !k.is_empty()) {
                if k.len() < 16 {
                    return Err(ApiError::Auth(
                        "AURORAQ_API_KEYS: every key must have at least 16 characters".into(),
                    ));
                }
                keys.push(sha(k));
            }
        }
        keys.sort_unstable();
        keys.dedup();
        let hs256 = match cfg.jwt_secret_env.trim() {
            "" => None,
            // An empty variable is an unset one (compose passes `${VAR:-}`).
            var => match env(var).filter(|s| !s.is_empty()) {
                Some(s) if s.len() >= 32 => Some(DecodingKey::from_secret(s.as_bytes())),
                Some(_) => {
                    return Err(ApiError::Auth(format!(
                        "{var}: the JWT secret must have at least 32 bytes"
                    )))
                }
                None => None,
            },
        };
        let rs256 = match cfg.jwt_public_key.trim() {
            "" => None,
            path => {
                let pem = std::fs::read(Path::new(path))
                    .map_err(|e| ApiError::Auth(format!("api.jwt_public_key {path}: {e}")))?;
                Some(DecodingKey::from_rsa_pem(&pem).map_err(|e| {
                    ApiError::Auth(format!(
                        "api.jwt_public_key {path}: not an RSA public key in PEM: {e}"
                    ))
                })?)
            }
        };
        if cfg.insecure_no_auth {
            warn!("authentication is OFF (--insecure-no-auth): anyone who reaches the port can use the API");
        } else if keys.is_empty() && hs256.is_none() && rs256.is_none() {
            return Err(ApiError::Auth(format!(
                "no credentials are configured, and the API does not run open by default. Set API keys \
                 (AURORAQ_API_KEYS=key1,key2, at least 16 characters each, or [api] keys), a JWT secret \
                 ({}=<32+ bytes> for HS256) or a public key ([api] jwt_public_key for RS256); or pass \
                 --insecure-no-auth for local use",
                if cfg.jwt_secret_env.is_empty() {
                    "AURORAQ_JWT_SECRET"
                } else {
                    &cfg.jwt_secret_env
                }
            )));
        }
        Ok(Authenticator {
            keys,
            hs256,
            rs256,
            disabled: cfg.insecure_no_auth,
        })
    }

    pub fn disabled(&self) -> bool {
        self.disabled
    }

    /// Checks a credential (an API key or a JWT).
    pub fn check(&self, credential: Option<&str>) -> Result<Principal, HttpError> {
        if self.disabled {
            return Ok(Principal::Anonymous);
        }
        let Some(token) = credential.map(str::trim).filter(|t| !t.is_empty()) else {
            return Err(HttpError::unauthorized(
                "missing credentials: send Authorization: Bearer <API key or JWT>, or X-API-Key",
            ));
        };
        if token.matches('.').count() == 2 {
            return self.check_jwt(token);
        }
        let h = sha(token);
        // Constant time per key, and every key is compared whatever matches.
        let mut found = subtle::Choice::from(0);
        for k in &self.keys {
            found |= k.ct_eq(&h);
        }
        if bool::from(found) {
            Ok(Principal::Key(
                h[..6].iter().map(|b| format!("{b:02x}")).collect(),
            ))
        } else {
            Err(HttpError::unauthorized("invalid API key"))
        }
    }

    fn check_jwt(&self, token: &str) -> Result<Principal, HttpError> {
        let header = decode_header(token).map_err(|_| HttpError::unauthorized("malformed JWT"))?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref(),
            Algorithm::RS256 => self.rs256.as_ref(),
            _ => None,
        }
        .ok_or_else(|| {
            HttpError::unauthorized(format!("JWT algorithm {:?} is not accepted here", header.alg))
        })?;
        let mut v = Validation::new(header.alg);
        v.set_required_spec_claims(&["exp"]);
        v.leeway = 5;
        let data = decode::<Claims>(token, key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            HttpError::unauthorized(match e.kind() {
                K::ExpiredSignature => "JWT expired",
                K::MissingRequiredClaim(_) => "JWT has no exp claim",
                K::InvalidSignature => "JWT signature does not verify",
                _ => "invalid JWT",
            })
        })?;
        Ok(Principal::Jwt(data.claims.sub.unwrap_or_else(|| "-".into())))
    }
}

/// The credential in an `Authorization` value (`Bearer <key or JWT>`, or the bare key) or else an
/// `X-API-Key` value: the one rule of HTTP headers and gRPC metadata.
pub fn credential_from(authorization: Option<&str>, api_key: Option<&str>) -> Option<String> {
    if let Some(v) = authorization.map(str::trim) {
        let token = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .unwrap_or(v)
            .trim();
        if !token.is_empty() && !token.eq_ignore_ascii_case("bearer") {
            return Some(token.to_owned());
        }
    }
    api_key
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The credential of an HTTP request (see [`credential_from`]).
pub fn credential(headers: &axum::http::HeaderMap) -> Option<String> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    credential_from(get("authorization"), get("x-api-key"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn cfg(keys: &[&str]) -> ApiConfig {
        ApiConfig {
            keys: keys.iter().map(|k| Secret(k.to_string())).collect(),
            ..ApiConfig::default()
        }
    }

    #[test]
    fn refuses_to_start_open() {
        let e = Authenticator::from_config(&cfg(&[]), |_| None)
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("AURORAQ_API_KEYS") && e.contains("--insecure-no-auth")));
        let open = ApiConfig {
            insecure_no_auth: true,
            ..ApiConfig::default()
        };
        let a = Authenticator::from_config(&open, |_| None).expect("open");
        assert_eq!(a.check(None).ok(), Some(Principal::Anonymous));
    }

    #[test]
    fn keys_from_config_and_env() {
        let a = Authenticator::from_config(&cfg(&["k-config-0123456789"]), |v| {
            (v == "AURORAQ_API_KEYS").then(|| "k-env-0123456789ab, ".to_string())
        })
        .expect("auth");
        assert!(a.check(Some("k-config-0123456789")).is_ok());
        assert!(a.check(Some("k-env-0123456789ab")).is_ok());
        assert_eq!(
            a.check(Some("k-nope-0123456789"))
                .err()
                .map(|e| e.status.as_u16()),
            Some(401)
        );
        assert_eq!(a.check(None).err().map(|e| e.status.as_u16()), Some(401));
        let id = a
            .check(Some("k-config-0123456789"))
            .map(|p| p.id())
            .unwrap_or_default();
        assert!(id.starts_with("key:") && !id.contains("k-config"));
        assert!(Authenticator::from_config(&cfg(&[]), |_| Some("short".into())).is_err());
    }
}
