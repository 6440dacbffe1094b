//! Per-unit aggregates kept alongside the records, and the totals,
//! coverage and checksum figures computed from them (contract §7).
//!
//! Every record write passes its before and after state through
//! [`Aggregates::apply`], in the same atomic store write, so totals never
//! scan records. Figures are kept per *direct* unit and summed over a
//! subtree at query time, which keeps them right when units are re-parented.
//! Stores persist the entries named by [`Aggregates::take_dirty`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::date::Date;
use crate::merge::{record_digest, RecordState};
use crate::org::OrgTree;
use crate::schema::{as_integer, Kind};
use crate::wire::{
    ChildTotals, CornerTotals, LectureTotals, OrgRef, SiteTotals, TotalsResponse,
    UnderstanderTotals,
};

/// A demonstration site's level, as an index into [`crate::schema::SITE_LEVELS`].
pub type LevelIx = u8;

/// Scalar figures of one unit (records whose *current* unit it is).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitAgg {
    /// Records in the unit, deleted ones included (checksum `count`).
    pub records: u64,
    /// XOR of their checksum terms.
    pub xor: u64,
    pub corners_active: u64,
    pub conflicts_open: u64,
    /// Awarded demonstration sites by `(year, level)`.
    pub sites: BTreeMap<(i32, LevelIx), u64>,
}

/// `(lectures, attendees)` of not-deleted lectures.
pub type LectureSum = (u64, u64);

/// `(appointed, serving)`: not-deleted legal understanders appointed on a
/// day, and those of them whose status is `serving`.
pub type UnderstanderSum = (u64, u64);

/// One persisted aggregate entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AggKey {
    Unit(String),
    /// A unit's lectures of one month (`Date::month_index`), day by day:
    /// one entry per month rather than per day, because a push touches a
    /// few months but many days, and every entry written costs.
    Month(String, i32),
    EverMax(String),
    /// A unit's lectures of one year by topic, folded by the vocabulary
    /// (lectures without topics under `""`); a lecture with several topics
    /// counts once under each.
    Topics(String, i32),
    /// A unit's legal understanders by day of appointment: one entry per
    /// unit, as a unit appoints a handful.
    Understanders(String),
}

/// The value stored under an [`AggKey`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AggValue {
    Unit(UnitAgg),
    /// `(day, sum)` for the days of the month with lectures; empty: remove.
    Month(Vec<(i32, LectureSum)>),
    EverMax(u64),
    /// `(topic, sum)`; empty: remove.
    Topics(Vec<(String, LectureSum)>),
    /// `(day, sum)` for the days with appointments; empty: remove.
    Understanders(Vec<(i32, UnderstanderSum)>),
}

/// All aggregates of a store.
#[derive(Clone, Debug, Default)]
pub struct Aggregates {
    units: HashMap<String, UnitAgg>,
    days: HashMap<String, BTreeMap<i32, LectureSum>>,
    months: HashMap<String, BTreeMap<i32, LectureSum>>,
    /// Per unit, by `(year, topic)`.
    topics: HashMap<String, BTreeMap<(i32, String), LectureSum>>,
    /// Per unit, by day of appointment.
    understanders: HashMap<String, BTreeMap<i32, UnderstanderSum>>,
    /// Highest seq of any record whose `ever` holds the unit: the checksum
    /// `seq` of a caller scoped there.
    ever_max: HashMap<String, u64>,
    /// Highest seq of any record, count and XOR of all: an admin's checksum.
    all_max: u64,
    all_count: u64,
    all_xor: u64,
    dirty: BTreeSet<AggKey>,
}

/// What one record state adds to the aggregates.
pub(crate) struct Contribution<'a> {
    pub(crate) unit: &'a str,
    digest: u64,
    conflicts: u64,
    /// `(day, attendees)` of a live lecture with a valid `held_on`.
    pub(crate) lecture: Option<(i32, u64)>,
    /// The lecture's distinct topics, folded by the vocabulary
    /// ([`crate::topics::fold`]; none: `[""]`).
    pub(crate) topics: Vec<&'a str>,
    pub(crate) corner_active: bool,
    /// `(year, level)` of an awarded demonstration site.
    pub(crate) site: Option<(i32, LevelIx)>,
    /// `(day of appointment, serving)` of a live legal understander with a
    /// valid `appointed_on`.
    pub(crate) understander: Option<(i32, bool)>,
}

pub(crate) fn contribution(r: &RecordState) -> Option<Contribution<'_>> {
    let unit = r.org_unit()?;
    let live = !r.is_deleted();
    let str_of = |f: &str| r.value(f).and_then(|v| v.as_str());
    let lecture = (live && r.kind == Kind::Lecture)
        .then(|| {
            let day = str_of("held_on").and_then(Date::parse)?;
            let attendees = r
                .value("attendees")
                .and_then(as_integer)
                .unwrap_or(0)
                .max(0) as u64;
            Some((day.0, attendees))
        })
        .flatten();
    let mut topics: Vec<&str> = match (lecture, r.value("topics")) {
        (Some(_), Some(serde_json::Value::Array(list))) => list
            .iter()
            .filter_map(|t| t.as_str())
            .map(crate::topics::fold)
            .collect(),
        _ => Vec::new(),
    };
    topics.sort_unstable();
    topics.dedup();
    if lecture.is_some() && topics.is_empty() {
        topics.push("");
    }
    let corner_active = live && r.kind == Kind::LibraryCorner && str_of("status") == Some("active");
    let site = (live && r.kind == Kind::DemoSite && str_of("status") == Some("awarded"))
        .then(|| {
            let year = r.value("year").and_then(as_integer)? as i32;
            let level = crate::schema::SITE_LEVELS
                .iter()
                .position(|l| Some(*l) == str_of("level"))? as LevelIx;
            Some((year, level))
        })
        .flatten();
    let understander = (live && r.kind == Kind::LegalUnderstander)
        .then(|| {
            let day = str_of("appointed_on").and_then(Date::parse)?;
            Some((day.0, str_of("status") == Some("serving")))
        })
        .flatten();
    Some(Contribution {
        unit,
        digest: record_digest(r.id, r.seq),
        conflicts: u64::from(r.open_conflicts),
        lecture,
        topics,
        corner_active,
        site,
        understander,
    })
}

fn add(sum: &mut LectureSum, d: (u64, u64), sign: i8) {
    if sign > 0 {
        sum.0 += d.0;
        sum.1 += d.1;
    } else {
        sum.0 = sum.0.saturating_sub(d.0);
        sum.1 = sum.1.saturating_sub(d.1);
    }
}

fn first_day_of_month(mi: i32) -> Date {
    Date::from_ymd(mi.div_euclid(12), mi.rem_euclid(12) as u32 + 1, 1).unwrap_or(Date(i32::MAX))
}

impl Aggregates {
    /// Accounts for one record changing from `before` to `after`.
    pub fn apply(&mut self, before: Option<&RecordState>, after: &RecordState) {
        if let Some(b) = before.and_then(contribution) {
            self.account(&b, -1);
            self.all_count -= 1;
            self.all_xor ^= b.digest;
        }
        if let Some(a) = contribution(after) {
            self.account(&a, 1);
            self.all_count += 1;
            self.all_xor ^= a.digest;
        }
        self.all_max = self.all_max.max(after.seq);
        for code in &after.ever {
            let m = self.ever_max.entry(code.clone()).or_default();
            if after.seq > *m {
                *m = after.seq;
                self.dirty.insert(AggKey::EverMax(code.clone()));
            }
        }
    }

    fn account(&mut self, c: &Contribution<'_>, sign: i8) {
        let unit = self.units.entry(c.unit.to_string()).or_default();
        let step = |v: &mut u64, n: u64| {
            *v = if sign > 0 {
                *v + n
            } else {
                v.saturating_sub(n)
            };
        };
        step(&mut unit.records, 1);
        unit.xor ^= c.digest;
        step(&mut unit.conflicts_open, c.conflicts);
        if c.corner_active {
            step(&mut unit.corners_active, 1);
        }
        if let Some(key) = c.site {
            let n = unit.sites.entry(key).or_default();
            step(n, 1);
            if *n == 0 {
                unit.sites.remove(&key);
            }
        }
        self.dirty.insert(AggKey::Unit(c.unit.to_string()));
        if let Some((day, attendees)) = c.lecture {
            let days = self.days.entry(c.unit.to_string()).or_default();
            let d = days.entry(day).or_default();
            add(d, (1, attendees), sign);
            if d.0 == 0 {
                days.remove(&day);
            }
            let month = Date(day).month_index();
            let months = self.months.entry(c.unit.to_string()).or_default();
            let m = months.entry(month).or_default();
            add(m, (1, attendees), sign);
            if m.0 == 0 {
                months.remove(&month);
            }
            self.dirty.insert(AggKey::Month(c.unit.to_string(), month));
            let year = Date(day).year();
            let by_topic = self.topics.entry(c.unit.to_string()).or_default();
            for t in &c.topics {
                let key = (year, (*t).to_string());
                let sum = by_topic.entry(key.clone()).or_default();
                add(sum, (1, attendees), sign);
                if sum.0 == 0 {
                    by_topic.remove(&key);
                }
            }
            self.dirty.insert(AggKey::Topics(c.unit.to_string(), year));
        }
        if let Some((day, serving)) = c.understander {
            let days = self.understanders.entry(c.unit.to_string()).or_default();
            let d = days.entry(day).or_default();
            add(d, (1, u64::from(serving)), sign);
            if d.0 == 0 {
                days.remove(&day);
            }
            self.dirty.insert(AggKey::Understanders(c.unit.to_string()));
        }
    }

    /// The entries changed since the last call, with their current values
    /// (an empty `Month` means the entry may be removed).
    pub fn take_dirty(&mut self) -> Vec<(AggKey, AggValue)> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|k| {
                let v = match &k {
                    AggKey::Unit(u) => {
                        AggValue::Unit(self.units.get(u).cloned().unwrap_or_default())
                    }
                    AggKey::Month(u, m) => AggValue::Month(
                        self.days
                            .get(u)
                            .map(|days| {
                                let (from, to) =
                                    (first_day_of_month(*m).0, first_day_of_month(*m + 1).0);
                                days.range(from..to).map(|(d, sum)| (*d, *sum)).collect()
                            })
                            .unwrap_or_default(),
                    ),
                    AggKey::EverMax(u) => {
                        AggValue::EverMax(self.ever_max.get(u).copied().unwrap_or_default())
                    }
                    AggKey::Topics(u, y) => AggValue::Topics(self.topics_of(u, *y).collect()),
                    AggKey::Understanders(u) => AggValue::Understanders(
                        self.understanders
                            .get(u)
                            .map(|days| days.iter().map(|(d, sum)| (*d, *sum)).collect())
                            .unwrap_or_default(),
                    ),
                };
                (k, v)
            })
            .collect()
    }

    /// Rebuilds from persisted entries (at start-up).
    pub fn load(&mut self, key: AggKey, value: AggValue) {
        match (key, value) {
            (AggKey::Unit(u), AggValue::Unit(agg)) => {
                self.all_count += agg.records;
                self.all_xor ^= agg.xor;
                self.units.insert(u, agg);
            }
            (AggKey::Month(u, _), AggValue::Month(days)) => {
                for (d, sum) in days.into_iter().filter(|(_, sum)| sum.0 > 0) {
                    self.days.entry(u.clone()).or_default().insert(d, sum);
                    add(
                        self.months
                            .entry(u.clone())
                            .or_default()
                            .entry(Date(d).month_index())
                            .or_default(),
                        sum,
                        1,
                    );
                }
            }
            (AggKey::EverMax(u), AggValue::EverMax(m)) => {
                self.all_max = self.all_max.max(m);
                self.ever_max.insert(u, m);
            }
            (AggKey::Topics(u, y), AggValue::Topics(list)) => {
                let by_topic = self.topics.entry(u).or_default();
                for (t, sum) in list.into_iter().filter(|(_, sum)| sum.0 > 0) {
                    by_topic.insert((y, t), sum);
                }
            }
            (AggKey::Understanders(u), AggValue::Understanders(list)) => {
                let days = self.understanders.entry(u).or_default();
                days.extend(list.into_iter().filter(|(_, sum)| sum.0 > 0));
            }
            _ => {}
        }
    }

    /// A copy of just the entries that `changes` (record states before and
    /// after) touch: their units' and the `ever_max` of every unit in their
    /// `ever`, with the store-wide checksum terms. Applying `changes` to it
    /// and taking its dirty entries gives the entries applying them here
    /// would, without touching `self` (a writer whose write may still fail,
    /// while others read `self`).
    pub fn scratch_for(&self, changes: &[(Option<RecordState>, RecordState)]) -> Aggregates {
        let mut units: BTreeSet<&str> = BTreeSet::new();
        for (before, after) in changes {
            units.extend(before.as_ref().and_then(RecordState::org_unit));
            units.extend(after.org_unit());
            units.extend(after.ever.iter().map(String::as_str));
        }
        let mut out = Aggregates {
            all_max: self.all_max,
            all_count: self.all_count,
            all_xor: self.all_xor,
            ..Aggregates::default()
        };
        for u in units {
            if let Some(v) = self.units.get(u) {
                out.units.insert(u.to_string(), v.clone());
            }
            if let Some(v) = self.days.get(u) {
                out.days.insert(u.to_string(), v.clone());
            }
            if let Some(v) = self.months.get(u) {
                out.months.insert(u.to_string(), v.clone());
            }
            if let Some(v) = self.topics.get(u) {
                out.topics.insert(u.to_string(), v.clone());
            }
            if let Some(v) = self.understanders.get(u) {
                out.understanders.insert(u.to_string(), v.clone());
            }
            if let Some(v) = self.ever_max.get(u) {
                out.ever_max.insert(u.to_string(), *v);
            }
        }
        out
    }

    /// Replaces one persisted entry with its newer value, `None`: removed
    /// (another server instance wrote it). Loading the same value again
    /// changes nothing, so a reader may refresh as often as it likes.
    pub fn replace(&mut self, key: AggKey, value: Option<AggValue>) {
        match &key {
            AggKey::Unit(u) => {
                if let Some(old) = self.units.remove(u) {
                    self.all_count -= old.records;
                    self.all_xor ^= old.xor;
                }
            }
            AggKey::Month(u, m) => {
                let (from, to) = (first_day_of_month(*m).0, first_day_of_month(*m + 1).0);
                if let Some(days) = self.days.get_mut(u) {
                    let gone: Vec<i32> = days.range(from..to).map(|(d, _)| *d).collect();
                    for d in gone {
                        days.remove(&d);
                    }
                }
                if let Some(months) = self.months.get_mut(u) {
                    months.remove(m);
                }
            }
            // Never decreases: the newer value is at least the old one.
            AggKey::EverMax(_) => {}
            AggKey::Topics(u, y) => {
                if let Some(by_topic) = self.topics.get_mut(u) {
                    let gone: Vec<(i32, String)> = by_topic
                        .range((*y, String::new())..(*y + 1, String::new()))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in gone {
                        by_topic.remove(&k);
                    }
                }
            }
            AggKey::Understanders(u) => {
                self.understanders.remove(u);
            }
        }
        self.dirty.remove(&key);
        if let Some(v) = value {
            self.load(key, v);
        }
    }

    /// Notes the highest record seq (a store whose records all lie outside
    /// any unit's `ever` still knows it).
    pub fn note_max_seq(&mut self, seq: u64) {
        self.all_max = self.all_max.max(seq);
    }

    pub fn unit(&self, code: &str) -> Option<&UnitAgg> {
        self.units.get(code)
    }

    /// Years in which a unit held lectures.
    pub fn lecture_years(&self, unit: &str) -> BTreeSet<i32> {
        self.months
            .get(unit)
            .into_iter()
            .flat_map(|m| m.keys().map(|mi| mi.div_euclid(12)))
            .collect()
    }

    /// Years in which a unit appointed legal understanders.
    pub fn understander_years(&self, unit: &str) -> BTreeSet<i32> {
        self.understanders
            .get(unit)
            .into_iter()
            .flat_map(|days| days.keys().map(|d| Date(*d).year()))
            .collect()
    }

    /// A unit's legal understanders: `appointed` with `appointed_on` in
    /// `[from, to]`, `serving` of those appointed by `to` (open where
    /// `None`).
    pub fn understanders(
        &self,
        unit: &str,
        from: Option<Date>,
        to: Option<Date>,
    ) -> UnderstanderSum {
        let mut sum = (0, 0);
        let hi = to.map_or(i32::MAX, |d| d.0);
        for (day, (appointed, serving)) in self.understanders.get(unit).into_iter().flatten() {
            if *day > hi {
                break;
            }
            if from.is_none_or(|f| *day >= f.0) {
                sum.0 += appointed;
            }
            sum.1 += serving;
        }
        sum
    }

    /// A unit's lectures of `year` by topic (`""`: without topics).
    pub fn topics_of<'a>(
        &'a self,
        unit: &str,
        year: i32,
    ) -> impl Iterator<Item = (String, LectureSum)> + 'a {
        self.topics.get(unit).into_iter().flat_map(move |m| {
            m.range((year, String::new())..(year + 1, String::new()))
                .map(|((_, t), sum)| (t.clone(), *sum))
        })
    }

    /// `(seq, count, xor)` for an admin (everything).
    pub fn checksum_all(&self) -> (u64, u64, u64) {
        (self.all_max, self.all_count, self.all_xor)
    }

    /// `(seq, count, xor)` for a caller scoped at `root`.
    pub fn checksum_scope(&self, tree: &OrgTree, root: &str) -> (u64, u64, u64) {
        let (mut count, mut xor) = (0, 0);
        for u in tree.subtree(root) {
            if let Some(a) = self.units.get(&u.code) {
                count += a.records;
                xor ^= a.xor;
            }
        }
        (self.ever_max.get(root).copied().unwrap_or(0), count, xor)
    }

    /// Lectures of one unit with `held_on` in `[from, to]` (open where `None`).
    pub fn lectures(&self, unit: &str, from: Option<Date>, to: Option<Date>) -> LectureSum {
        let mut sum = (0, 0);
        let (Some(days), Some(months)) = (self.days.get(unit), self.months.get(unit)) else {
            return sum;
        };
        let lo = from.unwrap_or(Date(i32::MIN));
        let hi = to.unwrap_or(Date(i32::MAX));
        if lo > hi {
            return sum;
        }
        // Whole months inside the range come from month buckets; the ragged
        // ends from day buckets.
        let first_full = match from {
            None => i32::MIN,
            Some(f) if f.ymd().2 == 1 => f.month_index(),
            Some(f) => f.month_index() + 1,
        };
        let last_full = match to {
            None => i32::MAX,
            Some(t) if t.add_days(1).ymd().2 == 1 => t.month_index(),
            Some(t) => t.month_index() - 1,
        };
        if first_full > last_full {
            for (_, s) in days.range(lo.0..=hi.0) {
                add(&mut sum, *s, 1);
            }
            return sum;
        }
        for (_, s) in months.range(first_full..=last_full) {
            add(&mut sum, *s, 1);
        }
        if from.is_some() {
            for (_, s) in days.range(lo.0..first_day_of_month(first_full).0) {
                add(&mut sum, *s, 1);
            }
        }
        if to.is_some() {
            let tail = first_day_of_month(last_full + 1);
            if tail <= hi {
                for (_, s) in days.range(tail.0..=hi.0) {
                    add(&mut sum, *s, 1);
                }
            }
        }
        sum
    }
}

/// The figures of one subtree.
#[derive(Clone, Debug, Default, PartialEq)]
struct Figures {
    lectures: LectureTotals,
    corners: CornerTotals,
    sites: SiteTotals,
    understanders: UnderstanderTotals,
    conflicts_open: u64,
}

impl Figures {
    fn absorb(&mut self, o: &Figures) {
        self.lectures.count += o.lectures.count;
        self.lectures.attendees += o.lectures.attendees;
        self.lectures.units_covered += o.lectures.units_covered;
        self.corners.active += o.corners.active;
        self.corners.units_covered += o.corners.units_covered;
        self.corners.units_total += o.corners.units_total;
        self.sites.national += o.sites.national;
        self.sites.provincial += o.sites.provincial;
        self.sites.municipal += o.sites.municipal;
        self.sites.district += o.sites.district;
        self.understanders.appointed += o.understanders.appointed;
        self.understanders.serving += o.understanders.serving;
        self.understanders.units_covered += o.understanders.units_covered;
        self.understanders.units_total += o.understanders.units_total;
        self.conflicts_open += o.conflicts_open;
    }

    fn finish(mut self) -> Figures {
        self.corners.coverage = coverage(self.corners.units_covered, self.corners.units_total);
        self.understanders.coverage = coverage(
            self.understanders.units_covered,
            self.understanders.units_total,
        );
        self
    }
}

/// `covered / total` to four decimals, as in the contract's example
/// (0.9833); 0 without units.
pub(crate) fn coverage(covered: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        (covered as f64 / total as f64 * 10_000.0).round() / 10_000.0
    }
}

/// Totals for the subtree of `org` (which must exist in `tree`), lectures in
/// `[from, to]`, demonstration sites in the years of that range, legal
/// understanders appointed in it and serving at its end.
pub fn totals(
    tree: &OrgTree,
    agg: &Aggregates,
    org: &str,
    from: Option<Date>,
    to: Option<Date>,
) -> Option<TotalsResponse> {
    let unit = tree.get(org)?;
    let years = from.map_or(i32::MIN, Date::year)..=to.map_or(i32::MAX, Date::year);
    let own = |code: &str| -> Figures {
        let mut f = Figures::default();
        let grassroots = tree.get(code).is_some_and(|u| u.unit_type.is_grassroots());
        let (count, attendees) = agg.lectures(code, from, to);
        f.lectures.count = count;
        f.lectures.attendees = attendees;
        f.lectures.units_covered = u64::from(grassroots && count > 0);
        f.corners.units_total = u64::from(grassroots);
        let (appointed, serving) = agg.understanders(code, from, to);
        f.understanders = UnderstanderTotals {
            appointed,
            serving,
            units_covered: u64::from(grassroots && serving > 0),
            units_total: u64::from(grassroots),
            coverage: 0.0,
        };
        if let Some(a) = agg.unit(code) {
            f.corners.active = a.corners_active;
            f.corners.units_covered = u64::from(grassroots && a.corners_active > 0);
            f.conflicts_open = a.conflicts_open;
            for (&(year, level), &n) in &a.sites {
                if years.contains(&year) {
                    match level {
                        0 => f.sites.national += n,
                        1 => f.sites.provincial += n,
                        2 => f.sites.municipal += n,
                        _ => f.sites.district += n,
                    }
                }
            }
        }
        f
    };
    let subtree_figures = |code: &str| -> Figures {
        let mut f = Figures::default();
        for u in tree.subtree(code) {
            f.absorb(&own(&u.code));
        }
        f.finish()
    };
    let mut top = own(org);
    let mut children = Vec::new();
    for child in tree.children(org) {
        let f = subtree_figures(child);
        top.absorb(&f);
        let u = tree.get(child)?;
        children.push(ChildTotals {
            org: OrgRef {
                code: u.code.clone(),
                name: u.name.clone(),
            },
            lectures: f.lectures,
            library_corners: f.corners,
            demo_sites: f.sites,
            legal_understanders: f.understanders,
            conflicts_open: f.conflicts_open,
        });
    }
    let top = top.finish();
    Some(TotalsResponse {
        org: OrgRef {
            code: unit.code.clone(),
            name: unit.name.clone(),
        },
        from: from.map(|d| d.to_string()),
        to: to.map(|d| d.to_string()),
        lectures: top.lectures,
        library_corners: top.corners,
        demo_sites: top.sites,
        legal_understanders: top.understanders,
        conflicts_open: top.conflicts_open,
        children,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Hlc;
    use crate::merge::Register;

    fn understander(n: u128, unit: &str, day: &str, status: &str, deleted: bool) -> RecordState {
        let reg = |value: serde_json::Value| Register {
            value,
            hlc: Hlc::new(1, 0, uuid::Uuid::from_u128(9)),
            seq: n as u64,
        };
        let fields = [
            ("org_unit", serde_json::json!(unit)),
            ("name", serde_json::json!("王丽")),
            ("appointed_on", serde_json::json!(day)),
            ("status", serde_json::json!(status)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), reg(v)))
        .collect();
        RecordState {
            id: uuid::Uuid::from_u128(n),
            kind: Kind::LegalUnderstander,
            seq: n as u64,
            fields,
            deleted: Some(reg(serde_json::json!(deleted))),
            open_conflicts: 0,
            ever: vec![unit.to_string()],
        }
    }

    #[test]
    fn understanders_count_by_appointment_day_and_status() {
        let mut agg = Aggregates::default();
        let records = [
            understander(1, "u", "2019-12-31", "serving", false),
            understander(2, "u", "2020-03-01", "serving", false),
            understander(3, "u", "2020-03-01", "resigned", false),
            understander(4, "u", "2020-12-31", "serving", true),
            understander(5, "u", "2021-01-01", "serving", false),
            understander(6, "v", "2020-05-05", "resigned", false),
        ];
        for r in &records {
            agg.apply(None, r);
        }
        let d = |s: &str| Date::parse(s);
        assert_eq!(agg.understanders("u", None, None), (4, 3));
        assert_eq!(
            agg.understanders("u", d("2020-01-01"), d("2020-12-31")),
            (2, 2)
        );
        assert_eq!(agg.understanders("u", None, d("2019-12-31")), (1, 1));
        assert_eq!(agg.understanders("u", d("2021-01-01"), None), (1, 3));
        assert_eq!(agg.understanders("v", None, None), (1, 0));
        assert_eq!(agg.understander_years("u"), [2019, 2020, 2021].into());
        // Persisted entries give the same aggregates back, and a resignation
        // moves one from serving without changing the appointments.
        let mut loaded = Aggregates::default();
        for (k, v) in agg.take_dirty() {
            loaded.load(k, v);
        }
        assert_eq!(loaded.understanders, agg.understanders);
        let resigned = understander(2, "u", "2020-03-01", "resigned", false);
        agg.apply(Some(&records[1]), &resigned);
        assert_eq!(agg.understanders("u", None, None), (4, 2));
        let dirty = agg.take_dirty();
        assert!(dirty
            .iter()
            .any(|(k, v)| *k == AggKey::Understanders("u".into())
                && *v
                    == AggValue::Understanders(vec![
                        (Date::parse("2019-12-31").unwrap().0, (1, 1)),
                        (Date::parse("2020-03-01").unwrap().0, (2, 0)),
                        (Date::parse("2021-01-01").unwrap().0, (1, 1)),
                    ])));
        for (k, v) in dirty {
            loaded.replace(k, Some(v));
        }
        assert_eq!(loaded.understanders, agg.understanders);
        // Deleting the last of a unit's appointments leaves an empty entry,
        // which stores remove.
        agg.apply(
            Some(&records[5]),
            &understander(6, "v", "2020-05-05", "resigned", true),
        );
        let dirty = agg.take_dirty();
        assert!(dirty.contains(&(
            AggKey::Understanders("v".into()),
            AggValue::Understanders(vec![])
        )));
    }

    #[test]
    fn lecture_ranges_match_a_day_by_day_sum() {
        let mut agg = Aggregates::default();
        let start = Date::parse("2019-11-20").unwrap();
        let mut all = Vec::new();
        for i in 0..500 {
            let day = start.add_days(i * 7 % 430);
            all.push((day, (i % 50) as u64));
            let d = agg
                .days
                .entry("u".into())
                .or_default()
                .entry(day.0)
                .or_default();
            add(d, (1, (i % 50) as u64), 1);
            add(
                agg.months
                    .entry("u".into())
                    .or_default()
                    .entry(day.month_index())
                    .or_default(),
                (1, (i % 50) as u64),
                1,
            );
        }
        let bounds = [
            None,
            Some("2019-11-01"),
            Some("2019-12-31"),
            Some("2020-01-01"),
            Some("2020-02-29"),
            Some("2020-03-15"),
            Some("2021-01-31"),
        ];
        for from in bounds {
            for to in bounds {
                let (f, t) = (from.and_then(Date::parse), to.and_then(Date::parse));
                let expect = all
                    .iter()
                    .filter(|(d, _)| f.is_none_or(|f| *d >= f) && t.is_none_or(|t| *d <= t))
                    .fold((0, 0), |acc, (_, a)| (acc.0 + 1, acc.1 + a));
                assert_eq!(agg.lectures("u", f, t), expect, "{from:?}..{to:?}");
            }
        }
    }
}
