//! Harness for cross-crate scenarios: a real server (its router, in
//! process, on a temp dir with a manual clock and seeded ids) and SDK devices
//! that reach it through an in-process transport which can inject faults.

pub mod pg;
pub mod webdriver;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::Request as HttpRequest;
use http_body_util::BodyExt;
use pufa_client::transport::{Method, Request, Response, Transport, TransportError};
use pufa_client::{Client, ClientConfig, DeviceClock, RetryPolicy};
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
        let method = match req.method {
            Method::Get => "GET",
            Method::Post => "POST",
        };
        let http = HttpRequest::builder()
            .method(method)
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
        let (st, v) = self
            .api("PUT", "/v1/admin/org-units", &self.admin, Some(units))
            .await;
        assert_eq!(st, 200, "{v}");
    }

    /// A token for `role` at `org`: `(device_id, token)`.
    pub async fn token(&self, role: &str, org: &str) -> (Uuid, String) {
        let (st, v) = self
            .api(
                "POST",
                "/v1/admin/tokens",
                &self.admin,
                Some(json!({"role": role, "org_unit": org, "label": format!("{role} {org}")})),
            )
            .await;
        assert_eq!(st, 201, "{v}");
        (
            v["device_id"].as_str().unwrap().parse().unwrap(),
            v["token"].as_str().unwrap().to_string(),
        )
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
            .args(["-p", "pufa-client", "--bin", "pufa"])
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
    use pufa_core::merge::canonical_json;
    type Best = std::collections::BTreeMap<String, (pufa_core::hlc::Hlc, String, Value)>;
    let mut expected: std::collections::BTreeMap<Uuid, Best> = std::collections::BTreeMap::new();
    for (m, hlc) in acked {
        let best = expected.entry(m.record_id).or_default();
        let mut offer = |field: &str, v: &Value| {
            let key = (hlc, canonical_json(v));
            if best.get(field).is_none_or(|b| (b.0, b.1.clone()) < key) {
                best.insert(field.to_string(), (key.0, key.1, v.clone()));
            }
        };
        for (k, v) in &m.set {
            offer(k, v);
        }
        if let Some(del) = m.delete {
            offer("_deleted", &Value::Bool(del));
        }
    }
    for (rid, best) in &expected {
        let Some(pufa_core::wire::PullEntry::Record(r)) = on_server.get(rid) else {
            panic!("record {rid} missing on the server");
        };
        for (field, (_, _, v)) in best {
            if field == "_deleted" {
                assert_eq!(Value::Bool(r.deleted), *v, "record {rid}: deleted");
            } else if v.is_null() {
                assert!(
                    !r.fields.contains_key(field),
                    "record {rid}: {field} not cleared"
                );
            } else {
                assert_eq!(r.fields.get(field), Some(v), "record {rid}: {field}");
            }
        }
    }
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
