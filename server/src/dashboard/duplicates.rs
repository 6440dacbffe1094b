//! `GET /duplicates?org=&year=` lists the likely double entries of a year
//! in scope, each pair side by side (stacked on a phone); `POST
//! /duplicates` marks a pair "not a duplicate" or deletes one of its two
//! records, through the same service as `POST /v1/duplicates/dismiss` and
//! `POST /v1/records/{id}/delete`. A refused delete (locked period, record
//! gone) is shown above the list again, never a bare error page.

use std::collections::HashMap;

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use pufa_core::schema::Kind;
use pufa_core::wire::{DismissRequest, DuplicatePair, RecordView};
use uuid::Uuid;

use super::figures::{cell, field_text};
use super::i18n::T;
use super::page::{notice, page, url, Page, PageError};
use super::session::{Ctx, SignedForm};
use super::{device_labels, Section};
use crate::duplicates;
use crate::service_error::ServiceError;
use crate::AppState;

/// The fields shown for each record of a pair.
const SHOWN: [&str; 4] = ["title", "attendees", "speaker", "topics"];

/// `GET /duplicates`.
pub async fn list(State(s): State<AppState>, ctx: Ctx) -> Result<Page, PageError> {
    let top = match ctx.param("done") {
        Some("dismissed") => Some(notice(ctx.lang(), true, T::DuplicateDismissed, None)),
        Some("deleted") => Some(notice(ctx.lang(), true, T::DuplicateDeleted, None)),
        _ => None,
    };
    Ok(Page::ok(render(&s, &ctx, top).await?))
}

async fn render(s: &AppState, ctx: &Ctx, top: Option<Markup>) -> Result<Markup, PageError> {
    let lang = ctx.lang();
    let year = super::periods::year(ctx)?;
    let list = duplicates::list(s, &ctx.device, ctx.org_param(), year).await?;
    let ids: Vec<Uuid> = list
        .pairs
        .iter()
        .flat_map(|p| [p.a.hlc.node, p.b.hlc.node])
        .collect();
    let labels = device_labels(s, &ids).await?;
    let body = html! {
        @if let Some(t) = top { (t) }
        p.muted { (T::DuplicatesIntro.get(lang)) }
        form.period method="get" action="/duplicates" {
            @if let Some(org) = ctx.org_param() {
                input type="hidden" name="org" value=(org);
            }
            label {
                (T::Year.get(lang)) " "
                input type="number" name="year" min="2000" max="2100" value=(year);
            }
            " " button type="submit" { (T::Apply.get(lang)) }
        }
        @if list.count == 0 {
            p.box #duplicates-count data-count="0" { (T::NoDuplicates.get(lang)) }
        } @else {
            p #duplicates-count data-count=(list.count) { (T::DuplicatesCount.with_n(lang, list.count)) }
        }
        @if list.truncated {
            p.muted { (T::DuplicatesTruncated.get(lang)) }
        }
        @for p in &list.pairs {
            (pair(ctx, year, p, &labels))
        }
    };
    Ok(page(
        ctx,
        Section::Duplicates,
        T::NavDuplicates.get(lang),
        body,
    ))
}

fn pair(ctx: &Ctx, year: i32, p: &DuplicatePair, labels: &HashMap<Uuid, String>) -> Markup {
    let lang = ctx.lang();
    html! {
        article.box.duplicate data-a=(p.a.id) data-b=(p.b.id) {
            p { strong { (p.name) } " · " (p.held_on) }
            div.pair {
                (side(ctx, &p.a, labels))
                (side(ctx, &p.b, labels))
            }
            form.pair-actions method="post" action="/duplicates" {
                input type="hidden" name="csrf" value=(ctx.csrf());
                @if let Some(org) = ctx.org_param() {
                    input type="hidden" name="org" value=(org);
                }
                input type="hidden" name="year" value=(year);
                input type="hidden" name="a" value=(p.a.id);
                input type="hidden" name="b" value=(p.b.id);
                button type="submit" name="action" value="dismiss" { (T::NotDuplicate.get(lang)) }
                button type="submit" name="action" value="delete-a" { (T::DeleteLeft.get(lang)) }
                button type="submit" name="action" value="delete-b" { (T::DeleteRight.get(lang)) }
            }
        }
    }
}

fn side(ctx: &Ctx, r: &RecordView, labels: &HashMap<Uuid, String>) -> Markup {
    let lang = ctx.lang();
    let device = labels
        .get(&r.hlc.node)
        .cloned()
        .unwrap_or_else(|| r.hlc.node.to_string());
    html! {
        div data-id=(r.id) {
            dl {
                @for f in SHOWN {
                    dt { (field_text(Kind::Lecture, f, lang)) }
                    dd { (cell(r, Kind::Lecture, f, lang)) }
                }
                dt { (T::RecordedBy.get(lang)) }
                dd { (device) " · " (ctx.locale.time(r.hlc.ms)) }
            }
        }
    }
}

/// `POST /duplicates`: `action` is `dismiss`, `delete-a` or `delete-b`.
pub async fn act(
    State(s): State<AppState>,
    SignedForm { mut ctx, fields }: SignedForm,
) -> Result<Response, PageError> {
    ctx.path = "/duplicates".to_string();
    ctx.query.clear();
    let mut back: Vec<(&str, String)> = Vec::new();
    for key in ["org", "year"] {
        if let Some(v) = fields.get(key).filter(|v| !v.is_empty()) {
            ctx.query.insert(key.into(), v.clone());
            back.push((key, v.clone()));
        }
    }
    let id = |k: &str| fields.get(k).and_then(|v| Uuid::parse_str(v).ok());
    let (Some(a), Some(b)) = (id("a"), id("b")) else {
        return Err(PageError::BadRequest(T::BadForm));
    };
    let person = ctx.person.clone();
    let done = match fields.get("action").map(String::as_str) {
        Some("dismiss") => duplicates::dismiss(&s, &ctx.device, person, DismissRequest { a, b })
            .await
            .map(|_| "dismissed"),
        Some(side @ ("delete-a" | "delete-b")) => {
            let id = if side == "delete-a" { a } else { b };
            duplicates::delete(&s, &ctx.device, person, id)
                .await
                .map(|_| "deleted")
        }
        _ => return Err(PageError::BadRequest(T::BadForm)),
    };
    let (text, page): (T, fn(Markup) -> Page) = match done {
        Ok(done) => {
            back.push(("done", done.into()));
            let params: Vec<(&str, &str)> = back.iter().map(|(k, v)| (*k, v.as_str())).collect();
            return Ok(Redirect::to(&url("/duplicates", &params)).into_response());
        }
        Err(ServiceError::NoSuchRecord { .. }) => (T::DuplicateGone, Page::not_found),
        Err(ServiceError::Rejected(r)) if r.code.as_str() == "period_locked" => {
            (T::DuplicateLocked, Page::invalid)
        }
        Err(e) => return Err(e.into()),
    };
    let top = notice(ctx.lang(), false, text, None);
    Ok(page(render(&s, &ctx, Some(top)).await?).into_response())
}
