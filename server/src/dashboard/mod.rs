//! The coordinators' dashboard: server-rendered HTML pages at `/`, beside
//! the JSON API, with no JavaScript and no build step.
//!
//! It reads through the same [`Store`](crate::store::Store) operations and
//! scope checks as the API (`totals`, `conflicts`, `resolve`, `devices`,
//! `rejections`, [`auth::narrow`](crate::auth::narrow)), so a page never
//! shows what the API would refuse the same token.
//!
//! - [`session`]: sign-in, the session cookie, CSRF and Origin checks, the
//!   language layer.
//! - [`page`]: the shell, the stylesheet, the HTML response and error
//!   types, formatters.
//! - [`i18n`]: every UI text in Chinese and English.
//! - [`overview`], [`figures`] (report, coverage, records, downloads),
//!   [`conflicts`], [`duplicates`] (likely double entries), [`periods`]
//!   (submit, approve, lock), [`lists`]
//!   (rejections, devices), [`enrol`]
//!   (enrolment codes): pages.
//! - [`chart`]: server-rendered SVG.
//!
//! A new page is a [`Section`], one line in [`NAV`] and one route in
//! [`routes`].

pub mod chart;
pub mod conflicts;
pub mod duplicates;
pub mod enrol;
pub mod figures;
pub mod i18n;
pub mod lists;
pub mod overview;
pub mod page;
pub mod periods;
pub mod session;

use std::collections::HashMap;

use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use uuid::Uuid;

use crate::store::StoreError;
use crate::AppState;
use i18n::T;

/// A page of the menu.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Overview,
    Report,
    Coverage,
    Conflicts,
    Duplicates,
    Periods,
    Rejections,
    Devices,
    Enrol,
}

/// One menu entry.
pub struct NavItem {
    pub section: Section,
    pub path: &'static str,
    pub text: T,
}

/// The menu, in order.
pub const NAV: &[NavItem] = &[
    NavItem {
        section: Section::Overview,
        path: "/",
        text: T::NavOverview,
    },
    NavItem {
        section: Section::Report,
        path: "/report",
        text: T::NavReport,
    },
    NavItem {
        section: Section::Coverage,
        path: "/coverage",
        text: T::NavCoverage,
    },
    NavItem {
        section: Section::Conflicts,
        path: "/conflicts",
        text: T::NavConflicts,
    },
    NavItem {
        section: Section::Duplicates,
        path: "/duplicates",
        text: T::NavDuplicates,
    },
    NavItem {
        section: Section::Periods,
        path: "/periods",
        text: T::NavPeriods,
    },
    NavItem {
        section: Section::Rejections,
        path: "/rejections",
        text: T::NavRejections,
    },
    NavItem {
        section: Section::Devices,
        path: "/devices",
        text: T::NavDevices,
    },
    NavItem {
        section: Section::Enrol,
        path: "/enrol",
        text: T::NavEnrol,
    },
];

/// The dashboard's routes, merged into [`crate::router`]. Every route runs
/// inside the language layer, which also renders error pages.
pub fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(overview::overview))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/report", get(figures::report_page))
        .route("/report.docx", get(figures::report_docx))
        .route("/coverage", get(figures::coverage_page))
        .route("/records", get(figures::records_page))
        .route("/export/{file}", get(figures::export))
        .route("/conflicts", get(conflicts::list))
        .route("/conflicts/{id}/resolve", post(conflicts::resolve))
        .route("/periods", get(periods::list).post(periods::act))
        .route("/duplicates", get(duplicates::list).post(duplicates::act))
        .route("/rejections", get(lists::rejections))
        .route("/devices", get(lists::devices))
        .route("/enrol", get(enrol::enrol_page).post(enrol::create))
        .route("/enrol/{id}/withdraw", post(enrol::withdraw))
        .route(page::STYLESHEET_PATH, get(page::stylesheet))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            session::with_lang,
        ))
}

/// Labels of the devices `ids` name, each looked up once. A device that is
/// gone keeps its id as its label. (A slice, not an iterator: an iterator
/// of closures held across the lookups would make handlers' futures not
/// `Send`.)
async fn device_labels(
    state: &AppState,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, String>, StoreError> {
    let mut out = HashMap::new();
    for &id in ids {
        if out.contains_key(&id) {
            continue;
        }
        let label = match state.store.device(id).await? {
            Some(d) if !d.label.is_empty() => d.label,
            _ => id.to_string(),
        };
        out.insert(id, label);
    }
    Ok(out)
}
