//! One charger against the fake central system: a full session, remote
//! start/stop and the server commands, the outage replay and the other faults.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::FakeCsms;
use csms_sim::charger::{spawn, ChargerConfig, ChargerHandle, Command};
use csms_sim::{Endpoint, Recorder, SimClock, Vehicle, VehicleModel};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

fn config(id: &str, speed: f64) -> ChargerConfig {
    let mut cfg = ChargerConfig::new(id);
    cfg.clock = SimClock::starting_now(speed);
    cfg.initial_register_wh = 1_000;
    cfg.reconnect_delay = Duration::from_millis(100);
    cfg
}

async fn start(csms: &FakeCsms, cfg: ChargerConfig) -> (ChargerHandle, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let mut h = spawn(cfg, Arc::new(Endpoint::new(&csms.url)), rec.clone());
    h.wait_for(WAIT, "booted", |v| v.accepted).await.unwrap();
    (h, rec)
}

fn ev(soc: f64) -> Vehicle {
    Vehicle::new(
        VehicleModel {
            capacity_kwh: 60.0,
            max_ac_kw: 11.0,
            max_dc_kw: 100.0,
        },
        soc,
    )
}

/// Every Energy.Active.Import.Register value in a list of sampled values.
fn registers(meter_values: &Value) -> Vec<i64> {
    let mut out = Vec::new();
    for mv in meter_values.as_array().unwrap() {
        for sv in mv["sampledValue"].as_array().unwrap() {
            if sv["measurand"] == "Energy.Active.Import.Register" {
                out.push(sv["value"].as_str().unwrap().parse().unwrap());
            }
        }
    }
    out
}

/// A driver plugs a car at `soc` % into `connector`, then presents a card.
async fn plug_in_and_present(h: &mut ChargerHandle, connector: u32, soc: f64, id_tag: &str) {
    h.send(Command::PlugIn {
        connector,
        vehicle: ev(soc),
    })
    .await
    .unwrap();
    h.send(Command::PresentIdTag {
        connector,
        id_tag: id_tag.into(),
    })
    .await
    .unwrap();
}

fn is_ocpp_timestamp(s: &str) -> bool {
    // 2026-01-02T03:04:05.678Z
    s.len() == 24 && s.ends_with('Z') && s.as_bytes()[19] == b'.'
}

#[tokio::test]
async fn an_answer_that_fails_its_schema_is_a_refusal_and_the_message_is_sent_again() {
    let csms = FakeCsms::start().await;
    csms.break_next_answer("StartTransaction");
    let (mut h, _rec) = start(&csms, config("CP-BAD-ANSWER", 600.0)).await;
    plug_in_and_present(&mut h, 1, 20.0, "TAG-1").await;
    h.wait_for(WAIT, "transaction started", |v| {
        v.connector(1).unwrap().transaction_id == Some(101)
    })
    .await
    .unwrap();
    h.shutdown(false).await;

    let starts = csms.of("StartTransaction");
    assert_eq!(starts.len(), 2, "sent once, refused, sent again");
    assert_ne!(starts[0].id, starts[1].id);
    assert_eq!(starts[0].payload, starts[1].payload);
}

#[tokio::test]
async fn a_full_session_by_id_tag_is_reported_from_plug_in_to_stop() {
    let csms = FakeCsms::start().await;
    let mut cfg = config("CP-FULL", 600.0);
    cfg.password = Some("secret".into());
    let (mut h, rec) = start(&csms, cfg).await;

    plug_in_and_present(&mut h, 1, 20.0, "TAG-1").await;
    h.wait_for(WAIT, "transaction started", |v| {
        v.connector(1).unwrap().transaction_id.is_some()
    })
    .await
    .unwrap();
    // A MeterValues every simulated minute (a tenth of a real second):
    // ten of them are ten simulated minutes of charging.
    csms.wait_until("ten MeterValues", |calls| {
        calls.iter().filter(|c| c.action == "MeterValues").count() >= 10
    })
    .await;
    h.send(Command::PresentIdTag {
        connector: 1,
        id_tag: "TAG-1".into(),
    })
    .await
    .unwrap();
    h.wait_for(WAIT, "session finished", |v| {
        v.sessions_finished == 1 && v.idle()
    })
    .await
    .unwrap();
    h.shutdown(false).await;

    let actions = csms.actions("CP-FULL");
    assert_eq!(actions[0], "BootNotification");
    let pos = |a: &str| actions.iter().position(|x| x == a).unwrap();
    assert!(pos("Authorize") < pos("StartTransaction"));
    assert!(pos("StartTransaction") < pos("MeterValues"));
    assert!(actions.iter().rposition(|x| x == "MeterValues").unwrap() < pos("StopTransaction"));

    let start = &csms.of("StartTransaction")[0].payload;
    let stop = &csms.of("StopTransaction")[0].payload;
    let tx_id = 101;
    assert_eq!(stop["transactionId"], tx_id);
    assert_eq!(start["meterStart"], 1_000);
    assert!(is_ocpp_timestamp(start["timestamp"].as_str().unwrap()));

    let meter_values = csms.of("MeterValues");
    assert!(
        meter_values.len() >= 5,
        "{} MeterValues",
        meter_values.len()
    );
    let mut reported = Vec::new();
    for m in &meter_values {
        assert_eq!(m.payload["transactionId"], tx_id);
        let sv = &m.payload["meterValue"][0]["sampledValue"];
        let measurands: Vec<&str> = sv
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["measurand"].as_str().unwrap())
            .collect();
        assert_eq!(
            measurands,
            [
                "Energy.Active.Import.Register",
                "Power.Active.Import",
                "Current.Import",
                "Voltage",
                "SoC"
            ]
        );
        assert_eq!(sv[0]["context"], "Sample.Periodic");
        assert_eq!(sv[4]["unit"], "Percent");
        reported.extend(registers(&m.payload["meterValue"]));
    }
    assert!(
        reported.windows(2).all(|w| w[0] <= w[1]),
        "register not monotonic: {reported:?}"
    );
    let end = registers(&stop["transactionData"]);
    assert_eq!(*end.last().unwrap(), stop["meterStop"].as_i64().unwrap());
    assert!(stop["meterStop"].as_i64().unwrap() >= *reported.last().unwrap());

    // Simulated time: start and stop are about ten simulated minutes apart.
    let t = |v: &Value| {
        ocpp_j::time::parse_charger_time(v.as_str().unwrap())
            .unwrap()
            .at
    };
    let minutes = (t(&stop["timestamp"]) - t(&start["timestamp"])).num_seconds() as f64 / 60.0;
    assert!(
        (8.0..20.0).contains(&minutes),
        "{minutes} simulated minutes"
    );

    let sessions = rec.sessions();
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!(
        (s.charger_id.as_str(), s.connector_id, s.transaction_id),
        ("CP-FULL", 1, tx_id)
    );
    assert_eq!(s.energy_wh, s.meter_stop - s.meter_start);
    // 11 kW for about ten minutes.
    let expected = 11_000.0 * minutes / 60.0;
    assert!(
        (s.energy_wh as f64 - expected).abs() < 100.0,
        "{} Wh vs {expected}",
        s.energy_wh
    );
    assert_eq!(s.stop_reason, "Local");

    assert_eq!(csms.subprotocols()[0].as_deref(), Some("ocpp1.6"));
    // "CP-FULL:secret" in base64.
    assert_eq!(
        csms.auth_headers()[0].as_deref(),
        Some("Basic Q1AtRlVMTDpzZWNyZXQ=")
    );
}

fn status_of(answer: &Value) -> &str {
    assert_eq!(answer[0], 3, "not a CALLRESULT: {answer}");
    answer[2]["status"].as_str().unwrap_or("")
}

#[tokio::test]
async fn remote_start_and_stop_and_the_server_commands_are_answered_like_a_real_charger() {
    let csms = FakeCsms::start().await;
    let (mut h, rec) = start(&csms, config("CP-REMOTE", 60.0)).await;
    let id = "CP-REMOTE";

    // Remote start on an empty connector: the simulated driver plugs in by itself.
    let a = csms
        .call(
            id,
            "RemoteStartTransaction",
            json!({ "idTag": "R-1", "connectorId": 1 }),
        )
        .await;
    assert_eq!(status_of(&a), "Accepted");
    let v = h
        .wait_for(WAIT, "remote transaction", |v| {
            v.connector(1).unwrap().transaction_id.is_some()
        })
        .await
        .unwrap();
    let tx = v.connector(1).unwrap().transaction_id.unwrap();
    assert_eq!(csms.of("StartTransaction")[0].payload["idTag"], "R-1");
    // The occupied connector refuses a second remote start.
    let a = csms
        .call(
            id,
            "RemoteStartTransaction",
            json!({ "idTag": "R-2", "connectorId": 1 }),
        )
        .await;
    assert_eq!(status_of(&a), "Rejected");

    let a = csms
        .call(
            id,
            "ChangeConfiguration",
            json!({ "key": "MeterValueSampleInterval", "value": "30" }),
        )
        .await;
    assert_eq!(status_of(&a), "Accepted");
    let a = csms
        .call(
            id,
            "ChangeConfiguration",
            json!({ "key": "NoSuchKey", "value": "1" }),
        )
        .await;
    assert_eq!(status_of(&a), "NotSupported");
    let a = csms
        .call(
            id,
            "GetConfiguration",
            json!({ "key": ["MeterValueSampleInterval", "Nope"] }),
        )
        .await;
    assert_eq!(a[2]["configurationKey"][0]["value"], "30");
    assert_eq!(a[2]["unknownKey"][0], "Nope");

    // A 6 A TxProfile on three phases limits the power to 4140 W.
    let profile = json!({
        "connectorId": 1,
        "csChargingProfiles": {
            "chargingProfileId": 1, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Relative", "transactionId": tx,
            "chargingSchedule": { "chargingRateUnit": "A", "chargingSchedulePeriod": [{ "startPeriod": 0, "limit": 6 }] }
        }
    });
    assert_eq!(
        status_of(&csms.call(id, "SetChargingProfile", profile).await),
        "Accepted"
    );
    h.wait_for(WAIT, "power limited", |v| {
        (v.connector(1).unwrap().power_w - 4140.0).abs() < 1.0
    })
    .await
    .unwrap();
    let a = csms
        .call(
            id,
            "GetCompositeSchedule",
            json!({ "connectorId": 1, "duration": 3600 }),
        )
        .await;
    assert_eq!(status_of(&a), "Accepted");
    assert_eq!(
        a[2]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"],
        4140.0
    );

    let a = csms
        .call(
            id,
            "TriggerMessage",
            json!({ "requestedMessage": "MeterValues", "connectorId": 1 }),
        )
        .await;
    assert_eq!(status_of(&a), "Accepted");
    csms.wait_until("triggered MeterValues", |calls| {
        calls.iter().any(|c| {
            c.action == "MeterValues"
                && c.payload["meterValue"][0]["sampledValue"][0]["context"] == "Trigger"
        })
    })
    .await;

    assert_eq!(
        status_of(
            &csms
                .call(id, "RemoteStopTransaction", json!({ "transactionId": 999 }))
                .await
        ),
        "Rejected"
    );
    assert_eq!(
        status_of(
            &csms
                .call(id, "RemoteStopTransaction", json!({ "transactionId": tx }))
                .await
        ),
        "Accepted"
    );
    h.wait_for(WAIT, "session finished", |v| v.sessions_finished == 1)
        .await
        .unwrap();
    let session = &rec.sessions()[0];
    assert_eq!(
        (session.transaction_id, session.stop_reason.as_str()),
        (tx, "Remote")
    );

    // Reservation: the connector shows Reserved, then Available again.
    assert_eq!(
        status_of(
            &csms
                .call(id, "UnlockConnector", json!({ "connectorId": 1 }))
                .await
        ),
        "Unlocked"
    );
    let expiry = ocpp_j::time::format_ms(chrono::Utc::now() + chrono::Duration::hours(10));
    let reserve =
        json!({ "connectorId": 2, "expiryDate": expiry, "idTag": "R-3", "reservationId": 7 });
    assert_eq!(
        status_of(&csms.call(id, "ReserveNow", reserve).await),
        "Accepted"
    );
    h.wait_for(WAIT, "reserved", |v| {
        v.connector(2).unwrap().status == "Reserved"
    })
    .await
    .unwrap();
    assert_eq!(
        status_of(
            &csms
                .call(id, "CancelReservation", json!({ "reservationId": 7 }))
                .await
        ),
        "Accepted"
    );
    assert_eq!(
        status_of(
            &csms
                .call(id, "CancelReservation", json!({ "reservationId": 7 }))
                .await
        ),
        "Rejected"
    );
    h.wait_for(WAIT, "available", |v| {
        v.connector(2).unwrap().status == "Available"
    })
    .await
    .unwrap();

    let a = csms
        .call(
            id,
            "ChangeAvailability",
            json!({ "connectorId": 2, "type": "Inoperative" }),
        )
        .await;
    assert_eq!(status_of(&a), "Accepted");
    h.wait_for(WAIT, "unavailable", |v| {
        v.connector(2).unwrap().status == "Unavailable"
    })
    .await
    .unwrap();

    assert_eq!(
        status_of(&csms.call(id, "ClearCache", json!({})).await),
        "Accepted"
    );
    assert_eq!(
        status_of(
            &csms
                .call(id, "DataTransfer", json!({ "vendorId": "other" }))
                .await
        ),
        "UnknownVendorId"
    );
    let list = json!({ "listVersion": 3, "updateType": "Full", "localAuthorizationList": [{ "idTag": "L-1", "idTagInfo": { "status": "Accepted" } }] });
    assert_eq!(
        status_of(&csms.call(id, "SendLocalList", list).await),
        "Accepted"
    );
    assert_eq!(
        csms.call(id, "GetLocalListVersion", json!({})).await[2]["listVersion"],
        3
    );

    let a = csms.call(id, "FlyToTheMoon", json!({})).await;
    assert_eq!(
        (a[0].as_i64(), a[2].as_str()),
        (Some(4), Some("NotImplemented"))
    );
    let a = csms.call(id, "Reset", json!({ "type": "Sideways" })).await;
    assert_eq!(a[2], "PropertyConstraintViolation");
    // Commands are checked against their official schema, as the server
    // checks a charger's messages: a field the schema does not define, a
    // wrong type, a missing field, an action only chargers send.
    let a = csms
        .call(id, "Reset", json!({ "type": "Soft", "when": "now" }))
        .await;
    assert_eq!(
        (a[0].as_i64(), a[2].as_str()),
        (Some(4), Some("FormationViolation"))
    );
    let a = csms
        .call(id, "RemoteStopTransaction", json!({ "transactionId": "7" }))
        .await;
    assert_eq!(a[2], "TypeConstraintViolation");
    let a = csms.call(id, "UnlockConnector", json!({})).await;
    assert_eq!(a[2], "OccurenceConstraintViolation");
    let a = csms.call(id, "Heartbeat", json!({})).await;
    assert_eq!(a[2], "NotSupported");

    // Firmware update: Downloading, Downloaded, Installing, reboot, Installed.
    let now = ocpp_j::time::format_ms(chrono::Utc::now());
    let a = csms
        .call(
            id,
            "UpdateFirmware",
            json!({ "location": "ftp://example/fw.bin", "retrieveDate": now }),
        )
        .await;
    assert_eq!(a[0], 3);
    csms.wait_until("firmware installed", |calls| {
        calls
            .iter()
            .any(|c| c.action == "FirmwareStatusNotification" && c.payload["status"] == "Installed")
    })
    .await;
    let steps: Vec<String> = csms
        .of("FirmwareStatusNotification")
        .iter()
        .map(|c| c.payload["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        steps,
        ["Downloading", "Downloaded", "Installing", "Installed"]
    );
    let boots = csms.of("BootNotification");
    assert_eq!(boots.len(), 2);
    assert_eq!(boots[1].payload["firmwareVersion"], "1.0.0+1");

    let a = csms
        .call(
            id,
            "GetDiagnostics",
            json!({ "location": "ftp://example/" }),
        )
        .await;
    assert!(a[2]["fileName"]
        .as_str()
        .unwrap()
        .starts_with("diagnostics-CP-REMOTE"));
    csms.wait_until("diagnostics uploaded", |calls| {
        calls.iter().any(|c| {
            c.action == "DiagnosticsStatusNotification" && c.payload["status"] == "Uploaded"
        })
    })
    .await;

    // Reset reboots: a third BootNotification on a new connection.
    assert_eq!(
        status_of(&csms.call(id, "Reset", json!({ "type": "Soft" })).await),
        "Accepted"
    );
    csms.wait_until("boot after reset", |calls| {
        calls
            .iter()
            .filter(|c| c.action == "BootNotification")
            .count()
            == 3
    })
    .await;
    h.wait_for(WAIT, "registered again", |v| v.accepted && v.connected)
        .await
        .unwrap();
    h.shutdown(false).await;
}

#[tokio::test]
async fn an_outage_mid_transaction_replays_queued_messages_in_order_with_original_timestamps() {
    let csms = FakeCsms::start().await;
    let (mut h, rec) = start(&csms, config("CP-OUT", 600.0)).await;
    plug_in_and_present(&mut h, 1, 30.0, "TAG-O").await;
    h.wait_for(WAIT, "transaction started", |v| {
        v.connector(1).unwrap().transaction_id.is_some()
    })
    .await
    .unwrap();
    csms.wait_until("a MeterValues before the outage", |calls| {
        calls.iter().any(|c| c.action == "MeterValues")
    })
    .await;

    // Offline for a real second: ten simulated minutes of MeterValues pile up.
    h.send(Command::Outage {
        duration: Duration::from_secs(1),
    })
    .await
    .unwrap();
    h.wait_for(WAIT, "offline", |v| !v.connected).await.unwrap();
    let queued = h
        .wait_for(WAIT, "messages queued offline", |v| v.queued >= 5)
        .await
        .unwrap()
        .queued;
    h.wait_for(WAIT, "back and replayed", |v| {
        v.connected && v.queued == 0 && !v.in_flight
    })
    .await
    .unwrap();
    // One sample taken online again after the replay, then the stop.
    let meter_values_since_reconnect = |calls: &[common::Received]| {
        calls
            .iter()
            .filter(|c| c.connection == 2 && c.action == "MeterValues")
            .count()
    };
    let replayed_so_far = meter_values_since_reconnect(&csms.calls());
    csms.wait_until("a MeterValues after the replay", |calls| {
        meter_values_since_reconnect(calls) > replayed_so_far
    })
    .await;
    h.send(Command::PresentIdTag {
        connector: 1,
        id_tag: "TAG-O".into(),
    })
    .await
    .unwrap();
    h.wait_for(WAIT, "session finished", |v| v.sessions_finished == 1)
        .await
        .unwrap();
    h.shutdown(false).await;

    let tx_calls: Vec<_> = csms
        .calls()
        .into_iter()
        .filter(|c| {
            matches!(
                c.action.as_str(),
                "StartTransaction" | "MeterValues" | "StopTransaction"
            )
        })
        .collect();
    let replayed = tx_calls
        .iter()
        .filter(|c| c.connection == 2 && c.action == "MeterValues")
        .count();
    assert!(
        replayed >= queued.min(5),
        "{replayed} replayed of {queued} queued"
    );
    let t = |s: &Value| {
        ocpp_j::time::parse_charger_time(s.as_str().unwrap())
            .unwrap()
            .at
    };
    let times: Vec<_> = tx_calls
        .iter()
        .map(|c| match c.action.as_str() {
            "MeterValues" => t(&c.payload["meterValue"][0]["timestamp"]),
            _ => t(&c.payload["timestamp"]),
        })
        .collect();
    // In order, and every sample about a minute after the previous one: the
    // ones taken offline kept the time they were taken, not the time they were sent.
    for (i, w) in times.windows(2).enumerate() {
        let gap = (w[1] - w[0]).num_milliseconds() as f64 / 1000.0;
        assert!(gap >= 0.0, "out of order at {i}: {times:?}");
        assert!(
            gap < 300.0, // the outage lasted 600 simulated s; late timers may stretch a gap a little
            "a {gap} s gap at {i}: samples were not taken offline"
        );
    }
    let regs: Vec<i64> = tx_calls
        .iter()
        .filter(|c| c.action == "MeterValues")
        .flat_map(|c| registers(&c.payload["meterValue"]))
        .collect();
    assert!(regs.windows(2).all(|w| w[0] <= w[1]));
    let tx = csms.of("StartTransaction").len();
    assert_eq!(tx, 1);
    assert!(tx_calls
        .iter()
        .filter(|c| c.action != "StartTransaction")
        .all(|c| c.payload["transactionId"] == 101));
    assert_eq!(rec.sessions()[0].faults, ["outage"]);
}

#[tokio::test]
async fn a_session_made_entirely_offline_gets_its_transaction_id_on_replay() {
    let csms = FakeCsms::start().await;
    let (mut h, rec) = start(&csms, config("CP-OFF", 600.0)).await;
    h.send(Command::Outage {
        duration: Duration::from_secs(2),
    })
    .await
    .unwrap();
    h.wait_for(WAIT, "offline", |v| !v.connected).await.unwrap();
    plug_in_and_present(&mut h, 2, 50.0, "TAG-OFF").await;
    // StartTransaction and a few MeterValues wait in the offline queue.
    h.wait_for(WAIT, "a transaction running offline", |v| {
        v.connector(2).unwrap().in_transaction && v.queued >= 3
    })
    .await
    .unwrap();
    h.send(Command::Unplug { connector: 2 }).await.unwrap();
    h.wait_for(WAIT, "session finished", |v| v.sessions_finished == 1)
        .await
        .unwrap();
    h.shutdown(false).await;

    let actions: Vec<String> = csms
        .actions("CP-OFF")
        .into_iter()
        .filter(|a| {
            matches!(
                a.as_str(),
                "StartTransaction" | "MeterValues" | "StopTransaction" | "Authorize"
            )
        })
        .collect();
    assert_eq!(
        actions.first().map(String::as_str),
        Some("StartTransaction"),
        "no Authorize offline: {actions:?}"
    );
    assert_eq!(actions.last().map(String::as_str), Some("StopTransaction"));
    let stop = &csms.of("StopTransaction")[0].payload;
    assert_eq!(stop["transactionId"], 101);
    assert_eq!(stop["reason"], "EVDisconnected");
    assert_eq!(rec.sessions()[0].transaction_id, 101);
}

#[tokio::test]
async fn a_lost_answer_is_retransmitted_with_the_same_message_id() {
    let csms = FakeCsms::start().await;
    let (mut h, rec) = start(&csms, config("CP-LOST", 600.0)).await;
    h.send(Command::PlugIn {
        connector: 1,
        vehicle: ev(30.0),
    })
    .await
    .unwrap();
    h.send(Command::LoseNextAnswer { reuse_id: true })
        .await
        .unwrap();
    h.send(Command::PresentIdTag {
        connector: 1,
        id_tag: "TAG-L".into(),
    })
    .await
    .unwrap();
    h.wait_for(WAIT, "transaction started", |v| {
        v.connector(1).unwrap().transaction_id.is_some()
    })
    .await
    .unwrap();
    h.send(Command::Stop {
        connector: 1,
        reason: "Local".into(),
    })
    .await
    .unwrap();
    h.wait_for(WAIT, "session finished", |v| v.sessions_finished == 1)
        .await
        .unwrap();
    h.shutdown(false).await;

    let starts = csms.of("StartTransaction");
    assert_eq!(starts.len(), 2, "sent twice");
    assert_eq!(starts[0].id, starts[1].id);
    assert_eq!(starts[0].payload, starts[1].payload);
    assert_eq!((starts[0].connection, starts[1].connection), (1, 2));
    // The fake server gives a retransmission the same id, so there is one session.
    assert_eq!(rec.sessions()[0].transaction_id, 101);
    assert_eq!(rec.sessions()[0].faults, ["lost-answer"]);
}

#[tokio::test]
async fn a_power_cycle_mid_session_reboots_and_reports_the_stop_as_power_loss() {
    let csms = FakeCsms::start().await;
    let (mut h, rec) = start(&csms, config("CP-PWR", 600.0)).await;
    plug_in_and_present(&mut h, 1, 30.0, "TAG-P").await;
    h.wait_for(WAIT, "transaction started", |v| {
        v.connector(1).unwrap().transaction_id.is_some()
    })
    .await
    .unwrap();
    h.send(Command::PowerCycle).await.unwrap();
    h.wait_for(WAIT, "session finished", |v| {
        v.sessions_finished == 1 && v.boots == 1
    })
    .await
    .unwrap();
    h.shutdown(false).await;
    let actions = csms.actions("CP-PWR");
    let second_boot = actions
        .iter()
        .rposition(|a| a == "BootNotification")
        .unwrap();
    let stop = actions.iter().position(|a| a == "StopTransaction").unwrap();
    assert!(second_boot > 0 && stop > second_boot, "{actions:?}");
    assert_eq!(csms.of("StopTransaction")[0].payload["reason"], "PowerLoss");
    assert_eq!(rec.sessions()[0].faults, ["power-loss"]);
}

#[tokio::test]
async fn a_charger_never_has_more_than_one_call_outstanding_even_with_a_slow_server() {
    // Answers take 150 ms while MeterValues are due every 100 ms: they must queue, not overlap.
    let csms = FakeCsms::start_with(300, Duration::from_millis(150)).await;
    let (mut h, rec) = start(&csms, config("CP-SLOW", 600.0)).await;
    plug_in_and_present(&mut h, 1, 20.0, "TAG-S").await;
    h.wait_for(WAIT, "transaction started", |v| {
        v.connector(1).unwrap().transaction_id.is_some()
    })
    .await
    .unwrap();
    h.wait_for(WAIT, "a backlog", |v| v.queued >= 3)
        .await
        .unwrap();
    h.send(Command::Stop {
        connector: 1,
        reason: "Local".into(),
    })
    .await
    .unwrap();
    h.wait_for(WAIT, "session finished", |v| {
        v.sessions_finished == 1 && v.idle()
    })
    .await
    .unwrap();
    h.shutdown(false).await;
    assert_eq!(csms.overlapping_calls(), 0);
    assert_eq!(rec.stats.snapshot().timeouts, 0);
    let actions = csms.actions("CP-SLOW");
    let stop = actions.iter().position(|a| a == "StopTransaction").unwrap();
    assert!(
        actions[stop..].iter().all(|a| a != "MeterValues"),
        "{actions:?}"
    );
}

#[tokio::test]
async fn the_binary_runs_a_scenario_and_prints_the_summary_as_json() {
    let csms = FakeCsms::start().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_csms-sim"))
        .args([
            "run",
            "--url",
            &csms.url,
            "--id",
            "CP-BIN",
            "--speed",
            "1200",
            "--charge-for",
            "20m",
            "--json",
        ])
        .args(["--scenario", "plug-first", "--meter-start", "777"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &summary["sessions"][0];
    assert_eq!(s["chargerId"], "CP-BIN");
    assert_eq!(s["transactionId"], 101);
    assert_eq!(s["meterStart"], 777);
    assert_eq!(s["energyWh"], s["meterStop"].as_i64().unwrap() - 777);
    let actions = csms.actions("CP-BIN");
    let status = actions
        .iter()
        .position(|a| a == "StatusNotification")
        .unwrap();
    assert!(status < actions.iter().position(|a| a == "Authorize").unwrap());
}
