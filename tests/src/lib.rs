//! Harness for cross-crate scenarios: a real server (its router, in
//! process, on a temp dir with a manual clock and seeded ids) and SDK devices
//! that reach it through an in-process transport which can inject faults.

pub mod fault;
pub mod pg;
pub mod powercut;
pub mod webdriver;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::Request as HttpRequest;
use http_body_util::BodyExt;
use pufa_client::transport::{Request, Response, Transport, TransportError};
use pufa_client::{AdminClient, Client, ClientConfig, DeviceClock, RetryPolicy};
use pufa_core::wire::{OrgUnit, Role, TokenRequest};
use pufa_server::config::{ManualClock, SeededIds};
use pufa_server::AppState;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tower::ServiceExt;
use uuid::Uuid;

/// 2020-07-01T00:00:00Z: the simulated "now" at the start.
pub const T0: u64 = 1_593_561_600_000;

/// Probabilities of faults per request.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// The request never reaches the server.
    pub drop_request: f64,
    /// The server handles it, the answer is lost.
    pub drop_response: f64,
    /// The request arrives twice (the second answer is returned).
    pub duplicate: f64,
    /// The request waits for other tasks to run first.
    pub delay: f64,
}

/// Calls the server's router directly, with faults.
pub struct InProcess {
    router: Mutex<axum::Router>,
    faults: Mutex<(Faults, rand_chacha::ChaCha8Rng)>,
    offline: AtomicBool,
    /// Requests that reached the server.
    pub delivered: AtomicU64,
}

impl InProcess {
    pub fn new(state: AppState, faults: Faults, seed: u64) -> InProcess {
        InProcess {
            router: Mutex::new(pufa_server::router(state)),
            faults: Mutex::new((faults, rand_chacha::ChaCha8Rng::seed_from_u64(seed))),
            offline: AtomicBool::new(false),
            delivered: AtomicU64::new(0),
        }
    }

    /// Points this transport at another server (a restarted or restored one).
    pub fn replace_server(&self, state: AppState) {
        *self.router.lock().unwrap() = pufa_server::router(state);
    }

    /// While offline, every request fails without reaching the server.
    pub fn set_offline(&self, offline: bool) {
        self.offline.store(offline, Ordering::SeqCst);
    }

    pub fn set_faults(&self, faults: Faults) {
        self.faults.lock().unwrap().0 = faults;
    }

    async fn deliver(&self, req: &Request) -> Response {
        self.delivered.fetch_add(1, Ordering::SeqCst);
        let http = HttpRequest::builder()
            .method(req.method.as_str())
            .uri(&req.path)
            .header("authorization", format!("Bearer {}", req.token))
            .header("content-type", "application/json")
            .body(req.body.clone().map_or_else(Body::empty, Body::from))
            .expect("a well-formed request");
        let router = self.router.lock().unwrap().clone();
        let resp = router
            .oneshot(http)
            .await
            .expect("the router is infallible");
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .map(std::time::Duration::from_secs);
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("in-memory body")
            .to_bytes()
            .to_vec();
        Response {
            status,
            body,
            retry_after,
        }
    }
}

#[async_trait]
impl Transport for InProcess {
    async fn send(&self, req: Request) -> Result<Response, TransportError> {
        if self.offline.load(Ordering::SeqCst) {
            return Err(TransportError("offline".into()));
        }
        let (drop_req, drop_resp, dup, delay) = {
            let mut g = self.faults.lock().unwrap();
            let f = g.0;
            let r = &mut g.1;
            (
                r.gen_bool(f.drop_request),
                r.gen_bool(f.drop_response),
                r.gen_bool(f.duplicate),
                r.gen_bool(f.delay),
            )
        };
        if delay {
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
        }
        if drop_req {
            return Err(TransportError("injected: request dropped".into()));
        }
        let mut resp = self.deliver(&req).await;
        if dup {
            resp = self.deliver(&req).await;
        }
        if drop_resp {
            return Err(TransportError("injected: response dropped".into()));
        }
        Ok(resp)
    }
}

/// A device clock the test moves (ms).
#[derive(Debug, Default)]
pub struct TestClock(pub AtomicU64);

impl DeviceClock for TestClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A server on a temp dir with a manual clock.
pub struct World {
    pub state: AppState,
    pub clock: Arc<ManualClock>,
    pub admin: String,
    pub dir: tempfile::TempDir,
}

impl World {
    pub async fn new(seed: u64) -> World {
        let dir = tempfile::tempdir().unwrap();
        let mut config = pufa_server::Config::new(dir.path());
        let clock = Arc::new(ManualClock::new(T0));
        config.clock = clock.clone();
        config.ids = Arc::new(SeededIds::new(seed));
        let state = pufa_server::open(config).await.unwrap();
        let admin = std::fs::read_to_string(dir.path().join("admin.token"))
            .unwrap()
            .trim()
            .to_string();
        World {
            state,
            clock,
            admin,
            dir,
        }
    }

    /// Calls the API as `token`; returns status and JSON.
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let req = HttpRequest::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let resp = pufa_server::router(self.state.clone())
            .oneshot(req)
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// district `d` → streets `s1`, `s2` → communities `c11`, `c12`, `c21`, `c22`.
    pub async fn small_tree(&self) {
        let units = json!([
            {"code":"d","name":"区","type":"district","parent":null},
            {"code":"s1","name":"一街道","type":"street","parent":"d"},
            {"code":"s2","name":"二街道","type":"street","parent":"d"},
            {"code":"c11","name":"一一社区","type":"community","parent":"s1"},
            {"code":"c12","name":"一二社区","type":"community","parent":"s1"},
            {"code":"c21","name":"二一村","type":"village","parent":"s2"},
            {"code":"c22","name":"二二村","type":"village","parent":"s2"},
        ]);
        let units = serde_json::from_value::<Vec<OrgUnit>>(units).expect("org units");
        self.admin_client()
            .import_org_units(&units)
            .await
            .expect("the small tree is imported");
    }

    /// A token for `role` at `org`: `(device_id, token)`.
    pub async fn token(&self, role: &str, org: &str) -> (Uuid, String) {
        let t = self
            .admin_client()
            .issue_token(&TokenRequest {
                role: serde_json::from_value(json!(role)).expect("a role"),
                org_unit: Some(org.into()),
                label: Some(format!("{role} {org}")),
                device_id: None,
            })
            .await
            .unwrap_or_else(|e| panic!("a {role} token at {org}: {e}"));
        (t.device_id, t.token)
    }

    /// The admin's calls, straight to the router.
    pub fn admin_client(&self) -> AdminClient {
        let transport = InProcess::new(self.state.clone(), Faults::default(), 0);
        AdminClient::new(Arc::new(transport), self.admin.clone())
    }

    /// A field device at `org` with its own store and transport.
    pub async fn device(&self, org: &str, faults: Faults, seed: u64) -> Device {
        let (id, token) = self.token("field", org).await;
        let dir = tempfile::tempdir().unwrap();
        let transport = Arc::new(InProcess::new(self.state.clone(), faults, seed));
        let clock = Arc::new(TestClock(AtomicU64::new(self.clock.now_ms_value())));
        let client = open_client(
            dir.path(),
            id,
            &token,
            transport.clone(),
            clock.clone(),
            seed,
        );
        Device {
            id,
            token,
            client,
            transport,
            clock,
            dir,
        }
    }
}

/// Opens an SDK client with retries that do not sleep.
pub fn open_client(
    path: &std::path::Path,
    id: Uuid,
    token: &str,
    transport: Arc<InProcess>,
    clock: Arc<TestClock>,
    seed: u64,
) -> Client {
    let mut config = ClientConfig::new(path, id, token);
    config.retry = RetryPolicy {
        attempts: 4,
        base_delay: std::time::Duration::ZERO,
        max_delay: std::time::Duration::ZERO,
        seed,
    };
    config.clock = clock;
    Client::open(config, transport).unwrap()
}

trait ManualNow {
    fn now_ms_value(&self) -> u64;
}

impl ManualNow for ManualClock {
    fn now_ms_value(&self) -> u64 {
        pufa_server::config::Clock::now_ms(self)
    }
}

/// One simulated device.
pub struct Device {
    pub id: Uuid,
    pub token: String,
    pub client: Client,
    pub transport: Arc<InProcess>,
    pub clock: Arc<TestClock>,
    pub dir: tempfile::TempDir,
}

impl Device {
    /// Syncs until it succeeds (faults may make single attempts fail).
    pub async fn sync_until_ok(&self) -> pufa_client::SyncReport {
        for _ in 0..50 {
            match self.client.sync().await {
                Ok(r) => return r,
                Err(pufa_client::Error::Unreachable(_)) => continue,
                Err(e) => panic!("sync failed: {e}"),
            }
        }
        panic!("sync did not succeed in 50 attempts");
    }

    /// Drops the client (as a killed app would) and opens the store again.
    pub fn reopen(self, seed: u64) -> Device {
        let Device {
            id,
            token,
            client,
            transport,
            clock,
            dir,
        } = self;
        drop(client);
        // sled's background threads can hold the file lock a moment after
        // the last handle is dropped: retry on that error only, boundedly.
        let mut tries = 0;
        let client = loop {
            let mut config = ClientConfig::new(dir.path(), id, &token);
            config.retry = RetryPolicy {
                attempts: 4,
                base_delay: std::time::Duration::ZERO,
                max_delay: std::time::Duration::ZERO,
                seed,
            };
            config.clock = clock.clone();
            match Client::open(config, transport.clone()) {
                Ok(c) => break c,
                Err(pufa_client::Error::Store(e)) if e.contains("lock") && tries < 10_000 => {
                    tries += 1;
                    std::thread::yield_now();
                }
                Err(e) => panic!("reopening the device store: {e}"),
            }
        };
        Device {
            id,
            token,
            client,
            transport,
            clock,
            dir,
        }
    }
}

/// A lecture's fields.
pub fn lecture(
    org: &str,
    held_on: &str,
    title: &str,
    attendees: u64,
) -> serde_json::Map<String, Value> {
    match json!({"org_unit": org, "held_on": held_on, "title": title, "attendees": attendees}) {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

/// `target/<profile>/`, with the `pufa-server` and `pufa` binaries built in
/// it once per test process (a library dependency does not build them;
/// `cargo build` is a no-op when they are fresh).
pub fn bin_dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        // target/<profile>/deps/cli-<hash>: this follows CARGO_TARGET_DIR.
        let profile_dir = exe
            .parent()
            .and_then(std::path::Path::parent)
            .unwrap()
            .to_path_buf();
        let target_dir = profile_dir.parent().unwrap();
        let started = std::time::Instant::now();
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.args(["build", "-p", "pufa-server", "--bin", "pufa-server"])
            .args(["-p", "pufa-cli", "--bin", "pufa"])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        // What cargo set for this test process describes this package, not
        // the build: left in, it dirties build scripts that watch it (ring's
        // watches CARGO_MANIFEST_DIR), and every `cargo build` from a shell
        // and from here would rebuild the TLS stack for the other.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("CARGO_PKG_")
                || matches!(
                    k.as_ref(),
                    "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_BIN_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_TARGET_TMPDIR"
                        | "CARGO_RUSTC_CURRENT_DIR"
                        | "OUT_DIR"
                )
            {
                cmd.env_remove(k.as_ref());
            }
        }
        let out = cmd.output().expect("cargo runs");
        assert!(
            out.status.success(),
            "cargo build of pufa-server and pufa failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for bin in ["pufa-server", "pufa"] {
            let path = profile_dir.join(bin);
            assert!(path.exists(), "{} missing after the build", path.display());
        }
        eprintln!("cargo build of the binaries took {:?}", started.elapsed());
        profile_dir
    })
}

/// One HTTP call to a server under test (over loopback): the status and
/// the body as JSON (`null` when it is not JSON).
///
/// # Panics
/// When the server does not answer at all.
pub async fn api(
    base: &str,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("the server answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("a whole answer");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Every record `token` may see on the server at `base`, by id, paging
/// the feed from 0.
///
/// # Panics
/// On an answer other than 200, or a record listed twice in one pass.
pub async fn pull_all(
    base: &str,
    token: &str,
) -> std::collections::BTreeMap<Uuid, pufa_core::wire::PullEntry> {
    let mut got = std::collections::BTreeMap::new();
    let mut since = 0;
    loop {
        let (status, v) = api(
            base,
            reqwest::Method::GET,
            &format!("/v1/sync/pull?since={since}&limit=5000"),
            token,
            None,
        )
        .await;
        assert_eq!(status, 200, "{base}: {v}");
        let page: pufa_core::wire::PullResponse = serde_json::from_value(v).expect("a pull answer");
        for e in page.records {
            assert!(got.insert(e.id(), e).is_none(), "listed twice in one pass");
        }
        since = page.next;
        if !page.has_more {
            return got;
        }
    }
}

/// Asserts last-writer-wins on the server's records: for every record an
/// acknowledged mutation wrote, each field and the deleted flag hold the
/// value of the acknowledged write with the greatest HLC (ties broken by
/// the canonical value, as the merge does). `acked` pairs each mutation
/// with the HLC it was stored under (its own, or the server's restamp).
///
/// # Panics
/// When a record is missing or a field holds another value.
pub fn assert_last_writer_wins<'a>(
    acked: impl IntoIterator<Item = (&'a pufa_core::wire::Mutation, pufa_core::hlc::Hlc)>,
    on_server: &std::collections::BTreeMap<Uuid, pufa_core::wire::PullEntry>,
) {
    let wrong = last_writer_wins_differences(acked, [], on_server);
    assert!(
        wrong.is_empty(),
        "{} differences from last-writer-wins, first: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

/// Where the server's records differ from last-writer-wins over the
/// `acked` mutations (see [`assert_last_writer_wins`]), one entry per
/// record missing or field wrong. A field may also hold the value of an
/// `unanswered` mutation (sent, its answer lost) with a greater HLC: the
/// server may hold it.
pub fn last_writer_wins_differences<'a>(
    acked: impl IntoIterator<Item = (&'a pufa_core::wire::Mutation, pufa_core::hlc::Hlc)>,
    unanswered: impl IntoIterator<Item = &'a pufa_core::wire::Mutation>,
    on_server: &std::collections::BTreeMap<Uuid, pufa_core::wire::PullEntry>,
) -> Vec<Difference> {
    use pufa_core::hlc::Hlc;
    use pufa_core::merge::canonical_json;
    use std::collections::BTreeMap;
    type Key = (Hlc, String);
    /// Per record, per field: the best acknowledged write, then the
    /// unanswered writes that would beat it.
    type Offers = BTreeMap<Uuid, BTreeMap<String, (Option<(Key, Value)>, Vec<(Key, Value)>)>>;
    fn writes(m: &pufa_core::wire::Mutation) -> impl Iterator<Item = (&str, Value)> + '_ {
        m.set
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .chain(m.delete.map(|d| ("_deleted", Value::Bool(d))))
    }
    let mut offers: Offers = BTreeMap::new();
    for (m, hlc) in acked {
        let fields = offers.entry(m.record_id).or_default();
        for (field, v) in writes(m) {
            let key = (hlc, canonical_json(&v));
            let best = &mut fields.entry(field.to_string()).or_default().0;
            if best.as_ref().is_none_or(|(b, _)| *b < key) {
                *best = Some((key, v));
            }
        }
    }
    for m in unanswered {
        // Only where an acknowledged write is expected: a record that only
        // unanswered mutations wrote may or may not exist.
        let Some(fields) = offers.get_mut(&m.record_id) else {
            continue;
        };
        for (field, v) in writes(m) {
            if let Some(entry) = fields.get_mut(field) {
                let key = (m.hlc, canonical_json(&v));
                entry.1.push((key, v));
            }
        }
    }
    let mut wrong = Vec::new();
    for (rid, fields) in &offers {
        let Some(pufa_core::wire::PullEntry::Record(r)) = on_server.get(rid) else {
            wrong.push(Difference::Missing(*rid));
            continue;
        };
        for (field, (best, later)) in fields {
            let Some((best_key, best)) = best else {
                continue;
            };
            let held = if field == "_deleted" {
                Some(Value::Bool(r.deleted))
            } else {
                r.fields.get(field).cloned()
            };
            let matches = |v: &Value| match &held {
                Some(h) => h == v,
                None => v.is_null(),
            };
            let ok = matches(best) || later.iter().any(|(k, v)| k > best_key && matches(v));
            if !ok {
                wrong.push(Difference::Field {
                    record: *rid,
                    field: field.clone(),
                    expected: best.clone(),
                    held: held.unwrap_or(Value::Null),
                });
            }
        }
    }
    wrong
}

/// One way the server's records differ from what was acknowledged.
#[derive(Clone, Debug, PartialEq)]
pub enum Difference {
    /// An acknowledged mutation's record is not on the server.
    Missing(Uuid),
    /// A field (or `_deleted`) holds another value than the acknowledged
    /// write with the greatest HLC.
    Field {
        record: Uuid,
        field: String,
        expected: Value,
        held: Value,
    },
}

/// The org tree of the fault tests: district `d`, streets `s1`..=`s<streets>`,
/// each with the communities `c<street>1` and `c<street>2` that
/// [`random_local_round`] records in.
pub fn street_tree(streets: usize) -> Value {
    let mut units = vec![json!({"code":"d","name":"区","type":"district","parent":null})];
    for s in 1..=streets {
        units.push(json!({"code": format!("s{s}"), "name": format!("{s}街道"), "type":"street", "parent":"d"}));
        for c in 1..=2 {
            units.push(json!({"code": format!("c{s}{c}"), "name": format!("{s}-{c}社区"), "type":"community", "parent": format!("s{s}")}));
        }
    }
    Value::Array(units)
}

/// Imports [`street_tree`] as `admin` at `base`.
///
/// # Panics
/// On an answer other than 200.
pub async fn import_street_tree(base: &str, admin: &str, streets: usize) {
    let units: Vec<OrgUnit> = serde_json::from_value(street_tree(streets)).expect("org units");
    admin_over_http(base, admin)
        .import_org_units(&units)
        .await
        .unwrap_or_else(|e| panic!("{base}: {e}"));
}

/// A field device's token for street `s<street>` of [`street_tree`],
/// issued by `admin` at `base`.
///
/// # Panics
/// On an answer other than 201.
pub async fn field_token(
    base: &str,
    admin: &str,
    street: usize,
    label: &str,
) -> pufa_core::wire::TokenIssued {
    admin_over_http(base, admin)
        .issue_token(&TokenRequest {
            role: Role::Field,
            org_unit: Some(format!("s{street}")),
            label: Some(label.into()),
            device_id: None,
        })
        .await
        .unwrap_or_else(|e| panic!("{base}: {e}"))
}

/// `admin`'s calls to the server at `base`.
///
/// # Panics
/// When the HTTP client cannot be set up.
pub fn admin_over_http(base: &str, admin: &str) -> AdminClient {
    AdminClient::over_http(base, admin).expect("an HTTP client")
}

/// How [`random_local_round`] works a device's store.
#[derive(Clone, Copy, Debug)]
pub struct LocalWork {
    /// Most edits in one round.
    pub ops_max: usize,
    /// Most records the device creates in all.
    pub creates_max: usize,
    /// Chance of a create (while under `creates_max`), in percent.
    pub create_percent: u32,
    /// Title of the lectures it creates (a number is appended).
    pub title: &'static str,
}

/// [`random_local_round`] on a blocking thread (the device's store does
/// file IO), handing the generator and the created ids back.
///
/// # Panics
/// When the round panics.
pub async fn random_local_round_off_thread(
    client: &Client,
    street: usize,
    work: LocalWork,
    mut rng: rand_chacha::ChaCha8Rng,
    mut created: Vec<Uuid>,
) -> (rand_chacha::ChaCha8Rng, Vec<Uuid>) {
    let client = client.clone();
    tokio::task::spawn_blocking(move || {
        random_local_round(&client, street, work, &mut rng, &mut created);
        (rng, created)
    })
    .await
    .expect("a local round")
}

/// One round of offline work on a device in street `street` (its units
/// `c<street>1`, `c<street>2`): a few creates, or edits of attendees and
/// speaker, deletes and restores of any record it holds, so that devices
/// of one street edit the same records concurrently.
///
/// # Panics
/// When the device's store refuses a valid edit.
pub fn random_local_round(
    client: &Client,
    street: usize,
    work: LocalWork,
    rng: &mut rand_chacha::ChaCha8Rng,
    created: &mut Vec<Uuid>,
) {
    use pufa_client::Filter;
    use pufa_core::schema::Kind;
    for _ in 0..rng.gen_range(1..=work.ops_max) {
        let known = client
            .list(&Filter {
                include_deleted: true,
                ..Filter::default()
            })
            .expect("list the device's records");
        let roll = rng.gen_range(0..100);
        if created.len() < work.creates_max && (known.is_empty() || roll < work.create_percent) {
            let unit = format!("c{street}{}", rng.gen_range(1..=2));
            let Value::Object(fields) = json!({
                "org_unit": unit,
                "held_on": format!("2020-{:02}-{:02}", rng.gen_range(1..=12), rng.gen_range(1..=28)),
                "title": format!("{} {}", work.title, rng.gen_range(0..1000)),
                "attendees": rng.gen_range(0..300),
            }) else {
                unreachable!("an object literal");
            };
            let id = client
                .create_fields(Kind::Lecture, fields)
                .expect("create a lecture");
            created.push(id);
            continue;
        }
        let Some(r) = known.get(rng.gen_range(0..known.len().max(1))) else {
            continue;
        };
        match roll {
            0..=79 => {
                let mut set = serde_json::Map::new();
                set.insert("attendees".into(), json!(rng.gen_range(0..500)));
                if rng.gen_bool(0.3) {
                    set.insert(
                        "speaker".into(),
                        json!(format!("律师{}", rng.gen_range(0..9))),
                    );
                }
                if rng.gen_bool(0.1) {
                    set.insert("speaker".into(), Value::Null);
                }
                client.update(r.id, set).expect("edit a record");
            }
            80..=91 => client.delete(r.id).expect("delete a record"),
            _ => client.restore(r.id).expect("restore a record"),
        }
    }
}

/// Asserts that device `i` (in street `street`, see [`random_local_round`])
/// holds exactly the server's view of its scope, `theirs` (from
/// [`pull_all`] with its token): only records of its street's units, each
/// with the server's fields, deleted flag, seq and open conflicts, and
/// synced (or conflicted, which concurrent edits make).
///
/// # Panics
/// On any difference.
pub fn assert_device_holds_its_scope(
    i: usize,
    client: &Client,
    street: usize,
    theirs: &std::collections::BTreeMap<Uuid, pufa_core::wire::PullEntry>,
) {
    use pufa_client::{Filter, SyncState};
    use pufa_core::wire::PullEntry;
    let mine = client
        .list(&Filter {
            include_deleted: true,
            ..Filter::default()
        })
        .expect("list the device's records");
    let mut in_scope = 0;
    for e in theirs.values() {
        if let PullEntry::Record(r) = e {
            in_scope += 1;
            assert!(
                r.fields["org_unit"]
                    .as_str()
                    .expect("an org unit")
                    .starts_with(&format!("c{street}")),
                "device {i} sees {r:?}"
            );
        }
    }
    assert_eq!(mine.len(), in_scope, "device {i}: records held vs in scope");
    for l in &mine {
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

/// Brings every device in `clients` level with the server after a run:
/// first each syncs until its outbox is empty, then each syncs once more
/// and must prove its copy with the checksum. One round is not enough: a
/// later device's last push lands in the scope of a device that already
/// finished. Each sync may fail as unreachable (a test's wire still
/// flapping) up to `attempts` times.
///
/// # Panics
/// When an outbox never empties, a sync fails otherwise, a sync rejects a
/// mutation, or a checksum disagrees after the second round.
pub async fn settle_devices(clients: &[&Client], attempts: usize) {
    for (i, client) in clients.iter().enumerate() {
        let mut emptied = false;
        for _ in 0..attempts {
            match client.sync().await {
                Ok(r) => {
                    assert!(r.rejected.is_empty(), "device {i}: {r:?}");
                    if client.status().expect("status").pending == 0 {
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
    for (i, client) in clients.iter().enumerate() {
        let mut last = None;
        for _ in 0..attempts {
            match client.sync().await {
                Ok(r) => {
                    let ok = r.checksum_ok;
                    last = Some(r);
                    if ok {
                        break;
                    }
                }
                Err(pufa_client::Error::Unreachable(_)) => {}
                Err(e) => panic!("device {i}: last sync failed: {e}"),
            }
        }
        let r = last.unwrap_or_else(|| panic!("device {i}: no last sync succeeded"));
        assert!(r.checksum_ok, "device {i}: {r:?}");
        assert!(r.rejected.is_empty(), "device {i}: {r:?}");
        assert_eq!(
            client.status().expect("status").pending,
            0,
            "device {i}: pending after the last sync"
        );
    }
}

/// One result a device received for a mutation: `(status, seq, stored hlc)`.
pub type Answer = (
    pufa_core::wire::MutationStatus,
    Option<u64>,
    Option<pufa_core::hlc::Hlc>,
);

/// Asserts what a fault test's ledger must show: `on_server` holds exactly
/// the records the devices `created`; every mutation `sent` was answered,
/// none was applied twice or rejected, every duplicate answer repeated the
/// first result; and `on_server` holds, per field, the acknowledged write
/// with the greatest HLC ([`assert_last_writer_wins`]). Returns how many
/// duplicate answers each mutation got.
///
/// # Panics
/// On any of those failing.
pub fn assert_answers_account_for(
    created: &std::collections::HashSet<Uuid>,
    sent: &std::collections::HashMap<Uuid, pufa_core::wire::Mutation>,
    answers: &std::collections::HashMap<Uuid, Vec<Answer>>,
    on_server: &std::collections::BTreeMap<Uuid, pufa_core::wire::PullEntry>,
) -> std::collections::HashMap<Uuid, usize> {
    use pufa_core::wire::MutationStatus;
    let server_ids: std::collections::HashSet<Uuid> = on_server.keys().copied().collect();
    assert_eq!(
        server_ids.len(),
        created.len(),
        "records on the server vs made by devices"
    );
    assert_eq!(&server_ids, created);
    let mut duplicates = std::collections::HashMap::new();
    for (id, seen) in answers {
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
        duplicates.insert(*id, seen.len() - applied);
    }
    let unanswered: Vec<_> = sent.keys().filter(|id| !answers.contains_key(id)).collect();
    assert!(
        unanswered.is_empty(),
        "mutations never acknowledged: {unanswered:?}"
    );
    assert_last_writer_wins(
        answers
            .iter()
            .map(|(id, seen)| (&sent[id], seen[0].2.unwrap_or(sent[id].hlc))),
        on_server,
    );
    duplicates
}

/// The number in environment variable `name` (a test's knob, such as how
/// many devices), else `default`.
///
/// # Panics
/// When the variable is set but not a number.
pub fn env_or(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// A `pufa-server` binary running as its own process on a loopback port
/// (for tests that SIGKILL it); killed on drop.
pub struct ServerProcess {
    child: Option<std::process::Child>,
    port: u16,
    dir: std::path::PathBuf,
    args: Vec<String>,
    log: Option<std::path::PathBuf>,
}

impl ServerProcess {
    /// Starts `pufa-server --data <dir> --listen 127.0.0.1:<free port>
    /// <args>` and waits for its "listening" line (trying a few ports);
    /// returns it with the lines it printed before. `log`: a file its
    /// output is appended to, else it is dropped.
    ///
    /// # Panics
    /// When it will not start.
    pub async fn start(
        dir: std::path::PathBuf,
        args: Vec<String>,
        log: Option<std::path::PathBuf>,
    ) -> (ServerProcess, Vec<String>) {
        let mut server = ServerProcess {
            child: None,
            port: 0,
            dir,
            args,
            log,
        };
        for _ in 0..5 {
            server.port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            if let Some(lines) = server.spawn().await {
                return (server, lines);
            }
        }
        panic!("pufa-server would not start in {}", server.dir.display());
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The bootstrap admin token the server wrote into its data dir.
    ///
    /// # Panics
    /// When there is none (another instance made the admin).
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.dir.join("admin.token"))
            .expect("the admin token")
            .trim()
            .to_string()
    }

    /// SIGKILL, and wait for it to be gone.
    ///
    /// # Panics
    /// When the process cannot be killed.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL");
            c.wait().expect("reap");
        }
    }

    /// Starts it again on the same data dir, port and arguments, retrying
    /// while the port is busy (or, say, its database is not answering yet);
    /// returns the lines it printed before listening.
    ///
    /// # Panics
    /// When it is still running, or will not start again.
    pub async fn restart(&mut self) -> Vec<String> {
        assert!(self.child.is_none(), "restart after kill");
        for _ in 0..100 {
            if let Some(lines) = self.spawn().await {
                return lines;
            }
            // Back off before trying again (not a readiness wait).
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("pufa-server would not restart on port {}", self.port);
    }

    /// Starts it again once, on the same data dir, port and arguments:
    /// `None` if it exited before listening (say, refusing its store).
    ///
    /// # Panics
    /// When it is still running.
    pub async fn try_restart(&mut self) -> Option<Vec<String>> {
        assert!(self.child.is_none(), "restart after kill");
        self.spawn().await
    }

    /// One start on `self.port`; `None` if it exited before listening.
    async fn spawn(&mut self) -> Option<Vec<String>> {
        let (dir, port, args, log) = (
            self.dir.clone(),
            self.port,
            self.args.clone(),
            self.log.clone(),
        );
        let (child, lines) = tokio::task::spawn_blocking(move || {
            spawn_server_process(&dir, port, &args, log.as_deref())
        })
        .await
        .expect("the start did not panic")?;
        self.child = Some(child);
        Some(lines)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_server_process(
    dir: &std::path::Path,
    port: u16,
    args: &[String],
    log: Option<&std::path::Path>,
) -> Option<(std::process::Child, Vec<String>)> {
    use std::io::{BufRead, Write};
    use std::process::{Command, Stdio};
    let mut log = log.map(|path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open the server's log")
    });
    let stderr = match &log {
        Some(f) => Stdio::from(f.try_clone().expect("the log again")),
        None => Stdio::null(),
    };
    let mut child = Command::new(bin_dir().join("pufa-server"))
        .args(["--data", dir.to_str().expect("a UTF-8 data dir")])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .env_remove("PUFA_DATABASE_URL")
        .env("RUST_LOG", "warn,pufa_server=info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("run pufa-server");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut before = Vec::new();
    loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(f) = &mut log {
                    let _ = writeln!(f, "{line}");
                }
                if line.contains("listening") && line.contains("addr=") {
                    break;
                }
                before.push(line);
            }
            Some(Err(_)) | None => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Some(f) = &mut log {
                let _ = writeln!(f, "{line}");
            }
        }
    });
    Some((child, before))
}
