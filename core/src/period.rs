//! Reporting periods: a unit's figures for a year, quarter or month go
//! through submit → (return → resubmit)* → approve, and an approved period
//! is locked for the unit's whole subtree.
//!
//! Locking is judged from what a write asks, never from what merging would
//! make of it: a mutation is refused with `period_locked` when the record
//! as stored, or the record with the mutation's values laid over it, is
//! dated in an approved period of its unit or an ancestor. A stale edit
//! that would lose to a newer value is refused too: the coordinator who
//! approved was promised that nothing under the period moves.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::date::Date;
use crate::merge::RecordState;
use crate::org::OrgTree;
use crate::schema::{as_integer, Kind, RejectCode, Rejection};

/// Earliest and latest year a period may name.
pub const YEAR_MIN: i32 = 2000;
pub const YEAR_MAX: i32 = 2100;
/// Longest comment on a period step, in characters.
pub const COMMENT_MAX_CHARS: usize = 500;

/// A reporting period: `2020`, `2020-Q1` or `2020-03`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Period {
    Year(i32),
    /// Quarter 1..=4.
    Quarter(i32, u32),
    /// Month 1..=12.
    Month(i32, u32),
}

impl Period {
    /// Reads `2020`, `2020-Q1` (also `q1`) or `2020-03`; years
    /// [`YEAR_MIN`]..=[`YEAR_MAX`].
    pub fn parse(text: &str) -> Option<Period> {
        let year = |y: &str| {
            (y.len() == 4 && y.bytes().all(|b| b.is_ascii_digit()))
                .then(|| y.parse::<i32>().ok())
                .flatten()
                .filter(|y| (YEAR_MIN..=YEAR_MAX).contains(y))
        };
        let two = |n: &str, max: u32| {
            (n.len() == 2 || n.len() == 1)
                .then(|| n.parse::<u32>().ok())
                .flatten()
                .filter(|n| (1..=max).contains(n))
        };
        match text.split_once('-') {
            None => year(text).map(Period::Year),
            Some((y, rest)) => {
                let y = year(y)?;
                match rest.strip_prefix(['Q', 'q']) {
                    Some(q) if q.len() == 1 => two(q, 4).map(|q| Period::Quarter(y, q)),
                    Some(_) => None,
                    None if rest.len() == 2 => two(rest, 12).map(|m| Period::Month(y, m)),
                    None => None,
                }
            }
        }
    }

    pub fn year(self) -> i32 {
        match self {
            Period::Year(y) | Period::Quarter(y, _) | Period::Month(y, _) => y,
        }
    }

    /// First and last day.
    pub fn bounds(self) -> (Date, Date) {
        let (y, from_m, to_m) = match self {
            Period::Year(y) => (y, 1, 12),
            Period::Quarter(y, q) => (y, q * 3 - 2, q * 3),
            Period::Month(y, m) => (y, m, m),
        };
        // Parsing keeps years and months in range, so these days exist.
        let from = Date::from_ymd(y, from_m, 1).unwrap_or(Date(0));
        let next = if to_m == 12 {
            Date::from_ymd(y + 1, 1, 1)
        } else {
            Date::from_ymd(y, to_m + 1, 1)
        };
        (from, next.unwrap_or(Date(0)).add_days(-1))
    }

    /// Whether `self` covers all of `other` (a year its quarters and
    /// months, a quarter its months, every period itself).
    pub fn covers(self, other: Period) -> bool {
        let (a, b) = (self.bounds(), other.bounds());
        a.0 <= b.0 && b.1 <= a.1
    }

    /// Whether a record dated `d` falls in this period.
    pub fn holds(self, d: Dating) -> bool {
        match d {
            Dating::Day(day) => {
                let (from, to) = self.bounds();
                from <= day && day <= to
            }
            // A year-dated record (a demonstration site's award year) is
            // in a year period only: a quarter says nothing of it.
            Dating::Year(y) => self == Period::Year(y),
        }
    }

    /// The year, its quarters and its months, in that order.
    pub fn all_of_year(year: i32) -> Vec<Period> {
        let mut out = vec![Period::Year(year)];
        out.extend((1..=4).map(|q| Period::Quarter(year, q)));
        out.extend((1..=12).map(|m| Period::Month(year, m)));
        out
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Period::Year(y) => write!(f, "{y}"),
            Period::Quarter(y, q) => write!(f, "{y}-Q{q}"),
            Period::Month(y, m) => write!(f, "{y}-{m:02}"),
        }
    }
}

impl Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Period, D::Error> {
        let text = String::deserialize(d)?;
        Period::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "period must be YYYY, YYYY-Qn or YYYY-MM, got {text:?}"
            ))
        })
    }
}

/// When a record happened, as far as periods go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dating {
    Day(Date),
    Year(i32),
}

/// The dates that place a record of `kind` in periods, read by `value`
/// (a field's current value): a lecture's `held_on`, a demonstration
/// site's award `year`, a library corner's `opened_on` and
/// `last_checked_on`, a legal understander's `appointed_on`.
pub fn datings<'a>(kind: Kind, value: impl Fn(&str) -> Option<&'a Value>) -> Vec<Dating> {
    let day = |f: &str| {
        value(f)
            .and_then(Value::as_str)
            .and_then(Date::parse)
            .map(Dating::Day)
    };
    match kind {
        Kind::Lecture => day("held_on").into_iter().collect(),
        Kind::DemoSite => value("year")
            .and_then(as_integer)
            .and_then(|y| i32::try_from(y).ok())
            .map(Dating::Year)
            .into_iter()
            .collect(),
        Kind::LibraryCorner => ["opened_on", "last_checked_on"]
            .iter()
            .filter_map(|f| day(f))
            .collect(),
        Kind::LegalUnderstander => day("appointed_on").into_iter().collect(),
    }
}

/// Where a period step leaves a unit's period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodState {
    /// 未提交: nothing submitted yet (the state of every period no one
    /// has acted on).
    #[default]
    Open,
    /// 已提交: the unit says its figures are complete.
    Submitted,
    /// 已退回: returned for correction (or reopened after approval).
    Returned,
    /// 已审核: approved, and locked for the unit's subtree.
    Approved,
}

impl PeriodState {
    pub fn as_str(self) -> &'static str {
        match self {
            PeriodState::Open => "open",
            PeriodState::Submitted => "submitted",
            PeriodState::Returned => "returned",
            PeriodState::Approved => "approved",
        }
    }
}

/// What a coordinator does to a period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodAction {
    Submit,
    Return,
    Approve,
    Reopen,
}

impl PeriodAction {
    pub fn parse(text: &str) -> Option<PeriodAction> {
        Some(match text {
            "submit" => PeriodAction::Submit,
            "return" => PeriodAction::Return,
            "approve" => PeriodAction::Approve,
            "reopen" => PeriodAction::Reopen,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PeriodAction::Submit => "submit",
            PeriodAction::Return => "return",
            PeriodAction::Approve => "approve",
            PeriodAction::Reopen => "reopen",
        }
    }

    /// Whether the action must say why.
    pub fn needs_comment(self) -> bool {
        matches!(self, PeriodAction::Return | PeriodAction::Reopen)
    }
}

/// Why a period step cannot be taken now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepRefused {
    /// The action does not apply to the period's state (e.g. approving an
    /// approved period, reopening one that is not approved).
    WrongState(PeriodState),
    /// A period that covers this one is approved for the unit or an
    /// ancestor: reopen that first.
    LockedAbove,
}

/// The state `action` leads to from `state`. Approval does not need a
/// submission first: the district may approve what it has reviewed.
///
/// # Errors
/// [`StepRefused::WrongState`] when the action does not apply.
pub fn step(state: PeriodState, action: PeriodAction) -> Result<PeriodState, StepRefused> {
    use PeriodAction as A;
    use PeriodState as S;
    match (state, action) {
        (S::Open | S::Returned, A::Submit) => Ok(S::Submitted),
        (S::Submitted, A::Return) => Ok(S::Returned),
        (S::Open | S::Submitted | S::Returned, A::Approve) => Ok(S::Approved),
        (S::Approved, A::Reopen) => Ok(S::Returned),
        (s, _) => Err(StepRefused::WrongState(s)),
    }
}

/// Who approved a period, as a refusal names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The unit whose approval holds the lock (the record's unit or an
    /// ancestor).
    pub org_unit: String,
    pub period: Period,
    /// The person or device that approved.
    pub approved_by: String,
    pub approved_ms: u64,
}

/// The approved periods of a store, by unit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Locks {
    by_unit: BTreeMap<String, Vec<Approval>>,
}

impl Locks {
    pub fn from_approvals(approvals: impl IntoIterator<Item = Approval>) -> Locks {
        let mut locks = Locks::default();
        for a in approvals {
            locks.set(a);
        }
        locks
    }

    pub fn is_empty(&self) -> bool {
        self.by_unit.is_empty()
    }

    /// Records `a` (replacing an approval of the same unit and period).
    pub fn set(&mut self, a: Approval) {
        let list = self.by_unit.entry(a.org_unit.clone()).or_default();
        list.retain(|b| b.period != a.period);
        list.push(a);
    }

    /// Forgets the approval of `unit` for `period`.
    pub fn clear(&mut self, unit: &str, period: Period) {
        if let Some(list) = self.by_unit.get_mut(unit) {
            list.retain(|b| b.period != period);
            if list.is_empty() {
                self.by_unit.remove(unit);
            }
        }
    }

    /// The approval that locks `dates` in `unit` (its own or an
    /// ancestor's), if any.
    pub fn locking(&self, tree: &OrgTree, unit: &str, dates: &[Dating]) -> Option<&Approval> {
        if self.by_unit.is_empty() || dates.is_empty() {
            return None;
        }
        chain_of(tree, unit).into_iter().find_map(|u| {
            self.by_unit
                .get(&u)?
                .iter()
                .find(|a| dates.iter().any(|d| a.period.holds(*d)))
        })
    }

    /// The approval of `unit` or an ancestor for a period covering
    /// `period`, if any (such a period cannot change until that one is
    /// reopened).
    pub fn covering(&self, tree: &OrgTree, unit: &str, period: Period) -> Option<&Approval> {
        chain_of(tree, unit).into_iter().find_map(|u| {
            self.by_unit
                .get(&u)?
                .iter()
                .find(|a| a.period.covers(period) && !(u == unit && a.period == period))
        })
    }

    /// Whether any approval is held by a unit in `units`, or by one of
    /// their ancestors in `tree`.
    pub fn touches(&self, tree: &OrgTree, units: &[&str]) -> Option<&Approval> {
        units.iter().find_map(|u| {
            chain_of(tree, u)
                .into_iter()
                .find_map(|c| self.by_unit.get(&c).and_then(|l| l.first()))
        })
    }

    pub fn approvals(&self) -> impl Iterator<Item = &Approval> {
        self.by_unit.values().flatten()
    }
}

/// The refusal of re-parenting `moved` units from `old` to `next` when an
/// approval held by one of them, a unit below them or an ancestor (before
/// or after the move) would see records come or go.
pub fn moves_locked(
    locks: &Locks,
    old: &OrgTree,
    next: &OrgTree,
    moved: &[String],
) -> Option<crate::org::OrgTreeError> {
    if locks.is_empty() {
        return None;
    }
    moved.iter().find_map(|code| {
        let below: Vec<&str> = next.subtree(code).iter().map(|u| u.code.as_str()).collect();
        let a = locks
            .touches(old, &below)
            .or_else(|| locks.touches(next, &below))?;
        Some(crate::org::OrgTreeError::Locked {
            code: code.clone(),
            period: a.period.to_string(),
            holder: a.org_unit.clone(),
        })
    })
}

fn chain_of(tree: &OrgTree, unit: &str) -> Vec<String> {
    let chain = tree.chain(unit);
    if chain.is_empty() {
        vec![unit.to_string()]
    } else {
        chain
    }
}

/// The `period_locked` refusal for a write into `a`'s period. Its message
/// names the period and who approved it; the wire error carries `a`.
pub fn refusal(a: &Approval) -> Rejection {
    Rejection::new(
        RejectCode::PeriodLocked,
        Some("org_unit"),
        format!(
            "period {} of org unit {:?} was approved by {} and is locked; ask the district to reopen it",
            a.period, a.org_unit, a.approved_by
        ),
    )
    .with_lock(a.clone())
}

/// The approval that a mutation setting `set` (and deleting, when
/// `delete`) on `existing` of `kind` would write under, judged on the
/// record as stored and on the record with `set` laid over it.
pub fn locked_write<'a>(
    locks: &'a Locks,
    tree: &OrgTree,
    kind: Kind,
    existing: Option<&RecordState>,
    set: &Map<String, Value>,
) -> Option<&'a Approval> {
    if locks.is_empty() {
        return None;
    }
    if let Some(rec) = existing {
        if let Some(unit) = rec.org_unit() {
            let before = datings(kind, |f| rec.value(f));
            if let Some(a) = locks.locking(tree, unit, &before) {
                return Some(a);
            }
        }
    }
    let after = |f: &str| match set.get(f) {
        Some(Value::Null) => None,
        Some(v) => Some(v),
        None => existing.and_then(|r| r.value(f)),
    };
    let unit = after("org_unit").and_then(Value::as_str)?;
    locks.locking(tree, unit, &datings(kind, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_print_and_nest() {
        for (text, p) in [
            ("2020", Period::Year(2020)),
            ("2020-Q1", Period::Quarter(2020, 1)),
            ("2020-q4", Period::Quarter(2020, 4)),
            ("2020-03", Period::Month(2020, 3)),
            ("2020-12", Period::Month(2020, 12)),
        ] {
            assert_eq!(Period::parse(text), Some(p), "{text}");
            assert_eq!(Period::parse(&p.to_string()), Some(p));
        }
        for bad in [
            "",
            "20",
            "1999",
            "2101",
            "2020-Q0",
            "2020-Q5",
            "2020-13",
            "2020-00",
            "2020-3",
            "2020-Q11",
            "2020-",
            "x2020",
            "2020-03-01",
            "２０２０",
        ] {
            assert_eq!(Period::parse(bad), None, "{bad}");
        }
        let d = |s| Dating::Day(Date::parse(s).unwrap());
        assert!(Period::Year(2020).covers(Period::Month(2020, 2)));
        assert!(Period::Quarter(2020, 1).covers(Period::Month(2020, 3)));
        assert!(!Period::Quarter(2020, 1).covers(Period::Month(2020, 4)));
        assert!(!Period::Month(2020, 3).covers(Period::Quarter(2020, 1)));
        assert!(Period::Quarter(2020, 4).holds(d("2020-12-31")));
        assert!(!Period::Quarter(2020, 4).holds(d("2021-01-01")));
        assert!(Period::Month(2020, 2).holds(d("2020-02-29")));
        assert!(Period::Year(2020).holds(Dating::Year(2020)));
        assert!(!Period::Quarter(2020, 1).holds(Dating::Year(2020)));
        assert_eq!(Period::all_of_year(2020).len(), 17);
    }

    #[test]
    fn steps_follow_the_approval_flow() {
        use PeriodAction as A;
        use PeriodState as S;
        assert_eq!(step(S::Open, A::Submit), Ok(S::Submitted));
        assert_eq!(step(S::Submitted, A::Return), Ok(S::Returned));
        assert_eq!(step(S::Returned, A::Submit), Ok(S::Submitted));
        assert_eq!(step(S::Submitted, A::Approve), Ok(S::Approved));
        assert_eq!(step(S::Approved, A::Reopen), Ok(S::Returned));
        assert_eq!(
            step(S::Approved, A::Approve),
            Err(StepRefused::WrongState(S::Approved))
        );
        assert_eq!(
            step(S::Open, A::Reopen),
            Err(StepRefused::WrongState(S::Open))
        );
        assert_eq!(
            step(S::Open, A::Return),
            Err(StepRefused::WrongState(S::Open))
        );
        assert_eq!(
            step(S::Approved, A::Submit),
            Err(StepRefused::WrongState(S::Approved))
        );
    }
}
