//! What an audit entry says changed, and the replay that checks it.
//!
//! Every record write the server makes (a push, a resolution, a move caused
//! by re-parenting a unit) is logged with the values it changed:
//! [`changes`] compares the record before and after. Replaying a record's
//! changes in log order ([`Replay`]) must give its current fields and
//! `deleted` flag; `pufa-server verify` relies on that to detect a record or
//! a log entry edited in the store.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::merge::{RecordState, DELETED_FIELD};

/// The pseudo-field of a move: the record's unit and its ancestors (unit
/// first, as [`crate::org::OrgTree::chain`] gives them) before and after.
pub const PATH_FIELD: &str = "_path";

/// The pseudo-field of a "not a duplicate" mark: `to` is the id of the
/// other record of the pair (a mark changes neither record).
pub const NOT_DUPLICATE_FIELD: &str = "_not_duplicate_of";

/// One value that a write changed. `null` stands for "absent" (never set,
/// or cleared). `_deleted` goes from `null`/`false` to `true` and back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub field: String,
    pub from: Value,
    pub to: Value,
}

fn deleted_value(r: Option<&RecordState>) -> Value {
    r.and_then(|r| r.deleted.as_ref())
        .map_or(Value::Null, |d| d.value.clone())
}

/// The values that differ between `before` (none: a new record) and
/// `after`, fields in name order, `_deleted` last. A write that only moved
/// HLCs or opened conflicts changes no value: the list is empty.
pub fn changes(before: Option<&RecordState>, after: &RecordState) -> Vec<Change> {
    let value = |r: Option<&RecordState>, f: &str| {
        r.and_then(|r| r.value(f)).cloned().unwrap_or(Value::Null)
    };
    let mut names: Vec<&String> = after.fields.keys().collect();
    if let Some(b) = before {
        names.extend(b.fields.keys());
        names.sort_unstable();
        names.dedup();
    }
    let mut out: Vec<Change> = names
        .into_iter()
        .filter_map(|name| {
            let (from, to) = (value(before, name), value(Some(after), name));
            (from != to).then(|| Change {
                field: name.clone(),
                from,
                to,
            })
        })
        .collect();
    let (from, to) = (deleted_value(before), deleted_value(Some(after)));
    if from != to {
        out.push(Change {
            field: DELETED_FIELD.to_string(),
            from,
            to,
        });
    }
    out
}

/// A record rebuilt from its logged changes alone.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Replay {
    pub fields: BTreeMap<String, Value>,
    pub deleted: bool,
}

impl Replay {
    /// Applies one entry's changes (`_path` and `_not_duplicate_of` are
    /// not fields and are skipped).
    pub fn apply(&mut self, changes: &[Change]) {
        for c in changes {
            if c.field == DELETED_FIELD {
                self.deleted = c.to == Value::Bool(true);
            } else if c.field == PATH_FIELD || c.field == NOT_DUPLICATE_FIELD {
                continue;
            } else if c.to.is_null() {
                self.fields.remove(&c.field);
            } else {
                self.fields.insert(c.field.clone(), c.to.clone());
            }
        }
    }

    /// The first difference from `record`'s current values, as text.
    ///
    /// # Errors
    /// A sentence naming the field that differs.
    pub fn check(&self, record: &RecordState) -> Result<(), String> {
        let current = record.view();
        for (name, v) in &current.fields {
            match self.fields.get(name) {
                Some(r) if r == v => {}
                Some(r) => return Err(format!("field {name} is {v}, its audit entries give {r}")),
                None => {
                    return Err(format!(
                        "field {name} is {v}, its audit entries never set it"
                    ))
                }
            }
        }
        if let Some(name) = self
            .fields
            .keys()
            .find(|k| !current.fields.contains_key(*k))
        {
            return Err(format!(
                "field {name} is absent, its audit entries give {}",
                self.fields[name]
            ));
        }
        if self.deleted != current.deleted {
            return Err(format!(
                "deleted is {}, its audit entries give {}",
                current.deleted, self.deleted
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::hlc::Hlc;
    use crate::merge::Register;
    use crate::schema::Kind;

    fn record(fields: &[(&str, Value)], deleted: Option<bool>) -> RecordState {
        let reg = |value: Value| Register {
            value,
            hlc: Hlc::new(1, 0, Uuid::nil()),
            seq: 1,
        };
        RecordState {
            id: Uuid::nil(),
            kind: Kind::Lecture,
            seq: 1,
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), reg(v.clone())))
                .collect(),
            deleted: deleted.map(|d| reg(Value::Bool(d))),
            open_conflicts: 0,
            ever: Vec::new(),
        }
    }

    #[test]
    fn changes_name_each_value_that_moved_and_replay_rebuilds_the_record() {
        let a = record(&[("title", json!("a")), ("attendees", json!(87))], None);
        let b = record(
            &[
                ("title", json!("a")),
                ("attendees", json!(90)),
                ("speaker", Value::Null),
            ],
            Some(true),
        );
        let c = record(&[("title", json!("b")), ("notes", json!("n"))], Some(false));
        let first = changes(None, &a);
        assert_eq!(
            first,
            vec![
                Change {
                    field: "attendees".into(),
                    from: Value::Null,
                    to: json!(87)
                },
                Change {
                    field: "title".into(),
                    from: Value::Null,
                    to: json!("a")
                },
            ]
        );
        let second = changes(Some(&a), &b);
        assert_eq!(
            second,
            vec![
                Change {
                    field: "attendees".into(),
                    from: json!(87),
                    to: json!(90)
                },
                Change {
                    field: "_deleted".into(),
                    from: Value::Null,
                    to: json!(true)
                },
            ],
            "a cleared field that was never set is no change"
        );
        let third = changes(Some(&b), &c);
        let mut replay = Replay::default();
        for step in [&first, &second, &third] {
            replay.apply(step);
        }
        assert_eq!(replay.check(&c), Ok(()));
        assert!(replay.check(&b).is_err());
        assert!(changes(Some(&c), &c).is_empty());
    }
}
