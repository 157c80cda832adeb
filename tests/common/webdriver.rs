//! A real browser for the tests: headless Chromium driven through
//! chromedriver's W3C WebDriver API over HTTP. Without chromium and
//! chromedriver a test fails under CI and is skipped (and says so)
//! elsewhere (see [`super::require`]).

use super::{eventually, http, until};
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;

fn find_binary(binary: &str, candidates: &[&str]) -> Option<String> {
    std::env::var(binary.to_uppercase().replace('-', "_"))
        .ok()
        .or_else(|| {
            candidates
                .iter()
                .find(|p| std::path::Path::new(p).exists())
                .map(|p| p.to_string())
        })
}

/// A chromedriver on a free port, killed when dropped.
pub struct Driver {
    child: std::process::Child,
    pub base: String,
    chromium: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    /// A running chromedriver, or None (after [`super::require::missing`])
    /// when chromium or chromedriver is not installed.
    pub async fn start() -> Option<Driver> {
        let chromedriver = find_binary(
            "chromedriver",
            &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"],
        );
        let chromium = find_binary(
            "chromium",
            &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
        );
        let (Some(chromedriver), Some(chromium)) = (chromedriver, chromium) else {
            super::require::missing(
                "browser",
                "chromium and chromedriver are not installed (Debian: chromium chromium-driver)",
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            chromium,
        };
        let status = format!("{}/status", driver.base);
        let status = &status;
        until(
            "chromedriver to come up",
            Duration::from_secs(10),
            || async move { http().get(status).send().await.is_ok() },
        )
        .await;
        Some(driver)
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let response = http()
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let value: Value = response.json().await.unwrap();
        assert!(
            value["value"].get("error").is_none(),
            "WebDriver {path}: {value}"
        );
        value["value"].clone()
    }

    pub async fn get(&self, path: &str) -> Value {
        let value: Value = http()
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        value["value"].clone()
    }

    /// A fresh headless browser window of `width` × `height`.
    pub async fn browser(&self, width: u32, height: u32) -> Browser<'_> {
        let session = self
            .post("/session", json!({"capabilities": {"alwaysMatch": {"browserName": "chrome",
                "goog:loggingPrefs": {"browser": "ALL"}, "goog:chromeOptions": {
                "binary": self.chromium,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         format!("--window-size={width},{height}"),
                         format!("--user-data-dir={}", tempfile::tempdir().unwrap().keep().display())]}}}}))
            .await;
        Browser {
            driver: self,
            id: session["sessionId"].as_str().unwrap().to_owned(),
        }
    }
}

/// One browser session.
pub struct Browser<'d> {
    driver: &'d Driver,
    pub id: String,
}

fn element_id(found: &Value) -> Option<String> {
    found
        .as_object()?
        .values()
        .next()?
        .as_str()
        .map(str::to_owned)
}

impl Browser<'_> {
    pub async fn goto(&self, url: &str) {
        self.driver
            .post(&format!("/session/{}/url", self.id), json!({ "url": url }))
            .await;
    }

    pub async fn title(&self) -> String {
        self.driver
            .get(&format!("/session/{}/title", self.id))
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The elements `css` matches now (none is not an error).
    pub async fn find_all(&self, css: &str) -> Vec<String> {
        let found = self
            .driver
            .post(
                &format!("/session/{}/elements", self.id),
                json!({"using": "css selector", "value": css}),
            )
            .await;
        found
            .as_array()
            .map(|a| a.iter().filter_map(element_id).collect())
            .unwrap_or_default()
    }

    /// The first element `css` matches, waiting up to 10 s for one.
    pub async fn find(&self, css: &str) -> String {
        eventually(
            &format!("an element matching {css}"),
            Duration::from_secs(10),
            || async move { self.find_all(css).await.into_iter().next() },
        )
        .await
    }

    pub async fn text(&self, element: &str) -> String {
        // An element replaced meanwhile (a live update) reads as empty.
        let value: Value = http()
            .get(format!(
                "{}/session/{}/element/{element}/text",
                self.driver.base, self.id
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        value["value"].as_str().unwrap_or_default().to_owned()
    }

    /// Waits up to `within` for the first element matching `css` to show a
    /// text that `check` accepts, and returns that text.
    pub async fn wait_text(
        &self,
        css: &str,
        within: Duration,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let check = &check;
        eventually(
            &format!("{css} to show the expected text"),
            within,
            || async move {
                let element = self.find_all(css).await.into_iter().next()?;
                let text = self.text(&element).await;
                check(&text).then_some(text)
            },
        )
        .await
    }

    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.driver
            .post(
                &format!("/session/{}/element/{element}/click", self.id),
                json!({}),
            )
            .await;
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.driver
            .post(
                &format!("/session/{}/element/{element}/value", self.id),
                json!({ "text": text }),
            )
            .await;
    }

    /// Runs `script` (a function body) in the page and returns its value.
    pub async fn execute(&self, script: &str) -> Value {
        self.driver
            .post(
                &format!("/session/{}/execute/sync", self.id),
                json!({ "script": script, "args": [] }),
            )
            .await
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.driver
            .post(
                &format!("/session/{}/window/rect", self.id),
                json!({ "width": width, "height": height }),
            )
            .await;
    }

    /// Saves a PNG of the window at `path` (directories created).
    pub async fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine;
        let png = self
            .driver
            .get(&format!("/session/{}/screenshot", self.id))
            .await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("a base64 screenshot"))
            .expect("screenshot decodes");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, bytes).unwrap();
    }

    /// What the page wrote to the browser console at level SEVERE (script
    /// errors, refused loads, CSP violations).
    pub async fn console_errors(&self) -> Vec<String> {
        let log = self
            .driver
            .post(
                &format!("/session/{}/se/log", self.id),
                json!({ "type": "browser" }),
            )
            .await;
        log.as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter(|e| e["level"] == "SEVERE")
                    .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub async fn close(self) {
        let _ = http()
            .delete(format!("{}/session/{}", self.driver.base, self.id))
            .send()
            .await;
    }
}
