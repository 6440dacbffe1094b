//! The sled store's devices in memory (what `d/` and `t/` hold), so that the
//! token check of every request is no sled read.

use std::collections::HashMap;

use uuid::Uuid;

use crate::store::codec::{self, decode};
use crate::store::{Device, StoreError, TokenHash};

/// The in-memory copy of `d/` and `t/` (see [`Inner::devices`]).
#[derive(Default)]
pub(super) struct Devices {
    pub(super) by_id: HashMap<Uuid, Device>,
    pub(super) by_token: HashMap<TokenHash, Uuid>,
}

impl Devices {
    pub(super) fn load(db: &sled::Db) -> Result<Devices, StoreError> {
        let mut d = Devices::default();
        for kv in db.scan_prefix(codec::DEVICE) {
            let (_, v) = kv?;
            let device: Device = decode(&v)?;
            d.by_id.insert(device.id, device);
        }
        for kv in db.scan_prefix(codec::TOKEN) {
            let (k, v) = kv?;
            let hash: TokenHash = k[codec::TOKEN.len()..]
                .try_into()
                .map_err(|_| StoreError::Corrupt("token key of the wrong length".into()))?;
            d.by_token.insert(hash, codec::uuid_of(&v)?);
        }
        Ok(d)
    }

    /// Takes in a device as its write left it on disk.
    pub(super) fn put(&mut self, device: Device) {
        if let Some(old) = self.by_id.get(&device.id) {
            if old.token_hash != device.token_hash || device.revoked {
                self.by_token.remove(&old.token_hash);
            }
        }
        if !device.revoked {
            self.by_token.insert(device.token_hash, device.id);
        }
        self.by_id.insert(device.id, device);
    }
}
