//! The store boundary: narrow traits of domain operations, one per
//! capability ([`SyncStore`], [`AdminStore`], [`ReadStore`],
//! [`PeopleStore`], [`PeriodStore`], [`DuplicateStore`],
//! [`MaintenanceStore`]), which [`Store`] gathers. Handlers
//! call these and never see bytes, keys or transactions. `sled` is the
//! embedded implementation, `pg` the PostgreSQL one for deployments that
//! outgrow a machine.
//!
//! Judging and merging live in `pufa-core`; a store loads what a mutation
//! touches, calls core, and writes the result atomically. What both stores
//! do alike is written once here: the write logic (`apply`), group commit
//! (`commit`), the record pages of [`ReadStore::records`] (`paging`) and
//! which sessions a sign-in ends (`sessions`).

pub(crate) mod apply;
pub mod backup;
pub mod codec;
pub(crate) mod commit;
pub mod disk;
pub mod migrate;
pub(crate) mod paging;
pub mod pg;
pub(crate) mod sessions;
pub mod sled;
pub(crate) mod upgrade;
pub mod verify;

use std::sync::Arc;

use async_trait::async_trait;
use pufa_core::date::Date;
use pufa_core::org::{OrgTree, OrgTreeError, Scope};
use pufa_core::period::{Approval, Locks, Period, PeriodAction, PeriodState, StepRefused};
use pufa_core::report::{Behind, YearFigures};
use pufa_core::schema::Rejection;
use pufa_core::wire::{
    AccountView, CodeView, ConflictView, DeviceReport, DeviceView, HistoryEntry, Mutation,
    MutationResult, OrgUnit, PullEntry, RecordView, RejectionView, Role, TokenIssued,
    TotalsResponse,
};
use uuid::Uuid;

/// Most feed entries one pull examines (in scope or not) before it answers
/// with `has_more`, so a narrow scope cannot make one request scan for ever.
/// Both stores keep it.
pub const PULL_SCAN_MAX: usize = 100_000;
/// Most records one [`ReadStore::records`] call examines before it answers with
/// a `next` to continue from, however few matched.
pub const RECORDS_SCAN_MAX: usize = 200_000;
/// Most rejections or conflicts one listing examines.
pub const LIST_SCAN_MAX: usize = 200_000;

/// Locks `m`, also after a panic while it was held: a write is applied whole
/// or not at all (a sled batch, a PostgreSQL transaction), so what a
/// poisoned lock guards is sound.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// SHA-256 of a token secret: the only form in which secrets are stored.
pub type TokenHash = [u8; 32];

/// Storage failures. Expected outcomes (rejections, conflicts, duplicates)
/// are values, never these.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk cannot take writes now (full, or an IO error): retryable.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Data on disk that this version cannot read.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    #[error("storage error: {0}")]
    Other(String),
    /// An operation this store does not offer (e.g. an online backup of a
    /// PostgreSQL store, which PostgreSQL's own tools make).
    #[error("{0}")]
    Unsupported(String),
}

impl StoreError {
    /// The same error again, for each of several waiters on one write.
    pub fn again(&self) -> StoreError {
        match self {
            StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
            StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
            StoreError::Other(m) => StoreError::Other(m.clone()),
            StoreError::Unsupported(m) => StoreError::Unsupported(m.clone()),
        }
    }
}

impl From<::sled::Error> for StoreError {
    fn from(e: ::sled::Error) -> StoreError {
        match e {
            // sled repeats its first IO error as `Os { .. }` text: say it plainly.
            ::sled::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
                StoreError::Unavailable("the disk holding the store is full".into())
            }
            ::sled::Error::Io(io) => StoreError::Unavailable(io.to_string()),
            ::sled::Error::Corruption { .. } => StoreError::Corrupt(e.to_string()),
            other => StoreError::Other(other.to_string()),
        }
    }
}

/// A device and its token (stored as [`disk::DeviceV`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Device {
    pub id: Uuid,
    pub role: Role,
    /// `None` only for the bootstrap admin.
    pub org_unit: Option<String>,
    pub label: String,
    pub revoked: bool,
    pub token_hash: TokenHash,
    pub created_ms: u64,
    pub last_push_ms: Option<u64>,
    pub report: Option<DeviceReport>,
    /// The server's clock minus the device's `now_ms`, from the latest
    /// report that had a `now_ms` (a later report without one keeps it).
    pub clock_skew_ms: Option<i64>,
}

impl Device {
    /// What this device may see: admins everything, others their unit's subtree.
    pub fn scope(&self) -> Scope {
        match (&self.role, &self.org_unit) {
            (Role::Admin, _) | (_, None) => Scope::All,
            (_, Some(u)) => Scope::Unit(u.clone()),
        }
    }

    /// Whether a caller with `scope` sees this device. An admin's scope is
    /// everything whatever unit its token names, so only an unscoped caller
    /// sees an admin (as it sees the bootstrap admin, which has no unit).
    pub fn visible_in(&self, tree: &OrgTree, scope: &Scope) -> bool {
        match (scope, &self.org_unit) {
            (Scope::All, _) => true,
            _ if self.role == Role::Admin => false,
            (Scope::Unit(_), None) => false,
            (scope, Some(u)) => tree.in_scope(u, scope),
        }
    }

    /// The answer that hands this device its new token `secret` (issued
    /// by an admin or redeemed from an enrolment code).
    pub fn issued(self, secret: String) -> TokenIssued {
        TokenIssued {
            token: secret,
            device_id: self.id,
            role: self.role,
            org_unit: self.org_unit,
            label: self.label,
        }
    }

    pub fn view(&self, last_pull_ms: Option<u64>) -> DeviceView {
        let report = self.report.clone().unwrap_or_default();
        DeviceView {
            device_id: self.id,
            label: self.label.clone(),
            role: self.role,
            org_unit: self.org_unit.clone(),
            revoked: self.revoked,
            last_push_ms: self.last_push_ms,
            last_pull_ms,
            app_version: report.app_version,
            outbox_len: report.outbox_len,
            oldest_pending_ms: report.oldest_pending_ms,
            clock_skew_ms: self.clock_skew_ms,
        }
    }
}

/// One push, already authenticated and shape-checked.
#[derive(Clone, Debug)]
pub struct PushInput {
    pub device: Device,
    pub mutations: Vec<Mutation>,
    /// Each mutation's JSON text as pushed (kept for rejections).
    pub raw: Vec<String>,
    pub report: Option<DeviceReport>,
    pub now_ms: u64,
    pub max_skew_ms: u64,
}

/// One page of the change feed.
#[derive(Clone, Debug, PartialEq)]
pub struct PullPage {
    pub entries: Vec<PullEntry>,
    pub next: u64,
    pub has_more: bool,
}

/// The caller's view for the checksum: `(seq, count, xor)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScopeChecksum {
    pub seq: u64,
    pub count: u64,
    pub xor: u64,
}

/// Which records to list: those in `scope` behind a figure, in id order
/// after `after`.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordQuery {
    pub scope: Scope,
    pub behind: Behind,
    pub after: Option<Uuid>,
    pub limit: usize,
}

/// One page of [`RecordQuery`] results; `next` continues after the last.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordPage {
    pub records: Vec<RecordView>,
    pub next: Option<Uuid>,
}

/// A person who signs in with a password (a coordinator or an admin), as
/// stored. Not a device: it never syncs.
#[derive(Clone, PartialEq)]
pub struct Account {
    /// Stands for the person where an id is needed (the HLC node of a
    /// resolution made in a session, `whoami`'s `device_id`).
    pub id: Uuid,
    pub username: String,
    pub display_name: Option<String>,
    pub role: Role,
    /// Required for a coordinator; optional for an admin.
    pub org_unit: Option<String>,
    /// An argon2id PHC string; never the password.
    pub password_hash: String,
    pub disabled: bool,
    pub created_ms: u64,
    /// Sessions carry the epoch they began in; bumping it (a new password,
    /// disabling) ends every session at once without finding them.
    pub epoch: u64,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("username", &self.username)
            .field("role", &self.role)
            .field("org_unit", &self.org_unit)
            .field("disabled", &self.disabled)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Account {
    pub fn view(&self) -> AccountView {
        AccountView {
            username: self.username.clone(),
            display_name: self.display_name.clone(),
            role: self.role,
            org_unit: self.org_unit.clone(),
            disabled: self.disabled,
            created_ms: self.created_ms,
        }
    }

    /// The account with `change` applied. A new password, or disabling,
    /// moves to the next epoch: the sessions of the old one end.
    pub fn changed(&self, change: &AccountChange) -> Account {
        let mut next = self.clone();
        if let Some(hash) = &change.password_hash {
            next.password_hash = hash.clone();
            next.epoch += 1;
        }
        if let Some(disabled) = change.disabled {
            if disabled && !self.disabled {
                next.epoch += 1;
            }
            next.disabled = disabled;
        }
        if let Some(role) = change.role {
            next.role = role;
        }
        if let Some(unit) = &change.org_unit {
            next.org_unit = Some(unit.clone());
        }
        if let Some(name) = &change.display_name {
            next.display_name = Some(name.clone());
        }
        next
    }
}

/// What `PATCH /v1/admin/accounts/{username}` changes (already checked).
#[derive(Clone, Default, PartialEq)]
pub struct AccountChange {
    pub password_hash: Option<String>,
    pub disabled: Option<bool>,
    pub role: Option<Role>,
    pub org_unit: Option<String>,
    pub display_name: Option<String>,
}

/// A person's sign-in session, stored under the hash of its token.
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    pub username: String,
    /// The account's epoch when it began (see [`Account::epoch`]).
    pub epoch: u64,
    pub created_ms: u64,
    pub expires_ms: u64,
}

/// An enrolment code, stored under its id and (for redeeming) its hash.
#[derive(Clone, Debug, PartialEq)]
pub struct EnrolmentCode {
    pub id: Uuid,
    pub code_hash: TokenHash,
    pub role: Role,
    pub org_unit: String,
    pub label: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub created_by: String,
}

impl EnrolmentCode {
    /// The device redeeming this code makes.
    pub fn device(&self, r: Redemption) -> Device {
        Device {
            id: r.device_id,
            role: self.role,
            org_unit: Some(self.org_unit.clone()),
            label: r.label.unwrap_or_else(|| self.label.clone()),
            revoked: false,
            token_hash: r.token_hash,
            created_ms: r.now_ms,
            last_push_ms: None,
            report: None,
            clock_skew_ms: None,
        }
    }

    pub fn view(&self) -> CodeView {
        CodeView {
            id: self.id,
            role: self.role,
            org_unit: self.org_unit.clone(),
            label: self.label.clone(),
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            created_by: self.created_by.clone(),
        }
    }
}

/// The device a redeemed code makes (the rest comes from the code).
#[derive(Clone, Debug, PartialEq)]
pub struct Redemption {
    pub device_id: Uuid,
    pub token_hash: TokenHash,
    /// Overrides the code's label when given.
    pub label: Option<String>,
    pub now_ms: u64,
}

/// What a coordinator's write to one record did (a resolution, or a
/// delete through [`DuplicateStore::delete_record`]).
#[derive(Clone, Debug, PartialEq)]
pub enum ResolveOutcome {
    /// Written: the record as it now is.
    Resolved(RecordView),
    /// Unknown, already closed, or outside the caller's scope.
    NotFound,
    Invalid(Rejection),
}

/// A unit's reporting period as it stands (stored as
/// [`disk::PeriodV`]); a period no one acted on is not stored and is
/// [`PeriodState::Open`].
#[derive(Clone, Debug, PartialEq)]
pub struct StoredPeriod {
    pub org_unit: String,
    pub period: Period,
    pub state: PeriodState,
    /// Who took the last step (a person's username, or a device's label).
    pub by: String,
    pub at_ms: u64,
    /// The last step's comment ("" when none was given).
    pub comment: String,
}

impl StoredPeriod {
    /// The approval it is, when approved.
    pub fn approval(&self) -> Option<Approval> {
        (self.state == PeriodState::Approved).then(|| Approval {
            org_unit: self.org_unit.clone(),
            period: self.period,
            approved_by: self.by.clone(),
            approved_ms: self.at_ms,
        })
    }
}

/// One step on a period, its scope and role already checked.
#[derive(Clone, Debug)]
pub struct PeriodStepInput {
    pub org_unit: String,
    pub period: Period,
    pub action: PeriodAction,
    pub comment: String,
    pub device_id: Uuid,
    /// The name the step is logged and shown under.
    pub by: String,
    pub now_ms: u64,
}

/// What a period step did.
#[derive(Clone, Debug, PartialEq)]
pub enum PeriodOutcome {
    Done(StoredPeriod),
    Refused(StepRefused, Option<Approval>),
}

/// What a device's sync uses: the store's identity and org tree, token checks,
/// pushes, the change feed and the checksum.
#[async_trait]
pub trait SyncStore: Send + Sync + 'static {
    /// Names this store; survives restarts (§7).
    fn store_id(&self) -> Uuid;

    /// The current org tree (a cheap snapshot).
    fn org_tree(&self) -> Arc<OrgTree>;

    /// The device whose token hashes to `hash`, if any and not revoked.
    async fn authenticate(&self, hash: TokenHash) -> Result<Option<Device>, StoreError>;

    async fn device(&self, id: Uuid) -> Result<Option<Device>, StoreError>;

    /// Applies a push (§6) and returns one result per mutation, after all of
    /// it is durable.
    async fn push(&self, input: PushInput) -> Result<Vec<MutationResult>, StoreError>;

    /// A page of records in `scope` changed after `since` (§7).
    async fn pull(&self, scope: Scope, since: u64, limit: usize) -> Result<PullPage, StoreError>;

    /// Remembers when a device last pulled (not an acknowledged write).
    async fn note_pull(&self, device: Uuid, now_ms: u64) -> Result<(), StoreError>;

    async fn checksum(&self, scope: &Scope) -> Result<ScopeChecksum, StoreError>;
}

/// Writes made by admins and coordinators rather than by pushes: devices and
/// their tokens, the org tree, conflict resolutions.
#[async_trait]
pub trait AdminStore: Send + Sync + 'static {
    /// Whether the bootstrap admin exists (§1).
    async fn admin_bootstrapped(&self) -> Result<bool, StoreError>;

    /// Stores the bootstrap admin device and marks the store bootstrapped.
    /// Returns `false`, storing nothing, when the store already has one
    /// (another server instance on the same database made it first).
    async fn bootstrap_admin(&self, device: Device) -> Result<bool, StoreError>;

    /// Creates a device, or re-enrols it (its old token stops working).
    /// Durable when it returns.
    async fn put_device(&self, device: Device) -> Result<(), StoreError>;

    /// Revokes a device's token; `false` if there is no such device.
    async fn revoke_device(&self, id: Uuid) -> Result<bool, StoreError>;

    /// Upserts org units; moves records of re-parented subtrees (§4),
    /// logging each move as `by`'s.
    async fn upsert_org_units(
        &self,
        units: Vec<OrgUnit>,
        by: &Device,
        now_ms: u64,
    ) -> Result<Result<usize, OrgTreeError>, StoreError>;

    /// Writes a coordinator's decision and closes the conflict.
    /// `person`: the username when a person's session resolves (the audit
    /// entry names them instead of a device).
    async fn resolve(
        &self,
        conflict: Uuid,
        value: serde_json::Value,
        by: &Device,
        person: Option<String>,
        now_ms: u64,
    ) -> Result<ResolveOutcome, StoreError>;
}

/// Reporting periods: their steps (each logged in the audit chain in the
/// same atomic write) and their states. Approved periods lock pushes,
/// resolutions and re-parenting ([`pufa_core::period`]).
#[async_trait]
pub trait PeriodStore: Send + Sync + 'static {
    /// Takes `step` on the period as stored now (the transition is
    /// judged inside the write, so two coordinators acting at once cannot
    /// both win).
    async fn period_step(&self, step: PeriodStepInput) -> Result<PeriodOutcome, StoreError>;

    /// Every stored period of `year` (all units), unit then period order.
    async fn periods_of_year(&self, year: i32) -> Result<Vec<StoredPeriod>, StoreError>;

    /// Every approved period: the locks in force.
    async fn locks(&self) -> Result<Locks, StoreError>;
}

/// A pair of records a coordinator marked "not a duplicate" (stored as
/// [`disk::DismissalV`]), `a` the smaller id.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredDismissal {
    pub a: Uuid,
    pub b: Uuid,
    /// Who marked it (a person's username, or a device's label).
    pub by: String,
    pub at_ms: u64,
}

/// A "not a duplicate" mark to make, its role already checked.
#[derive(Clone, Debug)]
pub struct DismissInput {
    /// Smaller id first ([`pufa_core::duplicates::pair`]).
    pub a: Uuid,
    pub b: Uuid,
    /// The caller: both records must be in its scope.
    pub device: Device,
    /// The signed-in person, logged instead of the device.
    pub person: Option<String>,
    pub now_ms: u64,
}

/// What a "not a duplicate" mark did.
#[derive(Clone, Debug, PartialEq)]
pub enum DismissOutcome {
    /// Marked now (and logged in the audit chain).
    Dismissed(StoredDismissal),
    /// Marked before: nothing written.
    Already(StoredDismissal),
    /// A record unknown or outside the caller's scope.
    NotFound,
}

/// Likely double entries: the "not a duplicate" marks, and a
/// coordinator's delete of one record (each logged in the audit chain in
/// the same atomic write).
#[async_trait]
pub trait DuplicateStore: Send + Sync + 'static {
    /// Marks a pair "not a duplicate".
    async fn dismiss_pair(&self, input: DismissInput) -> Result<DismissOutcome, StoreError>;

    /// Of `pairs` (each smaller id first), those marked "not a duplicate".
    async fn dismissed(&self, pairs: Vec<(Uuid, Uuid)>) -> Result<Vec<(Uuid, Uuid)>, StoreError>;

    /// Deletes record `id` for a coordinator, like a resolution of its
    /// `_deleted` (a server HLC, a new seq, an audit entry, the figures
    /// updated). `NotFound` for a record unknown, deleted already or
    /// outside `by`'s scope; `Invalid` (`period_locked`) in an approved
    /// period.
    async fn delete_record(
        &self,
        id: Uuid,
        by: &Device,
        person: Option<String>,
        now_ms: u64,
    ) -> Result<ResolveOutcome, StoreError>;
}

/// What coordinators read: figures (from the aggregates), the records behind
/// them, conflicts, devices, rejections and a record's history.
#[async_trait]
pub trait ReadStore: Send + Sync + 'static {
    /// Totals for the subtree of `org` (an existing unit).
    async fn totals(
        &self,
        org: &str,
        from: Option<Date>,
        to: Option<Date>,
    ) -> Result<Option<TotalsResponse>, StoreError>;

    /// A year's figures for the subtree of `org` (an existing unit), from
    /// the aggregates (library corners as they are now; callers that show a
    /// period use `crate::asof::year_figures`, corners as of its end).
    async fn year_figures(&self, org: &str, year: i32) -> Result<Option<YearFigures>, StoreError>;

    /// Records behind a figure. This scans records (there is no per-unit
    /// index: it cost push throughput), so it is for drill-down and exports,
    /// not for figures.
    async fn records(&self, query: RecordQuery) -> Result<RecordPage, StoreError>;

    /// One record as it stands, whatever its scope (callers check).
    async fn record(&self, id: Uuid) -> Result<Option<RecordView>, StoreError>;

    /// Open conflicts on records in `scope`, newest first.
    async fn conflicts(&self, scope: Scope, limit: usize) -> Result<Vec<ConflictView>, StoreError>;

    /// Devices whose scope lies inside `scope`.
    async fn devices(&self, scope: Scope, limit: usize) -> Result<Vec<DeviceView>, StoreError>;

    /// Rejected mutations from devices inside `scope`, newest first.
    async fn rejections(
        &self,
        scope: Scope,
        limit: usize,
    ) -> Result<Vec<RejectionView>, StoreError>;

    /// A record's audit entries after `after`, oldest first, as far as
    /// `scope` may read them ([`readable_history`]); `None` when the record
    /// is unknown or was never in `scope`.
    async fn history(
        &self,
        scope: Scope,
        record: Uuid,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<HistoryEntry>>, StoreError>;
}

/// People and enrolment codes: accounts, sign-in sessions, codes that enrol
/// a device.
#[async_trait]
pub trait PeopleStore: Send + Sync + 'static {
    async fn account(&self, username: &str) -> Result<Option<Account>, StoreError>;

    /// Every account, in username order, at most `limit`.
    async fn accounts(&self, limit: usize) -> Result<Vec<Account>, StoreError>;

    /// Stores a new account; `false` (and nothing written) if the username
    /// is taken. Durable when it returns.
    async fn create_account(&self, account: Account) -> Result<bool, StoreError>;

    /// Applies `change` to an account under the writer lock (so two admins'
    /// edits never undo each other); `None` if there is no such account.
    async fn change_account(
        &self,
        username: &str,
        change: AccountChange,
    ) -> Result<Option<Account>, StoreError>;

    /// Stores a session under its token's hash, and drops expired sessions
    /// and, past `per_account_max`, the account's oldest ones. Durable.
    async fn put_session(
        &self,
        hash: TokenHash,
        session: Session,
        per_account_max: usize,
    ) -> Result<(), StoreError>;

    /// The session stored under `hash` (expired or not: callers judge).
    async fn session(&self, hash: TokenHash) -> Result<Option<Session>, StoreError>;

    /// Ends a session; `false` if there was none. Durable.
    async fn end_session(&self, hash: TokenHash) -> Result<bool, StoreError>;

    /// Stores a new enrolment code, dropping expired ones. Durable.
    async fn put_code(&self, code: EnrolmentCode, now_ms: u64) -> Result<(), StoreError>;

    /// Codes not yet used or withdrawn, expired ones included (callers
    /// judge), in id order.
    async fn codes(&self) -> Result<Vec<EnrolmentCode>, StoreError>;

    /// Withdraws a code; `false` if there is none.
    async fn withdraw_code(&self, id: Uuid) -> Result<bool, StoreError>;

    /// Uses up the code whose hash is `hash`, if it exists and has not
    /// expired, and creates its device, in one durable write; `None`
    /// changes nothing. Two requests with one code: one device.
    async fn redeem_code(
        &self,
        hash: TokenHash,
        redemption: Redemption,
    ) -> Result<Option<Device>, StoreError>;
}

/// Keeping the store running: health, shutdown and online backup.
#[async_trait]
pub trait MaintenanceStore: Send + Sync + 'static {
    /// `Some(reason)` once the storage has failed so that the store takes no
    /// more writes until it is reopened (sled stops writing after its first
    /// IO error, e.g. a full disk, for the life of the `Db`). `serve` watches
    /// it, and reopens the store once space is free again.
    fn failure(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        // A store that never fails this way: the sender is gone, the value
        // stays `None`.
        tokio::sync::watch::channel(None).1
    }

    /// What, in how the store is set up, puts acknowledged writes at risk
    /// (`/v1/health` lists it): PostgreSQL running with `fsync`,
    /// `synchronous_commit` or `full_page_writes` off.
    fn durability_warnings(&self) -> Vec<String> {
        Vec::new()
    }

    /// Whether the store can serve now (`/v1/health`): PostgreSQL answers
    /// within `pg::READY_TIMEOUT_MS`. The embedded store is always there.
    async fn ready(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Makes every acknowledged write durable (shutdown).
    async fn flush(&self) -> Result<(), StoreError>;

    /// Starts an online backup: a consistent copy of the whole store as of
    /// now, in the format of [`backup`], delivered in chunks while writes
    /// go on. One at a time.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] while another backup runs. An error
    /// later on arrives as the last chunk (the copy is then unusable).
    async fn backup(&self, now_ms: u64) -> Result<BackupChunks, StoreError>;
}

/// The domain operations every store provides: every capability above. Handlers
/// hold a [`DynStore`]; each backend implements the capabilities one by one.
pub trait Store:
    SyncStore + AdminStore + ReadStore + PeopleStore + PeriodStore + DuplicateStore + MaintenanceStore
{
}

impl<T> Store for T where
    T: SyncStore
        + AdminStore
        + ReadStore
        + PeopleStore
        + PeriodStore
        + DuplicateStore
        + MaintenanceStore
{
}

/// The chunks of a backup in the making.
pub type BackupChunks = tokio::sync::mpsc::Receiver<Result<Vec<u8>, StoreError>>;

/// The shared handle handlers use.
pub type DynStore = Arc<dyn Store>;

/// Of a record's audit entries `newest_first` (as far back as a history
/// page reads), those a caller with `scope` may read: all of them while
/// the record is in the scope; once it has left, the entries up to and
/// including the one that took it out, none after (access to history ends
/// where access to the record ended, as a pull answers `in_scope: false`).
///
/// Walking back from the record's current place (`current_unit` in
/// `tree`), the place before each entry is the `from` of a re-parenting's
/// path, or for a change of `org_unit` that unit's place in today's tree
/// (the tree as it was is not kept; when it differs, fewer entries are
/// shown, never more).
pub(crate) fn readable_history(
    mut newest_first: Vec<codec::StoredAudit>,
    tree: &OrgTree,
    scope: &Scope,
    current_unit: Option<&str>,
) -> Vec<codec::StoredAudit> {
    let Scope::Unit(root) = scope else {
        return newest_first;
    };
    let mut chain: Vec<String> = current_unit.map(|u| tree.chain(u)).unwrap_or_default();
    if chain.contains(root) {
        return newest_first;
    }
    let cut = newest_first.iter().position(|e| {
        for c in &e.body.changes {
            if c.field == pufa_core::audit::PATH_FIELD {
                chain = serde_json::from_value(c.from.clone()).unwrap_or_default();
            } else if c.field == "org_unit" {
                chain = c.from.as_str().map(|u| tree.chain(u)).unwrap_or_default();
            }
        }
        chain.contains(root)
    });
    match cut {
        Some(i) => {
            newest_first.drain(..i);
            newest_first
        }
        None => Vec::new(),
    }
}
