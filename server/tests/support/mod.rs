//! The harness of the contract tests: a server on a temp dir with a manual
//! clock and seeded ids, requests sent through `tower::ServiceExt::oneshot`,
//! mutation builders, and the one assertion on the contract's error body
//! (`sync-protocol-v1.md` §2).
//!
//! The store is the test binary's choice: a binary whose name ends in
//! `_pg` (`contract_pg.rs`) runs its servers on PostgreSQL, each in a fresh
//! schema of the test database ([`pg`]); every other binary on sled in the
//! temp dir. Tests that may run on PostgreSQL start with
//! [`skip_without_store!`].

pub mod http;
pub mod pg;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt as _;
use pufa_server::config::{ManualClock, SeededIds};
use pufa_server::Config;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;
use tower::ServiceExt as _;
use uuid::Uuid;

/// 2020-07-01T00:00:00Z: the server's clock when every test starts.
pub const T0: u64 = 1_593_561_600_000;

/// Whether this test binary's servers keep their store in PostgreSQL:
/// those of a binary named `…_pg`.
pub fn on_postgres() -> bool {
    env!("CARGO_CRATE_NAME").ends_with("_pg")
}

/// True when this binary's store is PostgreSQL and there is none to use
/// ([`pg::base_url`] has said so loudly, and panics instead under CI).
pub fn store_missing() -> bool {
    on_postgres() && pg::base_url().is_none()
}

/// The first line of every test that may run on PostgreSQL: returns from
/// the test (skips it) when [`store_missing`]. On sled it does nothing.
// Only the contract suite uses it; the other test files share this harness
// and run on sled, where there is nothing to skip.
#[allow(unused_macros)]
macro_rules! skip_without_store {
    () => {
        if $crate::support::store_missing() {
            return;
        }
    };
}
#[allow(unused_imports)] // As the macro: unused outside the contract suite.
pub(crate) use skip_without_store;

/// A server under test. The temp dir lives as long as the server.
pub struct Server {
    /// The data dir: the sled store and `admin.token`; on PostgreSQL just
    /// `admin.token`.
    pub dir: TempDir,
    pub clock: Arc<ManualClock>,
    pub app: Router,
    pub admin: Dev,
    /// On PostgreSQL, this server's schema, which a restart keeps. Declared
    /// after `app` so that the store is dropped before its schema.
    pub database: Option<pg::SchemaGuard>,
}

/// A device: its bearer token and its id (as the wire writes it).
#[derive(Clone, Debug)]
pub struct Dev {
    pub token: String,
    pub id: String,
}

/// A response with its body read.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub body: Vec<u8>,
    #[allow(dead_code)] // Read by the export tests (figures.rs), not by contract.rs.
    pub headers: axum::http::HeaderMap,
}

impl Resp {
    /// The body as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts the status and returns the JSON body (`null` when empty).
    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            String::from_utf8_lossy(&self.body)
        );
        if self.body.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }
}

/// Asserts a non-2xx answer of §2's shape with `status` and `code`, and
/// returns the error object.
#[track_caller]
pub fn assert_error(resp: &Resp, status: u16, code: &str) -> Value {
    let body = resp.json();
    assert_eq!(
        (resp.status.as_u16(), body["error"]["code"].as_str()),
        (status, Some(code)),
        "expected {status} {code}, got body {body}"
    );
    let err = &body["error"];
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| !m.trim().is_empty()),
        "error.message must be human text: {body}"
    );
    assert!(
        err.get("field")
            .is_some_and(|f| f.is_null() || f.is_string()),
        "error.field must be present, a string or null: {body}"
    );
    err.clone()
}

/// [`assert_error`], and `error.field` is `field`.
#[track_caller]
pub fn assert_error_field(resp: &Resp, status: u16, code: &str, field: Option<&str>) {
    let err = assert_error(resp, status, code);
    assert_eq!(err["field"].as_str(), field, "error.field of {err}");
}

/// Asserts that a push result is `rejected` with `code`, in the shape rule 2
/// gives a rejected result, and returns its error object.
#[track_caller]
pub fn assert_rejected(result: &Value, mutation: &Value, code: &str) -> Value {
    assert_eq!(result["id"], mutation["id"], "result for another mutation");
    assert_eq!(
        (
            result["status"].as_str(),
            result["error"]["code"].as_str(),
            &result["seq"],
            &result["restamped"],
            &result["conflicts"],
        ),
        (
            Some("rejected"),
            Some(code),
            &Value::Null,
            &json!(false),
            &json!([]),
        ),
        "result {result}"
    );
    let err = &result["error"];
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{result}"
    );
    assert!(
        err.get("field")
            .is_some_and(|f| f.is_null() || f.is_string()),
        "{result}"
    );
    err.clone()
}

/// Asserts that a push result is `applied` without conflicts and returns its seq.
#[track_caller]
pub fn assert_applied(result: &Value, mutation: &Value) -> u64 {
    assert_eq!(result["id"], mutation["id"], "result for another mutation");
    assert_eq!(
        (
            result["status"].as_str(),
            &result["error"],
            &result["restamped"],
            &result["conflicts"]
        ),
        (Some("applied"), &Value::Null, &json!(false), &json!([])),
        "result {result}"
    );
    seq_of(result)
}

#[track_caller]
pub fn seq_of(v: &Value) -> u64 {
    v["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no integer seq in {v}"))
}

impl Server {
    /// A server with an empty org tree.
    pub async fn empty() -> Server {
        Server::configured(|_| {}).await
    }

    /// A server holding [`small_tree`].
    pub async fn new() -> Server {
        let s = Server::empty().await;
        s.import(&small_tree()).await;
        s
    }

    /// A server whose config `tune` adjusts (after clock, ids and, on
    /// PostgreSQL, the database URL are set).
    pub async fn configured(tune: impl FnOnce(&mut Config)) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = Arc::new(ManualClock::new(T0));
        let database = if on_postgres() {
            let base = pg::base_url()
                .expect("no PostgreSQL to test on: start the test with skip_without_store!()");
            Some(pg::SchemaGuard::new(pg::fresh_schema(&base).await))
        } else {
            None
        };
        Server::open(dir, clock, database, 7, tune).await
    }

    /// Stops this server (drops its router and store) and starts a new one
    /// on the same data dir and clock, as a restart would.
    pub async fn restart(self) -> Server {
        // Through restart_with, which waits out sled's file lock.
        self.restart_with(|_| {}, |_| {}).await
    }

    /// [`Server::restart`] with `tune` applied to the new server's config,
    /// running `between` on the data dir while no server has it open (to
    /// age or damage the store on disk; on PostgreSQL the dir holds only
    /// `admin.token`). The new server uses the same database schema.
    ///
    /// sled's worker threads may hold the store's file lock for a moment
    /// after its last handle is dropped (sled's own test builds block on
    /// the lock for that reason), so a locked store is opened again until
    /// it is free, for at most ten seconds.
    pub async fn restart_with(
        self,
        tune: impl Fn(&mut Config),
        between: impl FnOnce(&std::path::Path),
    ) -> Server {
        let Server {
            dir,
            clock,
            app,
            database,
            ..
        } = self;
        drop(app);
        between(dir.path());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let mut config = Config::new(dir.path());
            config.clock = clock.clone();
            config.ids = Arc::new(SeededIds::new(8));
            config.database_url = database.as_ref().map(|d| d.url().to_owned());
            tune(&mut config);
            match pufa_server::open(config).await {
                Ok(state) => return Server::serve(dir, clock, database, state).await,
                Err(e)
                    if format!("{e:?}").contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::yield_now();
                    tokio::task::yield_now().await;
                }
                Err(e) => panic!("open the server: {e:?}"),
            }
        }
    }

    async fn open(
        dir: TempDir,
        clock: Arc<ManualClock>,
        database: Option<pg::SchemaGuard>,
        seed: u64,
        tune: impl FnOnce(&mut Config),
    ) -> Server {
        let mut config = Config::new(dir.path());
        config.clock = clock.clone();
        config.ids = Arc::new(SeededIds::new(seed));
        config.database_url = database.as_ref().map(|d| d.url().to_owned());
        tune(&mut config);
        let state = pufa_server::open(config).await.expect("open the server");
        Server::serve(dir, clock, database, state).await
    }

    /// The server of an opened state, with its admin token.
    async fn serve(
        dir: TempDir,
        clock: Arc<ManualClock>,
        database: Option<pg::SchemaGuard>,
        state: pufa_server::AppState,
    ) -> Server {
        // A PostgreSQL test that quietly ran on sled would prove nothing.
        assert!(
            database.is_none() || !dir.path().join("store").exists(),
            "database_url was set, yet the server made a sled store in its data dir"
        );
        let app = pufa_server::router(state);
        let token = std::fs::read_to_string(dir.path().join("admin.token"))
            .expect("admin.token")
            .trim()
            .to_string();
        let mut s = Server {
            dir,
            clock,
            app,
            admin: Dev {
                token,
                id: String::new(),
            },
            database,
        };
        let me = s.get("/v1/whoami", &s.admin).await.expect(200);
        s.admin.id = me["device_id"].as_str().expect("device_id").to_string();
        s
    }

    /// Sends one request. `auth` is the whole `Authorization` header value.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Vec<u8>,
        content_type: Option<&str>,
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        self.request(req.body(Body::from(body)).expect("request"))
            .await
    }

    /// Sends a request built by the caller (headers, extensions) through
    /// the router and reads the whole answer.
    pub async fn request(&self, req: Request<Body>) -> Resp {
        let resp = self.app.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("read body")
            .to_bytes()
            .to_vec();
        Resp {
            status,
            body,
            headers,
        }
    }

    pub async fn get(&self, path: &str, dev: &Dev) -> Resp {
        self.send(Method::GET, path, Some(&bearer(dev)), Vec::new(), None)
            .await
    }

    pub async fn json(&self, method: Method, path: &str, dev: &Dev, body: &Value) -> Resp {
        self.send(
            method,
            path,
            Some(&bearer(dev)),
            body.to_string().into_bytes(),
            Some("application/json"),
        )
        .await
    }

    /// Imports org units as the admin; asserts 200.
    pub async fn import(&self, units: &Value) -> Value {
        self.json(Method::PUT, "/v1/admin/org-units", &self.admin, units)
            .await
            .expect(200)
    }

    /// A new device token issued by the admin.
    pub async fn issue(&self, role: &str, org: &str) -> Dev {
        let body = json!({"role": role, "org_unit": org, "label": format!("{role} @ {org}")});
        let issued = self
            .json(Method::POST, "/v1/admin/tokens", &self.admin, &body)
            .await
            .expect(201);
        Dev {
            token: issued["token"].as_str().expect("token").to_string(),
            id: issued["device_id"].as_str().expect("device_id").to_string(),
        }
    }

    pub async fn push_body(&self, dev: &Dev, body: &Value) -> Resp {
        self.json(Method::POST, "/v1/sync/push", dev, body).await
    }

    /// Pushes `mutations`; asserts 200 and one result per mutation, in order.
    pub async fn push(&self, dev: &Dev, mutations: &[Value]) -> Value {
        let body = json!({"device_id": dev.id, "mutations": mutations});
        let resp = self.push_body(dev, &body).await.expect(200);
        let results = resp["results"].as_array().expect("results");
        assert_eq!(results.len(), mutations.len(), "{resp}");
        for (r, m) in results.iter().zip(mutations) {
            assert_eq!(r["id"], m["id"], "results in the order of mutations");
        }
        resp
    }

    /// Pushes one mutation and returns its result.
    pub async fn push_one(&self, dev: &Dev, m: &Value) -> Value {
        self.push(dev, std::slice::from_ref(m)).await["results"][0].clone()
    }

    pub async fn pull(&self, dev: &Dev, since: u64, limit: u64) -> Value {
        self.get(&format!("/v1/sync/pull?since={since}&limit={limit}"), dev)
            .await
            .expect(200)
    }

    /// Pages from `since` until `has_more` is false: every entry, and the
    /// last `next`.
    pub async fn pull_all(&self, dev: &Dev, since: u64) -> (Vec<Value>, u64) {
        let mut since = since;
        let mut out = Vec::new();
        for _ in 0..10_000 {
            let page = self.pull(dev, since, 500).await;
            out.extend(page["records"].as_array().expect("records").iter().cloned());
            let next = page["next"].as_u64().expect("next");
            assert!(next >= since, "next {next} below since {since}");
            since = next;
            if page["has_more"] == json!(false) {
                return (out, since);
            }
        }
        panic!("pull never ended");
    }

    /// The current state of one record as the admin pulls it.
    pub async fn record(&self, id: &str) -> Value {
        let (entries, _) = self.pull_all(&self.admin, 0).await;
        find(&entries, id)
            .unwrap_or_else(|| panic!("record {id} not in the admin's pull"))
            .clone()
    }

    pub async fn checksum(&self, dev: &Dev) -> Value {
        self.get("/v1/sync/checksum", dev).await.expect(200)
    }
}

/// The topic aggregate entries a store before format 7 kept for `records`
/// (entries as the admin pulls them): lectures counted under their topics
/// as written, synonyms apart. `(key, value)` as stored.
#[allow(dead_code)] // The upgrade tests' (figures.rs, migrate.rs), not the contract suite's.
pub fn topic_entries_as_written(records: &[Value]) -> Vec<(Vec<u8>, Vec<u8>)> {
    use pufa_core::totals::{AggKey, AggValue};
    use pufa_server::store::codec;
    use std::collections::{BTreeMap, BTreeSet};
    let mut by_unit_year: BTreeMap<(String, i32), BTreeMap<String, (u64, u64)>> = BTreeMap::new();
    for r in records {
        let f = &r["fields"];
        let held_on = f["held_on"].as_str().and_then(pufa_core::date::Date::parse);
        let (Some(day), Some(unit)) = (held_on, f["org_unit"].as_str()) else {
            continue;
        };
        if r["kind"] != "lecture" || r["deleted"] == json!(true) {
            continue;
        }
        let mut topics: BTreeSet<&str> = f["topics"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if topics.is_empty() {
            topics.insert("");
        }
        let attendees = f["attendees"].as_u64().unwrap_or(0);
        let year = by_unit_year
            .entry((unit.to_string(), day.year()))
            .or_default();
        for t in topics {
            let sum = year.entry(t.to_string()).or_default();
            sum.0 += 1;
            sum.1 += attendees;
        }
    }
    by_unit_year
        .into_iter()
        .map(|((unit, year), list)| {
            let value = AggValue::Topics(list.into_iter().collect());
            (
                codec::agg_key(&AggKey::Topics(unit, year)),
                codec::agg_value(&value).expect("a non-empty entry"),
            )
        })
        .collect()
}

pub fn bearer(dev: &Dev) -> String {
    format!("Bearer {}", dev.token)
}

pub fn new_id() -> String {
    Uuid::new_v4().to_string()
}

/// A district with two streets, two communities under the first and a
/// village under the second:
///
/// ```text
/// d ─┬─ s1 ─┬─ c1
///    │      └─ c2
///    └─ s2 ─── v3
/// ```
pub fn small_tree() -> Value {
    json!([
        {"code": "d", "name": "迎泽区", "type": "district", "parent": null},
        {"code": "s1", "name": "柳巷街道", "type": "street", "parent": "d"},
        {"code": "s2", "name": "庙前街道", "type": "street", "parent": "d"},
        {"code": "c1", "name": "柳巷第01社区", "type": "community", "parent": "s1"},
        {"code": "c2", "name": "柳巷第02社区", "type": "community", "parent": "s1"},
        {"code": "v3", "name": "郝庄村", "type": "village", "parent": "s2"},
    ])
}

/// A mutation with a fresh id.
pub fn mutation(dev: &Dev, record: &str, kind: &str, base_seq: u64, ms: u64, set: Value) -> Value {
    json!({
        "id": new_id(),
        "record_id": record,
        "kind": kind,
        "base_seq": base_seq,
        "hlc": {"ms": ms, "c": 0, "node": dev.id},
        "set": set,
    })
}

/// A lecture-creating mutation at `T0` with every required field.
pub fn lecture(dev: &Dev, record: &str, org: &str, held_on: &str, attendees: u64) -> Value {
    mutation(
        dev,
        record,
        "lecture",
        0,
        T0,
        json!({"org_unit": org, "held_on": held_on, "title": "民法典进社区", "attendees": attendees}),
    )
}

pub fn corner(dev: &Dev, record: &str, org: &str, status: &str) -> Value {
    mutation(
        dev,
        record,
        "library_corner",
        0,
        T0,
        json!({"org_unit": org, "name": "法治图书角", "status": status}),
    )
}

pub fn site(dev: &Dev, record: &str, org: &str, level: &str, status: &str, year: u64) -> Value {
    mutation(
        dev,
        record,
        "demo_site",
        0,
        T0,
        json!({"org_unit": org, "level": level, "status": status, "year": year}),
    )
}

/// A legal understander's appointment (a phone number when `phone`).
pub fn understander(
    dev: &Dev,
    record: &str,
    org: &str,
    appointed_on: &str,
    status: &str,
    phone: Option<&str>,
) -> Value {
    let mut set =
        json!({"org_unit": org, "name": "王丽", "appointed_on": appointed_on, "status": status});
    if let Some(p) = phone {
        set["phone"] = json!(p);
    }
    mutation(dev, record, "legal_understander", 0, T0, set)
}

/// `m` with `"delete": del`.
pub fn with_delete(mut m: Value, del: bool) -> Value {
    m["delete"] = json!(del);
    m
}

pub fn find<'a>(entries: &'a [Value], id: &str) -> Option<&'a Value> {
    entries.iter().find(|e| e["id"] == id)
}

/// A record's checksum term (§7), computed independently of the server.
pub fn digest(id: &str, seq: u64) -> u64 {
    let h = Sha256::digest(format!("{id}:{seq}").as_bytes());
    u64::from_be_bytes(h[..8].try_into().expect("8 bytes"))
}

/// Asserts that `actual` holds every key of `expected` with its value. The
/// contract lets the server add optional response fields, so objects are
/// checked for what the contract names, not for equality.
#[track_caller]
pub fn assert_has(actual: &Value, expected: &Value) {
    let expected = expected.as_object().expect("expected an object");
    assert!(actual.is_object(), "not an object: {actual}");
    for (k, v) in expected {
        assert_eq!(
            actual.get(k),
            Some(v),
            "key {k:?} of {actual}, expected {v}"
        );
    }
}

/// Conflict reports of a push result, reduced to the keys the contract names.
pub fn reported(result: &Value) -> Value {
    let list = result["conflicts"].as_array().expect("conflicts");
    list.iter()
        .map(|c| json!({"field": c["field"], "winner": c["winner"], "loser": c["loser"]}))
        .collect()
}
