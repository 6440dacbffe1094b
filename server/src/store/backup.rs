//! The backup file: a whole store as one self-describing stream, and
//! `restore`, which loads one into an empty data dir.
//!
//! ```text
//! PUFA-BACKUP 1 {"store_id":…,"store_format":5,"seq":…,"audit_n":…,"audit_head":"<hex>","created_ms":…}\n
//! ( key_len:u32 key value_len:u32 value )*        every key of the store, in key order
//! 0xFFFFFFFF count:u64 sha256:32                  trailer
//! ```
//!
//! Integers are big-endian. `sha256` covers every byte before `count`
//! (header line and end marker included) and `count` is the number of pairs, so a
//! truncated or altered file is refused. The pairs are the store's own keys
//! and values (`codec.rs`), copied verbatim: a restored store is the
//! original, audit chain included, as of the header's `seq`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{codec, StoreError};
use crate::config::Config;

/// The first word of a backup file.
pub const MAGIC: &str = "PUFA-BACKUP";
/// The version of this layout, after the magic word.
pub const BACKUP_FORMAT: u32 = 1;
/// Longest header line, in bytes.
pub const HEADER_BYTES_MAX: usize = 4096;
/// Longest key and value in a backup, in bytes (sled keeps values whole in
/// memory; nothing the server writes comes near).
pub const KEY_BYTES_MAX: u32 = 64 * 1024;
pub const VALUE_BYTES_MAX: u32 = 64 * 1024 * 1024;
/// Pairs written per sled batch while restoring.
const RESTORE_PAIRS_PER_BATCH: usize = 10_000;
const TRAILER_MARK: u32 = u32::MAX;

/// What the header line says about the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackupHeader {
    pub store_id: Uuid,
    pub store_format: u64,
    /// The highest seq in the copy.
    pub seq: u64,
    /// The last audit entry in the copy and its hash (hex).
    pub audit_n: u64,
    pub audit_head: String,
    /// The server's clock when the copy started.
    pub created_ms: u64,
}

/// Writes the format, hashing as it goes. Bytes are taken in chunks.
pub struct Encoder {
    sha: Sha256,
    buf: Vec<u8>,
    count: u64,
}

impl Encoder {
    pub fn new(header: &BackupHeader) -> Encoder {
        let json = serde_json::to_string(header).expect("a header serializes");
        let mut e = Encoder {
            sha: Sha256::new(),
            buf: Vec::with_capacity(2 * 256 * 1024),
            count: 0,
        };
        e.put(format!("{MAGIC} {BACKUP_FORMAT} {json}\n").as_bytes());
        e
    }

    fn put(&mut self, bytes: &[u8]) {
        self.sha.update(bytes);
        self.buf.extend_from_slice(bytes);
    }

    pub fn pair(&mut self, key: &[u8], value: &[u8]) {
        self.put(&(key.len() as u32).to_be_bytes());
        self.put(key);
        self.put(&(value.len() as u32).to_be_bytes());
        self.put(value);
        self.count += 1;
    }

    /// Bytes written since the last take.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// The rest, trailer included.
    pub fn finish(mut self) -> Vec<u8> {
        self.put(&TRAILER_MARK.to_be_bytes());
        let digest: [u8; 32] = self.sha.clone().finalize().into();
        let mut out = std::mem::take(&mut self.buf);
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&digest);
        out
    }
}

/// Why a restore did not happen. Nothing is left in the data dir but a
/// `store.restoring` dir when the failure came after loading began (the
/// server refuses to start on it; remove the data dir and try again).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{0} is not empty: restore only into an empty or new directory")]
    NotEmpty(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a usable backup: {0}")]
    Invalid(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What [`restore`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct Restored {
    pub header: BackupHeader,
    pub pairs: u64,
    /// The store's id now: the header's with `keep_store_id`, else new.
    pub store_id: Uuid,
}

/// Reads exactly `buf.len()` bytes, hashing them.
fn read_hashed(
    r: &mut impl Read,
    sha: &mut Sha256,
    buf: &mut [u8],
    what: &str,
) -> Result<(), RestoreError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            RestoreError::Invalid(format!("the file ends inside {what}: truncated"))
        }
        _ => RestoreError::Io(e),
    })?;
    sha.update(&*buf);
    Ok(())
}

fn u32_of(r: &mut impl Read, sha: &mut Sha256, what: &str) -> Result<u32, RestoreError> {
    let mut b = [0u8; 4];
    read_hashed(r, sha, &mut b, what)?;
    Ok(u32::from_be_bytes(b))
}

/// Reads a backup from `r`: checks the header, hands each pair to `each`
/// in order, and checks the trailer (count, checksum, nothing after it).
/// A caller must not trust the pairs until this returns `Ok`.
///
/// # Errors
/// [`RestoreError::Invalid`] for anything but a whole, unaltered backup of
/// a store format this server reads; `each`'s errors; IO.
pub fn read(
    r: &mut impl BufRead,
    mut each: impl FnMut(Vec<u8>, Vec<u8>) -> Result<(), RestoreError>,
) -> Result<(BackupHeader, u64), RestoreError> {
    let mut sha = Sha256::new();
    let header = read_header(r, &mut sha)?;
    let mut count = 0u64;
    let mut last_key: Option<Vec<u8>> = None;
    loop {
        let klen = u32_of(r, &mut sha, "a key length")?;
        if klen == TRAILER_MARK {
            break;
        }
        if klen > KEY_BYTES_MAX {
            return Err(RestoreError::Invalid(format!(
                "a key of {klen} bytes after {count} pairs: corrupt"
            )));
        }
        let mut key = vec![0u8; klen as usize];
        read_hashed(r, &mut sha, &mut key, "a key")?;
        let vlen = u32_of(r, &mut sha, "a value length")?;
        if vlen > VALUE_BYTES_MAX {
            return Err(RestoreError::Invalid(format!(
                "a value of {vlen} bytes after {count} pairs: corrupt"
            )));
        }
        let mut value = vec![0u8; vlen as usize];
        read_hashed(r, &mut sha, &mut value, "a value")?;
        if last_key.as_ref().is_some_and(|l| *l >= key) {
            return Err(RestoreError::Invalid(format!(
                "keys out of order after {count} pairs: corrupt"
            )));
        }
        last_key = Some(key.clone());
        each(key, value)?;
        count += 1;
    }
    // The trailer: the marker was hashed with the pairs; count and digest
    // are not.
    let digest: [u8; 32] = sha.finalize().into();
    let mut tail = [0u8; 8 + 32];
    r.read_exact(&mut tail)
        .map_err(|_| RestoreError::Invalid("the trailer is cut short: truncated".into()))?;
    let mut extra = [0u8; 1];
    if r.read(&mut extra)? != 0 {
        return Err(RestoreError::Invalid(
            "bytes after the trailer: corrupt".into(),
        ));
    }
    let stated = u64::from_be_bytes(tail[..8].try_into().expect("8 bytes"));
    if stated != count {
        return Err(RestoreError::Invalid(format!(
            "the trailer counts {stated} pairs, the file holds {count}"
        )));
    }
    if tail[8..] != digest {
        return Err(RestoreError::Invalid(
            "the checksum does not match the contents: corrupt".into(),
        ));
    }
    Ok((header, count))
}

/// Loads the backup `from` into `config.data_dir`, which must be empty or
/// absent, and gives it a new `store_id` unless `keep_store_id`. The store
/// is built in `<data>/store.restoring` and renamed to `store` only once
/// the trailer has checked out.
///
/// # Errors
/// [`RestoreError`]: a non-empty dir, an unreadable, truncated or altered
/// file, a store format this server does not read, or IO.
pub fn restore(
    from: &Path,
    config: &Config,
    keep_store_id: bool,
) -> Result<Restored, RestoreError> {
    let dir = &config.data_dir;
    let file = std::fs::File::open(from).map_err(|source| RestoreError::Read {
        path: from.to_path_buf(),
        source,
    })?;
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(RestoreError::NotEmpty(dir.clone()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => pufa_durable::create_dir_all(dir)?,
        Err(e) => return Err(e.into()),
    }
    let mut r = BufReader::with_capacity(1024 * 1024, file);
    let staging = dir.join("store.restoring");
    let loaded = load(&mut r, &staging, config, keep_store_id);
    match loaded {
        Ok(restored) => {
            std::fs::rename(&staging, config.store_path())?;
            pufa_durable::sync_dir(dir)?;
            Ok(restored)
        }
        Err(e) => {
            // Nothing usable was made: leave the dir as it was found.
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

fn read_header(r: &mut impl BufRead, sha: &mut Sha256) -> Result<BackupHeader, RestoreError> {
    let mut line = Vec::new();
    r.by_ref()
        .take(HEADER_BYTES_MAX as u64)
        .read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Err(RestoreError::Invalid(
            "no header line: not a Pufa backup, or truncated".into(),
        ));
    }
    sha.update(&line);
    let text = std::str::from_utf8(&line[..line.len() - 1])
        .map_err(|_| RestoreError::Invalid("the header is not text".into()))?;
    let mut parts = text.splitn(3, ' ');
    if parts.next() != Some(MAGIC) {
        return Err(RestoreError::Invalid(format!(
            "the file does not start with {MAGIC}"
        )));
    }
    if parts.next() != Some(&BACKUP_FORMAT.to_string()) {
        return Err(RestoreError::Invalid(format!(
            "backup layout other than {BACKUP_FORMAT}: made by another server version"
        )));
    }
    let header: BackupHeader = serde_json::from_str(parts.next().unwrap_or(""))
        .map_err(|e| RestoreError::Invalid(format!("malformed header: {e}")))?;
    // A format 4, 5 or 6 backup loads as is: the server upgrades it when
    // it opens it.
    if ![
        codec::STORE_FORMAT,
        codec::STORE_FORMAT_6,
        codec::STORE_FORMAT_5,
        codec::STORE_FORMAT_4,
    ]
    .contains(&header.store_format)
    {
        return Err(RestoreError::Invalid(format!(
            "store format {}, this server reads {}: restore with the server version that made it",
            header.store_format,
            codec::STORE_FORMAT
        )));
    }
    Ok(header)
}

fn load(
    r: &mut impl BufRead,
    staging: &Path,
    config: &Config,
    keep_store_id: bool,
) -> Result<Restored, RestoreError> {
    let db = sled::Config::new()
        .path(staging)
        .cache_capacity(config.cache_bytes)
        .open()
        .map_err(StoreError::from)?;
    let mut batch = sled::Batch::default();
    let mut in_batch = 0;
    let (header, pairs) = read(r, |key, value| {
        batch.insert(key, value);
        in_batch += 1;
        if in_batch == RESTORE_PAIRS_PER_BATCH {
            db.apply_batch(std::mem::take(&mut batch))
                .map_err(StoreError::from)?;
            in_batch = 0;
        }
        Ok(())
    })?;
    db.apply_batch(batch).map_err(StoreError::from)?;
    let stored_id = db
        .get(codec::META_STORE_ID)
        .map_err(StoreError::from)?
        .map(|v| codec::uuid_of(&v))
        .transpose()?;
    if stored_id != Some(header.store_id) {
        return Err(RestoreError::Invalid(
            "the header's store_id is not the one in the store".into(),
        ));
    }
    let store_id = if keep_store_id {
        header.store_id
    } else {
        config.ids.uuid()
    };
    db.insert(codec::META_STORE_ID, store_id.as_bytes())
        .map_err(StoreError::from)?;
    // Synced whatever the server's own setting: nothing of a restore is
    // acknowledged to anyone until it is all on disk.
    let files = pufa_durable::SledFiles::open(staging)?;
    super::sled::flush_durably(&db, Some(&files))?;
    Ok(Restored {
        header,
        pairs,
        store_id,
    })
}
