//! The server's contract suite: `sync-protocol-v1.md`, section by section,
//! as router tests through `tower::ServiceExt::oneshot` (no sockets).
//!
//! One suite, two stores: `contract.rs` runs it on sled, `contract_pg.rs`
//! on PostgreSQL (the harness picks the store by the binary's name), so
//! every test starts with `skip_without_store!()`, which skips it when the
//! binary's store is PostgreSQL and none is configured.
//!
//! Each test starts its own server on a temp dir (and, on PostgreSQL, a
//! schema of its own) with the clock at 2020-07-01 (`T0`) and moves the
//! clock itself. Most use the small tree of `support::small_tree`; one uses
//! the Yingze fixture.
//!
//! Nothing here reads or damages the store's files: the tests of sled's
//! files on disk (lock waits, aged or damaged stores, crashes, backups) are
//! in figures.rs, e2e.rs, crash.rs and backup.rs, which run on sled only.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt as _;

use axum::http::Method;
use serde_json::{json, Value};

use crate::support::*;

// §1 Running the server ---------------------------------------------------

#[tokio::test]
async fn health_needs_no_token() {
    skip_without_store!();
    let s = Server::new().await;
    let resp = s
        .send(Method::GET, "/v1/health", None, Vec::new(), None)
        .await;
    let body = resp.expect(200);
    assert_eq!(body["status"], "ok");
    let version = body["version"].as_str().expect("version");
    let parts: Vec<_> = version.split(['.', '-', '+']).take(3).collect();
    assert!(
        parts.len() == 3 && parts.iter().all(|p| p.parse::<u64>().is_ok()),
        "version {version:?} is not semver"
    );
    assert!(
        body.get("warnings").is_none(),
        "a store set up safely has nothing to warn of: {body}"
    );
}

/// PostgreSQL with `synchronous_commit` off acknowledges commits a database
/// crash can take back: the server still serves, and says so in health.
#[tokio::test]
async fn health_warns_of_a_database_that_may_lose_acknowledged_pushes() {
    skip_without_store!();
    if !on_postgres() {
        return;
    }
    let s = Server::configured(|c| {
        let url = c.database_url.as_mut().expect("a database URL");
        url.push_str("%20-csynchronous_commit%3Doff");
    })
    .await;
    let body = s
        .send(Method::GET, "/v1/health", None, Vec::new(), None)
        .await
        .expect(200);
    let warnings = body["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{body}");
    assert!(
        warnings[0]
            .as_str()
            .is_some_and(|w| w.contains("synchronous_commit=off")),
        "{body}"
    );
}

#[tokio::test]
async fn admin_token_file_is_private_and_names_the_bootstrap_admin() {
    skip_without_store!();
    let s = Server::empty().await;
    let path = s.dir.path().join("admin.token");
    let meta = std::fs::metadata(&path).expect("admin.token exists");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text, format!("{}\n", s.admin.token), "alone on one line");
    assert!(!s.admin.token.is_empty());

    let me = s.get("/v1/whoami", &s.admin).await.expect(200);
    assert_eq!(me["role"], "admin");
    assert_eq!(me["org_unit"], Value::Null);
    assert!(me["label"].is_string(), "{me}");
    assert!(uuid::Uuid::parse_str(me["device_id"].as_str().unwrap()).is_ok());
}

#[tokio::test]
async fn a_restart_keeps_the_store_its_id_and_the_admin_token() {
    skip_without_store!();
    let s = Server::new().await;
    let f = s.issue("field", "s1").await;
    let rec = new_id();
    let m = lecture(&f, &rec, "c1", "2020-06-01", 87);
    let seq = assert_applied(&s.push_one(&f, &m).await, &m);
    let others = [
        lecture(&s.admin, &new_id(), "v3", "2020-06-01", 12),
        corner(&s.admin, &new_id(), "c2", "active"),
        site(&s.admin, &new_id(), "v3", "municipal", "awarded", 2020),
        with_delete(lecture(&s.admin, &new_id(), "c1", "2020-05-01", 9), true),
        // A conflict with f's lecture.
        mutation(
            &s.admin,
            &rec,
            "lecture",
            0,
            T0 + 1,
            json!({"attendees": 80}),
        ),
    ];
    s.push(&s.admin, &others).await;
    s.import(&json!([{"code": "c2", "name": "柳巷第02社区", "type": "community", "parent": "s2"}]))
        .await;
    let bad = lecture(&f, &new_id(), "zz", "2020-06-01", 1);
    s.push_one(&f, &bad).await;
    let before = snapshot(&s).await;
    let f_sum = s.checksum(&f).await;
    let totals = s.get("/v1/totals", &s.admin).await.expect(200);
    let store_id = s.checksum(&s.admin).await["store_id"].clone();
    // One more acknowledged (durable) write, after the pulls above.
    s.push(&f, &[]).await;
    let path = s.dir.path().join("admin.token");
    let token_file = std::fs::read_to_string(&path).unwrap();
    let admin = s.admin.clone();

    let s = s.restart().await;
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        token_file,
        "never rewritten"
    );
    assert_eq!((&s.admin.token, &s.admin.id), (&admin.token, &admin.id));
    assert_eq!(s.checksum(&s.admin).await["store_id"], store_id);
    assert_eq!(snapshot(&s).await, before);
    assert_eq!(s.checksum(&f).await, f_sum);
    assert_eq!(s.get("/v1/totals", &s.admin).await.expect(200), totals);
    let dup = s.push_one(&f, &m).await;
    assert_eq!((&dup["status"], seq_of(&dup)), (&json!("duplicate"), seq));
    let next = lecture(&f, &new_id(), "c1", "2020-06-02", 1);
    assert!(assert_applied(&s.push_one(&f, &next).await, &next) > seq);
}

// §2 Errors ---------------------------------------------------------------

/// Everything a malformed request could have touched, to compare before
/// and after.
async fn snapshot(s: &Server) -> Value {
    let (records, next) = s.pull_all(&s.admin, 0).await;
    json!({
        "records": records,
        "next": next,
        "checksum": s.checksum(&s.admin).await,
        "rejections": s.get("/v1/rejections", &s.admin).await.expect(200),
        "devices": s.get("/v1/devices", &s.admin).await.expect(200),
        "conflicts": s.get("/v1/conflicts", &s.admin).await.expect(200),
        "org": s.get("/v1/org-units", &s.admin).await.expect(200),
    })
}

#[tokio::test]
async fn push_of_the_wrong_shape_is_bad_json_and_changes_nothing() {
    skip_without_store!();
    let s = Server::new().await;
    let f = s.issue("field", "s1").await;
    let first = lecture(&f, &new_id(), "c1", "2020-06-01", 87);
    s.push(&f, std::slice::from_ref(&first)).await;
    s.get("/v1/sync/pull", &f).await.expect(200);
    // Had a malformed push touched the device, last_push_ms would move.
    s.clock.advance(60_000);
    let before = snapshot(&s).await;

    let good = lecture(&f, &new_id(), "c2", "2020-06-02", 10);
    let bad = |edit: &dyn Fn(&mut Value)| {
        let mut m = lecture(&f, &new_id(), "c1", "2020-06-03", 5);
        edit(&mut m);
        json!({"device_id": f.id, "mutations": [good.clone(), m]})
            .to_string()
            .into_bytes()
    };
    let whole = json!({"device_id": f.id, "mutations": [good.clone()]}).to_string();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "bytes after the JSON value",
            format!("{whole}}}}}").into_bytes(),
        ),
        (
            "a second JSON value",
            format!("{whole} {whole}").into_bytes(),
        ),
        (
            "the body as an array of its fields",
            json!([f.id, [good.clone()]]).to_string().into_bytes(),
        ),
        (
            "a mutation as an array of its fields",
            bad(&|m: &mut Value| {
                *m = json!([m["id"], m["record_id"], m["kind"], 0, m["hlc"], m["set"]]);
            }),
        ),
        (
            "hlc as an array",
            bad(&|m: &mut Value| m["hlc"] = json!([1_593_561_600_000u64, 0, f.id])),
        ),
        ("not JSON", b"mutations please".to_vec()),
        ("truncated JSON", br#"{"device_id":"#.to_vec()),
        ("empty body", Vec::new()),
        ("an array", b"[]".to_vec()),
        (
            "mutations not an array",
            json!({"device_id": f.id, "mutations": {"0": good}})
                .to_string()
                .into_bytes(),
        ),
        (
            "mutations missing",
            json!({"device_id": f.id}).to_string().into_bytes(),
        ),
        (
            "device_id not a UUID",
            json!({"device_id": "phone-1", "mutations": [good]})
                .to_string()
                .into_bytes(),
        ),
        (
            "device report with a negative outbox_len",
            json!({"device_id": f.id, "mutations": [good], "device": {"outbox_len": -1}})
                .to_string()
                .into_bytes(),
        ),
        (
            "id not a UUID",
            bad(&|m: &mut Value| m["id"] = json!("m-1")),
        ),
        (
            "record_id not a UUID",
            bad(&|m: &mut Value| m["record_id"] = json!(42)),
        ),
        (
            "kind not a string",
            bad(&|m: &mut Value| m["kind"] = json!(7)),
        ),
        (
            "base_seq 1.0",
            bad(&|m: &mut Value| m["base_seq"] = json!(1.0)),
        ),
        (
            "base_seq -1",
            bad(&|m: &mut Value| m["base_seq"] = json!(-1)),
        ),
        (
            "base_seq a string",
            bad(&|m: &mut Value| m["base_seq"] = json!("0")),
        ),
        (
            "hlc without c",
            bad(&|m: &mut Value| {
                m["hlc"].as_object_mut().unwrap().remove("c");
            }),
        ),
        (
            "hlc.c above u32",
            bad(&|m: &mut Value| m["hlc"]["c"] = json!(4_294_967_296_u64)),
        ),
        (
            "hlc.c negative",
            bad(&|m: &mut Value| m["hlc"]["c"] = json!(-1)),
        ),
        (
            "hlc.ms fractional",
            bad(&|m: &mut Value| m["hlc"]["ms"] = json!(1.5)),
        ),
        (
            "hlc.node not a UUID",
            bad(&|m: &mut Value| m["hlc"]["node"] = json!("n")),
        ),
        ("hlc null", bad(&|m: &mut Value| m["hlc"] = Value::Null)),
        ("set an array", bad(&|m: &mut Value| m["set"] = json!([]))),
        ("set null", bad(&|m: &mut Value| m["set"] = Value::Null)),
        (
            "set missing",
            bad(&|m: &mut Value| {
                m.as_object_mut().unwrap().remove("set");
            }),
        ),
        (
            "delete null",
            bad(&|m: &mut Value| m["delete"] = Value::Null),
        ),
        (
            "delete a string",
            bad(&|m: &mut Value| m["delete"] = json!("yes")),
        ),
        ("delete 1", bad(&|m: &mut Value| m["delete"] = json!(1))),
    ];
    for (name, body) in cases {
        let resp = s
            .send(
                Method::POST,
                "/v1/sync/push",
                Some(&bearer(&f)),
                body,
                Some("application/json"),
            )
            .await;
        assert_eq!(resp.status.as_u16(), 400, "{name}");
        assert_error(&resp, 400, "bad_json");
    }
    assert_eq!(snapshot(&s).await, before, "a malformed push changed state");
}

#[tokio::test]
async fn other_bodies_of_the_wrong_shape_are_bad_json() {
    skip_without_store!();
    let s = Server::new().await;
    let before = snapshot(&s).await;
    let cases: Vec<(Method, String, &str)> = vec![
        (Method::POST, "/v1/admin/tokens".into(), "{"),
        (
            Method::POST,
            "/v1/admin/tokens".into(),
            r#"{"org_unit":"c1"}"#,
        ),
        (
            Method::POST,
            "/v1/admin/tokens".into(),
            r#"{"role":"field","org_unit":"c1","device_id":"not-a-uuid"}"#,
        ),
        (Method::PUT, "/v1/admin/org-units".into(), r#"{"code":"x"}"#),
        (
            Method::PUT,
            "/v1/admin/org-units".into(),
            r#"[{"code":"x","name":"x","type":"city","parent":"d"}]"#,
        ),
        (
            Method::POST,
            format!("/v1/conflicts/{}/resolve", new_id()),
            "value=1",
        ),
        // The contract's bodies are objects: an array of the fields in
        // order is not one (serde alone would read it as the struct).
        (Method::POST, "/v1/admin/tokens".into(), r#"["field","c1"]"#),
        (
            Method::POST,
            format!("/v1/conflicts/{}/resolve", new_id()),
            "[1]",
        ),
        (
            Method::PUT,
            "/v1/admin/org-units".into(),
            r#"[["x","x","street","d"]]"#,
        ),
        // One JSON value, nothing after it.
        (
            Method::POST,
            "/v1/admin/tokens".into(),
            r#"{"role":"field","org_unit":"c1"}}}"#,
        ),
        (
            Method::POST,
            format!("/v1/conflicts/{}/resolve", new_id()),
            r#"{"value":1} {"value":2}"#,
        ),
    ];
    for (method, path, body) in cases {
        let resp = s
            .send(
                method,
                &path,
                Some(&bearer(&s.admin)),
                body.as_bytes().to_vec(),
                None,
            )
            .await;
        assert_error(&resp, 400, "bad_json");
    }
    assert_eq!(snapshot(&s).await, before);
}

#[tokio::test]
async fn bodies_are_json_whatever_the_content_type() {
    skip_without_store!();
    let s = Server::new().await;
    let f = s.issue("field", "c1").await;
    let m = lecture(&f, &new_id(), "c1", "2020-06-01", 87);
    let body = json!({"device_id": f.id, "mutations": [m]});
    for ct in [
        None,
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
    ] {
        let resp = s
            .send(
                Method::POST,
                "/v1/sync/push",
                Some(&bearer(&f)),
                body.to_string().into_bytes(),
                ct,
            )
            .await
            .expect(200);
        let status = resp["results"][0]["status"].as_str().unwrap();
        assert!(matches!(status, "applied" | "duplicate"), "{ct:?}: {resp}");
    }
}

#[tokio::test]
async fn missing_unknown_or_revoked_tokens_are_unauthorized() {
    skip_without_store!();
    let s = Server::new().await;
    let revoked = s.issue("coordinator", "s1").await;
    let path = format!("/v1/admin/tokens/{}", revoked.id);
    s.send(
        Method::DELETE,
        &path,
        Some(&bearer(&s.admin)),
        Vec::new(),
        None,
    )
    .await
    .expect(204);
    let revoked_header = bearer(&revoked);
    let headers = [
        None,
        Some("Bearer pufa_0000000000000000000000000000000000000000000000000000000000000000"),
        Some("Bearer "),
        Some("Basic YWRtaW46YWRtaW4="),
        Some(s.admin.token.as_str()),
        Some(revoked_header.as_str()),
    ];
    let endpoints = [
        (Method::GET, "/v1/whoami"),
        (Method::GET, "/v1/sync/pull"),
        (Method::GET, "/v1/sync/checksum"),
        (Method::POST, "/v1/sync/push"),
        (Method::GET, "/v1/totals"),
        (Method::GET, "/v1/conflicts"),
        (Method::GET, "/v1/devices"),
        (Method::GET, "/v1/rejections"),
        (Method::GET, "/v1/org-units"),
        (Method::PUT, "/v1/admin/org-units"),
        (Method::POST, "/v1/admin/tokens"),
    ];
    for auth in headers {
        for (method, path) in &endpoints {
            let resp = s
                .send(method.clone(), path, auth, b"{}".to_vec(), None)
                .await;
            assert_eq!(resp.status.as_u16(), 401, "{method} {path} with {auth:?}");
            assert_error(&resp, 401, "unauthorized");
        }
    }
}

#[tokio::test]
async fn roles_without_the_right_are_forbidden() {
    skip_without_store!();
    let s = Server::new().await;
    let field = s.issue("field", "c1").await;
    let coord = s.issue("coordinator", "s1").await;
    let before = snapshot(&s).await;
    let resolve = format!("/v1/conflicts/{}/resolve", new_id());
    let revoke = format!("/v1/admin/tokens/{}", field.id);
    let token = json!({"role": "admin", "org_unit": "d", "label": "sneaky"});
    let units = json!([{"code": "x", "name": "x", "type": "village", "parent": "c1"}]);
    let field_cases: Vec<(Method, &str, Value)> = vec![
        (Method::GET, "/v1/totals", Value::Null),
        (Method::GET, "/v1/totals?org=c1", Value::Null),
        (Method::GET, "/v1/conflicts", Value::Null),
        (Method::GET, "/v1/devices", Value::Null),
        (Method::GET, "/v1/rejections", Value::Null),
        (Method::POST, &resolve, json!({"value": 1})),
        (Method::POST, "/v1/admin/tokens", token.clone()),
        (Method::PUT, "/v1/admin/org-units", units.clone()),
        (Method::DELETE, &revoke, Value::Null),
    ];
    for (method, path, body) in field_cases {
        let resp = s.json(method.clone(), path, &field, &body).await;
        assert_eq!(resp.status.as_u16(), 403, "field: {method} {path}");
        assert_error(&resp, 403, "forbidden");
    }
    let coordinator_cases: Vec<(Method, &str, Value)> = vec![
        (Method::POST, "/v1/admin/tokens", token),
        (Method::PUT, "/v1/admin/org-units", units),
        (Method::DELETE, &revoke, Value::Null),
    ];
    for (method, path, body) in coordinator_cases {
        let resp = s.json(method.clone(), path, &coord, &body).await;
        assert_eq!(resp.status.as_u16(), 403, "coordinator: {method} {path}");
        assert_error(&resp, 403, "forbidden");
    }
    s.get("/v1/whoami", &field).await.expect(200);
    assert_eq!(snapshot(&s).await, before);
}

#[tokio::test]
async fn org_outside_scope_is_forbidden_and_unknown_org_not_found_only_for_admins() {
    skip_without_store!();
    let s = Server::new().await;
    let coord = s.issue("coordinator", "s1").await;
    for list in ["totals", "conflicts", "devices", "rejections"] {
        for org in ["s2", "v3", "d", "zz"] {
            let resp = s.get(&format!("/v1/{list}?org={org}"), &coord).await;
            assert_eq!(resp.status.as_u16(), 403, "coordinator {list} org={org}");
            assert_error(&resp, 403, "forbidden");
        }
        s.get(&format!("/v1/{list}?org=c1"), &coord)
            .await
            .expect(200);
        s.get(&format!("/v1/{list}?org=s1"), &coord)
            .await
            .expect(200);
        let resp = s.get(&format!("/v1/{list}?org=zz"), &s.admin).await;
        assert_eq!(resp.status.as_u16(), 404, "admin {list} org=zz");
        assert_error(&resp, 404, "not_found");
        s.get(&format!("/v1/{list}?org=v3"), &s.admin)
            .await
            .expect(200);
    }
}

#[tokio::test]
async fn push_for_another_device_is_device_mismatch() {
    skip_without_store!();
    let s = Server::new().await;
    let f = s.issue("field", "c1").await;
    let g = s.issue("field", "c1").await;
    let before = snapshot(&s).await;
    for other in [g.id.clone(), s.admin.id.clone(), new_id()] {
        let m = lecture(&f, &new_id(), "c1", "2020-06-01", 3);
        let resp = s
            .push_body(&f, &json!({"device_id": other, "mutations": [m]}))
            .await;
        assert_eq!(resp.status.as_u16(), 403);
        assert_error(&resp, 403, "device_mismatch");
    }
    assert_eq!(snapshot(&s).await, before);
}

#[tokio::test]
async fn unknown_routes_and_ids_are_not_found() {
    skip_without_store!();
    let s = Server::new().await;
    let auth = bearer(&s.admin);
    let cases: Vec<(Method, String, &str)> = vec![
        (Method::GET, "/v1/nothing".into(), ""),
        (Method::GET, "/v2/health".into(), ""),
        // `/` itself is the coordinators' dashboard (HTML), not an API path.
        (Method::GET, "/v1".into(), ""),
        (Method::GET, "/nothing".into(), ""),
        (Method::DELETE, format!("/v1/admin/tokens/{}", new_id()), ""),
        (Method::DELETE, "/v1/admin/tokens/not-a-uuid".into(), ""),
        (
            Method::POST,
            "/v1/conflicts/not-a-uuid/resolve".into(),
            r#"{"value":1}"#,
        ),
        (
            Method::POST,
            format!("/v1/conflicts/{}/resolve", new_id()),
            r#"{"value":1}"#,
        ),
    ];
    for (method, path, body) in cases {
        let resp = s
            .send(
                method.clone(),
                &path,
                Some(&auth),
                body.as_bytes().to_vec(),
                None,
            )
            .await;
        assert_eq!(resp.status.as_u16(), 404, "{method} {path}");
        assert_error(&resp, 404, "not_found");
    }
    // Any other non-2xx answer keeps the error shape too.
    let resp = s.get("/v1/sync/push", &s.admin).await;
    assert!(resp.status.is_client_error(), "{:?}", resp.status);
    assert!(resp.json()["error"]["code"].is_string());
}

#[tokio::test]
async fn more_than_1000_mutations_is_batch_too_large() {
    skip_without_store!();
    let s = Server::new().await;
    let f = s.issue("field", "s1").await;
    let ms: Vec<Value> = (0..1001)
        .map(|i| lecture(&f, &new_id(), "c1", "2020-06-01", i))
        .collect();
    let resp = s
        .push_body(&f, &json!({"device_id": f.id, "mutations": ms}))
        .await;
    assert_error(&resp, 413, "batch_too_large");
    assert_eq!(s.checksum(&s.admin).await["count"], 0);

    let resp = s.push(&f, &ms[..1000]).await;
    let results = resp["results"].as_array().unwrap();
    assert!(results.iter().all(|r| r["status"] == "applied"));
    assert_eq!(s.checksum(&s.admin).await["count"], 1000);
}

#[tokio::test]
async fn body_over_the_configured_limit_is_body_too_large() {
    skip_without_store!();
    let s = Server::configured(|c| c.max_body_bytes = 4096).await;
    s.import(&small_tree()).await;
    let f = s.issue("field", "s1").await;
    let before = snapshot(&s).await;

    // Valid content (2000 characters of notes), but 6 KB of UTF-8.
    let mut long = lecture(&f, &new_id(), "c1", "2020-06-01", 9);
    long["set"]["notes"] = json!("法".repeat(2000));
    let many: Vec<Value> = (0..1001)
        .map(|i| lecture(&f, &new_id(), "c1", "2020-06-01", i))
        .collect();
    let bodies = [
        json!({"device_id": f.id, "mutations": [long]})
            .to_string()
            .into_bytes(),
        // Not JSON either: the limit is judged first.
        vec![b'x'; 5000],
        // Too many mutations too: the limit is judged first.
        json!({"device_id": f.id, "mutations": many})
            .to_string()
            .into_bytes(),
    ];
    for body in bodies {
        let resp = s
            .send(
                Method::POST,
                "/v1/sync/push",
                Some(&bearer(&f)),
                body,
                Some("application/json"),
            )
            .await;
        assert_error(&resp, 413, "body_too_large");
    }
    let units: Vec<Value> = (0..100)
        .map(|i| json!({"code": format!("x{i}"), "name": "某某社区", "type": "community", "parent": "s1"}))
        .collect();
    let resp = s
        .json(Method::PUT, "/v1/admin/org-units", &s.admin, &json!(units))
        .await;
    assert_error(&resp, 413, "body_too_large");
    assert_eq!(snapshot(&s).await, before);

    let small = lecture(&f, &new_id(), "c1", "2020-06-01", 9);
    let r = s.push_one(&f, &small).await;
    assert_applied(&r, &small);
}

#[tokio::test]
async fn malformed_query_parameters_are_invalid_query() {
    skip_without_store!();
    let s = Server::new().await;
    let coord = s.issue("coordinator", "s1").await;
    let cases: &[(&str, Option<&str>)] = &[
        ("/v1/sync/pull?limit=0", Some("limit")),
        ("/v1/sync/pull?limit=abc", Some("limit")),
        ("/v1/sync/pull?limit=-1", Some("limit")),
        ("/v1/sync/pull?limit=", Some("limit")),
        ("/v1/sync/pull?since=-1", Some("since")),
        ("/v1/sync/pull?since=abc", Some("since")),
        ("/v1/sync/pull?since=1.5", Some("since")),
        ("/v1/totals?from=2020-02-30", Some("from")),
        ("/v1/totals?from=2021-02-29", Some("from")),
        ("/v1/totals?from=2020-1-1", Some("from")),
        ("/v1/totals?to=2020-13-01", Some("to")),
        ("/v1/totals?from=2020-12-31&to=2020-01-01", None),
        ("/v1/conflicts?limit=0", Some("limit")),
        ("/v1/conflicts?limit=many", Some("limit")),
        ("/v1/devices?limit=0", Some("limit")),
        ("/v1/devices?limit=abc", Some("limit")),
        ("/v1/rejections?limit=0", Some("limit")),
    ];
    for &(path, field) in cases {
        for dev in [&coord, &s.admin] {
            let resp = s.get(path, dev).await;
            assert_eq!(resp.status.as_u16(), 400, "{path}");
            let err = assert_error(&resp, 400, "invalid_query");
            if let Some(field) = field {
                assert_eq!(err["field"], field, "{path}");
            }
        }
    }
    for ok in [
        "/v1/sync/pull?limit=5000&since=0",
        "/v1/totals?from=2020-02-29&to=2020-02-29",
        "/v1/totals?org=s1&from=2020-01-01",
        "/v1/conflicts?limit=5001",
        "/v1/devices?limit=1",
        "/v1/rejections?limit=99999",
    ] {
        s.get(ok, &coord).await.expect(200);
    }
}

#[tokio::test]
async fn a_limit_too_large_for_64_bits_is_still_a_number_above_5000() {
    skip_without_store!();
    // §7: "limit above 5000 is treated as 5000; limit=0 or a non-number is
    // invalid_query". 2^64 is a number above 5000.
    let s = Server::new().await;
    for path in [
        "/v1/sync/pull?limit=18446744073709551616",
        "/v1/conflicts?limit=18446744073709551616",
        "/v1/devices?limit=18446744073709551616",
        "/v1/rejections?limit=18446744073709551616",
    ] {
        let resp = s.get(path, &s.admin).await;
        assert_eq!(
            resp.status.as_u16(),
            200,
            "{path}: {}",
            String::from_utf8_lossy(&resp.body)
        );
    }
}

// §3 Auth, roles, scope ---------------------------------------------------

#[tokio::test]
async fn tokens_for_each_role() {
    skip_without_store!();
    let s = Server::new().await;
    let mut ids = BTreeSet::new();
    for (role, org, label) in [
        ("field", "c1", "柳巷01 手机"),
        ("coordinator", "s1", "柳巷街道司法所"),
        ("admin", "c2", "区司法局"),
    ] {
        let req = json!({"role": role, "org_unit": org, "label": label});
        let issued = s
            .json(Method::POST, "/v1/admin/tokens", &s.admin, &req)
            .await
            .expect(201);
        let token = issued["token"].as_str().expect("token").to_string();
        let id = issued["device_id"].as_str().expect("device_id").to_string();
        assert!(uuid::Uuid::parse_str(&id).is_ok());
        assert_eq!(
            (&issued["role"], &issued["org_unit"], &issued["label"]),
            (&json!(role), &json!(org), &json!(label))
        );
        assert_ne!(token, s.admin.token);
        assert!(ids.insert(id.clone()), "device ids are unique");
        let dev = Dev { token, id };
        let me = s.get("/v1/whoami", &dev).await.expect(200);
        assert_has(
            &me,
            &json!({"device_id": dev.id, "role": role, "org_unit": org, "label": label}),
        );
        // Scope: an admin token sees everything, whatever its org_unit.
        let units = s.get("/v1/org-units", &dev).await.expect(200);
        let n = units.as_array().unwrap().len();
        let expected = match role {
            "field" => 1,
            "coordinator" => 3,
            _ => 6,
        };
        assert_eq!(n, expected, "{role} sees {units}");
    }
}

#[tokio::test]
async fn token_requests_with_unknown_role_or_org_fail_and_change_nothing() {
    skip_without_store!();
    let s = Server::new().await;
    let before = snapshot(&s).await;
    for req in [
        json!({"role": "superuser", "org_unit": "c1", "label": "x"}),
        json!({"role": "Field", "org_unit": "c1", "label": "x"}),
        json!({"role": null, "org_unit": "c1", "label": "x"}),
        json!({"org_unit": "c1", "label": "x"}),
    ] {
        let resp = s
            .json(Method::POST, "/v1/admin/tokens", &s.admin, &req)
            .await;
        assert_error(&resp, 400, "bad_json");
    }
    for role in ["field", "coordinator", "admin"] {
        let req = json!({"role": role, "org_unit": "140106999", "label": "x"});
        let resp = s
            .json(Method::POST, "/v1/admin/tokens", &s.admin, &req)
            .await;
        assert_error_field(&resp, 400, "unknown_org_unit", Some("org_unit"));
    }
    assert_eq!(snapshot(&s).await, before);
}

#[tokio::test]
async fn re_enrolment_keeps_the_device_and_revokes_the_old_secret() {
    skip_without_store!();
    let s = Server::new().await;
    let old = s.issue("field", "c1").await;
    let m = lecture(&old, &new_id(), "c1", "2020-06-01", 87);
    let first = s.push_one(&old, &m).await;
    let seq = assert_applied(&first, &m);

    let req =
        json!({"role": "coordinator", "org_unit": "s1", "label": "新手机", "device_id": old.id});
    let issued = s
        .json(Method::POST, "/v1/admin/tokens", &s.admin, &req)
        .await
        .expect(201);
    assert_eq!(issued["device_id"], old.id.as_str());
    assert_eq!(
        (&issued["role"], &issued["org_unit"], &issued["label"]),
        (&json!("coordinator"), &json!("s1"), &json!("新手机"))
    );
    let new = Dev {
        token: issued["token"].as_str().unwrap().to_string(),
        id: old.id.clone(),
    };
    assert_ne!(new.token, old.token);

    assert_error(&s.get("/v1/whoami", &old).await, 401, "unauthorized");
    let me = s.get("/v1/whoami", &new).await.expect(200);
    assert_has(
        &me,
        &json!({"device_id": old.id, "role": "coordinator", "org_unit": "s1", "label": "新手机"}),
    );
    // The outbox stays valid: the same mutation is a duplicate, not new.
    let again = s.push_one(&new, &m).await;
    assert_eq!(again["status"], "duplicate");
    assert_eq!(seq_of(&again), seq);

    let devices = s.get("/v1/devices", &s.admin).await.expect(200);
    let mine: Vec<_> = devices
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["device_id"] == old.id.as_str())
        .collect();
    assert_eq!(mine.len(), 1, "{devices}");
    assert_eq!(mine[0]["revoked"], false);
    assert_eq!(mine[0]["role"], "coordinator");
}

#[tokio::test]
async fn revoking_a_token() {
    skip_without_store!();
    let s = Server::new().await;
    let f = s.issue("field", "c1").await;
    s.get("/v1/whoami", &f).await.expect(200);
    let resp = s
        .send(
            Method::DELETE,
            &format!("/v1/admin/tokens/{}", f.id),
            Some(&bearer(&s.admin)),
            Vec::new(),
            None,
        )
        .await;
    assert_eq!(resp.status.as_u16(), 204);
    assert!(resp.body.is_empty());
    assert_error(&s.get("/v1/whoami", &f).await, 401, "unauthorized");
    let m = lecture(&f, &new_id(), "c1", "2020-06-01", 87);
    let resp = s
        .push_body(&f, &json!({"device_id": f.id, "mutations": [m]}))
        .await;
    assert_error(&resp, 401, "unauthorized");
    let devices = s.get("/v1/devices", &s.admin).await.expect(200);
    let d = devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_id"] == f.id.as_str())
        .expect("revoked devices are still listed");
    assert_eq!(d["revoked"], true);
}

// §4 Organisational units -------------------------------------------------

fn codes(units: &Value) -> BTreeSet<String> {
    units
        .as_array()
        .expect("array of units")
        .iter()
        .map(|u| u["code"].as_str().expect("code").to_string())
        .collect()
}

#[tokio::test]
async fn org_import_upserts_units_in_any_order() {
    skip_without_store!();
    let s = Server::empty().await;
    let mut units = small_tree().as_array().unwrap().clone();
    units.reverse(); // every child before its parent
    assert_eq!(s.import(&json!(units)).await["upserted"], 6);
    let stored = s.get("/v1/org-units", &s.admin).await.expect(200);
    let by_code: BTreeMap<_, _> = stored
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["code"].as_str().unwrap().to_string(), u.clone()))
        .collect();
    for u in small_tree().as_array().unwrap() {
        assert_has(&by_code[u["code"].as_str().unwrap()], u);
    }
    assert_eq!(by_code.len(), 6);

    let renamed = json!([
        {"code": "c4", "name": "新社区", "type": "community", "parent": "s2"},
        {"code": "c1", "name": "柳巷一社区", "type": "community", "parent": "s1"},
    ]);
    assert_eq!(s.import(&renamed).await["upserted"], 2);
    let stored = s.get("/v1/org-units", &s.admin).await.expect(200);
    assert_eq!(stored.as_array().unwrap().len(), 7);
    let c1 = stored
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["code"] == "c1")
        .unwrap();
    assert_eq!(c1["name"], "柳巷一社区");
}

#[tokio::test]
async fn org_import_with_missing_parent_or_cycle_is_rejected_whole() {
    skip_without_store!();
    let s = Server::new().await;
    let before = snapshot(&s).await;
    let cases = [
        json!([
            {"code": "x1", "name": "x1", "type": "community", "parent": "s1"},
            {"code": "x2", "name": "x2", "type": "community", "parent": "nowhere"},
        ]),
        json!([{"code": "d", "name": "迎泽区", "type": "district", "parent": "c1"}]),
        json!([{"code": "s1", "name": "柳巷街道", "type": "street", "parent": "s1"}]),
        json!([
            {"code": "x1", "name": "x1", "type": "street", "parent": "x2"},
            {"code": "x2", "name": "x2", "type": "street", "parent": "x1"},
        ]),
        json!([
            {"code": "x1", "name": "x1", "type": "street", "parent": "d"},
            {"code": "s1", "name": "柳巷街道", "type": "street", "parent": "c2"},
        ]),
    ];
    for units in cases {
        let resp = s
            .json(Method::PUT, "/v1/admin/org-units", &s.admin, &units)
            .await;
        assert_eq!(resp.status.as_u16(), 400, "{units}");
        assert_error(&resp, 400, "invalid_org_tree");
    }
    assert_eq!(snapshot(&s).await, before);
}

#[tokio::test]
async fn org_units_are_limited_to_the_callers_scope() {
    skip_without_store!();
    let s = Server::new().await;
    let cases = [
        ("field", "s1", vec!["c1", "c2", "s1"]),
        ("coordinator", "s2", vec!["s2", "v3"]),
        ("field", "v3", vec!["v3"]),
    ];
    for (role, org, expected) in cases {
        let dev = s.issue(role, org).await;
        let units = s.get("/v1/org-units", &dev).await.expect(200);
        let expected: BTreeSet<String> = expected.into_iter().map(String::from).collect();
        assert_eq!(codes(&units), expected, "{role} @ {org}");
    }
    let all = s.get("/v1/org-units", &s.admin).await.expect(200);
    assert_eq!(codes(&all).len(), 6);
}

/// A moved-out marker: `{"id","seq","in_scope":false}`, not a record.
#[track_caller]
fn assert_gone(e: &Value) {
    assert!(e["id"].is_string() && e["seq"].is_u64(), "{e}");
    assert_eq!(e["in_scope"], false, "{e}");
    assert!(e.get("fields").is_none() && e.get("kind").is_none(), "{e}");
}

#[tokio::test]
async fn re_parenting_moves_records_out_of_and_into_scopes() {
    skip_without_store!();
    let s = Server::new().await;
    let old_parent = s.issue("field", "s1").await;
    let new_parent = s.issue("field", "s2").await;
    let inside = s.issue("field", "c1").await;
    let moved = new_id();
    let stays = new_id();
    let m1 = lecture(&old_parent, &moved, "c1", "2020-06-01", 87);
    let m2 = lecture(&old_parent, &stays, "c2", "2020-06-02", 20);
    s.push(&old_parent, &[m1, m2]).await;
    let (_, next_old) = s.pull_all(&old_parent, 0).await;
    let (seen, next_new) = s.pull_all(&new_parent, 0).await;
    assert!(seen.is_empty());
    let (_, next_inside) = s.pull_all(&inside, 0).await;

    s.import(&json!([{"code": "c1", "name": "柳巷第01社区", "type": "community", "parent": "s2"}]))
        .await;

    let (entries, _) = s.pull_all(&old_parent, next_old).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    let gone = &entries[0];
    assert_gone(gone);
    assert_eq!(gone["id"], moved.as_str());
    assert_eq!(gone["in_scope"], false);
    let new_seq = seq_of(gone);
    assert!(new_seq > next_old);

    let (entries, _) = s.pull_all(&new_parent, next_new).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["id"], moved.as_str());
    assert_eq!(seq_of(&entries[0]), new_seq);
    assert_eq!(entries[0]["fields"]["org_unit"], "c1");
    assert_eq!(entries[0]["fields"]["attendees"], 87);

    // A device inside the moved unit sees the record at its new seq.
    let (entries, _) = s.pull_all(&inside, next_inside).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["id"], moved.as_str());
    assert_eq!(entries[0]["deleted"], false);

    // The old scope can no longer write it; the new one can.
    let edit = mutation(
        &old_parent,
        &moved,
        "lecture",
        new_seq,
        T0 + 1,
        json!({"attendees": 1}),
    );
    assert_rejected(&s.push_one(&old_parent, &edit).await, &edit, "out_of_scope");
    let edit = mutation(
        &new_parent,
        &moved,
        "lecture",
        new_seq,
        T0 + 1,
        json!({"attendees": 90}),
    );
    assert_applied(&s.push_one(&new_parent, &edit).await, &edit);

    // The old scope's checksum counts only what is still inside it.
    let sum = s.checksum(&old_parent).await;
    assert_eq!(sum["count"], 1);
}

#[tokio::test]
async fn a_record_edited_into_another_unit_leaves_the_old_scope() {
    skip_without_store!();
    let s = Server::new().await;
    let f = s.issue("field", "s1").await;
    let g = s.issue("field", "s2").await;
    let rec = new_id();
    let m = lecture(&s.admin, &rec, "c1", "2020-06-01", 87);
    let seq1 = assert_applied(&s.push_one(&s.admin, &m).await, &m);
    let (seen, next_f) = s.pull_all(&f, 0).await;
    assert_eq!(seen.len(), 1);
    let (seen, next_g) = s.pull_all(&g, 0).await;
    assert!(seen.is_empty());

    let mv = mutation(
        &s.admin,
        &rec,
        "lecture",
        seq1,
        T0 + 1,
        json!({"org_unit": "v3"}),
    );
    let seq2 = assert_applied(&s.push_one(&s.admin, &mv).await, &mv);
    let gone = json!({"id": rec, "seq": seq2, "in_scope": false});
    // Since the last pull, and from 0 (every record ever in scope).
    for since in [next_f, 0] {
        let (entries, _) = s.pull_all(&f, since).await;
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_gone(&entries[0]);
        assert_has(&entries[0], &gone);
    }
    let (entries, _) = s.pull_all(&g, next_g).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (
            &entries[0]["id"],
            seq_of(&entries[0]),
            &entries[0]["fields"]["org_unit"]
        ),
        (&json!(rec), seq2, &json!("v3"))
    );
    let sum = s.checksum(&f).await;
    assert_eq!(
        (&sum["seq"], &sum["count"], &sum["checksum"]),
        (&json!(seq2), &json!(0), &json!("0000000000000000"))
    );
}

// §5 Hybrid logical clock -------------------------------------------------

#[tokio::test]
async fn hlc_node_other_than_the_device_is_invalid_hlc() {
    skip_without_store!();
    let s = Server::new().await;
    let f = s.issue("field", "c1").await;
    let g = s.issue("field", "c1").await;
    for node in [g.id.clone(), s.admin.id.clone(), new_id()] {
        let mut m = lecture(&f, &new_id(), "c1", "2020-06-01", 87);
        m["hlc"]["node"] = json!(node);
        let r = s.push_one(&f, &m).await;
        assert_rejected(&r, &m, "invalid_hlc");
    }
    assert_eq!(s.checksum(&s.admin).await["count"], 0);
}

#[tokio::test]
async fn far_future_hlc_is_restamped_and_a_later_honest_edit_wins() {
    skip_without_store!();
    let s = Server::new().await;
    let honest = s.issue("field", "c1").await;
    let fast = s.issue("field", "c1").await;
    let rec = new_id();
    let mut create = lecture(&honest, &rec, "c1", "2020-06-01", 10);
    create["hlc"]["ms"] = json!(T0 - 60_000);
    let seq1 = assert_applied(&s.push_one(&honest, &create).await, &create);

    // One hour ahead: re-stamped, not rejected.
    let ahead = mutation(
        &fast,
        &rec,
        "lecture",
        seq1,
        T0 + 3_600_000,
        json!({"attendees": 20}),
    );
    let r = s.push_one(&fast, &ahead).await;
    assert_eq!(
        (&r["status"], &r["restamped"], &r["error"], &reported(&r)),
        (&json!("applied"), &json!(true), &Value::Null, &json!([])),
        "{r}"
    );
    let seq2 = seq_of(&r);
    assert!(seq2 > seq1);
    let pulled = s.record(&rec).await;
    assert_eq!(pulled["fields"]["attendees"], 20, "the data is kept");
    assert_eq!(pulled["hlc"]["ms"], T0, "hlc.ms is the server's clock");
    assert_eq!(pulled["hlc"]["node"], fast.id.as_str(), "node unchanged");
    assert!(pulled["hlc"]["c"].is_u64());

    // Repeating it repeats the first result, re-stamped included.
    let dup = s.push_one(&fast, &ahead).await;
    assert_eq!(
        (&dup["status"], seq_of(&dup), &dup["restamped"]),
        (&json!("duplicate"), seq2, &json!(true))
    );

    // A second later an honest device edits with a correct clock: it wins.
    s.clock.advance(1000);
    let later = mutation(
        &honest,
        &rec,
        "lecture",
        seq2,
        T0 + 1000,
        json!({"attendees": 30}),
    );
    let seq3 = assert_applied(&s.push_one(&honest, &later).await, &later);
    assert!(seq3 > seq2);
    let pulled = s.record(&rec).await;
    assert_eq!(pulled["fields"]["attendees"], 30);
    assert_eq!(
        pulled["hlc"],
        json!({"ms": T0 + 1000, "c": 0, "node": honest.id})
    );
}

#[tokio::test]
async fn hlc_exactly_max_skew_ahead_is_kept() {
    skip_without_store!();
    let s = Server::new().await;
    let f = s.issue("field", "c1").await;
    let rec = new_id();
    let mut m = lecture(&f, &rec, "c1", "2020-06-01", 10);
    m["hlc"]["ms"] = json!(T0 + 300_000);
    assert_applied(&s.push_one(&f, &m).await, &m);
    let pulled = s.record(&rec).await;
    assert_eq!(
        pulled["hlc"],
        json!({"ms": T0 + 300_000, "c": 0, "node": f.id})
    );

    let rec = new_id();
    let mut m = lecture(&f, &rec, "c1", "2020-06-01", 10);
    m["hlc"]["ms"] = json!(T0 + 300_001);
    let r = s.push_one(&f, &m).await;
    assert_eq!(
        (&r["status"], &r["restamped"]),
        (&json!("applied"), &json!(true))
    );
    assert_eq!(s.record(&rec).await["hlc"]["ms"], T0 + 300_000);
}

#[tokio::test]
async fn hlc_counter_spans_u32_and_rejected_mutations_are_never_restamped() {
    skip_without_store!();
    let s = Server::new().await;
    let f = s.issue("field", "c1").await;
    let rec = new_id();
    let mut m = lecture(&f, &rec, "c1", "2020-06-01", 10);
    m["hlc"]["c"] = json!(u32::MAX);
    assert_applied(&s.push_one(&f, &m).await, &m);
    assert_eq!(s.record(&rec).await["hlc"]["c"], u32::MAX);

    let mut m = lecture(&f, &new_id(), "c1", "2020-06-01", 10);
    m["hlc"]["ms"] = json!(T0 + 86_400_000);
    m["set"]["colour"] = json!("red");
    assert_rejected(&s.push_one(&f, &m).await, &m, "unknown_field");
}

// §6 Records and mutations ------------------------------------------------

#[tokio::test]
async fn each_rejection_code_and_the_batch_goes_on() {
    skip_without_store!();
    let s = Server::new().await;
    let f = s.issue("field", "s1").await;
    let (l, v) = (new_id(), new_id());
    let create_l = lecture(&f, &l, "c1", "2020-06-01", 87);
    let seq_l = assert_applied(&s.push_one(&f, &create_l).await, &create_l);
    let create_v = lecture(&s.admin, &v, "v3", "2020-06-01", 5);
    assert_applied(&s.push_one(&s.admin, &create_v).await, &create_v);
    let before_l = s.record(&l).await;
    let before_v = s.record(&v).await;

    let ok1 = lecture(&f, &new_id(), "c2", "2020-06-02", 12);
    let mut unknown_kind = lecture(&f, &new_id(), "c1", "2020-06-01", 1);
    unknown_kind["kind"] = json!("seminar");
    let mut unknown_field = lecture(&f, &new_id(), "c1", "2020-06-01", 1);
    unknown_field["set"]["colour"] = json!("red");
    let mut invalid_field = lecture(&f, &new_id(), "c1", "2020-06-01", 1);
    invalid_field["set"]["attendees"] = json!(87.0);
    let clear_required = mutation(&f, &l, "lecture", seq_l, T0 + 1, json!({"title": null}));
    let mut new_missing = lecture(&f, &new_id(), "c1", "2020-06-01", 1);
    new_missing["set"]
        .as_object_mut()
        .unwrap()
        .remove("attendees");
    let kind_mismatch = mutation(
        &f,
        &l,
        "library_corner",
        seq_l,
        T0 + 1,
        json!({"name": "图书角"}),
    );
    let unknown_org = lecture(&f, &new_id(), "140106999", "2020-06-01", 1);
    let out_of_scope_new = lecture(&f, &new_id(), "v3", "2020-06-01", 1);
    let out_of_scope_current = mutation(&f, &v, "lecture", 0, T0 + 1, json!({"title": "改"}));
    let moving_out = mutation(&f, &l, "lecture", seq_l, T0 + 1, json!({"org_unit": "v3"}));
    let mut id_reused = mutation(&f, &l, "lecture", seq_l, T0 + 1, json!({"attendees": 1}));
    id_reused["id"] = create_l["id"].clone();
    let ok2 = mutation(&f, &l, "lecture", seq_l, T0 + 2, json!({"attendees": 99}));

    let batch = [
        ok1.clone(),
        unknown_kind.clone(),
        unknown_field.clone(),
        invalid_field.clone(),
        clear_required.clone(),
        new_missing.clone(),
        kind_mismatch.clone(),
        unknown_org.clone(),
        out_of_scope_new.clone(),
        out_of_scope_current.clone(),
        moving_out.clone(),
        id_reused.clone(),
        ok2.clone(),
    ];
    let resp = s.push(&f, &batch).await;
    let results = resp["results"].as_array().unwrap();
    let seq1 = assert_applied(&results[0], &ok1);
    let expected: [(&Value, &str, Option<&str>); 11] = [
        (&unknown_kind, "unknown_kind", None),
        (&unknown_field, "unknown_field", Some("colour")),
        (&invalid_field, "invalid_field", Some("attendees")),
        (&clear_required, "missing_field", Some("title")),
        (&new_missing, "missing_field", Some("attendees")),
        (&kind_mismatch, "kind_mismatch", None),
        (&unknown_org, "unknown_org_unit", Some("org_unit")),
        (&out_of_scope_new, "out_of_scope", None),
        (&out_of_scope_current, "out_of_scope", None),
        (&moving_out, "out_of_scope", None),
        (&id_reused, "id_reused", None),
    ];
    for (i, (m, code, field)) in expected.into_iter().enumerate() {
        let err = assert_rejected(&results[i + 1], m, code);
        if let Some(field) = field {
            assert_eq!(err["field"], field, "{code}: {err}");
        }
    }
    let seq2 = assert_applied(&results[12], &ok2);
    assert!(
        seq_l < seq1 && seq1 < seq2,
        "seq increases: {seq_l} {seq1} {seq2}"
    );

    let after_l = s.record(&l).await;
    assert_eq!(after_l["fields"]["attendees"], 99);
    assert_eq!(after_l["fields"]["title"], before_l["fields"]["title"]);
    assert_eq!(after_l["fields"]["org_unit"], "c1");
    assert_eq!(after_l["kind"], "lecture");
    assert_eq!(s.record(&v).await, before_v);
    let (all, _) = s.pull_all(&s.admin, 0).await;
    assert_eq!(all.len(), 3, "only l, v and ok1 exist: {all:?}");
}

#[tokio::test]
async fn field_values_are_judged_by_the_kinds_rules() {
    skip_without_store!();
    let s = Server::new().await;
    let f = s.issue("field", "s1").await;
    // Today is 2020-07-01: held_on may be at most 2021-07-02.
    let cases: Vec<(&str, &str, Value, Option<&str>)> = vec![
        ("lecture", "held_on", json!("2000-01-01"), None),
        (
            "lecture",
            "held_on",
            json!("1999-12-31"),
            Some("invalid_field"),
        ),
        ("lecture", "held_on", json!("2021-07-02"), None),
        (
            "lecture",
            "held_on",
            json!("2021-07-03"),
            Some("invalid_field"),
        ),
        (
            "lecture",
            "held_on",
            json!("2020-02-30"),
            Some("invalid_field"),
        ),
        (
            "lecture",
            "held_on",
            json!("2020-6-1"),
            Some("invalid_field"),
        ),
        ("lecture", "title", json!(""), Some("invalid_field")),
        ("lecture", "title", json!("法".repeat(200)), None),
        (
            "lecture",
            "title",
            json!("法".repeat(201)),
            Some("invalid_field"),
        ),
        ("lecture", "attendees", json!(100_000), None),
        (
            "lecture",
            "attendees",
            json!(100_001),
            Some("invalid_field"),
        ),
        ("lecture", "attendees", json!(-1), Some("invalid_field")),
        ("lecture", "attendees", json!("87"), Some("invalid_field")),
        ("lecture", "attendees", json!(8.7e1), Some("invalid_field")),
        ("lecture", "topics", json!(vec!["民法典"; 20]), None),
        (
            "lecture",
            "topics",
            json!(vec!["民法典"; 21]),
            Some("invalid_field"),
        ),
        ("lecture", "topics", json!([""]), Some("invalid_field")),
        (
            "lecture",
            "topics",
            json!(["法".repeat(51)]),
            Some("invalid_field"),
        ),
        ("lecture", "topics", json!("民法典"), Some("invalid_field")),
        ("lecture", "speaker", json!("法".repeat(100)), None),
        (
            "lecture",
            "speaker",
            json!("法".repeat(101)),
            Some("invalid_field"),
        ),
        (
            "lecture",
            "venue",
            json!("x".repeat(201)),
            Some("invalid_field"),
        ),
        ("lecture", "audience", json!("villagers"), None),
        (
            "lecture",
            "audience",
            json!("aliens"),
            Some("invalid_field"),
        ),
        ("lecture", "notes", json!("法".repeat(2000)), None),
        (
            "lecture",
            "notes",
            json!("法".repeat(2001)),
            Some("invalid_field"),
        ),
        (
            "lecture",
            "location",
            json!({"lat": 37.86, "lon": 112.56}),
            None,
        ),
        (
            "lecture",
            "location",
            json!({"lat": 91, "lon": 0}),
            Some("invalid_field"),
        ),
        (
            "lecture",
            "location",
            json!({"lat": 0, "lon": -181}),
            Some("invalid_field"),
        ),
        ("lecture", "speaker", json!(null), None),
        ("lecture", "org_unit", json!(""), Some("invalid_field")),
        ("lecture", "books", json!(1), Some("unknown_field")),
        (
            "library_corner",
            "status",
            json!("open"),
            Some("invalid_field"),
        ),
        ("library_corner", "books", json!(1_000_000), None),
        (
            "library_corner",
            "books",
            json!(1_000_001),
            Some("invalid_field"),
        ),
        ("library_corner", "opened_on", json!("1990-05-05"), None),
        (
            "library_corner",
            "last_checked_on",
            json!("2020-02-30"),
            Some("invalid_field"),
        ),
        ("library_corner", "title", json!("x"), Some("unknown_field")),
        ("demo_site", "level", json!("county"), Some("invalid_field")),
        ("demo_site", "year", json!(2000), None),
        ("demo_site", "year", json!(1999), Some("invalid_field")),
        ("demo_site", "year", json!(2101), Some("invalid_field")),
        ("demo_site", "status", json!("awarded"), None),
        ("demo_site", "status", json!("won"), Some("invalid_field")),
    ];
    let mut batch = Vec::new();
    for (kind, field, value, _) in &cases {
        let mut m = match *kind {
            "lecture" => lecture(&f, &new_id(), "c1", "2020-06-01", 1),
            "library_corner" => corner(&f, &new_id(), "c1", "active"),
            _ => site(&f, &new_id(), "c1", "provincial", "candidate", 2020),
        };
        m["set"][*field] = value.clone();
        batch.push(m);
    }
    let resp = s.push(&f, &batch).await;
    for ((kind, field, value, expected), (r, m)) in cases
        .iter()
        .zip(resp["results"].as_array().unwrap().iter().zip(&batch))
    {
        match expected {
            None => {
                assert_eq!(r["status"], "applied", "{kind}.{field} = {value}: {r}");
            }
            Some(code) => {
                let err = assert_rejected(r, m, code);
                assert_eq!(err["field"], *field, "{kind}.{field} = {value}");
            }
        }
    }
}

#[tokio::test]
async fn rejection_checks_run_in_the_contracts_order() {
    skip_without_store!();
    let s = Server::new().await;
    let f = s.issue("field", "s1").await;
    let g = s.issue("field", "s1").await;
    let (l, v) = (new_id(), new_id());
    let create = lecture(&f, &l, "c1", "2020-06-01", 87);
    let seq = assert_applied(&s.push_one(&f, &create).await, &create);
    let create_v = lecture(&s.admin, &v, "v3", "2020-06-01", 5);
    s.push_one(&s.admin, &create_v).await;

    let new_lecture = |edit: &dyn Fn(&mut Value)| {
        let mut m = lecture(&f, &new_id(), "c1", "2020-06-01", 1);
        edit(&mut m["set"]);
        m
    };
    let mut hlc_and_kind = new_lecture(&|_: &mut Value| {});
    hlc_and_kind["hlc"]["node"] = json!(g.id);
    hlc_and_kind["kind"] = json!("seminar");
    let mut kind_and_field = new_lecture(&|set: &mut Value| set["colour"] = json!("red"));
    kind_and_field["kind"] = json!("seminar");
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "invalid_hlc before unknown_kind",
            hlc_and_kind,
            "invalid_hlc",
        ),
        (
            "unknown_kind before unknown_field",
            kind_and_field,
            "unknown_kind",
        ),
        (
            "kind_mismatch before unknown_field",
            mutation(&f, &l, "demo_site", seq, T0, json!({"colour": "red"})),
            "kind_mismatch",
        ),
        (
            "unknown_field before unknown_org_unit",
            new_lecture(&|set: &mut Value| {
                set["colour"] = json!("red");
                set["org_unit"] = json!("zz");
            }),
            "unknown_field",
        ),
        (
            "invalid_field before unknown_org_unit",
            new_lecture(&|set: &mut Value| {
                set["attendees"] = json!(-5);
                set["org_unit"] = json!("zz");
            }),
            "invalid_field",
        ),
        (
            "clearing a required field before unknown_org_unit",
            mutation(
                &f,
                &l,
                "lecture",
                seq,
                T0,
                json!({"title": null, "org_unit": "zz"}),
            ),
            "missing_field",
        ),
        (
            "unknown_org_unit before missing_field of a new record",
            new_lecture(&|set: &mut Value| {
                set.as_object_mut().unwrap().remove("title");
                set["org_unit"] = json!("zz");
            }),
            "unknown_org_unit",
        ),
        (
            "missing_field of a new record before out_of_scope",
            new_lecture(&|set: &mut Value| {
                set.as_object_mut().unwrap().remove("title");
                set["org_unit"] = json!("v3");
            }),
            "missing_field",
        ),
        // §6 rule 2 (amended): an existing record outside the scope is
        // out_of_scope right after unknown_kind, before kind and fields.
        (
            "out_of_scope of the record before clearing a required field",
            mutation(&f, &v, "lecture", 0, T0, json!({"title": null})),
            "out_of_scope",
        ),
        (
            "out_of_scope of the record before kind_mismatch",
            mutation(&f, &v, "demo_site", 0, T0, json!({"colour": "red"})),
            "out_of_scope",
        ),
        (
            "unknown_kind before out_of_scope of the record",
            mutation(&f, &v, "seminar", 0, T0, json!({})),
            "unknown_kind",
        ),
    ];
    for (name, m, code) in cases {
        let r = s.push_one(&f, &m).await;
        assert_eq!(r["error"]["code"], code, "{name}: {r}");
        assert_rejected(&r, &m, code);
    }
}

#[tokio::test]
async fn a_repeated_mutation_is_a_duplicate_with_its_first_result() {
    skip_without_store!();
    let s = Server::new().await;
    let f = s.issue("field", "c1").await;
    let rec = new_id();
    let m1 = lecture(&f, &rec, "c1", "2020-06-01", 87);
    let first = s.push_one(&f, &m1).await;
    let seq1 = assert_applied(&first, &m1);
    let m2 = mutation(&f, &rec, "lecture", seq1, T0 + 1, json!({"attendees": 88}));
    let seq2 = assert_applied(&s.push_one(&f, &m2).await, &m2);
    let before = snapshot(&s).await;

    // The same mutation, keys in another order and another base_seq.
    let raw = format!(
        r#"{{"mutations":[{{"set":{{"title":"民法典进社区","attendees":87,"org_unit":"c1","held_on":"2020-06-01"}},"hlc":{{"node":"{node}","c":0,"ms":{T0}}},"kind":"lecture","record_id":"{rec}","base_seq":7,"id":"{id}"}}],"device_id":"{node}"}}"#,
        node = f.id,
        id = m1["id"].as_str().unwrap(),
    );
    let resp = s
        .send(
            Method::POST,
            "/v1/sync/push",
            Some(&bearer(&f)),
            raw.into_bytes(),
            None,
        )
        .await
        .expect(200);
    let dup = &resp["results"][0];
    assert_eq!(
        (
            &dup["id"],
            &dup["status"],
            seq_of(dup),
            &dup["restamped"],
            &dup["error"],
            &dup["conflicts"]
        ),
        (
            &m1["id"],
            &json!("duplicate"),
            seq1,
            &json!(false),
            &Value::Null,
            &json!([])
        ),
        "{dup}"
    );
    let after = snapshot(&s).await;
    assert_eq!(after["records"], before["records"], "nothing changes");
    assert_eq!(after["checksum"], before["checksum"]);
    assert_eq!(s.record(&rec).await["fields"]["attendees"], 88);

    // Twice in one batch: applied, then a duplicate of it.
    let m3 = mutation(
        &f,
        &rec,
        "lecture",
        seq2,
        T0 + 2,
        json!({"speaker": "张律师"}),
    );
    let resp = s.push(&f, &[m3.clone(), m3.clone()]).await;
    let seq3 = assert_applied(&resp["results"][0], &m3);
    assert_eq!(resp["results"][1]["status"], "duplicate");
    assert_eq!(seq_of(&resp["results"][1]), seq3);
}

/// A change to a mutation.
type Edit = Box<dyn Fn(&mut Value)>;

#[tokio::test]
async fn a_reused_id_with_other_content_is_id_reused() {
    skip_without_store!();
    let s = Server::new().await;
    let f = s.issue("field", "c1").await;
    let g = s.issue("field", "c1").await;
    let rec = new_id();
    let m = lecture(&f, &rec, "c1", "2020-06-01", 87);
    let seq = assert_applied(&s.push_one(&f, &m).await, &m);
    let before = snapshot(&s).await;

    let variants: Vec<(&str, Edit)> = vec![
        (
            "set",
            Box::new(|m: &mut Value| m["set"]["attendees"] = json!(88)),
        ),
        ("hlc.c", Box::new(|m: &mut Value| m["hlc"]["c"] = json!(1))),
        (
            "hlc.ms",
            Box::new(|m: &mut Value| m["hlc"]["ms"] = json!(T0 + 1)),
        ),
        (
            "record_id",
            Box::new(|m: &mut Value| m["record_id"] = json!(new_id())),
        ),
        (
            "kind",
            Box::new(|m: &mut Value| m["kind"] = json!("demo_site")),
        ),
        (
            "delete",
            Box::new(|m: &mut Value| m["delete"] = json!(false)),
        ),
    ];
    for (what, edit) in variants {
        let mut again = m.clone();
        edit(&mut again);
        let r = s.push_one(&f, &again).await;
        assert_eq!(r["error"]["code"], "id_reused", "{what}: {r}");
        assert_rejected(&r, &again, "id_reused");
    }
    let after = snapshot(&s).await;
    assert_eq!(after["records"], before["records"]);
    assert_eq!(after["checksum"], before["checksum"]);

    // Mutation ids are unique per device: another device may use the same.
    let mut theirs = lecture(&g, &new_id(), "c1", "2020-06-02", 5);
    theirs["id"] = m["id"].clone();
    let r = s.push_one(&g, &theirs).await;
    assert!(assert_applied(&r, &theirs) > seq);
}

#[tokio::test]
async fn a_rejected_mutation_is_judged_afresh_when_pushed_again() {
    skip_without_store!();
    let s = Server::new().await;
    let f = s.issue("field", "s1").await;
    let m = lecture(&f, &new_id(), "c3", "2020-06-01", 40);
    assert_rejected(&s.push_one(&f, &m).await, &m, "unknown_org_unit");
    assert_rejected(&s.push_one(&f, &m).await, &m, "unknown_org_unit");
    s.import(&json!([{"code": "c3", "name": "柳巷第03社区", "type": "community", "parent": "s1"}]))
        .await;
    let seq = assert_applied(&s.push_one(&f, &m).await, &m);
    let dup = s.push_one(&f, &m).await;
    assert_eq!((&dup["status"], seq_of(&dup)), (&json!("duplicate"), seq));
}

/// A record made by `a`, then edited by `b` with `b_set` at `T0 + 10`
/// after seeing it: the base for concurrent edits. Returns the record id
/// and the seqs after each write.
async fn edited_by_two(s: &Server, a: &Dev, b: &Dev, b_set: Value) -> (String, u64, u64) {
    let rec = new_id();
    let m = lecture(a, &rec, "c1", "2020-06-01", 87);
    let seq1 = assert_applied(&s.push_one(a, &m).await, &m);
    let m = mutation(b, &rec, "lecture", seq1, T0 + 10, b_set);
    let seq2 = assert_applied(&s.push_one(b, &m).await, &m);
    (rec, seq1, seq2)
}

#[tokio::test]
async fn concurrent_edits_record_conflicts_whichever_wins() {
    skip_without_store!();
    let s = Server::new().await;
    let a = s.issue("field", "s1").await;
    let b = s.issue("field", "s1").await;
    let coord = s.issue("coordinator", "s1").await;
    let (rec, seq1, seq2) =
        edited_by_two(&s, &a, &b, json!({"attendees": 90, "title": "B 的标题"})).await;

    // a had not seen b's edit and is older: it loses, and a conflict is recorded.
    let losing = mutation(&a, &rec, "lecture", seq1, T0 + 5, json!({"attendees": 88}));
    let r = s.push_one(&a, &losing).await;
    assert_eq!(
        (&r["status"], &r["error"], &r["restamped"], &reported(&r)),
        (
            &json!("applied"),
            &Value::Null,
            &json!(false),
            &json!([{"field": "attendees", "winner": 90, "loser": 88}])
        ),
        "{r}"
    );
    let seq3 = seq_of(&r);
    assert!(seq3 > seq2, "open conflicts are visible state: new seq");
    let pulled = s.record(&rec).await;
    assert_eq!(
        (
            &pulled["fields"]["attendees"],
            &pulled["conflicts"],
            seq_of(&pulled)
        ),
        (&json!(90), &json!(1), seq3)
    );

    // Newer and unseen: it wins, and the conflict names it the winner.
    let winning = mutation(
        &a,
        &rec,
        "lecture",
        seq1,
        T0 + 20,
        json!({"title": "A 的标题"}),
    );
    let r = s.push_one(&a, &winning).await;
    assert_eq!(
        reported(&r),
        json!([{"field": "title", "winner": "A 的标题", "loser": "B 的标题"}]),
        "{r}"
    );
    let seq4 = seq_of(&r);
    let pulled = s.record(&rec).await;
    assert_eq!(
        (&pulled["fields"]["title"], &pulled["conflicts"]),
        (&json!("A 的标题"), &json!(2))
    );

    // Equal values, or edits made after seeing the other's: no conflict.
    let same = mutation(&a, &rec, "lecture", seq1, T0 + 6, json!({"attendees": 90}));
    assert_applied(&s.push_one(&a, &same).await, &same);
    let seen = mutation(&a, &rec, "lecture", seq4, T0 + 30, json!({"attendees": 91}));
    assert_applied(&s.push_one(&a, &seen).await, &seen);

    // A duplicate repeats the conflicts of its first result.
    let dup = s.push_one(&a, &losing).await;
    assert_eq!(
        (&dup["status"], seq_of(&dup), &reported(&dup)),
        (
            &json!("duplicate"),
            seq3,
            &json!([{"field": "attendees", "winner": 90, "loser": 88}])
        )
    );

    let list = s.get("/v1/conflicts", &coord).await.expect(200);
    let b_hlc = json!({"ms": T0 + 10, "c": 0, "node": b.id});
    let listed = list.as_array().unwrap();
    let expected = [
        json!({"record_id": rec, "field": "title", "winner": "A 的标题", "loser": "B 的标题",
               "winner_hlc": {"ms": T0 + 20, "c": 0, "node": a.id}, "loser_hlc": b_hlc,
               "seq": seq4}),
        json!({"record_id": rec, "field": "attendees", "winner": 90, "loser": 88,
               "winner_hlc": b_hlc, "loser_hlc": {"ms": T0 + 5, "c": 0, "node": a.id},
               "seq": seq3}),
    ];
    assert_eq!(listed.len(), expected.len(), "{list}");
    for (c, e) in listed.iter().zip(&expected) {
        assert!(uuid::Uuid::parse_str(c["id"].as_str().unwrap()).is_ok());
        assert_has(c, e);
    }
}

#[tokio::test]
async fn deleting_against_a_concurrent_edit_is_a_conflict_on_deleted() {
    skip_without_store!();
    let s = Server::new().await;
    let a = s.issue("field", "s1").await;
    let b = s.issue("field", "s1").await;

    // Delete a record another device edited meanwhile.
    let (rec, seq1, _) = edited_by_two(&s, &a, &b, json!({"attendees": 90})).await;
    let del = with_delete(
        mutation(&a, &rec, "lecture", seq1, T0 + 20, json!({})),
        true,
    );
    let r = s.push_one(&a, &del).await;
    assert_eq!(
        (&r["status"], &reported(&r)),
        (
            &json!("applied"),
            &json!([{"field": "_deleted", "winner": true, "loser": false}])
        ),
        "{r}"
    );
    let pulled = s.record(&rec).await;
    assert_eq!(
        (&pulled["deleted"], &pulled["conflicts"]),
        (&json!(true), &json!(1))
    );

    // Edit a record another device deleted meanwhile.
    let rec = new_id();
    let m = lecture(&a, &rec, "c1", "2020-06-01", 87);
    let seq1 = assert_applied(&s.push_one(&a, &m).await, &m);
    let del = with_delete(
        mutation(&b, &rec, "lecture", seq1, T0 + 10, json!({})),
        true,
    );
    assert_applied(&s.push_one(&b, &del).await, &del);
    let edit = mutation(&a, &rec, "lecture", seq1, T0 + 20, json!({"attendees": 91}));
    let r = s.push_one(&a, &edit).await;
    assert_eq!(
        (&r["status"], &reported(&r)),
        (
            &json!("applied"),
            &json!([{"field": "_deleted", "winner": true, "loser": false}])
        ),
        "{r}"
    );
    let pulled = s.record(&rec).await;
    assert_eq!(
        (&pulled["deleted"], &pulled["conflicts"]),
        (&json!(true), &json!(1))
    );
}

#[tokio::test]
async fn a_mutation_losing_on_every_field_is_still_applied() {
    skip_without_store!();
    let s = Server::new().await;
    let a = s.issue("field", "s1").await;
    let b = s.issue("field", "s1").await;
    let (rec, _, seq2) = edited_by_two(&s, &a, &b, json!({"attendees": 90})).await;
    let before = snapshot(&s).await;
    // Seen (base_seq = seq2) but older than b's edit: loses, no conflict.
    let old = mutation(&a, &rec, "lecture", seq2, T0 + 5, json!({"attendees": 70}));
    let r = s.push_one(&a, &old).await;
    assert_eq!(assert_applied(&r, &old), seq2, "the record's current seq");
    let after = snapshot(&s).await;
    assert_eq!(after["records"], before["records"]);
    assert_eq!(after["checksum"], before["checksum"]);
    assert_eq!(s.record(&rec).await["fields"]["attendees"], 90);
}

#[tokio::test]
async fn admins_push_like_any_device_everywhere() {
    skip_without_store!();
    let s = Server::new().await;
    let admin_at_c1 = s.issue("admin", "c1").await;
    let field = s.issue("field", "c1").await;
    for (dev, org) in [(&s.admin, "v3"), (&admin_at_c1, "v3"), (&admin_at_c1, "c2")] {
        let m = lecture(dev, &new_id(), org, "2020-06-01", 3);
        assert_applied(&s.push_one(dev, &m).await, &m);
    }
    let (entries, _) = s.pull_all(&admin_at_c1, 0).await;
    assert_eq!(entries.len(), 3);
    let (entries, _) = s.pull_all(&field, 0).await;
    assert!(entries.is_empty());
}

// §7 Endpoints: pull ------------------------------------------------------

#[track_caller]
fn assert_record_shape(e: &Value) {
    let keys: BTreeSet<&str> = e
        .as_object()
        .expect("entry")
        .keys()
        .map(String::as_str)
        .collect();
    for k in ["id", "kind", "seq", "deleted", "fields", "hlc", "conflicts"] {
        assert!(keys.contains(k), "{k} missing from {e}");
    }
    assert!(e["fields"].is_object() && e["deleted"].is_boolean() && e["conflicts"].is_u64());
    assert!(e["hlc"]["ms"].is_u64() && e["hlc"]["c"].is_u64() && e["hlc"]["node"].is_string());
}

#[tokio::test]
async fn pull_pages_with_limit_next_and_has_more() {
    skip_without_store!();
    let s = Server::new().await;
    let f = s.issue("field", "s1").await;
    let g = s.issue("field", "s2").await;
    let mine: Vec<Value> = (0..4)
        .map(|i| lecture(&f, &new_id(), "c1", "2020-06-01", i))
        .collect();
    s.push(&f, &mine).await;
    let theirs: Vec<Value> = (0..2)
        .map(|i| lecture(&g, &new_id(), "v3", "2020-06-01", i))
        .collect();
    s.push(&g, &theirs).await;
    let more: Vec<Value> = (4..7)
        .map(|i| lecture(&f, &new_id(), "c2", "2020-06-01", i))
        .collect();
    s.push(&f, &more).await;
    let top = s.checksum(&s.admin).await["seq"].as_u64().unwrap();
    assert_eq!(top, 9);

    let page = s.pull(&f, 0, 3).await;
    let recs = page["records"].as_array().unwrap();
    assert_eq!(recs.len(), 3);
    assert_eq!(page["has_more"], true);
    assert_eq!(page["next"], recs[2]["seq"]);
    assert_eq!(page["server_time_ms"], T0);
    assert!(page["store_id"].is_string());
    let mut got: Vec<Value> = recs.clone();

    // A record changed while paging shows up again at its new seq.
    let first = &recs[0];
    let edit = mutation(
        &f,
        first["id"].as_str().unwrap(),
        "lecture",
        seq_of(first),
        T0 + 1,
        json!({"attendees": 500}),
    );
    let edited_seq = assert_applied(&s.push_one(&f, &edit).await, &edit);

    let mut since = page["next"].as_u64().unwrap();
    loop {
        let page = s.pull(&f, since, 3).await;
        let recs = page["records"].as_array().unwrap();
        assert!(recs.len() <= 3);
        let next = page["next"].as_u64().unwrap();
        assert!(next >= since);
        if let Some(last) = recs.last() {
            assert!(next >= seq_of(last));
        }
        got.extend(recs.iter().cloned());
        since = next;
        if page["has_more"] == false {
            assert_eq!(next, edited_seq, "next is the server-wide seq at the end");
            break;
        }
    }
    for e in &got {
        assert_record_shape(e);
    }
    let seqs: Vec<u64> = got.iter().map(seq_of).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "ordered by seq: {seqs:?}"
    );
    let ids: BTreeSet<_> = got.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 7, "every record of the scope");
    let again = got
        .iter()
        .filter(|e| e["id"] == first["id"])
        .collect::<Vec<_>>();
    assert_eq!(again.len(), 2);
    assert_eq!(
        (seq_of(again[1]), &again[1]["fields"]["attendees"]),
        (edited_seq, &json!(500))
    );

    // Caught up: nothing more, next stays.
    let page = s.pull(&f, since, 3).await;
    assert_eq!(
        (&page["records"], &page["next"], &page["has_more"]),
        (&json!([]), &json!(since), &json!(false))
    );
    let page = s.pull(&f, 1000, 3).await;
    assert_eq!(
        (&page["next"], &page["has_more"]),
        (&json!(1000), &json!(false))
    );

    // A narrow scope still catches up with the server-wide seq.
    let page = s.pull(&g, 0, 500).await;
    assert_eq!(page["records"].as_array().unwrap().len(), 2);
    assert_eq!(
        (&page["next"], &page["has_more"]),
        (&json!(edited_seq), &json!(false))
    );

    // Defaults: since=0, limit=500.
    let page = s.get("/v1/sync/pull", &f).await.expect(200);
    assert_eq!(page["records"].as_array().unwrap().len(), 7);
}

#[tokio::test]
async fn pull_shows_deleted_records_and_omits_cleared_fields() {
    skip_without_store!();
    let s = Server::new().await;
    let f = s.issue("field", "c1").await;
    let rec = new_id();
    let mut m = lecture(&f, &rec, "c1", "2020-06-01", 87);
    m["set"]["speaker"] = json!("张律师");
    m["set"]["venue"] = json!("社区活动室");
    m["set"]["notes"] = Value::Null;
    let seq = assert_applied(&s.push_one(&f, &m).await, &m);
    let clear = mutation(&f, &rec, "lecture", seq, T0 + 1, json!({"speaker": null}));
    let seq = assert_applied(&s.push_one(&f, &clear).await, &clear);
    let (entries, _) = s.pull_all(&f, 0).await;
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_record_shape(e);
    assert_eq!(
        e["fields"],
        json!({"org_unit": "c1", "held_on": "2020-06-01", "title": "民法典进社区",
               "attendees": 87, "venue": "社区活动室"})
    );

    let del = with_delete(mutation(&f, &rec, "lecture", seq, T0 + 2, json!({})), true);
    let seq = assert_applied(&s.push_one(&f, &del).await, &del);
    let (entries, _) = s.pull_all(&f, 0).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (
            &entries[0]["deleted"],
            seq_of(&entries[0]),
            &entries[0]["fields"]["venue"],
            &entries[0]["fields"]["title"]
        ),
        (
            &json!(true),
            seq,
            &json!("社区活动室"),
            &json!("民法典进社区")
        )
    );
    assert_eq!(
        entries[0]["hlc"],
        json!({"ms": T0 + 2, "c": 0, "node": f.id}),
        "the greatest HLC in the record"
    );

    let restore = with_delete(mutation(&f, &rec, "lecture", seq, T0 + 3, json!({})), false);
    assert_applied(&s.push_one(&f, &restore).await, &restore);
    assert_eq!(s.record(&rec).await["deleted"], false);
}

#[tokio::test]
async fn pull_limit_above_5000_is_treated_as_5000() {
    skip_without_store!();
    let s = Server::new().await;
    let f = s.issue("field", "c1").await;
    for chunk in 0..6 {
        let n = if chunk < 5 { 1000 } else { 1 };
        let ms: Vec<Value> = (0..n)
            .map(|i| lecture(&f, &new_id(), "c1", "2020-06-01", i))
            .collect();
        s.push(&f, &ms).await;
    }
    let page = s.pull(&f, 0, 99_999).await;
    assert_eq!(page["records"].as_array().unwrap().len(), 5000);
    assert_eq!(
        (&page["has_more"], &page["next"]),
        (&json!(true), &json!(5000))
    );
    let page = s.pull(&f, 5000, 5001).await;
    assert_eq!(page["records"].as_array().unwrap().len(), 1);
    assert_eq!(
        (&page["has_more"], &page["next"]),
        (&json!(false), &json!(5001))
    );
}

// §7 Endpoints: checksum --------------------------------------------------

/// What a device computes from a complete pull from 0: `(seq, count, checksum)`.
fn recompute(entries: &[Value]) -> (u64, u64, String) {
    let mut seq = 0;
    let mut count = 0;
    let mut xor = 0u64;
    for e in entries {
        seq = seq.max(seq_of(e));
        if e.get("in_scope") == Some(&json!(false)) {
            continue;
        }
        count += 1;
        xor ^= digest(e["id"].as_str().unwrap(), seq_of(e));
    }
    (seq, count, format!("{xor:016x}"))
}

#[tokio::test]
async fn checksum_equals_a_recomputation_from_pulled_records() {
    skip_without_store!();
    let s = Server::new().await;
    let f = s.issue("field", "s1").await;
    let g = s.issue("field", "s2").await;
    for dev in [&f, &g, &s.admin] {
        let sum = s.checksum(dev).await;
        assert_eq!(
            (&sum["seq"], &sum["count"], &sum["checksum"]),
            (&json!(0), &json!(0), &json!("0000000000000000"))
        );
    }
    let (r1, r2, r3) = (new_id(), new_id(), new_id());
    let ms = [
        lecture(&f, &r1, "c1", "2020-06-01", 1),
        corner(&f, &r2, "c2", "active"),
        site(&f, &r3, "c1", "provincial", "awarded", 2020),
    ];
    s.push(&f, &ms).await;
    let del = with_delete(mutation(&f, &r3, "demo_site", 3, T0 + 1, json!({})), true);
    assert_applied(&s.push_one(&f, &del).await, &del);
    let v = lecture(&g, &new_id(), "v3", "2020-06-01", 4);
    s.push_one(&g, &v).await;
    // c2 moves under s2: r2 leaves f's scope and enters g's.
    s.import(&json!([{"code": "c2", "name": "柳巷第02社区", "type": "community", "parent": "s2"}]))
        .await;
    // A write outside f's scope after that must not move f's seq.
    let v2 = lecture(&g, &new_id(), "v3", "2020-06-02", 5);
    s.push_one(&g, &v2).await;

    let mut store_ids = BTreeSet::new();
    for (dev, count) in [(&f, 2), (&g, 3), (&s.admin, 5)] {
        let (entries, _) = s.pull_all(dev, 0).await;
        let (seq, n, checksum) = recompute(&entries);
        assert_eq!(n, count);
        let sum = s.checksum(dev).await;
        assert_eq!(
            (&sum["seq"], &sum["count"], &sum["checksum"]),
            (&json!(seq), &json!(n), &json!(checksum)),
            "entries {entries:?}"
        );
        let text = sum["checksum"].as_str().unwrap();
        assert!(text.len() == 16 && text.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')));
        store_ids.insert(sum["store_id"].to_string());
        store_ids.insert(s.pull(dev, 0, 1).await["store_id"].to_string());
    }
    let pushed = s.push(&f, &[]).await;
    store_ids.insert(pushed["store_id"].to_string());
    assert_eq!(store_ids.len(), 1, "one store_id everywhere: {store_ids:?}");
    // f's seq is the moved-out marker's, below the server-wide seq.
    let f_seq = s.checksum(&f).await["seq"].as_u64().unwrap();
    let all_seq = s.checksum(&s.admin).await["seq"].as_u64().unwrap();
    assert!(f_seq < all_seq, "{f_seq} < {all_seq}");
}

// §7 Endpoints: totals ----------------------------------------------------

#[track_caller]
fn assert_figures(v: &Value, lectures: [u64; 3], corners: (u64, u64, u64, f64), sites: [u64; 4]) {
    assert_has(
        &v["lectures"],
        &json!({"count": lectures[0], "attendees": lectures[1], "units_covered": lectures[2]}),
    );
    let lc = &v["library_corners"];
    assert_eq!(
        (&lc["active"], &lc["units_covered"], &lc["units_total"]),
        (&json!(corners.0), &json!(corners.1), &json!(corners.2)),
        "library corners of {}",
        v["org"]
    );
    assert!(lc["coverage"].is_f64(), "coverage is a float: {lc}");
    let coverage = lc["coverage"].as_f64().unwrap();
    assert!(
        (coverage - corners.3).abs() < 1e-3,
        "coverage {coverage} of {}, expected {}",
        v["org"],
        corners.3
    );
    assert_has(
        &v["demo_sites"],
        &json!({"national": sites[0], "provincial": sites[1], "municipal": sites[2], "district": sites[3]}),
    );
}

fn child<'a>(totals: &'a Value, code: &str) -> &'a Value {
    totals["children"]
        .as_array()
        .expect("children")
        .iter()
        .find(|c| c["org"]["code"] == code)
        .unwrap_or_else(|| panic!("no child {code} in {totals}"))
}

#[tokio::test]
async fn totals_count_lectures_corners_sites_and_conflicts() {
    skip_without_store!();
    let s = Server::new().await;
    let admin = s.admin.clone();
    let a = s.issue("field", "s1").await;
    let coord = s.issue("coordinator", "s1").await;
    let (l1, l6, k5) = (new_id(), new_id(), new_id());
    let records = [
        lecture(&admin, &l1, "c1", "2020-03-01", 50),
        lecture(&admin, &new_id(), "c1", "2020-06-15", 30),
        lecture(&admin, &new_id(), "c2", "2019-12-31", 20),
        lecture(&admin, &new_id(), "v3", "2020-12-31", 10),
        lecture(&admin, &new_id(), "s1", "2020-05-05", 5),
        lecture(&admin, &l6, "c2", "2020-04-04", 100),
        corner(&admin, &new_id(), "c1", "active"),
        corner(&admin, &new_id(), "c2", "inactive"),
        corner(&admin, &new_id(), "v3", "active"),
        corner(&admin, &new_id(), "v3", "active"),
        corner(&admin, &k5, "c2", "active"),
        site(&admin, &new_id(), "c1", "provincial", "awarded", 2020),
        site(&admin, &new_id(), "c2", "municipal", "awarded", 2020),
        site(&admin, &new_id(), "v3", "provincial", "awarded", 2019),
        site(&admin, &new_id(), "v3", "national", "candidate", 2020),
        site(&admin, &new_id(), "v3", "district", "revoked", 2020),
    ];
    s.push(&admin, &records).await;
    let deletes = [
        with_delete(mutation(&admin, &l6, "lecture", 6, T0 + 1, json!({})), true),
        with_delete(
            mutation(&admin, &k5, "library_corner", 11, T0 + 1, json!({})),
            true,
        ),
    ];
    s.push(&admin, &deletes).await;
    // Two open conflicts in s1, one of them on a deleted record.
    let edits = [
        mutation(
            &a,
            &l1,
            "lecture",
            0,
            T0 + 2,
            json!({"title": "改过的标题"}),
        ),
        // Same title as stored: only the edit-versus-delete conflict.
        mutation(
            &a,
            &l6,
            "lecture",
            0,
            T0 + 2,
            json!({"title": "民法典进社区"}),
        ),
    ];
    let r = s.push(&a, &edits).await;
    for res in r["results"].as_array().unwrap() {
        assert_eq!(res["conflicts"].as_array().unwrap().len(), 1, "{res}");
    }

    let t = s
        .get("/v1/totals?from=2020-01-01&to=2020-12-31", &admin)
        .await
        .expect(200);
    assert_has(&t["org"], &json!({"code": "d", "name": "迎泽区"}));
    assert_eq!(
        (&t["from"], &t["to"]),
        (&json!("2020-01-01"), &json!("2020-12-31"))
    );
    assert_figures(&t, [4, 95, 2], (3, 2, 3, 2.0 / 3.0), [0, 1, 1, 0]);
    assert_eq!(t["conflicts_open"], 2);
    assert_eq!(t["children"].as_array().unwrap().len(), 2);
    assert_has(
        &child(&t, "s1")["org"],
        &json!({"code": "s1", "name": "柳巷街道"}),
    );
    assert_figures(child(&t, "s1"), [3, 85, 1], (1, 1, 2, 0.5), [0, 1, 1, 0]);
    assert_figures(child(&t, "s2"), [1, 10, 1], (2, 1, 1, 1.0), [0, 0, 0, 0]);

    let t = s.get("/v1/totals", &admin).await.expect(200);
    assert_eq!((&t["from"], &t["to"]), (&Value::Null, &Value::Null));
    assert_figures(&t, [5, 115, 3], (3, 2, 3, 2.0 / 3.0), [0, 2, 1, 0]);

    let t = s
        .get("/v1/totals?from=2020-06-01", &admin)
        .await
        .expect(200);
    assert_eq!((&t["from"], &t["to"]), (&json!("2020-06-01"), &Value::Null));
    assert_figures(&t, [2, 40, 2], (3, 2, 3, 2.0 / 3.0), [0, 1, 1, 0]);

    let t = s.get("/v1/totals?to=2019-12-31", &admin).await.expect(200);
    assert_eq!((&t["from"], &t["to"]), (&Value::Null, &json!("2019-12-31")));
    assert_figures(&t, [1, 20, 1], (3, 2, 3, 2.0 / 3.0), [0, 1, 0, 0]);

    let t = s
        .get("/v1/totals?from=2020-03-01&to=2020-03-01", &admin)
        .await
        .expect(200);
    assert_figures(&t, [1, 50, 1], (3, 2, 3, 2.0 / 3.0), [0, 1, 1, 0]);

    // A coordinator's default is its own unit.
    let t = s
        .get("/v1/totals?from=2020-01-01", &coord)
        .await
        .expect(200);
    assert_eq!(t["org"]["code"], "s1");
    assert_figures(&t, [3, 85, 1], (1, 1, 2, 0.5), [0, 1, 1, 0]);
    assert_eq!(t["conflicts_open"], 2);
    let kids: BTreeSet<_> = t["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["org"]["code"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kids, ["c1", "c2"].into_iter().map(String::from).collect());

    let t = s.get("/v1/totals?org=c1", &coord).await.expect(200);
    assert_has(&t["org"], &json!({"code": "c1", "name": "柳巷第01社区"}));
    assert_eq!(t["children"], json!([]));
    assert_figures(&t, [2, 80, 1], (1, 1, 1, 1.0), [0, 1, 0, 0]);
    assert_eq!(t["conflicts_open"], 1);
}

#[track_caller]
fn assert_understanders(v: &Value, appointed: u64, serving: u64, covered: u64, total: u64) {
    let u = &v["legal_understanders"];
    assert_has(
        u,
        &json!({"appointed": appointed, "serving": serving, "units_covered": covered, "units_total": total}),
    );
    let coverage = u["coverage"].as_f64().expect("coverage is a float");
    let want = if total == 0 {
        0.0
    } else {
        covered as f64 / total as f64
    };
    assert!(
        (coverage - want).abs() < 1e-3,
        "coverage of {}: {u}",
        v["org"]
    );
}

/// Ids of the records `/v1/records?{query}` lists (one page is enough here).
async fn listed(s: &Server, dev: &Dev, query: &str) -> BTreeSet<String> {
    let page = s
        .get(&format!("/v1/records?{query}"), dev)
        .await
        .expect(200);
    assert!(page["next"].is_null(), "{page}");
    page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

/// The body of a CSV export.
async fn csv_text(s: &Server, dev: &Dev, path: &str) -> String {
    let r = s.get(path, dev).await;
    assert_eq!(r.status.as_u16(), 200, "{path}");
    String::from_utf8(r.body).expect("UTF-8")
}

#[tokio::test]
async fn legal_understanders_are_pushed_pulled_counted_covered_and_exported() {
    skip_without_store!();
    let s = Server::new().await;
    let (a, b) = (s.issue("field", "s1").await, s.issue("field", "s2").await);
    let coord = s.issue("coordinator", "d").await;
    let (u1, u2, u3, u4) = (new_id(), new_id(), new_id(), new_id());
    let phone = "0351-4041234";
    let r = s
        .push(
            &a,
            &[
                understander(&a, &u1, "c1", "2020-03-01", "serving", Some(phone)),
                understander(&a, &u2, "c2", "2020-06-01", "resigned", None),
                // Up to a year ahead, as for a lecture.
                understander(&a, &u3, "c1", "2021-01-05", "serving", None),
                // Bad values are rejected as for any kind, and change nothing.
                understander(&a, &new_id(), "c2", "2020-06-01", "serving", Some("电话")),
                understander(&a, &new_id(), "c2", "2020-06-01", "active", None),
                understander(&a, &new_id(), "c2", "1999-12-31", "serving", None),
                mutation(
                    &a,
                    &new_id(),
                    "legal_understander",
                    0,
                    T0,
                    json!({"org_unit": "c2", "name": "王丽", "status": "serving"}),
                ),
            ],
        )
        .await;
    let results = r["results"].as_array().unwrap();
    let outcome: Vec<(&str, &str, &str)> = results
        .iter()
        .map(|r| {
            (
                r["status"].as_str().unwrap(),
                r["error"]["code"].as_str().unwrap_or(""),
                r["error"]["field"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        outcome,
        [
            ("applied", "", ""),
            ("applied", "", ""),
            ("applied", "", ""),
            ("rejected", "invalid_field", "phone"),
            ("rejected", "invalid_field", "status"),
            ("rejected", "invalid_field", "appointed_on"),
            ("rejected", "missing_field", "appointed_on"),
        ]
    );
    s.push(
        &b,
        &[understander(&b, &u4, "v3", "2019-05-01", "serving", None)],
    )
    .await;

    // Pulled like any record: the street's device sees its three, phone
    // included (the device recorded it).
    let (entries, _) = s.pull_all(&a, 0).await;
    assert_eq!(entries.len(), 3);
    let e1 = find(&entries, &u1).expect("u1");
    assert_eq!(e1["kind"], "legal_understander");
    assert_has(
        &e1["fields"],
        &json!({"org_unit": "c1", "name": "王丽", "appointed_on": "2020-03-01", "status": "serving", "phone": phone}),
    );

    // Totals of 2020: appointed in the year (u1, u2), serving at its end
    // (u1, and u4 appointed in 2019), covering c1 and v3 of 3 units.
    let t = s
        .get("/v1/totals?from=2020-01-01&to=2020-12-31", &coord)
        .await
        .expect(200);
    assert_understanders(&t, 2, 2, 2, 3);
    assert_understanders(child(&t, "s1"), 2, 1, 1, 2);
    assert_understanders(child(&t, "s2"), 0, 1, 1, 1);
    // Without a period: all four appointed, three serving.
    let t = s.get("/v1/totals", &coord).await.expect(200);
    assert_understanders(&t, 4, 3, 2, 3);
    // Up to 2019: only u4.
    let t = s.get("/v1/totals?to=2019-12-31", &coord).await.expect(200);
    assert_understanders(&t, 1, 1, 1, 3);

    // The year's figures per community and village, and the report.
    let f = s.get("/v1/figures?year=2020", &coord).await.expect(200);
    let rows: BTreeMap<&str, (u64, u64)> = f["grassroots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["org"]["code"].as_str().unwrap(),
                (
                    u["understanders_appointed"].as_u64().unwrap(),
                    u["understanders_serving"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(
        rows,
        BTreeMap::from([("c1", (1, 1)), ("c2", (1, 0)), ("v3", (0, 1))])
    );
    assert_eq!(f["years"], json!([2019, 2020, 2021]));
    assert_eq!(f["totals"]["legal_understanders"], t2020(&s, &coord).await);
    let report = s
        .get("/v1/reports/annual?year=2020", &coord)
        .await
        .expect(200);
    let t = t2020(&s, &coord).await;
    assert_eq!(
        report["legal_understanders"],
        json!({"appointed": t["appointed"], "units_covered": t["units_covered"], "units_total": t["units_total"]})
    );

    // The records behind the figures.
    let year = "from=2020-01-01&to=2020-12-31";
    let ids = |list: &[&String]| list.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        listed(
            &s,
            &coord,
            &format!("figure=understanders_appointed&{year}")
        )
        .await,
        ids(&[&u1, &u2])
    );
    assert_eq!(
        listed(&s, &coord, &format!("figure=understanders_serving&{year}")).await,
        ids(&[&u1, &u4])
    );
    assert_eq!(
        listed(&s, &coord, "figure=records&kind=legal_understander").await,
        ids(&[&u1, &u2, &u3, &u4])
    );

    // Exports leave the phone number out unless asked for it.
    let plain = csv_text(&s, &coord, "/v1/exports/legal_understander.csv?lang=en").await;
    let header = plain.lines().next().unwrap();
    assert!(
        header.contains("appointed_on") && header.contains("training_hours"),
        "{header}"
    );
    assert!(
        !header.contains("phone") && !plain.contains(phone),
        "{plain}"
    );
    let zh = csv_text(&s, &coord, "/v1/exports/legal_understander.csv").await;
    assert!(zh.contains("选聘日期") && !zh.contains("联系电话"), "{zh}");
    let asked = csv_text(
        &s,
        &coord,
        "/v1/exports/legal_understander.csv?lang=en&include=phone",
    )
    .await;
    assert!(
        asked.lines().next().unwrap().contains("phone") && asked.contains(phone),
        "{asked}"
    );
    assert_eq!(asked.lines().count(), 5, "a header and four rows: {asked}");
    let r = s
        .get("/v1/exports/legal_understander.csv?include=name", &coord)
        .await;
    assert_error(&r, 400, "invalid_query");

    // u1 resigns and u4 is deleted: c1 and v3 lose their cover for 2020.
    let seq_of = |id: &str| find(&entries, id).unwrap()["seq"].as_u64().unwrap();
    s.push(
        &a,
        &[mutation(
            &a,
            &u1,
            "legal_understander",
            seq_of(&u1),
            T0 + 1,
            json!({"status": "resigned"}),
        )],
    )
    .await;
    let (b_entries, _) = s.pull_all(&b, 0).await;
    let u4_seq = find(&b_entries, &u4).unwrap()["seq"].as_u64().unwrap();
    s.push(
        &b,
        &[with_delete(
            mutation(&b, &u4, "legal_understander", u4_seq, T0 + 1, json!({})),
            true,
        )],
    )
    .await;
    let t = s
        .get("/v1/totals?from=2020-01-01&to=2020-12-31", &coord)
        .await
        .expect(200);
    assert_understanders(&t, 2, 0, 0, 3);
    let t = s.get("/v1/totals", &coord).await.expect(200);
    assert_understanders(&t, 3, 1, 1, 3);

    // The aggregates are what the store kept: the same after a restart,
    // and `verify`'s recount from the records agrees.
    let before = s.get("/v1/totals", &coord).await.expect(200);
    let s = s.restart().await;
    assert_eq!(s.get("/v1/totals", &coord).await.expect(200), before);
    let report = verified(s).await;
    assert!(report.broken.is_none(), "{report}");
    assert!(report.aggregates > 0, "{report}");
}

/// The understanders of 2020's totals, as served.
async fn t2020(s: &Server, dev: &Dev) -> Value {
    s.get("/v1/totals?from=2020-01-01&to=2020-12-31", dev)
        .await
        .expect(200)["legal_understanders"]
        .clone()
}

/// `pufa-server verify` of a server's store, once the server has stopped
/// (a running sled store locks its files).
async fn verified(s: Server) -> pufa_server::store::verify::Report {
    let Server {
        dir, app, database, ..
    } = s;
    drop(app);
    let mut config = pufa_server::Config::new(dir.path());
    let report = match &database {
        Some(db) => {
            config.database_url = Some(db.url().to_string());
            pufa_server::store::verify::verify_pg(&config).await
        }
        None => pufa_server::store::verify::verify(&config),
    };
    report.unwrap_or_else(|e| panic!("verify: {e}"))
}

#[tokio::test]
async fn totals_of_the_yingze_fixture_cover_113_grassroots_units() {
    skip_without_store!();
    // The repo's copy of the shared fixture (the demo embeds it too).
    let units: Value =
        serde_json::from_str(include_str!("../../demo/yingze-org-units.json")).unwrap();
    let s = Server::empty().await;
    let n = units.as_array().unwrap().len();
    assert_eq!(s.import(&units).await["upserted"], n);
    for path in ["/v1/totals", "/v1/totals?org=140106"] {
        let t = s.get(path, &s.admin).await.expect(200);
        assert_has(&t["org"], &json!({"code": "140106", "name": "迎泽区"}));
        assert_figures(&t, [0, 0, 0], (0, 0, 113, 0.0), [0, 0, 0, 0]);
        assert_understanders(&t, 0, 0, 0, 113);
        assert_eq!(t["conflicts_open"], 0);
        let children = t["children"].as_array().unwrap();
        assert_eq!(children.len(), 7, "six streets and one town");
        let total: u64 = children
            .iter()
            .map(|c| c["library_corners"]["units_total"].as_u64().unwrap())
            .sum();
        assert_eq!(total, 113);
    }
}

#[tokio::test]
async fn totals_with_several_roots_need_org() {
    skip_without_store!();
    let s = Server::new().await;
    s.import(&json!([{"code": "other", "name": "杏花岭区", "type": "district", "parent": null}]))
        .await;
    let resp = s.get("/v1/totals", &s.admin).await;
    assert_error(&resp, 400, "invalid_query");
    let t = s.get("/v1/totals?org=other", &s.admin).await.expect(200);
    assert_eq!(t["org"]["code"], "other");
    assert_eq!(t["children"], json!([]));
    // No grassroots units: coverage is 0, as a float.
    assert_figures(&t, [0, 0, 0], (0, 0, 0, 0.0), [0, 0, 0, 0]);
}

// §7 Endpoints: conflicts -------------------------------------------------

#[tokio::test]
async fn resolving_a_conflict_writes_the_value_and_closes_it() {
    skip_without_store!();
    let s = Server::new().await;
    let a = s.issue("field", "s1").await;
    let b = s.issue("field", "s1").await;
    let coord = s.issue("coordinator", "s1").await;
    let elsewhere = s.issue("coordinator", "s2").await;
    let (rec, seq1, _) = edited_by_two(&s, &a, &b, json!({"attendees": 90})).await;
    let losing = mutation(&a, &rec, "lecture", seq1, T0 + 5, json!({"attendees": 88}));
    s.push_one(&a, &losing).await;
    let before = s.record(&rec).await;
    assert_eq!(before["conflicts"], 1);
    let (_, next) = s.pull_all(&a, 0).await;

    let open = |t: Value| t["conflicts_open"].clone();
    assert_eq!(open(s.get("/v1/totals", &coord).await.expect(200)), 1);

    let list = s.get("/v1/conflicts", &coord).await.expect(200);
    let id = list[0]["id"].as_str().unwrap().to_string();
    let path = format!("/v1/conflicts/{id}/resolve");

    for (value, code) in [
        (json!("many"), "invalid_field"),
        (json!(88.0), "invalid_field"),
        (json!(-1), "invalid_field"),
        (Value::Null, "missing_field"),
    ] {
        let resp = s
            .json(Method::POST, &path, &coord, &json!({"value": value}))
            .await;
        assert_error_field(&resp, 400, code, Some("attendees"));
    }
    let resp = s
        .json(Method::POST, &path, &elsewhere, &json!({"value": 88}))
        .await;
    assert_error(&resp, 404, "not_found");
    assert_eq!(s.record(&rec).await, before, "refusals change nothing");

    let resolved = s
        .json(Method::POST, &path, &coord, &json!({"value": 88}))
        .await
        .expect(200);
    assert_record_shape(&resolved);
    assert_eq!(
        (
            &resolved["id"],
            &resolved["kind"],
            &resolved["deleted"],
            &resolved["conflicts"]
        ),
        (&json!(rec), &json!("lecture"), &json!(false), &json!(0))
    );
    assert_eq!(resolved["fields"]["attendees"], 88);
    assert!(seq_of(&resolved) > seq_of(&before));
    let hlc = |v: &Value| {
        (
            v["ms"].as_u64().unwrap(),
            v["c"].as_u64().unwrap(),
            v["node"].as_str().unwrap().to_string(),
        )
    };
    assert!(
        hlc(&resolved["hlc"]) > hlc(&before["hlc"]),
        "{} > {}",
        resolved["hlc"],
        before["hlc"]
    );
    assert_eq!(resolved["hlc"]["node"], coord.id.as_str());

    let (entries, _) = s.pull_all(&a, next).await;
    assert_eq!(entries, vec![resolved.clone()], "pull shows the resolution");
    assert_eq!(s.get("/v1/conflicts", &coord).await.expect(200), json!([]));
    assert_eq!(open(s.get("/v1/totals", &coord).await.expect(200)), 0);
    let resp = s
        .json(Method::POST, &path, &coord, &json!({"value": 88}))
        .await;
    assert_error(&resp, 404, "not_found");

    // The resolution beats every earlier write, even one made later offline.
    let late = mutation(
        &b,
        &rec,
        "lecture",
        seq_of(&resolved),
        T0 + 10,
        json!({"attendees": 95}),
    );
    s.push_one(&b, &late).await;
    assert_eq!(s.record(&rec).await["fields"]["attendees"], 88);
}

#[tokio::test]
async fn resolving_a_deleted_conflict_takes_only_a_boolean() {
    skip_without_store!();
    let s = Server::new().await;
    let a = s.issue("field", "s1").await;
    let b = s.issue("field", "s1").await;
    let (rec, seq1, _) = edited_by_two(&s, &a, &b, json!({"attendees": 90})).await;
    let del = with_delete(
        mutation(&a, &rec, "lecture", seq1, T0 + 20, json!({})),
        true,
    );
    s.push_one(&a, &del).await;
    let list = s.get("/v1/conflicts", &s.admin).await.expect(200);
    assert_eq!(list[0]["field"], "_deleted");
    let path = format!("/v1/conflicts/{}/resolve", list[0]["id"].as_str().unwrap());
    for value in [
        json!("yes"),
        json!(1),
        json!(0),
        Value::Null,
        json!("false"),
        json!([]),
    ] {
        let resp = s
            .json(Method::POST, &path, &s.admin, &json!({"value": value}))
            .await;
        assert_error(&resp, 400, "invalid_field");
    }
    let resolved = s
        .json(Method::POST, &path, &s.admin, &json!({"value": false}))
        .await
        .expect(200);
    assert_eq!(
        (&resolved["deleted"], &resolved["conflicts"]),
        (&json!(false), &json!(0))
    );
    assert_eq!(s.record(&rec).await["deleted"], false);
}

#[tokio::test]
async fn conflicts_are_listed_newest_first_within_scope() {
    skip_without_store!();
    let s = Server::new().await;
    let a = s.issue("field", "s1").await;
    let b = s.issue("field", "s2").await;
    let c_s1 = s.issue("coordinator", "s1").await;
    let c_s2 = s.issue("coordinator", "s2").await;
    let mut ids = Vec::new();
    for (dev, org) in [(&a, "c1"), (&b, "v3")] {
        let rec = new_id();
        let m = lecture(&s.admin, &rec, org, "2020-06-01", 87);
        s.push_one(&s.admin, &m).await;
        let edit = mutation(dev, &rec, "lecture", 0, T0 + 1, json!({"attendees": 1}));
        let r = s.push_one(dev, &edit).await;
        assert_eq!(r["conflicts"].as_array().unwrap().len(), 1);
        ids.push(rec);
    }
    let records = |v: Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|c| c["record_id"].as_str().unwrap().to_string())
            .collect()
    };
    let (x, y) = (ids[0].clone(), ids[1].clone());
    let all = s.get("/v1/conflicts", &s.admin).await.expect(200);
    let seqs: Vec<u64> = all.as_array().unwrap().iter().map(seq_of).collect();
    assert!(seqs[0] > seqs[1]);
    assert_eq!(records(all), [y.clone(), x.clone()]);
    assert_eq!(
        records(s.get("/v1/conflicts?limit=1", &s.admin).await.expect(200)),
        std::slice::from_ref(&y)
    );
    assert_eq!(
        records(s.get("/v1/conflicts?org=s1", &s.admin).await.expect(200)),
        std::slice::from_ref(&x)
    );
    assert_eq!(
        records(s.get("/v1/conflicts", &c_s1).await.expect(200)),
        std::slice::from_ref(&x)
    );
    assert_eq!(
        records(s.get("/v1/conflicts", &c_s2).await.expect(200)),
        [y]
    );
    let x_conflict = s.get("/v1/conflicts", &c_s1).await.expect(200)[0]["id"].clone();
    let resp = s
        .json(
            Method::POST,
            &format!("/v1/conflicts/{}/resolve", x_conflict.as_str().unwrap()),
            &c_s2,
            &json!({"value": 5}),
        )
        .await;
    assert_error(&resp, 404, "not_found");
}

// §7 Endpoints: devices ---------------------------------------------------

fn device<'a>(list: &'a Value, id: &str) -> &'a Value {
    list.as_array()
        .expect("devices")
        .iter()
        .find(|d| d["device_id"] == id)
        .unwrap_or_else(|| panic!("device {id} not in {list}"))
}

fn device_ids(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .expect("devices")
        .iter()
        .map(|d| d["device_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn devices_show_health_reports_and_clock_skew() {
    skip_without_store!();
    let s = Server::new().await;
    let f = s.issue("field", "c1").await;
    let coord = s.issue("coordinator", "s1").await;
    let g = s.issue("field", "v3").await;
    // An admin token created with an org_unit still has scope everything:
    // only unscoped callers list it.
    let admin_c1 = s.issue("admin", "c1").await;

    let list = s.get("/v1/devices", &s.admin).await.expect(200);
    assert_has(
        device(&list, &f.id),
        &json!({"device_id": f.id, "label": "field @ c1", "role": "field", "org_unit": "c1",
                "revoked": false, "last_push_ms": null, "last_pull_ms": null,
                "app_version": null, "outbox_len": null, "oldest_pending_ms": null,
                "clock_skew_ms": null}),
    );
    assert_eq!(
        device_ids(&list),
        [&s.admin.id, &f.id, &coord.id, &g.id, &admin_c1.id]
            .into_iter()
            .cloned()
            .collect()
    );

    s.clock.advance(1000);
    // An edit made a day earlier offline: hlc.ms says nothing about skew.
    let mut m = lecture(&f, &new_id(), "c1", "2020-06-30", 87);
    m["hlc"]["ms"] = json!(T0 - 86_400_000);
    let report = json!({"app_version": "1.2.3", "outbox_len": 4,
                        "oldest_pending_ms": T0 - 86_400_000, "now_ms": T0 - 1500});
    s.push_body(
        &f,
        &json!({"device_id": f.id, "mutations": [m], "device": report}),
    )
    .await
    .expect(200);
    let ahead = json!({"app_version": "1.0.0", "outbox_len": 0, "oldest_pending_ms": null,
                       "now_ms": T0 + 1000 + 700});
    s.push_body(
        &g,
        &json!({"device_id": g.id, "mutations": [], "device": ahead}),
    )
    .await
    .expect(200);
    let list = s.get("/v1/devices", &s.admin).await.expect(200);
    let d = device(&list, &f.id);
    assert_eq!(
        (
            &d["last_push_ms"],
            &d["app_version"],
            &d["outbox_len"],
            &d["oldest_pending_ms"],
            &d["clock_skew_ms"]
        ),
        (
            &json!(T0 + 1000),
            &json!("1.2.3"),
            &json!(4),
            &json!(T0 - 86_400_000),
            &json!(2500)
        ),
        "{d}"
    );
    assert_eq!(d["last_pull_ms"], Value::Null);
    assert_eq!(device(&list, &g.id)["clock_skew_ms"], -700, "device ahead");

    s.clock.advance(1000);
    s.pull(&f, 0, 10).await;
    s.clock.advance(1000);
    // A push without a report keeps the last one.
    s.push(&f, &[]).await;
    let list = s.get("/v1/devices", &s.admin).await.expect(200);
    let d = device(&list, &f.id);
    assert_eq!(
        (
            &d["last_push_ms"],
            &d["last_pull_ms"],
            &d["app_version"],
            &d["clock_skew_ms"]
        ),
        (
            &json!(T0 + 3000),
            &json!(T0 + 2000),
            &json!("1.2.3"),
            &json!(2500)
        ),
        "{d}"
    );

    // Scoped listings.
    let mine = s.get("/v1/devices", &coord).await.expect(200);
    assert_eq!(
        device_ids(&mine),
        [&f.id, &coord.id].into_iter().cloned().collect()
    );
    let narrowed = s.get("/v1/devices?org=c1", &coord).await.expect(200);
    assert_eq!(device_ids(&narrowed), [f.id.clone()].into_iter().collect());
    let s2 = s.get("/v1/devices?org=s2", &s.admin).await.expect(200);
    assert_eq!(device_ids(&s2), [g.id.clone()].into_iter().collect());
    let one = s.get("/v1/devices?limit=1", &s.admin).await.expect(200);
    assert_eq!(one.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn clock_skew_comes_from_the_latest_report_with_now_ms() {
    skip_without_store!();
    let s = Server::new().await;
    let f = s.issue("field", "c1").await;
    let report = json!({"app_version": "1.2.3", "outbox_len": 4, "now_ms": T0 - 2500});
    s.push_body(
        &f,
        &json!({"device_id": f.id, "mutations": [], "device": report}),
    )
    .await
    .expect(200);
    s.clock.advance(60_000);
    // A later report without now_ms: the skew measured before still stands.
    let report = json!({"app_version": "1.2.4", "outbox_len": 0});
    s.push_body(
        &f,
        &json!({"device_id": f.id, "mutations": [], "device": report}),
    )
    .await
    .expect(200);
    let list = s.get("/v1/devices", &s.admin).await.expect(200);
    let d = device(&list, &f.id);
    assert_eq!(d["app_version"], "1.2.4", "the latest report is kept");
    assert_eq!(
        d["clock_skew_ms"], 2500,
        "§7: server clock at the latest report WITH a now_ms, minus that now_ms: {d}"
    );
}

// §7 Endpoints: rejections ------------------------------------------------

#[tokio::test]
async fn rejections_are_listed_newest_first_as_pushed_within_scope() {
    skip_without_store!();
    let s = Server::new().await;
    let f = s.issue("field", "c1").await;
    let g = s.issue("field", "v3").await;
    let coord = s.issue("coordinator", "s1").await;

    let bad1 = lecture(&f, &new_id(), "zz", "2020-06-01", 1);
    s.push_one(&f, &bad1).await;
    s.clock.advance(1000);
    let mut bad2 = lecture(&f, &new_id(), "c1", "2020-06-01", 1);
    bad2["set"]["attendees"] = json!(87.0);
    bad2["set"]["topics"] = json!(["民法典", "反诈"]);
    let good = lecture(&f, &new_id(), "c1", "2020-06-01", 1);
    s.push(&f, &[bad2.clone(), good]).await;
    s.clock.advance(1000);
    let mut bad3 = lecture(&g, &new_id(), "v3", "2020-06-01", 1);
    bad3["kind"] = json!("seminar");
    let bad3 = with_delete(bad3, false);
    s.push_one(&g, &bad3).await;

    let list = s.get("/v1/rejections", &s.admin).await.expect(200);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3, "{list:?}");
    let expected = [
        (&g, T0 + 2000, &bad3, "unknown_kind"),
        (&f, T0 + 1000, &bad2, "invalid_field"),
        (&f, T0, &bad1, "unknown_org_unit"),
    ];
    for (got, (dev, at, m, code)) in list.iter().zip(expected) {
        assert_eq!(
            (
                &got["device_id"],
                &got["received_ms"],
                &got["mutation"],
                &got["error"]["code"]
            ),
            (&json!(dev.id), &json!(at), m, &json!(code)),
            "{got}"
        );
        assert!(got["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        assert!(got["error"].get("field").is_some());
    }

    let ids = |v: Value| -> Vec<Value> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["mutation"]["id"].clone())
            .collect()
    };
    assert_eq!(
        ids(s.get("/v1/rejections", &coord).await.expect(200)),
        [bad2["id"].clone(), bad1["id"].clone()]
    );
    assert_eq!(
        ids(s.get("/v1/rejections?org=v3", &s.admin).await.expect(200)),
        [bad3["id"].clone()]
    );
    assert_eq!(
        ids(s.get("/v1/rejections?limit=1", &s.admin).await.expect(200)),
        [bad3["id"].clone()]
    );
}

#[tokio::test]
async fn rejections_keep_the_mutation_exactly_as_pushed() {
    skip_without_store!();
    let s = Server::new().await;
    let f = s.issue("field", "c1").await;
    // Keys a later client version might add are tolerated by the envelope
    // (wire.rs) and are part of what was pushed.
    let mut m = lecture(&f, &new_id(), "zz", "2020-06-01", 1);
    m["client_note"] = json!("离线录入");
    assert_rejected(&s.push_one(&f, &m).await, &m, "unknown_org_unit");
    let list = s.get("/v1/rejections", &s.admin).await.expect(200);
    assert_eq!(list[0]["mutation"], m, "the mutation as pushed");
}

/// A rejected mutation is kept within named bounds, whatever was pushed:
/// a value past `REJECTION_VALUE_BYTES_MAX` is kept as its length, a
/// message or field name past `REJECTION_TEXT_CHARS_MAX` is cut, so a
/// field token cannot turn pushes into megabytes of stored rejections
/// and listings. Values within the bounds stay exactly as pushed.
#[tokio::test]
async fn rejections_keep_at_most_a_named_size_of_what_was_pushed() {
    use pufa_server::config::{
        REJECTION_MUTATION_BYTES_MAX, REJECTION_TEXT_CHARS_MAX, REJECTION_VALUE_BYTES_MAX,
    };
    skip_without_store!();
    let s = Server::new().await;
    let f = s.issue("field", "c1").await;
    let huge = "法".repeat(1024 * 1024); // 3 MiB of text
    let mut notes = lecture(&f, &new_id(), "c1", "2020-06-01", 1);
    notes["set"]["notes"] = json!(huge);
    let mut kind = lecture(&f, &new_id(), "c1", "2020-06-01", 1);
    kind["kind"] = json!("k".repeat(200_000));
    let mut fields = lecture(&f, &new_id(), "c1", "2020-06-01", 1);
    for i in 0..2000 {
        fields["set"][format!("{}{i}", "x".repeat(40))] = json!("y".repeat(40));
    }
    let results = s
        .push(&f, &[notes.clone(), kind.clone(), fields.clone()])
        .await;
    assert_rejected(&results["results"][0], &notes, "invalid_field");
    assert_rejected(&results["results"][1], &kind, "unknown_kind");
    assert_rejected(&results["results"][2], &fields, "unknown_field");

    let got = s.get("/v1/rejections", &s.admin).await;
    assert_eq!(got.status, 200);
    assert!(
        got.body.len() < 3 * (REJECTION_MUTATION_BYTES_MAX + 2 * REJECTION_TEXT_CHARS_MAX * 4),
        "{} bytes listed",
        got.body.len()
    );
    let list = got.expect(200);
    let by_id = |m: &Value| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|r| r["mutation"]["id"] == m["id"])
            .unwrap_or_else(|| panic!("{} not listed", m["id"]))
            .clone()
    };
    let r = by_id(&notes);
    let n = serde_json::to_string(&json!(huge)).unwrap().len();
    assert_eq!(r["mutation"]["set"]["notes"], json!({"omitted_bytes": n}));
    assert_eq!(
        r["mutation"]["set"]["title"], notes["set"]["title"],
        "the rest as pushed"
    );
    assert_eq!(r["mutation"]["hlc"], notes["hlc"]);
    let r = by_id(&kind);
    assert_eq!(r["mutation"]["kind"]["omitted_bytes"], 200_002);
    let message = r["error"]["message"].as_str().unwrap();
    assert!(
        message.chars().count() <= REJECTION_TEXT_CHARS_MAX + 1,
        "{message}"
    );
    let r = by_id(&fields);
    assert!(
        r["mutation"]["set"]["omitted_bytes"].as_u64().unwrap()
            > REJECTION_MUTATION_BYTES_MAX as u64
    );
    assert!(REJECTION_VALUE_BYTES_MAX < n);
}

/// Rejections are kept per device and per unit: one device's flood of
/// junk evicts its own oldest rejections, several devices of one street
/// flooding together evict only that street's, never another street's
/// (whose coordinator keeps seeing them).
#[tokio::test]
async fn a_flood_of_rejections_evicts_only_its_own_device_s_and_street_s() {
    skip_without_store!();
    let s = Server::configured(|c| {
        c.rejections_kept = 100;
        c.rejections_per_unit_kept = 15;
        c.rejections_per_device_kept = 10;
    })
    .await;
    s.import(&small_tree()).await;
    let a1 = s.issue("field", "s1").await;
    let a2 = s.issue("field", "s1").await;
    let b = s.issue("field", "s2").await;
    let coord_b = s.issue("coordinator", "s2").await;
    let mine = lecture(&b, &new_id(), "nowhere", "2020-06-01", 1);
    assert_rejected(&s.push_one(&b, &mine).await, &mine, "unknown_org_unit");
    for round in 0..3 {
        for (name, a) in [("a1", &a1), ("a2", &a2)] {
            let junk: Vec<Value> = (0..100)
                .map(|i| {
                    let mut m = lecture(a, &new_id(), "c1", "2020-06-01", 1);
                    m["set"]["colour"] = json!(format!("{name} {round}-{i}"));
                    m
                })
                .collect();
            s.push(a, &junk).await;
        }
    }
    let seen = s.get("/v1/rejections", &coord_b).await.expect(200);
    assert_eq!(seen.as_array().unwrap().len(), 1, "{seen}");
    assert_eq!(seen[0]["mutation"], mine);
    let all = s
        .get("/v1/rejections?limit=5000", &s.admin)
        .await
        .expect(200);
    let colours: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["mutation"]["set"]["colour"].as_str())
        .collect();
    // s1 keeps 15: a2's newest 10 and a1's newest 5, newest first.
    assert_eq!(colours.len(), 15, "{colours:?}");
    assert_eq!(colours[0], "a2 2-99");
    assert_eq!(colours[9], "a2 2-90");
    assert_eq!(colours[10], "a1 2-99");
    assert_eq!(colours[14], "a1 2-95");
    assert_eq!(all.as_array().unwrap().len(), 16, "and b's one");
}

// Additions: reporting periods (docs/protocol.md "Reporting periods") ---

async fn period(
    s: &Server,
    dev: &Dev,
    action: &str,
    org: &str,
    period: &str,
    comment: Option<&str>,
) -> Resp {
    let mut body = json!({"org_unit": org, "period": period});
    if let Some(c) = comment {
        body["comment"] = json!(c);
    }
    s.json(Method::POST, &format!("/v1/periods/{action}"), dev, &body)
        .await
}

/// The figures and the checksum a locked period must keep.
async fn locked_figures(s: &Server, field: &Dev) -> (Value, Value) {
    (
        s.get("/v1/totals?org=d&from=2020-01-01&to=2020-12-31", &s.admin)
            .await
            .expect(200),
        s.checksum(field).await,
    )
}

#[tokio::test]
async fn an_approved_period_locks_late_writes_until_it_is_reopened() {
    skip_without_store!();
    let s = Server::new().await;
    let field = s.issue("field", "s1").await;
    let street = s.issue("coordinator", "s1").await;
    let district = s.issue("coordinator", "d").await;
    let rec = new_id();
    let m = lecture(&field, &rec, "c1", "2020-03-10", 40);
    let seq1 = assert_applied(&s.push_one(&field, &m).await, &m);

    // Submit → return (with a reason) → resubmit → approve.
    let v = period(&s, &street, "submit", "s1", "2020", None)
        .await
        .expect(200);
    assert_eq!(
        (&v["state"], &v["locked"]),
        (&json!("submitted"), &json!(false))
    );
    let r = period(&s, &street, "approve", "s1", "2020", None).await;
    assert_error(&r, 403, "forbidden");
    let r = period(&s, &district, "return", "s1", "2020", None).await;
    assert_error_field(&r, 400, "bad_json", Some("comment"));
    let v = period(&s, &district, "return", "s1", "2020", Some("3月数字缺一场"))
        .await
        .expect(200);
    assert_eq!(
        (&v["state"], &v["comment"]),
        (&json!("returned"), &json!("3月数字缺一场"))
    );
    period(&s, &street, "submit", "s1", "2020", Some("已补录"))
        .await
        .expect(200);
    let v = period(&s, &district, "approve", "s1", "2020", None)
        .await
        .expect(200);
    assert_eq!(
        (&v["state"], &v["locked"]),
        (&json!("approved"), &json!(true))
    );
    let r = period(&s, &district, "approve", "s1", "2020", None).await;
    assert_error(&r, 409, "period_state");
    // A month of an approved year cannot move on its own.
    let r = period(&s, &street, "submit", "c1", "2020-03", None).await;
    assert_error(&r, 409, "period_locked");

    // The district sees the street approved and its communities locked by it.
    let list = s
        .get("/v1/periods?org=d&year=2020", &district)
        .await
        .expect(200);
    let of = |unit: &str, p: &str| {
        list["periods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["org_unit"] == unit && v["period"] == p)
            .cloned()
            .unwrap_or_else(|| panic!("{unit} {p} not listed: {list}"))
    };
    assert_eq!(of("s1", "2020")["state"], "approved");
    assert_eq!(of("c1", "2020")["locked_by"]["org_unit"], "s1");
    assert_eq!(of("c1", "2020")["locked"], true);
    assert_eq!(of("s2", "2020")["locked"], false);
    // The approver, by its token's label (a person's session: the username).
    assert_eq!(of("s1", "2020")["by"], "coordinator @ d");

    // A late device: every write into the locked year of s1 is refused and
    // changes nothing; other streets and other years go on.
    let before = locked_figures(&s, &field).await;
    let late = [
        mutation(
            &field,
            &rec,
            "lecture",
            seq1,
            T0 + 50,
            json!({"attendees": 41}),
        ),
        lecture(&field, &new_id(), "c2", "2020-11-30", 9),
        json!({"id": new_id(), "record_id": rec, "kind": "lecture", "base_seq": seq1,
               "hlc": {"ms": T0 + 51, "c": 0, "node": field.id}, "set": {}, "delete": true}),
    ];
    for m in &late {
        let r = s.push_one(&field, m).await;
        let e = assert_rejected(&r, m, "period_locked");
        assert_eq!(
            (&e["locked"]["org_unit"], &e["locked"]["period"]),
            (&json!("s1"), &json!("2020")),
            "{r}"
        );
        assert!(e["locked"]["approved_ms"].is_u64(), "{r}");
    }
    // Moving a 2021 lecture into 2020 is a write into the period too.
    let later = new_id();
    let m = lecture(&field, &later, "c1", "2021-01-05", 12);
    let seq_later = assert_applied(&s.push_one(&field, &m).await, &m);
    let into = mutation(
        &field,
        &later,
        "lecture",
        seq_later,
        T0 + 60,
        json!({"held_on": "2020-12-31"}),
    );
    assert_rejected(&s.push_one(&field, &into).await, &into, "period_locked");
    let after = locked_figures(&s, &field).await;
    assert_eq!(before.0, after.0, "totals moved under a locked period");
    let (count, xor) = (&after.1["count"], &after.1["checksum"]);
    assert_eq!(
        count.as_u64(),
        before.1["count"].as_u64().map(|c| c + 1),
        "only the 2021 lecture is new"
    );
    assert_ne!(xor, &before.1["checksum"]);
    let rejections = s.get("/v1/rejections", &district).await.expect(200);
    assert!(
        rejections
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["error"]["code"] == "period_locked"
                && r["error"]["locked"]["org_unit"] == "s1"),
        "{rejections}"
    );
    let elsewhere = s.issue("field", "s2").await;
    let m = lecture(&elsewhere, &new_id(), "v3", "2020-05-01", 30);
    assert_applied(&s.push_one(&elsewhere, &m).await, &m);

    // Reopen (the district, with a reason): the same mutation, sent again,
    // now applies.
    let r = period(&s, &street, "reopen", "s1", "2020", Some("补录")).await;
    assert_error(&r, 403, "forbidden");
    let v = period(&s, &district, "reopen", "s1", "2020", Some("补录一场讲座"))
        .await
        .expect(200);
    assert_eq!(
        (&v["state"], &v["locked"]),
        (&json!("returned"), &json!(false))
    );
    let r = s.push_one(&field, &late[0]).await;
    assert_applied(&r, &late[0]);
    assert_eq!(s.record(&rec).await["fields"]["attendees"], 41);
}

#[tokio::test]
async fn the_top_unit_approves_itself_and_locks_resolutions_and_moves() {
    skip_without_store!();
    let s = Server::new().await;
    let a = s.issue("field", "s1").await;
    let b = s.issue("field", "s1").await;
    let district = s.issue("coordinator", "d").await;
    let (rec, seq1, _) = edited_by_two(&s, &a, &b, json!({"attendees": 90})).await;
    let losing = mutation(&a, &rec, "lecture", seq1, T0 + 5, json!({"attendees": 88}));
    assert_eq!(s.push_one(&a, &losing).await["conflicts"][0]["loser"], 88);
    let conflicts = s.get("/v1/conflicts", &district).await.expect(200);
    let conflict = conflicts[0]["id"].as_str().expect("a conflict").to_string();

    // The district has no one above it: its own coordinator approves.
    period(&s, &district, "approve", "d", "2020-Q2", None)
        .await
        .expect(200);
    let r = s
        .json(
            Method::POST,
            &format!("/v1/conflicts/{conflict}/resolve"),
            &district,
            &json!({"value": 88}),
        )
        .await;
    let e = assert_error(&r, 400, "period_locked");
    assert_eq!(e["locked"]["period"], "2020-Q2", "{e}");
    assert_eq!(s.record(&rec).await["conflicts"], 1);

    // Re-parenting a unit under the approved period is refused whole.
    let moved =
        json!([{"code": "c1", "name": "柳巷第01社区", "type": "community", "parent": "s2"}]);
    let r = s
        .json(Method::PUT, "/v1/admin/org-units", &s.admin, &moved)
        .await;
    assert_error(&r, 400, "invalid_org_tree");
    let units = s.get("/v1/org-units", &s.admin).await.expect(200);
    assert!(
        units
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["code"] == "c1" && u["parent"] == "s1"),
        "{units}"
    );

    // A lecture in another quarter is not locked by Q2.
    let m = lecture(&a, &new_id(), "c1", "2020-07-01", 5);
    assert_applied(&s.push_one(&a, &m).await, &m);
    period(&s, &district, "reopen", "d", "2020-Q2", Some("核对冲突"))
        .await
        .expect(200);
    s.json(
        Method::POST,
        &format!("/v1/conflicts/{conflict}/resolve"),
        &district,
        &json!({"value": 88}),
    )
    .await
    .expect(200);
}

#[tokio::test]
async fn period_steps_are_scoped_and_checked() {
    skip_without_store!();
    let s = Server::new().await;
    let field = s.issue("field", "s1").await;
    let other = s.issue("coordinator", "s2").await;
    let street = s.issue("coordinator", "s1").await;
    assert_error(
        &period(&s, &field, "submit", "s1", "2020", None).await,
        403,
        "forbidden",
    );
    assert_error(
        &period(&s, &other, "submit", "s1", "2020", None).await,
        403,
        "forbidden",
    );
    assert_error(
        &period(&s, &other, "submit", "nowhere", "2020", None).await,
        403,
        "forbidden",
    );
    assert_error(
        &period(&s, &other, "approve", "d", "2020", None).await,
        403,
        "forbidden",
    );
    for bad in ["20", "2020-Q5", "2020-13", "2020-3", "1999"] {
        let r = period(&s, &street, "submit", "s1", bad, None).await;
        assert_error_field(&r, 400, "bad_json", Some("period"));
    }
    let long = "很".repeat(501);
    let r = period(&s, &street, "submit", "s1", "2020", Some(&long)).await;
    assert_error_field(&r, 400, "bad_json", Some("comment"));
    let r = s
        .json(
            Method::POST,
            "/v1/periods/lock",
            &street,
            &json!({"org_unit": "s1", "period": "2020"}),
        )
        .await;
    assert_error(&r, 404, "not_found");
    assert_error(
        &period(&s, &street, "reopen", "s1", "2020", Some("x")).await,
        403,
        "forbidden",
    );
    let r = s.get("/v1/periods?year=2020&org=s2", &street).await;
    assert_error(&r, 403, "forbidden");
    let r = s.get("/v1/periods?year=2020", &field).await;
    assert_error(&r, 403, "forbidden");
    let r = s.get("/v1/periods?org=s1", &street).await;
    assert_error_field(&r, 400, "invalid_query", Some("year"));
    // Nothing above: every period of the street is open.
    let list = s.get("/v1/periods?year=2020", &street).await.expect(200);
    let states: BTreeSet<&str> = list["periods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, BTreeSet::from(["open"]));
    assert_eq!(list["periods"].as_array().unwrap().len(), 3, "{list}");
}

// Additions: likely double entries (docs/protocol.md "Likely double entries")

/// A new lecture titled `title` (otherwise as [`lecture`]), pushed and
/// applied; its id.
async fn titled(s: &Server, dev: &Dev, org: &str, held_on: &str, title: &str) -> String {
    let rec = new_id();
    let mut m = lecture(dev, &rec, org, held_on, 30);
    m["set"]["title"] = json!(title);
    assert_applied(&s.push_one(dev, &m).await, &m);
    rec
}

/// The pairs a duplicates listing names, each `(a, b)`.
fn pairs_of(list: &Value) -> BTreeSet<(String, String)> {
    let pairs = list["pairs"].as_array().expect("pairs");
    assert_eq!(list["count"], json!(pairs.len()), "{list}");
    pairs
        .iter()
        .map(|p| {
            let (a, b) = (p["a"]["id"].as_str(), p["b"]["id"].as_str());
            (a.unwrap().to_string(), b.unwrap().to_string())
        })
        .collect()
}

fn ordered(x: &str, y: &str) -> (String, String) {
    let (x, y) = (x.to_string(), y.to_string());
    if x <= y {
        (x, y)
    } else {
        (y, x)
    }
}

async fn lectures_of(s: &Server, dev: &Dev, org: &str) -> Value {
    let t = s
        .get(
            &format!("/v1/totals?org={org}&from=2020-01-01&to=2020-12-31"),
            dev,
        )
        .await
        .expect(200);
    t["lectures"]["count"].clone()
}

#[tokio::test]
async fn likely_duplicates_are_listed_dismissed_and_deleted() {
    skip_without_store!();
    let s = Server::new().await;
    let a = s.issue("field", "s1").await;
    let b = s.issue("field", "s1").await;
    let street = s.issue("coordinator", "s1").await;
    // Two phones record one lecture, each its own way; a third lecture
    // that day is another event; the same title on another day or in
    // another unit is another lecture.
    let x = titled(&s, &a, "c1", "2020-03-10", "民法典进社区").await;
    let y = titled(&s, &b, "c1", "2020-03-10", "《民法典》进社区").await;
    titled(&s, &a, "c1", "2020-03-10", "反诈宣传").await;
    titled(&s, &a, "c1", "2020-03-11", "民法典进社区").await;
    titled(&s, &a, "c2", "2020-03-10", "民法典进社区").await;
    let p = titled(&s, &a, "c1", "2020-05-01", "宪法宣传周").await;
    let q = titled(&s, &b, "c1", "2020-05-01", "“宪法”宣传周活动").await;
    // Another year is another listing.
    titled(&s, &a, "c1", "2021-01-05", "宪法宣传").await;
    titled(&s, &b, "c1", "2021-01-05", "宪法宣传").await;

    let list = s.get("/v1/duplicates?year=2020", &street).await.expect(200);
    assert_eq!(
        pairs_of(&list),
        BTreeSet::from([ordered(&x, &y), ordered(&p, &q)]),
        "{list}"
    );
    assert_eq!(
        (&list["org"]["code"], &list["year"], &list["truncated"]),
        (&json!("s1"), &json!(2020), &json!(false))
    );
    let first = &list["pairs"][0];
    assert_eq!(
        (&first["org_unit"], &first["held_on"]),
        (&json!("c1"), &json!("2020-03-10")),
        "{first}"
    );
    assert!(
        first["name"].as_str().is_some_and(|n| !n.is_empty()),
        "{first}"
    );
    assert_eq!(first["a"]["fields"]["held_on"], "2020-03-10");
    let list = s
        .get("/v1/duplicates?year=2021&org=c1", &street)
        .await
        .expect(200);
    assert_eq!(list["count"], 1, "{list}");

    // Not a duplicate (either order names the pair): no longer listed.
    let d = s
        .json(
            Method::POST,
            "/v1/duplicates/dismiss",
            &street,
            &json!({"a": y.clone(), "b": x.clone()}),
        )
        .await
        .expect(200);
    let (lo, hi) = ordered(&x, &y);
    assert_eq!((&d["a"], &d["b"]), (&json!(lo), &json!(hi)), "{d}");
    assert_eq!(d["by"], "coordinator @ s1");
    let again = s
        .json(
            Method::POST,
            "/v1/duplicates/dismiss",
            &street,
            &json!({"a": x.clone(), "b": y.clone()}),
        )
        .await
        .expect(200);
    assert_eq!(again, d, "marking again keeps the first mark");
    let list = s.get("/v1/duplicates?year=2020", &street).await.expect(200);
    assert_eq!(pairs_of(&list), BTreeSet::from([ordered(&p, &q)]));
    // The mark is in the audit trail, and changes neither record.
    let history = s
        .get(&format!("/v1/records/{lo}/history"), &street)
        .await
        .expect(200);
    let text = history.to_string();
    assert!(
        text.contains("\"dismiss\"") && text.contains(&hi),
        "{history}"
    );

    // Deleting one of a pair: the pair goes and the figures drop by one.
    let before = lectures_of(&s, &street, "s1").await;
    let v = s
        .json(
            Method::POST,
            &format!("/v1/records/{q}/delete"),
            &street,
            &json!({}),
        )
        .await
        .expect(200);
    assert_eq!((&v["id"], &v["deleted"]), (&json!(q), &json!(true)));
    let after = lectures_of(&s, &street, "s1").await;
    assert_eq!(after.as_u64(), before.as_u64().map(|n| n - 1));
    assert!(s.record(&q).await["deleted"].as_bool().unwrap());
    let history = s
        .get(&format!("/v1/records/{q}/history"), &street)
        .await
        .expect(200);
    assert!(history.to_string().contains("\"delete\""), "{history}");
    let r = s
        .json(
            Method::POST,
            &format!("/v1/records/{q}/delete"),
            &street,
            &json!({}),
        )
        .await;
    assert_error(&r, 404, "not_found");
    let list = s.get("/v1/duplicates?year=2020", &street).await.expect(200);
    assert!(pairs_of(&list).is_empty(), "{list}");

    // The mark outlives a restart.
    let s = s.restart().await;
    let list = s.get("/v1/duplicates?year=2020", &street).await.expect(200);
    assert!(pairs_of(&list).is_empty(), "{list}");
    let list = s
        .get("/v1/duplicates?year=2020", &s.admin)
        .await
        .expect(200);
    assert!(pairs_of(&list).is_empty(), "{list}");
}

#[tokio::test]
async fn duplicates_are_scoped_and_checked() {
    skip_without_store!();
    let s = Server::new().await;
    let a = s.issue("field", "s1").await;
    let street = s.issue("coordinator", "s1").await;
    let other = s.issue("coordinator", "s2").await;
    let x = titled(&s, &a, "c1", "2020-03-10", "民法典进社区").await;
    let y = titled(&s, &a, "c1", "2020-03-10", "民法典进社区").await;

    // Another street sees nothing of s1's, and may not ask about it.
    let list = s.get("/v1/duplicates?year=2020", &other).await.expect(200);
    assert!(pairs_of(&list).is_empty(), "{list}");
    for url in [
        "/v1/duplicates?year=2020&org=s1",
        "/v1/duplicates?year=2020&org=nowhere",
    ] {
        assert_error(&s.get(url, &other).await, 403, "forbidden");
    }
    assert_error(
        &s.get("/v1/duplicates?year=2020", &a).await,
        403,
        "forbidden",
    );
    let r = s
        .get("/v1/duplicates?year=2020&org=nowhere", &s.admin)
        .await;
    assert_error(&r, 404, "not_found");
    for url in [
        "/v1/duplicates",
        "/v1/duplicates?year=20x",
        "/v1/duplicates?year=1999",
    ] {
        let r = s.get(url, &street).await;
        assert_error_field(&r, 400, "invalid_query", Some("year"));
    }

    // Marks and deletes outside the scope name nothing.
    let pair = json!({"a": x.clone(), "b": y.clone()});
    let r = s
        .json(Method::POST, "/v1/duplicates/dismiss", &other, &pair)
        .await;
    let e = assert_error(&r, 404, "not_found");
    // As for an unknown record: the pair's second id, echoed.
    let second = ordered(&x, &y).1;
    assert_eq!(
        e["message"],
        format!("no live record {second} in your scope"),
        "{e}"
    );
    let unknown = json!({"a": x.clone(), "b": new_id()});
    let r = s
        .json(Method::POST, "/v1/duplicates/dismiss", &street, &unknown)
        .await;
    assert_error(&r, 404, "not_found");
    let r = s
        .json(Method::POST, "/v1/duplicates/dismiss", &a, &pair)
        .await;
    assert_error(&r, 403, "forbidden");
    let delete = |id: String| format!("/v1/records/{id}/delete");
    for (dev, url) in [
        (&other, delete(x.clone())),
        (&street, delete(new_id())),
        (&street, delete("nope".into())),
    ] {
        let r = s.json(Method::POST, &url, dev, &json!({})).await;
        assert_error(&r, 404, "not_found");
    }
    let r = s
        .json(Method::POST, &delete(x.clone()), &a, &json!({}))
        .await;
    assert_error(&r, 403, "forbidden");

    // Bad bodies: a clear 400, nothing changed.
    for bad in [
        json!({"a": x.clone(), "b": x.clone()}),
        json!({"a": x.clone()}),
        json!({"a": "nope", "b": y.clone()}),
        json!({"a": x.clone(), "b": y.clone(), "c": 1}),
        json!([x.clone(), y.clone()]),
    ] {
        let r = s
            .json(Method::POST, "/v1/duplicates/dismiss", &street, &bad)
            .await;
        assert_error(&r, 400, "bad_json");
    }
    let list = s.get("/v1/duplicates?year=2020", &street).await.expect(200);
    assert_eq!(pairs_of(&list), BTreeSet::from([ordered(&x, &y)]));
    assert!(!s.record(&x).await["deleted"].as_bool().unwrap());
}

#[tokio::test]
async fn an_approved_period_refuses_deleting_a_duplicate() {
    skip_without_store!();
    let s = Server::new().await;
    let a = s.issue("field", "s1").await;
    let street = s.issue("coordinator", "s1").await;
    let district = s.issue("coordinator", "d").await;
    let x = titled(&s, &a, "c1", "2020-03-10", "民法典进社区").await;
    let y = titled(&s, &a, "c1", "2020-03-10", "民法典进社区讲座").await;
    period(&s, &district, "approve", "s1", "2020-Q1", None)
        .await
        .expect(200);
    let before = locked_figures(&s, &a).await;
    let r = s
        .json(
            Method::POST,
            &format!("/v1/records/{y}/delete"),
            &street,
            &json!({}),
        )
        .await;
    let e = assert_error(&r, 400, "period_locked");
    assert_eq!(e["locked"]["period"], "2020-Q1", "{e}");
    assert_eq!(locked_figures(&s, &a).await, before, "nothing changed");
    // A mark changes no figure: it is taken in a locked period.
    s.json(
        Method::POST,
        "/v1/duplicates/dismiss",
        &street,
        &json!({"a": x, "b": y.clone()}),
    )
    .await
    .expect(200);
    assert_eq!(locked_figures(&s, &a).await, before);
    period(&s, &district, "reopen", "s1", "2020-Q1", Some("删除重复"))
        .await
        .expect(200);
    s.json(
        Method::POST,
        &format!("/v1/records/{y}/delete"),
        &street,
        &json!({}),
    )
    .await
    .expect(200);
}

/// A library corner, opened on `opened_on` (none: `None`), created at
/// `ms` by `dev`.
fn corner_at(dev: &Dev, id: &str, org: &str, ms: u64, opened_on: Option<&str>) -> Value {
    let mut set = json!({"org_unit": org, "name": "法治图书角", "status": "active"});
    if let Some(d) = opened_on {
        set["opened_on"] = json!(d);
    }
    mutation(dev, id, "library_corner", 0, ms, set)
}

/// Corners per grassroots unit and in total, as a year's figures give them.
async fn corners_in(s: &Server, year: i32) -> (Vec<(String, u64)>, Value) {
    let f = s
        .get(&format!("/v1/figures?org=d&year={year}"), &s.admin)
        .await
        .expect(200);
    let units = f["grassroots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            let code = u["org"]["code"].as_str().unwrap().to_string();
            (code, u["corners_active"].as_u64().unwrap())
        })
        .collect();
    (units, f["totals"]["library_corners"].clone())
}

#[tokio::test]
async fn a_years_corners_are_those_active_at_its_end_from_their_history() {
    skip_without_store!();
    let s = Server::new().await;
    let admin = s.admin.clone();
    // Times of the edits (UTC); the server reads days in Asia/Shanghai.
    const JAN_10: u64 = 1_578_614_400_000; // 2020-01-10
    const FEB_01: u64 = 1_580_515_200_000; // 2020-02-01
    const MAR_01: u64 = 1_583_020_800_000; // 2020-03-01
    const JUN_15: u64 = 1_592_179_200_000; // 2020-06-15
    const NEW_YEAR_0030: u64 = 1_609_432_200_000; // 2021-01-01 00:30 in Shanghai
    const JAN_05_2021: u64 = 1_609_804_800_000;
    const MAR_01_2021: u64 = 1_614_556_800_000;
    let [a, b, c, d, e, f] = std::array::from_fn(|_| new_id());
    s.push(
        &admin,
        &[
            corner_at(&admin, &a, "c1", JAN_10, Some("2019-05-01")),
            corner_at(&admin, &b, "c2", FEB_01, Some("2019-01-01")),
            corner_at(&admin, &e, "v3", MAR_01, None),
            corner_at(&admin, &f, "c1", MAR_01, Some("2019-09-09")),
        ],
    )
    .await;
    // B was closed on a phone in June that synced in August.
    s.clock.set(1_597_881_600_000);
    let close = |id: &str, ms: u64| {
        mutation(
            &admin,
            id,
            "library_corner",
            1,
            ms,
            json!({"status": "closed"}),
        )
    };
    let r = s.push_one(&admin, &close(&b, JUN_15)).await;
    assert_eq!(r["status"], "applied", "{r}");
    // In 2021: F closed half an hour into the new year (Shanghai), E
    // deleted, C opened, and D, open since 2018, entered at last.
    s.clock.set(MAR_01_2021 + 86_400_000);
    let delete_e = with_delete(
        mutation(&admin, &e, "library_corner", 1, JAN_05_2021, json!({})),
        true,
    );
    s.push(
        &admin,
        &[
            close(&f, NEW_YEAR_0030),
            delete_e,
            corner_at(&admin, &c, "v3", MAR_01_2021, Some("2021-03-01")),
            corner_at(&admin, &d, "v3", MAR_01_2021, Some("2018-04-01")),
        ],
    )
    .await;
    let units = |c1, c2, v3| {
        vec![
            ("c1".to_string(), c1),
            ("c2".to_string(), c2),
            ("v3".to_string(), v3),
        ]
    };
    let totals = |active: u64, covered: u64, coverage: f64| json!({"active": active, "units_covered": covered, "units_total": 3, "coverage": coverage});
    // 2019: those opened by then, as first entered (A, B, F; D since 2018).
    assert_eq!(
        corners_in(&s, 2019).await,
        (units(2, 1, 1), totals(4, 3, 1.0))
    );
    // 2020: B closed in June; F still open on 31 December; E not yet
    // deleted; C not yet opened.
    assert_eq!(
        corners_in(&s, 2020).await,
        (units(2, 0, 2), totals(4, 2, 0.6667))
    );
    assert_eq!(
        corners_in(&s, 2021).await,
        (units(1, 0, 2), totals(3, 2, 0.6667))
    );
    let report = s
        .get("/v1/reports/annual?org=d&year=2020", &admin)
        .await
        .expect(200);
    assert_eq!(report["library_corners"], totals(4, 2, 0.6667));
    assert_eq!(
        report["units_without_corner"],
        json!([{"code": "c2", "name": "柳巷第02社区"}])
    );
    let children = s
        .get("/v1/figures?org=d&year=2020", &admin)
        .await
        .expect(200)["totals"]["children"]
        .clone();
    let per_child: Vec<(&str, u64)> = children
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["org"]["code"].as_str().unwrap(),
                c["library_corners"]["active"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(per_child, vec![("s1", 2), ("s2", 2)]);
    // Totals stay "now", whatever `to` says (the contract's §12).
    let now = s
        .get("/v1/totals?org=d&to=2020-12-31", &admin)
        .await
        .expect(200);
    assert_eq!(now["library_corners"]["active"], 3);
}
