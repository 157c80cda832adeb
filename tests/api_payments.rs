//! The payment API end to end: balance checks (ledger and a real Ethereum
//! node), remote start and stop through a test charger, payment links (the
//! local pay page and a fake Stripe speaking Stripe's API), recreation,
//! webhooks, and the audit trail.

#[path = "payments_support/anvil.rs"]
mod anvil;
mod common;
#[path = "payments_support/fake_stripe.rs"]
mod fake_stripe;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const CHARGER: &str = "CP-PAY";

on_both_backends!(
    an_insufficient_balance_is_402_and_recorded,
    a_paid_session_runs_from_balance_check_to_payment,
    another_users_session_cannot_be_stopped,
    a_late_stop_transaction_still_gets_its_link,
    recreating_a_link_expires_the_old_one,
    a_charger_that_refuses_cancels_and_releases_the_hold,
    an_unknown_or_offline_charger_is_refused_before_any_balance_check,
    stripe_checkout_links_and_webhooks,
    the_evm_provider_reads_a_real_node,
);

/// A station that is a connected charger, a driver with credit if asked.
async fn setup(server: &TestServer, credit: Option<i64>) -> (String, String, TestCharger) {
    let admin = server.token("ops", "admin");
    let (status, body) = server
        .api(
            "PUT",
            &format!("/api/admin/stations/{CHARGER}"),
            Some(&admin),
            Some(json!({"name": "Pay Hub", "pricePerKWh": 165, "currency": "NGN"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (user, token) = server.register("payer@example.com").await;
    if let Some(amount) = credit {
        let (status, body) = server
            .api(
                "POST",
                &format!("/api/admin/users/{user}/wallet/credit"),
                Some(&admin),
                Some(json!({"amount": amount, "currency": "NGN", "walletAddress": "0xWallet"})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["balance"], amount);
    }
    let charger = server.booted_charger(CHARGER).await;
    (user, token, charger)
}

fn start_body(user: &str, wallet: &str, chain: &str, max: i64) -> Value {
    json!({"userId": user, "chargerId": CHARGER, "walletAddress": wallet, "chain": chain, "expectedMaxCost": max,
           "connectorId": 1, "metadata": {"app": "test"}})
}

/// Plays the charger's side of a remote start; returns the transaction id.
async fn accept_remote_start(charger: &mut TestCharger, meter_start: i64) -> i64 {
    let (id, action, payload) = charger.expect_call().await;
    assert_eq!(action, "RemoteStartTransaction");
    charger.reply(&id, json!({"status": "Accepted"})).await;
    let start = charger
        .call("StartTransaction", json!({"connectorId": 1, "idTag": payload["idTag"], "meterStart": meter_start, "timestamp": "2024-01-15T10:00:00Z"}))
        .await;
    start["transactionId"].as_i64().unwrap()
}

/// Starts a paid session with the charger accepting; returns (session id, transaction id).
async fn paid_start(
    server: &TestServer,
    token: &str,
    user: &str,
    charger: &mut TestCharger,
    max: i64,
) -> (String, i64) {
    let started = server.post_in_background(
        token,
        "/api/v1/session/start",
        start_body(user, "0xWallet", "ledger-chain", max),
    );
    let tx = accept_remote_start(charger, 0).await;
    let (status, body) = started.await.unwrap();
    assert_eq!(status, 201, "{body}");
    (body["data"]["sessionId"].as_str().unwrap().to_owned(), tx)
}

/// Plays the charger's side of a remote stop, with `wh` delivered.
async fn accept_remote_stop(charger: &mut TestCharger, tx: i64, wh: i64) {
    let (id, action, payload) = charger.expect_call().await;
    assert_eq!(
        (action.as_str(), payload["transactionId"].as_i64()),
        ("RemoteStopTransaction", Some(tx))
    );
    charger.reply(&id, json!({"status": "Accepted"})).await;
    charger.call("StopTransaction", json!({"transactionId": tx, "meterStop": wh, "timestamp": "2024-01-15T10:30:00Z", "reason": "Remote"})).await;
}

async fn wallet(server: &TestServer, token: &str, user: &str) -> Value {
    let (status, body) = server
        .api(
            "GET",
            &format!("/api/v1/user/{user}/wallet"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

fn balance(wallet: &Value, kind: &str) -> Value {
    wallet
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["kind"] == kind)
        .map(|w| w["balance"].clone())
        .unwrap_or(json!(0))
}

async fn an_insufficient_balance_is_402_and_recorded(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (user, token, mut charger) = setup(&server, Some(1000)).await;
    let (status, body) = server
        .api(
            "POST",
            "/api/v1/session/start",
            Some(&token),
            Some(start_body(&user, "0xWallet", "ledger-chain", 5000)),
        )
        .await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(
        (body["success"].clone(), body["code"].clone()),
        (json!(false), json!("INSUFFICIENT_BALANCE"))
    );
    assert_eq!(body["data"]["balanceStatus"], "INSUFFICIENT");
    let check_id = body["data"]["balanceCheckId"].as_str().unwrap().to_owned();
    // No session, and the charger was never asked to start.
    assert_eq!(
        server
            .api("GET", "/api/charging/sessions/active", Some(&token), None)
            .await
            .1["session"],
        Value::Null
    );
    assert!(charger
        .try_next_frame(Duration::from_millis(300))
        .await
        .is_none());
    // The check is kept for audit, with what was asked and what was there.
    let (status, check) = server
        .api(
            "GET",
            &format!("/api/v1/user/balance-check/{check_id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let c = &check["data"];
    assert_eq!(
        (
            c["status"].as_str(),
            c["provider"].as_str(),
            c["chain"].as_str()
        ),
        (Some("INSUFFICIENT"), Some("ledger"), Some("ledger-chain"))
    );
    assert_eq!(
        (
            c["requestedAmount"].clone(),
            c["actualBalance"].clone(),
            c["currency"].clone()
        ),
        (json!(5000), json!(1000), json!("NGN"))
    );
    assert_eq!(
        (c["walletAddress"].as_str(), c["metadata"]["app"].as_str()),
        (Some("0xWallet"), Some("test"))
    );
    assert!(c["createdAt"].is_string() && c["updatedAt"].is_string());
    let (_, list) = server
        .api(
            "GET",
            &format!("/api/v1/user/{user}/balance-checks"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    // Someone else's start, checks and check: 403.
    let (_, other) = server.register("other@example.com").await;
    assert_eq!(
        server
            .api(
                "POST",
                "/api/v1/session/start",
                Some(&other),
                Some(start_body(&user, "0xWallet", "x", 1))
            )
            .await
            .0,
        403
    );
    assert_eq!(
        server
            .api(
                "GET",
                &format!("/api/v1/user/{user}/balance-checks"),
                Some(&other),
                None
            )
            .await
            .0,
        403
    );
    assert_eq!(
        server
            .api(
                "GET",
                &format!("/api/v1/user/balance-check/{check_id}"),
                Some(&other),
                None
            )
            .await
            .0,
        403
    );
    // Bad amounts are a 400.
    for bad in [json!(-5), json!("lots"), json!(10.001)] {
        let mut body = start_body(&user, "0xWallet", "x", 1);
        body["expectedMaxCost"] = bad;
        let (status, reply) = server
            .api("POST", "/api/v1/session/start", Some(&token), Some(body))
            .await;
        assert_eq!(
            (status, reply["details"]["field"].as_str()),
            (400, Some("expectedMaxCost")),
            "{reply}"
        );
    }
    server.stop().await;
}

async fn a_paid_session_runs_from_balance_check_to_payment(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (user, token, mut charger) = setup(&server, Some(10_000)).await;
    let started = server.post_in_background(
        &token,
        "/api/v1/session/start",
        start_body(&user, "0xWallet", "ledger-chain", 5000),
    );
    let tx = accept_remote_start(&mut charger, 0).await;
    let (status, body) = started.await.unwrap();
    assert_eq!(status, 201, "{body}");
    let d = &body["data"];
    assert_eq!(
        (
            d["balanceStatus"].as_str(),
            d["userId"].as_str(),
            d["chargerId"].as_str()
        ),
        (Some("SUFFICIENT"), Some(user.as_str()), Some(CHARGER))
    );
    let session_id = d["sessionId"].as_str().unwrap().to_owned();
    assert_eq!(d["balanceCheck"]["sessionId"], session_id.as_str());
    // expectedMaxCost is held while the session runs.
    let w = wallet(&server, &token, &user).await;
    assert_eq!(
        (balance(&w, "available"), balance(&w, "held")),
        (json!(5000), json!(5000))
    );

    charger.call("MeterValues", json!({"connectorId": 1, "transactionId": tx, "meterValue": [meter_sample("2024-01-15T10:15:00Z", 2000.0, None)]})).await;
    // finalCost from a driver is not honoured.
    let stopped = server.post_in_background(
        &token,
        "/api/v1/session/stop",
        json!({"userId": user, "sessionId": session_id, "finalCost": 1}),
    );
    accept_remote_stop(&mut charger, tx, 4200).await;
    let (status, body) = stopped.await.unwrap();
    assert_eq!(status, 200, "{body}");
    let d = &body["data"];
    assert_eq!(
        (
            d["status"].as_str(),
            d["totalCost"].clone(),
            d["currency"].as_str()
        ),
        (Some("completed"), json!(693), Some("NGN"))
    );
    let link_id = d["paymentLinkId"].as_str().unwrap().to_owned();
    let url = d["paymentUrl"].as_str().unwrap().to_owned();
    assert!(url.ends_with(&format!("/pay/{link_id}")), "{url}");
    let expires = chrono::DateTime::parse_from_rfc3339(d["expiresAt"].as_str().unwrap()).unwrap();
    let ttl = expires.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(
        ttl > chrono::Duration::hours(23) && ttl <= chrono::Duration::hours(24),
        "{ttl}"
    );
    // The hold is released at the end.
    let w = wallet(&server, &token, &user).await;
    assert_eq!(
        (balance(&w, "available"), balance(&w, "held")),
        (json!(10_000), json!(0))
    );

    // The audit trail: the session with its link and its metadata.
    let (_, sessions) = server
        .api(
            "GET",
            &format!("/api/v1/user/{user}/sessions"),
            Some(&token),
            None,
        )
        .await;
    let s = &sessions["data"][0];
    assert_eq!(
        (s["walletAddress"].as_str(), s["totalCost"].clone()),
        (Some("0xWallet"), json!(693))
    );
    let link = &s["paymentLinks"][0];
    assert_eq!(
        (
            link["status"].as_str(),
            link["amount"].clone(),
            link["provider"].as_str()
        ),
        (Some("pending"), json!(693), Some("local"))
    );
    assert_eq!(
        (
            link["metadata"]["energyDelivered"].clone(),
            link["metadata"]["stationId"].as_str()
        ),
        (json!(4.2), Some(CHARGER))
    );

    // The pay page is a real page; paying settles from the wallet, once.
    let page = http()
        .get(server.http_url(&format!("/pay/{link_id}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("693 NGN") && page.contains("Pay Hub") && page.contains("<button"),
        "{page}"
    );
    let paid = http()
        .post(server.http_url(&format!("/pay/{link_id}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(paid.contains("Payment received"), "{paid}");
    let again = http()
        .post(server.http_url(&format!("/pay/{link_id}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(again.contains("Payment not made"), "{again}");
    let w = wallet(&server, &token, &user).await;
    assert_eq!(balance(&w, "available"), json!(9307));
    let (_, link) = server
        .api(
            "GET",
            &format!("/api/v1/payment-links/{link_id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(link["data"]["status"], "paid");
    assert!(link["data"]["paidAt"].is_string());
    // Stopping again bills nothing twice.
    let (status, body) = server
        .api(
            "POST",
            "/api/v1/session/stop",
            Some(&token),
            Some(json!({"userId": user, "sessionId": session_id})),
        )
        .await;
    assert_eq!(
        (status, body["data"]["paymentLinkId"].as_str()),
        (200, Some(link_id.as_str()))
    );
    assert_eq!(
        balance(&wallet(&server, &token, &user).await, "available"),
        json!(9307)
    );
    server.stop().await;
}

async fn another_users_session_cannot_be_stopped(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (user, token, mut charger) = setup(&server, Some(10_000)).await;
    let (session_id, tx) = paid_start(&server, &token, &user, &mut charger, 5000).await;
    let (intruder_id, intruder) = server.register("intruder@example.com").await;
    for body in [
        json!({"userId": user, "sessionId": session_id}),
        json!({"userId": intruder_id, "sessionId": session_id}),
    ] {
        let (status, reply) = server
            .api("POST", "/api/v1/session/stop", Some(&intruder), Some(body))
            .await;
        assert_eq!(status, 403, "{reply}");
    }
    assert!(
        charger
            .try_next_frame(Duration::from_millis(300))
            .await
            .is_none(),
        "the charger was not told to stop"
    );
    // An admin's finalCost is honoured.
    let admin = server.token("ops", "admin");
    let stopped = server.post_in_background(
        &admin,
        "/api/v1/session/stop",
        json!({"userId": user, "sessionId": session_id, "finalCost": 500}),
    );
    accept_remote_stop(&mut charger, tx, 4200).await;
    let (status, body) = stopped.await.unwrap();
    assert_eq!(
        (status, body["data"]["totalCost"].clone()),
        (200, json!(500)),
        "{body}"
    );
    server.stop().await;
}

async fn a_late_stop_transaction_still_gets_its_link(backend: Backend) {
    let server =
        TestServer::start_with(backend, |c| c.stop_wait = Duration::from_millis(300)).await;
    let (user, token, mut charger) = setup(&server, Some(10_000)).await;
    let (session_id, tx) = paid_start(&server, &token, &user, &mut charger, 5000).await;
    let stopped = server.post_in_background(
        &token,
        "/api/v1/session/stop",
        json!({"userId": user, "sessionId": session_id}),
    );
    let (id, _, _) = charger.expect_call().await;
    charger.reply(&id, json!({"status": "Accepted"})).await;
    let (status, body) = stopped.await.unwrap();
    assert_eq!(
        (status, body["data"]["status"].as_str()),
        (202, Some("stopping")),
        "{body}"
    );
    charger
        .call(
            "StopTransaction",
            json!({"transactionId": tx, "meterStop": 4200, "timestamp": "2024-01-15T10:30:00Z"}),
        )
        .await;
    let (server_ref, path, token_ref) = (&server, &format!("/api/v1/user/{user}/sessions"), &token);
    let links = eventually(
        "the late stop's payment link",
        Duration::from_secs(10),
        || async move {
            let (_, sessions) = server_ref.api("GET", path, Some(token_ref), None).await;
            let links = sessions["data"][0]["paymentLinks"].clone();
            links
                .as_array()
                .is_some_and(|l| !l.is_empty())
                .then_some(links)
        },
    )
    .await;
    assert_eq!(links.as_array().map(Vec::len), Some(1), "{links}");
    assert_eq!(links[0]["amount"], 693);
    server.stop().await;
}

async fn recreating_a_link_expires_the_old_one(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (user, token, mut charger) = setup(&server, Some(10_000)).await;
    let (session_id, tx) = paid_start(&server, &token, &user, &mut charger, 5000).await;
    let stopped = server.post_in_background(
        &token,
        "/api/v1/session/stop",
        json!({"userId": user, "sessionId": session_id}),
    );
    accept_remote_stop(&mut charger, tx, 4200).await;
    let old = stopped.await.unwrap().1["data"]["paymentLinkId"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, other) = server.register("other@example.com").await;
    assert_eq!(
        server
            .api(
                "POST",
                &format!("/api/v1/payment-links/{old}/recreate"),
                Some(&other),
                None
            )
            .await
            .0,
        403
    );
    let (status, body) = server
        .api(
            "POST",
            &format!("/api/v1/payment-links/{old}/recreate"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let new = body["data"]["paymentLinkId"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    let (_, sessions) = server
        .api(
            "GET",
            &format!("/api/v1/user/{user}/sessions"),
            Some(&token),
            None,
        )
        .await;
    let links = sessions["data"][0]["paymentLinks"]
        .as_array()
        .unwrap()
        .clone();
    let live: Vec<&Value> = links.iter().filter(|l| l["status"] == "pending").collect();
    assert_eq!(live.len(), 1, "never two live links: {links:?}");
    assert_eq!(live[0]["id"], new.as_str());
    assert!(links
        .iter()
        .any(|l| l["id"] == old.as_str() && l["status"] == "expired"));
    // The expired link cannot be paid; the new one can; then nothing can be recreated.
    assert!(http()
        .post(server.http_url(&format!("/pay/{old}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .contains("Payment not made"));
    assert!(http()
        .post(server.http_url(&format!("/pay/{new}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .contains("Payment received"));
    let (status, body) = server
        .api(
            "POST",
            &format!("/api/v1/payment-links/{new}/recreate"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("PAYMENT_CONFLICT"))
    );
    assert_eq!(
        server
            .api(
                "POST",
                "/api/v1/payment-links/no-such-link/recreate",
                Some(&token),
                None
            )
            .await
            .0,
        404
    );
    server.stop().await;
}

async fn a_charger_that_refuses_cancels_and_releases_the_hold(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (user, token, mut charger) = setup(&server, Some(10_000)).await;
    let started = server.post_in_background(
        &token,
        "/api/v1/session/start",
        start_body(&user, "0xWallet", "ledger-chain", 5000),
    );
    let (id, _, _) = charger.expect_call().await;
    charger.reply(&id, json!({"status": "Rejected"})).await;
    let (status, body) = started.await.unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("CHARGER_REJECTED")),
        "{body}"
    );
    let (_, sessions) = server
        .api(
            "GET",
            &format!("/api/v1/user/{user}/sessions"),
            Some(&token),
            None,
        )
        .await;
    let list = sessions["data"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(
        (list[0]["status"].as_str(), list[0]["totalCost"].clone()),
        (Some("cancelled"), json!(0))
    );
    assert!(
        list[0]["paymentLinks"].as_array().unwrap().is_empty(),
        "nothing to pay"
    );
    assert_eq!(
        balance(&wallet(&server, &token, &user).await, "available"),
        json!(10_000)
    );
    // Offline: 409 as well, before any balance is checked.
    charger.close().await;
    let registry = &server.state.registry;
    until(
        "the charger offline",
        Duration::from_secs(10),
        || async move { !registry.is_connected(CHARGER) },
    )
    .await;
    let (status, body) = server
        .api(
            "POST",
            "/api/v1/session/start",
            Some(&token),
            Some(start_body(&user, "0xWallet", "ledger-chain", 5000)),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("CHARGER_OFFLINE")),
        "{body}"
    );
    let (_, checks) = server
        .api(
            "GET",
            &format!("/api/v1/user/{user}/balance-checks"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(checks["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        balance(&wallet(&server, &token, &user).await, "held"),
        json!(0)
    );
    server.stop().await;
}

/// An unknown charger is 404 and one that is not connected 409, both before
/// any balance is checked: a 402 "insufficient balance" (the unknown id's
/// default currency differing from the wallet's) told the driver something
/// false, and a check recorded for a start that could never happen is noise.
async fn an_unknown_or_offline_charger_is_refused_before_any_balance_check(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token("ops", "admin");
    let (user, token) = server.register("payer@example.com").await;
    // A wallet in euros: the unknown id's default tariff is in naira.
    let (status, body) = server
        .api(
            "POST",
            &format!("/api/admin/users/{user}/wallet/credit"),
            Some(&admin),
            Some(json!({"amount": 50, "currency": "EUR", "walletAddress": "0xWallet"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut body = start_body(&user, "0xWallet", "ledger-chain", 5);
    body["chargerId"] = json!("CP-NOWHERE");
    let (status, reply) = server
        .api("POST", "/api/v1/session/start", Some(&token), Some(body))
        .await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (404, Some("CHARGER_NOT_FOUND")),
        "{reply}"
    );

    // Known but never connected, and connected once but gone now: 409.
    server
        .state
        .store
        .provision_charger(
            "CP-NEVER",
            Some(csms::store::RegistrationStatus::Accepted),
            None,
        )
        .await
        .unwrap();
    let gone = server.booted_charger("CP-GONE").await;
    gone.close().await;
    let registry = &server.state.registry;
    until("CP-GONE offline", Duration::from_secs(10), || async move {
        !registry.is_connected("CP-GONE")
    })
    .await;
    for charger in ["CP-NEVER", "CP-GONE"] {
        let mut body = start_body(&user, "0xWallet", "ledger-chain", 5);
        body["chargerId"] = json!(charger);
        let (status, reply) = server
            .api("POST", "/api/v1/session/start", Some(&token), Some(body))
            .await;
        assert_eq!(
            (status, reply["code"].as_str()),
            (409, Some("CHARGER_OFFLINE")),
            "{charger}: {reply}"
        );
    }

    // No balance was checked, no session started, nothing held.
    let (_, checks) = server
        .api(
            "GET",
            &format!("/api/v1/user/{user}/balance-checks"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(checks["data"], json!([]), "{checks}");
    assert_eq!(
        server
            .api("GET", "/api/charging/sessions/active", Some(&token), None)
            .await
            .1["session"],
        Value::Null
    );
    assert_eq!(
        balance(&wallet(&server, &token, &user).await, "available"),
        json!(50)
    );
    server.stop().await;
}

async fn stripe_checkout_links_and_webhooks(backend: Backend) {
    let stripe = fake_stripe::FakeStripe::start("sk_test_csms").await;
    let base = stripe.base_url();
    let server = TestServer::start_with(backend, move |c| {
        c.payment_links = "stripe".into();
        c.stripe_secret_key = Some("sk_test_csms".into());
        c.stripe_webhook_secret = Some("whsec_test".into());
        c.stripe_base_url = base;
    })
    .await;
    let (user, token, mut charger) = setup(&server, Some(10_000)).await;
    let (session_id, tx) = paid_start(&server, &token, &user, &mut charger, 5000).await;
    let stopped = server.post_in_background(
        &token,
        "/api/v1/session/stop",
        json!({"userId": user, "sessionId": session_id}),
    );
    accept_remote_stop(&mut charger, tx, 4200).await;
    let (status, body) = stopped.await.unwrap();
    assert_eq!(status, 200, "{body}");
    let url = body["data"]["paymentUrl"].as_str().unwrap();
    assert!(url.starts_with("https://checkout.stripe.com/"), "{url}");
    let requests = stripe.requests();
    let create = requests
        .iter()
        .find(|r| r.path == "/v1/checkout/sessions")
        .expect("a Checkout Session was created");
    assert_eq!(
        create.field("line_items[0][price_data][unit_amount]"),
        Some("69300")
    );
    assert_eq!(
        create.field("line_items[0][price_data][currency]"),
        Some("ngn")
    );
    assert_eq!(create.field("mode"), Some("payment"));
    assert_eq!(
        create.field("client_reference_id"),
        Some(session_id.as_str())
    );
    assert_eq!(
        create.idempotency_key.as_deref(),
        body["data"]["paymentLinkId"].as_str()
    );
    let expires_at: i64 = create.field("expires_at").unwrap().parse().unwrap();
    assert!(
        expires_at <= fake_stripe::now() + 24 * 3600,
        "Stripe allows at most 24 h"
    );

    let (_, sessions) = server
        .api(
            "GET",
            &format!("/api/v1/user/{user}/sessions"),
            Some(&token),
            None,
        )
        .await;
    let link = sessions["data"][0]["paymentLinks"][0].clone();
    let checkout_id = stripe.sessions()[0]["id"].as_str().unwrap().to_owned();
    stripe.complete_session(&checkout_id);
    let hook = server.http_url("/api/v1/webhooks/stripe");
    let send = |body: String, signature: String| {
        let hook = hook.clone();
        async move {
            let r = http()
                .post(hook)
                .header("Stripe-Signature", signature)
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    // A bad signature, and a stale one (6 minutes old), change nothing.
    let (body, _) = stripe.signed_event("checkout.session.completed", &checkout_id, "whsec_test");
    assert_eq!(
        send(
            body.clone(),
            fake_stripe::stripe_signature(body.as_bytes(), "whsec_wrong", fake_stripe::now())
        )
        .await
        .0,
        400
    );
    assert_eq!(
        send(
            body.clone(),
            fake_stripe::stripe_signature(body.as_bytes(), "whsec_test", fake_stripe::now() - 360)
        )
        .await
        .0,
        400
    );
    let (_, after) = server
        .api(
            "GET",
            &format!("/api/v1/payment-links/{}", link["id"].as_str().unwrap()),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(after["data"]["status"], "pending");
    // A good one marks the link paid; its replay is acknowledged and ignored.
    let signature =
        fake_stripe::stripe_signature(body.as_bytes(), "whsec_test", fake_stripe::now());
    let (status, reply) = send(body.clone(), signature.clone()).await;
    assert_eq!((status, reply["duplicate"].clone()), (200, json!(false)));
    let (status, reply) = send(body, signature).await;
    assert_eq!((status, reply["duplicate"].clone()), (200, json!(true)));
    let (_, after) = server
        .api(
            "GET",
            &format!("/api/v1/payment-links/{}", link["id"].as_str().unwrap()),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(after["data"]["status"], "paid");
    // A paid session gets no new link.
    let (status, _) = server
        .api(
            "POST",
            &format!(
                "/api/v1/payment-links/{}/recreate",
                link["id"].as_str().unwrap()
            ),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 409);
    server.stop().await;
}

async fn the_evm_provider_reads_a_real_node(backend: Backend) {
    let Some(node) = anvil::Anvil::start().await else {
        return;
    };
    let url = node.url().to_owned();
    // 1 ETH is worth 2,000,000 NGN here.
    let server = TestServer::start_with(backend, move |c| {
        c.balance_providers = "ethereum=evm".into();
        c.evm_rpc_url = Some(url);
        c.evm_rate = "2000000".into();
    })
    .await;
    let (user, token, mut charger) = setup(&server, None).await;
    // Funded: anvil's first account holds 10,000 ETH.
    let started = server.post_in_background(
        &token,
        "/api/v1/session/start",
        start_body(&user, anvil::DEV_ACCOUNT_0, "ethereum", 5000),
    );
    accept_remote_start(&mut charger, 0).await;
    let (status, body) = started.await.unwrap();
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (
            body["data"]["balanceCheck"]["provider"].as_str(),
            body["data"]["balanceStatus"].as_str()
        ),
        (Some("evm"), Some("SUFFICIENT"))
    );
    assert_eq!(
        body["data"]["balanceCheck"]["actualBalance"],
        json!(20_000_000_000i64)
    );
    let session_id = body["data"]["sessionId"].as_str().unwrap().to_owned();
    let admin = server.token("ops", "admin");
    // Cancelled (by an admin), so this driver may start again.
    let cancelled = server.post_in_background(
        &admin,
        "/api/charging/sessions/cancel",
        json!({"sessionId": session_id}),
    );
    let (id, action, _) = charger.expect_call().await;
    assert_eq!(action, "RemoteStopTransaction");
    charger.reply(&id, json!({"status": "Accepted"})).await;
    assert_eq!(cancelled.await.unwrap().1["data"]["status"], "cancelled");

    // Empty: a fresh address.
    let empty = "0x000000000000000000000000000000000000dEaD";
    let (status, body) = server
        .api(
            "POST",
            "/api/v1/session/start",
            Some(&token),
            Some(start_body(&user, empty, "ethereum", 5000)),
        )
        .await;
    assert_eq!(
        (status, body["data"]["balanceStatus"].as_str()),
        (402, Some("INSUFFICIENT")),
        "{body}"
    );
    // Not an address: ERROR with the reason, never a 500, never a session.
    let (status, body) = server
        .api(
            "POST",
            "/api/v1/session/start",
            Some(&token),
            Some(start_body(&user, "not-an-address", "ethereum", 5000)),
        )
        .await;
    assert_eq!(
        (status, body["data"]["balanceStatus"].as_str()),
        (402, Some("ERROR")),
        "{body}"
    );
    assert!(body["details"]["balanceCheck"]["errorMessage"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    drop(node);
    server.stop().await;

    // The node is down: ERROR, recorded, quickly.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server = TestServer::start_with(backend, move |c| {
        c.balance_providers = "ethereum=evm".into();
        c.evm_rpc_url = Some(format!("http://{dead}"));
        c.evm_rate = "2000000".into();
        c.evm_timeout = Duration::from_secs(2);
    })
    .await;
    let (user, token, _charger) = setup(&server, None).await;
    let (status, body) = server
        .api(
            "POST",
            "/api/v1/session/start",
            Some(&token),
            Some(start_body(&user, anvil::DEV_ACCOUNT_0, "ethereum", 5000)),
        )
        .await;
    assert_eq!(
        (status, body["data"]["balanceStatus"].as_str()),
        (402, Some("ERROR")),
        "{body}"
    );
    let (_, checks) = server
        .api(
            "GET",
            &format!("/api/v1/user/{user}/balance-checks"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(checks["data"][0]["status"], "ERROR");
    assert!(checks["data"][0]["errorMessage"].is_string());
    assert_eq!(
        server
            .api("GET", "/api/charging/sessions/active", Some(&token), None)
            .await
            .1["session"],
        Value::Null
    );
    server.stop().await;
}
