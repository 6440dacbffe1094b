//! A push ended early on PostgreSQL while its write waits on the database
//! is counted exactly as the database has it, by that instance and any
//! other: not at all when the write fails (its connection is terminated),
//! once when the write goes on after its request timed out or its client
//! hung up (a retry is then `duplicate`).
//!
//! Regression test: an instance once applied a write to its in-memory
//! aggregates before COMMIT; a cancelled write stayed counted there and
//! was carried into the database by the instance's next write.
//!
//! Runs its own throwaway PostgreSQL cluster (`pufa_tests::pg`); skipped
//! loudly without PostgreSQL's binaries, failing under `CI=true`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pufa_tests::api;
use pufa_tests::pg::PgCluster;
use serde_json::{json, Value};

struct Instance {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(db: &str, extra: &[&str]) -> Instance {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(pufa_tests::bin_dir().join("pufa-server"))
        .args(["--data", dir.path().to_str().expect("utf-8 path")])
        .args(["--listen", "127.0.0.1:0", "--database-url", db])
        .args(extra)
        .env("RUST_LOG", "warn,pufa_server=info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pufa-server");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the server exited before listening")
            .expect("read its output");
        if let Some(rest) = line
            .split("addr=")
            .nth(1)
            .filter(|_| line.contains("listening"))
        {
            break rest.split_whitespace().next().expect("addr").to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Instance {
        child,
        url: format!("http://{addr}"),
        dir,
    }
}

/// `GET /v1/totals?org=d` as the admin of `base`.
async fn district_totals(base: &str, admin: &str) -> Value {
    api(base, reqwest::Method::GET, "/v1/totals?org=d", admin, None)
        .await
        .1
}

fn push_body(device: &str, c: u32) -> Value {
    json!({"device_id": device, "mutations": [{
        "id": uuid::Uuid::new_v4(), "record_id": uuid::Uuid::new_v4(),
        "kind": "lecture", "base_seq": 0,
        "hlc": {"ms": 1_593_561_600_000u64, "c": c, "node": device},
        "set": {"org_unit": "d", "held_on": "2020-01-02", "title": "民法典进社区", "attendees": 10},
    }]})
}

/// `(records in the database, lectures counted, checksum count)` as
/// `instance` serves them.
async fn counts(
    db: &tokio_postgres::Client,
    instance: &Instance,
    admin: &str,
) -> (i64, Value, Value) {
    let records: i64 = db
        .query_one("SELECT count(*) FROM pufa_records", &[])
        .await
        .expect("count")
        .get(0);
    let totals = district_totals(&instance.url, admin).await;
    let (_, sum) = api(
        &instance.url,
        reqwest::Method::GET,
        "/v1/sync/checksum",
        admin,
        None,
    )
    .await;
    (
        records,
        totals["lectures"]["count"].clone(),
        sum["count"].clone(),
    )
}

/// How the push under test ends while it waits on the database.
#[derive(Clone, Copy, PartialEq)]
enum End {
    /// Its database connection is terminated: the write fails, 503.
    WriteFails,
    /// Its request times out (503 `timeout`); the write goes on.
    Timeout,
    /// Its client hangs up; the write goes on.
    HangUp,
}

async fn a_push_ended_early(end: End) {
    let Some(pg) = PgCluster::start_or_skip() else {
        return;
    };
    let timeout: &[&str] = if end == End::Timeout {
        &["--request-timeout-secs", "1"]
    } else {
        &[]
    };
    let a = start(&pg.url(), timeout);
    let admin = std::fs::read_to_string(a.dir.path().join("admin.token"))
        .expect("admin.token")
        .trim()
        .to_string();
    let (status, _) = api(
        &a.url,
        reqwest::Method::PUT,
        "/v1/admin/org-units",
        &admin,
        Some(json!([{"code": "d", "name": "迎泽区", "type": "district", "parent": null}])),
    )
    .await;
    assert_eq!(status, 200);
    let (status, issued) = api(
        &a.url,
        reqwest::Method::POST,
        "/v1/admin/tokens",
        &admin,
        Some(json!({"role": "field", "org_unit": "d", "label": "p"})),
    )
    .await;
    assert_eq!(status, 201);
    let token = issued["token"].as_str().expect("token").to_string();
    let device = issued["device_id"].as_str().expect("device_id").to_string();

    // Another session holds a lock that the push's write (its audit entry)
    // must wait for, so the push is inside its transaction, not committed,
    // when it is ended.
    let (db, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    db.batch_execute("BEGIN; LOCK TABLE pufa_audit IN SHARE MODE")
        .await
        .expect("lock");
    let first = push_body(&device, 1);
    let push = tokio::spawn({
        let (url, token, body) = (a.url.clone(), token.clone(), first.clone());
        async move {
            tokio::time::timeout(
                Duration::from_millis(1500),
                api(
                    &url,
                    reqwest::Method::POST,
                    "/v1/sync/push",
                    &token,
                    Some(body),
                ),
            )
            .await
        }
    });
    // Until the push's write waits on the lock.
    let (watch, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let waiting = loop {
        let row = watch
            .query_opt(
                "SELECT pid FROM pg_stat_activity
                  WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO pufa_audit%'",
                &[],
            )
            .await
            .expect("pg_stat_activity");
        if let Some(row) = row {
            break row.get::<_, i32>(0);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    match end {
        End::WriteFails => {
            watch
                .execute("SELECT pg_terminate_backend($1)", &[&waiting])
                .await
                .expect("terminate");
            let (status, body) = push.await.expect("task").expect("an answer");
            assert_eq!(status, 503, "{body}");
            assert_eq!(body["error"]["code"], "unavailable", "{body}");
        }
        End::Timeout => {
            let (status, body) = push.await.expect("task").expect("an answer");
            assert_eq!(status, 503, "{body}");
            assert_eq!(body["error"]["code"], "timeout", "{body}");
        }
        End::HangUp => {
            assert!(push.await.expect("task").is_err(), "answered while locked");
        }
    }
    db.batch_execute("ROLLBACK").await.expect("unlock");

    // A real push through A; it waits for whatever A still has in hand.
    let (status, body) = api(
        &a.url,
        reqwest::Method::POST,
        "/v1/sync/push",
        &token,
        Some(push_body(&device, 2)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["status"], "applied", "{body}");
    // The ended push is in the database exactly when its write went on;
    // then its retry is a duplicate, else it applies now.
    let (status, retry) = api(
        &a.url,
        reqwest::Method::POST,
        "/v1/sync/push",
        &token,
        Some(first),
    )
    .await;
    assert_eq!(status, 200, "{retry}");
    let expected = if end == End::WriteFails {
        "applied"
    } else {
        "duplicate"
    };
    assert_eq!(retry["results"][0]["status"], expected, "{retry}");
    let b = start(&pg.url(), &[]);
    for (name, instance) in [("A", &a), ("B", &b)] {
        let (records, lectures, count) = counts(&db, instance, &admin).await;
        assert_eq!(records, 2);
        assert_eq!((lectures, count), (json!(2), json!(2)), "instance {name}");
    }
}

/// A resolution runs inside its request: a request timeout drops it while
/// its transaction waits, which rolls it back. The attendees it would have
/// set must not be counted anywhere.
#[tokio::test]
async fn a_resolution_cut_short_by_its_timeout_changes_no_figure() {
    let Some(pg) = PgCluster::start_or_skip() else {
        return;
    };
    let a = start(&pg.url(), &["--request-timeout-secs", "1"]);
    let admin = std::fs::read_to_string(a.dir.path().join("admin.token"))
        .expect("admin.token")
        .trim()
        .to_string();
    api(
        &a.url,
        reqwest::Method::PUT,
        "/v1/admin/org-units",
        &admin,
        Some(json!([{"code": "d", "name": "迎泽区", "type": "district", "parent": null}])),
    )
    .await;
    let mut devices = Vec::new();
    for label in ["p", "q"] {
        let (_, issued) = api(
            &a.url,
            reqwest::Method::POST,
            "/v1/admin/tokens",
            &admin,
            Some(json!({"role": "field", "org_unit": "d", "label": label})),
        )
        .await;
        devices.push((
            issued["token"].as_str().expect("token").to_string(),
            issued["device_id"].as_str().expect("device_id").to_string(),
        ));
    }
    // Two devices set attendees concurrently: a conflict.
    let record = uuid::Uuid::new_v4();
    for (i, (token, id)) in devices.iter().enumerate() {
        let body = json!({"device_id": id, "mutations": [{
            "id": uuid::Uuid::new_v4(), "record_id": record, "kind": "lecture", "base_seq": 0,
            "hlc": {"ms": 1_593_561_600_000u64 + i as u64, "c": 0, "node": id},
            "set": {"org_unit": "d", "held_on": "2020-01-02", "title": "民法典进社区", "attendees": 10 + i},
        }]});
        let (status, body) = api(
            &a.url,
            reqwest::Method::POST,
            "/v1/sync/push",
            token,
            Some(body),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let (_, conflicts) = api(&a.url, reqwest::Method::GET, "/v1/conflicts", &admin, None).await;
    let conflict = conflicts[0]["id"].as_str().expect("a conflict").to_string();
    let before = district_totals(&a.url, &admin).await;
    assert_eq!(before["lectures"]["attendees"], 11, "{before}");

    let (db, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    db.batch_execute("BEGIN; LOCK TABLE pufa_audit IN SHARE MODE")
        .await
        .expect("lock");
    let (status, body) = api(
        &a.url,
        reqwest::Method::POST,
        &format!("/v1/conflicts/{conflict}/resolve"),
        &admin,
        Some(json!({"value": 500})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (503, json!("timeout")),
        "{body}"
    );
    db.batch_execute("ROLLBACK").await.expect("unlock");

    let after = district_totals(&a.url, &admin).await;
    assert_eq!(
        after["lectures"], before["lectures"],
        "instance A counts a resolution that never happened"
    );
    let (_, conflicts) = api(&a.url, reqwest::Method::GET, "/v1/conflicts", &admin, None).await;
    assert_eq!(
        conflicts.as_array().map(Vec::len),
        Some(1),
        "the conflict is still open"
    );
    // A later write through A carries no trace of it into the database.
    let (token, id) = &devices[0];
    let (status, _) = api(
        &a.url,
        reqwest::Method::POST,
        "/v1/sync/push",
        token,
        Some(push_body(id, 9)),
    )
    .await;
    assert_eq!(status, 200);
    let b = start(&pg.url(), &[]);
    for instance in [&a, &b] {
        let t = district_totals(&instance.url, &admin).await;
        assert_eq!(t["lectures"]["attendees"], 21, "{t}");
        assert_eq!(t["lectures"]["count"], 2, "{t}");
    }
}

#[tokio::test]
async fn a_push_whose_write_fails_leaves_nothing() {
    a_push_ended_early(End::WriteFails).await;
}

#[tokio::test]
async fn a_push_whose_request_timed_out_is_counted_once() {
    a_push_ended_early(End::Timeout).await;
}

#[tokio::test]
async fn a_push_whose_client_hung_up_is_counted_once() {
    a_push_ended_early(End::HangUp).await;
}
