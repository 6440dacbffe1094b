//! Fault torture: many SDK devices (real `pufa-client` stores, `HttpTransport`
//! over loopback) create, edit, delete and restore records and sync against
//! the real `pufa-server` binary, while the test SIGKILLs the server at
//! random moments and restarts it on the same data dir and port.
//!
//! At the end, after a final sync of every device:
//! - every mutation a device saw acknowledged (`applied` or `duplicate`) is
//!   on the server: each field and the deleted flag hold the value of the
//!   acknowledged write with the greatest HLC (last writer wins);
//! - none was applied twice: a mutation id is `applied` at most once in all
//!   the answers the devices saw, and every later answer for it repeats the
//!   same seq; the server holds exactly the records the devices created;
//! - nothing was rejected, and every device's checksum agrees with the
//!   server's for its scope, its local records being the server's view.
//!
//! Defaults keep it to a few minutes in debug on 2 cores. Longer runs:
//! `PUFA_TORTURE_DEVICES=100 PUFA_TORTURE_KILLS=200 PUFA_TORTURE_ROUNDS=40
//! PUFA_TORTURE_SEED=7 cargo test --release -p pufa-tests --test torture`.
//!
//! Kills are timed by progress, not by clocks: after each restart the test
//! waits for a random number (1..=`SYNCS_BETWEEN_KILLS_MAX`) of device
//! syncs to succeed, then for 1..=`PUSHES_IN_FLIGHT_MAX` pushes to be on the
//! wire, and kills: every kill lands on pushes in flight.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pufa_client::{Client, ClientConfig, HttpTransport, RetryPolicy};
use pufa_core::wire::TokenIssued;
use pufa_tests::fault::{Ledger, Recorded, Wire};
use pufa_tests::{api, env_or, pull_all};
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::Notify;
use uuid::Uuid;

const DEVICES_DEFAULT: usize = 50;
const KILLS_DEFAULT: usize = 20;
/// Rounds (a few local edits, then a sync) each device makes at least; it
/// goes on until the last kill.
const ROUNDS_DEFAULT: usize = 20;
const SEED_DEFAULT: u64 = 2020;
/// Streets in the org tree; devices are spread over them, and a street's
/// devices edit each other's records.
const STREETS: usize = 5;
/// Records one device creates at most; after that it only edits.
const CREATES_MAX: usize = 40;
/// Local edits between two syncs, at most.
const OPS_PER_ROUND_MAX: usize = 6;
const SYNCS_BETWEEN_KILLS_MAX: usize = 12;
/// After those syncs, the kill waits for 1..=this many pushes on the wire.
const PUSHES_IN_FLIGHT_MAX: usize = 3;
/// Syncs a device tries at the end before the test gives up.
const FINAL_SYNC_ATTEMPTS: usize = 50;

// ------------------------------------------------------------ devices

struct Device {
    token: TokenIssued,
    street: usize,
    client: Client,
    _dir: tempfile::TempDir,
}

/// One round of local work: a few creates or edits, deletes and restores.
const WORK: pufa_tests::LocalWork = pufa_tests::LocalWork {
    ops_max: OPS_PER_ROUND_MAX,
    creates_max: CREATES_MAX,
    create_percent: 45,
    title: "民法典进社区",
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_survive_a_server_sigkilled_again_and_again() {
    let devices_n = env_or("PUFA_TORTURE_DEVICES", DEVICES_DEFAULT as u64) as usize;
    let kills = env_or("PUFA_TORTURE_KILLS", KILLS_DEFAULT as u64) as usize;
    let rounds = env_or("PUFA_TORTURE_ROUNDS", ROUNDS_DEFAULT as u64) as usize;
    let seed = env_or("PUFA_TORTURE_SEED", SEED_DEFAULT);
    let started = Instant::now();
    pufa_tests::bin_dir();

    let data = tempfile::tempdir().unwrap();
    let (mut server, _) =
        pufa_tests::ServerProcess::start(data.path().to_path_buf(), Vec::new(), None).await;
    let base = server.base();
    let admin = server.admin_token();
    pufa_tests::import_street_tree(&base, &admin, STREETS).await;

    let ledger = Arc::new(Ledger::default());
    let wire = Arc::new(Wire::default());
    let mut devices = Vec::new();
    for i in 0..devices_n {
        let street = i % STREETS + 1;
        let token = pufa_tests::field_token(&base, &admin, street, &format!("torture {i}")).await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = ClientConfig::new(dir.path(), token.device_id, token.token.clone());
        config.retry = RetryPolicy {
            // Some devices give up on a sync while the server is down (and
            // keep their outbox for the next), some retry through restarts.
            attempts: 2 + (i % 3) as u32,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
            seed: seed ^ i as u64,
        };
        let transport = Arc::new(Recorded {
            http: HttpTransport::new(&base).unwrap(),
            ledger: ledger.clone(),
            wire: wire.clone(),
        });
        let client = Client::open(config, transport).unwrap();
        devices.push(Arc::new(Device {
            token,
            street,
            client,
            _dir: dir,
        }));
    }

    // The devices work until the last kill (and at least `rounds` rounds).
    let done = Arc::new(AtomicBool::new(false));
    let synced = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        let (d, done, synced, progress) =
            (d.clone(), done.clone(), synced.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng =
                rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1000) + i as u64);
            let mut created = Vec::new();
            let mut round = 0;
            let mut unreachable = 0u64;
            while round < rounds || !done.load(Ordering::SeqCst) {
                round += 1;
                (rng, created) = pufa_tests::random_local_round_off_thread(
                    &d.client,
                    d.street,
                    WORK,
                    rng,
                    std::mem::take(&mut created),
                )
                .await;
                match d.client.sync().await {
                    Ok(report) => {
                        assert!(report.rejected.is_empty(), "device {i}: {report:?}");
                        synced.fetch_add(1, Ordering::SeqCst);
                        progress.notify_one();
                    }
                    Err(pufa_client::Error::Unreachable(_)) => unreachable += 1,
                    Err(e) => panic!("device {i}: sync failed: {e}"),
                }
            }
            (created, round, unreachable)
        }));
    }

    let mut killer = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x6b69_6c6c);
    let mut in_flight_at_kills = 0;
    for k in 0..kills {
        let wait_for =
            synced.load(Ordering::SeqCst) + killer.gen_range(1..=SYNCS_BETWEEN_KILLS_MAX);
        while synced.load(Ordering::SeqCst) < wait_for {
            progress.notified().await;
        }
        // Then aim: kill while pushes are on the wire.
        wire.wait_for_pushes(killer.gen_range(1..=PUSHES_IN_FLIGHT_MAX))
            .await;
        in_flight_at_kills += wire.pushes();
        server.kill();
        server.restart().await;
        if k % 5 == 4 {
            eprintln!("torture: {} kills, {:?}", k + 1, started.elapsed());
        }
    }
    done.store(true, Ordering::SeqCst);
    let mut created: HashSet<Uuid> = HashSet::new();
    let (mut rounds_total, mut unreachable_total) = (0, 0);
    for t in tasks {
        let (c, r, u) = t.await.unwrap();
        rounds_total += r;
        unreachable_total += u;
        for id in c {
            assert!(created.insert(id), "a record id made twice");
        }
    }

    // Final syncs until every outbox is empty and every checksum agrees.
    let clients: Vec<_> = devices.iter().map(|d| &d.client).collect();
    pufa_tests::settle_devices(&clients, FINAL_SYNC_ATTEMPTS).await;

    // 1. The server holds exactly the records the devices created; 2.
    // nothing applied twice, nothing rejected, every mutation answered; 3.
    // every acknowledged write is there: per record, each field and the
    // deleted flag hold the acknowledged write with the greatest HLC.
    let on_server = pull_all(&base, &admin).await;
    let sent = ledger.sent.lock().unwrap().clone();
    let answers = ledger.answers.lock().unwrap().clone();
    let duplicates: usize =
        pufa_tests::assert_answers_account_for(&created, &sent, &answers, &on_server)
            .values()
            .sum();

    // 4. Every device holds exactly the server's view of its scope.
    for (i, d) in devices.iter().enumerate() {
        let theirs = pull_all(&base, &d.token.token).await;
        pufa_tests::assert_device_holds_its_scope(i, &d.client, d.street, &theirs);
    }
    let (st, c) = api(
        &base,
        reqwest::Method::GET,
        "/v1/sync/checksum",
        &admin,
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(c["count"], json!(created.len()));

    eprintln!(
        "torture: {devices_n} devices, {kills} SIGKILLs survived ({in_flight_at_kills} pushes on the wire at the kills); {} records, {} mutations acknowledged and verified ({duplicates} answered again as duplicate); {rounds_total} device rounds, {unreachable_total} syncs cut off by a kill; {:?}",
        created.len(),
        answers.len(),
        started.elapsed()
    );
    server.kill();
}
