//! Arbitrary bytes through the server's path for `POST /v1/sync/push`:
//!
//! 1. the body as `ApiJson<PushBody>` reads it (`serde_path_to_error` over
//!    `serde_json`, any `Content-Type`), and each mutation as `parse_at`
//!    reads it (`mutations[i]`), with the error texts the server builds;
//! 2. the request-level checks (`PUSH_MUTATIONS_MAX`);
//! 3. rule 1 (idempotency by mutation id and content hash, `base_seq` not
//!    being content), rule 2 (`judge`: every schema check, org tree and
//!    scope) and the merge, in batch order, against an in-memory model of
//!    the store.
//!
//! Nothing may panic. Whatever is accepted, the records it builds must
//! satisfy the schema: required fields present, every value valid, every
//! org unit known and inside the pusher's scope. Merging an accepted
//! mutation a second time moves no register.

#![no_main]

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pufa_core::date::Date;
use pufa_core::merge::{content_hash, judge, merge, RecordState, Write};
use pufa_core::org::{OrgTree, Scope};
use pufa_core::schema::{check_set, first_missing_required, Today};
use pufa_core::wire::{ErrorBody, Mutation, OrgUnit, PushBody, UnitType, PUSH_MUTATIONS_MAX};
use uuid::Uuid;

/// 2020-07-01: the seeds' lectures are valid on this day.
const NOW_MS: u64 = 1_593_561_600_000;

/// `d` → streets `s1`, `s2` → `c11`, `c12` (in s1), `v21` (in s2).
fn tree() -> &'static OrgTree {
    static TREE: OnceLock<OrgTree> = OnceLock::new();
    TREE.get_or_init(|| {
        let unit = |code: &str, t, parent: Option<&str>| OrgUnit {
            code: code.into(),
            name: code.to_uppercase(),
            unit_type: t,
            parent: parent.map(str::to_string),
        };
        OrgTree::from_units([
            unit("d", UnitType::District, None),
            unit("s1", UnitType::Street, Some("d")),
            unit("s2", UnitType::Street, Some("d")),
            unit("c11", UnitType::Community, Some("s1")),
            unit("c12", UnitType::Community, Some("s1")),
            unit("v21", UnitType::Village, Some("s2")),
        ])
    })
}

/// The server's `bad_json` text for a serde error at `path`.
fn bad_json<E: std::fmt::Display>(e: &serde_path_to_error::Error<E>, prefix: &str) -> String {
    let inner = e.path().to_string();
    let path = if inner == "." {
        prefix.to_string()
    } else {
        format!("{prefix}.{inner}")
    };
    format!("{path}: {}", e.inner())
}

fuzz_target!(|data: &[u8]| {
    let de = &mut serde_json::Deserializer::from_slice(data);
    let body: PushBody = match serde_path_to_error::deserialize(de) {
        Ok(b) => b,
        Err(e) => {
            let _ = bad_json(&e, "");
            return;
        }
    };
    let mut mutations: Vec<Mutation> = Vec::with_capacity(body.mutations.len());
    for (i, raw) in body.mutations.iter().enumerate() {
        let de = &mut serde_json::Deserializer::from_str(raw.get());
        match serde_path_to_error::deserialize(de) {
            Ok(m) => mutations.push(m),
            Err(e) => {
                let _ = bad_json(&e, &format!("mutations[{i}]"));
                return;
            }
        }
    }
    if mutations.len() > PUSH_MUTATIONS_MAX {
        return;
    }

    // A field device of street s1, or an admin: the body's low bit picks.
    let scope = if data.len() % 2 == 0 {
        Scope::Unit("s1".into())
    } else {
        Scope::All
    };
    let today = Today(Date::from_unix_ms(NOW_MS));
    let tree = tree();
    let mut records: BTreeMap<Uuid, RecordState> = BTreeMap::new();
    let mut applied: HashMap<Uuid, [u8; 16]> = HashMap::new();
    let mut accepted: Vec<&Mutation> = Vec::new();
    let mut seq = 0u64;
    for m in &mutations {
        let content = content_hash(m);
        // Rule 1: `base_seq` is not content.
        let rebased = Mutation {
            base_seq: m.base_seq ^ 1,
            ..m.clone()
        };
        assert_eq!(
            content,
            content_hash(&rebased),
            "base_seq changed the content hash"
        );
        if let Some(prev) = applied.get(&m.id) {
            // `duplicate` (same content) or `id_reused`: nothing changes.
            let _ = *prev == content;
            continue;
        }
        let existing = records.get(&m.record_id);
        match judge(m, body.device_id, existing, tree, &scope, today) {
            Err(r) => {
                // The result's error object is in the contract's shape.
                let e = r.to_error();
                assert!(!e.code.is_empty() && !e.message.is_empty());
                let text = serde_json::to_string(&ErrorBody { error: e }).unwrap();
                assert!(serde_json::from_str::<ErrorBody>(&text).is_ok());
            }
            Ok(kind) => {
                let merged = merge(existing, Write::of(m, kind, m.hlc), seq + 1);
                applied.insert(m.id, content);
                accepted.push(m);
                if merged.changed {
                    seq += 1;
                    assert_eq!(merged.state.seq, seq);
                    records.insert(m.record_id, merged.state);
                }
            }
        }
    }

    // Merging an applied mutation again (a server that forgot rule 1) moves
    // no register: the mutation-id check is a guard, not what keeps data
    // right.
    for m in accepted {
        let Some(r) = records.get(&m.record_id) else {
            continue; // an empty write creates nothing
        };
        let again = merge(Some(r), Write::of(m, r.kind, m.hlc), seq + 1);
        let regs = |s: &RecordState| {
            let f: Vec<_> = s
                .fields
                .iter()
                .map(|(k, r)| (k.clone(), r.value.clone(), r.hlc))
                .collect();
            (f, s.deleted.as_ref().map(|d| (d.value.clone(), d.hlc)))
        };
        assert_eq!(
            regs(r),
            regs(&again.state),
            "a repeated mutation moved a register"
        );
    }

    // What was accepted is valid.
    for r in records.values() {
        let view = r.view();
        let missing = first_missing_required(r.kind, |f| view.fields.contains_key(f));
        assert_eq!(missing, None, "record {} lacks a required field", r.id);
        if let Err(e) = check_set(r.kind, &view.fields, today) {
            panic!("record {} holds an invalid value: {e:?}", r.id);
        }
        let unit = r.org_unit().expect("org_unit is required");
        assert!(tree.in_scope(unit, &scope), "{unit} is out of scope");
        serde_json::to_vec(&view).unwrap();
    }
});
