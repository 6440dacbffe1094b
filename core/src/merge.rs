//! Records as the server keeps them, the judgement of a mutation (rule 2),
//! and the per-field last-writer-wins merge with conflict detection
//! (rules 3–5).
//!
//! Every field, and the `deleted` flag, is a register `(value, hlc, seq)`.
//! A write replaces a register only if its `(hlc, value)` is greater, so the
//! final registers are the maximum over all writes: the same whatever the
//! arrival order or repetition (convergence). A cleared field keeps its
//! register with `null`, so an older write arriving late still loses.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::hlc::Hlc;
use crate::org::{OrgTree, Scope};
use crate::schema::{check_set, first_missing_required, Kind, RejectCode, Rejection, Today};
use crate::wire::{ConflictReport, ConflictView, GoneView, Mutation, PullEntry, RecordView};

/// The conflict pseudo-field for delete-versus-edit and delete-versus-restore.
pub const DELETED_FIELD: &str = "_deleted";

/// One last-writer-wins register.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Register {
    /// `null` when cleared.
    pub value: Value,
    pub hlc: Hlc,
    /// The record's seq after the write that set this register.
    pub seq: u64,
}

/// A record as the server stores it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordState {
    pub id: Uuid,
    pub kind: Kind,
    pub seq: u64,
    pub fields: BTreeMap<String, Register>,
    pub deleted: Option<Register>,
    pub open_conflicts: u32,
    /// Every unit that has ever been this record's unit or one of its
    /// ancestors, sorted: a caller whose scope root is here was once able to
    /// see the record, and must be told when it leaves (`in_scope:false`).
    pub ever: Vec<String>,
}

impl RecordState {
    pub fn org_unit(&self) -> Option<&str> {
        self.fields.get("org_unit").and_then(|r| r.value.as_str())
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted
            .as_ref()
            .is_some_and(|r| r.value == Value::Bool(true))
    }

    /// A field's current value, `None` when never set or cleared.
    pub fn value(&self, field: &str) -> Option<&Value> {
        self.fields
            .get(field)
            .map(|r| &r.value)
            .filter(|v| !v.is_null())
    }

    /// The greatest HLC in the record.
    pub fn hlc(&self) -> Hlc {
        self.fields
            .values()
            .chain(self.deleted.as_ref())
            .map(|r| r.hlc)
            .max()
            .unwrap_or(Hlc::new(0, 0, Uuid::nil()))
    }

    /// The record in its pull shape.
    pub fn view(&self) -> RecordView {
        let fields = self
            .fields
            .iter()
            .filter(|(_, r)| !r.value.is_null())
            .map(|(k, r)| (k.clone(), r.value.clone()))
            .collect();
        RecordView {
            id: self.id,
            kind: self.kind.as_str().to_string(),
            seq: self.seq,
            deleted: self.is_deleted(),
            fields,
            hlc: self.hlc(),
            conflicts: self.open_conflicts,
        }
    }

    /// Adds the current unit's chain to `ever`; true if it grew.
    pub fn note_scope(&mut self, tree: &OrgTree) -> bool {
        let Some(unit) = self.org_unit() else {
            return false;
        };
        let mut grew = false;
        for code in tree.chain(unit) {
            if let Err(at) = self.ever.binary_search(&code) {
                self.ever.insert(at, code);
                grew = true;
            }
        }
        grew
    }

    /// Whether a caller with `scope` was ever able to see this record.
    pub fn ever_in(&self, scope: &Scope) -> bool {
        match scope {
            Scope::All => true,
            Scope::Unit(root) => self.ever.binary_search(root).is_ok(),
        }
    }

    /// What a pull for `scope` lists for this record (§7): the record while
    /// its unit is in scope, `in_scope: false` once it has left a scope it
    /// was in, else nothing.
    pub fn pull_entry(&self, tree: &OrgTree, scope: &Scope) -> Option<PullEntry> {
        if self.org_unit().is_some_and(|u| tree.in_scope(u, scope)) {
            Some(PullEntry::Record(self.view()))
        } else if self.ever_in(scope) {
            Some(PullEntry::Gone(GoneView {
                id: self.id,
                seq: self.seq,
                in_scope: false,
            }))
        } else {
            None
        }
    }
}

/// A conflict detected while merging.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    pub field: String,
    pub winner: Value,
    pub loser: Value,
    pub winner_hlc: Hlc,
    pub loser_hlc: Hlc,
}

impl Conflict {
    pub fn report(&self) -> ConflictReport {
        ConflictReport {
            field: self.field.clone(),
            winner: self.winner.clone(),
            loser: self.loser.clone(),
        }
    }

    pub fn view(&self, id: Uuid, record_id: Uuid, seq: u64) -> ConflictView {
        ConflictView {
            id,
            record_id,
            field: self.field.clone(),
            winner: self.winner.clone(),
            loser: self.loser.clone(),
            winner_hlc: self.winner_hlc,
            loser_hlc: self.loser_hlc,
            seq,
        }
    }
}

/// Judges a mutation against rule 2, in the contract's order, and returns
/// its kind when it may be applied.
///
/// # Errors
/// The first failed check as a [`Rejection`].
pub fn judge(
    m: &Mutation,
    device: Uuid,
    existing: Option<&RecordState>,
    tree: &OrgTree,
    scope: &Scope,
    today: Today,
) -> Result<Kind, Rejection> {
    if m.hlc.node != device {
        return Err(Rejection::new(
            RejectCode::InvalidHlc,
            Some("hlc"),
            "hlc.node must be the pushing device's id",
        ));
    }
    let Some(kind) = Kind::parse(&m.kind) else {
        return Err(Rejection::new(
            RejectCode::UnknownKind,
            Some("kind"),
            format!("unknown kind {:?}", m.kind),
        ));
    };
    // A record the pusher cannot read is refused before anything is said
    // of it: not its kind (kind_mismatch), nor its unit, nor what its fields
    // hold (§6 rule 2), so the message names nothing of the record.
    if let Some(current) = existing.and_then(RecordState::org_unit) {
        if !tree.in_scope(current, scope) {
            return Err(Rejection::new(
                RejectCode::OutOfScope,
                Some("org_unit"),
                "this record is outside this device's scope",
            ));
        }
    }
    if let Some(rec) = existing {
        if rec.kind != kind {
            return Err(Rejection::new(
                RejectCode::KindMismatch,
                Some("kind"),
                format!(
                    "record {} is a {}, not a {}",
                    rec.id,
                    rec.kind.as_str(),
                    kind.as_str()
                ),
            ));
        }
    }
    check_set(kind, &m.set, today)?;
    let new_unit = m.set.get("org_unit").and_then(Value::as_str);
    if let Some(code) = new_unit {
        if !tree.contains(code) {
            return Err(Rejection::new(
                RejectCode::UnknownOrgUnit,
                Some("org_unit"),
                format!("no org unit {code:?}"),
            ));
        }
    }
    if existing.is_none() {
        let has = |f: &str| m.set.get(f).is_some_and(|v| !v.is_null());
        if let Some(missing) = first_missing_required(kind, has) {
            return Err(Rejection::new(
                RejectCode::MissingField,
                Some(missing),
                format!("a new {} needs {missing}", kind.as_str()),
            ));
        }
    }
    if let Some(code) = new_unit {
        if !tree.in_scope(code, scope) {
            return Err(Rejection::new(
                RejectCode::OutOfScope,
                Some("org_unit"),
                format!("org unit {code:?} is outside this device's scope"),
            ));
        }
    }
    Ok(kind)
}

/// The effect of merging one mutation into a record.
#[derive(Clone, Debug, PartialEq)]
pub struct Merged {
    pub state: RecordState,
    pub conflicts: Vec<Conflict>,
    /// Whether any register or the conflict set changed (the record then
    /// takes `new_seq`); otherwise `state` is the record as it was.
    pub changed: bool,
}

/// What a mutation writes, once judged and (maybe) re-stamped.
#[derive(Clone, Copy, Debug)]
pub struct Write<'a> {
    pub record_id: Uuid,
    pub kind: Kind,
    pub base_seq: u64,
    pub hlc: Hlc,
    pub set: &'a Map<String, Value>,
    pub delete: Option<bool>,
}

impl<'a> Write<'a> {
    pub fn of(m: &'a Mutation, kind: Kind, hlc: Hlc) -> Write<'a> {
        Write {
            record_id: m.record_id,
            kind,
            base_seq: m.base_seq,
            hlc,
            set: &m.set,
            delete: m.delete,
        }
    }
}

/// Orders two register writes: HLC first, then (for equal HLCs, which only a
/// misbehaving device produces) the canonical text of the value, so that the
/// winner never depends on arrival order.
fn write_order(a_hlc: &Hlc, a: &Value, b_hlc: &Hlc, b: &Value) -> Ordering {
    a_hlc
        .cmp(b_hlc)
        .then_with(|| canonical_json(a).cmp(&canonical_json(b)))
}

/// Merges a judged write into `existing` (or a new record). Total: never fails.
pub fn merge(existing: Option<&RecordState>, w: Write<'_>, new_seq: u64) -> Merged {
    let mut state = existing.cloned().unwrap_or_else(|| RecordState {
        id: w.record_id,
        kind: w.kind,
        seq: 0,
        fields: BTreeMap::new(),
        deleted: None,
        open_conflicts: 0,
        ever: Vec::new(),
    });
    let mut conflicts = Vec::new();
    let mut changed = false;
    let unseen = |r: &Register| r.seq > w.base_seq && r.hlc.node != w.hlc.node;

    for (name, value) in w.set {
        let incoming = Register {
            value: value.clone(),
            hlc: w.hlc,
            seq: new_seq,
        };
        match state.fields.get(name) {
            None => {
                state.fields.insert(name.clone(), incoming);
                changed = true;
            }
            Some(stored) => {
                let wins =
                    write_order(&w.hlc, value, &stored.hlc, &stored.value) == Ordering::Greater;
                if unseen(stored) && stored.value != *value {
                    conflicts.push(if wins {
                        conflict(name, value, &w.hlc, &stored.value, &stored.hlc)
                    } else {
                        conflict(name, &stored.value, &stored.hlc, value, &w.hlc)
                    });
                }
                if wins {
                    state.fields.insert(name.clone(), incoming);
                    changed = true;
                }
            }
        }
    }

    let was_deleted = state.is_deleted();
    if let Some(del) = w.delete {
        let value = Value::Bool(del);
        let incoming = Register {
            value: value.clone(),
            hlc: w.hlc,
            seq: new_seq,
        };
        let stored = state.deleted.clone();
        let wins = stored
            .as_ref()
            .is_none_or(|s| write_order(&w.hlc, &value, &s.hlc, &s.value) == Ordering::Greater);
        match &stored {
            // Delete against restore (or the reverse) by a device that had not seen it.
            Some(s) if unseen(s) && s.value != value => conflicts.push(if wins {
                conflict(DELETED_FIELD, &value, &w.hlc, &s.value, &s.hlc)
            } else {
                conflict(DELETED_FIELD, &s.value, &s.hlc, &value, &w.hlc)
            }),
            // Deleting a record another device edited concurrently.
            _ if del && !was_deleted => {
                let edit = existing
                    .into_iter()
                    .flat_map(|r| r.fields.values())
                    .filter(|r| unseen(r))
                    .map(|r| r.hlc)
                    .max();
                if let Some(edit_hlc) = edit {
                    let (winner, winner_hlc, loser_hlc) = if wins {
                        (true, w.hlc, edit_hlc)
                    } else {
                        (false, edit_hlc, w.hlc)
                    };
                    conflicts.push(conflict(
                        DELETED_FIELD,
                        &Value::Bool(winner),
                        &winner_hlc,
                        &Value::Bool(!winner),
                        &loser_hlc,
                    ));
                }
            }
            _ => {}
        }
        if wins {
            state.deleted = Some(incoming);
            changed = true;
        }
    } else if !w.set.is_empty() {
        // Editing a record another device deleted, unseen: the deletion stands.
        if let Some(s) = state
            .deleted
            .as_ref()
            .filter(|s| s.value == Value::Bool(true) && unseen(s))
        {
            conflicts.push(conflict(
                DELETED_FIELD,
                &Value::Bool(true),
                &s.hlc,
                &Value::Bool(false),
                &w.hlc,
            ));
        }
    }

    if !conflicts.is_empty() {
        state.open_conflicts = state.open_conflicts.saturating_add(conflicts.len() as u32);
        changed = true;
    }
    if changed {
        state.seq = new_seq;
    } else if let Some(e) = existing {
        state = e.clone();
    }
    Merged {
        state,
        conflicts,
        changed,
    }
}

fn conflict(
    field: &str,
    winner: &Value,
    winner_hlc: &Hlc,
    loser: &Value,
    loser_hlc: &Hlc,
) -> Conflict {
    Conflict {
        field: field.to_string(),
        winner: winner.clone(),
        loser: loser.clone(),
        winner_hlc: *winner_hlc,
        loser_hlc: *loser_hlc,
    }
}

/// Writes a coordinator's resolution: `value` into `field` (or the deleted
/// flag) with `hlc`, which the caller guarantees is greater than every HLC in
/// the record, and closes one conflict.
pub fn resolve(
    state: &RecordState,
    field: &str,
    value: Value,
    hlc: Hlc,
    new_seq: u64,
) -> RecordState {
    let mut next = state.clone();
    let reg = Register {
        value,
        hlc,
        seq: new_seq,
    };
    if field == DELETED_FIELD {
        next.deleted = Some(reg);
    } else {
        next.fields.insert(field.to_string(), reg);
    }
    next.open_conflicts = next.open_conflicts.saturating_sub(1);
    next.seq = new_seq;
    next
}

/// JSON text with object keys sorted at every depth, whatever serde_json's
/// map order: the form in which values are compared and hashed.
pub fn canonical_json(v: &Value) -> String {
    let mut out = Vec::new();
    write_canonical(v, &mut out).expect("writing to a Vec cannot fail");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// Writes `v` as canonical JSON (object keys sorted, no spaces) into `out`
/// without building it as a string first: the idempotency fingerprint of
/// every pushed mutation is hashed from this.
fn write_canonical(v: &Value, out: &mut impl std::io::Write) -> std::io::Result<()> {
    match v {
        Value::Object(map) => write_canonical_object(map, out),
        Value::Array(items) => {
            out.write_all(b"[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write_canonical(item, out)?;
            }
            out.write_all(b"]")
        }
        other => serde_json::to_writer(out, other).map_err(std::io::Error::from),
    }
}

fn write_canonical_object(
    map: &Map<String, Value>,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    out.write_all(b"{")?;
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, k).map_err(std::io::Error::from)?;
        out.write_all(b":")?;
        write_canonical(&map[k], out)?;
    }
    out.write_all(b"}")
}

/// The idempotency fingerprint of a mutation: everything but `id` and
/// `base_seq`, compared as parsed JSON (key order does not matter).
pub fn content_hash(m: &Mutation) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(m.record_id.as_bytes());
    h.update(b"\0");
    h.update(m.kind.as_bytes());
    h.update(b"\0");
    h.update(m.hlc.ms.to_be_bytes());
    h.update(m.hlc.c.to_be_bytes());
    h.update(m.hlc.node.as_bytes());
    write_canonical_object(&m.set, &mut h).expect("hashing cannot fail");
    h.update([match m.delete {
        None => 0,
        Some(false) => 1,
        Some(true) => 2,
    }]);
    let digest = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// A record's checksum term (§7): the first 8 bytes, big-endian, of
/// SHA-256 of `"<id>:<seq>"`.
pub fn record_digest(id: Uuid, seq: u64) -> u64 {
    let digest = Sha256::digest(format!("{}:{}", id.hyphenated(), seq).as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("sha256 is 32 bytes"))
}

/// The checksum's text form: 16 lowercase hex digits.
pub fn checksum_text(xor: u64) -> String {
    format!("{xor:016x}")
}
