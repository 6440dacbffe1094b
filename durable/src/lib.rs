//! Writes that survive a power cut, not only a killed process.
//!
//! A SIGKILL leaves the kernel's page cache intact; a power cut, a kernel
//! crash or a phone whose battery dies loses whatever the kernel had not yet
//! written *and flushed from the disk's own cache*. Only `fsync`/`fdatasync`
//! promise that, and only for the file they are called on: a new file's
//! directory entry needs its directory synced too.
//!
//! sled 0.34 makes its log durable with `sync_file_range`, which starts and
//! waits for the writeback of a range but flushes neither the disk's write
//! cache nor the file's size, and it never syncs the blob files it creates
//! for large values (spacejam/sled#1452). [`SledFiles::sync`] closes that gap
//! from outside sled: called after a sled flush has returned, it `fdatasync`s
//! the log, syncs every blob file created since the last call, and syncs the
//! directories whose entries changed. Both the server's store and the
//! device's local store use it, so neither acknowledges what a power cut can
//! take back.
//!
//! [`replace`] writes every other file the same way: a temporary file,
//! synced, renamed over the target, then the directory synced.
//!
//! This crate is the one place both sides share IO code, so it has no
//! dependency on either and knows nothing of records. It is hand-written
//! rather than `atomic-write-file` (which would bring `nix` and a second
//! `rand`) because the whole of it is a few system calls.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// sled's log file inside its directory.
const SLED_LOG: &str = "db";
/// sled's directory of values too large for the log.
const SLED_BLOBS: &str = "blobs";

/// The files of one open sled database, kept open so that each sync is a
/// few system calls.
#[derive(Debug)]
pub struct SledFiles {
    dir: PathBuf,
    log: File,
    seen: Mutex<Seen>,
}

/// Directory entries as of the last sync: a change means the directory
/// must be synced again (a new snapshot, a blob created or removed).
#[derive(Debug, Default)]
struct Seen {
    dir: BTreeSet<OsString>,
    blobs: BTreeSet<OsString>,
}

impl SledFiles {
    /// Opens the files of the sled database in `dir` (which sled has already
    /// opened, so they exist) and syncs them all once: sled writes its
    /// `conf` file and creates its directories without syncing them.
    ///
    /// # Errors
    /// The log cannot be opened, or a sync fails.
    pub fn open(dir: &Path) -> io::Result<SledFiles> {
        let log = File::open(dir.join(SLED_LOG))?;
        let files = SledFiles {
            dir: dir.to_path_buf(),
            log,
            seen: Mutex::new(Seen::default()),
        };
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                sync_file_if_present(&entry.path())?;
            }
        }
        files.sync()?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        Ok(files)
    }

    /// Makes durable everything sled wrote before the last flush that
    /// returned: call it right after `Db::flush` (or `flush_async`), never
    /// instead of it (sled may still hold the writes in its own buffers).
    ///
    /// Files first, then their directories, so that no entry a power cut
    /// keeps can name contents it lost.
    ///
    /// # Errors
    /// A sync failed: the writes must not be acknowledged. The caller treats
    /// the store like one whose flush failed.
    pub fn sync(&self) -> io::Result<()> {
        let mut seen = lock(&self.seen);
        self.log.sync_data()?;
        let blobs_dir = self.dir.join(SLED_BLOBS);
        let blobs = names(&blobs_dir)?;
        if blobs != seen.blobs {
            for name in blobs.difference(&seen.blobs) {
                sync_file_if_present(&blobs_dir.join(name))?;
            }
            sync_dir(&blobs_dir)?;
            seen.blobs = blobs;
        }
        let entries = names(&self.dir)?;
        if entries != seen.dir {
            sync_dir(&self.dir)?;
            seen.dir = entries;
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded sets only decide whether to sync a directory again; after
    // a panic mid-sync the worst case is one sync too many.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The names in `dir`; none if it does not exist (sled makes `blobs/` on
/// demand).
fn names(dir: &Path) -> io::Result<BTreeSet<OsString>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.map(|e| e.file_name())).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(e),
    }
}

/// sled removes blobs and snapshots as it goes: one gone between listing
/// and syncing needs no sync.
fn sync_file_if_present(path: &Path) -> io::Result<()> {
    match File::open(path) {
        Ok(f) => f.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Syncs a directory, making its entries (files created, renamed or
/// removed in it) durable.
///
/// # Errors
/// The directory cannot be opened or synced.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing parents, each entry durable once this
/// returns.
///
/// # Errors
/// As `std::fs::create_dir_all`, or a sync fails.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        // Made meanwhile by someone else, who syncs it.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    sync_dir(parent_of(dir))
}

/// The directory whose entry names `path`.
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Who may read a file [`replace`] or [`create_new`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Owner only (0600): tokens, a device's credentials.
    Private,
    /// As the process's umask allows (0666 before it): exports, backups.
    Shared,
}

impl Access {
    fn mode(self) -> u32 {
        match self {
            Access::Private => 0o600,
            Access::Shared => 0o666,
        }
    }
}

/// Replaces `path` with `contents` so that after a power cut it holds
/// either its old contents or the new ones, never a mix or nothing: a
/// temporary file beside it, synced, renamed over it, the directory synced.
///
/// # Errors
/// IO; the target is then unchanged and the temporary file removed.
pub fn replace(path: &Path, contents: &[u8], access: Access) -> io::Result<()> {
    let tmp = temp_path(path);
    let written =
        write_synced(&tmp, contents, access, false).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(parent_of(path))
}

/// Writes a new file at `path`, failing if one exists, durable (contents
/// and directory entry) once this returns.
///
/// # Errors
/// `AlreadyExists`, or IO (a partly written file is removed).
pub fn create_new(path: &Path, contents: &[u8], access: Access) -> io::Result<()> {
    if let Err(e) = write_synced(path, contents, access, true) {
        if e.kind() != io::ErrorKind::AlreadyExists {
            let _ = std::fs::remove_file(path);
        }
        return Err(e);
    }
    sync_dir(parent_of(path))
}

fn write_synced(path: &Path, contents: &[u8], access: Access, new: bool) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).mode(access.mode());
    if new {
        options.create_new(true);
    } else {
        options.create(true).truncate(true);
    }
    let mut f = options.open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

/// `<name>.<pid>.tmp` beside `path`: one process replacing a file at a time
/// per name, and a leftover from a crash names who left it.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(OsString::from).unwrap_or_default();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replace_writes_the_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.json");
        replace(&path, b"old", Access::Private).unwrap();
        replace(&path, b"new contents", Access::Private).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new contents");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("device.json")]);
    }

    #[test]
    fn a_failed_replace_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        replace(&path, b"old", Access::Shared).unwrap();
        // A directory where the temporary file would go makes the write fail.
        std::fs::create_dir(temp_path(&path)).unwrap();
        assert!(replace(&path, b"new", Access::Shared).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
    }

    #[test]
    fn create_new_refuses_an_existing_file_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        create_new(&path, b"first", Access::Private).unwrap();
        let e = create_new(&path, b"second", Access::Private).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
    }

    #[test]
    fn create_dir_all_makes_every_level() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_all(&deep).unwrap();
    }

    #[test]
    fn sled_files_sync_a_live_database_and_notice_new_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let db = sled_like(&path);
        let files = SledFiles::open(&path).unwrap();
        files.sync().unwrap();
        std::fs::create_dir(path.join(SLED_BLOBS)).unwrap();
        std::fs::write(path.join(SLED_BLOBS).join("42"), b"blob").unwrap();
        files.sync().unwrap();
        assert!(lock(&files.seen).blobs.contains(&OsString::from("42")));
        std::fs::remove_file(path.join(SLED_BLOBS).join("42")).unwrap();
        files.sync().unwrap();
        assert!(lock(&files.seen).blobs.is_empty());
        drop(db);
    }

    /// The files sled keeps, without depending on sled here.
    fn sled_like(path: &Path) -> File {
        std::fs::create_dir_all(path).unwrap();
        std::fs::write(path.join("conf"), b"segment_size: 524288").unwrap();
        File::create(path.join(SLED_LOG)).unwrap()
    }
}
