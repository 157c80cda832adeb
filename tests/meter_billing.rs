//! What a charger's meter is billed for, in the cases independent chargers
//! showed us wrong: readings after the stop, whatever order they arrive in;
//! a stop without a reason; rounding that is not a meter reset; timestamps
//! days ahead; connectors the charger does not have; idTags kept as entered.
//! Every test runs the real server on SQLite and on PostgreSQL.

mod common;

use common::*;
use serde_json::{json, Value};

on_both_backends!(
    readings_after_the_stop_sent_before_it_are_kept_flagged_and_not_billed,
    readings_after_the_stop_sent_after_it_are_kept_flagged_and_not_billed,
    a_stop_after_a_close_bills_the_chargers_own_figure,
    a_stop_without_a_reason_is_local,
    rounding_below_one_wh_is_not_a_meter_going_backwards,
    a_stop_days_in_the_future_is_flagged_and_does_not_stretch_the_session,
    a_connector_the_charger_does_not_have_is_answered_and_flagged,
    id_tags_are_kept_and_sent_as_entered_and_compared_without_case,
);

const PRICE_NGN: i64 = 165;

/// A station priced at 165 NGN/kWh whose id is the charger's, and a driver
/// whose idTag the charger starts with.
async fn charger_with_driver(server: &TestServer, id: &str) -> TestCharger {
    let admin = server.token("ops", "admin");
    let (status, body) = server
        .api(
            "PUT",
            &format!("/api/admin/stations/{id}"),
            Some(&admin),
            Some(json!({"name": format!("Hub {id}"), "pricePerKWh": PRICE_NGN, "currency": "NGN"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    server.user_with_tag("driver-1", "TAG-1").await;
    server.booted_charger(id).await
}

async fn start(charger: &mut TestCharger, meter_start: i64, at: &str) -> i64 {
    let answer = charger
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "TAG-1", "meterStart": meter_start, "timestamp": at}),
        )
        .await;
    assert_eq!(answer["idTagInfo"]["status"], "Accepted");
    answer["transactionId"].as_i64().unwrap()
}

async fn meter(charger: &mut TestCharger, tx: i64, at: &str, wh: f64) {
    let answer = charger
        .call(
            "MeterValues",
            json!({"connectorId": 1, "transactionId": tx, "meterValue": [meter_sample(at, wh, None)]}),
        )
        .await;
    assert_eq!(answer, json!({}));
}

async fn anomaly_kinds(server: &TestServer, charger: &str) -> Vec<String> {
    server
        .state
        .store
        .anomalies(Some(charger), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.kind)
        .collect()
}

/// The driver's session of a transaction, as the REST API shows it.
async fn session_of(server: &TestServer, tx: i64) -> Value {
    let session = server
        .state
        .store
        .session_of_transaction(tx)
        .await
        .unwrap()
        .expect("the transaction has a session");
    let token = server.token(&session.user_id, "driver");
    let (status, body) = server
        .api(
            "GET",
            &format!("/api/charging/sessions/{}", session.id),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

/// 2 kWh at 165 NGN is 330 NGN.
fn assert_billed_two_kwh(session: &Value) {
    assert_eq!(session["status"], "completed", "{session}");
    assert_eq!(session["energyDelivered"], 2.0, "{session}");
    assert_eq!(session["totalCost"], 2 * PRICE_NGN, "{session}");
}

async fn readings_after_the_stop_sent_before_it_are_kept_flagged_and_not_billed(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut charger = charger_with_driver(&server, "CP-LATE-1").await;
    let tx = start(&mut charger, 0, "2024-01-15T10:00:00Z").await;
    meter(&mut charger, tx, "2024-01-15T10:10:00Z", 1000.0).await;
    // The charger stopped at 10:20 while offline, went on sampling, and on
    // reconnecting delivers those samples before its StopTransaction.
    meter(&mut charger, tx, "2024-01-15T10:25:00Z", 3000.0).await;
    meter(&mut charger, tx, "2024-01-15T10:30:00Z", 3500.0).await;
    charger
        .call(
            "StopTransaction",
            json!({"transactionId": tx, "meterStop": 2000, "timestamp": "2024-01-15T10:20:00Z", "reason": "EVDisconnected"}),
        )
        .await;

    let record = server.state.store.transaction(tx).await.unwrap().unwrap();
    assert_eq!(
        (record.status.as_str(), record.energy_wh),
        ("stopped", 2000.0)
    );
    let session = session_of(&server, tx).await;
    assert_billed_two_kwh(&session);
    assert_eq!(session["endTime"], "2024-01-15T10:20:00.000Z");
    assert_eq!(session["duration"], 20);
    // Every reading is kept; the late ones are flagged.
    assert_eq!(server.state.store.meter_values(tx).await.unwrap().len(), 3);
    assert!(anomaly_kinds(&server, "CP-LATE-1")
        .await
        .contains(&"readings_after_stop".to_owned()));
    server.stop().await;
}

async fn readings_after_the_stop_sent_after_it_are_kept_flagged_and_not_billed(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut charger = charger_with_driver(&server, "CP-LATE-2").await;
    let tx = start(&mut charger, 0, "2024-01-15T10:00:00Z").await;
    meter(&mut charger, tx, "2024-01-15T10:10:00Z", 1000.0).await;
    charger
        .call(
            "StopTransaction",
            json!({"transactionId": tx, "meterStop": 2000, "timestamp": "2024-01-15T10:20:00Z", "reason": "Local"}),
        )
        .await;
    meter(&mut charger, tx, "2024-01-15T10:25:00Z", 3000.0).await;

    let record = server.state.store.transaction(tx).await.unwrap().unwrap();
    assert_eq!(record.energy_wh, 2000.0);
    assert_billed_two_kwh(&session_of(&server, tx).await);
    assert_eq!(server.state.store.meter_values(tx).await.unwrap().len(), 2);
    assert!(anomaly_kinds(&server, "CP-LATE-2")
        .await
        .contains(&"readings_after_stop".to_owned()));
    server.stop().await;
}

async fn a_stop_after_a_close_bills_the_chargers_own_figure(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut charger = charger_with_driver(&server, "CP-LATE-3").await;
    let tx = start(&mut charger, 0, "2024-01-15T10:00:00Z").await;
    meter(&mut charger, tx, "2024-01-15T10:10:00Z", 1000.0).await;
    meter(&mut charger, tx, "2024-01-15T10:30:00Z", 3500.0).await;
    // After reconnecting the charger reports its connector free before it
    // delivers the queued StopTransaction: the transaction is closed at its
    // last reading, and the real stop then brings the charger's own figure.
    charger
        .call(
            "StatusNotification",
            json!({"connectorId": 1, "errorCode": "NoError", "status": "Available", "timestamp": "2024-01-15T10:31:00Z"}),
        )
        .await;
    assert_eq!(session_of(&server, tx).await["energyDelivered"], 3.5);
    charger
        .call(
            "StopTransaction",
            json!({"transactionId": tx, "meterStop": 2000, "timestamp": "2024-01-15T10:20:00Z", "reason": "EVDisconnected"}),
        )
        .await;

    let record = server.state.store.transaction(tx).await.unwrap().unwrap();
    assert_eq!(
        (record.status.as_str(), record.energy_wh),
        ("stopped", 2000.0)
    );
    let session = session_of(&server, tx).await;
    assert_billed_two_kwh(&session);
    assert_eq!(session["endReason"], "EVDisconnected");
    assert_eq!(session["endTime"], "2024-01-15T10:20:00.000Z");
    server.stop().await;
}

async fn a_stop_without_a_reason_is_local(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut charger = charger_with_driver(&server, "CP-LOCAL").await;
    let tx = start(&mut charger, 0, "2024-01-15T10:00:00Z").await;
    charger
        .call(
            "StopTransaction",
            json!({"transactionId": tx, "meterStop": 2000, "timestamp": "2024-01-15T10:20:00Z"}),
        )
        .await;
    let record = server.state.store.transaction(tx).await.unwrap().unwrap();
    assert_eq!(record.stop_reason.as_deref(), Some("Local"));
    let session = session_of(&server, tx).await;
    assert_eq!(session["endReason"], "Local");
    assert_billed_two_kwh(&session);
    server.stop().await;
}

async fn rounding_below_one_wh_is_not_a_meter_going_backwards(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut charger = charger_with_driver(&server, "CP-ROUND").await;
    let tx = start(&mut charger, 0, "2024-01-15T10:00:00Z").await;
    meter(&mut charger, tx, "2024-01-15T10:01:00Z", 98.26).await;
    // The end value in transactionData and meterStop are whole Wh.
    let end = json!({"timestamp": "2024-01-15T10:02:00Z", "sampledValue": [
        {"value": "98", "measurand": "Energy.Active.Import.Register", "unit": "Wh", "context": "Transaction.End"}]});
    charger
        .call(
            "StopTransaction",
            json!({"transactionId": tx, "meterStop": 98, "timestamp": "2024-01-15T10:02:00Z", "reason": "Local", "transactionData": [end]}),
        )
        .await;
    let record = server.state.store.transaction(tx).await.unwrap().unwrap();
    assert_eq!(record.energy_wh, 98.0);
    assert_eq!(
        anomaly_kinds(&server, "CP-ROUND").await,
        Vec::<String>::new()
    );

    // A real drop (a whole Wh or more) still is one.
    let tx = start(&mut charger, 1000, "2024-01-15T11:00:00Z").await;
    meter(&mut charger, tx, "2024-01-15T11:01:00Z", 1500.0).await;
    meter(&mut charger, tx, "2024-01-15T11:02:00Z", 1498.9).await;
    assert!(anomaly_kinds(&server, "CP-ROUND")
        .await
        .contains(&"register_went_backwards".to_owned()));
    server.stop().await;
}

async fn a_stop_days_in_the_future_is_flagged_and_does_not_stretch_the_session(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut charger = charger_with_driver(&server, "CP-FUTURE").await;
    let now = chrono::Utc::now();
    let started = (now - chrono::Duration::minutes(30)).to_rfc3339();
    let tx = start(&mut charger, 0, &started).await;
    let two_days_ahead = (now + chrono::Duration::days(2)).to_rfc3339();
    charger
        .call(
            "StopTransaction",
            json!({"transactionId": tx, "meterStop": 2000, "timestamp": two_days_ahead, "reason": "Local"}),
        )
        .await;
    let after = chrono::Utc::now();
    let session = session_of(&server, tx).await;
    assert_eq!(session["status"], "completed");
    let end: chrono::DateTime<chrono::Utc> = session["endTime"].as_str().unwrap().parse().unwrap();
    assert!(end <= after, "the session ends by its arrival: {session}");
    assert_eq!(session["duration"], 30, "{session}");
    assert!(anomaly_kinds(&server, "CP-FUTURE")
        .await
        .contains(&"timestamp_in_future".to_owned()));
    server.stop().await;
}

async fn a_connector_the_charger_does_not_have_is_answered_and_flagged(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut charger = charger_with_driver(&server, "CP-TWO").await;
    for connector in [0, 1, 2] {
        charger
            .call(
                "StatusNotification",
                json!({"connectorId": connector, "errorCode": "NoError", "status": "Available"}),
            )
            .await;
    }
    assert!(anomaly_kinds(&server, "CP-TWO").await.is_empty());
    let answer = charger
        .call(
            "StartTransaction",
            json!({"connectorId": 99, "idTag": "TAG-1", "meterStart": 0, "timestamp": "2024-01-15T10:00:00Z"}),
        )
        .await;
    let tx = answer["transactionId"]
        .as_i64()
        .expect("answered all the same");
    charger
        .call(
            "MeterValues",
            json!({"connectorId": 99, "transactionId": tx, "meterValue": [meter_sample("2024-01-15T10:01:00Z", 10.0, None)]}),
        )
        .await;
    charger
        .call(
            "StatusNotification",
            json!({"connectorId": 99, "errorCode": "NoError", "status": "Charging"}),
        )
        .await;
    let unknown = anomaly_kinds(&server, "CP-TWO")
        .await
        .into_iter()
        .filter(|k| k == "unknown_connector")
        .count();
    assert_eq!(
        unknown, 3,
        "start, meter values and status are each flagged"
    );
    // The transaction and its reading are kept.
    assert_eq!(server.state.store.meter_values(tx).await.unwrap().len(), 1);
    server.stop().await;
}

async fn id_tags_are_kept_and_sent_as_entered_and_compared_without_case(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token("ops", "admin");
    let (_, token) = server.register("mixed@example.com").await;
    let (_, me) = server.api("GET", "/api/auth/me", Some(&token), None).await;
    let user_id = me["data"]["id"].as_str().unwrap().to_owned();
    let (status, body) = server
        .api(
            "PUT",
            "/api/admin/id-tags/PTAGf4eff3",
            Some(&admin),
            Some(json!({"userId": user_id})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["idTag"], "PTAGf4eff3");
    // The same tag in another case is the same tag, and keeps its spelling.
    let (status, body) = server
        .api(
            "PUT",
            "/api/admin/id-tags/ptagF4EFF3",
            Some(&admin),
            Some(json!({"userId": user_id, "status": "Accepted"})),
        )
        .await;
    assert_eq!(
        (status, &body["data"]["idTag"]),
        (200, &json!("PTAGf4eff3"))
    );
    let (status, body) = server
        .api("GET", "/api/admin/id-tags/PTAGF4EFF3", Some(&admin), None)
        .await;
    assert_eq!(
        (status, &body["data"]["idTag"]),
        (200, &json!("PTAGf4eff3"))
    );

    let mut charger = server.booted_charger("CP-CASE").await;
    let authorized = charger
        .call("Authorize", json!({"idTag": "PTAGF4EFF3"}))
        .await;
    assert_eq!(authorized["idTagInfo"]["status"], "Accepted");

    // A remote start sends the tag exactly as it was entered.
    let started = server.post_in_background(
        &token,
        "/api/charging/sessions/start",
        json!({"stationId": "CP-CASE", "connectorId": "connector-1", "batteryLevelStart": 30}),
    );
    let (id, action, payload) = charger.expect_call().await;
    assert_eq!(action, "RemoteStartTransaction");
    assert_eq!(payload["idTag"], "PTAGf4eff3");
    charger.reply(&id, json!({"status": "Accepted"})).await;
    let (status, body) = started.await.unwrap();
    assert_eq!(status, 201, "{body}");
    // The charger may answer in any case; it is the driver's session.
    let start = charger
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "ptagf4eff3", "meterStart": 0, "timestamp": "2024-01-15T10:00:00Z"}),
        )
        .await;
    assert_eq!(start["idTagInfo"]["status"], "Accepted");
    let tx = start["transactionId"].as_i64().unwrap();
    let (_, active) = server
        .api("GET", "/api/charging/sessions/active", Some(&token), None)
        .await;
    assert_eq!(active["session"]["transactionId"], tx, "{active}");
    server.stop().await;
}
