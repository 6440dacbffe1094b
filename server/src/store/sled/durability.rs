//! When writes are durable: the flusher runs one flush (and the fsyncs after
//! it) for every write applied while the previous flush ran, and publishes
//! what it covered; writers wait for their generation, and pulls read up to
//! `durable_seq`. Also the store's health and shutdown flush.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use tokio::sync::{watch, Notify};

use super::open::sync_failed;
use super::{Inner, SledStore};
use crate::store::{BackupChunks, MaintenanceStore, StoreError};

#[derive(Clone, Debug, Default)]
pub(super) struct Flushed {
    pub(super) durable: u64,
    pub(super) failed: Option<(u64, String)>,
}

pub(super) struct Durability {
    pub(super) written: AtomicU64,
    /// The highest seq known to be on disk: the pull watermark.
    pub(super) durable_seq: AtomicU64,
    pub(super) state: watch::Sender<Flushed>,
    pub(super) wake: Notify,
    pub(super) closed: AtomicBool,
    /// Set at the first failed write or flush: sled then refuses every
    /// write until the `Db` is reopened ([`MaintenanceStore::failure`]).
    pub(super) failure: watch::Sender<Option<String>>,
}

impl Durability {
    /// Notes a failed write or flush; only IO errors count (sled's
    /// reads and writes can both hit one once its log cannot be written).
    pub(super) fn failed(&self, e: &StoreError) {
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

/// Flushes whenever woken, covering every write made before the flush began.
/// Holds the store only while flushing, so dropping the store ends it.
pub(super) async fn flusher(inner: Weak<Inner>, durability: Arc<Durability>) {
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
    pub(super) async fn flush_durably(self: &Arc<Inner>) -> Result<(), StoreError> {
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

    pub(super) async fn wait_durable(&self, generation: u64) -> Result<(), StoreError> {
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
}

#[async_trait]
impl MaintenanceStore for SledStore {
    fn failure(&self) -> watch::Receiver<Option<String>> {
        self.inner.durability.failure.subscribe()
    }

    async fn flush(&self) -> Result<(), StoreError> {
        if let Err(e) = self.inner.flush_durably().await {
            self.inner.durability.failed(&e);
            return Err(e);
        }
        Ok(())
    }

    async fn backup(&self, now_ms: u64) -> Result<BackupChunks, StoreError> {
        self.backup_chunks(now_ms).await
    }
}
