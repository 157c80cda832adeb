//! The pay page as a driver meets it: in a real browser (headless Chromium
//! driven through chromedriver's W3C WebDriver API), the page shows the
//! session and the amount, and pressing the button pays from the wallet.
//! Without chromium and chromedriver it fails under CI and is skipped (and
//! says so) elsewhere; `.ci/run` installs them.

mod common;

use common::webdriver::Driver;
use common::*;
use serde_json::json;
use std::time::Duration;

on_both_backends!(a_driver_pays_a_session_on_the_pay_page_in_a_browser);

async fn a_driver_pays_a_session_on_the_pay_page_in_a_browser(backend: Backend) {
    let Some(driver) = Driver::start().await else {
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

    let browser = driver.browser(1024, 768).await;
    browser.goto(&page_url).await;
    let text = |css: &'static str| {
        let browser = &browser;
        async move {
            let element = browser.find(css).await;
            browser.text(&element).await
        }
    };
    assert_eq!(text("#amount").await, "693 NGN");
    assert_eq!(text("#status").await, "pending");
    assert_eq!(browser.title().await, "Pay for your charging session");

    browser.click("#pay").await;
    // The form posts and the answer page carries the notice; until it has
    // loaded there is no such element.
    let notice = browser
        .wait_text("#notice", Duration::from_secs(10), |t| !t.is_empty())
        .await;
    assert_eq!(notice, "Payment received. Thank you!");
    assert_eq!(text("#status").await, "paid");
    browser.close().await;

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
