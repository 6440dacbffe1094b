//! `pufa-server migrate`: a populated sled store moved into PostgreSQL
//! serves the same pull output, totals (legal understanders' too),
//! checksums, conflicts, rejections, devices and history, under the same
//! store id, and its devices go on syncing with their old tokens, the seqs
//! continuing where they were.
//!
//! Needs `PUFA_TEST_DATABASE_URL` (`.ci/run` sets it); skipped loudly
//! without it, failing under `CI=true`.

#[allow(dead_code)] // The shared harness has more than this test uses.
mod support;

use std::sync::Arc;

use axum::http::Method;
use pufa_server::config::SeededIds;
use pufa_server::Config;
use serde_json::{json, Value};
use support::*;

/// Everything a device or coordinator can read, as JSON.
async fn everything(s: &Server, street: &Dev, field: &Dev, record: &str) -> Value {
    let (admin_pull, admin_next) = s.pull_all(&s.admin, 0).await;
    let (street_pull, street_next) = s.pull_all(street, 0).await;
    let (field_pull, _) = s.pull_all(field, 0).await;
    let mut totals = Vec::new();
    for (org, from, to) in [
        ("d", "2020-01-01", "2020-12-31"),
        ("s1", "2020-06-01", "2020-06-30"),
        ("c1", "2019-01-01", "2021-12-31"),
        ("s2", "2020-01-01", "2020-12-31"),
    ] {
        let mut t = s
            .get(
                &format!("/v1/totals?org={org}&from={from}&to={to}"),
                &s.admin,
            )
            .await
            .expect(200);
        t.as_object_mut().unwrap().remove("server_time_ms");
        totals.push(t);
    }
    let figures = s
        .get("/v1/figures?org=d&year=2020", &s.admin)
        .await
        .expect(200);
    let devices = s.get("/v1/devices", &s.admin).await.expect(200);
    json!({
        "pull": admin_pull,
        "next": admin_next,
        "street_pull": street_pull,
        "street_next": street_next,
        "field_pull": field_pull,
        "checksum": s.checksum(&s.admin).await,
        "street_checksum": s.checksum(street).await,
        "totals": totals,
        "figures": figures,
        "conflicts": s.get("/v1/conflicts", &s.admin).await.expect(200),
        "rejections": s.get("/v1/rejections", &s.admin).await.expect(200),
        "devices": devices,
        "history": s.get(&format!("/v1/records/{record}/history"), &s.admin).await.expect(200),
    })
}

/// `pufa-server migrate`, run where no runtime is (the harness's
/// `restart_with` calls back synchronously, between two servers).
fn migrate(
    from: &Config,
    to: &Config,
) -> Result<pufa_server::store::migrate::Migrated, pufa_server::store::StoreError> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime")
                    .block_on(pufa_server::store::migrate::sled_to_pg(from, to))
            })
            .join()
            .expect("the migration thread")
    })
}

#[tokio::test]
async fn a_migrated_store_serves_the_same_and_its_devices_sync_on() {
    let Some(base) = support::pg::base_url() else {
        return;
    };
    let s = Server::new().await;
    let street = s.issue("coordinator", "s1").await;
    let a = s.issue("field", "s1").await;
    let b = s.issue("field", "s1").await;
    let far = s.issue("field", "s2").await;
    // Lectures, corners and a site in several units and months.
    let mut ms = Vec::new();
    for i in 0..40u64 {
        let org = ["c1", "c2", "s1"][i as usize % 3];
        let day = format!("2020-{:02}-{:02}", 1 + i % 12, 1 + i % 28);
        ms.push(lecture(&a, &new_id(), org, &day, 10 + i));
    }
    ms.push(corner(&a, &new_id(), "c1", "active"));
    ms.push(site(&a, &new_id(), "c2", "provincial", "awarded", 2020));
    ms.push(understander(
        &a,
        &new_id(),
        "c2",
        "2020-04-01",
        "serving",
        Some("0351-4041234"),
    ));
    for r in s.push(&a, &ms).await["results"].as_array().unwrap() {
        assert_eq!(r["status"], "applied", "{r}");
    }
    s.push_one(&far, &lecture(&far, &new_id(), "v3", "2020-03-03", 33))
        .await;
    // A conflict: b edits attendees without having seen a's lecture.
    let rec = new_id();
    let m = lecture(&a, &rec, "c1", "2020-05-05", 50);
    assert_applied(&s.push_one(&a, &m).await, &m);
    let m = mutation(&b, &rec, "lecture", 0, T0 + 10, json!({"attendees": 70}));
    assert_eq!(s.push_one(&b, &m).await["status"], "applied");
    // A resolved conflict, and a rejection (a unit outside b's scope).
    let rec2 = new_id();
    let m = lecture(&a, &rec2, "c2", "2020-08-08", 20);
    assert_applied(&s.push_one(&a, &m).await, &m);
    let m = mutation(&b, &rec2, "lecture", 0, T0 + 20, json!({"attendees": 25}));
    assert_eq!(s.push_one(&b, &m).await["status"], "applied");
    let conflicts = s.get("/v1/conflicts", &s.admin).await.expect(200);
    assert_eq!(conflicts.as_array().unwrap().len(), 2, "{conflicts}");
    let to_resolve = conflicts
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["record_id"] == rec2.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.json(
        Method::POST,
        &format!("/v1/conflicts/{to_resolve}/resolve"),
        &s.admin,
        &json!({"value": 22}),
    )
    .await
    .expect(200);
    let bad = lecture(&b, &new_id(), "v3", "2020-01-01", 5);
    assert_rejected(&s.push_one(&b, &bad).await, &bad, "out_of_scope");
    // Pull times are device health the dashboard shows.
    s.pull(&a, 0, 100).await;

    let before = everything(&s, &street, &a, &rec).await;
    assert_eq!(before["conflicts"].as_array().unwrap().len(), 1);
    assert_eq!(before["rejections"].as_array().unwrap().len(), 1);
    assert_eq!(before["totals"][0]["legal_understanders"]["serving"], 1);
    let seq_before = before["next"].as_u64().unwrap();

    // Stop the server, migrate its store, start it on the database.
    let url = support::pg::fresh_schema(&base).await;
    let mut s = s;
    s.database = Some(support::pg::SchemaGuard::new(url.clone()));
    let s = s
        .restart_with(
            |_| {},
            |dir| {
                let mut from = Config::new(dir);
                from.ids = Arc::new(SeededIds::new(99));
                let mut to = from.clone();
                to.database_url = Some(url.clone());
                let migrated = migrate(&from, &to).expect("migrate");
                assert_eq!(migrated.records, 46);
                assert_eq!(migrated.seq, seq_before);
                // A second migration into the same database is refused.
                let again = migrate(&from, &to);
                let e = again.expect_err("a used database");
                assert!(e.to_string().contains("already holds"), "{e}");
                // Kept aside, as an operator would keep it for going back.
                let aside = tempfile::tempdir().unwrap();
                std::fs::rename(dir.join("store"), aside.path().join("store")).unwrap();
            },
        )
        .await;

    let after = everything(&s, &street, &a, &rec).await;
    for key in before.as_object().unwrap().keys() {
        assert_eq!(after[key], before[key], "{key} differs after migrating");
    }
    // Old tokens work; the next write gets the next seq; a retry of an old
    // mutation is still a duplicate.
    let m = mutation(&a, &rec, "lecture", 0, T0 + 99, json!({"attendees": 99}));
    let r = s.push_one(&a, &m).await;
    assert_eq!(r["status"], "applied", "{r}");
    assert_eq!(seq_of(&r), seq_before + 1);
    let r = s.push_one(&a, &ms[0]).await;
    assert_eq!(r["status"], "duplicate", "{r}");

    // `pufa-server verify` on the database: the chain, every record
    // replayed from it, the aggregates recounted; then a tampered entry.
    let mut config = Config::new(s.dir.path());
    config.database_url = Some(url.clone());
    let report = pufa_server::store::verify::verify_pg(&config)
        .await
        .expect("verify");
    assert!(report.broken.is_none(), "{report}");
    assert_eq!(report.records, 46);
    let (db, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let entries: i64 = db
        .query_one("SELECT count(*) FROM pufa_audit", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(report.entries, entries as u64);
    db.execute(
        "UPDATE pufa_audit SET value = overlay(value placing '\\xff'::bytea from length(value) for 1)
          WHERE n = 7",
        &[],
    )
    .await
    .expect("tamper");
    let report = pufa_server::store::verify::verify_pg(&config)
        .await
        .expect("verify");
    assert!(
        matches!(
            report.broken,
            Some(pufa_server::store::verify::Broken::Entry { n: 7, .. })
        ),
        "{report}"
    );
}

/// Makes the database look as if migrations from `version` on had never
/// run (their upgrades run again at the next start); returns the latest
/// version it had.
async fn forget_migrations_from(db: &tokio_postgres::Client, version: i32) -> i32 {
    let latest: i32 = db
        .query_one("SELECT max(version) FROM pufa_migrations", &[])
        .await
        .unwrap()
        .get(0);
    db.execute(
        "DELETE FROM pufa_migrations WHERE version >= $1",
        &[&version],
    )
    .await
    .unwrap();
    latest
}

/// A server holding [`small_tree`] on a fresh schema of the test database
/// `base`, and the schema's URL.
async fn on_fresh_schema(base: &str) -> (Server, String) {
    let url = support::pg::fresh_schema(base).await;
    let mut s = Server::configured(|c| c.database_url = Some(url.clone())).await;
    s.database = Some(support::pg::SchemaGuard::new(url.clone()));
    s.import(&small_tree()).await;
    (s, url)
}

/// Store format 6 on PostgreSQL is schema migration 4: a database from
/// before it (record bodies in the positional layout, as sled stores
/// before format 5 and migrations from them left them) is upgraded when a
/// server starts on it, in the migration's transaction: every value read as
/// its disk type, record bodies rewritten compact; it then serves and
/// verifies as before. A value the disk types cannot read rolls the whole
/// migration back, naming it.
#[tokio::test]
async fn a_database_from_before_store_format_6_is_upgraded_and_verifies() {
    let Some(base) = support::pg::base_url() else {
        return;
    };
    let (s, url) = on_fresh_schema(&base).await;
    let street = s.issue("coordinator", "s1").await;
    let a = s.issue("field", "s1").await;
    let b = s.issue("field", "s1").await;
    let mut ms = Vec::new();
    for i in 0..30u64 {
        let org = ["c1", "c2", "s1"][i as usize % 3];
        ms.push(lecture(
            &a,
            &new_id(),
            org,
            &format!("2020-{:02}-03", 1 + i % 12),
            i,
        ));
    }
    ms.push(corner(&a, &new_id(), "c1", "active"));
    s.push(&a, &ms).await;
    let rec = new_id();
    let m = lecture(&a, &rec, "c1", "2020-05-05", 50);
    assert_applied(&s.push_one(&a, &m).await, &m);
    let m = mutation(&b, &rec, "lecture", 0, T0 + 10, json!({"attendees": 70}));
    assert_eq!(s.push_one(&b, &m).await["status"], "applied");
    let bad = lecture(&b, &new_id(), "v3", "2020-01-01", 5);
    assert_rejected(&s.push_one(&b, &bad).await, &bad, "out_of_scope");
    s.json(
        Method::POST,
        "/v1/admin/accounts",
        &s.admin,
        &json!({"username": "zhang", "password": "correct horse battery", "role": "coordinator", "org_unit": "d"}),
    )
    .await
    .expect(201);
    let before = everything(&s, &street, &a, &rec).await;

    let (db, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    // As before migration 4: positional record bodies.
    let first_bytes = |rows: Vec<tokio_postgres::Row>| -> Vec<u8> {
        rows.iter().map(|r| r.get::<_, &[u8]>(0)[0]).collect()
    };
    let rows = db
        .query("SELECT id, body FROM pufa_records", &[])
        .await
        .unwrap();
    assert!(rows.len() > 30);
    for row in &rows {
        let r = pufa_server::store::codec::decode_record(row.get(1)).unwrap();
        let id: uuid::Uuid = row.get(0);
        let positional = pufa_server::store::codec::encode(&r);
        db.execute(
            "UPDATE pufa_records SET body = $2 WHERE id = $1",
            &[&id, &positional],
        )
        .await
        .unwrap();
    }
    let latest = forget_migrations_from(&db, 4).await;
    let positional = db
        .query("SELECT body FROM pufa_records", &[])
        .await
        .unwrap();
    assert!(first_bytes(positional).iter().all(|&b| b == 1));

    let s = s.restart().await;
    assert_eq!(everything(&s, &street, &a, &rec).await, before);
    let compact = db
        .query("SELECT body FROM pufa_records", &[])
        .await
        .unwrap();
    assert!(
        first_bytes(compact).iter().all(|&b| b == 2),
        "every body compact"
    );
    let have: i32 = db
        .query_one("SELECT max(version) FROM pufa_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(have, latest);
    let mut config = Config::new(s.dir.path());
    config.database_url = Some(url.clone());
    let report = pufa_server::store::verify::verify_pg(&config)
        .await
        .expect("verify");
    assert!(report.broken.is_none(), "{report}");

    // An unreadable device: the upgrade stops, naming it, and nothing of
    // migration 4 stays (its bodies, its row).
    db.execute("DELETE FROM pufa_migrations WHERE version >= 4", &[])
        .await
        .unwrap();
    db.execute(
        "UPDATE pufa_records SET body = $1 WHERE id = $2",
        &[
            &pufa_server::store::codec::encode(
                &pufa_server::store::codec::decode_record(
                    db.query_one(
                        "SELECT body FROM pufa_records WHERE id = $1",
                        &[&rec.parse::<uuid::Uuid>().unwrap()],
                    )
                    .await
                    .unwrap()
                    .get(0),
                )
                .unwrap(),
            ),
            &rec.parse::<uuid::Uuid>().unwrap(),
        ],
    )
    .await
    .unwrap();
    db.execute(
        "UPDATE pufa_devices SET body = overlay(body placing '\\x93'::bytea from 2 for 1) WHERE id = $1",
        &[&a.id.parse::<uuid::Uuid>().unwrap()],
    )
    .await
    .unwrap();
    let e = pufa_server::open(config)
        .await
        .err()
        .expect("an unreadable device");
    let e = format!("{e}");
    assert!(
        e.contains("format 6") && e.contains("Device") && e.contains(&a.id),
        "{e}"
    );
    let have: i32 = db
        .query_one("SELECT max(version) FROM pufa_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(have, 3, "migration 4 rolled back");
    let body: Vec<u8> = db
        .query_one(
            "SELECT body FROM pufa_records WHERE id = $1",
            &[&rec.parse::<uuid::Uuid>().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(body[0], 1, "the record's body as it was");
}

/// Store format 7 on PostgreSQL is schema migration 5: a database whose
/// topic aggregates count topics as written (反诈 apart from
/// 反电信网络诈骗) has them recounted by the topic vocabulary when a server
/// starts on it, in the migration's transaction, with a new write
/// generation; it then serves folded figures and verifies.
#[tokio::test]
async fn a_database_from_before_store_format_7_gets_its_topics_folded() {
    let Some(base) = support::pg::base_url() else {
        return;
    };
    let (s, url) = on_fresh_schema(&base).await;
    let a = s.issue("field", "s1").await;
    let topics = [
        json!(["反诈", "电信网络诈骗"]),
        json!(["《民法典》"]),
        json!(["民法典", "防范诈骗"]),
        json!([]),
        json!(["平安建设"]),
    ];
    let mut ms = Vec::new();
    for i in 0..20usize {
        let mut m = lecture(
            &a,
            &new_id(),
            ["c1", "c2", "s1"][i % 3],
            &format!("2020-{:02}-03", 1 + i % 12),
            10 + i as u64,
        );
        m["set"]["topics"] = topics[i % topics.len()].clone();
        ms.push(m);
    }
    s.push(&a, &ms).await;
    async fn figures(s: &Server) -> Value {
        s.get("/v1/figures?org=s1&year=2020", &s.admin)
            .await
            .expect(200)
    }
    let folded = figures(&s).await;
    let by_topic: Vec<(&str, u64)> = folded["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["topic"].as_str().unwrap_or(""),
                t["lectures"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        by_topic,
        [
            ("反电信网络诈骗", 8),
            ("民法典", 8),
            ("", 4),
            ("平安建设", 4),
        ]
    );

    let (db, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    // As before migration 5: topic entries by topic as written.
    let (pulled, _) = s.pull_all(&s.admin, 0).await;
    let as_written = topic_entries_as_written(&pulled);
    db.execute(
        "DELETE FROM pufa_aggregates WHERE substr(key, 1, 3) = 'g/k'::bytea",
        &[],
    )
    .await
    .unwrap();
    for (k, v) in &as_written {
        db.execute(
            "INSERT INTO pufa_aggregates (key, gen, value) VALUES ($1, 0, $2)",
            &[k, v],
        )
        .await
        .unwrap();
    }
    // A stale entry no record gives: removed by the upgrade.
    let stale =
        pufa_server::store::codec::agg_key(&pufa_core::totals::AggKey::Topics("c1".into(), 2015));
    db.execute(
        "INSERT INTO pufa_aggregates (key, gen, value) VALUES ($1, 0, $2)",
        &[&stale, &as_written[0].1],
    )
    .await
    .unwrap();
    let latest = forget_migrations_from(&db, 5).await;
    let gen_before: i64 = db
        .query_one("SELECT gen FROM pufa_state", &[])
        .await
        .unwrap()
        .get(0);
    let mut config = Config::new(s.dir.path());
    config.database_url = Some(url.clone());
    let report = pufa_server::store::verify::verify_pg(&config)
        .await
        .expect("verify");
    assert!(
        report.broken.is_none(),
        "before the upgrade topic entries are not compared: {report}"
    );

    let s = s.restart().await;
    assert_eq!(figures(&s).await, folded);
    let have: i32 = db
        .query_one("SELECT max(version) FROM pufa_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(have, latest);
    let (gen_after, stale_value): (i64, Option<Vec<u8>>) = {
        let row = db
            .query_one(
                "SELECT s.gen, a.value FROM pufa_state s, pufa_aggregates a WHERE a.key = $1",
                &[&stale],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(gen_after > gen_before, "a new write generation");
    assert_eq!(stale_value, None, "kept as removed for other instances");
    let report = pufa_server::store::verify::verify_pg(&config)
        .await
        .expect("verify");
    assert!(report.broken.is_none(), "{report}");
    // New lectures count by the vocabulary on top of the recount.
    let mut m = lecture(&a, &new_id(), "c1", "2020-07-07", 5);
    m["set"]["topics"] = json!(["反电诈"]);
    s.push(&a, &[m]).await;
    let after = figures(&s).await;
    assert_eq!(after["topics"][0]["topic"], "反电信网络诈骗");
    assert_eq!(after["topics"][0]["lectures"], 9);
}
