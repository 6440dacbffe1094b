//! The embedded store: one sled tree, one writer at a time, group commit.
//!
//! **Writes.** Every write (push, token, org import, resolution) runs under
//! one writer lock: it reads what it touches, calls `pufa-core` to judge and
//! merge, stages all effects (records, feed index, idempotency entries,
//! conflicts, rejections, device health, aggregates, counters) in one
//! `sled::Batch`, and applies it. A crash therefore never leaves half a
//! mutation, an index without its record, or aggregates that disagree.
//!
//! **Durability.** The writer does not flush. It bumps a write generation
//! and waits, outside the lock, for the flusher task to make that
//! generation durable. The flusher runs one `flush_async` for every write
//! that arrived while the previous flush ran, so concurrent pushes share
//! fsyncs (group commit) instead of queueing behind each other. sled's
//! flush alone survives a killed process but not a power cut (it only
//! calls `sync_file_range`), so every flush is followed by
//! [`SledFiles::sync`]: `fdatasync` of the log, new blob files and changed
//! directories. Only then is a generation durable.
//!
//! **Feed visibility.** Because the writer is single and batches commit in
//! seq order, everything up to `committed_seq` is visible once that counter
//! is published. Pulls go further and stop at `durable_seq`, the committed
//! seq a finished flush covered: a pull never hands out a `next` past a
//! write in flight, nor past a write a crash could still take back (whose
//! seqs the restarted server would hand out again to other records).
//!
//! **Audit.** Every record write also appends a hash-chained audit entry
//! (`l/`) in the same batch, and its feed entry names that entry.
//!
//! **Online backup.** sled has no snapshots, so a backup copies the live
//! tree while remembering, for every key a write touches after the
//! backup's start and before the copy reaches it, the value it had at the
//! start (copy-on-write, [`Overlay`]). Writers never wait for the copy.
//! Last-pull times (`p/`), written outside the writer, are copied as the
//! copy finds them.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};

use async_trait::async_trait;
use pufa_core::audit;
use pufa_core::date::Date;
use pufa_core::hlc::HlcClock;
use pufa_core::merge::RecordState;
use pufa_core::org::{OrgTree, OrgTreeError, Scope};
use pufa_core::report::{self, YearFigures};
use pufa_core::schema::Rejection;
use pufa_core::totals::{self, AggKey, Aggregates};
use pufa_core::wire::{
    AuditCause, ConflictView, DeviceView, HistoryEntry, MutationResult, OrgUnit, RecordView,
    RejectionView, TotalsResponse,
};
use tokio::sync::{watch, Notify};
use uuid::Uuid;

use pufa_durable::SledFiles;

use super::apply;
use super::backup::{self, BackupHeader};
use super::codec::{self, decode, encode, Applied, AuditBody, StoredConflict, StoredRejection};
use super::{
    BackupChunks, Device, PullPage, PushInput, RecordPage, RecordQuery, ResolveOutcome,
    ScopeChecksum, Store, StoreError, TokenHash,
};
use crate::config::{Config, IdSource, RejectionsKept, REJECTIONS_LIST_BYTES_MAX};

mod people;

pub use super::{LIST_SCAN_MAX, PULL_SCAN_MAX, RECORDS_SCAN_MAX};
/// Most bytes of start-of-backup values an online backup keeps for keys
/// written while it copies; past it the backup fails (writes go on).
pub const BACKUP_OVERLAY_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Most mutations a group apply puts into one sled batch; a larger group is
/// applied as several batches, each of whole pushes. sled keeps every node
/// version a batch replaces until the batch ends (it holds one epoch guard
/// throughout), so batch size is transient memory.
pub const GROUP_BATCH_MUTATIONS_MAX: usize = 500;
/// Longest wait for the store's lock when opening it, in milliseconds:
/// sled's own threads can hold it a moment after its previous user closed
/// the store (a restart in one process), and a server being replaced may
/// still be exiting.
pub const STORE_LOCK_WAIT_MS: u64 = 2_000;
/// Records logged per batch when a format-3 store gets its baseline audit
/// entries (bounded so that a million records never make one huge batch).
const UPGRADE_RECORDS_PER_BATCH: usize = 10_000;
/// Live keys an online backup copies between two looks at the overlay.
const BACKUP_KEYS_PER_STEP: usize = 256;
/// Bytes of backup text handed to the response at a time.
const BACKUP_CHUNK_BYTES: usize = 256 * 1024;

/// Waits until a push's group is durable, then hands out its results.
async fn finish(
    inner: &Inner,
    answer: Result<
        Result<(Vec<MutationResult>, u64), StoreError>,
        tokio::sync::oneshot::error::RecvError,
    >,
) -> Result<Vec<MutationResult>, StoreError> {
    let (results, generation) =
        answer.map_err(|_| StoreError::Other("push lost its reply".into()))??;
    inner.wait_durable(generation).await?;
    Ok(results)
}

type PushAnswer = Result<(Vec<MutationResult>, u64), StoreError>;
type PushReply = tokio::sync::oneshot::Sender<PushAnswer>;

/// The sled-backed [`Store`].
pub struct SledStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    /// What makes a flush survive a power cut; `None` only under
    /// `--unsafe-no-fsync` (benchmarks).
    files: Option<SledFiles>,
    store_id: Uuid,
    ids: Arc<dyn IdSource>,
    /// [`crate::config::REJECTIONS_KEPT`] unless configured.
    rejections_kept: RejectionsKept,
    writer: Mutex<Writer>,
    committed_seq: AtomicU64,
    agg: RwLock<Aggregates>,
    org: RwLock<Arc<OrgTree>>,
    /// Every device, and which live token is whose: what `d/` and `t/`
    /// hold, kept in memory so that the token check of every request is
    /// no sled read. sled's reads wait while a batch is applied (its
    /// concurrency control, once batches are used), and the check runs on
    /// the request's task. Changed only by [`Tx::commit`], after its batch.
    devices: RwLock<Devices>,
    durability: Arc<Durability>,
    /// Whose turn it is to write (see [`SledStore::write`]).
    write_turn: tokio::sync::Mutex<()>,
    /// Pushes waiting for the next group apply, with where to answer.
    queued: Mutex<Vec<(PushInput, PushReply)>>,
    /// The running online backup's start-of-backup values, if one runs.
    backup: Mutex<Option<Overlay>>,
    /// Whether new writes must list their keys for [`Inner::capture`].
    backup_on: AtomicBool,
}

/// What an online backup needs of keys written since it started: their
/// values at the start, for keys the copy has not reached yet.
#[derive(Default)]
struct Overlay {
    /// The last key the copy has passed.
    cursor: Option<sled::IVec>,
    /// Value at the start (`None`: absent then) of keys above `cursor`
    /// written since the start.
    before: BTreeMap<sled::IVec, Option<sled::IVec>>,
    bytes: usize,
    overflowed: bool,
}

impl Overlay {
    /// Removes `key`'s start-of-backup value, if a write kept one.
    fn take(&mut self, key: &[u8]) -> Option<Option<sled::IVec>> {
        let old = self.before.remove(key)?;
        self.bytes = self
            .bytes
            .saturating_sub(key.len() + old.as_ref().map_or(0, |v| v.len()) + 64);
        Some(old)
    }

    /// Copies the kept keys below `upto` (all of them for `None`) that
    /// existed at the start: keys removed since, which the live copy no
    /// longer sees. Returns how many.
    fn emit_below(&mut self, upto: Option<&sled::IVec>, enc: &mut backup::Encoder) -> u64 {
        let keys: Vec<sled::IVec> = match upto {
            Some(k) => self
                .before
                .range(..k.clone())
                .map(|(k, _)| k.clone())
                .collect(),
            None => self.before.keys().cloned().collect(),
        };
        let mut n = 0;
        for k in keys {
            if let Some(Some(v)) = self.take(&k) {
                enc.pair(&k, &v);
                n += 1;
            }
        }
        n
    }
}

/// An online backup's progress through the live tree.
struct Copier {
    live: sled::Iter,
    enc: backup::Encoder,
    pairs: u64,
}

/// A `sled::Batch` that also lists its keys while a backup runs.
#[derive(Default)]
struct Staged {
    batch: sled::Batch,
    keys: Option<Vec<sled::IVec>>,
}

impl Staged {
    fn insert(&mut self, key: impl Into<sled::IVec>, value: impl Into<sled::IVec>) {
        let key = key.into();
        if let Some(keys) = &mut self.keys {
            keys.push(key.clone());
        }
        self.batch.insert(key, value);
    }

    fn remove(&mut self, key: impl Into<sled::IVec>) {
        let key = key.into();
        if let Some(keys) = &mut self.keys {
            keys.push(key.clone());
        }
        self.batch.remove(key);
    }
}

/// The in-memory copy of `d/` and `t/` (see [`Inner::devices`]).
#[derive(Default)]
struct Devices {
    by_id: HashMap<Uuid, Device>,
    by_token: HashMap<TokenHash, Uuid>,
}

impl Devices {
    fn load(db: &sled::Db) -> Result<Devices, StoreError> {
        let mut d = Devices::default();
        for kv in db.scan_prefix(codec::DEVICE) {
            let (_, v) = kv?;
            let device: Device = decode(&v)?;
            d.by_id.insert(device.id, device);
        }
        for kv in db.scan_prefix(codec::TOKEN) {
            let (k, v) = kv?;
            let hash: TokenHash = k[codec::TOKEN.len()..]
                .try_into()
                .map_err(|_| StoreError::Corrupt("token key of the wrong length".into()))?;
            d.by_token.insert(hash, codec::uuid_of(&v)?);
        }
        Ok(d)
    }

    /// Takes in a device as its write left it on disk.
    fn put(&mut self, device: Device) {
        if let Some(old) = self.by_id.get(&device.id) {
            if old.token_hash != device.token_hash || device.revoked {
                self.by_token.remove(&old.token_hash);
            }
        }
        if !device.revoked {
            self.by_token.insert(device.token_hash, device.id);
        }
        self.by_id.insert(device.id, device);
    }
}

/// State only the writer touches; published to disk with every batch.
struct Writer {
    seq: u64,
    hlc: HlcClock,
    rejections: u64,
    /// The rejections on disk, by number and by device.
    rejection_index: RejectionIndex,
    /// The last audit entry's `n` and hash.
    audit: (u64, codec::Hash),
}

#[derive(Clone, Debug, Default)]
struct Flushed {
    durable: u64,
    failed: Option<(u64, String)>,
}

struct Durability {
    written: AtomicU64,
    /// The highest seq known to be on disk: the pull watermark.
    durable_seq: AtomicU64,
    state: watch::Sender<Flushed>,
    wake: Notify,
    closed: AtomicBool,
    /// Set at the first failed write or flush: sled then refuses every
    /// write until the `Db` is reopened ([`Store::failure`]).
    failure: watch::Sender<Option<String>>,
}

impl Durability {
    /// Notes a failed write or flush; only IO errors count (sled's
    /// reads and writes can both hit one once its log cannot be written).
    fn failed(&self, e: &StoreError) {
        if !matches!(e, StoreError::Unavailable(_)) {
            return;
        }
        self.failure.send_if_modified(|f| {
            let first = f.is_none();
            if first {
                tracing::error!(error = %e, "the store can take no more writes until it is reopened");
                *f = Some(e.to_string());
            }
            first
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while staging leaves nothing half-written (the batch is applied
    // whole or not at all), so the state behind a poisoned lock is sound.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SledStore {
    /// Opens (or creates) the store under `config.store_path()`. Must run
    /// inside a tokio runtime: it starts the flusher task.
    ///
    /// # Errors
    /// sled's error (e.g. corruption), or data written by another format.
    pub fn open(config: &Config) -> Result<SledStore, StoreError> {
        set_aside_incomplete_snapshots(&config.store_path()).map_err(|e| {
            StoreError::Unavailable(format!("setting aside an incomplete snapshot: {e}"))
        })?;
        let db = open_db(
            &sled::Config::new()
                .path(config.store_path())
                .cache_capacity(config.cache_bytes),
        )?;
        let files = sled_files(config)?;
        let store_id = match db.get(codec::META_STORE_ID)? {
            Some(v) => codec::uuid_of(&v)?,
            None => {
                let id = config.ids.uuid();
                let mut b = sled::Batch::default();
                b.insert(codec::META_FORMAT, &codec::STORE_FORMAT.to_be_bytes());
                b.insert(codec::META_STORE_ID, id.as_bytes());
                db.apply_batch(b)?;
                db.flush()?;
                id
            }
        };
        let mut format = db
            .get(codec::META_FORMAT)?
            .map(|v| codec::u64_of(&v))
            .transpose()?;
        if format == Some(codec::STORE_FORMAT_2) {
            upgrade_from_format_2(&db)?;
            format = Some(codec::STORE_FORMAT_3);
        }
        if format == Some(codec::STORE_FORMAT_3) {
            upgrade_from_format_3(&db, config.clock.now_ms())?;
            format = Some(codec::STORE_FORMAT_5);
        }
        if format == Some(codec::STORE_FORMAT_4) || format == Some(codec::STORE_FORMAT_5) {
            super::upgrade::sled_to_format_6(&db)?;
        } else if format != Some(codec::STORE_FORMAT) {
            return Err(StoreError::Corrupt(format!(
                "store format {format:?}, this server reads {}",
                codec::STORE_FORMAT
            )));
        }
        let seq = db
            .get(codec::META_SEQ)?
            .map(|v| codec::u64_of(&v))
            .transpose()?
            .unwrap_or(0);
        let rejections = db
            .get(codec::META_REJECTIONS)?
            .map(|v| codec::u64_of(&v))
            .transpose()?
            .unwrap_or(0);
        let hlc = match db.get(codec::META_HLC)? {
            Some(v) => {
                let (ms, c): (u64, u32) = decode(&v)?;
                HlcClock::from_parts(ms, c)
            }
            None => HlcClock::default(),
        };
        let audit = audit_head(&db)?;
        let mut units = Vec::new();
        for kv in db.scan_prefix(codec::ORG_UNIT) {
            let (_, v) = kv?;
            units.push(decode::<OrgUnit>(&v)?);
        }
        let agg = load_aggregates(&db, seq)?;
        let devices = Devices::load(&db)?;
        let rejection_index = RejectionIndex::load(&db, &devices)?;
        // What the upgrades and the new store's id wrote, before anything
        // is served.
        flush_durably(&db, files.as_ref())?;
        let (state, _) = watch::channel(Flushed::default());
        let durability = Arc::new(Durability {
            written: AtomicU64::new(0),
            durable_seq: AtomicU64::new(seq),
            state,
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            failure: watch::channel(None).0,
        });
        let inner = Arc::new(Inner {
            db,
            files,
            store_id,
            ids: config.ids.clone(),
            rejections_kept: config.rejections_limits(),
            writer: Mutex::new(Writer {
                seq,
                hlc,
                rejections,
                rejection_index,
                audit,
            }),
            committed_seq: AtomicU64::new(seq),
            agg: RwLock::new(agg),
            org: RwLock::new(Arc::new(OrgTree::from_units(units))),
            devices: RwLock::new(devices),
            durability: durability.clone(),
            write_turn: tokio::sync::Mutex::new(()),
            queued: Mutex::new(Vec::new()),
            backup: Mutex::new(None),
            backup_on: AtomicBool::new(false),
        });
        tokio::spawn(flusher(Arc::downgrade(&inner), durability));
        Ok(SledStore { inner })
    }

    /// Gives the store under `config.store_path()` a new `store_id`, for a
    /// store restored from a backup: devices that see the new id pull again
    /// from 0 and repair (§7). The server must not be running.
    ///
    /// # Errors
    /// sled's error (e.g. the store is open in a running server), or no store.
    pub fn renew_store_id(config: &Config) -> Result<(Uuid, Uuid), StoreError> {
        if !config.store_path().exists() {
            return Err(StoreError::Other(format!(
                "no store at {}",
                config.store_path().display()
            )));
        }
        let db = open_db(
            &sled::Config::new()
                .path(config.store_path())
                .cache_capacity(config.cache_bytes),
        )?;
        let old = db
            .get(codec::META_STORE_ID)?
            .map(|v| codec::uuid_of(&v))
            .transpose()?;
        let Some(old) = old else {
            return Err(StoreError::Corrupt("the store has no store_id".into()));
        };
        let new = config.ids.uuid();
        db.insert(codec::META_STORE_ID, new.as_bytes())?;
        flush_durably(&db, sled_files(config)?.as_ref())?;
        Ok((old, new))
    }

    /// The open database, for `migrate` (which copies it whole).
    pub(crate) fn db(&self) -> &sled::Db {
        &self.inner.db
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Other(format!("store task failed: {e}")))?
    }

    /// Runs a write and waits until it is durable.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<(T, u64), StoreError> + Send + 'static,
    {
        // Writers queue here, asynchronously, rather than each parking a
        // blocking-pool thread on the writer lock: 200 devices pushing at
        // once otherwise meant 200 threads (and their allocator caches).
        let (value, generation) = {
            let _turn = self.inner.write_turn.lock().await;
            self.blocking(f)
                .await
                .inspect_err(|e| self.inner.durability.failed(e))?
        };
        self.inner.wait_durable(generation).await?;
        Ok(value)
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        self.inner.durability.closed.store(true, Ordering::SeqCst);
        self.inner.durability.wake.notify_one();
    }
}

/// Where [`set_aside_incomplete_snapshots`] moves them, in the data dir.
pub const INCOMPLETE_SNAPSHOTS_DIR: &str = ".incomplete-sled-snapshots";

/// Moves sled's `snap.*.generating` files out of the store at `store` into
/// [`INCOMPLETE_SNAPSHOTS_DIR`] beside it, before sled opens it.
///
/// sled 0.34.7 writes a snapshot as `snap.<lsn>.generating`, fsyncs it and
/// only then renames it to `snap.<lsn>`; but when it looks for the newest
/// snapshot it also takes `.generating` files, so one left half-written (a
/// full disk, a kill mid-write: spacejam/sled #1527, #1533) makes every
/// later open fail with `Corruption`. Such a file is never the only copy of
/// anything: the previous snapshot is removed only after the rename, and
/// sled replays its log from whichever snapshot it starts with. Seen here
/// after a SIGKILL on a full disk (`tests/tests/full_disk.rs`).
///
/// # Errors
/// The store dir cannot be read, or a file cannot be moved.
pub fn set_aside_incomplete_snapshots(store: &std::path::Path) -> std::io::Result<usize> {
    let entries = match std::fs::read_dir(store) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut moved = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("snap.") && name.ends_with(".generating")) {
            continue;
        }
        let aside = store
            .parent()
            .unwrap_or(store)
            .join(INCOMPLETE_SNAPSHOTS_DIR);
        std::fs::create_dir_all(&aside)?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let to = aside.join(format!("{name}.{stamp}"));
        std::fs::rename(entry.path(), &to)?;
        tracing::warn!(
            from = %entry.path().display(),
            to = %to.display(),
            "set aside an incomplete sled snapshot (sled would read it as corruption); sled replays its log instead"
        );
        moved += 1;
    }
    Ok(moved)
}

/// Opens sled with `cfg`, waiting up to [`STORE_LOCK_WAIT_MS`] for the
/// store's lock.
///
/// # Errors
/// sled's, e.g. the lock still held after the wait (another server).
/// sled's files opened for syncing, unless the config says not to.
fn sled_files(config: &Config) -> Result<Option<SledFiles>, StoreError> {
    if !config.fsync {
        return Ok(None);
    }
    SledFiles::open(&config.store_path())
        .map(Some)
        .map_err(|e| sync_failed(&e))
}

fn sync_failed(e: &std::io::Error) -> StoreError {
    StoreError::from(sled::Error::Io(std::io::Error::new(
        e.kind(),
        format!("syncing the store's files to disk: {e}"),
    )))
}

/// sled's flush, then the fsyncs that make it survive a power cut.
pub(crate) fn flush_durably(db: &sled::Db, files: Option<&SledFiles>) -> Result<(), StoreError> {
    db.flush()?;
    if let Some(files) = files {
        files.sync().map_err(|e| sync_failed(&e))?;
    }
    Ok(())
}

pub fn open_db(cfg: &sled::Config) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(STORE_LOCK_WAIT_MS);
    loop {
        match cfg.open() {
            // sled 0.34 reports a held lock only in this message.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// Format 3 added the per-topic lecture aggregates: recount them from the
/// records and write them with the new format mark in one batch, so a crash
/// mid-upgrade leaves a format-2 store that upgrades again.
fn upgrade_from_format_2(db: &sled::Db) -> Result<(), StoreError> {
    let mut fresh = Aggregates::default();
    for kv in db.scan_prefix(codec::RECORD) {
        let (_, v) = kv?;
        let record = codec::decode_record(&v)?;
        fresh.apply(None, &record);
    }
    let mut b = sled::Batch::default();
    for (key, value) in fresh.take_dirty() {
        if let (AggKey::Topics(..), Some(bytes)) = (&key, codec::agg_value(&value)) {
            b.insert(codec::agg_key(&key), bytes);
        }
    }
    b.insert(codec::META_FORMAT, &codec::STORE_FORMAT_3.to_be_bytes());
    db.apply_batch(b)?;
    db.flush()?;
    tracing::info!("store upgraded from format 2 to 3 (topic aggregates)");
    Ok(())
}

/// The last audit entry's `(n, hash)`: `m/audit`, written with every batch
/// that logs.
fn audit_head(db: &sled::Db) -> Result<(u64, codec::Hash), StoreError> {
    let head = match db.get(codec::META_AUDIT)? {
        Some(v) => decode(&v)?,
        None => (0, codec::GENESIS),
    };
    debug_assert_eq!(
        db.scan_prefix(codec::AUDIT)
            .next_back()
            .transpose()?
            .map_or(0, |(k, _)| codec::u64_of(&k[codec::AUDIT.len()..])
                .unwrap_or(0)),
        head.0,
        "m/audit names the last audit entry"
    );
    Ok(head)
}

/// Format 4 added the audit log. A format-3 store's records get one
/// `baseline` entry each (their values as they stand), in record-id order
/// and batches of [`UPGRADE_RECORDS_PER_BATCH`]; the format mark comes last,
/// so an upgrade cut short resumes after the last record it logged.
fn upgrade_from_format_3(db: &sled::Db, now_ms: u64) -> Result<(), StoreError> {
    let (mut n, mut head) = audit_head(db)?;
    let mut start = codec::RECORD.to_vec();
    if let Some((_, v)) = db.scan_prefix(codec::AUDIT).next_back().transpose()? {
        let last = codec::decode_audit(&v)?;
        start = codec::record_key(last.body.record_id);
        start.push(0);
    }
    let mut logged = 0u64;
    loop {
        let mut b = sled::Batch::default();
        let mut in_batch = 0;
        for kv in db.range(start.clone()..) {
            let (k, v) = kv?;
            if !k.starts_with(codec::RECORD) {
                break;
            }
            let r = codec::decode_record(&v)?;
            n += 1;
            let body = AuditBody {
                n,
                server_ms: now_ms,
                seq: r.seq,
                record_id: r.id,
                kind: r.kind,
                cause: AuditCause::Baseline,
                mutation_id: None,
                conflict_id: None,
                device_id: None,
                actor: None,
                record_prev: None,
                hlc: r.hlc(),
                pushed_hlc: None,
                changes: audit::changes(None, &r),
                conflicts: Vec::new(),
            };
            let (value, hash) = codec::encode_audit(&head, &body);
            head = hash;
            b.insert(codec::audit_key(n), value);
            b.insert(codec::seq_key(r.seq), &codec::feed_value(r.id, n));
            start = k.to_vec();
            start.push(0);
            in_batch += 1;
            if in_batch == UPGRADE_RECORDS_PER_BATCH {
                break;
            }
        }
        b.insert(codec::META_AUDIT, encode(&(n, head)));
        logged += in_batch as u64;
        let done = in_batch < UPGRADE_RECORDS_PER_BATCH;
        if done {
            b.insert(codec::META_FORMAT, &codec::STORE_FORMAT_5.to_be_bytes());
        }
        db.apply_batch(b)?;
        if done {
            break;
        }
    }
    db.flush()?;
    tracing::info!(
        records = logged,
        "store upgraded from format 3 (audit log added)"
    );
    Ok(())
}

fn load_aggregates(db: &sled::Db, seq: u64) -> Result<Aggregates, StoreError> {
    let mut agg = Aggregates::default();
    for kv in db.scan_prefix(codec::AGG) {
        let (k, v) = kv?;
        let (key, value) = codec::decode_agg(&k[codec::AGG.len()..], &v)?;
        agg.load(key, value);
    }
    agg.note_max_seq(seq);
    Ok(agg)
}

/// Flushes whenever woken, covering every write made before the flush began.
/// Holds the store only while flushing, so dropping the store ends it.
async fn flusher(inner: Weak<Inner>, durability: Arc<Durability>) {
    loop {
        durability.wake.notified().await;
        if durability.closed.load(Ordering::SeqCst) {
            return;
        }
        let Some(store) = inner.upgrade() else { return };
        // Read before flushing: every batch counted here was applied before
        // the flush began, so the flush covers it. (Commit publishes the seq
        // before the generation, so the seq read is at least as new.)
        let target = durability.written.load(Ordering::SeqCst);
        let target_seq = store.committed_seq.load(Ordering::SeqCst);
        if durability.state.borrow().durable >= target {
            continue;
        }
        let result = store.flush_durably().await;
        drop(store);
        if result.is_ok() {
            durability
                .durable_seq
                .fetch_max(target_seq, Ordering::SeqCst);
        }
        durability.state.send_modify(|s| match result {
            Ok(_) => {
                s.durable = s.durable.max(target);
                s.failed = None;
            }
            Err(e) => {
                tracing::error!(error = %e, "flush failed; acknowledgements are held back");
                s.failed = Some((target, e.to_string()));
                durability.failed(&e);
            }
        });
    }
}

impl Inner {
    /// sled's flush, then [`SledFiles::sync`] on a blocking thread: a
    /// flush covers the writes applied before it began, and the sync after
    /// it makes them survive a power cut.
    async fn flush_durably(self: &Arc<Inner>) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        if self.files.is_none() {
            return Ok(());
        }
        let inner = self.clone();
        tokio::task::spawn_blocking(move || match &inner.files {
            Some(files) => files.sync().map_err(|e| sync_failed(&e)),
            None => Ok(()),
        })
        .await
        .map_err(|e| StoreError::Other(format!("sync task failed: {e}")))?
    }

    fn tree(&self) -> Arc<OrgTree> {
        self.org.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn wait_durable(&self, generation: u64) -> Result<(), StoreError> {
        let mut rx = self.durability.state.subscribe();
        loop {
            {
                let s = rx.borrow_and_update();
                if s.durable >= generation {
                    return Ok(());
                }
                if let Some((failed, e)) = &s.failed {
                    if *failed >= generation {
                        return Err(StoreError::Unavailable(format!(
                            "could not make the write durable: {e}"
                        )));
                    }
                }
            }
            self.durability.wake.notify_one();
            rx.changed()
                .await
                .map_err(|_| StoreError::Other("flusher stopped".into()))?;
        }
    }

    fn record(&self, id: Uuid) -> Result<Option<RecordState>, StoreError> {
        self.db
            .get(codec::record_key(id))?
            .map(|v| codec::decode_record(&v))
            .transpose()
    }

    fn records(&self, q: &RecordQuery) -> Result<RecordPage, StoreError> {
        let tree = self.tree();
        let start = match q.after {
            // The smallest key after the id's: sled ranges start inclusive.
            Some(id) => {
                let mut k = codec::record_key(id);
                k.push(0);
                k
            }
            None => codec::RECORD.to_vec(),
        };
        let mut records: Vec<RecordView> = Vec::new();
        let mut last_examined = None;
        for (examined, kv) in self.db.range(start..).enumerate() {
            let (k, v) = kv?;
            if !k.starts_with(codec::RECORD) {
                return Ok(RecordPage {
                    records,
                    next: None,
                });
            }
            if examined == RECORDS_SCAN_MAX {
                // Continue after the last record examined, matched or not.
                return Ok(RecordPage {
                    records,
                    next: last_examined,
                });
            }
            let r = codec::decode_record(&v)?;
            last_examined = Some(r.id);
            let in_scope = r.org_unit().is_some_and(|u| tree.in_scope(u, &q.scope));
            if !in_scope || !q.behind.counts(&r) {
                continue;
            }
            if records.len() == q.limit {
                return Ok(RecordPage {
                    next: records.last().map(|v| v.id),
                    records,
                });
            }
            records.push(r.view());
        }
        Ok(RecordPage {
            records,
            next: None,
        })
    }

    fn history(
        &self,
        scope: &Scope,
        id: Uuid,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<HistoryEntry>>, StoreError> {
        let tree = self.tree();
        let Some(rec) = self.record(id)? else {
            return Ok(None);
        };
        // As pulls do: in scope now, or ever was (then `ever` holds the root).
        if !(rec.org_unit().is_some_and(|u| tree.in_scope(u, scope)) || rec.ever_in(scope)) {
            return Ok(None);
        }
        // Newest to oldest along `record_prev`, as far back as `after`.
        let mut next = match self.db.get(codec::seq_key(rec.seq))? {
            Some(v) => Some(codec::decode_feed(&v)?.1),
            None => return Err(StoreError::Corrupt(format!("no feed entry for {id}"))),
        };
        let mut newer = Vec::new();
        while let Some(n) = next.filter(|n| *n > after) {
            let v = self.db.get(codec::audit_key(n))?.ok_or_else(|| {
                StoreError::Corrupt(format!("history of {id} names a missing audit entry {n}"))
            })?;
            let entry = codec::decode_audit(&v)?;
            next = entry.body.record_prev;
            newer.push(entry);
        }
        Ok(Some(
            super::readable_history(newer, &tree, scope, rec.org_unit())
                .into_iter()
                .rev()
                .take(limit)
                .map(codec::StoredAudit::view)
                .collect(),
        ))
    }

    /// Keeps the start-of-backup values of `keys`, about to be written, for
    /// the running backup (if any) when its copy has not reached them.
    fn capture(&self, keys: &[sled::IVec]) -> Result<(), StoreError> {
        let mut guard = lock(&self.backup);
        let Some(o) = guard.as_mut() else {
            return Ok(());
        };
        for k in keys {
            if o.overflowed {
                break;
            }
            if o.cursor.as_ref().is_some_and(|c| k <= c) || o.before.contains_key(k) {
                continue;
            }
            let old = self.db.get(k)?;
            o.bytes += k.len() + old.as_ref().map_or(0, |v| v.len()) + 64;
            o.before.insert(k.clone(), old);
            if o.bytes > BACKUP_OVERLAY_BYTES_MAX {
                // Give up this backup rather than the server's memory.
                o.overflowed = true;
                o.before.clear();
            }
        }
        Ok(())
    }

    /// Registers a backup under the writer lock, so that every write from
    /// now on lists its keys: the copy is of the store as it is now.
    /// Returns the header and the write generation to wait on before
    /// copying (the copy then holds only durable writes).
    fn start_backup(&self, now_ms: u64) -> Result<(BackupHeader, u64), StoreError> {
        let w = lock(&self.writer);
        let mut overlay = lock(&self.backup);
        if overlay.is_some() {
            return Err(StoreError::Unavailable(
                "another backup is running; try again when it has finished".into(),
            ));
        }
        *overlay = Some(Overlay::default());
        self.backup_on.store(true, Ordering::SeqCst);
        let header = BackupHeader {
            store_id: self.store_id,
            store_format: codec::STORE_FORMAT,
            seq: w.seq,
            audit_n: w.audit.0,
            audit_head: hex::encode(w.audit.1),
            created_ms: now_ms,
        };
        Ok((header, self.durability.written.load(Ordering::SeqCst)))
    }

    fn end_backup(&self) {
        *lock(&self.backup) = None;
        self.backup_on.store(false, Ordering::SeqCst);
    }

    /// Copies every key as of the backup's start into `out`.
    fn copy_backup(
        &self,
        header: &BackupHeader,
        out: &tokio::sync::mpsc::Sender<Result<Vec<u8>, StoreError>>,
    ) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let mut copy = Copier {
            live: self.db.iter(),
            enc: backup::Encoder::new(header),
            pairs: 0,
        };
        while !self.copy_step(&mut copy)? {
            if copy.enc.pending() >= BACKUP_CHUNK_BYTES
                && out.blocking_send(Ok(copy.enc.take())).is_err()
            {
                return Ok(()); // the client went away
            }
        }
        let pairs = copy.pairs;
        let _ = out.blocking_send(Ok(copy.enc.finish()));
        tracing::info!(
            pairs,
            seq = header.seq,
            secs = started.elapsed().as_secs_f64(),
            "backup copied"
        );
        Ok(())
    }

    /// Copies the next [`BACKUP_KEYS_PER_STEP`] live keys: their live
    /// values, except where a write since the start kept the old value in
    /// the overlay (or added a key that did not exist then); and the kept
    /// keys between them that writes have removed. True when done.
    fn copy_step(&self, copy: &mut Copier) -> Result<bool, StoreError> {
        let mut step = Vec::with_capacity(BACKUP_KEYS_PER_STEP);
        for kv in copy.live.by_ref().take(BACKUP_KEYS_PER_STEP) {
            step.push(kv?);
        }
        let end = step.len() < BACKUP_KEYS_PER_STEP;
        // Values were read before this look at the overlay: a write since
        // then kept the value they had at the start there.
        let mut guard = lock(&self.backup);
        let o = guard
            .as_mut()
            .ok_or_else(|| StoreError::Other("the backup was ended early".into()))?;
        if o.overflowed {
            return Err(StoreError::Unavailable(format!(
                "more than {} MiB of the store changed while the backup copied it; try again at a quieter time",
                BACKUP_OVERLAY_BYTES_MAX / (1024 * 1024)
            )));
        }
        // Every kept key lies above the cursor: writes below it are not
        // captured, and consulted ones are dropped.
        for (k, v) in step {
            copy.pairs += o.emit_below(Some(&k), &mut copy.enc);
            if let Some(value) = o.take(&k).unwrap_or(Some(v)) {
                copy.enc.pair(&k, &value);
                copy.pairs += 1;
            }
            o.cursor = Some(k);
        }
        if end {
            copy.pairs += o.emit_below(None, &mut copy.enc);
        }
        Ok(end)
    }

    fn device(&self, id: Uuid) -> Result<Option<Device>, StoreError> {
        let devices = self.devices.read().unwrap_or_else(|e| e.into_inner());
        Ok(devices.by_id.get(&id).cloned())
    }

    fn begin(&self) -> Tx<'_> {
        let w = lock(&self.writer);
        Tx {
            seq: w.seq,
            hlc: w.hlc,
            rejections: w.rejections,
            rejection_index_changed: false,
            audit: w.audit,
            last_entry: HashMap::new(),
            w,
            inner: self,
            // Read under the writer lock, which a backup takes to start.
            batch: Staged {
                batch: sled::Batch::default(),
                keys: self.backup_on.load(Ordering::SeqCst).then(Vec::new),
            },
            records: HashMap::new(),
            applied: HashMap::new(),
            changes: Vec::new(),
            devices: Vec::new(),
        }
    }

    /// Applies the pushes queued while the previous write ran (group apply):
    /// whole pushes, in order, in sled batches of up to
    /// [`GROUP_BATCH_MUTATIONS_MAX`] mutations (at least one push each), so
    /// every push is atomic and each waits for its own batch's durability.
    /// One answer per input; after a failed batch, that batch's pushes and
    /// all later ones fail (nothing of them was written).
    ///
    /// The answers go out together when the group is done. Sending each
    /// batch's answers as it committed was measured slower (A/B at 300,000
    /// records: push −10–15%, 200-device p50 +10 ms): the woken requests
    /// then compete with the writer for the two cores. A panic here fails
    /// every push of the group, including those whose batches committed;
    /// their retries are answered `duplicate`.
    fn push_group(&self, inputs: Vec<PushInput>) -> Vec<PushAnswer> {
        let tree = self.tree();
        let mut answers: Vec<PushAnswer> = Vec::with_capacity(inputs.len());
        let mut rest = &inputs[..];
        while !rest.is_empty() {
            let mut take = 1;
            let mut mutations = rest[0].mutations.len();
            while let Some(next) = rest.get(take) {
                mutations += next.mutations.len();
                if mutations > GROUP_BATCH_MUTATIONS_MAX {
                    break;
                }
                take += 1;
            }
            let written = (|| {
                let mut tx = self.begin();
                let mut results = Vec::with_capacity(take);
                for input in &rest[..take] {
                    results.push(apply::push(&mut tx, self.ids.as_ref(), &tree, input)?);
                }
                Ok::<_, StoreError>((results, tx.commit(None)?))
            })();
            match written {
                Ok((results, generation)) => {
                    answers.extend(results.into_iter().map(|r| Ok((r, generation))));
                    rest = &rest[take..];
                }
                Err(e) => {
                    self.durability.failed(&e);
                    let msg = format!("the write failed: {e}");
                    answers.extend(
                        rest.iter()
                            .map(|_| Err(StoreError::Unavailable(msg.clone()))),
                    );
                    break;
                }
            }
        }
        answers
    }

    fn upsert_org_units(
        &self,
        units: Vec<OrgUnit>,
        by: &Device,
        now_ms: u64,
    ) -> Result<(Result<usize, OrgTreeError>, u64), StoreError> {
        let mut tx = self.begin();
        let old = self.tree();
        let (next, moved) = match old.with_upserts(&units) {
            Ok(x) => x,
            Err(e) => return Ok((Err(e), 0)),
        };
        for u in &units {
            tx.batch.insert(codec::org_unit_key(&u.code), encode(u));
        }
        // Every record below a re-parented unit changes scope: new seq, and
        // its `ever` learns the new ancestors (§4).
        // There is no per-unit record index (it cost a third of push
        // throughput, its keys scattering across the tree): re-parenting, a
        // rare admin action, scans the records once under the writer lock.
        if !moved.is_empty() {
            let affected: HashSet<&str> = moved
                .iter()
                .flat_map(|code| next.subtree(code))
                .map(|u| u.code.as_str())
                .collect();
            for kv in self.db.scan_prefix(codec::RECORD) {
                let (_, v) = kv?;
                let before = codec::decode_record(&v)?;
                if !before.org_unit().is_some_and(|u| affected.contains(u)) {
                    continue;
                }
                apply::move_record(&mut tx, before, &old, &next, by, now_ms)?;
            }
        }
        let n = units.len();
        let generation = tx.commit(Some(Arc::new(next)))?;
        Ok((Ok(n), generation))
    }

    fn resolve(
        &self,
        id: Uuid,
        value: serde_json::Value,
        by: &Device,
        person: Option<String>,
        now_ms: u64,
    ) -> Result<(ResolveOutcome, u64), StoreError> {
        let tree = self.tree();
        let mut tx = self.begin();
        let Some(stored) = self
            .db
            .get(codec::conflict_key(id))?
            .map(|v| decode::<StoredConflict>(&v))
            .transpose()?
        else {
            return Ok((ResolveOutcome::NotFound, 0));
        };
        let outcome = apply::resolve(&mut tx, &tree, id, stored, value, by, person, now_ms)?;
        if !matches!(outcome, ResolveOutcome::Resolved(_)) {
            return Ok((outcome, 0));
        }
        Ok((outcome, tx.commit(None)?))
    }

    fn put_device(&self, device: Device) -> Result<((), u64), StoreError> {
        let mut tx = self.begin();
        tx.stage_device(&device)?;
        Ok(((), tx.commit(None)?))
    }

    fn pull(&self, scope: &Scope, since: u64, limit: usize) -> Result<PullPage, StoreError> {
        let tree = self.tree();
        // Everything at or below the watermark is written and flushed
        // (single writer, batches in seq order, then a flush); nothing above
        // it may be promised.
        let watermark = self.durability.durable_seq.load(Ordering::SeqCst);
        let mut entries = Vec::new();
        if since >= watermark {
            return Ok(PullPage {
                entries,
                next: since,
                has_more: false,
            });
        }
        let mut scanned = 0;
        let mut iter = self
            .db
            .range(codec::seq_key(since + 1)..=codec::seq_key(watermark));
        while let Some(kv) = iter.next() {
            let (k, v) = kv?;
            let seq = codec::u64_of(&k[codec::SEQ.len()..])?;
            scanned += 1;
            let Some(rec) = self.record(codec::decode_feed(&v)?.0)? else {
                continue;
            };
            // Moved on to a later seq by a write after we read the index:
            // it shows up there.
            if rec.seq == seq {
                entries.extend(rec.pull_entry(&tree, scope));
            }
            if entries.len() >= limit || scanned >= PULL_SCAN_MAX {
                let has_more = iter.next().is_some();
                return Ok(PullPage {
                    entries,
                    next: if has_more { seq } else { watermark },
                    has_more,
                });
            }
        }
        Ok(PullPage {
            entries,
            next: watermark,
            has_more: false,
        })
    }

    fn conflicts(&self, scope: &Scope, limit: usize) -> Result<Vec<ConflictView>, StoreError> {
        let tree = self.tree();
        let mut out = Vec::new();
        for kv in self
            .db
            .scan_prefix(codec::OPEN_CONFLICT)
            .rev()
            .take(LIST_SCAN_MAX)
        {
            let (k, _) = kv?;
            let id = codec::uuid_of(&k[k.len() - 16..])?;
            let Some(c) = self
                .db
                .get(codec::conflict_key(id))?
                .map(|v| decode::<StoredConflict>(&v))
                .transpose()?
            else {
                continue;
            };
            let Some(rec) = self.record(c.record_id)? else {
                continue;
            };
            if rec.org_unit().is_some_and(|u| tree.in_scope(u, scope)) {
                out.push(c.conflict.view(id, c.record_id, c.seq));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn devices(&self, scope: &Scope, limit: usize) -> Result<Vec<DeviceView>, StoreError> {
        let tree = self.tree();
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(codec::DEVICE) {
            let (_, v) = kv?;
            let d: Device = decode(&v)?;
            if d.visible_in(&tree, scope) {
                let pulled = self
                    .db
                    .get(codec::pulled_key(d.id))?
                    .map(|v| codec::u64_of(&v))
                    .transpose()?;
                out.push(d.view(pulled));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn rejections(&self, scope: &Scope, limit: usize) -> Result<Vec<RejectionView>, StoreError> {
        let tree = self.tree();
        let mut devices: HashMap<Uuid, bool> = HashMap::new();
        let mut out = Vec::new();
        let mut bytes = 0;
        for kv in self
            .db
            .scan_prefix(codec::REJECTION)
            .rev()
            .take(LIST_SCAN_MAX)
        {
            let (_, v) = kv?;
            let r: StoredRejection = decode(&v)?;
            let visible = match devices.get(&r.device_id) {
                Some(v) => *v,
                None => {
                    let v = self
                        .device(r.device_id)?
                        .is_some_and(|d| d.visible_in(&tree, scope));
                    devices.insert(r.device_id, v);
                    v
                }
            };
            if visible {
                bytes += codec::rejection_listed_bytes(v.len());
                if bytes > REJECTIONS_LIST_BYTES_MAX && !out.is_empty() {
                    break;
                }
                out.push(r.view()?);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}

/// Which rejections are on disk: by number, by device, and by the org
/// unit of the device's token. A new one evicts first its device's oldest
/// past [`RejectionsKept::per_device`], then its unit's oldest past
/// [`RejectionsKept::per_unit`], and only then the store's oldest past
/// [`RejectionsKept::total`]: one device's (or one street's) flood evicts
/// only its own.
#[derive(Debug, Default)]
struct RejectionIndex {
    all: BTreeMap<u64, (Uuid, String)>,
    by_device: HashMap<Uuid, VecDeque<u64>>,
    by_unit: HashMap<String, VecDeque<u64>>,
}

impl RejectionIndex {
    fn load(db: &sled::Db, devices: &Devices) -> Result<RejectionIndex, StoreError> {
        let mut index = RejectionIndex::default();
        for kv in db.scan_prefix(codec::REJECTION) {
            let (k, v) = kv?;
            let n = codec::u64_of(&k[codec::REJECTION.len()..])?;
            let r: StoredRejection = decode(&v)?;
            let unit = devices
                .by_id
                .get(&r.device_id)
                .and_then(|d| d.org_unit.clone())
                .unwrap_or_default();
            index.insert(n, r.device_id, unit);
        }
        Ok(index)
    }

    fn insert(&mut self, n: u64, device: Uuid, unit: String) {
        self.by_device.entry(device).or_default().push_back(n);
        self.by_unit.entry(unit.clone()).or_default().push_back(n);
        self.all.insert(n, (device, unit));
    }

    /// Forgets `n` everywhere.
    fn forget(&mut self, n: u64) {
        let Some((device, unit)) = self.all.remove(&n) else {
            return;
        };
        // Evictions take the oldest: usually the front, found at once.
        let drop_n = |q: &mut VecDeque<u64>| {
            if q.front() == Some(&n) {
                q.pop_front();
            } else {
                q.retain(|m| *m != n);
            }
        };
        if let Some(q) = self.by_device.get_mut(&device) {
            drop_n(q);
            if q.is_empty() {
                self.by_device.remove(&device);
            }
        }
        if let Some(q) = self.by_unit.get_mut(&unit) {
            drop_n(q);
            if q.is_empty() {
                self.by_unit.remove(&unit);
            }
        }
    }

    /// Notes rejection `n` of `device` (whose token names `unit`);
    /// returns the numbers to remove from the store.
    fn add(&mut self, n: u64, device: Uuid, unit: &str, kept: RejectionsKept) -> Vec<u64> {
        let mut gone = Vec::new();
        self.insert(n, device, unit.to_string());
        let oldest = |q: Option<&VecDeque<u64>>, max: u64| {
            q.filter(|q| q.len() as u64 > max)
                .and_then(|q| q.front().copied())
        };
        while let Some(old) = oldest(self.by_device.get(&device), kept.per_device) {
            self.forget(old);
            gone.push(old);
        }
        while let Some(old) = oldest(self.by_unit.get(unit), kept.per_unit) {
            self.forget(old);
            gone.push(old);
        }
        while self.all.len() as u64 > kept.total {
            let Some(old) = self.all.keys().next().copied() else {
                break;
            };
            self.forget(old);
            gone.push(old);
        }
        gone
    }
}

impl Drop for Tx<'_> {
    /// A batch that was not applied leaves the index as the disk has it.
    fn drop(&mut self) {
        if self.rejection_index_changed {
            let devices = self.inner.devices.read().unwrap_or_else(|e| e.into_inner());
            match RejectionIndex::load(&self.inner.db, &devices) {
                Ok(index) => self.w.rejection_index = index,
                Err(e) => tracing::error!(error = %e, "could not reload the rejection index"),
            }
        }
    }
}

/// One staged write under the writer lock.
struct Tx<'a> {
    inner: &'a Inner,
    w: MutexGuard<'a, Writer>,
    batch: Staged,
    seq: u64,
    hlc: HlcClock,
    rejections: u64,
    /// Whether this batch changed `w.rejection_index`, which then holds
    /// what the batch will leave on disk: reloaded from disk unless the
    /// batch is applied.
    rejection_index_changed: bool,
    audit: (u64, codec::Hash),
    /// The last audit entry staged for each record in this batch.
    last_entry: HashMap<Uuid, u64>,
    /// Records touched by this batch, at their latest staged state.
    records: HashMap<Uuid, RecordState>,
    applied: HashMap<(Uuid, Uuid), Applied>,
    /// `(before, after)` of every record write, for the aggregates.
    changes: Vec<(Option<RecordState>, RecordState)>,
    /// Devices written, in order, for [`Inner::devices`] after the commit.
    devices: Vec<Device>,
}

impl apply::Staging for Tx<'_> {
    fn record(&mut self, id: Uuid) -> Result<Option<RecordState>, StoreError> {
        match self.records.get(&id) {
            Some(r) => Ok(Some(r.clone())),
            None => self.inner.record(id),
        }
    }

    fn applied(&mut self, device: Uuid, mutation: Uuid) -> Result<Option<Applied>, StoreError> {
        match self.applied.get(&(device, mutation)) {
            Some(a) => Ok(Some(a.clone())),
            None => self
                .inner
                .db
                .get(codec::applied_key(device, mutation))?
                .map(|v| decode(&v))
                .transpose(),
        }
    }

    fn device(&mut self, id: Uuid) -> Result<Option<Device>, StoreError> {
        match self.devices.iter().rev().find(|d| d.id == id) {
            Some(d) => Ok(Some(d.clone())),
            None => self.inner.device(id),
        }
    }

    fn seq(&mut self) -> &mut u64 {
        &mut self.seq
    }

    fn hlc(&mut self) -> &mut HlcClock {
        &mut self.hlc
    }

    fn reject(
        &mut self,
        device: &Device,
        now_ms: u64,
        m: &pufa_core::wire::Mutation,
        raw: Option<&str>,
        r: &Rejection,
    ) -> Result<(), StoreError> {
        self.rejections += 1;
        let stored = StoredRejection::new(device.id, now_ms, m, raw, r);
        self.batch
            .insert(codec::rejection_key(self.rejections), encode(&stored));
        self.rejection_index_changed = true;
        let unit = device.org_unit.as_deref().unwrap_or_default();
        for old in
            self.w
                .rejection_index
                .add(self.rejections, device.id, unit, self.inner.rejections_kept)
        {
            self.batch.remove(codec::rejection_key(old));
        }
        Ok(())
    }

    fn log(&mut self, mut body: AuditBody, current_seq: Option<u64>) -> Result<u64, StoreError> {
        body.record_prev = match (self.last_entry.get(&body.record_id), current_seq) {
            (Some(n), _) => Some(*n),
            (None, Some(seq)) => {
                let v = self.inner.db.get(codec::seq_key(seq))?.ok_or_else(|| {
                    StoreError::Corrupt(format!("no feed entry for {}", body.record_id))
                })?;
                let (id, n) = codec::decode_feed(&v)?;
                debug_assert_eq!(id, body.record_id, "the feed entry names the record");
                Some(n)
            }
            (None, None) => None,
        };
        let (n, prev) = self.audit;
        body.n = n + 1;
        let (value, hash) = codec::encode_audit(&prev, &body);
        self.batch.insert(codec::audit_key(body.n), value);
        self.audit = (body.n, hash);
        self.last_entry.insert(body.record_id, body.n);
        Ok(body.n)
    }

    /// The record and its feed entry (one per record), which names `entry`.
    fn put_record(
        &mut self,
        before: Option<RecordState>,
        after: RecordState,
        entry: u64,
    ) -> Result<(), StoreError> {
        debug_assert!(before.as_ref().is_none_or(|b| b.seq < after.seq));
        debug_assert_eq!(self.last_entry.get(&after.id), Some(&entry));
        if let Some(b) = &before {
            self.batch.remove(codec::seq_key(b.seq));
        }
        self.batch.insert(
            codec::seq_key(after.seq),
            &codec::feed_value(after.id, entry),
        );
        self.batch
            .insert(codec::record_key(after.id), codec::encode_record(&after));
        self.records.insert(after.id, after.clone());
        self.changes.push((before, after));
        Ok(())
    }

    fn note_entry(&mut self, record: &RecordState, entry: u64) -> Result<(), StoreError> {
        self.batch.insert(
            codec::seq_key(record.seq),
            &codec::feed_value(record.id, entry),
        );
        Ok(())
    }

    fn put_applied(
        &mut self,
        device: Uuid,
        mutation: Uuid,
        applied: Applied,
    ) -> Result<(), StoreError> {
        self.batch
            .insert(codec::applied_key(device, mutation), encode(&applied));
        self.applied.insert((device, mutation), applied);
        Ok(())
    }

    fn put_conflict(&mut self, id: Uuid, stored: &StoredConflict) -> Result<(), StoreError> {
        self.batch.insert(codec::conflict_key(id), encode(stored));
        if stored.open {
            self.batch
                .insert(codec::open_conflict_key(stored.seq, id), &[]);
        } else {
            self.batch.remove(codec::open_conflict_key(stored.seq, id));
        }
        Ok(())
    }

    fn put_device(&mut self, device: &Device) -> Result<(), StoreError> {
        self.stage_device(device)
    }
}

impl Tx<'_> {
    /// Stages a device (`d/`) and its token's key (`t/`): the old token's
    /// key goes when the token changed or the device is revoked; a live
    /// device's key is written when new or changed.
    fn stage_device(&mut self, device: &Device) -> Result<(), StoreError> {
        let old = match self.devices.iter().rev().find(|d| d.id == device.id) {
            Some(d) => Some(d.clone()),
            None => self.inner.device(device.id)?,
        };
        let token_changed = old
            .as_ref()
            .is_none_or(|o| o.token_hash != device.token_hash);
        if let Some(old) = &old {
            if (token_changed || device.revoked) && !old.revoked {
                self.batch.remove(codec::token_key(&old.token_hash));
            }
        }
        if !device.revoked && (token_changed || old.as_ref().is_some_and(|o| o.revoked)) {
            self.batch
                .insert(codec::token_key(&device.token_hash), device.id.as_bytes());
        }
        self.batch
            .insert(codec::device_key(device.id), encode(device));
        self.devices.push(device.clone());
        Ok(())
    }

    /// Applies the batch atomically and publishes counters; returns the
    /// write generation to wait on for durability.
    fn commit(mut self, tree: Option<Arc<OrgTree>>) -> Result<u64, StoreError> {
        let inner = self.inner;
        {
            let mut agg = inner.agg.write().unwrap_or_else(|e| e.into_inner());
            for (before, after) in &self.changes {
                agg.apply(before.as_ref(), after);
            }
            for (k, v) in agg.take_dirty() {
                match codec::agg_value(&v) {
                    Some(bytes) => self.batch.insert(codec::agg_key(&k), bytes),
                    None => self.batch.remove(codec::agg_key(&k)),
                }
            }
        }
        self.batch.insert(codec::META_SEQ, &self.seq.to_be_bytes());
        self.batch
            .insert(codec::META_REJECTIONS, &self.rejections.to_be_bytes());
        self.batch
            .insert(codec::META_HLC, encode(&self.hlc.parts()));
        if self.audit != self.w.audit {
            self.batch.insert(codec::META_AUDIT, encode(&self.audit));
        }
        let staged = std::mem::take(&mut self.batch);
        let applied = match &staged.keys {
            Some(keys) => inner.capture(keys),
            None => Ok(()),
        }
        .and_then(|()| Ok(inner.db.apply_batch(staged.batch)?));
        if let Err(e) = applied {
            // The aggregates ran ahead of a write that did not happen:
            // reload them from what is on disk.
            if let Ok(agg) = load_aggregates(&inner.db, self.w.seq) {
                *inner.agg.write().unwrap_or_else(|e| e.into_inner()) = agg;
            }
            return Err(e);
        }
        self.w.seq = self.seq;
        self.w.hlc = self.hlc;
        self.w.rejections = self.rejections;
        self.rejection_index_changed = false;
        self.w.audit = self.audit;
        if let Some(tree) = tree {
            *inner.org.write().unwrap_or_else(|e| e.into_inner()) = tree;
        }
        if !self.devices.is_empty() {
            let mut devices = inner.devices.write().unwrap_or_else(|e| e.into_inner());
            for d in std::mem::take(&mut self.devices) {
                devices.put(d);
            }
        }
        inner.committed_seq.store(self.seq, Ordering::SeqCst);
        Ok(inner.durability.written.fetch_add(1, Ordering::SeqCst) + 1)
    }
}

#[async_trait]
impl Store for SledStore {
    fn store_id(&self) -> Uuid {
        self.inner.store_id
    }

    fn failure(&self) -> watch::Receiver<Option<String>> {
        self.inner.durability.failure.subscribe()
    }

    fn org_tree(&self) -> Arc<OrgTree> {
        self.inner.tree()
    }

    /// From memory, on the calling task: every request asks, and a hand-off
    /// to a blocking thread per request made a burst of 200 devices wake a
    /// thread each, every one keeping its own allocator pages
    /// (docs/performance.md).
    async fn authenticate(&self, hash: TokenHash) -> Result<Option<Device>, StoreError> {
        let devices = self.inner.devices.read().unwrap_or_else(|e| e.into_inner());
        Ok(devices
            .by_token
            .get(&hash)
            .and_then(|id| devices.by_id.get(id))
            .filter(|d| !d.revoked && d.token_hash == hash)
            .cloned())
    }

    async fn device(&self, id: Uuid) -> Result<Option<Device>, StoreError> {
        self.inner.device(id)
    }

    async fn admin_bootstrapped(&self) -> Result<bool, StoreError> {
        self.blocking(|inner| Ok(inner.db.get(codec::META_ADMIN)?.is_some()))
            .await
    }

    async fn bootstrap_admin(&self, device: Device) -> Result<bool, StoreError> {
        self.write(move |inner| {
            let mut tx = inner.begin();
            tx.batch.insert(codec::META_ADMIN, device.id.as_bytes());
            tx.stage_device(&device)?;
            Ok((true, tx.commit(None)?))
        })
        .await
    }

    async fn put_device(&self, device: Device) -> Result<(), StoreError> {
        self.write(move |inner| inner.put_device(device)).await
    }

    async fn revoke_device(&self, id: Uuid) -> Result<bool, StoreError> {
        self.write(move |inner| {
            let mut tx = inner.begin();
            let Some(mut d) = inner.device(id)? else {
                return Ok((false, 0));
            };
            d.revoked = true;
            tx.stage_device(&d)?;
            Ok((true, tx.commit(None)?))
        })
        .await
    }

    async fn upsert_org_units(
        &self,
        units: Vec<OrgUnit>,
        by: &Device,
        now_ms: u64,
    ) -> Result<Result<usize, OrgTreeError>, StoreError> {
        let by = by.clone();
        self.write(move |inner| inner.upsert_org_units(units, &by, now_ms))
            .await
    }

    async fn push(&self, input: PushInput) -> Result<Vec<MutationResult>, StoreError> {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        lock(&self.inner.queued).push((input, tx));
        let turn = self.inner.write_turn.lock().await;
        // An earlier turn may have taken this push with its group.
        if let Ok(answer) = rx.try_recv() {
            drop(turn);
            return finish(&self.inner, Ok(answer)).await;
        }
        let jobs = std::mem::take(&mut *lock(&self.inner.queued));
        if !jobs.is_empty() {
            // Its own task, so that the answers go out even if this request
            // is dropped (timeout, disconnect) meanwhile.
            let inner = self.inner.clone();
            let group = tokio::spawn(async move {
                let (inputs, replies): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
                let outcome = tokio::task::spawn_blocking(move || inner.push_group(inputs)).await;
                match outcome {
                    Ok(answers) => {
                        for (reply, answer) in replies.into_iter().zip(answers) {
                            let _ = reply.send(answer);
                        }
                    }
                    Err(e) => {
                        let msg = format!("store task failed: {e}");
                        for reply in replies {
                            let _ = reply.send(Err(StoreError::Other(msg.clone())));
                        }
                    }
                }
            });
            let _ = group.await;
        }
        drop(turn);
        // Answered by now, or soon by an earlier group whose request was
        // dropped while it ran.
        finish(&self.inner, rx.await).await
    }

    async fn pull(&self, scope: Scope, since: u64, limit: usize) -> Result<PullPage, StoreError> {
        self.blocking(move |inner| inner.pull(&scope, since, limit))
            .await
    }

    async fn note_pull(&self, device: Uuid, now_ms: u64) -> Result<(), StoreError> {
        self.blocking(move |inner| {
            inner
                .db
                .insert(codec::pulled_key(device), &now_ms.to_be_bytes())?;
            Ok(())
        })
        .await
    }

    async fn checksum(&self, scope: &Scope) -> Result<ScopeChecksum, StoreError> {
        let tree = self.inner.tree();
        let agg = self.inner.agg.read().unwrap_or_else(|e| e.into_inner());
        let (seq, count, xor) = match scope {
            Scope::All => agg.checksum_all(),
            Scope::Unit(root) => agg.checksum_scope(&tree, root),
        };
        Ok(ScopeChecksum { seq, count, xor })
    }

    async fn totals(
        &self,
        org: &str,
        from: Option<Date>,
        to: Option<Date>,
    ) -> Result<Option<TotalsResponse>, StoreError> {
        let tree = self.inner.tree();
        let agg = self.inner.agg.read().unwrap_or_else(|e| e.into_inner());
        Ok(totals::totals(&tree, &agg, org, from, to))
    }

    async fn year_figures(&self, org: &str, year: i32) -> Result<Option<YearFigures>, StoreError> {
        let tree = self.inner.tree();
        let agg = self.inner.agg.read().unwrap_or_else(|e| e.into_inner());
        Ok(report::year_figures(&tree, &agg, org, year))
    }

    async fn records(&self, query: RecordQuery) -> Result<RecordPage, StoreError> {
        self.blocking(move |inner| inner.records(&query)).await
    }

    async fn record(&self, id: Uuid) -> Result<Option<RecordView>, StoreError> {
        self.blocking(move |inner| Ok(inner.record(id)?.map(|r| r.view())))
            .await
    }

    async fn conflicts(&self, scope: Scope, limit: usize) -> Result<Vec<ConflictView>, StoreError> {
        self.blocking(move |inner| inner.conflicts(&scope, limit))
            .await
    }

    async fn resolve(
        &self,
        conflict: Uuid,
        value: serde_json::Value,
        by: &Device,
        person: Option<String>,
        now_ms: u64,
    ) -> Result<ResolveOutcome, StoreError> {
        let by = by.clone();
        self.write(move |inner| inner.resolve(conflict, value, &by, person, now_ms))
            .await
    }

    async fn devices(&self, scope: Scope, limit: usize) -> Result<Vec<DeviceView>, StoreError> {
        self.blocking(move |inner| inner.devices(&scope, limit))
            .await
    }

    async fn rejections(
        &self,
        scope: Scope,
        limit: usize,
    ) -> Result<Vec<RejectionView>, StoreError> {
        self.blocking(move |inner| inner.rejections(&scope, limit))
            .await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        if let Err(e) = self.inner.flush_durably().await {
            self.inner.durability.failed(&e);
            return Err(e);
        }
        Ok(())
    }

    // People and enrolment codes: see `people.rs`.

    async fn account(&self, username: &str) -> Result<Option<super::Account>, StoreError> {
        let username = username.to_string();
        self.blocking(move |inner| inner.account(&username)).await
    }

    async fn accounts(&self, limit: usize) -> Result<Vec<super::Account>, StoreError> {
        self.blocking(move |inner| inner.accounts(limit)).await
    }

    async fn create_account(&self, account: super::Account) -> Result<bool, StoreError> {
        self.write(move |inner| inner.create_account(account)).await
    }

    async fn change_account(
        &self,
        username: &str,
        change: super::AccountChange,
    ) -> Result<Option<super::Account>, StoreError> {
        let username = username.to_string();
        self.write(move |inner| inner.change_account(&username, change))
            .await
    }

    async fn put_session(
        &self,
        hash: TokenHash,
        session: super::Session,
        per_account_max: usize,
    ) -> Result<(), StoreError> {
        self.write(move |inner| inner.put_session(hash, session, per_account_max))
            .await
    }

    async fn session(&self, hash: TokenHash) -> Result<Option<super::Session>, StoreError> {
        self.blocking(move |inner| inner.session(hash)).await
    }

    async fn end_session(&self, hash: TokenHash) -> Result<bool, StoreError> {
        self.write(move |inner| inner.end_session(hash)).await
    }

    async fn put_code(&self, code: super::EnrolmentCode, now_ms: u64) -> Result<(), StoreError> {
        self.write(move |inner| inner.put_code(code, now_ms)).await
    }

    async fn codes(&self) -> Result<Vec<super::EnrolmentCode>, StoreError> {
        self.blocking(|inner| inner.codes()).await
    }

    async fn withdraw_code(&self, id: Uuid) -> Result<bool, StoreError> {
        self.write(move |inner| inner.withdraw_code(id)).await
    }

    async fn redeem_code(
        &self,
        hash: TokenHash,
        redemption: super::Redemption,
    ) -> Result<Option<Device>, StoreError> {
        self.write(move |inner| inner.redeem_code(hash, redemption))
            .await
    }

    async fn history(
        &self,
        scope: Scope,
        record: Uuid,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<HistoryEntry>>, StoreError> {
        self.blocking(move |inner| inner.history(&scope, record, after, limit))
            .await
    }

    async fn backup(&self, now_ms: u64) -> Result<BackupChunks, StoreError> {
        // Its own task from start to end, so that a request dropped at any
        // point still ends the backup (else every later write would keep
        // listing its keys).
        let inner = self.inner.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let start = inner.clone();
            let started = tokio::task::spawn_blocking(move || start.start_backup(now_ms))
                .await
                .map_err(|e| StoreError::Other(format!("store task failed: {e}")))
                .and_then(|r| r);
            let (header, generation) = match started {
                Ok(x) => x,
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                    return;
                }
            };
            if let Err(e) = inner.wait_durable(generation).await {
                inner.end_backup();
                let _ = started_tx.send(Err(e));
                return;
            }
            let _ = started_tx.send(Ok(()));
            let ender = inner.clone();
            let copy = tokio::task::spawn_blocking(move || {
                let copied = inner.copy_backup(&header, &tx);
                inner.end_backup();
                if let Err(e) = copied {
                    tracing::error!(error = %e, "backup failed");
                    let _ = tx.blocking_send(Err(e));
                }
            });
            if copy.await.is_err() {
                ender.end_backup(); // the copy panicked
            }
        });
        started_rx
            .await
            .map_err(|_| StoreError::Other("the backup task stopped".into()))??;
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use pufa_core::wire::{Mutation, Role, UnitType};
    use serde_json::json;

    use super::*;
    use crate::config::SeededIds;

    const NOW: u64 = 1_593_561_600_000;

    fn admin() -> Device {
        Device {
            id: Uuid::from_u128(1),
            role: Role::Admin,
            org_unit: None,
            label: "admin".into(),
            revoked: false,
            token_hash: [0; 32],
            created_ms: 0,
            last_push_ms: None,
            report: None,
            clock_skew_ms: None,
        }
    }

    fn unit(code: &str, parent: Option<&str>) -> OrgUnit {
        OrgUnit {
            code: code.into(),
            name: code.into(),
            unit_type: if parent.is_none() {
                UnitType::District
            } else {
                UnitType::Community
            },
            parent: parent.map(str::to_string),
        }
    }

    fn push_input(mutations: Vec<serde_json::Value>) -> PushInput {
        PushInput {
            device: admin(),
            raw: mutations.iter().map(|m| m.to_string()).collect(),
            mutations: mutations
                .into_iter()
                .map(|m| serde_json::from_value::<Mutation>(m).unwrap())
                .collect(),
            report: None,
            now_ms: NOW,
            max_skew_ms: 300_000,
        }
    }

    fn lecture(id: Uuid, ms: u64, org: &str, attendees: u64) -> serde_json::Value {
        json!({
            "id": Uuid::new_v4(), "record_id": id, "kind": "lecture", "base_seq": 0,
            "hlc": {"ms": ms, "c": 0, "node": admin().id},
            "set": {"org_unit": org, "held_on": "2020-06-01", "title": "t", "attendees": attendees}
        })
    }

    /// A store in `dir` with units `d` and its child `a`.
    async fn open_with_units(dir: &std::path::Path) -> (Config, SledStore) {
        let mut config = Config::new(dir);
        config.ids = Arc::new(SeededIds::new(1));
        let store = SledStore::open(&config).unwrap();
        store
            .upsert_org_units(vec![unit("d", None), unit("a", Some("d"))], &admin(), NOW)
            .await
            .unwrap()
            .unwrap();
        (config, store)
    }

    fn dump(db: &sled::Db) -> BTreeMap<Vec<u8>, Vec<u8>> {
        db.iter()
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
            .collect()
    }

    /// A group is applied in batches of whole pushes of at most
    /// GROUP_BATCH_MUTATIONS_MAX mutations (a larger push alone), in order:
    /// seqs keep rising across batches, and pushes sharing a batch share
    /// its write generation.
    #[tokio::test]
    async fn a_large_group_is_applied_in_batches_of_whole_pushes() {
        let dir = tempfile::tempdir().unwrap();
        let (_config, store) = open_with_units(dir.path()).await;
        let push = |n: usize| {
            push_input(
                (0..n)
                    .map(|i| lecture(Uuid::new_v4(), NOW, "a", i as u64))
                    .collect(),
            )
        };
        let max = GROUP_BATCH_MUTATIONS_MAX;
        let sizes = [max - 100, 200, 50, max + 20, 1];
        let answers = store
            .inner
            .push_group(sizes.iter().map(|n| push(*n)).collect());
        let answers: Vec<_> = answers.into_iter().map(Result::unwrap).collect();
        let generations: Vec<u64> = answers.iter().map(|(_, g)| *g).collect();
        // [max-100] | [200, 50] | [max+20] | [1]
        assert_eq!(generations[1], generations[2]);
        assert!(generations[0] < generations[1]);
        assert!(generations[2] < generations[3] && generations[3] < generations[4]);
        let seqs: Vec<u64> = answers
            .iter()
            .flat_map(|(r, _)| r.iter().map(|m| m.seq.unwrap()))
            .collect();
        assert_eq!(seqs.len(), sizes.iter().sum::<usize>());
        assert!(
            seqs.windows(2).all(|w| w[0] + 1 == w[1]),
            "one seq each, in order"
        );
        assert_eq!(
            store.inner.committed_seq.load(Ordering::SeqCst),
            *seqs.last().unwrap()
        );
    }

    /// Token checks answer from memory; whatever a write does to devices
    /// and tokens (new, rotated, revoked, a push's health report, two pushes
    /// of one device in one group) the memory says what the disk says,
    /// before and after reopening.
    #[tokio::test]
    async fn token_checks_from_memory_agree_with_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (config, store) = open_with_units(dir.path()).await;
        let device = |n: u128, token: u8| Device {
            id: Uuid::from_u128(n),
            role: Role::Field,
            org_unit: Some("a".into()),
            label: format!("device {n}"),
            token_hash: [token; 32],
            ..admin()
        };
        let (kept, rotated, revoked) = (device(10, 10), device(11, 11), device(12, 12));
        for d in [&kept, &rotated, &revoked] {
            store.put_device(d.clone()).await.unwrap();
        }
        let rotated_now = Device {
            token_hash: [21; 32],
            ..rotated.clone()
        };
        store.put_device(rotated_now.clone()).await.unwrap();
        assert!(store.revoke_device(revoked.id).await.unwrap());
        let mut input = push_input(vec![lecture(Uuid::new_v4(), NOW, "a", 3)]);
        input.device = kept.clone();
        input.report = Some(pufa_core::wire::DeviceReport {
            now_ms: Some(NOW - 5),
            ..Default::default()
        });
        let mut second = push_input(vec![lecture(Uuid::new_v4(), NOW, "a", 4)]);
        second.device = kept.clone();
        let (a, b) = tokio::join!(store.push(input), store.push(second));
        a.unwrap();
        b.unwrap();
        let expect = |store: SledStore| async move {
            let who = |t: u8| {
                let store = &store;
                async move { store.authenticate([t; 32]).await.unwrap().map(|d| d.id) }
            };
            assert_eq!(who(10).await, Some(kept.id));
            assert_eq!(who(11).await, None, "the rotated token's old secret");
            assert_eq!(who(21).await, Some(rotated.id));
            assert_eq!(who(12).await, None, "revoked");
            let k = store.device(kept.id).await.unwrap().unwrap();
            assert_eq!((k.last_push_ms, k.clock_skew_ms), (Some(NOW), Some(5)));
            assert!(store.device(revoked.id).await.unwrap().unwrap().revoked);
            let disk = Devices::load(&store.inner.db).unwrap();
            {
                let memory = store.inner.devices.read().unwrap();
                assert_eq!(disk.by_token, memory.by_token);
                assert_eq!(disk.by_id, memory.by_id);
            }
            store
        };
        let store = expect(store).await;
        drop(store);
        expect(SledStore::open(&config).unwrap()).await;
    }

    /// sled 0.34.7 reads a leftover `snap.*.generating` (a snapshot cut
    /// short by a full disk or a kill) as the newest snapshot and refuses
    /// to open; the store sets it aside and opens from the log.
    #[tokio::test]
    async fn an_incomplete_sled_snapshot_does_not_stop_the_store_from_opening() {
        let dir = tempfile::tempdir().unwrap();
        let (config, store) = open_with_units(dir.path()).await;
        let ids: Vec<Uuid> = (0..50).map(|_| Uuid::new_v4()).collect();
        let batch = ids.iter().map(|id| lecture(*id, NOW, "a", 3)).collect();
        store.push(push_input(batch)).await.unwrap();
        let before = store.checksum(&Scope::All).await.unwrap();
        drop(store);
        // Half a snapshot, newer than any sled wrote (it sorts last).
        let junk = config.store_path().join("snap.FFFFFFFFFFFFFFF0.generating");
        std::fs::write(&junk, b"half a snapshot, cut off by a full disk").unwrap();
        let raw = open_db(&sled::Config::new().path(config.store_path()));
        assert!(
            matches!(raw, Err(sled::Error::Corruption { .. })),
            "sled itself refuses it: {raw:?}"
        );
        drop(raw);
        let store = SledStore::open(&config).expect("opens after setting the file aside");
        assert_eq!(store.checksum(&Scope::All).await.unwrap(), before);
        for id in &ids {
            assert!(store.record(*id).await.unwrap().is_some());
        }
        assert!(!junk.exists());
        let aside: Vec<_> = std::fs::read_dir(dir.path().join(INCOMPLETE_SNAPSHOTS_DIR))
            .unwrap()
            .collect();
        assert_eq!(aside.len(), 1, "kept, not deleted");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backup_is_the_store_as_it_started_whatever_is_written_while_it_copies() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new(dir.path());
        config.ids = Arc::new(SeededIds::new(1));
        let store = SledStore::open(&config).unwrap();
        let units = vec![unit("d", None), unit("a", Some("d")), unit("b", Some("d"))];
        store
            .upsert_org_units(units, &admin(), NOW)
            .await
            .unwrap()
            .unwrap();
        let mut ids = Vec::new();
        for round in 0..2 {
            let batch: Vec<_> = (0..1000)
                .map(|i| {
                    ids.push(Uuid::new_v4());
                    lecture(*ids.last().unwrap(), NOW, ["a", "b"][i % 2], round)
                })
                .collect();
            store.push(push_input(batch)).await.unwrap();
        }
        let inner = store.inner.clone();
        let (header, generation) = inner.start_backup(NOW).unwrap();
        assert!(inner.start_backup(NOW).is_err(), "one backup at a time");
        inner.wait_durable(generation).await.unwrap();
        let before = dump(&inner.db);
        let mut copy = Copier {
            live: inner.db.iter(),
            enc: backup::Encoder::new(&header),
            pairs: 0,
        };
        let mut bytes = Vec::new();
        let mut steps = 0u64;
        while !inner.copy_step(&mut copy).unwrap() {
            bytes.extend(copy.enc.take());
            steps += 1;
            // Between every two steps: edits of records on both sides of
            // the copy's cursor, new records, and once a move of every
            // record of a unit (feed entries removed and added).
            let mut batch: Vec<_> = ids
                .iter()
                .skip((steps as usize * 37) % 1900)
                .step_by(17)
                .take(20)
                .map(|id| lecture(*id, NOW + steps, "a", 1000 + steps))
                .collect();
            batch.push(lecture(Uuid::new_v4(), NOW, "b", 1));
            store.push(push_input(batch)).await.unwrap();
            if steps == 20 {
                let moved = vec![unit("x", Some("d")), unit("b", Some("x"))];
                store
                    .upsert_org_units(moved, &admin(), NOW)
                    .await
                    .unwrap()
                    .unwrap();
            }
        }
        bytes.extend(copy.enc.finish());
        inner.end_backup();
        assert!(steps > 30, "the copy took {steps} steps");
        assert_ne!(dump(&inner.db), before, "the store moved on");
        let mut copied = BTreeMap::new();
        let (read_header, pairs) = backup::read(&mut bytes.as_slice(), |k, v| {
            copied.insert(k, v);
            Ok(())
        })
        .unwrap();
        assert_eq!((read_header, pairs), (header, before.len() as u64));
        assert!(copied == before, "the copy is the store as of the start");
        // Writes after the end no longer list their keys.
        assert!(inner.begin().batch.keys.is_none());
    }
}
