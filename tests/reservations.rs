//! Reservations kept by the server: the reservationId it allocates,
//! ReserveNow and the charger's answer, use by a StartTransaction,
//! CancelReservation, expiry, a driver's own reservations, and errors that
//! change nothing.

mod common;

use chrono::{Duration as ChronoDuration, Utc};
use common::*;
use csms::ocpp::time::format_ms;
use serde_json::{json, Value};
use std::time::Duration;

on_both_backends!(
    an_operator_reservation_is_accepted_and_used_by_the_start_transaction,
    a_driver_reserves_with_their_own_id_tag_and_sees_only_theirs,
    a_reservation_expires_at_its_expiry_date,
    a_start_naming_another_reservation_does_not_use_it,
    errors_change_nothing,
    only_live_reservations_past_their_expiry_are_read,
);

fn in_an_hour() -> String {
    format_ms(Utc::now() + ChronoDuration::hours(1))
}

async fn reservation(server: &TestServer, admin: &str, id: i64) -> Value {
    let (status, body) = server
        .api(
            "GET",
            &format!("/api/admin/reservations/{id}"),
            Some(admin),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

/// Reserves through the operator API while the test charger answers
/// ReserveNow with `answer`: (HTTP status, body, ReserveNow payload).
async fn reserve(
    server: &TestServer,
    charger: &mut TestCharger,
    admin: &str,
    body: Value,
    answer: &str,
) -> (u16, Value, Value) {
    let pending = server.post_in_background(admin, "/api/admin/reservations", body);
    let (id, action, payload) = charger.expect_call().await;
    assert_eq!(action, "ReserveNow");
    charger.reply(&id, json!({"status": answer})).await;
    let (status, body) = pending.await.unwrap();
    (status, body, payload)
}

async fn an_operator_reservation_is_accepted_and_used_by_the_start_transaction(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token("ops", "admin");
    server.user_with_tag("driver-1", "CARD-1").await;
    let mut charger = server.booted_charger("CP-R1").await;
    let expiry = in_an_hour();

    let (status, body, sent) = reserve(
        &server,
        &mut charger,
        &admin,
        json!({"chargerId": "CP-R1", "connectorId": 1, "idTag": "card-1", "expiryDate": expiry}),
        "Accepted",
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let r = &body["data"];
    let id = r["id"]
        .as_i64()
        .expect("the server allocates the reservationId");
    // The charger is told what the server keeps.
    assert_eq!(sent["reservationId"], id);
    assert_eq!(sent["connectorId"], 1);
    assert_eq!(sent["idTag"], "CARD-1", "the tag as it was entered");
    assert_eq!(sent["expiryDate"], expiry);
    assert_eq!(r["status"], "accepted");
    assert_eq!(r["chargerId"], "CP-R1");
    assert_eq!(r["userId"], "driver-1");
    assert_eq!(r["expiryDate"], expiry);

    // Listed, by charger and by status.
    let (_, list) = server
        .api(
            "GET",
            "/api/admin/reservations?chargerId=CP-R1&status=accepted",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(list["pagination"]["total"], 1, "{list}");
    assert_eq!(list["data"][0]["id"], id);

    // The connector is held: a second reservation is refused before any
    // ReserveNow is sent.
    let (status, body) = server
        .api(
            "POST",
            "/api/admin/reservations",
            Some(&admin),
            Some(json!({"chargerId": "CP-R1", "connectorId": 1, "idTag": "CARD-1", "expiryDate": in_an_hour()})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "CONNECTOR_RESERVED");

    // The driver arrives: the charger's StartTransaction names the
    // reservation, which is used in the same commit as the transaction.
    let start = charger
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "CARD-1", "meterStart": 0,
                   "timestamp": format_ms(Utc::now()), "reservationId": id}),
        )
        .await;
    assert_eq!(start["idTagInfo"]["status"], "Accepted");
    let tx = start["transactionId"].as_i64().unwrap();
    let r = reservation(&server, &admin, id).await;
    assert_eq!(r["status"], "used");
    assert_eq!(r["transactionId"], tx);

    // A used reservation is over: cancelling it is a conflict and sends nothing.
    let (status, body) = server
        .api(
            "DELETE",
            &format!("/api/admin/reservations/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "RESERVATION_NOT_LIVE");
    assert!(charger
        .try_next_frame(Duration::from_millis(300))
        .await
        .is_none());
    server.stop().await;
}

async fn a_driver_reserves_with_their_own_id_tag_and_sees_only_theirs(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token("ops", "admin");
    let (ada, ada_token) = server.register("ada@example.com").await;
    let (_bob, bob_token) = server.register("bob@example.com").await;
    server
        .id_tag("ADA-CARD", Some(&ada), "Accepted", None)
        .await;
    let mut charger = server.booted_charger("CP-R2").await;

    let pending = server.post_in_background(
        &ada_token,
        "/api/charging/reservations",
        json!({"stationId": "CP-R2", "connectorId": "connector-1", "minutes": 30}),
    );
    let (msg, action, payload) = charger.expect_call().await;
    assert_eq!(action, "ReserveNow");
    assert_eq!(payload["idTag"], "ADA-CARD", "the driver's own idTag");
    assert_eq!(payload["connectorId"], 1);
    charger.reply(&msg, json!({"status": "Accepted"})).await;
    let (status, body) = pending.await.unwrap();
    assert_eq!(status, 201, "{body}");
    let id = body["data"]["id"].as_i64().unwrap();
    assert_eq!(body["data"]["userId"], ada);
    let expiry =
        chrono::DateTime::parse_from_rfc3339(body["data"]["expiryDate"].as_str().unwrap()).unwrap();
    let minutes = (expiry.with_timezone(&Utc) - Utc::now()).num_seconds() as f64 / 60.0;
    assert!(
        (29.0..=30.0).contains(&minutes),
        "held for 30 minutes: {minutes}"
    );

    // Each driver sees only their own.
    let (_, mine) = server
        .api("GET", "/api/charging/reservations", Some(&ada_token), None)
        .await;
    assert_eq!(mine["pagination"]["total"], 1, "{mine}");
    assert_eq!(mine["data"][0]["id"], id);
    let (_, theirs) = server
        .api("GET", "/api/charging/reservations", Some(&bob_token), None)
        .await;
    assert_eq!(theirs["pagination"]["total"], 0, "{theirs}");
    let path = format!("/api/charging/reservations/{id}");
    let (status, _) = server.api("GET", &path, Some(&bob_token), None).await;
    assert_eq!(status, 403);
    let (status, _) = server.api("DELETE", &path, Some(&bob_token), None).await;
    assert_eq!(status, 403);
    assert!(
        charger
            .try_next_frame(Duration::from_millis(300))
            .await
            .is_none(),
        "nothing sent for Bob"
    );
    assert_eq!(reservation(&server, &admin, id).await["status"], "accepted");

    // Bob, who has no card, reserves another connector with a tag made for
    // him; the charger says it is occupied: kept with that answer, and a 409.
    let pending = server.post_in_background(
        &bob_token,
        "/api/charging/reservations",
        json!({"stationId": "CP-R2", "connectorId": 2, "minutes": 10}),
    );
    let (msg, _, payload) = charger.expect_call().await;
    assert!(
        payload["idTag"].as_str().unwrap().starts_with("APP"),
        "{payload}"
    );
    charger.reply(&msg, json!({"status": "Occupied"})).await;
    let (status, body) = pending.await.unwrap();
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "CHARGER_REJECTED");
    assert_eq!(body["details"]["status"], "occupied");
    let bobs = body["details"]["reservationId"].as_i64().unwrap();
    let (_, theirs) = server
        .api("GET", "/api/charging/reservations", Some(&bob_token), None)
        .await;
    assert_eq!(theirs["data"][0]["id"], bobs);
    assert_eq!(theirs["data"][0]["status"], "occupied");

    // Ada cancels hers: CancelReservation with its id.
    let url = server.http_url(&path);
    let cancel = tokio::spawn({
        let token = ada_token.clone();
        async move {
            let r = http().delete(url).bearer_auth(token).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    });
    let (msg, action, payload) = charger.expect_call().await;
    assert_eq!(action, "CancelReservation");
    assert_eq!(payload, json!({"reservationId": id}));
    charger.reply(&msg, json!({"status": "Accepted"})).await;
    let (status, body) = cancel.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["status"], "cancelled");
    // The connector is free again.
    let (status, body, _) = reserve(
        &server,
        &mut charger,
        &admin,
        json!({"chargerId": "CP-R2", "connectorId": 1, "idTag": "ADA-CARD", "expiryDate": in_an_hour()}),
        "Accepted",
    )
    .await;
    assert_eq!(status, 201, "{body}");
    server.stop().await;
}

async fn a_reservation_expires_at_its_expiry_date(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token("ops", "admin");
    server.user_with_tag("driver-1", "CARD-1").await;
    let mut charger = server.booted_charger("CP-R3").await;
    let expiry = Utc::now() + ChronoDuration::milliseconds(1500);
    let (status, body, _) = reserve(
        &server,
        &mut charger,
        &admin,
        json!({"chargerId": "CP-R3", "connectorId": 1, "idTag": "CARD-1", "expiryDate": format_ms(expiry)}),
        "Accepted",
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["data"]["id"].as_i64().unwrap();
    assert_eq!(body["data"]["status"], "accepted");
    let expired_at = eventually("the reservation to expire", Duration::from_secs(10), || {
        let (server, admin) = (&server, &admin);
        async move {
            let r = reservation(server, admin, id).await;
            (r["status"] == "expired").then(Utc::now)
        }
    })
    .await;
    assert!(expired_at >= expiry, "not before its expiry");
    // An expired reservation is not used by a late start.
    let start = charger
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "CARD-1", "meterStart": 0,
                   "timestamp": format_ms(Utc::now()), "reservationId": id}),
        )
        .await;
    assert!(start["transactionId"].is_i64());
    let r = reservation(&server, &admin, id).await;
    assert_eq!(r["status"], "expired");
    assert!(r["transactionId"].is_null());
    server.stop().await;
}

async fn a_start_naming_another_reservation_does_not_use_it(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token("ops", "admin");
    server.user_with_tag("driver-1", "CARD-1").await;
    server.user_with_tag("driver-2", "CARD-2").await;
    let mut charger = server.booted_charger("CP-R4").await;
    let (_, body, _) = reserve(
        &server,
        &mut charger,
        &admin,
        json!({"chargerId": "CP-R4", "connectorId": 1, "idTag": "CARD-1", "expiryDate": in_an_hour()}),
        "Accepted",
    )
    .await;
    let id = body["data"]["id"].as_i64().unwrap();
    // Another driver's card names it: the transaction is kept, the
    // reservation is not used, and an operator sees why.
    charger
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "CARD-2", "meterStart": 0,
                   "timestamp": format_ms(Utc::now()), "reservationId": id}),
        )
        .await;
    assert_eq!(reservation(&server, &admin, id).await["status"], "accepted");
    let (_, anomalies) = server
        .api(
            "GET",
            "/api/admin/anomalies?chargerId=CP-R4",
            Some(&admin),
            None,
        )
        .await;
    let found = anomalies["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "reservation_not_used")
        .unwrap_or_else(|| panic!("an anomaly: {anomalies}"))
        .clone();
    assert_eq!(found["detail"]["reservationId"], id);
    assert_eq!(
        found["detail"]["reason"],
        "the reservation is for another idTag"
    );
    server.stop().await;
}

async fn errors_change_nothing(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.ocpp_call_timeout = Duration::from_millis(500);
    })
    .await;
    let admin = server.token("ops", "admin");
    let (_, driver) = server.register("dee@example.com").await;
    server.user_with_tag("driver-1", "CARD-1").await;
    let mut charger = server.booted_charger("CP-R5").await;
    // A charger that is known but offline.
    server.booted_charger("CP-OFF").await.close().await;
    until("CP-OFF offline", Duration::from_secs(5), || async {
        !server.state.registry.is_connected("CP-OFF")
    })
    .await;

    let good = json!({"chargerId": "CP-R5", "connectorId": 1, "idTag": "CARD-1", "expiryDate": in_an_hour()});
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    let cases = [
        (
            with("chargerId", json!("CP-OFF")),
            409,
            "CHARGER_OFFLINE",
            None,
        ),
        (
            with("chargerId", json!("CP-NOBODY")),
            404,
            "NOT_FOUND",
            None,
        ),
        (with("idTag", json!("NO-SUCH-TAG")), 404, "NOT_FOUND", None),
        (
            with("connectorId", json!(-1)),
            400,
            "VALIDATION_ERROR",
            Some("connectorId"),
        ),
        (
            with("connectorId", json!(1.5)),
            400,
            "VALIDATION_ERROR",
            Some("connectorId"),
        ),
        (
            with("connectorId", json!(1001)),
            400,
            "VALIDATION_ERROR",
            Some("connectorId"),
        ),
        (
            with("expiryDate", json!("tomorrow")),
            400,
            "VALIDATION_ERROR",
            Some("expiryDate"),
        ),
        (
            with(
                "expiryDate",
                json!(format_ms(Utc::now() - ChronoDuration::minutes(1))),
            ),
            400,
            "VALIDATION_ERROR",
            Some("expiryDate"),
        ),
        (
            with(
                "expiryDate",
                json!(format_ms(Utc::now() + ChronoDuration::days(3))),
            ),
            400,
            "VALIDATION_ERROR",
            Some("expiryDate"),
        ),
        (
            with("idTag", Value::Null),
            400,
            "VALIDATION_ERROR",
            Some("idTag"),
        ),
    ];
    for (body, status, code, field) in cases {
        let (got, answer) = server
            .api(
                "POST",
                "/api/admin/reservations",
                Some(&admin),
                Some(body.clone()),
            )
            .await;
        assert_eq!(got, status, "{body} → {answer}");
        assert_eq!(answer["code"], code, "{answer}");
        if let Some(field) = field {
            assert_eq!(answer["details"]["field"], field, "{answer}");
        }
    }
    let driver_cases = [
        (
            json!({"stationId": "CP-R5", "connectorId": 1, "minutes": 0}),
            400,
            Some("minutes"),
        ),
        (
            json!({"stationId": "CP-R5", "connectorId": 1, "minutes": 1441}),
            400,
            Some("minutes"),
        ),
        (
            json!({"stationId": "CP-R5", "connectorId": 0, "minutes": 10}),
            400,
            Some("connectorId"),
        ),
        (
            json!({"stationId": "CP-R5", "minutes": 10}),
            400,
            Some("connectorId"),
        ),
        (
            json!({"stationId": "CP-OFF", "connectorId": 1, "minutes": 10}),
            409,
            None,
        ),
        (
            json!({"stationId": "CP-NOBODY", "connectorId": 1, "minutes": 10}),
            404,
            None,
        ),
    ];
    for (body, status, field) in driver_cases {
        let (got, answer) = server
            .api(
                "POST",
                "/api/charging/reservations",
                Some(&driver),
                Some(body.clone()),
            )
            .await;
        assert_eq!(got, status, "{body} → {answer}");
        if let Some(field) = field {
            assert_eq!(answer["details"]["field"], field, "{answer}");
        }
    }
    // A driver may not use the operator API.
    let (status, _) = server
        .api(
            "POST",
            "/api/admin/reservations",
            Some(&driver),
            Some(good.clone()),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = server
        .api("GET", "/api/admin/reservations/12345", Some(&admin), None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = server
        .api(
            "DELETE",
            "/api/charging/reservations/nope",
            Some(&driver),
            None,
        )
        .await;
    assert_eq!(status, 404);
    // None of that stored anything, or reached the charger.
    assert!(charger
        .try_next_frame(Duration::from_millis(300))
        .await
        .is_none());
    let (_, list) = server
        .api("GET", "/api/admin/reservations", Some(&admin), None)
        .await;
    assert_eq!(list["pagination"]["total"], 0, "{list}");

    // A charger that does not answer: 504, and the reservation stays
    // pending (the charger may hold it), to be cancelled or to expire.
    let pending = server.post_in_background(&admin, "/api/admin/reservations", good.clone());
    let (_, action, _) = charger.expect_call().await;
    assert_eq!(action, "ReserveNow");
    let (status, body) = pending.await.unwrap();
    assert_eq!(status, 504, "{body}");
    let (_, list) = server
        .api("GET", "/api/admin/reservations", Some(&admin), None)
        .await;
    assert_eq!(list["pagination"]["total"], 1, "{list}");
    assert_eq!(list["data"][0]["status"], "pending");
    let id = list["data"][0]["id"].as_i64().unwrap();
    // Cancelling it while the charger stays silent changes nothing either.
    let url = server.http_url(&format!("/api/admin/reservations/{id}"));
    let cancel = tokio::spawn({
        let admin = admin.clone();
        async move {
            let r = http().delete(url).bearer_auth(admin).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    });
    let (_, action, _) = charger.expect_call().await;
    assert_eq!(action, "CancelReservation");
    let (status, body) = cancel.await.unwrap();
    assert_eq!(status, 504, "{body}");
    assert_eq!(reservation(&server, &admin, id).await["status"], "pending");
    server.stop().await;
}

async fn only_live_reservations_past_their_expiry_are_read(backend: Backend) {
    use chrono::TimeZone;
    use csms::store::NewReservation;
    let db = TestDatabase::new(backend).await;
    let store = csms::store::connect(&db.url).await.unwrap();
    let moment = Utc.with_ymd_and_hms(2030, 6, 1, 12, 0, 0).unwrap();
    let now = moment + ChronoDuration::microseconds(500);
    let expiries = [
        ("due, whole second", moment, true),
        (
            "due, 9 digits",
            moment + ChronoDuration::nanoseconds(499_001),
            true,
        ),
        ("due, exactly now", now, true),
        (
            "not due, 3 digits",
            moment + ChronoDuration::milliseconds(1),
            false,
        ),
        (
            "not due, an hour ahead",
            moment + ChronoDuration::hours(1),
            false,
        ),
    ];
    let mut due = Vec::new();
    for (n, (what, expiry, is_due)) in expiries.iter().enumerate() {
        let r = store
            .insert_reservation(&NewReservation {
                charger_id: "CP".into(),
                connector_id: n as i64 + 1,
                id_tag: "TAG".into(),
                parent_id_tag: None,
                user_id: None,
                expiry_date: *expiry,
                created_at: moment,
            })
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{what} stored"));
        if *is_due {
            due.push(r.id);
        }
    }
    // Past its expiry but no longer live: never read.
    let ended = store
        .insert_reservation(&NewReservation {
            charger_id: "CP".into(),
            connector_id: 99,
            id_tag: "TAG".into(),
            parent_id_tag: None,
            user_id: None,
            expiry_date: moment - ChronoDuration::hours(1),
            created_at: moment,
        })
        .await
        .unwrap()
        .unwrap();
    assert!(store
        .end_live_reservation(ended.id, "cancelled", moment)
        .await
        .unwrap());
    let mut read: Vec<i64> = store
        .live_reservations_expired_by(now)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    read.sort();
    due.sort();
    assert_eq!(read, due);
    // Once expired, a reservation is not live: nothing moves it again.
    for id in &due {
        assert!(store
            .end_live_reservation(*id, "expired", now)
            .await
            .unwrap());
        assert!(!store.end_live_reservation(*id, "used", now).await.unwrap());
    }
    assert!(store
        .live_reservations_expired_by(now)
        .await
        .unwrap()
        .is_empty());
}
