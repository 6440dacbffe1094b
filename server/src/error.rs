//! `ApiError`: the one place that turns failures into status codes and the
//! contract's `{"error":{"code","message","field"}}` body (§2). Services
//! answer with a [`ServiceError`], turned into an `ApiError` here, once.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pufa_core::schema::Rejection;
use pufa_core::wire::{ErrorBody, ErrorObject, PUSH_MUTATIONS_MAX};

use crate::service_error::ServiceError;
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
    /// A period step its period's state does not allow (`period_state`),
    /// or one under an approved covering period (`period_locked`).
    #[error("{message}")]
    PeriodRefused { code: &'static str, message: String },
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
            PeriodRefused { code, .. } => (StatusCode::CONFLICT, code, Some("period")),
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

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> ApiError {
        use ServiceError::*;
        let message = e.to_string();
        match e {
            NeedsAdmin
            | NeedsCoordinator
            | OutOfScope { .. }
            | FieldCodesOnly
            | AccountDisabled
            | NeedsApprover { .. }
            | NotASession => ApiError::Forbidden(message),
            BadCredentials | InvalidCode => ApiError::Unauthorized(message),
            NoSuchUnit { .. }
            | NoSuchAccount { .. }
            | NoDeviceToReenrol { .. }
            | NoSuchCode { .. }
            | NoSuchRecord { .. }
            | NoSuchExport { .. } => ApiError::NotFound(message),
            BadInput { field, message } => ApiError::BadJson {
                message,
                field: Some(field.to_string()),
            },
            Rejected(r) => ApiError::Rejected(r),
            BadQuery { param, message, .. } => ApiError::invalid_query(param, message),
            PeriodRefused { code, message, .. } => ApiError::PeriodRefused { code, message },
            AccountExists { .. } => ApiError::AlreadyExists {
                message,
                field: Some("username".into()),
            },
            ExportTooLarge { rows, max } => ApiError::ExportTooLarge { rows, max },
            SignInLocked { secs } => ApiError::SignInLocked(secs),
            Busy { secs } | TooManyFailedEnrolments { secs } | TooManyOpenCodes { secs } => {
                ApiError::RateLimited(secs)
            }
            Store(e) => e.into(),
            Internal(m) => ApiError::Internal(m),
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
                locked: match &self {
                    ApiError::Rejected(r) => r.lock.as_deref().cloned(),
                    _ => None,
                },
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

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;
    use pufa_core::schema::{RejectCode, Rejection};

    use super::*;
    use crate::service_error::tests::{assert_every_variant, id, unknown_unit};

    /// What the JSON API answers for a service's error.
    struct Answer {
        status: StatusCode,
        retry_after: Option<u64>,
        body: serde_json::Value,
    }

    async fn answer(e: ServiceError) -> Answer {
        let resp = ApiError::from(e).into_response();
        let retry_after = resp
            .headers()
            .get(axum::http::header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().parse().unwrap());
        let status = resp.status();
        let bytes = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        Answer {
            status,
            retry_after,
            body: serde_json::from_slice(&bytes).unwrap(),
        }
    }

    fn body(code: &str, message: &str, field: Option<&str>) -> serde_json::Value {
        serde_json::json!({ "error": { "code": code, "message": message, "field": field } })
    }

    #[tokio::test]
    async fn every_service_error_has_its_status_code_and_message() {
        use ServiceError::*;
        let s = |t: &str| t.to_string();
        let cases: Vec<(ServiceError, StatusCode, Option<u64>, serde_json::Value)> = vec![
            (NeedsAdmin, StatusCode::FORBIDDEN, None, body("forbidden", "this needs an admin token", None)),
            (NeedsCoordinator, StatusCode::FORBIDDEN, None, body("forbidden", "this needs a coordinator or admin token", None)),
            (OutOfScope { unit: s("y1") }, StatusCode::FORBIDDEN, None, body("forbidden", "org unit \"y1\" is outside your scope", None)),
            (FieldCodesOnly, StatusCode::FORBIDDEN, None, body("forbidden", "a coordinator makes enrolment codes for field devices only", None)),
            (AccountDisabled, StatusCode::FORBIDDEN, None, body("forbidden", "this account is disabled; ask an admin to enable it", None)),
            (NotASession, StatusCode::FORBIDDEN, None, body("forbidden", "this is a device token; only a sign-in session signs out (revoke a device with DELETE /v1/admin/tokens/{device_id})", None)),
            (BadCredentials, StatusCode::UNAUTHORIZED, None, body("unauthorized", "unknown username or wrong password", None)),
            (InvalidCode, StatusCode::UNAUTHORIZED, None, body("unauthorized", "invalid or expired enrolment code", None)),
            (NoSuchUnit { unit: s("y1") }, StatusCode::NOT_FOUND, None, body("not_found", "no org unit \"y1\"", None)),
            (NoSuchAccount { username: s("wang") }, StatusCode::NOT_FOUND, None, body("not_found", "no account \"wang\"", None)),
            (NoDeviceToReenrol { id: id() }, StatusCode::NOT_FOUND, None, body("not_found", &format!("no device {} to re-enrol", id()), None)),
            (NoSuchCode { id: id() }, StatusCode::NOT_FOUND, None, body("not_found", &format!("no open enrolment code {} in your scope", id()), None)),
            (NoSuchRecord { id: id() }, StatusCode::NOT_FOUND, None, body("not_found", &format!("no live record {} in your scope", id()), None)),
            (NoSuchExport { file: s("x.pdf") }, StatusCode::NOT_FOUND, None, body("not_found", "no export \"x.pdf\": use <lecture|library_corner|demo_site|legal_understander|totals>.<csv|xlsx>", None)),
            (BadInput { field: "label", message: s("label is too long") }, StatusCode::BAD_REQUEST, None, body("bad_json", "label is too long", Some("label"))),
            (unknown_unit(), StatusCode::BAD_REQUEST, None, body("unknown_org_unit", "no org unit \"x\"", Some("org_unit"))),
            (Rejected(Rejection::new(RejectCode::MissingField, Some("org_unit"), "org_unit is required")), StatusCode::BAD_REQUEST, None, body("missing_field", "org_unit is required", Some("org_unit"))),
            (ServiceError::bad_query("year", Some("20x"), "year must be a year"), StatusCode::BAD_REQUEST, None, body("invalid_query", "year must be a year", Some("year"))),
            (AccountExists { username: s("wang") }, StatusCode::CONFLICT, None, body("already_exists", "there is already an account \"wang\"", Some("username"))),
            (NeedsApprover { unit: s("x"), action: "approve" }, StatusCode::FORBIDDEN, None, body("forbidden", "only an admin or a coordinator above \"x\" may approve its periods", None)),
            (PeriodRefused { code: "period_state", message: s("period 2020 of \"x\" is approved: it cannot be approved"), state: None, lock: None }, StatusCode::CONFLICT, None, body("period_state", "period 2020 of \"x\" is approved: it cannot be approved", Some("period"))),
            (ExportTooLarge { rows: 7, max: 5 }, StatusCode::PAYLOAD_TOO_LARGE, None, body("export_too_large", "this export has 7 rows, more than the 5 an XLSX export holds; download CSV instead", None)),
            (SignInLocked { secs: 61 }, StatusCode::TOO_MANY_REQUESTS, Some(61), body("rate_limited", "too many failed sign-ins for this username; try again in 2 min", None)),
            (Busy { secs: 1 }, StatusCode::TOO_MANY_REQUESTS, Some(1), body("rate_limited", "too many requests; retry in 1 s", None)),
            (TooManyFailedEnrolments { secs: 9 }, StatusCode::TOO_MANY_REQUESTS, Some(9), body("rate_limited", "too many requests; retry in 9 s", None)),
            (TooManyOpenCodes { secs: 3600 }, StatusCode::TOO_MANY_REQUESTS, Some(3600), body("rate_limited", "too many requests; retry in 3600 s", None)),
            (Store(StoreError::Unavailable(s("disk full"))), StatusCode::SERVICE_UNAVAILABLE, Some(1), body("unavailable", "disk full", None)),
            (Store(StoreError::Unsupported(s("no backup here"))), StatusCode::NOT_IMPLEMENTED, None, body("not_implemented", "no backup here", None)),
            (Store(StoreError::Other(s("broken"))), StatusCode::INTERNAL_SERVER_ERROR, None, body("internal", "internal error: storage error: broken", None)),
            (Internal(s("xlsx: oops")), StatusCode::INTERNAL_SERVER_ERROR, None, body("internal", "internal error: xlsx: oops", None)),
        ];
        assert_every_variant(cases.iter().map(|c| &c.0));
        for (e, status, retry_after, expected) in cases {
            let shown = format!("{e:?}");
            let got = answer(e).await;
            assert_eq!(
                (got.status, got.retry_after, &got.body),
                (status, retry_after, &expected),
                "{shown}"
            );
        }
    }
}
