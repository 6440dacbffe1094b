//! The paragraph of an annual report, in Chinese and in English, worded
//! for the unit it is about, after the district's own report (迎泽区
//! 2020年度法治政府建设情况报告, part 二(四)):
//!
//! > 深入社区、农村开展法律大讲堂活动近百场 … 首批选聘“法律明白人”113名,
//! > 覆盖所有社区(村)。进一步加强法治乡村建设,3个社区(村)被评为省级示范,
//! > 5个社区(村)被评为市级示范。
//!
//! - Grassroots units are called what they are: a street of communities
//!   says 社区 (never 农村, 村 or 法治乡村), a town of villages 村, a unit
//!   with both 社区(村), as the district's report does.
//! - A community or village reporting on itself names itself and says
//!   nothing of coverage (no "覆盖1个社区中的1个").
//! - A year with nothing recorded says so in one sentence; a figure of
//!   zero is said in words ("未登记法律讲座", "尚未建有"), never as "0场".
//! - Topics are named from the vocabulary ([`crate::topics`]) only: free
//!   text on records may be misspelt, and a report is filed.
//!
//! The sentences come in [`ReportParts`], by the section of a work report
//! they belong in, so a document can put each under its heading and the
//! paragraph is their concatenation.

use super::{AnnualReport, AppointedFigures};
use crate::topics;
use crate::wire::{CornerTotals, SiteTotals, UnitType};

/// Topics a paragraph names at most.
const TOPICS_NAMED_MAX: usize = 3;

/// The paragraph, by the part of a work report each sentence belongs in;
/// an empty string where there is nothing to say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportParts {
    /// Lectures: how many, where, on what; or that nothing was recorded.
    pub activities: String,
    /// Legal library corners and 法律明白人.
    pub positions: String,
    /// Demonstration sites.
    pub awards: String,
    /// Open conflicts: the figures may still change.
    pub caveat: String,
}

impl ReportParts {
    /// The non-empty parts joined by `sep`.
    pub fn paragraph(&self, sep: &str) -> String {
        [
            &self.activities,
            &self.positions,
            &self.awards,
            &self.caveat,
        ]
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(sep)
    }
}

/// What the grassroots units of a subtree are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Places {
    Communities,
    Villages,
    Both,
}

impl Places {
    fn of(r: &AnnualReport) -> Places {
        match (r.communities, r.villages) {
            (_, 0) => Places::Communities,
            (0, _) => Places::Villages,
            _ => Places::Both,
        }
    }

    /// 社区 / 村 / 社区(村): "N个…".
    fn zh(self) -> &'static str {
        match self {
            Places::Communities => "社区",
            Places::Villages => "村",
            Places::Both => "社区(村)",
        }
    }

    /// Where lectures went: "深入…开展".
    fn zh_into(self) -> &'static str {
        match self {
            Places::Communities => "深入社区",
            Places::Villages => "深入农村",
            Places::Both => "深入社区、农村",
        }
    }

    /// Whose corners: "…法治图书角实现全覆盖".
    fn zh_corners(self) -> &'static str {
        match self {
            Places::Communities => "社区",
            Places::Villages => "村级",
            Places::Both => "村居",
        }
    }

    /// The campaign demonstration sites belong to.
    fn zh_campaign(self) -> &'static str {
        match self {
            Places::Communities => "深入推进民主法治示范社区创建",
            Places::Villages | Places::Both => "进一步加强法治乡村建设",
        }
    }

    fn en(self, n: u64) -> &'static str {
        match (self, n == 1) {
            (Places::Communities, true) => "community",
            (Places::Communities, false) => "communities",
            (Places::Villages, true) => "village",
            (Places::Villages, false) => "villages",
            (Places::Both, true) => "community or village",
            (Places::Both, false) => "communities and villages",
        }
    }
}

/// What the grassroots units of `r`'s subtree are called in Chinese:
/// 社区, 村 or 社区(村).
pub fn grassroots_zh(r: &AnnualReport) -> &'static str {
    Places::of(r).zh()
}

/// What `n` grassroots units of `r`'s subtree are called in English:
/// "communities", "village", "communities and villages"…
pub fn grassroots_en(r: &AnnualReport, n: u64) -> &'static str {
    Places::of(r).en(n)
}

/// What the whole of a unit is called: "全区共举办…".
fn zh_whole(t: UnitType) -> &'static str {
    match t {
        UnitType::District => "全区",
        UnitType::Street => "全街道",
        UnitType::Town => "全镇",
        UnitType::Community => "本社区",
        UnitType::Village => "本村",
    }
}

/// "近百场" style wording a report uses for a round-ish count.
fn approx_zh(n: u64) -> Option<&'static str> {
    match n {
        90..=99 => Some("近百"),
        100..=199 => Some("百余"),
        _ => None,
    }
}

/// `n` and the noun, singular or plural: "1 lecture", "2 lectures".
fn count_en(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// "all 14" / "both" (of the units just named).
fn all_en(n: u64) -> String {
    if n == 2 {
        "both".to_string()
    } else {
        format!("all {n}")
    }
}

/// "a、b和c" / "a, b and c".
fn list(items: &[&str], sep: &str, last: &str) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., tail] => format!("{}{last}{tail}", init.join(sep)),
    }
}

fn percent(c: &CornerTotals) -> String {
    let p = c.coverage * 100.0;
    if (p - p.round()).abs() < 0.005 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

fn site_levels(s: &SiteTotals) -> [(u64, &'static str, &'static str); 4] {
    [
        (s.national, "国家级", "national"),
        (s.provincial, "省级", "provincial"),
        (s.municipal, "市级", "municipal"),
        (s.district, "区级", "district"),
    ]
}

/// Levels with awards, in order, with their counts.
fn awarded(s: &SiteTotals) -> Vec<(u64, &'static str, &'static str)> {
    site_levels(s)
        .into_iter()
        .filter(|(n, _, _)| *n > 0)
        .collect()
}

/// The vocabulary's topics among the report's top topics, most lectures
/// first, in Chinese and in English.
fn named_topics(r: &AnnualReport) -> Vec<&'static topics::Topic> {
    r.top_topics
        .iter()
        .filter_map(|t| t.topic.as_deref().and_then(topics::canonical))
        .take(TOPICS_NAMED_MAX)
        .collect()
}

fn appointed(r: &AnnualReport) -> Option<&AppointedFigures> {
    r.legal_understanders.as_ref().filter(|u| u.appointed > 0)
}

/// Nothing to report: no lectures, no active corners, no awards, no one
/// appointed.
fn nothing_recorded(r: &AnnualReport) -> bool {
    r.lectures.count == 0
        && r.library_corners.active == 0
        && awarded(&r.demo_sites).is_empty()
        && appointed(r).is_none()
}

/// Whether the report is about one community or village itself.
fn about_itself(r: &AnnualReport) -> bool {
    r.org_type.is_grassroots()
}

/// The paragraph in Chinese.
pub fn parts_zh(r: &AnnualReport) -> ReportParts {
    let caveat = if r.conflicts_open > 0 {
        format!(
            "(另有{}处数据冲突待核实,以上数字可能调整。)",
            r.conflicts_open
        )
    } else {
        String::new()
    };
    if nothing_recorded(r) {
        return ReportParts {
            activities: format!(
                "{}年,{}暂无法治宣传教育工作记录,未登记法律讲座、法治图书角和法治示范创建情况。",
                r.year, r.org.name
            ),
            caveat,
            ..ReportParts::default()
        };
    }
    let places = Places::of(r);
    ReportParts {
        activities: activities_zh(r, places),
        positions: corners_zh(r, places) + &understanders_zh(r, places),
        awards: awards_zh(r, places),
        caveat,
    }
}

fn activities_zh(r: &AnnualReport, places: Places) -> String {
    let l = &r.lectures;
    let mut out = format!("{}年,{}", r.year, r.org.name);
    if l.count == 0 {
        out += "未登记法律讲座。";
        return out;
    }
    if l.in_grassroots > 0 {
        let times = match approx_zh(l.in_grassroots) {
            Some(a) => format!("{a}场({}场)", l.in_grassroots),
            None => format!("{}场", l.in_grassroots),
        };
        if !about_itself(r) {
            out += places.zh_into();
        }
        out += &format!("开展法律大讲堂活动{times}");
        if l.attendees_in_grassroots > 0 {
            out += &format!(",参加群众{}人次", l.attendees_in_grassroots);
        }
        if !about_itself(r) {
            let (units, reached) = (l.grassroots_units, l.grassroots_units_reached);
            out += &match (units, reached == units) {
                (1, _) => format!(",覆盖所辖{}", places.zh()),
                (_, true) => format!(",覆盖全部{units}个{}", places.zh()),
                (_, false) => format!(",覆盖{units}个{}中的{reached}个", places.zh()),
            };
        }
        if l.count > l.in_grassroots {
            out += &format!(",{}共举办法律讲座{}场", zh_whole(r.org_type), l.count);
            if l.attendees > 0 {
                out += &format!("、{}人次", l.attendees);
            }
        }
    } else {
        out += &format!("共举办法律讲座{}场", l.count);
        if l.attendees > 0 {
            out += &format!(",参加群众{}人次", l.attendees);
        }
        if l.grassroots_units > 0 {
            out += &format!(",所辖{}尚未开展法律大讲堂活动", places.zh());
        }
    }
    let named: Vec<&str> = named_topics(r).iter().map(|t| t.name).collect();
    if !named.is_empty() {
        out += &format!(",宣讲内容以{}为重点", list(&named, "、", "和"));
    }
    out += "。";
    out
}

fn corners_zh(r: &AnnualReport, places: Places) -> String {
    let c = &r.library_corners;
    let p = places.zh();
    if about_itself(r) {
        return if c.active > 0 {
            format!("{}建有法治图书角(在用{}个)。", r.org.name, c.active)
        } else {
            format!("{}尚未建有在用的法治图书角。", r.org.name)
        };
    }
    match (c.units_total, c.units_covered) {
        (0, _) if c.active > 0 => format!("建有在用的法治图书角{}个。", c.active),
        (0, _) => String::new(),
        (1, 1) => format!("所辖{p}建有法治图书角(在用{}个)。", c.active),
        (1, _) => format!("所辖{p}尚未建有在用的法治图书角。"),
        (total, covered) if covered == total => format!(
            "{}法治图书角实现全覆盖,{total}个{p}均建有法治图书角(在用{}个)。",
            places.zh_corners(),
            c.active
        ),
        (total, 0) => format!("{total}个{p}尚未建有在用的法治图书角。"),
        (total, covered) => format!(
            "{total}个{p}中{covered}个建有在用的法治图书角,覆盖率{},尚有{}个待建。",
            percent(c),
            total - covered
        ),
    }
}

fn understanders_zh(r: &AnnualReport, places: Places) -> String {
    let Some(u) = appointed(r) else {
        return String::new();
    };
    if about_itself(r) {
        return format!("{}选聘“法律明白人”{}名。", r.org.name, u.appointed);
    }
    let p = places.zh();
    let coverage = match (u.units_total, u.units_covered) {
        (0, _) => String::new(),
        // Appointed in the year, but none serving at its end.
        (_, 0) if u.appointed == 1 => ",年末已离任".to_string(),
        (_, 0) => ",年末均已离任".to_string(),
        (total, covered) if covered == total => format!(",覆盖所有{p}"),
        (total, covered) => format!(",覆盖{total}个{p}中的{covered}个"),
    };
    format!(
        "实施“法律明白人”培养工程,选聘“法律明白人”{}名{coverage}。",
        u.appointed
    )
}

fn awards_zh(r: &AnnualReport, places: Places) -> String {
    let levels = awarded(&r.demo_sites);
    if levels.is_empty() {
        return if about_itself(r) {
            format!("本年度{}暂未获评法治示范。", r.org.name)
        } else {
            format!("本年度暂无{}获评法治示范。", places.zh())
        };
    }
    let awards: Vec<String> = if about_itself(r) {
        let names: Vec<&str> = levels.iter().map(|(_, zh, _)| *zh).collect();
        vec![format!("{}被评为{}示范", r.org.name, names.join("、"))]
    } else {
        levels
            .iter()
            .map(|(n, zh, _)| format!("{n}个{}被评为{zh}示范", places.zh()))
            .collect()
    };
    format!("{},{}。", places.zh_campaign(), awards.join(","))
}

/// The paragraph in English.
pub fn parts_en(r: &AnnualReport) -> ReportParts {
    let caveat = match r.conflicts_open {
        0 => String::new(),
        1 => "(1 data conflict is still open; figures may change.)".to_string(),
        n => format!("({n} data conflicts are still open; figures may change.)"),
    };
    if nothing_recorded(r) {
        return ReportParts {
            activities: format!(
                "Nothing was recorded for {} in {}: no legal lectures, library corners or demonstration sites.",
                r.org.name, r.year
            ),
            caveat,
            ..ReportParts::default()
        };
    }
    let places = Places::of(r);
    let positions = [corners_en(r, places), understanders_en(r, places)]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    ReportParts {
        activities: activities_en(r, places),
        positions,
        awards: awards_en(r),
        caveat,
    }
}

fn activities_en(r: &AnnualReport, places: Places) -> String {
    let l = &r.lectures;
    let mut out = format!("In {}, {} ", r.year, r.org.name);
    if l.count == 0 {
        out += "recorded no legal lectures.";
        return out;
    }
    let units = l.grassroots_units;
    if l.in_grassroots > 0 {
        out += &format!(
            "held {}",
            count_en(l.in_grassroots, "legal lecture", "legal lectures")
        );
        if !about_itself(r) {
            out += &format!(" in its {}", places.en(units));
        }
        if l.attendees_in_grassroots > 0 {
            out += &format!(
                ", with {}",
                count_en(l.attendees_in_grassroots, "attendance", "attendances")
            );
        }
        if !about_itself(r) && units > 1 {
            let reached = l.grassroots_units_reached;
            out += &if reached == units {
                format!(", reaching {} of them", all_en(units))
            } else {
                format!(", reaching {reached} of the {units}")
            };
        }
        if l.count > l.in_grassroots {
            out += &format!(" ({} in all", count_en(l.count, "lecture", "lectures"));
            if l.attendees > 0 {
                out += &format!(", {}", count_en(l.attendees, "attendance", "attendances"));
            }
            out += ")";
        }
    } else {
        out += &format!(
            "held {}",
            count_en(l.count, "legal lecture", "legal lectures")
        );
        if l.attendees > 0 {
            out += &format!(
                ", with {}",
                count_en(l.attendees, "attendance", "attendances")
            );
        }
        if units > 0 {
            out += &format!(", none of them in its {}", places.en(units));
        }
    }
    let named: Vec<&str> = named_topics(r).iter().map(|t| t.en).collect();
    if !named.is_empty() {
        out += &format!("; main topics: {}", list(&named, ", ", " and "));
    }
    out += ".";
    out
}

fn corners_en(r: &AnnualReport, places: Places) -> String {
    let c = &r.library_corners;
    if about_itself(r) {
        return if c.active > 0 {
            format!(
                "{} has {}.",
                r.org.name,
                count_en(
                    c.active,
                    "active legal library corner",
                    "active legal library corners"
                )
            )
        } else {
            format!("{} has no active legal library corner yet.", r.org.name)
        };
    }
    let p = places.en(c.units_total);
    match (c.units_total, c.units_covered) {
        (0, _) if c.active > 0 => format!(
            "{} active.",
            count_en(c.active, "legal library corner is", "legal library corners are")
        ),
        (0, _) => String::new(),
        (1, 1) => format!(
            "Its {p} has a legal library corner ({} active).",
            c.active
        ),
        (1, _) => format!("Its {p} has no active legal library corner yet."),
        (total, covered) if covered == total => {
            let all = all_en(total);
            format!(
                "{}{} of its {p} have a legal library corner ({} active).",
                all[..1].to_uppercase(),
                &all[1..],
                c.active
            )
        }
        (total, 0) => format!("None of its {total} {p} has an active legal library corner yet."),
        (total, covered) => format!(
            "{covered} of its {total} {p} {} an active legal library corner ({}); {} still to build.",
            if covered == 1 { "has" } else { "have" },
            percent(c),
            total - covered
        ),
    }
}

fn understanders_en(r: &AnnualReport, places: Places) -> String {
    let Some(u) = appointed(r) else {
        return String::new();
    };
    let who = count_en(u.appointed, "legal understander", "legal understanders");
    if about_itself(r) {
        return format!("{} has appointed {who}.", r.org.name);
    }
    let p = places.en(u.units_total);
    let coverage = match (u.units_total, u.units_covered) {
        (0, _) => String::new(),
        (_, 0) => ", none of them serving at the year's end".to_string(),
        (1, 1) => format!(", covering its {p}"),
        (total, covered) if covered == total => format!(", covering {} {p}", all_en(total)),
        (total, covered) => format!(", covering {covered} of its {total} {p}"),
    };
    format!(
        "{who} {} appointed{coverage}.",
        if u.appointed == 1 { "was" } else { "were" }
    )
}

fn awards_en(r: &AnnualReport) -> String {
    let levels = awarded(&r.demo_sites);
    if levels.is_empty() {
        return "No demonstration site was awarded this year.".to_string();
    }
    let awards: Vec<String> = levels
        .iter()
        .map(|(n, _, en)| format!("{n} {en}"))
        .collect();
    format!("Demonstration sites awarded: {}.", awards.join(", "))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::{json, Value};
    use uuid::Uuid;

    use super::*;
    use crate::hlc::Hlc;
    use crate::merge::{RecordState, Register};
    use crate::org::OrgTree;
    use crate::report::{annual_report, year_figures};
    use crate::schema::Kind;
    use crate::totals::Aggregates;
    use crate::wire::OrgUnit;

    /// ```text
    /// 迎泽区 ─┬─ 柳巷街道 ─┬─ 柳巷第01社区
    ///         │            └─ 柳巷第02社区
    ///         └─ 郝庄镇 ───┬─ 郝庄社区
    ///                      ├─ 松庄村
    ///                      └─ 双塔村
    /// ```
    fn tree() -> OrgTree {
        let unit = |code: &str, name: &str, t: UnitType, parent: Option<&str>| OrgUnit {
            code: code.into(),
            name: name.into(),
            unit_type: t,
            parent: parent.map(Into::into),
        };
        use UnitType::*;
        OrgTree::from_units([
            unit("d", "迎泽区", District, None),
            unit("s", "柳巷街道", Street, Some("d")),
            unit("c1", "柳巷第01社区", Community, Some("s")),
            unit("c2", "柳巷第02社区", Community, Some("s")),
            unit("t", "郝庄镇", Town, Some("d")),
            unit("tc", "郝庄社区", Community, Some("t")),
            unit("v1", "松庄村", Village, Some("t")),
            unit("v2", "双塔村", Village, Some("t")),
        ])
    }

    fn record(i: u128, kind: Kind, fields: Value) -> RecordState {
        let reg = |value: &Value| Register {
            value: value.clone(),
            hlc: Hlc::new(1_000, 0, Uuid::nil()),
            seq: i as u64,
        };
        let fields: BTreeMap<String, Register> = fields
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), reg(v)))
            .collect();
        RecordState {
            id: Uuid::from_u128(i),
            kind,
            seq: i as u64,
            fields,
            deleted: None,
            open_conflicts: 0,
            ever: Vec::new(),
        }
    }

    /// What a unit holds: `(unit, lectures held in 2020 with 30 attendees
    /// each, topics of each)`, active corners, awarded sites.
    struct Shape {
        lectures: &'static [(&'static str, u32, &'static [&'static str])],
        corners: &'static [&'static str],
        sites: &'static [(&'static str, &'static str)],
    }

    fn report(org: &str, shape: &Shape) -> AnnualReport {
        let tree = tree();
        let mut agg = Aggregates::default();
        let mut i = 0;
        let mut add = |r: RecordState| agg.apply(None, &r);
        for (unit, n, topics) in shape.lectures {
            for _ in 0..*n {
                i += 1;
                add(record(
                    i,
                    Kind::Lecture,
                    json!({"org_unit": unit, "held_on": "2020-06-01", "title": "讲座",
                           "attendees": 30, "topics": topics}),
                ));
            }
        }
        for unit in shape.corners {
            i += 1;
            add(record(
                i,
                Kind::LibraryCorner,
                json!({"org_unit": unit, "name": "图书角", "status": "active"}),
            ));
        }
        for (unit, level) in shape.sites {
            i += 1;
            add(record(
                i,
                Kind::DemoSite,
                json!({"org_unit": unit, "level": level, "status": "awarded", "year": 2020}),
            ));
        }
        annual_report(&year_figures(&tree, &agg, org, 2020).expect("a unit of the tree"))
    }

    const BUSY: Shape = Shape {
        lectures: &[
            ("c1", 3, &["反诈", "电信网络诈骗"]),
            ("c2", 2, &["《民法典》"]),
            ("tc", 1, &["宪法", "平安建设"]),
            ("v1", 1, &["民法典宣传", "土地承包"]),
            ("s", 1, &[]),
        ],
        corners: &["c1", "c2", "tc", "v1"],
        sites: &[
            ("c1", "provincial"),
            ("v1", "provincial"),
            ("v2", "municipal"),
        ],
    };

    const EMPTY: Shape = Shape {
        lectures: &[],
        corners: &[],
        sites: &[],
    };

    /// A zero quoted as a figure: "0场", "0个", "0人次", "0 lectures"…
    /// (a 0 that ends a number: not the 0 of "10场").
    fn zero_figure(text: &str) -> Option<String> {
        let chars: Vec<char> = text.chars().collect();
        (0..chars.len())
            .filter(|&i| chars[i] == '0')
            .filter(|&i| i == 0 || !chars[i - 1].is_ascii_digit())
            .filter(|&i| chars.get(i + 1).is_none_or(|c| !c.is_ascii_digit()))
            .map(|i| {
                chars[i.saturating_sub(6)..(i + 4).min(chars.len())]
                    .iter()
                    .collect()
            })
            .find(|around: &String| !around.contains("2020"))
    }

    #[track_caller]
    fn check(org: &str, shape: &Shape, zh_has: &[&str], zh_lacks: &[&str], en_has: &[&str]) {
        let r = report(org, shape);
        let (zh, en) = (&r.text_zh, &r.text_en);
        for needle in zh_has {
            assert!(zh.contains(needle), "{org}: {needle:?} not in {zh}");
        }
        for needle in zh_lacks {
            assert!(!zh.contains(needle), "{org}: {needle:?} in {zh}");
        }
        for needle in en_has {
            assert!(en.contains(needle), "{org}: {needle:?} not in {en}");
        }
        assert_eq!(zero_figure(zh), None, "{org}: a zero figure in {zh}");
        assert!(!en.contains(" 1 legal lectures"), "{org}: {en}");
        assert!(!en.contains(" 1 attendances"), "{org}: {en}");
        assert_eq!(zh, &parts_zh(&r).paragraph(""));
        assert_eq!(en, &parts_en(&r).paragraph(" "));
    }

    #[test]
    fn the_paragraph_is_worded_for_the_unit() {
        // The district: communities and villages, as the seed report says.
        check(
            "d",
            &BUSY,
            &[
                "2020年,迎泽区深入社区、农村开展法律大讲堂活动7场,参加群众210人次",
                "覆盖5个社区(村)中的4个",
                "全区共举办法律讲座8场、240人次",
                "宣讲内容以反电信网络诈骗、民法典和土地承包为重点",
                "5个社区(村)中4个建有在用的法治图书角,覆盖率80%,尚有1个待建。",
                "进一步加强法治乡村建设,2个社区(村)被评为省级示范,1个社区(村)被评为市级示范。",
            ],
            &["反诈", "《", "平安建设", "本年度暂无"],
            &[
                "held 7 legal lectures in its communities and villages, with 210 attendances, reaching 4 of the 5 (8 lectures in all, 240 attendances)",
                "main topics: Countering telecom fraud, Civil Code and Land contracting",
                "Demonstration sites awarded: 2 provincial, 1 municipal.",
            ],
        );
        // A street of communities: no 农村, no 村, no 法治乡村.
        check(
            "s",
            &BUSY,
            &[
                "柳巷街道深入社区开展法律大讲堂活动5场",
                "覆盖全部2个社区",
                "全街道共举办法律讲座6场",
                "社区法治图书角实现全覆盖,2个社区均建有法治图书角(在用2个)。",
                "深入推进民主法治示范社区创建,1个社区被评为省级示范。",
            ],
            &["村", "乡", "(村)"],
            &[
                "in its communities",
                "reaching both of them",
                "Both of its communities have a legal library corner (2 active).",
            ],
        );
        // A town with a community and villages.
        check(
            "t",
            &BUSY,
            &[
                "深入社区、农村",
                "覆盖3个社区(村)中的2个",
                "进一步加强法治乡村建设",
            ],
            &["全镇共举办"],
            &["reaching 2 of the 3"],
        );
        // A single village reports on itself: no coverage, no "1个村中".
        check(
            "v1",
            &BUSY,
            &[
                "2020年,松庄村开展法律大讲堂活动1场,参加群众30人次,宣讲内容以土地承包和民法典为重点。",
                "松庄村建有法治图书角(在用1个)。",
                "进一步加强法治乡村建设,松庄村被评为省级示范。",
            ],
            &["覆盖", "个村", "深入"],
            &[
                "In 2020, 松庄村 held 1 legal lecture, with 30 attendances;",
                "松庄村 has 1 active legal library corner.",
            ],
        );
        // A village with an award and nothing else.
        check(
            "v2",
            &BUSY,
            &[
                "双塔村未登记法律讲座。",
                "双塔村尚未建有在用的法治图书角。",
                "双塔村被评为市级示范",
            ],
            &["0场", "覆盖"],
            &[
                "双塔村 recorded no legal lectures.",
                "has no active legal library corner yet",
            ],
        );
    }

    #[test]
    fn an_empty_year_says_nothing_was_recorded() {
        for org in ["d", "s", "t", "c1", "v1"] {
            let r = report(org, &EMPTY);
            let name = tree().get(org).unwrap().name.clone();
            assert_eq!(
                r.text_zh,
                format!("2020年,{name}暂无法治宣传教育工作记录,未登记法律讲座、法治图书角和法治示范创建情况。")
            );
            assert_eq!(
                r.text_en,
                format!("Nothing was recorded for {name} in 2020: no legal lectures, library corners or demonstration sites.")
            );
            check(org, &EMPTY, &[], &["0场", "覆盖", "%"], &[]);
        }
    }

    #[test]
    fn legal_understanders_have_their_sentence() {
        let mut r = report("d", &BUSY);
        r.legal_understanders = Some(AppointedFigures {
            appointed: 113,
            units_covered: 5,
            units_total: 5,
        });
        let zh = parts_zh(&r);
        assert!(
            zh.positions
                .ends_with("实施“法律明白人”培养工程,选聘“法律明白人”113名,覆盖所有社区(村)。"),
            "{}",
            zh.positions
        );
        assert!(parts_en(&r).positions.ends_with(
            "113 legal understanders were appointed, covering all 5 communities and villages."
        ));
        // Someone appointed is something recorded.
        let mut r = report("v2", &EMPTY);
        r.legal_understanders = Some(AppointedFigures {
            appointed: 1,
            units_covered: 1,
            units_total: 1,
        });
        let zh = parts_zh(&r).paragraph("");
        assert!(zh.contains("双塔村选聘“法律明白人”1名。"), "{zh}");
        assert!(!zh.contains("暂无法治宣传教育工作记录"), "{zh}");
        assert!(parts_en(&r)
            .paragraph(" ")
            .contains("双塔村 has appointed 1 legal understander."));
    }

    #[test]
    fn zero_figures_are_found() {
        assert!(zero_figure("2020年,开展0场").is_some());
        assert!(zero_figure("2020年,开展10场、100人次").is_none());
    }
}
