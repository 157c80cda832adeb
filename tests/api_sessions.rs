//! The session engine through the driver API: the app flow, the OCPP flow on
//! a charger's historic timestamps, and remote start/stop with a test charger
//! that accepts, rejects or never answers.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const DEMO: &str = "evliter-lagos-victoria-island";

on_both_backends!(
    the_app_flow_reproduces_the_seed_numbers,
    a_driver_has_one_active_session_and_a_connector_one_driver,
    bad_input_is_a_400_and_changes_nothing,
    another_drivers_session_is_forbidden,
    history_filters_paginate_and_clamp,
    a_charger_session_on_historic_timestamps_reproduces_the_seed_numbers,
    app_and_charger_sessions_are_the_same_objects,
    remote_start_and_stop_drive_a_real_charger,
    a_rejected_remote_start_cancels_the_session,
    a_silent_charger_times_out_and_the_session_is_cancelled,
    a_remote_start_that_never_becomes_a_transaction_is_cancelled,
    an_offline_charger_cannot_start,
    a_stop_the_charger_is_slow_to_confirm_answers_202,
);

fn session_of(body: &Value) -> &Value {
    &body["data"]
}

async fn the_app_flow_reproduces_the_seed_numbers(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (user, token) = server.register("ada@example.com").await;
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
    let s = session_of(&body);
    assert_eq!(s["userId"], user.as_str());
    assert_eq!(s["stationName"], "EvLiter Charging Hub - Victoria Island");
    assert_eq!(
        (s["status"].as_str(), s["source"].as_str()),
        (Some("active"), Some("app"))
    );
    assert_eq!(
        (
            s["duration"].clone(),
            s["averagePower"].clone(),
            s["totalCost"].clone()
        ),
        (json!(0), json!(0), json!(0))
    );
    assert_eq!(
        (s["batteryLevelStart"].clone(), s["currency"].clone()),
        (json!(45), json!("NGN"))
    );
    assert!(s["startTime"].as_str().unwrap().ends_with('Z'));
    let id = s["id"].as_str().unwrap().to_owned();

    let (status, body) = server
        .api(
            "PUT",
            "/api/charging/sessions/active/update",
            t,
            Some(json!({"batteryLevel": 52, "energyDelivered": 4.2})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(session_of(&body)["totalCost"], 693);
    assert_eq!(session_of(&body)["energyDelivered"], 4.2);
    assert_eq!(session_of(&body)["batteryLevel"], 52);

    let (status, body) = server
        .api("GET", "/api/charging/sessions/active", t, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["success"], true);
    assert_eq!(body["session"]["id"], id.as_str());

    let (status, body) = server
        .api(
            "POST",
            "/api/charging/sessions/end",
            t,
            Some(json!({"sessionId": id, "batteryLevelEnd": 80, "stationRating": 5})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let s = session_of(&body);
    assert_eq!(
        (s["status"].as_str(), s["stationRating"].clone()),
        (Some("completed"), json!(5))
    );
    assert_eq!(
        (s["energyDelivered"].clone(), s["totalCost"].clone()),
        (json!(4.2), json!(693)),
        "reported energy is kept"
    );
    assert!(s["endTime"].is_string());

    // No energy ever reported: estimated from the battery rise on a 60 kWh battery.
    let (_, body) = server
        .api(
            "POST",
            "/api/charging/sessions/start",
            t,
            Some(json!({"stationId": DEMO, "connectorId": "connector-2", "batteryLevelStart": 45})),
        )
        .await;
    let id2 = session_of(&body)["id"].as_str().unwrap().to_owned();
    let (_, body) = server
        .api(
            "POST",
            "/api/charging/sessions/end",
            t,
            Some(json!({"sessionId": id2, "batteryLevelEnd": 80})),
        )
        .await;
    assert_eq!(session_of(&body)["energyDelivered"], 21);
    assert_eq!(session_of(&body)["totalCost"], 3465);

    // Cancelled: nothing billed. Unknown station: generic name, default price.
    let (_, body) = server
        .api("POST", "/api/charging/sessions/start", t, Some(json!({"stationId": "nowhere-1", "connectorId": "connector-1", "batteryLevelStart": 10})))
        .await;
    assert_eq!(session_of(&body)["stationName"], "Charging Station");
    assert_eq!(session_of(&body)["pricePerKWh"], 165);
    let id3 = session_of(&body)["id"].as_str().unwrap().to_owned();
    server
        .api(
            "PUT",
            "/api/charging/sessions/active/update",
            t,
            Some(json!({"batteryLevel": 20, "energyDelivered": 3})),
        )
        .await;
    let (status, body) = server
        .api(
            "POST",
            "/api/charging/sessions/cancel",
            t,
            Some(json!({"sessionId": id3})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            session_of(&body)["status"].as_str(),
            session_of(&body)["totalCost"].clone()
        ),
        (Some("cancelled"), json!(0))
    );

    let (_, body) = server
        .api("GET", "/api/charging/sessions/active", t, None)
        .await;
    assert_eq!(body["session"], Value::Null);
    let (_, body) = server.api("GET", "/api/charging/stats", t, None).await;
    let stats = &body["data"];
    assert_eq!(stats["totalSessions"], 2);
    assert_eq!(stats["totalEnergyUsed"], 25.2);
    assert_eq!(stats["totalSpent"], 4158);
    // The contract's favoriteStation is the station id; its name is beside it.
    assert_eq!(
        (
            stats["favoriteStation"].as_str(),
            stats["favoriteStationName"].as_str()
        ),
        (Some(DEMO), Some("EvLiter Charging Hub - Victoria Island"))
    );
    assert_eq!(stats["monthlyUsage"].as_array().unwrap().len(), 1);
    assert_eq!(stats["monthlyUsage"][0]["sessions"], 2);
    let (_, body) = server.api("GET", "/api/charging/dashboard", t, None).await;
    assert_eq!(body["success"], true);
    assert_eq!(body["sessions"].as_array().unwrap().len(), 3);
    assert_eq!(body["stats"]["totalSessions"], 2);
    assert_eq!(
        (
            body["stats"]["favoriteStation"].as_str(),
            body["stats"]["favoriteStationName"].as_str()
        ),
        (Some(DEMO), Some("EvLiter Charging Hub - Victoria Island"))
    );
    assert_eq!(body["activeSession"], Value::Null);
    server.stop().await;
}

async fn a_driver_has_one_active_session_and_a_connector_one_driver(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, ada) = server.register("ada@example.com").await;
    let (_, bob) = server.register("bob@example.com").await;
    let start = json!({"stationId": DEMO, "connectorId": "connector-1", "batteryLevelStart": 45});
    assert_eq!(
        server
            .api(
                "POST",
                "/api/charging/sessions/start",
                Some(&ada),
                Some(start.clone())
            )
            .await
            .0,
        201
    );
    let (status, body) = server
        .api(
            "POST",
            "/api/charging/sessions/start",
            Some(&ada),
            Some(json!({"stationId": DEMO, "connectorId": "connector-2", "batteryLevelStart": 45})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "User already has an active charging session");
    assert_eq!(body["success"], false);
    let (status, body) = server
        .api(
            "POST",
            "/api/charging/sessions/start",
            Some(&bob),
            Some(start),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "CONNECTOR_BUSY");
    let (status, body) = server
        .api(
            "PUT",
            "/api/charging/sessions/active/update",
            Some(&bob),
            Some(json!({"batteryLevel": 50})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "Active charging session not found");
    server.stop().await;
}

async fn bad_input_is_a_400_and_changes_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, token) = server.register("ada@example.com").await;
    let t = Some(token.as_str());
    for (body, field) in [
        (
            json!({"stationId": DEMO, "connectorId": "connector-1", "batteryLevelStart": 150}),
            "batteryLevelStart",
        ),
        (
            json!({"stationId": DEMO, "connectorId": "connector-1", "batteryLevelStart": "half"}),
            "batteryLevelStart",
        ),
        (
            json!({"stationId": DEMO, "connectorId": "connector-1"}),
            "batteryLevelStart",
        ),
        (
            json!({"connectorId": "connector-1", "batteryLevelStart": 40}),
            "stationId",
        ),
        (
            json!({"stationId": 7, "connectorId": "connector-1", "batteryLevelStart": 40}),
            "stationId",
        ),
    ] {
        let (status, reply) = server
            .api("POST", "/api/charging/sessions/start", t, Some(body))
            .await;
        assert_eq!(status, 400, "{reply}");
        assert_eq!(reply["details"]["field"], field);
        assert_eq!(reply["success"], false);
        assert!(reply["code"].is_string() && reply["error"].is_string());
    }
    let (status, reply) = server
        .api_raw("POST", "/api/charging/sessions/start", t, "{not json")
        .await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (400, Some("INVALID_JSON"))
    );
    let (status, _) = server
        .api_raw("POST", "/api/charging/sessions/start", t, "[1,2]")
        .await;
    assert_eq!(status, 400);
    // Nothing was started by any of them.
    assert_eq!(
        server
            .api("GET", "/api/charging/sessions/active", t, None)
            .await
            .1["session"],
        Value::Null
    );

    let (_, body) = server
        .api(
            "POST",
            "/api/charging/sessions/start",
            t,
            Some(json!({"stationId": DEMO, "connectorId": "connector-1", "batteryLevelStart": 40})),
        )
        .await;
    let id = body["data"]["id"].as_str().unwrap().to_owned();
    for (body, field) in [
        (json!({"batteryLevel": -1}), "batteryLevel"),
        (
            json!({"batteryLevel": 50, "energyDelivered": -2}),
            "energyDelivered",
        ),
        (json!({"batteryLevel": 101}), "batteryLevel"),
    ] {
        let (status, reply) = server
            .api("PUT", "/api/charging/sessions/active/update", t, Some(body))
            .await;
        assert_eq!(
            (status, reply["details"]["field"].as_str()),
            (400, Some(field)),
            "{reply}"
        );
    }
    let (status, reply) = server
        .api(
            "POST",
            "/api/charging/sessions/end",
            t,
            Some(json!({"sessionId": id, "batteryLevelEnd": 80, "stationRating": 6})),
        )
        .await;
    assert_eq!(
        (status, reply["details"]["field"].as_str()),
        (400, Some("stationRating"))
    );
    // The session is untouched and still active.
    let (_, active) = server
        .api("GET", "/api/charging/sessions/active", t, None)
        .await;
    assert_eq!(
        (
            active["session"]["batteryLevel"].clone(),
            active["session"]["status"].clone()
        ),
        (json!(40), json!("active"))
    );
    let (status, reply) = server
        .api(
            "POST",
            "/api/charging/sessions/end",
            t,
            Some(json!({"sessionId": "no-such-session", "batteryLevelEnd": 80})),
        )
        .await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (400, Some("Charging session not found"))
    );
    let (status, _) = server
        .api("GET", "/api/charging/sessions", None, None)
        .await;
    assert_eq!(status, 401);
    server.stop().await;
}

async fn another_drivers_session_is_forbidden(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, ada) = server.register("ada@example.com").await;
    let (_, eve) = server.register("eve@example.com").await;
    let (_, body) = server
        .api(
            "POST",
            "/api/charging/sessions/start",
            Some(&ada),
            Some(json!({"stationId": DEMO, "connectorId": "connector-1", "batteryLevelStart": 40})),
        )
        .await;
    let id = body["data"]["id"].as_str().unwrap().to_owned();
    for (method, path, body) in [
        (
            "POST",
            "/api/charging/sessions/end",
            Some(json!({"sessionId": id, "batteryLevelEnd": 90})),
        ),
        (
            "POST",
            "/api/charging/sessions/cancel",
            Some(json!({"sessionId": id})),
        ),
        ("GET", &*format!("/api/charging/sessions/{id}"), None),
    ] {
        let (status, reply) = server.api(method, path, Some(&eve), body).await;
        assert_eq!(status, 403, "{method} {path}: {reply}");
    }
    let (_, mine) = server
        .api("GET", "/api/charging/sessions/active", Some(&ada), None)
        .await;
    assert_eq!(mine["session"]["status"], "active", "untouched");
    // An admin may act for anyone.
    let admin = server.token("ops", "admin");
    let (status, reply) = server
        .api(
            "POST",
            "/api/charging/sessions/cancel",
            Some(&admin),
            Some(json!({"sessionId": id})),
        )
        .await;
    assert_eq!(
        (status, reply["data"]["status"].as_str()),
        (200, Some("cancelled"))
    );
    server.stop().await;
}

async fn history_filters_paginate_and_clamp(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, token) = server.register("ada@example.com").await;
    let t = Some(token.as_str());
    for n in 0..3 {
        let (_, body) = server.api("POST", "/api/charging/sessions/start", t, Some(json!({"stationId": DEMO, "connectorId": format!("connector-{n}"), "batteryLevelStart": 10}))).await;
        let id = body["data"]["id"].as_str().unwrap().to_owned();
        server
            .api(
                "POST",
                "/api/charging/sessions/end",
                t,
                Some(json!({"sessionId": id, "batteryLevelEnd": 20})),
            )
            .await;
    }
    let (status, body) = server
        .api(
            "GET",
            "/api/charging/sessions?filter=recent&limit=2&offset=1",
            t,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        body["pagination"],
        json!({"total": 3, "limit": 2, "offset": 1})
    );
    let (_, all) = server
        .api("GET", "/api/charging/sessions?filter=all-time", t, None)
        .await;
    let starts: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["startTime"].as_str().unwrap())
        .collect();
    let mut sorted = starts.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(starts, sorted, "newest first");
    assert_eq!(
        server
            .api("GET", "/api/charging/sessions?filter=this-month", t, None)
            .await
            .1["pagination"]["total"],
        3
    );
    assert_eq!(
        server
            .api("GET", "/api/charging/sessions?limit=500", t, None)
            .await
            .1["pagination"]["limit"],
        100,
        "clamped"
    );
    for bad in ["filter=yesterday", "limit=abc", "limit=0", "offset=-1"] {
        let (status, body) = server
            .api("GET", &format!("/api/charging/sessions?{bad}"), t, None)
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    server.stop().await;
}

/// Registers a driver with an idTag through the API, and a station with a tariff.
async fn driver_with_tag(server: &TestServer, email: &str, tag: &str) -> (String, String) {
    let (user, token) = server.register(email).await;
    let admin = server.token("ops", "admin");
    let (status, body) = server
        .api(
            "PUT",
            &format!("/api/admin/id-tags/{tag}"),
            Some(&admin),
            Some(json!({"userId": user})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    (user, token)
}

async fn station(server: &TestServer, id: &str) {
    let admin = server.token("ops", "admin");
    let (status, body) = server
        .api(
            "PUT",
            &format!("/api/admin/stations/{id}"),
            Some(&admin),
            Some(json!({"name": format!("Hub {id}"), "pricePerKWh": 165, "currency": "NGN"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn a_charger_session_on_historic_timestamps_reproduces_the_seed_numbers(backend: Backend) {
    let server = TestServer::start(backend).await;
    station(&server, "CP-HIST").await;
    let (user, token) = driver_with_tag(&server, "ada@example.com", "ADA-CARD").await;
    let mut charger = server.booted_charger("CP-HIST").await;
    let start = charger.call("StartTransaction", json!({"connectorId": 2, "idTag": "ADA-CARD", "meterStart": 1000, "timestamp": "2024-01-15T10:00:00.000Z"})).await;
    let tx = start["transactionId"].as_i64().unwrap();
    charger.call("MeterValues", json!({"connectorId": 2, "transactionId": tx, "meterValue": [meter_sample("2024-01-15T10:00:00.000Z", 1000.0, Some(45.0))]})).await;
    let (_, active) = server
        .api("GET", "/api/charging/sessions/active", Some(&token), None)
        .await;
    assert_eq!(active["session"]["source"], "ocpp");
    assert_eq!(active["session"]["transactionId"], tx);
    assert_eq!(active["session"]["batteryLevelStart"], 45);
    charger.call("MeterValues", json!({"connectorId": 2, "transactionId": tx, "meterValue": [meter_sample("2024-01-15T10:30:00.000Z", 5200.0, Some(52.0))]})).await;
    let (_, active) = server
        .api("GET", "/api/charging/sessions/active", Some(&token), None)
        .await;
    // 4.2 kWh on the charger's clock: 30 minutes, 693 NGN, 8.4 kW.
    assert_eq!(
        (
            active["session"]["energyDelivered"].clone(),
            active["session"]["totalCost"].clone()
        ),
        (json!(4.2), json!(693))
    );
    assert_eq!(
        (
            active["session"]["duration"].clone(),
            active["session"]["averagePower"].clone()
        ),
        (json!(30), json!(8.4))
    );
    charger
        .call("StopTransaction", json!({"transactionId": tx, "idTag": "ADA-CARD", "meterStop": 22000, "timestamp": "2024-01-15T11:15:00.000Z",
            "transactionData": [meter_sample("2024-01-15T11:15:00.000Z", 22000.0, Some(80.0))]}))
        .await;
    let (_, list) = server
        .api("GET", "/api/charging/sessions", Some(&token), None)
        .await;
    let s = &list["data"][0];
    assert_eq!(s["userId"], user.as_str());
    assert_eq!(
        (
            s["status"].as_str(),
            s["source"].as_str(),
            s["chargerId"].as_str()
        ),
        (Some("completed"), Some("ocpp"), Some("CP-HIST"))
    );
    assert_eq!(
        (s["startTime"].as_str(), s["endTime"].as_str()),
        (
            Some("2024-01-15T10:00:00.000Z"),
            Some("2024-01-15T11:15:00.000Z")
        )
    );
    assert_eq!(s["duration"], 75);
    assert_eq!(s["energyDelivered"], 21);
    assert_eq!(s["totalCost"], 3465);
    assert_eq!(s["averagePower"], 16.8);
    assert_eq!(
        (s["batteryLevelStart"].clone(), s["batteryLevel"].clone()),
        (json!(45), json!(80))
    );
    assert_eq!(s["connectorId"], "connector-2");
    assert_eq!(s["stationName"], "Hub CP-HIST");
    // The charger's clock decides the month, not the day it arrived.
    let (_, stats) = server
        .api("GET", "/api/charging/stats", Some(&token), None)
        .await;
    assert_eq!(
        stats["data"]["monthlyUsage"],
        json!([{"month": "2024-01", "sessions": 1, "energyUsed": 21, "totalSpent": 3465}])
    );
    // A retransmitted stop bills nothing twice.
    charger.call("StopTransaction", json!({"transactionId": tx, "idTag": "ADA-CARD", "meterStop": 22000, "timestamp": "2024-01-15T11:15:00.000Z"})).await;
    let (_, stats) = server
        .api("GET", "/api/charging/stats", Some(&token), None)
        .await;
    assert_eq!(
        (
            stats["data"]["totalSessions"].clone(),
            stats["data"]["totalSpent"].clone()
        ),
        (json!(1), json!(3465))
    );
    server.stop().await;
}

async fn app_and_charger_sessions_are_the_same_objects(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, token) = driver_with_tag(&server, "ada@example.com", "ADA-CARD").await;
    let (_, body) = server
        .api(
            "POST",
            "/api/charging/sessions/start",
            Some(&token),
            Some(json!({"stationId": DEMO, "connectorId": "connector-1", "batteryLevelStart": 45})),
        )
        .await;
    let app_id = body["data"]["id"].as_str().unwrap().to_owned();
    server
        .api(
            "POST",
            "/api/charging/sessions/end",
            Some(&token),
            Some(json!({"sessionId": app_id, "batteryLevelEnd": 80})),
        )
        .await;
    let mut charger = server.booted_charger("CP-SAME").await;
    let tx = charger.call("StartTransaction", json!({"connectorId": 1, "idTag": "ADA-CARD", "meterStart": 0, "timestamp": "2024-01-15T10:00:00Z"})).await["transactionId"].as_i64().unwrap();
    charger
        .call(
            "StopTransaction",
            json!({"transactionId": tx, "meterStop": 4200, "timestamp": "2024-01-15T10:30:00Z"}),
        )
        .await;
    let (_, list) = server
        .api("GET", "/api/charging/sessions", Some(&token), None)
        .await;
    let sessions = list["data"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        keys(&sessions[0]),
        keys(&sessions[1]),
        "one shape for both sources"
    );
    let sources: Vec<&str> = sessions
        .iter()
        .map(|s| s["source"].as_str().unwrap())
        .collect();
    assert!(sources.contains(&"app") && sources.contains(&"ocpp"));
    // Unknown station for the charger: default price, charger id as name.
    let ocpp = sessions.iter().find(|s| s["source"] == "ocpp").unwrap();
    assert_eq!(
        (ocpp["totalCost"].clone(), ocpp["stationName"].clone()),
        (json!(693), json!("CP-SAME"))
    );
    let (_, dash) = server
        .api("GET", "/api/charging/dashboard", Some(&token), None)
        .await;
    assert_eq!(dash["stats"]["totalSessions"], 2);
    assert_eq!(dash["stats"]["totalEnergyUsed"], 25.2);
    server.stop().await;
}

/// Starts a driver's session at `station` in the background; the charger side is played by the test.
fn start_in_background(
    server: &TestServer,
    token: &str,
    station: &str,
) -> tokio::task::JoinHandle<(u16, Value)> {
    let body = json!({"stationId": station, "connectorId": "connector-1", "batteryLevelStart": 30});
    server.post_in_background(token, "/api/charging/sessions/start", body)
}

async fn remote_start_and_stop_drive_a_real_charger(backend: Backend) {
    let server = TestServer::start(backend).await;
    station(&server, "CP-REMOTE").await;
    let (_, token) = server.register("ada@example.com").await;
    let mut charger = server.booted_charger("CP-REMOTE").await;

    let started = start_in_background(&server, &token, "CP-REMOTE");
    let (id, action, payload) = charger.expect_call().await;
    assert_eq!(action, "RemoteStartTransaction");
    assert_eq!(payload["connectorId"], 1);
    let id_tag = payload["idTag"]
        .as_str()
        .expect("the driver's idTag")
        .to_owned();
    charger.reply(&id, json!({"status": "Accepted"})).await;
    let (status, body) = started.await.unwrap();
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (
            body["data"]["source"].as_str(),
            body["data"]["chargerId"].as_str()
        ),
        (Some("ocpp"), Some("CP-REMOTE"))
    );

    // The charger starts the transaction with that idTag: the session binds to it.
    let start = charger.call("StartTransaction", json!({"connectorId": 1, "idTag": id_tag, "meterStart": 500, "timestamp": "2024-01-15T10:00:00Z"})).await;
    assert_eq!(start["idTagInfo"]["status"], "Accepted");
    let tx = start["transactionId"].as_i64().unwrap();
    let (_, active) = server
        .api("GET", "/api/charging/sessions/active", Some(&token), None)
        .await;
    assert_eq!(active["session"]["transactionId"], tx);
    charger.call("MeterValues", json!({"connectorId": 1, "transactionId": tx, "meterValue": [meter_sample("2024-01-15T10:20:00Z", 4700.0, Some(40.0))]})).await;
    // The app's energy does not overrule the meter.
    let (_, updated) = server
        .api(
            "PUT",
            "/api/charging/sessions/active/update",
            Some(&token),
            Some(json!({"batteryLevel": 41, "energyDelivered": 99})),
        )
        .await;
    assert_eq!(updated["data"]["energyDelivered"], 4.2);

    let session_id = active["session"]["id"].as_str().unwrap().to_owned();
    let ended = server.post_in_background(
        &token,
        "/api/charging/sessions/end",
        json!({"sessionId": session_id, "batteryLevelEnd": 60, "stationRating": 4}),
    );
    let (id, action, payload) = charger.expect_call().await;
    assert_eq!(
        (action.as_str(), payload["transactionId"].as_i64()),
        ("RemoteStopTransaction", Some(tx))
    );
    charger.reply(&id, json!({"status": "Accepted"})).await;
    charger.call("StopTransaction", json!({"transactionId": tx, "meterStop": 4700, "timestamp": "2024-01-15T10:30:00Z", "reason": "Remote"})).await;
    let (status, body) = ended.await.unwrap();
    assert_eq!(status, 200, "{body}");
    let s = &body["data"];
    assert_eq!(
        (
            s["status"].as_str(),
            s["energyDelivered"].clone(),
            s["totalCost"].clone()
        ),
        (Some("completed"), json!(4.2), json!(693))
    );
    assert_eq!(
        (
            s["duration"].clone(),
            s["stationRating"].clone(),
            s["endReason"].clone()
        ),
        (json!(30), json!(4), json!("Remote"))
    );
    server.stop().await;
}

async fn a_rejected_remote_start_cancels_the_session(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, token) = server.register("ada@example.com").await;
    let mut charger = server.booted_charger("CP-NO").await;
    let started = start_in_background(&server, &token, "CP-NO");
    let (id, _, _) = charger.expect_call().await;
    charger.reply(&id, json!({"status": "Rejected"})).await;
    let (status, body) = started.await.unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("CHARGER_REJECTED")),
        "{body}"
    );
    let (_, list) = server
        .api("GET", "/api/charging/sessions", Some(&token), None)
        .await;
    assert_eq!(list["data"][0]["status"], "cancelled");
    assert_eq!(list["data"][0]["totalCost"], 0);
    assert_eq!(
        server
            .api("GET", "/api/charging/sessions/active", Some(&token), None)
            .await
            .1["session"],
        Value::Null
    );
    server.stop().await;
}

async fn a_silent_charger_times_out_and_the_session_is_cancelled(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.ocpp_call_timeout = Duration::from_millis(600)
    })
    .await;
    let (_, token) = server.register("ada@example.com").await;
    let mut charger = server.booted_charger("CP-MUTE").await;
    let started = start_in_background(&server, &token, "CP-MUTE");
    let (_, action, _) = charger.expect_call().await;
    assert_eq!(action, "RemoteStartTransaction");
    let (status, body) = started.await.unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (504, Some("CHARGER_TIMEOUT")),
        "{body}"
    );
    let (_, list) = server
        .api("GET", "/api/charging/sessions", Some(&token), None)
        .await;
    assert_eq!(list["data"][0]["status"], "cancelled");
    server.stop().await;
}

async fn a_remote_start_that_never_becomes_a_transaction_is_cancelled(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.remote_start_timeout = Duration::from_millis(500)
    })
    .await;
    let (_, token) = server.register("ada@example.com").await;
    let mut charger = server.booted_charger("CP-IDLE").await;
    let started = start_in_background(&server, &token, "CP-IDLE");
    let (id, _, _) = charger.expect_call().await;
    charger.reply(&id, json!({"status": "Accepted"})).await;
    assert_eq!(started.await.unwrap().0, 201);
    // No StartTransaction ever comes.
    let mut status = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (_, list) = server
            .api("GET", "/api/charging/sessions", Some(&token), None)
            .await;
        status = list["data"][0]["status"].as_str().unwrap().to_owned();
        if status == "cancelled" {
            break;
        }
    }
    assert_eq!(status, "cancelled");
    server.stop().await;
}

async fn an_offline_charger_cannot_start(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, token) = server.register("ada@example.com").await;
    server
        .state
        .store
        .provision_charger("CP-GONE", None, None)
        .await
        .unwrap();
    let (status, body) = server
        .api("POST", "/api/charging/sessions/start", Some(&token), Some(json!({"stationId": "CP-GONE", "connectorId": "connector-1", "batteryLevelStart": 30})))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("CHARGER_OFFLINE")),
        "{body}"
    );
    assert_eq!(
        server
            .api("GET", "/api/charging/sessions", Some(&token), None)
            .await
            .1["pagination"]["total"],
        0
    );
    server.stop().await;
}

async fn a_stop_the_charger_is_slow_to_confirm_answers_202(backend: Backend) {
    let server =
        TestServer::start_with(backend, |c| c.stop_wait = Duration::from_millis(300)).await;
    let (_, token) = driver_with_tag(&server, "ada@example.com", "ADA-CARD").await;
    let mut charger = server.booted_charger("CP-SLOW").await;
    let tx = charger.call("StartTransaction", json!({"connectorId": 1, "idTag": "ADA-CARD", "meterStart": 0, "timestamp": "2024-01-15T10:00:00Z"})).await["transactionId"].as_i64().unwrap();
    let (_, active) = server
        .api("GET", "/api/charging/sessions/active", Some(&token), None)
        .await;
    let session_id = active["session"]["id"].as_str().unwrap().to_owned();
    let ended = server.post_in_background(
        &token,
        "/api/charging/sessions/end",
        json!({"sessionId": session_id}),
    );
    let (id, _, _) = charger.expect_call().await;
    charger.reply(&id, json!({"status": "Accepted"})).await;
    let (status, body) = ended.await.unwrap();
    assert_eq!(
        (status, body["data"]["status"].as_str()),
        (202, Some("active")),
        "{body}"
    );
    // When the stop does come, the session completes.
    charger
        .call(
            "StopTransaction",
            json!({"transactionId": tx, "meterStop": 1000, "timestamp": "2024-01-15T10:10:00Z"}),
        )
        .await;
    let (_, list) = server
        .api("GET", "/api/charging/sessions", Some(&token), None)
        .await;
    assert_eq!(
        (
            list["data"][0]["status"].as_str(),
            list["data"][0]["energyDelivered"].clone()
        ),
        (Some("completed"), json!(1))
    );
    server.stop().await;
}
