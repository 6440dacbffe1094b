//! Writes by admins and coordinators on the PostgreSQL store: the bootstrap
//! admin, devices and their tokens, org units (moving the records of
//! re-parented units), conflict resolutions. Each holds the state-row lock.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use pufa_core::org::OrgTreeError;
use pufa_core::wire::OrgUnit;
use uuid::Uuid;

use super::staging::PgStaging;
use super::{pg_err, Inner, PgStore};
use crate::store::apply;
use crate::store::codec::{decode, StoredConflict};
use crate::store::{AdminStore, Device, ResolveOutcome, StoreError};

#[async_trait]
impl AdminStore for PgStore {
    async fn admin_bootstrapped(&self) -> Result<bool, StoreError> {
        let client = self.inner.client().await?;
        let row = client
            .query_one("SELECT admin IS NOT NULL FROM pufa_state WHERE id = 1", &[])
            .await
            .map_err(pg_err)?;
        Ok(row.get(0))
    }

    async fn bootstrap_admin(&self, device: Device) -> Result<bool, StoreError> {
        // Several instances may start on an empty database at once: the
        // first to take the lock makes the admin; the others learn so.
        self.inner.device_write(device, true).await
    }

    async fn put_device(&self, device: Device) -> Result<(), StoreError> {
        self.inner.device_write(device, false).await.map(|_| ())
    }

    async fn revoke_device(&self, id: Uuid) -> Result<bool, StoreError> {
        let mut client = self.inner.client().await?;
        let (tx, state) = self.inner.begin(&mut client).await?;
        // Read under the lock: a push may be updating its health.
        let Some(row) = tx
            .query_opt("SELECT body FROM pufa_devices WHERE id = $1", &[&id])
            .await
            .map_err(pg_err)?
        else {
            tx.rollback().await.map_err(pg_err)?;
            return Ok(false);
        };
        let mut d: Device = decode(row.get(0))?;
        d.revoked = true;
        Inner::upsert_device(&tx, &d).await?;
        self.inner
            .commit(tx, PgStaging::new(state, self.inner.rejections_kept), None)
            .await?;
        Ok(true)
    }

    async fn upsert_org_units(
        &self,
        units: Vec<OrgUnit>,
        by: &Device,
        now_ms: u64,
    ) -> Result<Result<usize, OrgTreeError>, StoreError> {
        let mut client = self.inner.client().await?;
        let (tx, state) = self.inner.begin(&mut client).await?;
        let old = self.inner.tree();
        let (next, moved) = match old.with_upserts(&units) {
            Ok(x) => x,
            Err(e) => {
                tx.rollback().await.map_err(pg_err)?;
                return Ok(Err(e));
            }
        };
        let mut st = PgStaging::new(state, self.inner.rejections_kept);
        st.load_locks(&tx).await?;
        if let Some(e) = pufa_core::period::moves_locked(&st.locks, &old, &next, &moved) {
            tx.rollback().await.map_err(pg_err)?;
            return Ok(Err(e));
        }
        // Every record below a re-parented unit changes scope: new seq, and
        // its `ever` learns the new ancestors (§4).
        if !moved.is_empty() {
            let affected: Vec<String> = moved
                .iter()
                .flat_map(|code| next.subtree(code))
                .map(|u| u.code.clone())
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            let rows = tx
                .query(
                    "SELECT id, body, last_entry FROM pufa_records
                      WHERE org_unit = ANY($1) ORDER BY id",
                    &[&affected],
                )
                .await
                .map_err(pg_err)?;
            let mut befores = Vec::with_capacity(rows.len());
            for row in &rows {
                let (r, entry) = Inner::record_of(row, 1, 2)?;
                st.records.insert(r.id, Some((r.clone(), entry)));
                befores.push(r);
            }
            for before in befores {
                apply::move_record(&mut st, before, &old, &next, by, now_ms)?;
            }
        }
        let n = units.len();
        self.inner
            .commit(tx, st, Some((units, Arc::new(next))))
            .await?;
        Ok(Ok(n))
    }

    async fn resolve(
        &self,
        conflict: Uuid,
        value: serde_json::Value,
        by: &Device,
        person: Option<String>,
        now_ms: u64,
    ) -> Result<ResolveOutcome, StoreError> {
        let mut client = self.inner.client().await?;
        let (tx, state) = self.inner.begin(&mut client).await?;
        let Some(row) = tx
            .query_opt(
                "SELECT body FROM pufa_conflicts WHERE id = $1",
                &[&conflict],
            )
            .await
            .map_err(pg_err)?
        else {
            tx.rollback().await.map_err(pg_err)?;
            return Ok(ResolveOutcome::NotFound);
        };
        let stored: StoredConflict = decode(row.get(0))?;
        let mut st = PgStaging::new(state, self.inner.rejections_kept);
        st.load_records(&tx, vec![stored.record_id]).await?;
        st.load_locks(&tx).await?;
        let tree = self.inner.tree();
        let outcome = apply::resolve(&mut st, &tree, conflict, stored, value, by, person, now_ms)?;
        if matches!(outcome, ResolveOutcome::Resolved(_)) {
            self.inner.commit(tx, st, None).await?;
        } else {
            tx.rollback().await.map_err(pg_err)?;
        }
        Ok(outcome)
    }
}
