//! Charging profiles kept by the server: assigned through the API, sent with
//! SetChargingProfile with the charger's answer kept, sent again after a
//! reboot and after a reconnect (after the BootNotification answer, in
//! order), cleared with ClearChargingProfile, GetCompositeSchedule, and
//! errors that change nothing.

mod common;

use chrono::Utc;
use common::*;
use csms::ocpp::time::format_ms;
use serde_json::{json, Value};
use std::time::Duration;

on_both_backends!(
    a_profile_is_stored_sent_and_the_chargers_answer_kept,
    profiles_are_sent_again_after_a_reboot_and_after_a_reconnect,
    a_profile_for_an_offline_charger_waits_for_it,
    a_profile_is_cleared_on_the_charger,
    the_composite_schedule_is_the_chargers_answer,
    bad_profiles_change_nothing,
);

fn limit_profile(purpose: &str, stack_level: i64, amps: f64) -> Value {
    json!({
        "stackLevel": stack_level,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {
            "chargingRateUnit": "A",
            "startSchedule": "2030-01-01T00:00:00.000Z",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": amps}]
        }
    })
}

fn path(charger: &str) -> String {
    format!("/api/admin/stations/{charger}/charging-profiles")
}

/// Posts a profile while the test charger answers SetChargingProfile with
/// `answer`: (HTTP status, body, the SetChargingProfile payload).
async fn assign(
    server: &TestServer,
    charger: &mut TestCharger,
    admin: &str,
    charger_id: &str,
    body: Value,
    answer: &str,
) -> (u16, Value, Value) {
    let pending = server.post_in_background(admin, &path(charger_id), body);
    let (id, action, payload) = charger.expect_call().await;
    assert_eq!(action, "SetChargingProfile");
    charger.reply(&id, json!({"status": answer})).await;
    let (status, body) = pending.await.unwrap();
    (status, body, payload)
}

async fn profiles(server: &TestServer, admin: &str, charger_id: &str) -> Vec<Value> {
    let (status, body) = server
        .api("GET", &path(charger_id), Some(admin), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().unwrap().clone()
}

/// Answers the next CALL, which must be SetChargingProfile; returns its payload.
async fn answer_set(charger: &mut TestCharger, answer: &str) -> Value {
    let (id, action, payload) = charger.expect_call().await;
    assert_eq!(action, "SetChargingProfile", "{payload}");
    charger.reply(&id, json!({"status": answer})).await;
    payload
}

async fn a_profile_is_stored_sent_and_the_chargers_answer_kept(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token("ops", "admin");
    server.user_with_tag("driver-1", "CARD-1").await;
    let mut charger = server.booted_charger("CP-P1").await;

    let profile = limit_profile("TxDefaultProfile", 1, 16.0);
    let (status, body, sent) = assign(
        &server,
        &mut charger,
        &admin,
        "CP-P1",
        json!({"connectorId": 1, "chargingProfile": profile}),
        "Accepted",
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let stored = &body["data"];
    let id = stored["id"]
        .as_i64()
        .expect("the server allocates the chargingProfileId");
    assert_eq!(sent["connectorId"], 1);
    let mut expected = profile.clone();
    expected["chargingProfileId"] = json!(id);
    assert_eq!(sent["csChargingProfiles"], expected);
    assert_eq!(stored["status"], "accepted");
    assert_eq!(stored["purpose"], "TxDefaultProfile");
    assert_eq!(stored["chargingProfile"], expected);
    assert!(stored["answeredAt"].is_string());

    // A charger-wide maximum the charger refuses: kept, with its answer.
    let (status, body, sent) = assign(
        &server,
        &mut charger,
        &admin,
        "CP-P1",
        json!({"connectorId": 0, "chargingProfile": limit_profile("ChargePointMaxProfile", 0, 32.0)}),
        "Rejected",
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(sent["connectorId"], 0);
    assert_eq!(body["data"]["status"], "rejected");

    // A TxProfile for the running transaction.
    let tx = charger
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "CARD-1", "meterStart": 0, "timestamp": format_ms(Utc::now())}),
        )
        .await["transactionId"]
        .as_i64()
        .unwrap();
    let mut tx_profile = limit_profile("TxProfile", 2, 10.0);
    tx_profile["transactionId"] = json!(tx);
    let (status, body, sent) = assign(
        &server,
        &mut charger,
        &admin,
        "CP-P1",
        json!({"connectorId": 1, "chargingProfile": tx_profile}),
        "Accepted",
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(sent["csChargingProfiles"]["transactionId"], tx);
    assert_eq!(body["data"]["transactionId"], tx);

    // The same purpose and stack level on the connector replaces the
    // profile before it (and keeps its id), as on the charger.
    let (status, body, sent) = assign(
        &server,
        &mut charger,
        &admin,
        "CP-P1",
        json!({"connectorId": 1, "chargingProfile": limit_profile("TxDefaultProfile", 1, 12.0)}),
        "Accepted",
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["data"]["id"], id);
    assert_eq!(
        sent["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"],
        12.0
    );

    let list = profiles(&server, &admin, "CP-P1").await;
    let statuses: Vec<(&str, &str)> = list
        .iter()
        .map(|p| {
            (
                p["purpose"].as_str().unwrap(),
                p["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("TxDefaultProfile", "accepted"),
            ("ChargePointMaxProfile", "rejected"),
            ("TxProfile", "accepted")
        ]
    );
    server.stop().await;
}

async fn profiles_are_sent_again_after_a_reboot_and_after_a_reconnect(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token("ops", "admin");
    let mut charger = server.booted_charger("CP-P2").await;
    let mut ids = Vec::new();
    for (connector, body) in [
        (0, limit_profile("ChargePointMaxProfile", 0, 32.0)),
        (1, limit_profile("TxDefaultProfile", 1, 16.0)),
    ] {
        let (status, body, _) = assign(
            &server,
            &mut charger,
            &admin,
            "CP-P2",
            json!({"connectorId": connector, "chargingProfile": body}),
            "Accepted",
        )
        .await;
        assert_eq!(status, 201, "{body}");
        ids.push(body["data"]["id"].as_i64().unwrap());
    }

    // The charger reboots: its BootNotification is answered first, then its
    // profiles follow, oldest first; this time it refuses the second.
    charger.close().await;
    let mut charger = TestCharger::connect(&server.ws_url("CP-P2")).await;
    let boot = charger.boot().await;
    assert_eq!(
        boot["status"], "Accepted",
        "the answer comes before any profile"
    );
    let first = answer_set(&mut charger, "Accepted").await;
    assert_eq!(first["csChargingProfiles"]["chargingProfileId"], ids[0]);
    assert_eq!(first["connectorId"], 0);
    let second = answer_set(&mut charger, "Rejected").await;
    assert_eq!(second["csChargingProfiles"]["chargingProfileId"], ids[1]);
    until("the refusal kept", Duration::from_secs(5), || async {
        profiles(&server, &admin, "CP-P2").await[1]["status"] == "rejected"
    })
    .await;
    assert!(
        charger
            .try_next_frame(Duration::from_millis(300))
            .await
            .is_none(),
        "each sent once"
    );

    // It only loses its connection and comes back without booting: after a
    // grace for a BootNotification that does not come, the profiles go out.
    charger.close().await;
    let mut charger = TestCharger::connect(&server.ws_url("CP-P2")).await;
    let first = answer_set(&mut charger, "Accepted").await;
    assert_eq!(first["csChargingProfiles"]["chargingProfileId"], ids[0]);
    let second = answer_set(&mut charger, "Accepted").await;
    assert_eq!(second["csChargingProfiles"]["chargingProfileId"], ids[1]);
    until("the acceptance kept", Duration::from_secs(5), || async {
        profiles(&server, &admin, "CP-P2")
            .await
            .iter()
            .all(|p| p["status"] == "accepted")
    })
    .await;
    // Meanwhile it is served as before.
    let hb = charger.call("Heartbeat", json!({})).await;
    assert!(hb["currentTime"].is_string());
    server.stop().await;
}

async fn a_profile_for_an_offline_charger_waits_for_it(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token("ops", "admin");
    server.booted_charger("CP-P3").await.close().await;
    until("CP-P3 offline", Duration::from_secs(5), || async {
        !server.state.registry.is_connected("CP-P3")
    })
    .await;
    let (status, body) = server
        .api(
            "POST",
            &path("CP-P3"),
            Some(&admin),
            Some(json!({"connectorId": 0, "chargingProfile": limit_profile("ChargePointMaxProfile", 0, 20.0)})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["data"]["status"], "pending");
    let id = body["data"]["id"].as_i64().unwrap();

    let mut charger = TestCharger::connect(&server.ws_url("CP-P3")).await;
    assert_eq!(charger.boot().await["status"], "Accepted");
    let sent = answer_set(&mut charger, "Accepted").await;
    assert_eq!(sent["csChargingProfiles"]["chargingProfileId"], id);
    until("the profile accepted", Duration::from_secs(5), || async {
        profiles(&server, &admin, "CP-P3").await[0]["status"] == "accepted"
    })
    .await;
    server.stop().await;
}

async fn a_profile_is_cleared_on_the_charger(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token("ops", "admin");
    let mut charger = server.booted_charger("CP-P4").await;
    let (_, body, _) = assign(
        &server,
        &mut charger,
        &admin,
        "CP-P4",
        json!({"connectorId": 1, "chargingProfile": limit_profile("TxDefaultProfile", 0, 16.0)}),
        "Accepted",
    )
    .await;
    let id = body["data"]["id"].as_i64().unwrap();
    let url = server.http_url(&format!("{}/{id}", path("CP-P4")));
    let clear = |url: String, admin: String| {
        tokio::spawn(async move {
            let r = http().delete(url).bearer_auth(admin).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        })
    };
    let pending = clear(url.clone(), admin.clone());
    let (msg, action, payload) = charger.expect_call().await;
    assert_eq!(action, "ClearChargingProfile");
    assert_eq!(payload, json!({"id": id}));
    charger.reply(&msg, json!({"status": "Accepted"})).await;
    let (status, body) = pending.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["chargerAnswer"], "Accepted");
    assert_eq!(body["data"]["profile"]["id"], id);
    assert!(profiles(&server, &admin, "CP-P4").await.is_empty());
    // Gone: not sent again when the charger reboots.
    let (status, _) = server
        .api(
            "DELETE",
            &format!("{}/{id}", path("CP-P4")),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 404);
    charger.close().await;
    let mut charger = TestCharger::connect(&server.ws_url("CP-P4")).await;
    charger.boot().await;
    assert!(charger
        .try_next_frame(Duration::from_millis(500))
        .await
        .is_none());

    // Clearing while the charger is offline changes nothing.
    let (_, body, _) = assign(
        &server,
        &mut charger,
        &admin,
        "CP-P4",
        json!({"connectorId": 1, "chargingProfile": limit_profile("TxDefaultProfile", 0, 16.0)}),
        "Accepted",
    )
    .await;
    let id = body["data"]["id"].as_i64().unwrap();
    charger.close().await;
    until("CP-P4 offline", Duration::from_secs(5), || async {
        !server.state.registry.is_connected("CP-P4")
    })
    .await;
    let (status, body) = server
        .api(
            "DELETE",
            &format!("{}/{id}", path("CP-P4")),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "CHARGER_OFFLINE");
    assert_eq!(profiles(&server, &admin, "CP-P4").await.len(), 1);
    server.stop().await;
}

async fn the_composite_schedule_is_the_chargers_answer(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token("ops", "admin");
    let mut charger = server.booted_charger("CP-P5").await;
    let url = server.http_url("/api/admin/stations/CP-P5/composite-schedule?connectorId=1&duration=3600&chargingRateUnit=W");
    let pending = tokio::spawn({
        let admin = admin.clone();
        async move {
            let r = http().get(url).bearer_auth(admin).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    });
    let (msg, action, payload) = charger.expect_call().await;
    assert_eq!(action, "GetCompositeSchedule");
    assert_eq!(
        payload,
        json!({"connectorId": 1, "duration": 3600, "chargingRateUnit": "W"})
    );
    let answer = json!({
        "status": "Accepted", "connectorId": 1, "scheduleStart": "2030-01-01T00:00:00.000Z",
        "chargingSchedule": {"duration": 3600, "chargingRateUnit": "W",
                             "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 7400.0}]}
    });
    charger.reply(&msg, answer.clone()).await;
    let (status, body) = pending.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], answer);

    for (query, field) in [
        ("duration=3600", "connectorId"),
        ("connectorId=1", "duration"),
        ("connectorId=1&duration=0", "duration"),
        (
            "connectorId=1&duration=3600&chargingRateUnit=kW",
            "chargingRateUnit",
        ),
    ] {
        let (status, body) = server
            .api(
                "GET",
                &format!("/api/admin/stations/CP-P5/composite-schedule?{query}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["details"]["field"], field);
    }
    assert!(charger
        .try_next_frame(Duration::from_millis(300))
        .await
        .is_none());
    server.stop().await;
}

async fn bad_profiles_change_nothing(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.ocpp_call_timeout = Duration::from_millis(500);
    })
    .await;
    let admin = server.token("ops", "admin");
    let mut charger = server.booted_charger("CP-P6").await;
    let mut no_schedule = limit_profile("TxDefaultProfile", 0, 16.0);
    no_schedule
        .as_object_mut()
        .unwrap()
        .remove("chargingSchedule");
    let mut with_id = limit_profile("TxDefaultProfile", 0, 16.0);
    with_id["chargingProfileId"] = json!(7);
    let mut tx_without_tx = limit_profile("TxProfile", 0, 16.0);
    tx_without_tx["transactionId"] = json!(424242);
    let cases = [
        (
            json!({"connectorId": 1, "chargingProfile": no_schedule}),
            400,
            "chargingProfile",
        ),
        (
            json!({"connectorId": 1, "chargingProfile": with_id}),
            400,
            "chargingProfile.chargingProfileId",
        ),
        (
            json!({"connectorId": 1, "chargingProfile": limit_profile("ChargePointMaxProfile", 0, 16.0)}),
            400,
            "connectorId",
        ),
        (
            json!({"connectorId": 1, "chargingProfile": limit_profile("TxProfile", 0, 16.0)}),
            400,
            "chargingProfile.transactionId",
        ),
        (
            json!({"connectorId": 1, "chargingProfile": tx_without_tx}),
            400,
            "chargingProfile.transactionId",
        ),
        (
            json!({"connectorId": -1, "chargingProfile": limit_profile("TxDefaultProfile", 0, 16.0)}),
            400,
            "connectorId",
        ),
        (
            json!({"connectorId": 1, "chargingProfile": "16A"}),
            400,
            "chargingProfile",
        ),
        (json!({"connectorId": 1}), 400, "chargingProfile"),
    ];
    for (body, status, field) in cases {
        let (got, answer) = server
            .api("POST", &path("CP-P6"), Some(&admin), Some(body.clone()))
            .await;
        assert_eq!(got, status, "{body} → {answer}");
        assert_eq!(answer["details"]["field"], field, "{answer}");
    }
    let (status, _) = server
        .api(
            "POST",
            &path("CP-NOBODY"),
            Some(&admin),
            Some(json!({"connectorId": 1, "chargingProfile": limit_profile("TxDefaultProfile", 0, 16.0)})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = server
        .api("GET", &path("CP-NOBODY"), Some(&admin), None)
        .await;
    assert_eq!(status, 404);
    let (_, driver) = server.register("dee@example.com").await;
    let (status, _) = server.api("GET", &path("CP-P6"), Some(&driver), None).await;
    assert_eq!(status, 403);
    assert!(charger
        .try_next_frame(Duration::from_millis(300))
        .await
        .is_none());
    assert!(profiles(&server, &admin, "CP-P6").await.is_empty());

    // A charger that does not answer: 202, kept pending with the reason.
    let pending = server.post_in_background(
        &admin,
        &path("CP-P6"),
        json!({"connectorId": 1, "chargingProfile": limit_profile("TxDefaultProfile", 0, 16.0)}),
    );
    let (_, action, _) = charger.expect_call().await;
    assert_eq!(action, "SetChargingProfile");
    let (status, body) = pending.await.unwrap();
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["data"]["status"], "pending");
    assert!(
        body["data"]["lastError"]
            .as_str()
            .unwrap()
            .contains("did not answer"),
        "{body}"
    );
    server.stop().await;
}
