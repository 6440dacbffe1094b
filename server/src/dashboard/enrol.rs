//! `GET /enrol`: a coordinator makes a one-time enrolment code for a field
//! device (`POST /enrol`), sees it large enough to read out and as a QR
//! code that opens the field app with the code filled in, and keeps an
//! eye on the codes still unused (`POST /enrol/{id}/withdraw`). Everything
//! goes through `crate::enrol`, exactly as `/v1/enrollment-codes` does.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup, PreEscaped};
use pufa_core::org::OrgTree;
use pufa_core::wire::{CodeIssued, CodeRequest, Role, LIST_LIMIT_DEFAULT};
use uuid::Uuid;

use super::i18n::T;
use super::page::{notice, page, role_text, Page, PageError};
use super::session::{Ctx, SignedForm};
use super::Section;
use crate::enrol::{self, CODE_TTL_SECS_DEFAULT};
use crate::service_error::ServiceError;
use crate::AppState;

/// The lifetimes the form offers (the default first): hours, and how to
/// say them.
const VALID_FOR: &[(u64, T, u64)] = &[
    (24, T::DaysN, 1),
    (2, T::HoursN, 2),
    (72, T::DaysN, 3),
    (168, T::DaysN, 7),
];

/// Smallest side of the QR code, in CSS pixels: big enough for a phone
/// camera at arm's length from a screen.
const QR_PIXELS_MIN: u32 = 240;

/// A code just made, and the address its QR code opens.
struct NewCode<'a> {
    issued: &'a CodeIssued,
    url: Option<String>,
}

/// `GET /enrol`.
pub async fn enrol_page(State(s): State<AppState>, ctx: Ctx) -> Result<Page, PageError> {
    let top = ctx
        .param("withdrawn")
        .map(|_| notice(ctx.lang(), true, T::EnrolWithdrawn, None));
    Ok(Page::ok(render(&s, &ctx, top, None).await?))
}

async fn render(
    s: &AppState,
    ctx: &Ctx,
    top: Option<Markup>,
    made: Option<NewCode<'_>>,
) -> Result<Markup, PageError> {
    let lang = ctx.lang();
    let tree = s.store.org_tree();
    let open = enrol::list(s, &ctx.device, None, LIST_LIMIT_DEFAULT).await?;
    let units = tree.in_scope_units(&ctx.device.scope());
    let body = html! {
        @if let Some(t) = top { (t) }
        @if let Some(NewCode { issued: c, url }) = made {
            section.box #new-code {
                h2 { (T::EnrolCode.get(lang)) }
                p.code #code { (c.code) }
                p { (T::EnrolCodeHint.get(lang)) }
                @if let Some(url) = url {
                    figure.qr #code-qr {
                        @if let Some(svg) = qr_svg(&url) { (PreEscaped(svg)) }
                        figcaption {
                            (T::EnrolQrHint.get(lang))
                            br;
                            code #code-url { (url) }
                        }
                    }
                }
                p.muted {
                    (unit_text(&tree, &c.org_unit)) " · " (role_text(c.role).get(lang))
                    @if !c.label.is_empty() { " · " (c.label) }
                    " · " (T::EnrolExpires.get(lang)) ": " (ctx.locale.time(c.expires_ms))
                }
            }
        }
        p.muted { (T::EnrolIntro.get(lang)) }
        section.box {
            h2 { (T::EnrolNew.get(lang)) }
            form.enrol method="post" action="/enrol" {
                input type="hidden" name="csrf" value=(ctx.csrf());
                label {
                    (T::Unit.get(lang))
                    select name="org_unit" required {
                        @for u in &units {
                            option value=(u.code) { (u.name) " (" (u.code) ")" }
                        }
                    }
                }
                @if ctx.device.role == Role::Admin {
                    label {
                        (T::EnrolDeviceRole.get(lang))
                        select name="role" {
                            option value="field" { (T::RoleField.get(lang)) }
                            option value="coordinator" { (T::RoleCoordinator.get(lang)) }
                        }
                    }
                }
                label {
                    (T::EnrolLabel.get(lang))
                    input type="text" name="label" maxlength=(crate::auth::LABEL_CHARS_MAX);
                }
                label {
                    (T::EnrolValidFor.get(lang))
                    select name="hours" {
                        @for (hours, unit, n) in VALID_FOR {
                            option value=(hours) { (unit.with_n(lang, n)) }
                        }
                    }
                }
                button type="submit" { (T::EnrolNew.get(lang)) }
            }
        }
        h2 { (T::EnrolOpen.get(lang)) }
        @if open.is_empty() {
            p.box { (T::EnrolNone.get(lang)) }
        } @else {
            div.scroll {
                table #codes {
                    thead {
                        tr {
                            th { (T::Unit.get(lang)) }
                            th { (T::Role.get(lang)) }
                            th { (T::Label.get(lang)) }
                            th { (T::EnrolExpires.get(lang)) }
                            th { (T::EnrolCreatedBy.get(lang)) }
                            th {}
                        }
                    }
                    tbody {
                        @for c in &open {
                            tr data-code=(c.id) {
                                td { (unit_text(&tree, &c.org_unit)) }
                                td { (role_text(c.role).get(lang)) }
                                td { (c.label) }
                                td { (ctx.locale.time(c.expires_ms)) }
                                td { (c.created_by) }
                                td {
                                    form method="post" action=(format!("/enrol/{}/withdraw", c.id)) {
                                        input type="hidden" name="csrf" value=(ctx.csrf());
                                        button type="submit" { (T::EnrolWithdraw.get(lang)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page(ctx, Section::Enrol, T::NavEnrol.get(lang), body))
}

/// `text` as a QR code in SVG markup to put inline in the page. The SVG
/// uses attributes only (no `style`), which the dashboard's CSP allows.
fn qr_svg(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(QR_PIXELS_MIN, QR_PIXELS_MIN)
        .build();
    // An XML declaration is out of place inside HTML.
    Some(match svg.split_once("?>") {
        Some((_, element)) => element.to_string(),
        None => svg,
    })
}

fn unit_text(tree: &OrgTree, code: &str) -> String {
    match tree.get(code) {
        Some(u) => format!("{} ({code})", u.name),
        None => code.to_string(),
    }
}

/// `POST /enrol`: makes a code and shows it, with the list below.
pub async fn create(
    State(s): State<AppState>,
    headers: HeaderMap,
    SignedForm { mut ctx, fields }: SignedForm,
) -> Result<Response, PageError> {
    ctx.path = "/enrol".to_string();
    ctx.query.clear();
    let field = |k: &str| fields.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let role = match field("role") {
        None | Some("field") => Role::Field,
        Some("coordinator") => Role::Coordinator,
        Some(_) => return Err(PageError::BadRequest(T::BadForm)),
    };
    let hours = match field("hours") {
        None => CODE_TTL_SECS_DEFAULT / 3600,
        Some(h) => h
            .parse::<u64>()
            .map_err(|_| PageError::BadRequest(T::BadForm))?,
    };
    let req = CodeRequest {
        role,
        org_unit: field("org_unit").unwrap_or_default().to_string(),
        label: field("label").map(str::to_string),
        ttl_secs: Some(hours.saturating_mul(3600)),
    };
    let again = |t: T| Some(notice(ctx.lang(), false, t, None));
    match enrol::create(&s, &ctx.device, req).await {
        Ok(made) => {
            let new = NewCode {
                url: crate::field_app::enrol_url(&s.config, &headers, &made.code),
                issued: &made,
            };
            Ok(Page::ok(render(&s, &ctx, None, Some(new)).await?).into_response())
        }
        // The form again, with what was wrong above it.
        Err(ServiceError::FieldCodesOnly) => {
            let top = again(T::EnrolCoordinatorOnly);
            Ok(Page::forbidden(render(&s, &ctx, top, None).await?).into_response())
        }
        Err(ServiceError::OutOfScope { .. }) => {
            let top = again(T::OutOfScope);
            Ok(Page::forbidden(render(&s, &ctx, top, None).await?).into_response())
        }
        Err(ServiceError::BadInput { field: "label", .. }) => {
            let top = again(T::EnrolLabelTooLong);
            Ok(Page::invalid(render(&s, &ctx, top, None).await?).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /enrol/{id}/withdraw`.
pub async fn withdraw(
    State(s): State<AppState>,
    Path(id): Path<String>,
    SignedForm { mut ctx, .. }: SignedForm,
) -> Result<Response, PageError> {
    ctx.path = "/enrol".to_string();
    ctx.query.clear();
    let gone = |ctx: &Ctx| Some(notice(ctx.lang(), false, T::EnrolGone, None));
    let Ok(id) = Uuid::parse_str(&id) else {
        return Ok(Page::not_found(render(&s, &ctx, gone(&ctx), None).await?).into_response());
    };
    match enrol::withdraw(&s, &ctx.device, id).await {
        Ok(()) => Ok(Redirect::to("/enrol?withdrawn=1").into_response()),
        Err(ServiceError::NoSuchCode { .. }) => {
            Ok(Page::not_found(render(&s, &ctx, gone(&ctx), None).await?).into_response())
        }
        Err(e) => Err(e.into()),
    }
}
