//! The pay page as a driver meets it: in a real browser (headless Chromium
//! driven through chromedriver's W3C WebDriver API), the page shows the
//! session and the amount, and pressing the button pays from the wallet.
//! Without chromium and chromedriver it fails under CI and is skipped (and
//! says so) elsewhere; `.ci/run` installs them.

mod common;

use common::*;
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;

fn find(binary: &str, candidates: &[&str]) -> Option<String> {
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
struct Driver {
    child: std::process::Child,
    base: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Option<(Driver, String)> {
        let chromedriver = find(
            "chromedriver",
            &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"],
        );
        let chromium = find(
            "chromium",
            &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
        );
        let (Some(chromedriver), Some(chromium)) = (chromedriver, chromium) else {
            require::missing(
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
        };
        let status = format!("{}/status", driver.base);
        let status = &status;
        until(
            "chromedriver to come up",
            Duration::from_secs(10),
            || async move { http().get(status).send().await.is_ok() },
        )
        .await;
        Some((driver, chromium))
    }

    async fn post(&self, path: &str, body: Value) -> Value {
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

    async fn get(&self, path: &str) -> Value {
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
}

on_both_backends!(a_driver_pays_a_session_on_the_pay_page_in_a_browser);

async fn a_driver_pays_a_session_on_the_pay_page_in_a_browser(backend: Backend) {
    let Some((driver, chromium)) = Driver::start().await else {
        return;
    };
    let server = TestServer::start(backend).await;
    let admin = server.token("ops", "admin");
    let (user, token) = server.register("browser@example.com").await;
    let credit = json!({"amount": 5000, "currency": "NGN", "walletAddress": "0xB"});
    assert_eq!(
        server
            .api(
                "POST",
                &format!("/api/admin/users/{user}/wallet/credit"),
                Some(&admin),
                Some(credit)
            )
            .await
            .0,
        200
    );
    // An app session at the demo station through the payment API.
    let start = json!({"userId": user, "chargerId": "evliter-lagos-victoria-island", "walletAddress": "0xB", "chain": "ledger",
                       "expectedMaxCost": 1000, "connectorId": 1});
    let (status, body) = server
        .api("POST", "/api/v1/session/start", Some(&token), Some(start))
        .await;
    assert_eq!(status, 201, "{body}");
    let session_id = body["data"]["sessionId"].as_str().unwrap().to_owned();
    server
        .api(
            "PUT",
            "/api/charging/sessions/active/update",
            Some(&token),
            Some(json!({"batteryLevel": 60, "energyDelivered": 4.2})),
        )
        .await;
    let (status, body) = server
        .api(
            "POST",
            "/api/v1/session/stop",
            Some(&token),
            Some(json!({"userId": user, "sessionId": session_id})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // The link points at the public URL; the browser uses the test server's address.
    let link_id = body["data"]["paymentLinkId"].as_str().unwrap().to_owned();
    let page_url = server.http_url(&format!("/pay/{link_id}"));

    let session = driver
        .post("/session", json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     format!("--user-data-dir={}", tempfile::tempdir().unwrap().keep().display())]}}}}))
        .await;
    let sid = session["sessionId"].as_str().unwrap().to_owned();
    driver
        .post(&format!("/session/{sid}/url"), json!({"url": page_url}))
        .await;
    let element = |id: &'static str| {
        let sid = sid.clone();
        let driver = &driver;
        async move {
            let found = driver
                .post(
                    &format!("/session/{sid}/element"),
                    json!({"using": "css selector", "value": format!("#{id}")}),
                )
                .await;
            found
                .as_object()
                .unwrap()
                .values()
                .next()
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let text = |element_id: String| {
        let sid = sid.clone();
        let driver = &driver;
        async move {
            driver
                .get(&format!("/session/{sid}/element/{element_id}/text"))
                .await
                .as_str()
                .unwrap_or("")
                .to_owned()
        }
    };
    assert_eq!(text(element("amount").await).await, "693 NGN");
    assert_eq!(text(element("status").await).await, "pending");
    let title = driver.get(&format!("/session/{sid}/title")).await;
    assert_eq!(title, "Pay for your charging session");

    let button = element("pay").await;
    driver
        .post(&format!("/session/{sid}/element/{button}/click"), json!({}))
        .await;
    // The form posts and the answer page carries the notice; until it has
    // loaded there is no such element (`elements` answers an empty list).
    let (driver_ref, sid_ref, text) = (&driver, &sid, &text);
    let notice = eventually(
        "the pay page's notice",
        Duration::from_secs(10),
        || async move {
            let found = driver_ref
                .post(
                    &format!("/session/{sid_ref}/elements"),
                    json!({"using": "css selector", "value": "#notice"}),
                )
                .await;
            let id = found
                .as_array()?
                .first()?
                .as_object()?
                .values()
                .next()?
                .as_str()?
                .to_owned();
            let notice = text(id).await;
            (!notice.is_empty()).then_some(notice)
        },
    )
    .await;
    assert_eq!(notice, "Payment received. Thank you!");
    assert_eq!(text(element("status").await).await, "paid");
    let _ = http()
        .delete(format!("{}/session/{sid}", driver.base))
        .send()
        .await;

    // The wallet paid exactly once.
    let (_, wallet) = server
        .api(
            "GET",
            &format!("/api/v1/user/{user}/wallet"),
            Some(&token),
            None,
        )
        .await;
    let available = wallet["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["kind"] == "available")
        .unwrap()["balance"]
        .clone();
    assert_eq!(available, json!(4307));
    server.stop().await;
}
