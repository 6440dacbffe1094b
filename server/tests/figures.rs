//! Coordinators' figures end to end: seeded random workloads pushed by field
//! devices and a coordinator through the real router (creates, edits of
//! every counted field, moves between units, deletes and restores,
//! concurrent edits that conflict, resolutions, duplicates, and a village
//! re-parented to another street), after which every figure the server
//! gives (`/v1/totals`, `/v1/figures`, `/v1/reports/annual`, `/v1/records`,
//! `/v1/exports/…`) is compared with a recount from the records themselves
//! as the admin pulls them. Then the same after a restart, scope checks for
//! coordinators of one street, and the error answers of bad parameters.
//! Also: exports and drill-downs larger than one page, the upgrade of a
//! store written before topics were counted, and well-formed download
//! names for any org code.

#[allow(dead_code)]
mod support;

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{Method, StatusCode};
use pufa_core::date::Date;
use pufa_core::report::{AnnualReport, MonthFigure, TopicFigure, UnitFigure, YearFigures};
use pufa_core::wire::{
    ChildTotals, CornerTotals, LectureTotals, OrgRef, SiteTotals, TotalsResponse,
    UnderstanderTotals, UnitType,
};
use pufa_server::config::Clock as _;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};
use support::{assert_error, assert_error_field, Dev, Resp, Server};

// ---------------------------------------------------------------------------
// The org tree, as the test knows it
// ---------------------------------------------------------------------------

/// `(code, name, type, parent)`. Names carry a comma and a quote so that
/// the CSV exports must quote them.
const UNITS: &[(&str, &str, &str, Option<&str>)] = &[
    ("d", "迎泽区", "district", None),
    ("s1", "柳巷街道", "street", Some("d")),
    ("s2", "庙前街道", "street", Some("d")),
    ("t3", "郝庄镇", "town", Some("d")),
    ("c11", "柳巷第01社区", "community", Some("s1")),
    ("c12", "柳巷第02社区, \"东\"", "community", Some("s1")),
    ("v21", "松庄村", "village", Some("s2")),
    ("v22", "双塔村", "village", Some("s2")),
    ("v31", "郝庄村", "village", Some("t3")),
];

fn tree_json() -> Value {
    UNITS
        .iter()
        .map(|(code, name, ty, parent)| {
            json!({"code": code, "name": name, "type": ty, "parent": parent})
        })
        .collect()
}

#[derive(Clone, Debug)]
struct Unit {
    name: String,
    unit_type: UnitType,
    parent: Option<String>,
}

/// The tree as `GET /v1/org-units` gives it to the admin.
#[derive(Clone, Debug, Default)]
struct Tree(BTreeMap<String, Unit>);

impl Tree {
    fn from_api(v: &Value) -> Tree {
        Tree(
            v.as_array()
                .expect("org units")
                .iter()
                .map(|u| {
                    (
                        u["code"].as_str().unwrap().to_string(),
                        Unit {
                            name: u["name"].as_str().unwrap().to_string(),
                            unit_type: serde_json::from_value(u["type"].clone()).unwrap(),
                            parent: u["parent"].as_str().map(str::to_string),
                        },
                    )
                })
                .collect(),
        )
    }

    fn codes(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    fn within(&self, code: &str, root: &str) -> bool {
        let mut cur = Some(code);
        while let Some(c) = cur {
            if c == root {
                return true;
            }
            cur = self.0.get(c).and_then(|u| u.parent.as_deref());
        }
        false
    }

    /// Root first, ending with `code`.
    fn chain(&self, code: &str) -> Vec<String> {
        let mut out = vec![code.to_string()];
        while let Some(p) = self.0[out.last().unwrap()].parent.clone() {
            out.push(p);
        }
        out.reverse();
        out
    }

    fn children(&self, code: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, u)| u.parent.as_deref() == Some(code))
            .map(|(c, _)| c.clone())
            .collect()
    }

    /// `root` and everything below it, depth first, children by code.
    fn subtree(&self, root: &str) -> Vec<String> {
        let mut out = vec![root.to_string()];
        for c in self.children(root) {
            out.extend(self.subtree(&c));
        }
        out
    }

    fn grassroots(&self, code: &str) -> bool {
        self.0[code].unit_type.is_grassroots()
    }

    fn org_ref(&self, code: &str) -> OrgRef {
        OrgRef {
            code: code.to_string(),
            name: self.0[code].name.clone(),
        }
    }

    fn depth(&self) -> usize {
        self.0
            .keys()
            .map(|c| self.chain(c).len())
            .max()
            .unwrap_or(0)
    }
}

// ---------------------------------------------------------------------------
// Records, as the admin pulls them, and figures recounted from them
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Rec {
    id: String,
    kind: String,
    deleted: bool,
    seq: u64,
    conflicts: u64,
    fields: Map<String, Value>,
    /// A library corner's audit entries, oldest first (others: none).
    history: Vec<Value>,
}

/// Records are equal as pulled: a history is fetched for recounts only.
impl PartialEq for Rec {
    fn eq(&self, o: &Rec) -> bool {
        (
            &self.id,
            &self.kind,
            self.deleted,
            self.seq,
            self.conflicts,
            &self.fields,
        ) == (&o.id, &o.kind, o.deleted, o.seq, o.conflicts, &o.fields)
    }
}

impl Rec {
    fn from_view(v: &Value) -> Rec {
        Rec {
            id: v["id"].as_str().expect("id").to_string(),
            kind: v["kind"].as_str().expect("kind").to_string(),
            deleted: v["deleted"].as_bool().expect("deleted"),
            seq: v["seq"].as_u64().expect("seq"),
            conflicts: v["conflicts"].as_u64().expect("conflicts"),
            fields: v["fields"].as_object().expect("fields").clone(),
            history: Vec::new(),
        }
    }

    fn unit(&self) -> &str {
        self.s("org_unit").expect("org_unit")
    }

    fn s(&self, f: &str) -> Option<&str> {
        self.fields.get(f).and_then(Value::as_str)
    }

    fn n(&self, f: &str) -> Option<u64> {
        self.fields.get(f).and_then(Value::as_u64)
    }

    /// `(held_on, attendees, distinct topics)` of a live lecture, topics
    /// folded by the vocabulary (反诈 is 反电信网络诈骗).
    fn lecture(&self) -> Option<(&str, u64, BTreeSet<&str>)> {
        if self.kind != "lecture" || self.deleted {
            return None;
        }
        let topics = match self.fields.get("topics") {
            Some(Value::Array(list)) => list
                .iter()
                .map(|t| pufa_core::topics::fold(t.as_str().unwrap()))
                .collect(),
            _ => BTreeSet::new(),
        };
        Some((self.s("held_on")?, self.n("attendees")?, topics))
    }

    fn active_corner(&self) -> bool {
        self.kind == "library_corner" && !self.deleted && self.s("status") == Some("active")
    }

    /// `(year, level)` of a live awarded site.
    fn award(&self) -> Option<(i32, &str)> {
        (self.kind == "demo_site" && !self.deleted && self.s("status") == Some("awarded"))
            .then(|| (self.n("year").unwrap() as i32, self.s("level").unwrap()))
    }

    /// `(appointed_on, serving)` of a live legal understander.
    fn understander(&self) -> Option<(&str, bool)> {
        (self.kind == "legal_understander" && !self.deleted).then(|| {
            (
                self.s("appointed_on").unwrap(),
                self.s("status") == Some("serving"),
            )
        })
    }
}

type Recs = BTreeMap<String, Rec>;

fn year_of(day: &str) -> i32 {
    day[..4].parse().unwrap()
}

fn month_of(day: &str) -> u32 {
    day[5..7].parse().unwrap()
}

fn in_range(day: &str, from: Option<&str>, to: Option<&str>) -> bool {
    // `YYYY-MM-DD` strings order as the days they name.
    from.is_none_or(|f| day >= f) && to.is_none_or(|t| day <= t)
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

fn coverage(covered: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        (covered as f64 / total as f64 * 10_000.0).round() / 10_000.0
    }
}

type Figs = (
    LectureTotals,
    CornerTotals,
    SiteTotals,
    UnderstanderTotals,
    u64,
);

fn naive_figs(tree: &Tree, recs: &Recs, root: &str, from: Option<&str>, to: Option<&str>) -> Figs {
    let mut lectures = LectureTotals::default();
    let mut corners = CornerTotals::default();
    let mut sites = SiteTotals::default();
    let mut understanders = UnderstanderTotals::default();
    let mut conflicts = 0;
    let (mut lecture_units, mut corner_units) = (BTreeSet::new(), BTreeSet::new());
    let mut understander_units = BTreeSet::new();
    let years = from.map_or(i32::MIN, year_of)..=to.map_or(i32::MAX, year_of);
    for r in recs.values().filter(|r| tree.within(r.unit(), root)) {
        if let Some((day, serving)) = r.understander() {
            if in_range(day, from, to) {
                understanders.appointed += 1;
            }
            if serving && in_range(day, None, to) {
                understanders.serving += 1;
                if tree.grassroots(r.unit()) {
                    understander_units.insert(r.unit());
                }
            }
        }
        conflicts += r.conflicts;
        if let Some((day, attendees, _)) = r.lecture() {
            if in_range(day, from, to) {
                lectures.count += 1;
                lectures.attendees += attendees;
                if tree.grassroots(r.unit()) {
                    lecture_units.insert(r.unit());
                }
            }
        }
        if r.active_corner() {
            corners.active += 1;
            if tree.grassroots(r.unit()) {
                corner_units.insert(r.unit());
            }
        }
        if let Some((year, level)) = r.award() {
            if years.contains(&year) {
                add_site(&mut sites, level);
            }
        }
    }
    lectures.units_covered = lecture_units.len() as u64;
    corners.units_covered = corner_units.len() as u64;
    corners.units_total = tree
        .subtree(root)
        .iter()
        .filter(|u| tree.grassroots(u))
        .count() as u64;
    corners.coverage = coverage(corners.units_covered, corners.units_total);
    understanders.units_covered = understander_units.len() as u64;
    understanders.units_total = corners.units_total;
    understanders.coverage = coverage(understanders.units_covered, understanders.units_total);
    (lectures, corners, sites, understanders, conflicts)
}

fn naive_totals(
    tree: &Tree,
    recs: &Recs,
    org: &str,
    from: Option<&str>,
    to: Option<&str>,
) -> TotalsResponse {
    let (lectures, library_corners, demo_sites, legal_understanders, conflicts_open) =
        naive_figs(tree, recs, org, from, to);
    let children = tree
        .children(org)
        .iter()
        .map(|c| {
            let (lectures, library_corners, demo_sites, legal_understanders, conflicts_open) =
                naive_figs(tree, recs, c, from, to);
            ChildTotals {
                org: tree.org_ref(c),
                lectures,
                library_corners,
                demo_sites,
                legal_understanders,
                conflicts_open,
            }
        })
        .collect();
    TotalsResponse {
        org: tree.org_ref(org),
        from: from.map(str::to_string),
        to: to.map(str::to_string),
        lectures,
        library_corners,
        demo_sites,
        legal_understanders,
        conflicts_open,
        children,
    }
}

/// The last millisecond of 31 December of `year` in Asia/Shanghai (UTC+8
/// all year), the tests' server zone.
fn year_end_ms(year: i32) -> u64 {
    let next = Date::from_ymd(year + 1, 1, 1).unwrap();
    (i64::from(next.0) * 86_400_000 - 8 * 3_600_000 - 1) as u64
}

/// `field`'s value in `history` at `end`: the latest change (by HLC ms,
/// then position) at or before `end`, or as first written when nothing is
/// that early.
fn value_at(history: &[Value], field: &str, end: u64) -> Value {
    let set_in = |e: &Value| {
        e["changes"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|c| c["field"] == field)
            .map(|c| c["to"].clone())
    };
    let early: Vec<(usize, &Value)> = history
        .iter()
        .enumerate()
        .filter(|(_, e)| e["hlc"]["ms"].as_u64().unwrap() <= end)
        .collect();
    if early.is_empty() {
        return history.first().and_then(set_in).unwrap_or(Value::Null);
    }
    early
        .into_iter()
        .filter_map(|(i, e)| set_in(e).map(|v| ((e["hlc"]["ms"].as_u64().unwrap(), i), v)))
        .max_by_key(|(k, _)| *k)
        .map_or(Value::Null, |(_, v)| v)
}

/// `recs` with each library corner as it stood at the end of `year`, from
/// its history: live and `active` iff it counts then.
fn corners_at_year_end(recs: &Recs, year: i32) -> Recs {
    let end = year_end_ms(year);
    let mut out = recs.clone();
    for r in out.values_mut().filter(|r| r.kind == "library_corner") {
        let h = &r.history;
        let known = h.iter().any(|e| e["hlc"]["ms"].as_u64().unwrap() <= end);
        let opened = match value_at(h, "opened_on", end) {
            Value::String(d) => d.as_str() <= format!("{year}-12-31").as_str(),
            _ => known,
        };
        let active = !h.is_empty()
            && value_at(h, "_deleted", end) != json!(true)
            && value_at(h, "status", end) == json!("active")
            && opened;
        r.deleted = false;
        r.fields.insert(
            "status".into(),
            json!(if active { "active" } else { "not_then" }),
        );
    }
    out
}

/// A year's figures, library corners counted as of its end.
fn naive_year(tree: &Tree, recs: &Recs, org: &str, year: i32) -> YearFigures {
    let recs = &corners_at_year_end(recs, year);
    let (from, to) = (format!("{year}-01-01"), format!("{year}-12-31"));
    let mut months: Vec<MonthFigure> = (1..=12)
        .map(|month| MonthFigure {
            month,
            lectures: 0,
            attendees: 0,
        })
        .collect();
    let mut by_topic: BTreeMap<Option<String>, (u64, u64)> = BTreeMap::new();
    for r in recs.values().filter(|r| tree.within(r.unit(), org)) {
        let Some((day, attendees, topics)) = r.lecture() else {
            continue;
        };
        if year_of(day) != year {
            continue;
        }
        let m = &mut months[month_of(day) as usize - 1];
        m.lectures += 1;
        m.attendees += attendees;
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
    let grassroots = tree
        .subtree(org)
        .into_iter()
        .filter(|u| tree.grassroots(u))
        .map(|u| {
            let chain = tree.chain(&u);
            let mut row = UnitFigure {
                org: tree.org_ref(&u),
                unit_type: tree.0[&u].unit_type,
                path: chain[..chain.len() - 1]
                    .iter()
                    .map(|c| tree.org_ref(c))
                    .collect(),
                lectures: 0,
                attendees: 0,
                lectures_by_quarter: [0; 4],
                corners_active: 0,
                demo_sites: SiteTotals::default(),
                conflicts_open: 0,
                understanders_appointed: 0,
                understanders_serving: 0,
            };
            for r in recs.values().filter(|r| r.unit() == u) {
                row.conflicts_open += r.conflicts;
                if let Some((day, attendees, _)) = r.lecture() {
                    if year_of(day) == year {
                        row.lectures += 1;
                        row.attendees += attendees;
                        row.lectures_by_quarter[(month_of(day) as usize - 1) / 3] += 1;
                    }
                }
                if r.active_corner() {
                    row.corners_active += 1;
                }
                if let Some((y, level)) = r.award() {
                    if y == year {
                        add_site(&mut row.demo_sites, level);
                    }
                }
                if let Some((day, serving)) = r.understander() {
                    row.understanders_appointed += u64::from(year_of(day) == year);
                    row.understanders_serving += u64::from(serving && day <= to.as_str());
                }
            }
            row
        })
        .collect();
    // Every year with a lecture, an awarded site or an appointment in the
    // subtree.
    let years: BTreeSet<i32> = recs
        .values()
        .filter(|r| tree.within(r.unit(), org))
        .flat_map(|r| {
            let lecture = r.lecture().map(|(day, _, _)| year_of(day));
            let appointed = r.understander().map(|(day, _)| year_of(day));
            lecture
                .into_iter()
                .chain(r.award().map(|(y, _)| y))
                .chain(appointed)
        })
        .collect();
    YearFigures {
        year,
        org_type: tree.0[org].unit_type,
        totals: naive_totals(tree, recs, org, Some(&from), Some(&to)),
        months,
        topics,
        grassroots,
        years: years.into_iter().collect(),
    }
}

/// What `/v1/records` should list: a figure's query string and the ids.
fn naive_records<'a>(
    tree: &Tree,
    recs: &'a Recs,
    org: &str,
    keep: impl Fn(&Rec) -> bool,
) -> BTreeSet<&'a str> {
    recs.values()
        .filter(|r| tree.within(r.unit(), org) && keep(r))
        .map(|r| r.id.as_str())
        .collect()
}

fn ids(set: BTreeSet<&str>) -> BTreeSet<String> {
    set.into_iter().map(str::to_string).collect()
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `?a=b&c=d` from pairs, leaving out `None` values.
fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", enc(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

async fn get_ok<T: serde::de::DeserializeOwned>(s: &Server, path: &str, dev: &Dev) -> T {
    let v = s.get(path, dev).await.expect(200);
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{path}: {e}: {v}"))
}

/// Every id `/v1/records` lists for `q`, paging through `next` with `limit`.
async fn list_records(s: &Server, dev: &Dev, q: &str, limit: usize) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut after: Option<String> = None;
    for _ in 0..10_000 {
        let mut path = format!("/v1/records?{q}&limit={limit}");
        if let Some(a) = &after {
            path += &format!("&after={a}");
        }
        let page = s.get(&path, dev).await.expect(200);
        let records = page["records"].as_array().expect("records");
        assert!(records.len() <= limit, "{path}: more than limit");
        for r in records {
            let id = r["id"].as_str().unwrap().to_string();
            // Each page has the pull shape.
            for key in ["kind", "seq", "deleted", "fields", "hlc", "conflicts"] {
                assert!(r.get(key).is_some(), "{path}: no {key} in {r}");
            }
            assert!(out.insert(id.clone()), "{path}: {id} listed twice");
        }
        match page["next"].as_str() {
            None => {
                assert!(page["next"].is_null(), "{path}: next {}", page["next"]);
                return out;
            }
            Some(n) => after = Some(n.to_string()),
        }
    }
    panic!("{q}: paging never ended");
}

/// A CSV export: status 200, a BOM, a header row and the data rows.
async fn csv(s: &Server, dev: &Dev, path: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let r = s.get(path, dev).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert!(r.body.starts_with("\u{feff}".as_bytes()), "{path}: no BOM");
    assert_eq!(
        r.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"text/csv; charset=utf-8"[..]),
        "{path}"
    );
    let mut reader = csv::ReaderBuilder::new().from_reader(&r.body[3..]);
    let headers: Vec<String> = reader
        .headers()
        .expect("csv header")
        .iter()
        .map(str::to_string)
        .collect();
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|row| row.expect("csv row").iter().map(str::to_string).collect())
        .collect();
    for row in &rows {
        assert_eq!(row.len(), headers.len(), "{path}: ragged row {row:?}");
    }
    (headers, rows)
}

// ---------------------------------------------------------------------------
// The workload
// ---------------------------------------------------------------------------

const KINDS: &[&str] = &[
    "lecture",
    "library_corner",
    "demo_site",
    "legal_understander",
];
/// Synonyms among them count as one topic in figures (反诈 and
/// 反电信网络诈骗; 民法典 and 《民法典》).
const TOPICS: &[&str] = &[
    "民法典",
    "宪法",
    "反电信网络诈骗",
    "未成年人保护",
    "Safety, \"first\"",
    "反诈",
    "《民法典》",
];
const TITLES: &[&str] = &["民法典进社区", "宪法宣传周, 第二讲", "说\"法\"\n进万家"];
const EDGE_DAYS: &[&str] = &[
    "2019-01-01",
    "2019-03-31",
    "2019-04-01",
    "2019-12-31",
    "2020-01-01",
    "2020-02-29",
    "2020-03-31",
    "2020-07-01",
    "2020-12-31",
    "2021-01-01",
    "2021-06-30",
];
const CORNER_STATUSES: &[&str] = &["active", "inactive", "closed"];
const SITE_LEVELS: &[&str] = &["national", "provincial", "municipal", "district"];
const SITE_STATUSES: &[&str] = &["candidate", "awarded", "revoked"];
const UNDERSTANDER_STATUSES: &[&str] = &["serving", "resigned"];
const PHONES: &[&str] = &["0351-4041234", "+86 139 0351 0000", "13903510001"];
const STEPS: usize = 150;

struct Device {
    dev: Dev,
    scope: String,
    /// Its clock's error against the server's, in ms (well inside the
    /// 300 s skew: nothing is re-stamped).
    offset: i64,
    hlc: (u64, u32),
    replica: BTreeMap<String, Rec>,
    since: u64,
}

impl Device {
    fn tick(&mut self, now: u64) -> Value {
        let wall = (now as i64 + self.offset) as u64;
        self.hlc = if wall > self.hlc.0 {
            (wall, 0)
        } else {
            (self.hlc.0, self.hlc.1 + 1)
        };
        json!({"ms": self.hlc.0, "c": self.hlc.1, "node": self.dev.id})
    }
}

#[derive(Debug, Default)]
struct Stats {
    applied: u64,
    out_of_scope: u64,
    duplicates: u64,
    conflicts: u64,
    deletes: u64,
    restores: u64,
    moves: u64,
    resolutions: u64,
}

struct World {
    rng: ChaCha8Rng,
    tree: Tree,
    devs: Vec<Device>,
    last: Option<(usize, Value, Value)>,
    stats: Stats,
}

fn uuid(rng: &mut ChaCha8Rng) -> String {
    uuid::Builder::from_random_bytes(rng.gen())
        .into_uuid()
        .to_string()
}

fn day(rng: &mut ChaCha8Rng) -> String {
    if rng.gen_bool(0.3) {
        EDGE_DAYS.choose(rng).unwrap().to_string()
    } else {
        // 2019-01-01 ..= 2021-06-30 (the server allows its date + 366 days).
        Date::parse("2019-01-01")
            .unwrap()
            .add_days(rng.gen_range(0..912))
            .to_string()
    }
}

fn topics(rng: &mut ChaCha8Rng) -> Value {
    let n = rng.gen_range(0..5);
    // Picks may repeat: a duplicated topic counts once.
    (0..n).map(|_| json!(TOPICS.choose(rng).unwrap())).collect()
}

fn site_year(rng: &mut ChaCha8Rng) -> i64 {
    if rng.gen_bool(0.1) {
        *[2018, 2022].choose(rng).unwrap()
    } else {
        rng.gen_range(2019..=2021)
    }
}

impl World {
    async fn new(s: &Server, seed: u64) -> World {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut devs = Vec::new();
        for (role, scope) in [
            ("field", "s1"),
            ("field", "s2"),
            ("field", "v31"),
            ("coordinator", "d"),
        ] {
            devs.push(Device {
                dev: s.issue(role, scope).await,
                scope: scope.to_string(),
                offset: rng.gen_range(-120_000..120_000),
                hlc: (0, 0),
                replica: BTreeMap::new(),
                since: 0,
            });
        }
        let tree = Tree::from_api(&s.get("/v1/org-units", &s.admin).await.expect(200));
        World {
            rng,
            tree,
            devs,
            last: None,
            stats: Stats::default(),
        }
    }

    fn units_of(&self, i: usize) -> Vec<String> {
        self.tree.subtree(&self.devs[i].scope)
    }

    async fn sync(&mut self, s: &Server, i: usize) {
        let d = &mut self.devs[i];
        let (entries, next) = s.pull_all(&d.dev, d.since).await;
        for e in entries {
            let id = e["id"].as_str().unwrap().to_string();
            if e.get("in_scope") == Some(&json!(false)) {
                d.replica.remove(&id);
            } else {
                d.replica.insert(id, Rec::from_view(&e));
            }
        }
        d.since = next;
    }

    fn create(&mut self, s: &Server, i: usize) -> Value {
        let units = self.units_of(i);
        let rng = &mut self.rng;
        let unit = units.choose(rng).unwrap().clone();
        let kind = *KINDS.choose(rng).unwrap();
        let set = match kind {
            "lecture" => {
                let mut set = json!({
                    "org_unit": unit,
                    "held_on": day(rng),
                    "title": TITLES.choose(rng).unwrap(),
                    "attendees": rng.gen_range(0..300),
                });
                if rng.gen_bool(0.7) {
                    set["topics"] = topics(rng);
                }
                set
            }
            "library_corner" => json!({
                "org_unit": unit,
                "name": "法治图书角",
                "status": CORNER_STATUSES.choose(rng).unwrap(),
            }),
            "legal_understander" => {
                let mut set = json!({
                    "org_unit": unit,
                    "name": "王丽, \"小王\"",
                    "appointed_on": day(rng),
                    "status": UNDERSTANDER_STATUSES.choose(rng).unwrap(),
                });
                if rng.gen_bool(0.6) {
                    set["phone"] = json!(PHONES.choose(rng).unwrap());
                }
                if rng.gen_bool(0.5) {
                    set["training_hours"] = json!(rng.gen_range(0..=1000));
                }
                set
            }
            _ => json!({
                "org_unit": unit,
                "level": SITE_LEVELS.choose(rng).unwrap(),
                "status": SITE_STATUSES.choose(rng).unwrap(),
                "year": site_year(rng),
            }),
        };
        let (id, record) = (uuid(rng), uuid(rng));
        let hlc = self.devs[i].tick(s.clock.now_ms());
        json!({"id": id, "record_id": record, "kind": kind, "base_seq": 0, "hlc": hlc, "set": set})
    }

    /// An edit of a record in device `i`'s replica, on its replica's seq.
    fn edit(&mut self, s: &Server, i: usize, r: &Rec) -> Value {
        let units = self.units_of(i);
        let rng = &mut self.rng;
        let mut set = Map::new();
        let mut delete = None;
        while set.is_empty() && delete.is_none() {
            if rng.gen_bool(0.25) {
                set.insert("org_unit".into(), json!(units.choose(rng).unwrap()));
            }
            if rng.gen_bool(if r.deleted { 0.4 } else { 0.12 }) {
                delete = Some(!r.deleted);
            }
            match r.kind.as_str() {
                "lecture" => {
                    if rng.gen_bool(0.3) {
                        set.insert("held_on".into(), json!(day(rng)));
                    }
                    if rng.gen_bool(0.3) {
                        set.insert("attendees".into(), json!(rng.gen_range(0..300)));
                    }
                    if rng.gen_bool(0.3) {
                        let t = if rng.gen_bool(0.2) {
                            Value::Null
                        } else {
                            topics(rng)
                        };
                        set.insert("topics".into(), t);
                    }
                    if rng.gen_bool(0.1) {
                        set.insert("title".into(), json!(TITLES.choose(rng).unwrap()));
                    }
                }
                "library_corner" => {
                    if rng.gen_bool(0.5) {
                        set.insert("status".into(), json!(CORNER_STATUSES.choose(rng).unwrap()));
                    }
                    if rng.gen_bool(0.1) {
                        set.insert("books".into(), json!(rng.gen_range(0..5000)));
                    }
                }
                "legal_understander" => {
                    if rng.gen_bool(0.4) {
                        let status = UNDERSTANDER_STATUSES.choose(rng).unwrap();
                        set.insert("status".into(), json!(status));
                    }
                    if rng.gen_bool(0.3) {
                        set.insert("appointed_on".into(), json!(day(rng)));
                    }
                    if rng.gen_bool(0.2) {
                        let phone = if rng.gen_bool(0.3) {
                            Value::Null
                        } else {
                            json!(PHONES.choose(rng).unwrap())
                        };
                        set.insert("phone".into(), phone);
                    }
                }
                _ => {
                    if rng.gen_bool(0.4) {
                        set.insert("status".into(), json!(SITE_STATUSES.choose(rng).unwrap()));
                    }
                    if rng.gen_bool(0.3) {
                        set.insert("level".into(), json!(SITE_LEVELS.choose(rng).unwrap()));
                    }
                    if rng.gen_bool(0.3) {
                        set.insert("year".into(), json!(site_year(rng)));
                    }
                }
            }
        }
        let id = uuid(rng);
        let hlc = self.devs[i].tick(s.clock.now_ms());
        let mut m = json!({
            "id": id, "record_id": r.id, "kind": r.kind, "base_seq": r.seq, "hlc": hlc, "set": set,
        });
        if let Some(d) = delete {
            m["delete"] = json!(d);
        }
        m
    }

    async fn push(&mut self, s: &Server, i: usize, mutations: Vec<Value>) {
        let dev = self.devs[i].dev.clone();
        let resp = s.push(&dev, &mutations).await;
        self.note(i, mutations, resp);
    }

    /// Checks and counts the results of a push.
    fn note(&mut self, i: usize, mutations: Vec<Value>, resp: Value) {
        for (m, r) in mutations.iter().zip(resp["results"].as_array().unwrap()) {
            assert_eq!(r["restamped"], json!(false), "{r}");
            match r["status"].as_str() {
                Some("applied") => {
                    self.stats.applied += 1;
                    self.stats.conflicts += r["conflicts"].as_array().unwrap().len() as u64;
                    match m.get("delete").and_then(Value::as_bool) {
                        Some(true) => self.stats.deletes += 1,
                        Some(false) => self.stats.restores += 1,
                        None => {}
                    }
                    if m["set"].get("org_unit").is_some() && m["base_seq"] != json!(0) {
                        self.stats.moves += 1;
                    }
                }
                // The record left the device's scope (moved by another
                // device, or its unit re-parented) before it synced.
                Some("rejected") if r["error"]["code"] == "out_of_scope" => {
                    self.stats.out_of_scope += 1;
                }
                _ => panic!("unexpected result {r} for {m}"),
            }
        }
        self.last = Some((i, Value::Array(mutations), resp));
    }

    async fn step(&mut self, s: &Server) {
        let i = self.rng.gen_range(0..self.devs.len());
        match self.rng.gen_range(0..100) {
            0..=17 => self.sync(s, i).await,
            18..=42 => {
                let n = self.rng.gen_range(1..=3);
                let mut batch: Vec<Value> = (0..n).map(|_| self.create(s, i)).collect();
                if self.rng.gen_bool(0.3) {
                    // The device edits a record it has just made, before
                    // it was ever pushed: two writes of one record in one
                    // batch.
                    let m = &batch[0];
                    let r = Rec {
                        id: m["record_id"].as_str().unwrap().to_string(),
                        kind: m["kind"].as_str().unwrap().to_string(),
                        deleted: false,
                        seq: 0,
                        conflicts: 0,
                        fields: m["set"].as_object().unwrap().clone(),
                        history: Vec::new(),
                    };
                    let edit = self.edit(s, i, &r);
                    batch.push(edit);
                }
                self.push(s, i, batch).await;
            }
            43..=82 => {
                let ids: Vec<String> = self.devs[i].replica.keys().cloned().collect();
                let n = self.rng.gen_range(1..=3).min(ids.len());
                let picked: Vec<Rec> = ids
                    .choose_multiple(&mut self.rng, n)
                    .map(|id| self.devs[i].replica[id].clone())
                    .collect();
                let batch: Vec<Value> = picked.iter().map(|r| self.edit(s, i, r)).collect();
                if !batch.is_empty() {
                    self.push(s, i, batch).await;
                }
            }
            83..=90 => self.concurrent(s, i).await,
            91..=96 => self.resolve(s).await,
            _ => {
                // A retry of the last push: every result repeats.
                if let Some((j, Value::Array(batch), first)) = self.last.clone() {
                    let again = s.push(&self.devs[j].dev, &batch).await;
                    for (a, b) in again["results"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .zip(first["results"].as_array().unwrap())
                    {
                        if b["status"] == "applied" {
                            assert_eq!(a["status"], "duplicate", "{a}");
                            assert_eq!((&a["seq"], &a["conflicts"]), (&b["seq"], &b["conflicts"]));
                            self.stats.duplicates += 1;
                        }
                    }
                }
            }
        }
        let dt = self.rng.gen_range(0..3_000);
        s.clock.advance(dt);
    }

    /// Device `i` and up to two other devices that can see the same record
    /// all edit it on the same base, neither having seen the others' edits,
    /// and push at the same time (the server may apply the later pushes in
    /// one group write).
    async fn concurrent(&mut self, s: &Server, i: usize) {
        let Some(r) = self.devs[i]
            .replica
            .values()
            .collect::<Vec<_>>()
            .choose(&mut self.rng)
            .map(|r| (*r).clone())
        else {
            return;
        };
        let others: Vec<usize> = (0..self.devs.len())
            .filter(|&j| j != i && self.tree.within(r.unit(), &self.devs[j].scope))
            .collect();
        let n = self.rng.gen_range(1..=2).min(others.len());
        let mut who = vec![i];
        who.extend(others.choose_multiple(&mut self.rng, n));
        let edits: Vec<Value> = who.iter().map(|&j| self.edit(s, j, &r)).collect();
        let devs: Vec<Dev> = who.iter().map(|&j| self.devs[j].dev.clone()).collect();
        let one = |k: usize| s.push(&devs[k], std::slice::from_ref(&edits[k]));
        let resps = match who.len() {
            1 => vec![one(0).await],
            2 => {
                let (a, b) = tokio::join!(one(0), one(1));
                vec![a, b]
            }
            _ => {
                let (a, b, c) = tokio::join!(one(0), one(1), one(2));
                vec![a, b, c]
            }
        };
        for ((j, m), resp) in who.into_iter().zip(edits).zip(resps) {
            self.note(j, vec![m], resp);
        }
    }

    /// The district coordinator settles one open conflict, for the winner
    /// or the loser.
    async fn resolve(&mut self, s: &Server) {
        let co = self.devs[3].dev.clone();
        let list = s.get("/v1/conflicts", &co).await.expect(200);
        let Some(c) = list.as_array().unwrap().choose(&mut self.rng).cloned() else {
            return;
        };
        let value = if self.rng.gen_bool(0.5) {
            c["winner"].clone()
        } else {
            c["loser"].clone()
        };
        let path = format!("/v1/conflicts/{}/resolve", c["id"].as_str().unwrap());
        let r = s
            .json(Method::POST, &path, &co, &json!({"value": value}))
            .await;
        r.expect(200);
        self.stats.resolutions += 1;
    }

    /// Village `v22` moves from street `s2` to street `s1`.
    async fn reparent(&mut self, s: &Server) {
        s.import(&json!([{"code": "v22", "name": "双塔村", "type": "village", "parent": "s1"}]))
            .await;
        self.tree = Tree::from_api(&s.get("/v1/org-units", &s.admin).await.expect(200));
        assert!(self.tree.within("v22", "s1") && !self.tree.within("v22", "s2"));
    }
}

/// Every record, as the admin pulls it.
async fn snapshot(s: &Server) -> Recs {
    let (entries, _) = s.pull_all(&s.admin, 0).await;
    let mut recs = Recs::new();
    for e in &entries {
        assert!(
            e.get("in_scope").is_none(),
            "the admin sees everything: {e}"
        );
        let mut r = Rec::from_view(e);
        if r.kind == "library_corner" {
            let path = format!("/v1/records/{}/history?limit=1000", r.id);
            let h = s.get(&path, &s.admin).await.expect(200);
            r.history = h.as_array().expect("entries").clone();
            assert!(r.history.len() < 1000, "one page holds the history");
        }
        recs.insert(r.id.clone(), r);
    }
    recs
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

const YEARS: &[i32] = &[2018, 2019, 2020, 2021, 2022];

fn ranges(rng: &mut ChaCha8Rng) -> Vec<(Option<String>, Option<String>)> {
    let mut out: Vec<(Option<String>, Option<String>)> = [
        (None, None),
        (Some("2020-01-01"), Some("2020-12-31")),
        (Some("2019-03-15"), Some("2020-02-29")),
        (Some("2021-01-01"), None),
        (None, Some("2019-12-31")),
        (Some("2020-02-29"), Some("2020-02-29")),
        // The calendar's ends.
        (Some("0000-01-01"), Some("9999-12-31")),
        (Some("9999-12-31"), None),
    ]
    .iter()
    .map(|(f, t)| (f.map(str::to_string), t.map(str::to_string)))
    .collect();
    for _ in 0..2 {
        let (a, b) = (day(rng), day(rng));
        out.push(if a <= b {
            (Some(a), Some(b))
        } else {
            (Some(b), Some(a))
        });
    }
    out
}

/// `/v1/totals` and `/v1/figures` for every unit (as the admin).
async fn check_totals_and_figures(
    s: &Server,
    tree: &Tree,
    recs: &Recs,
    ranges: &[(Option<String>, Option<String>)],
    what: &str,
) {
    let admin = &s.admin;
    for org in tree.codes() {
        for (from, to) in ranges {
            let (from, to) = (from.as_deref(), to.as_deref());
            let path = format!(
                "/v1/totals{}",
                query(&[("org", Some(&org)), ("from", from), ("to", to)])
            );
            let got: TotalsResponse = get_ok(s, &path, admin).await;
            assert_eq!(
                got,
                naive_totals(tree, recs, &org, from, to),
                "{what}: {path}"
            );
        }
        for &year in YEARS {
            let path = format!("/v1/figures?org={org}&year={year}");
            let got: YearFigures = get_ok(s, &path, admin).await;
            assert_eq!(got, naive_year(tree, recs, &org, year), "{what}: {path}");
        }
    }
    // The admin's default unit is the root.
    let got: TotalsResponse = get_ok(s, "/v1/totals", admin).await;
    assert_eq!(got, naive_totals(tree, recs, "d", None, None), "{what}");
    let got: YearFigures = get_ok(s, "/v1/figures?year=2020", admin).await;
    assert_eq!(got, naive_year(tree, recs, "d", 2020), "{what}");
}

async fn check_annual(s: &Server, tree: &Tree, recs: &Recs) {
    let admin = &s.admin;
    for org in ["d", "s1", "s2", "t3", "v22"] {
        for year in [2019, 2020, 2021] {
            let path = format!("/v1/reports/annual?org={org}&year={year}");
            let r: AnnualReport = get_ok(s, &path, admin).await;
            let f = naive_year(tree, recs, org, year);
            let t = &f.totals;
            let g = &f.grassroots;
            let l = &r.lectures;
            assert_eq!((&r.org, r.year), (&t.org, year), "{path}");
            assert_eq!(
                (l.count, l.attendees),
                (t.lectures.count, t.lectures.attendees),
                "{path}"
            );
            assert_eq!(
                (l.in_grassroots, l.attendees_in_grassroots),
                (
                    g.iter().map(|u| u.lectures).sum(),
                    g.iter().map(|u| u.attendees).sum()
                ),
                "{path}"
            );
            assert_eq!(
                (l.grassroots_units_reached, l.grassroots_units),
                (t.lectures.units_covered, t.library_corners.units_total),
                "{path}"
            );
            assert_eq!(r.library_corners, t.library_corners, "{path}");
            let without: Vec<OrgRef> = g
                .iter()
                .filter(|u| u.corners_active == 0)
                .map(|u| u.org.clone())
                .collect();
            assert_eq!(r.units_without_corner, without, "{path}");
            assert_eq!(r.demo_sites, t.demo_sites, "{path}");
            assert_eq!(r.months, f.months, "{path}");
            assert_eq!(r.top_topics, f.topics[..f.topics.len().min(5)], "{path}");
            assert_eq!(r.conflicts_open, t.conflicts_open, "{path}");
            let u = &t.legal_understanders;
            assert_eq!(
                r.legal_understanders.as_ref().map(|a| (
                    a.appointed,
                    a.units_covered,
                    a.units_total
                )),
                (u.appointed > 0 || u.serving > 0).then_some((
                    u.appointed,
                    u.units_covered,
                    u.units_total
                )),
                "{path}"
            );
            // The paragraph quotes the numbers, in words fit for the unit
            // (core's report laws check the wording in detail).
            let zh = &r.text_zh;
            assert!(
                zh.starts_with(&format!("{year}年,{}", t.org.name)),
                "{path}: {zh}"
            );
            if l.in_grassroots > 0 {
                let needle = format!("开展法律大讲堂活动{}场", l.in_grassroots);
                assert!(zh.contains(&needle), "{path}: {needle:?} not in {zh}");
            }
            if r.villages == 0 {
                assert!(!zh.contains("农村") && !zh.contains("乡村"), "{path}: {zh}");
            }
            if r.conflicts_open > 0 {
                let needle = format!("另有{}处数据冲突", r.conflicts_open);
                assert!(zh.contains(&needle), "{path}: {needle:?} not in {zh}");
            }
            // The text formats give the same paragraphs.
            let text = s.get(&format!("{path}&format=text"), admin).await;
            assert_eq!(text.status, StatusCode::OK);
            assert_eq!(
                text.headers.get("content-type").map(|v| v.as_bytes()),
                Some(&b"text/plain; charset=utf-8"[..])
            );
            assert_eq!(String::from_utf8(text.body).unwrap(), r.text_zh, "{path}");
            let text = s.get(&format!("{path}&format=text&lang=en"), admin).await;
            assert_eq!(text.status, StatusCode::OK);
            assert_eq!(String::from_utf8(text.body).unwrap(), r.text_en, "{path}");
            check_docx(s, &r, &f, &format!("{path}&format=docx")).await;
        }
    }
}

/// The texts of a `.docx`'s `word/document.xml`, run by run, unescaped.
fn docx_texts(bytes: Vec<u8>, path: &str) -> Vec<String> {
    use std::io::Read as _;
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .unwrap_or_else(|e| panic!("{path}: not a zip: {e}"));
    let mut xml = String::new();
    zip.by_name("word/document.xml")
        .unwrap_or_else(|e| panic!("{path}: no word/document.xml: {e}"))
        .read_to_string(&mut xml)
        .expect("utf-8 xml");
    xml.split("<w:t")
        .skip(1)
        .filter_map(|piece| {
            let (_, rest) = piece.split_once('>')?;
            let (text, _) = rest.split_once("</w:t>")?;
            Some(
                text.replace("&quot;", "\"")
                    .replace("&apos;", "'")
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&amp;", "&"),
            )
        })
        .collect()
}

/// The report as a Word document: its download headers, and in its text
/// the title, the paragraph part by part, and the figures in its tables.
async fn check_docx(s: &Server, r: &AnnualReport, f: &YearFigures, path: &str) {
    let resp = s.get(path, &s.admin).await;
    assert_eq!(resp.status, StatusCode::OK, "{path}");
    let name = format!("{}{}年法治宣传教育工作报告.docx", r.org.name, r.year);
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    assert_download(
        &resp,
        path,
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        &ascii,
    );
    let disposition = resp.headers["content-disposition"].to_str().unwrap();
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'.')
        .remove(b'_')
        .remove(b'-');
    let encoded = percent_encoding::utf8_percent_encode(&name, KEEP).to_string();
    assert!(
        disposition.ends_with(&format!("filename*=UTF-8''{encoded}")),
        "{path}: {disposition}"
    );
    let texts = docx_texts(resp.body, path);
    let has = |t: &str| {
        assert!(
            texts.iter().any(|x| x == t),
            "{path}: no {t:?} in {texts:?}"
        )
    };
    has(&format!(
        "{}{}年度法治宣传教育工作情况报告",
        r.org.name, r.year
    ));
    has(&format!(
        "现将{}{}年度法治宣传教育工作情况报告如下:",
        r.org.name, r.year
    ));
    let parts = pufa_core::report::parts_zh(r);
    // The sections, numbered in order, each with its part.
    let mut n = 0;
    for (title, part) in [
        ("法治宣传教育活动开展情况", &parts.activities),
        ("法治文化阵地建设情况", &parts.positions),
        ("法治示范创建情况", &parts.awards),
    ] {
        if !part.is_empty() {
            has(&format!("{}、{title}", ["一", "二", "三"][n]));
            has(part);
            n += 1;
        }
    }
    has(&format!("{}、主要数据", ["一", "二", "三", "四"][n]));
    assert_eq!(parts.paragraph(""), r.text_zh, "{path}");
    // The year's figures; the months' when there were lectures.
    let row = |label: &str, value: String| {
        let at = texts
            .iter()
            .position(|x| x == label)
            .unwrap_or_else(|| panic!("{path}: no row {label:?} in {texts:?}"));
        assert_eq!(texts[at + 1], value, "{path}: {label}");
    };
    row("法律讲座(场)", r.lectures.count.to_string());
    row("参加群众(人次)", r.lectures.attendees.to_string());
    row("在用法治图书角(个)", r.library_corners.active.to_string());
    row("省级示范(个)", r.demo_sites.provincial.to_string());
    if r.lectures.count > 0 {
        for m in &f.months {
            let at = texts
                .iter()
                .position(|x| *x == format!("{}月", m.month))
                .unwrap_or_else(|| panic!("{path}: no month {}", m.month));
            assert_eq!(
                texts[at + 1..at + 3],
                [m.lectures.to_string(), m.attendees.to_string()],
                "{path}: month {}",
                m.month
            );
        }
    }
    if f.grassroots.len() > 1 {
        for u in &f.grassroots {
            assert!(
                texts.contains(&u.org.name),
                "{path}: no row for {}",
                u.org.name
            );
        }
    }
}

/// `/v1/records` for every figure of a few units, paged with small limits.
async fn check_records(s: &Server, tree: &Tree, recs: &Recs, rng: &mut ChaCha8Rng) {
    let admin = &s.admin;
    for org in ["d", "s1", "s2", "t3", "v22", "c12"] {
        let mut limit = || *[1usize, 2, 3, 5, 1000].choose(rng).unwrap();
        for kind in KINDS {
            for include_deleted in [false, true] {
                let q = format!(
                    "org={org}&figure=records&kind={kind}&include_deleted={include_deleted}"
                );
                let got = list_records(s, admin, &q, limit()).await;
                let expect = naive_records(tree, recs, org, |r| {
                    r.kind == *kind && (include_deleted || !r.deleted)
                });
                assert_eq!(got, ids(expect), "{q}");
            }
        }
        let year_topics = naive_year(tree, recs, org, 2020).topics;
        for (from, to) in [
            (Some("2019-01-01"), Some("2019-12-31")),
            (Some("2020-01-01"), Some("2020-12-31")),
            (Some("2020-02-01"), Some("2020-04-30")),
            (None, Some("2020-06-30")),
            (Some("2021-01-01"), None),
            (None, None),
        ] {
            let q = format!(
                "org={org}&figure=lectures{}",
                query(&[("from", from), ("to", to)]).replace('?', "&")
            );
            let got = list_records(s, admin, &q, limit()).await;
            let expect = naive_records(tree, recs, org, |r| {
                r.lecture().is_some_and(|(d, _, _)| in_range(d, from, to))
            });
            let t = naive_totals(tree, recs, org, from, to);
            assert_eq!(got.len() as u64, t.lectures.count, "{q}");
            assert_eq!(got, ids(expect), "{q}");
        }
        for t in &year_topics {
            let topic = t.topic.as_deref().unwrap_or("");
            let q = format!(
                "org={org}&figure=lectures&from=2020-01-01&to=2020-12-31&topic={}",
                enc(topic)
            );
            let got = list_records(s, admin, &q, limit()).await;
            let expect = naive_records(tree, recs, org, |r| {
                r.lecture().is_some_and(|(d, _, ts)| {
                    year_of(d) == 2020
                        && if topic.is_empty() {
                            ts.is_empty()
                        } else {
                            ts.contains(topic)
                        }
                })
            });
            assert_eq!(got.len() as u64, t.lectures, "{q}");
            assert_eq!(got, ids(expect), "{q}");
        }
        let q = format!("org={org}&figure=corners_active");
        let got = list_records(s, admin, &q, limit()).await;
        assert_eq!(
            got.len() as u64,
            naive_totals(tree, recs, org, None, None)
                .library_corners
                .active,
            "{q}"
        );
        assert_eq!(
            got,
            ids(naive_records(tree, recs, org, Rec::active_corner)),
            "{q}"
        );
        for (from, to) in [
            (Some("2020-01-01"), Some("2020-12-31")),
            (None, Some("2019-12-31")),
            (Some("2021-01-01"), None),
            (None, None),
        ] {
            let range = query(&[("from", from), ("to", to)]).replace('?', "&");
            let t = naive_totals(tree, recs, org, from, to).legal_understanders;
            let q = format!("org={org}&figure=understanders_appointed{range}");
            let got = list_records(s, admin, &q, limit()).await;
            let expect = naive_records(tree, recs, org, |r| {
                r.understander().is_some_and(|(d, _)| in_range(d, from, to))
            });
            assert_eq!(got.len() as u64, t.appointed, "{q}");
            assert_eq!(got, ids(expect), "{q}");
            // Serving: appointed by `to`, whatever `from` says.
            let q = format!("org={org}&figure=understanders_serving{range}");
            let got = list_records(s, admin, &q, limit()).await;
            let expect = naive_records(tree, recs, org, |r| {
                r.understander()
                    .is_some_and(|(d, serving)| serving && in_range(d, None, to))
            });
            assert_eq!(got.len() as u64, t.serving, "{q}");
            assert_eq!(got, ids(expect), "{q}");
        }
        for year in [2019, 2020, 2021] {
            for level in [
                None,
                Some("national"),
                Some("provincial"),
                Some("municipal"),
                Some("district"),
            ] {
                let q = format!(
                    "org={org}&figure=sites_awarded&from={year}-01-01&to={year}-12-31{}",
                    level.map_or(String::new(), |l| format!("&level={l}"))
                );
                let got = list_records(s, admin, &q, limit()).await;
                let expect = naive_records(tree, recs, org, |r| {
                    r.award()
                        .is_some_and(|(y, l)| y == year && level.is_none_or(|want| l == want))
                });
                assert_eq!(got, ids(expect), "{q}");
            }
        }
    }
}

/// The CSV record and totals exports of a unit, checked cell by cell.
/// `org`: the `org=` parameter; `root`: the unit that it or the caller's
/// default names.
async fn check_exports(
    s: &Server,
    dev: &Dev,
    tree: &Tree,
    recs: &Recs,
    org: Option<&str>,
    root: &str,
) {
    let depth = tree.depth();
    let org_q = org.map_or(String::new(), |o| format!("org={o}&"));
    for kind in KINDS {
        for include_deleted in [false, true] {
            let path =
                format!("/v1/exports/{kind}.csv?{org_q}lang=en&include_deleted={include_deleted}");
            let (headers, rows) = csv(s, dev, &path).await;
            let r = s.get(&path, dev).await;
            assert_download(
                &r,
                &path,
                "text/csv; charset=utf-8",
                &format!("{root}-{kind}.csv"),
            );
            let col = |name: &str| {
                headers
                    .iter()
                    .position(|h| h == name)
                    .unwrap_or_else(|| panic!("{path}: no column {name} in {headers:?}"))
            };
            assert_eq!(headers[0], "id", "{path}");
            let expect: BTreeSet<&str> = naive_records(tree, recs, root, |r| {
                r.kind == *kind && (include_deleted || !r.deleted)
            });
            assert_eq!(rows.len(), expect.len(), "{path}: one row per record");
            let mut seen = BTreeSet::new();
            for row in &rows {
                let r = &recs[&row[0]];
                assert!(expect.contains(r.id.as_str()), "{path}: {} listed", r.id);
                assert!(seen.insert(r.id.clone()), "{path}: {} twice", r.id);
                // The org levels name the record's unit and its ancestors.
                let chain = tree.chain(r.unit());
                for level in 1..=depth {
                    let cell = &row[col(&format!("org_level_{level}"))];
                    let want = chain.get(level - 1).map_or("", |c| tree.0[c].name.as_str());
                    assert_eq!(cell, want, "{path}: level {level} of {}", r.id);
                }
                assert_eq!(row[col("org_unit")], r.unit(), "{path}");
                assert_eq!(row[col("deleted")], r.deleted.to_string(), "{path}");
                assert_eq!(
                    row[col("open_conflicts")],
                    r.conflicts.to_string(),
                    "{path}"
                );
                assert_eq!(row[col("seq")], r.seq.to_string(), "{path}");
                let text = |f: &str| match r.fields.get(f) {
                    None => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(list)) => list
                        .iter()
                        .map(|t| t.as_str().unwrap())
                        .collect::<Vec<_>>()
                        .join("、"),
                    Some(other) => other.to_string(),
                };
                let fields: &[&str] = match *kind {
                    "lecture" => &["held_on", "title", "attendees", "topics"],
                    "library_corner" => &["name", "status", "books"],
                    "legal_understander" => &["name", "appointed_on", "status", "training_hours"],
                    _ => &["level", "status", "year"],
                };
                for f in fields {
                    assert_eq!(row[col(f)], text(f), "{path}: {f} of {}", r.id);
                }
                // A phone number is in no export that does not ask for it.
                assert!(!headers.iter().any(|h| h == "phone"), "{path}");
                if let Some(phone) = r.fields.get("phone").and_then(Value::as_str) {
                    assert!(!row.iter().any(|c| c.contains(phone)), "{path}: {phone}");
                }
            }
        }
    }
    // Asked for, phone numbers have their column, after the fields the
    // schema lists before them.
    let path = format!("/v1/exports/legal_understander.csv?{org_q}lang=en&include=phone");
    let (headers, rows) = csv(s, dev, &path).await;
    let phone = headers.iter().position(|h| h == "phone").expect("phone");
    assert_eq!(headers[phone - 1], "training_hours", "{path}");
    let expect = naive_records(tree, recs, root, |r| {
        r.kind == "legal_understander" && !r.deleted
    });
    assert_eq!(rows.len(), expect.len(), "{path}");
    for row in &rows {
        let want = recs[&row[0]].s("phone").unwrap_or_default();
        // `+86 …` would be a formula to a spreadsheet: it is kept as text.
        let want = match want.starts_with('+') {
            true => format!("'{want}"),
            false => want.to_string(),
        };
        assert_eq!(row[phone], want, "{path}: phone of {}", row[0]);
    }
    let path = format!("/v1/exports/legal_understander.csv?{org_q}include=phone");
    let (headers, _) = csv(s, dev, &path).await;
    assert!(
        headers.iter().any(|h| h == "联系电话"),
        "{path}: {headers:?}"
    );

    // Chinese labels, and the export of one figure's records.
    let path =
        format!("/v1/exports/lecture.csv?{org_q}figure=lectures&from=2020-01-01&to=2020-12-31");
    let (headers, rows) = csv(s, dev, &path).await;
    assert_eq!(headers[0], "记录ID", "{path}");
    assert_eq!(headers[1], "1级单位", "{path}");
    let t = naive_totals(tree, recs, root, Some("2020-01-01"), Some("2020-12-31"));
    assert_eq!(rows.len() as u64, t.lectures.count, "{path}");

    // The totals table: the unit, then its children.
    for (from, to) in [(None, None), (Some("2020-01-01"), Some("2020-12-31"))] {
        let path = format!(
            "/v1/exports/totals.csv?{org_q}lang=en{}",
            query(&[("from", from), ("to", to)]).replace('?', "&")
        );
        let (headers, rows) = csv(s, dev, &path).await;
        let t = naive_totals(tree, recs, root, from, to);
        assert_eq!(rows.len(), 1 + t.children.len(), "{path}");
        let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
        let mut expect = vec![(
            t.org.clone(),
            t.lectures.clone(),
            t.library_corners.clone(),
            t.demo_sites.clone(),
            t.legal_understanders.clone(),
            t.conflicts_open,
        )];
        expect.extend(t.children.iter().map(|c| {
            (
                c.org.clone(),
                c.lectures.clone(),
                c.library_corners.clone(),
                c.demo_sites.clone(),
                c.legal_understanders.clone(),
                c.conflicts_open,
            )
        }));
        for (row, (o, l, c, st, u, conflicts)) in rows.iter().zip(&expect) {
            let n = |name: &str| row[col(name)].parse::<u64>().unwrap();
            assert_eq!(
                (&row[col("org_code")], &row[col("org_name")]),
                (&o.code, &o.name)
            );
            assert_eq!(
                (n("lectures"), n("attendees"), n("units_with_lectures")),
                (l.count, l.attendees, l.units_covered),
                "{path}: {}",
                o.code
            );
            assert_eq!(
                (
                    n("corners_active"),
                    n("units_with_corner"),
                    n("grassroots_units")
                ),
                (c.active, c.units_covered, c.units_total),
                "{path}: {}",
                o.code
            );
            assert_eq!(
                row[col("corner_coverage")].parse::<f64>().unwrap(),
                c.coverage,
                "{path}: {}",
                o.code
            );
            assert_eq!(
                [
                    n("sites_national"),
                    n("sites_provincial"),
                    n("sites_municipal"),
                    n("sites_district")
                ],
                [st.national, st.provincial, st.municipal, st.district],
                "{path}: {}",
                o.code
            );
            assert_eq!(
                (
                    n("understanders_appointed"),
                    n("understanders_serving"),
                    n("units_with_understander")
                ),
                (u.appointed, u.serving, u.units_covered),
                "{path}: {}",
                o.code
            );
            assert_eq!(
                row[col("understander_coverage")].parse::<f64>().unwrap(),
                u.coverage,
                "{path}: {}",
                o.code
            );
            assert_eq!(n("conflicts_open"), *conflicts, "{path}: {}", o.code);
        }
    }
    // XLSX holds the same rows.
    for kind in KINDS {
        let path = format!("/v1/exports/{kind}.xlsx?{org_q}include_deleted=true");
        let (rows, strings) = xlsx(s, dev, &path, &format!("{root}-{kind}.xlsx")).await;
        let expect = naive_records(tree, recs, root, |r| r.kind == *kind);
        assert_eq!(
            rows,
            1 + expect.len(),
            "{path}: a header and one row per record"
        );
        for id in expect {
            assert!(strings.contains(id), "{path}: no {id}");
        }
    }
    let path = format!("/v1/exports/totals.xlsx?{org_q}lang=en");
    let (rows, strings) = xlsx(s, dev, &path, &format!("{root}-totals.xlsx")).await;
    assert_eq!(rows, 2 + tree.children(root).len(), "{path}");
    for code in std::iter::once(root.to_string()).chain(tree.children(root)) {
        assert!(strings.contains(&format!(">{code}<")), "{path}: no {code}");
    }
}

/// An XLSX export: status 200, its download headers, and the number of
/// rows of its one sheet and the text of its shared strings.
async fn xlsx(s: &Server, dev: &Dev, path: &str, filename: &str) -> (usize, String) {
    use std::io::Read as _;
    let r = s.get(path, dev).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_download(
        &r,
        path,
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        filename,
    );
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(r.body)).expect("a zip");
    let mut text = |name: &str| {
        let mut out = String::new();
        if let Ok(mut f) = zip.by_name(name) {
            f.read_to_string(&mut out).expect("utf-8 xml");
        }
        out
    };
    let sheet = text("xl/worksheets/sheet1.xml");
    assert!(!sheet.is_empty(), "{path}: no sheet");
    (sheet.matches("<row ").count(), text("xl/sharedStrings.xml"))
}

#[track_caller]
fn assert_download(r: &Resp, path: &str, mime: &str, filename: &str) {
    let header = |name: &str| {
        r.headers
            .get(name)
            .unwrap_or_else(|| panic!("{path}: no {name}"))
            .to_str()
            .unwrap_or_else(|e| panic!("{path}: {name} is not visible ASCII: {e}"))
            .to_string()
    };
    assert_eq!(header("content-type"), mime, "{path}");
    // More parameters (`filename*=`) may follow.
    let disposition = header("content-disposition");
    let rest = disposition
        .strip_prefix(&format!("attachment; filename=\"{filename}\""))
        .unwrap_or_else(|| panic!("{path}: {disposition}, expected {filename}"));
    assert!(
        rest.is_empty() || rest.starts_with(';'),
        "{path}: {disposition}"
    );
}

/// A coordinator of one street sees only its street, whatever it asks.
async fn check_scope(s: &Server, tree: &Tree, recs: &Recs, coord: &Dev, street: &str, field: &Dev) {
    for org in tree.codes() {
        let paths = [
            format!("/v1/totals?org={org}"),
            format!("/v1/figures?org={org}&year=2020"),
            format!("/v1/reports/annual?org={org}&year=2020"),
            format!("/v1/reports/annual?org={org}&year=2020&format=docx"),
            format!("/v1/records?org={org}&figure=records&kind=lecture&include_deleted=true"),
            format!("/v1/records?org={org}&figure=lectures"),
            format!("/v1/exports/lecture.csv?org={org}"),
            format!("/v1/exports/totals.csv?org={org}"),
        ];
        for path in paths {
            let r = s.get(&path, coord).await;
            if tree.within(&org, street) {
                assert_eq!(r.status, StatusCode::OK, "{path}");
            } else {
                assert_error(&r, 403, "forbidden");
            }
            // A field device gets no figures at all.
            assert_error(&s.get(&path, field).await, 403, "forbidden");
        }
    }
    // A unit that does not exist: forbidden for a coordinator (no probing
    // of the tree), not found for the admin.
    for path in [
        "/v1/totals?org=zz",
        "/v1/figures?org=zz&year=2020",
        "/v1/reports/annual?org=zz&year=2020",
        "/v1/reports/annual?org=zz&year=2020&format=docx",
        "/v1/records?org=zz&figure=lectures",
        "/v1/exports/lecture.csv?org=zz",
        "/v1/exports/totals.csv?org=zz",
    ] {
        assert_error(&s.get(path, coord).await, 403, "forbidden");
        assert_error(&s.get(path, &s.admin).await, 404, "not_found");
    }
    // Without `org`: the coordinator's own street, and nothing else.
    let got: TotalsResponse = get_ok(s, "/v1/totals", coord).await;
    assert_eq!(got, naive_totals(tree, recs, street, None, None));
    let got: YearFigures = get_ok(s, "/v1/figures?year=2020", coord).await;
    assert_eq!(got, naive_year(tree, recs, street, 2020));
    let r: AnnualReport = get_ok(s, "/v1/reports/annual?year=2020", coord).await;
    assert_eq!(r.org.code, street);
    for kind in KINDS {
        let q = format!("figure=records&kind={kind}&include_deleted=true");
        let got = list_records(s, coord, &q, 1000).await;
        let expect: BTreeSet<String> = naive_records(tree, recs, street, |r| r.kind == *kind)
            .into_iter()
            .map(str::to_string)
            .collect();
        assert_eq!(got, expect, "{street}: {q}");
    }
    check_exports(s, coord, tree, recs, None, street).await;
}

fn no_rate_limit(c: &mut pufa_server::Config) {
    c.token_rate = None;
}

/// A server with the test tree and no per-token rate limit: the checks
/// page through drill-downs one record at a time, thousands of requests
/// in a second or two.
async fn server() -> Server {
    let s = Server::configured(no_rate_limit).await;
    s.import(&tree_json()).await;
    s
}

async fn run_seed(seed: u64) -> Stats {
    let s = server().await;
    let mut w = World::new(&s, seed).await;
    for step in 0..STEPS {
        if step == STEPS / 2 {
            w.reparent(&s).await;
        }
        w.step(&s).await;
    }
    // Every device syncs and then holds exactly its scope's records.
    let recs = snapshot(&s).await;
    for i in 0..w.devs.len() {
        w.sync(&s, i).await;
        let d = &w.devs[i];
        let expect: Recs = recs
            .iter()
            .filter(|(_, r)| w.tree.within(r.unit(), &d.scope))
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect();
        assert_eq!(d.replica, expect, "seed {seed}: replica of device {i}");
    }
    let tree = w.tree.clone();
    eprintln!(
        "seed {seed}: {} records ({} deleted, {} open conflicts), {:?}",
        recs.len(),
        recs.values().filter(|r| r.deleted).count(),
        recs.values().map(|r| r.conflicts).sum::<u64>(),
        w.stats
    );
    // Open conflicts in the list match the records' counts.
    let list = s
        .get("/v1/conflicts?limit=5000", &s.admin)
        .await
        .expect(200);
    assert_eq!(
        list.as_array().unwrap().len() as u64,
        recs.values().map(|r| r.conflicts).sum::<u64>(),
        "seed {seed}: open conflicts"
    );

    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let ranges = ranges(&mut rng);
    check_totals_and_figures(&s, &tree, &recs, &ranges, &format!("seed {seed}")).await;
    check_annual(&s, &tree, &recs).await;
    check_records(&s, &tree, &recs, &mut rng).await;
    for org in [None, Some("s1"), Some("v22")] {
        check_exports(&s, &s.admin, &tree, &recs, org, org.unwrap_or("d")).await;
    }
    let c1 = s.issue("coordinator", "s1").await;
    let c2 = s.issue("coordinator", "s2").await;
    let field = w.devs[0].dev.clone();
    check_scope(&s, &tree, &recs, &c1, "s1", &field).await;
    check_scope(&s, &tree, &recs, &c2, "s2", &field).await;

    // The figures survive a restart (aggregates reloaded from disk).
    let s = s.restart_with(no_rate_limit, |_| {}).await;
    assert_eq!(
        snapshot(&s).await,
        recs,
        "seed {seed}: records after restart"
    );
    check_totals_and_figures(
        &s,
        &tree,
        &recs,
        &ranges,
        &format!("seed {seed}, restarted"),
    )
    .await;
    w.stats
}

/// Seeds 1..=6, or those listed in `PUFA_FIGURES_SEEDS` (`7,8,9`) to
/// replay or widen the search. A failure names its seed (the line
/// `seed N: …` printed before that seed's checks).
#[tokio::test]
async fn figures_match_a_recount_of_random_workloads() {
    let seeds: Vec<u64> = match std::env::var("PUFA_FIGURES_SEEDS") {
        Ok(list) => list
            .split(',')
            .map(|s| s.trim().parse().expect("PUFA_FIGURES_SEEDS: numbers"))
            .collect(),
        Err(_) => (1..=6).collect(),
    };
    let mut all = Stats::default();
    for seed in seeds {
        let st = run_seed(seed).await;
        all.applied += st.applied;
        all.out_of_scope += st.out_of_scope;
        all.duplicates += st.duplicates;
        all.conflicts += st.conflicts;
        all.deletes += st.deletes;
        all.restores += st.restores;
        all.moves += st.moves;
        all.resolutions += st.resolutions;
    }
    // The workload did what it is meant to exercise.
    let Stats {
        applied,
        out_of_scope,
        duplicates,
        conflicts,
        deletes,
        restores,
        moves,
        resolutions,
    } = all;
    for (what, n) in [
        ("applied", applied),
        ("out_of_scope", out_of_scope),
        ("duplicates", duplicates),
        ("conflicts", conflicts),
        ("deletes", deletes),
        ("restores", restores),
        ("moves", moves),
        ("resolutions", resolutions),
    ] {
        assert!(n > 0, "the workloads had no {what}: {all:?}");
    }
}

// ---------------------------------------------------------------------------
// Bad parameters and unknown exports
// ---------------------------------------------------------------------------

#[tokio::test]
async fn bad_parameters_are_invalid_query_and_unknown_exports_not_found() {
    let s = Server::new().await;
    let coord = s.issue("coordinator", "d").await;
    let bad: &[(&str, &str)] = &[
        ("/v1/figures", "year"),
        ("/v1/figures?year=abc", "year"),
        ("/v1/figures?year=1999", "year"),
        ("/v1/figures?year=2101", "year"),
        ("/v1/reports/annual", "year"),
        ("/v1/reports/annual?year=20x0", "year"),
        ("/v1/reports/annual?year=2020&format=pdf", "format"),
        ("/v1/reports/annual?year=2020&format=DOCX", "format"),
        ("/v1/reports/annual?year=2020&format=", "format"),
        ("/v1/reports/annual?year=2020&format=docx&lang=fr", "lang"),
        ("/v1/reports/annual?year=2020&lang=fr", "lang"),
        ("/v1/totals?from=2020-02-30", "from"),
        ("/v1/totals?to=20200101", "to"),
        ("/v1/totals?from=2020-02-01&to=2020-01-31", "from"),
        ("/v1/records?figure=nope", "figure"),
        ("/v1/records", "kind"),
        ("/v1/records?figure=records", "kind"),
        ("/v1/records?figure=records&kind=nope", "kind"),
        ("/v1/records?figure=lectures&kind=demo_site", "kind"),
        ("/v1/records?figure=corners_active&kind=lecture", "kind"),
        ("/v1/records?figure=sites_awarded&level=nope", "level"),
        (
            "/v1/records?figure=records&kind=lecture&include_deleted=yes",
            "include_deleted",
        ),
        ("/v1/records?figure=lectures&after=xyz", "after"),
        ("/v1/records?figure=lectures&limit=0", "limit"),
        ("/v1/records?figure=lectures&limit=-1", "limit"),
        ("/v1/records?figure=lectures&from=2020-13-01", "from"),
        (
            "/v1/records?figure=lectures&from=2020-03-01&to=2020-02-01",
            "from",
        ),
        ("/v1/exports/lecture.csv?lang=fr", "lang"),
        ("/v1/exports/lecture.csv?figure=corners_active", "kind"),
        (
            "/v1/exports/lecture.csv?include_deleted=1",
            "include_deleted",
        ),
        (
            "/v1/exports/demo_site.xlsx?figure=sites_awarded&level=x",
            "level",
        ),
        (
            "/v1/exports/totals.csv?from=2021-01-01&to=2020-01-01",
            "from",
        ),
        ("/v1/exports/totals.xlsx?to=yesterday", "to"),
        (
            "/v1/records?figure=understanders_serving&kind=lecture",
            "kind",
        ),
        (
            "/v1/records?figure=understanders_appointed&to=2020-02-30",
            "to",
        ),
        ("/v1/exports/legal_understander.csv?include=name", "include"),
        (
            "/v1/exports/legal_understander.csv?include=phone,notes",
            "include",
        ),
        (
            "/v1/exports/legal_understander.csv?include=Phone",
            "include",
        ),
        ("/v1/exports/lecture.csv?include=phone", "include"),
        ("/v1/exports/totals.csv?include=phone", "include"),
    ];
    for (path, field) in bad {
        for dev in [&coord, &s.admin] {
            let r: Resp = s.get(path, dev).await;
            assert_error_field(&r, 400, "invalid_query", Some(field));
        }
    }
    // The ends of the range are years.
    for path in [
        "/v1/figures?year=2000",
        "/v1/figures?year=2100",
        "/v1/reports/annual?year=2100&format=text&lang=en",
        "/v1/reports/annual?year=2000&format=json&lang=zh-CN",
    ] {
        assert_eq!(s.get(path, &coord).await.status, StatusCode::OK, "{path}");
    }
    for file in [
        "nope.csv",
        "lecture.pdf",
        "lecture",
        "totals.json",
        ".csv",
        "lectures.csv",
        "Lecture.csv",
    ] {
        let r = s.get(&format!("/v1/exports/{file}"), &coord).await;
        assert_error(&r, 404, "not_found");
    }
    // Without a token: unauthorized, before anything else.
    for path in [
        "/v1/figures?year=2020",
        "/v1/records",
        "/v1/exports/lecture.csv",
    ] {
        let r = s.send(Method::GET, path, None, Vec::new(), None).await;
        assert_error(&r, 401, "unauthorized");
    }
    // With a second root, the admin must say which unit it means.
    s.import(&json!([{"code": "d2", "name": "杏花岭区", "type": "district", "parent": null}]))
        .await;
    for path in [
        "/v1/totals",
        "/v1/figures?year=2020",
        "/v1/reports/annual?year=2020",
        "/v1/records?figure=lectures",
        "/v1/exports/lecture.csv",
        "/v1/exports/totals.csv",
    ] {
        assert_error_field(
            &s.get(path, &s.admin).await,
            400,
            "invalid_query",
            Some("org"),
        );
        // A coordinator's default is its own unit.
        assert_eq!(s.get(path, &coord).await.status, StatusCode::OK, "{path}");
    }
    let t = s.get("/v1/totals?org=d2", &s.admin).await.expect(200);
    assert_eq!(t["org"]["code"], "d2");
}

// ---------------------------------------------------------------------------
// Exports and drill-downs larger than one page
// ---------------------------------------------------------------------------

/// More lectures than an export fetches per page (2,000) and than a
/// `/v1/records` page may hold (5,000 is the most; larger limits clamp).
#[tokio::test]
async fn exports_and_drill_downs_page_through_large_sets() {
    let s = Server::new().await;
    let field = s.issue("field", "d").await;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut expect: BTreeMap<String, (&str, u64)> = BTreeMap::new();
    for batch in 0..6 {
        let mutations: Vec<Value> = (0..1000)
            .map(|i| {
                let id = uuid(&mut rng);
                let unit = if i % 97 == 0 { "c2" } else { "c1" };
                let attendees = rng.gen_range(0..100);
                expect.insert(id.clone(), (unit, attendees));
                json!({
                    "id": uuid(&mut rng), "record_id": id, "kind": "lecture", "base_seq": 0,
                    "hlc": {"ms": support::T0, "c": batch * 1000 + i, "node": field.id},
                    "set": {"org_unit": unit, "held_on": "2020-05-04", "title": "讲座",
                            "attendees": attendees, "topics": ["民法典"]},
                })
            })
            .collect();
        let r = s.push(&field, &mutations).await;
        for res in r["results"].as_array().unwrap() {
            assert_eq!(res["status"], "applied", "{res}");
        }
    }
    let in_c2: BTreeSet<String> = expect
        .iter()
        .filter(|(_, (u, _))| *u == "c2")
        .map(|(id, _)| id.clone())
        .collect();
    let all: BTreeSet<String> = expect.keys().cloned().collect();

    let (headers, rows) = csv(&s, &s.admin, "/v1/exports/lecture.csv?lang=en").await;
    let got: BTreeSet<String> = rows.iter().map(|r| r[0].clone()).collect();
    assert_eq!((rows.len(), &got), (all.len(), &all), "one row per lecture");
    let level3 = headers.iter().position(|h| h == "org_level_3").unwrap();
    for row in &rows {
        let name = if in_c2.contains(&row[0]) {
            "柳巷第02社区"
        } else {
            "柳巷第01社区"
        };
        assert_eq!(row[level3], name);
    }
    let (_, rows) = csv(&s, &s.admin, "/v1/exports/lecture.csv?org=c2").await;
    let got: BTreeSet<String> = rows.iter().map(|r| r[0].clone()).collect();
    assert_eq!(got, in_c2);
    let (_, rows) = csv(
        &s,
        &s.admin,
        "/v1/exports/lecture.csv?figure=lectures&topic=%E6%B0%91%E6%B3%95%E5%85%B8",
    )
    .await;
    assert_eq!(rows.len(), all.len());
    let (rows, strings) = xlsx(&s, &s.admin, "/v1/exports/lecture.xlsx", "d-lecture.xlsx").await;
    assert_eq!(rows, 1 + all.len());
    for id in &all {
        assert!(strings.contains(id.as_str()), "no {id} in the workbook");
    }

    // A limit above 5000 is 5000.
    let page = s
        .get("/v1/records?figure=lectures&limit=100000", &s.admin)
        .await
        .expect(200);
    assert_eq!(page["records"].as_array().unwrap().len(), 5000);
    assert!(page["next"].is_string());
    for limit in [5000, 999] {
        let got = list_records(
            &s,
            &s.admin,
            "figure=lectures&from=2020-05-04&to=2020-05-04",
            limit,
        )
        .await;
        assert_eq!(got, all, "limit {limit}");
    }
    let t: TotalsResponse = get_ok(&s, "/v1/totals", &s.admin).await;
    let attendees: u64 = expect.values().map(|(_, a)| a).sum();
    assert_eq!((t.lectures.count, t.lectures.attendees), (6000, attendees));
    let f: YearFigures = get_ok(&s, "/v1/figures?year=2020", &s.admin).await;
    assert_eq!(f.months[4].lectures, 6000);
    assert_eq!(
        f.topics,
        [TopicFigure {
            topic: Some("民法典".into()),
            lectures: 6000,
            attendees
        }]
    );
}

// ---------------------------------------------------------------------------
// A store written before topics were counted
// ---------------------------------------------------------------------------

/// The store of a server just dropped, opened directly. sled's worker
/// threads may hold its lock for a moment after the server let go (see
/// `Server::restart_with`): wait for it, for at most ten seconds. No
/// flusher thread here, so that dropping the handle releases the lock.
fn open_sled(path: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::Config::new().path(path).flush_every_ms(None).open() {
            Ok(db) => return db,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::yield_now();
            }
            Err(e) => panic!("open the store: {e}"),
        }
    }
}

/// A server after 80 steps of the workload of `seed`: the server, its
/// world, and the records as the admin pulls them.
async fn stepped(seed: u64) -> (Server, World, Recs) {
    let s = server().await;
    let mut w = World::new(&s, seed).await;
    for _ in 0..80 {
        w.step(&s).await;
    }
    let recs = snapshot(&s).await;
    (s, w, recs)
}

/// `s` restarted, after checking that its store is marked with the
/// current format (an upgrade at its last start marked it so).
async fn restarted_at_the_current_format(s: Server) -> Server {
    use pufa_server::store::codec;
    s.restart_with(no_rate_limit, |dir| {
        let db = open_sled(&dir.join("store"));
        let format = db.get(codec::META_FORMAT).unwrap().unwrap();
        assert_eq!(codec::u64_of(&format).unwrap(), codec::STORE_FORMAT);
    })
    .await
}

/// 60 more steps of `w` on `s`, then its figures checked (ranges of
/// `seed`), and again after a restart.
async fn keeps_counting(s: Server, w: &mut World, tree: &Tree, seed: u64, what: &str) {
    for _ in 0..60 {
        w.step(&s).await;
    }
    let recs = snapshot(&s).await;
    let ranges = ranges(&mut ChaCha8Rng::seed_from_u64(seed));
    check_totals_and_figures(&s, tree, &recs, &ranges, what).await;
    let s = s.restart_with(no_rate_limit, |_| {}).await;
    check_totals_and_figures(&s, tree, &recs, &ranges, &format!("{what}, restarted")).await;
}

/// A format-2 store (no topic aggregates) is upgraded at open: the topic
/// figures are recounted from the records, and the rest stays as it was.
#[tokio::test]
async fn a_format_2_store_gets_its_topic_figures_at_open() {
    let (s, mut w, recs) = stepped(99).await;
    let tree = w.tree.clone();
    let mut figures = Vec::new();
    for org in ["d", "s1", "v31"] {
        for year in [2019, 2020, 2021] {
            let f: YearFigures =
                get_ok(&s, &format!("/v1/figures?org={org}&year={year}"), &s.admin).await;
            assert_eq!(f, naive_year(&tree, &recs, org, year));
            figures.push(f);
        }
    }
    assert!(
        figures.iter().any(|f| f.topics.len() > 1),
        "the workload has lectures on topics"
    );
    let s = s
        .restart_with(no_rate_limit, |dir| {
            use pufa_server::store::codec;
            let db = open_sled(&dir.join("store"));
            let mut removed = 0;
            for kv in db.scan_prefix(codec::AGG) {
                let (k, v) = kv.unwrap();
                let (key, _) = codec::decode_agg(&k[codec::AGG.len()..], &v).unwrap();
                if matches!(key, pufa_core::totals::AggKey::Topics(..)) {
                    db.remove(k).unwrap();
                    removed += 1;
                }
            }
            assert!(removed > 0, "a format-3 store has topic entries");
            db.insert(codec::META_FORMAT, &codec::STORE_FORMAT_2.to_be_bytes())
                .unwrap();
            db.flush().unwrap();
        })
        .await;
    let mut again = Vec::new();
    for org in ["d", "s1", "v31"] {
        for year in [2019, 2020, 2021] {
            again.push(
                get_ok::<YearFigures>(&s, &format!("/v1/figures?org={org}&year={year}"), &s.admin)
                    .await,
            );
        }
    }
    assert_eq!(again, figures);
    // It keeps counting from there, and the upgrade is not run again.
    keeps_counting(s, &mut w, &tree, 1, "upgraded").await;
}

/// A format-6 store counted topics as written (反诈 apart from
/// 反电信网络诈骗): at open its topic figures are recounted by the
/// vocabulary, and it keeps counting them so.
#[tokio::test]
async fn a_format_6_store_gets_its_topics_folded_at_open() {
    use pufa_server::store::codec;
    let (s, mut w, recs) = stepped(42).await;
    let tree = w.tree.clone();
    let (pulled, _) = s.pull_all(&s.admin, 0).await;
    let as_written = support::topic_entries_as_written(&pulled);
    async fn figures_of(s: &Server) -> Vec<YearFigures> {
        let mut out = Vec::new();
        for org in ["d", "s1", "t3", "v31"] {
            for year in [2019, 2020, 2021] {
                let path = format!("/v1/figures?org={org}&year={year}");
                out.push(get_ok::<YearFigures>(s, &path, &s.admin).await);
            }
        }
        out
    }
    let folded = figures_of(&s).await;
    let mut expect = Vec::new();
    for org in ["d", "s1", "t3", "v31"] {
        for year in [2019, 2020, 2021] {
            expect.push(naive_year(&tree, &recs, org, year));
        }
    }
    assert_eq!(folded, expect);
    let s = s
        .restart_with(no_rate_limit, |dir| {
            let db = open_sled(&dir.join("store"));
            let mut stored = Vec::new();
            for kv in db.scan_prefix(codec::AGG) {
                let (k, v) = kv.unwrap();
                let (key, _) = codec::decode_agg(&k[codec::AGG.len()..], &v).unwrap();
                if matches!(key, pufa_core::totals::AggKey::Topics(..)) {
                    stored.push((k.to_vec(), v.to_vec()));
                    db.remove(k).unwrap();
                }
            }
            assert_ne!(
                stored, as_written,
                "the workload tags lectures with synonyms, which format 7 folds"
            );
            for (k, v) in &as_written {
                db.insert(k, v.as_slice()).unwrap();
            }
            db.insert(codec::META_FORMAT, &codec::STORE_FORMAT_6.to_be_bytes())
                .unwrap();
            db.flush().unwrap();
        })
        .await;
    assert_eq!(figures_of(&s).await, folded);
    let s = restarted_at_the_current_format(s).await;
    // It keeps counting by the vocabulary, across restarts.
    keeps_counting(s, &mut w, &tree, 3, "folded").await;
}

/// Records are stored in the compact layout since store format 5; a
/// format-4 store's records (positional layout) are read as they are and
/// rewritten compact only when next written.
#[tokio::test]
async fn a_format_4_store_reads_its_positional_records() {
    let (s, mut w, recs) = stepped(7).await;
    let tree = w.tree.clone();
    let ranges = ranges(&mut ChaCha8Rng::seed_from_u64(2));
    check_totals_and_figures(&s, &tree, &recs, &ranges, "compact").await;
    let s = s
        .restart_with(no_rate_limit, |dir| {
            use pufa_server::store::codec;
            let db = open_sled(&dir.join("store"));
            let (mut rewritten, mut compact_bytes, mut positional_bytes) = (0, 0, 0);
            for kv in db.scan_prefix(codec::RECORD) {
                let (k, v) = kv.unwrap();
                let r = codec::decode_record(&v).unwrap();
                let positional = codec::encode(&r);
                assert_ne!(positional, v.to_vec(), "records are written compact");
                assert_eq!(codec::decode_record(&positional).unwrap(), r);
                (compact_bytes, positional_bytes) =
                    (compact_bytes + v.len(), positional_bytes + positional.len());
                db.insert(k, positional).unwrap();
                rewritten += 1;
            }
            assert!(rewritten > 20, "the workload made records");
            // The saving depends on the workload's mix of kinds and edits
            // (about a fifth here); it must be there.
            assert!(
                compact_bytes * 100 < positional_bytes * 85,
                "compact {compact_bytes} bytes, positional {positional_bytes}"
            );
            db.insert(codec::META_FORMAT, &codec::STORE_FORMAT_4.to_be_bytes())
                .unwrap();
            db.flush().unwrap();
        })
        .await;
    assert_eq!(snapshot(&s).await, recs);
    check_totals_and_figures(&s, &tree, &recs, &ranges, "format 4").await;
    for _ in 0..60 {
        w.step(&s).await;
    }
    let recs = snapshot(&s).await;
    check_totals_and_figures(&s, &tree, &recs, &ranges, "format 4, written on").await;
    let s = restarted_at_the_current_format(s).await;
    assert_eq!(snapshot(&s).await, recs);
}

// ---------------------------------------------------------------------------
// Download names
// ---------------------------------------------------------------------------

/// An org code may be any 1..64 characters without control characters
/// (§4), such as Chinese or a quote. The download's `Content-Disposition`
/// must still be one well-formed header that clients can read: visible
/// ASCII, with the file name quoted (RFC 6266; a non-ASCII name goes in
/// `filename*=UTF-8''…`).
#[tokio::test]
async fn export_file_names_are_well_formed_for_any_org_code() {
    let s = Server::empty().await;
    s.import(&json!([
        {"code": "迎泽区", "name": "迎泽区", "type": "district", "parent": null},
        {"code": "a\"b;c", "name": "柳巷", "type": "street", "parent": "迎泽区"},
    ]))
    .await;
    for path in [
        "/v1/exports/lecture.csv?org=%E8%BF%8E%E6%B3%BD%E5%8C%BA",
        "/v1/exports/totals.xlsx?org=%E8%BF%8E%E6%B3%BD%E5%8C%BA",
        "/v1/exports/lecture.csv?org=a%22b%3Bc",
        "/v1/exports/totals.csv?org=a%22b%3Bc",
    ] {
        let r = s.get(path, &s.admin).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        let raw = r
            .headers
            .get("content-disposition")
            .expect("content-disposition");
        let value = raw.to_str().unwrap_or_else(|_| {
            panic!(
                "{path}: Content-Disposition is not visible ASCII: {:?}",
                String::from_utf8_lossy(raw.as_bytes())
            )
        });
        // `filename="<quoted-string>"`, then nothing or more parameters.
        let rest = value
            .strip_prefix("attachment; filename=\"")
            .unwrap_or_else(|| panic!("{path}: {value}"));
        let (mut name, mut after) = (String::new(), None);
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => name.extend(chars.next().map(|(_, c)| c)),
                '"' => {
                    after = Some(&rest[i + 1..]);
                    break;
                }
                c => name.push(c),
            }
        }
        let after = after.unwrap_or_else(|| panic!("{path}: unterminated file name: {value}"));
        assert!(
            (name.ends_with(".csv") || name.ends_with(".xlsx"))
                && (after.is_empty() || after.starts_with(';')),
            "{path}: the quoted file name is cut short: {value}"
        );
    }
}
