//! What the server gives the field app: `GET /v1/schema` (agreeing with
//! core's field rules, every kind, field and limit), the app's files at
//! `/field/` (types, CSP, caching, no way out of the folder), compressed
//! answers and gzip request bodies (the body limit counted decompressed,
//! other codings refused with 415), and the bytes a record costs on the
//! wire, plain and compressed, measured through a counting TCP proxy in
//! front of a real server.

#[allow(dead_code)] // The harness is shared with contract.rs, which uses more of it.
mod support;

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request};
use http_body_util::BodyExt as _;
use pufa_client::transport::{self as sdk, HttpTransport, Transport as _};
use pufa_core::schema::{choice_label, FieldType, Kind, RejectCode};
use pufa_core::wire::{PULL_LIMIT_MAX, PUSH_MUTATIONS_MAX};
use serde_json::{json, Value};
use support::http::TestServer;
use support::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tower::ServiceExt as _;

/// Sends one request through the router with extra headers.
async fn request(
    s: &Server,
    method: Method,
    path: &str,
    headers: &[(header::HeaderName, &str)],
    body: Vec<u8>,
) -> Resp {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(k, *v);
    }
    let resp = s
        .app
        .clone()
        .oneshot(req.body(Body::from(body)).expect("request"))
        .await
        .expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Resp {
        status,
        body: body.to_vec(),
        headers,
    }
}

fn header_of(resp: &Resp, name: header::HeaderName) -> Option<&str> {
    resp.headers.get(name).map(|v| v.to_str().expect("ascii"))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

// ---------------------------------------------------------------- schema

/// Asserts that one field of the schema says what core's spec says.
#[track_caller]
fn check_field(kind: Kind, got: &Value) {
    let name = got["name"].as_str().expect("name");
    let spec = kind.field(name).expect("a field of core's");
    let at = format!("{}.{name}", kind.as_str());
    assert_eq!(got["required"], json!(spec.required), "{at}");
    assert_eq!(
        got["label"],
        json!({"zh-CN": spec.label.zh, "en": spec.label.en}),
        "{at}"
    );
    let expected = match spec.ty {
        FieldType::OrgUnit => json!({"type": "org_unit"}),
        FieldType::HeldOn => {
            json!({"type": "date", "min": "2000-01-01", "max_days_after_today": 366})
        }
        FieldType::Date => json!({"type": "date"}),
        FieldType::Text { min, max } => {
            json!({"type": "text", "min_chars": min, "max_chars": max})
        }
        FieldType::Int { min, max } => json!({"type": "int", "min": min, "max": max}),
        FieldType::Topics => {
            json!({"type": "topics", "max_items": 20, "item_min_chars": 1, "item_max_chars": 50})
        }
        FieldType::OneOf(values) => json!({
            "type": "enum",
            "values": values.iter().map(|v| {
                let l = choice_label(name, v).expect("every value is named");
                json!({"value": v, "label": {"zh-CN": l.zh, "en": l.en}})
            }).collect::<Vec<_>>(),
        }),
        FieldType::Location => json!({
            "type": "location", "lat_min": -90.0, "lat_max": 90.0, "lon_min": -180.0, "lon_max": 180.0
        }),
        FieldType::Phone { max } => json!({"type": "phone", "max_chars": max}),
    };
    let mut rule = got.as_object().expect("an object").clone();
    for k in ["name", "required", "label"] {
        rule.remove(k);
    }
    assert_eq!(Value::Object(rule), expected, "{at}");
}

#[tokio::test]
async fn the_schema_is_cores_with_this_servers_limits_and_zone() {
    let s = Server::configured(|c| {
        c.max_body_bytes = 3 * 1024 * 1024;
        c.time_zone = pufa_server::config::parse_time_zone("Asia/Urumqi").unwrap();
    })
    .await;
    s.import(&small_tree()).await;
    let field = s.issue("field", "c1").await;
    let schema = s.get("/v1/schema", &field).await.expect(200);

    assert_eq!(schema["schema_version"], 1);
    assert_eq!(schema["time_zone"], "Asia/Urumqi");
    let limits = &schema["limits"];
    assert_has(
        limits,
        &json!({
            "push_mutations_max": PUSH_MUTATIONS_MAX,
            "push_body_bytes_max": 3 * 1024 * 1024,
            "pull_limit_default": 500,
            "pull_limit_max": PULL_LIMIT_MAX,
            "held_on_future_days_max": 366,
            "notes_chars_max": 2000,
            "topics_items_max": 20,
            "topic_chars_max": 50,
            "clock_skew_secs_max": 300,
        }),
    );
    for (k, v) in limits.as_object().unwrap() {
        assert!(v.is_u64() || v.is_i64(), "limit {k} is a whole number: {v}");
        assert!(
            k.ends_with("_max") || k.ends_with("_default") || k.ends_with("_secs"),
            "{k} names its unit or role"
        );
    }

    let kinds = schema["kinds"].as_array().expect("kinds");
    let names: Vec<_> = kinds.iter().map(|k| k["kind"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "lecture",
            "library_corner",
            "demo_site",
            "legal_understander"
        ]
    );
    assert_eq!(kinds[3]["label"]["zh-CN"], "法律明白人");
    for (kind, got) in Kind::ALL.into_iter().zip(kinds) {
        let label = kind.label();
        assert_eq!(got["label"], json!({"zh-CN": label.zh, "en": label.en}));
        let fields = got["fields"].as_array().expect("fields");
        let listed: Vec<_> = fields.iter().map(|f| f["name"].as_str().unwrap()).collect();
        let core: Vec<_> = kind.fields().iter().map(|f| f.name).collect();
        assert_eq!(listed, core, "{kind:?}: every field, in core's order");
        for f in fields {
            check_field(kind, f);
        }
    }

    let rejections = schema["rejections"].as_object().expect("rejections");
    assert_eq!(rejections.len(), RejectCode::ALL.len());
    for code in RejectCode::ALL {
        let m = code.message();
        assert_eq!(
            rejections[code.as_str()],
            json!({"zh-CN": m.zh, "en": m.en})
        );
    }
    assert_eq!(
        rejections["missing_field"],
        json!({"zh-CN": "缺少必填项：{field}", "en": "Required field missing: {field}"})
    );
    assert!(schema["messages"]["unauthorized"]["zh-CN"].is_string());

    // The topic vocabulary, canonical names with their synonyms.
    let topics = schema["topics"].as_array().expect("topics");
    assert_eq!(topics.len(), pufa_core::topics::VOCABULARY.len());
    let fraud = topics
        .iter()
        .find(|t| t["name"] == "反电信网络诈骗")
        .expect("反电信网络诈骗");
    assert_eq!(fraud["label"]["zh-CN"], "反电信网络诈骗");
    for synonym in ["反诈", "电信网络诈骗", "防范诈骗", "防诈骗"] {
        assert!(
            fraud["synonyms"]
                .as_array()
                .unwrap()
                .contains(&json!(synonym)),
            "{synonym}"
        );
    }
}

/// Every request-level error code of the contract's table
/// (`docs/protocol.md` §2) that a field device can meet has a message in
/// `/v1/schema`, so a phone never shows a bare code; a code added to the
/// table without one fails here.
#[tokio::test]
async fn the_schema_explains_every_error_a_field_device_can_meet() {
    // Codes only admin and coordinator calls answer.
    const NOT_FOR_DEVICES: [&str; 3] = ["already_exists", "invalid_org_tree", "unknown_org_unit"];
    let s = Server::new().await;
    let field = s.issue("field", "c1").await;
    let schema = s.get("/v1/schema", &field).await.expect(200);
    let protocol = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.md"),
    )
    .unwrap();
    // Rows like "| `bad_json` | 400 | …" or "| `a`, `b` | 400 | …".
    let codes: Vec<&str> = protocol
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once("` | "))
        .filter(|(_, rest)| rest.starts_with(|c: char| c.is_ascii_digit()))
        .flat_map(|(cell, _)| cell.split("`, `"))
        .collect();
    assert!(
        codes.len() > 10 && codes.contains(&"body_timeout"),
        "{codes:?}"
    );
    for code in codes.into_iter().filter(|c| !NOT_FOR_DEVICES.contains(c)) {
        // A rejection code is explained where rejections are.
        let m = match &schema["rejections"][code] {
            Value::Null => &schema["messages"][code],
            rejection => rejection,
        };
        assert!(
            m["zh-CN"].as_str().is_some_and(|t| !t.is_empty())
                && m["en"].as_str().is_some_and(|t| !t.is_empty()),
            "no message for {code}: {}",
            schema["messages"]
        );
    }
}

#[tokio::test]
async fn the_schema_needs_a_token_of_any_role() {
    let s = Server::new().await;
    let coord = s.issue("coordinator", "s1").await;
    for dev in [&s.admin, &coord] {
        s.get("/v1/schema", dev).await.expect(200);
    }
    let none = s
        .send(Method::GET, "/v1/schema", None, Vec::new(), None)
        .await;
    assert_error(&none, 401, "unauthorized");
    let wrong = s
        .send(
            Method::GET,
            "/v1/schema",
            Some("Bearer pufa_nope"),
            Vec::new(),
            None,
        )
        .await;
    assert_error(&wrong, 401, "unauthorized");
}

// ---------------------------------------------------------------- /field/

/// The app's files as they lie in `client-sdk/web/`, relative paths.
fn app_files() -> Vec<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../client-sdk/web");
    let mut out = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).expect("client-sdk/web") {
            let path = e.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let rel = path
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

#[track_caller]
fn assert_csp(resp: &Resp) {
    assert_eq!(
        header_of(resp, header::CONTENT_SECURITY_POLICY),
        Some(pufa_server::field_app::CSP),
    );
    assert_eq!(
        header_of(resp, header::X_CONTENT_TYPE_OPTIONS),
        Some("nosniff")
    );
}

#[tokio::test]
async fn the_app_is_served_from_the_binary_with_its_types_and_csp() {
    let s = Server::empty().await;
    let moved = request(&s, Method::GET, "/field", &[], Vec::new()).await;
    assert_eq!(moved.status.as_u16(), 308);
    assert_eq!(header_of(&moved, header::LOCATION), Some("/field/"));

    let index = request(&s, Method::GET, "/field/", &[], Vec::new()).await;
    assert_eq!(index.status.as_u16(), 200);
    assert_eq!(
        header_of(&index, header::CONTENT_TYPE),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(header_of(&index, header::CACHE_CONTROL), Some("no-cache"));
    assert_csp(&index);
    let on_disk = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../client-sdk/web/index.html"
    ))
    .unwrap();
    assert!(index.body == on_disk, "the embedded index.html is the file");

    // Revalidation: the ETag answers 304 until the file changes.
    let etag = header_of(&index, header::ETAG)
        .expect("an ETag")
        .to_string();
    assert!(etag.starts_with("W/\""), "{etag}");
    let again = request(
        &s,
        Method::GET,
        "/field/",
        &[(header::IF_NONE_MATCH, &etag)],
        Vec::new(),
    )
    .await;
    assert_eq!(again.status.as_u16(), 304);
    assert!(again.body.is_empty());
    let other = request(
        &s,
        Method::GET,
        "/field/",
        &[(header::IF_NONE_MATCH, "W/\"0\"")],
        Vec::new(),
    )
    .await;
    assert_eq!(other.status.as_u16(), 200);

    // Every file in the folder, with the type its extension calls for.
    let files = app_files();
    for must in ["index.html", "sw.js", "manifest.webmanifest"] {
        assert!(files.iter().any(|f| f == must), "client-sdk/web has {must}");
    }
    for rel in &files {
        let got = request(&s, Method::GET, &format!("/field/{rel}"), &[], Vec::new()).await;
        assert_eq!(got.status.as_u16(), 200, "{rel}");
        assert_csp(&got);
        assert!(header_of(&got, header::ETAG).is_some(), "{rel}");
        assert_eq!(
            header_of(&got, header::CACHE_CONTROL),
            Some("no-cache"),
            "{rel}"
        );
        let ext = rel.rsplit_once('.').map_or("", |(_, e)| e);
        let expected = match ext {
            "html" => "text/html; charset=utf-8",
            "js" => "text/javascript; charset=utf-8",
            "css" => "text/css; charset=utf-8",
            "webmanifest" => "application/manifest+json",
            "json" => "application/json",
            "svg" => "image/svg+xml",
            "png" => "image/png",
            other => panic!("{rel}: no type is set for .{other} files (field_app::content_type)"),
        };
        assert_eq!(
            header_of(&got, header::CONTENT_TYPE),
            Some(expected),
            "{rel}"
        );
        let on_disk = std::fs::read(format!(
            "{}/../client-sdk/web/{rel}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        assert!(
            got.body == on_disk,
            "{rel}: the embedded file is not the one in client-sdk/web"
        );
    }
}

#[tokio::test]
async fn unknown_files_and_paths_out_of_the_folder_are_not_found() {
    let s = Server::empty().await;
    for path in [
        "/field/nope.js",
        "/field/js/",
        "/field/../Cargo.toml",
        "/field/../../Cargo.toml",
        "/field/js/../../server/Cargo.toml",
        "/field/%2e%2e/Cargo.toml",
        "/field/%2E%2E%2FCargo.toml",
        "/field/..%2f..%2fCargo.toml",
        "/field/.%2e/server/Cargo.toml",
        "/field/%2fetc%2fpasswd",
        "/field//etc/passwd",
        "/field/.git/config",
    ] {
        let got = request(&s, Method::GET, path, &[], Vec::new()).await;
        assert_error(&got, 404, "not_found");
        assert_csp(&got);
        let body = String::from_utf8_lossy(&got.body);
        assert!(
            !body.contains("[workspace]") && !body.contains("[package]"),
            "{path}: {body}"
        );
    }
}

// ---------------------------------------------------------------- compression

/// A GET asking for `accept` (an `Accept-Encoding`), with `auth` (a
/// whole `Authorization` value) when given.
async fn get_accepting(s: &Server, path: &str, auth: Option<&str>, accept: &str) -> Resp {
    let mut headers = vec![(header::ACCEPT_ENCODING, accept)];
    headers.extend(auth.map(|a| (header::AUTHORIZATION, a)));
    request(s, Method::GET, path, &headers, Vec::new()).await
}

/// A push by `dev` whose body is sent as it is, labelled `coding`
/// (`Content-Encoding`), with `length` as its `Content-Length` if given.
async fn push_coded(
    s: &Server,
    dev: &Dev,
    coding: &str,
    body: Vec<u8>,
    length: Option<&str>,
) -> Resp {
    let auth = bearer(dev);
    let mut headers = vec![
        (header::AUTHORIZATION, auth.as_str()),
        (header::CONTENT_ENCODING, coding),
    ];
    headers.extend(length.map(|l| (header::CONTENT_LENGTH, l)));
    request(s, Method::POST, "/v1/sync/push", &headers, body).await
}

#[tokio::test]
async fn answers_are_compressed_as_asked_and_small_ones_are_not() {
    let s = Server::new().await;
    let field = s.issue("field", "c1").await;
    let auth = bearer(&field);
    let plain = get_accepting(&s, "/v1/schema", Some(&auth), "identity").await;
    assert_eq!(header_of(&plain, header::CONTENT_ENCODING), None);

    let gz = get_accepting(&s, "/v1/schema", Some(&auth), "gzip").await;
    assert_eq!(header_of(&gz, header::CONTENT_ENCODING), Some("gzip"));
    assert!(header_of(&gz, header::VARY)
        .is_some_and(|v| v.to_ascii_lowercase().contains("accept-encoding")));
    assert_eq!(gunzip(&gz.body), plain.body);
    assert!(
        gz.body.len() * 2 < plain.body.len(),
        "{} of {}",
        gz.body.len(),
        plain.body.len()
    );

    let br = get_accepting(&s, "/v1/schema", Some(&auth), "br;q=1, gzip;q=0.5").await;
    assert_eq!(header_of(&br, header::CONTENT_ENCODING), Some("br"));
    assert!(
        br.body.len() < gz.body.len() + 64,
        "br {} gzip {}",
        br.body.len(),
        gz.body.len()
    );

    // The app's files too; a tiny answer goes out as it is.
    let js = get_accepting(&s, "/field/js/main.js", None, "gzip").await;
    assert_eq!(header_of(&js, header::CONTENT_ENCODING), Some("gzip"));
    assert_csp(&js);
    let health = get_accepting(&s, "/v1/health", None, "gzip, br").await;
    assert_eq!(health.status.as_u16(), 200);
    assert_eq!(header_of(&health, header::CONTENT_ENCODING), None);
}

#[tokio::test]
async fn gzip_push_bodies_are_read_and_others_refused_with_415() {
    let s = Server::new().await;
    let field = s.issue("field", "c1").await;
    let one = |m: &Value| json!({"device_id": field.id, "mutations": [m]}).to_string();
    for coding in ["gzip", "GZIP", "x-gzip"] {
        let m = lecture(&field, &new_id(), "c1", "2020-06-01", 40);
        let got = push_coded(&s, &field, coding, gzip(one(&m).as_bytes()), None).await;
        assert_applied(&got.expect(200)["results"][0], &m);
    }

    let m = lecture(&field, &new_id(), "c1", "2020-06-01", 40);
    let body = one(&m).into_bytes();
    for coding in ["br", "deflate", "gzip, gzip", "compress"] {
        let got = push_coded(&s, &field, coding, body.clone(), None).await;
        assert_error(&got, 415, "unsupported_encoding");
        assert_eq!(
            header_of(&got, header::ACCEPT_ENCODING),
            Some("gzip"),
            "RFC 7694"
        );
    }

    // Not gzip at all: the body cannot be read, nothing changes.
    let got = push_coded(&s, &field, "gzip", body, None).await;
    assert_error(&got, 400, "bad_json");
    let (records, _) = s.pull_all(&field, 0).await;
    assert_eq!(records.len(), 3, "the three gzip pushes, nothing else");
}

#[tokio::test]
async fn the_body_limit_counts_decompressed_bytes_so_a_gzip_bomb_is_413() {
    const LIMIT: usize = 1024 * 1024;
    let s = Server::configured(|c| c.max_body_bytes = LIMIT).await;
    s.import(&small_tree()).await;
    let field = s.issue("field", "c1").await;

    // 16 MiB of spaces inside a JSON push: about 160 KiB of gzip.
    let mut bomb = br#"{"device_id":""#.to_vec();
    bomb.extend_from_slice(field.id.as_bytes());
    bomb.extend_from_slice(br#"","mutations":[],"pad":""#);
    bomb.resize(bomb.len() + 16 * 1024 * 1024, b' ');
    bomb.extend_from_slice(br#""}"#);
    let small = gzip(&bomb);
    assert!(small.len() < LIMIT / 4, "{}", small.len());
    let got = push_coded(&s, &field, "gzip", small, None).await;
    assert_error(&got, 413, "body_too_large");

    // A gzip body over the limit before decompression is refused unread.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let noise: Vec<u8> = (0..LIMIT + 4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let big = gzip(&noise);
    assert!(big.len() > LIMIT, "{}", big.len());
    let length = big.len().to_string();
    let got = push_coded(&s, &field, "gzip", big, Some(&length)).await;
    assert_error(&got, 413, "body_too_large");

    // Just under the limit decompressed is fine.
    let m = lecture(&field, &new_id(), "c1", "2020-06-01", 40);
    let padded = |pad: usize| {
        json!({"device_id": field.id, "mutations": [m], "pad": " ".repeat(pad)}).to_string()
    };
    let fits = padded(LIMIT - padded(0).len());
    assert_eq!(fits.len(), LIMIT);
    let got = push_coded(&s, &field, "gzip", gzip(fits.as_bytes()), None).await;
    assert_applied(&got.expect(200)["results"][0], &m);
}

#[tokio::test]
async fn streamed_exports_and_backups_still_arrive_whole() {
    let s = Server::new().await;
    let field = s.issue("field", "c1").await;
    let lectures: Vec<Value> = (0..50)
        .map(|i| lecture(&field, &new_id(), "c1", "2020-06-01", i))
        .collect();
    s.push(&field, &lectures).await;
    let admin = bearer(&s.admin);

    let csv = get_accepting(&s, "/v1/exports/lecture.csv?org=d", Some(&admin), "gzip").await;
    assert_eq!(csv.status.as_u16(), 200);
    assert_eq!(header_of(&csv, header::CONTENT_ENCODING), Some("gzip"));
    let text = String::from_utf8(gunzip(&csv.body)).unwrap();
    assert!(text.starts_with('\u{feff}'), "BOM first");
    assert_eq!(text.lines().count(), 51, "a header and 50 rows");

    // Backups and XLSX go out as they are (the latter is a zip already).
    for path in ["/v1/admin/backup", "/v1/exports/lecture.xlsx?org=d"] {
        let got = get_accepting(&s, path, Some(&admin), "gzip, br").await;
        assert_eq!(got.status.as_u16(), 200, "{path}");
        assert_eq!(header_of(&got, header::CONTENT_ENCODING), None, "{path}");
        assert!(got.body.len() > 1000, "{path}");
    }
}

// ---------------------------------------------------------------- bytes on the wire

/// A lecture as field staff record them: every optional field, Chinese text.
fn full_lecture(dev: &str, i: usize) -> Value {
    let topics = [
        "民法典",
        "反电信网络诈骗",
        "未成年人保护",
        "宪法",
        "劳动合同",
        "婚姻家庭",
    ];
    let units = ["c1", "c2"];
    let audience = ["residents", "villagers", "students", "mixed"][i % 4];
    let speaker = ["明", "芳", "强", "丽"][i % 4];
    json!({
        "id": new_id(),
        "record_id": new_id(),
        "kind": "lecture",
        "base_seq": 0,
        "hlc": {"ms": T0 + i as u64, "c": 0, "node": dev},
        "set": {
            "org_unit": units[i % 2],
            "held_on": format!("2020-{:02}-{:02}", 1 + i % 12, 1 + i % 28),
            "title": format!("{}进社区宣讲会（第{}场）", topics[i % topics.len()], i + 1),
            "attendees": 20 + (i * 37) % 180,
            "topics": [topics[i % topics.len()], topics[(i + 2) % topics.len()]],
            "speaker": format!("司法所 王{speaker}"),
            "venue": format!("柳巷第{:02}社区党群服务中心", 1 + i % 2),
            "audience": audience,
            "notes": format!("居民踊跃提问，现场发放宣传资料{}份，解答法律咨询{}人次。", 50 + i % 100, 5 + i % 20),
            "location": {"lat": 37.86 + (i as f64) * 0.0001, "lon": 112.55 - (i as f64) * 0.0001},
        },
    })
}

/// A TCP proxy in front of `target` that counts the bytes each way.
struct CountingProxy {
    url: String,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
}

impl CountingProxy {
    async fn start(target: SocketAddr) -> CountingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (u, d) = (up.clone(), down.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(target).await.unwrap();
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, u.clone()));
                tokio::spawn(pump(sr, cw, d.clone()));
            }
        });
        CountingProxy { url, up, down }
    }

    /// Bytes sent (to the server, to the client) since the last call.
    fn take(&self) -> (u64, u64) {
        (
            self.up.swap(0, Ordering::SeqCst),
            self.down.swap(0, Ordering::SeqCst),
        )
    }
}

/// Copies one direction, counting each chunk before it is passed on (so a
/// client that has read a whole answer has been counted for all of it).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        count.fetch_add(n as u64, Ordering::SeqCst);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// A page of 500 pulled through the proxy by `client` (which decodes what
/// it asked for): (bytes down, records).
async fn pull_through(
    proxy: &CountingProxy,
    client: &reqwest::Client,
    token: &str,
) -> (u64, usize) {
    proxy.take();
    let resp = client
        .get(format!("{}/v1/sync/pull?since=0&limit=500", proxy.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let page: Value = resp.json().await.unwrap();
    let n = page["records"].as_array().unwrap().len();
    (proxy.take().1, n)
}

#[tokio::test]
async fn a_record_pulled_costs_a_fraction_of_its_bytes_compressed() {
    const RECORDS: usize = 500;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let target: SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();
    let proxy = CountingProxy::start(target).await;
    let http = reqwest::Client::new();
    let admin = &server.admin;
    let ok = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        assert!(status < 300, "{status}: {v}");
        v
    };
    ok(http
        .put(format!("{}/v1/admin/org-units", server.url))
        .bearer_auth(admin)
        .json(&small_tree())
        .send()
        .await
        .unwrap())
    .await;
    let issued = ok(http
        .post(format!("{}/v1/admin/tokens", server.url))
        .bearer_auth(admin)
        .json(&json!({"role": "field", "org_unit": "s1", "label": "手机"}))
        .send()
        .await
        .unwrap())
    .await;
    let token = issued["token"].as_str().unwrap().to_string();
    let device = issued["device_id"].as_str().unwrap().to_string();

    // The SDK's transport pushes through the proxy: its body goes gzipped.
    let sdk = HttpTransport::new(&proxy.url).unwrap();
    let mutations: Vec<Value> = (0..RECORDS).map(|i| full_lecture(&device, i)).collect();
    let body = serde_json::to_vec(&json!({"device_id": device, "mutations": mutations})).unwrap();
    proxy.take();
    let pushed = sdk
        .send(sdk::Request {
            method: sdk::Method::Post,
            path: "/v1/sync/push".into(),
            token: token.clone(),
            body: Some(body.clone()),
        })
        .await
        .unwrap();
    assert_eq!(
        pushed.status,
        200,
        "{}",
        String::from_utf8_lossy(&pushed.body)
    );
    let answer: Value = serde_json::from_slice(&pushed.body).unwrap();
    assert!(answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["status"] == "applied"));
    let (push_up, _) = proxy.take();
    assert!(
        push_up * 3 < body.len() as u64,
        "the push went gzipped: {push_up} bytes on the wire for a {} byte body",
        body.len()
    );

    let plain = reqwest::Client::builder()
        .no_gzip()
        .no_brotli()
        .build()
        .unwrap();
    let gzip_only = reqwest::Client::builder().no_brotli().build().unwrap();
    let br_only = reqwest::Client::builder().no_gzip().build().unwrap();
    let (plain_bytes, n) = pull_through(&proxy, &plain, &token).await;
    assert_eq!(n, RECORDS);
    let (gzip_bytes, n) = pull_through(&proxy, &gzip_only, &token).await;
    assert_eq!(n, RECORDS);
    let (br_bytes, n) = pull_through(&proxy, &br_only, &token).await;
    assert_eq!(n, RECORDS);

    // The SDK's own pull: whatever it negotiates, decoded.
    proxy.take();
    let pulled = sdk
        .send(sdk::Request {
            method: sdk::Method::Get,
            path: "/v1/sync/pull?since=0&limit=500".into(),
            token: token.clone(),
            body: None,
        })
        .await
        .unwrap();
    let sdk_bytes = proxy.take().1;
    let page: Value = serde_json::from_slice(&pulled.body).unwrap();
    assert_eq!(page["records"].as_array().unwrap().len(), RECORDS);

    let per = |b: u64| b as f64 / RECORDS as f64;
    eprintln!(
        "bytes on the wire per record pulled ({RECORDS} full lectures, one page): plain {:.0}, gzip {:.0}, br {:.0}, SDK {:.0}; push of {RECORDS}: {} bytes as JSON, {push_up} on the wire",
        per(plain_bytes),
        per(gzip_bytes),
        per(br_bytes),
        per(sdk_bytes),
        body.len(),
    );
    assert!(
        gzip_bytes * 3 < plain_bytes,
        "gzip {gzip_bytes} of {plain_bytes}"
    );
    assert!(br_bytes <= gzip_bytes, "br {br_bytes}, gzip {gzip_bytes}");
    assert!(
        sdk_bytes <= gzip_bytes + 512,
        "the SDK asks for compression: {sdk_bytes}"
    );
    server.stop().await;
}

#[test]
fn the_enrolment_address_is_the_public_url_or_the_one_the_browser_used() {
    use axum::http::HeaderMap;
    use pufa_server::field_app::enrol_url;
    let mut config = pufa_server::Config::new("/nonexistent");
    let mut headers = HeaderMap::new();
    assert_eq!(enrol_url(&config, &headers, "ABCD2345"), None, "no Host");
    headers.insert(header::HOST, "pufa.local:8080".parse().unwrap());
    assert_eq!(
        enrol_url(&config, &headers, "ABCD2345").as_deref(),
        Some("http://pufa.local:8080/field/#code=ABCD2345")
    );
    headers.insert("x-forwarded-proto", "https".parse().unwrap());
    assert_eq!(
        enrol_url(&config, &headers, "ABCD2345").as_deref(),
        Some("http://pufa.local:8080/field/#code=ABCD2345"),
        "a forwarded scheme counts only behind a trusted proxy"
    );
    config.trust_proxy = true;
    assert_eq!(
        enrol_url(&config, &headers, "ABCD2345").as_deref(),
        Some("https://pufa.local:8080/field/#code=ABCD2345")
    );
    headers.insert(header::HOST, "evil.example/\"><script>".parse().unwrap());
    assert_eq!(
        enrol_url(&config, &headers, "ABCD2345"),
        None,
        "an odd Host is not echoed"
    );
    config.public_url =
        Some(pufa_server::config::parse_public_url("https://pufa.example.gov.cn/").unwrap());
    assert_eq!(
        enrol_url(&config, &headers, "ABCD2345").as_deref(),
        Some("https://pufa.example.gov.cn/field/#code=ABCD2345")
    );
    for bad in [
        "pufa.example.gov.cn",
        "ftp://x",
        "https://",
        "https://x/?a=1",
        "https://a b",
        "https://x/pufa",
    ] {
        assert!(pufa_server::config::parse_public_url(bad).is_err(), "{bad}");
    }
    for zone in [
        "Asia/Shanghai",
        "UTC",
        "America/Argentina/Buenos_Aires",
        "Etc/GMT+8",
    ] {
        assert!(pufa_server::config::parse_time_zone(zone).is_ok(), "{zone}");
    }
    // Names the bundled time zone database lacks are refused, not left
    // to browsers that would fall back to UTC.
    for zone in [
        "",
        "Asia/Shang hai",
        "../etc",
        "/Asia",
        "Foo/Bar",
        "Etc/Unknown",
    ] {
        assert!(
            pufa_server::config::parse_time_zone(zone).is_err(),
            "{zone:?}"
        );
    }
}
