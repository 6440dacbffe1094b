//! Signing in and out, the per-request context of a signed-in page, CSRF
//! and Origin checks, and the language layer.
//!
//! The cookie (`HttpOnly`, `SameSite=Strict`) holds a bearer token: the
//! session token of a person who signed in with a username and password
//! (`people::sign_in`, with its lockout), or a coordinator's or admin's
//! device token. It is checked with `auth::authenticate` on every request,
//! so revoking a token, disabling an account, changing its password or the
//! session expiring ends the dashboard session at once; signing out ends a
//! password session on the server too. A session is a person at a
//! browser, not a device: it never pulls, pushes or reports health, so the
//! device list is not touched by it.
//!
//! CSRF: SameSite=Strict already keeps the cookie off cross-site requests;
//! on top of that every signed-in form carries `csrf` =
//! hex(sha256("pufa-csrf:" + token)), and every POST whose `Origin` is
//! present and names another host than `Host` is refused. The sign-in form
//! has no session to derive a token from; SameSite and the Origin check
//! cover it.

use std::collections::HashMap;

use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use axum_extra::extract::cookie::Cookie;
use maud::html;
use pufa_core::org::{OrgTree, Scope};
use pufa_core::wire::Role;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::i18n::{Lang, T};
use super::page::{notice, shell, Locale, Page, PageError};
use crate::auth::{self, Principal};
use crate::service_error::ServiceError;
use crate::store::{Device, TokenHash};
use crate::{people, AppState};

/// The session cookie: the token itself.
pub const SESSION_COOKIE: &str = "pufa_session";
/// The language cookie, set by `?lang=`.
pub const LANG_COOKIE: &str = "pufa_lang";
/// How long the language choice is remembered, in seconds.
const LANG_COOKIE_MAX_AGE_SECS: u32 = 365 * 24 * 3600;

/// The CSRF token of a session: public in the page, but only someone who
/// can read the page (same origin) learns it, and it does not reveal the
/// session token.
pub fn csrf_token(session_token: &str) -> String {
    hex::encode(Sha256::digest(
        format!("pufa-csrf:{session_token}").as_bytes(),
    ))
}

/// A cookie's value from the request's `Cookie` headers: the first of that
/// name, as sent, less surrounding quotes. Not axum-extra's `CookieJar`,
/// which percent-decodes values (a hand-written `admin.token` may hold a
/// `%`) and keeps the last cookie of a name.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        // Always there: split_parse borrows, not decodes.
        .and_then(|c| c.value_raw())
        .map(|v| v.trim_matches('"'))
}

/// The session cookie; `Secure` when this server itself speaks HTTPS
/// (`--tls-cert`), so a browser never sends it over plain HTTP.
fn session_cookie(token: &str, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/{secure}"
    ))
    .ok()
}

pub fn clear_session_cookie() -> HeaderValue {
    HeaderValue::from_static("pufa_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

/// Whether a token can travel in a cookie unquoted (RFC 6265 cookie-octets).
/// Issued tokens are `pufa_` and hex, so only a hand-written `admin.token`
/// could fail this.
fn cookie_safe(token: &str) -> bool {
    token
        .bytes()
        .all(|b| matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E))
}

/// Equal strings, compared in time that does not depend on where they
/// differ (the CSRF token is a secret of the page).
fn same_secret(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// False when an `Origin` header is present and names another host than
/// the one the request was sent to (a form posted from another site).
/// `Origin: null` (sandboxed or privacy-stripped) counts as another site.
pub fn same_origin(headers: &HeaderMap, uri: &Uri) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    let authority = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, a)| a.trim_end_matches('/'));
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
}

fn query_map(uri: &Uri) -> Result<HashMap<String, String>, PageError> {
    Query::<HashMap<String, String>>::try_from_uri(uri)
        .map(|Query(q)| q)
        .map_err(|_| PageError::BadRequest(T::BadQueryString))
}

/// The language layer around every dashboard route: picks the language
/// (`?lang=`, else the `pufa_lang` cookie, else Chinese), remembers a
/// `?lang=` choice in the cookie, and renders [`PageError`]s in it (and
/// in the server's time zone, which their footer names).
pub async fn with_lang(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let remembered = cookie(req.headers(), LANG_COOKIE)
        .and_then(Lang::parse)
        .unwrap_or_default();
    // A query string that cannot be read is reported by the page itself.
    let asked = query_map(req.uri()).ok().and_then(|mut q| q.remove("lang"));
    let lang = match asked.as_deref() {
        None => remembered,
        Some(text) => match Lang::parse(text) {
            Some(lang) => lang,
            None => {
                return PageError::bad_query("lang", text, T::BadLang)
                    .render(&Locale::of(&s, remembered))
            }
        },
    };
    req.extensions_mut().insert(lang);
    let mut resp = next.run(req).await;
    if let Some(err) = resp.extensions_mut().remove::<PageError>() {
        resp = err.render(&Locale::of(&s, lang));
    }
    if asked.is_some() {
        let value = format!(
            "{LANG_COOKIE}={}; SameSite=Lax; Path=/; Max-Age={LANG_COOKIE_MAX_AGE_SECS}",
            lang.param()
        );
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

impl<S: Send + Sync> FromRequestParts<S> for Lang {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Lang, Self::Rejection> {
        Ok(parts.extensions.get::<Lang>().copied().unwrap_or_default())
    }
}

impl Locale {
    /// The reader's language and this server's time zone, now.
    pub fn of(state: &AppState, lang: Lang) -> Locale {
        Locale {
            lang,
            zone: state.config.time_zone.clone(),
            now_ms: state.config.clock.now_ms(),
        }
    }
}

/// The language the layer chose and the server's time zone.
impl FromRequestParts<AppState> for Locale {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Locale, Self::Rejection> {
        let lang = parts.extensions.get::<Lang>().copied().unwrap_or_default();
        Ok(Locale::of(state, lang))
    }
}

/// A signed-in request: who, reading in which language and time zone, at
/// which address.
pub struct Ctx {
    pub device: Device,
    pub locale: Locale,
    /// The page's path, for links back to it (the language switch).
    pub path: String,
    pub query: HashMap<String, String>,
    csrf: String,
    /// The stored session behind the cookie, for a password sign-in.
    session: Option<TokenHash>,
    /// The person signed in with a password (audit entries name them).
    pub person: Option<String>,
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Ctx, PageError> {
        let lang = parts.extensions.get::<Lang>().copied().unwrap_or_default();
        let query = query_map(&parts.uri)?;
        let token = cookie(&parts.headers, SESSION_COOKIE)
            .filter(|t| !t.is_empty())
            .ok_or(PageError::SignIn)?;
        let principal = auth::authenticate(state, token)
            .await?
            .ok_or(PageError::SignIn)?;
        let session = match &principal {
            Principal::Session { hash, .. } => Some(*hash),
            Principal::Device(_) => None,
        };
        let person = principal.person().map(str::to_string);
        let device = principal.into_acting();
        if device.role == Role::Field {
            // Sign-in refuses field tokens; this one was put in the cookie by hand.
            return Err(PageError::Forbidden(T::FieldSession));
        }
        Ok(Ctx {
            csrf: csrf_token(token),
            device,
            locale: Locale::of(state, lang),
            path: parts.uri.path().to_string(),
            query,
            session,
            person,
        })
    }
}

impl Ctx {
    pub fn lang(&self) -> Lang {
        self.locale.lang
    }

    /// A query parameter; an empty value counts as absent only where a
    /// page says so.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }

    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// This page's address with some parameters replaced (the others kept).
    pub fn here_with(&self, replace: &[(&str, &str)]) -> String {
        let mut params: Vec<(&str, &str)> = self
            .query
            .iter()
            .filter(|(k, _)| !replace.iter().any(|(r, _)| r == k))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // A stable order, so the same page always has the same links.
        params.sort_unstable();
        params.extend_from_slice(replace);
        super::page::url(&self.path, &params)
    }

    /// The `org` parameter (empty: absent), if any.
    pub fn org_param(&self) -> Option<&str> {
        self.param("org").filter(|o| !o.is_empty())
    }

    /// The scope the `org` parameter names, checked as the API checks it
    /// (§2: outside the caller's scope is forbidden; an unknown unit is
    /// not found for an admin and forbidden for anyone else).
    pub fn scope(&self, tree: &OrgTree) -> Result<Scope, PageError> {
        Ok(auth::narrow(&self.device, tree, self.org_param())?)
    }
}

/// A POST from a signed-in page: same origin, signed in, form read, CSRF
/// token right, in that order.
pub struct SignedForm {
    pub ctx: Ctx,
    pub fields: HashMap<String, String>,
}

impl FromRequest<AppState> for SignedForm {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &AppState) -> Result<SignedForm, PageError> {
        if !same_origin(req.headers(), req.uri()) {
            return Err(PageError::Forbidden(T::CrossOrigin));
        }
        let (mut parts, body) = req.into_parts();
        let ctx = Ctx::from_request_parts(&mut parts, state).await?;
        let fields = read_form(Request::from_parts(parts, body), state).await?;
        let csrf_ok = fields
            .get("csrf")
            .is_some_and(|c| same_secret(c, ctx.csrf()));
        if !csrf_ok {
            return Err(PageError::Forbidden(T::CsrfFailed));
        }
        Ok(SignedForm { ctx, fields })
    }
}

async fn read_form(req: Request, state: &AppState) -> Result<HashMap<String, String>, PageError> {
    Form::<Vec<(String, String)>>::from_request(req, state)
        .await
        .map(|Form(pairs)| pairs.into_iter().collect())
        .map_err(|_| PageError::BadRequest(T::BadForm))
}

/// `GET /login`.
pub async fn login_page(locale: Locale) -> Page {
    Page::ok(login_markup(&locale, None, ""))
}

/// A problem shown above the sign-in forms.
fn problem(lang: Lang, text: T) -> maud::Markup {
    notice(lang, false, text, None)
}

fn login_markup(locale: &Locale, problem: Option<maud::Markup>, username: &str) -> maud::Markup {
    let lang = locale.lang;
    let switch = super::page::url("/login", &[("lang", lang.other().param())]);
    let header = html! {
        a href=(switch) lang=(lang.other().html_tag()) { (T::SwitchLang.get(lang)) }
    };
    let body = html! {
        div.box.login {
            p { (T::LoginIntro.get(lang)) }
            @if let Some(p) = problem { (p) }
            form #password-login method="post" action="/login" {
                p {
                    label for="username" { (T::Username.get(lang)) }
                    br;
                    input #username type="text" name="username" value=(username) autocomplete="username" autocapitalize="none" spellcheck="false" required autofocus;
                }
                p {
                    label for="password" { (T::Password.get(lang)) }
                    br;
                    input #password type="password" name="password" autocomplete="current-password" required;
                }
                button type="submit" { (T::SignIn.get(lang)) }
            }
            // Beside, not folded away: scripts, the demo and the browser
            // test sign in with a token, and an admin may have only one.
            div.token-login {
                p.muted { (T::SignInWithToken.get(lang)) }
                form #token-login method="post" action="/login" {
                    p {
                        label for="token" { (T::Token.get(lang)) }
                        br;
                        input #token type="password" name="token" autocomplete="off" required;
                    }
                    button type="submit" { (T::SignIn.get(lang)) }
                }
            }
        }
    };
    shell(locale, T::SignIn.get(lang), header, body)
}

fn signed_in(token: &str, secure: bool) -> Response {
    let mut resp = Redirect::to("/").into_response();
    if let Some(cookie) = session_cookie(token, secure) {
        resp.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    resp
}

/// `POST /login`: a username and password, or a coordinator's or admin's
/// token, becomes the session cookie.
pub async fn login(State(s): State<AppState>, locale: Locale, req: Request) -> Response {
    let lang = locale.lang;
    if !same_origin(req.headers(), req.uri()) {
        return PageError::Forbidden(T::CrossOrigin).into_response();
    }
    let fields = match read_form(req, &s).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    if let Some(username) = fields.get("username") {
        let password = fields.get("password").cloned().unwrap_or_default();
        return password_login(&s, &locale, username.trim(), password).await;
    }
    let token = fields.get("token").map_or("", |t| t.trim());
    if token.is_empty() {
        return Page::invalid(login_markup(
            &locale,
            Some(problem(lang, T::LoginEmpty)),
            "",
        ))
        .into_response();
    }
    let device = if cookie_safe(token) {
        match s.store.authenticate(auth::hash_token(token)).await {
            Ok(d) => d,
            Err(e) => return PageError::from(e).into_response(),
        }
    } else {
        None
    };
    match device {
        Some(d) if d.role != Role::Field && cookie_safe(token) => {
            signed_in(token, s.config.tls.is_some())
        }
        Some(_) => Page::forbidden(login_markup(
            &locale,
            Some(problem(lang, T::LoginFieldToken)),
            "",
        ))
        .into_response(),
        None => Page::unauthorized(login_markup(
            &locale,
            Some(problem(lang, T::LoginUnknown)),
            "",
        ))
        .into_response(),
    }
}

/// The username-and-password form: `people::sign_in`, its lockout
/// included, and the session token into the cookie.
async fn password_login(
    s: &AppState,
    locale: &Locale,
    username: &str,
    password: String,
) -> Response {
    let lang = locale.lang;
    if username.is_empty() || password.is_empty() {
        let markup = login_markup(locale, Some(problem(lang, T::LoginPasswordEmpty)), username);
        return Page::invalid(markup).into_response();
    }
    let again = |text: T| login_markup(locale, Some(problem(lang, text)), username);
    match people::sign_in(s, username, password).await {
        Ok(issued) => signed_in(&issued.token, s.config.tls.is_some()),
        Err(ServiceError::SignInLocked { secs }) => {
            let text = T::LoginLocked.with_n(lang, secs.div_ceil(60));
            let markup = login_markup(
                locale,
                Some(html! { p.notice.problem role="alert" { (text) } }),
                username,
            );
            Page::too_many(markup, secs).into_response()
        }
        Err(ServiceError::Busy { secs }) => {
            let text = T::LoginBusy.with_n(lang, secs);
            let markup = login_markup(
                locale,
                Some(html! { p.notice.problem role="alert" { (text) } }),
                username,
            );
            Page::too_many(markup, secs).into_response()
        }
        Err(ServiceError::BadCredentials) => {
            Page::unauthorized(again(T::LoginWrongPassword)).into_response()
        }
        Err(ServiceError::AccountDisabled) => {
            Page::forbidden(again(T::LoginDisabled)).into_response()
        }
        Err(e) => PageError::from(e).into_response(),
    }
}

/// `POST /logout`: forgets the cookie, and ends a password session on the
/// server. (A session whose token stopped working is sent to sign-in by
/// [`SignedForm`], which forgets it too.)
pub async fn logout(State(s): State<AppState>, form: SignedForm) -> Response {
    if let Some(hash) = form.ctx.session {
        if let Err(e) = s.store.end_session(hash).await {
            return PageError::from(e).into_response();
        }
    }
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, clear_session_cookie());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_secure_exactly_when_the_server_speaks_https() {
        let plain = session_cookie("pufa_abc", false).unwrap();
        let tls = session_cookie("pufa_abc", true).unwrap();
        for c in [&plain, &tls] {
            let c = c.to_str().unwrap();
            assert!(
                c.contains("HttpOnly") && c.contains("SameSite=Strict"),
                "{c}"
            );
        }
        assert!(!plain.to_str().unwrap().contains("Secure"));
        assert!(tls.to_str().unwrap().ends_with("; Secure"));
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn cookies_are_found_among_others() {
        let h = headers(&[
            (header::COOKIE, "a=1; pufa_session=pufa_ab12"),
            (header::COOKIE, "pufa_lang=en"),
        ]);
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("pufa_ab12"));
        assert_eq!(cookie(&h, LANG_COOKIE), Some("en"));
        assert_eq!(cookie(&h, "pufa"), None);
    }

    #[test]
    fn origin_must_match_host_when_present() {
        let uri: Uri = "/login".parse().unwrap();
        let check = |pairs: &[(header::HeaderName, &str)]| same_origin(&headers(pairs), &uri);
        assert!(check(&[(header::HOST, "pufa.local:8080")]));
        assert!(check(&[
            (header::HOST, "pufa.local:8080"),
            (header::ORIGIN, "http://pufa.local:8080")
        ]));
        assert!(!check(&[
            (header::HOST, "pufa.local:8080"),
            (header::ORIGIN, "http://evil.example")
        ]));
        assert!(!check(&[
            (header::HOST, "pufa.local:8080"),
            (header::ORIGIN, "null")
        ]));
        assert!(!check(&[(header::ORIGIN, "http://pufa.local")]));
    }

    #[test]
    fn csrf_token_is_the_documented_hash() {
        let t = csrf_token("pufa_x");
        assert_eq!(t, hex::encode(Sha256::digest(b"pufa-csrf:pufa_x")));
        assert!(same_secret(&t, &csrf_token("pufa_x")));
        assert!(!same_secret(&t, &csrf_token("pufa_y")));
        assert!(!same_secret(&t, ""));
        assert!(cookie_safe("pufa_0a9f"));
        assert!(!cookie_safe("a b"));
        assert!(!cookie_safe("a;b"));
    }
}
