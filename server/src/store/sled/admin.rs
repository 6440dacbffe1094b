//! Writes by admins and coordinators on the sled store: the bootstrap admin,
//! devices and their tokens, org units (moving the records of re-parented
//! units), conflict resolutions. Each runs under the writer lock.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use pufa_core::org::OrgTreeError;
use pufa_core::wire::OrgUnit;
use uuid::Uuid;

use super::{Inner, SledStore};
use crate::store::apply;
use crate::store::codec::{self, decode, encode, StoredConflict};
use crate::store::{AdminStore, Device, ResolveOutcome, StoreError};

impl Inner {
    pub(super) fn upsert_org_units(
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
        if let Some(e) = pufa_core::period::moves_locked(&tx.locks, &old, &next, &moved) {
            return Ok((Err(e), 0));
        }
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

    pub(super) fn resolve(
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

    pub(super) fn put_device(&self, device: Device) -> Result<((), u64), StoreError> {
        let mut tx = self.begin();
        tx.stage_device(&device)?;
        Ok(((), tx.commit(None)?))
    }
}

#[async_trait]
impl AdminStore for SledStore {
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
}
