//! The coordinators' dashboard (`server/src/dashboard/`), through the same
//! router as the API with `tower::ServiceExt::oneshot`: sign-in and the
//! session cookie, CSRF and Origin checks, scope, the figures of the
//! overview, resolving a conflict, the rejection and device lists, and the
//! language switch.
//!
//! Pages are checked through the ids and data attributes they put on
//! figures and rows, and through the UI texts of `dashboard::i18n`, so a
//! reworded label does not break a test but a wrong number does.

// The harness is shared with contract.rs, which uses more of it.
#[allow(dead_code)]
mod support;

use axum::body::Body;
use axum::http::{header, Method, Request};
use http_body_util::BodyExt as _;
use pufa_server::dashboard::i18n::{Lang, T};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use support::*;
use tower::ServiceExt as _;

/// A dashboard answer.
#[derive(Debug)]
struct Got {
    status: u16,
    location: Option<String>,
    set_cookies: Vec<String>,
    body: String,
}

impl Got {
    #[track_caller]
    fn expect(&self, status: u16) -> &str {
        assert_eq!(self.status, status, "body: {}", self.body);
        &self.body
    }

    /// The `Set-Cookie` header that sets `name`, if any.
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

/// A request to the dashboard. `cookies` is the whole `Cookie` header;
/// `form`, when given, is sent url-encoded.
async fn send(
    s: &Server,
    method: Method,
    path: &str,
    cookies: Option<&str>,
    headers: &[(header::HeaderName, &str)],
    form: Option<&[(&str, &str)]>,
) -> Got {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(c) = cookies {
        req = req.header(header::COOKIE, c);
    }
    for (k, v) in headers {
        req = req.header(k, *v);
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
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().expect("ascii").to_string());
    let set_cookies = resp
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().expect("ascii").to_string())
        .collect();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    // Pages must be UTF-8; downloads (XLSX) are read lossily.
    let body = match String::from_utf8(bytes.to_vec()) {
        Ok(text) => text,
        Err(e) if !path.starts_with("/export/") => panic!("page {path} is not UTF-8: {e}"),
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    Got {
        status,
        location,
        set_cookies,
        body,
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

fn session(dev: &Dev) -> String {
    format!("pufa_session={}", dev.token)
}

/// A GET of a signed-in page.
async fn get(s: &Server, path: &str, dev: &Dev) -> Got {
    send(s, Method::GET, path, Some(&session(dev)), &[], None).await
}

/// A POST of a signed-in form.
async fn post(s: &Server, path: &str, dev: &Dev, form: &[(&str, &str)]) -> Got {
    send(s, Method::POST, path, Some(&session(dev)), &[], Some(form)).await
}

/// hex(sha256("pufa-csrf:" + token)), computed here independently.
fn csrf(dev: &Dev) -> String {
    hex::encode(Sha256::digest(
        format!("pufa-csrf:{}", dev.token).as_bytes(),
    ))
}

/// The text of the element with `id` (up to its first `<`).
#[track_caller]
fn figure<'a>(body: &'a str, id: &str) -> &'a str {
    let open = format!("id=\"{id}\"");
    let at = body
        .find(&open)
        .unwrap_or_else(|| panic!("no element #{id} in {body}"));
    let rest = &body[at..];
    let start = rest.find('>').expect("tag end") + 1;
    let rest = &rest[start..];
    // A figure may be wrapped in a link.
    let rest = if rest.starts_with("<a ") {
        &rest[rest.find('>').expect("link end") + 1..]
    } else {
        rest
    };
    &rest[..rest.find('<').expect("element end")]
}

/// The `<tr …>…</tr>` carrying `attr`.
#[track_caller]
fn row<'a>(body: &'a str, attr: &str) -> &'a str {
    let at = body
        .find(attr)
        .unwrap_or_else(|| panic!("no row with {attr} in {body}"));
    let start = body[..at].rfind("<tr").expect("row start");
    let end = at + body[at..].find("</tr>").expect("row end");
    &body[start..end]
}

fn zh(t: T) -> &'static str {
    t.get(Lang::Zh)
}

fn en(t: T) -> &'static str {
    t.get(Lang::En)
}

/// Two field devices in s1 edit one lecture concurrently: one open
/// conflict on `attendees` (90 stands, 88 lost). Returns the record id.
async fn make_conflict(s: &Server) -> String {
    let a = s.issue("field", "s1").await;
    let b = s.issue("field", "s1").await;
    let rec = new_id();
    let m = lecture(&a, &rec, "c1", "2020-06-01", 87);
    let seq1 = assert_applied(&s.push_one(&a, &m).await, &m);
    let m = mutation(&b, &rec, "lecture", seq1, T0 + 10, json!({"attendees": 90}));
    assert_applied(&s.push_one(&b, &m).await, &m);
    let losing = mutation(&a, &rec, "lecture", seq1, T0 + 5, json!({"attendees": 88}));
    let r = s.push_one(&a, &losing).await;
    assert_eq!(
        reported(&r),
        json!([{"field": "attendees", "winner": 90, "loser": 88}])
    );
    rec
}

// Sign-in -----------------------------------------------------------------

#[tokio::test]
async fn signed_out_pages_redirect_to_login() {
    let s = Server::new().await;
    for path in ["/", "/?org=s1", "/conflicts", "/rejections", "/devices"] {
        send(&s, Method::GET, path, None, &[], None)
            .await
            .assert_redirect("/login");
        send(
            &s,
            Method::GET,
            path,
            Some("pufa_session=pufa_00"),
            &[],
            None,
        )
        .await
        .assert_redirect("/login");
    }
    let login = send(&s, Method::GET, "/login", None, &[], None).await;
    let body = login.expect(200);
    assert!(body.contains(r#"name="token""#), "{body}");
    assert!(body.contains(r#"<meta name="viewport""#), "{body}");
    assert!(
        body.contains(r#"<html lang="zh-CN">"#),
        "Chinese by default: {body}"
    );
    assert!(body.contains(zh(T::LoginIntro)), "{body}");
}

#[tokio::test]
async fn a_coordinator_signs_in_with_a_strict_http_only_cookie_and_out_again() {
    let s = Server::new().await;
    let coord = s.issue("coordinator", "d").await;
    let got = send(
        &s,
        Method::POST,
        "/login",
        None,
        &[],
        Some(&[("token", &coord.token)]),
    )
    .await;
    got.assert_redirect("/");
    let cookie = got.cookie("pufa_session").expect("session cookie");
    let parts: Vec<&str> = cookie.split(';').map(str::trim).collect();
    assert_eq!(parts[0], session(&coord), "{cookie}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(parts.contains(&attr), "{attr} missing from {cookie}");
    }

    let home = get(&s, "/", &coord).await;
    let body = home.expect(200);
    assert!(body.contains(&csrf(&coord)), "forms carry the CSRF token");
    assert!(body.contains("coordinator @ d"), "who is signed in: {body}");

    // A session is not a device: signing in and browsing touched nothing.
    let devices = s.get("/v1/devices", &s.admin).await.expect(200);
    let me = devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_id"] == coord.id.as_str())
        .expect("listed");
    assert_eq!(
        (&me["last_pull_ms"], &me["last_push_ms"]),
        (&json!(null), &json!(null))
    );

    let out = post(&s, "/logout", &coord, &[("csrf", &csrf(&coord))]).await;
    out.assert_redirect("/login");
    let cleared = out.cookie("pufa_session").expect("cleared");
    assert!(
        cleared.starts_with("pufa_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );

    // Revoking the token ends the session on the next request.
    get(&s, "/", &coord).await.expect(200);
    s.send(
        Method::DELETE,
        &format!("/v1/admin/tokens/{}", coord.id),
        Some(&bearer(&s.admin)),
        Vec::new(),
        None,
    )
    .await
    .expect(204);
    let after = get(&s, "/", &coord).await;
    after.assert_redirect("/login");
    assert!(after
        .cookie("pufa_session")
        .is_some_and(|c| c.contains("Max-Age=0")));
}

#[tokio::test]
async fn field_and_unknown_tokens_cannot_sign_in() {
    let s = Server::new().await;
    let field = s.issue("field", "s1").await;
    let got = send(
        &s,
        Method::POST,
        "/login",
        None,
        &[],
        Some(&[("token", &field.token)]),
    )
    .await;
    let body = got.expect(403);
    assert!(body.contains(zh(T::LoginFieldToken)), "{body}");
    assert_eq!(got.cookie("pufa_session"), None);

    let got = send(
        &s,
        Method::POST,
        "/login",
        None,
        &[],
        Some(&[("token", "pufa_00")]),
    )
    .await;
    assert!(got.expect(401).contains(zh(T::LoginUnknown)));
    assert_eq!(got.cookie("pufa_session"), None);

    let got = send(
        &s,
        Method::POST,
        "/login",
        None,
        &[],
        Some(&[("token", " ")]),
    )
    .await;
    assert!(got.expect(400).contains(zh(T::LoginEmpty)));

    // A field token put in the cookie by hand opens nothing either.
    let got = get(&s, "/", &field).await;
    assert!(got.expect(403).contains(zh(T::FieldSession)));

    // The admin may sign in; its overview is the root's.
    let got = send(
        &s,
        Method::POST,
        "/login",
        None,
        &[],
        Some(&[("token", &s.admin.token)]),
    )
    .await;
    got.assert_redirect("/");
    let body = get(&s, "/", &s.admin).await;
    assert!(body.expect(200).contains("迎泽区"));
}

#[tokio::test]
async fn posts_from_another_origin_are_refused() {
    let s = Server::new().await;
    let coord = s.issue("coordinator", "d").await;
    let host = (header::HOST, "pufa.local:8080");
    let evil = (header::ORIGIN, "http://evil.example");
    let ours = (header::ORIGIN, "http://pufa.local:8080");
    let login = [("token", coord.token.as_str())];

    let got = send(
        &s,
        Method::POST,
        "/login",
        None,
        &[host.clone(), evil.clone()],
        Some(&login),
    )
    .await;
    assert!(got.expect(403).contains(zh(T::CrossOrigin)));
    assert_eq!(got.cookie("pufa_session"), None);
    let got = send(
        &s,
        Method::POST,
        "/login",
        None,
        &[host.clone(), (header::ORIGIN, "null")],
        Some(&login),
    )
    .await;
    got.expect(403);
    send(
        &s,
        Method::POST,
        "/login",
        None,
        &[host.clone(), ours.clone()],
        Some(&login),
    )
    .await
    .assert_redirect("/");

    let token = csrf(&coord);
    let logout = [("csrf", token.as_str())];
    let got = send(
        &s,
        Method::POST,
        "/logout",
        Some(&session(&coord)),
        &[host.clone(), evil],
        Some(&logout),
    )
    .await;
    got.expect(403);
    assert_eq!(got.cookie("pufa_session"), None, "still signed in");
    send(
        &s,
        Method::POST,
        "/logout",
        Some(&session(&coord)),
        &[host, ours],
        Some(&logout),
    )
    .await
    .assert_redirect("/login");
}

// Overview ----------------------------------------------------------------

#[tokio::test]
async fn the_overview_shows_the_pushed_figures_and_drills_down() {
    let s = Server::new().await;
    let f1 = s.issue("field", "s1").await;
    let f2 = s.issue("field", "s2").await;
    let coord = s.issue("coordinator", "d").await;
    s.push(
        &f1,
        &[
            lecture(&f1, &new_id(), "c1", "2020-03-01", 87),
            lecture(&f1, &new_id(), "c2", "2020-06-01", 45),
            // Last year: outside the default period.
            lecture(&f1, &new_id(), "c1", "2019-05-01", 1000),
            corner(&f1, &new_id(), "c2", "active"),
            corner(&f1, &new_id(), "c1", "closed"),
        ],
    )
    .await;
    s.push(
        &f2,
        &[
            lecture(&f2, &new_id(), "v3", "2020-05-01", 12),
            site(&f2, &new_id(), "v3", "municipal", "awarded", 2020),
            site(&f2, &new_id(), "v3", "provincial", "candidate", 2020),
        ],
    )
    .await;

    let home = get(&s, "/", &coord).await;
    let body = home.expect(200);
    // The clock says 2020: the period is this year.
    assert!(body.contains(r#"name="from" value="2020-01-01""#), "{body}");
    assert!(body.contains(r#"name="to" value="2020-12-31""#), "{body}");
    for (id, value) in [
        ("lectures-count", "3"),
        ("lectures-attendees", "144"),
        ("lectures-units", "3"),
        ("corners-active", "1"),
        ("corners-coverage", "33.3%"),
        ("corners-units", "1 / 3"),
        ("sites-national", "0"),
        ("sites-provincial", "0"),
        ("sites-municipal", "1"),
        ("sites-district", "0"),
        ("conflicts-open", "0"),
    ] {
        assert_eq!(figure(body, id), value, "#{id}");
    }
    let s1 = row(body, r#"data-org="s1""#);
    let link = "/?org=s1&amp;from=2020-01-01&amp;to=2020-12-31";
    assert!(s1.contains(link) && s1.contains("柳巷街道"), "{s1}");
    assert!(s1.contains(">132<") && s1.contains(">2<"), "{s1}");
    assert!(row(body, r#"data-org="s2""#).contains(">12<"));

    // One level down: s1's own figures, its communities, and the way back.
    let s1_page = get(&s, "/?org=s1&from=2020-01-01&to=2020-12-31", &coord).await;
    let body = s1_page.expect(200);
    assert_eq!(figure(body, "lectures-count"), "2");
    assert_eq!(figure(body, "lectures-attendees"), "132");
    assert_eq!(figure(body, "sites-municipal"), "0");
    assert!(row(body, r#"data-org="c1""#).contains(">87<"));
    assert!(row(body, r#"data-org="c2""#).contains(">45<"));
    assert!(
        body.contains(r#"href="/?org=d&amp;from=2020-01-01&amp;to=2020-12-31""#),
        "crumb back up: {body}"
    );
    // And a community, which has no sub-units.
    let c1 = get(&s, "/?org=c1", &coord).await;
    let body = c1.expect(200);
    assert_eq!(figure(body, "lectures-attendees"), "87");
    assert!(body.contains(zh(T::NoSubUnits)));

    // Open bounds take last year's lecture in; a period of 2019 only it.
    let all = get(&s, "/?from=&to=", &coord).await;
    assert_eq!(figure(all.expect(200), "lectures-count"), "4");
    assert_eq!(figure(all.expect(200), "lectures-attendees"), "1144");
    let y2019 = get(&s, "/?from=2019-01-01&to=2019-12-31", &coord).await;
    assert_eq!(figure(y2019.expect(200), "lectures-attendees"), "1000");
}

#[tokio::test]
async fn units_outside_the_scope_are_refused() {
    let s = Server::new().await;
    let coord = s.issue("coordinator", "s1").await;
    for path in [
        "/?org=s2",
        "/?org=d",
        "/?org=v3",
        "/?org=nowhere",
        "/conflicts?org=s2",
        "/devices?org=d",
        "/rejections?org=v3",
    ] {
        let got = get(&s, path, &coord).await;
        assert!(got.expect(403).contains(zh(T::OutOfScope)), "{path}");
    }
    // Its own overview starts at s1, with no way up to d.
    let body = get(&s, "/", &coord).await;
    let body = body.expect(200);
    assert!(
        body.contains("柳巷街道") && !body.contains("?org=d"),
        "{body}"
    );
    // For an admin, a unit that does not exist is not found.
    let got = get(&s, "/?org=nowhere", &s.admin).await;
    assert!(got.expect(404).contains(zh(T::NoSuchUnit)));
}

#[tokio::test]
async fn odd_query_parameters_get_an_error_page_never_a_500() {
    let s = Server::new().await;
    let coord = s.issue("coordinator", "d").await;
    for (path, status) in [
        ("/?from=2020-13-01", 400),
        ("/?from=2020-02-30&to=2020-12-31", 400),
        ("/?to=yesterday", 400),
        ("/?from=2020-12-01&to=2020-01-01", 400),
        ("/?lang=fr", 400),
        ("/devices?lang=", 400),
        ("/?org=%00", 403),
        ("/?org=%E8%BF", 403),
        ("/?org=&from=&to=", 200),
        ("/?org=s1&org=c1", 200),
        ("/conflicts?resolved=%FF%FE", 200),
        ("/rejections?limit=-1", 200),
    ] {
        let got = get(&s, path, &coord).await;
        assert_eq!(got.status, status, "{path}: {}", got.body);
        assert!(got.body.contains("<html"), "{path}: an HTML page");
    }
    let got = get(&s, "/?from=2020-13-01", &coord).await;
    assert!(got.body.contains(zh(T::BadDate)) && got.body.contains("2020-13-01"));
    let got = post(
        &s,
        "/conflicts/not-a-uuid/resolve",
        &coord,
        &[("csrf", &csrf(&coord))],
    )
    .await;
    assert!(got.expect(404).contains(zh(T::ConflictGone)));
    let got = post(
        &s,
        &format!("/conflicts/{}/resolve", new_id()),
        &coord,
        &[("csrf", &csrf(&coord)), ("choice", "json:{")],
    )
    .await;
    assert!(got.expect(400).contains(zh(T::BadForm)));
}

#[tokio::test]
async fn an_admin_with_an_empty_tree_is_told_so() {
    let s = Server::empty().await;
    let got = get(&s, "/", &s.admin).await;
    assert!(got.expect(200).contains(zh(T::NoOrgUnits)));
}

// Conflicts ---------------------------------------------------------------

#[tokio::test]
async fn a_conflict_is_listed_and_resolved_only_with_the_csrf_token() {
    let s = Server::new().await;
    let rec = make_conflict(&s).await;
    let coord = s.issue("coordinator", "s1").await;
    let open = s.get("/v1/conflicts", &coord).await.expect(200);
    let id = open[0]["id"].as_str().expect("conflict id").to_string();

    let list = get(&s, "/conflicts", &coord).await;
    let body = list.expect(200);
    assert!(body.contains(&format!("conflict-{id}")), "{body}");
    assert!(
        body.contains(&rec) && body.contains(">attendees<"),
        "{body}"
    );
    assert!(body.contains(r#"value="json:90""#) && body.contains(r#"value="json:88""#));
    assert!(body.contains("field @ s1"), "the devices' labels: {body}");
    // T0 is 2020-07-01 00:00 UTC: 08:00 Beijing time, the default zone.
    assert!(
        body.contains("2020-07-01 08:00"),
        "the edits' times: {body}"
    );
    assert!(body.contains(&format!(r#"action="/conflicts/{id}/resolve""#)));
    let overview = get(&s, "/", &coord).await;
    assert_eq!(figure(overview.expect(200), "conflicts-open"), "1");

    let path = format!("/conflicts/{id}/resolve");
    let still_open = || async { s.get("/v1/conflicts", &coord).await.expect(200) };
    let got = post(&s, &path, &coord, &[("choice", "json:88")]).await;
    assert!(got.expect(403).contains(zh(T::CsrfFailed)));
    let other = s.issue("coordinator", "d").await;
    let got = post(
        &s,
        &path,
        &coord,
        &[("csrf", &csrf(&other)), ("choice", "json:88")],
    )
    .await;
    got.expect(403);
    let got = send(
        &s,
        Method::POST,
        &path,
        Some(&session(&coord)),
        &[
            (header::HOST, "pufa.local"),
            (header::ORIGIN, "https://evil.example"),
        ],
        Some(&[("csrf", &csrf(&coord)), ("choice", "json:88")]),
    )
    .await;
    assert!(got.expect(403).contains(zh(T::CrossOrigin)));
    assert_eq!(still_open().await, open, "refused posts change nothing");

    // A value the field rules refuse is shown on the page with the list.
    let got = post(
        &s,
        &path,
        &coord,
        &[
            ("csrf", &csrf(&coord)),
            ("choice", "custom"),
            ("custom", "many"),
        ],
    )
    .await;
    let body = got.expect(400);
    assert!(
        body.contains(zh(T::ValueRejected)) && body.contains("invalid_field"),
        "{body}"
    );
    assert!(
        body.contains(&format!("conflict-{id}")),
        "the list again: {body}"
    );
    let got = post(&s, &path, &coord, &[("csrf", &csrf(&coord))]).await;
    assert!(got.expect(400).contains(zh(T::ChooseValue)));
    assert_eq!(still_open().await, open);

    let got = post(
        &s,
        &path,
        &coord,
        &[("csrf", &csrf(&coord)), ("choice", "json:88")],
    )
    .await;
    got.assert_redirect("/conflicts?resolved=1");
    assert_eq!(s.get("/v1/conflicts", &coord).await.expect(200), json!([]));
    let record = s.record(&rec).await;
    assert_eq!(
        (&record["fields"]["attendees"], &record["conflicts"]),
        (&json!(88), &json!(0))
    );
    assert_eq!(
        record["hlc"]["node"],
        coord.id.as_str(),
        "resolved by the session's token"
    );
    let after = get(&s, "/conflicts?resolved=1", &coord).await;
    let body = after.expect(200);
    assert!(
        body.contains(zh(T::Resolved)) && body.contains(zh(T::NoConflicts)),
        "{body}"
    );

    // Resolving it again: it is gone, said on the page.
    let got = post(
        &s,
        &path,
        &coord,
        &[("csrf", &csrf(&coord)), ("choice", "json:88")],
    )
    .await;
    assert!(got.expect(404).contains(zh(T::ConflictGone)));
}

#[tokio::test]
async fn a_typed_value_resolves_a_conflict_too() {
    let s = Server::new().await;
    let rec = make_conflict(&s).await;
    let coord = s.issue("coordinator", "d").await;
    let id = s.get("/v1/conflicts", &coord).await.expect(200)[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let got = post(
        &s,
        &format!("/conflicts/{id}/resolve"),
        &coord,
        &[
            ("csrf", &csrf(&coord)),
            ("choice", "custom"),
            ("custom", "89"),
            ("org", "s1"),
        ],
    )
    .await;
    got.assert_redirect("/conflicts?resolved=1&org=s1");
    assert_eq!(s.record(&rec).await["fields"]["attendees"], 89);
}

// Rejections and devices --------------------------------------------------

#[tokio::test]
async fn the_rejections_page_lists_refused_edits() {
    let s = Server::new().await;
    let f = s.issue("field", "s1").await;
    let coord = s.issue("coordinator", "d").await;
    let bad = lecture(&f, &new_id(), "zz", "2020-06-01", 1);
    assert_rejected(&s.push_one(&f, &bad).await, &bad, "unknown_org_unit");
    let mut overlong = lecture(&f, &new_id(), "c1", "2020-06-01", 1);
    overlong["set"]["title"] = json!("<script>alert(1)</script>".repeat(20));
    assert_rejected(&s.push_one(&f, &overlong).await, &overlong, "invalid_field");

    let got = get(&s, "/rejections", &coord).await;
    let body = got.expect(200);
    assert!(
        body.contains(">unknown_org_unit<") && body.contains(">invalid_field<"),
        "{body}"
    );
    assert!(body.contains("field @ s1"), "the device: {body}");
    assert!(body.contains("2020-07-01 08:00"), "the time: {body}");
    assert!(body.contains(zh(T::TimesBeijing)), "the footer: {body}");
    assert!(
        body.contains(bad["record_id"].as_str().unwrap()),
        "as pushed: {body}"
    );
    assert!(!body.contains("<script>"), "pushed text is escaped");
    let elsewhere = s.issue("coordinator", "s2").await;
    let got = get(&s, "/rejections", &elsewhere).await;
    assert!(got.expect(200).contains(zh(T::NoRejections)));
}

/// Times are read in `--time-zone`, and every page's footer names it.
#[tokio::test]
async fn times_are_shown_in_the_server_s_time_zone() {
    let zone = |name: &str| pufa_server::config::parse_time_zone(name).unwrap();
    for (name, time, footer_zh, footer_en) in [
        (
            "UTC",
            "2020-07-01 00:00",
            zh(T::TimesUtc).to_string(),
            en(T::TimesUtc).to_string(),
        ),
        (
            "Europe/Berlin",
            "2020-07-01 02:00",
            "所有时间均为 Europe/Berlin 时间（现为 UTC+02:00，随夏令时变化）。".to_string(),
            "All times are Europe/Berlin time (now UTC+02:00; it changes with summer time)."
                .to_string(),
        ),
        (
            "Asia/Shanghai",
            "2020-07-01 08:00",
            zh(T::TimesBeijing).to_string(),
            "All times are China Standard Time (Asia/Shanghai).".to_string(),
        ),
    ] {
        let s = Server::configured(|c| c.time_zone = zone(name)).await;
        s.import(&small_tree()).await;
        let f = s.issue("field", "s1").await;
        let coord = s.issue("coordinator", "d").await;
        let bad = lecture(&f, &new_id(), "zz", "2020-06-01", 1);
        assert_rejected(&s.push_one(&f, &bad).await, &bad, "unknown_org_unit");

        let got = get(&s, "/rejections", &coord).await;
        let body = got.expect(200);
        assert!(body.contains(time), "{name}: {body}");
        assert!(
            body.contains(&format!("<footer class=\"muted\">{footer_zh}</footer>")),
            "{name}: {body}"
        );
        let got = get(&s, "/devices?lang=en", &coord).await;
        assert!(got.expect(200).contains(&footer_en), "{name}: {}", got.body);
        // Pages without a session say it too.
        let login = send(&s, Method::GET, "/login", None, &[], None).await;
        assert!(
            login.expect(200).contains(&footer_zh),
            "{name}: {}",
            login.body
        );
        let error = get(&s, "/?from=nonsense", &coord).await;
        assert!(
            error.expect(400).contains(&footer_zh),
            "{name}: {}",
            error.body
        );
    }
}

#[tokio::test]
async fn the_devices_page_marks_devices_silent_for_two_weeks() {
    let s = Server::new().await;
    let quiet = s.issue("field", "c1").await;
    let busy = s.issue("field", "c2").await;
    let never = s.issue("field", "v3").await;
    let coord = s.issue("coordinator", "d").await;
    let report = json!({"app_version": "1.4.2", "outbox_len": 7, "oldest_pending_ms": T0 - 3_600_000, "now_ms": T0 - 5_000});
    s.push_body(
        &quiet,
        &json!({"device_id": quiet.id, "mutations": [], "device": report}),
    )
    .await
    .expect(200);
    s.clock.advance(10 * 86_400_000);
    s.get("/v1/sync/pull", &busy).await.expect(200);
    s.clock.advance(5 * 86_400_000);

    let row_of =
        |body: &str, dev: &Dev| row(body, &format!(r#"data-device="{}""#, dev.id)).to_string();
    let got = get(&s, "/devices", &coord).await;
    let body = got.expect(200);
    let q = row_of(body, &quiet);
    assert!(
        q.starts_with(r#"<tr class="stale""#) && q.contains(zh(T::Stale)),
        "15 days: {q}"
    );
    assert!(
        q.contains(">1.4.2<") && q.contains(">7<") && q.contains("2020-07-01 07:00"),
        "{q}"
    );
    assert!(q.contains("5 秒"), "clock skew: {q}");
    let b = row_of(body, &busy);
    assert!(
        !b.contains("stale") && b.contains(zh(T::Fine)),
        "5 days: {b}"
    );
    let n = row_of(body, &never);
    assert!(
        n.contains(r#"class="stale""#) && n.contains(zh(T::NeverSynced)),
        "{n}"
    );

    // Exactly two weeks after its pull it is not yet flagged; a moment
    // later it is.
    s.clock.advance(9 * 86_400_000);
    let got = get(&s, "/devices", &coord).await;
    assert!(!row_of(got.expect(200), &busy).contains("stale"));
    s.clock.advance(1);
    let got = get(&s, "/devices", &coord).await;
    assert!(row_of(got.expect(200), &busy).contains(zh(T::Stale)));
    // A sync clears the mark.
    s.get("/v1/sync/pull", &quiet).await.expect(200);
    let got = get(&s, "/devices", &coord).await;
    assert!(!row_of(got.expect(200), &quiet).contains("stale"));
}

// Language and layout -------------------------------------------------------

#[tokio::test]
async fn lang_en_switches_to_english_and_is_remembered() {
    let s = Server::new().await;
    let coord = s.issue("coordinator", "d").await;
    let zh_page = get(&s, "/", &coord).await;
    let body = zh_page.expect(200);
    assert!(body.contains(zh(T::Lectures)) && !body.contains(en(T::Lectures)));
    assert!(body.contains(r#"href="/?lang=en""#), "the switch: {body}");

    let got = get(&s, "/?lang=en", &coord).await;
    let body = got.expect(200);
    assert!(body.contains(r#"<html lang="en">"#));
    for t in [T::Lectures, T::NavConflicts, T::Attendees, T::SignOut] {
        assert!(body.contains(en(t)), "{t:?} in English: {body}");
        assert!(!body.contains(zh(t)), "{t:?} not in Chinese: {body}");
    }
    let cookie = got.cookie("pufa_lang").expect("remembered");
    assert!(cookie.starts_with("pufa_lang=en;"), "{cookie}");

    // The cookie keeps English on other pages, error pages included.
    let cookies = format!("{}; pufa_lang=en", session(&coord));
    let got = send(&s, Method::GET, "/devices", Some(&cookies), &[], None).await;
    let body = got.expect(200);
    assert!(body.contains(en(T::LastPush)) && !body.contains(zh(T::LastPush)));
    let got = send(&s, Method::GET, "/?org=s9", Some(&cookies), &[], None).await;
    assert!(got.expect(403).contains(en(T::OutOfScope)));
    let got = send(&s, Method::GET, "/login", Some("pufa_lang=en"), &[], None).await;
    assert!(got.expect(200).contains(en(T::LoginIntro)));

    // And back.
    let got = send(&s, Method::GET, "/?lang=zh", Some(&cookies), &[], None).await;
    let body = got.expect(200);
    assert!(body.contains(zh(T::Lectures)) && !body.contains(en(T::Lectures)));
    assert!(got
        .cookie("pufa_lang")
        .is_some_and(|c| c.starts_with("pufa_lang=zh;")));
}

#[tokio::test]
async fn the_stylesheet_is_cached_and_pages_are_not() {
    let s = Server::new().await;
    let css = send(&s, Method::GET, "/assets/app.css", None, &[], None).await;
    assert!(css.expect(200).contains(".scroll"));
    let resp = s
        .app
        .clone()
        .oneshot(Request::get("/assets/app.css").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let cache = resp.headers()[header::CACHE_CONTROL].to_str().unwrap();
    assert!(cache.contains("max-age="), "{cache}");
    let coord = s.issue("coordinator", "d").await;
    let mut req = Request::get("/").body(Body::empty()).unwrap();
    req.headers_mut()
        .insert(header::COOKIE, session(&coord).parse().unwrap());
    let resp = s.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store");
    assert!(resp.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
}

// Report, coverage, records, downloads -----------------------------------

/// Lectures in c1 (2: Q1 and Q2) and v3 (Q2), topics, a corner in c2 only,
/// a municipal site in v3; one lecture of 2019.
async fn a_year_of_work(s: &Server) {
    let f1 = s.issue("field", "s1").await;
    let f2 = s.issue("field", "s2").await;
    let mut a = lecture(&f1, &new_id(), "c1", "2020-03-01", 87);
    a["set"]["topics"] = json!(["民法典", "宪法"]);
    let mut b = lecture(&f1, &new_id(), "c1", "2020-06-01", 45);
    b["set"]["topics"] = json!(["民法典"]);
    s.push(
        &f1,
        &[
            a,
            b,
            lecture(&f1, &new_id(), "c1", "2019-05-01", 1000),
            corner(&f1, &new_id(), "c2", "active"),
        ],
    )
    .await;
    s.push(
        &f2,
        &[
            lecture(&f2, &new_id(), "v3", "2020-05-01", 12),
            site(&f2, &new_id(), "v3", "municipal", "awarded", 2020),
        ],
    )
    .await;
}

#[tokio::test]
async fn the_report_page_quotes_the_figures_and_links_their_records() {
    let s = Server::new().await;
    a_year_of_work(&s).await;
    let coord = s.issue("coordinator", "d").await;
    let got = get(&s, "/report?year=2020", &coord).await;
    let body = got.expect(200);
    for (id, value) in [
        ("report-lectures-grassroots", "3"),
        ("report-attendees-grassroots", "144"),
        ("report-units-reached", "2 / 3"),
        ("report-corners-active", "1"),
        ("report-units-without-corner", "2"),
        ("report-sites-municipal", "1"),
        ("report-sites-provincial", "0"),
    ] {
        assert_eq!(figure(body, id), value, "#{id}");
    }
    // Which rule each figure follows, under the cards.
    let rules = figure(body, "report-rules");
    assert!(
        rules.contains("讲座按举办日期统计") && rules.contains("图书角为 2020年12月31日 在用的"),
        "{rules}"
    );
    // The paragraph to paste, and the same numbers in it.
    assert!(
        body.contains("2020年,迎泽区深入社区、农村开展法律大讲堂活动3场,参加群众144人次"),
        "{body}"
    );
    // The chart: twelve bars, March, May and June carry one lecture each.
    assert_eq!(body.matches("<rect").count(), 12);
    assert!(body.contains("3月: 1"), "{body}");
    // Topics, most lectures first, each linking to its lectures.
    let topics = &body[body.find(r#"id="topics""#).expect("topics")..];
    assert!(topics.find("民法典").unwrap() < topics.find("宪法").unwrap());
    assert!(topics.contains("figure=lectures"));
    // Years with data are offered.
    assert!(
        body.contains(r#"href="/report?org=d&amp;year=2019""#),
        "{body}"
    );

    // Without a year, a clock in 2020 opens 2020; the English page too.
    let en_page = get(&s, "/report?lang=en", &coord).await;
    let body = en_page.expect(200);
    assert!(
        body.contains("In 2020, 迎泽区 held 3 legal lectures"),
        "{body}"
    );
    assert!(body.contains(en(T::ByTopic)));

    // The drill-down behind "lectures" lists exactly those three.
    let recs = get(
        &s,
        "/records?org=d&figure=lectures&from=2020-01-01&to=2020-12-31",
        &coord,
    )
    .await;
    let body = recs.expect(200);
    assert_eq!(body.matches("data-record=").count(), 3, "{body}");
    assert!(
        !body.contains(">1000<"),
        "the 2019 lecture is not behind 2020"
    );
    // By topic: 宪法 has one.
    let t = get(
        &s,
        "/records?org=d&figure=lectures&from=2020-01-01&to=2020-12-31&topic=%E5%AE%AA%E6%B3%95",
        &coord,
    )
    .await;
    assert_eq!(t.expect(200).matches("data-record=").count(), 1);
    // Bad parameters: a 400 page, not a 500.
    for bad in [
        "/records?figure=nope",
        "/records?figure=records",
        "/report?year=abc",
        "/coverage?quarter=5",
        "/records?figure=lectures&after=xyz",
    ] {
        assert_eq!(get(&s, bad, &coord).await.status, 400, "{bad}");
    }
}

/// The report page of a street of communities: a Word download of the
/// same report, its paragraph worded for communities, a copy of it for
/// paper, and a print stylesheet; another street's download is refused.
#[tokio::test]
async fn the_report_downloads_as_a_word_document_and_prints_on_a4() {
    use std::io::Read as _;
    let s = Server::new().await;
    a_year_of_work(&s).await;
    let coord = s.issue("coordinator", "s1").await;
    let page = get(&s, "/report?year=2020", &coord).await;
    let body = page.expect(200);
    let paragraph =
        "2020年,柳巷街道深入社区开展法律大讲堂活动2场,参加群众132人次,覆盖2个社区中的1个";
    assert!(body.contains(paragraph), "{body}");
    assert!(!body.contains("农村") && !body.contains("乡村"), "{body}");
    assert!(
        body.contains(r#"href="/report.docx?org=s1&amp;year=2020&amp;lang=zh""#),
        "{body}"
    );
    assert!(body.contains(zh(T::ReportDocx)), "{body}");
    assert!(body.contains(r#"<p class="print-only">"#), "{body}");
    assert!(!body.contains(" style="), "the CSP allows no inline styles");

    let mut req = Request::get("/report.docx?org=s1&year=2020&lang=zh")
        .body(Body::empty())
        .unwrap();
    req.headers_mut()
        .insert(header::COOKIE, session(&coord).parse().unwrap());
    let resp = s.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    );
    let disposition = resp.headers()[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .to_string();
    // 柳巷街道2020年法治宣传教育工作报告.docx
    assert!(
        disposition.starts_with("attachment;")
            && disposition
                .contains("filename*=UTF-8''%E6%9F%B3%E5%B7%B7%E8%A1%97%E9%81%932020%E5%B9%B4"),
        "{disposition}"
    );
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let mut xml = String::new();
    zip.by_name("word/document.xml")
        .unwrap()
        .read_to_string(&mut xml)
        .unwrap();
    for needle in [
        "柳巷街道2020年度法治宣传教育工作情况报告",
        "一、法治宣传教育活动开展情况",
        paragraph,
    ] {
        assert!(xml.contains(needle), "{needle:?} not in {xml}");
    }

    // Another street's report, an unknown unit, a bad year.
    for path in [
        "/report.docx?org=s2&year=2020",
        "/report.docx?org=d&year=2020",
    ] {
        let got = get(&s, path, &coord).await;
        assert!(got.expect(403).contains(zh(T::OutOfScope)), "{path}");
    }
    assert_eq!(get(&s, "/report.docx?year=abc", &coord).await.status, 400);

    let css = send(&s, Method::GET, "/assets/app.css", None, &[], None).await;
    let css = css.expect(200);
    let print = &css[css.find("@media print").expect("a print stylesheet")..];
    for rule in ["size:A4", "header.top", ".print-only{display:block}"] {
        assert!(print.contains(rule), "{rule} not in {print}");
    }
}

#[tokio::test]
async fn the_coverage_page_marks_units_without_a_corner_or_a_lecture() {
    let s = Server::new().await;
    a_year_of_work(&s).await;
    let coord = s.issue("coordinator", "d").await;
    // Q2 2020: c1 and v3 held lectures, c2 did not; only c2 has a corner.
    let got = get(&s, "/coverage?year=2020&quarter=2", &coord).await;
    let body = got.expect(200);
    assert_eq!(figure(body, "coverage-units"), "3");
    assert_eq!(figure(body, "coverage-no-corner"), "2");
    assert!(figure(body, "coverage-rules").contains("2020年12月31日"));
    assert_eq!(figure(body, "coverage-no-lecture"), "1");
    let c1 = row(body, r#"data-org="c1""#);
    assert!(
        c1.contains("stale") && c1.contains(zh(T::MarkNoCorner)),
        "{c1}"
    );
    let c2 = row(body, r#"data-org="c2""#);
    assert!(c2.contains("第 2 季度无讲座"), "{c2}");
    assert!(!c2.contains(zh(T::MarkNoCorner)), "{c2}");
    // Q1: only c1 held one.
    let q1 = get(&s, "/coverage?year=2020&quarter=1&gaps=1", &coord).await;
    assert_eq!(figure(q1.expect(200), "coverage-no-lecture"), "2");
    // A street coordinator sees only its own units, and not the other street.
    let street = s.issue("coordinator", "s2").await;
    let got = get(&s, "/coverage?year=2020", &street).await;
    let body = got.expect(200);
    assert_eq!(figure(body, "coverage-units"), "1");
    assert!(!body.contains(r#"data-org="c1""#));
    assert_eq!(get(&s, "/coverage?org=s1", &street).await.status, 403);
    assert_eq!(
        get(&s, "/records?org=s1&figure=corners_active", &street)
            .await
            .status,
        403
    );
}

#[tokio::test]
async fn downloads_are_csv_with_a_bom_and_xlsx_and_stay_in_scope() {
    let s = Server::new().await;
    a_year_of_work(&s).await;
    let coord = s.issue("coordinator", "d").await;
    let csv = get(
        &s,
        "/export/lecture.csv?from=2020-01-01&to=2020-12-31&figure=lectures",
        &coord,
    )
    .await;
    let body = csv.expect(200);
    assert!(body.starts_with('\u{feff}'), "BOM first");
    let lines: Vec<&str> = body.trim_end().split("\r\n").collect();
    assert_eq!(lines.len(), 4, "header + 3 lectures: {body}");
    assert!(lines[0].contains("1级单位") && lines[0].contains("参加人数"));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("迎泽区,柳巷街道,柳巷第01社区")),
        "{body}"
    );
    let xlsx = get(
        &s,
        "/export/totals.xlsx?from=2020-01-01&to=2020-12-31",
        &coord,
    )
    .await;
    assert!(xlsx.expect(200).starts_with("PK"), "a zip (xlsx)");
    // Signed out: no data.
    let anon = send(&s, Method::GET, "/export/lecture.csv", None, &[], None).await;
    assert_eq!(anon.status, 303);
    // A street coordinator's export holds its street only.
    let street = s.issue("coordinator", "s2").await;
    let got = get(
        &s,
        "/export/lecture.csv?figure=records&kind=lecture",
        &street,
    )
    .await;
    let body = got.expect(200);
    assert_eq!(body.trim_end().split("\r\n").count(), 2, "{body}");
    assert!(body.contains("郝庄村") && !body.contains("柳巷"));
    assert_eq!(
        get(&s, "/export/lecture.csv?org=s1", &street).await.status,
        403
    );
    assert_eq!(get(&s, "/export/nope.csv", &coord).await.status, 404);
}

// Reporting periods --------------------------------------------------------

/// A street submits 2020, the district returns it with a reason, the
/// street resubmits, the district approves: each step from the page, in
/// Chinese; the communities show the lock; a refused step says why in
/// Chinese above the list.
#[tokio::test]
async fn periods_are_submitted_returned_and_approved_from_the_page() {
    let s = Server::new().await;
    let street = s.issue("coordinator", "s1").await;
    let district = s.issue("coordinator", "d").await;
    let page = get(&s, "/periods?year=2020", &street).await;
    let body = page.expect(200);
    assert!(body.contains(zh(T::PeriodsIntro)), "{body}");
    let s1 = row(body, r#"data-unit="s1" data-period="2020""#);
    assert!(
        s1.contains(zh(T::StateOpen)) && s1.contains(zh(T::ActSubmit)),
        "{s1}"
    );
    assert!(
        !s1.contains(zh(T::ActApprove)),
        "a street cannot approve itself: {s1}"
    );

    let step = |dev: &Dev, action: &'static str, comment: &'static str| {
        let token = csrf(dev);
        let dev = dev.clone();
        let s = &s;
        async move {
            post(
                s,
                "/periods",
                &dev,
                &[
                    ("csrf", token.as_str()),
                    ("org_unit", "s1"),
                    ("period", "2020"),
                    ("action", action),
                    ("comment", comment),
                    ("year", "2020"),
                ],
            )
            .await
        }
    };
    step(&street, "submit", "")
        .await
        .assert_redirect("/periods?year=2020&done=1");
    let got = step(&district, "return", "").await;
    assert!(got.expect(400).contains(zh(T::StepNeedsReason)));
    step(&district, "return", "请补录十二月的讲座")
        .await
        .assert_redirect("/periods?year=2020&done=1");
    let body = get(&s, "/periods?year=2020", &street)
        .await
        .expect(200)
        .to_string();
    let s1 = row(&body, r#"data-unit="s1" data-period="2020""#);
    assert!(
        s1.contains(zh(T::StateReturned)) && s1.contains("请补录十二月的讲座"),
        "{s1}"
    );
    let got = step(&street, "approve", "").await;
    assert!(got.expect(403).contains(zh(T::StepNeedsApprover)));
    step(&street, "submit", "已补录")
        .await
        .assert_redirect("/periods?year=2020&done=1");
    step(&district, "approve", "")
        .await
        .assert_redirect("/periods?year=2020&done=1");
    let got = step(&district, "approve", "").await;
    let body = got.expect(400);
    assert!(
        body.contains(zh(T::StepWrongState)) && body.contains(zh(T::StateApproved)),
        "{body}"
    );

    let body = get(&s, "/periods?year=2020", &district)
        .await
        .expect(200)
        .to_string();
    let s1 = row(&body, r#"data-unit="s1" data-period="2020""#);
    assert!(
        s1.contains(zh(T::StateApproved)) && s1.contains(zh(T::ActReopen)),
        "{s1}"
    );
    let c1 = row(&body, r#"data-unit="c1" data-period="2020""#);
    assert!(
        c1.contains(zh(T::LockedBy)) && c1.contains("柳巷街道"),
        "{c1}"
    );
    assert!(
        !c1.contains("<form"),
        "a locked period offers no step: {c1}"
    );
    // A month of the approved year, from the other-period form.
    let token = csrf(&street);
    let got = post(
        &s,
        "/periods",
        &street,
        &[
            ("csrf", &token),
            ("org_unit", "c1"),
            ("period", "2020-03"),
            ("action", "submit"),
        ],
    )
    .await;
    assert!(
        got.expect(400).contains(zh(T::StepLockedAbove)),
        "{}",
        got.body
    );
    let got = post(
        &s,
        "/periods",
        &street,
        &[
            ("csrf", &token),
            ("org_unit", "c1"),
            ("period", "2020年3月"),
            ("action", "submit"),
        ],
    )
    .await;
    assert!(got.expect(400).contains(zh(T::StepBadPeriod)));
    // Outside the scope, and without the CSRF token: refused.
    let other = s.issue("coordinator", "s2").await;
    let got = post(
        &s,
        "/periods",
        &other,
        &[
            ("csrf", &csrf(&other)),
            ("org_unit", "s1"),
            ("period", "2020"),
            ("action", "submit"),
        ],
    )
    .await;
    got.expect(403);
    let got = post(
        &s,
        "/periods",
        &street,
        &[("org_unit", "s1"), ("period", "2020"), ("action", "submit")],
    )
    .await;
    assert!(got.expect(403).contains(zh(T::CsrfFailed)));
    get(&s, "/periods?org=s1", &other).await.expect(403);
    get(&s, "/periods?year=abc", &street).await.expect(400);
}

#[tokio::test]
async fn legal_understanders_show_on_the_overview_report_coverage_and_record_pages() {
    let s = Server::new().await;
    a_year_of_work(&s).await;
    let f1 = s.issue("field", "s1").await;
    let f2 = s.issue("field", "s2").await;
    let phone = "0351-4041234";
    s.push(
        &f1,
        &[
            understander(&f1, &new_id(), "c1", "2020-04-01", "serving", Some(phone)),
            understander(&f1, &new_id(), "c2", "2020-05-01", "resigned", None),
        ],
    )
    .await;
    s.push(
        &f2,
        &[understander(
            &f2,
            &new_id(),
            "v3",
            "2019-11-01",
            "serving",
            None,
        )],
    )
    .await;
    let coord = s.issue("coordinator", "d").await;

    // The overview's card, in the look of the others, and the sub-units.
    let body = get(&s, "/?from=2020-01-01&to=2020-12-31", &coord).await;
    let body = body.expect(200);
    assert!(body.contains(zh(T::Understanders)), "{body}");
    assert_eq!(zh(T::Understanders), "法律明白人");
    for (id, value) in [
        ("understanders-appointed", "2"),
        ("understanders-serving", "2"),
        ("understanders-units", "2 / 3"),
    ] {
        assert_eq!(figure(body, id), value, "#{id}");
    }
    assert!(
        body.contains("figure=understanders_serving&amp;to=2020-12-31"),
        "{body}"
    );
    let s1 = row(body, r#"data-org="s1""#);
    assert!(s1.contains("1 (1/2)"), "{s1}");

    // The report's card.
    let body = get(&s, "/report?year=2020", &coord).await;
    let body = body.expect(200);
    for (id, value) in [
        ("report-understanders-appointed", "2"),
        ("report-understanders-serving", "2"),
        ("report-units-without-understander", "1"),
    ] {
        assert_eq!(figure(body, id), value, "#{id}");
    }
    assert!(body.contains(zh(T::UnderstandersServingAtYearEnd)));

    // Coverage: c2's understander has resigned, so c2 has a gap.
    let body = get(&s, "/coverage?year=2020&quarter=2", &coord).await;
    let body = body.expect(200);
    assert_eq!(figure(body, "coverage-no-understander"), "1");
    assert!(body.contains(zh(T::UnderstandersInUnit)));
    let c2 = row(body, r#"data-org="c2""#);
    assert!(c2.contains(zh(T::MarkNoUnderstander)), "{c2}");
    let v3 = row(body, r#"data-org="v3""#);
    assert!(!v3.contains(zh(T::MarkNoUnderstander)), "{v3}");
    let en_body = get(&s, "/coverage?year=2020&lang=en", &coord).await;
    assert!(en_body.expect(200).contains(en(T::MarkNoUnderstander)));

    // The records behind "serving", with the schema's labels and no phone.
    let body = get(
        &s,
        "/records?figure=understanders_serving&to=2020-12-31",
        &coord,
    )
    .await;
    let body = body.expect(200);
    assert_eq!(body.matches("data-record=").count(), 2, "{body}");
    assert!(body.contains("选聘日期") && body.contains("在任"), "{body}");
    assert!(!body.contains(phone), "{body}");

    // The report page offers the kind's download; it has no phone numbers.
    let report = get(&s, "/report?year=2020", &coord).await;
    assert!(report
        .expect(200)
        .contains("/export/legal_understander.csv"));
    let csv = get(&s, "/export/legal_understander.csv?figure=records", &coord).await;
    let body = csv.expect(200);
    assert_eq!(body.trim_end().split("\r\n").count(), 4, "{body}");
    assert!(
        !body.contains(phone) && !body.contains("联系电话"),
        "{body}"
    );
}

/// The `tag` element of `body` that carries `attr`.
fn element<'a>(body: &'a str, tag: &str, attr: &str) -> &'a str {
    let at = body
        .find(attr)
        .unwrap_or_else(|| panic!("no {tag} with {attr} in {body}"));
    let start = body[..at].rfind(&format!("<{tag}")).expect("element start");
    let end = at + body[at..].find(&format!("</{tag}>")).expect("element end");
    &body[start..end]
}

/// A lecture titled `title` in `org` on `day`, pushed; its id.
async fn titled_lecture(s: &Server, dev: &Dev, org: &str, day: &str, title: &str) -> String {
    let rec = new_id();
    let mut m = lecture(dev, &rec, org, day, 25);
    m["set"]["title"] = json!(title);
    assert_applied(&s.push_one(dev, &m).await, &m);
    rec
}

#[tokio::test]
async fn likely_duplicates_are_reviewed_side_by_side() {
    let s = Server::new().await;
    let a = s.issue("field", "s1").await;
    let b = s.issue("field", "s1").await;
    let street = s.issue("coordinator", "s1").await;
    let other = s.issue("coordinator", "s2").await;
    let district = s.issue("coordinator", "d").await;
    let x = titled_lecture(&s, &a, "c1", "2020-03-10", "民法典进社区").await;
    let y = titled_lecture(&s, &b, "c1", "2020-03-10", "《民法典》进社区").await;
    let p = titled_lecture(&s, &a, "c2", "2020-06-02", "反诈宣传讲座").await;
    let q = titled_lecture(&s, &b, "c2", "2020-06-02", "反诈宣传").await;

    let body = get(&s, "/duplicates?year=2020", &street)
        .await
        .expect(200)
        .to_string();
    assert!(body.contains(zh(T::DuplicatesIntro)), "{body}");
    assert!(body.contains(r#"data-count="2""#), "{body}");
    let (lo, hi) = if x < y { (&x, &y) } else { (&y, &x) };
    let first = element(&body, "article", &format!(r#"data-a="{lo}" data-b="{hi}""#));
    for text in [
        "柳巷第01社区",
        "2020-03-10",
        "《民法典》进社区",
        zh(T::NotDuplicate),
        zh(T::DeleteLeft),
        zh(T::DeleteRight),
        zh(T::RecordedBy),
    ] {
        assert!(first.contains(text), "{text} in {first}");
    }
    // The report says how many, linking to the queue; another street sees
    // none of them.
    let report = get(&s, "/report?org=s1&year=2020", &street).await;
    let report = report.expect(200);
    let link = element(report, "a", r#"id="report-duplicates""#);
    assert!(
        link.contains("/duplicates?org=s1&amp;year=2020")
            && link.contains(&T::ReportHasDuplicates.with_n(Lang::Zh, 2)),
        "{link}"
    );
    let theirs = get(&s, "/duplicates?year=2020", &other).await;
    assert!(theirs.expect(200).contains(r#"data-count="0""#));
    assert_eq!(
        get(&s, "/duplicates?year=2020&org=s1", &other).await.status,
        403
    );

    let act = |dev: &Dev, action: &'static str, a: String, b: String| {
        let token = csrf(dev);
        let dev = dev.clone();
        let s = &s;
        async move {
            let form = [
                ("csrf", token.as_str()),
                ("year", "2020"),
                ("a", a.as_str()),
                ("b", b.as_str()),
                ("action", action),
            ];
            post(s, "/duplicates", &dev, &form).await
        }
    };
    // Out of scope: named nothing, nothing changed.
    let got = act(&other, "dismiss", x.clone(), y.clone()).await;
    assert!(got.expect(404).contains(zh(T::DuplicateGone)));
    let got = act(&street, "merge", x.clone(), y.clone()).await;
    got.expect(400);
    let got = act(&street, "dismiss", x.clone(), "nope".into()).await;
    got.expect(400);
    act(&street, "dismiss", x.clone(), y.clone())
        .await
        .assert_redirect("/duplicates?year=2020&done=dismissed");
    let body = get(&s, "/duplicates?year=2020&done=dismissed", &street)
        .await
        .expect(200)
        .to_string();
    assert!(
        body.contains(zh(T::DuplicateDismissed)) && body.contains(r#"data-count="1""#),
        "{body}"
    );

    // A locked period refuses the delete, in words; reopened, it goes.
    let token = csrf(&district);
    let approve = [
        ("csrf", token.as_str()),
        ("org_unit", "s1"),
        ("period", "2020"),
        ("action", "approve"),
    ];
    post(&s, "/periods", &district, &approve)
        .await
        .assert_redirect("/periods?done=1");
    let got = act(&street, "delete-b", p.clone(), q.clone()).await;
    assert!(got.expect(400).contains(zh(T::DuplicateLocked)));
    let reopen = [
        ("csrf", token.as_str()),
        ("org_unit", "s1"),
        ("period", "2020"),
        ("action", "reopen"),
        ("comment", "删除重复记录"),
    ];
    post(&s, "/periods", &district, &reopen)
        .await
        .assert_redirect("/periods?done=1");
    let (lo, hi) = if p < q { (p, q) } else { (q, p) };
    act(&street, "delete-b", lo.clone(), hi.clone())
        .await
        .assert_redirect("/duplicates?year=2020&done=deleted");
    assert!(s.record(&hi).await["deleted"].as_bool().unwrap());
    assert!(!s.record(&lo).await["deleted"].as_bool().unwrap());
    let body = get(&s, "/duplicates?year=2020", &street)
        .await
        .expect(200)
        .to_string();
    assert!(body.contains(zh(T::NoDuplicates)), "{body}");
    let got = act(&street, "delete-b", lo, hi).await;
    assert!(got.expect(404).contains(zh(T::DuplicateGone)));
    let report = get(&s, "/report?org=s1&year=2020", &street).await;
    assert!(!report.expect(200).contains("report-duplicates"));

    // At phone width the two records stack.
    let css = send(&s, Method::GET, "/assets/app.css", None, &[], None).await;
    let css = css.expect(200);
    let phone = &css[css.find("@media (max-width:40rem)").expect("a phone rule")..];
    let phone = &phone[..phone.find('\n').unwrap_or(phone.len())];
    assert!(
        phone.contains(".pair{grid-template-columns:1fr}"),
        "{phone}"
    );
}
