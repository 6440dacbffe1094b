//! The page shell (head, menu, footer), the stylesheet, the HTML response
//! type, the error pages, and the small formatters every page shares.
//!
//! Handlers return [`Page`] or [`PageError`]; this module alone picks
//! status codes and security headers for the dashboard, as `ApiError` does
//! for the JSON API. A service's `ServiceError` becomes a `PageError` here,
//! once; a page that answers some refusal in its own way (the sign-in form,
//! the enrolment form) matches those variants and converts the rest.

use std::fmt::Write as _;

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup, DOCTYPE};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use pufa_core::date::{Date, DAY_MS};
use pufa_core::wire::{Role, UnitType};
use serde_json::Value;

use super::i18n::{Lang, T};
use super::session::{clear_session_cookie, Ctx};
use super::{Section, NAV};
use crate::config::TimeZone;
use crate::service_error::ServiceError;
use crate::store::StoreError;

/// Where the stylesheet is served; the version in the query makes a new
/// release bypass the week-long cache.
pub const STYLESHEET_PATH: &str = "/assets/app.css";
const STYLESHEET_URL: &str = concat!("/assets/app.css?v=", env!("CARGO_PKG_VERSION"));
/// How long browsers may keep the stylesheet, in seconds.
const STYLESHEET_MAX_AGE_SECS: u32 = 7 * 24 * 3600;
/// Longest query value echoed back in an error page, in characters.
const ECHO_CHARS_MAX: usize = 80;

/// Small on purpose: one file, no build step, readable on a phone. Tables
/// sit in `.scroll` boxes so wide ones scroll sideways instead of
/// squeezing; the menu wraps.
const STYLESHEET: &str = r#"
:root{--fg:#1b1f24;--muted:#59636e;--line:#d8dee4;--bg:#f6f8fa;--card:#fff;--accent:#0b5cad;--warn:#fff3cd;--warn-line:#c69500;--bad:#fde2e1;--ok:#e6f4ea}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"PingFang SC","Hiragino Sans GB","Microsoft YaHei","Noto Sans CJK SC",sans-serif;color:var(--fg);background:var(--bg)}
a{color:var(--accent)}
header.top{background:var(--card);border-bottom:1px solid var(--line);padding:.5rem 1rem;display:flex;flex-wrap:wrap;gap:.4rem 1.2rem;align-items:center}
header.top .brand{font-weight:600}
nav.menu ul{list-style:none;margin:0;padding:0;display:flex;flex-wrap:wrap;gap:.2rem .9rem}
nav.menu a[aria-current=page]{font-weight:700;text-decoration:underline}
.who{margin-left:auto;display:flex;flex-wrap:wrap;gap:.4rem .8rem;align-items:center;color:var(--muted);font-size:.9rem}
.who form{margin:0}
main{padding:1rem;max-width:76rem;margin:0 auto}
h1{font-size:1.4rem;margin:.2rem 0 .8rem}
h2{font-size:1.1rem;margin:0 0 .5rem}
.crumbs ol{list-style:none;margin:0 0 .5rem;padding:0;display:flex;flex-wrap:wrap;gap:.2rem}
.crumbs li+li::before{content:"›";margin-right:.2rem;color:var(--muted)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(14rem,1fr));gap:.8rem;margin:1rem 0}
.card,.box{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:.8rem}
.card dl{margin:0;display:grid;grid-template-columns:1fr auto;gap:.2rem .8rem}
.card dt{color:var(--muted)}
.card dd{margin:0;font-weight:600;font-variant-numeric:tabular-nums;text-align:right}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;background:var(--card);border:1px solid var(--line);border-radius:6px}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid var(--line);padding:.4rem .6rem;text-align:left;vertical-align:top;white-space:nowrap}
th{background:var(--bg);font-weight:600}
.num{text-align:right;font-variant-numeric:tabular-nums}
td.wrap{white-space:normal;min-width:14rem;max-width:32rem;overflow-wrap:anywhere}
tr.stale td{background:var(--warn)}
tr.stale td:first-child{border-left:4px solid var(--warn-line)}
.marker{font-weight:700}
.notice{padding:.5rem .8rem;border-radius:6px;margin:.6rem 0;background:var(--ok)}
.notice.problem{background:var(--bad)}
.muted{color:var(--muted);font-size:.9rem}
form.period{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:end}
form.period label{display:flex;flex-direction:column;font-size:.9rem}
input,button{font:inherit;padding:.3rem .5rem}
button{cursor:pointer}
.conflict{margin:.8rem 0}
.conflict fieldset{border:0;padding:0;margin:.5rem 0;display:grid;gap:.4rem}
.value{font-family:ui-monospace,Menlo,Consolas,monospace;overflow-wrap:anywhere}
pre{white-space:pre-wrap;overflow-wrap:anywhere;margin:.3rem 0}
.login{max-width:26rem;margin:2rem auto}
.login input[type=password],.login input[type=text]{width:100%}
.login .token-login{margin-top:1.2rem;padding-top:.6rem;border-top:1px solid var(--line)}
.code{font:700 2.6rem/1.3 ui-monospace,Menlo,Consolas,monospace;letter-spacing:.18em;margin:.4rem 0;user-select:all}
.qr{margin:.6rem 0}.qr svg{display:block;width:100%;max-width:16rem;height:auto}.qr figcaption{margin-top:.3rem;word-break:break-all}
form.enrol{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:end}
form.enrol label{display:flex;flex-direction:column;font-size:.9rem}
select{font:inherit;padding:.3rem .5rem;max-width:100%}
footer{padding:1rem;text-align:center}
svg.chart{width:100%;height:auto;max-height:22rem}
nav.years{display:flex;flex-wrap:wrap;gap:.3rem .6rem;align-items:center;margin:.3rem 0 .8rem}
nav.years form{display:flex;gap:.3rem;margin:0}
nav.years input{width:6rem}
textarea{width:100%;font:inherit;padding:.5rem}
label.inline{flex-direction:row;align-items:center}
section.box{margin:.8rem 0}
ul.downloads{margin:0;padding-left:1.2rem}
form.step{display:flex;flex-wrap:wrap;gap:.3rem;margin:0 0 .3rem}form.step input{width:9rem}details.box{margin:.8rem 0}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:.6rem;margin:.4rem 0}.pair>div{border:1px solid var(--line);border-radius:6px;padding:.5rem;overflow-wrap:anywhere}.pair dl{margin:0}form.pair-actions{display:flex;flex-wrap:wrap;gap:.4rem;margin:0}
@media (max-width:40rem){main{padding:.6rem}.who{margin-left:0}h1{font-size:1.2rem}.pair{grid-template-columns:1fr}}
@media (max-width:40rem){table.stack thead{display:none}table.stack tr{display:block;border-bottom:1px solid var(--line);padding:.3rem 0}table.stack td{display:block;border:0;white-space:normal;padding:.15rem .6rem}}
.print-only{display:none}
.report-actions{margin:.5rem 0 0}
@media print{
@page{size:A4;margin:18mm 16mm}
body{background:#fff;color:#000;font-size:11pt}
header.top,footer,nav.years,form,#downloads,.report-actions,.muted,textarea,details{display:none}
.print-only{display:block}
main{max-width:none;padding:0}
.card,.box,.scroll{border:0;border-radius:0;padding:0;overflow:visible;background:#fff}
.cards{grid-template-columns:repeat(3,1fr);gap:.4rem}
section,.card,tr{break-inside:avoid}
h1,h2{break-after:avoid}
a{color:inherit;text-decoration:none}
th{background:#fff}
th,td{white-space:normal;padding:.15rem .4rem}
svg.chart{max-height:9cm}
}
"#;

/// `GET /assets/app.css`.
pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8".to_string()),
            (
                header::CACHE_CONTROL,
                format!("public, max-age={STYLESHEET_MAX_AGE_SECS}"),
            ),
        ],
        STYLESHEET,
    )
        .into_response()
}

/// A rendered page and what kind of answer it is.
pub struct Page {
    status: StatusCode,
    markup: Markup,
}

impl Page {
    pub fn ok(markup: Markup) -> Page {
        Page {
            status: StatusCode::OK,
            markup,
        }
    }

    /// The form was read but its content was refused (shown on the page).
    pub fn invalid(markup: Markup) -> Page {
        Page {
            status: StatusCode::BAD_REQUEST,
            markup,
        }
    }

    pub fn unauthorized(markup: Markup) -> Page {
        Page {
            status: StatusCode::UNAUTHORIZED,
            markup,
        }
    }

    pub fn forbidden(markup: Markup) -> Page {
        Page {
            status: StatusCode::FORBIDDEN,
            markup,
        }
    }

    /// Too many attempts (a locked-out sign-in): `Retry-After` says when
    /// to try again.
    pub fn too_many(markup: Markup, retry_after_secs: u64) -> Response {
        let mut resp = Page {
            status: StatusCode::TOO_MANY_REQUESTS,
            markup,
        }
        .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        resp
    }

    pub fn not_found(markup: Markup) -> Page {
        Page {
            status: StatusCode::NOT_FOUND,
            markup,
        }
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut resp = (self.status, self.markup.into_string()).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        // Pages show data of one signed-in person: never cache them.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // No scripts at all, and no framing: clickjacking cannot press the
        // resolve buttons.
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            HeaderName::from_static("referrer-policy"),
            HeaderValue::from_static("same-origin"),
        );
        resp
    }
}

/// Why a dashboard request cannot be answered with its page.
///
/// Its response carries the error itself; the language layer
/// ([`super::session::with_lang`]) renders it in the reader's language,
/// so handlers can use `?` without knowing the language.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PageError {
    /// Not signed in, or the session's token no longer works.
    SignIn,
    /// A query parameter that cannot be read.
    BadQuery {
        param: String,
        value: String,
        why: T,
    },
    BadRequest(T),
    Forbidden(T),
    NotFound(T),
    /// Storage cannot answer now: retryable.
    Unavailable(String),
    /// A limit that frees up with time: come back in `secs` seconds.
    TooMany {
        secs: u64,
    },
    Internal(String),
}

impl PageError {
    pub fn bad_query(param: &str, value: &str, why: T) -> PageError {
        PageError::BadQuery {
            param: param.to_string(),
            value: value.chars().take(ECHO_CHARS_MAX).collect(),
            why,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            PageError::SignIn => StatusCode::SEE_OTHER,
            PageError::BadQuery { .. } | PageError::BadRequest(_) => StatusCode::BAD_REQUEST,
            PageError::Forbidden(_) => StatusCode::FORBIDDEN,
            PageError::NotFound(_) => StatusCode::NOT_FOUND,
            PageError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            PageError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            PageError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error page for `locale`'s reader.
    pub fn render(&self, locale: &Locale) -> Response {
        let lang = locale.lang;
        let (title, text) = match self {
            PageError::SignIn => return self.clone().into_response(),
            PageError::BadQuery { why, .. } => (T::ErrBadRequest, why.get(lang).to_string()),
            PageError::BadRequest(t) => (T::ErrBadRequest, t.get(lang).to_string()),
            PageError::Forbidden(t) => (T::ErrForbidden, t.get(lang).to_string()),
            PageError::NotFound(t) => (T::ErrNotFound, t.get(lang).to_string()),
            PageError::Unavailable(_) => (T::ErrUnavailable, T::StoreTrouble.get(lang).to_string()),
            // Minutes past two of them: "3600 秒" reads worse than "60 分钟".
            PageError::TooMany { secs } if *secs >= 120 => (
                T::ErrTooMany,
                T::TryAgainMinutes.with_n(lang, secs.div_ceil(60)),
            ),
            PageError::TooMany { secs } => (T::ErrTooMany, T::TryAgainSeconds.with_n(lang, secs)),
            PageError::Internal(_) => (T::ErrInternal, T::InternalTrouble.get(lang).to_string()),
        };
        let body = html! {
            div.box {
                p role="alert" {
                    @if let PageError::BadQuery { param, value, .. } = self {
                        code { (param) "=" (format!("{value:?}")) } ": "
                    }
                    (text)
                }
                p { a href="/" { (T::BackHome.get(lang)) } }
            }
        };
        let markup = shell(locale, title.get(lang), html! {}, body);
        let mut resp = Page {
            status: self.status(),
            markup,
        }
        .into_response();
        let retry_after = match self {
            PageError::Unavailable(_) => Some(1),
            PageError::TooMany { secs } => Some(*secs),
            _ => None,
        };
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match &self {
            PageError::SignIn => {
                // Forget a session that stopped working, so the browser
                // does not keep sending a revoked secret.
                let mut resp = Redirect::to("/login").into_response();
                resp.headers_mut()
                    .insert(header::SET_COOKIE, clear_session_cookie());
                resp
            }
            _ => {
                match &self {
                    PageError::Internal(e) => {
                        tracing::error!(error = %e, "dashboard request failed")
                    }
                    PageError::Unavailable(e) => {
                        tracing::warn!(error = %e, "dashboard: storage unavailable")
                    }
                    _ => {}
                }
                let mut resp = self.status().into_response();
                resp.extensions_mut().insert(self);
                resp
            }
        }
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> PageError {
        match e {
            StoreError::Unavailable(m) => PageError::Unavailable(m),
            other => PageError::Internal(other.to_string()),
        }
    }
}

impl From<ServiceError> for PageError {
    fn from(e: ServiceError) -> PageError {
        use ServiceError::*;
        match e {
            NeedsAdmin
            | NeedsCoordinator
            | OutOfScope { .. }
            | NeedsApprover { .. }
            | NotASession => PageError::Forbidden(T::OutOfScope),
            FieldCodesOnly => PageError::Forbidden(T::EnrolCoordinatorOnly),
            AccountDisabled => PageError::Forbidden(T::LoginDisabled),
            BadCredentials => PageError::SignIn,
            NoSuchUnit { .. } => PageError::NotFound(T::NoSuchUnit),
            NoSuchCode { .. } => PageError::NotFound(T::EnrolGone),
            NoSuchAccount { .. }
            | NoDeviceToReenrol { .. }
            | NoSuchRecord { .. }
            | NoSuchExport { .. } => PageError::NotFound(T::NoSuchPage),
            BadQuery { param, value, .. } => PageError::bad_query(param, &value, T::BadParam),
            BadInput { .. }
            | Rejected(_)
            | AccountExists { .. }
            | InvalidCode
            | PeriodRefused { .. } => PageError::BadRequest(T::BadForm),
            ExportTooLarge { .. } => PageError::BadRequest(T::ExportTooLarge),
            // Sign-in answers these on its own form; elsewhere a page says
            // when to come back.
            SignInLocked { secs }
            | Busy { secs }
            | TooManyFailedEnrolments { secs }
            | TooManyOpenCodes { secs } => PageError::TooMany { secs },
            Store(e) => e.into(),
            Internal(m) => PageError::Internal(m),
        }
    }
}

/// The document around a page's content.
pub fn shell(locale: &Locale, title: &str, header: Markup, body: Markup) -> Markup {
    let lang = locale.lang;
    html! {
        (DOCTYPE)
        html lang=(lang.html_tag()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (T::AppName.get(lang)) }
                link rel="stylesheet" href=(STYLESHEET_URL);
            }
            body {
                header.top {
                    span.brand { (T::AppName.get(lang)) }
                    (header)
                }
                main {
                    h1 { (title) }
                    (body)
                }
                footer.muted { (locale.times_note()) }
            }
        }
    }
}

/// A signed-in page: the shell with the menu, who is signed in, the
/// language switch and the sign-out button.
pub fn page(ctx: &Ctx, current: Section, title: &str, body: Markup) -> Markup {
    let lang = ctx.lang();
    let switch = ctx.here_with(&[("lang", lang.other().param())]);
    let header = html! {
        nav.menu aria-label=(T::MainMenu.get(lang)) {
            ul {
                @for item in NAV {
                    li {
                        @if item.section == current {
                            a href=(item.path) aria-current="page" { (item.text.get(lang)) }
                        } @else {
                            a href=(item.path) { (item.text.get(lang)) }
                        }
                    }
                }
            }
        }
        div.who {
            span { (T::SignedInAs.get(lang)) ": " (ctx.device.label) " · " (role_text(ctx.device.role).get(lang)) }
            a href=(switch) lang=(lang.other().html_tag()) { (T::SwitchLang.get(lang)) }
            form method="post" action="/logout" {
                input type="hidden" name="csrf" value=(ctx.csrf());
                button type="submit" { (T::SignOut.get(lang)) }
            }
        }
    };
    shell(&ctx.locale, title, header, body)
}

/// A notice above a page's content: a success or a problem.
pub fn notice(lang: Lang, ok: bool, text: T, detail: Option<&str>) -> Markup {
    html! {
        @if ok {
            p.notice role="status" { (text.get(lang)) }
        } @else {
            p.notice.problem role="alert" {
                (text.get(lang))
                @if let Some(d) = detail { " " span.value { (d) } }
            }
        }
    }
}

pub fn role_text(role: Role) -> T {
    match role {
        Role::Field => T::RoleField,
        Role::Coordinator => T::RoleCoordinator,
        Role::Admin => T::RoleAdmin,
    }
}

pub fn unit_type_text(t: UnitType) -> T {
    match t {
        UnitType::District => T::UnitDistrict,
        UnitType::Street => T::UnitStreet,
        UnitType::Town => T::UnitTown,
        UnitType::Community => T::UnitCommunity,
        UnitType::Village => T::UnitVillage,
    }
}

/// How pages speak to their reader: the language the language layer
/// chose, and the server's time zone (`--time-zone`) that every time is
/// shown in. The wire keeps Unix milliseconds; only pages convert.
#[derive(Clone, Debug)]
pub struct Locale {
    pub lang: Lang,
    pub zone: TimeZone,
    /// When the page is made: the footer gives the zone's offset then.
    pub now_ms: u64,
}

impl Locale {
    /// `2020-07-01 08:05` on the zone's wall clock (the footer names the
    /// zone). An instant past the year 9999 is shown as its milliseconds.
    pub fn time(&self, ms: u64) -> String {
        i64::try_from(ms)
            .ok()
            .and_then(|ms| self.zone.wall_clock(ms))
            .map_or_else(
                || format!("{ms} ms"),
                |t| t.strftime("%Y-%m-%d %H:%M").to_string(),
            )
    }

    /// Today on the zone's wall clock: what "this year" and "this
    /// quarter" of the pages mean.
    pub fn today(&self) -> Date {
        self.zone.date_of(self.now_ms)
    }

    pub fn maybe_time(&self, ms: Option<u64>) -> String {
        ms.map_or_else(|| T::Never.get(self.lang).to_string(), |ms| self.time(ms))
    }

    /// The footer's sentence naming the zone of the page's times: Beijing
    /// time for `Asia/Shanghai`, else the IANA name and its UTC offset.
    pub fn times_note(&self) -> String {
        let lang = self.lang;
        let now = i64::try_from(self.now_ms).unwrap_or(i64::MAX);
        let text = match self.zone.name() {
            "Asia/Shanghai" => return T::TimesBeijing.get(lang).to_string(),
            "UTC" => return T::TimesUtc.get(lang).to_string(),
            _ if self.zone.offset_changes_within_a_year(now) => T::TimesInZoneNow,
            _ => T::TimesInZone,
        };
        text.get(lang)
            .replace("{zone}", self.zone.name())
            .replace("{offset}", &self.zone.offset_text(now))
    }
}

/// A signed span of time in the largest unit that keeps it readable.
pub fn duration_text(lang: Lang, ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let abs = ms.unsigned_abs();
    let (unit, n) = match abs {
        0..1_000 => (T::Millis, abs),
        1_000..120_000 => (T::Seconds, abs / 1_000),
        120_000..7_200_000 => (T::Minutes, abs / 60_000),
        7_200_000..172_800_000 => (T::Hours, abs / 3_600_000),
        _ => (T::Days, abs / DAY_MS),
    };
    format!("{sign}{}", unit.with_n(lang, n))
}

/// `98.3%`: coverage is a fraction of 1.
pub fn percent_text(fraction: f64) -> String {
    if fraction.is_finite() {
        format!("{:.1}%", fraction * 100.0)
    } else {
        "—".to_string()
    }
}

/// A field value as a person reads it: text bare, anything else as JSON.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Bytes a query part keeps as they are: RFC 3986's unreserved characters.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `path?k=v&…`, each part percent-encoded.
pub fn url(path: &str, params: &[(&str, &str)]) -> String {
    let mut out = path.to_string();
    for (i, (k, v)) in params.iter().enumerate() {
        let sep = if i == 0 { '?' } else { '&' };
        let (k, v) = (
            utf8_percent_encode(k, UNRESERVED),
            utf8_percent_encode(v, UNRESERVED),
        );
        let _ = write!(out, "{sep}{k}={v}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service_error::tests::{assert_every_variant, id, unknown_unit};

    #[test]
    fn every_service_error_has_its_error_page() {
        use ServiceError::*;
        let s = |t: &str| t.to_string();
        let cases = [
            (NeedsAdmin, PageError::Forbidden(T::OutOfScope)),
            (NeedsCoordinator, PageError::Forbidden(T::OutOfScope)),
            (
                OutOfScope { unit: s("y1") },
                PageError::Forbidden(T::OutOfScope),
            ),
            (
                FieldCodesOnly,
                PageError::Forbidden(T::EnrolCoordinatorOnly),
            ),
            (AccountDisabled, PageError::Forbidden(T::LoginDisabled)),
            (NotASession, PageError::Forbidden(T::OutOfScope)),
            (BadCredentials, PageError::SignIn),
            (InvalidCode, PageError::BadRequest(T::BadForm)),
            (
                NoSuchUnit { unit: s("y1") },
                PageError::NotFound(T::NoSuchUnit),
            ),
            (
                NoSuchAccount {
                    username: s("wang"),
                },
                PageError::NotFound(T::NoSuchPage),
            ),
            (
                NoDeviceToReenrol { id: id() },
                PageError::NotFound(T::NoSuchPage),
            ),
            (NoSuchCode { id: id() }, PageError::NotFound(T::EnrolGone)),
            (
                NoSuchRecord { id: id() },
                PageError::NotFound(T::NoSuchPage),
            ),
            (
                NoSuchExport { file: s("x.pdf") },
                PageError::NotFound(T::NoSuchPage),
            ),
            (
                BadInput {
                    field: "label",
                    message: s("too long"),
                },
                PageError::BadRequest(T::BadForm),
            ),
            (unknown_unit(), PageError::BadRequest(T::BadForm)),
            (
                ServiceError::bad_query("year", Some("20x"), "year must be a year"),
                PageError::bad_query("year", "20x", T::BadParam),
            ),
            (
                AccountExists {
                    username: s("wang"),
                },
                PageError::BadRequest(T::BadForm),
            ),
            (
                ExportTooLarge { rows: 7, max: 5 },
                PageError::BadRequest(T::ExportTooLarge),
            ),
            (
                NeedsApprover {
                    unit: s("x"),
                    action: "approve",
                },
                PageError::Forbidden(T::OutOfScope),
            ),
            (
                PeriodRefused {
                    code: "period_state",
                    message: s("no"),
                    state: None,
                    lock: None,
                },
                PageError::BadRequest(T::BadForm),
            ),
            (SignInLocked { secs: 61 }, PageError::TooMany { secs: 61 }),
            (Busy { secs: 1 }, PageError::TooMany { secs: 1 }),
            (
                TooManyFailedEnrolments { secs: 9 },
                PageError::TooMany { secs: 9 },
            ),
            (
                TooManyOpenCodes { secs: 3600 },
                PageError::TooMany { secs: 3600 },
            ),
            (
                Store(StoreError::Unavailable(s("disk full"))),
                PageError::Unavailable(s("disk full")),
            ),
            (
                Store(StoreError::Other(s("broken"))),
                PageError::Internal(s("storage error: broken")),
            ),
            (
                Internal(s("xlsx: oops")),
                PageError::Internal(s("xlsx: oops")),
            ),
        ];
        assert_every_variant(cases.iter().map(|c| &c.0));
        for (e, expected) in cases {
            let shown = format!("{e:?}");
            assert_eq!(PageError::from(e), expected, "{shown}");
        }
    }

    #[test]
    fn urls_encode_every_part() {
        assert_eq!(url("/", &[]), "/");
        assert_eq!(
            url("/", &[("org", "a b&c=d"), ("to", "")]),
            "/?org=a%20b%26c%3Dd&to="
        );
        assert_eq!(url("/x", &[("org", "迎")]), "/x?org=%E8%BF%8E");
    }

    fn locale(lang: Lang, zone: &str) -> Locale {
        Locale {
            lang,
            zone: crate::config::parse_time_zone(zone).unwrap(),
            // 2020-01-01 00:00 UTC: winter in Berlin.
            now_ms: 1_577_836_800_000,
        }
    }

    /// A limit that frees up with time is a 429 page that says when, in
    /// the reader's language, with `Retry-After`; never a server error.
    #[tokio::test]
    async fn a_limit_page_says_when_to_come_back() {
        use http_body_util::BodyExt as _;
        for (secs, zh) in [(9, "请 9 秒后再试"), (3600, "请 60 分钟后再试")] {
            let resp = PageError::TooMany { secs }.render(&locale(Lang::Zh, "Asia/Shanghai"));
            assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(
                resp.headers()[header::RETRY_AFTER],
                secs.to_string().as_str()
            );
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let text = String::from_utf8(body.to_vec()).unwrap();
            assert!(text.contains(zh) && text.contains("请稍后再试"), "{text}");
        }
    }

    #[test]
    fn times_read_in_the_server_s_zone() {
        // 2020-07-01 00:05 UTC.
        let ms = 1_593_561_600_000 + 5 * 60_000;
        let beijing = locale(Lang::Zh, "Asia/Shanghai");
        assert_eq!(beijing.time(ms), "2020-07-01 08:05");
        assert_eq!(locale(Lang::En, "UTC").time(ms), "2020-07-01 00:05");
        assert_eq!(
            locale(Lang::En, "America/New_York").time(ms),
            "2020-06-30 20:05"
        );
        assert_eq!(beijing.maybe_time(None), "从未");
        // 2019-12-31 20:00 UTC is already 2020 in Beijing.
        let new_year = Locale {
            now_ms: 1_577_836_800_000 - 4 * 3_600_000,
            ..beijing.clone()
        };
        assert_eq!(new_year.today(), Date::from_ymd(2020, 1, 1).unwrap());
        let utc = Locale {
            zone: crate::config::TimeZone::utc(),
            ..new_year
        };
        assert_eq!(utc.today(), Date::from_ymd(2019, 12, 31).unwrap());
        assert_eq!(beijing.time(u64::MAX), format!("{} ms", u64::MAX));

        assert_eq!(beijing.times_note(), "所有时间均为北京时间。");
        assert_eq!(
            locale(Lang::En, "Asia/Shanghai").times_note(),
            "All times are China Standard Time (Asia/Shanghai)."
        );
        assert_eq!(locale(Lang::En, "UTC").times_note(), "All times are UTC.");
        assert_eq!(
            locale(Lang::Zh, "Asia/Urumqi").times_note(),
            "所有时间均为 Asia/Urumqi 时间（UTC+06:00）。"
        );
        assert_eq!(
            locale(Lang::Zh, "Europe/Berlin").times_note(),
            "所有时间均为 Europe/Berlin 时间（现为 UTC+01:00，随夏令时变化）。"
        );
        assert_eq!(
            locale(Lang::En, "Europe/Berlin").times_note(),
            "All times are Europe/Berlin time (now UTC+01:00; it changes with summer time)."
        );
    }

    #[test]
    fn durations_read_plainly() {
        assert_eq!(duration_text(Lang::En, 700), "700 ms");
        assert_eq!(duration_text(Lang::En, -700), "-700 ms");
        assert_eq!(duration_text(Lang::En, 90_000), "90 s");
        assert_eq!(duration_text(Lang::En, 15 * DAY_MS as i64), "15 d");
        assert_eq!(duration_text(Lang::Zh, i64::MIN).chars().next(), Some('-'));
        assert_eq!(percent_text(0.98333), "98.3%");
        assert_eq!(percent_text(f64::NAN), "—");
    }
}
