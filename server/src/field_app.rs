//! What the field app needs from its server: its own files at `/field/`,
//! embedded in the binary, and `GET /v1/schema`, the kinds, fields, rules
//! and texts its forms are generated from (docs/protocol.md, "The field
//! app").
//!
//! The app's files are `client-sdk/web/` as written (HTML, CSS, ES
//! modules, the service worker, the manifest, icons): no build step, so
//! the server builds without Node or npm. Every answer under `/field/`
//! carries [`CSP`], which allows the app's own scripts, styles, images and
//! requests and nothing else (no inline script). Files carry a weak ETag
//! (the file's SHA-256) and `Cache-Control: no-cache`: a browser keeps
//! them but asks whether they changed (a `304` of a few bytes) before it
//! uses them, so that a new server version reaches the service worker,
//! which keeps the app usable offline.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use pufa_core::schema;
use pufa_core::wire::{
    Localized, SchemaLimits, SchemaResponse, PULL_LIMIT_DEFAULT, PULL_LIMIT_MAX,
    PUSH_MUTATIONS_MAX, SCHEMA_VERSION,
};
use rust_embed::RustEmbed;

use crate::error::ApiError;
use crate::AppState;

/// Where the app is served: `/field/`, so that its service worker
/// (`/field/sw.js`) controls the app and nothing else on the server.
pub const PREFIX: &str = "/field/";

/// The Content-Security-Policy of everything under [`PREFIX`].
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; manifest-src 'self'; worker-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Longest path of an app file, in bytes (a longer one names nothing).
const PATH_BYTES_MAX: usize = 200;

// rust-embed rather than include_dir: it records each file's SHA-256 at
// compile time (the ETag), and with `debug-embed` debug builds embed the
// files too, so tests serve exactly what a release serves. New files are
// picked up on the next build because build.rs watches the folder.
#[derive(RustEmbed)]
#[folder = "../client-sdk/web/"]
struct AppFiles;

/// The routes of the app, merged into [`crate::router`].
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/field", get(|| async { Redirect::permanent(PREFIX) }))
        .route("/field/", get(index))
        .route("/field/{*path}", get(file))
        .layer(axum::middleware::map_response(security_headers))
}

async fn index(headers: HeaderMap) -> Result<AppFile, ApiError> {
    AppFile::find("index.html", &headers)
}

async fn file(uri: Uri, headers: HeaderMap) -> Result<AppFile, ApiError> {
    // The raw path, not a decoded one: a file is named by plain ASCII, so
    // `%2e%2e` or `..` can only name nothing.
    let path = uri.path().strip_prefix(PREFIX).unwrap_or("");
    AppFile::find(path, &headers)
}

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// An app file as answered: whole, or "not modified" for a matching ETag.
enum AppFile {
    Whole {
        body: std::borrow::Cow<'static, [u8]>,
        content_type: &'static str,
        etag: String,
    },
    NotModified {
        etag: String,
    },
}

impl AppFile {
    /// The file at `path` (relative to [`PREFIX`]).
    ///
    /// # Errors
    /// `not_found` for a path that names no file.
    fn find(path: &str, headers: &HeaderMap) -> Result<AppFile, ApiError> {
        let named = plain_path(path).then(|| AppFiles::get(path)).flatten();
        let Some(file) = named else {
            return Err(ApiError::NotFound(format!(
                "the field app has no file {path:?}"
            )));
        };
        let hash = file.metadata.sha256_hash();
        let etag = format!("W/\"{}\"", hex::encode(&hash[..16]));
        let fresh = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
        if fresh {
            return Ok(AppFile::NotModified { etag });
        }
        Ok(AppFile::Whole {
            body: file.data,
            content_type: content_type(path),
            etag,
        })
    }
}

/// A path of plain names (ASCII letters, digits, `-`, `_`, `.`) separated
/// by `/`, none of them empty or starting with a dot.
fn plain_path(path: &str) -> bool {
    path.len() <= PATH_BYTES_MAX
        && path.split('/').all(|name| {
            !name.is_empty()
                && !name.starts_with('.')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
}

/// The `Content-Type` of a file, by its extension.
fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map_or("", |(_, e)| e);
    match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

impl IntoResponse for AppFile {
    fn into_response(self) -> Response {
        // Every file is revalidated before use (see the module's comment).
        let no_cache = (header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        match self {
            AppFile::Whole {
                body,
                content_type,
                etag,
            } => {
                let etag = HeaderValue::from_str(&etag).expect("hex in quotes");
                (
                    [
                        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                        (header::ETAG, etag),
                        no_cache,
                    ],
                    body,
                )
                    .into_response()
            }
            AppFile::NotModified { etag } => {
                let etag = HeaderValue::from_str(&etag).expect("hex in quotes");
                (StatusCode::NOT_MODIFIED, [(header::ETAG, etag), no_cache]).into_response()
            }
        }
    }
}

/// The address that opens the field app ready to enrol with `code`:
/// `<base>/field/#code=<code>` (the code stays in the fragment, so it is
/// never sent to a server or kept in a log). `<base>` is `--public-url`,
/// else the scheme and `Host` the coordinator's browser used (`https` when
/// this server speaks TLS, or when `--trust-proxy` is on and the proxy
/// says `X-Forwarded-Proto: https`). `None` without a usable host.
pub fn enrol_url(config: &crate::Config, headers: &HeaderMap, code: &str) -> Option<String> {
    let base = match &config.public_url {
        Some(url) => url.clone(),
        None => {
            let host = headers.get(header::HOST)?.to_str().ok()?;
            if !crate::config::plain_host(host) {
                return None;
            }
            let forwarded_https = config.trust_proxy
                && headers
                    .get("x-forwarded-proto")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
            let scheme = if config.tls.is_some() || forwarded_https {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{host}")
        }
    };
    Some(format!("{base}{PREFIX}#code={code}"))
}

/// `GET /v1/schema` (any token): core's kinds and texts, this server's
/// limits and time zone.
pub async fn schema(State(s): State<AppState>, _: crate::extract::Signed) -> Json<SchemaResponse> {
    Json(describe(&s.config))
}

/// The whole answer of `GET /v1/schema`.
pub fn describe(config: &crate::Config) -> SchemaResponse {
    SchemaResponse {
        schema_version: SCHEMA_VERSION,
        time_zone: config.time_zone.name().to_string(),
        limits: SchemaLimits {
            push_mutations_max: PUSH_MUTATIONS_MAX,
            push_body_bytes_max: config.max_body_bytes,
            pull_limit_default: PULL_LIMIT_DEFAULT,
            pull_limit_max: PULL_LIMIT_MAX,
            held_on_future_days_max: schema::HELD_ON_FUTURE_DAYS_MAX,
            notes_chars_max: schema::NOTES_CHARS_MAX,
            topics_items_max: schema::TOPICS_ITEMS_MAX,
            topic_chars_max: schema::TOPIC_CHARS_MAX,
            app_version_chars_max: crate::api::APP_VERSION_CHARS_MAX,
            device_label_chars_max: crate::auth::LABEL_CHARS_MAX,
            clock_skew_secs_max: config.max_skew.as_secs(),
            request_timeout_secs: config.request_timeout.as_secs(),
        },
        kinds: schema::describe(),
        rejections: schema::rejection_messages(),
        messages: messages(),
        topics: pufa_core::topics::describe(),
    }
}

/// What the request-level error codes a field device meets (§2) mean to
/// the person holding it.
fn messages() -> BTreeMap<String, Localized> {
    [
        ("bad_json", "应用发送的数据格式有误，请更新应用", "The app sent data the server cannot read; update the app"),
        ("unauthorized", "本设备的登记已失效，请重新登记（未同步的记录会保留）", "This device's enrolment is no longer valid; enrol it again (unsynced records are kept)"),
        ("forbidden", "本设备无权进行此操作", "This device may not do that"),
        ("device_mismatch", "设备信息不一致，请重新登记", "The device does not match its enrolment; enrol it again"),
        ("not_found", "服务器上没有找到", "Not found on the server"),
        ("method_not_allowed", "应用发出的请求服务器不支持，请更新应用", "The server does not accept this request from the app; update the app"),
        ("invalid_query", "应用发送的请求参数有误，请更新应用", "The app sent a request the server cannot read; update the app"),
        ("batch_too_large", "一次提交的记录过多，将分批重试", "Too many edits in one go; they are sent again in smaller batches"),
        ("body_too_large", "一次提交的数据过大，将分批重试", "Too much data in one go; it is sent again in smaller batches"),
        ("unsupported_encoding", "服务器无法读取这种压缩格式，将不压缩重试", "The server cannot read this compression; sent again uncompressed"),
        ("rate_limited", "请求过于频繁，稍后自动重试", "Too many requests; retrying shortly"),
        ("timeout", "服务器处理超时，稍后自动重试", "The server took too long; retrying shortly"),
        ("body_timeout", "网络太慢，数据未能及时送达，稍后自动重试", "The network is too slow to deliver the data in time; retrying shortly"),
        ("unavailable", "服务器暂不可用，稍后自动重试", "The server is unavailable for now; retrying shortly"),
        ("internal", "服务器出错，稍后自动重试", "Server error; retrying shortly"),
    ]
    .into_iter()
    .map(|(code, zh, en)| {
        (
            code.to_string(),
            Localized {
                zh: zh.to_string(),
                en: en.to_string(),
            },
        )
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_paths_name_files() {
        for ok in [
            "index.html",
            "js/main.js",
            "icons/icon-192.png",
            "app.webmanifest",
        ] {
            assert!(plain_path(ok), "{ok}");
        }
        for bad in [
            "",
            "../Cargo.toml",
            "js/../../Cargo.toml",
            "%2e%2e/Cargo.toml",
            ".hidden",
            "js//main.js",
            "/etc/passwd",
            "js\\main.js",
            "a b.js",
        ] {
            assert!(!plain_path(bad), "{bad}");
        }
    }

    #[test]
    fn types_follow_extensions() {
        assert_eq!(content_type("app.webmanifest"), "application/manifest+json");
        assert_eq!(content_type("js/main.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("icons/i.svg"), "image/svg+xml");
        assert_eq!(content_type("x"), "application/octet-stream");
    }
}
