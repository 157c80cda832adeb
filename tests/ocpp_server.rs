//! The OCPP 1.6J central system end to end: a real server on port 0, a real
//! database (SQLite file, PostgreSQL), chargers over real WebSockets.

mod common;

use common::*;
use csms::store::{Page, RegistrationStatus, TransactionFilter};
use serde_json::json;
use std::time::Duration;

on_both_backends!(
    boot_heartbeat_and_status_are_answered_and_recorded,
    authorize_answers_by_the_state_of_the_tag,
    a_whole_transaction_is_stored_on_the_chargers_clock,
    a_retransmitted_start_gets_the_same_transaction_id,
    retransmitted_meter_values_and_stop_change_nothing_twice,
    a_stop_for_an_unknown_transaction_is_answered_and_kept,
    a_second_stop_with_other_values_changes_nothing,
    a_register_going_backwards_is_flagged_and_never_negative,
    another_chargers_transaction_is_left_alone,
    a_busy_tag_starts_with_concurrent_tx,
    a_connector_shown_available_closes_a_transaction_whose_stop_was_lost,
    callerror_codes_follow_the_ocpp_j_table,
    garbage_frames_do_not_close_the_connection,
    basic_auth_is_required_when_the_charger_has_a_password,
    the_basic_auth_scheme_is_read_in_any_case,
    a_second_connection_replaces_the_first,
    commands_reach_the_charger_and_time_out_when_it_is_silent,
    unknown_chargers_follow_the_configured_policy,
    subprotocols_are_negotiated_at_the_handshake,
    oversized_frames_close_the_connection,
    every_frame_is_kept_in_the_message_log,
    shutdown_closes_charger_connections_with_a_close_frame,
    shutdown_refuses_chargers_that_reconnect_at_once,
    a_charger_that_stops_answering_pings_is_closed_and_offline,
);

async fn boot_heartbeat_and_status_are_answered_and_recorded(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut charger = TestCharger::connect(&server.ws_url("CP-BOOT")).await;
    let boot = charger.boot().await;
    assert_eq!(boot["status"], "Accepted");
    assert_eq!(boot["interval"], 300);
    let current = boot["currentTime"].as_str().unwrap();
    assert!(
        current.ends_with('Z') && current.len() == 24,
        "milliseconds only: {current}"
    );

    let beat = charger.call("Heartbeat", json!({})).await;
    assert!(beat["currentTime"].is_string());
    let status = charger
        .call("StatusNotification", json!({"connectorId": 1, "errorCode": "NoError", "status": "Available",
            "info": "ready", "vendorId": "TV", "vendorErrorCode": "0", "timestamp": "2024-01-15T10:00:00.000Z"}))
        .await;
    assert_eq!(status, json!({}));
    charger
        .call(
            "StatusNotification",
            json!({"connectorId": 0, "errorCode": "NoError", "status": "Available"}),
        )
        .await;

    let stored = server
        .state
        .store
        .charger("CP-BOOT")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.vendor.as_deref(), Some("TestVendor"));
    assert_eq!(stored.model.as_deref(), Some("TestModel"));
    assert_eq!(stored.charge_point_serial_number.as_deref(), Some("SN-1"));
    assert_eq!(stored.firmware_version.as_deref(), Some("1.0.0"));
    assert_eq!(stored.registration_status, RegistrationStatus::Accepted);
    assert!(stored.last_heartbeat_at.is_some());
    let connectors = server.state.store.connectors("CP-BOOT").await.unwrap();
    assert_eq!(connectors.len(), 2);
    assert_eq!(connectors[1].status, "Available");
    assert_eq!(connectors[1].info.as_deref(), Some("ready"));
    assert_eq!(connectors[1].vendor_error_code.as_deref(), Some("0"));
    assert_eq!(
        connectors[1].status_at.to_rfc3339(),
        "2024-01-15T10:00:00+00:00"
    );
    assert!(server.state.registry.is_connected("CP-BOOT"));
    server.stop().await;
}

async fn authorize_answers_by_the_state_of_the_tag(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.user_with_tag("alice", "TAG-OK").await;
    server.id_tag("TAG-BLOCKED", None, "Blocked", None).await;
    server.user_with_tag("bob", "TAG-OLD").await;
    server
        .id_tag(
            "TAG-OLD",
            Some("bob"),
            "Accepted",
            Some(chrono::Utc::now() - chrono::Duration::days(1)),
        )
        .await;
    server.id_tag("TAG-NOBODY", None, "Accepted", None).await;
    let mut charger = server.booted_charger("CP-AUTH").await;
    for (tag, expected) in [
        ("TAG-OK", "Accepted"),
        ("TAG-BLOCKED", "Blocked"),
        ("TAG-OLD", "Expired"),
        ("TAG-NOBODY", "Invalid"),
        ("NEVER-SEEN", "Invalid"),
    ] {
        let answer = charger.call("Authorize", json!({"idTag": tag})).await;
        assert_eq!(answer["idTagInfo"]["status"], expected, "{tag}");
    }
    server.stop().await;
}

async fn start(
    charger: &mut TestCharger,
    connector: i64,
    tag: &str,
    meter_start: i64,
    at: &str,
) -> i64 {
    let answer = charger
        .call("StartTransaction", json!({"connectorId": connector, "idTag": tag, "meterStart": meter_start, "timestamp": at}))
        .await;
    answer["transactionId"]
        .as_i64()
        .expect("a transactionId, always")
}

async fn a_whole_transaction_is_stored_on_the_chargers_clock(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.user_with_tag("alice", "TAG-A").await;
    let mut charger = server.booted_charger("CP-TX").await;
    // Historic timestamps, as a charger replaying after an outage sends them.
    let answer = charger
        .call("StartTransaction", json!({"connectorId": 1, "idTag": "TAG-A", "meterStart": 1000, "timestamp": "2024-01-15T10:00:00.000Z"}))
        .await;
    assert_eq!(answer["idTagInfo"]["status"], "Accepted");
    let tx = answer["transactionId"].as_i64().unwrap();
    for (minute, wh, soc) in [(15, 5200.0, 52.0), (30, 9400.0, 59.0)] {
        charger
            .call("MeterValues", json!({"connectorId": 1, "transactionId": tx,
                "meterValue": [meter_sample(&format!("2024-01-15T10:{minute}:00.000Z"), wh, Some(soc))]}))
            .await;
    }
    // kWh registers are converted; transactionData repeats a sample already sent.
    charger
        .call("MeterValues", json!({"connectorId": 1, "transactionId": tx, "meterValue": [{"timestamp": "2024-01-15T10:45:00.000Z",
            "sampledValue": [{"value": "14.5", "measurand": "Energy.Active.Import.Register", "unit": "kWh"},
                             {"value": "16800", "measurand": "Power.Active.Import", "unit": "W"}]}]}))
        .await;
    let stop = charger
        .call(
            "StopTransaction",
            json!({"transactionId": tx, "idTag": "TAG-A", "meterStop": 22000,
            "timestamp": "2024-01-15T11:15:00.000Z", "reason": "EVDisconnected",
            "transactionData": [meter_sample("2024-01-15T10:30:00.000Z", 9400.0, Some(59.0)),
                                meter_sample("2024-01-15T11:15:00.000Z", 22000.0, Some(80.0))]}),
        )
        .await;
    assert_eq!(stop["idTagInfo"]["status"], "Accepted");

    let record = server.state.store.transaction(tx).await.unwrap().unwrap();
    assert_eq!(record.status, "stopped");
    assert_eq!(record.meter_start, 1000);
    assert_eq!(record.meter_stop, Some(22000));
    assert_eq!(record.energy_wh, 21000.0);
    assert_eq!(record.start_time.to_rfc3339(), "2024-01-15T10:00:00+00:00");
    assert_eq!(
        record.stop_time.unwrap().to_rfc3339(),
        "2024-01-15T11:15:00+00:00"
    );
    assert_eq!(record.stop_reason.as_deref(), Some("EVDisconnected"));
    assert_eq!(record.soc_start, Some(52.0));
    assert_eq!(record.soc_last, Some(80.0));
    assert_eq!(record.power_w_last, Some(16800.0));
    let samples = server.state.store.meter_values(tx).await.unwrap();
    // 2×2 periodic + 2 at 10:45 + 2 new in transactionData (the repeat is kept once).
    assert_eq!(samples.len(), 8, "{samples:#?}");
    assert!(server
        .state
        .store
        .anomalies(Some("CP-TX"), 10)
        .await
        .unwrap()
        .is_empty());
    server.stop().await;
}

async fn a_retransmitted_start_gets_the_same_transaction_id(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.user_with_tag("alice", "TAG-A").await;
    let mut charger = server.booted_charger("CP-RETRY").await;
    let first = start(&mut charger, 1, "TAG-A", 0, "2024-01-15T10:00:00.000Z").await;
    let again = charger
        .call("StartTransaction", json!({"connectorId": 1, "idTag": "TAG-A", "meterStart": 0, "timestamp": "2024-01-15T10:00:00.000Z"}))
        .await;
    assert_eq!(again["transactionId"].as_i64(), Some(first));
    assert_eq!(
        again["idTagInfo"]["status"], "Accepted",
        "the retransmission hears what the original heard"
    );
    // After a reconnect, too.
    charger.close().await;
    let mut charger = TestCharger::connect(&server.ws_url("CP-RETRY")).await;
    let after = start(&mut charger, 1, "TAG-A", 0, "2024-01-15T10:00:00.000Z").await;
    assert_eq!(after, first);
    let all = server
        .state
        .store
        .transactions(TransactionFilter {
            charger_id: Some("CP-RETRY".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    server.stop().await;
}

async fn retransmitted_meter_values_and_stop_change_nothing_twice(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.user_with_tag("alice", "TAG-A").await;
    let mut charger = server.booted_charger("CP-DUP").await;
    let tx = start(&mut charger, 1, "TAG-A", 0, "2024-01-15T10:00:00.000Z").await;
    let meter = json!({"connectorId": 1, "transactionId": tx, "meterValue": [meter_sample("2024-01-15T10:10:00.000Z", 3000.0, Some(50.0))]});
    charger.call("MeterValues", meter.clone()).await;
    charger.call("MeterValues", meter).await;
    let stop =
        json!({"transactionId": tx, "meterStop": 4000, "timestamp": "2024-01-15T10:20:00.000Z"});
    charger.call("StopTransaction", stop.clone()).await;
    let before = server.state.store.transaction(tx).await.unwrap().unwrap();
    charger.call("StopTransaction", stop).await;
    let after = server.state.store.transaction(tx).await.unwrap().unwrap();
    assert_eq!(server.state.store.meter_values(tx).await.unwrap().len(), 2);
    assert_eq!(after.energy_wh, 4000.0);
    assert_eq!(
        after.updated_at, before.updated_at,
        "a retransmitted stop writes nothing"
    );
    assert!(server
        .state
        .store
        .anomalies(Some("CP-DUP"), 10)
        .await
        .unwrap()
        .is_empty());
    server.stop().await;
}

async fn a_stop_for_an_unknown_transaction_is_answered_and_kept(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.user_with_tag("alice", "TAG-A").await;
    let mut charger = server.booted_charger("CP-UNK").await;
    for id in [987_654, -1] {
        let answer = charger
            .call("StopTransaction", json!({"transactionId": id, "idTag": "TAG-A", "meterStop": 10, "timestamp": "2024-01-15T10:00:00Z"}))
            .await;
        assert_eq!(answer["idTagInfo"]["status"], "Accepted");
    }
    let anomalies = server
        .state
        .store
        .anomalies(Some("CP-UNK"), 10)
        .await
        .unwrap();
    assert_eq!(
        anomalies
            .iter()
            .filter(|a| a.kind == "stop_unknown_transaction")
            .count(),
        2
    );
    assert!(anomalies.iter().any(|a| a.detail["transactionId"] == -1));
    server.stop().await;
}

async fn a_second_stop_with_other_values_changes_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.user_with_tag("alice", "TAG-A").await;
    let mut charger = server.booted_charger("CP-2STOP").await;
    let tx = start(&mut charger, 1, "TAG-A", 100, "2024-01-15T10:00:00Z").await;
    charger
        .call(
            "StopTransaction",
            json!({"transactionId": tx, "meterStop": 5100, "timestamp": "2024-01-15T10:30:00Z"}),
        )
        .await;
    // Some chargers send a second stop with meterStop 0 when they shut down.
    let answer = charger
        .call("StopTransaction", json!({"transactionId": tx, "meterStop": 0, "timestamp": "2024-01-15T12:00:00Z", "reason": "PowerLoss"}))
        .await;
    assert_eq!(answer, json!({}));
    let record = server.state.store.transaction(tx).await.unwrap().unwrap();
    assert_eq!((record.meter_stop, record.energy_wh), (Some(5100), 5000.0));
    // The first stop had no reason: OCPP 1.6 says that means Local.
    assert_eq!(record.stop_reason.as_deref(), Some("Local"));
    let anomalies = server
        .state
        .store
        .anomalies(Some("CP-2STOP"), 10)
        .await
        .unwrap();
    assert!(anomalies
        .iter()
        .any(|a| a.kind == "second_stop" && a.transaction_id == Some(tx)));
    server.stop().await;
}

async fn a_register_going_backwards_is_flagged_and_never_negative(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.user_with_tag("alice", "TAG-A").await;
    let mut charger = server.booted_charger("CP-BACK").await;
    let tx = start(&mut charger, 1, "TAG-A", 5000, "2024-01-15T10:00:00Z").await;
    charger.call("MeterValues", json!({"connectorId": 1, "transactionId": tx, "meterValue": [meter_sample("2024-01-15T10:05:00Z", 6000.0, None)]})).await;
    charger.call("MeterValues", json!({"connectorId": 1, "transactionId": tx, "meterValue": [meter_sample("2024-01-15T10:10:00Z", 10.0, None)]})).await;
    let record = server.state.store.transaction(tx).await.unwrap().unwrap();
    assert_eq!(
        record.energy_wh, 0.0,
        "below meterStart is zero energy, not negative"
    );
    // Sanity failures never withhold an answer: future, zone-less, SignedData, Celcius, no reason.
    let answer = charger
        .call("StopTransaction", json!({"transactionId": tx, "meterStop": 3, "timestamp": "2030-01-15T10:00:00",
            "transactionData": [{"timestamp": "2024-01-15T10:20:00Z", "sampledValue": [
                {"value": "AB12", "format": "SignedData", "measurand": "Energy.Active.Import.Register"},
                {"value": "21.5", "measurand": "Temperature", "unit": "Celcius"}]}]}))
        .await;
    assert_eq!(answer, json!({}));
    let record = server.state.store.transaction(tx).await.unwrap().unwrap();
    assert_eq!(record.status, "stopped");
    assert!(record.energy_wh >= 0.0);
    let kinds: Vec<String> = server
        .state
        .store
        .anomalies(Some("CP-BACK"), 50)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.kind)
        .collect();
    for expected in [
        "register_went_backwards",
        "register_below_meter_start",
        "timestamp_without_zone",
        "meter_stop_below_meter_start",
        "unreadable_register",
    ] {
        assert!(
            kinds.iter().any(|k| k == expected),
            "{expected} missing from {kinds:?}"
        );
    }
    server.stop().await;
}

async fn another_chargers_transaction_is_left_alone(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.user_with_tag("alice", "TAG-A").await;
    let mut owner = server.booted_charger("CP-OWNER").await;
    let mut intruder = server.booted_charger("CP-INTRUDER").await;
    let tx = start(&mut owner, 1, "TAG-A", 0, "2024-01-15T10:00:00Z").await;
    intruder.call("MeterValues", json!({"connectorId": 1, "transactionId": tx, "meterValue": [meter_sample("2024-01-15T10:05:00Z", 9999.0, None)]})).await;
    intruder
        .call(
            "StopTransaction",
            json!({"transactionId": tx, "meterStop": 9999, "timestamp": "2024-01-15T10:06:00Z"}),
        )
        .await;
    let record = server.state.store.transaction(tx).await.unwrap().unwrap();
    assert_eq!(record.status, "active");
    assert_eq!(record.energy_wh, 0.0);
    assert!(server
        .state
        .store
        .meter_values(tx)
        .await
        .unwrap()
        .is_empty());
    let kinds: Vec<String> = server
        .state
        .store
        .anomalies(Some("CP-INTRUDER"), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.kind)
        .collect();
    assert!(
        kinds.contains(&"other_chargers_transaction".to_string())
            && kinds.contains(&"stop_other_chargers_transaction".to_string()),
        "{kinds:?}"
    );
    server.stop().await;
}

async fn a_busy_tag_starts_with_concurrent_tx(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.user_with_tag("alice", "TAG-A").await;
    let mut one = server.booted_charger("CP-ONE").await;
    let mut two = server.booted_charger("CP-TWO").await;
    start(&mut one, 1, "TAG-A", 0, "2024-01-15T10:00:00Z").await;
    let answer = two
        .call("StartTransaction", json!({"connectorId": 1, "idTag": "TAG-A", "meterStart": 0, "timestamp": "2024-01-15T10:01:00Z"}))
        .await;
    assert!(answer["transactionId"].is_i64(), "always a transactionId");
    assert_eq!(answer["idTagInfo"]["status"], "ConcurrentTx");
    let unknown = two
        .call("StartTransaction", json!({"connectorId": 2, "idTag": "STRANGER", "meterStart": 0, "timestamp": "2024-01-15T10:02:00Z"}))
        .await;
    assert!(unknown["transactionId"].is_i64());
    assert_eq!(unknown["idTagInfo"]["status"], "Invalid");
    server.stop().await;
}

async fn a_connector_shown_available_closes_a_transaction_whose_stop_was_lost(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.user_with_tag("alice", "TAG-A").await;
    let mut charger = server.booted_charger("CP-LOST").await;
    let tx = start(&mut charger, 1, "TAG-A", 0, "2024-01-15T10:00:00Z").await;
    charger.call("MeterValues", json!({"connectorId": 1, "transactionId": tx, "meterValue": [meter_sample("2024-01-15T10:10:00Z", 2500.0, None)]})).await;
    charger.call("StatusNotification", json!({"connectorId": 1, "errorCode": "NoError", "status": "Available", "timestamp": "2024-01-15T10:30:00Z"})).await;
    let closed = server.state.store.transaction(tx).await.unwrap().unwrap();
    assert_eq!(closed.status, "closed");
    assert_eq!(closed.energy_wh, 2500.0);
    // The charger's own stop, replayed later, still completes it.
    charger
        .call(
            "StopTransaction",
            json!({"transactionId": tx, "meterStop": 2600, "timestamp": "2024-01-15T10:29:00Z"}),
        )
        .await;
    let stopped = server.state.store.transaction(tx).await.unwrap().unwrap();
    assert_eq!(
        (stopped.status.as_str(), stopped.energy_wh),
        ("stopped", 2600.0)
    );
    server.stop().await;
}

async fn callerror_codes_follow_the_ocpp_j_table(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut charger = TestCharger::connect(&server.ws_url("CP-ERR")).await;
    // Before an accepted boot, anything but BootNotification is refused.
    assert_eq!(
        charger.error_code_for(r#"[2,"e0","Heartbeat",{}]"#).await,
        "SecurityError"
    );
    charger.boot().await;
    let cases = [
        (r#"[2,"e1","Dance",{}]"#, "NotImplemented"),
        (
            r#"[2,"e2","RemoteStartTransaction",{"idTag":"X"}]"#,
            "NotSupported",
        ),
        (r#"[2,"e3","Heartbeat"]"#, "ProtocolError"),
        (r#"[2,"e4","Heartbeat",{},{}]"#, "FormationViolation"),
        (r#"[2,"e5","Heartbeat",[]]"#, "FormationViolation"),
        (r#"[2, "e6", "Heartbeat", {"#, "FormationViolation"),
        (
            r#"[2,"e7","StartTransaction",{"connectorId":1,"meterStart":0,"timestamp":"2024-01-15T10:00:00Z"}]"#,
            "OccurenceConstraintViolation",
        ),
        (
            r#"[2,"e8","StartTransaction",{"connectorId":1,"idTag":"A","meterStart":"abc","timestamp":"2024-01-15T10:00:00Z"}]"#,
            "TypeConstraintViolation",
        ),
        (
            r#"[2,"e9","StatusNotification",{"connectorId":1,"errorCode":"NoError","status":"Sleeping"}]"#,
            "PropertyConstraintViolation",
        ),
        (
            r#"[2,"e10","Authorize",{"idTag":"123456789012345678901"}]"#,
            "PropertyConstraintViolation",
        ),
        (r#"[2,"e11","Heartbeat",{"extra":1}]"#, "FormationViolation"),
    ];
    for (frame, expected) in cases {
        assert_eq!(charger.error_code_for(frame).await, expected, "{frame}");
    }
    // Nothing was stored by the refused StartTransactions.
    assert!(server
        .state
        .store
        .transactions(TransactionFilter::default())
        .await
        .unwrap()
        .is_empty());
    server.stop().await;
}

async fn garbage_frames_do_not_close_the_connection(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut charger = server.booted_charger("CP-GARBAGE").await;
    for garbage in [
        "not json",
        r#"{"a":1}"#,
        r#"[2, 17, "Heartbeat", {}]"#,
        r#"[9,"x","Heartbeat",{}]"#,
        r#"[3,"nobody-asked",{}]"#,
        r#"[4,"nobody",1]"#,
        "[]",
    ] {
        charger.send_text(garbage).await;
    }
    charger
        .socket
        .send(tokio_tungstenite::tungstenite::Message::binary(vec![
            0u8, 1, 2,
        ]))
        .await
        .unwrap();
    // None of those is answered; the next CALL is, on the same connection.
    let beat = charger.call_frame("Heartbeat", json!({})).await;
    assert_eq!(beat[0], 3);
    // Other chargers were not disturbed either.
    let mut other = server.booted_charger("CP-CALM").await;
    other.call("Heartbeat", json!({})).await;
    server.stop().await;
}

use futures_util::SinkExt;

async fn basic_auth_is_required_when_the_charger_has_a_password(backend: Backend) {
    let server = TestServer::start(backend).await;
    let hash = csms::charger::auth::hash_password("correct-horse-battery-staple");
    server
        .state
        .store
        .provision_charger("CP-SEC", None, Some(Some(hash)))
        .await
        .unwrap();
    let url = server.ws_url("CP-SEC");

    let missing = try_connect(&url, ConnectOptions::default())
        .await
        .unwrap_err();
    assert_eq!(refused_status(missing), 401);
    let wrong = try_connect(
        &url,
        ConnectOptions {
            basic_auth: Some(("CP-SEC", "wrong")),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(refused_status(wrong), 401);
    let wrong_user = try_connect(
        &url,
        ConnectOptions {
            basic_auth: Some(("CP-OTHER", "correct-horse-battery-staple")),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(refused_status(wrong_user), 401);
    let (socket, _) = try_connect(
        &url,
        ConnectOptions {
            basic_auth: Some(("CP-SEC", "correct-horse-battery-staple")),
            ..Default::default()
        },
    )
    .await
    .expect("right password connects");
    drop(socket);
    // Refused handshakes processed no OCPP message: only the accepted one is logged.
    server.state.store.flush().await.unwrap();
    assert!(server
        .state
        .store
        .messages(
            "CP-SEC",
            Page {
                limit: 10,
                offset: 0
            }
        )
        .await
        .unwrap()
        .items
        .is_empty());

    // A flood of bad passwords is answered 429 (and slowed down); the
    // right password still gets in (tests/handshake_limits.rs).
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let e = try_connect(
            &url,
            ConnectOptions {
                basic_auth: Some(("CP-SEC", "guess")),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        statuses.push(refused_status(e));
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    server.stop().await;
}

/// RFC 7617: the scheme name is case-insensitive, and some chargers send
/// `basic` or `BASIC`.
async fn the_basic_auth_scheme_is_read_in_any_case(backend: Backend) {
    use base64::Engine;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let server = TestServer::start(backend).await;
    let hash = csms::charger::auth::hash_password("correct-horse-battery-staple");
    server
        .state
        .store
        .provision_charger("CP-CASE", None, Some(Some(hash)))
        .await
        .unwrap();
    let url = server.ws_url("CP-CASE");
    let connect = |scheme: &'static str, password: &'static str| {
        let url = url.clone();
        async move {
            let mut request = url.into_client_request().unwrap();
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("CP-CASE:{password}"));
            request.headers_mut().insert(
                "Authorization",
                format!("{scheme} {token}").parse().unwrap(),
            );
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", "ocpp1.6".parse().unwrap());
            tokio_tungstenite::connect_async(request).await
        }
    };
    for scheme in ["basic", "BASIC", "Basic"] {
        let (socket, _) = connect(scheme, "correct-horse-battery-staple")
            .await
            .unwrap_or_else(|e| panic!("{scheme}: {e}"));
        let mut charger = TestCharger::from_socket(socket);
        let boot = charger
            .call(
                "BootNotification",
                json!({"chargePointVendor": "V", "chargePointModel": "M"}),
            )
            .await;
        assert!(boot["status"].is_string(), "{scheme}: {boot}");
    }
    let wrong = connect("basic", "wrong").await.unwrap_err();
    assert_eq!(refused_status(wrong), 401);
    server.stop().await;
}

async fn a_second_connection_replaces_the_first(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.user_with_tag("alice", "TAG-A").await;
    let mut first = server.booted_charger("CP-TWICE").await;
    let tx = start(&mut first, 1, "TAG-A", 0, "2024-01-15T10:00:00Z").await;
    let mut second = TestCharger::connect(&server.ws_url("CP-TWICE")).await;
    // The old socket is closed by the server.
    assert!(
        first.try_next_frame(Duration::from_secs(5)).await.is_none(),
        "old connection is closed"
    );
    // The new one serves at once (an accepted charger need not boot again).
    second.call("MeterValues", json!({"connectorId": 1, "transactionId": tx, "meterValue": [meter_sample("2024-01-15T10:05:00Z", 700.0, None)]})).await;
    assert_eq!(
        server
            .state
            .store
            .transaction(tx)
            .await
            .unwrap()
            .unwrap()
            .energy_wh,
        700.0
    );
    assert_eq!(server.state.registry.count(), 1);
    // Commands go to the new connection.
    let registry = server.state.registry.clone();
    let command =
        tokio::spawn(async move { registry.call("CP-TWICE", "ClearCache", json!({})).await });
    let (id, action, _) = second.expect_call().await;
    assert_eq!(action, "ClearCache");
    second.reply(&id, json!({"status": "Accepted"})).await;
    assert_eq!(
        command.await.unwrap().unwrap(),
        json!({"status": "Accepted"})
    );
    server.stop().await;
}

async fn commands_reach_the_charger_and_time_out_when_it_is_silent(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.ocpp_call_timeout = Duration::from_millis(800)
    })
    .await;
    let offline = server
        .state
        .registry
        .call("CP-NOWHERE", "Reset", json!({"type": "Soft"}))
        .await;
    assert!(
        matches!(offline, Err(csms::charger::CommandError::Offline)),
        "{offline:?}"
    );
    let mut charger = server.booted_charger("CP-CMD").await;

    // Typed core-profile command, answered.
    let registry = server.state.registry.clone();
    let typed = tokio::spawn(async move {
        use rust_ocpp::v1_6::messages::remote_start_transaction::RemoteStartTransactionRequest;
        registry
            .send(
                "CP-CMD",
                &RemoteStartTransactionRequest {
                    connector_id: Some(1),
                    id_tag: "TAG-A".into(),
                    charging_profile: None,
                },
            )
            .await
    });
    let (id, action, payload) = charger.expect_call().await;
    assert_eq!(
        (action.as_str(), payload["idTag"].as_str()),
        ("RemoteStartTransaction", Some("TAG-A"))
    );
    charger.reply(&id, json!({"status": "Accepted"})).await;
    let answer = typed.await.unwrap().unwrap();
    assert_eq!(serde_json::to_value(answer.status).unwrap(), "Accepted");

    // Two commands at once: the second is sent only after the first is answered.
    let (r1, r2) = (server.state.registry.clone(), server.state.registry.clone());
    let a = tokio::spawn(async move { r1.call("CP-CMD", "GetConfiguration", json!({})).await });
    let b = tokio::spawn(async move { r2.call("CP-CMD", "ClearCache", json!({})).await });
    let (first_id, first_action, _) = charger.expect_call().await;
    assert!(
        charger
            .try_next_frame(Duration::from_millis(300))
            .await
            .is_none(),
        "one CALL at a time"
    );
    let first_answer = if first_action == "ClearCache" {
        json!({"status": "Accepted"})
    } else {
        json!({"configurationKey": []})
    };
    charger.reply(&first_id, first_answer).await;
    let (second_id, second_action, _) = charger.expect_call().await;
    assert_ne!(first_action, second_action);
    let second_answer = if second_action == "ClearCache" {
        json!({"status": "Accepted"})
    } else {
        json!({"configurationKey": []})
    };
    charger.reply(&second_id, second_answer).await;
    assert!(a.await.unwrap().is_ok() && b.await.unwrap().is_ok());

    // A CALLERROR answer, and a schema-invalid answer.
    let r = server.state.registry.clone();
    let rejected = tokio::spawn(async move {
        r.call("CP-CMD", "UnlockConnector", json!({"connectorId": 1}))
            .await
    });
    let (id, _, _) = charger.expect_call().await;
    charger
        .send_text(&json!([4, id, "NotSupported", "no unlocking here", {}]).to_string())
        .await;
    assert!(
        matches!(rejected.await.unwrap(), Err(csms::charger::CommandError::Rejected { code, .. }) if code == "NotSupported")
    );
    let r = server.state.registry.clone();
    let bad = tokio::spawn(async move { r.call("CP-CMD", "Reset", json!({"type": "Hard"})).await });
    let (id, _, _) = charger.expect_call().await;
    charger.reply(&id, json!({"status": "Maybe"})).await;
    assert!(matches!(
        bad.await.unwrap(),
        Err(csms::charger::CommandError::InvalidResponse(_))
    ));

    // A request that breaks the schema never leaves the server.
    let invalid = server
        .state
        .registry
        .call("CP-CMD", "Reset", json!({"type": "Sideways"}))
        .await;
    assert!(
        matches!(invalid, Err(csms::charger::CommandError::InvalidRequest(_))),
        "{invalid:?}"
    );

    // The charger stays silent: the caller hears Timeout, and the next command still goes out.
    let silent = server
        .state
        .registry
        .call("CP-CMD", "ClearCache", json!({}))
        .await;
    assert!(
        matches!(silent, Err(csms::charger::CommandError::Timeout)),
        "{silent:?}"
    );
    let (_ignored, _, _) = charger.expect_call().await;
    let r = server.state.registry.clone();
    let next = tokio::spawn(async move { r.call("CP-CMD", "ClearCache", json!({})).await });
    let (id, _, _) = charger.expect_call().await;
    charger.reply(&id, json!({"status": "Rejected"})).await;
    assert_eq!(next.await.unwrap().unwrap(), json!({"status": "Rejected"}));
    server.stop().await;
}

async fn unknown_chargers_follow_the_configured_policy(backend: Backend) {
    use csms::config::UnknownChargers;
    let reject =
        TestServer::start_with(backend, |c| c.unknown_chargers = UnknownChargers::Reject).await;
    let refused = try_connect(&reject.ws_url("CP-STRANGER"), ConnectOptions::default())
        .await
        .unwrap_err();
    assert_eq!(refused_status(refused), 404);
    reject
        .state
        .store
        .provision_charger("CP-KNOWN", None, None)
        .await
        .unwrap();
    reject.booted_charger("CP-KNOWN").await;
    reject.stop().await;

    let pending =
        TestServer::start_with(backend, |c| c.unknown_chargers = UnknownChargers::Pending).await;
    let mut charger = TestCharger::connect(&pending.ws_url("CP-NEW")).await;
    let boot = charger.boot().await;
    assert_eq!(boot["status"], "Pending");
    assert_eq!(boot["interval"], 60);
    assert_eq!(
        charger.error_code_for(r#"[2,"p1","Heartbeat",{}]"#).await,
        "SecurityError"
    );
    // An operator accepts it; its next boot is Accepted and it may work.
    pending
        .state
        .store
        .provision_charger("CP-NEW", Some(RegistrationStatus::Accepted), None)
        .await
        .unwrap();
    assert_eq!(charger.boot().await["status"], "Accepted");
    charger.call("Heartbeat", json!({})).await;
    // Rejected chargers hear Rejected.
    pending
        .state
        .store
        .provision_charger("CP-BANNED", Some(RegistrationStatus::Rejected), None)
        .await
        .unwrap();
    let mut banned = TestCharger::connect(&pending.ws_url("CP-BANNED")).await;
    assert_eq!(banned.boot().await["status"], "Rejected");
    assert_eq!(
        banned.error_code_for(r#"[2,"b1","Heartbeat",{}]"#).await,
        "SecurityError"
    );
    pending.stop().await;
}

async fn subprotocols_are_negotiated_at_the_handshake(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, chosen) = try_connect(
        &server.ws_url("CP-P1"),
        ConnectOptions {
            protocols: Some("ocpp2.0.1, ocpp1.6"),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(chosen.as_deref(), Some("ocpp1.6"));
    let refused = try_connect(
        &server.ws_url("CP-P2"),
        ConnectOptions {
            protocols: Some("ocpp2.0.1"),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(refused_status(refused), 400);
    let (_, none) = try_connect(
        &server.ws_url("CP-P3"),
        ConnectOptions {
            protocols: None,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(none, None);
    let long = format!("CP-{}", "9".repeat(46));
    assert_eq!(
        refused_status(
            try_connect(&server.ws_url(&long), ConnectOptions::default())
                .await
                .unwrap_err()
        ),
        400
    );
    server.stop().await;
}

async fn oversized_frames_close_the_connection(backend: Backend) {
    let server = TestServer::start_with(backend, |c| c.max_frame_bytes = 4096).await;
    let mut charger = server.booted_charger("CP-BIG").await;
    let big = json!([2, "big", "DataTransfer", {"vendorId": "X", "data": "x".repeat(10_000)}])
        .to_string();
    let _ = charger
        .socket
        .send(tokio_tungstenite::tungstenite::Message::text(big))
        .await;
    assert!(
        charger
            .try_next_frame(Duration::from_secs(5))
            .await
            .is_none(),
        "closed, not buffered"
    );
    // The charger can come back and work.
    let mut again = server.booted_charger("CP-BIG").await;
    again.call("Heartbeat", json!({})).await;
    server.stop().await;
}

async fn every_frame_is_kept_in_the_message_log(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut charger = server.booted_charger("CP-LOG").await;
    charger.call("Heartbeat", json!({})).await;
    charger.error_code_for(r#"[2,"bad","Nope",{}]"#).await;
    server.state.store.flush().await.unwrap();
    let log = server
        .state
        .store
        .messages(
            "CP-LOG",
            Page {
                limit: 100,
                offset: 0,
            },
        )
        .await
        .unwrap()
        .items;
    let summary: Vec<(String, i64, Option<String>)> = log
        .iter()
        .rev()
        .map(|m| (m.direction.clone(), m.message_type, m.action.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("in".into(), 2, Some("BootNotification".into())),
            ("out".into(), 3, Some("BootNotification".into())),
            ("in".into(), 2, Some("Heartbeat".into())),
            ("out".into(), 3, Some("Heartbeat".into())),
            ("in".into(), 2, Some("Nope".into())),
            ("out".into(), 4, Some("Nope".into())),
        ]
    );
    server.stop().await;
}

async fn shutdown_closes_charger_connections_with_a_close_frame(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut charger = server.booted_charger("CP-BYE").await;
    let stopping = tokio::spawn(server.stop());
    let mut saw_close = false;
    while let Ok(Some(message)) = tokio::time::timeout(
        Duration::from_secs(10),
        futures_util::StreamExt::next(&mut charger.socket),
    )
    .await
    {
        if let Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame))) = message {
            assert_eq!(u16::from(frame.code), 1001);
            saw_close = true;
        }
    }
    assert!(saw_close, "a close frame with 1001 (going away)");
    stopping.await.unwrap();
}

async fn shutdown_refuses_chargers_that_reconnect_at_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let stop_trying = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut chargers = Vec::new();
    for n in 0..10 {
        let url = server.ws_url(&format!("CP-EAGER-{n}"));
        let stop_trying = stop_trying.clone();
        // A charger that reconnects the moment it is closed, as many do.
        chargers.push(tokio::spawn(async move {
            let mut refusals = Vec::new();
            while !stop_trying.load(std::sync::atomic::Ordering::Relaxed) {
                match try_connect(&url, ConnectOptions::default()).await {
                    Ok((socket, _)) => {
                        let mut charger = TestCharger::from_socket(socket);
                        while charger
                            .try_next_frame(Duration::from_secs(30))
                            .await
                            .is_some()
                        {}
                    }
                    Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                        refusals.push(response.status().as_u16());
                    }
                    // The listener is gone: the server has stopped.
                    Err(_) => break,
                }
            }
            refusals
        }));
    }
    let registry = &server.state.registry;
    until(
        "ten chargers connected",
        Duration::from_secs(20),
        || async move { registry.count() >= 10 },
    )
    .await;
    let began = tokio::time::Instant::now();
    server.stop().await;
    let took = began.elapsed();
    stop_trying.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(
        took < Duration::from_secs(3),
        "shutdown waited {took:?} for chargers that kept coming back"
    );
    let mut refusals = Vec::new();
    for charger in chargers {
        refusals.extend(charger.await.unwrap());
    }
    // Those that came back while it stopped were turned away, not served.
    assert!(
        !refusals.is_empty() && refusals.iter().all(|s| *s == 503),
        "{refusals:?}"
    );
}

async fn a_charger_that_stops_answering_pings_is_closed_and_offline(backend: Backend) {
    let server =
        TestServer::start_with(backend, |c| c.ws_ping_interval = Duration::from_millis(300)).await;
    let mut charger = server.booted_charger("CP-SILENT").await;
    // A charger that reads (and so answers pings) stays connected.
    assert!(charger
        .try_next_frame(Duration::from_millis(1200))
        .await
        .is_none());
    assert!(server.state.registry.is_connected("CP-SILENT"));
    // One that stops reading sends no pongs: closed after two intervals
    // (600 ms here; the deadline leaves room for a busy machine).
    let registry = &server.state.registry;
    until(
        "the silent charger closed and offline",
        Duration::from_secs(10),
        || async move { !registry.is_connected("CP-SILENT") },
    )
    .await;
    let seen = server
        .state
        .store
        .charger("CP-SILENT")
        .await
        .unwrap()
        .unwrap()
        .last_seen_at;
    assert!(seen.is_some());
    server.stop().await;
}
