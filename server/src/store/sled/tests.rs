//! The sled store's own tests: group batches, devices in memory, opening
//! past an incomplete snapshot, a backup taken while writes go on.

use std::collections::BTreeMap;

use pufa_core::wire::{Mutation, Role, UnitType};
use serde_json::json;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use pufa_core::org::Scope;
use pufa_core::wire::OrgUnit;
use uuid::Uuid;

use super::backup::Copier;
use super::devices::Devices;
use super::open::INCOMPLETE_SNAPSHOTS_DIR;
use super::{open_db, SledStore, GROUP_BATCH_MUTATIONS_MAX};
use crate::config::{Config, SeededIds};
use crate::store::backup;
use crate::store::{AdminStore, Device, PushInput, ReadStore, SyncStore};

const NOW: u64 = 1_593_561_600_000;

fn admin() -> Device {
    Device {
        id: Uuid::from_u128(1),
        role: Role::Admin,
        org_unit: None,
        label: "admin".into(),
        revoked: false,
        token_hash: [0; 32],
        created_ms: 0,
        last_push_ms: None,
        report: None,
        clock_skew_ms: None,
    }
}

fn unit(code: &str, parent: Option<&str>) -> OrgUnit {
    OrgUnit {
        code: code.into(),
        name: code.into(),
        unit_type: if parent.is_none() {
            UnitType::District
        } else {
            UnitType::Community
        },
        parent: parent.map(str::to_string),
    }
}

fn push_input(mutations: Vec<serde_json::Value>) -> PushInput {
    PushInput {
        device: admin(),
        raw: mutations.iter().map(|m| m.to_string()).collect(),
        mutations: mutations
            .into_iter()
            .map(|m| serde_json::from_value::<Mutation>(m).unwrap())
            .collect(),
        report: None,
        now_ms: NOW,
        max_skew_ms: 300_000,
    }
}

fn lecture(id: Uuid, ms: u64, org: &str, attendees: u64) -> serde_json::Value {
    json!({
        "id": Uuid::new_v4(), "record_id": id, "kind": "lecture", "base_seq": 0,
        "hlc": {"ms": ms, "c": 0, "node": admin().id},
        "set": {"org_unit": org, "held_on": "2020-06-01", "title": "t", "attendees": attendees}
    })
}

/// A store in `dir` with units `d` and its child `a`.
async fn open_with_units(dir: &std::path::Path) -> (Config, SledStore) {
    let mut config = Config::new(dir);
    config.ids = Arc::new(SeededIds::new(1));
    let store = SledStore::open(&(&config).into()).unwrap();
    store
        .upsert_org_units(vec![unit("d", None), unit("a", Some("d"))], &admin(), NOW)
        .await
        .unwrap()
        .unwrap();
    (config, store)
}

fn dump(db: &sled::Db) -> BTreeMap<Vec<u8>, Vec<u8>> {
    db.iter()
        .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
        .collect()
}

/// A group is applied in batches of whole pushes of at most
/// GROUP_BATCH_MUTATIONS_MAX mutations (a larger push alone), in order:
/// seqs keep rising across batches, and pushes sharing a batch share
/// its write generation.
#[tokio::test]
async fn a_large_group_is_applied_in_batches_of_whole_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let (_config, store) = open_with_units(dir.path()).await;
    let push = |n: usize| {
        push_input(
            (0..n)
                .map(|i| lecture(Uuid::new_v4(), NOW, "a", i as u64))
                .collect(),
        )
    };
    let max = GROUP_BATCH_MUTATIONS_MAX;
    let sizes = [max - 100, 200, 50, max + 20, 1];
    let answers = store
        .inner
        .push_group(sizes.iter().map(|n| push(*n)).collect());
    let answers: Vec<_> = answers.into_iter().map(Result::unwrap).collect();
    let generations: Vec<u64> = answers.iter().map(|(_, g)| *g).collect();
    // [max-100] | [200, 50] | [max+20] | [1]
    assert_eq!(generations[1], generations[2]);
    assert!(generations[0] < generations[1]);
    assert!(generations[2] < generations[3] && generations[3] < generations[4]);
    let seqs: Vec<u64> = answers
        .iter()
        .flat_map(|(r, _)| r.iter().map(|m| m.seq.unwrap()))
        .collect();
    assert_eq!(seqs.len(), sizes.iter().sum::<usize>());
    assert!(
        seqs.windows(2).all(|w| w[0] + 1 == w[1]),
        "one seq each, in order"
    );
    assert_eq!(
        store.inner.committed_seq.load(Ordering::SeqCst),
        *seqs.last().unwrap()
    );
}

/// Token checks answer from memory; whatever a write does to devices
/// and tokens (new, rotated, revoked, a push's health report, two pushes
/// of one device in one group) the memory says what the disk says,
/// before and after reopening.
#[tokio::test]
async fn token_checks_from_memory_agree_with_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (config, store) = open_with_units(dir.path()).await;
    let device = |n: u128, token: u8| Device {
        id: Uuid::from_u128(n),
        role: Role::Field,
        org_unit: Some("a".into()),
        label: format!("device {n}"),
        token_hash: [token; 32],
        ..admin()
    };
    let (kept, rotated, revoked) = (device(10, 10), device(11, 11), device(12, 12));
    for d in [&kept, &rotated, &revoked] {
        store.put_device(d.clone()).await.unwrap();
    }
    let rotated_now = Device {
        token_hash: [21; 32],
        ..rotated.clone()
    };
    store.put_device(rotated_now.clone()).await.unwrap();
    assert!(store.revoke_device(revoked.id).await.unwrap());
    let mut input = push_input(vec![lecture(Uuid::new_v4(), NOW, "a", 3)]);
    input.device = kept.clone();
    input.report = Some(pufa_core::wire::DeviceReport {
        now_ms: Some(NOW - 5),
        ..Default::default()
    });
    let mut second = push_input(vec![lecture(Uuid::new_v4(), NOW, "a", 4)]);
    second.device = kept.clone();
    let (a, b) = tokio::join!(store.push(input), store.push(second));
    a.unwrap();
    b.unwrap();
    let expect = |store: SledStore| async move {
        let who = |t: u8| {
            let store = &store;
            async move { store.authenticate([t; 32]).await.unwrap().map(|d| d.id) }
        };
        assert_eq!(who(10).await, Some(kept.id));
        assert_eq!(who(11).await, None, "the rotated token's old secret");
        assert_eq!(who(21).await, Some(rotated.id));
        assert_eq!(who(12).await, None, "revoked");
        let k = store.device(kept.id).await.unwrap().unwrap();
        assert_eq!((k.last_push_ms, k.clock_skew_ms), (Some(NOW), Some(5)));
        assert!(store.device(revoked.id).await.unwrap().unwrap().revoked);
        let disk = Devices::load(&store.inner.db).unwrap();
        {
            let memory = store.inner.devices.read().unwrap();
            assert_eq!(disk.by_token, memory.by_token);
            assert_eq!(disk.by_id, memory.by_id);
        }
        store
    };
    let store = expect(store).await;
    drop(store);
    expect(SledStore::open(&(&config).into()).unwrap()).await;
}

/// sled 0.34.7 reads a leftover `snap.*.generating` (a snapshot cut
/// short by a full disk or a kill) as the newest snapshot and refuses
/// to open; the store sets it aside and opens from the log.
#[tokio::test]
async fn an_incomplete_sled_snapshot_does_not_stop_the_store_from_opening() {
    let dir = tempfile::tempdir().unwrap();
    let (config, store) = open_with_units(dir.path()).await;
    let ids: Vec<Uuid> = (0..50).map(|_| Uuid::new_v4()).collect();
    let batch = ids.iter().map(|id| lecture(*id, NOW, "a", 3)).collect();
    store.push(push_input(batch)).await.unwrap();
    let before = store.checksum(&Scope::All).await.unwrap();
    drop(store);
    // Half a snapshot, newer than any sled wrote (it sorts last).
    let junk = config.store_path().join("snap.FFFFFFFFFFFFFFF0.generating");
    std::fs::write(&junk, b"half a snapshot, cut off by a full disk").unwrap();
    let raw = open_db(&sled::Config::new().path(config.store_path()));
    assert!(
        matches!(raw, Err(sled::Error::Corruption { .. })),
        "sled itself refuses it: {raw:?}"
    );
    drop(raw);
    let store = SledStore::open(&(&config).into()).expect("opens after setting the file aside");
    assert_eq!(store.checksum(&Scope::All).await.unwrap(), before);
    for id in &ids {
        assert!(store.record(*id).await.unwrap().is_some());
    }
    assert!(!junk.exists());
    let aside: Vec<_> = std::fs::read_dir(dir.path().join(INCOMPLETE_SNAPSHOTS_DIR))
        .unwrap()
        .collect();
    assert_eq!(aside.len(), 1, "kept, not deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_is_the_store_as_it_started_whatever_is_written_while_it_copies() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.ids = Arc::new(SeededIds::new(1));
    let store = SledStore::open(&(&config).into()).unwrap();
    let units = vec![unit("d", None), unit("a", Some("d")), unit("b", Some("d"))];
    store
        .upsert_org_units(units, &admin(), NOW)
        .await
        .unwrap()
        .unwrap();
    let mut ids = Vec::new();
    for round in 0..2 {
        let batch: Vec<_> = (0..1000)
            .map(|i| {
                ids.push(Uuid::new_v4());
                lecture(*ids.last().unwrap(), NOW, ["a", "b"][i % 2], round)
            })
            .collect();
        store.push(push_input(batch)).await.unwrap();
    }
    let inner = store.inner.clone();
    let (header, generation) = inner.start_backup(NOW).unwrap();
    assert!(inner.start_backup(NOW).is_err(), "one backup at a time");
    inner.wait_durable(generation).await.unwrap();
    let before = dump(&inner.db);
    let mut copy = Copier {
        live: inner.db.iter(),
        enc: backup::Encoder::new(&header),
        pairs: 0,
    };
    let mut bytes = Vec::new();
    let mut steps = 0u64;
    while !inner.copy_step(&mut copy).unwrap() {
        bytes.extend(copy.enc.take());
        steps += 1;
        // Between every two steps: edits of records on both sides of
        // the copy's cursor, new records, and once a move of every
        // record of a unit (feed entries removed and added).
        let mut batch: Vec<_> = ids
            .iter()
            .skip((steps as usize * 37) % 1900)
            .step_by(17)
            .take(20)
            .map(|id| lecture(*id, NOW + steps, "a", 1000 + steps))
            .collect();
        batch.push(lecture(Uuid::new_v4(), NOW, "b", 1));
        store.push(push_input(batch)).await.unwrap();
        if steps == 20 {
            let moved = vec![unit("x", Some("d")), unit("b", Some("x"))];
            store
                .upsert_org_units(moved, &admin(), NOW)
                .await
                .unwrap()
                .unwrap();
        }
    }
    bytes.extend(copy.enc.finish());
    inner.end_backup();
    assert!(steps > 30, "the copy took {steps} steps");
    assert_ne!(dump(&inner.db), before, "the store moved on");
    let mut copied = BTreeMap::new();
    let (read_header, pairs) = backup::read(&mut bytes.as_slice(), |k, v| {
        copied.insert(k, v);
        Ok(())
    })
    .unwrap();
    assert_eq!((read_header, pairs), (header, before.len() as u64));
    assert!(copied == before, "the copy is the store as of the start");
    // Writes after the end no longer list their keys.
    assert!(inner.begin().batch.keys.is_none());
}
