//! `pufa-bench`: measures the server as a separate process over loopback.
//!
//! Starts the `pufa-server` binary that sits beside this one on a fresh
//! temp data dir (or targets `--url` with `--admin-token`), then measures:
//! durable push throughput with 1 and with 4 concurrent pushers, a full
//! pull, totals latency, the server's peak RSS and disk bytes per record.
//!
//! ```text
//! cargo build --release -p pufa-server -p pufa-bench
//! ./target/release/pufa-bench --records 100000 --batch 500
//! ```

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use pufa_client::AdminClient;
use pufa_core::wire::{OrgUnit, Role, TokenRequest, UnitType};
use serde_json::{json, Value};
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(about = "Benchmark a Pufa Sync server over loopback")]
struct Args {
    /// Lectures pushed in each push phase.
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Mutations per push.
    #[arg(long, default_value_t = 500)]
    batch: u64,
    /// Concurrent pushers of the second push phase.
    #[arg(long, default_value_t = 4)]
    pushers: u64,
    /// Totals requests to time.
    #[arg(long, default_value_t = 300)]
    totals_requests: usize,
    /// Target a running server instead of starting one.
    #[arg(long)]
    url: Option<String>,
    #[arg(long, requires = "url")]
    admin_token: Option<String>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Also (or, with --stores pg, only) run against PostgreSQL: each run
    /// gets a fresh schema in this database (a role that may create
    /// schemas), dropped afterwards.
    #[arg(long, env = "PUFA_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Which stores to measure, side by side in one run: `sled`,
    /// `sled-nofsync` (the same without the fsyncs that make an
    /// acknowledgement survive a power cut: what they cost), `pg` (one
    /// instance), `pg2` (two instances on one database; pushers and reads
    /// spread over both). Default: sled, plus pg and pg2 with
    /// --database-url.
    #[arg(long, value_delimiter = ',')]
    stores: Vec<String>,
    /// Devices pushing small batches all at once (latency under load).
    #[arg(long, default_value_t = 200)]
    small_devices: u64,
    /// Mutations per small batch.
    #[arg(long, default_value_t = 10)]
    small_batch: u64,
    /// Small batches per device.
    #[arg(long, default_value_t = 5)]
    small_rounds: u64,
    /// Lectures a fresh SDK device records offline and then pushes.
    #[arg(long, default_value_t = 10_000)]
    device_records: u64,
    /// Internal: run one SDK device in this process (spawned by the bench so
    /// that its peak RSS is its own).
    #[command(subcommand)]
    device: Option<DeviceCmd>,
}

#[derive(Debug, clap::Subcommand)]
enum DeviceCmd {
    /// Open an empty SDK device, optionally record lectures offline, sync,
    /// and print one JSON line of timings and peak RSS.
    Device {
        #[arg(long)]
        url: String,
        #[arg(long)]
        token: String,
        #[arg(long)]
        device_id: Uuid,
        /// Lectures to record offline before syncing.
        #[arg(long, default_value_t = 0)]
        record: u64,
        /// Keep the device's store here (to sync again later) instead of a temp dir.
        #[arg(long)]
        store: Option<PathBuf>,
    },
}

/// The `device` subcommand: one SDK device, measured from inside.
async fn device_main(
    url: &str,
    token: &str,
    device_id: Uuid,
    record: u64,
    store: Option<&std::path::Path>,
) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = store.unwrap_or(tmp.path());
    let transport = std::sync::Arc::new(pufa_client::HttpTransport::new(url)?);
    let mut config = pufa_client::ClientConfig::new(dir, device_id, token);
    config.pull_limit = 5000;
    let client = pufa_client::Client::open(config, transport)?;
    if record > 0 {
        // Catch up first, so the timed sync below is the offline push.
        client.sync().await?;
    }
    let t0 = Instant::now();
    if record > 0 {
        let recs = (0..record)
            .map(|n| {
                // Multiples of 4 fall in street b0, this device's scope.
                let m = lecture(device_id, 4 * (50_000_000 + n))["set"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                (pufa_core::schema::Kind::Lecture, m)
            })
            .collect();
        client.create_many(recs)?;
    }
    let record_secs = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let report = client.sync().await?;
    let sync_secs = t1.elapsed().as_secs_f64();
    if !report.checksum_ok {
        bail!("device checksum did not match: {report:?}");
    }
    println!(
        "{}",
        json!({
            "record_secs": record_secs, "sync_secs": sync_secs, "pulled": report.pulled, "applied": report.applied,
            "rss_peak_mib": rss_kib(std::process::id(), "VmHWM:").map(|k| k / 1024),
        })
    );
    Ok(())
}

/// Issues a token through the admin API: `(device_id, secret)`.
async fn issue_token(
    admin: &AdminClient,
    role: Role,
    org: &str,
    label: &str,
) -> Result<(Uuid, String)> {
    let t = admin
        .issue_token(&TokenRequest {
            role,
            org_unit: Some(org.into()),
            label: Some(label.into()),
            device_id: None,
        })
        .await?;
    Ok((t.device_id, t.token))
}

/// A coordinator token for a bench device: `(token, device_id)`.
async fn device_token(admin: &AdminClient, org: &str) -> Result<(String, String)> {
    let (id, token) = issue_token(admin, Role::Coordinator, org, "bench device").await?;
    Ok((token, id.to_string()))
}

/// Runs the `device` subcommand as a child process and reads its JSON line.
fn run_device(
    url: &str,
    creds: &(String, String),
    record: u64,
    store: Option<&std::path::Path>,
) -> Result<Value> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args([
        "device",
        "--url",
        url,
        "--token",
        &creds.0,
        "--device-id",
        &creds.1,
        "--record",
        &record.to_string(),
    ]);
    if let Some(dir) = store {
        cmd.arg("--store").arg(dir);
    }
    let out = cmd.stderr(Stdio::inherit()).output()?;
    if !out.status.success() {
        bail!(
            "device process failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let text = String::from_utf8(out.stdout)?;
    Ok(serde_json::from_str(
        text.lines().last().context("device printed nothing")?,
    )?)
}

/// `devices` devices push `rounds` batches of `batch` lectures each, all at
/// once: per-request latencies and failures.
async fn small_devices(
    client: &reqwest::Client,
    urls: &[String],
    admin: &AdminClient,
    devices: u64,
    rounds: u64,
    batch: u64,
) -> Result<(Vec<f64>, u64)> {
    let mut work = Vec::new();
    for d in 0..devices {
        let (device, token) = issue_token(admin, Role::Field, "b", &format!("small {d}")).await?;
        let bodies: Vec<Vec<u8>> = (0..rounds)
            .map(|r| {
                let muts: Vec<Value> = (0..batch)
                    .map(|i| lecture(device, 90_000_000 + d * 1000 + r * batch + i))
                    .collect();
                serde_json::to_vec(&json!({"device_id": device, "mutations": muts}))
                    .unwrap_or_default()
            })
            .collect();
        work.push((token, bodies, urls[d as usize % urls.len()].clone()));
    }
    let mut tasks = Vec::new();
    for (token, bodies, url) in work {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0u64);
            for b in bodies {
                let t0 = Instant::now();
                match send(
                    &client,
                    reqwest::Method::POST,
                    format!("{url}/v1/sync/push"),
                    &token,
                    Some(b),
                )
                .await
                {
                    Ok(_) => lat.push(t0.elapsed().as_secs_f64() * 1000.0),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    Ok((all, errors))
}

struct Spawned {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts one `pufa-server` on a fresh data dir (keeping its store in
/// `database_url` when given), with `flags` added: `(process, base URL,
/// admin token if this instance made it)`.
fn spawn_server(
    database_url: Option<&str>,
    flags: &[&str],
) -> Result<(Spawned, String, Option<String>)> {
    let exe = std::env::current_exe()?.with_file_name("pufa-server");
    if !exe.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p pufa-server -p pufa-bench`",
            exe.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let mut cmd = Command::new(&exe);
    cmd.args([
        "--data",
        dir.path().to_str().context("utf-8 temp dir")?,
        "--listen",
        "127.0.0.1:0",
        // Every simulated device connects from 127.0.0.1: the per-address
        // cap would shed the 200-device burst.
        "--max-connections-per-ip",
        "0",
    ]);
    if let Some(db) = database_url {
        cmd.args(["--database-url", db]);
    }
    cmd.args(flags);
    let mut child = cmd
        .env("RUST_LOG", "warn,pufa_server=info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let addr = loop {
        let line = lines.next().context("server exited before listening")??;
        if let Some(rest) = line
            .split("addr=")
            .nth(1)
            .filter(|_| line.contains("listening"))
        {
            break rest.split_whitespace().next().context("addr")?.to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let admin = std::fs::read_to_string(dir.path().join("admin.token"))
        .ok()
        .map(|t| t.trim().to_string());
    Ok((Spawned { child, dir }, format!("http://{addr}"), admin))
}

/// A fresh schema in `base` for one bench run, dropped at the end.
struct BenchSchema {
    base: String,
    name: String,
}

impl BenchSchema {
    async fn create(base: &str) -> Result<BenchSchema> {
        let name = format!("pufa_bench_{}", Uuid::new_v4().simple());
        let (client, conn) = tokio_postgres::connect(base, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await?;
        Ok(BenchSchema {
            base: base.to_string(),
            name,
        })
    }

    fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-csearch_path%3D{}", self.base, self.name)
    }

    /// Bytes of the schema's tables, indexes and TOAST.
    async fn bytes(&self) -> Result<u64> {
        let (client, conn) = tokio_postgres::connect(&self.base, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        let row = client
            .query_one(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::int8
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = $1 AND c.relkind = 'r'",
                &[&self.name],
            )
            .await?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    async fn drop_it(self) -> Result<()> {
        let (client, conn) = tokio_postgres::connect(&self.base, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        client
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name))
            .await?;
        Ok(())
    }
}

fn rss_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p).map_or(0, |rd| {
        rd.flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    })
}

async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Vec<u8>>,
) -> Result<Value> {
    let mut req = client.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req.send().await?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{status}: {v}");
    }
    Ok(v)
}

const UNITS: usize = 40;

fn org_tree() -> Vec<OrgUnit> {
    let unit = |code: String, name: String, unit_type, parent: Option<String>| OrgUnit {
        code,
        name,
        unit_type,
        parent,
    };
    let mut units = vec![unit("b".into(), "基准区".into(), UnitType::District, None)];
    for s in 0..4 {
        let street = format!("b{s}");
        units.push(unit(
            street.clone(),
            format!("第{s}街道"),
            UnitType::Street,
            Some("b".into()),
        ));
        for c in 0..UNITS / 4 {
            units.push(unit(
                format!("b{s}c{c:02}"),
                format!("第{s}街道第{c}社区"),
                UnitType::Community,
                Some(street.clone()),
            ));
        }
    }
    units
}

/// Lecture topics, a pair per lecture (so per-topic aggregates have work).
const TOPICS: [&str; 8] = [
    "民法典",
    "婚姻家庭",
    "宪法",
    "反电信诈骗",
    "劳动合同",
    "未成年人保护",
    "扫黑除恶",
    "消费者权益",
];

/// A realistic ~400-byte lecture.
fn lecture(device: Uuid, n: u64) -> Value {
    let unit = format!("b{}c{:02}", n % 4, (n / 4) % (UNITS as u64 / 4));
    let day = 1 + n % 28;
    let month = 1 + (n / 28) % 12;
    json!({
        "id": Uuid::now_v7(), "record_id": Uuid::now_v7(), "kind": "lecture", "base_seq": 0,
        "hlc": {"ms": 1_577_836_800_000 + n, "c": 0, "node": device},
        "set": {
            "org_unit": unit, "held_on": format!("2020-{month:02}-{day:02}"),
            "title": "民法典进社区：婚姻家庭编与继承编解读", "attendees": 20 + n % 180,
            "topics": [TOPICS[(n % 8) as usize], TOPICS[(n / 8 % 8) as usize]], "speaker": "王律师", "venue": "社区活动中心二楼会议室",
            "audience": "residents", "notes": "居民踊跃提问，现场发放宣传资料一百余份。"
        }
    })
}

struct Phase {
    records: u64,
    secs: f64,
    batch_ms: Vec<f64>,
}

async fn push_phase(
    client: &reqwest::Client,
    urls: &[String],
    admin: &AdminClient,
    pushers: u64,
    records: u64,
    batch: u64,
    offset: u64,
) -> Result<Phase> {
    // Devices and bodies are prepared before the clock starts: this measures
    // the server, not JSON building in the client.
    let mut work = Vec::new();
    for p in 0..pushers {
        let (device, token) =
            issue_token(admin, Role::Field, "b", &format!("bench {offset}-{p}")).await?;
        let per = records / pushers;
        let mut bodies = Vec::new();
        let mut done = 0;
        while done < per {
            let n = batch.min(per - done);
            let muts: Vec<Value> = (0..n)
                .map(|i| lecture(device, offset + p * per + done + i))
                .collect();
            bodies.push(serde_json::to_vec(
                &json!({"device_id": device, "mutations": muts}),
            )?);
            done += n;
        }
        // Pushers spread over the instances.
        work.push((token, bodies, urls[p as usize % urls.len()].clone()));
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (token, bodies, url) in work {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for b in bodies {
                let t0 = Instant::now();
                let r = send(
                    &client,
                    reqwest::Method::POST,
                    format!("{url}/v1/sync/push"),
                    &token,
                    Some(b),
                )
                .await?;
                lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                if r["results"]
                    .as_array()
                    .is_none_or(|rs| rs.iter().any(|x| x["status"] != "applied"))
                {
                    bail!("a mutation was not applied: {r}");
                }
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut batch_ms = Vec::new();
    for t in tasks {
        batch_ms.extend(t.await??);
    }
    Ok(Phase {
        records: records / pushers * pushers,
        secs: start.elapsed().as_secs_f64(),
        batch_ms,
    })
}

/// Push throughput per tenth of a phase (records/s, from batch latencies).
fn deciles(batch_ms: &[f64], batch: u64) -> Vec<f64> {
    let n = (batch_ms.len() / 10).max(1);
    batch_ms
        .chunks(n)
        .map(|c| {
            let ms: f64 = c.iter().sum();
            if ms > 0.0 {
                (c.len() as f64 * batch as f64 / ms * 1000.0).round()
            } else {
                0.0
            }
        })
        .collect()
}

/// Throughput in the last tenth of a push phase over the second tenth (the
/// first tenth runs against an empty, cold store and is not typical).
fn growth(deciles: &[f64]) -> f64 {
    match (deciles.get(1), deciles.last()) {
        (Some(&early), Some(&late)) if early > 0.0 => ((late / early) * 1000.0).round() / 1000.0,
        _ => 0.0,
    }
}

/// The `p` quantile of `v`, sorting a copy: latencies stay in the order
/// they were measured, which the per-tenth figures need.
fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Records in each window of the growth figure: at 10,000 stored and at
/// the end.
const GROWTH_WINDOW: u64 = 10_000;

/// Push throughput (records/s) of the batches that pushed records
/// `from..to` of a one-pusher phase, `None` when the phase was shorter.
fn rate_between(batch_ms: &[f64], batch: u64, from: u64, to: u64) -> Option<f64> {
    let (first, last) = ((from / batch) as usize, (to / batch) as usize);
    let window = batch_ms.get(first..last).filter(|w| !w.is_empty())?;
    let ms: f64 = window.iter().sum();
    (ms > 0.0).then(|| (window.len() as f64 * batch as f64 / ms * 1000.0).round())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(DeviceCmd::Device {
        url,
        token,
        device_id,
        record,
        store,
    }) = &args.device
    {
        return device_main(url, token, *device_id, *record, store.as_deref()).await;
    }
    let mut stores = args.stores.clone();
    if stores.is_empty() {
        stores.push("sled".into());
        if args.database_url.is_some() {
            stores.extend(["pg".into(), "pg2".into()]);
        }
    }
    if args.url.is_some() {
        let report = bench(
            &args,
            &[args.url.clone().unwrap_or_default()],
            args.admin_token.clone().unwrap_or_default(),
            &[],
            None,
        )
        .await?;
        return print(&args, &report);
    }
    let mut reports = serde_json::Map::new();
    for store in &stores {
        let (instances, flags): (usize, &[&str]) = match store.as_str() {
            "sled" => (0, &[]),
            "sled-nofsync" => (0, &["--unsafe-no-fsync"]),
            "pg" => (1, &[]),
            "pg2" => (2, &[]),
            other => bail!("unknown store {other:?}: sled, sled-nofsync, pg or pg2"),
        };
        let report = if instances == 0 {
            let (s, url, admin) = spawn_server(None, flags)?;
            let dir = s.dir.path().to_path_buf();
            let admin = admin.context("no admin.token")?;
            let report = bench(&args, &[url], admin, &[s.child.id()], Some(Disk::Dir(dir))).await?;
            drop(s);
            report
        } else {
            let base = args
                .database_url
                .as_deref()
                .context("--stores pg needs --database-url")?;
            let schema = BenchSchema::create(base).await?;
            let db = schema.url();
            let mut servers = Vec::new();
            let mut admin = None;
            for _ in 0..instances {
                let (s, url, a) = spawn_server(Some(&db), flags)?;
                admin = admin.or(a);
                servers.push((s, url));
            }
            let urls: Vec<String> = servers.iter().map(|(_, u)| u.clone()).collect();
            let pids: Vec<u32> = servers.iter().map(|(s, _)| s.child.id()).collect();
            let report = bench(
                &args,
                &urls,
                admin.context("no instance made admin.token")?,
                &pids,
                Some(Disk::Schema(&schema)),
            )
            .await;
            drop(servers);
            schema.drop_it().await?;
            report?
        };
        reports.insert(store.clone(), report);
    }
    if reports.len() == 1 {
        let (_, report) = reports.into_iter().next().context("a report")?;
        return print(&args, &report);
    }
    if args.json {
        println!("{}", Value::Object(reports));
    } else {
        let names: Vec<&String> = reports.keys().collect();
        print!("pufa-bench, side by side: {:<40}", "");
        for n in &names {
            print!("{n:>14}");
        }
        println!();
        let first = reports
            .values()
            .next()
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for k in first.keys() {
            print!("  {k:<64}");
            for n in &names {
                let v = &reports[n.as_str()][k];
                let text = match v.as_f64() {
                    Some(f) if f.fract() != 0.0 => format!("{f:.2}"),
                    _ => v.to_string(),
                };
                print!(
                    "{:>14}",
                    if text.len() > 13 {
                        "…".to_string()
                    } else {
                        text
                    }
                );
            }
            println!();
        }
    }
    Ok(())
}

/// Where the bench reads the store's size from.
enum Disk<'a> {
    Dir(PathBuf),
    Schema(&'a BenchSchema),
}

fn print(args: &Args, report: &Value) -> Result<()> {
    if args.json {
        println!("{report}");
    } else {
        println!(
            "pufa-bench: {} lectures, batches of {}",
            report["records_stored"], args.batch
        );
        for (k, v) in report.as_object().into_iter().flatten() {
            println!("  {k:<32} {v}");
        }
    }
    Ok(())
}

/// One run against the servers at `urls` (one store): the report.
async fn bench(
    args: &Args,
    urls: &[String],
    admin: String,
    pids: &[u32],
    disk: Option<Disk<'_>>,
) -> Result<Value> {
    let url = urls[0].clone();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    // Setting up (org tree, tokens) through the SDK; what is measured goes
    // through `send`, on the pool above.
    let admin_api = AdminClient::over_http(&url, admin.as_str())?;
    admin_api.import_org_units(&org_tree()).await?;

    let one = push_phase(&client, urls, &admin_api, 1, args.records, args.batch, 0).await?;
    let many = push_phase(
        &client,
        urls,
        &admin_api,
        args.pushers,
        args.records,
        args.batch,
        10_000_000,
    )
    .await?;
    // Growth's "at the end" figure: one pusher adding as many records as the
    // early window has, into the full store, before anything else runs (a
    // device process that has just written a million records to its own
    // disk slows the next fsyncs).
    let late = push_phase(
        &client,
        urls,
        &admin_api,
        1,
        GROWTH_WINDOW.min(args.records).max(1),
        args.batch,
        30_000_000,
    )
    .await?;
    let stored = one.records + many.records + late.records;

    // A first sync of everything into an empty admin device.
    let start = Instant::now();
    let (mut since, mut pulled) = (0u64, 0u64);
    loop {
        let page = send(
            &client,
            reqwest::Method::GET,
            format!("{url}/v1/sync/pull?since={since}&limit=5000"),
            &admin,
            None,
        )
        .await?;
        pulled += page["records"].as_array().map_or(0, Vec::len) as u64;
        since = page["next"].as_u64().context("next")?;
        if page["has_more"] != json!(true) {
            break;
        }
    }
    let pull_secs = start.elapsed().as_secs_f64();
    // At least what this run pushed (a --url server may hold more).
    if pulled < stored {
        bail!("pulled {pulled} records, pushed {stored}");
    }

    let mut totals_ms = Vec::new();
    for i in 0..args.totals_requests {
        let q = if i % 2 == 0 {
            "from=2020-01-01&to=2020-12-31"
        } else {
            "from=2020-03-15&to=2020-09-10"
        };
        let t0 = Instant::now();
        send(
            &client,
            reqwest::Method::GET,
            format!("{url}/v1/totals?{q}"),
            &admin,
            None,
        )
        .await?;
        totals_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    // The annual report (a year by month, topic and grassroots unit) and the
    // figures behind the dashboard: what a coordinator opens.
    let mut report_ms = Vec::new();
    for i in 0..args.totals_requests {
        let path = if i % 2 == 0 {
            "reports/annual?year=2020"
        } else {
            "figures?year=2020"
        };
        let t0 = Instant::now();
        send(
            &client,
            reqwest::Method::GET,
            format!("{url}/v1/{path}"),
            &admin,
            None,
        )
        .await?;
        report_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    // A first sync of everything into an empty SDK device (its own process),
    // then a fresh SDK device that records lectures offline and pushes them.
    let store = tempfile::tempdir()?;
    // Through the last instance: with two, it serves what the other took.
    let device_url = urls.last().unwrap_or(&url).clone();
    let creds = device_token(&admin_api, "b").await?;
    let first_sync = run_device(&device_url, &creds, 0, Some(store.path()))?;
    // 1% more records, then the same device syncs again.
    let changes = (stored / 100).max(1);
    push_phase(
        &client, urls, &admin_api, 1, changes, args.batch, 20_000_000,
    )
    .await?;
    let incremental = run_device(&device_url, &creds, 0, Some(store.path()))?;
    let offline_push = if args.device_records > 0 {
        let creds = device_token(&admin_api, "b0").await?;
        Some(run_device(&device_url, &creds, args.device_records, None)?)
    } else {
        None
    };
    let (small_ms, small_errors) = small_devices(
        &client,
        urls,
        &admin_api,
        args.small_devices,
        args.small_rounds,
        args.small_batch,
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Summed over the instances.
    let rss = |key| {
        pids.iter()
            .map(|p| rss_kib(*p, key))
            .sum::<Option<u64>>()
            .filter(|_| !pids.is_empty())
    };
    let (rss_peak, rss_now) = (rss("VmHWM:"), rss("VmRSS:"));
    let disk = match disk {
        Some(Disk::Dir(dir)) => Some(dir_bytes(&dir)),
        Some(Disk::Schema(schema)) => Some(schema.bytes().await?),
        None => None,
    };

    // Growth: the one pusher's rate over records 10,000..20,000 of the first
    // phase against its rate into the full store (pushed above).
    let early = rate_between(&one.batch_ms, args.batch, GROWTH_WINDOW, 2 * GROWTH_WINDOW);
    let late_rate = (late.records as f64 / late.secs).round();
    let report = json!({
        "records_stored": stored,
        "instances": urls.len(),
        "batch": args.batch,
        "push_1_pusher_records_per_s": (one.records as f64 / one.secs).round(),
        "push_n_pushers": args.pushers,
        "push_n_pushers_records_per_s": (many.records as f64 / many.secs).round(),
        "push_batch_ms_p50": pct(&many.batch_ms, 0.5),
        "push_batch_ms_p99": pct(&many.batch_ms, 0.99),
        "push_1_batch_ms_p50": pct(&one.batch_ms, 0.5),
        "pull_all_records_per_s": (pulled as f64 / pull_secs).round(),
        "pull_all_secs": pull_secs,
        "totals_ms_p50": pct(&totals_ms, 0.5),
        "totals_ms_p99": pct(&totals_ms, 0.99),
        "report_ms_p50": pct(&report_ms, 0.5),
        "report_ms_p99": pct(&report_ms, 0.99),
        "server_rss_peak_mib": rss_peak.map(|k| k / 1024),
        "server_rss_now_mib": rss_now.map(|k| k / 1024),
        "disk_bytes_per_record": disk.map(|d| d / stored.max(1)),
        "sdk_incremental_sync_records": incremental["pulled"],
        "sdk_incremental_sync_secs": incremental["sync_secs"],
        "small_devices": args.small_devices,
        "small_batch": args.small_batch,
        "small_push_ms_p50": pct(&small_ms, 0.5),
        "small_push_ms_p99": pct(&small_ms, 0.99),
        "small_push_errors": small_errors,
        "push_1_deciles_records_per_s": deciles(&one.batch_ms, args.batch),
        "growth_push_last_over_second_decile": growth(&deciles(&one.batch_ms, args.batch)),
        "push_at_10k_records_per_s": early,
        "push_at_end_records_per_s": late_rate,
        "push_at_end_stored": one.records + many.records,
        "growth_push_at_end_over_at_10k": early.map(|e| ((late_rate / e) * 1000.0).round() / 1000.0),
        "sdk_first_sync_records": first_sync["pulled"],
        "sdk_first_sync_secs": first_sync["sync_secs"],
        "sdk_first_sync_rss_peak_mib": first_sync["rss_peak_mib"],
        "sdk_offline_records": args.device_records,
        "sdk_offline_record_secs": offline_push.as_ref().map(|v| v["record_secs"].clone()),
        "sdk_offline_sync_secs": offline_push.as_ref().map(|v| v["sync_secs"].clone()),
    });
    Ok(report)
}
