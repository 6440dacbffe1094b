//! Fault torture: many SDK devices (real `pufa-client` stores, `HttpTransport`
//! over loopback) create, edit, delete and restore records and sync against
//! the real `pufa-server` binary, while the test SIGKILLs the server at
//! random moments and restarts it on the same data dir and port.
//!
//! At the end, after a final sync of every device:
//! - every mutation a device saw acknowledged (`applied` or `duplicate`) is
//!   on the server: each field and the deleted flag hold the value of the
//!   acknowledged write with the greatest HLC (last writer wins);
//! - none was applied twice: a mutation id is `applied` at most once in all
//!   the answers the devices saw, and every later answer for it repeats the
//!   same seq; the server holds exactly the records the devices created;
//! - nothing was rejected, and every device's checksum agrees with the
//!   server's for its scope, its local records being the server's view.
//!
//! Defaults keep it to a few minutes in debug on 2 cores. Longer runs:
//! `PUFA_TORTURE_DEVICES=100 PUFA_TORTURE_KILLS=200 PUFA_TORTURE_ROUNDS=40
//! PUFA_TORTURE_SEED=7 cargo test --release -p pufa-tests --test torture`.
//!
//! Kills are timed by progress, not by clocks: after each restart the test
//! waits for a random number (1..=`SYNCS_BETWEEN_KILLS_MAX`) of device
//! syncs to succeed, then for 1..=`PUSHES_IN_FLIGHT_MAX` pushes to be on the
//! wire, and kills: every kill lands on pushes in flight.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pufa_client::transport::{Request, Response, Transport, TransportError};
use pufa_client::{Client, ClientConfig, Filter, HttpTransport, RetryPolicy, SyncState};
use pufa_core::hlc::Hlc;
use pufa_core::wire::{
    Mutation, MutationStatus, PullEntry, PushRequest, PushResponse, TokenIssued,
};
use pufa_tests::{api, pull_all};
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::Notify;
use uuid::Uuid;

const DEVICES_DEFAULT: usize = 50;
const KILLS_DEFAULT: usize = 20;
/// Rounds (a few local edits, then a sync) each device makes at least; it
/// goes on until the last kill.
const ROUNDS_DEFAULT: usize = 20;
const SEED_DEFAULT: u64 = 2020;
/// Streets in the org tree; devices are spread over them, and a street's
/// devices edit each other's records.
const STREETS: usize = 5;
/// Records one device creates at most; after that it only edits.
const CREATES_MAX: usize = 40;
/// Local edits between two syncs, at most.
const OPS_PER_ROUND_MAX: usize = 6;
const SYNCS_BETWEEN_KILLS_MAX: usize = 12;
/// After those syncs, the kill waits for 1..=this many pushes on the wire.
const PUSHES_IN_FLIGHT_MAX: usize = 3;
/// Syncs a device tries at the end before the test gives up.
const FINAL_SYNC_ATTEMPTS: usize = 50;

fn env_or(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

// ------------------------------------------------------------ the binary

/// The server binary on a fixed port; killed on drop.
struct BinServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

/// Starts the binary and waits for its "listening" line; `None` if it
/// exited first (e.g. the port was still taken).
fn spawn_binary(dir: &Path, port: u16) -> Option<Child> {
    let mut child = Command::new(pufa_tests::bin_dir().join("pufa-server"))
        .args(["--data", dir.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn,pufa_server=info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("listening") && line.contains("addr=") => break,
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Some(child)
}

impl BinServer {
    async fn start(dir: PathBuf) -> BinServer {
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let d = dir.clone();
            if let Some(child) = tokio::task::spawn_blocking(move || spawn_binary(&d, port))
                .await
                .unwrap()
            {
                return BinServer {
                    child: Some(child),
                    port,
                    dir,
                };
            }
        }
        panic!("the server binary would not start");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }

    /// Restarts on the same dir and port (retrying while the port is busy).
    async fn restart(&mut self) {
        assert!(self.child.is_none());
        for _ in 0..50 {
            let (d, port) = (self.dir.clone(), self.port);
            if let Some(child) = tokio::task::spawn_blocking(move || spawn_binary(&d, port))
                .await
                .unwrap()
            {
                self.child = Some(child);
                return;
            }
            // Back off before binding the port again (not a readiness wait).
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the server binary would not restart on port {}", self.port);
    }
}

impl Drop for BinServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ------------------------------------------------- what the devices saw

/// One push result as a device received it: status, seq, stored HLC.
type Answer = (MutationStatus, Option<u64>, Option<Hlc>);

/// Every push the devices sent and every push answer that reached them.
#[derive(Default)]
struct Ledger {
    /// Mutations as pushed, by id.
    sent: Mutex<HashMap<Uuid, Mutation>>,
    /// `(status, seq, stored hlc)` of every result a device received.
    answers: Mutex<HashMap<Uuid, Vec<Answer>>>,
}

/// `HttpTransport`, writing pushes and their answers into the ledger.
struct Recorded {
    http: HttpTransport,
    ledger: Arc<Ledger>,
    pushes: Arc<InFlight>,
}

/// Pushes on the wire, for the killer to aim at.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    changed: Notify,
}

#[async_trait]
impl Transport for Recorded {
    async fn send(&self, req: Request) -> Result<Response, TransportError> {
        let push = req.path == "/v1/sync/push";
        if push {
            let body: PushRequest =
                serde_json::from_slice(req.body.as_deref().unwrap_or_default()).unwrap();
            let mut sent = self.ledger.sent.lock().unwrap();
            for m in body.mutations {
                sent.insert(m.id, m);
            }
        }
        if push {
            self.pushes.count.fetch_add(1, Ordering::SeqCst);
            self.pushes.changed.notify_waiters();
        }
        let r = self.http.send(req).await;
        if push {
            self.pushes.count.fetch_sub(1, Ordering::SeqCst);
        }
        let r = r?;
        if push && r.status == 200 {
            let resp: PushResponse = serde_json::from_slice(&r.body).unwrap();
            let mut answers = self.ledger.answers.lock().unwrap();
            for x in resp.results {
                answers
                    .entry(x.id)
                    .or_default()
                    .push((x.status, x.seq, x.hlc));
            }
        }
        Ok(r)
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
fn local_round(d: &Device, rng: &mut rand_chacha::ChaCha8Rng, created: &mut Vec<Uuid>) {
    let work = pufa_tests::LocalWork {
        ops_max: OPS_PER_ROUND_MAX,
        creates_max: CREATES_MAX,
        create_percent: 45,
        title: "民法典进社区",
    };
    pufa_tests::random_local_round(&d.client, d.street, work, rng, created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_survive_a_server_sigkilled_again_and_again() {
    let devices_n = env_or("PUFA_TORTURE_DEVICES", DEVICES_DEFAULT as u64) as usize;
    let kills = env_or("PUFA_TORTURE_KILLS", KILLS_DEFAULT as u64) as usize;
    let rounds = env_or("PUFA_TORTURE_ROUNDS", ROUNDS_DEFAULT as u64) as usize;
    let seed = env_or("PUFA_TORTURE_SEED", SEED_DEFAULT);
    let started = Instant::now();
    pufa_tests::bin_dir();

    let data = tempfile::tempdir().unwrap();
    let mut server = BinServer::start(data.path().to_path_buf()).await;
    let base = server.url();
    let admin = std::fs::read_to_string(data.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let mut units = vec![json!({"code":"d","name":"区","type":"district","parent":null})];
    for s in 1..=STREETS {
        units.push(json!({"code": format!("s{s}"), "name": format!("{s}街道"), "type":"street", "parent":"d"}));
        for c in 1..=2 {
            units.push(json!({"code": format!("c{s}{c}"), "name": format!("{s}-{c}社区"), "type":"community", "parent": format!("s{s}")}));
        }
    }
    let (st, v) = api(
        &base,
        reqwest::Method::PUT,
        "/v1/admin/org-units",
        &admin,
        Some(json!(units)),
    )
    .await;
    assert_eq!(st, 200, "{v}");

    let ledger = Arc::new(Ledger::default());
    let pushes = Arc::new(InFlight::default());
    let mut devices = Vec::new();
    for i in 0..devices_n {
        let street = i % STREETS + 1;
        let body = json!({"role":"field","org_unit": format!("s{street}"), "label": format!("torture {i}")});
        let (st, v) = api(
            &base,
            reqwest::Method::POST,
            "/v1/admin/tokens",
            &admin,
            Some(body),
        )
        .await;
        assert_eq!(st, 201, "{v}");
        let token: TokenIssued = serde_json::from_value(v).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut config = ClientConfig::new(dir.path(), token.device_id, token.token.clone());
        config.retry = RetryPolicy {
            // Some devices give up on a sync while the server is down (and
            // keep their outbox for the next), some retry through restarts.
            attempts: 2 + (i % 3) as u32,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
            seed: seed ^ i as u64,
        };
        let transport = Arc::new(Recorded {
            http: HttpTransport::new(&base).unwrap(),
            ledger: ledger.clone(),
            pushes: pushes.clone(),
        });
        let client = Client::open(config, transport).unwrap();
        devices.push(Arc::new(Device {
            token,
            street,
            client,
            _dir: dir,
        }));
    }

    // The devices work until the last kill (and at least `rounds` rounds).
    let done = Arc::new(AtomicBool::new(false));
    let synced = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        let (d, done, synced, progress) =
            (d.clone(), done.clone(), synced.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng =
                rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1000) + i as u64);
            let mut created = Vec::new();
            let mut round = 0;
            let mut unreachable = 0u64;
            while round < rounds || !done.load(Ordering::SeqCst) {
                round += 1;
                let (dd, mut r, mut c) = (d.clone(), rng.clone(), std::mem::take(&mut created));
                (rng, created) = tokio::task::spawn_blocking(move || {
                    local_round(&dd, &mut r, &mut c);
                    (r, c)
                })
                .await
                .unwrap();
                match d.client.sync().await {
                    Ok(report) => {
                        assert!(report.rejected.is_empty(), "device {i}: {report:?}");
                        synced.fetch_add(1, Ordering::SeqCst);
                        progress.notify_one();
                    }
                    Err(pufa_client::Error::Unreachable(_)) => unreachable += 1,
                    Err(e) => panic!("device {i}: sync failed: {e}"),
                }
            }
            (created, round, unreachable)
        }));
    }

    let mut killer = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x6b69_6c6c);
    let mut in_flight_at_kills = 0;
    for k in 0..kills {
        let wait_for =
            synced.load(Ordering::SeqCst) + killer.gen_range(1..=SYNCS_BETWEEN_KILLS_MAX);
        while synced.load(Ordering::SeqCst) < wait_for {
            progress.notified().await;
        }
        // Then aim: kill while pushes are on the wire.
        let aim = killer.gen_range(1..=PUSHES_IN_FLIGHT_MAX);
        loop {
            let changed = pushes.changed.notified();
            if pushes.count.load(Ordering::SeqCst) >= aim {
                break;
            }
            changed.await;
        }
        in_flight_at_kills += pushes.count.load(Ordering::SeqCst);
        server.kill();
        server.restart().await;
        if k % 5 == 4 {
            eprintln!("torture: {} kills, {:?}", k + 1, started.elapsed());
        }
    }
    done.store(true, Ordering::SeqCst);
    let mut created: HashSet<Uuid> = HashSet::new();
    let (mut rounds_total, mut unreachable_total) = (0, 0);
    for t in tasks {
        let (c, r, u) = t.await.unwrap();
        rounds_total += r;
        unreachable_total += u;
        for id in c {
            assert!(created.insert(id), "a record id made twice");
        }
    }

    // Final syncs, one device at a time, until every outbox is empty and
    // every checksum agrees.
    for (i, d) in devices.iter().enumerate() {
        let mut last = None;
        for _ in 0..FINAL_SYNC_ATTEMPTS {
            match d.client.sync().await {
                Ok(r) if r.checksum_ok && d.client.status().unwrap().pending == 0 => {
                    last = Some(r);
                    break;
                }
                Ok(r) => last = Some(r),
                Err(pufa_client::Error::Unreachable(_)) => {}
                Err(e) => panic!("device {i}: final sync failed: {e}"),
            }
        }
        let r = last.unwrap_or_else(|| panic!("device {i}: no final sync succeeded"));
        assert!(r.checksum_ok, "device {i}: {r:?}");
        assert!(r.rejected.is_empty(), "device {i}: {r:?}");
        assert_eq!(d.client.status().unwrap().pending, 0, "device {i}");
    }

    // 1. The server holds exactly the records the devices created.
    let on_server = pull_all(&base, &admin).await;
    let server_ids: HashSet<Uuid> = on_server.keys().copied().collect();
    assert_eq!(
        server_ids.len(),
        created.len(),
        "records on the server vs made by devices"
    );
    assert_eq!(server_ids, created);

    // 2. Nothing applied twice, nothing rejected, every mutation answered.
    let sent = ledger.sent.lock().unwrap().clone();
    let answers = ledger.answers.lock().unwrap().clone();
    let mut duplicates = 0;
    for (id, seen) in &answers {
        let applied = seen
            .iter()
            .filter(|a| a.0 == MutationStatus::Applied)
            .count();
        assert!(
            applied <= 1,
            "mutation {id} applied {applied} times: {seen:?}"
        );
        assert!(
            seen.iter().all(|a| a.0 != MutationStatus::Rejected),
            "mutation {id} rejected: {seen:?}"
        );
        assert!(
            seen.iter().all(|a| a.1 == seen[0].1 && a.2 == seen[0].2),
            "mutation {id}: a duplicate did not repeat the first result: {seen:?}"
        );
        duplicates += seen.len() - applied;
    }
    let unanswered: Vec<_> = sent.keys().filter(|id| !answers.contains_key(id)).collect();
    assert!(
        unanswered.is_empty(),
        "mutations never acknowledged: {unanswered:?}"
    );

    // 3. Every acknowledged write is there: per record, each field and the
    // deleted flag hold the acknowledged write with the greatest HLC.
    pufa_tests::assert_last_writer_wins(
        answers
            .iter()
            .map(|(id, seen)| (&sent[id], seen[0].2.unwrap_or(sent[id].hlc))),
        &on_server,
    );

    // 4. Every device holds exactly the server's view of its scope.
    for (i, d) in devices.iter().enumerate() {
        let theirs = pull_all(&base, &d.token.token).await;
        let mine = d
            .client
            .list(&Filter {
                include_deleted: true,
                ..Filter::default()
            })
            .unwrap();
        let mut in_scope = 0;
        for e in theirs.values() {
            if let PullEntry::Record(r) = e {
                in_scope += 1;
                assert!(
                    r.fields["org_unit"]
                        .as_str()
                        .unwrap()
                        .starts_with(&format!("c{}", d.street)),
                    "device {i} sees {r:?}"
                );
            }
        }
        assert_eq!(mine.len(), in_scope, "device {i}: records held vs in scope");
        for l in mine {
            let Some(PullEntry::Record(r)) = theirs.get(&l.id) else {
                panic!("device {i} holds {} which the server does not list", l.id);
            };
            // Concurrent edits make conflicts: data, not errors.
            let open = match &l.state {
                SyncState::Synced => 0,
                SyncState::Conflicted { open, .. } => *open,
                other => panic!("device {i}: record {} is {other:?}", l.id),
            };
            assert_eq!(open, r.conflicts, "device {i}: open conflicts of {}", l.id);
            assert_eq!(
                (&l.fields, l.deleted, l.seq),
                (&r.fields, r.deleted, r.seq),
                "device {i}: {}",
                l.id
            );
        }
    }
    let (st, c) = api(
        &base,
        reqwest::Method::GET,
        "/v1/sync/checksum",
        &admin,
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(c["count"], json!(created.len()));

    eprintln!(
        "torture: {devices_n} devices, {kills} SIGKILLs survived ({in_flight_at_kills} pushes on the wire at the kills); {} records, {} mutations acknowledged and verified ({duplicates} answered again as duplicate); {rounds_total} device rounds, {unreachable_total} syncs cut off by a kill; {:?}",
        created.len(),
        answers.len(),
        started.elapsed()
    );
    server.kill();
}
