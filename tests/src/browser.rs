//! A real browser for the dashboard's tests and benchmark: Debian's headless
//! Chromium driven through ChromeDriver over the W3C WebDriver protocol.
//!
//! The client is our own, a few JSON calls over `reqwest`: the driver is a local
//! process on loopback speaking plain HTTP, and what the tests need is navigate,
//! find, click, type, read, run a script and take a screenshot. (fantoccini, the
//! maintained Rust client, insists on a TLS stack of its own and a second HTTP
//! client for a connection that never leaves the machine.)
//!
//! Chromium starts with the flags this machine's notes require (no sandbox as root,
//! no GPU, no background networking: the closed network refuses Google's hosts) and
//! a fresh profile in a temporary directory. Dropping the [`Browser`] ends the
//! session and kills the driver and its browser.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
    /// Where `shot` writes screenshots.
    pub artifacts: PathBuf,
}

/// An element found on the page.
#[derive(Debug, Clone)]
pub struct El(String);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Whether this machine can run the browser tests (Chromium and ChromeDriver are
/// installed by `make test`'s `test-deps`).
pub fn available() -> bool {
    Path::new(&chromium()).exists() && Path::new(&chromedriver()).exists()
}

fn chromium() -> String {
    std::env::var("FERRY_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

fn chromedriver() -> String {
    std::env::var("FERRY_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into())
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium session; screenshots go to
    /// `artifacts` (created).
    pub async fn start(artifacts: &Path) -> Browser {
        std::fs::create_dir_all(artifacts).expect("artifacts dir");
        let port = free_port();
        let log = std::fs::File::create(artifacts.join("chromedriver.log")).expect("driver log");
        let driver = Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await {
                if let Ok(v) = r.json::<Value>().await {
                    if v["value"]["ready"] == true {
                        break;
                    }
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::Builder::new()
            .prefix("ferry-chromium-")
            .tempdir()
            .expect("profile dir");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1400,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let r: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("new session body");
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"))
            .to_string();
        let b = Browser {
            driver,
            http,
            base,
            session,
            _profile: profile,
            artifacts: artifacts.to_path_buf(),
        };
        b.cmd(
            "POST",
            "/timeouts",
            json!({"script": 60_000, "pageLoad": 60_000}),
        )
        .await;
        b
    }

    async fn try_cmd(&self, method: &str, path: &str, body: Value) -> Result<Value, Value> {
        let url = format!("{}/session/{}{}", self.base, self.session, path);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let resp = req.send().await.map_err(|e| json!(e.to_string()))?;
        let ok = resp.status().is_success();
        let v: Value = resp.json().await.map_err(|e| json!(e.to_string()))?;
        if ok {
            Ok(v["value"].clone())
        } else {
            Err(v["value"].clone())
        }
    }

    async fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        self.try_cmd(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({ "url": url })).await;
    }

    /// The first element matching `css`, if any.
    pub async fn try_find(&self, css: &str) -> Option<El> {
        let v = self
            .try_cmd(
                "POST",
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await
            .ok()?;
        v[ELEMENT].as_str().map(|s| El(s.to_string()))
    }

    /// Every element matching `css`.
    pub async fn find_all(&self, css: &str) -> Vec<El> {
        let v = self
            .cmd(
                "POST",
                "/elements",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(|s| El(s.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits (with a deadline) for an element matching `css`.
    pub async fn find(&self, css: &str) -> El {
        self.wait(
            &format!("an element `{css}`"),
            Duration::from_secs(30),
            || self.try_find(css),
        )
        .await
    }

    /// Polls `cond` every 100 ms until it yields `Some`; panics after `timeout`
    /// with `what` (and leaves a screenshot named after the failure).
    pub async fn wait<T, F, Fut>(&self, what: &str, timeout: Duration, mut cond: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = cond().await {
                return v;
            }
            if Instant::now() > deadline {
                self.shot("timeout").await;
                panic!("timed out after {timeout:?} waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the page's text contains `text`.
    pub async fn wait_text(&self, text: &str, timeout: Duration) {
        self.wait(&format!("the page to say {text:?}"), timeout, || async {
            self.body_text().await.contains(text).then_some(())
        })
        .await
    }

    pub async fn click(&self, el: &El) {
        self.cmd("POST", &format!("/element/{}/click", el.0), json!({}))
            .await;
    }

    /// Clicks the first element matching `css` (waiting for it).
    pub async fn click_css(&self, css: &str) {
        let el = self.find(css).await;
        self.click(&el).await;
    }

    pub async fn type_into(&self, el: &El, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{}/value", el.0),
            json!({ "text": text }),
        )
        .await;
    }

    pub async fn clear(&self, el: &El) {
        self.cmd("POST", &format!("/element/{}/clear", el.0), json!({}))
            .await;
    }

    pub async fn text(&self, el: &El) -> String {
        self.try_cmd("GET", &format!("/element/{}/text", el.0), json!({}))
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    pub async fn body_text(&self) -> String {
        match self.try_find("body").await {
            Some(b) => self.text(&b).await,
            None => String::new(),
        }
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub async fn exec(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": args}),
        )
        .await
    }

    /// Runs `script` whose last argument is the callback to call with the result.
    pub async fn exec_async(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/async",
            json!({"script": script, "args": args}),
        )
        .await
    }

    /// Selects the option with value `value` of the `<select>` matching `css` and
    /// fires its change event (as a user's pick does).
    pub async fn select(&self, css: &str, value: &str) {
        self.find(css).await;
        let ok = self
            .exec(
                "const s = document.querySelector(arguments[0]);
                 if (![...s.options].some(o => o.value === arguments[1])) return false;
                 s.value = arguments[1];
                 s.dispatchEvent(new Event('change', {bubbles: true}));
                 return true;",
                json!([css, value]),
            )
            .await;
        assert_eq!(ok, true, "{css} has no option {value}");
    }

    /// A PNG of the viewport, kept as `<artifacts>/<name>.png`.
    pub async fn shot(&self, name: &str) -> PathBuf {
        let path = self.artifacts.join(format!("{name}.png"));
        if let Ok(v) = self.try_cmd("GET", "/screenshot", json!({})).await {
            if let Some(b64) = v.as_str() {
                if let Ok(png) = base64::engine::general_purpose::STANDARD.decode(b64) {
                    let _ = std::fs::write(&path, png);
                }
            }
        }
        path
    }

    /// Runs axe-core (from web/node_modules, installed by `make web-deps`) on the
    /// page; returns the violations of impact `serious` or `critical`, each as
    /// "rule: help (n nodes: selectors)".
    pub async fn axe_serious(&self) -> Vec<String> {
        let axe = crate::workspace().join("web/node_modules/axe-core/axe.min.js");
        let src = std::fs::read_to_string(&axe).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (make web-deps installs it from the npm registry)",
                axe.display()
            )
        });
        self.exec(&src, json!([])).await;
        let v = self
            .exec_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, {resultTypes: ['violations']})
                   .then(r => done(r.violations
                     .filter(v => v.impact === 'serious' || v.impact === 'critical')
                     .map(v => v.id + ': ' + v.help + ' (' + v.nodes.length + ' nodes: '
                       + v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', ') + ')')))
                   .catch(e => done(['axe failed: ' + e]));",
                json!([]),
            )
            .await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // End the session (closes Chromium) on a thread of its own: this may run
        // inside the test's runtime, which must not block on itself.
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    let c = reqwest::Client::builder()
                        .no_proxy()
                        .timeout(Duration::from_secs(10))
                        .build();
                    if let Ok(c) = c {
                        let _ = c.delete(url).send().await;
                    }
                });
            }
        })
        .join();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
