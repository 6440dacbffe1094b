//! Criterion benchmarks of pufa-core's hot pure paths: field validation,
//! judging and merging a push batch, hashing, push-body parsing, checksums
//! and totals over a district-sized aggregate.
//!
//! Run with `cargo bench -p pufa-core` (add `-- <filter>` for one group).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use pufa_core::date::Date;
use pufa_core::hlc::Hlc;
use pufa_core::merge::{content_hash, judge, merge, record_digest, RecordState, Register, Write};
use pufa_core::org::{OrgTree, Scope};
use pufa_core::schema::{check_set, Kind, Today};
use pufa_core::totals::{totals, Aggregates};
use pufa_core::wire::{Mutation, OrgUnit, PushRequest};

const BATCH: usize = 500;
const DISTRICT: &str = "140106";
/// 2020-01-01T00:00:00Z in Unix milliseconds.
const MS_2020: u64 = 1_577_836_800_000;

fn device() -> Uuid {
    Uuid::from_u128(0x0192_f7a0_0000_7000_8000_0000_0000_0001)
}

fn other_device() -> Uuid {
    Uuid::from_u128(0x0192_f7a0_0000_7000_8000_0000_0000_0002)
}

fn today() -> Today {
    Today(Date::parse("2021-06-01").expect("valid date"))
}

fn tree() -> OrgTree {
    // The repo's copy of the shared fixture (the server's demo embeds it).
    let text = include_str!("../../server/demo/yingze-org-units.json");
    let units: Vec<OrgUnit> = serde_json::from_str(text).expect("org unit fixture");
    OrgTree::from_units(units)
}

/// Community and village codes: where field devices record lectures.
fn grassroots(tree: &OrgTree) -> Vec<String> {
    tree.units()
        .filter(|u| u.unit_type.is_grassroots())
        .map(|u| u.code.clone())
        .collect()
}

/// One lecture's `set`, ~400 bytes of JSON, as pufa-bench pushes it.
fn lecture_set(unit: &str, n: u64) -> Map<String, Value> {
    let day = 1 + n % 28;
    let month = 1 + (n / 28) % 12;
    let v = json!({
        "org_unit": unit, "held_on": format!("2020-{month:02}-{day:02}"),
        "title": "民法典进社区：婚姻家庭编与继承编解读", "attendees": 20 + n % 180,
        "topics": ["民法典", "婚姻家庭"], "speaker": "王律师", "venue": "社区活动中心二楼会议室",
        "audience": "residents", "notes": "居民踊跃提问，现场发放宣传资料一百余份。"
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn lecture(units: &[String], n: u64) -> Mutation {
    Mutation {
        id: Uuid::from_u128(0x1000_0000_0000_0000 + u128::from(n)),
        record_id: Uuid::from_u128(0x2000_0000_0000_0000 + u128::from(n)),
        kind: "lecture".into(),
        base_seq: 0,
        hlc: Hlc::new(MS_2020 + n, 0, device()),
        set: lecture_set(&units[n as usize % units.len()], n),
        delete: None,
    }
}

fn batch(units: &[String]) -> Vec<Mutation> {
    (0..BATCH as u64).map(|n| lecture(units, n)).collect()
}

fn bench_validate(c: &mut Criterion) {
    let tree = tree();
    let units = grassroots(&tree);
    let m = lecture(&units, 7);
    c.bench_function("validate/lecture", |b| {
        b.iter(|| check_set(Kind::Lecture, black_box(&m.set), today()).expect("valid lecture"))
    });
}

fn bench_judge_merge(c: &mut Criterion) {
    let tree = tree();
    let units = grassroots(&tree);
    let scope = Scope::Unit(DISTRICT.into());
    let dev = device();

    let mut g = c.benchmark_group("judge+merge");
    g.throughput(Throughput::Elements(BATCH as u64));
    let fresh = batch(&units);
    g.bench_function("batch_500_new", |b| {
        b.iter(|| {
            let mut changed = 0usize;
            for (i, m) in black_box(&fresh).iter().enumerate() {
                let kind = judge(m, dev, None, &tree, &scope, today()).expect("accepted");
                let merged = merge(None, Write::of(m, kind, m.hlc), i as u64 + 1);
                changed += usize::from(merged.changed);
            }
            changed
        })
    });
    g.finish();

    // Existing records written by `dev` at seqs 1..=500; edits come from
    // another device. Every 5th edit has not seen the stored write
    // (base_seq 0) and so conflicts; every 10th of those also loses (older
    // HLC than the stored one).
    let existing: Vec<RecordState> = fresh
        .iter()
        .enumerate()
        .map(|(i, m)| merge(None, Write::of(m, Kind::Lecture, m.hlc), i as u64 + 1).state)
        .collect();
    let edits: Vec<Mutation> = existing
        .iter()
        .enumerate()
        .map(|(i, rec)| {
            let n = i as u64;
            let mut set = Map::new();
            set.insert(
                "title".into(),
                json!(format!("民法典宣讲（修订稿第{n}号）")),
            );
            set.insert("attendees".into(), json!(30 + n % 150));
            // `matches!` rather than `is_multiple_of`: the workspace's MSRV is 1.85.
            if matches!(n % 2, 0) {
                set.insert(
                    "notes".into(),
                    json!("补录：现场签到表已上传，另有二十人未签到。"),
                );
            }
            let conflicting = matches!(n % 10, 0 | 5);
            let ms = match n % 10 {
                0 => MS_2020 - 1,
                _ => MS_2020 + 10_000 + n,
            };
            Mutation {
                id: Uuid::from_u128(0x3000_0000_0000_0000 + u128::from(n)),
                record_id: rec.id,
                kind: "lecture".into(),
                base_seq: if conflicting { 0 } else { rec.seq },
                hlc: Hlc::new(ms, 0, other_device()),
                set,
                delete: None,
            }
        })
        .collect();
    // Returns (records with a conflict, conflicting fields).
    let merge_edits = |edits: &[Mutation]| {
        let (mut records, mut fields) = (0usize, 0usize);
        for (i, (m, rec)) in edits.iter().zip(&existing).enumerate() {
            let merged = merge(
                Some(rec),
                Write::of(m, Kind::Lecture, m.hlc),
                (BATCH + i) as u64 + 1,
            );
            records += usize::from(!merged.conflicts.is_empty());
            fields += merged.conflicts.len();
        }
        (records, fields)
    };
    // 100 conflicting edits: 50 touch title, attendees, notes; 50 only two.
    assert_eq!(merge_edits(&edits), (BATCH / 5, 250));
    let mut g = c.benchmark_group("merge");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("batch_500_edits", |b| {
        b.iter(|| merge_edits(black_box(&edits)))
    });
    g.finish();
}

fn bench_hash_parse(c: &mut Criterion) {
    let tree = tree();
    let units = grassroots(&tree);
    let m = lecture(&units, 7);
    c.bench_function("content_hash/lecture", |b| {
        b.iter(|| content_hash(black_box(&m)))
    });

    let body = serde_json::to_vec(&PushRequest {
        device_id: device(),
        mutations: batch(&units),
        device: None,
    })
    .expect("serialisable");
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("push_500", |b| {
        b.iter(|| {
            serde_json::from_slice::<PushRequest>(black_box(&body))
                .expect("valid body")
                .mutations
                .len()
        })
    });
    g.finish();
}

fn bench_checksum(c: &mut Criterion) {
    let pairs: Vec<(Uuid, u64)> = (0..100_000u64)
        .map(|n| {
            (
                Uuid::from_u128(0x4000_0000_0000_0000 + u128::from(n) * 7919),
                n + 1,
            )
        })
        .collect();
    let mut g = c.benchmark_group("checksum");
    g.throughput(Throughput::Elements(pairs.len() as u64));
    g.bench_function("100k", |b| {
        b.iter(|| {
            black_box(&pairs)
                .iter()
                .fold(0u64, |x, &(id, seq)| x ^ record_digest(id, seq))
        })
    });
    g.finish();
}

/// 1,000,000 lecture states spread over every unit of the tree, `held_on`
/// across 2019-01-01..=2021-12-31, applied as fresh inserts. One state is
/// reused and edited in place: building a million via `merge` would only
/// slow set-up. `ever` is left empty (it feeds checksums, not totals).
fn district_aggregates(tree: &OrgTree) -> Aggregates {
    let codes: Vec<String> = tree.units().map(|u| u.code.clone()).collect();
    let first = Date::from_ymd(2019, 1, 1).expect("valid date");
    let days = Date::from_ymd(2022, 1, 1).expect("valid date").0 - first.0;
    let reg = |value: Value| Register {
        value,
        hlc: Hlc::new(MS_2020, 0, device()),
        seq: 0,
    };
    let mut state = RecordState {
        id: Uuid::nil(),
        kind: Kind::Lecture,
        seq: 0,
        fields: lecture_set(&codes[0], 0)
            .into_iter()
            .map(|(k, v)| (k, reg(v)))
            .collect::<BTreeMap<_, _>>(),
        deleted: None,
        open_conflicts: 0,
        ever: Vec::new(),
    };
    let mut agg = Aggregates::default();
    for n in 0..1_000_000u64 {
        state.id = Uuid::from_u128(0x5000_0000_0000_0000 + u128::from(n));
        state.seq = n + 1;
        let day = first.add_days((n.wrapping_mul(7919) % days as u64) as i32);
        let set = |state: &mut RecordState, k: &str, v: Value| {
            state.fields.get_mut(k).expect("lecture field").value = v;
        };
        set(
            &mut state,
            "org_unit",
            json!(codes[(n as usize * 31) % codes.len()]),
        );
        set(&mut state, "held_on", json!(day.to_string()));
        set(&mut state, "attendees", json!(20 + n % 180));
        agg.apply(None, &state);
        if n % 65_536 == 0 {
            agg.take_dirty();
        }
    }
    agg.take_dirty();
    agg
}

fn bench_totals(c: &mut Criterion) {
    let tree = tree();
    let agg = district_aggregates(&tree);
    let d = |s: &str| Some(Date::parse(s).expect("valid date"));
    let (year_from, year_to) = (d("2020-01-01"), d("2020-12-31"));
    let (ragged_from, ragged_to) = (d("2020-03-15"), d("2020-09-10"));
    let year = totals(&tree, &agg, DISTRICT, year_from, year_to).expect("district exists");
    assert!(year.lectures.count > 300_000, "{:?}", year.lectures);

    let mut g = c.benchmark_group("totals");
    g.bench_function("district_1m", |b| {
        b.iter(|| totals(&tree, black_box(&agg), DISTRICT, year_from, year_to))
    });
    g.bench_function("district_1m_ragged", |b| {
        b.iter(|| totals(&tree, black_box(&agg), DISTRICT, ragged_from, ragged_to))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20);
    targets = bench_validate, bench_judge_merge, bench_hash_parse, bench_checksum, bench_totals
}
criterion_main!(benches);
