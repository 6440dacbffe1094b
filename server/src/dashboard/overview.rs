//! `GET /?org=&from=&to=`: the figures of one unit's subtree for a period
//! (from `Store::totals`, as `GET /v1/totals` answers them) and its
//! sub-units, each a link one level down; breadcrumbs lead back up as far
//! as the reader's scope reaches. Each number links to the records behind
//! it; a one-year period adds lectures month by month; downloads at the end.

use axum::extract::State;
use maud::{html, Markup};
use pufa_core::date::Date;
use pufa_core::org::{OrgTree, Scope};
use pufa_core::wire::{ChildTotals, OrgUnit, TotalsResponse};

use super::figures::{default_year, downloads, month_chart, year_of};
use super::i18n::T;
use super::page::{page, percent_text, unit_type_text, url, Page, PageError};
use super::session::Ctx;
use super::Section;
use crate::AppState;

/// The date range the figures cover.
struct Period {
    from: Option<Date>,
    to: Option<Date>,
}

impl Period {
    /// No `from` and no `to`: the current year by the server's clock, in
    /// its time zone (the page moves it to the latest year with data if
    /// this one has none).
    /// Otherwise each is a date, or empty for an open bound, so that the
    /// form (which always sends both) can ask for "no limit".
    fn from_query(ctx: &Ctx) -> Result<Period, PageError> {
        let (from, to) = (ctx.param("from"), ctx.param("to"));
        if from.is_none() && to.is_none() {
            let year = ctx.locale.today().year();
            return Ok(Period {
                from: Date::from_ymd(year, 1, 1),
                to: Date::from_ymd(year, 12, 31),
            });
        }
        let date = |key: &str, v: Option<&str>| match v {
            None | Some("") => Ok(None),
            Some(text) => Date::parse(text)
                .map(Some)
                .ok_or_else(|| PageError::bad_query(key, text, T::BadDate)),
        };
        let period = Period {
            from: date("from", from)?,
            to: date("to", to)?,
        };
        if let (Some(f), Some(t)) = (period.from, period.to) {
            if f > t {
                return Err(PageError::bad_query("from", &f.to_string(), T::FromAfterTo));
            }
        }
        Ok(period)
    }

    fn texts(&self) -> (String, String) {
        let text = |d: Option<Date>| d.map(|d| d.to_string()).unwrap_or_default();
        (text(self.from), text(self.to))
    }

    /// A link to `org` over the same period.
    fn link(&self, org: &str) -> String {
        let (from, to) = self.texts();
        url("/", &[("org", org), ("from", &from), ("to", &to)])
    }
}

/// `GET /`.
pub async fn overview(State(s): State<AppState>, ctx: Ctx) -> Result<Page, PageError> {
    let tree = s.store.org_tree();
    let org = match ctx.scope(&tree)? {
        Scope::Unit(code) => code,
        // An admin's default is the root, as for `/v1/totals`; where there
        // is none or several, the page says so instead of refusing.
        Scope::All => match tree.roots().as_slice() {
            [root] => root.code.clone(),
            roots => return Ok(Page::ok(choose_root(&ctx, roots))),
        },
    };
    let now_year = ctx.locale.today().year();
    let mut period = Period::from_query(&ctx)?;
    // This year's figures: the years with data (one-click periods) and,
    // often, the chart too.
    let current = year_of(&s, &org, now_year).await?;
    let years = current.years.clone();
    if ctx.param("from").is_none() && ctx.param("to").is_none() {
        let y = default_year(&years, now_year);
        period = Period {
            from: Date::from_ymd(y, 1, 1),
            to: Date::from_ymd(y, 12, 31),
        };
    }
    let totals = s
        .store
        .totals(&org, period.from, period.to)
        .await?
        .ok_or(PageError::NotFound(T::NoSuchUnit))?;
    // A period inside one year also gets that year month by month.
    let year = match (period.from, period.to) {
        (Some(f), Some(t)) if f.year() == t.year() && f.year() == now_year => Some(current),
        (Some(f), Some(t)) if f.year() == t.year() => Some(year_of(&s, &org, f.year()).await?),
        _ => None,
    };
    let (from_text, to_text) = period.texts();
    let lang = ctx.lang();
    // Sections in page order. A monthly chart or a coverage table slots in
    // here as one more function of (ctx, tree, period, org).
    let body = html! {
        (breadcrumbs(&ctx, &tree, &period, &org))
        (period_form(&ctx, &period, &org, &years))
        (figures(&ctx, &totals, &period))
        @if let Some(f) = &year {
            (month_chart(&ctx, f.year, &f.months))
        }
        (children(&ctx, &tree, &period, &totals.children))
        (downloads(&ctx, &org, &from_text, &to_text))
    };
    let title = format!("{} · {}", totals.org.name, T::NavOverview.get(lang));
    Ok(Page::ok(page(&ctx, Section::Overview, &title, body)))
}

fn choose_root(ctx: &Ctx, roots: &[&OrgUnit]) -> Markup {
    let lang = ctx.lang();
    let body = html! {
        div.box {
            @if roots.is_empty() {
                p { (T::NoOrgUnits.get(lang)) }
            } @else {
                p { (T::ChooseRoot.get(lang)) }
                ul {
                    @for r in roots {
                        li { a href=(url("/", &[("org", &r.code)])) { (r.name) } }
                    }
                }
            }
        }
    };
    page(ctx, Section::Overview, T::NavOverview.get(lang), body)
}

/// The chain from the top of the reader's scope down to `org`.
fn breadcrumbs(ctx: &Ctx, tree: &OrgTree, period: &Period, org: &str) -> Markup {
    let scope = ctx.device.scope();
    let mut chain: Vec<&OrgUnit> = tree
        .chain(org)
        .iter()
        .filter(|c| tree.in_scope(c, &scope))
        .filter_map(|c| tree.get(c))
        .collect();
    chain.reverse();
    html! {
        nav.crumbs aria-label=(T::Breadcrumbs.get(ctx.lang())) {
            ol {
                @for (i, u) in chain.iter().enumerate() {
                    li {
                        @if i + 1 == chain.len() {
                            span aria-current="page" { (u.name) }
                        } @else {
                            a href=(period.link(&u.code)) { (u.name) }
                        }
                    }
                }
            }
        }
    }
}

fn period_form(ctx: &Ctx, period: &Period, org: &str, years: &[i32]) -> Markup {
    let lang = ctx.lang();
    let (from, to) = period.texts();
    html! {
        @if !years.is_empty() {
            nav.years aria-label=(T::Year.get(lang)) {
                span.muted { (T::Year.get(lang)) ": " }
                @for y in years {
                    a href=(url("/", &[("org", org), ("from", &format!("{y}-01-01")), ("to", &format!("{y}-12-31"))])) { (y) } " "
                }
            }
        }
        form.period.box method="get" action="/" aria-label=(T::Period.get(lang)) {
            input type="hidden" name="org" value=(org);
            label { (T::From.get(lang)) input type="date" name="from" value=(from); }
            label { (T::To.get(lang)) input type="date" name="to" value=(to); }
            button type="submit" { (T::Apply.get(lang)) }
            p.muted { (T::PeriodHint.get(lang)) }
        }
    }
}

/// One figure: a label and a number, with an id tests and people can
/// point at.
fn figure(id: &str, label: T, ctx: &Ctx, value: impl std::fmt::Display) -> Markup {
    html! {
        dt { (label.get(ctx.lang())) }
        dd id=(id) { (value) }
    }
}

/// A figure whose number links to the records behind it.
fn linked(id: &str, label: T, ctx: &Ctx, value: impl std::fmt::Display, href: &str) -> Markup {
    html! {
        dt { (label.get(ctx.lang())) }
        dd { a id=(id) href=(href) { (value) } }
    }
}

fn figures(ctx: &Ctx, t: &TotalsResponse, period: &Period) -> Markup {
    let lang = ctx.lang();
    let (l, c, d) = (&t.lectures, &t.library_corners, &t.demo_sites);
    let u = &t.legal_understanders;
    let (from, to) = period.texts();
    let records = |figure: &str, extra: &[(&str, &str)]| {
        let mut p = vec![("org", t.org.code.as_str()), ("figure", figure)];
        p.extend_from_slice(extra);
        url("/records", &p)
    };
    let dated = [("from", from.as_str()), ("to", to.as_str())];
    let until = [("to", to.as_str())];
    let site = |level: &str| {
        records(
            "sites_awarded",
            &[("from", &from), ("to", &to), ("level", level)],
        )
    };
    html! {
        section.cards {
            div.card {
                h2 { (T::Lectures.get(lang)) }
                dl {
                    (linked("lectures-count", T::LectureCount, ctx, l.count, &records("lectures", &dated)))
                    (figure("lectures-attendees", T::Attendees, ctx, l.attendees))
                    (figure("lectures-units", T::UnitsWithLecture, ctx, l.units_covered))
                }
            }
            div.card {
                h2 { (T::Corners.get(lang)) }
                dl {
                    (linked("corners-active", T::CornersActive, ctx, c.active, &records("corners_active", &[])))
                    (figure("corners-coverage", T::Coverage, ctx, percent_text(c.coverage)))
                    (figure("corners-units", T::UnitsCovered, ctx, format!("{} / {}", c.units_covered, c.units_total)))
                }
            }
            div.card {
                h2 { (T::DemoSites.get(lang)) }
                dl {
                    (linked("sites-national", T::LevelNational, ctx, d.national, &site("national")))
                    (linked("sites-provincial", T::LevelProvincial, ctx, d.provincial, &site("provincial")))
                    (linked("sites-municipal", T::LevelMunicipal, ctx, d.municipal, &site("municipal")))
                    (linked("sites-district", T::LevelDistrict, ctx, d.district, &site("district")))
                }
            }
            div.card {
                h2 { (T::Understanders.get(lang)) }
                dl {
                    (linked("understanders-appointed", T::UnderstandersAppointed, ctx, u.appointed, &records("understanders_appointed", &dated)))
                    (linked("understanders-serving", T::UnderstandersServing, ctx, u.serving, &records("understanders_serving", &until)))
                    (figure("understanders-coverage", T::Coverage, ctx, percent_text(u.coverage)))
                    (figure("understanders-units", T::UnitsCovered, ctx, format!("{} / {}", u.units_covered, u.units_total)))
                }
            }
            div.card {
                h2 { (T::ConflictsOpen.get(lang)) }
                dl {
                    dt { (T::ConflictsOpen.get(lang)) }
                    dd #conflicts-open {
                        a href=(url("/conflicts", &[("org", &t.org.code)])) { (t.conflicts_open) }
                    }
                }
            }
        }
    }
}

fn children(ctx: &Ctx, tree: &OrgTree, period: &Period, rows: &[ChildTotals]) -> Markup {
    let lang = ctx.lang();
    html! {
        section {
            h2 { (T::SubUnits.get(lang)) }
            @if rows.is_empty() {
                p.box { (T::NoSubUnits.get(lang)) }
            } @else {
                div.scroll {
                    table {
                        thead {
                            tr {
                                th { (T::Name.get(lang)) }
                                th { (T::UnitType.get(lang)) }
                                th.num { (T::LectureCount.get(lang)) }
                                th.num { (T::Attendees.get(lang)) }
                                th.num { (T::CornersActive.get(lang)) }
                                th.num { (T::Coverage.get(lang)) }
                                th.num { (T::LevelNational.get(lang)) }
                                th.num { (T::LevelProvincial.get(lang)) }
                                th.num { (T::LevelMunicipal.get(lang)) }
                                th.num { (T::LevelDistrict.get(lang)) }
                                th.num { (T::UnderstandersInUnit.get(lang)) }
                                th.num { (T::ConflictsOpen.get(lang)) }
                            }
                        }
                        tbody {
                            @for r in rows {
                                tr data-org=(r.org.code) {
                                    td { a href=(period.link(&r.org.code)) { (r.org.name) } }
                                    td {
                                        @if let Some(u) = tree.get(&r.org.code) {
                                            (unit_type_text(u.unit_type).get(lang))
                                        }
                                    }
                                    td.num { (r.lectures.count) }
                                    td.num { (r.lectures.attendees) }
                                    td.num { (r.library_corners.active) }
                                    td.num {
                                        (percent_text(r.library_corners.coverage))
                                        " (" (r.library_corners.units_covered) "/" (r.library_corners.units_total) ")"
                                    }
                                    td.num { (r.demo_sites.national) }
                                    td.num { (r.demo_sites.provincial) }
                                    td.num { (r.demo_sites.municipal) }
                                    td.num { (r.demo_sites.district) }
                                    td.num {
                                        (r.legal_understanders.serving)
                                        " (" (r.legal_understanders.units_covered) "/" (r.legal_understanders.units_total) ")"
                                    }
                                    td.num { (r.conflicts_open) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
