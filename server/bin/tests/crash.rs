//! The real binary, SIGKILLed while pushes are in flight, restarted on the
//! same data dir: every acknowledged mutation is there, none twice, and the
//! checksum agrees with the records.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use pufa_core::wire::{PullEntry, PullResponse, PushResponse, TokenIssued};
use serde_json::{json, Value};
use uuid::Uuid;

/// Kill-and-restart rounds.
const ROUNDS: usize = 3;
/// Acknowledged batches to wait for before each kill.
const ACKED_BEFORE_KILL: usize = 12;
const PUSHERS: usize = 4;
const BATCH: u64 = 50;

struct Server {
    child: Child,
    url: String,
}

/// Starts the binary on an ephemeral port and waits for its "listening" line.
fn start(dir: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pufa-server"))
        .args(["--data", dir.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .unwrap();
        if let Some(rest) = line
            .split("addr=")
            .nth(1)
            .filter(|_| line.contains("listening"))
        {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        url: format!("http://{addr}"),
    }
}

async fn call(
    url: String,
    token: &str,
    method: reqwest::Method,
    body: Option<Value>,
) -> Result<(u16, Value), reqwest::Error> {
    let mut req = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let v = resp.json().await.unwrap_or(Value::Null);
    Ok((status, v))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_pushes_loses_no_acknowledged_mutation() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    let admin = std::fs::read_to_string(dir.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let units = json!([
        {"code":"d","name":"D","type":"district","parent":null},
        {"code":"c1","name":"C1","type":"community","parent":"d"},
    ]);
    let (st, _) = call(
        format!("{}/v1/admin/org-units", server.url),
        &admin,
        reqwest::Method::PUT,
        Some(units),
    )
    .await
    .unwrap();
    assert_eq!(st, 200);
    let mut devices = Vec::new();
    for i in 0..PUSHERS {
        let body = json!({"role":"field","org_unit":"d","label":format!("pusher {i}")});
        let (st, v) = call(
            format!("{}/v1/admin/tokens", server.url),
            &admin,
            reqwest::Method::POST,
            Some(body),
        )
        .await
        .unwrap();
        assert_eq!(st, 201);
        devices.push(serde_json::from_value::<TokenIssued>(v).unwrap());
    }

    // record id -> attendees of its last acknowledged write
    let acked: Arc<Mutex<BTreeMap<Uuid, u64>>> = Arc::default();
    let mut counter = 0u64;
    for round in 0..ROUNDS {
        let url = server.url.clone();
        let acked_batches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let progress = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for (i, t) in devices.iter().enumerate() {
            let (url, t, acked, acked_batches, progress) = (
                url.clone(),
                t.clone(),
                acked.clone(),
                acked_batches.clone(),
                progress.clone(),
            );
            let base = counter + (i as u64) * 1_000_000;
            tasks.push(tokio::spawn(async move {
                let mut n = base;
                loop {
                    let batch: Vec<(Uuid, u64, Value)> = (0..BATCH)
                        .map(|_| {
                            n += 1;
                            let id = Uuid::now_v7();
                            let m = json!({"id": Uuid::now_v7(), "record_id": id, "kind":"lecture", "base_seq":0,
                                "hlc":{"ms": 1_593_561_600_000 + n, "c":0, "node": t.device_id},
                                "set":{"org_unit":"c1","held_on":"2020-07-01","title":"讲座","attendees": n % 1000}});
                            (id, n % 1000, m)
                        })
                        .collect();
                    let body = json!({"device_id": t.device_id, "mutations": batch.iter().map(|b| b.2.clone()).collect::<Vec<_>>()});
                    match call(format!("{url}/v1/sync/push"), &t.token, reqwest::Method::POST, Some(body)).await {
                        Ok((200, v)) => {
                            let r: PushResponse = serde_json::from_value(v).unwrap();
                            assert!(r.results.iter().all(|x| x.error.is_none()));
                            let mut a = acked.lock().unwrap();
                            for (id, att, _) in &batch {
                                a.insert(*id, *att);
                            }
                            acked_batches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            progress.notify_one();
                        }
                        // The server died under us: nothing of this batch was acknowledged.
                        _ => return,
                    }
                }
            }));
        }
        while acked_batches.load(std::sync::atomic::Ordering::SeqCst) < ACKED_BEFORE_KILL {
            progress.notified().await;
        }
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
        for t in tasks {
            t.await.unwrap();
        }
        counter += 10_000_000;
        server = start(dir.path());
        eprintln!(
            "round {round}: {} acknowledged so far",
            acked.lock().unwrap().len()
        );
    }

    // Everything acknowledged is there, once, at its acknowledged value.
    let mut got: BTreeMap<Uuid, PullEntry> = BTreeMap::new();
    let mut since = 0;
    let mut ids_seen = HashSet::new();
    loop {
        let (st, v) = call(
            format!("{}/v1/sync/pull?since={since}&limit=5000", server.url),
            &admin,
            reqwest::Method::GET,
            None,
        )
        .await
        .unwrap();
        assert_eq!(st, 200);
        let page: PullResponse = serde_json::from_value(v).unwrap();
        for e in page.records {
            assert!(
                ids_seen.insert(e.id()),
                "record {} listed twice in one pass",
                e.id()
            );
            got.insert(e.id(), e);
        }
        since = page.next;
        if !page.has_more {
            break;
        }
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= ROUNDS * ACKED_BEFORE_KILL * BATCH as usize);
    for (id, attendees) in acked.iter() {
        match got.get(id) {
            Some(PullEntry::Record(r)) => assert_eq!(r.fields["attendees"], json!(attendees)),
            other => panic!("acknowledged record {id} lost after SIGKILL: {other:?}"),
        }
    }
    let (st, c) = call(
        format!("{}/v1/sync/checksum", server.url),
        &admin,
        reqwest::Method::GET,
        None,
    )
    .await
    .unwrap();
    assert_eq!(st, 200);
    let xor = got.values().fold(0, |x, e| {
        x ^ pufa_core::merge::record_digest(e.id(), e.seq())
    });
    assert_eq!(c["count"], json!(got.len()));
    assert_eq!(c["checksum"], json!(pufa_core::merge::checksum_text(xor)));
    let (_, totals) = call(
        format!("{}/v1/totals", server.url),
        &admin,
        reqwest::Method::GET,
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        totals["lectures"]["count"],
        json!(got.len()),
        "aggregates agree with records after crashes"
    );
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}
