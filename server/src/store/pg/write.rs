//! A write on PostgreSQL: begun by locking the state row (with the caches
//! caught up), what was staged sent in a few array statements, the state row
//! advanced, committed; then this instance's caches take in what it wrote.

use std::collections::HashSet;
use std::sync::Arc;

use pufa_core::hlc::HlcClock;
use pufa_core::org::OrgTree;
use pufa_core::wire::OrgUnit;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::staging::PgStaging;
use super::{big, hash_of, pg_err, small, Inner, State};
use crate::store::codec::{self, decode, encode};
use crate::store::{lock, Device, StoreError};

/// Keeps the last of each id, in first-seen order (one row may be
/// written once per statement).
fn last_of<K: Eq + std::hash::Hash + Copy, V>(items: Vec<(K, V)>) -> Vec<(K, V)> {
    let mut seen = HashSet::new();
    let mut out: Vec<(K, V)> = items
        .into_iter()
        .rev()
        .filter(|(k, _)| seen.insert(*k))
        .collect();
    out.reverse();
    out
}

impl Inner {
    /// Begins a write: a transaction holding the state row, with the
    /// caches caught up to it. The refresh guard stays held until the
    /// write has staged its aggregates.
    pub(super) async fn begin<'c>(
        &self,
        client: &'c mut deadpool_postgres::Object,
    ) -> Result<(deadpool_postgres::Transaction<'c>, State), StoreError> {
        let tx = client.transaction().await.map_err(pg_err)?;
        let row = tx
            .query_one(
                "SELECT seq, hlc, rejections, audit_n, audit_hash, gen, org_version, admin
                   FROM pufa_state WHERE id = 1 FOR UPDATE",
                &[],
            )
            .await
            .map_err(pg_err)?;
        // The org tree and aggregates as of this write: nobody else can
        // commit until it does.
        self.catch_up(&*tx).await?;
        let (ms, c): (u64, u32) = decode(row.get(1))?;
        let stored = HlcClock::from_parts(ms, c);
        let hlc = {
            let mut mine = lock(&self.hlc);
            if stored.parts() > mine.parts() {
                *mine = stored;
            }
            *mine
        };
        let state = State {
            seq: small(row.get(0)),
            hlc,
            rejections: small(row.get(2)),
            audit: (small(row.get(3)), hash_of(row.get(4))?),
            gen: row.get(5),
            org_version: row.get(6),
            admin: row.get(7),
        };
        Ok((tx, state))
    }

    /// Writes what `st` staged, advances the state row, and commits; then
    /// updates this instance's caches.
    pub(super) async fn commit(
        &self,
        tx: deadpool_postgres::Transaction<'_>,
        mut st: PgStaging,
        tree: Option<(Vec<OrgUnit>, Arc<OrgTree>)>,
    ) -> Result<(), StoreError> {
        let gen = st.state.gen + 1;
        // This instance's copy of the aggregates is caught up to the state
        // row (whose lock this write holds) but left untouched until the
        // commit: other requests read it, and this write may still fail or
        // be cancelled. The entries to write come from a scratch copy of
        // just what the changes touch. (`begin` caught the copy up under
        // the lock this write still holds: nothing newer can exist.)
        let dirty = {
            let cache = self.agg.read().unwrap_or_else(|e| e.into_inner());
            let mut scratch = cache.agg.scratch_for(&st.changes);
            drop(cache);
            for (before, after) in &st.changes {
                scratch.apply(before.as_ref(), after);
            }
            scratch.take_dirty()
        };
        self.write_staged(&tx, &mut st, gen, &dirty, tree.as_ref())
            .await?;
        tx.commit().await.map_err(pg_err)?;
        {
            let mut mine = lock(&self.hlc);
            if st.state.hlc.parts() > mine.parts() {
                *mine = st.state.hlc;
            }
        }
        // Committed: install what it wrote, as a catch-up would read it back
        // (unless one already did, or the copy is elsewhere: then the next
        // catch-up reads it).
        {
            let _one = self.refresh.lock().await;
            let mut cache = self.agg.write().unwrap_or_else(|e| e.into_inner());
            if cache.gen == Some(st.state.gen) {
                for (k, v) in dirty {
                    let v = codec::agg_value(&v).is_some().then_some(v);
                    cache.agg.replace(k, v);
                }
                cache.agg.note_max_seq(st.state.seq);
                cache.gen = Some(gen);
            }
        }
        if let Some((_, tree)) = tree {
            *self.org.write().unwrap_or_else(|e| e.into_inner()) = (st.state.org_version, tree);
        }
        Ok(())
    }

    pub(super) async fn write_staged(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        st: &mut PgStaging,
        gen: i64,
        dirty: &[(pufa_core::totals::AggKey, pufa_core::totals::AggValue)],
        tree: Option<&(Vec<OrgUnit>, Arc<OrgTree>)>,
    ) -> Result<(), StoreError> {
        let exec = |sql: &'static str| async move { tx.prepare_cached(sql).await.map_err(pg_err) };
        for p in &st.periods {
            tx.execute(
                "INSERT INTO pufa_periods (org_unit, period, approved, body) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (org_unit, period) DO UPDATE SET approved = EXCLUDED.approved, body = EXCLUDED.body",
                &[
                    &p.org_unit,
                    &p.period.to_string(),
                    &p.approval().is_some(),
                    &encode(p),
                ],
            )
            .await
            .map_err(pg_err)?;
        }
        for d in &st.dismissals {
            tx.execute(
                "INSERT INTO pufa_dismissals (a, b, body) VALUES ($1, $2, $3)
                 ON CONFLICT (a, b) DO NOTHING",
                &[&d.a, &d.b, &encode(d)],
            )
            .await
            .map_err(pg_err)?;
        }
        if !st.put_records.is_empty() {
            let ids: Vec<Uuid> = last_of(st.put_records.iter().map(|id| (*id, ())).collect())
                .into_iter()
                .map(|(id, ())| id)
                .collect();
            let mut seqs = Vec::with_capacity(ids.len());
            let mut entries = Vec::with_capacity(ids.len());
            let mut units = Vec::with_capacity(ids.len());
            let mut bodies = Vec::with_capacity(ids.len());
            for id in &ids {
                let Some(Some((r, entry))) = st.records.get(id) else {
                    return Err(PgStaging::not_loaded("record", *id));
                };
                seqs.push(big(r.seq));
                entries.push(big(*entry));
                units.push(r.org_unit().map(str::to_string));
                bodies.push(codec::encode_record(r));
            }
            let s = exec(
                "INSERT INTO pufa_records (id, seq, last_entry, org_unit, body)
                 SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::int8[], $4::text[], $5::bytea[])
                 ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq, last_entry = EXCLUDED.last_entry,
                     org_unit = EXCLUDED.org_unit, body = EXCLUDED.body",
            )
            .await?;
            tx.execute(&s, &[&ids, &seqs, &entries, &units, &bodies])
                .await
                .map_err(pg_err)?;
        }
        if !st.new_applied.is_empty() {
            let mut devices = Vec::with_capacity(st.new_applied.len());
            let mut mutations = Vec::with_capacity(st.new_applied.len());
            let mut bodies = Vec::with_capacity(st.new_applied.len());
            for (d, m, a) in &st.new_applied {
                devices.push(*d);
                mutations.push(*m);
                bodies.push(encode(a));
            }
            // No ON CONFLICT: a second application must fail the write.
            let s = exec(
                "INSERT INTO pufa_applied (device_id, mutation_id, body)
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::bytea[])",
            )
            .await?;
            tx.execute(&s, &[&devices, &mutations, &bodies])
                .await
                .map_err(pg_err)?;
        }
        if !st.conflicts.is_empty() {
            let conflicts = last_of(std::mem::take(&mut st.conflicts));
            let ids: Vec<Uuid> = conflicts.iter().map(|(id, _)| *id).collect();
            let records: Vec<Uuid> = conflicts.iter().map(|(_, c)| c.record_id).collect();
            let seqs: Vec<i64> = conflicts.iter().map(|(_, c)| big(c.seq)).collect();
            let open: Vec<bool> = conflicts.iter().map(|(_, c)| c.open).collect();
            let bodies: Vec<Vec<u8>> = conflicts.iter().map(|(_, c)| encode(c)).collect();
            let s = exec(
                "INSERT INTO pufa_conflicts (id, record_id, seq, open, body)
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::int8[], $4::bool[], $5::bytea[])
                 ON CONFLICT (id) DO UPDATE SET open = EXCLUDED.open, body = EXCLUDED.body",
            )
            .await?;
            tx.execute(&s, &[&ids, &records, &seqs, &open, &bodies])
                .await
                .map_err(pg_err)?;
        }
        if !st.rejections.is_empty() {
            let ns: Vec<i64> = st.rejections.iter().map(|(n, ..)| big(*n)).collect();
            let devices: Vec<Uuid> = st.rejections.iter().map(|(.., r)| r.device_id).collect();
            let units: Vec<&str> = st.rejections.iter().map(|(_, u, _)| u.as_str()).collect();
            let bodies: Vec<Vec<u8>> = st.rejections.iter().map(|(.., r)| encode(r)).collect();
            let s = exec(
                "INSERT INTO pufa_rejections (n, device_id, org_unit, body)
                 SELECT * FROM UNNEST($1::int8[], $2::uuid[], $3::text[], $4::bytea[])",
            )
            .await?;
            tx.execute(&s, &[&ns, &devices, &units, &bodies])
                .await
                .map_err(pg_err)?;
            // Keep each device's newest REJECTIONS_PER_DEVICE_KEPT and each
            // unit's newest REJECTIONS_PER_UNIT_KEPT, so that a flood evicts
            // only its own device's and street's, and then the store's
            // newest REJECTIONS_KEPT, so that many devices cannot fill the
            // disk either.
            let by: [(&str, &(dyn ToSql + Sync), u64); 2] = [
                ("device_id", &devices, st.rejections_kept.per_device),
                ("org_unit", &units, st.rejections_kept.per_unit),
            ];
            for (column, keys, keep) in by {
                let sql = format!(
                    "DELETE FROM pufa_rejections WHERE n IN (
                         SELECT n FROM (
                             SELECT n, row_number() OVER (PARTITION BY {column} ORDER BY n DESC) AS k
                             FROM pufa_rejections WHERE {column} = ANY($1)) newest
                         WHERE k > $2)"
                );
                let s = tx.prepare_cached(&sql).await.map_err(pg_err)?;
                tx.execute(&s, &[keys, &big(keep)]).await.map_err(pg_err)?;
            }
            let s = exec(
                "DELETE FROM pufa_rejections WHERE n <= (
                     SELECT n FROM pufa_rejections ORDER BY n DESC OFFSET $1 LIMIT 1)",
            )
            .await?;
            tx.execute(&s, &[&big(st.rejections_kept.total)])
                .await
                .map_err(pg_err)?;
        }
        if !st.audit.is_empty() {
            let ns: Vec<i64> = st.audit.iter().map(|(n, _)| big(*n)).collect();
            let values: Vec<&[u8]> = st.audit.iter().map(|(_, v)| v.as_slice()).collect();
            let s = exec(
                "INSERT INTO pufa_audit (n, value) SELECT * FROM UNNEST($1::int8[], $2::bytea[])",
            )
            .await?;
            tx.execute(&s, &[&ns, &values]).await.map_err(pg_err)?;
        }
        for id in last_of(st.put_devices.iter().map(|id| (*id, ())).collect()) {
            let Some(Some(d)) = st.devices.get(&id.0) else {
                continue;
            };
            let s = exec("UPDATE pufa_devices SET body = $2 WHERE id = $1").await?;
            tx.execute(&s, &[&d.id, &encode(d)]).await.map_err(pg_err)?;
        }
        if !dirty.is_empty() {
            let keys: Vec<Vec<u8>> = dirty.iter().map(|(k, _)| codec::agg_key(k)).collect();
            let values: Vec<Option<Vec<u8>>> =
                dirty.iter().map(|(_, v)| codec::agg_value(v)).collect();
            let s = exec(
                "INSERT INTO pufa_aggregates (key, gen, value)
                 SELECT k, $2, v FROM UNNEST($1::bytea[], $3::bytea[]) AS u(k, v)
                 ON CONFLICT (key) DO UPDATE SET gen = EXCLUDED.gen, value = EXCLUDED.value",
            )
            .await?;
            tx.execute(&s, &[&keys, &gen, &values])
                .await
                .map_err(pg_err)?;
        }
        if let Some((units, _)) = tree {
            let codes: Vec<&str> = units.iter().map(|u| u.code.as_str()).collect();
            let bodies: Vec<Vec<u8>> = units.iter().map(encode).collect();
            let s = exec(
                "INSERT INTO pufa_org_units (code, body) SELECT * FROM UNNEST($1::text[], $2::bytea[])
                 ON CONFLICT (code) DO UPDATE SET body = EXCLUDED.body",
            )
            .await?;
            tx.execute(&s, &[&codes, &bodies]).await.map_err(pg_err)?;
            st.state.org_version += 1;
        }
        let s = exec(
            "UPDATE pufa_state SET seq = $1, hlc = $2, rejections = $3, audit_n = $4,
                 audit_hash = $5, gen = $6, org_version = $7, admin = $8
              WHERE id = 1",
        )
        .await?;
        tx.execute(
            &s,
            &[
                &big(st.state.seq),
                &encode(&st.state.hlc.parts()),
                &big(st.state.rejections),
                &big(st.state.audit.0),
                &st.state.audit.1.as_slice(),
                &gen,
                &st.state.org_version,
                &st.state.admin,
            ],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    /// Inserts or replaces a device and its live token (inside a write).
    pub(super) async fn upsert_device(
        tx: &deadpool_postgres::Transaction<'_>,
        device: &Device,
    ) -> Result<(), StoreError> {
        let token: Option<&[u8]> = (!device.revoked).then_some(device.token_hash.as_slice());
        tx.execute(
            "INSERT INTO pufa_devices (id, token_hash, body) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET token_hash = EXCLUDED.token_hash, body = EXCLUDED.body",
            &[&device.id, &token, &encode(device)],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    /// Stores a device and its token (`bootstrap`: as the bootstrap admin,
    /// unless there is one already). Returns whether it was stored.
    pub(super) async fn device_write(
        &self,
        device: Device,
        bootstrap: bool,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let (tx, state) = self.begin(&mut client).await?;
        let mut st = PgStaging::new(state, self.rejections_kept);
        if bootstrap {
            if st.state.admin.is_some() {
                tx.rollback().await.map_err(pg_err)?;
                return Ok(false);
            }
            st.state.admin = Some(device.id);
        }
        Inner::upsert_device(&tx, &device).await?;
        self.commit(tx, st, None).await?;
        Ok(true)
    }
}
