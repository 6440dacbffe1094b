//! Opening the sled store: the data dir's leftovers set aside, sled opened
//! (waiting out a lock still held), older formats upgraded, and the
//! counters, org tree, aggregates and devices loaded into memory.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};

use pufa_core::hlc::HlcClock;
use pufa_core::org::OrgTree;
use pufa_core::totals::Aggregates;
use pufa_core::wire::OrgUnit;
use tokio::sync::{watch, Notify};
use uuid::Uuid;

use pufa_durable::SledFiles;

use super::devices::Devices;
use super::durability::{flusher, Durability, Flushed};
use super::rejections::RejectionIndex;
use super::tx::Writer;
use super::upgrade::{upgrade_from_format_2, upgrade_from_format_3};
use super::{Inner, SledConfig, SledStore, STORE_LOCK_WAIT_MS};
use crate::store::codec::{self, decode};
use crate::store::commit::PushQueue;
use crate::store::StoreError;

impl SledStore {
    /// Opens (or creates) the store in `config.path`. Must run
    /// inside a tokio runtime: it starts the flusher task.
    ///
    /// # Errors
    /// sled's error (e.g. corruption), or data written by another format.
    pub(crate) fn open(config: &SledConfig) -> Result<SledStore, StoreError> {
        set_aside_incomplete_snapshots(&config.path).map_err(|e| {
            StoreError::Unavailable(format!("setting aside an incomplete snapshot: {e}"))
        })?;
        let db = open_db(
            &sled::Config::new()
                .path(&config.path)
                .cache_capacity(config.cache_bytes),
        )?;
        let files = sled_files(config)?;
        let store_id = match db.get(codec::META_STORE_ID)? {
            Some(v) => codec::uuid_of(&v)?,
            None => {
                let id = config.ids.uuid();
                let mut b = sled::Batch::default();
                b.insert(codec::META_FORMAT, &codec::STORE_FORMAT.to_be_bytes());
                b.insert(codec::META_STORE_ID, id.as_bytes());
                db.apply_batch(b)?;
                db.flush()?;
                id
            }
        };
        let mut format = db
            .get(codec::META_FORMAT)?
            .map(|v| codec::u64_of(&v))
            .transpose()?;
        if format == Some(codec::STORE_FORMAT_2) {
            upgrade_from_format_2(&db)?;
            format = Some(codec::STORE_FORMAT_3);
        }
        if format == Some(codec::STORE_FORMAT_3) {
            upgrade_from_format_3(&db, config.clock.now_ms())?;
            format = Some(codec::STORE_FORMAT_5);
        }
        if format == Some(codec::STORE_FORMAT_4) || format == Some(codec::STORE_FORMAT_5) {
            crate::store::upgrade::sled_to_format_6(&db)?;
            format = Some(codec::STORE_FORMAT_6);
        }
        if format == Some(codec::STORE_FORMAT_6) {
            crate::store::upgrade::topics::sled_to_format_7(&db)?;
        } else if format != Some(codec::STORE_FORMAT) {
            return Err(StoreError::Corrupt(format!(
                "store format {format:?}, this server reads {}",
                codec::STORE_FORMAT
            )));
        }
        let seq = db
            .get(codec::META_SEQ)?
            .map(|v| codec::u64_of(&v))
            .transpose()?
            .unwrap_or(0);
        let rejections = db
            .get(codec::META_REJECTIONS)?
            .map(|v| codec::u64_of(&v))
            .transpose()?
            .unwrap_or(0);
        let hlc = match db.get(codec::META_HLC)? {
            Some(v) => {
                let (ms, c): (u64, u32) = decode(&v)?;
                HlcClock::from_parts(ms, c)
            }
            None => HlcClock::default(),
        };
        let audit = audit_head(&db)?;
        let mut units = Vec::new();
        for kv in db.scan_prefix(codec::ORG_UNIT) {
            let (_, v) = kv?;
            units.push(decode::<OrgUnit>(&v)?);
        }
        let agg = load_aggregates(&db, seq)?;
        let locks = super::periods::load_locks(&db)?;
        let devices = Devices::load(&db)?;
        let rejection_index = RejectionIndex::load(&db, &devices)?;
        // What the upgrades and the new store's id wrote, before anything
        // is served.
        flush_durably(&db, files.as_ref())?;
        let (state, _) = watch::channel(Flushed::default());
        let durability = Arc::new(Durability {
            written: AtomicU64::new(0),
            durable_seq: AtomicU64::new(seq),
            state,
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            failure: watch::channel(None).0,
        });
        let inner = Arc::new(Inner {
            db,
            files,
            store_id,
            ids: config.ids.clone(),
            rejections_kept: config.rejections_kept,
            writer: Mutex::new(Writer {
                seq,
                hlc,
                rejections,
                rejection_index,
                audit,
            }),
            committed_seq: AtomicU64::new(seq),
            agg: RwLock::new(agg),
            org: RwLock::new(Arc::new(OrgTree::from_units(units))),
            locks: RwLock::new(Arc::new(locks)),
            devices: RwLock::new(devices),
            durability: durability.clone(),
            pushes: PushQueue::default(),
            backup: Mutex::new(None),
            backup_on: AtomicBool::new(false),
        });
        tokio::spawn(flusher(Arc::downgrade(&inner), durability));
        Ok(SledStore { inner })
    }

    /// Gives the store in `config.path` a new `store_id`, for a store
    /// restored from a backup: devices that see the new id pull again from
    /// 0 and repair (§7). The server must not be running.
    ///
    /// # Errors
    /// sled's error (e.g. the store is open in a running server), or no store.
    pub fn renew_store_id(config: impl Into<SledConfig>) -> Result<(Uuid, Uuid), StoreError> {
        let config = &config.into();
        if !config.path.exists() {
            return Err(StoreError::Other(format!(
                "no store at {}",
                config.path.display()
            )));
        }
        let db = open_db(
            &sled::Config::new()
                .path(&config.path)
                .cache_capacity(config.cache_bytes),
        )?;
        let old = db
            .get(codec::META_STORE_ID)?
            .map(|v| codec::uuid_of(&v))
            .transpose()?;
        let Some(old) = old else {
            return Err(StoreError::Corrupt("the store has no store_id".into()));
        };
        let new = config.ids.uuid();
        db.insert(codec::META_STORE_ID, new.as_bytes())?;
        flush_durably(&db, sled_files(config)?.as_ref())?;
        Ok((old, new))
    }
}

/// Where [`set_aside_incomplete_snapshots`] moves them, in the data dir.
pub(crate) const INCOMPLETE_SNAPSHOTS_DIR: &str = ".incomplete-sled-snapshots";

/// Moves sled's `snap.*.generating` files out of the store at `store` into
/// [`INCOMPLETE_SNAPSHOTS_DIR`] beside it, before sled opens it.
///
/// sled 0.34.7 writes a snapshot as `snap.<lsn>.generating`, fsyncs it and
/// only then renames it to `snap.<lsn>`; but when it looks for the newest
/// snapshot it also takes `.generating` files, so one left half-written (a
/// full disk, a kill mid-write: spacejam/sled #1527, #1533) makes every
/// later open fail with `Corruption`. Such a file is never the only copy of
/// anything: the previous snapshot is removed only after the rename, and
/// sled replays its log from whichever snapshot it starts with. Seen here
/// after a SIGKILL on a full disk (`tests/tests/full_disk.rs`).
///
/// # Errors
/// The store dir cannot be read, or a file cannot be moved.
pub(crate) fn set_aside_incomplete_snapshots(store: &std::path::Path) -> std::io::Result<usize> {
    let entries = match std::fs::read_dir(store) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut moved = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("snap.") && name.ends_with(".generating")) {
            continue;
        }
        let aside = store
            .parent()
            .unwrap_or(store)
            .join(INCOMPLETE_SNAPSHOTS_DIR);
        std::fs::create_dir_all(&aside)?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let to = aside.join(format!("{name}.{stamp}"));
        std::fs::rename(entry.path(), &to)?;
        tracing::warn!(
            from = %entry.path().display(),
            to = %to.display(),
            "set aside an incomplete sled snapshot (sled would read it as corruption); sled replays its log instead"
        );
        moved += 1;
    }
    Ok(moved)
}

/// Opens sled with `cfg`, waiting up to [`STORE_LOCK_WAIT_MS`] for the
/// store's lock.
///
/// # Errors
/// sled's, e.g. the lock still held after the wait (another server).
pub fn open_db(cfg: &sled::Config) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(STORE_LOCK_WAIT_MS);
    loop {
        match cfg.open() {
            // sled 0.34 reports a held lock only in this message.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// sled's files opened for syncing, unless the config says not to.
fn sled_files(config: &SledConfig) -> Result<Option<SledFiles>, StoreError> {
    if !config.fsync {
        return Ok(None);
    }
    SledFiles::open(&config.path)
        .map(Some)
        .map_err(|e| sync_failed(&e))
}

pub(super) fn sync_failed(e: &std::io::Error) -> StoreError {
    StoreError::from(sled::Error::Io(std::io::Error::new(
        e.kind(),
        format!("syncing the store's files to disk: {e}"),
    )))
}

/// sled's flush, then the fsyncs that make it survive a power cut.
pub(crate) fn flush_durably(db: &sled::Db, files: Option<&SledFiles>) -> Result<(), StoreError> {
    db.flush()?;
    if let Some(files) = files {
        files.sync().map_err(|e| sync_failed(&e))?;
    }
    Ok(())
}

/// The last audit entry's `(n, hash)`: `m/audit`, written with every batch
/// that logs.
pub(super) fn audit_head(db: &sled::Db) -> Result<(u64, codec::Hash), StoreError> {
    let head = match db.get(codec::META_AUDIT)? {
        Some(v) => decode(&v)?,
        None => (0, codec::GENESIS),
    };
    debug_assert_eq!(
        db.scan_prefix(codec::AUDIT)
            .next_back()
            .transpose()?
            .map_or(0, |(k, _)| codec::u64_of(&k[codec::AUDIT.len()..])
                .unwrap_or(0)),
        head.0,
        "m/audit names the last audit entry"
    );
    Ok(head)
}

pub(super) fn load_aggregates(db: &sled::Db, seq: u64) -> Result<Aggregates, StoreError> {
    let mut agg = Aggregates::default();
    for kv in db.scan_prefix(codec::AGG) {
        let (k, v) = kv?;
        let (key, value) = codec::decode_agg(&k[codec::AGG.len()..], &v)?;
        agg.load(key, value);
    }
    agg.note_max_seq(seq);
    Ok(agg)
}
