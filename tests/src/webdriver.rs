//! A small W3C WebDriver client for the browser test: just what it needs
//! (navigate, find, click, type, read text and source, screenshots), over
//! the `reqwest` the tests already use, against Debian's `chromedriver`
//! driving headless Chromium.
//!
//! [`Browser::start`] returns `Ok(None)` when Chromium or chromedriver is
//! missing, so the test can skip loudly outside CI (and fail under
//! `CI=true`, which `.ci/run` sets after installing them).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long the browser and driver get to come up, and one page to load.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// W3C's key for element references in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium session behind a chromedriver child process.
pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`
    session: String,
    pub download_dir: PathBuf,
}

/// An element found on the page.
#[derive(Clone, Debug)]
pub struct Element(String);

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a phone- or
    /// desktop-sized window. `Ok(None)`: not installed.
    pub async fn start(
        width: u32,
        height: u32,
        download_dir: &Path,
    ) -> Result<Option<Browser>, String> {
        Browser::start_with_profile(width, height, download_dir, None).await
    }

    /// [`Browser::start`] on a browser profile of its own (`--user-data-dir`),
    /// which outlives the browser: what a phone's browser keeps (IndexedDB,
    /// the service worker's cache) across a crash.
    pub async fn start_with_profile(
        width: u32,
        height: u32,
        download_dir: &Path,
        profile: Option<&Path>,
    ) -> Result<Option<Browser>, String> {
        let (Some(driver_bin), Some(chromium)) = (which("chromedriver"), which("chromium")) else {
            return Ok(None);
        };
        let port = free_port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start chromedriver: {e}"))?;
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        // The driver answers /status once it listens; poll it (a readiness
        // wait for a child process, not a timing assumption).
        loop {
            let ready = http
                .get(format!("{base}/status"))
                .send()
                .await
                .ok()
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                break;
            }
            if Instant::now() > deadline {
                return Err("chromedriver did not come up".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--lang=zh-CN".into(),
            format!("--window-size={width},{height}"),
        ];
        if let Some(p) = profile {
            args.push(format!("--user-data-dir={}", p.display()));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": args,
                "prefs": {
                    "download.default_directory": download_dir,
                    "download.prompt_for_download": false,
                    "intl.accept_languages": "zh-CN,zh"
                }
            }
        }}});
        let resp: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let id = resp["value"]["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session: {resp}"))?;
        let mut b = Browser {
            driver,
            http,
            session: format!("{base}/session/{id}"),
            download_dir: download_dir.to_path_buf(),
        };
        // Headless Chromium saves downloads only when told where.
        b.cmd(
            "POST",
            "/chromium/send_command",
            json!({"cmd": "Page.setDownloadBehavior",
                   "params": {"behavior": "allow", "downloadPath": download_dir}}),
        )
        .await?;
        b.set_timeouts().await?;
        Ok(Some(b))
    }

    async fn set_timeouts(&mut self) -> Result<(), String> {
        self.cmd(
            "POST",
            "/timeouts",
            json!({"implicit": 2000, "pageLoad": STARTUP_TIMEOUT.as_millis() as u64,
                   "script": STARTUP_TIMEOUT.as_millis() as u64}),
        )
        .await
        .map(|_| ())
    }

    async fn cmd(&self, method: &str, path: &str, body: Value) -> Result<Value, String> {
        let url = format!("{}{path}", self.session);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let v: Value = resp.json().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{method} {path}: {status}: {}", v["value"]));
        }
        Ok(v["value"].clone())
    }

    pub async fn goto(&self, url: &str) -> Result<(), String> {
        self.cmd("POST", "/url", json!({ "url": url }))
            .await
            .map(|_| ())
    }

    /// Resizes the window (CSS pixels), e.g. to a phone's screen.
    pub async fn set_window(&self, width: u32, height: u32) -> Result<(), String> {
        self.cmd(
            "POST",
            "/window/rect",
            json!({"width": width, "height": height}),
        )
        .await
        .map(|_| ())
    }

    pub async fn current_url(&self) -> Result<String, String> {
        Ok(self
            .cmd("GET", "/url", Value::Null)
            .await?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    pub async fn find(&self, css: &str) -> Result<Element, String> {
        let v = self
            .cmd(
                "POST",
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await
            .map_err(|e| format!("no element {css:?}: {e}"))?;
        v[ELEMENT_KEY]
            .as_str()
            .map(|s| Element(s.to_string()))
            .ok_or_else(|| format!("no element {css:?}: {v}"))
    }

    pub async fn find_all(&self, css: &str) -> Result<Vec<Element>, String> {
        let v = self
            .cmd(
                "POST",
                "/elements",
                json!({"using": "css selector", "value": css}),
            )
            .await?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e[ELEMENT_KEY].as_str().map(|s| Element(s.to_string())))
            .collect())
    }

    /// The element whose visible text contains `text` (a link or button).
    pub async fn find_text(&self, css: &str, text: &str) -> Result<Element, String> {
        for e in self.find_all(css).await? {
            if self.text(&e).await?.contains(text) {
                return Ok(e);
            }
        }
        Err(format!("no {css:?} containing {text:?}"))
    }

    pub async fn click(&self, e: &Element) -> Result<(), String> {
        self.cmd("POST", &format!("/element/{}/click", e.0), json!({}))
            .await
            .map(|_| ())
    }

    /// Clicks something that loads a new page and waits (bounded) until
    /// the old document is gone, so later reads see the new page.
    pub async fn click_and_wait(&self, e: &Element) -> Result<(), String> {
        let old = self.find("html").await?;
        self.click(e).await?;
        self.wait_gone(&old).await
    }

    async fn wait_gone(&self, old: &Element) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        // Polls the old document's root until the driver calls it stale:
        // the browser has replaced the page.
        while self
            .cmd("GET", &format!("/element/{}/name", old.0), Value::Null)
            .await
            .is_ok()
        {
            if Instant::now() > deadline {
                return Err("the page did not change".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    pub async fn type_into(&self, e: &Element, text: &str) -> Result<(), String> {
        self.cmd(
            "POST",
            &format!("/element/{}/value", e.0),
            json!({ "text": text }),
        )
        .await
        .map(|_| ())
    }

    pub async fn text(&self, e: &Element) -> Result<String, String> {
        Ok(self
            .cmd("GET", &format!("/element/{}/text", e.0), Value::Null)
            .await?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    pub async fn attr(&self, e: &Element, name: &str) -> Result<Option<String>, String> {
        Ok(self
            .cmd(
                "GET",
                &format!("/element/{}/attribute/{name}", e.0),
                Value::Null,
            )
            .await?
            .as_str()
            .map(str::to_string))
    }

    /// The visible text of the whole page.
    pub async fn page_text(&self) -> Result<String, String> {
        let body = self.find("body").await?;
        self.text(&body).await
    }

    /// Runs `script`, the body of a function called with `args` (as
    /// `arguments`), in the page, and returns what it returns.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value, String> {
        self.cmd(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": args }),
        )
        .await
    }

    /// Like [`Browser::execute`], for a script that finishes later: it
    /// calls `arguments[arguments.length - 1](value)` with its answer.
    pub async fn execute_async(&self, script: &str, args: Vec<Value>) -> Result<Value, String> {
        self.cmd(
            "POST",
            "/execute/async",
            json!({ "script": script, "args": args }),
        )
        .await
    }

    /// Polls `condition` (a JavaScript expression) until it is true, for
    /// at most [`STARTUP_TIMEOUT`].
    pub async fn wait_until(&self, condition: &str) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let script = format!("return !!({condition});");
        loop {
            if self.execute(&script, vec![]).await? == Value::Bool(true) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("still not true: {condition}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Makes the page a phone's: `width`×`height` CSS pixels at twice the
    /// density, touch, a mobile viewport (headless Chromium will not make
    /// a window narrower than 500 pixels). Lasts across navigations.
    pub async fn emulate_phone(&self, width: u32, height: u32) -> Result<(), String> {
        self.cmd(
            "POST",
            "/goog/cdp/execute",
            json!({"cmd": "Emulation.setDeviceMetricsOverride",
                   "params": {"width": width, "height": height,
                              "deviceScaleFactor": 2, "mobile": true}}),
        )
        .await
        .map(|_| ())
    }

    /// Chromium's network emulation: `true` cuts the page (and its
    /// service worker) off the network, as airplane mode would.
    pub async fn set_offline(&self, offline: bool) -> Result<(), String> {
        self.set_network(offline, 0).await
    }

    /// Chromium's network emulation: offline, or online with `latency_ms`
    /// added to every request (a slow mobile network).
    pub async fn set_network(&self, offline: bool, latency_ms: u64) -> Result<(), String> {
        self.cmd(
            "POST",
            "/chromium/network_conditions",
            json!({"network_conditions": {"offline": offline, "latency": latency_ms,
                   "download_throughput": -1, "upload_throughput": -1}}),
        )
        .await
        .map(|_| ())
    }

    /// Chromium's network emulation with DevTools' full set of knobs:
    /// `latency_ms` added to every request, throughputs in bytes per
    /// second (`-1.0`: not limited), as DevTools' presets ("Fast 3G", …)
    /// give them.
    pub async fn emulate_network(
        &self,
        latency_ms: f64,
        download_bytes_per_s: f64,
        upload_bytes_per_s: f64,
    ) -> Result<(), String> {
        self.cmd(
            "POST",
            "/chromium/network_conditions",
            json!({"network_conditions": {"offline": false, "latency": latency_ms,
                   "download_throughput": download_bytes_per_s,
                   "upload_throughput": upload_bytes_per_s}}),
        )
        .await
        .map(|_| ())
    }

    /// Runs one Chrome DevTools Protocol command on the current page
    /// (e.g. `Page.addScriptToEvaluateOnNewDocument`, `Profiler.stop`)
    /// and returns its result.
    pub async fn cdp(&self, command: &str, params: Value) -> Result<Value, String> {
        self.cmd(
            "POST",
            "/goog/cdp/execute",
            json!({"cmd": command, "params": params}),
        )
        .await
    }

    pub async fn screenshot(&self, to: &Path) -> Result<(), String> {
        let b64 = self.cmd("GET", "/screenshot", Value::Null).await?;
        let bytes = decode_base64(b64.as_str().unwrap_or_default())?;
        std::fs::write(to, bytes).map_err(|e| format!("{}: {e}", to.display()))
    }

    /// Waits (bounded) for a file to finish downloading into the download dir.
    pub async fn wait_download(&self, suffix: &str) -> Result<PathBuf, String> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let done = std::fs::read_dir(&self.download_dir)
                .map_err(|e| e.to_string())?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.to_string_lossy().ends_with(suffix));
            if let Some(p) = done {
                return Ok(p);
            }
            if Instant::now() > deadline {
                return Err(format!("no *{suffix} downloaded"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the browser with SIGKILL, as a phone's system kills an app:
    /// the browser processes started by this session's chromedriver, then
    /// the driver. Nothing is flushed.
    pub fn kill_browser(mut self) {
        kill_children(self.driver.id());
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }

    pub async fn close(mut self) {
        let _ = self.cmd("DELETE", "", Value::Null).await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A test that panicked never closed its session: the browser would
        // outlive the driver. Only while the driver runs is its pid its own.
        if matches!(self.driver.try_wait(), Ok(None)) {
            kill_children(self.driver.id());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// SIGKILLs the children of process `pid` (Linux: found in /proc; any of
/// its threads may have started them).
fn kill_children(pid: u32) {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    for task in tasks.filter_map(Result::ok) {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in children.split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", child]).status();
        }
    }
}

fn decode_base64(s: &str) -> Result<Vec<u8>, String> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let clean: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c).ok_or("bad base64")? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_round_trips_known_values() {
        assert_eq!(super::decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(super::decode_base64("aGk=").unwrap(), b"hi");
        assert_eq!(super::decode_base64("YWJj").unwrap(), b"abc");
    }
}
