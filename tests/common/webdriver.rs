//! A real headless Chromium (Debian's `chromium`), driven through Debian's
//! `chromedriver` with the W3C WebDriver protocol spoken directly over HTTP (reqwest):
//! enough for the Admin UI's tests — open a page, find, click and type, run a script,
//! switch into a frame, take a screenshot. Both processes die with the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Whether Chromium and its driver are installed (else the caller skips, except in CI).
pub fn available() -> bool {
    Path::new("/usr/bin/chromium").exists() && Path::new("/usr/bin/chromedriver").exists()
}

pub struct Browser {
    driver: Child,
    base: String,
    client: reqwest::Client,
    _profile: tempfile::TempDir,
    /// Where screenshots go.
    shots: PathBuf,
    pub taken: Vec<PathBuf>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes Chromium (whatever the test's runtime is doing, so
        // plain blocking HTTP); then the driver.
        use std::io::{Read, Write};
        let rest = self.base.trim_start_matches("http://");
        if let Some((host, path)) = rest.split_once('/')
            && let Ok(mut stream) = std::net::TcpStream::connect(host)
        {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                let _ = stream.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A found element.
#[derive(Clone, Debug)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver and a headless Chromium session with a window of `width` x
    /// `height`; screenshots go into `shots`.
    pub async fn start(width: u32, height: u32, shots: &Path) -> Browser {
        let client = reqwest::Client::new();
        // The port is free when picked but may be taken before chromedriver binds it
        // (another test's server or browser): then it listens on ::1 only, or exits.
        // A driver that has not answered within 15 s is replaced on a new port.
        let mut attempt = 0;
        let (driver, root) = loop {
            attempt += 1;
            let port = super::free_port();
            let mut command = Command::new("/usr/bin/chromedriver");
            command
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut driver = super::die_with_test(&mut command)
                .spawn()
                .expect("chromedriver starts");
            let root = format!("http://127.0.0.1:{port}");
            let started = Instant::now();
            let mut up = false;
            while started.elapsed() < Duration::from_secs(15) {
                if client.get(format!("{root}/status")).send().await.is_ok() {
                    up = true;
                    break;
                }
                if driver.try_wait().ok().flatten().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if up {
                break (driver, root);
            }
            let _ = driver.kill();
            let _ = driver.wait();
            assert!(attempt < 3, "chromedriver did not answer on three ports");
        };
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--disable-background-networking",
                    "--disable-extensions", "--no-first-run", "--disable-sync",
                    "--disable-component-update", "--disable-default-apps",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        }}});
        let answer: Value = client
            .post(format!("{root}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}"))
            .to_string();
        std::fs::create_dir_all(shots).unwrap();
        Browser {
            driver,
            base: format!("{root}/session/{session}"),
            client,
            _profile: profile,
            shots: shots.to_path_buf(),
            taken: Vec::new(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .client
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let answer: Value = req.send().await.unwrap().json().await.unwrap();
        if let Some(error) = answer["value"]["error"].as_str() {
            panic!(
                "WebDriver {method} {path}: {error}: {}",
                answer["value"]["message"]
            );
        }
        answer["value"].clone()
    }

    async fn try_call(&self, path: &str, body: Value) -> Option<Value> {
        let answer: Value = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        answer["value"]["error"]
            .is_null()
            .then(|| answer["value"].clone())
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    pub async fn set_size(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// The first element matching the CSS selector, waiting up to 10 s for it.
    pub async fn find(&self, css: &str) -> Element {
        self.find_within(css, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("no element {css} after 10 s"))
    }

    pub async fn find_within(&self, css: &str, wait: Duration) -> Option<Element> {
        let started = Instant::now();
        loop {
            let found = self
                .try_call("/element", json!({"using": "css selector", "value": css}))
                .await;
            if let Some(value) = found {
                return Some(Element(value[ELEMENT].as_str()?.to_string()));
            }
            if started.elapsed() > wait {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `[data-test="name"]`.
    pub async fn test_id(&self, name: &str) -> Element {
        self.find(&format!("[data-test=\"{name}\"]")).await
    }

    pub async fn click(&self, e: &Element) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{}/click", e.0),
            Some(json!({})),
        )
        .await;
    }

    pub async fn click_test(&self, name: &str) {
        let e = self.test_id(name).await;
        self.click(&e).await;
    }

    pub async fn type_into(&self, e: &Element, text: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{}/clear", e.0),
            Some(json!({})),
        )
        .await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{}/value", e.0),
            Some(json!({"text": text})),
        )
        .await;
    }

    pub async fn fill(&self, name: &str, text: &str) {
        let e = self.test_id(name).await;
        self.type_into(&e, text).await;
    }

    pub async fn text(&self, e: &Element) -> String {
        self.call(
            reqwest::Method::GET,
            &format!("/element/{}/text", e.0),
            None,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page; its result.
    pub async fn script(&self, script: &str, args: Vec<Value>) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Waits up to 10 s for `script` to return true.
    pub async fn wait_for(&self, what: &str, script: &str) {
        let started = Instant::now();
        loop {
            if self.script(script, vec![]).await == Value::Bool(true) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "waited 10 s for {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Switches into the frame element `e` (`None`: back to the page).
    pub async fn frame(&self, e: Option<&Element>) {
        let id = match e {
            Some(e) => json!({ELEMENT: e.0}),
            None => Value::Null,
        };
        self.call(reqwest::Method::POST, "/frame", Some(json!({"id": id})))
            .await;
    }

    /// A PNG of the window, written as `name.png` in the screenshot directory.
    pub async fn screenshot(&mut self, name: &str) {
        use base64::Engine;
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, bytes).unwrap();
        self.taken.push(path);
    }
}
