//! The device's durable local store (sled): server-confirmed records, the
//! outbox of local mutations in order, conflict notices, the org tree cache
//! and sync metadata. One tree, prefixed keys, `Batch` for every multi-key
//! write so that each is atomic across a crash.
//!
//! | key | value |
//! | --- | --- |
//! | `m/<name>` | metadata: device, cursor, store id, HLC, clock offset, … |
//! | `c/<record:16>` | [`Confirmed`]: the record as last pulled |
//! | `o/<n:8>` | [`OutboxEntry`]: a local mutation, in order |
//! | `q/<record:16><n:8>` | (empty): outbox entries of a record |
//! | `x/<record:16><mutation:16><field>` | [`ConflictNotice`] |
//! | `l/<record:16>` | (empty): confirmed records a replaced server store lacks |
//! | `u/<code>` | cached org unit |
//!
//! Values are JSON: the store is small, and JSON keeps it inspectable.

use std::path::Path;
use std::sync::Arc;

use pufa_durable::SledFiles;

use pufa_core::hlc::HlcClock;
use pufa_core::wire::{ErrorObject, Mutation, OrgUnit, RecordView};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::ConflictNotice;

/// A record as the server last sent it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Confirmed {
    pub view: RecordView,
    /// The repair epoch in which it was last pulled (see [`Meta::epoch`]).
    pub epoch: u64,
}

/// Where an outbox entry stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EntryStatus {
    /// Not yet acknowledged by the server.
    Pending,
    /// Applied (or duplicate) at `seq`; kept in the local view until a pull
    /// brings the record at `seq` or later.
    Acked { seq: u64 },
    /// Refused by the server; kept until resubmitted or discarded.
    Rejected { error: ErrorObject },
}

/// One local mutation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub n: u64,
    pub mutation: Mutation,
    pub status: EntryStatus,
    pub created_ms: u64,
}

/// Sync metadata, read and written as a whole.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub device_id: Option<Uuid>,
    /// Where the next pull continues.
    pub cursor: u64,
    /// The server store last synced with.
    pub store_id: Option<Uuid>,
    pub hlc: (u64, u32),
    /// Server clock minus device clock, learned from answers (ms).
    pub clock_offset_ms: i64,
    /// Next outbox number.
    pub outbox_next: u64,
    /// Bumped when a repair starts; records pulled during it carry it, and
    /// records from older epochs that the repair did not list are dropped.
    pub epoch: u64,
    pub repair: Repair,
    pub last_sync_ms: Option<u64>,
}

/// A repair in progress (persisted, so an interrupted one resumes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Repair {
    #[default]
    None,
    /// The checksum disagreed: re-pull from 0 and drop what is not listed.
    Checksum,
    /// The server store was replaced: re-pull from 0 and keep what is not
    /// listed, reporting it as lost on the server.
    StoreReplaced,
}

impl Meta {
    pub fn hlc_clock(&self) -> HlcClock {
        HlcClock::from_parts(self.hlc.0, self.hlc.1)
    }
}

const META: &[u8] = b"m/meta";
const CONFIRMED: &[u8] = b"c/";
const OUTBOX: &[u8] = b"o/";
const BY_RECORD: &[u8] = b"q/";
const NOTICE: &[u8] = b"x/";
const LOST: &[u8] = b"l/";
const UNIT: &[u8] = b"u/";

fn key(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut k = prefix.to_vec();
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("plain data serializes")
}

fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| Error::Store(format!("unreadable local data: {e}")))
}

/// The local store. Cheap to clone (sled handles are shared).
#[derive(Clone)]
pub struct LocalStore {
    db: sled::Db,
    /// sled's flush survives a killed app but not a dead battery: these
    /// fsyncs, after it, make a durable commit survive a power cut too.
    files: Arc<SledFiles>,
}

/// Staged changes, applied atomically by [`LocalStore::commit`].
#[derive(Default)]
pub struct Staged {
    batch: sled::Batch,
}

impl Staged {
    pub fn meta(&mut self, m: &Meta) {
        self.batch.insert(META, enc(m));
    }

    pub fn put_confirmed(&mut self, c: &Confirmed) {
        self.batch
            .insert(key(CONFIRMED, &[c.view.id.as_bytes()]), enc(c));
    }

    pub fn remove_confirmed(&mut self, id: Uuid) {
        self.batch.remove(key(CONFIRMED, &[id.as_bytes()]));
        self.batch.remove(key(LOST, &[id.as_bytes()]));
    }

    pub fn put_entry(&mut self, e: &OutboxEntry) {
        self.batch
            .insert(key(OUTBOX, &[&e.n.to_be_bytes()]), enc(e));
        self.batch.insert(
            key(
                BY_RECORD,
                &[e.mutation.record_id.as_bytes(), &e.n.to_be_bytes()],
            ),
            &[],
        );
    }

    pub fn remove_entry(&mut self, e: &OutboxEntry) {
        self.batch.remove(key(OUTBOX, &[&e.n.to_be_bytes()]));
        self.batch.remove(key(
            BY_RECORD,
            &[e.mutation.record_id.as_bytes(), &e.n.to_be_bytes()],
        ));
    }

    pub fn notice(&mut self, n: &ConflictNotice) {
        self.batch.insert(
            key(
                NOTICE,
                &[
                    n.record_id.as_bytes(),
                    n.mutation.as_bytes(),
                    n.field.as_bytes(),
                ],
            ),
            enc(n),
        );
    }

    pub fn remove_notice(&mut self, n: &ConflictNotice) {
        self.batch.remove(key(
            NOTICE,
            &[
                n.record_id.as_bytes(),
                n.mutation.as_bytes(),
                n.field.as_bytes(),
            ],
        ));
    }

    pub fn lost(&mut self, id: Uuid) {
        self.batch.insert(key(LOST, &[id.as_bytes()]), &[]);
    }

    pub fn unit(&mut self, u: &OrgUnit) {
        self.batch.insert(key(UNIT, &[u.code.as_bytes()]), enc(u));
    }
}

impl LocalStore {
    /// # Errors
    /// The store cannot be opened (e.g. another process holds it).
    pub fn open(path: &Path) -> Result<LocalStore> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(16 * 1024 * 1024)
            .open()?;
        let files = Arc::new(SledFiles::open(path).map_err(sync_failed)?);
        Ok(LocalStore { db, files })
    }

    pub fn meta(&self) -> Result<Meta> {
        self.db
            .get(META)?
            .map(|v| dec(&v))
            .transpose()
            .map(Option::unwrap_or_default)
    }

    /// Applies staged changes atomically; with `durable`, returns only once
    /// they are on disk (fsynced: they survive a power cut).
    pub fn commit(&self, staged: Staged, durable: bool) -> Result<()> {
        self.db.apply_batch(staged.batch)?;
        if durable {
            self.flush()?;
        }
        Ok(())
    }

    /// Makes every commit so far durable, power cuts included.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        self.files.sync().map_err(sync_failed)
    }

    pub fn confirmed(&self, id: Uuid) -> Result<Option<Confirmed>> {
        self.db
            .get(key(CONFIRMED, &[id.as_bytes()]))?
            .map(|v| dec(&v))
            .transpose()
    }

    /// Every confirmed record, in id order.
    pub fn all_confirmed(&self) -> impl Iterator<Item = Result<Confirmed>> + '_ {
        self.db
            .scan_prefix(CONFIRMED)
            .map(|kv| kv.map_err(Error::from).and_then(|(_, v)| dec(&v)))
    }

    /// Outbox entries of one record, in order.
    pub fn entries_for(&self, id: Uuid) -> Result<Vec<OutboxEntry>> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(key(BY_RECORD, &[id.as_bytes()])) {
            let (k, _) = kv?;
            let n = &k[k.len() - 8..];
            if let Some(v) = self.db.get(key(OUTBOX, &[n]))? {
                out.push(dec(&v)?);
            }
        }
        Ok(out)
    }

    /// All outbox entries, in order.
    pub fn entries(&self) -> impl Iterator<Item = Result<OutboxEntry>> + '_ {
        self.db
            .scan_prefix(OUTBOX)
            .map(|kv| kv.map_err(Error::from).and_then(|(_, v)| dec(&v)))
    }

    /// Ids of records with outbox entries (each once, in id order).
    pub fn ids_with_entries(&self) -> Result<Vec<Uuid>> {
        let mut out: Vec<Uuid> = Vec::new();
        for kv in self.db.scan_prefix(BY_RECORD) {
            let (k, _) = kv?;
            let id = Uuid::from_slice(&k[BY_RECORD.len()..BY_RECORD.len() + 16])
                .map_err(|e| Error::Store(e.to_string()))?;
            if out.last() != Some(&id) {
                out.push(id);
            }
        }
        Ok(out)
    }

    pub fn has_entries(&self) -> Result<bool> {
        Ok(self.db.scan_prefix(OUTBOX).next().transpose()?.is_some())
    }

    pub fn has_notices(&self) -> Result<bool> {
        Ok(self.db.scan_prefix(NOTICE).next().transpose()?.is_some())
    }

    pub fn notices_for(&self, id: Uuid) -> Result<Vec<ConflictNotice>> {
        self.db
            .scan_prefix(key(NOTICE, &[id.as_bytes()]))
            .map(|kv| dec(&kv?.1))
            .collect()
    }

    pub fn lost(&self) -> Result<Vec<Uuid>> {
        self.db
            .scan_prefix(LOST)
            .map(|kv| {
                Uuid::from_slice(&kv?.0[LOST.len()..]).map_err(|e| Error::Store(e.to_string()))
            })
            .collect()
    }

    pub fn units(&self) -> Result<Vec<OrgUnit>> {
        self.db.scan_prefix(UNIT).map(|kv| dec(&kv?.1)).collect()
    }
}

fn sync_failed(e: std::io::Error) -> Error {
    Error::Store(format!("syncing the local store to disk: {e}"))
}
