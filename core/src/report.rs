//! What coordinators read: a year's figures month by month and by topic,
//! the coverage of every grassroots unit, the annual report (figures and a
//! paragraph to paste), and which records stand behind a figure.
//!
//! Everything is computed from [`Aggregates`] and the [`OrgTree`], never by
//! scanning records, so a district-wide report costs what totals cost. The
//! drill-down predicate [`Behind::counts`] uses the same per-record
//! contribution as the aggregates, so the records listed behind a figure are
//! exactly the ones it counts.
//!
//! The paragraph itself, worded for the unit, is written in `report/text.rs`.

use serde::{Deserialize, Serialize};

use crate::date::Date;
use crate::merge::RecordState;
use crate::org::OrgTree;
use crate::schema::{Kind, SITE_LEVELS};
use crate::totals::{contribution, totals, Aggregates, LevelIx};
use crate::wire::{CornerTotals, OrgRef, SiteTotals, TotalsResponse, UnitType};

mod text;

pub use text::{grassroots_en, grassroots_zh, parts_en, parts_zh, ReportParts};

/// Lectures held in one month.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthFigure {
    /// 1..=12.
    pub month: u32,
    pub lectures: u64,
    pub attendees: u64,
}

/// Lectures on one topic. A lecture with several topics counts under each,
/// so these do not add up to the lecture count.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicFigure {
    /// `None`: lectures recorded without a topic.
    pub topic: Option<String>,
    pub lectures: u64,
    pub attendees: u64,
}

/// One grassroots unit (community or village) in a year.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnitFigure {
    pub org: OrgRef,
    /// Community or village.
    pub unit_type: UnitType,
    /// Its ancestors, root first.
    pub path: Vec<OrgRef>,
    pub lectures: u64,
    pub attendees: u64,
    /// Lectures per quarter (Q1..Q4) of the year.
    pub lectures_by_quarter: [u64; 4],
    /// Active legal library corners: now, from the aggregates; as of the
    /// year's end once [`crate::asof::corners_as_of`] has been applied (as
    /// every figure served is).
    pub corners_active: u64,
    /// Demonstration sites awarded for the year.
    pub demo_sites: SiteTotals,
    pub conflicts_open: u64,
    /// Legal understanders appointed in the year.
    #[serde(default)]
    pub understanders_appointed: u64,
    /// Legal understanders serving at the year's end (appointed by then,
    /// status `serving`).
    #[serde(default)]
    pub understanders_serving: u64,
}

/// A year's figures for the subtree of one unit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct YearFigures {
    pub year: i32,
    /// The type of the unit whose subtree the figures are of.
    pub org_type: UnitType,
    /// Totals for `year-01-01 ..= year-12-31`.
    pub totals: TotalsResponse,
    /// Twelve entries, January first.
    pub months: Vec<MonthFigure>,
    /// Most lectures first, then by topic.
    pub topics: Vec<TopicFigure>,
    /// Grassroots units of the subtree, in tree order.
    pub grassroots: Vec<UnitFigure>,
    /// Every year with lectures, awarded sites or appointed legal
    /// understanders in the subtree, ascending (so a reader can find the
    /// years worth opening).
    pub years: Vec<i32>,
}

/// The first and last day of `year`.
pub fn year_bounds(year: i32) -> Option<(Date, Date)> {
    Some((Date::from_ymd(year, 1, 1)?, Date::from_ymd(year, 12, 31)?))
}

fn quarter_bounds(year: i32, q: u32) -> Option<(Date, Date)> {
    let from = Date::from_ymd(year, q * 3 - 2, 1)?;
    let to = if q == 4 {
        Date::from_ymd(year, 12, 31)?
    } else {
        Date::from_ymd(year, q * 3 + 1, 1)?.add_days(-1)
    };
    Some((from, to))
}

fn org_ref(tree: &OrgTree, code: &str) -> OrgRef {
    OrgRef {
        code: code.to_string(),
        name: tree.get(code).map(|u| u.name.clone()).unwrap_or_default(),
    }
}

fn sites_of(agg: &Aggregates, unit: &str, year: i32) -> SiteTotals {
    let mut s = SiteTotals::default();
    for (&(y, level), &n) in agg.unit(unit).map(|a| &a.sites).into_iter().flatten() {
        if y == year {
            match level {
                0 => s.national += n,
                1 => s.provincial += n,
                2 => s.municipal += n,
                _ => s.district += n,
            }
        }
    }
    s
}

/// The figures of `year` for the subtree of `org`; `None` if `org` is not in
/// the tree or the year is outside the calendar [`Date`] handles.
pub fn year_figures(tree: &OrgTree, agg: &Aggregates, org: &str, year: i32) -> Option<YearFigures> {
    let (from, to) = year_bounds(year)?;
    let totals = totals(tree, agg, org, Some(from), Some(to))?;
    let subtree = tree.subtree(org);
    let mut months: Vec<MonthFigure> = (1..=12)
        .map(|month| MonthFigure {
            month,
            ..MonthFigure::default()
        })
        .collect();
    let mut topics: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    let mut grassroots = Vec::new();
    let mut years = std::collections::BTreeSet::new();
    for unit in &subtree {
        years.extend(agg.lecture_years(&unit.code));
        if let Some(a) = agg.unit(&unit.code) {
            years.extend(a.sites.keys().map(|(y, _)| *y));
        }
        years.extend(agg.understander_years(&unit.code));
        for m in &mut months {
            let first = Date::from_ymd(year, m.month, 1)?;
            let last = if m.month == 12 {
                to
            } else {
                Date::from_ymd(year, m.month + 1, 1)?.add_days(-1)
            };
            let (n, a) = agg.lectures(&unit.code, Some(first), Some(last));
            m.lectures += n;
            m.attendees += a;
        }
        for (topic, (n, a)) in agg.topics_of(&unit.code, year) {
            let t = topics.entry(topic).or_default();
            t.0 += n;
            t.1 += a;
        }
        if unit.unit_type.is_grassroots() {
            let (lectures, attendees) = agg.lectures(&unit.code, Some(from), Some(to));
            let mut by_quarter = [0; 4];
            for (q, slot) in (1..=4).zip(by_quarter.iter_mut()) {
                let (qf, qt) = quarter_bounds(year, q)?;
                *slot = agg.lectures(&unit.code, Some(qf), Some(qt)).0;
            }
            let mut path: Vec<OrgRef> = tree
                .chain(&unit.code)
                .iter()
                .skip(1)
                .map(|c| org_ref(tree, c))
                .collect();
            path.reverse();
            let a = agg.unit(&unit.code);
            let (understanders_appointed, understanders_serving) =
                agg.understanders(&unit.code, Some(from), Some(to));
            grassroots.push(UnitFigure {
                org: org_ref(tree, &unit.code),
                unit_type: unit.unit_type,
                path,
                lectures,
                attendees,
                lectures_by_quarter: by_quarter,
                corners_active: a.map_or(0, |a| a.corners_active),
                demo_sites: sites_of(agg, &unit.code, year),
                conflicts_open: a.map_or(0, |a| a.conflicts_open),
                understanders_appointed,
                understanders_serving,
            });
        }
    }
    let mut topics: Vec<TopicFigure> = topics
        .into_iter()
        .map(|(topic, (lectures, attendees))| TopicFigure {
            topic: (!topic.is_empty()).then_some(topic),
            lectures,
            attendees,
        })
        .collect();
    topics.sort_by(|a, b| b.lectures.cmp(&a.lectures).then(a.topic.cmp(&b.topic)));
    Some(YearFigures {
        year,
        org_type: tree.get(org)?.unit_type,
        totals,
        months,
        topics,
        grassroots,
        years: years.into_iter().collect(),
    })
}

/// Lecture figures of an annual report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportLectures {
    /// Every lecture in the subtree held in the year.
    pub count: u64,
    pub attendees: u64,
    /// Those held in communities and villages.
    pub in_grassroots: u64,
    pub attendees_in_grassroots: u64,
    /// Grassroots units with at least one lecture, of `grassroots_units`.
    pub grassroots_units_reached: u64,
    pub grassroots_units: u64,
}

/// People appointed in a subtree (法律明白人) and the grassroots units
/// they cover.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppointedFigures {
    pub appointed: u64,
    pub units_covered: u64,
    pub units_total: u64,
}

/// `GET /v1/reports/annual`: the figures a district's annual rule-of-law
/// report quotes, and the paragraph that quotes them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnnualReport {
    pub org: OrgRef,
    /// The type of `org`, and how many of its grassroots units are
    /// communities and villages: what the paragraph calls them.
    pub org_type: UnitType,
    pub communities: u64,
    pub villages: u64,
    pub year: i32,
    pub lectures: ReportLectures,
    pub library_corners: CornerTotals,
    /// Grassroots units without an active corner, in tree order.
    pub units_without_corner: Vec<OrgRef>,
    /// Sites awarded for the year.
    pub demo_sites: SiteTotals,
    pub months: Vec<MonthFigure>,
    /// The five topics with most lectures.
    pub top_topics: Vec<TopicFigure>,
    /// Open conflicts in the subtree: figures may still change.
    pub conflicts_open: u64,
    /// 法律明白人 appointed in the subtree; `None` where they are not
    /// counted (the paragraph then says nothing of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legal_understanders: Option<AppointedFigures>,
    /// A zh-CN paragraph for the report.
    pub text_zh: String,
    /// The same in English.
    pub text_en: String,
}

/// The report for `year` over the subtree of `figures.totals.org`.
pub fn annual_report(figures: &YearFigures) -> AnnualReport {
    let t = &figures.totals;
    let g = &figures.grassroots;
    let lectures = ReportLectures {
        count: t.lectures.count,
        attendees: t.lectures.attendees,
        in_grassroots: g.iter().map(|u| u.lectures).sum(),
        attendees_in_grassroots: g.iter().map(|u| u.attendees).sum(),
        grassroots_units_reached: g.iter().filter(|u| u.lectures > 0).count() as u64,
        grassroots_units: g.len() as u64,
    };
    let units_without_corner: Vec<OrgRef> = g
        .iter()
        .filter(|u| u.corners_active == 0)
        .map(|u| u.org.clone())
        .collect();
    let count_of = |ty: UnitType| g.iter().filter(|u| u.unit_type == ty).count() as u64;
    let mut report = AnnualReport {
        org: t.org.clone(),
        org_type: figures.org_type,
        communities: count_of(UnitType::Community),
        villages: count_of(UnitType::Village),
        year: figures.year,
        lectures,
        library_corners: t.library_corners.clone(),
        units_without_corner,
        demo_sites: t.demo_sites.clone(),
        months: figures.months.clone(),
        top_topics: figures.topics.iter().take(5).cloned().collect(),
        conflicts_open: t.conflicts_open,
        legal_understanders: {
            let u = &t.legal_understanders;
            (u.appointed > 0 || u.serving > 0).then_some(AppointedFigures {
                appointed: u.appointed,
                units_covered: u.units_covered,
                units_total: u.units_total,
            })
        },
        text_zh: String::new(),
        text_en: String::new(),
    };
    report.text_zh = parts_zh(&report).paragraph("");
    report.text_en = parts_en(&report).paragraph(" ");
    report
}

/// Which records stand behind a figure (the drill-down of a total).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behind {
    /// Lectures counted in totals for `[from, to]`; with `topic`, only those
    /// on it, synonyms folded (`Some("")`: without topics).
    Lectures {
        from: Option<Date>,
        to: Option<Date>,
        topic: Option<String>,
    },
    /// Active library corners.
    ActiveCorners,
    /// Sites awarded for a year in `[from_year, to_year]`, of one level.
    AwardedSites {
        from_year: Option<i32>,
        to_year: Option<i32>,
        level: Option<LevelIx>,
    },
    /// Legal understanders appointed in `[from, to]`, whatever their status.
    AppointedUnderstanders {
        from: Option<Date>,
        to: Option<Date>,
    },
    /// Legal understanders serving, appointed by `to`.
    ServingUnderstanders { to: Option<Date> },
    /// Every record of a kind (deleted ones too when asked).
    All { kind: Kind, include_deleted: bool },
}

impl Behind {
    /// Parses a level name (`provincial`) into its index.
    pub fn level(name: &str) -> Option<LevelIx> {
        SITE_LEVELS
            .iter()
            .position(|l| *l == name)
            .map(|i| i as LevelIx)
    }

    /// The kind of records this figure counts.
    pub fn kind(&self) -> Kind {
        match self {
            Behind::Lectures { .. } => Kind::Lecture,
            Behind::ActiveCorners => Kind::LibraryCorner,
            Behind::AwardedSites { .. } => Kind::DemoSite,
            Behind::AppointedUnderstanders { .. } | Behind::ServingUnderstanders { .. } => {
                Kind::LegalUnderstander
            }
            Behind::All { kind, .. } => *kind,
        }
    }

    /// Whether `r`, a record in the subtree asked about, counts in the figure.
    pub fn counts(&self, r: &RecordState) -> bool {
        if r.kind != self.kind() {
            return false;
        }
        let c = contribution(r);
        match self {
            Behind::All {
                include_deleted, ..
            } => *include_deleted || !r.is_deleted(),
            Behind::Lectures { from, to, topic } => c.is_some_and(|c| {
                c.lecture.is_some_and(|(day, _)| {
                    from.is_none_or(|f| day >= f.0)
                        && to.is_none_or(|t| day <= t.0)
                        && topic
                            .as_deref()
                            .is_none_or(|t| c.topics.contains(&crate::topics::fold(t)))
                })
            }),
            Behind::ActiveCorners => c.is_some_and(|c| c.corner_active),
            Behind::AwardedSites {
                from_year,
                to_year,
                level,
            } => c.and_then(|c| c.site).is_some_and(|(y, l)| {
                from_year.is_none_or(|f| y >= f)
                    && to_year.is_none_or(|t| y <= t)
                    && level.is_none_or(|want| l == want)
            }),
            Behind::AppointedUnderstanders { from, to } => {
                c.and_then(|c| c.understander).is_some_and(|(day, _)| {
                    from.is_none_or(|f| day >= f.0) && to.is_none_or(|t| day <= t.0)
                })
            }
            Behind::ServingUnderstanders { to } => c
                .and_then(|c| c.understander)
                .is_some_and(|(day, serving)| serving && to.is_none_or(|t| day <= t.0)),
        }
    }
}
