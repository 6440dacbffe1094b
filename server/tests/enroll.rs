//! Enrolment codes (docs/protocol.md §17): who may make one for which unit
//! and role, redeeming it once at `/v1/enroll` however it is typed, expiry,
//! the list and withdrawal, and the throttle on failed attempts. Router
//! tests through `tower::ServiceExt::oneshot`.

// The harness is shared with contract.rs, which uses more of it.
#[allow(dead_code)]
mod support;

use axum::body::Body;
use axum::http::{header, Method, Request};
use http_body_util::BodyExt as _;
use pufa_server::enrol::{CODE_ALPHABET, CODE_TTL_SECS_DEFAULT};
use pufa_server::limits::RateLimit;
use serde_json::{json, Value};
use support::*;
use tower::ServiceExt as _;

const INVALID: &str = "invalid or expired enrolment code";

async fn make_code(s: &Server, by: &Dev, body: Value) -> Resp {
    s.json(Method::POST, "/v1/enrollment-codes", by, &body)
        .await
}

/// A field code for `org` made by `by`; asserts 201.
async fn code_for(s: &Server, by: &Dev, org: &str) -> Value {
    make_code(
        s,
        by,
        json!({"role": "field", "org_unit": org, "label": "柳巷 手机"}),
    )
    .await
    .expect(201)
}

async fn enroll(s: &Server, body: Value) -> Resp {
    s.send(
        Method::POST,
        "/v1/enroll",
        None,
        body.to_string().into_bytes(),
        Some("application/json"),
    )
    .await
}

fn dev_of(issued: &Value) -> Dev {
    Dev {
        token: issued["token"].as_str().expect("token").to_string(),
        id: issued["device_id"].as_str().expect("device_id").to_string(),
    }
}

#[track_caller]
fn assert_invalid_code(r: &Resp) {
    let err = assert_error(r, 401, "unauthorized");
    assert_eq!(err["message"], INVALID);
}

#[tokio::test]
async fn a_coordinator_makes_codes_for_field_devices_in_scope_only() {
    let s = Server::new().await;
    let coord = s.issue("coordinator", "s1").await;
    let v = code_for(&s, &coord, "c1").await;
    let code = v["code"].as_str().unwrap();
    let (a, b) = code.split_once('-').expect("XXXX-XXXX");
    assert_eq!((a.len(), b.len()), (4, 4), "{code}");
    assert!(
        (a.to_string() + b)
            .bytes()
            .all(|c| CODE_ALPHABET.contains(&c)),
        "{code}"
    );
    assert_eq!(
        (&v["expires_ms"], &v["role"], &v["org_unit"], &v["label"]),
        (
            &json!(T0 + CODE_TTL_SECS_DEFAULT * 1000),
            &json!("field"),
            &json!("c1"),
            &json!("柳巷 手机")
        ),
        "{v}"
    );
    assert!(uuid::Uuid::parse_str(v["id"].as_str().unwrap()).is_ok());
    // The unit itself and below are in scope; others, and unknown ones, not.
    code_for(&s, &coord, "s1").await;
    for org in ["s2", "v3", "d", "zz"] {
        let r = make_code(&s, &coord, json!({"role": "field", "org_unit": org})).await;
        assert_error(&r, 403, "forbidden");
    }
    for role in ["coordinator", "admin"] {
        let r = make_code(&s, &coord, json!({"role": role, "org_unit": "c1"})).await;
        assert_error(&r, 403, "forbidden");
    }
    let field = s.issue("field", "s1").await;
    assert_error(
        &make_code(&s, &field, json!({"role": "field", "org_unit": "c1"})).await,
        403,
        "forbidden",
    );
    // The lifetime: at most seven days.
    let r = make_code(
        &s,
        &coord,
        json!({"role": "field", "org_unit": "c1", "ttl_secs": 7 * 86400 + 1}),
    )
    .await;
    assert_error_field(&r, 400, "bad_json", Some("ttl_secs"));
    let r = make_code(
        &s,
        &coord,
        json!({"role": "field", "org_unit": "c1", "ttl_secs": 0}),
    )
    .await;
    assert_error_field(&r, 400, "bad_json", Some("ttl_secs"));
    let r = make_code(
        &s,
        &coord,
        json!({"role": "field", "org_unit": "c1", "label": "x".repeat(201)}),
    )
    .await;
    assert_error_field(&r, 400, "bad_json", Some("label"));

    // An admin: field or coordinator devices anywhere, never admins.
    let v = make_code(
        &s,
        &s.admin,
        json!({"role": "coordinator", "org_unit": "s2", "ttl_secs": 600}),
    )
    .await
    .expect(201);
    assert_eq!(v["expires_ms"], json!(T0 + 600_000));
    let r = make_code(&s, &s.admin, json!({"role": "admin", "org_unit": "d"})).await;
    assert_error_field(&r, 400, "bad_json", Some("role"));
    let r = make_code(&s, &s.admin, json!({"role": "field", "org_unit": "zz"})).await;
    assert_error_field(&r, 400, "unknown_org_unit", Some("org_unit"));
}

#[tokio::test]
async fn a_code_enrols_one_device_once_and_it_pushes_into_its_unit() {
    let s = Server::new().await;
    let coord = s.issue("coordinator", "s1").await;
    let code = code_for(&s, &coord, "c1").await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let issued = enroll(&s, json!({"code": code})).await.expect(201);
    assert_eq!(
        (&issued["role"], &issued["org_unit"], &issued["label"]),
        (&json!("field"), &json!("c1"), &json!("柳巷 手机")),
        "{issued}"
    );
    let dev = dev_of(&issued);
    let who = s.get("/v1/whoami", &dev).await.expect(200);
    assert_eq!(who["device_id"], issued["device_id"]);
    assert_invalid_code(&enroll(&s, json!({"code": code})).await);

    // A field device of c1: listed for the coordinator, pushes into c1 only.
    let devices = s.get("/v1/devices", &coord).await.expect(200);
    assert!(devices
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["device_id"] == issued["device_id"]));
    let m = lecture(&dev, &new_id(), "c1", "2020-06-01", 40);
    assert_applied(&s.push_one(&dev, &m).await, &m);
    let m = lecture(&dev, &new_id(), "c2", "2020-06-01", 40);
    assert_rejected(&s.push_one(&dev, &m).await, &m, "out_of_scope");
    assert_eq!(
        s.pull(&dev, 0, 100).await["records"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A label given at enrolment names the device instead of the code's.
    let code = code_for(&s, &coord, "c2").await["code"].clone();
    let issued = enroll(&s, json!({"code": code, "label": "王芳的手机"}))
        .await
        .expect(201);
    assert_eq!(issued["label"], "王芳的手机");
    assert_error(
        &enroll(&s, json!({"label": "no code"})).await,
        400,
        "bad_json",
    );
}

#[tokio::test]
async fn codes_are_read_in_any_case_with_or_without_the_dash() {
    let s = Server::new().await;
    let coord = s.issue("coordinator", "s1").await;
    for typed in [
        |c: &str| c.to_lowercase().replace('-', ""),
        |c: &str| c.to_lowercase(),
        |c: &str| format!(" {} ", c.replace('-', " ")),
    ] {
        let code = code_for(&s, &coord, "c1").await["code"]
            .as_str()
            .unwrap()
            .to_string();
        enroll(&s, json!({"code": typed(&code)})).await.expect(201);
    }
}

#[tokio::test]
async fn expired_used_withdrawn_and_unknown_codes_get_one_answer() {
    let s = Server::new().await;
    let coord = s.issue("coordinator", "s1").await;
    let short = make_code(
        &s,
        &coord,
        json!({"role": "field", "org_unit": "c1", "ttl_secs": 60}),
    )
    .await
    .expect(201);
    s.clock.advance(59_999);
    let other = code_for(&s, &coord, "c1").await;
    s.clock.advance(1);
    let expired = enroll(&s, json!({"code": short["code"]})).await;
    assert_invalid_code(&expired);
    let unknown = enroll(&s, json!({"code": "2345-6789"})).await;
    let malformed = enroll(&s, json!({"code": "nonsense"})).await;
    assert_eq!(expired.body, unknown.body);
    assert_eq!(expired.body, malformed.body);
    s.send(
        Method::DELETE,
        &format!("/v1/enrollment-codes/{}", other["id"].as_str().unwrap()),
        Some(&bearer(&coord)),
        Vec::new(),
        None,
    )
    .await
    .expect(204);
    assert_eq!(
        enroll(&s, json!({"code": other["code"]})).await.body,
        unknown.body
    );
}

#[tokio::test]
async fn open_codes_are_listed_in_scope_without_the_code_and_can_be_withdrawn() {
    let s = Server::new().await;
    let s1 = s.issue("coordinator", "s1").await;
    let s2 = s.issue("coordinator", "s2").await;
    let a = code_for(&s, &s1, "c1").await;
    s.clock.advance(1000);
    let b = code_for(&s, &s1, "c2").await;
    let used = code_for(&s, &s1, "c2").await;
    enroll(&s, json!({"code": used["code"]})).await.expect(201);
    let v3 = code_for(&s, &s2, "v3").await;

    let list = s.get("/v1/enrollment-codes", &s1).await;
    let text = String::from_utf8(list.body.clone()).unwrap();
    for c in [&a, &b] {
        assert!(
            !text.contains(c["code"].as_str().unwrap()),
            "no code text: {text}"
        );
    }
    let list = list.expect(200);
    let ids: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].clone())
        .collect();
    assert_eq!(
        ids,
        [b["id"].clone(), a["id"].clone()],
        "newest first: {list}"
    );
    let first = &list[0];
    assert_eq!(
        (
            &first["role"],
            &first["org_unit"],
            &first["label"],
            &first["expires_ms"]
        ),
        (
            &json!("field"),
            &json!("c2"),
            &json!("柳巷 手机"),
            &b["expires_ms"]
        )
    );
    assert_eq!(first["created_by"], "coordinator @ s1");
    let narrowed = s.get("/v1/enrollment-codes?org=c1", &s1).await.expect(200);
    assert_eq!(narrowed.as_array().unwrap().len(), 1);
    assert_error(
        &s.get("/v1/enrollment-codes?org=s2", &s1).await,
        403,
        "forbidden",
    );
    let all = s.get("/v1/enrollment-codes", &s.admin).await.expect(200);
    assert_eq!(all.as_array().unwrap().len(), 3, "{all}");
    let field = s.issue("field", "s1").await;
    assert_error(
        &s.get("/v1/enrollment-codes", &field).await,
        403,
        "forbidden",
    );

    let delete = |by: &Dev, id: &Value| {
        let path = format!("/v1/enrollment-codes/{}", id.as_str().unwrap());
        let auth = bearer(by);
        let s = &s;
        async move {
            s.send(Method::DELETE, &path, Some(&auth), Vec::new(), None)
                .await
        }
    };
    // Another street's coordinator cannot see or withdraw it.
    assert_error(&delete(&s2, &a["id"]).await, 404, "not_found");
    delete(&s1, &a["id"]).await.expect(204);
    assert_error(&delete(&s1, &a["id"]).await, 404, "not_found");
    assert_error(&delete(&s1, &json!("not-a-uuid")).await, 404, "not_found");
    assert_invalid_code(&enroll(&s, json!({"code": a["code"]})).await);
    let left = s.get("/v1/enrollment-codes", &s1).await.expect(200);
    assert_eq!(left.as_array().unwrap().len(), 1);
    // Expired codes leave the list.
    s.clock.advance(CODE_TTL_SECS_DEFAULT * 1000);
    let left = s.get("/v1/enrollment-codes", &s.admin).await.expect(200);
    assert_eq!(left, json!([]), "{v3}");
}

#[tokio::test]
async fn failed_enrolments_are_throttled_server_wide() {
    let s = Server::configured(|c| {
        c.enrol_failures = RateLimit {
            per_sec: 0.001,
            burst: 3.0,
        }
    })
    .await;
    s.import(&small_tree()).await;
    let coord = s.issue("coordinator", "s1").await;
    let good = code_for(&s, &coord, "c1").await;
    for _ in 0..3 {
        assert_invalid_code(&enroll(&s, json!({"code": "2345-6789"})).await);
    }
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/enroll")
        .body(Body::from(json!({"code": good["code"]}).to_string()))
        .unwrap();
    let resp = s.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let retry: u64 = resp.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "{retry}");
    let body: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Nothing was spent: the good code still lists as open.
    let open = s.get("/v1/enrollment-codes", &coord).await.expect(200);
    assert_eq!(open[0]["id"], good["id"]);
}

#[tokio::test]
async fn good_codes_do_not_drain_the_throttle() {
    let s = Server::configured(|c| {
        c.enrol_failures = RateLimit {
            per_sec: 0.001,
            burst: 2.0,
        }
    })
    .await;
    s.import(&small_tree()).await;
    let coord = s.issue("coordinator", "s1").await;
    for _ in 0..5 {
        let code = code_for(&s, &coord, "c1").await;
        enroll(&s, json!({"code": code["code"]})).await.expect(201);
    }
}

/// `POST /v1/enroll` with a body, as if from `peer` (the socket's address),
/// perhaps through a proxy that added `X-Forwarded-For: forwarded`.
async fn enroll_from(s: &Server, peer: &str, forwarded: Option<&str>, body: Value) -> Resp {
    let peer: std::net::IpAddr = peer.parse().unwrap();
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/v1/enroll")
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(f) = forwarded {
        req = req.header("x-forwarded-for", f);
    }
    let mut req = req.body(Body::from(body.to_string())).unwrap();
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            peer, 40000,
        ))));
    s.request(req).await
}

/// Finding 7 of the security review: one address sending bad codes used to
/// empty the server-wide bucket and hold every enrolment at `429`. Each
/// address now has its own, smaller bucket, refused before it reaches the
/// server-wide one; the server-wide ceiling still holds across addresses.
#[tokio::test]
async fn one_address_guessing_codes_does_not_block_enrolment_from_another() {
    let s = Server::configured(|c| {
        c.enrol_failures = RateLimit {
            per_sec: 0.001,
            burst: 10.0,
        };
        c.enrol_failures_per_ip = RateLimit {
            per_sec: 0.001,
            burst: 3.0,
        };
    })
    .await;
    s.import(&small_tree()).await;
    let coord = s.issue("coordinator", "s1").await;
    let good = code_for(&s, &coord, "c1").await;
    let bad = json!({"code": "2345-6789"});
    let attacker = "203.0.113.7";
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let r = enroll_from(&s, attacker, None, bad.clone()).await;
        if r.status == 429 {
            assert!(r.headers.contains_key(header::RETRY_AFTER));
        }
        statuses.push(r.status.as_u16());
    }
    // Phones elsewhere still enrol, after a typo of their own.
    let village = "198.51.100.20";
    assert_invalid_code(&enroll_from(&s, village, None, bad.clone()).await);
    let issued = enroll_from(&s, village, None, json!({"code": good["code"]}))
        .await
        .expect(201);
    assert_eq!(issued["role"], "field");
    // The attacker's codes were looked at while its own bucket lasted;
    // past it, it is refused without its code being looked at (a good one
    // included), and without spending the server-wide bucket.
    let mut wanted = vec![401; 3];
    wanted.resize(30, 429);
    assert_eq!(statuses, wanted);
    let next = code_for(&s, &coord, "c1").await;
    let r = enroll_from(&s, attacker, None, json!({"code": next["code"]})).await;
    assert_error(&r, 429, "rate_limited");
    // An IPv6 client counts by its /64: other addresses in it share its
    // bucket, the next /64 has its own.
    for i in 1..=3 {
        let r = enroll_from(&s, &format!("2001:db8:1:2::{i}"), None, bad.clone()).await;
        assert_invalid_code(&r);
    }
    let r = enroll_from(&s, "2001:db8:1:2:ffff::9", None, bad.clone()).await;
    assert_error(&r, 429, "rate_limited");
    // The server-wide ceiling: 3 + 1 + 3 failures so far; three more from
    // fresh addresses empty it, and then everyone waits.
    for ip in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
        assert_invalid_code(&enroll_from(&s, ip, None, bad.clone()).await);
    }
    let r = enroll_from(&s, "192.0.2.4", None, json!({"code": next["code"]})).await;
    assert_error(&r, 429, "rate_limited");
}

/// Behind a trusted proxy every request comes from the proxy's address:
/// the client's address is then the last `X-Forwarded-For` hop, so clients
/// of one proxy do not share a bucket. Without `trust_proxy` the header is
/// ignored, so a client cannot pick a fresh bucket per request.
#[tokio::test]
async fn enrolment_failures_count_per_forwarded_address_only_behind_a_trusted_proxy() {
    let per_ip = RateLimit {
        per_sec: 0.001,
        burst: 2.0,
    };
    let proxy = "127.0.0.1";
    let bad = json!({"code": "2345-6789"});
    for trust_proxy in [true, false] {
        let s = Server::configured(|c| {
            c.enrol_failures_per_ip = per_ip;
            c.trust_proxy = trust_proxy;
        })
        .await;
        for i in 0..2 {
            let f = format!("198.51.100.{i}, 203.0.113.1");
            assert_invalid_code(&enroll_from(&s, proxy, Some(&f), bad.clone()).await);
        }
        let r = enroll_from(&s, proxy, Some("203.0.113.1"), bad.clone()).await;
        assert_error(&r, 429, "rate_limited");
        let r = enroll_from(&s, proxy, Some("203.0.113.2"), bad.clone()).await;
        if trust_proxy {
            assert_invalid_code(&r);
        } else {
            assert_error(&r, 429, "rate_limited");
        }
    }
}
