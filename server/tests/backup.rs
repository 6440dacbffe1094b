//! Online backup over real HTTP (127.0.0.1:0) while a device keeps
//! pushing, `restore` into a new data dir, and a server on the restored
//! store that answers as the original did at the backup's seq. Damaged
//! backups are refused; only admins may take one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pufa_server::store::backup::{self, RestoreError};
use pufa_server::store::verify;
use pufa_server::Config;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokio::sync::{oneshot, Notify};
use uuid::Uuid;

#[allow(dead_code)] // The harness is shared; this file uses its HTTP server.
mod support;

use support::http::TestServer;

impl TestServer {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, token: &str) -> Value {
        let (st, v) = self.call(reqwest::Method::GET, path, token, None).await;
        assert_eq!(st, 200, "GET {path}: {v}");
        v
    }

    async fn token(&self, role: &str, org: &str) -> (String, String) {
        let body = json!({"role": role, "org_unit": org, "label": format!("{role}@{org}")});
        let (st, v) = self
            .call(
                reqwest::Method::POST,
                "/v1/admin/tokens",
                &self.admin,
                Some(body),
            )
            .await;
        assert_eq!(st, 201, "{v}");
        (
            v["token"].as_str().unwrap().into(),
            v["device_id"].as_str().unwrap().into(),
        )
    }

    async fn push(&self, (token, device): &(String, String), mutations: Vec<Value>) -> Value {
        let body = json!({"device_id": device, "mutations": mutations});
        let (st, v) = self
            .call(reqwest::Method::POST, "/v1/sync/push", token, Some(body))
            .await;
        assert_eq!(st, 200, "{v}");
        v
    }

    /// Every record as the admin pulls it, by id.
    async fn records(&self) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        let mut since = 0;
        loop {
            let page = self
                .get(
                    &format!("/v1/sync/pull?since={since}&limit=5000"),
                    &self.admin,
                )
                .await;
            for r in page["records"].as_array().unwrap() {
                out.insert(r["id"].as_str().unwrap().to_string(), r.clone());
            }
            since = page["next"].as_u64().unwrap();
            if page["has_more"] == false {
                return out;
            }
        }
    }
}

fn lecture(device: &str, record: Uuid, org: &str, attendees: u64) -> Value {
    json!({
        "id": Uuid::new_v4(), "record_id": record, "kind": "lecture", "base_seq": 0,
        "hlc": {"ms": 1_593_561_600_000u64, "c": 0, "node": device},
        "set": {"org_unit": org, "held_on": "2020-06-01", "title": "民法典进社区", "attendees": attendees}
    })
}

fn edit(device: &str, record: &str, ms: u64, set: Value) -> Value {
    json!({
        "id": Uuid::new_v4(), "record_id": record, "kind": "lecture", "base_seq": 0,
        "hlc": {"ms": ms, "c": 0, "node": device}, "set": set
    })
}

/// Org units, devices, records, conflicts (one resolved), deletions,
/// rejections and a move.
async fn populate(s: &TestServer) -> (String, String) {
    let units = json!([
        {"code":"d","name":"District","type":"district","parent":null},
        {"code":"s1","name":"Street 1","type":"street","parent":"d"},
        {"code":"s2","name":"Street 2","type":"street","parent":"d"},
        {"code":"sx","name":"Street X","type":"street","parent":"d"},
        {"code":"c1","name":"Community 1","type":"community","parent":"s1"},
        {"code":"c2","name":"Community 2","type":"community","parent":"s1"},
        {"code":"cx","name":"Community X","type":"community","parent":"sx"},
    ]);
    let (st, _) = s
        .call(
            reqwest::Method::PUT,
            "/v1/admin/org-units",
            &s.admin,
            Some(units),
        )
        .await;
    assert_eq!(st, 200);
    let f1 = s.token("field", "s1").await;
    let f2 = s.token("field", "d").await;
    let coord = s.token("coordinator", "d").await;
    let mut ids = Vec::new();
    // Enough records that the copy outgrows the buffers between the
    // server and the reader and pauses while the pusher goes on.
    for round in 0..4 {
        let batch = (0..1000)
            .map(|i| {
                let id = Uuid::new_v4();
                ids.push(id.to_string());
                lecture(&f1.1, id, ["c1", "c2"][i % 2], round * 1000 + i as u64)
            })
            .collect();
        s.push(&f1, batch).await;
    }
    let mut edits: Vec<Value> = ids[..40]
        .iter()
        .map(|id| edit(&f2.1, id, 1_593_561_600_001, json!({"attendees": 7})))
        .collect();
    edits.push(json!({
        "id": Uuid::new_v4(), "record_id": ids[50], "kind": "lecture", "base_seq": 0,
        "hlc": {"ms": 1_593_561_600_001u64, "c": 0, "node": f2.1}, "set": {}, "delete": true
    }));
    edits.push(lecture(&f2.1, Uuid::new_v4(), "nowhere", 1)); // rejected
    s.push(&f2, edits).await;
    let conflicts = s.get("/v1/conflicts", &coord.0).await;
    assert!(conflicts.as_array().unwrap().len() >= 40);
    let attendees = conflicts.as_array().unwrap().iter();
    let id = attendees
        .filter(|c| c["field"] == "attendees")
        .map(|c| c["id"].as_str().unwrap())
        .next()
        .unwrap();
    let (st, v) = s
        .call(
            reqwest::Method::POST,
            &format!("/v1/conflicts/{id}/resolve"),
            &coord.0,
            Some(json!({"value": 99})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let moved = json!([{"code":"c2","name":"Community 2","type":"community","parent":"s2"}]);
    let (st, _) = s
        .call(
            reqwest::Method::PUT,
            "/v1/admin/org-units",
            &s.admin,
            Some(moved),
        )
        .await;
    assert_eq!(st, 200);
    (coord.0, ids[0].clone())
}

/// What the restored server must answer as the original did before the
/// pusher started (the pusher writes only new records under `sx`).
async fn steady(s: &TestServer, coord: &str) -> Value {
    let devices: Vec<Value> = s
        .get("/v1/devices", &s.admin)
        .await
        .as_array()
        .unwrap()
        .clone();
    json!({
        "devices": devices.into_iter().filter(|d| d["org_unit"] != "sx").collect::<Vec<_>>(),
        "conflicts": s.get("/v1/conflicts", coord).await,
        "rejections": s.get("/v1/rejections", coord).await,
        "totals_s1": s.get("/v1/totals?org=s1", coord).await,
        "totals_s2": s.get("/v1/totals?org=s2", coord).await,
        "org": s.get("/v1/org-units", coord).await,
    })
}

async fn history(server: &TestServer, id: String) -> Value {
    server
        .get(&format!("/v1/records/{id}/history"), &server.admin)
        .await
}

fn digest(id: &str, seq: u64) -> u64 {
    let h = Sha256::digest(format!("{id}:{seq}").as_bytes());
    u64::from_be_bytes(h[..8].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_while_pushing_restores_to_the_store_at_its_seq() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let (coord, sample) = populate(&s).await;
    let before = steady(&s, &coord).await;

    // A device keeps pushing new records while the backup runs.
    let pusher = s.token("field", "sx").await;
    let acked = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Notify::new());
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let task = {
        let (url, acked, progress) = (s.url.clone(), acked.clone(), progress.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let batch: Vec<Value> = (0..20)
                    .map(|i| lecture(&pusher.1, Uuid::new_v4(), "cx", i))
                    .collect();
                let body = json!({"device_id": pusher.1, "mutations": batch});
                let push = client
                    .post(format!("{url}/v1/sync/push"))
                    .bearer_auth(&pusher.0)
                    .json(&body)
                    .send();
                tokio::select! {
                    r = push => assert_eq!(r.unwrap().status(), 200),
                    _ = &mut stop_rx => return,
                }
                acked.fetch_add(1, Ordering::SeqCst);
                progress.notify_waiters();
            }
        })
    };
    let wait_for_pushes = |n: u64| {
        let (acked, progress) = (acked.clone(), progress.clone());
        async move {
            let target = acked.load(Ordering::SeqCst) + n;
            while acked.load(Ordering::SeqCst) < target {
                let notified = progress.notified();
                if acked.load(Ordering::SeqCst) >= target {
                    break;
                }
                notified.await;
            }
        }
    };
    wait_for_pushes(2).await;
    let mut resp = reqwest::Client::new()
        .get(format!("{}/v1/admin/backup", s.url))
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut bytes = resp.chunk().await.unwrap().unwrap().to_vec();
    // Pushes land while the copy is under way.
    wait_for_pushes(3).await;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        bytes.extend_from_slice(&chunk);
    }
    wait_for_pushes(1).await;
    let _ = stop_tx.send(());
    task.await.unwrap();
    let original = s.records().await;
    // Restore into a new dir (a new store_id), and into another keeping it.
    let restored_dir = tempfile::tempdir().unwrap();
    let file = restored_dir.path().join("pufa.backup");
    std::fs::write(&file, &bytes).unwrap();
    let target = restored_dir.path().join("data");
    let restored = backup::restore(&file, &Config::new(&target), false).unwrap();
    let header = restored.header.clone();
    let report = verify::verify(&Config::new(&target)).unwrap();
    assert_eq!(report.broken, None, "{report}");
    assert_eq!((report.seq, report.head.0), (header.seq, header.audit_n));
    let kept = restored_dir.path().join("kept");
    let same = backup::restore(&file, &Config::new(&kept), true).unwrap();
    assert_eq!(same.store_id, header.store_id);
    std::fs::copy(dir.path().join("admin.token"), target.join("admin.token")).unwrap();

    let r = TestServer::start(&target).await;
    assert_eq!(steady(&r, &coord).await, before);
    let copy = r.records().await;
    let at_seq: BTreeMap<String, Value> = original
        .iter()
        .filter(|(_, v)| v["seq"].as_u64().unwrap() <= header.seq)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(
        at_seq.len() < original.len(),
        "pushes went on after the snapshot"
    );
    assert!(copy.len() > 4000, "{} records", copy.len());
    assert!(
        copy == at_seq,
        "every record as it was at seq {}",
        header.seq
    );
    let checksum = r.get("/v1/sync/checksum", &r.admin).await;
    let xor = copy
        .iter()
        .fold(0, |x, (id, v)| x ^ digest(id, v["seq"].as_u64().unwrap()));
    assert_eq!(checksum["count"], copy.len());
    assert_eq!(checksum["checksum"], format!("{xor:016x}"));
    assert_eq!(checksum["seq"], header.seq);
    assert_eq!(checksum["store_id"], restored.store_id.to_string());
    assert_ne!(restored.store_id, header.store_id);
    let totals = r.get("/v1/totals?org=d", &r.admin).await;
    let live = copy.values().filter(|v| v["deleted"] == false).count();
    assert_eq!(totals["lectures"]["count"], live);
    // The audit history, cut at the snapshot's last entry.
    let newest = copy.keys().last().unwrap().clone();
    for id in [sample, newest] {
        let cut: Vec<Value> = history(&s, id.clone())
            .await
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["n"].as_u64().unwrap() <= header.audit_n)
            .cloned()
            .collect();
        assert_eq!(history(&r, id).await, Value::Array(cut));
    }
    r.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_backups_are_refused_and_only_admins_may_take_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let units = json!([{"code":"d","name":"D","type":"district","parent":null}]);
    let (st, _) = s
        .call(
            reqwest::Method::PUT,
            "/v1/admin/org-units",
            &s.admin,
            Some(units),
        )
        .await;
    assert_eq!(st, 200);
    let (coord, _) = s.token("coordinator", "d").await;
    let field = s.token("field", "d").await;
    let batch = (0..50)
        .map(|i| lecture(&field.1, Uuid::new_v4(), "d", i))
        .collect();
    s.push(&field, batch).await;
    for token in [&coord, &field.0] {
        let (st, v) = s
            .call(reqwest::Method::GET, "/v1/admin/backup", token, None)
            .await;
        assert_eq!((st, v["error"]["code"].as_str()), (403, Some("forbidden")));
    }
    let (st, _) = s
        .call(reqwest::Method::GET, "/v1/admin/backup", "nope", None)
        .await;
    assert_eq!(st, 401);
    let bytes = reqwest::Client::new()
        .get(format!("{}/v1/admin/backup", s.url))
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    s.stop().await;

    let work = tempfile::tempdir().unwrap();
    let attempt = |name: &str, content: &[u8]| {
        let file = work.path().join(format!("{name}.backup"));
        std::fs::write(&file, content).unwrap();
        let target = work.path().join(name);
        let result = backup::restore(&file, &Config::new(&target), false);
        (result, target)
    };
    let (ok, _) = attempt("whole", &bytes);
    assert!(ok.is_ok(), "{ok:?}");
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    let mut garbage = b"PUFA-BACKUP 1 {}\n".to_vec();
    garbage.extend_from_slice(&bytes[..100]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("half", bytes[..bytes.len() / 2].to_vec()),
        ("no-trailer", bytes[..bytes.len() - 40].to_vec()),
        ("short-digest", bytes[..bytes.len() - 1].to_vec()),
        ("flipped", flipped),
        ("extra", [bytes.as_slice(), b"x"].concat()),
        ("not-a-backup", b"hello\n".to_vec()),
        ("bad-header", garbage),
        ("empty", Vec::new()),
    ];
    for (name, content) in cases {
        let (result, target) = attempt(name, &content);
        assert!(
            matches!(result, Err(RestoreError::Invalid(_))),
            "{name}: {result:?}"
        );
        let left: Vec<_> = std::fs::read_dir(&target).unwrap().collect();
        assert!(left.is_empty(), "{name}: nothing is left behind");
    }
    // A dir that holds anything is refused before reading.
    let busy = work.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("x"), "x").unwrap();
    let file = work.path().join("whole.backup");
    assert!(matches!(
        backup::restore(&file, &Config::new(&busy), false),
        Err(RestoreError::NotEmpty(_))
    ));
    assert!(matches!(
        backup::restore(&file, &Config::new(work.path().join("whole")), false),
        Err(RestoreError::NotEmpty(_))
    ));
}
