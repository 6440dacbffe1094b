//! Laws of `core::asof`: library corners counted at a period's end from
//! random histories (status changes at random times and synced in any
//! order, `opened_on` set, changed and cleared, deletes and restores) agree
//! with a naive recount that looks each field up in the history, and the
//! year figures carry those counts per unit, per child and in total.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::select;
use pufa_core::asof::{active_per_unit, corners_as_of, Step};
use pufa_core::audit::Change;
use pufa_core::date::Date;
use pufa_core::org::OrgTree;
use pufa_core::report::{annual_report, year_figures};
use pufa_core::schema::CORNER_STATUSES;
use pufa_core::totals::Aggregates;
use pufa_core::wire::{CornerTotals, OrgUnit, UnitType};
use serde_json::{json, Value};

const DAY_MS: u64 = 86_400_000;

fn unit(code: &str, t: UnitType, parent: Option<&str>) -> OrgUnit {
    OrgUnit {
        code: code.into(),
        name: format!("名{code}"),
        unit_type: t,
        parent: parent.map(Into::into),
    }
}

/// A district with two streets of grassroots units; corners may also sit
/// on a street.
fn tree() -> OrgTree {
    use UnitType::*;
    OrgTree::from_units([
        unit("d", District, None),
        unit("s1", Street, Some("d")),
        unit("t2", Town, Some("d")),
        unit("c11", Community, Some("s1")),
        unit("c12", Community, Some("s1")),
        unit("v21", Village, Some("t2")),
        unit("v22", Village, Some("t2")),
    ])
}

const UNITS: &[&str] = &["s1", "c11", "c12", "v21", "v22"];

/// Day 0 is 2020-01-01; days run over 2019..2021.
fn day(n: i64) -> Date {
    Date::parse("2020-01-01").unwrap().add_days(n as i32)
}

fn end_ms(d: i64) -> u64 {
    // Day n of the test calendar ends at (n + 400 + 1) days in ms.
    ((d + 400 + 1) as u64) * DAY_MS - 1
}

/// One logged write: when it was made (day and ms within it), and which
/// values it set (`None`: left alone; `Some(None)`: cleared).
#[derive(Clone, Debug)]
struct Write {
    day: i64,
    ms_in_day: u64,
    status: Option<&'static str>,
    opened_on: Option<Option<i64>>,
    deleted: Option<bool>,
}

fn write() -> impl Strategy<Value = Write> {
    (
        -400i64..700,
        0..DAY_MS,
        prop::option::of(select(CORNER_STATUSES)),
        prop::option::of(prop::option::of(-800i64..700)),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(day, ms_in_day, status, opened_on, deleted)| Write {
            day,
            ms_in_day,
            status,
            opened_on,
            deleted,
        })
}

impl Write {
    fn ms(&self) -> u64 {
        ((self.day + 400) as u64) * DAY_MS + self.ms_in_day
    }

    fn changes(&self) -> Vec<Change> {
        let mut out = Vec::new();
        let mut push = |field: &str, to: Value| {
            out.push(Change {
                field: field.into(),
                from: Value::Null,
                to,
            })
        };
        if let Some(s) = self.status {
            push("status", json!(s));
        }
        if let Some(o) = self.opened_on {
            push(
                "opened_on",
                o.map_or(Value::Null, |d| json!(day(d).to_string())),
            );
        }
        if let Some(d) = self.deleted {
            push("_deleted", json!(d));
        }
        out
    }
}

/// A corner's logged writes: HLC ms and changes, in log order.
type Log = Vec<(u64, Vec<Change>)>;

/// The value of `field` at `end`: the `to` of the latest write (by time,
/// then log position) at or before `end` that changed it, or of the first
/// write when no write is that early.
fn naive_value(log: &[(u64, Vec<Change>)], field: &str, end: u64) -> Value {
    let early: Vec<_> = log
        .iter()
        .enumerate()
        .filter(|(_, (ms, _))| *ms <= end)
        .collect();
    let pick = |c: &[Change]| {
        c.iter()
            .rev()
            .find(|c| c.field == field)
            .map(|c| c.to.clone())
    };
    if early.is_empty() {
        return log
            .first()
            .and_then(|(_, c)| pick(c))
            .unwrap_or(Value::Null);
    }
    early
        .iter()
        .filter_map(|(i, (ms, c))| pick(c).map(|v| ((*ms, *i), v)))
        .max_by_key(|(k, _)| *k)
        .map_or(Value::Null, |(_, v)| v)
}

fn naive_active(log: &[(u64, Vec<Change>)], d: i64) -> bool {
    if log.is_empty() {
        return false;
    }
    let end = end_ms(d);
    let known = log.iter().any(|(ms, _)| *ms <= end);
    let deleted = naive_value(log, "_deleted", end) == json!(true);
    let active = naive_value(log, "status", end) == json!("active");
    let opened = match naive_value(log, "opened_on", end) {
        Value::String(s) => Date::parse(&s).unwrap() <= day(d),
        _ => known,
    };
    !deleted && active && opened
}

fn naive_corners(counts: &BTreeMap<&str, u64>, tree: &OrgTree, root: &str) -> CornerTotals {
    let mut c = CornerTotals::default();
    for u in tree.subtree(root) {
        let n = counts.get(u.code.as_str()).copied().unwrap_or(0);
        c.active += n;
        if u.unit_type.is_grassroots() {
            c.units_total += 1;
            c.units_covered += u64::from(n > 0);
        }
    }
    c.coverage = if c.units_total == 0 {
        0.0
    } else {
        (c.units_covered as f64 / c.units_total as f64 * 10_000.0).round() / 10_000.0
    };
    c
}

proptest! {
    #[test]
    fn corners_as_of_match_a_naive_recount_from_history(
        corners in prop::collection::vec(
            (select(UNITS), prop::collection::vec(write(), 0..8)),
            0..24,
        ),
        at in -400i64..700,
    ) {
        let tree = tree();
        // Synced in the generated order, made at the generated times.
        let logs: Vec<(&str, Log)> = corners
            .iter()
            .map(|(u, ws)| (*u, ws.iter().map(|w| (w.ms(), w.changes())).collect()))
            .collect();
        let steps: Vec<(&str, Vec<Step<'_>>)> = logs
            .iter()
            .map(|(u, log)| {
                (*u, log.iter().map(|(ms, c)| Step { ms: *ms, changes: c }).collect())
            })
            .collect();
        let served = active_per_unit(
            steps.iter().map(|(u, s)| (*u, s.as_slice())),
            end_ms(at),
            day(at),
        );
        let mut naive: BTreeMap<&str, u64> = BTreeMap::new();
        for (u, log) in &logs {
            if naive_active(log, at) {
                *naive.entry(u).or_insert(0) += 1;
            }
        }
        let as_served: BTreeMap<&str, u64> =
            served.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        prop_assert_eq!(&as_served, &naive);

        let mut figures = year_figures(&tree, &Aggregates::default(), "d", 2020).unwrap();
        corners_as_of(&tree, &mut figures, &served);
        prop_assert_eq!(&figures.totals.library_corners, &naive_corners(&naive, &tree, "d"));
        for child in &figures.totals.children {
            prop_assert_eq!(
                &child.library_corners,
                &naive_corners(&naive, &tree, &child.org.code)
            );
        }
        for u in &figures.grassroots {
            prop_assert_eq!(
                u.corners_active,
                naive.get(u.org.code.as_str()).copied().unwrap_or(0)
            );
        }
        let report = annual_report(&figures);
        let without: Vec<&str> = report.units_without_corner.iter().map(|o| o.code.as_str()).collect();
        let naive_without: Vec<&str> = ["c11", "c12", "v21", "v22"]
            .into_iter()
            .filter(|u| !naive.contains_key(u))
            .collect();
        prop_assert_eq!(without, naive_without);
    }
}
