//! Scope on every endpoint: a token scoped to one street never reads or
//! writes anything of another street — through records, pulls, checksums,
//! totals, figures, reports, drill-downs, exports, conflicts, rejections,
//! devices, org units or the dashboard — and a field token reads no
//! coordinator views at all.
//!
//! The other street's data is planted with recognisable markers (record
//! ids, device ids, a unit code and name, a title); every answer a street-1
//! token gets is searched for them, so a new leak through any field of any
//! answer fails here.

#[allow(dead_code)]
mod support;

use axum::http::{header, Method};
use serde_json::{json, Value};
use support::*;

/// What belongs to street s2 and must never reach s1's tokens.
struct Secrets {
    markers: Vec<String>,
}

impl Secrets {
    #[track_caller]
    fn assert_absent(&self, what: &str, body: &[u8]) {
        let text = String::from_utf8_lossy(body);
        for m in &self.markers {
            assert!(
                !text.contains(m.as_str()),
                "{what} leaks {m:?} of another street: {text}"
            );
        }
    }
}

/// A request with arbitrary headers (the dashboard's cookie and forms).
async fn send_with_headers(
    s: &Server,
    method: Method,
    path: &str,
    headers: &[(header::HeaderName, String)],
    body: Vec<u8>,
) -> Resp {
    let mut req = axum::http::Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    s.request(req.body(axum::body::Body::from(body)).expect("request"))
        .await
}

struct World {
    s: Server,
    /// Field device in s1, coordinator at s1, field device in s2, admin-made
    /// coordinator at s2.
    f1: Dev,
    c1: Dev,
    f2: Dev,
    c2: Dev,
    secrets: Secrets,
    /// An open conflict of s2.
    conflict_s2: String,
}

async fn world() -> World {
    let s = Server::new().await;
    let f1 = s.issue("field", "s1").await;
    let c1 = s.issue("coordinator", "s1").await;
    let f2 = s.issue("field", "s2").await;
    let g2 = s.issue("field", "s2").await;
    let c2 = s.issue("coordinator", "s2").await;

    // Street 1: ordinary records, one of each kind.
    s.push(
        &f1,
        &[
            lecture(&f1, &new_id(), "c1", "2020-03-01", 40),
            corner(&f1, &new_id(), "c2", "active"),
            site(&f1, &new_id(), "c1", "provincial", "awarded", 2020),
            understander(&f1, &new_id(), "c1", "2020-03-01", "serving", None),
        ],
    )
    .await;

    // Street 2: records with a recognisable title, a conflict, a rejection.
    let rec = new_id();
    let mut l = lecture(&f2, &rec, "v3", "2020-05-01", 77);
    l["set"]["title"] = json!("机密标题XJ");
    l["set"]["topics"] = json!(["专属主题QZ"]);
    let seq = assert_applied(&s.push_one(&f2, &l).await, &l);
    let m = mutation(&g2, &rec, "lecture", seq, T0 + 10, json!({"attendees": 78}));
    assert_applied(&s.push_one(&g2, &m).await, &m);
    let m = mutation(&f2, &rec, "lecture", seq, T0 + 5, json!({"attendees": 79}));
    s.push_one(&f2, &m).await;
    let corner_s2 = new_id();
    let mut person = understander(&f2, &new_id(), "v3", "2020-04-01", "serving", None);
    person["set"]["name"] = json!("二街道明白人MB");
    s.push(
        &f2,
        &[
            corner(&f2, &corner_s2, "v3", "active"),
            site(&f2, &new_id(), "v3", "municipal", "awarded", 2020),
            person,
        ],
    )
    .await;
    // A rejected push (unknown unit) from s2.
    let bad = lecture(&f2, &new_id(), "nowhere", "2020-05-02", 1);
    s.push_one(&f2, &bad).await;

    // An open enrolment code of s2.
    let code = s
        .json(
            Method::POST,
            "/v1/enrollment-codes",
            &c2,
            &json!({"role": "field", "org_unit": "v3", "label": "二街道码LB"}),
        )
        .await
        .expect(201);
    let code_id = code["id"].as_str().expect("code id").to_string();
    let admin = s.admin.clone();
    let conflicts = s.get("/v1/conflicts", &admin).await.expect(200);
    let conflict_s2 = conflicts[0]["id"].as_str().expect("a conflict").to_string();
    let secrets = Secrets {
        markers: vec![
            rec.clone(),
            corner_s2,
            f2.id.clone(),
            g2.id.clone(),
            c2.id.clone(),
            conflict_s2.clone(),
            "\"v3\"".into(),
            "郝庄村".into(),
            "庙前街道".into(),
            "机密标题XJ".into(),
            "专属主题QZ".into(),
            "nowhere".into(),
            "二街道码LB".into(),
            "二街道明白人MB".into(),
            code_id,
        ],
    };
    World {
        s,
        f1,
        c1,
        f2,
        c2,
        secrets,
        conflict_s2,
    }
}

/// Every read a coordinator can make, without `org=` (its own scope).
const COORDINATOR_READS: &[&str] = &[
    "/v1/whoami",
    "/v1/org-units",
    "/v1/sync/pull?since=0",
    "/v1/sync/checksum",
    "/v1/totals",
    "/v1/totals?from=2020-01-01&to=2020-12-31",
    "/v1/conflicts",
    "/v1/devices",
    "/v1/rejections",
    "/v1/figures?year=2020",
    "/v1/reports/annual?year=2020",
    "/v1/reports/annual?year=2020&format=text",
    "/v1/records?figure=lectures",
    "/v1/records?figure=corners_active",
    "/v1/records?figure=sites_awarded",
    "/v1/records?figure=understanders_appointed",
    "/v1/records?figure=understanders_serving",
    "/v1/records?figure=records&kind=lecture&include_deleted=true",
    "/v1/records?figure=records&kind=library_corner&include_deleted=true",
    "/v1/records?figure=records&kind=demo_site&include_deleted=true",
    "/v1/records?figure=records&kind=legal_understander&include_deleted=true",
    "/v1/exports/lecture.csv",
    "/v1/exports/library_corner.csv",
    "/v1/exports/demo_site.csv",
    "/v1/exports/legal_understander.csv",
    "/v1/exports/legal_understander.csv?include=phone",
    "/v1/exports/totals.csv",
    "/v1/enrollment-codes",
];

#[tokio::test]
async fn a_street_coordinator_reads_nothing_of_another_street() {
    let w = world().await;
    for path in COORDINATOR_READS {
        let r = w.s.get(path, &w.c1).await;
        assert_eq!(
            r.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        w.secrets.assert_absent(path, &r.body);
    }
    // The markers are real: the other street's coordinator sees each of
    // them somewhere in the same reads (so the searches above can fail).
    let mut seen = String::new();
    for path in COORDINATOR_READS {
        seen.push_str(&String::from_utf8_lossy(&w.s.get(path, &w.c2).await.body));
    }
    for m in &w.secrets.markers {
        if m != &w.c2.id {
            assert!(seen.contains(m.as_str()), "marker {m:?} never shown to s2");
        }
    }
    let own = w.s.get("/v1/exports/lecture.csv", &w.c1).await;
    assert!(String::from_utf8_lossy(&own.body).contains("柳巷"));
    // Naming the other street, or a unit in it, is refused everywhere.
    for org in ["s2", "v3", "d"] {
        for base in [
            "/v1/totals",
            "/v1/conflicts",
            "/v1/devices",
            "/v1/rejections",
            "/v1/figures?year=2020",
            "/v1/reports/annual?year=2020",
            "/v1/records?figure=lectures",
            "/v1/exports/lecture.csv",
            "/v1/exports/totals.xlsx",
            "/v1/enrollment-codes",
        ] {
            let sep = if base.contains('?') { '&' } else { '?' };
            let path = format!("{base}{sep}org={org}");
            let r = w.s.get(&path, &w.c1).await;
            assert_error(&r, 403, "forbidden");
            w.secrets.assert_absent(&path, &r.body);
        }
    }
}

#[tokio::test]
async fn a_field_token_reads_only_its_records_and_no_coordinator_views() {
    let w = world().await;
    for path in [
        "/v1/org-units",
        "/v1/sync/pull?since=0",
        "/v1/sync/checksum",
    ] {
        let r = w.s.get(path, &w.f1).await;
        assert_eq!(r.status, 200, "{path}");
        w.secrets.assert_absent(path, &r.body);
    }
    for path in COORDINATOR_READS.iter().filter(|p| {
        !p.starts_with("/v1/whoami")
            && !p.starts_with("/v1/org-units")
            && !p.starts_with("/v1/sync/")
    }) {
        let r = w.s.get(path, &w.f1).await;
        assert_error(&r, 403, "forbidden");
    }
    // The checksum counts only its own street's four records.
    let sum = w.s.get("/v1/sync/checksum", &w.f1).await.expect(200);
    assert_eq!(sum["count"], 4);
}

/// §6 rule 2 (amended): an edit of another street's record is
/// `out_of_scope` before its kind and fields are judged, and neither the
/// answer nor the listed rejection says anything of that record (its kind,
/// unit, fields or devices), whatever else is wrong with the edit.
#[tokio::test]
async fn a_rejection_reveals_nothing_of_a_record_outside_the_scope() {
    let w = world().await;
    let s2_record =
        w.s.get("/v1/records?figure=lectures&org=s2", &w.c2)
            .await
            .expect(200)["records"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
    let edits = [
        // Was kind_mismatch "record … is a lecture".
        ("demo_site", json!({"year": 2020})),
        ("library_corner", json!({"books": 3})),
        ("legal_understander", json!({"phone": "13900000000"})),
        // Was invalid_field / unknown_field.
        ("lecture", json!({"attendees": -1})),
        ("lecture", json!({"colour": "red"})),
        // Was out_of_scope naming the record's unit "v3".
        ("lecture", json!({"org_unit": "c1"})),
        ("lecture", json!({"title": null})),
    ];
    let mut pushed = vec![];
    for (i, (kind, set)) in edits.into_iter().enumerate() {
        let m = mutation(&w.f1, &s2_record, kind, 0, T0 + 60 + i as u64, set);
        let got = w.s.push_one(&w.f1, &m).await;
        let err = assert_rejected(&got, &m, "out_of_scope");
        assert_eq!(err["field"], "org_unit", "{got}");
        let text = got.to_string();
        for secret in [
            "\"v3\"",
            "郝庄村",
            "庙前街道",
            "lecture",
            "机密标题XJ",
            &w.f2.id,
        ] {
            assert!(
                !text.contains(secret),
                "{kind}: the answer names {secret}: {text}"
            );
        }
        pushed.push(m["id"].as_str().unwrap().to_string());
    }
    // Listed for s1's coordinator: the edits as pushed, nothing more.
    let listed = w.s.get("/v1/rejections", &w.c1).await.expect(200);
    let ours: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| pushed.iter().any(|id| r.to_string().contains(id.as_str())))
        .collect();
    assert_eq!(ours.len(), pushed.len(), "{listed}");
    for r in ours {
        assert_eq!(r["error"]["code"], "out_of_scope", "{r}");
        let text = r.to_string();
        for secret in ["\"v3\"", "郝庄村", "庙前街道", "机密标题XJ", &w.f2.id] {
            assert!(!text.contains(secret), "the listing names {secret}: {text}");
        }
        assert!(
            !r["error"]["message"].as_str().unwrap().contains("lecture"),
            "{r}"
        );
    }
}

#[tokio::test]
async fn writes_outside_the_scope_change_nothing() {
    let w = world().await;
    let admin = w.s.admin.clone();
    let before = w.s.get("/v1/sync/checksum", &admin).await.expect(200);
    // A field device of s1 creating a record in s2, or moving its own there.
    let m = lecture(&w.f1, &new_id(), "v3", "2020-06-01", 5);
    assert_rejected(&w.s.push_one(&w.f1, &m).await, &m, "out_of_scope");
    // Editing s2's record by id from s1: out of scope too.
    let s2_record =
        w.s.get("/v1/records?figure=lectures&org=s2", &w.c2)
            .await
            .expect(200)["records"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
    let m = mutation(
        &w.f1,
        &s2_record,
        "lecture",
        0,
        T0 + 50,
        json!({"attendees": 1}),
    );
    assert_rejected(&w.s.push_one(&w.f1, &m).await, &m, "out_of_scope");
    // Its history is not readable from s1 either (as if it did not exist),
    // nor is a backup of everything.
    let r =
        w.s.get(&format!("/v1/records/{s2_record}/history"), &w.c1)
            .await;
    assert_error(&r, 404, "not_found");
    // (It echoes the id the caller sent, and nothing else.)
    assert!(!String::from_utf8_lossy(&r.body).contains("机密标题XJ"));
    let own =
        w.s.get(&format!("/v1/records/{s2_record}/history"), &w.c2)
            .await;
    assert!(
        own.expect(200).to_string().contains("机密标题XJ"),
        "s2 sees its history"
    );
    assert_error(&w.s.get("/v1/admin/backup", &w.c1).await, 403, "forbidden");
    // A coordinator of s1 resolving s2's conflict: not found in its scope.
    let path = format!("/v1/conflicts/{}/resolve", w.conflict_s2);
    let r =
        w.s.json(Method::POST, &path, &w.c1, &json!({"value": 1}))
            .await;
    assert_error(&r, 404, "not_found");
    // Through the dashboard's form as well (the session is s1's coordinator).
    let csrf = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(format!("pufa-csrf:{}", w.c1.token)))
    };
    let form = format!("csrf={csrf}&choice=custom&custom=1&textual=1");
    let resp = send_with_headers(
        &w.s,
        Method::POST,
        &format!("/conflicts/{}/resolve", w.conflict_s2),
        &[
            (header::COOKIE, format!("pufa_session={}", w.c1.token)),
            (
                header::CONTENT_TYPE,
                "application/x-www-form-urlencoded".to_string(),
            ),
        ],
        form.into_bytes(),
    )
    .await;
    assert_ne!(
        resp.status.as_u16(),
        200,
        "{}",
        String::from_utf8_lossy(&resp.body)
    );
    assert!(!resp.status.is_server_error());
    // Nothing changed: the checksum, and the conflict is still open.
    let after = w.s.get("/v1/sync/checksum", &admin).await.expect(200);
    assert_eq!(before, after);
    let open = w.s.get("/v1/conflicts", &w.c2).await.expect(200);
    assert_eq!(open[0]["id"], w.conflict_s2.as_str());
    // Field devices cannot resolve or administer at all.
    let r =
        w.s.json(Method::POST, &path, &w.f2, &json!({"value": 1}))
            .await;
    assert_error(&r, 403, "forbidden");
}

#[tokio::test]
async fn the_dashboard_shows_a_street_coordinator_only_its_street() {
    let w = world().await;
    let cookie = format!("pufa_session={}", w.c1.token);
    for path in [
        "/",
        "/?from=&to=",
        "/report?year=2020",
        "/coverage?year=2020",
        "/records?figure=lectures",
        "/records?figure=records&kind=library_corner",
        "/conflicts",
        "/rejections",
        "/devices",
        "/export/lecture.csv?figure=records",
        "/export/totals.csv",
    ] {
        let r = send_with_headers(
            &w.s,
            Method::GET,
            path,
            &[(header::COOKIE, cookie.clone())],
            vec![],
        )
        .await;
        assert_eq!(
            r.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        w.secrets.assert_absent(path, &r.body);
    }
    for path in [
        "/?org=s2",
        "/report?org=v3",
        "/coverage?org=s2",
        "/records?org=s2&figure=lectures",
        "/conflicts?org=s2",
        "/export/lecture.csv?org=s2",
    ] {
        let r = send_with_headers(
            &w.s,
            Method::GET,
            path,
            &[(header::COOKIE, cookie.clone())],
            vec![],
        )
        .await;
        assert_eq!(r.status, 403, "{path}");
        w.secrets.assert_absent(path, &r.body);
    }
}

#[tokio::test]
async fn a_persons_session_has_its_accounts_scope_and_never_syncs() {
    let w = world().await;
    let password = "correct horse battery staple";
    w.s.json(
        Method::POST,
        "/v1/admin/accounts",
        &w.s.admin,
        &json!({"username": "wang", "password": password, "role": "coordinator", "org_unit": "s1"}),
    )
    .await
    .expect(201);
    let signed =
        w.s.send(
            Method::POST,
            "/v1/sessions",
            None,
            json!({"username": "wang", "password": password})
                .to_string()
                .into_bytes(),
            Some("application/json"),
        )
        .await
        .expect(201);
    let session = Dev {
        token: signed["token"].as_str().expect("token").to_string(),
        id: String::new(),
    };
    for path in COORDINATOR_READS
        .iter()
        .filter(|p| !p.starts_with("/v1/sync/"))
    {
        let r = w.s.get(path, &session).await;
        assert_eq!(
            r.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        w.secrets.assert_absent(path, &r.body);
    }
    let r = w.s.get("/v1/totals?org=s2", &session).await;
    assert_error(&r, 403, "forbidden");
    // A person is not a device: no pull, no checksum, no push.
    for path in ["/v1/sync/pull?since=0", "/v1/sync/checksum"] {
        assert_error(&w.s.get(path, &session).await, 403, "forbidden");
    }
    let body = json!({"device_id": w.f1.id, "mutations": []});
    let r =
        w.s.json(Method::POST, "/v1/sync/push", &session, &body)
            .await;
    assert_error(&r, 403, "forbidden");
}
