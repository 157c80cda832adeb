//! Several nodes on one PostgreSQL database: commands routed to the node
//! holding a charger, presence seen from every node, takeover with fencing,
//! sweepers once per cluster, live events across nodes, a killed node's
//! chargers moving to another; and SQLite refusing a second node.

mod common;

use common::{eventually, until, Backend, TestCharger, TestDatabase, TestServer};
use csms::cluster::Cluster;
use serde_json::{json, Value};
use std::time::Duration;

/// The secret `Config::for_tests` gives in-process nodes, for real ones.
const SECRET: &str = "test-secret-test-secret-test-secret";

fn fast(config: &mut csms::config::Config) {
    config.node_timeout = Duration::from_secs(2);
}

/// `n` in-process nodes on one fresh PostgreSQL database (the first owns
/// it), or `None` where PostgreSQL is not available outside CI.
async fn nodes(
    n: usize,
    adjust: impl Fn(&mut csms::config::Config) + Copy,
) -> Option<Vec<TestServer>> {
    common::postgres_url()?;
    let db = TestDatabase::new(Backend::Postgres).await;
    let others: Vec<TestDatabase> = (1..n).map(|_| db.same()).collect();
    let mut servers = Vec::new();
    for db in std::iter::once(db).chain(others) {
        servers.push(
            TestServer::start_on(db, |c| {
                fast(c);
                adjust(c)
            })
            .await,
        );
    }
    Some(servers)
}

async fn two_nodes(
    adjust: impl Fn(&mut csms::config::Config) + Copy,
) -> Option<(TestServer, TestServer)> {
    let mut servers = nodes(2, adjust).await?;
    let b = servers.pop()?;
    let a = servers.pop()?;
    Some((a, b))
}

fn node(server: &TestServer) -> &csms::cluster::PgCluster {
    match server.state.registry.cluster() {
        Cluster::Postgres(node) => node,
        Cluster::Single => panic!("a PostgreSQL server runs as a cluster node"),
    }
}

async fn connected(server: &TestServer, id: &str) -> Value {
    let admin = server.token("ops", "admin");
    let (status, body) = server
        .api(
            "GET",
            &format!("/api/admin/stations/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"]["connected"].clone()
}

fn command(
    server: &TestServer,
    id: &str,
    action: &str,
    body: Value,
) -> tokio::task::JoinHandle<(u16, Value)> {
    let admin = server.token("ops", "admin");
    server.post_in_background(
        &admin,
        &format!("/api/admin/stations/{id}/commands/{action}"),
        body,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_sent_through_another_node_reaches_the_charger_and_returns_its_answer() {
    let Some((a, b)) = two_nodes(|c| c.ocpp_call_timeout = Duration::from_secs(2)).await else {
        return;
    };
    let mut charger = a.booted_charger("CP-A").await;
    // Presence is cluster-wide: node B says the charger is connected.
    assert_eq!(connected(&b, "CP-A").await, true);

    let sent = command(
        &b,
        "CP-A",
        "GetConfiguration",
        json!({"key": ["HeartbeatInterval"]}),
    );
    let (id, action, payload) = charger.expect_call().await;
    assert_eq!(
        (action.as_str(), payload),
        ("GetConfiguration", json!({"key": ["HeartbeatInterval"]}))
    );
    charger
        .reply(
            &id,
            json!({"configurationKey": [{"key": "HeartbeatInterval", "readonly": false, "value": "300"}]}),
        )
        .await;
    let (status, body) = sent.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["configurationKey"][0]["value"], "300");
    assert!(node(&b).commands_routed() >= 1);

    // The charger's CALLERROR comes back through node B as it would locally.
    let sent = command(&b, "CP-A", "Reset", json!({"type": "Soft"}));
    let (id, action, _) = charger.expect_call().await;
    assert_eq!(action, "Reset");
    charger
        .send_text(&json!([4, id, "NotSupported", "not here", {}]).to_string())
        .await;
    let (status, body) = sent.await.unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (502, Some("CHARGER_ERROR")),
        "{body}"
    );
    assert_eq!(body["details"]["errorCode"], "NotSupported");

    // A charger that never answers: Timeout, from node A's call timeout.
    let sent = command(&b, "CP-A", "ClearCache", json!({}));
    let (_, action, _) = charger.expect_call().await;
    assert_eq!(action, "ClearCache");
    let (status, body) = sent.await.unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (504, Some("CHARGER_TIMEOUT")),
        "{body}"
    );

    // More commands than the charger's queue holds: `Busy` comes back
    // through node B; the rest are lost with the connection.
    let sent: Vec<_> = (0..40)
        .map(|_| command(&b, "CP-A", "ClearCache", json!({})))
        .collect();
    let (_, action, _) = charger.expect_call().await;
    assert_eq!(action, "ClearCache");
    until(
        "a command is refused as busy",
        Duration::from_secs(10),
        || async { sent.iter().any(|s| s.is_finished()) },
    )
    .await;
    charger.close().await;
    let mut codes = Vec::new();
    for s in sent {
        let (status, body) = s.await.unwrap();
        codes.push((status, body["code"].as_str().unwrap_or("").to_owned()));
    }
    assert!(
        codes.contains(&(409, "CHARGER_BUSY".to_owned())),
        "{codes:?}"
    );
    assert!(
        codes
            .iter()
            // The one sent (and any the queue took next) may time out on a
            // loaded machine before the connection closes: never answered.
            .all(
                |c| ["CHARGER_BUSY", "CHARGER_DISCONNECTED", "CHARGER_TIMEOUT"]
                    .contains(&c.1.as_str())
            ),
        "{codes:?}"
    );

    // Offline only when no node holds it.
    let sent = command(&b, "CP-NOWHERE", "ClearCache", json!({}));
    let (status, body) = sent.await.unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("CHARGER_OFFLINE")),
        "{body}"
    );
    until(
        "node B sees the charger gone",
        Duration::from_secs(10),
        || async { connected(&b, "CP-A").await == false },
    )
    .await;
    let (status, body) = command(&b, "CP-A", "ClearCache", json!({})).await.unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("CHARGER_OFFLINE")),
        "{body}"
    );
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drivers_session_started_through_another_node_drives_the_charger_and_completes() {
    let Some((a, b)) = two_nodes(|_| {}).await else {
        return;
    };
    let admin = b.token("ops", "admin");
    let (status, body) = b
        .api(
            "PUT",
            "/api/admin/stations/CP-S",
            Some(&admin),
            Some(json!({"name": "Hub", "pricePerKWh": 165, "currency": "NGN"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, token) = b.register("ada@example.com").await;
    let mut charger = a.booted_charger("CP-S").await;

    let started = b.post_in_background(
        &token,
        "/api/charging/sessions/start",
        json!({"stationId": "CP-S", "connectorId": "connector-1", "batteryLevelStart": 30}),
    );
    let (id, action, payload) = charger.expect_call().await;
    assert_eq!(action, "RemoteStartTransaction");
    let id_tag = payload["idTag"].as_str().unwrap().to_owned();
    charger.reply(&id, json!({"status": "Accepted"})).await;
    let (status, body) = started.await.unwrap();
    assert_eq!(status, 201, "{body}");
    let session_id = body["data"]["id"].as_str().unwrap().to_owned();

    let start = charger
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": id_tag, "meterStart": 500, "timestamp": "2024-01-15T10:00:00Z"}),
        )
        .await;
    let tx = start["transactionId"].as_i64().unwrap();
    charger
        .call(
            "MeterValues",
            json!({"connectorId": 1, "transactionId": tx,
                   "meterValue": [common::meter_sample("2024-01-15T10:20:00Z", 4700.0, Some(40.0))]}),
        )
        .await;

    let ended = b.post_in_background(
        &token,
        "/api/charging/sessions/end",
        json!({"sessionId": session_id}),
    );
    let (id, action, payload) = charger.expect_call().await;
    assert_eq!(
        (action.as_str(), payload["transactionId"].as_i64()),
        ("RemoteStopTransaction", Some(tx))
    );
    charger.reply(&id, json!({"status": "Accepted"})).await;
    let stopped_at = std::time::Instant::now();
    charger
        .call(
            "StopTransaction",
            json!({"transactionId": tx, "meterStop": 4700, "timestamp": "2024-01-15T10:30:00Z", "reason": "Remote"}),
        )
        .await;
    let (status, body) = ended.await.unwrap();
    // Completed, not 202: node B's stop request woke on node A's event.
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["data"]["status"].as_str(),
            body["data"]["energyDelivered"].clone()
        ),
        (Some("completed"), json!(4.2))
    );
    assert!(stopped_at.elapsed() < Duration::from_secs(4));
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charger_reconnecting_to_another_node_is_taken_over_and_the_old_socket_closed() {
    let Some((a, b)) = two_nodes(|_| {}).await else {
        return;
    };
    let mut old = a.booted_charger("CP-T").await;
    let first_epoch = a.state.registry.local_epochs()[0].1;

    let taken_at = std::time::Instant::now();
    let mut new = TestCharger::connect(&b.ws_url("CP-T")).await;
    // The old node closes the old socket at once.
    assert_eq!(old.try_next_frame(Duration::from_secs(5)).await, None);
    assert!(taken_at.elapsed() < Duration::from_secs(3));
    until("node A lets go", Duration::from_secs(5), || async {
        !a.state.registry.is_connected("CP-T")
    })
    .await;
    // Node B records its epoch once node A has let go.
    let epochs = eventually("node B's epoch", Duration::from_secs(5), || async {
        Some(b.state.registry.local_epochs()).filter(|e| !e.is_empty())
    })
    .await;
    assert_eq!(epochs.len(), 1);
    assert!(
        epochs[0].1 > first_epoch,
        "a newer epoch: {epochs:?} after {first_epoch}"
    );

    // The charger (accepted before) is served on node B without a new boot,
    // and node A routes to it there.
    let answer = new.call("Heartbeat", json!({})).await;
    assert!(answer["currentTime"].is_string());
    assert_eq!(connected(&a, "CP-T").await, true);
    let sent = command(&a, "CP-T", "ClearCache", json!({}));
    let (id, action, _) = new.expect_call().await;
    assert_eq!(action, "ClearCache");
    new.reply(&id, json!({"status": "Accepted"})).await;
    let (status, body) = sent.await.unwrap();
    assert_eq!(
        (status, body["data"]["status"].as_str()),
        (200, Some("Accepted")),
        "{body}"
    );
    b.stop().await;
    a.stop().await;
}

/// Three nodes: a charger moves from node A to node B while node C sends it
/// commands; each reaches it where it is, none is answered by the node that
/// lost it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_from_a_third_node_follow_a_charger_that_moved() {
    let Some(servers) = nodes(3, |_| {}).await else {
        return;
    };
    let (a, b, c) = (&servers[0], &servers[1], &servers[2]);
    let mut charger = a.booted_charger("CP-M").await;
    let sent = command(c, "CP-M", "ClearCache", json!({}));
    let (id, _, _) = charger.expect_call().await;
    charger.reply(&id, json!({"status": "Accepted"})).await;
    assert_eq!(sent.await.unwrap().0, 200);

    let mut moved = TestCharger::connect(&b.ws_url("CP-M")).await;
    assert_eq!(charger.try_next_frame(Duration::from_secs(5)).await, None);
    for round in 0..3 {
        let sent = command(c, "CP-M", "ClearCache", json!({}));
        let (id, action, _) = moved.expect_call().await;
        assert_eq!(action, "ClearCache");
        moved.reply(&id, json!({"status": "Accepted"})).await;
        let (status, body) = sent.await.unwrap();
        assert_eq!(status, 200, "round {round}: {body}");
    }
    for server in [a, b, c] {
        assert_eq!(connected(server, "CP-M").await, true);
    }
    until("node A lets go", Duration::from_secs(5), || async {
        !a.state.registry.is_connected("CP-M")
    })
    .await;
    for server in servers.into_iter().rev() {
        server.stop().await;
    }
}

/// Chargers leaving one node all at once (a network cut) are all shown
/// disconnected on the others: their disconnects are recorded in batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chargers_leaving_a_node_at_once_are_shown_disconnected_everywhere() {
    let Some((a, b)) = two_nodes(|_| {}).await else {
        return;
    };
    let mut chargers = Vec::new();
    for n in 0..150 {
        chargers.push(a.booted_charger(&format!("CP-X{n:03}")).await);
    }
    until("node B sees them all", Duration::from_secs(20), || async {
        for n in [0, 75, 149] {
            if connected(&b, &format!("CP-X{n:03}")).await != true {
                return false;
            }
        }
        true
    })
    .await;
    drop(chargers); // every socket dropped at once, without a close handshake
    until(
        "node A lets them all go",
        Duration::from_secs(20),
        || async { a.state.registry.count() == 0 },
    )
    .await;
    eventually(
        "every charger disconnected on node B",
        Duration::from_secs(20),
        || async {
            for n in 0..150 {
                if connected(&b, &format!("CP-X{n:03}")).await != false {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_of_one_node_reach_the_streams_of_another() {
    let Some((a, b)) = two_nodes(|_| {}).await else {
        return;
    };
    let admin = b.token("ops", "admin");
    let mut stream = common::http()
        .get(b.http_url("/api/admin/events"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    until(
        "node A hears that node B listens",
        Duration::from_secs(10),
        || async { a.state.engine.events().listened() },
    )
    .await;
    let mut charger = a.booted_charger("CP-E").await;
    charger
        .call(
            "StatusNotification",
            json!({"connectorId": 1, "errorCode": "NoError", "status": "Preparing"}),
        )
        .await;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(seen.contains("event: charger.connected") && seen.contains("event: connector.status")) {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .unwrap_or_else(|_| panic!("events from node A in time; got {seen}"))
            .unwrap()
            .expect("the stream is open");
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(seen.contains("\"chargerId\":\"CP-E\""), "{seen}");
    assert!(seen.contains("\"status\":\"Preparing\""), "{seen}");
    drop(stream);
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweepers_run_on_one_node_of_the_cluster() {
    let Some((a, b)) = two_nodes(|c| {
        c.remote_start_timeout = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    // A remote start the charger accepts but never turns into a transaction
    // is cancelled once, by whichever node sweeps.
    let (_, token) = b.register("ada@example.com").await;
    let mut charger = a.booted_charger("CP-W").await;
    let started = b.post_in_background(
        &token,
        "/api/charging/sessions/start",
        json!({"stationId": "CP-W", "connectorId": "connector-1", "batteryLevelStart": 30}),
    );
    let (id, _, _) = charger.expect_call().await;
    charger.reply(&id, json!({"status": "Accepted"})).await;
    let (status, body) = started.await.unwrap();
    assert_eq!(status, 201, "{body}");
    let session_id = body["data"]["id"].as_str().unwrap().to_owned();
    let session = eventually(
        "the overdue remote start cancelled",
        Duration::from_secs(15),
        || async {
            b.state
                .store
                .session(&session_id)
                .await
                .unwrap()
                .filter(|s| s.status == "cancelled")
        },
    )
    .await;
    assert_eq!(
        session.end_reason.as_deref(),
        Some("Charger did not start a transaction in time")
    );
    for lease in ["remote-starts", "payments", "webhooks"] {
        let (on_a, on_b) = (node(&a).rounds(lease), node(&b).rounds(lease));
        assert!(
            (on_a > 0) != (on_b > 0),
            "{lease}: one node sweeps (node A {on_a} rounds, node B {on_b})"
        );
    }
    // A node that leaves hands its leases over at once.
    let (holder, other) = if node(&a).rounds("remote-starts") > 0 {
        (a, b)
    } else {
        (b, a)
    };
    // (The database stays until both nodes are done with it.)
    let _db = holder.stop().await;
    until("the other node sweeps", Duration::from_secs(5), || async {
        node(&other).rounds("remote-starts") > 0
    })
    .await;
    other.stop().await;
}

/// kill -9 of a real node: its chargers count as offline within seconds,
/// reconnect to the other node, take their commands there, and their open
/// transaction completes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_charger_moves_to_another_node_and_nothing_is_doubled() {
    if common::postgres_url().is_none() {
        return;
    }
    let db = TestDatabase::new(Backend::Postgres).await;
    let (mut killed, port) =
        common::spawn_csms_with(&db.url, Some(SECRET), &[("CSMS_NODE_TIMEOUT", "2s")]).await;
    let b = TestServer::start_on(db, fast).await;
    b.user_with_tag("driver-1", "TAG-1").await;

    let mut charger = TestCharger::connect(&format!("ws://127.0.0.1:{port}/ocpp/CP-K")).await;
    assert_eq!(charger.boot().await["status"], "Accepted");
    let start = json!({"connectorId": 1, "idTag": "TAG-1", "meterStart": 1000, "timestamp": "2024-01-15T10:00:00Z"});
    let first = charger.call("StartTransaction", start.clone()).await;
    let tx = first["transactionId"].as_i64().unwrap();
    charger
        .call(
            "MeterValues",
            json!({"connectorId": 1, "transactionId": tx,
                   "meterValue": [common::meter_sample("2024-01-15T10:10:00Z", 3000.0, None)]}),
        )
        .await;
    assert_eq!(connected(&b, "CP-K").await, true);
    // A command through node B reaches the charger on the real node A.
    let sent = command(&b, "CP-K", "ClearCache", json!({}));
    let (id, _, _) = charger.expect_call().await;
    charger.reply(&id, json!({"status": "Accepted"})).await;
    assert_eq!(sent.await.unwrap().0, 200);

    killed.start_kill().expect("SIGKILL node A");
    killed.wait().await.unwrap();
    let killed_at = std::time::Instant::now();
    until(
        "node A's charger counts as offline",
        Duration::from_secs(10),
        || async { connected(&b, "CP-K").await == false },
    )
    .await;
    assert!(killed_at.elapsed() < Duration::from_secs(6));

    // The charger reconnects to node B, retransmits the StartTransaction it
    // may not have heard answered, and stops.
    let mut charger = TestCharger::connect(&b.ws_url("CP-K")).await;
    assert_eq!(connected(&b, "CP-K").await, true);
    let again = charger.call("StartTransaction", start).await;
    assert_eq!(
        again["transactionId"].as_i64(),
        Some(tx),
        "the same transaction"
    );
    let sent = command(&b, "CP-K", "GetConfiguration", json!({}));
    let (id, action, _) = charger.expect_call().await;
    assert_eq!(action, "GetConfiguration");
    charger.reply(&id, json!({"configurationKey": []})).await;
    assert_eq!(sent.await.unwrap().0, 200);
    charger
        .call(
            "StopTransaction",
            json!({"transactionId": tx, "meterStop": 5000, "timestamp": "2024-01-15T10:30:00Z", "reason": "Local"}),
        )
        .await;
    let admin = b.token("ops", "admin");
    let (status, body) = b
        .api(
            "GET",
            "/api/admin/stations/CP-K/transactions",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pagination"]["total"], 1, "{body}");
    let row = &body["data"][0];
    assert_eq!(
        (
            row["id"].as_i64(),
            row["meterStop"].as_i64(),
            row["energyWh"].as_f64()
        ),
        (Some(tx), Some(5000), Some(4000.0)),
        "{row}"
    );

    // Node B took over the once-per-cluster work.
    until("node B sweeps", Duration::from_secs(10), || async {
        node(&b).rounds("remote-starts") > 0 && node(&b).rounds("payments") > 0
    })
    .await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_on_the_same_sqlite_file_refuses_to_start() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let first = TestServer::start_on(db, |_| {}).await;
    let refused =
        csms::app::Application::build(csms::config::Config::for_tests(first.db.url.clone()))
            .await
            .err()
            .expect("a second node on the same SQLite file does not start");
    let message = format!("{refused:#}");
    assert!(message.contains("SQLite is single-node"), "{message}");
    assert!(message.contains("PostgreSQL"), "{message}");

    // The real binary says so and exits.
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_csms"))
            .args(["--listen", "127.0.0.1:0", "--database-url", &first.db.url])
            .env("CSMS_JWT_SECRET", SECRET)
            .env("NO_COLOR", "1")
            .output(),
    )
    .await
    .expect("the second node exits at once")
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SQLite is single-node"), "{stderr}");

    // Once the first node has stopped, another may serve the file.
    let db = first.stop().await;
    let next = TestServer::start_on(db, |_| {}).await;
    next.stop().await;
}
