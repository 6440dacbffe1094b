//! The power-cut file system (`pufa_tests::powercut`) keeps what was fsynced
//! and nothing else:
//!
//! 1. a file keeps its fsynced content and size; later writes, appends and
//!    truncations that were only closed are gone, though this process read
//!    them back (through the page cache) just before the cut;
//! 2. the same for a child process: `dd conv=fsync`/`fdatasync` survives,
//!    a plain write does not;
//! 3. renaming an fsynced temp file over another survives; a created but
//!    never fsynced file comes back empty, even if renamed meanwhile;
//! 4. sled works on it (locks included), keeps what was fsynced, and loses
//!    what its `flush()` alone "made durable" when its process is killed;
//! 5. many threads writing, truncating and fsyncing at once each keep
//!    exactly their last fsynced state;
//! 6. a handle still open at the cut gets `EIO` and cannot persist anything.
//!
//! Needs FUSE (root, or fusermount3). Elsewhere each test says loudly that
//! it did not run; under CI (`CI=true`) it fails instead.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};

use pufa_tests::powercut::{Dropped, PowerCutFs};
use rand::{Rng, SeedableRng};

/// Set in the child process of `sled_loses_what_flush_alone_wrote`: the
/// sled directory that `sled_writer_child` writes to.
const SLED_CHILD_DIR: &str = "PUFA_POWERCUT_SLED_DIR";
/// Keys the sled child fsyncs, then keys it only flushes.
const SLED_SYNCED: u32 = 100;
const SLED_FLUSHED: u32 = 100;

#[test]
fn a_file_keeps_only_its_fsynced_content_and_size() {
    let Some(mut fs) = PowerCutFs::mount() else {
        return;
    };
    // statfs is the backing file system's (the server checks free space),
    // and the backing dir is a temp dir.
    let statvfs = |p: &Path| nix::sys::statvfs::statvfs(p).unwrap().blocks();
    assert_eq!(statvfs(fs.path()), statvfs(&std::env::temp_dir()));
    let path = fs.path().join("f");
    let mut f = File::create(&path).unwrap();
    f.write_all(b"hello, durable world").unwrap();
    f.sync_all().unwrap();
    assert_eq!(fs.pending(), Dropped::default());
    f.write_all_at(b"HELLO", 0).unwrap();
    f.write_all_at(b" and a volatile tail", 20).unwrap();
    drop(f);
    // Read here, the page cache holds the volatile bytes: the cut must not
    // let them through.
    assert_eq!(
        fs::read(&path).unwrap(),
        b"HELLO, durable world and a volatile tail"
    );

    let dropped = fs.cut();
    assert_eq!(
        dropped,
        Dropped {
            bytes: 25,
            files: 1
        }
    );
    assert_eq!(fs::read(&path).unwrap(), b"hello, durable world");
    assert_eq!(fs::metadata(&path).unwrap().len(), 20);

    // A truncation is data too, and fdatasync persists it.
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(5).unwrap();
    drop(f);
    assert_eq!(fs::read(&path).unwrap(), b"hello");
    assert_eq!(fs.cut(), Dropped { bytes: 0, files: 1 });
    assert_eq!(fs::read(&path).unwrap(), b"hello, durable world");
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(5).unwrap();
    f.sync_data().unwrap();
    drop(f);
    assert_eq!(fs.cut(), Dropped::default());
    assert_eq!(fs::read(&path).unwrap(), b"hello");
}

#[test]
fn a_child_process_keeps_only_what_it_fsynced() {
    let Some(mut fs) = PowerCutFs::mount() else {
        return;
    };
    let sh = |script: &str| {
        let status = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(fs.path())
            .status()
            .unwrap();
        assert!(status.success(), "{script}: {status}");
    };
    sh("printf 'kept by fsync' | dd of=fsync.txt conv=fsync status=none");
    sh("printf 'kept by fdatasync' | dd of=fdatasync.txt conv=fdatasync status=none");
    sh("printf 'kept by O_DSYNC' | dd of=dsync.txt oflag=dsync status=none");
    sh("printf 'lost' > plain.txt");
    sh("printf 'lost too' | dd of=dd.txt status=none");
    sh("printf 'LOST' | dd of=fsync.txt conv=notrunc status=none");
    assert_eq!(
        fs::read(fs.path().join("fsync.txt")).unwrap(),
        b"LOST by fsync"
    );

    let dropped = fs.cut();
    let read = |name: &str| fs::read(fs.path().join(name)).unwrap();
    assert_eq!(read("fsync.txt"), b"kept by fsync");
    assert_eq!(read("fdatasync.txt"), b"kept by fdatasync");
    assert_eq!(read("dsync.txt"), b"kept by O_DSYNC");
    assert_eq!(read("plain.txt"), b"", "created, never fsynced");
    assert_eq!(read("dd.txt"), b"");
    assert_eq!(
        dropped,
        Dropped {
            bytes: 16,
            files: 3
        }
    );
}

#[test]
fn fsynced_renames_survive_and_new_files_come_back_empty() {
    let Some(mut fs) = PowerCutFs::mount() else {
        return;
    };
    let dir = fs.path().to_path_buf();
    write_synced(&dir.join("target"), b"version 1");
    write_synced(&dir.join("target.tmp"), b"version 2");
    fs::rename(dir.join("target.tmp"), dir.join("target")).unwrap();
    fs::write(dir.join("never-synced"), b"data").unwrap();
    // Pending data belongs to the file, not to its name.
    fs::create_dir(dir.join("sub")).unwrap();
    fs::write(dir.join("moved"), b"moved along").unwrap();
    fs::rename(dir.join("moved"), dir.join("sub/moved")).unwrap();
    assert_eq!(fs::read(dir.join("sub/moved")).unwrap(), b"moved along");
    // And goes with it.
    fs::write(dir.join("deleted"), b"gone anyway").unwrap();
    fs::remove_file(dir.join("deleted")).unwrap();

    let dropped = fs.cut();
    assert_eq!(fs::read(dir.join("target")).unwrap(), b"version 2");
    assert!(!dir.join("target.tmp").exists());
    assert_eq!(fs::read(dir.join("never-synced")).unwrap(), b"");
    assert_eq!(fs::read(dir.join("sub/moved")).unwrap(), b"");
    assert!(!dir.join("moved").exists());
    assert!(!dir.join("deleted").exists());
    assert_eq!(
        dropped,
        Dropped {
            bytes: 15,
            files: 2
        }
    );
}

#[test]
fn sled_keeps_what_was_fsynced() {
    let Some(mut fs) = PowerCutFs::mount() else {
        return;
    };
    let dir = fs.path().join("db");
    {
        let db = open_sled(&dir).unwrap();
        let second = open_sled(&dir).map(drop).unwrap_err();
        assert!(
            second.to_string().contains("could not acquire lock"),
            "sled's flock must hold on the mount: {second}"
        );
        insert(&db, 0..100);
        db.flush().unwrap();
        assert!(
            fs.pending().bytes > 0,
            "sled's flush() only calls sync_file_range, so its data is still pending"
        );
    }
    // A clean drop fsyncs (sled's Log::drop calls sync_all); no cut yet, so
    // this shows the file system serves sled.
    let db = open_sled(&dir).unwrap();
    assert_eq!(present(&db, 0..100), 100);

    insert(&db, 100..200);
    db.flush().unwrap();
    // What a store must do after sled's flush() for an acknowledgement to
    // survive a power cut. sled never fsyncs `conf` either (written once, at
    // creation); without this it comes back empty, which sled 0.34.7 takes
    // for a missing one and writes again.
    for name in ["db", "conf"] {
        File::open(dir.join(name)).unwrap().sync_all().unwrap();
    }
    assert_eq!(fs.pending(), Dropped::default());
    drop(db);
    let dropped = fs.cut();
    eprintln!("sled, fsynced then dropped: the cut dropped {dropped:?}");
    let db = open_sled(&dir).unwrap();
    assert_eq!(present(&db, 0..200), 200);
}

#[test]
fn sled_loses_what_flush_alone_wrote() {
    let Some(mut fs) = PowerCutFs::mount() else {
        return;
    };
    let dir = fs.path().join("db");
    // A process of its own, so that it can be SIGKILLed: dropping sled in
    // this process would fsync.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "sled_writer_child", "--nocapture"])
        .env(SLED_CHILD_DIR, &dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut said = Vec::new();
    for line in lines {
        let line = line.unwrap();
        if line == "FLUSHED" {
            break;
        }
        said.push(line);
    }
    assert!(
        said.iter().any(|l| l == "SYNCED"),
        "the child died early: {said:?}"
    );
    let pending = fs.pending();
    child.kill().unwrap();
    child.wait().unwrap();

    let dropped = fs.cut();
    assert!(
        dropped.bytes > 0,
        "flushed, unsynced sled data must be pending at the cut: {dropped:?} (before the kill: {pending:?})"
    );
    match open_sled(&dir) {
        Ok(db) => {
            let flushed = SLED_SYNCED..SLED_SYNCED + SLED_FLUSHED;
            eprintln!(
                "sled after the cut (dropped {dropped:?}): opens, {} of {SLED_SYNCED} fsynced keys \
                 and {} of {SLED_FLUSHED} only flushed keys there",
                present(&db, 0..SLED_SYNCED),
                present(&db, flushed),
            );
            assert_eq!(present(&db, 0..SLED_SYNCED), SLED_SYNCED as usize);
        }
        Err(e) => eprintln!("sled after the cut (dropped {dropped:?}): refuses to open: {e}"),
    }
}

/// Not a test: the body of the child process of
/// `sled_loses_what_flush_alone_wrote`, which SIGKILLs it.
#[test]
fn sled_writer_child() {
    let Some(dir) = std::env::var_os(SLED_CHILD_DIR) else {
        return;
    };
    let dir = Path::new(&dir);
    let db = open_sled(dir).unwrap();
    insert(&db, 0..SLED_SYNCED);
    db.flush().unwrap();
    File::open(dir.join("db")).unwrap().sync_all().unwrap();
    println!("SYNCED");
    insert(&db, SLED_SYNCED..SLED_SYNCED + SLED_FLUSHED);
    db.flush().unwrap();
    println!("FLUSHED");
    std::io::stdout().flush().unwrap();
    // Until killed: the parent never writes.
    let _ = std::io::stdin().read_line(&mut String::new());
    unreachable!("killed before its stdin closes");
}

#[test]
fn concurrent_writers_each_keep_their_last_fsync() {
    let Some(mut fs) = PowerCutFs::mount() else {
        return;
    };
    const THREADS: u64 = 4;
    const OPS: usize = 300;
    const SPAN: usize = 40_000;
    let models = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|seed| {
                let path = fs.path().join(format!("file-{seed}"));
                s.spawn(move || {
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
                    let mut f = open_rw(&path);
                    let (mut now, mut durable) = (Vec::new(), Vec::new());
                    for _ in 0..OPS {
                        match rng.gen_range(0..10) {
                            0..=5 => {
                                let at = rng.gen_range(0..SPAN);
                                let len = rng.gen_range(1..10_000);
                                let byte: u8 = rng.gen();
                                f.write_all_at(&vec![byte; len], at as u64).unwrap();
                                if now.len() < at + len {
                                    now.resize(at + len, 0);
                                }
                                now[at..at + len].fill(byte);
                            }
                            6 => {
                                let len = rng.gen_range(0..SPAN);
                                f.set_len(len as u64).unwrap();
                                now.resize(len, 0);
                            }
                            7 => {
                                f.sync_data().unwrap();
                                durable.clone_from(&now);
                            }
                            8 => f = open_rw(&path),
                            _ => assert_eq!(fs::read(&path).unwrap(), now),
                        }
                    }
                    assert_eq!(fs::read(&path).unwrap(), now);
                    (path, durable)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap())
            .collect::<Vec<_>>()
    });
    let dropped = fs.cut();
    eprintln!("concurrent writers: the cut dropped {dropped:?}");
    for (path, durable) in models {
        assert_eq!(fs::read(&path).unwrap(), durable, "{path:?}");
    }
}

#[test]
fn a_handle_held_across_the_cut_gets_eio() {
    let Some(mut fs) = PowerCutFs::mount() else {
        return;
    };
    let path = fs.path().join("held");
    let mut held = File::create(&path).unwrap();
    held.write_all(b"abc").unwrap();
    // The mount is busy, so the cut detaches it (and says so).
    assert_eq!(fs.cut(), Dropped { bytes: 3, files: 1 });
    assert_eq!(
        held.write_all(b"d").unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    assert_eq!(held.sync_all().unwrap_err().raw_os_error(), Some(libc::EIO));
    assert_eq!(fs::read(&path).unwrap(), b"");
    drop(held);
    assert_eq!(fs.cut(), Dropped::default());
    assert_eq!(fs::read(&path).unwrap(), b"");
}

fn write_synced(path: &Path, data: &[u8]) {
    let mut f = File::create(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_data().unwrap();
}

fn open_rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap()
}

/// Without the periodic flusher, whose `sync_all` every 500 ms would make
/// what is pending depend on timing.
fn open_sled(dir: &Path) -> sled::Result<sled::Db> {
    sled::Config::new()
        .path(dir)
        .cache_capacity(1 << 20)
        .flush_every_ms(None)
        .open()
}

fn insert(db: &sled::Db, keys: std::ops::Range<u32>) {
    for k in keys {
        db.insert(k.to_be_bytes(), format!("value {k}").as_bytes())
            .unwrap();
    }
}

fn present(db: &sled::Db, keys: std::ops::Range<u32>) -> usize {
    keys.filter(|k| db.get(k.to_be_bytes()).unwrap().is_some())
        .count()
}
