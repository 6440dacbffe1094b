//! A FUSE file system that simulates a power cut, for tests of durability.
//!
//! A SIGKILL test cannot tell whether acknowledged data was fsynced: the
//! kernel's page cache survives the killed process, so data that was only
//! written (or only `sync_file_range`d, as sled 0.34 does) reads back fine.
//! [`PowerCutFs`] keeps every byte that was written but not fsynced in its
//! own memory instead of in the page cache, and [`PowerCutFs::cut`] throws it
//! away, so the next process sees exactly what a machine would after losing
//! power.
//!
//! It is a passthrough (like LazyFS) over a backing directory that holds the
//! *durable* state:
//!
//! - File data: `write`, truncation (`setattr` size), `fallocate` and writes
//!   past the end stay in memory, per inode (4 KiB pages and a logical size).
//!   Reads and `stat` see them. Only `fsync`/`fdatasync` of the file (any
//!   handle to it, as in Linux; also `O_SYNC`/`O_DSYNC` writes, which the
//!   kernel turns into fsyncs) writes them to the backing file and
//!   `sync_data`s it. `close` and unmounting persist nothing.
//! - Namespace operations (create, mkdir, mknod, symlink, unlink, rmdir,
//!   rename) and metadata (mode, owner, times) go to the backing directory at
//!   once, so they are durable immediately: **a missing fsync of a directory
//!   is not caught**. A new file therefore survives a cut, empty unless its
//!   data was fsynced. Pending data belongs to the inode, so it moves with a
//!   rename and is dropped with an unlink.
//! - `statfs` is the backing file system's. Locks (`flock`, `fcntl`) never
//!   reach us: the kernel keeps them itself, so sled's exclusive lock works
//!   between processes on the mount. Hard links are not supported (`EPERM`).
//! - The kernel's page cache is write-through here (the FUSE writeback cache
//!   is off), and each mount is a new superblock: nothing cached survives a
//!   cut.
//!
//! Never touch the backing directory while the file system is mounted; read
//! it through [`PowerCutFs::path`].

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{File, FileTimes, Metadata, OpenOptions, Permissions};
use std::io;
use std::ops::Range;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    BackgroundSession, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    SessionACL, TimeOrNow, WriteFlags,
};

/// Granularity of pending data; the page size, so a partial write reads the
/// rest of its page from the backing file once.
const PAGE: u64 = 4096;
/// How long the kernel may cache entries and attributes. Every change goes
/// through this mount's kernel, which updates its caches itself, so caching
/// cannot show stale data; a cut mounts afresh, which empties them.
const TTL: Duration = Duration::from_secs(1);
/// Threads serving requests, so one slow fsync does not stall the reads and
/// writes of other files.
const THREADS: usize = 4;
const ROOT: u64 = INodeNo::ROOT.0;

/// What a power cut threw away: data written but never fsynced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Bytes written (and not overwritten by a truncation) since the last
    /// fsync of their file.
    pub bytes: u64,
    /// Files with pending data or a pending size change.
    pub files: usize,
}

/// The file system, mounted on a temp dir over a backing temp dir; unmounted
/// (persisting nothing) on drop.
pub struct PowerCutFs {
    /// `None` only inside `cut`.
    mounted: Option<Mounted>,
    mountpoint: tempfile::TempDir,
    backing: tempfile::TempDir,
}

struct Mounted {
    session: BackgroundSession,
    inner: Arc<Inner>,
}

impl PowerCutFs {
    /// Mounts a new, empty file system, usable by every user when mounted by
    /// root (else by its owner only). `None`, after saying loudly on
    /// stderr that the power-loss tests did not run and why, when FUSE
    /// cannot be mounted here (no `/dev/fuse`, not root and no
    /// `fusermount3`); under CI (`CI=true`) that panics instead.
    pub fn mount() -> Option<PowerCutFs> {
        let tempdir = |prefix| {
            tempfile::Builder::new()
                .prefix(prefix)
                .tempdir()
                .expect("power-cut fs: a temp dir")
        };
        let (mountpoint, backing) = (
            tempdir("pufa-powercut-mnt"),
            tempdir("pufa-powercut-backing"),
        );
        match Mounted::new(backing.path(), mountpoint.path()) {
            Ok(mounted) => Some(PowerCutFs {
                mounted: Some(mounted),
                mountpoint,
                backing,
            }),
            Err(e) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "power-cut fs: cannot mount FUSE under CI: {e}"
                );
                eprintln!(
                    "\n*** SKIPPED the power-loss tests: cannot mount a FUSE file system here \
                     ({e}); they need /dev/fuse and root, or fusermount3 ***\n"
                );
                None
            }
        }
    }

    /// The mountpoint: where programs under test keep their files.
    pub fn path(&self) -> &Path {
        self.mountpoint.path()
    }

    /// What a cut would drop now. Other processes may be writing meanwhile;
    /// this is a snapshot.
    pub fn pending(&self) -> Dropped {
        self.mounted().inner.pending(false)
    }

    /// The power cut. Before calling it, SIGKILL and reap every process using
    /// the mount, and drop this process's handles to files in it.
    ///
    /// Unmounts, discarding all pending data, and mounts again on the same
    /// mountpoint over the same backing directory, so that the next reader
    /// sees exactly the durable state. Should anything still hold a file
    /// open, the old mount is detached instead and that holder gets `EIO`
    /// from then on; nothing it does reaches the durable state.
    pub fn cut(&mut self) -> Dropped {
        let mounted = self.mounted.take().expect("mounted outside `cut`");
        let dropped = mounted.unmount(self.mountpoint.path());
        self.mounted = Some(
            Mounted::new(self.backing.path(), self.mountpoint.path())
                .unwrap_or_else(|e| panic!("power-cut fs: mounting again after the cut: {e}")),
        );
        dropped
    }

    fn mounted(&self) -> &Mounted {
        self.mounted.as_ref().expect("mounted outside `cut`")
    }
}

impl Drop for PowerCutFs {
    fn drop(&mut self) {
        if let Some(mounted) = self.mounted.take() {
            mounted.unmount(self.mountpoint.path());
        }
    }
}

impl std::fmt::Debug for PowerCutFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PowerCutFs")
            .field("path", &self.path())
            .field("backing", &self.backing.path())
            .finish()
    }
}

impl Mounted {
    fn new(backing: &Path, mountpoint: &Path) -> io::Result<Mounted> {
        let inner = Arc::new(Inner::new(backing)?);
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            MountOption::FSName("pufa-powercut".into()),
            // The kernel checks permissions against the attributes we report,
            // as a disk file system does, instead of asking us.
            MountOption::DefaultPermissions,
        ];
        // The server under test may run as another user than the test.
        // Only root may allow that without `user_allow_other` in
        // /etc/fuse.conf; others get a mount only they can use.
        config.acl = if nix::unistd::geteuid().is_root() {
            SessionACL::All
        } else {
            SessionACL::Owner
        };
        config.n_threads = Some(THREADS);
        config.clone_fd = true;
        let session = fuser::spawn_mount(
            Fs {
                inner: inner.clone(),
            },
            mountpoint,
            &config,
        )?;
        Ok(Mounted { session, inner })
    }

    /// Unmounts, persisting nothing, and says what was dropped.
    fn unmount(self, mountpoint: &Path) -> Dropped {
        // From here on every request fails, so nothing still in flight can
        // reach the backing dir after we counted what was pending.
        let dropped = self.inner.pending(true);
        match nix::mount::umount(mountpoint) {
            Ok(()) => {}
            Err(nix::errno::Errno::EBUSY) => {
                // Something still has a file or its cwd there. Detaching lets
                // the cut go on; the old mount's holders get EIO.
                eprintln!("power-cut fs: {mountpoint:?} is busy; detaching it");
                nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH)
                    .unwrap_or_else(|e| panic!("power-cut fs: cannot detach {mountpoint:?}: {e}"));
            }
            // Not root: dropping the session unmounts through fusermount3,
            // which always detaches.
            Err(_) => {}
        }
        // Dropped, not joined: after a detach its threads serve the old
        // mount's holders until they close. Dropped before the next mount,
        // so that its own unmount cannot hit that one.
        drop(self.session);
        dropped
    }
}

/// State of one mount; a cut starts a new one.
struct Inner {
    /// Set by the cut: the mount is dead and answers `EIO`.
    dead: AtomicBool,
    table: Mutex<Table>,
}

/// Inodes, keyed by our own numbers, which are never reused.
struct Table {
    backing: PathBuf,
    nodes: HashMap<u64, Node>,
    /// Backing inode number → ours, for nodes that still have a name.
    by_backing: HashMap<u64, u64>,
    next_ino: u64,
    /// Directory listings, taken at opendir so offsets stay stable.
    dirs: HashMap<u64, Vec<(u64, FileType, OsString)>>,
    next_fh: u64,
}

/// An inode. Its place is (parent, name), not a path, so renaming a
/// directory moves everything under it. Nodes stay for the life of the
/// mount (a test touches few files): one the kernel forgot may still hold
/// pending data.
struct Node {
    parent: u64,
    name: OsString,
    /// False once unlinked, rmdir'd or renamed over.
    linked: bool,
    backing_ino: u64,
    lookups: u64,
    /// Regular files, from their first open or resize on.
    file: Option<Arc<Mutex<FileState>>>,
}

/// One file's data: the backing file plus what is pending in memory.
///
/// Invariants: `backing_valid <= backing_len` and `backing_valid <= size`;
/// every page starts below `size` and holds zeros past it.
struct FileState {
    /// The backing file, open while the kernel has the file open.
    file: Option<File>,
    writable: bool,
    opens: u32,
    unlinked: bool,
    /// Length of the backing file.
    backing_len: u64,
    /// Backing bytes below this are still the file's (above it a truncation
    /// cut them off, though the backing file still has them).
    backing_valid: u64,
    /// Logical size.
    size: u64,
    pages: BTreeMap<u64, Page>,
}

struct Page {
    data: Box<[u8]>,
    /// Which bytes were written, one bit each: the count of what a cut
    /// drops.
    written: Box<[u64]>,
}

impl Page {
    fn zeroed() -> Page {
        Page {
            data: vec![0; PAGE as usize].into_boxed_slice(),
            written: vec![0; PAGE as usize / 64].into_boxed_slice(),
        }
    }

    fn mark(&mut self, bytes: Range<usize>) {
        for i in bytes {
            self.written[i / 64] |= 1 << (i % 64);
        }
    }

    fn unmark(&mut self, bytes: Range<usize>) {
        for i in bytes {
            self.written[i / 64] &= !(1 << (i % 64));
        }
    }

    /// Written bytes below `end`.
    fn written_below(&self, end: usize) -> u64 {
        let (full, rest) = (end / 64, end % 64);
        let partial = self.written.get(full).map_or(0, |w| w & ((1 << rest) - 1));
        let n: u32 = self.written[..full].iter().map(|w| w.count_ones()).sum();
        u64::from(n + partial.count_ones())
    }
}

type Res<T> = Result<T, Errno>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking handler must not take the whole mount down with it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

impl Inner {
    fn new(backing: &Path) -> io::Result<Inner> {
        let root_ino = std::fs::metadata(backing)?.ino();
        let mut table = Table {
            backing: backing.to_path_buf(),
            nodes: HashMap::new(),
            by_backing: HashMap::new(),
            next_ino: ROOT + 1,
            dirs: HashMap::new(),
            next_fh: 1,
        };
        table.nodes.insert(
            ROOT,
            Node {
                parent: ROOT,
                name: OsString::new(),
                linked: true,
                backing_ino: root_ino,
                lookups: 1,
                file: None,
            },
        );
        table.by_backing.insert(root_ino, ROOT);
        Ok(Inner {
            dead: AtomicBool::new(false),
            table: Mutex::new(table),
        })
    }

    fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    /// The table, unless the mount is dead. Namespace operations persist
    /// while holding it, which the cut waits for.
    fn table(&self) -> Res<MutexGuard<'_, Table>> {
        let table = lock(&self.table);
        if self.is_dead() {
            return Err(Errno::EIO);
        }
        Ok(table)
    }

    fn file(&self, ino: u64) -> Res<Arc<Mutex<FileState>>> {
        let table = self.table()?;
        let node = table.nodes.get(&ino).ok_or(Errno::ENOENT)?;
        node.file.clone().ok_or(Errno::EBADF)
    }

    /// Counts pending data; with `cut`, first kills this mount and then
    /// discards it.
    fn pending(&self, cut: bool) -> Dropped {
        if cut {
            self.dead.store(true, Ordering::SeqCst);
        }
        // Taking every lock waits for operations in flight: an fsync holds
        // its file's lock, a namespace operation the table's.
        let table = lock(&self.table);
        let mut dropped = Dropped::default();
        for node in table.nodes.values() {
            let Some(file) = &node.file else { continue };
            let mut file = lock(file);
            if let Some(bytes) = file.pending() {
                dropped.bytes += bytes;
                dropped.files += 1;
            }
            if cut {
                file.discard();
            }
        }
        dropped
    }
}

impl Table {
    /// The backing path of a node.
    fn path(&self, ino: u64) -> Res<PathBuf> {
        let mut names = Vec::new();
        let mut at = ino;
        while at != ROOT {
            let node = self.nodes.get(&at).ok_or(Errno::ENOENT)?;
            if !node.linked {
                return Err(Errno::ENOENT);
            }
            names.push(&node.name);
            at = node.parent;
        }
        let mut path = self.backing.clone();
        path.extend(names.iter().rev());
        Ok(path)
    }

    fn child(&self, parent: u64, name: &OsStr) -> Res<PathBuf> {
        Ok(self.path(parent)?.join(name))
    }

    /// Our node for the backing inode at (parent, name), made if new.
    fn node_at(&mut self, parent: u64, name: &OsStr, backing_ino: u64) -> u64 {
        if let Some(&ino) = self.by_backing.get(&backing_ino) {
            let node = &self.nodes[&ino];
            if node.parent == parent && node.name == name {
                return ino;
            }
            // Without hard links one inode has one place, so the backing dir
            // changed behind our back (or reused the inode number of a file
            // deleted there): that node is not this file.
            self.unlinked(ino);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(
            ino,
            Node {
                parent,
                name: name.to_owned(),
                linked: true,
                backing_ino,
                lookups: 0,
                file: None,
            },
        );
        self.by_backing.insert(backing_ino, ino);
        ino
    }

    /// Our node for a backing file at (parent, name), if we know it.
    fn known_at(&self, parent: u64, name: &OsStr, meta: &Metadata) -> Option<u64> {
        let ino = *self.by_backing.get(&meta.ino())?;
        let node = &self.nodes[&ino];
        (node.parent == parent && node.name == name).then_some(ino)
    }

    /// The node lost its name: its pending data can never become durable,
    /// so it goes (once the last handle closes: until then it is readable).
    fn unlinked(&mut self, ino: u64) {
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        node.linked = false;
        if self.by_backing.get(&node.backing_ino) == Some(&ino) {
            self.by_backing.remove(&node.backing_ino);
        }
        if let Some(file) = &node.file {
            let mut file = lock(file);
            file.unlinked = true;
            if file.opens == 0 {
                file.discard();
            }
        }
        self.maybe_remove(ino);
    }

    fn maybe_remove(&mut self, ino: u64) {
        let Some(node) = self.nodes.get(&ino) else {
            return;
        };
        let open = node.file.as_ref().is_some_and(|f| lock(f).opens > 0);
        if !node.linked && node.lookups == 0 && !open {
            self.nodes.remove(&ino);
        }
    }

    /// The node's file state, made from its backing file if new.
    fn file_state(&mut self, ino: u64, meta: &Metadata) -> Res<Arc<Mutex<FileState>>> {
        let node = self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        if !meta.is_file() {
            return Err(Errno::EINVAL);
        }
        Ok(node
            .file
            .get_or_insert_with(|| {
                Arc::new(Mutex::new(FileState {
                    file: None,
                    writable: false,
                    opens: 0,
                    unlinked: false,
                    backing_len: meta.len(),
                    backing_valid: meta.len(),
                    size: meta.len(),
                    pages: BTreeMap::new(),
                }))
            })
            .clone())
    }

    /// Backing metadata: through the open file if any (it may be unlinked).
    fn meta(&self, ino: u64) -> Res<Metadata> {
        let node = self.nodes.get(&ino).ok_or(Errno::ENOENT)?;
        if let Some(file) = &node.file {
            if let Some(f) = &lock(file).file {
                return f.metadata().map_err(errno);
            }
        }
        std::fs::symlink_metadata(self.path(ino)?).map_err(errno)
    }

    /// What the kernel sees: the backing file's attributes with the pending
    /// size.
    fn attr(&self, ino: u64, meta: &Metadata) -> FileAttr {
        let pending_size = self
            .nodes
            .get(&ino)
            .and_then(|n| n.file.as_ref())
            .map(|f| lock(f).size);
        let (size, blocks) = match pending_size {
            Some(size) => (size, size.div_ceil(512)),
            None => (meta.len(), meta.blocks()),
        };
        let time = |secs: i64, nanos: i64| {
            let since = Duration::new(secs.unsigned_abs(), nanos as u32);
            if secs >= 0 {
                UNIX_EPOCH + since
            } else {
                UNIX_EPOCH - since
            }
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks,
            atime: time(meta.atime(), meta.atime_nsec()),
            mtime: time(meta.mtime(), meta.mtime_nsec()),
            ctime: time(meta.ctime(), meta.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind: FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile),
            perm: (meta.mode() & 0o7777) as u16,
            nlink: meta.nlink() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: meta.rdev() as u32,
            blksize: PAGE as u32,
            flags: 0,
        }
    }

    /// After a create: the mode asked for (not our umask's), and the caller
    /// as owner. Only root can give files away; a non-root mount admits only
    /// its owner, whose files these already are.
    fn settle_new(&self, path: &Path, mode: Option<u32>, req: &Request) -> Res<Metadata> {
        if let Some(mode) = mode {
            std::fs::set_permissions(path, Permissions::from_mode(mode & 0o7777)).map_err(errno)?;
        }
        let meta = std::fs::symlink_metadata(path).map_err(errno)?;
        if (meta.uid(), meta.gid()) != (req.uid(), req.gid())
            && std::os::unix::fs::lchown(path, Some(req.uid()), Some(req.gid())).is_ok()
        {
            return std::fs::symlink_metadata(path).map_err(errno);
        }
        Ok(meta)
    }

    /// A new entry at (parent, name), looked up once for the kernel.
    fn entry(&mut self, parent: u64, name: &OsStr, meta: &Metadata) -> FileAttr {
        let ino = self.node_at(parent, name, meta.ino());
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.lookups += 1;
        }
        self.attr(ino, meta)
    }
}

impl FileState {
    fn load(file: Option<&File>, backing_valid: u64, idx: u64) -> io::Result<Page> {
        let mut page = Page::zeroed();
        let start = idx * PAGE;
        if start < backing_valid {
            let n = (backing_valid - start).min(PAGE) as usize;
            no_file(file)?.read_exact_at(&mut page.data[..n], start)?;
        }
        Ok(page)
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset + data.len() as u64;
        for idx in offset / PAGE..end.div_ceil(PAGE) {
            let start = idx * PAGE;
            let (lo, hi) = (offset.max(start), end.min(start + PAGE));
            let page = match self.pages.entry(idx) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let whole = lo == start && hi == start + PAGE;
                    e.insert(if whole {
                        Page::zeroed()
                    } else {
                        FileState::load(self.file.as_ref(), self.backing_valid, idx)?
                    })
                }
            };
            let (a, b) = ((lo - start) as usize, (hi - start) as usize);
            page.data[a..b].copy_from_slice(&data[(lo - offset) as usize..(hi - offset) as usize]);
            page.mark(a..b);
        }
        self.size = self.size.max(end);
        Ok(())
    }

    fn read(&self, offset: u64, len: u32) -> io::Result<Vec<u8>> {
        let end = (offset + u64::from(len)).min(self.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut buf = vec![0; (end - offset) as usize];
        let from_backing = end.min(self.backing_valid);
        if offset < from_backing {
            no_file(self.file.as_ref())?
                .read_exact_at(&mut buf[..(from_backing - offset) as usize], offset)?;
        }
        for (&idx, page) in self.pages.range(offset / PAGE..end.div_ceil(PAGE)) {
            let start = idx * PAGE;
            let (lo, hi) = (offset.max(start), end.min(start + PAGE));
            buf[(lo - offset) as usize..(hi - offset) as usize]
                .copy_from_slice(&page.data[(lo - start) as usize..(hi - start) as usize]);
        }
        Ok(buf)
    }

    fn set_size(&mut self, size: u64) {
        if size < self.size {
            drop(self.pages.split_off(&size.div_ceil(PAGE)));
            // The page `size` falls inside, if any (at a page boundary the
            // split took it): past `size` it must read as zeros when the
            // file grows again.
            if let Some(page) = self.pages.get_mut(&(size / PAGE)) {
                let from = (size % PAGE) as usize;
                page.data[from..].fill(0);
                page.unmark(from..PAGE as usize);
            }
            self.backing_valid = self.backing_valid.min(size);
        }
        self.size = size;
    }

    /// The fsync: pending data to the backing file, and that to disk.
    fn persist(&mut self, datasync: bool) -> io::Result<()> {
        let file = no_file(self.file.as_ref())?;
        if self.backing_valid < self.backing_len {
            file.set_len(self.backing_valid)?;
        }
        for (&idx, page) in &self.pages {
            let start = idx * PAGE;
            let n = self.size.saturating_sub(start).min(PAGE) as usize;
            file.write_all_at(&page.data[..n], start)?;
        }
        file.set_len(self.size)?;
        if datasync {
            file.sync_data()?;
        } else {
            file.sync_all()?;
        }
        self.pages.clear();
        self.backing_len = self.size;
        self.backing_valid = self.size;
        Ok(())
    }

    /// Bytes written since the last fsync, or `None` if nothing is pending.
    fn pending(&self) -> Option<u64> {
        let changed = !self.pages.is_empty()
            || self.size != self.backing_len
            || self.backing_valid != self.backing_len;
        if self.unlinked || !changed {
            return None;
        }
        let bytes = self.pages.iter().map(|(&idx, page)| {
            page.written_below(self.size.saturating_sub(idx * PAGE).min(PAGE) as usize)
        });
        Some(bytes.sum())
    }

    fn discard(&mut self) {
        self.pages.clear();
        self.size = self.backing_len;
        self.backing_valid = self.backing_len;
    }
}

fn no_file(file: Option<&File>) -> io::Result<&File> {
    // The kernel reads, writes and fsyncs only files it has open.
    file.ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))
}

/// The `Filesystem` the session runs; each method replies with the result of
/// one on `Inner`.
struct Fs {
    inner: Arc<Inner>,
}

fn reply_entry(reply: ReplyEntry, res: Res<FileAttr>) {
    match res {
        Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn reply_empty(reply: ReplyEmpty, res: Res<()>) {
    match res {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Inner {
    fn lookup(&self, parent: u64, name: &OsStr) -> Res<FileAttr> {
        let mut table = self.table()?;
        let meta = std::fs::symlink_metadata(table.child(parent, name)?).map_err(errno)?;
        Ok(table.entry(parent, name, &meta))
    }

    fn getattr(&self, ino: u64) -> Res<FileAttr> {
        let table = self.table()?;
        let meta = table.meta(ino)?;
        Ok(table.attr(ino, &meta))
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
    ) -> Res<FileAttr> {
        let mut table = self.table()?;
        let meta = table.meta(ino)?;
        // Metadata is durable at once, like a namespace operation; only the
        // size is data.
        let path = table.path(ino);
        if let Some(mode) = mode {
            std::fs::set_permissions(path.clone()?, Permissions::from_mode(mode & 0o7777))
                .map_err(errno)?;
        }
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::lchown(path.clone()?, uid, gid).map_err(errno)?;
        }
        if atime.is_some() || mtime.is_some() {
            let time = |t: TimeOrNow| match t {
                TimeOrNow::SpecificTime(t) => t,
                TimeOrNow::Now => SystemTime::now(),
            };
            let mut times = FileTimes::new();
            if let Some(t) = atime {
                times = times.set_accessed(time(t));
            }
            if let Some(t) = mtime {
                times = times.set_modified(time(t));
            }
            if !meta.is_symlink() {
                File::open(path.clone()?)
                    .and_then(|f| f.set_times(times))
                    .map_err(errno)?;
            }
        }
        if let Some(size) = size {
            let file = table.file_state(ino, &meta)?;
            lock(&file).set_size(size);
        }
        let meta = table.meta(ino)?;
        Ok(table.attr(ino, &meta))
    }

    fn readlink(&self, ino: u64) -> Res<Vec<u8>> {
        let table = self.table()?;
        let target = std::fs::read_link(table.path(ino)?).map_err(errno)?;
        Ok(target.into_os_string().into_vec())
    }

    fn mknod(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u32,
    ) -> Res<FileAttr> {
        use nix::sys::stat::{Mode, SFlag};
        let mut table = self.table()?;
        let path = table.child(parent, name)?;
        let kind = SFlag::from_bits_truncate(mode & libc::S_IFMT);
        nix::sys::stat::mknod(
            &path,
            kind,
            Mode::from_bits_truncate(mode & 0o7777),
            libc::dev_t::from(rdev),
        )
        .map_err(|e| Errno::from_i32(e as i32))?;
        let meta = table.settle_new(&path, Some(mode), req)?;
        Ok(table.entry(parent, name, &meta))
    }

    fn mkdir(&self, req: &Request, parent: u64, name: &OsStr, mode: u32) -> Res<FileAttr> {
        let mut table = self.table()?;
        let path = table.child(parent, name)?;
        std::fs::create_dir(&path).map_err(errno)?;
        let meta = table.settle_new(&path, Some(mode), req)?;
        Ok(table.entry(parent, name, &meta))
    }

    fn symlink(&self, req: &Request, parent: u64, name: &OsStr, target: &Path) -> Res<FileAttr> {
        let mut table = self.table()?;
        let path = table.child(parent, name)?;
        std::os::unix::fs::symlink(target, &path).map_err(errno)?;
        let meta = table.settle_new(&path, None, req)?;
        Ok(table.entry(parent, name, &meta))
    }

    fn unlink(&self, parent: u64, name: &OsStr, dir: bool) -> Res<()> {
        let mut table = self.table()?;
        let path = table.child(parent, name)?;
        let meta = std::fs::symlink_metadata(&path).map_err(errno)?;
        if dir {
            std::fs::remove_dir(&path).map_err(errno)?;
        } else {
            std::fs::remove_file(&path).map_err(errno)?;
        }
        if let Some(ino) = table.known_at(parent, name, &meta) {
            table.unlinked(ino);
        }
        Ok(())
    }

    fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> Res<()> {
        if !(flags - RenameFlags::RENAME_NOREPLACE).is_empty() {
            return Err(Errno::EINVAL);
        }
        let mut table = self.table()?;
        let from = table.child(parent, name)?;
        let to = table.child(new_parent, new_name)?;
        let from_meta = std::fs::symlink_metadata(&from).map_err(errno)?;
        let to_meta = std::fs::symlink_metadata(&to).ok();
        if flags.contains(RenameFlags::RENAME_NOREPLACE) && to_meta.is_some() {
            // Atomic enough: every rename here holds the table.
            return Err(Errno::EEXIST);
        }
        std::fs::rename(&from, &to).map_err(errno)?;
        if let Some(to_meta) = to_meta.filter(|m| m.ino() != from_meta.ino()) {
            if let Some(ino) = table.known_at(new_parent, new_name, &to_meta) {
                table.unlinked(ino);
            }
        }
        if let Some(ino) = table.known_at(parent, name, &from_meta) {
            if let Some(node) = table.nodes.get_mut(&ino) {
                node.parent = new_parent;
                node.name = new_name.to_owned();
            }
        }
        Ok(())
    }

    /// Opens the backing file for the kernel's handle, read-write if we may,
    /// since even a read-only handle may fsync another handle's writes.
    fn open(&self, ino: u64, truncate: bool) -> Res<()> {
        let mut table = self.table()?;
        let path = table.path(ino)?;
        let meta = table.meta(ino)?;
        let file = table.file_state(ino, &meta)?;
        let mut file = lock(&file);
        if file.file.is_none() || !file.writable {
            match OpenOptions::new().read(true).write(true).open(&path) {
                Ok(f) => (file.file, file.writable) = (Some(f), true),
                Err(_) if file.file.is_some() => {}
                Err(_) => file.file = Some(File::open(&path).map_err(errno)?),
            }
        }
        file.opens += 1;
        if truncate {
            file.set_size(0);
        }
        Ok(())
    }

    fn create(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Res<FileAttr> {
        let mut table = self.table()?;
        let path = table.child(parent, name)?;
        let created = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode & 0o7777)
            .open(&path);
        let (backing, meta) = match created {
            Ok(f) => (f, table.settle_new(&path, Some(mode), req)?),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && flags & libc::O_EXCL == 0 => {
                // Lost a race with another creator: an open, whose O_TRUNC
                // is ours to do (volatile, like any size change).
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(errno)?;
                let meta = f.metadata().map_err(errno)?;
                (f, meta)
            }
            Err(e) => return Err(errno(e)),
        };
        let attr = table.entry(parent, name, &meta);
        let file = table.file_state(attr.ino.0, &meta)?;
        let mut file = lock(&file);
        if file.file.is_none() || !file.writable {
            (file.file, file.writable) = (Some(backing), true);
        }
        file.opens += 1;
        if flags & libc::O_TRUNC != 0 {
            file.set_size(0);
        }
        drop(file);
        Ok(table.attr(attr.ino.0, &meta))
    }

    fn release(&self, ino: u64) {
        // Bookkeeping only, even on a dead mount: nothing here persists.
        let mut table = lock(&self.table);
        let Some(node) = table.nodes.get(&ino) else {
            return;
        };
        if let Some(file) = &node.file {
            let mut file = lock(file);
            file.opens = file.opens.saturating_sub(1);
            if file.opens == 0 {
                file.file = None;
                file.writable = false;
                if file.unlinked {
                    file.discard();
                }
            }
        }
        table.maybe_remove(ino);
    }

    fn forget(&self, ino: u64, n: u64) {
        let mut table = lock(&self.table);
        if let Some(node) = table.nodes.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(n);
        }
        table.maybe_remove(ino);
    }

    fn fsync(&self, ino: u64, datasync: bool) -> Res<()> {
        let file = self.file(ino)?;
        let mut file = lock(&file);
        // Checked under the file's lock: the cut counts pending data under
        // it too, so an fsync is either before the cut or refused.
        if self.is_dead() {
            return Err(Errno::EIO);
        }
        file.persist(datasync).map_err(errno)
    }

    fn fallocate(&self, ino: u64, offset: u64, length: u64, mode: i32) -> Res<()> {
        let file = self.file(ino)?;
        let mut file = lock(&file);
        match mode {
            0 => {
                let end = offset + length;
                if end > file.size {
                    file.set_size(end);
                }
                Ok(())
            }
            // Reserving space is no business of a simulation.
            libc::FALLOC_FL_KEEP_SIZE => Ok(()),
            _ => Err(Errno::EOPNOTSUPP),
        }
    }

    fn opendir(&self, ino: u64) -> Res<u64> {
        let mut table = self.table()?;
        let path = table.path(ino)?;
        let parent = table.nodes.get(&ino).map_or(ROOT, |n| n.parent);
        let mut entries = vec![
            (ino, FileType::Directory, OsString::from(".")),
            (parent, FileType::Directory, OsString::from("..")),
        ];
        for entry in std::fs::read_dir(&path).map_err(errno)? {
            let entry = entry.map_err(errno)?;
            let kind = entry
                .file_type()
                .ok()
                .and_then(FileType::from_std)
                .unwrap_or(FileType::RegularFile);
            let name = entry.file_name();
            let child = table.node_at(ino, &name, entry.ino());
            entries.push((child, kind, name));
        }
        let fh = table.next_fh;
        table.next_fh += 1;
        table.dirs.insert(fh, entries);
        Ok(fh)
    }

    fn statfs(&self) -> Res<nix::sys::statvfs::Statvfs> {
        let backing = self.table()?.backing.clone();
        nix::sys::statvfs::statvfs(&backing).map_err(|e| Errno::from_i32(e as i32))
    }
}

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(reply, self.inner.lookup(parent.0, name));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.inner.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.inner.getattr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self
            .inner
            .setattr(ino.0, mode, uid, gid, size, atime, mtime)
        {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.inner.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        reply_entry(
            reply,
            self.inner.mknod(req, parent.0, name, mode & !umask, rdev),
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        reply_entry(reply, self.inner.mkdir(req, parent.0, name, mode & !umask));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.inner.unlink(parent.0, name, false));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.inner.unlink(parent.0, name, true));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        reply_entry(reply, self.inner.symlink(req, parent.0, link_name, target));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            reply,
            self.inner
                .rename(parent.0, name, newparent.0, newname, flags),
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.inner.open(ino.0, flags.0 & libc::O_TRUNC != 0) {
            // No FOPEN_KEEP_CACHE: each open starts with an empty page cache.
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let res = self
            .inner
            .file(ino.0)
            .and_then(|f| lock(&f).read(offset, size).map_err(errno));
        match res {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let res = self
            .inner
            .file(ino.0)
            .and_then(|f| lock(&f).write(offset, data).map_err(errno));
        match res {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() is not fsync: nothing to do.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.inner.release(ino.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.inner.fsync(ino.0, datasync));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.inner.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let table = lock(&self.inner.table);
        let Some(entries) = table.dirs.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let from = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(from) {
            // The offset is that of the next entry.
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.inner.table).dirs.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Namespace operations were durable when they returned.
        let res = if self.inner.is_dead() {
            Err(Errno::EIO)
        } else {
            Ok(())
        };
        reply_empty(reply, res);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.inner.statfs() {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                s.name_max() as u32,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.inner.create(req, parent.0, name, mode & !umask, flags) {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.inner.fallocate(ino.0, offset, length, mode));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(backing: &[u8]) -> (tempfile::NamedTempFile, FileState) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, backing).unwrap();
        let file = f.reopen().unwrap();
        let len = backing.len() as u64;
        let st = FileState {
            file: Some(file),
            writable: true,
            opens: 1,
            unlinked: false,
            backing_len: len,
            backing_valid: len,
            size: len,
            pages: BTreeMap::new(),
        };
        (f, st)
    }

    #[test]
    fn pages_overlay_the_backing_file_until_persisted() {
        let old: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let (f, mut st) = state(&old);
        st.write(4090, b"0123456789").unwrap();
        st.write(12_000, b"tail").unwrap();
        let mut want = old.clone();
        want[4090..4100].copy_from_slice(b"0123456789");
        want.resize(12_000, 0);
        want.extend_from_slice(b"tail");
        assert_eq!(st.read(0, 20_000).unwrap(), want);
        assert_eq!(st.pending(), Some(14));
        assert_eq!(std::fs::read(f.path()).unwrap(), old, "not persisted yet");
        st.persist(true).unwrap();
        assert_eq!(std::fs::read(f.path()).unwrap(), want);
        assert_eq!(st.pending(), None);
    }

    #[test]
    fn truncation_then_extension_reads_zeros_not_old_bytes() {
        let (f, mut st) = state(&[7; 9000]);
        st.write(100, b"x").unwrap();
        st.set_size(50);
        st.set_size(9000);
        let mut want = vec![7; 50];
        want.resize(9000, 0);
        assert_eq!(st.read(0, 9000).unwrap(), want);
        assert_eq!(st.pending(), Some(0), "a size change is pending too");
        st.persist(false).unwrap();
        assert_eq!(std::fs::read(f.path()).unwrap(), want);
        st.write(8999, b"y").unwrap();
        st.discard();
        assert_eq!(st.read(0, 9000).unwrap(), want);
    }
}
