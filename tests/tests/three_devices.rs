//! Offline edits on three devices, reconnecting in every order: all devices
//! and the server end identical, and each conflict is reported to the device
//! whose push met it.

use pufa_client::{Filter, SyncState};
use pufa_tests::{lecture, Faults, World};
use serde_json::json;

fn set(pairs: &[(&str, serde_json::Value)]) -> serde_json::Map<String, serde_json::Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[tokio::test]
async fn three_offline_devices_converge_in_every_order() {
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for (seed, order) in orders.iter().enumerate() {
        let w = World::new(seed as u64).await;
        w.small_tree().await;
        let devices = [
            w.device("s1", Faults::default(), 1).await,
            w.device("s1", Faults::default(), 2).await,
            w.device("d", Faults::default(), 3).await,
        ];
        // A shared lecture everyone knows.
        let shared = devices[0]
            .client
            .create_fields(
                pufa_core::schema::Kind::Lecture,
                lecture("c11", "2020-06-01", "民法典宣讲", 40),
            )
            .unwrap();
        devices[0].client.sync().await.unwrap();
        for d in &devices {
            d.client.sync().await.unwrap();
            assert!(d.client.get(shared).unwrap().is_some());
        }
        // Offline: each edits the shared record and records its own.
        for d in &devices {
            d.transport.set_offline(true);
        }
        for (i, d) in devices.iter().enumerate() {
            d.clock
                .0
                .fetch_add(1000 * (i as u64 + 1), std::sync::atomic::Ordering::SeqCst);
            d.client
                .update(
                    shared,
                    set(&[
                        ("attendees", json!(50 + i)),
                        ("title", json!(format!("民法典宣讲 v{i}"))),
                    ]),
                )
                .unwrap();
            d.client
                .create_fields(
                    pufa_core::schema::Kind::Lecture,
                    lecture("c12", "2020-06-02", &format!("讲座 {i}"), 10),
                )
                .unwrap();
        }
        devices[1].client.delete(shared).unwrap();
        // Pending locally, visible in the local view.
        assert_eq!(
            devices[0].client.get(shared).unwrap().unwrap().state,
            SyncState::Pending
        );
        assert!(devices[1].client.get(shared).unwrap().unwrap().deleted);
        // Reconnect in this order, then everyone syncs once more.
        let mut conflicts_heard = 0;
        for &i in order {
            devices[i].transport.set_offline(false);
            let r = devices[i].client.sync().await.unwrap();
            assert!(r.checksum_ok, "{r:?}");
            assert!(r.rejected.is_empty(), "{:?}", r.rejected);
            // The first device back met no concurrent edit; later ones did.
            if i != order[0] {
                assert!(
                    !r.conflicts.is_empty(),
                    "device {i} (order {order:?}) heard no conflict"
                );
            }
            conflicts_heard += r.conflicts.len();
        }
        assert!(conflicts_heard >= 2);
        for d in &devices {
            let r = d.client.sync().await.unwrap();
            assert!(r.checksum_ok);
        }
        let views: Vec<_> = devices
            .iter()
            .map(|d| {
                d.client
                    .list(&Filter {
                        include_deleted: true,
                        ..Filter::default()
                    })
                    .unwrap()
            })
            .collect();
        let strip = |v: &Vec<pufa_client::LocalRecord>| {
            v.iter()
                .map(|r| (r.id, r.fields.clone(), r.deleted, r.seq))
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(&views[0]), strip(&views[1]), "order {order:?}");
        assert_eq!(strip(&views[0]), strip(&views[2]), "order {order:?}");
        assert_eq!(views[0].len(), 4);
        // The server's view equals the devices'.
        let (_, page) = w
            .api("GET", "/v1/sync/pull?since=0&limit=5000", &w.admin, None)
            .await;
        let server: Vec<_> = page["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().unwrap().to_string(),
                    r["fields"].clone(),
                    r["deleted"].clone(),
                )
            })
            .collect();
        assert_eq!(server.len(), 4);
        for (id, fields, deleted) in server {
            let local = views[0].iter().find(|r| r.id.to_string() == id).unwrap();
            assert_eq!(serde_json::Value::Object(local.fields.clone()), fields);
            assert_eq!(json!(local.deleted), deleted);
        }
        // Conflicts are open on the shared record and shown as such.
        let shared_view = devices[2].client.get(shared).unwrap().unwrap();
        assert!(
            matches!(shared_view.state, SyncState::Conflicted { open, .. } if open >= 2),
            "{:?}",
            shared_view.state
        );
    }
}
