//! Reporting periods as a service: who may take which step on which unit's
//! period, and the states a coordinator reads (a unit's own, and the locks
//! that reach it from above). The JSON API and the dashboard both call
//! these; the store judges the transition inside its write.
//!
//! Roles: a coordinator submits the periods of units in its scope; an
//! approver (an admin, or a coordinator of a unit above the one concerned)
//! returns, approves and reopens them. The top of the tree has no one
//! above it, so its own coordinator approves it.

use pufa_core::org::OrgTree;
use pufa_core::period::{Locks, Period, PeriodAction, PeriodState, StepRefused, COMMENT_MAX_CHARS};
use pufa_core::wire::{OrgRef, PeriodStepRequest, PeriodView, PeriodsResponse, Role};

use crate::auth;
use crate::service_error::ServiceError;
use crate::store::{Device, PeriodOutcome, PeriodStepInput, StoredPeriod};
use crate::AppState;

/// Whether `caller` may return, approve or reopen `unit`'s periods.
pub fn may_approve(caller: &Device, tree: &OrgTree, unit: &str) -> bool {
    match (caller.role, &caller.org_unit) {
        (Role::Admin, _) => true,
        (Role::Coordinator, Some(own)) => {
            let is_root = tree.get(unit).is_some_and(|u| u.parent.is_none());
            (own != unit && tree.is_within(unit, own)) || (own == unit && is_root)
        }
        _ => false,
    }
}

/// Takes `action` on a unit's period for `caller` (`person`: the
/// signed-in person's username, shown and logged instead of the device).
///
/// # Errors
/// `NeedsCoordinator`, `OutOfScope` (also for an unknown unit), `BadInput`
/// for a malformed period or comment, `PeriodRefused` when the period's
/// state does not allow the step or a covering period is approved.
pub async fn step(
    s: &AppState,
    caller: &Device,
    person: Option<&str>,
    action: PeriodAction,
    req: PeriodStepRequest,
) -> Result<PeriodView, ServiceError> {
    caller.require_coordinator()?;
    let tree = s.store.org_tree();
    let unit = req.org_unit;
    if !tree.contains(&unit) || !tree.in_scope(&unit, &caller.scope()) {
        return Err(ServiceError::OutOfScope { unit });
    }
    let period = Period::parse(&req.period).ok_or_else(|| ServiceError::BadInput {
        field: "period",
        message: format!(
            "period must be a year (2020), a quarter (2020-Q1) or a month (2020-03), got {:?}",
            req.period
        ),
    })?;
    let comment = req.comment.unwrap_or_default().trim().to_string();
    if comment.chars().count() > COMMENT_MAX_CHARS {
        return Err(ServiceError::BadInput {
            field: "comment",
            message: format!("comment must be at most {COMMENT_MAX_CHARS} characters"),
        });
    }
    if action.needs_comment() && comment.is_empty() {
        return Err(ServiceError::BadInput {
            field: "comment",
            message: format!("to {} a period, say why in comment", action.as_str()),
        });
    }
    if action != PeriodAction::Submit && !may_approve(caller, &tree, &unit) {
        return Err(ServiceError::NeedsApprover {
            unit,
            action: action.as_str(),
        });
    }
    let by = person.map_or_else(|| caller.label.clone(), str::to_string);
    let outcome = s
        .store
        .period_step(PeriodStepInput {
            org_unit: unit.clone(),
            period,
            action,
            comment,
            device_id: caller.id,
            by,
            now_ms: s.config.clock.now_ms(),
        })
        .await?;
    match outcome {
        PeriodOutcome::Done(p) => {
            let locks = s.store.locks().await?;
            Ok(view(&tree, &locks, &unit, period, Some(&p)))
        }
        PeriodOutcome::Refused(StepRefused::WrongState(state), _) => {
            Err(ServiceError::PeriodRefused {
                code: "period_state",
                message: format!(
                    "period {period} of {unit:?} is {}: it cannot be {}",
                    state.as_str(),
                    past(action)
                ),
                state: Some(state),
                lock: None,
            })
        }
        PeriodOutcome::Refused(StepRefused::LockedAbove, a) => Err(ServiceError::PeriodRefused {
            code: "period_locked",
            message: match &a {
                Some(a) => format!(
                    "period {} of {:?} is approved and covers this one; reopen it first",
                    a.period, a.org_unit
                ),
                None => "a period covering this one is approved; reopen it first".into(),
            },
            state: None,
            lock: a,
        }),
    }
}

fn past(action: PeriodAction) -> &'static str {
    match action {
        PeriodAction::Submit => "submitted",
        PeriodAction::Return => "returned",
        PeriodAction::Approve => "approved",
        PeriodAction::Reopen => "reopened",
    }
}

/// The periods of `year` in the subtree of `org` (the caller's own unit
/// when absent).
///
/// # Errors
/// `NeedsCoordinator`, `OutOfScope`, `NoSuchUnit` (admins), and a store
/// failure.
pub async fn list(
    s: &AppState,
    caller: &Device,
    org: Option<&str>,
    year: i32,
) -> Result<PeriodsResponse, ServiceError> {
    caller.require_coordinator()?;
    let tree = s.store.org_tree();
    let root = match auth::narrow(caller, &tree, org)? {
        pufa_core::org::Scope::Unit(u) => u,
        pufa_core::org::Scope::All => match tree.roots().as_slice() {
            [one] => one.code.clone(),
            _ => {
                return Err(ServiceError::bad_query(
                    "org",
                    None,
                    "org is required: this tree has several top units",
                ))
            }
        },
    };
    let stored: std::collections::HashMap<(String, Period), StoredPeriod> = s
        .store
        .periods_of_year(year)
        .await?
        .into_iter()
        .map(|p| ((p.org_unit.clone(), p.period), p))
        .collect();
    let locks = s.store.locks().await?;
    let own = |unit: &str, p: Period| stored.get(&(unit.to_string(), p));
    let mut periods = Vec::new();
    for u in tree.subtree(&root) {
        for p in Period::all_of_year(year) {
            let mine = own(&u.code, p);
            // A quarter or month is listed where someone acted on it; a
            // covering lock shows on the year's row.
            if matches!(p, Period::Year(_)) || mine.is_some() {
                periods.push(view(&tree, &locks, &u.code, p, mine));
            }
        }
    }
    Ok(PeriodsResponse {
        org: OrgRef {
            name: tree.get(&root).map(|u| u.name.clone()).unwrap_or_default(),
            code: root,
        },
        year,
        periods,
    })
}

fn view(
    tree: &OrgTree,
    locks: &Locks,
    unit: &str,
    period: Period,
    stored: Option<&StoredPeriod>,
) -> PeriodView {
    let state = stored.map_or(PeriodState::Open, |p| p.state);
    let locked_by = locks.covering(tree, unit, period).cloned();
    PeriodView {
        org_unit: unit.to_string(),
        name: tree.get(unit).map(|u| u.name.clone()).unwrap_or_default(),
        period,
        state,
        locked: state == PeriodState::Approved || locked_by.is_some(),
        locked_by,
        by: stored.map(|p| p.by.clone()),
        at_ms: stored.map(|p| p.at_ms),
        comment: stored.map(|p| p.comment.clone()).filter(|c| !c.is_empty()),
    }
}
