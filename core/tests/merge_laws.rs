//! Laws of the merge (contract §6, rules 2–5 and "Convergence") and of the
//! aggregates behind totals and checksums (§7), checked against naive
//! recomputations.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::sample::select;
use pufa_core::date::Date;
use pufa_core::hlc::Hlc;
use pufa_core::merge::{
    canonical_json, judge, merge, record_digest, resolve, Conflict, Merged, RecordState, Register,
    Write, DELETED_FIELD,
};
use pufa_core::org::{OrgTree, Scope};
use pufa_core::schema::{
    Kind, RejectCode, Today, CORNER_STATUSES, SITE_LEVELS, SITE_STATUSES, UNDERSTANDER_STATUSES,
};
use pufa_core::totals::{totals, AggKey, AggValue, Aggregates};
use pufa_core::wire::{
    ChildTotals, ConflictReport, CornerTotals, LectureTotals, Mutation, OrgRef, OrgUnit,
    SiteTotals, TotalsResponse, UnderstanderTotals, UnitType,
};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// Device node `i`; a higher `i` is a greater UUID (and string).
fn dev(i: u8) -> Uuid {
    Uuid::from_u128(0x0192_f7a0_0000_7000_8000_0000_0000_0000 + u128::from(i))
}

/// The server's own node, used for resolutions.
fn server_node() -> Uuid {
    Uuid::from_u128(0x0192_f7a0_ffff_7000_8000_0000_0000_0000)
}

fn rid(i: u8) -> Uuid {
    Uuid::from_u128(0x0192_f7a0_1111_7000_8000_0000_0000_0000 + u128::from(i))
}

fn hlc(ms: u64, c: u32, node: Uuid) -> Hlc {
    Hlc::new(ms, c, node)
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

/// An owned [`Write`].
#[derive(Clone, Debug)]
struct W {
    record_id: Uuid,
    kind: Kind,
    base_seq: u64,
    hlc: Hlc,
    set: Map<String, Value>,
    delete: Option<bool>,
}

impl W {
    fn as_write(&self) -> Write<'_> {
        Write {
            record_id: self.record_id,
            kind: self.kind,
            base_seq: self.base_seq,
            hlc: self.hlc,
            set: &self.set,
            delete: self.delete,
        }
    }
}

/// A lecture write to record `rid(0)`.
fn lw(node: Uuid, ms: u64, base_seq: u64, set: Value, delete: Option<bool>) -> W {
    W {
        record_id: rid(0),
        kind: Kind::Lecture,
        base_seq,
        hlc: hlc(ms, 0, node),
        set: obj(set),
        delete,
    }
}

fn full_lecture(attendees: i64) -> Value {
    json!({"org_unit": "c11", "held_on": "2020-06-01", "title": "民法典进社区", "attendees": attendees})
}

/// Registers compared by write order: HLC, then canonical value text.
fn reg_key(r: &Register) -> (Hlc, String) {
    (r.hlc, canonical_json(&r.value))
}

/// A store in miniature: records and the server-wide seq counter, with the
/// invariants every single merge must keep checked on the way.
#[derive(Default)]
struct Server {
    recs: BTreeMap<Uuid, RecordState>,
    seq: u64,
}

impl Server {
    fn push(&mut self, w: &W) -> Merged {
        let before = self.recs.get(&w.record_id).cloned();
        let m = merge(before.as_ref(), w.as_write(), self.seq + 1);
        check_merge_invariants(before.as_ref(), w, self.seq + 1, &m);
        if m.changed {
            self.seq += 1;
            self.recs.insert(w.record_id, m.state.clone());
        }
        m
    }

    fn rec(&self, id: Uuid) -> &RecordState {
        &self.recs[&id]
    }
}

#[track_caller]
fn check_merge_invariants(before: Option<&RecordState>, w: &W, new_seq: u64, m: &Merged) {
    if m.changed {
        assert_eq!(m.state.seq, new_seq, "a changed record takes the new seq");
        let was = before.map_or(0, |b| b.open_conflicts);
        assert_eq!(
            m.state.open_conflicts as usize,
            was as usize + m.conflicts.len(),
            "every recorded conflict is open"
        );
    } else {
        assert!(m.conflicts.is_empty(), "a conflict changes the record");
        if let Some(b) = before {
            assert_eq!(&m.state, b, "an unchanged record is returned as it was");
        }
    }
    assert_eq!(m.state.id, w.record_id);
    if let Some(b) = before {
        // Registers only ever move up in write order.
        for (name, r) in &b.fields {
            assert!(
                reg_key(&m.state.fields[name]) >= reg_key(r),
                "{name} went back"
            );
        }
        if let Some(r) = &b.deleted {
            let after = m.state.deleted.as_ref().expect("deleted register kept");
            assert!(reg_key(after) >= reg_key(r), "deleted went back");
        }
    }
    for c in &m.conflicts {
        assert_ne!(c.winner, c.loser, "a conflict is between differing values");
        let standing = if c.field == DELETED_FIELD {
            Value::Bool(m.state.is_deleted())
        } else {
            m.state.fields[&c.field].value.clone()
        };
        assert_eq!(c.winner, standing, "the winner is the value that stands");
    }
}

/// `(value, hlc)` of every field register and of the deleted register.
type Regs = (BTreeMap<String, (Value, Hlc)>, Option<(Value, Hlc)>);

fn registers(r: &RecordState) -> Regs {
    (
        r.fields
            .iter()
            .map(|(k, r)| (k.clone(), (r.value.clone(), r.hlc)))
            .collect(),
        r.deleted.as_ref().map(|r| (r.value.clone(), r.hlc)),
    )
}

// ---------------------------------------------------------------------------
// 1. Convergence, 2. idempotency (property tests)
// ---------------------------------------------------------------------------

const TITLES: &[&str] = &["民法典进社区", "宪法宣传周", "反诈讲座"];
const ATTENDEES: &[i64] = &[0, 5, 87, 90];
const SPEAKERS: &[&str] = &["", "张律师", "李法官"];
const CONV_UNITS: &[&str] = &["c11", "c12", "v1"];
const CONV_DAYS: &[&str] = &["2020-01-01", "2020-06-01"];

#[derive(Clone, Debug)]
struct GenMut {
    rec: u8,
    dev: u8,
    ms: u64,
    c: u32,
    base_seq: u64,
    set: Map<String, Value>,
    delete: Option<bool>,
}

impl GenMut {
    fn write(&self) -> W {
        W {
            record_id: rid(self.rec),
            kind: Kind::Lecture,
            base_seq: self.base_seq,
            hlc: hlc(self.ms, self.c, dev(self.dev)),
            set: self.set.clone(),
            delete: self.delete,
        }
    }
}

fn lecture_set() -> impl Strategy<Value = Map<String, Value>> {
    (
        prop::option::of((select(CONV_UNITS), select(CONV_DAYS))),
        prop::option::of(select(TITLES)),
        prop::option::of(select(ATTENDEES)),
        // Some(None) clears the optional speaker.
        prop::option::of(prop::option::of(select(SPEAKERS))),
    )
        .prop_map(|(place, title, attendees, speaker)| {
            let mut m = Map::new();
            if let Some((unit, day)) = place {
                m.insert("org_unit".into(), json!(unit));
                m.insert("held_on".into(), json!(day));
            }
            if let Some(t) = title {
                m.insert("title".into(), json!(t));
            }
            if let Some(a) = attendees {
                m.insert("attendees".into(), json!(a));
            }
            if let Some(s) = speaker {
                m.insert("speaker".into(), s.map_or(Value::Null, |s| json!(s)));
            }
            m
        })
}

fn gen_mutation(records: u8, devices: u8) -> impl Strategy<Value = GenMut> {
    (
        0..records,
        0..devices,
        // A small window, so that equal ms (and equal whole HLCs) happen.
        1000u64..1004,
        0u32..3,
        0u64..8,
        lecture_set(),
        prop_oneof![3 => Just(None), 1 => Just(Some(true)), 1 => Just(Some(false))],
    )
        .prop_map(|(rec, dev, ms, c, base_seq, set, delete)| GenMut {
            rec,
            dev,
            ms,
            c,
            base_seq,
            set,
            delete,
        })
}

/// Every index of `0..n` once, plus up to `n` repeats, shuffled.
fn schedule(n: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..n, 0..=n).prop_flat_map(move |repeats| {
        let mut order: Vec<usize> = (0..n).collect();
        order.extend(repeats);
        Just(order).prop_shuffle()
    })
}

fn convergence_case() -> impl Strategy<Value = (Vec<GenMut>, Vec<usize>, Vec<usize>)> {
    (1u8..=3, 1u8..=3)
        .prop_flat_map(|(records, devices)| {
            prop::collection::vec(gen_mutation(records, devices), 1..=12)
        })
        .prop_flat_map(|muts| {
            let n = muts.len();
            (Just(muts), schedule(n), schedule(n))
        })
}

fn run(muts: &[GenMut], order: &[usize]) -> Server {
    let mut s = Server::default();
    for &i in order {
        s.push(&muts[i].write());
    }
    s
}

/// The registers every order must end with: per field (and for `deleted`),
/// the greatest write by HLC, then canonical value text.
fn expected_registers(muts: &[GenMut]) -> BTreeMap<Uuid, Regs> {
    let mut best: BTreeMap<Uuid, Regs> = BTreeMap::new();
    let better = |old: &Option<(Value, Hlc)>, v: &Value, h: Hlc| {
        old.as_ref()
            .is_none_or(|(ov, oh)| (h, canonical_json(v)) > (*oh, canonical_json(ov)))
    };
    for m in muts {
        if m.set.is_empty() && m.delete.is_none() {
            continue; // creates nothing
        }
        let h = hlc(m.ms, m.c, dev(m.dev));
        let entry = best.entry(rid(m.rec)).or_default();
        for (k, v) in &m.set {
            let old = entry.0.get(k).cloned();
            if better(&old, v, h) {
                entry.0.insert(k.clone(), (v.clone(), h));
            }
        }
        if let Some(d) = m.delete {
            let v = Value::Bool(d);
            if better(&entry.1, &v, h) {
                entry.1 = Some((v, h));
            }
        }
    }
    best
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// Contract §6 "Convergence": fields and `deleted` end the same whatever
    /// the arrival order and repetition; they are the per-register maximum.
    #[test]
    fn merge_converges_whatever_the_order((muts, order_a, order_b) in convergence_case()) {
        let a = run(&muts, &order_a);
        let b = run(&muts, &order_b);
        let expect = expected_registers(&muts);
        prop_assert_eq!(
            a.recs.keys().collect::<Vec<_>>(),
            expect.keys().collect::<Vec<_>>()
        );
        prop_assert_eq!(
            a.recs.keys().collect::<Vec<_>>(),
            b.recs.keys().collect::<Vec<_>>()
        );
        for (id, ra) in &a.recs {
            let rb = &b.recs[id];
            prop_assert_eq!(&registers(ra), &expect[id]);
            prop_assert_eq!(registers(ra), registers(rb));
            let (va, vb) = (ra.view(), rb.view());
            prop_assert_eq!(&va.fields, &vb.fields);
            prop_assert_eq!(va.deleted, vb.deleted);
            prop_assert_eq!(va.hlc, vb.hlc);
            prop_assert_eq!(va.kind.as_str(), "lecture");
            // A cleared field is absent from the view, present as a register.
            for (k, r) in &ra.fields {
                prop_assert_eq!(va.fields.get(k).is_some(), !r.value.is_null());
            }
        }
    }

    /// The same write merged twice in a row: registers never move the second
    /// time, and if the first merge recorded no conflict the second is a
    /// no-op (`changed == false`, no conflicts). (A write that recorded a
    /// conflict it lost records it again when merged again: `merge` is not
    /// idempotent on conflicts; rule 1's mutation ids keep a server from
    /// merging one mutation twice.)
    #[test]
    fn merging_a_write_again_changes_nothing((muts, order, _) in convergence_case()) {
        let mut s = Server::default();
        for &i in &order {
            let w = muts[i].write();
            let first = s.push(&w);
            let after_first = s.recs.get(&w.record_id).cloned();
            let second = s.push(&w);
            let after_second = s.recs.get(&w.record_id).cloned();
            prop_assert_eq!(
                after_first.as_ref().map(registers),
                after_second.as_ref().map(registers)
            );
            if first.conflicts.is_empty() {
                prop_assert!(!second.changed, "second merge changed {:?}", w);
                prop_assert!(second.conflicts.is_empty());
                prop_assert_eq!(after_first, after_second);
            }
        }
    }
}

#[test]
fn merging_the_same_write_twice_is_a_no_op() {
    let mut s = Server::default();
    let create = lw(dev(1), 1000, 0, full_lecture(80), None);
    assert!(s.push(&create).changed);
    let snapshot = s.rec(rid(0)).clone();
    let again = s.push(&create);
    assert!(!again.changed && again.conflicts.is_empty());
    assert_eq!(s.rec(rid(0)), &snapshot);
    assert_eq!(s.seq, 1);

    let edit = lw(dev(2), 2000, 1, json!({"speaker": null}), Some(true));
    let first = s.push(&edit);
    assert!(first.changed && first.conflicts.is_empty());
    let again = s.push(&edit);
    assert!(!again.changed && again.conflicts.is_empty());
    assert_eq!(again.state.seq, 2);
}

// ---------------------------------------------------------------------------
// 3. Conflict rules (rule 4)
// ---------------------------------------------------------------------------

/// Device 1 created `rid(0)` (seq 1, HLC ms 1000).
fn created() -> Server {
    let mut s = Server::default();
    let m = s.push(&lw(dev(1), 1000, 0, full_lecture(80), None));
    assert!(m.changed && m.conflicts.is_empty());
    assert_eq!(m.state.seq, 1);
    assert_eq!(m.state.open_conflicts, 0);
    s
}

/// `created()`, then device 2 sets attendees to 90 having seen seq 1 (seq 2).
fn edited_by_b() -> Server {
    let mut s = created();
    let m = s.push(&lw(dev(2), 2000, 1, json!({"attendees": 90}), None));
    assert!(m.changed);
    assert!(
        m.conflicts.is_empty(),
        "B had seen seq 1: {:?}",
        m.conflicts
    );
    assert_eq!(m.state.seq, 2);
    s
}

fn conflict(field: &str, winner: Value, wh: Hlc, loser: Value, lh: Hlc) -> Conflict {
    Conflict {
        field: field.into(),
        winner,
        loser,
        winner_hlc: wh,
        loser_hlc: lh,
    }
}

#[test]
fn concurrent_edit_that_loses_still_records_a_conflict() {
    let mut s = edited_by_b();
    // C had only seen seq 1; B's write (seq 2) is newer by HLC.
    let m = s.push(&lw(dev(3), 1500, 1, json!({"attendees": 87}), None));
    assert!(m.changed, "a conflict changes the record");
    assert_eq!(
        m.conflicts,
        [conflict(
            "attendees",
            json!(90),
            hlc(2000, 0, dev(2)),
            json!(87),
            hlc(1500, 0, dev(3))
        )]
    );
    assert_eq!(
        m.conflicts[0].report(),
        ConflictReport {
            field: "attendees".into(),
            winner: json!(90),
            loser: json!(87)
        }
    );
    assert_eq!(m.state.seq, 3);
    assert_eq!(m.state.open_conflicts, 1);
    assert_eq!(
        m.state.fields["attendees"],
        Register {
            value: json!(90),
            hlc: hlc(2000, 0, dev(2)),
            seq: 2
        }
    );
    assert_eq!(m.state.view().conflicts, 1);
    assert_eq!(m.state.view().fields["attendees"], json!(90));
}

#[test]
fn concurrent_edit_that_wins_records_a_conflict_and_stands() {
    let mut s = edited_by_b();
    let m = s.push(&lw(dev(3), 2500, 1, json!({"attendees": 87}), None));
    assert_eq!(
        m.conflicts,
        [conflict(
            "attendees",
            json!(87),
            hlc(2500, 0, dev(3)),
            json!(90),
            hlc(2000, 0, dev(2))
        )]
    );
    assert_eq!(
        m.state.fields["attendees"],
        Register {
            value: json!(87),
            hlc: hlc(2500, 0, dev(3)),
            seq: 3
        }
    );
    assert_eq!((m.state.seq, m.state.open_conflicts), (3, 1));
    // The conflict stays open when the field is written again (seen).
    let m = s.push(&lw(dev(2), 3000, 3, json!({"attendees": 88}), None));
    assert!(m.conflicts.is_empty());
    assert_eq!((m.state.seq, m.state.open_conflicts), (4, 1));
}

#[test]
fn equal_ms_and_counter_are_ordered_by_node() {
    let mut s = edited_by_b();
    // Same (ms, c) as B's write; device 3's node is the greater UUID.
    let m = s.push(&lw(dev(3), 2000, 1, json!({"attendees": 87}), None));
    assert_eq!(m.conflicts.len(), 1);
    assert_eq!(m.conflicts[0].winner, json!(87));
    assert_eq!(m.state.fields["attendees"].value, json!(87));
    // And device 0 (the smaller UUID) loses against it.
    let m = s.push(&lw(dev(0), 2000, 1, json!({"attendees": 5}), None));
    assert_eq!(m.conflicts[0].winner, json!(87));
    assert_eq!(m.conflicts[0].loser, json!(5));
    assert_eq!(m.state.open_conflicts, 2);
}

#[test]
fn conflicts_on_several_fields_each_count() {
    let mut s = created();
    s.push(&lw(
        dev(2),
        2000,
        1,
        json!({"attendees": 90, "title": "宪法宣传周", "speaker": "张律师"}),
        None,
    ));
    let m = s.push(&lw(
        dev(3),
        1500,
        1,
        json!({"attendees": 87, "title": "宪法宣传周", "speaker": "李法官"}),
        None,
    ));
    let fields: BTreeSet<_> = m.conflicts.iter().map(|c| c.field.as_str()).collect();
    // title has the same value on both sides: no conflict there.
    assert_eq!(fields, BTreeSet::from(["attendees", "speaker"]));
    assert_eq!(m.state.open_conflicts, 2);
}

#[test]
fn same_device_editing_on_a_stale_base_is_no_conflict() {
    let mut s = created();
    let m = s.push(&lw(dev(2), 2000, 1, json!({"attendees": 50}), None));
    assert!(m.conflicts.is_empty());
    // Device 2 again, still based on seq 1 (its own write is at seq 2).
    let m = s.push(&lw(dev(2), 2100, 1, json!({"attendees": 60}), None));
    assert!(m.conflicts.is_empty());
    assert_eq!(m.state.fields["attendees"].value, json!(60));
    assert_eq!(m.state.open_conflicts, 0);
    // The creator, on its own stale base, over its own fields only.
    let m = s.push(&lw(dev(1), 2200, 1, json!({"title": "反诈讲座"}), None));
    assert!(m.conflicts.is_empty());
}

#[test]
fn same_value_is_no_conflict() {
    let mut s = edited_by_b();
    // Loses by HLC, same value: nothing happens at all.
    let m = s.push(&lw(dev(3), 1500, 1, json!({"attendees": 90}), None));
    assert!(m.conflicts.is_empty());
    assert!(!m.changed, "a write that loses everywhere without conflict");
    assert_eq!(m.state.seq, 2);
    // Wins by HLC, same value: the register moves, no conflict.
    let m = s.push(&lw(dev(3), 2500, 1, json!({"attendees": 90}), None));
    assert!(m.conflicts.is_empty());
    assert!(m.changed);
    assert_eq!(m.state.fields["attendees"].hlc, hlc(2500, 0, dev(3)));
    assert_eq!(m.state.open_conflicts, 0);
}

#[test]
fn seen_edit_is_no_conflict() {
    let mut s = edited_by_b();
    let m = s.push(&lw(dev(3), 1500, 2, json!({"attendees": 87}), None));
    assert!(m.conflicts.is_empty());
    assert!(!m.changed, "older HLC, seen: simply loses");
    let m = s.push(&lw(dev(3), 2500, 2, json!({"attendees": 87}), None));
    assert!(m.conflicts.is_empty());
    assert_eq!(m.state.fields["attendees"].value, json!(87));
}

#[test]
fn delete_against_a_concurrent_edit() {
    let mut s = edited_by_b();
    // Device 4 deletes having seen only seq 1; its HLC is even older.
    let m = s.push(&lw(dev(4), 1500, 1, json!({}), Some(true)));
    assert_eq!(
        m.conflicts,
        [conflict(
            DELETED_FIELD,
            json!(true),
            hlc(1500, 0, dev(4)),
            json!(false),
            hlc(2000, 0, dev(2))
        )]
    );
    assert!(m.state.is_deleted());
    assert!(m.state.view().deleted);
    assert_eq!((m.state.seq, m.state.open_conflicts), (3, 1));
    assert_eq!(m.state.fields["attendees"].value, json!(90));
    assert_eq!(
        m.state.view().fields.len(),
        4,
        "a deleted record keeps its fields"
    );
}

#[test]
fn delete_after_seeing_the_edit_is_no_conflict() {
    let mut s = edited_by_b();
    let m = s.push(&lw(dev(4), 2500, 2, json!({}), Some(true)));
    assert!(m.conflicts.is_empty());
    assert!(m.state.is_deleted());
    // Deleting an already deleted record, unseen: same value, no conflict.
    let m = s.push(&lw(dev(3), 2600, 1, json!({}), Some(true)));
    assert!(m.conflicts.is_empty());
}

#[test]
fn editing_a_record_another_device_deleted() {
    let mut s = created();
    let del = s.push(&lw(dev(2), 2000, 1, json!({}), Some(true)));
    assert!(del.conflicts.is_empty());
    assert_eq!(del.state.seq, 2);
    let m = s.push(&lw(dev(3), 2500, 1, json!({"title": "反诈讲座"}), None));
    assert_eq!(
        m.conflicts,
        [conflict(
            DELETED_FIELD,
            json!(true),
            hlc(2000, 0, dev(2)),
            json!(false),
            hlc(2500, 0, dev(3))
        )]
    );
    assert!(m.changed);
    assert!(m.state.is_deleted(), "the deletion stands");
    assert_eq!(m.state.fields["title"].value, json!("反诈讲座"));
    assert_eq!((m.state.seq, m.state.open_conflicts), (3, 1));

    // Seen deletion, or the deleter itself: no conflict.
    let m = s.push(&lw(dev(3), 2600, 2, json!({"title": "宪法宣传周"}), None));
    assert!(m.conflicts.is_empty());
    let m = s.push(&lw(dev(2), 2700, 1, json!({"attendees": 3}), None));
    assert!(m.conflicts.is_empty());
    assert_eq!(s.rec(rid(0)).open_conflicts, 1);
}

#[test]
fn delete_against_a_concurrent_restore() {
    // The restore is newer: it stands.
    let mut s = created();
    s.push(&lw(dev(2), 2000, 1, json!({}), Some(true)));
    let m = s.push(&lw(dev(3), 3000, 1, json!({}), Some(false)));
    assert_eq!(
        m.conflicts,
        [conflict(
            DELETED_FIELD,
            json!(false),
            hlc(3000, 0, dev(3)),
            json!(true),
            hlc(2000, 0, dev(2))
        )]
    );
    assert!(!m.state.is_deleted());
    assert_eq!((m.state.seq, m.state.open_conflicts), (3, 1));

    // The restore is older: the deletion stands, the record still changes.
    let mut s = created();
    s.push(&lw(dev(2), 2000, 1, json!({}), Some(true)));
    let m = s.push(&lw(dev(3), 1500, 1, json!({}), Some(false)));
    assert!(m.changed);
    assert_eq!(
        m.conflicts,
        [conflict(
            DELETED_FIELD,
            json!(true),
            hlc(2000, 0, dev(2)),
            json!(false),
            hlc(1500, 0, dev(3))
        )]
    );
    assert!(m.state.is_deleted());
    assert_eq!(
        m.state.deleted,
        Some(Register {
            value: json!(true),
            hlc: hlc(2000, 0, dev(2)),
            seq: 2
        })
    );
    assert_eq!((m.state.seq, m.state.open_conflicts), (3, 1));

    // A restore that had seen the deletion: no conflict.
    let m = s.push(&lw(dev(3), 2500, 3, json!({}), Some(false)));
    assert!(m.conflicts.is_empty());
    assert!(!m.state.is_deleted());
}

#[test]
fn a_delete_losing_to_a_newer_restore_against_an_unseen_edit() {
    // Device 2 restores (seen) with a late HLC, device 3 edits concurrently,
    // device 4 deletes without having seen either: the restore stands.
    let mut s = created();
    s.push(&lw(dev(2), 1100, 1, json!({}), Some(true)));
    s.push(&lw(dev(2), 5000, 2, json!({}), Some(false)));
    let m = s.push(&lw(dev(3), 2000, 3, json!({"attendees": 7}), None));
    assert!(m.conflicts.is_empty());
    // Device 4 has seen seq 3 (the restore) but not the edit at seq 4.
    let m = s.push(&lw(dev(4), 3000, 3, json!({}), Some(true)));
    assert_eq!(m.conflicts.len(), 1);
    let c = &m.conflicts[0];
    assert_eq!(c.field, DELETED_FIELD);
    assert!(!m.state.is_deleted());
    assert_eq!(
        (&c.winner, &c.loser),
        (&json!(false), &json!(true)),
        "winner is the deleted value that stands"
    );
}

// ---------------------------------------------------------------------------
// 4. resolve
// ---------------------------------------------------------------------------

#[test]
fn resolve_closes_one_conflict_and_writes_the_value() {
    let mut s = edited_by_b();
    s.push(&lw(dev(3), 1500, 1, json!({"attendees": 87}), None));
    s.push(&lw(dev(4), 1600, 1, json!({}), Some(true)));
    let before = s.rec(rid(0)).clone();
    assert_eq!((before.seq, before.open_conflicts), (4, 2));

    let h = hlc(before.hlc().ms + 1, 0, server_node());
    let r = resolve(&before, "attendees", json!(88), h, 5);
    assert_eq!((r.seq, r.open_conflicts), (5, 1));
    assert_eq!(
        r.fields["attendees"],
        Register {
            value: json!(88),
            hlc: h,
            seq: 5
        }
    );
    assert_eq!(r.hlc(), h);
    for (name, reg) in &before.fields {
        if name != "attendees" {
            assert_eq!(&r.fields[name], reg);
        }
    }
    assert_eq!(r.deleted, before.deleted);

    let h2 = hlc(h.ms, h.c + 1, server_node());
    let r2 = resolve(&r, DELETED_FIELD, json!(false), h2, 6);
    assert_eq!((r2.seq, r2.open_conflicts), (6, 0));
    assert!(!r2.is_deleted());
    assert_eq!(
        r2.deleted,
        Some(Register {
            value: json!(false),
            hlc: h2,
            seq: 6
        })
    );
    assert_eq!(r2.fields, r.fields);

    // Late writes from before the resolution lose to it.
    s.recs.insert(rid(0), r2);
    s.seq = 6;
    let m = s.push(&lw(dev(3), 1700, 6, json!({"attendees": 1}), Some(true)));
    assert!(!m.changed);
    assert_eq!(m.state.fields["attendees"].value, json!(88));
    // Never below zero.
    let r3 = resolve(
        &m.state,
        "title",
        json!("x"),
        hlc(h2.ms + 1, 0, server_node()),
        7,
    );
    assert_eq!(r3.open_conflicts, 0);
}

// ---------------------------------------------------------------------------
// 5. Aggregates against a naive recomputation
// ---------------------------------------------------------------------------

fn unit(code: &str, t: UnitType, parent: Option<&str>) -> OrgUnit {
    OrgUnit {
        code: code.into(),
        name: format!("名{code}"),
        unit_type: t,
        parent: parent.map(Into::into),
    }
}

/// District `d` → streets `s1`, `s2` → communities `c11`, `c12`, `c21`,
/// `c22`; village `v1` directly under `d`.
fn tree() -> OrgTree {
    use UnitType::*;
    OrgTree::from_units([
        unit("d", District, None),
        unit("s1", Street, Some("d")),
        unit("s2", Street, Some("d")),
        unit("c11", Community, Some("s1")),
        unit("c12", Community, Some("s1")),
        unit("c21", Community, Some("s2")),
        unit("c22", Community, Some("s2")),
        unit("v1", Village, Some("d")),
    ])
}

const UNITS: &[&str] = &["d", "s1", "s2", "c11", "c12", "c21", "c22", "v1"];
/// Lecture days, thick around month and year boundaries (leap February).
const DAYS: &[&str] = &[
    "2019-12-01",
    "2019-12-02",
    "2019-12-30",
    "2019-12-31",
    "2020-01-01",
    "2020-01-02",
    "2020-01-15",
    "2020-01-30",
    "2020-01-31",
    "2020-02-01",
    "2020-02-02",
    "2020-02-28",
    "2020-02-29",
    "2020-03-01",
    "2020-03-02",
    "2020-03-31",
    "2020-12-31",
    "2021-01-01",
    "2021-01-02",
    "2021-06-15",
];
const RANGES: &[(Option<&str>, Option<&str>)] = &[
    (None, None),
    (Some("2020-01-01"), Some("2020-12-31")),
    (Some("2020-01-15"), Some("2020-02-29")),
    (None, Some("2020-01-31")),
    (Some("2020-02-01"), None),
    (Some("2019-12-31"), Some("2019-12-31")),
    (Some("2020-03-01"), Some("2021-01-01")),
    (Some("2020-01-31"), Some("2020-02-01")),
    (Some("2021-01-01"), None),
];
const NAMES: &[&str] = &["图书角甲", "图书角乙"];
/// Record `i`'s kind.
const KINDS: &[Kind] = &[
    Kind::Lecture,
    Kind::Lecture,
    Kind::Lecture,
    Kind::LibraryCorner,
    Kind::LibraryCorner,
    Kind::LibraryCorner,
    Kind::DemoSite,
    Kind::DemoSite,
    Kind::LegalUnderstander,
    Kind::LegalUnderstander,
];

#[derive(Clone, Debug)]
struct Pick {
    unit: usize,
    day: usize,
    title: usize,
    attendees: i64,
    name: usize,
    status: usize,
    level: usize,
    year: i64,
    /// Which fields an edit sets (bit i: the kind's i-th required field).
    mask: u8,
}

#[derive(Clone, Debug)]
enum Op {
    Write {
        rec: usize,
        dev: u8,
        ms: u64,
        c: u32,
        /// How far behind the record's seq the write's base is.
        back: u64,
        pick: Pick,
        delete: Option<bool>,
    },
    Resolve {
        rec: usize,
        pick: usize,
    },
}

fn pick() -> impl Strategy<Value = Pick> {
    (
        0..UNITS.len(),
        0..DAYS.len(),
        0..TITLES.len(),
        0i64..60,
        0..NAMES.len(),
        0usize..3,
        0usize..4,
        2019i64..2023,
        any::<u8>(),
    )
        .prop_map(
            |(unit, day, title, attendees, name, status, level, year, mask)| Pick {
                unit,
                day,
                title,
                attendees,
                name,
                status,
                level,
                year,
                mask,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (
            0..KINDS.len(),
            0u8..3,
            1000u64..1010,
            0u32..2,
            0u64..4,
            pick(),
            prop_oneof![6 => Just(None), 1 => Just(Some(true)), 1 => Just(Some(false))],
        )
            .prop_map(|(rec, dev, ms, c, back, pick, delete)| Op::Write {
                rec,
                dev,
                ms,
                c,
                back,
                pick,
                delete,
            }),
        1 => (0..KINDS.len(), 0usize..8).prop_map(|(rec, pick)| Op::Resolve { rec, pick }),
    ]
}

fn full_set(kind: Kind, p: &Pick) -> Vec<(&'static str, Value)> {
    let unit = ("org_unit", json!(UNITS[p.unit]));
    match kind {
        Kind::Lecture => vec![
            unit,
            ("held_on", json!(DAYS[p.day])),
            ("title", json!(TITLES[p.title])),
            ("attendees", json!(p.attendees)),
        ],
        Kind::LibraryCorner => vec![
            unit,
            ("name", json!(NAMES[p.name])),
            ("status", json!(CORNER_STATUSES[p.status % 3])),
        ],
        Kind::DemoSite => vec![
            unit,
            ("level", json!(SITE_LEVELS[p.level % 4])),
            ("status", json!(SITE_STATUSES[p.status % 3])),
            ("year", json!(p.year)),
        ],
        Kind::LegalUnderstander => vec![
            unit,
            ("name", json!(NAMES[p.name])),
            ("appointed_on", json!(DAYS[p.day])),
            ("status", json!(UNDERSTANDER_STATUSES[p.status % 2])),
        ],
    }
}

/// A store that keeps aggregates as the server does, and everything a
/// restart would reload.
struct AggStore {
    tree: OrgTree,
    server: Server,
    agg: Aggregates,
    persisted: BTreeMap<AggKey, AggValue>,
}

impl AggStore {
    fn new() -> AggStore {
        AggStore {
            tree: tree(),
            server: Server::default(),
            agg: Aggregates::default(),
            persisted: BTreeMap::new(),
        }
    }

    fn commit(&mut self, before: Option<RecordState>, mut after: RecordState) {
        after.note_scope(&self.tree);
        self.agg.apply(before.as_ref(), &after);
        self.server.recs.insert(after.id, after);
        for (k, v) in self.agg.take_dirty() {
            self.persisted.insert(k, v);
        }
    }

    fn step(&mut self, op: &Op) {
        match op {
            Op::Write {
                rec,
                dev: d,
                ms,
                c,
                back,
                pick,
                delete,
            } => {
                let id = rid(*rec as u8);
                let kind = KINDS[*rec];
                let before = self.server.recs.get(&id).cloned();
                let full = full_set(kind, pick);
                let set: Map<String, Value> = match &before {
                    None => full.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                    Some(_) => full
                        .into_iter()
                        .enumerate()
                        .filter(|(i, _)| pick.mask & (1 << i) != 0)
                        .map(|(_, (k, v))| (k.to_string(), v))
                        .collect(),
                };
                let w = W {
                    record_id: id,
                    kind,
                    base_seq: before.as_ref().map_or(0, |b| b.seq.saturating_sub(*back)),
                    hlc: hlc(*ms, *c, dev(*d)),
                    set,
                    delete: *delete,
                };
                let new_seq = self.server.seq + 1;
                let m = merge(before.as_ref(), w.as_write(), new_seq);
                check_merge_invariants(before.as_ref(), &w, new_seq, &m);
                if m.changed {
                    self.server.seq = new_seq;
                    self.commit(before, m.state);
                }
            }
            Op::Resolve { rec, pick } => {
                let id = rid(*rec as u8);
                let Some(before) = self.server.recs.get(&id).cloned() else {
                    return;
                };
                if before.open_conflicts == 0 {
                    return;
                }
                let kind = before.kind;
                let (field, value) = match (pick % 2, kind) {
                    (0, _) => (DELETED_FIELD, json!(pick % 4 == 0)),
                    (_, Kind::Lecture) => ("attendees", json!(*pick as i64 * 7)),
                    (_, Kind::LibraryCorner) => ("status", json!(CORNER_STATUSES[pick % 3])),
                    (_, Kind::DemoSite) => ("status", json!(SITE_STATUSES[pick % 3])),
                    (_, Kind::LegalUnderstander) => {
                        ("status", json!(UNDERSTANDER_STATUSES[pick % 2]))
                    }
                };
                let top = before.hlc();
                let h = hlc(top.ms, top.c + 1, server_node());
                let new_seq = self.server.seq + 1;
                let after = resolve(&before, field, value, h, new_seq);
                self.server.seq = new_seq;
                self.commit(Some(before), after);
            }
        }
    }

    fn reloaded(&self) -> Aggregates {
        let mut fresh = Aggregates::default();
        for (k, v) in &self.persisted {
            fresh.load(k.clone(), v.clone());
        }
        fresh
    }
}

fn grassroots(tree: &OrgTree, code: &str) -> bool {
    tree.get(code).is_some_and(|u| u.unit_type.is_grassroots())
}

fn str_field<'a>(r: &'a RecordState, f: &str) -> Option<&'a str> {
    r.value(f).and_then(Value::as_str)
}

fn int_field(r: &RecordState, f: &str) -> Option<i64> {
    r.value(f).and_then(Value::as_i64)
}

/// Figures of `code`'s subtree computed straight from the records.
fn naive_figures(
    tree: &OrgTree,
    recs: &BTreeMap<Uuid, RecordState>,
    code: &str,
    from: Option<Date>,
    to: Option<Date>,
) -> (
    LectureTotals,
    CornerTotals,
    SiteTotals,
    UnderstanderTotals,
    u64,
) {
    // The subtree, found by walking parents (not via `OrgTree::subtree`).
    let within = |u: &str| {
        let mut cur = Some(u.to_string());
        while let Some(c) = cur {
            if c == code {
                return true;
            }
            cur = tree.get(&c).and_then(|x| x.parent.clone());
        }
        false
    };
    let subtree: Vec<&str> = UNITS.iter().copied().filter(|u| within(u)).collect();
    let mut lectures = LectureTotals::default();
    let mut corners = CornerTotals::default();
    let mut sites = SiteTotals::default();
    let mut understanders = UnderstanderTotals::default();
    let mut conflicts = 0;
    let mut lecture_units = BTreeSet::new();
    let mut corner_units = BTreeSet::new();
    let mut understander_units = BTreeSet::new();
    let years = from.map_or(i32::MIN, Date::year)..=to.map_or(i32::MAX, Date::year);
    for r in recs.values() {
        let Some(u) = r.org_unit() else { continue };
        if !within(u) {
            continue;
        }
        conflicts += u64::from(r.open_conflicts);
        if r.is_deleted() {
            continue;
        }
        match r.kind {
            Kind::Lecture => {
                let day = Date::parse(str_field(r, "held_on").unwrap()).unwrap();
                if from.is_none_or(|f| day >= f) && to.is_none_or(|t| day <= t) {
                    lectures.count += 1;
                    lectures.attendees += int_field(r, "attendees").unwrap() as u64;
                    if grassroots(tree, u) {
                        lecture_units.insert(u.to_string());
                    }
                }
            }
            Kind::LibraryCorner => {
                if str_field(r, "status") == Some("active") {
                    corners.active += 1;
                    if grassroots(tree, u) {
                        corner_units.insert(u.to_string());
                    }
                }
            }
            Kind::DemoSite => {
                let year = int_field(r, "year").unwrap() as i32;
                if str_field(r, "status") == Some("awarded") && years.contains(&year) {
                    match str_field(r, "level").unwrap() {
                        "national" => sites.national += 1,
                        "provincial" => sites.provincial += 1,
                        "municipal" => sites.municipal += 1,
                        "district" => sites.district += 1,
                        other => panic!("level {other}"),
                    }
                }
            }
            Kind::LegalUnderstander => {
                let day = Date::parse(str_field(r, "appointed_on").unwrap()).unwrap();
                if from.is_none_or(|f| day >= f) && to.is_none_or(|t| day <= t) {
                    understanders.appointed += 1;
                }
                if str_field(r, "status") == Some("serving") && to.is_none_or(|t| day <= t) {
                    understanders.serving += 1;
                    if grassroots(tree, u) {
                        understander_units.insert(u.to_string());
                    }
                }
            }
        }
    }
    lectures.units_covered = lecture_units.len() as u64;
    corners.units_covered = corner_units.len() as u64;
    corners.units_total = subtree.iter().filter(|u| grassroots(tree, u)).count() as u64;
    corners.coverage = if corners.units_total == 0 {
        0.0
    } else {
        (corners.units_covered as f64 / corners.units_total as f64 * 10_000.0).round() / 10_000.0
    };
    understanders.units_covered = understander_units.len() as u64;
    understanders.units_total = corners.units_total;
    understanders.coverage = if understanders.units_total == 0 {
        0.0
    } else {
        (understanders.units_covered as f64 / understanders.units_total as f64 * 10_000.0).round()
            / 10_000.0
    };
    (lectures, corners, sites, understanders, conflicts)
}

fn org_ref(tree: &OrgTree, code: &str) -> OrgRef {
    let u = tree.get(code).unwrap();
    OrgRef {
        code: u.code.clone(),
        name: u.name.clone(),
    }
}

fn naive_totals(
    tree: &OrgTree,
    recs: &BTreeMap<Uuid, RecordState>,
    org: &str,
    from: Option<&str>,
    to: Option<&str>,
) -> TotalsResponse {
    let (f, t) = (from.and_then(Date::parse), to.and_then(Date::parse));
    let (lectures, library_corners, demo_sites, legal_understanders, conflicts_open) =
        naive_figures(tree, recs, org, f, t);
    let mut kids: Vec<&str> = UNITS
        .iter()
        .copied()
        .filter(|u| tree.get(u).unwrap().parent.as_deref() == Some(org))
        .collect();
    kids.sort_unstable();
    let children = kids
        .into_iter()
        .map(|c| {
            let (lectures, library_corners, demo_sites, legal_understanders, conflicts_open) =
                naive_figures(tree, recs, c, f, t);
            ChildTotals {
                org: org_ref(tree, c),
                lectures,
                library_corners,
                demo_sites,
                legal_understanders,
                conflicts_open,
            }
        })
        .collect();
    TotalsResponse {
        org: org_ref(tree, org),
        from: from.map(str::to_string),
        to: to.map(str::to_string),
        lectures,
        library_corners,
        demo_sites,
        legal_understanders,
        conflicts_open,
        children,
    }
}

/// `(seq, count, xor)` straight from the records: everything (`None`) or
/// the subtree of a unit (seq: the greatest of records that were ever in it).
fn naive_checksum(
    tree: &OrgTree,
    recs: &BTreeMap<Uuid, RecordState>,
    root: Option<&str>,
) -> (u64, u64, u64) {
    let (mut seq, mut count, mut xor) = (0, 0, 0);
    for r in recs.values() {
        let ever = root.is_none_or(|c| r.ever.iter().any(|e| e == c));
        if ever {
            seq = seq.max(r.seq);
        }
        let now = match root {
            None => true,
            Some(c) => r.org_unit().is_some_and(|u| tree.is_within(u, c)),
        };
        if now {
            count += 1;
            xor ^= record_digest(r.id, r.seq);
        }
    }
    (seq, count, xor)
}

#[track_caller]
fn check_aggregates(
    store: &AggStore,
    agg: &Aggregates,
    ranges: &[(Option<&str>, Option<&str>)],
    what: &str,
) {
    let recs = &store.server.recs;
    for root in ["d", "s1", "s2", "c11", "c22", "v1"] {
        for (from, to) in RANGES.iter().chain(ranges) {
            let got = totals(
                &store.tree,
                agg,
                root,
                from.and_then(Date::parse),
                to.and_then(Date::parse),
            );
            let expect = naive_totals(&store.tree, recs, root, *from, *to);
            assert_eq!(
                got.as_ref(),
                Some(&expect),
                "{what}: {root} {from:?}..{to:?}"
            );
        }
        assert_eq!(
            agg.checksum_scope(&store.tree, root),
            naive_checksum(&store.tree, recs, Some(root)),
            "{what}: checksum of {root}"
        );
    }
    for code in UNITS {
        assert_eq!(
            agg.checksum_scope(&store.tree, code),
            naive_checksum(&store.tree, recs, Some(code)),
            "{what}: checksum of {code}"
        );
    }
    assert_eq!(
        agg.checksum_all(),
        naive_checksum(&store.tree, recs, None),
        "{what}: checksum of everything"
    );
    assert_eq!(agg.checksum_all().0, store.server.seq);
    assert!(totals(&store.tree, agg, "nope", None, None).is_none());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Incremental aggregates equal a recomputation from the records, and so
    /// do aggregates reloaded from the persisted dirty entries.
    #[test]
    fn aggregates_match_a_naive_recount(
        ops in prop::collection::vec(op(), 1..48),
        bounds in prop::collection::vec(
            (prop::option::of(select(DAYS)), prop::option::of(select(DAYS))),
            4,
        ),
    ) {
        // Random ranges over the same boundary days, `from` <= `to`.
        let ranges: Vec<_> = bounds
            .into_iter()
            .map(|(f, t)| match (f, t) {
                (Some(f), Some(t)) if f > t => (Some(t), Some(f)),
                other => other,
            })
            .collect();
        let mut store = AggStore::new();
        for (i, op) in ops.iter().enumerate() {
            store.step(op);
            if i % 16 == 15 {
                check_aggregates(&store, &store.agg, &ranges, "live (midway)");
            }
        }
        check_aggregates(&store, &store.agg, &ranges, "live");
        let reloaded = store.reloaded();
        check_aggregates(&store, &reloaded, &ranges, "reloaded");
        for code in UNITS {
            prop_assert_eq!(store.agg.unit(code), reloaded.unit(code), "unit {}", code);
        }
    }
}

#[test]
fn aggregates_follow_a_lecture_through_its_life() {
    let mut store = AggStore::new();
    let p = Pick {
        unit: 3, // c11
        day: 6,  // 2020-01-15
        title: 0,
        attendees: 40,
        name: 0,
        status: 0,
        level: 0,
        year: 2020,
        mask: 0,
    };
    let write = |ms: u64, pick: Pick, delete: Option<bool>| Op::Write {
        rec: 0,
        dev: 1,
        ms,
        c: 0,
        back: 0,
        pick,
        delete,
    };
    store.step(&write(1000, p.clone(), None));
    let t = |store: &AggStore| totals(&store.tree, &store.agg, "d", None, None).unwrap();
    assert_eq!(
        t(&store).lectures,
        LectureTotals {
            count: 1,
            attendees: 40,
            units_covered: 1
        }
    );
    assert_eq!(t(&store).children[0].lectures.count, 1, "s1 holds c11");
    assert_eq!(t(&store).children[1].lectures.count, 0, "s2");
    // Moving it to a street: counted, but no grassroots unit is covered.
    let moved = Pick {
        unit: 1,
        mask: 0b1,
        ..p.clone()
    };
    store.step(&write(1001, moved, None));
    assert_eq!(
        t(&store).lectures,
        LectureTotals {
            count: 1,
            attendees: 40,
            units_covered: 0
        }
    );
    store.step(&write(1002, p.clone(), Some(true)));
    assert_eq!(t(&store).lectures, LectureTotals::default());
    assert_eq!(store.agg.checksum_all().1, 1, "deleted records still count");
    store.step(&write(1003, p, Some(false)));
    assert_eq!(t(&store).lectures.count, 1);
    check_aggregates(&store, &store.agg, &[], "life");
    check_aggregates(&store, &store.reloaded(), &[], "life reloaded");
    // It was once in s1 (and c11): those scopes keep seeing its seq.
    assert_eq!(store.agg.checksum_scope(&store.tree, "c11").0, 4);
    assert_eq!(store.agg.checksum_scope(&store.tree, "s2").0, 0);
}

#[test]
fn record_digest_is_the_contract_hash() {
    let id = Uuid::parse_str("0192f7a0-0000-7000-8000-00000000abcd").unwrap();
    let d = Sha256::digest(b"0192f7a0-0000-7000-8000-00000000abcd:42");
    let expect = u64::from_be_bytes(d[..8].try_into().unwrap());
    assert_eq!(record_digest(id, 42), expect);
    assert_ne!(record_digest(id, 43), expect);
}

// ---------------------------------------------------------------------------
// 6. judge: the order of rule 2's checks
// ---------------------------------------------------------------------------

fn today() -> Today {
    Today(Date::parse("2020-07-01").unwrap())
}

fn mutation(kind: &str, node: Uuid, base_seq: u64, set: Value) -> Mutation {
    Mutation {
        id: Uuid::from_u128(0x77),
        record_id: rid(9),
        kind: kind.into(),
        base_seq,
        hlc: hlc(5000, 0, node),
        set: obj(set),
        delete: None,
    }
}

/// An existing lecture in `unit`.
fn existing_lecture(unit: &str) -> RecordState {
    let mut set = obj(full_lecture(10));
    set.insert("org_unit".into(), json!(unit));
    let w = W {
        record_id: rid(9),
        kind: Kind::Lecture,
        base_seq: 0,
        hlc: hlc(1000, 0, dev(5)),
        set,
        delete: None,
    };
    let m = merge(None, w.as_write(), 1);
    assert!(m.changed);
    m.state
}

#[track_caller]
fn check(
    m: &Mutation,
    existing: Option<&RecordState>,
    scope: &Scope,
    expect: Result<Kind, (RejectCode, &str)>,
) {
    let got = judge(m, dev(1), existing, &tree(), scope, today()).map_err(|r| (r.code, r.field));
    let expect = expect.map_err(|(code, field)| (code, Some(field.to_string())));
    assert_eq!(
        got,
        expect,
        "{} on {:?}",
        serde_json::to_string(m).unwrap(),
        existing.and_then(RecordState::org_unit)
    );
}

#[test]
fn judge_checks_in_the_contracts_order() {
    use RejectCode::*;
    let me = dev(1);
    let other = dev(2);
    let s1 = Scope::Unit("s1".into());
    let inside = existing_lecture("c11");
    let outside = existing_lecture("c21");
    let full = |unit: &str| {
        let mut v = full_lecture(5);
        v["org_unit"] = json!(unit);
        v
    };

    // Sound mutations pass.
    check(
        &mutation("lecture", me, 0, full("c11")),
        None,
        &s1,
        Ok(Kind::Lecture),
    );
    check(
        &mutation("lecture", me, 0, full("s1")),
        None,
        &s1,
        Ok(Kind::Lecture),
    );
    check(
        &mutation("lecture", me, 1, json!({"attendees": 3, "speaker": null})),
        Some(&inside),
        &s1,
        Ok(Kind::Lecture),
    );
    check(
        &mutation("lecture", me, 1, json!({})),
        Some(&inside),
        &s1,
        Ok(Kind::Lecture),
    );
    check(
        &mutation("lecture", me, 1, json!({"title": "x"})),
        Some(&outside),
        &Scope::All,
        Ok(Kind::Lecture),
    );

    // invalid_hlc first, before unknown_kind (and everything else).
    check(
        &mutation("seminar", other, 0, json!({"bogus": 1, "org_unit": "nope"})),
        Some(&outside),
        &s1,
        Err((InvalidHlc, "hlc")),
    );
    check(
        &mutation("lecture", other, 0, full("c11")),
        None,
        &s1,
        Err((InvalidHlc, "hlc")),
    );

    // unknown_kind before kind_mismatch.
    check(
        &mutation("seminar", me, 1, json!({"bogus": 1})),
        Some(&inside),
        &s1,
        Err((UnknownKind, "kind")),
    );
    check(
        &mutation("Lecture", me, 0, full("c11")),
        None,
        &s1,
        Err((UnknownKind, "kind")),
    );

    // out_of_scope for an existing record outside the scope right after
    // unknown_kind: before kind_mismatch, field errors and unit checks
    // (§6 rule 2, amended), and its message names nothing of the record.
    for m in [
        mutation("demo_site", me, 1, json!({"title": "x"})),
        mutation("lecture", me, 1, json!({"attendees": -1, "colour": "red"})),
        mutation("lecture", me, 1, json!({"org_unit": "nope", "title": null})),
        mutation("library_corner", me, 1, json!({"org_unit": "c11"})),
    ] {
        check(&m, Some(&outside), &s1, Err((OutOfScope, "org_unit")));
        let r = judge(&m, me, Some(&outside), &tree(), &s1, today()).unwrap_err();
        for secret in ["c21", "lecture", &outside.id.to_string()] {
            assert!(!r.message.contains(secret), "{secret} in {:?}", r.message);
        }
    }
    check(
        &mutation("seminar", me, 1, json!({})),
        Some(&outside),
        &s1,
        Err((UnknownKind, "kind")),
    );

    // kind_mismatch before field errors.
    check(
        &mutation(
            "demo_site",
            me,
            1,
            json!({"attendees": -1, "org_unit": "nope"}),
        ),
        Some(&inside),
        &s1,
        Err((KindMismatch, "kind")),
    );

    // Field errors before unknown_org_unit.
    check(
        &mutation(
            "lecture",
            me,
            0,
            json!({"org_unit": "nope", "attendees": -1}),
        ),
        None,
        &s1,
        Err((InvalidField, "attendees")),
    );
    check(
        &mutation(
            "lecture",
            me,
            0,
            json!({"org_unit": "nope", "colour": "red"}),
        ),
        None,
        &s1,
        Err((UnknownField, "colour")),
    );
    check(
        &mutation("lecture", me, 1, json!({"org_unit": "nope", "title": null})),
        Some(&inside),
        &s1,
        Err((MissingField, "title")),
    );
    check(
        &mutation("lecture", me, 0, json!({"org_unit": "", "title": "x"})),
        None,
        &s1,
        Err((InvalidField, "org_unit")),
    );
    check(
        &mutation("lecture", me, 0, json!({"attendees": 87.0})),
        None,
        &s1,
        Err((InvalidField, "attendees")),
    );

    // unknown_org_unit before missing_field for a new record.
    check(
        &mutation("lecture", me, 0, json!({"org_unit": "nope"})),
        None,
        &s1,
        Err((UnknownOrgUnit, "org_unit")),
    );
    check(
        &mutation("lecture", me, 1, json!({"org_unit": "nope"})),
        Some(&inside),
        &s1,
        Err((UnknownOrgUnit, "org_unit")),
    );

    // missing_field (new record, first required field in spec order)
    // before out_of_scope.
    check(
        &mutation("lecture", me, 0, json!({"org_unit": "c21", "title": "x"})),
        None,
        &s1,
        Err((MissingField, "held_on")),
    );
    check(
        &mutation("lecture", me, 0, json!({})),
        None,
        &s1,
        Err((MissingField, "org_unit")),
    );
    check(
        &mutation(
            "demo_site",
            me,
            0,
            json!({"org_unit": "c21", "level": "national", "status": "awarded"}),
        ),
        None,
        &s1,
        Err((MissingField, "year")),
    );

    // out_of_scope: a set unit outside the scope...
    check(
        &mutation("lecture", me, 0, full("c21")),
        None,
        &s1,
        Err((OutOfScope, "org_unit")),
    );
    check(
        &mutation("lecture", me, 0, full("d")),
        None,
        &s1,
        Err((OutOfScope, "org_unit")),
    );
    check(
        &mutation("lecture", me, 1, json!({"org_unit": "c21"})),
        Some(&inside),
        &s1,
        Err((OutOfScope, "org_unit")),
    );
    // ...or the record's current unit outside it, even when moving it in.
    check(
        &mutation("lecture", me, 1, json!({"title": "x"})),
        Some(&outside),
        &s1,
        Err((OutOfScope, "org_unit")),
    );
    check(
        &mutation("lecture", me, 1, json!({"org_unit": "c11"})),
        Some(&outside),
        &s1,
        Err((OutOfScope, "org_unit")),
    );
    let mut delete_only = mutation("lecture", me, 1, json!({}));
    delete_only.delete = Some(true);
    check(
        &delete_only,
        Some(&outside),
        &s1,
        Err((OutOfScope, "org_unit")),
    );
    check(&delete_only, Some(&inside), &s1, Ok(Kind::Lecture));
}

// ---------------------------------------------------------------------------
// 7. The idempotency fingerprint is stable: stored fingerprints (`Applied`)
//    must keep matching after the hashing code changes.
// ---------------------------------------------------------------------------

/// The fingerprint as first written: the set cloned into a JSON value,
/// printed canonically into a string, hashed.
fn reference_content_hash(m: &Mutation) -> [u8; 16] {
    fn canonical(v: &Value, out: &mut String) {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    canonical(&map[k], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut text = String::new();
    canonical(&Value::Object(m.set.clone()), &mut text);
    let mut h = Sha256::new();
    h.update(m.record_id.as_bytes());
    h.update(b"\0");
    h.update(m.kind.as_bytes());
    h.update(b"\0");
    h.update(m.hlc.ms.to_be_bytes());
    h.update(m.hlc.c.to_be_bytes());
    h.update(m.hlc.node.as_bytes());
    h.update(text.as_bytes());
    h.update([match m.delete {
        None => 0,
        Some(false) => 1,
        Some(true) => 2,
    }]);
    h.finalize()[..16].try_into().unwrap()
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::String),
        Just(json!("引号\"与\\反斜杠\n\u{1}")),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn content_hash_matches_its_first_definition(
        set in prop::collection::btree_map("[a-z_\"\\\\]{0,8}", arb_json(), 0..8),
        delete in prop_oneof![Just(None), Just(Some(false)), Just(Some(true))],
    ) {
        let mut m = mutation("lecture", dev(3), 0, Value::Object(set.into_iter().collect()));
        m.delete = delete;
        prop_assert_eq!(pufa_core::merge::content_hash(&m), reference_content_hash(&m));
    }
}
