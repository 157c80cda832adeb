//! Durability: kill the server process (SIGKILL, no chance to flush) in the
//! middle of a stream of MeterValues from several chargers, start it again on
//! the same database, and check that everything a charger was answered for
//! is there.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

on_both_backends!(nothing_answered_is_lost_when_the_server_is_killed);

async fn nothing_answered_is_lost_when_the_server_is_killed(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let (mut server, port) = spawn_csms(&db.url, Some("restart-test-secret-0123456789")).await;
    let store = csms::store::connect(&db.url).await.unwrap();
    store
        .upsert_user(&csms::store::UserRecord {
            id: "u1".into(),
            email: None,
            name: "Driver".into(),
            role: "driver".into(),
            password_hash: None,
            battery_capacity_wh: None,
            created_at: chrono::Utc::now(),
        })
        .await
        .unwrap();

    const CHARGERS: usize = 4;
    let mut streams = Vec::new();
    for n in 0..CHARGERS {
        let tag = format!("TAG-{n}");
        store
            .upsert_id_tag(&csms::store::IdTagRecord {
                id_tag: tag.clone(),
                user_id: Some("u1".into()),
                status: "Accepted".into(),
                expiry_date: None,
                parent_id_tag: None,
                created_at: chrono::Utc::now(),
            })
            .await
            .unwrap();
        let url = format!("ws://127.0.0.1:{port}/ocpp/CP-KILL-{n}");
        streams.push(tokio::spawn(async move {
            let mut charger = TestCharger::connect(&url).await;
            charger.boot().await;
            let start = charger
                .call("StartTransaction", json!({"connectorId": 1, "idTag": tag, "meterStart": 0, "timestamp": "2024-01-15T10:00:00.000Z"}))
                .await;
            let tx = start["transactionId"].as_i64().unwrap();
            // Stream until the server dies; remember every register it acknowledged.
            let mut acknowledged = Vec::new();
            for i in 1..=100_000i64 {
                let at = chrono::DateTime::from_timestamp(1_705_312_800 + i, 0).unwrap();
                let frame = json!([2, format!("mv{i}"), "MeterValues", {"connectorId": 1, "transactionId": tx,
                    "meterValue": [meter_sample(&csms::ocpp::time::format_ms(at), (i * 10) as f64, None)]}]);
                charger.send_text(&frame.to_string()).await;
                match charger.try_next_frame(Duration::from_secs(5)).await {
                    Some(answer) if answer[0] == 3 => acknowledged.push(i * 10),
                    _ => break,
                }
            }
            (tx, acknowledged)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.start_kill().expect("SIGKILL the server");
    server.wait().await.unwrap();

    let mut results = Vec::new();
    for stream in streams {
        results.push(stream.await.unwrap());
    }
    let total: usize = results.iter().map(|(_, a)| a.len()).sum();
    eprintln!("{total} MeterValues acknowledged before the kill");
    assert!(
        total > 50,
        "the stream was under way when the server died ({total} acknowledged)"
    );

    // Start again on the same database: everything acknowledged is there.
    let (mut restarted, port) = spawn_csms(&db.url, Some("restart-test-secret-0123456789")).await;
    let health: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    for (tx, acknowledged) in &results {
        let stored: std::collections::HashSet<i64> = store
            .meter_values(*tx)
            .await
            .unwrap()
            .iter()
            .map(|s| s.value.parse::<f64>().unwrap() as i64)
            .collect();
        for wh in acknowledged {
            assert!(
                stored.contains(wh),
                "transaction {tx}: acknowledged register {wh} Wh was lost"
            );
        }
        let record = store.transaction(*tx).await.unwrap().unwrap();
        let last = *acknowledged.last().unwrap_or(&0) as f64;
        assert!(
            record.energy_wh >= last,
            "energy {} covers the last acknowledged {last}",
            record.energy_wh
        );
    }

    // The chargers reconnect and finish their transactions on the restarted server.
    for (n, (tx, _)) in results.iter().enumerate() {
        let mut charger =
            TestCharger::connect(&format!("ws://127.0.0.1:{port}/ocpp/CP-KILL-{n}")).await;
        charger.call("StopTransaction", json!({"transactionId": tx, "meterStop": 2_000_000, "timestamp": "2024-01-16T10:00:00.000Z"})).await;
        let record = store.transaction(*tx).await.unwrap().unwrap();
        assert_eq!(
            (record.status.as_str(), record.energy_wh),
            ("stopped", 2_000_000.0)
        );
    }
    restarted.start_kill().unwrap();
    let _ = restarted.wait().await;
}
