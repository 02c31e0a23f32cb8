//! Headless Chromium driven over WebDriver, for the tests of the pages a
//! citizen uses: Debian's `chromium` and `chromium-driver`, the `fantoccini`
//! client, and a blocking API (the tests are plain `#[test]` functions; do
//! not call it from inside a tokio runtime).
//!
//! Each `Browser` is its own `chromedriver` (on a free port) with its own
//! fresh profile; downloads land in the directory given to `start`. The
//! machine's network is closed, so everything Chromium would fetch on its own
//! (updates, sync, safe browsing, QUIC probes) is turned off.
//!
//! A missing Chromium or chromedriver fails the test: nothing is skipped.

use std::cell::Cell;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

pub const DESKTOP: (u32, u32) = (1280, 900);
pub const PHONE: (u32, u32) = (390, 844);

/// How long one WebDriver command may take before the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Panics, saying what to install, unless Chromium and its driver are there.
pub fn require_chromium() {
    for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: browser tests need Debian's `{package}` package; run \
             `bash tests/run.sh` (which installs it) or `apt-get install -y chromium chromium-driver`"
        );
    }
}

/// A cookie as the browser holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Cookie {
    pub name: String,
    pub value: String,
    pub domain: String,
    pub path: String,
    pub secure: bool,
    pub http_only: bool,
    /// "Strict", "Lax" or "None" as Chromium reports it.
    pub same_site: Option<String>,
    /// Unix seconds; `None` for a session cookie.
    pub expiry: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    Desktop,
    Phone,
}

pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    /// The profile (and chromedriver's log); removed after Chromium has quit.
    profile: tempfile::TempDir,
    download_dir: PathBuf,
    width: Cell<Width>,
    /// Whether the viewport is emulated (DevTools) rather than the window's.
    emulated: Cell<bool>,
    /// Downloads `wait_for_download` has already returned.
    downloads_seen: std::cell::RefCell<Vec<PathBuf>>,
}

/// A WebDriver endpoint fantoccini has no method for (chromedriver's CDP
/// bridge and log), relative to the session.
#[derive(Debug)]
struct Raw {
    method: http::Method,
    path: String,
    body: Option<Value>,
}

impl WebDriverCompatibleCommand for Raw {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/{}",
            session_id.unwrap_or_default(),
            self.path
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            self.method.clone(),
            self.body.as_ref().map(Value::to_string),
        )
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session whose downloads
    /// land in `download_dir` (created if missing), at desktop width.
    pub fn start(download_dir: &Path) -> Browser {
        Self::launch(download_dir, None)
    }

    /// As `start`, with the browser's languages (`Accept-Language` and
    /// `navigator.languages`), e.g. `"ru-RU,ru"`.
    pub fn start_with_language(download_dir: &Path, languages: &str) -> Browser {
        Self::launch(download_dir, Some(languages))
    }

    fn launch(download_dir: &Path, languages: Option<&str>) -> Browser {
        require_chromium();
        std::fs::create_dir_all(download_dir).unwrap();
        let download_dir = download_dir.canonicalize().unwrap();
        let profile = tempfile::Builder::new()
            .prefix("muhr-chromium-")
            .tempdir()
            .unwrap();
        let log = profile.path().join("chromedriver.log");
        let user_data = profile.path().join("user-data");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();

        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-extensions".into(),
            "--disable-default-apps".into(),
            "--disable-client-side-phishing-detection".into(),
            "--disable-domain-reliability".into(),
            "--no-pings".into(),
            "--password-store=basic".into(),
            format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
            format!("--user-data-dir={}", user_data.display()),
        ];
        let mut prefs = json!({
            "download.default_directory": download_dir.to_str().unwrap(),
            "download.prompt_for_download": false,
            "download.directory_upgrade": true,
            // A page may offer more than one file without a permission prompt.
            "profile.default_content_setting_values.automatic_downloads": 1,
            "safebrowsing.enabled": false,
        });
        if let Some(languages) = languages {
            args.push(format!(
                "--lang={}",
                languages.split(',').next().unwrap_or(languages)
            ));
            prefs["intl.accept_languages"] = json!(languages);
        }
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args, "prefs": prefs},
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let caps: Capabilities = caps;

        // The free port may be taken between the probe and chromedriver's
        // bind: try a few.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = super::free_port();
            let mut driver = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {CHROMEDRIVER}: {e}"));
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut up = false;
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    up = true;
                    break;
                }
                if driver.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if !up {
                kill(&mut driver);
                last_error = format!("chromedriver did not listen on port {port}");
                continue;
            }
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            let session = rt.block_on(async {
                tokio::time::timeout(
                    COMMAND_TIMEOUT,
                    ClientBuilder::new(connector)
                        .capabilities(caps.clone())
                        .connect(&format!("http://127.0.0.1:{port}/")),
                )
                .await
            });
            match session {
                Ok(Ok(client)) => {
                    let browser = Browser {
                        rt,
                        client: Some(client),
                        driver,
                        profile,
                        download_dir,
                        width: Cell::new(Width::Desktop),
                        emulated: Cell::new(false),
                        downloads_seen: Default::default(),
                    };
                    browser.allow_downloads();
                    browser.set_desktop_width();
                    return browser;
                }
                Ok(Err(e)) => last_error = format!("no WebDriver session: {e}"),
                Err(_) => last_error = "no WebDriver session within a minute".into(),
            }
            kill(&mut driver);
            break;
        }
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        panic!(
            "headless Chromium did not start: {last_error}\nchromedriver log (last lines):\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("the browser has quit")
    }

    /// Runs one WebDriver exchange, failing the test on error or timeout.
    fn run<T, E: std::fmt::Display>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, E>>,
    ) -> T {
        match self
            .rt
            .block_on(async { tokio::time::timeout(COMMAND_TIMEOUT, f).await })
        {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => panic!("browser: {what}: {e}"),
            Err(_) => panic!("browser: {what}: no answer within {COMMAND_TIMEOUT:?}"),
        }
    }

    fn try_run<T, E>(&self, f: impl std::future::Future<Output = Result<T, E>>) -> Option<T> {
        self.rt
            .block_on(async { tokio::time::timeout(COMMAND_TIMEOUT, f).await })
            .ok()?
            .ok()
    }

    fn raw(&self, method: http::Method, path: &str, body: Option<Value>) -> Value {
        let what = format!("{method} {path}");
        self.run(
            &what,
            self.client().issue_cmd(Raw {
                method,
                path: path.to_string(),
                body,
            }),
        )
    }

    /// A Chrome DevTools Protocol command on the current page (chromedriver's
    /// `goog/cdp/execute`), e.g. `("Emulation.setDeviceMetricsOverride", {...})`.
    pub fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.raw(
            http::Method::POST,
            "goog/cdp/execute",
            Some(json!({"cmd": cmd, "params": params})),
        )
    }

    /// Downloads go to `download_dir` without a prompt by the profile's
    /// preferences and, as well, by DevTools `Browser.setDownloadBehavior`
    /// (in Chromium 156 `--headless=new` either alone works; with neither,
    /// files land in `~/Downloads`): the harness does not depend on how a
    /// later Chromium treats preferences in headless mode.
    fn allow_downloads(&self) {
        self.cdp(
            "Browser.setDownloadBehavior",
            json!({"behavior": "allow", "downloadPath": self.download_dir.to_str().unwrap(),
                   "eventsEnabled": false}),
        );
    }

    pub fn download_dir(&self) -> &Path {
        &self.download_dir
    }

    pub fn goto(&self, url: &str) {
        self.run(&format!("goto {url}"), self.client().goto(url))
    }

    /// The address of the page shown.
    pub fn url(&self) -> String {
        self.run("current url", self.client().current_url())
            .to_string()
    }

    /// The page's HTML as it is now.
    pub fn source(&self) -> String {
        self.run("page source", self.client().source())
    }

    pub fn title(&self) -> String {
        self.run("title", self.client().title())
    }

    fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.run(
            &format!("find `{css}`"),
            self.client().find(Locator::Css(css)),
        )
    }

    /// Whether an element matches `css` now.
    pub fn exists(&self, css: &str) -> bool {
        !self
            .run(
                &format!("find all `{css}`"),
                self.client().find_all(Locator::Css(css)),
            )
            .is_empty()
    }

    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.run(&format!("click `{css}`"), e.click())
    }

    /// Clears an input and types `text` into it.
    pub fn fill(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.run(&format!("clear `{css}`"), e.clear());
        self.run(&format!("type into `{css}`"), e.send_keys(text))
    }

    /// Chooses the `<option>` with this value in a `<select>`.
    pub fn select(&self, css: &str, value: &str) {
        let e = self.find(css);
        self.run(
            &format!("select {value} in `{css}`"),
            e.select_by_value(value),
        )
    }

    /// The rendered text of the first element matching `css`.
    pub fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.run(&format!("text of `{css}`"), e.text())
    }

    /// An attribute of the first element matching `css`.
    pub fn attr(&self, css: &str, name: &str) -> Option<String> {
        let e = self.find(css);
        self.run(&format!("attribute {name} of `{css}`"), e.attr(name))
    }

    /// Waits until an element matches `css`.
    pub fn wait_for(&self, css: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.exists(css) {
            assert!(
                Instant::now() < deadline,
                "browser: no `{css}` after {timeout:?} on {}\n{}",
                self.url(),
                self.visible_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the first element matching `css` has text containing
    /// `contains`; that text.
    pub fn wait_for_text(&self, css: &str, contains: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(e) = self.try_run(self.client().find(Locator::Css(css)))
                && let Some(t) = self.try_run(e.text())
            {
                if t.contains(contains) {
                    return t;
                }
                last = Some(t);
            }
            assert!(
                Instant::now() < deadline,
                "browser: `{css}` did not come to contain {contains:?} after {timeout:?} on {} \
                 (its text: {last:?})",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the page's address contains `contains`; the address.
    pub fn wait_for_url(&self, contains: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let url = self.url();
            if url.contains(contains) {
                return url;
            }
            assert!(
                Instant::now() < deadline,
                "browser: the address did not come to contain {contains:?} after {timeout:?}: {url}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The body's rendered text (for failure messages).
    pub fn visible_text(&self) -> String {
        self.try_run(self.client().execute(
            "return document.body ? document.body.innerText : ''",
            vec![],
        ))
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
    }

    /// Runs `js` as the body of a function (`arguments[i]` are `args`);
    /// what it returns.
    pub fn execute(&self, js: &str, args: Vec<Value>) -> Value {
        self.run("execute script", self.client().execute(js, args))
    }

    /// Runs `js` as an async function body; it finishes by calling
    /// `arguments[arguments.length - 1](result)`.
    pub fn execute_async(&self, js: &str, args: Vec<Value>) -> Value {
        self.run(
            "execute async script",
            self.client().execute_async(js, args),
        )
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self, path: &Path) {
        let png = self.run("screenshot", self.client().screenshot());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// A PNG of the whole page, below the fold included (DevTools
    /// `Page.captureScreenshot` beyond the viewport).
    pub fn screenshot_full_page(&self, path: &Path) {
        let size = self.execute(
            "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]",
            vec![],
        );
        let w = size[0].as_f64().unwrap_or(DESKTOP.0 as f64);
        let h = size[1].as_f64().unwrap_or(DESKTOP.1 as f64);
        let shot = self.cdp(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true,
                   "clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}}),
        );
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("a screenshot"))
            .unwrap();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    pub fn width(&self) -> Width {
        self.width.get()
    }

    /// A phone's viewport: 390 × 844 CSS pixels (`window.innerWidth` is 390).
    pub fn set_phone_width(&self) {
        self.set_viewport(PHONE);
        self.width.set(Width::Phone);
    }

    /// A desktop window: 1280 × 900.
    pub fn set_desktop_width(&self) {
        self.set_viewport(DESKTOP);
        self.width.set(Width::Desktop);
    }

    /// The viewport (what the page sees as `innerWidth` × `innerHeight`) is
    /// made `w` × `h` by sizing the window: headless Chromium has no minimum
    /// window width, but keeps room for a toolbar it does not draw, so the
    /// height is corrected once measured. Should the page not see the width
    /// asked for, the viewport is emulated through DevTools instead.
    fn set_viewport(&self, (w, h): (u32, u32)) {
        if self.emulated.get() {
            self.cdp("Emulation.clearDeviceMetricsOverride", json!({}));
            self.emulated.set(false);
        }
        let resize = |ww: u32, wh: u32| {
            self.run(
                &format!("window size {ww}x{wh}"),
                self.client().set_window_size(ww, wh),
            )
        };
        resize(w, h);
        let (iw, ih) = self.inner_size();
        if iw == w && ih != h && ih > 0 {
            resize(w, (h + h).saturating_sub(ih));
        }
        let (iw, ih) = self.inner_size();
        if (iw, ih) != (w, h) {
            self.cdp(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": w, "height": h, "deviceScaleFactor": 1, "mobile": false}),
            );
            self.emulated.set(true);
            assert_eq!(
                self.inner_size(),
                (w, h),
                "browser: the viewport cannot be made {w}x{h}"
            );
        }
    }

    /// `window.innerWidth` and `window.innerHeight` of the page shown.
    pub fn inner_size(&self) -> (u32, u32) {
        let v = self.execute("return [window.innerWidth, window.innerHeight]", vec![]);
        (
            v[0].as_u64().unwrap_or(0) as u32,
            v[1].as_u64().unwrap_or(0) as u32,
        )
    }

    /// `window.innerWidth` of the page shown.
    pub fn inner_width(&self) -> u32 {
        self.inner_size().0
    }

    /// Writes `<dir>/<name>-desktop.png` and `<dir>/<name>-phone.png`;
    /// the browser is left at the width it had.
    pub fn screenshot_both(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let before = self.width();
        let desktop = dir.join(format!("{name}-desktop.png"));
        let phone = dir.join(format!("{name}-phone.png"));
        self.set_desktop_width();
        self.screenshot(&desktop);
        self.set_phone_width();
        self.screenshot(&phone);
        match before {
            Width::Desktop => self.set_desktop_width(),
            Width::Phone => self.set_phone_width(),
        }
        (desktop, phone)
    }

    /// Waits until `dir` holds a complete download ending in `.extension`
    /// (no `.crdownload` pending) that this method has not returned before;
    /// its path.
    pub fn wait_for_download(&self, dir: &Path, extension: &str, timeout: Duration) -> PathBuf {
        let path = wait_for_new_download(dir, extension, timeout, &self.downloads_seen.borrow());
        self.downloads_seen.borrow_mut().push(path.clone());
        path
    }

    /// What the page logged (console messages, CSP violations, failed
    /// loads) since the last call: `(level, message)`, level being
    /// `SEVERE`, `WARNING`, `INFO` or `DEBUG`. Reading empties the log.
    pub fn console_log(&self) -> Vec<(String, String)> {
        let entries = self.raw(
            http::Method::POST,
            "se/log",
            Some(json!({"type": "browser"})),
        );
        entries
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        (
                            e["level"].as_str().unwrap_or_default().to_string(),
                            e["message"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The `SEVERE` entries of `console_log` (errors, CSP violations).
    pub fn console_errors(&self) -> Vec<String> {
        self.console_log()
            .into_iter()
            .filter(|(level, _)| level == "SEVERE")
            .map(|(_, m)| m)
            .collect()
    }

    /// The cookies visible to the page shown (HttpOnly ones included).
    pub fn cookies(&self) -> Vec<Cookie> {
        let all = self.raw(http::Method::GET, "cookie", None);
        all.as_array()
            .map(|a| {
                a.iter()
                    .map(|c| Cookie {
                        name: c["name"].as_str().unwrap_or_default().into(),
                        value: c["value"].as_str().unwrap_or_default().into(),
                        domain: c["domain"].as_str().unwrap_or_default().into(),
                        path: c["path"].as_str().unwrap_or_default().into(),
                        secure: c["secure"].as_bool().unwrap_or(false),
                        http_only: c["httpOnly"].as_bool().unwrap_or(false),
                        same_site: c["sameSite"].as_str().map(str::to_string),
                        expiry: c["expiry"].as_u64(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Ends the session (Chromium quits) and stops chromedriver.
    pub fn quit(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), client.close()).await
            });
        }
        kill(&mut self.driver);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Stops a chromedriver and whatever of its process group is left (the
/// Chromium it started, if the session did not end).
fn kill(driver: &mut Child) {
    let pid = driver.id() as i32;
    if driver.try_wait().ok().flatten().is_none() {
        let _ = driver.kill();
    }
    let _ = driver.wait();
    // SAFETY: signals the process group this test created (process_group(0)
    // made chromedriver its leader); nothing else is in it.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

/// Waits until `dir` holds a complete download ending in `.extension` (no
/// `.crdownload` pending); the newest.
pub fn wait_for_download(dir: &Path, extension: &str, timeout: Duration) -> PathBuf {
    wait_for_new_download(dir, extension, timeout, &[])
}

fn wait_for_new_download(
    dir: &Path,
    extension: &str,
    timeout: Duration,
    seen: &[PathBuf],
) -> PathBuf {
    let suffix = format!(".{}", extension.trim_start_matches('.'));
    let deadline = Instant::now() + timeout;
    loop {
        let mut complete: Vec<(SystemTime, PathBuf)> = Vec::new();
        let mut pending = false;
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.ends_with(".crdownload") || name.starts_with(".com.google.Chrome.") {
                pending = true;
            } else if name.ends_with(&suffix) && !seen.contains(&entry.path()) {
                let modified = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                complete.push((modified, entry.path()));
            }
        }
        if !pending && let Some((_, path)) = complete.into_iter().max() {
            return path;
        }
        assert!(
            Instant::now() < deadline,
            "no complete *{suffix} download in {} after {timeout:?}; it holds: {:?}",
            dir.display(),
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name())
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Width and height of a PNG, from its IHDR chunk.
pub fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(
        png.len() >= 24 && png.starts_with(b"\x89PNG\r\n\x1a\n") && &png[12..16] == b"IHDR",
        "not a PNG"
    );
    (
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        u32::from_be_bytes(png[20..24].try_into().unwrap()),
    )
}
