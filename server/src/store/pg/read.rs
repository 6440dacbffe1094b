//! Reads of the PostgreSQL store: figures from the caught-up aggregates,
//! records in id order, a record's history along its audit entries, and the
//! lists coordinators read.

use std::collections::HashMap;

use async_trait::async_trait;
use pufa_core::date::Date;
use pufa_core::org::Scope;
use pufa_core::report::{self, YearFigures};
use pufa_core::totals;
use pufa_core::wire::{
    ConflictView, DeviceView, HistoryEntry, RecordView, RejectionView, TotalsResponse,
};
use uuid::Uuid;

use super::{big, pg_err, small, Inner, PgStore, SCAN_CHUNK};
use crate::store::codec::{self, decode, StoredConflict, StoredRejection};
use crate::store::paging::RecordScan;
use crate::store::paging::RejectionPage;
use crate::store::{Device, ReadStore, RecordPage, RecordQuery, StoreError, LIST_SCAN_MAX};

#[async_trait]
impl ReadStore for PgStore {
    async fn totals(
        &self,
        org: &str,
        from: Option<Date>,
        to: Option<Date>,
    ) -> Result<Option<TotalsResponse>, StoreError> {
        let client = self.inner.client().await?;
        self.inner.catch_up(&**client).await?;
        let tree = self.inner.tree();
        let cache = self.inner.agg.read().unwrap_or_else(|e| e.into_inner());
        Ok(totals::totals(&tree, &cache.agg, org, from, to))
    }

    async fn year_figures(&self, org: &str, year: i32) -> Result<Option<YearFigures>, StoreError> {
        let client = self.inner.client().await?;
        self.inner.catch_up(&**client).await?;
        let tree = self.inner.tree();
        let cache = self.inner.agg.read().unwrap_or_else(|e| e.into_inner());
        Ok(report::year_figures(&tree, &cache.agg, org, year))
    }

    async fn records(&self, q: RecordQuery) -> Result<RecordPage, StoreError> {
        let client = self.inner.client().await?;
        self.inner.catch_up(&**client).await?;
        let tree = self.inner.tree();
        // Two statements rather than `$1 IS NULL OR id > $1`, which a
        // cached generic plan would answer by scanning from the start.
        let first = client
            .prepare_cached("SELECT id, body FROM pufa_records ORDER BY id LIMIT $1")
            .await
            .map_err(pg_err)?;
        let next = client
            .prepare_cached("SELECT id, body FROM pufa_records WHERE id > $1 ORDER BY id LIMIT $2")
            .await
            .map_err(pg_err)?;
        let mut after = q.after;
        let mut scan = RecordScan::new(&q, &tree);
        loop {
            let rows = match after {
                None => client.query(&first, &[&SCAN_CHUNK]).await,
                Some(id) => client.query(&next, &[&id, &SCAN_CHUNK]).await,
            }
            .map_err(pg_err)?;
            for row in &rows {
                if let Some(page) = scan.offer(row.get(1))? {
                    return Ok(page);
                }
            }
            if (rows.len() as i64) < SCAN_CHUNK {
                return Ok(scan.end());
            }
            after = scan.last_examined();
        }
    }

    async fn record(&self, id: Uuid) -> Result<Option<RecordView>, StoreError> {
        let client = self.inner.client().await?;
        client
            .query_opt("SELECT body FROM pufa_records WHERE id = $1", &[&id])
            .await
            .map_err(pg_err)?
            .map(|r| codec::decode_record(r.get(0)).map(|r| r.view()))
            .transpose()
    }

    async fn conflicts(&self, scope: Scope, limit: usize) -> Result<Vec<ConflictView>, StoreError> {
        let client = self.inner.client().await?;
        self.inner.catch_up(&**client).await?;
        let tree = self.inner.tree();
        let rows = client
            .query(
                "SELECT c.id, c.body, r.body FROM pufa_conflicts c
                   JOIN pufa_records r ON r.id = c.record_id
                  WHERE c.open ORDER BY c.seq DESC, c.id DESC LIMIT $1",
                &[&big(LIST_SCAN_MAX as u64)],
            )
            .await
            .map_err(pg_err)?;
        let mut out = Vec::new();
        for row in rows {
            let id: Uuid = row.get(0);
            let c: StoredConflict = decode(row.get(1))?;
            let rec = codec::decode_record(row.get(2))?;
            if rec.org_unit().is_some_and(|u| tree.in_scope(u, &scope)) {
                out.push(c.conflict.view(id, c.record_id, c.seq));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn devices(&self, scope: Scope, limit: usize) -> Result<Vec<DeviceView>, StoreError> {
        let client = self.inner.client().await?;
        self.inner.catch_up(&**client).await?;
        let tree = self.inner.tree();
        let rows = client
            .query(
                "SELECT body, last_pull_ms FROM pufa_devices ORDER BY id",
                &[],
            )
            .await
            .map_err(pg_err)?;
        let mut out = Vec::new();
        for row in rows {
            let d: Device = decode(row.get(0))?;
            if d.visible_in(&tree, &scope) {
                out.push(d.view(row.get::<_, Option<i64>>(1).map(small)));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn rejections(
        &self,
        scope: Scope,
        limit: usize,
    ) -> Result<Vec<RejectionView>, StoreError> {
        let client = self.inner.client().await?;
        self.inner.catch_up(&**client).await?;
        let tree = self.inner.tree();
        let mut visible: HashMap<Uuid, bool> = HashMap::new();
        for row in client
            .query("SELECT body FROM pufa_devices", &[])
            .await
            .map_err(pg_err)?
        {
            let d: Device = decode(row.get(0))?;
            visible.insert(d.id, d.visible_in(&tree, &scope));
        }
        // Streamed, so that no more than one body at a time is held
        // beyond what the answer keeps.
        let rows = client
            .query_raw(
                "SELECT body FROM pufa_rejections ORDER BY n DESC LIMIT $1",
                [big(LIST_SCAN_MAX as u64)],
            )
            .await
            .map_err(pg_err)?;
        futures_util::pin_mut!(rows);
        let mut page = RejectionPage::new(limit);
        while let Some(row) = futures_util::TryStreamExt::try_next(&mut rows)
            .await
            .map_err(pg_err)?
        {
            let body: &[u8] = row.get(0);
            let r: StoredRejection = decode(body)?;
            if visible.get(&r.device_id).copied().unwrap_or(false) && !page.offer(r, body.len())? {
                break;
            }
        }
        Ok(page.end())
    }

    async fn history(
        &self,
        scope: Scope,
        id: Uuid,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<HistoryEntry>>, StoreError> {
        let client = self.inner.client().await?;
        self.inner.catch_up(&**client).await?;
        let tree = self.inner.tree();
        let Some(row) = client
            .query_opt(
                "SELECT body, last_entry FROM pufa_records WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(pg_err)?
        else {
            return Ok(None);
        };
        let (rec, last) = Inner::record_of(&row, 0, 1)?;
        if !(rec.org_unit().is_some_and(|u| tree.in_scope(u, &scope)) || rec.ever_in(&scope)) {
            return Ok(None);
        }
        let st = client
            .prepare_cached("SELECT value FROM pufa_audit WHERE n = $1")
            .await
            .map_err(pg_err)?;
        let mut next = Some(last);
        let mut newer = Vec::new();
        while let Some(n) = next.filter(|n| *n > after) {
            let row = client
                .query_opt(&st, &[&big(n)])
                .await
                .map_err(pg_err)?
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("history of {id} names a missing audit entry {n}"))
                })?;
            let entry = codec::decode_audit(row.get(0))?;
            next = entry.body.record_prev;
            newer.push(entry);
        }
        Ok(Some(
            crate::store::readable_history(newer, &tree, &scope, rec.org_unit())
                .into_iter()
                .rev()
                .take(limit)
                .map(codec::StoredAudit::view)
                .collect(),
        ))
    }
}
