//! `pufa-field-bench`: the field app's performance figures against its
//! targets (`docs/performance.md`, "Field app").
//!
//! Starts the `pufa-server` binary that sits beside this one (or
//! `--server PATH`) on a fresh temp data dir at `127.0.0.1:0`, puts a
//! counting TCP proxy in front of it (so what the browser receives is
//! counted, headers included) and drives headless Chromium at a phone's
//! size through chromedriver ([`pufa_tests::webdriver`]). The app is
//! measured through its own code paths and left as it is: the page as
//! served, its UI (taps, the status line, the list) and, where the UI does
//! more than the step to be measured, its own ES modules
//! (`/field/js/records.js`). Times are taken inside the page with
//! `performance.now()` when a `MutationObserver` sees the DOM change (the
//! app's `<body data-ready="1">`, its status line, the list, the *saved*
//! note), not by polling from outside; the bench polls only to learn that
//! the page has finished.
//!
//! 1. **First load**, cold (a new browser profile for each of `--loads`),
//!    on DevTools' "Fast 3G" (562.5 ms per request, 180,000 B/s down,
//!    84,375 B/s up): navigation start → the enrolment screen drawn
//!    (`body[data-ready=1]`). Bytes: the page's own requests (Resource
//!    Timing: transferred, compressed body, decompressed body), and every
//!    byte through the proxy until the service worker controls the page
//!    (its install fetches the shell again).
//! 2. **Offline reload** of that (not enrolled) app, the network cut by
//!    Chromium's emulation: navigation start → `data-ready`, with the
//!    service worker running and after `ServiceWorker.stopAllWorkers`.
//! 3. **First sync**: `--records` realistic lectures pushed to the server
//!    in the device's scope beforehand; a new browser opens the app from
//!    the QR link: tap *登记* → the status line leaves *同步中* (and the
//!    10,000-record list drawn). Checked afterwards in IndexedDB.
//! 4. **Listing**: `#/settings` → `#/` until the list is in the DOM (and
//!    the next frame), `--repeats` times; `records.allRecords()` and a bare
//!    IndexedDB `getAll` of the records alone, to say where it goes.
//! 5. **Saving offline**, `--saves` times: the lecture form filled, tap
//!    *保存* → *已保存在本机* shown (and the record's page drawn); and the
//!    app's `createRecord` (one durable IndexedDB transaction) alone.
//! 6. **Offline reload** of the enrolled app holding every record (the
//!    list is its first view).
//! 7. **Bytes per record pulled**, pages of 1000 as the app and the SDK
//!    ask: the browser's (Resource Timing of its pulls), and, through the
//!    proxy, a client asking for no compression, gzip only, brotli only,
//!    and `pufa-client`'s HTTP transport.
//!
//! `--profile` also records a CPU profile of the page (CDP `Profiler`)
//! during the first sync and the list renders and prints the functions
//! with the most self time; it slows what it profiles.
//!
//! ```text
//! cargo build --release -p pufa-server --bin pufa-server -p pufa-tests --bin pufa-field-bench
//! ./target/release/pufa-field-bench                  # a table
//! ./target/release/pufa-field-bench --json           # one JSON object
//! ```

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use pufa_client::transport::{Method as SdkMethod, Request as SdkRequest, Transport};
use pufa_core::wire::{CodeRequest, OrgUnit, Role, TokenIssued, TokenRequest};
use pufa_tests::webdriver::Browser;
use pufa_tests::{admin_over_http, api};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A phone's screen in CSS pixels, as the browser tests use.
const PHONE: (u32, u32) = (390, 844);

/// DevTools' "Fast 3G" (renamed "Slow 4G" in 2024; Puppeteer's
/// `PredefinedNetworkConditions['Fast 3G']`): 150 ms RTT × 3.75, 1.6 Mbit/s
/// × 0.9 down, 750 kbit/s × 0.9 up, in bytes per second.
const FAST_3G: (f64, f64, f64) = (
    150.0 * 3.75,
    1.6 * 1000.0 * 1000.0 / 8.0 * 0.9,
    750.0 * 1000.0 / 8.0 * 0.9,
);

/// The field app's performance targets (`docs/performance.md`).
const SHELL_BYTES_MAX: f64 = 150.0 * 1024.0;
const FIRST_LOAD_MS_MAX: f64 = 3000.0;
const OFFLINE_RELOAD_MS_MAX: f64 = 1000.0;
const SAVE_MS_MAX: f64 = 50.0;
const FIRST_SYNC_MS_MAX: f64 = 10_000.0;
const LIST_MS_MAX: f64 = 200.0;

/// Records per pull page, as the app (`sync.js`) and the SDK ask.
const PULL_PAGE: u64 = 1000;
/// Lectures per seeding push.
const SEED_BATCH: usize = 500;

const USAGE: &str = "usage: pufa-field-bench [--records N] [--saves N] [--loads N] \
[--repeats N] [--server PATH] [--profile] [--json]

  --records N   lectures on the server for the first sync and the list (10000)
  --saves N     records saved offline through the form, and through createRecord (50)
  --loads N     cold first loads on Fast 3G, each in a new browser profile (3)
  --repeats N   list renders and offline reloads of each kind (10)
  --server PATH the pufa-server binary (default: the one beside this binary)
  --profile     CPU-profile the page during the first sync and the list (slows them)
  --json        print one JSON object instead of a table";

#[derive(Debug)]
struct Args {
    records: u64,
    saves: usize,
    loads: usize,
    repeats: usize,
    server: Option<PathBuf>,
    profile: bool,
    json: bool,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        records: 10_000,
        saves: 50,
        loads: 3,
        repeats: 10,
        server: None,
        profile: false,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--records" => a.records = value()?.parse()?,
            "--saves" => a.saves = value()?.parse()?,
            "--loads" => a.loads = value()?.parse()?,
            "--repeats" => a.repeats = value()?.parse()?,
            "--server" => a.server = Some(value()?.into()),
            "--profile" => a.profile = true,
            "--json" => a.json = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if a.records == 0 || a.saves == 0 || a.loads == 0 || a.repeats == 0 {
        bail!("counts must be at least 1\n{USAGE}");
    }
    Ok(a)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let server = ServerChild::start(args.server.clone())?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(&args, &server))
}

// ---- the server and a counting proxy -------------------------------------------

/// `pufa-server` as a child process on a temp data dir; killed on drop.
struct ServerChild {
    child: Child,
    base: String,
    admin: String,
    exe: PathBuf,
    _dir: tempfile::TempDir,
}

impl ServerChild {
    fn start(exe: Option<PathBuf>) -> Result<ServerChild> {
        let exe = match exe {
            Some(p) => p,
            None => std::env::current_exe()?.with_file_name("pufa-server"),
        };
        if !exe.exists() {
            bail!(
                "{} not found: build it with `cargo build --release -p pufa-server`, or pass --server",
                exe.display()
            );
        }
        let dir = tempfile::tempdir()?;
        let mut child = Command::new(&exe)
            .args(["--data", dir.path().to_str().context("a UTF-8 temp dir")?])
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("PUFA_DATABASE_URL")
            .env("RUST_LOG", "warn,pufa_server=info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let addr = loop {
            let line = lines
                .next()
                .context("the server exited before listening")??;
            if let Some(rest) = line
                .split("addr=")
                .nth(1)
                .filter(|_| line.contains("listening"))
            {
                break rest.split_whitespace().next().context("addr")?.to_string();
            }
        };
        // Keep draining its stdout so it never blocks on a full pipe.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        let admin = std::fs::read_to_string(dir.path().join("admin.token"))
            .context("admin.token")?
            .trim()
            .to_string();
        Ok(ServerChild {
            child,
            base: format!("http://{addr}"),
            admin,
            exe,
            _dir: dir,
        })
    }
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy in front of the server that counts the bytes each way.
struct Proxy {
    url: String,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Result<Proxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (u, d) = (up.clone(), down.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, u.clone()));
                tokio::spawn(pump(sr, cw, d.clone()));
            }
        });
        Ok(Proxy { url, up, down })
    }

    /// Bytes (to the server, to the client) since the last call.
    fn take(&self) -> (u64, u64) {
        (
            self.up.swap(0, Ordering::SeqCst),
            self.down.swap(0, Ordering::SeqCst),
        )
    }
}

/// Copies one direction, counting each chunk before passing it on.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        count.fetch_add(n as u64, Ordering::SeqCst);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

// ---- scripts run in the page ------------------------------------------------------

/// Installed before any script of every document: the time the app says
/// it is ready (`<body data-ready="1">`, set once its first view is drawn)
/// and the time a service worker takes control.
const ON_NEW_DOCUMENT: &str = r#"
(() => {
  try { performance.setResourceTimingBufferSize(100000); } catch (e) {}
  const mark = () => {
    if (window.__pufaReady === undefined && document.body && document.body.dataset.ready === '1') {
      window.__pufaReady = performance.now();
    }
  };
  new MutationObserver(mark).observe(document, { subtree: true, attributes: true, attributeFilter: ['data-ready'] });
  if (navigator.serviceWorker) {
    navigator.serviceWorker.addEventListener('controllerchange', () => {
      if (window.__pufaControlled === undefined) window.__pufaControlled = performance.now();
    });
  }
})();
"#;

/// Paint, navigation and resource timings of the current document.
const LOAD_FIGURES: &str = r#"
const nav = performance.getEntriesByType('navigation')[0];
const fcp = performance.getEntriesByName('first-contentful-paint')[0];
const files = [nav, ...performance.getEntriesByType('resource')].map((e) => ({
  path: new URL(e.name).pathname + new URL(e.name).search,
  transfer: e.transferSize, encoded: e.encodedBodySize, decoded: e.decodedBodySize,
  start: e.startTime, end: e.responseEnd,
}));
return {
  ready: window.__pufaReady ?? null,
  controlled: window.__pufaControlled ?? null,
  fcp: fcp ? fcp.startTime : null,
  dom_content_loaded: nav.domContentLoadedEventEnd,
  load: nav.loadEventEnd,
  under_service_worker: navigator.serviceWorker.controller !== null,
  files,
  user_agent: navigator.userAgent,
};
"#;

/// Watches the status line and the list, then taps *登记*. The results
/// land in `window.__bench`: when the sync started and ended (the status
/// line's `data-state` entering and leaving `syncing`), when the list was
/// drawn after it, and every change of the status line on the way.
const ENROL_AND_WATCH: &str = r#"
const B = (window.__bench = { t0: 0, events: [], syncStart: null, syncEnd: null, listShown: null });
let last = '';
const check = () => {
  const now = performance.now();
  const s = document.querySelector('#status');
  const state = s ? s.dataset.state || '' : '';
  const text = s ? s.textContent : '';
  if (state + '|' + text !== last) {
    last = state + '|' + text;
    B.events.push([now - B.t0, state, text]);
  }
  if (B.syncStart === null && state === 'syncing') B.syncStart = now;
  else if (B.syncStart !== null && B.syncEnd === null && state !== 'syncing') B.syncEnd = now;
  if (B.syncEnd !== null && B.listShown === null && document.body.dataset.view === 'list'
      && document.querySelector('a.record') !== null) B.listShown = now;
};
new MutationObserver(check).observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
B.t0 = performance.now();
document.querySelector('#enrol-submit').click();
"#;

/// What the app holds in IndexedDB (counts only; never the token).
const LOCAL_COUNTS: &str = r#"
const [done] = arguments;
import('/field/js/db.js').then(async (db) => {
  const conn = await db.openDb();
  const r = await db.tx(conn, ['meta', 'records', 'outbox'], 'readonly', async (s) => ({
    records: await db.req(s.records.count()),
    outbox: await db.req(s.outbox.count()),
    meta: await db.readMeta(s),
  }));
  conn.close();
  done({ records: r.records, outbox: r.outbox, cursor: r.meta.cursor,
         last_sync_ms: r.meta.last_sync_ms, status: document.querySelector('#status')?.textContent });
}).catch((e) => done({ error: String((e && e.stack) || e) }));
"#;

/// `watch(conditions, ms)`: resolves with the `performance.now()` at which
/// each condition was first seen true by a `MutationObserver` on the body.
const WATCH: &str = r#"
const watch = (conds, ms) => new Promise((resolve, reject) => {
  const at = conds.map(() => null);
  let mo = null;
  let timer = null;
  const check = () => {
    const now = performance.now();
    conds.forEach((c, j) => { if (at[j] === null && c()) at[j] = now; });
    if (at.every((t) => t !== null)) {
      if (mo) mo.disconnect();
      clearTimeout(timer);
      resolve(at);
      return true;
    }
    return false;
  };
  if (check()) return;
  mo = new MutationObserver(check);
  mo.observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
  timer = setTimeout(() => {
    mo.disconnect();
    const why = document.querySelector('#form-error')?.textContent || document.body.innerText.slice(0, 300);
    reject(new Error('timed out; the page says: ' + why));
  }, ms);
});
const nextFrame = () => new Promise((r) => requestAnimationFrame(() => setTimeout(() => r(performance.now()), 0)));
"#;

/// One list render: from the settings view, `#/` until the list is in the
/// DOM, and until the frame after.
const LIST_ONCE: &str = r#"
const [done] = arguments;
(async () => {
  location.hash = '#/settings';
  await watch([() => document.body.dataset.view === 'settings'], 30000);
  const t0 = performance.now();
  location.hash = '#/';
  const [t1] = await watch([() => document.querySelector('#main')?.dataset.hash === '#/'
                                 && document.querySelector('#records') !== null], 30000);
  const t2 = await nextFrame();
  done({ dom: t1 - t0, painted: t2 - t0, rows: document.querySelectorAll('a.record').length,
         count: document.querySelector('p.count')?.textContent ?? null });
})().catch((e) => done({ error: String((e && e.stack) || e) }));
"#;

/// `k` times: a bare `getAll` of the confirmed records, and the app's
/// `allRecords` (records, outbox and notices read, each record's view built).
const READ_ALL: &str = r#"
const [k, done] = arguments;
Promise.all([import('/field/js/db.js'), import('/field/js/records.js')]).then(async ([db, records]) => {
  const conn = await db.openDb();
  const raw = [];
  const all = [];
  let n = 0;
  for (let i = 0; i < k; i++) {
    let t0 = performance.now();
    await db.tx(conn, ['records'], 'readonly', (s) => db.req(s.records.getAll()));
    raw.push(performance.now() - t0);
    t0 = performance.now();
    n = (await records.allRecords(conn)).length;
    all.push(performance.now() - t0);
  }
  conn.close();
  done({ raw, all, n });
}).catch((e) => done({ error: String((e && e.stack) || e) }));
"#;

/// One lecture through the form: open it, fill it (unit, title, attendees,
/// speaker; the date is today's by default), tap *保存*; times to the
/// *saved* note and to the record's page. With `trace`, also when the
/// submit event came and when each IndexedDB transaction was opened and
/// completed (`IDBDatabase.prototype.transaction` wrapped for this save
/// only; the app is not touched).
const SAVE_THROUGH_FORM: &str = r#"
const [i, trace, done] = arguments;
(async () => {
  const { t } = await import('/field/js/i18n.js');
  location.hash = '#/new/lecture';
  await watch([() => document.querySelector('#main')?.dataset.hash === '#/new/lecture'
                     && document.querySelector('#record-form') !== null], 10000);
  const field = (n) => document.querySelector(`#record-form [data-field=${n}]`);
  field('org_unit').querySelector('button.unit[data-code=c11]').click();
  field('title').querySelector('input, textarea').value = `村民法治课（第${i + 1}场）`;
  field('attendees').querySelector('input').value = String(20 + (i % 80));
  field('speaker').querySelector('input, textarea').value = '司法所 王明';
  // The note of the previous save may still be up: clear it so that this
  // save's note is seen when it comes.
  document.querySelector('#notice').textContent = '';
  const saved = t('saved');
  const txs = [];
  let submitted = null;
  const open = IDBDatabase.prototype.transaction;
  const onSubmit = () => { submitted = performance.now() - t0; };
  if (trace) {
    IDBDatabase.prototype.transaction = function (names, mode, opts) {
      const tx = open.call(this, names, mode, opts);
      const e = { stores: [].concat(names).join('+'), mode: mode || 'readonly',
                  durability: (opts && opts.durability) || '', opened: performance.now() - t0, done: null };
      txs.push(e);
      tx.addEventListener('complete', () => { e.done = performance.now() - t0; });
      return tx;
    };
    document.addEventListener('submit', onSubmit, true);
  }
  const t0 = performance.now();
  const seen = watch([
    () => { const n = document.querySelector('#notice'); return !!n && !n.hidden && n.textContent === saved; },
    () => location.hash.startsWith('#/r/') && document.querySelector('#main')?.dataset.hash === location.hash
          && document.querySelector('.badge') !== null,
  ], 10000);
  document.querySelector('#save').click();
  const [tSaved, tPage] = await seen;
  if (trace) {
    IDBDatabase.prototype.transaction = open;
    document.removeEventListener('submit', onSubmit, true);
  }
  done({ saved: tSaved - t0, page: tPage - t0, submitted, txs });
})().catch((e) => done({ error: String((e && e.stack) || e) }));
"#;

/// `k` lectures through the app's `createRecord` (what the form's save
/// awaits: one durable IndexedDB transaction), each timed, and after each
/// the settings update that the form's save also awaits before its note.
const SAVE_THROUGH_MODEL: &str = r#"
const [k, done] = arguments;
Promise.all([import('/field/js/db.js'), import('/field/js/records.js')]).then(async ([db, records]) => {
  const conn = await db.openDb();
  const today = new Date().toISOString().slice(0, 10);
  const times = [];
  const settings = [];
  for (let i = 0; i < k; i++) {
    let t0 = performance.now();
    await records.createRecord(conn, 'lecture', { org_unit: 'c11', held_on: today,
      title: `普法讲座（第${i + 1}场）`, attendees: 30 + (i % 50), speaker: '司法所 王明' });
    times.push(performance.now() - t0);
    // What the form does next: remember the unit (a read and a write of
    // the cached settings), as main.js's save does.
    t0 = performance.now();
    const s = (await db.getCached(conn, 'settings', {})) || {};
    await db.putCached(conn, 'settings', { ...s, last_unit: 'c11' });
    settings.push(performance.now() - t0);
  }
  conn.close();
  done({ times, settings });
}).catch((e) => done({ error: String((e && e.stack) || e) }));
"#;

// ---- figures ---------------------------------------------------------------------

/// Median, 95th percentile (nearest rank), min and max of a sample.
fn stats(xs: &[f64]) -> Value {
    if xs.is_empty() {
        return Value::Null;
    }
    let mut s = xs.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = |q: f64| s[((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
    json!({
        "n": s.len(),
        "median": rank(0.5),
        "p95": rank(0.95),
        "min": s[0],
        "max": s[s.len() - 1],
    })
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .collect()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Fails with the page's error (`{error: …}`) if the script reported one.
fn page_ok(v: Value, what: &str) -> Result<Value> {
    match v.get("error").and_then(Value::as_str) {
        Some(e) => bail!("{what}: {e}"),
        None => Ok(v),
    }
}

// ---- the browser -------------------------------------------------------------------

/// A new headless Chromium (a new profile: cold caches, no service worker,
/// empty IndexedDB) at phone size, with [`ON_NEW_DOCUMENT`] installed.
async fn phone(scratch: &std::path::Path) -> Result<Browser> {
    let b = Browser::start(PHONE.0, PHONE.1, scratch)
        .await
        .map_err(|e| anyhow!("the browser did not start: {e}"))?
        .context(
            "chromium and chromedriver are needed (apt-get install chromium chromium-driver)",
        )?;
    b.emulate_phone(PHONE.0, PHONE.1)
        .await
        .map_err(|e| anyhow!(e))?;
    b.cdp(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({ "source": ON_NEW_DOCUMENT }),
    )
    .await
    .map_err(|e| anyhow!(e))?;
    Ok(b)
}

/// Polls `expr` (a JavaScript expression) until it is truthy, for at most
/// `limit`; returns its value. Only to learn that the page is done: every
/// time reported is taken in the page.
async fn poll(b: &Browser, expr: &str, limit: Duration) -> Result<Value> {
    let deadline = Instant::now() + limit;
    let script = format!("return ({expr}) || null;");
    loop {
        let v = b.execute(&script, vec![]).await.map_err(|e| anyhow!(e))?;
        if !v.is_null() && v != Value::Bool(false) {
            return Ok(v);
        }
        if Instant::now() > deadline {
            let page = b.page_text().await.unwrap_or_default();
            bail!("still not true after {limit:?}: {expr}\n--- the page says:\n{page}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn exec_async(b: &Browser, script: &str, args: Vec<Value>, what: &str) -> Result<Value> {
    let v = b
        .execute_async(script, args)
        .await
        .map_err(|e| anyhow!("{what}: {e}"))?;
    page_ok(v, what)
}

/// Opens `url` and returns the document's figures once the app is ready.
async fn open_app(b: &Browser, url: &str) -> Result<Value> {
    b.goto(url).await.map_err(|e| anyhow!("{url}: {e}"))?;
    poll(
        b,
        "window.__pufaReady !== undefined",
        Duration::from_secs(60),
    )
    .await?;
    b.execute(LOAD_FIGURES, vec![])
        .await
        .map_err(|e| anyhow!(e))
}

/// Reopens the app with the network cut (the browser is already offline),
/// after stopping its service worker when `stop_worker`; fails unless the
/// worker served it.
async fn offline_reload(b: &Browser, url: &str, stop_worker: bool) -> Result<Value> {
    if stop_worker {
        b.cdp("ServiceWorker.enable", json!({}))
            .await
            .map_err(|e| anyhow!(e))?;
        b.cdp("ServiceWorker.stopAllWorkers", json!({}))
            .await
            .map_err(|e| anyhow!(e))?;
    }
    let v = open_app(b, url).await?;
    if v["under_service_worker"] != true {
        bail!("an offline reload not served by the service worker");
    }
    Ok(v)
}

async fn profiler_start(b: &Browser) -> Result<()> {
    for (cmd, params) in [
        ("Profiler.enable", json!({})),
        ("Profiler.setSamplingInterval", json!({"interval": 200})),
        ("Profiler.start", json!({})),
    ] {
        b.cdp(cmd, params)
            .await
            .map_err(|e| anyhow!("{cmd}: {e}"))?;
    }
    Ok(())
}

/// Stops the profiler; the functions with the most self time (ms), and
/// the profile's total and idle time.
async fn profiler_stop(b: &Browser, top: usize) -> Result<Value> {
    let v = b
        .cdp("Profiler.stop", json!({}))
        .await
        .map_err(|e| anyhow!("Profiler.stop: {e}"))?;
    let p = &v["profile"];
    let mut label = HashMap::new();
    for n in p["nodes"].as_array().into_iter().flatten() {
        let f = &n["callFrame"];
        let name = f["functionName"].as_str().filter(|s| !s.is_empty());
        let url = f["url"].as_str().unwrap_or_default();
        let file = url.rsplit('/').next().unwrap_or_default();
        let text = match (name, file.is_empty()) {
            (Some(n), true) => n.to_string(),
            (Some(n), false) => format!("{n} {file}:{}", f["lineNumber"].as_i64().unwrap_or(0) + 1),
            (None, false) => format!(
                "(anonymous) {file}:{}",
                f["lineNumber"].as_i64().unwrap_or(0) + 1
            ),
            (None, true) => "(anonymous)".to_string(),
        };
        label.insert(n["id"].as_i64().unwrap_or(-1), text);
    }
    let samples: Vec<i64> = p["samples"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_i64)
        .collect();
    let deltas = f64s(&p["timeDeltas"]);
    let mut self_us: HashMap<&str, f64> = HashMap::new();
    for (i, id) in samples.iter().enumerate() {
        let dt = deltas.get(i + 1).copied().unwrap_or(0.0);
        let name = label.get(id).map_or("?", String::as_str);
        *self_us.entry(name).or_default() += dt;
    }
    let total: f64 = self_us.values().sum();
    let idle = self_us.get("(idle)").copied().unwrap_or(0.0);
    let mut rows: Vec<_> = self_us
        .into_iter()
        .filter(|(k, _)| *k != "(idle)")
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(json!({
        "total_ms": total / 1000.0,
        "idle_ms": idle / 1000.0,
        "top": rows.iter().take(top).map(|(k, us)| json!([k, us / 1000.0])).collect::<Vec<_>>(),
    }))
}

// ---- seeding -----------------------------------------------------------------------

/// A lecture as field staff record them: every optional field, Chinese text
/// (as `server/tests/field_app.rs` measures bytes with).
fn full_lecture(device: &str, i: usize, hlc_ms: u64) -> Value {
    let topics = [
        "民法典",
        "反电信网络诈骗",
        "未成年人保护",
        "宪法",
        "劳动合同",
        "婚姻家庭",
    ];
    let audience = ["residents", "villagers", "students", "mixed"][i % 4];
    let speaker = ["明", "芳", "强", "丽"][i % 4];
    let unit = ["c11", "c12"][i % 2];
    json!({
        "id": uuid::Uuid::now_v7(),
        "record_id": uuid::Uuid::now_v7(),
        "kind": "lecture",
        "base_seq": 0,
        "hlc": {"ms": hlc_ms, "c": 0, "node": device},
        "set": {
            "org_unit": unit,
            "held_on": format!("2025-{:02}-{:02}", 1 + i % 12, 1 + i % 28),
            "title": format!("{}进社区宣讲会（第{}场）", topics[i % topics.len()], i + 1),
            "attendees": 20 + (i * 37) % 180,
            "topics": [topics[i % topics.len()], topics[(i + 2) % topics.len()]],
            "speaker": format!("司法所 王{speaker}"),
            "venue": format!("双塔第{:02}社区党群服务中心", 1 + i % 2),
            "audience": audience,
            "notes": format!("居民踊跃提问，现场发放宣传资料{}份，解答法律咨询{}人次。", 50 + i % 100, 5 + i % 20),
            "location": {"lat": 37.86 + (i as f64) * 0.0001, "lon": 112.55 - (i as f64) * 0.0001},
        },
    })
}

/// A field device's token in the street `s1`.
async fn field_token(s: &ServerChild, label: &str) -> Result<TokenIssued> {
    Ok(admin_over_http(&s.base, &s.admin)
        .issue_token(&TokenRequest {
            role: Role::Field,
            org_unit: Some("s1".into()),
            label: Some(label.into()),
            device_id: None,
        })
        .await?)
}

/// `n` lectures in the street `s1`, pushed by a device of its own.
async fn seed(s: &ServerChild, n: u64) -> Result<f64> {
    let issued = field_token(s, "bench seeder").await?;
    let token = issued.token.as_str();
    let device = issued.device_id.to_string();
    let device = device.as_str();
    let started = Instant::now();
    let first_ms = now_ms() - n;
    let n = usize::try_from(n)?;
    for start in (0..n).step_by(SEED_BATCH) {
        let mutations: Vec<Value> = (start..n.min(start + SEED_BATCH))
            .map(|i| full_lecture(device, i, first_ms + i as u64))
            .collect();
        let count = mutations.len();
        let body = json!({"device_id": device, "mutations": mutations});
        let (status, v) = api(&s.base, Method::POST, "/v1/sync/push", token, Some(body)).await;
        let applied = v["results"]
            .as_array()
            .map_or(0, |r| r.iter().filter(|x| x["status"] == "applied").count());
        if status != 200 || applied != count {
            bail!("seeding push: {status}, {applied} of {count} applied: {v}");
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

// ---- bytes per record pulled ---------------------------------------------------------

/// Every record through the proxy, pages of [`PULL_PAGE`], with `client`
/// (which asks for and decodes the coding it was built with): bytes down
/// (headers included) and records.
async fn pull_through(proxy: &Proxy, client: &reqwest::Client, token: &str) -> Result<(u64, u64)> {
    proxy.take();
    let (mut since, mut records) = (0u64, 0u64);
    loop {
        let page: Value = client
            .get(format!(
                "{}/v1/sync/pull?since={since}&limit={PULL_PAGE}",
                proxy.url
            ))
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        records += page["records"].as_array().map_or(0, |r| r.len() as u64);
        since = page["next"].as_u64().context("next")?;
        if page["has_more"] != true {
            return Ok((proxy.take().1, records));
        }
    }
}

/// The same through `pufa-client`'s HTTP transport (what it negotiates).
async fn pull_through_sdk(proxy: &Proxy, token: &str) -> Result<(u64, u64)> {
    let sdk = pufa_client::HttpTransport::new(&proxy.url).map_err(|e| anyhow!("{e:?}"))?;
    proxy.take();
    let (mut since, mut records) = (0u64, 0u64);
    loop {
        let resp = sdk
            .send(SdkRequest {
                method: SdkMethod::Get,
                path: format!("/v1/sync/pull?since={since}&limit={PULL_PAGE}"),
                token: token.to_string(),
                body: None,
            })
            .await
            .map_err(|e| anyhow!("{e:?}"))?;
        if resp.status != 200 {
            bail!("SDK pull: {}", resp.status);
        }
        let page: Value = serde_json::from_slice(&resp.body)?;
        records += page["records"].as_array().map_or(0, |r| r.len() as u64);
        since = page["next"].as_u64().context("next")?;
        if page["has_more"] != true {
            return Ok((proxy.take().1, records));
        }
    }
}

async fn bytes_per_record(proxy: &Proxy, s: &ServerChild) -> Result<Value> {
    let issued = field_token(s, "bench reader").await?;
    let token = issued.token.as_str();
    let plain = reqwest::Client::builder().no_gzip().no_brotli().build()?;
    let gzip = reqwest::Client::builder().no_brotli().build()?;
    let br = reqwest::Client::builder().no_gzip().build()?;
    let mut out = serde_json::Map::new();
    for (name, client) in [("identity", &plain), ("gzip", &gzip), ("br", &br)] {
        let (bytes, n) = pull_through(proxy, client, token).await?;
        out.insert(name.into(), json!(bytes as f64 / n.max(1) as f64));
    }
    let (bytes, n) = pull_through_sdk(proxy, token).await?;
    out.insert("sdk".into(), json!(bytes as f64 / n.max(1) as f64));
    Ok(Value::Object(out))
}

// ---- the run -------------------------------------------------------------------------

const ORG_UNITS: &str = r#"[
  {"code":"d","name":"迎泽区","type":"district","parent":null},
  {"code":"s1","name":"桥东街道","type":"street","parent":"d"},
  {"code":"c11","name":"双塔社区","type":"community","parent":"s1"},
  {"code":"c12","name":"郝庄村","type":"village","parent":"s1"},
  {"code":"s2","name":"柳巷街道","type":"street","parent":"d"},
  {"code":"c21","name":"新民社区","type":"community","parent":"s2"}
]"#;

/// Sums a document's requests: (transferred, compressed bodies, bodies).
fn sum_files(files: &Value, filter: impl Fn(&str) -> bool) -> (f64, f64, f64) {
    let mut t = (0.0, 0.0, 0.0);
    for f in files.as_array().into_iter().flatten() {
        if filter(f["path"].as_str().unwrap_or_default()) {
            t.0 += f["transfer"].as_f64().unwrap_or(0.0);
            t.1 += f["encoded"].as_f64().unwrap_or(0.0);
            t.2 += f["decoded"].as_f64().unwrap_or(0.0);
        }
    }
    t
}

/// Where a first sync's time went, from its requests (times from the tap):
/// until the first pull, in pull requests (asked → answer read), between
/// pulls (the page stored: one IndexedDB transaction and a digest per
/// record), and from the last answer to the end (checksum, the list).
fn pull_split(requests: &Value, end: Option<f64>) -> Value {
    let mut pulls: Vec<(f64, f64)> = requests
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            r["path"]
                .as_str()
                .unwrap_or_default()
                .starts_with("/v1/sync/pull")
        })
        .filter_map(|r| Some((r["start"].as_f64()?, r["end"].as_f64()?)))
        .collect();
    pulls.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (Some(first), Some(last)) = (pulls.first(), pulls.last()) else {
        return json!({"pages": 0});
    };
    let in_requests: f64 = pulls.iter().map(|(s, e)| e - s).sum();
    let between: f64 = pulls.windows(2).map(|w| w[1].0 - w[0].1).sum();
    json!({
        "pages": pulls.len(),
        "before_first_pull_ms": first.0,
        "in_pull_requests_ms": in_requests,
        "between_pulls_ms": between,
        "after_last_pull_ms": end.map(|e| e - last.1),
    })
}

/// First loads in new profiles, on Fast 3G, and offline reloads of each.
async fn first_loads(args: &Args, proxy: &Proxy, scratch: &std::path::Path) -> Result<Value> {
    let url = format!("{}/field/", proxy.url);
    let (mut ready, mut fcp, mut offline_ready) = (vec![], vec![], vec![]);
    let (mut warm, mut stopped) = (vec![], vec![]);
    let (mut page_bytes, mut wire) = (vec![], vec![]);
    let mut details = Value::Null;
    for run in 0..args.loads {
        let b = phone(scratch).await?;
        b.emulate_network(FAST_3G.0, FAST_3G.1, FAST_3G.2)
            .await
            .map_err(|e| anyhow!(e))?;
        proxy.take();
        let first = open_app(&b, &url).await?;
        ready.push(first["ready"].as_f64().context("ready")?);
        fcp.extend(first["fcp"].as_f64());
        // Until the service worker has cached the shell and controls the
        // page: the whole first visit.
        let controlled = poll(
            &b,
            "navigator.serviceWorker.controller !== null && (window.__pufaControlled ?? performance.now())",
            Duration::from_secs(120),
        )
        .await?;
        offline_ready.extend(controlled.as_f64());
        let (up, down) = proxy.take();
        wire.push(json!({"down": down, "up": up}));
        let (t, e, d) = sum_files(&first["files"], |_| true);
        page_bytes.push(json!({"transfer": t, "encoded": e, "decoded": d}));
        if run == 0 {
            details = first.clone();
        }
        // Offline: the shell from the service worker, running or stopped.
        b.set_offline(true).await.map_err(|e| anyhow!(e))?;
        for i in 0..args.repeats.min(5) * 2 {
            let stop = i % 2 == 1;
            let again = offline_reload(&b, &url, stop).await?;
            let t = again["ready"].as_f64().context("ready")?;
            if stop {
                stopped.push(t);
            } else {
                warm.push(t);
            }
        }
        b.close().await;
    }
    Ok(json!({
        "ready_ms": stats(&ready),
        "ready_ms_each": ready,
        "fcp_ms": stats(&fcp),
        "offline_ready_ms": stats(&offline_ready),
        "page_bytes": page_bytes,
        "first_visit_wire": wire,
        "files": details["files"],
        "user_agent": details["user_agent"],
        "offline_reload_not_enrolled_warm_ms": stats(&warm),
        "offline_reload_not_enrolled_sw_stopped_ms": stats(&stopped),
    }))
}

async fn run(args: &Args, server: &ServerChild) -> Result<()> {
    let load_before = load_average();
    let started = Instant::now();
    let target: SocketAddr = server.base.trim_start_matches("http://").parse()?;
    let proxy = Proxy::start(target).await?;
    let admin = admin_over_http(&server.base, &server.admin);
    let units: Vec<OrgUnit> = serde_json::from_str(ORG_UNITS)?;
    admin.import_org_units(&units).await?;
    let sw = reqwest::get(format!("{}/field/sw.js", server.base))
        .await?
        .text()
        .await?;
    let app_version = sw
        .split("const VERSION = '")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .unwrap_or("?")
        .to_string();
    let scratch = tempfile::tempdir()?;
    eprintln!(
        "first loads on Fast 3G ({} cold, new profiles)…",
        args.loads
    );
    let loads = first_loads(args, &proxy, scratch.path()).await?;

    eprintln!("seeding {} lectures…", args.records);
    let seed_s = seed(server, args.records).await?;

    // A new phone opens the QR link and enrols.
    eprintln!("first sync of {} records…", args.records);
    let code = admin
        .create_code(&CodeRequest {
            role: Role::Field,
            org_unit: "s1".into(),
            label: Some("bench phone".into()),
            ttl_secs: None,
        })
        .await?
        .code;
    let b = phone(scratch.path()).await?;
    open_app(&b, &format!("{}/field/#code={code}", proxy.url)).await?;
    poll(
        &b,
        "document.querySelector('#enrol-code')?.value.length > 0",
        Duration::from_secs(30),
    )
    .await?;
    if args.profile {
        profiler_start(&b).await?;
    }
    proxy.take();
    b.execute(ENROL_AND_WATCH, vec![])
        .await
        .map_err(|e| anyhow!(e))?;
    let limit = Duration::from_secs(120 + args.records / 50);
    poll(
        &b,
        "window.__bench.listShown !== null \
         || (window.__bench.syncEnd !== null && performance.now() - window.__bench.syncEnd > 10000)",
        limit,
    )
    .await?;
    let sync_profile = if args.profile {
        Some(profiler_stop(&b, 15).await?)
    } else {
        None
    };
    let (_, sync_wire_down) = proxy.take();
    let watched = b
        .execute(
            "const B = window.__bench; return {t0: B.t0, syncStart: B.syncStart, syncEnd: B.syncEnd, \
             listShown: B.listShown, events: B.events, files: performance.getEntriesByType('resource') \
             .filter((e) => e.startTime >= B.t0).map((e) => ({path: new URL(e.name).pathname + new URL(e.name).search, \
             transfer: e.transferSize, encoded: e.encodedBodySize, decoded: e.decodedBodySize, \
             start: e.startTime - B.t0, end: e.responseEnd - B.t0}))};",
            vec![],
        )
        .await
        .map_err(|e| anyhow!(e))?;
    let held = exec_async(&b, LOCAL_COUNTS, vec![], "local counts").await?;
    if held["records"].as_u64() != Some(args.records) || held["last_sync_ms"].is_null() {
        bail!("the first sync did not bring every record: {held}");
    }
    let t0 = watched["t0"].as_f64().context("t0")?;
    let at = |k: &str| watched[k].as_f64().map(|t| t - t0);
    let pulls = sum_files(&watched["files"], |p| p.starts_with("/v1/sync/pull"));
    let split = pull_split(&watched["files"], at("syncEnd"));
    let first_sync = json!({
        "tap_to_synced_ms": at("syncEnd"),
        "sync_ms": at("syncEnd").zip(at("syncStart")).map(|(e, s)| e - s),
        "tap_to_list_ms": at("listShown"),
        "timeline": watched["events"],
        "requests": watched["files"],
        "pull_pages": split["pages"],
        "pull_split": split,
        "records": held["records"],
        "wire_down_bytes": sync_wire_down,
        "browser_pull_bytes_per_record": {
            "transfer": pulls.0 / args.records as f64,
            "encoded": pulls.1 / args.records as f64,
            "decoded": pulls.2 / args.records as f64,
        },
        "profile": sync_profile,
    });

    // Listing, with every record in IndexedDB and nothing syncing.
    eprintln!("listing {} records ×{}…", args.records, args.repeats);
    if args.profile {
        profiler_start(&b).await?;
    }
    let (mut list_dom, mut list_painted) = (vec![], vec![]);
    let mut list_last = Value::Null;
    for _ in 0..args.repeats {
        let wrapped = format!("{WATCH}\n{LIST_ONCE}");
        let v = exec_async(&b, &wrapped, vec![], "list").await?;
        list_dom.extend(v["dom"].as_f64());
        list_painted.extend(v["painted"].as_f64());
        list_last = v;
    }
    let list_profile = if args.profile {
        Some(profiler_stop(&b, 15).await?)
    } else {
        None
    };
    let reads = exec_async(&b, READ_ALL, vec![json!(args.repeats)], "allRecords").await?;

    // Offline: saves, then reloads of the enrolled app.
    b.set_offline(true).await.map_err(|e| anyhow!(e))?;
    poll(
        &b,
        "document.querySelector('#status')?.dataset.state === 'offline'",
        Duration::from_secs(30),
    )
    .await?;
    eprintln!("saving {} lectures offline through the form…", args.saves);
    let (mut saved, mut page) = (vec![], vec![]);
    let save_script = format!("{WATCH}\n{SAVE_THROUGH_FORM}");
    if args.profile {
        profiler_start(&b).await?;
    }
    for i in 0..args.saves {
        let v = exec_async(
            &b,
            &save_script,
            vec![json!(i), json!(false)],
            "save through the form",
        )
        .await?;
        saved.extend(v["saved"].as_f64());
        page.extend(v["page"].as_f64());
    }
    // A few more, traced, to say where a save's time goes (not counted above).
    let mut traces = vec![];
    for i in 0..5 {
        let v = exec_async(
            &b,
            &save_script,
            vec![json!(args.saves + i), json!(true)],
            "traced save",
        )
        .await?;
        traces.push(v);
    }
    let save_profile = if args.profile {
        Some(profiler_stop(&b, 15).await?)
    } else {
        None
    };
    eprintln!(
        "saving {} lectures offline through createRecord…",
        args.saves
    );
    let model = exec_async(
        &b,
        SAVE_THROUGH_MODEL,
        vec![json!(args.saves)],
        "createRecord",
    )
    .await?;
    let after_saves = exec_async(&b, LOCAL_COUNTS, vec![], "local counts").await?;

    eprintln!("offline reloads with {} records…", after_saves["records"]);
    let url = format!("{}/field/", proxy.url);
    let (mut warm, mut stopped) = (vec![], vec![]);
    for i in 0..args.repeats * 2 {
        let stop = i % 2 == 1;
        let v = offline_reload(&b, &url, stop).await?;
        let rows = b
            .execute(
                "return document.querySelectorAll('a.record').length",
                vec![],
            )
            .await
            .map_err(|e| anyhow!(e))?;
        if rows.as_u64().unwrap_or(0) == 0 {
            bail!("the reloaded app shows no records");
        }
        let t = v["ready"].as_f64().context("ready")?;
        if stop {
            stopped.push(t);
        } else {
            warm.push(t);
        }
    }
    b.close().await;

    eprintln!("bytes per record pulled…");
    let per_record = bytes_per_record(&proxy, server).await?;

    let result = json!({
        "machine": {
            "load_average_before": load_before,
            "load_average_after": load_average(),
            "cores": std::thread::available_parallelism().map(usize::from).unwrap_or(0),
            "browser": loads["user_agent"],
            "server": server.exe.display().to_string(),
            "app_version": app_version,
            "unix_time": now_ms() / 1000,
            "bench_seconds": started.elapsed().as_secs_f64(),
        },
        "params": {
            "records": args.records, "saves": args.saves, "loads": args.loads,
            "repeats": args.repeats, "profile": args.profile,
            "fast_3g": {"latency_ms": FAST_3G.0, "down_bytes_per_s": FAST_3G.1, "up_bytes_per_s": FAST_3G.2},
        },
        "first_load": loads,
        "seed_seconds": seed_s,
        "first_sync": first_sync,
        "list": {
            "dom_ms": stats(&list_dom),
            "painted_ms": stats(&list_painted),
            "rows_drawn": list_last["rows"],
            "count_line": list_last["count"],
            "all_records_ms": stats(&f64s(&reads["all"])),
            "idb_get_all_records_ms": stats(&f64s(&reads["raw"])),
            "records_read": reads["n"],
            "profile": list_profile,
        },
        "save": {
            "form_to_saved_note_ms": stats(&saved),
            "form_to_record_page_ms": stats(&page),
            "create_record_ms": stats(&f64s(&model["times"])),
            "settings_update_ms": stats(&f64s(&model["settings"])),
            "traces": traces,
            "profile": save_profile,
        },
        "offline_reload_enrolled": {
            "records": after_saves["records"],
            "outbox": after_saves["outbox"],
            "warm_ms": stats(&warm),
            "sw_stopped_ms": stats(&stopped),
        },
        "bytes_per_record_pulled": per_record,
    });
    if args.json {
        println!("{result}");
    } else {
        print_table(&result);
    }
    Ok(())
}

// ---- the table ------------------------------------------------------------------------

fn ms(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x >= 1000.0 => format!("{:.2} s", x / 1000.0),
        Some(x) => format!("{x:.1} ms"),
        None => "—".into(),
    }
}

/// "median / p95 (n)" of a [`stats`] object.
fn mp(v: &Value) -> String {
    format!("{} / {} (n={})", ms(&v["median"]), ms(&v["p95"]), v["n"])
}

fn kb(x: f64) -> String {
    format!("{:.1} KB", x / 1024.0)
}

fn met(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "—",
    }
}

/// The traced save with the median time to the note, as one line: the
/// submit event, each transaction (stores, mode, opened → completed), the
/// note.
fn median_trace(traces: &Value) -> Option<String> {
    let mut all: Vec<&Value> = traces.as_array()?.iter().collect();
    all.sort_by(|a, b| {
        let k = |v: &Value| v["saved"].as_f64().unwrap_or(f64::MAX);
        k(a).total_cmp(&k(b))
    });
    let t = all.get(all.len() / 2)?;
    let n = |v: &Value| v.as_f64().map_or("?".into(), |x| format!("{x:.1}"));
    let mut parts = vec![format!("submit {}", n(&t["submitted"]))];
    for x in t["txs"].as_array().into_iter().flatten() {
        let mode = if x["mode"] == "readwrite" { "rw" } else { "r" };
        let strict = if x["durability"] == "strict" {
            " strict"
        } else {
            ""
        };
        parts.push(format!(
            "{} {mode}{strict} {}→{}",
            x["stores"].as_str().unwrap_or_default(),
            n(&x["opened"]),
            n(&x["done"])
        ));
    }
    parts.push(format!("note {}", n(&t["saved"])));
    Some(parts.join("; "))
}

/// Columns a string takes in a terminal: CJK characters take two.
fn width(s: &str) -> usize {
    s.chars()
        .map(|c| {
            let wide =
                ('\u{2e80}'..='\u{9fff}').contains(&c) || ('\u{ff00}'..='\u{ff60}').contains(&c);
            if wide {
                2
            } else {
                1
            }
        })
        .sum()
}

fn print_table(r: &Value) {
    let m = &r["machine"];
    let p = &r["params"];
    println!(
        "pufa-field-bench: {} records, {} saves, {} cold loads, {} repeats; app {}; {}",
        p["records"], p["saves"], p["loads"], p["repeats"], m["app_version"], m["browser"]
    );
    println!(
        "load average before {}, after {}; {} cores; {:.0} s",
        m["load_average_before"],
        m["load_average_after"],
        m["cores"],
        m["bench_seconds"].as_f64().unwrap_or(0.0)
    );
    let mut rows: Vec<[String; 4]> = Vec::new();
    let mut row = |a: &str, b: String, c: &str, d: &str| {
        rows.push([a.to_string(), b, c.to_string(), d.to_string()]);
    };

    let fl = &r["first_load"];
    let page = &fl["page_bytes"][0];
    let transfer = page["transfer"].as_f64().unwrap_or(0.0);
    row(
        "app shell, first load: the page's requests",
        format!(
            "{} transferred ({} compressed bodies, {} uncompressed)",
            kb(transfer),
            kb(page["encoded"].as_f64().unwrap_or(0.0)),
            kb(page["decoded"].as_f64().unwrap_or(0.0))
        ),
        "≤ 150 KB",
        met(Some(transfer <= SHELL_BYTES_MAX)),
    );
    let wire = &fl["first_visit_wire"][0];
    row(
        "first visit until offline-ready (all bytes down, proxy)",
        format!(
            "{} down, {} up (the service worker fetches the shell again)",
            kb(wire["down"].as_f64().unwrap_or(0.0)),
            kb(wire["up"].as_f64().unwrap_or(0.0))
        ),
        "",
        "—",
    );
    let ready = &fl["ready_ms"];
    row(
        "first load, Fast 3G, cold: navigation → enrolment screen",
        format!(
            "median {} (each: {})",
            ms(&ready["median"]),
            f64s(&fl["ready_ms_each"])
                .iter()
                .map(|x| ms(&json!(x)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        "≤ 3 s",
        met(ready["max"].as_f64().map(|x| x <= FIRST_LOAD_MS_MAX)),
    );
    row(
        "  first contentful paint / service worker in control",
        format!(
            "{} / {}",
            ms(&fl["fcp_ms"]["median"]),
            ms(&fl["offline_ready_ms"]["median"])
        ),
        "",
        "—",
    );
    for (label, key) in [
        (
            "offline reload, not enrolled, worker running",
            "offline_reload_not_enrolled_warm_ms",
        ),
        (
            "offline reload, not enrolled, worker stopped",
            "offline_reload_not_enrolled_sw_stopped_ms",
        ),
    ] {
        let s = &fl[key];
        row(
            label,
            format!("median / p95 {}", mp(s)),
            "≤ 1 s",
            met(s["p95"].as_f64().map(|x| x <= OFFLINE_RELOAD_MS_MAX)),
        );
    }
    let off = &r["offline_reload_enrolled"];
    for (label, key) in [
        ("worker running", "warm_ms"),
        ("worker stopped", "sw_stopped_ms"),
    ] {
        let s = &off[key];
        row(
            &format!("offline reload, {} records listed, {label}", off["records"]),
            format!("median / p95 {}", mp(s)),
            "≤ 1 s",
            met(s["p95"].as_f64().map(|x| x <= OFFLINE_RELOAD_MS_MAX)),
        );
    }
    let fs = &r["first_sync"];
    row(
        &format!("first sync of {} records: tap 登记 → synced", fs["records"]),
        format!(
            "{} (sync alone {}; list drawn at {}; {} pull pages)",
            ms(&fs["tap_to_synced_ms"]),
            ms(&fs["sync_ms"]),
            ms(&fs["tap_to_list_ms"]),
            fs["pull_pages"]
        ),
        "≤ 10 s",
        met(fs["tap_to_synced_ms"]
            .as_f64()
            .map(|x| x <= FIRST_SYNC_MS_MAX)),
    );
    let sp = &fs["pull_split"];
    row(
        "  tap → first pull / in pulls / between pulls / after the last",
        format!(
            "{} / {} / {} / {}",
            ms(&sp["before_first_pull_ms"]),
            ms(&sp["in_pull_requests_ms"]),
            ms(&sp["between_pulls_ms"]),
            ms(&sp["after_last_pull_ms"])
        ),
        "",
        "—",
    );
    let l = &r["list"];
    row(
        &format!(
            "listing {} records: #/ → list in the DOM",
            l["records_read"]
        ),
        format!("median / p95 {}", mp(&l["dom_ms"])),
        "≤ 200 ms",
        met(l["dom_ms"]["p95"].as_f64().map(|x| x <= LIST_MS_MAX)),
    );
    row(
        "  to the next frame",
        format!("median / p95 {}", mp(&l["painted_ms"])),
        "",
        "—",
    );
    row(
        "  of which records.allRecords() / bare getAll of records",
        format!(
            "{} / {} (medians)",
            ms(&l["all_records_ms"]["median"]),
            ms(&l["idb_get_all_records_ms"]["median"])
        ),
        "",
        "—",
    );
    let s = &r["save"];
    row(
        "save offline: tap 保存 → 已保存在本机",
        format!("median / p95 {}", mp(&s["form_to_saved_note_ms"])),
        "≤ 50 ms",
        met(s["form_to_saved_note_ms"]["p95"]
            .as_f64()
            .map(|x| x <= SAVE_MS_MAX)),
    );
    row(
        "  tap 保存 → the record's page drawn",
        format!("median / p95 {}", mp(&s["form_to_record_page_ms"])),
        "",
        "—",
    );
    row(
        "  records.createRecord (one durable transaction)",
        format!("median / p95 {}", mp(&s["create_record_ms"])),
        "",
        "—",
    );
    if let Some(tr) = median_trace(&s["traces"]) {
        row("  a traced save (ms after the tap)", tr, "", "—");
    }
    row(
        "  the settings update the save awaits too",
        format!("median / p95 {}", mp(&s["settings_update_ms"])),
        "",
        "—",
    );
    let bp = &fs["browser_pull_bytes_per_record"];
    let pr = &r["bytes_per_record_pulled"];
    let b0 = |v: &Value| format!("{:.0}", v.as_f64().unwrap_or(0.0));
    row(
        "bytes per record pulled, the app (Chromium's Accept-Encoding)",
        format!(
            "{} transferred ({} body; {} uncompressed)",
            b0(&bp["transfer"]),
            b0(&bp["encoded"]),
            b0(&bp["decoded"])
        ),
        "",
        "—",
    );
    row(
        "  on the wire: no compression / gzip / br / Rust SDK",
        format!(
            "{} / {} / {} / {}",
            b0(&pr["identity"]),
            b0(&pr["gzip"]),
            b0(&pr["br"]),
            b0(&pr["sdk"])
        ),
        "",
        "—",
    );

    let w = [0, 1, 2].map(|i| rows.iter().map(|r| width(&r[i])).max().unwrap_or(0));
    let pad = |s: &str, n: usize| format!("{s}{}", " ".repeat(n.saturating_sub(width(s))));
    println!();
    println!(
        "{} | {} | {} | met",
        pad("measure", w[0]),
        pad("figure", w[1]),
        pad("target", w[2])
    );
    for r in &rows {
        println!(
            "{} | {} | {} | {}",
            pad(&r[0], w[0]),
            pad(&r[1], w[1]),
            pad(&r[2], w[2]),
            r[3]
        );
    }
    for (name, prof) in [
        ("first sync", &r["first_sync"]["profile"]),
        ("list renders", &r["list"]["profile"]),
        ("saves through the form", &r["save"]["profile"]),
    ] {
        if prof.is_null() {
            continue;
        }
        println!(
            "\nCPU profile of the page, {name}: {} sampled, {} idle; most self time:",
            ms(&prof["total_ms"]),
            ms(&prof["idle_ms"])
        );
        for e in prof["top"].as_array().into_iter().flatten() {
            println!("  {:>10}  {}", ms(&e[1]), e[0].as_str().unwrap_or_default());
        }
    }
}
