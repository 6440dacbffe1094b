//! A seeded, deterministic simulation: several field devices with lossy,
//! duplicating, delaying transports edit offline and online, their clocks
//! drift, their apps get killed; at the end everyone reconnects and syncs.
//! Then no acknowledged write is lost, nothing is duplicated, every device
//! holds exactly the server's view of its scope, and the totals equal a
//! recount from the records.
//!
//! `PUFA_SIM_SEEDS=<n>` runs seeds `0..n` (default [`DEFAULT_SEEDS`]);
//! `PUFA_SIM_SEED=<n>` runs that one seed; `PUFA_SIM_TRACE=1` prints every
//! step. A failure names its seed and how to replay it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pufa_client::{
    Client, ClientConfig, Error, Filter, LocalRecord, RetryPolicy, SyncReport, SyncState,
};
use pufa_core::kinds::{DemoSite, Lecture, LegalUnderstander, LibraryCorner};
use pufa_core::schema::{Kind, CORNER_STATUSES, SITE_LEVELS, SITE_STATUSES, UNDERSTANDER_STATUSES};
use pufa_core::wire::{
    CornerTotals, LectureTotals, SiteTotals, TotalsResponse, UnderstanderTotals,
};
use pufa_tests::{Device, Faults, World};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// Seeds run by default: about 35 s in a debug build on two cores.
const DEFAULT_SEEDS: u64 = 200;
/// Stop after this many failing seeds (each is reported).
const MAX_FAILURES: usize = 10;

/// `small_tree()`: unit and parent.
const TREE: [(&str, Option<&str>); 7] = [
    ("d", None),
    ("s1", Some("d")),
    ("s2", Some("d")),
    ("c11", Some("s1")),
    ("c12", Some("s1")),
    ("c21", Some("s2")),
    ("c22", Some("s2")),
];
/// Community and village units (coverage, §7).
const GRASSROOTS: [&str; 4] = ["c11", "c12", "c21", "c22"];

/// The range used for ranged totals.
const FROM: &str = "2020-03-01";
const TO: &str = "2020-09-30";

macro_rules! ensure {
    ($seed:expr, $cond:expr, $($arg:tt)+) => {
        assert!(
            $cond,
            "seed {}: {} (replay: PUFA_SIM_SEED={} cargo test -p pufa-tests --test simulation)",
            $seed,
            format_args!($($arg)+),
            $seed
        )
    };
}

fn parent(unit: &str) -> Option<&'static str> {
    TREE.iter().find(|(u, _)| *u == unit).and_then(|(_, p)| *p)
}

/// `unit` is `scope` or below it.
fn within(unit: &str, scope: &str) -> bool {
    let mut at = Some(unit);
    while let Some(u) = at {
        if u == scope {
            return true;
        }
        at = parent(u);
    }
    false
}

fn units_in(scope: &str) -> Vec<&'static str> {
    TREE.iter()
        .map(|(u, _)| *u)
        .filter(|u| within(u, scope))
        .collect()
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

fn replay(seed: u64) -> String {
    format!("PUFA_SIM_SEED={seed} cargo test -p pufa-tests --test simulation")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_simulation_keeps_the_contract() {
    let seeds: Vec<u64> = match env_u64("PUFA_SIM_SEED") {
        Some(one) => vec![one],
        None => (0..env_u64("PUFA_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS)).collect(),
    };
    let started = Instant::now();
    let mut failed = Vec::new();
    let mut ran = 0;
    let mut stats = Stats::default();
    for &seed in &seeds {
        ran += 1;
        // In its own task, so that a failing seed is named (its panic
        // message, printed above, says what went wrong).
        match tokio::spawn(run(seed)).await {
            Ok(s) => stats.add(&s),
            Err(_) => {
                eprintln!("seed {seed} FAILED; replay: {}", replay(seed));
                failed.push(seed);
                if failed.len() >= MAX_FAILURES {
                    break;
                }
            }
        }
    }
    eprintln!(
        "simulation: {ran} seed(s) in {:.1?}, {} failed; {stats:?}",
        started.elapsed(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "failing seeds {failed:?} (of {ran} run); replay one with {}",
        replay(failed.first().copied().unwrap_or_default())
    );
}

/// What the passing seeds exercised (printed at the end).
#[derive(Debug, Default)]
struct Stats {
    records: u64,
    local_writes: u64,
    syncs_ok: u64,
    syncs_unreachable: u64,
    applied: u64,
    duplicates: u64,
    conflicts: u64,
    removed: u64,
    repairs: u64,
    reopens: u64,
    /// Records only one device wrote to (their end state is known exactly).
    single_writer: u64,
    /// Tries to reopen a store whose lock the dropped client's sled had
    /// not released yet (see [`reopen`]).
    reopen_lock_retries: u64,
    /// Legitimate `out_of_scope` refusals (see the end of [`run`]).
    out_of_scope: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.records += o.records;
        self.local_writes += o.local_writes;
        self.syncs_ok += o.syncs_ok;
        self.syncs_unreachable += o.syncs_unreachable;
        self.applied += o.applied;
        self.duplicates += o.duplicates;
        self.conflicts += o.conflicts;
        self.removed += o.removed;
        self.repairs += o.repairs;
        self.reopens += o.reopens;
        self.single_writer += o.single_writer;
        self.reopen_lock_retries += o.reopen_lock_retries;
        self.out_of_scope += o.out_of_scope;
    }

    fn report(&mut self, r: &SyncReport) {
        self.syncs_ok += 1;
        self.applied += r.applied;
        self.duplicates += r.duplicates;
        self.conflicts += r.conflicts.len() as u64;
        self.removed += r.removed;
        self.repairs += u64::from(r.repaired);
    }
}

/// What the devices wrote, to check that every acknowledged write took effect.
#[derive(Default)]
struct Ledger {
    /// Devices that wrote each record.
    writers: HashMap<Uuid, BTreeSet<usize>>,
    /// `(fields, deleted)` of a record as a device saw it right after its
    /// last write to it.
    last_view: HashMap<(Uuid, usize), (Value, bool)>,
    /// Every value written to each field of each record (JSON text).
    values: HashMap<Uuid, HashMap<String, HashSet<String>>>,
    /// Records some device deleted.
    deleted: HashSet<Uuid>,
}

impl Ledger {
    fn wrote(
        &mut self,
        device: usize,
        id: Uuid,
        set: &Map<String, Value>,
        delete: Option<bool>,
        after: &LocalRecord,
    ) {
        self.writers.entry(id).or_default().insert(device);
        self.last_view.insert(
            (id, device),
            (Value::Object(after.fields.clone()), after.deleted),
        );
        let values = self.values.entry(id).or_default();
        for (f, v) in set {
            values.entry(f.clone()).or_default().insert(v.to_string());
        }
        if delete == Some(true) {
            self.deleted.insert(id);
        }
    }
}

/// One simulated device and what the simulation knows about it.
struct Slot {
    dev: Option<Device>,
    scope: &'static str,
    online: bool,
    /// Records this device created (the create returned Ok).
    created: Vec<Uuid>,
    reopens: u64,
    last_report: Option<SyncReport>,
}

impl Slot {
    fn dev(&self) -> &Device {
        self.dev
            .as_ref()
            .expect("a device is always open between steps")
    }
}

fn date_2020(rng: &mut ChaCha8Rng) -> String {
    let month = rng.gen_range(1..=12u32);
    let days = match month {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    format!("2020-{month:02}-{:02}", rng.gen_range(1..=days))
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.gen_range(0..items.len())]
}

/// Fields to set on a record of `kind`: one to three of its editable fields,
/// with valid values, and sometimes a move to another unit of `scope`.
fn random_edit(rng: &mut ChaCha8Rng, kind: Kind, scope: &str, n: u64) -> Map<String, Value> {
    let editable: &[&str] = match kind {
        Kind::Lecture => &["held_on", "attendees", "title", "org_unit"],
        Kind::LibraryCorner => &["status", "name", "books", "org_unit"],
        Kind::DemoSite => &["level", "status", "year", "org_unit"],
        Kind::LegalUnderstander => &["appointed_on", "status", "phone", "org_unit"],
    };
    let mut set = Map::new();
    for _ in 0..rng.gen_range(1..=3) {
        let f = *pick(rng, editable);
        let v = match f {
            "held_on" => json!(date_2020(rng)),
            "attendees" => json!(rng.gen_range(0..=300u32)),
            "title" => json!(format!("法治讲座 {n}")),
            "status" if kind == Kind::LibraryCorner => json!(pick(rng, CORNER_STATUSES)),
            "status" if kind == Kind::LegalUnderstander => json!(pick(rng, UNDERSTANDER_STATUSES)),
            "appointed_on" => json!(date_2020(rng)),
            "phone" => json!(format!("0351-555{:04}", n % 10_000)),
            "status" => json!(pick(rng, SITE_STATUSES)),
            "name" => json!(format!("图书角 {n}")),
            "books" => json!(rng.gen_range(0..=5000u32)),
            "level" => json!(pick(rng, SITE_LEVELS)),
            "year" => json!(rng.gen_range(2018..=2022u32)),
            "org_unit" => json!(pick(rng, &units_in(scope))),
            _ => unreachable!(),
        };
        set.insert(f.to_string(), v);
    }
    set
}

/// A new record of a random kind in a unit of `scope`.
fn random_record(rng: &mut ChaCha8Rng, scope: &str, n: u64) -> (Kind, Map<String, Value>) {
    use pufa_core::kinds::RecordKind;
    let org_unit = pick(rng, &units_in(scope)).to_string();
    match rng.gen_range(0..4) {
        0 => (
            Kind::Lecture,
            Lecture {
                org_unit,
                held_on: date_2020(rng),
                title: format!("民法典宣讲 {n}"),
                attendees: rng.gen_range(0..=300),
                ..Lecture::default()
            }
            .to_fields(),
        ),
        1 => (
            Kind::LibraryCorner,
            LibraryCorner {
                org_unit,
                name: format!("图书角 {n}"),
                status: pick(rng, CORNER_STATUSES).to_string(),
                books: rng.gen_bool(0.5).then(|| rng.gen_range(0..=5000)),
                ..LibraryCorner::default()
            }
            .to_fields(),
        ),
        2 => (
            Kind::LegalUnderstander,
            LegalUnderstander {
                org_unit,
                name: format!("王某某 {n}"),
                appointed_on: date_2020(rng),
                status: pick(rng, UNDERSTANDER_STATUSES).to_string(),
                ..LegalUnderstander::default()
            }
            .to_fields(),
        ),
        _ => (
            Kind::DemoSite,
            DemoSite {
                org_unit,
                level: pick(rng, SITE_LEVELS).to_string(),
                status: pick(rng, SITE_STATUSES).to_string(),
                year: rng.gen_range(2018..=2022),
                notes: None,
            }
            .to_fields(),
        ),
    }
}

/// A killed app started again: [`Device::reopen`], except that it waits
/// for the store's lock. sled releases it a moment after the last handle
/// is dropped (its background IO threads still hold the file briefly), so
/// `Device::reopen` fails now and then with "could not acquire lock"
/// (WouldBlock), whatever the seed. A real kill ends the process and frees
/// the lock at once; the retry here only stands in for that. The client is
/// configured as `pufa_tests::open_client` does.
fn reopen(dev: Device, seed: u64, lock_retries: &mut u64) -> Device {
    let Device {
        id,
        token,
        client,
        transport,
        clock,
        dir,
    } = dev;
    drop(client);
    for _ in 0..1_000_000 {
        let mut config = ClientConfig::new(dir.path(), id, &token);
        config.retry = RetryPolicy {
            attempts: 4,
            base_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            seed,
        };
        config.clock = clock.clone();
        match Client::open(config, transport.clone()) {
            Ok(client) => {
                return Device {
                    id,
                    token,
                    client,
                    transport,
                    clock,
                    dir,
                }
            }
            Err(Error::Store(e)) if e.contains("could not acquire lock") => {
                *lock_retries += 1;
                std::thread::yield_now();
            }
            Err(e) => panic!("seed {seed}: reopening device {id}: {e}"),
        }
    }
    panic!("seed {seed}: the store of device {id} stayed locked after its client was dropped");
}

/// Every entry a pull from 0 gives `token`, following `has_more`.
async fn pull_all(w: &World, token: &str, seed: u64, who: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut since = 0u64;
    for _ in 0..1000 {
        let (st, page) = w
            .api(
                "GET",
                &format!("/v1/sync/pull?since={since}&limit=5000"),
                token,
                None,
            )
            .await;
        ensure!(seed, st == 200, "pull as {who} answered {st}: {page}");
        out.extend(page["records"].as_array().cloned().unwrap_or_default());
        let next = page["next"].as_u64().unwrap_or(0);
        if page["has_more"] != json!(true) {
            return out;
        }
        ensure!(
            seed,
            next > since,
            "pull as {who}: has_more but next {next} <= since {since}"
        );
        since = next;
    }
    panic!("seed {seed}: pull as {who} never ended");
}

/// `(fields, deleted, seq, open conflicts)` of a record.
type View = (Value, bool, u64, u64);

fn view_of(r: &Value) -> View {
    (
        r["fields"].clone(),
        r["deleted"].as_bool().unwrap_or(false),
        r["seq"].as_u64().unwrap_or(0),
        r["conflicts"].as_u64().unwrap_or(0),
    )
}

fn is_gone(r: &Value) -> bool {
    r.get("in_scope") == Some(&json!(false))
}

async fn run(seed: u64) -> Stats {
    let trace = std::env::var("PUFA_SIM_TRACE").is_ok_and(|v| v != "0" && !v.is_empty());
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let w = World::new(seed).await;
    w.small_tree().await;

    let n_devices = rng.gen_range(3..=6);
    let mut slots: Vec<Slot> = Vec::new();
    for i in 0..n_devices {
        // Most devices see the whole district, so they meet each other's edits.
        let scope: &'static str = match rng.gen_range(0..10) {
            0..=5 => "d",
            6 | 7 => "s1",
            _ => "s2",
        };
        let mut f = || rng.gen_range(0.0..0.2);
        let faults = Faults {
            drop_request: f(),
            drop_response: f(),
            duplicate: f(),
            delay: f(),
        };
        let dev = w.device(scope, faults, seed * 100 + i).await;
        if trace {
            eprintln!("seed {seed}: device {i} {} at {scope}, {faults:?}", dev.id);
        }
        slots.push(Slot {
            dev: Some(dev),
            scope,
            online: true,
            created: Vec::new(),
            reopens: 0,
            last_report: None,
        });
    }

    // Every record created, in creation order (to pick from deterministically).
    let mut all: Vec<Uuid> = Vec::new();
    // Units that district-wide devices moved each record to.
    let mut wide_moves: HashMap<Uuid, BTreeSet<String>> = HashMap::new();
    let mut ledger = Ledger::default();
    let mut stats = Stats::default();

    let steps = rng.gen_range(40..=120);
    for step in 0..steps {
        let i = rng.gen_range(0..slots.len());
        let scope = slots[i].scope;
        let action = rng.gen_range(0..100);
        // Numbers titles and names.
        let n = step + 1;
        let mut d = slots[i].dev.take().expect("open");
        let say = |what: String| {
            if trace {
                eprintln!("seed {seed} step {step}: device {i} ({scope}): {what}");
            }
        };
        match action {
            // Lose or regain the network.
            0..=7 => {
                let online = !slots[i].online;
                d.transport.set_offline(!online);
                slots[i].online = online;
                say(format!("online={online}"));
            }
            // Time passes; the device's clock drifts, sometimes far ahead.
            8..=15 => {
                let ahead = if rng.gen_bool(0.1) {
                    rng.gen_range(600_000..=7_200_000)
                } else {
                    rng.gen_range(1_000..=300_000)
                };
                d.clock.0.fetch_add(ahead, Ordering::SeqCst);
                let server = if rng.gen_bool(0.5) {
                    let s = rng.gen_range(1_000..=600_000);
                    w.clock.advance(s);
                    s
                } else {
                    0
                };
                say(format!("clock +{ahead} ms, server +{server} ms"));
            }
            // Create.
            16..=40 => {
                let (kind, fields) = random_record(&mut rng, scope, n);
                let r = d.client.create_fields(kind, fields.clone());
                let set = fields.clone();
                let id = match r {
                    Ok(id) => id,
                    Err(e) => {
                        panic!("seed {seed}: create {kind:?} {fields:?} on device {i} failed: {e}")
                    }
                };
                say(format!("create {id} {kind:?} {}", Value::Object(fields)));
                all.push(id);
                ledger.wrote(i, id, &set, None, &d.client.get(id).unwrap().unwrap());
                slots[i].created.push(id);
                stats.local_writes += 1;
            }
            // Update, delete, restore a record the device holds.
            41..=75 => {
                let mut visible = Vec::new();
                for id in &all {
                    if let Some(r) = d.client.get(*id).unwrap() {
                        visible.push(r);
                    }
                }
                let want_deleted = match action {
                    41..=65 => None,
                    66..=71 => Some(false),
                    _ => Some(true),
                };
                visible.retain(|r| want_deleted.is_none_or(|del| r.deleted == del));
                if visible.is_empty() {
                    say("nothing to edit".into());
                    slots[i].dev = Some(d);
                    continue;
                }
                let r = pick(&mut rng, &visible).clone();
                let mut set = Map::new();
                let (what, res) = match action {
                    41..=65 => {
                        set = random_edit(&mut rng, r.kind, scope, n);
                        if scope == "d" {
                            if let Some(u) = set.get("org_unit").and_then(Value::as_str) {
                                wide_moves.entry(r.id).or_default().insert(u.to_string());
                            }
                        }
                        let what = format!("update {} {}", r.id, Value::Object(set.clone()));
                        (what, d.client.update(r.id, set.clone()))
                    }
                    66..=71 => (format!("delete {}", r.id), d.client.delete(r.id)),
                    _ => (format!("restore {}", r.id), d.client.restore(r.id)),
                };
                if let Err(e) = res {
                    panic!("seed {seed}: device {i}: {what} failed: {e}");
                }
                say(what);
                let delete = match action {
                    41..=65 => None,
                    66..=71 => Some(true),
                    _ => Some(false),
                };
                ledger.wrote(i, r.id, &set, delete, &d.client.get(r.id).unwrap().unwrap());
                stats.local_writes += 1;
            }
            // Sync (offline, it cannot reach the server).
            76..=97 => match d.client.sync().await {
                Ok(report) => {
                    ensure!(seed, slots[i].online, "device {i} synced while offline");
                    say(format!(
                        "sync ok: pushed {} applied {} dup {} rejected {} conflicts {} pulled {} removed {} checksum_ok {} repaired {}",
                        report.pushed,
                        report.applied,
                        report.duplicates,
                        report.rejected.len(),
                        report.conflicts.len(),
                        report.pulled,
                        report.removed,
                        report.checksum_ok,
                        report.repaired
                    ));
                    stats.report(&report);
                    check_sync(&w, seed, i, scope, &d, &report, &format!("step {step}")).await;
                    slots[i].last_report = Some(report);
                }
                Err(Error::Unreachable(e)) => {
                    stats.syncs_unreachable += 1;
                    say(format!("sync unreachable: {e}"));
                }
                Err(e) => panic!("seed {seed} step {step}: device {i} sync failed: {e}"),
            },
            // The app is killed and started again.
            _ => {
                slots[i].reopens += 1;
                let reseed = seed * 100 + i as u64 + 1000 * slots[i].reopens;
                d = reopen(d, reseed, &mut stats.reopen_lock_retries);
                stats.reopens += 1;
                say("killed and reopened".into());
            }
        }
        slots[i].dev = Some(d);
    }

    // Everyone back, no more faults; two rounds of syncs.
    for s in &slots {
        s.dev().transport.set_offline(false);
        s.dev().transport.set_faults(Faults::default());
    }
    for round in 0..2 {
        for (i, s) in slots.iter_mut().enumerate() {
            let report = s.dev().sync_until_ok().await;
            stats.report(&report);
            check_sync(
                &w,
                seed,
                i,
                s.scope,
                s.dev(),
                &report,
                &format!("final round {round}"),
            )
            .await;
            s.last_report = Some(report);
        }
    }

    // Rejections. Every edit is valid and inside the device's scope when
    // made, so only one refusal is legitimate: a street-scoped device edited
    // a record that a district-wide device had meanwhile moved out of that
    // street (the record's current unit is checked, §6 rule 2:
    // `out_of_scope`). The user would discard such an edit; we do.
    for (i, s) in slots.iter().enumerate() {
        for rej in s.dev().client.rejected().unwrap() {
            let moved_out = wide_moves
                .get(&rej.record_id)
                .is_some_and(|units| units.iter().any(|u| !within(u, s.scope)));
            ensure!(
                seed,
                rej.error.code == "out_of_scope" && s.scope != "d" && moved_out,
                "device {i} ({}) had an edit rejected: {rej:?}",
                s.scope
            );
            s.dev().client.discard(rej.mutation).unwrap();
            stats.out_of_scope += 1;
        }
    }

    // The server's records, as the admin sees them.
    let server = admin_records(&w, seed).await;

    // 1. No acknowledged local write lost: every record created exists.
    for (i, s) in slots.iter().enumerate() {
        for id in &s.created {
            ensure!(
                seed,
                server.contains_key(id),
                "device {i} ({}) created {id} (local write acknowledged) but the server does not have it",
                s.scope
            );
        }
    }
    let created: HashSet<Uuid> = all.iter().copied().collect();
    for (id, writers) in &ledger.writers {
        ensure!(
            seed,
            server.contains_key(id),
            "devices {writers:?} wrote to {id} (acknowledged locally), which the server does not have"
        );
    }
    for id in server.keys() {
        ensure!(
            seed,
            created.contains(id),
            "the server has {id}, which no device created"
        );
    }

    // 1b. Every acknowledged write took effect: each stored value is one
    // that some device wrote, a record is deleted only if some device
    // deleted it, and a record only one device wrote to ends exactly as
    // that device saw it after its last write (its writes are ordered by
    // its HLC, re-stamped or not).
    for (id, r) in &server {
        let fields = r["fields"].as_object().cloned().unwrap_or_default();
        let deleted = r["deleted"] == json!(true);
        for (f, v) in &fields {
            ensure!(
                seed,
                ledger
                    .values
                    .get(id)
                    .and_then(|m| m.get(f))
                    .is_some_and(|vals| vals.contains(&v.to_string())),
                "record {id}: field {f} = {v}, a value no device wrote"
            );
        }
        ensure!(
            seed,
            !deleted || ledger.deleted.contains(id),
            "record {id} is deleted, but no device deleted it"
        );
        let writers = &ledger.writers[id];
        if let [only] = writers.iter().copied().collect::<Vec<_>>()[..] {
            stats.single_writer += 1;
            let want = &ledger.last_view[&(*id, only)];
            ensure!(
                seed,
                want == &(Value::Object(fields.clone()), deleted),
                "record {id}, written only by device {only}: the server has {} (deleted {deleted}); the device's last write left {want:?}",
                Value::Object(fields.clone())
            );
        }
    }

    // 3. Every device holds exactly the server's view of its scope.
    for (i, s) in slots.iter().enumerate() {
        let dev = s.dev();
        let report = s.last_report.as_ref().unwrap();
        ensure!(
            seed,
            report.checksum_ok,
            "device {i}: last sync's checksum did not match: {report:?}"
        );
        let status = dev.client.status().unwrap();
        ensure!(
            seed,
            status.pending == 0,
            "device {i}: {} edits still pending: {status:?}",
            status.pending
        );
        ensure!(
            seed,
            status.rejected == 0,
            "device {i}: rejected edits left: {status:?}"
        );
        ensure!(
            seed,
            status.lost_on_server == 0,
            "device {i}: records lost on server: {status:?}"
        );
        check_view(&w, seed, i, s.scope, dev, &server, "after the final syncs").await;
    }

    // 4. Totals equal a recount from the records.
    let records: Vec<&Value> = server.values().collect();
    for org in ["d", "s1", "s2"] {
        for range in [None, Some((FROM, TO))] {
            let path = match range {
                None => format!("/v1/totals?org={org}"),
                Some((f, t)) => format!("/v1/totals?org={org}&from={f}&to={t}"),
            };
            let (st, body) = w.api("GET", &path, &w.admin, None).await;
            ensure!(seed, st == 200, "{path} answered {st}: {body}");
            let got: TotalsResponse = serde_json::from_value(body.clone())
                .unwrap_or_else(|e| panic!("seed {seed}: {path}: unreadable totals {e}: {body}"));
            ensure!(seed, got.org.code == org, "{path}: org {:?}", got.org);
            let want = recount(&records, org, range);
            compare(
                seed,
                &path,
                org,
                &want,
                (
                    &got.lectures,
                    &got.library_corners,
                    &got.demo_sites,
                    &got.legal_understanders,
                    got.conflicts_open,
                ),
            );
            let children: Vec<&str> = TREE
                .iter()
                .filter(|(_, p)| *p == Some(org))
                .map(|(u, _)| *u)
                .collect();
            let got_children: Vec<&str> =
                got.children.iter().map(|c| c.org.code.as_str()).collect();
            ensure!(
                seed,
                got_children.iter().copied().collect::<BTreeSet<_>>()
                    == children.iter().copied().collect(),
                "{path}: children {got_children:?}, expected {children:?}"
            );
            for c in &got.children {
                let want = recount(&records, &c.org.code, range);
                compare(
                    seed,
                    &format!("{path} child {}", c.org.code),
                    &c.org.code,
                    &want,
                    (
                        &c.lectures,
                        &c.library_corners,
                        &c.demo_sites,
                        &c.legal_understanders,
                        c.conflicts_open,
                    ),
                );
            }
        }
    }
    if trace {
        eprintln!("seed {seed}: {} records, all invariants hold", server.len());
    }
    stats.records += server.len() as u64;
    stats
}

/// The server's records as the admin pulls them from 0, each once.
async fn admin_records(w: &World, seed: u64) -> BTreeMap<Uuid, Value> {
    let mut server = BTreeMap::new();
    for r in pull_all(w, &w.admin, seed, "admin").await {
        ensure!(
            seed,
            !is_gone(&r),
            "the admin pull lists a record out of scope: {r}"
        );
        let id: Uuid = r["id"].as_str().and_then(|s| s.parse().ok()).unwrap();
        // 2. No duplicate record.
        ensure!(
            seed,
            server.insert(id, r.clone()).is_none(),
            "the pull from 0 lists {id} twice"
        );
    }
    server
}

/// Invariant 3 for one device: its pull is the admin's records limited to
/// its scope, and its local store (`list`) holds exactly those, at the same
/// seq, with the same fields, deleted flag and open conflicts.
async fn check_view(
    w: &World,
    seed: u64,
    i: usize,
    scope: &str,
    dev: &Device,
    server: &BTreeMap<Uuid, Value>,
    when: &str,
) {
    let mut theirs: BTreeMap<Uuid, View> = BTreeMap::new();
    for r in pull_all(w, &dev.token, seed, &format!("device {i}")).await {
        let id: Uuid = r["id"].as_str().and_then(|s| s.parse().ok()).unwrap();
        if is_gone(&r) {
            continue;
        }
        ensure!(
            seed,
            theirs.insert(id, view_of(&r)).is_none(),
            "device {i}'s pull lists {id} twice"
        );
    }
    let expected: BTreeMap<Uuid, View> = server
        .iter()
        .filter(|(_, r)| {
            r["fields"]["org_unit"]
                .as_str()
                .is_some_and(|u| within(u, scope))
        })
        .map(|(id, r)| (*id, view_of(r)))
        .collect();
    ensure!(
        seed,
        theirs == expected,
        "device {i} ({scope}), {when}: its pull differs from the admin's records in its scope:\n pull  {theirs:?}\n admin {expected:?}"
    );

    let local = dev
        .client
        .list(&Filter {
            include_deleted: true,
            ..Filter::default()
        })
        .unwrap();
    let mut mine: BTreeMap<Uuid, View> = BTreeMap::new();
    for r in &local {
        let open = match &r.state {
            SyncState::Synced => 0,
            SyncState::Conflicted { open, .. } => u64::from(*open),
            other => panic!(
                "seed {seed}: device {i}: record {} is {other:?} {when} (replay: {})",
                r.id,
                replay(seed)
            ),
        };
        mine.insert(
            r.id,
            (Value::Object(r.fields.clone()), r.deleted, r.seq, open),
        );
    }
    if mine != theirs {
        let mut diff = String::new();
        for id in mine.keys().chain(theirs.keys()).collect::<BTreeSet<_>>() {
            let (a, b) = (mine.get(id), theirs.get(id));
            if a != b {
                diff.push_str(&format!("\n  {id}: device {a:?}\n  {id}: server {b:?}"));
            }
        }
        panic!(
            "seed {seed}: device {i} ({scope}), {when}: does not hold the server's view of its scope:{diff}\n(replay: {})",
            replay(seed)
        );
    }
}

/// Checks one successful sync made while nothing else ran: it pushed
/// everything, its checksum matched, the server store was not replaced,
/// each conflict is between different values, and any refusal is the
/// legitimate one (see the end of [`run`]) judged against the server's
/// state right now (nothing has changed since the push). Without rejected
/// edits layered on top, the device then holds exactly its scope's view.
async fn check_sync(
    w: &World,
    seed: u64,
    i: usize,
    scope: &str,
    dev: &Device,
    report: &SyncReport,
    when: &str,
) {
    ensure!(
        seed,
        report.checksum_ok,
        "device {i}, {when}: a sync with nothing else running ended without a matching checksum: {report:?}"
    );
    ensure!(
        seed,
        report.lost_on_server.is_empty(),
        "device {i}, {when}: records lost on the (never replaced) server: {report:?}"
    );
    for c in &report.conflicts {
        ensure!(
            seed,
            c.winner != c.loser,
            "device {i}, {when}: a conflict between equal values: {c:?}"
        );
    }
    let status = dev.client.status().unwrap();
    ensure!(
        seed,
        status.pending == 0,
        "device {i}, {when}: {} edits still pending after a successful sync: {status:?}",
        status.pending
    );
    let server = admin_records(w, seed).await;
    for rej in &report.rejected {
        let unit = server
            .get(&rej.record_id)
            .and_then(|r| r["fields"]["org_unit"].as_str());
        ensure!(
            seed,
            rej.error.code == "out_of_scope" && unit.is_some_and(|u| !within(u, scope)),
            "device {i} ({scope}), {when}: an edit was rejected while the record is at {unit:?}: {rej:?}"
        );
    }
    if dev.client.rejected().unwrap().is_empty() {
        check_view(w, seed, i, scope, dev, &server, when).await;
    }
}

/// Expected figures of one unit's subtree.
#[derive(Debug, PartialEq)]
struct Recount {
    lectures: (u64, u64, u64),
    corners: (u64, u64, u64),
    sites: [u64; 4],
    /// Appointed in the range, serving at its end, units they cover.
    understanders: (u64, u64, u64),
    conflicts_open: u64,
}

fn recount(records: &[&Value], org: &str, range: Option<(&str, &str)>) -> Recount {
    let mut lectures = (0, 0);
    let mut lecture_units = BTreeSet::new();
    let mut corners_active = 0;
    let mut corner_units = BTreeSet::new();
    let mut sites = [0u64; 4];
    let mut understanders = (0, 0);
    let mut understander_units = BTreeSet::new();
    let mut conflicts_open = 0;
    let years = range.map(|(f, t)| {
        (
            f[..4].parse::<u64>().unwrap(),
            t[..4].parse::<u64>().unwrap(),
        )
    });
    for r in records {
        let f = &r["fields"];
        let Some(unit) = f["org_unit"].as_str() else {
            continue;
        };
        if !within(unit, org) {
            continue;
        }
        // Open conflicts count on deleted records too.
        conflicts_open += r["conflicts"].as_u64().unwrap_or(0);
        if r["deleted"] == json!(true) {
            continue;
        }
        let grassroots = GRASSROOTS.contains(&unit);
        match r["kind"].as_str().unwrap_or("") {
            "lecture" => {
                let held_on = f["held_on"].as_str().unwrap_or("");
                if range.is_none_or(|(from, to)| from <= held_on && held_on <= to) {
                    lectures.0 += 1;
                    lectures.1 += f["attendees"].as_u64().unwrap_or(0);
                    if grassroots {
                        lecture_units.insert(unit);
                    }
                }
            }
            "library_corner" if f["status"] == json!("active") => {
                corners_active += 1;
                if grassroots {
                    corner_units.insert(unit);
                }
            }
            "demo_site" => {
                let year = f["year"].as_u64().unwrap_or(0);
                if f["status"] == json!("awarded")
                    && years.is_none_or(|(a, b)| a <= year && year <= b)
                {
                    let level = f["level"].as_str().unwrap_or("");
                    if let Some(ix) = SITE_LEVELS.iter().position(|l| *l == level) {
                        sites[ix] += 1;
                    }
                }
            }
            "legal_understander" => {
                let day = f["appointed_on"].as_str().unwrap_or("");
                if range.is_none_or(|(from, to)| from <= day && day <= to) {
                    understanders.0 += 1;
                }
                if f["status"] == json!("serving") && range.is_none_or(|(_, to)| day <= to) {
                    understanders.1 += 1;
                    if grassroots {
                        understander_units.insert(unit);
                    }
                }
            }
            _ => {}
        }
    }
    let total = GRASSROOTS.iter().filter(|u| within(u, org)).count() as u64;
    Recount {
        lectures: (lectures.0, lectures.1, lecture_units.len() as u64),
        corners: (corners_active, corner_units.len() as u64, total),
        sites,
        understanders: (
            understanders.0,
            understanders.1,
            understander_units.len() as u64,
        ),
        conflicts_open,
    }
}

fn compare(
    seed: u64,
    what: &str,
    org: &str,
    want: &Recount,
    got: (
        &LectureTotals,
        &CornerTotals,
        &SiteTotals,
        &UnderstanderTotals,
        u64,
    ),
) {
    let (l, c, s, u, conflicts_open) = got;
    let got_rc = Recount {
        lectures: (l.count, l.attendees, l.units_covered),
        corners: (c.active, c.units_covered, c.units_total),
        sites: [s.national, s.provincial, s.municipal, s.district],
        understanders: (u.appointed, u.serving, u.units_covered),
        conflicts_open,
    };
    ensure!(
        seed,
        &got_rc == want,
        "{what} (org {org}): totals {got_rc:?}, recount from the records {want:?}"
    );
    let coverage = if want.corners.2 == 0 {
        0.0
    } else {
        want.corners.1 as f64 / want.corners.2 as f64
    };
    ensure!(
        seed,
        (c.coverage - coverage).abs() < 1e-3,
        "{what} (org {org}): coverage {}, expected {coverage}",
        c.coverage
    );
}
