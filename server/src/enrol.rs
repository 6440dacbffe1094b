//! Enrolment codes: a coordinator makes a short code, a field worker types
//! it into a phone, and `POST /v1/enroll` turns it into a device token.
//!
//! A code is [`CODE_CHARS`] characters from [`CODE_ALPHABET`] (no 0/O,
//! 1/I/L), shown as `XXXX-XXXX` and read case-insensitively with or
//! without the dash or spaces. Only its SHA-256 is stored; it works once,
//! until it expires ([`CODE_TTL_SECS_DEFAULT`], at most
//! [`CODE_TTL_SECS_MAX`]). An unknown, used, withdrawn or expired code all
//! get the same `401`, and failed attempts drain one server-wide bucket
//! (`Config::enrol_failures`), past which every attempt is `429` for a
//! while, so guessing stays hopeless.
//!
//! Coordinators make codes for field devices inside their scope; admins
//! for field or coordinator devices anywhere.

use std::net::IpAddr;
use std::time::Instant;

use pufa_core::schema::{RejectCode, Rejection};
use pufa_core::wire::{CodeIssued, CodeRequest, CodeView, EnrollRequest, Role, TokenIssued};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::auth::{self, check_label};
use crate::config::IdSource;
use crate::service_error::ServiceError;
use crate::store::{Device, EnrolmentCode, Redemption, TokenHash};
use crate::AppState;

/// Characters of a code, without the dash.
pub const CODE_CHARS: usize = 8;
/// Digits and capitals that cannot be misread for one another: no 0/O,
/// no 1/I/L. 31 symbols: 31^8 ≈ 8.5 × 10^11 codes.
pub const CODE_ALPHABET: &[u8; 31] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
/// How long a code stays usable unless asked otherwise, in seconds (1 day).
pub const CODE_TTL_SECS_DEFAULT: u64 = 24 * 3600;
/// The longest a code may stay usable, in seconds (7 days).
pub const CODE_TTL_SECS_MAX: u64 = 7 * 24 * 3600;
/// Most codes open (unused, unexpired) at once, server-wide: each is a
/// stored secret, and listing scans them all.
pub const CODES_OPEN_MAX: usize = 10_000;
/// Seconds a coordinator is told to wait when [`CODES_OPEN_MAX`] codes are
/// open: codes expire within [`CODE_TTL_SECS_MAX`], most within a day.
pub const CODES_FULL_RETRY_SECS: u64 = 3600;

/// A new code, [`CODE_CHARS`] characters of [`CODE_ALPHABET`], uniformly
/// drawn (bytes ≥ 248 are skipped so that no symbol is likelier).
pub fn new_code(ids: &dyn IdSource) -> String {
    let fair = 256 - 256 % CODE_ALPHABET.len();
    let mut out = String::with_capacity(CODE_CHARS);
    while out.len() < CODE_CHARS {
        for b in ids.secret() {
            if (b as usize) < fair && out.len() < CODE_CHARS {
                out.push(CODE_ALPHABET[b as usize % CODE_ALPHABET.len()] as char);
            }
        }
    }
    out
}

/// `ABCD2345` → `ABCD-2345`.
pub fn display(code: &str) -> String {
    let (a, b) = code.split_at(code.len() / 2);
    format!("{a}-{b}")
}

/// A code as typed → its canonical form, or `None` if it cannot be one.
pub fn normalize(typed: &str) -> Option<String> {
    let code: String = typed
        .chars()
        .filter(|c| !matches!(c, '-' | ' ' | '\u{3000}'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (code.len() == CODE_CHARS && code.bytes().all(|b| CODE_ALPHABET.contains(&b))).then_some(code)
}

/// What the store keeps of a code.
pub fn code_hash(code: &str) -> TokenHash {
    Sha256::digest(format!("pufa-enrol:{code}").as_bytes()).into()
}

/// `POST /v1/enrollment-codes`.
///
/// # Errors
/// `NeedsCoordinator` for field devices; `FieldCodesOnly` for a
/// coordinator asking for anything but a field device; `OutOfScope` for a
/// unit outside the caller's scope (or unknown, for a non-admin);
/// `unknown_org_unit` (admins); `BadInput` for a label over
/// [`auth::LABEL_CHARS_MAX`], a `ttl_secs` of 0 or over [`CODE_TTL_SECS_MAX`], or
/// an admin code; `TooManyOpenCodes` past [`CODES_OPEN_MAX`] open codes.
pub async fn create(
    state: &AppState,
    caller: &Device,
    req: CodeRequest,
) -> Result<CodeIssued, ServiceError> {
    caller.require_coordinator()?;
    match (caller.role, req.role) {
        (_, Role::Field) | (Role::Admin, Role::Coordinator) => {}
        (Role::Admin, Role::Admin) => {
            return Err(ServiceError::BadInput {
                field: "role",
                message: "an enrolment code makes a field or coordinator device".into(),
            })
        }
        _ => return Err(ServiceError::FieldCodesOnly),
    }
    let tree = state.store.org_tree();
    let unit = &req.org_unit;
    if !tree.contains(unit) {
        return Err(match caller.role {
            Role::Admin => ServiceError::Rejected(Rejection::new(
                RejectCode::UnknownOrgUnit,
                Some("org_unit"),
                format!("no org unit {unit:?}"),
            )),
            _ => ServiceError::OutOfScope { unit: unit.clone() },
        });
    }
    if !tree.in_scope(unit, &caller.scope()) {
        return Err(ServiceError::OutOfScope { unit: unit.clone() });
    }
    check_label(req.label.as_deref())?;
    let ttl_secs = req.ttl_secs.unwrap_or(CODE_TTL_SECS_DEFAULT);
    if !(1..=CODE_TTL_SECS_MAX).contains(&ttl_secs) {
        return Err(ServiceError::BadInput {
            field: "ttl_secs",
            message: format!("ttl_secs must be 1 to {CODE_TTL_SECS_MAX} (7 days)"),
        });
    }
    let now = state.config.clock.now_ms();
    let open = state
        .store
        .codes()
        .await?
        .iter()
        .filter(|c| c.expires_ms > now)
        .count();
    if open >= CODES_OPEN_MAX {
        return Err(ServiceError::TooManyOpenCodes {
            secs: CODES_FULL_RETRY_SECS,
        });
    }
    let code = new_code(state.config.ids.as_ref());
    let stored = EnrolmentCode {
        id: state.config.ids.uuid(),
        code_hash: code_hash(&code),
        role: req.role,
        org_unit: req.org_unit,
        label: req.label.unwrap_or_default(),
        created_ms: now,
        expires_ms: now + ttl_secs * 1000,
        created_by: caller.label.clone(),
    };
    let issued = CodeIssued {
        id: stored.id,
        code: display(&code),
        expires_ms: stored.expires_ms,
        role: stored.role,
        org_unit: stored.org_unit.clone(),
        label: stored.label.clone(),
    };
    state.store.put_code(stored, now).await?;
    Ok(issued)
}

/// `GET /v1/enrollment-codes?org=&limit=`: open codes in scope, newest first.
///
/// # Errors
/// `NeedsCoordinator` for field devices; `org` as everywhere (§2).
pub async fn list(
    state: &AppState,
    caller: &Device,
    org: Option<&str>,
    limit: usize,
) -> Result<Vec<CodeView>, ServiceError> {
    caller.require_coordinator()?;
    let tree = state.store.org_tree();
    let scope = auth::narrow(caller, &tree, org)?;
    let now = state.config.clock.now_ms();
    let mut open: Vec<CodeView> = state
        .store
        .codes()
        .await?
        .iter()
        .filter(|c| c.expires_ms > now && tree.in_scope(&c.org_unit, &scope))
        .map(EnrolmentCode::view)
        .collect();
    open.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(a.id.cmp(&b.id)));
    open.truncate(limit);
    Ok(open)
}

/// `DELETE /v1/enrollment-codes/{id}`.
///
/// # Errors
/// `NeedsCoordinator` for field devices; `NoSuchCode` for a code that is
/// unknown, used, or outside the caller's scope.
pub async fn withdraw(state: &AppState, caller: &Device, id: Uuid) -> Result<(), ServiceError> {
    caller.require_coordinator()?;
    let tree = state.store.org_tree();
    let scope = caller.scope();
    let visible = state
        .store
        .codes()
        .await?
        .iter()
        .any(|c| c.id == id && tree.in_scope(&c.org_unit, &scope));
    if visible && state.store.withdraw_code(id).await? {
        Ok(())
    } else {
        Err(ServiceError::NoSuchCode { id })
    }
}

/// `POST /v1/enroll` (no token): a code becomes a device and its token,
/// answered like `POST /v1/admin/tokens`. `ip` is the client's address
/// ([`crate::extract::ClientIp`]).
///
/// Failed attempts are counted twice: in the client address's own bucket
/// and in the server-wide one. An address that has used up its own bucket
/// is refused before it can touch the server-wide one, so one source cannot
/// empty the server-wide bucket for everyone else; the server-wide bucket
/// still bounds guessing from many addresses.
///
/// # Errors
/// `TooManyFailedEnrolments` while failed attempts have emptied the
/// client's or the server-wide bucket; `InvalidCode` for a code that is
/// unknown, used, withdrawn, expired or malformed (one answer for all);
/// `BadInput` for an overlong label.
pub async fn redeem(
    state: &AppState,
    ip: Option<IpAddr>,
    req: EnrollRequest,
) -> Result<TokenIssued, ServiceError> {
    let guards = &state.limits.people;
    let source = ip.map(crate::limits::client_key);
    let now = Instant::now();
    guards
        .enrol_failures_per_ip
        .check(source, now)
        .and_then(|()| guards.enrol_failures.check((), now))
        .map_err(|wait| ServiceError::TooManyFailedEnrolments {
            secs: wait.as_secs() + 1,
        })?;
    check_label(req.label.as_deref())?;
    let secret = auth::new_secret(state.config.ids.as_ref());
    let device = match normalize(&req.code) {
        Some(code) => {
            let redemption = Redemption {
                device_id: state.config.ids.uuid(),
                token_hash: auth::hash_token(&secret),
                label: req.label.filter(|l| !l.trim().is_empty()),
                now_ms: state.config.clock.now_ms(),
            };
            state
                .store
                .redeem_code(code_hash(&code), redemption)
                .await?
        }
        None => None,
    };
    let Some(device) = device else {
        // The buckets count failures only, so a room of phones enrolling
        // with good codes never meets them.
        let now = Instant::now();
        let _ = guards.enrol_failures_per_ip.take(source, now);
        let _ = guards.enrol_failures.take((), now);
        return Err(ServiceError::InvalidCode);
    };
    Ok(device.issued(secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SeededIds;

    #[test]
    fn codes_are_typeable_and_read_back_however_typed() {
        let ids = SeededIds::new(1);
        for _ in 0..200 {
            let code = new_code(&ids);
            assert_eq!(code.len(), CODE_CHARS);
            assert!(code.bytes().all(|b| CODE_ALPHABET.contains(&b)), "{code}");
            let shown = display(&code);
            assert_eq!(shown.len(), CODE_CHARS + 1);
            assert_eq!(normalize(&shown).as_deref(), Some(code.as_str()));
            assert_eq!(
                normalize(&shown.to_lowercase()).as_deref(),
                Some(code.as_str())
            );
            assert_eq!(normalize(&code).as_deref(), Some(code.as_str()));
        }
        for confusable in [b'0', b'O', b'1', b'I', b'L'] {
            assert!(!CODE_ALPHABET.contains(&confusable));
        }
        assert_eq!(normalize("abcd 2345").as_deref(), Some("ABCD2345"));
        for bad in [
            "",
            "ABCD-234",
            "ABCD-23456",
            "ABCD-2340",
            "ABCD-234O",
            "ÄBCD-2345",
        ] {
            assert_eq!(normalize(bad), None, "{bad}");
        }
        assert_ne!(code_hash("ABCD2345"), code_hash("ABCD2346"));
    }
}
