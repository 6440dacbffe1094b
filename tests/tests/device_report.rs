//! What a device tells the server about itself with each push (its outbox
//! and oldest pending edit) is what remains once that push is answered, so
//! coordinators see 0 for a device that has synced everything.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use pufa_client::{Client, ClientConfig};
use pufa_core::schema::Kind;
use pufa_tests::{lecture, Faults, InProcess, TestClock, World, T0};

#[tokio::test]
async fn a_fully_synced_device_reports_an_empty_outbox() {
    let w = World::new(7).await;
    w.small_tree().await;
    let (id, token) = w.token("field", "s1").await;
    let dir = tempfile::tempdir().unwrap();
    let transport = Arc::new(InProcess::new(w.state.clone(), Faults::default(), 7));
    let mut config = ClientConfig::new(dir.path(), id, &token);
    config.clock = Arc::new(TestClock(AtomicU64::new(T0)));
    // Five edits in batches of two: three pushes.
    config.push_batch = 2;
    let client = Client::open(config, transport).unwrap();
    for i in 0..5 {
        client
            .create_fields(
                Kind::Lecture,
                lecture("c11", "2020-06-01", "民法典宣讲", 40 + i),
            )
            .unwrap();
    }
    client.sync().await.unwrap();
    let coord = w.token("coordinator", "d").await.1;
    let (st, devices) = w.api("GET", "/v1/devices", &coord, None).await;
    assert_eq!(st, 200, "{devices}");
    let me = devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_id"] == id.to_string())
        .expect("the device is listed");
    assert_eq!(me["outbox_len"], 0, "{me}");
    assert!(me["oldest_pending_ms"].is_null(), "{me}");
}
