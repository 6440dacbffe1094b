//! The sled store's online backup. sled has no snapshots, so a backup copies
//! the live tree while every write, before it is applied, keeps the
//! start-of-backup value of each key it touches that the copy has not
//! reached yet ([`Overlay`]); writers never wait for the copy.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::{Inner, SledStore, BACKUP_OVERLAY_BYTES_MAX};
use crate::store::backup::{self, BackupHeader};
use crate::store::codec;
use crate::store::{lock, BackupChunks, StoreError};

/// Live keys an online backup copies between two looks at the overlay.
const BACKUP_KEYS_PER_STEP: usize = 256;
/// Bytes of backup text handed to the response at a time.
const BACKUP_CHUNK_BYTES: usize = 256 * 1024;

/// What an online backup needs of keys written since it started: their
/// values at the start, for keys the copy has not reached yet.
#[derive(Default)]
pub(super) struct Overlay {
    /// The last key the copy has passed.
    pub(super) cursor: Option<sled::IVec>,
    /// Value at the start (`None`: absent then) of keys above `cursor`
    /// written since the start.
    pub(super) before: BTreeMap<sled::IVec, Option<sled::IVec>>,
    pub(super) bytes: usize,
    pub(super) overflowed: bool,
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
pub(super) struct Copier {
    pub(super) live: sled::Iter,
    pub(super) enc: backup::Encoder,
    pub(super) pairs: u64,
}

impl Inner {
    /// Keeps the start-of-backup values of `keys`, about to be written, for
    /// the running backup (if any) when its copy has not reached them.
    pub(super) fn capture(&self, keys: &[sled::IVec]) -> Result<(), StoreError> {
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
    pub(super) fn start_backup(&self, now_ms: u64) -> Result<(BackupHeader, u64), StoreError> {
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

    pub(super) fn end_backup(&self) {
        *lock(&self.backup) = None;
        self.backup_on.store(false, Ordering::SeqCst);
    }

    /// Copies every key as of the backup's start into `out`.
    pub(super) fn copy_backup(
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
    pub(super) fn copy_step(&self, copy: &mut Copier) -> Result<bool, StoreError> {
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
}

impl SledStore {
    /// Starts an online backup ([`MaintenanceStore::backup`](crate::store::MaintenanceStore::backup)).
    pub(super) async fn backup_chunks(&self, now_ms: u64) -> Result<BackupChunks, StoreError> {
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
