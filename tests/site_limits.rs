//! Site load management: a site's limit shared among its transactions with
//! TxProfiles (fair share, a minimum per car, what a car does not draw given
//! to the others), decreases sent and accepted before any increase, a safe
//! TxDefaultProfile on every member charger (sent again after a reboot),
//! bad input changing nothing; and a scenario with simulated chargers
//! (the `csms-sim` library, which honours charging profiles) whose total
//! drawn power over time is written to a CSV file and checked against the
//! limit.

mod common;

use chrono::Utc;
use common::*;
use csms::ocpp::time::format_ms;
use csms_sim::{spawn, ChargerConfig, ChargerHandle, Command, Endpoint, Recorder, SimClock};
use csms_sim::{Vehicle, VehicleModel};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

on_both_backends!(
    a_site_shares_its_limit_and_lowers_before_it_raises,
    a_car_that_cannot_have_the_minimum_is_paused,
    a_flood_of_power_changes_does_not_flood_chargers_with_profiles,
    the_safe_default_is_sent_again_after_a_reboot_and_cleared_with_the_site,
    bad_site_input_changes_nothing,
    allocations_survive_a_restart_and_a_lower_limit_goes_out_at_once,
    simulated_cars_arriving_and_leaving_stay_under_the_site_limit,
);

/// How long after a car arrives or leaves the site's total may still be
/// settling (the README states it).
const TRANSITION: Duration = Duration::from_secs(2);

async fn start_server(backend: Backend) -> TestServer {
    TestServer::start_with(backend, |c| {
        c.site_rebalance_interval = Duration::from_secs(1);
    })
    .await
}

fn put_in_background(
    server: &TestServer,
    token: &str,
    path: &str,
    body: Value,
) -> tokio::task::JoinHandle<(u16, Value)> {
    let url = server.http_url(path);
    let token = token.to_owned();
    tokio::spawn(async move {
        let response = http()
            .put(url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    })
}

fn delete_in_background(
    server: &TestServer,
    token: &str,
    path: &str,
) -> tokio::task::JoinHandle<(u16, Value)> {
    let url = server.http_url(path);
    let token = token.to_owned();
    tokio::spawn(async move {
        let response = http().delete(url).bearer_auth(token).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    })
}

/// Answers the next CALL, which must be a site profile (SetChargingProfile
/// at the site's stack level): returns (connectorId, purpose, transactionId, limit).
async fn answer_profile(
    charger: &mut TestCharger,
    answer: &str,
) -> (i64, String, Option<i64>, f64) {
    let (id, action, payload) = charger.expect_call().await;
    assert_eq!(action, "SetChargingProfile", "{payload}");
    let p = &payload["csChargingProfiles"];
    assert_eq!(p["stackLevel"], 8, "{payload}");
    assert_eq!(p["chargingSchedule"]["chargingRateUnit"], "A", "{payload}");
    assert_eq!(
        p["chargingSchedule"]["chargingSchedulePeriod"][0]["numberPhases"], 3,
        "{payload}"
    );
    charger.reply(&id, json!({"status": answer})).await;
    (
        payload["connectorId"].as_i64().unwrap(),
        p["chargingProfilePurpose"].as_str().unwrap().to_owned(),
        p["transactionId"].as_i64(),
        p["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"]
            .as_f64()
            .unwrap(),
    )
}

async fn start_tx(charger: &mut TestCharger, tag: &str) -> i64 {
    let answer = charger
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": tag, "meterStart": 0, "timestamp": format_ms(Utc::now())}),
        )
        .await;
    assert_eq!(answer["idTagInfo"]["status"], "Accepted", "{answer}");
    answer["transactionId"].as_i64().unwrap()
}

async fn stop_tx(charger: &mut TestCharger, tx: i64) {
    charger
        .call(
            "StopTransaction",
            json!({"transactionId": tx, "meterStop": 1000, "timestamp": format_ms(Utc::now())}),
        )
        .await;
}

async fn power(charger: &mut TestCharger, tx: i64, watts: f64) {
    charger
        .call(
            "MeterValues",
            json!({"connectorId": 1, "transactionId": tx, "meterValue": [{
            "timestamp": format_ms(Utc::now()),
            "sampledValue": [
                {"value": "500", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                {"value": format!("{watts}"), "measurand": "Power.Active.Import", "unit": "W"}
            ]}]}),
        )
        .await;
}

async fn site(server: &TestServer, admin: &str, id: &str) -> Value {
    let (status, body) = server
        .api("GET", &format!("/api/admin/sites/{id}"), Some(admin), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

fn allocation(site: &Value, tx: i64) -> f64 {
    site["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["transactionId"] == tx)
        .unwrap_or_else(|| panic!("transaction {tx} in {site}"))["allocated"]
        .as_f64()
        .unwrap()
}

/// Nothing reaches the charger for a while: it is waiting for another's answer.
async fn silent(charger: &mut TestCharger, what: &str) {
    if let Some(frame) = charger.try_next_frame(Duration::from_millis(700)).await {
        panic!("{what}: got {frame}");
    }
}

async fn assign(
    server: &TestServer,
    admin: &str,
    site: &str,
    chargers: &mut [&mut TestCharger],
    ids: &[&str],
    default: f64,
) -> Value {
    let pending = put_in_background(
        server,
        admin,
        &format!("/api/admin/sites/{site}/chargers"),
        json!({"chargerIds": ids}),
    );
    for c in chargers.iter_mut() {
        let (connector, purpose, tx, limit) = answer_profile(c, "Accepted").await;
        assert_eq!(
            (connector, purpose.as_str(), tx),
            (0, "TxDefaultProfile", None)
        );
        assert_eq!(limit, default);
    }
    let (status, body) = pending.await.unwrap();
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

async fn a_site_shares_its_limit_and_lowers_before_it_raises(backend: Backend) {
    let server = start_server(backend).await;
    let admin = server.token("ops", "admin");
    server.user_with_tag("driver-1", "CARD-1").await;
    server.user_with_tag("driver-2", "CARD-2").await;
    let mut c1 = server.booted_charger("CP-S1").await;
    let mut c2 = server.booted_charger("CP-S2").await;

    let (status, body) = server
        .api(
            "PUT",
            "/api/admin/sites/depot",
            Some(&admin),
            Some(json!({"unit": "A", "limit": 32, "minPerCar": 8, "safeDefault": 6})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["data"]["limit"], 32.0);
    assert_eq!(body["data"]["phases"], 3);
    assert_eq!(body["data"]["name"], "depot");

    // Each member gets the safe default as its TxDefaultProfile.
    let state = assign(
        &server,
        &admin,
        "depot",
        &mut [&mut c1, &mut c2],
        &["CP-S1", "CP-S2"],
        6.0,
    )
    .await;
    assert_eq!(state["chargerIds"], json!(["CP-S1", "CP-S2"]));
    assert_eq!(state["reserved"], 12.0);

    // One car: everything but what the idle connector holds back.
    let tx1 = start_tx(&mut c1, "CARD-1").await;
    let (connector, purpose, tx, limit) = answer_profile(&mut c1, "Accepted").await;
    assert_eq!(
        (connector, purpose.as_str(), tx, limit),
        (1, "TxProfile", Some(tx1), 26.0)
    );
    let s = site(&server, &admin, "depot").await;
    assert_eq!(allocation(&s, tx1), 26.0);
    assert_eq!(s["allocatedSum"], 26.0);
    assert_eq!(s["reserved"], 6.0);
    assert!(s["lastRebalancedAt"].is_string(), "{s}");

    // A second car: the first is lowered to 16 and only once it accepted
    // is the second raised from the safe default to 16.
    let tx2 = start_tx(&mut c2, "CARD-2").await;
    let (id, action, payload) = c1.expect_call().await;
    assert_eq!(action, "SetChargingProfile");
    assert_eq!(payload["csChargingProfiles"]["transactionId"], tx1);
    assert_eq!(
        payload["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"],
        16.0
    );
    silent(&mut c2, "no raise before the decrease was accepted").await;
    let s = site(&server, &admin, "depot").await;
    assert_eq!(allocation(&s, tx1), 26.0, "a decrease counts once accepted");
    assert_eq!(allocation(&s, tx2), 6.0);
    assert!(s["allocatedSum"].as_f64().unwrap() <= 32.0, "{s}");
    c1.reply(&id, json!({"status": "Accepted"})).await;
    let (_, _, tx, limit) = answer_profile(&mut c2, "Accepted").await;
    assert_eq!((tx, limit), (Some(tx2), 16.0));
    let s = site(&server, &admin, "depot").await;
    assert_eq!((allocation(&s, tx1), allocation(&s, tx2)), (16.0, 16.0));
    assert_eq!(s["allocatedSum"], 32.0);

    // The second car draws 2 kW of its 11 kW: it keeps the minimum and the
    // rest goes to the first, lowered first again.
    tokio::time::sleep(Duration::from_millis(1200)).await; // its new limit settles
    power(&mut c2, tx2, 2000.0).await;
    let (_, _, tx, limit) = answer_profile(&mut c2, "Accepted").await;
    assert_eq!((tx, limit), (Some(tx2), 8.0));
    let (_, _, tx, limit) = answer_profile(&mut c1, "Accepted").await;
    assert_eq!((tx, limit), (Some(tx1), 24.0));
    let s = site(&server, &admin, "depot").await;
    let a2 = s["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["transactionId"] == tx2)
        .unwrap()
        .clone();
    assert_eq!(a2["drawing"], false, "{s}");
    assert_eq!(a2["measuredPowerW"], 2000.0);

    // The second leaves: the first has all but the reserve of the free connector.
    stop_tx(&mut c2, tx2).await;
    let (_, _, tx, limit) = answer_profile(&mut c1, "Accepted").await;
    assert_eq!((tx, limit), (Some(tx1), 26.0));
    let s = site(&server, &admin, "depot").await;
    assert_eq!(s["allocations"].as_array().unwrap().len(), 1);
    assert_eq!(s["allocatedSum"], 26.0);

    // The profiles are the server's own, kept like any other.
    let (status, body) = server
        .api(
            "GET",
            "/api/admin/stations/CP-S1/charging-profiles",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let purposes: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["purpose"].as_str().unwrap())
        .collect();
    assert_eq!(purposes, ["TxDefaultProfile", "TxProfile"]);
}

/// Sends MeterValues with a power reading and reads until its answer,
/// answering `Accepted` to the server's CALLs that arrive meanwhile; returns
/// how many there were.
async fn power_answering(charger: &mut TestCharger, tx: i64, watts: f64) -> usize {
    let id = format!("flood-{}", rand_id());
    let payload = json!({"connectorId": 1, "transactionId": tx, "meterValue": [{
    "timestamp": format_ms(Utc::now()),
    "sampledValue": [
        {"value": "500", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
        {"value": format!("{watts}"), "measurand": "Power.Active.Import", "unit": "W"}
    ]}]});
    charger
        .send_text(&json!([2, id, "MeterValues", payload]).to_string())
        .await;
    let mut calls = 0;
    loop {
        let frame = charger.next_frame().await;
        if frame[0] == 3 && frame[1] == id {
            return calls;
        }
        assert_eq!(frame[0], 2, "{frame}");
        calls += 1;
        charger
            .reply(frame[1].as_str().unwrap(), json!({"status": "Accepted"}))
            .await;
    }
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Answers whatever CALLs arrive within `within`; returns how many.
async fn drain(charger: &mut TestCharger, within: Duration) -> usize {
    let mut calls = 0;
    while let Some(frame) = charger.try_next_frame(within).await {
        assert_eq!(frame[0], 2, "{frame}");
        calls += 1;
        charger
            .reply(frame[1].as_str().unwrap(), json!({"status": "Accepted"}))
            .await;
    }
    calls
}

async fn a_flood_of_power_changes_does_not_flood_chargers_with_profiles(backend: Backend) {
    let server = start_server(backend).await;
    let admin = server.token("ops", "admin");
    server.user_with_tag("driver-1", "CARD-1").await;
    server.user_with_tag("driver-2", "CARD-2").await;
    let mut c1 = server.booted_charger("CP-F1").await;
    let mut c2 = server.booted_charger("CP-F2").await;
    let (status, _) = server
        .api(
            "PUT",
            "/api/admin/sites/flood",
            Some(&admin),
            Some(json!({"unit": "A", "limit": 32, "minPerCar": 8, "safeDefault": 6})),
        )
        .await;
    assert_eq!(status, 201);
    assign(
        &server,
        &admin,
        "flood",
        &mut [&mut c1, &mut c2],
        &["CP-F1", "CP-F2"],
        6.0,
    )
    .await;
    let _tx1 = start_tx(&mut c1, "CARD-1").await;
    answer_profile(&mut c1, "Accepted").await;
    let tx2 = start_tx(&mut c2, "CARD-2").await;
    answer_profile(&mut c1, "Accepted").await;
    answer_profile(&mut c2, "Accepted").await;
    // Past the settling time of the last limits (the interval, 1 s here),
    // with room for a loaded machine.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // Forty readings swinging between 2 kW and 11 kW as fast as the
    // charger can send them (well under a second here)...
    let flood_started = tokio::time::Instant::now();
    let mut to_c2 = 0;
    for n in 0..40 {
        let watts = if n % 2 == 0 { 2000.0 } else { 11000.0 };
        to_c2 += power_answering(&mut c2, tx2, watts).await;
    }
    let flood = flood_started.elapsed();
    // A re-balance the flood asked for may go out just after its last reading.
    to_c2 += drain(&mut c2, Duration::from_millis(300)).await;
    let to_c1 = drain(&mut c1, Duration::from_millis(100)).await;
    let flood = flood.max(flood_started.elapsed());
    // ...make at most one re-balance per interval (1 s here), each sending
    // each charger at most one profile.
    let intervals = flood.as_secs_f64().ceil() as usize + 1;
    assert!(
        to_c2 <= intervals && to_c1 <= intervals,
        "{to_c1} and {to_c2} profiles for 40 readings in {flood:?}"
    );
    eprintln!("flood: {to_c1} profiles to c1, {to_c2} to c2 in {flood:?}");
    // Whether the flood changed anything depends on which reading is the
    // latest when its re-balance runs (the last one, 11 kW, draws its
    // share). Afterwards the site settles, within the limit...
    drain(&mut c1, Duration::from_millis(1500)).await;
    drain(&mut c2, Duration::from_millis(1500)).await;
    let s = site(&server, &admin, "flood").await;
    assert!(s["allocatedSum"].as_f64().unwrap() <= 32.0, "{s}");
    // ...and a car that then steadily draws 2 kW ends at the minimum
    // (8 A) within the interval, its share going to the other car (once
    // the flood left it capped, or now: lowered first, then the other raised).
    power_answering(&mut c2, tx2, 2000.0).await;
    drain(&mut c2, Duration::from_millis(1500)).await;
    drain(&mut c1, Duration::from_millis(500)).await;
    let s = site(&server, &admin, "flood").await;
    assert_eq!(allocation(&s, tx2), 8.0, "{s}");
    assert!(s["allocatedSum"].as_f64().unwrap() <= 32.0, "{s}");
}

async fn a_car_that_cannot_have_the_minimum_is_paused(backend: Backend) {
    let server = start_server(backend).await;
    let admin = server.token("ops", "admin");
    let mut chargers = Vec::new();
    for n in 1..=3 {
        server
            .user_with_tag(&format!("driver-{n}"), &format!("CARD-{n}"))
            .await;
        chargers.push(server.booted_charger(&format!("CP-M{n}")).await);
    }
    let (status, body) = server
        .api(
            "PUT",
            "/api/admin/sites/small",
            Some(&admin),
            Some(json!({"unit": "A", "limit": 20, "minPerCar": 8, "safeDefault": 0})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let [c1, c2, c3] = &mut chargers[..] else {
        unreachable!()
    };
    assign(
        &server,
        &admin,
        "small",
        &mut [c1, c2, c3],
        &["CP-M1", "CP-M2", "CP-M3"],
        0.0,
    )
    .await;

    let tx1 = start_tx(c1, "CARD-1").await;
    assert_eq!(answer_profile(c1, "Accepted").await.3, 20.0);
    let tx2 = start_tx(c2, "CARD-2").await;
    assert_eq!(answer_profile(c1, "Accepted").await.3, 10.0);
    assert_eq!(answer_profile(c2, "Accepted").await.3, 10.0);
    // 20 A cannot give three cars 8 A each: the third waits at 0.
    let tx3 = start_tx(c3, "CARD-3").await;
    silent(c3, "the third car stays at its default of 0").await;
    let s = site(&server, &admin, "small").await;
    assert_eq!(
        (
            allocation(&s, tx1),
            allocation(&s, tx2),
            allocation(&s, tx3)
        ),
        (10.0, 10.0, 0.0)
    );
    // The first leaves: the third is given its share.
    stop_tx(c1, tx1).await;
    let (_, _, tx, limit) = answer_profile(c3, "Accepted").await;
    assert_eq!((tx, limit), (Some(tx3), 10.0));
    let s = site(&server, &admin, "small").await;
    assert_eq!(s["allocatedSum"], 20.0);
}

async fn the_safe_default_is_sent_again_after_a_reboot_and_cleared_with_the_site(backend: Backend) {
    let server = start_server(backend).await;
    let admin = server.token("ops", "admin");
    let mut c1 = server.booted_charger("CP-R1").await;
    let (status, _) = server
        .api(
            "PUT",
            "/api/admin/sites/yard",
            Some(&admin),
            Some(json!({"unit": "kW", "limit": 50, "minPerCar": 4, "safeDefault": 4.2})),
        )
        .await;
    assert_eq!(status, 201);
    let pending = put_in_background(
        &server,
        &admin,
        "/api/admin/sites/yard/chargers",
        json!({"chargerIds": ["CP-R1"]}),
    );
    let (id, _, payload) = c1.expect_call().await;
    let p = &payload["csChargingProfiles"];
    assert_eq!(p["chargingProfilePurpose"], "TxDefaultProfile");
    assert_eq!(p["chargingSchedule"]["chargingRateUnit"], "W");
    assert_eq!(
        p["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"],
        4200.0
    );
    let profile_id = p["chargingProfileId"].as_i64().unwrap();
    c1.reply(&id, json!({"status": "Accepted"})).await;
    assert_eq!(pending.await.unwrap().0, 200);

    // A reboot loses profiles: the safe default goes out again.
    c1.boot().await;
    let (id, action, payload) = c1.expect_call().await;
    assert_eq!(action, "SetChargingProfile");
    assert_eq!(
        payload["csChargingProfiles"]["chargingProfileId"],
        profile_id
    );
    c1.reply(&id, json!({"status": "Accepted"})).await;

    // A new safe default is sent to the members.
    let pending = put_in_background(
        &server,
        &admin,
        "/api/admin/sites/yard",
        json!({"unit": "kW", "limit": 50, "minPerCar": 4, "safeDefault": 3}),
    );
    let (id, _, payload) = c1.expect_call().await;
    assert_eq!(
        payload["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"],
        3000.0
    );
    c1.reply(&id, json!({"status": "Accepted"})).await;
    let (status, body) = pending.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["safeDefault"], 3.0);

    // Deleting the site clears its profiles on the charger.
    let pending = delete_in_background(&server, &admin, "/api/admin/sites/yard");
    let (id, action, payload) = c1.expect_call().await;
    assert_eq!(action, "ClearChargingProfile");
    assert_eq!(payload["id"], profile_id);
    c1.reply(&id, json!({"status": "Accepted"})).await;
    let (status, body) = pending.await.unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .api("GET", "/api/admin/sites/yard", Some(&admin), None)
        .await;
    assert_eq!(status, 404, "{body}");
    let (_, body) = server
        .api(
            "GET",
            "/api/admin/stations/CP-R1/charging-profiles",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(body["data"], json!([]));
    assert!(server.state.store.site_chargers().await.unwrap().is_empty());
}

async fn allocations_survive_a_restart_and_a_lower_limit_goes_out_at_once(backend: Backend) {
    let server = start_server(backend).await;
    let admin = server.token("ops", "admin");
    server.user_with_tag("driver-1", "CARD-1").await;
    let mut c1 = server.booted_charger("CP-T1").await;
    let (status, _) = server
        .api(
            "PUT",
            "/api/admin/sites/home",
            Some(&admin),
            Some(json!({"unit": "A", "limit": 32, "minPerCar": 6, "safeDefault": 6})),
        )
        .await;
    assert_eq!(status, 201);
    assign(&server, &admin, "home", &mut [&mut c1], &["CP-T1"], 6.0).await;
    let tx1 = start_tx(&mut c1, "CARD-1").await;
    assert_eq!(answer_profile(&mut c1, "Accepted").await.3, 32.0);

    // The server restarts while the car charges: what was sent is read back.
    let db = server.stop().await;
    drop(c1);
    let server = TestServer::start_on(db, |c| {
        c.site_rebalance_interval = Duration::from_secs(1);
    })
    .await;
    let admin = server.token("ops", "admin");
    let s = site(&server, &admin, "home").await;
    assert_eq!(allocation(&s, tx1), 32.0, "{s}");
    assert_eq!(s["chargerIds"], json!(["CP-T1"]));

    // The charger comes back without booting: its profiles go out again.
    let mut c1 = TestCharger::connect(&server.ws_url("CP-T1")).await;
    let (_, purpose, _, limit) = answer_profile(&mut c1, "Accepted").await;
    assert_eq!((purpose.as_str(), limit), ("TxDefaultProfile", 6.0));
    let (_, purpose, tx, limit) = answer_profile(&mut c1, "Accepted").await;
    assert_eq!(
        (purpose.as_str(), tx, limit),
        ("TxProfile", Some(tx1), 32.0)
    );

    // A lower limit lowers the car before the answer.
    let pending = put_in_background(
        &server,
        &admin,
        "/api/admin/sites/home",
        json!({"unit": "A", "limit": 20, "minPerCar": 6, "safeDefault": 6}),
    );
    let (_, _, tx, limit) = answer_profile(&mut c1, "Accepted").await;
    assert_eq!((tx, limit), (Some(tx1), 20.0));
    let (status, body) = pending.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["allocatedSum"], 20.0);
    assert_eq!(body["data"]["limit"], 20.0);
}

async fn bad_site_input_changes_nothing(backend: Backend) {
    let server = start_server(backend).await;
    let admin = server.token("ops", "admin");
    let driver = server.token("driver-1", "driver");
    let mut c1 = server.booted_charger("CP-B1").await;
    let good = json!({"unit": "A", "limit": 32, "minPerCar": 6, "safeDefault": 6});
    let (status, _) = server
        .api(
            "PUT",
            "/api/admin/sites/s1",
            Some(&admin),
            Some(good.clone()),
        )
        .await;
    assert_eq!(status, 201);

    let bad = [
        ("unit", json!({"unit": "mA", "limit": 32})),
        ("unit", json!({"limit": 32})),
        ("limit", json!({"unit": "A", "limit": -1})),
        ("limit", json!({"unit": "A", "limit": 0})),
        ("limit", json!({"unit": "A", "limit": 1e300})),
        ("limit", json!({"unit": "A", "limit": "32"})),
        ("phases", json!({"unit": "A", "limit": 32, "phases": 2})),
        ("voltage", json!({"unit": "A", "limit": 32, "voltage": 5})),
        (
            "minPerCar",
            json!({"unit": "A", "limit": 32, "minPerCar": 40}),
        ),
        (
            "safeDefault",
            json!({"unit": "A", "limit": 32, "safeDefault": -2}),
        ),
    ];
    for (field, body) in bad {
        let (status, answer) = server
            .api(
                "PUT",
                "/api/admin/sites/s1",
                Some(&admin),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert_eq!(answer["code"], "VALIDATION_ERROR");
        assert_eq!(answer["details"]["field"], field, "{body} → {answer}");
    }
    let (status, answer) = server
        .api(
            "PUT",
            "/api/admin/sites/bad%20id",
            Some(&admin),
            Some(good.clone()),
        )
        .await;
    assert_eq!(
        (status, answer["details"]["field"].as_str()),
        (400, Some("id"))
    );
    let s = site(&server, &admin, "s1").await;
    assert_eq!(
        (s["limit"].as_f64(), s["minPerCar"].as_f64()),
        (Some(32.0), Some(6.0))
    );

    // Members: bad lists, unknown chargers and another site's chargers change nothing.
    let path = "/api/admin/sites/s1/chargers";
    for body in [
        json!({}),
        json!({"chargerIds": "CP-B1"}),
        json!({"chargerIds": [1]}),
    ] {
        let (status, answer) = server
            .api("PUT", path, Some(&admin), Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert_eq!(answer["details"]["field"], "chargerIds");
    }
    let (status, _) = server
        .api(
            "PUT",
            path,
            Some(&admin),
            Some(json!({"chargerIds": ["CP-B1", "CP-NOBODY"]})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = server
        .api(
            "PUT",
            "/api/admin/sites/none/chargers",
            Some(&admin),
            Some(json!({"chargerIds": []})),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(site(&server, &admin, "s1").await["chargerIds"], json!([]));
    silent(&mut c1, "nothing is sent for a refused change").await;

    let (status, _) = server
        .api(
            "PUT",
            "/api/admin/sites/s2",
            Some(&admin),
            Some(good.clone()),
        )
        .await;
    assert_eq!(status, 201);
    let pending = put_in_background(
        &server,
        &admin,
        "/api/admin/sites/s2/chargers",
        json!({"chargerIds": ["CP-B1"]}),
    );
    answer_profile(&mut c1, "Accepted").await;
    assert_eq!(pending.await.unwrap().0, 200);
    let (status, answer) = server
        .api(
            "PUT",
            path,
            Some(&admin),
            Some(json!({"chargerIds": ["CP-B1"]})),
        )
        .await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["code"], "CHARGER_IN_OTHER_SITE");
    assert_eq!(site(&server, &admin, "s1").await["chargerIds"], json!([]));
    assert_eq!(
        site(&server, &admin, "s2").await["chargerIds"],
        json!(["CP-B1"])
    );

    for (method, path) in [
        ("GET", "/api/admin/sites/none"),
        ("DELETE", "/api/admin/sites/none"),
    ] {
        let (status, _) = server.api(method, path, Some(&admin), None).await;
        assert_eq!(status, 404, "{method} {path}");
    }
    let (status, _) = server
        .api("GET", "/api/admin/sites", Some(&driver), None)
        .await;
    assert_eq!(status, 403);
    let (status, _) = server
        .api("PUT", "/api/admin/sites/s3", Some(&driver), Some(good))
        .await;
    assert_eq!(status, 403);
    let (status, body) = server
        .api("GET", "/api/admin/sites", Some(&admin), None)
        .await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["s1", "s2"]);
}

/// Two simulated 22 kW two-socket wallboxes behind a 32 A site; four cars
/// arrive and two leave. The total power the simulated cars draw is sampled
/// every 100 ms into a CSV file, which is then read back and checked.
async fn simulated_cars_arriving_and_leaving_stay_under_the_site_limit(backend: Backend) {
    const LIMIT_A: f64 = 32.0;
    let limit_w = LIMIT_A * 3.0 * 230.0;
    let server = start_server(backend).await;
    let admin = server.token("ops", "admin");
    for n in 1..=4 {
        server
            .user_with_tag(&format!("driver-{n}"), &format!("TAG-{n}"))
            .await;
    }
    let endpoint = Arc::new(Endpoint::new(format!(
        "ws://127.0.0.1:{}/ocpp",
        server.port
    )));
    let recorder = Arc::new(Recorder::default());
    let mut handles: Vec<ChargerHandle> = Vec::new();
    for id in ["SIM-A", "SIM-B"] {
        let mut config = ChargerConfig::new(id);
        config.clock = SimClock::starting_now(1.0);
        config.meter_interval_s = 2;
        config.auto_plug = None;
        let mut h = spawn(config, endpoint.clone(), recorder.clone());
        h.wait_for(Duration::from_secs(20), "booted", |v| v.accepted)
            .await
            .unwrap();
        handles.push(h);
    }
    // Both sockets of each reported, so the site knows its four connectors.
    for id in ["SIM-A", "SIM-B"] {
        let store = server.state.store.clone();
        until("both connectors reported", Duration::from_secs(20), || {
            let store = store.clone();
            async move { store.connectors(id).await.unwrap().len() >= 3 }
        })
        .await;
    }
    let (status, body) = server
        .api(
            "PUT",
            "/api/admin/sites/garage",
            Some(&admin),
            Some(json!({"unit": "A", "limit": LIMIT_A, "minPerCar": 6, "safeDefault": 2})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server
        .api(
            "PUT",
            "/api/admin/sites/garage/chargers",
            Some(&admin),
            Some(json!({"chargerIds": ["SIM-A", "SIM-B"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["reserved"], 8.0, "{body}");

    let handles = Arc::new(handles);
    let started = tokio::time::Instant::now();
    let sampler = {
        let handles = handles.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while started.elapsed() < Duration::from_secs(26) {
                tick.tick().await;
                let total: f64 = handles
                    .iter()
                    .flat_map(|h| h.view().connectors)
                    .map(|c| c.power_w)
                    .sum();
                samples.push((started.elapsed().as_millis() as u64, total));
            }
            samples
        })
    };
    let big = VehicleModel {
        capacity_kwh: 80.0,
        max_ac_kw: 22.0,
        max_dc_kw: 50.0,
    };
    let small = VehicleModel {
        capacity_kwh: 40.0,
        max_ac_kw: 3.7,
        max_dc_kw: 50.0,
    };
    // (at seconds, charger index, connector, arrival with a car / departure)
    let plan: [(u64, usize, u32, Option<VehicleModel>); 6] = [
        (0, 0, 1, Some(big)),
        (3, 0, 2, Some(big)),
        (6, 1, 1, Some(small)),
        (10, 1, 2, Some(big)),
        (16, 0, 1, None),
        (20, 0, 2, None),
    ];
    let mut events = Vec::new();
    for (n, (at, charger, connector, car)) in plan.iter().enumerate() {
        tokio::time::sleep_until(started + Duration::from_secs(*at)).await;
        let h = &handles[*charger];
        events.push(started.elapsed().as_millis() as u64);
        match car {
            Some(model) => {
                h.send(Command::PlugIn {
                    connector: *connector,
                    vehicle: Vehicle::new(*model, 20.0),
                })
                .await
                .unwrap();
                h.send(Command::PresentIdTag {
                    connector: *connector,
                    id_tag: format!("TAG-{}", n + 1),
                })
                .await
                .unwrap();
            }
            None => h
                .send(Command::Unplug {
                    connector: *connector,
                })
                .await
                .unwrap(),
        }
    }
    let samples = sampler.await.unwrap();

    // The file: one line per sample, with the limit and the events.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/site-limits");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{backend:?}-power.csv").to_lowercase());
    let mut csv = String::from("elapsed_ms,total_w,limit_w,event\n");
    for (ms, total) in &samples {
        let event = events.iter().any(|e| e / 100 == ms / 100);
        csv.push_str(&format!(
            "{ms},{total:.0},{limit_w:.0},{}\n",
            if event { "change" } else { "" }
        ));
    }
    std::fs::write(&file, csv).unwrap();

    // Read back and checked: beyond the transition time after each change,
    // the total never exceeds the limit; the limit is used, not wasted.
    let text = std::fs::read_to_string(&file).unwrap();
    let mut rows = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        rows.push((
            f[0].parse::<u64>().unwrap(),
            f[1].parse::<f64>().unwrap(),
            f[2].parse::<f64>().unwrap(),
        ));
    }
    assert!(
        rows.len() > 200,
        "sampled every 100 ms for 26 s: {}",
        rows.len()
    );
    let mut highest = 0.0f64;
    for (ms, total, limit) in &rows {
        let settling = events
            .iter()
            .any(|e| *ms >= *e && *ms < e + TRANSITION.as_millis() as u64);
        if !settling {
            assert!(
                *total <= limit + 1.0,
                "{total} W > {limit} W at {ms} ms ({})",
                file.display()
            );
        }
        highest = highest.max(*total);
    }
    assert!(
        highest <= limit_w + 1.0,
        "even while settling the total stayed under the limit here: {highest} W"
    );
    let busy_peak = rows
        .iter()
        .filter(|r| r.0 > 12_000 && r.0 < 16_000)
        .map(|r| r.1)
        .fold(0.0, f64::max);
    assert!(
        busy_peak > 0.8 * limit_w,
        "with four cars the site's limit is used: {busy_peak} W of {limit_w} W"
    );
    // After the two leave, the big car left gets what the small one does not draw.
    let last = rows
        .iter()
        .filter(|r| r.0 > 24_000)
        .map(|r| r.1)
        .fold(0.0, f64::max);
    assert!(
        last > 0.6 * limit_w,
        "the remaining cars share the limit: {last} W"
    );

    let s = site(&server, &admin, "garage").await;
    let sum = s["allocatedSum"].as_f64().unwrap() + s["reserved"].as_f64().unwrap();
    assert!(sum <= LIMIT_A + 1e-9, "{s}");
    assert_eq!(s["allocations"].as_array().unwrap().len(), 2, "{s}");
    let handles = Arc::try_unwrap(handles).ok().expect("the sampler is done");
    for h in handles {
        h.shutdown(true).await;
    }
}
