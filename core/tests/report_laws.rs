//! Laws of `core::report`: a year's figures (months, topics, grassroots
//! units), the annual report built on them, and the drill-down predicate
//! `Behind::counts`, all checked against naive recomputations from the
//! final record states after random histories of record states have gone
//! through `Aggregates::apply`.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::sample::select;
use pufa_core::date::Date;
use pufa_core::hlc::Hlc;
use pufa_core::merge::{RecordState, Register};
use pufa_core::org::OrgTree;
use pufa_core::report::{
    annual_report, year_figures, AnnualReport, Behind, MonthFigure, TopicFigure, UnitFigure,
    YearFigures,
};
use pufa_core::schema::{Kind, CORNER_STATUSES, SITE_LEVELS, SITE_STATUSES, UNDERSTANDER_STATUSES};
use pufa_core::totals::{totals, AggKey, AggValue, Aggregates};
use pufa_core::wire::{
    ChildTotals, CornerTotals, LectureTotals, OrgRef, OrgUnit, SiteTotals, TotalsResponse,
    UnderstanderTotals, UnitType,
};
use serde_json::{json, Value};
use uuid::Uuid;

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

fn node() -> Uuid {
    Uuid::from_u128(0x0192_f7a0_0000_7000_8000_0000_0000_0001)
}

fn rid(i: usize) -> Uuid {
    Uuid::from_u128(0x0192_f7a0_2222_7000_8000_0000_0000_0000 + i as u128)
}

fn unit(code: &str, t: UnitType, parent: Option<&str>) -> OrgUnit {
    OrgUnit {
        code: code.into(),
        name: format!("名{code}"),
        unit_type: t,
        parent: parent.map(Into::into),
    }
}

/// ```text
/// d ─┬─ s1 ─┬─ c11        (communities)
///    │      └─ c12
///    ├─ s2 ─── v21        (village)
///    └─ t3 ─┬─ v31        (villages)
///           └─ v32
/// ```
/// With `moved`, village `v21` has been re-parented under town `t3` (and
/// street `s2` is left without grassroots units).
fn tree(moved: bool) -> OrgTree {
    use UnitType::*;
    OrgTree::from_units([
        unit("d", District, None),
        unit("s1", Street, Some("d")),
        unit("s2", Street, Some("d")),
        unit("t3", Town, Some("d")),
        unit("c11", Community, Some("s1")),
        unit("c12", Community, Some("s1")),
        unit("v21", Village, Some(if moved { "t3" } else { "s2" })),
        unit("v31", Village, Some("t3")),
        unit("v32", Village, Some("t3")),
    ])
}

const UNITS: &[&str] = &["d", "s1", "s2", "t3", "c11", "c12", "v21", "v31", "v32"];
const YEARS: &[i32] = &[2018, 2019, 2020, 2021, 2022];
/// Synonyms among them (反诈 and 电信网络诈骗, 民法典 and 《民法典》) count
/// as one topic in figures.
const TOPICS: &[&str] = &[
    "民法典",
    "宪法",
    "反诈",
    "safety",
    "扫黑除恶",
    "电信网络诈骗",
    "《民法典》",
];
/// Record `i`'s kind.
const KINDS: &[Kind] = &[
    Kind::Lecture,
    Kind::Lecture,
    Kind::Lecture,
    Kind::Lecture,
    Kind::Lecture,
    Kind::Lecture,
    Kind::LibraryCorner,
    Kind::LibraryCorner,
    Kind::LibraryCorner,
    Kind::LibraryCorner,
    Kind::DemoSite,
    Kind::DemoSite,
    Kind::DemoSite,
    Kind::LegalUnderstander,
    Kind::LegalUnderstander,
    Kind::LegalUnderstander,
    Kind::LegalUnderstander,
];
/// Days that lie on month, quarter and year boundaries (leap February).
const EDGE_DAYS: &[&str] = &[
    "2019-01-01",
    "2019-03-31",
    "2019-04-01",
    "2019-12-31",
    "2020-01-01",
    "2020-02-29",
    "2020-03-01",
    "2020-06-30",
    "2020-07-01",
    "2020-09-30",
    "2020-10-01",
    "2020-12-31",
    "2021-01-01",
    "2021-12-31",
];

fn day0() -> Date {
    Date::parse("2019-01-01").unwrap()
}

#[derive(Clone, Debug)]
enum Topics {
    /// Never set.
    Absent,
    /// Set, then cleared (`null` register).
    Cleared,
    /// Indices into [`TOPICS`]; may be empty and may repeat.
    List(Vec<usize>),
}

/// One state a record may take.
#[derive(Clone, Debug)]
struct Spec {
    unit: usize,
    held_on: Date,
    attendees: i64,
    topics: Topics,
    status: usize,
    level: usize,
    year: i64,
    /// `None`: never deleted nor restored.
    deleted: Option<bool>,
    conflicts: u32,
}

fn held_on() -> impl Strategy<Value = Date> {
    prop_oneof![
        2 => select(EDGE_DAYS).prop_map(|d| Date::parse(d).unwrap()),
        3 => (0i32..1096).prop_map(|n| day0().add_days(n)),
    ]
}

fn topics() -> impl Strategy<Value = Topics> {
    prop_oneof![
        2 => Just(Topics::Absent),
        1 => Just(Topics::Cleared),
        1 => Just(Topics::List(Vec::new())),
        5 => prop::collection::vec(0..TOPICS.len(), 1..5).prop_map(Topics::List),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0..UNITS.len(),
        held_on(),
        0i64..300,
        topics(),
        0usize..3,
        0usize..4,
        2018i64..2023,
        prop_oneof![4 => Just(None), 1 => Just(Some(false)), 2 => Just(Some(true))],
        prop_oneof![4 => Just(0u32), 1 => 1u32..3],
    )
        .prop_map(
            |(unit, held_on, attendees, topics, status, level, year, deleted, conflicts)| Spec {
                unit,
                held_on,
                attendees,
                topics,
                status,
                level,
                year,
                deleted,
                conflicts,
            },
        )
}

/// The state record `i` takes at `seq` per `spec`.
fn state(i: usize, spec: &Spec, seq: u64, tree: &OrgTree) -> RecordState {
    let reg = |value: Value| Register {
        value,
        hlc: Hlc::new(1_000 + seq, 0, node()),
        seq,
    };
    let kind = KINDS[i];
    let mut fields = BTreeMap::new();
    fields.insert("org_unit".to_string(), reg(json!(UNITS[spec.unit])));
    match kind {
        Kind::Lecture => {
            fields.insert("held_on".into(), reg(json!(spec.held_on.to_string())));
            fields.insert("title".into(), reg(json!("民法典进社区")));
            fields.insert("attendees".into(), reg(json!(spec.attendees)));
            match &spec.topics {
                Topics::Absent => {}
                Topics::Cleared => {
                    fields.insert("topics".into(), reg(Value::Null));
                }
                Topics::List(list) => {
                    let list: Vec<&str> = list.iter().map(|t| TOPICS[*t]).collect();
                    fields.insert("topics".into(), reg(json!(list)));
                }
            }
        }
        Kind::LibraryCorner => {
            fields.insert("name".into(), reg(json!("法治图书角")));
            fields.insert("status".into(), reg(json!(CORNER_STATUSES[spec.status])));
        }
        Kind::DemoSite => {
            fields.insert("level".into(), reg(json!(SITE_LEVELS[spec.level])));
            fields.insert("status".into(), reg(json!(SITE_STATUSES[spec.status])));
            fields.insert("year".into(), reg(json!(spec.year)));
        }
        Kind::LegalUnderstander => {
            // `held_on` stands for the day of appointment.
            fields.insert("name".into(), reg(json!("王丽")));
            fields.insert("appointed_on".into(), reg(json!(spec.held_on.to_string())));
            let status = UNDERSTANDER_STATUSES[spec.status % UNDERSTANDER_STATUSES.len()];
            fields.insert("status".into(), reg(json!(status)));
        }
    }
    let mut r = RecordState {
        id: rid(i),
        kind,
        seq,
        fields,
        deleted: spec.deleted.map(|d| reg(json!(d))),
        open_conflicts: spec.conflicts,
        ever: Vec::new(),
    };
    r.note_scope(tree);
    r
}

/// Records and aggregates as a store keeps them, plus what it persists.
struct Store {
    recs: BTreeMap<Uuid, RecordState>,
    agg: Aggregates,
    persisted: BTreeMap<AggKey, AggValue>,
    /// Another server instance's copy, kept up to date only by replacing
    /// the entries each write persisted (never by applying records).
    follower: Aggregates,
    seq: u64,
}

impl Store {
    fn run(ops: &[(usize, Spec)]) -> Store {
        let tree = tree(false);
        let mut s = Store {
            recs: BTreeMap::new(),
            agg: Aggregates::default(),
            persisted: BTreeMap::new(),
            follower: Aggregates::default(),
            seq: 0,
        };
        for (i, spec) in ops {
            s.seq += 1;
            let after = state(*i, spec, s.seq, &tree);
            let before = s.recs.get(&after.id);
            // A writer that must not touch the shared copy computes the same
            // entries from a scratch copy of what the change touches.
            let change = [(before.cloned(), after.clone())];
            let mut scratch = s.agg.scratch_for(&change);
            scratch.apply(before, &after);
            let from_scratch = scratch.take_dirty();
            s.agg.apply(before, &after);
            s.recs.insert(after.id, after);
            let dirty = s.agg.take_dirty();
            assert_eq!(from_scratch, dirty, "scratch entries differ");
            for (k, v) in dirty {
                s.persisted.insert(k.clone(), v.clone());
                // Stores delete empty entries; a follower sees them gone.
                let empty = matches!(&v, AggValue::Month(d) if d.is_empty())
                    || matches!(&v, AggValue::Topics(t) if t.is_empty())
                    || matches!(&v, AggValue::Understanders(u) if u.is_empty());
                s.follower.replace(k.clone(), (!empty).then_some(v.clone()));
                // Refreshing twice is harmless.
                if s.seq.is_multiple_of(3) {
                    s.follower.replace(k, (!empty).then_some(v));
                }
            }
        }
        s
    }

    fn reloaded(&self) -> Aggregates {
        let mut fresh = Aggregates::default();
        for (k, v) in &self.persisted {
            fresh.load(k.clone(), v.clone());
        }
        fresh
    }
}

// ---------------------------------------------------------------------------
// Naive recomputation, straight from record states
// ---------------------------------------------------------------------------

fn str_field<'a>(r: &'a RecordState, f: &str) -> Option<&'a str> {
    r.value(f).and_then(Value::as_str)
}

fn int_field(r: &RecordState, f: &str) -> Option<i64> {
    r.value(f).and_then(Value::as_i64)
}

fn grassroots(tree: &OrgTree, code: &str) -> bool {
    tree.get(code).is_some_and(|u| u.unit_type.is_grassroots())
}

/// Whether `u` is `root` or below it, by walking parents.
fn within(tree: &OrgTree, u: &str, root: &str) -> bool {
    let mut cur = Some(u);
    while let Some(c) = cur {
        if c == root {
            return true;
        }
        cur = tree.get(c).and_then(|x| x.parent.as_deref());
    }
    false
}

/// Units of `root`'s subtree, depth first, children by code.
fn dfs(tree: &OrgTree, root: &str) -> Vec<String> {
    let mut kids: Vec<&str> = UNITS
        .iter()
        .copied()
        .filter(|u| tree.get(u).unwrap().parent.as_deref() == Some(root))
        .collect();
    kids.sort_unstable();
    let mut out = vec![root.to_string()];
    for k in kids {
        out.extend(dfs(tree, k));
    }
    out
}

fn org_ref(tree: &OrgTree, code: &str) -> OrgRef {
    OrgRef {
        code: code.into(),
        name: tree.get(code).unwrap().name.clone(),
    }
}

/// A live lecture: `(unit, day, attendees, distinct topics)`.
fn live_lecture(r: &RecordState) -> Option<(&str, Date, u64, BTreeSet<&str>)> {
    if r.kind != Kind::Lecture || r.is_deleted() {
        return None;
    }
    let day = Date::parse(str_field(r, "held_on")?).unwrap();
    let topics = match r.value("topics") {
        Some(Value::Array(list)) => list
            .iter()
            .map(|t| pufa_core::topics::fold(t.as_str().unwrap()))
            .collect(),
        _ => BTreeSet::new(),
    };
    Some((
        r.org_unit()?,
        day,
        int_field(r, "attendees").unwrap() as u64,
        topics,
    ))
}

fn is_active_corner(r: &RecordState) -> bool {
    r.kind == Kind::LibraryCorner && !r.is_deleted() && str_field(r, "status") == Some("active")
}

/// `(year, level)` of a live awarded site.
fn awarded(r: &RecordState) -> Option<(i32, &str)> {
    (r.kind == Kind::DemoSite && !r.is_deleted() && str_field(r, "status") == Some("awarded")).then(
        || {
            (
                int_field(r, "year").unwrap() as i32,
                str_field(r, "level").unwrap(),
            )
        },
    )
}

/// `(day of appointment, serving)` of a live legal understander.
fn understander(r: &RecordState) -> Option<(Date, bool)> {
    (r.kind == Kind::LegalUnderstander && !r.is_deleted()).then(|| {
        (
            Date::parse(str_field(r, "appointed_on").unwrap()).unwrap(),
            str_field(r, "status") == Some("serving"),
        )
    })
}

fn add_site(s: &mut SiteTotals, level: &str) {
    match level {
        "national" => s.national += 1,
        "provincial" => s.provincial += 1,
        "municipal" => s.municipal += 1,
        "district" => s.district += 1,
        other => panic!("level {other}"),
    }
}

fn in_range(d: Date, from: Option<Date>, to: Option<Date>) -> bool {
    from.is_none_or(|f| d >= f) && to.is_none_or(|t| d <= t)
}

type Figs = (
    LectureTotals,
    CornerTotals,
    SiteTotals,
    UnderstanderTotals,
    u64,
);

fn ratio(covered: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        (covered as f64 / total as f64 * 10_000.0).round() / 10_000.0
    }
}

fn naive_figures(
    tree: &OrgTree,
    recs: &BTreeMap<Uuid, RecordState>,
    root: &str,
    from: Option<Date>,
    to: Option<Date>,
) -> Figs {
    let mut lectures = LectureTotals::default();
    let mut corners = CornerTotals::default();
    let mut sites = SiteTotals::default();
    let mut understanders = UnderstanderTotals::default();
    let mut conflicts = 0;
    let (mut lecture_units, mut corner_units) = (BTreeSet::new(), BTreeSet::new());
    let mut understander_units = BTreeSet::new();
    let years = from.map_or(i32::MIN, Date::year)..=to.map_or(i32::MAX, Date::year);
    for r in recs.values() {
        let u = r.org_unit().unwrap();
        if !within(tree, u, root) {
            continue;
        }
        conflicts += u64::from(r.open_conflicts);
        if let Some((_, day, attendees, _)) = live_lecture(r) {
            if in_range(day, from, to) {
                lectures.count += 1;
                lectures.attendees += attendees;
                if grassroots(tree, u) {
                    lecture_units.insert(u);
                }
            }
        }
        if is_active_corner(r) {
            corners.active += 1;
            if grassroots(tree, u) {
                corner_units.insert(u);
            }
        }
        if let Some((year, level)) = awarded(r) {
            if years.contains(&year) {
                add_site(&mut sites, level);
            }
        }
        if let Some((day, serving)) = understander(r) {
            if in_range(day, from, to) {
                understanders.appointed += 1;
            }
            if serving && to.is_none_or(|t| day <= t) {
                understanders.serving += 1;
                if grassroots(tree, u) {
                    understander_units.insert(u);
                }
            }
        }
    }
    lectures.units_covered = lecture_units.len() as u64;
    corners.units_covered = corner_units.len() as u64;
    corners.units_total = UNITS
        .iter()
        .filter(|u| within(tree, u, root) && grassroots(tree, u))
        .count() as u64;
    corners.coverage = ratio(corners.units_covered, corners.units_total);
    understanders.units_covered = understander_units.len() as u64;
    understanders.units_total = corners.units_total;
    understanders.coverage = ratio(understanders.units_covered, understanders.units_total);
    (lectures, corners, sites, understanders, conflicts)
}

fn naive_totals(
    tree: &OrgTree,
    recs: &BTreeMap<Uuid, RecordState>,
    org: &str,
    from: Option<Date>,
    to: Option<Date>,
) -> TotalsResponse {
    let (lectures, library_corners, demo_sites, legal_understanders, conflicts_open) =
        naive_figures(tree, recs, org, from, to);
    let mut kids: Vec<&str> = UNITS
        .iter()
        .copied()
        .filter(|u| tree.get(u).unwrap().parent.as_deref() == Some(org))
        .collect();
    kids.sort_unstable();
    let children = kids
        .into_iter()
        .map(|c| {
            let (lectures, library_corners, demo_sites, legal_understanders, conflicts_open) =
                naive_figures(tree, recs, c, from, to);
            ChildTotals {
                org: org_ref(tree, c),
                lectures,
                library_corners,
                demo_sites,
                legal_understanders,
                conflicts_open,
            }
        })
        .collect();
    TotalsResponse {
        org: org_ref(tree, org),
        from: from.map(|d| d.to_string()),
        to: to.map(|d| d.to_string()),
        lectures,
        library_corners,
        demo_sites,
        legal_understanders,
        conflicts_open,
        children,
    }
}

fn ymd(y: i32, m: u32, d: u32) -> Date {
    Date::from_ymd(y, m, d).unwrap()
}

fn naive_year(
    tree: &OrgTree,
    recs: &BTreeMap<Uuid, RecordState>,
    org: &str,
    year: i32,
) -> YearFigures {
    let (from, to) = (ymd(year, 1, 1), ymd(year, 12, 31));
    let mut months: Vec<MonthFigure> = (1..=12)
        .map(|month| MonthFigure {
            month,
            lectures: 0,
            attendees: 0,
        })
        .collect();
    let mut by_topic: BTreeMap<Option<String>, (u64, u64)> = BTreeMap::new();
    for r in recs.values() {
        let Some((u, day, attendees, topics)) = live_lecture(r) else {
            continue;
        };
        let (y, m, _) = day.ymd();
        if !within(tree, u, org) || y != year {
            continue;
        }
        months[m as usize - 1].lectures += 1;
        months[m as usize - 1].attendees += attendees;
        let keys: Vec<Option<String>> = if topics.is_empty() {
            vec![None]
        } else {
            topics.iter().map(|t| Some(t.to_string())).collect()
        };
        for k in keys {
            let e = by_topic.entry(k).or_default();
            e.0 += 1;
            e.1 += attendees;
        }
    }
    let mut topics: Vec<TopicFigure> = by_topic
        .into_iter()
        .map(|(topic, (lectures, attendees))| TopicFigure {
            topic,
            lectures,
            attendees,
        })
        .collect();
    topics.sort_by(|a, b| b.lectures.cmp(&a.lectures).then(a.topic.cmp(&b.topic)));
    let quarter = |m: u32| (m as usize - 1) / 3;
    let grassroots_rows = dfs(tree, org)
        .into_iter()
        .filter(|u| grassroots(tree, u))
        .map(|u| {
            let mut path = Vec::new();
            let mut cur = tree.get(&u).unwrap().parent.clone();
            while let Some(p) = cur {
                path.insert(0, org_ref(tree, &p));
                cur = tree.get(&p).unwrap().parent.clone();
            }
            let mut row = UnitFigure {
                org: org_ref(tree, &u),
                unit_type: tree.get(&u).unwrap().unit_type,
                path,
                lectures: 0,
                attendees: 0,
                lectures_by_quarter: [0; 4],
                corners_active: 0,
                demo_sites: SiteTotals::default(),
                conflicts_open: 0,
                understanders_appointed: 0,
                understanders_serving: 0,
            };
            for r in recs.values().filter(|r| r.org_unit() == Some(u.as_str())) {
                row.conflicts_open += u64::from(r.open_conflicts);
                if let Some((_, day, attendees, _)) = live_lecture(r) {
                    let (y, m, _) = day.ymd();
                    if y == year {
                        row.lectures += 1;
                        row.attendees += attendees;
                        row.lectures_by_quarter[quarter(m)] += 1;
                    }
                }
                if is_active_corner(r) {
                    row.corners_active += 1;
                }
                if let Some((y, level)) = awarded(r) {
                    if y == year {
                        add_site(&mut row.demo_sites, level);
                    }
                }
                if let Some((day, serving)) = understander(r) {
                    row.understanders_appointed += u64::from(day.year() == year);
                    row.understanders_serving += u64::from(serving && day <= to);
                }
            }
            row
        })
        .collect();
    // Every year with a lecture, an awarded site or an appointment in the
    // subtree.
    let years: BTreeSet<i32> = recs
        .values()
        .flat_map(|r| {
            let lecture = live_lecture(r)
                .filter(|(u, ..)| within(tree, u, org))
                .map(|(_, day, ..)| day.ymd().0);
            let site = awarded(r)
                .filter(|_| r.org_unit().is_some_and(|u| within(tree, u, org)))
                .map(|(y, _)| y);
            let appointed = understander(r)
                .filter(|_| r.org_unit().is_some_and(|u| within(tree, u, org)))
                .map(|(day, _)| day.year());
            lecture.into_iter().chain(site).chain(appointed)
        })
        .collect();
    YearFigures {
        year,
        org_type: tree.get(org).unwrap().unit_type,
        totals: naive_totals(tree, recs, org, Some(from), Some(to)),
        months,
        topics,
        grassroots: grassroots_rows,
        years: years.into_iter().collect(),
    }
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

/// Records of `root`'s subtree that `behind` counts.
fn behind<'a>(
    tree: &OrgTree,
    recs: &'a BTreeMap<Uuid, RecordState>,
    root: &str,
    b: &Behind,
) -> Vec<&'a RecordState> {
    recs.values()
        .filter(|r| r.org_unit().is_some_and(|u| within(tree, u, root)))
        .filter(|r| b.counts(r))
        .collect()
}

fn lectures_behind(from: Date, to: Date, topic: Option<&str>) -> Behind {
    Behind::Lectures {
        from: Some(from),
        to: Some(to),
        topic: topic.map(str::to_string),
    }
}

/// `(count, attendees)` of the lectures `b` lists.
fn count_attendees(list: &[&RecordState]) -> (u64, u64) {
    let attendees = list
        .iter()
        .map(|r| int_field(r, "attendees").unwrap() as u64)
        .sum();
    (list.len() as u64, attendees)
}

fn sites_behind(from_year: i32, to_year: i32, level: Option<&str>) -> Behind {
    Behind::AwardedSites {
        from_year: Some(from_year),
        to_year: Some(to_year),
        level: level.map(|l| Behind::level(l).unwrap()),
    }
}

fn sites_by_level(s: &SiteTotals) -> [(&'static str, u64); 4] {
    [
        ("national", s.national),
        ("provincial", s.provincial),
        ("municipal", s.municipal),
        ("district", s.district),
    ]
}

#[track_caller]
fn check_behind_year(
    tree: &OrgTree,
    recs: &BTreeMap<Uuid, RecordState>,
    f: &YearFigures,
    rows: bool,
) {
    let org = f.totals.org.code.as_str();
    let year = f.year;
    let ctx = format!("{org} {year}");
    let (from, to) = (ymd(year, 1, 1), ymd(year, 12, 31));
    // The year's lectures.
    let all = behind(tree, recs, org, &lectures_behind(from, to, None));
    assert_eq!(
        count_attendees(&all),
        (f.totals.lectures.count, f.totals.lectures.attendees),
        "{ctx}: lectures behind the year"
    );
    // Each month's.
    for m in &f.months {
        let first = ymd(year, m.month, 1);
        let last = if m.month == 12 {
            to
        } else {
            ymd(year, m.month + 1, 1).add_days(-1)
        };
        let list = behind(tree, recs, org, &lectures_behind(first, last, None));
        assert_eq!(
            count_attendees(&list),
            (m.lectures, m.attendees),
            "{ctx}: lectures behind month {}",
            m.month
        );
    }
    // Each topic's (`""`: the lectures without topics).
    for t in &f.topics {
        let topic = t.topic.as_deref().unwrap_or("");
        let list = behind(tree, recs, org, &lectures_behind(from, to, Some(topic)));
        assert_eq!(
            count_attendees(&list),
            (t.lectures, t.attendees),
            "{ctx}: lectures behind topic {topic:?}"
        );
    }
    // A topic nobody chose lists nothing.
    assert!(behind(
        tree,
        recs,
        org,
        &lectures_behind(from, to, Some("无此主题"))
    )
    .is_empty());
    // Corners and sites.
    assert_eq!(
        behind(tree, recs, org, &Behind::ActiveCorners).len() as u64,
        f.totals.library_corners.active,
        "{ctx}: active corners behind"
    );
    let mut sum = 0;
    for (level, n) in sites_by_level(&f.totals.demo_sites) {
        let list = behind(tree, recs, org, &sites_behind(year, year, Some(level)));
        assert_eq!(list.len() as u64, n, "{ctx}: {level} sites behind");
        sum += n;
    }
    assert_eq!(
        behind(tree, recs, org, &sites_behind(year, year, None)).len() as u64,
        sum,
        "{ctx}: sites of any level behind"
    );
    let (appointed, serving) = understanders_behind(from, to);
    assert_eq!(
        behind(tree, recs, org, &appointed).len() as u64,
        f.totals.legal_understanders.appointed,
        "{ctx}: understanders appointed behind"
    );
    assert_eq!(
        behind(tree, recs, org, &serving).len() as u64,
        f.totals.legal_understanders.serving,
        "{ctx}: understanders serving behind"
    );
    // Each grassroots row, drilled into from its own unit (a row does not
    // depend on the unit asked about, so callers check rows from the root).
    for u in f.grassroots.iter().filter(|_| rows) {
        let code = u.org.code.as_str();
        let list = behind(tree, recs, code, &lectures_behind(from, to, None));
        assert_eq!(
            count_attendees(&list),
            (u.lectures, u.attendees),
            "{ctx}: lectures behind row {code}"
        );
        for q in 1..=4u32 {
            let qf = ymd(year, q * 3 - 2, 1);
            let qt = if q == 4 {
                to
            } else {
                ymd(year, q * 3 + 1, 1).add_days(-1)
            };
            let list = behind(tree, recs, code, &lectures_behind(qf, qt, None));
            assert_eq!(
                list.len() as u64,
                u.lectures_by_quarter[q as usize - 1],
                "{ctx}: lectures behind row {code} Q{q}"
            );
        }
        assert_eq!(
            behind(tree, recs, code, &Behind::ActiveCorners).len() as u64,
            u.corners_active,
            "{ctx}: corners behind row {code}"
        );
        for (level, n) in sites_by_level(&u.demo_sites) {
            let list = behind(tree, recs, code, &sites_behind(year, year, Some(level)));
            assert_eq!(
                list.len() as u64,
                n,
                "{ctx}: {level} sites behind row {code}"
            );
        }
        assert_eq!(
            (
                behind(tree, recs, code, &appointed).len() as u64,
                behind(tree, recs, code, &serving).len() as u64
            ),
            (u.understanders_appointed, u.understanders_serving),
            "{ctx}: understanders behind row {code}"
        );
    }
}

/// The drill-downs of the understanders appointed in `[from, to]` and of
/// those serving at `to`.
fn understanders_behind(from: Date, to: Date) -> (Behind, Behind) {
    (
        Behind::AppointedUnderstanders {
            from: Some(from),
            to: Some(to),
        },
        Behind::ServingUnderstanders { to: Some(to) },
    )
}

#[track_caller]
fn check_report(f: &YearFigures) {
    let r = annual_report(f);
    let t = &f.totals;
    let g = &f.grassroots;
    let ctx = format!("{} {}", t.org.code, f.year);
    assert_eq!((r.org.clone(), r.year), (t.org.clone(), f.year), "{ctx}");
    let l = &r.lectures;
    assert_eq!(
        (l.count, l.attendees),
        (t.lectures.count, t.lectures.attendees),
        "{ctx}"
    );
    assert_eq!(
        l.in_grassroots,
        g.iter().map(|u| u.lectures).sum::<u64>(),
        "{ctx}"
    );
    assert_eq!(
        l.attendees_in_grassroots,
        g.iter().map(|u| u.attendees).sum::<u64>(),
        "{ctx}"
    );
    assert_eq!(l.grassroots_units, g.len() as u64, "{ctx}");
    assert_eq!(
        l.grassroots_units_reached,
        g.iter().filter(|u| u.lectures > 0).count() as u64,
        "{ctx}"
    );
    // What the report quotes agrees with the totals it sits on.
    assert_eq!(l.grassroots_units, t.library_corners.units_total, "{ctx}");
    assert_eq!(
        l.grassroots_units_reached, t.lectures.units_covered,
        "{ctx}"
    );
    assert!(l.in_grassroots <= l.count, "{ctx}");
    assert_eq!(r.library_corners, t.library_corners, "{ctx}");
    let without: Vec<OrgRef> = g
        .iter()
        .filter(|u| u.corners_active == 0)
        .map(|u| u.org.clone())
        .collect();
    assert_eq!(r.units_without_corner, without, "{ctx}");
    assert_eq!(
        r.units_without_corner.len() as u64,
        t.library_corners.units_total - t.library_corners.units_covered,
        "{ctx}"
    );
    assert_eq!(r.demo_sites, t.demo_sites, "{ctx}");
    assert_eq!(r.months, f.months, "{ctx}");
    assert_eq!(
        r.top_topics,
        f.topics.iter().take(5).cloned().collect::<Vec<_>>(),
        "{ctx}"
    );
    assert_eq!(r.conflicts_open, t.conflicts_open, "{ctx}");
    let u = &t.legal_understanders;
    assert_eq!(
        r.legal_understanders
            .as_ref()
            .map(|a| (a.appointed, a.units_covered, a.units_total)),
        (u.appointed > 0 || u.serving > 0).then_some((u.appointed, u.units_covered, u.units_total)),
        "{ctx}"
    );
    assert_eq!(
        u.units_covered,
        g.iter().filter(|u| u.understanders_serving > 0).count() as u64,
        "{ctx}"
    );
    // Appointments outside communities and villages count in the totals
    // but in no row.
    assert!(
        u.appointed >= g.iter().map(|u| u.understanders_appointed).sum::<u64>(),
        "{ctx}"
    );
    assert_eq!(u.units_total, g.len() as u64, "{ctx}");

    check_paragraph(&r);
}

/// A zero quoted as a figure ("0场", "0个", "0 lectures"): a 0 that is a
/// whole number, not part of 10 or 2020.
fn zero_figure(text: &str) -> bool {
    let b = text.as_bytes();
    (0..b.len()).any(|i| {
        b[i] == b'0'
            && (i == 0 || !b[i - 1].is_ascii_digit())
            && b.get(i + 1).is_none_or(|c| !c.is_ascii_digit())
    })
}

/// The paragraphs quote the report's numbers, in words fit for the unit.
#[track_caller]
fn check_paragraph(r: &AnnualReport) {
    let ctx = format!("{} {}", r.org.code, r.year);
    let (zh, en) = (&r.text_zh, &r.text_en);
    let has = |needle: String| assert!(zh.contains(&needle), "{ctx}: {needle:?} not in {zh}");
    let l = &r.lectures;
    let c = &r.library_corners;
    let s = &r.demo_sites;
    has(format!("{}年,{}", r.year, r.org.name));
    assert!(!zero_figure(zh), "{ctx}: a zero figure in {zh}");
    assert!(!zero_figure(en), "{ctx}: a zero figure in {en}");
    assert!(!zh.contains("0.0%") && !zh.contains("NaN"), "{ctx}: {zh}");
    if r.villages == 0 {
        // Test units' names hold no 村; the words must not either.
        assert!(!zh.contains('村') && !zh.contains('乡'), "{ctx}: {zh}");
    }
    if r.communities == 0 && r.villages > 0 {
        assert!(!zh.contains("社区"), "{ctx}: {zh}");
    }
    let nothing = l.count == 0
        && c.active == 0
        && s == &SiteTotals::default()
        && r.legal_understanders
            .as_ref()
            .is_none_or(|u| u.appointed == 0);
    assert_eq!(
        zh.contains("暂无法治宣传教育工作记录"),
        nothing,
        "{ctx}: {zh}"
    );
    assert_eq!(
        en.starts_with("Nothing was recorded"),
        nothing,
        "{ctx}: {en}"
    );
    if nothing {
        return;
    }
    if l.in_grassroots > 0 {
        has(format!("{}场", l.in_grassroots));
        if l.attendees_in_grassroots > 0 {
            has(format!("参加群众{}人次", l.attendees_in_grassroots));
        }
        let units = l.grassroots_units;
        if units > 1 && l.grassroots_units_reached < units {
            has(format!("中的{}个", l.grassroots_units_reached));
        }
        if l.count > l.in_grassroots {
            has(format!("共举办法律讲座{}场", l.count));
        }
    } else if l.count > 0 {
        has(format!("共举办法律讲座{}场", l.count));
    } else {
        has("未登记法律讲座".into());
    }
    if c.units_total > 1 && c.units_covered > 0 && c.units_covered < c.units_total {
        has(format!("中{}个建有", c.units_covered));
        has(format!("尚有{}个待建", c.units_total - c.units_covered));
    }
    if c.units_total > 1 && c.units_covered == c.units_total {
        has(format!("在用{}个", c.active));
    }
    for (n, zh_level) in [
        (s.national, "国家级"),
        (s.provincial, "省级"),
        (s.municipal, "市级"),
        (s.district, "区级"),
    ] {
        assert_eq!(zh.contains(zh_level), n > 0, "{ctx}: {zh_level} in {zh}");
    }
    if r.conflicts_open > 0 {
        has(format!("另有{}处数据冲突", r.conflicts_open));
    }
    // Only vocabulary topics are named, by their canonical names.
    for t in r.top_topics.iter().filter_map(|t| t.topic.as_deref()) {
        if let Some(v) = pufa_core::topics::canonical(t) {
            assert_eq!(v.name, t, "{ctx}: figures carry canonical names");
        } else {
            assert!(!zh.contains(t), "{ctx}: free text {t:?} named in {zh}");
        }
    }
    for bad in [" 1 legal lectures", " 1 attendances", "1 lectures in all"] {
        assert!(!en.contains(bad), "{ctx}: {bad:?} in {en}");
    }
}

#[track_caller]
fn check_all(
    tree: &OrgTree,
    recs: &BTreeMap<Uuid, RecordState>,
    agg: &Aggregates,
    ranges: &[(Option<Date>, Option<Date>)],
    drill: &[&str],
    what: &str,
) {
    for org in UNITS {
        for &year in YEARS {
            let got = year_figures(tree, agg, org, year);
            let expect = naive_year(tree, recs, org, year);
            assert_eq!(
                got.as_ref(),
                Some(&expect),
                "{what}: figures of {org} {year}"
            );
            if drill.contains(org) {
                check_behind_year(tree, recs, &expect, *org == "d");
            }
            check_report(&expect);
        }
        // Drill-downs over arbitrary ranges agree with totals.
        for &(from, to) in ranges {
            let t = totals(tree, agg, org, from, to).unwrap();
            assert_eq!(
                t,
                naive_totals(tree, recs, org, from, to),
                "{what}: totals {org} {from:?}..{to:?}"
            );
            let b = Behind::Lectures {
                from,
                to,
                topic: None,
            };
            assert_eq!(
                count_attendees(&behind(tree, recs, org, &b)),
                (t.lectures.count, t.lectures.attendees),
                "{what}: lectures behind {org} {from:?}..{to:?}"
            );
            let b = Behind::AwardedSites {
                from_year: from.map(Date::year),
                to_year: to.map(Date::year),
                level: None,
            };
            let s = &t.demo_sites;
            assert_eq!(
                behind(tree, recs, org, &b).len() as u64,
                s.national + s.provincial + s.municipal + s.district,
                "{what}: sites behind {org} {from:?}..{to:?}"
            );
            let u = &t.legal_understanders;
            let appointed = Behind::AppointedUnderstanders { from, to };
            let serving = Behind::ServingUnderstanders { to };
            assert_eq!(
                (
                    behind(tree, recs, org, &appointed).len() as u64,
                    behind(tree, recs, org, &serving).len() as u64
                ),
                (u.appointed, u.serving),
                "{what}: understanders behind {org} {from:?}..{to:?}"
            );
        }
        // Every record of a kind, deleted ones when asked.
        for kind in Kind::ALL {
            for include_deleted in [false, true] {
                let n = recs
                    .values()
                    .filter(|r| r.kind == kind && within(tree, r.org_unit().unwrap(), org))
                    .filter(|r| include_deleted || !r.is_deleted())
                    .count();
                let b = Behind::All {
                    kind,
                    include_deleted,
                };
                assert_eq!(behind(tree, recs, org, &b).len(), n, "{what}: all {kind:?}");
            }
        }
    }
    assert!(year_figures(tree, agg, "nope", 2020).is_none());
}

proptest! {
    /// Year figures, the annual report and the drill-down predicate agree
    /// with a recount from the records, live, after a reload of the
    /// persisted aggregates, and after a unit is re-parented.
    #[test]
    fn year_figures_match_a_naive_recount(
        ops in prop::collection::vec((0..KINDS.len(), spec()), 1..64),
        bounds in prop::collection::vec(
            (prop::option::of(held_on()), prop::option::of(held_on())),
            3,
        ),
    ) {
        let ranges: Vec<_> = bounds
            .into_iter()
            .map(|(f, t)| match (f, t) {
                (Some(f), Some(t)) if f > t => (Some(t), Some(f)),
                other => other,
            })
            .collect();
        let store = Store::run(&ops);
        check_all(&tree(false), &store.recs, &store.agg, &ranges, UNITS, "live");
        // After the re-parenting only the subtrees of `s2` and `t3` changed:
        // drill-downs are checked there (the cost is in hashing records).
        check_all(&tree(true), &store.recs, &store.agg, &ranges, &["s2", "t3"], "moved");
        // Aggregates rebuilt from what a store persisted, and a follower's
        // replaced entry by entry, answer the same.
        for org in UNITS {
            prop_assert_eq!(
                totals(&tree(false), &store.follower, org, None, None),
                totals(&tree(false), &store.agg, org, None, None),
                "follower: totals of {}", org
            );
        }
        prop_assert_eq!(store.follower.checksum_all(), store.agg.checksum_all());
        let reloaded = store.reloaded();
        let tree = tree(false);
        for org in UNITS {
            for &year in YEARS {
                prop_assert_eq!(
                    year_figures(&tree, &reloaded, org, year),
                    year_figures(&tree, &store.agg, org, year),
                    "reloaded: figures of {} {}", org, year
                );
                prop_assert_eq!(
                    year_figures(&tree, &store.follower, org, year),
                    year_figures(&tree, &store.agg, org, year),
                    "follower: figures of {} {}", org, year
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Examples
// ---------------------------------------------------------------------------

fn lecture(unit: usize, day: &str, attendees: i64, topics: Topics) -> Spec {
    Spec {
        unit,
        held_on: Date::parse(day).unwrap(),
        attendees,
        topics,
        status: 0,
        level: 0,
        year: 2020,
        deleted: None,
        conflicts: 0,
    }
}

/// A lecture with duplicated topics counts once under each; one without
/// topics (absent, cleared or empty) counts under `None`; a deleted one,
/// nowhere; a moved one, under its new unit only.
#[test]
fn topics_count_each_lecture_once_per_distinct_topic() {
    let c11 = 4;
    let v31 = 7;
    let store = Store::run(&[
        (
            0,
            lecture(c11, "2020-03-31", 10, Topics::List(vec![0, 0, 1])),
        ),
        (1, lecture(c11, "2020-04-01", 20, Topics::List(vec![0]))),
        (2, lecture(c11, "2020-12-31", 30, Topics::List(vec![]))),
        (3, lecture(c11, "2020-05-05", 40, Topics::Cleared)),
        (4, lecture(c11, "2021-01-01", 50, Topics::Absent)),
        (5, lecture(c11, "2020-06-06", 60, Topics::List(vec![2]))),
        (
            5,
            Spec {
                deleted: Some(true),
                ..lecture(c11, "2020-06-06", 60, Topics::List(vec![2]))
            },
        ),
        (1, lecture(v31, "2020-04-01", 20, Topics::List(vec![0, 3]))),
    ]);
    let tree = tree(false);
    let f = year_figures(&tree, &store.agg, "d", 2020).unwrap();
    let topic = |t: Option<&str>, lectures, attendees| TopicFigure {
        topic: t.map(str::to_string),
        lectures,
        attendees,
    };
    assert_eq!(
        f.topics,
        [
            topic(None, 2, 70),
            topic(Some("民法典"), 2, 30),
            topic(Some("safety"), 1, 20),
            topic(Some("宪法"), 1, 10),
        ]
    );
    assert_eq!(f.totals.lectures.count, 4);
    assert_eq!(f.months[2].lectures, 1);
    assert_eq!(f.months[3].lectures, 1);
    let c11_row = f.grassroots.iter().find(|u| u.org.code == "c11").unwrap();
    assert_eq!(
        (c11_row.lectures, c11_row.lectures_by_quarter),
        (3, [1, 1, 0, 1])
    );
    let v31_row = f.grassroots.iter().find(|u| u.org.code == "v31").unwrap();
    assert_eq!(
        (v31_row.lectures, v31_row.lectures_by_quarter),
        (1, [0, 1, 0, 0])
    );
    assert_eq!(
        v31_row
            .path
            .iter()
            .map(|o| o.code.as_str())
            .collect::<Vec<_>>(),
        ["d", "t3"]
    );
    assert_eq!(f, naive_year(&tree, &store.recs, "d", 2020));
    check_behind_year(&tree, &store.recs, &f, true);
    check_report(&f);
}
