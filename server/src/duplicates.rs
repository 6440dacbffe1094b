//! Likely double entries as a service: the queue of lecture pairs a
//! coordinator reviews (found on demand from the lectures of one year in
//! the caller's scope, [`pufa_core::duplicates`]), the "not a duplicate"
//! mark, and the delete of one record of a pair. The JSON API and the
//! dashboard both call these; nothing is indexed on the write path, so a
//! push costs what it did.

use std::collections::HashMap;

use pufa_core::date::Date;
use pufa_core::duplicates::{likely_pairs, pair, Candidate};
use pufa_core::org::{OrgTree, Scope};
use pufa_core::report::Behind;
use pufa_core::wire::{
    DismissRequest, DismissalView, DuplicatePair, DuplicatesResponse, OrgRef, RecordView,
};
use uuid::Uuid;

use crate::auth;
use crate::service_error::ServiceError;
use crate::store::{Device, DismissInput, DismissOutcome, RecordQuery, ResolveOutcome};
use crate::AppState;

/// Most lectures of one year one listing compares; past it the answer says
/// `truncated` (a district has a few thousand a year).
pub const DUPLICATES_LECTURES_MAX: usize = 20_000;
/// Most pairs one listing returns (all are counted up to the lectures
/// compared).
pub const DUPLICATES_PAIRS_MAX: usize = 500;
/// Lectures asked of the store per page while collecting them.
const PAGE_LECTURES: usize = 1_000;
/// Most store pages one listing reads (each examines at most
/// [`crate::store::RECORDS_SCAN_MAX`] records): bounds the work of one
/// request however large the store.
const PAGES_MAX: usize = 64;

fn field<'a>(r: &'a RecordView, name: &str) -> &'a str {
    r.fields.get(name).and_then(|v| v.as_str()).unwrap_or("")
}

/// The likely pairs of `year`'s lectures under `org` (the caller's own
/// scope when absent), without those marked "not a duplicate", by day
/// then unit.
///
/// # Errors
/// `NeedsCoordinator`, `OutOfScope`, `NoSuchUnit` (admins), and a store
/// failure.
pub async fn list(
    s: &AppState,
    caller: &Device,
    org: Option<&str>,
    year: i32,
) -> Result<DuplicatesResponse, ServiceError> {
    caller.require_coordinator()?;
    let tree = s.store.org_tree();
    let scope = auth::narrow(caller, &tree, org)?;
    let (lectures, mut truncated) = lectures_of_year(s, &scope, year).await?;
    let candidates: Vec<Candidate<'_>> = lectures
        .iter()
        .map(|r| Candidate {
            id: r.id,
            org_unit: field(r, "org_unit"),
            held_on: field(r, "held_on"),
            title: field(r, "title"),
        })
        .collect();
    let found = likely_pairs(&candidates);
    let dismissed = s.store.dismissed(found.clone()).await?;
    let by_id: HashMap<Uuid, &RecordView> = lectures.iter().map(|r| (r.id, r)).collect();
    let mut flagged: Vec<(Uuid, Uuid)> = found
        .into_iter()
        .filter(|p| dismissed.binary_search(p).is_err())
        .collect();
    // Listed by day, then unit, as a coordinator goes through them.
    flagged.sort_by_cached_key(|(a, b)| {
        let day_unit = by_id.get(a).map(|r| {
            (
                field(r, "held_on").to_string(),
                field(r, "org_unit").to_string(),
            )
        });
        (day_unit, *a, *b)
    });
    truncated |= flagged.len() > DUPLICATES_PAIRS_MAX;
    let pairs = flagged
        .iter()
        .take(DUPLICATES_PAIRS_MAX)
        .filter_map(|(a, b)| Some((*by_id.get(a)?, *by_id.get(b)?)))
        .map(|(a, b)| {
            let unit = field(a, "org_unit");
            DuplicatePair {
                org_unit: unit.to_string(),
                name: unit_name(&tree, unit),
                held_on: field(a, "held_on").to_string(),
                a: a.clone(),
                b: b.clone(),
            }
        })
        .collect();
    Ok(DuplicatesResponse {
        org: org_ref(&tree, &scope),
        year,
        count: flagged.len(),
        pairs,
        truncated,
    })
}

fn unit_name(tree: &OrgTree, code: &str) -> String {
    tree.get(code).map(|u| u.name.clone()).unwrap_or_default()
}

/// The unit listed: the scope's, or the tree's top when there is one.
fn org_ref(tree: &OrgTree, scope: &Scope) -> OrgRef {
    let code = match scope {
        Scope::Unit(u) => u.clone(),
        Scope::All => match tree.roots().as_slice() {
            [one] => one.code.clone(),
            _ => String::new(),
        },
    };
    OrgRef {
        name: unit_name(tree, &code),
        code,
    }
}

/// The live lectures held in `year` in `scope`, and whether there were
/// more than one listing compares.
async fn lectures_of_year(
    s: &AppState,
    scope: &Scope,
    year: i32,
) -> Result<(Vec<RecordView>, bool), ServiceError> {
    let mut query = RecordQuery {
        scope: scope.clone(),
        behind: Behind::Lectures {
            from: Date::from_ymd(year, 1, 1),
            to: Date::from_ymd(year, 12, 31),
            topic: None,
        },
        after: None,
        limit: PAGE_LECTURES,
    };
    let mut out = Vec::new();
    for _ in 0..PAGES_MAX {
        let page = s.store.records(query.clone()).await?;
        out.extend(page.records);
        match page.next {
            None => return Ok((out, false)),
            Some(_) if out.len() >= DUPLICATES_LECTURES_MAX => break,
            Some(next) => query.after = Some(next),
        }
    }
    out.truncate(DUPLICATES_LECTURES_MAX);
    Ok((out, true))
}

/// Marks the pair `req.a`, `req.b` "not a duplicate" for `caller`
/// (`person`: the signed-in person, named in the audit entry). Marking a
/// pair again changes nothing and answers the first mark.
///
/// # Errors
/// `NeedsCoordinator`; `BadInput` when `a` and `b` are one record;
/// `NoSuchRecord` when either is unknown or outside the caller's scope.
pub async fn dismiss(
    s: &AppState,
    caller: &Device,
    person: Option<String>,
    req: DismissRequest,
) -> Result<DismissalView, ServiceError> {
    caller.require_coordinator()?;
    if req.a == req.b {
        return Err(ServiceError::BadInput {
            field: "b",
            message: "a and b must be two different records".into(),
        });
    }
    let (a, b) = pair(req.a, req.b);
    let outcome = s
        .store
        .dismiss_pair(DismissInput {
            a,
            b,
            device: caller.clone(),
            person,
            now_ms: s.config.clock.now_ms(),
        })
        .await?;
    match outcome {
        DismissOutcome::Dismissed(d) | DismissOutcome::Already(d) => Ok(DismissalView {
            a: d.a,
            b: d.b,
            by: d.by,
            at_ms: d.at_ms,
        }),
        // Which of the two is missing is not said: it may be out of scope.
        DismissOutcome::NotFound => Err(ServiceError::NoSuchRecord { id: b }),
    }
}

/// Deletes record `id` for `caller` (one of a likely pair).
///
/// # Errors
/// `NeedsCoordinator`; `NoSuchRecord` for a record unknown, deleted
/// already or outside the caller's scope; `Rejected` (`period_locked`)
/// when an approved period covers it.
pub async fn delete(
    s: &AppState,
    caller: &Device,
    person: Option<String>,
    id: Uuid,
) -> Result<RecordView, ServiceError> {
    caller.require_coordinator()?;
    let now_ms = s.config.clock.now_ms();
    match s.store.delete_record(id, caller, person, now_ms).await? {
        ResolveOutcome::Resolved(view) => Ok(view),
        ResolveOutcome::NotFound => Err(ServiceError::NoSuchRecord { id }),
        ResolveOutcome::Invalid(r) => Err(ServiceError::Rejected(r)),
    }
}
