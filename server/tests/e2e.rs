//! End-to-end over real HTTP on 127.0.0.1:0: restart persistence, the
//! change feed under concurrent pushes, group commit, refusing bad data dirs.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use pufa_core::wire::{ChecksumResponse, PullEntry, PullResponse, PushResponse, TokenIssued};
use pufa_server::config::SeededIds;
use pufa_server::Config;
use serde_json::{json, Value};
use uuid::Uuid;

#[allow(dead_code)] // The harness is shared; this file uses its HTTP server.
mod support;

use support::http::TestServer;

async fn start(dir: &Path, seed: u64) -> TestServer {
    let mut config = Config::new(dir);
    config.ids = Arc::new(SeededIds::new(seed));
    TestServer::start_config(config).await
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn call(
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client().request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn setup_tree(s: &TestServer) {
    let units = json!([
        {"code":"d","name":"District","type":"district","parent":null},
        {"code":"s1","name":"Street 1","type":"street","parent":"d"},
        {"code":"s2","name":"Street 2","type":"street","parent":"d"},
        {"code":"c1","name":"Community 1","type":"community","parent":"s1"},
        {"code":"c2","name":"Community 2","type":"community","parent":"s2"},
    ]);
    let (st, _) = call(
        reqwest::Method::PUT,
        format!("{}/v1/admin/org-units", s.url),
        &s.admin,
        Some(units),
    )
    .await;
    assert_eq!(st, 200);
}

async fn token(s: &TestServer, role: &str, org: &str) -> TokenIssued {
    let body = json!({"role": role, "org_unit": org, "label": format!("{role}@{org}")});
    let (st, v) = call(
        reqwest::Method::POST,
        format!("{}/v1/admin/tokens", s.url),
        &s.admin,
        Some(body),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    serde_json::from_value(v).unwrap()
}

fn lecture(device: Uuid, record: Uuid, ms: u64, org: &str, attendees: u64) -> Value {
    json!({
        "id": Uuid::new_v4(), "record_id": record, "kind": "lecture", "base_seq": 0,
        "hlc": {"ms": ms, "c": 0, "node": device},
        "set": {"org_unit": org, "held_on": "2020-07-01", "title": "民法典进社区", "attendees": attendees}
    })
}

async fn push(s: &TestServer, t: &TokenIssued, mutations: Vec<Value>) -> PushResponse {
    let body = json!({"device_id": t.device_id, "mutations": mutations});
    let (st, v) = call(
        reqwest::Method::POST,
        format!("{}/v1/sync/push", s.url),
        &t.token,
        Some(body),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    serde_json::from_value(v).unwrap()
}

/// Pages the feed from `since` to the end; returns the latest entry per id.
async fn pull_all(
    s: &TestServer,
    token: &str,
    mut since: u64,
    into: &mut BTreeMap<Uuid, PullEntry>,
) -> u64 {
    loop {
        let (st, v) = call(
            reqwest::Method::GET,
            format!("{}/v1/sync/pull?since={since}&limit=37", s.url),
            token,
            None,
        )
        .await;
        assert_eq!(st, 200, "{v}");
        let page: PullResponse = serde_json::from_value(v).unwrap();
        assert!(page.next >= since);
        for e in page.records {
            assert!(
                e.seq() > since && e.seq() <= page.next,
                "entry seq {} outside ({since}, {}]",
                e.seq(),
                page.next
            );
            into.insert(e.id(), e);
        }
        since = page.next;
        if !page.has_more {
            return since;
        }
    }
}

async fn checksum(s: &TestServer, token: &str) -> ChecksumResponse {
    let (st, v) = call(
        reqwest::Method::GET,
        format!("{}/v1/sync/checksum", s.url),
        token,
        None,
    )
    .await;
    assert_eq!(st, 200);
    serde_json::from_value(v).unwrap()
}

fn local_checksum(records: &BTreeMap<Uuid, PullEntry>) -> (u64, String) {
    let mut xor = 0;
    let mut n = 0;
    for e in records.values() {
        if let PullEntry::Record(r) = e {
            n += 1;
            xor ^= pufa_core::merge::record_digest(r.id, r.seq);
        }
    }
    (n, pufa_core::merge::checksum_text(xor))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn everything_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), 1).await;
    setup_tree(&s).await;
    let field = token(&s, "field", "s1").await;
    let rec = Uuid::now_v7();
    let r = push(
        &s,
        &field,
        vec![lecture(field.device_id, rec, 1_593_561_600_000, "c1", 87)],
    )
    .await;
    assert_eq!(r.results[0].seq, Some(1));
    let store_id = r.store_id;
    let admin = s.admin.clone();
    s.stop().await;

    let s = start(dir.path(), 2).await;
    assert_eq!(s.admin, admin, "admin.token is never rewritten");
    let mut got = BTreeMap::new();
    pull_all(&s, &field.token, 0, &mut got).await;
    let PullEntry::Record(r) = &got[&rec] else {
        panic!("record missing after restart")
    };
    assert_eq!(r.fields["attendees"], json!(87));
    let c = checksum(&s, &field.token).await;
    assert_eq!(c.store_id, store_id, "store_id survives restarts");
    assert_eq!((c.count, c.checksum.clone()), local_checksum(&got));
    // The seq counter and the server HLC continue, not restart.
    let r2 = push(
        &s,
        &field,
        vec![lecture(
            field.device_id,
            Uuid::now_v7(),
            1_593_561_600_001,
            "c1",
            5,
        )],
    )
    .await;
    assert_eq!(r2.results[0].seq, Some(2));
    s.stop().await;
}

/// The hazard of contract §7: writers finish out of order, and a reader
/// paging concurrently must still end with every record at its latest state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_paging_during_concurrent_pushes_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(start(dir.path(), 3).await);
    setup_tree(&s).await;
    let coordinator = token(&s, "coordinator", "d").await;
    let mut pushers = Vec::new();
    let shared: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();
    for i in 0..6u64 {
        let s = s.clone();
        let shared = shared.clone();
        let org = if i % 2 == 0 { "c1" } else { "c2" };
        let t = token(&s, "field", "d").await;
        pushers.push(tokio::spawn(async move {
            for round in 0..15u64 {
                let mut batch = Vec::new();
                for k in 0..10u64 {
                    batch.push(lecture(
                        t.device_id,
                        Uuid::now_v7(),
                        1_593_561_600_000 + round * 10 + k,
                        org,
                        k,
                    ));
                }
                // Everyone also edits the same few records: many seq moves.
                let rec = shared[((i * 7 + round) % 20) as usize];
                batch.push(lecture(
                    t.device_id,
                    rec,
                    1_593_561_700_000 + round * 100 + i,
                    org,
                    round * 10 + i,
                ));
                let r = push(&s, &t, batch).await;
                assert!(r.results.iter().all(|x| x.error.is_none()));
            }
        }));
    }
    // Page while they push.
    let mut seen = BTreeMap::new();
    let mut since = 0;
    while pushers.iter().any(|p| !p.is_finished()) {
        since = pull_all(&s, &coordinator.token, since, &mut seen).await;
        tokio::task::yield_now().await;
    }
    for p in pushers {
        p.await.unwrap();
    }
    pull_all(&s, &coordinator.token, since, &mut seen).await;
    // The incremental reader holds exactly what a fresh pull from 0 gives.
    let mut fresh = BTreeMap::new();
    pull_all(&s, &coordinator.token, 0, &mut fresh).await;
    assert_eq!(fresh.len(), 6 * 15 * 10 + 20);
    assert_eq!(seen, fresh);
    let c = checksum(&s, &coordinator.token).await;
    assert_eq!((c.count, c.checksum), local_checksum(&fresh));
}

/// Many concurrent pushes are each acknowledged only once durable; they
/// share flushes instead of failing or serialising on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushes_all_land_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(start(dir.path(), 4).await);
    setup_tree(&s).await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let s = s.clone();
        let t = token(&s, "field", "s1").await;
        tasks.push(tokio::spawn(async move {
            let batch: Vec<Value> = (0..25)
                .map(|k| lecture(t.device_id, Uuid::now_v7(), 1_593_561_600_000 + k, "c1", k))
                .collect();
            let first = push(&s, &t, batch.clone()).await;
            // A retry of the same batch is all duplicates with the same seqs.
            let again = push(&s, &t, batch).await;
            for (a, b) in first.results.iter().zip(&again.results) {
                assert_eq!(b.status, pufa_core::wire::MutationStatus::Duplicate);
                assert_eq!(a.seq, b.seq);
            }
            first
                .results
                .iter()
                .map(|r| r.seq.unwrap())
                .collect::<Vec<_>>()
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.extend(t.await.unwrap());
    }
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 16 * 25, "every record got its own seq");
    let (st, totals) = call(
        reqwest::Method::GET,
        format!("{}/v1/totals", s.url),
        &s.admin,
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(totals["lectures"]["count"], json!(400));
}

#[tokio::test]
async fn refuses_a_foreign_or_corrupt_data_dir_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("thesis.docx"), b"precious").unwrap();
    let err = pufa_server::open(Config::new(dir.path()))
        .await
        .err()
        .expect("a foreign dir is refused");
    let text = err.to_string();
    assert!(
        text.contains(&dir.path().display().to_string()) && text.contains("thesis.docx"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "nothing was created"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("store")).unwrap();
    std::fs::write(
        dir.path().join("store").join("conf"),
        b"\xff\xfe not a sled config",
    )
    .unwrap();
    std::fs::write(dir.path().join("store").join("db"), vec![0xAB; 4096]).unwrap();
    let err = pufa_server::open(Config::new(dir.path()))
        .await
        .err()
        .expect("a corrupt store is refused");
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
    assert!(
        !dir.path().join("admin.token").exists(),
        "no admin token for a store that did not open"
    );
    assert_eq!(
        std::fs::read(dir.path().join("store").join("db")).unwrap(),
        vec![0xAB; 4096],
        "corrupt data is left alone"
    );
}

#[tokio::test]
async fn an_admin_token_file_left_by_an_interrupted_first_start_is_adopted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), "pufa_left_over_secret\n").unwrap();
    let s = start(dir.path(), 5).await;
    assert_eq!(s.admin, "pufa_left_over_secret");
    let (st, who) = call(
        reqwest::Method::GET,
        format!("{}/v1/whoami", s.url),
        &s.admin,
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(who["role"], json!("admin"));
    let _: HashMap<String, Value> = serde_json::from_value(who).unwrap();
}

/// `clock_skew_ms` comes from the latest report that had a `now_ms`; a later
/// report without one, or a push without a report, keeps it.
#[tokio::test]
async fn clock_skew_survives_reports_without_now_ms() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    let clock = Arc::new(pufa_server::config::ManualClock::new(1_593_561_600_000));
    config.clock = clock.clone();
    let s = TestServer::start_config(config).await;
    setup_tree(&s).await;
    let t = token(&s, "field", "s1").await;
    let report = |r: Value| json!({"device_id": t.device_id, "mutations": [], "device": r});
    let skew = || async {
        let (_, v) = call(
            reqwest::Method::GET,
            format!("{}/v1/devices?org=s1", s.url),
            &s.admin,
            None,
        )
        .await;
        v[0]["clock_skew_ms"].clone()
    };
    let push_url = format!("{}/v1/sync/push", s.url);
    call(
        reqwest::Method::POST,
        push_url.clone(),
        &t.token,
        Some(report(json!({"now_ms": 1_593_561_590_000u64}))),
    )
    .await;
    assert_eq!(skew().await, json!(10_000));
    clock.advance(60_000);
    call(
        reqwest::Method::POST,
        push_url.clone(),
        &t.token,
        Some(report(json!({"app_version": "1.2", "outbox_len": 3}))),
    )
    .await;
    assert_eq!(skew().await, json!(10_000));
    call(
        reqwest::Method::POST,
        push_url.clone(),
        &t.token,
        Some(json!({"device_id": t.device_id, "mutations": []})),
    )
    .await;
    let (_, v) = call(
        reqwest::Method::GET,
        format!("{}/v1/devices?org=s1", s.url),
        &s.admin,
        None,
    )
    .await;
    assert_eq!(
        (
            v[0]["clock_skew_ms"].clone(),
            v[0]["app_version"].clone(),
            v[0]["outbox_len"].clone()
        ),
        (json!(10_000), json!("1.2"), json!(3))
    );
    call(
        reqwest::Method::POST,
        push_url,
        &t.token,
        Some(report(json!({"now_ms": 1_593_561_665_000u64}))),
    )
    .await;
    assert_eq!(
        skew().await,
        json!(-5_000),
        "a device clock ahead of the server gives a negative skew"
    );
    s.stop().await;
}

/// Only the newest rejections are kept, so a device pushing garbage in a
/// loop cannot fill the disk.
#[tokio::test]
async fn only_the_newest_rejections_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.rejections_kept = 3;
    let s = TestServer::start_config(config).await;
    setup_tree(&s).await;
    let t = token(&s, "field", "s1").await;
    for i in 0..5u64 {
        let mut m = lecture(t.device_id, Uuid::now_v7(), 1_593_561_600_000 + i, "c1", i);
        m["set"]["colour"] = json!(format!("bad {i}"));
        let r = push(&s, &t, vec![m]).await;
        assert_eq!(
            r.results[0].status,
            pufa_core::wire::MutationStatus::Rejected
        );
    }
    let (st, list) = call(
        reqwest::Method::GET,
        format!("{}/v1/rejections", s.url),
        &s.admin,
        None,
    )
    .await;
    assert_eq!(st, 200);
    let colours: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["mutation"]["set"]["colour"].clone())
        .collect();
    assert_eq!(colours, [json!("bad 4"), json!("bad 3"), json!("bad 2")]);
    s.stop().await;
}

/// A retry racing its original (same device, same mutation ids, at the same
/// moment) is applied once: one answer says `applied`, the other `duplicate`
/// with the same seqs, whether or not both land in one group apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_racing_its_original_is_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(start(dir.path(), 6).await);
    setup_tree(&s).await;
    let t = token(&s, "field", "s1").await;
    for round in 0..20u64 {
        let batch: Vec<Value> = (0..20)
            .map(|k| {
                lecture(
                    t.device_id,
                    Uuid::now_v7(),
                    1_593_561_600_000 + round * 100 + k,
                    "c1",
                    k,
                )
            })
            .collect();
        let (a, b) = tokio::join!(push(&s, &t, batch.clone()), push(&s, &t, batch));
        for (x, y) in a.results.iter().zip(&b.results) {
            let mut statuses = [x.status, y.status].map(|st| format!("{st:?}"));
            statuses.sort();
            assert_eq!(statuses, ["Applied", "Duplicate"], "round {round}");
            assert_eq!(x.seq, y.seq);
        }
    }
    let (_, totals) = call(
        reqwest::Method::GET,
        format!("{}/v1/totals", s.url),
        &s.admin,
        None,
    )
    .await;
    assert_eq!(totals["lectures"]["count"], json!(400));
}

/// Per-token limits answer `429 rate_limited` with `Retry-After`, per token;
/// per-IP limits are off unless configured, and honour `X-Forwarded-For`
/// only behind `--trust-proxy`.
#[tokio::test]
async fn rate_limits_are_per_token_and_per_ip_when_configured() {
    use pufa_server::limits::RateLimit;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.token_rate = Some(RateLimit {
        per_sec: 0.01,
        burst: 3.0,
    });
    let s = TestServer::start_config(config).await;
    let whoami = |token: String, ip: Option<&'static str>| {
        let url = format!("{}/v1/whoami", s.url);
        async move {
            let mut req = client().get(url).bearer_auth(token);
            if let Some(ip) = ip {
                req = req.header("x-forwarded-for", ip);
            }
            req.send().await.unwrap()
        }
    };
    // The admin's own calls so far (none) leave it a burst of 3.
    for _ in 0..3 {
        assert_eq!(whoami(s.admin.clone(), None).await.status(), 200);
    }
    let r = whoami(s.admin.clone(), None).await;
    assert_eq!(r.status(), 429);
    assert!(
        r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], json!("rate_limited"));
    // Another token is not affected (an unknown one is still just 401).
    assert_eq!(whoami("pufa_unknown".into(), None).await.status(), 401);
    s.stop().await;

    // Per IP, behind a trusted proxy: each forwarded address has its own bucket.
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.ip_rate = Some(RateLimit {
        per_sec: 0.01,
        burst: 2.0,
    });
    config.trust_proxy = true;
    let s = TestServer::start_config(config).await;
    let health = |ip: &'static str| {
        let url = format!("{}/v1/health", s.url);
        async move {
            client()
                .get(url)
                .header("x-forwarded-for", format!("198.51.100.9, {ip}"))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(health("192.0.2.1").await, 200);
    assert_eq!(health("192.0.2.1").await, 200);
    assert_eq!(health("192.0.2.1").await, 429);
    assert_eq!(health("192.0.2.2").await, 200, "the last hop is the client");
    s.stop().await;
}
