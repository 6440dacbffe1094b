//! Multi-instance: three `pufa-server` processes on loopback share one
//! PostgreSQL database (a throwaway cluster of the test's own,
//! `pufa_tests::pg`). Fifty SDK devices (real `pufa-client` stores) make
//! offline edits — creates, edits, deletes, restores, concurrent edits of
//! their street's records, so that conflicts happen — and sync, every
//! request through a randomly chosen live instance; when an instance does
//! not answer or answers 503, the request goes to another one at once
//! ("devices retry elsewhere"), and when none answers, the SDK backs off
//! and retries as usual. A few pushes go to two instances at once, so
//! that one applies and the other must answer `duplicate`. A reader (a
//! coordinator of the whole district) pages the change feed
//! (`since`/`next`, random page sizes) through random instances all
//! along, keeping the latest state per record.
//!
//! Meanwhile, timed by progress, not by clocks (after each fault the test
//! waits for a random number of device syncs to succeed, then for pushes
//! to be on the wire): an instance is SIGKILLed while pushes to it are on
//! the wire; while it is down, the PostgreSQL server is crashed and
//! recovered (`PgCluster::restart`: `-m immediate`, then start) while
//! pushes are on the wire; then the instance is started again on its port
//! and data dir. Further kills (`PUFA_MULTI_KILLS` in all, default 4)
//! take a random instance down the same way and start it again.
//!
//! At the end, after every device has synced twice (until its outbox is
//! empty, then once more to see everyone's), through random instances:
//! - exactly one instance (the one that made the bootstrap admin on the
//!   empty database) holds `admin.token`, and no restart made another;
//! - the reader's state is a fresh full pull's, the same from each
//!   instance, and the server holds exactly the records devices created;
//! - the feed never skipped: whenever the reader reached the end of the
//!   feed, it held every record at least at the seq of every write
//!   acknowledged before that last page was asked for;
//! - nothing was applied twice: a mutation id is `applied` at most once in
//!   all the answers the devices saw, other answers are `duplicate` with
//!   its seq and HLC; in the database, the audit log (an intact hash
//!   chain) holds exactly one push entry per mutation sent, and
//!   `pufa_applied` one row; nothing was rejected, all was answered;
//! - every acknowledged mutation is there: per record, each field and the
//!   deleted flag hold the acknowledged write with the greatest HLC (last
//!   writer wins);
//! - every device holds exactly the server's view of its scope;
//! - the three instances' aggregates agree (totals; checksums of the
//!   reader and of every device, which are the ones their records give),
//!   the totals are the records', and no sync ever had to repair;
//! - no answer was a 5xx other than 503, nor a 408.
//!
//! Needs the PostgreSQL server binaries (Debian's `postgresql`); without
//! them the test is skipped with a loud line on stderr, except under
//! `CI=true`, where it fails. Defaults keep it to about a minute in debug
//! on 2 cores. Longer runs: `PUFA_MULTI_DEVICES=100 PUFA_MULTI_ROUNDS=40
//! PUFA_MULTI_KILLS=10 PUFA_MULTI_SEED=7 cargo test -p pufa-tests --test
//! pg_instances`. `PUFA_MULTI_LOGS=<dir>` keeps the instances' output
//! there (`instance-<n>.log`). `PUFA_MULTI_ABORTS=<percent>` (default 10)
//! makes devices drop the connection of that share of pushes 0–30 ms
//! after sending them (the instance sees the client go mid-request).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pufa_client::transport::{Method, Request, Response, Transport, TransportError};
use pufa_client::{Client, ClientConfig, Filter, HttpTransport, RetryPolicy};
use pufa_core::merge::{checksum_text, record_digest};
use pufa_core::wire::{
    AuditCause, ChecksumResponse, Mutation, MutationStatus, PullEntry, PullResponse, PushRequest,
    PushResponse, TokenIssued,
};
use pufa_server::store::codec;
use pufa_tests::pg::PgCluster;
use pufa_tests::{api, env_or, pull_all, Answer};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use uuid::Uuid;

const INSTANCES: usize = 3;
const DEVICES_DEFAULT: usize = 50;
/// Rounds (a few local edits, then a sync) each device makes at least; it
/// goes on until the last fault is over.
const ROUNDS_DEFAULT: usize = 25;
/// SIGKILLs of an instance (each started again later); the PostgreSQL
/// restart happens while the first victim is down.
const KILLS_DEFAULT: usize = 4;
const SEED_DEFAULT: u64 = 9009;
/// Streets in the org tree; devices are spread over them, and a street's
/// devices edit each other's records.
const STREETS: usize = 5;
/// Records one device creates at most; after that it only edits.
const CREATES_MAX: usize = 16;
/// Local edits between two syncs, at most.
const OPS_PER_ROUND_MAX: usize = 5;
/// Each fault, once enough syncs succeeded, waits for 1..=this many
/// pushes on the wire (to the victim, for a kill).
const PUSHES_IN_FLIGHT_MAX: usize = 2;
/// Syncs a device tries at the end before the test gives up.
const FINAL_SYNC_ATTEMPTS: usize = 50;
/// Connections each instance keeps to PostgreSQL: three instances at the
/// default (16) would pass the throwaway cluster's `max_connections`.
const PG_POOL_SIZE: usize = 8;
/// Share of pushes a device sends to two instances at once.
const RACED_PUSHES: f64 = 0.05;
/// A push the device abandons (`PUFA_MULTI_ABORTS`) is dropped after
/// 0..=this many milliseconds.
const ABORT_AFTER_MS_MAX: u64 = 30;
/// The reader's pause between two asks when no instance answered.
const READER_POLL: Duration = Duration::from_millis(50);

// ------------------------------------------------------------ instances

/// One `pufa-server` process on the shared database; killed on drop.
struct Instance {
    n: usize,
    server: pufa_tests::ServerProcess,
    _dir: tempfile::TempDir,
}

impl Instance {
    /// A first start on a new port and data dir; with the lines it printed
    /// before listening (the admin token's story).
    async fn start(n: usize, database_url: String) -> (Instance, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let log = std::env::var_os("PUFA_MULTI_LOGS").map(|d| {
            let d = PathBuf::from(d);
            std::fs::create_dir_all(&d).unwrap();
            d.join(format!("instance-{n}.log"))
        });
        let args = vec![
            "--database-url".to_string(),
            database_url,
            "--pg-pool-size".to_string(),
            PG_POOL_SIZE.to_string(),
        ];
        let (server, lines) =
            pufa_tests::ServerProcess::start(dir.path().to_path_buf(), args, log).await;
        (
            Instance {
                n,
                server,
                _dir: dir,
            },
            lines,
        )
    }

    fn base(&self) -> String {
        self.server.base()
    }

    fn dir(&self) -> &Path {
        self.server.dir()
    }

    fn kill(&mut self) {
        self.server.kill();
    }

    /// Starts it again on the same data dir and port (retrying while the
    /// port is busy or the database is not answering yet).
    async fn restart(&mut self) -> Vec<String> {
        self.server.restart().await
    }
}

async fn checksum(base: &str, token: &str) -> ChecksumResponse {
    let (st, v) = api(base, reqwest::Method::GET, "/v1/sync/checksum", token, None).await;
    assert_eq!(st, 200, "{base}: {v}");
    serde_json::from_value(v).unwrap()
}

/// `(count, checksum)` of records as a device computes it.
fn local_checksum<'a>(records: impl Iterator<Item = (Uuid, u64)> + 'a) -> (u64, String) {
    let (mut count, mut xor) = (0, 0);
    for (id, seq) in records {
        count += 1;
        xor ^= record_digest(id, seq);
    }
    (count, checksum_text(xor))
}

// ------------------------------------------- the fleet and its transport

/// The instances as the devices see them, and what happened on the wire.
struct Fleet {
    http: Vec<HttpTransport>,
    /// Cleared when the test kills an instance, set when it is back: a
    /// hint for choosing; a dead one is still tried last.
    up: Vec<AtomicBool>,
    /// Pushes on the wire, per instance, for the test to aim at.
    pushes: Vec<AtomicUsize>,
    changed: Notify,
    /// Requests sent on to another instance after no answer or a 503.
    elsewhere: AtomicUsize,
    /// 503 answers.
    unavailable: AtomicUsize,
    /// Pushes sent to two instances at once.
    raced: AtomicUsize,
    /// Share of pushes whose connection the device drops mid-request
    /// (`PUFA_MULTI_ABORTS`, in percent).
    aborts: f64,
    /// Pushes so abandoned.
    aborted: AtomicUsize,
    /// Requests that reached no instance at all (then the SDK backs off).
    nowhere: AtomicUsize,
    /// 5xx answers other than 503, and 408s: none expected.
    bad: Mutex<Vec<String>>,
}

impl Fleet {
    fn pushes_total(&self) -> usize {
        self.pushes.iter().map(|p| p.load(Ordering::SeqCst)).sum()
    }

    /// Waits until `cond` holds; checked again whenever a push starts.
    async fn wait_pushes(&self, cond: impl Fn(&Fleet) -> bool) {
        loop {
            let changed = self.changed.notified();
            if cond(self) {
                return;
            }
            changed.await;
        }
    }
}

/// Every push the devices sent and every push answer that reached them.
#[derive(Default)]
struct Ledger {
    /// Mutations as pushed, by id.
    sent: Mutex<HashMap<Uuid, Mutation>>,
    /// `(status, seq, stored hlc)` of every result a device received.
    answers: Mutex<HashMap<Uuid, Vec<Answer>>>,
    /// `(record id, seq)` of every acknowledgement, in the order received.
    acked: Mutex<Vec<(Uuid, u64)>>,
    /// Mutations of pushes sent to two instances at once.
    raced: Mutex<HashSet<Uuid>>,
}

/// A device's (or the reader's) transport: every request to a random
/// instance, live ones first; on no answer or a 503, at once to the next.
struct Roaming {
    fleet: Arc<Fleet>,
    /// Where pushes and their answers are written (devices only).
    ledger: Option<Arc<Ledger>>,
    rng: Mutex<ChaCha8Rng>,
}

impl Roaming {
    fn order(&self) -> Vec<usize> {
        let mut all: Vec<usize> = (0..INSTANCES).collect();
        all.shuffle(&mut *self.rng.lock().unwrap());
        all.sort_by_key(|&i| !self.fleet.up[i].load(Ordering::SeqCst));
        all
    }

    fn note_answers(&self, r: &Response) {
        let Some(ledger) = &self.ledger else { return };
        let resp: PushResponse = serde_json::from_slice(&r.body).unwrap();
        let sent = ledger.sent.lock().unwrap();
        let mut answers = ledger.answers.lock().unwrap();
        let mut acked = ledger.acked.lock().unwrap();
        for x in resp.results {
            if let (MutationStatus::Applied | MutationStatus::Duplicate, Some(seq)) =
                (x.status, x.seq)
            {
                acked.push((sent[&x.id].record_id, seq));
            }
            answers
                .entry(x.id)
                .or_default()
                .push((x.status, x.seq, x.hlc));
        }
    }
}

impl Roaming {
    /// One try at instance `i`: counts pushes on the wire, 503s and
    /// unexpected answers, and writes push answers into the ledger.
    /// Also says whether the device dropped the connection itself.
    async fn attempt(&self, i: usize, req: &Request) -> (Result<Response, TransportError>, bool) {
        let fleet = &self.fleet;
        let push = req.path == "/v1/sync/push";
        if push {
            fleet.pushes[i].fetch_add(1, Ordering::SeqCst);
            fleet.changed.notify_waiters();
        }
        let give_up = {
            let mut rng = self.rng.lock().unwrap();
            (push && fleet.aborts > 0.0 && rng.gen_bool(fleet.aborts))
                .then(|| Duration::from_millis(rng.gen_range(0..=ABORT_AFTER_MS_MAX)))
        };
        let mut lost = false;
        let r = match give_up {
            // The device loses its connection while the push is on the
            // wire (the instance sees the connection close).
            Some(after) => tokio::time::timeout(after, fleet.http[i].send(req.clone()))
                .await
                .unwrap_or_else(|_| {
                    fleet.aborted.fetch_add(1, Ordering::SeqCst);
                    lost = true;
                    Err(TransportError("connection lost (test fault)".into()))
                }),
            None => fleet.http[i].send(req.clone()).await,
        };
        if push {
            fleet.pushes[i].fetch_sub(1, Ordering::SeqCst);
        }
        if let Ok(resp) = &r {
            if resp.status == 503 {
                fleet.unavailable.fetch_add(1, Ordering::SeqCst);
            } else if resp.status >= 500 || resp.status == 408 {
                fleet.bad.lock().unwrap().push(format!(
                    "instance {i}: {:?} {}: HTTP {}: {}",
                    req.method,
                    req.path,
                    resp.status,
                    String::from_utf8_lossy(&resp.body)
                ));
            } else if push && resp.status == 200 {
                self.note_answers(resp);
            }
        }
        (r, lost)
    }
}

/// An answer worth returning: anything but no answer or a 503.
fn answered(r: &Result<Response, TransportError>) -> bool {
    matches!(r, Ok(resp) if resp.status != 503)
}

#[async_trait]
impl Transport for Roaming {
    async fn send(&self, req: Request) -> Result<Response, TransportError> {
        let push = req.path == "/v1/sync/push";
        if let (true, Some(ledger)) = (push, &self.ledger) {
            let body: PushRequest =
                serde_json::from_slice(req.body.as_deref().unwrap_or_default()).unwrap();
            let mut sent = ledger.sent.lock().unwrap();
            for m in body.mutations {
                sent.insert(m.id, m);
            }
        }
        let fleet = &self.fleet;
        let order = self.order();
        let race = push && self.rng.lock().unwrap().gen_bool(RACED_PUSHES);
        if let (true, Some(ledger)) = (race, &self.ledger) {
            let body: PushRequest =
                serde_json::from_slice(req.body.as_deref().unwrap_or_default()).unwrap();
            let mut raced = ledger.raced.lock().unwrap();
            raced.extend(body.mutations.iter().map(|m| m.id));
        }
        if race {
            // The same push reaches two instances at once (as through a
            // proxy that retried too early): one applies it, the other
            // must answer duplicate.
            fleet.raced.fetch_add(1, Ordering::SeqCst);
            let ((a, _), (b, _)) =
                tokio::join!(self.attempt(order[0], &req), self.attempt(order[1], &req));
            for r in [a, b] {
                if answered(&r) {
                    return r;
                }
            }
        }
        let mut last = None;
        for (tried, &i) in order.iter().enumerate() {
            if tried > 0 {
                fleet.elsewhere.fetch_add(1, Ordering::SeqCst);
            }
            let (r, lost) = self.attempt(i, &req).await;
            if answered(&r) || lost {
                // A device that lost its connection does not try the next
                // instance at once: the SDK backs off, or the outbox waits
                // for the next sync.
                return r;
            }
            last = Some(r);
        }
        fleet.nowhere.fetch_add(1, Ordering::SeqCst);
        last.expect("at least one instance")
    }
}

// ------------------------------------------------------------ devices

struct Device {
    token: TokenIssued,
    street: usize,
    client: Client,
    _dir: tempfile::TempDir,
}

/// One round of local work: a few creates or edits, deletes and restores.
const WORK: pufa_tests::LocalWork = pufa_tests::LocalWork {
    ops_max: OPS_PER_ROUND_MAX,
    creates_max: CREATES_MAX,
    create_percent: 35,
    title: "宪法宣传周",
};

// ------------------------------------------------------------ the reader

/// Pages the feed through random instances, keeping each record's latest
/// state, and checks as it goes that the feed never skips.
struct Reader {
    transport: Roaming,
    token: String,
    rng: ChaCha8Rng,
    cursor: u64,
    held: BTreeMap<Uuid, PullEntry>,
    /// Acknowledgements (`Ledger::acked`) checked so far.
    checked: usize,
    /// The greatest acknowledged seq per record, of those checked.
    acked_max: HashMap<Uuid, u64>,
    pages: usize,
    /// Times it reached the end of the feed.
    ends: usize,
    /// Asks that no instance answered (then it polled again).
    unanswered: usize,
}

impl Reader {
    async fn page(&mut self, limit: usize) -> PullResponse {
        loop {
            let req = Request {
                method: Method::Get,
                path: format!("/v1/sync/pull?since={}&limit={limit}", self.cursor),
                token: self.token.clone(),
                body: None,
            };
            match self.transport.send(req).await {
                Ok(r) if r.status == 200 => return serde_json::from_slice(&r.body).unwrap(),
                Ok(r) if r.status == 503 || r.status == 429 => {}
                Ok(r) => panic!(
                    "reader: HTTP {}: {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ),
                Err(_) => {}
            }
            self.unanswered += 1;
            // Every instance down or without its database: ask again soon.
            tokio::time::sleep(READER_POLL).await;
        }
    }

    /// Pages until the end of the feed.
    async fn catch_up(&mut self, ledger: &Ledger) {
        loop {
            // Acknowledged before the page is asked for: committed before
            // the page's snapshot.
            let acked_before = ledger.acked.lock().unwrap().len();
            let limit = self.rng.gen_range(1..=200);
            let since = self.cursor;
            let page = self.page(limit).await;
            self.pages += 1;
            assert!(
                page.next >= since,
                "reader: next {} < since {since}",
                page.next
            );
            assert!(page.records.len() <= limit, "reader: page over its limit");
            let mut prev = since;
            for e in page.records {
                let seq = e.seq();
                assert!(
                    prev < seq && seq <= page.next,
                    "reader: seq {seq} out of order in a page since {since} (after {prev}, next {})",
                    page.next
                );
                prev = seq;
                assert!(
                    matches!(e, PullEntry::Record(_)),
                    "reader: nothing leaves the district: {e:?}"
                );
                if let Some(old) = self.held.get(&e.id()) {
                    assert!(
                        old.seq() < seq,
                        "reader: {} listed again at seq {seq}, held at {}",
                        e.id(),
                        old.seq()
                    );
                }
                self.held.insert(e.id(), e);
            }
            self.cursor = page.next;
            if page.has_more {
                continue;
            }
            self.ends += 1;
            // At the end of the feed, the reader holds every record as of
            // the last page's snapshot: each acknowledged write is there.
            let new: Vec<(Uuid, u64)> =
                ledger.acked.lock().unwrap()[self.checked..acked_before].to_vec();
            self.checked = acked_before;
            let mut touched = HashSet::new();
            for (rid, seq) in new {
                let m = self.acked_max.entry(rid).or_default();
                *m = (*m).max(seq);
                touched.insert(rid);
            }
            for rid in touched {
                let want = self.acked_max[&rid];
                let held = self.held.get(&rid).map(PullEntry::seq);
                assert!(
                    held.is_some_and(|h| h >= want),
                    "the feed skipped: record {rid} acknowledged at seq {want}, the reader holds {held:?} at the end of the feed (next {})",
                    self.cursor
                );
            }
            return;
        }
    }
}

/// Waits until `n` more device syncs have succeeded, or the run is over.
async fn wait_syncs(progress: &mut watch::Receiver<usize>, n: usize, done: &AtomicBool) {
    let target = *progress.borrow() + n;
    progress
        .wait_for(|s| *s >= target || done.load(Ordering::SeqCst))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_one_database_survive_sigkill_and_a_database_crash() {
    let Some(mut pg) = PgCluster::start_or_skip() else {
        return;
    };
    let devices_n = env_or("PUFA_MULTI_DEVICES", DEVICES_DEFAULT as u64) as usize;
    let rounds = env_or("PUFA_MULTI_ROUNDS", ROUNDS_DEFAULT as u64) as usize;
    let kills = env_or("PUFA_MULTI_KILLS", KILLS_DEFAULT as u64).max(1) as usize;
    let seed = env_or("PUFA_MULTI_SEED", SEED_DEFAULT);
    let aborts_percent = env_or("PUFA_MULTI_ABORTS", 10).min(100);
    // Before each fault, the test waits for 1..=`syncs_between` device
    // syncs: on average, the faults are over halfway through the rounds.
    let syncs_between = (devices_n * rounds / (2 * kills + 2)).max(1);
    let started = Instant::now();
    pufa_tests::bin_dir();
    let db = pg.url();

    // Three instances start at once on the empty database: one makes the
    // bootstrap admin and keeps admin.token.
    let starts: Vec<_> = (0..INSTANCES)
        .map(|n| tokio::spawn(Instance::start(n, db.clone())))
        .collect();
    let mut instances = Vec::new();
    let mut made_admin = Vec::new();
    for s in starts {
        let (i, lines) = s.await.unwrap();
        if lines.iter().any(|l| l.contains("created the admin token")) {
            made_admin.push(i.n);
        }
        instances.push(i);
    }
    let holders: Vec<usize> = instances
        .iter()
        .filter(|i| i.dir().join("admin.token").exists())
        .map(|i| i.n)
        .collect();
    assert_eq!(
        holders.len(),
        1,
        "instances holding admin.token: {holders:?}"
    );
    assert_eq!(
        made_admin, holders,
        "the instance that made the admin keeps its token"
    );
    let admin = std::fs::read_to_string(instances[holders[0]].dir().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let bases: Vec<String> = instances.iter().map(Instance::base).collect();
    let mut setup_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5e70);

    // The org tree through one instance, tokens through random others
    // (which must have caught up with the tree).
    let units = pufa_tests::street_tree(STREETS);
    let (st, v) = api(
        &bases[setup_rng.gen_range(0..INSTANCES)],
        reqwest::Method::PUT,
        "/v1/admin/org-units",
        &admin,
        Some(units),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let mut issue = |body: Value| {
        let base = bases[setup_rng.gen_range(0..INSTANCES)].clone();
        let admin = admin.clone();
        async move {
            let (st, v) = api(
                &base,
                reqwest::Method::POST,
                "/v1/admin/tokens",
                &admin,
                Some(body),
            )
            .await;
            assert_eq!(st, 201, "{base}: {v}");
            serde_json::from_value::<TokenIssued>(v).unwrap()
        }
    };

    let fleet = Arc::new(Fleet {
        http: bases
            .iter()
            .map(|b| HttpTransport::new(b).unwrap())
            .collect(),
        up: (0..INSTANCES).map(|_| AtomicBool::new(true)).collect(),
        pushes: (0..INSTANCES).map(|_| AtomicUsize::new(0)).collect(),
        changed: Notify::new(),
        elsewhere: AtomicUsize::new(0),
        unavailable: AtomicUsize::new(0),
        raced: AtomicUsize::new(0),
        aborts: aborts_percent as f64 / 100.0,
        aborted: AtomicUsize::new(0),
        nowhere: AtomicUsize::new(0),
        bad: Mutex::new(Vec::new()),
    });
    let ledger = Arc::new(Ledger::default());
    let mut devices = Vec::new();
    for i in 0..devices_n {
        let street = i % STREETS + 1;
        let token = issue(
            json!({"role":"field","org_unit": format!("s{street}"), "label": format!("multi {i}")}),
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = ClientConfig::new(dir.path(), token.device_id, token.token.clone());
        config.retry = RetryPolicy {
            // When no instance answers, some devices give up on the sync
            // soon (keeping their outbox), some wait longer.
            attempts: 2 + (i % 3) as u32,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
            seed: seed ^ i as u64,
        };
        // Small batches and pages: one sync spreads over instances.
        config.push_batch = 2 + i % 7;
        config.pull_limit = 5 + (i * 7) % 60;
        let transport = Arc::new(Roaming {
            fleet: fleet.clone(),
            ledger: Some(ledger.clone()),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed.wrapping_mul(31) + i as u64)),
        });
        let client = Client::open(config, transport).unwrap();
        devices.push(Arc::new(Device {
            token,
            street,
            client,
            _dir: dir,
        }));
    }
    let reader_token =
        issue(json!({"role":"coordinator","org_unit":"d","label":"feed reader"})).await;

    // The devices work until the last fault is over (and at least
    // `rounds` rounds); the reader pages the feed meanwhile.
    let done = Arc::new(AtomicBool::new(false));
    // A device that fails ends the run early (rather than leaving the
    // faults waiting for progress that may never come).
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let (progress_tx, progress) = watch::channel(0usize);
    let progress_tx = Arc::new(progress_tx);
    let mut tasks = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        let (d, done, progress_tx) = (d.clone(), done.clone(), progress_tx.clone());
        let (failures, fleet) = (failures.clone(), fleet.clone());
        tasks.push(tokio::spawn(async move {
            let fail = |why: String| {
                failures.lock().unwrap().push(why);
                done.store(true, Ordering::SeqCst);
                progress_tx.send_modify(|_| {});
                fleet.changed.notify_waiters();
            };
            let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1000) + i as u64);
            let mut created = Vec::new();
            let mut round = 0;
            let (mut unreachable, mut unmatched, mut repaired) = (0u64, 0u64, 0u64);
            while round < rounds || !done.load(Ordering::SeqCst) {
                round += 1;
                (rng, created) = pufa_tests::random_local_round_off_thread(
                    &d.client,
                    d.street,
                    WORK,
                    rng,
                    std::mem::take(&mut created),
                )
                .await;
                match d.client.sync().await {
                    Ok(report) if !report.rejected.is_empty() => {
                        fail(format!("device {i}: rejected: {report:?}"));
                        break;
                    }
                    Ok(report) => {
                        unmatched += u64::from(!report.checksum_ok);
                        repaired += u64::from(report.repaired);
                        progress_tx.send_modify(|n| *n += 1);
                    }
                    Err(pufa_client::Error::Unreachable(_)) => unreachable += 1,
                    Err(e) => {
                        fail(format!("device {i}: sync failed: {e}"));
                        break;
                    }
                }
            }
            (created, round, unreachable, unmatched, repaired)
        }));
    }
    let reader_task = {
        let mut reader = Reader {
            transport: Roaming {
                fleet: fleet.clone(),
                ledger: None,
                rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed ^ 0x7265_6164)),
            },
            token: reader_token.token.clone(),
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x6665_6564),
            cursor: 0,
            held: BTreeMap::new(),
            checked: 0,
            acked_max: HashMap::new(),
            pages: 0,
            ends: 0,
            unanswered: 0,
        };
        let (ledger, done, mut progress) = (ledger.clone(), done.clone(), progress.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                reader.catch_up(&ledger).await;
                let n = reader.rng.gen_range(1..=10);
                wait_syncs(&mut progress, n, &done).await;
            }
            reader
        })
    };

    // The faults, timed by progress.
    let mut faults = ChaCha8Rng::seed_from_u64(seed ^ 0x6b69_6c6c);
    let mut progress_rx = progress.clone();
    let (mut in_flight_at_kills, mut in_flight_at_pg_restart) = (0, 0);
    let mut killed = Vec::new();
    for k in 0..kills {
        let n = faults.gen_range(1..=syncs_between);
        wait_syncs(&mut progress_rx, n, &done).await;
        let victim = faults.gen_range(0..INSTANCES);
        let aim = faults.gen_range(1..=PUSHES_IN_FLIGHT_MAX);
        fleet
            .wait_pushes(|f| {
                f.pushes[victim].load(Ordering::SeqCst) >= aim || done.load(Ordering::SeqCst)
            })
            .await;
        if done.load(Ordering::SeqCst) {
            break;
        }
        in_flight_at_kills += fleet.pushes[victim].load(Ordering::SeqCst);
        instances[victim].kill();
        fleet.up[victim].store(false, Ordering::SeqCst);
        killed.push(victim);
        let n = faults.gen_range(1..=syncs_between);
        wait_syncs(&mut progress_rx, n, &done).await;
        if k == 0 {
            // The database crashes and recovers while pushes are on the
            // wire (to the two instances left).
            let aim = faults.gen_range(1..=PUSHES_IN_FLIGHT_MAX);
            fleet
                .wait_pushes(|f| f.pushes_total() >= aim || done.load(Ordering::SeqCst))
                .await;
            in_flight_at_pg_restart = fleet.pushes_total();
            pg = tokio::task::spawn_blocking(move || {
                pg.restart().expect("crash and restart PostgreSQL");
                pg
            })
            .await
            .unwrap();
            assert!(
                pg.log().contains("automatic recovery in progress"),
                "the restart was a crash and recovery; log:\n{}",
                pg.log()
            );
            let n = faults.gen_range(1..=syncs_between);
            wait_syncs(&mut progress_rx, n, &done).await;
        }
        let lines = instances[victim].restart().await;
        assert!(
            !lines.iter().any(|l| l.contains("created the admin token")),
            "a restarted instance made another admin: {lines:?}"
        );
        fleet.up[victim].store(true, Ordering::SeqCst);
    }
    let n = faults.gen_range(1..=syncs_between);
    wait_syncs(&mut progress_rx, n, &done).await;
    done.store(true, Ordering::SeqCst);
    progress_tx.send_modify(|_| {});
    eprintln!("pg_instances: faults over, {:?}", started.elapsed());
    let failed = failures.lock().unwrap().clone();
    assert!(failed.is_empty(), "devices failed: {failed:#?}");

    let mut created: HashSet<Uuid> = HashSet::new();
    let (mut rounds_total, mut unreachable_total) = (0, 0);
    let (mut unmatched_total, mut repaired_total) = (0, 0);
    for t in tasks {
        let (c, r, u, um, rp) = t.await.unwrap();
        rounds_total += r;
        unreachable_total += u;
        unmatched_total += um;
        repaired_total += rp;
        for id in c {
            assert!(created.insert(id), "a record id made twice");
        }
    }
    let mut reader = reader_task.await.unwrap();

    // Final syncs, through random instances, one device at a time: first
    // until every outbox is empty, then once more each, so that every
    // device sees the others' last pushes.
    for (i, d) in devices.iter().enumerate() {
        let mut emptied = false;
        for _ in 0..FINAL_SYNC_ATTEMPTS {
            match d.client.sync().await {
                Ok(r) => {
                    assert!(r.rejected.is_empty(), "device {i}: {r:?}");
                    if d.client.status().unwrap().pending == 0 {
                        emptied = true;
                        break;
                    }
                }
                Err(pufa_client::Error::Unreachable(_)) => {}
                Err(e) => panic!("device {i}: final sync failed: {e}"),
            }
        }
        assert!(emptied, "device {i}: the outbox never emptied");
    }
    let mut unmatched_at_end = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        let r = d
            .client
            .sync()
            .await
            .unwrap_or_else(|e| panic!("device {i}: last sync: {e}"));
        if !r.checksum_ok {
            unmatched_at_end.push(format!("device {i}: {r:?}"));
        }
        assert!(r.rejected.is_empty(), "device {i}: {r:?}");
        assert_eq!(r.pushed, 0, "device {i}: pushed in the last round");
        assert_eq!(d.client.status().unwrap().pending, 0, "device {i}");
    }
    reader.catch_up(&ledger).await;

    // 1. The reader's state is a fresh full pull's, the same from every
    // instance.
    let mut on_server = None;
    for base in &bases {
        let full = pull_all(base, &reader_token.token).await;
        assert!(
            full == reader.held,
            "{base}: a fresh full pull ({} records) differs from the reader's state ({} records)",
            full.len(),
            reader.held.len()
        );
        on_server = Some(full);
    }
    let on_server = on_server.unwrap();

    // 2. The server holds exactly the records the devices created; 3.
    // nothing applied twice, nothing rejected, every mutation answered; 4.
    // every acknowledged write is there: per record, each field and the
    // deleted flag hold the acknowledged write with the greatest HLC.
    let sent = ledger.sent.lock().unwrap().clone();
    let answers = ledger.answers.lock().unwrap().clone();
    let raced = ledger.raced.lock().unwrap().clone();
    let per_mutation =
        pufa_tests::assert_answers_account_for(&created, &sent, &answers, &on_server);
    let duplicates: usize = per_mutation.values().sum();
    let duplicates_unraced: usize = per_mutation
        .iter()
        .filter(|(id, _)| !raced.contains(id))
        .map(|(_, n)| n)
        .sum();

    // 5. In the database: an intact audit chain with one push entry per
    // mutation sent, and one idempotency row per mutation.
    let (client, conn) = tokio_postgres::connect(&db, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let rows = client
        .query("SELECT n, value FROM pufa_audit ORDER BY n", &[])
        .await
        .unwrap();
    let mut prev = codec::GENESIS;
    let mut pushed: HashMap<Uuid, usize> = HashMap::new();
    for (k, row) in rows.iter().enumerate() {
        let n: i64 = row.get(0);
        assert_eq!(n, k as i64 + 1, "audit entries are numbered without gaps");
        let a = codec::decode_audit(row.get(1)).unwrap();
        assert!(
            a.hash_ok && a.prev == prev,
            "audit entry {n} breaks the chain"
        );
        assert_eq!(a.body.n, n as u64);
        prev = a.hash;
        assert_eq!(a.body.cause, AuditCause::Push, "audit entry {n}");
        *pushed
            .entry(a.body.mutation_id.expect("a push entry names its mutation"))
            .or_default() += 1;
    }
    let state = client
        .query_one(
            "SELECT audit_n, audit_hash FROM pufa_state WHERE id = 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(state.get::<_, i64>(0), rows.len() as i64);
    assert_eq!(state.get::<_, &[u8]>(1), prev.as_slice());
    let twice: Vec<_> = pushed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "mutations in the audit log more than once: {twice:?}"
    );
    let logged: HashSet<Uuid> = pushed.keys().copied().collect();
    let sent_ids: HashSet<Uuid> = sent.keys().copied().collect();
    assert_eq!(logged, sent_ids, "the audit log's mutations vs those sent");
    let applied_rows: i64 = client
        .query_one("SELECT count(*) FROM pufa_applied", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied_rows, sent.len() as i64, "pufa_applied rows");

    // 6. Every device holds exactly the server's view of its scope (pulled
    // from a different instance for each device).
    for (i, d) in devices.iter().enumerate() {
        let theirs = pull_all(&bases[i % INSTANCES], &d.token.token).await;
        pufa_tests::assert_device_holds_its_scope(i, &d.client, d.street, &theirs);
    }

    // 7. Every instance's aggregates (some caught up write by write, a
    // restarted one rebuilt from the database) give the same totals, and
    // the lectures' count and attendees are the records'.
    let live: Vec<_> = on_server
        .values()
        .filter_map(|e| match e {
            PullEntry::Record(r) if !r.deleted => Some(r),
            _ => None,
        })
        .collect();
    let attendees: u64 = live
        .iter()
        .map(|r| {
            r.fields
                .get("attendees")
                .and_then(Value::as_u64)
                .unwrap_or(0)
        })
        .sum();
    let conflicts_open: u64 = on_server
        .values()
        .map(|e| match e {
            PullEntry::Record(r) => u64::from(r.conflicts),
            PullEntry::Gone(_) => 0,
        })
        .sum();
    let mut totals = Vec::new();
    for base in &bases {
        let (st, v) = api(
            base,
            reqwest::Method::GET,
            "/v1/totals?org=d",
            &reader_token.token,
            None,
        )
        .await;
        assert_eq!(st, 200, "{base}: {v}");
        totals.push(v);
    }
    assert!(
        totals.iter().all(|t| *t == totals[0]),
        "the instances disagree on the totals: {totals:#?}"
    );
    assert_eq!(
        (
            &totals[0]["lectures"]["count"],
            &totals[0]["lectures"]["attendees"]
        ),
        (&json!(live.len()), &json!(attendees)),
        "totals vs records"
    );

    // 8. Checksums: the reader's and every device's records give the one
    // all three instances answer, so every device's last sync matched;
    // and no sync during the run had to repair (re-pull from 0), which
    // only an instance answering a checksum whose records disagree with
    // its seq would make it do.
    let reader_sum = local_checksum(reader.held.values().map(|e| (e.id(), e.seq())));
    for base in &bases {
        let c = checksum(base, &reader_token.token).await;
        assert_eq!(
            (c.count, &c.checksum),
            (reader_sum.0, &reader_sum.1),
            "{base}: the reader's checksum (its records are a fresh pull's)"
        );
    }
    for (i, d) in devices.iter().enumerate() {
        let mine = d
            .client
            .list(&Filter {
                include_deleted: true,
                ..Filter::default()
            })
            .unwrap();
        let local = local_checksum(mine.iter().map(|l| (l.id, l.seq)));
        let mut sums = Vec::new();
        for base in &bases {
            let c = checksum(base, &d.token.token).await;
            sums.push((c.seq, c.count, c.checksum));
        }
        assert!(
            sums.iter().all(|s| *s == sums[0]),
            "device {i}: the instances disagree on its checksum: {sums:?}"
        );
        assert_eq!(
            (sums[0].1, &sums[0].2),
            (local.0, &local.1),
            "device {i}: checksum"
        );
    }
    assert!(
        unmatched_at_end.is_empty(),
        "last syncs without a checksum match: {unmatched_at_end:#?}"
    );
    assert_eq!(repaired_total, 0, "syncs during the run that had to repair");

    // 9. No answer but 503 said the servers were in trouble.
    let bad = fleet.bad.lock().unwrap().clone();
    assert!(bad.is_empty(), "unexpected answers: {bad:#?}");

    eprintln!(
        "pg_instances: {devices_n} devices on {INSTANCES} instances; {kills} SIGKILLs (instances {killed:?}, {in_flight_at_kills} pushes on the wire to them) and 1 PostgreSQL crash+restart ({in_flight_at_pg_restart} pushes on the wire); {} records, {} mutations acknowledged and verified ({duplicates} answers duplicate, {duplicates_unraced} of them to pushes sent once; {} pushes sent to two instances at once, {} abandoned mid-request), {conflicts_open} conflicts open; {rounds_total} device rounds, {unreachable_total} syncs cut off, {unmatched_total} ended before the checksums matched, {repaired_total} repaired; {} requests sent on to another instance, {} answered 503, {} reached none; reader: {} pages, {} times at the end of the feed, {} asks unanswered; {:?}",
        created.len(),
        answers.len(),
        fleet.raced.load(Ordering::SeqCst),
        fleet.aborted.load(Ordering::SeqCst),
        fleet.elsewhere.load(Ordering::SeqCst),
        fleet.unavailable.load(Ordering::SeqCst),
        fleet.nowhere.load(Ordering::SeqCst),
        reader.pages,
        reader.ends,
        reader.unanswered,
        started.elapsed()
    );
    drop(client);
    for i in &mut instances {
        i.kill();
    }
    pg.stop().expect("stop PostgreSQL");
}
