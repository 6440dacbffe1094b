//! People: coordinators' and admins' own accounts (a username and an
//! argon2id password hash), their sign-in sessions, and the lockout that
//! bounds password guessing.
//!
//! A session acts with its person's role and unit but is not a device: it
//! is not listed in `/v1/devices`, and push, pull and checksum refuse it
//! (`extract::DeviceCaller`). Its token is a bearer token like a device's,
//! stored only as a SHA-256 hash, and it ends after [`SESSION_TTL_MS`], at
//! sign-out, or when the account is disabled or its password changed.
//!
//! Guessing: after [`LOGIN_FAILURES_MAX`] failed sign-ins for a username
//! within [`LOGIN_WINDOW_MS`], that username is refused (`429`) without
//! the password being checked until the window has passed. Each attempt
//! is counted as a failure *before* its password is checked (and forgotten
//! only if it succeeds), so sign-ins sent all at once get no more guesses
//! than sign-ins sent one by one. An unknown username fails exactly like a
//! wrong password, after the same argon2 work against a dummy hash, so
//! neither the answer nor its timing tells them apart; a name that cannot
//! be a username fails at once, without that work.
//!
//! Password hashing has [`PASSWORD_HASHES_CONCURRENT_MAX`] slots, taken
//! in arrival order, and at most [`PASSWORD_HASH_QUEUE_MAX`] attempts hold
//! or wait for one: past that, `429` with `Retry-After` at once, so a
//! flood of sign-ins is told to come back instead of making everyone wait
//! for the request timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use pufa_core::schema::{RejectCode, Rejection};
use pufa_core::wire::{AccountPatch, AccountRequest, AccountView, Role, SessionIssued};
use tokio::sync::Semaphore;

use crate::auth::{self, Principal};
use crate::error::ApiError;
use crate::limits::{Buckets, RateLimit};
use crate::service_error::ServiceError;
use crate::store::{Account, AccountChange, Device, Session, TokenHash};
use crate::AppState;

/// Longest username, in characters (`[a-z0-9._-]`, at least one).
pub const USERNAME_CHARS_MAX: usize = 64;
/// Shortest password, in characters.
pub const PASSWORD_CHARS_MIN: usize = 12;
/// Longest password, in characters.
pub const PASSWORD_CHARS_MAX: usize = 1024;
/// Longest display name, in characters.
pub const DISPLAY_NAME_CHARS_MAX: usize = 100;
/// How long a sign-in session lasts, in milliseconds (12 h: a working day).
pub const SESSION_TTL_MS: u64 = 12 * 3600 * 1000;
/// Live sessions kept per account; signing in again past this ends the
/// oldest, so a script signing in in a loop cannot grow the store.
pub const SESSIONS_PER_ACCOUNT_MAX: usize = 50;
/// Failed sign-ins for one username within [`LOGIN_WINDOW_MS`] after which
/// it is refused until the window has passed.
pub const LOGIN_FAILURES_MAX: usize = 5;
/// The lockout window, in milliseconds (15 min).
pub const LOGIN_WINDOW_MS: u64 = 15 * 60 * 1000;
/// Most usernames whose recent failures are remembered. When full of
/// usernames still inside their window, sign-ins for usernames not yet
/// remembered are refused (`429`) rather than allowed untracked.
pub const LOGIN_TRACKED_MAX: usize = 100_000;
/// Password hashes computed at once: argon2id with its default parameters
/// takes 19 MiB and tens of milliseconds of one core each.
pub const PASSWORD_HASHES_CONCURRENT_MAX: usize = 2;
/// Password checks and hashes in progress or waiting for a slot, at most;
/// one more is refused (`429`, `Retry-After:`
/// [`PASSWORD_HASH_RETRY_SECS`]). 32 × ≈ 50 ms over 2 slots: under a
/// second of waiting.
pub const PASSWORD_HASH_QUEUE_MAX: usize = 32;
/// Seconds a sign-in refused for a full hashing queue is told to wait.
pub const PASSWORD_HASH_RETRY_SECS: u64 = 1;

/// In-memory guards of sign-in and enrolment (kept in
/// [`crate::limits::Limiters`]). A restart forgets them; that only gives a
/// guesser a fresh window, which a restart's rarity keeps harmless.
#[derive(Debug)]
pub struct Guards {
    /// Username → times (ms, the server clock) of its recent failures, at
    /// most [`LOGIN_FAILURES_MAX`], oldest first.
    sign_in_failures: Mutex<HashMap<String, Vec<u64>>>,
    hashing: Semaphore,
    /// Attempts holding or waiting for a `hashing` slot.
    hashing_queued: AtomicUsize,
    /// Failed `/v1/enroll` attempts, server-wide.
    pub enrol_failures: Buckets<()>,
    /// Failed `/v1/enroll` attempts per client address
    /// ([`crate::limits::client_key`]; `None`: not over a socket).
    pub enrol_failures_per_ip: Buckets<Option<std::net::IpAddr>>,
}

impl Guards {
    pub fn new(enrol_failures: RateLimit, enrol_failures_per_ip: RateLimit) -> Guards {
        Guards {
            sign_in_failures: Mutex::new(HashMap::new()),
            hashing: Semaphore::new(PASSWORD_HASHES_CONCURRENT_MAX),
            hashing_queued: AtomicUsize::new(0),
            enrol_failures: Buckets::new(enrol_failures),
            enrol_failures_per_ip: Buckets::new(enrol_failures_per_ip),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<u64>>> {
        self.sign_in_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Counts an attempt for `username` as a failure, in the same lock
    /// as the check, so that concurrent attempts cannot all pass the check
    /// before any failure is recorded. `Err(seconds to wait)` while
    /// `username` is locked out (then nothing is counted).
    pub fn reserve_sign_in(&self, username: &str, now_ms: u64) -> Result<(), u64> {
        let mut map = self.failures();
        if !map.contains_key(username) && map.len() >= LOGIN_TRACKED_MAX {
            map.retain(|_, times| times.iter().any(|t| t + LOGIN_WINDOW_MS > now_ms));
            if map.len() >= LOGIN_TRACKED_MAX {
                return Err(60);
            }
        }
        let times = map.entry(username.to_string()).or_default();
        times.retain(|t| t + LOGIN_WINDOW_MS > now_ms);
        if times.len() >= LOGIN_FAILURES_MAX {
            // Free again when the oldest failure leaves the window.
            let free_at = times[0] + LOGIN_WINDOW_MS;
            return Err((free_at - now_ms).div_ceil(1000).max(1));
        }
        times.push(now_ms);
        Ok(())
    }

    /// Forgets `username`'s failures, the reserved attempt included.
    pub fn sign_in_succeeded(&self, username: &str) {
        self.failures().remove(username);
    }

    /// A place in the password-hashing queue, or `Err(seconds to wait)`
    /// when [`PASSWORD_HASH_QUEUE_MAX`] attempts already hold one.
    fn join_hashing(&self) -> Result<HashingTicket<'_>, u64> {
        let before = self.hashing_queued.fetch_add(1, Ordering::SeqCst);
        let ticket = HashingTicket { guards: self };
        if before >= PASSWORD_HASH_QUEUE_MAX {
            return Err(PASSWORD_HASH_RETRY_SECS);
        }
        Ok(ticket)
    }
}

/// A place in the password-hashing queue; leaving it (drop) frees it.
struct HashingTicket<'a> {
    guards: &'a Guards,
}

impl HashingTicket<'_> {
    /// Waits for a hashing slot (tokio's semaphore serves waiters in
    /// arrival order).
    async fn turn(&self) -> Result<tokio::sync::SemaphorePermit<'_>, ServiceError> {
        self.guards
            .hashing
            .acquire()
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))
    }
}

impl Drop for HashingTicket<'_> {
    fn drop(&mut self) {
        self.guards.hashing_queued.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether `name` is a username: 1..=64 of `a-z`, `0-9`, `.`, `_`, `-`.
pub fn valid_username(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= USERNAME_CHARS_MAX
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
}

/// A username as typed at sign-in: phones capitalise the first letter.
fn typed_username(text: &str) -> String {
    text.trim().to_lowercase()
}

fn invalid(field: &str, message: String) -> ServiceError {
    ServiceError::Rejected(Rejection::new(
        RejectCode::InvalidField,
        Some(field),
        message,
    ))
}

fn check_password(password: &str) -> Result<(), ServiceError> {
    let n = password.chars().count();
    if !(PASSWORD_CHARS_MIN..=PASSWORD_CHARS_MAX).contains(&n) {
        return Err(invalid(
            "password",
            format!(
                "a password has {PASSWORD_CHARS_MIN} to {PASSWORD_CHARS_MAX} characters; this one has {n}"
            ),
        ));
    }
    Ok(())
}

fn check_display_name(name: Option<&str>) -> Result<(), ServiceError> {
    match name {
        Some(n) if n.chars().count() > DISPLAY_NAME_CHARS_MAX => Err(invalid(
            "display_name",
            format!("display_name is longer than {DISPLAY_NAME_CHARS_MAX} characters"),
        )),
        _ => Ok(()),
    }
}

/// The role and unit an account may have: coordinator (in an existing
/// unit) or admin (anywhere, a unit optional).
fn check_role_unit(
    state: &AppState,
    role: Role,
    org_unit: Option<&str>,
    given_unit: bool,
) -> Result<(), ServiceError> {
    match (role, org_unit) {
        (Role::Field, _) => Err(invalid(
            "role",
            "accounts are for coordinators and admins; field devices enrol with a token or an enrolment code".into(),
        )),
        (Role::Coordinator, None) => Err(ServiceError::Rejected(Rejection::new(
            RejectCode::MissingField,
            Some("org_unit"),
            "org_unit is required for a coordinator",
        ))),
        (_, Some(code)) if given_unit && !state.store.org_tree().contains(code) => {
            Err(ServiceError::Rejected(Rejection::new(
                RejectCode::UnknownOrgUnit,
                Some("org_unit"),
                format!("no org unit {code:?}"),
            )))
        }
        _ => Ok(()),
    }
}

/// argon2id with the crate's defaults (m = 19 MiB, t = 2, p = 1), the
/// parameters OWASP recommends as a minimum.
fn hasher() -> Argon2<'static> {
    Argon2::default()
}

/// A place in the hashing queue (`Busy` when it is full).
fn hashing_ticket(state: &AppState) -> Result<HashingTicket<'_>, ServiceError> {
    state
        .limits
        .people
        .join_hashing()
        .map_err(|secs| ServiceError::Busy { secs })
}

/// Hashes `password` off the async threads, at most
/// [`PASSWORD_HASHES_CONCURRENT_MAX`] at a time.
async fn hash_password(state: &AppState, password: String) -> Result<String, ServiceError> {
    let ticket = hashing_ticket(state)?;
    let _permit = ticket.turn().await?;
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&state.config.ids.secret()[..16]);
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
        hasher()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|hashed| hashed)
    .map_err(|e| ServiceError::Internal(format!("password hashing failed: {e}")))
}

/// A hash of a password nobody has, with the real parameters: checking
/// against it costs what checking a real account costs.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::encode_b64(b"pufa-dummy-salt!").expect("a 16-byte salt");
        hasher()
            .hash_password(b"no account has this password", &salt)
            .expect("hashing a constant")
            .to_string()
    })
}

/// Whether `password` matches `phc` (or, for `None`, the dummy hash: always
/// false, after the same work).
async fn verify_password(
    ticket: &HashingTicket<'_>,
    password: String,
    phc: Option<String>,
) -> Result<bool, ServiceError> {
    let _permit = ticket.turn().await?;
    tokio::task::spawn_blocking(move || {
        let known = phc.is_some();
        let text = phc.unwrap_or_else(|| dummy_hash().to_string());
        let ok = PasswordHash::new(&text)
            .is_ok_and(|h| hasher().verify_password(password.as_bytes(), &h).is_ok());
        known && ok
    })
    .await
    .map_err(|e| ServiceError::Internal(format!("password check failed: {e}")))
}

/// `POST /v1/admin/accounts`, and `pufa-server add-account`.
///
/// # Errors
/// `NeedsAdmin` for non-admins; `invalid_field` for a bad username,
/// password, role or display name; `missing_field` / `unknown_org_unit`
/// for a coordinator's unit; `AccountExists` for a taken username.
pub async fn create_account(
    state: &AppState,
    caller: &Device,
    req: AccountRequest,
) -> Result<AccountView, ServiceError> {
    caller.require_admin()?;
    add_account(state, req).await
}

/// [`create_account`] without a caller: for the `add-account` subcommand,
/// run by whoever can stop the server and open its data dir.
///
/// # Errors
/// As [`create_account`], except `NeedsAdmin`.
pub async fn add_account(
    state: &AppState,
    req: AccountRequest,
) -> Result<AccountView, ServiceError> {
    if !valid_username(&req.username) {
        return Err(invalid(
            "username",
            format!(
                "a username has 1 to {USERNAME_CHARS_MAX} characters, each a-z, 0-9, '.', '_' or '-'"
            ),
        ));
    }
    check_password(&req.password)?;
    check_role_unit(state, req.role, req.org_unit.as_deref(), true)?;
    check_display_name(req.display_name.as_deref())?;
    let account = Account {
        id: state.config.ids.uuid(),
        username: req.username,
        display_name: req.display_name.filter(|n| !n.trim().is_empty()),
        role: req.role,
        org_unit: req.org_unit,
        password_hash: hash_password(state, req.password).await?,
        disabled: false,
        created_ms: state.config.clock.now_ms(),
        epoch: 0,
    };
    let view = account.view();
    if !state.store.create_account(account).await? {
        return Err(ServiceError::AccountExists {
            username: view.username,
        });
    }
    Ok(view)
}

/// Why `pufa-server add-account` failed.
#[derive(Debug, thiserror::Error)]
pub enum AddAccountError {
    #[error(transparent)]
    Open(#[from] crate::RunError),
    /// In the words `POST /v1/admin/accounts` would answer with.
    #[error("{0}")]
    Refused(ApiError),
}

impl From<ServiceError> for AddAccountError {
    fn from(e: ServiceError) -> AddAccountError {
        AddAccountError::Refused(e.into())
    }
}

/// `pufa-server add-account`: opens the data dir (as a start would: the
/// admin token is made on an empty one), adds the account durably, and
/// closes. sled's lock refuses a data dir that a running server holds.
///
/// # Errors
/// The data dir or store cannot be opened; the account is refused.
pub async fn add_account_offline(
    config: crate::Config,
    req: AccountRequest,
) -> Result<AccountView, AddAccountError> {
    let state = crate::open(config).await?;
    let view = add_account(&state, req).await?;
    state.store.flush().await.map_err(ServiceError::from)?;
    Ok(view)
}

/// `GET /v1/admin/accounts`.
///
/// # Errors
/// `NeedsAdmin` for non-admins.
pub async fn accounts(
    state: &AppState,
    caller: &Device,
    limit: usize,
) -> Result<Vec<AccountView>, ServiceError> {
    caller.require_admin()?;
    Ok(state
        .store
        .accounts(limit)
        .await?
        .iter()
        .map(Account::view)
        .collect())
}

/// `PATCH /v1/admin/accounts/{username}`. A new password, or disabling,
/// ends the person's sessions.
///
/// # Errors
/// `NeedsAdmin` for non-admins; `NoSuchAccount`; the checks of account
/// creation for what is changed.
pub async fn change_account(
    state: &AppState,
    caller: &Device,
    username: &str,
    patch: AccountPatch,
) -> Result<AccountView, ServiceError> {
    caller.require_admin()?;
    let not_found = || ServiceError::NoSuchAccount {
        username: username.to_string(),
    };
    let current = state.store.account(username).await?.ok_or_else(not_found)?;
    if let Some(p) = &patch.password {
        check_password(p)?;
    }
    check_display_name(patch.display_name.as_deref())?;
    let role = patch.role.unwrap_or(current.role);
    let unit = patch.org_unit.as_deref().or(current.org_unit.as_deref());
    check_role_unit(state, role, unit, patch.org_unit.is_some())?;
    let password_hash = match patch.password {
        Some(p) => Some(hash_password(state, p).await?),
        None => None,
    };
    let change = AccountChange {
        password_hash,
        disabled: patch.disabled,
        role: patch.role,
        org_unit: patch.org_unit,
        display_name: patch.display_name,
    };
    let changed = state
        .store
        .change_account(username, change)
        .await?
        .ok_or_else(not_found)?;
    Ok(changed.view())
}

/// `POST /v1/sessions`: a username and password become a session token.
///
/// # Errors
/// `SignInLocked` while the username is locked out; `Busy` while the
/// hashing queue is full; `BadCredentials` for an unknown username or a
/// wrong password (the same answer); `AccountDisabled` for a disabled
/// account with the right password.
pub async fn sign_in(
    state: &AppState,
    username: &str,
    password: String,
) -> Result<SessionIssued, ServiceError> {
    let username = typed_username(username);
    let now = state.config.clock.now_ms();
    let guards = &state.limits.people;
    let refused = || ServiceError::BadCredentials;
    // No account has such a name (`add_account` refuses it), so nothing
    // is revealed by answering at once, and no hashing is spent on it.
    if !valid_username(&username) {
        return Err(refused());
    }
    let ticket = hashing_ticket(state)?;
    guards
        .reserve_sign_in(&username, now)
        .map_err(|secs| ServiceError::SignInLocked { secs })?;
    let account = state.store.account(&username).await?;
    let phc = account.as_ref().map(|a| a.password_hash.clone());
    let matches = verify_password(&ticket, password, phc).await?;
    drop(ticket);
    let Some(account) = account.filter(|_| matches) else {
        return Err(refused());
    };
    guards.sign_in_succeeded(&username);
    if account.disabled {
        return Err(ServiceError::AccountDisabled);
    }
    let token = auth::new_secret(state.config.ids.as_ref());
    let session = Session {
        username: account.username.clone(),
        epoch: account.epoch,
        created_ms: now,
        expires_ms: now + SESSION_TTL_MS,
    };
    let expires_ms = session.expires_ms;
    state
        .store
        .put_session(auth::hash_token(&token), session, SESSIONS_PER_ACCOUNT_MAX)
        .await?;
    Ok(SessionIssued {
        token,
        expires_ms,
        role: account.role,
        org_unit: account.org_unit,
        username: account.username,
    })
}

/// `DELETE /v1/sessions/current`.
///
/// # Errors
/// `NotASession` for a device token: only a session signs out.
pub async fn sign_out(state: &AppState, who: &Principal) -> Result<(), ServiceError> {
    match who {
        Principal::Session { hash, .. } => {
            state.store.end_session(*hash).await?;
            Ok(())
        }
        Principal::Device(_) => Err(ServiceError::NotASession),
    }
}

/// The principal of a live session stored under `hash`: its account still
/// enabled, in the session's epoch, and the session not expired.
pub(crate) async fn session_principal(
    state: &AppState,
    hash: TokenHash,
) -> Result<Option<Principal>, crate::store::StoreError> {
    let Some(session) = state.store.session(hash).await? else {
        return Ok(None);
    };
    if session.expires_ms <= state.config.clock.now_ms() {
        return Ok(None);
    }
    let Some(account) = state.store.account(&session.username).await? else {
        return Ok(None);
    };
    if account.disabled || account.epoch != session.epoch {
        return Ok(None);
    }
    let acting = Device {
        id: account.id,
        role: account.role,
        org_unit: account.org_unit.clone(),
        label: account
            .display_name
            .clone()
            .unwrap_or_else(|| account.username.clone()),
        revoked: false,
        token_hash: hash,
        created_ms: session.created_ms,
        last_push_ms: None,
        report: None,
        clock_skew_ms: None,
    };
    Ok(Some(Principal::Session {
        acting,
        username: account.username,
        hash,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_short_lowercase_words() {
        for ok in ["wang", "li.na", "coord_01", "a-b", "x"] {
            assert!(valid_username(ok), "{ok}");
        }
        let long = "a".repeat(USERNAME_CHARS_MAX + 1);
        for bad in ["", "Wang", "wang li", "王", "a/b", long.as_str()] {
            assert!(!valid_username(bad), "{bad}");
        }
        assert_eq!(typed_username(" Wang "), "wang");
    }

    #[test]
    fn lockout_counts_failures_inside_the_window() {
        let one = RateLimit {
            per_sec: 1.0,
            burst: 1.0,
        };
        let g = Guards::new(one, one);
        let t0 = 1_000_000;
        // Each reservation counts, whether or not its check has ended.
        for i in 0..LOGIN_FAILURES_MAX as u64 {
            assert_eq!(g.reserve_sign_in("wang", t0 + i), Ok(()));
        }
        let wait = g.reserve_sign_in("wang", t0 + 10).unwrap_err();
        assert_eq!(wait, LOGIN_WINDOW_MS.div_ceil(1000));
        assert_eq!(g.reserve_sign_in("li", t0 + 10), Ok(()), "per username");
        // The oldest failure leaves the window: one more try, and only one.
        assert_eq!(g.reserve_sign_in("wang", t0 + LOGIN_WINDOW_MS), Ok(()));
        assert!(g.reserve_sign_in("wang", t0 + LOGIN_WINDOW_MS).is_err());
        g.sign_in_succeeded("wang");
        assert_eq!(g.reserve_sign_in("wang", t0 + 11), Ok(()));
    }

    #[test]
    fn the_hashing_queue_is_bounded() {
        let one = RateLimit {
            per_sec: 1.0,
            burst: 1.0,
        };
        let g = Guards::new(one, one);
        let held: Vec<_> = (0..PASSWORD_HASH_QUEUE_MAX)
            .map(|_| g.join_hashing().unwrap())
            .collect();
        assert_eq!(
            g.join_hashing().err(),
            Some(PASSWORD_HASH_RETRY_SECS),
            "one past the queue"
        );
        drop(held);
        assert!(g.join_hashing().is_ok(), "places are given back");
    }

    #[test]
    fn passwords_verify_and_unknown_accounts_never_do() {
        let salt = SaltString::encode_b64(&[7u8; 16]).unwrap();
        let phc = hasher()
            .hash_password(b"correct horse battery", &salt)
            .unwrap()
            .to_string();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        let h = PasswordHash::new(&phc).unwrap();
        assert!(hasher()
            .verify_password(b"correct horse battery", &h)
            .is_ok());
        assert!(hasher().verify_password(b"wrong horse", &h).is_err());
        assert!(PasswordHash::new(dummy_hash()).is_ok());
    }
}
