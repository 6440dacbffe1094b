//! The pages that answer "how did the year go": the annual report (figures,
//! the paragraph to paste, lectures per month as a chart, topics), the
//! coverage of every community and village (corners, lectures, legal
//! understanders), the records behind any figure,
//! and downloads (CSV/XLSX) through the same code as `GET /v1/exports`.
//!
//! Figures come from `asof::year_figures`: the aggregates, with library
//! corners as they stood at the year's end (a listing of the corners and
//! their histories); the record list and record exports scan records.

use axum::extract::{Path, State};
use axum::response::Response;
use maud::{html, Markup, PreEscaped};
use pufa_core::org::{OrgTree, Scope};
use pufa_core::report::{self, Behind, MonthFigure, YearFigures};
use pufa_core::schema::{choice_label, FieldType, Kind};
use pufa_core::wire::RecordView;
use uuid::Uuid;

use super::chart;
use super::i18n::{Lang, T};
use super::page::{page, percent_text, url, value_text, Page, PageError};
use super::session::Ctx;
use super::Section;
use crate::api;
use crate::extract::Params;
use crate::store::RecordQuery;
use crate::AppState;

/// Records per page of the drill-down list.
pub const RECORDS_PAGE: usize = 100;

fn params(ctx: &Ctx) -> Params {
    // The form always sends every field; an empty one means "not given".
    Params(
        ctx.query
            .iter()
            .filter(|(k, v)| !v.is_empty() || k.as_str() == "topic")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

/// The unit a page is about: `org=` (checked against the scope) or the
/// reader's own unit / the root.
fn page_org(ctx: &Ctx, tree: &OrgTree) -> Result<String, PageError> {
    ctx.scope(tree)?;
    Ok(api::figure_org(&ctx.device, tree, ctx.org_param())?)
}

/// The year a page opens on when none is asked for: this year, or, when
/// this year has nothing yet (a demo of 2020, say), the latest year up to
/// now that has something, rather than a page of zeros.
pub fn default_year(years: &[i32], now_year: i32) -> i32 {
    if years.contains(&now_year) {
        return now_year;
    }
    years
        .iter()
        .rev()
        .find(|y| **y <= now_year)
        .copied()
        .unwrap_or(now_year)
}

/// A unit's figures of `year` (an existing unit, checked by the caller).
pub async fn year_of(s: &AppState, org: &str, year: i32) -> Result<YearFigures, PageError> {
    crate::asof::year_figures(&*s.store, &s.config.time_zone, org, year)
        .await?
        .ok_or(PageError::NotFound(T::NoSuchUnit))
}

/// `year=` if given, else [`default_year`].
async fn figures_for(s: &AppState, ctx: &Ctx, org: &str) -> Result<YearFigures, PageError> {
    if ctx.param("year").is_some_and(|y| !y.is_empty()) {
        let year = api::year_param(&params(ctx))?;
        return year_of(s, org, year).await;
    }
    let now_year = ctx.locale.today().year();
    let current = year_of(s, org, now_year).await?;
    match default_year(&current.years, now_year) {
        y if y == now_year => Ok(current),
        y => year_of(s, org, y).await,
    }
}

fn month_labels(lang: Lang) -> Vec<String> {
    (1..=12)
        .map(|m| match lang {
            Lang::Zh => format!("{m}月"),
            Lang::En => [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ][m - 1]
                .to_string(),
        })
        .collect()
}

/// Lectures per month of a year, as a bar chart with the numbers in a
/// table beneath (the chart's text alternative).
pub fn month_chart(ctx: &Ctx, year: i32, months: &[MonthFigure]) -> Markup {
    let lang = ctx.lang();
    let labels = month_labels(lang);
    let caption = format!("{} · {year}", T::LecturesPerMonth.get(lang));
    let svg = chart::month_bars(months, &labels, &caption, |l, a| {
        format!(
            "{l} {} · {a} {}",
            T::LectureCount.get(lang),
            T::Attendees.get(lang)
        )
    });
    html! {
        section.box #months {
            h2 { (caption) }
            (PreEscaped(svg))
            details {
                summary { (T::AsTable.get(lang)) }
                div.scroll {
                    table {
                        thead { tr {
                            th { (T::Month.get(lang)) }
                            th.num { (T::LectureCount.get(lang)) }
                            th.num { (T::Attendees.get(lang)) }
                        } }
                        tbody {
                            @for (m, label) in months.iter().zip(&labels) {
                                tr { td { (label) } td.num { (m.lectures) } td.num { (m.attendees) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn year_links(ctx: &Ctx, path: &str, org: &str, years: &[i32], current: i32) -> Markup {
    html! {
        nav.years aria-label=(T::Year.get(ctx.lang())) {
            span.muted { (T::Year.get(ctx.lang())) ": " }
            @for y in years {
                @if *y == current {
                    strong aria-current="page" { (y) }
                } @else {
                    a href=(url(path, &[("org", org), ("year", &y.to_string())])) { (y) }
                }
                " "
            }
            form method="get" action=(path) {
                input type="hidden" name="org" value=(org);
                input type="number" name="year" min="2000" max="2100" value=(current) aria-label=(T::Year.get(ctx.lang()));
                button type="submit" { (T::Apply.get(ctx.lang())) }
            }
        }
    }
}

/// Download links for a unit and a period (`from`/`to` may be empty).
pub fn downloads(ctx: &Ctx, org: &str, from: &str, to: &str) -> Markup {
    let lang = ctx.lang();
    let files = [
        ("totals", T::TotalsTable, true, ""),
        ("lecture", T::Lectures, true, "lectures"),
        ("library_corner", T::Corners, false, "records"),
        ("demo_site", T::DemoSites, false, "records"),
        ("legal_understander", T::Understanders, false, "records"),
    ];
    let links: Vec<(T, Vec<(String, String)>)> = files
        .iter()
        .map(|(stem, label, dated, figure)| {
            let mut p: Vec<(&str, &str)> = vec![("org", org), ("lang", lang.param())];
            if *dated {
                p.extend([("from", from), ("to", to)]);
            }
            if !figure.is_empty() {
                p.push(("figure", figure));
            }
            let hrefs = ["csv", "xlsx"]
                .iter()
                .map(|ext| {
                    (
                        ext.to_uppercase(),
                        url(&format!("/export/{stem}.{ext}"), &p),
                    )
                })
                .collect();
            (*label, hrefs)
        })
        .collect();
    html! {
        section.box #downloads {
            h2 { (T::Downloads.get(lang)) }
            ul.downloads {
                @for (label, hrefs) in &links {
                    li {
                        (label.get(lang)) ": "
                        @for (name, href) in hrefs {
                            a href=(href) download { (name) } " "
                        }
                    }
                }
            }
            p.muted { (T::DownloadsHint.get(lang)) }
        }
    }
}

/// `GET /report?org=&year=`.
pub async fn report_page(State(s): State<AppState>, ctx: Ctx) -> Result<Page, PageError> {
    let tree = s.store.org_tree();
    let org = page_org(&ctx, &tree)?;
    let f = figures_for(&s, &ctx, &org).await?;
    let r = report::annual_report(&f);
    let lang = ctx.lang();
    let year = f.year.to_string();
    let (from, to) = (format!("{year}-01-01"), format!("{year}-12-31"));
    let lectures = |extra: &[(&str, &str)]| {
        let mut p = vec![
            ("org", org.as_str()),
            ("figure", "lectures"),
            ("from", from.as_str()),
            ("to", to.as_str()),
        ];
        p.extend_from_slice(extra);
        url("/records", &p)
    };
    let sites = |level: &str| {
        url(
            "/records",
            &[
                ("org", &org),
                ("figure", "sites_awarded"),
                ("from", &from),
                ("to", &to),
                ("level", level),
            ],
        )
    };
    let understanders = |figure: &str| {
        let mut p = vec![("org", org.as_str()), ("figure", figure)];
        if figure == "understanders_appointed" {
            p.push(("from", from.as_str()));
        }
        p.push(("to", to.as_str()));
        url("/records", &p)
    };
    let u = &f.totals.legal_understanders;
    let paragraph = match lang {
        Lang::Zh => &r.text_zh,
        Lang::En => &r.text_en,
    };
    // Likely double entries count twice in these figures: say so.
    let duplicates = crate::duplicates::list(&s, &ctx.device, Some(&org), f.year)
        .await?
        .count;
    let body = html! {
        (year_links(&ctx, "/report", &org, &f.years, f.year))
        section.box #report-text {
            h2 { (T::ReportParagraph.get(lang)) }
            p.muted { (T::ReportParagraphHint.get(lang)) }
            textarea readonly rows="6" aria-label=(T::ReportParagraph.get(lang)) { (paragraph) }
            // A textarea prints only what it shows: paper gets the text.
            p.print-only { (paragraph) }
            p.report-actions {
                a #report-docx href=(url("/report.docx", &[("org", &org), ("year", &year), ("lang", lang.param())])) download {
                    (T::ReportDocx.get(lang))
                }
                " "
                span.muted { (T::ReportDocxHint.get(lang)) }
            }
            @if r.conflicts_open > 0 {
                p.notice.problem {
                    a href=(url("/conflicts", &[("org", &org)])) { (T::ReportHasConflicts.with_n(lang, r.conflicts_open)) }
                }
            }
            @if duplicates > 0 {
                p.notice.problem {
                    a #report-duplicates href=(url("/duplicates", &[("org", &org), ("year", &year)])) { (T::ReportHasDuplicates.with_n(lang, duplicates)) }
                }
            }
        }
        section.cards {
            div.card {
                h2 { (T::Lectures.get(lang)) }
                dl {
                    dt { (T::LecturesInGrassroots.get(lang)) }
                    dd { a #report-lectures-grassroots href=(lectures(&[])) { (r.lectures.in_grassroots) } }
                    dt { (T::Attendees.get(lang)) }
                    dd #report-attendees-grassroots { (r.lectures.attendees_in_grassroots) }
                    dt { (T::UnitsReached.get(lang)) }
                    dd #report-units-reached { (r.lectures.grassroots_units_reached) " / " (r.lectures.grassroots_units) }
                    dt { (T::LecturesAll.get(lang)) }
                    dd #report-lectures-all { (r.lectures.count) }
                }
            }
            div.card {
                h2 { (T::Corners.get(lang)) }
                dl {
                    dt { (T::CornersActive.get(lang)) }
                    dd { a #report-corners-active href=(url("/records", &[("org", &org), ("figure", "corners_active")])) { (r.library_corners.active) } }
                    dt { (T::Coverage.get(lang)) }
                    dd #report-corners-coverage { (percent_text(r.library_corners.coverage)) }
                    dt { (T::UnitsWithoutCorner.get(lang)) }
                    dd { a #report-units-without-corner href=(url("/coverage", &[("org", &org), ("year", &year), ("gaps", "1")])) { (r.units_without_corner.len()) } }
                }
            }
            div.card {
                h2 { (T::DemoSites.get(lang)) }
                dl {
                    @for (id, level, label, n) in [
                        ("report-sites-national", "national", T::LevelNational, r.demo_sites.national),
                        ("report-sites-provincial", "provincial", T::LevelProvincial, r.demo_sites.provincial),
                        ("report-sites-municipal", "municipal", T::LevelMunicipal, r.demo_sites.municipal),
                        ("report-sites-district", "district", T::LevelDistrict, r.demo_sites.district),
                    ] {
                        dt { (label.get(lang)) }
                        dd { a id=(id) href=(sites(level)) { (n) } }
                    }
                }
            }
            div.card {
                h2 { (T::Understanders.get(lang)) }
                dl {
                    dt { (T::UnderstandersAppointed.get(lang)) }
                    dd { a #report-understanders-appointed href=(understanders("understanders_appointed")) { (u.appointed) } }
                    dt { (T::UnderstandersServingAtYearEnd.get(lang)) }
                    dd { a #report-understanders-serving href=(understanders("understanders_serving")) { (u.serving) } }
                    dt { (T::Coverage.get(lang)) }
                    dd #report-understanders-coverage { (percent_text(u.coverage)) }
                    dt { (T::UnitsWithoutUnderstander.get(lang)) }
                    dd { a #report-units-without-understander href=(url("/coverage", &[("org", &org), ("year", &year), ("gaps", "1")])) { (u.units_total - u.units_covered) } }
                }
            }
        }
        p.muted #report-rules { (T::FigureRules.with_n(lang, f.year)) }
        (month_chart(&ctx, f.year, &f.months))
        section.box #topics {
            h2 { (T::ByTopic.get(lang)) }
            @if f.topics.is_empty() {
                p { (T::NoLectures.get(lang)) }
            } @else {
                p.muted { (T::ByTopicHint.get(lang)) }
                div.scroll {
                    table {
                        thead { tr {
                            th { (T::Topic.get(lang)) }
                            th.num { (T::LectureCount.get(lang)) }
                            th.num { (T::Attendees.get(lang)) }
                        } }
                        tbody {
                            @for t in &f.topics {
                                tr {
                                    td { a href=(lectures(&[("topic", t.topic.as_deref().unwrap_or(""))])) {
                                        (t.topic.as_deref().unwrap_or(T::NoTopic.get(lang)))
                                    } }
                                    td.num { (t.lectures) }
                                    td.num { (t.attendees) }
                                }
                            }
                        }
                    }
                }
            }
        }
        (downloads(&ctx, &org, &from, &to))
    };
    let title = format!("{} · {} {}", r.org.name, f.year, T::NavReport.get(lang));
    Ok(Page::ok(page(&ctx, Section::Report, &title, body)))
}

/// `GET /report.docx?org=&year=&lang=`: the annual report as a Word
/// document, through the API's code and checks
/// (`GET /v1/reports/annual?format=docx`).
pub async fn report_docx(State(s): State<AppState>, ctx: Ctx) -> Result<Response, PageError> {
    let tree = s.store.org_tree();
    ctx.scope(&tree)?;
    let mut q = params(&ctx);
    q.0.insert("format".into(), "docx".into());
    Ok(api::annual_report_file(&s, &ctx.device, &q).await?)
}

/// `GET /coverage?org=&year=&quarter=&gaps=1`: every community and village
/// with its corners, lectures and legal understanders, gaps marked.
pub async fn coverage_page(State(s): State<AppState>, ctx: Ctx) -> Result<Page, PageError> {
    let tree = s.store.org_tree();
    let org = page_org(&ctx, &tree)?;
    let f = figures_for(&s, &ctx, &org).await?;
    let lang = ctx.lang();
    let now = ctx.locale.today();
    let quarter: usize = match ctx.param("quarter").filter(|q| !q.is_empty()) {
        Some(q) => q
            .parse()
            .ok()
            .filter(|q| (1..=4).contains(q))
            .ok_or_else(|| PageError::bad_query("quarter", q, T::BadQuarter))?,
        // This quarter when looking at this year, else the year's last.
        None if f.year == now.year() => (now.ymd().1 as usize - 1) / 3 + 1,
        None => 4,
    };
    let gaps_only = ctx.param("gaps") == Some("1");
    let year = f.year.to_string();
    let no_corner = f
        .grassroots
        .iter()
        .filter(|u| u.corners_active == 0)
        .count();
    let no_lecture = f
        .grassroots
        .iter()
        .filter(|u| u.lectures_by_quarter[quarter - 1] == 0)
        .count();
    let no_understander = f
        .grassroots
        .iter()
        .filter(|u| u.understanders_serving == 0)
        .count();
    let q_text = quarter.to_string();
    let body = html! {
        (year_links(&ctx, "/coverage", &org, &f.years, f.year))
        form.period.box method="get" action="/coverage" {
            input type="hidden" name="org" value=(org);
            input type="hidden" name="year" value=(year);
            label { (T::Quarter.get(lang))
                select name="quarter" {
                    @for q in 1..=4usize {
                        option value=(q) selected[q == quarter] { "Q" (q) }
                    }
                }
            }
            label.inline { input type="checkbox" name="gaps" value="1" checked[gaps_only]; " " (T::GapsOnly.get(lang)) }
            button type="submit" { (T::Apply.get(lang)) }
        }
        section.cards {
            div.card { dl {
                dt { (T::GrassrootsUnits.get(lang)) } dd #coverage-units { (f.grassroots.len()) }
                dt { (T::WithoutCorner.get(lang)) } dd #coverage-no-corner { (no_corner) }
                dt { (T::WithoutLectureInQuarter.with_n(lang, &q_text)) } dd #coverage-no-lecture { (no_lecture) }
                dt { (T::WithoutUnderstander.get(lang)) } dd #coverage-no-understander { (no_understander) }
            } }
        }
        p.muted #coverage-rules { (T::FigureRules.with_n(lang, f.year)) }
        div.scroll {
            table #coverage-table {
                thead { tr {
                    th { (T::Unit.get(lang)) }
                    th { (T::Parent.get(lang)) }
                    th.num { (T::CornersActive.get(lang)) }
                    th.num { (T::LecturesInQuarter.with_n(lang, &q_text)) }
                    th.num { (T::LecturesInYear.get(lang)) }
                    th.num { (T::Attendees.get(lang)) }
                    th.num { (T::UnderstandersInUnit.get(lang)) }
                    th { (T::Gaps.get(lang)) }
                } }
                tbody {
                    @for u in &f.grassroots {
                        @let lacks_corner = u.corners_active == 0;
                        @let lacks_lecture = u.lectures_by_quarter[quarter - 1] == 0;
                        @let lacks_understander = u.understanders_serving == 0;
                        @let gap = lacks_corner || lacks_lecture || lacks_understander;
                        @if !gaps_only || gap {
                            tr.stale[gap] data-org=(u.org.code) {
                                td { a href=(url("/", &[("org", &u.org.code)])) { (u.org.name) } }
                                td { (u.path.last().map(|p| p.name.as_str()).unwrap_or("")) }
                                td.num { (u.corners_active) }
                                td.num { (u.lectures_by_quarter[quarter - 1]) }
                                td.num { (u.lectures) }
                                td.num { (u.attendees) }
                                td.num { (u.understanders_serving) }
                                td {
                                    @if lacks_corner { span.marker { (T::MarkNoCorner.get(lang)) } " " }
                                    @if lacks_lecture { span.marker { (T::MarkNoLecture.with_n(lang, &q_text)) } " " }
                                    @if lacks_understander { span.marker { (T::MarkNoUnderstander.get(lang)) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    let title = format!(
        "{} · {} {}",
        f.totals.org.name,
        f.year,
        T::NavCoverage.get(lang)
    );
    Ok(Page::ok(page(&ctx, Section::Coverage, &title, body)))
}

fn kind_text(kind: Kind) -> T {
    match kind {
        Kind::Lecture => T::Lectures,
        Kind::LibraryCorner => T::Corners,
        Kind::DemoSite => T::DemoSites,
        Kind::LegalUnderstander => T::Understanders,
    }
}

/// The columns of a record list, per kind.
fn columns(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Lecture => &["held_on", "title", "attendees", "topics", "speaker"],
        Kind::LibraryCorner => &["name", "status", "books", "last_checked_on"],
        Kind::DemoSite => &["level", "status", "year"],
        // No phone: the list is for counting and checking, not contacting.
        Kind::LegalUnderstander => &["name", "status", "appointed_on", "training_hours"],
    }
}

/// A field's name as core's schema gives it.
pub(super) fn field_text(kind: Kind, field: &'static str, lang: Lang) -> &'static str {
    match (kind.field(field), lang) {
        (Some(f), Lang::Zh) => f.label.zh,
        (Some(f), Lang::En) => f.label.en,
        (None, _) => field,
    }
}

/// A record's value of `field`, an enum value by what the schema calls it.
pub(super) fn cell(r: &RecordView, kind: Kind, field: &str, lang: Lang) -> String {
    let named = |v: &str| {
        choice_label(field, v).map(|l| match lang {
            Lang::Zh => l.zh,
            Lang::En => l.en,
        })
    };
    let is_enum = kind
        .field(field)
        .is_some_and(|f| matches!(f.ty, FieldType::OneOf(_)));
    match r.fields.get(field) {
        None => String::new(),
        Some(serde_json::Value::String(v)) if is_enum => named(v).unwrap_or(v).to_string(),
        Some(serde_json::Value::Array(items)) => {
            items.iter().map(value_text).collect::<Vec<_>>().join("、")
        }
        Some(v) => value_text(v),
    }
}

/// `GET /records?org=&figure=&…&after=`: the records behind a figure.
pub async fn records_page(State(s): State<AppState>, ctx: Ctx) -> Result<Page, PageError> {
    let tree = s.store.org_tree();
    let org = page_org(&ctx, &tree)?;
    let q = params(&ctx);
    let kind = api::kind_param(&q)?;
    let behind: Behind = api::behind_param(&q, kind)?;
    let kind = behind.kind();
    let after = match ctx.param("after").filter(|a| !a.is_empty()) {
        Some(a) => {
            Some(Uuid::parse_str(a).map_err(|_| PageError::bad_query("after", a, T::BadParam))?)
        }
        None => None,
    };
    let page_of = s
        .store
        .records(RecordQuery {
            scope: Scope::Unit(org.clone()),
            behind,
            after,
            limit: RECORDS_PAGE,
        })
        .await?;
    let lang = ctx.lang();
    let unit_name = |r: &RecordView| {
        r.fields
            .get("org_unit")
            .and_then(|v| v.as_str())
            .and_then(|c| tree.get(c))
            .map(|u| u.name.clone())
            .unwrap_or_default()
    };
    let export_params: Vec<(&str, &str)> = ctx
        .query
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "after" | "lang"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let body = html! {
        p.muted { (T::RecordsIntro.get(lang)) }
        p {
            a href=(url(&format!("/export/{}.csv", kind.as_str()), &export_params)) download { "CSV" } " · "
            a href=(url(&format!("/export/{}.xlsx", kind.as_str()), &export_params)) download { "XLSX" }
        }
        @if page_of.records.is_empty() {
            p.box #no-records { (T::NoRecords.get(lang)) }
        } @else {
            div.scroll {
                table #records {
                    thead { tr {
                        th { (T::Unit.get(lang)) }
                        @for c in columns(kind) { th { (field_text(kind, c, lang)) } }
                        th.num { (T::ConflictsOpen.get(lang)) }
                    } }
                    tbody {
                        @for r in &page_of.records {
                            tr data-record=(r.id) {
                                td { (unit_name(r)) }
                                @for c in columns(kind) { td { (cell(r, kind, c, lang)) } }
                                td.num { (r.conflicts) }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(next) = page_of.next {
            p { a #next-page href=(ctx.here_with(&[("after", &next.to_string())])) { (T::NextPage.get(lang)) } }
        }
    };
    let title = format!(
        "{} · {}",
        tree.get(&org).map(|u| u.name.as_str()).unwrap_or(&org),
        kind_text(kind).get(lang)
    );
    Ok(Page::ok(page(&ctx, Section::Overview, &title, body)))
}

/// `GET /export/{file}?…`: `GET /v1/exports/{file}` for a signed-in reader.
pub async fn export(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(file): Path<String>,
) -> Result<Response, PageError> {
    let tree = s.store.org_tree();
    ctx.scope(&tree)?;
    Ok(api::export_file(&s, &ctx.device, &file, &params(&ctx)).await?)
}
