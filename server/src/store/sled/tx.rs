//! One staged write under the writer lock: what a write reads and stages
//! ([`apply::Staging`]), in one `sled::Batch` applied atomically with the
//! aggregates and counters it moves; then the in-memory state follows.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

use pufa_core::hlc::HlcClock;
use pufa_core::merge::RecordState;
use pufa_core::org::OrgTree;
use pufa_core::period::Locks;
use pufa_core::schema::Rejection;
use uuid::Uuid;

use super::open::load_aggregates;
use super::rejections::RejectionIndex;
use super::Inner;
use crate::store::apply;
use crate::store::codec::{
    self, decode, encode, Applied, AuditBody, StoredConflict, StoredRejection,
};
use crate::store::{lock, Device, StoreError};

/// A `sled::Batch` that also lists its keys while a backup runs.
#[derive(Default)]
pub(super) struct Staged {
    pub(super) batch: sled::Batch,
    pub(super) keys: Option<Vec<sled::IVec>>,
}

impl Staged {
    pub(super) fn insert(&mut self, key: impl Into<sled::IVec>, value: impl Into<sled::IVec>) {
        let key = key.into();
        if let Some(keys) = &mut self.keys {
            keys.push(key.clone());
        }
        self.batch.insert(key, value);
    }

    pub(super) fn remove(&mut self, key: impl Into<sled::IVec>) {
        let key = key.into();
        if let Some(keys) = &mut self.keys {
            keys.push(key.clone());
        }
        self.batch.remove(key);
    }
}

/// State only the writer touches; published to disk with every batch.
pub(super) struct Writer {
    pub(super) seq: u64,
    pub(super) hlc: HlcClock,
    pub(super) rejections: u64,
    /// The rejections on disk, by number and by device.
    pub(super) rejection_index: RejectionIndex,
    /// The last audit entry's `n` and hash.
    pub(super) audit: (u64, codec::Hash),
}

impl Inner {
    pub(super) fn begin(&self) -> Tx<'_> {
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
            locks: self.locks(),
            locks_changed: false,
        }
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
pub(super) struct Tx<'a> {
    pub(super) inner: &'a Inner,
    pub(super) w: MutexGuard<'a, Writer>,
    pub(super) batch: Staged,
    pub(super) seq: u64,
    pub(super) hlc: HlcClock,
    pub(super) rejections: u64,
    /// Whether this batch changed `w.rejection_index`, which then holds
    /// what the batch will leave on disk: reloaded from disk unless the
    /// batch is applied.
    pub(super) rejection_index_changed: bool,
    pub(super) audit: (u64, codec::Hash),
    /// The last audit entry staged for each record in this batch.
    pub(super) last_entry: HashMap<Uuid, u64>,
    /// Records touched by this batch, at their latest staged state.
    pub(super) records: HashMap<Uuid, RecordState>,
    pub(super) applied: HashMap<(Uuid, Uuid), Applied>,
    /// `(before, after)` of every record write, for the aggregates.
    pub(super) changes: Vec<(Option<RecordState>, RecordState)>,
    /// Devices written, in order, for [`Inner::devices`] after the commit.
    pub(super) devices: Vec<Device>,
    /// The approved periods as this write leaves them.
    pub(super) locks: Arc<Locks>,
    pub(super) locks_changed: bool,
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

    fn locks(&self) -> &Locks {
        &self.locks
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

    fn put_period(&mut self, p: &crate::store::StoredPeriod) -> Result<(), StoreError> {
        self.stage_period(p);
        Ok(())
    }

    fn put_dismissal(&mut self, d: &crate::store::StoredDismissal) -> Result<(), StoreError> {
        self.batch.insert(codec::dismissal_key(d.a, d.b), encode(d));
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
    pub(super) fn stage_period(&mut self, p: &crate::store::StoredPeriod) {
        self.batch
            .insert(codec::period_key(&p.org_unit, p.period), encode(p));
        let locks = Arc::make_mut(&mut self.locks);
        match p.approval() {
            Some(a) => locks.set(a),
            None => locks.clear(&p.org_unit, p.period),
        }
        self.locks_changed = true;
    }

    pub(super) fn stage_device(&mut self, device: &Device) -> Result<(), StoreError> {
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
    pub(super) fn commit(mut self, tree: Option<Arc<OrgTree>>) -> Result<u64, StoreError> {
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
        if self.locks_changed {
            *inner.locks.write().unwrap_or_else(|e| e.into_inner()) = self.locks.clone();
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
