//! `pufa-client`: the Pufa Sync SDK a field app embeds.
//!
//! Everything works offline. Every local edit becomes a *mutation* in a
//! durable outbox before the call returns; reads show the server-confirmed
//! record with pending edits applied on top. [`Client::sync`] pushes the
//! outbox, pulls the change feed, checks the checksum and repairs, and says
//! exactly what happened in a [`SyncReport`].
//!
//! Merge and validation are `pufa-core`'s: the SDK judges local edits with
//! the same field rules the server uses, and never merges by itself — the
//! server's answer is the truth a sync converges to.
//!
//! See `docs/sdk.md` for a guide; its examples run as doctests ([`guide`]).
//!
//! - [`store`]: the local sled store. [`sync`]: plan and execute a sync.
//! - [`transport`]: the HTTP seam. [`model`]: what the app sees.
//! - [`admin`]: the calls outside sync (org units, tokens, enrolment codes,
//!   figures, enrolment), typed: [`AdminClient`].

pub mod admin;
pub mod error;
pub mod model;
pub mod store;
pub mod sync;
pub mod transport;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pufa_core::date::Date;
use pufa_core::kinds::RecordKind;
use pufa_core::org::OrgTree;
use pufa_core::schema::{check_set, first_missing_required, Kind, RejectCode, Rejection, Today};
use pufa_core::wire::Mutation;
use rand::SeedableRng;
use serde_json::{Map, Value};
use uuid::Uuid;

pub use admin::AdminClient;
pub use error::{Error, Result};
pub use model::{
    ConflictNotice, Filter, LocalRecord, Phase, Progress, RejectedEdit, SyncReport, SyncState,
};
use store::{Confirmed, EntryStatus, LocalStore, OutboxEntry, Staged};
pub use transport::{HttpTransport, Transport};

/// The guide in `docs/sdk.md`, compiled and run as doctests.
#[doc = include_str!("../../docs/sdk.md")]
pub mod guide {}

/// The device's wall clock, in ms since the Unix epoch. Injected so tests
/// and simulations control time.
pub trait DeviceClock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

/// The operating system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl DeviceClock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// Most mutations per push (the contract allows 1000; 500 keeps the
/// largest lectures well under the 8 MiB body limit).
pub const PUSH_BATCH_MAX: usize = 500;
/// Largest push body the SDK builds, in bytes; batches are split below it.
pub const PUSH_BODY_BYTES_MAX: usize = 4 * 1024 * 1024;

/// How transient failures (no answer, 5xx, 429) are retried.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Tries per request, the first included.
    pub attempts: u32,
    /// Delay before the first retry; doubles each time, up to `max_delay`,
    /// times a random factor in [0.5, 1) (jitter).
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Seed of the jitter; fixed seeds make simulations reproducible.
    pub seed: u64,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 6,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
            seed: 0,
        }
    }
}

/// Everything a [`Client`] needs.
pub struct ClientConfig {
    /// Where the local store lives (one per device).
    pub data_dir: PathBuf,
    /// The device id the server issued with the token.
    pub device_id: Uuid,
    pub token: String,
    /// Reported to the server with each push.
    pub app_version: String,
    pub retry: RetryPolicy,
    /// Mutations per push, at most [`PUSH_BATCH_MAX`].
    pub push_batch: usize,
    /// Records per pull page (the server caps it at 5000).
    pub pull_limit: usize,
    pub clock: Arc<dyn DeviceClock>,
}

impl ClientConfig {
    pub fn new(
        data_dir: impl Into<PathBuf>,
        device_id: Uuid,
        token: impl Into<String>,
    ) -> ClientConfig {
        ClientConfig {
            data_dir: data_dir.into(),
            device_id,
            token: token.into(),
            app_version: concat!("pufa-client/", env!("CARGO_PKG_VERSION")).to_string(),
            retry: RetryPolicy::default(),
            push_batch: PUSH_BATCH_MAX,
            pull_limit: 1000,
            clock: Arc::new(SystemClock),
        }
    }
}

/// A device's handle: cheap to clone, starts no background tasks.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: LocalStore,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) device_id: Uuid,
    pub(crate) token: Mutex<String>,
    pub(crate) app_version: String,
    pub(crate) retry: RetryPolicy,
    pub(crate) push_batch: usize,
    pub(crate) pull_limit: usize,
    pub(crate) clock: Arc<dyn DeviceClock>,
    /// Serialises read-modify-writes of the metadata (local edits, sync).
    pub(crate) meta_lock: Mutex<()>,
    /// One sync at a time.
    pub(crate) sync_lock: tokio::sync::Mutex<()>,
    pub(crate) jitter: Mutex<rand_chacha::ChaCha8Rng>,
}

/// One local edit: record, kind, fields to set, delete flag.
type Edit = (Uuid, Kind, Map<String, Value>, Option<bool>);

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A short description of this device's sync position.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    pub device_id: Uuid,
    /// Mutations not yet acknowledged.
    pub pending: u64,
    /// Mutations the server refused, kept for the user.
    pub rejected: u64,
    pub oldest_pending_ms: Option<u64>,
    pub last_sync_ms: Option<u64>,
    pub cursor: u64,
    pub store_id: Option<Uuid>,
    /// Server clock minus this device's clock, as last learned (ms).
    pub clock_offset_ms: i64,
    pub lost_on_server: u64,
}

impl Client {
    /// Opens (or creates) the device's store and binds it to a transport.
    ///
    /// # Errors
    /// The store cannot be opened, or belongs to another device.
    pub fn open(config: ClientConfig, transport: Arc<dyn Transport>) -> Result<Client> {
        pufa_durable::create_dir_all(&config.data_dir)
            .map_err(|e| Error::Store(format!("{}: {e}", config.data_dir.display())))?;
        let store = LocalStore::open(&config.data_dir)?;
        let mut meta = store.meta()?;
        match meta.device_id {
            Some(stored) if stored != config.device_id => {
                return Err(Error::WrongDevice {
                    stored,
                    given: config.device_id,
                })
            }
            Some(_) => {}
            None => {
                meta.device_id = Some(config.device_id);
                let mut s = Staged::default();
                s.meta(&meta);
                store.commit(s, true)?;
            }
        }
        Ok(Client {
            inner: Arc::new(Inner {
                store,
                transport,
                device_id: config.device_id,
                token: Mutex::new(config.token),
                app_version: config.app_version,
                jitter: Mutex::new(rand_chacha::ChaCha8Rng::seed_from_u64(config.retry.seed)),
                retry: config.retry,
                push_batch: config.push_batch.clamp(1, PUSH_BATCH_MAX),
                pull_limit: config.pull_limit.clamp(1, pufa_core::wire::PULL_LIMIT_MAX),
                clock: config.clock,
                meta_lock: Mutex::new(()),
                sync_lock: tokio::sync::Mutex::new(()),
            }),
        })
    }

    pub fn device_id(&self) -> Uuid {
        self.inner.device_id
    }

    /// Replaces the token (after re-enrolment). The store and the outbox are
    /// kept: the device keeps its identity.
    pub fn set_token(&self, token: impl Into<String>) {
        *lock(&self.inner.token) = token.into();
    }

    /// The device clock corrected by the offset learned from the server.
    fn now_corrected(&self, offset: i64) -> u64 {
        (self.inner.clock.now_ms() as i64)
            .saturating_add(offset)
            .max(0) as u64
    }

    fn org_tree(&self) -> Result<OrgTree> {
        Ok(OrgTree::from_units(self.inner.store.units()?))
    }

    /// Judges a local edit with the server's rules, as far as the device can
    /// know them (the org unit is checked once a sync has fetched the tree).
    fn check_local(
        &self,
        kind: Kind,
        set: &Map<String, Value>,
        new: bool,
        today: Today,
    ) -> Result<()> {
        self.check_local_in(&self.org_tree()?, kind, set, new, today)
    }

    fn check_local_in(
        &self,
        tree: &OrgTree,
        kind: Kind,
        set: &Map<String, Value>,
        new: bool,
        today: Today,
    ) -> Result<()> {
        check_set(kind, set, today)?;
        if new {
            let has = |f: &str| set.get(f).is_some_and(|v| !v.is_null());
            if let Some(missing) = first_missing_required(kind, has) {
                return Err(Rejection::new(
                    RejectCode::MissingField,
                    Some(missing),
                    format!("a new {} needs {missing}", kind.as_str()),
                )
                .into());
            }
        }
        if let Some(code) = set.get("org_unit").and_then(Value::as_str) {
            if !tree.is_empty() && !tree.contains(code) {
                return Err(Rejection::new(
                    RejectCode::UnknownOrgUnit,
                    Some("org_unit"),
                    format!("org unit {code:?} is not among this device's units"),
                )
                .into());
            }
        }
        Ok(())
    }

    /// Appends mutations to the outbox; durable when it returns.
    fn record(&self, edits: Vec<Edit>) -> Result<Vec<Uuid>> {
        self.record_with(edits, |_| {})
    }

    /// [`Client::record`], with more changes in the same atomic write.
    fn record_with(&self, edits: Vec<Edit>, extra: impl FnOnce(&mut Staged)) -> Result<Vec<Uuid>> {
        let _g = lock(&self.inner.meta_lock);
        let mut meta = self.inner.store.meta()?;
        let mut hlc = meta.hlc_clock();
        let mut staged = Staged::default();
        let mut ids = Vec::with_capacity(edits.len());
        let wall = self.inner.clock.now_ms();
        let now = self.now_corrected(meta.clock_offset_ms);
        for (record_id, kind, set, delete) in edits {
            let base_seq = self
                .inner
                .store
                .confirmed(record_id)?
                .map_or(0, |c| c.view.seq);
            let m = Mutation {
                id: Uuid::now_v7(),
                record_id,
                kind: kind.as_str().to_string(),
                base_seq,
                hlc: hlc.next(now, self.inner.device_id),
                set,
                delete,
            };
            ids.push(m.id);
            staged.put_entry(&OutboxEntry {
                n: meta.outbox_next,
                mutation: m,
                status: EntryStatus::Pending,
                created_ms: wall,
            });
            meta.outbox_next += 1;
        }
        meta.hlc = hlc.parts();
        staged.meta(&meta);
        extra(&mut staged);
        self.inner.store.commit(staged, true)?;
        Ok(ids)
    }

    fn today(&self) -> Result<Today> {
        let meta = self.inner.store.meta()?;
        Ok(Today(Date::from_unix_ms(
            self.now_corrected(meta.clock_offset_ms),
        )))
    }

    /// Records a new record from a field map; returns its id (UUID v7).
    ///
    /// # Errors
    /// [`Error::Invalid`] when a field breaks the kind's rules; nothing is
    /// recorded then.
    pub fn create_fields(&self, kind: Kind, fields: Map<String, Value>) -> Result<Uuid> {
        self.check_local(kind, &fields, true, self.today()?)?;
        let id = Uuid::now_v7();
        self.record(vec![(id, kind, fields, None)])?;
        Ok(id)
    }

    /// Records a new typed record ([`pufa_core::kinds::Lecture`], …).
    ///
    /// # Errors
    /// As [`Client::create_fields`].
    pub fn create<R: RecordKind>(&self, record: &R) -> Result<Uuid> {
        self.create_fields(R::KIND, record.to_fields())
    }

    /// Records many new records with one durable write (imports).
    ///
    /// # Errors
    /// The first invalid record; nothing is recorded then.
    pub fn create_many(&self, records: Vec<(Kind, Map<String, Value>)>) -> Result<Vec<Uuid>> {
        let today = self.today()?;
        let tree = self.org_tree()?;
        let mut edits = Vec::with_capacity(records.len());
        for (kind, fields) in records {
            self.check_local_in(&tree, kind, &fields, true, today)?;
            edits.push((Uuid::now_v7(), kind, fields, None));
        }
        let ids = edits.iter().map(|e| e.0).collect();
        self.record(edits)?;
        Ok(ids)
    }

    fn existing_kind(&self, id: Uuid) -> Result<Kind> {
        self.get(id)?.map(|r| r.kind).ok_or(Error::NotFound(id))
    }

    /// Sets some fields of a record (`null` clears an optional field).
    ///
    /// # Errors
    /// [`Error::NotFound`], or [`Error::Invalid`].
    pub fn update(&self, id: Uuid, set: Map<String, Value>) -> Result<()> {
        let kind = self.existing_kind(id)?;
        self.check_local(kind, &set, false, self.today()?)?;
        self.record(vec![(id, kind, set, None)]).map(drop)
    }

    /// Deletes a record (it stays, flagged, and can be restored).
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn delete(&self, id: Uuid) -> Result<()> {
        let kind = self.existing_kind(id)?;
        self.record(vec![(id, kind, Map::new(), Some(true))])
            .map(drop)
    }

    /// Restores a deleted record.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn restore(&self, id: Uuid) -> Result<()> {
        let kind = self.existing_kind(id)?;
        self.record(vec![(id, kind, Map::new(), Some(false))])
            .map(drop)
    }

    /// The local view of a record.
    ///
    /// # Errors
    /// Only local store failures.
    pub fn get(&self, id: Uuid) -> Result<Option<LocalRecord>> {
        let confirmed = self.inner.store.confirmed(id)?;
        let entries = self.inner.store.entries_for(id)?;
        self.build(id, confirmed, &entries)
    }

    /// A record as a typed struct.
    ///
    /// # Errors
    /// [`Error::NotFound`], or the record is of another kind.
    pub fn get_as<R: RecordKind>(&self, id: Uuid) -> Result<R> {
        let r = self.get(id)?.ok_or(Error::NotFound(id))?;
        if r.kind != R::KIND {
            return Err(Error::Invalid(Rejection::new(
                RejectCode::KindMismatch,
                Some("kind"),
                format!("{id} is a {}", r.kind.as_str()),
            )));
        }
        R::from_fields(&r.fields).map_err(|e| Error::Store(format!("record {id}: {e}")))
    }

    fn build(
        &self,
        id: Uuid,
        confirmed: Option<Confirmed>,
        entries: &[OutboxEntry],
    ) -> Result<Option<LocalRecord>> {
        let (mut fields, mut deleted, mut kind, seq, open) = match &confirmed {
            Some(c) => (
                c.view.fields.clone(),
                c.view.deleted,
                Kind::parse(&c.view.kind),
                c.view.seq,
                c.view.conflicts,
            ),
            None => (Map::new(), false, None, 0, 0),
        };
        let mut state = None;
        for e in entries {
            kind = kind.or_else(|| Kind::parse(&e.mutation.kind));
            for (k, v) in &e.mutation.set {
                if v.is_null() {
                    fields.remove(k);
                } else {
                    fields.insert(k.clone(), v.clone());
                }
            }
            if let Some(d) = e.mutation.delete {
                deleted = d;
            }
            match (&e.status, &state) {
                (EntryStatus::Rejected { error }, None | Some(SyncState::Pending)) => {
                    state = Some(SyncState::Rejected {
                        code: error.code.clone(),
                        message: error.message.clone(),
                        field: error.field.clone(),
                        mutation: e.mutation.id,
                    });
                }
                (_, None) => state = Some(SyncState::Pending),
                _ => {}
            }
        }
        let Some(kind) = kind else { return Ok(None) };
        let state = match state {
            Some(s) => s,
            None if open > 0 => SyncState::Conflicted {
                open,
                details: self.inner.store.notices_for(id)?,
            },
            None => SyncState::Synced,
        };
        Ok(Some(LocalRecord {
            id,
            kind,
            fields,
            deleted,
            seq,
            state,
        }))
    }

    /// Local records matching `filter`, in id order (UUID v7: creation order).
    ///
    /// # Errors
    /// Only local store failures.
    pub fn list(&self, filter: &Filter) -> Result<Vec<LocalRecord>> {
        let tree = self.org_tree()?;
        let mut ids: std::collections::BTreeSet<Uuid> =
            self.inner.store.ids_with_entries()?.into_iter().collect();
        let mut out = Vec::new();
        let keep = |r: &LocalRecord| {
            filter.kind.is_none_or(|k| r.kind == k)
                && (filter.include_deleted || !r.deleted)
                && filter.org_unit.as_deref().is_none_or(|want| {
                    r.org_unit().is_some_and(|u| {
                        if tree.is_empty() {
                            u == want
                        } else {
                            tree.is_within(u, want)
                        }
                    })
                })
                && (filter.from.is_none() && filter.to.is_none()
                    || r.date().is_some_and(|d| {
                        filter.from.is_none_or(|f| d >= f) && filter.to.is_none_or(|t| d <= t)
                    }))
        };
        for c in self.inner.store.all_confirmed() {
            let c = c?;
            let id = c.view.id;
            let entries = if ids.remove(&id) {
                self.inner.store.entries_for(id)?
            } else {
                Vec::new()
            };
            if let Some(r) = self.build(id, Some(c), &entries)? {
                if keep(&r) {
                    out.push(r);
                }
            }
        }
        for id in ids {
            if let Some(r) = self.get(id)? {
                if keep(&r) {
                    out.push(r);
                }
            }
        }
        out.sort_by_key(|r| r.id);
        Ok(out)
    }

    /// Edits the server refused, oldest first.
    ///
    /// # Errors
    /// Only local store failures.
    pub fn rejected(&self) -> Result<Vec<RejectedEdit>> {
        let mut out = Vec::new();
        for e in self.inner.store.entries() {
            let e = e?;
            if let EntryStatus::Rejected { error } = e.status {
                out.push(RejectedEdit {
                    mutation: e.mutation.id,
                    record_id: e.mutation.record_id,
                    kind: e.mutation.kind,
                    set: e.mutation.set,
                    delete: e.mutation.delete,
                    error,
                });
            }
        }
        Ok(out)
    }

    fn take_rejected(&self, mutation: Uuid) -> Result<OutboxEntry> {
        for e in self.inner.store.entries() {
            let e = e?;
            if e.mutation.id == mutation && matches!(e.status, EntryStatus::Rejected { .. }) {
                return Ok(e);
            }
        }
        Err(Error::NotFound(mutation))
    }

    /// Drops a rejected edit for good.
    ///
    /// # Errors
    /// [`Error::NotFound`] if no rejected edit has that mutation id.
    pub fn discard(&self, mutation: Uuid) -> Result<()> {
        let e = self.take_rejected(mutation)?;
        let mut s = Staged::default();
        s.remove_entry(&e);
        self.inner.store.commit(s, true)
    }

    /// Sends a rejected edit again, with `set` replacing its fields (or as
    /// it was, if `None`: e.g. once the missing org unit exists). The new
    /// edit gets a new mutation id and is judged afresh.
    ///
    /// # Errors
    /// [`Error::NotFound`], or [`Error::Invalid`] for the new fields.
    pub fn resubmit(&self, mutation: Uuid, set: Option<Map<String, Value>>) -> Result<Uuid> {
        let old = self.take_rejected(mutation)?;
        let kind = Kind::parse(&old.mutation.kind).ok_or_else(|| {
            Error::Invalid(Rejection::new(
                RejectCode::UnknownKind,
                Some("kind"),
                format!("unknown kind {:?}", old.mutation.kind),
            ))
        })?;
        let set = set.unwrap_or(old.mutation.set.clone());
        let new = self
            .inner
            .store
            .confirmed(old.mutation.record_id)?
            .is_none()
            && self
                .inner
                .store
                .entries_for(old.mutation.record_id)?
                .iter()
                .all(|e| e.n == old.n);
        self.check_local(kind, &set, new, self.today()?)?;
        let _g = lock(&self.inner.meta_lock);
        let mut meta = self.inner.store.meta()?;
        let mut hlc = meta.hlc_clock();
        let m = Mutation {
            id: Uuid::now_v7(),
            record_id: old.mutation.record_id,
            kind: old.mutation.kind.clone(),
            base_seq: self
                .inner
                .store
                .confirmed(old.mutation.record_id)?
                .map_or(0, |c| c.view.seq),
            hlc: hlc.next(
                self.now_corrected(meta.clock_offset_ms),
                self.inner.device_id,
            ),
            set,
            delete: old.mutation.delete,
        };
        let id = m.id;
        let mut s = Staged::default();
        s.remove_entry(&old);
        // Takes the old entry's place in the order, so edits made after it
        // still apply after it.
        s.put_entry(&OutboxEntry {
            n: old.n,
            mutation: m,
            status: EntryStatus::Pending,
            created_ms: self.inner.clock.now_ms(),
        });
        meta.hlc = hlc.parts();
        s.meta(&meta);
        self.inner.store.commit(s, true)?;
        Ok(id)
    }

    /// Pushes again, as new edits, the confirmed records a replaced server
    /// store no longer has ([`SyncReport::lost_on_server`]).
    ///
    /// # Errors
    /// Only local store failures.
    pub fn resubmit_lost(&self) -> Result<usize> {
        let mut edits = Vec::new();
        for id in self.inner.store.lost()? {
            if let Some(c) = self.inner.store.confirmed(id)? {
                if let Some(kind) = Kind::parse(&c.view.kind) {
                    edits.push((
                        id,
                        kind,
                        c.view.fields.clone(),
                        c.view.deleted.then_some(true),
                    ));
                }
            }
        }
        let n = edits.len();
        let ids: Vec<Uuid> = edits.iter().map(|e| e.0).collect();
        // One write: the new edits, and the records leave the confirmed set
        // (the server has none of them), so a crash cannot resubmit twice.
        self.record_with(edits, |s| ids.iter().for_each(|id| s.remove_confirmed(*id)))?;
        Ok(n)
    }

    /// The org units of this device's scope, as of the last sync (empty
    /// before the first).
    ///
    /// # Errors
    /// Only local store failures.
    pub fn org_units(&self) -> Result<Vec<pufa_core::wire::OrgUnit>> {
        self.inner.store.units()
    }

    /// Where this device stands.
    ///
    /// # Errors
    /// Only local store failures.
    pub fn status(&self) -> Result<Status> {
        let meta = self.inner.store.meta()?;
        let (mut pending, mut rejected, mut oldest) = (0, 0, None::<u64>);
        for e in self.inner.store.entries() {
            let e = e?;
            match e.status {
                EntryStatus::Pending => {
                    pending += 1;
                    oldest = Some(oldest.map_or(e.created_ms, |o| o.min(e.created_ms)));
                }
                EntryStatus::Rejected { .. } => rejected += 1,
                EntryStatus::Acked { .. } => {}
            }
        }
        Ok(Status {
            device_id: self.inner.device_id,
            pending,
            rejected,
            oldest_pending_ms: oldest,
            last_sync_ms: meta.last_sync_ms,
            cursor: meta.cursor,
            store_id: meta.store_id,
            clock_offset_ms: meta.clock_offset_ms,
            lost_on_server: self.inner.store.lost()?.len() as u64,
        })
    }

    /// Syncs with the server: push the outbox, pull the feed, verify the
    /// checksum, repair if needed. Safe to interrupt at any point and call
    /// again.
    ///
    /// # Errors
    /// [`Error::Unauthorized`] (revoked token), [`Error::Unreachable`]
    /// (after retries), [`Error::Server`] for answers retrying cannot fix.
    /// Rejections and conflicts are not errors: see the report.
    pub async fn sync(&self) -> Result<SyncReport> {
        self.sync_with_progress(|_| {}).await
    }

    /// [`Client::sync`], reporting progress (for long first syncs).
    ///
    /// # Errors
    /// As [`Client::sync`].
    pub async fn sync_with_progress(
        &self,
        progress: impl Fn(Progress) + Send + Sync,
    ) -> Result<SyncReport> {
        let _one = self.inner.sync_lock.lock().await;
        sync::run(&self.inner, &progress).await
    }
}
