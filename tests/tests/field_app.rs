//! The field app (`client-sdk/web/`, served by `pufa-server` at `/field/`)
//! in a real browser against the real server binary:
//!
//! - its service worker lists every file of the shell (no browser needed);
//! - its content hash, checksum terms and HLC order agree with `pufa-core`
//!   on vectors generated here, byte for byte;
//! - a field worker enrols with a code from the link in the QR code,
//!   records a lecture, a library corner and a demonstration site with the
//!   network cut, reloads the app offline (the shell from the service
//!   worker, the records from IndexedDB), reconnects, and the server counts
//!   each record once;
//! - the browser is killed mid-sync and started again on the same
//!   profile: nothing lost, nothing counted twice;
//! - the app and a `pufa-client` device edit the same record offline: all
//!   converge to the server's state and the app shows the conflict;
//! - the server refuses an edit, the app shows why in Chinese, the worker
//!   fixes it and resubmits;
//! - a revoked phone keeps its outbox and sends it after enrolling again;
//! - a server restored from a backup (new `store_id`) gets back from the
//!   phone what it lost, and the phone's unsynced edit too.
//!
//! Headless Chromium at a phone's size, through chromedriver
//! (`tests/src/webdriver.rs`). Without Chromium the browser tests are
//! skipped with a loud message, except under `CI=true`, where they fail.
//! `PUFA_UPDATE_SCREENSHOTS=1` writes the screenshots of
//! `docs/field-app.md` to `docs/screenshots/field-*.png`;
//! `PUFA_UPDATE_SHELL=1` rewrites the shell list in `client-sdk/web/sw.js`.

use std::path::{Path, PathBuf};

use pufa_core::hlc::{Hlc, HlcClock};
use pufa_core::merge::{canonical_json, checksum_text, content_hash, record_digest};
use pufa_core::wire::Mutation;
use pufa_tests::webdriver::Browser;
use pufa_tests::{api, pull_all, ServerProcess};
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A phone's screen in CSS pixels (an iPhone 12–15; Android phones are
/// 360–412 wide).
const PHONE: (u32, u32) = (390, 844);

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../client-sdk/web")
}

// ---- the shell list of sw.js --------------------------------------------------

/// Every file of the app, as paths relative to `client-sdk/web/`, sorted.
fn app_files(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("client-sdk/web")
        .map(|e| e.expect("a dir entry"))
        .collect();
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let rel = format!("{prefix}{name}");
        if e.file_type().expect("a file type").is_dir() {
            app_files(&e.path(), &format!("{rel}/"), out);
        } else {
            out.push(rel);
        }
    }
}

/// The block between `// shell:begin` and `// shell:end` in sw.js: the
/// files the service worker caches (all but itself; `index.html` as the
/// scope's own URL, which is what opening the app asks for), and a version
/// made of their contents, so that any change makes a new sw.js.
fn shell_block(dir: &Path) -> String {
    let mut files = Vec::new();
    app_files(dir, "", &mut files);
    files.retain(|f| f != "sw.js");
    let mut version = Sha256::new();
    for f in &files {
        let bytes = std::fs::read(dir.join(f)).expect("an app file");
        version.update(f.as_bytes());
        version.update([0]);
        version.update(Sha256::digest(&bytes));
    }
    let version: String = version.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut block = format!("// shell:begin\nconst VERSION = '{version}';\nconst SHELL = [\n");
    for f in &files {
        let url = if f == "index.html" {
            "./".to_string()
        } else {
            format!("./{f}")
        };
        block.push_str(&format!("  '{url}',\n"));
    }
    block.push_str("];\n// shell:end");
    block
}

#[test]
fn the_service_worker_caches_every_file_of_the_app() {
    let dir = web_dir();
    let sw_path = dir.join("sw.js");
    let sw = std::fs::read_to_string(&sw_path).expect("sw.js");
    let (start, end) = (
        sw.find("// shell:begin").expect("a shell:begin line"),
        sw.find("// shell:end").expect("a shell:end line") + "// shell:end".len(),
    );
    let want = shell_block(&dir);
    if std::env::var_os("PUFA_UPDATE_SHELL").is_some() {
        let updated = format!("{}{want}{}", &sw[..start], &sw[end..]);
        std::fs::write(&sw_path, updated).expect("rewrite sw.js");
        return;
    }
    assert_eq!(
        &sw[start..end],
        want,
        "client-sdk/web changed but sw.js does not list it: run \
         PUFA_UPDATE_SHELL=1 cargo test -p pufa-tests --test field_app the_service_worker"
    );
}

// ---- a server, a browser -------------------------------------------------------

/// Starts headless Chromium at phone size; `None` (after a loud message)
/// when it is not installed outside CI.
async fn phone(downloads: &Path) -> Option<Browser> {
    match Browser::start(PHONE.0, PHONE.1, downloads).await {
        Ok(Some(b)) => {
            b.emulate_phone(PHONE.0, PHONE.1)
                .await
                .expect("phone emulation");
            Some(b)
        }
        Ok(None) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but chromium/chromedriver are missing (.ci/run installs them)")
        }
        Ok(None) => {
            eprintln!(
                "\n\n*** SKIPPED field app browser test: chromium and chromedriver are not \
                 installed (apt-get install chromium chromium-driver) ***\n\n"
            );
            None
        }
        Err(e) => panic!("the browser did not start: {e}"),
    }
}

fn screenshot_dir(scratch: &Path) -> PathBuf {
    if std::env::var_os("PUFA_UPDATE_SCREENSHOTS").is_some() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
        std::fs::create_dir_all(&dir).expect("docs/screenshots");
        dir
    } else {
        scratch.to_path_buf()
    }
}

/// The real `pufa-server` binary with a small district, and its admin.
struct Server {
    process: ServerProcess,
    admin: String,
    _data: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        let data = tempfile::tempdir().expect("a temp dir");
        let (process, _) = ServerProcess::start(data.path().to_path_buf(), vec![], None).await;
        let admin = std::fs::read_to_string(data.path().join("admin.token"))
            .expect("admin.token")
            .trim()
            .to_string();
        let server = Server {
            process,
            admin,
            _data: data,
        };
        let units = json!([
            {"code":"d","name":"迎泽区","type":"district","parent":null},
            {"code":"s1","name":"桥东街道","type":"street","parent":"d"},
            {"code":"c11","name":"双塔社区","type":"community","parent":"s1"},
            {"code":"c12","name":"郝庄村","type":"village","parent":"s1"},
            {"code":"s2","name":"柳巷街道","type":"street","parent":"d"},
            {"code":"c21","name":"新民社区","type":"community","parent":"s2"},
        ]);
        let (st, v) = server
            .call(Method::PUT, "/v1/admin/org-units", Some(units))
            .await;
        assert_eq!(st, 200, "{v}");
        server
    }

    fn base(&self) -> String {
        self.process.base()
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        api(&self.base(), method, path, &self.admin, body).await
    }

    /// A one-time enrolment code for a field device at `org`.
    async fn code(&self, org: &str) -> String {
        let (st, v) = self
            .call(
                Method::POST,
                "/v1/enrollment-codes",
                Some(json!({"role": "field", "org_unit": org, "label": "测试手机"})),
            )
            .await;
        assert_eq!(st, 201, "{v}");
        v["code"].as_str().expect("a code").to_string()
    }
}

/// What a browser test needs: the phone, the server, where screenshots go.
struct Scene {
    b: Browser,
    server: Server,
    shots: PathBuf,
    _scratch: tempfile::TempDir,
}

impl Scene {
    async fn start() -> Option<Scene> {
        let scratch = tempfile::tempdir().expect("a temp dir");
        let b = phone(scratch.path()).await?;
        let server = Server::start().await;
        Some(Scene {
            b,
            server,
            shots: screenshot_dir(scratch.path()),
            _scratch: scratch,
        })
    }

    async fn shot(&self, name: &str) {
        self.b
            .screenshot(&self.shots.join(format!("field-{name}.png")))
            .await
            .expect("a screenshot");
    }

    async fn wait(&self, condition: &str) {
        if let Err(e) = self.b.wait_until(condition).await {
            let page = self.b.page_text().await.unwrap_or_default();
            panic!("{e}\n--- the page says:\n{page}");
        }
    }

    /// Clicks what `css` names once it is in the middle of the screen
    /// (clear of the bars at the bottom), finding it again if the view was
    /// redrawn meanwhile (a sync ended).
    async fn click(&self, css: &str) {
        let mut last = String::new();
        for _ in 0..5 {
            let e = self.b.find(css).await.unwrap_or_else(|e| panic!("{e}"));
            let center = format!(
                "document.querySelector({})?.scrollIntoView({{block: 'center'}})",
                json!(css)
            );
            self.b.execute(&center, vec![]).await.unwrap();
            match self.b.click(&e).await {
                Ok(()) => return,
                Err(e) if e.contains("stale") => last = e,
                Err(e) => panic!("{css}: {e}"),
            }
        }
        panic!("{css}: {last}");
    }

    async fn type_in(&self, css: &str, text: &str) {
        let e = self.b.find(css).await.unwrap_or_else(|e| panic!("{e}"));
        self.b
            .type_into(&e, text)
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
    }

    /// Opens the link of the dashboard's QR code and enrols with it; waits
    /// for the first sync to end.
    async fn enrol(&self, org: &str) {
        let code = self.server.code(org).await;
        self.b
            .goto(&format!("{}/field/#code={code}", self.server.base()))
            .await
            .unwrap();
        self.wait("document.querySelector('#enrol-code')?.value.length > 0")
            .await;
        self.shot("enrol").await;
        self.click("#enrol-submit").await;
        self.wait_synced().await;
        // The shell is cached and the page is under the service worker.
        self.wait("navigator.serviceWorker.controller !== null")
            .await;
        // Headless Chromium refuses persistent storage to a page in a tab:
        // the worker reads the note once and taps 知道了.
        self.b
            .execute(
                "document.querySelector('#persist-banner button')?.click()",
                vec![],
            )
            .await
            .unwrap();
        self.wait("document.querySelector('#persist-banner') === null")
            .await;
    }

    /// What is wrong with the layout of the view shown: wider than the
    /// screen, or a control a thumb cannot hit (under 44×44 CSS pixels).
    async fn layout_faults(&self) -> Vec<String> {
        let v = self
            .b
            .execute(
                "const bad = []; \
                 if (document.documentElement.scrollWidth > innerWidth) \
                   bad.push(`${document.body.dataset.view}: ${document.documentElement.scrollWidth} px wide`); \
                 const taps = 'button, a.button, a.record, a.kind-button, nav.bottom a, summary, select, \
                   label.check, label.chip span, input:not([type=radio]):not([type=checkbox])'; \
                 for (const el of document.querySelectorAll(taps)) { \
                   const r = el.getBoundingClientRect(); \
                   if (r.width === 0 && r.height === 0) continue; \
                   if (r.width < 44 || r.height < 44) \
                     bad.push(`${document.body.dataset.view}: ${el.outerHTML.slice(0, 90)} is ${r.width}×${r.height}`); \
                 } \
                 return bad;",
                vec![],
            )
            .await
            .unwrap();
        serde_json::from_value(v).unwrap()
    }

    /// Waits until a sync has ended with nothing left to send.
    async fn wait_synced(&self) {
        self.wait(
            "document.body.dataset.view === 'list' \
             && document.querySelector('#status')?.dataset.state !== 'syncing' \
             && document.querySelector('#status')?.dataset.pending === '0' \
             && document.querySelector('#status')?.textContent.includes('上次同步')",
        )
        .await;
    }

    /// Opens the form of `kind`, fills it with `steps`, saves, and waits
    /// for the record's page.
    async fn record(&self, kind: &str, unit: &str, steps: &[(&str, &str)]) {
        self.click("#nav-new").await;
        self.click(&format!("a.kind-button[data-kind={kind}]"))
            .await;
        self.wait("document.querySelector('#record-form') !== null")
            .await;
        self.click(&format!(
            "[data-field=org_unit] button.unit[data-code={unit}]"
        ))
        .await;
        for (field, value) in steps {
            let sel = format!("#record-form [data-field={field}]");
            // The field's type, and whether it is a long text (a textarea).
            let ty = self
                .b
                .execute(
                    &format!(
                        "const f = document.querySelector('{sel}'); \
                         return f.dataset.type + (f.querySelector('textarea') ? '-long' : '')"
                    ),
                    vec![],
                )
                .await
                .unwrap();
            match ty.as_str() {
                Some("enum") => {
                    self.click(&format!("{sel} label.chip:has(input[value={value}]) span"))
                        .await
                }
                Some("topics") => {
                    self.type_in(&format!("{sel} input"), value).await;
                    self.click(&format!("{sel} .row button")).await;
                }
                Some("text-long") => self.type_in(&format!("{sel} textarea"), value).await,
                _ => self.type_in(&format!("{sel} input"), value).await,
            }
        }
        if kind == "lecture" {
            self.shot("form").await;
        }
        self.click("#save").await;
        self.wait("location.hash.startsWith('#/r/') && document.querySelector('.badge') !== null")
            .await;
    }

    async fn list_states(&self) -> Vec<String> {
        let v = self
            .b
            .execute(
                "return [...document.querySelectorAll('a.record')].map(a => a.dataset.state)",
                vec![],
            )
            .await
            .unwrap();
        serde_json::from_value(v).unwrap()
    }
}

// ---- shared vectors ------------------------------------------------------------

/// Text of the kinds that make hashing go wrong: escapes, controls,
/// characters beyond the BMP, U+2028, keys that sort differently by code
/// point than by UTF-16 unit (U+E000 against U+1F600).
const PALETTE: &[&str] = &[
    "a", "Z", "0", "法", "治", "\"", "\\", "/", "\n", "\t", "\r", "\u{1}", "\u{1f}", "\u{7f}", "é",
    "😀", "\u{2028}", "\u{e000}", "<", "&", " ",
];

fn text(rng: &mut impl Rng, max: usize) -> String {
    let n = rng.gen_range(0..=max);
    (0..n)
        .map(|_| PALETTE[rng.gen_range(0..PALETTE.len())])
        .collect()
}

/// A JSON value as the app would send it. Floats always have a fraction:
/// the app never writes `37.0` (JavaScript writes `37`, which every side
/// reads as the integer 37).
fn value(rng: &mut impl Rng, depth: u32) -> Value {
    match rng.gen_range(0..if depth == 0 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => json!(rng.gen_bool(0.5)),
        2 => json!(rng.gen_range(-100_000i64..=100_000)),
        3 => {
            let choices = [
                37.8,
                -112.549_717,
                0.000_001,
                1.5e-6,
                1.234e-5,
                1e-7,
                89.999_999,
                -0.5,
                123.456,
                0.1 + 0.2,
                1e20,
                1e-300,
            ];
            json!(choices[rng.gen_range(0..choices.len())])
        }
        4 | 5 => json!(text(rng, 8)),
        6 => Value::Array(
            (0..rng.gen_range(0..4))
                .map(|_| value(rng, depth - 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.gen_range(0..4))
                .map(|_| (text(rng, 3), value(rng, depth - 1)))
                .collect(),
        ),
    }
}

fn uuid(rng: &mut impl Rng) -> Uuid {
    // Few distinct nodes, so that HLC pairs often tie on ms and c.
    Uuid::from_u128(rng.gen::<u128>() >> (rng.gen_range(0..3) * 60))
}

fn hlc(rng: &mut impl Rng) -> Hlc {
    Hlc::new(
        1_593_561_600_000 + rng.gen_range(0..3),
        [0, 1, u32::MAX][rng.gen_range(0..3)],
        uuid(rng),
    )
}

/// Vectors made by core: mutations with their content hashes, values
/// with their canonical JSON, records with their checksum terms, HLC pairs
/// with their order, and clock runs with the clock after each step.
fn vectors() -> (Value, Value) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(15);
    let mut mutations = Vec::new();
    let mut hashes = Vec::new();
    for i in 0..200 {
        let mut set = serde_json::Map::new();
        for _ in 0..rng.gen_range(0..5) {
            set.insert(text(&mut rng, 4), value(&mut rng, 2));
        }
        let mut m = json!({
            "id": Uuid::from_u128(rng.gen()).to_string(),
            "record_id": uuid(&mut rng).to_string(),
            "kind": if i % 3 == 0 { text(&mut rng, 6) } else { "lecture".to_string() },
            "base_seq": rng.gen_range(0..1000),
            "hlc": hlc(&mut rng),
            "set": set,
        });
        match i % 3 {
            1 => m["delete"] = json!(true),
            2 => m["delete"] = json!(false),
            _ => {}
        }
        let parsed: Mutation = serde_json::from_value(m.clone()).expect("a mutation");
        hashes.push(json!(content_hash(&parsed)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()));
        mutations.push(m);
    }
    let values: Vec<Value> = (0..100).map(|_| value(&mut rng, 3)).collect();
    let canonical: Vec<Value> = values.iter().map(|v| json!(canonical_json(v))).collect();
    let mut records = Vec::new();
    let mut digests = Vec::new();
    let mut xor = 0u64;
    for _ in 0..300 {
        let id = uuid(&mut rng);
        let seq = rng.gen_range(0..u64::from(u32::MAX) * 4);
        let d = record_digest(id, seq);
        xor ^= d;
        records.push(json!({"id": id, "seq": seq}));
        digests.push(json!(checksum_text(d)));
    }
    let mut pairs = Vec::new();
    let mut order = Vec::new();
    for _ in 0..300 {
        let (a, b) = (hlc(&mut rng), hlc(&mut rng));
        let b = if rng.gen_bool(0.1) { a } else { b };
        pairs.push(json!([a, b]));
        order.push(json!(a.cmp(&b) as i8));
    }
    let mut runs = Vec::new();
    let mut after = Vec::new();
    for _ in 0..30 {
        let start = (
            1_593_561_600_000 + rng.gen_range(0..5),
            [0, 7, u32::MAX - 1, u32::MAX][rng.gen_range(0..4)],
        );
        let mut clock = HlcClock::from_parts(start.0, start.1);
        let mut steps = Vec::new();
        let mut states = Vec::new();
        for _ in 0..10 {
            let ms = 1_593_561_600_000 + rng.gen_range(0..6);
            match rng.gen_range(0..3) {
                0 => {
                    let h = clock.next(ms, Uuid::nil());
                    steps.push(json!({"next": ms}));
                    states.push(json!([h.ms, h.c]));
                }
                1 => {
                    let h = hlc(&mut rng);
                    clock.observe(&h);
                    steps.push(json!({"observe": h}));
                    states.push(json!(clock.parts()));
                }
                _ => {
                    clock.observe_ms(ms);
                    steps.push(json!({"observe_ms": ms}));
                    states.push(json!(clock.parts()));
                }
            }
        }
        runs.push(json!({"start": [start.0, start.1], "steps": steps}));
        after.push(json!(states));
    }
    let input = json!({
        "mutations": mutations, "values": values, "records": records,
        "pairs": pairs, "runs": runs,
    });
    let expected = json!({
        "content": hashes, "canonical": canonical, "digests": digests,
        "checksum": checksum_text(xor), "order": order, "clocks": after,
    });
    (input, expected)
}

/// The app's own modules, run in the page on core's vectors.
const CHECK_VECTORS: &str = r#"
const [input, done] = arguments;
Promise.all([import('/field/js/hash.js'), import('/field/js/hlc.js')]).then(([hash, hlc]) => {
  let hi = 0, lo = 0;
  const digests = input.records.map((r) => {
    const d = hash.recordDigest(r.id, r.seq);
    hi ^= d[0]; lo ^= d[1];
    return hash.checksumText(d);
  });
  done({
    content: input.mutations.map((m) => hash.contentHash(m)),
    canonical: input.values.map((v) => hash.canonicalJson(v)),
    digests,
    checksum: hash.checksumText([hi >>> 0, lo >>> 0]),
    order: input.pairs.map(([a, b]) => hlc.compareHlc(a, b)),
    clocks: input.runs.map((run) => {
      const c = new hlc.HlcClock(run.start);
      return run.steps.map((s) => {
        if ('next' in s) { const h = c.next(s.next, 'n'); return [h.ms, h.c]; }
        if ('observe' in s) c.observe(s.observe); else c.observeMs(s.observe_ms);
        return c.parts();
      });
    }),
  });
}).catch((e) => done({ error: String(e && e.stack || e) }));
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_hashes_and_orders_as_core_does() {
    let Some(scene) = Scene::start().await else {
        return;
    };
    scene
        .b
        .goto(&format!("{}/field/", scene.server.base()))
        .await
        .unwrap();
    let (input, expected) = vectors();
    let got = scene
        .b
        .execute_async(CHECK_VECTORS, vec![input.clone()])
        .await
        .expect("the script runs");
    assert!(got.get("error").is_none(), "{}", got["error"]);
    shell_fits_a_metered_phone(&scene.server.base()).await;
    for key in [
        "content",
        "canonical",
        "digests",
        "checksum",
        "order",
        "clocks",
    ] {
        if got[key] != expected[key] {
            let (g, e) = (&got[key], &expected[key]);
            let first = (0..e.as_array().map_or(0, Vec::len)).find(|&i| g[i] != e[i]);
            let at = first.map(|i| {
                let source = match key {
                    "content" => input["mutations"][i].clone(),
                    "canonical" => input["values"][i].clone(),
                    "digests" => input["records"][i].clone(),
                    "order" => input["pairs"][i].clone(),
                    "clocks" => input["runs"][i].clone(),
                    _ => Value::Null,
                };
                format!(
                    "first difference at {i}: app {} core {} for {source}",
                    g[i], e[i]
                )
            });
            panic!(
                "{key}: the app disagrees with core: {}",
                at.unwrap_or_else(|| format!("app {g} core {e}"))
            );
        }
    }
    scene.b.close().await;
}

/// The whole app shell as a phone downloads it (compressed where the
/// server compresses) stays within 150 KB.
async fn shell_fits_a_metered_phone(base: &str) {
    const SHELL_BYTES_MAX: usize = 150 * 1024;
    let mut files = Vec::new();
    app_files(&web_dir(), "", &mut files);
    // pufa-client turns on reqwest's decoders; off here, the body is what
    // travelled.
    let http = reqwest::Client::builder()
        .no_gzip()
        .no_brotli()
        .build()
        .expect("an HTTP client");
    let (mut raw, mut wire) = (0, 0);
    for f in &files {
        let resp = http
            .get(format!("{base}/field/{f}"))
            .header("Accept-Encoding", "gzip, br")
            .send()
            .await
            .expect("the server answers");
        assert_eq!(resp.status().as_u16(), 200, "{f}");
        wire += resp.bytes().await.expect("a body").len();
        raw += std::fs::metadata(web_dir().join(f)).expect("a file").len() as usize;
    }
    eprintln!("field app shell: {raw} bytes, {wire} bytes on the wire");
    assert!(wire <= SHELL_BYTES_MAX, "{wire} bytes on the wire");
}

// ---- a field worker's day --------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_made_offline_reach_the_server_once() {
    let Some(mut scene) = Scene::start().await else {
        return;
    };
    scene.enrol("s1").await;
    let base = scene.server.base();

    // No signal: the server is gone and the phone knows it is offline.
    scene.server.process.kill();
    scene.b.set_offline(true).await.unwrap();
    scene
        .wait("document.querySelector('#status')?.dataset.state === 'offline'")
        .await;

    scene
        .record(
            "lecture",
            "c11",
            &[
                ("title", "民法典进社区"),
                ("attendees", "87"),
                ("topics", "民法典"),
                ("speaker", "王律师"),
                ("audience", "residents"),
            ],
        )
        .await;
    scene.shot("record").await;
    scene
        .record(
            "library_corner",
            "c12",
            &[
                ("name", "郝庄村法治图书角"),
                ("status", "active"),
                ("books", "320"),
            ],
        )
        .await;
    scene
        .record(
            "demo_site",
            "c11",
            &[
                ("level", "provincial"),
                ("status", "awarded"),
                ("year", "2024"),
            ],
        )
        .await;

    // Reload with no network: the shell comes from the service worker,
    // the records from IndexedDB.
    scene.b.goto(&format!("{base}/field/")).await.unwrap();
    scene.wait("document.body.dataset.ready === '1'").await;
    scene
        .wait("document.querySelectorAll('a.record').length === 3")
        .await;
    assert_eq!(scene.list_states().await, vec!["pending"; 3]);
    let status = scene.b.find("#status").await.unwrap();
    let line = scene.b.text(&status).await.unwrap();
    assert!(
        line.contains("离线") && line.contains("待同步 3 条"),
        "{line}"
    );
    scene.shot("offline").await;

    // Back in coverage: the phone syncs by itself.
    scene.server.process.restart().await;
    scene.b.set_offline(false).await.unwrap();
    scene.wait_synced().await;
    assert_eq!(scene.list_states().await, vec!["synced"; 3]);
    scene.shot("list").await;

    // On the server: each record once, counted in the district's totals.
    let held = pull_all(&base, &scene.server.admin).await;
    assert_eq!(held.len(), 3, "{held:?}");
    let (st, totals) = scene
        .server
        .call(Method::GET, "/v1/totals?org=d", None)
        .await;
    assert_eq!(st, 200, "{totals}");
    assert_eq!(totals["lectures"]["count"], 1, "{totals}");
    assert_eq!(totals["lectures"]["attendees"], 87, "{totals}");
    assert_eq!(totals["library_corners"]["active"], 1, "{totals}");
    assert_eq!(totals["demo_sites"]["provincial"], 1, "{totals}");
    let (_, devices) = scene.server.call(Method::GET, "/v1/devices", None).await;
    let phone = devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["label"] == "测试手机")
        .expect("the phone is listed");
    assert_eq!(phone["outbox_len"], 0, "{phone}");

    scene.click("#nav-settings").await;
    scene
        .wait("document.body.dataset.view === 'settings'")
        .await;
    scene.shot("settings").await;
    // English, kept across a reload.
    scene.click("button[data-lang=en]").await;
    scene.click("#nav-list").await;
    scene
        .wait("document.querySelector('#nav-list')?.textContent === 'Records'")
        .await;
    scene.b.goto(&format!("{base}/field/")).await.unwrap();
    scene
        .wait(
            "document.body.dataset.ready === '1' && document.body.innerText.includes('Synced') \
             && document.querySelector('#status')?.textContent.startsWith('Last synced')",
        )
        .await;
    scene.shot("english").await;
    scene.b.close().await;
}

/// A lecture made offline in a period the district approves meanwhile:
/// the phone says in Chinese that the period is locked, by whom, and to
/// ask the district to reopen it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_into_an_approved_period_says_who_locked_it() {
    let Some(scene) = Scene::start().await else {
        return;
    };
    scene.enrol("s1").await;
    scene.b.set_offline(true).await.unwrap();
    scene
        .wait("document.querySelector('#status')?.dataset.state === 'offline'")
        .await;
    scene
        .record(
            "lecture",
            "c11",
            &[("title", "宪法宣传日"), ("attendees", "30")],
        )
        .await;
    // The lecture is dated today where the phone is (Beijing time): the
    // district approves the street's year.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let year = pufa_core::date::Date::from_unix_ms(now_ms + 8 * 3600 * 1000).year();
    let (st, v) = scene
        .server
        .call(
            Method::POST,
            "/v1/periods/approve",
            Some(json!({"org_unit": "s1", "period": year.to_string()})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    scene.b.set_offline(false).await.unwrap();
    scene
        .wait(
            "document.querySelector('#status')?.dataset.state !== 'syncing' \
             && document.querySelector('.badge')?.dataset.state === 'rejected'",
        )
        .await;
    scene
        .wait("document.querySelector('#rejection-reason') !== null")
        .await;
    let (_, schema) = scene.server.call(Method::GET, "/v1/schema", None).await;
    let why = schema["rejections"]["period_locked"]["zh-CN"]
        .as_str()
        .expect("a Chinese reason for period_locked")
        .to_string();
    let shown = scene.b.find("#rejection-reason").await.unwrap();
    let text = scene.b.text(&shown).await.unwrap();
    assert!(
        text.starts_with(&why)
            && text.contains("桥东街道")
            && text.contains(&format!("{year}年 由")),
        "{text}"
    );
    scene.shot("period-locked").await;
    scene.b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_edit_is_explained_in_chinese_fixed_and_resubmitted() {
    let Some(scene) = Scene::start().await else {
        return;
    };
    scene.enrol("s1").await;
    scene.b.set_offline(true).await.unwrap();
    scene
        .wait("document.querySelector('#status')?.dataset.state === 'offline'")
        .await;
    scene
        .record(
            "library_corner",
            "c12",
            &[("name", "郝庄村法治图书角"), ("status", "active")],
        )
        .await;
    // Meanwhile the village moves to another street, out of this phone's
    // scope: the server refuses the corner.
    let moved = json!([{"code":"c12","name":"郝庄村","type":"village","parent":"s2"}]);
    let (st, v) = scene
        .server
        .call(Method::PUT, "/v1/admin/org-units", Some(moved))
        .await;
    assert_eq!(st, 200, "{v}");
    scene.b.set_offline(false).await.unwrap();
    scene
        .wait(
            "document.querySelector('#status')?.dataset.state !== 'syncing' \
             && document.querySelector('.badge')?.dataset.state === 'rejected'",
        )
        .await;
    let (_, schema) = scene.server.call(Method::GET, "/v1/schema", None).await;
    let why = schema["rejections"]["out_of_scope"]["zh-CN"]
        .as_str()
        .expect("a Chinese reason for out_of_scope")
        .replace("{field}", "所属单位");
    let shown = scene.b.find("#rejection-reason").await.unwrap();
    assert_eq!(scene.b.text(&shown).await.unwrap(), why);
    let status = scene.b.find("#status").await.unwrap();
    let line = scene.b.text(&status).await.unwrap();
    assert!(line.contains("被拒绝 1 条"), "{line}");
    scene.shot("rejected").await;

    // Fix: another unit of the scope, and send it again.
    scene.click("#fix").await;
    scene
        .wait(
            "document.querySelector('[data-field=org_unit] .field-error')?.textContent.length > 0",
        )
        .await;
    scene
        .click("[data-field=org_unit] button.unit[data-code=c11]")
        .await;
    scene.click("#save").await;
    scene
        .wait(
            "location.hash.startsWith('#/r/') \
             && document.querySelector('.badge')?.dataset.state === 'synced'",
        )
        .await;
    let held = pull_all(&scene.server.base(), &scene.server.admin).await;
    assert_eq!(held.len(), 1, "{held:?}");
    let (_, totals) = scene
        .server
        .call(Method::GET, "/v1/totals?org=d", None)
        .await;
    assert_eq!(totals["library_corners"]["active"], 1, "{totals}");
    scene.b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_with_an_sdk_device_converges_and_is_shown() {
    let Some(scene) = Scene::start().await else {
        return;
    };
    let base = scene.server.base();
    scene.enrol("s1").await;
    scene
        .record(
            "lecture",
            "c11",
            &[("title", "宪法宣传周"), ("attendees", "60")],
        )
        .await;
    scene.click("#nav-list").await;
    scene.wait_synced().await;

    // A pufa-client device of the same street has the lecture too.
    let (st, issued) = scene
        .server
        .call(
            Method::POST,
            "/v1/admin/tokens",
            Some(json!({"role": "field", "org_unit": "s1", "label": "pufa-client"})),
        )
        .await;
    assert_eq!(st, 201, "{issued}");
    let sdk_dir = tempfile::tempdir().unwrap();
    let sdk = pufa_client::Client::open(
        pufa_client::ClientConfig::new(
            sdk_dir.path(),
            issued["device_id"].as_str().unwrap().parse().unwrap(),
            issued["token"].as_str().unwrap(),
        ),
        std::sync::Arc::new(pufa_client::HttpTransport::new(&base).unwrap()),
    )
    .unwrap();
    sdk.sync().await.expect("the SDK device syncs");
    let lectures = sdk.list(&pufa_client::Filter::default()).unwrap();
    assert_eq!(lectures.len(), 1);
    let id = lectures[0].id;

    // Both change the attendance without seeing each other: the phone
    // first (offline), the SDK device later, and the SDK device syncs first.
    scene.b.set_offline(true).await.unwrap();
    scene
        .wait("document.querySelector('#status')?.dataset.state === 'offline'")
        .await;
    scene.click(&format!("a.record[data-id=\"{id}\"]")).await;
    scene.click("#edit").await;
    scene
        .wait("document.querySelector('#record-form') !== null")
        .await;
    scene
        .b
        .execute(
            "document.querySelector('[data-field=attendees] input').value = ''",
            vec![],
        )
        .await
        .unwrap();
    scene.type_in("[data-field=attendees] input", "90").await;
    scene.click("#save").await;
    scene
        .wait("document.querySelector('.badge')?.dataset.state === 'pending'")
        .await;
    let set = serde_json::from_value(json!({"attendees": 120})).unwrap();
    sdk.update(id, set).unwrap();
    sdk.sync().await.expect("the SDK device syncs its edit");

    // The phone comes back: its edit loses (older HLC), and it says so.
    scene.b.set_offline(false).await.unwrap();
    scene
        .wait(
            "document.querySelector('#status')?.dataset.state !== 'syncing' \
             && document.querySelector('.badge')?.dataset.state === 'conflicted'",
        )
        .await;
    let kept = scene.b.find("#conflict td.kept").await.unwrap();
    let lost = scene.b.find("#conflict td.not-kept").await.unwrap();
    assert_eq!(scene.b.text(&kept).await.unwrap(), "120");
    assert_eq!(scene.b.text(&lost).await.unwrap(), "90");
    let shown = scene.b.find("dd[data-field=attendees]").await.unwrap();
    assert_eq!(scene.b.text(&shown).await.unwrap(), "120");
    scene.shot("conflict").await;

    // Both devices and the server agree.
    sdk.sync().await.expect("the SDK device syncs again");
    let on_sdk = sdk.get(id).unwrap().expect("the SDK device has it");
    assert_eq!(on_sdk.fields["attendees"], 120);
    let held = pull_all(&base, &scene.server.admin).await;
    match &held[&id] {
        pufa_core::wire::PullEntry::Record(r) => {
            assert_eq!(r.fields["attendees"], 120);
            assert_eq!(r.conflicts, 1);
        }
        other => panic!("{other:?}"),
    }
    scene.b.close().await;
}

/// The phone's device id, as the server lists it.
async fn phone_device_id(server: &Server) -> String {
    let (_, devices) = server.call(Method::GET, "/v1/devices", None).await;
    devices
        .as_array()
        .unwrap()
        .iter()
        .rfind(|d| d["label"] == "测试手机" && d["revoked"] == false)
        .expect("the phone is listed")["device_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// What a worker who has never seen the app runs into, on a 360 px phone:
/// a wrong code, a browser that refuses persistent storage, a form with
/// wrong values, a refused location, a tap on 同步 with no network, a
/// deletion not yet sent. Each is said in Chinese next to where it
/// happened, and says what to do; nothing is saved that should not be;
/// nothing overflows the screen and every control is at least 44 px.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_worker_is_told_in_chinese_what_went_wrong_and_what_to_do() {
    let Some(scene) = Scene::start().await else {
        return;
    };
    let base = scene.server.base();
    scene.b.emulate_phone(360, 780).await.unwrap();
    let mut faults = Vec::new();

    // A wrong code: said in Chinese, and the phone stays unenrolled.
    scene
        .b
        .goto(&format!("{base}/field/#code=ABCD-EFGH"))
        .await
        .unwrap();
    scene
        .wait("document.querySelector('#enrol-code')?.value === 'ABCD-EFGH'")
        .await;
    faults.extend(scene.layout_faults().await);
    scene.click("#enrol-submit").await;
    scene
        .wait("document.querySelector('#enrol-error')?.textContent === '登记码无效、已使用或已过期，请向协调员索取新码。'")
        .await;
    scene
        .wait("document.body.dataset.view === 'enrol' && document.querySelector('#nav-list') === null")
        .await;

    // The right code, in a browser that will not keep the data for good:
    // the list says what that means, until the worker taps 知道了.
    let code = scene.server.code("s1").await;
    scene
        .b
        .execute(
            "document.querySelector('#enrol-code').value = arguments[0]; \
             navigator.storage.persisted = async () => false; \
             navigator.storage.persist = async () => false;",
            vec![json!(code)],
        )
        .await
        .unwrap();
    scene.click("#enrol-submit").await;
    scene.wait_synced().await;
    scene
        .wait("document.querySelector('#persist-banner')?.textContent.includes('请把本应用添加到主屏幕')")
        .await;
    faults.extend(scene.layout_faults().await);
    scene.click("#persist-banner button").await;
    scene
        .wait("document.querySelector('#persist-banner') === null")
        .await;
    // The status line gives the time in the server's zone, as people write it.
    let line = scene.b.find("#status").await.unwrap();
    let line = scene.b.text(&line).await.unwrap();
    assert!(names_a_time(&line), "{line}");

    // A form with wrong values: each field's reason next to it, in
    // Chinese, from the schema's limits; nothing saved.
    scene.click("#nav-new").await;
    faults.extend(scene.layout_faults().await);
    scene.click("a.kind-button[data-kind=lecture]").await;
    scene
        .wait("document.querySelector('#record-form') !== null")
        .await;
    let keypad = scene
        .b
        .execute(
            "return document.querySelector('[data-field=attendees] input').inputMode",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(keypad, "numeric");
    scene.type_in("[data-field=attendees] input", "abc").await;
    scene.click("#save").await;
    let error_of = |field: &str| {
        format!("document.querySelector('[data-field={field}] .field-error')?.textContent")
    };
    scene
        .wait(&format!(
            "{} === '参加人数须为 0–100000 的整数'",
            error_of("attendees")
        ))
        .await;
    for (field, why) in [("title", "请填写标题"), ("org_unit", "请填写所属单位")] {
        let said = scene
            .b
            .execute(&format!("return {}", error_of(field)), vec![])
            .await
            .unwrap();
        assert_eq!(said, why, "{field}");
    }
    let summary = scene.b.find("#form-error").await.unwrap();
    assert!(scene
        .b
        .text(&summary)
        .await
        .unwrap()
        .contains("还有 3 处需要修改"));
    faults.extend(scene.layout_faults().await);
    scene
        .wait("location.hash === '#/new/lecture' && document.querySelector('#status').dataset.pending === '0'")
        .await;
    // Correcting a field takes its reason away.
    scene
        .type_in("[data-field=title] input", "宪法宣传周")
        .await;
    scene.wait(&format!("{} === ''", error_of("title"))).await;

    // The phone will not say where it is: the worker is told why, in Chinese.
    scene
        .b
        .execute(
            "navigator.geolocation.getCurrentPosition = (ok, fail) => \
               fail({code: 1, message: 'User denied Geolocation'});",
            vec![],
        )
        .await
        .unwrap();
    scene.click("[data-field=location] button.locate").await;
    scene
        .wait("document.querySelector('.location-note')?.textContent.startsWith('没有定位权限')")
        .await;

    // Corrected, it saves; with the network cut, 同步 says it cannot.
    scene
        .click("[data-field=org_unit] button.unit[data-code=c11]")
        .await;
    scene
        .b
        .execute(
            "document.querySelector('[data-field=attendees] input').value = ''",
            vec![],
        )
        .await
        .unwrap();
    scene.type_in("[data-field=attendees] input", "60").await;
    scene.click("#save").await;
    scene
        .wait(
            "location.hash.startsWith('#/r/') && document.querySelector('#pending-note') !== null",
        )
        .await;
    let id = scene
        .b
        .execute("return location.hash.slice(4)", vec![])
        .await
        .unwrap();
    let id = id.as_str().unwrap().to_string();
    faults.extend(scene.layout_faults().await);
    scene.b.set_offline(true).await.unwrap();
    scene
        .wait("document.querySelector('#status')?.dataset.state === 'offline'")
        .await;
    scene.click("#sync-button").await;
    scene
        .wait("document.querySelector('#notice')?.textContent.startsWith('现在没有网络')")
        .await;

    // Deleted before it was sent: the page says so, and how to undo it.
    scene
        .b
        .execute("window.confirm = () => true", vec![])
        .await
        .unwrap();
    scene.click("#delete").await;
    scene
        .wait("document.querySelector('#deleted-note') !== null && document.querySelector('#restore') !== null")
        .await;
    let page = scene.b.page_text().await.unwrap();
    assert!(!page.contains(&id), "the record's id is shown: {page}");
    scene.click("#restore").await;
    scene
        .wait("document.querySelector('#deleted-note') === null && document.querySelector('#delete') !== null")
        .await;
    scene.b.set_offline(false).await.unwrap();
    scene.click("#nav-list").await;
    scene.wait_synced().await;
    let held = pull_all(&base, &scene.server.admin).await;
    assert_eq!(held.len(), 1, "{held:?}");

    // A value the server finds wrong (here slipped past the form, as an
    // older app version might): the refusal says what is allowed.
    let made = scene
        .b
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             Promise.all([import('./js/db.js'), import('./js/records.js')]) \
               .then(([db, records]) => db.openDb().then((d) => records.createRecord(d, 'lecture', \
                 {org_unit: 'c11', held_on: '2026-06-01', title: '人数写错了', attendees: -5}))) \
               .then(() => done('ok'), (e) => done(String(e)));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(made, "ok");
    scene.b.goto(&format!("{base}/field/")).await.unwrap();
    scene
        .wait("document.querySelector('a.record[data-state=rejected]') !== null")
        .await;
    scene.click("a.record[data-state=rejected]").await;
    scene
        .wait("document.querySelector('#rejection-reason')?.textContent === '参加人数须为 0–100000 的整数'")
        .await;
    faults.extend(scene.layout_faults().await);
    scene
        .b
        .execute("window.confirm = () => true", vec![])
        .await
        .unwrap();
    scene.click("#discard").await;
    scene
        .wait("document.querySelector('#status')?.textContent.includes('被拒绝') === false")
        .await;

    scene.click("#nav-settings").await;
    scene
        .wait("document.body.dataset.view === 'settings'")
        .await;
    faults.extend(scene.layout_faults().await);
    let page = scene.b.page_text().await.unwrap();
    assert!(page.contains("中国标准时间"), "{page}");
    assert!(faults.is_empty(), "{faults:#?}");
    scene.b.close().await;
}

/// Whether `line` names a time as `上次同步 12月7日 14:05`.
fn names_a_time(line: &str) -> bool {
    let Some(rest) = line.split("上次同步 ").nth(1) else {
        return false;
    };
    let (date, time) = rest.split_once(' ').unwrap_or((rest, ""));
    let date_ok = date.ends_with('日')
        && date.contains('月')
        && date
            .trim_end_matches('日')
            .split('月')
            .all(|n| n.parse::<u32>().is_ok());
    let time_ok = time.len() >= 5
        && time.as_bytes()[2] == b':'
        && time[..2].parse::<u32>().is_ok()
        && time[3..5].parse::<u32>().is_ok();
    date_ok && time_ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_phone_keeps_its_edits_and_sends_them_after_enrolling_again() {
    let Some(scene) = Scene::start().await else {
        return;
    };
    let base = scene.server.base();
    scene.enrol("s1").await;
    scene.b.set_offline(true).await.unwrap();
    scene
        .wait("document.querySelector('#status')?.dataset.state === 'offline'")
        .await;
    scene
        .record(
            "lecture",
            "c11",
            &[("title", "扫黑除恶专题"), ("attendees", "45")],
        )
        .await;
    let old = phone_device_id(&scene.server).await;
    let (st, _) = scene
        .server
        .call(Method::DELETE, &format!("/v1/admin/tokens/{old}"), None)
        .await;
    assert_eq!(st, 204);

    // Back online, the server refuses the token: the edit stays.
    scene.b.set_offline(false).await.unwrap();
    scene.click("#nav-list").await;
    scene
        .wait("document.querySelector('#status')?.textContent.includes('重新登记')")
        .await;
    assert_eq!(scene.list_states().await, vec!["pending"]);
    let banner = scene.b.find("#reenrol-banner").await.unwrap();
    let said = scene.b.text(&banner).await.unwrap();
    assert!(
        said.contains("请向协调员索取新的登记码") && !said.contains("令牌"),
        "{said}"
    );

    // A new code from the coordinator: the edit goes with the new device.
    let code = scene.server.code("s1").await;
    scene
        .b
        .goto(&format!("{base}/field/#code={code}"))
        .await
        .unwrap();
    scene
        .wait("document.body.innerText.includes('1 条修改会保留')")
        .await;
    scene.click("#enrol-submit").await;
    scene.wait_synced().await;
    assert_eq!(scene.list_states().await, vec!["synced"]);
    let held = pull_all(&base, &scene.server.admin).await;
    assert_eq!(held.len(), 1, "{held:?}");
    let (_, totals) = scene
        .server
        .call(Method::GET, "/v1/totals?org=d", None)
        .await;
    assert_eq!(totals["lectures"]["attendees"], 45, "{totals}");
    assert_ne!(phone_device_id(&scene.server).await, old);
    scene.b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restored_from_a_backup_gets_back_what_it_lost() {
    let Some(mut scene) = Scene::start().await else {
        return;
    };
    let base = scene.server.base();
    scene.enrol("s1").await;
    let backup = scratch_backup(&scene.server).await;

    // After the backup: one lecture synced, one corner still on the phone.
    scene
        .record(
            "lecture",
            "c11",
            &[("title", "民法典宣讲"), ("attendees", "30")],
        )
        .await;
    scene.click("#nav-list").await;
    scene.wait_synced().await;
    scene.b.set_offline(true).await.unwrap();
    scene
        .wait("document.querySelector('#status')?.dataset.state === 'offline'")
        .await;
    scene
        .record(
            "library_corner",
            "c12",
            &[("name", "郝庄村图书角"), ("status", "active")],
        )
        .await;

    // The server is restored from the backup: a new store_id, no lecture.
    scene.server.process.kill();
    let dir = scene.server.process.dir().to_path_buf();
    let aside = dir.with_extension("old");
    std::fs::rename(&dir, &aside).unwrap();
    let out = std::process::Command::new(pufa_tests::bin_dir().join("pufa-server"))
        .arg("restore")
        .arg("--from")
        .arg(backup.path())
        .arg("--data")
        .arg(&dir)
        .output()
        .expect("pufa-server restore runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::copy(aside.join("admin.token"), dir.join("admin.token")).unwrap();
    scene.server.process.restart().await;

    // The phone sends its corner, repairs, and offers the lecture again.
    scene.b.set_offline(false).await.unwrap();
    scene.click("#nav-list").await;
    scene
        .wait(
            "document.querySelector('#lost-banner') !== null \
             && document.querySelector('#status')?.dataset.state !== 'syncing'",
        )
        .await;
    scene.shot("restored").await;
    scene.click("#lost-banner button").await;
    scene
        .wait("document.querySelector('#lost-banner') === null")
        .await;
    scene
        .wait(
            "document.querySelectorAll('a.record').length === 2 \
             && [...document.querySelectorAll('a.record')].every(a => a.dataset.state === 'synced')",
        )
        .await;
    scene.wait_synced().await;
    let held = pull_all(&base, &scene.server.admin).await;
    assert_eq!(held.len(), 2, "{held:?}");
    let (_, totals) = scene
        .server
        .call(Method::GET, "/v1/totals?org=d", None)
        .await;
    assert_eq!(totals["lectures"]["count"], 1, "{totals}");
    assert_eq!(totals["library_corners"]["active"], 1, "{totals}");
    scene.b.close().await;
}

/// An online backup of the server, in a temp file.
async fn scratch_backup(server: &Server) -> tempfile::NamedTempFile {
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/admin/backup", server.base()))
        .bearer_auth(&server.admin)
        .send()
        .await
        .expect("the server answers");
    assert_eq!(resp.status().as_u16(), 200);
    let bytes = resp.bytes().await.expect("the whole backup");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &bytes).unwrap();
    file
}

/// Makes `n` lectures at `unit` through the app's own model, in one
/// transaction (typing 1,200 forms would take the test all day).
const MAKE_LECTURES: &str = r#"
const [n, unit, done] = arguments;
Promise.all([import('/field/js/db.js'), import('/field/js/records.js'), import('/field/js/hlc.js')])
  .then(async ([db, records, hlc]) => {
    const conn = await db.openDb();
    const edits = [];
    for (let i = 0; i < n; i++) {
      edits.push({ record_id: hlc.uuidv7(), kind: 'lecture',
        set: { org_unit: unit, held_on: '2024-05-01', title: `村民法治课 ${i}`, attendees: 1 } });
    }
    await records.recordEdits(conn, edits);
    done(true);
  })
  .catch((e) => done(String(e)));
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_killed_mid_sync_loses_nothing_and_counts_nothing_twice() {
    const LECTURES: u64 = 1200;
    let scratch = tempfile::tempdir().unwrap();
    let profile = tempfile::tempdir().unwrap();
    let start = || async {
        let b = Browser::start_with_profile(PHONE.0, PHONE.1, scratch.path(), Some(profile.path()))
            .await
            .expect("the browser starts")?;
        b.emulate_phone(PHONE.0, PHONE.1).await.unwrap();
        Some(b)
    };
    let Some(b) = start().await else {
        // Reports the skip (or fails under CI) the same way as the others.
        let _ = phone(scratch.path()).await;
        return;
    };
    let scene = Scene {
        b,
        server: Server::start().await,
        shots: scratch.path().to_path_buf(),
        _scratch: tempfile::tempdir().unwrap(),
    };
    let base = scene.server.base();
    scene.enrol("s1").await;
    scene.b.set_offline(true).await.unwrap();
    scene
        .wait("document.querySelector('#status')?.dataset.state === 'offline'")
        .await;
    let made = scene
        .b
        .execute_async(MAKE_LECTURES, vec![json!(LECTURES), json!("c11")])
        .await
        .unwrap();
    assert_eq!(made, json!(true), "{made}");

    // A slow network: the sync pushes 500 at a time; the browser dies
    // after the first batch, while the next is on its way.
    scene.b.set_network(false, 300).await.unwrap();
    scene
        .wait("document.querySelector('#status')?.textContent.includes('500/1200')")
        .await;
    let Scene {
        b,
        server,
        shots,
        _scratch,
    } = scene;
    b.kill_browser();
    let (_, before) = server.call(Method::GET, "/v1/totals?org=d", None).await;
    let counted = before["lectures"]["count"].as_u64().unwrap();
    assert!((500..=LECTURES).contains(&counted), "{before}");
    eprintln!("the browser was killed with {counted} of {LECTURES} lectures on the server");

    // The same profile again: the app opens, syncs the rest, once.
    let b = start().await.expect("the browser starts again");
    let scene = Scene {
        b,
        server,
        shots,
        _scratch,
    };
    scene.b.goto(&format!("{base}/field/")).await.unwrap();
    scene.wait_synced().await;
    let held = pull_all(&base, &scene.server.admin).await;
    assert_eq!(held.len() as u64, LECTURES);
    let (_, totals) = scene
        .server
        .call(Method::GET, "/v1/totals?org=d", None)
        .await;
    assert_eq!(totals["lectures"]["count"], LECTURES, "{totals}");
    assert_eq!(totals["lectures"]["attendees"], LECTURES, "{totals}");
    scene.b.close().await;
}
