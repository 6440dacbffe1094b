//! `GET /periods?org=&year=` shows the subtree's reporting periods of a
//! year with their states and locks; `POST /periods` takes a step
//! (submit, return, approve, reopen) through the same service as
//! `POST /v1/periods/{action}`. A refused step is shown above the list
//! again, in the coordinator's language, never a bare error page.

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use pufa_core::period::{Period, PeriodAction, PeriodState};
use pufa_core::wire::{PeriodView, PeriodsResponse};

use super::i18n::{Lang, T};
use super::page::{notice, page, url, Page, PageError};
use super::session::{Ctx, SignedForm};
use super::Section;
use crate::periods;
use crate::service_error::ServiceError;
use crate::AppState;

/// `GET /periods`.
pub async fn list(State(s): State<AppState>, ctx: Ctx) -> Result<Page, PageError> {
    let done = ctx.param("done").is_some();
    let top = done.then(|| notice(ctx.lang(), true, T::StepDone, None));
    Ok(Page::ok(render(&s, &ctx, top).await?))
}

/// The page's `year` (2000–2100), this year in the server's time zone
/// when absent.
pub(super) fn year(ctx: &Ctx) -> Result<i32, PageError> {
    match ctx.param("year").filter(|y| !y.is_empty()) {
        None => Ok(ctx.locale.today().year()),
        Some(y) => y
            .parse::<i32>()
            .ok()
            .filter(|y| (pufa_core::period::YEAR_MIN..=pufa_core::period::YEAR_MAX).contains(y))
            .ok_or_else(|| PageError::bad_query("year", y, T::BadParam)),
    }
}

async fn render(s: &AppState, ctx: &Ctx, top: Option<Markup>) -> Result<Markup, PageError> {
    let lang = ctx.lang();
    let year = year(ctx)?;
    let list = periods::list(s, &ctx.device, ctx.org_param(), year).await?;
    let tree = s.store.org_tree();
    let body = html! {
        @if let Some(t) = top { (t) }
        p.muted { (T::PeriodsIntro.get(lang)) }
        form.period method="get" action="/periods" {
            @if let Some(org) = ctx.org_param() {
                input type="hidden" name="org" value=(org);
            }
            label {
                (T::Year.get(lang)) " "
                input type="number" name="year" min="2000" max="2100" value=(year);
            }
            " " button type="submit" { (T::Apply.get(lang)) }
        }
        div.scroll {
            table.stack #periods {
                thead {
                    tr {
                        th { (T::PeriodUnit.get(lang)) }
                        th { (T::PeriodWhich.get(lang)) }
                        th { (T::PeriodState.get(lang)) }
                        th { (T::PeriodLast.get(lang)) }
                        th { (T::PeriodActions.get(lang)) }
                    }
                }
                tbody {
                    @for v in &list.periods {
                        (row(ctx, v, periods::may_approve(&ctx.device, &tree, &v.org_unit), &tree))
                    }
                }
            }
        }
        (other_period(ctx, &list))
    };
    Ok(page(ctx, Section::Periods, T::NavPeriods.get(lang), body))
}

/// `2020年`, `2020年第1季度`, `2020年3月` (or `2020`, `2020 Q1`, `2020-03`).
pub fn period_text(lang: Lang, p: Period) -> String {
    match (lang, p) {
        (Lang::Zh, Period::Year(y)) => format!("{y}年"),
        (Lang::Zh, Period::Quarter(y, q)) => format!("{y}年第{q}季度"),
        (Lang::Zh, Period::Month(y, m)) => format!("{y}年{m}月"),
        (Lang::En, Period::Quarter(y, q)) => format!("{y} Q{q}"),
        (Lang::En, p) => p.to_string(),
    }
}

fn state_text(state: PeriodState) -> T {
    match state {
        PeriodState::Open => T::StateOpen,
        PeriodState::Submitted => T::StateSubmitted,
        PeriodState::Returned => T::StateReturned,
        PeriodState::Approved => T::StateApproved,
    }
}

/// The steps the viewer may take on `v` now.
fn actions(v: &PeriodView, approver: bool) -> Vec<PeriodAction> {
    if v.locked_by.is_some() {
        return Vec::new();
    }
    let mut out = Vec::new();
    match v.state {
        PeriodState::Open | PeriodState::Returned => out.push(PeriodAction::Submit),
        PeriodState::Submitted if approver => out.push(PeriodAction::Return),
        _ => {}
    }
    if approver && v.state != PeriodState::Approved {
        out.push(PeriodAction::Approve);
    }
    if approver && v.state == PeriodState::Approved {
        out.push(PeriodAction::Reopen);
    }
    out
}

fn action_text(a: PeriodAction) -> T {
    match a {
        PeriodAction::Submit => T::ActSubmit,
        PeriodAction::Return => T::ActReturn,
        PeriodAction::Approve => T::ActApprove,
        PeriodAction::Reopen => T::ActReopen,
    }
}

fn row(ctx: &Ctx, v: &PeriodView, approver: bool, tree: &pufa_core::org::OrgTree) -> Markup {
    let lang = ctx.lang();
    html! {
        tr data-unit=(v.org_unit) data-period=(v.period.to_string()) {
            td { (v.name) " " span.muted { (v.org_unit) } }
            td { (period_text(lang, v.period)) }
            td {
                span.state { (state_text(v.state).get(lang)) }
                @if let Some(a) = &v.locked_by {
                    br;
                    span.muted.locked {
                        (T::LockedBy.get(lang)) " "
                        (tree.get(&a.org_unit).map_or(a.org_unit.as_str(), |u| u.name.as_str()))
                        " " (period_text(lang, a.period))
                        " · " (a.approved_by)
                    }
                } @else if v.locked {
                    " " span.locked { (T::Locked.get(lang)) }
                }
            }
            td {
                @if let (Some(by), Some(at)) = (&v.by, v.at_ms) {
                    (by) " · " (ctx.locale.time(at))
                    @if let Some(c) = &v.comment { br; span.muted { "“" (c) "”" } }
                }
            }
            td {
                @for a in actions(v, approver) {
                    (step_form(ctx, &v.org_unit, &v.period.to_string(), a))
                }
            }
        }
    }
}

fn step_form(ctx: &Ctx, unit: &str, period: &str, a: PeriodAction) -> Markup {
    let lang = ctx.lang();
    html! {
        form.step method="post" action="/periods" {
            input type="hidden" name="csrf" value=(ctx.csrf());
            (kept(ctx))
            input type="hidden" name="org_unit" value=(unit);
            input type="hidden" name="period" value=(period);
            input type="hidden" name="action" value=(a.as_str());
            @if a.needs_comment() {
                input type="text" name="comment" required maxlength="500"
                    placeholder=(T::Reason.get(lang)) aria-label=(T::Reason.get(lang));
            }
            button type="submit" { (action_text(a).get(lang)) }
        }
    }
}

/// The list's `org` and `year`, so a step returns to the same list.
fn kept(ctx: &Ctx) -> Markup {
    html! {
        @if let Some(org) = ctx.org_param() {
            input type="hidden" name="org" value=(org);
        }
        @if let Some(y) = ctx.param("year").filter(|y| !y.is_empty()) {
            input type="hidden" name="year" value=(y);
        }
    }
}

fn other_period(ctx: &Ctx, list: &PeriodsResponse) -> Markup {
    let lang = ctx.lang();
    let mut units: Vec<(&str, &str)> = list
        .periods
        .iter()
        .map(|v| (v.org_unit.as_str(), v.name.as_str()))
        .collect();
    units.dedup();
    html! {
        details.box {
            summary { (T::OtherPeriod.get(lang)) }
            form method="post" action="/periods" {
                input type="hidden" name="csrf" value=(ctx.csrf());
                (kept(ctx))
                label { (T::PeriodUnit.get(lang)) " "
                    select name="org_unit" {
                        @for (code, name) in &units { option value=(code) { (name) } }
                    }
                }
                " "
                label { (T::PeriodWhich.get(lang)) " "
                    input type="text" name="period" required placeholder=(format!("{}-Q1", list.year))
                        title=(T::PeriodFormat.get(lang));
                }
                " "
                label { (T::PeriodActions.get(lang)) " "
                    select name="action" {
                        @for a in [PeriodAction::Submit, PeriodAction::Return, PeriodAction::Approve, PeriodAction::Reopen] {
                            option value=(a.as_str()) { (action_text(a).get(lang)) }
                        }
                    }
                }
                " "
                label { (T::Reason.get(lang)) " " input type="text" name="comment" maxlength="500"; }
                " " button type="submit" { (T::Apply.get(lang)) }
                p.muted { (T::PeriodFormat.get(lang)) }
            }
        }
    }
}

fn unit_name(s: &AppState, code: &str) -> String {
    s.store
        .org_tree()
        .get(code)
        .map_or_else(|| code.to_string(), |u| u.name.clone())
}

/// `POST /periods`.
pub async fn act(
    State(s): State<AppState>,
    SignedForm { mut ctx, fields }: SignedForm,
) -> Result<Response, PageError> {
    ctx.path = "/periods".to_string();
    ctx.query.clear();
    let mut back: Vec<(&str, String)> = Vec::new();
    for key in ["org", "year"] {
        if let Some(v) = fields.get(key).filter(|v| !v.is_empty()) {
            ctx.query.insert(key.into(), v.clone());
            back.push((key, v.clone()));
        }
    }
    let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
    let Some(action) = PeriodAction::parse(&get("action")) else {
        return Err(PageError::BadRequest(T::BadForm));
    };
    let req = pufa_core::wire::PeriodStepRequest {
        org_unit: get("org_unit"),
        period: get("period").trim().to_string(),
        comment: fields.get("comment").cloned(),
    };
    let person = ctx.person.clone();
    match periods::step(&s, &ctx.device, person.as_deref(), action, req).await {
        Ok(_) => {
            back.push(("done", "1".into()));
            let params: Vec<(&str, &str)> = back.iter().map(|(k, v)| (*k, v.as_str())).collect();
            Ok(Redirect::to(&url("/periods", &params)).into_response())
        }
        Err(e) => {
            let lang = ctx.lang();
            let (text, detail) = match &e {
                ServiceError::PeriodRefused { lock: Some(a), .. } => (
                    T::StepLockedAbove,
                    Some(format!(
                        "{} {}",
                        unit_name(&s, &a.org_unit),
                        period_text(lang, a.period)
                    )),
                ),
                ServiceError::PeriodRefused {
                    state: Some(st), ..
                } => (
                    T::StepWrongState,
                    Some(state_text(*st).get(lang).to_string()),
                ),
                ServiceError::NeedsApprover { .. } => (T::StepNeedsApprover, None),
                ServiceError::BadInput {
                    field: "period", ..
                } => (T::StepBadPeriod, None),
                ServiceError::BadInput {
                    field: "comment",
                    message,
                } if message.contains("at most") => (T::StepLongReason, None),
                ServiceError::BadInput {
                    field: "comment", ..
                } => (T::StepNeedsReason, None),
                _ => return Err(e.into()),
            };
            let top = notice(ctx.lang(), false, text, detail.as_deref());
            let markup = render(&s, &ctx, Some(top)).await?;
            Ok(match text {
                T::StepNeedsApprover => Page::forbidden(markup),
                _ => Page::invalid(markup),
            }
            .into_response())
        }
    }
}
