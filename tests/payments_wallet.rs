//! The prepaid wallet never goes below zero, whatever races it: settlements
//! paid at the same moment from one wallet are decided inside the database
//! transaction that posts them, so exactly the affordable ones are paid and
//! the others stay payable.

mod common;

use common::*;
use serde_json::{json, Value};

const DEMO: &str = "evliter-lagos-victoria-island";
const WALLET: &str = "0xRace";

on_both_backends!(
    racing_settlements_never_overdraw_a_wallet,
    a_movement_that_would_overdraw_a_wallet_posts_nothing,
);

/// Credits `user`'s wallet with `amount` NGN.
async fn credit(server: &TestServer, user: &str, amount: i64) {
    let admin = server.token("ops", "admin");
    let (status, body) = server
        .api(
            "POST",
            &format!("/api/admin/users/{user}/wallet/credit"),
            Some(&admin),
            Some(json!({"amount": amount, "currency": "NGN", "walletAddress": WALLET})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// One ended app session paid from the wallet: 4.2 kWh at 165 NGN, a
/// pending 693 NGN link. Returns the link id.
async fn ended_session_with_link(server: &TestServer, user: &str, token: &str) -> String {
    let (status, body) = server
        .api(
            "POST",
            "/api/v1/session/start",
            Some(token),
            Some(
                json!({"userId": user, "chargerId": DEMO, "walletAddress": WALLET,
                        "chain": "ledger", "expectedMaxCost": 700}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let session_id = body["data"]["sessionId"].as_str().unwrap().to_owned();
    let (status, body) = server
        .api(
            "PUT",
            "/api/charging/sessions/active/update",
            Some(token),
            Some(json!({"batteryLevel": 60, "energyDelivered": 4.2})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .api(
            "POST",
            "/api/v1/session/stop",
            Some(token),
            Some(json!({"userId": user, "sessionId": session_id})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["totalCost"], 693, "{body}");
    body["data"]["paymentLinkId"].as_str().unwrap().to_owned()
}

async fn available(server: &TestServer, token: &str, user: &str) -> Value {
    let (status, body) = server
        .api(
            "GET",
            &format!("/api/v1/user/{user}/wallet"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["kind"] == "available")
        .map(|w| w["balance"].clone())
        .unwrap_or(json!(0))
}

async fn link_status(server: &TestServer, token: &str, link: &str) -> String {
    let (status, body) = server
        .api(
            "GET",
            &format!("/api/v1/payment-links/{link}"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"]["status"].as_str().unwrap().to_owned()
}

/// How one payment attempt went.
#[derive(Debug)]
struct Attempt {
    status: u16,
    paid: bool,
    /// The page's text, or the API's error code and message.
    said: String,
}

/// Presses the pay page's button.
async fn pay_on_page(server: &TestServer, link: &str) -> Attempt {
    let response = http()
        .post(server.http_url(&format!("/pay/{link}")))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let page = response.text().await.unwrap();
    Attempt {
        status,
        paid: page.contains("Payment received"),
        said: page,
    }
}

/// Pays through the API, as an app would.
async fn pay_by_api(server: &TestServer, token: &str, link: &str) -> Attempt {
    let (status, body) = server
        .api(
            "POST",
            &format!("/api/v1/payment-links/{link}/pay"),
            Some(token),
            None,
        )
        .await;
    Attempt {
        status,
        paid: status == 200 && body["data"]["status"] == "paid",
        said: format!("{} {}", body["code"], body["error"]),
    }
}

/// Many rounds of four 693 NGN links paid at the same moment (two on the pay
/// page, two through the API) from a wallet holding 1,886 NGN: two are
/// affordable and are paid, the other two lose, every time, and stay payable.
async fn racing_settlements_never_overdraw_a_wallet(backend: Backend) {
    const ROUNDS: usize = 10;
    let server = TestServer::start(backend).await;
    let mut last_loser = None;
    for round in 0..ROUNDS {
        let user = format!("racer-{round}");
        let token = server.token(&user, "driver");
        credit(&server, &user, 2 * 693 + 500).await;
        let mut links = Vec::new();
        for _ in 0..4 {
            links.push(ended_session_with_link(&server, &user, &token).await);
        }
        assert_eq!(available(&server, &token, &user).await, json!(1886));

        // All four paid at once.
        let attempts = futures_util::future::join_all(links.iter().enumerate().map(|(i, l)| {
            let (server, token) = (&server, &token);
            async move {
                if i % 2 == 0 {
                    pay_on_page(server, l).await
                } else {
                    pay_by_api(server, token, l).await
                }
            }
        }))
        .await;
        assert_eq!(
            attempts.iter().filter(|a| a.paid).count(),
            2,
            "round {round}: exactly the affordable two are paid: {attempts:?}"
        );
        assert_eq!(
            available(&server, &token, &user).await,
            json!(500),
            "round {round}: the wallet never goes below zero"
        );
        for (i, (link, attempt)) in links.iter().zip(&attempts).enumerate() {
            let status = link_status(&server, &token, link).await;
            if attempt.paid {
                assert_eq!((attempt.status, status.as_str()), (200, "paid"));
                continue;
            }
            // The loser is told why, and its link is still payable.
            assert_eq!(attempt.status, 402, "round {round}: {attempt:?}");
            if i % 2 == 0 {
                assert!(
                    attempt.said.contains("Payment not made")
                        && attempt
                            .said
                            .contains("The wallet holds 500 NGN, 693 NGN is needed"),
                    "round {round}: {attempt:?}"
                );
            } else {
                assert!(
                    attempt.said.contains("INSUFFICIENT_FUNDS"),
                    "round {round}: {attempt:?}"
                );
            }
            assert_eq!(status, "pending", "round {round}");
            last_loser = Some((user.clone(), token.clone(), link.clone()));
        }
    }
    // A loser's link is paid once the wallet is topped up.
    let (user, token, link) = last_loser.unwrap();
    credit(&server, &user, 193).await;
    let attempt = pay_by_api(&server, &token, &link).await;
    assert!(attempt.paid, "{attempt:?}");
    assert_eq!(available(&server, &token, &user).await, json!(0));
    // Someone else's link: 403; a paid one: 409.
    let stranger = server.token("stranger", "driver");
    assert_eq!(pay_by_api(&server, &stranger, &link).await.status, 403);
    let again = pay_by_api(&server, &token, &link).await;
    assert_eq!(again.status, 409, "{again:?}");
    server.stop().await;
}

/// The guard is the store's, for every movement (a hold as well as a
/// settlement), and a refused movement leaves no trace.
async fn a_movement_that_would_overdraw_a_wallet_posts_nothing(backend: Backend) {
    use csms::payments::ledger;
    let server = TestServer::start(backend).await;
    let store = &server.state.store;
    // 1,000 NGN is 100,000 kobo; the ledger counts minor units.
    credit(&server, "saver", 1000).await;
    let token = server.token("saver", "driver");

    let refused = store
        .ledger_post(
            "hold",
            "session-x",
            "test",
            &ledger::hold("saver", WALLET, "NGN", 100_001),
        )
        .await
        .unwrap_err();
    assert_eq!(
        refused.downcast_ref::<ledger::Overdraft>(),
        Some(&ledger::Overdraft {
            account: ledger::wallet_account("saver", WALLET),
            currency: "NGN".into(),
            balance_minor: 100_000,
            debit_minor: 100_001,
        })
    );
    let (_, wallet) = server
        .api("GET", "/api/v1/user/saver/wallet", Some(&token), None)
        .await;
    assert_eq!(
        wallet["data"],
        json!([{"walletAddress": "0xrace", "kind": "available", "currency": "NGN", "balance": 1000}]),
        "nothing held, nothing taken"
    );

    // The same reference posts once it fits (the refused one left no
    // movement behind), and a wallet may be spent to exactly zero.
    assert!(store
        .ledger_post(
            "hold",
            "session-x",
            "test",
            &ledger::hold("saver", WALLET, "NGN", 100_000)
        )
        .await
        .unwrap());
    assert_eq!(available(&server, &token, "saver").await, json!(0));
    // Another wallet of the same driver is its own: empty, it pays nothing.
    let other = store
        .ledger_post(
            "settle",
            "session-y",
            "test",
            &ledger::settle("saver", "another", "NGN", 1),
        )
        .await
        .unwrap_err();
    assert!(
        other.downcast_ref::<ledger::Overdraft>().is_some(),
        "{other:#}"
    );
    server.stop().await;
}
