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

mod admin;
mod backup;
mod devices;
mod duplicates;
mod durability;
mod open;
mod people;
mod periods;
mod read;
mod rejections;
mod sync;
#[cfg(test)]
mod tests;
mod tx;
mod upgrade;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use pufa_core::org::OrgTree;
use pufa_core::period::Locks;
use pufa_core::totals::Aggregates;
use pufa_core::wire::MutationResult;
use uuid::Uuid;

use pufa_durable::SledFiles;

use super::commit::PushQueue;
use super::{Device, StoreError};
use crate::config::{Clock, IdSource, RejectionsKept};
use backup::Overlay;
use devices::Devices;
use durability::Durability;
use tx::Writer;

pub use open::open_db;
pub(crate) use open::{flush_durably, set_aside_incomplete_snapshots};

/// Most bytes of start-of-backup values an online backup keeps for keys
/// written while it copies; past it the backup fails (writes go on).
pub(crate) const BACKUP_OVERLAY_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Most mutations a group apply puts into one sled batch; a larger group is
/// applied as several batches, each of whole pushes. sled keeps every node
/// version a batch replaces until the batch ends (it holds one epoch guard
/// throughout), so batch size is transient memory.
pub(crate) const GROUP_BATCH_MUTATIONS_MAX: usize = 500;
/// Longest wait for the store's lock when opening it, in milliseconds:
/// sled's own threads can hold it a moment after its previous user closed
/// the store (a restart in one process), and a server being replaced may
/// still be exiting.
pub(crate) const STORE_LOCK_WAIT_MS: u64 = 2_000;

/// What the sled store is opened with: the part of the server's `Config`
/// it needs (`impl From<&Config>` builds it).
#[derive(Clone)]
pub struct SledConfig {
    /// The store's directory (`<data dir>/store`).
    pub path: PathBuf,
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
    /// Follow every sled flush with real fsyncs, so that what is
    /// acknowledged survives a power cut (off only under `--unsafe-no-fsync`).
    pub fsync: bool,
    /// How many rejected mutations to keep.
    pub rejections_kept: RejectionsKept,
    /// The time of the baseline audit entries a format upgrade writes.
    pub clock: Arc<dyn Clock>,
    /// New store ids and conflict ids.
    pub ids: Arc<dyn IdSource>,
}

/// The sled-backed [`Store`](super::Store).
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
    /// The approved periods (what `q/` holds in that state); changed only
    /// by [`tx::Tx::commit`], after its batch.
    locks: RwLock<Arc<Locks>>,
    /// Every device, and which live token is whose: what `d/` and `t/`
    /// hold, kept in memory so that the token check of every request is
    /// no sled read. sled's reads wait while a batch is applied (its
    /// concurrency control, once batches are used), and the check runs on
    /// the request's task. Changed only by [`tx::Tx::commit`], after its batch.
    devices: RwLock<Devices>,
    durability: Arc<Durability>,
    /// Pushes waiting for the next group apply, and whose turn it is to
    /// write: every write takes the turn (see [`SledStore::write`]).
    pushes: PushQueue<(Vec<MutationResult>, u64)>,
    /// The running online backup's start-of-backup values, if one runs.
    backup: Mutex<Option<Overlay>>,
    /// Whether new writes must list their keys for [`Inner::capture`].
    backup_on: AtomicBool,
}

impl SledStore {
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
        // Writers queue for the turn, asynchronously, rather than each
        // parking a blocking-pool thread on the writer lock: 200 devices
        // pushing at once otherwise meant 200 threads (and their allocator
        // caches).
        let (value, generation) = {
            let _turn = self.inner.pushes.turn().await;
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

impl Inner {
    fn tree(&self) -> Arc<OrgTree> {
        self.org.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn locks(&self) -> Arc<Locks> {
        self.locks.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn device(&self, id: Uuid) -> Result<Option<Device>, StoreError> {
        let devices = self.devices.read().unwrap_or_else(|e| e.into_inner());
        Ok(devices.by_id.get(&id).cloned())
    }
}
