//! The SDK's repair paths: a checksum mismatch (the device holds a record
//! the server does not list) and a server store restored from a backup (a
//! new `store_id`): the device re-pulls from 0, keeps its outbox, and keeps
//! records the server lost, reporting them instead of dropping them.

use std::path::Path;
use std::sync::Arc;

use pufa_client::store::{Confirmed, LocalStore, Staged};
use pufa_client::{Client, Filter};
use pufa_core::hlc::Hlc;
use pufa_core::schema::Kind;
use pufa_core::wire::RecordView;
use pufa_server::config::SeededIds;
use pufa_server::store::sled::SledStore;
use pufa_tests::{lecture, open_client, Device, Faults, World};
use uuid::Uuid;

/// sled may hold its file lock a moment after the last handle is dropped.
fn with_lock_retry<T, E: std::fmt::Display>(mut f: impl FnMut() -> Result<T, E>) -> T {
    for _ in 0..100_000 {
        match f() {
            Ok(v) => return v,
            Err(e) if e.to_string().contains("lock") => std::thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the store stayed locked");
}

async fn open_server(
    dir: &Path,
    clock: Arc<pufa_server::config::ManualClock>,
    seed: u64,
) -> pufa_server::AppState {
    for _ in 0..100_000 {
        let mut config = pufa_server::Config::new(dir);
        config.clock = clock.clone();
        config.ids = Arc::new(SeededIds::new(seed));
        match pufa_server::open(config).await {
            Ok(s) => return s,
            Err(e) if e.to_string().contains("lock") => tokio::task::yield_now().await,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the server store stayed locked");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn reopen_with(dev: Device, change: impl FnOnce(&LocalStore)) -> Device {
    let Device {
        id,
        token,
        client,
        transport,
        clock,
        dir,
    } = dev;
    drop(client);
    {
        let store = with_lock_retry(|| LocalStore::open(dir.path()));
        change(&store);
        store.flush().unwrap();
    }
    let client: Client = with_lock_retry(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            open_client(dir.path(), id, &token, transport.clone(), clock.clone(), 1)
        }))
        .map_err(|_| "lock")
    });
    Device {
        id,
        token,
        client,
        transport,
        clock,
        dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checksum_mismatch_repairs_by_pulling_again() {
    let w = World::new(11).await;
    w.small_tree().await;
    let dev = w.device("d", Faults::default(), 1).await;
    let ids: Vec<Uuid> = (0..3)
        .map(|i| {
            dev.client
                .create_fields(
                    Kind::Lecture,
                    lecture("c11", "2020-05-01", &format!("讲座{i}"), 30),
                )
                .unwrap()
        })
        .collect();
    let first = dev.client.sync().await.unwrap();
    assert!(first.checksum_ok && !first.repaired);

    // A record the server never had appears in the device's confirmed set
    // (a bug, a restored phone backup, a corrupted page…).
    let bogus = Uuid::now_v7();
    let dev = reopen_with(dev, |store| {
        let mut s = Staged::default();
        let fields = lecture("c11", "2020-05-02", "幽灵记录", 1);
        s.put_confirmed(&Confirmed {
            view: RecordView {
                id: bogus,
                kind: "lecture".into(),
                seq: 2,
                deleted: false,
                fields,
                hlc: Hlc::new(1, 0, Uuid::nil()),
                conflicts: 0,
            },
            epoch: 0,
        });
        store.commit(s, true).unwrap();
    });
    assert!(dev.client.get(bogus).unwrap().is_some());

    let r = dev.client.sync().await.unwrap();
    assert!(r.repaired, "{r:?}");
    assert!(r.checksum_ok, "{r:?}");
    assert!(r.removed >= 1);
    assert!(
        dev.client.get(bogus).unwrap().is_none(),
        "a record the server does not list is dropped by the repair"
    );
    for id in ids {
        assert!(dev.client.get(id).unwrap().is_some());
    }
    assert!(r.lost_on_server.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_server_store_is_detected_and_nothing_is_lost() {
    let w = World::new(12).await;
    w.small_tree().await;
    let dev = w.device("d", Faults::default(), 2).await;
    let placeholder = World::new(99).await;
    let before: Vec<Uuid> = (0..2)
        .map(|i| {
            dev.client
                .create_fields(
                    Kind::Lecture,
                    lecture("c12", "2020-04-01", &format!("备份前{i}"), 10),
                )
                .unwrap()
        })
        .collect();
    assert!(dev.client.sync().await.unwrap().checksum_ok);

    // Back up the server's data dir while it is stopped.
    let World {
        state,
        clock,
        admin,
        dir,
    } = w;
    dev.transport.replace_server(placeholder.state.clone());
    drop(state);
    let backup = tempfile::tempdir().unwrap();
    with_lock_retry(|| {
        let probe = sled::Config::new().path(dir.path().join("store")).open();
        probe.map(drop)
    });
    copy_dir(&dir.path().join("store"), &backup.path().join("store"));

    // Work goes on after the backup…
    let state = open_server(dir.path(), clock.clone(), 13).await;
    dev.transport.replace_server(state.clone());
    let after: Vec<Uuid> = (0..2)
        .map(|i| {
            dev.client
                .create_fields(
                    Kind::Lecture,
                    lecture("c12", "2020-04-02", &format!("备份后{i}"), 20),
                )
                .unwrap()
        })
        .collect();
    let r = dev.client.sync().await.unwrap();
    assert!(r.checksum_ok && r.applied == 2);

    // …then the server is restored from the backup, with a new store_id.
    dev.transport.replace_server(placeholder.state.clone());
    drop(state);
    with_lock_retry(|| {
        sled::Config::new()
            .path(dir.path().join("store"))
            .open()
            .map(drop)
    });
    std::fs::remove_dir_all(dir.path().join("store")).unwrap();
    copy_dir(&backup.path().join("store"), &dir.path().join("store"));
    let mut config = pufa_server::Config::new(dir.path());
    config.ids = Arc::new(SeededIds::new(14));
    let (old_id, new_id) = SledStore::renew_store_id(&config).unwrap();
    assert_ne!(old_id, new_id);
    let state = open_server(dir.path(), clock.clone(), 15).await;
    dev.transport.replace_server(state.clone());

    let r = dev.client.sync().await.unwrap();
    assert!(r.repaired, "{r:?}");
    assert!(r.checksum_ok, "{r:?}");
    let mut lost = r.lost_on_server.clone();
    lost.sort();
    let mut expect = after.clone();
    expect.sort();
    assert_eq!(
        lost, expect,
        "the records the restored store lacks are reported, not dropped"
    );
    for id in before.iter().chain(&after) {
        assert!(
            dev.client.get(*id).unwrap().is_some(),
            "{id} is still on the device"
        );
    }

    // The user sends them again; the server has everything once more.
    assert_eq!(dev.client.resubmit_lost().unwrap(), 2);
    let r = dev.client.sync().await.unwrap();
    assert!(r.checksum_ok && r.lost_on_server.is_empty(), "{r:?}");
    let restored = World {
        state,
        clock,
        admin,
        dir,
    };
    let (_, page) = restored
        .api(
            "GET",
            "/v1/sync/pull?since=0&limit=5000",
            &restored.admin,
            None,
        )
        .await;
    let on_server: Vec<String> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    for id in before.iter().chain(&after) {
        assert_eq!(
            on_server.iter().filter(|s| **s == id.to_string()).count(),
            1,
            "{id} on the server once"
        );
    }
    assert_eq!(dev.client.list(&Filter::default()).unwrap().len(), 4);
}
