//! Power loss: an acknowledged write survives a power cut, not only a
//! SIGKILL. A SIGKILL leaves the kernel's page cache in place, so the
//! torture test cannot see a missing fsync; these tests can.
//!
//! The real `pufa-server` runs with its data dir on the power-cut file
//! system ([`pufa_tests::powercut`]), which keeps every byte not yet
//! fsynced in memory and drops it at each cut. SDK devices (real
//! `pufa-client` stores, `HttpTransport` over loopback) record offline and
//! sync as in the torture test, while the test cuts the power again and
//! again: it waits for a push on the wire and for the server to have
//! written bytes it has not fsynced yet (within [`AIM_MS_MAX`]), cuts the
//! devices off, SIGKILLs the server, drops what it did not fsync, and
//! restarts it. Right after each restart, before any device reaches it:
//! - every mutation a device saw acknowledged (`applied` or `duplicate`) is
//!   there: each field holds the acknowledged write with the greatest HLC
//!   (or a later write whose answer the cut swallowed);
//! - no record is there that no device sent.
//!
//! At the end, after every device's final sync, the torture test's checks
//! hold (nothing lost, nothing applied twice, each device holds exactly its
//! scope with a matching checksum), and the totals count the live records.
//!
//! [`without_fsync_a_power_cut_loses_acknowledged_pushes`] runs the same
//! server with `--unsafe-no-fsync` (sled's flush alone, as before the
//! fix) and must see acknowledged writes lost: the test can fail.
//! [`a_device_keeps_every_acknowledged_edit_through_a_power_cut`] does the
//! same for the SDK's local store.
//!
//! Needs FUSE (`/dev/fuse`, `fuse3`); elsewhere the tests say loudly that
//! they did not run, and under CI (`CI=true`) they fail instead. Longer
//! runs: `PUFA_POWER_CUTS=30 PUFA_POWER_DEVICES=20 cargo test --release -p
//! pufa-tests --test power_loss`.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pufa_client::{Client, ClientConfig, Filter, HttpTransport, RetryPolicy};
use pufa_core::wire::{PullEntry, TokenIssued, TotalsResponse};
use pufa_tests::fault::{Ledger, Recorded, Wire};
use pufa_tests::powercut::PowerCutFs;
use pufa_tests::{api, env_or, last_writer_wins_differences, pull_all, Difference, ServerProcess};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::Notify;
use uuid::Uuid;

const DEVICES_DEFAULT: u64 = 8;
const CUTS_DEFAULT: u64 = 6;
const SEED_DEFAULT: u64 = 2023;
/// Streets in the org tree; a street's devices edit each other's records.
const STREETS: usize = 4;
/// Syncs that succeed between two cuts, at most (at least one).
const SYNCS_BETWEEN_CUTS_MAX: usize = 10;
/// How long a cut waits for the server to hold unsynced bytes before it
/// cuts anyway (milliseconds): aiming, not a correctness condition.
const AIM_MS_MAX: u64 = 2_000;
/// Edits the SDK device makes before its battery dies.
const DEVICE_EDITS: usize = 60;
/// Syncs a device tries at the end before the test gives up.
const FINAL_SYNC_ATTEMPTS: usize = 50;

/// A round of local work: a few creates or edits, deletes and restores.
const WORK: pufa_tests::LocalWork = pufa_tests::LocalWork {
    ops_max: 6,
    creates_max: 40,
    create_percent: 45,
    title: "宪法宣传周",
};

struct Device {
    token: TokenIssued,
    street: usize,
    client: Client,
    _dir: tempfile::TempDir,
}

/// What the checks right after one cut found.
#[derive(Debug, Default)]
struct AfterCut {
    acked: usize,
    differences: Vec<Difference>,
    phantoms: Vec<Uuid>,
    dropped_bytes: u64,
    /// The server would not open the store the cut left.
    refused: bool,
}

/// The power-cut run with the server's `flags`; stops early after the
/// first cut that finds a loss when `stop_at_loss`.
struct Run {
    server: ServerProcess,
    admin: String,
    devices: Vec<Arc<Device>>,
    ledger: Arc<Ledger>,
    wire: Arc<Wire>,
    fs: PowerCutFs,
}

async fn org_and_devices(fs: PowerCutFs, flags: &[&str], n: usize, seed: u64) -> Run {
    let data: PathBuf = fs.path().join("data");
    let (server, _) = ServerProcess::start(
        data.clone(),
        flags.iter().map(|f| f.to_string()).collect(),
        None,
    )
    .await;
    let base = server.base();
    let admin = server.admin_token();
    pufa_tests::import_street_tree(&base, &admin, STREETS).await;
    let ledger = Arc::new(Ledger::default());
    let wire = Arc::new(Wire::default());
    let mut devices = Vec::new();
    for i in 0..n {
        let street = i % STREETS + 1;
        let token = pufa_tests::field_token(&base, &admin, street, &format!("power {i}")).await;
        let dir = tempfile::tempdir().expect("a device dir");
        let mut config = ClientConfig::new(dir.path(), token.device_id, token.token.clone());
        config.retry = RetryPolicy {
            attempts: 2,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
            seed: seed ^ i as u64,
        };
        let transport = Arc::new(Recorded {
            http: HttpTransport::new(&base).expect("a transport"),
            ledger: ledger.clone(),
            wire: wire.clone(),
        });
        let client = Client::open(config, transport).expect("the device's store");
        devices.push(Arc::new(Device {
            token,
            street,
            client,
            _dir: dir,
        }));
    }
    Run {
        server,
        admin,
        devices,
        ledger,
        wire,
        fs,
    }
}

impl Run {
    /// Cuts the devices off, SIGKILLs the server (with `pushes` on the
    /// wire), drops what it did not fsync, restarts it and compares what it
    /// holds with what the devices were told; the devices stay cut off.
    async fn cut(&mut self, pushes: usize) -> AfterCut {
        self.wire.wait_for_pushes(pushes).await;
        // Aim at the window a missing fsync would lose: written, not synced.
        let aim = Instant::now();
        while self.fs.pending().bytes == 0 && aim.elapsed() < Duration::from_millis(AIM_MS_MAX) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.wire.cut_off(true);
        self.server.kill();
        let dropped = self.fs.cut();
        let mut after = AfterCut {
            dropped_bytes: dropped.bytes,
            ..AfterCut::default()
        };
        if self.server.try_restart().await.is_none() {
            after.refused = true;
            return after;
        }
        let on_server = pull_all(&self.server.base(), &self.admin).await;
        let (acked, unanswered) = self.ledger.acked_and_unanswered();
        after.acked = acked.len();
        after.differences = last_writer_wins_differences(
            acked.iter().map(|(m, h)| (m, *h)),
            unanswered.iter(),
            &on_server,
        );
        let sent: HashSet<Uuid> = self
            .ledger
            .sent
            .lock()
            .expect("ledger")
            .values()
            .map(|m| m.record_id)
            .collect();
        after.phantoms = on_server
            .keys()
            .filter(|id| !sent.contains(id))
            .copied()
            .collect();
        after
    }
}

/// Devices working and syncing until `done`, each counting its good syncs.
fn start_devices(
    run: &Run,
    seed: u64,
    done: &Arc<AtomicBool>,
    synced: &Arc<AtomicUsize>,
    progress: &Arc<Notify>,
) -> Vec<tokio::task::JoinHandle<Vec<Uuid>>> {
    let mut tasks = Vec::new();
    for (i, d) in run.devices.iter().enumerate() {
        let (d, done, synced, progress) =
            (d.clone(), done.clone(), synced.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng =
                rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1000) + i as u64);
            let mut created = Vec::new();
            while !done.load(Ordering::SeqCst) {
                (rng, created) = pufa_tests::random_local_round_off_thread(
                    &d.client,
                    d.street,
                    WORK,
                    rng,
                    std::mem::take(&mut created),
                )
                .await;
                match d.client.sync().await {
                    Ok(report) => {
                        assert!(report.rejected.is_empty(), "device {i}: {report:?}");
                        synced.fetch_add(1, Ordering::SeqCst);
                        progress.notify_one();
                    }
                    // Cut off, or the server down: the outbox waits.
                    Err(pufa_client::Error::Unreachable(_)) => {
                        progress.notify_one();
                        tokio::task::yield_now().await;
                    }
                    Err(e) => panic!("device {i}: sync failed: {e}"),
                }
            }
            created
        }));
    }
    tasks
}

/// Waits for `n` more good syncs.
async fn syncs(synced: &AtomicUsize, progress: &Notify, n: usize) {
    let until = synced.load(Ordering::SeqCst) + n;
    while synced.load(Ordering::SeqCst) < until {
        progress.notified().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_pushes_survive_power_cuts() {
    let Some(fs) = PowerCutFs::mount() else {
        return;
    };
    let devices_n = env_or("PUFA_POWER_DEVICES", DEVICES_DEFAULT) as usize;
    let cuts = env_or("PUFA_POWER_CUTS", CUTS_DEFAULT) as usize;
    let seed = env_or("PUFA_POWER_SEED", SEED_DEFAULT);
    let started = Instant::now();
    let mut run = org_and_devices(fs, &[], devices_n, seed).await;
    let done = Arc::new(AtomicBool::new(false));
    let synced = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(Notify::new());
    let tasks = start_devices(&run, seed, &done, &synced, &progress);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x0070_6f77_6572);
    let mut dropped = 0;
    let mut acked_at_cuts = 0;
    for k in 0..cuts {
        syncs(
            &synced,
            &progress,
            rng.gen_range(1..=SYNCS_BETWEEN_CUTS_MAX),
        )
        .await;
        let after = run.cut(1).await;
        assert!(
            !after.refused,
            "cut {k}: the server refused the store the cut left"
        );
        assert!(
            after.differences.is_empty(),
            "cut {k}: {} acknowledged writes lost or wrong out of {} acknowledged; first: {:?}",
            after.differences.len(),
            after.acked,
            &after.differences[..after.differences.len().min(5)]
        );
        assert!(
            after.phantoms.is_empty(),
            "cut {k}: phantom records {:?}",
            after.phantoms
        );
        dropped += after.dropped_bytes;
        acked_at_cuts = after.acked;
        run.wire.cut_off(false);
    }
    done.store(true, Ordering::SeqCst);
    let mut created = HashSet::new();
    for t in tasks {
        for id in t.await.expect("a device") {
            assert!(created.insert(id), "a record id made twice");
        }
    }

    let base = run.server.base();
    let clients: Vec<_> = run.devices.iter().map(|d| &d.client).collect();
    pufa_tests::settle_devices(&clients, FINAL_SYNC_ATTEMPTS).await;
    let on_server = pull_all(&base, &run.admin).await;
    let sent = run.ledger.sent.lock().expect("ledger").clone();
    let answers = run.ledger.answers.lock().expect("ledger").clone();
    pufa_tests::assert_answers_account_for(&created, &sent, &answers, &on_server);
    for (i, d) in run.devices.iter().enumerate() {
        let theirs = pull_all(&base, &d.token.token).await;
        pufa_tests::assert_device_holds_its_scope(i, &d.client, d.street, &theirs);
    }
    assert_totals_count(&base, &run.admin, &on_server).await;
    eprintln!(
        "power loss: {devices_n} devices, {cuts} power cuts ({dropped} unsynced bytes dropped), {} acknowledged at the last cut, {} mutations acknowledged in all, 0 lost; {} records; {:?}",
        acked_at_cuts,
        answers.len(),
        created.len(),
        started.elapsed()
    );
}

/// The district's lecture totals for 2020 count exactly the live lectures.
async fn assert_totals_count(base: &str, admin: &str, on_server: &BTreeMap<Uuid, PullEntry>) {
    let (st, v) = api(
        base,
        reqwest::Method::GET,
        "/v1/totals?from=2020-01-01&to=2020-12-31",
        admin,
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let totals: TotalsResponse = serde_json::from_value(v).expect("totals");
    let live: Vec<_> = on_server
        .values()
        .filter_map(|e| match e {
            PullEntry::Record(r) if !r.deleted && r.kind == "lecture" => Some(r),
            _ => None,
        })
        .collect();
    let attendees: i64 = live
        .iter()
        .map(|r| r.fields["attendees"].as_i64().expect("attendees"))
        .sum();
    assert_eq!(totals.lectures.count, live.len() as u64, "lectures counted");
    assert_eq!(
        totals.lectures.attendees, attendees as u64,
        "attendees counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fsync_a_power_cut_loses_acknowledged_pushes() {
    let Some(fs) = PowerCutFs::mount() else {
        return;
    };
    let seed = env_or("PUFA_POWER_SEED", SEED_DEFAULT);
    let mut run = org_and_devices(fs, &["--unsafe-no-fsync"], 4, seed).await;
    let done = Arc::new(AtomicBool::new(false));
    let synced = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(Notify::new());
    let tasks = start_devices(&run, seed, &done, &synced, &progress);
    let mut lost = None;
    for _ in 0..CUTS_DEFAULT {
        syncs(&synced, &progress, SYNCS_BETWEEN_CUTS_MAX).await;
        let after = run.cut(1).await;
        if after.refused || !after.differences.is_empty() {
            lost = Some(after);
            break;
        }
        run.wire.cut_off(false);
    }
    done.store(true, Ordering::SeqCst);
    run.wire.cut_off(true);
    for t in tasks {
        t.await.expect("a device");
    }
    let after = lost.expect("sled's flush alone (sync_file_range) kept every acknowledged write through every power cut: the file system no longer drops unsynced data");
    let missing = after
        .differences
        .iter()
        .filter(|d| matches!(d, Difference::Missing(_)))
        .count();
    eprintln!(
        "power loss without fsync: {} acknowledged, {missing} records missing and {} fields wrong after one cut ({} unsynced bytes dropped){}",
        after.acked,
        after.differences.len() - missing,
        after.dropped_bytes,
        if after.refused { "; the server refused the store" } else { "" }
    );
}

#[test]
fn a_device_keeps_every_acknowledged_edit_through_a_power_cut() {
    use std::io::BufRead as _;
    let Some(mut fs) = PowerCutFs::mount() else {
        return;
    };
    let dir = fs.path().join("device");
    let mut device = std::process::Command::new(env!("CARGO_BIN_EXE_pufa-power-device"))
        .arg(&dir)
        .arg(SEED_DEFAULT.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the device");
    // Every line is an edit the device was told is saved: the last value
    // of each record's attendees must survive.
    let mut saved: BTreeMap<Uuid, i64> = BTreeMap::new();
    let lines = std::io::BufReader::new(device.stdout.take().expect("piped"));
    for line in lines.lines().take(DEVICE_EDITS) {
        let line = line.expect("a line from the device");
        let (id, attendees) = line.split_once(' ').expect("<id> <attendees>");
        saved.insert(
            id.parse().expect("an id"),
            attendees.parse().expect("a number"),
        );
    }
    // The battery dies while the device goes on recording.
    device.kill().expect("SIGKILL");
    device.wait().expect("reap");
    let dropped = fs.cut();

    let client = Client::open(
        ClientConfig::new(
            &dir,
            Uuid::from_u64_pair(SEED_DEFAULT, SEED_DEFAULT),
            "pufa_offline",
        ),
        Arc::new(HttpTransport::new("http://127.0.0.1:9").expect("a transport")),
    )
    .expect("the device's store after the cut");
    let kept: BTreeMap<Uuid, Value> = client
        .list(&Filter::default())
        .expect("list after the cut")
        .into_iter()
        .map(|r| (r.id, r.fields["attendees"].clone()))
        .collect();
    let lost: Vec<_> = saved
        .iter()
        .filter(|(id, a)| kept.get(id) != Some(&json!(a)))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} records lost or with an older edit after the cut ({} unsynced bytes dropped); first: {:?}",
        lost.len(),
        saved.len(),
        dropped.bytes,
        &lost[..lost.len().min(5)]
    );
    eprintln!(
        "power loss on the device: {DEVICE_EDITS} edits acknowledged, all {} records kept ({} unsynced bytes dropped)",
        saved.len(),
        dropped.bytes
    );
}
