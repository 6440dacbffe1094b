//! `pufa_client::Error`: what can go wrong, in words that say how to fix it.

use std::time::Duration;

use pufa_core::schema::Rejection;
use pufa_core::wire::ErrorBody;
use uuid::Uuid;

use crate::transport::Response;

/// Failures of the SDK. Expected outcomes of a sync (rejections, conflicts,
/// duplicates) are not errors: they are in the [`crate::SyncReport`] and in
/// each record's [`crate::SyncState`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A local edit breaks a field rule; nothing was recorded.
    #[error("{}: {}{}", .0.code.as_str(), .0.message, .0.field.as_deref().map(|f| format!(" (field {f})")).unwrap_or_default())]
    Invalid(Rejection),
    #[error("no record {0} on this device")]
    NotFound(Uuid),
    /// The server refused the token: it was revoked or is wrong. Pending
    /// edits stay on the device; enrol again to get a new token.
    #[error("the server refused this device's token (revoked or invalid): enrol the device again; pending edits are kept")]
    Unauthorized,
    #[error("the server forbade this: {0}")]
    Forbidden(String),
    /// The server answered with an error that retrying will not fix.
    #[error("the server answered {status} {code}: {message}")]
    Server {
        status: u16,
        code: String,
        message: String,
    },
    /// The server asked to be called less often (`429 rate_limited`): try
    /// again after `retry_after`, when it said how long.
    #[error("the server asks to be called less often (rate_limited){}", .retry_after.map(|d| format!(": try again in {} s", d.as_secs().max(1))).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    /// The server could not be reached (after retries).
    #[error("cannot reach the server: {0}; nothing was lost, sync again later")]
    Unreachable(String),
    #[error("this data dir belongs to device {stored}, not {given}")]
    WrongDevice { stored: Uuid, given: Uuid },
    #[error("local store: {0}")]
    Store(String),
}

impl Error {
    /// What an error answer says: its status with the contract's error code
    /// and message (`{"error":{…}}`), or the body as it is when it is not
    /// one.
    pub(crate) fn refused(r: &Response) -> Error {
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&r.body) {
            Ok(b) => (b.error.code, b.error.message),
            Err(_) => (
                "unknown".into(),
                String::from_utf8_lossy(&r.body).into_owned(),
            ),
        };
        Error::Server {
            status: r.status,
            code,
            message,
        }
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Error {
        Error::Store(e.to_string())
    }
}

impl From<Rejection> for Error {
    fn from(r: Rejection) -> Error {
        Error::Invalid(r)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
