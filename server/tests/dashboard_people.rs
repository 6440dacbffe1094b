//! The dashboard for people and enrolment: signing in with a username and
//! password (the session token in the cookie, the lockout explained,
//! sign-out ending the session on the server), and the "Enrol a device"
//! page (a code made, shown, redeemed, listed and withdrawn), through the
//! router with `tower::ServiceExt::oneshot`. The few helpers of
//! `dashboard.rs` this needs are copied here.

// The harness is shared with contract.rs, which uses more of it.
#[allow(dead_code)]
mod support;

use axum::body::Body;
use axum::http::{header, Method, Request};
use http_body_util::BodyExt as _;
use pufa_server::dashboard::i18n::{Lang, T};
use pufa_server::people::LOGIN_FAILURES_MAX;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use support::*;
use tower::ServiceExt as _;

const PASSWORD: &str = "a long enough password";

/// A dashboard answer.
#[derive(Debug)]
struct Got {
    status: u16,
    location: Option<String>,
    set_cookies: Vec<String>,
    retry_after: Option<String>,
    body: String,
}

impl Got {
    #[track_caller]
    fn expect(&self, status: u16) -> &str {
        assert_eq!(self.status, status, "body: {}", self.body);
        &self.body
    }

    fn cookie(&self, name: &str) -> Option<&str> {
        self.set_cookies
            .iter()
            .map(String::as_str)
            .find(|c| c.starts_with(&format!("{name}=")))
    }

    #[track_caller]
    fn assert_redirect(&self, to: &str) {
        assert_eq!(
            (self.status, self.location.as_deref()),
            (303, Some(to)),
            "body: {}",
            self.body
        );
    }
}

async fn send(
    s: &Server,
    method: Method,
    path: &str,
    cookies: Option<&str>,
    form: Option<&[(&str, &str)]>,
) -> Got {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(c) = cookies {
        req = req.header(header::COOKIE, c);
    }
    let body = match form {
        Some(pairs) => {
            req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            Body::from(encode_form(pairs))
        }
        None => Body::empty(),
    };
    let resp = s
        .app
        .clone()
        .oneshot(req.body(body).expect("request"))
        .await
        .expect("infallible");
    let header_text = |name| {
        resp.headers()
            .get(name)
            .map(|v: &header::HeaderValue| v.to_str().expect("ascii").to_string())
    };
    let status = resp.status().as_u16();
    let location = header_text(header::LOCATION);
    let retry_after = header_text(header::RETRY_AFTER);
    let set_cookies = resp
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().expect("ascii").to_string())
        .collect();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    Got {
        status,
        location,
        set_cookies,
        retry_after,
        body: String::from_utf8(bytes.to_vec()).expect("pages are UTF-8"),
    }
}

fn encode_form(pairs: &[(&str, &str)]) -> String {
    let enc = |t: &str| {
        t.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn session(token: &str) -> String {
    format!("pufa_session={token}")
}

fn csrf(token: &str) -> String {
    hex::encode(Sha256::digest(format!("pufa-csrf:{token}").as_bytes()))
}

fn zh(t: T) -> &'static str {
    t.get(Lang::Zh)
}

/// The enrolment code a page shows (the text of `#code`).
#[track_caller]
fn shown_code(body: &str) -> &str {
    let at = body.find(r#"id="code""#).expect("the code is shown");
    let code = &body[at..];
    let code = &code[code.find('>').unwrap() + 1..];
    &code[..code.find('<').unwrap()]
}

async fn account(s: &Server, username: &str, role: &str, org: Option<&str>) {
    let body = json!({"username": username, "password": PASSWORD, "role": role,
                      "org_unit": org, "display_name": "王芳"});
    s.json(Method::POST, "/v1/admin/accounts", &s.admin, &body)
        .await
        .expect(201);
}

async fn login(s: &Server, username: &str, password: &str) -> Got {
    send(
        s,
        Method::POST,
        "/login",
        None,
        Some(&[("username", username), ("password", password)]),
    )
    .await
}

/// Signs in with a password; the session token from the cookie.
async fn signed_in(s: &Server, username: &str) -> String {
    let got = login(s, username, PASSWORD).await;
    got.assert_redirect("/");
    let cookie = got.cookie("pufa_session").expect("session cookie");
    let token = cookie.split(';').next().unwrap()["pufa_session=".len()..].to_string();
    for attr in ["HttpOnly", "SameSite=Strict"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    token
}

/// The dashboard's sign-in form shares the API's lockout, concurrency
/// included: 20 wrong passwords and the right one posted at once give at
/// most `LOGIN_FAILURES_MAX` checked answers and no session.
#[tokio::test]
async fn sign_in_forms_posted_at_once_get_no_more_guesses() {
    use pufa_server::people::LOGIN_FAILURES_MAX;
    let s = Server::new().await;
    account(&s, "wang", "coordinator", Some("s1")).await;
    let mut passwords = vec!["wrong password!"; 20];
    passwords.push(PASSWORD);
    let answers =
        futures_util::future::join_all(passwords.iter().map(|p| login(&s, "wang", p))).await;
    let statuses: Vec<u16> = answers.iter().map(|g| g.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        LOGIN_FAILURES_MAX,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        passwords.len() - LOGIN_FAILURES_MAX,
        "{statuses:?}"
    );
    let last = answers.last().unwrap();
    assert!(last.cookie("pufa_session").is_none());
    assert!(last.body.contains("锁定"), "{}", last.body);
}

#[tokio::test]
async fn a_person_signs_in_with_username_and_password_and_out_again() {
    let s = Server::new().await;
    account(&s, "wang", "coordinator", Some("s1")).await;
    let page = send(&s, Method::GET, "/login", None, None).await;
    let body = page.expect(200);
    for input in [
        r#"name="username""#,
        r#"name="password""#,
        r#"name="token""#,
    ] {
        assert!(body.contains(input), "{input} in {body}");
    }

    let token = signed_in(&s, "Wang").await;
    // The cookie holds a session, not a device token: the API knows it as
    // the person.
    let who = s
        .get(
            "/v1/whoami",
            &Dev {
                token: token.clone(),
                id: String::new(),
            },
        )
        .await
        .expect(200);
    assert_eq!(who["username"], "wang");
    let home = send(&s, Method::GET, "/", Some(&session(&token)), None).await;
    let body = home.expect(200);
    assert!(body.contains("王芳"), "who is signed in: {body}");
    assert!(body.contains(&csrf(&token)));
    assert!(
        body.contains(r#"href="/enrol""#),
        "the menu offers enrolment"
    );

    let out = send(
        &s,
        Method::POST,
        "/logout",
        Some(&session(&token)),
        Some(&[("csrf", &csrf(&token))]),
    )
    .await;
    out.assert_redirect("/login");
    // Signing out ended the session on the server, not just the cookie.
    send(&s, Method::GET, "/", Some(&session(&token)), None)
        .await
        .assert_redirect("/login");
    let r = s
        .get(
            "/v1/whoami",
            &Dev {
                token,
                id: String::new(),
            },
        )
        .await;
    assert_error(&r, 401, "unauthorized");
}

#[tokio::test]
async fn wrong_passwords_disabled_accounts_and_the_lockout_are_explained() {
    let s = Server::new().await;
    account(&s, "wang", "coordinator", Some("s1")).await;
    let got = login(&s, "wang", "").await;
    assert!(got.expect(400).contains(zh(T::LoginPasswordEmpty)));
    for _ in 0..LOGIN_FAILURES_MAX {
        let got = login(&s, "wang", "not the password").await;
        assert!(got.expect(401).contains(zh(T::LoginWrongPassword)));
        assert!(
            got.body.contains(r#"value="wang""#),
            "the username stays filled in"
        );
        assert_eq!(got.cookie("pufa_session"), None);
    }
    let got = login(&s, "wang", PASSWORD).await;
    let body = got.expect(429);
    assert!(
        body.contains(&T::LoginLocked.with_n(Lang::Zh, 15)),
        "{body}"
    );
    assert_eq!(got.retry_after.as_deref(), Some("900"));
    assert_eq!(got.cookie("pufa_session"), None);

    s.clock.advance(15 * 60 * 1000);
    s.json(
        Method::PATCH,
        "/v1/admin/accounts/wang",
        &s.admin,
        &json!({"disabled": true}),
    )
    .await
    .expect(200);
    let got = login(&s, "wang", PASSWORD).await;
    assert!(got.expect(403).contains(zh(T::LoginDisabled)));
}

#[tokio::test]
async fn the_enrol_page_makes_a_code_to_read_out_lists_and_withdraws_it() {
    let s = Server::new().await;
    account(&s, "wang", "coordinator", Some("s1")).await;
    let token = signed_in(&s, "wang").await;
    let cookie = session(&token);
    let page = send(&s, Method::GET, "/enrol", Some(&cookie), None).await;
    let body = page.expect(200);
    assert!(body.contains(zh(T::EnrolIntro)), "{body}");
    assert!(body.contains(zh(T::EnrolNone)), "{body}");
    assert!(
        body.contains(r#"value="c1""#) && !body.contains(r#"value="v3""#),
        "units in scope only: {body}"
    );
    assert!(
        !body.contains(r#"value="coordinator""#),
        "coordinators make field codes only"
    );

    let made = send(
        &s,
        Method::POST,
        "/enrol",
        Some(&cookie),
        Some(&[
            ("csrf", &csrf(&token)),
            ("org_unit", "c1"),
            ("label", "柳巷 手机"),
            ("hours", "2"),
        ]),
    )
    .await;
    let body = made.expect(200);
    let code = shown_code(body);
    assert_eq!(code.len(), 9, "{code}");
    assert!(body.contains(zh(T::EnrolCodeHint)));
    let list = s.get("/v1/enrollment-codes", &s.admin).await.expect(200);
    let id = list[0]["id"].as_str().unwrap().to_string();
    assert_eq!(list[0]["expires_ms"], json!(T0 + 2 * 3600 * 1000));
    assert_eq!(list[0]["created_by"], "王芳");
    assert!(
        body.contains(&format!(r#"data-code="{id}""#)),
        "listed: {body}"
    );

    // The code works, once.
    let enrolled = s
        .send(
            Method::POST,
            "/v1/enroll",
            None,
            json!({"code": code.to_lowercase()})
                .to_string()
                .into_bytes(),
            None,
        )
        .await
        .expect(201);
    assert_eq!(enrolled["org_unit"], "c1");
    let page = send(&s, Method::GET, "/enrol", Some(&cookie), None).await;
    assert!(page.expect(200).contains(zh(T::EnrolNone)));

    // Withdraw another; the CSRF token and the scope are checked.
    let form = [("csrf", csrf(&token)), ("org_unit", "c2".to_string())];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    send(&s, Method::POST, "/enrol", Some(&cookie), Some(&form))
        .await
        .expect(200);
    let id = s.get("/v1/enrollment-codes", &s.admin).await.expect(200)[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/enrol/{id}/withdraw");
    let got = send(
        &s,
        Method::POST,
        &path,
        Some(&cookie),
        Some(&[("csrf", "nope")]),
    )
    .await;
    assert!(got.expect(403).contains(zh(T::CsrfFailed)));
    let other = s.issue("coordinator", "s2").await;
    let got = send(
        &s,
        Method::POST,
        &path,
        Some(&session(&other.token)),
        Some(&[("csrf", &csrf(&other.token))]),
    )
    .await;
    assert!(got.expect(404).contains(zh(T::EnrolGone)));
    send(
        &s,
        Method::POST,
        &path,
        Some(&cookie),
        Some(&[("csrf", &csrf(&token))]),
    )
    .await
    .assert_redirect("/enrol?withdrawn=1");
    let page = send(&s, Method::GET, "/enrol?withdrawn=1", Some(&cookie), None).await;
    let body = page.expect(200);
    assert!(
        body.contains(zh(T::EnrolWithdrawn)) && body.contains(zh(T::EnrolNone)),
        "{body}"
    );

    // A unit outside the scope, typed into the form by hand.
    let got = send(
        &s,
        Method::POST,
        "/enrol",
        Some(&cookie),
        Some(&[("csrf", &csrf(&token)), ("org_unit", "v3")]),
    )
    .await;
    assert!(got.expect(403).contains(zh(T::OutOfScope)));
    let got = send(
        &s,
        Method::POST,
        "/enrol",
        Some(&cookie),
        Some(&[
            ("csrf", &csrf(&token)),
            ("org_unit", "c1"),
            ("role", "coordinator"),
        ]),
    )
    .await;
    assert!(got.expect(403).contains(zh(T::EnrolCoordinatorOnly)));
}

#[tokio::test]
async fn an_admin_may_make_coordinator_codes_on_the_enrol_page() {
    let s = Server::new().await;
    account(&s, "root", "admin", None).await;
    let token = signed_in(&s, "root").await;
    let cookie = session(&token);
    let body = send(&s, Method::GET, "/enrol?lang=en", Some(&cookie), None).await;
    let body = body.expect(200);
    assert!(
        body.contains(r#"value="coordinator""#) && body.contains(r#"value="v3""#),
        "{body}"
    );
    assert!(body.contains(T::NavEnrol.get(Lang::En)));
    send(
        &s,
        Method::POST,
        "/enrol",
        Some(&cookie),
        Some(&[
            ("csrf", &csrf(&token)),
            ("org_unit", "s2"),
            ("role", "coordinator"),
        ]),
    )
    .await
    .expect(200);
    let list = s.get("/v1/enrollment-codes", &s.admin).await.expect(200);
    assert_eq!(
        (&list[0]["role"], &list[0]["org_unit"]),
        (&json!("coordinator"), &json!("s2"))
    );
}

#[tokio::test]
async fn a_new_code_comes_with_a_qr_code_of_the_field_apps_address_for_its_maker_only() {
    let s = Server::configured(|c| c.public_url = Some("https://pufa.example.gov.cn".into())).await;
    s.import(&small_tree()).await;
    let coord = s.issue("coordinator", "s1").await;
    let cookie = session(&coord.token);
    let page = send(&s, Method::GET, "/enrol", Some(&cookie), None).await;
    let body = page.expect(200);
    assert!(
        body.contains(zh(T::EnrolIntro)) && body.contains("/field/"),
        "{body}"
    );
    assert!(!body.contains("在应用中"), "the intro names the field app");
    assert!(!body.contains("<svg"), "no QR code before a code is made");

    let made = send(
        &s,
        Method::POST,
        "/enrol",
        Some(&cookie),
        Some(&[("csrf", &csrf(&coord.token)), ("org_unit", "c1")]),
    )
    .await;
    let body = made.expect(200);
    let code = shown_code(body);
    let url = format!("https://pufa.example.gov.cn/field/#code={code}");
    assert!(
        body.contains(&format!(r#"<code id="code-url">{url}</code>"#)),
        "the address as text: {body}"
    );
    let qr = &body[body.find(r#"id="code-qr""#).expect("the QR code")..];
    let svg = &qr[qr.find("<svg").expect("an inline SVG")..];
    let svg = &svg[..svg.find("</svg>").expect("closed") + "</svg>".len()];
    assert!(svg.contains(r#"xmlns="http://www.w3.org/2000/svg""#) && svg.contains("<path"));
    assert!(
        !svg.contains("style") && !svg.contains("<?xml") && !svg.contains("<script"),
        "allowed by the dashboard's CSP: {svg}"
    );
    assert!(body.contains(zh(T::EnrolQrHint)));
    let en = send(&s, Method::GET, "/enrol?lang=en", Some(&cookie), None).await;
    let intro = T::EnrolIntro.get(Lang::En);
    assert!(en.expect(200).contains(intro) && intro.contains("field app"));

    // A coordinator of another street gets neither a code for c1 nor its QR code.
    let other = s.issue("coordinator", "s2").await;
    let got = send(
        &s,
        Method::POST,
        "/enrol",
        Some(&session(&other.token)),
        Some(&[("csrf", &csrf(&other.token)), ("org_unit", "c1")]),
    )
    .await;
    let body = got.expect(403);
    assert!(!body.contains("<svg") && !body.contains("#code="), "{body}");
    let open = s.get("/v1/enrollment-codes", &s.admin).await.expect(200);
    assert_eq!(
        open.as_array().unwrap().len(),
        1,
        "only the first code was made"
    );
}
