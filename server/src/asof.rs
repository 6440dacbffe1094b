//! A year's figures as a report states them: library corners counted as
//! they stood at the year's end, from each corner's history
//! ([`pufa_core::asof`] has the rule), everything else as the aggregates
//! give it (lectures by `held_on`, demonstration sites by award year,
//! legal understanders by `appointed_on`).
//!
//! Cost, per request: one listing of the library corners now in the
//! subtree (a scan of the records, as the records behind a figure are
//! listed: there is no per-unit index, which would cost push throughput)
//! and one history read per corner found, deleted ones included. A
//! district has some 100–200 corners, each with a handful of entries.
//! Nothing is added to the push path.

use pufa_core::asof::{active_per_unit, corners_as_of, Step};
use pufa_core::date::Date;
use pufa_core::org::Scope;
use pufa_core::report::{Behind, YearFigures};
use pufa_core::schema::Kind;
use pufa_core::wire::{HistoryEntry, HISTORY_LIMIT_MAX};
use uuid::Uuid;

use crate::config::TimeZone;
use crate::store::{RecordQuery, Store, StoreError};

/// Corners listed per page of the records scan.
const CORNER_PAGE: usize = 500;

/// The figures of `year` for the subtree of `org`, library corners as they
/// stood at the end of 31 December in `zone`; `None` if `org` is unknown.
///
/// # Errors
/// The store's.
pub async fn year_figures(
    store: &dyn Store,
    zone: &TimeZone,
    org: &str,
    year: i32,
) -> Result<Option<YearFigures>, StoreError> {
    let Some(mut figures) = store.year_figures(org, year).await? else {
        return Ok(None);
    };
    let Some(day) = Date::from_ymd(year, 12, 31) else {
        return Ok(Some(figures));
    };
    // Only a year past the zone database's calendar (9999) has no end;
    // years a report may ask for all do.
    let end_ms = zone.day_end_ms(day).unwrap_or(u64::MAX);
    let corners = corner_histories(store, org).await?;
    let steps: Vec<(&str, Vec<Step<'_>>)> = corners
        .iter()
        .map(|(unit, history)| {
            let steps = history
                .iter()
                .map(|e| Step {
                    ms: e.hlc.ms,
                    changes: &e.changes,
                })
                .collect();
            (unit.as_str(), steps)
        })
        .collect();
    let active = active_per_unit(steps.iter().map(|(u, s)| (*u, s.as_slice())), end_ms, day);
    corners_as_of(&store.org_tree(), &mut figures, &active);
    Ok(Some(figures))
}

/// Every library corner now in the subtree of `org` (deleted ones too),
/// with its unit and its whole history, oldest entry first.
async fn corner_histories(
    store: &dyn Store,
    org: &str,
) -> Result<Vec<(String, Vec<HistoryEntry>)>, StoreError> {
    let mut out = Vec::new();
    let mut after: Option<Uuid> = None;
    loop {
        let page = store
            .records(RecordQuery {
                scope: Scope::Unit(org.to_string()),
                behind: Behind::All {
                    kind: Kind::LibraryCorner,
                    include_deleted: true,
                },
                after,
                limit: CORNER_PAGE,
            })
            .await?;
        for r in page.records {
            let unit = r
                .fields
                .get("org_unit")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string();
            out.push((unit, history(store, r.id).await?));
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(out),
        }
    }
}

/// All of a record's audit entries, oldest first, a history page at a time.
async fn history(store: &dyn Store, id: Uuid) -> Result<Vec<HistoryEntry>, StoreError> {
    let mut out: Vec<HistoryEntry> = Vec::new();
    loop {
        let after = out.last().map_or(0, |e| e.n);
        let page = store
            .history(Scope::All, id, after, HISTORY_LIMIT_MAX)
            .await?
            .unwrap_or_default();
        let full = page.len() == HISTORY_LIMIT_MAX;
        out.extend(page);
        if !full {
            return Ok(out);
        }
    }
}
