//! The operator API end to end (`/api/admin/...`): stations with tariff,
//! password and live charger state, registration, users, idTags, commands
//! sent to a real test charger, the message log, anomalies and the ingest
//! counts.

mod common;
use common::*;

use serde_json::{json, Value};
use std::time::Duration;

on_both_backends!(
    lists_page_in_the_database_and_report_their_total,
    putting_a_station_sets_its_tariff_and_never_shows_its_password,
    a_charger_given_a_password_must_use_basic_auth,
    station_validation_is_400_naming_the_field_and_writes_nothing,
    station_ids_beyond_48_characters_are_refused_however_they_are_spelled,
    the_station_list_shows_live_charger_state,
    a_fresh_database_lists_the_demo_station,
    an_operator_accepts_a_pending_charger,
    putting_a_user_creates_and_updates_it,
    user_validation_and_email_conflicts,
    concurrent_puts_of_one_email_for_two_users_are_409_not_500,
    id_tags_put_by_an_operator_decide_what_authorize_answers,
    id_tag_validation_is_400_or_404_and_writes_nothing,
    id_tags_are_case_insensitive_as_ocpp_defines_them,
    a_reset_reaches_the_charger_and_its_answer_comes_back,
    other_commands_reach_the_charger_likewise,
    a_command_that_breaks_the_schema_is_400_and_never_sent,
    unknown_actions_are_404_and_offline_chargers_409,
    a_silent_charger_is_504_and_a_callerror_is_502,
    the_message_log_shows_the_frames,
    a_stop_for_an_unknown_transaction_shows_as_an_anomaly,
    ingest_counts_stored_readings_once_and_every_logged_frame,
    admin_routes_refuse_drivers_with_403_and_strangers_with_401,
);

fn admin(server: &TestServer) -> String {
    server.token("ops", "admin")
}

/// Asserts a 400 naming `field`.
fn assert_invalid(status: u16, body: &Value, field: &str) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["success"], false, "{body}");
    assert!(body["error"].is_string(), "{body}");
    assert!(body["code"].is_string(), "{body}");
    assert_eq!(body["details"]["field"], field, "{body}");
}

fn assert_failure(status: u16, body: &Value, expected_status: u16, code: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(body["error"].is_string(), "{body}");
}

/// Calls the API from another task, so a test charger can answer meanwhile.
fn api_in_background(
    server: &TestServer,
    method: &str,
    path: &str,
    token: &str,
    body: Value,
) -> tokio::task::JoinHandle<(u16, Value)> {
    let url = server.http_url(path);
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let token = token.to_owned();
    tokio::spawn(async move {
        let response = http()
            .request(method, url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("HTTP request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    })
}

async fn stations(server: &TestServer) -> Vec<Value> {
    let (status, body) = server
        .api("GET", "/api/admin/stations", Some(&admin(server)), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    body["data"].as_array().expect("a list").clone()
}

async fn listed(server: &TestServer, id: &str) -> Value {
    stations(server)
        .await
        .into_iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("{id} is listed"))
}

/// Polls the station list until `check` holds for `id` (5 s at most).
async fn eventually_listed(server: &TestServer, id: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let station = listed(server, id).await;
        if check(&station) || tokio::time::Instant::now() > deadline {
            return station;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const OCPP_PASSWORD: &str = "s3cret-Authorization-Key";

async fn putting_a_station_sets_its_tariff_and_never_shows_its_password(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = admin(&server);
    let (status, body) = server
        .api(
            "PUT",
            "/api/admin/stations/CP-TARIFF",
            Some(&token),
            Some(
                json!({"name": "Harbour Road", "pricePerKWh": 250.125, "currency": "EUR",
                        "ocppPassword": OCPP_PASSWORD}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    let station = &body["data"];
    assert_eq!(station["id"], "CP-TARIFF");
    assert_eq!(station["name"], "Harbour Road");
    assert_eq!(station["pricePerKWh"], json!(250.125));
    assert_eq!(station["currency"], "EUR");
    assert_eq!(station["hasOcppPassword"], true);
    assert_eq!(station["connected"], false);
    assert!(!body.to_string().contains(OCPP_PASSWORD), "{body}");

    // Changing the tariff without a password keeps the password.
    let (status, body) = server
        .api(
            "PUT",
            "/api/admin/stations/CP-TARIFF",
            Some(&token),
            Some(json!({"name": "Harbour Road", "pricePerKWh": 0.1, "currency": "EUR"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["pricePerKWh"], json!(0.1));
    assert_eq!(body["data"]["hasOcppPassword"], true);

    // Nowhere else either.
    for path in [
        "/api/admin/stations",
        "/api/admin/stations/CP-TARIFF",
        "/api/admin/stations/CP-TARIFF/messages",
    ] {
        let (status, body) = server.api("GET", path, Some(&token), None).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(!body.to_string().contains(OCPP_PASSWORD), "{path}: {body}");
    }
    let (status, body) = server
        .api("GET", "/api/admin/stations/CP-TARIFF", Some(&token), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["name"], "Harbour Road");
    assert_eq!(body["data"]["pricePerKWh"], json!(0.1));
    assert_eq!(body["data"]["currency"], "EUR");
    server.stop().await;
}

async fn a_charger_given_a_password_must_use_basic_auth(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, body) = server
        .api(
            "PUT",
            "/api/admin/stations/CP-LOCKED",
            Some(&admin(&server)),
            Some(
                json!({"name": "Locked", "pricePerKWh": 100, "currency": "NGN",
                        "ocppPassword": OCPP_PASSWORD}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["hasOcppPassword"], true);
    let url = server.ws_url("CP-LOCKED");

    let missing = try_connect(&url, ConnectOptions::default())
        .await
        .unwrap_err();
    assert_eq!(refused_status(missing), 401);
    let wrong = try_connect(
        &url,
        ConnectOptions {
            basic_auth: Some(("CP-LOCKED", "not-the-key-at-all")),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(refused_status(wrong), 401);
    let (socket, _) = try_connect(
        &url,
        ConnectOptions {
            basic_auth: Some(("CP-LOCKED", OCPP_PASSWORD)),
            ..Default::default()
        },
    )
    .await
    .expect("the right password connects");
    let mut charger = TestCharger::from_socket(socket);
    assert_eq!(charger.boot().await["status"], "Accepted");
    let station = eventually_listed(&server, "CP-LOCKED", |s| s["connected"] == true).await;
    assert_eq!(station["connected"], true);
    assert_eq!(station["name"], "Locked");
    charger.close().await;
    server.stop().await;
}

async fn station_validation_is_400_naming_the_field_and_writes_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = admin(&server);
    let valid = json!({"name": "Valid", "pricePerKWh": 100, "currency": "NGN"});
    let with = |key: &str, value: Value| {
        let mut body = valid.clone();
        body[key] = value;
        body
    };
    let without = |key: &str| {
        let mut body = valid.clone();
        body.as_object_mut().unwrap().remove(key);
        body
    };
    let cases = [
        (with("currency", json!("EURO")), "currency"),
        (with("currency", json!("N1")), "currency"),
        (with("currency", json!(566)), "currency"),
        (without("currency"), "currency"),
        (with("pricePerKWh", json!(-1)), "pricePerKWh"),
        (with("pricePerKWh", json!(-0.5)), "pricePerKWh"),
        (with("pricePerKWh", json!(0.1234567)), "pricePerKWh"),
        (with("pricePerKWh", json!("cheap")), "pricePerKWh"),
        (without("pricePerKWh"), "pricePerKWh"),
        (without("name"), "name"),
        (with("name", json!("")), "name"),
        (with("name", json!(12)), "name"),
        (with("ocppPassword", json!("short")), "ocppPassword"),
        (with("ocppPassword", json!(12345678)), "ocppPassword"),
    ];
    for (body, field) in cases {
        let (status, answer) = server
            .api(
                "PUT",
                "/api/admin/stations/CP-VALID",
                Some(&token),
                Some(body.clone()),
            )
            .await;
        assert_invalid(status, &answer, field);
    }
    let long = format!("CP-{}", "9".repeat(46));
    assert_eq!(long.chars().count(), 49);
    let (status, answer) = server
        .api(
            "PUT",
            &format!("/api/admin/stations/{long}"),
            Some(&token),
            Some(valid.clone()),
        )
        .await;
    assert_invalid(status, &answer, "id");
    for raw in ["{", "[]", "42"] {
        let (status, answer) = server
            .api_raw("PUT", "/api/admin/stations/CP-VALID", Some(&token), raw)
            .await;
        assert_eq!(status, 400, "{raw}: {answer}");
        assert_eq!(answer["success"], false);
    }

    // Nothing was written.
    for id in ["CP-VALID", long.as_str()] {
        let (status, answer) = server
            .api(
                "GET",
                &format!("/api/admin/stations/{id}"),
                Some(&token),
                None,
            )
            .await;
        assert_failure(status, &answer, 404, "NOT_FOUND");
    }
    assert!(stations(&server)
        .await
        .iter()
        .all(|s| s["id"] != "CP-VALID"));
    // 6 decimals and exactly 48 characters are fine.
    let fits = format!("CP-{}", "9".repeat(45));
    let (status, answer) = server
        .api(
            "PUT",
            &format!("/api/admin/stations/{fits}"),
            Some(&token),
            Some(with("pricePerKWh", json!(0.123456))),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"]["pricePerKWh"], json!(0.123456));
    server.stop().await;
}

/// A station id doubles as a charger identity (at most 48 characters, one
/// path segment). The id the API stores is the decoded path segment; however
/// it was spelled in the URL, one that is too long is refused.
async fn station_ids_beyond_48_characters_are_refused_however_they_are_spelled(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = admin(&server);
    let valid = json!({"name": "Valid", "pricePerKWh": 100, "currency": "NGN"});
    let mut accepted = Vec::new();
    for (spelled, stored) in [
        // 52 characters with an encoded slash: "AAAA…A/x".
        (
            format!("{}%2Fx", "A".repeat(50)),
            format!("{}/x", "A".repeat(50)),
        ),
        // 60 characters of "%41" (an encoded percent sign, then "41").
        ("%2541".repeat(20), "%41".repeat(20)),
    ] {
        assert!(stored.chars().count() > 48);
        let (status, body) = server
            .api(
                "PUT",
                &format!("/api/admin/stations/{spelled}"),
                Some(&token),
                Some(valid.clone()),
            )
            .await;
        if status != 400 || body["details"]["field"] != "id" {
            accepted.push(format!("{spelled} → {status} {body}"));
        }
    }
    let stored: Vec<String> = stations(&server)
        .await
        .iter()
        .filter_map(|s| s["id"].as_str().map(str::to_owned))
        .filter(|id| id.chars().count() > 48)
        .collect();
    assert_eq!(
        stored,
        Vec::<String>::new(),
        "no station id over 48 characters is stored"
    );
    assert!(
        accepted.is_empty(),
        "each is a 400 naming id: {accepted:#?}"
    );
    server.stop().await;
}

fn connector(station: &Value, id: i64) -> &Value {
    station["connectors"]
        .as_array()
        .expect("connectors is a list")
        .iter()
        .find(|c| c["connectorId"] == id)
        .unwrap_or_else(|| panic!("connector {id} in {station}"))
}

async fn the_station_list_shows_live_charger_state(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut charger = server.booted_charger("CP-LIVE").await;
    charger.call("Heartbeat", json!({})).await;
    charger
        .call(
            "StatusNotification",
            json!({"connectorId": 1, "errorCode": "NoError", "status": "Preparing"}),
        )
        .await;
    charger
        .call(
            "StatusNotification",
            json!({"connectorId": 2, "errorCode": "GroundFailure", "status": "Faulted"}),
        )
        .await;

    let station = listed(&server, "CP-LIVE").await;
    assert_eq!(station["connected"], true, "{station}");
    assert!(station["lastHeartbeat"].is_string(), "{station}");
    assert_eq!(station["registrationStatus"], "Accepted");
    assert_eq!(station["vendor"], "TestVendor");
    assert_eq!(station["model"], "TestModel");
    assert_eq!(connector(&station, 1)["status"], "Preparing");
    assert_eq!(connector(&station, 2)["status"], "Faulted");
    assert_eq!(connector(&station, 2)["errorCode"], "GroundFailure");

    // A later status replaces the earlier one.
    charger
        .call(
            "StatusNotification",
            json!({"connectorId": 1, "errorCode": "NoError", "status": "Available"}),
        )
        .await;
    let station = listed(&server, "CP-LIVE").await;
    assert_eq!(connector(&station, 1)["status"], "Available");

    charger.close().await;
    let station = eventually_listed(&server, "CP-LIVE", |s| s["connected"] == false).await;
    assert_eq!(
        station["connected"], false,
        "closed chargers are shown offline: {station}"
    );
    assert!(station["lastHeartbeat"].is_string(), "{station}");
    server.stop().await;
}

async fn a_fresh_database_lists_the_demo_station(backend: Backend) {
    let server = TestServer::start(backend).await;
    let demo = listed(&server, "evliter-lagos-victoria-island").await;
    assert_eq!(demo["name"], "EvLiter Charging Hub - Victoria Island");
    assert_eq!(demo["pricePerKWh"], json!(165));
    assert_eq!(demo["currency"], "NGN");
    assert_eq!(demo["connected"], false);
    let (status, body) = server
        .api(
            "GET",
            "/api/admin/stations/evliter-lagos-victoria-island",
            Some(&admin(&server)),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["pricePerKWh"], json!(165));
    server.stop().await;
}

async fn an_operator_accepts_a_pending_charger(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.unknown_chargers = csms::config::UnknownChargers::Pending
    })
    .await;
    let token = admin(&server);
    let mut charger = TestCharger::connect(&server.ws_url("CP-WAITING")).await;
    assert_eq!(charger.boot().await["status"], "Pending");
    let station = listed(&server, "CP-WAITING").await;
    assert_eq!(station["registrationStatus"], "Pending", "{station}");

    let (status, body) = server
        .api(
            "PUT",
            "/api/admin/stations/CP-WAITING/registration",
            Some(&token),
            Some(json!({"status": "Maybe"})),
        )
        .await;
    assert_invalid(status, &body, "status");
    let (status, body) = server
        .api(
            "PUT",
            "/api/admin/stations/CP-WAITING/registration",
            Some(&token),
            Some(json!({"status": "Accepted"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["data"]["registrationStatus"], "Accepted");

    let boot = charger.boot().await;
    assert_eq!(boot["status"], "Accepted");
    assert_eq!(boot["interval"], 300);
    let beat = charger.call("Heartbeat", json!({})).await;
    assert!(beat["currentTime"].is_string());

    // And the other way: an operator rejects it.
    let (status, body) = server
        .api(
            "PUT",
            "/api/admin/stations/CP-WAITING/registration",
            Some(&token),
            Some(json!({"status": "Rejected"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["registrationStatus"], "Rejected");
    assert_eq!(charger.boot().await["status"], "Rejected");
    server.stop().await;
}

async fn putting_a_user_creates_and_updates_it(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = admin(&server);
    let (status, body) = server
        .api(
            "PUT",
            "/api/admin/users/fleet-7",
            Some(&token),
            Some(json!({"name": "Fleet Seven", "email": "Fleet7@Example.com", "role": "driver"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["data"]["id"], "fleet-7");
    assert_eq!(body["data"]["name"], "Fleet Seven");
    assert_eq!(body["data"]["email"], "fleet7@example.com");
    assert_eq!(body["data"]["role"], "driver");
    let created_at = body["data"]["createdAt"].clone();

    let (status, body) = server
        .api(
            "PUT",
            "/api/admin/users/fleet-7",
            Some(&token),
            Some(json!({"name": "Fleet 7", "email": "fleet7@example.com", "role": "admin"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["name"], "Fleet 7");
    assert_eq!(body["data"]["role"], "admin");
    assert_eq!(
        body["data"]["createdAt"], created_at,
        "an update keeps createdAt"
    );

    let (status, body) = server
        .api("GET", "/api/admin/users", Some(&token), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let users = body["data"].as_array().expect("a list");
    assert_eq!(
        users.iter().filter(|u| u["id"] == "fleet-7").count(),
        1,
        "{body}"
    );

    // Promoting a registered driver keeps their password: they log in as admin.
    let (id, _) = server.register("promoted@example.com").await;
    let (status, body) = server
        .api(
            "PUT",
            &format!("/api/admin/users/{id}"),
            Some(&token),
            Some(json!({"name": "Promoted", "email": "promoted@example.com", "role": "admin"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .api(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"email": "promoted@example.com", "password": "correct-horse-9"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["user"]["role"], "admin");
    let promoted = body["data"]["token"].as_str().unwrap();
    let (status, body) = server
        .api("GET", "/api/admin/stations", Some(promoted), None)
        .await;
    assert_eq!(
        status, 200,
        "the new admin's token opens the operator API: {body}"
    );
    server.stop().await;
}

async fn user_validation_and_email_conflicts(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = admin(&server);
    server.register("taken@example.com").await;
    for (body, field) in [
        (
            json!({"name": "X", "email": "x@example.com", "role": "root"}),
            "role",
        ),
        (
            json!({"name": "X", "email": "x@example.com", "role": 1}),
            "role",
        ),
        (json!({"name": "X", "email": "x@example.com"}), "role"),
        (json!({"email": "x@example.com", "role": "driver"}), "name"),
        (
            json!({"name": "X", "email": "no-at-sign", "role": "driver"}),
            "email",
        ),
        (
            json!({"name": "X", "email": false, "role": "driver"}),
            "email",
        ),
    ] {
        let (status, answer) = server
            .api(
                "PUT",
                "/api/admin/users/someone",
                Some(&token),
                Some(body.clone()),
            )
            .await;
        assert_invalid(status, &answer, field);
    }
    let (status, answer) = server
        .api(
            "PUT",
            "/api/admin/users/someone",
            Some(&token),
            Some(json!({"name": "Someone", "email": "TAKEN@example.com", "role": "driver"})),
        )
        .await;
    assert_failure(status, &answer, 409, "EMAIL_TAKEN");

    // None of these wrote anything.
    let (status, answer) = server
        .api("GET", "/api/admin/users", Some(&token), None)
        .await;
    assert_eq!(status, 200);
    assert!(
        answer["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["id"] != "someone"),
        "{answer}"
    );
    server.stop().await;
}

async fn concurrent_puts_of_one_email_for_two_users_are_409_not_500(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = admin(&server);
    let attempts: Vec<_> = (0..8)
        .map(|n| {
            api_in_background(
                &server,
                "PUT",
                &format!("/api/admin/users/racer-{n}"),
                &token,
                json!({"name": format!("Racer {n}"), "email": "shared@example.com", "role": "driver"}),
            )
        })
        .collect();
    let mut statuses = Vec::new();
    for attempt in attempts {
        let (status, body) = attempt.await.unwrap();
        if status == 409 {
            assert_eq!(body["code"], "EMAIL_TAKEN", "{body}");
        }
        statuses.push(status);
    }
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 409),
        "only 200 or 409, never 500: {statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    let (_, users) = server
        .api("GET", "/api/admin/users", Some(&token), None)
        .await;
    let holders = users["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["email"] == "shared@example.com")
        .count();
    assert_eq!(holders, 1, "{users}");
    server.stop().await;
}

async fn authorize(charger: &mut TestCharger, tag: &str) -> Value {
    charger.call("Authorize", json!({"idTag": tag})).await["idTagInfo"].clone()
}

async fn put_tag(server: &TestServer, tag: &str, body: Value) -> (u16, Value) {
    server
        .api(
            "PUT",
            &format!("/api/admin/id-tags/{tag}"),
            Some(&admin(server)),
            Some(body),
        )
        .await
}

async fn id_tags_put_by_an_operator_decide_what_authorize_answers(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, body) = server
        .api(
            "PUT",
            "/api/admin/users/card-holder",
            Some(&admin(&server)),
            Some(json!({"name": "Card Holder", "email": "card@example.com", "role": "driver"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut charger = server.booted_charger("CP-RFID").await;
    assert_eq!(
        authorize(&mut charger, "RFID-0001").await["status"],
        "Invalid"
    );

    let (status, body) = put_tag(&server, "RFID-0001", json!({"userId": "card-holder"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["data"]["idTag"], "RFID-0001");
    assert_eq!(body["data"]["userId"], "card-holder");
    assert_eq!(body["data"]["status"], "Accepted");
    assert_eq!(
        authorize(&mut charger, "RFID-0001").await["status"],
        "Accepted"
    );

    let (status, body) = put_tag(
        &server,
        "RFID-0001",
        json!({"userId": "card-holder", "status": "Blocked"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["status"], "Blocked");
    assert_eq!(
        authorize(&mut charger, "RFID-0001").await["status"],
        "Blocked"
    );

    let past = "2024-01-15T10:00:00.000Z";
    let (status, body) = put_tag(
        &server,
        "RFID-0001",
        json!({"userId": "card-holder", "expiryDate": past}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["status"], "Accepted");
    assert_eq!(body["data"]["expiryDate"], past);
    assert_eq!(
        authorize(&mut charger, "RFID-0001").await["status"],
        "Expired"
    );

    let (status, body) = put_tag(
        &server,
        "RFID-0001",
        json!({"userId": "card-holder", "status": "Expired"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        authorize(&mut charger, "RFID-0001").await["status"],
        "Expired"
    );

    let future = "2099-12-31T23:59:59.000Z";
    let (status, body) = put_tag(
        &server,
        "RFID-0001",
        json!({"userId": "card-holder", "status": "Accepted", "expiryDate": future}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let info = authorize(&mut charger, "RFID-0001").await;
    assert_eq!(info["status"], "Accepted");
    assert_eq!(info["expiryDate"], future);

    let (status, body) = server
        .api(
            "GET",
            "/api/admin/id-tags/RFID-0001",
            Some(&admin(&server)),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["expiryDate"], future);
    server.stop().await;
}

async fn id_tag_validation_is_400_or_404_and_writes_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.user_with_tag("tagger", "TAG-EXISTING").await;
    let (status, body) = put_tag(&server, "TAG-NEW", json!({"userId": "nobody-here"})).await;
    assert_failure(status, &body, 404, "NOT_FOUND");
    let long = "T".repeat(21);
    let (status, body) = put_tag(&server, &long, json!({"userId": "tagger"})).await;
    assert_invalid(status, &body, "idTag");
    for (payload, field) in [
        (json!({"userId": "tagger", "status": "Maybe"}), "status"),
        (json!({"userId": "tagger", "status": 1}), "status"),
        (
            json!({"userId": "tagger", "expiryDate": "tomorrow"}),
            "expiryDate",
        ),
        (
            json!({"userId": "tagger", "expiryDate": "2024-13-45T00:00:00Z"}),
            "expiryDate",
        ),
        (
            json!({"userId": "tagger", "expiryDate": 1_700_000_000}),
            "expiryDate",
        ),
        (json!({"status": "Accepted"}), "userId"),
    ] {
        let (status, body) = put_tag(&server, "TAG-NEW", payload.clone()).await;
        assert_invalid(status, &body, field);
    }
    // Nothing was written: the new tag does not exist, the old one is unchanged.
    let token = admin(&server);
    let (status, body) = server
        .api("GET", "/api/admin/id-tags/TAG-NEW", Some(&token), None)
        .await;
    assert_failure(status, &body, 404, "NOT_FOUND");
    let (status, body) = put_tag(
        &server,
        "TAG-EXISTING",
        json!({"userId": "tagger", "status": "Bogus"}),
    )
    .await;
    assert_invalid(status, &body, "status");
    let (status, body) = server
        .api("GET", "/api/admin/id-tags/TAG-EXISTING", Some(&token), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["status"], "Accepted");
    // 20 characters is the most, and fine.
    let (status, body) = put_tag(&server, &"T".repeat(20), json!({"userId": "tagger"})).await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
}

/// OCPP 1.6 idTags are CiString20Type: case-insensitive. A tag an operator
/// registered answers Accepted whatever case a charger's reader sends it in.
async fn id_tags_are_case_insensitive_as_ocpp_defines_them(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.user_with_tag("reader-user", "OTHER-TAG").await;
    let (status, body) = put_tag(&server, "04a1b2c3d4", json!({"userId": "reader-user"})).await;
    assert_eq!(status, 200, "{body}");
    let mut charger = server.booted_charger("CP-CASE").await;
    assert_eq!(
        authorize(&mut charger, "04a1b2c3d4").await["status"],
        "Accepted"
    );
    assert_eq!(
        authorize(&mut charger, "04A1B2C3D4").await["status"],
        "Accepted",
        "the same tag in upper case is the same tag"
    );
    // Blocking it in one spelling blocks it in every spelling.
    let (status, body) = put_tag(
        &server,
        "04A1B2C3D4",
        json!({"userId": "reader-user", "status": "Blocked"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        authorize(&mut charger, "04a1b2c3d4").await["status"],
        "Blocked"
    );
    server.stop().await;
}

/// Sends `action` through the API to a booted charger, answers it with
/// `answer`, and returns (what the charger received, the API's answer).
async fn command_round_trip(
    server: &TestServer,
    charger: &mut TestCharger,
    id: &str,
    action: &str,
    payload: Value,
    answer: Value,
) -> (String, Value, u16, Value) {
    let call = api_in_background(
        server,
        "POST",
        &format!("/api/admin/stations/{id}/commands/{action}"),
        &admin(server),
        payload,
    );
    let (message_id, received_action, received) = charger.expect_call().await;
    charger.reply(&message_id, answer).await;
    let (status, body) = call.await.unwrap();
    (received_action, received, status, body)
}

async fn a_reset_reaches_the_charger_and_its_answer_comes_back(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut charger = server.booted_charger("CP-RESET").await;
    let (action, payload, status, body) = command_round_trip(
        &server,
        &mut charger,
        "CP-RESET",
        "Reset",
        json!({"type": "Soft"}),
        json!({"status": "Accepted"}),
    )
    .await;
    assert_eq!(action, "Reset");
    assert_eq!(payload, json!({"type": "Soft"}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["data"], json!({"status": "Accepted"}));

    // A refusal is the charger's answer, passed on as it is.
    let (_, payload, status, body) = command_round_trip(
        &server,
        &mut charger,
        "CP-RESET",
        "Reset",
        json!({"type": "Hard"}),
        json!({"status": "Rejected"}),
    )
    .await;
    assert_eq!(payload["type"], "Hard");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!({"status": "Rejected"}));
    server.stop().await;
}

async fn other_commands_reach_the_charger_likewise(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut charger = server.booted_charger("CP-CONF").await;

    let (action, payload, status, body) = command_round_trip(
        &server,
        &mut charger,
        "CP-CONF",
        "ChangeConfiguration",
        json!({"key": "HeartbeatInterval", "value": "120"}),
        json!({"status": "RebootRequired"}),
    )
    .await;
    assert_eq!(action, "ChangeConfiguration");
    assert_eq!(payload, json!({"key": "HeartbeatInterval", "value": "120"}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!({"status": "RebootRequired"}));

    let configuration = json!({"configurationKey": [{"key": "HeartbeatInterval", "readonly": false, "value": "120"}],
                               "unknownKey": ["NoSuchKey"]});
    let (action, payload, status, body) = command_round_trip(
        &server,
        &mut charger,
        "CP-CONF",
        "GetConfiguration",
        json!({"key": ["HeartbeatInterval", "NoSuchKey"]}),
        configuration.clone(),
    )
    .await;
    assert_eq!(action, "GetConfiguration");
    assert_eq!(payload["key"], json!(["HeartbeatInterval", "NoSuchKey"]));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], configuration);

    let (action, payload, status, body) = command_round_trip(
        &server,
        &mut charger,
        "CP-CONF",
        "TriggerMessage",
        json!({"requestedMessage": "StatusNotification", "connectorId": 1}),
        json!({"status": "Accepted"}),
    )
    .await;
    assert_eq!(action, "TriggerMessage");
    assert_eq!(payload["requestedMessage"], "StatusNotification");
    assert_eq!(payload["connectorId"], 1);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["status"], "Accepted");
    server.stop().await;
}

async fn a_command_that_breaks_the_schema_is_400_and_never_sent(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut charger = server.booted_charger("CP-SCHEMA").await;
    let token = admin(&server);
    for (action, payload) in [
        ("Reset", json!({"type": "Sideways"})),
        ("Reset", json!({})),
        (
            "ChangeConfiguration",
            json!({"key": "HeartbeatInterval", "value": 120}),
        ),
        ("TriggerMessage", json!({"requestedMessage": "Coffee"})),
    ] {
        let (status, body) = server
            .api(
                "POST",
                &format!("/api/admin/stations/CP-SCHEMA/commands/{action}"),
                Some(&token),
                Some(payload.clone()),
            )
            .await;
        assert_eq!(status, 400, "{action} {payload}: {body}");
        assert_eq!(body["success"], false);
        assert!(
            body["code"].is_string() && body["error"].is_string(),
            "{body}"
        );
    }
    let (status, body) = server
        .api_raw(
            "POST",
            "/api/admin/stations/CP-SCHEMA/commands/Reset",
            Some(&token),
            "[\"Soft\"]",
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        charger
            .try_next_frame(Duration::from_millis(500))
            .await
            .is_none(),
        "nothing reached the charger"
    );
    // The connection is fine: a valid command still goes through.
    let (action, _, status, _) = command_round_trip(
        &server,
        &mut charger,
        "CP-SCHEMA",
        "ClearCache",
        json!({}),
        json!({"status": "Accepted"}),
    )
    .await;
    assert_eq!((action.as_str(), status), ("ClearCache", 200));
    server.stop().await;
}

async fn unknown_actions_are_404_and_offline_chargers_409(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.ocpp_call_timeout = Duration::from_millis(700)
    })
    .await;
    let token = admin(&server);
    let mut charger = server.booted_charger("CP-AWAY").await;
    for action in ["SelfDestruct", "BootNotification", "reset"] {
        let (status, body) = server
            .api(
                "POST",
                &format!("/api/admin/stations/CP-AWAY/commands/{action}"),
                Some(&token),
                Some(json!({"type": "Soft"})),
            )
            .await;
        assert_failure(status, &body, 404, "UNKNOWN_ACTION");
    }
    assert!(
        charger
            .try_next_frame(Duration::from_millis(300))
            .await
            .is_none(),
        "nothing reached the charger"
    );

    // Never connected.
    let (status, body) = server
        .api(
            "POST",
            "/api/admin/stations/CP-NEVER-SEEN/commands/Reset",
            Some(&token),
            Some(json!({"type": "Soft"})),
        )
        .await;
    assert_failure(status, &body, 409, "CHARGER_OFFLINE");
    // Connected once, gone now.
    charger.close().await;
    eventually_listed(&server, "CP-AWAY", |s| s["connected"] == false).await;
    let (status, body) = server
        .api(
            "POST",
            "/api/admin/stations/CP-AWAY/commands/Reset",
            Some(&token),
            Some(json!({"type": "Soft"})),
        )
        .await;
    assert_failure(status, &body, 409, "CHARGER_OFFLINE");
    server.stop().await;
}

async fn a_silent_charger_is_504_and_a_callerror_is_502(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.ocpp_call_timeout = Duration::from_millis(700)
    })
    .await;
    let mut charger = server.booted_charger("CP-QUIET").await;
    let token = admin(&server);

    let call = api_in_background(
        &server,
        "POST",
        "/api/admin/stations/CP-QUIET/commands/Reset",
        &token,
        json!({"type": "Soft"}),
    );
    let (_, action, _) = charger.expect_call().await;
    assert_eq!(action, "Reset");
    // No answer.
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the API gives up on its own")
        .unwrap();
    assert_failure(status, &body, 504, "CHARGER_TIMEOUT");

    let call = api_in_background(
        &server,
        "POST",
        "/api/admin/stations/CP-QUIET/commands/UnlockConnector",
        &token,
        json!({"connectorId": 1}),
    );
    let (id, action, _) = charger.expect_call().await;
    assert_eq!(action, "UnlockConnector");
    charger
        .send_text(
            &json!([4, id, "NotSupported", "no unlocking here", {"why": "fixed cable"}])
                .to_string(),
        )
        .await;
    let (status, body) = call.await.unwrap();
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["success"], false);
    assert!(
        body["code"].is_string() && body["error"].is_string(),
        "{body}"
    );
    assert_eq!(body["details"]["errorCode"], "NotSupported", "{body}");

    // An answer that breaks the response schema is a bad answer too.
    let call = api_in_background(
        &server,
        "POST",
        "/api/admin/stations/CP-QUIET/commands/Reset",
        &token,
        json!({"type": "Hard"}),
    );
    let (id, _, _) = charger.expect_call().await;
    charger.reply(&id, json!({"status": "Maybe"})).await;
    let (status, body) = call.await.unwrap();
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["success"], false);
    server.stop().await;
}

async fn messages(server: &TestServer, id: &str, query: &str) -> (u16, Value) {
    server
        .api(
            "GET",
            &format!("/api/admin/stations/{id}/messages{query}"),
            Some(&admin(server)),
            None,
        )
        .await
}

async fn the_message_log_shows_the_frames(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut charger = server.booted_charger("CP-LOG").await;
    charger.call("Heartbeat", json!({})).await;
    let (action, _, status, _) = command_round_trip(
        &server,
        &mut charger,
        "CP-LOG",
        "Reset",
        json!({"type": "Soft"}),
        json!({"status": "Accepted"}),
    )
    .await;
    assert_eq!((action.as_str(), status), ("Reset", 200));

    // The log is written in the background: give it a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let log = loop {
        let (status, body) = messages(&server, "CP-LOG", "").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["success"], true);
        let log = body["data"].as_array().expect("a list").clone();
        if log.len() >= 6 || tokio::time::Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut summary: Vec<(String, i64, String)> = log
        .iter()
        .map(|m| {
            (
                m["direction"].as_str().unwrap_or("?").to_owned(),
                m["messageType"].as_i64().unwrap_or(-1),
                m["action"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    summary.sort();
    let mut expected: Vec<(String, i64, String)> = [
        ("in", 2, "BootNotification"),
        ("out", 3, "BootNotification"),
        ("in", 2, "Heartbeat"),
        ("out", 3, "Heartbeat"),
        ("out", 2, "Reset"),
        ("in", 3, "Reset"),
    ]
    .iter()
    .map(|(d, t, a)| (d.to_string(), *t, a.to_string()))
    .collect();
    expected.sort();
    assert_eq!(summary, expected, "{log:#?}");
    assert!(log.iter().all(|m| m["chargerId"] == "CP-LOG"));
    let reset = log
        .iter()
        .find(|m| m["direction"] == "out" && m["action"] == "Reset")
        .unwrap();
    assert!(
        reset["payload"].to_string().contains("Soft"),
        "the frame's payload is shown: {reset}"
    );

    let (status, body) = messages(&server, "CP-LOG", "?limit=2").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    let (status, body) = messages(&server, "CP-LOG", "?limit=many").await;
    assert_invalid(status, &body, "limit");
    let (status, body) = messages(&server, "CP-NOBODY", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!([]));
    server.stop().await;
}

async fn a_stop_for_an_unknown_transaction_shows_as_an_anomaly(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = admin(&server);
    let (status, body) = server
        .api("GET", "/api/admin/anomalies", Some(&token), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!([]));

    let mut charger = server.booted_charger("CP-ODD").await;
    let answer = charger
        .call("StopTransaction", json!({"transactionId": 987_654, "meterStop": 10, "timestamp": "2024-01-15T10:00:00.000Z"}))
        .await;
    assert!(answer.is_object(), "the charger is answered: {answer}");

    let (status, body) = server
        .api("GET", "/api/admin/anomalies", Some(&token), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    let anomalies = body["data"].as_array().expect("a list");
    let stop = anomalies
        .iter()
        .find(|a| a["kind"] == "stop_unknown_transaction")
        .unwrap_or_else(|| panic!("an unknown-stop anomaly in {body}"));
    assert_eq!(stop["chargerId"], "CP-ODD");
    assert_eq!(stop["detail"]["transactionId"], 987_654);
    assert!(stop["occurredAt"].is_string(), "{stop}");

    let (status, body) = server
        .api(
            "GET",
            "/api/admin/anomalies?chargerId=CP-ODD",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(!body["data"].as_array().unwrap().is_empty(), "{body}");
    let (status, body) = server
        .api(
            "GET",
            "/api/admin/anomalies?chargerId=CP-ELSEWHERE",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"], json!([]));
    server.stop().await;
}

async fn ingest(server: &TestServer) -> Value {
    let (status, body) = server
        .api("GET", "/api/admin/ingest", Some(&admin(server)), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true, "{body}");
    body["data"].clone()
}

fn three_phase_reading(timestamp: &str, wh: u64) -> Value {
    json!({"timestamp": timestamp, "sampledValue": [
        {"value": wh.to_string(), "measurand": "Energy.Active.Import.Register", "unit": "Wh", "context": "Sample.Periodic"},
        {"value": "16.0", "measurand": "Current.Import", "phase": "L1", "unit": "A", "context": "Sample.Periodic"},
        {"value": "16.1", "measurand": "Current.Import", "phase": "L2", "unit": "A", "context": "Sample.Periodic"},
    ]})
}

async fn ingest_counts_stored_readings_once_and_every_logged_frame(backend: Backend) {
    let server = TestServer::start(backend).await;
    assert_eq!(
        ingest(&server).await,
        json!({"meterValueMessages": 0, "sampledValues": 0, "loggedFrames": 0})
    );
    let mut charger = server.booted_charger("CP-INGEST").await;
    let start = charger
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "NOBODY-OWNS", "meterStart": 100,
                                          "timestamp": "2024-03-01T10:00:00.000Z"}),
        )
        .await;
    let tx = start["transactionId"].as_i64().expect("a transactionId");
    let first = json!({"connectorId": 1, "transactionId": tx,
                       "meterValue": [three_phase_reading("2024-03-01T10:01:00.000Z", 200)]});
    charger.call("MeterValues", first.clone()).await;
    charger
        .call("MeterValues", json!({"connectorId": 1, "transactionId": tx,
                                     "meterValue": [three_phase_reading("2024-03-01T10:02:00.000Z", 300)]}))
        .await;
    // A retransmission is answered again but stored once.
    charger.call("MeterValues", first).await;

    // Five CALLs and their five answers; the log is committed before counting.
    assert_eq!(
        ingest(&server).await,
        json!({"meterValueMessages": 2, "sampledValues": 6, "loggedFrames": 10})
    );
    server.stop().await;
}

async fn admin_routes_refuse_drivers_with_403_and_strangers_with_401(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (driver_id, driver) = server.register("curious@example.com").await;
    let mut charger = server.booted_charger("CP-GUARDED").await;
    let station = json!({"name": "Mine", "pricePerKWh": 0, "currency": "NGN", "ocppPassword": "driver-chosen-key"});
    let routes: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/api/admin/stations".into(), None),
        ("GET", "/api/admin/stations/CP-GUARDED".into(), None),
        (
            "PUT",
            "/api/admin/stations/CP-GUARDED".into(),
            Some(station.clone()),
        ),
        (
            "PUT",
            "/api/admin/stations/CP-NEW-BY-DRIVER".into(),
            Some(station),
        ),
        (
            "PUT",
            "/api/admin/stations/CP-GUARDED/registration".into(),
            Some(json!({"status": "Rejected"})),
        ),
        (
            "POST",
            "/api/admin/stations/CP-GUARDED/commands/Reset".into(),
            Some(json!({"type": "Hard"})),
        ),
        (
            "GET",
            "/api/admin/stations/CP-GUARDED/messages".into(),
            None,
        ),
        (
            "GET",
            "/api/admin/stations/CP-GUARDED/transactions".into(),
            None,
        ),
        ("GET", "/api/admin/users".into(), None),
        (
            "PUT",
            format!("/api/admin/users/{driver_id}"),
            Some(json!({"name": "Me", "role": "admin"})),
        ),
        (
            "PUT",
            "/api/admin/id-tags/DRIVER-TAG".into(),
            Some(json!({"userId": driver_id})),
        ),
        ("GET", "/api/admin/id-tags/DRIVER-TAG".into(), None),
        ("GET", "/api/admin/anomalies".into(), None),
        ("GET", "/api/admin/sessions".into(), None),
        ("GET", "/api/admin/ingest".into(), None),
    ];
    for (method, path, body) in &routes {
        let (status, answer) = server.api(method, path, Some(&driver), body.clone()).await;
        assert_eq!(status, 403, "driver {method} {path}: {answer}");
        assert_eq!(answer["success"], false);
        assert_eq!(answer["code"], "FORBIDDEN", "{answer}");
        let (status, answer) = server.api(method, path, None, body.clone()).await;
        assert_eq!(status, 401, "no token {method} {path}: {answer}");
        assert_eq!(answer["code"], "MISSING_TOKEN", "{answer}");
    }
    assert!(
        charger
            .try_next_frame(Duration::from_millis(300))
            .await
            .is_none(),
        "no command reached the charger"
    );
    // Nothing changed: no new station, no password, no promotion, no tag.
    let token = admin(&server);
    let guarded = listed(&server, "CP-GUARDED").await;
    assert_eq!(guarded["hasOcppPassword"], false);
    assert_eq!(guarded["registrationStatus"], "Accepted");
    assert!(stations(&server)
        .await
        .iter()
        .all(|s| s["id"] != "CP-NEW-BY-DRIVER"));
    let (status, _) = server
        .api("GET", "/api/admin/id-tags/DRIVER-TAG", Some(&token), None)
        .await;
    assert_eq!(status, 404);
    let (_, users) = server
        .api("GET", "/api/admin/users", Some(&token), None)
        .await;
    let me = users["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == driver_id.as_str())
        .cloned();
    assert_eq!(me.expect("the driver is listed")["role"], "driver");
    server.stop().await;
}

/// Sessions, users, stations, transactions and the message log page with
/// `limit`/`offset` and report the total beside the page.
async fn lists_page_in_the_database_and_report_their_total(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token("ops", "admin");
    let driver = server.token("driver-p", "driver");
    // Three finished app sessions.
    let mut ids = Vec::new();
    for n in 0..3 {
        let (status, body) = server
            .api(
                "POST",
                "/api/charging/sessions/start",
                Some(&driver),
                Some(json!({"stationId": "HUB-PAGES", "connectorId": format!("connector-{n}"), "batteryLevelStart": 40})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let id = body["data"]["id"].as_str().unwrap().to_owned();
        let (status, body) = server
            .api(
                "POST",
                "/api/charging/sessions/end",
                Some(&driver),
                Some(json!({"sessionId": id, "batteryLevelEnd": 50})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        ids.push(id);
        // Distinct start times, so "newest first" is one order.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, body) = server
        .api(
            "GET",
            "/api/charging/sessions?limit=2&offset=1",
            Some(&driver),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["pagination"],
        json!({"total": 3, "limit": 2, "offset": 1})
    );
    let listed: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![ids[1].as_str(), ids[0].as_str()]);
    let (_, body) = server
        .api(
            "GET",
            "/api/charging/sessions?filter=recent&offset=3",
            Some(&driver),
            None,
        )
        .await;
    assert_eq!(body["pagination"]["total"], 3);
    assert_eq!(body["data"], json!([]));

    // Users: the driver and the operator exist (tokens' subjects are kept).
    let (status, body) = server
        .api("GET", "/api/admin/users?limit=1", Some(&admin), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let users = body["pagination"]["total"].as_i64().unwrap();
    assert!(users >= 1, "{body}");
    assert_eq!(body["data"].as_array().unwrap().len(), 1);

    // Stations: the demo station and two chargers, in id order.
    let mut charger = server.booted_charger("CP-PAGE-B").await;
    server.booted_charger("CP-PAGE-A").await.close().await;
    let (_, body) = server
        .api("GET", "/api/admin/stations?limit=2", Some(&admin), None)
        .await;
    assert_eq!(
        body["pagination"],
        json!({"total": 3, "limit": 2, "offset": 0})
    );
    let stations: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(stations, vec!["CP-PAGE-A", "CP-PAGE-B"]);

    // idTags, all or one user's.
    for (tag, user) in [
        ("TAG-P1", "driver-p"),
        ("TAG-P2", "driver-p"),
        ("TAG-Q1", "driver-q"),
    ] {
        server.user_with_tag(user, tag).await;
    }
    let (status, body) = server
        .api(
            "GET",
            "/api/admin/id-tags?limit=2&offset=1",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["pagination"],
        json!({"total": 3, "limit": 2, "offset": 1})
    );
    assert_eq!(body["data"][0]["idTag"], "TAG-P2");
    assert_eq!(body["data"][1]["idTag"], "TAG-Q1");
    let (_, body) = server
        .api(
            "GET",
            "/api/admin/id-tags?userId=driver-p",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(body["pagination"]["total"], 2);

    // Transactions and the message log of one charger.
    for n in 0..3 {
        let answer = charger
            .call(
                "StartTransaction",
                json!({"connectorId": n + 1, "idTag": "ANY", "meterStart": 0, "timestamp": "2024-01-15T10:00:00Z"}),
            )
            .await;
        assert!(answer["transactionId"].as_i64().is_some(), "{answer}");
    }
    let (_, body) = server
        .api(
            "GET",
            "/api/admin/stations/CP-PAGE-B/transactions?limit=1&offset=2",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        body["pagination"],
        json!({"total": 3, "limit": 1, "offset": 2})
    );
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    server.state.store.flush().await.unwrap();
    let (_, body) = server
        .api(
            "GET",
            "/api/admin/stations/CP-PAGE-B/messages?limit=2",
            Some(&admin),
            None,
        )
        .await;
    // Boot and three starts, each a CALL and its answer.
    assert_eq!(
        body["pagination"],
        json!({"total": 8, "limit": 2, "offset": 0})
    );
    assert_eq!(body["data"][0]["messageType"], 3, "{body}");
    server.stop().await;
}
