//! The write logic every store shares: what a push, a resolution, a
//! coordinator's delete, a "not a duplicate" mark and a re-parenting do
//! to records, given a place to read from and stage into.
//!
//! A store opens one write (sled: a batch under its writer lock;
//! PostgreSQL: a transaction under the database-wide write lock), hands it
//! to these functions as a [`Staging`], and commits what they staged in
//! one atomic step. Judging, restamping, merging, conflicts, idempotency
//! and the audit entries are decided here, once, whatever the store: a
//! mutation gives the same result on sled and on PostgreSQL, on whichever
//! instance it lands.

use pufa_core::audit::{self, Change, NOT_DUPLICATE_FIELD, PATH_FIELD};
use pufa_core::date::Date;
use pufa_core::hlc::HlcClock;
use pufa_core::merge::{self, content_hash, judge, RecordState, Write, DELETED_FIELD};
use pufa_core::org::OrgTree;
use pufa_core::period::PeriodState;
use pufa_core::period::{self, Locks};
use pufa_core::schema::{check_field, Kind, RejectCode, Rejection, Today};
use pufa_core::wire::{AuditCause, Mutation, MutationResult, MutationStatus};
use uuid::Uuid;

use super::codec::{Applied, AuditBody, PeriodStep, StoredConflict};
use super::{
    Device, DismissInput, DismissOutcome, PeriodOutcome, PeriodStepInput, PushInput,
    ResolveOutcome, StoreError, StoredDismissal, StoredPeriod,
};
use crate::config::IdSource;

/// One open write, as the shared logic sees it: reads see what this write
/// staged so far; nothing is visible to others until the store commits.
pub(crate) trait Staging {
    /// The record as this write sees it.
    fn record(&mut self, id: Uuid) -> Result<Option<RecordState>, StoreError>;
    /// The idempotency entry of `(device, mutation)`, if applied before.
    fn applied(&mut self, device: Uuid, mutation: Uuid) -> Result<Option<Applied>, StoreError>;
    fn device(&mut self, id: Uuid) -> Result<Option<Device>, StoreError>;
    /// The approved periods, as of this write.
    fn locks(&self) -> &Locks;
    /// The store's seq counter: the last seq handed out.
    fn seq(&mut self) -> &mut u64;
    /// The server's HLC, past every HLC stored.
    fn hlc(&mut self) -> &mut HlcClock;
    /// Keeps a rejected mutation (`raw`: its JSON as pushed).
    fn reject(
        &mut self,
        device: &Device,
        now_ms: u64,
        m: &Mutation,
        raw: Option<&str>,
        r: &Rejection,
    ) -> Result<(), StoreError>;
    /// Stages the next audit entry, chained to the previous one and to the
    /// record's previous entry (`current_seq`: the record's seq before this
    /// write, `None` for a new record). Returns the entry's `n`.
    fn log(&mut self, body: AuditBody, current_seq: Option<u64>) -> Result<u64, StoreError>;
    /// Stages a record at its new seq, with `entry` its newest audit entry.
    fn put_record(
        &mut self,
        before: Option<RecordState>,
        after: RecordState,
        entry: u64,
    ) -> Result<(), StoreError>;
    /// The record keeps its seq, but its newest audit entry is now `entry`.
    fn note_entry(&mut self, record: &RecordState, entry: u64) -> Result<(), StoreError>;
    fn put_applied(
        &mut self,
        device: Uuid,
        mutation: Uuid,
        applied: Applied,
    ) -> Result<(), StoreError>;
    /// Stages a conflict, opened (`stored.open`) or closed.
    fn put_conflict(&mut self, id: Uuid, stored: &StoredConflict) -> Result<(), StoreError>;
    fn put_device(&mut self, device: &Device) -> Result<(), StoreError>;
    /// Stages a period's new state (and the locks it makes or lifts).
    fn put_period(&mut self, period: &StoredPeriod) -> Result<(), StoreError>;
    /// Stages a "not a duplicate" mark.
    fn put_dismissal(&mut self, dismissal: &StoredDismissal) -> Result<(), StoreError>;
}

/// Applies one push: per mutation, a duplicate's first result, or a
/// rejection, or a merge into the record (restamped if its HLC runs too far
/// ahead), with conflicts, the idempotency entry and an audit entry. Then
/// the device's last push time and health report.
pub(crate) fn push(
    st: &mut impl Staging,
    ids: &dyn IdSource,
    tree: &OrgTree,
    input: &PushInput,
) -> Result<Vec<MutationResult>, StoreError> {
    let device = &input.device;
    let scope = device.scope();
    let today = Today(Date::from_unix_ms(input.now_ms));
    let mut results = Vec::with_capacity(input.mutations.len());
    for (i, m) in input.mutations.iter().enumerate() {
        let raw = input.raw.get(i).map(String::as_str);
        let content = content_hash(m);
        let rejected = |r: Rejection| MutationResult {
            id: m.id,
            status: MutationStatus::Rejected,
            seq: None,
            restamped: false,
            error: Some(r.to_error()),
            conflicts: Vec::new(),
            hlc: None,
        };
        if let Some(prev) = st.applied(device.id, m.id)? {
            if prev.content == content {
                results.push(MutationResult {
                    id: m.id,
                    status: MutationStatus::Duplicate,
                    seq: Some(prev.seq),
                    restamped: prev.restamped,
                    error: None,
                    conflicts: prev.conflicts,
                    hlc: Some(prev.hlc),
                });
            } else {
                let r = Rejection::new(
                    RejectCode::IdReused,
                    Some("id"),
                    "this mutation id was already applied with different content",
                );
                st.reject(device, input.now_ms, m, raw, &r)?;
                results.push(rejected(r));
            }
            continue;
        }
        let existing = st.record(m.record_id)?;
        let judged = judge(m, device.id, existing.as_ref(), tree, &scope, today).and_then(|kind| {
            let mut set = m.set.clone();
            if m.delete == Some(true) {
                set.insert(DELETED_FIELD.into(), true.into());
            }
            match period::locked_write(st.locks(), tree, kind, existing.as_ref(), &set) {
                Some(a) => Err(period::refusal(a)),
                None => Ok(kind),
            }
        });
        let kind = match judged {
            Ok(kind) => kind,
            Err(r) => {
                st.reject(device, input.now_ms, m, raw, &r)?;
                results.push(rejected(r));
                continue;
            }
        };
        let restamped = m.hlc.ms > input.now_ms.saturating_add(input.max_skew_ms);
        let hlc = if restamped {
            st.hlc().next(input.now_ms, m.hlc.node)
        } else {
            m.hlc
        };
        st.hlc().observe(&hlc);
        let next_seq = *st.seq() + 1;
        let merged = merge::merge(existing.as_ref(), Write::of(m, kind, hlc), next_seq);
        let mut state = merged.state;
        let mut changes = Vec::new();
        let mut opened = Vec::new();
        if merged.changed {
            *st.seq() = next_seq;
            state.note_scope(tree);
            changes = audit::changes(existing.as_ref(), &state);
            for c in &merged.conflicts {
                let id = ids.uuid();
                opened.push((id, c.clone()));
                st.put_conflict(
                    id,
                    &StoredConflict {
                        record_id: state.id,
                        conflict: c.clone(),
                        seq: state.seq,
                        open: true,
                    },
                )?;
            }
        }
        // Applied mutations are logged even when they lost on every
        // field: who tried what is part of the record's history.
        let current_seq = existing.as_ref().map(|r| r.seq);
        let n = st.log(
            AuditBody {
                n: 0,
                server_ms: input.now_ms,
                seq: state.seq,
                record_id: state.id,
                kind,
                cause: AuditCause::Push,
                mutation_id: Some(m.id),
                conflict_id: None,
                device_id: Some(device.id),
                actor: None,
                record_prev: None,
                hlc,
                pushed_hlc: restamped.then_some(m.hlc),
                changes,
                conflicts: opened,
                period: None,
            },
            current_seq,
        )?;
        let seq = state.seq;
        if merged.changed {
            st.put_record(existing, state, n)?;
        } else {
            st.note_entry(&state, n)?;
        }
        let conflicts: Vec<_> = merged
            .conflicts
            .iter()
            .map(merge::Conflict::report)
            .collect();
        st.put_applied(
            device.id,
            m.id,
            Applied {
                content,
                seq,
                restamped,
                hlc,
                conflicts: conflicts.clone(),
            },
        )?;
        results.push(MutationResult {
            id: m.id,
            status: MutationStatus::Applied,
            seq: Some(seq),
            restamped,
            error: None,
            conflicts,
            hlc: Some(hlc),
        });
    }
    // Health report and last push time, read fresh inside the write.
    if let Some(mut d) = st.device(device.id)? {
        d.last_push_ms = Some(input.now_ms);
        if let Some(report) = &input.report {
            if let Some(device_now) = report.now_ms {
                d.clock_skew_ms = Some(input.now_ms as i64 - device_now as i64);
            }
            d.report = Some(report.clone());
        }
        st.put_device(&d)?;
    }
    Ok(results)
}

/// Resolves the open conflict `id` (`stored`, as read inside the write) with
/// `value`, by `by` (a person's session names the person in `person`).
/// Stages nothing unless the outcome is [`ResolveOutcome::Resolved`].
#[allow(clippy::too_many_arguments)] // one resolution's facts, each needed
pub(crate) fn resolve(
    st: &mut impl Staging,
    tree: &OrgTree,
    id: Uuid,
    mut stored: StoredConflict,
    value: serde_json::Value,
    by: &Device,
    person: Option<String>,
    now_ms: u64,
) -> Result<ResolveOutcome, StoreError> {
    let scope = by.scope();
    let Some(before) = st.record(stored.record_id)? else {
        return Ok(ResolveOutcome::NotFound);
    };
    if !stored.open || !before.org_unit().is_some_and(|u| tree.in_scope(u, &scope)) {
        return Ok(ResolveOutcome::NotFound);
    }
    let field = stored.conflict.field.clone();
    let invalid = |r| Ok(ResolveOutcome::Invalid(r));
    if field == DELETED_FIELD {
        if !value.is_boolean() {
            return invalid(Rejection::new(
                RejectCode::InvalidField,
                Some(DELETED_FIELD),
                "_deleted takes true or false",
            ));
        }
    } else {
        if let Err(r) = check_field(
            before.kind,
            &field,
            &value,
            Today(Date::from_unix_ms(now_ms)),
        ) {
            return invalid(r);
        }
        if let Some(code) = value.as_str().filter(|_| field == "org_unit") {
            if !tree.contains(code) {
                return invalid(Rejection::new(
                    RejectCode::UnknownOrgUnit,
                    Some("org_unit"),
                    format!("no org unit {code:?}"),
                ));
            }
            if !tree.in_scope(code, &scope) {
                return invalid(Rejection::new(
                    RejectCode::OutOfScope,
                    Some("org_unit"),
                    format!("org unit {code:?} is outside your scope"),
                ));
            }
        }
    }
    if let Some(r) = locked(st, tree, &before, &field, &value) {
        return Ok(ResolveOutcome::Invalid(r));
    }
    stored.open = false;
    st.put_conflict(id, &stored)?;
    let cause = Coordinator {
        by,
        person,
        now_ms,
        conflict_id: Some(id),
    };
    let view = write_value(st, tree, before, &field, value, cause)?;
    Ok(ResolveOutcome::Resolved(view))
}

/// The `period_locked` refusal of setting `field` of `before` to `value`,
/// when an approved period covers the record as it is or would be.
fn locked(
    st: &impl Staging,
    tree: &OrgTree,
    before: &RecordState,
    field: &str,
    value: &serde_json::Value,
) -> Option<Rejection> {
    let mut set = serde_json::Map::new();
    set.insert(field.to_string(), value.clone());
    period::locked_write(st.locks(), tree, before.kind, Some(before), &set).map(period::refusal)
}

/// Who makes a coordinator's write to one record, and why.
struct Coordinator<'a> {
    by: &'a Device,
    /// A person's session names the person instead of the device.
    person: Option<String>,
    now_ms: u64,
    /// The conflict a resolution closes; `None` for a delete.
    conflict_id: Option<Uuid>,
}

/// Writes `value` into `field` of `before` for a coordinator, at the
/// server's next HLC tick (which beats every write in the record) and a
/// new seq, logging it as a resolution or a delete.
fn write_value(
    st: &mut impl Staging,
    tree: &OrgTree,
    before: RecordState,
    field: &str,
    value: serde_json::Value,
    who: Coordinator<'_>,
) -> Result<pufa_core::wire::RecordView, StoreError> {
    // The server's HLC is past every stored HLC (observing the record's is
    // a no-op then), so its next tick beats everything in the record.
    st.hlc().observe(&before.hlc());
    let hlc = st.hlc().next(who.now_ms, who.by.id);
    debug_assert!(hlc > before.hlc());
    *st.seq() += 1;
    let seq = *st.seq();
    let mut after = merge::resolve(&before, field, value, hlc, seq);
    after.note_scope(tree);
    let view = after.view();
    let n = st.log(
        AuditBody {
            n: 0,
            server_ms: who.now_ms,
            seq: after.seq,
            record_id: after.id,
            kind: after.kind,
            cause: if who.conflict_id.is_some() {
                AuditCause::Resolve
            } else {
                AuditCause::Delete
            },
            mutation_id: None,
            conflict_id: who.conflict_id,
            // A person's session acts under its account's id, which is
            // no device: name the person instead.
            device_id: who.person.is_none().then_some(who.by.id),
            actor: who.person,
            record_prev: None,
            hlc,
            pushed_hlc: None,
            changes: audit::changes(Some(&before), &after),
            conflicts: Vec::new(),
            period: None,
        },
        Some(before.seq),
    )?;
    st.put_record(Some(before), after, n)?;
    Ok(view)
}

/// Deletes record `id` for a coordinator (`by`, a person's session naming
/// `person`): refused as not found when the record is unknown, deleted
/// already or outside `by`'s scope, and `period_locked` in an approved
/// period. Stages nothing unless the outcome is
/// [`ResolveOutcome::Resolved`].
pub(crate) fn delete_record(
    st: &mut impl Staging,
    tree: &OrgTree,
    id: Uuid,
    by: &Device,
    person: Option<String>,
    now_ms: u64,
) -> Result<ResolveOutcome, StoreError> {
    let Some(before) = st.record(id)? else {
        return Ok(ResolveOutcome::NotFound);
    };
    let in_scope = before
        .org_unit()
        .is_some_and(|u| tree.in_scope(u, &by.scope()));
    if before.is_deleted() || !in_scope {
        return Ok(ResolveOutcome::NotFound);
    }
    let deleted = serde_json::Value::Bool(true);
    if let Some(r) = locked(st, tree, &before, DELETED_FIELD, &deleted) {
        return Ok(ResolveOutcome::Invalid(r));
    }
    let who = Coordinator {
        by,
        person,
        now_ms,
        conflict_id: None,
    };
    let view = write_value(st, tree, before, DELETED_FIELD, deleted, who)?;
    Ok(ResolveOutcome::Resolved(view))
}

/// Marks the pair `input.a`, `input.b` "not a duplicate" (`current`: the
/// mark as stored, read inside the write), logging it in the audit chain
/// as an entry of record `a` that changes nothing in it. Stages nothing
/// unless the outcome is [`DismissOutcome::Dismissed`].
pub(crate) fn dismiss(
    st: &mut impl Staging,
    tree: &OrgTree,
    current: Option<StoredDismissal>,
    input: &DismissInput,
) -> Result<DismissOutcome, StoreError> {
    let scope = input.device.scope();
    let mut records = Vec::with_capacity(2);
    for id in [input.a, input.b] {
        match st.record(id)? {
            Some(r) if r.org_unit().is_some_and(|u| tree.in_scope(u, &scope)) => records.push(r),
            _ => return Ok(DismissOutcome::NotFound),
        }
    }
    if let Some(d) = current {
        return Ok(DismissOutcome::Already(d));
    }
    let by = input
        .person
        .clone()
        .unwrap_or_else(|| input.device.label.clone());
    let stored = StoredDismissal {
        a: input.a,
        b: input.b,
        by,
        at_ms: input.now_ms,
    };
    let a = &records[0];
    let hlc = st.hlc().next(input.now_ms, input.device.id);
    let n = st.log(
        AuditBody {
            n: 0,
            server_ms: input.now_ms,
            seq: a.seq,
            record_id: a.id,
            kind: a.kind,
            cause: AuditCause::Dismiss,
            mutation_id: None,
            conflict_id: None,
            device_id: input.person.is_none().then_some(input.device.id),
            actor: input.person.clone(),
            record_prev: None,
            hlc,
            pushed_hlc: None,
            changes: vec![Change {
                field: NOT_DUPLICATE_FIELD.to_string(),
                from: serde_json::Value::Null,
                to: serde_json::Value::String(input.b.to_string()),
            }],
            conflicts: Vec::new(),
            period: None,
        },
        Some(a.seq),
    )?;
    st.note_entry(a, n)?;
    st.put_dismissal(&stored)?;
    Ok(DismissOutcome::Dismissed(stored))
}

/// Moves `before`, a record below a re-parented unit, to a new seq with its
/// scope as `next` has it (§4), logging the path change.
pub(crate) fn move_record(
    st: &mut impl Staging,
    before: RecordState,
    old: &OrgTree,
    next: &OrgTree,
    by: &Device,
    now_ms: u64,
) -> Result<(), StoreError> {
    let mut after = before.clone();
    after.note_scope(next);
    *st.seq() += 1;
    after.seq = *st.seq();
    let path = |tree: &OrgTree| serde_json::json!(before.org_unit().map(|u| tree.chain(u)));
    let n = st.log(
        AuditBody {
            n: 0,
            server_ms: now_ms,
            seq: after.seq,
            record_id: after.id,
            kind: after.kind,
            cause: AuditCause::Move,
            mutation_id: None,
            conflict_id: None,
            device_id: Some(by.id),
            actor: None,
            record_prev: None,
            hlc: after.hlc(),
            pushed_hlc: None,
            changes: vec![Change {
                field: PATH_FIELD.to_string(),
                from: path(old),
                to: path(next),
            }],
            conflicts: Vec::new(),
            period: None,
        },
        Some(before.seq),
    )?;
    st.put_record(Some(before), after, n)
}

/// Takes a step on a reporting period (`current`: as stored, read inside
/// the write), logging it in the audit chain. Stages nothing unless the
/// outcome is [`PeriodOutcome::Done`].
pub(crate) fn period_step(
    st: &mut impl Staging,
    tree: &OrgTree,
    current: Option<StoredPeriod>,
    input: &PeriodStepInput,
) -> Result<PeriodOutcome, StoreError> {
    if let Some(a) = st.locks().covering(tree, &input.org_unit, input.period) {
        return Ok(PeriodOutcome::Refused(
            period::StepRefused::LockedAbove,
            Some(a.clone()),
        ));
    }
    let state = current.map_or(PeriodState::Open, |p| p.state);
    let next = match period::step(state, input.action) {
        Ok(next) => next,
        Err(e) => return Ok(PeriodOutcome::Refused(e, None)),
    };
    let stored = StoredPeriod {
        org_unit: input.org_unit.clone(),
        period: input.period,
        state: next,
        by: input.by.clone(),
        at_ms: input.now_ms,
        comment: input.comment.clone(),
    };
    let hlc = st.hlc().next(input.now_ms, input.device_id);
    let seq = *st.seq();
    st.log(
        AuditBody {
            n: 0,
            server_ms: input.now_ms,
            seq,
            // About no record: the kind is a placeholder the disk layout
            // needs, never read for a period entry.
            record_id: Uuid::nil(),
            kind: Kind::Lecture,
            cause: AuditCause::Period,
            mutation_id: None,
            conflict_id: None,
            device_id: Some(input.device_id),
            actor: Some(input.by.clone()),
            record_prev: None,
            hlc,
            pushed_hlc: None,
            changes: Vec::new(),
            conflicts: Vec::new(),
            period: Some(PeriodStep {
                org_unit: input.org_unit.clone(),
                period: input.period,
                action: input.action,
                state: next,
                comment: input.comment.clone(),
            }),
        },
        None,
    )?;
    st.put_period(&stored)?;
    Ok(PeriodOutcome::Done(stored))
}
