//! `ApiError`: the one place that turns failures into status codes and the
//! contract's `{"error":{"code","message","field"}}` body (§2).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pufa_core::schema::Rejection;
use pufa_core::wire::{ErrorBody, ErrorObject, PUSH_MUTATIONS_MAX};

use crate::store::StoreError;

/// A request that cannot be answered with 2xx.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadJson {
        message: String,
        field: Option<String>,
    },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("device_id in the body is not this token's device")]
    DeviceMismatch,
    #[error("{0}")]
    NotFound(String),
    #[error("a push carries at most {PUSH_MUTATIONS_MAX} mutations, this one has {0}")]
    BatchTooLarge(usize),
    #[error("the request body is over this server's limit (--max-body-bytes, default 8 MiB; a gzip-encoded body counts decompressed)")]
    BodyTooLarge,
    /// A request body in a `Content-Encoding` the server does not read.
    #[error("{0}")]
    UnsupportedEncoding(String),
    #[error("{message}")]
    InvalidQuery {
        message: String,
        field: Option<String>,
    },
    #[error("{message}")]
    InvalidOrgTree {
        message: String,
        field: Option<String>,
    },
    /// A value judged by a field rule (token `org_unit`, a resolution).
    #[error("{}", .0.message)]
    Rejected(Rejection),
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    /// Too many requests for this token or address: retry after the given seconds.
    #[error("too many requests; retry in {0} s")]
    RateLimited(u64),
    #[error("the request took longer than {0} s")]
    Timeout(u64),
    /// The client sent its request body too slowly (`--body-timeout-secs`
    /// and `--body-min-bytes-per-sec`).
    #[error("the request body did not arrive in time ({0} s, plus 1 s for every --body-min-bytes-per-sec bytes received); send it again")]
    BodyTimeout(u64),
    /// Storage cannot take writes now (disk full, IO error): retry later.
    #[error("{0}")]
    Unavailable(String),
    /// An export too large for its format (XLSX is built in memory).
    #[error("this export has {rows} rows, more than the {max} an XLSX export holds; download CSV instead")]
    ExportTooLarge { rows: usize, max: usize },
    /// Too many failed sign-ins for one username: retry after the seconds.
    #[error("too many failed sign-ins for this username; try again in {} min", .0.div_ceil(60))]
    SignInLocked(u64),
    /// A name that must be unique is taken (an account's username).
    #[error("{message}")]
    AlreadyExists {
        message: String,
        field: Option<String>,
    },
    /// Something this deployment does not offer (e.g. an online backup
    /// when the store is PostgreSQL).
    #[error("{0}")]
    NotImplemented(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad_json(message: impl Into<String>) -> ApiError {
        ApiError::BadJson {
            message: message.into(),
            field: None,
        }
    }

    pub fn invalid_query(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::InvalidQuery {
            message: message.into(),
            field: Some(field.to_string()),
        }
    }

    fn parts(&self) -> (StatusCode, &str, Option<&str>) {
        use ApiError::*;
        match self {
            BadJson { field, .. } => (StatusCode::BAD_REQUEST, "bad_json", field.as_deref()),
            Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", None),
            DeviceMismatch => (StatusCode::FORBIDDEN, "device_mismatch", Some("device_id")),
            NotFound(_) => (StatusCode::NOT_FOUND, "not_found", None),
            BatchTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "batch_too_large",
                Some("mutations"),
            ),
            BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", None),
            UnsupportedEncoding(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                None,
            ),
            ExportTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "export_too_large", None),
            InvalidQuery { field, .. } => {
                (StatusCode::BAD_REQUEST, "invalid_query", field.as_deref())
            }
            InvalidOrgTree { field, .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_org_tree",
                field.as_deref(),
            ),
            Rejected(r) => (StatusCode::BAD_REQUEST, r.code.as_str(), r.field.as_deref()),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None),
            RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", None),
            Timeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "timeout", None),
            BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "body_timeout", None),
            Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", None),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
            NotImplemented(_) => (StatusCode::NOT_IMPLEMENTED, "not_implemented", None),
            SignInLocked(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", None),
            AlreadyExists { field, .. } => {
                (StatusCode::CONFLICT, "already_exists", field.as_deref())
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Unavailable(m) => ApiError::Unavailable(m),
            StoreError::Unsupported(m) => ApiError::NotImplemented(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, field) = self.parts();
        if status.is_server_error() {
            tracing::error!(code, error = %self, "request failed");
        }
        let body = ErrorBody {
            error: ErrorObject {
                code: code.to_string(),
                message: self.to_string(),
                field: field.map(str::to_string),
            },
        };
        let mut resp = (status, Json(body)).into_response();
        let retry_after = match self {
            ApiError::Unavailable(_) | ApiError::Timeout(_) => Some(1),
            ApiError::RateLimited(secs) | ApiError::SignInLocked(secs) => Some(secs),
            _ => None,
        };
        if let ApiError::UnsupportedEncoding(_) = self {
            // RFC 7694: the codings the server does read.
            resp.headers_mut().insert(
                axum::http::header::ACCEPT_ENCODING,
                axum::http::HeaderValue::from_static(crate::encoding::REQUEST_ENCODINGS),
            );
        }
        if let Some(secs) = retry_after {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs),
            );
        }
        resp
    }
}
