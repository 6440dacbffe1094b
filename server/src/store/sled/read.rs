//! Reads of the sled store: records, pages of the change feed up to the
//! durable watermark, a record's history along its audit entries, the
//! lists coordinators read, and figures from the aggregates in memory.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use pufa_core::date::Date;
use pufa_core::merge::RecordState;
use pufa_core::org::Scope;
use pufa_core::report::{self, YearFigures};
use pufa_core::totals;
use pufa_core::wire::{
    ConflictView, DeviceView, HistoryEntry, RecordView, RejectionView, TotalsResponse,
};
use uuid::Uuid;

use super::{Inner, SledStore};
use crate::store::codec::{self, decode, StoredConflict, StoredRejection};
use crate::store::paging::RecordScan;
use crate::store::paging::RejectionPage;
use crate::store::{
    Device, PullPage, ReadStore, RecordPage, RecordQuery, StoreError, LIST_SCAN_MAX, PULL_SCAN_MAX,
};

impl Inner {
    pub(super) fn record(&self, id: Uuid) -> Result<Option<RecordState>, StoreError> {
        self.db
            .get(codec::record_key(id))?
            .map(|v| codec::decode_record(&v))
            .transpose()
    }

    pub(super) fn records(&self, q: &RecordQuery) -> Result<RecordPage, StoreError> {
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
        let mut scan = RecordScan::new(q, &tree);
        for kv in self.db.range(start..) {
            let (k, v) = kv?;
            if !k.starts_with(codec::RECORD) {
                break;
            }
            if let Some(page) = scan.offer(&v)? {
                return Ok(page);
            }
        }
        Ok(scan.end())
    }

    pub(super) fn history(
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
            crate::store::readable_history(newer, &tree, scope, rec.org_unit())
                .into_iter()
                .rev()
                .take(limit)
                .map(codec::StoredAudit::view)
                .collect(),
        ))
    }

    pub(super) fn pull(
        &self,
        scope: &Scope,
        since: u64,
        limit: usize,
    ) -> Result<PullPage, StoreError> {
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

    pub(super) fn conflicts(
        &self,
        scope: &Scope,
        limit: usize,
    ) -> Result<Vec<ConflictView>, StoreError> {
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

    pub(super) fn devices(
        &self,
        scope: &Scope,
        limit: usize,
    ) -> Result<Vec<DeviceView>, StoreError> {
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

    pub(super) fn rejections(
        &self,
        scope: &Scope,
        limit: usize,
    ) -> Result<Vec<RejectionView>, StoreError> {
        let tree = self.tree();
        let mut devices: HashMap<Uuid, bool> = HashMap::new();
        let mut page = RejectionPage::new(limit);
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
            if visible && !page.offer(r, v.len())? {
                break;
            }
        }
        Ok(page.end())
    }
}

#[async_trait]
impl ReadStore for SledStore {
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
}
