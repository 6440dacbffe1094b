//! The audit trail: `GET /v1/records/{id}/history` (what each write changed,
//! who made it, scope, paging) and `pufa-server verify` (the hash chain and
//! the records replayed from it), including stores tampered with on disk.

// The harness is shared with contract.rs, which uses more of it.
#[allow(dead_code)]
mod support;

use axum::http::Method;
use pufa_server::store::codec::{self, AuditBody};
use pufa_server::store::verify::{self, Broken, Report};
use pufa_server::Config;
use serde_json::{json, Value};
use support::*;
use uuid::Uuid;

async fn history(s: &Server, dev: &Dev, id: &str) -> Vec<Value> {
    let v = s
        .get(&format!("/v1/records/{id}/history"), dev)
        .await
        .expect(200);
    v.as_array().expect("an array").clone()
}

fn causes(entries: &[Value]) -> Vec<&str> {
    entries
        .iter()
        .map(|e| e["cause"].as_str().expect("cause"))
        .collect()
}

fn change(entry: &Value, field: &str) -> Option<(Value, Value)> {
    entry["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .find(|c| c["field"] == field)
        .map(|c| (c["from"].clone(), c["to"].clone()))
}

#[tokio::test]
async fn history_tells_what_each_write_changed_and_who_made_it() {
    let s = Server::new().await;
    let f1 = s.issue("field", "s1").await;
    let f2 = s.issue("field", "s1").await;
    let coord = s.issue("coordinator", "d").await;
    let rec = new_id();

    // Create, then edit.
    let create = lecture(&f1, &rec, "c1", "2020-06-01", 87);
    let seq1 = assert_applied(&s.push_one(&f1, &create).await, &create);
    let edit = mutation(&f1, &rec, "lecture", seq1, T0 + 1, json!({"attendees": 90}));
    let seq2 = assert_applied(&s.push_one(&f1, &edit).await, &edit);
    // f2 had not seen the edit: a conflict (f2's later HLC wins).
    let clash = mutation(&f2, &rec, "lecture", seq1, T0 + 2, json!({"attendees": 80}));
    let r = s.push_one(&f2, &clash).await;
    assert_eq!(
        reported(&r),
        json!([{"field":"attendees","winner":80,"loser":90}])
    );
    // Nothing changes for a duplicate or a rejection: not logged.
    assert_eq!(s.push_one(&f2, &clash).await["status"], "duplicate");
    let bad = mutation(&f2, &rec, "lecture", 0, T0 + 3, json!({"attendees": -1}));
    assert_eq!(s.push_one(&f2, &bad).await["status"], "rejected");
    // A write that loses on every field is applied, changes nothing, and is logged.
    let seq3 = seq_of(&r);
    let stale = mutation(&f1, &rec, "lecture", seq3, T0 - 5, json!({"attendees": 70}));
    let stale_seq = assert_applied(&s.push_one(&f1, &stale).await, &stale);
    // The coordinator resolves the conflict.
    let conflicts = s.get("/v1/conflicts", &coord).await.expect(200);
    let conflict = conflicts[0]["id"].as_str().unwrap().to_string();
    s.json(
        Method::POST,
        &format!("/v1/conflicts/{conflict}/resolve"),
        &coord,
        &json!({"value": 85}),
    )
    .await
    .expect(200);
    // Delete, restore (with a clock far ahead: re-stamped), move.
    let seq = seq_of(&s.record(&rec).await);
    let del = with_delete(
        mutation(&f1, &rec, "lecture", seq, T0 + 10, json!({})),
        true,
    );
    let seq = assert_applied(&s.push_one(&f1, &del).await, &del);
    let restore = with_delete(
        mutation(&f1, &rec, "lecture", seq, T0 + 3_600_000, json!({})),
        false,
    );
    let restored = s.push_one(&f1, &restore).await;
    assert_eq!(restored["restamped"], true);
    s.import(&json!([{"code": "s1", "name": "柳巷街道", "type": "street", "parent": "s2"}]))
        .await;

    let h = history(&s, &coord, &rec).await;
    assert_eq!(
        causes(&h),
        ["push", "push", "push", "push", "resolve", "push", "push", "move"]
    );
    // The chain links consecutive entries (only this record was written).
    for pair in h.windows(2) {
        assert_eq!(pair[1]["n"].as_u64(), pair[0]["n"].as_u64().map(|n| n + 1));
        assert_eq!(pair[1]["prev"], pair[0]["hash"]);
    }
    assert_eq!(h[0]["mutation_id"], create["id"]);
    assert_eq!(h[0]["device_id"], f1.id.as_str());
    assert_eq!(h[0]["actor"], f1.id.as_str());
    assert_eq!(h[0]["kind"], "lecture");
    assert_eq!(h[0]["seq"], seq1);
    assert_eq!(h[0]["hlc"], create["hlc"]);
    assert_eq!(change(&h[0], "attendees"), Some((Value::Null, json!(87))));
    assert_eq!(change(&h[0], "org_unit"), Some((Value::Null, json!("c1"))));
    assert_eq!(h[0]["changes"].as_array().unwrap().len(), 4);
    assert_eq!(change(&h[1], "attendees"), Some((json!(87), json!(90))));
    assert_eq!(h[1]["changes"].as_array().unwrap().len(), 1);
    assert_eq!(
        (h[1]["seq"].as_u64(), &h[1]["restamped"]),
        (Some(seq2), &json!(false))
    );
    // The conflict: f2's value replaced 90 and the conflict is named.
    assert_eq!(h[2]["device_id"], f2.id.as_str());
    assert_eq!(change(&h[2], "attendees"), Some((json!(90), json!(80))));
    assert_eq!(h[2]["conflicts"][0]["id"], conflict.as_str());
    assert_eq!(h[2]["conflicts"][0]["winner"], 80);
    // The losing write: logged, no change, the record's seq unchanged.
    assert_eq!(h[3]["mutation_id"], stale["id"]);
    assert_eq!(
        (h[3]["changes"].clone(), h[3]["seq"].as_u64()),
        (json!([]), Some(stale_seq))
    );
    // The resolution: by the coordinator, naming the conflict.
    assert_eq!(h[4]["conflict_id"], conflict.as_str());
    assert_eq!(h[4]["mutation_id"], Value::Null);
    assert_eq!(h[4]["actor"], coord.id.as_str());
    assert_eq!(change(&h[4], "attendees"), Some((json!(80), json!(85))));
    assert_eq!(change(&h[5], "_deleted"), Some((Value::Null, json!(true))));
    assert_eq!(change(&h[6], "_deleted"), Some((json!(true), json!(false))));
    assert_eq!(h[6]["restamped"], true);
    assert_eq!(h[6]["pushed_hlc"], restore["hlc"]);
    assert_eq!(h[6]["hlc"], restored["hlc"]);
    // The move: by the admin who re-parented s1, the unit's path before and after.
    assert_eq!(h[7]["device_id"], s.admin.id.as_str());
    assert_eq!(
        change(&h[7], "_path"),
        Some((json!(["c1", "s1", "d"]), json!(["c1", "s1", "s2", "d"])))
    );
    let now = s.record(&rec).await;
    assert_eq!(
        h[7]["seq"], now["seq"],
        "the last entry has the record's seq"
    );
    assert_eq!(now["fields"]["attendees"], 85);
}

#[tokio::test]
async fn history_is_for_coordinators_of_a_scope_the_record_is_or_was_in() {
    let s = Server::new().await;
    let f = s.issue("field", "d").await;
    let rec = new_id();
    let m = lecture(&f, &rec, "c1", "2020-06-01", 10);
    assert_applied(&s.push_one(&f, &m).await, &m);
    let other = new_id();
    let m = lecture(&f, &other, "v3", "2020-06-01", 10);
    assert_applied(&s.push_one(&f, &m).await, &m);
    // c1 moves from s1 to s2.
    s.import(&json!([{"code": "c1", "name": "柳巷第01社区", "type": "community", "parent": "s2"}]))
        .await;
    let path = format!("/v1/records/{rec}/history");
    for org in ["d", "s1", "s2", "c1"] {
        let c = s.issue("coordinator", org).await;
        assert_eq!(history(&s, &c, &rec).await.len(), 2, "coordinator of {org}");
    }
    let c2 = s.issue("coordinator", "c2").await;
    assert_error(&s.get(&path, &c2).await, 404, "not_found");
    let c_s1 = s.issue("coordinator", "s1").await;
    assert_error(
        &s.get(&format!("/v1/records/{other}/history"), &c_s1).await,
        404,
        "not_found",
    );
    assert_error(&s.get(&path, &f).await, 403, "forbidden");
    for bad in [new_id(), "not-a-uuid".to_string()] {
        let p = format!("/v1/records/{bad}/history");
        assert_error(&s.get(&p, &s.admin).await, 404, "not_found");
    }
    assert_error(
        &s.send(Method::GET, &path, None, Vec::new(), None).await,
        401,
        "unauthorized",
    );
}

/// Access to a record's history ends where access to the record ended:
/// once it has left a coordinator's scope (its unit changed, or its unit
/// re-parented), that coordinator reads the entries up to the one that
/// took it out, and nothing written after (not what changed, nor who).
#[tokio::test]
async fn history_after_a_record_leaves_the_scope_is_not_readable() {
    let s = Server::new().await;
    let fa = s.issue("field", "s1").await;
    let district = s.issue("field", "d").await;
    let fb = s.issue("field", "s2").await;
    let c_s1 = s.issue("coordinator", "s1").await;
    let c_s2 = s.issue("coordinator", "s2").await;

    // Street A creates it; the district moves it to street B; B edits it.
    let rec = new_id();
    let m = lecture(&fa, &rec, "c1", "2020-06-01", 10);
    let seq = assert_applied(&s.push_one(&fa, &m).await, &m);
    let moved = mutation(
        &district,
        &rec,
        "lecture",
        seq,
        T0 + 1,
        json!({"org_unit": "v3"}),
    );
    let seq = assert_applied(&s.push_one(&district, &moved).await, &moved);
    let secret =
        json!({"title": "乙街道标题QX", "notes": "乙街道备注QX", "speaker": "乙街道讲师QX"});
    let edit = mutation(&fb, &rec, "lecture", seq, T0 + 2, secret);
    assert_applied(&s.push_one(&fb, &edit).await, &edit);

    let seen = history(&s, &c_s1, &rec).await;
    assert_eq!(causes(&seen), ["push", "push"], "{seen:?}");
    assert_eq!(
        change(&seen[1], "org_unit"),
        Some((json!("c1"), json!("v3")))
    );
    let text = serde_json::to_string(&seen).unwrap();
    assert!(!text.contains("QX") && !text.contains(&fb.id), "{text}");
    // Paging past the move: nothing more.
    let n = seen[1]["n"].as_u64().unwrap();
    let more = s
        .get(&format!("/v1/records/{rec}/history?after={n}"), &c_s1)
        .await
        .expect(200);
    assert_eq!(more, json!([]));
    // Street B, and the district, read it all.
    assert_eq!(history(&s, &c_s2, &rec).await.len(), 3);
    assert_eq!(history(&s, &s.admin, &rec).await.len(), 3);

    // Re-parenting: c2 moves from s1 to s2, then B edits a record in it.
    let other = new_id();
    let m = lecture(&fa, &other, "c2", "2020-06-02", 10);
    let seq = assert_applied(&s.push_one(&fa, &m).await, &m);
    s.import(&json!([{"code": "c2", "name": "柳巷第02社区", "type": "community", "parent": "s2"}]))
        .await;
    let edit = mutation(
        &fb,
        &other,
        "lecture",
        seq + 1,
        T0 + 3,
        json!({"title": "乙街道QY"}),
    );
    assert_applied(&s.push_one(&fb, &edit).await, &edit);
    let seen = history(&s, &c_s1, &other).await;
    assert_eq!(causes(&seen), ["push", "move"], "{seen:?}");
    assert!(!serde_json::to_string(&seen).unwrap().contains("QY"));
    assert_eq!(history(&s, &c_s2, &other).await.len(), 3);
}

#[tokio::test]
async fn history_pages_with_after_and_a_named_limit() {
    let s = Server::new().await;
    let f = s.issue("field", "d").await;
    let rec = new_id();
    let mut batch = vec![lecture(&f, &rec, "c1", "2020-06-01", 0)];
    for i in 1..1000 {
        batch.push(mutation(
            &f,
            &rec,
            "lecture",
            0,
            T0 + i,
            json!({"attendees": i}),
        ));
    }
    s.push(&f, &batch).await;
    let more: Vec<Value> = (1000..1010)
        .map(|i| mutation(&f, &rec, "lecture", 0, T0 + i, json!({"attendees": i})))
        .collect();
    s.push(&f, &more).await;

    // Without a limit: the most one answer holds (HISTORY_LIMIT_MAX).
    let first = history(&s, &s.admin, &rec).await;
    assert_eq!(first.len(), pufa_core::wire::HISTORY_LIMIT_MAX);
    let big = s
        .get(&format!("/v1/records/{rec}/history?limit=99999"), &s.admin)
        .await
        .expect(200);
    assert_eq!(big.as_array().unwrap().len(), 1000, "clamped");
    let last_n = first.last().unwrap()["n"].as_u64().unwrap();
    let rest = s
        .get(
            &format!("/v1/records/{rec}/history?after={last_n}"),
            &s.admin,
        )
        .await
        .expect(200);
    assert_eq!(rest.as_array().unwrap().len(), 10);
    assert_eq!(change(&rest[9], "attendees").unwrap().1, 1009);
    // Small pages give the same entries.
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = s
            .get(
                &format!("/v1/records/{rec}/history?after={after}&limit=300"),
                &s.admin,
            )
            .await
            .expect(200);
        let page = page.as_array().unwrap().clone();
        let Some(last) = page.last() else { break };
        after = last["n"].as_u64().unwrap();
        paged.extend(page);
    }
    assert_eq!(paged.len(), 1010);
    assert_eq!(&paged[..1000], &first[..]);
    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("after=-1", "after"),
    ] {
        let resp = s
            .get(&format!("/v1/records/{rec}/history?{q}"), &s.admin)
            .await;
        assert_error_field(&resp, 400, "invalid_query", Some(field));
    }
}

/// Fills a store with a bit of everything: creations, edits, conflicts,
/// resolutions, deletes, restores, a move, rejections and re-stamps.
/// Returns one record id of `c1`.
async fn busy(s: &Server) -> String {
    let f1 = s.issue("field", "s1").await;
    let f2 = s.issue("field", "d").await;
    let coord = s.issue("coordinator", "d").await;
    let mut ids = Vec::new();
    for round in 0..4u64 {
        let mut batch = Vec::new();
        for i in 0..50u64 {
            let id = new_id();
            let org = ["c1", "c2"][(i % 2) as usize];
            let mut m = lecture(&f1, &id, org, "2020-06-01", i);
            m["hlc"]["ms"] = json!(T0 + round);
            batch.push(m);
            ids.push(id);
        }
        batch.push(corner(&f1, &new_id(), "c1", "active"));
        batch.push(lecture(&f1, &new_id(), "zz", "2020-06-01", 1)); // rejected
        s.push(&f1, &batch).await;
        let mut edits = Vec::new();
        for (i, id) in ids.iter().enumerate().skip(round as usize * 7).take(20) {
            let mut set = json!({"attendees": 1000 + i});
            if i % 3 == 0 {
                set["topics"] = json!(["民法典", "宪法"]);
            }
            let mut m = mutation(&f2, id, "lecture", 0, T0 + 100 + round, set);
            if i % 5 == 0 {
                m = with_delete(m, i % 10 == 0);
            }
            if i % 7 == 0 {
                m["hlc"]["ms"] = json!(T0 + 86_400_000); // re-stamped
            }
            edits.push(m);
        }
        edits.push(site(&f2, &new_id(), "v3", "municipal", "awarded", 2020));
        s.push(&f2, &edits).await;
        let list = s.get("/v1/conflicts?limit=3", &coord).await.expect(200);
        for c in list.as_array().unwrap() {
            let value = if c["field"] == "_deleted" {
                json!(false)
            } else {
                json!(7)
            };
            s.json(
                Method::POST,
                &format!("/v1/conflicts/{}/resolve", c["id"].as_str().unwrap()),
                &coord,
                &value_body(value),
            )
            .await
            .expect(200);
        }
    }
    s.import(&json!([{"code": "c2", "name": "柳巷第02社区", "type": "community", "parent": "s2"}]))
        .await;
    ids[0].clone()
}

fn value_body(v: Value) -> Value {
    json!({ "value": v })
}

/// Stops the server (its store closes) and keeps its data dir.
fn stop(s: Server) -> tempfile::TempDir {
    let Server { dir, app, .. } = s;
    drop(app);
    dir
}

fn verify_dir(dir: &std::path::Path) -> Report {
    verify::verify(&Config::new(dir)).unwrap_or_else(|e| panic!("verify: {e}"))
}

/// Changes the store directly, as someone with access to the disk could.
fn tamper(dir: &std::path::Path, f: impl FnOnce(&sled::Db)) {
    // No periodic flusher thread, which can hold the store a moment past
    // the drop; open_db waits out what sled's other threads hold.
    let db = pufa_server::store::sled::open_db(
        &sled::Config::new()
            .path(dir.join("store"))
            .flush_every_ms(None),
    )
    .expect("open the store");
    f(&db);
    db.flush().unwrap();
}

fn entry(db: &sled::Db, n: u64) -> codec::StoredAudit {
    codec::decode_audit(&db.get(codec::audit_key(n)).unwrap().unwrap()).unwrap()
}

#[tokio::test]
async fn verify_passes_a_busy_store_and_names_what_was_tampered_with() {
    let s = Server::new().await;
    let rec: Uuid = busy(&s).await.parse().unwrap();
    let running = verify::verify(&Config::new(s.dir.path()));
    assert!(
        running.is_err(),
        "the store is locked while the server runs"
    );
    let dir = stop(s);
    let report = verify_dir(dir.path());
    assert_eq!(report.broken, None, "{report}");
    assert!(
        report.records >= 200 && report.entries > report.records,
        "{report}"
    );
    assert!(report.aggregates > 0);
    let original = dir.path().join("store");
    let pristine = tempfile::tempdir().unwrap();
    let copy = |from: &std::path::Path, to: &std::path::Path| {
        let _ = std::fs::remove_dir_all(to);
        copy_dir(from, to);
    };
    copy(&original, &pristine.path().join("store"));
    let reset = || copy(&pristine.path().join("store"), &original);
    let n_mid = report.entries / 2;

    // A record's value changed.
    tamper(dir.path(), |db| {
        let key = codec::record_key(rec);
        let mut r = codec::decode_record(&db.get(&key).unwrap().unwrap()).unwrap();
        r.fields.get_mut("attendees").unwrap().value = json!(999_999);
        db.insert(key, codec::encode_record(&r)).unwrap();
    });
    match verify_dir(dir.path()).broken {
        Some(Broken::Record { id, why }) => {
            assert!(id == rec && why.contains("attendees"), "{why}")
        }
        other => panic!("expected a broken record, got {other:?}"),
    }

    // An entry's content changed, its hash left as it was.
    reset();
    tamper(dir.path(), |db| {
        let key = codec::audit_key(n_mid);
        let mut bytes = db.get(&key).unwrap().unwrap().to_vec();
        let a = codec::decode_audit(&bytes).unwrap();
        let mut body = a.body.clone();
        body.server_ms += 1;
        let (forged, _) = codec::encode_audit(&a.prev, &body);
        bytes.truncate(65);
        bytes.extend_from_slice(&forged[65..]);
        db.insert(key, bytes).unwrap();
    });
    assert_eq!(
        verify_dir(dir.path()).broken,
        Some(Broken::Entry {
            n: n_mid,
            why: "its hash does not match its contents".into()
        })
    );

    // An entry rewritten with a fresh hash: the next one no longer links.
    reset();
    tamper(dir.path(), |db| {
        let a = entry(db, n_mid);
        let body = AuditBody {
            device_id: Some(Uuid::nil()),
            ..a.body
        };
        db.insert(
            codec::audit_key(n_mid),
            codec::encode_audit(&a.prev, &body).0,
        )
        .unwrap();
    });
    match verify_dir(dir.path()).broken {
        Some(Broken::Entry { n, why }) => assert!(n == n_mid + 1 && why.contains("prev"), "{why}"),
        other => panic!("expected a broken link, got {other:?}"),
    }

    // The chain rewritten consistently from the last entry that set a
    // field: the chain holds, but that record's replay no longer does.
    reset();
    let mut target = None;
    tamper(dir.path(), |db| {
        let last = verify_dir_head(db);
        let real = |c: &pufa_core::audit::Change| !c.field.starts_with('_');
        let from = (1..=last)
            .rev()
            .find(|n| entry(db, *n).body.changes.iter().any(real))
            .unwrap();
        let mut prev = entry(db, from).prev;
        for n in from..=last {
            let mut body = entry(db, n).body;
            if n == from {
                let c = body.changes.iter_mut().find(|c| real(c)).unwrap();
                c.to = json!("forged");
                target = Some(body.record_id);
            }
            let (value, hash) = codec::encode_audit(&prev, &body);
            db.insert(codec::audit_key(n), value).unwrap();
            prev = hash;
        }
        db.insert(codec::META_AUDIT, codec::encode(&(last, prev)))
            .unwrap();
    });
    match verify_dir(dir.path()).broken {
        Some(Broken::Record { id, .. }) => assert_eq!(Some(id), target),
        other => panic!("expected a broken record, got {other:?}"),
    }

    // An entry deleted from the middle, and the last one.
    reset();
    tamper(dir.path(), |db| {
        db.remove(codec::audit_key(n_mid)).unwrap();
    });
    assert_eq!(
        verify_dir(dir.path()).broken,
        Some(Broken::Entry {
            n: n_mid,
            why: format!("missing (the log goes on at {})", n_mid + 1)
        })
    );
    reset();
    tamper(dir.path(), |db| {
        let last = verify_dir_head(db);
        db.remove(codec::audit_key(last)).unwrap();
    });
    match verify_dir(dir.path()).broken {
        Some(Broken::Entry { n, .. }) => assert_eq!(n, report.entries),
        other => panic!("expected a missing last entry, got {other:?}"),
    }

    // An aggregate changed.
    reset();
    tamper(dir.path(), |db| {
        let key = codec::agg_key(&pufa_core::totals::AggKey::Unit("c1".into()));
        let mut u: pufa_core::totals::UnitAgg =
            codec::decode(&db.get(&key).unwrap().unwrap()).unwrap();
        u.corners_active += 1;
        db.insert(key, codec::encode(&u)).unwrap();
    });
    assert!(
        matches!(verify_dir(dir.path()).broken, Some(Broken::Aggregate { ref key, .. }) if key.contains("c1")),
    );

    // Untouched again: intact, and the server still opens it.
    reset();
    assert_eq!(verify_dir(dir.path()).broken, None);
}

fn verify_dir_head(db: &sled::Db) -> u64 {
    let (n, _): (u64, codec::Hash) =
        codec::decode(&db.get(codec::META_AUDIT).unwrap().unwrap()).unwrap();
    n
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Opens a server on a data dir whose store was closed (as after [`stop`]).
async fn reopen(dir: tempfile::TempDir, admin: Dev) -> Server {
    let clock = std::sync::Arc::new(pufa_server::config::ManualClock::new(T0));
    let mut config = Config::new(dir.path());
    config.clock = clock.clone();
    let state = pufa_server::open(config).await.expect("reopen");
    Server {
        app: pufa_server::router(state),
        dir,
        clock,
        admin,
        // This file runs on sled.
        database: None,
    }
}

#[tokio::test]
async fn a_store_from_before_the_audit_log_gets_one_baseline_entry_per_record() {
    let s = Server::new().await;
    let rec = busy(&s).await;
    let (records, _) = s.pull_all(&s.admin, 0).await;
    let admin = s.admin.clone();
    let dir = stop(s);
    let strip = |dir: &std::path::Path, keep: u64| {
        tamper(dir, |db| {
            let mut head = (0, codec::GENESIS);
            for kv in db.scan_prefix(codec::AUDIT) {
                let (k, v) = kv.unwrap();
                let a = codec::decode_audit(&v).unwrap();
                if a.body.n <= keep {
                    head = (a.body.n, a.hash);
                    continue;
                }
                db.remove(k).unwrap();
            }
            // Format 3's feed entries name only the record.
            for kv in db.scan_prefix(b"s/") {
                let (k, v) = kv.unwrap();
                let (id, n) = codec::decode_feed(&v).unwrap();
                if n > keep {
                    db.insert(k, id.as_bytes()).unwrap();
                }
            }
            match keep {
                0 => db.remove(codec::META_AUDIT).map(drop).unwrap(),
                _ => db
                    .insert(codec::META_AUDIT, codec::encode(&head))
                    .map(drop)
                    .unwrap(),
            }
            db.insert(codec::META_FORMAT, &3u64.to_be_bytes()).unwrap();
        })
    };
    strip(dir.path(), 0);
    let s = reopen(dir, admin.clone()).await;
    assert_eq!(
        s.pull_all(&s.admin, 0).await.0,
        records,
        "records untouched"
    );
    let h = history(&s, &s.admin, &rec).await;
    assert_eq!(causes(&h), ["baseline"]);
    let now = s.record(&rec).await;
    assert_eq!(h[0]["seq"], now["seq"]);
    assert_eq!(
        change(&h[0], "attendees"),
        Some((Value::Null, now["fields"]["attendees"].clone()))
    );
    assert_eq!(h[0]["device_id"], Value::Null);
    let dir = stop(s);
    let full = verify_dir(dir.path());
    assert_eq!(full.broken, None, "{full}");
    assert_eq!(full.entries, full.records);

    // An upgrade cut short (its batches are committed one by one) goes on
    // where it stopped.
    strip(dir.path(), full.entries / 2);
    let s = reopen(dir, admin.clone()).await;
    let dir = stop(s);
    assert_eq!(
        verify_dir(dir.path()),
        full,
        "the same entries, the same head"
    );

    // Pushes on the upgraded store are logged after the baseline.
    let s = reopen(dir, admin).await;
    let seq = seq_of(&s.record(&rec).await);
    let m = mutation(
        &s.admin,
        &rec,
        "lecture",
        seq,
        T0 + 200_000,
        json!({"attendees": 5}),
    );
    assert_applied(&s.push_one(&s.admin, &m).await, &m);
    assert_eq!(
        causes(&history(&s, &s.admin, &rec).await),
        ["baseline", "push"]
    );
    let dir = stop(s);
    assert_eq!(verify_dir(dir.path()).broken, None);
}

/// Store format 6 writes every value from the store's own disk types. A
/// format-5 store (records still in the positional layout, as formats
/// before 5 wrote them) is upgraded at open: every value is read as its
/// disk type, records are rewritten compact, and the store serves and
/// verifies as before. A value the disk types cannot read stops the
/// upgrade, naming it, and leaves the store at format 5.
#[tokio::test]
async fn a_format_5_store_is_upgraded_to_format_6_and_verifies() {
    let s = Server::new().await;
    busy(&s).await;
    s.json(
        Method::POST,
        "/v1/admin/accounts",
        &s.admin,
        &json!({"username": "zhang", "password": "correct horse battery", "role": "coordinator",
                "org_unit": "d", "display_name": "张伟"}),
    )
    .await
    .expect(201);
    let (records, next) = s.pull_all(&s.admin, 0).await;
    let rejections = s.get("/v1/rejections", &s.admin).await.expect(200);
    let admin = s.admin.clone();
    let dir = stop(s);
    let report = verify_dir(dir.path());
    assert_eq!(report.broken, None, "{report}");

    let format =
        |db: &sled::Db| codec::u64_of(&db.get(codec::META_FORMAT).unwrap().unwrap()).unwrap();
    let mut positional = 0;
    tamper(dir.path(), |db| {
        assert_eq!(format(db), codec::STORE_FORMAT);
        for kv in db.scan_prefix(codec::RECORD) {
            let (k, v) = kv.unwrap();
            let r = codec::decode_record(&v).unwrap();
            db.insert(k, codec::encode(&r)).unwrap();
            positional += 1;
        }
        db.insert(codec::META_FORMAT, &codec::STORE_FORMAT_5.to_be_bytes())
            .unwrap();
    });
    assert!(positional >= 200, "{positional} records");
    // Alike, but for topic entries, which count by the topic vocabulary
    // only from format 7 and are not compared before.
    let five = verify_dir(dir.path());
    assert!(five.aggregates < report.aggregates, "{five}");
    assert_eq!(
        Report {
            aggregates: report.aggregates,
            ..five
        },
        report,
        "format 5 verifies alike"
    );
    let pristine = tempfile::tempdir().unwrap();
    copy_dir(&dir.path().join("store"), &pristine.path().join("store"));

    let s = reopen(dir, admin.clone()).await;
    assert_eq!(s.pull_all(&s.admin, 0).await, (records, next));
    assert_eq!(
        s.get("/v1/rejections", &s.admin).await.expect(200),
        rejections
    );
    let dir = stop(s);
    tamper(dir.path(), |db| {
        assert_eq!(format(db), codec::STORE_FORMAT);
        for kv in db.scan_prefix(codec::RECORD) {
            assert_eq!(kv.unwrap().1[0], 2, "every record compact");
        }
    });
    assert_eq!(
        verify_dir(dir.path()),
        report,
        "the same records, entries and head"
    );

    // A device the disk types cannot read: refused, named, still format 5.
    let broken = tempfile::tempdir().unwrap();
    copy_dir(&pristine.path().join("store"), &broken.path().join("store"));
    tamper(broken.path(), |db| {
        let (k, mut v) = db.scan_prefix(codec::DEVICE).next().unwrap().unwrap();
        let mut bytes = v.to_vec();
        bytes[1] = 0x93; // an array of 3 where the device has 10 fields
        v = bytes.into();
        db.insert(k, v).unwrap();
    });
    let e = pufa_server::open(Config::new(broken.path()))
        .await
        .err()
        .expect("an unreadable device stops the upgrade");
    let e = format!("{e}");
    assert!(e.contains("format 6") && e.contains("Device"), "{e}");
    tamper(broken.path(), |db| {
        assert_eq!(format(db), codec::STORE_FORMAT_5);
        let (_, v) = db.scan_prefix(codec::RECORD).next().unwrap().unwrap();
        assert_eq!(v[0], 1, "stopped at the device, before the records");
    });
}

/// Period steps are entries of the audit chain (about no record): verify
/// walks them, and an approval survives a restart with its lock.
#[tokio::test]
async fn period_steps_are_in_the_audit_chain_and_survive_a_restart() {
    let s = Server::new().await;
    busy(&s).await;
    let coord = s.issue("coordinator", "d").await;
    for (action, comment) in [
        ("submit", None),
        ("return", Some("缺数")),
        ("approve", None),
    ] {
        let mut body = json!({"org_unit": "s1", "period": "2020-06"});
        if let Some(c) = comment {
            body["comment"] = json!(c);
        }
        s.json(
            Method::POST,
            &format!("/v1/periods/{action}"),
            &coord,
            &body,
        )
        .await
        .expect(200);
    }
    let s = s.restart().await;
    let f = s.issue("field", "s1").await;
    let m = lecture(&f, &new_id(), "c1", "2020-06-15", 3);
    let r = s.push_one(&f, &m).await;
    assert_rejected(&r, &m, "period_locked");
    let dir = stop(s);
    let report = verify_dir(dir.path());
    assert_eq!(report.broken, None, "{report}");
    assert_eq!(report.period_entries.len(), 3, "{report}");
    tamper(dir.path(), |db| {
        let n = report.period_entries[1];
        let mut e = entry(db, n);
        e.body.period.as_mut().expect("a period step").comment = "无".into();
        let (bytes, _) = codec::encode_audit(&e.prev, &e.body);
        db.insert(codec::audit_key(n), bytes).unwrap();
    });
    let broken = verify_dir(dir.path()).broken;
    assert!(
        // Rehashed, the step itself reads, but the next entry no longer links.
        matches!(broken, Some(Broken::Entry { n, .. }) if n == report.period_entries[1] + 1),
        "{broken:?}"
    );
}

/// A "not a duplicate" mark (an entry of a record that changes nothing in
/// it) and a coordinator's delete keep the chain and every record's
/// history whole.
#[tokio::test]
async fn verify_passes_not_a_duplicate_marks_and_deletes() {
    let s = Server::new().await;
    let field = s.issue("field", "s1").await;
    let street = s.issue("coordinator", "s1").await;
    let (x, y, z) = (new_id(), new_id(), new_id());
    for rec in [&x, &y, &z] {
        let m = lecture(&field, rec, "c1", "2020-03-10", 20);
        assert_applied(&s.push_one(&field, &m).await, &m);
    }
    s.json(
        Method::POST,
        "/v1/duplicates/dismiss",
        &street,
        &json!({"a": x, "b": y}),
    )
    .await
    .expect(200);
    s.json(
        Method::POST,
        &format!("/v1/records/{z}/delete"),
        &street,
        &json!({}),
    )
    .await
    .expect(200);
    // The marked record is edited after the mark: its history goes on.
    let seq = s.record(&x).await["seq"].as_u64().unwrap();
    let m = mutation(&field, &x, "lecture", seq, T0 + 9, json!({"attendees": 21}));
    assert_applied(&s.push_one(&field, &m).await, &m);
    let dir = stop(s);
    let report = verify_dir(dir.path());
    assert_eq!(report.broken, None, "{report}");
    assert_eq!(report.records, 3, "{report}");
}
