//! `GET /conflicts` lists the open conflicts in scope with both competing
//! values; `POST /conflicts/{id}/resolve` writes the chosen one through
//! `Store::resolve`, exactly as `POST /v1/conflicts/{id}/resolve` does.
//!
//! A value the field rules refuse, or a conflict that closed meanwhile, is
//! shown above the list again (400 / 404), never a bare error page: the
//! coordinator is in the middle of deciding and needs the list.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use pufa_core::hlc::Hlc;
use pufa_core::wire::{ConflictView, LIST_LIMIT_DEFAULT};
use serde_json::Value;
use uuid::Uuid;

use super::i18n::T;
use super::page::{notice, page, url, value_text, Page, PageError};
use super::session::{Ctx, SignedForm};
use super::{device_labels, Section};
use crate::store::ResolveOutcome;
use crate::AppState;

/// The radio value that means "the typed value" rather than a listed one.
const CUSTOM: &str = "custom";
/// Prefix of a radio value carrying a listed value as JSON.
const JSON_PREFIX: &str = "json:";

/// What went wrong with one conflict's form, shown at the top.
struct Problem {
    text: T,
    detail: Option<String>,
}

/// `GET /conflicts?org=`.
pub async fn list(State(s): State<AppState>, ctx: Ctx) -> Result<Page, PageError> {
    let done = ctx.param("resolved").is_some();
    let top = done.then(|| notice(ctx.lang(), true, T::Resolved, None));
    Ok(Page::ok(render(&s, &ctx, top).await?))
}

async fn render(s: &AppState, ctx: &Ctx, top: Option<Markup>) -> Result<Markup, PageError> {
    let lang = ctx.lang();
    let scope = ctx.scope(&s.store.org_tree())?;
    let list = s.store.conflicts(scope, LIST_LIMIT_DEFAULT).await?;
    let ids: Vec<Uuid> = list
        .iter()
        .flat_map(|c| [c.winner_hlc.node, c.loser_hlc.node])
        .collect();
    let labels = device_labels(s, &ids).await?;
    let body = html! {
        @if let Some(t) = top { (t) }
        p.muted { (T::ConflictsIntro.get(lang)) }
        @if list.is_empty() {
            p.box { (T::NoConflicts.get(lang)) }
        }
        @if list.len() >= LIST_LIMIT_DEFAULT {
            p.muted { (T::ShowingNewest.with_n(lang, LIST_LIMIT_DEFAULT)) }
        }
        @for c in &list {
            (conflict(ctx, c, &labels))
        }
    };
    Ok(page(
        ctx,
        Section::Conflicts,
        T::NavConflicts.get(lang),
        body,
    ))
}

fn conflict(ctx: &Ctx, c: &ConflictView, labels: &HashMap<Uuid, String>) -> Markup {
    let lang = ctx.lang();
    let action = format!("/conflicts/{}/resolve", c.id);
    // Typed text stays text where the field holds text, so "2020" for a
    // title is not read as a number.
    let textual = c.winner.is_string() || c.loser.is_string();
    let custom_id = format!("custom-{}", c.id);
    html! {
        article.box.conflict id=(format!("conflict-{}", c.id)) {
            p {
                (T::Record.get(lang)) ": " code { (c.record_id) }
                " · " (T::Field.get(lang)) ": " code { (c.field) }
            }
            form method="post" action=(action) {
                input type="hidden" name="csrf" value=(ctx.csrf());
                @if let Some(org) = ctx.org_param() {
                    input type="hidden" name="org" value=(org);
                }
                @if textual {
                    input type="hidden" name="textual" value="1";
                }
                fieldset {
                    (choice(ctx, T::CurrentValue, &c.winner, &c.winner_hlc, labels))
                    (choice(ctx, T::OverwrittenValue, &c.loser, &c.loser_hlc, labels))
                    label {
                        input type="radio" name="choice" value=(CUSTOM);
                        " " (T::OtherValue.get(lang)) " "
                        input type="text" name="custom" id=(custom_id) aria-label=(T::OtherValue.get(lang));
                    }
                }
                button type="submit" { (T::Resolve.get(lang)) }
            }
        }
    }
}

fn choice(ctx: &Ctx, which: T, value: &Value, hlc: &Hlc, labels: &HashMap<Uuid, String>) -> Markup {
    let lang = ctx.lang();
    let device = labels
        .get(&hlc.node)
        .cloned()
        .unwrap_or_else(|| hlc.node.to_string());
    html! {
        label {
            input type="radio" name="choice" value=(format!("{JSON_PREFIX}{value}"));
            " " strong { (which.get(lang)) } ": "
            span.value { (value_text(value)) }
            br;
            span.muted {
                (T::Device.get(lang)) ": " (device)
                " · " (T::Time.get(lang)) ": " (ctx.locale.time(hlc.ms))
            }
        }
    }
}

/// The value a resolve form chose.
fn chosen(fields: &HashMap<String, String>) -> Result<Value, Problem> {
    let problem = |text| Problem { text, detail: None };
    match fields.get("choice").map(String::as_str) {
        Some(CUSTOM) => {
            let typed = fields.get("custom").map_or("", |t| t.trim());
            if typed.is_empty() {
                return Err(problem(T::ChooseValue));
            }
            if fields.contains_key("textual") {
                return Ok(Value::String(typed.to_string()));
            }
            // A number, boolean or list typed as JSON is that; anything
            // else is text, and the field rules judge it.
            Ok(serde_json::from_str(typed).unwrap_or_else(|_| Value::String(typed.to_string())))
        }
        Some(listed) => listed
            .strip_prefix(JSON_PREFIX)
            .and_then(|json| serde_json::from_str(json).ok())
            .ok_or_else(|| problem(T::BadForm)),
        None => Err(problem(T::ChooseValue)),
    }
}

/// `POST /conflicts/{id}/resolve`.
pub async fn resolve(
    State(s): State<AppState>,
    Path(id): Path<String>,
    SignedForm { mut ctx, fields }: SignedForm,
) -> Result<Response, PageError> {
    // The list is shown again below any problem: as `/conflicts`, with
    // the same `org`, so its links (the language switch) work.
    ctx.path = "/conflicts".to_string();
    ctx.query.clear();
    let org = fields.get("org").filter(|o| !o.is_empty()).cloned();
    if let Some(org) = &org {
        ctx.query.insert("org".into(), org.clone());
    }
    let again = |ctx: &Ctx, p: Problem| notice(ctx.lang(), false, p.text, p.detail.as_deref());
    // An id that is not a UUID names nothing, as in the API.
    let Ok(id) = Uuid::parse_str(&id) else {
        let top = again(
            &ctx,
            Problem {
                text: T::ConflictGone,
                detail: None,
            },
        );
        return Ok(Page::not_found(render(&s, &ctx, Some(top)).await?).into_response());
    };
    let value = match chosen(&fields) {
        Ok(v) => v,
        Err(p) => {
            let top = again(&ctx, p);
            return Ok(Page::invalid(render(&s, &ctx, Some(top)).await?).into_response());
        }
    };
    let outcome = s
        .store
        .resolve(
            id,
            value,
            &ctx.device,
            ctx.person.clone(),
            s.config.clock.now_ms(),
        )
        .await?;
    match outcome {
        ResolveOutcome::Resolved(_) => {
            let mut params = vec![("resolved", "1")];
            if let Some(org) = &org {
                params.push(("org", org));
            }
            Ok(Redirect::to(&url("/conflicts", &params)).into_response())
        }
        ResolveOutcome::NotFound => {
            let top = again(
                &ctx,
                Problem {
                    text: T::ConflictGone,
                    detail: None,
                },
            );
            Ok(Page::not_found(render(&s, &ctx, Some(top)).await?).into_response())
        }
        ResolveOutcome::Invalid(r) => {
            let detail = format!("{} ({})", r.message, r.code.as_str());
            let top = again(
                &ctx,
                Problem {
                    text: T::ValueRejected,
                    detail: Some(detail),
                },
            );
            Ok(Page::invalid(render(&s, &ctx, Some(top)).await?).into_response())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_chosen_value_is_read_by_the_fields_type() {
        let v = |pairs: &[(&str, &str)]| chosen(&form(pairs)).ok();
        assert_eq!(v(&[("choice", "json:90")]), Some(Value::from(90)));
        assert_eq!(
            v(&[("choice", r#"json:"标题""#)]),
            Some(Value::from("标题"))
        );
        assert_eq!(
            v(&[("choice", "custom"), ("custom", " 88 ")]),
            Some(Value::from(88))
        );
        assert_eq!(
            v(&[("choice", "custom"), ("custom", "true")]),
            Some(Value::from(true))
        );
        assert_eq!(
            v(&[("choice", "custom"), ("custom", "2020"), ("textual", "1")]),
            Some(Value::from("2020"))
        );
        assert_eq!(
            v(&[("choice", "custom"), ("custom", "民法典")]),
            Some(Value::from("民法典"))
        );
        for bad in [
            &[][..],
            &[("choice", "custom")][..],
            &[("choice", "custom"), ("custom", "  ")][..],
            &[("choice", "json:{")][..],
            &[("choice", "90")][..],
        ] {
            assert!(chosen(&form(bad)).is_err(), "{bad:?}");
        }
    }
}
