//! Which rejections the sled store keeps, and which a new one evicts.

use std::collections::{BTreeMap, HashMap, VecDeque};

use uuid::Uuid;

use super::devices::Devices;
use crate::config::RejectionsKept;
use crate::store::codec::{self, decode, StoredRejection};
use crate::store::StoreError;

/// Which rejections are on disk: by number, by device, and by the org
/// unit of the device's token. A new one evicts first its device's oldest
/// past [`RejectionsKept::per_device`], then its unit's oldest past
/// [`RejectionsKept::per_unit`], and only then the store's oldest past
/// [`RejectionsKept::total`]: one device's (or one street's) flood evicts
/// only its own.
#[derive(Debug, Default)]
pub(super) struct RejectionIndex {
    all: BTreeMap<u64, (Uuid, String)>,
    by_device: HashMap<Uuid, VecDeque<u64>>,
    by_unit: HashMap<String, VecDeque<u64>>,
}

impl RejectionIndex {
    pub(super) fn load(db: &sled::Db, devices: &Devices) -> Result<RejectionIndex, StoreError> {
        let mut index = RejectionIndex::default();
        for kv in db.scan_prefix(codec::REJECTION) {
            let (k, v) = kv?;
            let n = codec::u64_of(&k[codec::REJECTION.len()..])?;
            let r: StoredRejection = decode(&v)?;
            let unit = devices
                .by_id
                .get(&r.device_id)
                .and_then(|d| d.org_unit.clone())
                .unwrap_or_default();
            index.insert(n, r.device_id, unit);
        }
        Ok(index)
    }

    pub(super) fn insert(&mut self, n: u64, device: Uuid, unit: String) {
        self.by_device.entry(device).or_default().push_back(n);
        self.by_unit.entry(unit.clone()).or_default().push_back(n);
        self.all.insert(n, (device, unit));
    }

    /// Forgets `n` everywhere.
    pub(super) fn forget(&mut self, n: u64) {
        let Some((device, unit)) = self.all.remove(&n) else {
            return;
        };
        // Evictions take the oldest: usually the front, found at once.
        let drop_n = |q: &mut VecDeque<u64>| {
            if q.front() == Some(&n) {
                q.pop_front();
            } else {
                q.retain(|m| *m != n);
            }
        };
        if let Some(q) = self.by_device.get_mut(&device) {
            drop_n(q);
            if q.is_empty() {
                self.by_device.remove(&device);
            }
        }
        if let Some(q) = self.by_unit.get_mut(&unit) {
            drop_n(q);
            if q.is_empty() {
                self.by_unit.remove(&unit);
            }
        }
    }

    /// Notes rejection `n` of `device` (whose token names `unit`);
    /// returns the numbers to remove from the store.
    pub(super) fn add(
        &mut self,
        n: u64,
        device: Uuid,
        unit: &str,
        kept: RejectionsKept,
    ) -> Vec<u64> {
        let mut gone = Vec::new();
        self.insert(n, device, unit.to_string());
        let oldest = |q: Option<&VecDeque<u64>>, max: u64| {
            q.filter(|q| q.len() as u64 > max)
                .and_then(|q| q.front().copied())
        };
        while let Some(old) = oldest(self.by_device.get(&device), kept.per_device) {
            self.forget(old);
            gone.push(old);
        }
        while let Some(old) = oldest(self.by_unit.get(unit), kept.per_unit) {
            self.forget(old);
            gone.push(old);
        }
        while self.all.len() as u64 > kept.total {
            let Some(old) = self.all.keys().next().copied() else {
                break;
            };
            self.forget(old);
            gone.push(old);
        }
        gone
    }
}
