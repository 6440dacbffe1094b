//! Tokens, roles and scopes (§3): secrets, their hashes, who may do what,
//! and how an `org` parameter narrows a caller's scope.
//!
//! A bearer token is a device's, or a person's sign-in session
//! ([`Principal`]); both act through a [`Device`] with a role and a unit,
//! so role and scope checks are the same for both.

use pufa_core::org::{OrgTree, Scope};
use pufa_core::schema::{RejectCode, Rejection};
use pufa_core::wire::{Role, TokenIssued, TokenRequest};
use sha2::{Digest, Sha256};

use crate::config::IdSource;
use crate::service_error::ServiceError;
use crate::store::{Device, TokenHash};
use crate::AppState;

/// Who a bearer token belongs to.
#[derive(Clone, Debug)]
pub enum Principal {
    /// A device's token (field device, coordinator's or admin's device).
    Device(Device),
    /// A person's sign-in session: acts as `acting` (the account's id,
    /// role, unit and name) but is not a device, so it cannot sync.
    Session {
        acting: Device,
        username: String,
        hash: TokenHash,
    },
}

impl Principal {
    /// The device this principal acts as.
    pub fn acting(&self) -> &Device {
        match self {
            Principal::Device(d) | Principal::Session { acting: d, .. } => d,
        }
    }

    /// The person behind a session (audit entries name them), `None` for a
    /// device, which its id names.
    pub fn person(&self) -> Option<&str> {
        match self {
            Principal::Device(_) => None,
            Principal::Session { username, .. } => Some(username),
        }
    }

    pub fn into_acting(self) -> Device {
        match self {
            Principal::Device(d) | Principal::Session { acting: d, .. } => d,
        }
    }
}

/// The principal of a bearer token: a device's token first, then a live
/// session; `None` for anything else.
///
/// # Errors
/// Storage failures.
pub async fn authenticate(
    state: &AppState,
    token: &str,
) -> Result<Option<Principal>, crate::store::StoreError> {
    let hash = hash_token(token);
    if let Some(d) = state.store.authenticate(hash).await? {
        return Ok(Some(Principal::Device(d)));
    }
    crate::people::session_principal(state, hash).await
}

/// Longest device label, in characters.
pub const LABEL_CHARS_MAX: usize = 200;

/// What the store keeps of a secret.
pub fn hash_token(secret: &str) -> TokenHash {
    Sha256::digest(secret.as_bytes()).into()
}

/// # Errors
/// `BadInput` for a device label over [`LABEL_CHARS_MAX`] characters.
pub fn check_label(label: Option<&str>) -> Result<(), ServiceError> {
    match label {
        Some(l) if l.chars().count() > LABEL_CHARS_MAX => Err(ServiceError::BadInput {
            field: "label",
            message: format!("label is longer than {LABEL_CHARS_MAX} characters"),
        }),
        _ => Ok(()),
    }
}

/// A new secret: `pufa_` and 64 hex digits (256 random bits).
pub fn new_secret(ids: &dyn IdSource) -> String {
    format!("pufa_{}", hex::encode(ids.secret()))
}

impl Device {
    /// # Errors
    /// `NeedsAdmin` unless the device is an admin.
    pub fn require_admin(&self) -> Result<(), ServiceError> {
        match self.role {
            Role::Admin => Ok(()),
            _ => Err(ServiceError::NeedsAdmin),
        }
    }

    /// # Errors
    /// `NeedsCoordinator` for field devices.
    pub fn require_coordinator(&self) -> Result<(), ServiceError> {
        match self.role {
            Role::Admin | Role::Coordinator => Ok(()),
            Role::Field => Err(ServiceError::NeedsCoordinator),
        }
    }
}

/// The scope named by an `org` parameter, or the caller's own.
///
/// # Errors
/// `OutOfScope` for a unit outside the caller's scope, and for a unit that
/// does not exist unless the caller is an admin (then `NoSuchUnit`), so a
/// scoped caller cannot probe the tree (§2).
pub fn narrow(caller: &Device, tree: &OrgTree, org: Option<&str>) -> Result<Scope, ServiceError> {
    let Some(code) = org else {
        return Ok(caller.scope());
    };
    let unit = code.to_string();
    if !tree.contains(code) {
        return Err(match caller.role {
            Role::Admin => ServiceError::NoSuchUnit { unit },
            _ => ServiceError::OutOfScope { unit },
        });
    }
    if !tree.in_scope(code, &caller.scope()) {
        return Err(ServiceError::OutOfScope { unit });
    }
    Ok(Scope::Unit(unit))
}

/// `POST /v1/admin/tokens`: a new device, or a new secret for a known one.
///
/// # Errors
/// `NeedsAdmin` for non-admins; `BadInput` for a missing `org_unit` or an
/// overlong label; `unknown_org_unit`; `NoDeviceToReenrol`.
pub async fn issue_token(
    state: &AppState,
    caller: &Device,
    req: TokenRequest,
) -> Result<TokenIssued, ServiceError> {
    caller.require_admin()?;
    let label = req.label.unwrap_or_default();
    check_label(Some(&label))?;
    let tree = state.store.org_tree();
    match (&req.role, &req.org_unit) {
        (Role::Admin, None) => {}
        (_, None) => {
            return Err(ServiceError::BadInput {
                field: "org_unit",
                message: "org_unit is required for field and coordinator tokens".into(),
            })
        }
        (_, Some(code)) if !tree.contains(code) => {
            return Err(ServiceError::Rejected(Rejection::new(
                RejectCode::UnknownOrgUnit,
                Some("org_unit"),
                format!("no org unit {code:?}"),
            )))
        }
        _ => {}
    }
    let now = state.config.clock.now_ms();
    let secret = new_secret(state.config.ids.as_ref());
    let token_hash = hash_token(&secret);
    let device = match req.device_id {
        Some(id) => {
            let Some(old) = state.store.device(id).await? else {
                return Err(ServiceError::NoDeviceToReenrol { id });
            };
            Device {
                role: req.role,
                org_unit: req.org_unit,
                label,
                revoked: false,
                token_hash,
                ..old
            }
        }
        None => Device {
            id: state.config.ids.uuid(),
            role: req.role,
            org_unit: req.org_unit,
            label,
            revoked: false,
            token_hash,
            created_ms: now,
            last_push_ms: None,
            report: None,
            clock_skew_ms: None,
        },
    };
    state.store.put_device(device.clone()).await?;
    Ok(device.issued(secret))
}
