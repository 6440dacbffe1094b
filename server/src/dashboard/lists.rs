//! `GET /rejections` and `GET /devices`: the two lists a coordinator
//! follows up with people about. Both take `?org=` like the API.

use axum::extract::State;
use maud::{html, Markup};
use pufa_core::date::DAY_MS;
use pufa_core::org::OrgTree;
use pufa_core::wire::{DeviceView, LIST_LIMIT_DEFAULT};

use super::i18n::{Lang, T};
use super::page::{duration_text, page, role_text, value_text, Locale, Page, PageError};
use super::session::Ctx;
use super::{device_labels, Section};
use crate::AppState;

/// A device whose last sync is longer ago than this is flagged: two weeks
/// is when an outbox of unsent lectures starts to matter for monthly
/// reporting.
pub const SILENT_AFTER_MS: u64 = 14 * DAY_MS;

/// `GET /rejections?org=`.
pub async fn rejections(State(s): State<AppState>, ctx: Ctx) -> Result<Page, PageError> {
    let lang = ctx.lang();
    let scope = ctx.scope(&s.store.org_tree())?;
    let list = s.store.rejections(scope, LIST_LIMIT_DEFAULT).await?;
    let ids: Vec<_> = list.iter().map(|r| r.device_id).collect();
    let labels = device_labels(&s, &ids).await?;
    let body = html! {
        p.muted { (T::RejectionsIntro.get(lang)) }
        (limit_note(lang, list.len()))
        @if list.is_empty() {
            p.box { (T::NoRejections.get(lang)) }
        } @else {
            div.scroll {
                table #rejections {
                    thead {
                        tr {
                            th { (T::Received.get(lang)) }
                            th { (T::Device.get(lang)) }
                            th { (T::Code.get(lang)) }
                            th { (T::Field.get(lang)) }
                            th { (T::Message.get(lang)) }
                            th { (T::RecordKind.get(lang)) }
                            th { (T::Submitted.get(lang)) }
                        }
                    }
                    tbody {
                        @for r in &list {
                            tr {
                                td { (ctx.locale.time(r.received_ms)) }
                                td { (labels.get(&r.device_id).cloned().unwrap_or_default()) }
                                td { code { (r.error.code) } }
                                td { @if let Some(f) = &r.error.field { code { (f) } } }
                                td.wrap { (r.error.message) }
                                td { @if let Some(k) = r.mutation.get("kind") { (value_text(k)) } }
                                td.wrap {
                                    pre.value { (serde_json::to_string_pretty(&r.mutation).unwrap_or_default()) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(Page::ok(page(
        &ctx,
        Section::Rejections,
        T::NavRejections.get(lang),
        body,
    )))
}

fn limit_note(lang: Lang, shown: usize) -> Markup {
    html! {
        @if shown >= LIST_LIMIT_DEFAULT {
            p.muted { (T::ShowingNewest.with_n(lang, LIST_LIMIT_DEFAULT)) }
        }
    }
}

/// How long a device has been quiet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Silence {
    Recent,
    /// Last push or pull more than [`SILENT_AFTER_MS`] ago.
    Stale,
    Never,
}

/// Judged on the later of its last push and last pull, against `now_ms`.
pub fn silence(d: &DeviceView, now_ms: u64) -> Silence {
    match d.last_push_ms.max(d.last_pull_ms) {
        None => Silence::Never,
        Some(t) if now_ms.saturating_sub(t) > SILENT_AFTER_MS => Silence::Stale,
        Some(_) => Silence::Recent,
    }
}

/// `GET /devices?org=`.
pub async fn devices(State(s): State<AppState>, ctx: Ctx) -> Result<Page, PageError> {
    let lang = ctx.lang();
    let tree = s.store.org_tree();
    let scope = ctx.scope(&tree)?;
    let list = s.store.devices(scope, LIST_LIMIT_DEFAULT).await?;
    let now = s.config.clock.now_ms();
    let skew_max_ms = i64::try_from(s.config.max_skew.as_millis()).unwrap_or(i64::MAX);
    let body = html! {
        p.muted { (T::DevicesIntro.get(lang)) }
        (limit_note(lang, list.len()))
        @if list.is_empty() {
            p.box { (T::NoDevices.get(lang)) }
        } @else {
            div.scroll {
                table #devices {
                    thead {
                        tr {
                            th { (T::Label.get(lang)) }
                            th { (T::Status.get(lang)) }
                            th { (T::Role.get(lang)) }
                            th { (T::Unit.get(lang)) }
                            th { (T::LastPush.get(lang)) }
                            th { (T::LastPull.get(lang)) }
                            th.num { (T::Outbox.get(lang)) }
                            th { (T::OldestPending.get(lang)) }
                            th.num { (T::ClockSkew.get(lang)) }
                            th { (T::AppVersion.get(lang)) }
                        }
                    }
                    tbody {
                        @for d in &list {
                            (device_row(&ctx.locale, &tree, d, silence(d, now), skew_max_ms))
                        }
                    }
                }
            }
        }
    };
    Ok(Page::ok(page(
        &ctx,
        Section::Devices,
        T::NavDevices.get(lang),
        body,
    )))
}

fn device_row(
    locale: &Locale,
    tree: &OrgTree,
    d: &DeviceView,
    quiet: Silence,
    skew_max_ms: i64,
) -> Markup {
    let lang = locale.lang;
    // A revoked token cannot sync any more; flagging it would only hide
    // the devices that still can.
    let flagged = !d.revoked && quiet != Silence::Recent;
    let skew_far = d
        .clock_skew_ms
        .is_some_and(|s| s.saturating_abs() > skew_max_ms);
    let unit = match &d.org_unit {
        Some(code) => match tree.get(code) {
            Some(u) => format!("{} ({code})", u.name),
            None => code.clone(),
        },
        None => T::Everything.get(lang).to_string(),
    };
    html! {
        tr class=[flagged.then_some("stale")] data-device=(d.device_id) {
            td { (d.label) }
            td {
                @if d.revoked {
                    span.marker { (T::Revoked.get(lang)) }
                } @else {
                    @match quiet {
                        Silence::Never => span.marker { (T::NeverSynced.get(lang)) },
                        Silence::Stale => span.marker { (T::Stale.get(lang)) },
                        Silence::Recent => @if !skew_far { (T::Fine.get(lang)) },
                    }
                }
                @if skew_far {
                    " " span.marker { (T::SkewFar.get(lang)) }
                }
            }
            td { (role_text(d.role).get(lang)) }
            td { (unit) }
            td { (locale.maybe_time(d.last_push_ms)) }
            td { (locale.maybe_time(d.last_pull_ms)) }
            td.num { @if let Some(n) = d.outbox_len { (n) } }
            td { @if let Some(t) = d.oldest_pending_ms { (locale.time(t)) } }
            td.num { @if let Some(s) = d.clock_skew_ms { (duration_text(lang, s)) } }
            td { @if let Some(v) = &d.app_version { (v) } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pufa_core::wire::Role;
    use uuid::Uuid;

    fn view(push: Option<u64>, pull: Option<u64>) -> DeviceView {
        DeviceView {
            device_id: Uuid::nil(),
            label: "x".into(),
            role: Role::Field,
            org_unit: None,
            revoked: false,
            last_push_ms: push,
            last_pull_ms: pull,
            app_version: None,
            outbox_len: None,
            oldest_pending_ms: None,
            clock_skew_ms: None,
        }
    }

    #[test]
    fn silence_counts_from_the_later_of_push_and_pull() {
        let now = 100 * DAY_MS;
        assert_eq!(silence(&view(None, None), now), Silence::Never);
        assert_eq!(
            silence(&view(Some(now - 15 * DAY_MS), None), now),
            Silence::Stale
        );
        assert_eq!(
            silence(&view(Some(now - 15 * DAY_MS), Some(now - DAY_MS)), now),
            Silence::Recent
        );
        assert_eq!(
            silence(&view(None, Some(now - SILENT_AFTER_MS)), now),
            Silence::Recent
        );
        assert_eq!(
            silence(&view(Some(now + DAY_MS), None), now),
            Silence::Recent
        );
    }
}
