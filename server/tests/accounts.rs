//! People's accounts and sign-in sessions (docs/protocol.md §17), as
//! router tests through `tower::ServiceExt::oneshot`: creating accounts and
//! what is refused, signing in, what a session may do (read and resolve as
//! its person) and may not (sync, be a device), expiry, disabling, a new
//! password, sign-out, and the lockout that bounds password guessing.

// The harness is shared with contract.rs, which uses more of it.
#[allow(dead_code)]
mod support;

use axum::body::Body;
use axum::http::{header, Method, Request};
use http_body_util::BodyExt as _;
use pufa_server::people::{LOGIN_FAILURES_MAX, LOGIN_WINDOW_MS, SESSION_TTL_MS};
use serde_json::{json, Value};
use support::*;
use tower::ServiceExt as _;

const PASSWORD: &str = "迎泽区 correct horse";

/// A session: its token, used like a device's.
fn as_dev(token: &str) -> Dev {
    Dev {
        token: token.to_string(),
        id: String::new(),
    }
}

/// Creates an account as the admin; asserts 201.
async fn account(s: &Server, username: &str, role: &str, org: Option<&str>) -> Value {
    let body = json!({"username": username, "password": PASSWORD, "role": role,
                      "org_unit": org, "display_name": format!("{username} 同志")});
    s.json(Method::POST, "/v1/admin/accounts", &s.admin, &body)
        .await
        .expect(201)
}

/// `POST /v1/sessions` without a token.
async fn sign_in_resp(s: &Server, username: &str, password: &str) -> Resp {
    let body = json!({"username": username, "password": password});
    s.send(
        Method::POST,
        "/v1/sessions",
        None,
        body.to_string().into_bytes(),
        Some("application/json"),
    )
    .await
}

/// Signs in; asserts 201 and returns the session as a bearer.
async fn sign_in(s: &Server, username: &str) -> Dev {
    let v = sign_in_resp(s, username, PASSWORD).await.expect(201);
    as_dev(v["token"].as_str().expect("token"))
}

/// A sign-in's status and `Retry-After` (which `Resp` does not keep).
async fn sign_in_retry_after(s: &Server, username: &str, password: &str) -> (u16, Option<u64>) {
    let body = json!({"username": username, "password": password});
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/sessions")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = s.app.clone().oneshot(req).await.unwrap();
    let retry = resp
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    (status, retry)
}

#[tokio::test]
async fn accounts_are_checked_when_created_and_listed_without_hashes() {
    let s = Server::new().await;
    let post = |body: Value| {
        let s = &s;
        async move {
            s.json(Method::POST, "/v1/admin/accounts", &s.admin, &body)
                .await
        }
    };
    let base =
        json!({"username": "wang", "password": PASSWORD, "role": "coordinator", "org_unit": "s1"});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    for bad in ["", "Wang", "wang li", "王", &"a".repeat(65)] {
        let r = post(with("username", json!(bad))).await;
        assert_error_field(&r, 400, "invalid_field", Some("username"));
    }
    let r = post(with("password", json!("short"))).await;
    assert_error_field(&r, 400, "invalid_field", Some("password"));
    let r = post(with("password", json!("x".repeat(1025)))).await;
    assert_error_field(&r, 400, "invalid_field", Some("password"));
    // Counted in characters, not bytes: twelve Chinese characters will do.
    post(with("password", json!("一二三四五六七八九十百千")))
        .await
        .expect(201);
    let r =
        post(json!({"username": "li", "password": PASSWORD, "role": "field", "org_unit": "s1"}))
            .await;
    assert_error_field(&r, 400, "invalid_field", Some("role"));
    let r = post(json!({"username": "li", "password": PASSWORD, "role": "coordinator"})).await;
    assert_error_field(&r, 400, "missing_field", Some("org_unit"));
    let r = post(
        json!({"username": "li", "password": PASSWORD, "role": "coordinator", "org_unit": "zz"}),
    )
    .await;
    assert_error_field(&r, 400, "unknown_org_unit", Some("org_unit"));
    let r = post(json!({"username": "li", "role": "admin"})).await;
    assert_error(&r, 400, "bad_json");
    let r = post(with("username", json!("wang"))).await;
    assert_error_field(&r, 409, "already_exists", Some("username"));

    let made = account(&s, "root", "admin", None).await;
    assert_eq!(
        made,
        json!({"username": "root", "display_name": "root 同志", "role": "admin",
               "org_unit": null, "disabled": false, "created_ms": T0})
    );
    let list = s.get("/v1/admin/accounts", &s.admin).await;
    let text = String::from_utf8(list.body.clone()).unwrap();
    assert!(
        !text.contains("argon2") && !text.contains("password"),
        "no hashes in the list: {text}"
    );
    let names: Vec<_> = list
        .expect(200)
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["username"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["root", "wang"]);
}

#[tokio::test]
async fn a_session_reads_and_resolves_as_its_person_but_never_syncs() {
    let s = Server::new().await;
    account(&s, "wang", "coordinator", Some("s1")).await;
    let v = sign_in_resp(&s, "Wang ", PASSWORD).await.expect(201);
    assert_eq!(
        (&v["expires_ms"], &v["role"], &v["org_unit"], &v["username"]),
        (
            &json!(T0 + SESSION_TTL_MS),
            &json!("coordinator"),
            &json!("s1"),
            &json!("wang")
        ),
        "{v}"
    );
    let token = v["token"].as_str().unwrap();
    assert!(token.starts_with("pufa_"), "{token}");
    let me = as_dev(token);

    let who = s.get("/v1/whoami", &me).await.expect(200);
    assert_eq!(
        (&who["username"], &who["label"]),
        (&json!("wang"), &json!("wang 同志"))
    );

    // Two field devices make a conflict in s1; the person resolves it.
    let a = s.issue("field", "s1").await;
    let b = s.issue("field", "s1").await;
    let rec = new_id();
    let m = lecture(&a, &rec, "c1", "2020-06-01", 87);
    assert_applied(&s.push_one(&a, &m).await, &m);
    let ma = mutation(&a, &rec, "lecture", 1, T0 + 10, json!({"attendees": 90}));
    let mb = mutation(&b, &rec, "lecture", 1, T0 + 5, json!({"attendees": 88}));
    s.push_one(&a, &ma).await;
    s.push_one(&b, &mb).await;

    let totals = s.get("/v1/totals", &me).await.expect(200);
    assert_eq!(totals["org"]["code"], "s1");
    assert_eq!(totals["lectures"]["attendees"], 90);
    let conflicts = s.get("/v1/conflicts", &me).await.expect(200);
    let id = conflicts[0]["id"]
        .as_str()
        .expect("one conflict")
        .to_string();
    let r = s
        .json(
            Method::POST,
            &format!("/v1/conflicts/{id}/resolve"),
            &me,
            &json!({"value": 89}),
        )
        .await
        .expect(200);
    assert_eq!(r["fields"]["attendees"], 89);
    // The audit trail names the person, not a device.
    let h = s
        .get(&format!("/v1/records/{rec}/history"), &me)
        .await
        .expect(200);
    let last = h.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["cause"], "resolve", "{last}");
    assert_eq!(last["actor"], "wang", "{last}");
    assert!(last["device_id"].is_null(), "{last}");
    // Scope is the person's: another street is refused.
    assert_error(&s.get("/v1/totals?org=s2", &me).await, 403, "forbidden");

    // Not a device: no sync, and not listed among devices.
    let push = json!({"device_id": who["device_id"], "mutations": []});
    assert_error(&s.push_body(&me, &push).await, 403, "forbidden");
    assert_error(&s.get("/v1/sync/pull?since=0", &me).await, 403, "forbidden");
    assert_error(&s.get("/v1/sync/checksum", &me).await, 403, "forbidden");
    let devices = s.get("/v1/devices", &s.admin).await.expect(200);
    assert_eq!(
        devices.as_array().unwrap().len(),
        3,
        "admin, a, b: {devices}"
    );
    assert!(devices
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["device_id"] != who["device_id"]));
    let mine = s.get("/v1/devices", &me).await.expect(200);
    assert_eq!(mine.as_array().unwrap().len(), 2, "{mine}");
}

#[tokio::test]
async fn sessions_expire_and_sign_out_ends_them() {
    let s = Server::new().await;
    account(&s, "wang", "coordinator", Some("s1")).await;
    let me = sign_in(&s, "wang").await;
    s.clock.advance(SESSION_TTL_MS - 1);
    s.get("/v1/whoami", &me).await.expect(200);
    s.clock.advance(1);
    assert_error(&s.get("/v1/whoami", &me).await, 401, "unauthorized");

    let me = sign_in(&s, "wang").await;
    s.get("/v1/totals", &me).await.expect(200);
    s.send(
        Method::DELETE,
        "/v1/sessions/current",
        Some(&bearer(&me)),
        Vec::new(),
        None,
    )
    .await
    .expect(204);
    assert_error(&s.get("/v1/totals", &me).await, 401, "unauthorized");
    // A device token has no session to end.
    let r = s
        .send(
            Method::DELETE,
            "/v1/sessions/current",
            Some(&bearer(&s.admin)),
            Vec::new(),
            None,
        )
        .await;
    assert_error(&r, 403, "forbidden");
    s.get("/v1/whoami", &s.admin).await.expect(200);
}

#[tokio::test]
async fn disabling_or_a_new_password_ends_sessions() {
    let s = Server::new().await;
    account(&s, "wang", "coordinator", Some("s1")).await;
    let patch = |body: Value| {
        let s = &s;
        async move {
            s.json(Method::PATCH, "/v1/admin/accounts/wang", &s.admin, &body)
                .await
        }
    };
    let me = sign_in(&s, "wang").await;
    let v = patch(json!({"disabled": true})).await.expect(200);
    assert_eq!(v["disabled"], true);
    assert_error(&s.get("/v1/totals", &me).await, 401, "unauthorized");
    // The right password on a disabled account: told so, no session.
    assert_error(&sign_in_resp(&s, "wang", PASSWORD).await, 403, "forbidden");
    patch(json!({"disabled": false})).await.expect(200);
    assert_error(&s.get("/v1/totals", &me).await, 401, "unauthorized");

    let me = sign_in(&s, "wang").await;
    let other = sign_in(&s, "wang").await;
    patch(json!({"password": "a brand new passphrase"}))
        .await
        .expect(200);
    for old in [&me, &other] {
        assert_error(&s.get("/v1/totals", old).await, 401, "unauthorized");
    }
    assert_error(
        &sign_in_resp(&s, "wang", PASSWORD).await,
        401,
        "unauthorized",
    );
    sign_in_resp(&s, "wang", "a brand new passphrase")
        .await
        .expect(201);

    // Role and unit changes apply to live sessions at once.
    let me = sign_in_resp(&s, "wang", "a brand new passphrase")
        .await
        .expect(201);
    let me = as_dev(me["token"].as_str().unwrap());
    assert_error(&s.get("/v1/totals?org=s2", &me).await, 403, "forbidden");
    patch(json!({"org_unit": "d"})).await.expect(200);
    s.get("/v1/totals?org=s2", &me).await.expect(200);

    // What a patch checks.
    let r = patch(json!({"password": "short"})).await;
    assert_error_field(&r, 400, "invalid_field", Some("password"));
    let r = patch(json!({"role": "field"})).await;
    assert_error_field(&r, 400, "invalid_field", Some("role"));
    let r = patch(json!({"org_unit": "zz"})).await;
    assert_error_field(&r, 400, "unknown_org_unit", Some("org_unit"));
    let r = s
        .json(
            Method::PATCH,
            "/v1/admin/accounts/nobody",
            &s.admin,
            &json!({"disabled": true}),
        )
        .await;
    assert_error(&r, 404, "not_found");
}

#[tokio::test]
async fn lockout_after_failures_refuses_even_the_right_password_until_the_window_passes() {
    let s = Server::new().await;
    account(&s, "wang", "coordinator", Some("s1")).await;
    account(&s, "li", "coordinator", Some("s1")).await;
    for _ in 0..LOGIN_FAILURES_MAX {
        assert_eq!(
            sign_in_retry_after(&s, "wang", "wrong password!").await,
            (401, None)
        );
        s.clock.advance(1000);
    }
    let (status, retry) = sign_in_retry_after(&s, "wang", PASSWORD).await;
    assert_eq!(status, 429);
    let retry = retry.expect("Retry-After");
    let first_failure_frees_at = LOGIN_WINDOW_MS - LOGIN_FAILURES_MAX as u64 * 1000;
    assert_eq!(retry, first_failure_frees_at.div_ceil(1000));
    let r = sign_in_resp(&s, "Wang", PASSWORD).await;
    let err = assert_error(&r, 429, "rate_limited");
    assert!(err["message"].as_str().unwrap().contains("min"), "{err}");
    // Only that username is locked.
    sign_in(&s, "li").await;

    s.clock.advance(first_failure_frees_at - 1);
    assert_eq!(sign_in_retry_after(&s, "wang", PASSWORD).await.0, 429);
    s.clock.advance(1);
    sign_in(&s, "wang").await;
}

/// Sign-ins released together get no more guesses than sign-ins sent one
/// by one: every attempt is counted before its password is checked, so of
/// 20 wrong passwords in flight at once only the first
/// `LOGIN_FAILURES_MAX` are checked, and the right password sent with
/// them, last, is refused like the rest.
#[tokio::test]
async fn sign_ins_sent_at_once_get_no_more_guesses_than_sign_ins_one_by_one() {
    let s = Server::new().await;
    account(&s, "wang", "coordinator", Some("s1")).await;
    let mut passwords = vec!["wrong password!"; 20];
    passwords.push(PASSWORD);
    let answers = futures_util::future::join_all(
        passwords.iter().map(|p| sign_in_retry_after(&s, "wang", p)),
    )
    .await;
    let checked = answers.iter().filter(|(status, _)| *status == 401).count();
    assert_eq!(checked, LOGIN_FAILURES_MAX, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|(status, retry)| *status == 401 || (*status == 429 && retry.is_some())),
        "{answers:?}"
    );
    assert_eq!(
        answers.last().unwrap().0,
        429,
        "the right password got through"
    );
    // And it stays locked for the right password afterwards.
    assert_eq!(sign_in_retry_after(&s, "wang", PASSWORD).await.0, 429);
}

/// More sign-ins than the hashing queue holds: those past it are told at
/// once to come back (`429`, `Retry-After`), not made to wait; and a name
/// that cannot be a username costs no hashing at all (all 200 answered
/// 401 with the queue never full).
#[tokio::test]
async fn a_flood_of_sign_ins_is_told_to_come_back_instead_of_queueing() {
    use pufa_server::people::{PASSWORD_HASH_QUEUE_MAX, PASSWORD_HASH_RETRY_SECS};
    let s = Server::new().await;
    account(&s, "wang", "coordinator", Some("s1")).await;
    let names: Vec<String> = (0..PASSWORD_HASH_QUEUE_MAX * 2)
        .map(|i| format!("guess{i}"))
        .collect();
    let answers = futures_util::future::join_all(
        names
            .iter()
            .map(|n| sign_in_retry_after(&s, n, "wrong password!")),
    )
    .await;
    let busy = answers
        .iter()
        .filter(|a| **a == (429, Some(PASSWORD_HASH_RETRY_SECS)))
        .count();
    let checked = answers.iter().filter(|a| a.0 == 401).count();
    assert_eq!(busy + checked, answers.len(), "{answers:?}");
    assert!(busy >= PASSWORD_HASH_QUEUE_MAX / 2, "{answers:?}");
    assert!(checked >= PASSWORD_HASH_QUEUE_MAX, "{answers:?}");
    // Names no account can have are refused before the queue.
    let bad: Vec<String> = (0..200).map(|i| format!("无效 {i}")).collect();
    let answers =
        futures_util::future::join_all(bad.iter().map(|n| sign_in_retry_after(&s, n, "x"))).await;
    assert!(answers.iter().all(|a| *a == (401, None)), "{answers:?}");
    // The queue empties: the real person signs in.
    sign_in(&s, "wang").await;
}

#[tokio::test]
async fn an_unknown_username_fails_exactly_like_a_wrong_password() {
    let s = Server::new().await;
    account(&s, "wang", "coordinator", Some("s1")).await;
    let wrong = sign_in_resp(&s, "wang", "wrong password!").await;
    let unknown = sign_in_resp(&s, "zhao", "wrong password!").await;
    let malformed = sign_in_resp(&s, "no such user!", "wrong password!").await;
    assert_error(&wrong, 401, "unauthorized");
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(wrong.body, malformed.body);
    // Unknown usernames lock out too, so a lockout reveals nothing either.
    for _ in 1..LOGIN_FAILURES_MAX {
        sign_in_resp(&s, "zhao", "wrong password!").await;
    }
    assert_error(&sign_in_resp(&s, "zhao", "x").await, 429, "rate_limited");
    // A wrong shape is still bad_json.
    let r = s
        .send(
            Method::POST,
            "/v1/sessions",
            None,
            b"{\"username\":1}".to_vec(),
            None,
        )
        .await;
    assert_error(&r, 400, "bad_json");
}

#[tokio::test]
async fn admin_endpoints_refuse_coordinators_and_admin_sessions_may_use_them() {
    let s = Server::new().await;
    account(&s, "wang", "coordinator", Some("d")).await;
    account(&s, "root", "admin", None).await;
    let coord_session = sign_in(&s, "wang").await;
    let coord_device = s.issue("coordinator", "d").await;
    let new =
        json!({"username": "li", "password": PASSWORD, "role": "coordinator", "org_unit": "s1"});
    for who in [&coord_session, &coord_device] {
        let r = s.json(Method::POST, "/v1/admin/accounts", who, &new).await;
        assert_error(&r, 403, "forbidden");
        assert_error(&s.get("/v1/admin/accounts", who).await, 403, "forbidden");
        let r = s
            .json(
                Method::PATCH,
                "/v1/admin/accounts/wang",
                who,
                &json!({"org_unit": "s1"}),
            )
            .await;
        assert_error(&r, 403, "forbidden");
        let token = json!({"role": "field", "org_unit": "s1"});
        let r = s.json(Method::POST, "/v1/admin/tokens", who, &token).await;
        assert_error(&r, 403, "forbidden");
    }
    let field = s.issue("field", "s1").await;
    assert_error(&s.get("/v1/admin/accounts", &field).await, 403, "forbidden");
    assert_error(
        &s.send(Method::GET, "/v1/admin/accounts", None, Vec::new(), None)
            .await,
        401,
        "unauthorized",
    );

    let root = sign_in(&s, "root").await;
    s.json(Method::POST, "/v1/admin/accounts", &root, &new)
        .await
        .expect(201);
    let token = json!({"role": "field", "org_unit": "s1", "label": "by a person"});
    s.json(Method::POST, "/v1/admin/tokens", &root, &token)
        .await
        .expect(201);
}

#[tokio::test]
async fn accounts_and_sessions_survive_a_restart() {
    let s = Server::new().await;
    account(&s, "wang", "coordinator", Some("s1")).await;
    let me = sign_in(&s, "wang").await;
    let s = s.restart().await;
    s.get("/v1/totals", &me).await.expect(200);
    sign_in(&s, "wang").await;
}
