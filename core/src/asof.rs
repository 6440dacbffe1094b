//! Library corners as they stood at the end of a period, from each corner's
//! audit history.
//!
//! The aggregates count corners as they are now, which is wrong for a past
//! year: a corner opened in 2021 is not in the 2020 report, and one closed
//! in June 2020 is not counted at the end of 2020. So a period's corner
//! figures are recomputed from history:
//!
//! - The time of a logged write is its HLC's milliseconds: when the person
//!   made the edit on the phone, not when it synced (a corner closed offline
//!   in June and synced in August was closed in June).
//! - The corner's state at the end of day `D` (`end_ms`, the last
//!   millisecond of `D` in the server's time zone, which the caller
//!   computes) is the replay of its logged changes with HLC at or before
//!   `end_ms`, in HLC order (log order among equal times). Under
//!   last-writer-wins a field's logged changes already come in HLC order,
//!   so this is the value each field had then.
//! - A corner none of whose writes is that early (entered into the system
//!   later) takes its earliest known state: the record as first written.
//! - It is counted at `D` iff it is not deleted then, its status then is
//!   `active`, and its `opened_on` then is on or before `D`; without an
//!   `opened_on` it is counted only if it had been entered by `D`.
//!
//! A corner counts in the unit it is filed under now: a change of
//! `org_unit` corrects where it was entered (as re-parenting a unit moves
//! its records with it), so counts per unit are keyed by the current unit.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::audit::{Change, Replay};
use crate::date::Date;
use crate::org::OrgTree;
use crate::report::YearFigures;
use crate::totals::coverage;
use crate::wire::CornerTotals;

/// One logged write of a record: its HLC milliseconds and what it changed.
#[derive(Clone, Copy, Debug)]
pub struct Step<'a> {
    pub ms: u64,
    pub changes: &'a [Change],
}

/// The record's fields and deleted flag at `end_ms` from `steps` (log
/// order), and whether any write was that early; `None` without steps.
pub fn state_at(steps: &[Step<'_>], end_ms: u64) -> Option<(Replay, bool)> {
    let first = steps.first()?;
    let mut order: Vec<&Step<'_>> = steps.iter().filter(|s| s.ms <= end_ms).collect();
    // Stable: equal times keep log order.
    order.sort_by_key(|s| s.ms);
    let known = !order.is_empty();
    let mut replay = Replay::default();
    if known {
        for s in order {
            replay.apply(s.changes);
        }
    } else {
        replay.apply(first.changes);
    }
    Some((replay, known))
}

/// Whether a library corner with these `steps` (log order) counts as
/// active at the end of `day`, whose last millisecond is `end_ms`.
pub fn corner_active_at(steps: &[Step<'_>], end_ms: u64, day: Date) -> bool {
    let Some((r, known)) = state_at(steps, end_ms) else {
        return false;
    };
    let active = r.fields.get("status").and_then(Value::as_str) == Some("active");
    let opened = match r.fields.get("opened_on") {
        Some(v) => v
            .as_str()
            .and_then(Date::parse)
            .is_some_and(|opened| opened <= day),
        None => known,
    };
    !r.deleted && active && opened
}

/// Corners active at the end of `day` (last millisecond `end_ms`) per
/// unit, from each corner's current unit and its steps (log order).
pub fn active_per_unit<'a, I>(corners: I, end_ms: u64, day: Date) -> BTreeMap<String, u64>
where
    I: IntoIterator<Item = (&'a str, &'a [Step<'a>])>,
{
    let mut out = BTreeMap::new();
    for (unit, steps) in corners {
        if corner_active_at(steps, end_ms, day) {
            *out.entry(unit.to_string()).or_insert(0) += 1;
        }
    }
    out
}

/// Replaces the corner figures of `figures` (counted now, from the
/// aggregates) with `active`: corners active at the period's end per unit
/// code (units absent have none). Per grassroots unit, in the totals and in
/// each child's totals; `units_total` stays as it is.
pub fn corners_as_of(tree: &OrgTree, figures: &mut YearFigures, active: &BTreeMap<String, u64>) {
    let of = |code: &str| active.get(code).copied().unwrap_or(0);
    let subtree_totals = |code: &str, units_total: u64| {
        let mut c = CornerTotals {
            units_total,
            ..CornerTotals::default()
        };
        for u in tree.subtree(code) {
            let n = of(&u.code);
            c.active += n;
            c.units_covered += u64::from(u.unit_type.is_grassroots() && n > 0);
        }
        c.coverage = coverage(c.units_covered, c.units_total);
        c
    };
    for u in &mut figures.grassroots {
        u.corners_active = of(&u.org.code);
    }
    let t = &mut figures.totals;
    t.library_corners = subtree_totals(&t.org.code, t.library_corners.units_total);
    for child in &mut t.children {
        child.library_corners = subtree_totals(&child.org.code, child.library_corners.units_total);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn set(field: &str, to: Value) -> Change {
        Change {
            field: field.into(),
            from: Value::Null,
            to,
        }
    }

    #[test]
    fn a_corner_closed_offline_counts_until_the_edit_was_made_not_synced() {
        let created = vec![
            set("opened_on", json!("2019-05-01")),
            set("status", json!("active")),
        ];
        let closed = vec![set("status", json!("closed"))];
        let noted = vec![set("notes", json!("n"))];
        const DAY: u64 = 86_400_000;
        // Logged: created (day 10), notes (day 300, synced first), closed
        // (made on day 200, synced after the notes).
        let steps = [
            Step {
                ms: 10 * DAY,
                changes: &created,
            },
            Step {
                ms: 300 * DAY,
                changes: &noted,
            },
            Step {
                ms: 200 * DAY,
                changes: &closed,
            },
        ];
        let d = Date::parse("2020-01-01").unwrap();
        assert!(corner_active_at(&steps, 199 * DAY, d));
        assert!(!corner_active_at(&steps, 250 * DAY, d));
        assert!(!corner_active_at(&steps, 400 * DAY, d));
        // Before any write: as first written, opened_on decides.
        assert!(corner_active_at(&steps, DAY, d));
        assert!(!corner_active_at(
            &steps,
            DAY,
            Date::parse("2019-04-30").unwrap()
        ));
        assert!(!corner_active_at(&[], DAY, d));
    }
}
