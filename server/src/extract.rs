//! Request extractors that fail with the contract's error bodies instead of
//! axum's plain-text rejections.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::auth::{self, Principal};
use crate::error::ApiError;
use crate::store::Device;
use crate::strict_json::Strict;
use crate::AppState;

/// A JSON body. Read as JSON whatever the `Content-Type` says (§0), so that
/// a plain `curl -d` works. Over the body limit: `body_too_large`; not JSON
/// or the wrong shape: `bad_json`, naming where.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::BodyTooLarge
            } else {
                ApiError::bad_json(format!("could not read the body: {e}"))
            }
        })?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize(Strict(&mut *de)) {
            // The whole body is one JSON value: `{…}}}` is bad_json too.
            Ok(v) => match de.end() {
                Ok(()) => Ok(ApiJson(v)),
                Err(e) => Err(ApiError::BadJson {
                    message: e.to_string(),
                    field: None,
                }),
            },
            Err(e) => {
                let path = e.path().to_string();
                let field = (path != ".").then(|| path.clone());
                let message = if path == "." {
                    e.inner().to_string()
                } else {
                    format!("{path}: {}", e.inner())
                };
                Err(ApiError::BadJson { message, field })
            }
        }
    }
}

/// Parses one JSON value, naming `prefix` and the path inside it on error.
///
/// # Errors
/// `bad_json` with the path as `field`.
pub fn parse_at<T: DeserializeOwned>(prefix: &str, text: &str) -> Result<T, ApiError> {
    // Tracking the path costs about a fifth of parsing a push; only a body
    // that fails needs it, so that one is parsed again to name the place.
    let de = &mut serde_json::Deserializer::from_str(text);
    if let Ok(v) = crate::strict_json::deserialize(&mut *de) {
        if de.end().is_ok() {
            return Ok(v);
        }
    }
    let de = &mut serde_json::Deserializer::from_str(text);
    let v = serde_path_to_error::deserialize(Strict(&mut *de)).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." {
            prefix.to_string()
        } else {
            format!("{prefix}.{inner}")
        };
        ApiError::BadJson {
            message: format!("{path}: {}", e.inner()),
            field: Some(path),
        }
    })?;
    // `parse_at` reads values cut out of a larger body (RawValue), where
    // nothing can follow; the check keeps it honest for any other caller.
    de.end().map_err(|e| ApiError::BadJson {
        message: format!("{prefix}: {e}"),
        field: Some(prefix.to_string()),
    })?;
    Ok(v)
}

/// The bearer token of a request.
fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer <token>".into()))?;
    header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::Unauthorized("the Authorization header must be Bearer <token>".into())
        })
}

/// Whoever is behind `Authorization: Bearer <token>`: a device, or a
/// person's sign-in session.
pub struct Signed(pub Principal);

impl FromRequestParts<AppState> for Signed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        match auth::authenticate(state, token).await? {
            Some(p) => Ok(Signed(p)),
            None => Err(ApiError::Unauthorized(
                "unknown, revoked or expired token".into(),
            )),
        }
    }
}

/// The device a caller acts as: a device's own, or for a sign-in session
/// the person's role and unit.
pub struct Caller(pub Device);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Signed(p) = Signed::from_request_parts(parts, state).await?;
        Ok(Caller(p.into_acting()))
    }
}

/// A device's own token: what push, pull and checksum need. A person's
/// sign-in session is `forbidden` there (it has no outbox, no cursor, and
/// must not appear as a device).
pub struct DeviceCaller(pub Device);

impl FromRequestParts<AppState> for DeviceCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Signed::from_request_parts(parts, state).await?.0 {
            Principal::Device(d) => Ok(DeviceCaller(d)),
            Principal::Session { .. } => Err(ApiError::Forbidden(
                "a sign-in session cannot push, pull or checksum: sync with a device token".into(),
            )),
        }
    }
}

/// The client's address as the limits see it ([`crate::limits::client_ip`]):
/// the socket's peer, or behind `--trust-proxy` the last `X-Forwarded-For`
/// hop. `None` only for a request that did not come over a socket.
pub struct ClientIp(pub Option<std::net::IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, std::convert::Infallible> {
        Ok(ClientIp(crate::limits::client_ip(
            &parts.headers,
            &parts.extensions,
            state.config.trust_proxy,
        )))
    }
}

/// Query parameters as text; each endpoint parses its own.
pub struct Params(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Params(q))
            .map_err(|e| ApiError::InvalidQuery {
                message: format!("malformed query string: {e}"),
                field: None,
            })
    }
}

impl Params {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A non-negative integer parameter. A number too large for 64 bits is
    /// still a number: it saturates (a `limit` of 10^30 means "the most").
    ///
    /// # Errors
    /// `invalid_query` when present and not a whole number.
    pub fn u64(&self, key: &str) -> Result<Option<u64>, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::invalid_query(
                key,
                format!("{key} must be a whole number ≥ 0, got {v:?}"),
            ));
        }
        Ok(Some(v.parse::<u64>().unwrap_or(u64::MAX)))
    }

    /// A `limit`: default when absent, clamped to `max`, `invalid_query`
    /// for 0 or a non-number.
    pub fn limit(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.u64("limit")? {
            None => Ok(default),
            Some(0) => Err(ApiError::invalid_query("limit", "limit must be at least 1")),
            Some(n) => Ok((n.min(max as u64)) as usize),
        }
    }
}
