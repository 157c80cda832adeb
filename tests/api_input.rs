//! What clients send, checked at the door: every number of the driver,
//! operator and payment APIs is finite and physically plausible (else a 400
//! naming the field, and nothing stored), and derived figures stay sane
//! (no average power from a few milliseconds of charging).

mod common;

use common::*;
use serde_json::{json, Value};

const DEMO: &str = "evliter-lagos-victoria-island";

on_both_backends!(
    absurd_driver_numbers_are_a_400_and_store_nothing,
    absurd_operator_and_payment_numbers_are_a_400_and_store_nothing,
    average_power_is_zero_in_the_first_minute,
    a_body_that_is_not_json_is_415_and_changes_nothing,
    unknown_currencies_and_bad_wallet_checksums_are_a_400_and_store_nothing,
);

/// Asserts a 400 naming `field`.
fn assert_rejected(status: u16, reply: &Value, field: &str) {
    assert_eq!(
        (status, reply["details"]["field"].as_str()),
        (400, Some(field)),
        "{reply}"
    );
    assert_eq!(reply["success"], false, "{reply}");
}

async fn active_session(server: &TestServer, token: &str) -> Value {
    let (status, body) = server
        .api("GET", "/api/charging/sessions/active", Some(token), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body["session"].clone()
}

async fn absurd_driver_numbers_are_a_400_and_store_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, token) = server.register("ada@example.com").await;
    let t = Some(token.as_str());

    for (body, field) in [
        (
            json!({"stationId": DEMO, "connectorId": "connector-1", "batteryLevelStart": 1e308}),
            "batteryLevelStart",
        ),
        (
            json!({"stationId": DEMO, "connectorId": 1e308, "batteryLevelStart": 40}),
            "connectorId",
        ),
        (
            json!({"stationId": DEMO, "connectorId": 100000, "batteryLevelStart": 40}),
            "connectorId",
        ),
    ] {
        let (status, reply) = server
            .api("POST", "/api/charging/sessions/start", t, Some(body))
            .await;
        assert_rejected(status, &reply, field);
    }
    assert_eq!(active_session(&server, &token).await, Value::Null);

    let (status, body) = server
        .api(
            "POST",
            "/api/charging/sessions/start",
            t,
            Some(json!({"stationId": DEMO, "connectorId": "connector-1", "batteryLevelStart": 45})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["data"]["id"].as_str().unwrap().to_owned();
    let (status, body) = server
        .api(
            "PUT",
            "/api/charging/sessions/active/update",
            t,
            Some(json!({"batteryLevel": 52, "energyDelivered": 4.2})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // energyDelivered is 0..=1000 kWh: 1e308 once became an infinite energy
    // that cost nothing.
    for (body, field) in [
        (
            json!({"batteryLevel": 60, "energyDelivered": 1e308}),
            "energyDelivered",
        ),
        (
            json!({"batteryLevel": 60, "energyDelivered": 1000.001}),
            "energyDelivered",
        ),
        (
            json!({"batteryLevel": 1e308, "energyDelivered": 5}),
            "batteryLevel",
        ),
        (
            json!({"batteryLevel": -1e308, "energyDelivered": 5}),
            "batteryLevel",
        ),
    ] {
        let (status, reply) = server
            .api("PUT", "/api/charging/sessions/active/update", t, Some(body))
            .await;
        assert_rejected(status, &reply, field);
    }
    // A number too large for a double is refused too, whichever way the
    // JSON reader meets it.
    let (status, reply) = server
        .api_raw(
            "PUT",
            "/api/charging/sessions/active/update",
            t,
            r#"{"batteryLevel": 60, "energyDelivered": 1e400}"#,
        )
        .await;
    assert_eq!(status, 400, "{reply}");
    for (body, field) in [
        (
            json!({"sessionId": id, "batteryLevelEnd": 1e308}),
            "batteryLevelEnd",
        ),
        (
            json!({"sessionId": id, "batteryLevelEnd": 80, "stationRating": 1e308}),
            "stationRating",
        ),
        (
            json!({"sessionId": id, "batteryLevelEnd": 80, "stationRating": 4.5}),
            "stationRating",
        ),
        (
            json!({"sessionId": id, "batteryLevelEnd": 80, "stationRating": 0}),
            "stationRating",
        ),
    ] {
        let (status, reply) = server
            .api("POST", "/api/charging/sessions/end", t, Some(body))
            .await;
        assert_rejected(status, &reply, field);
    }
    // The session is as the last good update left it.
    let session = active_session(&server, &token).await;
    assert_eq!(
        (
            session["status"].as_str(),
            session["energyDelivered"].clone(),
            session["totalCost"].clone(),
            session["batteryLevel"].clone()
        ),
        (Some("active"), json!(4.2), json!(693), json!(52))
    );

    // limit and offset: whole numbers in range, else a 400 naming them.
    for (query, field) in [
        ("limit=1e308", "limit"),
        ("limit=abc", "limit"),
        ("limit=0", "limit"),
        ("offset=-1", "offset"),
        ("offset=1e3", "offset"),
        ("offset=99999999999999999999999", "offset"),
    ] {
        let (status, reply) = server
            .api("GET", &format!("/api/charging/sessions?{query}"), t, None)
            .await;
        assert_rejected(status, &reply, field);
    }
    server.stop().await;
}

async fn absurd_operator_and_payment_numbers_are_a_400_and_store_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token("ops", "admin");
    let a = Some(admin.as_str());

    // pricePerKWh: 0..=1,000,000 per kWh, at most 6 decimals.
    for price in [json!(1e308), json!(1_000_000.5), json!(-1), json!("1e3")] {
        let (status, reply) = server
            .api(
                "PUT",
                "/api/admin/stations/ST-BOUNDS",
                a,
                Some(json!({"name": "Bounds", "pricePerKWh": price, "currency": "NGN"})),
            )
            .await;
        assert_rejected(status, &reply, "pricePerKWh");
    }
    let (status, _) = server
        .api("GET", "/api/admin/stations/ST-BOUNDS", a, None)
        .await;
    assert_eq!(status, 404, "nothing was stored");

    // batteryCapacity: 0.1..=1000 kWh.
    for capacity in [
        json!(1e308),
        json!(0),
        json!(0.0001),
        json!(-5),
        json!(1000.5),
    ] {
        let (status, reply) = server
            .api(
                "PUT",
                "/api/admin/users/u-bounds",
                a,
                Some(json!({"name": "Bounds", "role": "driver", "batteryCapacity": capacity})),
            )
            .await;
        assert_rejected(status, &reply, "batteryCapacity");
    }
    let (_, users) = server.api("GET", "/api/admin/users", a, None).await;
    assert!(
        !users["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["id"] == "u-bounds"),
        "{users}"
    );

    // Wallet credits: more than nothing, at most 1,000,000,000 of the currency.
    let (user, token) = server.register("payer@example.com").await;
    for amount in [
        json!(1e308),
        json!(1e10),
        json!(10_000_000_000i64),
        json!(0),
    ] {
        let (status, reply) = server
            .api(
                "POST",
                &format!("/api/admin/users/{user}/wallet/credit"),
                a,
                Some(json!({"amount": amount, "currency": "NGN"})),
            )
            .await;
        assert_rejected(status, &reply, "amount");
    }
    let (_, wallet) = server
        .api(
            "GET",
            &format!("/api/v1/user/{user}/wallet"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(wallet["data"], json!([]), "no credit was posted");

    // expectedMaxCost: refused before any balance is checked.
    let (status, reply) = server
        .api(
            "POST",
            &format!("/api/admin/users/{user}/wallet/credit"),
            a,
            Some(json!({"amount": 5000, "currency": "NGN"})),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    for max in [json!(1e308), json!(2_000_000_000)] {
        let (status, reply) = server
            .api(
                "POST",
                "/api/v1/session/start",
                Some(&token),
                Some(
                    json!({"userId": user, "chargerId": DEMO, "walletAddress": "default",
                            "chain": "ledger", "expectedMaxCost": max}),
                ),
            )
            .await;
        assert_rejected(status, &reply, "expectedMaxCost");
    }
    let (_, checks) = server
        .api(
            "GET",
            &format!("/api/v1/user/{user}/balance-checks"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(checks["data"], json!([]), "no balance check was recorded");

    // finalCost (honoured from an admin): non-negative and within the same bound.
    let (status, body) = server
        .api(
            "POST",
            "/api/v1/session/start",
            Some(&token),
            Some(
                json!({"userId": user, "chargerId": DEMO, "walletAddress": "default",
                        "chain": "ledger", "expectedMaxCost": 1000}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let session_id = body["data"]["sessionId"].as_str().unwrap().to_owned();
    for cost in [json!(1e308), json!(2_000_000_000), json!(-1)] {
        let (status, reply) = server
            .api(
                "POST",
                "/api/v1/session/stop",
                a,
                Some(json!({"userId": user, "sessionId": session_id, "finalCost": cost})),
            )
            .await;
        assert_rejected(status, &reply, "finalCost");
    }
    let session = active_session(&server, &token).await;
    assert_eq!(session["status"], "active", "the session was not stopped");
    server.stop().await;
}

/// The contract's formula on whole minutes: energy / duration × 60, 0 in the
/// first minute. A session reported 35 ms after it started once showed
/// hundreds of thousands of kW.
async fn average_power_is_zero_in_the_first_minute(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, token) = server.register("ada@example.com").await;
    let t = Some(token.as_str());
    let (status, body) = server
        .api(
            "POST",
            "/api/charging/sessions/start",
            t,
            Some(json!({"stationId": DEMO, "connectorId": "connector-1", "batteryLevelStart": 45})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server
        .api(
            "PUT",
            "/api/charging/sessions/active/update",
            t,
            Some(json!({"batteryLevel": 52, "energyDelivered": 7.35})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["data"]["duration"].clone(),
            body["data"]["averagePower"].clone()
        ),
        (json!(0), json!(0)),
        "{body}"
    );
    let session = active_session(&server, &token).await;
    assert_eq!(session["averagePower"], json!(0), "{session}");
    server.stop().await;
}

/// JSON endpoints read JSON only: a body sent as text/plain (or with no
/// Content-Type) is refused with 415 and applied nowhere, even when the text
/// happens to be JSON. `application/json` with parameters and
/// `application/*+json` are JSON.
async fn a_body_that_is_not_json_is_415_and_changes_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (user, token) = server.register("ada@example.com").await;
    let t = Some(token.as_str());
    let admin = server.token("ops", "admin");
    let start = r#"{"stationId": "evliter-lagos-victoria-island", "connectorId": "connector-1", "batteryLevelStart": 45}"#;
    let update = r#"{"batteryLevel": 60, "energyDelivered": 9}"#;

    for content_type in [
        Some("text/plain"),
        Some("text/plain; charset=utf-8"),
        Some("application/x-www-form-urlencoded"),
        Some("application/jsonx"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let (status, reply) = server
            .api_typed(
                "POST",
                "/api/charging/sessions/start",
                t,
                content_type,
                start,
            )
            .await;
        assert_eq!(
            (status, reply["code"].as_str(), reply["success"].as_bool()),
            (415, Some("UNSUPPORTED_MEDIA_TYPE"), Some(false)),
            "{content_type:?}: {reply}"
        );
    }
    assert_eq!(active_session(&server, &token).await, Value::Null);

    // With parameters, in any case, or a +json type: JSON.
    let (status, reply) = server
        .api_typed(
            "POST",
            "/api/charging/sessions/start",
            t,
            Some("Application/JSON; charset=utf-8"),
            start,
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    let (status, reply) = server
        .api_typed(
            "PUT",
            "/api/charging/sessions/active/update",
            t,
            Some("application/merge-patch+json"),
            r#"{"batteryLevel": 52, "energyDelivered": 4.2}"#,
        )
        .await;
    assert_eq!(status, 200, "{reply}");

    // A text/plain update is not applied.
    let (status, reply) = server
        .api_typed(
            "PUT",
            "/api/charging/sessions/active/update",
            t,
            Some("text/plain"),
            update,
        )
        .await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (415, Some("UNSUPPORTED_MEDIA_TYPE")),
        "{reply}"
    );
    let session = active_session(&server, &token).await;
    assert_eq!(
        (
            session["energyDelivered"].clone(),
            session["batteryLevel"].clone()
        ),
        (json!(4.2), json!(52))
    );

    // The operator and payment APIs alike.
    let (status, _) = server
        .api_typed(
            "PUT",
            "/api/admin/stations/ST-TEXT",
            Some(&admin),
            Some("text/plain"),
            r#"{"name": "Text", "pricePerKWh": 1, "currency": "NGN"}"#,
        )
        .await;
    assert_eq!(status, 415);
    let (status, _) = server
        .api("GET", "/api/admin/stations/ST-TEXT", Some(&admin), None)
        .await;
    assert_eq!(status, 404, "nothing was stored");
    let (status, _) = server
        .api_typed(
            "POST",
            &format!("/api/admin/users/{user}/wallet/credit"),
            Some(&admin),
            Some("text/plain"),
            r#"{"amount": 5000, "currency": "NGN"}"#,
        )
        .await;
    assert_eq!(status, 415);
    let (_, wallet) = server
        .api("GET", &format!("/api/v1/user/{user}/wallet"), t, None)
        .await;
    assert_eq!(wallet["data"], json!([]), "no credit was posted");
    server.stop().await;
}

/// Currencies come from the ISO 4217 table: a code it does not know (or one
/// with no minor unit, like gold) is refused instead of priced with two
/// digits. A mixed-case wallet address is an EIP-55 checksum and must be
/// right; one case throughout carries none and is taken as it is.
async fn unknown_currencies_and_bad_wallet_checksums_are_a_400_and_store_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token("ops", "admin");
    let a = Some(admin.as_str());

    for currency in ["ABC", "XAU", "N1N"] {
        let (status, reply) = server
            .api(
                "PUT",
                "/api/admin/stations/ST-CURRENCY",
                a,
                Some(json!({"name": "Currency", "pricePerKWh": 10, "currency": currency})),
            )
            .await;
        assert_rejected(status, &reply, "currency");
        assert!(
            reply["details"]["reason"]
                .as_str()
                .is_some_and(|m| m.contains(currency) || m.contains("three-letter")),
            "{reply}"
        );
    }
    let (status, _) = server
        .api("GET", "/api/admin/stations/ST-CURRENCY", a, None)
        .await;
    assert_eq!(status, 404, "nothing was stored");
    // Minor units from the table: three for KWD.
    let (status, reply) = server
        .api(
            "PUT",
            "/api/admin/stations/ST-CURRENCY",
            a,
            Some(json!({"name": "Currency", "pricePerKWh": 10, "currency": "kwd"})),
        )
        .await;
    assert_eq!(status, 200, "{reply}");

    let (user, token) = server.register("checksum@example.com").await;
    let wrong = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD";
    let (status, reply) = server
        .api(
            "POST",
            &format!("/api/admin/users/{user}/wallet/credit"),
            a,
            Some(json!({"amount": 50, "currency": "XYZ"})),
        )
        .await;
    assert_rejected(status, &reply, "currency");
    let (status, reply) = server
        .api(
            "POST",
            &format!("/api/admin/users/{user}/wallet/credit"),
            a,
            Some(json!({"amount": 50, "currency": "NGN", "walletAddress": wrong})),
        )
        .await;
    assert_rejected(status, &reply, "walletAddress");
    assert!(reply.to_string().contains("EIP-55"), "{reply}");
    let (_, wallet) = server
        .api(
            "GET",
            &format!("/api/v1/user/{user}/wallet"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(wallet["data"], json!([]), "no credit was posted");

    let (status, reply) = server
        .api(
            "POST",
            "/api/v1/session/start",
            Some(&token),
            Some(
                json!({"userId": user, "chargerId": DEMO, "walletAddress": wrong,
                        "chain": "ledger", "expectedMaxCost": 10}),
            ),
        )
        .await;
    assert_rejected(status, &reply, "walletAddress");
    let (_, checks) = server
        .api(
            "GET",
            &format!("/api/v1/user/{user}/balance-checks"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(checks["data"], json!([]), "no balance check was recorded");

    // The right checksum, all lower case and all upper case are one wallet.
    for (i, address) in [
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
        "0x5AAEB6053F3E94C9B9A09F33669435E7EF1BEAED",
    ]
    .into_iter()
    .enumerate()
    {
        let (status, reply) = server
            .api(
                "POST",
                &format!("/api/admin/users/{user}/wallet/credit"),
                a,
                Some(json!({"amount": 50, "currency": "NGN", "walletAddress": address})),
            )
            .await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["data"]["balance"], json!(50 * (i + 1)), "{reply}");
    }
    server.stop().await;
}
