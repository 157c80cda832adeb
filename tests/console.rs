//! The operator console in a real browser (headless Chromium through
//! chromedriver), the walk-through of the README: an operator made with
//! `csms user` logs in; a charger connects and its connector goes to
//! Charging on the open page without a reload; a session's energy rises;
//! a Reset is sent and the charger's answer shown; an idTag is blocked and
//! the charger's next Authorize is refused. Screenshots of the main pages
//! are saved under `target/console-screenshots/` for a person to look at.
//! One backend (SQLite): the pages read through the same API as the API
//! tests, which run on both.

mod common;

use common::webdriver::{Browser, Driver};
use common::*;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots")
}

/// Creates an operator with the real binary's `csms user`, as the README says.
fn make_operator(database_url: &str, email: &str, password: &str) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_csms"))
        .args([
            "--database-url",
            database_url,
            "user",
            "--email",
            email,
            "--password",
            password,
            "--role",
            "admin",
        ])
        .env_remove("CSMS_DATABASE_URL")
        .env_remove("CSMS_USER_PASSWORD")
        .output()
        .expect("csms user runs");
    assert!(
        output.status.success(),
        "csms user: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains(email) && printed.contains("admin"),
        "{printed}"
    );
}

/// Marks the page so a reload (which would clear it) is noticed.
async fn mark_page(browser: &Browser<'_>) {
    browser.execute("window.__notReloaded = true;").await;
}

async fn assert_not_reloaded(browser: &Browser<'_>) {
    let marker = browser
        .execute("return window.__notReloaded === true;")
        .await;
    assert_eq!(marker, json!(true), "the page was reloaded");
}

async fn goto_view(browser: &Browser<'_>, hash: &str) {
    // A hash change, as following a link does: the page is not reloaded.
    browser
        .execute(&format!("location.hash = {};", json!(hash)))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_watches_a_charger_charge_and_acts_on_it_in_a_browser() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let server = TestServer::start(Backend::Sqlite).await;
    make_operator(&server.db.url, "ops@example.com", "console-pass-1");
    let base = server.http_url("/");

    let browser = driver.browser(1280, 900).await;
    browser.goto(&base).await;
    assert_eq!(browser.title().await, "csms console");
    // A wrong password is refused on the form.
    browser.type_into("#login-email", "ops@example.com").await;
    browser
        .type_into("#login-password", "not-the-password")
        .await;
    browser.click("#login-submit").await;
    browser
        .wait_text("#login-error", WAIT, |t| {
            t.contains("Wrong email or password")
        })
        .await;
    browser.screenshot(&shots().join("01-login.png")).await;
    browser
        .execute("document.getElementById('login-password').value = '';")
        .await;
    browser.type_into("#login-password", "console-pass-1").await;
    browser.click("#login-submit").await;
    browser.find("table#chargers").await;
    browser
        .wait_text("#live-state", WAIT, |t| t == "Live")
        .await;
    mark_page(&browser).await;

    // A driver and their idTag, made on the Users and idTags pages.
    goto_view(&browser, "#/users").await;
    browser.type_into("#user-id", "driver-1").await;
    browser.type_into("#user-name", "Driver 1").await;
    browser.click("#user-form button[type=submit]").await;
    browser
        .wait_text("main h1", WAIT, |t| t == "User driver-1")
        .await;
    goto_view(&browser, "#/id-tags").await;
    browser.type_into("#tag-idTag", "TAG-0001").await;
    browser.type_into("#tag-userId", "driver-1").await;
    browser.click("#tag-form button[type=submit]").await;
    browser
        .wait_text(r#"tr[data-tag="TAG-0001"] .tag-status"#, WAIT, |t| {
            t == "Accepted"
        })
        .await;
    goto_view(&browser, "#/chargers").await;
    browser.find("table#chargers").await;

    // A charger connects and boots: its row appears with what it told.
    let mut charger = TestCharger::connect(&server.ws_url("CP-CONSOLE")).await;
    assert_eq!(charger.boot().await["status"], "Accepted");
    let row = r#"tr[data-charger="CP-CONSOLE"]"#;
    browser
        .wait_text(&format!("{row} .conn"), WAIT, |t| t == "online")
        .await;
    browser
        .wait_text(&format!("{row} .model"), WAIT, |t| {
            t == "TestVendor / TestModel"
        })
        .await;
    let status = |connector: u32, status: &str| json!({"connectorId": connector, "errorCode": "NoError", "status": status});
    charger
        .call("StatusNotification", status(1, "Available"))
        .await;
    let badge = format!(r#"{row} [data-connector="1"]"#);
    browser
        .wait_text(&badge, WAIT, |t| t == "1: Available")
        .await;
    // A remote start from the charger's page, with the driver's tag.
    goto_view(&browser, "#/chargers/CP-CONSOLE").await;
    browser
        .click(r#"#command option[value="RemoteStartTransaction"]"#)
        .await;
    browser.type_into("#cmd-idTag", "TAG-0001").await;
    browser.click("#command-send").await;
    let (message_id, action, payload) = charger.expect_call().await;
    assert_eq!(
        (action.as_str(), &payload),
        ("RemoteStartTransaction", &json!({"idTag": "TAG-0001"}))
    );
    charger
        .reply(&message_id, json!({"status": "Accepted"}))
        .await;
    let answer = browser
        .wait_text("#command-answer", WAIT, |t| t.contains("Accepted"))
        .await;
    assert!(answer.starts_with("RemoteStartTransaction:"), "{answer}");
    goto_view(&browser, "#/chargers").await;
    browser
        .wait_text(&badge, WAIT, |t| t == "1: Available")
        .await;
    charger
        .call("StatusNotification", status(1, "Preparing"))
        .await;
    charger
        .call("Authorize", json!({"idTag": "TAG-0001"}))
        .await;
    let started = charger
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "TAG-0001", "meterStart": 10000, "timestamp": chrono::Utc::now().to_rfc3339()}),
        )
        .await;
    assert_eq!(started["idTagInfo"]["status"], "Accepted");
    let tx = started["transactionId"].as_i64().unwrap();
    charger
        .call("StatusNotification", status(1, "Charging"))
        .await;
    charger.call("Heartbeat", json!({})).await;
    // Within a second of the change, on the same page.
    browser
        .wait_text(&badge, Duration::from_secs(1), |t| t == "1: Charging")
        .await;
    browser
        .wait_text(&format!("{row} .heartbeat"), WAIT, |t| t != "—")
        .await;
    assert_not_reloaded(&browser).await;
    browser.screenshot(&shots().join("02-chargers.png")).await;

    // The session's energy rises on the sessions page as MeterValues come.
    let (_, active) = server
        .api(
            "GET",
            "/api/charging/sessions/active",
            Some(&server.token("driver-1", "driver")),
            None,
        )
        .await;
    let session_id = active["session"]["id"].as_str().unwrap().to_owned();
    goto_view(&browser, "#/sessions").await;
    let energy = format!(r#"tr[data-session="{session_id}"] .energy"#);
    browser.wait_text(&energy, WAIT, |t| t == "0.000 kWh").await;
    for (minute, wh, shown) in [(1, 11500.0, "1.500 kWh"), (2, 13200.0, "3.200 kWh")] {
        let at = (chrono::Utc::now() + chrono::Duration::seconds(minute)).to_rfc3339();
        charger
            .call(
                "MeterValues",
                json!({"connectorId": 1, "transactionId": tx, "meterValue": [{"timestamp": at, "sampledValue": [
                    {"value": format!("{wh}"), "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                    {"value": "7400", "measurand": "Power.Active.Import", "unit": "W"},
                    {"value": format!("{}", 40 + minute), "measurand": "SoC", "unit": "Percent"}]}]}),
            )
            .await;
        browser
            .wait_text(&energy, Duration::from_secs(1), |t| t == shown)
            .await;
    }
    browser
        .wait_text(
            &format!(r#"tr[data-session="{session_id}"] .battery"#),
            WAIT,
            |t| t == "42 %",
        )
        .await;
    // The history's row of the same session follows too.
    browser
        .wait_text(
            &format!(r#"tr[data-history="{session_id}"] .energy"#),
            WAIT,
            |t| t == "3.200 kWh",
        )
        .await;
    assert_not_reloaded(&browser).await;
    browser.screenshot(&shots().join("03-sessions.png")).await;

    // The transaction's page: its chart and its message log.
    goto_view(&browser, &format!("#/transactions/{tx}")).await;
    browser.find("#chart canvas").await;
    browser
        .wait_text("main .facts .energy", WAIT, |t| t == "3.200 kWh")
        .await;
    browser.find("main table tbody tr td.payload").await;
    browser
        .screenshot(&shots().join("04-transaction.png"))
        .await;

    // A Reset from the charger's page, and the charger's answer shown.
    goto_view(&browser, "#/chargers/CP-CONSOLE").await;
    browser.find("#command-form").await;
    browser.screenshot(&shots().join("05-charger.png")).await;
    browser.click(r#"#command option[value="Reset"]"#).await;
    browser.click("#command-send").await;
    let (message_id, action, payload) = charger.expect_call().await;
    assert_eq!(
        (action.as_str(), &payload),
        ("Reset", &json!({"type": "Soft"}))
    );
    charger
        .reply(&message_id, json!({"status": "Accepted"}))
        .await;
    let answer = browser
        .wait_text("#command-answer", WAIT, |t| t.contains("Accepted"))
        .await;
    assert!(answer.starts_with("Reset:"), "{answer}");
    browser
        .screenshot(&shots().join("06-reset-answer.png"))
        .await;

    // Blocking the driver's idTag: the charger's next Authorize is refused.
    goto_view(&browser, "#/id-tags").await;
    browser.click(r#"button[data-block="TAG-0001"]"#).await;
    browser
        .wait_text(r#"tr[data-tag="TAG-0001"] .tag-status"#, WAIT, |t| {
            t == "Blocked"
        })
        .await;
    let refused = charger
        .call("Authorize", json!({"idTag": "TAG-0001"}))
        .await;
    assert_eq!(refused["idTagInfo"]["status"], "Blocked");
    browser.screenshot(&shots().join("07-id-tags.png")).await;

    // The other pages render, for the screenshots.
    for (hash, wait_for, name) in [
        ("#/anomalies", "#anomaly-list", "08-anomalies.png"),
        ("#/users/driver-1", "#wallets", "09-user.png"),
        ("#/payments", "#links", "10-payments.png"),
    ] {
        goto_view(&browser, hash).await;
        browser.find(wait_for).await;
        browser.screenshot(&shots().join(name)).await;
    }
    // On a phone.
    browser.resize(390, 844).await;
    goto_view(&browser, "#/chargers").await;
    browser.find(row).await;
    browser
        .screenshot(&shots().join("11-phone-chargers.png"))
        .await;
    assert_not_reloaded(&browser).await;
    // No script error, refused load or CSP violation on any page: the
    // browser's only complaint is the wrong password's 401.
    let errors: Vec<String> = browser
        .console_errors()
        .await
        .into_iter()
        .filter(|e| !(e.contains("/api/auth/login") && e.contains("401")))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    browser.close().await;
    charger.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_by_the_binary_with_its_assets() {
    let server = TestServer::start(Backend::Sqlite).await;
    let page = http().get(server.http_url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    let html = page.text().await.unwrap();
    // Every asset the page names is served from here, with its type.
    for (path, kind) in [
        ("/console/app.js", "text/javascript; charset=utf-8"),
        ("/console/console.css", "text/css; charset=utf-8"),
        (
            "/console/vendor/uPlot-1.6.32.iife.min.js",
            "text/javascript; charset=utf-8",
        ),
        (
            "/console/vendor/uPlot-1.6.32.min.css",
            "text/css; charset=utf-8",
        ),
    ] {
        assert!(html.contains(path), "the page loads {path}");
        let asset = http().get(server.http_url(path)).send().await.unwrap();
        assert_eq!(asset.status(), 200, "{path}");
        assert_eq!(asset.headers()["content-type"], kind, "{path}");
        let etag = asset.headers()["etag"].to_str().unwrap().to_owned();
        let cache = asset.headers()["cache-control"]
            .to_str()
            .unwrap()
            .to_owned();
        if path.contains("vendor/") {
            assert!(cache.contains("immutable"), "{path}: {cache}");
        } else {
            assert_eq!(cache, "no-cache", "{path}");
        }
        // Revalidation answers 304 without the body.
        let again = http()
            .get(server.http_url(path))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
    }
    for module in ["/console/lib.js", "/console/views.js"] {
        let asset = http().get(server.http_url(module)).send().await.unwrap();
        assert_eq!(asset.status(), 200, "{module}");
    }
    // Nothing the page or its scripts load comes from anywhere else.
    for path in [
        "/",
        "/console/app.js",
        "/console/lib.js",
        "/console/views.js",
        "/console/console.css",
    ] {
        let text = http()
            .get(server.http_url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            !text.contains("http://") && !text.contains("https://") && !text.contains("//cdn"),
            "{path} refers to another origin"
        );
    }
    let missing = http()
        .get(server.http_url("/console/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    server.stop().await;
}
