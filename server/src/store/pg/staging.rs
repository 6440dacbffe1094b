//! What one write loads and stages, for the shared write logic of
//! [`apply`](crate::store::apply): the rows it touches, loaded with set queries before the logic
//! runs, and what it writes, kept until the write sends it.

use std::collections::{HashMap, HashSet};

use pufa_core::hlc::HlcClock;
use pufa_core::merge::RecordState;
use pufa_core::schema::Rejection;
use pufa_core::wire::Mutation;
use uuid::Uuid;

use super::{pg_err, Inner, State};
use crate::config::RejectionsKept;
use crate::store::apply::Staging;
use crate::store::codec::{self, decode, Applied, AuditBody, StoredConflict, StoredRejection};
use crate::store::{Device, StoreError, StoredDismissal, StoredPeriod};
use pufa_core::period::Locks;

/// What one write has loaded and staged, for [`apply`]'s logic.
pub(super) struct PgStaging {
    pub(super) state: State,
    pub(super) rejections_kept: RejectionsKept,
    /// Loaded before the logic runs (`None`: no such record), then kept at
    /// their staged state, with their newest audit entry.
    pub(super) records: HashMap<Uuid, Option<(RecordState, u64)>>,
    pub(super) applied: HashMap<(Uuid, Uuid), Option<Applied>>,
    pub(super) devices: HashMap<Uuid, Option<Device>>,
    // Staged writes.
    pub(super) put_records: Vec<Uuid>,
    pub(super) new_applied: Vec<(Uuid, Uuid, Applied)>,
    pub(super) conflicts: Vec<(Uuid, StoredConflict)>,
    /// Number, the pushing device's org unit, what is kept.
    pub(super) rejections: Vec<(u64, String, StoredRejection)>,
    pub(super) audit: Vec<(u64, Vec<u8>)>,
    pub(super) put_devices: Vec<Uuid>,
    pub(super) changes: Vec<(Option<RecordState>, RecordState)>,
    /// The approved periods, loaded by [`PgStaging::load_locks`] (empty
    /// for writes that do not consult them).
    pub(super) locks: Locks,
    pub(super) periods: Vec<StoredPeriod>,
    pub(super) dismissals: Vec<StoredDismissal>,
}

impl PgStaging {
    pub(super) fn new(state: State, rejections_kept: RejectionsKept) -> PgStaging {
        PgStaging {
            state,
            rejections_kept,
            records: HashMap::new(),
            applied: HashMap::new(),
            devices: HashMap::new(),
            put_records: Vec::new(),
            new_applied: Vec::new(),
            conflicts: Vec::new(),
            rejections: Vec::new(),
            audit: Vec::new(),
            put_devices: Vec::new(),
            changes: Vec::new(),
            locks: Locks::default(),
            periods: Vec::new(),
            dismissals: Vec::new(),
        }
    }

    /// Loads the approved periods (under the state row's lock, so no
    /// approval can land while this write runs).
    pub(super) async fn load_locks(
        &mut self,
        tx: &deadpool_postgres::Transaction<'_>,
    ) -> Result<(), StoreError> {
        self.locks = super::periods::load_locks(&**tx).await?;
        Ok(())
    }

    /// Loads the records `ids` (those not loaded yet).
    pub(super) async fn load_records(
        &mut self,
        tx: &deadpool_postgres::Transaction<'_>,
        ids: Vec<Uuid>,
    ) -> Result<(), StoreError> {
        let ids: Vec<Uuid> = ids
            .into_iter()
            .filter(|id| !self.records.contains_key(id))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let st = tx
            .prepare_cached("SELECT id, body, last_entry FROM pufa_records WHERE id = ANY($1)")
            .await
            .map_err(pg_err)?;
        for row in tx.query(&st, &[&ids]).await.map_err(pg_err)? {
            self.records
                .insert(row.get(0), Some(Inner::record_of(&row, 1, 2)?));
        }
        for id in ids {
            self.records.entry(id).or_insert(None);
        }
        Ok(())
    }

    pub(super) async fn load_devices(
        &mut self,
        tx: &deadpool_postgres::Transaction<'_>,
        ids: Vec<Uuid>,
    ) -> Result<(), StoreError> {
        let st = tx
            .prepare_cached("SELECT id, body FROM pufa_devices WHERE id = ANY($1)")
            .await
            .map_err(pg_err)?;
        for row in tx.query(&st, &[&ids]).await.map_err(pg_err)? {
            self.devices.insert(row.get(0), Some(decode(row.get(1))?));
        }
        for id in ids {
            self.devices.entry(id).or_insert(None);
        }
        Ok(())
    }

    /// Loads the idempotency entries of `keys` (device, mutation).
    pub(super) async fn load_applied(
        &mut self,
        tx: &deadpool_postgres::Transaction<'_>,
        keys: Vec<(Uuid, Uuid)>,
    ) -> Result<(), StoreError> {
        // A join on the pairs, not `device_id = $1 AND mutation_id = ANY($2)`:
        // a cached generic plan for that walked all of a device's entries
        // (the key's first column) and slowed pushes as they grew.
        let st = tx
            .prepare_cached(
                "SELECT a.device_id, a.mutation_id, a.body
                   FROM UNNEST($1::uuid[], $2::uuid[]) AS k(device_id, mutation_id)
                   JOIN pufa_applied a
                     ON a.device_id = k.device_id AND a.mutation_id = k.mutation_id",
            )
            .await
            .map_err(pg_err)?;
        let (devices, mutations): (Vec<Uuid>, Vec<Uuid>) = keys.iter().copied().unzip();
        for row in tx
            .query(&st, &[&devices, &mutations])
            .await
            .map_err(pg_err)?
        {
            self.applied
                .insert((row.get(0), row.get(1)), Some(decode(row.get(2))?));
        }
        for k in keys {
            self.applied.entry(k).or_insert(None);
        }
        Ok(())
    }

    pub(super) fn not_loaded(what: &str, id: Uuid) -> StoreError {
        StoreError::Other(format!(
            "internal: {what} {id} was not loaded for this write"
        ))
    }
}

impl Staging for PgStaging {
    fn locks(&self) -> &Locks {
        &self.locks
    }

    fn put_period(&mut self, p: &StoredPeriod) -> Result<(), StoreError> {
        match p.approval() {
            Some(a) => self.locks.set(a),
            None => self.locks.clear(&p.org_unit, p.period),
        }
        self.periods.push(p.clone());
        Ok(())
    }

    fn put_dismissal(&mut self, d: &StoredDismissal) -> Result<(), StoreError> {
        self.dismissals.push(d.clone());
        Ok(())
    }

    fn record(&mut self, id: Uuid) -> Result<Option<RecordState>, StoreError> {
        match self.records.get(&id) {
            Some(r) => Ok(r.as_ref().map(|(r, _)| r.clone())),
            None => Err(PgStaging::not_loaded("record", id)),
        }
    }

    fn applied(&mut self, device: Uuid, mutation: Uuid) -> Result<Option<Applied>, StoreError> {
        match self.applied.get(&(device, mutation)) {
            Some(a) => Ok(a.clone()),
            None => Err(PgStaging::not_loaded("mutation", mutation)),
        }
    }

    fn device(&mut self, id: Uuid) -> Result<Option<Device>, StoreError> {
        match self.devices.get(&id) {
            Some(d) => Ok(d.clone()),
            None => Err(PgStaging::not_loaded("device", id)),
        }
    }

    fn seq(&mut self) -> &mut u64 {
        &mut self.state.seq
    }

    fn hlc(&mut self) -> &mut HlcClock {
        &mut self.state.hlc
    }

    fn reject(
        &mut self,
        device: &Device,
        now_ms: u64,
        m: &Mutation,
        raw: Option<&str>,
        r: &Rejection,
    ) -> Result<(), StoreError> {
        self.state.rejections += 1;
        self.rejections.push((
            self.state.rejections,
            device.org_unit.clone().unwrap_or_default(),
            StoredRejection::new(device.id, now_ms, m, raw, r),
        ));
        Ok(())
    }

    fn log(&mut self, mut body: AuditBody, current_seq: Option<u64>) -> Result<u64, StoreError> {
        body.record_prev = match current_seq {
            Some(_) => match self.records.get(&body.record_id) {
                Some(Some((_, n))) => Some(*n),
                _ => return Err(PgStaging::not_loaded("record", body.record_id)),
            },
            None => None,
        };
        let (n, prev) = self.state.audit;
        body.n = n + 1;
        let (value, hash) = codec::encode_audit(&prev, &body);
        self.audit.push((body.n, value));
        self.state.audit = (body.n, hash);
        Ok(body.n)
    }

    fn put_record(
        &mut self,
        before: Option<RecordState>,
        after: RecordState,
        entry: u64,
    ) -> Result<(), StoreError> {
        self.put_records.push(after.id);
        self.records.insert(after.id, Some((after.clone(), entry)));
        self.changes.push((before, after));
        Ok(())
    }

    fn note_entry(&mut self, record: &RecordState, entry: u64) -> Result<(), StoreError> {
        self.put_records.push(record.id);
        self.records
            .insert(record.id, Some((record.clone(), entry)));
        Ok(())
    }

    fn put_applied(
        &mut self,
        device: Uuid,
        mutation: Uuid,
        applied: Applied,
    ) -> Result<(), StoreError> {
        self.applied
            .insert((device, mutation), Some(applied.clone()));
        self.new_applied.push((device, mutation, applied));
        Ok(())
    }

    fn put_conflict(&mut self, id: Uuid, stored: &StoredConflict) -> Result<(), StoreError> {
        self.conflicts.push((id, stored.clone()));
        Ok(())
    }

    fn put_device(&mut self, device: &Device) -> Result<(), StoreError> {
        self.devices.insert(device.id, Some(device.clone()));
        self.put_devices.push(device.id);
        Ok(())
    }
}
