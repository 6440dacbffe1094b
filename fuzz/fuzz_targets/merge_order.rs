//! Differential merge: an arbitrary sequence of writes to a few records,
//! merged with `pufa_core::merge::merge` in the given order and again in a
//! permuted order with repeats (a device retrying, pushes racing), must end
//! with the same registers and the same pulled views, and those must be the
//! per-register maximum by (HLC, canonical value) (contract §6,
//! "Convergence"). Values are arbitrary JSON, wider than the property
//! tests' small alphabets: floats, nesting, equal HLCs with unequal values.
//!
//! Every single merge also keeps the invariants the store relies on: a
//! changed record takes the new seq, registers never go back, an unchanged
//! record comes back as it was, a conflict's winner is the value that stands.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use pufa_core::hlc::Hlc;
use pufa_core::merge::{
    canonical_json, merge, Merged, RecordState, Register, Write, DELETED_FIELD,
};
use pufa_core::schema::Kind;
use serde_json::{Map, Number, Value};
use uuid::Uuid;

const RECORDS: u8 = 3;
const DEVICES: u8 = 3;
const WRITES_MAX: usize = 24;
const FIELDS: &[&str] = &[
    "title",
    "attendees",
    "speaker",
    "topics",
    "org_unit",
    "notes",
];

fn device(i: u8) -> Uuid {
    Uuid::from_u128(0x0192_f7a0_0000_7000_8000_0000_0000_0000 + u128::from(i % DEVICES))
}

fn record(i: u8) -> Uuid {
    Uuid::from_u128(0x0192_f7a0_1111_7000_8000_0000_0000_0000 + u128::from(i % RECORDS))
}

/// A JSON value of bounded depth.
fn value(u: &mut Unstructured<'_>, depth: u8) -> arbitrary::Result<Value> {
    Ok(match u.int_in_range(0..=8u8)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.int_in_range(-2..=2i64)?),
        3 => Value::from(u.arbitrary::<i64>()?),
        4 => Value::from(u.arbitrary::<u64>()?),
        5 => Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
        6 => {
            let s: String = u.arbitrary()?;
            Value::String(s.chars().take(8).collect())
        }
        7 if depth > 0 => {
            let n = u.int_in_range(0..=3usize)?;
            Value::Array(
                (0..n)
                    .map(|_| value(u, depth - 1))
                    .collect::<Result<_, _>>()?,
            )
        }
        8 if depth > 0 => {
            let n = u.int_in_range(0..=3usize)?;
            let mut m = Map::new();
            for _ in 0..n {
                let k = FIELDS[u.choose_index(FIELDS.len())?];
                m.insert(k.to_string(), value(u, depth - 1)?);
            }
            Value::Object(m)
        }
        _ => Value::from("民法典"),
    })
}

/// One write as a device would push it (judged already: merge is total).
#[derive(Clone, Debug)]
struct W {
    rec: u8,
    hlc: Hlc,
    base_seq: u64,
    set: Map<String, Value>,
    delete: Option<bool>,
}

impl<'a> Arbitrary<'a> for W {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<W> {
        let rec = u.int_in_range(0..=RECORDS - 1)?;
        // A narrow clock window, so that equal HLCs (a misbehaving device,
        // or two devices at the same ms and counter) happen often.
        let hlc = Hlc::new(
            1000 + u64::from(u.int_in_range(0..=3u8)?),
            u32::from(u.int_in_range(0..=2u8)?),
            device(u.arbitrary()?),
        );
        let base_seq = u64::from(u.int_in_range(0..=8u8)?);
        let mut set = Map::new();
        for _ in 0..u.int_in_range(0..=3usize)? {
            let k = FIELDS[u.choose_index(FIELDS.len())?];
            set.insert(k.to_string(), value(u, 2)?);
        }
        let delete = match u.int_in_range(0..=3u8)? {
            0 => Some(true),
            1 => Some(false),
            _ => None,
        };
        Ok(W {
            rec,
            hlc,
            base_seq,
            set,
            delete,
        })
    }
}

#[derive(Debug)]
struct Case {
    writes: Vec<W>,
    /// A second schedule: every write at least once, some repeated, in an
    /// order the fuzzer picks.
    order: Vec<usize>,
}

impl<'a> Arbitrary<'a> for Case {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Case> {
        let n = u.int_in_range(1..=WRITES_MAX)?;
        let writes = (0..n)
            .map(|_| W::arbitrary(u))
            .collect::<Result<Vec<_>, _>>()?;
        let mut order: Vec<usize> = (0..n).collect();
        for _ in 0..u.int_in_range(0..=n)? {
            order.push(u.choose_index(n)?);
        }
        // Fisher–Yates with the fuzzer's choices.
        for i in (1..order.len()).rev() {
            let j = u.int_in_range(0..=i)?;
            order.swap(i, j);
        }
        Ok(Case { writes, order })
    }
}

fn write_key(r: &Register) -> (Hlc, String) {
    (r.hlc, canonical_json(&r.value))
}

#[derive(Default)]
struct Store {
    recs: BTreeMap<Uuid, RecordState>,
    seq: u64,
}

impl Store {
    fn push(&mut self, w: &W) {
        let id = record(w.rec);
        let before = self.recs.get(&id).cloned();
        let write = Write {
            record_id: id,
            kind: Kind::Lecture,
            base_seq: w.base_seq,
            hlc: w.hlc,
            set: &w.set,
            delete: w.delete,
        };
        let m = merge(before.as_ref(), write, self.seq + 1);
        check(before.as_ref(), self.seq + 1, &m);
        if m.changed {
            self.seq += 1;
            self.recs.insert(id, m.state);
        }
    }
}

fn check(before: Option<&RecordState>, new_seq: u64, m: &Merged) {
    if m.changed {
        assert_eq!(m.state.seq, new_seq, "a changed record takes the new seq");
        let was = before.map_or(0, |b| b.open_conflicts);
        assert_eq!(m.state.open_conflicts, was + m.conflicts.len() as u32);
    } else {
        assert!(m.conflicts.is_empty(), "a conflict without a change");
        if let Some(b) = before {
            assert_eq!(&m.state, b, "an unchanged record changed");
        }
    }
    if let Some(b) = before {
        for (name, r) in &b.fields {
            assert!(
                write_key(&m.state.fields[name]) >= write_key(r),
                "{name} went back"
            );
        }
        if let Some(r) = &b.deleted {
            let after = m
                .state
                .deleted
                .as_ref()
                .expect("the deleted register stays");
            assert!(write_key(after) >= write_key(r), "deleted went back");
        }
    }
    for c in &m.conflicts {
        assert_ne!(c.winner, c.loser, "a conflict between equal values");
        let standing = if c.field == DELETED_FIELD {
            Value::Bool(m.state.is_deleted())
        } else {
            m.state.fields[&c.field].value.clone()
        };
        assert_eq!(c.winner, standing, "the winner is not what stands");
    }
}

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

/// The per-register maximum over all writes: what every order must reach.
fn expected(writes: &[W]) -> BTreeMap<Uuid, Regs> {
    let mut best: BTreeMap<Uuid, Regs> = BTreeMap::new();
    let better = |old: &Option<(Value, Hlc)>, v: &Value, h: Hlc| {
        old.as_ref()
            .is_none_or(|(ov, oh)| (h, canonical_json(v)) > (*oh, canonical_json(ov)))
    };
    for w in writes {
        if w.set.is_empty() && w.delete.is_none() {
            continue; // creates nothing
        }
        let e = best.entry(record(w.rec)).or_default();
        for (k, v) in &w.set {
            if better(&e.0.get(k).cloned(), v, w.hlc) {
                e.0.insert(k.clone(), (v.clone(), w.hlc));
            }
        }
        if let Some(d) = w.delete {
            let v = Value::Bool(d);
            if better(&e.1, &v, w.hlc) {
                e.1 = Some((v, w.hlc));
            }
        }
    }
    best
}

fuzz_target!(|case: Case| {
    let mut a = Store::default();
    for w in &case.writes {
        a.push(w);
    }
    let mut b = Store::default();
    for &i in &case.order {
        b.push(&case.writes[i]);
    }
    let want = expected(&case.writes);
    assert_eq!(
        a.recs.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "records created"
    );
    assert_eq!(
        a.recs.keys().collect::<Vec<_>>(),
        b.recs.keys().collect::<Vec<_>>(),
        "records created in the other order"
    );
    for (id, ra) in &a.recs {
        let rb = &b.recs[id];
        assert_eq!(registers(ra), want[id], "not the per-register maximum");
        assert_eq!(registers(ra), registers(rb), "the orders disagree");
        let (va, vb) = (ra.view(), rb.view());
        assert_eq!(va.fields, vb.fields);
        assert_eq!(va.deleted, vb.deleted);
        assert_eq!(va.hlc, vb.hlc);
    }
});
