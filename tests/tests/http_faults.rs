//! The SDK over real HTTP, with faults on the wire and in the processes:
//!
//! 1. a TCP proxy that cuts connections mid-request and mid-response while
//!    three devices push, pull and edit each other's records through it;
//! 2. the server binary SIGKILLed mid-sync (twice while the device pushes,
//!    once while it pulls) and restarted on the same data dir and port;
//! 3. a device's sync task aborted mid-sync, the client dropped and its store
//!    reopened by a new client.
//!
//! In every case: nothing lost, nothing applied twice (a mutation the server
//! applied without the device hearing of it comes back as `duplicate`), the
//! device's checksum agrees, its outbox is empty and it holds exactly the
//! server's view of its scope.
//!
//! Scenario 2 runs `target/<profile>/pufa-server`, which it builds first
//! with `cargo build -p pufa-server --bin pufa-server` (a no-op when fresh).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pufa_client::transport::{Request, Response, Transport, TransportError};
use pufa_client::{
    Client, ClientConfig, Filter, HttpTransport, Phase, RetryPolicy, SyncReport, SyncState,
};
use pufa_core::schema::Kind;
use pufa_core::wire::{
    ChecksumResponse, MutationStatus, PullEntry, PushRequest, PushResponse, TokenIssued,
};
use pufa_tests::{api, pull_all};
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};
use uuid::Uuid;

// ---------------------------------------------------------------- helpers

/// district `d` → streets `s1`, `s2` → `c11`, `c12` (in s1), `c21` (in s2).
async fn setup_tree(base: &str, admin: &str) {
    let units = json!([
        {"code":"d","name":"区","type":"district","parent":null},
        {"code":"s1","name":"一街道","type":"street","parent":"d"},
        {"code":"s2","name":"二街道","type":"street","parent":"d"},
        {"code":"c11","name":"一一社区","type":"community","parent":"s1"},
        {"code":"c12","name":"一二社区","type":"community","parent":"s1"},
        {"code":"c21","name":"二一村","type":"village","parent":"s2"},
    ]);
    let (st, v) = api(
        base,
        reqwest::Method::PUT,
        "/v1/admin/org-units",
        admin,
        Some(units),
    )
    .await;
    assert_eq!(st, 200, "{v}");
}

async fn enrol(base: &str, admin: &str, org: &str, label: &str) -> TokenIssued {
    let body = json!({"role":"field","org_unit":org,"label":label});
    let (st, v) = api(
        base,
        reqwest::Method::POST,
        "/v1/admin/tokens",
        admin,
        Some(body),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    serde_json::from_value(v).unwrap()
}

async fn server_checksum(base: &str, token: &str) -> ChecksumResponse {
    let (st, v) = api(base, reqwest::Method::GET, "/v1/sync/checksum", token, None).await;
    assert_eq!(st, 200, "{v}");
    serde_json::from_value(v).unwrap()
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn lecture(org: &str, tag: &str, i: usize) -> (Kind, Map<String, Value>) {
    (
        Kind::Lecture,
        obj(json!({
            "org_unit": org,
            "held_on": "2020-06-15",
            "title": format!("{tag} 民法典宣讲 {i}"),
            "attendees": i % 500,
        })),
    )
}

fn fast_retry(seed: u64) -> RetryPolicy {
    RetryPolicy {
        attempts: 10,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        seed,
    }
}

fn open_client(
    dir: &Path,
    t: &TokenIssued,
    transport: Arc<dyn Transport>,
    seed: u64,
    push_batch: Option<usize>,
    pull_limit: Option<usize>,
) -> Client {
    let mut config = ClientConfig::new(dir, t.device_id, t.token.clone());
    config.retry = fast_retry(seed);
    if let Some(b) = push_batch {
        config.push_batch = b;
    }
    if let Some(l) = pull_limit {
        config.pull_limit = l;
    }
    Client::open(config, transport).unwrap()
}

/// Syncs until `sync()` returns Ok; only `Unreachable` is tolerated in between.
async fn sync_until_ok(client: &Client, what: &str) -> (SyncReport, usize) {
    for attempt in 1..=100 {
        match client.sync().await {
            Ok(r) => return (r, attempt),
            Err(pufa_client::Error::Unreachable(_)) => continue,
            Err(e) => panic!("{what}: sync failed with a non-transient error: {e}"),
        }
    }
    panic!("{what}: sync did not succeed in 100 attempts");
}

/// `(kind, fields, deleted, seq)` per record.
type View = BTreeMap<Uuid, (String, Map<String, Value>, bool, u64)>;

fn local_view(client: &Client) -> View {
    let all = client
        .list(&Filter {
            include_deleted: true,
            ..Filter::default()
        })
        .unwrap();
    all.into_iter()
        .map(|r| {
            assert_eq!(
                r.state,
                SyncState::Synced,
                "record {} is not synced on the device",
                r.id
            );
            (
                r.id,
                (r.kind.as_str().to_string(), r.fields, r.deleted, r.seq),
            )
        })
        .collect()
}

fn server_view(entries: &BTreeMap<Uuid, PullEntry>) -> View {
    entries
        .values()
        .filter_map(|e| match e {
            PullEntry::Record(r) => {
                Some((r.id, (r.kind.clone(), r.fields.clone(), r.deleted, r.seq)))
            }
            PullEntry::Gone(_) => None,
        })
        .collect()
}

/// What a device's pushes sent and what came back.
#[derive(Default)]
struct PushLog {
    /// How often each mutation id was handed to HTTP in a push.
    sent: Mutex<HashMap<Uuid, u32>>,
    /// `(mutation id, status, seq)` of every push result received.
    results: Mutex<Vec<(Uuid, MutationStatus, Option<u64>)>>,
}

/// An `HttpTransport` that also writes down what each push sent and what
/// came back (only answers that reached the device), and can withhold one
/// push answer: the server applied the batch, the device never hears of it.
struct Recording {
    http: HttpTransport,
    log: Arc<PushLog>,
    /// Push answers received by this transport.
    answered: AtomicU64,
    hold: Mutex<Option<Hold>>,
}

/// Withhold the `nth` push answer: signal `held`, wait for `release`, then
/// fail as if the connection had dropped.
struct Hold {
    nth: u64,
    held: Arc<Notify>,
    release: Arc<Notify>,
}

impl std::ops::Deref for Recording {
    type Target = PushLog;
    fn deref(&self) -> &PushLog {
        &self.log
    }
}

impl Recording {
    fn new(base: &str) -> Arc<Recording> {
        Recording::with_log(base, Arc::default())
    }

    /// A fresh HTTP client writing to an existing log.
    fn with_log(base: &str, log: Arc<PushLog>) -> Arc<Recording> {
        Arc::new(Recording {
            http: HttpTransport::new(base).unwrap(),
            log,
            answered: AtomicU64::new(0),
            hold: Mutex::new(None),
        })
    }

    /// Withholds the `k`-th push answer from now on; returns `(held,
    /// release)`.
    fn hold_answer(&self, k: u64) -> (Arc<Notify>, Arc<Notify>) {
        let (held, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        *self.hold.lock().unwrap() = Some(Hold {
            nth: self.answered.load(Ordering::SeqCst) + k,
            held: held.clone(),
            release: release.clone(),
        });
        (held, release)
    }
}

impl PushLog {
    fn sent_ids(&self) -> HashSet<Uuid> {
        self.sent.lock().unwrap().keys().copied().collect()
    }
}

#[async_trait]
impl Transport for Recording {
    async fn send(&self, req: Request) -> Result<Response, TransportError> {
        let push = req.path == "/v1/sync/push";
        if push {
            let body: PushRequest =
                serde_json::from_slice(req.body.as_deref().unwrap_or_default()).unwrap();
            let mut sent = self.sent.lock().unwrap();
            for m in &body.mutations {
                *sent.entry(m.id).or_default() += 1;
            }
        }
        let r = self.http.send(req).await?;
        if push && r.status == 200 {
            let n = self.answered.fetch_add(1, Ordering::SeqCst) + 1;
            let hold = {
                let mut h = self.hold.lock().unwrap();
                if h.as_ref().is_some_and(|h| h.nth == n) {
                    h.take()
                } else {
                    None
                }
            };
            if let Some(h) = hold {
                h.held.notify_one();
                h.release.notified().await;
                return Err(TransportError("test: push answer withheld".into()));
            }
            let resp: PushResponse = serde_json::from_slice(&r.body).unwrap();
            self.results
                .lock()
                .unwrap()
                .extend(resp.results.iter().map(|x| (x.id, x.status, x.seq)));
        }
        Ok(r)
    }
}

/// Checks the push answers a device received: each of its `edits`
/// mutations was answered exactly once (the SDK never pushes again what was
/// answered), none was rejected, and `duplicate` came only for mutations
/// sent before without an answer reaching the device. Returns
/// `(applied, duplicates)`.
fn check_push_answers(rec: &PushLog, edits: usize, who: &str) -> (usize, usize) {
    let sent = rec.sent.lock().unwrap().clone();
    let mut seen: HashMap<Uuid, (MutationStatus, Option<u64>)> = HashMap::new();
    for &(id, st, seq) in rec.results.lock().unwrap().iter() {
        assert!(
            st != MutationStatus::Rejected && seq.is_some(),
            "{who}: mutation {id} answered {st:?} {seq:?}"
        );
        if let Some(prev) = seen.insert(id, (st, seq)) {
            panic!("{who}: mutation {id} answered twice: {prev:?}, then {st:?} {seq:?}");
        }
        if st == MutationStatus::Duplicate {
            assert!(
                sent[&id] >= 2,
                "{who}: mutation {id} is a duplicate, yet was sent only once"
            );
        }
    }
    assert_eq!(seen.len(), edits, "{who}: answered mutations != edits made");
    let dups = seen
        .values()
        .filter(|(st, _)| *st == MutationStatus::Duplicate)
        .count();
    (seen.len() - dups, dups)
}

/// The server in process, serving HTTP on 127.0.0.1:0; stops on drop.
struct InProcessServer {
    addr: SocketAddr,
    url: String,
    admin: String,
    stop: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl InProcessServer {
    async fn start() -> InProcessServer {
        let dir = tempfile::tempdir().unwrap();
        let config = pufa_server::Config::new(dir.path());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // `open` completes before serving: ready once it returns.
        let state = pufa_server::open(config).await.unwrap();
        let (tx, rx) = oneshot::channel();
        tokio::spawn(pufa_server::serve(state, listener, async {
            let _ = rx.await;
        }));
        let admin = std::fs::read_to_string(dir.path().join("admin.token"))
            .unwrap()
            .trim()
            .to_string();
        InProcessServer {
            addr,
            url: format!("http://{addr}"),
            admin,
            stop: Some(tx),
            _dir: dir,
        }
    }
}

impl Drop for InProcessServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

// ------------------------------------------------------------ 1. the proxy

/// How a connection will be cut.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// After exactly this many bytes of the client's stream (mid-request).
    Request(u64),
    /// After exactly this many bytes of the server's stream (mid-response).
    Response(u64),
    /// Each chunk read, either way, may be the last: cut somewhere inside it.
    Random,
}

/// Which way bytes flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Request,
    Response,
}

/// Decides where connections are cut, from a seeded RNG and counters.
struct FaultPlan {
    rng: rand_chacha::ChaCha8Rng,
    /// Connections opened by a push seen so far.
    push_openers: u32,
    /// Random cuts made so far.
    random: u32,
}

/// The first connections opened by a push are cut deterministically, in
/// turn mid-response (the server applied the batch; the answer is lost) and
/// mid-request (the server never saw the whole batch).
const FORCED_PUSH_CUTS: u32 = 6;
/// Chance that a chunk read from either side is where its connection dies
/// (memoryless: a connection that survived a while is no safer, so later
/// rounds of small requests meet cuts too).
const CUT_PER_CHUNK: f64 = 0.07;
/// After this many random cuts the proxy lets everything through (so that
/// syncing until Ok terminates).
const RANDOM_CUTS_MAX: u32 = 150;

impl FaultPlan {
    fn opening(&mut self, opens_with_push: bool) -> Cut {
        if opens_with_push && self.push_openers < FORCED_PUSH_CUTS {
            let k = self.push_openers;
            self.push_openers += 1;
            // A push of ~340 mutations is ~100 KB, its answer ~50 KB: 2 KB
            // in is always inside it.
            let at = self.rng.gen_range(1..2_000);
            return [Cut::Response(at), Cut::Request(at)][k as usize % 2];
        }
        Cut::Random
    }

    /// Whether to cut inside a chunk of `len` bytes: how many to forward.
    fn chunk(&mut self, len: usize) -> Option<usize> {
        if self.random >= RANDOM_CUTS_MAX || !self.rng.gen_bool(CUT_PER_CHUNK) {
            return None;
        }
        self.random += 1;
        // At least one byte in when we can: the peer sees a torn message.
        Some(if len > 1 {
            self.rng.gen_range(1..len)
        } else {
            0
        })
    }
}

#[derive(Debug, Default)]
struct ProxyStats {
    connections: AtomicU64,
    cut_mid_request: AtomicU64,
    cut_mid_response: AtomicU64,
}

struct Proxy {
    url: String,
    stats: Arc<ProxyStats>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_proxy(upstream: SocketAddr, seed: u64) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stats = Arc::new(ProxyStats::default());
    let plan = Arc::new(Mutex::new(FaultPlan {
        rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
        push_openers: 0,
        random: 0,
    }));
    let task = tokio::spawn({
        let stats = stats.clone();
        async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                stats.connections.fetch_add(1, Ordering::SeqCst);
                conns.spawn(proxy_connection(
                    client,
                    upstream,
                    plan.clone(),
                    stats.clone(),
                ));
                // Reap finished connections so the set stays small.
                while conns.try_join_next().is_some() {}
            }
        }
    });
    Proxy { url, stats, task }
}

async fn proxy_connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    plan: Arc<Mutex<FaultPlan>>,
    stats: Arc<ProxyStats>,
) {
    // Read the start of the first request, to recognise pushes.
    let mut first = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    while first.len() < 32 {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => first.extend_from_slice(&buf[..n]),
        }
    }
    if first.is_empty() {
        return;
    }
    let cut = plan
        .lock()
        .unwrap()
        .opening(first.starts_with(b"POST /v1/sync/push "));
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let (up_limit, down_limit) = match cut {
        Cut::Request(n) => (Some(n), None),
        Cut::Response(n) => (None, Some(n)),
        Cut::Random => (None, None),
    };
    let random = matches!(cut, Cut::Random).then_some(&*plan);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pump(first, cr, sw, up_limit, random);
    let down = pump(Vec::new(), sr, cw, down_limit, random);
    tokio::pin!(up, down);
    let (mut up_open, mut down_open) = (true, true);
    while up_open || down_open {
        let (dir, cut) = tokio::select! {
            cut = &mut up, if up_open => (Dir::Request, cut),
            cut = &mut down, if down_open => (Dir::Response, cut),
        };
        if cut {
            let counter = match dir {
                Dir::Request => &stats.cut_mid_request,
                Dir::Response => &stats.cut_mid_response,
            };
            counter.fetch_add(1, Ordering::SeqCst);
            // Returning drops all four halves: both sides are closed.
            return;
        }
        match dir {
            Dir::Request => up_open = false,
            Dir::Response => down_open = false,
        }
    }
}

/// Copies `from` to `to` (starting with `pending`) until EOF (false), or
/// until it cuts the stream with bytes left unforwarded (true): after exactly
/// `limit` bytes, or where the plan says so.
async fn pump(
    mut pending: Vec<u8>,
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut limit: Option<u64>,
    random: Option<&Mutex<FaultPlan>>,
) -> bool {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if pending.is_empty() {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return false;
                }
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        }
        let mut keep = None;
        if let Some(left) = limit.as_mut() {
            if pending.len() as u64 > *left {
                keep = Some(*left as usize);
            } else {
                *left -= pending.len() as u64;
            }
        }
        if let Some(plan) = random {
            keep = plan.lock().unwrap().chunk(pending.len());
        }
        if let Some(k) = keep {
            let _ = to.write_all(&pending[..k]).await;
            let _ = to.flush().await;
            return true;
        }
        if to.write_all(&pending).await.is_err() {
            return false;
        }
        pending.clear();
    }
}

const LECTURES: usize = 300;
/// Each device updates its first 30 lectures and deletes its last 10.
const UPDATED: usize = 30;
const DELETED: usize = 10;

struct ProxiedDevice {
    name: &'static str,
    org: &'static str,
    token: TokenIssued,
    client: Client,
    rec: Arc<Recording>,
    /// Records it created, in order.
    ids: Vec<Uuid>,
    /// Local edits it made (one mutation each).
    edits: usize,
    reports: Vec<SyncReport>,
    _dir: tempfile::TempDir,
}

/// Syncs all devices at once, each until Ok.
async fn sync_all_concurrently(devices: &mut [ProxiedDevice], stats: &ProxyStats, round: &str) {
    let tasks: Vec<_> = devices
        .iter()
        .map(|d| {
            let (client, what) = (d.client.clone(), format!("{round}: device {}", d.name));
            tokio::spawn(async move { sync_until_ok(&client, &what).await })
        })
        .collect();
    for (d, t) in devices.iter_mut().zip(tasks) {
        let (r, attempts) = t.await.unwrap();
        eprintln!(
            "{round}: {} ok after {attempts} sync(s): pushed {} applied {} duplicates {} pulled {}; proxy {stats:?}",
            d.name, r.pushed, r.applied, r.duplicates, r.pulled
        );
        d.reports.push(r);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_cutting_connections_loses_and_doubles_nothing() {
    let started = Instant::now();
    let server = InProcessServer::start().await;
    setup_tree(&server.url, &server.admin).await;
    let proxy = start_proxy(server.addr, 0x5eed_0001).await;

    let mut devices = Vec::new();
    for (i, (name, scope, org)) in [("A", "s1", "c11"), ("B", "s1", "c12"), ("C", "d", "c21")]
        .into_iter()
        .enumerate()
    {
        let token = enrol(&server.url, &server.admin, scope, name).await;
        let dir = tempfile::tempdir().unwrap();
        let rec = Recording::new(&proxy.url);
        let client = open_client(
            dir.path(),
            &token,
            rec.clone(),
            100 + i as u64,
            None,
            Some(100),
        );
        // Offline: 300 lectures, 30 updates, 10 deletes.
        let ids = client
            .create_many((0..LECTURES).map(|j| lecture(org, name, j)).collect())
            .unwrap();
        for (j, id) in ids.iter().enumerate().take(UPDATED) {
            client
                .update(
                    *id,
                    obj(json!({"attendees": 1000 + j, "title": format!("{name} 更新 {j}")})),
                )
                .unwrap();
        }
        for id in &ids[LECTURES - DELETED..] {
            client.delete(*id).unwrap();
        }
        assert_eq!(
            client.status().unwrap().pending,
            (LECTURES + UPDATED + DELETED) as u64
        );
        devices.push(ProxiedDevice {
            name,
            org,
            token,
            client,
            rec,
            ids,
            edits: LECTURES + UPDATED + DELETED,
            reports: Vec::new(),
            _dir: dir,
        });
    }

    // Round 1: everyone pushes its offline work through the faulty proxy.
    sync_all_concurrently(&mut devices, &proxy.stats, "round 1").await;
    // Everyone learns of everyone else's records.
    for d in &mut devices {
        let (r, _) = sync_until_ok(&d.client, "catch-up").await;
        d.reports.push(r);
    }
    // Round 2: edits of each other's records. A edits B's first ten, B edits
    // A's first ten, C sets a speaker on A's and B's lectures 5..15.
    let (a_ids, b_ids) = (devices[0].ids.clone(), devices[1].ids.clone());
    for (j, id) in b_ids.iter().enumerate().take(10) {
        devices[0]
            .client
            .update(*id, obj(json!({"attendees": 2000 + j})))
            .unwrap();
    }
    devices[0].edits += 10;
    for (j, id) in a_ids.iter().enumerate().take(10) {
        devices[1]
            .client
            .update(*id, obj(json!({"attendees": 3000 + j})))
            .unwrap();
    }
    devices[1].edits += 10;
    for id in a_ids[5..15].iter().chain(&b_ids[5..15]) {
        devices[2]
            .client
            .update(*id, obj(json!({"speaker": "C 律师"})))
            .unwrap();
    }
    devices[2].edits += 20;
    sync_all_concurrently(&mut devices, &proxy.stats, "round 2").await;
    // Final round: everyone pulls what the others pushed in round 2.
    for d in &mut devices {
        let (r, _) = sync_until_ok(&d.client, "final").await;
        d.reports.push(r);
    }
    let stats = &proxy.stats;
    eprintln!("proxy: {stats:?}");

    // The proxy really cut connections both ways.
    assert!(
        stats.cut_mid_request.load(Ordering::SeqCst) >= 1,
        "no connection was cut mid-request: {stats:?}"
    );
    assert!(
        stats.cut_mid_response.load(Ordering::SeqCst) >= 1,
        "no connection was cut mid-response: {stats:?}"
    );

    // Push answers: every mutation answered once, none applied twice, and
    // the batches whose answers were cut came back as duplicates.
    let mut dups_total = 0;
    for d in &devices {
        let (applied, dups) = check_push_answers(&d.rec, d.edits, d.name);
        dups_total += dups;
        let reported_applied: u64 = d.reports.iter().map(|r| r.applied).sum();
        let reported_dups: u64 = d.reports.iter().map(|r| r.duplicates).sum();
        eprintln!(
            "device {}: answers: {applied} applied, {dups} duplicates; its Ok reports: {reported_applied} applied, {reported_dups} duplicates",
            d.name
        );
        assert!(reported_applied <= applied as u64 && reported_dups <= dups as u64);
        assert!(d.reports.iter().all(|r| r.rejected.is_empty()));
        assert!(d.reports.iter().all(|r| r.conflicts.is_empty()));
        assert!(d.reports.iter().all(|r| r.lost_on_server.is_empty()));
    }
    assert!(
        dups_total > 0,
        "push answers were cut, yet no mutation came back as duplicate"
    );
    let reported_dups: u64 = devices
        .iter()
        .flat_map(|d| &d.reports)
        .map(|r| r.duplicates)
        .sum();
    assert!(reported_dups > 0, "no sync report mentions a duplicate");

    // The server holds every record once, and nothing else.
    let all = pull_all(&server.url, &server.admin).await;
    let created: HashSet<Uuid> = devices.iter().flat_map(|d| d.ids.clone()).collect();
    assert_eq!(created.len(), 3 * LECTURES);
    assert_eq!(
        all.keys().copied().collect::<HashSet<_>>(),
        created,
        "the server's records differ from those created"
    );
    let sum = server_checksum(&server.url, &server.admin).await;
    assert_eq!(sum.count, created.len() as u64);
    // Every edit landed once, with the expected values.
    let field = |id: &Uuid, f: &str| match &all[id] {
        PullEntry::Record(r) => r.fields.get(f).cloned(),
        PullEntry::Gone(g) => panic!("{g:?} gone"),
    };
    let deleted = |id: &Uuid| matches!(&all[id], PullEntry::Record(r) if r.deleted);
    for d in &devices {
        for (j, id) in d.ids.iter().enumerate() {
            let want = match (d.name, j) {
                ("A", 0..10) => 3000 + j,
                ("B", 0..10) => 2000 + j,
                (_, j) if j < UPDATED => 1000 + j,
                _ => j % 500,
            };
            assert_eq!(field(id, "attendees"), Some(json!(want)), "{} #{j}", d.name);
            assert_eq!(field(id, "org_unit"), Some(json!(d.org)));
            assert_eq!(deleted(id), j >= LECTURES - DELETED, "{} #{j}", d.name);
            let speaker = matches!((d.name, j), ("A" | "B", 5..15));
            assert_eq!(
                field(id, "speaker"),
                speaker.then(|| json!("C 律师")),
                "{} #{j}",
                d.name
            );
        }
    }

    // Each device: checksum ok, nothing pending, and exactly the server's
    // view of its scope.
    for d in &devices {
        let last = d.reports.last().unwrap();
        assert!(last.checksum_ok, "device {}: {last:?}", d.name);
        let st = d.client.status().unwrap();
        assert_eq!(st.pending, 0, "device {}", d.name);
        assert_eq!(st.rejected, 0, "device {}", d.name);
        let theirs = server_view(&pull_all(&server.url, &d.token.token).await);
        let mine = local_view(&d.client);
        let expected = if d.name == "C" { 900 } else { 600 };
        assert_eq!(theirs.len(), expected, "device {}'s scope", d.name);
        assert_eq!(
            mine, theirs,
            "device {} differs from the server's view of its scope",
            d.name
        );
    }
    eprintln!("proxy scenario took {:?}", started.elapsed());
}

// ------------------------------------------- 2. SIGKILL of the real binary

/// The binary on a fixed port; killed on drop.
struct BinServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

/// Starts the binary and waits for its "listening" line; `None` if it
/// exited first (e.g. the port was taken).
fn spawn_binary(dir: &Path, port: u16) -> Option<Child> {
    let mut child = Command::new(pufa_tests::bin_dir().join("pufa-server"))
        .args(["--data", dir.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
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
    /// First start: a free port, found by binding :0 and letting it go.
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

const KILL_LECTURES: usize = 3000;
const KILL_BATCH: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sigkilled_mid_sync_loses_and_doubles_nothing() {
    let build = Instant::now();
    tokio::task::spawn_blocking(pufa_tests::bin_dir)
        .await
        .unwrap();
    eprintln!("cargo build -p pufa-server took {:?}", build.elapsed());
    let started = Instant::now();
    let data = tempfile::tempdir().unwrap();
    let mut server = BinServer::start(data.path().join("server")).await;
    let admin = std::fs::read_to_string(server.dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    setup_tree(&server.url(), &admin).await;
    let token = enrol(&server.url(), &admin, "d", "killed").await;
    let rec = Recording::new(&server.url());
    let client = open_client(
        &data.path().join("device"),
        &token,
        rec.clone(),
        7,
        Some(KILL_BATCH),
        Some(100),
    );
    let ids = client
        .create_many(
            (0..KILL_LECTURES)
                .map(|j| lecture(["c11", "c12", "c21"][j % 3], "K", j))
                .collect(),
        )
        .unwrap();

    // Kills while pushing, after 500 more mutations were acknowledged: in
    // cycle 1 whatever is in flight, in cycle 2 once the server answered the
    // next batch, whose answer the device never gets (it must come back as
    // duplicates). Then a kill while pulling, after 1000 feed positions.
    let mut acked_total = 0u64;
    let mut withheld = 0u64;
    for (cycle, phase, threshold, hold) in [
        (1, Phase::Push, 500, false),
        (2, Phase::Push, 500, true),
        (3, Phase::Pull, 1000, false),
    ] {
        let acked = Arc::new(AtomicU64::new(0));
        let reached = Arc::new(AtomicU64::new(0));
        let notify = Arc::new(Notify::new());
        let hold = hold.then(|| rec.hold_answer(threshold / KILL_BATCH as u64 + 1));
        let mut task = tokio::spawn({
            let (client, acked, reached, notify) = (
                client.clone(),
                acked.clone(),
                reached.clone(),
                notify.clone(),
            );
            async move {
                client
                    .sync_with_progress(move |p| {
                        if p.phase == Phase::Push {
                            acked.store(p.done, Ordering::SeqCst);
                        }
                        if p.phase == phase {
                            reached.store(p.done, Ordering::SeqCst);
                            notify.notify_one();
                        }
                    })
                    .await
            }
        });
        match &hold {
            Some((held, _)) => tokio::select! {
                () = held.notified() => {}
                r = &mut task => panic!("cycle {cycle}: the sync ended before the kill: {r:?}"),
            },
            None => {
                while reached.load(Ordering::SeqCst) < threshold {
                    tokio::select! {
                        () = notify.notified() => {}
                        r = &mut task => panic!("cycle {cycle}: the sync ended before the kill: {r:?}"),
                    }
                }
            }
        }
        server.kill();
        if let Some((_, release)) = &hold {
            release.notify_one();
        }
        let outcome = task.await.unwrap();
        assert!(
            matches!(outcome, Err(pufa_client::Error::Unreachable(_))),
            "cycle {cycle}: a sync whose server died must end Unreachable: {outcome:?}"
        );
        let acked_now = acked.load(Ordering::SeqCst);
        acked_total += acked_now;
        let status = client.status().unwrap();
        assert_eq!(
            status.pending,
            KILL_LECTURES as u64 - acked_total,
            "cycle {cycle}: acknowledged mutations leave the outbox, the rest stay"
        );
        server.restart().await;
        // Every acknowledged mutation survived the SIGKILL; at most the batch
        // in flight was applied without an answer.
        let on_server = pull_all(&server.url(), &admin).await.len() as u64;
        eprintln!(
            "cycle {cycle}: killed in {phase:?} at {}; {acked_now} acknowledged in this sync, {acked_total} in all; the server holds {on_server}; device cursor {}",
            reached.load(Ordering::SeqCst),
            status.cursor
        );
        assert!(
            on_server >= acked_total && on_server <= acked_total + KILL_BATCH as u64,
            "cycle {cycle}: the server holds {on_server}, the device saw {acked_total} acknowledged"
        );
        if hold.is_some() {
            assert_eq!(acked_now, threshold);
            assert_eq!(
                on_server,
                acked_total + KILL_BATCH as u64,
                "the batch whose answer was withheld is durable"
            );
            withheld += KILL_BATCH as u64;
        }
    }
    assert_eq!(acked_total, KILL_LECTURES as u64, "all pushed by cycle 3");
    let cursor = client.status().unwrap().cursor;
    assert!(cursor >= 1000, "pulled pages are kept: cursor {cursor}");

    let (report, attempts) = sync_until_ok(&client, "after restarts").await;
    eprintln!("final sync after {attempts} attempt(s): {report:?}");
    assert!(report.checksum_ok, "{report:?}");
    assert!(report.rejected.is_empty());
    assert_eq!(report.pushed, 0);
    assert!(
        !report.repaired && report.pulled < KILL_LECTURES as u64,
        "the pull resumes from the kept cursor: {report:?}"
    );
    let st = client.status().unwrap();
    assert_eq!(st.pending, 0);
    assert_eq!(st.rejected, 0);
    let (applied, dups) = check_push_answers(&rec, KILL_LECTURES, "killed device");
    eprintln!("push answers: {applied} applied, {dups} duplicates");
    assert!(
        dups as u64 >= withheld && dups as u64 <= withheld + KILL_BATCH as u64,
        "the withheld batch, and at most the batch in flight at the other push-phase kill, come back as duplicates"
    );

    let all = pull_all(&server.url(), &admin).await;
    assert_eq!(
        all.keys().copied().collect::<HashSet<_>>(),
        ids.iter().copied().collect::<HashSet<_>>(),
        "the server's records differ from those created"
    );
    assert_eq!(
        server_checksum(&server.url(), &admin).await.count,
        KILL_LECTURES as u64
    );
    let mine = local_view(&client);
    assert_eq!(mine.len(), KILL_LECTURES);
    assert_eq!(mine, server_view(&all));
    server.kill();
    eprintln!("sigkill scenario took {:?}", started.elapsed());
}

// ------------------------------------ 3. a sync aborted, the store reopened

const ABORT_LECTURES: usize = 1000;
const ABORT_UPDATES: usize = 50;
const ABORT_BATCH: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_aborted_and_store_reopened_loses_and_doubles_nothing() {
    let started = Instant::now();
    // Aborted wherever the task is when the abort lands.
    abort_and_reopen(false).await;
    // Aborted while the second batch's answer is withheld: the server applied
    // it, the device never heard, so it comes back as duplicates.
    abort_and_reopen(true).await;
    eprintln!("abort scenario took {:?}", started.elapsed());
}

async fn abort_and_reopen(withhold_second_answer: bool) {
    let server = InProcessServer::start().await;
    setup_tree(&server.url, &server.admin).await;
    let token = enrol(&server.url, &server.admin, "s1", "aborted").await;
    let dir = tempfile::tempdir().unwrap();
    let total = (ABORT_LECTURES + ABORT_UPDATES) as u64;

    let first = Recording::new(&server.url);
    let client = open_client(
        dir.path(),
        &token,
        first.clone(),
        1,
        Some(ABORT_BATCH),
        Some(200),
    );
    let ids = client
        .create_many(
            (0..ABORT_LECTURES)
                .map(|j| lecture(["c11", "c12"][j % 2], "X", j))
                .collect(),
        )
        .unwrap();
    // Updates at the end of the outbox: pushed after the abort.
    for (j, id) in ids.iter().enumerate().take(ABORT_UPDATES) {
        client
            .update(*id, obj(json!({"attendees": 7000 + j})))
            .unwrap();
    }

    let hold = withhold_second_answer.then(|| first.hold_answer(2));
    let acked = Arc::new(AtomicU64::new(0));
    let notify = Arc::new(Notify::new());
    let mut task = tokio::spawn({
        let (client, acked, notify) = (client.clone(), acked.clone(), notify.clone());
        async move {
            client
                .sync_with_progress(move |p| {
                    if p.phase == Phase::Push {
                        acked.store(p.done, Ordering::SeqCst);
                        notify.notify_one();
                    }
                })
                .await
        }
    });
    tokio::select! {
        () = notify.notified() => {}
        r = &mut task => panic!("the sync ended before the first batch was acknowledged: {r:?}"),
    }
    if let Some((held, _release)) = &hold {
        tokio::select! {
            () = held.notified() => {}
            r = &mut task => panic!("the sync ended before the second answer: {r:?}"),
        }
    }
    task.abort();
    let outcome = task.await;
    assert!(
        outcome.as_ref().is_err_and(|e| e.is_cancelled()),
        "the sync of {total} mutations was still running: {outcome:?}"
    );
    let acked_first = acked.load(Ordering::SeqCst);
    assert!(acked_first >= ABORT_BATCH as u64 && acked_first < total);
    let pending = client.status().unwrap().pending;
    assert_eq!(pending, total - acked_first);
    // What the aborted sync had acknowledged, and what it sent unanswered.
    let acked_ids: HashSet<Uuid> = first
        .results
        .lock()
        .unwrap()
        .iter()
        .map(|(id, st, _)| {
            assert_eq!(*st, MutationStatus::Applied);
            *id
        })
        .collect();
    assert_eq!(acked_ids.len() as u64, acked_first);
    let unanswered: HashSet<Uuid> = first.sent_ids().difference(&acked_ids).copied().collect();
    assert!(unanswered.len() <= ABORT_BATCH);
    if hold.is_some() {
        assert_eq!(acked_first, ABORT_BATCH as u64);
        assert_eq!(unanswered.len(), ABORT_BATCH);
    }
    drop(client); // as a killed app would; the aborted task's clone is gone too

    // The app starts again: a new HTTP client, the same store (and the
    // same log of pushes, to compare).
    let second = Recording::with_log(&server.url, first.log.clone());
    let client = open_client(
        dir.path(),
        &token,
        second.clone(),
        2,
        Some(ABORT_BATCH),
        Some(200),
    );
    assert_eq!(client.status().unwrap().pending, total - acked_first);
    let (report, _) = sync_until_ok(&client, "after reopen").await;
    eprintln!(
        "withheld: {withhold_second_answer}; aborted after {acked_first} acknowledged ({} sent unanswered); resumed: {report:?}",
        unanswered.len()
    );
    assert!(report.checksum_ok, "{report:?}");
    assert!(report.rejected.is_empty());
    // Nothing acknowledged before the abort is pushed again; a duplicate
    // can only be from the batch in flight at the abort.
    let (applied, dups) = check_push_answers(&second, total as usize, "reopened device");
    assert_eq!(report.pushed, total - acked_first);
    assert_eq!(report.duplicates, dups as u64);
    assert_eq!(acked_first + report.applied, applied as u64);
    assert_eq!(acked_first + report.applied + report.duplicates, total);
    for &(id, st, _) in second.results.lock().unwrap().iter() {
        if st == MutationStatus::Duplicate {
            assert!(
                unanswered.contains(&id),
                "duplicate {id} was not in flight at the abort"
            );
        }
    }
    if hold.is_some() {
        assert_eq!(
            report.duplicates, ABORT_BATCH as u64,
            "the batch the server applied without the device hearing comes back as duplicates"
        );
    }
    let st = client.status().unwrap();
    assert_eq!(st.pending, 0);

    let all = pull_all(&server.url, &server.admin).await;
    assert_eq!(
        all.keys().copied().collect::<HashSet<_>>(),
        ids.iter().copied().collect::<HashSet<_>>()
    );
    for (j, id) in ids.iter().enumerate() {
        let want = if j < ABORT_UPDATES { 7000 + j } else { j % 500 };
        match &all[id] {
            PullEntry::Record(r) => assert_eq!(r.fields["attendees"], json!(want), "#{j}"),
            other => panic!("{other:?}"),
        }
    }
    let mine = local_view(&client);
    assert_eq!(mine, server_view(&all));
}
