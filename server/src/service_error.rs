//! `ServiceError`: why a service refused or failed, in the domain's words.
//!
//! The services (`auth`, `people`, `enrol`, and the figure and export
//! helpers the API and the dashboard share) know no HTTP. Each boundary
//! converts a `ServiceError` once: `From<ServiceError> for ApiError`
//! (`error.rs`) picks the JSON API's status, code and body, and
//! `From<ServiceError> for PageError` (`dashboard/page.rs`) the dashboard's
//! error page. Both match every variant, so a new one cannot go unmapped.
//!
//! A refusal's message ([`std::fmt::Display`]) is the one the JSON API
//! answers with; for the waits, the export limit and failures, `ApiError`
//! words the answer and the message is for the log. The dashboard shows
//! its own words for all of them.

use pufa_core::schema::Rejection;
use uuid::Uuid;

use crate::store::StoreError;

/// A request a service will not or cannot carry out.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    // Who may do it.
    /// The caller is not an admin.
    #[error("this needs an admin token")]
    NeedsAdmin,
    /// The caller is a field device.
    #[error("this needs a coordinator or admin token")]
    NeedsCoordinator,
    /// A unit outside the caller's scope, or one that does not exist asked
    /// for by a caller who may not learn that (§2).
    #[error("org unit {unit:?} is outside your scope")]
    OutOfScope { unit: String },
    /// A coordinator asked for an enrolment code for a non-field device.
    #[error("a coordinator makes enrolment codes for field devices only")]
    FieldCodesOnly,
    /// The right password of a disabled account.
    #[error("this account is disabled; ask an admin to enable it")]
    AccountDisabled,
    /// A step on a period that only someone above the unit may take.
    #[error("only an admin or a coordinator above {unit:?} may {action} its periods")]
    NeedsApprover { unit: String, action: &'static str },
    /// Signing out with a device token.
    #[error("this is a device token; only a sign-in session signs out (revoke a device with DELETE /v1/admin/tokens/{{device_id}})")]
    NotASession,

    // Who it is.
    /// An unknown username or a wrong password: one answer for both.
    #[error("unknown username or wrong password")]
    BadCredentials,
    /// An enrolment code that is unknown, used, withdrawn, expired or
    /// malformed: one answer for all.
    #[error("invalid or expired enrolment code")]
    InvalidCode,

    // What it is about.
    /// An org unit that does not exist, asked for by an admin.
    #[error("no org unit {unit:?}")]
    NoSuchUnit { unit: String },
    #[error("no account {username:?}")]
    NoSuchAccount { username: String },
    /// Re-enrolling a device that was never enrolled.
    #[error("no device {id} to re-enrol")]
    NoDeviceToReenrol { id: Uuid },
    /// An enrolment code that is unknown, used, or outside the caller's
    /// scope.
    #[error("no open enrolment code {id} in your scope")]
    NoSuchCode { id: Uuid },
    /// A live record unknown, or outside the caller's scope (one message
    /// for both, so it reveals nothing).
    #[error("no live record {id} in your scope")]
    NoSuchRecord { id: Uuid },
    /// An export file name that names no export.
    #[error("no export {file:?}: use <lecture|library_corner|demo_site|legal_understander|totals>.<csv|xlsx>")]
    NoSuchExport { file: String },

    // What was sent.
    /// A request body field that cannot be taken as it is.
    #[error("{message}")]
    BadInput {
        field: &'static str,
        message: String,
    },
    /// A value judged by a field rule (`invalid_field`, `missing_field`,
    /// `unknown_org_unit`).
    #[error("{}", .0.message)]
    Rejected(Rejection),
    /// A query parameter that cannot be read; `value` as sent (empty when
    /// absent), for pages that echo it.
    #[error("{message}")]
    BadQuery {
        param: &'static str,
        value: String,
        message: String,
    },
    /// A period step its period's state or a covering approval does not
    /// allow (`code`: `period_state` or `period_locked`).
    #[error("{message}")]
    PeriodRefused {
        code: &'static str,
        message: String,
        /// The period's state, when that refused the step.
        state: Option<pufa_core::period::PeriodState>,
        /// The covering approval, when that refused it.
        lock: Option<pufa_core::period::Approval>,
    },
    #[error("there is already an account {username:?}")]
    AccountExists { username: String },
    /// An export too large for its format (XLSX is built in memory).
    #[error("this export has {rows} rows, more than the {max} an XLSX export holds")]
    ExportTooLarge { rows: usize, max: usize },

    // When to come back.
    /// Too many failed sign-ins for one username.
    #[error("sign-in locked for {secs} s")]
    SignInLocked { secs: u64 },
    /// The password-hashing queue is full.
    #[error("password hashing busy; retry in {secs} s")]
    Busy { secs: u64 },
    /// Failed enrolment attempts have emptied the client's or the
    /// server-wide bucket.
    #[error("too many failed enrolments; retry in {secs} s")]
    TooManyFailedEnrolments { secs: u64 },
    /// As many enrolment codes are open as the server keeps.
    #[error("too many open enrolment codes; retry in {secs} s")]
    TooManyOpenCodes { secs: u64 },

    // What went wrong here.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A failure of this server's own (a hashing task, the XLSX writer).
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    /// A query parameter `param` (sent as `value`, if at all) that cannot
    /// be read.
    pub fn bad_query(param: &'static str, value: Option<&str>, message: impl Into<String>) -> Self {
        ServiceError::BadQuery {
            param,
            value: value.unwrap_or_default().to_string(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use pufa_core::schema::RejectCode;

    use super::*;

    /// Which variant `e` is. Exhaustive, so a new variant must be numbered
    /// here, and [`assert_every_variant`] then asks for a case of it.
    fn ordinal(e: &ServiceError) -> usize {
        use ServiceError::*;
        match e {
            NeedsAdmin => 0,
            NeedsCoordinator => 1,
            OutOfScope { .. } => 2,
            FieldCodesOnly => 3,
            AccountDisabled => 4,
            NotASession => 5,
            BadCredentials => 6,
            InvalidCode => 7,
            NoSuchUnit { .. } => 8,
            NoSuchAccount { .. } => 9,
            NoDeviceToReenrol { .. } => 10,
            NoSuchCode { .. } => 11,
            NoSuchExport { .. } => 12,
            BadInput { .. } => 13,
            Rejected(_) => 14,
            BadQuery { .. } => 15,
            AccountExists { .. } => 16,
            ExportTooLarge { .. } => 17,
            SignInLocked { .. } => 18,
            Busy { .. } => 19,
            TooManyFailedEnrolments { .. } => 20,
            TooManyOpenCodes { .. } => 21,
            Store(_) => 22,
            Internal(_) => 23,
            NeedsApprover { .. } => 24,
            PeriodRefused { .. } => 25,
            NoSuchRecord { .. } => 26,
        }
    }
    const VARIANTS: usize = 27;

    /// Fails unless `cases` hold at least one error of every variant.
    #[track_caller]
    pub(crate) fn assert_every_variant<'a>(cases: impl IntoIterator<Item = &'a ServiceError>) {
        let mut seen = [false; VARIANTS];
        for e in cases {
            seen[ordinal(e)] = true;
        }
        let missing: Vec<usize> = (0..VARIANTS).filter(|i| !seen[*i]).collect();
        assert!(missing.is_empty(), "no case for variants {missing:?}");
    }

    pub(crate) fn id() -> Uuid {
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001)
    }

    pub(crate) fn unknown_unit() -> ServiceError {
        ServiceError::Rejected(Rejection::new(
            RejectCode::UnknownOrgUnit,
            Some("org_unit"),
            "no org unit \"x\"",
        ))
    }

    #[test]
    fn a_bad_query_remembers_what_was_sent() {
        let e = ServiceError::bad_query("year", Some("20x"), "year must be a year");
        assert!(matches!(
            &e,
            ServiceError::BadQuery { param: "year", value, .. } if value == "20x"
        ));
        let absent = ServiceError::bad_query("kind", None, "kind is required");
        assert!(matches!(&absent, ServiceError::BadQuery { value, .. } if value.is_empty()));
        assert_eq!(absent.to_string(), "kind is required");
    }
}
